"""Main window on a real scene: change one side (widget or scene), assert on the other."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl
from PyQt6.QtGui import QDropEvent

from app.core.cube import Cube
from app.core.errors import AmbiguousCubeError, NoCubeError
from app.core.state.scene import DisplayMode
from tests.qt.conftest import CROP, SCALE, WL, scene_cubes

pytestmark = pytest.mark.gui


def click_pixel(qtbot, panel, row, col):
    """Left click on the centre of HR pixel (row, col) of ``panel``."""
    scene_pos = panel.view.mapViewToScene(QPointF(col + 0.5, row + 0.5))
    pos = panel.graphics.mapFromScene(scene_pos)
    qtbot.mouseClick(panel.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def layer_panel(window, role):
    return next(p for p in window.grid.panels if p.layer.role == role)


# ------------------------------------------------------------------------------ band
def test_band_slider_changes_scene_and_every_panel(window):
    scene = window.scene
    window.band_bar.slider.setValue(5)
    assert scene.band == 5
    assert window.band_bar.spin.text() == "450 nm"
    for panel in window.grid.panels:
        cube = panel.layer.cube
        if panel.layer.role == "guide":
            assert panel.image_item.image.shape == (CROP, CROP, 3)
        else:
            np.testing.assert_array_equal(panel.image_item.image, cube.band(5))
            assert "450 nm" in panel.info_label.text()
    lr = layer_panel(window, "lr")
    assert lr.image_item.image.shape == (CROP // SCALE, CROP // SCALE)
    # the LR image covers the HR extent (true footprint)
    assert lr.image_item.mapRectToParent(lr.image_item.boundingRect()).width() == pytest.approx(CROP)


def test_scene_band_moves_slider_and_spin(window):
    window.scene.set_band_by_wavelength(612)
    assert window.band_bar.slider.value() == 21
    assert window.band_bar.spin.value() == 21
    assert window.band_bar.spin.text() == "610 nm"
    assert window.band_bar.index_label.text() == "22 / 31"


def test_typing_a_wavelength_in_the_spin_box(window, qtbot):
    spin = window.band_bar.spin
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "648")
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)
    assert window.scene.band_wavelength() == 650.0


def test_keyboard_changes_band(window, qtbot):
    window.activateWindow()
    panel = window.grid.panels[0]
    panel.graphics.setFocus()
    start = window.scene.band
    qtbot.keyClick(panel.graphics, Qt.Key.Key_Up)
    assert window.scene.band == start + 1
    qtbot.keyClick(panel.graphics, Qt.Key.Key_PageDown)
    assert window.scene.band == start - 4
    qtbot.keyClick(panel.graphics, Qt.Key.Key_Down)
    assert window.scene.band == start - 5
    qtbot.keyClick(panel.graphics, Qt.Key.Key_End)
    assert window.scene.band == 30


# ------------------------------------------------------------------------------ pixel + spectra
def test_click_sets_crosshair_footprint_and_spectra(window, qtbot):
    gt_panel = layer_panel(window, "gt")
    click_pixel(qtbot, gt_panel, 41, 70)
    scene = window.scene
    assert scene.pixel == (41, 70)
    for panel in window.grid.panels:
        assert panel.vline.isVisible() and panel.vline.value() == pytest.approx(70.5)
        assert panel.hline.value() == pytest.approx(41.5)
        rect = panel.footprint_item.rect()  # LR pixel (10, 17) covers HR rows 40..43, cols 68..71
        assert panel.footprint_item.isVisible()
        assert (rect.top(), rect.left(), rect.width()) == (40, 68, SCALE)

    spectra = window.spectra
    assert len(spectra.curves) == len(scene.layers) == 4
    by_role = {s.layer.role: s for s in spectra.samples}
    cubes = dict(scene_cubes())
    np.testing.assert_allclose(spectra.curves[0].yData, cubes["gt"].spectrum(41, 70))
    np.testing.assert_allclose(by_role["lr"].values, cubes["lr"].spectrum(41 // SCALE, 70 // SCALE))
    lr_curve = spectra.curves[[s.layer.role for s in spectra.samples].index("lr")]
    np.testing.assert_allclose(lr_curve.xData, WL)
    np.testing.assert_allclose(lr_curve.yData, cubes["lr"].spectrum(10, 17))
    legend = spectra.legend.text()
    assert "GT · food_gt (r 41, c 70)" in legend and "LR · food_lr (r 10, c 17)" in legend
    assert "row 41, col 70" in spectra.title.text()


def test_clicking_an_lr_panel_selects_the_hr_pixel(window, qtbot):
    click_pixel(qtbot, layer_panel(window, "lr"), 13, 22)
    assert window.scene.pixel == (13, 22)


def test_band_marker_drag_sets_band(window):
    window.spectra.band_line.setValue(498.0)
    assert window.scene.band_wavelength() == 500.0
    window.scene.set_band(3)
    assert window.spectra.band_line.value() == pytest.approx(430.0)


def test_hover_fills_status_bar(window, qtbot):
    panel = layer_panel(window, "lr")
    pos = panel.graphics.mapFromScene(panel.view.mapViewToScene(QPointF(22.5, 13.5)))
    qtbot.mouseMove(panel.graphics.viewport(), pos)
    qtbot.waitUntil(lambda: window.scene.hover is not None, timeout=2000)
    assert window.scene.hover.row == 13 and window.scene.hover.col == 22
    assert "row 13, col 22" in window.position_label.text()
    assert "LR pixel 3, 5" in window.position_label.text()
    value = scene_cubes()[1][1].spectrum(3, 5)[window.scene.band]
    assert f"{value:.4g}" in window.value_label.text() and "550.0 nm" in window.value_label.text()
    assert "reflectance" in window.note_label.text()


# ------------------------------------------------------------------------------ linked zoom
def test_zoom_in_one_panel_moves_all(window, qtbot):
    panels = window.grid.panels
    panels[2].view.setRange(xRange=(20, 40), yRange=(30, 50), padding=0)
    assert window.scene.view_range is not None
    for panel in panels:
        (x0, x1), (y0, y1) = panel.view.viewRange()
        assert (x0 + x1) / 2 == pytest.approx(30, abs=0.5)
        assert (y0 + y1) / 2 == pytest.approx(40, abs=0.5)
        assert min(x1 - x0, y1 - y0) == pytest.approx(20, abs=0.5)
    window.reset_zoom_action.trigger()
    for panel in panels:
        (x0, x1), (y0, y1) = panel.view.viewRange()
        assert min(x1 - x0, y1 - y0) == pytest.approx(CROP, abs=0.5)


def test_mouse_wheel_zoom_is_shared(window, qtbot):
    panel = window.grid.panels[0]
    before = window.grid.panels[3].view.viewRange()
    panel.view.scaleBy((0.5, 0.5))
    after = window.grid.panels[3].view.viewRange()
    assert after[0][1] - after[0][0] == pytest.approx((before[0][1] - before[0][0]) / 2, rel=0.02)


# ------------------------------------------------------------------------------ display controls
def test_mode_buttons_and_composites(window, qtbot):
    scene = window.scene
    qtbot.mouseClick(window.controls.mode_buttons[DisplayMode.RGB], Qt.MouseButton.LeftButton)
    assert scene.mode == DisplayMode.RGB
    gt = layer_panel(window, "gt")
    assert gt.image_item.image.shape == (CROP, CROP, 3)
    assert "640/550/460 nm" in gt.info_label.text()
    window.controls.rgb_spins[0].setValue(700)
    assert scene.rgb_nm[0] == 700
    np.testing.assert_array_equal(gt.image_item.image[..., 0], gt.layer.cube.band(30))
    window.mode_actions[DisplayMode.TRUE_COLOUR].trigger()
    assert window.controls.mode_buttons[DisplayMode.TRUE_COLOUR].isChecked()
    image = gt.image_item.image
    assert image.shape == (CROP, CROP, 3) and 0 <= image.min() and image.max() <= 1
    scene.set_mode("band")
    assert gt.image_item.image.ndim == 2 and window.mode_actions[DisplayMode.BAND].isChecked()


def test_colormap_combo(window):
    combo = window.controls.colormap_combo
    combo.setCurrentIndex(combo.findData("viridis"))
    assert window.scene.colormap == "viridis"
    lut = layer_panel(window, "recon").image_item.lut
    assert lut is not None and tuple(lut[-1][:3]) != tuple(lut[0][:3]) and lut[-1][0] != lut[-1][1]


def test_shared_contrast_toggle_and_percentiles(window):
    gt, recon = layer_panel(window, "gt"), layer_panel(window, "recon")
    assert np.allclose(gt.image_item.levels, recon.image_item.levels)
    low, high = gt.rendered.levels
    assert window.controls.levels_bar.text() == f"{low:.4g} – {high:.4g}"
    window.controls.shared_check.setChecked(False)
    assert window.scene.shared_contrast is False and not window.shared_action.isChecked()
    assert not np.allclose(gt.image_item.levels, recon.image_item.levels)
    window.controls.high_spin.setValue(90.0)
    assert window.scene.percentiles == (1.0, 90.0)
    window.controls.low_spin.setValue(95.0)  # above high: refused, the control snaps back
    assert window.scene.percentiles == (1.0, 90.0) and window.controls.low_spin.value() == 1.0
    assert "per-panel contrast 1–90 %" in window.note_label.text()


def test_close_button_removes_layer(window, qtbot):
    panel = layer_panel(window, "guide")
    qtbot.mouseClick(panel.close_button, Qt.MouseButton.LeftButton)
    assert [l.role for l in window.scene.layers] == ["gt", "lr", "recon"]
    assert len(window.grid.panels) == 3
    window.close_all_action.trigger()
    assert window.grid.panels == [] and window.grid._stack.currentIndex() == 0


# ------------------------------------------------------------------------------ opening files
def test_bad_file_shows_error_dialog(window, errors, tmp_path):
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"this is not a cube at all")
    window.open_files([("gt", str(bad))], background=False)
    assert len(errors) == 1
    title, text = errors[0]
    assert "broken.npy" in title and "broken.npy" in text
    assert len(window.scene.layers) == 4  # nothing added, nothing lost


def test_background_load_error_reaches_dialog(window, errors, qtbot, tmp_path):
    missing = tmp_path / "nope.hdr"
    window.open_files([("recon", str(missing))])
    qtbot.waitUntil(lambda: not window.loading, timeout=5000)
    assert len(errors) == 1 and "nope.hdr" in errors[0][1]


def test_shape_mismatch_is_an_error_dialog(window, errors, monkeypatch):
    import app.qt.main_window as mw

    monkeypatch.setattr(mw, "load_cube", lambda path, options: Cube.from_array(np.zeros((10, 7, 31)), WL))
    window.open_files([("recon", "/data/odd.npy")], background=False)
    assert len(errors) == 1 and "pixel grid" in errors[0][1]


def test_ambiguous_file_asks_and_retries(window, monkeypatch, errors):
    import app.qt.main_window as mw
    from app.qt import dialogs

    calls = []

    def fake_load(path, options):
        calls.append(dict(options))
        if "var" not in options:
            raise AmbiguousCubeError(path, "holds several 3-D arrays", "var", ["rad", "ref"])
        if "layout" not in options:
            raise AmbiguousCubeError(path, "shape (31, 96, 96)", "layout", ["BHW", "HWB"])
        return Cube.from_array(scene_cubes()[3][1].data, WL, name="from_mat")

    asked = []

    def fake_ask(parent, path, option, problem, choices):
        asked.append((option, tuple(choices)))
        return choices[-1] if option == "var" else "BHW"

    monkeypatch.setattr(mw, "load_cube", fake_load)
    monkeypatch.setattr(dialogs, "ask_option", fake_ask)
    window.open_files([("recon", "/data/two_vars.mat")], background=False)
    assert asked == [("var", ("rad", "ref")), ("layout", ("BHW", "HWB"))]
    assert calls[-1] == {"var": "ref", "layout": "BHW"}
    assert window.scene.layers[-1].name == "two_vars:ref" and errors == []  # the file's name, not the cube's
    recent = window.recent_files()[0]
    assert recent["options"] == {"var": "ref", "layout": "BHW"} and recent["role"] == "recon"


def test_cancelled_picker_adds_nothing(window, monkeypatch, errors):
    import app.qt.main_window as mw
    from app.qt import dialogs

    def fake_load(path, options):
        raise AmbiguousCubeError(path, "holds several 3-D arrays", "var", ["a", "b"])

    monkeypatch.setattr(mw, "load_cube", fake_load)
    monkeypatch.setattr(dialogs, "ask_option", lambda *a: None)
    window.open_files([("gt", "/data/x.mat")], background=False)
    assert len(window.scene.layers) == 4 and errors == []


def test_other_hsi_error_is_shown_verbatim(window, monkeypatch, errors):
    import app.qt.main_window as mw

    def fake_load(path, options):
        raise NoCubeError(path, "holds no 3-D numeric array")

    monkeypatch.setattr(mw, "load_cube", fake_load)
    window.open_files([("gt", "/data/empty.mat")], background=False)
    assert errors == [("Cannot open empty.mat", "/data/empty.mat: holds no 3-D numeric array")]


def test_open_dialog_roles_and_recent_files(window, monkeypatch, qtbot, tmp_path):
    import app.qt.main_window as mw
    from app.qt import dialogs
    from PyQt6.QtWidgets import QFileDialog

    recon = scene_cubes()[3][1]
    monkeypatch.setattr(mw, "load_cube", lambda path, options: recon.replace(name="opened"))
    paths = [str(tmp_path / "a_sr.npy"), str(tmp_path / "b_sr.npy")]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: (paths, "")))
    monkeypatch.setattr(dialogs, "ask_roles", lambda parent, p, existing: [("recon", x) for x in p])
    window.open_action.trigger()
    qtbot.waitUntil(lambda: not window.loading, timeout=5000)
    assert [l.role for l in window.scene.layers].count("recon") == 3
    assert [e["path"] for e in window.recent_files()][:2] == [paths[1], paths[0]] or \
        {e["path"] for e in window.recent_files()[:2]} == set(paths)
    window._fill_recent_menu()
    labels = [a.text() for a in window.recent_menu.actions()]
    assert any("a_sr.npy" in t for t in labels) and labels[-1] == "Clear list"


def test_role_dialog_guesses(qtbot):
    from app.qt.dialogs import RoleDialog

    dialog = RoleDialog(["/d/scene_gt.mat", "/d/scene_lr.mat", "/d/rgb.png", "/d/mst_out.npy"])
    qtbot.addWidget(dialog)
    assert [r for r, _ in dialog.roles()] == ["gt", "lr", "guide", "recon"]


def test_drop_files_opens_them(window, monkeypatch, qtbot, tmp_path):
    import app.qt.main_window as mw
    from app.qt import dialogs

    recon = scene_cubes()[3][1]
    monkeypatch.setattr(mw, "load_cube", lambda path, options: recon.replace(name="dropped"))
    monkeypatch.setattr(dialogs, "ask_roles", lambda parent, p, existing: [("recon", x) for x in p])
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "dropped.npy"))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.scene.layers[-1].name == "dropped", timeout=5000)
    assert window.grid.panels[-1].name_label.full_text() == "dropped"


def test_opening_into_empty_window_selects_centre_pixel(qtbot, settings, errors, monkeypatch):
    import app.qt.main_window as mw
    from app.qt.main_window import MainWindow

    monkeypatch.setattr(mw, "load_sample", scene_cubes)
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    assert win.grid._stack.currentIndex() == 0  # placeholder
    win.open_sample()
    qtbot.waitUntil(lambda: not win.loading, timeout=5000)
    assert [l.role for l in win.scene.layers] == ["gt", "lr", "guide", "recon"]
    assert win.scene.pixel == (CROP // 2, CROP // 2) and len(win.spectra.curves) == 4
    assert win.windowTitle().startswith("food_gt")


def test_theme_switch_keeps_state(window):
    window.scene.set_pixel(5, 6)
    window.set_theme("light")
    try:
        assert len(window.grid.panels) == 4 and window.grid.panels[0].vline.value() == 6.5
        assert window.settings.value("theme") == "light"
    finally:
        window.set_theme("dark")


def test_export_png(window, monkeypatch, tmp_path):
    from PyQt6.QtGui import QImage
    from PyQt6.QtWidgets import QFileDialog

    out = tmp_path / "view.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    window.export_action.trigger()
    assert QImage(str(out)).width() == window.grid.width()



def test_big_cubes_render_on_a_worker(window, qtbot, monkeypatch):
    import app.qt.image_grid as grid_module

    monkeypatch.setattr(grid_module, "SYNC_RENDER_LIMIT", 0)
    window.scene.set_band(2)
    window.scene.set_band(9)  # queued behind the first: only the newest is shown
    qtbot.waitUntil(lambda: window.grid.wait_idle(), timeout=5000)
    gt = layer_panel(window, "gt")
    np.testing.assert_array_equal(gt.image_item.image, gt.layer.cube.band(9))
    window.analysis.wait(30)  # the busy bar also shows a running analysis
    assert not window.busy_bar.isVisible()


def test_empty_state_buttons(qtbot, settings, errors, monkeypatch):
    import app.qt.main_window as mw
    from app.qt.main_window import MainWindow

    monkeypatch.setattr(mw, "load_sample", scene_cubes)
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    qtbot.mouseClick(win.grid.sample_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(win.scene.layers) == 4, timeout=5000)
    assert win.grid._stack.currentIndex() == 1


def test_real_files_through_the_readers(qtbot, settings, errors, monkeypatch, tmp_path):
    """.npy files through app.core.io; shapes like (31, 8, 9) leave the axis order to the user."""
    from app.qt import dialogs
    from app.qt.main_window import MainWindow

    gt = scene_cubes()[0][1].data[:32, :36]
    lr = gt.reshape(8, 4, 9, 4, 31).mean(axis=(1, 3))
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "lr_bhw.npy", np.ascontiguousarray(lr.transpose(2, 0, 1)))
    asked = []

    def answer(parent, path, option, problem, choices):
        asked.append((option, path))
        return "BHW" if "lr_bhw" in path else "HWB"

    monkeypatch.setattr(dialogs, "ask_option", answer)
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.open_files([("gt", str(tmp_path / "gt.npy")), ("lr", str(tmp_path / "lr_bhw.npy"))], background=False)
    assert errors == []
    assert all(option == "layout" for option, _ in asked)
    layers = {l.role: l for l in win.scene.layers}
    assert layers["gt"].cube.shape == (32, 36, 31)
    assert layers["lr"].scale == 4 and layers["lr"].cube.shape == (8, 9, 31)
    np.testing.assert_allclose(layers["lr"].cube.spectrum(2, 3), lr[2, 3], rtol=1e-6)
    recent = {Path(e["path"]).name: e for e in win.recent_files()}
    if any("lr_bhw" in p for _, p in asked):
        assert recent["lr_bhw.npy"]["options"] == {"layout": "BHW"}


def test_open_folder_of_pngs(qtbot, settings, errors, monkeypatch):
    from PyQt6.QtWidgets import QFileDialog

    from app.qt import dialogs
    from app.qt.main_window import MainWindow
    from tests.qt.conftest import SAMPLE

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(SAMPLE)))
    monkeypatch.setattr(dialogs, "ask_roles", lambda parent, paths, existing: [("gt", paths[0])])
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.open_folder_action.trigger()
    qtbot.waitUntil(lambda: not win.loading, timeout=10000)
    assert errors == []
    (layer,) = win.scene.layers
    assert layer.cube.shape == (256, 256, 31) and win.scene.band_text() == "550 nm"
    assert "65535" in win.note_label.text()


def test_unknown_role_is_reported(window, errors):
    window.open_files([("truth", "/data/a.npy")], background=False)
    assert len(errors) == 1 and "unknown role" in errors[0][1] and not window.loading


def test_shift_click_pins_pixels(window, qtbot):
    gt_panel = layer_panel(window, "gt")
    window.scene.set_pixel(10, 10)
    for row, col in ((20, 30), (60, 70)):
        scene_pos = gt_panel.view.mapViewToScene(QPointF(col + 0.5, row + 0.5))
        qtbot.mouseClick(gt_panel.graphics.viewport(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.ShiftModifier, gt_panel.graphics.mapFromScene(scene_pos))
    scene = window.scene
    assert scene.pins == ((20, 30), (60, 70)) and scene.pixel == (10, 10)
    assert all(len(p.pin_items) == 4 for p in window.grid.panels)  # box + number per pin
    spectra = window.spectra
    # 4 layers at the pixel + (GT + 1 recon) at each of the 2 pins
    assert len(spectra.curves) == 4 + 2 * 2
    pinned = [(i, s.layer.role, s.pixel) for i, s in spectra.pin_samples]
    assert pinned == [(0, "gt", (20, 30)), (0, "recon", (20, 30)), (1, "gt", (60, 70)), (1, "recon", (60, 70))]
    np.testing.assert_allclose(spectra.curves[4].yData, scene_cubes()[0][1].spectrum(20, 30))
    assert "#2 (r 60, c 70)" in spectra.legend.text()  # one legend entry per pin (its line style)
    assert ",gt,2,60,70,700," in spectra.csv_text()
    window.clear_pins_action.trigger()
    assert len(spectra.curves) == 4 and all(p.pin_items == [] for p in window.grid.panels)


def _fits(panel) -> bool:
    """The panel shows its whole image, filling the view along one axis (no zoom in or out)."""
    (x0, x1), (y0, y1) = panel.view.viewRange()
    w, h = panel.extent.width(), panel.extent.height()
    covers = x0 <= 1e-6 and x1 >= w - 1e-6 and y0 <= 1e-6 and y1 >= h - 1e-6
    tight = abs((x1 - x0) - w) < 1e-3 * w or abs((y1 - y0) - h) < 1e-3 * h
    return covers and tight


def test_lr_opened_before_its_gt_is_rebuilt_on_the_hr_grid_and_fitted(qtbot, settings, errors, tmp_path):
    """An LR that finishes loading first is alone on its own grid (scale 1); when the GT arrives
    its panel must be rebuilt on the HR grid (it kept the 24x24 extent and showed a quarter of
    the picture, zoomed in), and every panel fits its image once the new layout has settled."""
    from app.qt.main_window import MainWindow

    cubes = dict(scene_cubes())
    np.save(tmp_path / "gt.npy", cubes["gt"].data)
    np.save(tmp_path / "lr.npy", cubes["lr"].data)
    np.save(tmp_path / "recon.npy", cubes["recon"].data)
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    win.open_files([("lr", str(tmp_path / "lr.npy")), ("gt", str(tmp_path / "gt.npy")),
                    ("recon", str(tmp_path / "recon.npy"))], background=False)
    assert errors == []
    lr_panel = next(p for p in win.grid.panels if p.layer.role == "lr")
    assert lr_panel.layer.scale == SCALE and lr_panel.built_scale == SCALE
    assert (lr_panel.extent.width(), lr_panel.extent.height()) == (CROP, CROP)
    qtbot.waitUntil(lambda: all(_fits(p) for p in win.grid.panels), timeout=3000)
    assert win.scene.view_range is None  # the layout is not a user zoom
    # and a user zoom is kept when a layer is added afterwards
    win.scene.set_view_range((10.0, 40.0), (20.0, 50.0))
    win.scene.add_layer(Cube.from_array(cubes["recon"].data * 0.5, WL, name="half"), "recon")
    qtbot.wait(20)
    for p in win.grid.panels:
        (x0, x1), (y0, y1) = p.view.viewRange()
        assert x0 <= 10.0 + 1e-6 and x1 >= 40.0 - 1e-6 and y0 <= 20.0 + 1e-6 and y1 >= 50.0 - 1e-6
        assert not _fits(p)


def test_close_all_resets_the_spectra_axes(window):
    spectra, scene = window.spectra, window.scene
    view = spectra.plot.getViewBox()
    fresh = [list(r) for r in view.viewRange()]
    scene.set_pixel(30, 40)
    (x0, x1), _ = view.viewRange()
    assert x0 < 400 and x1 > 700  # fitted to the wavelengths of the open cubes
    window.close_all_action.trigger()
    assert not scene.layers and spectra.curves == []
    assert [list(r) for r in view.viewRange()] == fresh == [[0.0, 1.0], [0.0, 1.0]]
    assert all(view.autoRangeEnabled())
    assert spectra.plot.getAxis("bottom").labelText == "Wavelength"


def test_gui_names_its_own_control_not_a_command_line_flag(window, monkeypatch, errors):
    from PyQt6.QtWidgets import QInputDialog

    from app.qt import dialogs

    exc = AmbiguousCubeError("/data/cube.npy", "shape (31, 96, 96) could be BHW or HWB", "layout", ["BHW", "HWB"])
    assert "--layout" in str(exc)  # the command line's wording stays as it was
    labels = []

    def fake_get_item(parent, title, label, choices, current, editable):
        labels.append(label)
        return choices[0], True

    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(fake_get_item))
    assert dialogs.ask_option(window, "/data/cube.npy", exc.option, exc.problem, exc.choices) == "BHW"
    assert "--" not in labels[0] and "could be BHW or HWB" in labels[0]
    window.report(exc, "Cannot open cube.npy")
    assert errors and "--layout" not in errors[-1][1] and "choose the axis order" in errors[-1][1]
    assert "BHW, HWB" in errors[-1][1]

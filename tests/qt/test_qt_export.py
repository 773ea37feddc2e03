"""The Export menu, the paper-figure builder dialog and session save/open in the main window, on
a real CAVE crop (tests/qt/conftest.py)."""
from __future__ import annotations

import base64
import csv
import io
import errno
import json
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from PyQt6.QtCore import Qt

from app.core.io import open_cube
from app.core.state.scene import DisplayMode
from app.core.export.session import session_state


def test_menus_and_shortcuts(window):
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles.index("E&xport") == titles.index("&File") + 1
    ex = window.exporter.actions
    assert ex["paper"].shortcut().toString() == "Ctrl+E"
    assert ex["save_session"].shortcut().toString() == "Ctrl+Shift+S"
    assert window.open_action.shortcut().toString() == "Ctrl+O"
    # no shortcut is bound twice (Qt would ignore an ambiguous one)
    keys = [a.shortcut().toString() for a in window.findChildren(type(ex["paper"])) if not a.shortcut().isEmpty()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_panel_and_grid_figures(window, tmp_path):
    window.exporter.export_panel(str(tmp_path / "panel.png"), dpi=120, background=False)
    with Image.open(tmp_path / "panel.png") as im:
        assert im.info["dpi"][0] == pytest.approx(120, abs=0.02)
        assert len(np.unique(np.asarray(im.convert("L")))) > 50
    window.exporter.export_grid(str(tmp_path / "grid.svg"), background=False)
    root = ET.parse(tmp_path / "grid.svg").getroot()
    sizes = []
    for el in root.findall(".//{http://www.w3.org/2000/svg}image"):
        href = el.get("{http://www.w3.org/1999/xlink}href") or el.get("href")
        sizes.append(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).size)
    # every panel embedded at its own resolution: three 96x96 HR layers and the 24x24 LR
    assert sorted(s for s in sizes if s[0] == s[1] and s[0] > 1) == [(24, 24), (96, 96), (96, 96), (96, 96)]
    assert window.errors_reported == []


def test_paper_figure_dialog_preview_and_export(window, tmp_path, qtbot):
    dialog = window.exporter.open_figure_builder()
    assert dialog is not None and dialog.isVisible()
    assert dialog.methods.count() == 2  # GT and the reconstruction (the LR and RGB guide cannot be columns)
    qtbot.waitUntil(lambda: not dialog.preview_pending(), timeout=60_000)  # rendered off the GUI thread
    assert not dialog.preview.pixmap().isNull()
    assert "PSNR" in dialog.status.text()
    width_two = dialog.last_preview.shape[1]
    dialog.methods.item(0).setCheckState(Qt.CheckState.Unchecked)  # drop the GT column
    assert dialog.update_preview()
    assert dialog.last_preview.shape[1] < width_two
    # the inset from the current zoom
    window.scene.set_view_range((10, 42), (20, 52))
    dialog.use_current_view()
    assert dialog.spec().inset == (10.0, 20.0, 42.0, 52.0)
    dialog.export(str(tmp_path / "fig.pdf"), background=False)
    raw = (tmp_path / "fig.pdf").read_bytes()
    assert raw.startswith(b"%PDF") and b"/Subject" in raw
    # nothing chosen: a clear message, no export
    for i in range(dialog.views.count()):
        dialog.views.item(i).setCheckState(Qt.CheckState.Unchecked)
    assert not dialog.update_preview()
    assert "view" in dialog.status.text() and not dialog.export_button.isEnabled()
    dialog.close()


def test_data_exports(window, tmp_path):
    scene = window.scene
    scene.set_pixel(30, 40)
    ex = window.exporter
    ex.export_spectra_csv(str(tmp_path / "s.csv"), background=False)
    lines = [l for l in (tmp_path / "s.csv").read_text().splitlines() if not l.startswith("#")]
    header = next(csv.reader(lines[:1]))
    gt = scene.layers_with_role("gt")[0]
    col = header.index(f"{gt.label} (r 30, c 40)")
    values = [float(r[col]) for r in csv.reader(lines[1:]) if r[col]]
    assert np.allclose(values, gt.cube.spectrum(30, 40))
    ex.export_metrics(str(tmp_path / "m.md"), background=False)
    assert "| method | PSNR (dB)" in (tmp_path / "m.md").read_text()
    ex.export_per_band(str(tmp_path / "b.csv"), background=False)
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 1 + 1 + 31
    recon = scene.layers_with_role("recon")[0]
    ex.export_cube(str(tmp_path / "r.hdr"), uid=recon.uid, background=False)
    assert np.array_equal(open_cube(tmp_path / "r.hdr").data, recon.cube.data)
    assert window.errors_reported == []


def _curves_of_copy_csv(text: str) -> list[np.ndarray]:
    """Each curve of the spectra dock's Copy CSV as (n, 2) (wavelength, value) sorted by
    wavelength, ROI std left out."""
    curves: dict[tuple, list[tuple[float, float]]] = {}
    for name, role, pin, row, col, x, value in csv.reader(text.splitlines()[1:]):
        if pin != "roi-std":
            curves.setdefault((name, role, pin, row, col), []).append((float(x), float(value)))
    return [np.array(sorted(points)) for points in curves.values()]


def _curves_of_export_csv(text: str) -> list[np.ndarray]:
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    header, *rows = list(csv.reader(lines))
    return [np.array(sorted((float(r[0]), float(r[i])) for r in rows if r[i]))
            for i, title in enumerate(header) if i > 0 and not title.endswith("(ROI std)")]


def _same_curves(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """One-to-one match of curves with equal wavelengths and values (the copy has 6 digits)."""
    left = list(b)
    for curve in a:
        match = next((i for i, other in enumerate(left) if other.shape == curve.shape
                      and np.allclose(other, curve, rtol=1e-5, atol=1e-8)), None)
        if match is None:
            return False
        del left[match]
    return not left


@pytest.mark.parametrize("residuals", [False, True])
def test_copy_csv_and_the_export_write_the_same_curves(window, tmp_path, residuals):
    """The spectra dock's Copy CSV and Export > Spectra as CSV: the same curves (clicked pixel,
    pins, ROI mean, residuals as the plot shows them), with the same values."""
    from app.core.state.selection import Roi

    scene = window.scene
    scene.set_pixel(30, 40)
    scene.add_pin(60, 70)
    scene.add_pin(30, 40)  # the clicked pixel pinned too: one curve, not two
    scene.set_roi(Roi.rect(10, 10, 30, 25))
    window.spectra.residual_button.setChecked(residuals)
    assert scene.spectra_choice.residuals is residuals
    path = tmp_path / "s.csv"
    window.exporter.export_spectra_csv(str(path), background=False)
    copied = _curves_of_copy_csv(window.spectra.csv_text())
    exported = _curves_of_export_csv(path.read_text())
    assert _same_curves(copied, exported) and len(copied) > 8
    assert any(",residual," in line for line in window.spectra.csv_text().splitlines()) is residuals


def test_read_only_target_shows_a_clear_error_dialog(window, tmp_path, monkeypatch, errors):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    window.scene.set_pixel(3, 3)
    window.exporter.export_spectra_csv(str(tmp_path / "s.csv"), background=False)
    assert errors and errors[-1][0] == "Export spectra"
    assert str(tmp_path / "s.csv") in errors[-1][1] and "read-only" in errors[-1][1]
    assert list(tmp_path.iterdir()) == []


def test_session_save_and_open_restore_the_view(window, tmp_path, errors):
    scene = window.scene
    scene.set_mode(DisplayMode.BAND)
    scene.set_band(12)
    scene.set_colormap("magma")
    scene.set_view_range((5, 50), (8, 60))
    scene.set_pixel(20, 21)
    scene.add_pin(40, 41)
    before = session_state(scene)
    path = tmp_path / "s.hsisession.json"
    window.exporter.save_session(str(path), write_computed=True)
    data = json.loads(path.read_text())
    assert data["layout"]["window_state"] and len(data["layers"]) == 4
    scene.set_band(2)
    scene.clear_pins()
    scene.reset_view()
    report = window.exporter.open_session(str(path))
    assert report is not None and report.skipped == []
    assert session_state(scene) == before
    assert errors == []
    # a corrupt session: an error dialog naming the file, the scene kept
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert window.exporter.open_session(str(bad)) is None
    assert errors and str(bad) in errors[-1][1]
    assert session_state(scene) == before


def test_session_restores_the_ab_comparison(window, tmp_path, errors):
    """Mode, the two panels (by layer: the uids change on restore) and the divider come back."""
    ab = window.compare_ab
    layers = window.scene.layers
    names = {layer.uid: layer.name for layer in layers}
    recon = window.scene.layers_with_role("recon")[0]
    lr = window.scene.layers_with_role("lr")[0]
    ab.set_pair(recon.uid, lr.uid)
    ab.set_divider(37.0)
    ab.set_mode("flicker")
    path = tmp_path / "ab.hsisession.json"
    window.exporter.save_session(str(path), write_computed=True)
    ab.set_mode("swipe")
    ab.set_pair(layers[0].uid, layers[1].uid)
    ab.set_divider(5.0)
    report = window.exporter.open_session(str(path))
    assert report is not None and errors == []
    new_names = {layer.uid: layer.name for layer in window.scene.layers}
    assert ab.a_uid not in names and ab.b_uid not in names  # layers rebuilt by the restore
    assert (new_names[ab.a_uid], new_names[ab.b_uid]) == (recon.name, lr.name)
    assert ab.mode == "flicker" and ab.divider_x == 37.0
    assert ab.a_combo.currentData() == ab.a_uid and ab.b_combo.currentData() == ab.b_uid
    ab.set_mode("swipe")


def _distinct_colours(pixmap) -> int:
    """How many different colours a coarse probe of the picture finds (a blank one has one)."""
    image = pixmap.toImage()
    seen = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    return len(seen)


def test_paper_figure_preview_renders_off_the_gui_thread(window, qtbot, monkeypatch):
    import threading

    from app.core.export import figure as core_figure

    threads = []
    render = core_figure.render_paper_figure

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return render(*args, **kwargs)

    monkeypatch.setattr(core_figure, "render_paper_figure", spy)
    dialog = window.exporter.open_figure_builder()
    assert dialog.preview_pending()  # opening returned before the figure was drawn
    qtbot.waitUntil(lambda: not dialog.preview_pending(), timeout=60_000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    pixmap = dialog.preview.pixmap()
    assert not pixmap.isNull() and pixmap.width() > 200 and _distinct_colours(pixmap) > 50
    assert "PSNR" in dialog.status.text() and dialog.export_button.isEnabled()
    dialog.close()


def test_paper_figure_change_during_a_render_ends_with_the_latest_state(window, qtbot, monkeypatch):
    import threading

    from app.core.export import figure as core_figure

    release = threading.Event()
    started = threading.Event()
    bands = []
    render = core_figure.render_paper_figure

    def slow(inputs, cancelled=None):
        bands.append(inputs.band)
        if len(bands) == 1:  # hold the first render until the user has changed the band
            started.set()
            assert release.wait(30)
        return render(inputs, cancelled)

    monkeypatch.setattr(core_figure, "render_paper_figure", slow)
    shown = []
    dialog = window.exporter.open_figure_builder()
    dialog.renderer.done.connect(lambda key, ticket, result: shown.append(ticket))
    assert started.wait(30)
    first = dialog.preview_ticket
    dialog.band.setValue(5)  # 1-based in the dialog: band index 4
    qtbot.waitUntil(lambda: dialog.preview_ticket > first, timeout=5_000)  # the debounce fired
    release.set()
    qtbot.waitUntil(lambda: not dialog.preview_pending(), timeout=60_000)
    qtbot.wait(200)  # let a stale result arrive if one were ever sent
    assert dialog.last_provenance["band"] == 4 and bands[-1] == 4
    assert first not in shown  # the superseded render was dropped, never painted over the newer one
    assert _distinct_colours(dialog.preview.pixmap()) > 50
    assert dialog.band.text() == "5 / 31"
    dialog.close()


def test_one_band_numbering_in_the_window_the_builder_and_the_figures(window, qtbot):
    from app.core.export import figure as core_figure

    scene = window.scene
    scene.set_band(21)
    assert window.band_bar.index_label.text() == "22 / 31"
    dialog = window.exporter.open_figure_builder()
    qtbot.waitUntil(lambda: not dialog.preview_pending(), timeout=60_000)
    assert dialog.band.text() == "22 / 31" and dialog.band_nm.text() == "610 nm"
    assert dialog.spec().band == 21
    fig = core_figure.paper_figure(scene, dialog.spec())
    labels = [ax.get_ylabel() for ax in fig.get_axes() if ax.get_ylabel()]
    assert "Band 22 / 31\n610 nm" in labels
    recon = scene.layers_with_role("recon")[0]
    panel = core_figure.panel_figure(scene, recon.uid)
    assert panel.get_axes()[0].get_title().endswith("band 22 / 31 (610 nm)")
    dialog.close()


def test_paper_figure_names_a_false_colour_row_false_colour():
    from app.core.cube import Cube
    from app.core.export import figure as core_figure
    from app.core.state.scene import Scene

    from tests.qt.conftest import food_array

    near_infrared = np.linspace(700.0, 1000.0, 31)  # outside 400-700 nm: shown in false colour
    scene = Scene()
    gt = scene.add_layer(Cube.from_array(food_array(), near_infrared, name="nir_gt"), "gt", "nir_gt")
    recon = scene.add_layer(Cube.from_array(np.clip(food_array() * 1.02, 0, 1), near_infrared, name="r"), "recon", "r")
    fig = core_figure.paper_figure(scene, core_figure.PaperFigureSpec(methods=[gt.uid, recon.uid], views=("true",)))
    assert [ax.get_ylabel() for ax in fig.get_axes() if ax.get_ylabel()] == ["False colour"]
    scene.remove_layer(recon)
    scene.remove_layer(gt)
    scene.add_layer(Cube.from_array(food_array(), np.linspace(400.0, 700.0, 31), name="vis"), "gt", "vis")
    fig = core_figure.paper_figure(scene, core_figure.PaperFigureSpec(methods=[scene.layers[0].uid], views=("true",)))
    assert [ax.get_ylabel() for ax in fig.get_axes() if ax.get_ylabel()] == ["True colour"]

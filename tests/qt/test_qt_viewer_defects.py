"""Small viewer defects, each pinned by a test: panel headers that say what the picture is, band
numbering from 1, RGB boxes that show the bands used, roles and names of opened files, a
protocol combo wide enough to read, and a Run model dock whose button and progress stay visible."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtGui import QPixmap

from app.core.cube import Cube
from app.core.state.scene import DisplayMode, Scene
from tests.qt.conftest import food_array

pytestmark = pytest.mark.gui


def no_wavelength_scene(bands: int = 31) -> Scene:
    scene = Scene()
    data = food_array()[..., :bands]
    scene.add_layer(Cube.from_array(data, None, name="nowl"), "gt", "nowl")
    return scene


@pytest.fixture
def bare_window(qtbot, settings, errors):
    """A main window at the default 1400 x 900 on a cube without wavelengths."""
    from app.qt.main_window import MainWindow

    win = MainWindow(no_wavelength_scene(), settings=settings)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_panel_header_says_false_colour_when_the_picture_is_false_colour(bare_window, qtbot):
    win = bare_window
    win.scene.set_mode(DisplayMode.TRUE_COLOUR)
    assert win.grid.wait_idle()
    panel = win.grid.panels[0]
    assert "false colour" in panel.rendered.note  # no wavelengths: the renderer fell back
    assert panel._info.startswith("false colour") and "true colour" not in panel._info


def test_band_slider_end_labels_count_from_one_without_wavelengths(bare_window):
    bar = bare_window.band_bar
    assert bar.min_label.text() == "band 1" and bar.max_label.text() == "band 31"
    bare_window.scene.set_band(21)
    assert bar.index_label.text() == "22 / 31" and bar.spin.text() == "band 22"


def test_every_view_numbers_bands_from_one_without_wavelengths(bare_window, qtbot):
    """The band bar said 'band 22' while the spectra's band line, the levels bar, the panel header and
    the per-band plot's axis said 21 (0-based): one numbering everywhere, and moving the spectra's
    band line or clicking the per-band axis at 22 selects index 21."""
    win = bare_window
    win.scene.set_band(21)
    assert win.scene.band_text() == "band 22"
    line = win.spectra.band_line
    assert line.value() == 22.0 and "band 22" in line.label.textItem.toPlainText()
    assert win.analysis._x_axis()[21] == 22.0
    win.scene.set_band(3)
    line.setValue(22.0)  # as a drag of the line does
    assert win.scene.band == 21
    win.scene.set_band(3)
    win.analysis.jump_to_x(22.2)
    assert win.scene.band == 21
    assert win.grid.wait_idle()
    assert "band 22" in win.grid.panels[0]._info


def test_rgb_boxes_show_the_bands_used_without_wavelengths(bare_window):
    win = bare_window
    win.scene.set_mode(DisplayMode.RGB)
    used = win.scene.rgb_bands()
    assert used == (30, 15, 0)
    shown = [s.text() for s in win.controls.rgb_spins]
    assert shown == [f"band {k + 1}" for k in used], shown


def test_role_dialog_takes_a_model_output_for_a_reconstruction(qtbot, tmp_path):
    from app.qt.dialogs import RoleDialog

    out = tmp_path / "scene.npy"  # a neutral name: only the metadata says it is a model's output
    np.save(out, np.zeros((4, 4, 3), np.float32))
    out.with_name("scene.npy.json").write_text(json.dumps({"provenance": {"model": "gsa", "scale": 4}}))
    plain = tmp_path / "other.npy"
    np.save(plain, np.zeros((4, 4, 3), np.float32))
    dialog = RoleDialog([str(out), str(plain)])
    qtbot.addWidget(dialog)
    assert [r for r, _ in dialog.roles()] == ["recon", "gt"]


def test_role_dialog_reads_an_envi_headers_provenance(qtbot, tmp_path):
    from app.core.io import save_cube
    from app.qt.dialogs import RoleDialog

    cube = Cube.from_array(np.zeros((4, 4, 3), np.float32), [500.0, 600.0, 700.0], name="x",
                           metadata={"provenance": {"model": "gsa"}})
    path = save_cube(cube, tmp_path / "scene.hdr")
    dialog = RoleDialog([str(path)])
    qtbot.addWidget(dialog)
    assert [r for r, _ in dialog.roles()] == ["recon"]


def test_opened_files_keep_their_stem_as_layer_name(window, monkeypatch, qtbot):
    import app.qt.main_window as mw

    named = Cube.from_array(food_array(), None, name="bicubic of something else")
    monkeypatch.setattr(mw, "load_cube", lambda path, options: named)
    window.open_files([("recon", "/data/lr_bicubic.npy")], background=False)
    assert window.scene.layers[-1].name == "lr_bicubic"


def text_room(combo, width: int) -> int:
    """Width of the text area of ``combo`` when it is ``width`` px wide (the style's edit field)."""
    from PyQt6.QtWidgets import QStyle, QStyleOptionComboBox

    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    option.rect.setWidth(width)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo)
    return field.width()


def test_protocol_combo_is_wide_enough_for_its_names(window, qtbot):
    from PyQt6.QtCore import Qt

    window.resize(1400, 900)
    window.show_run_panel()
    window.resizeDocks([window.run_dock], [330], Qt.Orientation.Horizontal)  # a narrower right column
    qtbot.wait(100)
    combo = window.run_panel.protocol_combo
    fm = combo.fontMetrics()
    longest = max(fm.horizontalAdvance(combo.itemText(i)) for i in range(combo.count()))
    # no layout can squeeze it below the longest name, and it is not squeezed now
    assert text_room(combo, combo.minimumSizeHint().width()) >= longest
    assert text_room(combo, combo.width()) >= longest


def test_run_button_and_progress_stay_visible_after_an_iterative_run(window, qtbot):
    from PyQt6.QtCore import Qt

    window.resize(1400, 900)
    window.show_run_panel()
    qtbot.wait(50)
    panel = window.run_panel
    # what an iterative run leaves: the loss plot, the preview, a long progress message
    panel.loss_plot.show()
    panel.preview_label.setPixmap(QPixmap(160, 160))
    panel.preview_label.show()
    panel.progress_label.setText("step 480/500 · loss 0.0123 · keeping the best estimate so far; "
                                 "added umsft ×4 (blind, 500 steps, 12.3 s) to the scene as a reconstruction")
    # the spectra below take more of the column (a dragged splitter, a bigger font)
    total = window.run_dock.height() + window.spectra_dock.height()
    window.resizeDocks([window.run_dock, window.spectra_dock], [300, total - 300], Qt.Orientation.Vertical)
    qtbot.wait(100)
    dock_bottom = window.run_dock.mapTo(window, window.run_dock.rect().bottomLeft()).y()
    for widget in (panel.run_button, panel.progress_bar, panel.progress_label):
        visible = widget.visibleRegion().boundingRect()
        assert widget.isVisible() and visible.height() == widget.height(), (widget, visible, widget.height())
        assert widget.mapTo(window, widget.rect().bottomLeft()).y() <= dock_bottom

"""File ▸ Attach wavelengths… and `view --var/--guide-var/--wavelengths` (issue 22 item 5) on the
real crops of tests/data: Jasper Ridge (no wavelengths in its .mat) and the Paris HS/MS pair."""
from __future__ import annotations

import numpy as np
import pytest

from app.core.state.scene import DisplayMode, Scene
from tests.conftest import DATA

pytestmark = pytest.mark.gui

JASPER = DATA / "jasper_crop_2d.mat"
PARIS = DATA / "paris_crop_v5.mat"
JASPER_NM = np.round(np.linspace(399.37, 2457.24, 198), 2)


def side_file(folder, values=JASPER_NM):
    path = folder / "jasper_wavelengths.txt"
    path.write_text("# AVIRIS band index, centre wavelength nm\n"
                    + "".join(f"{i} {w:.2f}\n" for i, w in zip(range(4, 4 + len(values)), values)))
    return path


@pytest.fixture
def empty_window(qtbot, settings, errors):
    from app.qt.main_window import MainWindow

    win = MainWindow(Scene(), settings=settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    return win


def bottom_axis(window):
    axis = window.spectra.plot.getAxis("bottom")
    return axis.labelText, axis.labelUnits


def test_attaching_wavelengths_updates_spectra_and_true_colour(empty_window, qtbot, tmp_path, errors):
    window, scene = empty_window, empty_window.scene
    window.open_files([("gt", str(JASPER))], background=False)
    qtbot.waitUntil(lambda: len(scene.layers) == 1 and not window.loading, timeout=30000)
    layer = scene.layers[0]
    assert layer.cube.wavelengths_nm is None and window.attach_wavelengths_action.isEnabled()
    qtbot.waitUntil(lambda: bottom_axis(window)[0] == "Band", timeout=30000)
    assert scene.rgb_bands(layer) == (197, 99, 0)  # no wavelengths: spread over the bands
    scene.set_mode(DisplayMode.RGB)

    assert window.attach_wavelengths(layer, str(side_file(tmp_path)))
    assert not errors
    np.testing.assert_array_equal(scene.wavelengths_nm, JASPER_NM)
    qtbot.waitUntil(lambda: bottom_axis(window) == ("Wavelength", "nm"), timeout=30000)
    # true colour now takes the bands nearest 640/550/460 nm (or the scene's RGB wavelengths)
    expected = tuple(int(np.argmin(np.abs(JASPER_NM - nm))) for nm in scene.rgb_nm)
    assert scene.rgb_bands(scene.layers[0]) == expected and expected != (197, 99, 0)
    assert "nm" in scene.band_text()
    spectra = scene.spectra_at()
    np.testing.assert_array_equal(spectra[0].wavelengths_nm, JASPER_NM)
    assert "jasper_wavelengths.txt" in window.statusBar().currentMessage()
    # the open options say how to open the file again (with the side file)
    assert scene.layers[0].cube.metadata["open_options"]["wavelengths"].endswith("jasper_wavelengths.txt")


def test_a_side_file_with_another_count_is_an_error_dialog_naming_it(empty_window, qtbot, tmp_path, errors):
    window = empty_window
    window.open_files([("gt", str(JASPER))], background=False)
    qtbot.waitUntil(lambda: len(window.scene.layers) == 1 and not window.loading, timeout=30000)
    path = side_file(tmp_path, JASPER_NM[:100])
    assert not window.attach_wavelengths(window.scene.layers[0], str(path))
    assert len(errors) == 1 and "jasper_wavelengths.txt" in errors[0][1] and "198 bands" in errors[0][1]
    assert window.scene.layers[0].cube.wavelengths_nm is None


def test_the_menu_item_asks_for_the_file(empty_window, qtbot, tmp_path, monkeypatch):
    from PyQt6.QtWidgets import QFileDialog

    window = empty_window
    window.open_files([("gt", str(JASPER))], background=False)
    qtbot.waitUntil(lambda: len(window.scene.layers) == 1 and not window.loading, timeout=30000)
    path = side_file(tmp_path)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    window.attach_wavelengths_action.trigger()
    np.testing.assert_array_equal(window.scene.wavelengths_nm, JASPER_NM)


def test_view_options_pick_variables_and_wavelengths_per_file(empty_window, qtbot, tmp_path):
    """`view --gt paris.mat --guide paris.mat --var HSim --guide-var MSim --wavelengths FILE`."""
    window = empty_window
    own = np.asarray(__import__("scipy.io").io.loadmat(PARIS)["wavelength"]).ravel()
    path = tmp_path / "paris_um.txt"
    path.write_text("\n".join(f"{w / 1000:.6f}" for w in own) + "\n")  # micrometres, converted
    window.open_files([("gt", str(PARIS), {"var": "HSim", "wavelengths": str(path)}),
                       ("guide", str(PARIS), {"var": "MSim"})], background=False)
    qtbot.waitUntil(lambda: len(window.scene.layers) == 2 and not window.loading, timeout=30000)
    gt, guide = window.scene.layers
    assert (gt.role, gt.cube.bands, guide.role, guide.cube.bands) == ("gt", 128, "guide", 9)
    np.testing.assert_allclose(gt.cube.wavelengths_nm, own, atol=1e-3)
    assert guide.name.endswith(":MSim") and guide.cube.wavelengths_nm is None

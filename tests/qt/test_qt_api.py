"""app.api.show(): the viewer opened from a script on numpy arrays, rendered and probed."""
from __future__ import annotations

import numpy as np
import pytest

from app import api
from tests.qt.conftest import CROP, SCALE, WL, scene_cubes
from tests.qt.test_qt_screenshot import image_region, to_array

pytestmark = pytest.mark.gui


def test_show_numpy_arrays_renders_every_panel(qtbot, settings, errors):
    cubes = dict(scene_cubes())
    gt, lr, guide, recon = (cubes[r].data for r in ("gt", "lr", "guide", "recon"))
    window = api.show(gt=gt, lr=lr, guide=guide, recon={"noisy": recon, "gt copy": gt.copy()},
                      wavelengths_nm=WL, settings=settings)
    qtbot.addWidget(window)
    assert window in api._OPEN_WINDOWS  # non-blocking: kept alive without the caller's reference
    window.resize(1200, 800)
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: not window.loading and window.grid.wait_idle(), timeout=30_000)
    qtbot.wait(100)

    layers = [(l.role, l.name) for l in window.scene.layers]
    assert layers == [("gt", "GT"), ("lr", "LR"), ("guide", "GUIDE"), ("recon", "noisy"), ("recon", "gt copy")]
    lr_layer = next(l for l in window.scene.layers if l.role == "lr")
    assert lr_layer.scale == SCALE and window.scene.hr_shape == (CROP, CROP)
    np.testing.assert_array_equal(window.scene.layers[0].cube.wavelengths_nm, WL)
    assert window.scene.pixel == (CROP // 2, CROP // 2)

    shot = to_array(window.grab().toImage())
    for panel in window.grid.panels:
        x0, y0, x1, y1 = image_region(window, panel)
        patch = shot[y0:y1, x0:x1].reshape(-1, 3).astype(int)
        assert patch.size and patch.std() > 15, f"{panel.layer.label}: blank panel"
        assert len({tuple(p) for p in patch[::7]}) > 40, f"{panel.layer.label}: too few colours"
    assert not errors


def test_show_takes_cubes_and_paths(qtbot, settings, errors, tmp_path):
    cubes = dict(scene_cubes())
    path = tmp_path / "bicubic_out.npy"
    np.save(path, cubes["recon"].data)
    window = api.show(gt=cubes["gt"], recon=[path], settings=settings)
    qtbot.addWidget(window)
    assert [(l.role, l.name) for l in window.scene.layers] == [("gt", "food_gt"), ("recon", "bicubic_out")]
    assert not errors


def test_show_without_the_gui_extra_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "PyQt6.QtCore", None)  # what an install without [gui] sees
    with pytest.raises(api.HsiError, match=r"pip install 'hsi-sr-viewer\[gui\]'"):
        api.show(gt=np.zeros((4, 4, 3), np.float32))


def test_show_block_runs_the_event_loop_until_it_ends(qtbot, settings, errors):
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    shown = []
    def look_then_close():
        visible = [w for w in QApplication.topLevelWidgets() if w.isVisible() and hasattr(w, "scene")]
        shown.extend(visible)
        for w in visible:
            w.close()  # closing the window ends the blocking call (the application keeps running)

    QTimer.singleShot(200, look_then_close)
    window = api.show(gt=dict(scene_cubes())["gt"].data, block=True, settings=settings)
    qtbot.addWidget(window)
    assert window in shown and window not in api._OPEN_WINDOWS  # the caller holds a blocking call's window

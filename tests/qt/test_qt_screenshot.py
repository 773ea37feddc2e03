"""Render the window offscreen and probe pixels: the panels show real, varied images."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QPointF
from PyQt6.QtGui import QImage

from tests.qt.conftest import CROP

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


def to_array(image: QImage) -> np.ndarray:
    """(H, W, 3) uint8 from a QImage."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits().asstring(stride * h), dtype=np.uint8).reshape(h, stride)
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


def image_region(window, panel, margin=0.15):
    """Window-pixel box (x0, y0, x1, y1) inside the part of ``panel`` showing the image."""
    corners = []
    for vx, vy in ((CROP * margin, CROP * margin), (CROP * (1 - margin), CROP * (1 - margin))):
        scene_pos = panel.view.mapViewToScene(QPointF(vx, vy))
        local = panel.graphics.mapFromScene(scene_pos)
        corners.append(panel.graphics.viewport().mapTo(window, QPoint(local.x(), local.y())))
    (a, b) = corners
    return a.x(), a.y(), b.x(), b.y()


def test_window_renders_varied_images(window, qtbot):
    window.scene.set_pixel(30, 30)
    qtbot.wait(50)
    shot = to_array(window.grab().toImage())
    assert shot.shape[:2] == (window.height(), window.width())
    for panel in window.grid.panels:
        x0, y0, x1, y1 = image_region(window, panel)
        assert x1 - x0 > 100 and y1 - y0 > 100, "panel image too small"
        patch = shot[y0:y1, x0:x1].reshape(-1, 3).astype(int)
        assert patch.std() > 15, f"{panel.layer.label}: blank panel"
        assert len({tuple(p) for p in patch[::7]}) > 40, f"{panel.layer.label}: too few colours"
    guide = next(p for p in window.grid.panels if p.layer.role == "guide")
    x0, y0, x1, y1 = image_region(window, guide)
    patch = shot[y0:y1, x0:x1].astype(int)
    assert np.abs(patch[..., 0] - patch[..., 2]).mean() > 10, "the RGB guide should be in colour"


def test_crosshair_drawn_where_clicked(window, qtbot):
    window.scene.set_pixel(48, 48)
    qtbot.wait(20)
    shot = to_array(window.grab().toImage())
    panel = window.grid.panels[0]
    local = panel.graphics.mapFromScene(panel.view.mapViewToScene(QPointF(48.5, 20.0)))
    p = panel.graphics.viewport().mapTo(window, QPoint(local.x(), local.y()))
    column = shot[p.y() - 30:p.y() + 30, p.x() - 1:p.x() + 2].reshape(-1, 3).astype(int)
    yellow = (column[:, 0] > 180) & (column[:, 1] > 150) & (column[:, 2] < 140)
    assert yellow.sum() >= 10, "dashed yellow crosshair line expected on the clicked column"


def run_viewer_in_subprocess(tmp_path, call: str):
    script = (
        "import app.qt.main_window as mw\n"
        "from tests.qt.conftest import scene_cubes\n"
        "mw.load_sample = scene_cubes\n"
        "from app.qt.app import run_viewer\n"
        f"raise SystemExit({call})\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_run_viewer_screenshot(tmp_path):
    """The unattended path used under Xvfb, in its own process (it runs and quits an event loop)."""
    shot = tmp_path / "shot.png"
    done = run_viewer_in_subprocess(tmp_path, f"run_viewer(screenshot={str(shot)!r})")
    assert done.returncode == 0, done.stderr
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1400, 900)
    assert to_array(image)[100:800, 50:900].std() > 20


def test_run_viewer_screenshot_with_a_bad_file_exits_1(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    shot = tmp_path / "shot.png"
    done = run_viewer_in_subprocess(tmp_path, f"run_viewer([('gt', {str(bad)!r})], screenshot={str(shot)!r})")
    assert done.returncode == 1 and "bad.npy" in done.stderr
    assert QImage(str(shot)).width() == 1400

"""Fixtures for the widget tests: a small real scene (a crop of the bundled CAVE sample) and a
main window on it, with settings in a temporary file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from app.core.cube import Cube
from app.core.state.scene import Scene

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"
WL = np.arange(400.0, 701.0, 10.0)
CROP = 96     # rows/cols of the sample used by the tests (fast, still a real scene)
SCALE = 4     # LR factor


@lru_cache(maxsize=1)
def food_array() -> np.ndarray:
    """(CROP, CROP, 31) float32 reflectance from the sample's 16-bit PNG bands."""
    from PIL import Image

    paths = sorted(SAMPLE.glob("*.png"))
    assert len(paths) == 31, "the bundled sample should have 31 PNG bands"
    top, left = 60, 60  # the yellow pepper and the apple: varied colours
    bands = [np.asarray(Image.open(p), dtype=np.float32)[top:top + CROP, left:left + CROP] / 65535.0
             for p in paths]
    return np.stack(bands, axis=-1)


def scene_cubes() -> list[tuple[str, Cube]]:
    """GT, LR (block mean x4), RGB guide (3 bands, no wavelengths) and one reconstruction."""
    gt = food_array()
    h, w, b = gt.shape
    lr = gt.reshape(h // SCALE, SCALE, w // SCALE, SCALE, b).mean(axis=(1, 3))
    rgb = gt[..., [22, 15, 6]]
    rng = np.random.default_rng(0)
    recon = np.clip(np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1)
                    + 0.01 * rng.standard_normal(gt.shape).astype(np.float32), 0, 1)
    lr_cube = Cube.from_array(lr, WL, name="food_lr")
    lr_cube.metadata["scale"] = SCALE
    return [("gt", Cube.from_array(gt, WL, name="food_gt")), ("lr", lr_cube),
            ("guide", Cube.from_array(rgb, None, name="food_rgb")),
            ("recon", Cube.from_array(recon, WL, name="nearest+noise"))]


@pytest.fixture(autouse=True)
def recovery_dir(tmp_path, monkeypatch) -> Path:
    """Every window of a test keeps its recovery copies in the test's folder, and the unsaved-work
    questions get an answer instead of blocking: Discard and Later (tests that check them
    replace these)."""
    from app.core.export.recovery import RECOVERY_ENV
    from app.qt import dialogs

    folder = tmp_path / "recovery"
    monkeypatch.setenv(RECOVERY_ENV, str(folder))
    monkeypatch.setattr(dialogs, "ask_unsaved", lambda *args, **kwargs: "discard")
    monkeypatch.setattr(dialogs, "ask_recover", lambda *args, **kwargs: "later")
    return folder


@pytest.fixture
def scene() -> Scene:
    scene = Scene()
    for role, cube in scene_cubes():
        scene.add_layer(cube, role, cube.name)
    return scene


@pytest.fixture
def settings(tmp_path):
    from PyQt6.QtCore import QSettings

    return QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def errors(monkeypatch):
    """Captures error boxes instead of showing them: a list of (title, text)."""
    from PyQt6.QtWidgets import QMessageBox

    shown: list[tuple[str, str]] = []

    def fake_critical(parent, title, text, *args, **kwargs):
        shown.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "critical", staticmethod(fake_critical))
    return shown


@pytest.fixture
def window(qtbot, scene, settings, errors):
    from app.qt import theme
    from app.qt.main_window import MainWindow
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance()
    if not app.styleSheet() or theme.current().name != "dark":
        theme.apply(app, "dark")
    win = MainWindow(scene, settings=settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    return win

"""Screen-bound rendering of memory-mapped cubes and a render worker that shares nothing mutable
with the GUI thread (issue 24 item 4, issue 20 item 5)."""
from __future__ import annotations

import threading
import types
from pathlib import Path

import numpy as np
import pytest

from app.core.cube import Cube
from app.core.io import open_cube
from app.core.state.scene import DisplayMode, Scene, render
from tests.conftest import SAMPLE

pytestmark = pytest.mark.gui

WL = np.arange(400.0, 701.0, 10.0)


def write_bip_uint16(path: Path, data: np.ndarray, wavelengths_nm: np.ndarray) -> Path:
    """``data`` (H, W, B) reflectance as a uint16 BIP ENVI file with a reflectance scale factor."""
    h, w, b = data.shape
    np.clip(np.rint(data * 10000.0), 0, 65535).astype("<u2").tofile(path.with_suffix(".img"))
    wl = ", ".join(f"{v:.1f}" for v in wavelengths_nm)
    header = path.with_suffix(".hdr")
    header.write_text("ENVI\n"
                      f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\n"
                      "file type = ENVI Standard\ndata type = 12\ninterleave = bip\nbyte order = 0\n"
                      "reflectance scale factor = 10000\n"
                      f"wavelength units = Nanometers\nwavelength = {{{wl}}}\n")
    return header


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return open_cube(SAMPLE).load().data  # (256, 256, 31) real CAVE reflectance


@pytest.fixture
def mapped_scene(tmp_path, sample) -> Scene:
    """GT and a reconstruction, 768 x 768 x 31 (the real sample tiled 3 x 3), memory-mapped."""
    gt = np.tile(sample, (3, 3, 1))
    recon = np.clip(gt * 0.95 + 0.01, 0.0, 1.0)
    scene = Scene()
    for role, name, data in (("gt", "gt", gt), ("recon", "method", recon)):
        cube = open_cube(write_bip_uint16(tmp_path / name, data, WL))
        assert cube.is_lazy
        scene.add_layer(cube, role, name)
    return scene


def test_a_strided_band_read_equals_the_band_strided(tmp_path, sample):
    lazy = open_cube(write_bip_uint16(tmp_path / "c", sample[:250, :230], WL))
    loaded = Cube.from_array(sample[:250, :230], WL)
    for cube in (lazy, loaded):
        for step in (1, 2, 3, 7):
            part = cube.band(12, step)
            assert part.shape == (250 // step, 230 // step)
            np.testing.assert_array_equal(part, cube.band(12)[: (250 // step) * step: step, : (230 // step) * step: step])


def test_memory_mapped_layers_are_read_at_the_screen_s_pixels_and_finer_when_zoomed(qtbot, mapped_scene, settings,
                                                                                    monkeypatch):
    from app.qt.main_window import MainWindow

    win = MainWindow(mapped_scene, settings=settings)
    qtbot.addWidget(win)
    win.resize(900, 650)
    win.show()
    qtbot.waitExposed(win)
    grid = win.grid
    mapped_scene.set_band(17)
    qtbot.waitUntil(lambda: grid.wait_idle() and all(
        p.rendered is not None and p.rendered.band == 17 and p.rendered.step == p.wanted_step() > 1
        for p in grid.panels), timeout=30_000)
    for panel in grid.panels:
        cube, step = panel.layer.cube, panel.rendered.step
        whole = cube.band(17)
        np.testing.assert_array_equal(panel.rendered.image, whole[: (768 // step) * step: step, : (768 // step) * step: step])
        # the picture still covers the layer on the HR grid (to within one stride)
        rect = panel.image_item.mapRectToParent(panel.image_item.boundingRect())
        assert 768 - step < rect.width() <= 768 and 768 - step < rect.height() <= 768
    # a contrast change (or a band seen before) does not read the files again: planes are kept per band
    reads: list[int] = []
    band = Cube.band

    def counting(self, k, step=1):
        reads.append(int(k))
        return band(self, k, step)

    monkeypatch.setattr(Cube, "band", counting)
    before = [p.rendered for p in grid.panels]
    mapped_scene.set_percentiles(5.0, 95.0)
    qtbot.waitUntil(lambda: grid.wait_idle() and all(p.rendered is not r for p, r in zip(grid.panels, before)),
                    timeout=30_000)
    assert reads == []
    monkeypatch.undo()
    # zoomed in: the visible part needs every pixel, so the band is read again at stride 1
    mapped_scene.set_view_range((100.0, 180.0), (200.0, 280.0))
    qtbot.waitUntil(lambda: grid.wait_idle() and all(p.rendered.step == 1 for p in grid.panels), timeout=30_000)
    np.testing.assert_array_equal(grid.panels[0].rendered.image, grid.panels[0].layer.cube.band(17))


def test_the_render_worker_shares_nothing_mutable_and_the_last_frame_is_a_fresh_render(
        qtbot, window, monkeypatch):
    """Band, mode and contrast changes and a layer closed and opened again while renders are in
    flight on the worker: the scene's caches are only written on the GUI thread, a request's
    cache cannot be written at all, and the frames on screen at the end equal a fresh render."""
    from app.qt import image_grid

    scene, grid = window.scene, window.grid
    monkeypatch.setattr(image_grid, "SYNC_RENDER_LIMIT", -1)  # every render on the worker thread
    writers: list[threading.Thread] = []
    keep = Scene.keep_render_cache

    def keep_recording(self, entries):
        writers.append(threading.current_thread())
        return keep(self, entries)

    monkeypatch.setattr(Scene, "keep_render_cache", keep_recording)
    requests = []
    snapshot = Scene.snapshot

    def snapshot_recording(self, *args, **kwargs):
        request = snapshot(self, *args, **kwargs)
        requests.append(request)
        return request

    monkeypatch.setattr(Scene, "snapshot", snapshot_recording)
    rng = np.random.default_rng(3)
    modes = [DisplayMode.BAND, DisplayMode.TRUE_COLOUR, DisplayMode.RGB]
    recon = scene.layers_with_role("recon")[0]
    for i in range(60):
        action = i % 5
        if action == 0:
            scene.set_mode(modes[int(rng.integers(3))])
        elif action == 1:
            scene.set_band(int(rng.integers(scene.n_bands)))
        elif action == 2:
            low = float(rng.uniform(0, 10))
            scene.set_percentiles(low, float(rng.uniform(90, 100)))
        elif action == 3 and i % 15 == 3:
            scene.remove_layer(scene.layers_with_role("recon")[0].uid)
            scene.add_layer(recon.cube, "recon", recon.name)
        qtbot.wait(int(rng.integers(0, 3)))  # sometimes let a result in, mostly not
    scene.set_mode(DisplayMode.TRUE_COLOUR)
    qtbot.waitUntil(grid.wait_idle, timeout=60_000)
    qtbot.wait(20)
    qtbot.waitUntil(grid.wait_idle, timeout=60_000)
    assert writers and all(t is threading.main_thread() for t in writers)
    assert requests and all(isinstance(r.render_cache, types.MappingProxyType) for r in requests)
    with pytest.raises(TypeError):
        requests[-1].render_cache[("true", 0, 0, 1)] = None
    fresh = render(scene.snapshot())
    assert {p.layer.uid for p in grid.panels} == set(fresh)
    for panel in grid.panels:
        got, want = panel.rendered, fresh[panel.layer.uid]
        assert got.note == want.note and got.is_rgb == want.is_rgb
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(np.asarray(got.levels), np.asarray(want.levels))


def test_screenshot_waits_for_the_analysis(tmp_path):
    """`view --screenshot`: the window is grabbed once the analysis of the opened layers is on
    screen (a slow analysis used to be grabbed half-way, with its placeholder)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    shot = tmp_path / "shot.png"
    script = (
        "import time\n"
        "import app.qt.main_window as mw\n"
        "import app.qt.analysis as qa\n"
        "from tests.qt.conftest import scene_cubes\n"
        "mw.load_sample = scene_cubes\n"
        "slow = qa.run_analysis\n"
        "def run_analysis(*args, **kwargs):\n"
        "    time.sleep(1.5)\n"
        "    return slow(*args, **kwargs)\n"
        "qa.run_analysis = run_analysis\n"
        "grab = mw.MainWindow.grab\n"
        "def grab_and_say(self, *args):\n"
        "    print('AT GRAB', self.scene.analysis_result is not None, self.scene.analysis_stale,\n"
        "          self.analysis.job.is_running, flush=True)\n"
        "    return grab(self, *args)\n"
        "mw.MainWindow.grab = grab_and_say\n"
        "from app.qt.app import run_viewer\n"
        f"raise SystemExit(run_viewer(screenshot={str(shot)!r}))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "AT GRAB True False False" in done.stdout, done.stdout
    assert shot.exists()


def test_abs_error_map_titles_name_the_band_like_the_band_bar(qtbot, settings, errors):
    """Without wavelengths the |error| maps say 'band 13 / 31' (1-based, as the band bar);
    with them, the wavelength."""
    from app.qt.main_window import MainWindow
    from tests.qt.conftest import scene_cubes

    for with_wl in (False, True):
        scene = Scene()
        for role, cube in scene_cubes():
            if role in ("gt", "recon"):
                scene.add_layer(cube if with_wl else cube.replace(wavelengths_nm=None), role, cube.name)
        win = MainWindow(scene, settings=settings)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        qtbot.waitExposed(win)
        scene.set_band(12)
        scene.set_analysis_settings(error_kind="abs_band")
        assert win.analysis.wait(60)
        qtbot.waitUntil(lambda: win.analysis.settled() and win.scene.analysis_result is not None, timeout=60_000)
        titles = [v.title.full_text() for v in win.analysis.error_views.values()]
        assert titles
        expected = "|err| 520 nm" if with_wl else "|err| band 13 / 31"
        assert all(expected in t for t in titles), titles
        win.close()


def test_line_markers_only_where_they_stay_apart(qapp):
    """A 31-band LR curve keeps its point markers; a 224-band one over the same width draws the
    line alone (224 markers per click merged into a thick line and cost a shape each)."""
    from PyQt6.QtGui import QImage, QPainter, QTransform

    from app.qt.graphics import curve_pen
    from app.qt.spectra import Curve, CurveLayer

    class Counting(QPainter):
        ellipses = 0

        def drawEllipse(self, *args):  # noqa: N802 (Qt's name)
            Counting.ellipses += 1
            return super().drawEllipse(*args)

    counts = {}
    for bands in (31, 224):
        x = np.linspace(400.0, 700.0, bands)
        layer = CurveLayer()
        layer.set_curves([Curve(x, np.sin(x / 50.0), pen=curve_pen("#ff8800", 1.0), symbol="o", symbolSize=4,
                                symbolBrush="#ff8800")])
        target = QImage(400, 200, QImage.Format.Format_ARGB32)
        painter = Counting(target)
        painter.setTransform(QTransform(1.2, 0.0, 0.0, 50.0, -480.0, 100.0))  # 300 nm over 360 px
        Counting.ellipses = 0
        layer.paint(painter)
        painter.end()
        counts[bands] = Counting.ellipses
    assert counts == {31: 31, 224: 0}

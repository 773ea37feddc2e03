"""Viewer responsiveness measured through the real widgets (``python main.py bench --only viewer``).

A main window (offscreen when there is no display) on a CAVE-like scene: GT, LR (x4), RGB guide
and N reconstructions. Measured, each with a plain-numpy baseline from the same run:

- band switch: ``scene.set_band`` until every panel that shows the band has its new image on
  screen (the end of its last paint; the grid renders on a worker thread when the cubes are big:
  the time then runs until those images are painted); baseline: a numpy copy of the bands shown.
- click to spectra: ``scene.set_pixel`` until the spectra plot has its new curves on screen (the
  end of its paint); baseline: numpy indexing of the same spectra. Reported beside it: the click
  until the whole window is painted (the crosshairs of every panel and map, the status bar).
- analysis refresh, off the GUI thread: cold (every method's maps, metrics and curves computed; the
  maps and every metric but SSIM are shown first, then SSIM: both times are reported) and
  warm (band change with the |error|-at-band maps: the whole-image pass comes from the cache), with
  the longest stall of the GUI event loop while the job runs; baseline: one numpy pass (sum of
  squared differences) per method.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _ensure_platform() -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def cave_like(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 31) real CAVE spectra: the bundled 256x256 sample tiled, and its wavelengths."""
    from app.core.inference.sample import load_sample_gt

    gt = load_sample_gt().load()
    reps = (-(-h // gt.height), -(-w // gt.width), 1)
    return np.ascontiguousarray(np.tile(gt.data, reps)[:h, :w]), gt.wavelengths_nm


def make_scene(h: int, w: int, n_recons: int, scale: int = 4):
    """GT, LR (block mean x ``scale``), RGB guide and ``n_recons`` reconstructions (nearest
    upsampling of the LR with different gains): ``3 + n_recons`` cubes."""
    from app.core.cube import Cube
    from app.core.state.scene import Scene

    gt, wl = cave_like(h, w)
    b = gt.shape[2]
    lr = gt.reshape(h // scale, scale, w // scale, scale, b).mean(axis=(1, 3))
    up = np.repeat(np.repeat(lr, scale, 0), scale, 1)
    scene = Scene()
    scene.add_layer(Cube.from_array(gt, wl, name="gt"), "gt")
    scene.add_layer(Cube.from_array(lr, wl, name="lr"), "lr")
    scene.add_layer(Cube.from_array(np.ascontiguousarray(gt[..., [22, 15, 6]]), None, name="rgb"), "guide")
    for k in range(n_recons):
        data = np.clip(up * (1.0 + 0.02 * k) + 0.003 * k, 0.0, 1.0).astype(np.float32)
        scene.add_layer(Cube.from_array(data, wl, name=f"recon{k}"), "recon")
    return scene


def _until(app, done, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the viewer did not finish in time")
        app.processEvents()
        time.sleep(0.0005)


def bench_viewer_scene(h: int, w: int, n_recons: int, repeats: int = 10) -> dict:
    """Figures for one scene (see the module docstring)."""
    _ensure_platform()
    from PyQt6.QtCore import QElapsedTimer, QEventLoop, QSettings, QTimer

    from app.qt import theme
    from app.qt.app import get_app
    from app.qt.main_window import MainWindow

    app = get_app()
    theme.apply(app, "dark")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    scene = make_scene(h, w, n_recons)
    with tempfile.TemporaryDirectory() as folder:
        settings = QSettings(str(Path(folder) / "bench.ini"), QSettings.Format.IniFormat)
        window = MainWindow(scene, settings=settings, unattended=True)
        window.resize(1600, 1000)
        window.show()
        grid, analysis = window.grid, window.analysis
        _until(app, grid.wait_idle)
        analysis.wait(120)  # the first analysis (started when the dock was shown, or pending): let it finish
        app.processEvents()

        # ---- analysis, cold (cache emptied) and warm, with the GUI stall while it runs
        first_shown: list[float] = []  # seconds to the partial result (maps, metrics but SSIM) per timed run

        def timed_analysis(prepare) -> tuple[float, float]:
            """Seconds from refresh() to the results on screen (the event loop waiting idle, as in
            the application: a polling loop would take a core from the worker), then, in a second
            run, the longest gap between two ticks of a 5 ms timer while the job runs (the timer
            itself slows the job a little, so it is not running during the timed run)."""
            seconds = run_once(prepare, None)
            ticks: list[float] = []
            clock = QElapsedTimer()
            clock.start()
            timer = QTimer()
            timer.setInterval(5)
            timer.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e9))
            run_once(prepare, timer)
            gaps = np.diff(ticks) if len(ticks) > 1 else np.array([0.0])
            return seconds, float(gaps.max())

        cpu_used: list[float] = []

        def run_once(prepare, timer) -> float:
            prepare()
            finished: list[float] = []
            loop = QEventLoop()

            partial: list[float] = []

            def on_updated():
                finished.append(time.perf_counter())
                loop.quit()

            def on_partial():
                partial.append(time.perf_counter())

            analysis.updated.connect(on_updated)
            analysis.partial_shown.connect(on_partial)
            QTimer.singleShot(300_000, loop.quit)
            if timer is not None:
                timer.start()
            t0, c0 = time.perf_counter(), time.process_time()
            analysis.refresh()
            loop.exec()
            cpu_used.append(time.process_time() - c0)
            if not finished:
                raise TimeoutError("the analysis did not finish in time")
            if timer is not None:
                timer.stop()
            analysis.updated.disconnect(on_updated)
            analysis.partial_shown.disconnect(on_partial)
            if timer is None:
                first_shown.append((partial[0] if partial else finished[0]) - t0)
            return finished[0] - t0

        cold_s, cold_stall = timed_analysis(lambda: analysis.cache.forget())
        cold_first_s = first_shown[-1]
        cold_cpu_s = cpu_used[0]
        scene.set_analysis_settings(error_kind="abs_band")
        _until(app, lambda: not analysis.job.is_running and not analysis._debounce.isActive())
        warm_s, warm_stall = timed_analysis(lambda: scene.set_band((scene.band + 5) % scene.n_bands))
        scene.set_analysis_settings(error_kind="rmse")
        analysis.wait(120)

        methods = [l.cube.data for l in scene.layers_with_role("recon")]
        gt = scene.layers_with_role("gt")[0].cube.data
        t0 = time.perf_counter()
        for m in methods:
            ((gt - m) ** 2).sum(axis=(0, 1))
        numpy_pass_s = time.perf_counter() - t0

        # ---- band switch (median of ``repeats``), painted
        times, plain = [], []
        following = [p.graphics for p in grid.panels if scene.follows_band_axis(p.layer)]
        for i in range(repeats):
            band = (scene.band + 7) % scene.n_bands
            t0 = time.perf_counter()
            scene.set_band(band)
            _until(app, grid.wait_idle)
            app.processEvents()
            if all(view.painted_at > t0 for view in following):  # every panel showing the band has painted
                times.append(max(view.painted_at for view in following) - t0)
            else:  # (not expected: then paint them now and count that too)
                window.grid.repaint()
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for layer in scene.layers:
                k = scene.band_for(layer)
                np.array(layer.cube.data[:, :, k if k is not None else 0])
            plain.append(time.perf_counter() - t0)
        band_s, band_max_s, band_np = statistics.median(times), max(times), statistics.median(plain)

        # ---- click to spectra (median of 2 * repeats), painted; then the whole window
        rng = np.random.default_rng(0)
        times, whole, plain, cpu = [], [], [], []
        plot = window.spectra.plot
        for y, x in rng.integers(0, min(h, w), size=(2 * repeats, 2)):
            t0, c0 = time.perf_counter(), time.thread_time()
            scene.set_pixel(int(y), int(x))
            app.processEvents()
            t1 = time.perf_counter()
            if plot.painted_at <= t0:
                raise RuntimeError("the spectra plot did not repaint after a click")
            times.append(plot.painted_at - t0)
            whole.append(t1 - t0)
            cpu.append(time.thread_time() - c0)
            t0 = time.perf_counter()
            for layer in scene.layers:
                layer.cube.data[int(y) // layer.scale, int(x) // layer.scale].copy()
            plain.append(time.perf_counter() - t0)
        click_s, click_max_s, click_np = statistics.median(times), max(times), statistics.median(plain)
        click_window_s = statistics.median(whole)
        builder = measure_figure_builder(app, window)
        window.close()
        window.deleteLater()
        app.processEvents()
    return {
        "shape": [h, w, 31], "cubes": len(scene.layers), "reconstructions": n_recons,
        "band_switch_s": band_s, "band_switch_max_s": band_max_s, "band_numpy_s": band_np,
        "band_ratio": band_s / band_np,
        "click_s": click_s, "click_max_s": click_max_s, "click_numpy_s": click_np, "click_ratio": click_s / click_np,
        "click_window_s": click_window_s,
        "analysis_cold_s": cold_s, "analysis_cold_first_s": cold_first_s,
        "analysis_warm_s": warm_s, "analysis_numpy_s": numpy_pass_s,
        "analysis_ratio": cold_s / numpy_pass_s,
        "gui_stall_cold_s": cold_stall, "gui_stall_warm_s": warm_stall,
        # CPU time (less sensitive to other jobs than the wall-clock figures): the GUI thread's
        # per click (median), the whole process's for the cold analysis
        "click_cpu_s": statistics.median(cpu), "analysis_cold_cpu_s": cold_cpu_s,
        "load_average": load_average,
        **builder,
    }


def measure_figure_builder(app, window, timeout_s: float = 120.0) -> dict:
    """The paper-figure builder (Ctrl+E): the longest gap between two ticks of a 5 ms timer (the
    GUI thread's worst stall) from opening it until its preview is on screen, and from a band
    change until the new preview is on screen; with the seconds to each preview."""
    from PyQt6.QtCore import QElapsedTimer, QTimer

    ticks: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e9))

    def settled(dialog) -> bool:
        # older builders rendered inline and have no notion of a pending preview
        pending = getattr(dialog, "preview_pending", None)
        return dialog is not None and not (pending() if callable(pending) else False)

    def timed(action) -> tuple[float, float]:
        ticks.clear()
        timer.start()
        app.processEvents()
        t0 = time.perf_counter()
        ticks.append(clock.nsecsElapsed() / 1e9)
        dialog = action()
        ticks.append(clock.nsecsElapsed() / 1e9)
        _until(app, lambda: settled(dialog), timeout_s)
        seconds = time.perf_counter() - t0
        ticks.append(clock.nsecsElapsed() / 1e9)
        timer.stop()
        return seconds, float(np.diff(ticks).max())

    def open_builder():
        dialog = window.exporter.open_figure_builder()
        dialog.show()
        return dialog

    open_s, open_stall = timed(open_builder)
    dialog = window.exporter.figure_dialog
    scene = window.scene

    def change_band():
        dialog.band.setValue((dialog.band.value() + 5) % max(scene.n_bands, 1) or 1)
        end = time.monotonic() + 5.0  # the builder waits for the typing to stop before it renders
        while dialog._debounce.isActive() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.001)
        return dialog

    change_s, change_stall = timed(change_band)
    dialog.close()
    return {"figure_builder_stall_s": max(open_stall, change_stall), "figure_builder_open_stall_s": open_stall,
            "figure_builder_change_stall_s": change_stall, "figure_builder_open_s": open_s,
            "figure_builder_change_s": change_s}


def bench_viewer(quick: bool = False) -> list[dict]:
    """The 512x512x31 scene with 4 reconstructions (7 cubes) and the 1040x1392x31 scene with 6
    cubes (GT, LR, guide, 3 reconstructions); ``quick``: only the first."""
    rows = [bench_viewer_scene(512, 512, 4)]
    if not quick:
        rows.append(bench_viewer_scene(1040, 1392, 3, repeats=6))
    return rows

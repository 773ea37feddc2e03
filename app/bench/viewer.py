"""Viewer responsiveness measured through the real widgets (``python main.py bench --only viewer``).

A main window (offscreen when there is no display) on a CAVE-like scene: GT, LR (x4), RGB guide
and N reconstructions; and the same on a real-sensor-sized scene, 1000 x 1000 x 224, written as
uint16 BIP ENVI files (reflectance scale factor 10000) in a temp folder and opened through the
project's reader, memory-mapped (:func:`make_big_scene`). Measured, each with a plain-numpy
baseline from the same run:

- band switch: ``scene.set_band`` until every panel that shows the band has its new image on
  screen (the end of its last paint; the grid renders on a worker thread when the cubes are big:
  the time then runs until those images are painted); baseline: numpy reads of the bands shown.
- contrast change: ``scene.set_percentiles`` until those panels have painted.
- click to spectra: ``scene.set_pixel`` until the spectra plot has its new curves on screen (the
  end of its paint); baseline: the spectra read with ``Cube.spectrum``. Reported beside it: the
  click until the whole window is painted (the crosshairs of every panel and map, the status bar).
- analysis refresh, off the GUI thread (in-memory scenes): cold (every method's maps, metrics and
  curves computed; the maps and every metric but SSIM are shown first, then SSIM: both times are
  reported) and warm (band change with the |error|-at-band maps: the whole-image pass comes from
  the cache), with the longest stall of the GUI event loop while the job runs; baseline: one numpy
  pass (sum of squared differences) per method. For the memory-mapped scene: the first analysis
  (streamed by row tiles) and the growth of the process's anonymous memory at its peak.
- the paper-figure builder's worst GUI stall (``figure_builder_stall_s``) on the small scene.

:func:`bench_viewer` returns the rows and the big scene's band switch, contrast change and click
over the small scene's, measured in the same run (the target is 3x at most).
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


BIG_SHAPE = (1000, 1000, 224)
REFLECTANCE_SCALE = 10000.0


def _write_envi_bip(path: Path, shape: tuple[int, int, int], wavelengths_nm: np.ndarray, fill) -> Path:
    """A uint16 band-interleaved-by-pixel ENVI cube with ``reflectance scale factor`` 10000 (as
    AVIRIS-like sensors store reflectance), written ``fill(rows) -> (n, W, B) uint16`` by row
    blocks (never whole in memory). Returns the header's path."""
    h, w, b = shape
    data = np.memmap(path.with_suffix(".img"), dtype="<u2", mode="w+", shape=(h, w, b))
    step = 40
    for r in range(0, h, step):
        rows = slice(r, min(r + step, h))
        data[rows] = fill(rows)
    del data  # the pages are in the page cache; the kernel writes them out on its own
    wl = ", ".join(f"{v:.2f}" for v in wavelengths_nm)
    header = path.with_suffix(".hdr")
    header.write_text(
        "ENVI\n"
        f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\n"
        "file type = ENVI Standard\ndata type = 12\ninterleave = bip\nbyte order = 0\n"
        f"reflectance scale factor = {REFLECTANCE_SCALE:g}\n"
        f"wavelength units = Nanometers\nwavelength = {{{wl}}}\n")
    return header


def _stored(reflectance: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(reflectance * REFLECTANCE_SCALE), 0, 65535).astype("<u2")


def make_big_scene(folder: Path, n_recons: int, shape: tuple[int, int, int] = BIG_SHAPE, scale: int = 4):
    """A real-sensor-sized scene on disk, opened through the project's reader as the viewer opens
    files (``app.qt.main_window.load_cube``: memory-mapped when bigger than the preload limit):
    GT (``shape``; 224 bands over 400-2500 nm by default: the CAVE sample's spectra stretched over
    the bands, tiled), LR (block mean x ``scale``, small enough to be loaded), an RGB guide in
    memory and ``n_recons`` reconstructions (the LR upsampled with different gains), all uint16
    BIP ENVI files in ``folder``."""
    from app.core.cube import Cube
    from app.core.inference.sample import load_sample_gt
    from app.core.state.scene import Scene
    from app.qt.main_window import load_cube

    h, w, b = shape
    sample = load_sample_gt().load().data  # (256, 256, 31) real CAVE spectra
    n, side = sample.shape[2], sample.shape[0]
    if side % scale:
        raise ValueError(f"the sample's {side} px do not tile by x{scale} blocks")
    # the 31 CAVE bands stretched over B band positions (linear interpolation), tiled over (h, w)
    pos = np.linspace(0.0, n - 1.0, b)
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = (pos - lo).astype(np.float32)
    stretch = np.zeros((n, b), np.float32)
    stretch[lo, np.arange(b)] = 1.0 - frac
    stretch[lo + 1, np.arange(b)] += frac
    tile = sample @ stretch                                                   # (256, 256, B)
    tile_lr = tile.reshape(side // scale, scale, side // scale, scale, b).mean(axis=(1, 3))
    wl = np.linspace(400.0, 2500.0, b)

    def tiled(t: np.ndarray, rows: slice, width: int) -> np.ndarray:
        r = np.arange(rows.start, rows.stop) % t.shape[0]
        return t[r[:, None], (np.arange(width) % t.shape[1])[None, :]]

    gt16 = _stored(tile)
    paths = {"gt": _write_envi_bip(folder / "big_gt", shape, wl, lambda rows: tiled(gt16, rows, w))}
    lr16 = _stored(tile_lr)
    paths["lr"] = _write_envi_bip(folder / "big_lr", (h // scale, w // scale, b), wl,
                                  lambda rows: tiled(lr16, rows, w // scale))

    def recon_rows(k: int):
        up16 = _stored(np.clip(tile_lr * (1.0 + 0.02 * k) + 0.003 * k, 0.0, 1.0))
        up16 = np.repeat(np.repeat(up16, scale, 0), scale, 1)                 # nearest upsampling
        return lambda rows: tiled(up16, rows, w)

    for k in range(n_recons):
        paths[f"recon{k}"] = _write_envi_bip(folder / f"big_recon{k}", shape, wl, recon_rows(k))
    rgb = np.ascontiguousarray(tiled(tile, slice(0, h), w)[..., [160, 100, 40]])
    scene = Scene()
    scene.add_layer(load_cube(str(paths["gt"]), {}), "gt", "gt")
    scene.add_layer(load_cube(str(paths["lr"]), {}), "lr", "lr")
    scene.add_layer(Cube.from_array(rgb, None, name="rgb"), "guide")
    for k in range(n_recons):
        scene.add_layer(load_cube(str(paths[f"recon{k}"]), {}), "recon", f"recon{k}")
    return scene


def _until(app, done, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the viewer did not finish in time")
        app.processEvents()
        time.sleep(0.0005)


def _anon_rss_mb() -> float | None:
    """Anonymous resident memory (Linux ``RssAnon``, MiB): what the process allocated, without the
    file pages a memory-mapped cube brings in (they count in RSS but are the kernel's cache)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def bench_viewer_scene(h: int, w: int, n_recons: int, repeats: int = 10, *, big: bool = False,
                       figure_builder: bool = True) -> dict:
    """Figures for one scene (see the module docstring). ``big``: the memory-mapped
    1000 x 1000 x 224 scene of :func:`make_big_scene` (``h``, ``w`` ignored); its analysis is timed
    once, cold, with the growth of the process's anonymous memory while it runs."""
    _ensure_platform()
    from PyQt6.QtCore import QElapsedTimer, QEventLoop, QSettings, QTimer

    from app.qt import theme
    from app.qt.app import get_app
    from app.qt.main_window import MainWindow

    app = get_app()
    theme.apply(app, "dark")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as folder:
        build_t0 = time.perf_counter()
        scene = make_big_scene(Path(folder), n_recons) if big else make_scene(h, w, n_recons)
        build_s = time.perf_counter() - build_t0
        shape = list(scene.layers_with_role("gt")[0].cube.shape)
        h, w = shape[:2]
        settings = QSettings(str(Path(folder) / "bench.ini"), QSettings.Format.IniFormat)
        rss_before = _anon_rss_mb()
        window = MainWindow(scene, settings=settings, unattended=True)
        window.resize(1600, 1000)
        window.show()
        grid, analysis = window.grid, window.analysis
        _until(app, grid.wait_idle)
        first_analysis_t0 = time.perf_counter()
        peak = [rss_before or 0.0]
        sampling = QTimer()
        sampling.setInterval(20)

        def sample_rss():
            value = _anon_rss_mb()
            if value is not None:
                peak[0] = max(peak[0], value)

        sampling.timeout.connect(sample_rss)
        sampling.start()
        analysis.wait(600)  # the first analysis (started when the dock was shown, or pending): let it finish
        app.processEvents()
        sampling.stop()
        sample_rss()
        first_analysis_s = time.perf_counter() - first_analysis_t0
        analysis_rss_mb = (peak[0] - rss_before) if rss_before is not None else None

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

        analysis_row: dict = {}
        if not big:
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
            analysis_row = {
                "analysis_cold_s": cold_s, "analysis_cold_first_s": cold_first_s,
                "analysis_warm_s": warm_s, "analysis_numpy_s": numpy_pass_s,
                "analysis_ratio": cold_s / numpy_pass_s,
                "gui_stall_cold_s": cold_stall, "gui_stall_warm_s": warm_stall,
                "analysis_cold_cpu_s": cold_cpu_s,
            }
        following = [p.graphics for p in grid.panels if scene.follows_band_axis(p.layer)]

        def painted_after(change) -> float:
            """Seconds from ``change()`` until every panel showing the band has painted its new
            picture (the end of its last paint)."""
            t0 = time.perf_counter()
            change()
            _until(app, grid.wait_idle)
            app.processEvents()
            if all(view.painted_at > t0 for view in following):
                return max(view.painted_at for view in following) - t0
            window.grid.repaint()  # (not expected: then paint them now and count that too)
            return time.perf_counter() - t0

        # ---- band switch (median of ``repeats``), painted
        times, plain = [], []
        for i in range(repeats):
            band = (scene.band + 7) % scene.n_bands
            times.append(painted_after(lambda: scene.set_band(band)))
            t0 = time.perf_counter()
            for layer in scene.layers:  # plain numpy: each shown band read whole, as numpy reads it
                k = scene.band_for(layer)
                np.array(layer.cube.band(k if k is not None else 0))
            plain.append(time.perf_counter() - t0)
        band_s, band_max_s, band_np = statistics.median(times), max(times), statistics.median(plain)

        # ---- contrast change (median of ``repeats``), painted
        times = []
        for i in range(repeats):
            low, high = (1.0, 99.0) if i % 2 else (2.0 + 0.5 * (i % 3), 98.0)
            times.append(painted_after(lambda: scene.set_percentiles(low, high)))
        contrast_s, contrast_max_s = statistics.median(times), max(times)
        scene.set_percentiles(1.0, 99.0)
        _until(app, grid.wait_idle)

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
                layer.cube.spectrum(int(y) // layer.scale, int(x) // layer.scale)
            plain.append(time.perf_counter() - t0)
        click_s, click_max_s, click_np = statistics.median(times), max(times), statistics.median(plain)
        click_window_s = statistics.median(whole)
        builder = measure_figure_builder(app, window) if figure_builder else {}
        window.close()
        window.deleteLater()
        app.processEvents()
        n_cubes = len(scene.layers)
        del scene, window, grid, analysis
    row = {
        "shape": shape, "cubes": n_cubes, "reconstructions": n_recons, "memory_mapped": big,
        "band_switch_s": band_s, "band_switch_max_s": band_max_s, "band_numpy_s": band_np,
        "band_ratio": band_s / band_np,
        "contrast_s": contrast_s, "contrast_max_s": contrast_max_s,
        "click_s": click_s, "click_max_s": click_max_s, "click_numpy_s": click_np, "click_ratio": click_s / click_np,
        "click_window_s": click_window_s,
        # CPU time (less sensitive to other jobs than the wall-clock figures): the GUI thread's per click
        "click_cpu_s": statistics.median(cpu),
        "load_average": load_average,
        **analysis_row,
        **builder,
    }
    if big:
        row.update({"build_s": build_s, "analysis_first_s": first_analysis_s,
                    "analysis_rss_growth_mb": analysis_rss_mb})
    return row


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


def bench_viewer(quick: bool = False) -> dict:
    """The 512x512x31 scene with 4 reconstructions (7 cubes), the memory-mapped 1000x1000x224 scene
    with as many cubes (uint16 BIP ENVI files in a temp folder) and, unless ``quick``, the
    1040x1392x31 scene with 6 cubes (GT, LR, guide, 3 reconstructions). Returns ``scenes`` (one row
    per scene), ``big_vs_small`` (the big scene's band switch, contrast change and click over the
    small scene's, same run) and ``figure_builder_stall_s`` (measured on the small scene)."""
    small = bench_viewer_scene(512, 512, 4)
    big = bench_viewer_scene(0, 0, 4, big=True, figure_builder=False)
    rows = [small, big]
    if not quick:
        rows.append(bench_viewer_scene(1040, 1392, 3, repeats=6, figure_builder=False))
    return {
        "scenes": rows,
        "big_vs_small": {"band_switch": big["band_switch_s"] / small["band_switch_s"],
                         "contrast": big["contrast_s"] / small["contrast_s"],
                         "click": big["click_s"] / small["click_s"], "target": 3.0},
        "figure_builder_stall_s": small.get("figure_builder_stall_s"),
    }

"""`python main.py bench`: speed and memory figures, each as a ratio to a baseline measured in the
same run (absolute times on shared machines are noisy; ratios are what the targets are about)."""
from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _drop_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's cached pages (Linux); True when it worked."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def make_big_envi(folder: Path, size_gb: float = 2.0, bands: int = 128) -> Path:
    """Write a float32 BSQ ENVI cube of about ``size_gb`` GB band by band (never all in memory)."""
    side = int(np.sqrt(size_gb * 1e9 / (4 * bands)))
    header = folder / "big_cube.hdr"
    data_file = folder / "big_cube.img"
    mm = np.memmap(data_file, dtype="<f4", mode="w+", shape=(bands, side, side))
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)
    for k in range(bands):
        mm[k] = ramp[None, :] * (0.5 + 0.5 * k / bands)
    mm.flush()
    del mm
    wl = ", ".join(f"{400 + 2000 * k / (bands - 1):.2f}" for k in range(bands))
    header.write_text(
        "ENVI\n"
        f"samples = {side}\nlines = {side}\nbands = {bands}\nheader offset = 0\n"
        "file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n"
        f"wavelength units = Nanometers\nwavelength = {{{wl}}}\n"
    )
    return header


def bench_io(size_gb: float = 2.0, tmp: str | None = None) -> dict:
    """Open a generated ENVI cube memory-mapped; compare with reading the whole file."""
    from app.core.io import open_cube

    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        header = make_big_envi(Path(folder), size_gb)
        data_file = header.with_suffix(".img")
        file_mb = data_file.stat().st_size / 2**20
        cold = _drop_cache(data_file)
        gc.collect()
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        cube = open_cube(header)
        open_s = time.perf_counter() - t0
        rss_open = _rss_mb() - rss0

        t0 = time.perf_counter()
        band = cube.band(cube.bands // 2)
        band_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for y, x in ((10, 10), (cube.height // 2, cube.width // 3), (cube.height - 1, cube.width - 1)):
            spectrum = cube.spectrum(y, x)
        spectrum_s = (time.perf_counter() - t0) / 3
        t0 = time.perf_counter()
        for y, x in ((11, 11), (cube.height // 2 + 1, cube.width // 3), (cube.height - 2, cube.width - 1)):
            cube.spectrum(y, x)  # neighbours of pixels already read: pages now cached
        spectrum_warm_s = (time.perf_counter() - t0) / 3
        rss_access = _rss_mb() - rss0
        assert band.shape == cube.shape[:2] and spectrum.shape == (cube.bands,)
        del cube, band, spectrum
        gc.collect()

        _drop_cache(data_file)
        t0 = time.perf_counter()
        full = np.fromfile(data_file, dtype="<f4")
        full_read_s = time.perf_counter() - t0
        del full
    return {
        "file_mb": file_mb, "cold_cache": cold, "open_s": open_s, "full_read_s": full_read_s,
        "open_vs_full_read": open_s / full_read_s, "rss_after_open_mb": rss_open,
        "rss_after_access_mb": rss_access, "rss_vs_file": rss_access / file_mb,
        "band_s": band_s, "spectrum_s": spectrum_s, "spectrum_warm_s": spectrum_warm_s,
    }


class PeakRss:
    """Peak resident memory (MiB above the start) while the block runs, sampled every 5 ms."""

    def __init__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.start_mb = self.peak_mb = 0.0

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self):
        gc.collect()
        self.start_mb = self.peak_mb = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cave_like_512() -> tuple:
    """A 512x512x31 cube of real CAVE spectra: the bundled 256x256 crop tiled 2x2, and its wavelengths."""
    from app.core.inference.sample import load_sample_gt

    gt = load_sample_gt().load()
    return np.ascontiguousarray(np.tile(gt.data, (2, 2, 1))), gt.wavelengths_nm


def bench_loading(repeats: int = 3) -> dict:
    """Open the bundled CAVE PNG folder with the project's reader vs. a plain PIL decode of its files."""
    from PIL import Image

    from app.core.io import open_cube
    from app.core.inference.sample import SAMPLE_DIR

    files = sorted(SAMPLE_DIR.glob("*.png"))
    plain = _best_of(lambda: [np.array(Image.open(f)) for f in files], repeats)
    ours = _best_of(lambda: open_cube(SAMPLE_DIR).data, repeats)
    return {"open_s": ours, "pil_decode_s": plain, "ratio": ours / plain}


def _bench_scene():
    from app.core.cube import Cube
    from app.core.state.scene import Scene

    data, wl = cave_like_512()
    scene = Scene()
    scene.add_layer(Cube.from_array(data, wl, name="gt"), "gt")
    for k in range(3):
        scene.add_layer(Cube.from_array(np.clip(data + 0.01 * (k + 1), 0, 1), wl, name=f"recon{k}"), "recon")
    return scene, data


def bench_redraw(repeats: int = 5) -> dict:
    """Band change: display images + shared contrast for 4 panels of 512x512x31, vs a numpy copy of 4 bands."""
    from app.core.state.scene import render

    scene, data = _bench_scene()
    state = {"band": 0}

    def redraw():
        state["band"] = (state["band"] + 7) % 31
        scene.set_band(state["band"])
        render(scene.snapshot())

    ours = _best_of(redraw, repeats)
    plain = _best_of(lambda: [np.array(data[:, :, (k * 7) % 31]) for k in range(4)], repeats)
    return {"redraw_s": ours, "numpy_copy_s": plain, "ratio": ours / plain}


def bench_spectra(repeats: int = 20) -> dict:
    """Click a pixel: spectra of 4 layers, vs plain numpy indexing of 4 arrays."""
    scene, data = _bench_scene()
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 512, size=(repeats, 2))
    i = {"k": 0}

    def click():
        y, x = pts[i["k"] % repeats]
        i["k"] += 1
        scene.set_pixel(int(y), int(x))
        scene.spectra_at()

    ours = _best_of(click, repeats)
    plain = _best_of(lambda: [data[100, 200].copy() for _ in range(4)], repeats)
    return {"click_s": ours, "numpy_index_s": plain, "ratio": ours / plain}


BENCH_ITERATIVE_STEPS = 10  # iterative (per-image optimisation) models: time this many steps, report per step


def bench_models(quick: bool = False, device: str = "auto") -> list[dict]:
    """Inference time and peak memory of every registered model on a 512x512x31 CAVE-like cube.

    Iterative models (optimised per image for hundreds of steps) run BENCH_ITERATIVE_STEPS steps;
    their row gives the time per step and the time extrapolated to their default step count."""
    import torch

    from app.core.science import srf as srf_mod
    from app.core.science.degrade import psf_kernel, simulate
    from app.core.inference.engine import run_model, run_to_end, select_device
    from models.registry import all_specs

    data, wl = cave_like_512()
    if quick:
        data = np.ascontiguousarray(data[:256, :256])
    dev = select_device(device)
    rows = []
    for spec in all_specs():
        scale = 4 if spec.supports_scale(4) and spec.task == "single-image" else (8 if spec.supports_scale(8) else spec.scales[0])
        protocol = f"gauss-x{scale}" if scale in (4, 8, 16, 32) else f"bicubic-x{scale}"
        lr, guide, meta = simulate(data, protocol, wavelengths_nm=wl)
        if guide is None:
            guide = simulate(data, f"gauss-x{scale}", wavelengths_nm=wl)[1] if scale in (4, 8, 16, 32) else None
        srf = srf_mod.srf_matrix("nikon_d700", wl)
        kwargs = {"guide": guide if "hr_msi" in spec.inputs or "hr_rgb" in spec.inputs else None,
                  "srf": srf if "srf" in spec.inputs else None,
                  "psf": psf_kernel(f"gauss-x{scale}") if "psf" in spec.inputs else None}
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRss() as mem:
            t0 = time.perf_counter()
            steps = BENCH_ITERATIVE_STEPS if spec.iterative else None
            result = run_to_end(run_model(spec.name, lr, scale=scale, device=str(dev), steps=steps, **kwargs))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        row = {"model": spec.name, "scale": scale, "device": str(dev), "hr_shape": list(result.data.shape),
               "seconds": seconds, "peak_rss_mb": mem.delta_mb}
        if spec.iterative:
            done = int(result.provenance.get("steps") or BENCH_ITERATIVE_STEPS)
            row.update(steps=done, seconds_per_step=seconds / max(1, done),
                       default_steps=spec.default_steps,
                       seconds_at_default_steps=seconds / max(1, done) * (spec.default_steps or done))
        if dev.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    base = next((r["seconds"] for r in rows if r["model"] == "bicubic"), None)
    for r in rows:
        r["vs_bicubic"] = r["seconds"] / base if base else None
    return rows


def _given(value, text) -> str:
    """``text(value)``, or "" when the report has no such value (an optional part of a line)."""
    return "" if value is None else text(value)


def print_viewer(report: dict | list) -> None:
    """Print the figures of the 'viewer' section (measured by app.bench.viewer through the real
    widgets: this layer cannot import Qt, so the CLI hands the measuring function in).
    ``report``: ``{"scenes": [rows], "big_vs_small": {...}, "figure_builder_stall_s": s}`` (a
    bare list of rows is printed too)."""
    rows = report["scenes"] if isinstance(report, dict) else report
    print("[viewer] real widgets (offscreen without a display); medians, painted; baseline: plain numpy; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average before "
          + ", ".join(f"{r['load_average']:.1f}" for r in rows if r.get("load_average") is not None))
    for r in rows:
        h, w, b = r["shape"]
        mapped = ", memory-mapped uint16 BIP ENVI files" if r.get("memory_mapped") else ""
        print(f"  {h}x{w}x{b}, {r['cubes']} cubes ({r['reconstructions']} reconstructions){mapped}:")
        print(f"    band switch, all panels   {r['band_switch_s'] * 1e3:7.1f} ms (max {r['band_switch_max_s'] * 1e3:.1f})"
              f"   numpy read of the bands {r['band_numpy_s'] * 1e3:.2f} ms   ratio {r['band_ratio']:.1f}"
              f"   (target < 30 ms)")
        if "contrast_s" in r:
            print(f"    contrast change           {r['contrast_s'] * 1e3:7.1f} ms (max {r['contrast_max_s'] * 1e3:.1f})")
        print(f"    click -> spectra          {r['click_s'] * 1e3:7.1f} ms (max {r['click_max_s'] * 1e3:.1f})"
              f"   numpy indexing {r['click_numpy_s'] * 1e6:.1f} us   ratio {r['click_ratio']:.0f}   (target < 16 ms)")
        if "click_window_s" in r:
            print(f"    click -> whole window     {r['click_window_s'] * 1e3:7.1f} ms (the crosshairs of every panel "
                  f"and map and the status bar, painted after the spectra)")
        if "analysis_cold_s" in r:
            first_text = _given(r.get("analysis_cold_first_s"),
                                lambda v: f"maps + metrics but SSIM shown {v * 1e3:.1f} ms, ")
            print(f"    analysis off-thread, cold: {first_text}complete {r['analysis_cold_s'] * 1e3:.1f} ms; "
                  f"refresh after a band change {r['analysis_warm_s'] * 1e3:.1f} ms   numpy pass per method "
                  f"{r['analysis_numpy_s'] * 1e3:.1f} ms   ratio {r['analysis_ratio']:.1f}   (target < 0.5 s)")
            print(f"    longest GUI event-loop stall while analysing: {r['gui_stall_cold_s'] * 1e3:.1f} ms cold, "
                  f"{r['gui_stall_warm_s'] * 1e3:.1f} ms refresh")
        if "analysis_first_s" in r:
            grown = _given(r.get("analysis_rss_growth_mb"), lambda v: f", anonymous memory +{v:.0f} MiB at its peak")
            print(f"    analysis (streamed by row tiles, off-thread): {r['analysis_first_s']:.1f} s{grown}; "
                  f"scene written in {r['build_s']:.1f} s")
        if "figure_builder_stall_s" in r:
            print(f"    paper-figure builder: longest GUI stall {r['figure_builder_open_stall_s'] * 1e3:.1f} ms while it "
                  f"opens (preview after {r['figure_builder_open_s']:.2f} s), "
                  f"{r['figure_builder_change_stall_s'] * 1e3:.1f} ms after a band change (preview after "
                  f"{r['figure_builder_change_s']:.2f} s, 0.4 s debounce included)   (target < 250 ms)")
        if "click_cpu_s" in r:
            cold = _given(r.get("analysis_cold_cpu_s"),
                          lambda v: f", cold analysis {v * 1e3:.0f} ms (process, all threads)")
            print(f"    CPU time: click {r['click_cpu_s'] * 1e3:.1f} ms (GUI thread, median){cold}")
    if isinstance(report, dict) and report.get("big_vs_small"):
        q = report["big_vs_small"]
        print(f"  big / small scene, same run: band switch {q['band_switch']:.2f}x, contrast {q['contrast']:.2f}x, "
              f"click -> spectra {q['click']:.2f}x   (target <= {q['target']:.0f}x)")
    if isinstance(report, dict) and report.get("figure_builder_stall_s") is not None:
        print(f"  figure_builder_stall_s {report['figure_builder_stall_s']:.3f}   (target <= 0.25)")


def run_benchmarks(only: list[str] | None = None, envi_gb: float | None = None, tmp: str | None = None,
                   quick: bool = False, json_out: str | None = None, device: str = "auto",
                   viewer=None) -> int:
    """Run the suite and print every figure next to the baseline measured in the same run.

    ``viewer``: a callable ``viewer(quick) -> list[dict]`` measuring the widgets (the CLI passes
    ``app.bench.viewer.bench_viewer``); the 'viewer' section is skipped without it."""
    import json

    import torch

    chosen = only or ["io", "load", "redraw", "spectra", "metrics", "compare", "viewer", "models"]
    report: dict = {"quick": quick, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}
    if "io" in chosen:
        r = report["io"] = bench_io(envi_gb if envi_gb is not None else (0.25 if quick else 2.0), tmp)
        print(f"[io] ENVI float32 BSQ cube of {r['file_mb']:.0f} MiB (page cache dropped: {r['cold_cache']})")
        print(f"  open (memory-mapped)   {r['open_s'] * 1e3:8.1f} ms   full read of the file {r['full_read_s'] * 1e3:8.1f} ms"
              f"   ratio {r['open_vs_full_read']:.4f}")
        print(f"  resident after open    {r['rss_after_open_mb']:8.1f} MiB; after a band + 3 spectra "
              f"{r['rss_after_access_mb']:.1f} MiB = {r['rss_vs_file']:.4f} of the file")
        print(f"  band read {r['band_s'] * 1e3:.1f} ms; spectrum read {r['spectrum_s'] * 1e3:.2f} ms from a cold file "
              f"(one page per band), {r['spectrum_warm_s'] * 1e3:.3f} ms once its pages are cached")
    against_numpy = (  # the sections measured against a plain-numpy baseline: one line each
        ("load", bench_loading,
         lambda r: f"[load] CAVE PNG folder 256x256x31: open_cube {r['open_s'] * 1e3:.1f} ms, plain PIL decode "
                   f"{r['pil_decode_s'] * 1e3:.1f} ms, ratio {r['ratio']:.2f}"),
        ("redraw", bench_redraw,
         lambda r: f"[redraw] band change, 4 panels 512x512x31 with shared contrast: {r['redraw_s'] * 1e3:.1f} ms, "
                   f"numpy copy of 4 bands {r['numpy_copy_s'] * 1e3:.2f} ms, ratio {r['ratio']:.1f}"),
        ("spectra", bench_spectra,
         lambda r: f"[spectra] click -> spectra of 4 layers: {r['click_s'] * 1e6:.0f} us, numpy indexing "
                   f"{r['numpy_index_s'] * 1e6:.1f} us, ratio {r['ratio']:.1f}"))
    for name, bench, line in against_numpy:
        if name in chosen:
            r = report[name] = bench()
            print(line(r))
    if "metrics" in chosen:
        from app.bench.metrics import bench_metrics

        r = report["metrics"] = bench_metrics()
        print("[metrics] whole metric set (scalars + 3 maps + per-band curves), 512x512x31 pair")
        print(f"  compute_all {r['metrics_s'] * 1e3:.1f} ms   plain-numpy single pass {r['numpy_pass_s'] * 1e3:.1f} ms"
              f"   ratio {r['ratio']:.2f}   (target: under 300 ms)")
        many = r["many"]
        print(f"[metrics] the viewer's pass over {many['outputs']} reconstructions on the CPU "
              f"(maps + metrics but SSIM / SSIM / total):")
        for engine in ("torch", "fused"):
            if engine in many:
                e = many[engine]
                print(f"  {engine:5s} {e['rest_s'] * 1e3:6.1f} / {e['ssim_s'] * 1e3:6.1f} / {e['total_s'] * 1e3:6.1f} ms")
        print(f"  fused vs torch: {many['speedup']:.2f}x" if many["speedup"] else "  fused kernels unavailable (no numba)")
    if "compare" in chosen:
        from app.bench.compare import bench_compare

        r = report["compare"] = bench_compare(tmp, n_scenes=4 if quick else 12, device=device)
        h, w, b = r["shape"]
        print(f"[compare] {r['scenes']} scenes {h}x{w}x{b} x {r['methods']} methods, reading included: "
              f"{r['compare_s']:.2f} s   plain-numpy pass {r['numpy_s']:.2f} s   ratio {r['ratio']:.2f}"
              f"   (target: under 30 s for 12 scenes)")
    if "viewer" in chosen:
        if viewer is None:
            print("[viewer] skipped: needs the Qt widgets (run it through `python main.py bench`)")
        else:
            result = report["viewer"] = viewer(quick)
            print_viewer(result)
    if "models" in chosen:
        rows = report["models"] = bench_models(quick, device)
        size = "256x256x31" if quick else "512x512x31"
        print(f"[models] inference on a {size} CAVE-like cube (baseline: bicubic in the same run)")
        for r in rows:
            gpu = f", peak GPU {r['peak_gpu_mb']:.0f} MiB" if "peak_gpu_mb" in r else ""
            ratio = f"{r['vs_bicubic']:.1f}x bicubic" if r["vs_bicubic"] else ""
            print(f"  {r['model']:<10} x{r['scale']:<3} {r['device']:<5} {r['seconds']:8.3f} s  {ratio:>16}  "
                  f"peak RSS +{r['peak_rss_mb']:.0f} MiB{gpu}")
            if "seconds_per_step" in r:
                print(f"  {'':<10} iterative: {r['steps']} steps timed, {r['seconds_per_step']:.2f} s/step, "
                      f"~{r['seconds_at_default_steps']:.0f} s at its default {r['default_steps']} steps")
    if json_out:
        from app.core.inference.batch import write_json
        from app.core.io.provenance import stamp

        write_json(Path(json_out), stamp(report, "bench", arguments={
            "only": chosen, "envi_gb": envi_gb, "quick": quick, "device": device}))
        print(f"wrote {json_out}")
    return 0

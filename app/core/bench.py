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


def run_benchmarks(only: list[str] | None = None, envi_gb: float = 2.0, tmp: str | None = None) -> int:
    chosen = only or ["io", "metrics"]
    if "io" in chosen:
        r = bench_io(envi_gb, tmp)
        print(f"[io] ENVI float32 BSQ cube of {r['file_mb']:.0f} MiB (page cache dropped: {r['cold_cache']})")
        print(f"  open (memory-mapped)   {r['open_s'] * 1e3:8.1f} ms   full read of the file {r['full_read_s'] * 1e3:8.1f} ms"
              f"   ratio {r['open_vs_full_read']:.4f}")
        print(f"  resident after open    {r['rss_after_open_mb']:8.1f} MiB; after a band + 3 spectra "
              f"{r['rss_after_access_mb']:.1f} MiB = {r['rss_vs_file']:.4f} of the file")
        print(f"  band read {r['band_s'] * 1e3:.1f} ms; spectrum read {r['spectrum_s'] * 1e3:.2f} ms from a cold file "
              f"(one page per band), {r['spectrum_warm_s'] * 1e3:.3f} ms once its pages are cached")
    if "metrics" in chosen:
        try:
            from app.core.bench_metrics import bench_metrics
        except ImportError:
            print("[metrics] not available in this build")
        else:
            r = bench_metrics()
            print("[metrics] whole metric set (scalars + 3 maps + per-band curves), 512x512x31 pair")
            print(f"  compute_all {r['metrics_s'] * 1e3:.1f} ms   plain-numpy single pass {r['numpy_pass_s'] * 1e3:.1f} ms"
                  f"   ratio {r['ratio']:.2f}   (target: under 300 ms)")
    return 0

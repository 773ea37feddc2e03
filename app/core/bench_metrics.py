"""Timing of the whole metric set (``metrics.compute_all``) on a 512 x 512 x 31 cube pair.

The baseline is one plain numpy pass over both cubes (squared difference summed per band), so the
ratio says how many "memory passes" the full set costs on this machine. ``python main.py bench``
prints the result.
"""
from __future__ import annotations

import time

import numpy as np

from app.core.metrics import compute_all

BENCH_SHAPE = (512, 512, 31)


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w, b = BENCH_SHAPE
    # Smooth-ish structure plus noise: a random cube would make SSIM's branches look unlike real data.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.4 * np.sin(xx[..., None] / 17.0 + yy[..., None] / 29.0 + np.arange(b, dtype=np.float32) / 7.0)
    gt = np.clip(base + 0.02 * rng.standard_normal(BENCH_SHAPE, dtype=np.float32), 0, 1).astype(np.float32)
    pred = np.clip(gt + 0.01 * rng.standard_normal(BENCH_SHAPE, dtype=np.float32), 0, 1).astype(np.float32)
    return gt, pred


def bench_metrics(repeats: int = 5) -> dict:
    """Best-of-``repeats`` wall time (s) of ``compute_all`` (all scalars, three maps, per-band
    curves, CPU unless CUDA is present) and of one numpy pass over both cubes, and their ratio.

    Returns {'metrics_s': float, 'numpy_pass_s': float, 'ratio': float, 'shape': (512, 512, 31)}.
    """
    gt, pred = _pair()
    compute_all(gt, pred, scale=4)  # warm-up: allocator, thread pool, kernels
    metric_times, numpy_times = [], []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        compute_all(gt, pred, scale=4)
        metric_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ((gt - pred) ** 2).sum(axis=(0, 1))
        numpy_times.append(time.perf_counter() - t0)
    metrics_s, numpy_s = min(metric_times), min(numpy_times)
    return {"metrics_s": metrics_s, "numpy_pass_s": numpy_s, "ratio": metrics_s / numpy_s, "shape": BENCH_SHAPE}


if __name__ == "__main__":  # pragma: no cover
    print(bench_metrics())

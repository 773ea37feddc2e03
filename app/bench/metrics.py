"""Timing of the whole metric set (``metrics.compute_all``) on a 512 x 512 x 31 cube pair.

The baseline is one plain numpy pass over both cubes (squared difference summed per band), so the
ratio says how many "memory passes" the full set costs on this machine. ``python main.py bench``
prints the result.
"""
from __future__ import annotations

import time

import numpy as np

from app.core.science import metrics_cpu
from app.core.science.metrics import compute_all, compute_all_many, ssim_many

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
    out = {"metrics_s": metrics_s, "numpy_pass_s": numpy_s, "ratio": metrics_s / numpy_s, "shape": BENCH_SHAPE}
    out["many"] = bench_many(gt, repeats)
    return out


def bench_many(gt: np.ndarray, repeats: int = 5, n_outputs: int = 4) -> dict:
    """The viewer's pass over ``n_outputs`` reconstructions on the CPU, per engine: best-of-``repeats``
    seconds of ``compute_all_many(ssim=False)`` (maps and all metrics but SSIM) and of ``ssim_many``.

    Returns {engine: {'rest_s', 'ssim_s', 'total_s'}} for 'torch' and, with numba, 'fused', and
    'speedup' (torch total / fused total, or None)."""
    rng = np.random.default_rng(1)
    preds = [np.clip(gt + s * rng.standard_normal(gt.shape, dtype=np.float32), 0, 1)
             for s in np.linspace(0.005, 0.03, n_outputs)]
    out: dict = {"outputs": n_outputs}
    for engine in ["torch", "fused"] if metrics_cpu.available() else ["torch"]:
        compute_all_many(gt, preds, scale=4, device="cpu", ssim=False, engine=engine)  # warm-up (and compile)
        ssim_many(gt, preds, device="cpu", engine=engine)
        rest, ssim = [], []
        for _ in range(max(1, int(repeats))):
            t0 = time.perf_counter()
            compute_all_many(gt, preds, scale=4, device="cpu", ssim=False, engine=engine)
            rest.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ssim_many(gt, preds, device="cpu", engine=engine)
            ssim.append(time.perf_counter() - t0)
        out[engine] = {"rest_s": min(rest), "ssim_s": min(ssim), "total_s": min(rest) + min(ssim)}
    out["speedup"] = out["torch"]["total_s"] / out["fused"]["total_s"] if "fused" in out else None
    return out


if __name__ == "__main__":  # pragma: no cover
    print(bench_metrics())

"""Timing of ``compare`` on a CAVE-sized dataset: 12 scenes of 512 x 512 x 31 and two methods.

The GT scenes are real CAVE spectra: the bundled 256 x 256 sample (fake_and_real_food_ms) tiled
2 x 2 as mirror images (no seams), then rolled and flipped differently per scene, saved as 16-bit
PNG band folders like CAVE. The two "methods" are a bicubic x4 down/up round trip (``.npy``,
float32 H x W x B, ``<scene>_sr.npy``) and a noisy copy (``.mat`` v5 written by the project's own
writer, ``<scene>_pred.mat``), so the run exercises PNG, .npy and .mat reading, name matching with
suffixes and every metric.

The baseline, measured in the same run, is a plain numpy pass over the same files: PIL reads the
PNG bands, numpy/scipy read the predictions, and the per-band MSE of each prediction is computed.
``python main.py bench`` prints the result.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

SCENE_SHAPE = (512, 512, 31)
from app.core.paths import SAMPLE_DIR
METHODS = ("bicubic", "noisy")


def _sample_uint16() -> np.ndarray:
    """(256, 256, 31) uint16 bands of the bundled CAVE sample, as stored."""
    from PIL import Image

    from app.core.io.imagefiles import band_files

    bands = []
    for f in band_files(SAMPLE_DIR):
        with Image.open(f) as im:
            a = np.array(im)
        bands.append(a[..., 0] if a.ndim == 3 else a)
    return np.stack(bands, axis=-1).astype(np.uint16)


def _scene(base: np.ndarray, k: int) -> np.ndarray:
    """A 512 x 512 x 31 uint16 scene: ``base`` mirror-tiled 2 x 2, rolled and flipped per ``k``."""
    top = np.concatenate([base, base[:, ::-1]], axis=1)
    tiled = np.concatenate([top, top[::-1]], axis=0)
    tiled = np.roll(tiled, (37 * k, 53 * k), axis=(0, 1))
    if k % 2:
        tiled = tiled[::-1]
    if (k // 2) % 2:
        tiled = tiled[:, ::-1]
    if (k // 4) % 2:
        tiled = tiled.transpose(1, 0, 2)
    return np.ascontiguousarray(tiled[: SCENE_SHAPE[0], : SCENE_SHAPE[1]])


def make_dataset(root: Path, n_scenes: int = 12, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write the GT folder (CAVE-style PNG scenes) and one prediction folder per method."""
    import torch
    from PIL import Image

    from app.core.cube import Cube
    from app.core.science.degrade import simulate
    from app.core.io import save_cube
    from models.baselines import bicubic_upsample

    root = Path(root)
    gt_dir, pred_dirs = root / "gt", [root / m for m in METHODS]
    for d in (gt_dir, *pred_dirs):
        d.mkdir(parents=True, exist_ok=True)
    base = _sample_uint16()
    rng = np.random.default_rng(seed)
    for k in range(n_scenes):
        name = f"scene_{k + 1:02d}_ms"
        raw = _scene(base, k)
        scene_dir = gt_dir / name
        scene_dir.mkdir(exist_ok=True)
        for b in range(raw.shape[2]):
            Image.fromarray(np.ascontiguousarray(raw[:, :, b])).save(scene_dir / f"{name}_{b + 1:02d}.png")
        gt = raw.astype(np.float32) / np.float32(65535.0)
        lr, _, _ = simulate(gt, "bicubic-x4", device="cpu")
        with torch.no_grad():
            up = bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None], 4)
        np.save(pred_dirs[0] / f"{name}_sr.npy", np.ascontiguousarray(up[0].permute(1, 2, 0).numpy()))
        noisy = np.clip(gt + rng.normal(0.0, 0.01, gt.shape).astype(np.float32), 0.0, 1.0)
        save_cube(Cube.from_array(noisy, name=name), pred_dirs[1] / f"{name}_pred.mat")
    return gt_dir, pred_dirs


def _numpy_pass(gt_dir: Path, pred_dirs: list[Path]) -> float:
    """Seconds to read every file with numpy/PIL/scipy and compute each prediction's per-band MSE."""
    import scipy.io as sio
    from PIL import Image

    t0 = time.perf_counter()
    for scene in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
        pngs = sorted(scene.glob("*.png"))
        gt = np.stack([np.array(Image.open(f)) for f in pngs], axis=-1).astype(np.float32) / np.float32(65535.0)
        npy = np.load(pred_dirs[0] / f"{scene.name}_sr.npy")
        mat = sio.loadmat(str(pred_dirs[1] / f"{scene.name}_pred.mat"))["cube"]
        for pred in (npy, mat):
            ((np.clip(pred, 0, 1) - gt) ** 2).mean(axis=(0, 1))
    return time.perf_counter() - t0


def bench_compare(tmp_dir: str | Path | None = None, n_scenes: int = 12, device: str = "auto") -> dict:
    """Wall time of ``compare`` (reading included) over ``n_scenes`` CAVE-sized scenes x 2 methods and of
    the plain numpy pass over the same files, and their ratio.

    Returns {'compare_s', 'numpy_s', 'ratio', 'scenes', 'methods', 'shape', 'device', 'errors'}."""
    from app.core.evaluation.compare import compare

    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="bench_compare_") as folder:
        gt_dir, pred_dirs = make_dataset(Path(folder), n_scenes)
        numpy_s = _numpy_pass(gt_dir, pred_dirs)  # also brings every file into the page cache
        t0 = time.perf_counter()
        doc = compare(gt_dir, pred_dirs, scale=4, device=device)
        compare_s = time.perf_counter() - t0
    return {"compare_s": compare_s, "numpy_s": numpy_s, "ratio": compare_s / numpy_s, "scenes": n_scenes,
            "methods": len(pred_dirs), "shape": SCENE_SHAPE, "device": doc["device"],
            "errors": len(doc["errors"]) + sum(1 for u in doc["unmatched"] if u["side"] == "gt"),
            "psnr": {m: s["psnr"] for m, s in doc["summary"].items()}}


if __name__ == "__main__":  # pragma: no cover
    print(bench_compare())

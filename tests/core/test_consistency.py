"""Consistency check: re-degrading a reconstruction against its own inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.science import degrade

from app.core.science import srf
from app.core.science import metrics
from app.core.science.consistency import consistency_check
from app.core.errors import ShapeMismatchError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"
CAVE_WL = np.arange(400.0, 701.0, 10.0)


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    files = sorted(SAMPLE_DIR.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return (np.stack([np.asarray(Image.open(f), dtype=np.float64) for f in files], -1) / 65535.0).astype(np.float32)


def test_ground_truth_is_perfectly_consistent(gt):
    lr, guide, _ = degrade.simulate(gt, "gauss-x32", device="cpu")
    r = consistency_check(gt, lr, guide, "gauss-x32", wavelengths_nm=CAVE_WL, device="cpu")
    assert r["lr"]["rmse"] < 1e-6 and r["guide"]["rmse"] < 1e-6
    assert r["lr"]["psnr_db"] == metrics.PSNR_CEILING_DB and r["guide"]["sam_deg"] < 1e-3  # reproduced: the cap
    assert r["maps"]["lr_rmse"].shape == (8, 8) and r["maps"]["guide_rmse"].shape == (256, 256)
    assert r["srf"] == "nikon_d700" and r["scale"] == 32


def test_errors_equal_an_explicit_re_degradation(gt):
    lr, guide, _ = degrade.simulate(gt, "gauss-x8", device="cpu")
    rng = np.random.default_rng(0)
    rec = np.clip(gt + 0.02 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    r = consistency_check(rec, lr, guide, "gauss-x8", wavelengths_nm=CAVE_WL, device="cpu")
    # Independent numpy re-degradation: 8x8 block sums with the kernel, then P per pixel.
    k = degrade.gaussian_block_psf(8)
    blocks = rec.astype(np.float64).reshape(32, 8, 32, 8, 31)
    lr_hat = np.einsum("iyjxb,yx->ijb", blocks, k)
    rmse_lr = np.sqrt(((np.clip(lr_hat, 0, 1) - np.clip(lr, 0, 1)) ** 2).mean())
    assert r["lr"]["rmse"] == pytest.approx(rmse_lr, rel=1e-4)
    p = srf.srf_matrix("nikon_d700", CAVE_WL).astype(np.float64)
    guide_hat = np.einsum("mb,hwb->hwm", p, rec.astype(np.float64))
    assert r["guide"]["rmse"] == pytest.approx(np.sqrt(((guide_hat - guide) ** 2).mean()), rel=1e-4)
    np.testing.assert_allclose(r["redegraded_lr"], lr_hat, atol=2e-6)
    # Noise averages out over the 8x8 blocks more than over the per-pixel SRF.
    assert r["lr"]["rmse"] < r["guide"]["rmse"]


def test_noisy_protocol_leaves_an_error_near_its_noise(gt):
    lr, guide, _ = degrade.simulate(gt, "mulsr-x4", seed=5, device="cpu")
    r = consistency_check(gt, lr, guide, "mulsr-x4", device="cpu")
    assert r["lr"]["rmse"] == pytest.approx(3 / 255, rel=0.1)
    assert any("noise" in n for n in r["notes"]) and any("assumed CAVE" in n for n in r["notes"])
    assert r["guide"]["rmse"] < 1e-6


def test_psf_and_scale_instead_of_a_protocol_and_cropping(gt):
    lr, _, _ = degrade.simulate(gt[:250, :250], "gauss-x8", device="cpu")
    r = consistency_check(torch.from_numpy(gt[:250, :250]).permute(2, 0, 1)[None], lr,
                          psf=degrade.gaussian_block_psf(8), scale=8, device="cpu")
    assert r["lr"]["rmse"] < 1e-6 and r["guide"] is None
    assert r["crop"]["rows"] == (0, 248) and "cropped" in " ".join(r["notes"])


def test_mismatched_inputs_raise(gt):
    lr, guide, _ = degrade.simulate(gt, "gauss-x8", device="cpu")
    with pytest.raises(ShapeMismatchError, match="LR-HSI"):
        consistency_check(gt, lr[:16], None, "gauss-x8", device="cpu")
    with pytest.raises(ShapeMismatchError, match="guide"):
        consistency_check(gt, None, guide[..., :2], "gauss-x8", device="cpu")
    with pytest.raises(ShapeMismatchError, match="nothing to compare"):
        consistency_check(gt, None, None, "gauss-x8")
    with pytest.raises(ShapeMismatchError, match="protocol"):
        consistency_check(gt, lr, None, None)

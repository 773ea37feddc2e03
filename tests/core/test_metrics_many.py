"""metrics.compute_all_many (the viewer's one pass over N reconstructions) against compute_all, on
a real CAVE crop (the bundled sample), with both engines: the torch one (GPUs, and the CPU without
numba) and the fused numba kernels (the CPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.core.science import metrics

from app.core.science import metrics_cpu
from app.core.errors import ShapeMismatchError
from tests.qt.conftest import SCALE, WL, food_array

SCALARS = ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc")
ENGINES = ["torch", "fused"] if metrics_cpu.available() else ["torch"]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """Which engine compute_all_many and ssim_many use on the CPU."""
    monkeypatch.setattr(metrics, "_use_fused", 
                        lambda device, engine="auto": request.param == "fused" and device.type == "cpu")
    return request.param


def outputs(gt: np.ndarray) -> list[np.ndarray]:
    """Three different reconstructions of ``gt``: nearest upsampling of its x4 block mean, a
    noisy copy (values outside [0, 1] too: clipping) and a band-shifted copy."""
    h, w, b = gt.shape
    hs, ws = h - h % SCALE, w - w % SCALE
    lr = gt[:hs, :ws].reshape(hs // SCALE, SCALE, ws // SCALE, SCALE, b).mean(axis=(1, 3))
    nearest = gt.copy()
    nearest[:hs, :ws] = np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1)
    rng = np.random.default_rng(3)
    noisy = (gt + 0.03 * rng.standard_normal(gt.shape)).astype(np.float32)
    shifted = np.ascontiguousarray(np.roll(gt, 1, axis=2))
    return [nearest, noisy, shifted]


def assert_same(a: dict, b: dict, engine: str) -> None:
    """b (compute_all_many) equals a (compute_all) to float32 rounding. The torch engine does
    compute_all's arithmetic, so its maps are equal; the fused kernels round the norms of the
    spectra differently (float64), which moves angles by float32 steps."""
    for key in SCALARS:
        if math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), key
    for key in ("psnr_db", "rmse", "ssim", "cc"):
        np.testing.assert_allclose(b["per_band"][key], a["per_band"][key], rtol=1e-5, atol=1e-9, err_msg=key)
    if engine == "torch":
        np.testing.assert_array_equal(b["maps"]["sam_deg"], a["maps"]["sam_deg"])
    else:
        np.testing.assert_allclose(b["maps"]["sam_deg"], a["maps"]["sam_deg"], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(b["maps"]["sam_valid"], a["maps"]["sam_valid"])
    np.testing.assert_array_equal(b["maps"]["abs_error"], a["maps"]["abs_error"])
    np.testing.assert_allclose(b["maps"]["rmse"], a["maps"]["rmse"], rtol=1e-6, atol=1e-9)
    assert b["notes"] == a["notes"]
    assert b["band_index"] == a["band_index"] and b["n_pixels"] == a["n_pixels"]
    assert "uiqi" not in b and "uiqi" not in b["per_band"]


@pytest.mark.parametrize("rows, cols", [(96, 96), (70, 90)])  # 70 rows: the last tile has no SSIM row
def test_equals_compute_all_for_every_output(rows, cols, engine):
    gt = np.ascontiguousarray(food_array()[:rows, :cols])
    preds = outputs(gt)
    many = metrics.compute_all_many(gt, preds, scale=SCALE, band_index=7, gt_wavelengths_nm=WL,
                                    preds_wavelengths_nm=[WL, None, WL], device="cpu")
    assert len(many) == len(preds)
    for pred, got in zip(preds, many):
        ref = metrics.compute_all(gt, pred, scale=SCALE, band_index=7, gt_wavelengths_nm=WL, device="cpu")
        assert_same(ref, got, engine)
        np.testing.assert_array_equal(got["per_band"]["wavelengths_nm"], WL)


def test_identical_output_and_zero_spectra(engine):
    gt = food_array().copy()
    gt[10:14, 20:30] = 0.0  # black pixels: SAM leaves them out, as compute_all does
    pred = gt.copy()
    pred[50, 50] = 0.0
    same, other = metrics.compute_all_many(gt, [gt.copy(), pred], scale=SCALE, device="cpu")
    assert same["psnr_db"] == metrics.PSNR_CEILING_DB and same["sam_deg"] == 0.0 and same["rmse"] == 0.0
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert not same["maps"]["sam_valid"][10:14, 20:30].any() and same["maps"]["sam_valid"].sum() == 96 * 96 - 40
    assert not other["maps"]["sam_valid"][50, 50]
    assert_same(metrics.compute_all(gt, pred, scale=SCALE, device="cpu"), other, engine)
    assert any("SAM left out 41 pixel" in n for n in other["notes"])


def test_too_small_for_ssim_and_no_scale_give_the_same_notes(engine):
    gt = np.ascontiguousarray(food_array()[:8, :9])
    pred = outputs(gt)[1]
    got = metrics.compute_all_many(gt, [pred], device="cpu")[0]
    assert math.isnan(got["ssim"]) and math.isnan(got["ergas"])
    assert_same(metrics.compute_all(gt, pred, device="cpu"), got, engine)


def test_progress_per_tile_and_an_exception_stops_the_pass(engine):
    gt = food_array()
    seen = []
    metrics.compute_all_many(gt, outputs(gt)[:2], device="cpu", progress=seen.append)
    if engine == "torch":
        assert seen == [0.5, 1.0]  # 96 rows: two row tiles
    else:  # 96 rows in 32-row chunks, then the 86 SSIM rows
        assert len(seen) == 6 and seen[-1] == pytest.approx(1.0) and np.all(np.diff(seen) > 0)

    class Stop(Exception):
        pass

    def stop(fraction):
        raise Stop

    with pytest.raises(Stop):
        metrics.compute_all_many(gt, outputs(gt), device="cpu", progress=stop)
    assert metrics.compute_all_many(gt, [], device="cpu") == []


def test_bad_inputs_name_the_output():
    gt = food_array()
    with pytest.raises(ShapeMismatchError, match="image sizes differ"):
        metrics.compute_all_many(gt, [gt, gt[:90]], device="cpu")
    with pytest.raises(ShapeMismatchError, match="wavelengths differ"):
        metrics.compute_all_many(gt, [gt, gt], gt_wavelengths_nm=WL, preds_wavelengths_nm=[WL, WL + 5.0],
                                 device="cpu")
    with pytest.raises(metrics.MetricsError, match="band index 31 out of range"):
        metrics.compute_all_many(gt, [gt], band_index=31, device="cpu")
    with pytest.raises(ShapeMismatchError, match="output 2"):
        metrics.compute_all_many(gt, [gt, gt[..., 0]], device="cpu")


def test_ssim_many_equals_the_ssim_of_compute_all_many(engine):
    gt = food_array()
    preds = outputs(gt)
    full = metrics.compute_all_many(gt, preds, device="cpu")
    alone = metrics.ssim_many(gt, preds, device="cpu")
    for f, (mean, per_band) in zip(full, alone):
        assert mean == pytest.approx(f["ssim"], rel=1e-6)
        np.testing.assert_allclose(per_band, f["per_band"]["ssim"], rtol=1e-6)
    rest = metrics.compute_all_many(gt, preds, device="cpu", ssim=False)
    assert all(math.isnan(r["ssim"]) for r in rest)
    assert rest[1]["psnr_db"] == pytest.approx(full[1]["psnr_db"], rel=1e-9)


def test_engines_agree_on_torch_views_and_known_answers():
    """Torch (1, B, H, W) inputs (non-contiguous (H, W, B) views), a constant image (SSIM 1) and
    orthogonal spectra (SAM 90 degrees), through whichever engine the CPU uses."""
    import torch

    gt = food_array()
    preds = outputs(gt)
    as_torch = [torch.from_numpy(np.ascontiguousarray(p.transpose(2, 0, 1)))[None] for p in preds]
    a = metrics.compute_all_many(gt, preds, scale=SCALE, device="cpu")
    b = metrics.compute_all_many(torch.from_numpy(np.ascontiguousarray(gt.transpose(2, 0, 1))), as_torch,
                                 scale=SCALE, device="cpu")
    for x, y in zip(a, b):
        for key in SCALARS:
            assert y[key] == pytest.approx(x[key], rel=1e-9, abs=1e-12), key
        np.testing.assert_array_equal(y["maps"]["sam_deg"], x["maps"]["sam_deg"])
    const = np.full((40, 40, 4), 0.25, np.float32)
    got = metrics.compute_all_many(const, [const.copy()], device="cpu")[0]
    assert got["ssim"] == pytest.approx(1.0, abs=1e-6) and got["sam_deg"] == 0.0 and got["psnr_db"] == metrics.PSNR_CEILING_DB
    ortho = np.zeros((16, 16, 4), np.float32)
    ortho[..., 0] = 0.5
    other = np.zeros_like(ortho)
    other[..., 3] = 0.7
    got = metrics.compute_all_many(ortho, [other], device="cpu")[0]
    np.testing.assert_allclose(got["maps"]["sam_deg"], 90.0, rtol=1e-6)
    assert got["sam_deg"] == pytest.approx(90.0, rel=1e-9)


def test_numba_switch(monkeypatch):
    monkeypatch.setenv("HSI_VIEWER_NUMBA", "0")
    assert not metrics_cpu.available()
    assert not metrics._use_fused(metrics._resolve_device("cpu"))
    monkeypatch.setenv("HSI_VIEWER_NUMBA", "1")
    assert metrics_cpu.available() == metrics_cpu.numba_installed()

"""metrics.compute_all_many (the viewer's one pass over N reconstructions) against compute_all, on
a real CAVE crop (the bundled sample)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.core import metrics
from app.core.errors import ShapeMismatchError
from tests.qt.conftest import SCALE, WL, food_array

SCALARS = ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc")


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


def assert_same(a: dict, b: dict) -> None:
    """b (compute_all_many) equals a (compute_all) to float32 rounding."""
    for key in SCALARS:
        if math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), key
    for key in ("psnr_db", "rmse", "ssim", "cc"):
        np.testing.assert_allclose(b["per_band"][key], a["per_band"][key], rtol=1e-5, atol=1e-9, err_msg=key)
    np.testing.assert_array_equal(b["maps"]["sam_deg"], a["maps"]["sam_deg"])
    np.testing.assert_array_equal(b["maps"]["sam_valid"], a["maps"]["sam_valid"])
    np.testing.assert_array_equal(b["maps"]["abs_error"], a["maps"]["abs_error"])
    np.testing.assert_allclose(b["maps"]["rmse"], a["maps"]["rmse"], rtol=1e-6, atol=1e-9)
    assert b["notes"] == a["notes"]
    assert b["band_index"] == a["band_index"] and b["n_pixels"] == a["n_pixels"]
    assert "uiqi" not in b and "uiqi" not in b["per_band"]


@pytest.mark.parametrize("rows, cols", [(96, 96), (70, 90)])  # 70 rows: the last tile has no SSIM row
def test_equals_compute_all_for_every_output(rows, cols):
    gt = np.ascontiguousarray(food_array()[:rows, :cols])
    preds = outputs(gt)
    many = metrics.compute_all_many(gt, preds, scale=SCALE, band_index=7, gt_wavelengths_nm=WL,
                                    preds_wavelengths_nm=[WL, None, WL], device="cpu")
    assert len(many) == len(preds)
    for pred, got in zip(preds, many):
        ref = metrics.compute_all(gt, pred, scale=SCALE, band_index=7, gt_wavelengths_nm=WL, device="cpu")
        assert_same(ref, got)
        np.testing.assert_array_equal(got["per_band"]["wavelengths_nm"], WL)


def test_identical_output_and_zero_spectra():
    gt = food_array().copy()
    gt[10:14, 20:30] = 0.0  # black pixels: SAM leaves them out, as compute_all does
    pred = gt.copy()
    pred[50, 50] = 0.0
    same, other = metrics.compute_all_many(gt, [gt.copy(), pred], scale=SCALE, device="cpu")
    assert same["psnr_db"] == math.inf and same["sam_deg"] == 0.0 and same["rmse"] == 0.0
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert not same["maps"]["sam_valid"][10:14, 20:30].any() and same["maps"]["sam_valid"].sum() == 96 * 96 - 40
    assert not other["maps"]["sam_valid"][50, 50]
    assert_same(metrics.compute_all(gt, pred, scale=SCALE, device="cpu"), other)
    assert any("SAM left out 41 pixel" in n for n in other["notes"])


def test_too_small_for_ssim_and_no_scale_give_the_same_notes():
    gt = np.ascontiguousarray(food_array()[:8, :9])
    pred = outputs(gt)[1]
    got = metrics.compute_all_many(gt, [pred], device="cpu")[0]
    assert math.isnan(got["ssim"]) and math.isnan(got["ergas"])
    assert_same(metrics.compute_all(gt, pred, device="cpu"), got)


def test_progress_per_tile_and_an_exception_stops_the_pass():
    gt = food_array()
    seen = []
    metrics.compute_all_many(gt, outputs(gt)[:2], device="cpu", progress=seen.append)
    assert seen == [0.5, 1.0]  # 96 rows: two row tiles

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

"""Metrics against independent plain-numpy references (float64, textbook formulas, loops)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from app.core.science import metrics
from app.core.errors import HsiError, ShapeMismatchError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"
CAVE_WL = np.arange(400.0, 701.0, 10.0)


@pytest.fixture(scope="module")
def cave_crop() -> np.ndarray:
    files = sorted(SAMPLE_DIR.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    bands = []
    for f in files:
        a = np.asarray(Image.open(f), dtype=np.float64)
        bands.append(a[..., 0] if a.ndim == 3 else a)
    return (np.stack(bands, axis=-1) / 65535.0).astype(np.float32)


@pytest.fixture(scope="module")
def cave_pair(cave_crop):
    """A 96x80 CAVE crop and a plausible reconstruction: blurred a little, noisy, a few values out of [0, 1]."""
    gt = cave_crop[40:136, 100:180].copy()
    rng = np.random.default_rng(7)
    smooth = (gt + np.roll(gt, 1, axis=0) + np.roll(gt, 1, axis=1)) / 3.0
    pred = (smooth + 0.01 * rng.standard_normal(gt.shape)).astype(np.float32)
    pred[0, 0, :5] = 1.2
    pred[5, 7, 3] = -0.1
    return gt, pred


# ---------------------------------------------------------------------------------- references
def ref_psnr_bands(g, p):
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    return np.array([10 * np.log10(1.0 / np.mean((p[..., k] - g[..., k]) ** 2)) for k in range(g.shape[2])])


def ref_ssim_bands(g, p, return_maps=False):
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    r = np.arange(11) - 5.0
    win = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
    win /= win.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for k in range(g.shape[2]):
        x = sliding_window_view(g[..., k], (11, 11))
        y = sliding_window_view(p[..., k], (11, 11))
        mx = np.tensordot(x, win, axes=([2, 3], [0, 1]))
        my = np.tensordot(y, win, axes=([2, 3], [0, 1]))
        vx = np.tensordot(x * x, win, axes=([2, 3], [0, 1])) - mx ** 2
        vy = np.tensordot(y * y, win, axes=([2, 3], [0, 1])) - my ** 2
        cxy = np.tensordot(x * y, win, axes=([2, 3], [0, 1])) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        out.append(s if return_maps else s.mean())
    return np.array(out)


def ref_sam_map(g, p):
    """Angles in degrees and where they count: both spectra non-zero and the GT pixel not dark (its
    mean at least 1 % of the 99th percentile of the GT's pixel means, protocols.md)."""
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    dot = (g * p).sum(-1)
    ng, np_ = np.linalg.norm(g, axis=-1), np.linalg.norm(p, axis=-1)
    means = g.mean(-1)
    valid = (ng > 0) & (np_ > 0) & (means >= 0.01 * np.percentile(means, 99))
    cos = np.where(valid, dot / np.where(valid, ng * np_, 1), 1.0)
    return np.degrees(np.arccos(np.clip(cos, -1, 1))), valid


def ref_ergas(g, p, s):
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    rmse_b = np.sqrt(((p - g) ** 2).mean(axis=(0, 1)))
    return 100.0 / s * np.sqrt(np.mean((rmse_b / g.mean(axis=(0, 1))) ** 2))


def ref_cc(g, p):
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    return np.mean([np.corrcoef(g[..., k].ravel(), p[..., k].ravel())[0, 1] for k in range(g.shape[2])])


def ref_uiqi(g, p, block=32, mask=None):
    g, p = np.clip(g, 0, 1).astype(np.float64), np.clip(p, 0, 1).astype(np.float64)
    h, w, b = g.shape
    mask = np.ones((h, w), bool) if mask is None else mask
    per_band = []
    for k in range(b):
        qs = []
        for y0 in range(0, h, block):
            for x0 in range(0, w, block):
                sel = mask[y0:y0 + block, x0:x0 + block]
                if sel.sum() < 2:
                    continue
                x = g[y0:y0 + block, x0:x0 + block, k][sel]
                y = p[y0:y0 + block, x0:x0 + block, k][sel]
                c = np.cov(x, y)
                qs.append(4 * c[0, 1] * x.mean() * y.mean() / ((c[0, 0] + c[1, 1]) * (x.mean() ** 2 + y.mean() ** 2)))
        per_band.append(np.mean(qs))
    return np.mean(per_band)


# ---------------------------------------------------------------------------------- real data
def test_every_metric_matches_numpy_reference_on_cave(cave_pair):
    gt, pred = cave_pair
    r = metrics.compute_all(gt, pred, scale=4, band_index=12, device="cpu")
    gc, pc = np.clip(gt, 0, 1).astype(np.float64), np.clip(pred, 0, 1).astype(np.float64)
    psnr_b = ref_psnr_bands(gt, pred)
    np.testing.assert_allclose(r["per_band"]["psnr_db"], psnr_b, atol=1e-4)
    assert r["psnr_db"] == pytest.approx(psnr_b.mean(), abs=1e-4)
    ssim_b = ref_ssim_bands(gt, pred)
    np.testing.assert_allclose(r["per_band"]["ssim"], ssim_b, atol=2e-5)
    assert r["ssim"] == pytest.approx(ssim_b.mean(), abs=2e-5)
    sam_map, valid = ref_sam_map(gt, pred)
    assert r["sam_deg"] == pytest.approx(sam_map[valid].mean(), abs=1e-4)
    np.testing.assert_allclose(r["maps"]["sam_deg"], sam_map, atol=2e-3)
    assert r["ergas"] == pytest.approx(ref_ergas(gt, pred, 4), rel=1e-5)
    assert r["rmse"] == pytest.approx(np.sqrt(((pc - gc) ** 2).mean()), rel=1e-5)
    assert r["cc"] == pytest.approx(ref_cc(gt, pred), abs=1e-5)
    assert r["uiqi"] == pytest.approx(ref_uiqi(gt, pred), abs=1e-4)
    np.testing.assert_allclose(r["per_band"]["rmse"], np.sqrt(((pc - gc) ** 2).mean(axis=(0, 1))), rtol=1e-5)
    np.testing.assert_allclose(r["maps"]["rmse"], np.sqrt(((pc - gc) ** 2).mean(-1)), atol=1e-6)
    np.testing.assert_allclose(r["maps"]["abs_error"], np.abs(pc - gc)[..., 12], atol=1e-6)
    assert r["maps"]["rmse"].shape == (96, 80) and r["maps"]["rmse"].dtype == np.float32
    # The out-of-range values were clipped (else pixel (0, 0) would show the 0.2 overshoot).
    assert r["maps"]["abs_error"][0, 0] == pytest.approx(abs(pc[0, 0, 12] - gc[0, 0, 12]), abs=1e-6)


def test_ssim_and_psnr_agree_with_torchmetrics_where_conventions_match(cave_pair):
    tm = pytest.importorskip("torchmetrics.functional.image")
    gt, pred = cave_pair
    g = torch.from_numpy(np.clip(gt, 0, 1)).permute(2, 0, 1)[None].double()
    p = torch.from_numpy(np.clip(pred, 0, 1)).permute(2, 0, 1)[None].double()
    r = metrics.compute_all(gt, pred, device="cpu")
    # torchmetrics 1.9 averages its SSIM map over the whole image, border windows included (reflect
    # padding); the literature (Wang's code, skimage) averages the windows inside the image only.
    tm_full, tm_map = tm.structural_similarity_index_measure(p, g, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                                             data_range=1.0, return_full_image=True)
    assert r["ssim"] == pytest.approx(float(tm_map[..., 5:-5, 5:-5].mean()), abs=2e-5)
    assert abs(r["ssim"] - float(tm_full)) > 1e-3  # the trap is real
    tm_psnr = tm.peak_signal_noise_ratio(p, g, data_range=1.0, dim=(2, 3))
    assert r["psnr_db"] == pytest.approx(float(tm_psnr), abs=1e-4)


def test_whole_image_512_runs_in_tiles_and_matches_the_small_path(cave_crop):
    gt = np.tile(cave_crop, (2, 2, 1))
    pred = np.clip(gt + 0.02 * np.random.default_rng(0).standard_normal(gt.shape).astype(np.float32), 0, 1)
    r = metrics.compute_all(gt, pred, scale=32, device="cpu")
    sub = (slice(100, 300), slice(64, 192))
    crop = metrics.compute_all(gt, pred, scale=32, region=(100, 300, 64, 192), device="cpu")
    direct = metrics.compute_all(gt[sub], pred[sub], scale=32, device="cpu")
    for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc", "uiqi"):
        assert crop[key] == pytest.approx(direct[key], rel=1e-6), key
    assert r["maps"]["sam_deg"].shape == (512, 512)
    gc, pc = np.clip(gt, 0, 1).astype(np.float64), np.clip(pred, 0, 1).astype(np.float64)
    assert r["rmse"] == pytest.approx(np.sqrt(((pc - gc) ** 2).mean()), rel=1e-5)
    np.testing.assert_allclose(r["per_band"]["psnr_db"], ref_psnr_bands(gt, pred), atol=1e-4)
    # SSIM of a few bands against scipy's separable correlation (the sliding-window reference is slow at 512).
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.arange(11) - 5.0
    g1 = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g1 /= g1.sum()

    def filt(a):
        return ndimage.correlate1d(ndimage.correlate1d(a, g1, axis=0), g1, axis=1)[5:-5, 5:-5]

    for k in (0, 15, 30):
        a, b = gc[..., k], pc[..., k]
        ma, mb = filt(a), filt(b)
        va, vb, cab = filt(a * a) - ma ** 2, filt(b * b) - mb ** 2, filt(a * b) - ma * mb
        s = ((2 * ma * mb + 1e-4) * (2 * cab + 9e-4)) / ((ma ** 2 + mb ** 2 + 1e-4) * (va + vb + 9e-4))
        assert r["per_band"]["ssim"][k] == pytest.approx(s.mean(), abs=2e-5)


# ---------------------------------------------------------------------------------- known answers
def test_one_band_reproduced_exactly_gives_a_finite_mean_psnr(cave_crop):
    """An all-zero band in GT and prediction (real products zero their bad bands) must not make the
    mean PSNR infinite: the band counts as 100 dB, the other bands as computed (numpy reference)."""
    gt = cave_crop[:48, :48].astype(np.float64).copy()
    pred = np.clip(gt + np.random.default_rng(0).normal(0, 0.02, gt.shape), 0, 1)
    gt[..., 5] = 0.0
    pred[..., 5] = 0.0
    r = metrics.compute_all(gt.astype(np.float32), pred.astype(np.float32), scale=4, device="cpu")
    g32, p32 = gt.astype(np.float32).astype(np.float64), pred.astype(np.float32).astype(np.float64)
    mse = ((np.clip(p32, 0, 1) - np.clip(g32, 0, 1)) ** 2).mean(axis=(0, 1))
    ref = np.where(mse > 0, 10 * np.log10(1 / np.where(mse > 0, mse, 1)), 100.0)
    assert np.isfinite(r["psnr_db"]) and r["psnr_db"] == pytest.approx(ref.mean(), abs=1e-6)
    assert r["per_band"]["psnr_db"][5] == 100.0
    assert any("capped at 100 dB in 1 band(s)" in n for n in r["notes"])


def test_identical_cubes(cave_crop):
    gt = cave_crop[:64, :64]
    r = metrics.compute_all(gt, gt.copy(), scale=4, device="cpu")
    # a band reproduced exactly is capped at the documented ceiling, never inf (protocols.md)
    assert r["psnr_db"] == metrics.PSNR_CEILING_DB == 100.0 and (r["per_band"]["psnr_db"] == 100.0).all()
    assert any("PSNR capped at 100 dB in 31 band(s)" in n for n in r["notes"])
    assert r["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert r["sam_deg"] == 0.0 and (r["maps"]["sam_deg"] == 0).all()
    assert r["ergas"] == 0.0 and r["rmse"] == 0.0
    assert r["cc"] == pytest.approx(1.0, abs=1e-6)
    assert r["uiqi"] == pytest.approx(1.0, abs=1e-6)


def test_constant_offset_gives_closed_form_values():
    rng = np.random.default_rng(1)
    gt = (0.2 + 0.5 * rng.random((48, 40, 8))).astype(np.float32)
    c = 0.05
    pred = gt + np.float32(c)  # stays inside [0, 1]
    r = metrics.compute_all(gt, pred, scale=8, device="cpu")
    assert r["rmse"] == pytest.approx(c, rel=1e-5)
    np.testing.assert_allclose(r["per_band"]["psnr_db"], -20 * np.log10(c), atol=1e-3)
    means = gt.astype(np.float64).mean(axis=(0, 1))
    assert r["ergas"] == pytest.approx(100 / 8 * np.sqrt(np.mean((c / means) ** 2)), rel=1e-4)
    assert r["cc"] == pytest.approx(1.0, abs=1e-5)  # correlation ignores an offset
    sam_map, _ = ref_sam_map(gt, pred)
    assert r["sam_deg"] == pytest.approx(sam_map.mean(), abs=1e-4)


@pytest.mark.parametrize("angle_deg", [0.5, 10.0, 30.0])
def test_rotated_spectrum_has_the_known_angle(angle_deg):
    b = 31
    base = np.full(b, 0.5)
    wobble = np.cos(2 * np.pi * np.arange(b) / b)  # orthogonal to the flat spectrum (sums to 0)
    eps = np.tan(np.radians(angle_deg)) * np.linalg.norm(base) / np.linalg.norm(wobble)
    rotated = base + eps * wobble
    assert rotated.min() >= 0 and rotated.max() <= 1
    brightness = np.linspace(0.3, 1.0, 20 * 12).reshape(20, 12, 1)  # scaling leaves the angle alone
    gt = (brightness * base).astype(np.float32)
    pred = (brightness * rotated).astype(np.float32)
    r = metrics.compute_all(gt, pred, device="cpu")
    assert r["sam_deg"] == pytest.approx(angle_deg, abs=1e-3)
    np.testing.assert_allclose(r["maps"]["sam_deg"], angle_deg, atol=1e-3)
    sam, valid = metrics.sam_map_deg(gt, pred)
    np.testing.assert_allclose(sam, angle_deg, atol=1e-3)
    assert valid.all()


def test_dark_gt_pixels_are_left_out_of_sam(cave_crop):
    """A near-black border (CAVE's dark edges): its angles are noise; SAM, its map and the valid mask
    leave those pixels out and the notes count them."""
    gt = cave_crop[:48, :48].copy()
    rng = np.random.default_rng(5)
    gt[:, :4] = rng.uniform(0, 1e-4, gt[:, :4].shape).astype(np.float32)   # a dark border, not zero
    pred = np.clip(gt + rng.normal(0, 0.01, gt.shape).astype(np.float32), 0, 1)
    r = metrics.compute_all(gt, pred, device="cpu")
    sam_map, valid = ref_sam_map(gt, pred)
    assert not valid[:, :4].any() and valid[:, 4:].mean() > 0.9
    assert r["sam_deg"] == pytest.approx(sam_map[valid].mean(), abs=1e-4)
    assert not r["maps"]["sam_valid"][:, :4].any() and (r["maps"]["sam_deg"][:, :4] == 0).all()
    g64, p64 = gt[:, :4].astype(np.float64), pred[:, :4].astype(np.float64)
    border_deg = np.degrees(np.arccos(np.clip((g64 * p64).sum(-1) / (np.linalg.norm(g64, axis=-1)
                                                                    * np.linalg.norm(p64, axis=-1)), -1, 1)))
    assert border_deg.mean() > 20 > r["sam_deg"]  # the border alone would have dominated the scale
    assert any("dark pixel" in n for n in r["notes"])
    many = metrics.compute_all_many(gt, [pred], device="cpu")[0]
    assert many["sam_deg"] == pytest.approx(r["sam_deg"], rel=1e-6)
    np.testing.assert_array_equal(many["maps"]["sam_valid"], r["maps"]["sam_valid"])


def test_zero_spectra_are_masked_never_nan(cave_crop):
    gt = cave_crop[:40, :40].copy()
    pred = np.clip(gt * 1.1, 0, 1)
    gt[:5, :5] = 0.0
    pred[10, 10] = 0.0
    r = metrics.compute_all(gt, pred, device="cpu")
    sam_map, valid = ref_sam_map(gt, pred)
    assert not np.isnan(r["sam_deg"])
    assert r["sam_deg"] == pytest.approx(sam_map[valid].mean(), abs=1e-4)
    assert not r["maps"]["sam_valid"][:5, :5].any() and not r["maps"]["sam_valid"][10, 10]
    assert (r["maps"]["sam_deg"][:5, :5] == 0).all() and np.isfinite(r["maps"]["sam_deg"]).all()
    assert any("zero spectrum" in n for n in r["notes"])
    all_zero = metrics.compute_all(np.zeros((12, 12, 3), np.float32), np.zeros((12, 12, 3), np.float32), device="cpu")
    assert all_zero["sam_deg"] == 0.0 and not np.isnan(all_zero["uiqi"])


def test_mask_restricts_pixel_statistics(cave_pair):
    gt, pred = cave_pair
    mask = np.zeros(gt.shape[:2], bool)
    mask[10:60, 20:70] = True
    mask[70:80, :] = True
    r = metrics.compute_all(gt, pred, scale=4, mask=mask, device="cpu")
    gc, pc = np.clip(gt, 0, 1).astype(np.float64)[mask], np.clip(pred, 0, 1).astype(np.float64)[mask]
    mse_b = ((pc - gc) ** 2).mean(axis=0)
    assert r["psnr_db"] == pytest.approx(np.mean(10 * np.log10(1 / mse_b)), abs=1e-4)
    assert r["rmse"] == pytest.approx(np.sqrt(mse_b.mean()), rel=1e-5)
    sam_map, valid = ref_sam_map(gt, pred)
    assert r["sam_deg"] == pytest.approx(sam_map[mask & valid].mean(), abs=1e-4)
    assert r["ergas"] == pytest.approx(100 / 4 * np.sqrt(np.mean((np.sqrt(mse_b) / gc.mean(axis=0)) ** 2)), rel=1e-5)
    assert r["n_pixels"] == int(mask.sum()) and r["masked"]
    # SSIM: the windows centred on mask pixels; UIQI: each block's statistics over its mask pixels.
    ssim_maps = ref_ssim_bands(gt, pred, return_maps=True)
    centres = mask[5:-5, 5:-5]
    assert r["ssim"] == pytest.approx(np.mean([m[centres].mean() for m in ssim_maps]), abs=2e-5)
    assert r["uiqi"] == pytest.approx(ref_uiqi(gt, pred, mask=mask), abs=1e-4)
    whole = metrics.compute_all(gt, pred, scale=4, device="cpu")
    every = metrics.compute_all(gt, pred, scale=4, mask=np.ones_like(mask), device="cpu")
    for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc", "uiqi"):
        assert every[key] == pytest.approx(whole[key], rel=1e-6), key


def test_torch_and_cube_like_inputs(cave_pair):
    gt, pred = cave_pair
    a = metrics.compute_all(gt, pred, scale=4, device="cpu")
    b = metrics.compute_all(torch.from_numpy(gt).permute(2, 0, 1)[None], torch.from_numpy(pred).permute(2, 0, 1)[None],
                            scale=4, device="cpu")
    for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc", "uiqi"):
        assert a[key] == pytest.approx(b[key], rel=1e-6), key

    class FakeCube:
        def __init__(self, data, wl):
            self.data, self.wavelengths_nm = data, wl

    c = metrics.compute_all(FakeCube(gt, CAVE_WL), FakeCube(pred, CAVE_WL), scale=4, device="cpu")
    assert c["psnr_db"] == pytest.approx(a["psnr_db"], rel=1e-9)
    np.testing.assert_array_equal(c["per_band"]["wavelengths_nm"], CAVE_WL)


def test_single_metric_helpers_and_basic_metrics(cave_pair):
    gt, pred = cave_pair
    all_ = metrics.compute_all(gt, pred, scale=4, device="cpu")
    assert metrics.mpsnr(gt, pred) == pytest.approx(all_["psnr_db"])
    assert metrics.ergas(gt, pred, 4) == pytest.approx(all_["ergas"])
    np.testing.assert_allclose(metrics.rmse_map(gt, pred), all_["maps"]["rmse"], atol=1e-6)
    np.testing.assert_allclose(metrics.abs_error_map(gt, pred, 3),
                               np.abs(np.clip(pred, 0, 1) - np.clip(gt, 0, 1))[..., 3], atol=1e-7)
    basic = metrics.basic_metrics(gt, pred)
    assert basic["psnr_db"] == pytest.approx(all_["psnr_db"], abs=1e-4)
    assert basic["rmse"] == pytest.approx(all_["rmse"], rel=1e-5)
    assert basic["sam_deg"] == pytest.approx(all_["sam_deg"], abs=1e-4)


# ---------------------------------------------------------------------------------- mismatches
def test_mismatched_shapes_bands_and_wavelengths_raise():
    a = np.zeros((16, 16, 31), np.float32)
    with pytest.raises(ShapeMismatchError, match="band counts differ.*31.*30"):
        metrics.compute_all(a, np.zeros((16, 16, 30), np.float32))
    with pytest.raises(ShapeMismatchError, match="image sizes differ.*16x16.*8x8"):
        metrics.compute_all(a, np.zeros((8, 8, 31), np.float32))
    with pytest.raises(ShapeMismatchError, match="wavelengths differ"):
        metrics.compute_all(a, a, gt_wavelengths_nm=CAVE_WL, pred_wavelengths_nm=CAVE_WL + 10)
    with pytest.raises(ShapeMismatchError, match="31 bands but 30 wavelengths"):
        metrics.compute_all(a, a, gt_wavelengths_nm=CAVE_WL[:30])
    with pytest.raises(ShapeMismatchError, match="shape"):
        metrics.compute_all(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32))
    with pytest.raises(ShapeMismatchError, match="mask"):
        metrics.compute_all(a, a, mask=np.ones((8, 8), bool))
    with pytest.raises(HsiError, match="outside"):
        metrics.compute_all(a, a, region=(0, 20, 0, 4))
    with pytest.raises(ShapeMismatchError):
        metrics.sam_map_deg(a, np.zeros((16, 16, 30), np.float32))


# ---------------------------------------------------------------------------------- no reference
def test_qnr_is_perfect_for_a_consistent_flat_world_and_drops_for_distortion(cave_crop):
    from app.core.science import degrade
    gt = cave_crop[:128, :128]
    lr, msi, _ = degrade.simulate(gt, "gauss-x4", device="cpu")
    # The GT itself against its own inputs: small distortions.
    good = metrics.qnr(gt, lr, msi, protocol="gauss-x4")
    assert 0.0 <= good["d_lambda"] < 0.05 and 0.0 <= good["d_s"] < 0.1
    assert good["qnr"] == pytest.approx((1 - good["d_lambda"]) * (1 - good["d_s"]))
    # An upsampled LR (no spatial detail) distorts the spatial relations more than the GT does.
    blocky = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
    bad = metrics.qnr(blocky, lr, msi, protocol="gauss-x4")
    assert bad["d_s"] > good["d_s"]
    assert bad["qnr"] < good["qnr"]


def test_qnr_distortions_match_a_numpy_reference(cave_crop):
    rng = np.random.default_rng(3)
    fused = cave_crop[:64, :64, ::6].astype(np.float64)  # 6 bands
    lr = fused.reshape(16, 4, 16, 4, 6).mean(axis=(1, 3)) + 0.01 * rng.standard_normal((16, 16, 6))
    msi = fused[..., :2] + 0.02 * rng.standard_normal((64, 64, 2))
    msi_lr = msi.reshape(16, 4, 16, 4, 2).mean(axis=(1, 3))

    def q(x, y):
        c = np.cov(x.ravel(), y.ravel())
        return 4 * c[0, 1] * x.mean() * y.mean() / ((c[0, 0] + c[1, 1]) * (x.mean() ** 2 + y.mean() ** 2))

    def q_blocks(x, y, k):
        return np.mean([q(x[i:i + k, j:j + k], y[i:i + k, j:j + k])
                        for i in range(0, x.shape[0], k) for j in range(0, x.shape[1], k)])

    dl = np.mean([abs(q_blocks(fused[..., a], fused[..., b], 32) - q_blocks(lr[..., a], lr[..., b], 8))
                  for a in range(6) for b in range(6) if a != b])
    ds = np.mean([abs(q_blocks(fused[..., a], msi[..., m], 32) - q_blocks(lr[..., a], msi_lr[..., m], 8))
                  for a in range(6) for m in range(2)])
    r = metrics.qnr(fused.astype(np.float32), lr.astype(np.float32), msi.astype(np.float32),
                    msi_lr=msi_lr.astype(np.float32))
    assert r["block_hr_px"] == 32 and r["block_lr_px"] == 8 and r["scale"] == 4
    assert r["d_lambda"] == pytest.approx(dl, abs=1e-5)
    assert r["d_s"] == pytest.approx(ds, abs=1e-5)
    assert r["qnr"] == pytest.approx((1 - dl) * (1 - ds), abs=1e-5)


def test_qnr_shape_errors(cave_crop):
    fused = cave_crop[:64, :64]
    with pytest.raises(ShapeMismatchError, match="band counts"):
        metrics.qnr(fused, np.zeros((16, 16, 30), np.float32), fused[..., :3])
    with pytest.raises(ShapeMismatchError, match="multiple"):
        metrics.qnr(fused, np.zeros((15, 16, 31), np.float32), fused[..., :3])
    with pytest.raises(ShapeMismatchError, match="MSI"):
        metrics.qnr(fused, np.zeros((16, 16, 31), np.float32), fused[:32, :32, :3])

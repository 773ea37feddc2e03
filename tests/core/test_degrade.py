"""Degradation operators and named protocols: numbers checked by hand or by an explicit sum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from app.core.science import degrade

from app.core.science import srf
from app.core.errors import HsiError
from models import degradation

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"


@pytest.fixture(scope="module")
def cave_crop() -> np.ndarray:
    """(256, 256, 31) float32 reflectance of the bundled CAVE crop (16-bit PNG / 65535)."""
    files = sorted(SAMPLE_DIR.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    bands = [np.asarray(Image.open(f), dtype=np.float64)[..., 0] if np.asarray(Image.open(f)).ndim == 3
             else np.asarray(Image.open(f), dtype=np.float64) for f in files]
    assert len(bands) == 31
    return (np.stack(bands, axis=-1) / 65535.0).astype(np.float32)


@pytest.fixture(scope="module")
def cave_512(cave_crop) -> np.ndarray:
    return np.tile(cave_crop, (2, 2, 1))


def _nbhw(hwb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwb)).permute(2, 0, 1).unsqueeze(0)


# ---------------------------------------------------------------------------------- names
def test_parse_protocol_names_and_errors():
    assert degrade.parse_protocol("gauss-x32") == degrade.Protocol("gauss", 32)
    assert degrade.parse_protocol("MulSR_x8").name == "mulsr-x8"
    assert degrade.parse_protocol("bicubic4").scale == 4
    assert len(degrade.available_protocols()) == 11
    with pytest.raises(degrade.ProtocolError, match="bicubic takes x2, x3, x4, x8"):
        degrade.parse_protocol("bicubic-x5")
    assert degrade.parse_protocol("bicubic-x5", strict=False).scale == 5
    with pytest.raises(HsiError, match="unknown protocol"):
        degrade.parse_protocol("lanczos-x4")


# ---------------------------------------------------------------------------------- bicubic
def test_bicubic_weights_derived_from_keys_kernel():
    # Keys a=-0.5 at d/2 for d = 0.5, 1.5, 2.5, 3.5: 0.8671875, 0.2265625, -0.0703125, -0.0234375;
    # antialiasing divides by s=2. Output 0 sits at input 0.5, so taps start at index -3.
    w, offset = degrade.bicubic_weights(2)
    half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2.0
    np.testing.assert_allclose(w, np.concatenate([half, half[::-1]]), atol=1e-15)
    assert offset == -3
    w3, off3 = degrade.bicubic_weights(3)
    assert w3.size == 11 and off3 == -4 and abs(w3.sum() - 1) < 1e-15
    assert degrade.bicubic_weights(4)[0].size == 16


def test_bicubic_matches_hand_computed_matlab_imresize_values():
    # imresize([0 0 0 0 1 0 0 0], 0.5): the impulse (index 4) seen by outputs centred at 0.5, 2.5,
    # 4.5, 6.5 -> distances -3.5, -1.5, 0.5, 2.5 -> weights cubic(d/2)/2.
    impulse = np.zeros((8, 8))
    impulse[:, 4] = 1.0  # constant along H, so every output row is the 1-D result
    out = degrade.bicubic_downsample(torch.tensor(impulse)[None, None], 2)[0, 0].numpy()
    np.testing.assert_allclose(out, np.tile([-0.01171875, 0.11328125, 0.43359375, -0.03515625], (4, 1)), atol=1e-15)
    # imresize(1:8, 0.5): the first output reads inputs -3..4, mirrored to values 3 2 1 1 2 3 4 5:
    # 3w0 + 2w1 + w2 + w3 + 2w4 + 3w5 + 4w6 + 5w7 = 1.44921875; by symmetry the last is 9 - that.
    ramp = np.tile(np.arange(1.0, 9.0), (8, 1))
    out = degrade.bicubic_downsample(torch.tensor(ramp)[None, None], 2)[0, 0].numpy()
    np.testing.assert_allclose(out[0], [1.44921875, 3.48828125, 5.51171875, 7.55078125], atol=1e-14)
    np.testing.assert_allclose(out, np.tile(out[0], (4, 1)), atol=1e-14)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_keeps_constants_and_matches_an_antialiased_resampler_inside(scale):
    const = torch.full((1, 3, 48, 40), 0.3, dtype=torch.float64)
    out = degrade.spatial_degrade(const, f"bicubic-x{scale}")
    assert out.shape == (1, 3, -(-48 // scale), -(-40 // scale))  # MATLAB rounds the size up
    np.testing.assert_allclose(out.numpy(), 0.3, atol=1e-14)
    # torch's antialiased bicubic uses the same kernel but renormalises at the border instead of
    # mirroring, so the two agree away from the border.
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 48 * scale // 2, 40 * scale // 2, dtype=torch.float64, generator=gen)
    ours = degrade.bicubic_downsample(x, scale)
    ref = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours[..., 2:-2, 2:-2].numpy(), ref[..., 2:-2, 2:-2].numpy(), atol=1e-12)
    assert (ours - ref).abs().max() > 1e-6  # the mirrored border really differs


def test_bicubic_chunked_path_for_long_axes_equals_dense(monkeypatch):
    x = torch.rand(1, 2, 40, 90, dtype=torch.float64)
    dense = degrade.bicubic_downsample(x, 3)
    monkeypatch.setattr(degradation, "_DENSE_RESIZE_MAX_PX", 16)
    monkeypatch.setattr(degradation, "_RESIZE_CHUNK_OUT", 7)
    np.testing.assert_allclose(degrade.bicubic_downsample(x, 3).numpy(), dense.numpy(), atol=1e-14)


# ---------------------------------------------------------------------------------- gauss
def test_gauss_x32_on_cave_reproduces_the_cmhf_kernel(cave_512):
    kernel = degrade.gaussian_block_psf(32)
    assert kernel.shape == (32, 32)
    assert abs(kernel.sum() - 1.0) < 1e-12
    # sigma 10 px about the block centre (15.5, 15.5): the ratio of two entries is a Gaussian factor.
    assert kernel[15, 15] == pytest.approx(kernel.max())
    assert kernel[0, 15] / kernel[15, 15] == pytest.approx(np.exp(-(15.5 ** 2 - 0.5 ** 2) / 200.0), rel=1e-12)
    assert kernel[0, 0] / kernel[15, 15] == pytest.approx(np.exp(-2 * (15.5 ** 2 - 0.5 ** 2) / 200.0), rel=1e-12)
    np.testing.assert_allclose(kernel, kernel.T)

    lr, guide, meta = degrade.simulate(cave_512, "gauss-x32", seed=0, device="cpu")
    assert lr.shape == (16, 16, 31) and lr.dtype == np.float32
    assert guide.shape == (512, 512, 3)
    assert meta["scale"] == 32 and meta["psf_sigma_px"] == 10.0 and meta["srf"] == "nikon_d700"
    assert meta["crop"]["cropped"] is False and meta["noise_sigma"] == 0.0
    gt64 = cave_512.astype(np.float64)
    for ly, lx, b in [(0, 0, 0), (7, 11, 15), (15, 15, 30), (3, 12, 22)]:
        block = gt64[ly * 32:(ly + 1) * 32, lx * 32:(lx + 1) * 32, b]
        assert lr[ly, lx, b] == pytest.approx(float((kernel * block).sum()), abs=2e-6)


@pytest.mark.parametrize("scale", [4, 8, 16])
def test_gauss_sigma_follows_scale(scale):
    k = degrade.gaussian_block_psf(scale)
    r = np.arange(scale) - (scale - 1) / 2
    expected = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (scale * 10 / 32) ** 2))
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-12)
    assert degrade.parse_protocol(f"gauss-x{scale}").psf_sigma_px == scale * 10 / 32


def test_generic_kernel_path_reproduces_gauss_and_bicubic(cave_crop):
    x = _nbhw(cave_crop[:64, :64])
    for name in ["gauss-x8", "bicubic-x4"]:
        proto = degrade.parse_protocol(name)
        ref = degrade.spatial_degrade(x, name)
        via_psf = degrade.spatial_degrade(x, degrade.psf_kernel(name), proto.scale)
        np.testing.assert_allclose(via_psf.numpy(), ref.numpy(), atol=2e-6)


def test_crop_to_multiple_is_reported(cave_crop):
    lr, guide, meta = degrade.simulate(cave_crop[:250, :100], "gauss-x32", device="cpu")
    assert lr.shape == (7, 3, 31) and guide.shape == (224, 96, 3)
    assert meta["crop"]["cropped"] and meta["crop"]["rows"] == (0, 224) and meta["crop"]["cols"] == (0, 96)
    assert any("cropped 250x100 to 224x96" in n for n in meta["notes"])
    with pytest.raises(degrade.ProtocolError, match="multiples of 32"):
        degrade.spatial_degrade(_nbhw(cave_crop[:40, :40]), "gauss-x32")


# ---------------------------------------------------------------------------------- mulsr
def test_mulsr_kernel_is_anisotropic_as_specified():
    k = degrade.mulsr_blur_psf()
    assert k.shape == (13, 13) and abs(k.sum() - 1) < 1e-12
    r = np.arange(13) - 6.0
    expected = np.exp(-0.5 * (r[:, None] ** 2 / 2.0 + r[None, :] ** 2 / 10.0))
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-12)
    var_x = float((k.sum(axis=0) * r ** 2).sum())  # columns = x
    var_y = float((k.sum(axis=1) * r ** 2).sum())
    assert 7.5 < var_x < 8.5 and 1.9 < var_y < 2.0  # truncation to 13 px trims the wide x tail


def test_mulsr_is_blur_then_bicubic_then_seeded_noise_and_clip(cave_crop):
    lr, guide, meta = degrade.simulate(cave_crop, "mulsr-x8", seed=3, device="cpu")
    lr_again, _, _ = degrade.simulate(cave_crop, "mulsr-x8", seed=3, device="cpu")
    lr_other, _, _ = degrade.simulate(cave_crop, "mulsr-x8", seed=4, device="cpu")
    np.testing.assert_array_equal(lr, lr_again)
    assert np.abs(lr - lr_other).max() > 0.01
    assert lr.shape == (32, 32, 31) and lr.min() >= 0.0 and lr.max() <= 1.0
    clean, _, meta0 = degrade.simulate(cave_crop, "mulsr-x8", noise_sigma=0.0, device="cpu")
    assert meta0["noise_sigma"] == 0.0
    x = _nbhw(cave_crop).double()
    by_hand = degrade.bicubic_downsample(degrade.blur_same(x, degrade.mulsr_blur_psf()), 8)
    np.testing.assert_allclose(clean, by_hand[0].permute(1, 2, 0).clamp(0, 1).numpy(), atol=2e-6)
    residual = (lr - clean)[(clean > 0.05) & (clean < 0.95)]  # away from the clip
    assert residual.std() == pytest.approx(3 / 255, rel=0.05)
    assert meta["noise_sigma"] == pytest.approx(3 / 255) and meta["clipped"]


def test_blur_same_matches_scipy_symmetric_correlation():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 2, 17, 23, dtype=torch.float64)
    for kernel in [np.random.default_rng(0).random((5, 7)), degrade.mulsr_blur_psf()]:
        ours = degrade.blur_same(x, kernel)[0].numpy()
        ref = np.stack([scipy_ndimage.correlate(x[0, i].numpy(), kernel, mode="reflect") for i in range(2)])
        np.testing.assert_allclose(ours, ref, atol=1e-13)


# ---------------------------------------------------------------------------------- guide, noise, API
def test_guide_is_nikon_p_applied_to_every_pixel(cave_crop):
    _, guide, meta = degrade.simulate(cave_crop, "gauss-x8", device="cpu")
    p = srf.srf_matrix("nikon_d700", np.arange(400.0, 701.0, 10.0)).astype(np.float64)
    np.testing.assert_allclose(guide, np.einsum("mb,hwb->hwm", p, cave_crop.astype(np.float64)), atol=2e-6)
    assert meta["srf_bands"] == ["R", "G", "B"] and "assumed CAVE" in " ".join(meta["notes"])
    _, none_guide, _ = degrade.simulate(cave_crop, "bicubic-x4", device="cpu")
    assert none_guide is None
    _, wv2, meta2 = degrade.simulate(cave_crop, "bicubic-x4", srf="worldview2",
                                     wavelengths_nm=np.arange(400.0, 701.0, 10.0), device="cpu")
    assert wv2.shape[2] == len(meta2["srf_bands"]) == 5


def test_snr_noise_reaches_the_requested_snr(cave_crop):
    clean, _, _ = degrade.simulate(cave_crop, "gauss-x4", device="cpu")
    noisy, _, meta = degrade.simulate(cave_crop, "gauss-x4", snr_db=30.0, seed=1, device="cpu")
    noise = (noisy - clean).astype(np.float64)
    snr = 10 * np.log10((clean.astype(np.float64) ** 2).mean(axis=(0, 1)) / (noise ** 2).mean(axis=(0, 1)))
    np.testing.assert_allclose(snr, 30.0, atol=0.3)
    assert meta["snr_db"] == 30.0 and meta["noise_sigma"] is None
    _, g_noisy, _ = degrade.simulate(cave_crop, "gauss-x4", guide_noise_sigma=0.01, seed=1, device="cpu")
    noisy_again, _, _ = degrade.simulate(cave_crop, "gauss-x4", snr_db=30.0, guide_noise_sigma=0.01, seed=1,
                                         device="cpu")
    np.testing.assert_array_equal(noisy, noisy_again)  # guide noise does not disturb the LR stream
    assert g_noisy is not None


def test_operators_keep_gradients_and_spectral_matches_einsum():
    x = torch.rand(2, 31, 32, 32, dtype=torch.float64, requires_grad=True)
    r = torch.rand(3, 31, dtype=torch.float64)
    y = degrade.spectral_degrade(x, r)
    np.testing.assert_allclose(y.detach().numpy(), torch.einsum("mb,nbhw->nmhw", r, x).detach().numpy(), atol=1e-12)
    for name in ["gauss-x8", "bicubic-x4", "mulsr-x4"]:
        x.grad = None
        degrade.spatial_degrade(x, name).sum().backward()
        # Each operator's weights sum to 1, so d(sum LR)/d(HR) integrates to the LR pixel count.
        lr_pixels = 2 * 31 * (32 // degrade.parse_protocol(name).scale) ** 2
        assert x.grad.sum().item() == pytest.approx(lr_pixels, rel=1e-9)
    with pytest.raises(degrade.ProtocolError, match="31 bands"):
        degrade.spectral_degrade(x, torch.rand(3, 30))


def test_lr_pixel_and_footprint_are_inverse():
    for s in (2, 3, 8, 32):
        for y, x in [(0, 0), (s - 1, s), (5 * s + 1, 7 * s + s - 1)]:
            ly, lx = degrade.lr_pixel_for(y, x, s)
            y0, y1, x0, x1 = degrade.hr_footprint(ly, lx, s)
            assert y0 <= y < y1 and x0 <= x < x1 and y1 - y0 == s and x1 - x0 == s
    ly, lx = degrade.lr_pixel_for(np.array([0, 31, 32, 95]), np.array([1, 2, 3, 64]), 32)
    np.testing.assert_array_equal(ly, [0, 0, 1, 2])
    np.testing.assert_array_equal(lx, [0, 0, 0, 2])


def test_simulate_accepts_tensors_and_rejects_bad_input(cave_crop):
    a, _, _ = degrade.simulate(cave_crop[:64, :64], "gauss-x8", device="cpu")
    b, _, _ = degrade.simulate(_nbhw(cave_crop[:64, :64]), "gauss-x8", device="cpu")
    np.testing.assert_array_equal(a, b)
    bad = cave_crop[:64, :64].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(degrade.ProtocolError, match="NaN"):
        degrade.simulate(bad, "gauss-x8")
    with pytest.raises(degrade.ProtocolError, match="wavelengths"):
        degrade.simulate(np.zeros((16, 16, 5), np.float32), "gauss-x4")
    with pytest.raises(degrade.ProtocolError, match="smaller than one"):
        degrade.simulate(np.zeros((4, 4, 31), np.float32), "gauss-x8")


def test_psf_kernels_sum_to_one_and_are_centred():
    for name in degrade.available_protocols():
        k = degrade.psf_kernel(name)
        assert abs(k.sum() - 1) < 1e-12
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # centred on the block centre

"""True colour (CIE 1931 2 deg, D65, sRGB) and false colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.science import color
from app.core.errors import HsiError

CAVE_WL = np.arange(400.0, 701.0, 10.0)
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"


def _tables():
    cmf = np.loadtxt(color.srf_mod.SRF_DIR / "cie1931_2deg_xyz_cmf_1nm.csv", delimiter=",", comments="#", skiprows=2)
    d65 = np.loadtxt(color.srf_mod.SRF_DIR / "illuminant_D65_colour.csv", delimiter=",", comments="#", skiprows=2)
    return cmf, d65


def test_white_reflector_is_white_and_y_is_one():
    ones = np.ones((3, 4, 31), np.float32)
    img, note = color.cube_to_srgb(ones, CAVE_WL)
    assert note == "" and img.shape == (3, 4, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, 1.0, atol=1e-6)
    xyz = color.cube_to_xyz(ones, CAVE_WL)
    # D65 white at the sRGB chromaticity (0.3127, 0.3290).
    np.testing.assert_allclose(xyz[0, 0], [0.3127 / 0.3290, 1.0, (1 - 0.3127 - 0.3290) / 0.3290], atol=1e-5)
    np.testing.assert_allclose(color.XYZ_TO_LINEAR_SRGB, [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415],
                                                          [0.0557, -0.2040, 1.0570]], atol=5e-4)
    assert xyz[0, 0, 1] == pytest.approx(1.0, abs=1e-6)


def test_grey_follows_the_srgb_curve_and_exposure_scales_it():
    grey = np.full((2, 2, 31), 0.18, np.float32)
    img, _ = color.cube_to_srgb(grey, CAVE_WL)
    np.testing.assert_allclose(img, 1.055 * 0.18 ** (1 / 2.4) - 0.055, atol=1e-5)
    brighter, _ = color.cube_to_srgb(grey, CAVE_WL, exposure=2.0)
    np.testing.assert_allclose(brighter, 1.055 * 0.36 ** (1 / 2.4) - 0.055, atol=1e-5)
    assert color.srgb_gamma(np.array([0.002]))[0] == pytest.approx(12.92 * 0.002)


def test_xyz_matches_direct_integration_at_1nm():
    # A 1 nm cube over the whole observer range: XYZ must equal sum(R S xbar) / sum(S ybar).
    cmf, d65 = _tables()
    wl = cmf[:, 0]
    spd = np.interp(wl, d65[:, 0], d65[:, 1], left=0, right=0)
    reflectance = 0.2 + 0.6 * (wl - wl.min()) / (wl.max() - wl.min())  # a rising (reddish) spectrum
    xyz = color.cube_to_xyz(reflectance[None, None, :].astype(np.float32), wl)[0, 0]
    k = 1.0 / (spd * cmf[:, 2]).sum()
    expected = np.array([(reflectance * spd * cmf[:, c]).sum() * k for c in (1, 2, 3)])
    # The table integrator and the plain sum differ only at the two ends of the range.
    np.testing.assert_allclose(xyz, expected, rtol=2e-3)


def test_narrow_band_colours_land_in_the_right_channel():
    for band_nm, channel in [(450, 2), (540, 1), (620, 0)]:
        spectrum = np.zeros((1, 1, 31), np.float32)
        spectrum[..., int((band_nm - 400) / 10)] = 1.0
        img, _ = color.cube_to_srgb(spectrum, CAVE_WL)
        assert int(np.argmax(img[0, 0])) == channel, band_nm


def test_real_cave_crop_gives_a_plausible_image():
    files = sorted(SAMPLE_DIR.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    cube = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files], axis=-1) / 65535.0
    img, note = color.cube_to_srgb(cube, CAVE_WL)
    assert note == "" and img.shape == (256, 256, 3)
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert 0.05 < img.mean() < 0.95 and img.std() > 0.02


def test_fallback_for_cubes_outside_the_visible_range():
    cube = np.random.default_rng(0).random((4, 5, 50)).astype(np.float32)
    wl = np.linspace(450, 900, 50)
    img, note = color.cube_to_srgb(cube, wl)
    assert note.startswith("cube does not cover 400-700 nm") and "650/550/450" in note
    np.testing.assert_allclose(img, color.false_colour(cube, wl, (650, 550, 450), gamma=True))
    nir = np.linspace(900, 1700, 50)
    img, note = color.cube_to_srgb(cube, nir)
    assert img.shape == (4, 5, 3) and "1540/1300/1060" in note
    img, note = color.cube_to_srgb(cube, None)
    assert "no wavelengths" in note and img.shape == (4, 5, 3)


def test_false_colour_picks_and_interpolates_bands():
    cube = np.broadcast_to(np.linspace(0.0, 0.9, 31, dtype=np.float32), (2, 3, 31)).copy()
    img = color.false_colour(cube, CAVE_WL, (650, 550, 455))
    np.testing.assert_allclose(img[0, 0], [cube[0, 0, 25], cube[0, 0, 15], 0.5 * (cube[0, 0, 5] + cube[0, 0, 6])],
                               atol=1e-7)
    assert img.dtype == np.float32 and img.shape == (2, 3, 3)
    with pytest.raises(HsiError, match="outside"):
        color.false_colour(cube, CAVE_WL, (750, 550, 450))
    with pytest.raises(HsiError, match="bands"):
        color.cube_to_xyz(cube, CAVE_WL[:30])

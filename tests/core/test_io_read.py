"""Readers against real files (crops of CAVE, FENIX, Paris Hyperion, AVIRIS Jasper Ridge).

Expected values come from independent decodings (PIL, numpy.fromfile, scipy, h5py) of the
same bytes, never from the project's own readers."""
from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from app.core.errors import AmbiguousCubeError
from app.core.io import open_cube, sniff
from tests.conftest import DATA

CAVE_NM = np.arange(400.0, 701.0, 10.0)


def png_folder_uint16(folder):
    files = sorted(folder.glob("*.png"), key=lambda p: int(re.search(r"(\d+)$", p.stem).group(1)))
    return np.stack([np.array(Image.open(f)) for f in files], axis=-1)


def fenix_raw():
    return np.fromfile(DATA / "fenix" / "image.dat", dtype="<u2").reshape(450, 38, 23)  # BSQ


def fenix_wavelengths():
    text = (DATA / "fenix" / "image.hdr").read_text()
    block = text[text.index("wavelength = {") + 14:]
    return np.array([float(v) for v in block[:block.index("}")].split(",")])


@pytest.fixture(scope="module")
def cave_u16():
    return png_folder_uint16(DATA / "cave_beads_crop_ms")


def test_cave_png_folder_16bit(cave_u16):
    cube = open_cube(DATA / "cave_beads_crop_ms")
    assert cube.shape == (32, 40, 31)
    np.testing.assert_array_equal(cube.wavelengths_nm, CAVE_NM)
    np.testing.assert_allclose(cube.data, cave_u16 / 65535.0, rtol=0, atol=1e-7)
    assert cube.data.dtype == np.float32
    assert "65535" in cube.normalisation and "CAVE" in cube.normalisation


def test_cave_png_folder_8bit_rgba_equal_channels(cave_u16):
    cube = open_cube(DATA / "cave_beads_crop_rgba8_ms")
    np.testing.assert_allclose(cube.data, (cave_u16 >> 8) / 255.0, atol=1e-7)
    assert "255" in cube.normalisation


def test_png_bands_sorted_numerically(tmp_path, cave_u16):
    # names 1..12 without zero padding: lexical order would put 10 before 2
    folder = tmp_path / "scene"
    folder.mkdir()
    for k in range(12):
        Image.fromarray(cave_u16[:, :, k]).save(folder / f"band_{k + 1}.png")
    cube = open_cube(folder)
    np.testing.assert_array_equal(np.round(cube.data * 65535).astype(np.uint16), cave_u16[:, :, :12])
    assert cube.wavelengths_nm is None  # not CAVE-like: no invented wavelengths


def test_envi_fenix_bsq_uint16_scale_ignore_fwhm():
    raw = fenix_raw()
    cube = open_cube(DATA / "fenix" / "image.hdr")
    assert cube.shape == (38, 23, 450) and cube.is_lazy
    expected = np.transpose(raw, (1, 2, 0)).astype(np.float32) / 65535.0  # data ignore value 0 -> 0 anyway
    np.testing.assert_allclose(cube.band(100), expected[:, :, 100], rtol=1e-6)
    np.testing.assert_allclose(cube.spectrum(5, 7), expected[5, 7], rtol=1e-6)
    np.testing.assert_allclose(cube.wavelengths_nm, fenix_wavelengths())
    assert cube.fwhm_nm is not None and cube.fwhm_nm[0] == pytest.approx(3.36)
    assert cube.ignore_value == 0
    assert "65535" in cube.normalisation


def test_envi_opened_from_data_file_too():
    assert open_cube(DATA / "fenix" / "image.dat").shape == (38, 23, 450)


def test_band_and_spectrum_do_not_load_the_whole_memmap():
    cube = open_cube(DATA / "fenix" / "image.hdr")
    cube.band(3)
    cube.spectrum(1, 2)
    cube.region(slice(0, 4), slice(0, 4))
    assert cube._cache is None


def test_envi_big_endian_bil_micrometres_bbl():
    raw = fenix_raw()[::5, 4:16, 2:12]  # what make_test_data wrote, as (bands, lines, samples)
    cube = open_cube(DATA / "fenix_be_bil.hdr")
    assert cube.metadata["byte_order"] == "big" and cube.metadata["interleave"] == "bil"
    np.testing.assert_allclose(cube.data, np.transpose(raw, (1, 2, 0)) / 65535.0, rtol=1e-6)
    assert cube.band(4).dtype == np.float32 and cube.band(4).dtype.isnative
    np.testing.assert_allclose(cube.wavelengths_nm, fenix_wavelengths()[::5], atol=1e-3)  # um -> nm
    bad_expected = [1340 < w < 1450 or 1800 < w < 1950 for w in fenix_wavelengths()[::5]]
    np.testing.assert_array_equal(cube.bad_bands, bad_expected)


def test_envi_bip_float_units_inferred():
    raw = fenix_raw()[::5, 4:16, 2:12]
    cube = open_cube(DATA / "fenix_bip.hdr")
    np.testing.assert_allclose(cube.data, np.transpose(raw, (1, 2, 0)) / 65535.0, rtol=1e-6)
    assert any("nanometres" in w for w in cube.metadata["warnings"])


def test_mat_v5_paris_picks_largest_cube_and_wavelengths():
    ref = sio.loadmat(DATA / "paris_crop_v5.mat")
    cube = open_cube(DATA / "paris_crop_v5.mat")
    assert cube.metadata["variable"] == "HSim"
    np.testing.assert_allclose(cube.data, ref["HSim"].astype(np.float32))
    np.testing.assert_allclose(cube.wavelengths_nm, ref["wavelength"].ravel())
    other = open_cube(DATA / "paris_crop_v5.mat", var="MSim")
    assert other.shape == (24, 20, 9)


def test_mat_v73_axes_reversed_and_lazy(cave_u16):
    assert sniff(DATA / "cave_crop_v73.mat") == "mat-v7.3"
    cube = open_cube(DATA / "cave_crop_v73.mat")
    assert cube.shape == (32, 40, 31) and cube.is_lazy
    # uint16 counts with no stated scale: divided by their maximum (the literature's rule, protocols.md)
    top = float(cave_u16.max())
    np.testing.assert_allclose(cube.band(7), cave_u16[:, :, 7] / top, atol=1e-7)
    np.testing.assert_allclose(cube.spectrum(3, 30), cave_u16[3, 30] / top, atol=1e-7)
    assert cube.metadata["value_rule"] == "max" and f"maximum {top:g}" in cube.normalisation
    np.testing.assert_array_equal(cube.wavelengths_nm, CAVE_NM)


def test_mat_2d_bands_by_pixels_fortran_order():
    ref = sio.loadmat(DATA / "jasper_crop_2d.mat")
    cube = open_cube(DATA / "jasper_crop_2d.mat")  # nRow/nCol in the file give H and W
    assert cube.shape == (16, 12, 198)
    # the file states its maxValue (5000): the values are divided by it
    assert float(ref["maxValue"].ravel()[0]) == 5000.0 and cube.metadata["value_rule"] == "stated"
    expected = ref["Y"].reshape(198, 16, 12, order="F").transpose(1, 2, 0) / 5000.0
    np.testing.assert_allclose(cube.data, expected, rtol=1e-6)
    assert "maxValue 5000" in cube.normalisation
    # the same crop stored band-first in HDF5 (divided by 10000 there)
    with h5py.File(DATA / "jasper_crop.h5") as f:
        h5 = f["scene/reflectance"][()]
    np.testing.assert_allclose(cube.data * 5000.0 / 10000.0, np.transpose(h5, (1, 2, 0)), rtol=1e-5)


def test_hdf5_band_first_with_wavelength_dataset():
    with h5py.File(DATA / "jasper_crop.h5") as f:
        ref = f["scene/reflectance"][()]
        wl = f["scene/wavelength_nm"][()]
    cube = open_cube(DATA / "jasper_crop.h5")
    assert cube.metadata["variable"] == "scene/reflectance" and cube.metadata["layout"] == "BHW"
    np.testing.assert_allclose(cube.data, np.transpose(ref, (1, 2, 0)))
    np.testing.assert_allclose(cube.wavelengths_nm, wl)


def test_tiff_pages_and_geotiff_wavelengths(cave_u16):
    cube = open_cube(DATA / "cave_crop_pages.tif")
    np.testing.assert_allclose(cube.data, cave_u16 / float(cave_u16.max()), atol=1e-7)
    geo = open_cube(DATA / "fenix_crop_geo.tif")
    raw = fenix_raw()[::5, 4:16, 2:12]
    np.testing.assert_allclose(geo.data, np.transpose(raw, (1, 2, 0)) / float(raw.max()), rtol=1e-6)
    np.testing.assert_allclose(geo.wavelengths_nm, fenix_wavelengths()[::5], atol=1e-3)


def test_npy_band_first_needs_layout_when_ambiguous(cave_u16):
    with pytest.raises(AmbiguousCubeError) as info:
        open_cube(DATA / "cave_crop_bhw.npy")
    assert info.value.option == "layout" and "BHW" in info.value.choices
    assert "cave_crop_bhw.npy" in str(info.value)
    cube = open_cube(DATA / "cave_crop_bhw.npy", layout="BHW")
    assert cube.is_lazy
    np.testing.assert_allclose(cube.data, cave_u16 / float(cave_u16.max()), atol=1e-7)


def test_npz_with_wavelengths(cave_u16):
    cube = open_cube(DATA / "cave_crop.npz")
    np.testing.assert_allclose(cube.data, cave_u16 / float(cave_u16.max()), atol=1e-7)
    np.testing.assert_array_equal(cube.wavelengths_nm, CAVE_NM)


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    disguised = tmp_path / "cube.dat"
    disguised.write_bytes((DATA / "cave_crop.npz").read_bytes())
    assert sniff(disguised) == "npz"
    mat = tmp_path / "noext"
    mat.write_bytes((DATA / "paris_crop_v5.mat").read_bytes())
    assert sniff(mat) == "mat-v5"
    assert open_cube(mat).shape == (24, 20, 128)


@pytest.mark.parametrize("normalise,divisor", [("none", 1.0), (1000.0, 1000.0)])
def test_user_normalisation(normalise, divisor, cave_u16):
    cube = open_cube(DATA / "cave_crop.npz", normalise=normalise)
    np.testing.assert_allclose(cube.data, cave_u16 / divisor, rtol=1e-6)
    assert "forced by --normalise" in cube.normalisation

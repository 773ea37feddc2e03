import numpy as np
import pytest

from app.core.cube import Cube
from app.core.errors import CubeError, NonFiniteError


def test_axes_permutation_band_and_spectrum():
    hwb = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    stored = np.ascontiguousarray(np.transpose(hwb, (2, 0, 1)))  # B, H, W
    cube = Cube(raw=stored, axes=(1, 2, 0))
    assert cube.shape == (3, 4, 5)
    np.testing.assert_array_equal(cube.band(2), hwb[:, :, 2])
    np.testing.assert_array_equal(cube.spectrum(1, 3), hwb[1, 3])
    np.testing.assert_array_equal(cube.region(slice(0, 2), slice(1, 3)), hwb[0:2, 1:3])
    np.testing.assert_array_equal(cube.data, hwb)


def test_scale_ignore_value_and_big_endian():
    raw = np.array([[[0, 100], [200, 65535]]], dtype=">u2")  # 1 x 2 x 2
    cube = Cube(raw=raw, scale=1 / 1000, ignore_value=65535)
    np.testing.assert_allclose(cube.data, [[[0, 0.1], [0.2, 0.0]]], rtol=1e-6)
    assert cube.data.dtype == np.dtype("float32") and cube.data.dtype.isnative


def test_metadata_lengths_are_checked():
    with pytest.raises(CubeError, match="wavelength list has 3 entries but the cube has 2 bands"):
        Cube.from_array(np.zeros((2, 2, 2)), wavelengths_nm=[400, 500, 600])
    with pytest.raises(NonFiniteError):
        Cube.from_array(np.full((2, 2, 2), np.nan))


def test_band_index_by_wavelength():
    cube = Cube.from_array(np.zeros((2, 2, 31)), wavelengths_nm=np.arange(400, 701, 10))
    assert cube.band_index(553) == 15 and cube.band_label(15) == "band 15 (550.0 nm)"
    with pytest.raises(IndexError):
        cube.band(31)
    with pytest.raises(IndexError):
        cube.spectrum(2, 0)

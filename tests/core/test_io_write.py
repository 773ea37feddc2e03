"""Every writer round-trips (values, shape, wavelengths) and never leaves a half-written file."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from app.core.cube import Cube
from app.core.io import containers, open_cube, save_cube
from tests.conftest import DATA


@pytest.fixture(scope="module")
def real_cube() -> Cube:
    """The FENIX crop (real spectra, 90 bands with wavelengths, FWHM-free, bad bands)."""
    src = open_cube(DATA / "fenix_be_bil.hdr")
    cube = src.with_data(src.data, name="fenix_crop", metadata={"provenance": {"model": "none", "seed": 3}})
    cube.fwhm_nm = np.full(cube.bands, 9.5)
    return cube


WRITERS = [
    ("out.hdr", {}),
    ("out_bil.img", {"interleave": "bil"}),
    ("out_bip.hdr", {"interleave": "bip", "byteorder": "big"}),
    ("out_v5.mat", {"mat_version": "5"}),
    ("out_v73.mat", {"mat_version": "7.3"}),
    ("out.npy", {}),
    ("out.npz", {}),
    ("out.tif", {}),
    ("out.h5", {}),
]


@pytest.mark.parametrize("name,options", WRITERS, ids=[w[0] for w in WRITERS])
def test_round_trip(tmp_path, real_cube, name, options):
    written = save_cube(real_cube, tmp_path / name, **options)
    back = open_cube(written)
    assert back.shape == real_cube.shape
    np.testing.assert_array_equal(back.data, real_cube.data)
    np.testing.assert_allclose(back.wavelengths_nm, real_cube.wavelengths_nm, rtol=1e-6)
    assert back.scale == 1.0  # float32 reflectance written, read back unscaled
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("name", ["out.hdr", "out.npy", "out.npz", "out.tif", "out.h5"])
def test_round_trip_keeps_band_metadata(tmp_path, real_cube, name):
    back = open_cube(save_cube(real_cube, tmp_path / name))
    np.testing.assert_array_equal(back.bad_bands, real_cube.bad_bands) if name == "out.hdr" else None
    if name in ("out.hdr", "out.npy", "out.tif"):
        np.testing.assert_allclose(back.fwhm_nm, real_cube.fwhm_nm)


def test_png_folder_round_trip_quantised_to_16_bit(tmp_path):
    cave = open_cube(DATA / "cave_beads_crop_ms")
    out = save_cube(cave, tmp_path / "copy_ms")
    back = open_cube(out)
    np.testing.assert_allclose(back.data, cave.data, atol=0.5 / 65535 + 1e-7)
    np.testing.assert_array_equal(back.wavelengths_nm, cave.wavelengths_nm)


def test_png_folder_writer_refuses_non_empty_folder(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        save_cube(open_cube(DATA / "cave_beads_crop_ms"), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_mat_v73_written_file_is_matlab_hdf5(tmp_path, real_cube):
    path = save_cube(real_cube, tmp_path / "x.mat", mat_version="7.3")
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path) as f:  # MATLAB stores column-major: h5py sees the axes reversed
        assert f["cube"].shape == tuple(reversed(real_cube.shape))


def test_failed_write_leaves_nothing(tmp_path, real_cube, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(containers.np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_cube(real_cube, tmp_path / "broken.npz")
    assert list(tmp_path.iterdir()) == []


def test_failed_envi_write_leaves_neither_file(tmp_path, real_cube, monkeypatch):
    import spectral.io.envi as envi

    def half_then_fail(path, *args, **kwargs):
        open(path, "w").write("ENVI\n")
        raise OSError("disk full")

    monkeypatch.setattr(envi, "save_image", half_then_fail)
    with pytest.raises(OSError):
        save_cube(real_cube, tmp_path / "broken.hdr")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_existing_file_atomically(tmp_path, real_cube):
    path = tmp_path / "same.npy"
    save_cube(real_cube, path)
    doubled = real_cube.with_data(real_cube.data * 0.5)
    save_cube(doubled, path)
    np.testing.assert_array_equal(open_cube(path).data, doubled.data)

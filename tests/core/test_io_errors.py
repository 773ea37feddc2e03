"""Broken input gets the project's own exception with a message naming the file and the problem."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from app.core.errors import (
    CubeError,
    HsiError,
    InconsistentBandsError,
    MissingFileError,
    NoCubeError,
    NonFiniteError,
    NonNumericError,
    TruncatedFileError,
    UnknownFormatError,
    UnsafeFileError,
)
from app.core.io import open_cube
from app.cli import main as cli_main
from tests.conftest import DATA


def copy_fenix(tmp_path):
    for name in ("image.hdr", "image.dat"):
        shutil.copy(DATA / "fenix" / name, tmp_path / name)
    return tmp_path / "image.hdr", tmp_path / "image.dat"


def expect(exc_type, path, fragment, **kwargs):
    with pytest.raises(exc_type) as info:
        open_cube(path, **kwargs)
    message = str(info.value)
    assert str(path.name) in message, message
    assert fragment in message, message
    return info.value


def test_missing_file(tmp_path):
    expect(MissingFileError, tmp_path / "nowhere.hdr", "no such file")


def test_envi_header_without_data(tmp_path):
    hdr, dat = copy_fenix(tmp_path)
    dat.unlink()
    expect(MissingFileError, hdr, "no data file")


def test_truncated_envi_data(tmp_path):
    hdr, dat = copy_fenix(tmp_path)
    dat.write_bytes(dat.read_bytes()[:500_000])
    err = expect(TruncatedFileError, hdr, "truncated")
    assert "786600" in str(err) and "500000" in str(err)


def test_header_that_lies_about_size(tmp_path):
    hdr, _ = copy_fenix(tmp_path)
    hdr.write_text(hdr.read_text().replace("bands = 450", "bands = 500"))
    expect(TruncatedFileError, tmp_path / "image.dat", "needs")


def test_header_missing_mandatory_field(tmp_path):
    hdr, _ = copy_fenix(tmp_path)
    hdr.write_text(hdr.read_text().replace("lines = 38\n", ""))
    expect(CubeError, hdr, "lines")


def test_mat_without_3d_array(tmp_path):
    path = tmp_path / "flat.mat"
    sio.savemat(path, {"R": np.ones((9, 128)), "note": "srf only"})
    err = expect(NoCubeError, path, "no 3-D numeric array")
    assert "R 9x128" in str(err)


def test_mat_with_text_cube(tmp_path):
    path = tmp_path / "text.mat"
    sio.savemat(path, {"labels": np.array([[["a", "b"], ["c", "d"]]] * 3, dtype=object)})
    expect(NonNumericError, path, "not numbers")


def test_non_numeric_npy(tmp_path):
    path = tmp_path / "words.npy"
    np.save(path, np.full((4, 4, 3), "x"))
    expect(NonNumericError, path, "not real numbers")


def test_nan_values_refused_then_zeroed_on_request(tmp_path):
    data = np.random.default_rng(0).random((8, 8, 5)).astype(np.float32)
    data[2, 3, 1] = np.nan
    data[4, 4, 4] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, cube=data)
    err = expect(NonFiniteError, path, "NaN/Inf")
    assert "2 NaN/Inf values" in str(err)
    cube = open_cube(path, nonfinite="zero")
    assert cube.data[2, 3, 1] == 0 and cube.data[4, 4, 4] == 0
    assert any("replaced by 0" in w for w in cube.metadata["warnings"])


def test_nan_in_memory_mapped_envi(tmp_path):
    data = np.ones((3, 4, 5), dtype="<f4")  # BSQ: bands, lines, samples
    data[0, 0, 0] = np.nan
    data.tofile(tmp_path / "n.img")
    (tmp_path / "n.hdr").write_text("ENVI\nsamples = 5\nlines = 4\nbands = 3\nheader offset = 0\n"
                                    "data type = 4\ninterleave = bsq\nbyte order = 0\n")
    with pytest.raises(NonFiniteError, match="n.img: 1 NaN/Inf"):  # the data file holds the NaN
        open_cube(tmp_path / "n.hdr")


def test_png_folder_with_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed_ms"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.zeros((8, 8 + (k == 2), ), np.uint16)).save(folder / f"mixed_ms_{k + 1:02d}.png")
    with pytest.raises(InconsistentBandsError) as info:
        open_cube(folder)
    assert "mixed_ms_03.png" in str(info.value) and "share one size" in str(info.value)


def test_png_folder_with_colour_band(tmp_path):
    folder = tmp_path / "colour"
    folder.mkdir()
    for k in range(2):
        rgb = np.zeros((4, 4, 3), np.uint8)
        rgb[..., k] = 200
        Image.fromarray(rgb).save(folder / f"c_{k}.png")
    with pytest.raises(InconsistentBandsError, match="different channels"):
        open_cube(folder)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    expect(NoCubeError, folder, "no PNG band images")


def test_pickle_disguised_as_npy_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.npy"
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Payload()))
    expect(UnsafeFileError, path, "pickle")
    assert not marker.exists()


def test_object_array_npy_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[[1, None]]], dtype=object), allow_pickle=True)
    expect(UnsafeFileError, path, "unpickling")


def test_unknown_and_empty_files(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    expect(UnknownFormatError, junk, "not a cube format")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    expect(CubeError, empty, "empty")


def test_truncated_npy_and_mat73(tmp_path):
    npy = tmp_path / "cut.npy"
    npy.write_bytes((DATA / "cave_crop_bhw.npy").read_bytes()[:3000])
    with pytest.raises(HsiError) as info:
        open_cube(npy, layout="BHW")
    assert "cut.npy" in str(info.value)
    mat = tmp_path / "cut.mat"
    mat.write_bytes((DATA / "cave_crop_v73.mat").read_bytes()[:4000])
    with pytest.raises(HsiError) as info:
        open_cube(mat).data
    assert "cut.mat" in str(info.value)


def test_wrong_layout_option_is_explained(tmp_path):
    expect(CubeError, DATA / "cave_crop.npz", "not a permutation", layout="HWX")


def test_cli_prints_error_and_exit_code(tmp_path, capsys):
    junk = tmp_path / "bad.npy"
    junk.write_bytes(pickle.dumps([1, 2]))
    assert cli_main(["info", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "pickle" in err and "Traceback" not in err

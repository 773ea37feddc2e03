"""Wavelengths from a side file (issue 22 item 5): the parser, ``open_cube(wavelengths=)``, the
``--wavelengths`` option of the commands, and MATLAB order for .mat files whose band axis the
shape does not tell. The cubes are the real crops of tests/data (Jasper Ridge has no wavelengths
in its .mat); the side files are written here in the layouts real ones come in."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io as sio

from app.cli import main
from app.core.errors import CubeError
from app.core.io import open_cube
from app.core.io.wavelengths import read_wavelength_file
from tests.conftest import DATA

JASPER = DATA / "jasper_crop_2d.mat"   # 16 x 12 x 198 AVIRIS crop, a 2-D matrix with nRow/nCol, no wavelengths
PARIS = DATA / "paris_crop_v5.mat"     # HSim 24 x 20 x 128 (with a 'wavelength' variable), MSim 24 x 20 x 9
# 198 AVIRIS-like band centres; the file below has the layout of the one that comes with Jasper Ridge
JASPER_NM = np.round(np.linspace(399.37, 2457.24, 198), 2)


def jasper_side_file(folder, name="jasper_wavelengths.txt"):
    """The layout of Jasper Ridge's wavelength file: a comment line, then 'AVIRIS band index, nm'."""
    path = folder / name
    index = np.arange(4, 4 + 198)
    path.write_text("# AVIRIS band index (SlectBands), approx centre wavelength nm from a generic AVIRIS table\n"
                    + "".join(f"{i} {w:.2f}\n" for i, w in zip(index, JASPER_NM)))
    return path


# ------------------------------------------------------------------------------ parser
def test_two_columns_band_index_and_nm_with_a_comment_header(tmp_path):
    nm, note = read_wavelength_file(jasper_side_file(tmp_path), 198)
    np.testing.assert_array_equal(nm, JASPER_NM)
    assert "jasper_wavelengths.txt" in note and "nm" in note


def test_micrometres_by_magnitude_are_converted_and_the_note_says_so(tmp_path):
    path = tmp_path / "um.txt"
    path.write_text("\n".join(f"{w / 1000:.5f}" for w in JASPER_NM) + "\n")
    nm, note = read_wavelength_file(path, 198)
    np.testing.assert_allclose(nm, JASPER_NM, atol=1e-6)
    assert "micrometres" in note and "below 30" in note


def test_a_csv_with_named_columns_takes_the_wavelength_column(tmp_path):
    path = tmp_path / "bands.csv"
    rows = [f"{k + 1},{w / 1000:.5f},{0.01:.3f}" for k, w in enumerate(JASPER_NM)]
    path.write_text("band,wavelength (um),fwhm (um)\n" + "\n".join(rows) + "\n")
    nm, note = read_wavelength_file(path, 198)
    np.testing.assert_allclose(nm, JASPER_NM, atol=1e-6)
    assert "column 2 of 3" in note and "micrometres (said by the file)" in note


def test_one_line_of_values(tmp_path):
    path = tmp_path / "one_line.csv"
    path.write_text(", ".join(f"{w:.2f}" for w in JASPER_NM) + "\n")
    np.testing.assert_array_equal(read_wavelength_file(path, 198)[0], JASPER_NM)


@pytest.mark.parametrize("content,fragment", [
    ("400\n410\nabc\n", "line 3"),
    ("400 1 2\n410 1 2\n", "3 columns"),
    ("400.5 1\n410.5 2\n", "not a band index"),
    ("400\n410\n420 430\n", "line 3 has 2 columns"),
    ("# only a comment\n", "holds no numbers"),
    ("400\n-410\n", "not a positive number"),
])
def test_bad_side_files_are_one_line_errors_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "wl.txt"
    path.write_text(content)
    with pytest.raises(CubeError) as info:
        read_wavelength_file(path)
    text = str(info.value)
    assert str(path) in text and fragment in text and "\n" not in text


def test_a_binary_file_is_refused(tmp_path):
    with pytest.raises(CubeError, match="binary"):
        read_wavelength_file(PARIS)


# ------------------------------------------------------------------------------ open_cube
def test_a_real_cube_without_wavelengths_gets_them_from_the_side_file(tmp_path):
    plain = open_cube(JASPER)
    assert plain.wavelengths_nm is None
    cube = open_cube(JASPER, wavelengths=jasper_side_file(tmp_path))
    np.testing.assert_array_equal(cube.wavelengths_nm, JASPER_NM)
    np.testing.assert_array_equal(cube.data, plain.data)  # the values are untouched
    assert any("jasper_wavelengths.txt" in w for w in cube.metadata["warnings"])


def test_a_count_that_is_not_the_bands_names_both_files(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("\n".join(f"{w:.2f}" for w in JASPER_NM[:120]) + "\n")
    with pytest.raises(CubeError) as info:
        open_cube(JASPER, wavelengths=path)
    assert str(path) in str(info.value) and "120 wavelengths" in str(info.value) and "198 bands" in str(info.value)


def test_the_side_file_replaces_the_files_own_and_says_so(tmp_path):
    own = open_cube(PARIS).wavelengths_nm
    path = tmp_path / "paris.txt"
    path.write_text("\n".join(f"{w + 1:.2f}" for w in own) + "\n")
    cube = open_cube(PARIS, wavelengths=path)
    np.testing.assert_allclose(cube.wavelengths_nm, own + 1)
    assert any("replace the file's own" in w for w in cube.metadata["warnings"])


# ------------------------------------------------------------------------------ commands
def test_info_and_convert_take_the_side_file(tmp_path, capsys):
    side = jasper_side_file(tmp_path)
    assert main(["info", str(JASPER), "--wavelengths", str(side), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["wavelengths_nm"] == [round(float(w), 3) for w in JASPER_NM]
    out = tmp_path / "jasper.hdr"
    assert main(["convert", str(JASPER), str(out), "--wavelengths", str(side)]) == 0
    np.testing.assert_allclose(open_cube(out).wavelengths_nm, JASPER_NM, atol=1e-3)  # written into the header


def test_simulate_carries_the_side_files_wavelengths_to_the_lr(tmp_path, capsys):
    side = jasper_side_file(tmp_path)
    assert main(["simulate", "--gt", str(JASPER), "--protocol", "bicubic-x4", "--wavelengths", str(side),
                 "--out", str(tmp_path / "sim")]) == 0
    np.testing.assert_allclose(open_cube(tmp_path / "sim" / "lr.npy").wavelengths_nm, JASPER_NM)


def test_a_wrong_count_is_one_error_line_in_the_cli(tmp_path, capsys):
    path = tmp_path / "wl.txt"
    path.write_text("400\n500\n600\n")
    assert main(["info", str(JASPER), "--wavelengths", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "3 wavelengths" in err[0]


def test_view_var_options_per_role():
    from app.cli import build_parser, view_files

    args = build_parser().parse_args(["view", "--gt", str(PARIS), "--guide", str(PARIS), "--var", "HSim",
                                      "--guide-var", "MSim", "--wavelengths", "wl.txt"])
    assert view_files(args) == [("gt", str(PARIS), {"var": "HSim", "wavelengths": "wl.txt"}),
                                ("guide", str(PARIS), {"var": "MSim"})]


# ------------------------------------------------------------------------------ .mat layout
def test_an_ambiguous_mat_is_read_in_matlab_order_with_a_note(tmp_path, capsys):
    """Jasper Ridge's 16 x 12 crop as MATLAB stores a cube (H x W x B): no axis is clearly the band
    axis by its length alone (198 is the largest), so MATLAB order is assumed and said."""
    cube = open_cube(JASPER)
    path = tmp_path / "jasper_hwb.mat"
    sio.savemat(path, {"cube": cube.data})
    read = open_cube(path)
    assert read.shape == (16, 12, 198) and read.metadata["layout"] == "HWB"
    np.testing.assert_array_equal(read.data, cube.data)
    note = next(w for w in read.metadata["warnings"] if w.startswith("layout:"))
    assert "MATLAB order" in note and "--layout" in note
    assert main(["info", str(path)]) == 0
    assert "--layout" in capsys.readouterr().out
    assert open_cube(path, layout="BHW").shape == (12, 198, 16)  # the override still decides
    # a .npy of the same shape has no MATLAB convention: still a question
    np.save(tmp_path / "same.npy", cube.data)
    with pytest.raises(CubeError, match="layout"):
        open_cube(tmp_path / "same.npy")

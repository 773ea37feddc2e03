"""SRF tables: loading, resampling onto cube bands, row normalisation, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.core.science import srf
from app.core.errors import HsiError

CAVE_WL = np.arange(400.0, 701.0, 10.0)


def _p_from_csv() -> np.ndarray:
    table = np.loadtxt(srf.SRF_DIR / "nikon_d700_P_cave_fusion_3x31.csv", delimiter=",", comments="#", skiprows=4)
    return table[:, 1:].T  # (3, 31)


def test_nikon_p_is_used_exactly_on_cave_bands():
    res = srf.resample_srf("nikon_d700", CAVE_WL)
    assert res.band_names == ("R", "G", "B")
    np.testing.assert_allclose(res.matrix, _p_from_csv() / _p_from_csv().sum(1, keepdims=True), atol=1e-7)
    # The published P already has rows summing to 1 (to its 8 printed digits).
    np.testing.assert_allclose(_p_from_csv().sum(1), 1.0, atol=1e-6)
    assert res.matrix.dtype == np.float32 and res.matrix.shape == (3, 31)
    # The red row's centre lies in the red part of the spectrum, blue in the blue part.
    assert 600 < res.centres_nm[0] < 660 and 440 < res.centres_nm[2] < 490


def test_srf_matrix_default_and_aliases_agree():
    np.testing.assert_array_equal(srf.srf_matrix("nikon_d700", CAVE_WL), srf.srf_matrix("D700", CAVE_WL))
    assert srf.default_srf_name(CAVE_WL) == "nikon_d700"
    assert srf.default_srf_name(np.linspace(430, 860, 103)) == "worldview3"


@pytest.mark.parametrize("name", list(srf.available_srfs()))
def test_every_builtin_resamples_to_rows_summing_to_one(name):
    wl = np.linspace(400, 1000, 61)
    res = srf.resample_srf(name, wl)
    np.testing.assert_allclose(res.matrix.sum(axis=1), 1.0, atol=1e-6)
    assert (res.matrix >= 0).all()
    assert len(res.band_names) == res.matrix.shape[0] == res.centres_nm.size
    assert (res.coverage >= 0.9).all()
    # Effective centres lie inside the cube's range and follow the band's own centroid.
    table = srf.load_srf(name)
    own = table.centres_nm[[table.band_names.index(n) for n in res.band_names]]
    assert np.all(np.abs(res.centres_nm - own) < 25.0)


def test_panchromatic_left_out_unless_asked_and_uncovered_bands_dropped():
    wl = np.linspace(430, 860, 103)
    res = srf.resample_srf("worldview3", wl)
    assert "Pan" not in res.band_names
    assert "SWIR1" in res.dropped and "Coastal_MS7" in res.dropped  # 427 nm centre is below 430
    # NIR1 (770-895 nm) has 80% of its response below 860 nm: out at the default 90%, in at 80%.
    assert res.band_names == ("Blue_MS4", "Green_MS3", "Yellow_MS6", "Red_MS2", "Red Edge_MS5")
    assert srf.resample_srf("worldview3", wl, min_coverage=0.8).band_names[-1] == "NIR1_MS1"
    pan = srf.resample_srf("worldview3", wl, bands=["Pan"])
    assert pan.band_names == ("Pan",)
    assert srf.band_names("sentinel2a", CAVE_WL) == ("B1", "B2", "B3", "B4")


def test_box_response_integrates_over_band_intervals(tmp_path):
    # Response 1 on 495..525 nm at 1 nm, 0 elsewhere: the piecewise-linear table has ramps of
    # area 0.5 on 494-495 and 525-526 nm. CAVE band intervals are centre +- 5 nm.
    wl = np.arange(480, 541)
    resp = ((wl >= 495) & (wl <= 525)).astype(float)
    path = tmp_path / "box.csv"
    path.write_text("# a box\nnm,box\n" + "\n".join(f"{a},{b}" for a, b in zip(wl, resp)))
    m = srf.srf_matrix(path, CAVE_WL)[0]
    expected = np.zeros(31)
    expected[[9, 13]] = 0.5  # 490 and 530 nm bands hold one ramp each
    expected[[10, 11, 12]] = 10.0
    np.testing.assert_allclose(m, expected / expected.sum(), atol=1e-7)


def test_user_csv_without_header_and_with_blanks(tmp_path):
    path = tmp_path / "cam.csv"
    path.write_text("# my camera\n400,1,\n500,1,0.5\n600,0,1\n700,0,1\n")
    table = srf.load_srf(path)
    assert table.band_names == ("band 1", "band 2")
    assert table.source == "my camera"
    m = srf.srf_matrix(path, CAVE_WL)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    assert table.responses[1, 0] == 0.0  # blank cell read as 0
    assert m[0, -1] == 0.0  # band 1 is 0 from 600 nm on


def test_bare_matrix_is_normalised_and_transposed_when_unambiguous():
    raw = np.arange(1, 2 * 31 + 1, dtype=float).reshape(2, 31)
    m = srf.srf_matrix(raw, CAVE_WL)
    np.testing.assert_allclose(m, raw / raw.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(srf.srf_matrix(raw.T, n_bands=31), m, rtol=1e-6)
    np.testing.assert_allclose(srf.srf_matrix(torch.tensor(raw), CAVE_WL), m, rtol=1e-6)
    with pytest.raises(srf.SrfError, match="31 bands"):
        srf.srf_matrix(np.ones((3, 30)), CAVE_WL)
    with pytest.raises(srf.SrfError, match="negative"):
        srf.srf_matrix(-np.ones((3, 31)), CAVE_WL)


def test_no_overlap_raises_a_clear_hsi_error():
    with pytest.raises(srf.SrfRangeError, match="does not overlap") as info:
        srf.srf_matrix("nikon_d700", np.linspace(900, 1700, 50))
    assert isinstance(info.value, HsiError)
    assert "900-1700 nm" in str(info.value)
    with pytest.raises(srf.SrfRangeError):
        srf.resample_srf("worldview3", CAVE_WL, bands=["SWIR1"])


def test_unknown_name_and_malformed_tables(tmp_path):
    with pytest.raises(srf.UnknownSrfError, match="nikon_d700"):
        srf.load_srf("no_such_camera")
    bad = tmp_path / "bad.csv"
    bad.write_text("nm,a\n400,1\n400,2\n")
    with pytest.raises(srf.SrfError, match="distinct"):
        srf.load_srf(bad)
    bad.write_text("nm,a\n400,x\n500,1\n")
    with pytest.raises(srf.SrfError, match="not a number"):
        srf.load_srf(bad)
    with pytest.raises(srf.SrfError, match="wavelengths"):
        srf.srf_matrix("nikon_d700", None)


def test_descending_wavelengths_give_the_mirrored_matrix():
    m = srf.srf_matrix("worldview2", np.linspace(400, 1000, 31))
    m_desc = srf.srf_matrix("worldview2", np.linspace(1000, 400, 31))
    np.testing.assert_allclose(m_desc, m[:, ::-1], atol=1e-7)


def test_shipped_tables_name_their_source():
    for path in sorted(srf.SRF_DIR.glob("*.csv")):
        assert path.read_text(encoding="utf-8").startswith("#"), path.name

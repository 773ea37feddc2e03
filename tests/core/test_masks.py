"""No-data pixels and excluded bands, from the files that state them to every metric, map, worst
search and results row. Each file is written by the library that writes such files (spectral for
ENVI, tifffile for GeoTIFF, h5py for NetCDF-style HDF5), from real data in tests/data, and every
number is checked against plain numpy on the pixels and bands that remain."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from app.cli import main
from app.core.cube import Cube, bands_in_ranges, parse_nm_ranges
from app.core.errors import HsiError, NonFiniteError
from app.core.evaluation.analysis import worst_band, worst_pixels
from app.core.evaluation.compare import compare
from app.core.io import open_cube
from app.core.science import metrics, metrics_cpu
from tests.core.test_metrics import ref_ssim_bands
from tests.qt.conftest import food_array

DATA = Path(__file__).resolve().parents[1] / "data"
ENGINES = ["torch", "fused"] if metrics_cpu.available() else ["torch"]


# ---------------------------------------------------------------------------------- the reference
def ref_metrics(gt, pred, nodata, excluded, scale=None):
    """Textbook formulas in float64 over the pixels not in ``nodata`` and the bands not ``excluded``."""
    g = np.clip(np.asarray(gt, np.float64), 0, 1)[..., ~excluded]
    p = np.clip(np.asarray(pred, np.float64), 0, 1)[..., ~excluded]
    valid = ~nodata
    d = (p - g)[valid]                                    # (n, B')
    mse_b = (d ** 2).mean(axis=0)
    out = {"psnr_db": float(np.mean(10 * np.log10(1 / mse_b))), "rmse": float(np.sqrt(mse_b.mean()))}
    if scale:
        mean_g = g[valid].mean(axis=0)
        out["ergas"] = float(100 / scale * np.sqrt(np.mean((np.sqrt(mse_b) / mean_g) ** 2)))
    means = g.mean(-1)
    dark = means < 0.01 * np.percentile(means[valid], 99)
    ng, np_ = np.linalg.norm(g, axis=-1), np.linalg.norm(p, axis=-1)
    ok = valid & (ng > 0) & (np_ > 0) & ~dark
    cos = (g * p).sum(-1)[ok] / (ng[ok] * np_[ok])
    out["sam_deg"] = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    maps = ref_ssim_bands(g.astype(np.float32), p.astype(np.float32), return_maps=True)
    centres = valid[5:-5, 5:-5]
    out["ssim"] = float(np.mean([m[centres].mean() for m in maps]))
    out["rmse_map"] = np.where(valid, np.sqrt(((p - g) ** 2).mean(-1)), 0.0)
    return out


def assert_matches(res, ref, nodata, excluded):
    for key in ("psnr_db", "rmse", "sam_deg", "ssim", "ergas"):
        if key in ref:
            assert res[key] == pytest.approx(ref[key], rel=2e-5, abs=2e-6), key
    np.testing.assert_allclose(res["maps"]["rmse"], ref["rmse_map"], rtol=1e-5, atol=1e-6)
    assert res["masked_pixels"] == int(nodata.sum())
    assert res["excluded_bands"] == int(excluded.sum())
    assert res["excluded_band_indices"] == [int(i) for i in np.flatnonzero(excluded)]
    assert not res["maps"]["sam_valid"][nodata].any()
    assert (res["maps"]["sam_deg"][nodata] == 0).all() and (res["maps"]["abs_error"][nodata] == 0).all()
    assert np.isnan(res["per_band"]["psnr_db"][excluded]).all()
    assert np.isfinite(res["per_band"]["psnr_db"][~excluded]).all()
    assert res["n_pixels"] == int((~nodata).sum())
    if nodata.any():
        assert any(f"{int(nodata.sum())} no-data pixel(s) left out" in n for n in res["notes"])
    if excluded.any():
        assert any(f"{int(excluded.sum())} band(s) left out of the band means" in n for n in res["notes"])


# ---------------------------------------------------------------------------------- real files
@pytest.fixture(scope="module")
def fenix():
    """The real FENIX cube (38 x 23 pixels, uint16 counts, 'data ignore value = 0' with 10 no-data
    pixels, 450 bands 378-2504 nm): (counts (H, W, B), wavelengths)."""
    cube = open_cube(DATA / "fenix" / "image.hdr")
    counts = np.transpose(np.asarray(cube.raw), (1, 2, 0))
    return np.ascontiguousarray(counts), cube.wavelengths_nm


def _fenix_pred(counts, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    pred = (counts / 65535.0 * (1 + 0.03 * rng.standard_normal(counts.shape))).astype(np.float32)
    pred[(counts == 0).any(-1)] = 0.5  # values a reconstruction puts where the GT has no data
    return pred


def _write_envi(path, counts, wl, *, bbl=None, interleave="bil"):
    import spectral.io.envi as envi

    md = {"data ignore value": 0, "wavelength": [f"{v:.3f}" for v in wl], "wavelength units": "nm",
          "reflectance scale factor": 65535}
    if bbl is not None:
        md["bbl"] = [int(v) for v in bbl]
    envi.save_image(str(path), counts, interleave=interleave, metadata=md, force=True)
    return path


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_ignore_value_and_bbl_written_by_spectral(tmp_path, fenix, interleave):
    counts, wl = fenix
    bbl = np.ones(counts.shape[2], int)
    bbl[[0, 1, 300]] = 0  # the noisy first bands and one more
    hdr = _write_envi(tmp_path / f"gt_{interleave}.hdr", counts, wl, bbl=bbl, interleave=interleave)
    cube = open_cube(hdr)
    assert cube.is_lazy and cube.ignore_value == 0
    nodata = (counts == 0).any(-1)
    assert nodata.sum() == 10  # the file's own no-data pixels
    np.testing.assert_array_equal(cube.nodata_mask(), nodata)
    np.testing.assert_array_equal(cube.excluded_bands(), bbl == 0)
    pred = _fenix_pred(counts)
    res = metrics.compute_all(cube, pred, scale=4, device="cpu")
    assert_matches(res, ref_metrics(counts / 65535.0, pred, nodata, bbl == 0, scale=4), nodata, bbl == 0)
    # and what the masks change: counting the no-data pixels and bad bands gives another number
    plain = metrics.compute_all(cube.data, pred, scale=4, device="cpu")
    assert plain["masked_pixels"] == 0 and plain["psnr_db"] < res["psnr_db"] - 1.0
    # the mask of a loaded cube comes with the load, equal to the lazy scan
    loaded = open_cube(hdr).load()
    assert loaded._nodata is not None
    np.testing.assert_array_equal(loaded.nodata_mask(), nodata)


def test_geotiff_gdal_nodata_written_by_tifffile(tmp_path):
    import tifffile

    counts = np.load(DATA / "cave_crop_bhw.npy")  # real CAVE crop, (31, 32, 40) uint16
    refl = (counts / 65535.0).astype(np.float32)
    refl[4:6, 10, 7] = -9999.0                    # one pixel with two no-data bands
    refl[:, 20:22, 30] = -9999.0                  # two pixels with every band no-data
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, refl, photometric="minisblack", extratags=[(42113, "s", 0, "-9999", True)])
    cube = open_cube(path, layout="BHW")
    assert cube.ignore_value == -9999.0
    gt = np.transpose(refl, (1, 2, 0))
    nodata = (gt == -9999).any(-1)
    assert nodata.sum() == 3
    np.testing.assert_array_equal(cube.nodata_mask(), nodata)
    assert (cube.data[nodata] >= 0).all()          # the no-data values read as 0
    rng = np.random.default_rng(2)
    pred = np.clip(np.where(gt < 0, 0, gt) + 0.01 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    excluded = np.zeros(31, bool)
    excluded[[3, 30]] = True
    res = metrics.compute_all(cube, pred, scale=4, exclude_bands=[3, 30], device="cpu")
    assert_matches(res, ref_metrics(np.where(gt < 0, 0, gt), pred, nodata, excluded, scale=4), nodata, excluded)


def test_netcdf_style_hdf5_fill_value_and_scale_factor_written_by_h5py(tmp_path):
    import h5py

    m = sio.loadmat(DATA / "jasper_crop_2d.mat")  # real AVIRIS Jasper Ridge counts, 198 bands x (16 x 12)
    counts = m["Y"].T.reshape(int(m["nCol"].item()), int(m["nRow"].item()), -1).transpose(1, 0, 2)
    stored = counts.astype(np.int16)
    stored[3, 4, 50] = -32768
    stored[10, 2, :] = -32768
    path = tmp_path / "jasper_nc.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("reflectance", data=stored)
        ds.attrs["_FillValue"] = np.int16(-32768)
        ds.attrs["scale_factor"] = np.float32(1 / 5000)
        ds.attrs["add_offset"] = np.float32(0.0)
    cube = open_cube(path, layout="HWB")
    assert cube.ignore_value == -32768 and "scale_factor" in cube.normalisation
    nodata = (stored == -32768).any(-1)
    np.testing.assert_array_equal(cube.nodata_mask(), nodata)
    gt = np.where(stored == -32768, 0, stored) * np.float32(1 / 5000)
    np.testing.assert_allclose(cube.data, gt, rtol=1e-6)
    pred = (gt * (1 + 0.03 * np.random.default_rng(3).standard_normal(gt.shape))).astype(np.float32)
    res = metrics.compute_all(cube, pred, device="cpu")
    assert_matches(res, ref_metrics(gt, pred, nodata, np.zeros(198, bool)), nodata, np.zeros(198, bool))


def test_nan_cube_with_nonfinite_mask(tmp_path):
    gt = food_array()[:64, :72].copy()
    gt[7, 9, 3] = np.nan
    gt[30, 40, :] = np.inf  # (a real CAVE crop, 64 x 72: its band axis is the short one)
    np.save(tmp_path / "nan.npy", gt)
    with pytest.raises(NonFiniteError):
        open_cube(tmp_path / "nan.npy").load()
    cube = open_cube(tmp_path / "nan.npy", nonfinite="mask")
    nodata = ~np.isfinite(gt).all(-1)
    np.testing.assert_array_equal(cube.nodata_mask(), nodata)
    assert np.isfinite(cube.data).all() and cube.data[7, 9, 3] == 0
    clean = np.where(np.isfinite(gt), gt, 0).astype(np.float32)
    pred = np.clip(clean + 0.02, 0, 1).astype(np.float32)
    res = metrics.compute_all(cube, pred, device="cpu")
    assert_matches(res, ref_metrics(clean, pred, nodata, np.zeros(31, bool)), nodata, np.zeros(31, bool))
    zero = open_cube(tmp_path / "nan.npy", nonfinite="zero")  # read as 0 and counted, as before
    assert not zero.nodata_mask().any()


# ---------------------------------------------------------------------------------- the metrics
def test_roi_mask_and_nodata_together_and_region(fenix):
    counts, _ = fenix
    gt = counts / np.float32(65535)
    pred = _fenix_pred(counts)
    nodata = (counts == 0).any(-1)
    roi = np.zeros(nodata.shape, bool)
    roi[2:30, 1:20] = True
    res = metrics.compute_all(gt, pred, mask=roi, nodata=nodata, device="cpu")
    ref = ref_metrics(gt, pred, nodata | ~roi, np.zeros(gt.shape[2], bool))
    for key in ("psnr_db", "rmse", "sam_deg", "ssim"):
        assert res[key] == pytest.approx(ref[key], rel=2e-5), key
    assert res["masked"] and res["masked_pixels"] == int((nodata & roi).sum()) and res["n_pixels"] == int((roi & ~nodata).sum())
    crop = metrics.compute_all(gt, pred, region=(0, 20, 0, 23), nodata=nodata, device="cpu")
    assert crop["masked_pixels"] == int(nodata[:20].sum())
    with pytest.raises(metrics.MetricsError, match="no-data"):
        metrics.compute_all(gt, pred, nodata=np.ones(nodata.shape, bool), device="cpu")
    with pytest.raises(metrics.MetricsError, match="every one of the"):
        metrics.compute_all(gt, pred, exclude_bands=np.ones(gt.shape[2], bool), device="cpu")


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    monkeypatch.setattr(metrics, "_use_fused",
                        lambda device, engine="auto": request.param == "fused" and device.type == "cpu")
    return request.param


def test_engines_agree_with_masks_per_output(engine):
    gt = np.ascontiguousarray(food_array()[:64, :72])
    rng = np.random.default_rng(5)
    preds = [np.clip(gt + 0.02 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32),
             np.ascontiguousarray(np.roll(gt, 1, axis=2))]
    common = np.zeros(gt.shape[:2], bool)
    common[10:14, 20:30] = True
    own = np.zeros(gt.shape[:2], bool)
    own[40, 5:60] = True
    excluded = np.zeros(31, bool)
    excluded[[0, 15, 16]] = True
    many = metrics.compute_all_many(gt, preds, scale=4, band_index=15, nodata=[common, common | own],
                                    exclude_bands=excluded, device="cpu")
    for pred, nd, res in zip(preds, [common, common | own], many):
        one = metrics.compute_all(gt, pred, scale=4, band_index=15, nodata=nd, exclude_bands=excluded, device="cpu")
        for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc"):
            assert res[key] == pytest.approx(one[key], rel=1e-5), key
        for key in ("psnr_db", "rmse", "ssim"):
            np.testing.assert_allclose(res["per_band"][key], one["per_band"][key], rtol=1e-5)
        np.testing.assert_array_equal(res["maps"]["sam_valid"], one["maps"]["sam_valid"])
        np.testing.assert_allclose(res["maps"]["abs_error"], one["maps"]["abs_error"], atol=1e-7)  # band 15: excluded
        np.testing.assert_allclose(res["maps"]["rmse"], one["maps"]["rmse"], rtol=1e-5, atol=1e-7)
        assert res["notes"] == one["notes"] and res["masked_pixels"] == int(nd.sum()) == one["masked_pixels"]
        assert_matches(res, ref_metrics(gt, pred, nd, excluded, scale=4), nd, excluded)
    scores = metrics.ssim_many(gt, preds, nodata=[common, common | own], exclude_bands=excluded, device="cpu")
    for (mean, per_band), res in zip(scores, many):
        assert mean == pytest.approx(res["ssim"], rel=1e-6)
        np.testing.assert_allclose(per_band, res["per_band"]["ssim"], rtol=1e-6)
    # no mask at all: the unmasked pass, unchanged
    plain = metrics.compute_all_many(gt, preds, device="cpu")
    assert all(r["masked_pixels"] == 0 and r["excluded_bands"] == 0 for r in plain)


def test_worst_pixel_and_band_ignore_masked(fenix):
    counts, _ = fenix
    gt = counts / np.float32(65535)
    pred = _fenix_pred(counts)
    nodata = (counts == 0).any(-1)
    excluded = np.zeros(gt.shape[2], bool)
    excluded[:3] = True
    plain = metrics.compute_all(gt, pred, device="cpu")
    worst_plain = worst_pixels(plain["maps"]["rmse"])[0]
    assert nodata[worst_plain]  # the 0.5s where the GT has no data decide the unmasked search
    res = metrics.compute_all(gt, pred, nodata=nodata, exclude_bands=excluded, device="cpu")
    for value_map, valid in ((res["maps"]["rmse"], ~nodata), (res["maps"]["sam_deg"], res["maps"]["sam_valid"])):
        for r, c in worst_pixels(value_map, 20, valid):
            assert not nodata[r, c]
    k = worst_band(res["per_band"]["psnr_db"], "psnr_db")
    assert k is not None and not excluded[k]
    assert worst_band(plain["per_band"]["psnr_db"], "psnr_db", exclude=excluded) not in np.flatnonzero(excluded)


def test_exclude_band_ranges():
    assert parse_nm_ranges("1340-1460, 1790-1960,2500") == [(1340, 1460), (1790, 1960), (2500, 2500)]
    wl = np.array([1300.0, 1340.0, 1400.0, 1460.0, 1500.0, 2500.0])
    np.testing.assert_array_equal(bands_in_ranges(wl, "1340-1460,2500"), [False, True, True, True, False, True])
    for bad in ("1340-", "a", "1460-1340"):
        with pytest.raises(HsiError, match="--exclude-bands"):
            parse_nm_ranges(bad)
    with pytest.raises(HsiError, match="--exclude-bands .*no wavelengths"):
        Cube.from_array(np.zeros((2, 2, 3))).excluded_bands("400-500")


# ---------------------------------------------------------------------------------- the commands
def test_compare_and_info_end_to_end_show_the_counts(tmp_path, fenix, capsys):
    counts, wl = fenix
    bbl = np.ones(counts.shape[2], int)
    bbl[[0, 1]] = 0
    gt_hdr = _write_envi(tmp_path / "scene.hdr", counts, wl, bbl=bbl)
    pred = _fenix_pred(counts)
    pred[5, 5, :] = np.nan  # a prediction with a hole of its own
    np.save(tmp_path / "scene_pred.npy", pred)
    report = tmp_path / "r.json"
    rc = main(["compare", "--gt", str(gt_hdr), "--pred", str(tmp_path / "scene_pred.npy"), "--scale", "4",
               "--exclude-bands", "1340-1460,1790-1960", "--nonfinite", "mask", "--device", "cpu",
               "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    row = json.loads(report.read_text())["results"][0]
    nodata = (counts == 0).any(-1)
    nodata[5, 5] = True
    excluded = (bbl == 0) | bands_in_ranges(wl, "1340-1460,1790-1960")
    n_excl = int(excluded.sum())
    assert row["masked_pixels"] == 11 and row["excluded_bands"] == n_excl == 54
    ref = ref_metrics(counts / 65535.0, np.nan_to_num(pred, nan=0.0), nodata, excluded, scale=4)
    for key, col in (("psnr_db", "psnr"), ("ssim", "ssim"), ("sam_deg", "sam_deg"), ("rmse", "rmse"), ("ergas", "ergas")):
        assert row[col] == pytest.approx(ref[key], rel=2e-5), key
    assert "left out 11 no-data px, 54 bands" in out
    assert any("11 no-data pixel(s) left out" in n for n in row["notes"])
    # without --nonfinite mask the NaN prediction is an error entry, as before
    doc = compare(gt_hdr, [tmp_path / "scene_pred.npy"], device="cpu")
    assert doc["errors"] and not doc["results"]
    # info says which bands the option leaves out, and the no-data pixels
    assert main(["info", str(gt_hdr), "--exclude-bands", "1340-1460,1790-1960"]) == 0
    out = capsys.readouterr().out
    assert "bands left out of the metrics: 54 of 450" in out and "no-data: value 0 in any band; 10 of 874" in out
    assert main(["info", str(gt_hdr), "--json", "--exclude-bands", "1340-1460"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nodata_pixels"] == 10 and info["excluded_bands"][:2] == [0, 1]


def test_eval_end_to_end_shows_the_counts(tmp_path, fenix, capsys):
    counts, wl = fenix
    gt_hdr = _write_envi(tmp_path / "scene.hdr", counts[:32, :20], wl)
    report = tmp_path / "e.json"
    rc = main(["eval", "--gt", str(gt_hdr), "--protocol", "bicubic-x4", "--models", "bicubic", "--device", "cpu",
               "--exclude-bands", "1340-1460", "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    row = json.loads(report.read_text())["results"][0]
    nodata = (counts[:32, :20] == 0).any(-1)
    n_excl = int(bands_in_ranges(wl, "1340-1460").sum())
    assert row["masked_pixels"] == int(nodata.sum()) > 0 and row["excluded_bands"] == n_excl
    assert math.isfinite(row["psnr"])
    assert f"left out {int(nodata.sum())} no-data px, {n_excl} bands" in out

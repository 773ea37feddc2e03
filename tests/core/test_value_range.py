"""One value-range rule (app/core/io/value_range.py) and compare's numbers on real counts.

The literature's convention for real scenes stored as counts: divide GT and prediction by the GT's
maximum. A prediction written by other code is either float in [0, 1] (already divided by the GT's
maximum) or in the GT's own counts; both must give the same MPSNR as numpy computes directly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from app.core.evaluation.compare import compare
from app.core.inference.sample import load_sample_gt
from app.core.io.value_range import (RangeUndecided, ValueRange, decide, decide_prediction, parse_user_range)

DATA = Path(__file__).resolve().parents[1] / "data"


def mpsnr(gt, pred):
    """Independent numpy reference: both clipped to [0, 1], PSNR per band, mean over bands."""
    g, p = np.clip(gt.astype(np.float64), 0, 1), np.clip(pred.astype(np.float64), 0, 1)
    mse = ((g - p) ** 2).mean(axis=(0, 1))
    return float(np.mean(10 * np.log10(1.0 / mse)))


@pytest.fixture(scope="module")
def jasper_counts():
    """The real AVIRIS Jasper Ridge crop: uint16 counts, maximum 4091 (its file states maxValue 5000)."""
    m = sio.loadmat(DATA / "jasper_crop_2d.mat")
    y = m["Y"]                                      # (198, 192) bands x pixels, Fortran pixel order
    h, w = int(m["nRow"][0, 0]), int(m["nCol"][0, 0])
    return y.T.reshape(w, h, -1).transpose(1, 0, 2).copy()   # (16, 12, 198) uint16


# ---------------------------------------------------------------------------------- the rule itself
def test_integer_counts_without_a_stated_scale_are_divided_by_their_maximum():
    r = decide(np.dtype("uint16"), max_of=lambda: 4091.0)
    assert r.rule == "max" and r.multiplier == pytest.approx(1 / 4091) and "maximum 4091" in r.text
    stated = ValueRange(1 / 5000, 0.0, "stated", "divided by the file's maxValue 5000")
    assert decide(np.dtype("uint16"), max_of=lambda: 4091.0, stated=stated) is stated
    floats = decide(np.dtype("float32"), max_of=lambda: 1.9, sample_max=1.9)
    assert floats.rule == "unit" and floats.multiplier == 1.0
    radiance = decide(np.dtype("float32"), max_of=lambda: 812.5, sample_max=800.0)
    assert radiance.rule == "max" and radiance.multiplier == pytest.approx(1 / 812.5)
    forced = decide(np.dtype("uint16"), max_of=lambda: 4091.0, user="10000")
    assert forced.rule == "user" and forced.multiplier == pytest.approx(1e-4) and "forced" in forced.text


@pytest.mark.parametrize("bad", ["inf", "nan", "0", "-3", "banana", float("inf")])
def test_a_divisor_that_is_not_a_positive_finite_number_is_refused(bad):
    with pytest.raises(ValueError):
        parse_user_range(bad)


def test_a_prediction_goes_onto_its_gts_scale_by_the_mean_ratio():
    gt = ValueRange(1 / 4091, 0.0, "max", "uint16 values divided by their maximum 4091")
    gt_mean = 0.25
    counts = decide_prediction(np.dtype("float32"), max_value=4300.0, mean_value=1020.0, gt=gt, gt_mean=gt_mean)
    assert counts.rule == "gt-scale" and counts.multiplier == gt.multiplier
    unit = decide_prediction(np.dtype("float32"), max_value=1.05, mean_value=0.249, gt=gt, gt_mean=gt_mean)
    assert unit.rule == "unit" and unit.multiplier == 1.0
    # a float result overshooting to 1.9 is still [0, 1] data: its mean decides, not its maximum
    overshoot = decide_prediction(np.dtype("float32"), max_value=1.9, mean_value=0.26,
                                  gt=ValueRange(1.0), gt_mean=gt_mean)
    assert overshoot.rule == "unit" and not overshoot.warnings
    with pytest.raises(RangeUndecided, match="--pred-range"):
        decide_prediction(np.dtype("float32"), max_value=2e6, mean_value=1e6, gt=ValueRange(1.0), gt_mean=0.3)
    far = decide_prediction(np.dtype("float32"), max_value=0.3, mean_value=0.02, gt=ValueRange(1.0), gt_mean=0.3)
    assert far.warnings and "x the GT's" in far.warnings[0]


# ---------------------------------------------------------------------------------- compare on real counts
def test_compare_real_counts_with_predictions_as_unit_floats_and_as_counts(tmp_path, jasper_counts):
    """Real uint16 counts far below 65535: predictions written as float divided by the GT's maximum and
    as counts in the GT's units both give the literature's MPSNR (both divided by the GT's maximum)."""
    gt = jasper_counts
    top = float(gt.max())
    rng = np.random.default_rng(7)
    pred_counts = np.clip(gt.astype(np.float64) * rng.normal(1.0, 0.03, gt.shape), 0, None)
    np.save(tmp_path / "jasper.npy", gt)                                           # uint16 GT, no stated scale
    (tmp_path / "unit").mkdir()
    (tmp_path / "counts").mkdir()
    np.save(tmp_path / "unit" / "jasper.npy", (pred_counts / top).astype(np.float32))
    np.save(tmp_path / "counts" / "jasper.npy", np.round(pred_counts).astype(np.uint16))
    expected_unit = mpsnr(gt / top, (pred_counts / top).astype(np.float32))
    expected_counts = mpsnr(gt / top, np.round(pred_counts) / top)
    # (16 x 12 pixels: too few for the reader to tell the band axis by itself; the layout is given)
    doc = compare(tmp_path / "jasper.npy", [tmp_path / "unit", tmp_path / "counts"], gt_layout="HWB", layout="HWB",
                  device="cpu")
    assert not doc["errors"], doc["errors"]
    rows = {r["model"]: r for r in doc["results"]}
    assert rows["unit"]["psnr"] == pytest.approx(expected_unit, abs=0.1)
    assert rows["counts"]["psnr"] == pytest.approx(expected_counts, abs=0.1)
    assert rows["unit"]["range"] == "unit" and rows["counts"]["range"] == "gt-scale"
    assert "maximum 4091" in rows["counts"]["gt_range_rule"]
    assert 30 < expected_unit < 50  # a realistic figure (the old /65535 rule gave ~ 60 dB here)


def test_compare_reads_a_gt_with_its_stated_scale_factor_as_every_reader_does(tmp_path, jasper_counts):
    """A NetCDF-style HDF5 GT (real counts, scale_factor 1e-4 and add_offset 0.002 as attributes): compare
    takes the file's own scale like open_cube, not the GT's maximum; predictions as reflectance floats
    and as counts in the GT's units both give the MPSNR of numpy on the stated reflectance."""
    import h5py

    from app.core.io import open_cube

    gt = jasper_counts
    refl = gt * 1e-4 + 0.002
    rng = np.random.default_rng(11)
    pred_counts = np.clip(gt.astype(np.float64) * rng.normal(1.0, 0.03, gt.shape), 0, None)
    with h5py.File(tmp_path / "jasper.h5", "w") as f:
        d = f.create_dataset("reflectance", data=gt)
        d.attrs["scale_factor"], d.attrs["add_offset"] = 1e-4, 0.002
    (tmp_path / "refl").mkdir()
    (tmp_path / "counts").mkdir()
    np.save(tmp_path / "refl" / "jasper.npy", (pred_counts * 1e-4 + 0.002).astype(np.float32))
    np.save(tmp_path / "counts" / "jasper.npy", np.round(pred_counts).astype(np.uint16))
    assert open_cube(tmp_path / "jasper.h5", layout="HWB").data == pytest.approx(refl.astype(np.float32), abs=1e-6)
    doc = compare(tmp_path / "jasper.h5", [tmp_path / "refl", tmp_path / "counts"], gt_layout="HWB", layout="HWB",
                  device="cpu")
    assert not doc["errors"], doc["errors"]
    rows = {r["model"]: r for r in doc["results"]}
    assert rows["refl"]["psnr"] == pytest.approx(mpsnr(refl, pred_counts * 1e-4 + 0.002), abs=0.01)
    assert rows["counts"]["psnr"] == pytest.approx(mpsnr(refl, np.round(pred_counts) * 1e-4 + 0.002), abs=0.01)
    assert "scale_factor" in rows["refl"]["gt_range_rule"] or "stated" in rows["refl"]["gt_range_rule"]


def test_a_float_prediction_overshooting_to_1_9_is_read_as_unit_data(tmp_path):
    gt = load_sample_gt().data[:96, :96].copy()     # real CAVE reflectance in [0, 1]
    rng = np.random.default_rng(3)
    pred = gt + rng.normal(0, 0.01, gt.shape).astype(np.float32)
    pred[::7, ::5, :] = 1.9      # component-substitution style overshoot
    pred[1::9, ::4, :] = -0.15
    np.save(tmp_path / "scene.npy", gt)
    (tmp_path / "cs").mkdir()
    np.save(tmp_path / "cs" / "scene.npy", pred)
    doc = compare(tmp_path / "scene.npy", [tmp_path / "cs"], device="cpu", gt_layout="HWB", layout="HWB")
    assert not doc["errors"], doc["errors"]
    row = doc["results"][0]
    assert row["range"] == "unit"
    assert row["psnr"] == pytest.approx(mpsnr(gt, pred), abs=0.01)


def test_the_viewer_puts_reconstructions_from_files_on_the_gts_scale(tmp_path, jasper_counts):
    """In the viewer a reconstruction stored as counts is read in its GT's units (/GT maximum) and one
    stored as unit floats stays, whichever was opened first; the analysis then reports the
    literature's PSNR."""
    from app.core.evaluation.analysis import make_request, run_analysis
    from app.core.io import open_cube
    from app.core.state.scene import Scene

    gt = jasper_counts
    top = float(gt.max())
    pred_counts = np.round(np.clip(gt * np.random.default_rng(2).normal(1.0, 0.03, gt.shape), 0, None))
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "counts.npy", pred_counts.astype(np.uint16))
    np.save(tmp_path / "unit.npy", (pred_counts / top).astype(np.float32))
    opened = {name: open_cube(tmp_path / f"{name}.npy", layout="HWB") for name in ("gt", "counts", "unit")}
    # on its own a uint16 file is divided by its own maximum, which is not the GT's
    assert opened["counts"].scale == pytest.approx(1 / pred_counts.max())
    for order in (("gt", "counts", "unit"), ("counts", "unit", "gt")):
        scene = Scene()
        for name in order:
            scene.add_layer(opened[name], "gt" if name == "gt" else "recon", name=name)
        recons = {l.name: l.cube for l in scene.layers_with_role("recon")}
        assert recons["counts"].scale == pytest.approx(1 / top) and "GT's units" in recons["counts"].normalisation
        assert recons["unit"].scale == 1.0
        result = run_analysis(make_request(scene, "cpu"))
        psnr = {row["name"]: row["psnr_db"] for row in result.table()}
        expected = mpsnr(gt / top, pred_counts / top)
        assert psnr["counts"] == pytest.approx(expected, abs=0.01)
        assert psnr["unit"] == pytest.approx(mpsnr(gt / top, (pred_counts / top).astype(np.float32)), abs=0.01)


def test_compare_takes_a_number_as_the_range_and_refuses_nonsense(tmp_path, jasper_counts, capsys):
    """`compare --gt-range N --pred-range N` divides both by N (a user's override), and a range that is
    neither a name nor a positive number is an argparse error naming the option."""
    from app.cli import main

    gt = jasper_counts
    pred = np.round(gt * 0.97).astype(np.uint16)
    np.save(tmp_path / "jasper.npy", gt)
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "jasper.npy", pred)
    out = tmp_path / "r.json"
    assert main(["compare", "--gt", str(tmp_path / "jasper.npy"), "--pred", str(tmp_path / "m"), "--gt-layout", "HWB",
                 "--layout", "HWB", "--gt-range", "5000", "--pred-range", "5000", "--device", "cpu",
                 "--json", str(out)]) == 0
    import json

    row = json.loads(out.read_text())["results"][0]
    assert row["psnr"] == pytest.approx(mpsnr(gt / 5000.0, pred / 5000.0), abs=0.01) and row["range"] == "user"
    with pytest.raises(SystemExit) as info:
        main(["compare", "--gt", str(tmp_path / "jasper.npy"), "--pred", str(tmp_path / "m"), "--pred-range", "-2"])
    assert info.value.code == 2 and "--pred-range" in capsys.readouterr().err

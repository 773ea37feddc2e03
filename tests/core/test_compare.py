"""`compare`: the same reconstruction in every format, layout and value range gives the same metrics,
equal to a plain-numpy reference; name matching; broken predictions; cropping; the CLI; the bench."""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio
import tifffile
import torch

from app.cli import main
from app.core.evaluation.compare import compare, exit_status, format_table, list_items, match_items, to_markdown, Item
from app.core.cube import Cube
from app.core.science.degrade import simulate
from app.core.io import open_cube, save_cube
from app.core.science.metrics import PSNR_CEILING_DB
from app.core.science.metrics import compute_all
from models.baselines import bicubic_upsample
from tests.conftest import DATA, SAMPLE

BEADS = DATA / "cave_beads_crop_ms"


# ---------------------------------------------------------------------------------- helpers
def bicubic_round_trip(gt: np.ndarray, scale: int = 4) -> np.ndarray:
    """The "reconstruction": bicubic down (protocol bicubic-x{s}) and up again, unclipped float32."""
    lr, _, _ = simulate(gt, f"bicubic-x{scale}", device="cpu")
    up = bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None], scale)
    return np.ascontiguousarray(up[0].permute(1, 2, 0).numpy())


def dequantise(stored: np.ndarray, top: float) -> np.ndarray:
    """Stored integers -> reflectance with the project's rule (as ``Cube`` does it: float32 values times
    float32(1 / top)), so that the GT and a prediction quantised alike give identical values."""
    return stored.astype(np.float32) * np.float32(1.0 / top)


def numpy_reference(gt: np.ndarray, pred: np.ndarray, scale: int | None = None) -> dict:
    """Independent float64 textbook formulas (protocols.md): MPSNR, SAM (arccos, dark GT pixels left out),
    RMSE, ERGAS."""
    g = np.clip(gt.astype(np.float64), 0, 1)
    p = np.clip(pred.astype(np.float64), 0, 1)
    bands = g.shape[2]
    mse = np.array([np.mean((p[..., k] - g[..., k]) ** 2) for k in range(bands)])
    ng, np_ = np.sqrt((g * g).sum(axis=2)), np.sqrt((p * p).sum(axis=2))
    means = g.mean(axis=2)  # dark GT pixels (below 1 % of the 99th percentile of pixel means) leave SAM
    valid = (ng > 0) & (np_ > 0) & (means >= 0.01 * np.percentile(means, 99))
    cos = (g * p).sum(axis=2)[valid] / (ng[valid] * np_[valid])
    out = {"psnr": float(np.mean(10 * np.log10(1.0 / mse))),
           "sam_deg": float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()),
           "rmse": float(np.sqrt(np.mean((p - g) ** 2)))}
    if scale:
        out["ergas"] = float(100.0 / scale * np.sqrt(np.mean(mse / g.mean(axis=(0, 1)) ** 2)))
    return out


def write_mat73(path: Path, arr: np.ndarray, name: str = "pred") -> Path:
    """A MATLAB v7.3 file written with h5py: MATLAB's header in the user block, axes reversed."""
    classes = {np.dtype(np.float32): "single", np.dtype(np.float64): "double", np.dtype(np.uint8): "uint8",
               np.dtype(np.uint16): "uint16"}
    with h5py.File(path, "w", userblock_size=512) as f:
        ds = f.create_dataset(name, data=np.ascontiguousarray(arr.T))
        ds.attrs["MATLAB_class"] = np.bytes_(classes[arr.dtype])
    header = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116).encode()
    with open(path, "r+b") as fh:
        fh.write(header + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


def write_envi(path: Path, arr: np.ndarray, interleave: str) -> Path:
    """ENVI with spectral directly (no reflectance scale factor: the values speak for themselves)."""
    import spectral.io.envi as envi

    envi.save_image(str(path), arr, dtype=arr.dtype, interleave=interleave, force=True, ext=".img")
    return path


def write_all_formats(folder: Path, arr_hwb: np.ndarray, tag: str) -> list[Path]:
    """``arr_hwb`` as .mat v5, .mat v7.3, .npy, ENVI and TIFF, each H x W x B and B x H x W."""
    bhw = np.ascontiguousarray(arr_hwb.transpose(2, 0, 1))
    files = []
    for lay, arr in (("hwb", arr_hwb), ("bhw", bhw)):
        p = folder / f"{tag}_{lay}_v5.mat"
        sio.savemat(p, {"pred": arr})
        files.append(p)
        files.append(write_mat73(folder / f"{tag}_{lay}_v73.mat", arr))
        p = folder / f"{tag}_{lay}.npy"
        np.save(p, arr)
        files.append(p)
        p = folder / f"{tag}_{lay}.tif"
        tifffile.imwrite(p, arr)
        files.append(p)
    files.append(write_envi(folder / f"{tag}_bip.hdr", arr_hwb, "bip"))  # H x W x B on disk
    files.append(write_envi(folder / f"{tag}_bsq.hdr", arr_hwb, "bsq"))  # B x H x W on disk
    return files


@pytest.fixture(scope="module")
def sample_gt() -> np.ndarray:
    return open_cube(SAMPLE).data


@pytest.fixture(scope="module")
def recon(sample_gt) -> np.ndarray:
    return bicubic_round_trip(sample_gt)


# ---------------------------------------------------------------------------------- formats x layouts x ranges
@pytest.mark.parametrize("value_range", ["unit", "8bit", "16bit"])
def test_every_format_and_layout_gives_the_reference_metrics(tmp_path, sample_gt, recon, value_range):
    if value_range == "unit":
        stored, dequantised = recon, recon
    else:
        top, dtype = (255, np.uint8) if value_range == "8bit" else (65535, np.uint16)
        stored = np.round(np.clip(recon, 0, 1) * top).astype(dtype)
        dequantised = dequantise(stored, top)  # its own reference, not the float original
    files = write_all_formats(tmp_path, stored, value_range)
    assert len(files) == 10
    doc = compare(SAMPLE, files, scale=4, device="cpu")
    assert not doc["errors"] and not doc["unmatched"], (doc["errors"], doc["unmatched"])
    assert len(doc["results"]) == 10
    ref = numpy_reference(sample_gt, dequantised, scale=4)
    if value_range != "unit":  # the exact rational dequantisation differs by float32 rounding only
        exact = numpy_reference(sample_gt, stored.astype(np.float64) / top)
        assert exact["psnr"] == pytest.approx(ref["psnr"], abs=1e-5)
    first = doc["results"][0]
    for row in doc["results"]:
        assert row["range"] == value_range, row
        assert row["psnr"] == pytest.approx(ref["psnr"], abs=1e-6), row["pred"]
        assert row["sam_deg"] == pytest.approx(ref["sam_deg"], abs=1e-6), row["pred"]
        assert row["rmse"] == pytest.approx(ref["rmse"], rel=1e-6)
        assert row["ergas"] == pytest.approx(ref["ergas"], rel=1e-5)
        for key in ("psnr", "ssim", "sam_deg", "ergas", "rmse"):  # the same numbers whatever the container
            assert row[key] == pytest.approx(first[key], rel=1e-9, abs=1e-12), (row["pred"], key)
    layouts = {Path(r["pred"]).name: r["layout"] for r in doc["results"]}
    assert layouts[f"{value_range}_bhw.npy"] == "BHW" and layouts[f"{value_range}_hwb.npy"] == "HWB"
    assert layouts[f"{value_range}_hwb_v73.mat"] == "HWB"  # MATLAB order for .mat files
    # the TIFF reader takes an H x W x B stack for 32 pages: the axes are fitted to the GT, and said
    tif_row = next(r for r in doc["results"] if r["pred"].endswith(f"{value_range}_hwb.tif"))
    assert any("detected against the GT" in n for n in tif_row["notes"])


def test_metrics_match_compute_all_and_ssim_of_the_core(tmp_path, sample_gt, recon):
    np.save(tmp_path / "r.npy", recon)
    doc = compare(SAMPLE, [tmp_path / "r.npy"], scale=4, device="cpu")
    m = compute_all(sample_gt, recon, scale=4, device="cpu")
    row = doc["results"][0]
    for key, core_key in (("psnr", "psnr_db"), ("ssim", "ssim"), ("sam_deg", "sam_deg"), ("ergas", "ergas")):
        assert row[key] == pytest.approx(m[core_key], rel=1e-7), key
    assert doc["summary"]["r"]["psnr"] == row["psnr"] and doc["summary"]["r"]["images"] == 1


def test_value_range_detection_and_forcing(tmp_path, sample_gt, recon):
    q8 = np.round(np.clip(recon, 0, 1) * 255)
    np.save(tmp_path / "float255.npy", q8.astype(np.float32))          # float data in 0-255
    np.save(tmp_path / "u16_holding_8bit.npy", q8.astype(np.uint16))   # 8-bit values in a uint16 array
    np.save(tmp_path / "dark16.npy", np.round(np.clip(recon, 0, 1) * 65535).astype(np.uint16))
    doc = compare(SAMPLE, sorted(tmp_path.glob("*.npy")), device="cpu")
    ranges = {r["model"]: r["range"] for r in doc["results"]}
    assert ranges == {"float255": "8bit", "u16_holding_8bit": "8bit", "dark16": "16bit"}
    assert all("detected" in r["range_rule"] for r in doc["results"])
    # forced: 0-65535 on 8-bit data is said, and the metrics follow the forced rule
    forced = compare(SAMPLE, [tmp_path / "float255.npy"], pred_range="16bit", device="cpu")
    row = forced["results"][0]
    assert row["range"] == "16bit" and "forced" in row["range_rule"]
    assert any("mean" in n for n in row.get("notes", []))  # far from the GT's mean: a warning
    ref = numpy_reference(sample_gt, dequantise(q8, 65535))
    assert row["psnr"] == pytest.approx(ref["psnr"], abs=1e-6)
    by_max = compare(SAMPLE, [tmp_path / "float255.npy"], pred_range="max", device="cpu")["results"][0]
    assert by_max["range"] == "max"
    assert by_max["psnr"] == pytest.approx(numpy_reference(sample_gt, dequantise(q8, q8.max()))["psnr"], abs=1e-6)


def test_values_in_no_known_range_are_an_error_entry(tmp_path):
    np.save(tmp_path / "huge.npy", np.full((32, 40, 31), 2.0e6, dtype=np.float32))
    doc = compare(BEADS, [tmp_path / "huge.npy"], device="cpu")
    assert not doc["results"] and "huge.npy" in doc["errors"][0]["error"]
    assert "--pred-range" in doc["errors"][0]["error"]


# ---------------------------------------------------------------------------------- matching
@pytest.mark.parametrize("gt_name,pred_name,method", [
    ("beads_ms", "beads_ms_pred", None),
    ("beads_ms", "BEADS_MS_SR", None),
    ("Beads_MS", "beads_ms-out", None),
    ("beads_ms", "beads_ms_result", None),
    ("beads_ms", "beads_sr", None),            # CAVE's _ms left out by the prediction
    ("beads_ms", "beads_ms_x4_recon", None),
    ("beads_ms", "beads_ms_mynet", "mynet"),   # the method's own name as a suffix
    ("beads_ms", "mynet_beads_ms", "mynet"),   # ... or prefix
])
def test_names_match_with_common_suffixes(gt_name, pred_name, method):
    gt = [Item(gt_name, Path(gt_name)), Item("cloth_ms", Path("cloth_ms"))]
    pairs, unmatched = match_items(gt, [Item(pred_name, Path(pred_name + ".npy"))], method)
    assert pairs == {0: Item(pred_name, Path(pred_name + ".npy"))} and unmatched == []


def test_exact_names_win_and_leftovers_are_listed():
    gt = [Item("beads_ms", Path("g/beads_ms")), Item("cloth_ms", Path("g/cloth_ms")), Item("face_ms", Path("g/face_ms"))]
    preds = [Item("beads_ms", Path("p/beads_ms.npy")), Item("beads_ms_sr", Path("p/beads_ms_sr.npy")),
             Item("cloth_pred", Path("p/cloth_pred.mat")), Item("paints_sr", Path("p/paints_sr.npy"))]
    pairs, unmatched = match_items(gt, preds)
    assert {i: p.name for i, p in pairs.items()} == {0: "beads_ms", 1: "cloth_pred"}
    reasons = {p.name: r for p, r in unmatched}
    assert "already paired" in reasons["beads_ms_sr"] and "no GT item" in reasons["paints_sr"]


def test_ambiguous_names_pair_nothing():
    gt = [Item("beads_ms", Path("beads_ms"))]
    preds = [Item("beads_sr", Path("beads_sr.npy")), Item("beads_out", Path("beads_out.npy"))]
    pairs, unmatched = match_items(gt, preds)
    assert pairs == {} and all("ambiguous" in r for _, r in unmatched)


def _beads_dataset(root: Path, names: list[str]) -> tuple[Path, np.ndarray]:
    """A GT folder of CAVE scene folders (copies of the real beads crop)."""
    gt_dir = root / "gt"
    gt_dir.mkdir()
    for n in names:
        shutil.copytree(BEADS, gt_dir / n)
    return gt_dir, open_cube(BEADS).data


def test_folder_mode_matches_by_name_and_lists_unmatched(tmp_path, capsys):
    gt_dir, gt = _beads_dataset(tmp_path, ["beads_ms", "cloth_ms", "face_ms"])
    # a cube file may sit beside the scene folders; CAVE's nested beads_ms/beads_ms/ layout works too
    save_cube(Cube.from_array(gt), gt_dir / "Paints.npy")  # its sidecar states the layout (32 x 40 x 31)
    nested = tmp_path / "nested" / "sponges_ms"
    shutil.copytree(BEADS, nested / "sponges_ms")
    shutil.move(str(nested), str(gt_dir / "sponges_ms"))
    rec = np.clip(gt + 0.01 * np.sin(np.arange(gt.size, dtype=np.float32)).reshape(gt.shape), 0, 1)
    pred_dir = tmp_path / "mynet"
    pred_dir.mkdir()
    np.save(pred_dir / "BEADS_MS_pred.npy", rec)
    sio.savemat(pred_dir / "cloth_sr.mat", {"x": rec})
    save_cube(Cube.from_array(rec), pred_dir / "paints_result.hdr")
    np.save(pred_dir / "sponges_ms_out.npy", rec)
    np.save(pred_dir / "unrelated_sr.npy", rec)
    (pred_dir / "README.txt").write_text("notes")
    report = tmp_path / "out.json"
    code = main(["compare", "--gt", str(gt_dir), "--pred", str(pred_dir), "--scale", "4", "--device", "cpu",
                 "--json", str(report)])
    assert code == 1  # face_ms has no prediction
    doc = json.loads(report.read_text())
    assert [r["image"] for r in doc["results"]] == ["beads_ms", "cloth_ms", "Paints", "sponges_ms"]
    assert {r["model"] for r in doc["results"]} == {"mynet"}
    psnrs = {r["psnr"] for r in doc["results"]}
    assert max(psnrs) - min(psnrs) < 1e-9
    unmatched = {(u["side"], u["image"]) for u in doc["unmatched"]}
    assert unmatched == {("gt", "face_ms"), ("pred", "unrelated_sr")}
    assert any(p.endswith("README.txt") for p in doc["ignored"])
    captured = capsys.readouterr()
    assert "face_ms" in captured.err and "unrelated_sr" in captured.out


def test_single_files_are_paired_whatever_their_names(tmp_path, sample_gt, recon):
    np.save(tmp_path / "gt_cube.npy", sample_gt)
    np.save(tmp_path / "output.npy", recon)
    doc = compare(tmp_path / "gt_cube.npy", [tmp_path / "output.npy"], names=["bicubic"], device="cpu")
    assert doc["results"][0]["image"] == "gt_cube" and doc["results"][0]["model"] == "bicubic"
    assert doc["results"][0]["psnr"] == pytest.approx(numpy_reference(sample_gt, recon)["psnr"], abs=1e-6)


# ---------------------------------------------------------------------------------- bad input
def test_broken_predictions_are_listed_and_the_rest_is_written(tmp_path, capsys):
    gt_dir, gt = _beads_dataset(tmp_path, ["a_ms", "b_ms", "c_ms", "d_ms", "e_ms", "f_ms"])
    rec = np.clip(gt * 0.98 + 0.005, 0, 1).astype(np.float32)
    pred = tmp_path / "net"
    pred.mkdir()
    np.save(pred / "a_ms_sr.npy", rec)                                   # good
    bad = rec.copy()
    bad[3, 4, 5] = np.nan
    np.save(pred / "b_ms_sr.npy", bad)                                   # NaN
    np.save(pred / "c_ms_sr.npy", rec[:, :, :30])                         # band count
    np.save(pred / "d_ms_sr.npy", rec[:20, :33])                          # shape
    (pred / "e_ms_sr.npy").write_bytes(b"\x93NUMPY garbage, not an array")  # unreadable
    np.save(pred / "f_ms_sr.npy", rec[::-1].copy())                      # good (flipped)
    report, table_csv, table_md = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md"
    code = main(["compare", "--gt", str(gt_dir), "--pred", str(pred), "--device", "cpu", "--json", str(report),
                 "--csv", str(table_csv), "--md", str(table_md)])
    assert code == 1
    doc = json.loads(report.read_text())
    assert [r["image"] for r in doc["results"]] == ["a_ms", "f_ms"]
    errors = {e["image"]: e["error"] for e in doc["errors"]}
    assert set(errors) == {"b_ms", "c_ms", "d_ms", "e_ms"}
    for image, fragment in (("b_ms", "NaN"), ("c_ms", "30 bands"), ("d_ms", "20x33"), ("e_ms", "")):
        assert f"{image}_sr.npy" in errors[image] and fragment in errors[image]
        assert "\n" not in errors[image]
    assert doc["summary"]["net"]["images"] == 2 and doc["summary"]["net"]["errors"] == 4
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 4 and all("_sr.npy" in ln for ln in err_lines)
    rows = list(csv.DictReader(table_csv.open()))
    assert [r["image"] for r in rows][:6] == ["a_ms", "b_ms", "c_ms", "d_ms", "e_ms", "f_ms"]
    assert rows[1]["psnr"] == "" and "NaN" in rows[1]["error"]
    assert "Errors:" in table_md.read_text()


def test_unreadable_gt_fails_its_entries_only(tmp_path):
    gt_dir, gt = _beads_dataset(tmp_path, ["a_ms"])
    (gt_dir / "b.npy").write_bytes(b"not a cube at all")
    pred = tmp_path / "p"
    pred.mkdir()
    np.save(pred / "a_ms.npy", gt)
    np.save(pred / "b.npy", gt)
    doc = compare(gt_dir, [pred], device="cpu")
    assert [r["image"] for r in doc["results"]] == ["a_ms"]
    assert doc["errors"][0]["image"] == "b" and "b.npy" in doc["errors"][0]["error"]
    assert exit_status(doc) == 1


@pytest.mark.parametrize("argv,fragment", [
    (["compare", "--gt", "nowhere", "--pred", "x.npy"], "no such file"),
    (["compare", "--gt", str(BEADS), "--pred", str(BEADS), "--pred", str(BEADS)], "named"),
    (["compare", "--gt", str(BEADS), "--pred", str(BEADS), "--name", "a", "--name", "b"], "names"),
])
def test_unusable_arguments_give_one_line_error(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and fragment in err


def test_cuda_asked_without_cuda_is_an_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["compare", "--gt", str(BEADS), "--pred", str(BEADS), "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- shapes and crops
def test_smaller_prediction_needs_crop(tmp_path):
    gt = open_cube(BEADS).data  # 32 x 40
    rec = np.clip(gt + 0.01, 0, 1)
    np.save(tmp_path / "border.npy", rec[2:-2, 3:-3])       # a 2/3-pixel border shaved off
    np.save(tmp_path / "multiple.npy", rec[:30, :39])       # GT cropped to a multiple of 3 (top-left)
    files = [tmp_path / "border.npy", tmp_path / "multiple.npy"]
    doc = compare(BEADS, files, scale=3, device="cpu")
    assert not doc["results"] and len(doc["errors"]) == 2
    assert all("--crop" in e["error"] for e in doc["errors"])
    doc = compare(BEADS, files, scale=3, crop=True, device="cpu")
    assert not doc["errors"]
    rows = {r["model"]: r for r in doc["results"]}
    assert rows["border"]["crop"] == {"rows": [2, 30], "cols": [3, 37]}
    assert rows["multiple"]["crop"] == {"rows": [0, 30], "cols": [0, 39]}
    assert "multiple of the scale 3" in rows["multiple"]["notes"][0]
    assert rows["border"]["psnr"] == pytest.approx(
        compute_all(gt[2:-2, 3:-3], rec[2:-2, 3:-3], device="cpu")["psnr_db"], rel=1e-9)
    assert rows["border"]["psnr"] == pytest.approx(numpy_reference(gt[2:-2, 3:-3], rec[2:-2, 3:-3])["psnr"], abs=1e-5)
    assert rows["multiple"]["ergas"] == pytest.approx(
        compute_all(gt[:30, :39], rec[:30, :39], scale=3, device="cpu")["ergas"], rel=1e-9)


def test_larger_prediction_is_never_broadcast(tmp_path):
    gt = open_cube(BEADS).data
    np.save(tmp_path / "big.npy", np.pad(gt, ((1, 1), (1, 1), (0, 0))))
    doc = compare(BEADS, [tmp_path / "big.npy"], crop=True, device="cpu")
    assert "larger" in doc["errors"][0]["error"]


def test_ambiguous_layout_is_resolved_against_the_gt(tmp_path):
    gt = open_cube(BEADS).data  # 32 x 40 x 31: no axis is clearly the band axis by itself
    sio.savemat(tmp_path / "bhw.mat", {"pred": np.ascontiguousarray(gt.transpose(2, 0, 1))})
    np.save(tmp_path / "bhw.npy", np.ascontiguousarray(gt.transpose(2, 0, 1)))
    doc = compare(BEADS, [tmp_path / "bhw.mat", tmp_path / "bhw.npy"], device="cpu")
    assert not doc["errors"]
    assert all(r["layout"] == "BHW" and r["psnr"] == PSNR_CEILING_DB for r in doc["results"])


# ---------------------------------------------------------------------------------- output
def test_cli_table_json_schema_per_band_and_formats(tmp_path, capsys, sample_gt, recon):
    a, b = tmp_path / "bicubic", tmp_path / "better"
    a.mkdir(), b.mkdir()
    np.save(a / "fake_and_real_food_ms_sr.npy", recon)
    np.save(b / "fake_and_real_food_ms_sr.npy", (recon + sample_gt) / 2)
    report, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["compare", "--gt", str(SAMPLE), "--pred", str(a), "--pred", str(b), "--name", "bic",
                 "--device", "cpu", "--per-band", "--json", str(report), "--md", str(md)]) == 0
    doc = json.loads(report.read_text())
    assert set(doc) >= {"results", "summary", "errors"}
    for row in doc["results"]:
        assert set(row) >= {"image", "model", "psnr", "ssim", "sam_deg", "ergas", "rmse"}
        assert row["ergas"] is None  # no --scale
        assert len(row["per_band"]["psnr"]) == 31 and len(row["per_band"]["wavelengths_nm"]) == 31
    assert set(doc["summary"]) == {"bic", "better"}
    assert set(doc["summary"]["bic"]) >= {"psnr", "ssim", "sam_deg", "ergas", "rmse"}
    assert any("ERGAS" in n for n in doc["notes"])
    out = capsys.readouterr().out
    table = out.split("wrote")[0]
    better_mean = next(ln for ln in table.splitlines() if ln.startswith("mean") and " better " in ln)
    assert better_mean.count("*") == 4  # best PSNR, SSIM, SAM, RMSE (ERGAS is absent)
    assert "mean (1 image)" in table and "best per column" in table
    assert "**" in md.read_text()


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--help"])
    assert info.value.code == 0 and "--pred-range" in capsys.readouterr().out


def test_list_items_skips_sidecars_and_envi_data(tmp_path):
    save_cube(Cube.from_array(np.zeros((4, 5, 3), np.float32)), tmp_path / "a.hdr")
    save_cube(Cube.from_array(np.zeros((4, 5, 3), np.float32)), tmp_path / "b.npy")  # + b.npy.json
    side = list_items(tmp_path)
    assert [i.name for i in side.items] == ["a", "b"] and side.ignored == []


def test_format_table_and_markdown_mark_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 3, 31), np.float32))
    doc = compare(BEADS, [tmp_path / "x.npy"], device="cpu")
    assert "failed (see errors)" in format_table(doc)
    assert "Errors:" in to_markdown(doc)


# ---------------------------------------------------------------------------------- speed
def test_bench_compare_small(tmp_path):
    from app.bench.compare import bench_compare

    started = time.perf_counter()
    result = bench_compare(tmp_path, n_scenes=1)
    assert set(result) >= {"compare_s", "numpy_s", "ratio", "scenes", "methods"}
    assert result["scenes"] == 1 and result["methods"] == 2 and result["errors"] == 0
    assert result["psnr"]["noisy"] == pytest.approx(40.0, abs=1.0)  # sigma 0.01 noise, clipped
    assert time.perf_counter() - started < 60


def test_one_stem_twice_in_the_gt_folder_stays_two_images(tmp_path):
    gt = open_cube(BEADS).data
    gt_dir, pred = tmp_path / "gt", tmp_path / "p"
    gt_dir.mkdir(), pred.mkdir()
    save_cube(Cube.from_array(gt), gt_dir / "beads.npy")
    save_cube(Cube.from_array(gt), gt_dir / "beads.mat")
    np.save(pred / "beads_sr.npy", gt)
    seen = []
    doc = compare(gt_dir, [pred], device="cpu", on_progress=lambda done, total, row: seen.append((done, total)))
    assert doc["images"] == ["beads.mat", "beads.npy"]
    assert not doc["results"] and seen == [(0, 0)]
    assert {u["side"] for u in doc["unmatched"]} == {"gt", "pred"}
    assert "ambiguous" in next(u["reason"] for u in doc["unmatched"] if u["side"] == "pred")
    assert exit_status(doc) == 1

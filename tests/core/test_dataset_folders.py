"""Dataset folders of cube files (issue 22 item 4): `eval --gt FOLDER`, `compare` and
`train --data FOLDER` on a folder of MATLAB files made from the real CAVE crop, written the way
public datasets ship them (scipy v5 and HDF5-based v7.3 files, the cube under ``ref`` beside a
second array of the same size, so that ``--var`` must pick it in every file)."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import scipy.io as sio

from app.cli import main
from app.core.inference import training
from app.core.inference.batch import evaluate, gt_items
from app.core.io import open_cube
from app.core.io.datasets import dataset_items, scene_name
from tests.conftest import DATA

CAVE_NM = np.arange(400.0, 701.0, 10.0)


def cave_u16() -> np.ndarray:
    return np.load(DATA / "cave_crop.npz")["cube"]  # the real 32 x 40 x 31 CAVE beads crop, uint16


def write_mat73(path, arrays: dict) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with the 512-byte header, axes stored reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            ds = f.create_dataset(name, data=np.ascontiguousarray(arr.T))
            ds.attrs["MATLAB_class"] = np.bytes_("double" if arr.dtype == np.float64 else "uint16")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Dec  2 12:00:00 2026 HDF5 schema 1.00 ."
                 .ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


@pytest.fixture
def mat_folder(tmp_path):
    """Three scenes: float64 in [0, 1] (v5), uint16 counts (v5), float64 (v7.3); each also holds
    'decoy', an array of the cube's size (a second cube in the file, as some datasets ship)."""
    cave = cave_u16()
    ref = cave.astype(np.float64) / cave.max()
    root = tmp_path / "harvard_like"
    root.mkdir()
    sio.savemat(root / "beads_a.mat", {"ref": ref, "decoy": ref[::-1].copy()})
    sio.savemat(root / "beads_b.mat", {"ref": cave[:, 4:36].copy(), "decoy": cave[:, 4:36].copy()})
    write_mat73(root / "beads_c.mat", {"ref": ref[::-1, ::-1].copy(), "decoy": ref})
    (root / "README.txt").write_text("not a cube")
    return root


# ------------------------------------------------------------------------------ discovery
def test_dataset_items_finds_cube_files_and_scene_folders(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    shutil.copytree(DATA / "cave_beads_crop_ms", root / "beads_ms")                   # a scene folder
    shutil.copytree(DATA / "cave_beads_crop_ms", root / "nested_ms" / "nested_ms")    # CAVE's nesting
    shutil.copy(DATA / "fenix_bip.hdr", root / "fenix.hdr")
    shutil.copy(DATA / "fenix_bip.img", root / "fenix.img")                            # data beside its header
    shutil.copy(DATA / "cave_crop.npz", root / "crop.npz")
    shutil.copy(DATA / "jasper_crop.h5", root / "jasper.h5")
    (root / "crop.npz.json").write_text("{}")
    (root / ".hidden.mat").write_bytes(b"")
    (root / "notes").mkdir()
    items = dataset_items(root)
    assert [scene_name(p) for p in items] == ["beads_ms", "crop", "fenix", "jasper", "nested_ms"]
    assert items[-1] == root / "nested_ms" / "nested_ms"
    assert dataset_items(root / "beads_ms") == [root / "beads_ms"]  # a scene folder is one item
    assert [open_cube(p).bands for p in items] == [31, 31, 90, 198, 31]


def test_a_folder_without_cubes_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(Exception, match="no ground-truth cube") as info:
        gt_items([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(info.value)


# ------------------------------------------------------------------------------ eval
def test_eval_on_a_folder_of_mat_files(mat_folder, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--gt", str(mat_folder), "--protocol", "bicubic-x4", "--models", "bicubic",
                 "--device", "cpu", "--var", "ref", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = doc["results"]
    assert [(r["image"], r["model"]) for r in rows] == [("beads_a", "bicubic"), ("beads_b", "bicubic"),
                                                         ("beads_c", "bicubic")]
    assert all(20 < r["psnr"] < 40 and "error" not in r for r in rows)
    # each row is the one of that file alone: v5 floats, v5 counts (divided by the maximum), v7.3
    for name in ("beads_a", "beads_b", "beads_c"):
        alone = evaluate([mat_folder / f"{name}.mat"], "bicubic-x4", ["bicubic"], device="cpu",
                         read_options={"var": "ref"})
        assert alone["results"][0]["psnr"] == next(r["psnr"] for r in rows if r["image"] == name)
    # a flipped scene has the metrics of the scene (bicubic commutes with flips); a crop does not
    assert rows[2]["psnr"] == pytest.approx(rows[0]["psnr"], abs=1e-3)
    assert rows[1]["psnr"] != pytest.approx(rows[0]["psnr"], abs=1e-3)


def test_eval_without_var_names_the_choice_in_each_row(mat_folder, capsys):
    assert main(["eval", "--gt", str(mat_folder), "--protocol", "bicubic-x4", "--models", "bicubic",
                 "--device", "cpu"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 3 and all("--var" in ln and "ref" in ln and ".mat" in ln for ln in err)


def test_eval_wavelengths_file_applies_to_every_gt(mat_folder, tmp_path):
    side = tmp_path / "cave_nm.txt"
    side.write_text("wavelength_nm\n" + "\n".join(f"{w:g}" for w in CAVE_NM) + "\n")
    doc = evaluate([mat_folder], "bicubic-x4", ["bicubic"], device="cpu", exclude_bands="395-425",
                   read_options={"var": "ref", "wavelengths": str(side)})
    assert [r["excluded_bands"] for r in doc["results"]] == [3, 3, 3]  # 400, 410 and 420 nm


# ------------------------------------------------------------------------------ compare
def test_compare_gt_folder_of_mat_with_prediction_folder(mat_folder, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    truth = {p.stem: open_cube(p, var="ref").data for p in sorted(mat_folder.glob("*.mat"))}
    for stem, gt in truth.items():  # predictions as a method writes them: .mat, H x W x B, under another name
        noisy = np.clip(gt + rng.normal(0, 0.01, gt.shape), 0, 1).astype(np.float32)
        sio.savemat(preds / f"{stem}_sr.mat", {"pred": noisy})
    out = tmp_path / "cmp.json"
    assert main(["compare", "--gt", str(mat_folder), "--gt-var", "ref", "--pred", str(preds), "--device", "cpu",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["image"] for r in doc["results"]] == ["beads_a", "beads_b", "beads_c"]
    assert not doc["errors"] and not [u for u in doc["unmatched"] if u["side"] == "gt"]
    for r in doc["results"]:  # noise sigma 0.01 on [0, 1] data: PSNR about 40 dB
        assert 38 < r["psnr"] < 42


# ------------------------------------------------------------------------------ train
def _train_argv(data, tmp_path, *extra):
    return ["train", "--model", "cst", "--config", "small", "--data", str(data), "--protocol", "bicubic-x4",
            "--iters", "2", "--batch", "2", "--patch", "32", "--val-every", "2", "--ckpt-every", "100",
            "--threads", "1", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "w" / "cst.safetensors"),
            *extra]


def test_train_on_a_folder_of_mat_files(mat_folder, tmp_path, capsys):
    assert main(_train_argv(mat_folder, tmp_path, "--split", "none", "--val", "1", "--var", "ref")) == 0
    out = capsys.readouterr().out
    assert "2 training + 1 validation scenes" in out and "to step 2" in out
    meta = training.read_weights_metadata(tmp_path / "w" / "cst.safetensors")
    assert json.loads(meta["train_scenes"]) == ["beads_a", "beads_b"]
    assert json.loads(meta["validation_scenes"]) == ["beads_c"]


def test_a_split_file_names_file_scenes_by_stem(mat_folder, tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"train": ["beads_c", "beads_a"], "val": ["beads_b"], "report": []}))
    train, val = training.split_data(mat_folder, 1, str(own))
    assert train == [mat_folder / "beads_c.mat", mat_folder / "beads_a.mat"] and val == [mat_folder / "beads_b.mat"]
    scene = training.load_scene(val[0], "bicubic-x4", read_options={"var": "ref"})
    assert scene.name == "beads_b" and tuple(scene.gt.shape) == (31, 32, 32)
    counts = cave_u16()[:, 4:36]  # uint16 counts read by the value-range rule (divided by their maximum)
    np.testing.assert_allclose(scene.gt.numpy(), np.moveaxis(counts / counts.max(), 2, 0), atol=1e-6)


def test_training_scenes_must_agree_on_bands_and_names(mat_folder, tmp_path, capsys):
    # the real Jasper Ridge crop (198 bands) among the 31-band scenes
    sio.savemat(mat_folder / "jasper.mat", {"ref": open_cube(DATA / "jasper_crop_2d.mat").data})
    assert main(_train_argv(mat_folder, tmp_path, "--split", "none", "--val", "1", "--var", "ref")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "jasper" in err[0] and "31 bands" in err[0]
    (mat_folder / "jasper.mat").unlink()
    np.save(mat_folder / "beads_a.npy", np.zeros((32, 32, 31), np.float32))  # a second file named beads_a
    with pytest.raises(training.TrainingError, match="beads_a"):
        training.split_data(mat_folder, 1, "none")

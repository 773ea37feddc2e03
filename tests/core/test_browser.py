"""Dataset browser state: compare and eval results files on real CAVE crops, sorting with the metric's
direction, best method per image, means, colour scale, bad files, and opening an image exactly as
compare read it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from app.cli import main
from app.core.evaluation.results import (HIGHER_IS_BETTER, ResultsError, load_results, load_scene, parse_results)
from app.core.evaluation.compare import CompareCancelled, compare
from app.core.science.degrade import simulate
from app.core.errors import MissingFileError
from models.baselines import bicubic_upsample
from tests.conftest import DATA, SAMPLE

BEADS = DATA / "cave_beads_crop_ms"
# (name, source folder, top, left) of the real CAVE crops in the test dataset: 32 x 40 x 31 each
CROPS = (("beads_ms", BEADS, 0, 0), ("food_pepper_ms", SAMPLE, 60, 60), ("food_apple_ms", SAMPLE, 150, 120))
CROP_HW = (32, 40)
NOISE_SIGMA = 0.03


def read_png_folder(folder: Path, top: int = 0, left: int = 0) -> np.ndarray:
    """Plain reading of a CAVE PNG folder (16-bit bands / 65535), independent of app.core.io."""
    h, w = CROP_HW
    bands = [np.asarray(Image.open(p), dtype=np.float32)[top:top + h, left:left + w] * np.float32(1 / 65535.0)
             for p in sorted(folder.glob("*.png"))]
    return np.stack(bands, axis=-1)


def bicubic_round_trip(gt: np.ndarray, scale: int = 4) -> np.ndarray:
    lr, _, _ = simulate(gt, f"bicubic-x{scale}", device="cpu")
    up = bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None], scale)
    return np.ascontiguousarray(up[0].permute(1, 2, 0).numpy())


def make_dataset(root: Path) -> dict:
    """A GT folder of 3 real CAVE crops (PNG scene folders) and two methods: ``bicubic`` (x4 round trip,
    float32 H x W x B .npy named <scene>_sr.npy) and ``noisy`` (the same plus Gaussian noise, stored as
    uint16 0-65535 B x H x W in .mat files named <scene>.mat).

    Returns {'gt': folder, 'bicubic': folder, 'noisy': folder, 'arrays': {scene: {'gt', 'bicubic', 'noisy'}}}
    where the arrays are what a reader must get (the noisy one as stored / 65535)."""
    gt_dir, bic_dir, noisy_dir = root / "gt", root / "bicubic", root / "noisy"
    for d in (gt_dir, bic_dir, noisy_dir):
        d.mkdir(parents=True)
    rng = np.random.default_rng(7)
    arrays = {}
    h, w = CROP_HW
    for name, src, top, left in CROPS:
        folder = gt_dir / name
        folder.mkdir()
        stored = [np.asarray(Image.open(p))[top:top + h, left:left + w] for p in sorted(src.glob("*.png"))]
        for k, band in enumerate(stored):
            Image.fromarray(np.ascontiguousarray(band)).save(folder / f"{name}_{k + 1:02d}.png")
        gt = read_png_folder(folder)
        bic = bicubic_round_trip(gt)
        np.save(bic_dir / f"{name}_sr.npy", bic)
        noisy16 = np.round(np.clip(bic + NOISE_SIGMA * rng.standard_normal(bic.shape), 0, 1) * 65535).astype(np.uint16)
        sio.savemat(noisy_dir / f"{name}.mat", {"pred": np.ascontiguousarray(noisy16.transpose(2, 0, 1))})
        arrays[name] = {"gt": gt, "bicubic": bic, "noisy": noisy16.astype(np.float32) * np.float32(1 / 65535.0)}
    return {"gt": gt_dir, "bicubic": bic_dir, "noisy": noisy_dir, "arrays": arrays}


def run_compare(dataset: dict, out: Path, **kwargs) -> Path:
    """`compare` through the CLI (as a user runs it) with --json ``out``; returns ``out``."""
    argv = ["compare", "--gt", str(dataset["gt"]), "--pred", str(dataset["bicubic"]), "--pred",
            str(dataset["noisy"]), "--scale", "4", "--device", "cpu", "--json", str(out)]
    for key, value in kwargs.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    code = main(argv)
    assert code in (0, 1)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return make_dataset(tmp_path_factory.mktemp("browser_ds"))


@pytest.fixture(scope="module")
def compare_json(dataset, tmp_path_factory) -> Path:
    return run_compare(dataset, tmp_path_factory.mktemp("browser_json") / "results.json")


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser_eval") / "eval.json"
    assert main(["eval", "--gt", str(BEADS), "--protocol", "bicubic-x4", "--models", "bicubic",
                 "--device", "cpu", "--json", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------- loading
def test_compare_json_loads_as_images_by_methods(compare_json, dataset):
    doc = json.loads(compare_json.read_text())
    table = load_results(compare_json)
    assert table.kind == "compare" and table.source == compare_json
    assert table.images == ["beads_ms", "food_apple_ms", "food_pepper_ms"]  # compare's (sorted) order
    assert table.methods == ["bicubic", "noisy"]
    assert table.metrics == ("psnr", "ssim", "sam_deg", "ergas", "rmse")
    assert len(table.entries) == 6 and not table.problems
    for row in doc["results"]:
        e = table.entry(row["image"], row["model"])
        for key in ("psnr", "ssim", "sam_deg", "ergas", "rmse"):
            assert e.value(key) == row[key]
        # compare's rows carry absolute paths of both files (what the viewer opens)
        assert e.gt_path == dataset["gt"] / row["image"] and e.gt_path.is_absolute()
        assert e.pred_path.parent == dataset[row["model"]] and e.pred_path.exists()
    assert doc["options"] == {"var": None, "layout": None, "pred_range": "auto", "gt_var": None, "gt_layout": None,
                              "gt_range": "auto", "nonfinite": "error", "crop": False}
    assert table.options["pred_range"] == "auto" and table.scale == 4
    assert table.entry("beads_ms", "noisy").range == "16bit" and table.entry("beads_ms", "noisy").layout == "BHW"
    long = table.long_rows()
    assert len(long) == 6 and long[0]["image"] == "beads_ms" and long[0]["method"] == "bicubic"
    assert long[0]["psnr"] == doc["results"][0]["psnr"]


def test_pivot_per_metric(compare_json):
    doc = json.loads(compare_json.read_text())
    table = load_results(compare_json)
    sam = table.pivot("sam_deg")
    assert sam.shape == (3, 2)
    for row in doc["results"]:
        assert sam[table.images.index(row["image"]), table.methods.index(row["model"])] == row["sam_deg"]
    with pytest.raises(ValueError, match="unknown metric"):
        table.pivot("psnr_db")


def test_eval_json_loads_and_says_it_cannot_open(eval_json):
    doc = json.loads(eval_json.read_text())
    table = load_results(eval_json)
    assert table.kind == "eval" and table.protocol == "bicubic-x4"
    assert table.images == ["cave_beads_crop_ms"] and table.methods == ["bicubic"]
    assert table.value("cave_beads_crop_ms", "bicubic", "psnr") == doc["results"][0]["psnr"]
    assert "seconds" in table.metrics
    assert table.best_methods("cave_beads_crop_ms", "psnr") == []  # one method: nothing to compare
    assert "eval" in table.can_open()
    with pytest.raises(ResultsError, match="no files to open"):
        table.scene_request("cave_beads_crop_ms")


def test_skipped_eval_rows_and_compare_errors_become_problems(tmp_path, dataset):
    doc = {"protocol": "gauss-x8", "device": "cpu", "results": [
        {"image": "a", "model": "m1", "psnr": 30.0, "ssim": 0.9, "sam_deg": 3.0, "ergas": 2.0, "rmse": 0.03,
         "seconds": 0.5},
        {"image": "a", "model": "m2", "seconds": 0.0, "skipped": "needs an RGB guide"}], "summary": {}}
    table = parse_results(doc)
    assert table.methods == ["m1", "m2"] and [e.method for e in table.entries] == ["m1"]
    assert table.problems == [("a", "m2", "skipped: needs an RGB guide")]
    # compare with one broken prediction: the others are loaded, the error is listed
    broken = tmp_path / "broken"
    shutil.copytree(dataset["noisy"], broken)
    (broken / "food_apple_ms.mat").write_bytes(b"MATLAB 5.0 MAT-file, broken")
    out = tmp_path / "r.json"
    assert main(["compare", "--gt", str(dataset["gt"]), "--pred", str(dataset["bicubic"]), "--pred", str(broken),
                 "--device", "cpu", "--json", str(out)]) == 1
    table = load_results(out)
    assert len(table.entries) == 5 and "ergas" not in table.metrics  # no --scale
    (image, method, text), = table.problems
    assert (image, method) == ("food_apple_ms", "broken") and "food_apple_ms.mat" in text
    assert table.means()["broken"]["images"] == 2
    request = table.scene_request("food_apple_ms")
    assert [m for m, _ in request.preds] == ["bicubic"]
    assert len(request.problems) == 1 and "food_apple_ms.mat" in request.problems[0]


@pytest.mark.parametrize("content,fragment", [
    (b"{not json", "not valid JSON (line 1"),
    (b"\xff\xfe\x00binary", "not UTF-8"),
    (b'{"hello": "world"}', "not compare/eval results"),
    (b'[1, 2, 3]', "not compare/eval results"),
    (b'{"results": [{"image": "a", "psnr": 3}]}', "row 1 has no 'image' and 'model'"),
    (b'{"results": [{"image": "a", "model": "m", "psnr": 1}, {"image": "a", "model": "m", "psnr": 2}]}',
     "two results for method 'm'"),
])
def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(ResultsError) as info:
        load_results(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MissingFileError, match="no such results file") as info:
        load_results(tmp_path / "nowhere.json")
    assert str(tmp_path / "nowhere.json") in str(info.value)
    with pytest.raises(ResultsError, match="is a folder"):
        load_results(tmp_path)


# ---------------------------------------------------------------------------------- ranking
@pytest.mark.parametrize("metric", ["psnr", "ssim", "sam_deg", "ergas", "rmse"])
def test_sorting_follows_the_metrics_direction(compare_json, metric):
    doc = json.loads(compare_json.read_text())
    table = load_results(compare_json)
    values = [e.value(metric) for e in table.sorted_entries(metric)]
    expected = sorted((r[metric] for r in doc["results"]), reverse=HIGHER_IS_BETTER[metric])
    assert values == expected
    assert [e.value(metric) for e in table.sorted_entries(metric, best_first=False)] == expected[::-1]
    best = table.sorted_entries(metric)[0]
    # noise makes every metric worse: the best row of the whole table is a bicubic one
    assert best.method == "bicubic"


def test_sorting_by_name_and_missing_values_last():
    doc = {"results": [{"image": "b", "model": "m", "psnr": 30.0, "sam_deg": None},
                       {"image": "a", "model": "m", "psnr": 20.0, "sam_deg": 2.0},
                       {"image": "c", "model": "m", "psnr": 25.0, "sam_deg": 4.0}]}
    table = parse_results(doc)
    assert [e.image for e in table.sorted_entries("sam_deg")] == ["a", "c", "b"]
    assert [e.image for e in table.sorted_entries("sam_deg", best_first=False)] == ["c", "a", "b"]
    assert [e.image for e in table.sorted_entries("image")] == ["a", "b", "c"]
    assert [e.image for e in table.sorted_entries("image", best_first=False)] == ["c", "b", "a"]
    assert table.means()["m"]["sam_deg"] is None  # a partial mean would not compare
    assert table.means()["m"]["psnr"] == pytest.approx(25.0)


def test_best_method_per_image_and_means(compare_json):
    doc = json.loads(compare_json.read_text())
    table = load_results(compare_json)
    for image in table.images:
        rows = {r["model"]: r for r in doc["results"] if r["image"] == image}
        for metric in ("psnr", "ssim", "sam_deg", "ergas", "rmse"):
            pick = max if HIGHER_IS_BETTER[metric] else min
            expected = pick(rows, key=lambda m: rows[m][metric])
            assert table.best_methods(image, metric) == [expected]
            assert table.is_best(image, expected, metric)
        assert table.best_methods(image, "psnr") == ["bicubic"]
    means = table.means()
    for method in table.methods:
        assert means[method]["images"] == 3
        for metric in ("psnr", "ssim", "sam_deg", "ergas", "rmse"):
            values = [r[metric] for r in doc["results"] if r["model"] == method]
            assert means[method][metric] == pytest.approx(float(np.mean(values)), rel=1e-12)
            assert means[method][metric] == pytest.approx(doc["summary"][method][metric], rel=1e-12)
    assert table.best_mean_methods("sam_deg") == ["bicubic"]


def test_ties_share_the_best_mark():
    table = parse_results({"results": [{"image": "a", "model": "x", "psnr": 30.0},
                                       {"image": "a", "model": "y", "psnr": 30.0},
                                       {"image": "a", "model": "z", "psnr": 29.0}]})
    assert table.best_methods("a", "psnr") == ["x", "y"]


def test_colour_scale_is_normalised_per_metric(compare_json):
    doc = json.loads(compare_json.read_text())
    table = load_results(compare_json)
    for metric in ("psnr", "sam_deg"):
        scale = table.colour_scale(metric)
        assert scale.shape == (3, 2) and np.nanmin(scale) == 0.0 and np.nanmax(scale) == 1.0
        values = [r[metric] for r in doc["results"]]
        best = (max if HIGHER_IS_BETTER[metric] else min)(values)
        worst = (min if HIGHER_IS_BETTER[metric] else max)(values)
        assert table.colour_value(metric, best) == 1.0 and table.colour_value(metric, worst) == 0.0
        mid = (best + worst) / 2
        assert table.colour_value(metric, mid) == pytest.approx(0.5)
        # the same value is good for PSNR and bad for SAM: the direction is the metric's
        row = table.entries[0]
        t = table.colour_value(metric, row.value(metric))
        lo, hi = min(values), max(values)
        frac = (row.value(metric) - lo) / (hi - lo)
        assert t == pytest.approx(frac if HIGHER_IS_BETTER[metric] else 1 - frac)
    assert table.colour_value("psnr", None) is None


# ---------------------------------------------------------------------------------- opening
def test_scene_request_and_load_scene_read_like_compare(compare_json, dataset):
    table = load_results(compare_json)
    request = table.scene_request("food_pepper_ms")
    assert request.gt_path == dataset["gt"] / "food_pepper_ms"
    assert [(m, p.name) for m, p in request.preds] == [("bicubic", "food_pepper_ms_sr.npy"),
                                                       ("noisy", "food_pepper_ms.mat")]
    assert request.scale == 4 and request.options["pred_range"] == "auto"
    opened = load_scene(request)
    arrays = dataset["arrays"]["food_pepper_ms"]
    assert opened.gt.name == "food_pepper_ms" and opened.gt.shape == (32, 40, 31)
    np.testing.assert_array_equal(opened.gt.data, arrays["gt"])
    assert [m for m, _ in opened.recons] == ["bicubic", "noisy"]
    np.testing.assert_array_equal(opened.recons[0][1].data, arrays["bicubic"])
    # the uint16 B x H x W .mat comes back as H x W x B reflectance, as compare read it
    np.testing.assert_array_equal(opened.recons[1][1].data, arrays["noisy"])
    assert "0-65535" in opened.recons[1][1].normalisation
    assert not opened.problems
    with pytest.raises(ResultsError, match="no image named 'nope'"):
        table.scene_request("nope")


def test_moved_files_are_named_and_relative_paths_resolve_beside_the_json(tmp_path, dataset):
    root = tmp_path / "copy"
    shutil.copytree(dataset["gt"].parent, root)
    out = run_compare({k: root / dataset[k].name for k in ("gt", "bicubic", "noisy")}, root / "results.json")
    doc = json.loads(out.read_text())
    for row in doc["results"]:  # as if written with relative paths, from the JSON's folder
        row["gt_path"] = str(Path(row["gt_path"]).relative_to(root))
        row["pred"] = str(Path(row["pred"]).relative_to(root))
    out.write_text(json.dumps(doc))
    table = load_results(out)
    request = table.scene_request("beads_ms")
    assert request.gt_path == root / "gt" / "beads_ms" and request.preds[1][1] == root / "noisy" / "beads_ms.mat"
    # an older compare file without per-row GT paths: the GT is found in the GT folder by name
    for row in doc["results"]:
        del row["gt_path"]
    doc["gt"] = str(root / "gt")
    table = parse_results(doc, source=out)
    assert table.scene_request("beads_ms").gt_path == root / "gt" / "beads_ms"
    shutil.rmtree(root / "gt" / "beads_ms")
    with pytest.raises(ResultsError, match="no longer there|does not say where"):
        load_results(out).scene_request("beads_ms")
    (root / "noisy" / "food_apple_ms.mat").unlink()
    request = load_results(out).scene_request("food_apple_ms")
    assert [m for m, _ in request.preds] == ["bicubic"]
    assert "food_apple_ms.mat" in request.problems[0] and "no longer there" in request.problems[0]


def test_cropped_comparison_opens_the_same_part_of_the_gt(tmp_path, dataset):
    pred = tmp_path / "border"
    pred.mkdir()
    arrays = dataset["arrays"]
    for name in arrays:
        np.save(pred / f"{name}_sr.npy", arrays[name]["bicubic"][2:-2, 3:-3])  # 28 x 34: a border removed
    out = tmp_path / "r.json"
    assert main(["compare", "--gt", str(dataset["gt"]), "--pred", str(pred), "--crop", "--device", "cpu",
                 "--json", str(out)]) == 0
    table = load_results(out)
    assert table.options["crop"] is True
    opened = load_scene(table.scene_request("beads_ms"))
    np.testing.assert_array_equal(opened.gt.data, arrays["beads_ms"]["gt"][2:-2, 3:-3])
    np.testing.assert_array_equal(opened.recons[0][1].data, arrays["beads_ms"]["bicubic"][2:-2, 3:-3])
    assert any("border removed" in n for n in opened.notes)


# ---------------------------------------------------------------------------------- compare's hooks
def test_compare_reports_progress_and_can_be_cancelled(dataset):
    seen = []
    doc = compare(dataset["gt"], [dataset["bicubic"], dataset["noisy"]], device="cpu",
                  on_progress=lambda done, total, row: seen.append((done, total)))
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and len(doc["results"]) == 6
    calls = []

    def cancel_after_two():
        calls.append(1)
        return bool(seen2) and seen2[-1] >= 2  # after the second image/method pair

    seen2 = []
    with pytest.raises(CompareCancelled, match="cancelled"):
        compare(dataset["gt"], [dataset["bicubic"], dataset["noisy"]], device="cpu",
                on_progress=lambda done, total, row: seen2.append(done), should_cancel=cancel_after_two)
    assert max(seen2) == 2 and calls  # stopped right after the second pair, not at the end

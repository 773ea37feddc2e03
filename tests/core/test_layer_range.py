"""A layer's value range chosen in the viewer (issue 19): the scene rescales the layer's stored
values (shared, not copied), says the rule in a badge, warns when it looks wrong, and puts the
reconstructions on 'auto' onto a GT's new scale. Real data: the Jasper Ridge uint16 counts
(maxValue 5000 stated) and the CAVE crop stored as 16-bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from app.core.errors import HsiError
from app.core.io import open_cube
from app.core.state.scene import Scene, parse_range_choice, range_badge_text

DATA = Path(__file__).resolve().parents[1] / "data"
JASPER = DATA / "jasper_crop_2d.mat"


@pytest.fixture
def counts_pred(tmp_path) -> Path:
    mat = sio.loadmat(JASPER)
    noisy = mat["Y"].astype(np.float64) * 1.01  # 1 % brighter: the same counts, no maxValue
    path = tmp_path / "pred_counts.mat"
    sio.savemat(path, {"Y": np.round(noisy).astype(np.uint16), "nRow": mat["nRow"], "nCol": mat["nCol"]})
    return path


def jasper_scene(pred_path: Path) -> Scene:
    scene = Scene()
    scene.add_layer(open_cube(JASPER), "gt", "gt")
    scene.add_layer(open_cube(pred_path), "recon", "pred")
    return scene


def test_badges_say_the_rule(counts_pred):
    scene = jasper_scene(counts_pred)
    gt, pred = scene.layers
    assert scene.range_badge(gt).text == "stated ÷5000" and not scene.range_badge(gt).loud
    badge = scene.range_badge(pred)
    assert badge.text == "GT scale ÷5000" and not badge.loud and badge.choice == "auto"
    # the reader's own assumption (÷ its maximum, maybe reflectance x 10000) no longer holds on the GT's scale
    assert "ASSUMPTION" in " ".join(open_cube(counts_pred).metadata["warnings"])
    assert "ASSUMPTION" not in badge.tooltip
    assert pred.cube.data.mean() == pytest.approx(1.01 * gt.cube.data.mean(), rel=1e-3)


def test_override_rescales_without_copying_and_warns(counts_pred):
    scene = jasper_scene(counts_pred)
    gt, pred = scene.layers
    seen = []
    scene.events.layer_range.connect(lambda uid, choice: seen.append((uid, choice)))
    stored = pred.cube.raw
    counts = np.asarray(stored, dtype=np.float64)
    scene.set_layer_range(pred, "1000")
    assert seen == [(pred.uid, 1000.0)] and scene.layer_range(pred) == 1000.0
    assert pred.cube.raw is stored  # the same stored values
    as_stored = open_cube(counts_pred, normalise=1).data  # the reader's own path to the counts
    np.testing.assert_allclose(pred.cube.data, as_stored / 1000, rtol=1e-6)
    assert float(pred.cube.data.max()) == pytest.approx(counts.max() / 1000, rel=1e-6)
    badge = scene.range_badge(pred)
    assert badge.text == "÷1000 set" and badge.loud
    assert any("mean is" in w and "GT's" in w for w in badge.warnings)
    assert pred.cube.metadata["open_options"]["normalise"] == 1000.0  # a session reopens it so
    # far below 1: a divisor too large for the counts
    scene.set_layer_range(pred, 1e6)
    assert any("reach only" in w for w in scene.range_badge(pred).warnings)
    scene.set_layer_range(pred, "max")
    assert float(pred.cube.data.max()) == pytest.approx(1.0)
    assert scene.range_badge(pred).text == f"÷{counts.max():g} max (set)"
    scene.set_layer_range(pred, "auto")
    assert pred.cube.scale == pytest.approx(1 / 5000) and scene.range_badge(pred).text == "GT scale ÷5000"
    assert "open_options" not in pred.cube.metadata or "normalise" not in pred.cube.metadata["open_options"]


def test_gt_override_moves_auto_reconstructions_only(counts_pred):
    scene = jasper_scene(counts_pred)
    gt, pred = scene.layers
    scene.set_layer_range(gt, 4000)
    assert gt.cube.scale == pytest.approx(1 / 4000) and pred.cube.scale == pytest.approx(1 / 4000)
    assert scene.range_badge(pred).text == "GT scale ÷4000"
    scene.set_layer_range(pred, 3000)
    scene.set_layer_range(gt, "stated")
    assert gt.cube.scale == pytest.approx(1 / 5000) and scene.range_badge(gt).text == "stated ÷5000"
    assert pred.cube.scale == pytest.approx(1 / 3000)  # the user's choice stays


def test_bad_choices_are_one_line_errors(counts_pred):
    scene = jasper_scene(counts_pred)
    gt, pred = scene.layers
    with pytest.raises(HsiError, match=r"pred_counts\.mat: the file states no value range"):
        scene.set_layer_range(pred, "stated")
    for bad in ("brightest", -2, 0, float("nan"), "inf"):
        with pytest.raises(ValueError):
            scene.set_layer_range(pred, bad)
    assert pred.cube.scale == pytest.approx(1 / 5000)
    computed = scene.add_layer(gt.cube.with_data(gt.cube.data), "recon", "computed")
    assert scene.range_badge(computed).text == "unit" and not scene.range_badge(computed).can_choose
    with pytest.raises(HsiError, match="computed in the viewer"):
        scene.set_layer_range(computed, 2)
    assert parse_range_choice(" MAX ") == "max" and parse_range_choice("2.5e3") == 2500.0


def test_cave_counts_read_as_16bit_warn_when_dark(tmp_path):
    """The CAVE crop stored as uint16 reflectance x 65535, read with a divisor of 10 x too much: the
    values stay far below 1 and the badge says so; a PNG folder's convention is named."""
    cube = open_cube(DATA / "cave_crop.npz")
    scene = Scene()
    layer = scene.add_layer(cube, "gt", "cave")
    assert not scene.range_badge(layer).loud
    scene.set_layer_range(layer, 655350)
    badge = scene.range_badge(layer)
    assert badge.loud and badge.text == "÷655350 set" and "reach only" in badge.tooltip
    png = open_cube(DATA / "cave_beads_crop_ms")
    assert range_badge_text(png) == "PNG ÷65535"


def test_a_session_reopens_the_layer_with_its_range(counts_pred, tmp_path):
    from app.core.export.session import restore_session, save_session

    scene = jasper_scene(counts_pred)
    gt, pred = scene.layers
    scene.set_layer_range(pred, 2500)
    scene.set_layer_range(gt, "max")
    save_session(scene, tmp_path / "s.hsisession")
    again = Scene()
    restore_session(tmp_path / "s.hsisession", again)
    gt2, pred2 = again.layers
    assert pred2.cube.scale == pytest.approx(1 / 2500) and gt2.cube.scale == pytest.approx(1 / 4091)
    assert again.range_badge(pred2).text == "÷2500 user" and again.range_badge(gt2).text == "÷4091 max"

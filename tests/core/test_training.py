"""The generic training pipeline and `main.py train`, on two scene folders cut from a real CAVE crop."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from app.cli import main
from app.core.inference import training
from tests.conftest import DATA


@pytest.fixture
def scenes(tmp_path):
    """A data folder with two CAVE-style scene folders (copies of the real 32x40 CAVE crop)."""
    root = tmp_path / "cave"
    root.mkdir()
    shutil.copytree(DATA / "cave_beads_crop_ms", root / "a_ms")
    shutil.copytree(DATA / "cave_beads_crop_ms", root / "b_ms")
    return root


def _argv(scenes, tmp_path, iters, *extra):
    return ["train", "--model", "cst", "--config", "small", "--data", str(scenes), "--protocol", "bicubic-x4",
            "--val", "1", "--iters", str(iters), "--batch", "2", "--patch", "32", "--val-every", "2",
            "--ckpt-every", "100", "--threads", "1", "--run-dir", str(tmp_path / "run"),
            "--out", str(tmp_path / "w" / "cst.safetensors"), *extra]


def _ckpt(tmp_path):
    return torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_three_iterations_write_checkpoint_and_weights(scenes, tmp_path, capsys):
    assert main(_argv(scenes, tmp_path, 3)) == 0
    out = capsys.readouterr().out
    assert "1 training + 1 validation scenes" in out and "to step 3" in out
    ck = _ckpt(tmp_path)
    assert ck["step"] == 3 and ck["model_name"] == "cst" and ck["protocol"] == "bicubic-x4"
    assert set(ck) >= {"model", "optimizer", "gen_state", "torch_rng"}
    meta = training.read_weights_metadata(tmp_path / "w" / "cst.safetensors")
    assert meta["step"] == "3" and meta["validation_scenes"] == '["b_ms"]'
    import app
    assert json.loads(meta["software"])["version"] == app.__version__  # which version trained these weights
    from safetensors.torch import load_file
    w = load_file(str(tmp_path / "w" / "cst.safetensors"))
    assert all(v.dtype == torch.float16 for v in w.values() if v.is_floating_point())


def test_resume_continues_where_it_stopped_and_matches_one_run(scenes, tmp_path, capsys):
    # constant learning rate: 3 steps + 2 resumed steps must equal 5 steps in one go (RNG states restored)
    assert main(_argv(scenes, tmp_path, 3, "--schedule", "constant")) == 0
    assert main(_argv(scenes, tmp_path, 5, "--schedule", "constant", "--resume")) == 0
    assert "checkpoint.pt at step 3" in capsys.readouterr().out
    resumed = _ckpt(tmp_path)
    assert resumed["step"] == 5
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    assert main(_argv(scenes, straight_dir, 5, "--schedule", "constant")) == 0
    straight = _ckpt(straight_dir)
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=1e-4, atol=1e-6)


def test_resume_from_weights_when_no_checkpoint(scenes, tmp_path, capsys):
    assert main(_argv(scenes, tmp_path, 2)) == 0
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert main(_argv(scenes, tmp_path, 3, "--resume")) == 0
    assert "resumed from the weights" in capsys.readouterr().out
    assert _ckpt(tmp_path)["step"] == 3


def test_resuming_from_weights_starts_a_new_time_budget(scenes, tmp_path, capsys):
    """Weights made by an hour of training: --resume --time-limit trains that long again (the time
    of the weights is not this run's), and the weights' metadata keeps the total."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    assert main(_argv(scenes, tmp_path, 2)) == 0
    (tmp_path / "run" / "checkpoint.pt").unlink()
    weights = tmp_path / "w" / "cst.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["elapsed_s"] = "3600.0"  # an hour already
    save_file(tensors, str(weights), metadata=meta)
    assert main(_argv(scenes, tmp_path, 4, "--resume", "--time-limit", "30")) == 0
    out = capsys.readouterr().out
    assert "60.0 min of earlier training" in out
    assert _ckpt(tmp_path)["step"] == 4  # trained on: the hour of the weights is not this run's budget
    with safe_open(str(weights), "pt") as f:
        assert float(f.metadata()["elapsed_s"]) > 3600.0


@pytest.mark.parametrize("change,fragment", [
    (("--data", "NOPE"), "no such folder"),
    (("--protocol", "blur-x4"), "unknown protocol"),
    (("--val", "2"), "cannot hold out 2"),
    (("--model", "nosuchnet"), "unknown model"),
    (("--patch", "30"), "multiple of the scale"),
])
def test_bad_options_give_one_line_errors(scenes, tmp_path, capsys, change, fragment):
    argv = _argv(scenes, tmp_path, 1)
    key, value = change
    if key == "--data":
        value = str(tmp_path / value)
    argv[argv.index(key) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0]


def test_data_without_scene_folders_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_argv(tmp_path / "empty", tmp_path, 1)) == 2
    assert "no scene folders" in capsys.readouterr().err


def test_loss_terms_have_known_values():
    x = torch.rand(2, 5, 6, 7, generator=torch.Generator().manual_seed(0)) + 0.1
    # zero up to the acos clamp (acos(1 - 1e-7) = 4.5e-4 rad, times 0.3/pi)
    assert float(training.hsi_loss(x, x)) == pytest.approx(0.0, abs=5e-5)
    a = torch.zeros(1, 2, 1, 1)
    b = torch.zeros(1, 2, 1, 1)
    a[0, 0] = 1.0
    b[0, 1] = 1.0
    assert float(training.sam_rad(a, b)) == pytest.approx(math.pi / 2, abs=1e-3)
    assert float(training.sam_rad(a, 3 * a)) == pytest.approx(0.0, abs=1e-3)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).repeat(1, 1, 2, 1)
    g = training.gradient_magnitude(ramp)
    assert float(g[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-5)      # dx = 1 only
    assert float(g[0, 0, 0, 3]) == pytest.approx(1e-3, abs=1e-5)     # sqrt(1e-6) at the border


def test_eight_dihedral_transforms_are_distinct_and_aligned():
    x = torch.arange(12.0).view(1, 3, 4)
    outs = {tuple(training.dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    # an HR patch and its LR pixel-block stay aligned under every transform
    hr = torch.arange(16.0).view(1, 4, 4)
    lr = hr.view(1, 2, 2, 2, 2).mean(dim=(2, 4))
    for k in range(8):
        t_hr = training.dihedral(hr, k)
        np.testing.assert_allclose(t_hr.view(1, 2, 2, 2, 2).mean(dim=(2, 4)).numpy(),
                                   training.dihedral(lr, k).numpy())


# ----------------------------------------------------------------------------- reproducible runs


def _run(scenes, tmp_path, name, iters, *extra):
    """One invocation of a tiny CST run with a cosine schedule; returns its checkpoint."""
    argv = _argv(scenes, tmp_path / name, iters, "--schedule", "cosine", "--lr-rate", "1e-3", *extra)
    assert main(argv) == 0
    return _ckpt(tmp_path / name)


def _assert_same_weights(a, b):
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6)


def test_a_run_resumed_in_pieces_equals_one_run_and_the_seed_decides(scenes, tmp_path, capsys):
    """Cosine schedule over 5 iterations: stopped by --time-limit after 1 iteration, then by
    --stop-after after 2 more, then resumed to the end, the weights equal one uninterrupted run;
    the stops change nothing about the schedule or the random streams."""
    straight = _run(scenes, tmp_path, "straight", 5)
    piece = _run(scenes, tmp_path, "pieces", 5, "--time-limit", "1e-9")
    assert piece["step"] == 1
    piece = _run(scenes, tmp_path, "pieces", 5, "--resume", "--stop-after", "2")
    assert piece["step"] == 3
    piece = _run(scenes, tmp_path, "pieces", 5, "--resume")
    assert piece["step"] == 5 and "resumed from" in capsys.readouterr().out
    _assert_same_weights(straight, piece)
    again = _run(scenes, tmp_path, "again", 5)
    _assert_same_weights(straight, again)
    other = _run(scenes, tmp_path, "other", 5, "--seed", "3001")
    assert any(not torch.allclose(other["model"][k], v) for k, v in straight["model"].items())


def test_early_stopping_keeps_the_best_validation_and_resumes_with_it(scenes, tmp_path, monkeypatch, capsys):
    """Validation after every step, scripted: the best is step 2 (31.0 dB); 31.005 at step 5 is not a
    gain of 0.01 dB, so with --early-stop 3 the run stops after step 5, and --keep best writes step 2's
    weights (equal to a run stopped after 2 steps); best.safetensors says which step it holds."""
    from safetensors.torch import load_file

    scores = iter([30.0, 31.0, 30.5, 30.9, 31.005, 40.0, 40.0])
    monkeypatch.setattr(training, "validate", lambda *a, **k: (next(scores), 29.0))
    run = _run(scenes, tmp_path, "early", 20, "--val-every", "1", "--early-stop", "3", "--keep", "best")
    out = capsys.readouterr().out
    assert run["step"] == 5 and run["best_step"] == 2 and run["since_best"] == 3
    assert "early stop: 3 validations without a gain" in out and "best validation's weights (step 2" in out
    best_meta = training.read_weights_metadata(tmp_path / "early" / "run" / "best.safetensors")
    assert best_meta["best_step"] == "2" and best_meta["step"] == "2"
    kept = load_file(str(tmp_path / "early" / "w" / "cst.safetensors"))
    monkeypatch.setattr(training, "validate", lambda *a, **k: (30.0, 29.0))
    two = _run(scenes, tmp_path, "two", 20, "--stop-after", "2")
    two_w = load_file(str(tmp_path / "two" / "w" / "cst.safetensors"))
    assert kept.keys() == two_w.keys() and all(torch.equal(kept[k], two_w[k]) for k in kept)
    # resuming an early-stopped run stops at once (the count is in the checkpoint) and keeps the best
    again = _run(scenes, tmp_path, "early", 20, "--val-every", "1", "--early-stop", "3", "--keep", "best", "--resume")
    assert again["step"] == 5 and again["best_step"] == 2
    # --keep last (the default) leaves the last step's weights in --out
    scores = iter([30.0, 29.0, 29.0, 29.0])
    monkeypatch.setattr(training, "validate", lambda *a, **k: (next(scores), 29.0))
    last = _run(scenes, tmp_path, "last", 20, "--val-every", "1", "--early-stop", "2")
    assert last["step"] == 3 and last["best_step"] == 1
    assert training.read_weights_metadata(tmp_path / "last" / "w" / "cst.safetensors")["step"] == "3"
    capsys.readouterr()
    assert main(_argv(scenes, tmp_path / "bad", 3, "--early-stop", "0")) == 2
    assert capsys.readouterr().err.strip() == "error: --early-stop 0: give a positive number of validations"


def test_a_model_with_its_own_random_training_step_resumes_exactly(scenes, tmp_path, monkeypatch):
    """MulSR draws bands, random degradations and noise in training_step: from the trainer's seeded,
    checkpointed generator (every batch re-simulated here, so the degradations are exercised)."""
    from models.mulsr import MulSR

    monkeypatch.setattr(MulSR, "augment_p", 1.0)

    def opts(name, **kw):
        return training.TrainOptions(model="mulsr", data=str(scenes), protocol="mulsr-x8", val=1, iters=4, batch=2,
                                     patch=16, lr_rate=1e-3, val_every=2, ckpt_every=100, threads=1,
                                     run_dir=str(tmp_path / name / "run"), out=str(tmp_path / name / "w.safetensors"),
                                     model_options={"config": {"width": 4, "blocks": 1, "base": "guided",
                                                               "upsample": "bicubic"}}, **kw)

    quiet = lambda *_: None  # noqa: E731
    training.train(opts("straight"), log=quiet, progress=False)
    training.train(opts("pieces", stop_after=2), log=quiet, progress=False)
    assert training.train(opts("pieces", resume=True), log=quiet, progress=False)["step"] == 4
    _assert_same_weights(_ckpt(tmp_path / "straight"), _ckpt(tmp_path / "pieces"))
    training.train(opts("other", seed=7), log=quiet, progress=False)
    straight, other = _ckpt(tmp_path / "straight")["model"], _ckpt(tmp_path / "other")["model"]
    assert any(not torch.allclose(other[k], v) for k, v in straight.items())


def test_the_learning_rate_follows_the_iteration_count_only():
    # replaces the wall-clock schedule: a timed run no longer anneals early
    assert training.lr_factor("cosine", 0, 100) == pytest.approx(1.0)
    assert training.lr_factor("cosine", 50, 100) == pytest.approx(0.51)
    assert training.lr_factor("cosine", 100, 100) == pytest.approx(0.02)
    assert training.lr_factor("step", 74, 100) == 0.5 and training.lr_factor("step", 75, 100) == 0.25
    assert "time" not in str(__import__("inspect").signature(training.lr_factor))


# ----------------------------------------------------------------------------- the split file


def test_the_committed_cave_split_has_disjoint_roles_over_the_20_local_scenes():
    from app.core.io.datasets import CAVE_TRAIN_SPLIT, VALIDATION_SCENES, load_split

    sp = load_split("cave")
    roles = [set(sp.train), set(sp.val), set(sp.report)]
    assert all(roles) and sum(len(r) for r in roles) == len(set.union(*roles))
    assert set.union(*roles) == set(CAVE_TRAIN_SPLIT)
    assert set(sp.report) == set(VALIDATION_SCENES)   # the scenes the cards report on


def test_split_file_errors_are_one_line(tmp_path):
    from app.core.io.datasets import SplitError, load_split

    bad = tmp_path / "bad.json"
    bad.write_text('{"train": ["a_ms"], "val": ["a_ms"], "report": []}')
    with pytest.raises(SplitError, match="a_ms in both 'train' and 'val'"):
        load_split(bad)
    with pytest.raises(SplitError, match="no such split"):
        load_split("nosuchsplit")


def _fake_scene(root, name):
    shutil.copytree(DATA / "cave_beads_crop_ms", root / name)


def test_extra_scenes_in_data_are_ignored_and_the_split_decides_what_trains(tmp_path, capsys):
    """A --data folder like the full 32-scene CAVE set (the 20 of the split plus others): the run
    trains on exactly the split's train scenes, in the file's order, and validates on its val ones."""
    from app.core.io.datasets import load_split

    sp = load_split("cave")
    root = tmp_path / "cave32"
    root.mkdir()
    for name in sp.train + sp.val + sp.report + ("balloons_ms", "watercolors_ms"):
        _fake_scene(root, name)
    (root / "notes").mkdir()
    train_dirs, val_dirs = training.split_data(root, 4, "cave", log=print)
    assert [p.name for p in train_dirs] == list(sp.train) and [p.name for p in val_dirs] == list(sp.val)
    out = capsys.readouterr().out
    assert "ignored: balloons_ms, watercolors_ms" in out and "not loaded: photo_and_face_ms" in out
    # the default (--split auto) picks the cave split for CAVE data, and the weights record the scenes
    argv = _argv(root, tmp_path, 1)
    argv[argv.index("--val") + 1] = "4"
    assert main(argv) == 0
    meta = training.read_weights_metadata(tmp_path / "w" / "cst.safetensors")
    assert json.loads(meta["train_scenes"]) == list(sp.train)
    assert json.loads(meta["validation_scenes"]) == list(sp.val)
    assert json.loads(meta["run"])["split"] == "cave"


def test_a_split_scene_missing_from_data_is_an_error(tmp_path, capsys):
    root = tmp_path / "some"
    root.mkdir()
    _fake_scene(root, "beads_ms")
    argv = _argv(root, tmp_path, 1) + ["--split", "cave"]
    assert main(argv) == 2
    assert "needs scene(s)" in capsys.readouterr().err


def test_an_own_split_file_names_the_training_set(scenes, tmp_path):
    _fake_scene(scenes, "c_ms")
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"train": ["b_ms", "c_ms"], "val": ["a_ms"], "report": []}))
    summary = training.train(training.TrainOptions(
        model="cst", data=str(scenes), protocol="bicubic-x4", out=str(tmp_path / "o.safetensors"), iters=1, batch=1,
        patch=32, threads=1, split=str(own), run_dir=str(tmp_path / "r"), model_options={"config": "small"}),
        log=lambda *_: None, progress=False)
    assert summary["train_scenes"] == ["b_ms", "c_ms"] and summary["val_scenes"] == ["a_ms"]


def test_torchrun_two_processes_train_together(scenes, tmp_path):
    """`torchrun --standalone --nproc_per_node 2 main.py train ...` on the CPU (gloo): both ranks draw
    patches (different ones: a seed per rank), one weights file is written (by rank 0), its metadata
    says world_size 2 and each rank's share; resuming under torchrun continues from the checkpoint."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    launcher = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(root / "main.py")]
    done = subprocess.run(launcher + _argv(scenes, tmp_path, 5, "--stop-after", "3"), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    weights = list((tmp_path / "w").glob("*.safetensors"))
    assert [w.name for w in weights] == ["cst.safetensors"]
    meta = training.read_weights_metadata(weights[0])
    assert meta["world_size"] == "2" and meta["step"] == "3"
    shares = json.loads(meta["ranks"])
    assert [s["rank"] for s in shares] == [0, 1] and all(s["patches"] == 3 * 2 for s in shares)
    ck = _ckpt(tmp_path)
    assert len(ck["rank_rng"]) == 2 and not torch.equal(ck["rank_rng"][0]["gen_state"], ck["rank_rng"][1]["gen_state"])
    # --resume under torchrun: every rank takes its own streams back and the run continues
    again = subprocess.run(launcher + _argv(scenes, tmp_path, 5, "--resume"), capture_output=True, text=True,
                           timeout=600, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    meta = training.read_weights_metadata(weights[0])
    assert meta["step"] == "5" and meta["world_size"] == "2"


def test_a_bundled_split_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """`--split cave` run from a folder that holds the CAVE data as ./cave read the folder as the split."""
    from app.core.io.datasets import load_split

    (tmp_path / "cave").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_split("cave").name == "cave" and len(load_split("cave").train) == 14


def test_an_illuminant_copy_is_the_scene_times_a_smooth_positive_curve_and_its_inputs_follow():
    """--illuminants: a copy's cube is the scene multiplied band-wise by a random smooth illuminant
    (drawn from the seed, the scene number and the copy number alone); the protocol's inputs are simulated
    from that cube, so for a linear band-wise degradation the LR-HSI is the scene's LR times the same curve."""
    plain = training.load_scene(DATA / "cave_beads_crop_ms", "gauss-x4")
    lit = training.load_scene(DATA / "cave_beads_crop_ms", "gauss-x4", illuminant=(5000, 0, 1))
    assert lit.name == "cave_beads_crop_ms@illum1" and lit.gt.shape == plain.gt.shape
    ratio = lit.gt / plain.gt.clamp_min(1e-12)
    lit_pixels = plain.gt > 1e-3
    curve = torch.stack([ratio[b][lit_pixels[b]].median() for b in range(ratio.shape[0])])
    torch.testing.assert_close(lit.gt, plain.gt * curve[:, None, None], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(lit.lr, plain.lr * curve[:, None, None], rtol=1e-3, atol=1e-5)
    assert float(lit.gt.max()) <= 1.0 and bool((curve > 0).all())
    wl = np.arange(400, 701, 10)
    a = training.illuminant_curve(wl, 5000, 0, 1)
    assert np.allclose(a / a.max(), curve.numpy() / curve.numpy().max(), rtol=1e-4)  # the drawn curve, maybe scaled
    assert np.allclose(a, training.illuminant_curve(wl, 5000, 0, 1))  # the seed decides
    others = [training.illuminant_curve(wl, 5000, 0, 2), training.illuminant_curve(wl, 5000, 1, 1),
              training.illuminant_curve(wl, 5001, 0, 1)]
    assert all(not np.allclose(a, o, rtol=0.01) for o in others)
    assert np.abs(np.diff(np.log(a), 3)).max() < 1e-3  # smooth: a cubic in log


def test_illuminant_copies_join_the_training_set_and_define_the_run(scenes, tmp_path, capsys):
    assert main(_argv(scenes, tmp_path, 2, "--illuminants", "2")) == 0
    assert "adding 2 copies of each training scene" in capsys.readouterr().out
    meta = training.read_weights_metadata(tmp_path / "w" / "cst.safetensors")
    assert json.loads(meta["train_scenes"]) == ["a_ms", "a_ms@illum1", "a_ms@illum2"]
    assert json.loads(meta["validation_scenes"]) == ["b_ms"]  # validation stays on the scenes as they are
    assert json.loads(meta["run"])["illuminants"] == 2
    assert main(_argv(scenes, tmp_path, 2, "--illuminants", "-1")) == 2
    assert "--illuminants -1" in capsys.readouterr().err


def test_a_run_that_fails_before_its_first_step_leaves_no_weights(scenes, tmp_path, monkeypatch):
    """An error in the first step (here the loss; on real data e.g. a guide the model cannot take)
    propagates, and no untrained weights file is left at --out; a run that fails later keeps its
    steps (checkpoint and weights) with the error named as the reason."""
    calls = {"n": 0}
    real_loss = training.hsi_loss

    def loss(pred, gt):
        calls["n"] += 1
        if calls["n"] > limit:
            raise RuntimeError("broken loss")
        return real_loss(pred, gt)

    monkeypatch.setattr(training, "hsi_loss", loss)
    lines = []
    opts = lambda name: training.TrainOptions(  # noqa: E731
        model="cst", data=str(scenes), protocol="bicubic-x4", out=str(tmp_path / name / "w.safetensors"),
        val=1, iters=4, batch=2, patch=32, val_every=100, ckpt_every=100, split="none",
        run_dir=str(tmp_path / name / "run"), model_options={"config": "small"})
    limit = 0
    with pytest.raises(RuntimeError, match="broken loss"):
        training.train(opts("first"), log=lines.append, progress=False)
    assert not (tmp_path / "first" / "w.safetensors").exists()
    assert not (tmp_path / "first" / "run" / "checkpoint.pt").exists()
    limit, calls["n"] = 2, 0
    with pytest.raises(RuntimeError, match="broken loss"):
        training.train(opts("later"), log=lines.append, progress=False)
    assert training.read_weights_metadata(tmp_path / "later" / "w.safetensors")["step"] == "2"
    assert "stopped by the error below" in lines[-1]


def test_a_model_whose_inputs_the_protocol_cannot_give_is_refused_before_training(tmp_path, capsys):
    """MulSR needs an RGB guide; for the real FENIX crop (450 bands, 378-2504 nm) mulsr-x8 simulates a
    multispectral guide: the run stops before its first step, names the data and the guide, and leaves
    nothing behind."""
    root = tmp_path / "data"
    root.mkdir()
    for name in ("a", "b"):
        for ext in ("hdr", "dat"):
            shutil.copy(DATA / "fenix" / f"image.{ext}", root / f"{name}.{ext}")
    argv = ["train", "--model", "mulsr", "--data", str(root), "--protocol", "mulsr-x8", "--val", "1", "--iters", "2",
            "--patch", "16", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "w" / "m.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0] and "HR-RGB guide" in err[0] and "-band guide" in err[0]
    assert not (tmp_path / "w").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_illuminant_copy_numbers_redraw_one_slot_per_refresh_in_turn():
    assert training.illuminant_copy_numbers(2, 0, 10**6) == [1, 2]          # no refresh: the copies stay
    steps = {0: [1, 2], 9: [1, 2], 10: [3, 2], 19: [3, 2], 20: [3, 4], 30: [5, 4], 40: [5, 6]}
    for step, held in steps.items():
        assert training.illuminant_copy_numbers(2, 10, step) == held, step
    seen = {j for step in range(0, 1000, 10) for j in training.illuminant_copy_numbers(3, 10, step)}
    assert seen == set(range(1, 3 + 99 + 1))     # 99 redraws after the first 3 copies: every number, none skipped


def test_refreshed_illuminant_copies_resume_in_pieces_and_are_refused_without_copies(scenes, tmp_path, capsys):
    """--illuminant-refresh 2 with one copy: the copy is redrawn at steps 2 and 4 (copies 2, 3), the
    redraw is logged and part of the run's options, and a run cut at step 3 and resumed (which must hold
    copy 2 again, then draw copy 3) equals the one-piece run."""
    straight = _run(scenes, tmp_path, "straight", 5, "--illuminants", "1", "--illuminant-refresh", "2")
    out = capsys.readouterr().out
    assert "one copy of each redrawn every 2 iterations" in out
    assert "step 2: illuminant copies now 2" in out and "step 4: illuminant copies now 3" in out
    meta = training.read_weights_metadata(tmp_path / "straight" / "w" / "cst.safetensors")
    assert json.loads(meta["train_scenes"]) == ["a_ms", "a_ms@illum3"]
    assert json.loads(meta["run"])["illuminant_refresh"] == 2
    _run(scenes, tmp_path, "pieces", 5, "--illuminants", "1", "--illuminant-refresh", "2", "--stop-after", "3")
    pieces = _run(scenes, tmp_path, "pieces", 5, "--illuminants", "1", "--illuminant-refresh", "2", "--resume")
    _assert_same_weights(straight, pieces)
    fixed = _run(scenes, tmp_path, "fixed", 5, "--illuminants", "1")
    assert any(not torch.allclose(fixed["model"][k], v) for k, v in straight["model"].items())
    capsys.readouterr()
    assert main(_argv(scenes, tmp_path / "bad", 1, "--illuminant-refresh", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--illuminant-refresh 2" in err[0] and "--illuminants" in err[0]


def test_a_redrawn_copy_gets_the_models_scene_extras(tmp_path):
    """HSR-Diff attaches a FUSE estimate to every training scene (prepare_scene); a copy redrawn
    during the run must get its own, or the batches would lack it: two scenes of the real sample at
    gauss-x32, one copy redrawn at step 2."""
    from tests.conftest import SAMPLE

    root = tmp_path / "data"
    for name in ("a_ms", "b_ms"):
        shutil.copytree(SAMPLE, root / name)
    opts = training.TrainOptions(model="hsrdiff", data=str(root), protocol="gauss-x32", out=str(tmp_path / "h.safetensors"),
                                 val=1, iters=3, batch=1, patch=64, val_every=3, val_crop=64, ckpt_every=100,
                                 split="none", run_dir=str(tmp_path / "run"), model_options={"config": "conv"},
                                 illuminants=1, illuminant_refresh=2)
    summary = training.train(opts, log=lambda *_: None, progress=False)
    assert summary["step"] == 3 and summary["train_scenes"] == ["a_ms", "a_ms@illum2"]
    cached = sorted(p.name.split("_x32")[0] for p in (tmp_path / "run" / "scene_cache").glob("*.npy"))
    assert cached == ["a_ms", "a_ms@illum1", "a_ms@illum2", "b_ms"]


# ----------------------------------------------------------------------------- weight averaging (--ema)


def test_ema_update_is_the_moving_average_and_its_decay_warms_up():
    torch.manual_seed(0)
    model, avg = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    training.ema_update(avg, model, 0.9)
    for k, v in avg.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * model.state_dict()[k])
    assert training.ema_decay(0.999, 0) == pytest.approx(0.1)          # (1 + 0) / (10 + 0)
    assert training.ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert training.ema_decay(0.999, 10**6) == 0.999


def test_an_ema_run_exports_the_average_resumes_in_pieces_and_defines_the_run(scenes, tmp_path, capsys):
    """--ema 0.5: the exported weights are the checkpoint's average, not its raw weights; a run cut
    in two equals the one-piece run (average included); the decay is written to the run's metadata;
    a decay outside [0, 1) is refused in one line."""
    from safetensors.torch import load_file

    straight = _run(scenes, tmp_path, "ema", 4, "--ema", "0.5")
    out = load_file(str(tmp_path / "ema" / "w" / "cst.safetensors"))
    assert "ema" in straight
    assert all(torch.allclose(out[k].float(), v.float(), atol=2e-3) for k, v in straight["ema"].items())
    assert any(not torch.allclose(straight["ema"][k], v) for k, v in straight["model"].items())
    meta = training.read_weights_metadata(tmp_path / "ema" / "w" / "cst.safetensors")
    assert json.loads(meta["run"])["ema"] == 0.5
    _run(scenes, tmp_path, "ema_pieces", 4, "--ema", "0.5", "--stop-after", "2")
    pieces = _run(scenes, tmp_path, "ema_pieces", 4, "--ema", "0.5", "--resume")
    _assert_same_weights(straight, pieces)
    for k, v in straight["ema"].items():
        torch.testing.assert_close(pieces["ema"][k], v, rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main(_argv(scenes, tmp_path / "bad", 1, "--ema", "1.0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ema 1.0" in err[0]

"""The generic training pipeline and `main.py train`, on two scene folders cut from a real CAVE crop."""
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

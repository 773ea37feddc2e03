"""python -m app.research.prior_sweep on a real CAVE crop: the figures it prints are FUSE's, simulated
as the trainer simulates, and bad input is a one-line error."""
from __future__ import annotations

import shutil

import pytest
import torch

from app.research.prior_sweep import main, sweep
from app.core.inference.training import load_scene, psnr_db
from models.classical import fuse
from models.degradation import psf_kernel
from tests.conftest import DATA


@pytest.fixture
def scene_dir(tmp_path):
    folder = tmp_path / "beads_ms"
    shutil.copytree(DATA / "cave_beads_crop_ms", folder)
    return folder


def test_scores_are_fuse_with_each_prior(scene_dir):
    lines = []
    scores = sweep([scene_dir], "gauss-x8", [1, 2], [1e-7], log=lines.append)
    assert set(scores) == {"fuse gsa", "fuse guided r=1 eps=1e-07", "fuse guided r=2 eps=1e-07"}
    sc = load_scene(scene_dir, "gauss-x8")
    psf = torch.as_tensor(psf_kernel("gauss-x8"), dtype=torch.float64)
    lr, msi, srf = sc.lr[None].double(), sc.guide[None].double(), sc.srf.double()
    direct = {"fuse gsa": fuse(lr, msi, srf, psf, 8),
              "fuse guided r=2 eps=1e-07": fuse(lr, msi, srf, psf, 8, prior="guided")}  # the shipped defaults
    for label, est in direct.items():
        assert scores[label][0] == pytest.approx(psnr_db(est.float(), sc.gt[None]), abs=1e-4)
    assert scores["fuse guided r=2 eps=1e-07"][0] != scores["fuse guided r=1 eps=1e-07"][0]
    assert any(line.startswith("mean (1) fuse gsa") for line in lines)


def test_crop_scores_the_centre_and_bad_folders_are_one_line(scene_dir, tmp_path, capsys):
    whole = sweep([scene_dir], "gauss-x8", [2], [1e-7], log=lambda _: None)
    crop = sweep([scene_dir], "gauss-x8", [2], [1e-7], crop=16, log=lambda _: None)
    assert crop["fuse gsa"][0] != whole["fuse gsa"][0]
    empty = tmp_path / "empty_ms"
    empty.mkdir()
    assert main(["--gt", str(empty), "--protocol", "gauss-x8"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: ") and "empty_ms" in out and "Traceback" not in out

"""The command line: simulate -> sr -> eval on the real CAVE sample, JSON schema, errors."""
import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.science.degrade import simulate
from app.core.io import open_cube
from app.core.science.metrics import compute_all
from tests.conftest import SAMPLE


def test_simulate_then_sr_matches_engine(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--gt", str(SAMPLE), "--protocol", "gauss-x8", "--out", str(out)]) == 0
    meta = json.loads((out / "protocol.json").read_text())
    assert meta["protocol"] == "gauss-x8" and meta["lr_shape"] == [32, 32, 31]
    lr = open_cube(out / "lr.npy")
    gt = open_cube(SAMPLE)
    expected_lr, expected_guide, _ = simulate(gt.data, "gauss-x8", wavelengths_nm=gt.wavelengths_nm)
    np.testing.assert_array_equal(lr.data, expected_lr)
    np.testing.assert_array_equal(open_cube(out / "guide.npy").data, expected_guide)
    np.testing.assert_array_equal(lr.wavelengths_nm, gt.wavelengths_nm)

    assert main(["sr", "--model", "bicubic", "--lr", str(out / "lr.npy"), "--scale", "8",
                 "--out", str(tmp_path / "sr.hdr")]) == 0
    sr = open_cube(tmp_path / "sr.hdr")
    assert sr.shape == (256, 256, 31)
    assert "bicubic" in sr.metadata["header"].get("provenance model", "")


def test_eval_json_matches_core_metrics(tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert main(["eval", "--gt", str(SAMPLE), "--protocol", "bicubic-x4", "--models", "bicubic",
                 "--device", "cpu", "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["protocol"] == "bicubic-x4" and doc["device"] == "cpu"
    row = doc["results"][0]
    assert set(row) >= {"image", "model", "psnr", "ssim", "sam_deg", "ergas", "rmse", "seconds"}
    gt = open_cube(SAMPLE).data
    from models.baselines import bicubic_upsample
    import torch

    lr, _, _ = simulate(gt, "bicubic-x4")
    up = bicubic_upsample(torch.from_numpy(lr.transpose(2, 0, 1).copy())[None], 4)[0].permute(1, 2, 0).numpy()
    m = compute_all(gt, np.clip(up, 0, 1), scale=4)
    assert row["psnr"] == pytest.approx(m["psnr_db"], abs=1e-4)
    assert row["sam_deg"] == pytest.approx(m["sam_deg"], abs=1e-4)
    assert doc["summary"]["bicubic"]["psnr"] == pytest.approx(row["psnr"])
    assert "mean (1 images)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["sr", "--model", "nosuch", "--lr", "x.npy", "--scale", "4", "--out", "o.npy"], "unknown model"),
    (["eval", "--gt", "nowhere", "--protocol", "gauss-x8"], "no such file"),
    (["eval", "--gt", str(SAMPLE), "--protocol", "gauss-x5"], "gauss-x5"),
    (["simulate", "--gt", str(SAMPLE), "--protocol", "gauss-x8", "--out", "o", "--format", ".xyz"], "output format"),
])
def test_bad_input_gives_one_line_error(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and fragment in err


@pytest.mark.parametrize("command", ["view", "info", "convert", "simulate", "sr", "eval", "models", "bench", "compare",
                                     "browse", "train"])
def test_help_on_each_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage" in capsys.readouterr().out


def test_view_recon_takes_several_paths_in_the_order_given(monkeypatch):
    import app.qt.app

    opened = []
    monkeypatch.setattr(app.qt.app, "run_viewer", lambda files, **kwargs: opened.append(list(files)) or 0)
    assert main(["view", "--gt", "g.hdr", "--recon", "a.hdr", "b.hdr", "c.hdr", "--no-sample"]) == 0
    assert opened[-1] == [("gt", "g.hdr"), ("recon", "a.hdr"), ("recon", "b.hdr"), ("recon", "c.hdr")]
    assert main(["view", "--recon", "a.hdr", "--recon", "b.hdr", "c.hdr", "--no-sample"]) == 0
    assert opened[-1] == [("recon", "a.hdr"), ("recon", "b.hdr"), ("recon", "c.hdr")]


def test_version_and_program_name_come_from_the_package():
    """--version reads the installed metadata (pyproject.toml is the one source) and --help names the
    program the user ran: hsi-viewer for the entry point, main.py from a checkout."""
    import subprocess
    import sys
    from importlib import metadata

    import app

    version = metadata.version("hsi-sr-viewer")
    assert app.__version__ == version
    from app.core.export.data import APP_VERSION
    assert APP_VERSION == version
    entry = Path(sys.executable).with_name("hsi-viewer")
    out = subprocess.run([str(entry), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"hsi-viewer {version}"
    helped = subprocess.run([str(entry), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.stdout.startswith("usage: hsi-viewer")
    root = Path(__file__).resolve().parents[1]
    local = subprocess.run([sys.executable, str(root / "main.py"), "--version"], capture_output=True, text=True,
                           timeout=120, cwd=root)
    assert local.stdout.strip() == f"main.py {version}"

"""eval and compare on a real dask.distributed cluster (2 worker processes): the same rows as one
process, a broken file is an error row, the documents say where they ran, and leaving early
cancels the work (issue 26)."""
import json
import os
import socket
import time

import numpy as np
import pytest

from app.cli import main
from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.evaluation.compare import compare
from app.core.inference.batch import evaluate
from app.core.io import cluster as cluster_glue
from app.core.io import open_cube, save_cube
from tests.conftest import SAMPLE

distributed = pytest.importorskip("distributed")

MODELS = ["bicubic", "gsa"]
PROTOCOL = "gauss-x8"  # a guide for gsa, 64x64 crops give 8x8 LR images


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 worker processes for the whole module, given as tcp://... (the path a
    remote cluster takes). A task whose worker dies fails at once (no retries on other workers)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=":0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _truncated(src, dst):
    """A real .npy file cut in half (its header intact, its data missing)."""
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two 64x64 crops of the bundled CAVE scene as GT files, a truncated GT among them, and two
    methods' predictions (real GT values, perturbed) with a truncated prediction."""
    root = tmp_path_factory.mktemp("cluster")
    gt = open_cube(SAMPLE).load()
    gt_dir, a_dir, b_dir = root / "gt", root / "noisy", root / "shifted"
    for d in (gt_dir, a_dir, b_dir):
        d.mkdir()
    rng = np.random.default_rng(7)
    for k, (r, c) in enumerate([(0, 0), (96, 128)]):
        crop = np.ascontiguousarray(gt.data[r:r + 64, c:c + 64])
        save_cube(Cube.from_array(crop, gt.wavelengths_nm, name=f"crop{k}"), gt_dir / f"crop{k}.npy")
        noisy = np.clip(crop + rng.normal(0, 0.01, crop.shape).astype(np.float32), 0, 1)
        save_cube(Cube.from_array(noisy, gt.wavelengths_nm, name=f"crop{k}"), a_dir / f"crop{k}.npy")
        shifted = np.ascontiguousarray(np.roll(crop, 1, axis=1))
        save_cube(Cube.from_array(shifted, gt.wavelengths_nm, name=f"crop{k}"), b_dir / f"crop{k}.npy")
    # crop2: a broken GT (the predictions are fine); shifted/crop1: a broken prediction
    _truncated(gt_dir / "crop0.npy", gt_dir / "crop2.npy")
    for d in (a_dir, b_dir):
        save_cube(open_cube(d / "crop0.npy").load(), d / "crop2.npy")
    _truncated(b_dir / "crop0.npy", b_dir / "crop1.npy")
    return {"gt": gt_dir, "preds": [a_dir, b_dir],
            "eval_gt": [gt_dir / "crop0.npy", gt_dir / "crop2.npy", gt_dir / "crop1.npy"]}


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_eval_on_cluster_gives_the_single_process_rows(scheduler, files):
    one = evaluate(files["eval_gt"], PROTOCOL, MODELS, device="cpu")
    seen = []
    many = evaluate(files["eval_gt"], PROTOCOL, MODELS, device="cpu", scheduler=scheduler, on_item=seen.append)
    assert len(seen) == 6  # progress: every pair reported as it completed
    assert _without_seconds(many["results"]) == _without_seconds(one["results"])  # numbers bit for bit
    assert [(r["image"], r["model"]) for r in many["results"]] == [
        ("crop0", "bicubic"), ("crop0", "gsa"), ("crop2", "bicubic"), ("crop2", "gsa"),
        ("crop1", "bicubic"), ("crop1", "gsa")]
    good = [r for r in many["results"] if r["image"] != "crop2"]
    assert all(np.isfinite(r["psnr"]) and r["psnr"] > 30 and "error" not in r for r in good)
    broken = [r for r in many["results"] if r["image"] == "crop2"]
    for r in broken:  # the truncated GT: an error row naming the file, no metrics
        assert "psnr" not in r and str(files["gt"] / "crop2.npy") in r["error"] and "\n" not in r["error"]
    for name in MODELS:
        assert many["summary"][name]["images"] == 2
        for key in ("psnr", "ssim", "sam_deg", "ergas", "rmse"):
            assert many["summary"][name][key] == one["summary"][name][key]
    assert one["execution"] == {"scheduler": None, "workers": 1}
    assert many["execution"] == {"scheduler": scheduler, "workers": 2}
    assert many["device"] == one["device"] == "cpu"


def test_compare_on_cluster_gives_the_single_process_rows(scheduler, files):
    one = compare(files["gt"], files["preds"], scale=8, device="cpu")
    progress = []
    many = compare(files["gt"], files["preds"], scale=8, device="cpu", scheduler=scheduler,
                   on_progress=lambda done, total, row: progress.append((done, total)))
    assert progress[-1] == (6, 6)
    assert many["results"] == one["results"]  # per-row metrics, ranges and notes bit for bit
    assert [(r["image"], r["model"]) for r in many["results"]] == [
        ("crop0", "noisy"), ("crop0", "shifted"), ("crop1", "noisy")]
    assert 30 < many["results"][0]["psnr"] < 60
    assert [(e["image"], e["model"]) for e in many["errors"]] == [
        ("crop1", "shifted"), ("crop2", "noisy"), ("crop2", "shifted")]
    assert many["errors"] == one["errors"]  # absolute paths given: the same one-line errors
    assert str(files["preds"][1] / "crop1.npy") in many["errors"][0]["error"]
    assert str(files["gt"] / "crop2.npy") in many["errors"][1]["error"]
    assert many["summary"] == one["summary"]
    assert many["execution"] == {"scheduler": scheduler, "workers": 2}
    assert one["execution"] == {"scheduler": None, "workers": 1}


def test_cli_eval_and_compare_record_the_scheduler(scheduler, files, tmp_path, capsys):
    out = tmp_path / "eval.json"
    status = main(["eval", "--gt", *map(str, files["eval_gt"]), "--protocol", PROTOCOL, "--models", "bicubic",
                   "--device", "cpu", "--scheduler", scheduler, "--json", str(out)])
    assert status == 1  # a broken GT: its row is an error, the command says so
    doc = json.loads(out.read_text())
    assert doc["execution"] == {"scheduler": scheduler, "workers": 2}
    err = capsys.readouterr().err
    assert "crop2.npy" in err and "Traceback" not in err
    single = evaluate([files["eval_gt"][0]], PROTOCOL, ["bicubic"], device="cpu")
    assert doc["results"][0]["psnr"] == single["results"][0]["psnr"]

    out = tmp_path / "compare.json"
    status = main(["compare", "--gt", str(files["gt"]), "--pred", str(files["preds"][0]), "--scale", "8",
                   "--device", "cpu", "--scheduler", scheduler, "--json", str(out)])
    assert status == 1  # crop2's GT is broken
    doc = json.loads(out.read_text())
    assert doc["execution"] == {"scheduler": scheduler, "workers": 2}
    assert [r["image"] for r in doc["results"]] == ["crop0", "crop1"]


def test_leaving_early_cancels_the_tasks(scheduler, files):
    """An exception in the client (Ctrl+C is a KeyboardInterrupt) cancels the futures left."""

    def stop(item):
        raise KeyboardInterrupt

    gts = [files["eval_gt"][0], files["eval_gt"][2]] * 4
    with pytest.raises(KeyboardInterrupt):
        evaluate(gts, PROTOCOL, MODELS, device="cpu", scheduler=scheduler, on_item=stop)
    with distributed.Client(scheduler, timeout=10) as client:
        deadline = time.monotonic() + 10
        left = None
        while time.monotonic() < deadline:
            left = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            if left == 0:
                break
            time.sleep(0.2)
        assert left == 0


def test_a_worker_that_dies_is_a_problem_not_a_crash(scheduler):
    with cluster_glue.connect(scheduler) as session:
        got = sorted(session.run(os._exit, [(3,)], name="die"), key=lambda t: t[0])
        assert len(got) == 1 and got[0][1] is None
        assert "KilledWorker" in got[0][2] and "\n" not in got[0][2]
        ok = list(session.run(abs, [(-2,)]))  # the cluster still works (the nanny restarts the worker)
        assert ok == [(0, 2, None)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line(files, monkeypatch, capsys):
    monkeypatch.setattr(cluster_glue, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    status = main(["eval", "--gt", str(files["eval_gt"][0]), "--protocol", PROTOCOL, "--models", "bicubic",
                   "--scheduler", address])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot reach the dask scheduler at {address}")
    with pytest.raises(HsiError, match="cannot reach"):
        with cluster_glue.connect(address, timeout=1.0):
            pass


@pytest.mark.parametrize("text", ["tcp:/host:1", "tcp://host", "tcp://host:99999", "local:0", "local:x", "dask"])
def test_bad_scheduler_syntax_is_an_argparse_error(text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--gt", str(SAMPLE), "--protocol", PROTOCOL, "--scheduler", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --scheduler" in err and repr(text) in err
    assert "Traceback" not in err


def test_parse_scheduler():
    assert cluster_glue.parse_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert cluster_glue.parse_scheduler("local:3").local_workers == 3
    with pytest.raises(ValueError, match="local:N"):
        cluster_glue.parse_scheduler("localhost:8786")


def test_local_n_starts_and_closes_its_own_cluster():
    with cluster_glue.connect("local:2") as session:
        assert session.execution == {"scheduler": "local:2", "workers": 2}
        got = sorted(session.run(abs, [(-1,), (-2,), (3,)]))
        cluster = session.client.cluster
    assert got == [(0, 1, None), (1, 2, None), (2, 3, None)]
    assert session.client.status == "closed" and cluster.status.name == "closed"


@pytest.mark.slow
def test_cli_eval_with_local_n(files, tmp_path):
    """The whole command with local:2 (its workers import torch and the models: ~30 s on 2 busy cores)."""
    out = tmp_path / "eval.json"
    status = main(["eval", "--gt", str(files["eval_gt"][0]), "--protocol", PROTOCOL, "--models", "bicubic",
                   "--device", "cpu", "--scheduler", "local:2", "--json", str(out)])
    assert status == 0
    doc = json.loads(out.read_text())
    assert doc["execution"] == {"scheduler": "local:2", "workers": 2}
    single = evaluate([files["eval_gt"][0]], PROTOCOL, ["bicubic"], device="cpu")
    assert _without_seconds(doc["results"]) == _without_seconds(single["results"])


def test_plain_eval_never_imports_dask(files):
    """dask is imported only with --scheduler: a plain eval stays as fast to start as before."""
    import subprocess
    import sys

    code = ("import sys; from app.cli import main; "
            f"status = main(['eval', '--gt', {str(files['eval_gt'][0])!r}, '--protocol', {PROTOCOL!r}, "
            "'--models', 'bicubic', '--device', 'cpu']); "
            "print(status, sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]


def test_single_process_eval_gives_the_same_error_row(files, tmp_path, capsys):
    """Without --scheduler a truncated GT is an error row too (it used to end the whole command)."""
    out = tmp_path / "eval.json"
    status = main(["eval", "--gt", str(files["eval_gt"][1]), str(files["eval_gt"][0]), "--protocol", PROTOCOL,
                   "--models", "bicubic", "--device", "cpu", "--json", str(out)])
    assert status == 1
    doc = json.loads(out.read_text())
    assert doc["execution"] == {"scheduler": None, "workers": 1}
    bad, good = doc["results"]
    assert bad["image"] == "crop2" and str(files["eval_gt"][1]) in bad["error"] and "psnr" not in bad
    assert good["image"] == "crop0" and good["psnr"] > 30 and "error" not in good
    assert doc["summary"]["bicubic"]["images"] == 1
    captured = capsys.readouterr()
    assert "crop2" in captured.out and "failed:" in captured.out  # the table shows the failed row
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "crop2.npy" in errors[0] and "Traceback" not in captured.err

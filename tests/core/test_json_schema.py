"""Versioned JSON outputs (issue 25 item 6): every JSON document the project writes starts with the
header (schema_version, kind, software, created, arguments; metric conventions where it holds
metrics), eval and compare rows say what made their numbers (options, weights sha256, the
prediction's own provenance, the files' prints), and the results browser reads old (unversioned)
and new files but refuses a newer schema with one line naming the file."""
from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import app
from app.cli import main
from app.core.evaluation.results import ResultsError, load_results
from app.core.io import open_cube
from app.core.io.provenance import SCHEMA_VERSIONS, file_fingerprint, set_command_line
from app.core.science.metric_table import COLUMNS
from models.spec import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[2]
CROP = ROOT / "tests" / "data" / "cave_crop.npz"  # a real CAVE crop, 32x40x31
OLD_EVAL = ROOT / "docs" / "eval_fuse_guided_x32.json"  # committed before the header existed (version 1)
HEADER = {"schema_version", "kind", "software", "created", "arguments"}


@pytest.fixture(autouse=True)
def _forget_command_line():
    yield
    set_command_line(None)  # main() records it for the whole process


def strict_load(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_header(doc: dict, kind: str, command: str) -> None:
    assert HEADER <= set(doc), set(doc)
    assert list(doc)[:2] == ["schema_version", "kind"]
    assert doc["schema_version"] == SCHEMA_VERSIONS[kind] == 2 and doc["kind"] == kind
    sw = doc["software"]
    assert sw["name"] == "hsi-sr-viewer"
    assert sw["version"] == app.__version__ == metadata.version("hsi-sr-viewer")  # one source: the metadata
    assert sw["python"] == ".".join(map(str, sys.version_info[:3]))
    assert sw["numpy"] == np.__version__ and sw["torch"] == metadata.version("torch")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["created"])
    assert doc["command_line"][:2] == ["hsi-viewer", command]


def check_conventions(doc: dict) -> None:
    conv = doc["metric_conventions"]
    assert [m["column"] for m in conv["metrics"]] == list(COLUMNS)
    by = {m["column"]: m for m in conv["metrics"]}
    assert by["psnr"]["unit"] == "dB" and by["psnr"]["better"] == "higher"
    assert by["sam_deg"]["unit"] == "degrees" and by["sam_deg"]["better"] == "lower"
    assert "100 dB" in conv["psnr_cap"] and "99th percentile" in conv["sam_left_out"]
    assert "maxValue" in conv["value_range"] and "Metric conventions" in conv["reference"]


def test_eval_json_has_the_header_and_each_row_its_options_weights_and_seed(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--gt", str(CROP), "--protocol", "gauss-x4", "--models", "cst,fuse,hsrdiff", "--option",
                 "prior=guided", "--option", "ddim=true", "--seed", "3", "--device", "cpu", "--json", str(out)]) == 0
    doc = strict_load(out)
    check_header(doc, "eval", "eval")
    check_conventions(doc)
    assert doc["arguments"]["options"] == {"prior": "guided", "ddim": True}
    assert doc["arguments"]["models"] == ["cst", "fuse", "hsrdiff"]
    assert doc["arguments"]["seed"] == 3 and doc["arguments"]["gt"] == [str(CROP)]
    rows = {r["model"]: r for r in doc["results"]}
    assert set(rows) == {"cst", "fuse", "hsrdiff"}
    cst, fuse, diff = rows["cst"], rows["fuse"], rows["hsrdiff"]
    assert cst["psnr"] > 20 and fuse["psnr"] > 20 and "x32" in diff["skipped"]  # (HSR-Diff has x32 weights only)
    assert cst["weights"]["file"] == "cst_x4.safetensors"
    assert cst["weights"]["sha256"] == sha256(WEIGHTS_DIR / "cst_x4.safetensors")  # the shipped file itself
    assert cst["options"] == {} and fuse["options"] == {"prior": "guided"}  # each model its own options
    assert diff["options"] == {"ddim": True} and "psnr" not in diff  # skipped: what it was given, no numbers
    assert "weights" not in fuse  # training-free: nothing to hash
    assert cst["seed"] == fuse["seed"] == 3
    # the version 1 keys are all still there
    assert {"protocol", "device", "results", "summary"} <= set(doc)
    assert set(cst) >= {"image", "model", *COLUMNS, "seconds", "masked_pixels", "excluded_bands"}


def test_simulate_compare_and_the_prediction_provenance(tmp_path):
    sim = tmp_path / "sim"
    assert main(["simulate", "--gt", str(CROP), "--protocol", "bicubic-x4", "--seed", "5", "--out", str(sim)]) == 0
    proto = strict_load(sim / "protocol.json")
    check_header(proto, "simulate", "simulate")
    assert "metric_conventions" not in proto  # no metrics in it
    assert proto["arguments"]["protocol"] == "bicubic-x4" and proto["arguments"]["seed"] == 5
    assert proto["protocol"] == "bicubic-x4" and proto["scale"] == 4 and proto["gt"] == str(CROP)  # kept

    # the cube's metadata beside the .npy: versioned too, without a time (same cube, same bytes)
    side = strict_load(sim / "lr.npy.json")
    assert side["kind"] == "cube-metadata" and side["software"]["version"] == app.__version__
    assert "created" not in side and "command_line" not in side
    assert open_cube(sim / "lr.npy").wavelengths_nm[0] == pytest.approx(400.0)  # the reader still reads it

    pred = tmp_path / "cst" / "cave_crop.npy"
    assert main(["sr", "--model", "cst", "--lr", str(sim / "lr.npy"), "--scale", "4", "--device", "cpu",
                 "--out", str(pred)]) == 0
    out = tmp_path / "compare.json"
    assert main(["compare", "--gt", str(CROP), "--pred", str(pred.parent), "--scale", "4", "--device", "cpu",
                 "--json", str(out)]) == 0
    doc = strict_load(out)
    check_header(doc, "compare", "compare")
    check_conventions(doc)
    assert doc["command"] == "compare" and isinstance(doc["conventions"], str)  # version 1 keys unchanged
    assert doc["arguments"]["preds"] == [str(pred.parent)] and doc["arguments"]["scale"] == 4
    row = doc["results"][0]
    made = row["pred_provenance"]
    assert made["model"] == "cst" and made["weights_sha256"] == sha256(WEIGHTS_DIR / "cst_x4.safetensors")
    assert made["lr"] == str(sim / "lr.npy")
    assert row["pred_file"]["sha256"] == sha256(pred) and row["pred_file"]["bytes"] == pred.stat().st_size
    assert row["gt_file"]["sha256"] == sha256(CROP)

    # the results browser: a new file shows who wrote it and what made each row
    table = load_results(out)
    assert table.schema_version == 2 and table.software["version"] == app.__version__
    lines = table.entries[0].provenance_lines()
    shipped = sha256(WEIGHTS_DIR / "cst_x4.safetensors")[:12]
    assert any(line.startswith(f"prediction made by: cst (weights sha256 {shipped}") for line in lines), lines
    assert any(line.startswith(f"prediction file: {pred.stat().st_size} bytes, sha256 {sha256(pred)[:12]}")
               for line in lines), lines


def test_large_files_get_size_and_mtime_only(tmp_path, monkeypatch):
    import app.core.io.provenance as provenance

    small, big = tmp_path / "small.npy", tmp_path / "big.npy"
    np.save(small, np.zeros(10, np.float32))
    np.save(big, np.zeros(1000, np.float32))
    monkeypatch.setattr(provenance, "HASH_LIMIT_BYTES", 1000)  # (the real limit is 64 MiB)
    assert file_fingerprint(small)["sha256"] == sha256(small)
    printed = file_fingerprint(big)
    assert "sha256" not in printed and printed["bytes"] == big.stat().st_size and printed["mtime"].endswith("+00:00")
    folder = file_fingerprint(ROOT / "tests" / "data" / "cave_beads_crop_ms")
    assert folder["files"] >= 31 and folder["bytes"] > 0 and "sha256" not in folder


def test_an_envi_header_print_covers_its_data_file():
    printed = file_fingerprint(ROOT / "tests" / "data" / "fenix_bip.hdr")
    data = ROOT / "tests" / "data" / "fenix_bip.img"
    assert printed["data"]["file"] == "fenix_bip.img" and printed["data"]["bytes"] == data.stat().st_size
    assert printed["data"]["sha256"] == sha256(data)


def test_the_browser_reads_an_old_unversioned_file():
    old = json.loads(OLD_EVAL.read_text())
    assert "schema_version" not in old  # a real version 1 file
    table = load_results(OLD_EVAL)
    assert table.schema_version == 1 and table.software == {} and table.kind == "eval"
    assert len(table.entries) == len(old["results"]) and table.methods == ["fuse"]
    assert all(e.provenance == {} and e.provenance_lines() == [] for e in table.entries)


def test_a_newer_schema_is_refused_with_one_line_naming_the_file(tmp_path):
    doc = json.loads(OLD_EVAL.read_text())
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"schema_version": 3, "kind": "eval",
                                  "software": {"name": "hsi-sr-viewer", "version": "9.1.0"}, **doc}))
    with pytest.raises(ResultsError) as info:
        load_results(future)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{future}: written by a newer version (hsi-sr-viewer 9.1.0")
    assert "reads up to schema 2" in text
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema_version": "two", **doc}))
    with pytest.raises(ResultsError, match=r"broken\.json: schema_version 'two' is not a positive whole number"):
        load_results(broken)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"schema_version": 2, "kind": "bench", "results": []}))
    with pytest.raises(ResultsError, match=r"bench\.json: a 'bench' document, not compare/eval results"):
        load_results(bench)


def test_the_bench_json_has_the_header(tmp_path):
    from app.bench.runner import run_benchmarks

    out = tmp_path / "bench.json"
    assert run_benchmarks(only=["io"], envi_gb=0.002, tmp=str(tmp_path), quick=True, json_out=str(out)) == 0
    doc = strict_load(out)
    assert doc["kind"] == "bench" and doc["schema_version"] == 2 and doc["software"]["version"] == app.__version__
    assert doc["arguments"]["only"] == ["io"] and "io" in doc


# Every json.dump(s) in the code either writes a stamped document or is one of these, which are not
# results files: each has its own format or lives inside another file.
NOT_DOCUMENTS = {
    "app/core/io/jsonio.py": "the writer itself (write_json refuses unstamped documents)",
    "app/qt/main_window.py": "QSettings' recent-files entries",
    "app/core/export/figure.py": "provenance inside the PNG/PDF/SVG metadata",
    "app/core/io/envi.py": "provenance base64 inside the ENVI header",
    "app/core/inference/training.py": "values of the safetensors metadata (with the software block) and of the checkpoint",
    "app/core/export/session.py": "the session file: its own format and version (format, version, software)",
    "app/core/export/recovery.py": "the recovery folder's lock and manifest (internal state with their own format "
                                   "and version; the copies are cube files whose sidecars are stamped)",
}


def test_no_json_is_written_without_the_header():
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")) + sorted((ROOT / "models").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bjson\.dumps?\(|(?<![\w.])dumps\(", line) and "stamp(" not in line and rel not in NOT_DOCUMENTS:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "JSON written without app.core.io.provenance.stamp:\n" + "\n".join(offenders)

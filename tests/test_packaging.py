"""The wheel, installed away from the checkout: it carries the sample, the SRF/CIE tables, the splits
and the weights, the headless commands run without the GUI extras, the viewer opens its sample, and
training writes to the current folder, not into the installed package.

The wheel is built from a copy of the sources (the checkout gets no build/ folder) and installed with
``pip install --no-deps --target``; commands then run with ``PYTHONPATH`` on that folder, in a temporary
folder with its own HOME, so neither the checkout nor the user's settings are reachable.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT / "tests" / "data" / "cave_beads_crop_ms"   # 32 x 40 x 31, a real CAVE crop
GUI_EXTRA = ("PyQt6", "pyqtgraph", "superqt", "matplotlib")
OPTIONAL = GUI_EXTRA + ("numba", "torchmetrics")
BUNDLED_KINDS = ("*.png", "*.csv", "*.json", "*.safetensors", "*.md")

# Runs the CLI as an install without the extras sees it: their modules cannot be imported (they
# are installed in this venv, so blocking them is the only way to check), and none may be loaded.
HEADLESS_RUNNER = f"""
import sys
BLOCKED = {OPTIONAL!r}
for name in BLOCKED:
    sys.modules[name] = None
from app.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split('.')[0] in BLOCKED)
if loaded:
    print('loaded:', loaded, file=sys.stderr)
    code = 99
sys.exit(code)
"""


def _run(args, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, wheel path, environment, work folder) of the wheel built from this checkout."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("app", "models", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    wheels = base / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(wheels), str(src)], env=os.environ, cwd=base)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("hsi_sr_viewer-*.whl")
    site = base / "site"
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                env=os.environ, cwd=base)
    assert done.returncode == 0, done.stdout + done.stderr
    work = base / "work"
    (work / "home").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HSI_"))}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", QT_QPA_PLATFORM="offscreen",
               HOME=str(work / "home"), XDG_CONFIG_HOME=str(work / "home" / ".config"),
               XDG_DATA_HOME=str(work / "home" / ".local" / "share"), XDG_CACHE_HOME=str(work / "home" / ".cache"))
    return site, wheel, env, work


def _package_names(root: Path, top: str) -> set[str]:
    return {".".join(p.parent.relative_to(root).parts) for p in (root / top).rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_wheel_carries_every_package_and_bundled_file(installed):
    _, wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    expected = _package_names(ROOT, "app") | _package_names(ROOT, "models") | {"hsi_sr_resources"}
    assert packages == expected, "pyproject.toml [tool.setuptools] packages must list every package of the tree"
    bundled = {p.relative_to(ROOT / "resources").as_posix() for kind in BUNDLED_KINDS
               for p in (ROOT / "resources").rglob(kind)}
    in_wheel = {n.split("/", 1)[1] for n in names if n.startswith("hsi_sr_resources/")}
    assert bundled - in_wheel == set()
    assert {"srf/cie1931_2deg_xyz_cmf_1nm.csv", "weights/cst_x4.safetensors", "weights/cst_x4.md",
            "splits/cave.json"} <= in_wheel
    assert sum(1 for n in in_wheel if n.startswith("sample/fake_and_real_food_ms/")) == 31
    assert wheel.stat().st_size < 20 * 2**20
    dist_info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"
    # the napari reader plugin: its npe2 manifest and the entry point napari finds it by
    assert "app/napari_plugin/napari.yaml" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "[napari.manifest]\nhsi-sr-viewer = app.napari_plugin:napari.yaml" in entry_points, entry_points
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA")
    requires = [line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist:")]
    core = [re.match(r"Requires-Dist: *([A-Za-z0-9_.-]+)", r).group(1) for r in requires if "extra ==" not in r]
    assert "torch" in core and not set(core) & set(OPTIONAL), core
    for extra in ("gui", "fast", "dev", "all"):
        assert any(f'extra == "{extra}"' in r for r in requires), extra


def test_installed_wheel_runs_the_headless_commands_away_from_the_checkout(installed):
    site, _, env, work = installed
    py = sys.executable
    version = _run([str(site / "bin" / "hsi-viewer"), "--version"], env, work)
    assert version.returncode == 0 and version.stdout.startswith("hsi-viewer "), version.stderr
    where = _run([py, "-c", "import app, app.core.paths as p, models.spec as s; "
                            "print(app.__file__); print(p.RESOURCES_DIR); print(s.WEIGHTS_DIR); print(p.RUNS_DIR)"],
                 env, work)
    app_file, resources, weights, runs = where.stdout.split()
    assert Path(app_file).is_relative_to(site) and Path(resources) == site / "hsi_sr_resources"
    assert Path(weights) == site / "hsi_sr_resources" / "weights" and Path(runs) == work / "runs"
    shutil.copytree(CROP, work / "crop_ms", dirs_exist_ok=True)
    runner = work / "headless.py"
    runner.write_text(HEADLESS_RUNNER)
    before = sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts)

    # CST needs its shipped weights, FUSE and the simulation of gauss-x4 the Nikon SRF table
    out = work / "eval.json"
    ran = _run([py, str(runner), "eval", "--gt", "crop_ms", "--protocol", "gauss-x4", "--models", "bicubic,cst,fuse",
                "--device", "cpu", "--json", str(out)], env, work)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = {row["model"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"bicubic", "cst", "fuse"}, rows
    assert all(np.isfinite(row["psnr"]) and row["psnr"] > 20 for row in rows.values()), rows
    assert rows["fuse"]["psnr"] > rows["bicubic"]["psnr"] + 3, rows  # the guide (through the SRF) was used

    viewer = _run([py, str(runner), "view", "--no-sample"], env, work)
    assert viewer.returncode == 2
    assert viewer.stderr.strip().splitlines() == [
        "error: the viewer needs the GUI extra (PyQt6 is not installed): pip install 'hsi-sr-viewer[gui]'"]
    assert sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts) == before, "wrote into the install"


@pytest.mark.slow  # 10-15 s; the default run checks RUNS_DIR instead (test above)
def test_installed_wheel_trains_into_the_current_folder(installed):
    site, _, env, work = installed
    data = work / "train_data"
    for name in ("one_ms", "two_ms"):
        shutil.copytree(CROP, data / name)
    ran = _run([sys.executable, "-m", "app.cli", "train", "--model", "cst", "--config", "small", "--data", str(data),
                "--protocol", "bicubic-x4", "--split", "none", "--val", "1", "--iters", "1", "--batch", "1",
                "--patch", "16", "--val-every", "1", "--val-crop", "0", "--ckpt-every", "1", "--out", "w.safetensors"],
               env, work)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (work / "runs" / "w" / "checkpoint.pt").is_file() and (work / "w.safetensors").is_file()
    assert not list(site.rglob("checkpoint.pt"))


def test_installed_wheel_imports_no_qt_for_headless_modules(installed):
    site, _, env, work = installed
    code = (
        "import sys, pkgutil, importlib, app, app.core, models, app.api, app.cli\n"
        "print(app.__file__)\n"
        "for pkg in (app.core, models):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'pyqtgraph', 'superqt')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = _run([sys.executable, "-c", code], env, work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(result.stdout.split()[0]).is_relative_to(site)


@pytest.mark.gui
def test_installed_wheel_opens_the_viewer_on_its_sample(installed):
    _, _, env, work = installed
    shot = work / "viewer.png"
    # the torch engine for the analysis: numba would compile its kernels into the fresh install first (10 s)
    ran = _run([sys.executable, "-m", "app.cli", "view", "--screenshot", str(shot)], {**env, "HSI_VIEWER_NUMBA": "0"},
               work)
    # the exit status is 1 when the sample (or anything) failed to open
    assert ran.returncode == 0, ran.stdout + ran.stderr
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    panels = pixels[:, : pixels.shape[1] * 2 // 3]  # the panel grid; the docks are on the right
    # measured: ~7900 colours and 3.6 % strongly coloured pixels with the sample, ~1400 and 1 % without
    assert len(np.unique(panels.reshape(-1, 3)[::3], axis=0)) > 4000
    assert (np.abs(panels[..., 0] - panels[..., 2]) > 60).mean() > 0.02  # the RGB guide's red pepper

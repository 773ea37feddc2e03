"""Where the application finds its bundled files and where it writes the user's: one place instead of
one ``__file__`` walk per module.

``RESOURCES_DIR`` holds the bundled sample scene, the SRF and colour-matching tables, the split files
and the weights (``models.spec`` resolves the weights the same way on its own, since ``models`` never
imports ``app``). In a source checkout (bare or installed with ``pip install -e``) it is the
checkout's ``resources/`` folder; from a wheel it is the installed package ``hsi_sr_resources``,
found with ``importlib.resources``.

User data (training runs and their caches) never go inside the installed package: ``RUNS_DIR`` is
``runs/`` in the current folder, or in :func:`user_data_dir` where the current folder cannot take it.
"""
from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

RESOURCES_PACKAGE = "hsi_sr_resources"
APP_DIR_NAME = "hsi-sr-viewer"

PROJECT_DIR = Path(__file__).resolve().parents[2]   # the checkout, or site-packages for a wheel


def _resources_dir() -> Path:
    checkout = PROJECT_DIR / "resources"
    # A checkout reads its own folder, so that code and data come from one tree even when a wheel
    # of another version is installed beside it; pyproject.toml tells a checkout from site-packages.
    if (PROJECT_DIR / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    try:
        root = importlib.resources.files(RESOURCES_PACKAGE)
    except ModuleNotFoundError:
        return checkout  # a broken install: the readers then name the missing file
    if not isinstance(root, Path):
        # readers, numba and torch need real files; a zipped install cannot give them
        raise RuntimeError(f"{RESOURCES_PACKAGE} is installed as {root!r}, not as a folder: install the "
                           f"wheel unzipped (pip install does)")
    return root


RESOURCES_DIR = _resources_dir()
SAMPLE_DIR = RESOURCES_DIR / "sample" / "fake_and_real_food_ms"   # the bundled CAVE crop (16-bit PNG bands)
SRF_DIR = RESOURCES_DIR / "srf"                                  # SRF and CIE tables (CSV, source in the header)


def user_data_dir() -> Path:
    """The platform's folder for this application's user data (not created here)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_DIR_NAME


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def default_runs_dir() -> Path:
    """``runs/`` in the current folder (so ``python main.py train`` in a checkout keeps writing to
    the checkout's runs/), else ``runs/`` in :func:`user_data_dir`: when the current folder is gone,
    read-only, or inside the installed code or bundled files (site-packages is no place for
    checkpoints)."""
    try:
        here = Path.cwd()
    except OSError:
        return user_data_dir() / "runs"
    installed = [Path(__file__).resolve().parents[1], RESOURCES_DIR]
    if any(_inside(here, folder) for folder in installed) or not os.access(here, os.W_OK | os.X_OK):
        return user_data_dir() / "runs"
    return here / "runs"


def __getattr__(name: str):
    # RUNS_DIR follows the current folder at the time it is first asked for (the train command),
    # not when this module was imported by a command that never trains
    if name == "RUNS_DIR":
        return default_runs_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

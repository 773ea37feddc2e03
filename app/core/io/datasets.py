"""CAVE scene lists, the project's split files and dataset-folder discovery (scene folders, cube files).

The 12-scene standard CAVE test split is not available here, so the held-out scenes are carved
out of the 20-scene standard training split (the last four in CMHF-Net order: ``VALIDATION_SCENES``,
which the split file calls ``report``). Training reads its scenes from a split file committed in
resources/splits/ (``load_split``): the scenes it trains on are named there, not inferred from
what a data folder happens to hold. The bundled sample is a crop of a held-out scene, so no shipped
model has seen it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.core.paths import RESOURCES_DIR

# Standard CAVE training split in CMHF-Net order (protocols.md).
CAVE_TRAIN_SPLIT = (
    "beads_ms", "thread_spools_ms", "pompoms_ms", "cloth_ms", "real_and_fake_peppers_ms",
    "fake_and_real_sushi_ms", "glass_tiles_ms", "fake_and_real_strawberries_ms",
    "fake_and_real_lemons_ms", "sponges_ms", "real_and_fake_apples_ms", "stuffed_toys_ms",
    "face_ms", "fake_and_real_peppers_ms", "oil_painting_ms", "egyptian_statue_ms",
    "photo_and_face_ms", "superballs_ms", "fake_and_real_food_ms", "paints_ms",
)
VALIDATION_SCENES = CAVE_TRAIN_SPLIT[-4:]
TRAINING_SCENES = CAVE_TRAIN_SPLIT[:-4]

SPLITS_DIR = RESOURCES_DIR / "splits"
SPLIT_ROLES = ("train", "val", "report")


@dataclass(frozen=True)
class Split:
    """Scene names by role: ``train`` (optimised on), ``val`` (validation curves, early stopping and
    any other choice), ``report`` (held out: model cards report on them, nothing is chosen on them)."""
    name: str
    path: Path
    train: tuple[str, ...]
    val: tuple[str, ...]
    report: tuple[str, ...]

    def role_of(self, scene: str) -> str | None:
        return next((r for r in SPLIT_ROLES if scene in getattr(self, r)), None)


class SplitError(ValueError):
    """A split file that cannot be read or breaks the split rules."""


def load_split(name_or_path: str | Path) -> Split:
    """A split by name (``cave`` -> resources/splits/cave.json) or by path to a JSON file with the
    lists ``train``, ``val`` and ``report``. Roles must be disjoint and ``train`` non-empty."""
    path = Path(name_or_path)
    # a bare name is a bundled split even when the current folder holds a folder of that name (the
    # CAVE data folder is often called 'cave')
    if path.suffix.lower() != ".json" and not path.is_file():
        path = SPLITS_DIR / f"{name_or_path}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in SPLITS_DIR.glob("*.json")))
        raise SplitError(f"{path}: no such split file (bundled splits: {known})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SplitError(f"{path}: not a readable JSON split file ({exc})") from None
    roles = {}
    for role in SPLIT_ROLES:
        names = raw.get(role, []) if isinstance(raw, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise SplitError(f"{path}: '{role}' must be a list of scene folder names")
        if len(set(names)) != len(names):
            raise SplitError(f"{path}: '{role}' names a scene twice")
        roles[role] = tuple(names)
    for i, a in enumerate(SPLIT_ROLES):
        for b in SPLIT_ROLES[i + 1:]:
            both = sorted(set(roles[a]) & set(roles[b]))
            if both:
                raise SplitError(f"{path}: {', '.join(both)} in both '{a}' and '{b}'")
    if not roles["train"]:
        raise SplitError(f"{path}: 'train' is empty")
    return Split(str(raw.get("name") or path.stem), path, **roles)


def scene_name(path: str | Path) -> str:
    """The name a dataset item goes by (split files, result rows): a scene folder's name, a file's stem."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def has_png_bands(folder: Path) -> bool:
    """Whether a folder holds PNG band files (a CAVE-style scene folder)."""
    try:
        return any(p.suffix.lower() == ".png" and p.is_file() and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        return False


def scene_in(folder: Path) -> Path | None:
    """The PNG scene folder a subfolder stands for: itself, or its only subfolder (CAVE's
    ``beads_ms/beads_ms/*.png`` nesting)."""
    if has_png_bands(folder):
        return folder
    try:
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return None
    return subs[0] if len(subs) == 1 and has_png_bands(subs[0]) else None


def cube_file_extensions() -> tuple[set[str], set[str]]:
    """(extensions of files that are cubes by themselves, ENVI data-file extensions), from the
    format registry: a format registered there is a dataset file here too."""
    from app.core.io import FORMATS

    envi_data = {e for e in FORMATS["envi"].extensions if e != ".hdr"} | {".bin"}
    cubes = {e for f in FORMATS.values() for e in f.extensions if e} - envi_data
    return cubes, envi_data


def scan_folder(root: Path, cubes: set[str], envi_data: set[str]) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """The entries of a dataset folder, sorted by name: ([(entry, the cube it stands for)], [entries
    that hold no cube]). A subfolder is a cube when it is a scene folder (or its only subfolder is);
    a file when its extension is in ``cubes``, or in ``envi_data`` (or it has none) without an ENVI
    header beside it. Not listed at all: hidden files (and the writers' temporary *.part files),
    ENVI data files beside their header, and JSON sidecars (``x.json`` beside ``x``,
    ``metadata.json``, ``protocol.json``)."""
    from app.core.io.envi import header_for

    items: list[tuple[Path, Path]] = []
    ignored: list[Path] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            scene = scene_in(entry)
            if scene is not None:
                items.append((entry, scene))
            else:
                ignored.append(entry)
            continue
        ext = entry.suffix.lower()
        if ext in cubes:
            items.append((entry, entry))
        elif ext in envi_data or ext == "":
            if header_for(entry) is None:
                if ext:
                    items.append((entry, entry))  # ENVI data without a header: reading says so
                else:
                    ignored.append(entry)
        elif ext == ".json" and (entry.with_suffix("").exists() or entry.name in ("metadata.json", "protocol.json")):
            continue  # sidecar metadata of a cube
        else:
            ignored.append(entry)
    return items, ignored


def dataset_items(root: str | Path) -> list[Path]:
    """The cubes of a dataset folder, sorted by name: CAVE scene folders (PNG bands; a folder whose
    only subfolder holds them counts as that subfolder) and cube files of any supported format
    (.mat, .h5, .npy, .npz, .tif, ENVI .hdr, ...; an ENVI data file counts only without its header).
    ``root`` may itself be a scene folder (one item). Hidden files and sidecars are not items."""
    root = Path(root)
    if has_png_bands(root):
        return [root]
    items, _ = scan_folder(root, *cube_file_extensions())
    return [cube for _, cube in items]


def scene_folders(root: str | Path) -> list[Path]:
    """CAVE-style scene folders under ``root`` (folders that hold PNG files), sorted by name.

    ``root`` may itself be a scene folder."""
    root = Path(root)
    if any(p.suffix.lower() == ".png" for p in root.iterdir() if p.is_file()):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and any(q.suffix.lower() == ".png" for q in p.iterdir()))


def split_scenes(root: str | Path, validation: tuple[str, ...] = VALIDATION_SCENES) -> tuple[list[Path], list[Path]]:
    """(training folders, validation folders) found under ``root``."""
    folders = scene_folders(root)
    val = [p for p in folders if p.name in validation]
    train = [p for p in folders if p.name not in validation]
    return train, val

"""CAVE scene lists and the project's fixed train/validation split.

The 12-scene standard CAVE test split is not available here, so validation uses 4 scenes carved
out of the 20-scene standard training split (the last four in CMHF-Net order). Models are trained
on the other 16 and never tuned on anything else. The bundled sample is a crop of a validation
scene, so no shipped model has seen it.
"""
from __future__ import annotations

from pathlib import Path

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

from app.core.io.datasets import CAVE_TRAIN_SPLIT, TRAINING_SCENES, VALIDATION_SCENES, scene_folders, split_scenes
from tests.conftest import SAMPLE


def test_split_is_disjoint_and_complete():
    assert len(CAVE_TRAIN_SPLIT) == 20 and len(set(CAVE_TRAIN_SPLIT)) == 20
    assert not set(TRAINING_SCENES) & set(VALIDATION_SCENES)
    assert set(TRAINING_SCENES) | set(VALIDATION_SCENES) == set(CAVE_TRAIN_SPLIT)


def test_bundled_sample_is_a_validation_scene():
    assert SAMPLE.name in VALIDATION_SCENES


def test_scene_folders(tmp_path):
    assert scene_folders(SAMPLE) == [SAMPLE]
    (tmp_path / "paints_ms").mkdir()
    (tmp_path / "paints_ms" / "paints_ms_01.png").write_bytes(b"")
    (tmp_path / "beads_ms").mkdir()
    (tmp_path / "beads_ms" / "beads_ms_01.png").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    train, val = split_scenes(tmp_path)
    assert [p.name for p in train] == ["beads_ms"] and [p.name for p in val] == ["paints_ms"]

"""The recovery folder and the record of unsaved layers, without Qt, on a real CAVE crop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.export import recovery
from app.core.export.recovery import RecoveryStore, load_entry, lock_is_alive, save_layers
from app.core.io import open_cube
from app.core.state.scene import Scene
from app.core.state.unsaved import UnsavedLayers

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def crop() -> Cube:
    return open_cube(DATA / "cave_crop.npz").load()


def computed(crop: Cube, name: str = "bicubic ×4") -> Cube:
    """A reconstruction as the run panel makes it: in memory, with provenance."""
    return Cube.from_array(np.clip(crop.data * 0.9 + 0.01, 0, 1), crop.wavelengths_nm, name=name,
                           metadata={"provenance": {"model": "bicubic", "scale": 4, "seed": 7}})


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def crash(store: RecoveryStore) -> None:
    """What a crash leaves: the lock names a process that is gone."""
    lock = json.loads((store.folder / recovery.LOCK).read_text())
    lock["pid"] = dead_pid()
    (store.folder / recovery.LOCK).write_text(json.dumps(lock))


def test_a_copy_is_written_with_provenance_and_restored_equal_after_a_crash(tmp_path, crop):
    scene = Scene()
    gt = scene.add_layer(crop, "gt", "cave")
    recon = computed(crop)
    store = RecoveryStore(tmp_path)
    assert not store.folder.exists()  # nothing is written before there is something to keep
    key = store.new_key()
    entry = store.write(key, recon, role="recon", name="bicubic ×4", inputs=store.scene_inputs(scene.layers))
    assert entry is not None and entry.file.is_file() and entry.file.suffix == ".npy"
    assert Path(str(entry.file) + ".json").is_file()
    lock = json.loads((store.folder / recovery.LOCK).read_text())
    assert lock["pid"] == os.getpid() and lock_is_alive(lock)
    manifest = json.loads((store.folder / recovery.MANIFEST).read_text())
    assert [e["name"] for e in manifest["entries"]] == ["bicubic ×4"]
    assert manifest["inputs"] == [{"role": "gt", "name": "cave", "path": str((DATA / "cave_crop.npz").resolve()),
                                   "open_options": {"var": crop.metadata["variable"]}}]
    # a live session (this process) is never offered
    assert RecoveryStore(tmp_path).stale_sessions() == []

    crash(store)
    other = RecoveryStore(tmp_path)
    sessions = other.stale_sessions()
    assert len(sessions) == 1
    session = sessions[0]
    assert session.describe() == ["Recon · bicubic ×4 (32×40×31)"]
    assert [i["path"] for i in session.existing_inputs()] == [str((DATA / "cave_crop.npz").resolve())]
    back = load_entry(session.entries[0])
    assert back.source_path is None  # still unsaved work, not a file of the user's
    np.testing.assert_array_equal(back.data, recon.data)
    np.testing.assert_array_equal(back.wavelengths_nm, crop.wavelengths_nm)
    assert back.metadata["provenance"] == {"model": "bicubic", "scale": 4, "seed": 7}
    # restored: the copy moves into the new session, the old folder goes
    moved = other.adopt(session.entries[0], session.inputs)
    other.remove_session(session)
    assert not session.folder.exists() and moved.file.parent == other.folder and moved.file.is_file()
    assert other.stale_sessions() == []
    assert gt.role == "gt"


def test_discard_close_and_a_write_that_loses_the_race(tmp_path, crop):
    store = RecoveryStore(tmp_path)
    k1, k2, k3 = store.new_key(), store.new_key(), store.new_key()
    e1 = store.write(k1, computed(crop, "a"), role="recon", name="a")
    e2 = store.write(k2, computed(crop, "b"), role="recon", name="b")
    store.discard([k1])
    assert not e1.file.exists() and not Path(str(e1.file) + ".json").exists() and e2.file.exists()
    assert [e["key"] for e in json.loads((store.folder / recovery.MANIFEST).read_text())["entries"]] == [k2]
    # discarded before its copy was written (the worker thread was late): no copy appears
    store.discard([k3])
    assert store.write(k3, computed(crop, "c"), role="recon", name="c") is None
    assert sorted(p.name for p in store.folder.glob("*.npy")) == [e2.file.name]
    # a normal end with a copy nobody was asked about: lock gone, copy kept and offered
    store.close()
    assert not (store.folder / recovery.LOCK).exists() and e2.file.exists()
    assert store.write(store.new_key(), computed(crop), role="recon", name="late") is None
    assert [s.folder for s in RecoveryStore(tmp_path).stale_sessions()] == [store.folder]
    # a normal end after everything was saved or discarded leaves nothing
    clean = RecoveryStore(tmp_path)
    key = clean.new_key()
    clean.write(key, computed(crop), role="recon", name="x")
    clean.discard([key])
    clean.close()
    assert not clean.folder.exists()


def test_big_cubes_are_not_copied_and_old_sessions_are_bounded(tmp_path, crop):
    store = RecoveryStore(tmp_path, max_cube_bytes=1000)
    with pytest.raises(HsiError, match="not kept in the recovery folder"):
        store.write(store.new_key(), crop, role="recon", name="big")
    assert not store.folder.exists()
    folders = []
    for _ in range(4):
        s = RecoveryStore(tmp_path, max_sessions=2)
        s.write(s.new_key(), computed(crop), role="recon", name="r")
        crash(s)
        folders.append(s.folder)
    sessions = RecoveryStore(tmp_path, max_sessions=2).stale_sessions()
    assert len(sessions) == 2
    assert sum(f.exists() for f in folders) == 2
    # damaged manifests and unrelated folders: no error, unrelated folders untouched
    (tmp_path / "notes").mkdir()
    (sessions[0].folder / recovery.MANIFEST).write_text("{not json")
    assert [s.folder for s in RecoveryStore(tmp_path).stale_sessions()] == [sessions[1].folder]
    assert (tmp_path / "notes").is_dir()


def test_unsaved_record_and_save_layers(tmp_path, crop):
    scene = Scene()
    scene.add_layer(crop, "gt", "cave")
    a = scene.add_layer(computed(crop, "a"), "recon", "run a")
    b = scene.add_layer(computed(crop, "b"), "recon", "run a")  # same name: two files
    record = UnsavedLayers()
    record.add(a, "run", "001")
    record.add(b, "run")
    assert record.set_key(b.uid, "002") and not record.set_key(999, "x")
    assert [e.key for e in record.among(scene.layers)] == ["001", "002"]
    with pytest.raises(ValueError):
        record.add(a, "nonsense")
    written = save_layers([a, b], tmp_path)
    assert [p.name for p in written.values()] == ["run_a.hdr", "run_a_2.hdr"]
    again = open_cube(written[b.uid])
    np.testing.assert_array_equal(again.data, b.cube.data)
    assert again.metadata["provenance"]["model"] == "bicubic"
    assert [e.uid for e in record.forget([a.uid])] == [a.uid] and len(record) == 1
    scene.remove_layer(b)
    assert [e.key for e in record.prune(scene.layers)] == ["002"] and not record

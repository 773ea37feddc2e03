"""app.core.export.session: a session round-trip restores the same scene state (files, roles, display,
zoom, pixel, pins, ROI, analysis settings, provenance of computed reconstructions); moved files go
through the locate hook; corrupt or foreign session files give a clear error naming the file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app.core.evaluation.analysis import Roi
from app.core.export.data import export_cube
from app.core.io import open_cube
from app.core.state.scene import DisplayMode, Scene
from app.core.state.selection import ABChoice
from app.core.export.session import (SESSION_VERSION, SessionError, load_session, memory_layers, restore_session,
                              save_session, session_state)
from tests.core.export_helpers import food_scene
from tests.conftest import DATA


def styled(scene: Scene) -> Scene:
    scene.set_mode(DisplayMode.RGB)
    scene.set_rgb_nm((620, 540, 450))
    scene.set_band(17)
    scene.set_percentiles(2.0, 97.5)
    scene.set_shared_contrast(False)
    scene.set_colormap("viridis")
    scene.set_view_range((10.5, 60.0), (20.0, 70.25))
    scene.set_pixel(33, 44)
    scene.add_pin(5, 6)
    scene.add_pin(70, 80)
    scene.set_roi(Roi.polygon([(10, 10), (40, 12), (30, 50)]))
    scene.set_analysis_settings(scope="roi", error_kind="abs_band", curve_metric="ssim")
    return scene


def test_round_trip_restores_the_same_state_and_computed_layers(tmp_path):
    scene = styled(food_scene())
    assert len(memory_layers(scene)) == 5  # crops built in memory + the bicubic run
    path = tmp_path / "s.hsisession.json"
    report = save_session(scene, path, layout={"columns": 3, "geometry": "abcd"})
    assert len(report.written) == 5 and all(p.exists() for p in report.written)
    data = load_session(path)
    assert data["version"] == SESSION_VERSION
    bicubic = next(e for e in data["layers"] if e["name"].startswith("bicubic"))
    for key in ("model", "weights_sha256", "scale", "seed", "device", "time"):
        assert key in bicubic["provenance"], key
    assert bicubic["kind"] == "computed"

    restored = Scene()
    back = restore_session(path, restored)
    assert back.skipped == [] and back.layout == {"columns": 3, "geometry": "abcd"}
    assert session_state(restored) == session_state(scene)
    for a, b in zip(scene.layers, restored.layers):
        assert np.array_equal(a.cube.data, b.cube.data)
        assert a.cube.metadata.get("provenance", {}).get("model") == b.cube.metadata.get("provenance", {}).get("model")
    recon = next(l for l in restored.layers if l.name.startswith("bicubic"))
    assert recon.cube.metadata["provenance"]["time"] == bicubic["provenance"]["time"]


def test_the_ab_comparison_is_saved_by_layer_and_restored_on_the_new_layers(tmp_path):
    scene = food_scene()
    gt, recon = scene.layers_with_role("gt")[0], scene.layers_with_role("recon")[-1]
    path = tmp_path / "ab.hsisession.json"
    save_session(scene, path, compare=ABChoice("flicker", recon.uid, gt.uid, 41.5))
    data = load_session(path)
    names = [e["name"] for e in data["layers"]]
    assert data["compare"]["mode"] == "flicker" and data["compare"]["divider_x"] == 41.5
    assert names[data["compare"]["a"]] == recon.name and names[data["compare"]["b"]] == gt.name
    restored = Scene()
    restored.add_layer(scene.layers[0].cube, "gt", "an older layer")  # uids differ after a restore
    back = restore_session(path, restored)
    by_uid = {layer.uid: layer for layer in restored.layers}
    assert back.compare["mode"] == "flicker" and back.compare["divider_x"] == 41.5
    assert by_uid[back.compare["a_uid"]].name == recon.name and by_uid[back.compare["b_uid"]].name == gt.name
    assert back.compare["a_uid"] != recon.uid  # the restored layer, not the saved uid
    # a session without an A/B comparison (older files) restores none
    save_session(scene, path)
    assert load_session(path)["compare"] is None and restore_session(path, Scene()).compare is None


@pytest.mark.parametrize("compare, message", [
    ({"mode": "blink", "a": 0, "b": 1}, "A/B mode"),
    ({"mode": "swipe", "a": 5, "b": 0}, "index of a layer"),
    ({"mode": "swipe", "a": 0, "b": 0, "divider_x": "left"}, "divider"),
    ([1, 2], "\"compare\" must be an object"),
])
def test_a_damaged_ab_comparison_is_refused(tmp_path, compare, message):
    scene = food_scene(with_computed=False)
    path = tmp_path / "s.hsisession.json"
    save_session(scene, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["compare"] = compare
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SessionError, match=message):
        load_session(path)


def test_files_opened_with_options_are_reopened_the_same_way(tmp_path):
    """A real CAVE crop stored BHW in a .npy: the layout the user chose is recorded and reused."""
    src = tmp_path / "data" / "cave_crop_bhw.npy"
    src.parent.mkdir()
    shutil.copy(DATA / "cave_crop_bhw.npy", src)
    cube = open_cube(src, layout="BHW")
    cube.metadata["open_options"] = {"layout": "BHW"}
    scene = Scene()
    scene.add_layer(cube, "gt", "crop")
    scene.set_band(3)
    path = tmp_path / "s.json"
    save_session(scene, path)
    entry = load_session(path)["layers"][0]
    assert entry["kind"] == "file" and entry["open_options"] == {"layout": "BHW"}
    restored = Scene()
    restore_session(path, restored)
    assert np.array_equal(restored.layers[0].cube.data, cube.data)
    assert restored.band == 3


def test_a_wavelength_side_file_is_kept_by_the_session(tmp_path):
    """The same real crop without wavelengths, given them from a side file: the session reopens the
    file with the side file, so the band centres come back."""
    src = tmp_path / "data" / "cave_crop_bhw.npy"
    src.parent.mkdir()
    shutil.copy(DATA / "cave_crop_bhw.npy", src)
    side = tmp_path / "data" / "bands.txt"
    centres = np.linspace(400.0, 700.0, 31)
    side.write_text("\n".join(f"{w:.1f}" for w in centres) + "\n", encoding="utf-8")
    cube = open_cube(src, layout="BHW", wavelengths=side)
    cube.metadata["open_options"] = {"layout": "BHW", "wavelengths": str(side)}
    scene = Scene()
    scene.add_layer(cube, "gt", "crop")
    path = tmp_path / "s.json"
    save_session(scene, path)
    assert load_session(path)["layers"][0]["open_options"]["wavelengths"] == str(side)
    restored = Scene()
    restore_session(path, restored)
    assert np.allclose(restored.layers[0].cube.wavelengths_nm, centres)


def test_moved_files_go_through_the_locate_hook(tmp_path):
    scene = styled(food_scene(with_computed=False))
    session = tmp_path / "a" / "s.json"
    save_session(scene, session)
    # move the data folder somewhere the relative path does not reach either
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "a" / "s_data"), str(moved))
    asked = []

    def locate(missing):
        asked.append(missing)
        return moved / missing.name

    restored = Scene()
    report = restore_session(session, restored, locate=locate)
    assert len(asked) == 4 and all(not p.exists() for p in asked)
    assert report.skipped == [] and len(report.notes) == 4
    assert session_state(restored) == session_state(scene)

    # the user cancels for one file: that layer is skipped and named, the rest is restored
    restored2 = Scene()
    report2 = restore_session(session, restored2,
                              locate=lambda p: None if "lr" in p.name else moved / p.name)
    assert len(restored2.layers) == 3 and len(report2.skipped) == 1 and "food_lr" in report2.skipped[0]


def test_a_moved_session_folder_is_found_relative_to_the_session(tmp_path):
    scene = food_scene(with_computed=False)
    save_session(scene, tmp_path / "a" / "s.json")
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    restored = Scene()
    report = restore_session(tmp_path / "b" / "s.json", restored,
                             locate=lambda p: pytest.fail("should be found next to the session"))
    assert len(restored.layers) == 4 and report.skipped == []


def test_unsaved_memory_layers_are_reported(tmp_path):
    scene = food_scene()
    report = save_session(scene, tmp_path / "s.json", write_computed=False)
    assert len(report.memory_only) == 5 and not (tmp_path / "s_data").exists()
    restored = Scene()
    back = restore_session(tmp_path / "s.json", restored)
    assert len(back.skipped) == 5 and "not saved with the session" in back.skipped[0]


@pytest.mark.parametrize("content, message", [
    ("{ this is not json", "not a valid session file"),
    ('{"some": "other program"}', "is not a session file"),
    ('{"format": "hsi-sr-viewer session", "version": 99, "layers": []}', "newer version"),
    ('{"format": "hsi-sr-viewer session", "version": 1, "layers": [{"role": "boss", "name": "x"}]}', "unknown role"),
    ('{"format": "hsi-sr-viewer session", "version": 1, "layers": [], "selection": {"pins": [[1]]}}', "pin"),
])
def test_corrupt_or_foreign_session_files_say_so(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    scene = food_scene(with_computed=False)
    before = session_state(scene)
    with pytest.raises(SessionError, match=message) as info:
        restore_session(path, scene)
    assert str(path) in str(info.value)
    assert session_state(scene) == before  # untouched


def test_binary_and_missing_session_files(tmp_path):
    binary = tmp_path / "cube.npy"
    shutil.copy(DATA / "cave_crop_bhw.npy", binary)
    with pytest.raises(SessionError, match="not") as info:
        load_session(binary)
    assert str(binary) in str(info.value)
    with pytest.raises(SessionError, match="no such session file"):
        load_session(tmp_path / "nothing.json")


def test_exported_cube_keeps_provenance_through_a_session(tmp_path):
    """A reconstruction exported to ENVI and reopened from the session keeps its provenance."""
    scene = food_scene()
    recon = scene.layers[-1]
    hdr = export_cube(recon.cube, tmp_path / "recon.hdr")
    scene2 = Scene()
    scene2.add_layer(open_cube(hdr), "recon", "bicubic from file")
    save_session(scene2, tmp_path / "s.json")
    entry = json.loads((tmp_path / "s.json").read_text())["layers"][0]
    assert entry["kind"] == "file" and entry["provenance"]["model"] == "bicubic"
    assert entry["provenance"]["time"] == recon.cube.metadata["provenance"]["time"]


def test_method_colours_survive_a_session_whatever_the_order(tmp_path):
    scene = food_scene()
    recon = next(l for l in scene.layers if l.role == "recon")
    scene.set_method_colour(recon.name, "#abcdef")
    scene.method_colour("closed method")  # a method seen earlier keeps its colour too
    path = tmp_path / "c.hsisession.json"
    save_session(scene, path)
    assert load_session(path)["method_colours"][recon.name] == "#abcdef"
    restored = Scene()
    restored.method_colour(recon.name)  # a colour given before the restore is replaced by the saved one
    restore_session(path, restored)
    assert restored.method_colour(recon.name) == "#abcdef"
    assert restored.method_colours == scene.method_colours


def test_bad_method_colours_are_refused(tmp_path):
    path = tmp_path / "bad.hsisession.json"
    save_session(Scene(), path)
    data = json.loads(path.read_text())
    data["method_colours"] = {"gsa": "not a colour"}
    path.write_text(json.dumps(data))
    with pytest.raises(SessionError, match="method_colours"):
        load_session(path)

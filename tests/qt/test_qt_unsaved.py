"""Unsaved results in the viewer: a bicubic run on a real crop of the CAVE sample gets a recovery
copy; Close all, a panel's close button and Quit ask Save / Discard / Cancel; a crashed session is
offered back and restored with equal data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from app.core.cube import Cube
from app.core.export import recovery
from app.core.export.data import export_cube
from app.core.io import open_cube
from app.core.state.scene import Scene
from app.qt import dialogs
from tests.qt.conftest import CROP, SCALE, WL, food_array

pytestmark = pytest.mark.gui

RUN_TIMEOUT_MS = 60_000
RECON_LABEL = f"Recon · bicubic ×{SCALE}"


class Answers:
    """Stands in for a dialog: records each question and gives the next answer."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked: list[tuple] = []

    def __call__(self, parent, *args):
        self.asked.append(args)
        assert self.answers, f"asked once too often: {args}"
        return self.answers.pop(0)


def run_bicubic(window, qtbot):
    """Run the panel's default model (bicubic ×4) and wait for its recovery copy; its layer."""
    panel = window.run_panel
    assert panel.selected_model() == "bicubic"
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert panel.start_run()
    assert finished.args == ["done"]
    qtbot.waitUntil(lambda: not window.recovery_busy, timeout=RUN_TIMEOUT_MS)
    layer = window.scene.layers_with_role("recon")[-1]
    assert layer.name.startswith(f"bicubic ×{SCALE}") and layer.uid in window.unsaved
    return layer


def copies(window) -> list[Path]:
    return sorted(window.recovery.folder.glob("*.npy"))


def test_close_all_asks_cancel_keeps_save_writes_cubes_that_reopen_equal(window, qtbot, monkeypatch, tmp_path,
                                                                        recovery_dir):
    layer = run_bicubic(window, qtbot)
    data = np.array(layer.cube.data)
    assert window.recovery.folder.parent == recovery_dir
    [copy] = copies(window)
    np.testing.assert_array_equal(np.load(copy), data)
    manifest = json.loads((window.recovery.folder / recovery.MANIFEST).read_text())
    assert [e["name"] for e in manifest["entries"]] == [layer.name]
    box = dialogs.unsaved_box(window, "Close all layers", [layer.label])
    assert layer.label in box.informativeText() and box.standardButtons() == (
        QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
    box.deleteLater()

    ask = Answers("cancel", "save")
    monkeypatch.setattr(dialogs, "ask_unsaved", ask)
    before = [l.uid for l in window.scene.layers]
    window.close_all_action.trigger()
    assert ask.asked == [("Close all layers", [RECON_LABEL])]
    assert [l.uid for l in window.scene.layers] == before and copies(window) == [copy]

    folder = tmp_path / "saved"
    folder.mkdir()
    monkeypatch.setattr(dialogs, "ask_save_folder", lambda parent, start: str(folder))
    window.close_all_action.trigger()
    assert len(ask.asked) == 2 and window.scene.layers == ()
    saved = folder / f"bicubic_{SCALE}.hdr"
    assert saved.is_file() and not window.unsaved
    again = open_cube(saved)
    np.testing.assert_array_equal(again.data, data)
    assert again.metadata["provenance"]["model"] == "bicubic"
    assert copies(window) == []  # saved: the recovery copy is gone

    # nothing unsaved: quitting asks nothing and leaves no recovery folder behind
    monkeypatch.setattr(dialogs, "ask_unsaved", Answers())
    assert window.close()
    assert not window.recovery.folder.exists()


def test_closing_a_result_panel_asks_and_discard_drops_its_recovery_copy(window, qtbot, monkeypatch, errors):
    layer = run_bicubic(window, qtbot)
    [copy] = copies(window)
    ask = Answers("cancel", "discard")
    monkeypatch.setattr(dialogs, "ask_unsaved", ask)
    button = window.grid.panel_for(layer.uid).close_button
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert ask.asked == [("Close this panel", [RECON_LABEL])] and layer in window.scene.layers
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert layer not in window.scene.layers and layer.uid not in window.unsaved
    assert not copy.exists() and not Path(str(copy) + ".json").exists()
    # a layer that is not a result of this session closes without a question
    gt = window.scene.layers_with_role("gt")[0]
    qtbot.mouseClick(window.grid.panel_for(gt.uid).close_button, Qt.MouseButton.LeftButton)
    assert gt not in window.scene.layers and len(ask.asked) == 2 and errors == []


def test_quit_with_unsaved_results_asks_and_cancel_keeps_the_window(window, qtbot, monkeypatch):
    run_bicubic(window, qtbot)
    ask = Answers("cancel", "discard")
    monkeypatch.setattr(dialogs, "ask_unsaved", ask)
    assert window.close() is False and window.isVisible()
    assert ask.asked == [("Quit", [RECON_LABEL])]
    assert window.close() is True
    assert not window.recovery.folder.exists()  # discarded and ended normally: nothing to offer


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_crashed_session_is_offered_back_and_restore_brings_back_equal_data(qtbot, settings, tmp_path, monkeypatch):
    from app.qt.app import build_window
    from app.qt.main_window import MainWindow

    # the inputs are files, so that the restore reopens them too
    gt = food_array()
    lr = gt.reshape(CROP // SCALE, SCALE, CROP // SCALE, SCALE, -1).mean(axis=(1, 3))
    gt_path = export_cube(Cube.from_array(gt, WL, name="food_gt"), tmp_path / "food_gt.npy")
    lr_path = export_cube(Cube.from_array(lr, WL, name="food_lr"), tmp_path / "food_lr.npy")
    scene = Scene()
    scene.add_layer(open_cube(gt_path).load(), "gt", "food_gt")
    scene.add_layer(open_cube(lr_path).load(), "lr", "food_lr")
    first = MainWindow(scene, settings=settings)
    qtbot.addWidget(first)
    layer = run_bicubic(first, qtbot)
    data = np.array(layer.cube.data)
    # the crash: the process that holds the lock is gone (the folder stays as it was)
    lock_path = first.recovery.folder / recovery.LOCK
    lock = json.loads(lock_path.read_text())
    lock["pid"] = dead_pid()
    lock_path.write_text(json.dumps(lock))
    crashed = first.recovery.folder

    later = Answers("later")
    monkeypatch.setattr(dialogs, "ask_recover", later)
    waiting = MainWindow(Scene(), settings=settings)
    qtbot.addWidget(waiting)
    assert waiting.offer_recovery() is False and crashed.is_dir()
    started, labels, inputs = later.asked[0]
    assert labels == [f"{RECON_LABEL} ({CROP}×{CROP}×31)"]
    assert inputs == [f"GT {gt_path.resolve()}", f"LR {lr_path.resolve()}"]

    restore = Answers("restore")
    monkeypatch.setattr(dialogs, "ask_recover", restore)
    second = build_window(open_sample=False, settings=settings, offer_recovery=True)
    qtbot.addWidget(second)
    assert len(restore.asked) == 1
    qtbot.waitUntil(lambda: not second.loading and len(second.scene.layers) == 3, timeout=RUN_TIMEOUT_MS)
    roles = {l.role: l for l in second.scene.layers}
    assert set(roles) == {"gt", "lr", "recon"}
    assert roles["gt"].cube.source_path == gt_path.resolve()
    back = roles["recon"]
    assert back.name == layer.name and back.cube.source_path is None
    np.testing.assert_array_equal(back.cube.data, data)
    assert back.cube.metadata["provenance"]["model"] == "bicubic"
    # still unsaved work, now kept by the new window; the crashed session's folder is gone
    assert back.uid in second.unsaved and not crashed.exists()
    [copy] = copies(second)
    np.testing.assert_array_equal(np.load(copy), data)
    assert second.recovery.stale_sessions() == [] and second.errors_reported == []


def test_opening_an_image_from_the_results_browser_asks_before_replacing_results(window, qtbot, monkeypatch,
                                                                                 tmp_path, errors):
    from tests.core.test_browser import make_dataset, run_compare

    dataset = make_dataset(tmp_path / "ds")
    results = run_compare(dataset, tmp_path / "results.json")
    layer = run_bicubic(window, qtbot)
    browser = window.open_results_browser()
    assert browser.open_json(results)
    ask = Answers("cancel", "discard")
    monkeypatch.setattr(dialogs, "ask_unsaved", ask)
    before = window.scene.layers
    browser.open_image("food_pepper_ms")
    assert ask.asked == [("Open an image from the results browser", [RECON_LABEL])]
    assert window.scene.layers == before and not browser.busy
    with qtbot.waitSignal(browser.scene_opened, timeout=30000):
        browser.open_image("food_pepper_ms")
    assert [(l.role, l.name) for l in window.scene.layers] == [("gt", "food_pepper_ms"), ("recon", "bicubic"),
                                                               ("recon", "noisy")]
    assert len(ask.asked) == 2 and layer.uid not in window.unsaved and copies(window) == []
    assert errors == [] and browser.errors_reported == []


def test_exporting_the_cube_or_a_session_that_writes_it_saves_it(window, qtbot, monkeypatch, tmp_path, errors):
    monkeypatch.setattr(dialogs, "ask_unsaved", Answers())  # no question may come
    first = run_bicubic(window, qtbot)
    window.exporter.export_cube(str(tmp_path / "first.hdr"), uid=first.uid, background=False)
    assert first.uid not in window.unsaved and copies(window) == []
    np.testing.assert_array_equal(open_cube(tmp_path / "first.hdr").data, first.cube.data)
    second = run_bicubic(window, qtbot)
    assert len(copies(window)) == 1
    window.exporter.save_session(str(tmp_path / "s.hsisession.json"), write_computed=True)
    assert second.uid not in window.unsaved and copies(window) == []
    window.close_all_action.trigger()
    assert window.scene.layers == () and errors == []


def test_a_result_that_arrives_while_the_question_is_open_is_asked_about_too(window, qtbot, monkeypatch):
    first = run_bicubic(window, qtbot)
    recon = window.scene.layers_with_role("recon")[0].cube
    late: list = []

    def answer(parent, action, labels):
        late.append(labels)
        if len(late) == 1:  # a run finishes while the user reads the question
            layer = window.scene.add_layer(recon.with_data(recon.data), "recon", "late run")
            window.run_panel.computed.emit([layer], "run")
            return "discard"
        return "cancel"

    monkeypatch.setattr(dialogs, "ask_unsaved", answer)
    assert window.close_all_layers() is False
    assert late == [[RECON_LABEL], ["Recon · late run"]]
    assert first in window.scene.layers and first.uid not in window.unsaved  # discarded, not closed (Cancel)
    assert [l.name for l in window.scene.layers if l.uid in window.unsaved] == ["late run"]
    qtbot.waitUntil(lambda: not window.recovery_busy, timeout=RUN_TIMEOUT_MS)
    assert [p.name for p in copies(window)] == ["002_late_run.npy"]


def test_opening_a_session_asks_before_replacing_results(window, qtbot, monkeypatch, tmp_path, errors):
    window.exporter.save_session(str(tmp_path / "before.hsisession.json"), write_computed=True)
    layer = run_bicubic(window, qtbot)
    ask = Answers("cancel", "discard")
    monkeypatch.setattr(dialogs, "ask_unsaved", ask)
    assert window.exporter.open_session(str(tmp_path / "before.hsisession.json")) is None
    assert ask.asked == [("Open a session", [RECON_LABEL])] and layer in window.scene.layers
    report = window.exporter.open_session(str(tmp_path / "before.hsisession.json"))
    assert report is not None and layer not in window.scene.layers and copies(window) == []
    assert len(window.scene.layers) == 4 and errors == []

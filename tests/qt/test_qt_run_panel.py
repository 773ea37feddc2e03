"""The Run model dock on a real scene: greyed-out models with reasons, a run adds the engine's
output as a reconstruction, cancel, simulated inputs, current-view runs, errors as dialogs."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence

from app.core.inference.engine import run_model, run_to_end
from app.qt import dialogs
from tests.core.test_runs import fake_fusion_spec, register_temporarily, slow_iterative_spec
from tests.qt.conftest import CROP, SCALE

pytestmark = pytest.mark.gui

RUN_TIMEOUT_MS = 60_000


def click(qtbot, button):
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def recons(window):
    return window.scene.layers_with_role("recon")


def test_models_whose_inputs_are_missing_are_greyed_out_with_the_reason(window, monkeypatch):
    panel = window.run_panel
    register_temporarily(monkeypatch, fake_fusion_spec())
    panel.refresh()
    assert panel.is_enabled("bicubic") and panel.reason_for("bicubic") is None
    assert panel.is_enabled("fake_fusion")
    assert panel.selected_model() == "bicubic" and panel.run_button.isEnabled()
    # the test scene's RGB guide names no SRF and its LR no protocol: both assumptions are said
    assert "assumed" in panel.inputs_label.text() and "gauss-x4" in panel.inputs_label.text()
    assert not panel.scale_spin.isEnabled() and panel.scale_spin.value() == SCALE

    window.scene.remove_layer(window.scene.layers_with_role("guide")[0])
    assert panel.is_enabled("bicubic")
    assert not panel.is_enabled("fake_fusion")
    assert panel.reason_for("fake_fusion").startswith("needs HR-MSI guide")
    index = next(i for i in range(panel.model_combo.count())
                 if panel.model_combo.itemData(i, Qt.ItemDataRole.UserRole) == "fake_fusion")
    assert "needs HR-MSI guide" in panel.model_combo.itemText(index)
    assert "needs HR-MSI guide" in panel.model_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    panel.select_model("fake_fusion")
    assert not panel.run_button.isEnabled()
    assert "needs HR-MSI guide" in panel.reason_label.text()
    if "gsa" in [panel.model_combo.itemData(i, Qt.ItemDataRole.UserRole) for i in range(panel.model_combo.count())]:
        assert not panel.is_enabled("gsa") and "needs HR-MSI guide" in panel.reason_for("gsa")


def test_run_adds_a_reconstruction_equal_to_the_engine_output(window, qtbot, errors):
    panel = window.run_panel
    before = len(recons(window))
    panel.seed_spin.setValue(7)
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        click(qtbot, panel.run_button)
        assert panel.running and not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    assert finished.args == ["done"] and errors == []
    assert len(recons(window)) == before + 1
    layer = recons(window)[-1]
    assert layer.name == f"bicubic ×{SCALE}" and layer.cube.shape == (CROP, CROP, 31)
    lr = window.scene.layers_with_role("lr")[0].cube
    expected = run_to_end(run_model("bicubic", lr.data, scale=SCALE, seed=7)).data
    np.testing.assert_array_equal(layer.cube.data, np.clip(expected, 0, 1))
    prov = layer.cube.metadata["provenance"]
    assert prov["model"] == "bicubic" and prov["scale"] == SCALE and prov["seed"] == 7 and prov["roi"] is None
    assert "weights_sha256" in prov and "time" in prov and prov["device"] == "cpu"
    # the provenance is visible: panel tooltip and the provenance dialog's text
    panel_widget = window.grid.panel_for(layer.uid)
    assert "Bicubic upsampling ×4 output" in panel_widget.name_label.toolTip()
    assert "model: bicubic" in panel.provenance_report() and "seed: 7" in panel.provenance_report()
    assert not panel.running and panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.progress_bar.value() == 1000 and "added" in panel.progress_label.text()


def test_ctrl_r_runs_the_model(window, qtbot):
    assert window.run_action.shortcut() == QKeySequence("Ctrl+R")
    window.activateWindow()
    target = window.grid.panels[0].graphics
    target.setFocus()
    with qtbot.waitSignal(window.run_panel.job_finished, timeout=RUN_TIMEOUT_MS):
        qtbot.keyClick(target, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert recons(window)[-1].name == f"bicubic ×{SCALE}"
    assert window.run_dock.isVisible()


def test_cancel_stops_a_slow_iterative_model_and_adds_nothing(window, qtbot, monkeypatch, errors):
    counter: dict = {}
    register_temporarily(monkeypatch, slow_iterative_spec(counter, delay_s=0.02, steps=500))
    panel = window.run_panel
    panel.refresh()
    panel.select_model("slow_iter")
    assert panel.steps_spin.isEnabled() and panel.steps_spin.value() == 500
    before = [l.uid for l in window.scene.layers]
    click(qtbot, panel.run_button)
    qtbot.waitUntil(lambda: counter.get("steps", 0) >= 20, timeout=RUN_TIMEOUT_MS)
    # the GUI thread is free while the model runs: progress and the preview arrive
    qtbot.waitUntil(lambda: panel.preview_label.isVisible() and panel.progress_bar.value() > 0, timeout=5000)
    assert "step" in panel.progress_label.text() and "loss" in panel.progress_label.text()
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        click(qtbot, panel.cancel_button)
    assert finished.args == ["cancelled"]
    assert counter["steps"] < 500 and "finished" not in counter
    assert [l.uid for l in window.scene.layers] == before and errors == []
    assert panel.progress_label.text() == "cancelled" and panel.run_button.isEnabled()
    assert not panel.preview_label.isVisible()


def test_closing_the_window_cancels_a_running_model(window, qtbot, monkeypatch):
    counter: dict = {}
    register_temporarily(monkeypatch, slow_iterative_spec(counter, delay_s=0.02, steps=2000))
    panel = window.run_panel
    panel.refresh()
    panel.select_model("slow_iter")
    click(qtbot, panel.run_button)
    qtbot.waitUntil(lambda: counter.get("steps", 0) >= 2, timeout=RUN_TIMEOUT_MS)
    window.close()
    assert "finished" not in counter
    assert not panel.worker.threads_alive  # shut down before the window went away


def test_simulate_inputs_adds_lr_and_guide_with_the_protocol_scale(window, qtbot, monkeypatch, errors):
    asked = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: asked.append(text) or True)
    panel = window.run_panel
    panel.protocol_combo.setCurrentIndex(panel.protocol_combo.findData("gauss-x8"))
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        click(qtbot, panel.simulate_button)
    assert finished.args == ["done"] and errors == []
    # the test scene's LR and guide came from files: the user was asked before replacing them
    assert len(asked) == 1 and "food_lr" in asked[0]
    lrs, guides = window.scene.layers_with_role("lr"), window.scene.layers_with_role("guide")
    assert [l.name for l in lrs] == ["LR (gauss-x8)"] and lrs[0].scale == 8
    assert lrs[0].cube.shape == (CROP // 8, CROP // 8, 31)
    assert len(guides) == 1 and guides[0].cube.shape == (CROP, CROP, 3)
    assert panel.scale_spin.value() == 8 and "from the LR's protocol" in panel.inputs_label.text()
    # simulated layers are replaced without asking
    panel.protocol_combo.setCurrentIndex(panel.protocol_combo.findData("bicubic-x4"))
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS):
        click(qtbot, panel.simulate_button)
    assert len(asked) == 1
    assert [l.name for l in window.scene.layers_with_role("lr")] == ["LR (bicubic-x4)"]
    assert window.scene.layers_with_role("guide") == []  # bicubic-x4 makes no guide


def test_simulate_keeps_real_inputs_when_the_user_says_no(window, qtbot, monkeypatch):
    monkeypatch.setattr(dialogs, "confirm", lambda *args: False)
    before = [l.uid for l in window.scene.layers]
    assert window.run_panel.start_simulation() is False
    assert not window.run_panel.running and [l.uid for l in window.scene.layers] == before


def test_current_view_only_records_the_region_in_the_provenance(window, qtbot, errors):
    panel = window.run_panel
    window.scene.set_view_range((8.0, 40.0), (16.0, 50.0))
    panel.view_check.setChecked(True)
    assert panel.view_label.text().startswith("LR rows 4–13, cols 2–10")
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS):
        click(qtbot, panel.run_button)
    assert errors == []
    layer = recons(window)[-1]
    roi = layer.cube.metadata["provenance"]["roi"]
    assert roi["rows"] == [16, 52] and roi["cols"] == [8, 40]
    assert layer.name == f"bicubic ×{SCALE} (view)" and layer.cube.shape == (CROP, CROP, 31)
    data = layer.cube.data
    assert data[16:52, 8:40].any()
    outside = data.copy()
    outside[16:52, 8:40] = 0
    assert not outside.any()
    assert "HR rows 16–52, cols 8–40" in panel.provenance_report()


def test_errors_become_dialogs(window, qtbot, monkeypatch, errors):
    panel = window.run_panel
    window.scene.set_view_range((500.0, 600.0), (0.0, 40.0))
    panel.view_check.setChecked(True)
    assert panel.start_run() is False
    assert errors and "no part of the image" in errors[-1][1]
    panel.view_check.setChecked(False)

    def broken_factory(scale, bands, **_):
        raise RuntimeError("the weights are on holiday")

    spec = fake_fusion_spec("broken")
    from dataclasses import replace

    register_temporarily(monkeypatch, replace(spec, inputs=("lr_hsi",), factory=broken_factory))
    panel.refresh()
    panel.select_model("broken")
    before = len(recons(window))
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        click(qtbot, panel.run_button)
    assert finished.args == ["failed"]
    assert "The model run failed" in errors[-1][0] and "on holiday" in errors[-1][1]
    assert len(recons(window)) == before and panel.run_button.isEnabled()


def test_the_scale_is_free_when_the_lr_is_the_only_layer(window, qtbot, errors):
    scene = window.scene
    for layer in [l for l in scene.layers if l.role != "lr"]:
        scene.remove_layer(layer)
    panel = window.run_panel
    assert panel.scale_spin.isEnabled() and panel.scale_spin.value() == SCALE  # the LR's metadata
    assert "not fixed" in panel.inputs_label.text()
    panel.scale_spin.setValue(2)
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS):
        click(qtbot, panel.run_button)
    assert errors == []
    layer = recons(window)[-1]
    assert layer.name == "bicubic ×2" and layer.cube.shape == (CROP // SCALE * 2, CROP // SCALE * 2, 31)
    # now the reconstruction sets the HR grid: the scale is fixed by the data
    assert scene.layers_with_role("lr")[0].scale == 2
    assert not panel.scale_spin.isEnabled() and panel.scale_spin.value() == 2


def test_fuse_runs_with_the_guided_prior_when_asked(window, qtbot, errors):
    panel = window.run_panel
    panel.select_model("bicubic")
    assert not panel.prior_check.isEnabled()  # only models with a 'prior' option
    panel.select_model("fuse")
    assert panel.prior_check.isEnabled()
    panel.prior_check.setChecked(True)
    with qtbot.waitSignal(panel.job_finished, timeout=RUN_TIMEOUT_MS) as finished:
        click(qtbot, panel.run_button)
    assert finished.args == ["done"] and errors == []
    layer = recons(window)[-1]
    assert layer.name == f"fuse ×{SCALE} prior=guided"
    assert layer.cube.metadata["provenance"]["options"] == {"prior": "guided"}

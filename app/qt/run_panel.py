"""The "Run model" dock: pick a model, scale, device and steps, run it on a worker thread with
progress and cancel, and add the result as a reconstruction layer; simulate LR/guide from the GT.

All decisions (which inputs exist, why a model cannot run, what a run does) are made by
``app.core.inference.runs``; this module shows them and drives its generators on a
:class:`app.qt.workers.Worker`.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QSignalBlocker, Qt, pyqtSignal
from PyQt6.QtGui import QImage, QPixmap, QStandardItem, QStandardItemModel
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                             QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout,
                             QWidget)

from app.core.inference import runs
from app.core.science.degrade import available_protocols, parse_protocol
from app.core.inference.engine import Progress, available_devices
from app.core.errors import HsiError
from app.core.state.scene import Scene, percentile_levels
from app.qt import dialogs, theme
from app.qt.binding import subscribe
from app.qt.graphics import ComboBox
from app.qt.workers import Worker
from models.registry import StopRequested

PROGRESS_INTERVAL_S = 0.05   # at most ~20 progress updates a second reach the GUI thread
PREVIEW_INTERVAL_S = 0.3     # and a preview image at most every 0.3 s
PREVIEW_SIZE_PX = 160
RUN_JOB = "run"  # a model run or a simulation: one at a time


def progress_throttle() -> Callable[[Progress], Progress | None]:
    """A progress filter for the worker thread: at most ~20 updates a second and a preview image
    every 0.3 s reach the GUI thread (an iterative model yields far faster than it can paint),
    always the last step."""
    last = {"progress": 0.0, "preview": 0.0}

    def keep(progress: Progress) -> Progress | None:
        now = time.monotonic()
        has_preview = getattr(progress, "preview", None) is not None
        preview_due = has_preview and now - last["preview"] >= PREVIEW_INTERVAL_S
        if not (preview_due or now - last["progress"] >= PROGRESS_INTERVAL_S or progress.fraction >= 1.0):
            return None
        if has_preview and not preview_due:
            progress = Progress(progress.fraction, progress.message, progress.step, progress.total,
                                progress.loss, None)
        last["progress"] = now
        if preview_due:
            last["preview"] = now
        return progress

    return keep


class RunPanel(QWidget):
    """Signals:
        running_changed(bool): a run or a simulation started / ended.
        job_finished(str): 'done', 'cancelled' or 'failed' after a run or simulation.
        layer_added(object): the reconstruction layer a run added.
        computed(object, str): the layers a job added (a list) and 'run' or 'simulation': work
            that exists only in memory (the window keeps a recovery copy and asks before dropping it).
    """

    running_changed = pyqtSignal(bool)
    job_finished = pyqtSignal(str)
    layer_added = pyqtSignal(object)
    computed = pyqtSignal(object, str)

    def __init__(self, scene: Scene, report_error: Callable[[BaseException, str], None] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.scene = scene
        self._report_error = report_error
        self.worker = Worker(self, name="model-run")
        self.worker.progress.connect(lambda _key, _ticket, progress: self._on_progress(progress))
        self._job_kind = ""
        self._keep_result = False  # the running job ends with its best estimate when stopped
        self._remove_on_simulated: list = []
        self._steps_model: str | None = None
        self._user_protocol = False  # the user picked a protocol: layer changes do not reset it
        self._user_scale: int | None = None  # typed by the user where the scene does not fix the scale
        self._lr_uid: int | None = None
        self._inputs = runs.RunInputs()
        self._choices: list = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(10, 8, 10, 8)
        outer.setSpacing(6)

        self.inputs_label = QLabel("", self)
        self.inputs_label.setObjectName("DimLabel")
        self.inputs_label.setWordWrap(True)
        self.inputs_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.inputs_label)

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(8)
        form.setVerticalSpacing(6)
        self.model_combo = ComboBox(self)
        self.model_combo.setModel(QStandardItemModel(self.model_combo))
        self.model_combo.setSizeAdjustPolicy(ComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.setToolTip("Models that cannot run on the open layers are greyed out; "
                                    "hover one to see why")
        self.model_combo.currentIndexChanged.connect(lambda *_: self._on_model_changed())
        form.addRow("Model", self.model_combo)
        self.reason_label = QLabel("", self)
        self.reason_label.setWordWrap(True)
        self.reason_label.setObjectName("DimLabel")
        form.addRow("", self.reason_label)

        self.scale_spin = QSpinBox(self)
        self.scale_spin.setRange(2, 64)
        self.scale_spin.setPrefix("×")
        self.scale_spin.valueChanged.connect(self._on_scale_typed)
        self.device_combo = ComboBox(self)
        self.device_combo.addItem("auto", "auto")
        for name in available_devices():
            self.device_combo.addItem(name, name)
        self.device_combo.setToolTip("auto: the GPU when there is one, else the CPU")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.scale_spin)
        device_label = QLabel("Device", self)
        row.addWidget(device_label)
        row.addWidget(self.device_combo, 1)
        form.addRow("Scale", row)

        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setToolTip("Iterations (optimisation) or sampling steps; only for models that have them")
        self.seed_spin = QSpinBox(self)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Random seed (recorded in the provenance; changes the output of stochastic models)")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.steps_spin, 1)
        row.addWidget(QLabel("Seed", self))
        row.addWidget(self.seed_spin, 1)
        self.steps_label = QLabel("Steps", self)
        form.addRow(self.steps_label, row)

        self.blind_check = QCheckBox("Blind: estimate PSF and SRF from the pair", self)
        self.blind_check.setToolTip("For models that offer it (UMSFT): the PSF and SRF are estimated from the LR-HSI\n"
                                    "and the guide instead of taken from the protocol / the guide's SRF")
        form.addRow("", self.blind_check)
        self.prior_check = QCheckBox("Guided-filter prior (FUSE)", self)
        self.prior_check.setToolTip("For FUSE: local guided-filter regressions as the prior mean instead of GSA\n"
                                    "(CAVE gauss-x32: 44.1 vs 42.0 dB; gauss-x8: 47.9 vs 45.2 dB, see README)")
        form.addRow("", self.prior_check)
        self.view_check = QCheckBox("Current view only", self)
        self.view_check.setToolTip("Run on the visible rectangle (snapped to whole LR pixels); the new layer is\n"
                                   "zero outside it and its provenance records the rows and columns computed")
        self.view_check.toggled.connect(lambda *_: self._update_view_label())
        form.addRow("", self.view_check)
        self.view_label = QLabel("", self)
        self.view_label.setObjectName("DimLabel")
        form.addRow("", self.view_label)
        outer.addLayout(form)

        # The Run button and the progress: a footer that the dock keeps below its scrolled
        # content (see dock_widget), so neither drops below the fold when the loss plot and the
        # preview appear or the column is short
        self.actions = QWidget(self)
        actions = QVBoxLayout(self.actions)
        actions.setContentsMargins(0, 0, 0, 0)
        actions.setSpacing(4)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", self)
        self.run_button.setToolTip("Run the model on the open layers (Ctrl+R)")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start_run)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the running job (takes effect at its next step)")
        self.cancel_button.clicked.connect(self.cancel)
        self.provenance_button = QPushButton("Provenance…", self)
        self.provenance_button.setToolTip("Model, weights hash, protocol, scale, seed and region of each computed layer")
        self.provenance_button.clicked.connect(self.show_provenance)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button, 1)
        buttons.addWidget(self.provenance_button)
        actions.addLayout(buttons)

        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(10)
        self.progress_label = QLabel("", self)
        self.progress_label.setObjectName("DimLabel")
        self.progress_label.setWordWrap(True)
        actions.addWidget(self.progress_bar)
        actions.addWidget(self.progress_label)
        outer.addWidget(self.actions)  # (until dock_widget moves it under the scroll area)
        self.preview_label = QLabel(self)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setToolTip("Current estimate (the scene's band)")
        self.preview_label.hide()
        outer.addWidget(self.preview_label)
        self.loss_plot = pg.PlotWidget(self)
        self.loss_plot.setMenuEnabled(False)
        self.loss_plot.setMouseEnabled(False, False)
        self.loss_plot.setLabel("bottom", "iteration")
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.setLogMode(False, True)
        self.loss_plot.getAxis("left").enableAutoSIPrefix(False)
        self.loss_plot.setFixedHeight(120)
        self.loss_plot.setToolTip("Loss of the running optimisation (log scale)")
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen(theme.RECON_CURVE_COLOURS[1], width=1.5))
        self._losses: tuple[list[int], list[float]] = ([], [])
        self.loss_plot.hide()
        outer.addWidget(self.loss_plot)

        # ---- simulate inputs from the GT
        self.sim_group = QGroupBox("Simulate inputs from GT", self)
        sl = QFormLayout(self.sim_group)
        sl.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        sl.setHorizontalSpacing(8)
        self.protocol_combo = ComboBox(self.sim_group)
        for name in available_protocols():
            self.protocol_combo.addItem(name, name)
            self.protocol_combo.setItemData(self.protocol_combo.count() - 1, parse_protocol(name).describe(),
                                            Qt.ItemDataRole.ToolTipRole)
        self.protocol_combo.currentIndexChanged.connect(lambda *_: self._update_simulate())
        self.protocol_combo.activated.connect(lambda *_: setattr(self, "_user_protocol", True))
        self.sim_seed_spin = QSpinBox(self.sim_group)
        self.sim_seed_spin.setRange(0, 2**31 - 1)
        self.sim_seed_spin.setToolTip("Noise seed of the simulation")
        self.simulate_button = QPushButton("Simulate", self.sim_group)
        self.simulate_button.setToolTip("Make the LR-HSI (and guide) from the GT with this protocol; replaces "
                                        "the simulated LR/guide layers")
        self.simulate_button.clicked.connect(self.start_simulation)
        # as wide as its longest name: in a narrow column the seed box beside it squeezed it
        # down to 'gau'; the seed has its own row
        longest = max((len(self.protocol_combo.itemText(i)) for i in range(self.protocol_combo.count())), default=8)
        self.protocol_combo.setMinimumContentsLength(longest)
        self.protocol_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        sl.addRow("Protocol", self.protocol_combo)
        sl.addRow("Seed", self.sim_seed_spin)
        self.sim_reason_label = QLabel("", self.sim_group)
        self.sim_reason_label.setObjectName("DimLabel")
        self.sim_reason_label.setWordWrap(True)
        sl.addRow(self.sim_reason_label, self.simulate_button)
        outer.addWidget(self.sim_group)
        outer.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

        ev = scene.events
        subscribe(self, ev.layers, lambda *_: self._on_layers())
        subscribe(self, ev.view_range, lambda *_: self._update_view_label())
        self._on_layers()
        self._set_running(False)

    # ------------------------------------------------------------------ state from the scene
    def _on_layers(self) -> None:
        with QSignalBlocker(self.protocol_combo):
            default = runs.default_protocol(self.scene)
            index = self.protocol_combo.findData(default)
            if index >= 0 and not self._user_protocol:
                self.protocol_combo.setCurrentIndex(index)
        self._refresh_inputs()
        self._update_simulate()

    def _on_scale_typed(self, value: int) -> None:
        self._user_scale = int(value)
        self._refresh_inputs()

    def refresh(self) -> None:
        """Re-read the scene and the model registry (models registered later appear)."""
        self._refresh_inputs()
        self._update_simulate()

    def _refresh_inputs(self) -> None:
        lrs = self.scene.layers_with_role("lr")
        lr_uid = lrs[0].uid if lrs else None
        if lr_uid != self._lr_uid:  # another LR: its own metadata says the scale again
            self._lr_uid, self._user_scale = lr_uid, None
        inputs = runs.find_inputs(self.scene, self._user_scale)
        self._inputs = inputs
        with QSignalBlocker(self.scale_spin):
            if inputs.scale is not None:
                self.scale_spin.setValue(inputs.scale)
        self.scale_spin.setEnabled(inputs.lr is not None and not inputs.scale_fixed and not self.running)
        self.scale_spin.setToolTip("Fixed by the sizes of the LR and HR layers" if inputs.scale_fixed
                                   else "Super-resolution factor (the LR is the largest layer, so the scene does "
                                        "not fix it)")
        self.inputs_label.setText("\n".join(inputs.describe()))
        self._fill_models()
        self._update_view_label()

    def _fill_models(self) -> None:
        current = self.selected_model()
        self._choices = runs.model_choices(self._inputs)
        model: QStandardItemModel = self.model_combo.model()
        with QSignalBlocker(self.model_combo):
            model.clear()
            select = -1
            for i, (spec, reason) in enumerate(self._choices):
                item = QStandardItem(spec.title if reason is None else f"{spec.title} — {reason}")
                item.setData(spec.name, Qt.ItemDataRole.UserRole)
                tip = f"{spec.title} ({spec.task})\n{spec.description}\n{spec.paper}".strip()
                if reason:
                    tip = f"Cannot run: {reason}\n\n{tip}"
                    item.setEnabled(False)
                item.setToolTip(tip)
                model.appendRow(item)
                if spec.name == current:
                    select = i
            if select < 0:  # keep the user's choice (even greyed out: the panel says why), else the first runnable
                enabled = [i for i, (_, reason) in enumerate(self._choices) if reason is None]
                select = enabled[0] if enabled else (0 if self._choices else -1)
            self.model_combo.setCurrentIndex(select)
        self._on_model_changed()

    def selected_model(self) -> str | None:
        index = self.model_combo.currentIndex()
        if index < 0:
            return None
        return self.model_combo.itemData(index, Qt.ItemDataRole.UserRole)

    def select_model(self, name: str) -> None:
        """Select model ``name`` (also a disabled one: the panel then says why it cannot run)."""
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i, Qt.ItemDataRole.UserRole) == name:
                self.model_combo.setCurrentIndex(i)
                return
        raise KeyError(name)

    def reason_for(self, name: str) -> str | None:
        """Why model ``name`` cannot run on the scene now (None: it can)."""
        for spec, reason in self._choices:
            if spec.name == name:
                return reason
        raise KeyError(name)

    def is_enabled(self, name: str) -> bool:
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i, Qt.ItemDataRole.UserRole) == name:
                return self.model_combo.model().item(i).isEnabled()
        raise KeyError(name)

    def _sync_option_checks(self, spec, running: bool) -> None:
        """The build-option check boxes are enabled for the models that have the option."""
        for check, option in ((self.blind_check, "blind"), (self.prior_check, "prior")):
            check.setEnabled(not running and spec is not None and option in spec.options)

    def _spec(self):
        name = self.selected_model()
        for spec, reason in self._choices:
            if spec.name == name:
                return spec, reason
        return None, None

    def _on_model_changed(self) -> None:
        spec, reason = self._spec()
        if spec is None:
            self.reason_label.setText("No models are registered.")
        elif reason:
            self.reason_label.setText(f"⚠ cannot run: {reason}")
        else:
            self.reason_label.setText(spec.description)
        steps = runs.default_steps(spec) if spec is not None else None
        self._sync_option_checks(spec, self.running)
        self.steps_spin.setEnabled(steps is not None and not self.running)
        self.steps_label.setEnabled(steps is not None)
        if steps is not None and self._steps_model != spec.name:
            self.steps_spin.setValue(steps)
        self._steps_model = spec.name if spec is not None else None
        self.steps_spin.setSpecialValueText("" if steps is not None else "—")
        if steps is None:
            with QSignalBlocker(self.steps_spin):
                self.steps_spin.setValue(self.steps_spin.minimum())
        self._update_buttons()

    def _update_view_label(self) -> None:
        if not self.view_check.isChecked():
            self.view_label.setText("")
            self.view_label.hide()
            return
        self.view_label.show()
        lr = self._inputs.lr
        if lr is None:
            self.view_label.setText("")
            return
        try:
            box = runs.view_roi_lr(self.scene.view_range, lr.cube.shape[:2], lr.scale)
        except HsiError:
            self.view_label.setText("the view shows no part of the image")
            return
        s = self._inputs.scale or 1
        if box is None:
            self.view_label.setText("the whole image is visible")
        else:
            r0, r1, c0, c1 = box
            self.view_label.setText(f"LR rows {r0}–{r1}, cols {c0}–{c1} → {(r1 - r0) * s}×{(c1 - c0) * s} HR px")

    def _update_simulate(self) -> None:
        protocol = self.protocol_combo.currentData()
        problem = runs.simulation_problem(self.scene, protocol) if protocol else "no protocol"
        self.sim_reason_label.setText("" if problem is None else f"⚠ {problem}")
        self.simulate_button.setToolTip(problem or "Make the LR-HSI (and guide) from the GT with this protocol; "
                                                   "replaces the simulated LR/guide layers")
        self._update_buttons()

    def _update_buttons(self) -> None:
        spec, reason = self._spec()
        running = self.running
        self.run_button.setEnabled(not running and spec is not None and reason is None)
        self.cancel_button.setEnabled(running)
        protocol = self.protocol_combo.currentData()
        self.simulate_button.setEnabled(not running and protocol is not None
                                        and runs.simulation_problem(self.scene, protocol) is None)

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self.worker.busy_with(RUN_JOB)

    def _set_running(self, running: bool) -> None:
        for w in (self.model_combo, self.device_combo, self.seed_spin, self.view_check, self.protocol_combo,
                  self.sim_seed_spin):
            w.setEnabled(not running)
        spec_now, _ = self._spec()
        self._sync_option_checks(spec_now, running)
        self.scale_spin.setEnabled(not running and self._inputs.lr is not None and not self._inputs.scale_fixed)
        spec, _ = self._spec()
        self.steps_spin.setEnabled(not running and spec is not None and runs.default_steps(spec) is not None)
        self._update_buttons()

    def start_run(self) -> bool:
        """Run the selected model (Ctrl+R); False when it could not start (the reason is reported)."""
        if self.running:
            return False
        spec, reason = self._spec()
        if spec is None:
            self._report(HsiError("no model is registered"), "Cannot run a model")
            return False
        try:
            plan = runs.make_plan(self.scene, spec.name, scale=self.scale_spin.value(),
                                  device=self.device_combo.currentData() or "auto",
                                  steps=self.steps_spin.value() if runs.default_steps(spec) is not None else None,
                                  seed=self.seed_spin.value(), view_only=self.view_check.isChecked(),
                                  options={"blind": self.blind_check.isChecked() and self.blind_check.isEnabled(),
                                           "prior": "guided" if self.prior_check.isChecked()
                                           and self.prior_check.isEnabled() else None})
        except Exception as exc:  # noqa: BLE001 - shown as a dialog
            self._report(exc, f"Cannot run {spec.title}")
            return False
        self._start(lambda: runs.execute(plan), "run", f"{spec.title} ×{plan.scale}: starting",
                    keep_result=spec.iterative)
        return True

    def start_simulation(self) -> bool:
        """Simulate LR and guide from the GT with the chosen protocol (asks before replacing real
        LR/guide layers); False when it did not start."""
        if self.running:
            return False
        protocol = self.protocol_combo.currentData()
        problem = runs.simulation_problem(self.scene, protocol)
        if problem:
            self._report(HsiError(f"Cannot simulate {protocol}: {problem}"), "Cannot simulate inputs")
            return False
        simulated, real = runs.input_layers(self.scene)
        if real:
            names = ", ".join(f"{l.title} · {l.name}" for l in real)
            if not dialogs.confirm(self, "Replace the inputs?",
                                   f"The scene has LR/guide layers that were not simulated here ({names}).\n\n"
                                   f"Replace them with inputs simulated from the GT with {protocol}?"):
                return False
        remove = simulated + real
        gt = self.scene.layers_with_role("gt")[0].cube
        seed = self.sim_seed_spin.value()
        self._remove_on_simulated = remove
        self._start(lambda: runs.simulate_job(gt, protocol, seed), "simulate", f"simulating {protocol}")
        return True

    def _start(self, make_job: Callable, kind: str, message: str, keep_result: bool = False) -> None:
        self._job_kind = kind
        self._keep_result = keep_result
        self.worker.submit(RUN_JOB, lambda _control: make_job(), stop=StopRequested if keep_result else None,
                           progress_filter=progress_throttle(), on_done=self._on_succeeded,
                           on_error=self._on_failed, on_cancel=self._on_cancelled)
        self.progress_bar.setValue(0)
        self.progress_label.setText(message)
        self.preview_label.hide()
        self._losses = ([], [])
        self.loss_curve.setData([], [])
        self.loss_plot.hide()
        self._set_running(True)
        self.running_changed.emit(True)

    def _stopping_text(self) -> str:
        return "stopping… (keeping the best estimate so far)" if self._keep_result else "cancelling…"

    def cancel(self) -> None:
        """Stop the running job at its next step; nothing is added to the scene."""
        if self.running:
            self.worker.cancel(RUN_JOB)
            self.progress_label.setText(self._stopping_text())
            self.cancel_button.setEnabled(False)

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Cancel the running job and wait for its thread (the window is closing); a job still
        inside a long step is left to finish on its daemon thread, its result dropped."""
        self.worker.shutdown(timeout_ms / 1000)

    def _on_progress(self, progress: Progress) -> None:
        self.progress_bar.setValue(int(round(1000 * min(max(progress.fraction, 0.0), 1.0))))
        text = progress.message
        if progress.loss is not None:
            text += f"  ·  loss {progress.loss:.4g}"
        if self.worker.cancel_requested(RUN_JOB):
            text = self._stopping_text()
        self.progress_label.setText(text)
        if progress.preview is not None:
            self._show_preview(progress.preview)
        if progress.loss is not None and progress.step > 0 and np.isfinite(progress.loss) and progress.loss > 0:
            steps, losses = self._losses
            if steps and progress.step <= steps[-1]:
                steps.clear()
                losses.clear()
            steps.append(int(progress.step))
            losses.append(float(progress.loss))
            self.loss_curve.setData(steps, losses)
            self.loss_plot.show()

    def _show_preview(self, preview: np.ndarray) -> None:
        if preview.ndim != 3 or preview.shape[2] == 0:
            return
        band = preview[:, :, min(self.scene.band, preview.shape[2] - 1)]
        lo, hi = percentile_levels(band, 1.0, 99.0)
        grey = np.ascontiguousarray((np.clip((band - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8))
        h, w = grey.shape
        image = QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
        pixmap = QPixmap.fromImage(image).scaled(PREVIEW_SIZE_PX, PREVIEW_SIZE_PX,
                                                  Qt.AspectRatioMode.KeepAspectRatio,
                                                  Qt.TransformationMode.FastTransformation)
        self.preview_label.setPixmap(pixmap)
        self.preview_label.show()

    def _finish(self, status: str, message: str) -> None:
        self._set_running(False)
        self.progress_label.setText(message)
        if status != "done":
            self.progress_bar.setValue(0)
        self.preview_label.hide()
        self.running_changed.emit(False)
        self.job_finished.emit(status)

    def _on_succeeded(self, value) -> None:
        kind = self._job_kind
        try:
            if kind == "simulate":
                lr, guide = value
                added = runs.replace_inputs(self.scene, lr, guide, self._remove_on_simulated)
                self.computed.emit(added, "simulation")
                message = f"simulated {lr.name}" + (f" and {guide.name}" if guide is not None else "")
            else:
                layer = self.scene.add_layer(value, "recon", value.name)
                self.layer_added.emit(layer)
                self.computed.emit([layer], "run")
                seconds = value.metadata.get("provenance", {}).get("seconds")
                message = f"added {layer.name}" + (f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else "")
                stopped = (value.metadata.get("provenance", {}).get("report") or {}).get("stopped")
                if stopped:
                    message += f"; {stopped}"
        except Exception as exc:  # noqa: BLE001 - e.g. the scene changed while the job ran
            self._finish("failed", "failed")
            self._report(exc, "Cannot add the result" if kind == "run" else "Cannot add the simulated inputs")
            return
        self.progress_bar.setValue(1000)
        self._finish("done", message)

    def _on_failed(self, exc) -> None:
        kind = self._job_kind
        self._finish("failed", f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        self._report(exc, "The model run failed" if kind == "run" else "Cannot simulate inputs")

    def _on_cancelled(self) -> None:
        self._finish("cancelled", "cancelled")

    def _report(self, exc: BaseException, title: str) -> None:
        if self._report_error is not None:
            self._report_error(exc, title)
        else:
            dialogs.show_error(self, title, str(exc))

    # ------------------------------------------------------------------ provenance
    def provenance_report(self) -> str:
        """Provenance of every computed reconstruction in the scene, as text."""
        blocks = []
        for layer in self.scene.layers_with_role("recon"):
            text = runs.provenance_text(layer.cube)
            if text:
                blocks.append(f"{layer.label}\n" + "\n".join("  " + line for line in text.splitlines()))
        return "\n\n".join(blocks) or "No reconstruction in the scene records its provenance."

    def show_provenance(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Provenance of the reconstructions")
        layout = QVBoxLayout(dialog)
        text = QPlainTextEdit(dialog)
        text.setReadOnly(True)
        text.setPlainText(self.provenance_report())
        text.setMinimumSize(560, 320)
        layout.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()


def run_dock_widget(panel: "RunPanel") -> QWidget:
    """The Run model dock's widget: the panel's settings in a scroll area, its Run button and
    progress (``panel.actions``) in a footer under it that never scrolls away."""
    host = QWidget()
    layout = QVBoxLayout(host)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    layout.addWidget(scrollable(panel), 1)
    footer = QWidget(host)
    fl = QVBoxLayout(footer)
    fl.setContentsMargins(10, 4, 10, 6)
    panel.layout().removeWidget(panel.actions)
    panel.actions.setParent(footer)
    fl.addWidget(panel.actions)
    layout.addWidget(footer)
    return host


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless scroll area, so that a short dock still reaches every control."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area

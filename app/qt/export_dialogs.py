"""Export menu, paper-figure builder dialog and session save/open for the main window.

The work is done by Qt-free modules (app.core.export.figure, app.core.export.data, app.core.export.session); this
module only asks for file names and options, runs the writing on a worker thread with the
window's busy bar, and shows errors in dialogs (app.qt.dialogs).

Every action method takes an optional ``path`` (and options) so that scripts and tests run it
without a file dialog; without one, a dialog asks.
"""
from __future__ import annotations

import base64
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PyQt6.QtCore import QByteArray, Qt, QTimer
from PyQt6.QtGui import QAction, QImage, QKeySequence, QPixmap
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                             QFormLayout, QGroupBox, QHBoxLayout, QInputDialog, QLabel, QLineEdit,
                             QListWidget, QListWidgetItem, QMainWindow, QMenu, QMessageBox, QPushButton, QScrollArea,
                             QSpinBox, QVBoxLayout)

from app.core.export import data as core_export
from app.core.export import figure as core_figure
from app.core.export import session as core_session
from app.core.errors import HsiError
from app.qt import dialogs
from app.qt.workers import Worker

FIGURE_FILTER = "PDF, vector (*.pdf);;SVG, vector (*.svg);;PNG image (*.png)"
SESSION_FILTER = f"Viewer session (*{core_session.SESSION_SUFFIX} *.json)"
CUBE_FILTER = "ENVI (*.hdr);;MATLAB (*.mat);;NumPy (*.npy);;TIFF (*.tif)"
DEFAULT_DPI = 300
PREVIEW_JOB = "preview"
PREVIEW_DPI = 90


def _suffix_for(selected_filter: str) -> str:
    for ext in (".pdf", ".svg", ".png", ".hdr", ".mat", ".npy", ".tif", ".csv", ".md", ".json"):
        if f"*{ext}" in selected_filter:
            return ext
    return ""


class ExportController:
    """Owns the Export menu's actions and the session actions of the main window. ``window``:
    the QMainWindow whose menus, dialogs and layout these are; besides Qt's own API the
    controller uses only its public ``settings``, ``unattended``, ``report(exc, title)``,
    ``set_busy(busy, message)``, ``run_job(...)`` and ``set_theme(name)``. Everything it exports
    comes from the scene."""

    def __init__(self, window: QMainWindow):
        self.window = window
        self.scene = window.scene
        self.figure_dialog: PaperFigureDialog | None = None
        self.last_written: Path | None = None
        self.actions: dict[str, QAction] = {}

    # ------------------------------------------------------------------ menus
    def _action(self, key: str, text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self.window)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(lambda *_: slot())
        self.window.addAction(action)
        self.actions[key] = action
        return action

    def build_menu(self, menu: QMenu) -> None:
        """Fill the Export menu."""
        a = self._action
        menu.addAction(a("paper", "&Paper figure…", self.open_figure_builder, "Ctrl+E",
                         "Methods as columns, views as rows, identical zoom insets, shared scales: PDF/SVG/PNG"))
        menu.addSeparator()
        menu.addAction(a("panel", "Current &panel as figure…", self.export_panel, None,
                         "One panel with its colorbar, title and pixel axes (PDF/SVG/PNG)"))
        menu.addAction(a("grid", "Panel &grid as figure…", self.export_grid, None,
                         "Every panel with colorbars (PDF/SVG/PNG)"))
        menu.addAction(a("spectra", "&Spectra plot as figure…", self.export_spectra_figure, None,
                         "The spectra at the clicked and pinned pixels and the ROI, with a legend (PDF/SVG/PNG)"))
        menu.addAction(a("curves", "Per-band metric &curves as figure…", self.export_curves_figure, None,
                         "The metric-versus-wavelength plot of the analysis (PDF/SVG/PNG)"))
        menu.addSeparator()
        menu.addAction(a("spectra_csv", "Spectra as &CSV…", self.export_spectra_csv, None,
                         "Wavelength column and one column per source and pixel"))
        menu.addAction(a("metrics", "&Metrics table (CSV / Markdown)…", self.export_metrics, None,
                         "PSNR, SSIM, SAM, ERGAS, RMSE per method"))
        menu.addAction(a("per_band", "Per-&band metrics as CSV…", self.export_per_band, None,
                         "Per-band PSNR, RMSE and SSIM per method"))
        menu.addAction(a("cube", "Reconstruction &cube…", self.export_cube, "Ctrl+Shift+E",
                         "Write a layer as ENVI, .mat, .npy or TIFF with wavelengths and provenance"))

    def build_session_actions(self, menu: QMenu, before: QAction | None = None) -> None:
        """'Save session…' (Ctrl+Shift+S) and 'Open session…' in the File menu."""
        save = self._action("save_session", "Save sess&ion…", self.save_session, "Ctrl+Shift+S",
                            "Files, roles, layout, display, zoom, pins, ROI and provenance in a JSON file")
        load = self._action("open_session", "Open sessio&n…", self.open_session, "Ctrl+Alt+O",
                            "Restore a saved session")
        if before is not None:
            menu.insertAction(before, load)
            menu.insertAction(before, save)
            menu.insertSeparator(before)
        else:
            menu.addAction(load)
            menu.addAction(save)

    # ------------------------------------------------------------------ helpers
    def _last_dir(self) -> Path:
        return Path(str(self.window.settings.value("last_dir", str(Path.home()))))

    def _ask_save(self, title: str, name: str, filters: str) -> str | None:
        if self.window.unattended:
            return None
        path, chosen = QFileDialog.getSaveFileName(self.window, title, str(self._last_dir() / name), filters)
        if not path:
            return None
        if not Path(path).suffix:
            path += _suffix_for(chosen)
        self.window.settings.setValue("last_dir", str(Path(path).parent))
        return path

    def _ask_dpi(self, path: str) -> int | None:
        if Path(path).suffix.lower() != ".png" or self.window.unattended:
            return DEFAULT_DPI
        dpi, ok = QInputDialog.getInt(self.window, "PNG resolution", "Dots per inch:", DEFAULT_DPI, 50, 1200, 50)
        return dpi if ok else None

    def _write(self, title: str, fn: Callable[[], Path], *, background: bool = True,
               saved_uids: list[int] | None = None) -> None:
        """Run ``fn`` (it returns the written path) with the busy bar; errors become dialogs.
        ``saved_uids``: layers the file saves (the window's ``mark_layers_saved`` is told)."""
        def done(path):
            self.last_written = Path(path)
            mark = getattr(self.window, "mark_layers_saved", None)
            if saved_uids and mark is not None:
                mark(saved_uids)
            self.window.statusBar().showMessage(f"Saved {path}", 8000)

        self.window.run_job(fn, done, lambda exc: self.window.report(exc, title), background=background,
                            message=f"{title}…")

    def _need_layers(self, title: str) -> bool:
        if not self.scene.layers:
            self.window.report(HsiError("nothing to export: open a cube first (Ctrl+O)"), title)
            return False
        return True

    def _analysis_result(self, title: str):
        result = self.scene.analysis_result
        if result is not None and self.scene.analysis_stale:
            result = None  # the scene changed since: compute afresh
        if result is None:
            try:
                from app.core.evaluation.analysis import make_request, run_analysis

                result = run_analysis(make_request(self.scene))
            except HsiError as exc:
                self.window.report(exc, title)
                return None
        return result

    def current_layer_uid(self) -> int | None:
        """The panel under the pointer, else the first reconstruction, else the first layer."""
        hover = self.scene.hover
        if hover is not None:
            return hover.uid
        recon = self.scene.layers_with_role("recon")
        if recon:
            return recon[-1].uid
        return self.scene.layers[0].uid if self.scene.layers else None

    # ------------------------------------------------------------------ figures
    def _figure(self, title: str, build: Callable, name: str, path: str | None, dpi: int | None,
                background: bool) -> None:
        if path is None:
            path = self._ask_save(title, name, FIGURE_FILTER)
            if path is None:
                return
        if dpi is None:
            dpi = self._ask_dpi(path)
            if dpi is None:
                return
        self._write(title, lambda: core_figure.save_figure(build(), path, dpi=dpi), background=background)

    def export_panel(self, path: str | None = None, dpi: int | None = None, uid: int | None = None,
                     background: bool = True) -> None:
        if not self._need_layers("Export panel"):
            return
        uid = uid if uid is not None else self.current_layer_uid()
        self._figure("Export panel", lambda: core_figure.panel_figure(self.scene, uid), "panel.pdf", path, dpi,
                     background)

    def export_grid(self, path: str | None = None, dpi: int | None = None, background: bool = True) -> None:
        if self._need_layers("Export panel grid"):
            self._figure("Export panel grid", lambda: core_figure.grid_figure(self.scene), "panels.pdf", path, dpi,
                         background)

    def export_spectra_figure(self, path: str | None = None, dpi: int | None = None, background: bool = True) -> None:
        if not core_export.collect_spectra(self.scene):
            self.window.report(HsiError("no spectra to export: click a pixel (Shift+click pins more) or draw a "
                                         "ROI first"), "Export spectra plot")
            return
        self._figure("Export spectra plot", lambda: core_figure.spectra_figure(self.scene), "spectra.pdf", path, dpi,
                     background)

    def export_curves_figure(self, path: str | None = None, dpi: int | None = None, background: bool = True) -> None:
        result = self._analysis_result("Export per-band curves")
        if result is None:
            return
        metric = self.scene.analysis_settings.curve_metric
        self._figure("Export per-band curves",
                     lambda: core_figure.band_curves_figure(result, metric, band=self.scene.band),
                     f"per_band_{metric}.pdf", path, dpi, background)

    def open_figure_builder(self) -> "PaperFigureDialog | None":
        if not self._need_layers("Paper figure"):
            return None
        if self.figure_dialog is None:
            self.figure_dialog = PaperFigureDialog(self)
        self.figure_dialog.reload()
        if not self.window.unattended:
            self.figure_dialog.show()
            self.figure_dialog.raise_()
        return self.figure_dialog

    def shutdown(self) -> None:
        """Stop the builder's preview thread (the window is closing)."""
        if self.figure_dialog is not None:
            self.figure_dialog.shutdown()

    # ------------------------------------------------------------------ data
    def export_spectra_csv(self, path: str | None = None, background: bool = True) -> None:
        # the curves the spectra dock's Copy CSV gives: residuals as the plot shows them
        curves = core_export.collect_spectra(self.scene, residuals=self.scene.spectra_choice.residuals)
        if not curves:
            self.window.report(HsiError("no spectra to export: click a pixel (Shift+click pins more) or draw a "
                                         "ROI first"), "Export spectra")
            return
        path = path or self._ask_save("Export spectra as CSV", "spectra.csv", "CSV (*.csv)")
        if path:
            self._write("Export spectra", lambda: core_export.write_spectra_csv(self.scene, path, curves),
                        background=background)

    def export_metrics(self, path: str | None = None, background: bool = True) -> None:
        result = self._analysis_result("Export metrics")
        if result is None:
            return
        path = path or self._ask_save("Export metrics table", "metrics.csv", "CSV (*.csv);;Markdown (*.md)")
        if path:
            self._write("Export metrics", lambda: core_export.write_metrics(result, path), background=background)

    def export_per_band(self, path: str | None = None, background: bool = True) -> None:
        result = self._analysis_result("Export per-band metrics")
        if result is None:
            return
        path = path or self._ask_save("Export per-band metrics", "per_band.csv", "CSV (*.csv)")
        if path:
            self._write("Export per-band metrics", lambda: core_export.write_per_band_csv(result, path),
                        background=background)

    def export_cube(self, path: str | None = None, uid: int | None = None, background: bool = True) -> None:
        if not self._need_layers("Export cube"):
            return
        if uid is None:
            layers = list(self.scene.layers)
            default = self.current_layer_uid()
            if len(layers) > 1 and not self.window.unattended and path is None:
                labels = [l.label for l in layers]
                index = next((i for i, l in enumerate(layers) if l.uid == default), 0)
                label, ok = QInputDialog.getItem(self.window, "Export cube", "Layer:", labels, index, False)
                if not ok:
                    return
                uid = layers[labels.index(label)].uid
            else:
                uid = default
        layer = self.scene.layer(uid)
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer.name)
        path = path or self._ask_save(f"Export {layer.label}", f"{safe}.hdr", CUBE_FILTER)
        if path:
            self._write("Export cube", lambda: core_export.export_cube(layer.cube, path), background=background,
                        saved_uids=[layer.uid])

    # ------------------------------------------------------------------ sessions
    def layout_state(self) -> dict:
        w = self.window
        state = {"window_state": base64.b64encode(bytes(w.saveState())).decode("ascii"),
                 "geometry": base64.b64encode(bytes(w.saveGeometry())).decode("ascii")}
        theme = getattr(w, "settings", None)
        if theme is not None and theme.value("theme"):
            state["theme"] = str(theme.value("theme"))
        return state

    def apply_layout(self, layout: dict) -> None:
        w = self.window
        try:
            if layout.get("geometry"):
                w.restoreGeometry(QByteArray(base64.b64decode(layout["geometry"])))
            if layout.get("window_state"):
                w.restoreState(QByteArray(base64.b64decode(layout["window_state"])))
        except (ValueError, TypeError):
            pass  # a damaged layout is not worth an error: the data are restored
        if layout.get("theme") and hasattr(w, "set_theme"):
            try:
                w.set_theme(str(layout["theme"]))
            except Exception:  # noqa: BLE001 - an unknown theme name keeps the current one
                pass

    def save_session(self, path: str | None = None, write_computed: bool | None = None) -> None:
        if not self._need_layers("Save session"):
            return
        path = path or self._ask_save("Save session", "session" + core_session.SESSION_SUFFIX, SESSION_FILTER)
        if not path:
            return
        memory = core_session.memory_layers(self.scene)
        if write_computed is None:
            write_computed = True
            if memory and not self.window.unattended:
                names = "\n".join(f"  • {l.label}" for l in memory)
                answer = QMessageBox.question(
                    self.window, "Save session",
                    f"These layers exist only in memory:\n{names}\n\nWrite them next to the session "
                    f"(as .npy with a .json sidecar) so that the session can restore them?",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No | QMessageBox.StandardButton.Cancel,
                    QMessageBox.StandardButton.Yes)
                if answer == QMessageBox.StandardButton.Cancel:
                    return
                write_computed = answer == QMessageBox.StandardButton.Yes
        layout = self.layout_state()
        compare = self.scene.ab

        def save():
            report = core_session.save_session(self.scene, path, layout=layout, write_computed=write_computed,
                                               compare=compare)
            return report.path

        self._write("Save session", save, background=False,
                    saved_uids=[l.uid for l in memory] if write_computed else None)

    def locate(self, missing: Path) -> str | None:
        """Ask the user where a moved file is (None: skip it)."""
        if self.window.unattended:
            return None
        QMessageBox.information(self.window, "File not found",
                                f"{missing}\n\nwas moved or deleted. Show where it is now (Cancel skips this layer).")
        start = self._last_dir() / missing.name
        if missing.suffix == "" or missing.is_dir():
            found = QFileDialog.getExistingDirectory(self.window, f"Where is {missing.name}?", str(start.parent))
        else:
            found, _ = QFileDialog.getOpenFileName(self.window, f"Where is {missing.name}?", str(start))
        return found or None

    def open_session(self, path: str | None = None, locate: Callable | None = None) -> core_session.RestoreReport | None:
        if path is None:
            if self.window.unattended:
                return None
            path, _ = QFileDialog.getOpenFileName(self.window, "Open session", str(self._last_dir()), SESSION_FILTER)
            if not path:
                return None
        guard = getattr(self.window, "confirm_drop", None)  # the session replaces every layer
        if guard is not None and not guard(None, "Open a session"):
            return None
        self.window.set_busy(True, "Restoring the session…")
        try:
            report = core_session.restore_session(path, self.scene, locate=locate or self.locate)
        except HsiError as exc:
            self.window.report(exc, "Cannot open the session")
            return None
        finally:
            self.window.set_busy(False, "")
        self.apply_layout(report.layout)
        if report.skipped:
            self.window.report(HsiError("Some layers were not restored:\n" + "\n".join(report.skipped)),
                                "Session restored in part")
        text = f"Session restored: {len(report.layers)} layer(s)"
        if report.notes:
            text += " · " + "; ".join(report.notes)
        self.window.statusBar().showMessage(text, 10000)
        return report


@dataclass
class FigurePreview:
    """A rendered preview: the figure's provenance, its pixels and the same as a QImage."""

    provenance: dict
    rgba: np.ndarray
    image: QImage


def render_preview(inputs: core_figure.PaperInputs, cancelled: Callable[[], bool] | None = None,
                   dpi: float = PREVIEW_DPI) -> FigurePreview | None:
    """The paper figure as a preview image (any thread: Agg only, never pyplot, under the
    matplotlib lock); None when ``cancelled`` says so before it is done.

    A figure is some 10^5 cyclic objects: they push the collector into full collections, which
    hold the GIL (and so the GUI thread) for as long as they walk every object of the process,
    0.2-0.7 s with a window and a scene open. Frozen, the objects that were alive before the
    render are left out of those walks; the figure is collected here, before they are thawed."""
    gc.freeze()
    try:
        fig = core_figure.render_paper_figure(inputs, cancelled)
        if fig is None:
            return None
        rgba = core_figure.figure_to_rgba(fig, dpi=dpi)
        provenance = fig.hsi_provenance
        del fig
        gc.collect()
    finally:
        gc.unfreeze()
    h, w = rgba.shape[:2]
    # QImage (unlike QPixmap) may be made off the GUI thread; the copy owns its pixels
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    return FigurePreview(provenance, rgba, image)


class PaperFigureDialog(QDialog):
    """Methods (columns) and views (rows), band, inset (typed or the current view), a live
    preview, and Export (PDF/SVG/PNG)."""

    def __init__(self, controller: ExportController):
        super().__init__(controller.window)
        self.controller = controller
        self.scene = controller.scene
        self.setWindowTitle("Paper figure")
        self.resize(1000, 700)

        self.methods = QListWidget(self)
        self.methods.setToolTip("Columns, in this order (drag to reorder)")
        self.methods.setDragDropMode(QListWidget.DragDropMode.InternalMove)
        self.views = QListWidget(self)
        for key in core_figure.VIEWS:
            item = QListWidgetItem(core_figure.VIEW_TITLES[key])
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.views.addItem(item)
        self.views.setMaximumHeight(100)
        self.band = QSpinBox(self)
        self.band.setToolTip("Band shown in the band row and used by |error| at band (numbered from 1, as in "
                             "the main window)")
        self.band_nm = QLabel("", self)
        self.band_nm.setObjectName("DimLabel")
        self.error_kind = QComboBox(self)
        self.error_kind.addItem("RMSE over bands", "rmse")
        self.error_kind.addItem("|error| at the band", "abs_band")
        self.inset_on = QCheckBox("Zoom inset", self)
        self.inset_boxes = [QDoubleSpinBox(self) for _ in range(4)]
        for box, tip in zip(self.inset_boxes, ("left column x0", "top row y0", "right column x1", "bottom row y1")):
            box.setDecimals(0)
            box.setToolTip(f"Inset {tip} (HR pixels)")
        self.from_view = QPushButton("Use current view", self)
        self.from_view.setToolTip("Take the inset from the panels' current zoom")
        self.corner = QComboBox(self)
        self.corner.addItems(list(core_figure.CORNERS))
        self.corner.setToolTip("Where the zoomed crop goes; auto: the corner opposite the inset box")
        self.title_edit = QLineEdit(self)
        self.title_edit.setPlaceholderText("optional figure title")
        self.dpi = QSpinBox(self)
        self.dpi.setRange(50, 1200)
        self.dpi.setValue(DEFAULT_DPI)
        self.dpi.setSuffix(" dpi (PNG)")

        form = QFormLayout()
        band_row = QHBoxLayout()
        band_row.addWidget(self.band, 1)
        band_row.addWidget(self.band_nm)
        form.addRow("Band", band_row)
        form.addRow("Error map", self.error_kind)
        inset_row = QHBoxLayout()
        for box in self.inset_boxes:
            inset_row.addWidget(box)
        form.addRow(self.inset_on, inset_row)
        form.addRow("", self.from_view)
        form.addRow("Crop corner", self.corner)
        form.addRow("Title", self.title_edit)
        form.addRow("PNG", self.dpi)

        left = QVBoxLayout()
        box_m = QGroupBox("Methods (columns)", self)
        QVBoxLayout(box_m).addWidget(self.methods)
        box_v = QGroupBox("Views (rows)", self)
        QVBoxLayout(box_v).addWidget(self.views)
        left.addWidget(box_m, 2)
        left.addWidget(box_v, 1)
        left.addLayout(form)

        self.preview = QLabel("Preview", self)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(420, 420)
        scroll = QScrollArea(self)
        scroll.setWidget(self.preview)
        scroll.setWidgetResizable(True)
        self.scroll = scroll
        self.status = QLabel("", self)
        self.status.setObjectName("DimLabel")
        self.status.setWordWrap(True)

        buttons = QDialogButtonBox(self)
        self.preview_button = buttons.addButton("Preview", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button = buttons.addButton("Export…", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        self.preview_button.clicked.connect(self.request_preview)
        self.export_button.clicked.connect(lambda: self.export())
        self.from_view.clicked.connect(self.use_current_view)

        right = QVBoxLayout()
        right.addWidget(scroll, 1)
        right.addWidget(self.status)
        top = QHBoxLayout()
        top.addLayout(left, 0)
        top.addLayout(right, 1)
        outer = QVBoxLayout(self)
        outer.addLayout(top, 1)
        outer.addWidget(buttons)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(400)
        self._debounce.timeout.connect(self.request_preview)
        for signal in (self.methods.itemChanged, self.views.itemChanged, self.band.valueChanged,
                       self.error_kind.currentIndexChanged, self.inset_on.toggled, self.corner.currentIndexChanged,
                       self.title_edit.editingFinished, self.methods.model().rowsMoved):
            signal.connect(lambda *_: self._debounce.start())
        for box in self.inset_boxes:
            box.valueChanged.connect(lambda *_: self._debounce.start())
        self.band.valueChanged.connect(self._show_band_nm)
        self.last_provenance: dict | None = None
        self.last_preview: np.ndarray | None = None
        # one thread renders previews, the newest request first; the ticket of the preview
        # wanted and of the one on screen tell whether the picture is up to date
        self.renderer = Worker(self, name="figure-preview")
        self.renderer.done.connect(lambda _key, ticket, preview: self._on_rendered(ticket, preview))
        self.renderer.failed.connect(lambda _key, ticket, exc: self._on_rendered(ticket, exc))
        self.preview_ticket = 0
        self._shown_ticket = 0

    # ------------------------------------------------------------------ state
    def reload(self) -> None:
        """Fill the choices from the scene (all comparable methods checked, the GT first)."""
        self._debounce.stop()
        self.methods.blockSignals(True)
        self.methods.clear()
        chosen = set(core_figure.default_methods(self.scene))
        gts = self.scene.layers_with_role("gt")
        candidates = [l for l in self.scene.layers if l.role in ("gt", "recon")
                      and (not gts or l.cube.shape == gts[0].cube.shape)]
        for layer in candidates:
            item = QListWidgetItem(layer.label)
            item.setData(Qt.ItemDataRole.UserRole, layer.uid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if layer.uid in chosen else Qt.CheckState.Unchecked)
            self.methods.addItem(item)
        self.methods.blockSignals(False)
        n = max(self.scene.n_bands, 1)
        self.band.setRange(1, n)
        self.band.setSuffix(f" / {n}")
        self.band.setValue(self.scene.band + 1)
        self._show_band_nm()
        h, w = self.scene.hr_shape or (1, 1)
        for box, top in zip(self.inset_boxes, (w, h, w, h)):
            box.setRange(0, top)
        if not self.inset_on.isChecked() or self.inset_boxes[2].value() == 0:
            inset = core_figure.view_inset(self.scene) or (w * 3 // 8, h * 3 // 8, w * 5 // 8, h * 5 // 8)
            self.set_inset(inset)
        for i in range(self.views.count()):
            item = self.views.item(i)
            if item.data(Qt.ItemDataRole.UserRole) in ("error", "sam") and not gts:
                item.setCheckState(Qt.CheckState.Unchecked)
        self.request_preview()

    def _show_band_nm(self, *_) -> None:
        band = self.band.value() - 1
        self.band_nm.setText(self.scene.band_text(band) if self.scene.band_wavelength(band) is not None else "")

    def set_inset(self, inset: tuple[float, float, float, float] | None) -> None:
        if inset is None:
            self.inset_on.setChecked(False)
            return
        for box, value in zip(self.inset_boxes, inset):
            box.setValue(float(value))
        self.inset_on.setChecked(True)

    def use_current_view(self) -> None:
        inset = core_figure.view_inset(self.scene)
        if inset is None:
            self.status.setText("The panels are not zoomed: zoom in first (mouse wheel), then take the view.")
            return
        self.set_inset(inset)

    def spec(self) -> core_figure.PaperFigureSpec:
        methods = [self.methods.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.methods.count())
                   if self.methods.item(i).checkState() == Qt.CheckState.Checked]
        views = [self.views.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.views.count())
                 if self.views.item(i).checkState() == Qt.CheckState.Checked]
        inset = tuple(b.value() for b in self.inset_boxes) if self.inset_on.isChecked() else None
        return core_figure.PaperFigureSpec(methods=methods, views=views, band=self.band.value() - 1, inset=inset,
                                           inset_corner=self.corner.currentText(),
                                           error_kind=self.error_kind.currentData(),
                                           title=self.title_edit.text().strip())

    # ------------------------------------------------------------------ preview / export
    def request_preview(self) -> None:
        """Render the preview on the worker thread; the window stays responsive, the previous
        picture stays up meanwhile, and only the newest request's result is shown."""
        self._debounce.stop()
        try:
            inputs = core_figure.paper_inputs(self.scene, self.spec())  # the scene is read here, never off-thread
        except HsiError as exc:
            self._supersede()
            self._show_error(exc)
            return
        self.preview_ticket = self.renderer.submit(PREVIEW_JOB, lambda control: render_preview(inputs, control.cancelled))
        self.status.setText("Rendering the preview…")
        if self.preview.pixmap() is None or self.preview.pixmap().isNull():
            self.preview.setText("Rendering the preview…")

    def preview_pending(self) -> bool:
        """True while the newest request's preview is not on screen yet."""
        return self._shown_ticket != self.preview_ticket

    def _supersede(self) -> int:
        """Drop whatever is waiting or rendering: the caller shows something newer itself."""
        self.renderer.cancel(PREVIEW_JOB)
        self.preview_ticket = self._shown_ticket = -abs(self.preview_ticket) - 1  # no job has it
        return self.preview_ticket

    def update_preview(self) -> bool:
        """Render and show the preview now, on this thread (scripts and tests; the dialog itself
        uses :meth:`request_preview`). Anything the worker was rendering is dropped as stale."""
        self._debounce.stop()
        ticket = self._supersede()
        try:
            preview = render_preview(core_figure.paper_inputs(self.scene, self.spec()))
        except HsiError as exc:
            self._show_error(exc)
            return False
        self._on_rendered(ticket, preview)
        return True

    def _on_rendered(self, ticket: int, result) -> None:
        if ticket != self.preview_ticket or result is None:
            return  # a newer request is on its way: never show an older state over it
        self._shown_ticket = ticket
        if isinstance(result, Exception):
            self._show_error(result)
            return
        self.last_provenance = result.provenance
        self.last_preview = result.rgba
        pixmap = QPixmap.fromImage(result.image)
        room = self.scroll.viewport().size()
        if pixmap.width() > room.width() or pixmap.height() > room.height():  # the whole figure in view
            pixmap = pixmap.scaled(room, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.preview.setPixmap(pixmap)
        metrics = result.provenance.get("metrics", {})
        self.status.setText("  ·  ".join(f"{k}: PSNR {v['psnr_db']:.2f} dB, SAM {v['sam_deg']:.2f}°"
                                         for k, v in metrics.items()) or "Preview up to date")
        self.export_button.setEnabled(True)

    def _show_error(self, exc: BaseException) -> None:
        self.status.setText(str(exc) if isinstance(exc, HsiError) else f"The preview failed: {exc!r}")
        self.preview.setPixmap(QPixmap())
        self.preview.setText("No preview")
        self.last_provenance = None
        self.export_button.setEnabled(False)

    def shutdown(self) -> None:
        self._debounce.stop()
        self.renderer.shutdown(5.0)

    def export(self, path: str | None = None, background: bool = True) -> None:
        try:
            inputs = core_figure.paper_inputs(self.scene, self.spec())  # frozen here: the scene may change meanwhile
        except HsiError as exc:
            self.controller.window.report(exc, "Export paper figure")
            return
        path = path or self.controller._ask_save("Export paper figure", "figure.pdf", FIGURE_FILTER)
        if not path:
            return
        dpi = self.dpi.value()
        self.controller._write("Export paper figure",
                               lambda: core_figure.save_figure(core_figure.render_paper_figure(inputs), path, dpi=dpi),
                               background=background)


def install(window: QMainWindow, file_menu: QMenu | None = None, before: QAction | None = None) -> ExportController:
    """Create the controller, an 'E&xport' menu after the File menu, and the session actions in
    ``file_menu`` (inserted before ``before``)."""
    controller = ExportController(window)
    bar = window.menuBar()
    menu = QMenu("E&xport", window)
    menus = [a for a in bar.actions() if a.menu() is not None]
    if len(menus) > 1:
        bar.insertMenu(menus[1], menu)
    else:
        bar.addMenu(menu)
    controller.build_menu(menu)
    if file_menu is not None:
        controller.build_session_actions(file_menu, before)
    window.export_menu = menu
    return controller

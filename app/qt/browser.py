"""The results browser: a compare/eval results file as a sortable, colour-scaled table with the best
method per image marked, the mean per method, and a per-image chart; double-click an image to open
its GT and every method's reconstruction in the viewer. "Run compare…" runs ``compare`` on folders
from a dialog, off the GUI thread, with progress and cancel.

The state lives in :mod:`app.core.evaluation.results` (Qt-free); this module only shows it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6 import sip
from PyQt6.QtCore import QAbstractTableModel, QModelIndex, QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QBrush, QColor, QFont, QKeySequence
from PyQt6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                             QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMainWindow, QProgressBar,
                             QPushButton, QSpinBox, QSplitter, QTableView, QTableWidget, QTableWidgetItem,
                             QToolButton, QVBoxLayout, QWidget)

from app.core.evaluation.results import (HIGHER_IS_BETTER, METRIC_FORMATS, METRIC_TITLES, OpenedScene, ResultsError,
                              ResultsTable, load_results, load_scene, parse_results)
from app.core.evaluation.compare import RANGES, CompareCancelled
from app.core.errors import HsiError
from app.core.state.scene import Scene
from app.qt import theme
from app.qt.workers import JobControl, Worker

JSON_FILTER = "Results JSON (*.json);;All files (*)"
# cell colours from worst to best (alpha keeps the text readable on both themes)
WORST_RGB, MIDDLE_RGB, BEST_RGB = (214, 69, 65), (222, 184, 65), (46, 160, 90)
CELL_ALPHA = 120
STAR = " ★"
IMAGE_COL, METHOD_COL = 0, 1


def cell_colour(t: float | None) -> QColor | None:
    """Worst (0) red → yellow → green (1) best; None without a value."""
    if t is None or not np.isfinite(t):
        return None
    a, b, u = (WORST_RGB, MIDDLE_RGB, t * 2) if t < 0.5 else (MIDDLE_RGB, BEST_RGB, t * 2 - 1)
    return QColor(*(int(round(x + (y - x) * u)) for x, y in zip(a, b)), CELL_ALPHA)


def method_colour(index: int) -> str:
    return theme.RECON_CURVE_COLOURS[index % len(theme.RECON_CURVE_COLOURS)]


def short_name(image: str, limit: int = 16) -> str:
    """Axis label of an image: CAVE's '_ms' dropped, long names shortened."""
    name = image[:-3] if image.lower().endswith("_ms") else image
    return name if len(name) <= limit else name[:limit - 1] + "…"


# ---------------------------------------------------------------------------------- table model
class ResultsModel(QAbstractTableModel):
    """Rows: one per image x method (in the current sort order), the pairs without metrics, then one
    mean row per method (always last). Columns: image, method, then each metric of the table."""

    ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: ResultsTable | None = None
        self.metrics: tuple[str, ...] = ()
        self._rows: list[tuple] = []  # ("entry", Entry) | ("problem", (image, method, text)) | ("mean", method)
        self._sort: tuple[str, bool] | None = None

    # ------------------------------------------------------------------ content
    def set_table(self, table: ResultsTable | None) -> None:
        self.beginResetModel()
        self.table = table
        self.metrics = table.metrics if table is not None else ()
        self._sort = None
        self._means = table.means() if table is not None else {}
        self._rebuild()
        self.endResetModel()

    def _rebuild(self) -> None:
        t = self.table
        if t is None:
            self._rows = []
            return
        entries = t.entries if self._sort is None else t.sorted_entries(*self._sort)
        self._rows = ([("entry", e) for e in entries] + [("problem", p) for p in t.problems]
                      + [("mean", m) for m in self._sorted_methods()])

    def _sorted_methods(self) -> list[str]:
        """The mean rows in the order of the image rows' sort (they stay below them): a mean table
        that ignores the sort reads as if the last-sorted method were the best."""
        methods = list(self.table.methods)
        if self._sort is None:
            return methods
        key, best_first = self._sort
        if key == "image":
            return methods
        if key == "method":
            return sorted(methods, key=str.lower, reverse=not best_first)
        valued = [m for m in methods if self._means.get(m, {}).get(key) is not None]
        missing = [m for m in methods if m not in valued]
        descending = HIGHER_IS_BETTER[key] == best_first
        valued.sort(key=lambda m: self._means[m][key], reverse=descending)  # stable: ties keep the table order
        return valued + missing

    def sort_by(self, key: str, best_first: bool = True) -> None:
        """Sort the image rows by a metric (best first with ``best_first``) or 'image' / 'method'."""
        if self.table is None:
            return
        self.layoutAboutToBeChanged.emit()
        self._sort = (key, best_first)
        self._rebuild()
        self.layoutChanged.emit()

    def column_key(self, column: int) -> str:
        return ("image", "method", *self.metrics)[column]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:  # noqa: D401
        """Qt's header sort: ascending = small values first (best first for SAM/ERGAS/RMSE)."""
        if self.table is None or not 0 <= column < self.columnCount():
            return
        key = self.column_key(column)
        ascending = order == Qt.SortOrder.AscendingOrder
        best_first = ascending if key in ("image", "method") else ascending != HIGHER_IS_BETTER[key]
        self.sort_by(key, best_first)

    def row_kind(self, row: int) -> tuple[str, object]:
        return self._rows[row]

    def image_of(self, row: int) -> str | None:
        kind, item = self._rows[row]
        return item.image if kind == "entry" else item[0] if kind == "problem" else None

    def rows_for(self, image: str) -> list[int]:
        return [r for r in range(len(self._rows)) if self.image_of(r) == image]

    # ------------------------------------------------------------------ Qt API
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() or self.table is None else 2 + len(self.metrics)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        key = self.column_key(section) if self.table is not None else None
        if role == Qt.ItemDataRole.DisplayRole:
            return {"image": "Image", "method": "Method"}.get(key, METRIC_TITLES.get(key, key))
        if role == Qt.ItemDataRole.ToolTipRole and key in HIGHER_IS_BETTER:
            better = "higher" if HIGHER_IS_BETTER[key] else "lower"
            return f"{METRIC_TITLES[key]}: {better} is better; ★ marks the best method of each image"
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.table is None:
            return None
        kind, item = self._rows[index.row()]
        key = self.column_key(index.column())
        if role == self.ENTRY_ROLE:
            return self._rows[index.row()]
        if kind == "entry":
            return self._entry_data(item, key, role)
        if kind == "problem":
            image, method, text = item
            if role == Qt.ItemDataRole.DisplayRole:
                return {"image": image, "method": method}.get(key, "—" if key != self.metrics[0] else
                                                               ("missing" if text == "no prediction" else "failed"))
            if role == Qt.ItemDataRole.ToolTipRole:
                return text
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(QColor(theme.current().dim_text))
            return None
        return self._mean_data(item, key, role)

    def _entry_data(self, e, key: str, role):
        t = self.table
        if key in ("image", "method"):
            if role == Qt.ItemDataRole.DisplayRole:
                return e.image if key == "image" else e.method
            if role == Qt.ItemDataRole.ToolTipRole:
                lines = [f"{e.image} · {e.method}"]
                if e.pred_path is not None:
                    lines.append(f"prediction: {e.pred_path}")
                if e.range or e.layout:
                    lines.append(f"read as {e.layout or '?'} layout, {e.range or '?'} range")
                lines += list(e.notes)
                lines += e.provenance_lines()
                if t.can_open() is None:
                    lines.append("double-click to open this image in the viewer")
                return "\n".join(lines)
            return None
        value = e.value(key)
        best = value is not None and t.is_best(e.image, e.method, key)
        if role == Qt.ItemDataRole.DisplayRole:
            return "—" if value is None else METRIC_FORMATS[key].format(value) + (STAR if best else "")
        if role == Qt.ItemDataRole.UserRole:
            return value
        if role == Qt.ItemDataRole.BackgroundRole:
            colour = cell_colour(t.colour_value(key, value))
            return None if colour is None else QBrush(colour)
        if role == Qt.ItemDataRole.FontRole and best:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and best:
            return f"best {METRIC_TITLES[key]} for {e.image}"
        return None

    def _mean_data(self, method: str, key: str, role):
        t = self.table
        mean = self._means[method]
        if key in ("image", "method"):
            if role == Qt.ItemDataRole.DisplayRole:
                n = mean["images"]
                return f"mean ({n} image{'s' if n != 1 else ''})" if key == "image" else method
            if role == Qt.ItemDataRole.FontRole:
                font = QFont()
                font.setItalic(True)
                return font
            return None
        value = mean.get(key)
        best = value is not None and method in t.best_mean_methods(key)
        if role == Qt.ItemDataRole.DisplayRole:
            return "—" if value is None else METRIC_FORMATS[key].format(value) + (STAR if best else "")
        if role == Qt.ItemDataRole.UserRole:
            return value
        if role == Qt.ItemDataRole.BackgroundRole:
            colour = cell_colour(t.colour_value(key, value))
            return None if colour is None else QBrush(colour)
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setItalic(True)
            font.setBold(best)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"mean {METRIC_TITLES[key]} of {method} over {mean['images']} image(s)"
        return None


# ---------------------------------------------------------------------------------- chart
def chart_floor(lo: float, hi: float) -> float:
    """Where the bars start: 0 when the values are far from it (or straddle it); otherwise a
    round number (a multiple of 1, 2 or 5 x 10^k) clearly below the smallest value, so that PSNRs
    of 31-33 dB show their differences without a bar whose base is an odd 30.87 dB."""
    if lo <= 0.0 or lo <= 0.5 * hi:
        return 0.0
    raw = max(hi - lo, 0.05 * abs(hi)) / 4.0
    magnitude = 10.0 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
    k = np.floor(lo / step)
    if lo - k * step < 0.2 * step:  # the smallest bar would be a sliver
        k -= 1
    decimals = max(0, 1 - int(np.floor(np.log10(step))))
    return float(max(round(k * step, decimals), 0.0))


class MetricChart(pg.PlotWidget):
    """One metric by image: a group of bars per image, one bar per method (legend), the image of the
    selected row shaded."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.showGrid(y=True, alpha=0.25)
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        # one legend row above the bars (the y range leaves room for it)
        self.legend = self.addLegend(offset=(60, 4), labelTextColor=theme.current().plot_fg, colCount=4)
        self.bars: dict[str, pg.BarGraphItem] = {}
        shade = QColor(theme.current().highlight)
        shade.setAlpha(60)
        self.highlight = pg.LinearRegionItem(movable=False, brush=shade, pen=pg.mkPen(None))
        self.highlight.setZValue(-10)
        self.highlight.hide()
        self.addItem(self.highlight)
        self.table: ResultsTable | None = None
        self.metric: str | None = None

    def show_metric(self, table: ResultsTable | None, metric: str | None) -> None:
        self.table, self.metric = table, metric
        for item in self.bars.values():
            self.removeItem(item)
        self.bars.clear()
        self.legend.clear()
        axis = self.getAxis("bottom")
        if table is None or metric is None or metric not in table.metrics:
            axis.setTicks([[]])
            self.setTitle("")
            return
        values = table.pivot(metric)  # (images, methods)
        n_img, n_meth = values.shape
        width = 0.8 / max(1, n_meth)
        for j, method in enumerate(table.methods):
            ok = np.isfinite(values[:, j])
            xs = np.arange(n_img)[ok] - 0.4 + width * (j + 0.5)
            colour = QColor(method_colour(j))
            bar = pg.BarGraphItem(x=xs, height=values[ok, j], width=width * 0.92, brush=colour,
                                  pen=pg.mkPen(colour.darker(150)))
            self.addItem(bar)
            self.legend.addItem(bar, method)
            self.bars[method] = bar
        axis.setTicks([[(i, short_name(name)) for i, name in enumerate(table.images)]])
        better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
        self.setTitle(f"{METRIC_TITLES[metric]} by image ({better} is better)", color=theme.current().plot_fg,
                      size="10pt")
        finite = values[np.isfinite(values)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            pad = 0.08 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-6)
            floor = chart_floor(lo, hi)
            for bar in self.bars.values():
                bar.setOpts(y0=floor, height=bar.opts["height"] - floor)
            self.setYRange(floor, hi + pad + 0.18 * (hi + pad - floor), padding=0)  # room for the legend
            # a bar that does not start at 0 must say so, or its length reads as the value
            self.setLabel("left", METRIC_TITLES[metric] + (f"  (axis from {floor:g})" if floor else ""))
        else:
            self.setLabel("left", METRIC_TITLES[metric])
        self.setXRange(-0.6, n_img - 0.4, padding=0)

    def set_selected(self, image: str | None) -> None:
        if self.table is None or image not in (self.table.images if self.table else []):
            self.highlight.hide()
            return
        i = self.table.images.index(image)
        self.highlight.setRegion((i - 0.5, i + 0.5))
        self.highlight.show()


# ---------------------------------------------------------------------------------- compare dialog
class CompareDialog(QDialog):
    """GT folder, method folders with names, and compare's reading options."""

    def __init__(self, parent=None, settings: QSettings | None = None):
        super().__init__(parent)
        self.setWindowTitle("Run compare")
        self.settings = settings
        self.resize(720, 420)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.gt_edit = QLineEdit(self)
        self.gt_edit.setPlaceholderText("GT folder (cube files or CAVE scene folders) or one cube file")
        form.addRow("Ground truth:", self._path_row(self.gt_edit, "Browse…", self._browse_gt))
        layout.addLayout(form)

        layout.addWidget(QLabel("Methods (one folder of predictions each; the name defaults to the folder's):"))
        self.methods = QTableWidget(0, 2, self)
        self.methods.setHorizontalHeaderLabels(["Name", "Folder or file"])
        self.methods.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.methods.horizontalHeader().resizeSection(0, 160)
        self.methods.verticalHeader().hide()
        layout.addWidget(self.methods, 1)
        buttons_row = QHBoxLayout()
        add = QPushButton("Add folder…", self)
        add.clicked.connect(self._browse_method)
        remove = QPushButton("Remove", self)
        remove.clicked.connect(lambda: self.methods.removeRow(self.methods.currentRow())
                               if self.methods.currentRow() >= 0 else None)
        buttons_row.addWidget(add)
        buttons_row.addWidget(remove)
        buttons_row.addStretch(1)
        layout.addLayout(buttons_row)

        opts = QFormLayout()
        self.scale_spin = QSpinBox(self)
        self.scale_spin.setRange(0, 64)
        self.scale_spin.setSpecialValueText("not given (no ERGAS)")
        self.scale_spin.setValue(4)
        self.scale_spin.setToolTip("HR/LR scale factor: needed for ERGAS and for cropping to a multiple")
        opts.addRow("Scale:", self.scale_spin)
        self.var_edit = QLineEdit(self)
        self.var_edit.setPlaceholderText("automatic")
        self.var_edit.setToolTip("variable/dataset holding the predicted cube in .mat/.npz/.h5 files (--var)")
        opts.addRow("Variable:", self.var_edit)
        self.range_combo = QComboBox(self)
        self.range_combo.addItems(RANGES)
        self.range_combo.setToolTip("value range of the predictions: auto (detected), unit [0, 1], 8bit, 16bit, "
                                    "max (divide by the maximum)")
        opts.addRow("Prediction range:", self.range_combo)
        self.crop_check = QCheckBox("Compare a smaller prediction with the matching part of the GT (--crop)", self)
        opts.addRow("", self.crop_check)
        self.device_combo = QComboBox(self)
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        opts.addRow("Device:", self.device_combo)
        self.json_edit = QLineEdit(self)
        self.json_edit.setPlaceholderText("optional: also write the results JSON here")
        opts.addRow("Results JSON:", self._path_row(self.json_edit, "Save as…", self._browse_json))
        layout.addLayout(opts)

        self.error_label = QLabel("", self)
        self.error_label.setObjectName("DimLabel")
        self.error_label.setWordWrap(True)
        layout.addWidget(self.error_label)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        box.button(QDialogButtonBox.StandardButton.Ok).setText("Run compare")
        box.accepted.connect(self._accept)
        box.rejected.connect(self.reject)
        layout.addWidget(box)

    def _start_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home()))) if self.settings is not None else str(Path.home())

    def _path_row(self, edit: QLineEdit, button_text: str, on_click) -> QHBoxLayout:
        """A path field with its file-dialog button beside it."""
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        button = QPushButton(button_text, self)
        button.clicked.connect(on_click)
        row.addWidget(button)
        return row

    def _browse_gt(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Ground-truth folder", self._start_dir())
        if folder:
            self.gt_edit.setText(folder)

    def _browse_method(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of one method's predictions", self._start_dir())
        if folder:
            self.add_method(folder)

    def _browse_json(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Write the results JSON", self._start_dir(), JSON_FILTER)
        if path:
            self.json_edit.setText(path)

    def add_method(self, path: str, name: str = "") -> None:
        row = self.methods.rowCount()
        self.methods.insertRow(row)
        self.methods.setItem(row, 0, QTableWidgetItem(name or Path(path).name))
        self.methods.setItem(row, 1, QTableWidgetItem(str(path)))

    def values(self) -> dict:
        """compare() keywords plus 'gt', 'preds', 'names' and 'json_out'."""
        preds, names = [], []
        for row in range(self.methods.rowCount()):
            name_item, path_item = self.methods.item(row, 0), self.methods.item(row, 1)
            path = path_item.text().strip() if path_item else ""
            if path:
                preds.append(path)
                names.append(name_item.text().strip() if name_item else "")
        return {"gt": self.gt_edit.text().strip(), "preds": preds, "names": names,
                "scale": self.scale_spin.value() or None, "var": self.var_edit.text().strip() or None,
                "pred_range": self.range_combo.currentText(), "crop": self.crop_check.isChecked(),
                "device": self.device_combo.currentText(), "json_out": self.json_edit.text().strip() or None}

    def problem(self) -> str | None:
        v = self.values()
        if not v["gt"]:
            return "Choose the ground-truth folder."
        if not Path(v["gt"]).expanduser().exists():
            return f"{v['gt']}: no such file or folder"
        if not v["preds"]:
            return "Add at least one method folder."
        for p in v["preds"]:
            if not Path(p).expanduser().exists():
                return f"{p}: no such file or folder"
        names = [n for n in v["names"] if n]
        if len(set(names)) != len(names):
            return "Two methods have the same name; give each its own."
        return None

    def _accept(self) -> None:
        problem = self.problem()
        if problem:
            self.error_label.setText(problem)
            return
        if self.settings is not None:
            self.settings.setValue("last_dir", str(Path(self.values()["gt"]).expanduser().parent))
        self.accept()


# ---------------------------------------------------------------------------------- jobs
COMPARE_JOB = "compare"

def _run_compare(values: dict, control: JobControl) -> dict:
    """compare() with the dialog's values; writes the JSON when asked (worker thread). Progress
    goes to ``control`` as (done, total, label)."""
    from app.core.inference.batch import write_json
    from app.core.evaluation.compare import compare

    doc = compare(values["gt"], values["preds"], names=values["names"], scale=values["scale"], var=values["var"],
                  pred_range=values["pred_range"], crop=values["crop"], device=values["device"],
                  on_progress=lambda done, total, row: control.report(
                      (int(done), int(total), f"{row.get('image', '')} · {row.get('model', '')}" if row else "")),
                  should_cancel=control.cancelled)
    if values.get("json_out"):
        write_json(Path(values["json_out"]).expanduser(), doc)
    return doc


# ---------------------------------------------------------------------------------- window
class ResultsBrowser(QMainWindow):
    """The browser window. ``scene``: the viewer's scene that double-clicks fill; ``report_error``:
    how errors reach the user (the main window's dialogs).

    Signals: loaded(ResultsTable), scene_opened(str image), busy_changed(bool), compare_finished(str:
    'done' | 'cancelled' | 'failed')."""

    loaded = pyqtSignal(object)
    scene_opened = pyqtSignal(str)
    busy_changed = pyqtSignal(bool)
    compare_finished = pyqtSignal(str)
    compare_progress = pyqtSignal(int, int, str)  # (pairs done, pairs in all, 'image · method')

    def __init__(self, scene: Scene, *, report_error: Callable[[BaseException, str], None] | None = None,
                 settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        if parent is not None:
            self.setWindowFlag(Qt.WindowType.Window, True)
        self.setObjectName("ResultsBrowser")
        self.setWindowTitle("Results browser")
        self.resize(1100, 760)
        self.scene = scene
        self.settings = settings if settings is not None else QSettings("hsi-sr-viewer", "viewer")
        self._report_error = report_error
        self.errors_reported: list[str] = []
        self.table: ResultsTable | None = None
        # two threads: an image can be opened while a comparison runs
        self._worker = Worker(self, name="results", threads=2)
        self._worker.busy.connect(self.busy_changed)
        self._worker.progress.connect(lambda _key, _ticket, value: self.compare_progress.emit(*value))
        self.compare_progress.connect(self._on_compare_progress)
        self._doc_in_memory: dict | None = None  # the last comparison run here (Save JSON writes it)
        # asked before an opened image replaces the viewer's layers (the window's unsaved-work
        # check: (uids, action) -> proceed?)
        self.replace_guard: Callable[[list[int], str], bool] | None = None

        # ---- toolbar
        bar = self.addToolBar("Results")
        bar.setObjectName("ResultsToolbar")
        bar.setMovable(False)
        self.open_action = self._action("Open JSON…", self.open_json_dialog, QKeySequence.StandardKey.Open,
                                        "Open a results file written by compare --json or eval --json")
        self.compare_action = self._action("Run compare…", self.run_compare_dialog, "Ctrl+K",
                                           "Compare folders of predictions with a GT folder")
        self.save_action = self._action("Save JSON…", self.save_json_dialog, QKeySequence.StandardKey.Save,
                                        "Write the results of the last comparison as JSON")
        self.open_scene_action = self._action("Open in viewer", self.open_selected, "Return",
                                              "Open the selected image's GT and reconstructions in the viewer")
        self.cancel_action = self._action("Cancel compare", self.cancel_compare, "Esc", "Stop the running comparison")
        for a in (self.open_action, self.compare_action, self.save_action):
            bar.addAction(a)
        bar.addSeparator()
        bar.addWidget(QLabel(" Metric: "))
        self.metric_combo = QComboBox(self)
        self.metric_combo.setToolTip("Chart this metric and sort the table by it (best first)")
        self.metric_combo.currentIndexChanged.connect(self._metric_chosen)
        bar.addWidget(self.metric_combo)
        bar.addSeparator()
        bar.addAction(self.open_scene_action)

        # ---- central: info, table, chart
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        self.info_label = QLabel("Open a results JSON (compare --json / eval --json) or run compare on folders.",
                                 central)
        self.info_label.setWordWrap(True)
        layout.addWidget(self.info_label)
        splitter = QSplitter(Qt.Orientation.Vertical, central)
        self.model = ResultsModel(self)
        self.view = QTableView(splitter)
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(24)
        self.view.horizontalHeader().setStretchLastSection(False)
        self.view.horizontalHeader().setSectionsClickable(True)
        self.view.setSortingEnabled(True)
        self.view.horizontalHeader().sortIndicatorChanged.connect(self._header_sorted)
        self.view.doubleClicked.connect(self._double_clicked)
        self.view.selectionModel().currentRowChanged.connect(self._row_changed)
        self.chart = MetricChart(splitter)
        splitter.addWidget(self.view)
        splitter.addWidget(self.chart)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([560, 260])
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self._sort_column: int | None = None

        # ---- status: progress + cancel
        status = self.statusBar()
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(260)
        self.progress.setFormat("%v / %m pairs")
        self.progress.hide()
        self.cancel_button = QToolButton(self)
        self.cancel_button.setText("Cancel")
        self.cancel_button.clicked.connect(self.cancel_compare)
        self.cancel_button.hide()
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        self._sync_actions()

    def _action(self, text, slot, shortcut=None, tip="") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        return self._worker.is_running

    @property
    def comparing(self) -> bool:
        return self._worker.busy_with(COMPARE_JOB)

    def _report(self, exc: BaseException, title: str) -> None:
        self.errors_reported.append(f"{title}: {exc}")
        self.statusBar().showMessage(str(exc).splitlines()[0] if str(exc) else title, 10000)
        if self._report_error is not None:
            self._report_error(exc, title)
        else:
            print(f"{title}: {exc}", file=sys.stderr)

    def _sync_actions(self) -> None:
        has = self.table is not None
        self.save_action.setEnabled(has)
        self.open_scene_action.setEnabled(has and self.table.can_open() is None)
        self.compare_action.setEnabled(not self.comparing)
        self.cancel_action.setEnabled(self.comparing)

    # ------------------------------------------------------------------ loading
    def open_json_dialog(self) -> None:
        start = str(self.settings.value("last_dir", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open compare/eval results", start, JSON_FILTER)
        if path:
            self.settings.setValue("last_dir", str(Path(path).parent))
            self.open_json(path)

    def open_json(self, path) -> bool:
        """Load a results file; errors are reported (one line naming the file). True on success."""
        try:
            table = load_results(path)
        except HsiError as exc:
            self._report(exc, f"Cannot open {Path(path).name}")
            return False
        self.set_table(table)
        return True

    def set_document(self, doc: dict, source=None) -> None:
        self.set_table(parse_results(doc, source=Path(source) if source else None))

    def set_table(self, table: ResultsTable) -> None:
        self.table = table
        self._doc_in_memory = None
        self.model.set_table(table)
        self._sort_column = None
        self.view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for m in table.metrics:
            self.metric_combo.addItem(METRIC_TITLES[m], m)
        self.metric_combo.setCurrentIndex(-1)
        self.metric_combo.blockSignals(False)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.resizeColumnsToContents()
        for col in range(self.model.columnCount()):
            self.view.setColumnWidth(col, max(self.view.columnWidth(col) + 12, 84))
            if col > METHOD_COL:
                header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)  # metrics share the width
        if table.metrics:
            self.metric_combo.setCurrentIndex(0)  # charts it and sorts by it, best first
        self._show_info()
        self._sync_actions()
        self.setWindowTitle(f"{table.name} — Results browser")
        self.loaded.emit(table)

    def _show_info(self) -> None:
        t = self.table
        parts = [f"<b>{t.name}</b>: {t.kind}, {len(t.images)} image(s) × {len(t.methods)} method(s)"]
        if t.protocol:
            parts.append(f"protocol {t.protocol}")
        if t.scale:
            parts.append(f"scale ×{t.scale}")
        if t.device:
            parts.append(f"device {t.device}")
        sw = t.software
        parts.append(f"written by {sw.get('name', '?')} {sw.get('version', '?')} (schema {t.schema_version})"
                     if sw.get("version") else "schema 1 (no software version)")
        if t.problems:
            parts.append(f"<span style='color:{WORST_HTML}'>{len(t.problems)} pair(s) without metrics</span>")
        why = t.can_open()
        tail = ("double-click a row to open the image in the viewer" if why is None else
                "eval keeps no reconstructions: images cannot be opened")
        self.info_label.setText(" · ".join(parts) + f" — ★ best per image, {tail}")
        self.info_label.setToolTip("\n".join(t.notes + [f"{i} · {m}: {text}" for i, m, text in t.problems]))

    # ------------------------------------------------------------------ sorting and metric
    def current_metric(self) -> str | None:
        return self.metric_combo.currentData()

    def set_metric(self, metric: str) -> None:
        index = self.metric_combo.findData(metric)
        if index < 0:
            raise ValueError(f"no metric {metric!r} in these results")
        self.metric_combo.setCurrentIndex(index)

    def _metric_chosen(self, _index: int) -> None:
        metric = self.current_metric()
        self.chart.show_metric(self.table, metric)
        self._row_changed(self.view.currentIndex(), None)
        if metric is not None:
            self.sort_by(metric, best_first=True)

    def sort_by(self, key: str, best_first: bool = True) -> None:
        """Sort the table (and show the header's indicator): best first for a metric."""
        column = ("image", "method", *self.model.metrics).index(key)
        if key in ("image", "method"):
            ascending = best_first
        else:
            ascending = best_first != HIGHER_IS_BETTER[key]
        self._sort_column = column
        self.view.sortByColumn(column, Qt.SortOrder.AscendingOrder if ascending else Qt.SortOrder.DescendingOrder)

    def _header_sorted(self, column: int, order: Qt.SortOrder) -> None:
        """A click on a new metric column sorts best first; the next click on it flips the order."""
        if column < 0 or self.table is None:
            return
        if column != self._sort_column:
            self._sort_column = column
            key = self.model.column_key(column)
            best = (Qt.SortOrder.AscendingOrder if key in ("image", "method") or not HIGHER_IS_BETTER[key]
                    else Qt.SortOrder.DescendingOrder)
            if order != best:
                self.view.horizontalHeader().setSortIndicator(column, best)

    # ------------------------------------------------------------------ selection and opening
    def _row_changed(self, current: QModelIndex, _previous) -> None:
        image = self.model.image_of(current.row()) if current is not None and current.isValid() else None
        self.chart.set_selected(image)

    def select_image(self, image: str, method: str | None = None) -> int:
        """Select the row of ``image`` (and ``method``); returns the row."""
        for row in self.model.rows_for(image):
            kind, item = self.model.row_kind(row)
            if method is None or (kind == "entry" and item.method == method):
                self.view.selectRow(row)
                return row
        raise KeyError(image)

    def image_rows(self) -> list[tuple[str, str]]:
        """(image, method) of the table's image rows, top to bottom (what the user sees)."""
        out = []
        for row in range(self.model.rowCount()):
            kind, item = self.model.row_kind(row)
            if kind == "entry":
                out.append((item.image, item.method))
        return out

    def _double_clicked(self, index: QModelIndex) -> None:
        image = self.model.image_of(index.row())
        if image is not None:
            self.open_image(image)

    def open_selected(self) -> None:
        index = self.view.currentIndex()
        image = self.model.image_of(index.row()) if index.isValid() else None
        if image is None:
            self.statusBar().showMessage("Select an image row first", 5000)
            return
        self.open_image(image)

    def open_image(self, image: str) -> None:
        """Read the image's GT and every method's prediction (worker thread) and show them in the scene:
        the GT as 'gt' named after the image, each prediction as 'recon' named after its method."""
        if self.table is None:
            return
        if not self._may_replace_layers():
            return
        try:
            request = self.table.scene_request(image)
        except HsiError as exc:
            self._report(exc, f"Cannot open {image}")
            return
        self.statusBar().showMessage(f"Opening {image} ({len(request.preds)} reconstruction(s))…")
        self._start(None, lambda _control: load_scene(request), self._scene_loaded,
                    lambda exc: self._report(exc, f"Cannot open {image}"))

    def _may_replace_layers(self) -> bool:
        """True when the viewer's layers may be replaced (nothing unsaved, or the user agreed)."""
        if self.replace_guard is None or not self.scene.layers:
            return True
        return self.replace_guard([layer.uid for layer in self.scene.layers], "Open an image from the results browser")

    def _scene_loaded(self, opened: OpenedScene) -> None:
        scene = self.scene
        if not self._may_replace_layers():  # (asked again: a run may have finished while it loaded)
            self.statusBar().showMessage(f"{opened.image} not opened: the viewer keeps its layers", 8000)
            return
        scene.clear()
        try:
            scene.add_layer(opened.gt, "gt", opened.image)
            for method, cube in opened.recons:
                scene.add_layer(cube, "recon", method)
        except HsiError as exc:
            self._report(exc, f"Cannot show {opened.image}")
            return
        if scene.hr_shape is not None:
            h, w = scene.hr_shape
            scene.set_pixel(h // 2, w // 2)
        # whole images once the new panels are laid out (a fit while they are being built uses their
        # provisional size and zooms far out)
        QTimer.singleShot(0, lambda: None if sip.isdeleted(self) or not scene.layers else scene.reset_view())
        note = "; ".join(opened.notes)
        self.statusBar().showMessage(f"Opened {opened.image}: GT + {', '.join(m for m, _ in opened.recons)}"
                                     + (f" ({note})" if note else ""), 8000)
        if opened.problems:
            self._report(ResultsError(f"{opened.image}: not every reconstruction could be opened: "
                                      + "; ".join(opened.problems)), f"Opened {opened.image} in part")
        self.scene_opened.emit(opened.image)

    # ------------------------------------------------------------------ compare
    def run_compare_dialog(self) -> None:
        if self.comparing:
            return
        dialog = CompareDialog(self, self.settings)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.run_compare(dialog.values())

    def run_compare(self, values: dict) -> None:
        """Run compare with the dialog's values off the GUI thread; the results replace the table."""
        if self.comparing:
            raise RuntimeError("a comparison is already running")
        self._start(COMPARE_JOB, lambda control: _run_compare(values, control),
                    lambda doc: self._compare_done(doc, values), self._compare_failed,
                    lambda: self._compare_failed(CompareCancelled("comparison cancelled by the user")))
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self._sync_actions()
        self.statusBar().showMessage("Comparing…")

    def cancel_compare(self) -> None:
        if self.comparing:
            self._worker.cancel(COMPARE_JOB)
            self.statusBar().showMessage("Cancelling the comparison…")

    def _on_compare_progress(self, done: int, total: int, label: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if label:
            self.statusBar().showMessage(f"Compared {label}")

    def _compare_ended(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        self._sync_actions()

    def _compare_done(self, doc: dict, values: dict) -> None:
        self._compare_ended()
        self.set_document(doc, values.get("json_out"))
        self._doc_in_memory = doc
        n_err = len(doc.get("errors", []))
        self.statusBar().showMessage(f"Compared {len(doc['results'])} pair(s) in {doc.get('seconds', 0):.1f} s"
                                     + (f"; {n_err} failed (see the table)" if n_err else ""), 10000)
        self.compare_finished.emit("done")

    def _compare_failed(self, exc: BaseException) -> None:
        self._compare_ended()
        if isinstance(exc, CompareCancelled):
            self.statusBar().showMessage("Comparison cancelled", 8000)
            self.compare_finished.emit("cancelled")
            return
        self._report(exc, "Cannot compare")
        self.compare_finished.emit("failed")

    def save_json_dialog(self) -> None:
        if self.table is None:
            return
        doc = getattr(self, "_doc_in_memory", None)
        source = self.table.source
        start = str(source) if source else str(Path(str(self.settings.value("last_dir", str(Path.home()))))
                                                / "results.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save the results JSON", start, JSON_FILTER)
        if not path:
            return
        try:
            if doc is not None:
                from app.core.inference.batch import write_json

                write_json(Path(path), doc)
            elif source is not None and Path(path).resolve() != source.resolve():
                Path(path).write_bytes(source.read_bytes())
        except OSError as exc:
            self._report(HsiError(f"{path}: cannot write ({exc.strerror or exc})"), "Cannot save")
            return
        self.statusBar().showMessage(f"Saved {path}", 6000)

    # ------------------------------------------------------------------ workers
    def _start(self, key, job, on_done, on_error, on_cancel=None) -> None:
        def guarded(callback):
            def call(*value):
                try:
                    callback(*value)
                except Exception as exc:  # noqa: BLE001 - shown to the user
                    self._report(exc, "Unexpected error")
            return call

        self._worker.submit(key, job, on_done=guarded(on_done), on_error=guarded(on_error),
                            on_cancel=guarded(on_cancel) if on_cancel is not None else None)

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block (processing events) until no job runs; True when idle (tests, scripts)."""
        return self._worker.wait(timeout_s)

    def closeEvent(self, event):  # noqa: N802
        self.cancel_compare()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the jobs and let their threads end (the viewer is closing)."""
        self._worker.shutdown(5.0)


WORST_HTML = "#%02x%02x%02x" % WORST_RGB

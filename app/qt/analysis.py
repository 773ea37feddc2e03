"""Analysis dock: per-method error and SAM maps on one locked colour scale, a sortable metrics table
(whole image / ROI / visible view), metric-versus-wavelength curves linked to the band slider, and
"go to the worst pixel". The numbers come from :mod:`app.core.evaluation.analysis` (which uses
:mod:`app.core.science.metrics`); the computation runs on a worker thread with progress and cancel.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QGuiApplication
from PyQt6.QtWidgets import (QComboBox, QDoubleSpinBox, QFrame, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                             QProgressBar,
                             QPushButton, QScrollArea, QSizePolicy, QTableWidget, QTableWidgetItem, QTabWidget,
                             QToolButton, QVBoxLayout, QWidget)

from app.core.evaluation.analysis import (CURVE_METRICS, CURVE_TITLES, ERROR_KIND_TITLES, ERROR_KINDS, METRIC_COLUMNS,
                               SCOPE_TITLES, SCOPES, AnalysisCache, AnalysisError, AnalysisResult,
                               make_request, run_analysis, worst_band)
from app.core.evaluation.analysis import SCALE_MODE_TITLES, SCALE_MODES, MapLevels, map_levels
from app.core.state.scene import Scene
from app.qt.fast_image import FastImageItem
from app.qt import colormaps, theme
from app.qt.binding import subscribe
from app.qt.workers import Worker
from app.qt.graphics import (CrossLine, ElidedLabel, ImageView, LegendTable, LevelsBar, PanelViewBox, PointerMixin,
                             best_columns, crosshair_pen, display_stride, place_crosshair, show_strided)

ERROR_CMAP = "inferno"
SAM_CMAP = "viridis"
DEBOUNCE_MS = 120
ANALYSIS_JOB = "analysis"
# Maps are never drawn smaller than this (px, image height): below it the maps scroll, and the
# dock can be maximised (Ctrl+Shift+M) to see more at once.
MIN_MAP_PX = 140
MAP_TITLE_PX = 20


class MapView(PointerMixin, QFrame):
    """One map (error or SAM) of one method: title, image on the HR grid, crosshair.

    Signals: clicked(row, col), hovered(row, col), left(), range_changed(x_range, y_range)."""

    clicked = pyqtSignal(float, float)
    hovered = pyqtSignal(float, float)
    left = pyqtSignal()
    range_changed = pyqtSignal(object, object)

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.setObjectName("ImagePanel")
        th = theme.current()
        self.title = ElidedLabel(title, self, Qt.TextElideMode.ElideRight)
        self.title.setObjectName("PanelName")
        self.graphics = ImageView(self, background=th.image_bg)
        self.graphics.setAcceptDrops(False)
        self.graphics.viewport().setAcceptDrops(False)
        self.graphics.left.connect(self.left)
        self.view = PanelViewBox(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self.graphics.setCentralItem(self.view)
        self.image_item = FastImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        pen = crosshair_pen(th.crosshair)
        self.vline = CrossLine(True, pen)
        self.hline = CrossLine(False, pen)
        self.marker = pg.ScatterPlotItem(size=14, symbol="o", pen=pg.mkPen("#ff3030", width=2), brush=None)
        for item in (self.vline, self.hline, self.marker):
            item.setVisible(False)
            item.setZValue(10)
            self.view.addItem(item, ignoreBounds=True)
        self.extent = None
        self.values: np.ndarray | None = None
        self._levels = (0.0, 1.0)
        self._stride = 1
        self._programmatic = False
        self.graphics.scene().sigMouseClicked.connect(self._on_click)
        self.graphics.scene().sigMouseMoved.connect(self._on_move)
        self.view.sigRangeChanged.connect(self._on_range)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        layout.addWidget(self.title)
        layout.addWidget(self.graphics, 1)
        self.setMinimumSize(110, 100)

    def set_map(self, image: np.ndarray, levels: tuple[float, float], cmap: str) -> None:
        """Show ``image`` (the full map is kept in ``values``; big maps are drawn at screen
        resolution, see app.qt.graphics.display_stride)."""
        from PyQt6.QtCore import QRectF

        first = self.extent is None
        h, w = image.shape
        self.values, self._levels = image, levels
        self.image_item.setColorMap(colormaps.colormap(cmap))
        self.extent = QRectF(0.0, 0.0, float(w), float(h))
        self.vline.set_span(h)
        self.hline.set_span(w)
        if first:
            self.show_all()
        self._stride = display_stride(self.view)
        show_strided(self.image_item, image, levels, 1, self._stride)

    def set_crosshair(self, pixel) -> None:
        place_crosshair(self.vline, self.hline, pixel)

    def set_marker(self, pixel) -> None:
        self.marker.setVisible(pixel is not None)
        if pixel is not None:
            self.marker.setData([pixel[1] + 0.5], [pixel[0] + 0.5])

    def _on_click(self, event):
        if event.button() != Qt.MouseButton.LeftButton or event.double() or self.extent is None:
            return
        p = self._scene_to_pixel(event.scenePos())
        if p is not None and self.extent.contains(p):
            event.accept()
            self.clicked.emit(p.y(), p.x())

    def _on_range(self, _view, view_range, *_):
        if self.values is not None and display_stride(self.view) != self._stride:
            self._stride = display_stride(self.view)
            show_strided(self.image_item, self.values, self._levels, 1, self._stride)
        if self._programmatic or self.view.resizing or self.view.width() < 8 or self.extent is None:
            return
        self.range_changed.emit(tuple(view_range[0]), tuple(view_range[1]))

    def set_range(self, x_range, y_range) -> None:
        """Show this range (from the scene): not reported back as a user pan."""
        self._programmatic = True
        try:
            self.view.setRange(xRange=x_range, yRange=y_range, padding=0.0)
        finally:
            self._programmatic = False

    def show_all(self) -> None:
        if self.extent is not None:
            self._programmatic = True
            try:
                self.view.setRange(rect=self.extent, padding=0.0)
            finally:
                self._programmatic = False


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number (NaN last)."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other):  # noqa: D105
        a = self.value if math.isfinite(self.value) else math.inf
        b = getattr(other, "value", math.inf)
        b = b if math.isfinite(b) else math.inf
        return a < b


def band_words(scene: Scene, band: int) -> str:
    """A band as the band bar names it: '550 nm', or 'band 13 / 31' (1-based) when the reference
    has no wavelengths."""
    if scene.band_wavelength(band) is not None:
        return scene.band_text(band)
    return f"band {int(band) + 1} / {scene.n_bands}"


def format_metric(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "∞" if value == math.inf else "—"
    if key == "psnr_db":
        return f"{value:.2f}"
    if key == "ssim":
        return f"{value:.4f}"
    if key in ("sam_deg", "ergas"):
        return f"{value:.3f}"
    return f"{value:.5f}"


class AnalysisView(QWidget):
    """The analysis dock's widget. ``result`` is the last :class:`AnalysisResult` shown.

    Signals: busy(bool, str) while computing; message(str) for the status bar; failed(exc)."""

    busy = pyqtSignal(bool, str)
    message = pyqtSignal(str)
    failed = pyqtSignal(object)
    updated = pyqtSignal()
    partial_shown = pyqtSignal()  # maps and every metric but SSIM on screen (before ``updated``)
    maximise_requested = pyqtSignal(bool)  # the window gives the dock (almost) all its height, or back

    def __init__(self, scene: Scene, parent=None, *, device: str | None = None):
        super().__init__(parent)
        self.scene = scene
        self.device = device
        self.cache = AnalysisCache()
        # one thread for the analysis: a new request stops the running one (latest wins)
        self.job = Worker(self, name="analysis")
        self.error_views: dict[int, MapView] = {}
        self.sam_views: dict[int, MapView] = {}
        scene.set_analysis_result(None, stale=True)
        self._after: list = []
        self._applying_range = False
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.refresh)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 4, 6, 4)
        outer.setSpacing(4)
        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.error_combo = QComboBox(self)
        for kind in ERROR_KINDS:
            self.error_combo.addItem(ERROR_KIND_TITLES[kind], kind)
        self.error_combo.setToolTip("What the error maps show")
        self.scope_combo = QComboBox(self)
        for scope in SCOPES:
            self.scope_combo.addItem(f"Metrics: {SCOPE_TITLES[scope]}", scope)
        self.scope_combo.setToolTip("Area the metrics table is computed over")
        self.worst_sam_button = QPushButton("Worst SAM pixel", self)
        self.worst_sam_button.setToolTip("Select the pixel with the largest spectral angle (G)")
        self.worst_error_button = QPushButton("Worst error pixel", self)
        self.worst_error_button.setToolTip("Select the pixel with the largest error in the error map (Shift+G)")
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(12)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.cancel_button = QToolButton(self)
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Stop the analysis")
        self.cancel_button.hide()
        self.maximise_button = QToolButton(self)
        self.maximise_button.setText("Maximise")
        self.maximise_button.setCheckable(True)
        self.maximise_button.setToolTip("Give the analysis the window's height, the image panels hidden (Ctrl+Shift+M)")
        self.maximise_button.toggled.connect(self.maximise_requested)
        self.status = QLabel("", self)
        self.status.setObjectName("DimLabel")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the dock
        for w in (self.error_combo, self.scope_combo, self.worst_sam_button, self.worst_error_button):
            bar.addWidget(w)
        bar.addWidget(self.status, 1)
        bar.addWidget(self.progress)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.maximise_button)
        outer.addLayout(bar)

        self.tabs = QTabWidget(self)
        outer.addWidget(self.tabs, 1)
        # ---- maps
        maps = QWidget(self)
        ml = QVBoxLayout(maps)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.setSpacing(2)
        self.maps_scroll = QScrollArea(maps)
        self.maps_scroll.setWidgetResizable(True)
        self.maps_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.maps_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.maps_host = QWidget()
        self.maps_grid = QGridLayout(self.maps_host)
        self.maps_grid.setContentsMargins(0, 0, 0, 0)
        self.maps_grid.setSpacing(4)
        self.maps_scroll.setWidget(self.maps_host)
        self.maps_scroll.viewport().installEventFilter(self)
        ml.addWidget(self.maps_scroll, 1)
        bars = QHBoxLayout()
        self.error_bar = LevelsBar(maps)
        self.sam_bar = LevelsBar(maps)
        # colour scales: all methods' valid pixels (default), each map its own, or the user's
        self.scale_mode = "shared"
        self.user_levels: dict[str, tuple[float, float] | None] = {"error": None, "sam": None}
        self.levels: MapLevels | None = None  # the scales on screen
        self.scale_combo = QComboBox(maps)
        for mode in SCALE_MODES:
            self.scale_combo.addItem(SCALE_MODE_TITLES[mode], mode)
        self.scale_combo.setToolTip("Colour scales of the maps: one for all methods (0 to the 99th percentile of "
                                    "the valid pixels of every method), each map its own, or numbers you set")
        self.scale_combo.currentIndexChanged.connect(lambda: self.set_scale_mode(self.scale_combo.currentData()))
        self.scale_fields: dict[str, tuple[QDoubleSpinBox, QDoubleSpinBox]] = {}
        bars.addWidget(self.scale_combo, 0, Qt.AlignmentFlag.AlignTop)
        for kind, bar, decimals, unit in (("error", self.error_bar, 5, ""), ("sam", self.sam_bar, 2, "°")):
            bars.addWidget(bar)
            pair = []
            for end in ("min", "max"):
                field = QDoubleSpinBox(maps)
                field.setDecimals(decimals)
                field.setRange(0.0, 1e6)
                field.setSingleStep(10.0 ** -(decimals - 2))
                field.setSuffix(unit)
                field.setKeyboardTracking(False)
                field.setToolTip(f"{'Error' if kind == 'error' else 'SAM'} colour scale: {end}imum")
                field.valueChanged.connect(lambda _v, k=kind: self._on_scale_field(k))
                field.hide()
                bars.addWidget(field, 0, Qt.AlignmentFlag.AlignTop)
                pair.append(field)
            self.scale_fields[kind] = (pair[0], pair[1])
        ml.addLayout(bars)
        self.placeholder = QLabel("", self.maps_host)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.maps_grid.addWidget(self.placeholder, 0, 0)
        self.tabs.addTab(maps, "Error / SAM maps")
        # ---- metrics table
        table_tab = QWidget(self)
        tl = QVBoxLayout(table_tab)
        tl.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, 1 + len(METRIC_COLUMNS), table_tab)
        self.table.setHorizontalHeaderLabels(["Method"] + [title for _, title, _ in METRIC_COLUMNS])
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setToolTip("Click a column to sort; best value per column in bold")
        tl.addWidget(self.table, 1)
        tbar = QHBoxLayout()
        self.table_note = QLabel("", table_tab)
        self.table_note.setObjectName("DimLabel")
        self.table_note.setWordWrap(True)
        self.copy_button = QToolButton(table_tab)
        self.copy_button.setText("Copy CSV")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.table_csv()))
        tbar.addWidget(self.table_note, 1)
        tbar.addWidget(self.copy_button)
        tl.addLayout(tbar)
        self.tabs.addTab(table_tab, "Metrics")
        # ---- per-band curves
        curves_tab = QWidget(self)
        cl = QVBoxLayout(curves_tab)
        cl.setContentsMargins(0, 0, 0, 0)
        cbar = QHBoxLayout()
        self.curve_combo = QComboBox(curves_tab)
        for key in CURVE_METRICS:
            self.curve_combo.addItem(CURVE_TITLES[key], key)
        self.curve_note = QLabel("Click a band to jump there; ✕ marks each method's worst band", curves_tab)
        self.curve_note.setObjectName("DimLabel")
        cbar.addWidget(self.curve_combo)
        cbar.addWidget(self.curve_note, 1)
        cl.addLayout(cbar)
        self.curve_plot = pg.PlotWidget(curves_tab)
        self.curve_plot.setMenuEnabled(False)
        self.curve_plot.showGrid(x=True, y=True, alpha=0.18)
        self.curve_plot.setLabel("bottom", "Wavelength", units="nm")
        self.curve_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.curve_plot.getAxis("left").enableAutoSIPrefix(False)
        pen = pg.mkPen(QColor(theme.current().crosshair), width=1, style=Qt.PenStyle.DashLine)
        self.curve_band_line = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.curve_plot.addItem(self.curve_band_line, ignoreBounds=True)
        self.curve_plot.scene().sigMouseClicked.connect(self._on_curve_click)
        self.curve_items: dict[int, pg.PlotDataItem] = {}
        self.worst_bands: dict[int, int] = {}
        # per method: (curve, worst-band mark, (name, colour)), kept and given new data
        self._curve_pool: dict[int, tuple] = {}
        self._curve_labels: tuple | None = None  # (left-axis title, wavelengths known) last set
        # (request, curve metric or None) of the partial result on screen: what its final result
        # need not redraw
        self._partial_shown: tuple | None = None
        plot_row = QHBoxLayout()
        plot_row.setSpacing(6)
        plot_row.addWidget(self.curve_plot, 1)
        # beside the plot, never over the curves; each method's worst band is named here, where
        # labels cannot collide as they did next to the ✕ marks
        self.curve_legend = LegendTable(curves_tab)
        self.curve_legend.COLUMN_MIN = 10_000  # one column
        self.curve_legend.elide = Qt.TextElideMode.ElideRight  # keeps the method's name
        self.curve_legend.setFixedWidth(230)
        self.curve_legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        legend_box = QVBoxLayout()
        legend_box.addWidget(self.curve_legend)
        legend_box.addStretch(1)
        plot_row.addLayout(legend_box)
        cl.addLayout(plot_row, 1)
        self.tabs.addTab(curves_tab, "Per band")

        # ---- wiring
        self.error_combo.currentIndexChanged.connect(
            lambda: self.scene.set_analysis_settings(error_kind=self.error_combo.currentData()))
        self.scope_combo.currentIndexChanged.connect(
            lambda: self.scene.set_analysis_settings(scope=self.scope_combo.currentData()))
        self.curve_combo.currentIndexChanged.connect(
            lambda: self.scene.set_analysis_settings(curve_metric=self.curve_combo.currentData()))
        self.worst_sam_button.clicked.connect(lambda: self.go_to_worst("sam"))
        self.worst_error_button.clicked.connect(lambda: self.go_to_worst("error"))
        self.cancel_button.clicked.connect(self.cancel)
        self.job.progress.connect(lambda _key, _ticket, value: self._on_progress(value))
        self.job.done.connect(lambda _key, _ticket, result: self._on_done(result))
        self.job.failed.connect(lambda _key, _ticket, exc: self._on_failed(exc))
        self.job.cancelled.connect(lambda *_: self._on_cancelled())
        self.job.busy.connect(self._on_running)

        ev = scene.events
        subscribe(self, ev.layers, lambda *_: self._on_layers())
        subscribe(self, ev.band, lambda *_: self._on_band())
        subscribe(self, ev.analysis, lambda *_: self._on_settings())
        subscribe(self, ev.roi, lambda *_: self._invalidate(self.scene.analysis_settings.scope == "roi"))
        subscribe(self, ev.view_range, self._on_view_range)
        subscribe(self, ev.pixel, self._on_pixel)
        subscribe(self, ev.colours, lambda *_: self.result is not None and self._show_curves(self.result))
        self._sync_controls()
        self._on_layers()

    # ------------------------------------------------------------------ triggering
    @property
    def result(self) -> AnalysisResult | None:
        """The result on screen (kept in the scene, where exports read it)."""
        return self.scene.analysis_result

    @property
    def _stale(self) -> bool:
        return self.scene.analysis_stale

    def _set_stale(self, stale: bool) -> None:
        if stale != self.scene.analysis_stale:
            self.scene.set_analysis_result(self.scene.analysis_result, stale=stale)

    def _invalidate(self, needed: bool = True) -> None:
        if not needed:
            return
        self._set_stale(True)
        if self.isVisible():
            self._debounce.start()

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        if self._stale:
            self._debounce.start()

    def _on_layers(self) -> None:
        live = {l.uid for l in self.scene.layers}
        stale = [uid for uid in list(self.error_views) if uid not in live]
        if stale:
            self.cache.forget(stale)
        self._invalidate()

    def _on_band(self) -> None:
        self._place_band_line()
        self._invalidate(self.scene.analysis_settings.error_kind == "abs_band")

    def _on_settings(self) -> None:
        self._sync_controls()
        if self.result is not None and self.result.request.settings.curve_metric != \
                self.scene.analysis_settings.curve_metric:
            self._show_curves(self.result)  # no recomputation: the curves are all in the cache
        self._invalidate()

    def _on_view_range(self, view_range, source) -> None:
        self._applying_range = True
        try:
            for view in list(self.error_views.values()) + list(self.sam_views.values()):
                if view is source:
                    continue
                if view_range is None:
                    view.show_all()
                else:
                    view.set_range(*view_range)
        finally:
            self._applying_range = False
        self._invalidate(self.scene.analysis_settings.scope == "view")

    def _on_pixel(self, pixel) -> None:
        for view in list(self.error_views.values()) + list(self.sam_views.values()):
            view.set_crosshair(pixel)

    def _sync_controls(self) -> None:
        st = self.scene.analysis_settings
        for combo, value in ((self.error_combo, st.error_kind), (self.scope_combo, st.scope),
                             (self.curve_combo, st.curve_metric)):
            i = combo.findData(value)
            if i >= 0 and i != combo.currentIndex():
                combo.blockSignals(True)
                combo.setCurrentIndex(i)
                combo.blockSignals(False)

    def refresh(self) -> None:
        """Start (or restart) the analysis of the scene as it is now."""
        self._debounce.stop()
        try:
            request = make_request(self.scene, self.device)
        except AnalysisError as exc:
            self._set_stale(False)
            self.job.cancel()
            self._show_empty(str(exc))
            return
        self._set_stale(False)
        if self.result is None:  # nothing shown yet: say what is coming, not why there was nothing
            self.placeholder.setText("Analysing the reconstructions against "
                                     f"{request.reference.name}… the maps appear here")
            self.placeholder.show()
        cache = self.cache

        def analyse(control):
            # run_analysis, not analysis_steps: its row-tile ticks stop a long pass mid-way
            return run_analysis(request, cache, progress=lambda f, t: control.report((f, t)),
                                should_cancel=control.cancelled, partial=control.report)

        self.job.submit(ANALYSIS_JOB, analyse)

    def cancel(self) -> None:
        self.job.cancel()
        self._after.clear()
        self.message.emit("Analysis cancelled")

    def settled(self) -> bool:
        """True when nothing is computing or due: no job running, no refresh waiting, and, when
        shown, a result for the scene as it is (an unattended screenshot waits for this)."""
        return not self.job.is_running and not self._debounce.isActive() and not (self._stale and self.isVisible())

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Run a pending refresh now and block until the job is done (tests, scripts)."""
        if self._debounce.isActive() or self._stale:
            self.refresh()
        return self.job.wait(timeout_s)

    # ------------------------------------------------------------------ job callbacks
    def _on_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        if running:
            self.progress.setValue(0)
        self.busy.emit(running, "Analysing…" if running else "")

    def _on_progress(self, value) -> None:
        if isinstance(value, AnalysisResult):  # the maps and every metric but SSIM
            self._on_partial(value)
            return
        fraction, text = value
        self.progress.setValue(int(1000 * fraction))
        self.status.setText(text)

    def _on_cancelled(self) -> None:
        self._after.clear()
        self.status.setText("Analysis cancelled — change anything or press Refresh (F5) to run it again")
        self._set_stale(True)

    def _on_failed(self, exc) -> None:
        self._after.clear()
        self.status.setText(f"Analysis failed: {exc}")
        self.failed.emit(exc)

    def _on_partial(self, result: AnalysisResult) -> None:
        """Maps, table and curves before SSIM is ready (its cells say '…')."""
        self.scene.set_analysis_result(result, stale=self._stale)
        self._show_maps(result)
        self._show_table(result)
        metric = self.scene.analysis_settings.curve_metric
        curves_ready = metric not in result.pending
        if curves_ready:
            self._show_curves(result)
        # what the final result need not redraw: the maps, and the curves of this metric unless
        # they wait for SSIM
        self._partial_shown = (result.request, metric if curves_ready else None)
        self.status.setText("Maps and metrics ready; computing SSIM…")
        self.partial_shown.emit()

    def _on_done(self, result: AnalysisResult) -> None:
        self.scene.set_analysis_result(result, stale=self._stale)
        shown, self._partial_shown = self._partial_shown, None
        same = shown is not None and shown[0] is result.request
        if not same:
            self._show_maps(result)
        self._show_table(result)
        if not (same and shown[1] == self.scene.analysis_settings.curve_metric):
            self._show_curves(result)
        notes = "; ".join(result.notes)
        n = len(result.methods)
        self.status.setText(f"{n} method{'s' if n != 1 else ''} vs {result.request.reference.name}"
                            + (f"  ·  {notes}" if notes else ""))
        after, self._after = self._after, []
        for what in after:
            self.go_to_worst(what)
        self.updated.emit()

    # ------------------------------------------------------------------ maps
    def _show_empty(self, text: str) -> None:
        self.scene.set_analysis_result(None, stale=self._stale)
        self._clear_maps()
        self.placeholder.setText(text)
        self.placeholder.show()
        self.table.setRowCount(0)
        self._drop_curves(self._curve_pool.values())
        self._curve_pool = {}
        self.curve_items.clear()
        self.curve_legend.set_rows([])
        self.status.setText("")
        self.error_bar.set_levels(ERROR_CMAP, None, None, "")
        self.sam_bar.set_levels(SAM_CMAP, None, None, "")

    def map_columns(self, n: int, width: float, height: float, aspect: float) -> tuple[int, int]:
        """(columns, rows) for ``n`` maps (error and SAM pairs) in a ``width`` x ``height``
        viewport: the largest maps that fit, or, when those would be under MIN_MAP_PX, as many
        maps of MIN_MAP_PX as fit across (the rest scrolls)."""
        cols = best_columns(n, max(width, 200), max(height, 100), aspect, header_px=float(MAP_TITLE_PX))
        if cols % 2 and cols < n:
            cols += 1  # keep a method's two maps on one row
        rows = -(-n // cols)
        cell_h = height / rows - MAP_TITLE_PX
        if min(cell_h, width / cols / aspect) < MIN_MAP_PX:
            fit = max(int(width // (MIN_MAP_PX * aspect + 4)), 1)
            cols = min(n, max(fit - fit % 2, 2) if n > 1 else 1)
            rows = -(-n // cols)
        return cols, rows

    def _relayout_maps(self) -> None:
        """Error and SAM map of each method side by side, the pairs packed to fill the area; maps
        that would be smaller than MIN_MAP_PX scroll instead."""
        views = []
        for uid in self.error_views:
            views += [self.error_views[uid], self.sam_views[uid]]
        if not views:
            self.maps_host.setMinimumHeight(0)
            return
        shape = self.scene.hr_shape or (1, 1)
        aspect = shape[1] / shape[0]
        viewport = self.maps_scroll.viewport()
        width, height = viewport.width(), viewport.height()
        cols, rows = self.map_columns(len(views), width, height, aspect)
        cell_h = height / rows - MAP_TITLE_PX
        # taller than the viewport when the maps would be too small: the scroll area scrolls, a
        # row of maps per page when a page holds one (a row is never cut by the fold)
        row_px = max(height, MIN_MAP_PX + MAP_TITLE_PX) + self.maps_grid.spacing()
        need = rows * row_px if cell_h < MIN_MAP_PX else 0
        if self.maps_host.minimumHeight() != need:
            self.maps_host.setMinimumHeight(need)
        if cols == getattr(self, "_map_columns", 0):
            return
        self._map_columns = cols
        for view in views:
            self.maps_grid.removeWidget(view)
        for i, view in enumerate(views):
            self.maps_grid.addWidget(view, i // cols, i % cols)
            view.show()
        for r in range(self.maps_grid.rowCount()):
            self.maps_grid.setRowStretch(r, 1 if r < rows else 0)
        for c in range(self.maps_grid.columnCount()):
            self.maps_grid.setColumnStretch(c, 1 if c < cols else 0)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._relayout_maps()

    def eventFilter(self, obj, event):  # noqa: N802: the maps' viewport resized (a tab or dock change)
        from PyQt6.QtCore import QEvent

        if event.type() == QEvent.Type.Resize and obj is self.maps_scroll.viewport():
            QTimer.singleShot(0, self._relayout_maps)
        return super().eventFilter(obj, event)

    def _clear_maps(self) -> None:
        for view in list(self.error_views.values()) + list(self.sam_views.values()):
            self.maps_grid.removeWidget(view)
            view.setParent(None)
            view.deleteLater()
        self.error_views.clear()
        self.sam_views.clear()

    def _make_view(self, title: str, uid: int) -> MapView:
        view = MapView(title, self.maps_host)
        view.clicked.connect(lambda r, c: self.scene.set_pixel(r, c))
        view.hovered.connect(lambda r, c, uid=uid: self.scene.set_hover(uid, r, c))
        view.left.connect(lambda uid=uid: self._on_left(uid))
        view.range_changed.connect(lambda xr, yr, v=view: self._on_map_range(v, xr, yr))
        return view

    def _on_left(self, uid: int) -> None:
        hover = self.scene.hover
        if hover is not None and hover.uid == uid:
            self.scene.set_hover(None)

    def _on_map_range(self, view: MapView, x_range, y_range) -> None:
        if self._applying_range or not view.isVisible():
            return
        try:
            self.scene.set_view_range(x_range, y_range, source=view)
        except ValueError:
            pass

    def _show_maps(self, result: AnalysisResult) -> None:
        self.placeholder.hide()
        uids = [m.layer.uid for m in result.methods]
        if list(self.error_views) != uids:
            self._clear_maps()
            for m in result.methods:
                self.error_views[m.layer.uid] = self._make_view("", m.layer.uid)
                self.sam_views[m.layer.uid] = self._make_view("", m.layer.uid)
            self._map_columns = 0
            self._relayout_maps()
        kind = result.request.settings.error_kind
        what = "RMSE" if kind == "rmse" else f"|err| {band_words(self.scene, result.request.band)}"
        levels = self._levels_for(result)
        own = not levels.shared
        for m in result.methods:
            ev, sv = self.error_views[m.layer.uid], self.sam_views[m.layer.uid]
            elv, slv = levels.error[m.layer.uid], levels.sam[m.layer.uid]
            # the method's name first: a narrow map elides the numbers, never the name; then, on
            # a scale of its own, that scale (before the means, which the table has)
            psnr = f"{format_metric('psnr_db', m.full['psnr_db'])} dB"
            error = f"{what} {float(np.mean(m.error_map)):.4f}"
            # (the image's PSNR before its RMSE; the band's |error| before the image's PSNR)
            numbers = f"{psnr} · {error}" if kind == "rmse" else f"{error} · {psnr}"
            ev.title.set_full_text(f"{m.name} · " + (f"scale 0–{elv[1]:.2g} · " if own else "") + numbers)
            sv.title.set_full_text(f"{m.name} · " + (f"scale 0–{slv[1]:.2g}° · " if own else "")
                                   + f"SAM {m.full['sam_deg']:.2f}°")
            ev.title.setToolTip(f"{m.name}: PSNR {format_metric('psnr_db', m.full['psnr_db'])} dB (whole image); "
                                f"{ERROR_KIND_TITLES[kind]}, mean {float(np.mean(m.error_map)):.5g}; "
                                f"colours {elv[0]:.4g} – {elv[1]:.4g}")
            sv.title.setToolTip(f"{m.name}: spectral angle per pixel, mean {m.full['sam_deg']:.4g}°; "
                                f"colours {slv[0]:.4g} – {slv[1]:.4g}°")
            ev.set_map(m.error_map, elv, ERROR_CMAP)
            sv.set_map(m.sam_map, slv, SAM_CMAP)
            for view in (ev, sv):
                view.set_crosshair(self.scene.pixel)
                if self.scene.view_range is not None:
                    view.set_range(*self.scene.view_range)
        first = result.methods[0].layer.uid
        for bar, cmap, shown, caption in ((self.error_bar, ERROR_CMAP, levels.error, levels.error_caption),
                                          (self.sam_bar, SAM_CMAP, levels.sam, levels.sam_caption)):
            lo, hi = shown[first] if levels.shared else (None, None)  # per method: in each map's title
            bar.set_levels(cmap, lo, hi, caption)

    # ------------------------------------------------------------------ colour scales
    def _levels_for(self, result: AnalysisResult) -> MapLevels:
        """The scales of ``result``'s maps in the chosen mode (a bad user range: the shared scales)."""
        try:
            levels = map_levels(result, self.scale_mode, self.user_levels["error"], self.user_levels["sam"])
        except ValueError as exc:
            self.message.emit(f"Colour scale: {exc}")
            levels = map_levels(result, "shared")
        self.levels = levels
        return levels

    def set_scale_mode(self, mode: str, error: tuple[float, float] | None = None,
                       sam: tuple[float, float] | None = None) -> None:
        """'shared' (all methods' valid pixels), 'per_method' or 'user' (``error`` / ``sam`` (low, high);
        by default the scales on screen, to edit in the fields). The maps are shown again, not recomputed."""
        if mode not in SCALE_MODES:
            raise ValueError(f"a colour-scale mode is one of {', '.join(SCALE_MODES)}, not {mode!r}")
        self.scale_mode = mode
        if mode == "user":
            for kind, given in (("error", error), ("sam", sam)):
                if given is not None:
                    self.user_levels[kind] = (float(given[0]), float(given[1]))
                elif self.user_levels[kind] is None and self.result is not None and self.result.methods:
                    self.user_levels[kind] = (self.result.error_levels if kind == "error" else self.result.sam_levels)
        i = self.scale_combo.findData(mode)
        if i != self.scale_combo.currentIndex():
            self.scale_combo.blockSignals(True)
            self.scale_combo.setCurrentIndex(i)
            self.scale_combo.blockSignals(False)
        for kind, (low, high) in self.scale_fields.items():
            shown = self.user_levels[kind]
            for field, value in ((low, shown[0] if shown else 0.0), (high, shown[1] if shown else 0.0)):
                field.blockSignals(True)
                field.setValue(value)
                field.blockSignals(False)
                field.setVisible(mode == "user")
        if self.result is not None and self.result.methods:
            self._show_maps(self.result)

    def _on_scale_field(self, kind: str) -> None:
        low, high = (f.value() for f in self.scale_fields[kind])
        if not high > low:
            self.message.emit("Colour scale: the maximum must be above the minimum")
            return
        self.user_levels[kind] = (low, high)
        if self.result is not None and self.result.methods:
            self._show_maps(self.result)

    # ------------------------------------------------------------------ table
    def _show_table(self, result: AnalysisResult) -> None:
        rows = result.table()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        best: dict[str, float] = {}
        for key, _, higher in METRIC_COLUMNS:
            values = [r[key] for r in rows if math.isfinite(r[key])]
            if values:
                best[key] = max(values) if higher else min(values)
        bold = QFont(self.table.font())
        bold.setBold(True)
        for i, row in enumerate(rows):
            name = QTableWidgetItem(row["name"])
            name.setData(Qt.ItemDataRole.UserRole, row["uid"])
            self.table.setItem(i, 0, name)
            for j, (key, _, _) in enumerate(METRIC_COLUMNS):
                pending = key in result.pending and not math.isfinite(row[key])
                item = _NumberItem(row[key], "…" if pending else format_metric(key, row[key]))
                if pending:
                    item.setToolTip("being computed")
                if key in best and row[key] == best[key] and len(rows) > 1:
                    item.setFont(bold)
                self.table.setItem(i, j + 1, item)
        self.table.setSortingEnabled(True)
        notes = sorted({n for m in result.methods for n in m.scope.get("notes", [])})
        scale = result.request.scale
        text = f"Scope: {result.scope_note}"
        text += f"  ·  ERGAS with scale {scale:g}" if scale else "  ·  ERGAS needs the LR scale"
        if notes:
            text += "  ·  " + "; ".join(notes)
        self.table_note.setText(text)

    def table_csv(self) -> str:
        header = ["method"] + [key for key, _, _ in METRIC_COLUMNS]
        lines = [",".join(header)]
        for r in range(self.table.rowCount()):
            cells = [self.table.item(r, 0).text().replace(",", " ")]
            cells += [f"{self.table.item(r, c + 1).value:.6g}" for c in range(len(METRIC_COLUMNS))]
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"

    def table_rows(self) -> list[tuple[str, list[float]]]:
        """(method, values in METRIC_COLUMNS order) in the order shown (tests)."""
        return [(self.table.item(r, 0).text(),
                 [self.table.item(r, c + 1).value for c in range(len(METRIC_COLUMNS))])
                for r in range(self.table.rowCount())]

    # ------------------------------------------------------------------ curves
    def _x_axis(self) -> np.ndarray:
        wl = self.scene.wavelengths_nm
        # (band numbers from 1 without wavelengths, as in the band bar and the titles)
        return np.asarray(wl, dtype=np.float64) if wl is not None else np.arange(1, self.scene.n_bands + 1, dtype=np.float64)

    def _show_curves(self, result: AnalysisResult) -> None:
        """Per-band curves of the chosen metric, one per method, with the worst band marked. The
        plot items are kept per method and only given new data (making them again cost tens of
        milliseconds on the GUI thread at every result)."""
        metric = self.scene.analysis_settings.curve_metric
        x = self._x_axis()
        labels = (CURVE_TITLES[metric], self.scene.wavelengths_nm is not None)
        if self._curve_labels != labels:
            self._curve_labels = labels
            self.curve_plot.setLabel("left", CURVE_TITLES[metric])
            self.curve_plot.setLabel("bottom", "Wavelength" if labels[1] else "Band", units="nm" if labels[1] else None)
        pool, self._curve_pool = self._curve_pool, {}
        self.curve_items.clear()
        self.worst_bands.clear()
        rows = []
        for m in result.methods:
            colour_name = self.scene.method_colour(m.layer.name)
            y = m.per_band(metric)
            if y.shape != x.shape:
                continue
            finite = np.where(np.isfinite(y), y, np.nan)
            kept = pool.pop(m.layer.uid, None)
            if kept is not None and kept[2] != (m.name, colour_name):
                self._drop_curves([kept])
                kept = None
            if kept is None:
                colour = QColor(colour_name)
                curve = self.curve_plot.plot(x, finite, pen=pg.mkPen(colour, width=1.8), symbol="o", symbolSize=4,
                                             symbolBrush=colour, symbolPen=None, name=m.name)
                mark = pg.ScatterPlotItem(symbol="x", size=16, pen=pg.mkPen(colour, width=3), brush=colour)
                self.curve_plot.addItem(mark)
                kept = (curve, mark, (m.name, colour_name))
            else:
                kept[0].setData(x, finite)
            curve, mark, _ = kept
            self._curve_pool[m.layer.uid] = kept
            self.curve_items[m.layer.uid] = curve
            k = worst_band(y, metric)
            mark.setVisible(k is not None)
            text = m.name
            if k is not None:
                self.worst_bands[m.layer.uid] = k
                mark.setData([x[k]], [y[k]])
                text += f": worst {band_words(self.scene, k)}"
            rows.append((colour_name, "━●━", text))
        self._drop_curves(pool.values())  # methods no longer analysed
        self.curve_legend.set_rows(rows)
        if self.curve_items:
            self.curve_plot.getViewBox().autoRange(items=list(self.curve_items.values()))
        self._place_band_line()

    def _drop_curves(self, kept_items) -> None:
        """Remove pooled (curve, mark, key) entries from the plot."""
        for kept in kept_items:
            for item in kept[:2]:
                self.curve_plot.removeItem(item)

    def _place_band_line(self) -> None:
        if self.scene.n_bands:
            self.curve_band_line.setValue(float(self._x_axis()[self.scene.band]))

    def _on_curve_click(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or not self.scene.n_bands:
            return
        vb = self.curve_plot.getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        x = vb.mapSceneToView(event.scenePos()).x()
        self.jump_to_x(x)

    def jump_to_x(self, x: float) -> None:
        """Set the scene's band to the one nearest to ``x`` on the curves' axis."""
        axis = self._x_axis()
        self.scene.set_band(int(np.argmin(np.abs(axis - x))))

    def go_to_worst_band(self) -> None:
        """Jump to the worst band of the first method."""
        if self.worst_bands:
            self.scene.set_band(next(iter(self.worst_bands.values())))

    # ------------------------------------------------------------------ worst pixel
    def go_to_worst(self, by: str = "sam") -> tuple[int, int] | None:
        """Select the worst pixel by 'sam' or 'error' over all methods (in the ROI when the scope
        is 'roi'); computes the analysis first when needed."""
        if self.result is None or self._stale or self.job.is_running or self._debounce.isActive():
            self._after.append(by)
            if not self.job.is_running:
                self.refresh()
            return None
        found = self.result.worst_pixel(by)
        if found is None:
            self.message.emit("No pixel to go to")
            return None
        (row, col), method = found
        self.scene.set_pixel(row, col)
        self._keep_in_view(row, col)
        for m in self.result.methods:
            for views in (self.error_views, self.sam_views):
                views[m.layer.uid].set_marker((row, col) if m is method else None)
        value = method.sam_map[row, col] if by == "sam" else method.error_map[row, col]
        unit = "°" if by == "sam" else ""
        what = "SAM" if by == "sam" else "error"
        self.message.emit(f"Worst {what} pixel: row {row}, col {col} ({value:.4g}{unit} in {method.name})")
        return row, col

    def _keep_in_view(self, row: int, col: int) -> None:
        vr = self.scene.view_range
        if vr is None:
            return
        (x0, x1), (y0, y1) = vr
        if x0 <= col + 0.5 <= x1 and y0 <= row + 0.5 <= y1:
            return
        hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
        self.scene.set_view_range((col + 0.5 - hw, col + 0.5 + hw), (row + 0.5 - hh, row + 0.5 + hh))

    def shutdown(self) -> None:
        """Stop the job (it stops within a row tile) and let its thread end before the widgets go."""
        self._debounce.stop()
        self.job.shutdown(5.0)

"""The main window: image grid, band bar, display and spectra docks, status bar, File menu.

The window is the composition root: it builds the views on one :class:`~app.core.state.scene.Scene`,
opens files (on a worker thread), turns errors into dialogs and keeps the recent-files list.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterable

from PyQt6 import sip
from PyQt6.QtCore import QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QActionGroup, QKeySequence
from PyQt6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu, QProgressBar,
                             QTabWidget, QVBoxLayout, QWidget)

from app.core.errors import AmbiguousCubeError, HsiError
from app.core.export import recovery as core_recovery
from app.core.state.scene import ROLES, DisplayMode, Scene
from app.core.state.unsaved import UnsavedLayers
from app.qt import dialogs, theme
from app.qt.binding import subscribe
from app.qt.controls import BandBar, DisplayControls
from app.qt.image_grid import ImageGrid
from app.qt.layer_range import LayerRanges
from app.qt.graphics import StatusLabel
from app.qt.run_panel import RunPanel, run_dock_widget
from app.qt.analysis import AnalysisView
from app.qt.compare_ab import ABCompareView
from app.qt.spectra import SpectraView
from app.qt.workers import Worker
from app.core.io.georef import map_readout

APP_NAME = "HSI-SR Viewer"
MAX_RECENT = 12
ANALYSIS_DOCK_PX = 320
# Files whose float32 size is below this are read into memory on the worker thread, so that band
# changes and clicks never touch the disk; bigger ones stay memory-mapped.
PRELOAD_BYTES = 768 * 1024 * 1024
FILE_FILTER = ("Hyperspectral cubes (*.hdr *.img *.dat *.raw *.bsq *.bil *.bip *.mat *.npy *.npz *.tif *.tiff "
               "*.h5 *.hdf5 *.he5 *.nc);;All files (*)")


def load_cube(path: str, options: dict):
    """Open one cube (runs on a worker thread). ``options`` are ``open_cube`` keywords."""
    from app.core.io import open_cube

    cube = open_cube(path, **options)
    if cube.is_lazy and cube.nbytes_float32 <= PRELOAD_BYTES:
        cube.load()
    return cube


def load_sample():
    from app.core.inference.sample import load_sample_scene

    return load_sample_scene()


class MainWindow(QMainWindow):
    """Signals: ``loads_finished`` when no file is being opened any more."""

    loads_finished = pyqtSignal()

    def __init__(self, scene: Scene | None = None, settings: QSettings | None = None, *,
                 unattended: bool = False, recovery: core_recovery.RecoveryStore | None = None, parent=None):
        """``unattended``: no modal dialogs (errors go to stderr), for screenshots and scripts.
        ``recovery``: where copies of the results computed here go (default: the user's recovery
        folder, ``$HSI_VIEWER_RECOVERY_DIR`` when set)."""
        super().__init__(parent)
        self.unattended = unattended
        # results computed here and not saved yet, and their copies in the recovery folder
        self.unsaved = UnsavedLayers()
        self.recovery = recovery if recovery is not None else core_recovery.RecoveryStore()
        self._recovery_writer = Worker(self, name="recovery")
        self.errors_reported: list[str] = []  # every error message shown (or printed), in order
        self.scene = scene if scene is not None else Scene()
        self.settings = settings if settings is not None else QSettings("hsi-sr-viewer", "viewer")
        self._pending_loads = 0
        # files are read (and exports written) here; two threads, so a big file does not hold up a small one
        self._loader = Worker(self, name="loader", threads=2)
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        self.setDockNestingEnabled(True)

        # ---- central: grid + band bar
        central = QWidget(self)
        cl = QVBoxLayout(central)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        self.grid = ImageGrid(self.scene, central)
        self.band_bar = BandBar(self.scene, central)
        cl.addWidget(self.grid, 1)
        cl.addWidget(self.band_bar)
        self.setCentralWidget(central)

        # ---- docks
        self.controls = DisplayControls(self.scene)
        self.display_dock = self._dock("Display", self.controls, "DisplayDock")
        self.spectra = SpectraView(self.scene)
        self.spectra_dock = self._dock("Spectra", self.spectra, "SpectraDock")
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.display_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.spectra_dock)
        self.splitDockWidget(self.display_dock, self.spectra_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.display_dock], [440], Qt.Orientation.Horizontal)
        self.resizeDocks([self.display_dock, self.spectra_dock], [200, 560], Qt.Orientation.Vertical)
        self.run_panel = RunPanel(self.scene, report_error=self.report)
        self.run_panel.computed.connect(self._on_computed)
        self.run_dock = self._dock("Run model", run_dock_widget(self.run_panel), "RunDock")
        self.tabifyDockWidget(self.display_dock, self.run_dock)
        self.display_dock.raise_()
        # The two share one tab area: give it the height of whichever tab is in front.
        self.run_dock.visibilityChanged.connect(lambda shown: shown and self._fit_top_dock(self.run_dock))
        self.display_dock.visibilityChanged.connect(lambda shown: shown and self._fit_top_dock(self.display_dock))
        # ---- analysis (error / SAM maps, metrics, per-band curves) and A/B comparison, at the bottom
        # One dock with two pages (not two tabified docks: Qt 6 leaves a stale copy of the tab bar
        # painted over the status bar when a second dock area gets tabified docks).
        self.analysis = AnalysisView(self.scene)
        self.compare_ab = ABCompareView(self.scene)
        self.bottom_tabs = QTabWidget(self)
        self.bottom_tabs.setDocumentMode(True)
        self.bottom_tabs.addTab(self.analysis, "Maps and metrics")
        self.bottom_tabs.addTab(self.compare_ab, "A/B compare")
        self.analysis_dock = self._dock("Analysis", self.bottom_tabs, "AnalysisDock")
        self.ab_dock = self.analysis_dock  # the A/B comparison is a page of the analysis dock
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.analysis_dock)
        # The right column runs the full height; the analysis sits under the image grid only.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        # tall enough for one row of readable maps under the panels (at 1400 x 900); Maximise
        # (Ctrl+Shift+M) gives it the window's height
        self.resizeDocks([self.analysis_dock], [ANALYSIS_DOCK_PX], Qt.Orientation.Vertical)
        self._analysis_height_before: int | None = None
        self.analysis.maximise_requested.connect(self.set_analysis_maximised)
        self.analysis.busy.connect(self.set_busy)
        self.analysis.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.analysis.failed.connect(lambda exc: self.report(exc, "Cannot analyse the reconstructions"))

        # ---- status bar
        status = self.statusBar()
        # Status labels of fixed width (long text elided, the full text in .text()): a click or a
        # hover that changes their text never re-lays out (and repaints) the whole status bar.
        self.position_label = StatusLabel(self, "selected row 0000, col 0000  (LR pixel 000, 000)")
        self.map_label = StatusLabel(self, "E 0000000.00 m, N 0000000.00 m")  # hidden without a georeference
        self.map_label.hide()
        self.value_label = StatusLabel(self, "GT · fake_and_real_food_ms  ·  000.0 nm: 0.00000")
        self.note_label = StatusLabel(self)  # (elided: the values beside it keep their room)
        self.note_label.setObjectName("DimLabel")
        self.busy_bar = QProgressBar(self)
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.values_label = StatusLabel(self)  # the value under the cursor in every panel (stretches)
        self.values_label.setObjectName("DimLabel")
        status.addWidget(self.position_label)
        status.addWidget(self.map_label)
        status.addWidget(self.value_label)
        status.addWidget(self.values_label, 3)
        status.addPermanentWidget(self.note_label, 1)
        status.addPermanentWidget(self.busy_bar)
        self.note_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        self._build_menus()
        # the panels' value-range badges and Layer ▸ Value range (auto / stated / max / a number)
        self.layer_ranges = LayerRanges(self)
        self.layer_ranges.install(self.menuBar())

        ev = self.scene.events
        subscribe(self, ev.hover, lambda *_: self._update_status())
        subscribe(self, ev.band, lambda *_: self._update_status())
        subscribe(self, ev.pixel, lambda *_: self._update_status())
        subscribe(self, ev.layers, lambda *_: self._on_layers())
        subscribe(self, ev.layers, lambda *_: self._forget_closed_layers())
        self.grid.close_guard = self.confirm_drop
        subscribe(self, ev.mode, lambda *_: self._sync_mode_actions())
        subscribe(self, ev.contrast, lambda *_: self._sync_mode_actions())
        subscribe(self, ev.colormap, lambda *_: self._update_levels_bar())
        self.grid.busy.connect(self.set_busy)
        self.grid.render_failed.connect(lambda exc: self.report(exc, "Cannot display the cubes"))
        subscribe(self, ev.rendered, lambda *_: self._update_note())
        self.grid.open_requested.connect(self.open_dialog)
        self.grid.sample_requested.connect(lambda: self.open_sample())
        subscribe(self, ev.rendered, lambda *_: self._update_levels_bar())
        self._on_layers()
        self._update_levels_bar()

    def _dock(self, title: str, widget: QWidget, name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        return dock

    # ------------------------------------------------------------------ menus and shortcuts
    def _action(self, text: str, slot: Callable, shortcut=None, tip: str = "", checkable=False) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            if isinstance(shortcut, (list, tuple)):
                action.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = self._action("&Open…", self.open_dialog, QKeySequence.StandardKey.Open,
                                        "Open one or more cube files and choose their roles")
        self.open_folder_action = self._action("Open &folder…", self.open_folder_dialog, "Ctrl+Shift+O",
                                               "Open a folder of per-band PNG images (CAVE layout)")
        self.sample_action = self._action("Open &sample scene", lambda: self.open_sample(), None,
                                          "GT, simulated LR and guide, and a reconstruction")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.open_folder_action)
        self.recent_menu = QMenu("Open &recent", self)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu(self.recent_menu)
        file_menu.addAction(self.sample_action)
        self.attach_wavelengths_action = self._action(
            "Attach &wavelengths…", self.attach_wavelengths_dialog, None,
            "Read the band centres of a layer from a .txt/.csv side file (one value per band, nm or µm)")
        self.attach_wavelengths_action.setEnabled(False)
        file_menu.addAction(self.attach_wavelengths_action)
        file_menu.addSeparator()
        self.browser_action = self._action("Open results &browser…", self.open_results_browser, "Ctrl+B",
                                           "Browse compare/eval results: sortable table, chart, open an image")
        self.results_json_action = self._action("Open compare/eval &JSON…", self.open_results_json_dialog, None,
                                                "Open a results file written by compare --json or eval --json")
        file_menu.addAction(self.browser_action)
        file_menu.addAction(self.results_json_action)
        file_menu.addSeparator()
        self.export_action = self._action("Save &screen grab as PNG…", self.export_png_dialog, None,
                                          "Save the image panels as they appear on screen (figures: Export menu)")
        file_menu.addAction(self.export_action)
        self.close_all_action = self._action("&Close all layers", self.close_all_layers, "Ctrl+Shift+W")
        file_menu.addAction(self.close_all_action)
        file_menu.addSeparator()
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        file_menu.addAction(self.quit_action)

        view = bar.addMenu("&View")
        s = self.scene
        self.next_band_action = self._action("Next band", lambda: s.step_band(1), "Up")
        self.prev_band_action = self._action("Previous band", lambda: s.step_band(-1), "Down")
        self.page_up_action = self._action("Band +5", lambda: s.step_band(5), "PgUp")
        self.page_down_action = self._action("Band −5", lambda: s.step_band(-5), "PgDown")
        self.first_band_action = self._action("First band", lambda: s.set_band(0), "Home")
        self.last_band_action = self._action("Last band", lambda: s.set_band(s.n_bands - 1), "End")
        for a in (self.next_band_action, self.prev_band_action, self.page_up_action, self.page_down_action,
                  self.first_band_action, self.last_band_action):
            view.addAction(a)
        view.addSeparator()
        self.mode_actions: dict[DisplayMode, QAction] = {}
        group = QActionGroup(self)
        for mode, key in ((DisplayMode.BAND, "B"), (DisplayMode.RGB, "R"), (DisplayMode.TRUE_COLOUR, "T")):
            action = self._action(mode.title, lambda _=False, m=mode: s.set_mode(m), key, checkable=True)
            group.addAction(action)
            view.addAction(action)
            self.mode_actions[mode] = action
        view.addSeparator()
        self.shared_action = self._action("Shared contrast", lambda checked: s.set_shared_contrast(checked), "C",
                                          "Same levels (from the reference) in every panel", checkable=True)
        view.addAction(self.shared_action)
        self.reset_zoom_action = self._action("Reset zoom", self.scene.reset_view, ["Ctrl+0", "A"],
                                              "Show the whole image in every panel")
        view.addAction(self.reset_zoom_action)
        self.clear_pixel_action = self._action("Clear selected pixel", self._escape, "Esc")
        view.addAction(self.clear_pixel_action)
        self.clear_pins_action = self._action("Clear pinned pixels", s.clear_pins, "Shift+Esc",
                                              "Forget the pixels collected with Shift+click")
        view.addAction(self.clear_pins_action)
        view.addSeparator()
        theme_menu = view.addMenu("Theme")
        theme_group = QActionGroup(self)
        self.theme_actions = {}
        for name in ("dark", "light"):
            action = self._action(name.capitalize(), lambda _=False, n=name: self.set_theme(n), checkable=True)
            theme_group.addAction(action)
            theme_menu.addAction(action)
            self.theme_actions[name] = action
        self.theme_actions[theme.current().name].setChecked(True)
        view.addSeparator()
        view.addAction(self.display_dock.toggleViewAction())
        view.addAction(self.spectra_dock.toggleViewAction())
        view.addAction(self.run_dock.toggleViewAction())
        view.addAction(self.analysis_dock.toggleViewAction())

        analysis = bar.addMenu("&Analysis")
        self.maximise_analysis_action = self._action(
            "Ma&ximise analysis", lambda checked: self.set_analysis_maximised(checked), "Ctrl+Shift+M",
            "The analysis takes the window's height (the image panels are hidden); again to restore",
            checkable=True)
        self.show_analysis_action = self._action("Show &analysis", self.show_analysis, "Ctrl+M",
                                                 "Error and SAM maps, metrics table, per-band curves")
        self.refresh_analysis_action = self._action("&Refresh analysis", self.analysis.refresh, "F5",
                                                    "Recompute the maps and metrics now")
        self.cancel_analysis_action = self._action("&Cancel analysis", self.analysis.cancel, None)
        self.worst_sam_action = self._action("Go to worst &SAM pixel", lambda: self.analysis.go_to_worst("sam"),
                                             "G", "Select the pixel with the largest spectral angle")
        self.worst_error_action = self._action("Go to worst &error pixel",
                                               lambda: self.analysis.go_to_worst("error"), "Shift+G",
                                               "Select the pixel with the largest value in the error map")
        self.worst_band_action = self._action("Go to worst &band", self.analysis.go_to_worst_band, "Shift+B",
                                              "Jump to the band where the first method does worst")
        self.error_kind_action = self._action("Error map: RMSE / |error| at band", self._toggle_error_kind, "E",
                                              "Switch the error maps between RMSE over bands and |error| at the band")
        for a in (self.show_analysis_action, self.maximise_analysis_action, self.refresh_analysis_action,
                  self.cancel_analysis_action,
                  self.worst_sam_action, self.worst_error_action, self.worst_band_action, self.error_kind_action):
            analysis.addAction(a)
        analysis.addSeparator()
        self.roi_rect_action = self._action("Draw &rectangle ROI", lambda: self._toggle_tool("rect"), "O",
                                            "Drag on any panel; spectra show mean ± std, metrics can use the ROI",
                                            checkable=True)
        self.roi_polygon_action = self._action("Draw &polygon ROI", lambda: self._toggle_tool("polygon"), "P",
                                               "Click the vertices on any panel; double-click closes the polygon",
                                               checkable=True)
        self.clear_roi_action = self._action("Clear ROI", lambda: self.scene.set_roi(None), "Del")
        for a in (self.roi_rect_action, self.roi_polygon_action, self.clear_roi_action):
            analysis.addAction(a)
        analysis.addSeparator()
        self.swipe_action = self._action("A/B &swipe", lambda: self.show_ab("swipe"), "W",
                                         "Compare two panels with a draggable divider")
        self.flicker_action = self._action("A/B &flicker", lambda: self.show_ab("flicker"), "F",
                                           "Alternate two panels")
        self.swap_ab_action = self._action("Swap A and B", self.compare_ab.swap, "X")
        for a in (self.swipe_action, self.flicker_action, self.swap_ab_action):
            analysis.addAction(a)
        self.grid.tool_changed.connect(self._sync_tool_actions)

        tools = bar.addMenu("&Tools")
        self.run_action = self._action("&Run model", self.run_model, "Ctrl+R",
                                       "Run the model chosen in the Run model panel on the open layers")
        self.cancel_run_action = self._action("&Cancel run", self.run_panel.cancel, None, "Stop the running model")
        self.simulate_action = self._action("&Simulate inputs from GT…", self.show_run_panel, None,
                                            "Make the LR and guide from the GT with a named protocol")
        for a in (self.run_action, self.cancel_run_action, self.simulate_action):
            tools.addAction(a)
        self.run_panel.running_changed.connect(self.cancel_run_action.setEnabled)
        self.cancel_run_action.setEnabled(False)

        from app.qt import export_dialogs  # Export menu (figures, CSV, cubes) and File ▸ sessions

        self.exporter = export_dialogs.install(self, file_menu, before=self.export_action)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard shortcuts", self._show_shortcuts, "F1"))
        help_menu.addAction(self._action("&About", self._show_about))
        self._sync_mode_actions()

    def _fit_top_dock(self, dock: QDockWidget) -> None:
        if self.spectra_dock.isFloating() or dock.isFloating() or not self.spectra_dock.isVisible():
            return
        total = dock.height() + self.spectra_dock.height()
        wanted = self.run_panel.sizeHint().height() + self.run_panel.actions.sizeHint().height() + 50 \
            if dock is self.run_dock else 200
        wanted = min(wanted, int(0.6 * total))

        def resize():
            if not sip.isdeleted(self):
                self.resizeDocks([dock, self.spectra_dock], [wanted, total - wanted], Qt.Orientation.Vertical)

        QTimer.singleShot(0, resize)  # after the tab switch has settled the layout

    def open_results_browser(self):
        """Show the results browser window (created on first use); double-clicking an image there
        opens it here. Returns the browser."""
        from app.qt.browser import ResultsBrowser

        if getattr(self, "results_browser", None) is None or sip.isdeleted(self.results_browser):
            self.results_browser = ResultsBrowser(self.scene, report_error=self.report, settings=self.settings,
                                                  parent=self)
            self.results_browser.scene_opened.connect(self._results_scene_opened)
            self.results_browser.replace_guard = lambda uids, action: self.confirm_drop(
                uids, action, parent=self.results_browser)
        self.results_browser.show()
        self.results_browser.raise_()
        self.results_browser.activateWindow()
        return self.results_browser

    def open_results_json_dialog(self) -> None:
        self.open_results_browser().open_json_dialog()

    def _results_scene_opened(self, image: str) -> None:
        self.show_analysis()  # the maps and metrics of every method against the GT
        self.raise_()
        self.activateWindow()

    def show_run_panel(self) -> None:
        self.run_dock.show()
        self.run_dock.raise_()

    def run_model(self) -> None:
        """Ctrl+R: show the Run model panel and run its model."""
        self.show_run_panel()
        if self.run_panel.running:
            self.statusBar().showMessage("A model is already running (Tools ▸ Cancel run stops it)", 6000)
            return
        self.run_panel.start_run()

    def show_analysis(self) -> None:
        self.analysis_dock.show()
        self.analysis_dock.raise_()
        self.bottom_tabs.setCurrentWidget(self.analysis)

    @property
    def analysis_maximised(self) -> bool:
        return self._analysis_height_before is not None

    def set_analysis_maximised(self, on: bool) -> None:
        """The analysis dock takes the height of the window (the image panels hidden, the band
        bar kept: it drives the |error| maps), or goes back to its height before."""
        on = bool(on)
        if on == self.analysis_maximised:
            self._sync_maximise(on)
            return
        if on:
            self.show_analysis()
            if self.analysis_dock.isFloating():
                self.analysis_dock.setFloating(False)
            self._analysis_height_before = max(self.analysis_dock.height(), ANALYSIS_DOCK_PX)
            self.grid.hide()
            self.resizeDocks([self.analysis_dock], [self.height()], Qt.Orientation.Vertical)
        else:
            before, self._analysis_height_before = self._analysis_height_before, None
            self.grid.show()
            self.resizeDocks([self.analysis_dock], [before or ANALYSIS_DOCK_PX], Qt.Orientation.Vertical)
        self._sync_maximise(on)

    def _sync_maximise(self, on: bool) -> None:
        for w in (self.maximise_analysis_action, self.analysis.maximise_button):
            w.blockSignals(True)
            w.setChecked(on)
            w.blockSignals(False)
        self.analysis.maximise_button.setText("Restore" if on else "Maximise")

    def show_ab(self, mode: str) -> None:
        self.analysis_dock.show()
        self.analysis_dock.raise_()
        self.bottom_tabs.setCurrentWidget(self.compare_ab)
        if self.analysis_dock.height() < 0.45 * self.height() and not self.analysis_dock.isFloating():
            self.resizeDocks([self.analysis_dock], [int(0.5 * self.height())], Qt.Orientation.Vertical)
        self.compare_ab.set_mode(mode)

    def _toggle_error_kind(self) -> None:
        kind = self.scene.analysis_settings.error_kind
        self.scene.set_analysis_settings(error_kind="abs_band" if kind == "rmse" else "rmse")
        self.show_analysis()

    def _toggle_tool(self, tool: str) -> None:
        self.grid.set_tool("none" if self.grid.tool == tool else tool)
        if self.grid.tool != "none":
            hint = "drag a rectangle" if tool == "rect" else "click the vertices, double-click to close"
            self.statusBar().showMessage(f"ROI: {hint} on any panel (Esc cancels)", 8000)

    def _sync_tool_actions(self, tool: str) -> None:
        self.roi_rect_action.setChecked(tool == "rect")
        self.roi_polygon_action.setChecked(tool == "polygon")

    def _escape(self) -> None:
        """Esc: leave a ROI drawing tool, else clear the selected pixel."""
        if self.grid.tool != "none":
            self.grid.set_tool("none")
        else:
            self.scene.set_pixel(None)

    def _sync_mode_actions(self) -> None:
        for mode, action in self.mode_actions.items():
            action.setChecked(mode == self.scene.mode)
        self.shared_action.setChecked(self.scene.shared_contrast)
        self._update_note()

    def set_theme(self, name: str) -> None:
        """Switch theme; pyqtgraph colours apply to panels built afterwards, so the panels are
        rebuilt (their state lives in the scene)."""
        app = QApplication.instance()
        if app is None or name == theme.current().name:
            return
        theme.apply(app, name)
        self.grid.apply_theme()
        self.spectra.apply_theme()
        self.settings.setValue("theme", name)

    # ------------------------------------------------------------------ opening files
    def open_dialog(self) -> None:
        start = str(self.settings.value("last_dir", str(Path.home())))
        paths, _ = QFileDialog.getOpenFileNames(self, "Open hyperspectral cubes", start, FILE_FILTER)
        if paths:
            self._ask_roles_and_open(paths)

    def open_folder_dialog(self) -> None:
        start = str(self.settings.value("last_dir", str(Path.home())))
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of per-band PNG images", start)
        if folder:
            self._ask_roles_and_open([folder])

    def _ask_roles_and_open(self, paths: list[str]) -> None:
        existing = [l.role for l in self.scene.layers]
        items = dialogs.ask_roles(self, paths, existing)
        if items:
            self.settings.setValue("last_dir", str(Path(paths[0]).parent))
            self.open_files(items)

    def open_files(self, items: Iterable[tuple], *, background: bool = True) -> None:
        """Open each (role, path) or (role, path, open_cube options such as {'var': 'MSim'}); errors
        become dialogs, ambiguity becomes a picker."""
        for role, path, *rest in items:
            if role not in ROLES:
                self.report(HsiError(f"{path}: unknown role {role!r}; use one of {', '.join(ROLES)}"),
                             f"Cannot open {Path(path).name}")
                continue
            self._start_load(role, str(path), dict(rest[0]) if rest and rest[0] else {}, background)

    def open_sample(self, *, background: bool = True) -> None:
        self.run_job(load_sample, self._on_sample_loaded,
                     lambda exc: self.report(exc, "Cannot open the sample scene"), background=background,
                     message="Opening the sample…")

    def _start_load(self, role: str, path: str, options: dict, background: bool) -> None:
        options = dict(options)
        self.run_job(lambda: load_cube(path, options),
                     lambda cube: self._on_cube_loaded(role, path, options, cube),
                     lambda exc: self._on_load_failed(role, path, options, exc, background),
                     background=background, message=f"Opening {Path(path).name}…")

    def run_job(self, fn: Callable[[], object], on_done: Callable, on_error: Callable, *, background: bool = True,
                message: str = "") -> None:
        """Run ``fn()`` on the loader's thread (or inline) with the busy bar; ``on_done(result)``
        or ``on_error(exception)`` on the GUI thread. Opening files and writing exports use it."""
        self._pending_loads += 1
        self.set_busy(True, message)
        if not background:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - every failure is shown to the user
                self._load_done(on_error, exc)
            else:
                self._load_done(on_done, result)
            return
        self._loader.submit(None, lambda _control: fn(), on_done=lambda result: self._load_done(on_done, result),
                            on_error=lambda exc: self._load_done(on_error, exc))

    def _load_done(self, callback, value) -> None:
        try:
            callback(value)
        except Exception as exc:  # noqa: BLE001
            self.report(exc, "Cannot open the file")
        finally:
            self._pending_loads -= 1
            if self._pending_loads == 0:
                self.set_busy(False, "")
                self.loads_finished.emit()

    @property
    def loading(self) -> bool:
        return self._pending_loads > 0

    def _on_cube_loaded(self, role: str, path: str, options: dict, cube) -> None:
        # the file's name: a name stored inside the file (a sidecar's, a variable's) would show
        # the layer under a name the user cannot find on disk; the user may rename it
        name = Path(path).stem or cube.name
        if options.get("var"):  # the variable the user picked: two of one file stay apart
            name += f":{options['var']}"
        if options:
            cube.metadata["open_options"] = dict(options)  # sessions reopen the file the same way
        try:
            self.scene.add_layer(cube, role, name)
        except HsiError as exc:
            self.report(exc, f"Cannot show {Path(path).name}")
            return
        self._remember(role, path, options)
        self._ensure_pixel()
        # how the file was read when the file did not say it (an assumed layout, a side file's wavelengths)
        notes = [w for w in cube.metadata.get("warnings", []) if w.startswith(("layout:", "wavelengths from"))]
        self.statusBar().showMessage("  ·  ".join([f"Opened {cube.describe()}", *notes]), 12000 if notes else 6000)

    def attach_wavelengths_dialog(self) -> None:
        """File ▸ Attach wavelengths…: pick the layer (the reference unless told), then the side file."""
        from PyQt6.QtWidgets import QInputDialog

        from app.core.io.wavelengths import WAVELENGTH_FILE_FILTER

        layers = list(self.scene.layers)
        if not layers:
            return
        layer = self.scene.reference
        if len(layers) > 1:
            labels = [f"{l.label} ({l.cube.bands} bands)" for l in layers]
            choice, ok = QInputDialog.getItem(self, "Attach wavelengths", "Layer:", labels,
                                              layers.index(layer), False)
            if not ok:
                return
            layer = layers[labels.index(choice)]
        source = layer.cube.source_path
        start = str(Path(source).parent if source else self.settings.value("last_dir", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, f"Wavelengths for {layer.label} ({layer.cube.bands} bands)",
                                              start, WAVELENGTH_FILE_FILTER)
        if path:
            self.attach_wavelengths(layer, path)

    def attach_wavelengths(self, layer, path: str) -> bool:
        """Give ``layer`` the band centres of the side file ``path``; the panels, true colour and
        spectra are drawn again. (The viewer has no undo stack: attaching another file, or opening
        the cube again, replaces them.) False, with the error shown, when the file does not fit."""
        from app.core.io.wavelengths import attach_wavelengths, read_wavelength_file

        try:
            parsed = read_wavelength_file(path, layer.cube.bands)
        except HsiError as exc:
            self.report(exc, "Cannot attach the wavelengths")
            return False
        old = layer.cube
        # a new cube object (the pictures are cached per cube): same values, same loaded data
        cube = old.replace(metadata={**old.metadata, "warnings": list(old.metadata.get("warnings", []))})
        cube._bsq = old._bsq  # the band-sequential copy holds the same values
        attach_wavelengths(cube, path, parsed)
        options = dict(old.metadata.get("open_options") or {})
        options["wavelengths"] = str(Path(path).resolve())
        cube.metadata["open_options"] = options  # how the file is to be opened again
        layer.cube = cube
        self.scene.events.layers.emit(self.scene.layers)
        self.statusBar().showMessage(f"{layer.label}: {parsed[1]}", 12000)
        return True

    def _on_sample_loaded(self, pairs) -> None:
        for role, cube in pairs:
            self.scene.add_layer(cube, role, cube.name)
        self._ensure_pixel()

    def _ensure_pixel(self) -> None:
        """Select the centre pixel once there are layers, so the spectra plot is never empty."""
        if self.scene.pixel is None and self.scene.hr_shape is not None:
            h, w = self.scene.hr_shape
            self.scene.set_pixel(h // 2, w // 2)

    def _on_load_failed(self, role: str, path: str, options: dict, exc: Exception, background: bool) -> None:
        if isinstance(exc, AmbiguousCubeError) and exc.option not in options and not self.unattended:
            choice = dialogs.ask_option(self, path, exc.option, exc.problem, exc.choices)
            if choice is not None:
                self._start_load(role, path, {**options, exc.option: choice}, background)
            return
        self.report(exc, f"Cannot open {Path(path).name}")

    def report(self, exc: BaseException, title: str) -> None:
        """An error dialog: the message of our own errors, a short note plus the type for bugs."""
        if isinstance(exc, HsiError):
            message = dialogs.gui_message(str(exc))
        else:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            print(trace, file=sys.stderr)
            message = (f"Unexpected error ({type(exc).__name__}): {exc}\n\n"
                       "This is probably a bug in the viewer; the details were printed to the console.")
        self.statusBar().showMessage(message.splitlines()[0] if message else title, 8000)
        self.errors_reported.append(f"{title}: {message}")
        if self.unattended:
            print(f"{title}: {message}", file=sys.stderr)
        else:
            dialogs.show_error(self, title, message)

    # ------------------------------------------------------------------ unsaved results and recovery
    def _on_computed(self, layers, kind: str) -> None:
        """A run or a simulation added ``layers``: they are unsaved, and a copy of each goes to
        the recovery folder (on a worker thread)."""
        inputs = core_recovery.RecoveryStore.scene_inputs(self.scene.layers)
        for layer in layers:
            problem = self.recovery.too_big(layer.cube)
            if problem:
                self.unsaved.add(layer, kind)
                self.statusBar().showMessage(problem, 10000)
                continue
            key = self.recovery.new_key()
            self.unsaved.add(layer, kind, key)
            cube, role, name = layer.cube, layer.role, layer.name
            self._recovery_writer.submit(
                None, lambda _control, k=key, c=cube, r=role, n=name: self.recovery.write(k, c, role=r, name=n,
                                                                                          inputs=inputs),
                on_error=lambda exc, n=name: self.statusBar().showMessage(
                    f"{n}: no recovery copy ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                    10000))

    @property
    def recovery_busy(self) -> bool:
        """A recovery copy is being written."""
        return self._recovery_writer.is_running

    def _forget_closed_layers(self) -> None:
        """Unsaved layers that left the scene without a question (replaced by a new simulation)
        lose their recovery copies."""
        gone = self.unsaved.prune(self.scene.layers)
        if gone:
            self.recovery.discard([e.key for e in gone])

    def mark_layers_saved(self, uids: Iterable[int]) -> None:
        """Layers written to files (an export, a session that wrote them): no longer unsaved."""
        gone = self.unsaved.forget(uids)
        if gone:
            self.recovery.discard([e.key for e in gone])

    def unsaved_labels(self, uids: Iterable[int] | None = None) -> list[str]:
        layers = self.scene.layers if uids is None else [l for l in self.scene.layers if l.uid in set(uids)]
        return [e.label for e in self.unsaved.among(layers)]

    def confirm_drop(self, uids: Iterable[int] | None, action: str, *, parent: QWidget | None = None) -> bool:
        """Before ``action`` drops the layers ``uids`` (None: all): True to go on. Unsaved ones
        among them get the Save / Discard / Cancel question; Save writes them (a folder choice)
        and goes on only when they were written, Discard drops them and their recovery copies."""
        wanted = None if uids is None else set(uids)
        if self.unattended:
            return True
        # asked again when a run finished while the question was open (its result is unsaved too)
        while entries := self.unsaved.among(l for l in self.scene.layers if wanted is None or l.uid in wanted):
            answer = dialogs.ask_unsaved(parent or self, action, [e.label for e in entries])
            if answer == "save":
                if not self.save_unsaved([e.uid for e in entries], parent=parent):
                    return False
            elif answer == "discard":
                self.mark_layers_saved([e.uid for e in entries])  # (their copies go the same way)
            else:
                return False
        return True

    def save_unsaved(self, uids: Iterable[int], *, parent: QWidget | None = None) -> bool:
        """Ask for a folder and write the layers ``uids`` there as ENVI cubes; True when written."""
        wanted = set(uids)
        layers = [l for l in self.scene.layers if l.uid in wanted]
        start = str(self.settings.value("last_dir", str(Path.home())))
        folder = dialogs.ask_save_folder(parent or self, start)
        if not folder:
            return False
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            written = core_recovery.save_layers(layers, folder)
        except Exception as exc:  # noqa: BLE001 - shown; the action does not go on
            QApplication.restoreOverrideCursor()
            self.report(exc, "Cannot save the results")
            return False
        QApplication.restoreOverrideCursor()
        self.settings.setValue("last_dir", str(folder))
        self.mark_layers_saved(written)
        self.statusBar().showMessage(f"Saved {', '.join(p.name for p in written.values())} in {folder}", 10000)
        return True

    def close_all_layers(self) -> bool:
        """File ▸ Close all layers (asks about unsaved results); True when closed."""
        if not self.confirm_drop(None, "Close all layers"):
            return False
        self.scene.clear()
        return True

    def offer_recovery(self) -> bool:
        """Offer the results of sessions that did not end normally (newest first): Restore,
        Discard or Later. True when a restore was started."""
        if self.unattended:
            return False
        for session in self.recovery.stale_sessions():
            inputs = [f"{str(i.get('role', '')).upper()} {i['path']}" for i in session.existing_inputs()]
            answer = dialogs.ask_recover(self, session.started_utc, session.describe(), inputs)
            if answer == "restore":
                self.restore_recovered(session)
                return True
            if answer == "discard":
                self.recovery.remove_session(session)
                continue
            return False
        return False

    def restore_recovered(self, session: core_recovery.RecoveredSession, *, background: bool = True) -> None:
        """Open a stale session's copies as layers (unsaved here now), with the files they were
        computed from where those still exist."""
        def load():
            inputs, copies, problems = [], [], []
            for item in session.existing_inputs():
                try:
                    inputs.append((item, load_cube(item["path"], dict(item.get("open_options") or {}))))
                except HsiError as exc:
                    problems.append(str(exc))
            for entry in session.entries:
                try:
                    copies.append((entry, core_recovery.load_entry(entry)))
                except HsiError as exc:
                    problems.append(str(exc))
            return inputs, copies, problems

        self.run_job(load, lambda result: self._on_recovered(session, *result),
                     lambda exc: self.report(exc, "Cannot restore the unsaved results"), background=background,
                     message="Restoring unsaved results…")

    def _on_recovered(self, session, inputs, copies, problems) -> None:
        for item, cube in inputs:
            options = dict(item.get("open_options") or {})
            if options:
                cube.metadata["open_options"] = options
            try:
                self.scene.add_layer(cube, str(item.get("role", "gt")), str(item.get("name") or Path(item["path"]).stem))
            except HsiError as exc:
                problems.append(str(exc))
        left = 0
        for entry, cube in copies:
            try:
                layer = self.scene.add_layer(cube, entry.role, entry.name)
            except HsiError as exc:
                problems.append(f"{entry.name}: {exc}")
                left += 1
                continue
            try:
                moved = self.recovery.adopt(entry, core_recovery.RecoveryStore.scene_inputs(self.scene.layers))
            except (OSError, HsiError) as exc:  # the layer is open; its copy stays where it was
                problems.append(f"{entry.name}: its recovery copy cannot be moved ({exc})")
                self.unsaved.add(layer, "restored")
                left += 1
                continue
            self.unsaved.add(layer, "restored", moved.key)
        left += len(session.entries) - len(copies)
        if not left:
            self.recovery.remove_session(session)
        self._ensure_pixel()
        if problems:
            self.report(HsiError("Not everything could be restored (what was not stays in the recovery folder):\n"
                                 + "\n".join(problems)), "Results restored in part")
        else:
            self.statusBar().showMessage(f"Restored {len(copies)} unsaved result(s)", 8000)

    # ------------------------------------------------------------------ recent files
    def recent_files(self) -> list[dict]:
        raw = self.settings.value("recent_files", [])
        if isinstance(raw, str):
            raw = [raw]
        entries = []
        for text in raw or []:
            try:
                entry = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(entry, dict) and "path" in entry:
                entries.append(entry)
        return entries

    def _remember(self, role: str, path: str, options: dict) -> None:
        path = str(Path(path).resolve())
        entries = [e for e in self.recent_files() if e.get("path") != path]
        entries.insert(0, {"role": role, "path": path, "options": options})
        self.settings.setValue("recent_files", [json.dumps(e) for e in entries[:MAX_RECENT]])
        self.settings.sync()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        entries = self.recent_files()
        if not entries:
            action = self.recent_menu.addAction("(no recent files)")
            action.setEnabled(False)
            return
        for entry in entries:
            role = entry.get("role", "gt")
            label = f"{role.upper():6s} {Path(entry['path']).name}"
            action = self.recent_menu.addAction(label)
            action.setToolTip(entry["path"])
            action.triggered.connect(
                lambda _=False, e=entry: self._start_load(e.get("role", "gt"), e["path"],
                                                          dict(e.get("options") or {}), True))
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction("Clear list")
        clear.triggered.connect(lambda: self.settings.setValue("recent_files", []))

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event):  # noqa: N802
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and all(u.isLocalFile() for u in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            # Out of the drop handler: the source application waits until it returns.
            QTimer.singleShot(0, lambda: self._ask_roles_and_open(paths))

    # ------------------------------------------------------------------ status
    def set_busy(self, busy: bool, message: str) -> None:
        """The status bar's busy bar and message (kept while files are being read)."""
        busy = busy or self._pending_loads > 0
        self.busy_bar.setVisible(busy)
        if busy and message:
            self.statusBar().showMessage(message)
        elif not busy:
            self.statusBar().clearMessage()

    def _on_layers(self) -> None:
        ref = self.scene.reference
        self.setWindowTitle(f"{ref.name} — {APP_NAME}" if ref is not None else APP_NAME)
        has_layers = bool(self.scene.layers)
        self.export_action.setEnabled(has_layers)
        self.close_all_action.setEnabled(has_layers)
        self.attach_wavelengths_action.setEnabled(has_layers)
        self._update_status()
        self._update_note()

    def _update_status(self) -> None:
        scene = self.scene
        hover = scene.hover
        if hover is None or not hover.inside:
            pixel = scene.pixel
            if pixel is None or not scene.layers:
                self.position_label.setText("")
                self.map_label.setText("")
                self.value_label.setText("")
                self.values_label.setText("")
                return
            # no pointer over an image: describe the clicked pixel in the reference
            layer, row, col, prefix = scene.reference, pixel[0], pixel[1], "selected "
        else:
            try:
                layer = scene.layer(hover.uid)
            except KeyError:
                return
            row, col, prefix = hover.row, hover.col, ""
        ly, lx = scene.layer_pixel(layer, row, col)
        text = f"{prefix}row {row}, col {col}"
        if layer.scale > 1:
            text += f"  ({layer.title} pixel {ly}, {lx})"
        self.position_label.setText(text)
        where = map_readout(layer.cube.metadata, row, col, layer.scale)  # '' without a georeference
        self.map_label.setText(where)
        self.map_label.setVisible(bool(where))
        values = scene.value_at(layer, row, col)
        band = scene.band_for(layer)
        if band is None:
            what = "R, G, B " + ", ".join(f"{v:.4g}" for v in values)
        else:
            nm = layer.cube.wavelengths_nm
            where = f"{nm[band]:.1f} nm" if nm is not None else f"band {band + 1} / {layer.cube.bands}"
            what = f"{where}: {values[0]:.4g}"
        self.value_label.setText(f"{layer.title} · {layer.name}  ·  {what}")
        self.values_label.setText(self._all_values(row, col, layer))
        self._update_note(layer)

    def _all_values(self, row: int, col: int, skip=None) -> str:
        """'GT 0.123 | LR 0.118 | bicubic 0.120 …': every other panel's value at HR (row, col)."""
        parts = []
        for other in self.scene.layers:
            if other is skip:
                continue
            values = self.scene.value_at(other, row, col)
            text = "/".join(f"{v:.3g}" for v in values)
            name = other.title if other.role != "recon" else other.name
            parts.append(f"{name} {text}")
        return "  |  ".join(parts)

    def _update_note(self, layer=None) -> None:
        scene = self.scene
        layer = layer or scene.reference
        if layer is None:
            self._note_key = None
            self.note_label.setText("")
            return
        note = layer.cube.normalisation
        if scene.mode != DisplayMode.BAND:
            rendered = scene.rendered.get(layer.uid)
            if rendered is not None and rendered.note:
                note = f"{rendered.note}  ·  {note}"
        contrast = "shared contrast" if scene.shared_contrast else "per-panel contrast"
        low, high = scene.percentiles
        text = f"{note}  ·  {contrast} {low:g}–{high:g} %"
        key = (text, id(layer.cube))
        if key == getattr(self, "_note_key", None):
            return  # asked at every click and hover: the label is only touched when it changes
        self._note_key = key
        self.note_label.setText(text)
        self.note_label.setToolTip(layer.cube.describe())

    def _update_levels_bar(self) -> None:
        """Show the reference panel's levels in the display dock's colorbar."""
        bar = self.controls.levels_bar
        ref = self.scene.reference
        rendered = self.scene.rendered.get(ref.uid) if ref is not None else None
        if rendered is None:
            bar.set_levels("gray", None, None, "")
            return
        if rendered.is_rgb:
            if self.scene.mode == DisplayMode.TRUE_COLOUR:
                bar.set_levels("gray", 0.0, 1.0, "sRGB, no stretch")
            else:
                bar.set_levels("gray", None, None, "R, G, B stretched separately")
            return
        low, high = (float(v) for v in rendered.levels)
        scope = "all panels" if self.scene.shared_contrast else ref.title
        bar.set_levels(self.scene.colormap, low, high, f"{ref.title} {self.scene.band_text()}, {scope}")

    # ------------------------------------------------------------------ export / help
    def export_png_dialog(self) -> None:
        start = str(Path(str(self.settings.value("last_dir", str(Path.home())))) / "view.png")
        path, _ = QFileDialog.getSaveFileName(self, "Export view as PNG", start, "PNG image (*.png)")
        if path:
            if not self.grid.grab().save(path, "PNG"):
                dialogs.show_error(self, "Export failed", f"{path}: cannot write the PNG file")
            else:
                self.statusBar().showMessage(f"Saved {path}", 6000)

    def _show_shortcuts(self) -> None:
        from PyQt6.QtWidgets import QMessageBox

        QMessageBox.information(self, "Keyboard shortcuts", (
            "Up / Down: next / previous band\nPageUp / PageDown: ±5 bands\nHome / End: first / last band\n"
            "B / R / T: single band, RGB, true colour\nC: shared contrast on/off\n"
            "A or Ctrl+0: reset zoom\nEsc: clear the selected pixel\n"
            "Mouse: click a pixel for spectra, Shift+click to pin more pixels (Shift+Esc clears);\n"
            "wheel zooms, drag pans (all panels follow)\n"
            "Ctrl+O: open files, Ctrl+Shift+O: open a PNG folder, Ctrl+E: paper-figure builder,\n"
            "Ctrl+Shift+E: export a cube, Ctrl+Shift+S: save session, Ctrl+Alt+O: open session\n"
            "Ctrl+R: run the model chosen in the Run model panel\n"
            "Ctrl+B: results browser (in it: Ctrl+O open JSON, Ctrl+K run compare, Enter open the image)\n\n"
            "Analysis: Ctrl+M show the maps/metrics, Ctrl+Shift+M maximise/restore, F5 recompute, E error map RMSE ↔ |error| at band,\n"
            "G / Shift+G: go to the worst SAM / error pixel, Shift+B: go to the worst band\n"
            "O / P: draw a rectangle / polygon ROI (Del clears it, Esc leaves the tool)\n"
            "W / F: A/B swipe / flicker, X: swap A and B"))

    def _show_about(self) -> None:
        from PyQt6.QtWidgets import QMessageBox

        QMessageBox.about(self, f"About {APP_NAME}", (
            f"<b>{APP_NAME}</b><br>Inspect hyperspectral super-resolution: ground truth, low-resolution "
            "input, guide and reconstructions with linked views and per-pixel spectra."))

    def closeEvent(self, event):  # noqa: N802
        if not self.confirm_drop(None, "Quit"):
            event.ignore()
            return
        if self.unsaved:  # unattended: nobody was asked; the copies stay and are offered next time
            self._recovery_writer.wait(30.0)
        self.recovery.close()
        self._recovery_writer.shutdown(5.0)
        self.run_panel.shutdown()
        self.analysis.shutdown()
        self.exporter.shutdown()
        self.grid.shutdown()
        self._loader.shutdown(2.0)  # a file still being read is dropped; its daemon thread ends with it
        if getattr(self, "results_browser", None) is not None and not sip.isdeleted(self.results_browser):
            self.results_browser.close()
            self.results_browser.shutdown()
        self.settings.sync()
        super().closeEvent(event)

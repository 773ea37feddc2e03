"""The grid of image panels: one per layer, zoom linked through the scene, crosshair everywhere.

The grid is the view of the scene's layers: it subscribes to the scene, renders every layer
(on a worker thread when the cubes are big, latest request wins) and writes clicks, hovers and
zoom back to the scene. Its panels never talk to each other: a pan in one panel goes to
``scene.set_view_range`` and comes back to the others through ``scene.events.view_range``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PyQt6 import sip
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QPushButton, QStackedLayout, QVBoxLayout,
                             QWidget)

from app.core.state.scene import DisplayMode, RenderedImage, RenderRequest, Scene, render
from app.qt.binding import subscribe
from app.qt.graphics import best_columns  # noqa: F401  (the grid's layout rule, also the analysis maps')
from app.qt.panel import ImagePanel
from app.qt.workers import Worker

# Above this many values read per refresh, rendering goes to a worker thread.
SYNC_RENDER_LIMIT = 24_000_000


class ImageGrid(QWidget):
    """Panels for every layer of ``scene``.

    Signals:
        busy(bool, str): rendering on a worker thread started / ended.
        render_failed(object): rendering raised (the main window shows it).
        rendered(): new images are on screen.
        open_requested(), sample_requested(): buttons of the empty state.
    """

    busy = pyqtSignal(bool, str)
    render_failed = pyqtSignal(object)
    rendered = pyqtSignal()
    open_requested = pyqtSignal()     # the empty-state buttons
    sample_requested = pyqtSignal()
    tool_changed = pyqtSignal(str)    # the ROI drawing tool: 'none', 'rect' or 'polygon'

    def __init__(self, scene: Scene, parent: QWidget | None = None):
        super().__init__(parent)
        self.scene = scene
        self.panels: list[ImagePanel] = []
        self._columns = 0
        self._applying_range = False
        self.tool = "none"
        # asked before a panel's close button drops its layer (the window's unsaved-work check)
        self.close_guard: Callable[[list[int], str], bool] | None = None
        self._worker = Worker(self, name="render")
        self._worker.failed.connect(lambda _key, _ticket, exc: self.render_failed.emit(exc))
        self._worker.busy.connect(lambda b: self.busy.emit(b, "Rendering…"))
        self._finer = QTimer(self)
        self._finer.setSingleShot(True)
        self._finer.setInterval(60)
        self._finer.timeout.connect(self.refresh)

        self._grid_host = QWidget(self)
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(6, 6, 6, 6)
        self._grid.setSpacing(6)
        self._placeholder = QWidget(self)
        pl = QVBoxLayout(self._placeholder)
        pl.addStretch(1)
        text = QLabel(
            "<p style='font-size:18px'><b>No cubes open</b></p>"
            "<p>Drop hyperspectral files here, or use <b>File ▸ Open…</b> (Ctrl+O)<br>"
            "ENVI, MATLAB .mat, .npy/.npz, TIFF, HDF5, or a folder of per-band PNGs</p>", self._placeholder)
        text.setObjectName("Placeholder")
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pl.addWidget(text)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.open_button = QPushButton("Open files…", self._placeholder)
        self.sample_button = QPushButton("Open the sample scene", self._placeholder)
        self.open_button.clicked.connect(self.open_requested)
        self.sample_button.clicked.connect(self.sample_requested)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.sample_button)
        buttons.addStretch(1)
        pl.addLayout(buttons)
        pl.addStretch(1)
        self._stack = QStackedLayout()
        self._stack.addWidget(self._placeholder)
        self._stack.addWidget(self._grid_host)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._stack)

        ev = scene.events
        subscribe(self, ev.layers, lambda *_: self._rebuild())
        for event in (ev.band, ev.mode, ev.rgb, ev.contrast):
            subscribe(self, event, lambda *_: self.refresh())
        subscribe(self, ev.colormap, self._on_colormap)
        subscribe(self, ev.pixel, self._on_pixel)
        subscribe(self, ev.pins, self._on_pins)
        subscribe(self, ev.view_range, self._on_view_range)
        subscribe(self, ev.roi, self._on_roi)
        self._rebuild()

    # ------------------------------------------------------------------ panels
    def panel_for(self, uid: int) -> ImagePanel:
        for panel in self.panels:
            if panel.layer.uid == uid:
                return panel
        raise KeyError(uid)

    def _rebuild(self) -> None:
        layers = self.scene.layers
        old = {p.layer.uid: p for p in self.panels}
        keep = {l.uid for l in layers}
        for uid, panel in old.items():
            if uid not in keep:
                self._grid.removeWidget(panel)
                panel.hide()
                panel.setParent(None)
                panel.deleteLater()
        new_panels = []
        for layer in layers:
            panel = old.get(layer.uid)
            # A layer opened alone is on its own grid (scale 1); when a finer layer arrives (an LR
            # that finished loading before its GT) its scale grows: the panel, whose extent and
            # image placement come from the scale, is built again.
            if panel is None or panel.built_scale != layer.scale:
                if panel is not None:
                    self._grid.removeWidget(panel)
                    panel.setParent(None)
                    panel.deleteLater()
                panel = self._make_panel(layer)
            else:
                panel.name_label.set_full_text(layer.name)
            new_panels.append(panel)
        self.panels = new_panels
        self._stack.setCurrentIndex(1 if self.panels else 0)
        self._columns = 0
        self._relayout()
        self.refresh()
        self._on_pixel(self.scene.pixel)
        self._on_pins(self.scene.pins)
        view_range = self.scene.view_range
        self._on_view_range(view_range, None)
        self._on_roi(self.scene.roi)
        if view_range is None and self.panels:
            # Fit again once the grid has its new layout (the panels were just created, moved
            # or resized): a fit at the old sizes could leave the view zoomed out or in.
            QTimer.singleShot(0, self._fit_if_unzoomed)

    def _fit_if_unzoomed(self) -> None:
        if sip.isdeleted(self) or self.scene.view_range is not None:
            return
        self._on_view_range(None, None)

    def _make_panel(self, layer) -> ImagePanel:
        panel = ImagePanel(layer, self._grid_host)
        uid = layer.uid
        panel.clicked.connect(lambda row, col: self.scene.set_pixel(row, col))
        panel.pin_clicked.connect(lambda row, col: self.scene.add_pin(row, col))
        panel.hovered.connect(lambda row, col, uid=uid: self.scene.set_hover(uid, row, col))
        panel.left.connect(lambda uid=uid: self._on_left(uid))
        panel.close_requested.connect(lambda uid=uid: self.request_close(uid))
        panel.range_changed.connect(lambda xr, yr, p=panel: self._on_panel_range(p, xr, yr))
        panel.roi_drawn.connect(self._on_roi_drawn)
        panel.finer_needed.connect(self._on_finer_needed)
        panel.set_tool(self.tool)
        return panel

    def request_close(self, uid: int) -> bool:
        """A panel's close button: remove its layer unless ``close_guard([uid], action)`` (the
        window's unsaved-work question) says no; True when the layer was removed."""
        guard = self.close_guard
        if guard is not None and not guard([uid], "Close this panel"):
            return False
        if any(layer.uid == uid for layer in self.scene.layers):
            self.scene.remove_layer(uid)
            return True
        return False

    # ------------------------------------------------------------------ ROI tools
    def set_tool(self, tool: str) -> None:
        """Drawing tool of every panel: 'rect', 'polygon' or 'none' (select pixels, pan)."""
        if tool == self.tool:
            return
        self.tool = tool
        for panel in self.panels:
            panel.set_tool(tool)
        self.tool_changed.emit(tool)

    def _on_roi_drawn(self, roi) -> None:
        self.scene.set_roi(roi)
        self.set_tool("none")

    def _on_roi(self, roi) -> None:
        for panel in self.panels:
            panel.set_roi(roi)

    def _on_left(self, uid: int) -> None:
        hover = self.scene.hover
        if hover is not None and hover.uid == uid:
            self.scene.set_hover(None)

    def _relayout(self) -> None:
        n = len(self.panels)
        if n == 0:
            return
        shape = self.scene.hr_shape or (1, 1)
        cols = best_columns(n, max(self.width(), 200), max(self.height(), 150), shape[1] / shape[0])
        if cols == self._columns:
            return
        self._columns = cols
        for panel in self.panels:
            self._grid.removeWidget(panel)
        for i, panel in enumerate(self.panels):
            self._grid.addWidget(panel, i // cols, i % cols)
            panel.show()
        rows = math.ceil(n / cols)
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 1 if r < rows else 0)
        for c in range(self._grid.columnCount()):
            self._grid.setColumnStretch(c, 1 if c < cols else 0)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._relayout()

    # ------------------------------------------------------------------ rendering
    def _steps(self) -> dict[int, int]:
        """Per memory-mapped layer, the stride its panel shows now: such a layer is read at the
        pixels the screen shows only (in-memory layers are rendered whole: cheap, and other views
        show the same pictures)."""
        return {p.layer.uid: p.wanted_step() for p in self.panels if p.layer.cube.is_lazy}

    def refresh(self) -> None:
        """Re-render every panel for the scene's band, mode and contrast. The worker (or this
        thread, for small cubes) gets a frozen snapshot; what it makes comes back here, where the
        scene's caches are updated (the worker never writes what the GUI thread reads)."""
        if not self.panels:
            return
        self._finer.stop()
        request = self.scene.snapshot(self._steps())
        if self.scene.render_cost() <= SYNC_RENDER_LIMIT and not self._worker.is_running:
            made: dict = {}
            try:
                results = render(request, made)
            except Exception as exc:  # shown by the main window; the grid keeps working
                self.render_failed.emit(exc)
                return
            self._apply_results(request, (results, made))
        else:
            def job(_control, request=request):
                made: dict = {}
                return render(request, made), made

            self._worker.submit("render", job, on_done=lambda out: self._apply_results(request, out))

    def _on_finer_needed(self) -> None:
        """A panel zoomed in (or grew) past the stride of its picture: render again, once the
        zoom settles."""
        self._finer.start()

    def _apply_results(self, request: RenderRequest, out) -> None:
        results, made = out
        scene = self.scene
        scene.keep_render_cache(made)
        cmap = scene.colormap
        for panel in self.panels:
            rendered = results.get(panel.layer.uid)
            if rendered is None:
                continue
            old = panel.rendered
            if old is not None and old.image is rendered.image and old.is_rgb and rendered.is_rgb \
                    and np.array_equal(np.asarray(old.levels), np.asarray(rendered.levels)):
                continue  # the same cached colour picture: nothing to redraw
            panel.set_rendered(rendered, cmap, self._info_text(panel, rendered, request))
        self.scene.set_rendered(results)  # for the views that show the same pictures (A/B, colorbar)
        self.rendered.emit()

    def _info_text(self, panel: ImagePanel, rendered: RenderedImage, request: RenderRequest) -> str:
        layer = panel.layer
        h, w, b = layer.cube.shape
        size = f"{h}×{w}×{b}"
        if layer.scale > 1:
            size += f"  ×{layer.scale}"
        if rendered.band is not None:
            nm = layer.cube.wavelengths_nm
            what = f"{nm[rendered.band]:.0f} nm" if nm is not None else f"band {rendered.band + 1}"
        elif request.colour_image.get(layer.uid):
            what = "RGB"
        elif request.mode == DisplayMode.TRUE_COLOUR:
            # what the renderer made, not what was asked: a cube without the visible range is
            # shown in false (or approximate) colour and its note says so
            note = rendered.note or ""
            what = "false colour" if "false colour" in note else \
                "approximate colour" if "approximate colour" in note else "true colour"
        else:
            kr, kg, kb = request.rgb_bands[layer.uid]
            nm = layer.cube.wavelengths_nm
            what = "/".join(f"{nm[k]:.0f}" for k in (kr, kg, kb)) + " nm" if nm is not None \
                else f"bands {kr}/{kg}/{kb}"
        return f"{what}  ·  {size}"

    def _on_colormap(self, name: str) -> None:
        for panel in self.panels:
            panel.set_colormap(name)

    # ------------------------------------------------------------------ crosshair
    def _on_pixel(self, pixel) -> None:
        scene = self.scene
        coarse = max(scene.layers, key=lambda l: l.scale, default=None)
        footprint = None
        if pixel is not None and coarse is not None and coarse.scale > 1:
            footprint = scene.footprint(coarse)
        for panel in self.panels:
            panel.set_crosshair(pixel)
            panel.set_footprint(footprint)

    def _on_pins(self, pins) -> None:
        for panel in self.panels:
            panel.set_pins(pins)

    # ------------------------------------------------------------------ linked zoom
    def _on_panel_range(self, panel: ImagePanel, x_range, y_range) -> None:
        if self._applying_range or not panel.isVisible():
            return
        try:
            self.scene.set_view_range(x_range, y_range, source=panel)
        except ValueError:
            pass

    def _on_view_range(self, view_range, source) -> None:
        self._applying_range = True
        try:
            for panel in self.panels:
                if panel is source:
                    continue
                if view_range is None:
                    panel.show_all()
                else:
                    panel.set_range(*view_range)
        finally:
            self._applying_range = False

    def apply_theme(self) -> None:
        """Rebuild the panels with the current theme's colours (their state is in the scene)."""
        for panel in self.panels:
            self._grid.removeWidget(panel)
            panel.setParent(None)
            panel.deleteLater()
        self.panels = []
        self._rebuild()

    def reset_view(self) -> None:
        self.scene.reset_view()

    def shutdown(self) -> None:
        """Let the render thread end (the window is closing)."""
        self._worker.shutdown(5.0)

    def wait_idle(self) -> bool:
        """True when no render is in flight or due (tests and screenshots poll this)."""
        return not self._worker.is_running and not self._finer.isActive()


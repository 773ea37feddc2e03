"""One image panel: a titled pyqtgraph ViewBox showing one layer on the scene's HR pixel grid.

A panel is a part of :class:`app.qt.image_grid.ImageGrid`; it does not know the scene. The grid
feeds it images, the crosshair and the footprint, and listens to its clicks and hovers. The
pieces it shares with the other image views are in :mod:`app.qt.graphics`.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPen, QPolygonF
from PyQt6.QtWidgets import (QFrame, QGraphicsPolygonItem, QGraphicsRectItem, QHBoxLayout, QLabel, QToolButton,
                             QVBoxLayout, QWidget)

from app.core.state.scene import Layer, RenderedImage, ROLE_DESCRIPTIONS
from app.qt.fast_image import FastImageItem
from app.qt import colormaps, theme
from app.qt.graphics import (CrossLine, ElidedLabel, ImageView, PanelViewBox, PointerMixin, crosshair_pen,
                             display_stride, place_crosshair, show_strided)


NARROW_PANEL_PX = 200
RANGE_WARN_BG = "#d62828"   # the value-range badge when its rule looks wrong (values far below 1, mean off the GT's)
SHORT_ROLE_TITLES = {"gt": "GT", "lr": "LR", "guide": "G", "recon": "R"}


class ImagePanel(PointerMixin, QFrame):
    """Shows one layer. Coordinates are HR pixels: an LR layer is drawn ``scale`` times larger
    (nearest neighbour) so that it covers the same extent as the HR layers.

    Signals:
        clicked(row, col): left click on the image, HR pixel coordinates (floats).
        pin_clicked(row, col): Shift + left click (collect the pixel).
        hovered(row, col): pointer moved over the view (HR coordinates, may be off the image).
        left(): pointer left the view.
        close_requested(): the user pressed the panel's close button.
        range_changed(x_range, y_range): the view's visible range changed (pan, zoom, resize).
    """

    clicked = pyqtSignal(float, float)
    pin_clicked = pyqtSignal(float, float)
    hovered = pyqtSignal(float, float)
    left = pyqtSignal()
    close_requested = pyqtSignal()
    range_changed = pyqtSignal(object, object)
    roi_drawn = pyqtSignal(object)      # app.core.evaluation.analysis.Roi, when a drawing tool finishes
    finer_needed = pyqtSignal()         # the view shows more pixels than its (strided) picture has
    range_menu_requested = pyqtSignal()  # the value-range badge was clicked (the window offers the choices)

    def __init__(self, layer: Layer, parent: QWidget | None = None):
        super().__init__(parent)
        self.layer = layer
        self.setObjectName("ImagePanel")
        th = theme.current()
        self._rendered: RenderedImage | None = None

        # ---- header: role badge, name, size/band info, close button
        header = QWidget(self)
        header.setObjectName("PanelHeader")
        hl = QHBoxLayout(header)
        hl.setContentsMargins(6, 3, 4, 3)
        hl.setSpacing(6)
        self.badge = QLabel(layer.title, header)
        self.badge.setObjectName("RoleBadge")
        self.badge.setStyleSheet(f"background: {theme.ROLE_COLOURS.get(layer.role, '#aaa')};")
        self.badge.setToolTip(ROLE_DESCRIPTIONS.get(layer.role, layer.role))
        self.name_label = ElidedLabel(layer.name, header)
        self.name_label.setObjectName("PanelName")
        self.info_label = QLabel("", header)
        self.info_label.setObjectName("PanelInfo")
        # the value-range rule of the layer ('stated ÷5000', 'GT scale ÷5000'); loud when it looks wrong
        self.range_badge = QToolButton(header)
        self.range_badge.setObjectName("RangeBadge")
        self.range_badge.setCursor(Qt.CursorShape.PointingHandCursor)
        self.range_badge.clicked.connect(self.range_menu_requested)
        self.range_badge.hide()  # until the window tells its rule
        self.range_loud = False
        self._range_text = ("", "")  # (full, compact) text of the badge
        self.close_button = QToolButton(header)
        self.close_button.setObjectName("PanelClose")
        self.close_button.setText("✕")
        self.close_button.setToolTip("Close this layer")
        self.close_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.close_button.clicked.connect(self.close_requested)
        hl.addWidget(self.badge)
        hl.addWidget(self.name_label, 1)
        hl.addWidget(self.range_badge)
        hl.addWidget(self.info_label)
        hl.addWidget(self.close_button)

        # ---- the image view
        self.graphics = ImageView(self, background=th.image_bg)
        self.graphics.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        # Dropped files go to the main window, not to the graphics scene.
        self.graphics.setAcceptDrops(False)
        self.graphics.viewport().setAcceptDrops(False)
        self.graphics.left.connect(self.left)
        self.view = PanelViewBox(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self.graphics.setCentralItem(self.view)
        self.image_item = FastImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        h, w = layer.cube.shape[:2]
        s = layer.scale
        self.built_scale = s  # the scene changes layer.scale in place when the grid grows
        self.extent = QRectF(0.0, 0.0, float(w * s), float(h * s))
        self.image_item.setRect(self.extent)

        cross_pen = crosshair_pen(th.crosshair)
        self.vline = CrossLine(True, cross_pen, self.extent.height())
        self.hline = CrossLine(False, cross_pen, self.extent.width())
        self.pixel_box = QGraphicsRectItem(QRectF(0.0, 0.0, 1.0, 1.0))
        box_pen = QPen(QColor(th.crosshair))
        box_pen.setCosmetic(True)
        box_pen.setWidthF(1.5)
        self.pixel_box.setPen(box_pen)
        self.footprint_item = QGraphicsRectItem()
        fp_pen = QPen(QColor(th.footprint))
        fp_pen.setCosmetic(True)
        fp_pen.setWidthF(2.0)
        self.footprint_item.setPen(fp_pen)
        for item in (self.vline, self.hline, self.pixel_box, self.footprint_item):
            item.setVisible(False)
            item.setZValue(10)
            self.view.addItem(item, ignoreBounds=True)

        roi_pen = QPen(QColor(th.footprint))
        roi_pen.setCosmetic(True)
        roi_pen.setWidthF(1.8)
        roi_pen.setStyle(Qt.PenStyle.DashLine)
        self.roi_item = QGraphicsPolygonItem()
        self.roi_item.setPen(roi_pen)
        self.draft_item = QGraphicsPolygonItem()  # the ROI being drawn
        draft_pen = QPen(roi_pen)
        draft_pen.setStyle(Qt.PenStyle.DotLine)
        self.draft_item.setPen(draft_pen)
        for item in (self.roi_item, self.draft_item):
            item.setVisible(False)
            item.setZValue(12)
            self.view.addItem(item, ignoreBounds=True)
        self.tool = "none"            # 'none', 'rect' or 'polygon'
        self._draft: list[tuple[float, float]] = []

        self.pin_items: list = []
        self.graphics.scene().sigMouseClicked.connect(self._on_click)
        self.graphics.scene().sigMouseMoved.connect(self._on_move)
        self.view.sigRangeChanged.connect(self._on_range_changed)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        layout.addWidget(header)
        layout.addWidget(self.graphics, 1)
        self.setMinimumSize(160, 140)
        self._update_tooltip()

    # ------------------------------------------------------------------ content
    def _update_tooltip(self):
        cube = self.layer.cube
        lines = [cube.describe()]
        if cube.source_path is not None:
            lines.append(str(cube.source_path))
        if self.layer.scale > 1:
            lines.append(f"shown at its footprint on the HR grid (×{self.layer.scale}, nearest neighbour)")
        self.name_label.setToolTip("\n".join(lines))

    def set_range_badge(self, text: str, tooltip: str, loud: bool) -> None:
        """Show the layer's value-range rule (``text``), its words in the tooltip; ``loud`` turns the
        badge red with a warning sign (the values stay far below 1, or the mean is far off the GT's)."""
        th = theme.current()
        self.range_loud = bool(loud)
        sign = "⚠ " if loud else ""
        factor = next((w for w in text.split() if w[:1] in "÷×"), text)  # 'GT scale ÷5000' -> '÷5000'
        self._range_text = (sign + text, sign + factor)
        self.range_badge.setToolTip(tooltip)
        if loud:
            style = (f"QToolButton#RangeBadge {{ background: {RANGE_WARN_BG}; color: #ffffff; font-weight: 700; "
                     "font-size: 11px; border: none; border-radius: 3px; padding: 0 4px; }")
        else:
            style = (f"QToolButton#RangeBadge {{ color: {th.dim_text}; border: 1px solid {th.border}; "
                     "font-size: 11px; border-radius: 3px; padding: 0 4px; }")
        self.range_badge.setStyleSheet(style)
        self._fit_info()

    @property
    def range_text(self) -> str:
        """The badge's whole text (a narrow panel shows only its factor)."""
        return self._range_text[0]

    def set_rendered(self, rendered: RenderedImage, colormap: str, info: str) -> None:
        """Show ``rendered`` (mono images through ``colormap``); ``info`` goes in the header."""
        self._rendered = rendered
        image = rendered.image
        levels = rendered.levels
        if rendered.is_rgb:
            self.image_item.setLookupTable(None)
            levels = np.asarray(levels, dtype=np.float64)
            if levels.ndim == 1:
                levels = np.tile(levels, (3, 1))
        else:
            self.image_item.setColorMap(colormaps.colormap(colormap))
        self._levels = levels
        self._show_image()
        if rendered.step > self.decimation:
            self.finer_needed.emit()  # the view changed while it was being read: read it finer
        self._info = info
        self._fit_info()

    def _decimation(self) -> int:
        return display_stride(self.view, self.layer.scale)

    def wanted_step(self) -> int:
        """The stride (in layer pixels) the view can show now: 1 when zoomed in (or not laid out)."""
        return self._decimation()

    def _show_image(self) -> None:
        self._shown_k = self._decimation()
        step = max(int(getattr(self._rendered, "step", 1)), 1)  # the picture's own stride
        # the picture holds every step-th pixel: show every (k // step)-th of those
        show_strided(self.image_item, self._rendered.image, self._levels, self.layer.scale * step,
                     max(self._shown_k // step, 1))

    @property
    def decimation(self) -> int:
        """The stride the picture is shown with now (1: every pixel)."""
        return getattr(self, "_shown_k", 1)

    def _fit_info(self) -> None:
        """The full info ('550 nm · 256×256×31') when there is room, else only its first part,
        so that the layer's name stays readable."""
        info = getattr(self, "_info", "")
        short = info.split("  ·  ")[0] + (f"  ×{self.layer.scale}" if self.layer.scale > 1 else "")
        width = self.width()
        # a narrow panel (many methods): the name before the band (which the band bar shows
        # too) and before the role's full title (the badge's colour and tooltip say it)
        narrow = width < NARROW_PANEL_PX
        # with the value-range badge, a panel under 420 px does the same (keeping an LR's '×4'),
        # and where the name would not fit beside it the badge says its factor only (its tooltip says the rule)
        full, compact = self._range_text
        tight = bool(full) and width < 420
        keep_scale = tight and not narrow and self.layer.scale > 1
        self.info_label.setText(f"×{self.layer.scale}" if keep_scale else info if width >= 420 else short)
        self.info_label.setToolTip(info)
        self.info_label.setVisible(not narrow and (not tight or keep_scale))
        # the whole rule when the name fits beside it, else the factor only
        room = width - self.badge.sizeHint().width() - self.close_button.sizeHint().width() - 40  # margins, gaps
        need = self.name_label.fontMetrics().horizontalAdvance(self.layer.name) \
            + self.range_badge.fontMetrics().horizontalAdvance(full) + 16  # (the badge's padding and border)
        range_text = full if need <= room else compact
        if self.range_badge.text() != range_text:
            self.range_badge.setText(range_text)
        # (a narrow panel keeps the badge only when it warns; its tooltip and the status bar say the rule)
        self.range_badge.setVisible(bool(full) and (not narrow or self.range_loud))
        badge = SHORT_ROLE_TITLES.get(self.layer.role, self.layer.title) if narrow or tight else self.layer.title
        if self.badge.text() != badge:
            self.badge.setText(badge)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._fit_info()

    def set_colormap(self, name: str) -> None:
        if self._rendered is not None and not self._rendered.is_rgb:
            self.image_item.setColorMap(colormaps.colormap(name))

    @property
    def rendered(self) -> RenderedImage | None:
        return self._rendered

    def set_crosshair(self, pixel: tuple[int, int] | None) -> None:
        """Lines through the centre of HR pixel (row, col), and a box around it."""
        place_crosshair(self.vline, self.hline, pixel)
        self.pixel_box.setVisible(pixel is not None)
        if pixel is not None:
            self.pixel_box.setPos(pixel[1], pixel[0])  # a unit square moved, never re-shaped

    def set_pins(self, pins) -> None:
        """Numbered markers at the pinned HR pixels (row, col)."""
        for item in self.pin_items:
            self.view.removeItem(item)
        self.pin_items = []
        for i, (row, col) in enumerate(pins):
            colour = QColor(theme.PIN_COLOURS[i % len(theme.PIN_COLOURS)])
            box = QGraphicsRectItem(QRectF(col, row, 1.0, 1.0))
            pen = QPen(colour)
            pen.setCosmetic(True)
            pen.setWidthF(2.0)
            box.setPen(pen)
            label = pg.TextItem(str(i + 1), color=colour, anchor=(0.0, 1.0))
            label.setPos(col + 1.0, row)
            for item in (box, label):
                item.setZValue(11)
                self.view.addItem(item, ignoreBounds=True)
                self.pin_items.append(item)

    def set_footprint(self, footprint: tuple[int, int, int] | None) -> None:
        """Outline (top, left, size) in HR pixels, e.g. the LR pixel covering the clicked one."""
        if footprint is None:
            self.footprint_item.setVisible(False)
            return
        top, left, size = footprint
        self.footprint_item.setRect(QRectF(left, top, size, size))
        self.footprint_item.setVisible(True)

    # ------------------------------------------------------------------ ROI
    def set_roi(self, roi) -> None:
        """Outline the scene's ROI (app.core.evaluation.analysis.Roi) or hide it (None)."""
        if roi is None:
            self.roi_item.setVisible(False)
            return
        self.roi_item.setPolygon(QPolygonF([QPointF(float(x), float(y)) for x, y in roi.vertices()]))
        self.roi_item.setVisible(True)

    def set_tool(self, tool: str) -> None:
        """'rect': drag draws a rectangle ROI; 'polygon': clicks add vertices, a double click (or
        a click on the first vertex) closes it; 'none': clicks select pixels, drags pan."""
        if tool not in ("none", "rect", "polygon"):
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool
        self._draft = []
        self.draft_item.setVisible(False)
        self.view.drag_handler = self._drag_rect if tool == "rect" else None
        cursor = Qt.CursorShape.CrossCursor if tool != "none" else Qt.CursorShape.ArrowCursor
        self.graphics.viewport().setCursor(cursor)

    def _show_draft(self, points) -> None:
        self.draft_item.setPolygon(QPolygonF([QPointF(x, y) for x, y in points]))
        self.draft_item.setVisible(bool(points))

    def _drag_rect(self, ev) -> None:
        a = self.view.mapSceneToView(ev.buttonDownScenePos())
        b = self.view.mapSceneToView(ev.scenePos())
        ax, ay = min(max(a.x(), 0.0), self.extent.width()), min(max(a.y(), 0.0), self.extent.height())
        bx, by = min(max(b.x(), 0.0), self.extent.width()), min(max(b.y(), 0.0), self.extent.height())
        self._show_draft([(ax, ay), (bx, ay), (bx, by), (ax, by)])
        if ev.isFinish():
            self.draft_item.setVisible(False)
            if abs(bx - ax) >= 1.0 and abs(by - ay) >= 1.0:
                from app.core.evaluation.analysis import Roi

                self.roi_drawn.emit(Roi.rect(ax, ay, bx, by))

    def _polygon_click(self, point: QPointF, double: bool) -> None:
        x = min(max(point.x(), 0.0), self.extent.width())
        y = min(max(point.y(), 0.0), self.extent.height())
        close = double and len(self._draft) >= 3
        if self._draft and len(self._draft) >= 3 and not close:
            fx, fy = self._draft[0]  # clicking near the first vertex closes the polygon
            px = max(self.view.viewPixelSize()[0], 1e-9)
            close = math.hypot(x - fx, y - fy) <= 6 * px
        if close:
            from app.core.evaluation.analysis import Roi

            points, self._draft = self._draft, []
            self.draft_item.setVisible(False)
            self.roi_drawn.emit(Roi.polygon(points))
            return
        if not double:
            self._draft.append((x, y))
            self._show_draft(self._draft)

    # ------------------------------------------------------------------ mouse / range
    def _on_click(self, event):
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self.tool == "polygon":
            point = self._scene_to_pixel(event.scenePos())
            if point is not None:
                event.accept()
                self._polygon_click(point, event.double())
            return
        if event.double() or self.tool == "rect":
            return
        point = self._scene_to_pixel(event.scenePos())
        if point is not None and self.extent.contains(point):
            event.accept()
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.pin_clicked.emit(point.y(), point.x())
            else:
                self.clicked.emit(point.y(), point.x())

    def _on_range_changed(self, _view, view_range, *_):
        if self._rendered is not None and self._decimation() != self.decimation:
            self._show_image()  # zoomed in or out: show the picture at the stride that fits
            if self._rendered.step > self.decimation:
                self.finer_needed.emit()  # a picture read at a coarser stride than the view shows
        if self.view.resizing or self.view.width() < 8 or self.view.height() < 8:
            return  # layout, not the user: every panel keeps the shared target range itself
        self.range_changed.emit(tuple(view_range[0]), tuple(view_range[1]))

    def set_range(self, x_range, y_range) -> None:
        self.view.setRange(xRange=x_range, yRange=y_range, padding=0.0)

    def show_all(self) -> None:
        self.view.setRange(rect=self.extent, padding=0.0)

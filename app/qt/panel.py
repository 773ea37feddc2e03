"""One image panel: a titled pyqtgraph ViewBox showing one layer on the scene's HR pixel grid.

A panel is a part of :class:`app.qt.image_grid.ImageGrid`; it does not know the scene. The grid
feeds it images, the crosshair and the footprint, and listens to its clicks and hovers.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import (QFrame, QGraphicsLineItem, QGraphicsPolygonItem, QGraphicsRectItem, QHBoxLayout,
                             QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from app.core.state.scene import Layer, RenderedImage, ROLE_DESCRIPTIONS
from app.qt.fast_image import FastImageItem
from app.qt import colormaps, theme


def display_stride(view: pg.ViewBox, scale: int = 1) -> int:
    """Stride of the picture sent to pyqtgraph: when the visible range holds several image pixels
    per screen pixel, only every k-th is shown (what the screen can show anyway), so that a band
    switch of big cubes does not colour-map millions of hidden pixels. 1 when zoomed in."""
    w_px, h_px = view.width(), view.height()
    if w_px < 8 or h_px < 8:
        return 1
    (x0, x1), (y0, y1) = view.viewRange()
    return max(1, int(min((x1 - x0) / scale / w_px, (y1 - y0) / scale / h_px)))


def crosshair_pen(colour: str) -> QPen:
    """The crosshair's dashed one-pixel cosmetic pen (a hairline: the cheapest line Qt draws)."""
    pen = QPen(QColor(colour))
    pen.setCosmetic(True)
    pen.setWidthF(1.0)
    pen.setStyle(Qt.PenStyle.DashLine)
    return pen


def show_strided(item: pg.ImageItem, image: np.ndarray, levels, scale: int, stride: int) -> None:
    """Show every ``stride``-th pixel of ``image`` (a layer of grid factor ``scale``) on the HR
    grid; the last partial block (under one screen pixel) is left out."""
    h, w = image.shape[:2]
    if stride > 1:
        h, w = (h // stride) * stride, (w // stride) * stride
        image = np.ascontiguousarray(image[:h:stride, :w:stride])
    item.setImage(image, levels=levels, autoLevels=False)
    item.setRect(QRectF(0.0, 0.0, float(w * scale), float(h * scale)))


class CrossLine(QGraphicsLineItem):
    """One line of a crosshair over an image: vertical (at x = ``value()``) or horizontal (at y),
    spanning the image (``set_span``). A click moves it with ``setValue`` (one ``setPos``, done
    in C++): the view repaints only the two thin strips it leaves and enters, unlike a
    pyqtgraph InfiniteLine, whose Python bounding-rect and position code runs for every line in
    every panel at each click."""

    def __init__(self, vertical: bool, pen: QPen, span: float = 1.0):
        super().__init__()
        self.vertical = vertical
        self.setPen(pen)
        self._value = 0.0
        self.set_span(span)

    def set_span(self, length: float) -> None:
        length = float(length)
        self.setLine(0.0, 0.0, 0.0, length) if self.vertical else self.setLine(0.0, 0.0, length, 0.0)

    def setValue(self, value: float) -> None:  # noqa: N802 (InfiniteLine's name)
        self._value = float(value)
        self.setPos(self._value, 0.0) if self.vertical else self.setPos(0.0, self._value)

    def value(self) -> float:
        return self._value


def place_crosshair(vline: CrossLine, hline: CrossLine, pixel: tuple[int, int] | None) -> None:
    """Show the two lines through the centre of HR pixel (row, col), or hide them (None)."""
    for item in (vline, hline):
        item.setVisible(pixel is not None)
    if pixel is not None:
        vline.setValue(pixel[1] + 0.5)
        hline.setValue(pixel[0] + 0.5)


class ElidedLabel(QLabel):
    """A one-line label that shortens its text with '…' instead of being clipped or widening the
    panel.

    The text is painted here, not handed to QLabel: ``QLabel.setText`` asks the whole window for a
    new layout at every change (the main window's layout pass was a few ms of every click, for
    the legend's and the status bar's labels), while a new text here only repaints the label.
    Style-sheet colours, padding and frames still apply: they are the QLabel's. ``text()`` is the
    text on screen (elided), ``full_text()`` the whole one."""

    def __init__(self, text: str = "", parent: QWidget | None = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle):
        super().__init__(parent)
        self._full = ""
        self._shown = ""
        self._mode = mode
        super().setText(" ")  # a constant QLabel text: one line's height, never a new layout
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(20)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        text = str(text)
        if text != self._full:
            self._full = text
            self.setAccessibleName(text)  # (screen readers: QLabel's own text is a space)
            self._elide()

    def full_text(self) -> str:
        return self._full

    def text(self) -> str:
        """The text on screen (elided when it does not fit)."""
        return self._shown

    def shown_text(self) -> str:
        """The text on screen, for every subclass (StatusLabel.text is the full text)."""
        return self._shown

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming): never QLabel's (see the class)
        self.set_full_text(text)

    def _text_rect(self):
        m = self.margin()
        return self.contentsRect().adjusted(m, m, -m, -m)

    def _elide(self) -> None:
        room = self._text_rect().width() - max(self.indent(), 0)
        shown = self.fontMetrics().elidedText(self._full, self._mode, max(room, 20))
        if shown != self._shown:
            self._shown = shown
            self.update()

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def changeEvent(self, event):  # noqa: N802: a new font (style sheet, zoom) changes the elision
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._elide()

    def paintEvent(self, event):  # noqa: N802
        super().paintEvent(event)  # background and frame of the style sheet (its text is a space)
        if not self._shown:
            return
        painter = QPainter(self)
        rect = self._text_rect()
        indent = max(self.indent(), 0)
        if indent:
            rect.adjust(indent, 0, 0, 0)
        flags = self.alignment().value | Qt.TextFlag.TextSingleLine.value
        self.style().drawItemText(painter, rect, flags, self.palette(), self.isEnabled(), self._shown,
                                  self.foregroundRole())
        painter.end()


class StatusLabel(ElidedLabel):
    """A status-bar label whose width does not follow its text: fixed to ``template``'s width (or
    stretched by its layout without one), longer text elided. ``setText`` / ``text`` take and give
    the full text, as a QLabel's do."""

    def __init__(self, parent: QWidget | None = None, template: str | None = None):
        super().__init__("", parent, Qt.TextElideMode.ElideRight)
        if template is not None:
            self._hint_width = self.fontMetrics().horizontalAdvance(template) + 24  # (+ the style's padding)
            self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        else:
            self._hint_width = 40
            self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self):  # noqa: N802 (Qt naming): constant, whatever the text
        from PyQt6.QtCore import QSize

        return QSize(self._hint_width, super().sizeHint().height())

    def minimumSizeHint(self):  # noqa: N802
        return self.sizeHint()

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        if text != self.full_text():
            self.set_full_text(text)
            self.setToolTip(text if self.fontMetrics().horizontalAdvance(text) > self.width() else "")

    def text(self) -> str:
        return self.full_text()


class PaintTimed:
    """Mixin for a graphics view that notes when it last finished painting (``painted_at``,
    perf_counter seconds): ``python main.py bench`` times band switches and clicks to the paint."""

    painted_at = 0.0

    def paintEvent(self, event):  # noqa: N802 (Qt naming)
        super().paintEvent(event)
        self.painted_at = time.perf_counter()


class _ImageView(PaintTimed, pg.GraphicsView):
    """GraphicsView that reports when the pointer leaves it.

    It repaints the bounding rectangle of what changed rather than the exact region: a moved
    crosshair leaves a cross of thin strips, and Qt draws a scaled image into a non-rectangular
    clip through its generic span path (farmed out to its painting threads for every strip), about
    1.5 ms more per click over the viewer's views than one rectangle with its fast scaling path."""

    left = pyqtSignal()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from PyQt6.QtWidgets import QGraphicsView

        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)

    def leaveEvent(self, event):  # noqa: N802 (Qt naming)
        self.left.emit()
        super().leaveEvent(event)


class _PanelViewBox(pg.ViewBox):
    """ViewBox that tells whether a range change comes from its own resize (aspect lock), which
    must not be propagated to the other panels as if the user had zoomed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resizing = False
        self.drag_handler = None  # set while a drawing tool is active: gets the drag events

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if self.drag_handler is not None and ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.drag_handler(ev)
            return
        super().mouseDragEvent(ev, axis)

    def resizeEvent(self, event):  # noqa: N802
        self.resizing = True
        try:
            super().resizeEvent(event)
        finally:
            self.resizing = False


class PointerMixin:
    """Pointer helpers of a widget with an image ``view`` (a ViewBox on the HR pixel grid) and the
    signals ``hovered(row, col)`` and ``left()``: the panels and the analysis maps."""

    def _scene_to_pixel(self, scene_pos) -> QPointF | None:
        """The view coordinates (x = column, y = row) of a scene position inside the view, else None."""
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        return self.view.mapSceneToView(scene_pos)

    def _on_move(self, scene_pos) -> None:
        point = self._scene_to_pixel(scene_pos)
        if point is None:
            self.left.emit()
        else:
            self.hovered.emit(point.y(), point.x())


NARROW_PANEL_PX = 200
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
        self.close_button = QToolButton(header)
        self.close_button.setObjectName("PanelClose")
        self.close_button.setText("✕")
        self.close_button.setToolTip("Close this layer")
        self.close_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.close_button.clicked.connect(self.close_requested)
        hl.addWidget(self.badge)
        hl.addWidget(self.name_label, 1)
        hl.addWidget(self.info_label)
        hl.addWidget(self.close_button)

        # ---- the image view
        self.graphics = _ImageView(self, background=th.image_bg)
        self.graphics.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        # Dropped files go to the main window, not to the graphics scene.
        self.graphics.setAcceptDrops(False)
        self.graphics.viewport().setAcceptDrops(False)
        self.graphics.left.connect(self.left)
        self.view = _PanelViewBox(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
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
        self._info = info
        self._fit_info()

    def _decimation(self) -> int:
        return display_stride(self.view, self.layer.scale)

    def _show_image(self) -> None:
        self._shown_k = self._decimation()
        show_strided(self.image_item, self._rendered.image, self._levels, self.layer.scale, self._shown_k)

    @property
    def decimation(self) -> int:
        """The stride the picture is shown with now (1: every pixel)."""
        return getattr(self, "_shown_k", 1)

    def _fit_info(self) -> None:
        """The full info ('550 nm · 256×256×31') when there is room, else only its first part,
        so that the layer's name stays readable."""
        info = getattr(self, "_info", "")
        short = info.split("  ·  ")[0] + (f"  ×{self.layer.scale}" if self.layer.scale > 1 else "")
        self.info_label.setText(info if self.width() >= 420 else short)
        self.info_label.setToolTip(info)
        # a narrow panel (many methods): the name before the band (which the band bar shows
        # too) and before the role's full title (the badge's colour and tooltip say it)
        narrow = self.width() < NARROW_PANEL_PX
        self.info_label.setVisible(not narrow)
        badge = SHORT_ROLE_TITLES.get(self.layer.role, self.layer.title) if narrow else self.layer.title
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
        if self.view.resizing or self.view.width() < 8 or self.view.height() < 8:
            return  # layout, not the user: every panel keeps the shared target range itself
        self.range_changed.emit(tuple(view_range[0]), tuple(view_range[1]))

    def set_range(self, x_range, y_range) -> None:
        self.view.setRange(xRange=x_range, yRange=y_range, padding=0.0)

    def show_all(self) -> None:
        self.view.setRange(rect=self.extent, padding=0.0)

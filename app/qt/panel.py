"""One image panel: a titled pyqtgraph ViewBox showing one layer on the scene's HR pixel grid.

A panel is a part of :class:`app.qt.image_grid.ImageGrid`; it does not know the scene. The grid
feeds it images, the crosshair and the footprint, and listens to its clicks and hovers.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPen
from PyQt6.QtWidgets import (QFrame, QGraphicsRectItem, QHBoxLayout, QLabel, QSizePolicy, QToolButton,
                             QVBoxLayout, QWidget)

from app.core.scene import Layer, RenderedImage, ROLE_DESCRIPTIONS
from app.qt import colormaps, theme


class ElidedLabel(QLabel):
    """A label that shortens its text with '…' instead of being clipped or widening the panel."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(20)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        metrics = self.fontMetrics()
        super().setText(metrics.elidedText(self._full, Qt.TextElideMode.ElideMiddle, max(self.width(), 20)))

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._elide()


class _ImageView(pg.GraphicsView):
    """GraphicsView that reports when the pointer leaves it."""

    left = pyqtSignal()

    def leaveEvent(self, event):  # noqa: N802 (Qt naming)
        self.left.emit()
        super().leaveEvent(event)


class _PanelViewBox(pg.ViewBox):
    """ViewBox that tells whether a range change comes from its own resize (aspect lock), which
    must not be propagated to the other panels as if the user had zoomed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resizing = False

    def resizeEvent(self, event):  # noqa: N802
        self.resizing = True
        try:
            super().resizeEvent(event)
        finally:
            self.resizing = False


class ImagePanel(QFrame):
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
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        h, w = layer.cube.shape[:2]
        s = layer.scale
        self.extent = QRectF(0.0, 0.0, float(w * s), float(h * s))
        self.image_item.setRect(self.extent)

        cross_pen = pg.mkPen(QColor(th.crosshair), width=1, style=Qt.PenStyle.DashLine)
        cross_pen.setCosmetic(True)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=cross_pen)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=cross_pen)
        self.pixel_box = QGraphicsRectItem()
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
        self.image_item.setImage(image, levels=levels, autoLevels=False)
        self.image_item.setRect(self.extent)
        self._info = info
        self._fit_info()

    def _fit_info(self) -> None:
        """The full info ('550 nm · 256×256×31') when there is room, else only its first part,
        so that the layer's name stays readable."""
        info = getattr(self, "_info", "")
        short = info.split("  ·  ")[0] + (f"  ×{self.layer.scale}" if self.layer.scale > 1 else "")
        self.info_label.setText(info if self.width() >= 420 else short)
        self.info_label.setToolTip(info)

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
        visible = pixel is not None
        for item in (self.vline, self.hline, self.pixel_box):
            item.setVisible(visible)
        if pixel is None:
            return
        row, col = pixel
        self.vline.setPos(col + 0.5)
        self.hline.setPos(row + 0.5)
        self.pixel_box.setRect(QRectF(col, row, 1.0, 1.0))

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

    # ------------------------------------------------------------------ mouse / range
    def _scene_to_pixel(self, scene_pos) -> QPointF | None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        return self.view.mapSceneToView(scene_pos)

    def _on_click(self, event):
        if event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        point = self._scene_to_pixel(event.scenePos())
        if point is not None and self.extent.contains(point):
            event.accept()
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.pin_clicked.emit(point.y(), point.x())
            else:
                self.clicked.emit(point.y(), point.x())

    def _on_move(self, scene_pos):
        point = self._scene_to_pixel(scene_pos)
        if point is None:
            self.left.emit()
        else:
            self.hovered.emit(point.y(), point.x())

    def _on_range_changed(self, _view, view_range, *_):
        if self.view.resizing or self.view.width() < 8 or self.view.height() < 8:
            return  # layout, not the user: every panel keeps the shared target range itself
        self.range_changed.emit(tuple(view_range[0]), tuple(view_range[1]))

    def set_range(self, x_range, y_range) -> None:
        self.view.setRange(xRange=x_range, yRange=y_range, padding=0.0)

    def show_all(self) -> None:
        self.view.setRange(rect=self.extent, padding=0.0)

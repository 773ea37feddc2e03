"""A/B comparison of any two panels: swipe (a draggable divider: A on the left, B on the right) or
flicker (A and B alternate), with the crosshair, the shared zoom and the panels' own rendering
(band, mode, shared contrast, colormap) kept. The pictures are the scene's rendered frames (the
ones the panels show), so what is compared is exactly what the panels show; the choice of A, B,
mode and divider lives in the scene (``scene.ab``), which sessions save."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (QButtonGroup, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout,
                             QWidget)

from app.core.state.scene import Scene
from app.qt.fast_image import FastImageItem
from app.qt import colormaps, theme
from app.qt.binding import subscribe
from app.qt.graphics import CrossLine, ImageView, PanelViewBox, crosshair_pen, place_crosshair

FLICKER_MS = 600


class ABCompareView(QWidget):
    """Swipe / flicker between the layers ``scene.ab.a_uid`` and ``scene.ab.b_uid``.

    ``mode`` is 'swipe' or 'flicker'; ``divider_x`` the swipe position in HR pixels."""

    mode_changed = pyqtSignal(str)

    def __init__(self, scene: Scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        self.showing_b = False  # flicker phase
        self._applying_range = False
        self._shown_mode: str | None = None
        th = theme.current()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(4)
        bar = QHBoxLayout()
        self.a_combo = QComboBox(self)
        self.b_combo = QComboBox(self)
        self.a_combo.setToolTip("Left of the divider (swipe), first image (flicker)")
        self.b_combo.setToolTip("Right of the divider (swipe), second image (flicker)")
        self.swap_button = QToolButton(self)
        self.swap_button.setText("⇄")
        self.swap_button.setToolTip("Swap A and B (X)")
        self.swipe_button = QToolButton(self)
        self.swipe_button.setText("Swipe")
        self.flicker_button = QToolButton(self)
        self.flicker_button.setText("Flicker")
        group = QButtonGroup(self)
        for b in (self.swipe_button, self.flicker_button):
            b.setCheckable(True)
            group.addButton(b)
        self.swipe_button.setChecked(True)
        self.state_label = QLabel("", self)
        self.state_label.setObjectName("DimLabel")
        self.state_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar.addWidget(QLabel("A", self))
        bar.addWidget(self.a_combo, 1)
        bar.addWidget(self.swap_button)
        bar.addWidget(QLabel("B", self))
        bar.addWidget(self.b_combo, 1)
        bar.addWidget(self.swipe_button)
        bar.addWidget(self.flicker_button)
        layout.addLayout(bar)

        self.graphics = ImageView(self, background=th.image_bg)
        self.graphics.setAcceptDrops(False)
        self.graphics.viewport().setAcceptDrops(False)
        self.view = PanelViewBox(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self.graphics.setCentralItem(self.view)
        self.image_a = FastImageItem(axisOrder="row-major")
        self.image_b = FastImageItem(axisOrder="row-major")
        self.view.addItem(self.image_a)
        self.view.addItem(self.image_b)
        divider_pen = pg.mkPen(QColor("#ffffff"), width=2)
        self.divider = pg.InfiniteLine(angle=90, movable=True, pen=divider_pen,
                                       hoverPen=pg.mkPen(QColor(th.crosshair), width=3),
                                       label="A ◂ ▸ B", labelOpts=dict(position=0.04, color="#ffffff",
                                                                     fill=pg.mkBrush(0, 0, 0, 150)))
        self.divider.setZValue(20)
        cross = crosshair_pen(th.crosshair)
        self.vline = CrossLine(True, cross)
        self.hline = CrossLine(False, cross)
        for item in (self.vline, self.hline):
            item.setZValue(10)
            item.setVisible(False)
            self.view.addItem(item, ignoreBounds=True)
        self.view.addItem(self.divider, ignoreBounds=True)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.state_label)

        self.timer = QTimer(self)
        self.timer.setInterval(FLICKER_MS)
        self.timer.timeout.connect(self.toggle_flicker)

        self.a_combo.currentIndexChanged.connect(lambda: self._pick("a"))
        self.b_combo.currentIndexChanged.connect(lambda: self._pick("b"))
        self.swap_button.clicked.connect(self.swap)
        self.swipe_button.clicked.connect(lambda: self.set_mode("swipe"))
        self.flicker_button.clicked.connect(lambda: self.set_mode("flicker"))
        self.divider.sigPositionChanged.connect(lambda *_: self._on_divider_moved())
        self.graphics.scene().sigMouseClicked.connect(self._on_click)
        self.graphics.scene().sigMouseMoved.connect(self._on_move)
        self.graphics.left.connect(lambda: self.scene.set_hover(None))
        self.view.sigRangeChanged.connect(self._on_range)
        ev = scene.events
        subscribe(self, ev.rendered, lambda *_: self._update_images())
        subscribe(self, ev.ab, lambda *_: self._on_choice())
        subscribe(self, ev.layers, lambda *_: self._on_layers())
        subscribe(self, ev.pixel, self._on_pixel)
        subscribe(self, ev.view_range, self._on_view_range)
        self._on_layers()

    # ------------------------------------------------------------------ choosing A and B
    @property
    def mode(self) -> str:
        return self.scene.ab.mode

    @property
    def a_uid(self) -> int | None:
        return self.scene.ab.a_uid

    @property
    def b_uid(self) -> int | None:
        return self.scene.ab.b_uid

    def _on_layers(self) -> None:
        layers = self.scene.layers
        for combo in (self.a_combo, self.b_combo):
            combo.blockSignals(True)
            combo.clear()
            for layer in layers:
                combo.addItem(layer.label, layer.uid)
            combo.blockSignals(False)
        shape = self.scene.hr_shape
        if shape is not None:
            h, w = shape
            self.divider.setBounds((0, w))
            if self.scene.view_range is None:
                self.view.setRange(rect=QRectF(0, 0, w, h), padding=0.0)
        self._on_choice()

    def _on_choice(self) -> None:
        """Show the scene's choice: combos, divider, mode, pictures."""
        ab = self.scene.ab
        for combo, uid in ((self.a_combo, ab.a_uid), (self.b_combo, ab.b_uid)):
            combo.blockSignals(True)
            combo.setCurrentIndex(combo.findData(uid))
            combo.blockSignals(False)
        if ab.divider_x is not None and self.divider.value() != ab.divider_x:
            # not blocked: the divider's label follows its line through that signal, and the
            # write-back it causes is the value the scene already has (no event)
            self.divider.setValue(ab.divider_x)
        if ab.mode != self._shown_mode:
            self._show_mode(ab.mode)
        self._update_images()

    def _pick(self, which: str) -> None:
        combo = self.a_combo if which == "a" else self.b_combo
        uid = combo.currentData()
        if which == "a":
            self.scene.set_ab(a_uid=uid)
        else:
            self.scene.set_ab(b_uid=uid, b_chosen=True)

    def _on_divider_moved(self) -> None:
        self.scene.set_ab(divider_x=float(self.divider.value()))

    def set_pair(self, a_uid: int, b_uid: int) -> None:
        self.scene.set_ab(a_uid=int(a_uid), b_uid=int(b_uid), b_chosen=True)

    def swap(self) -> None:
        if self.a_uid is not None and self.b_uid is not None:
            self.set_pair(self.b_uid, self.a_uid)

    def set_mode(self, mode: str) -> None:
        if mode not in ("swipe", "flicker"):
            raise ValueError(f"unknown A/B mode {mode!r}; expected 'swipe' or 'flicker'")
        self._shown_mode = None  # asked again: the flicker starts over from A
        self.scene.set_ab(mode=mode)
        if self._shown_mode is None:
            self._show_mode(mode)
            self._update_images()

    def _show_mode(self, mode: str) -> None:
        self._shown_mode = mode
        (self.swipe_button if mode == "swipe" else self.flicker_button).setChecked(True)
        self.divider.setVisible(mode == "swipe")
        self.showing_b = False
        if mode == "flicker":
            self.timer.start()
        else:
            self.timer.stop()
        self.mode_changed.emit(mode)

    def toggle_flicker(self) -> None:
        self.showing_b = not self.showing_b
        self._update_images()

    def set_divider(self, x: float) -> None:
        self.scene.set_ab(divider_x=float(x))

    @property
    def divider_x(self) -> float:
        return float(self.divider.value())

    # ------------------------------------------------------------------ drawing
    def _rendered(self, uid):
        if uid is None:
            return None, None
        try:
            layer = self.scene.layer(uid)
        except KeyError:
            return None, None
        return layer, self.scene.rendered.get(uid)

    def _set_image(self, item: pg.ImageItem, layer, rendered, first_col: int = 0) -> bool:
        """Show ``rendered`` from layer column ``first_col`` on; False when nothing is left."""
        image = rendered.image
        step = max(int(getattr(rendered, "step", 1)), 1)  # a memory-mapped layer's picture: every step-th pixel
        first_col = -(-first_col // step)
        if first_col >= image.shape[1]:
            item.setVisible(False)
            return False
        if first_col > 0:
            image = image[:, first_col:]
        levels = rendered.levels
        if rendered.is_rgb:
            item.setLookupTable(None)
            levels = np.asarray(levels, dtype=np.float64)
            if levels.ndim == 1:
                levels = np.tile(levels, (3, 1))
        else:
            item.setColorMap(colormaps.colormap(self.scene.colormap))
        item.setImage(np.ascontiguousarray(image), levels=levels, autoLevels=False)
        s = layer.scale * step
        item.setRect(QRectF(first_col * s, 0.0, image.shape[1] * s, image.shape[0] * s))
        item.setVisible(True)
        return True

    def _update_images(self) -> None:
        if not self.isVisible():
            return  # a hidden comparison costs nothing; showEvent brings it up to date
        layer_a, ra = self._rendered(self.a_uid)
        layer_b, rb = self._rendered(self.b_uid)
        if ra is None:
            self.image_a.setVisible(False)
            self.image_b.setVisible(False)
            self.state_label.setText("Open two layers to compare them")
            return
        if self.mode == "flicker":
            shown_layer, shown = (layer_b, rb) if self.showing_b and rb is not None else (layer_a, ra)
            self._set_image(self.image_a, shown_layer, shown)
            self.image_b.setVisible(False)
            self.state_label.setText(f"Flicker: showing {'B' if shown_layer is layer_b else 'A'} · "
                                     f"{shown_layer.label}  (every {FLICKER_MS} ms; W: swipe)")
            return
        self._set_image(self.image_a, layer_a, ra)
        if rb is None:
            self.image_b.setVisible(False)
            self.state_label.setText(f"A · {layer_a.label}; choose B")
            return
        col = max(int(math.ceil(self.divider_x / layer_b.scale - 1e-9)), 0)
        self._set_image(self.image_b, layer_b, rb, col)
        self.state_label.setText(f"Swipe: A · {layer_a.label}  ◂ {self.divider_x:.0f} px ▸  B · {layer_b.label}"
                                 "  (drag the divider; F: flicker, X: swap)")

    def shown_uid_at(self, col: float) -> int | None:
        """The layer shown at HR column ``col`` (swipe: A left of the divider, B right)."""
        if self.mode == "flicker":
            return self.b_uid if self.showing_b else self.a_uid
        return self.a_uid if col < self.divider_x else self.b_uid

    # ------------------------------------------------------------------ crosshair, zoom, mouse
    def _on_pixel(self, pixel) -> None:
        if pixel is not None:
            h, w = self.scene.hr_shape or (1, 1)
            self.vline.set_span(h)
            self.hline.set_span(w)
        place_crosshair(self.vline, self.hline, pixel)

    def _on_view_range(self, view_range, source) -> None:
        if source is self:
            return
        self._applying_range = True
        try:
            if view_range is None:
                shape = self.scene.hr_shape
                if shape is not None:
                    self.view.setRange(rect=QRectF(0, 0, shape[1], shape[0]), padding=0.0)
            else:
                self.view.setRange(xRange=view_range[0], yRange=view_range[1], padding=0.0)
        finally:
            self._applying_range = False

    def _on_range(self, _view, view_range, *_):
        if self._applying_range or self.view.resizing or not self.isVisible() or self.view.width() < 8:
            return
        try:
            self.scene.set_view_range(tuple(view_range[0]), tuple(view_range[1]), source=self)
        except ValueError:
            pass

    def _point(self, scene_pos):
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        return self.view.mapSceneToView(scene_pos)

    def _on_click(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.double() or event.isAccepted():
            return
        p = self._point(event.scenePos())
        shape = self.scene.hr_shape
        if p is not None and shape is not None and 0 <= p.x() < shape[1] and 0 <= p.y() < shape[0]:
            self.scene.set_pixel(p.y(), p.x())

    def _on_move(self, scene_pos) -> None:
        p = self._point(scene_pos)
        uid = None if p is None else self.shown_uid_at(p.x())
        if uid is None:
            self.scene.set_hover(None)
        else:
            self.scene.set_hover(uid, p.y(), p.x())

    def hideEvent(self, event):  # noqa: N802
        self.timer.stop()
        super().hideEvent(event)

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        if self.mode == "flicker":
            self.timer.start()
        shape = self.scene.hr_shape
        if shape is not None:
            vr = self.scene.view_range
            self._applying_range = True
            try:
                if vr is None:
                    self.view.setRange(rect=QRectF(0, 0, shape[1], shape[0]), padding=0.0)
                else:
                    self.view.setRange(xRange=vr[0], yRange=vr[1], padding=0.0)
            finally:
                self._applying_range = False
        self._update_images()

"""Qt pieces that several views share: the graphics view and view box of an image on the HR
pixel grid, crosshair lines, strided display of big pictures, pointer helpers and labels that
elide instead of re-laying out the window. The image panels, the analysis maps and the A/B
comparison are built from them; none of them knows the scene.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QKeyEvent, QPainter, QPen
from PyQt6.QtWidgets import (QComboBox, QDoubleSpinBox, QGraphicsLineItem, QLabel, QSizePolicy, QToolTip,
                             QWidget)

from app.qt import colormaps


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


class ImageView(PaintTimed, pg.GraphicsView):
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


class PanelViewBox(pg.ViewBox):
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


_PENS: dict[tuple, object] = {}


def curve_pen(colour: str, width: float = 1.0, style=Qt.PenStyle.SolidLine):
    """A cached cosmetic pen (``style`` a Qt.PenStyle or a dash pattern). Width 1 is a hairline,
    which Qt's raster engine strokes about ten times faster than a wider antialiased line (and
    dashes and dots about fifty times faster): every curve but the reference's is a hairline, so
    that a click repaints within a frame."""
    key = (colour, width, style)
    pen = _PENS.get(key)
    if pen is None:
        if isinstance(style, tuple):
            pen = pg.mkPen(QColor(colour), width=width)
            pen.setDashPattern(list(style))
        else:
            pen = pg.mkPen(QColor(colour), width=width, style=style)
        pen.setCosmetic(True)
        _PENS[key] = pen
    return pen


def best_columns(n: int, width: float, height: float, image_aspect: float = 1.0,
                 header_px: float = 26.0) -> int:
    """Number of grid columns that shows ``n`` panels of aspect ``image_aspect`` (w/h) largest
    in a ``width`` x ``height`` area."""
    if n <= 1:
        return 1
    best, best_scale = 1, -1.0
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        cell_w = width / cols
        cell_h = max(height / rows - header_px, 1.0)
        scale = min(cell_w / image_aspect, cell_h)
        if scale > best_scale + 1e-9:
            best, best_scale = cols, scale
    return best


class LegendTable(QWidget):
    """The legend under the plot: one entry per source (a layer, a pinned pixel's line style, the
    ROI, the residuals), a coloured glyph and a plain-text label, painted by this one widget and
    packed in as many columns as the width allows, so that many methods do not squeeze the plot.
    Clicking a source's entry hides or shows its curves (``toggled(key)``).

    A click changes every label (they name the pixel); as label widgets each of them repainted on
    its own and asked the window for a new layout, a few ms of every click. Each entry is elided
    to its column (the whole text in the tooltip); the height changes only with the number of
    entries or columns, so a click never resizes the plot."""

    toggled = pyqtSignal(object)

    GLYPH_GAP = 6
    COLUMN_MIN = 190  # px: a column fits 'GT · name (r 123, c 456)' at the default font

    def __init__(self, parent=None):
        super().__init__(parent)
        self._shown: list[tuple] = []
        self._hidden: set = set()
        self._elided: dict[tuple[str, int], str] = {}  # (text, room) -> what fits (cleared with the font)
        self._glyph_w: int | None = None
        self._lines_laid_out = 0
        self.elide = Qt.TextElideMode.ElideMiddle
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def _line(self) -> int:
        return self.fontMetrics().height()

    def columns(self, width: int | None = None) -> int:
        width = self.width() if width is None else width
        return max(1, min(len(self._shown), max(width, 1) // self.COLUMN_MIN)) if self._shown else 1

    def lines(self, width: int | None = None) -> int:
        return -(-len(self._shown) // self.columns(width)) if self._shown else 0

    def sizeHint(self):  # noqa: N802 (Qt naming)
        return QSize(200, self._line() * self.lines())

    def minimumSizeHint(self):  # noqa: N802
        return QSize(20, self._line() * self.lines())

    def resizeEvent(self, event):  # noqa: N802: more or fewer columns, a new height
        super().resizeEvent(event)
        if self.lines() != self._lines_laid_out:
            self._lines_laid_out = self.lines()
            self.updateGeometry()

    def set_rows(self, rows: list[tuple], hidden=()) -> None:
        """(colour, glyph, label[, key, style]) per entry (see :func:`_legend_row`); the entries
        whose key is in ``hidden`` are drawn dimmed."""
        rows = [tuple(r) + (None,) * (5 - len(r)) for r in rows]
        hidden = set(hidden)
        if rows == self._shown and hidden == self._hidden:
            return
        resize = len(rows) != len(self._shown)
        if [r[1] for r in rows] != [r[1] for r in self._shown]:
            self._glyph_w = None
        self._shown = rows
        self._hidden = hidden
        if resize:
            self._lines_laid_out = self.lines()
            self.updateGeometry()
        self.update()

    def text(self) -> str:
        """The labels, one per line (tests, copy)."""
        return "\n".join(row[2] for row in self._shown)

    def _glyph_width(self) -> int:
        if self._glyph_w is None:
            fm = self.fontMetrics()
            self._glyph_w = max((fm.horizontalAdvance(row[1]) for row in self._shown), default=0)
            self._glyph_w = max(self._glyph_w, fm.horizontalAdvance("━━━"))
        return self._glyph_w

    def _fit(self, text: str, room: int) -> str:
        key = (text, room)
        shown = self._elided.get(key)
        if shown is None:
            if len(self._elided) > 512:
                self._elided.clear()
            shown = self._elided[key] = self.fontMetrics().elidedText(text, self.elide, room)
        return shown

    def changeEvent(self, event):  # noqa: N802: a new font or style: new text widths
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._elided.clear()
            self._glyph_w = None
        super().changeEvent(event)

    def _cell(self, i: int) -> QRectF:
        """Where entry ``i`` is painted (column-major: entries read down, then across)."""
        lines = max(self.lines(), 1)
        width = self.width() / self.columns()
        return QRectF((i // lines) * width, (i % lines) * self._line(), width, self._line())

    def _row_at(self, pos) -> int | None:
        for i in range(len(self._shown)):
            if self._cell(i).contains(QPointF(pos)):
                return i
        return None

    def row_rect(self, i: int) -> QRectF:
        """Entry ``i``'s rectangle in this widget (tests)."""
        return self._cell(i)

    def mousePressEvent(self, event):  # noqa: N802
        i = self._row_at(event.position().toPoint())
        if i is not None and self._shown[i][3] is not None and event.button() == Qt.MouseButton.LeftButton:
            self.toggled.emit(self._shown[i][3])
            event.accept()
            return
        super().mousePressEvent(event)

    def event(self, event):  # the tooltip of the entry under the pointer: its whole text when elided
        if event.type() == QEvent.Type.ToolTip:
            i = self._row_at(event.pos())
            if i is not None:
                text = self._shown[i][2]
                room = int(self._cell(i).width()) - self._glyph_width() - 2 * self.GLYPH_GAP
                tip = text if self.fontMetrics().horizontalAdvance(text) > room else ""
                if self._shown[i][3] is not None:
                    tip = (tip + "\n" if tip else "") + "Click to hide or show these curves"
                if tip:
                    QToolTip.showText(event.globalPos(), tip, self)
                    return True
            QToolTip.hideText()
            event.ignore()
            return True
        return super().event(event)

    def paintEvent(self, event):  # noqa: N802
        if not self._shown:
            return
        painter = QPainter(self)
        fm = self.fontMetrics()
        glyph_w = self._glyph_width()
        text_colour = self.palette().color(self.foregroundRole())
        dim = QColor(text_colour)
        dim.setAlpha(90)
        exposed = QRectF(event.rect())
        for i, (colour, glyph, text, key, style) in enumerate(self._shown):
            cell = self._cell(i)
            if not cell.intersects(exposed):
                continue
            hidden = key is not None and key in self._hidden
            base = int(cell.top()) + fm.ascent()
            x0 = int(cell.left())
            glyph_colour = QColor(colour)
            if hidden:
                glyph_colour.setAlpha(70)
            if style is not None:  # the pin's own line style
                pen = QPen(curve_pen(colour, 1.5, style))
                pen.setColor(glyph_colour)
                painter.setPen(pen)
                y = int(cell.center().y())
                painter.drawLine(x0 + 1, y, x0 + glyph_w - 1, y)
            else:
                painter.setPen(glyph_colour)
                painter.drawText(x0, base, glyph)
            painter.setPen(dim if hidden else text_colour)
            room = max(int(cell.width()) - glyph_w - 2 * self.GLYPH_GAP, 20)
            painter.drawText(x0 + glyph_w + self.GLYPH_GAP, base, self._fit(text, room))
        painter.end()


# ------------------------------------------------------------------ shared editors and the colorbar
_NAV_KEYS = {Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown}


class _KeepsArrowKeys:
    """Mixin for editors: Up/Down/PageUp/PageDown act on the focused editor, not on the window's
    band shortcuts."""

    def event(self, event):
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent) \
                and event.key() in _NAV_KEYS:
            event.accept()
            return True
        return super().event(event)


class SpinBox(_KeepsArrowKeys, QDoubleSpinBox):
    pass


class ComboBox(_KeepsArrowKeys, QComboBox):
    pass



class LevelsBar(QWidget):
    """A horizontal colorbar: the colormap (or a grey ramp for colour modes) with the levels the
    reference panel is shown with, so the user can read values off the colours."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(34)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._cmap = "gray"
        self._low: float | None = None
        self._high: float | None = None
        self._caption = ""

    def set_levels(self, cmap: str, low: float | None, high: float | None, caption: str = "") -> None:
        self._cmap, self._low, self._high, self._caption = cmap, low, high, caption
        self.setToolTip(f"{caption}: {self.text()}" if self.text() else caption)
        self.update()

    def text(self) -> str:
        if self._low is None or self._high is None:
            return ""
        return f"{self._low:.4g} – {self._high:.4g}"  # more digits than painted (tooltip, tests)

    def paintEvent(self, event):  # noqa: N802
        from PyQt6.QtGui import QColor, QLinearGradient, QPainter

        painter = QPainter(self)
        rect = self.rect().adjusted(1, 1, -1, -17)
        gradient = QLinearGradient(rect.left(), 0, rect.right(), 0)
        lut = colormaps.lookup_table(self._cmap, 16)
        for i, (r, g, b) in enumerate(lut):
            gradient.setColorAt(i / (len(lut) - 1), QColor(int(r), int(g), int(b)))
        painter.fillRect(rect, gradient)
        painter.setPen(self.palette().mid().color())
        painter.drawRect(rect)
        y = rect.bottom() + 14
        if self._low is not None and self._high is not None:
            painter.setPen(self.palette().windowText().color())
            painter.drawText(rect.left(), y, f"{self._low:.3g}")
            right = f"{self._high:.3g}"
            width = painter.fontMetrics().horizontalAdvance(right)
            painter.drawText(rect.right() - width, y, right)
        if self._caption:
            cap_w = painter.fontMetrics().horizontalAdvance(self._caption)
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(rect.center().x() - cap_w // 2, y, self._caption)
        painter.end()

"""Spectra at the clicked pixel: one curve per layer against wavelength, with a band marker."""
from __future__ import annotations


import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QGuiApplication, QPen
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from app.core.scene import Scene, SpectrumSample
from app.qt import theme
from app.qt.binding import subscribe
from app.qt.panel import ElidedLabel


def _label_fill() -> QColor:
    fill = QColor(theme.current().plot_bg)
    fill.setAlpha(200)
    return fill


LEGEND_GLYPHS = {"gt": "━━━", "lr": "╍●╍", "guide": "&nbsp;▲&nbsp;", "recon": "━━━"}


def legend_colour(sample: SpectrumSample, recon_index: int) -> str:
    if sample.layer.role == "recon":
        return theme.RECON_CURVE_COLOURS[recon_index % len(theme.RECON_CURVE_COLOURS)]
    return theme.curve_colour(sample.layer.role)


def _legend_row(colour: str, glyph: str, label: str) -> tuple[str, str, str]:
    return colour, glyph, label


class LegendTable(QWidget):
    """The legend under the plot: one row per curve, a coloured glyph and a plain-text label.
    Rows are reused and only changed labels are set (plain text is cheap to repaint; a rich-text
    table re-laid out at every click cost a third of the click-to-spectra time). Each label is
    one line, elided when too long (full text in its tooltip): a click never changes the
    legend's height, so the plot above it is never resized (and fully repainted) by a click."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from PyQt6.QtWidgets import QGridLayout

        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(6)
        self._grid.setVerticalSpacing(0)
        self._grid.setColumnStretch(1, 1)
        self._rows: list[tuple[QLabel, QLabel]] = []
        self._shown: list[tuple[str, str, str]] = []

    def set_rows(self, rows: list[tuple[str, str, str]]) -> None:
        """(colour, glyph, label) per row."""
        while len(self._rows) < len(rows):
            glyph, label = QLabel(self), ElidedLabel("", self, Qt.TextElideMode.ElideMiddle)
            glyph.setTextFormat(Qt.TextFormat.RichText)
            label.setTextFormat(Qt.TextFormat.PlainText)
            r = len(self._rows)
            self._grid.addWidget(glyph, r, 0)
            self._grid.addWidget(label, r, 1)
            self._rows.append((glyph, label))
        for i, (glyph, label) in enumerate(self._rows):
            if i >= len(rows):
                if not glyph.isHidden():
                    glyph.hide()
                    label.hide()
                continue
            colour, mark, text = rows[i]
            old = self._shown[i] if i < len(self._shown) else None
            if old is None or old[:2] != (colour, mark):
                glyph.setText(f"<span style='color:{colour}'>{mark}</span>")
            if old is None or old[2] != text:
                label.set_full_text(text)
                label.setToolTip(text)
            if glyph.isHidden():
                glyph.show()
                label.show()
        self._shown = list(rows)

    def text(self) -> str:
        """The labels, one per line (tests, copy)."""
        return "\n".join(text for _, _, text in self._shown)


class CachedAxis(pg.AxisItem):
    """An AxisItem that keeps the pictures of its last ranges. Autoscaled spectra come back to the
    same rounded ranges again and again while the user clicks around, and making a new axis picture
    (tick values, labels, text metrics, in Python) is the single largest part of a click's redraw;
    a picture already made for this range, size and style is replayed instead."""

    CACHE_SIZE = 48

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from collections import OrderedDict

        self._pictures: OrderedDict = OrderedDict()

    def _picture_key(self):
        rect = self.boundingRect()
        return (tuple(float(v) for v in self.range), rect.x(), rect.y(), rect.width(), rect.height(),
                self.labelText, self.labelUnits, self.labelUnitPrefix, self.logMode, self.autoSIPrefixScale,
                self.pen().color().rgba(), self.textPen().color().rgba(), repr(sorted(self.style.items(), key=str)),
                self._tickLevels is not None, self._tickSpacing)

    def paint(self, p, opt, widget):
        key = None
        if self.picture is None:
            key = self._picture_key()
            cached = self._pictures.get(key)
            if cached is not None:
                self._pictures.move_to_end(key)
                self.picture = cached
        super().paint(p, opt, widget)
        if key is not None and key not in self._pictures and self.picture is not None:
            self._pictures[key] = self.picture
            while len(self._pictures) > self.CACHE_SIZE:
                self._pictures.popitem(last=False)


_PENS: dict[tuple, object] = {}


class MarkedCurve(pg.GraphicsObject):
    """A polyline (optional) with a marker at every point, in one light item.

    pyqtgraph's PlotDataItem draws markers through a ScatterPlotItem whose per-point records cost
    about two milliseconds per update; a click updates the LR and guide curves, so this item keeps
    only the arrays and draws the markers in device coordinates (fixed pixel size at any zoom).
    It has the curve API the view uses: ``setData(x, y, **style)``, ``xData``, ``yData``."""

    def __init__(self, x=None, y=None, **style):
        super().__init__()
        self.xData = np.zeros(0)
        self.yData = np.zeros(0)
        self._bounds = None
        self._style = {}
        self.setData([] if x is None else x, [] if y is None else y, **style)

    def setData(self, x, y, **style) -> None:  # noqa: N802 (pyqtgraph naming)
        if style:
            self._style = {
                "pen": style.get("pen"), "symbol": style.get("symbol", "o"),
                "size": float(style.get("symbolSize", 8)),
                "brush": pg.mkBrush(style["symbolBrush"]) if style.get("symbolBrush") is not None else None,
                "symbol_pen": style.get("symbolPen"),
            }
        self.prepareGeometryChange()
        self.xData = np.asarray(x, dtype=np.float64)
        self.yData = np.asarray(y, dtype=np.float64)
        finite = np.isfinite(self.xData) & np.isfinite(self.yData)
        if finite.any():
            xs, ys = self.xData[finite], self.yData[finite]
            self._bounds = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        else:
            self._bounds = None
        self.update()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N802, N803 (pyqtgraph API)
        if self._bounds is None:
            return None, None
        return (self._bounds[0], self._bounds[2]) if ax == 0 else (self._bounds[1], self._bounds[3])

    def boundingRect(self):  # noqa: N802 (Qt naming)
        from PyQt6.QtCore import QRectF

        if self._bounds is None:
            return QRectF()
        x0, y0, x1, y1 = self._bounds
        px, py = self.pixelVectors()
        # the markers' half size (plus the outline) in data units, on both sides
        half = 0.5 * self._style.get("size", 8) + 2
        dx = half * (abs(px.x()) + abs(py.x())) if px is not None else 0.0
        dy = half * (abs(px.y()) + abs(py.y())) if px is not None else 0.0
        return QRectF(x0 - dx, y0 - dy, (x1 - x0) + 2 * dx, (y1 - y0) + 2 * dy)

    def viewTransformChanged(self):  # noqa: N802 (pyqtgraph hook)
        self.prepareGeometryChange()

    def paint(self, painter, *args) -> None:
        from PyQt6.QtCore import QPointF, QRectF
        from PyQt6.QtGui import QPolygonF

        finite = np.isfinite(self.xData) & np.isfinite(self.yData)
        if not finite.any():
            return
        tr = painter.transform()
        pts = [tr.map(QPointF(float(x), float(y))) for x, y in zip(self.xData[finite], self.yData[finite])]
        painter.save()
        painter.resetTransform()
        st = self._style
        if st.get("pen") is not None and len(pts) > 1:
            painter.setPen(st["pen"])
            painter.drawPolyline(QPolygonF(pts))
        painter.setRenderHint(painter.RenderHint.Antialiasing, True)
        painter.setPen(st["symbol_pen"] if st.get("symbol_pen") is not None else Qt.PenStyle.NoPen)
        painter.setBrush(st["brush"] if st.get("brush") is not None else Qt.BrushStyle.NoBrush)
        r = 0.5 * st.get("size", 8)
        shape = st.get("symbol", "o")
        for p in pts:
            if shape == "t1":  # triangle pointing up
                painter.drawPolygon(QPolygonF([QPointF(p.x() - r, p.y() + 0.8 * r), QPointF(p.x() + r, p.y() + 0.8 * r),
                                               QPointF(p.x(), p.y() - r)]))
            elif shape == "s":
                painter.drawRect(QRectF(p.x() - r, p.y() - r, 2 * r, 2 * r))
            else:
                painter.drawEllipse(p, r, r)
        painter.restore()


def curve_pen(colour: str, width: float = 1.0, style: Qt.PenStyle = Qt.PenStyle.SolidLine):
    """A cached cosmetic pen. Width 1 is a hairline, which Qt's raster engine strokes about ten
    times faster than a wider antialiased line (and dashes and dots about fifty times faster):
    every curve but the reference's is a hairline, so that a click repaints within a frame."""
    key = (colour, width, style)
    pen = _PENS.get(key)
    if pen is None:
        pen = _PENS[key] = pg.mkPen(QColor(colour), width=width, style=style)
        pen.setCosmetic(True)
    return pen


def curve_style(sample: SpectrumSample, recon_index: int) -> dict:
    """pyqtgraph plot kwargs for one curve: colour by role, reconstructions by index; the
    reference (GT) is the one wide line."""
    role = sample.layer.role
    colour = legend_colour(sample, recon_index)
    if role == "gt":
        return dict(pen=curve_pen(colour, 2.0))
    if role == "lr":
        return dict(pen=curve_pen(colour, 1.0, Qt.PenStyle.DashLine),
                    symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None)
    if role == "guide":
        return dict(pen=None, symbol="t1", symbolSize=10, symbolBrush=colour, symbolPen=curve_pen("#000000"))
    return dict(pen=curve_pen(colour))


class SpectraView(QWidget):
    """Plot of ``scene.spectra_at(pixel)``; dragging the band marker sets the scene's band."""

    def __init__(self, scene: Scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        self.samples: list[SpectrumSample] = []
        self.pin_samples: list[tuple[int, SpectrumSample]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.setSpacing(4)
        header = QHBoxLayout()
        # its text changes at every click: it must not change the layout (elided, never widening)
        self.title = ElidedLabel("Click a pixel to plot its spectra", self, Qt.TextElideMode.ElideRight)
        self.title.setObjectName("DimLabel")
        self.copy_button = QToolButton(self)
        self.copy_button.setText("Copy CSV")
        self.copy_button.setToolTip("Copy the spectra as CSV (wavelength, one column per curve)")
        self.copy_button.clicked.connect(self.copy_csv)
        self.residual_button = QToolButton(self)
        self.residual_button.setText("Residuals")
        self.residual_button.setCheckable(True)
        self.residual_button.setChecked(True)
        self.residual_button.setToolTip("Reconstruction − GT on the right axis (at the pixel, or of the ROI means)")
        self.residual_button.toggled.connect(lambda *_: self.refresh())
        header.addWidget(self.title, 1)
        header.addWidget(self.residual_button)
        header.addWidget(self.copy_button)
        layout.addLayout(header)

        self.plot = pg.PlotWidget(self, axisItems={name: CachedAxis(name) for name in ("left", "bottom", "right")})
        self.plot.setMenuEnabled(False)
        # The grid is one pair-connected line item redrawn only when the range changes (the axes'
        # own grid repaints every axis at every click: too slow for a click-to-spectra frame).
        self.grid_item = pg.PlotCurveItem(connect="pairs")
        self.grid_item.setZValue(-100)
        self.plot.addItem(self.grid_item, ignoreBounds=True)
        self._grid_key = None
        self.plot.setLabel("bottom", "Wavelength", units="nm")
        self._x_known = True
        self.plot.setLabel("left", "Reflectance")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMinimumHeight(180)
        # Fixed axis widths and cached axis pictures: a click that changes the tick labels does
        # not re-layout (and repaint) the whole plot.
        from PyQt6.QtWidgets import QGraphicsItem

        for name in ("left", "bottom", "right"):
            self.plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.plot.getAxis("left").setWidth(52)
        self.plot.getAxis("right").setWidth(58)
        marker_pen = pg.mkPen(QColor(theme.current().crosshair), width=1, style=Qt.PenStyle.DashLine)
        self.band_line = pg.InfiniteLine(angle=90, movable=True, pen=marker_pen,
                                         hoverPen=pg.mkPen(theme.current().crosshair, width=2),
                                         label="{value:.0f} nm",
                                         labelOpts=dict(position=0.96, color=theme.current().crosshair,
                                                        fill=_label_fill(), movable=False))
        self.band_line.setZValue(20)
        self.band_line.sigPositionChanged.connect(self._on_line_moved)
        self.plot.addItem(self.band_line, ignoreBounds=True)
        layout.addWidget(self.plot, 1)
        # The legend sits under the plot, where it never hides a curve.
        self.legend = LegendTable(self)
        layout.addWidget(self.legend)
        self.curves: list = []   # the items shown, in the order of the samples then the pins
        self._pools: dict[str, list] = {"line": [], "symbols": [], "residual": []}
        self._pool_used = dict.fromkeys(self._pools, 0)
        # ROI mean ± std: a mean curve and a filled band per layer
        self.roi_samples: list = []
        self.roi_items: list = []
        # residuals (reconstruction − GT) on a second y axis on the right
        self.residuals: list = []
        self.residual_curves: list = []
        self.residual_view = pg.ViewBox(enableMenu=False)
        self.plot.showAxis("right")
        self.plot.getAxis("right").linkToView(self.residual_view)
        self.plot.getAxis("right").setLabel("Residual (recon − GT)")
        self.plot.getAxis("right").enableAutoSIPrefix(False)
        self.plot.scene().addItem(self.residual_view)
        self.residual_view.setXLink(self.plot.getViewBox())
        self.plot.getViewBox().sigResized.connect(self._sync_residual_view)
        self.residual_zero = pg.InfiniteLine(pos=0.0, angle=0, movable=False,
                                             pen=pg.mkPen(QColor(theme.current().crosshair), width=0.8,
                                                          style=Qt.PenStyle.DotLine))
        self.residual_view.addItem(self.residual_zero, ignoreBounds=True)

        ev = scene.events
        subscribe(self, ev.pixel, lambda *_: self.refresh())
        subscribe(self, ev.layers, lambda *_: self.refresh())
        subscribe(self, ev.pins, lambda *_: self.refresh())
        subscribe(self, ev.roi, lambda *_: self.refresh())
        subscribe(self, ev.band, lambda *_: self._place_band_line())
        self.refresh()

    # ------------------------------------------------------------------ plot
    def refresh(self) -> None:
        """Curves of every layer at the clicked pixel, then the pinned pixels' curves (reference
        and reconstructions only, coloured by pin) so that several locations can be compared."""
        # Curves are pooled: updating an existing item is far cheaper than adding a new one, and a
        # click must redraw the plot within a frame.
        self.curves.clear()
        for item in self.roi_items:
            self.plot.removeItem(item)
        self.roi_items.clear()
        self.residual_curves.clear()
        self._pool_used = dict.fromkeys(self._pools, 0)
        try:
            self._fill_plot()
        finally:
            for name, pool in self._pools.items():
                for item in pool[self._pool_used[name]:]:
                    if item.isVisible():
                        item.setData([], [])
                        item.setVisible(False)

    def _pooled(self, kind: str, owner, x, y, style: dict):
        """The next free item of a pool (created once, then reused) showing (x, y) in ``style``:
        ``kind`` 'curve' (on the left axis) or 'residual' (on the right axis). Lines without
        symbols are bare PlotCurveItems (a PlotDataItem's extra layer cost a millisecond per
        click); curves with symbols are MarkedCurves (see there). The style is set only when it changes."""
        has_symbols = style.get("symbol") is not None
        name = "residual" if kind == "residual" else ("symbols" if has_symbols else "line")
        pool = self._pools[name]
        i = self._pool_used[name]
        self._pool_used[name] = i + 1
        if has_symbols:
            opts = dict(pen=None, symbol=None)
            opts.update(style)
        else:
            opts = dict(pen=style.get("pen"))
        key = tuple(sorted((k, id(v) if isinstance(v, QPen) else str(v)) for k, v in opts.items()))
        if i < len(pool):
            item = pool[i]
            if item._style_key == key:
                item.setData(x, y)  # same style: only the data (no pen, symbol or scatter rebuild)
            else:
                item.setData(x, y, **opts)
                item._style_key = key
            if not item.isVisible():
                item.setVisible(True)
        else:
            item = MarkedCurve(x, y, **opts) if has_symbols else pg.PlotCurveItem(x, y, **opts)
            item._style_key = key
            owner.addItem(item)
            pool.append(item)
        (self.residual_curves if kind == "residual" else self.curves).append(item)
        return item

    def _fill_plot(self) -> None:
        scene = self.scene
        from app.core.analysis import residual_spectra, roi_spectra

        self.roi_samples = roi_spectra(scene) if scene.roi is not None else []
        if not self.residual_button.isChecked():
            self.residuals = []
        elif scene.roi is not None and scene.pixel is None:
            self.residuals = residual_spectra(scene, roi=scene.roi)
        else:
            self.residuals = residual_spectra(scene)
        self.residual_view.setVisible(bool(self.residuals))
        self.plot.getAxis("right").setVisible(bool(self.residuals))
        self.samples = scene.spectra_at()
        self.pin_samples = []
        reference = scene.reference
        for i, pin in enumerate(scene.pins):
            for sample in scene.spectra_at(*pin):
                if sample.layer is reference or sample.layer.role == "recon":
                    self.pin_samples.append((i, sample))
        if not self.samples and not self.pin_samples and not self.roi_samples:
            self.title.set_full_text("Click a pixel to plot its spectra (Shift+click pins more)" if scene.layers
                                     else "No cubes open")
            self.legend.set_rows([])
            self._place_band_line()
            return
        text = ""
        if scene.pixel is not None:
            row, col = scene.pixel
            text = f"Pixel row {row}, col {col}"
            coarse = [s for s in self.samples if s.layer.scale > 1]
            if coarse:
                s = coarse[0]
                text += f"  ·  {s.layer.title} pixel ({s.pixel[0]}, {s.pixel[1]}) covers {s.layer.scale}×{s.layer.scale}"
        if scene.pins:
            text += ("  ·  " if text else "") + f"{len(scene.pins)} pinned"
        if text != self.title.full_text():
            self.title.set_full_text(text)
            self.title.setToolTip(text)
        if scene.roi is not None:
            n = self.roi_samples[0].n if self.roi_samples else 0
            text += ("  ·  " if text else "") + f"ROI {n} px (mean ± std)"
        everything = self.samples + [s for _, s in self.pin_samples]
        known = any(s.wavelengths_known for s in everything) or any(r.wavelengths_known for r in self.roi_samples)
        if known != self._x_known:  # a new label re-lays out the axis: only when it changes
            self._x_known = known
            self.plot.setLabel("bottom", "Wavelength" if known else "Band", units="nm" if known else None)
        recon_index = 0
        rows = []
        for sample in self.samples:
            if known and not sample.wavelengths_known:
                continue  # cannot be placed on a wavelength axis
            style = curve_style(sample, recon_index)
            colour = legend_colour(sample, recon_index)
            if sample.layer.role == "recon":
                recon_index += 1
            self._pooled("curve", self.plot, sample.wavelengths_nm, sample.values, style)
            rows.append(_legend_row(colour, LEGEND_GLYPHS[sample.layer.role], sample.label))
        for i, sample in self.pin_samples:
            if known and not sample.wavelengths_known:
                continue
            colour = theme.PIN_COLOURS[i % len(theme.PIN_COLOURS)]
            dashed = sample.layer.role == "recon"
            pen = curve_pen(colour, 1.0, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
            self._pooled("curve", self.plot, sample.wavelengths_nm, sample.values, dict(pen=pen))
            rows.append(_legend_row(colour, "╌╌╌" if dashed else "───", f"#{i + 1} {sample.label}"))
        recon_index = 0
        for roi in self.roi_samples:
            if known and not roi.wavelengths_known:
                continue
            colour = QColor(legend_colour(roi, recon_index))
            if roi.layer.role == "recon":
                recon_index += 1
            x = np.asarray(roi.wavelengths_nm, dtype=np.float64)
            if roi.layer.role == "guide":
                bars = pg.ErrorBarItem(x=x, y=roi.mean, height=2 * roi.std, beam=6.0, pen=pg.mkPen(colour, width=1.5))
                mean = pg.ScatterPlotItem(x=x, y=roi.mean, symbol="s", size=8, brush=colour, pen=pg.mkPen("#000"))
                items = [bars, mean]
            else:
                fill = QColor(colour)
                fill.setAlpha(45)
                lo = pg.PlotDataItem(x, roi.mean - roi.std, pen=pg.mkPen(colour, width=0.6))
                hi = pg.PlotDataItem(x, roi.mean + roi.std, pen=pg.mkPen(colour, width=0.6))
                band = pg.FillBetweenItem(lo, hi, brush=pg.mkBrush(fill))
                mean = pg.PlotDataItem(x, roi.mean, pen=pg.mkPen(colour, width=2.0, style=Qt.PenStyle.DashDotLine))
                items = [lo, hi, band, mean]
            for item in items:
                self.plot.addItem(item)
                self.roi_items.append(item)
            rows.append(_legend_row(colour.name(), "▒▒▒", roi.label))
        for i, res in enumerate(self.residuals):
            colour = theme.RECON_CURVE_COLOURS[i % len(theme.RECON_CURVE_COLOURS)]
            self._pooled("residual", self.residual_view, res.wavelengths_nm, res.values,
                         dict(pen=curve_pen(colour, 1.0, Qt.PenStyle.DotLine)))
            rows.append(_legend_row(colour, "┄┄┄", res.label + " (right axis)"))
        self._fit_x([c.xData for c in self.curves] + [r.wavelengths_nm for r in self.roi_samples])
        self._fit_y(self.plot.getViewBox(), [c.yData for c in self.curves]
                    + [r.mean - r.std for r in self.roi_samples] + [r.mean + r.std for r in self.roi_samples])
        if self.residuals:
            self._fit_y(self.residual_view, [c.yData for c in self.residual_curves], zero=True)
            self._sync_residual_view()
        self._update_grid()
        self.legend.set_rows(rows)
        self._place_band_line()
        # Settle the views' transforms now (pyqtgraph defers them to the start of the paint,
        # where the items they move ask for a second full paint of the plot).
        self.plot.scene().prepareForPaint()

    def _update_grid(self) -> None:
        """Grid lines at the axes' major ticks of the current range."""
        view = self.plot.getViewBox()
        (x0, x1), (y0, y1) = view.viewRange()
        key = (round(x0, 9), round(x1, 9), round(y0, 9), round(y1, 9))
        if key == self._grid_key:
            return
        self._grid_key = key
        xs, ys = [], []
        for axis, lo, hi, out in (("bottom", x0, x1, xs), ("left", y0, y1, ys)):
            ax = self.plot.getAxis(axis)
            size = max(ax.geometry().height() if axis == "left" else ax.geometry().width(), 1.0)
            levels = ax.tickValues(lo, hi, size)
            if levels:
                out.extend(v for v in levels[0][1] if lo <= v <= hi)
        px, py = [], []
        for x in xs:
            px += [x, x]
            py += [y0, y1]
        for y in ys:
            px += [x0, x1]
            py += [y, y]
        colour = QColor(theme.current().plot_fg)
        colour.setAlpha(46)
        self.grid_item.setData(np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64),
                               pen=pg.mkPen(colour, width=1), connect="pairs")

    def _fit_x(self, series) -> None:
        """The wavelength range of the curves (set only when it changes: see _fit_y)."""
        values = [np.asarray(v, dtype=np.float64) for v in series if v is not None and len(v)]
        if not values:
            return
        lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
        pad = 0.03 * max(hi - lo, 1.0)
        x0, x1 = lo - pad, hi + pad
        view = self.plot.getViewBox()
        view.disableAutoRange(axis=pg.ViewBox.XAxis)
        c0, c1 = view.viewRange()[0]
        if abs(c0 - x0) > 1e-9 or abs(c1 - x1) > 1e-9:
            view.setXRange(x0, x1, padding=0.0)

    @staticmethod
    def _fit_y(view: pg.ViewBox, series, zero: bool = False) -> None:
        """Show every value with a rounded-out y range (steps of 1, 2 or 5 x 10^k), so that
        neighbouring clicks usually keep the same axis and only the curves are redrawn. The range is
        kept while the curves fit in it and fill at least 40 % of it; when it must change it gets a
        fifth of headroom beyond the data (a re-laid-out axis costs a third of a click's redraw, and
        a steady axis is easier to compare clicks on). Nonnegative data keep 0 at the bottom."""
        values = [np.asarray(v, dtype=np.float64) for v in series if v is not None and len(v)]
        values = [v[np.isfinite(v)] for v in values]
        values = [v for v in values if v.size]
        if not values:
            return
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        if zero:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        (c0, c1) = view.viewRange()[1]
        if not view.autoRangeEnabled()[1] and c0 <= lo and hi <= c1 and (hi - lo) >= 0.4 * (c1 - c0):
            return  # the data fit and fill the current range: keep the axis (no re-layout, no jump)
        span = hi - lo
        if span <= 0:
            span = max(abs(hi), 1e-6)
        if lo >= 0.0 and not zero and lo < 0.5 * hi:
            lo = 0.0  # reflectance-like data: the baseline stays put
        else:
            lo -= 0.2 * span if lo < 0.0 or zero else 0.0
        hi += 0.2 * span if hi > 0.0 or zero else 0.0
        span = hi - lo
        raw = span / 5.0
        magnitude = 10.0 ** np.floor(np.log10(raw))
        step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
        y0, y1 = np.floor(lo / step) * step, np.ceil(hi / step) * step
        if y1 <= y0:
            y1 = y0 + step
        pad = 0.02 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad
        view.disableAutoRange(axis=pg.ViewBox.YAxis)
        (c0, c1) = view.viewRange()[1]
        if abs(c0 - y0) > 1e-9 * step or abs(c1 - y1) > 1e-9 * step:
            view.setYRange(y0, y1, padding=0.0)

    def _sync_residual_view(self) -> None:
        self.residual_view.setGeometry(self.plot.getViewBox().sceneBoundingRect())
        self.residual_view.linkedViewChanged(self.plot.getViewBox(), self.residual_view.XAxis)

    def _place_band_line(self) -> None:
        nm = self.scene.band_wavelength()
        x = nm if nm is not None else float(self.scene.band)
        self.band_line.setVisible(self.scene.n_bands > 0)
        fmt = "{value:.0f} nm" if nm is not None else "band {value:.0f}"
        if self.band_line.label.format != fmt:
            self.band_line.label.format = fmt
            moved = True
        else:
            moved = False
        if abs(self.band_line.value() - x) > 1e-9:
            self.band_line.blockSignals(True)  # (its label listens to this signal: updated below)
            self.band_line.setValue(x)
            self.band_line.blockSignals(False)
            moved = True
        if moved:
            self.band_line.label.valueChanged()

    def _on_line_moved(self, line) -> None:
        if self.scene.wavelengths_nm is not None:
            self.scene.set_band_by_wavelength(line.value())
        else:
            self.scene.set_band(int(round(line.value())))

    def apply_theme(self) -> None:
        th = theme.current()
        self.plot.setBackground(th.plot_bg)
        self.band_line.label.fill = pg.mkBrush(_label_fill())
        self.band_line.label.setColor(th.crosshair)
        self.band_line.setPen(pg.mkPen(QColor(th.crosshair), width=1, style=Qt.PenStyle.DashLine))
        for name in ("bottom", "left"):
            axis = self.plot.getAxis(name)
            axis.setPen(th.plot_fg)
            axis.setTextPen(th.plot_fg)
        self.refresh()

    # ------------------------------------------------------------------ export
    def csv_text(self) -> str:
        """The plotted spectra as CSV: one row per (curve, band)."""
        lines = ["source,role,pin,row,col,wavelength_nm,value"]
        tagged = [("", s) for s in self.samples] + [(str(i + 1), s) for i, s in self.pin_samples]
        for pin, s in tagged:
            name = s.layer.name.replace(",", " ")
            for x, v in zip(np.asarray(s.wavelengths_nm), np.asarray(s.values)):
                lines.append(f"{name},{s.layer.role},{pin},{s.pixel[0]},{s.pixel[1]},{x:g},{v:.6g}")
        for r in self.roi_samples:  # ROI: 'roi-mean' / 'roi-std' in the pin column, no pixel
            name = r.layer.name.replace(",", " ")
            for what, values in (("roi-mean", r.mean), ("roi-std", r.std)):
                for x, v in zip(np.asarray(r.wavelengths_nm), np.asarray(values)):
                    lines.append(f"{name},{r.layer.role},{what},,,{x:g},{v:.6g}")
        for r in self.residuals:
            name = r.layer.name.replace(",", " ")
            for x, v in zip(np.asarray(r.wavelengths_nm), np.asarray(r.values)):
                lines.append(f"{name},{r.layer.role},residual,,,{x:g},{v:.6g}")
        return "\n".join(lines) + "\n"

    def copy_csv(self) -> None:
        QGuiApplication.clipboard().setText(self.csv_text())

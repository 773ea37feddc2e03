"""Spectra at the clicked pixel: one curve per layer against wavelength, with a band marker."""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QCoreApplication, QEvent, QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QGuiApplication, QPolygonF
from PyQt6.QtWidgets import QHBoxLayout, QToolButton, QVBoxLayout, QWidget

from app.core.state.scene import Scene, SpectrumSample
from app.qt import theme
from app.qt.binding import subscribe
from app.qt.graphics import ElidedLabel, LegendTable, PaintTimed, curve_pen


def _label_fill() -> QColor:
    fill = QColor(theme.current().plot_bg)
    fill.setAlpha(200)
    return fill


LEGEND_GLYPHS = {"gt": "━━━", "lr": "╍●╍", "guide": " ▲ ", "recon": "━━━"}


def legend_colour(scene: Scene, layer) -> str:
    """A reconstruction's colour is its method's (by name, from the scene: the same in the
    spectra, the analysis and the figures, whatever the panel order); other roles by role."""
    if layer.role == "recon":
        return scene.method_colour(layer.name)
    return theme.curve_colour(layer.role)


# Line style of the clicked pixel (first) and of each pinned pixel: the colour names the method,
# the style the location, so a pin never changes a method's colour.
PIN_STYLES: tuple = (Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine, Qt.PenStyle.DashDotDotLine,
                     (8.0, 4.0), (1.0, 3.0, 6.0, 3.0), (12.0, 3.0, 2.0, 3.0), (2.0, 6.0))


def pin_style(index: int):
    return PIN_STYLES[index % len(PIN_STYLES)]


def _legend_row(colour: str, glyph: str, label: str, key=None, style=None) -> tuple:
    """(colour, glyph, label, key, line style): ``key`` (a layer uid) makes the row a show/hide
    toggle; ``style`` draws a line of that style instead of the glyph."""
    return colour, glyph, label, key, style


class _PlotWidget(PaintTimed, pg.PlotWidget):
    """The spectra plot, with the time of its last paint (click to spectra on screen)."""


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




class Curve:
    """One curve of a :class:`CurveLayer`: its data (``xData``, ``yData``, as pyqtgraph's curves
    name them) and style: ``pen`` (a line, or None), ``symbol`` ('o', 't1' a triangle, 's', or
    None), ``symbol_size`` in screen pixels, ``symbol_brush``, ``symbol_pen``."""

    __slots__ = ("xData", "yData", "pen", "symbol", "symbol_size", "symbol_brush", "symbol_pen")

    def __init__(self, x, y, pen=None, symbol=None, symbolSize=8, symbolBrush=None, symbolPen=None):  # noqa: N803
        self.xData = np.asarray(x, dtype=np.float64)
        self.yData = np.asarray(y, dtype=np.float64)
        self.pen = pen
        self.symbol = symbol
        self.symbol_size = float(symbolSize)
        self.symbol_brush = _brush(symbolBrush) if symbolBrush is not None else None
        self.symbol_pen = symbolPen


_BRUSHES: dict = {}


def _brush(colour):
    key = colour if isinstance(colour, str) else None
    if key is None:
        return pg.mkBrush(colour)
    brush = _BRUSHES.get(key)
    if brush is None:
        brush = _BRUSHES[key] = pg.mkBrush(colour)
    return brush


class CurveLayer(pg.GraphicsObject):
    """Every curve of one view box, drawn by one item.

    A click replaces all the spectra at once. As separate pyqtgraph curves (a PlotCurveItem or
    PlotDataItem each) every curve costs its own Python calls for the new data, bounds, bounding
    rectangle and paint, several times per click; here the view asks one item, once. The points
    are mapped to the screen with numpy and drawn with cosmetic pens in device coordinates;
    markers keep their pixel size at any zoom. ``dataBounds`` serves the view's auto-range."""

    def __init__(self):
        super().__init__()
        self.curves: list[Curve] = []
        self._bounds = None
        self._half_marker = 0.0

    def set_curves(self, curves) -> None:
        self.prepareGeometryChange()
        self.curves = list(curves)
        lo_x = lo_y = np.inf
        hi_x = hi_y = -np.inf
        half = 0.0
        for c in self.curves:
            finite = np.isfinite(c.xData) & np.isfinite(c.yData)
            if finite.any():
                xs, ys = c.xData[finite], c.yData[finite]
                lo_x, hi_x = min(lo_x, float(xs.min())), max(hi_x, float(xs.max()))
                lo_y, hi_y = min(lo_y, float(ys.min())), max(hi_y, float(ys.max()))
            if c.symbol is not None:
                half = max(half, 0.5 * c.symbol_size + 2.0)  # (plus the outline)
        self._bounds = (lo_x, lo_y, hi_x, hi_y) if np.isfinite(lo_x) else None
        self._half_marker = max(half, 2.0)  # a line's own width
        self.informViewBoundsChanged()
        self.update()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N802, N803 (pyqtgraph API)
        if self._bounds is None:
            return None, None
        return (self._bounds[0], self._bounds[2]) if ax == 0 else (self._bounds[1], self._bounds[3])

    def boundingRect(self):  # noqa: N802 (Qt naming)
        if self._bounds is None:
            return QRectF()
        x0, y0, x1, y1 = self._bounds
        px, py = self.pixelVectors()
        half = self._half_marker  # in screen pixels, on every side
        dx = half * (abs(px.x()) + abs(py.x())) if px is not None else 0.0
        dy = half * (abs(px.y()) + abs(py.y())) if px is not None else 0.0
        return QRectF(x0 - dx, y0 - dy, (x1 - x0) + 2 * dx, (y1 - y0) + 2 * dy)

    def viewTransformChanged(self):  # noqa: N802 (pyqtgraph hook)
        self.prepareGeometryChange()

    def paint(self, painter, *args) -> None:
        if not self.curves:
            return
        tr = painter.transform()
        painter.save()
        painter.resetTransform()
        antialias = bool(pg.getConfigOption("antialias"))
        for c in self.curves:
            # device coordinates (non-finite points stay non-finite: gaps in the line)
            xd = tr.m11() * c.xData + tr.m21() * c.yData + tr.dx()
            yd = tr.m12() * c.xData + tr.m22() * c.yData + tr.dy()
            if c.pen is not None and len(xd) > 1:
                painter.setRenderHint(painter.RenderHint.Antialiasing, antialias)
                painter.setPen(c.pen)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                if np.isfinite(xd).all() and np.isfinite(yd).all():  # one polyline, filled in place
                    poly = pg.functions.create_qpolygonf(len(xd))
                    points = pg.functions.ndarray_from_qpolygonf(poly)
                    points[:, 0] = xd
                    points[:, 1] = yd
                    painter.drawPolyline(poly)
                else:  # gaps at the missing values
                    painter.drawPath(pg.arrayToQPath(xd, yd, connect="finite"))
            if c.symbol is None:
                continue
            painter.setRenderHint(painter.RenderHint.Antialiasing, True)
            painter.setPen(c.symbol_pen if c.symbol_pen is not None else Qt.PenStyle.NoPen)
            painter.setBrush(c.symbol_brush if c.symbol_brush is not None else Qt.BrushStyle.NoBrush)
            r = 0.5 * c.symbol_size
            finite = np.isfinite(xd) & np.isfinite(yd)
            if c.pen is not None and np.count_nonzero(finite) > 1:
                # markers on a line only where they stay apart: with hundreds of bands they would
                # merge into a thick line (and cost one shape per band at every click)
                xs = xd[finite]
                if (xs.max() - xs.min()) / (xs.size - 1) < 2.0 * r + 2.0:
                    continue
            for x, y in zip(xd[finite].tolist(), yd[finite].tolist()):
                if c.symbol == "t1":  # a triangle pointing up
                    painter.drawPolygon(QPolygonF([QPointF(x - r, y + 0.8 * r), QPointF(x + r, y + 0.8 * r),
                                                   QPointF(x, y - r)]))
                elif c.symbol == "s":
                    painter.drawRect(QRectF(x - r, y - r, 2 * r, 2 * r))
                else:
                    painter.drawEllipse(QPointF(x, y), r, r)
        painter.restore()


def curve_style(sample: SpectrumSample, colour: str) -> dict:
    """pyqtgraph plot kwargs for one curve at the clicked pixel: colour by role, reconstructions
    by method; the reference (GT) is the one wide line."""
    role = sample.layer.role
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
        # off at start: with several methods the residuals double the curves to read
        self.residual_button.setChecked(False)
        self.residual_button.setToolTip("Reconstruction − GT on the right axis (at the pixel, or of the ROI means)")
        self.residual_button.toggled.connect(lambda on: self.scene.set_spectra_choice(residuals=bool(on)))
        self.legend_button = QToolButton(self)
        self.legend_button.setText("Legend")
        self.legend_button.setCheckable(True)
        self.legend_button.setChecked(True)
        self.legend_button.setToolTip("Show or hide the legend under the plot (click a source in it to hide its curves)")
        header.addWidget(self.title, 1)
        header.addWidget(self.legend_button)
        header.addWidget(self.residual_button)
        header.addWidget(self.copy_button)
        layout.addLayout(header)

        self.plot = _PlotWidget(self, axisItems={name: CachedAxis(name) for name in ("left", "bottom", "right")})
        self.plot.setMenuEnabled(False)
        # The grid is one pair-connected line item redrawn only when the range changes (the axes'
        # own grid repaints every axis at every click: too slow for a click-to-spectra frame).
        self.grid_item = pg.PlotCurveItem(connect="pairs")
        self.grid_item.setZValue(-100)
        self.plot.addItem(self.grid_item, ignoreBounds=True)
        self._grid_key = None
        self._grid_cache: dict = {}  # (range, axis sizes) -> grid line coordinates
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
        self.legend_button.toggled.connect(self.legend.setVisible)
        self.legend.toggled.connect(self.toggle_source)
        # the curves shown (Curve records, in the order of the samples then the pins), all drawn by one item
        self.curves: list[Curve] = []
        self.curve_layer = CurveLayer()
        self.plot.addItem(self.curve_layer)
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
        self.residual_layer = CurveLayer()
        self.residual_view.addItem(self.residual_layer)

        ev = scene.events
        subscribe(self, ev.pixel, lambda *_: self._on_pixel())
        subscribe(self, ev.layers, lambda *_: self.refresh())
        subscribe(self, ev.pins, lambda *_: self.refresh())
        subscribe(self, ev.roi, lambda *_: self.refresh())
        subscribe(self, ev.band, lambda *_: self._place_band_line())
        subscribe(self, ev.colours, lambda *_: self.refresh())
        subscribe(self, ev.spectra, lambda *_: self._on_choice())
        self.refresh()

    @property
    def hidden_sources(self) -> frozenset:
        """Layer uids whose curves the user hid from the legend (kept in the scene)."""
        return self.scene.spectra_choice.hidden_uids

    def toggle_source(self, uid: int) -> None:
        """Hide (or show again) every curve of layer ``uid``."""
        self.scene.set_spectra_choice(hidden_uids=self.hidden_sources ^ {uid})

    def _on_choice(self) -> None:
        residuals = self.scene.spectra_choice.residuals
        if self.residual_button.isChecked() != residuals:
            self.residual_button.blockSignals(True)
            self.residual_button.setChecked(residuals)
            self.residual_button.blockSignals(False)
        self.refresh()

    # ------------------------------------------------------------------ plot
    def refresh(self) -> None:
        """Curves of every layer at the clicked pixel, then the pinned pixels' curves (reference
        and reconstructions only, coloured by pin) so that several locations can be compared."""
        self.curves = []
        self.residual_curves = []
        for item in self.roi_items:
            self.plot.removeItem(item)
        self.roi_items.clear()
        try:
            self._fill_plot()
        finally:
            self._show_curves()

    def _on_pixel(self) -> None:
        """A click: the new spectra are painted at once, before the crosshairs and the status bar
        that the same click moves (those are painted when the event loop next paints the window,
        a few ms later): the spectra are what the user clicked for."""
        started = time.perf_counter()
        self.refresh()
        if self.isVisible():
            # The plot scene's queued processing of its changed items, now: it paints the plot's
            # changed region at once (a repaint of the viewport on top would paint it twice).
            QCoreApplication.sendPostedEvents(self.plot.scene(), QEvent.Type.MetaCall.value)
            if self.plot.painted_at < started:
                self.plot.viewport().repaint()
            self.title.repaint()
            self.legend.repaint()

    def _show_curves(self) -> None:
        """Hand the curves to the two layers (after every refresh; an empty layer that stays empty
        is left alone)."""
        for layer, curves in ((self.curve_layer, self.curves), (self.residual_layer, self.residual_curves)):
            if layer.curves != curves:
                layer.set_curves(curves)

    def _add_curve(self, kind: str, x, y, style: dict) -> Curve:
        """A curve on the left axis (``kind`` 'curve') or the residual axis ('residual')."""
        curve = Curve(x, y, **style)
        (self.residual_curves if kind == "residual" else self.curves).append(curve)
        return curve

    def _fill_plot(self) -> None:
        scene = self.scene
        from app.core.evaluation.analysis import residual_spectra, roi_spectra

        self.roi_samples = roi_spectra(scene) if scene.roi is not None else []
        if not scene.spectra_choice.residuals:
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
            if not scene.layers:
                self._reset_axes()
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
        hidden = self.hidden_sources
        rows = []
        listed: set[int] = set()

        def source_row(layer, label: str) -> None:
            if layer.uid not in listed:
                listed.add(layer.uid)
                rows.append(_legend_row(legend_colour(scene, layer), LEGEND_GLYPHS[layer.role], label, layer.uid))

        for sample in self.samples:
            if known and not sample.wavelengths_known:
                continue  # cannot be placed on a wavelength axis
            layer = sample.layer
            # a method's row is its name: the pixel is in the title, and names must fit many columns
            source_row(layer, layer.name if layer.role == "recon" else sample.label)
            if layer.uid in hidden:
                continue
            self._add_curve("curve", sample.wavelengths_nm, sample.values,
                            curve_style(sample, legend_colour(scene, layer)))
        pin_rows = []
        for i, sample in self.pin_samples:
            if known and not sample.wavelengths_known:
                continue
            layer = sample.layer
            source_row(layer, layer.name if layer.role == "recon" else layer.label)
            if not pin_rows or pin_rows[-1][0] != i:
                pin_rows.append((i, sample))
            if layer.uid in hidden:
                continue
            width = 1.5 if layer.role == "gt" else 1.0
            self._add_curve("curve", sample.wavelengths_nm, sample.values,
                            dict(pen=curve_pen(legend_colour(scene, layer), width, pin_style(i))))
        roi_n = None
        for roi in self.roi_samples:
            if known and not roi.wavelengths_known:
                continue
            source_row(roi.layer, roi.layer.name if roi.layer.role == "recon" else roi.layer.label)
            roi_n = roi.n
            if roi.layer.uid in hidden:
                continue
            colour = QColor(legend_colour(scene, roi.layer))
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
        dim = theme.current().dim_text
        for i, sample in pin_rows:  # the line style of each pinned pixel, in a neutral colour: the
            # curves keep their methods' colours, and a pin-coloured line would suggest otherwise
            rows.append(_legend_row(theme.current().text, "",
                                    f"#{i + 1} (r {scene.pins[i][0]}, c {scene.pins[i][1]})", None, pin_style(i)))
        if roi_n is not None:
            rows.append(_legend_row(dim, "▒▒▒", f"ROI mean ± std ({roi_n} px), dash-dot"))
        for res in self.residuals:
            if res.layer.uid in hidden:
                continue
            self._add_curve("residual", res.wavelengths_nm, res.values,
                            dict(pen=curve_pen(legend_colour(scene, res.layer), 1.0, Qt.PenStyle.DotLine)))
        if self.residuals:
            rows.append(_legend_row(dim, "┄┄┄", "recon − GT, dotted (right axis)"))
        self._fit_x([c.xData for c in self.curves] + [r.wavelengths_nm for r in self.roi_samples])
        self._fit_y(self.plot.getViewBox(), [c.yData for c in self.curves]
                    + [r.mean - r.std for r in self.roi_samples] + [r.mean + r.std for r in self.roi_samples])
        if self.residuals:
            self._fit_y(self.residual_view, [c.yData for c in self.residual_curves], zero=True)
            self._sync_residual_view()
        self._update_grid()
        self.legend.set_rows(rows, hidden)
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
        sizes = (self.plot.getAxis("left").geometry().height(), self.plot.getAxis("bottom").geometry().width())
        cached = self._grid_cache.get((key, sizes))
        if cached is not None:  # a range seen before (clicks come back to the same rounded ranges)
            self.grid_item.setData(*cached)
            return
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
        args = (np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64))
        self.grid_item.setData(*args, pen=pg.mkPen(colour, width=1), connect="pairs")
        if len(self._grid_cache) >= 64:
            self._grid_cache.pop(next(iter(self._grid_cache)))
        self._grid_cache[(key, sizes)] = args

    def _reset_axes(self) -> None:
        """The axes of an empty plot, as at start: the ranges and labels of closed cubes would
        otherwise stay up and describe data that is no longer open."""
        if not self._x_known:
            self._x_known = True
            self.plot.setLabel("bottom", "Wavelength", units="nm")
        for view in (self.plot.getViewBox(), self.residual_view):
            view.setRange(xRange=(0.0, 1.0), yRange=(0.0, 1.0), padding=0.0)
            view.enableAutoRange()
        self._update_grid()

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
        x = nm if nm is not None else float(self.scene.band + 1)  # (band numbers from 1 on the axis)
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
            self.scene.set_band(int(round(line.value())) - 1)

    def apply_theme(self) -> None:
        th = theme.current()
        self.plot.setBackground(th.plot_bg)
        self._grid_cache.clear()  # the grid's colour follows the theme
        self._grid_key = None
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
        """The spectra as CSV, one row per (curve, band): the curves File ▸ Export ▸ Spectra as
        CSV writes (app.core.export.data.collect_spectra, residuals as the plot shows them)."""
        from app.core.export.data import collect_spectra

        lines = ["source,role,pin,row,col,wavelength_nm,value"]
        for curve in collect_spectra(self.scene, residuals=self.scene.spectra_choice.residuals):
            name = curve.name.replace(",", " ")
            if curve.kind == "roi":  # 'roi-mean' / 'roi-std' in the pin column, no pixel
                series = (("roi-mean", curve.y), ("roi-std", curve.std))
                row = col = ""
            else:
                series = ((str(curve.pin or "") if curve.kind != "residual" else "residual", curve.y),)
                row, col = curve.pixel if curve.pixel is not None else ("", "")
            for what, values in series:
                for x, v in zip(curve.x, np.asarray(values)):
                    lines.append(f"{name},{curve.role},{what},{row},{col},{x:g},{v:.6g}")
        return "\n".join(lines) + "\n"

    def copy_csv(self) -> None:
        QGuiApplication.clipboard().setText(self.csv_text())

"""Spectra at the clicked pixel: one curve per layer against wavelength, with a band marker."""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QGuiApplication
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from app.core.scene import Scene, SpectrumSample
from app.qt import theme
from app.qt.binding import subscribe


def _label_fill() -> QColor:
    fill = QColor(theme.current().plot_bg)
    fill.setAlpha(200)
    return fill


LEGEND_GLYPHS = {"gt": "━━━", "lr": "╍●╍", "guide": "&nbsp;▲&nbsp;", "recon": "━━━"}


def legend_colour(sample: SpectrumSample, recon_index: int) -> str:
    if sample.layer.role == "recon":
        return theme.RECON_CURVE_COLOURS[recon_index % len(theme.RECON_CURVE_COLOURS)]
    return theme.curve_colour(sample.layer.role)


def _legend_row(colour: str, glyph: str, label: str) -> str:
    return (f"<tr><td style='color:{colour}; padding-right:6px'>{glyph}</td>"
            f"<td>{html.escape(label)}</td></tr>")


def curve_style(sample: SpectrumSample, recon_index: int) -> dict:
    """pyqtgraph plot kwargs for one curve: colour by role, reconstructions by index."""
    role = sample.layer.role
    colour = QColor(legend_colour(sample, recon_index))
    if role == "gt":
        return dict(pen=pg.mkPen(colour, width=2.5))
    if role == "lr":
        return dict(pen=pg.mkPen(colour, width=1.5, style=Qt.PenStyle.DashLine),
                    symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None)
    if role == "guide":
        return dict(pen=None, symbol="t1", symbolSize=10, symbolBrush=colour, symbolPen=pg.mkPen("#000"))
    return dict(pen=pg.mkPen(colour, width=1.8))


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
        self.title = QLabel("Click a pixel to plot its spectra", self)
        self.title.setObjectName("DimLabel")
        self.copy_button = QToolButton(self)
        self.copy_button.setText("Copy CSV")
        self.copy_button.setToolTip("Copy the spectra as CSV (wavelength, one column per curve)")
        self.copy_button.clicked.connect(self.copy_csv)
        header.addWidget(self.title, 1)
        header.addWidget(self.copy_button)
        layout.addLayout(header)

        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.18)
        self.plot.setLabel("bottom", "Wavelength", units="nm")
        self.plot.setLabel("left", "Reflectance")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMinimumHeight(180)
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
        self.legend = QLabel(self)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.legend.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.legend)
        self.curves: list[pg.PlotDataItem] = []

        ev = scene.events
        subscribe(self, ev.pixel, lambda *_: self.refresh())
        subscribe(self, ev.layers, lambda *_: self.refresh())
        subscribe(self, ev.pins, lambda *_: self.refresh())
        subscribe(self, ev.band, lambda *_: self._place_band_line())
        self.refresh()

    # ------------------------------------------------------------------ plot
    def refresh(self) -> None:
        """Curves of every layer at the clicked pixel, then the pinned pixels' curves (reference
        and reconstructions only, coloured by pin) so that several locations can be compared."""
        for curve in self.curves:
            self.plot.removeItem(curve)
        self.curves.clear()
        self.legend.setText("")
        scene = self.scene
        self.samples = scene.spectra_at()
        self.pin_samples = []
        reference = scene.reference
        for i, pin in enumerate(scene.pins):
            for sample in scene.spectra_at(*pin):
                if sample.layer is reference or sample.layer.role == "recon":
                    self.pin_samples.append((i, sample))
        if not self.samples and not self.pin_samples:
            self.title.setText("Click a pixel to plot its spectra (Shift+click pins more)" if scene.layers
                               else "No cubes open")
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
        self.title.setText(text)
        everything = self.samples + [s for _, s in self.pin_samples]
        known = any(s.wavelengths_known for s in everything)
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
            self.curves.append(self.plot.plot(sample.wavelengths_nm, sample.values, **style))
            rows.append(_legend_row(colour, LEGEND_GLYPHS[sample.layer.role], sample.label))
        for i, sample in self.pin_samples:
            if known and not sample.wavelengths_known:
                continue
            colour = theme.PIN_COLOURS[i % len(theme.PIN_COLOURS)]
            dashed = sample.layer.role == "recon"
            pen = pg.mkPen(QColor(colour), width=1.3,
                           style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
            self.curves.append(self.plot.plot(sample.wavelengths_nm, sample.values, pen=pen))
            rows.append(_legend_row(colour, "╌╌╌" if dashed else "───", f"#{i + 1} {sample.label}"))
        self.legend.setText("<table cellspacing='0' cellpadding='1'>" + "".join(rows) + "</table>")
        self._place_band_line()

    def _place_band_line(self) -> None:
        nm = self.scene.band_wavelength()
        x = nm if nm is not None else float(self.scene.band)
        self.band_line.setVisible(self.scene.n_bands > 0)
        if abs(self.band_line.value() - x) > 1e-9:
            self.band_line.blockSignals(True)
            self.band_line.setValue(x)
            self.band_line.blockSignals(False)
        self.band_line.label.setFormat("{value:.0f} nm" if nm is not None else "band {value:.0f}")

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
        return "\n".join(lines) + "\n"

    def copy_csv(self) -> None:
        QGuiApplication.clipboard().setText(self.csv_text())

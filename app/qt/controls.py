"""Scene controls: the band bar (slider + wavelength spin box) and the display panel (mode,
colormap, RGB wavelengths, percentile contrast)."""
from __future__ import annotations

import re

from PyQt6.QtCore import QEvent, QSignalBlocker, QSize, Qt
from PyQt6.QtGui import QKeyEvent, QValidator
from PyQt6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                             QLabel, QSizePolicy, QSlider, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from app.core.state.scene import COLORMAPS, DisplayMode, Scene
from app.qt import colormaps
from app.qt.binding import subscribe
# (editors that keep the arrow keys, and the colorbar, are shared with other views: graphics.py)
from app.qt.graphics import ComboBox, LevelsBar, SpinBox, _KeepsArrowKeys  # noqa: F401

def band_number_text(scene: Scene, band: int) -> str:
    """'550 nm', or 'band 22' (counted from 1, like '22 / 31' and the status bar) without
    wavelengths."""
    return scene.band_text(band) if scene.band_wavelength(band) is not None else f"band {band + 1}"


class BandSpinBox(_KeepsArrowKeys, QSpinBox):
    """Holds a band index, shows its wavelength ('550 nm'); typing a wavelength jumps to the
    nearest band ('b12' or 'band 12' types an index)."""

    def __init__(self, scene: Scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        self.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: int) -> str:  # noqa: N802
        if not self.scene.n_bands:
            return str(value)
        return band_number_text(self.scene, value)

    def valueFromText(self, text: str) -> int:  # noqa: N802
        text = text.strip().lower()
        index = re.fullmatch(r"(?:b|band)\s*(\d+)", text)
        if index:  # band numbers count from 1, as everywhere in the window
            return max(int(index.group(1)) - 1, 0)
        number = re.search(r"[-+]?\d+(?:\.\d*)?", text)
        if number is None:
            return self.value()
        if self.scene.wavelengths_nm is None:
            return max(int(float(number.group(0))) - 1, 0)
        return self.scene.band_index(float(number.group(0)))

    def validate(self, text: str, pos: int):
        if re.search(r"\d", text):
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos


class BandBar(QWidget):
    """Band slider labelled in nm, with a wavelength spin box; writes ``scene.set_band``."""

    def __init__(self, scene: Scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        self.setObjectName("BandBar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 5, 10, 5)
        layout.setSpacing(8)
        title = QLabel("Band", self)
        title.setStyleSheet("font-weight: 600;")
        self.min_label = QLabel("", self)
        self.min_label.setObjectName("DimLabel")
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setToolTip("Band (Up/Down: ±1, PageUp/PageDown: ±5, Home/End)")
        self.slider.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.max_label = QLabel("", self)
        self.max_label.setObjectName("DimLabel")
        self.spin = BandSpinBox(scene, self)
        self.spin.setMinimumWidth(96)
        self.spin.setToolTip("Wavelength of the shown band; type a wavelength in nm to jump to it")
        self.index_label = QLabel("", self)
        self.index_label.setObjectName("DimLabel")
        self.index_label.setMinimumWidth(70)
        layout.addWidget(title)
        layout.addWidget(self.min_label)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.max_label)
        layout.addWidget(self.spin)
        layout.addWidget(self.index_label)

        self.slider.valueChanged.connect(self.scene.set_band)
        self.spin.valueChanged.connect(self.scene.set_band)
        subscribe(self, scene.events.layers, lambda *_: self._on_layers())
        subscribe(self, scene.events.band, self._on_band)
        subscribe(self, scene.events.mode, lambda *_: self._on_mode())
        self._on_layers()

    def _on_layers(self) -> None:
        n = self.scene.n_bands
        for w in (self.slider, self.spin):
            with QSignalBlocker(w):
                w.setRange(0, max(n - 1, 0))
        self.slider.setPageStep(5)
        self.slider.setTickInterval(max(1, n // 15) if n else 1)
        self.setEnabled(n > 0)
        if n:
            self.min_label.setText(band_number_text(self.scene, 0))
            self.max_label.setText(band_number_text(self.scene, n - 1))
        else:
            self.min_label.setText("")
            self.max_label.setText("")
        self._on_band(self.scene.band)
        self._on_mode()

    def _on_band(self, band: int) -> None:
        for w in (self.slider, self.spin):
            if w.value() != band:
                with QSignalBlocker(w):
                    w.setValue(band)
        self.spin.lineEdit().setText(self.spin.textFromValue(band))
        n = self.scene.n_bands
        self.index_label.setText(f"{band + 1} / {n}" if n else "")

    def _on_mode(self) -> None:
        tip = "" if self.scene.mode == DisplayMode.BAND else \
            " (the panels show a colour composite; the band drives the spectra marker and status bar)"
        self.slider.setToolTip("Band (Up/Down: ±1, PageUp/PageDown: ±5, Home/End)" + tip)


class DisplayControls(QWidget):
    """Mode, colormap, RGB wavelengths and contrast; each control writes to the scene and
    follows it."""

    def __init__(self, scene: Scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        outer = QVBoxLayout(self)
        outer.setContentsMargins(10, 8, 10, 8)
        outer.setSpacing(6)

        # ---- mode: segmented buttons
        mode_row = QHBoxLayout()
        mode_row.setSpacing(0)
        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[DisplayMode, QToolButton] = {}
        tips = {
            DisplayMode.BAND: "One band, colormapped (B)",
            DisplayMode.RGB: "Three bands chosen by wavelength as red, green, blue (R)",
            DisplayMode.TRUE_COLOUR: "CIE 1931 colour under D65 from the whole spectrum (T)",
        }
        labels = {DisplayMode.BAND: "Band", DisplayMode.RGB: "RGB", DisplayMode.TRUE_COLOUR: "True colour"}
        for mode in DisplayMode:
            button = QToolButton(self)
            button.setObjectName("ModeButton")
            button.setText(labels[mode])
            button.setCheckable(True)
            button.setToolTip(tips[mode])
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.mode_group.addButton(button)
            self.mode_buttons[mode] = button
            mode_row.addWidget(button)
            button.clicked.connect(lambda _=False, m=mode: self.scene.set_mode(m))
        outer.addLayout(mode_row)

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(8)
        form.setVerticalSpacing(6)

        self.colormap_combo = ComboBox(self)
        for name in COLORMAPS:
            self.colormap_combo.addItem(colormaps.swatch_icon(name), name, name)
        self.colormap_combo.setIconSize(QSize(56, 10))
        self.colormap_combo.setToolTip("Colormap of the single-band view")
        self.colormap_combo.currentIndexChanged.connect(
            lambda i: self.scene.set_colormap(self.colormap_combo.itemData(i)))
        form.addRow("Colormap", self.colormap_combo)

        rgb_row = QHBoxLayout()
        rgb_row.setSpacing(4)
        self.rgb_spins: list[SpinBox] = []
        for colour, tip in zip(("#ff6b6b", "#5fd068", "#5aa9ff"), ("red", "green", "blue")):
            spin = SpinBox(self)
            spin.setDecimals(0)
            spin.setRange(0, 100000)
            spin.setSuffix(" nm")
            spin.setKeyboardTracking(False)
            spin.setToolTip(f"Wavelength shown as {tip}")
            spin.setStyleSheet(f"QDoubleSpinBox {{ border-left: 3px solid {colour}; }}")
            spin.valueChanged.connect(lambda *_: self._write_rgb())
            self.rgb_spins.append(spin)
            rgb_row.addWidget(spin)
        self.rgb_label = QLabel("RGB", self)
        form.addRow(self.rgb_label, rgb_row)

        stretch_row = QHBoxLayout()
        stretch_row.setSpacing(4)
        self.low_spin = SpinBox(self)
        self.high_spin = SpinBox(self)
        for spin, tip in ((self.low_spin, "Low percentile mapped to black"),
                          (self.high_spin, "High percentile mapped to white")):
            spin.setDecimals(1)
            spin.setRange(0.0, 100.0)
            spin.setSingleStep(0.5)
            spin.setSuffix(" %")
            spin.setKeyboardTracking(False)
            spin.setToolTip(tip)
            spin.valueChanged.connect(lambda *_: self._write_percentiles())
        self.preset_combo = ComboBox(self)
        for text, pair in (("preset…", None), ("1–99 %", (1.0, 99.0)), ("2–98 %", (2.0, 98.0)),
                           ("0.5–99.5 %", (0.5, 99.5)), ("min–max", (0.0, 100.0))):
            self.preset_combo.addItem(text, pair)
        self.preset_combo.activated.connect(self._on_preset)
        dash = QLabel("–", self)
        stretch_row.addWidget(self.low_spin)
        stretch_row.addWidget(dash)
        stretch_row.addWidget(self.high_spin)
        stretch_row.addWidget(self.preset_combo)
        form.addRow("Stretch", stretch_row)

        self.shared_check = QCheckBox("Same contrast in every panel", self)
        self.shared_check.setToolTip(
            "Use the reference (GT) levels for all panels on its band axis: a visual comparison of\n"
            "reconstructions is only fair with shared contrast. Off: each panel is stretched alone.")
        self.shared_check.toggled.connect(self.scene.set_shared_contrast)
        form.addRow("", self.shared_check)
        self.levels_bar = LevelsBar(self)
        form.addRow("Levels", self.levels_bar)
        outer.addLayout(form)
        outer.addStretch(1)

        ev = scene.events
        subscribe(self, ev.mode, lambda *_: self._sync())
        subscribe(self, ev.rgb, lambda *_: self._sync())
        subscribe(self, ev.contrast, lambda *_: self._sync())
        subscribe(self, ev.colormap, lambda *_: self._sync())
        subscribe(self, ev.layers, lambda *_: self._sync())
        self._sync()

    # ------------------------------------------------------------------ writes
    def _write_rgb(self) -> None:
        try:
            self.scene.set_rgb_nm([s.value() for s in self.rgb_spins])
        finally:
            self._sync()

    def _write_percentiles(self) -> None:
        try:
            self.scene.set_percentiles(self.low_spin.value(), self.high_spin.value())
        except ValueError:
            pass  # low >= high while typing: keep the scene's values
        self._sync()

    def _on_preset(self, index: int) -> None:
        pair = self.preset_combo.itemData(index)
        if pair is not None:
            self.scene.set_percentiles(*pair)
        with QSignalBlocker(self.preset_combo):
            self.preset_combo.setCurrentIndex(0)

    # ------------------------------------------------------------------ reads
    def _sync(self) -> None:
        scene = self.scene
        for mode, button in self.mode_buttons.items():
            with QSignalBlocker(button):
                button.setChecked(mode == scene.mode)
        with QSignalBlocker(self.colormap_combo):
            self.colormap_combo.setCurrentIndex(COLORMAPS.index(scene.colormap))
        self.colormap_combo.setEnabled(scene.mode == DisplayMode.BAND)
        wl = scene.wavelengths_nm
        used = scene.rgb_bands() if scene.reference is not None else None
        for spin, nm, band in zip(self.rgb_spins, scene.rgb_nm, used or (None, None, None)):
            with QSignalBlocker(spin):
                if wl is None and band is not None:
                    # no wavelengths: the composite spreads bands over the cube; the boxes say
                    # which (a wavelength here would name bands that are not shown)
                    spin.setPrefix("band ")
                    spin.setSuffix("")
                    spin.setRange(1, scene.n_bands)
                    spin.setValue(band + 1)
                else:
                    spin.setPrefix("")
                    spin.setSuffix(" nm")
                    if wl is not None:
                        spin.setRange(float(min(wl)), float(max(wl)))
                    else:
                        spin.setRange(0, 100000)
                    spin.setValue(nm)
            spin.setEnabled(scene.mode == DisplayMode.RGB and wl is not None)
        self.rgb_label.setEnabled(scene.mode == DisplayMode.RGB)
        low, high = scene.percentiles
        for spin, value in ((self.low_spin, low), (self.high_spin, high)):
            with QSignalBlocker(spin):
                spin.setValue(value)
        with QSignalBlocker(self.shared_check):
            self.shared_check.setChecked(scene.shared_contrast)

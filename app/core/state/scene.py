"""The viewer's state, free of Qt: a :class:`Scene` composed of small evented parts.

Views (``app.qt``) take a :class:`Scene`, subscribe to its :class:`Event` lists and write user
changes back through its setters; they never talk to each other. Every setter validates and
clamps its input and emits only when the value really changed, so a view that writes back the
value it was just given does not start a loop.

The parts, each in its own module of ``app.core.state`` (napari's ViewerModel is the model):

- :mod:`~app.core.state.events`: :class:`Event` and :class:`SceneEvents` (``scene.events``);
- :mod:`~app.core.state.layers`: :class:`Layer`, the roles, :class:`LayerList` (``scene.layer_list``:
  the ordered layers on one HR pixel grid; the geometry is explained there);
- :mod:`~app.core.state.layer_range`: each layer's value range and badge (``scene.ranges``);
- :mod:`~app.core.state.display`: :class:`Display` (``scene.display``: mode, RGB wavelengths,
  contrast, colormap), :class:`MethodColours` (``scene.palette``), :class:`BandAxis`
  (``scene.band_axis``: the band and how each layer follows it), the level helpers;
- :mod:`~app.core.state.cursor`: :class:`Cursor` (``scene.cursor``: clicked pixel, pins, hover,
  zoom, ROI);
- :mod:`~app.core.state.rendering`: :class:`RenderRequest`, :func:`render` (pure, runs in a worker
  thread), :class:`RenderCache` (``scene.render_cache``);
- :mod:`~app.core.state.selection`: the ROI and analysis settings types.

The Scene keeps every method the views call (``scene.set_band``, ``scene.pixel``...), delegating to
its parts, and does what spans them: adding and removing layers (and fitting the band, cursor,
A/B choice and caches to them), snapshots for rendering, and what the views show (pictures, A/B
choice, spectra shown, the analysis on screen). The names of the parts' modules stay importable
from here.
"""
from __future__ import annotations

import dataclasses
import threading
import types
from typing import Any, Mapping, Sequence

import numpy as np

from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.state.cursor import MAX_PINS, Cursor, Hover
from app.core.state.display import (COLORMAPS, DEFAULT_RGB_NM, METHOD_COLOURS, NOMINAL_RGB_NM, BandAxis, Display,
                                    DisplayMode, MethodColours, channel_levels, nearest_band, percentile_levels)
from app.core.state.events import Event, SceneEvents
from app.core.state.layer_range import (RANGE_CHOICE_TITLES, RANGE_CHOICES, RANGE_SAMPLE_BANDS, RANGE_SAMPLE_PIXELS,
                                        LayerRanges, RangeBadge, _on_gt_scale, parse_range_choice, range_badge_text)
from app.core.state.layers import (ROLE_DESCRIPTIONS, ROLE_TITLES, ROLES, Layer, LayerList, SpectrumSample,
                                   guess_role)
from app.core.state.rendering import RENDER_CACHE_PLANE_BYTES, RenderCache, RenderedImage, RenderRequest, render
from app.core.state.selection import ABChoice, AnalysisSettings, Roi, SpectraChoice

__all__ = [
    "Scene", "Event", "SceneEvents", "Layer", "LayerList", "SpectrumSample", "Hover", "guess_role",
    "ROLES", "ROLE_TITLES", "ROLE_DESCRIPTIONS", "MAX_PINS", "Cursor",
    "DisplayMode", "Display", "MethodColours", "BandAxis", "COLORMAPS", "DEFAULT_RGB_NM", "NOMINAL_RGB_NM",
    "METHOD_COLOURS", "percentile_levels", "channel_levels", "nearest_band",
    "RANGE_CHOICES", "RANGE_CHOICE_TITLES", "RANGE_SAMPLE_BANDS", "RANGE_SAMPLE_PIXELS", "LayerRanges",
    "RangeBadge", "parse_range_choice", "range_badge_text",
    "RENDER_CACHE_PLANE_BYTES", "RenderCache", "RenderRequest", "RenderedImage", "render",
]


def _uid(layer_or_uid: Layer | int) -> int:
    return layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)


class Scene:
    """Ordered layers plus everything the views share. See the module docstring."""

    def __init__(self):
        self.events = SceneEvents()
        self.layer_list = LayerList()
        self._layers = self.layer_list.items  # (the list itself: read by the methods below)
        self.display = Display(self.events)
        self.palette = MethodColours(self.layer_list, self.events)
        self.band_axis = BandAxis(self.layer_list, self.events)
        self.cursor = Cursor(self.events)
        self.render_cache = RenderCache()
        self.ranges = LayerRanges()
        self._analysis_settings = AnalysisSettings()
        # What the views show, shared so that no view reads another: the pictures the panels
        # show, the A/B comparison, the spectra shown and the analysis on screen.
        self._rendered: dict[int, RenderedImage] = {}
        self._ab = ABChoice()
        self._spectra = SpectraChoice()
        self._analysis_result: Any = None   # app.core.evaluation.analysis.AnalysisResult (a higher floor)
        self._analysis_stale = True

    # ------------------------------------------------------------------ method colours
    @property
    def method_colours(self) -> dict[str, str]:
        return self.palette.colours

    def method_colour(self, name: str) -> str:
        """The colour of method ``name``, given on first use: the first palette colour no open
        reconstruction uses (so 8 methods get 8 colours), else the least used one."""
        return self.palette.colour(name)

    def set_method_colour(self, name: str, colour: str) -> None:
        self.palette.set_colour(name, colour)

    def set_method_colours(self, colours: dict[str, str]) -> None:
        """Colours by method name (a restored session's); others keep theirs."""
        self.palette.set_colours(colours)

    # ------------------------------------------------------------------ layers
    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def layer(self, uid: int) -> Layer:
        return self.layer_list.get(uid)

    def layers_with_role(self, role: str) -> list[Layer]:
        return self.layer_list.with_role(role)

    def add_layer(self, cube: Cube, role: str, name: str | None = None) -> Layer:
        """Add a cube; it goes after the layers of the same or an earlier role (gt, lr, guide,
        recon), so panels keep that order whatever order files finish loading in.

        Raises ValueError for an unknown role and ShapeMismatchError when the cube cannot be
        placed on the scene's pixel grid (its size must divide the largest size evenly).
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        grid = self.layer_list.grid_with(cube, name)
        gts = self.layers_with_role("gt")
        read_range = LayerRanges.decision(cube)  # the reader's decision, before a GT's scale: 'auto' of the layer's range
        if role == "recon" and gts:
            cube = _on_gt_scale(cube, gts[0].cube)
        elif role == "gt" and not gts:
            for other in self._layers:  # reconstructions opened before their GT go onto its scale now
                if other.role == "recon":
                    other.cube = _on_gt_scale(other.cube, cube)
        layer = self.layer_list.new_layer(cube, role, name or cube.name)
        self.ranges.record(layer.uid, read_range)
        old_reference = self.reference
        had_reference = old_reference is not None
        self.layer_list.insert(layer)
        if role == "recon":
            self.method_colour(layer.name)
        self.layer_list.set_grid(grid)
        if cube.bands > 1 and cube.in_memory and cube._bsq is None:
            # band switches read contiguous bands once the band-sequential copy exists (a worker
            # thread makes it; until then bands are read from the interleaved array)
            threading.Thread(target=cube.build_band_copy, name=f"band-copy {layer.name}", daemon=True).start()
        self._after_layers_changed(had_reference, old_reference)
        return layer

    def remove_layer(self, layer_or_uid: Layer | int) -> None:
        uid = _uid(layer_or_uid)
        layer = self.layer(uid)
        old_reference = self.reference
        self.layer_list.remove(layer)
        self.render_cache.forget(uid)
        self.ranges.forget(uid)
        self._after_layers_changed(True, old_reference)

    def clear(self) -> None:
        old_reference = self.reference
        self.layer_list.clear()
        self.render_cache.forget()
        self.ranges.clear()
        self._after_layers_changed(True, old_reference)

    def rename_layer(self, layer_or_uid: Layer | int, name: str) -> None:
        layer = self.layer(_uid(layer_or_uid))
        name = str(name).strip()
        if name and name != layer.name:
            self.palette.renamed(layer, name)  # a reconstruction keeps its colour
            layer.name = name
            self.events.layers.emit(self.layers)

    def _after_layers_changed(self, had_reference: bool, old_reference: Layer | None) -> None:
        """Fit every part to the new layers, then emit ``layers`` and what else changed."""
        cursor = self.cursor
        old_band, old_pixel, old_pins, old_roi = self.band, cursor.pixel, cursor.pins, cursor.roi
        self.band_axis.follow_layers(had_reference, old_reference)
        live = {l.uid for l in self._layers}
        cursor.follow_layers(self.hr_shape, live)
        self.events.layers.emit(self.layers)
        if cursor.roi is not old_roi:
            self.events.roi.emit(cursor.roi)
        if self.band != old_band:
            self.events.band.emit(self.band)
        if cursor.pixel != old_pixel:
            self.events.pixel.emit(cursor.pixel)
        if cursor.pins != old_pins:
            self.events.pins.emit(self.pins)
        if set(self._rendered) - live:
            self._rendered = {uid: r for uid, r in self._rendered.items() if uid in live}
        if self._spectra.hidden_uids - live:
            self.set_spectra_choice(hidden_uids=self._spectra.hidden_uids & live)
        self._follow_layers_in_ab()

    # ------------------------------------------------------------------ value range of a layer
    def layer_range(self, layer_or_uid: Layer | int) -> str | float:
        """The layer's value-range choice: 'auto' (the reader's decision, a reconstruction put on
        its GT's scale), 'stated', 'max' or a divisor."""
        return self.ranges.choice(_uid(layer_or_uid))

    def stated_range_available(self, layer_or_uid: Layer | int) -> bool:
        """True when the layer's file states its range (or follows a known convention)."""
        return self.ranges.stated_available(_uid(layer_or_uid))

    def set_layer_range(self, layer_or_uid: Layer | int, choice) -> None:
        """Read the layer's stored values with another range: 'auto', 'stated' (what the file
        states), 'max' (divide by the stored maximum) or a number (divide by it). The cube is
        rescaled (its stored values, memory-mapped or not, are shared: nothing is copied); a GT's
        change puts the reconstructions on 'auto' onto its new scale. Emits ``layer_range`` and
        ``layers`` (the pictures, spectra and analysis follow). Raises ValueError for a bad choice
        and HsiError (naming the file) for a choice the layer cannot take."""
        uid = _uid(layer_or_uid)
        layer = self.layer(uid)
        choice = parse_range_choice(choice)
        if not self.ranges.can_choose(uid):
            raise HsiError(f"{layer.label} was computed in the viewer: its values are reflectance already, "
                           "there is no stored range to choose")
        layer.cube = self.ranges.ranged_cube(layer, choice, self._first_gt())
        changed = [uid]
        self.ranges.set_choice(uid, choice)
        gts = self.layers_with_role("gt")
        if gts and gts[0] is layer:
            for other in self.layers_with_role("recon"):
                if self.ranges.can_choose(other.uid) and self.layer_range(other) == "auto":
                    other.cube = self.ranges.ranged_cube(other, "auto", self._first_gt())
                    changed.append(other.uid)
        for u in changed:
            self.render_cache.forget(u)
        self.band_axis.forget()
        self.events.layer_range.emit(uid, choice)
        self.events.layers.emit(self.layers)

    def _first_gt(self) -> Layer | None:
        gts = self.layers_with_role("gt")
        return gts[0] if gts else None

    def range_badge(self, layer_or_uid: Layer | int) -> RangeBadge:
        """The layer's value-range badge: its rule in short and in words, and loud warnings when
        the values stay far below 1 or a reconstruction's mean is far from its GT's, plus the
        reader's own loud assumptions (:meth:`LayerRanges.badge`)."""
        return self.ranges.badge(self.layer(_uid(layer_or_uid)), self._first_gt())

    # ------------------------------------------------------------------ geometry
    @property
    def hr_shape(self) -> tuple[int, int] | None:
        """(H, W) of the scene's pixel grid, or None without layers."""
        return self.layer_list.grid

    @property
    def max_scale(self) -> int:
        return self.layer_list.max_scale

    def layer_pixel(self, layer: Layer, row: int, col: int) -> tuple[int, int]:
        """The pixel of ``layer`` covering HR pixel (row, col): (row // s, col // s)."""
        return LayerList.layer_pixel(layer, row, col)

    def footprint(self, layer: Layer, row: int | None = None, col: int | None = None) -> tuple[int, int, int] | None:
        """(top, left, size) in HR pixels of the ``layer`` pixel covering (row, col) (default: the
        clicked pixel); None when nothing is clicked."""
        if row is None or col is None:
            if self.pixel is None:
                return None
            row, col = self.pixel
        ly, lx = self.layer_pixel(layer, row, col)
        return ly * layer.scale, lx * layer.scale, layer.scale

    # ------------------------------------------------------------------ band axis
    @property
    def reference(self) -> Layer | None:
        """The layer that defines the band axis and the shared contrast: the first GT, else the
        first reconstruction, else the first LR, else the first layer."""
        return self.layer_list.reference

    @property
    def n_bands(self) -> int:
        return self.band_axis.n_bands

    @property
    def wavelengths_nm(self) -> np.ndarray | None:
        return self.band_axis.wavelengths_nm

    def band_index(self, nm: float) -> int:
        return self.band_axis.band_index(nm)

    def band_wavelength(self, band: int | None = None) -> float | None:
        return self.band_axis.band_wavelength(band)

    def band_text(self, band: int | None = None) -> str:
        """'550 nm' (or 'band 12' when the wavelengths are unknown: bands are numbered from 1, as in
        the band bar, the titles and the exports; ``band`` is the 0-based index)."""
        return self.band_axis.band_text(band)

    @property
    def band(self) -> int:
        return self.band_axis.band

    def set_band(self, band: int) -> None:
        self.band_axis.set_band(band)

    def step_band(self, delta: int) -> None:
        self.set_band(self.band + int(delta))

    def set_band_by_wavelength(self, nm: float) -> None:
        if self.n_bands:
            self.set_band(self.band_index(float(nm)))

    def is_colour_image(self, layer: Layer) -> bool:
        """A 3-band layer that does not share the reference's band axis (an RGB guide): it is
        always shown as a colour picture."""
        return self.band_axis.is_colour_image(layer)

    def colour_channels(self, layer: Layer) -> tuple[int, int, int]:
        """Channels of a colour image shown as (R, G, B) (:meth:`BandAxis.colour_channels`)."""
        return self.band_axis.colour_channels(layer)

    def follows_band_axis(self, layer: Layer) -> bool:
        """True when ``layer`` has the reference's bands (GT, LR, reconstructions)."""
        return self.band_axis.follows_band_axis(layer)

    def band_for(self, layer: Layer, band: int | None = None) -> int | None:
        """Band of ``layer`` shown for the scene band: the same index on the shared axis, the
        nearest wavelength for other spectral layers, None for colour images."""
        return self.band_axis.band_for(layer, band)

    def layer_wavelengths(self, layer: Layer) -> tuple[np.ndarray, bool, bool]:
        """(x positions, known, nominal) of ``layer``'s bands for plotting spectra."""
        return self.band_axis.layer_wavelengths(layer)

    # ------------------------------------------------------------------ display mode
    @property
    def mode(self) -> DisplayMode:
        return self.display.mode

    def set_mode(self, mode: DisplayMode | str) -> None:
        self.display.set_mode(mode)

    @property
    def rgb_nm(self) -> tuple[float, float, float]:
        return self.display.rgb_nm

    def set_rgb_nm(self, rgb_nm: Sequence[float]) -> None:
        """Wavelengths (nm) shown as red, green and blue in RGB mode (clamped to the band range)."""
        self.display.set_rgb_nm(rgb_nm, self.wavelengths_nm)

    def rgb_bands(self, layer: Layer | None = None) -> tuple[int, int, int]:
        """Bands of ``layer`` (default: the reference) nearest to the RGB wavelengths."""
        return self.band_axis.rgb_bands(layer, self.display.rgb_nm)

    # ------------------------------------------------------------------ clicked pixel / hover
    @property
    def pixel(self) -> tuple[int, int] | None:
        """The clicked pixel, HR (row, col), or None."""
        return self.cursor.pixel

    def set_pixel(self, row: int | None, col: int | None = None) -> None:
        """Select HR pixel (row, col) (clamped to the grid); ``set_pixel(None)`` clears it."""
        self.cursor.set_pixel(self.hr_shape, row, col)

    @property
    def pins(self) -> tuple[tuple[int, int], ...]:
        """Pixels collected with Shift+click (HR (row, col)), oldest first, at most MAX_PINS."""
        return self.cursor.pins

    def add_pin(self, row: float, col: float) -> None:
        """Pin HR pixel (row, col) (clamped); pinning a pinned pixel again unpins it; beyond
        MAX_PINS the oldest pin goes."""
        self.cursor.add_pin(self.hr_shape, row, col)

    def clear_pins(self) -> None:
        self.cursor.clear_pins()

    def lr_pixel(self, layer: Layer) -> tuple[int, int] | None:
        """The pixel of ``layer`` covering the clicked pixel, or None."""
        if self.pixel is None:
            return None
        return self.layer_pixel(layer, *self.pixel)

    @property
    def hover(self) -> Hover | None:
        return self.cursor.hover

    def set_hover(self, uid: int | None, row: float | None = None, col: float | None = None) -> None:
        """Pointer over layer ``uid`` at HR (row, col) (floats allowed); None when it leaves."""
        self.cursor.set_hover(self.hr_shape, uid, row, col)

    def value_at(self, layer: Layer, row: int, col: int) -> np.ndarray:
        """Values of ``layer`` under HR pixel (row, col) in the current band: shape (1,), or
        (3,) for colour images."""
        ly, lx = self.layer_pixel(layer, row, col)
        ly, lx = min(ly, layer.cube.height - 1), min(lx, layer.cube.width - 1)
        band = self.band_for(layer)
        spectrum = layer.cube.spectrum(ly, lx)
        if band is None:
            return spectrum[list(self.colour_channels(layer))]
        return spectrum[band:band + 1]

    def spectra_at(self, row: int | None = None, col: int | None = None) -> list[SpectrumSample]:
        """One spectrum per layer at HR pixel (row, col) (default: the clicked pixel); LR layers
        contribute the pixel whose footprint covers it."""
        if row is None or col is None:
            if self.pixel is None:
                return []
            row, col = self.pixel
        samples = []
        for layer in self._layers:
            ly, lx = self.layer_pixel(layer, row, col)
            if not (0 <= ly < layer.cube.height and 0 <= lx < layer.cube.width):
                continue
            x, known, nominal = self.layer_wavelengths(layer)
            samples.append(SpectrumSample(layer, x, layer.cube.spectrum(ly, lx).astype(np.float64),
                                          (ly, lx), known, nominal))
        return samples

    # ------------------------------------------------------------------ contrast / colormap
    @property
    def shared_contrast(self) -> bool:
        return self.display.shared_contrast

    def set_shared_contrast(self, shared: bool) -> None:
        self.display.set_shared_contrast(shared)

    @property
    def percentiles(self) -> tuple[float, float]:
        return self.display.percentiles

    def set_percentiles(self, low: float, high: float) -> None:
        """Percentile stretch (0 <= low < high <= 100; values outside [0, 100] are clamped)."""
        self.display.set_percentiles(low, high)

    @property
    def colormap(self) -> str:
        return self.display.colormap

    def set_colormap(self, name: str) -> None:
        self.display.set_colormap(name)

    # ------------------------------------------------------------------ view range (zoom)
    @property
    def view_range(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """((x0, x1), (y0, y1)) in HR pixel units shown by every panel; None: the whole image."""
        return self.cursor.view_range

    def set_view_range(self, x_range: Sequence[float] | None, y_range: Sequence[float] | None = None,
                       source: object = None) -> None:
        """Set the shared zoom; ``source`` (the view that changed it) is passed to listeners so
        that it need not apply its own change again."""
        self.cursor.set_view_range(x_range, y_range, source)

    def reset_view(self) -> None:
        """Show the whole image in every panel."""
        self.cursor.reset_view()

    # ------------------------------------------------------------------ ROI and analysis settings
    @property
    def roi(self) -> Roi | None:
        """The region of interest (:class:`app.core.state.selection.Roi`, HR (x, y) points) or None.
        Spectra show its mean ± std per layer; the metrics table can be restricted to it."""
        return self.cursor.roi

    def set_roi(self, roi: Roi | dict | None) -> None:
        """Set (a Roi or its ``to_dict()`` form) or clear (None) the ROI; emits ``events.roi``."""
        self.cursor.set_roi(roi)

    def roi_mask(self) -> np.ndarray | None:
        """(H, W) bool of the HR pixels inside the ROI, or None."""
        return self.cursor.roi_mask(self.hr_shape)

    @property
    def analysis_settings(self) -> AnalysisSettings:
        """Error-map kind, metrics scope and per-band curve metric (app.core.evaluation.analysis)."""
        return self._analysis_settings

    def set_analysis_settings(self, settings: AnalysisSettings | dict | None = None, **changes) -> None:
        """Replace the settings (an AnalysisSettings or its dict form) and/or change fields by
        keyword, e.g. ``set_analysis_settings(scope='roi')``; emits ``events.analysis``."""
        if isinstance(settings, dict):
            settings = AnalysisSettings.from_dict(settings)
        base = settings if settings is not None else self._analysis_settings
        new = AnalysisSettings(**{**base.to_dict(), **changes})
        if new != self._analysis_settings:
            self._analysis_settings = new
            self.events.analysis.emit(new)

    def analysis_scale(self) -> float | None:
        """HR/LR factor for ERGAS: the coarsest LR layer's scale, else a ``scale`` recorded in a
        reconstruction's metadata or provenance, else None."""
        lr_scales = [l.scale for l in self.layers_with_role("lr") if l.scale > 1]
        if lr_scales:
            return float(max(lr_scales))
        for layer in self.layers_with_role("recon"):
            meta = layer.cube.metadata or {}
            for source in (meta, meta.get("provenance") or {}):
                try:
                    value = float(source.get("scale"))
                except (TypeError, ValueError):
                    continue
                if value > 1:
                    return value
        return None

    # ------------------------------------------------------------------ what the views show
    @property
    def rendered(self) -> dict[int, RenderedImage]:
        """The picture each layer's panel shows (by uid); the grid renders, others read."""
        return dict(self._rendered)

    def set_rendered(self, frames: dict[int, RenderedImage]) -> None:
        """New pictures (of some or all layers; those of closed layers are ignored); emits
        ``events.rendered``."""
        live = {l.uid for l in self._layers}
        self._rendered.update({uid: r for uid, r in frames.items() if uid in live})
        self.events.rendered.emit(self.rendered)

    @property
    def ab(self) -> ABChoice:
        return self._ab

    def set_ab(self, choice: ABChoice | None = None, **changes) -> None:
        """Replace the A/B comparison, or change some of its fields by keyword; a layer uid that
        is not open keeps the current one. Emits ``events.ab`` when it changed."""
        new = dataclasses.replace(choice if choice is not None else self._ab, **changes)
        live = {l.uid for l in self._layers}
        if new.a_uid is not None and new.a_uid not in live:
            new = dataclasses.replace(new, a_uid=self._ab.a_uid)
        if new.b_uid is not None and new.b_uid not in live:
            new = dataclasses.replace(new, b_uid=self._ab.b_uid, b_chosen=self._ab.b_chosen)
        if new.divider_x is not None:
            new = dataclasses.replace(new, divider_x=float(new.divider_x))
        if new != self._ab:
            self._ab = new
            self.events.ab.emit(new)

    def _follow_layers_in_ab(self) -> None:
        """Default pair: A the reference (GT), B the newest reconstruction (or the next layer)
        until the user picks B; the divider in the middle when it is off the image."""
        ab, layers = self._ab, self._layers
        uids = [l.uid for l in layers]
        a, b, chosen = ab.a_uid, ab.b_uid, ab.b_chosen
        if a not in uids:
            a = None
        if b not in uids:
            b, chosen = None, False
        if not chosen:
            b = None
        if a is None and layers:
            ref = self.reference
            a = ref.uid if ref is not None else layers[0].uid
        if b is None and len(layers) > 1:
            recons = [l for l in layers if l.role == "recon" and l.uid != a]
            others = [l for l in layers if l.uid != a]
            b = (recons[-1] if recons else others[0]).uid
        divider = ab.divider_x
        shape = self.hr_shape
        if shape is not None and not (divider is not None and 0 < divider < shape[1]):
            divider = shape[1] / 2
        new = dataclasses.replace(ab, a_uid=a, b_uid=b, b_chosen=chosen, divider_x=divider)
        if new != ab:
            self._ab = new
            self.events.ab.emit(new)

    @property
    def spectra_choice(self) -> SpectraChoice:
        return self._spectra

    def set_spectra_choice(self, choice: SpectraChoice | None = None, **changes) -> None:
        """Which spectra are shown (residuals, hidden layers); emits ``events.spectra``."""
        new = dataclasses.replace(choice if choice is not None else self._spectra, **changes)
        new = dataclasses.replace(new, hidden_uids=frozenset(int(u) for u in new.hidden_uids))
        if new != self._spectra:
            self._spectra = new
            self.events.spectra.emit(new)

    @property
    def analysis_result(self) -> Any:
        """The analysis on screen (an ``app.core.evaluation.analysis.AnalysisResult``) or None."""
        return self._analysis_result

    @property
    def analysis_stale(self) -> bool:
        """True when the scene changed since :attr:`analysis_result` was computed (exports then
        compute afresh)."""
        return self._analysis_stale

    def set_analysis_result(self, result: Any = None, *, stale: bool = False) -> None:
        """The analysis view's newest result (None: none on screen) and whether the scene has
        changed since it was asked for; emits ``events.analysis_result``."""
        self._analysis_result = result
        self._analysis_stale = bool(stale)
        self.events.analysis_result.emit(result, self._analysis_stale)

    # ------------------------------------------------------------------ rendering
    def keep_render_cache(self, entries: Mapping[tuple, Any]) -> None:
        """Keep what a :func:`render` computed anew (its ``new_entries``), for the layers still
        open with the same cube. Call it on the thread that owns the scene (the GUI thread)."""
        self.render_cache.keep(entries, ((l.uid, id(l.cube)) for l in self._layers))

    def snapshot(self, steps: Mapping[int, int] | None = None) -> "RenderRequest":
        """Everything :func:`render` needs, frozen (safe to hand to a worker thread): the layers,
        choices and a read-only copy of the render cache. ``steps``: per layer uid, show every
        step-th pixel (default 1)."""
        layers = tuple(self._layers)
        ref = self.reference
        return RenderRequest(
            layers=layers,
            mode=self.mode,
            bands={l.uid: self.band_for(l) for l in layers},
            rgb_bands={l.uid: self.rgb_bands(l) for l in layers},
            colour_image={l.uid: self.is_colour_image(l) for l in layers},
            colour_channels={l.uid: self.colour_channels(l) for l in layers if self.is_colour_image(l)},
            shares_contrast={l.uid: self.shared_contrast and ref is not None and self.follows_band_axis(l)
                             for l in layers},
            reference_uid=None if ref is None else ref.uid,
            percentiles=self.percentiles,
            render_cache=self.render_cache.read_only(),
            steps=types.MappingProxyType({int(k): max(int(v), 1) for k, v in (steps or {}).items()}),
        )

    def render_cost(self) -> int:
        """Rough number of values :func:`render` reads now (to decide on a worker thread).
        A lazy cube counts whole: one band of a band-interleaved file touches every page, and
        a file not in the page cache is read from the disk."""
        total = 0
        cached = self.render_cache.uids_with("true")
        for layer in self._layers:
            h, w, b = layer.cube.shape
            if layer.cube.is_lazy or (self.mode == DisplayMode.TRUE_COLOUR and not self.is_colour_image(layer)
                                      and layer.uid not in cached):
                total += h * w * b
            else:
                total += h * w * 3
        return total


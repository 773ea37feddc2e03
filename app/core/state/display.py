"""How the scene is displayed, free of Qt: the display mode, colormap, contrast (shared or per
layer, percentile stretch), the RGB wavelengths, the method colours, and the band axis (the scene
band, which band of each layer it shows, which layers are colour images), with the helpers that
turn pictures into levels.

Parts (each emits its own events of the scene's :class:`~app.core.state.events.SceneEvents`):
:class:`Display` (mode, rgb, contrast, colormap), :class:`MethodColours` (colours) and
:class:`BandAxis` (band), the last two reading the scene's :class:`~app.core.state.layers.LayerList`.
"""
from __future__ import annotations

import math
import re
from enum import Enum
from typing import Sequence

import numpy as np

from app.core.errors import HsiError
from app.core.state.events import SceneEvents
from app.core.state.layers import Layer, LayerList

COLORMAPS: tuple[str, ...] = ("gray", "viridis", "inferno", "magma", "plasma", "cividis", "turbo")
DEFAULT_RGB_NM: tuple[float, float, float] = (640.0, 550.0, 460.0)
# Where an RGB guide's channels sit on the wavelength axis when the file does not say: the
# dominant wavelengths of the sRGB primaries (R, G, B), good enough to place markers in a plot.
NOMINAL_RGB_NM: tuple[float, float, float] = (611.0, 549.0, 464.0)
# Method colours (curves, legends, figures): distinct on dark and light backgrounds and from the
# GT (text colour), LR (orange) and guide (light blue) curves. A method keeps the colour it was
# given first, whatever its panel's position; after these run out colours repeat.
METHOD_COLOURS: tuple[str, ...] = ("#c77dff", "#2ec4b6", "#f15bb5", "#9ef01a", "#00bbf9", "#ff006e",
                                   "#fee440", "#4361ee", "#e76f51", "#80ffdb", "#b5838d", "#7209b7")


class DisplayMode(str, Enum):
    """How each panel turns its cube into a picture."""

    BAND = "band"          # one band, colormapped
    RGB = "rgb"            # three bands picked by wavelength, shown as R, G, B
    TRUE_COLOUR = "true"   # CIE 1931 / D65 rendering of the whole spectrum (app.core.science.color)

    @property
    def title(self) -> str:
        return {"band": "Single band", "rgb": "RGB composite", "true": "True colour"}[self.value]



def percentile_levels(image: np.ndarray, low_pct: float, high_pct: float,
                      max_samples: int = 1 << 16) -> tuple[float, float]:
    """(low, high) percentiles of the finite values of ``image`` (subsampled when huge: a
    regular 2-D grid of about ``max_samples`` pixels, read without copying the whole image).

    Never returns an empty interval: a constant image gets (v, v + 1e-6 * max(1, |v|)).
    """
    image = np.asarray(image)
    if image.ndim >= 2 and image.size > max_samples:
        step = int(math.ceil(math.sqrt(image.size / max_samples)))
        image = image[::step, ::step]
    values = np.asarray(image, dtype=np.float32).reshape(-1)
    if values.size > max_samples:
        values = values[:: int(math.ceil(values.size / max_samples))]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low_pct, high_pct])
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        hi = lo + 1e-6 * max(1.0, abs(lo))
    return lo, hi


def channel_levels(image_hw3: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """(3, 2) per-channel percentile levels of an (H, W, 3) image."""
    return np.array([percentile_levels(image_hw3[..., c], low_pct, high_pct) for c in range(3)],
                    dtype=np.float64)


def nearest_band(wavelengths_nm: np.ndarray | None, bands: int, nm: float) -> int:
    if wavelengths_nm is None:
        return int(np.clip(round(nm), 0, bands - 1))
    return int(np.argmin(np.abs(np.asarray(wavelengths_nm) - nm)))



class Display:
    """Display mode, RGB wavelengths, contrast and colormap (events ``mode``, ``rgb``,
    ``contrast``, ``colormap``). Setters validate, clamp and emit only on a real change."""

    def __init__(self, events: SceneEvents):
        self._events = events
        self._mode = DisplayMode.BAND
        self._rgb_nm: tuple[float, float, float] = DEFAULT_RGB_NM
        self._shared_contrast = True
        self._percentiles: tuple[float, float] = (1.0, 99.0)
        self._colormap = "gray"

    @property
    def mode(self) -> DisplayMode:
        return self._mode

    def set_mode(self, mode: DisplayMode | str) -> None:
        try:
            mode = DisplayMode(mode)
        except ValueError:
            raise ValueError(f"unknown display mode {mode!r}; expected one of "
                             f"{', '.join(m.value for m in DisplayMode)}") from None
        if mode != self._mode:
            self._mode = mode
            self._events.mode.emit(mode)

    @property
    def rgb_nm(self) -> tuple[float, float, float]:
        return self._rgb_nm

    def set_rgb_nm(self, rgb_nm: Sequence[float], wavelengths_nm: np.ndarray | None = None) -> None:
        """Wavelengths (nm) shown as red, green and blue in RGB mode (clamped to the range of
        ``wavelengths_nm``, the band axis, when known)."""
        values = [float(v) for v in rgb_nm]
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"RGB wavelengths must be three finite numbers, got {rgb_nm!r}")
        wl = wavelengths_nm
        if wl is not None:
            lo, hi = float(np.min(wl)), float(np.max(wl))
            values = [min(max(v, lo), hi) for v in values]
        rgb = (values[0], values[1], values[2])
        if rgb != self._rgb_nm:
            self._rgb_nm = rgb
            self._events.rgb.emit(rgb)

    @property
    def shared_contrast(self) -> bool:
        return self._shared_contrast

    def set_shared_contrast(self, shared: bool) -> None:
        shared = bool(shared)
        if shared != self._shared_contrast:
            self._shared_contrast = shared
            self._events.contrast.emit(self._shared_contrast, self._percentiles)

    @property
    def percentiles(self) -> tuple[float, float]:
        return self._percentiles

    def set_percentiles(self, low: float, high: float) -> None:
        """Percentile stretch (0 <= low < high <= 100; values outside [0, 100] are clamped)."""
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"percentiles must be finite, got {low}, {high}")
        low, high = min(max(low, 0.0), 100.0), min(max(high, 0.0), 100.0)
        if not low < high:
            raise ValueError(f"the low percentile ({low:g}) must be below the high one ({high:g})")
        if (low, high) != self._percentiles:
            self._percentiles = (low, high)
            self._events.contrast.emit(self._shared_contrast, self._percentiles)

    @property
    def colormap(self) -> str:
        return self._colormap

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"unknown colormap {name!r}; expected one of {', '.join(COLORMAPS)}")
        if name != self._colormap:
            self._colormap = name
            self._events.colormap.emit(name)


class MethodColours:
    """Method name -> colour (event ``colours``). A colour is kept when its layer closes, so that
    a method opened again (or restored from a session) comes back in its colour."""

    def __init__(self, layers: LayerList, events: SceneEvents):
        self._layers = layers
        self._events = events
        self._colours: dict[str, str] = {}

    @property
    def colours(self) -> dict[str, str]:
        return dict(self._colours)

    def colour(self, name: str) -> str:
        """The colour of method ``name``, given on first use: the first palette colour no open
        reconstruction uses (so 8 methods get 8 colours), else the least used one."""
        colour = self._colours.get(name)
        if colour is None:
            colour = self._free_colour(exclude=name)
            self._colours[name] = colour
        return colour

    def _free_colour(self, exclude: str = "") -> str:
        used = [self._colours.get(l.name) for l in self._layers if l.role == "recon" and l.name != exclude]
        counts = {c: used.count(c) for c in METHOD_COLOURS}
        return min(METHOD_COLOURS, key=lambda c: (counts[c], METHOD_COLOURS.index(c)))

    def set_colour(self, name: str, colour: str) -> None:
        colour = str(colour).strip()
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
            raise ValueError(f"a method colour must be '#rrggbb', got {colour!r}")
        if self._colours.get(name) != colour.lower():
            self._colours[name] = colour.lower()
            self._events.colours.emit(self.colours)

    def set_colours(self, colours: dict[str, str]) -> None:
        """Colours by method name (a restored session's); others keep theirs."""
        changed = False
        for name, colour in dict(colours).items():
            colour = str(colour).strip().lower()
            if not re.fullmatch(r"#[0-9a-f]{6}", colour):
                raise ValueError(f"method {name!r}: a colour must be '#rrggbb', got {colour!r}")
            if self._colours.get(str(name)) != colour:
                self._colours[str(name)] = colour
                changed = True
        if changed:
            self._events.colours.emit(self.colours)

    def renamed(self, layer: Layer, name: str) -> None:
        """``layer`` (about to be) renamed to ``name``: a reconstruction keeps its colour."""
        if layer.role == "recon" and name not in self._colours and layer.name in self._colours:
            self._colours[name] = self._colours[layer.name]


class BandAxis:
    """The scene band (event ``band``) on the reference layer's band axis, and how every layer
    follows it: the same index on the shared axis, the nearest wavelength for other spectral
    layers, none for colour images (an RGB guide)."""

    def __init__(self, layers: LayerList, events: SceneEvents):
        self._layers = layers
        self._events = events
        self._band = 0
        self._follows_cache: dict[tuple, bool] = {}

    @property
    def n_bands(self) -> int:
        ref = self._layers.reference
        return ref.cube.bands if ref is not None else 0

    @property
    def wavelengths_nm(self) -> np.ndarray | None:
        ref = self._layers.reference
        return None if ref is None else ref.cube.wavelengths_nm

    def band_index(self, nm: float) -> int:
        return nearest_band(self.wavelengths_nm, max(self.n_bands, 1), nm)

    def band_wavelength(self, band: int | None = None) -> float | None:
        wl = self.wavelengths_nm
        if wl is None or self.n_bands == 0:
            return None
        return float(wl[self._band if band is None else int(band)])

    def band_text(self, band: int | None = None) -> str:
        """'550 nm' (or 'band 12' when the wavelengths are unknown: bands are numbered from 1, as in
        the band bar, the titles and the exports; ``band`` is the 0-based index)."""
        band = self._band if band is None else int(band)
        nm = self.band_wavelength(band)
        if nm is None:
            return f"band {band + 1}"
        return f"{nm:.0f} nm" if abs(nm - round(nm)) < 0.05 else f"{nm:.1f} nm"

    @property
    def band(self) -> int:
        return self._band

    def set_band(self, band: int) -> None:
        if self.n_bands == 0:
            return
        band = int(np.clip(int(band), 0, self.n_bands - 1))
        if band != self._band:
            self._band = band
            self._events.band.emit(band)

    def follow_layers(self, had_reference: bool, old_reference: Layer | None) -> None:
        """After the layers changed (emits nothing; the scene does): a new reference keeps the
        wavelength shown (or starts near 550 nm, else mid-axis), and the band stays on the axis."""
        self._follows_cache.clear()
        reference = self._layers.reference
        if reference is not old_reference:
            if reference is not None and old_reference is not None \
                    and old_reference.cube.wavelengths_nm is not None and self.wavelengths_nm is not None:
                old_nm = float(old_reference.cube.wavelengths_nm[min(self._band, old_reference.cube.bands - 1)])
                self._band = self.band_index(old_nm)
            elif reference is not None and not had_reference:
                self._band = self.band_index(550.0) if self.wavelengths_nm is not None else self.n_bands // 2
        self._band = int(np.clip(self._band, 0, max(self.n_bands - 1, 0)))

    def forget(self) -> None:
        """Drop what :meth:`follows_band_axis` remembered (a layer's cube changed)."""
        self._follows_cache.clear()

    def is_colour_image(self, layer: Layer) -> bool:
        """A 3-band layer that does not share the reference's band axis (an RGB guide): it is
        always shown as a colour picture."""
        return layer.cube.bands == 3 and (layer.role == "guide" or not self.follows_band_axis(layer))

    def colour_channels(self, layer: Layer) -> tuple[int, int, int]:
        """Channels of a colour image shown as (R, G, B): longest wavelength first when the
        wavelengths are known (a B, G, R file still looks right), else as stored."""
        wl = layer.cube.wavelengths_nm
        if wl is None or layer.cube.bands != 3:
            return (0, 1, 2)
        order = np.argsort(-np.asarray(wl, dtype=np.float64), kind="stable")
        return (int(order[0]), int(order[1]), int(order[2]))

    def follows_band_axis(self, layer: Layer) -> bool:
        """True when ``layer`` has the reference's bands (GT, LR, reconstructions)."""
        ref = self._layers.reference
        if ref is None or layer.cube.bands != ref.cube.bands:
            return False
        wl_a, wl_b = layer.cube.wavelengths_nm, ref.cube.wavelengths_nm
        if wl_a is None or wl_b is None:
            return True
        # asked for every layer at every click and band change: remembered per pair of arrays
        # (the entries are dropped when the layers change)
        key = (id(layer.cube), id(wl_a), id(ref.cube), id(wl_b))
        found = self._follows_cache.get(key)
        if found is None:
            found = self._follows_cache[key] = bool(np.allclose(wl_a, wl_b, atol=0.5))
        return found

    def band_for(self, layer: Layer, band: int | None = None) -> int | None:
        """Band of ``layer`` shown for the scene band: the same index on the shared axis, the
        nearest wavelength for other spectral layers, None for colour images."""
        band = self._band if band is None else int(band)
        if self.is_colour_image(layer):
            return None
        if self.follows_band_axis(layer):
            return band
        nm = self.band_wavelength(band)
        if nm is not None and layer.cube.wavelengths_nm is not None:
            return nearest_band(layer.cube.wavelengths_nm, layer.cube.bands, nm)
        return int(min(band, layer.cube.bands - 1))

    def layer_wavelengths(self, layer: Layer) -> tuple[np.ndarray, bool, bool]:
        """(x positions, known, nominal) of ``layer``'s bands for plotting spectra."""
        wl = layer.cube.wavelengths_nm
        if wl is not None:
            return np.asarray(wl, dtype=np.float64), True, False
        ref_wl = self.wavelengths_nm
        if ref_wl is not None and layer.cube.bands == len(ref_wl):
            return np.asarray(ref_wl, dtype=np.float64), True, False
        srf_name = (layer.cube.metadata or {}).get("srf")
        if srf_name and ref_wl is not None:
            try:  # a guide made with a known SRF: its bands at their centre wavelengths
                from app.core.science.srf import band_centres_nm

                centres = np.asarray(band_centres_nm(srf_name, ref_wl), dtype=np.float64)
                if centres.shape == (layer.cube.bands,):
                    return centres, True, False
            except (HsiError, ValueError, KeyError):
                pass
        if layer.cube.bands == 3 and ref_wl is not None:
            return np.asarray(NOMINAL_RGB_NM, dtype=np.float64), True, True
        return np.arange(1, layer.cube.bands + 1, dtype=np.float64), False, False  # band numbers, from 1


    def rgb_bands(self, layer: Layer | None, rgb_nm: Sequence[float]) -> tuple[int, int, int]:
        """Bands of ``layer`` (default: the reference) nearest to the wavelengths ``rgb_nm``."""
        layer = layer or self._layers.reference
        if layer is None:
            return (0, 0, 0)
        wl = layer.cube.wavelengths_nm
        if wl is None and self.follows_band_axis(layer):
            wl = self.wavelengths_nm
        if wl is None:  # no wavelengths anywhere: spread over the bands, red at the long end
            b = layer.cube.bands
            return (b - 1, b // 2, 0)
        return tuple(nearest_band(wl, layer.cube.bands, nm) for nm in rgb_nm)  # type: ignore[return-value]

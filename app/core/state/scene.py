"""The viewer's state, free of Qt: layers, band, display mode, clicked pixel, contrast, zoom.

Views (``app.qt``) take a :class:`Scene`, subscribe to its :class:`Event` lists and write user
changes back through its setters; they never talk to each other. Every setter validates and
clamps its input and emits only when the value really changed, so a view that writes back the
value it was just given does not start a loop.

Geometry: all layers live on one high-resolution (HR) pixel grid, the largest layer's (H, W).
A layer of size (H / s, W / s) for an integer ``s`` (the LR input) covers the HR grid at its true
footprint: its pixel (ly, lx) spans HR rows ly*s .. ly*s+s-1 and columns lx*s .. lx*s+s-1, so the
LR pixel covering HR pixel (y, x) is (y // s, x // s).

Rendering (:func:`render`) turns a frozen :class:`RenderRequest` into display images and levels;
it is a pure function so that a worker thread can run it on big cubes. A request holds a read-only
copy of the scene's render cache; what :func:`render` computes anew goes into a dict of its own
that the GUI thread hands back with :meth:`Scene.keep_render_cache`, so a worker never writes
anything the GUI thread reads. A request can ask for every ``step``-th pixel of a layer
(``steps``): a memory-mapped cube larger than its panel on screen is read at those pixels only.
"""
from __future__ import annotations

import math
import re
import threading
import types
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from app.core.state.selection import ABChoice, AnalysisSettings, Roi, SpectraChoice
from app.core.cube import Cube
from app.core.io.value_range import RangeUndecided, put_on_gt_scale
from app.core.io.value_range import DARK_LIMIT, LOUD, MEAN_RATIO_LIMIT
from app.core.errors import HsiError, ShapeMismatchError

ROLES: tuple[str, ...] = ("gt", "lr", "guide", "recon")
ROLE_TITLES: dict[str, str] = {"gt": "GT", "lr": "LR", "guide": "Guide", "recon": "Recon"}
ROLE_DESCRIPTIONS: dict[str, str] = {
    "gt": "ground truth (reference)",
    "lr": "low-resolution input",
    "guide": "guide image (RGB / MSI)",
    "recon": "reconstruction",
}
MAX_PINS = 8
# band planes of memory-mapped cubes kept for the next render (a contrast change, a band revisited)
RENDER_CACHE_PLANE_BYTES = 96 * 1024 * 1024
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


# ---------------------------------------------------------------------------------- events
class Event:
    """A plain list of callbacks (no Qt): ``connect(cb)``, ``disconnect(cb)``, ``emit(*args)``."""

    def __init__(self, name: str = ""):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any] | None = None) -> None:
        """Remove one callback (no error when absent), or all when ``callback`` is None."""
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self)} callbacks)"


class SceneEvents:
    """The events a :class:`Scene` emits, with what each passes to its callbacks."""

    def __init__(self):
        self.layers = Event("layers")              # (layers: tuple[Layer, ...])
        self.band = Event("band")                  # (band: int)
        self.mode = Event("mode")                  # (mode: DisplayMode)
        self.rgb = Event("rgb")                    # (rgb_nm: tuple[float, float, float])
        self.pixel = Event("pixel")                # (pixel: tuple[int, int] | None), HR (row, col)
        self.pins = Event("pins")                  # (pins: tuple[tuple[int, int], ...]), HR (row, col)
        self.hover = Event("hover")                # (hover: Hover | None)
        self.contrast = Event("contrast")          # (shared: bool, percentiles: (low, high))
        self.colormap = Event("colormap")          # (name: str)
        self.view_range = Event("view_range")      # (view_range | None, source: object)
        self.roi = Event("roi")                    # (roi: app.core.state.selection.Roi | None)
        self.analysis = Event("analysis")          # (settings: app.core.state.selection.AnalysisSettings)
        self.colours = Event("colours")            # (method_colours: dict[str, str])
        self.rendered = Event("rendered")          # (frames: dict[int, RenderedImage]), pictures on screen
        self.ab = Event("ab")                      # (choice: app.core.state.selection.ABChoice)
        self.spectra = Event("spectra")            # (choice: app.core.state.selection.SpectraChoice)
        self.analysis_result = Event("analysis_result")  # (result: AnalysisResult | None, stale: bool)
        self.layer_range = Event("layer_range")    # (uid: int, choice: 'auto' | 'stated' | 'max' | float)

    def all(self) -> list[Event]:
        return [v for v in vars(self).values() if isinstance(v, Event)]


# ---------------------------------------------------------------------------------- layers
@dataclass(eq=False)
class Layer:
    """One cube shown in the viewer.

    Attributes:
        cube: the data.
        role: one of ``ROLES``.
        name: display name.
        uid: unique within the scene, stable while the layer exists.
        scale: integer factor from this layer's grid to the scene's HR grid (1 for HR layers).
    """

    cube: Cube
    role: str
    name: str
    uid: int
    scale: int = 1

    @property
    def title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role)

    @property
    def label(self) -> str:
        """'GT · name' as used in legends and panel titles."""
        return f"{self.title} · {self.name}"


@dataclass(frozen=True)
class Hover:
    """The pointer over a panel: layer uid and HR (row, col); ``inside`` is False off the image."""

    uid: int
    row: int
    col: int
    inside: bool = True


@dataclass
class SpectrumSample:
    """One curve of the spectra plot.

    ``wavelengths_nm`` is the x-axis (band indices when ``wavelengths_known`` is False); ``pixel``
    is the (row, col) in the layer's own grid; ``nominal`` says the x positions are assumed.
    """

    layer: Layer
    wavelengths_nm: np.ndarray
    values: np.ndarray
    pixel: tuple[int, int]
    wavelengths_known: bool = True
    nominal: bool = False

    @property
    def label(self) -> str:
        note = ", nominal λ" if self.nominal else ""
        return f"{self.layer.label} (r {self.pixel[0]}, c {self.pixel[1]}{note})"


def guess_role(path: str | Path, existing_roles: Iterable[str] = ()) -> str:
    """A first guess of a file's role from its name (the user confirms it in a dialog)."""
    stem = Path(path).name.lower()
    for ch in "-. ":
        stem = stem.replace(ch, "_")
    tokens = set(stem.split("_"))
    existing = set(existing_roles)

    def has(*words: str) -> bool:
        return any(w in tokens for w in words) or any(stem.startswith(w + "_") for w in words)

    if has("gt", "groundtruth", "truth", "hr", "ref", "reference", "orig", "original") \
            or "ground_truth" in stem:
        return "gt"
    if has("lr", "lowres", "low", "input", "lrhsi", "down", "downsampled") or "low_res" in stem:
        return "lr"
    if has("rgb", "msi", "guide", "hrmsi", "pan", "hrrgb"):
        return "guide"
    if has("sr", "recon", "reconstruction", "pred", "prediction", "output", "out", "fused", "result"):
        return "recon"
    return "recon" if "gt" in existing else "gt"


# ---------------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------------- scene
def _on_gt_scale(pred: Cube, gt: Cube) -> Cube:
    """A reconstruction read from a file, with its values on its GT's scale (as compare reads it);
    unchanged when no rule fits (its own rule stays, and the analysis says what it compares)."""
    try:
        return put_on_gt_scale(pred, gt)
    except RangeUndecided:
        return pred


# ---------------------------------------------------------------------------------- value range of a layer
RANGE_CHOICES: tuple[str, ...] = ("auto", "stated", "max")   # or a positive number: divide by it
RANGE_CHOICE_TITLES: dict[str, str] = {
    "auto": "Auto (the file, then the GT's scale)",
    "stated": "As the file states",
    "max": "Divide by the maximum",
}
# sampled statistics of a cube for the badge's warnings: this many bands, about this many pixels each
RANGE_SAMPLE_BANDS = 16
RANGE_SAMPLE_PIXELS = 1 << 16


def parse_range_choice(value) -> str | float:
    """A layer's value range: 'auto', 'stated', 'max' or a positive finite divisor."""
    if isinstance(value, str) and value.strip().lower() in RANGE_CHOICES:
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"a value range is auto, stated, max or a positive number, not {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"the divisor must be a positive finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class _ReadRange:
    """How the reader turned a file's stored values into reflectance (the layer's 'auto')."""

    scale: float
    offset: float
    rule: str
    text: str
    warnings: tuple[str, ...]
    band_gain: np.ndarray | None = None
    band_offset: np.ndarray | None = None

    @classmethod
    def of(cls, cube: Cube) -> "_ReadRange | None":
        if cube.source_path is None:
            return None  # computed in the app: reflectance, nothing was decided
        meta = cube.metadata or {}
        return cls(float(cube.scale), float(cube.offset), str(meta.get("value_rule") or "unit"), cube.normalisation,
                   tuple(meta.get("warnings", ())), getattr(cube, "band_gain", None), getattr(cube, "band_offset", None))

    def apply(self, cube: Cube) -> Cube:
        """``cube`` (same stored values) read with this decision again."""
        meta = {k: v for k, v in (cube.metadata or {}).items() if k != "range_override"}
        meta.update(value_rule=self.rule, warnings=list(self.warnings))
        options = dict(meta.get("open_options") or {})
        if options.pop("normalise", None) is not None:
            meta["open_options"] = options
        return cube.replace(scale=self.scale, offset=self.offset, normalisation=self.text, metadata=meta,
                            **_band_gains(cube, self.band_gain, self.band_offset))


def _band_gains(cube: Cube, gain, offset) -> dict:
    """replace() keywords setting a cube's per-band calibration (cubes without one: none)."""
    return {"band_gain": gain, "band_offset": offset} if hasattr(cube, "band_gain") else {}


def _factor_text(multiplier: float) -> str:
    """'÷5000' for a multiplier of 1/5000, '×0.37' otherwise."""
    if multiplier == 1.0:
        return "×1"
    if multiplier > 0:
        d = 1.0 / multiplier
        if d >= 2 and abs(d - round(d)) <= 1e-6 * d:
            return f"÷{round(d)}"
        if d >= 2:
            return f"÷{d:.4g}"
    return f"×{multiplier:.3g}"


def range_badge_text(cube: Cube) -> str:
    """The value-range rule of ``cube`` in a few characters ('stated ÷5000', '÷4091 max', 'GT scale
    ÷5000', 'PNG ÷65535', 'unit', '÷2500 set' for a choice made in the viewer)."""
    meta = cube.metadata or {}
    rule = meta.get("value_rule")
    f = _factor_text(float(cube.scale))
    if getattr(cube, "band_gain", None) is not None:
        f = "per band" if cube.scale == 1.0 else f"per band {f}"
    if cube.offset:
        f += f" {cube.offset:+.3g}"
    override = meta.get("range_override")
    if override == "max":
        return f"{f} max (set)"
    if override is not None and override != "stated":
        return f"{f} set"
    if rule is None or (f == "×1" and (rule == "unit" or cube.source_path is None)):
        return "unit"
    if rule == "stated":
        return f"stated {f}"
    if rule == "convention":
        return f"PNG {f}" if meta.get("format") == "png-folder" else f"{f} convention"
    if rule == "gt-scale":
        return f"GT scale {f}"
    if rule in ("8bit", "16bit"):
        return f"{f} {rule[:-3]}-bit"
    return f"{f} {rule}"


@dataclass(frozen=True)
class RangeBadge:
    """What a layer's value-range badge shows: ``text`` (short), ``tooltip`` (the rule in words,
    what was chosen, what looks wrong), ``warnings`` (non-empty: the badge is shown loud),
    ``choice`` (the layer's range choice), ``can_choose`` (False for cubes computed in the app)."""

    text: str
    tooltip: str
    warnings: tuple[str, ...]
    choice: str | float
    can_choose: bool

    @property
    def loud(self) -> bool:
        return bool(self.warnings)


class Scene:
    """Ordered layers plus everything the views share. See the module docstring."""

    def __init__(self):
        self.events = SceneEvents()
        self._layers: list[Layer] = []
        self._next_uid = 1
        self._grid: tuple[int, int] | None = None  # (H, W) of the HR pixel grid
        self._band = 0
        self._mode = DisplayMode.BAND
        self._rgb_nm: tuple[float, float, float] = DEFAULT_RGB_NM
        self._pixel: tuple[int, int] | None = None
        self._pins: list[tuple[int, int]] = []
        self._hover: Hover | None = None
        self._shared_contrast = True
        self._percentiles: tuple[float, float] = (1.0, 99.0)
        self._colormap = "gray"
        self._view_range: tuple[tuple[float, float], tuple[float, float]] | None = None
        # what render() made that does not change with the band (colour pictures), by
        # (kind, uid, id(cube), ...): written on the GUI thread only (keep_render_cache)
        self._render_cache: dict[tuple, Any] = {}
        self._roi: Roi | None = None
        self._analysis_settings = AnalysisSettings()
        self._follows_cache: dict[tuple, bool] = {}
        # method name -> colour; kept when a layer closes, so that a method opened again (or
        # restored from a session) comes back in its colour
        self._method_colours: dict[str, str] = {}
        # What the views show, shared so that no view reads another: the pictures the panels
        # show, the A/B comparison, the spectra shown and the analysis on screen.
        self._rendered: dict[int, RenderedImage] = {}
        self._ab = ABChoice()
        self._spectra = SpectraChoice()
        self._analysis_result: Any = None   # app.core.evaluation.analysis.AnalysisResult (a higher floor)
        self._analysis_stale = True
        # value range per layer: the reader's decision ('auto'), the user's choice, sampled statistics
        self._read_ranges: dict[int, _ReadRange] = {}
        self._range_choices: dict[int, str | float] = {}
        self._range_kept: dict[int, tuple[Cube, float, float]] = {}

    # ------------------------------------------------------------------ method colours
    @property
    def method_colours(self) -> dict[str, str]:
        return dict(self._method_colours)

    def method_colour(self, name: str) -> str:
        """The colour of method ``name``, given on first use: the first palette colour no open
        reconstruction uses (so 8 methods get 8 colours), else the least used one."""
        colour = self._method_colours.get(name)
        if colour is None:
            colour = self._free_colour(exclude=name)
            self._method_colours[name] = colour
        return colour

    def _free_colour(self, exclude: str = "") -> str:
        used = [self._method_colours.get(l.name) for l in self._layers if l.role == "recon" and l.name != exclude]
        counts = {c: used.count(c) for c in METHOD_COLOURS}
        return min(METHOD_COLOURS, key=lambda c: (counts[c], METHOD_COLOURS.index(c)))

    def set_method_colour(self, name: str, colour: str) -> None:
        colour = str(colour).strip()
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
            raise ValueError(f"a method colour must be '#rrggbb', got {colour!r}")
        if self._method_colours.get(name) != colour.lower():
            self._method_colours[name] = colour.lower()
            self.events.colours.emit(self.method_colours)

    def set_method_colours(self, colours: dict[str, str]) -> None:
        """Colours by method name (a restored session's); others keep theirs."""
        changed = False
        for name, colour in dict(colours).items():
            colour = str(colour).strip().lower()
            if not re.fullmatch(r"#[0-9a-f]{6}", colour):
                raise ValueError(f"method {name!r}: a colour must be '#rrggbb', got {colour!r}")
            if self._method_colours.get(str(name)) != colour:
                self._method_colours[str(name)] = colour
                changed = True
        if changed:
            self.events.colours.emit(self.method_colours)

    # ------------------------------------------------------------------ layers
    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def layer(self, uid: int) -> Layer:
        for layer in self._layers:
            if layer.uid == uid:
                return layer
        raise KeyError(f"no layer with uid {uid}")

    def layers_with_role(self, role: str) -> list[Layer]:
        return [layer for layer in self._layers if layer.role == role]

    @staticmethod
    def _grid_of(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        return max(s[0] for s in shapes), max(s[1] for s in shapes)

    @staticmethod
    def _scale_on(grid: tuple[int, int], shape_hw: tuple[int, int]) -> int | None:
        """Integer s with shape * s == grid, or None."""
        (gh, gw), (h, w) = grid, shape_hw
        if h <= 0 or w <= 0 or gh % h or gw % w:
            return None
        s = gh // h
        return s if gw // w == s else None

    def add_layer(self, cube: Cube, role: str, name: str | None = None) -> Layer:
        """Add a cube; it goes after the layers of the same or an earlier role (gt, lr, guide,
        recon), so panels keep that order whatever order files finish loading in.

        Raises ValueError for an unknown role and ShapeMismatchError when the cube cannot be
        placed on the scene's pixel grid (its size must divide the largest size evenly).
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        h, w, _ = cube.shape
        shapes = [l.cube.shape[:2] for l in self._layers] + [(h, w)]
        grid = self._grid_of(shapes + ([self._grid] if self._grid else []))
        scales = [self._scale_on(grid, s) for s in shapes]
        if any(s is None for s in scales):
            bad = [(lay.label, lay.cube.shape[:2]) for lay, s in zip(self._layers, scales) if s is None]
            if scales[-1] is None:
                bad.append((name or cube.name, (h, w)))
            where = f"{cube.source_path}: " if cube.source_path else ""
            listed = "; ".join(f"{lbl} is {sh[0]}x{sh[1]}" for lbl, sh in bad)
            raise ShapeMismatchError(
                f"{where}cannot place {name or cube.name} ({h}x{w}) with the open layers on one "
                f"{grid[0]}x{grid[1]} pixel grid: every size must divide the largest evenly by the "
                f"same integer factor ({listed}). Open a matching crop, or close the other layers first.")
        gts = [l for l in self._layers if l.role == "gt"]
        read_range = _ReadRange.of(cube)  # the reader's decision, before a GT's scale: 'auto' of the layer's range
        if role == "recon" and gts:
            cube = _on_gt_scale(cube, gts[0].cube)
        elif role == "gt" and not gts:
            for other in self._layers:  # reconstructions opened before their GT go onto its scale now
                if other.role == "recon":
                    other.cube = _on_gt_scale(other.cube, cube)
        layer = Layer(cube=cube, role=role, name=name or cube.name, uid=self._next_uid)
        self._next_uid += 1
        if read_range is not None:
            self._read_ranges[layer.uid] = read_range
        rank = ROLES.index(role)
        position = len(self._layers)
        for i, other in enumerate(self._layers):
            if ROLES.index(other.role) > rank:
                position = i
                break
        old_reference = self.reference
        had_reference = old_reference is not None
        self._layers.insert(position, layer)
        if role == "recon":
            self.method_colour(layer.name)
        self._set_grid(grid)
        if cube.bands > 1 and cube.in_memory and cube._bsq is None:
            # band switches read contiguous bands once the band-sequential copy exists (a worker
            # thread makes it; until then bands are read from the interleaved array)
            threading.Thread(target=cube.build_band_copy, name=f"band-copy {layer.name}", daemon=True).start()
        self._after_layers_changed(had_reference, old_reference)
        return layer

    def remove_layer(self, layer_or_uid: Layer | int) -> None:
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        layer = self.layer(uid)
        old_reference = self.reference
        self._layers.remove(layer)
        self._forget_render_cache(uid)
        for kept in (self._read_ranges, self._range_choices, self._range_kept):
            kept.pop(uid, None)
        if self._layers:
            shapes = [l.cube.shape[:2] for l in self._layers]
            grid = self._grid_of(shapes)
            if any(self._scale_on(grid, s) is None for s in shapes):
                grid = self._grid  # e.g. 4x4 and 6x6 left of a 12x12 grid: keep the 12x12 grid
            self._set_grid(grid)
        else:
            self._grid = None
        self._after_layers_changed(True, old_reference)

    def clear(self) -> None:
        old_reference = self.reference
        self._layers.clear()
        self._grid = None
        self._render_cache.clear()
        for kept in (self._read_ranges, self._range_choices, self._range_kept):
            kept.clear()
        self._after_layers_changed(True, old_reference)

    def _set_grid(self, grid: tuple[int, int]) -> None:
        self._grid = grid
        for layer in self._layers:
            layer.scale = int(self._scale_on(grid, layer.cube.shape[:2]))

    def rename_layer(self, layer_or_uid: Layer | int, name: str) -> None:
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        layer = self.layer(uid)
        name = str(name).strip()
        if name and name != layer.name:
            if layer.role == "recon" and name not in self._method_colours and layer.name in self._method_colours:
                self._method_colours[name] = self._method_colours[layer.name]  # a rename keeps the colour
            layer.name = name
            self.events.layers.emit(self.layers)

    # ------------------------------------------------------------------ value range of a layer
    def layer_range(self, layer_or_uid: Layer | int) -> str | float:
        """The layer's value-range choice: 'auto' (the reader's decision, a reconstruction put on
        its GT's scale), 'stated', 'max' or a divisor."""
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        return self._range_choices.get(uid, "auto")

    def stated_range_available(self, layer_or_uid: Layer | int) -> bool:
        """True when the layer's file states its range (or follows a known convention)."""
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        read = self._read_ranges.get(uid)
        return read is not None and read.rule in ("stated", "convention")

    def set_layer_range(self, layer_or_uid: Layer | int, choice) -> None:
        """Read the layer's stored values with another range: 'auto', 'stated' (what the file
        states), 'max' (divide by the stored maximum) or a number (divide by it). The cube is
        rescaled (its stored values, memory-mapped or not, are shared: nothing is copied); a GT's
        change puts the reconstructions on 'auto' onto its new scale. Emits ``layer_range`` and
        ``layers`` (the pictures, spectra and analysis follow). Raises ValueError for a bad choice
        and HsiError (naming the file) for a choice the layer cannot take."""
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        layer = self.layer(uid)
        choice = parse_range_choice(choice)
        if uid not in self._read_ranges:
            raise HsiError(f"{layer.label} was computed in the viewer: its values are reflectance already, "
                           "there is no stored range to choose")
        layer.cube = self._ranged_cube(layer, choice)
        changed = [uid]
        if choice == "auto":
            self._range_choices.pop(uid, None)
        else:
            self._range_choices[uid] = choice
        gts = self.layers_with_role("gt")
        if gts and gts[0] is layer:
            for other in self.layers_with_role("recon"):
                if other.uid in self._read_ranges and self.layer_range(other) == "auto":
                    other.cube = self._ranged_cube(other, "auto")
                    changed.append(other.uid)
        for u in changed:
            self._forget_render_cache(u)
        self._follows_cache.clear()
        self.events.layer_range.emit(uid, choice)
        self.events.layers.emit(self.layers)

    def _ranged_cube(self, layer: Layer, choice: str | float) -> Cube:
        read = self._read_ranges[layer.uid]
        base = read.apply(layer.cube)
        where = f"{layer.cube.source_path}: " if layer.cube.source_path else f"{layer.label}: "
        if choice == "auto":
            gts = self.layers_with_role("gt")
            if layer.role == "recon" and gts and gts[0] is not layer:
                return _on_gt_scale(base, gts[0].cube)
            return base
        if choice == "stated":
            if read.rule not in ("stated", "convention"):
                raise HsiError(f"{where}the file states no value range (it was read as: {read.text}); "
                               "choose the maximum or a number")
            return base.replace(metadata={**base.metadata, "range_override": "stated"})
        from app.core.io._common import exact_max

        what = np.dtype(layer.cube.raw.dtype).name
        if choice == "max":
            divisor = float(exact_max(layer.cube.raw, layer.cube.ignore_value))
            if not (divisor > 0 and math.isfinite(divisor)):
                raise HsiError(f"{where}the stored maximum is {divisor:g}: nothing to divide by; choose a number")
            text = f"{what} values divided by their maximum {divisor:g} (chosen in the viewer)"
            option: str | float = "max"
        else:
            divisor = float(choice)
            text = f"{what} values divided by {divisor:g} (chosen in the viewer)"
            option = divisor
        meta = {**base.metadata, "value_rule": "user", "range_override": choice,
                "open_options": {**dict(base.metadata.get("open_options") or {}), "normalise": option}}
        # the user's divisor replaces the file's per-band gains, as --normalise NUMBER does
        return base.replace(scale=1.0 / divisor, offset=0.0, normalisation=text, metadata=meta,
                            **_band_gains(base, None, None))

    def _range_sample(self, cube: Cube) -> tuple[float, float]:
        """(max, mean) of the finite values of a sample of ``cube`` (RANGE_SAMPLE_BANDS bands at a
        stride giving about RANGE_SAMPLE_PIXELS pixels; the same pixels for cubes of one shape)."""
        h, w, b = cube.shape
        step = max(1, int(math.ceil(math.sqrt(h * w / RANGE_SAMPLE_PIXELS))))
        bands = np.unique(np.linspace(0, b - 1, min(b, RANGE_SAMPLE_BANDS)).round().astype(int))
        values = np.stack([np.asarray(cube.band(int(k), step), dtype=np.float64) for k in bands])
        finite = values[np.isfinite(values)]
        if not finite.size:
            return math.nan, math.nan
        return float(finite.max()), float(finite.mean())

    def _range_stats(self, layer: Layer) -> tuple[float, float]:
        kept = self._range_kept.get(layer.uid)
        if kept is None or kept[0] is not layer.cube:
            kept = (layer.cube, *self._range_sample(layer.cube))
            self._range_kept[layer.uid] = kept
        return kept[1], kept[2]

    def range_badge(self, layer_or_uid: Layer | int) -> RangeBadge:
        """The layer's value-range badge: its rule in short and in words, and loud warnings when
        the values stay far below 1 (a sampled maximum under DARK_LIMIT) or a reconstruction's
        mean is more than MEAN_RATIO_LIMIT times away from its GT's (on the same sampled pixels),
        plus the reader's own loud assumptions."""
        uid = layer_or_uid.uid if isinstance(layer_or_uid, Layer) else int(layer_or_uid)
        layer = self.layer(uid)
        cube = layer.cube
        meta = cube.metadata or {}
        read = self._read_ranges.get(uid)
        # the reader's loud assumptions hold while its rule does (not once on the GT's scale or overridden)
        own_rule = read is None or (meta.get("value_rule") == read.rule and "range_override" not in meta)
        warnings = [w for w in meta.get("warnings", ()) if own_rule and str(w).startswith(LOUD)]
        vmax, mean = self._range_stats(layer)
        if math.isfinite(vmax) and 0 < vmax < DARK_LIMIT:
            warnings.append(f"after this rule the values reach only {vmax:.3g}: far below 1, check the range")
        gts = self.layers_with_role("gt")
        if layer.role == "recon" and gts and gts[0].cube.shape == cube.shape:
            gt_mean = self._range_stats(gts[0])[1]
            if gt_mean > 0 and mean > 0 and not 1.0 / MEAN_RATIO_LIMIT <= mean / gt_mean <= MEAN_RATIO_LIMIT:
                warnings.append(f"after this rule the mean is {mean / gt_mean:.3g} x the GT's: check the value range")
        choice = self.layer_range(uid)
        can_choose = uid in self._read_ranges
        lines = [f"Value range: {cube.normalisation}"]
        if not can_choose:
            lines.append("computed in the viewer: reflectance, nothing to choose")
        else:
            lines.append(f"choice: {choice if isinstance(choice, str) else f'divide by {choice:g}'} "
                         "(click to change: auto / as the file states / maximum / a number)")
        lines += [f"⚠ {w}" for w in warnings]
        return RangeBadge(range_badge_text(cube), "\n".join(lines), tuple(warnings), choice, can_choose)

    def _after_layers_changed(self, had_reference: bool, old_reference: Layer | None) -> None:
        self._follows_cache.clear()
        old_band, old_pixel, old_pins = self._band, self._pixel, list(self._pins)
        reference = self.reference
        if reference is not old_reference:
            if reference is not None and old_reference is not None \
                    and old_reference.cube.wavelengths_nm is not None and self.wavelengths_nm is not None:
                old_nm = float(old_reference.cube.wavelengths_nm[min(self._band, old_reference.cube.bands - 1)])
                self._band = self.band_index(old_nm)
            elif reference is not None and not had_reference:
                self._band = self.band_index(550.0) if self.wavelengths_nm is not None else self.n_bands // 2
        self._band = int(np.clip(self._band, 0, max(self.n_bands - 1, 0)))
        if self._pixel is not None:
            grid = self.hr_shape
            self._pixel = None if grid is None else (min(self._pixel[0], grid[0] - 1), min(self._pixel[1], grid[1] - 1))
        grid = self.hr_shape
        self._pins = [] if grid is None else [p for p in self._pins if p[0] < grid[0] and p[1] < grid[1]]
        if self._hover is not None and not any(l.uid == self._hover.uid for l in self._layers):
            self._hover = None
        if not self._layers:
            self._view_range = None
        old_roi = self._roi
        if not self._layers:
            self._roi = None
        self.events.layers.emit(self.layers)
        if self._roi is not old_roi:
            self.events.roi.emit(self._roi)
        if self._band != old_band:
            self.events.band.emit(self._band)
        if self._pixel != old_pixel:
            self.events.pixel.emit(self._pixel)
        if self._pins != old_pins:
            self.events.pins.emit(self.pins)
        live = {l.uid for l in self._layers}
        if set(self._rendered) - live:
            self._rendered = {uid: r for uid, r in self._rendered.items() if uid in live}
        if self._spectra.hidden_uids - live:
            self.set_spectra_choice(hidden_uids=self._spectra.hidden_uids & live)
        self._follow_layers_in_ab()

    # ------------------------------------------------------------------ geometry
    @property
    def hr_shape(self) -> tuple[int, int] | None:
        """(H, W) of the scene's pixel grid, or None without layers."""
        return self._grid if self._layers else None

    @property
    def max_scale(self) -> int:
        return max((l.scale for l in self._layers), default=1)

    def layer_pixel(self, layer: Layer, row: int, col: int) -> tuple[int, int]:
        """The pixel of ``layer`` covering HR pixel (row, col): (row // s, col // s)."""
        return int(row) // layer.scale, int(col) // layer.scale

    def footprint(self, layer: Layer, row: int | None = None, col: int | None = None) -> tuple[int, int, int] | None:
        """(top, left, size) in HR pixels of the ``layer`` pixel covering (row, col) (default: the
        clicked pixel); None when nothing is clicked."""
        if row is None or col is None:
            if self._pixel is None:
                return None
            row, col = self._pixel
        ly, lx = self.layer_pixel(layer, row, col)
        return ly * layer.scale, lx * layer.scale, layer.scale

    # ------------------------------------------------------------------ band axis
    @property
    def reference(self) -> Layer | None:
        """The layer that defines the band axis and the shared contrast: the first GT, else the
        first reconstruction, else the first LR, else the first layer."""
        for role in ("gt", "recon", "lr", "guide"):
            found = self.layers_with_role(role)
            if found:
                return found[0]
        return None

    @property
    def n_bands(self) -> int:
        ref = self.reference
        return ref.cube.bands if ref is not None else 0

    @property
    def wavelengths_nm(self) -> np.ndarray | None:
        ref = self.reference
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
            self.events.band.emit(band)

    def step_band(self, delta: int) -> None:
        self.set_band(self._band + int(delta))

    def set_band_by_wavelength(self, nm: float) -> None:
        if self.n_bands:
            self.set_band(self.band_index(float(nm)))

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
        ref = self.reference
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

    # ------------------------------------------------------------------ display mode
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
            self.events.mode.emit(mode)

    @property
    def rgb_nm(self) -> tuple[float, float, float]:
        return self._rgb_nm

    def set_rgb_nm(self, rgb_nm: Sequence[float]) -> None:
        """Wavelengths (nm) shown as red, green and blue in RGB mode (clamped to the band range)."""
        values = [float(v) for v in rgb_nm]
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"RGB wavelengths must be three finite numbers, got {rgb_nm!r}")
        wl = self.wavelengths_nm
        if wl is not None:
            lo, hi = float(np.min(wl)), float(np.max(wl))
            values = [min(max(v, lo), hi) for v in values]
        rgb = (values[0], values[1], values[2])
        if rgb != self._rgb_nm:
            self._rgb_nm = rgb
            self.events.rgb.emit(rgb)

    def rgb_bands(self, layer: Layer | None = None) -> tuple[int, int, int]:
        """Bands of ``layer`` (default: the reference) nearest to the RGB wavelengths."""
        layer = layer or self.reference
        if layer is None:
            return (0, 0, 0)
        wl = layer.cube.wavelengths_nm
        if wl is None and self.follows_band_axis(layer):
            wl = self.wavelengths_nm
        if wl is None:  # no wavelengths anywhere: spread over the bands, red at the long end
            b = layer.cube.bands
            return (b - 1, b // 2, 0)
        return tuple(nearest_band(wl, layer.cube.bands, nm) for nm in self._rgb_nm)  # type: ignore[return-value]

    # ------------------------------------------------------------------ clicked pixel / hover
    @property
    def pixel(self) -> tuple[int, int] | None:
        """The clicked pixel, HR (row, col), or None."""
        return self._pixel

    def set_pixel(self, row: int | None, col: int | None = None) -> None:
        """Select HR pixel (row, col) (clamped to the grid); ``set_pixel(None)`` clears it."""
        if row is None or self.hr_shape is None:
            pixel = None
        else:
            if col is None:
                raise ValueError("set_pixel needs both row and col")
            h, w = self.hr_shape
            pixel = (int(np.clip(int(math.floor(row)), 0, h - 1)), int(np.clip(int(math.floor(col)), 0, w - 1)))
        if pixel != self._pixel:
            self._pixel = pixel
            self.events.pixel.emit(pixel)

    @property
    def pins(self) -> tuple[tuple[int, int], ...]:
        """Pixels collected with Shift+click (HR (row, col)), oldest first, at most MAX_PINS."""
        return tuple(self._pins)

    def add_pin(self, row: float, col: float) -> None:
        """Pin HR pixel (row, col) (clamped); pinning a pinned pixel again unpins it; beyond
        MAX_PINS the oldest pin goes."""
        if self.hr_shape is None:
            return
        h, w = self.hr_shape
        pin = (int(np.clip(int(math.floor(row)), 0, h - 1)), int(np.clip(int(math.floor(col)), 0, w - 1)))
        if pin in self._pins:
            self._pins.remove(pin)
        else:
            self._pins.append(pin)
            del self._pins[:-MAX_PINS]
        self.events.pins.emit(self.pins)

    def clear_pins(self) -> None:
        if self._pins:
            self._pins.clear()
            self.events.pins.emit(self.pins)

    def lr_pixel(self, layer: Layer) -> tuple[int, int] | None:
        """The pixel of ``layer`` covering the clicked pixel, or None."""
        if self._pixel is None:
            return None
        return self.layer_pixel(layer, *self._pixel)

    @property
    def hover(self) -> Hover | None:
        return self._hover

    def set_hover(self, uid: int | None, row: float | None = None, col: float | None = None) -> None:
        """Pointer over layer ``uid`` at HR (row, col) (floats allowed); None when it leaves."""
        hover = None
        if uid is not None and row is not None and col is not None and self.hr_shape is not None:
            h, w = self.hr_shape
            r, c = int(math.floor(row)), int(math.floor(col))
            inside = 0 <= r < h and 0 <= c < w
            hover = Hover(int(uid), int(np.clip(r, 0, h - 1)), int(np.clip(c, 0, w - 1)), inside)
        if hover != self._hover:
            self._hover = hover
            self.events.hover.emit(hover)

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
            if self._pixel is None:
                return []
            row, col = self._pixel
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
        return self._shared_contrast

    def set_shared_contrast(self, shared: bool) -> None:
        shared = bool(shared)
        if shared != self._shared_contrast:
            self._shared_contrast = shared
            self.events.contrast.emit(self._shared_contrast, self._percentiles)

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
            self.events.contrast.emit(self._shared_contrast, self._percentiles)

    @property
    def colormap(self) -> str:
        return self._colormap

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"unknown colormap {name!r}; expected one of {', '.join(COLORMAPS)}")
        if name != self._colormap:
            self._colormap = name
            self.events.colormap.emit(name)

    # ------------------------------------------------------------------ view range (zoom)
    @property
    def view_range(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """((x0, x1), (y0, y1)) in HR pixel units shown by every panel; None: the whole image."""
        return self._view_range

    def set_view_range(self, x_range: Sequence[float] | None, y_range: Sequence[float] | None = None,
                       source: object = None) -> None:
        """Set the shared zoom; ``source`` (the view that changed it) is passed to listeners so
        that it need not apply its own change again."""
        if x_range is None:
            new = None
        else:
            if y_range is None:
                raise ValueError("set_view_range needs both x and y ranges")
            x0, x1 = (float(v) for v in x_range)
            y0, y1 = (float(v) for v in y_range)
            if not all(math.isfinite(v) for v in (x0, x1, y0, y1)) or x1 <= x0 or y1 <= y0:
                raise ValueError(f"invalid view range x={x_range}, y={y_range}")
            new = ((x0, x1), (y0, y1))
        old = self._view_range
        if new is not None and old is not None:
            tol = 1e-6 * max(new[0][1] - new[0][0], new[1][1] - new[1][0])
            if all(abs(a - b) <= tol for a, b in zip((*new[0], *new[1]), (*old[0], *old[1]))):
                return
        elif new is None and old is None and source is not None:
            return
        self._view_range = new
        self.events.view_range.emit(new, source)

    def reset_view(self) -> None:
        """Show the whole image in every panel."""
        self._view_range = None
        self.events.view_range.emit(None, None)

    # ------------------------------------------------------------------ ROI and analysis settings
    @property
    def roi(self) -> Roi | None:
        """The region of interest (:class:`app.core.state.selection.Roi`, HR (x, y) points) or None.
        Spectra show its mean ± std per layer; the metrics table can be restricted to it."""
        return self._roi

    def set_roi(self, roi: Roi | dict | None) -> None:
        """Set (a Roi or its ``to_dict()`` form) or clear (None) the ROI; emits ``events.roi``."""
        if isinstance(roi, dict):
            roi = Roi.from_dict(roi)
        if roi is not None and not isinstance(roi, Roi):
            raise TypeError(f"set_roi takes a Roi, its dict form or None, got {type(roi).__name__}")
        if roi != self._roi:
            self._roi = roi
            self.events.roi.emit(roi)

    def roi_mask(self) -> np.ndarray | None:
        """(H, W) bool of the HR pixels inside the ROI, or None."""
        if self._roi is None or self.hr_shape is None:
            return None
        return self._roi.mask(*self.hr_shape)

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
        import dataclasses

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
        import dataclasses

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
        import dataclasses

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
    def _forget_render_cache(self, uid: int | None = None) -> None:
        if uid is None:
            self._render_cache.clear()
        else:
            for key in [k for k in self._render_cache if k[1] == uid]:
                del self._render_cache[key]

    def keep_render_cache(self, entries: Mapping[tuple, Any]) -> None:
        """Keep what a :func:`render` computed anew (its ``new_entries``), for the layers still
        open with the same cube. Call it on the thread that owns the scene (the GUI thread)."""
        live = {(l.uid, id(l.cube)) for l in self._layers}
        for key, value in entries.items():
            if (key[1], key[2]) in live:
                self._render_cache.pop(key, None)
                self._render_cache[key] = value  # (the newest last: dropped last)
        # bounded: colour pictures at many contrast settings, band planes of memory-mapped cubes
        planes = [k for k in self._render_cache if k[0] == "band"]
        size = sum(self._render_cache[k].nbytes for k in planes)
        for key in planes:
            if size <= RENDER_CACHE_PLANE_BYTES:
                break
            size -= self._render_cache.pop(key).nbytes
        if len(self._render_cache) > 256:
            for key in list(self._render_cache)[: len(self._render_cache) - 256]:
                del self._render_cache[key]

    def snapshot(self, steps: Mapping[int, int] | None = None) -> "RenderRequest":
        """Everything :func:`render` needs, frozen (safe to hand to a worker thread): the layers,
        choices and a read-only copy of the render cache. ``steps``: per layer uid, show every
        step-th pixel (default 1)."""
        layers = tuple(self._layers)
        ref = self.reference
        return RenderRequest(
            layers=layers,
            mode=self._mode,
            bands={l.uid: self.band_for(l) for l in layers},
            rgb_bands={l.uid: self.rgb_bands(l) for l in layers},
            colour_image={l.uid: self.is_colour_image(l) for l in layers},
            colour_channels={l.uid: self.colour_channels(l) for l in layers if self.is_colour_image(l)},
            shares_contrast={l.uid: self._shared_contrast and ref is not None and self.follows_band_axis(l)
                             for l in layers},
            reference_uid=None if ref is None else ref.uid,
            percentiles=self._percentiles,
            render_cache=types.MappingProxyType(dict(self._render_cache)),
            steps=types.MappingProxyType({int(k): max(int(v), 1) for k, v in (steps or {}).items()}),
        )

    def render_cost(self) -> int:
        """Rough number of values :func:`render` reads now (to decide on a worker thread).
        A lazy cube counts whole: one band of a band-interleaved file touches every page, and
        a file not in the page cache is read from the disk."""
        total = 0
        cached = {k[1] for k in self._render_cache if k[0] == "true"}
        for layer in self._layers:
            h, w, b = layer.cube.shape
            if layer.cube.is_lazy or (self._mode == DisplayMode.TRUE_COLOUR and not self.is_colour_image(layer)
                                      and layer.uid not in cached):
                total += h * w * b
            else:
                total += h * w * 3
        return total


@dataclass(frozen=True)
class RenderRequest:
    layers: tuple[Layer, ...]
    mode: DisplayMode
    bands: dict[int, int | None]
    rgb_bands: dict[int, tuple[int, int, int]]
    colour_image: dict[int, bool]
    colour_channels: dict[int, tuple[int, int, int]]
    shares_contrast: dict[int, bool]
    reference_uid: int | None
    percentiles: tuple[float, float]
    # a read-only copy of the scene's render cache (colour pictures do not depend on the band);
    # render() never writes it: what it makes anew goes to its ``new_entries``
    render_cache: Mapping[tuple, Any] = field(default_factory=lambda: types.MappingProxyType({}), compare=False)
    # per layer uid: show every step-th row and column (missing: 1)
    steps: Mapping[int, int] = field(default_factory=lambda: types.MappingProxyType({}), compare=False)

    def step(self, uid: int) -> int:
        return int(self.steps.get(uid, 1))


@dataclass
class RenderedImage:
    """What a panel shows: ``image`` (h, w) float32 or (h, w, 3); ``levels`` (low, high) or a
    (3, 2) array; ``is_rgb``; ``band`` (None for colour pictures); ``note`` says how it was made;
    ``step``: the image holds every step-th row and column of the layer (rows and columns
    ``0, step, ...`` up to ``(H // step) * step``), so it covers ``step`` layer pixels per pixel."""

    uid: int
    image: np.ndarray
    levels: Any
    is_rgb: bool
    band: int | None
    note: str = ""
    step: int = 1


def _strided(cube: Cube, step: int) -> tuple[slice, slice]:
    if step <= 1:
        return slice(None), slice(None)
    return slice(0, (cube.height // step) * step, step), slice(0, (cube.width // step) * step, step)


def _true_colour(layer: Layer, step: int = 1) -> tuple[np.ndarray, str]:
    """sRGB picture of a whole layer (every ``step``-th pixel): it does not depend on the band."""
    cube = layer.cube
    wl = cube.wavelengths_nm
    result: tuple[np.ndarray, str] | None = None
    problem = "colour module unavailable"
    try:
        from app.core.science.color import cube_to_srgb
    except ImportError:
        cube_to_srgb = None
    if cube_to_srgb is not None:
        try:
            # (a memory-mapped cube is read for the picture, never loaded and kept whole)
            data = cube.data if step <= 1 and cube.in_memory else cube.region(*_strided(cube, step))
            rgb, note = cube_to_srgb(data, wl)
            result = (np.asarray(rgb, dtype=np.float32), str(note) or "true colour: CIE 1931 2°, D65, sRGB")
        except HsiError as exc:  # shown as a note; the panel still gets a picture
            problem = str(exc)
    if result is None:
        bands = [nearest_band(wl, cube.bands, nm) for nm in NOMINAL_RGB_NM] if wl is not None \
            else [cube.bands - 1, cube.bands // 2, 0]
        rgb = np.stack([cube.band(k, step) for k in bands], axis=-1).astype(np.float32)
        hi = percentile_levels(rgb, 0.0, 99.5)[1]
        rgb = np.clip(rgb / (hi if hi > 0 else 1.0), 0.0, 1.0)
        result = (rgb, f"approximate colour ({problem}): bands {bands} as R, G, B")
    return result


def render(request: RenderRequest, new_entries: dict | None = None) -> dict[int, RenderedImage]:
    """Display image and levels for every layer of ``request`` (pure; runs in any thread).

    Shared contrast: layers on the reference's band axis use the levels of the reference layer
    (GT when present), so equal reflectance looks equal in every panel; colour images (an RGB
    guide) always use their own levels, one pair for all three channels to keep their balance.
    Levels come from the picture (a strided sample of it when big: ``percentile_levels``).

    ``request.render_cache`` is only read; colour pictures made anew are put in ``new_entries``
    (when given) for the caller to keep (:meth:`Scene.keep_render_cache`, on the GUI thread).
    """
    low, high = request.percentiles
    images: dict[int, np.ndarray] = {}
    out: dict[int, RenderedImage] = {}
    made: dict = new_entries if new_entries is not None else {}

    def cached(key):
        value = request.render_cache.get(key)
        return made.get(key) if value is None else value

    def plane(cube: Cube, uid: int, band: int, step: int) -> np.ndarray:
        """One band at ``step``; a memory-mapped cube's planes are cached per band (a contrast
        change or a return to a band does not read the file again)."""
        if not cube.is_lazy:
            return cube.band(band, step)
        key = ("band", uid, id(cube), int(band), step)
        found = cached(key)
        if found is None:
            found = made[key] = cube.band(band, step)
        return found

    for layer in request.layers:
        cube = layer.cube
        step = request.step(layer.uid)
        if request.colour_image[layer.uid]:
            channels = request.colour_channels.get(layer.uid, (0, 1, 2))
            # A colour image does not change with the band: cached with its levels, so that a band
            # switch neither restacks it nor repaints its panel (the grid skips identical images).
            key = ("colour", layer.uid, id(cube), channels, low, high, step)
            found = cached(key)
            if found is None:
                rgb = np.stack([cube.band(k, step) for k in channels], axis=-1).astype(np.float32)
                found = made[key] = (rgb, percentile_levels(rgb, low, high))
            rgb, levels = found
            how = "channels as stored" if channels == (0, 1, 2) else f"channels {channels} as R, G, B"
            out[layer.uid] = RenderedImage(layer.uid, rgb, levels, True, None, f"colour image ({how})", step)
        elif request.mode == DisplayMode.TRUE_COLOUR:
            key = ("true", layer.uid, id(cube), step)
            found = cached(key)
            if found is None:
                found = made[key] = _true_colour(layer, step)
            rgb, note = found
            out[layer.uid] = RenderedImage(layer.uid, rgb, (0.0, 1.0), True, None, note, step)
        elif request.mode == DisplayMode.RGB:
            kr, kg, kb = request.rgb_bands[layer.uid]
            rgb = np.stack([plane(cube, layer.uid, k, step) for k in (kr, kg, kb)], axis=-1)
            images[layer.uid] = rgb
            out[layer.uid] = RenderedImage(layer.uid, rgb, None, True, None,
                                           f"bands {kr}, {kg}, {kb} as R, G, B", step)
        else:
            band = request.bands[layer.uid]
            image = plane(cube, layer.uid, band, step)
            if step > 1 and not image.flags.c_contiguous:
                image = np.ascontiguousarray(image)  # (a strided view of a loaded cube: one copy)
            images[layer.uid] = image
            out[layer.uid] = RenderedImage(layer.uid, image, None, False, band, cube.band_label(band), step)

    def levels_of(image: np.ndarray):
        if image.ndim == 3:
            return channel_levels(image, low, high)
        return percentile_levels(image, low, high)

    shared_levels = None
    if request.reference_uid in images and any(request.shares_contrast.values()):
        shared_levels = levels_of(images[request.reference_uid])
    for uid, image in images.items():
        use_shared = request.shares_contrast.get(uid, False) and shared_levels is not None
        out[uid].levels = shared_levels if use_shared else levels_of(image)
    return out

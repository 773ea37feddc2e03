"""Analysis of reconstructions against the reference, free of Qt: ROIs, error and SAM maps with one
locked colour scale, metrics tables per scope, metric-versus-wavelength curves, worst pixels and
bands, ROI spectra (mean +- std) and residual spectra, and the cancellable job that computes them.

Every number comes from :mod:`app.core.science.metrics` (``compute_all_many`` for the whole-image pass of
all methods at once, ``compute_all`` for a ROI or the visible view, ``abs_error_map``): nothing
here re-implements a metric. Results are cached per (reference cube, reconstruction cube) for the
whole-image pass (maps, per-band curves, scalars), per (cube pair, band) for |error| maps and per
(cube pair, scope) for the ROI / visible-view scalars, so moving the band slider or changing the
scope recomputes only what changed.

Coordinates: ROI points are (x, y) = (col, row) in continuous HR pixel units (pixel (r, c) spans
[c, c + 1) x [r, r + 1)); a pixel belongs to a ROI when its centre (c + 0.5, r + 0.5) does.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from app.core.science.metric_table import METRICS
from app.core.errors import Cancelled, HsiError  # noqa: F401  (Cancelled: raised by the analysis job)
from app.core.state.selection import (  # noqa: F401  (the analysis' vocabulary, used by its callers)
    CURVE_METRICS, CURVE_TITLES, ERROR_KIND_TITLES, ERROR_KINDS, SCOPE_TITLES, SCOPES, AnalysisError, AnalysisSettings,
    Roi, polygon_mask, view_region)
from models.registry import drain

if TYPE_CHECKING:  # pragma: no cover
    from app.core.science.metric_result import MetricResult
    from app.core.state.scene import Layer, Scene

# (key in compute_all's result, column title, True when higher is better)
METRIC_COLUMNS: tuple[tuple[str, str, bool], ...] = tuple((m.key, m.label, m.higher_is_better) for m in METRICS)
# Colour scales of the error and SAM maps run from 0 to this percentile of the valid pixels (no-data
# pixels, and for SAM the dark pixels, left out): by default of all methods' pixels pooled (one
# scale, so that the maps compare), per method on request (each map its own scale), or the user's.
LEVELS_PERCENTILE = 99.0
LEVELS_MAX_VALUES = 1 << 22  # pooled values a scale is computed from (a regular subsample beyond)
SCALE_MODES: tuple[str, ...] = ("shared", "per_method", "user")
SCALE_MODE_TITLES = {"shared": "Scale: all methods", "per_method": "Scale: per method", "user": "Scale: set…"}
# Cubes not in memory (memory-mapped files) are analysed by row tiles read on demand, about this
# many bytes of every cube at a time (at least 16 rows): the memory a pass adds is its output maps
# plus one tile, whatever the number of pixels.
STREAM_TILE_BYTES = 48 * 1024 * 1024


def worst_pixels(value_map: np.ndarray, k: int = 1, valid: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The ``k`` (row, col) with the largest finite values (worst first), within ``valid`` and
    ``mask`` when given."""
    values = np.asarray(value_map, dtype=np.float64).copy()
    bad = ~np.isfinite(values)
    if valid is not None:
        bad |= ~np.asarray(valid, dtype=bool)
    if mask is not None:
        bad |= ~np.asarray(mask, dtype=bool)
    values[bad] = -np.inf
    flat = values.reshape(-1)
    k = int(min(max(k, 1), int((~bad).sum())))
    if k == 0:
        return []
    idx = np.argpartition(-flat, k - 1)[:k]
    idx = idx[np.argsort(-flat[idx], kind="stable")]
    w = values.shape[1]
    return [(int(i // w), int(i % w)) for i in idx]


def worst_band(per_band: np.ndarray, metric: str, exclude: np.ndarray | None = None) -> int | None:
    """Index of the worst band of a per-band curve (lowest PSNR/SSIM, highest RMSE), never one of
    the ``exclude``d bands ((B,) bool; the metrics leave them NaN already)."""
    values = np.asarray(per_band, dtype=np.float64)
    finite = np.isfinite(values)
    if exclude is not None:
        finite &= ~np.asarray(exclude, dtype=bool)
    if not finite.any():
        return None
    if metric in ("psnr_db", "ssim", "cc", "uiqi"):
        return int(np.argmin(np.where(finite, values, np.inf)))
    return int(np.argmax(np.where(finite, values, -np.inf)))


def _valid_values(maps: Sequence[np.ndarray], valid: Sequence[np.ndarray | None] | None) -> np.ndarray:
    """The finite values of ``maps`` where ``valid`` (per map, None: everywhere), pooled; every map
    subsampled with one regular stride when there are more than LEVELS_MAX_VALUES pixels."""
    step = max(1, int(math.ceil(sum(int(np.size(m)) for m in maps) / LEVELS_MAX_VALUES)))
    parts = []
    for i, m in enumerate(maps):
        values = np.asarray(m, dtype=np.float32).reshape(-1)[::step]
        sel = np.isfinite(values)
        if valid is not None and valid[i] is not None:
            sel &= np.asarray(valid[i], dtype=bool).reshape(-1)[::step]
        parts.append(values[sel])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def locked_levels(maps: Sequence[np.ndarray], valid: Sequence[np.ndarray | None] | None = None,
                  percentile: float = LEVELS_PERCENTILE) -> tuple[float, float]:
    """One (0, high) colour scale for all ``maps``: the ``percentile`` of their valid finite values
    pooled (every method's pixels count alike, so the worst method alone does not set it)."""
    values = _valid_values(maps, valid)
    high = float(np.percentile(values, percentile)) if values.size else 0.0
    return 0.0, (high if high > 0 else 1e-6)


@dataclass(frozen=True)
class MapLevels:
    """The colour scales of the maps on screen: (low, high) per method uid, and what each bar says."""

    mode: str
    error: dict
    sam: dict
    error_caption: str
    sam_caption: str

    @property
    def shared(self) -> bool:
        return self.mode != "per_method"


def check_user_levels(levels, what: str) -> tuple[float, float]:
    """A user's (low, high) colour scale, checked: finite numbers with low < high."""
    try:
        low, high = (float(v) for v in levels)
    except (TypeError, ValueError):
        raise ValueError(f"the {what} scale needs two numbers (low, high), got {levels!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"the {what} scale needs finite low < high, got {low:g} – {high:g}")
    return low, high


def map_levels(result: "AnalysisResult", mode: str = "shared", user_error=None, user_sam=None,
               percentile: float = LEVELS_PERCENTILE) -> MapLevels:
    """The colour scales of ``result``'s maps in ``mode``: 'shared' (the result's scales: the
    ``percentile`` of all methods' valid pixels), 'per_method' (each map the ``percentile`` of its
    own valid pixels; computed once per result) or 'user' (``user_error`` / ``user_sam`` (low,
    high); one not given keeps the shared scale)."""
    if mode not in SCALE_MODES:
        raise ValueError(f"a colour-scale mode is one of {', '.join(SCALE_MODES)}, not {mode!r}")
    uids = [m.layer.uid for m in result.methods]
    what = "RMSE" if result.request.settings.error_kind == "rmse" else "|error| at the band"
    pct = f"p{percentile:g} of valid pixels"
    if mode == "per_method":
        key = ("per_method", percentile)
        own = result.own_levels.get(key)
        if own is None:
            own = ({m.layer.uid: locked_levels([m.error_map], [_counted(m)], percentile) for m in result.methods},
                   {m.layer.uid: locked_levels([m.sam_map], [m.sam_valid], percentile) for m in result.methods})
            result.own_levels[key] = own
        return MapLevels(mode, dict(own[0]), dict(own[1]), f"{what} · each map its own 0 – {pct} (in its title)",
                         f"SAM (°) · each map its own 0 – {pct} (in its title)")
    error, sam = result.error_levels, result.sam_levels
    error_caption = f"{what} · all methods · 0 – {pct}"
    sam_caption = f"SAM (°) · all methods · 0 – {pct}"
    if mode == "user":
        if user_error is not None:
            error = check_user_levels(user_error, "error")
            error_caption = f"{what} · all methods · set by you"
        if user_sam is not None:
            sam = check_user_levels(user_sam, "SAM")
            sam_caption = "SAM (°) · all methods · set by you"
    return MapLevels(mode, {u: error for u in uids}, {u: sam for u in uids}, error_caption, sam_caption)


def _counted(m: "MethodResult") -> np.ndarray | None:
    """The pixels of a method's error map that count (not no-data)."""
    nodata = m.full["maps"].get("nodata")
    return None if nodata is None else ~nodata


# ---------------------------------------------------------------------------------- spectra
@dataclass
class RoiSpectrum:
    """Mean and standard deviation over a ROI of one layer; ``n`` pixels (of the layer's grid:
    an LR pixel counts as often as HR pixels of the ROI it covers)."""

    layer: "Layer"
    wavelengths_nm: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int
    wavelengths_known: bool = True

    @property
    def label(self) -> str:
        return f"{self.layer.label} ROI mean ± std ({self.n} px)"


def roi_spectra(scene: "Scene", roi: Roi | None = None) -> list[RoiSpectrum]:
    """Mean ± std spectrum over ``roi`` (default: the scene's ROI) for every layer."""
    roi = roi if roi is not None else scene.roi
    if roi is None or scene.hr_shape is None:
        return []
    h, w = scene.hr_shape
    mask = roi.mask(h, w)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    out = []
    for layer in scene.layers:
        s = layer.scale
        ly0, ly1 = y0 // s, min((y1 - 1) // s + 1, layer.cube.height)
        lx0, lx1 = x0 // s, min((x1 - 1) // s + 1, layer.cube.width)
        block = np.asarray(layer.cube.region(slice(ly0, ly1), slice(lx0, lx1)), dtype=np.float64)
        ly = np.minimum(rows // s, layer.cube.height - 1) - ly0
        lx = np.minimum(cols // s, layer.cube.width - 1) - lx0
        values = block[ly, lx]  # (n, bands): an LR pixel weighted by its share of the ROI
        x, known, _ = scene.layer_wavelengths(layer)
        out.append(RoiSpectrum(layer, x, values.mean(axis=0), values.std(axis=0), int(rows.size), known))
    return out


@dataclass
class Residual:
    """Reconstruction minus reference spectrum (at a pixel or the ROI mean)."""

    layer: "Layer"
    wavelengths_nm: np.ndarray
    values: np.ndarray
    where: str

    @property
    def label(self) -> str:
        return f"{self.layer.label} − ref ({self.where})"


def comparable_layers(scene: "Scene") -> list["Layer"]:
    """Reconstructions that can be compared value by value with the reference (GT): same grid,
    same band axis. Empty without a GT."""
    gts = scene.layers_with_role("gt")
    if not gts:
        return []
    ref = gts[0]
    return [l for l in scene.layers_with_role("recon")
            if l.cube.shape == ref.cube.shape and scene.follows_band_axis(l)]


def residual_spectra(scene: "Scene", row: int | None = None, col: int | None = None,
                     roi: Roi | None = None) -> list[Residual]:
    """Residuals of every comparable reconstruction: at HR pixel (row, col) (default: the clicked
    pixel), or of the ROI means when ``roi`` is given."""
    layers = comparable_layers(scene)
    if not layers:
        return []
    ref = scene.layers_with_role("gt")[0]
    x = scene.layer_wavelengths(ref)[0]
    if roi is not None:
        means = {s.layer.uid: s.mean for s in roi_spectra(scene, roi)}
        if ref.uid not in means:
            return []
        return [Residual(l, x, means[l.uid] - means[ref.uid], "ROI mean") for l in layers if l.uid in means]
    if row is None or col is None:
        if scene.pixel is None:
            return []
        row, col = scene.pixel
    base = ref.cube.spectrum(row, col).astype(np.float64)
    return [Residual(l, x, l.cube.spectrum(row, col).astype(np.float64) - base, f"r {row}, c {col}")
            for l in layers]


# ---------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class AnalysisRequest:
    """A frozen snapshot of what to compute (safe to hand to a worker thread)."""

    reference: "Layer"
    methods: tuple["Layer", ...]
    band: int
    settings: AnalysisSettings
    scale: float | None
    roi: Roi | None
    region: tuple[int, int, int, int] | None    # the visible view, (y0, y1, x0, x1) or None
    device: str | None = None

    @property
    def scope_key(self) -> tuple:
        if self.settings.scope == "roi" and self.roi is not None:
            return ("roi", self.roi)
        if self.settings.scope == "view" and self.region is not None:
            return ("view", self.region)
        return ("image",)


@dataclass
class MethodResult:
    """The analysis of one reconstruction."""

    layer: "Layer"
    full: "MetricResult"   # compute_all on the whole image (maps, per_band, scalars, notes)
    scope: "MetricResult"  # compute_all on the chosen scope (the same result as ``full`` for 'image')
    error_map: np.ndarray  # the map shown: RMSE over bands, or |error| at ``band``
    sam_map: np.ndarray
    sam_valid: np.ndarray

    @property
    def name(self) -> str:
        return self.layer.name

    def scalar(self, key: str) -> float:
        return float(self.scope[key])

    def per_band(self, metric: str) -> np.ndarray:
        return np.asarray(self.full["per_band"][metric], dtype=np.float64)


@dataclass
class AnalysisResult:
    request: AnalysisRequest
    methods: list[MethodResult]
    error_levels: tuple[float, float]
    sam_levels: tuple[float, float]
    scope_note: str = ""
    notes: list[str] = field(default_factory=list)
    pending: tuple[str, ...] = ()  # metrics still being computed (a partial result: ('ssim',))
    own_levels: dict = field(default_factory=dict, repr=False)  # map_levels' per-method scales, kept

    def method(self, uid: int) -> MethodResult:
        for m in self.methods:
            if m.layer.uid == uid:
                return m
        raise KeyError(uid)

    def worst_pixel(self, by: str = "sam", uid: int | None = None) -> tuple[tuple[int, int], MethodResult] | None:
        """The worst pixel by 'sam' or 'error' (the shown error map) over one method (``uid``) or
        all, restricted to the ROI when the scope is 'roi'; ((row, col), method)."""
        mask = None
        req = self.request
        if req.settings.scope == "roi" and req.roi is not None:
            mask = req.roi.mask(*self.methods[0].sam_map.shape) if self.methods else None
        best: tuple[float, tuple[int, int], MethodResult] | None = None
        for m in self.methods:
            if uid is not None and m.layer.uid != uid:
                continue
            nodata = m.full["maps"].get("nodata")
            value_map, valid = (m.sam_map, m.sam_valid) if by == "sam" else \
                (m.error_map, None if nodata is None else ~nodata)
            found = worst_pixels(value_map, 1, valid, mask)
            if found:
                v = float(value_map[found[0]])
                if best is None or v > best[0]:
                    best = (v, found[0], m)
        return None if best is None else (best[1], best[2])

    def table(self) -> list[dict[str, Any]]:
        """Rows of the metrics table: {'uid', 'name', psnr_db, ssim, sam_deg, ergas, rmse}."""
        rows = []
        for m in self.methods:
            row: dict[str, Any] = {"uid": m.layer.uid, "name": m.layer.name}
            for key, _, _ in METRIC_COLUMNS:
                row[key] = m.scalar(key)
            rows.append(row)
        return rows


class AnalysisCache:
    """Results of earlier passes, keyed by the cubes' identity (a replaced cube is recomputed).
    Thread-safe for one writer (the job) and readers."""

    def __init__(self, max_entries: int = 64):
        self._full: dict[tuple, MetricResult] = {}
        self._scoped: dict[tuple, MetricResult] = {}
        self._abs: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    @staticmethod
    def pair_key(ref: "Layer", layer: "Layer") -> tuple:
        return (ref.uid, id(ref.cube), layer.uid, id(layer.cube))

    def _get(self, store: dict, key: tuple):
        with self._lock:
            value = store.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def _put(self, store: dict, key: tuple, value) -> None:
        with self._lock:
            if len(store) >= self.max_entries:
                store.pop(next(iter(store)))
            store[key] = value

    def forget(self, uids: Sequence[int] | None = None) -> None:
        """Drop everything (or the entries involving layers ``uids``)."""
        with self._lock:
            for store in (self._full, self._scoped, self._abs):
                if uids is None:
                    store.clear()
                else:
                    for key in [k for k in store if k[0] in uids or k[2] in uids]:
                        del store[key]

    def __len__(self) -> int:
        return len(self._full) + len(self._scoped) + len(self._abs)


def _pair_nodata(ref: "Layer", layer: "Layer") -> np.ndarray | None:
    """No-data pixels of the reference or the reconstruction (None when neither file has any)."""
    masks = [c.nodata_mask() for c in (ref.cube, layer.cube) if c.has_nodata_rule]
    masks = [m for m in masks if m.any()]
    return np.logical_or.reduce(masks) if masks else None


def _excluded_bands(ref: "Layer", layers: Sequence["Layer"]) -> np.ndarray | None:
    """The bands every method's metrics leave out: the bad-band lists of all the files."""
    out = None
    for cube in [ref.cube] + [layer.cube for layer in layers]:
        if cube.bad_bands is not None and cube.bad_bands.size == ref.cube.bands:
            out = cube.bad_bands.copy() if out is None else out | cube.bad_bands
    return out if out is not None and out.any() else None


def make_request(scene: "Scene", device: str | None = None) -> AnalysisRequest:
    """Snapshot of the scene's analysis (raises AnalysisError when there is nothing to compare)."""
    gts = scene.layers_with_role("gt")
    if not gts:
        raise AnalysisError("the analysis needs a ground-truth (GT) layer to compare the reconstructions with; "
                            "open one with File ▸ Open… and the role GT")
    methods = tuple(comparable_layers(scene))
    if not methods:
        raise AnalysisError("no reconstruction of the GT's size and bands is open: open one (role "
                            "reconstruction) or run a model with Ctrl+R")
    scale = scene.analysis_scale()
    region = view_region(scene.view_range, scene.hr_shape) if scene.hr_shape else None
    return AnalysisRequest(gts[0], methods, scene.band, scene.analysis_settings, scale, scene.roi, region, device)


def _stream_plan(request: AnalysisRequest, todo: Sequence["Layer"], tile_rows: int | None) -> int | None:
    """Rows per tile when the whole-image pass should stream (a cube is memory-mapped, or
    ``tile_rows`` asks for it), else None. Streaming needs the fused CPU kernels and no no-data
    pixels or bad bands (those passes load the cubes)."""
    from app.core.science.metrics import streamable

    cubes = [request.reference.cube] + [layer.cube for layer in todo]
    if tile_rows is None and all(c.in_memory for c in cubes):
        return None
    if any(c.has_nodata_rule for c in cubes) or _excluded_bands(request.reference, request.methods) is not None:
        return None
    if not streamable(request.device):
        return None
    if tile_rows is not None:
        return max(int(tile_rows), 1)
    h, w, b = request.reference.cube.shape
    return max(16, STREAM_TILE_BYTES // max(w * b * 4 * len(cubes), 1))


def _row_reader(cube):
    return lambda a, z: cube.region(slice(a, z), slice(None))


def analysis_steps(request: AnalysisRequest, cache: AnalysisCache | None = None,
                   tick: Callable[[float], None] | None = None,
                   partial: Callable[["AnalysisResult"], None] | None = None,
                   tile_rows: int | None = None) -> Iterator[tuple[float, str]]:
    """The job as a generator of (fraction, message); its return value (StopIteration.value) is
    the :class:`AnalysisResult`. Stop iterating to cancel between two steps; ``tick(fraction)``
    is also called during the whole-image pass (after each row tile), and an exception it raises
    (Cancelled) stops the pass there.

    The whole-image pass of every method not in the cache runs at once
    (``metrics.compute_all_many``: the reference's share of the work is done once, not per method).
    With ``partial``, that pass runs in two: maps and every metric but SSIM first, handed to
    ``partial(result)`` (``result.pending == ('ssim',)``, SSIM NaN) so that a viewer shows them at
    once, then SSIM (``metrics.ssim_many``; its Gaussian filters are two thirds of the work).

    Memory-mapped cubes (or any, with ``tile_rows``) are read by row tiles
    (``metrics.compute_all_many_streamed`` / ``ssim_many_streamed``): the pass never loads a
    whole cube, and its results equal the one-pass functions'."""
    from app.core.science.metrics import (compute_all_many, compute_all_many_streamed, ssim_many,
                                          ssim_many_streamed)

    cache = cache if cache is not None else AnalysisCache()
    ref = request.reference
    n = len(request.methods)
    notes: list[str] = []
    if request.settings.scope == "roi" and request.roi is None:
        notes.append("no ROI drawn: metrics of the whole image (draw one with O or P)")
    fulls: dict[int, MetricResult] = {}
    for layer in request.methods:
        found = cache._get(cache._full, AnalysisCache.pair_key(ref, layer) + (request.scale,))
        if found is not None:
            fulls[layer.uid] = found
    todo = [layer for layer in request.methods if layer.uid not in fulls]
    levels = None
    if todo:
        yield 0.0, f"Analysing {', '.join(layer.name for layer in todo)}"
        share = len(todo) / max(n, 1)
        two_phases = partial is not None
        first = 0.3 if two_phases else 0.9  # of the progress bar: the first pass is a third of the work
        # (bad bands of every method's file: all methods are ranked on the same bands)
        rows = _stream_plan(request, todo, tile_rows)
        if rows is not None:
            two_phases = True  # (one streamed pass for the maps and metrics, one for SSIM)
            first = 0.3
            readers = [_row_reader(layer.cube) for layer in todo]
            computed = compute_all_many_streamed(
                _row_reader(ref.cube), readers, ref.cube.shape, tile_rows=rows, scale=request.scale,
                band_index=request.band, gt_wavelengths_nm=ref.cube.wavelengths_nm,
                preds_wavelengths_nm=[layer.cube.wavelengths_nm for layer in todo],
                progress=None if tick is None else (lambda f: tick(first * share * f)))
        else:
            nodata = [_pair_nodata(ref, layer) for layer in todo]
            excluded = _excluded_bands(ref, request.methods)
            computed = compute_all_many(
                ref.cube.data, [layer.cube.data for layer in todo], scale=request.scale, band_index=request.band,
                gt_wavelengths_nm=ref.cube.wavelengths_nm,
                preds_wavelengths_nm=[layer.cube.wavelengths_nm for layer in todo], device=request.device,
                progress=None if tick is None else (lambda f: tick(first * share * f)), ssim=not two_phases,
                nodata=nodata, exclude_bands=excluded)
        if two_phases:
            early = dict(fulls)
            early.update({layer.uid: full for layer, full in zip(todo, computed)})
            # (SSIM NaN in these dicts; the maps are final, so are their colour scales)
            early_result = drain(_assemble_steps(request, cache, early, list(notes), pending=("ssim",)))
            levels = (early_result.error_levels, early_result.sam_levels)
            if partial is not None:
                partial(early_result)
            yield first * share, "SSIM"
            ssim_tick = None if tick is None else (lambda f: tick(first * share + 0.6 * share * f))
            if rows is not None:
                scores = ssim_many_streamed(_row_reader(ref.cube), readers, ref.cube.shape, tile_rows=rows,
                                            progress=ssim_tick)
            else:
                scores = ssim_many(ref.cube.data, [layer.cube.data for layer in todo], device=request.device,
                                   progress=ssim_tick, nodata=nodata, exclude_bands=excluded)
            computed = [full.with_ssim(mean, per_band) for full, (mean, per_band) in zip(computed, scores)]
        for layer, full in zip(todo, computed):
            key = AnalysisCache.pair_key(ref, layer)
            cache._put(cache._full, key + (request.scale,), full)
            cache._put(cache._abs, key + (request.band,), full.maps.abs_error)
            fulls[layer.uid] = full
    base = 0.9 * len(todo) / max(n, 1)  # of the progress bar, reached by the whole-image pass
    return (yield from _assemble_steps(request, cache, fulls, notes, base=base, levels=levels))


def _assemble_steps(request: AnalysisRequest, cache: AnalysisCache, fulls: dict, notes: list[str],
                    pending: tuple[str, ...] = (), base: float = 0.0,
                    levels: tuple | None = None) -> Iterator[tuple[float, str]]:
    """Scoped metrics, maps and colour scales of every method from its whole-image dict; a
    generator of (fraction, message) returning the AnalysisResult. ``levels``: the (error, SAM)
    colour scales when already known (the partial result of the same maps had them)."""
    from app.core.science.metrics import abs_error_map, compute_all

    ref = request.reference
    n = len(request.methods)
    results: list[MethodResult] = []
    scope_kind = request.scope_key[0]
    for i, layer in enumerate(request.methods):
        yield base + (0.9 - base) * (i + 1) / max(n, 1), f"Metrics of {layer.name} ({i + 1}/{n})"
        key = AnalysisCache.pair_key(ref, layer)
        full = fulls[layer.uid]
        scoped = full
        if scope_kind != "image":
            skey = key + (request.scale,) + request.scope_key
            scoped = cache._get(cache._scoped, skey)
            if scoped is None:
                kwargs: dict[str, Any] = {}
                nodata = full.maps.nodata
                mapped = not (ref.cube.in_memory and layer.cube.in_memory)
                g = p = None
                if scope_kind == "roi":
                    kwargs["mask"] = request.roi.mask(*ref.cube.shape[:2])
                elif mapped:  # a memory-mapped cube: read the visible rectangle only (the same metrics)
                    y0, y1, x0, x1 = request.region
                    g, p = (c.region(slice(y0, y1), slice(x0, x1)) for c in (ref.cube, layer.cube))
                    nodata = None if nodata is None else nodata[y0:y1, x0:x1]
                else:
                    kwargs["region"] = request.region
                if g is None:  # (a memory-mapped cube is read for this pass, not kept in memory)
                    g, p = ((c.region(slice(None), slice(None)) if mapped else c.data) for c in (ref.cube, layer.cube))
                try:
                    scoped = compute_all(g, p, scale=request.scale, device=request.device, nodata=nodata,
                                         exclude_bands=_excluded_bands(ref, request.methods), **kwargs)
                    if scope_kind == "view" and "region" not in kwargs:
                        scoped = scoped.replace(region=tuple(request.region))
                except HsiError as exc:  # an empty ROI: say so, show the whole image
                    notes.append(f"{SCOPE_TITLES[scope_kind]}: {exc}")
                    scoped = full
                else:
                    cache._put(cache._scoped, skey, scoped)
        if request.settings.error_kind == "abs_band":
            error = cache._get(cache._abs, key + (request.band,))
            if error is None:  # (one band of each cube read: never the whole cube)
                error = abs_error_map(ref.cube.band(request.band)[..., None], layer.cube.band(request.band)[..., None], 0)
                nodata = full.maps.nodata
                if nodata is not None:  # as in the whole-image maps: 0 where a pixel is no-data
                    error = np.where(nodata, np.float32(0.0), error)
                cache._put(cache._abs, key + (request.band,), error)
        else:
            error = full.maps.rmse
        results.append(MethodResult(layer, full, scoped, error, full.maps.sam_deg, full.maps.sam_valid))
    yield 1.0, "Colour scales"
    if levels is not None:
        error_levels, sam_levels = levels
    else:
        counted = [None if m.full.maps.nodata is None else ~m.full.maps.nodata for m in results]
        error_levels = locked_levels([m.error_map for m in results], counted)
        sam_levels = locked_levels([m.sam_map for m in results], [m.sam_valid for m in results])
    if scope_kind == "roi":
        scope_note = f"ROI: {request.roi.describe()}"
    elif scope_kind == "view":
        y0, y1, x0, x1 = request.region
        scope_note = f"visible view: rows {y0}–{y1}, cols {x0}–{x1}"
    else:
        scope_note = "whole image"
    return AnalysisResult(request, results, error_levels, sam_levels, scope_note, notes, pending)


def run_analysis(request: AnalysisRequest, cache: AnalysisCache | None = None, *,
                 progress: Callable[[float, str], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None,
                 partial: Callable[[AnalysisResult], None] | None = None,
                 tile_rows: int | None = None) -> AnalysisResult:
    """Run :func:`analysis_steps` to the end; raises Cancelled when ``should_cancel()`` turns true
    (checked before each step and after each row tile of the whole-image pass). ``partial``: see
    :func:`analysis_steps` (called from this thread, before SSIM)."""
    def tick(fraction: float) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("analysis cancelled by the user")
        if progress is not None:
            progress(fraction, "Error and SAM maps, metrics")

    gen = analysis_steps(request, cache, tick, partial, **({} if tile_rows is None else {"tile_rows": tile_rows}))
    while True:
        try:
            fraction, message = next(gen)
        except StopIteration as stop:
            return stop.value
        if should_cancel is not None and should_cancel():
            gen.close()
            raise Cancelled("analysis cancelled by the user")
        if progress is not None:
            progress(fraction, message)

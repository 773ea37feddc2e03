"""Figures for papers, rendered with matplotlib (no Qt): a panel, the panel grid, the spectra
plot, the per-band metric curves and the paper-figure builder (methods as columns, views as rows).

Output: PNG at a chosen DPI and size, or true vector PDF / SVG: text stays text (SVG fonttype
'none', PDF TrueType fonts), lines are paths, and images are embedded at their native resolution
(``interpolation='none'``: the vector backends store the pixels unresampled, so nothing is
blurred; PNG uses nearest-neighbour). The provenance of every layer shown goes into the file's
metadata (PDF Subject, SVG Description, PNG text chunk 'provenance'), as JSON.

>>> fig = paper_figure(scene, PaperFigureSpec(methods=[3, 4, 5], views=("true", "band", "error", "sam"),
...                                           inset=(40, 40, 80, 80)))
>>> save_figure(fig, "figure.pdf", provenance=fig.hsi_provenance)
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from app.core.io.atomic import WriteError, atomic_file
from app.core.errors import HsiError
from app.core.export.data import (APP_NAME, APP_VERSION, collect_spectra, export_provenance, jsonable)

if TYPE_CHECKING:  # pragma: no cover
    from app.core.evaluation.analysis import AnalysisResult
    from app.core.science.metric_result import MetricResult
    from app.core.state.scene import Layer, Scene

FIGURE_FORMATS: dict[str, str] = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
VIEWS: tuple[str, ...] = ("true", "band", "error", "sam")
VIEW_TITLES = {"true": "True colour", "band": "Band", "error": "Error map", "sam": "SAM map"}
MAP_COLORMAP = "inferno"
CORNERS: tuple[str, ...] = ("auto", "lower right", "lower left", "upper right", "upper left")
INSET_COLOUR = "#00e5ff"
RC = {"svg.fonttype": "none", "pdf.fonttype": 42, "font.size": 8, "axes.titlesize": 8,
      "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "image.interpolation": "nearest"}
# rc_context swaps the process-wide rcParams and matplotlib is not thread-safe: the preview worker,
# the export worker and the GUI thread take turns through this lock (re-entrant: builders nest).
MPL_LOCK = threading.RLock()


class FigureError(HsiError):
    """A figure cannot be made (nothing to show, bad choice of methods or views, bad inset)."""


# ---------------------------------------------------------------------------------- saving
def figure_format(path: str | Path) -> str:
    fmt = FIGURE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise WriteError(path, f"cannot tell the figure format from '{Path(path).suffix}': use .png, .pdf or .svg")
    return fmt


def _interp(fmt: str) -> str:
    """'none' embeds the raster unresampled in PDF/SVG; PNG resamples with nearest neighbour."""
    return "nearest" if fmt == "png" else "none"


def save_figure(fig: Figure, path: str | Path, *, dpi: float = 300, size_in: tuple[float, float] | None = None,
                provenance: dict | None = None, title: str = "") -> Path:
    """Write ``fig`` atomically as PNG (``dpi``; ``size_in`` inches) / PDF / SVG (by extension)
    with ``provenance`` as JSON in the file's metadata. Raises WriteError naming the file."""
    path = Path(path).expanduser()
    fmt = figure_format(path)
    if size_in is not None:
        w, h = (float(v) for v in size_in)
        if not (w > 0 and h > 0):
            raise FigureError(f"{path}: the figure size must be positive, got {size_in}")
        fig.set_size_inches(w, h)
    if not (dpi and dpi > 0):
        raise FigureError(f"{path}: the DPI must be positive, got {dpi}")
    prov = json.dumps(jsonable(provenance if provenance is not None else getattr(fig, "hsi_provenance", {})),
                      sort_keys=True)
    title = title or getattr(fig, "hsi_title", "") or path.stem
    software = f"{APP_NAME} {APP_VERSION}"
    if fmt == "png":
        meta = {"Title": title, "Software": software, "provenance": prov}
    elif fmt == "pdf":
        meta = {"Title": title, "Creator": software, "Subject": prov, "Keywords": "hyperspectral; provenance JSON in Subject"}
    else:
        meta = {"Title": title, "Creator": software, "Description": prov}
    with MPL_LOCK, matplotlib.rc_context(RC):
        _retarget_images(fig, fmt)
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
    return path


def _retarget_images(fig: Figure, fmt: str) -> None:
    for ax in fig.get_axes():
        for im in ax.get_images():
            im.set_interpolation(_interp(fmt))


def read_provenance(path: str | Path) -> dict:
    """The provenance JSON stored by :func:`save_figure` (PNG, PDF or SVG); {} when absent."""
    path = Path(path)
    fmt = figure_format(path)
    if fmt == "png":
        from PIL import Image

        with Image.open(path) as im:
            text = im.info.get("provenance", "")
    elif fmt == "svg":
        import xml.etree.ElementTree as ET

        text = ""
        for el in ET.parse(path).iter():
            if el.tag.endswith("}description") and el.text:
                text = el.text
    else:
        text = _pdf_info_string(path.read_bytes(), b"/Subject")
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _pdf_info_string(raw: bytes, key: bytes) -> str:
    """A literal string of the PDF Info dictionary (matplotlib writes it uncompressed)."""
    start = raw.rfind(key + b" (")
    if start < 0:
        return ""
    i = start + len(key) + 2
    out = bytearray()
    depth = 0
    while i < len(raw):
        ch = raw[i]
        if ch == 0x5C:  # backslash escape
            nxt = raw[i + 1:i + 2]
            out += {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(nxt, nxt)
            i += 2
            continue
        if ch == 0x28:
            depth += 1
        elif ch == 0x29:
            if depth == 0:
                break
            depth -= 1
        out.append(ch)
        i += 1
    return out.decode("latin-1")


def _with_rc(fn):
    """Build the figure under the export style (font sizes, text as text)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with MPL_LOCK, matplotlib.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------------------------- images
def _rgb_display(image: np.ndarray, levels) -> np.ndarray:
    """(h, w, 3) in [0, 1] from an RGB image and its levels ((lo, hi) or (3, 2))."""
    img = np.asarray(image, dtype=np.float32)
    lv = np.asarray(levels if levels is not None else (0.0, 1.0), dtype=np.float64)
    if lv.ndim == 1:
        lv = np.tile(lv[None, :], (3, 1))
    out = np.empty_like(img)
    for c in range(3):
        lo, hi = lv[c]
        out[..., c] = (img[..., c] - lo) / (hi - lo if hi > lo else 1.0)
    return np.clip(out, 0.0, 1.0)


def _extent(layer: "Layer") -> tuple[float, float, float, float]:
    """Image extent on the HR grid (left, right, bottom, top): an LR pixel covers s x s HR pixels."""
    h, w = layer.cube.height * layer.scale, layer.cube.width * layer.scale
    return (0.0, float(w), float(h), 0.0)


def _apply_view(ax, view_range, hr_shape) -> None:
    if view_range is not None:
        (x0, x1), (y0, y1) = view_range
    else:
        h, w = hr_shape
        x0, x1, y0, y1 = 0.0, float(w), 0.0, float(h)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)


def _draw_panel(fig: Figure, ax, scene: "Scene", layer: "Layer", rendered, *, fmt: str = "pdf",
                colorbar: bool = True) -> None:
    ext = _extent(layer)
    if rendered.is_rgb:
        ax.imshow(_rgb_display(rendered.image, rendered.levels), extent=ext, interpolation=_interp(fmt))
    else:
        lo, hi = rendered.levels
        im = ax.imshow(np.asarray(rendered.image, dtype=np.float32), cmap=scene.colormap, vmin=lo, vmax=hi,
                       extent=ext, interpolation=_interp(fmt))
        if colorbar:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="reflectance")
    band = "" if rendered.band is None else \
        f" — {band_caption(rendered.band, layer.cube.bands, layer.cube.wavelengths_nm)}"
    ax.set_title(f"{layer.label}{band}")
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    _apply_view(ax, scene.view_range, scene.hr_shape)


@_with_rc
def panel_figure(scene: "Scene", uid: int | None = None, *, width_in: float = 4.0) -> Figure:
    """One panel (layer ``uid``, default the first) as shown: current band / RGB / true colour,
    the scene's contrast and colormap, a colorbar, title and pixel axes, the current zoom."""
    from app.core.state.scene import render

    if not scene.layers:
        raise FigureError("nothing to export: open a cube first")
    layer = scene.layer(uid) if uid is not None else scene.layers[0]
    rendered = render(scene.snapshot())[layer.uid]
    h, w = scene.hr_shape
    fig = Figure(figsize=(width_in, width_in * h / w * 0.95 + 0.3), layout="constrained")
    _draw_panel(fig, fig.add_subplot(), scene, layer, rendered)
    fig.hsi_provenance = export_provenance([layer], view="panel", **_view_state(scene))
    fig.hsi_title = layer.label
    return fig


@_with_rc
def grid_figure(scene: "Scene", *, columns: int | None = None, panel_in: float = 2.6) -> Figure:
    """Every panel in a grid, as the main window shows them (shared contrast and zoom)."""
    from app.core.state.scene import render

    layers = scene.layers
    if not layers:
        raise FigureError("nothing to export: open a cube first")
    n = len(layers)
    cols = columns or min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    rows = math.ceil(n / cols)
    h, w = scene.hr_shape
    fig = Figure(figsize=(cols * panel_in * 1.15, rows * panel_in * h / w + 0.4), layout="constrained")
    rendered = render(scene.snapshot())
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        _draw_panel(fig, ax, scene, layers[i], rendered[layers[i].uid])
    fig.hsi_provenance = export_provenance(layers, view="grid", **_view_state(scene))
    fig.hsi_title = "panels"
    return fig


def _view_state(scene: "Scene") -> dict:
    return {"band": scene.band, "band_label": scene.band_text(), "mode": scene.mode.value,
            "percentiles": list(scene.percentiles), "colormap": scene.colormap,
            "view_range": None if scene.view_range is None else [list(r) for r in scene.view_range]}


# ---------------------------------------------------------------------------------- plots
@_with_rc
def spectra_figure(scene: "Scene", curves=None, *, size_in: tuple[float, float] = (5.0, 3.2)) -> Figure:
    """The spectra plot: every curve of :func:`app.core.export.data.collect_spectra` (pixel, pins, ROI
    mean with a ± std band) with a legend naming the source and (row, col); x in nm."""
    curves = list(curves) if curves is not None else collect_spectra(scene)
    if not curves:
        raise FigureError("no spectra to export: click a pixel (Shift+click pins more) or draw a ROI first")
    fig = Figure(figsize=size_in, layout="constrained")
    ax = fig.add_subplot()
    styles = {"pixel": "-", "pin": "--", "roi": "-.", "residual": ":"}
    colours = matplotlib.colormaps["tab10"]
    sources = list(dict.fromkeys(c.source for c in curves))
    # a reconstruction in its method's colour, as in the viewer (the scene keeps it by name)
    methods = {layer.label: layer.name for layer in scene.layers if layer.role == "recon"}
    for c in curves:
        name = methods.get(c.source[: -len(" − ref")] if c.source.endswith(" − ref") else c.source)
        colour = scene.method_colour(name) if name is not None and hasattr(scene, "method_colour") \
            else colours(sources.index(c.source) % 10)
        marker = "o" if len(c.x) <= 8 else None
        ax.plot(c.x, c.y, linestyle=styles.get(c.kind, "-"), color=colour, marker=marker, markersize=3,
                linewidth=1.2, label=c.label)
        if c.std is not None:
            ax.fill_between(c.x, c.y - c.std, c.y + c.std, color=colour, alpha=0.2, linewidth=0)
    if scene.band_wavelength() is not None and all(c.known for c in curves):
        ax.axvline(scene.band_wavelength(), color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlabel("wavelength (nm)" if all(c.known for c in curves) else "band")
    ax.set_ylabel("reflectance")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    # outside the axes, right of them (constrained layout makes room): with several methods and
    # pins an inside legend covers the curves
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
              ncols=1 if len(curves) <= 14 else 2)
    fig.hsi_provenance = export_provenance(scene.layers, view="spectra",
                                           pixels=[c.label for c in curves])
    fig.hsi_title = "spectra"
    return fig


@_with_rc
def band_curves_figure(result: "AnalysisResult", metric: str = "psnr_db", *, band: int | None = None,
                       size_in: tuple[float, float] = (5.0, 3.0)) -> Figure:
    """Per-band metric curves (one per method) against wavelength, the current band marked."""
    from app.core.evaluation.analysis import CURVE_TITLES

    if not result.methods:
        raise FigureError("no per-band metrics to export: run the analysis first (Ctrl+M)")
    ref = result.request.reference
    wl = ref.cube.wavelengths_nm
    fig = Figure(figsize=size_in, layout="constrained")
    ax = fig.add_subplot()
    for m in result.methods:
        y = m.per_band(metric)
        x = wl if wl is not None else np.arange(1, len(y) + 1)  # band numbers from 1
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.2, label=m.name)
    if band is not None:
        ax.axvline(wl[band] if wl is not None else band, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlabel("wavelength (nm)" if wl is not None else "band")
    ax.set_ylabel(CURVE_TITLES.get(metric, metric))
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="best", frameon=False)
    ax.set_title(f"per-band {CURVE_TITLES.get(metric, metric)} against {ref.label}")
    fig.hsi_provenance = export_provenance([ref] + [m.layer for m in result.methods], view="per-band curves",
                                           metric=metric)
    fig.hsi_title = f"per-band {metric}"
    return fig


# ---------------------------------------------------------------------------------- paper figure
@dataclass
class PaperFigureSpec:
    """What the paper-figure builder draws.

    methods: layer uids, one column each, in order (the GT may be one of them: its error and
        SAM cells stay empty).
    views: rows, from VIEWS: 'true' (true colour), 'band' (band ``band``), 'error' (per-pixel
        RMSE over bands, or |error| at the band with error_kind='abs_band'), 'sam' (SAM in degrees).
    inset: (x0, y0, x1, y1) HR pixel rectangle zoomed in every panel, or None.
    inset_corner: where the zoomed crop goes: 'lower right', 'lower left', 'upper right', 'upper left',
        or 'auto': the corner diagonally opposite the inset, so the crop never hides the box.
    """

    methods: Sequence[int]
    views: Sequence[str] = VIEWS
    band: int | None = None
    inset: tuple[float, float, float, float] | None = None
    inset_corner: str = "auto"
    inset_fraction: float = 0.42
    error_kind: str = "rmse"
    panel_in: float = 1.7
    title: str = ""
    device: str | None = None
    extra_provenance: dict = field(default_factory=dict)


@dataclass
class _Column:
    layer: "Layer"
    metrics: "MetricResult | None"  # compute_all against the reference (None for the reference itself)


def _check_spec(scene: "Scene", spec: PaperFigureSpec) -> tuple[list["Layer"], "Layer | None"]:
    if not spec.methods:
        raise FigureError("choose at least one method (column) for the figure")
    bad = [v for v in spec.views if v not in VIEWS]
    if bad or not spec.views:
        raise FigureError(f"unknown view(s) {bad}; choose from {', '.join(VIEWS)}")
    try:
        layers = [scene.layer(int(u)) for u in spec.methods]
    except KeyError as exc:
        raise FigureError(f"the figure names a layer that is not open ({exc})") from None
    gts = scene.layers_with_role("gt")
    ref = gts[0] if gts else None
    for layer in layers:
        if layer.cube.shape[:2] != scene.hr_shape or (ref is not None and layer.cube.shape != ref.cube.shape):
            raise FigureError(f"{layer.label} ({layer.cube.height}x{layer.cube.width}x{layer.cube.bands}) does not "
                              f"match the reference: the figure compares cubes of the reference's size and bands")
    if ref is None and any(v in ("error", "sam") for v in spec.views):
        raise FigureError("error and SAM maps need a ground-truth (GT) layer")
    if spec.inset is not None:
        x0, y0, x1, y1 = spec.inset
        h, w = scene.hr_shape
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise FigureError(f"the inset ({x0:g}, {y0:g})–({x1:g}, {y1:g}) must lie inside the {w}x{h} image "
                              f"with x0 < x1 and y0 < y1")
    if spec.inset_corner not in CORNERS:
        raise FigureError(f"unknown inset corner {spec.inset_corner!r}")
    return layers, ref


@dataclass(frozen=True)
class PaperInputs:
    """What :func:`render_paper_figure` reads from the scene, frozen on the thread that owns the
    scene so that the rendering may run on any other (the scene keeps changing meanwhile)."""

    spec: PaperFigureSpec
    layers: tuple
    ref: "Layer | None"
    band: int
    n_bands: int
    hr_shape: tuple[int, int]
    analysis_scale: float | None
    snapshot: Any
    percentiles: tuple[float, float]
    colormap: str
    wl_text: str
    band_title: str


def paper_inputs(scene: "Scene", spec: PaperFigureSpec) -> PaperInputs:
    """Check ``spec`` against ``scene`` and freeze what the figure needs (cheap: no pixels read)."""
    layers, ref = _check_spec(scene, spec)
    band = scene.band if spec.band is None else int(spec.band)
    if not 0 <= band < scene.n_bands:
        raise FigureError(f"band {band + 1} is out of range (1–{scene.n_bands})")
    wl_text = scene.band_text(band) if scene.band_wavelength(band) is not None else ""
    return PaperInputs(spec=spec, layers=tuple(layers), ref=ref, band=band, n_bands=scene.n_bands,
                       hr_shape=tuple(scene.hr_shape), analysis_scale=scene.analysis_scale(),
                       snapshot=scene.snapshot(), percentiles=tuple(scene.percentiles), colormap=scene.colormap,
                       wl_text=wl_text, band_title=f"Band {band + 1} / {scene.n_bands}")


def band_caption(band: int, n_bands: int, wavelengths_nm=None) -> str:
    """'band 22 / 31 (600 nm)': 1-based as in the main window's band bar, so that the window, the
    builder and the exported titles name a band the same way."""
    text = f"band {band + 1} / {n_bands}"
    if wavelengths_nm is not None and len(wavelengths_nm) == n_bands:
        nm = float(wavelengths_nm[band])
        text += f" ({nm:.0f} nm)" if abs(nm - round(nm)) < 0.05 else f" ({nm:.1f} nm)"
    return text


def colour_row_title(notes: Sequence[str]) -> str:
    """'True colour' only when every picture of the row is CIE true colour; a cube that does not
    cover 400-700 nm is shown in false colour and its note says so, so the title must too."""
    return "False colour" if any("false colour" in (n or "") for n in notes) else "True colour"


def paper_figure(scene: "Scene", spec: PaperFigureSpec) -> Figure:
    """Methods as columns, views as rows; one shared contrast and colour scale per row with one
    colorbar; the same inset on every panel with the zoomed crop in a corner; captions with the
    method's name and its PSNR / SAM against the GT (computed with app.core.science.metrics)."""
    return render_paper_figure(paper_inputs(scene, spec))


class _MetricsCache:
    """``compute_all`` of (reference, method) pairs, kept for the builder's next preview: a band or
    inset change redraws the pictures but the whole-image metrics and maps stay the same, and
    computing them again (seconds on big cubes, every core busy) is what made the window stutter.
    Keyed by the layers and their cubes (held weakly: a replaced or closed cube never matches)."""

    def __init__(self, size: int = 16):
        self._entries: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self.size = size

    @staticmethod
    def _key(ref, layer, scale, device) -> tuple:
        return (ref.uid, id(ref.cube), layer.uid, id(layer.cube), scale, str(device))

    def get(self, ref, layer, scale, device):
        with self._lock:
            found = self._entries.get(self._key(ref, layer, scale, device))
        if found is None:
            return None
        ref_cube, cube, metrics = found
        return metrics if ref_cube() is ref.cube and cube() is layer.cube else None

    def put(self, ref, layer, scale, device, metrics) -> None:
        import weakref

        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[self._key(ref, layer, scale, device)] = (weakref.ref(ref.cube), weakref.ref(layer.cube), metrics)


FIGURE_METRICS = _MetricsCache()


def _streamed_metrics(ref, layer, scale, band: int, device) -> "MetricResult | None":
    """The metrics and maps of a pair of which a cube is memory-mapped, by row tiles
    (``metrics.compute_all_many_streamed``: the cubes are never loaded; every metric the figure
    shows, equal to ``compute_all``'s to float32 rounding), kept in FIGURE_METRICS; None when the
    pair is in memory or has no-data pixels or bad bands (then ``compute_all``)."""
    from app.core.evaluation.analysis import STREAM_TILE_BYTES
    from app.core.science.metrics import compute_all_many_streamed, ssim_many_streamed, streamable

    cubes = (ref.cube, layer.cube)
    if all(c.in_memory for c in cubes) or any(c.has_nodata_rule or c.bad_bands is not None for c in cubes) \
            or not streamable(device):
        return None
    h, w, b = ref.cube.shape
    rows = max(16, STREAM_TILE_BYTES // max(w * b * 4 * 2, 1))
    readers = [(lambda a, z, c=c: c.region(slice(a, z), slice(None))) for c in cubes]
    metrics = compute_all_many_streamed(readers[0], readers[1:], ref.cube.shape, tile_rows=rows, scale=scale,
                                        band_index=band, gt_wavelengths_nm=ref.cube.wavelengths_nm,
                                        preds_wavelengths_nm=[layer.cube.wavelengths_nm])[0]
    mean, per_band = ssim_many_streamed(readers[0], readers[1:], ref.cube.shape, tile_rows=rows)[0]
    metrics = metrics.with_ssim(mean, per_band)
    FIGURE_METRICS.put(ref, layer, scale, device, metrics)
    return metrics


def render_paper_figure(inputs: PaperInputs, cancelled: Callable[[], bool] | None = None) -> Figure | None:
    """:func:`paper_figure` from frozen inputs; safe off the GUI thread (the metrics and pictures
    are computed without the matplotlib lock, which is held only while drawing). ``cancelled``
    is asked between the expensive steps: when it says True the work stops and None is returned
    (a preview whose request was superseded is not worth finishing)."""
    stop = cancelled or (lambda: False)
    from app.core.evaluation.analysis import locked_levels
    from app.core.science.metrics import abs_error_map, compute_all
    from app.core.state.scene import DisplayMode, percentile_levels, render

    spec, ref, band = inputs.spec, inputs.ref, inputs.band
    columns = []
    for layer in inputs.layers:
        metrics = None
        if ref is not None and layer.uid != ref.uid:
            metrics = FIGURE_METRICS.get(ref, layer, inputs.analysis_scale, spec.device)
            if metrics is None:  # (whole-image metrics and maps: the band only picks maps['abs_error'], unused here)
                metrics = _streamed_metrics(ref, layer, inputs.analysis_scale, band, spec.device)
            if metrics is None:
                metrics = compute_all(ref.cube.data, layer.cube.data, scale=inputs.analysis_scale, band_index=band,
                                      gt_wavelengths_nm=ref.cube.wavelengths_nm,
                                      pred_wavelengths_nm=layer.cube.wavelengths_nm, device=spec.device)
                FIGURE_METRICS.put(ref, layer, inputs.analysis_scale, spec.device, metrics)
        columns.append(_Column(layer, metrics))
        if stop():
            return None

    images: dict[str, list] = {}
    levels: dict[str, Any] = {}
    titles: dict[str, str] = {}
    if "true" in spec.views:
        snap = dataclasses.replace(inputs.snapshot, mode=DisplayMode.TRUE_COLOUR,
                                   layers=tuple(c.layer for c in columns),
                                   colour_image={c.layer.uid: False for c in columns})
        rendered = render(snap)
        images["true"] = [np.clip(np.asarray(rendered[c.layer.uid].image, dtype=np.float32), 0, 1) for c in columns]
        levels["true"] = (0.0, 1.0)
        titles["true"] = colour_row_title([rendered[c.layer.uid].note for c in columns])
    if "band" in spec.views:
        images["band"] = [np.asarray(c.layer.cube.band(band), dtype=np.float32) for c in columns]
        base = ref.cube.band(band) if ref is not None else images["band"][0]
        levels["band"] = percentile_levels(base, *inputs.percentiles)
    if "error" in spec.views:
        if spec.error_kind == "abs_band":
            images["error"] = [None if c.metrics is None else  # (one band of each cube read)
                               abs_error_map(ref.cube.band(band)[..., None], c.layer.cube.band(band)[..., None], 0)
                               for c in columns]
        else:
            images["error"] = [None if c.metrics is None else c.metrics.maps.rmse for c in columns]
        maps = [m for m in images["error"] if m is not None]
        levels["error"] = locked_levels(maps) if maps else (0.0, 1.0)
    if "sam" in spec.views:
        images["sam"] = [None if c.metrics is None else c.metrics.maps.sam_deg for c in columns]
        pairs = [(c.metrics.maps.sam_deg, c.metrics.maps.sam_valid) for c in columns if c.metrics]
        levels["sam"] = locked_levels([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else (0.0, 1.0)
    if stop():
        return None
    return _draw_paper(inputs, columns, images, levels, titles)


@_with_rc
def _draw_paper(inputs: PaperInputs, columns: list, images: dict, levels: dict, titles: dict) -> Figure:
    spec, ref, band = inputs.spec, inputs.ref, inputs.band
    h, w = inputs.hr_shape
    n_rows, n_cols = len(spec.views), len(columns)
    fig = Figure(figsize=(n_cols * spec.panel_in + 0.9, n_rows * spec.panel_in * h / w + 0.75 + (0.2 if spec.title else 0)),
                 layout="constrained")
    if spec.title:
        fig.suptitle(spec.title)
    grid = fig.subplots(n_rows, n_cols + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [1.0] * n_cols + [0.06]})
    axes, bars = grid[:, :n_cols], grid[:, n_cols]
    wl_text = inputs.wl_text
    row_titles = {"true": titles.get("true", "True colour"),
                  "band": inputs.band_title + (f"\n{wl_text}" if wl_text else ""),
                  "error": "RMSE over bands" if spec.error_kind != "abs_band"
                  else f"|error| at {wl_text or inputs.band_title.lower()}",
                  "sam": "SAM (°)"}
    cmaps = {"band": inputs.colormap if inputs.colormap != "gray" else "gray", "error": MAP_COLORMAP,
             "sam": MAP_COLORMAP}
    for r, view in enumerate(spec.views):
        mappable = None
        for j, col in enumerate(columns):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_linewidth(0.5)
            img = images[view][j]
            if img is None:
                ax.set_facecolor("white")
                ax.text(0.5, 0.5, "reference", ha="center", va="center", transform=ax.transAxes, color="0.4")
                for spine in ax.spines.values():
                    spine.set_visible(False)
            else:
                kwargs = {"vmin": levels[view][0], "vmax": levels[view][1]}
                if view != "true":  # an RGB picture is already in [0, 1]: no colormap
                    kwargs["cmap"] = cmaps[view]
                im = ax.imshow(img, extent=(0, w, h, 0), interpolation="none", **kwargs)
                if view != "true":
                    mappable = im
                if spec.inset is not None:
                    _draw_inset(ax, img, spec, kwargs, (h, w))
            if j == 0:
                ax.set_ylabel(row_titles[view])
            if r == 0:
                ax.set_title(_caption(col), fontsize=8)
        if mappable is not None:
            label = {"band": "reflectance", "error": "RMSE" if spec.error_kind != "abs_band" else "|error|",
                     "sam": "SAM (°)"}[view]
            fig.colorbar(mappable, cax=bars[r], label=label)
        else:
            bars[r].set_axis_off()
    fig.hsi_provenance = export_provenance(
        ([ref] if ref is not None else []) + [c.layer for c in columns if ref is None or c.layer.uid != ref.uid],
        view="paper figure", band=band, band_label=wl_text or inputs.band_title.lower(), rows=list(spec.views),
        inset=None if spec.inset is None else list(spec.inset), error_kind=spec.error_kind,
        percentiles=list(inputs.percentiles),
        metrics={c.layer.name: {"psnr_db": c.metrics.psnr_db, "sam_deg": c.metrics.sam_deg,
                                "ssim": c.metrics.ssim} for c in columns if c.metrics},
        **spec.extra_provenance)
    fig.hsi_title = spec.title or "paper figure"
    return fig


def _caption(col: _Column) -> str:
    if col.metrics is None:
        return f"{col.layer.name}\n(reference)" if col.layer.role == "gt" else col.layer.name
    return f"{col.layer.name}\nPSNR {col.metrics.psnr_db:.2f} dB · SAM {col.metrics.sam_deg:.2f}°"


def _draw_inset(ax, img: np.ndarray, spec: PaperFigureSpec, kwargs: dict, hw: tuple[int, int]) -> None:
    """The inset rectangle on the panel and the zoomed crop (native pixels) in a corner."""
    x0, y0, x1, y1 = spec.inset
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=INSET_COLOUR, linewidth=0.9))
    c0, c1 = int(math.floor(x0)), int(math.ceil(x1))
    r0, r1 = int(math.floor(y0)), int(math.ceil(y1))
    crop = img[r0:r1, c0:c1]
    corner = spec.inset_corner
    if corner == "auto":
        cx, cy = (x0 + x1) / 2 / hw[1], (y0 + y1) / 2 / hw[0]
        corner = ("upper" if cy >= 0.5 else "lower") + (" left" if cx >= 0.5 else " right")
    f = spec.inset_fraction
    aspect = (y1 - y0) / (x1 - x0) * hw[1] / hw[0]
    fw, fh = (f, f * aspect) if aspect <= 1 else (f / aspect, f)
    left = 1 - fw if "right" in corner else 0.0
    bottom = 0.0 if "lower" in corner else 1 - fh
    sub = ax.inset_axes([left, bottom, fw, fh])
    sub.imshow(crop, extent=(c0, c1, r1, r0), interpolation="none", **kwargs)
    sub.set_xlim(x0, x1)
    sub.set_ylim(y1, y0)
    sub.set_xticks([])
    sub.set_yticks([])
    for spine in sub.spines.values():
        spine.set_edgecolor(INSET_COLOUR)
        spine.set_linewidth(1.2)


def default_methods(scene: "Scene", include_reference: bool = True) -> list[int]:
    """The GT (when asked) then every reconstruction comparable with it."""
    from app.core.evaluation.analysis import comparable_layers

    gts = scene.layers_with_role("gt")
    uids = [gts[0].uid] if gts and include_reference else []
    recon = comparable_layers(scene) if gts else scene.layers_with_role("recon")
    return uids + [l.uid for l in recon]


def view_inset(scene: "Scene") -> tuple[float, float, float, float] | None:
    """The current zoom as an inset rectangle (clipped to the image), or None when unzoomed."""
    if scene.view_range is None or scene.hr_shape is None:
        return None
    (x0, x1), (y0, y1) = scene.view_range
    h, w = scene.hr_shape
    x0, x1 = max(0.0, math.floor(x0)), min(float(w), math.ceil(x1))
    y0, y1 = max(0.0, math.floor(y0)), min(float(h), math.ceil(y1))
    if x1 - x0 < 2 or y1 - y0 < 2 or (x1 - x0 >= w and y1 - y0 >= h):
        return None
    return (x0, y0, x1, y1)


def figure_to_rgba(fig: Figure, dpi: float = 80) -> np.ndarray:
    """(h, w, 4) uint8 rendering of ``fig`` (for a preview)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with MPL_LOCK, matplotlib.rc_context(RC):
        _retarget_images(fig, "png")
        canvas = FigureCanvasAgg(fig)
        fig.set_dpi(dpi)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba()).copy()

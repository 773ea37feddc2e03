"""`compare`: the metrics of existing predictions (files or folders) against ground-truth cubes.

>>> doc = compare("cave_test/", ["out/bicubic/", "out/mine/"], scale=4)
>>> print(format_table(doc))

- Each side is a cube file, a CAVE scene folder (PNG bands), or a folder holding cube files
  and/or scene folders (CAVE's nested ``beads_ms/beads_ms/*.png`` included). Predictions are
  matched to GT items by name: the file stem, case-insensitive, then with common suffixes removed
  (``_pred``, ``_sr``, ``_out``, ``_result``, ``_recon``, ``_x4``, the method's own name, ...), then
  without CAVE's ``_ms``. Unmatched items on either side are listed, never dropped silently.
- Every file goes through the project's readers (``app.core.io.open_cube``). The band axis of a
  prediction is found against the GT's shape; the value range (float in [0, 1], 0-255, 0-65535) is
  detected from the values (and, between 0-255 and 0-65535, from the GT's mean) and stated per row.
- A prediction smaller than the GT (a border, or the GT cropped to a multiple of the scale) is
  compared on the matching part of the GT only when ``crop=True``, and the row says so.
- Metrics come from ``app.core.science.metrics.compute_all`` (protocols.md conventions); ERGAS needs the
  scale. A file that cannot be read or compared becomes an entry of ``errors`` (one line naming the
  file and the problem); the rest of the dataset is still computed.

The document has the schema of ``eval``: ``results`` (one row per image and method with
``psnr``, ``ssim``, ``sam_deg``, ``ergas``, ``rmse``) and ``summary`` (the mean per method), plus
``errors``, ``unmatched``, ``ignored`` and ``notes``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.core.errors import AmbiguousCubeError, Cancelled, HsiError, MissingFileError, NonFiniteError, ShapeMismatchError
from app.core.device import select_device
from app.core.cube import bands_in_ranges, parse_nm_ranges
from app.core.io import open_cube
from app.core.science.metric_table import COLUMNS, HIGHER_IS_BETTER, METRICS
from app.core.io._common import atomic_path, zero_nonfinite
from app.core.io.envi import header_for
from app.core.io.cluster import SINGLE_PROCESS, compute_threads, threads_as
from app.core.io.value_range import LOUD, RangeUndecided, ValueRange, decide, decide_prediction, parse_user_range
from app.core.science.metrics import CONVENTIONS, compute_all, metric_conventions
from app.core.io.provenance import file_fingerprint, stamp

__all__ = ["compare", "list_items", "match_items", "format_table", "to_csv", "to_markdown", "write_csv",
           "write_markdown", "exit_status", "RANGES", "METRIC_KEYS", "Item", "CompareCancelled"]

METRIC_KEYS = COLUMNS
RANGES = ("auto", "unit", "8bit", "16bit", "max")
_DIVISORS = {"unit": 1.0, "8bit": 255.0, "16bit": 65535.0}
_RANGE_TITLES = {"unit": "[0, 1]", "8bit": "0-255", "16bit": "0-65535"}
RANGE_TOLERANCE = 1.5  # a range still fits when the maximum overshoots it by up to 50 % (unclipped outputs)
MEAN_WARNING_RATIO = 3.0  # warn when the prediction's mean is this far from the GT's after scaling

CUBE_EXTENSIONS = {".mat", ".npy", ".npz", ".h5", ".hdf5", ".he5", ".nc", ".hdf", ".tif", ".tiff", ".hdr"}
ENVI_DATA_EXTENSIONS = {".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin"}
MATCH_SUFFIXES = ("pred", "preds", "prediction", "predicted", "sr", "out", "output", "outputs", "result", "results",
                  "res", "recon", "rec", "reconstruction", "reconstructed", "fused", "fusion", "est", "estimate",
                  "estimated", "hr", "final")
_SCALE_TOKEN = r"x\d+|\d+x"


CompareCancelled = Cancelled  # the user stopped a comparison (``should_cancel`` turned true)


# ------------------------------------------------------------------------------ items and matching
@dataclass(frozen=True)
class Item:
    """One cube on one side: its display name (file stem or folder name, unique on its side), where it
    is, and the name used for matching (the stem; defaults to ``name``)."""

    name: str
    path: Path
    stem: str | None = None

    @property
    def match_name(self) -> str:
        return self.stem if self.stem is not None else self.name


@dataclass
class _Side:
    path: Path
    items: list[Item]
    single: bool          # the path itself is one cube (a file or a scene folder)
    ignored: list[Path] = field(default_factory=list)


def _has_png(folder: Path) -> bool:
    try:
        return any(p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        return False


def _scene_in(folder: Path) -> Path | None:
    """The PNG scene folder a subfolder stands for: itself, or its only subfolder (CAVE's nesting)."""
    if _has_png(folder):
        return folder
    try:
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return None
    if len(subs) == 1 and _has_png(subs[0]):
        return subs[0]
    return None


def _item_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def list_items(path: str | Path) -> _Side:
    """The cubes a path stands for. A file or a scene folder is one item; in a folder every cube file
    and scene folder is an item, and other files are listed in ``ignored`` (sidecars and ENVI data
    files beside their header are not)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(path, "no such file or folder")
    if path.is_file():
        return _Side(path, [Item(_item_name(path), path)], True)
    if _has_png(path):
        return _Side(path, [Item(path.name or path.resolve().name, path)], True)
    items: list[Item] = []
    ignored: list[Path] = []
    for entry in sorted(path.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith("."):
            continue  # hidden files and the writers' temporary *.part files
        if entry.is_dir():
            scene = _scene_in(entry)
            if scene is not None:
                items.append(Item(entry.name, scene))
            else:
                ignored.append(entry)
            continue
        ext = entry.suffix.lower()
        if ext in CUBE_EXTENSIONS:
            items.append(Item(entry.stem, entry))
        elif ext in ENVI_DATA_EXTENSIONS or ext == "":
            if header_for(entry) is None:
                if ext:
                    items.append(Item(entry.stem, entry))  # ENVI data without a header: reading says so
                else:
                    ignored.append(entry)
        elif ext == ".json" and (entry.with_suffix("").exists() or entry.name in ("metadata.json", "protocol.json")):
            continue  # sidecar metadata of a cube
        else:
            ignored.append(entry)
    seen: dict[str, int] = {}
    for it in items:
        seen[it.name.lower()] = seen.get(it.name.lower(), 0) + 1
    # two cubes with one stem (x.npy and x.mat): shown by their file names, matched by the stem
    items = [Item(it.path.name, it.path, it.name) if seen[it.name.lower()] > 1 and it.path.is_file() else it
             for it in items]
    return _Side(path, items, False, ignored)


def _strip_re(method: str | None) -> re.Pattern:
    tokens = [re.escape(t) for t in MATCH_SUFFIXES] + [_SCALE_TOKEN]
    if method:
        tokens.insert(0, re.escape(method.lower()))
    return re.compile(r"^(.+?)(?:[_\-. ]+(?:" + "|".join(tokens) + r"))+$")


def _keys(name: str, method: str | None) -> tuple[str, str, str]:
    """Matching keys from strict to loose: lowercase stem; common suffixes (and the method's name as a
    suffix or prefix) removed; then CAVE's ``_ms`` removed too."""
    k0 = name.lower().strip()
    k1 = k0
    if method:
        m = method.lower()
        for sep in "_-. ":
            if k1.startswith(m + sep) and len(k1) > len(m) + 1:
                k1 = k1[len(m) + 1:]
                break
    hit = _strip_re(method).match(k1)
    if hit:
        k1 = hit.group(1)
    k2 = re.sub(r"[_\-. ]+ms$", "", k1) or k1
    return k0, k1, k2


def match_items(gt_items: list[Item], pred_items: list[Item], method: str | None = None
                ) -> tuple[dict[int, Item], list[tuple[Item, str]]]:
    """Pair predictions with GT items by name.

    Returns ({GT index: prediction}, [(unmatched prediction, reason)]). Matching goes from the strict
    key to the loose ones; a key shared by several items on either side pairs nothing (ambiguous)."""
    gt_keys = [_keys(g.match_name, None) for g in gt_items]
    pred_keys = [_keys(p.match_name, method) for p in pred_items]
    free_gt = set(range(len(gt_items)))
    free_pred = set(range(len(pred_items)))
    pairs: dict[int, Item] = {}
    ambiguous: dict[int, str] = {}
    for level in range(3):
        gmap: dict[str, list[int]] = {}
        for i in sorted(free_gt):
            gmap.setdefault(gt_keys[i][level], []).append(i)
        pmap: dict[str, list[int]] = {}
        for j in sorted(free_pred):
            pmap.setdefault(pred_keys[j][level], []).append(j)
        for key, js in pmap.items():
            gs = gmap.get(key)
            if not gs:
                continue
            if len(js) == 1 and len(gs) == 1:
                pairs[gs[0]] = pred_items[js[0]]
                free_gt.discard(gs[0])
                free_pred.discard(js[0])
            else:
                for j in js:
                    ambiguous[j] = (f"ambiguous name: {', '.join(pred_items[x].path.name for x in js)} and GT "
                                    f"{', '.join(gt_items[x].name for x in gs)} all match '{key}'")
                    free_pred.discard(j)
                for i in gs:
                    free_gt.discard(i)  # stays unpaired: listed as missing for this method
    unmatched = []
    paired_by_key = {}
    for i, p in pairs.items():
        for level in range(3):
            paired_by_key.setdefault(gt_keys[i][level], (gt_items[i].name, p.path.name))
    for j, p in enumerate(pred_items):
        if any(p is q for q in pairs.values()):
            continue
        if j in ambiguous:
            unmatched.append((p, ambiguous[j]))
            continue
        taken = next((paired_by_key[k] for k in pred_keys[j] if k in paired_by_key), None)
        if taken:
            unmatched.append((p, f"its GT item '{taken[0]}' is already paired with {taken[1]}"))
        else:
            unmatched.append((p, "matches no GT item by name"))
    return pairs, unmatched


# ------------------------------------------------------------------------------ reading
@dataclass
class _Loaded:
    data: np.ndarray              # (H, W, B) float32 reflectance
    wavelengths: np.ndarray | None
    range: str
    range_note: str
    layout: str | None
    fmt: str | None
    notes: list[str]
    mean: float
    value_range: ValueRange | None = None
    nodata: np.ndarray | None = None      # (H, W) bool no-data pixels, None when there are none
    bad_bands: np.ndarray | None = None   # (B,) bool, the file's bad-band list
    provenance: dict | None = None        # what the file says made it (this tool's SR outputs: model, weights...)


def _close_handles(cube) -> None:
    for key in ("_h5file", "_tifffile"):
        handle = cube.metadata.get(key)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()


def _stated_scale(cube) -> tuple[float, float, str] | None:
    """(multiplier, offset, rule in words) when the reader took the scale from the file itself or from
    its product's convention (ENVI reflectance scale factor or data gain, HDF5/NetCDF scale_factor and
    add_offset, a maxValue beside the cube, GeoTIFF SCALE/OFFSET, PNG bit depth, EnMAP/AVIRIS
    reflectance x 10000): compare then reads the file as every other command does. A per-band gain
    stays in the stored values (``Cube.band_gain``), this is the scale on top of it."""
    if (cube.metadata or {}).get("value_rule") in ("stated", "convention"):
        return cube.scale, cube.offset, cube.normalisation
    return None


def _decide_range(raw: np.ndarray, mode, *, stated: tuple[float, str] | None, ref_mean: float | None,
                  what: str, flag: str = "--pred-range", gt_range: ValueRange | None = None,
                  nodata: np.ndarray | None = None) -> tuple[ValueRange, str, list[str]]:
    """(the range, its name, warnings) of the stored values ``raw`` (as float32; ``what`` names the
    stored dtype), decided by :mod:`app.core.io.value_range`: a GT (``gt_range`` None) on its own,
    a prediction against its GT's range and mean ``ref_mean``. No-data pixels (read as 0) do not
    count in the mean."""
    if nodata is not None:
        raw = raw[~nodata]
    finite = raw[np.isfinite(raw)] if raw.size else raw
    vmax = float(finite.max()) if finite.size else 0.0
    vmean = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
    stated_range = None
    if stated is not None and stated[0] > 0:
        stated_range = ValueRange(float(stated[0]), float(stated[1]), "stated", stated[2])
    try:
        if gt_range is None:
            chosen = decide(np.dtype(what), max_of=lambda: vmax, stated=stated_range, user=mode, flag=flag)
        else:
            chosen = decide_prediction(np.dtype(what), max_value=vmax, mean_value=vmean, gt=gt_range,
                                       gt_mean=ref_mean, stated=stated_range, user=mode, flag=flag)
    except RangeUndecided as exc:
        raise HsiError(str(exc)) from None
    name = chosen.rule
    if name in ("stated", "user"):
        name = next((k for k, v in _DIVISORS.items() if abs(v * chosen.multiplier - 1.0) <= 1e-9), name)
    return chosen, name, list(chosen.warnings)


def _layout_letters(cube) -> str:
    letters = ["?"] * 3
    for letter, axis in zip("HWB", cube.axes):
        letters[axis] = letter
    text = "".join(letters)
    return text[::-1] if cube.metadata.get("format") == "mat-v7.3" else text  # MATLAB order


def _fit_axes(cube, gt_shape: tuple[int, int, int], reader_guess: bool = True):
    """Re-read the stored axes so that the cube's shape fits the GT (the band axis is the one whose
    length is the GT's band count; H and W keep the order the reader chose)."""
    if cube.shape == tuple(gt_shape):
        return cube, None
    h, w, b = gt_shape
    raw_shape = tuple(cube.raw.shape)
    h_first = cube.axes[0] < cube.axes[1]
    options = []
    for perm in itertools.permutations(range(3)):
        shape = tuple(raw_shape[a] for a in perm)
        if shape[2] != b:
            continue
        exact = shape == (h, w, b)
        smaller = shape[0] <= h and shape[1] <= w
        keeps_order = (perm[0] < perm[1]) == h_first
        options.append((not exact, not smaller, not keeps_order, perm))
    if not options:
        return cube, None
    best = min(options)
    perm = best[3]
    if tuple(perm) == cube.axes:
        return cube, None
    before = _layout_letters(cube)
    fitted = cube.replace(axes=tuple(perm))
    after = _layout_letters(fitted)
    said = f"; the file alone suggested {before}" if reader_guess else ""
    return fitted, f"layout {after} detected against the GT's {h}x{w}x{b}{said}"


def _stored_dtype(cube) -> str:
    return np.dtype(cube.raw.dtype).newbyteorder("=").name


def _read(path: Path, *, var: str | None, layout: str | None, mode: str, nonfinite: str = "error",
          gt_shape=None, ref_mean: float | None = None, gt_range: ValueRange | None = None,
          wavelengths: str | None = None) -> _Loaded:
    """Open a cube, fit its axes to ``gt_shape`` (predictions), decide its value range, load it
    (``wavelengths``: a side file of band centres, for the GT)."""
    notes: list[str] = []
    kwargs = dict(var=var, layout=layout, nonfinite=nonfinite, wavelengths=wavelengths)
    reader_guess = True
    try:
        cube = open_cube(path, **kwargs)
    except AmbiguousCubeError as exc:
        if gt_shape is None or exc.option not in ("layout", "hw") or (exc.option == "layout" and layout):
            raise
        if exc.option == "hw":  # a 2-D bands x pixels matrix: the GT gives its height and width
            cube = open_cube(path, hw=tuple(gt_shape[:2]), **kwargs)
            notes.append(f"2-D matrix unfolded to the GT's {gt_shape[0]}x{gt_shape[1]} pixels")
        else:  # any order: the axes are fitted to the GT below
            cube = open_cube(path, **{**kwargs, "layout": "HWB"})
            reader_guess = False
    try:
        if gt_shape is not None and not layout:
            cube, note = _fit_axes(cube, gt_shape, reader_guess)
            if note:
                notes.append(note)
        stated = _stated_scale(cube)
        what = _stored_dtype(cube)
        stored = cube.replace(scale=1.0, offset=0.0)
        try:
            raw = stored.data
        except NonFiniteError:
            if nonfinite != "zero":
                raise
            raw = stored.replace(raw=zero_nonfinite(np.asarray(cube.raw))).data
            notes.append("NaN/Inf values replaced by 0 (user choice)")
        nodata = stored.nodata_mask() if stored.has_nodata_rule else None  # (the load above made it)
        nodata = nodata if nodata is not None and nodata.any() else None
        if not raw.flags.writeable:
            raw = raw.copy()
        chosen, name, warnings = _decide_range(raw, mode, stated=stated, ref_mean=ref_mean, what=what,
                                               flag="--pred-range" if gt_shape is not None else "--gt-range",
                                               gt_range=gt_range, nodata=nodata)
        rule = chosen.text
        notes.extend(warnings)
        if chosen.multiplier != 1.0:  # as Cube does it (times float32(scale)): the same GT values as elsewhere
            np.multiply(raw, np.float32(chosen.multiplier), out=raw)
        if chosen.offset:
            np.add(raw, np.float32(chosen.offset), out=raw)
        # (the reader's loud assumption about the scale is compare's own decision here, said once above)
        notes.extend(w for w in cube.metadata.get("warnings", [])
                     if "CAVE-style folder" not in w and not w.startswith(LOUD))
        mean = math.nan
        if gt_shape is None and raw.size:  # GT only
            mean = float((raw if nodata is None else raw[~nodata]).mean(dtype=np.float64))
        prov = cube.metadata.get("provenance")
        return _Loaded(raw, cube.wavelengths_nm, name, rule, _layout_letters(cube), cube.metadata.get("format"),
                       notes, mean, chosen, nodata, cube.bad_bands, prov if isinstance(prov, dict) and prov else None)
    finally:
        _close_handles(cube)


def _fit_size(gt: np.ndarray, pred: np.ndarray, scale: int | None, crop: bool) -> tuple[np.ndarray, dict | None]:
    """The part of the GT the prediction is compared with (the whole GT unless ``crop``)."""
    (hg, wg, bg), (hp, wp, bp) = gt.shape, pred.shape
    if bp != bg:
        raise ShapeMismatchError(f"has {bp} bands but the GT has {bg} (shape {hp}x{wp}x{bp} vs {hg}x{wg}x{bg})")
    if (hp, wp) == (hg, wg):
        return gt, None
    if hp > hg or wp > wg:
        raise ShapeMismatchError(f"is {hp}x{wp} pixels, larger than the GT's {hg}x{wg}")
    multiple = None
    if scale and scale > 1 and (hg // scale * scale, wg // scale * scale) == (hp, wp):
        multiple = {"rows": [0, hp], "cols": [0, wp],
                    "note": f"GT cropped from {hg}x{wg} to {hp}x{wp} (top-left) to a multiple of the scale {scale}"}
    dh, dw = hg - hp, wg - wp
    top, left = dh // 2, dw // 2
    border = {"rows": [top, top + hp], "cols": [left, left + wp],
              "note": f"GT border removed: rows {top}:{top + hp}, columns {left}:{left + wp} of {hg}x{wg} "
                      f"({top}/{dh - top} px top/bottom, {left}/{dw - left} px left/right)"}
    chosen = multiple or border
    if not crop:
        hint = ("the GT cropped to a multiple of the scale would match" if multiple else
                f"it is smaller by a border of {dh} rows and {dw} columns")
        raise ShapeMismatchError(f"is {hp}x{wp} pixels but the GT is {hg}x{wg} ({hint}); pass --crop to compare "
                                 f"with that part of the GT")
    (r0, r1), (c0, c1) = chosen["rows"], chosen["cols"]
    return gt[r0:r1, c0:c1], chosen


def _one_line(path: Path, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError):
        text = "does not fit in memory"
    if str(path) not in text:
        text = f"{path}: {text}"
    return text


# ------------------------------------------------------------------------------ the command
@dataclass
class _Method:
    name: str
    side: _Side
    pairs: dict[int, Item]
    unmatched: list[tuple[Item, str]]


def _default_name(path: Path) -> str:
    p = Path(path).expanduser()
    name = p.name if p.is_dir() else p.stem
    return name or p.resolve().name or str(p)


def _resolve_device(device: str | None) -> str:
    return str(select_device(device, mps=False))


def _finite_or_none(value):
    return float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else None


def _load_group(g: Item, entries: list[tuple[str, Item]], opts: dict) -> tuple[Item, _Loaded | str, list]:
    """Read one GT item and its methods' predictions (fitted to it): (g, the GT or its one-line
    problem, [(method, item, prediction, GT view, crop, problem or None)])."""
    try:
        gt_loaded = _read(g.path, var=opts["gt_var"], layout=opts["gt_layout"], mode=opts["gt_range"],
                          nonfinite=opts["nonfinite"], wavelengths=opts.get("gt_wavelengths"))
    except Exception as exc:  # noqa: BLE001 - every problem of a file becomes one error line
        text = _one_line(g.path, exc)
        if isinstance(exc, AmbiguousCubeError):  # the GT's own flags
            text = text.replace("(choose with --var", "(choose with --gt-var").replace(
                "(choose with --layout", "(choose with --gt-layout")
        return g, text, []
    out = []
    for name, item in entries:
        try:
            pred = _read(item.path, gt_shape=gt_loaded.data.shape, ref_mean=gt_loaded.mean,
                         gt_range=gt_loaded.value_range, var=opts["var"], layout=opts["layout"],
                         mode=opts["pred_range"], nonfinite=opts["nonfinite"])
            gt_view, crop_info = _fit_size(gt_loaded.data, pred.data, opts["scale"], opts["crop"])
            out.append((name, item, pred, gt_view, crop_info, None))
        except Exception as exc:  # noqa: BLE001
            out.append((name, item, None, None, None, _one_line(item.path, exc)))
    return g, gt_loaded, out


def _score_group(g: Item, gt_loaded, loaded: list, entries: list[tuple[str, Item]], opts: dict):
    """The rows of one GT item, method by method: a metrics row, or an error row ({"image", "model",
    "file", "error"}) when the GT (every method's entry fails with it) or the prediction failed."""
    if isinstance(gt_loaded, str):
        for name, _ in entries:
            yield {"image": g.name, "model": name, "file": str(g.path), "error": gt_loaded}
        return
    for name, item, pred, gt_view, crop_info, problem in loaded:
        if problem is None:
            try:
                row = _metrics_row(g, name, item, pred, gt_view, gt_loaded, crop_info, opts["scale"], opts["device"],
                                   opts["per_band"], opts["exclude_ranges"])
            except Exception as exc:  # noqa: BLE001
                problem = _one_line(item.path, exc)
        if problem is not None:
            row = {"image": g.name, "model": name, "file": str(item.path), "error": problem}
        yield row


def compare_group(g: Item, entries: list[tuple[str, Item]], opts: dict) -> list[dict]:
    """One GT item and its matched predictions, read from their paths and scored: the task a cluster
    worker runs for ``compare(..., scheduler=...)``, the same code as the single-process loop.
    Returns the rows (metrics or error rows) in method order; never raises for a file's problem."""
    with threads_as(opts.get("threads")):
        g, gt_loaded, loaded = _load_group(g, entries, opts)
        return list(_score_group(g, gt_loaded, loaded, entries, opts))


def _absolute(item: Item) -> Item:
    return Item(item.name, item.path.absolute(), item.stem)


def compare(gt, preds, *, names=None, scale: int | None = None, var: str | None = None,
            gt_var: str | None = None, layout: str | None = None, gt_layout: str | None = None,
            pred_range: str = "auto", gt_range: str = "auto", nonfinite: str = "error", crop: bool = False,
            per_band: bool = False, exclude_bands=None, gt_wavelengths: str | Path | None = None,
            device: str = "auto", workers: int | None = None,
            on_progress: Callable[[int, int, dict], None] | None = None,
            should_cancel: Callable[[], bool] | None = None, scheduler: str | None = None) -> dict:
    """Compare predictions (one file or folder per method) with the GT cubes; see the module docstring.

    Args:
        gt: a cube file, a scene folder or a folder of cubes.
        preds: one path per method (file or folder); ``names`` overrides the method names (default:
            the folder's name, or the file's stem).
        scale: HR/LR factor (ERGAS; cropping the GT to a multiple of it with ``crop``).
        var / layout / pred_range: how prediction files are read (``var``: variable in .mat/.npz/.h5;
            ``layout``: forced stored axis order; ``pred_range``: auto, unit, 8bit, 16bit or max).
        gt_var / gt_layout / gt_range: the same for the GT files.
        gt_wavelengths: a side file (.txt/.csv, one value per band, nm or µm) with the band centres of
            every GT file (replacing a file's own); predictions are compared on the GT's bands, so
            a prediction without wavelengths takes the GT's (the per-band curves and --exclude-bands).
        nonfinite: 'error' (a file with NaN/Inf is an error entry), 'zero' (read them as 0, said) or
            'mask' (read as 0 and their pixels left out of the metrics, counted).
        exclude_bands: wavelength ranges in nm ('1340-1460,1790-1960', or (low, high) pairs) whose
            bands leave the band means, as the files' bad-band lists (ENVI bbl) do; each row counts
            them (``excluded_bands``) and the no-data pixels left out (``masked_pixels``).
        crop: compare a smaller prediction with the matching part of the GT (said in the row).
        per_band: add per-band PSNR, SSIM and RMSE curves to each row.
        device: 'auto', 'cpu', 'cuda' (the metrics run there).
        workers: threads reading files ahead of the metric computation (default: 2).
        on_progress: called with (done, total, row) after each image/method pair.
        should_cancel: polled before each image and after each pair; when it returns True the reading
            threads stop and CompareCancelled is raised.
        scheduler: 'tcp://HOST:PORT' or 'local:N': one dask task per GT item (its GT and matched
            predictions, read by path on the worker; see :mod:`app.core.io.cluster`), results taken
            as they complete (``workers`` unused); the rows are the same, in the same order.

    Returns:
        {"command": "compare", "gt", "device", "scale", "methods", "images", "results", "summary",
        "errors", "unmatched", "ignored", "notes", "conventions", "seconds", "execution", "options"} after the
        header of app.core.io.provenance (schema_version, kind, software, created, arguments,
        metric_conventions); each result row also holds ``pred_file`` / ``gt_file`` (size, mtime, sha256 up
        to 64 MiB) and, when the prediction records it, ``pred_provenance``
        (``execution``: {"scheduler": the address or None, "workers": N}); each result row
        also holds ``gt_path`` and ``pred`` (absolute paths) so that a viewer can open the pair as read here.

    Raises:
        HsiError when nothing can be compared at all (a missing path, no GT cube, bad arguments);
        problems with single files end up in ``errors``.
    """
    started = time.perf_counter()
    for what, value in (("pred_range", pred_range), ("gt_range", gt_range)):
        try:
            parse_user_range(value)
        except ValueError as exc:
            raise HsiError(f"--{what.replace('_', '-')}: {exc}") from None
    preds = [Path(p).expanduser() for p in ([preds] if isinstance(preds, (str, Path)) else preds)]
    if not preds:
        raise HsiError("give at least one prediction (--pred PATH)")
    names = list(names or [])
    if len(names) > len(preds):
        raise HsiError(f"{len(names)} names (--name) for {len(preds)} predictions (--pred)")
    if scale is not None:
        if int(scale) != scale or scale < 1:
            raise HsiError(f"the scale must be a positive whole number, got {scale}")
        scale = int(scale)
    dev = _resolve_device(device)
    exclude_ranges = parse_nm_ranges(exclude_bands)

    gt_side = list_items(gt)
    if not gt_side.items:
        raise HsiError(f"{gt_side.path}: no ground-truth cube found (cube files or CAVE scene folders)")
    gt_items = gt_side.items
    methods: list[_Method] = []
    for k, p in enumerate(preds):
        given = k < len(names) and bool(names[k])
        name = names[k] if given else _default_name(p)
        if not given and p.is_file() and any(m.name == name for m in methods):
            name = p.name  # two files with one stem (x.npy, x.mat): keep the extension
        if any(m.name == name for m in methods):
            raise HsiError(f"two predictions are named '{name}' ({p} and "
                           f"{next(m.side.path for m in methods if m.name == name)}); give each a --name")
        side = list_items(p)
        if len(side.items) == 1 and len(gt_items) == 1 and (side.single or gt_side.single):
            pairs, unmatched = {0: side.items[0]}, []  # one cube each, named by the user: paired as given
        else:
            pairs, unmatched = match_items(gt_items, side.items, name)
        methods.append(_Method(name, side, pairs, unmatched))

    notes: list[str] = []
    if scale is None:
        notes.append("ERGAS left out: it needs the scale factor (--scale)")
    unmatched_doc = []
    for m in methods:
        for i, g in enumerate(gt_items):
            if i not in m.pairs:
                unmatched_doc.append({"model": m.name, "side": "gt", "image": g.name, "path": str(g.path),
                                      "reason": f"no prediction for this GT item in {m.side.path}"})
        for item, reason in m.unmatched:
            unmatched_doc.append({"model": m.name, "side": "pred", "image": item.name, "path": str(item.path),
                                  "reason": reason})
    ignored = [str(p) for p in gt_side.ignored] + [str(p) for m in methods for p in m.side.ignored]

    groups = [(i, g, [(m, m.pairs[i]) for m in methods if i in m.pairs]) for i, g in enumerate(gt_items)]
    groups = [grp for grp in groups if grp[2]]
    total = sum(len(grp[2]) for grp in groups)
    if nonfinite not in ("error", "zero", "mask"):
        raise HsiError(f"nonfinite must be 'error', 'zero' or 'mask', not {nonfinite!r}")
    opts = {"var": var, "layout": layout, "pred_range": pred_range, "gt_var": gt_var, "gt_layout": gt_layout,
            "gt_range": gt_range, "nonfinite": nonfinite, "scale": scale, "crop": crop, "device": dev,
            "per_band": per_band, "exclude_ranges": exclude_ranges,
            "gt_wavelengths": None if gt_wavelengths is None else str(Path(gt_wavelengths).expanduser().absolute())}

    results: list[dict] = []
    errors: list[dict] = []
    done = 0

    def report(row):
        nonlocal done
        done += 1
        (errors if "error" in row else results).append(row)
        if on_progress is not None:
            on_progress(done, total, row)

    if on_progress is not None:
        on_progress(0, total, {})
    execution = dict(SINGLE_PROCESS)
    if scheduler is not None:
        from app.core.io.cluster import connect

        # absolute paths: a worker may run in another directory (the files are on a shared filesystem)
        remote = {**opts, "threads": compute_threads()}
        tasks = [(_absolute(g), [(m.name, _absolute(item)) for m, item in entries], remote) for _, g, entries in groups]
        with connect(scheduler) as session:
            execution = session.execution
            for k, rows, problem in session.run(compare_group, tasks, name="compare", should_cancel=should_cancel):
                _, g, entries = groups[k]
                if problem is not None:  # the worker died, or the task could not run there
                    rows = [{"image": g.name, "model": m.name, "file": str(g.path),
                             "error": f"{g.path}: the task failed on the cluster: {problem}"} for m, _ in entries]
                for row in rows:
                    report(row)
    else:
        n_workers = max(1, int(workers if workers is not None else min(2, os.cpu_count() or 1)))
        ahead = n_workers + 1
        pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="compare-read")
        try:
            queue: deque = deque()
            pending = ((g, [(m.name, item) for m, item in entries]) for _, g, entries in groups)
            for g, entries in itertools.islice(pending, ahead):
                queue.append((entries, pool.submit(_load_group, g, entries, opts)))
            while queue:
                if should_cancel is not None and should_cancel():
                    raise CompareCancelled("comparison cancelled by the user")
                entries, future = queue.popleft()
                g, gt_loaded, loaded = future.result()
                nxt = next(pending, None)
                if nxt is not None:
                    queue.append((nxt[1], pool.submit(_load_group, *nxt, opts)))
                for row in _score_group(g, gt_loaded, loaded, entries, opts):
                    report(row)
                    if should_cancel is not None and should_cancel():
                        raise CompareCancelled("comparison cancelled by the user")
                del gt_loaded, loaded
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    order = {(g.name, m.name): (i, k) for i, g in enumerate(gt_items) for k, m in enumerate(methods)}
    results.sort(key=lambda r: order[(r["image"], r["model"])])
    errors.sort(key=lambda r: order[(r["image"], r["model"])])
    summary = {}
    for m in methods:
        rows = [r for r in results if r["model"] == m.name]
        entry = {}
        for key in METRIC_KEYS:
            values = [r[key] for r in rows if r[key] is not None]
            entry[key] = float(np.mean(values)) if values and len(values) == len(rows) else None
        entry["images"] = len(rows)
        entry["errors"] = sum(1 for e in errors if e["model"] == m.name)
        entry["missing"] = sum(1 for u in unmatched_doc if u["model"] == m.name and u["side"] == "gt")
        summary[m.name] = entry
    counts = {s["images"] for s in summary.values()}
    if len(methods) > 1 and len(counts) > 1:
        notes.append("the methods' means cover different numbers of images (see errors and unmatched)")
    ranges = sorted({r["range"] for r in results})
    if ranges:
        notes.append("prediction value ranges: " + ", ".join(ranges))
    if ignored:
        notes.append(f"{len(ignored)} file(s) or folder(s) that hold no cube were ignored (listed under 'ignored')")
    return stamp({
        "command": "compare",
        "gt": str(gt_side.path),
        "device": dev,
        "scale": scale,
        "methods": [{"name": m.name, "path": str(m.side.path), "items": len(m.side.items)} for m in methods],
        "images": [g.name for g in gt_items],
        "results": results,
        "summary": summary,
        "errors": errors,
        "unmatched": unmatched_doc,
        "ignored": ignored,
        "notes": notes,
        "conventions": CONVENTIONS,
        "seconds": round(time.perf_counter() - started, 3),
        "execution": execution,
        # how the files were read, so that a viewer opens each pair the same way
        "options": {"var": var, "layout": layout, "pred_range": pred_range, "gt_var": gt_var,
                    "gt_layout": gt_layout, "gt_range": gt_range, "nonfinite": nonfinite, "crop": bool(crop),
                    # (only when given: a viewer reading an older document sees the same keys)
                    **({"exclude_bands": [list(r) for r in exclude_ranges]} if exclude_ranges else {}),
                    **({"gt_wavelengths": opts["gt_wavelengths"]} if gt_wavelengths is not None else {})},
    }, "compare", metric_conventions=metric_conventions(),
        arguments={"gt": str(gt), "preds": [str(p) for p in preds], "names": names, "scale": scale,
                   "per_band": bool(per_band), "device": device})


def _masks(pred: _Loaded, gt: _Loaded, crop_info: dict | None, exclude_ranges) -> tuple:
    """(no-data pixels of the pair on the compared grid or None, (B,) excluded bands or None)."""
    gt_nd = gt.nodata
    if gt_nd is not None and crop_info is not None:
        (r0, r1), (c0, c1) = crop_info["rows"], crop_info["cols"]
        gt_nd = gt_nd[r0:r1, c0:c1]
    present = [m for m in (gt_nd, pred.nodata) if m is not None]
    nodata = np.logical_or.reduce(present) if present else None
    bands = pred.data.shape[2]
    excl = np.zeros(bands, dtype=bool)
    for bad in (gt.bad_bands, pred.bad_bands):
        if bad is not None and bad.size == bands:
            excl |= bad
    if exclude_ranges:
        wl = gt.wavelengths if gt.wavelengths is not None else pred.wavelengths
        excl |= bands_in_ranges(wl, exclude_ranges, what="the GT (and the prediction)")
    return nodata, (excl if excl.any() else None)


def _metrics_row(g: Item, model: str, item: Item, pred: _Loaded, gt_view: np.ndarray, gt: _Loaded,
                 crop_info: dict | None, scale: int | None, device: str, per_band: bool,
                 exclude_ranges=()) -> dict:
    nodata, excl = _masks(pred, gt, crop_info, exclude_ranges)
    m = compute_all(gt_view, pred.data, scale=scale, gt_wavelengths_nm=gt.wavelengths,
                    pred_wavelengths_nm=pred.wavelengths, device=device, nodata=nodata, exclude_bands=excl)
    row = {"image": g.name, "model": model, "psnr": m["psnr_db"], "ssim": m["ssim"], "sam_deg": m["sam_deg"],
           "ergas": _finite_or_none(m["ergas"]) if scale is not None else None, "rmse": m["rmse"],
           "gt_path": str(g.path.absolute()), "pred": str(item.path.absolute()), "range": pred.range,
           "range_rule": pred.range_note, "layout": pred.layout,
           "masked_pixels": m["masked_pixels"], "excluded_bands": m["excluded_bands"],
           # which files these numbers came from: size, mtime and (up to 64 MiB) sha256
           "pred_file": file_fingerprint(item.path), "gt_file": file_fingerprint(g.path)}
    if pred.provenance:  # the prediction's own record (this tool's SR outputs: model, weights sha256, options)
        row["pred_provenance"] = pred.provenance
    notes = list(pred.notes) + [n for n in m["notes"] if not n.startswith("ERGAS needs")]
    if gt.range != "unit" or gt.notes:
        row["gt_range_rule"] = gt.range_note
    if crop_info is not None:
        row["crop"] = {"rows": crop_info["rows"], "cols": crop_info["cols"]}
        notes.insert(0, crop_info["note"])
    if notes:
        row["notes"] = notes
    if per_band:
        pb = m["per_band"]
        row["per_band"] = {
            "wavelengths_nm": None if pb.get("wavelengths_nm") is None else [float(v) for v in pb["wavelengths_nm"]],
            "psnr": [_finite_or_none(float(v)) for v in pb["psnr_db"]],  # null at excluded bands
            "ssim": [_finite_or_none(float(v)) for v in pb["ssim"]],
            "rmse": [_finite_or_none(float(v)) for v in pb["rmse"]],
        }
    return row


def exit_status(doc: dict) -> int:
    """0 when every GT item was compared with every method; 1 when an entry failed or is missing."""
    missing = any(u["side"] == "gt" for u in doc.get("unmatched", []))
    return 1 if doc.get("errors") or missing else 0


# ------------------------------------------------------------------------------ formatting
_COLUMNS = tuple((m.column, m.short, m.fmt) for m in METRICS)


def _best(rows: list[dict]) -> dict[str, set[int]]:
    """Indices of the best row per metric (ties share it); empty when fewer than two rows compete."""
    best: dict[str, set[int]] = {}
    for key, _, _ in _COLUMNS:
        values = [(i, r.get(key)) for i, r in enumerate(rows) if r.get(key) is not None and not
                  (isinstance(r.get(key), float) and math.isnan(r[key]))]
        if len(values) < 2:
            best[key] = set()
            continue
        pick = max if HIGHER_IS_BETTER[key] else min
        target = pick(v for _, v in values)
        best[key] = {i for i, v in values if v == target}
    return best


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return fmt.format(v)


def _table_rows(doc: dict) -> list[tuple[str, str, dict | None, str | None, set]]:
    """(image, model, metrics row or None, problem, best keys) for the per-image rows, then the means."""
    by_key = {(r["image"], r["model"]): r for r in doc["results"]}
    errs = {(e["image"], e["model"]): e for e in doc["errors"]}
    missing = {(u["image"], u["model"]) for u in doc["unmatched"] if u["side"] == "gt"}
    models = [m["name"] for m in doc["methods"]]
    out = []
    for image in doc["images"]:
        rows = [by_key.get((image, m)) for m in models]
        present = [r for r in rows if r is not None]
        best = _best(present)
        for model, r in zip(models, rows):
            if r is not None:
                idx = present.index(r)
                out.append((image, model, r, None, {k for k, s in best.items() if idx in s}))
            elif (image, model) in errs:
                out.append((image, model, None, "failed (see errors)", set()))
            elif (image, model) in missing:
                out.append((image, model, None, "no prediction", set()))
    means = [dict(doc["summary"][m], model=m) for m in models]
    # only means over the same images compare: the best is marked among the methods that cover the
    # largest image set
    sets = {m: frozenset(r["image"] for r in doc["results"] if r["model"] == m) for m in models}
    widest = max(sets.values(), key=len, default=frozenset())
    peers = [s for s in means if s["images"] and sets[s["model"]] == widest]
    best = _best(peers)
    for s in means:
        label = f"mean ({s['images']} image{'s' if s['images'] != 1 else ''})"
        if s["images"]:
            marks = {k for k, v in best.items() if s in peers and peers.index(s) in v}
            out.append((label, s["model"], s, None, marks))
        else:
            out.append((label, s["model"], None, "nothing compared", set()))
    return out


def format_table(doc: dict) -> str:
    """Plain-text table: one row per image and method, then the mean per method; * marks the best
    value of each column among the methods (per image and among the means)."""
    rows = _table_rows(doc)
    n_img = len(doc["images"])
    width_img = max([28] + [len(r[0]) + 1 for r in rows])
    width_model = max([10] + [len(r[1]) + 1 for r in rows])
    head = (f"{'image':<{width_img}} {'method':<{width_model}} " + " ".join(f"{t:>9}" for _, t, _ in _COLUMNS)
            + "  range")
    scale = f"x{doc['scale']}" if doc["scale"] else "not given (no ERGAS)"
    lines = [f"GT {doc['gt']} ({n_img} image{'s' if n_img != 1 else ''}); scale {scale}; device {doc['device']}"
             + ("; * = best per column" if len(doc["methods"]) > 1 else ""), head, "-" * len(head)]
    n_images = len(rows) - len(doc["methods"])
    for k, (image, model, r, problem, best) in enumerate(rows):
        if k == n_images:
            lines.append("-" * len(head))
        prefix = f"{image:<{width_img}} {model:<{width_model}} "
        if r is None:
            lines.append(prefix + problem)
            continue
        cells = []
        for key, _, fmt in _COLUMNS:
            text = _cell(r, key, fmt) + ("*" if key in best else " ")
            cells.append(f"{text:>9}")
        lines.append(prefix + " ".join(cells) + (f"  {r['range']}" if "range" in r else "") + _left_out(r))
    for u in doc["unmatched"]:
        if u["side"] == "pred":
            lines.append(f"unmatched ({u['model']}): {u['path']}: {u['reason']}")
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _left_out(row: dict) -> str:
    """'; left out 12 px, 3 bands' when masks removed anything from a row's metrics."""
    px, bands = row.get("masked_pixels") or 0, row.get("excluded_bands") or 0
    if not (px or bands):
        return ""
    return f"; left out {px} no-data px, {bands} band{'s' if bands != 1 else ''}"


def to_csv(doc: dict) -> str:
    """CSV: one line per image and method (errors and missing predictions included), then the means."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "model", *METRIC_KEYS, "range", "layout", "pred", "error", "masked_pixels",
                     "excluded_bands"])
    rows = {(r["image"], r["model"]): r for r in doc["results"]}
    errs = {(e["image"], e["model"]): e for e in doc["errors"]}
    missing = {(u["image"], u["model"]): u for u in doc["unmatched"] if u["side"] == "gt"}
    models = [m["name"] for m in doc["methods"]]

    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))

    for image in doc["images"]:
        for model in models:
            key = (image, model)
            if key in rows:
                r = rows[key]
                writer.writerow([image, model, *(num(r[k]) for k in METRIC_KEYS), r["range"], r["layout"], r["pred"], "",
                                 r.get("masked_pixels", 0), r.get("excluded_bands", 0)])
            elif key in errs:
                writer.writerow([image, model, *([""] * len(METRIC_KEYS)), "", "", errs[key]["file"], errs[key]["error"]])
            elif key in missing:
                writer.writerow([image, model, *([""] * len(METRIC_KEYS)), "", "", "", missing[key]["reason"]])
    for model in models:
        s = doc["summary"][model]
        writer.writerow([f"mean ({s['images']} images)", model, *(num(s[k]) for k in METRIC_KEYS), "", "", "", ""])
    return buf.getvalue()


def to_markdown(doc: dict) -> str:
    """A Markdown table (best per column in bold) with the errors, unmatched items and notes below."""
    titles = {m.column: m.label for m in METRICS}
    lines = [f"GT `{doc['gt']}`, scale {('x' + str(doc['scale'])) if doc['scale'] else 'not given'}, "
             f"device {doc['device']}.", "",
             "| image | method | " + " | ".join(titles[k] for k, _, _ in _COLUMNS) + " | range |",
             "|---|---|" + "---:|" * len(_COLUMNS) + "---|"]
    for image, model, r, problem, best in _table_rows(doc):
        label = f"**{image}**" if image.startswith("mean (") else image
        label = label.replace("|", "\\|")
        if r is None:
            lines.append(f"| {label} | {model} | " + " | ".join([""] * len(_COLUMNS)) + f" | {problem} |")
            continue
        cells = []
        for key, _, fmt in _COLUMNS:
            text = _cell(r, key, fmt)
            cells.append(f"**{text}**" if key in best else text)
        lines.append(f"| {label} | {model} | " + " | ".join(cells) + f" | {r.get('range', '')}{_left_out(r)} |")
    if doc["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e['model']}, {e['image']}: {e['error']}" for e in doc["errors"]]
    unmatched = [u for u in doc["unmatched"]]
    if unmatched:
        lines += ["", "Unmatched:", ""] + [f"- {u['model']} ({'GT' if u['side'] == 'gt' else 'prediction'}) "
                                           f"`{u['path']}`: {u['reason']}" for u in unmatched]
    if doc["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> Path:
    path = Path(path).expanduser()
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_csv(path, doc: dict) -> Path:
    return _write_text(Path(path), to_csv(doc))


def write_markdown(path, doc: dict) -> Path:
    return _write_text(Path(path), to_markdown(doc))

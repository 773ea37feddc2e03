"""Reading one cube of a comparison: the project's readers, the band axis fitted to the GT's shape,
the value range decided (:mod:`app.core.io.value_range`) and stated, and the part of the GT a smaller
prediction is compared with."""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.errors import AmbiguousCubeError, HsiError, NonFiniteError, ShapeMismatchError
from app.core.io import open_cube
from app.core.io._common import zero_nonfinite
from app.core.io.value_range import LOUD, RangeUndecided, ValueRange, decide, decide_prediction

__all__ = ["RANGES", "Loaded", "read_cube", "fit_size"]

RANGES = ("auto", "unit", "8bit", "16bit", "max")
_DIVISORS = {"unit": 1.0, "8bit": 255.0, "16bit": 65535.0}


@dataclass
class Loaded:
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


def read_cube(path: Path, *, var: str | None, layout: str | None, mode: str, nonfinite: str = "error",
          gt_shape=None, ref_mean: float | None = None, gt_range: ValueRange | None = None,
          wavelengths: str | None = None) -> Loaded:
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
        return Loaded(raw, cube.wavelengths_nm, name, rule, _layout_letters(cube), cube.metadata.get("format"),
                       notes, mean, chosen, nodata, cube.bad_bands, prov if isinstance(prov, dict) and prov else None)
    finally:
        _close_handles(cube)


def fit_size(gt: np.ndarray, pred: np.ndarray, scale: int | None, crop: bool) -> tuple[np.ndarray, dict | None]:
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



"""The napari reader: a cube file (or folder) becomes an image layer, bands first.

napari calls :func:`get_reader` with one path, or with a list of paths when they are opened as a
stack (``viewer.open([a, b], stack=True)``, File > Open Files as Stack...). It returns
:func:`read_cubes` for paths this tool reads as cubes and None for anything else (a plain RGB
TIFF, a 2-D ``.npy``, a folder without PNG bands ...), so that napari's own readers keep those.

Each cube becomes ``(data, kwargs, "image")``: ``data`` (B, H, W) float32 reflectance as
:func:`app.core.io.open_cube` reads it (the value-range rule of design/protocols.md), ``kwargs``
the layer's name (from the file), contrast limits (the 1st and 99th percentiles, as the viewer's
default), axis labels ``band``/``y``/``x`` and ``metadata``: ``wavelengths_nm`` and ``fwhm_nm`` (lists
or None), ``value_rule`` and ``value_range`` (the rule in words), ``source_path`` and the file's
other metadata that JSON can hold. With several paths the first is the GT: every later cube with
its band count is read as a prediction of it (its stored values put on the GT's scale by the rule
``compare`` and the viewer use) and shares its contrast limits, so equal values look equal.

NaN/Inf values, which the viewer asks about, read as 0 and their pixels count as no-data
(``nodata_pixels``, and a line in ``warnings``). A file that cannot be read raises
:class:`app.core.errors.HsiError` with a one-line message naming the file; napari shows it.
Nothing here imports napari or Qt.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.core.cube import Cube
from app.core.errors import (
    AmbiguousCubeError,
    CubeError,
    HsiError,
    NonFiniteError,
    OutOfMemoryError,
    UnknownFormatError,
)
from app.core.io import envi, imagefiles, list_variables, open_cube, sniff
from app.core.io.value_range import RangeUndecided, put_on_gt_scale
from app.core.state.scene import percentile_levels

PERCENTILES = (1.0, 99.0)          # the viewer's default contrast (Scene: 1 % - 99 %)
AXIS_LABELS = ("band", "y", "x")
# handles a lazy reader keeps open in the cube's metadata (closed once the values are in memory)
_HANDLES = ("_h5file", "_tifffile")

LayerData = tuple[np.ndarray, dict[str, Any], str]


# ---------------------------------------------------------------------------------- napari hooks
def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """:func:`read_cubes` when every path looks like a cube this tool reads, else None.

    Cheap: reads headers only. A file that claims a cube format but is damaged (truncated,
    empty, a pickle in disguise) is accepted, so that the reader can say what is wrong with it."""
    paths = _as_list(path)
    if not paths or not all(_is_cube(Path(p)) for p in paths):
        return None
    return read_cubes


def read_cubes(path: str | list[str]) -> list[LayerData]:
    """One image layer per path; later cubes on the first (GT) cube's value scale."""
    layers: list[LayerData] = []
    gt: Cube | None = None
    gt_limits: tuple[float, float] | None = None
    for p in _as_list(path):
        try:
            cube, data, metadata, note = _read_one(Path(p), gt, "error")
        except NonFiniteError:  # napari cannot ask, as the viewer does: NaN/Inf become no-data (0)
            cube, data, metadata, note = _read_one(Path(p), gt, "mask")
        limits = gt_limits if note is not None else percentile_levels(data, *PERCENTILES)
        layers.append((data, {"name": cube.name, "metadata": metadata, "contrast_limits": limits,
                              "axis_labels": AXIS_LABELS}, "image"))
        if gt is None:
            gt, gt_limits = cube, limits
    return layers


def _read_one(path: Path, gt: Cube | None, nonfinite: str) -> tuple[Cube, np.ndarray, dict[str, Any], str | None]:
    """(cube, (B, H, W) float32 values, layer metadata, GT-scale rule or None) of one path."""
    cube = _open(path, nonfinite)
    try:
        note = None
        if gt is not None:
            cube, note = _on_gt_scale(cube, gt)
        data = np.ascontiguousarray(np.moveaxis(_values(cube), 2, 0))
        metadata = _metadata(cube)
    except MemoryError:  # napari holds the cube in memory (and the (H, W, B) read a moment too)
        raise OutOfMemoryError(path, 2 * cube.nbytes_float32) from None
    finally:
        _close(cube)
    if note is not None:
        metadata["gt_path"] = str(gt.source_path.resolve())
        metadata["gt_scale"] = note
    return cube, data, metadata, note


# ---------------------------------------------------------------------------------- is it a cube?
def _as_list(path) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


def _is_cube(path: Path) -> bool:
    if path.is_dir():  # a folder of PNG bands (several, as the reader needs)
        with contextlib.suppress(OSError):
            return len(imagefiles.band_files(path)) >= 2
        return False
    try:
        fmt = sniff(path)
    except UnknownFormatError:  # not a format of this tool (a single PNG, a raw file without header)
        return False
    except HsiError:            # empty, unreadable, a pickle: ours to report
        return True
    try:
        if fmt == "envi":  # a .hdr/.img pair of another kind (Analyze 7.5, Radiance) is napari's
            header = envi.header_for(path)
            with open(header, "rb") as fh:
                return fh.read(16).lstrip(b"\xef\xbb\xbf").startswith(b"ENVI")
        if fmt == "tiff":
            return _tiff_is_cube(path)
        if fmt == "npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return sum(1 for s in shape if s > 1) == 3
        if fmt in ("hdf5", "npz"):
            return any(_is_3d(v) for v in list_variables(path))
    except Exception:  # noqa: BLE001: damaged headers; reading names the problem
        return True
    return True  # MATLAB (napari does not read it)


def _is_3d(description: str) -> bool:
    """True for a container variable described as 'name AxBxC dtype' with three axes > 1."""
    parts = description.rsplit(" ", 2)
    if len(parts) != 3:
        return False
    try:
        shape = [int(s) for s in parts[1].split("x")]
    except ValueError:
        return False
    return sum(1 for s in shape if s > 1) == 3


def _tiff_is_cube(path: Path) -> bool:
    """A TIFF holding a 3-D stack that is not a colour picture, a time series or a z-stack."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        if not tif.series:
            return True  # damaged: reading says so
        series = tif.series[0]
        if sum(1 for s in series.shape if s > 1) != 3:
            return False
        if any(axis in series.axes for axis in "TZ"):
            return False
        page = tif.pages[0]
        return not (page.photometric == tifffile.PHOTOMETRIC.RGB and page.samplesperpixel in (3, 4))


# ---------------------------------------------------------------------------------- reading
def _open(path: Path, nonfinite: str) -> Cube:
    """open_cube, with errors in one line naming the file."""
    try:
        return open_cube(path, nonfinite=nonfinite)
    except AmbiguousCubeError as exc:
        raise HsiError(f"{exc}; napari cannot ask: convert it once with `hsi-viewer convert {path} OUT.hdr "
                       f"--{exc.option} ...`, or open it in hsi-viewer, which asks") from None
    except HsiError:
        raise
    except (OSError, ValueError) as exc:
        raise CubeError(path, f"cannot be read ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def _values(cube: Cube) -> np.ndarray:
    try:
        return cube.data
    except HsiError:
        raise
    except (OSError, ValueError, KeyError) as exc:  # a damaged chunk met only while loading
        raise CubeError(cube.source_path, f"cannot be read ({' '.join(str(exc).split())})") from None


def _close(cube: Cube) -> None:
    for key in _HANDLES:
        handle = cube.metadata.get(key)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()


def _on_gt_scale(pred: Cube, gt: Cube) -> tuple[Cube, str | None]:
    """``pred`` read as a prediction of ``gt`` (same band count): its value rule decided against
    the GT's, as ``compare`` and the viewer do. Returns the cube and the rule in words, or None
    when it is not a prediction of the GT (other bands) or no rule fits (it keeps its own)."""
    if pred.bands != gt.bands:
        return pred, None
    try:
        placed = put_on_gt_scale(pred, gt)
    except RangeUndecided:
        return pred, None
    return placed, placed.normalisation


def _metadata(cube: Cube) -> dict[str, Any]:
    out = {k: v for k, v in ((k, _json_like(v)) for k, v in cube.metadata.items() if not k.startswith("_"))
           if v is not _SKIP}
    out.update(
        wavelengths_nm=None if cube.wavelengths_nm is None else [float(w) for w in cube.wavelengths_nm],
        fwhm_nm=None if cube.fwhm_nm is None else [float(w) for w in cube.fwhm_nm],
        bad_bands=None if cube.bad_bands is None else [bool(b) for b in cube.bad_bands],
        value_rule=str(cube.metadata.get("value_rule") or "unit"),
        value_range=cube.normalisation,
        value_multiplier=float(cube.scale),
        value_offset=float(cube.offset),
        source_path=str(cube.source_path.resolve()) if cube.source_path is not None else None,
        axes="band, y, x",
    )
    if cube.has_nodata_rule:
        out["nodata_pixels"] = cube.nodata_count()
    return out


_SKIP = object()


def _json_like(value, depth: int = 0):
    """``value`` as JSON types (numpy scalars and small arrays converted), or _SKIP."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if depth > 6:
        return _SKIP
    if isinstance(value, np.ndarray) and value.ndim <= 1 and value.size <= 10_000 and value.dtype.kind in "biuf":
        return [_json_like(v, depth + 1) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        items = [_json_like(v, depth + 1) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if isinstance(value, dict):
        items = {str(k): _json_like(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _SKIP}
    return _SKIP

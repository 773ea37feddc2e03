"""Files that hold named arrays: MATLAB .mat (v5 via scipy, v7.3 via h5py), HDF5, .npz, and .npy.

The cube is the largest 3-D numeric array unless the user names one; a 2-D bands x pixels matrix
works when its height and width are known (``hw`` or nRow/nCol-like variables in the file).
A wavelength variable is picked up when its name says so and its length matches the bands.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.core.cube import Cube
from app.core.errors import (
    AmbiguousCubeError,
    CubeError,
    NoCubeError,
    NonNumericError,
    TruncatedFileError,
    UnsafeFileError,
)
from app.core.io.georef import georef_of
from app.core.io._common import (
    ReadOptions,
    atomic_path,
    axes_from_layout,
    check_numeric,
    check_shape,
    deferred_interrupts,
    detect_layout,
    honour_nonfinite,
    decide_range,
    plausible_wavelengths,
    reflectance_for_writing,
    wavelengths_to_nm,
)
from app.core.io.provenance import stamp
from app.core.io.value_range import ValueRange

_WAVELENGTH_NAME = re.compile(r"(wave|wavelength|wvl|^wl|lambda|band_?cent|centers?$|centres?$)", re.I)
_HEIGHT_NAMES = ("nrow", "nrows", "height", "lines", "h", "rows")
_WIDTH_NAMES = ("ncol", "ncols", "width", "samples", "w", "cols")


@dataclass
class Variable:
    """A named array in a container. ``shape`` is in the file's logical (MATLAB or C) order."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], Any]      # returns the array (or a lazy h5py dataset in stored order)
    reversed_axes: bool = False  # MATLAB v7.3: stored order is the reverse of ``shape``
    numeric: bool = True
    attrs: dict = field(default_factory=dict)  # HDF5/NetCDF attributes that say how to read the values

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 0

    def describe(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.shape))} {self.dtype}"


def _is_numeric_dtype(dtype) -> bool:
    return np.dtype(dtype).kind in "biuf"


# ------------------------------------------------------------------------------ listing
def list_mat5(path: Path) -> list[Variable]:
    import scipy.io as sio

    try:
        contents = sio.loadmat(str(path), squeeze_me=False, struct_as_record=True)
    except MemoryError:
        raise
    except Exception as exc:  # scipy reports damage as ValueError, TypeError, OSError, zlib.error, ...
        raise CubeError(path, f"cannot read this MATLAB v5 file ({_one_line(exc)}); it may be truncated "
                              f"or damaged") from None
    out = []
    for name, value in contents.items():
        if name.startswith("__"):
            continue
        arr = np.asarray(value)
        out.append(Variable(name, tuple(arr.shape), arr.dtype, (lambda a=arr: a),
                            numeric=_is_numeric_dtype(arr.dtype)))
    return out


def _walk_h5(group, prefix="") -> list:
    import h5py

    found = []
    for key, item in group.items():
        if key.startswith("#"):  # MATLAB's #refs# and #subsystem#
            continue
        full = f"{prefix}{key}"
        if isinstance(item, h5py.Dataset):
            found.append((full, item))
        elif isinstance(item, h5py.Group):
            found.extend(_walk_h5(item, full + "/"))
    return found


def list_h5(handle, path: Path, matlab: bool) -> list[Variable]:
    out = []
    for name, ds in _walk_h5(handle):
        matlab_class = ds.attrs.get("MATLAB_class", b"")
        if isinstance(matlab_class, bytes):
            matlab_class = matlab_class.decode(errors="replace")
        numeric = _is_numeric_dtype(ds.dtype) and matlab_class not in ("char", "cell", "logical_struct", "struct")
        shape = tuple(reversed(ds.shape)) if matlab else tuple(ds.shape)
        out.append(Variable(name, shape, ds.dtype, (lambda d=ds: d), reversed_axes=matlab, numeric=numeric,
                            attrs=_value_attrs(ds.attrs)))
    return out


_VALUE_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value")


def _value_attrs(attrs) -> dict:
    """The attributes (CF / NetCDF conventions) that map stored values to physical ones, as floats."""
    out = {}
    for key in _VALUE_ATTRS:
        if key in attrs:
            try:
                value = float(np.asarray(attrs[key]).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                continue
            if np.isfinite(value) or (key in ("_FillValue", "missing_value") and np.isnan(value)):
                out[key] = value  # a NaN fill says NaN is the no-data value
    return out


def list_npz(path: Path) -> list[Variable]:
    try:
        archive = np.load(str(path), allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError
        raise CubeError(path, f"cannot read this .npz archive ({_one_line(exc)}); it may be truncated") from None
    out = []
    with archive:
        for name in archive.files:
            try:
                arr = archive[name]
            except MemoryError:
                raise
            except ValueError as exc:
                if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                    raise UnsafeFileError(path, f"array '{name}' holds Python objects, which would need "
                                                f"unpickling; refused") from None
                raise CubeError(path, f"array '{name}' cannot be read ({_one_line(exc)}); the archive may be "
                                      f"truncated") from None
            except Exception as exc:  # damaged member: zlib.error, BadZipFile, EOFError, OSError
                raise CubeError(path, f"array '{name}' cannot be read ({_one_line(exc)}); the archive may be "
                                      f"truncated or damaged") from None
            if not isinstance(arr, np.ndarray):  # numpy hands non-.npy members back as raw bytes
                raise CubeError(path, f"archive member '{name}' is not a NumPy array (.npy data); an .npz "
                                      f"holds only arrays saved by numpy.savez")
            out.append(Variable(name, tuple(arr.shape), arr.dtype, (lambda a=arr: a),
                                numeric=_is_numeric_dtype(arr.dtype)))
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------ choosing
def _find(variables: list[Variable], name: str, path: Path) -> Variable:
    for v in variables:
        if v.name == name:
            return v
    for v in variables:
        if v.name.lower() == name.lower():
            return v
    raise CubeError(path, f"no variable named '{name}'; the file holds: "
                          + ", ".join(v.describe() for v in variables))


def _scalar(variables: list[Variable], names: tuple[str, ...]) -> int | None:
    for v in variables:
        if v.name.lower() in names and v.numeric and v.size == 1:
            value = float(np.asarray(v.load()).reshape(-1)[0])
            if np.isfinite(value) and value >= 1 and value == int(value):
                return int(value)
    return None


def choose_cube(variables: list[Variable], options: ReadOptions, path: Path) -> tuple[Variable, tuple[int, int] | None]:
    """The cube variable and, for a 2-D matrix, its (height, width)."""
    if options.var:
        var = _find(variables, options.var, path)
        if not var.numeric:
            raise NonNumericError(path, f"variable '{var.name}' holds {var.dtype}, not numbers")
        if len(var.shape) not in (2, 3):
            raise NoCubeError(path, f"variable '{var.name}' has shape {var.shape}; a cube needs 3 axes "
                                    f"(or 2 with a height and width)")
        return var, _hw_for(var, variables, options, path) if len(var.shape) == 2 else None
    cubes = [v for v in variables if v.numeric and len(v.shape) == 3 and min(v.shape) > 1]
    if not cubes:
        hw = options.hw or _hw_from_file(variables)
        if hw is not None:
            flat = [v for v in variables if v.numeric and len(v.shape) == 2 and hw[0] * hw[1] in v.shape]
            if flat:
                var = max(flat, key=lambda v: v.size)
                return var, hw
        non_numeric = [v for v in variables if not v.numeric and len(v.shape) == 3]
        if non_numeric:
            raise NonNumericError(path, f"variable '{non_numeric[0].name}' is 3-D but holds "
                                        f"{non_numeric[0].dtype}, not numbers")
        listing = ", ".join(v.describe() for v in variables) or "nothing"
        raise NoCubeError(path, f"no 3-D numeric array found (the file holds: {listing}); for a 2-D "
                                f"bands x pixels matrix give its height and width (--hw H W)")
    cubes.sort(key=lambda v: v.size, reverse=True)
    if len(cubes) > 1 and cubes[0].size == cubes[1].size:
        tied = [v.name for v in cubes if v.size == cubes[0].size]
        raise AmbiguousCubeError(path, "several 3-D arrays of the same size", "var", tied)
    return cubes[0], None


def _hw_from_file(variables: list[Variable]) -> tuple[int, int] | None:
    h, w = _scalar(variables, _HEIGHT_NAMES), _scalar(variables, _WIDTH_NAMES)
    return (h, w) if h and w else None


def _hw_for(var: Variable, variables, options: ReadOptions, path) -> tuple[int, int]:
    hw = options.hw or _hw_from_file(variables)
    if hw is None:
        raise AmbiguousCubeError(path, f"variable '{var.name}' is a 2-D matrix {var.shape}; its image "
                                       f"height and width are needed", "hw", ["H W"])
    if hw[0] * hw[1] not in var.shape:
        raise CubeError(path, f"height x width {hw[0]}x{hw[1]} = {hw[0] * hw[1]} matches neither axis "
                              f"of '{var.name}' {var.shape}")
    return hw


def find_wavelengths(variables: list[Variable], bands: int, exclude: str) -> tuple[np.ndarray | None, str]:
    for v in variables:
        if v.name == exclude or not v.numeric or v.size != bands or not _WAVELENGTH_NAME.search(v.name):
            continue
        vec = np.asarray(v.load(), dtype=np.float64).reshape(-1)
        if plausible_wavelengths(vec, bands):
            nm, note = wavelengths_to_nm(vec, "nm" if "nm" in v.name.lower() else None)
            return nm, f"wavelengths from variable '{v.name}'" + (f" ({note})" if note else "")
    return None, ""


# ------------------------------------------------------------------------------ building
def cube_from_variable(var: Variable, variables: list[Variable], hw, options: ReadOptions, path: Path,
                       fmt: str, pixel_order: str) -> Cube:
    """Turn the chosen variable into a Cube (lazy when it is an h5py dataset or a memmap)."""
    check_numeric(var.dtype, path, f"variable '{var.name}'")
    check_shape(var.shape, path, f"variable '{var.name}'")
    warnings: list[str] = []
    if len(var.shape) == 2:
        data = _unflatten(np.asarray(var.load()), var, hw, options, path, pixel_order)
        raw, axes, layout = data, (0, 1, 2), "HWB"
    else:
        n_wl = None
        for v in variables:  # a wavelength list helps to find the band axis
            if v is not var and v.numeric and len(v.shape) <= 2 and _WAVELENGTH_NAME.search(v.name) and v.size in var.shape:
                n_wl = v.size
                break
        layout = (options.layout or _detect_layout(var.shape, path, n_wl, fmt, var.name, warnings)).upper()
        logical_axes = axes_from_layout(layout, path)
        raw = var.load()
        if var.reversed_axes:  # h5py gives MATLAB's axes reversed
            axes = tuple(len(var.shape) - 1 - a for a in logical_axes)
        else:
            axes = logical_axes
    bands = var.shape[axes_from_layout(layout, path)[2]] if len(var.shape) == 3 else raw.shape[2]
    if _is_h5(raw):
        raw = _H5Data(raw, path, var.name)
    # CF: _FillValue (else missing_value) is a stored, packed value, compared before scale_factor
    fill = var.attrs.get("_FillValue", var.attrs.get("missing_value")) if var.attrs else None
    if fill is not None and np.isnan(fill):
        fill = None
        if options.nonfinite == "error" and np.dtype(var.dtype).kind == "f":
            options = ReadOptions(var=options.var, layout=options.layout, hw=options.hw,
                                  normalise=options.normalise, nonfinite="mask")
    raw = honour_nonfinite(raw, path, options, warnings, lazy=_is_lazy(raw))
    chosen = decide_range(var.dtype, options, raw, stated=stated_range(var, variables), ignore=fill)
    warnings.extend(chosen.warnings)
    wavelengths, wl_note = find_wavelengths(variables, bands, var.name)
    if wl_note:
        warnings.append(wl_note)
    return Cube(
        raw=raw, axes=axes, scale=chosen.multiplier, offset=chosen.offset, wavelengths_nm=wavelengths,
        ignore_value=fill, nonfinite_nodata=options.nonfinite == "mask",
        name=f"{path.stem}:{var.name}" if fmt != "npy" else path.stem, source_path=path, normalisation=chosen.text,
        metadata={"format": fmt, "variable": var.name, "layout": layout, "warnings": warnings,
                  "variables": [v.describe() for v in variables], "value_rule": chosen.rule},
    )


_MAX_VALUE_NAMES = ("maxvalue", "max_value", "maxval", "max_val", "data_max")


def stated_range(var: Variable, variables: list[Variable]) -> ValueRange | None:
    """What the file says about the values of ``var``: CF ``scale_factor`` / ``add_offset`` attributes
    on it (HDF5, NetCDF), or a maximum stored beside it as a scalar (``maxValue``, as in the Jasper
    Ridge and Urban files: the values are divided by it)."""
    if var.attrs:
        gain, offset = var.attrs.get("scale_factor", 1.0), var.attrs.get("add_offset", 0.0)
        if gain != 0.0 and (gain != 1.0 or offset != 0.0):
            return ValueRange(gain, offset, "stated", f"stored values x scale_factor {gain:g} + add_offset "
                                                      f"{offset:g} (stated by the file's attributes)")
    for v in variables:
        if v is var or not v.numeric or v.size != 1 or v.name.lower() not in _MAX_VALUE_NAMES:
            continue
        value = float(np.asarray(v.load()).reshape(-1)[0])
        if np.isfinite(value) and value > 0:
            return ValueRange(1.0 / value, 0.0, "stated", f"stored values divided by the file's {v.name} {value:g}")
    return None


def _is_lazy(raw) -> bool:
    return not isinstance(raw, np.ndarray) or isinstance(raw, np.memmap)


def _is_h5(raw) -> bool:
    return type(raw).__module__.startswith("h5py")


class _H5Data:
    """An h5py dataset whose read errors name the file: HDF5 reports a damaged chunk as a bare
    OSError only when it is read, long after the file was opened."""

    def __init__(self, dataset, path: Path, name: str):
        self.dataset = dataset
        self.path = path
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dataset.dtype)

    @property
    def ndim(self) -> int:
        return len(self.dataset.shape)

    @property
    def attrs(self):
        return self.dataset.attrs

    def __len__(self) -> int:
        return int(self.dataset.shape[0])

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except (OSError, RuntimeError) as exc:
            raise CubeError(self.path, f"the data of '{self.name}' cannot be read ({_one_line(exc)}); the file "
                                       f"is truncated or damaged") from None

    def __array__(self, dtype=None, copy=None):
        values = np.asarray(self[()])
        return values if dtype is None else values.astype(dtype, copy=False)


def _detect_layout(shape, path: Path, n_wl, fmt: str, name: str, warnings: list[str]) -> str:
    """``detect_layout``; for a .mat file whose band axis cannot be told from the shape, MATLAB's
    own order H x W x B (how MATLAB users store cubes, the common case) with a note."""
    try:
        return detect_layout(shape, path, n_wl)
    except AmbiguousCubeError as exc:
        if not fmt.startswith("mat") or exc.option != "layout":
            raise
    h, w, b = shape
    warnings.append(f"layout: the band axis of '{name}' {h}x{w}x{b} cannot be told from its shape; read in "
                    f"MATLAB order H x W x B ({b} bands): give --layout (e.g. --layout BHW) if the bands lie "
                    f"on another axis")
    return "HWB"


def _unflatten(mat: np.ndarray, var: Variable, hw, options, path, pixel_order: str) -> np.ndarray:
    """(B, P) or (P, B) matrix -> (H, W, B) with pixels in ``pixel_order`` ('F' for MATLAB)."""
    if var.reversed_axes:
        mat = mat.T
    h, w = hw
    layout = (options.layout or "").upper()
    if layout not in ("BP", "PB"):
        layout = "BP" if mat.shape[1] == h * w and mat.shape[0] != h * w else "PB"
    if layout == "BP":
        mat = mat.T
    if mat.shape[0] != h * w:
        raise CubeError(path, f"'{var.name}' {var.shape}: {mat.shape[0]} pixels do not fill {h}x{w}")
    bands = mat.shape[1]
    return np.ascontiguousarray(mat.reshape((h, w, bands), order=pixel_order))


# ------------------------------------------------------------------------------ readers
def read_mat5(path: Path, options: ReadOptions) -> Cube:
    variables = list_mat5(path)
    var, hw = choose_cube(variables, options, path)
    cube = cube_from_variable(var, variables, hw, options, path, "mat-v5", "F")
    meta = [v for v in variables if v.name == "metadata_json" and v.dtype.kind == "U"]
    if meta:  # written by write_mat: wavelengths and provenance
        try:
            doc = json.loads(str(np.asarray(meta[0].load()).reshape(-1)[0]))
        except (ValueError, IndexError):
            cube.metadata["warnings"].append("variable 'metadata_json' is not valid JSON: ignored")
        else:
            _apply_sidecar(cube, doc, f"{path.name}:metadata_json")
    return cube


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(str(path), "r")
    except OSError as exc:
        text = _one_line(exc)
        if "truncated" in text.lower():
            raise TruncatedFileError(path, f"is truncated: HDF5 says {text}") from None
        raise CubeError(path, f"cannot open as HDF5 ({text}); the file may be truncated or damaged") from None


def read_h5_cube(path: Path, options: ReadOptions, read: Callable[[Any, Path, ReadOptions], Cube]) -> Cube:
    """The cube ``read(handle, path, options)`` makes of an open HDF5 file (a product's reader), the
    file kept open for its lazy dataset (``metadata['_h5file']``); closed again when reading fails."""
    handle = _open_h5(path)
    try:
        cube = read(handle, path, options)
    except BaseException:
        handle.close()
        raise
    cube.metadata["_h5file"] = handle
    return cube


def _check_h5_storage(var: Variable, path: Path) -> None:
    """Refuse a dataset whose stored bytes lie past the end of the file (a cut copy): HDF5 opens
    such files and fails, or returns fill values, only when the missing part is read."""
    ds = var.load()
    if not _is_h5(ds):
        return
    size = os.path.getsize(path)
    try:
        dsid = ds.id
        if ds.chunks is None:
            start = dsid.get_offset()
            ends = [] if start is None else [start + dsid.get_storage_size()]
        else:
            count = dsid.get_num_chunks()
            step = max(1, count // 4096)  # a spread of chunks keeps huge files quick to open
            picks = sorted(set(range(0, count, step)) | ({count - 1} if count else set()))
            ends = []
            for i in picks:
                info = dsid.get_chunk_info(i)
                if info.byte_offset is not None:
                    ends.append(info.byte_offset + info.size)
        expected = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
        if ds.chunks is None and ends == [] and expected and dsid.get_storage_size() == 0:
            return  # never written: HDF5 returns the fill value, as MATLAB wrote it
    except Exception as exc:  # a broken index of chunks is damage too
        raise CubeError(path, f"the data of '{var.name}' cannot be located ({_one_line(exc)}); the file is "
                              f"truncated or damaged") from None
    if ends and max(ends) > size:
        raise TruncatedFileError(path, f"holds {size} bytes but the data of '{var.name}' reaches byte {max(ends)}: "
                                       f"the file is truncated")


def read_mat73(path: Path, options: ReadOptions) -> Cube:
    return read_h5_cube(path, options, _read_mat73)


def _read_mat73(handle, path: Path, options: ReadOptions) -> Cube:
    variables = list_h5(handle, path, matlab=True)
    var, hw = choose_cube(variables, options, path)
    _check_h5_storage(var, path)
    return cube_from_variable(var, variables, hw, options, path, "mat-v7.3", "F")


def read_hdf5(path: Path, options: ReadOptions) -> Cube:
    handle = _open_h5(path)
    try:
        return _read_hdf5(handle, path, options)
    except BaseException:
        handle.close()
        raise


def _read_hdf5(handle, path: Path, options: ReadOptions) -> Cube:
    variables = list_h5(handle, path, matlab=False)
    var, hw = choose_cube(variables, options, path)
    _check_h5_storage(var, path)
    ds = var.load()
    if options.layout is None and hasattr(ds, "attrs") and "layout" in ds.attrs:
        stated = ds.attrs["layout"]
        stated = stated.decode() if isinstance(stated, bytes) else str(stated)
        options = ReadOptions(var=options.var, layout=stated, hw=options.hw,
                              normalise=options.normalise, nonfinite=options.nonfinite)
    cube = cube_from_variable(var, variables, hw, options, path, "hdf5", "C")
    _apply_sidecar_attrs(cube, dict(handle.attrs), path)
    cube.metadata["_h5file"] = handle
    return cube


def read_npz(path: Path, options: ReadOptions) -> Cube:
    variables = list_npz(path)
    var, hw = choose_cube(variables, options, path)
    cube = cube_from_variable(var, variables, hw, options, path, "npz", "C")
    meta = [v for v in variables if v.name == "metadata_json"]
    if meta:
        try:
            doc = json.loads(bytes(np.asarray(meta[0].load())).decode("utf-8"))
        except (ValueError, TypeError):
            cube.metadata["warnings"].append("array 'metadata_json' is not valid UTF-8 JSON: ignored")
        else:
            _apply_sidecar(cube, doc, f"{path.name}:metadata_json")
    return cube


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy header, without reading the data."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                shape, _, dtype = fmt._read_array_header(fh, version)
            return tuple(int(n) for n in shape), np.dtype(dtype), fh.tell()
    except OSError as exc:
        raise CubeError(path, f"cannot read this .npy file ({exc.strerror or exc})") from None
    except Exception as exc:  # ValueError/SyntaxError for a damaged header
        raise CubeError(path, f"not a valid .npy file: its header cannot be read ({_one_line(exc)})") from None


def read_npy(path: Path, options: ReadOptions) -> Cube:
    shape, dtype, offset = _npy_header(path)
    if dtype.hasobject:
        raise UnsafeFileError(path, "the .npy file holds Python objects, which would need unpickling; refused")
    check_numeric(dtype, path)
    if len(shape) in (2, 3):
        check_shape(shape, path)
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = os.path.getsize(path)
    if actual < expected:
        raise TruncatedFileError(path, f"holds {actual} bytes but its header ({'x'.join(map(str, shape))} of "
                                       f"{dtype.name}) needs {expected}: the file is truncated")
    try:
        arr = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise UnsafeFileError(path, "the .npy file holds Python objects, which would need unpickling; refused") from None
        raise CubeError(path, f"not a valid .npy file ({exc}); it may be truncated") from None
    except OSError as exc:
        raise CubeError(path, f"cannot read this .npy file ({exc})") from None
    var = Variable(path.stem, tuple(arr.shape), arr.dtype, lambda: arr, numeric=_is_numeric_dtype(arr.dtype))
    check_numeric(arr.dtype, path)
    hw = None
    if arr.ndim == 2:
        hw = _hw_for(var, [], options, path)
    elif arr.ndim != 3:
        raise NoCubeError(path, f"the array has shape {arr.shape}; a cube needs 3 axes")
    sidecar = _read_sidecar(path)
    if sidecar.get("layout") and options.layout is None:
        options = ReadOptions(var=None, layout=str(sidecar["layout"]), hw=options.hw,
                              normalise=options.normalise, nonfinite=options.nonfinite)
    cube = cube_from_variable(var, [var], hw, options, path, "npy", "C")
    _apply_sidecar(cube, sidecar, sidecar_path(path).name)
    return cube


# ------------------------------------------------------------------------------ sidecar metadata
def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise CubeError(side, f"metadata file is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise CubeError(side, f"metadata file holds a JSON {type(meta).__name__}, not an object "
                              f"({{\"wavelengths_nm\": [...], ...}})")
    return meta


def _band_list(meta: dict, key: str, bands: int, dtype, source: str, warnings: list[str]):
    """A per-band list from a metadata document, or None (with a warning when it is unusable)."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        vec = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        vec = None
    if vec is None or vec.ndim != 1:
        warnings.append(f"{source}: '{key}' is not a list of numbers: ignored")
        return None
    if vec.size != bands:
        warnings.append(f"{source}: '{key}' has {vec.size} entries for {bands} bands: ignored")
        return None
    if dtype is np.float64 and not np.isfinite(vec).all():
        warnings.append(f"{source}: '{key}' holds NaN/Inf: ignored")
        return None
    return vec


def _apply_sidecar(cube: Cube, meta, source: str = "metadata") -> None:
    warnings = cube.metadata.setdefault("warnings", [])
    if not isinstance(meta, dict):
        warnings.append(f"{source}: holds a JSON {type(meta).__name__}, not an object: ignored")
        return
    bands = cube.bands
    wl = _band_list(meta, "wavelengths_nm", bands, np.float64, source, warnings)
    if wl is not None:
        cube.wavelengths_nm = wl
    fwhm = _band_list(meta, "fwhm_nm", bands, np.float64, source, warnings)
    if fwhm is not None:
        cube.fwhm_nm = fwhm
    bad = _band_list(meta, "bad_bands", bands, bool, source, warnings)
    if bad is not None:
        cube.bad_bands = bad
    if meta.get("name"):
        cube.name = str(meta["name"])
    if meta.get("provenance"):
        cube.metadata["provenance"] = meta["provenance"]
    if meta.get("georef") is not None:
        geo = georef_of(meta)
        if geo is None:
            warnings.append(f"{source}: 'georef' is not a valid geotransform: ignored")
        else:
            cube.metadata["georef"] = geo.to_dict()


def _apply_sidecar_attrs(cube: Cube, attrs: dict, path: Path) -> None:
    raw = attrs.get("metadata_json")
    if raw is None:
        return
    try:
        doc = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (ValueError, TypeError):
        cube.metadata.setdefault("warnings", []).append("attribute 'metadata_json' is not valid JSON: ignored")
        return
    _apply_sidecar(cube, doc, f"{path.name}:metadata_json")


def _metadata_json(cube: Cube) -> str:
    meta = {
        "wavelengths_nm": None if cube.wavelengths_nm is None else [float(v) for v in cube.wavelengths_nm],
        "fwhm_nm": None if cube.fwhm_nm is None else [float(v) for v in cube.fwhm_nm],
        "bad_bands": None if cube.bad_bands is None else [bool(v) for v in cube.bad_bands],
        "name": cube.name,
        "layout": "HWB",
        "provenance": cube.metadata.get("provenance"),
    }
    geo = georef_of(cube.metadata)
    if geo is not None:
        meta["georef"] = geo.to_dict()
    return json.dumps(stamp(meta, "cube-metadata", run_details=False))  # (no time: the same cube, the same bytes)


# ------------------------------------------------------------------------------ writers
def write_npy(cube: Cube, path: Path) -> Path:
    data, _ = reflectance_for_writing(cube)
    side = sidecar_path(path)
    with atomic_path(path) as tmp, atomic_path(side) as tmp_side:
        with open(tmp, "wb") as fh:
            np.save(fh, data, allow_pickle=False)
        tmp_side.write_text(_metadata_json(cube), encoding="utf-8")
    return path


def write_npz(cube: Cube, path: Path) -> Path:
    data, meta = reflectance_for_writing(cube)
    arrays = {"cube": data, "metadata_json": np.frombuffer(_metadata_json(cube).encode("utf-8"), dtype=np.uint8)}
    if meta["wavelengths_nm"] is not None:
        arrays["wavelengths_nm"] = np.asarray(meta["wavelengths_nm"], dtype=np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


class _HDF5Sink:
    """The file object HDF5 writes through (h5py's file-object driver).

    HDF5 must never see a failed write: after one (a full disk) it is left in a state where
    closing the file or releasing a dataset crashes the process. So a failure, or a Ctrl+C /
    SIGTERM that arrives meanwhile (held back by ``deferred_interrupts``), is recorded, later
    writes are dropped so that the library finishes quickly, and the caller raises it once the
    library has closed the file cleanly (the temporary file is then removed)."""

    def __init__(self, fh, since: int):
        self.fh = fh
        self.since = since
        self.error: BaseException | None = None

    def _interrupted(self) -> bool:
        from app.core.io._common import signals_seen

        return signals_seen() != self.since

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if self.error is None and not self._interrupted():
            try:
                self.fh.write(data)
            except BaseException as exc:  # noqa: BLE001 - re-raised by ``raise_error``
                self.error = exc
        return n

    def truncate(self, size=None):
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        if self.error is None:
            try:
                self.fh.flush()
            except OSError as exc:
                self.error = exc

    def __getattr__(self, name):  # read, seek, tell
        return getattr(self.fh, name)

    @property
    def failed(self) -> bool:
        return self.error is not None or self._interrupted()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def _hdf5_file(tmp: Path, **kwargs):
    """An h5py File for writing ``tmp`` through an :class:`_HDF5Sink` (see there why)."""
    import h5py

    with deferred_interrupts() as since, open(tmp, "w+b") as fh:
        sink = _HDF5Sink(fh, since)
        with h5py.File(sink, "w", **kwargs) as f:
            yield f, sink
        sink.flush()
        sink.raise_error()


def _write_bands(ds, data: np.ndarray, axis: int, sink: _HDF5Sink) -> None:
    """Write band by band, so that a full disk or an interruption stops the work within one band
    (the sink drops the rest; writing the whole array at once would compress all of it first)."""
    index = [slice(None)] * data.ndim
    for k in range(data.shape[axis]):
        if sink.failed:
            return
        index[axis] = k
        ds[tuple(index)] = data[tuple(index)]


def write_hdf5(cube: Cube, path: Path) -> Path:
    data, meta = reflectance_for_writing(cube)
    h, w, b = data.shape
    with atomic_path(path) as tmp:
        with _hdf5_file(tmp) as (f, sink):
            ds = f.create_dataset("cube", shape=data.shape, dtype=data.dtype, chunks=(min(h, 256), min(w, 256), 1),
                                  compression="gzip", compression_opts=4)
            _write_bands(ds, data, 2, sink)
            ds.attrs["layout"] = "HWB"
            ds.attrs["units"] = "reflectance"
            if meta["wavelengths_nm"] is not None:
                f.create_dataset("wavelengths_nm", data=np.asarray(meta["wavelengths_nm"]))
            f.attrs["metadata_json"] = _metadata_json(cube)
    return path


_MAT73_HEADER_LEN = 128


def write_mat(cube: Cube, path: Path, version: str = "auto") -> Path:
    """MATLAB file with variables ``cube`` (H x W x B single) and ``wavelengths_nm`` (1 x B).

    version 'auto' writes v5 below 2 GB (its limit) and v7.3 above."""
    data, meta = reflectance_for_writing(cube)
    if version == "auto":
        version = "7.3" if data.nbytes >= 2**31 - 2**20 else "5"
    wl = None if meta["wavelengths_nm"] is None else np.asarray(meta["wavelengths_nm"], dtype=np.float64)[None, :]
    if version == "5":
        import scipy.io as sio

        variables = {"cube": data, "metadata_json": _metadata_json(cube)}
        if wl is not None:
            variables["wavelengths_nm"] = wl
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                sio.savemat(fh, variables, do_compression=True, oned_as="row")
        return path
    if version != "7.3":
        raise ValueError(f"MAT version must be '5', '7.3' or 'auto', not {version!r}")
    with atomic_path(path) as tmp:
        with _hdf5_file(tmp, userblock_size=512) as (f, sink):
            stored = data.T
            ds = f.create_dataset("cube", shape=stored.shape, dtype=stored.dtype,
                                  chunks=(1, min(data.shape[1], 256), min(data.shape[0], 256)),
                                  compression="gzip", compression_opts=4)
            _write_bands(ds, stored, 0, sink)
            ds.attrs["MATLAB_class"] = np.bytes_("single")
            if wl is not None:
                wds = f.create_dataset("wavelengths_nm", data=wl.T)
                wds.attrs["MATLAB_class"] = np.bytes_("double")
        stamp = time.strftime("%a %b %d %H:%M:%S %Y")
        text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".ljust(116)
        header = text.encode("ascii") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as fh:
            fh.write(header)
    return path

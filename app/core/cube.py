"""The hyperspectral cube: (H, W, B) float32 reflectance with wavelengths in nm.

A cube either holds its data in memory or reads it lazily from a raw array-like (a numpy memmap
or an h5py dataset) whose axes may be in any order and whose values may need a scale. Lazy cubes
answer ``band(k)`` and ``spectrum(y, x)`` by reading only those values from disk, so a 2 GB ENVI
file opens instantly and stays out of resident memory until ``data`` is asked for.
"""
from __future__ import annotations

import dataclasses
import os
import re
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import CubeError, HsiError, NonFiniteError


def _as_float_vector(values, length: int, what: str, path) -> np.ndarray | None:
    if values is None:
        return None
    vec = np.asarray(values, dtype=np.float64).reshape(-1)
    if vec.size != length:
        raise CubeError(path, f"{what} has {vec.size} entries but the cube has {length} bands")
    return vec


BAND_COPY_BUDGET = None  # bytes for band-sequential copies, all cubes together (None: see below)
_band_copy_lock = threading.Lock()
_band_copy_bytes = [0]


def _band_copy_budget() -> int:
    """``BAND_COPY_BUDGET`` or a quarter of the physical memory, at most 8 GiB."""
    if BAND_COPY_BUDGET is not None:
        return int(BAND_COPY_BUDGET)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 8 << 30
    return int(min(total // 4, 8 << 30))


def _reserve_band_copy(cube, nbytes: int) -> bool:
    with _band_copy_lock:
        if _band_copy_bytes[0] + nbytes > _band_copy_budget():
            return False
        _band_copy_bytes[0] += nbytes
    weakref.finalize(cube, _release_band_copy, nbytes)
    return True


def _release_band_copy(nbytes: int) -> None:
    with _band_copy_lock:
        _band_copy_bytes[0] -= nbytes


@dataclass
class Cube:
    """A hyperspectral cube in the application's convention.

    Attributes:
        raw: the stored array (numpy array, np.memmap or h5py dataset), any axis order.
        axes: positions in ``raw`` of the (H, W, B) axes; (0, 1, 2) when raw is already H, W, B.
        scale: reflectance = raw * scale + offset (e.g. 1/65535 for CAVE uint16).
        offset: see ``scale``.
        band_gain, band_offset: (B,) a per-band calibration the file states (ENVI ``data gain
            values`` that differ between bands, GeoTIFF per-band SCALE/OFFSET, a product's
            VNIR/SWIR scales), applied to the stored values before ``scale``/``offset``:
            reflectance = (raw * band_gain + band_offset) * scale + offset. None: 1 and 0.
        wavelengths_nm: (B,) band centres in nanometres, or None when unknown.
        fwhm_nm: (B,) full width at half maximum in nanometres, or None.
        bad_bands: (B,) bool, True where the band is flagged bad (ENVI ``bbl`` == 0), or None.
        ignore_value: raw value that marks "no data" (ENVI ``data ignore value``, GDAL_NODATA,
            HDF5/NetCDF ``_FillValue``); such values read as 0 reflectance, and a pixel holding it in
            any band is in ``nodata_mask()``.
        nonfinite_nodata: NaN/Inf in the stored values mark no-data pixels (``--nonfinite mask``);
            they read as 0 like the ignore value.
        name: display name.
        source_path: where it was read from (None when computed in the app).
        normalisation: the rule that maps stored values to reflectance, said in words.
        metadata: free-form (header fields, provenance of a computed reconstruction, ...).
    """

    raw: Any
    axes: tuple[int, int, int] = (0, 1, 2)
    scale: float = 1.0
    offset: float = 0.0
    band_gain: np.ndarray | None = None
    band_offset: np.ndarray | None = None
    wavelengths_nm: np.ndarray | None = None
    fwhm_nm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    ignore_value: float | None = None
    nonfinite_nodata: bool = False
    name: str = "cube"
    source_path: Path | None = None
    normalisation: str = "values taken as reflectance"
    metadata: dict = field(default_factory=dict)
    _cache: np.ndarray | None = field(default=None, repr=False, compare=False)
    # band-sequential copy of _cache for fast band reads (see build_band_copy)
    _bsq: np.ndarray | None = field(default=None, repr=False, compare=False)
    # (H, W) bool no-data mask, scanned once (see nodata_mask)
    _nodata: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if len(getattr(self.raw, "shape", ())) != 3:
            raise CubeError(self.source_path, f"a cube needs 3 axes, got shape {getattr(self.raw, 'shape', None)}")
        if sorted(self.axes) != [0, 1, 2]:
            raise ValueError(f"axes must be a permutation of (0, 1, 2), got {self.axes}")
        self.axes = tuple(int(a) for a in self.axes)
        bands = self.shape[2]
        self.wavelengths_nm = _as_float_vector(self.wavelengths_nm, bands, "the wavelength list", self.source_path)
        self.fwhm_nm = _as_float_vector(self.fwhm_nm, bands, "the FWHM list", self.source_path)
        self.band_gain = _as_float_vector(self.band_gain, bands, "the per-band gain list", self.source_path)
        self.band_offset = _as_float_vector(self.band_offset, bands, "the per-band offset list", self.source_path)
        if self.bad_bands is not None:
            bb = np.asarray(self.bad_bands, dtype=bool).reshape(-1)
            if bb.size != bands:
                raise CubeError(self.source_path, f"the bad-band list has {bb.size} entries but the cube has {bands} bands")
            self.bad_bands = bb
        if self.source_path is not None:
            self.source_path = Path(self.source_path)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_array(cls, data, wavelengths_nm=None, *, name: str = "cube", check_finite: bool = True, **kwargs) -> "Cube":
        """Wrap an in-memory (H, W, B) array (converted to float32)."""
        arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
        if arr.ndim != 3:
            raise CubeError(kwargs.get("source_path"), f"a cube needs shape (H, W, B), got {arr.shape}")
        if check_finite and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise NonFiniteError(kwargs.get("source_path"), f"{bad} values are NaN or Inf")
        return cls(raw=arr, wavelengths_nm=wavelengths_nm, name=name, **kwargs)

    def with_data(self, data, **changes) -> "Cube":
        """A new in-memory cube with ``data`` (H, W, B) and this cube's band metadata."""
        arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
        if arr.ndim != 3 or arr.shape[2] != self.shape[2]:
            raise CubeError(self.source_path, f"new data {arr.shape} does not match {self.shape[2]} bands")
        fields = dict(
            wavelengths_nm=self.wavelengths_nm, fwhm_nm=self.fwhm_nm, bad_bands=self.bad_bands,
            name=self.name, source_path=None, normalisation="values taken as reflectance",
            metadata=dict(self.metadata),
        )
        fields.update(changes)
        return Cube(raw=arr, **fields)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.raw.shape
        return (int(s[self.axes[0]]), int(s[self.axes[1]]), int(s[self.axes[2]]))

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def bands(self) -> int:
        return self.shape[2]

    @property
    def is_lazy(self) -> bool:
        """True when values are read from disk on demand (memmap / HDF5)."""
        return self._cache is None and not (isinstance(self.raw, np.ndarray) and not isinstance(self.raw, np.memmap))

    @property
    def nbytes_float32(self) -> int:
        h, w, b = self.shape
        return h * w * b * 4

    # ------------------------------------------------------------------ access
    def _convert(self, values: np.ndarray, band: int | None = None) -> np.ndarray:
        """Stored values -> native-endian float32 reflectance (ignore value -> 0). ``band``: the
        band ``values`` hold (one band read), else the bands are the last axis, all of them."""
        out = np.asarray(values)  # astype below also turns big-endian data into native floats
        ignore = None
        if self.ignore_value is not None:
            ignore = out == self.ignore_value
        out = out.astype(np.float32, copy=True)
        if self.band_gain is not None:
            out *= (self.band_gain if band is None else self.band_gain[band]).astype(np.float32)
        if self.band_offset is not None:
            out += (self.band_offset if band is None else self.band_offset[band]).astype(np.float32)
        if self.scale != 1.0:
            out *= np.float32(self.scale)
        if self.offset != 0.0:
            out += np.float32(self.offset)
        if ignore is not None and ignore.any():
            out[ignore] = 0.0
        return out

    def _read(self, index_hwb: tuple) -> np.ndarray:
        """Read raw[...] for an index given in (H, W, B) order; returns axes in (H, W, B) order
        for the axes that were sliced (integer-indexed axes drop out)."""
        raw_index = [slice(None)] * 3
        for hwb_axis, raw_axis in enumerate(self.axes):
            raw_index[raw_axis] = index_hwb[hwb_axis]
        values = self.raw[tuple(raw_index)]
        kept = [a for a in range(3) if not isinstance(index_hwb[a], (int, np.integer))]
        raw_positions = [self.axes[a] for a in kept]
        order = np.argsort(np.argsort(raw_positions))  # rank of each kept axis in raw order
        return np.transpose(np.asarray(values), axes=tuple(int(o) for o in order))

    def band(self, k: int, step: int = 1) -> np.ndarray:
        """(H, W) float32 reflectance of band ``k`` (reads only that band when lazy). ``step`` > 1:
        every ``step``-th row and column only, (H // step, W // step) (a picture for a screen
        smaller than the band: a memory-mapped file is read at those pixels only)."""
        k = int(k)
        if not -self.bands <= k < self.bands:
            raise IndexError(f"band {k} out of range for {self.bands} bands")
        step = max(int(step), 1)
        rows = slice(0, (self.height // step) * step, step) if step > 1 else slice(None)
        cols = slice(0, (self.width // step) * step, step) if step > 1 else slice(None)
        bsq = self._bsq
        if bsq is not None:
            return bsq[k][rows, cols]
        if self._cache is not None:
            return self._cache[rows, cols, k]
        return self._convert(self._read((rows, cols, k % self.bands)), band=k % self.bands)

    @property
    def in_memory(self) -> bool:
        """True when the values are in memory (loaded, or an in-memory array; not a file mapping)."""
        return self._cache is not None or (isinstance(self.raw, np.ndarray) and not isinstance(self.raw, np.memmap))

    def build_band_copy(self) -> bool:
        """Keep a band-sequential (B, H, W) copy of the loaded cube, so that ``band(k)`` is a
        contiguous read instead of a strided gather over the whole band-interleaved array (2 ms
        per 512 x 512 x 31 band, most of a band switch with several panels). Costs the cube's size
        again in memory, within a process-wide budget (``BAND_COPY_BUDGET``); returns False when
        the cube is not loaded, is already band-sequential, or the budget is spent. Safe to run on a
        worker thread: the copy is made band by band (numpy releases the GIL for each) and published
        at the end with one assignment; reads before that use the interleaved array."""
        if self._cache is None and self.in_memory:
            _ = self.data  # (the raw array itself when it is float32 reflectance already)
        data = self._cache
        if data is None or self._bsq is not None or data.ndim != 3:
            return False
        if data.strides[0] < data.strides[2] or data.shape[2] < 2:
            return False  # band reads are already contiguous enough
        if not _reserve_band_copy(self, data.nbytes):
            return False
        bsq = np.empty((data.shape[2], data.shape[0], data.shape[1]), dtype=data.dtype)
        for k in range(data.shape[2]):
            bsq[k] = data[:, :, k]
        self._bsq = bsq
        return True

    def spectrum(self, y: int, x: int) -> np.ndarray:
        """(B,) float32 reflectance of pixel (row y, column x)."""
        y, x = int(y), int(x)
        if not (0 <= y < self.height and 0 <= x < self.width):
            raise IndexError(f"pixel ({y}, {x}) outside {self.height}x{self.width}")
        if self._cache is not None:
            return self._cache[y, x, :].copy()
        return self._convert(self._read((y, x, slice(None))))

    def region(self, rows: slice, cols: slice) -> np.ndarray:
        """(h, w, B) float32 reflectance of a rectangle."""
        if self._cache is not None:
            return self._cache[rows, cols, :]
        return self._convert(self._read((rows, cols, slice(None))))

    @property
    def data(self) -> np.ndarray:
        """The whole (H, W, B) float32 array (loaded and cached on first use)."""
        if self._cache is None:
            if isinstance(self.raw, np.ndarray) and not isinstance(self.raw, np.memmap) \
                    and self.raw.dtype == np.float32 and self.axes == (0, 1, 2) \
                    and self.scale == 1.0 and self.offset == 0.0 and self.ignore_value is None \
                    and self.band_gain is None and self.band_offset is None:
                self._cache = self.raw
            else:
                stored = self._read((slice(None),) * 3)
                if self._nodata is None and self.has_nodata_rule:
                    # the values are at hand now: the mask costs one comparison, not a second read
                    self._nodata = self._nodata_of(self._nodata_source_values(stored), band_axis=2)
                full = np.ascontiguousarray(self._convert(stored))
                if np.dtype(self.raw.dtype).kind == "f" and not np.isfinite(full).all():
                    # lazy files are only sampled at open; the full read is where NaN/Inf surface
                    bad = int(full.size - np.count_nonzero(np.isfinite(full)))
                    raise NonFiniteError(self.source_path, f"{bad} NaN/Inf values found while loading the whole cube; "
                                                           "open it with nonfinite='zero' to read them as 0")
                self._cache = full
        return self._cache

    def load(self) -> "Cube":
        """Read everything into memory now (returns self)."""
        _ = self.data
        return self

    # ------------------------------------------------------------------ no-data
    @property
    def has_nodata_rule(self) -> bool:
        """True when some stored value can mark no-data (an ignore value, or NaN/Inf as no-data)."""
        return self.ignore_value is not None or self.nonfinite_nodata

    def _nodata_source(self):
        # a FiniteView hides NaN/Inf behind zeros; the mask must see them
        return getattr(self.raw, "nonfinite_source", None) if self.nonfinite_nodata else None

    def _nodata_source_values(self, stored: np.ndarray) -> np.ndarray:
        """``stored`` (read in H, W, B order from ``raw``) or, when NaN/Inf were cleaned on the
        way, the same values from the uncleaned source."""
        src = self._nodata_source()
        if src is None:
            return stored
        return np.transpose(np.asarray(src[...]), axes=self.axes)

    def _nodata_of(self, values: np.ndarray, band_axis: int) -> np.ndarray:
        """Where any value along ``band_axis`` marks no-data."""
        values = np.asarray(values)
        bad = np.zeros(values.shape, dtype=bool)
        if self.ignore_value is not None:
            bad |= values == self.ignore_value
        if self.nonfinite_nodata and values.dtype.kind == "f":
            bad |= ~np.isfinite(values)
        return bad.any(axis=band_axis)

    def nodata_mask(self) -> np.ndarray:
        """(H, W) bool, True where any band of the pixel holds the no-data value (or NaN/Inf when
        ``nonfinite_nodata``). All False without a no-data rule (nothing is read). A lazy file is
        scanned once, in slabs of about 64 MB along its first stored axis (whatever the interleave),
        so a big memory-mapped cube never sits in memory whole; the result is kept."""
        if self._nodata is not None:
            return self._nodata
        h, w, _ = self.shape
        if not self.has_nodata_rule:
            self._nodata = np.zeros((h, w), dtype=bool)
            return self._nodata
        src = self._nodata_source()
        src = self.raw if src is None else src
        shape = tuple(src.shape)
        out = np.zeros((h, w), dtype=bool)
        slab = max(1, int((64 << 20) // max(1, int(np.prod(shape[1:])) * 8)))
        axis0 = self.axes.index(0)  # the H, W or B axis the slabs cut
        for start in range(0, shape[0], slab):
            stop = min(shape[0], start + slab)
            part = self._nodata_of(np.transpose(np.asarray(src[start:stop]), axes=self.axes), band_axis=2)
            if axis0 == 2:
                out |= part
            elif axis0 == 0:
                out[start:stop] |= part
            else:
                out[:, start:stop] |= part
        self._nodata = out
        return out

    def nodata_count(self) -> int:
        """How many pixels ``nodata_mask`` marks (0 without scanning when there is no rule)."""
        return int(np.count_nonzero(self.nodata_mask())) if self.has_nodata_rule else 0

    def excluded_bands(self, ranges_nm=None, *, option: str = "--exclude-bands") -> np.ndarray:
        """(B,) bool: the bands the metrics leave out, the file's bad-band list (ENVI ``bbl``)
        and the bands whose centre lies in one of ``ranges_nm`` ((low, high) nm, inclusive).
        Ranges need wavelengths: without them the error names ``option``."""
        out = np.zeros(self.bands, dtype=bool) if self.bad_bands is None else self.bad_bands.copy()
        if ranges_nm:
            out |= bands_in_ranges(self.wavelengths_nm, ranges_nm, what=self.name, option=option)
        return out

    # ------------------------------------------------------------------ band helpers
    def band_index(self, wavelength_nm: float) -> int:
        """Index of the band whose centre is nearest to ``wavelength_nm`` (index itself if unknown)."""
        if self.wavelengths_nm is None:
            return int(np.clip(round(wavelength_nm), 0, self.bands - 1))
        return int(np.argmin(np.abs(self.wavelengths_nm - wavelength_nm)))

    def band_label(self, k: int) -> str:
        if self.wavelengths_nm is None:
            return f"band {k}"
        return f"band {k} ({self.wavelengths_nm[k]:.1f} nm)"

    def describe(self) -> str:
        h, w, b = self.shape
        wl = ""
        if self.wavelengths_nm is not None:
            wl = f", {self.wavelengths_nm[0]:.1f}-{self.wavelengths_nm[-1]:.1f} nm"
        lazy = ", memory-mapped" if self.is_lazy else ""
        return f"{self.name}: {h}x{w}x{b}{wl}{lazy}; {self.normalisation}"

    def replace(self, **changes) -> "Cube":
        """A shallow copy with some fields changed (shares the raw array)."""
        cube = dataclasses.replace(self, **changes)
        # dataclasses.replace copies every field, the caches too: they stay valid only when the
        # stored values and their mapping to reflectance are unchanged
        cube._bsq = None
        if changes.keys() & {"raw", "axes", "scale", "offset", "ignore_value", "band_gain", "band_offset"}:
            cube._cache = None
        if changes.keys() & {"raw", "axes", "ignore_value", "nonfinite_nodata"}:
            cube._nodata = None
        return cube


def parse_nm_ranges(text, *, option: str = "--exclude-bands") -> list[tuple[float, float]]:
    """'1340-1460,1790-1960,2500' -> [(1340, 1460), (1790, 1960), (2500, 2500)] (nm; a single value
    is a range of one wavelength). A list of numbers or pairs passes through checked. Errors name
    ``option``."""
    if text is None:
        return []
    items = text if isinstance(text, (list, tuple)) else [t for t in str(text).split(",")]
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            parts = list(item)
        elif isinstance(item, (int, float)):
            parts = [item]
        else:
            word = item.strip()
            if not word:
                continue
            # a '-' after a digit separates the ends; one at the start is a sign (never a wavelength)
            parts = re.split(r"(?<=[0-9.])\s*-\s*", word, maxsplit=1)
        try:
            low, high = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (None, None)
        except (TypeError, ValueError):
            low = high = None
        if low is None or not (np.isfinite(low) and np.isfinite(high)):
            raise HsiError(f"{option}: {item!r} is not a wavelength or a range LOW-HIGH in nm "
                           f"(e.g. {option} 1340-1460,1790-1960)")
        if high < low:
            raise HsiError(f"{option}: the range {item!r} ends below its start")
        out.append((low, high))
    return out


def bands_in_ranges(wavelengths_nm, ranges_nm, *, what: str = "the cube",
                    option: str = "--exclude-bands") -> np.ndarray:
    """(B,) bool: the bands whose centre wavelength lies in one of the (low, high) nm ranges (or
    their text, as ``parse_nm_ranges`` takes it)."""
    if wavelengths_nm is None:
        raise HsiError(f"{option} selects bands by wavelength, but {what} has no wavelengths "
                       f"(bands are only numbered)")
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    out = np.zeros(wl.size, dtype=bool)
    for low, high in parse_nm_ranges(ranges_nm, option=option):
        out |= (wl >= low) & (wl <= high)
    return out


def hwb_view(x, what: str, error: type[Exception] = CubeError, dtype_error: type[Exception] | None = None):
    """(x as (H, W, B), wavelengths or None): the one conversion of what callers hand the science
    code. A Cube is unpacked (its data and wavelengths); numpy arrays are (H, W, B); torch tensors
    (1, B, H, W) or (B, H, W) come back as a permuted (H, W, B) tensor view (torch is not imported
    here). ``error`` (taking one message) is raised for a batch or a wrong rank, ``dtype_error``
    (default ``error``) for non-numbers."""
    wl = None
    is_torch = type(x).__module__.startswith("torch")
    if not is_torch and not isinstance(x, np.ndarray) and hasattr(x, "data") and hasattr(x, "wavelengths_nm"):
        wl, x = x.wavelengths_nm, x.data
    if type(x).__module__.startswith("torch"):  # (a Cube's data is numpy)
        t = x.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise error(f"{what}: one cube at a time, got a batch of {t.shape[0]}")
            t = t[0]
        if t.dim() != 3:
            raise error(f"{what}: a torch cube must be (1, B, H, W) or (B, H, W), got {tuple(x.shape)}")
        return t.permute(1, 2, 0), wl
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise error(f"{what}: a cube must have shape (H, W, B), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise (dtype_error or error)(f"{what}: a cube must be numeric, got dtype {arr.dtype}")
    return arr, wl

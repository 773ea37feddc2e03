"""Shared pieces of the readers and writers: options, layout detection, value normalisation,
wavelength units, finiteness checks and atomic writes."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from app.core.errors import (
    AmbiguousCubeError,
    CubeError,
    NoCubeError,
    NonFiniteError,
    NonNumericError,
    Terminated,
)
from app.core.io.value_range import ValueRange, decide

log = logging.getLogger("hsi.io")


@dataclass(frozen=True)
class ReadOptions:
    """What the user may force when a file does not say it clearly.

    var: variable / dataset name inside .mat/.npz/.h5.
    layout: stored axis order as letters, 'HWB', 'BHW', 'HBW', ... (MATLAB order for .mat files),
        or 'BP' / 'PB' for a 2-D bands x pixels (pixels x bands) matrix, which also needs ``hw``.
    hw: (height, width) for 2-D matrices.
    normalise: 'auto' (the rule stated in the metadata or the dtype's rule, always reported),
        'none' (values as stored), 'max' (divide by the data maximum) or a number to divide by.
    nonfinite: 'error' (default), 'zero' (replace NaN/Inf by 0 and say so) or 'mask' (read them
        as 0 and mark their pixels as no-data: the metrics leave them out).
    """

    var: str | None = None
    layout: str | None = None
    hw: tuple[int, int] | None = None
    normalise: str | float = "auto"
    nonfinite: str = "error"


# ------------------------------------------------------------------------------ layout
_LAYOUT_RE = re.compile(r"^(?=.*H)(?=.*W)(?=.*B)[HWB]{3}$")


def read_text(path: Path, binary: str) -> str:
    """A small text file (a header, a side list) as text: UTF-8 (a BOM dropped), else Latin-1.
    CubeError naming ``path`` when it cannot be read, or saying ``binary`` when it holds NUL bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CubeError(path, f"cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in raw[:4096]:
        raise CubeError(path, binary)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def axes_from_layout(layout: str, path) -> tuple[int, int, int]:
    """'BHW' -> positions of (H, W, B) in the stored array: (1, 2, 0)."""
    lay = layout.upper()
    if not _LAYOUT_RE.match(lay):
        raise CubeError(path, f"layout {layout!r} is not a permutation of H, W and B (e.g. HWB or BHW)")
    return (lay.index("H"), lay.index("W"), lay.index("B"))


def detect_layout(shape: tuple[int, ...], path, n_wavelengths: int | None = None) -> str:
    """Guess which stored axis holds the bands of a 3-D array.

    Rules, in order: the one axis whose length equals the wavelength list; the odd one out when
    the other two are equal (square images); the shortest axis when it is clearly shorter than
    the others (less than half). Anything else is ambiguous and the user must choose.
    """
    if len(shape) != 3:
        raise CubeError(path, f"expected a 3-D array, got shape {tuple(shape)}")
    if n_wavelengths:
        hits = [i for i, n in enumerate(shape) if n == n_wavelengths]
        if len(hits) == 1:
            return _layout_with_band_at(hits[0])
    a, b, c = shape
    if a == b != c:
        return "HWB"
    if b == c != a:
        return "BHW"
    order = sorted(range(3), key=lambda i: shape[i])
    if shape[order[0]] * 2 <= shape[order[1]] and order[0] != 1:
        return _layout_with_band_at(order[0])
    raise AmbiguousCubeError(
        path, f"cannot tell which axis of shape {tuple(shape)} holds the bands", "layout",
        ["HWB", "BHW", "HBW"],
    )


def _layout_with_band_at(axis: int) -> str:
    return {0: "BHW", 1: "HBW", 2: "HWB"}[axis]


def check_numeric(arr_dtype: np.dtype, path, what: str = "the array") -> None:
    kind = np.dtype(arr_dtype).kind
    if kind not in "biuf":
        names = {"U": "text", "S": "bytes", "O": "Python objects", "V": "records/structs", "c": "complex numbers"}
        if kind == "c":  # a silent cast would drop the imaginary part
            raise NonNumericError(path, f"{what} holds complex numbers ({np.dtype(arr_dtype).name}); only real-valued "
                                        f"cubes are read (save the magnitude or the real part as a real array)")
        raise NonNumericError(path, f"{what} holds {names.get(kind, kind)} ({arr_dtype}), not real numbers")


def check_shape(shape, path, what: str = "the array") -> None:
    """Refuse arrays with an empty axis: they hold no values to show (and break every slice)."""
    if any(int(n) <= 0 for n in shape):
        raise NoCubeError(path, f"{what} has shape {tuple(int(n) for n in shape)}: an axis of length 0 holds no values")


# ------------------------------------------------------------------------------ values
def decide_range(dtype: np.dtype, options: ReadOptions, raw, *, stated: ValueRange | None = None,
                 convention: ValueRange | None = None, axes: tuple[int, int, int] | None = None,
                 ignore: float | None = None) -> ValueRange:
    """How the stored values of ``raw`` become reflectance (:mod:`app.core.io.value_range`): the
    user's ``--normalise``, else what the file states, a dataset convention, floats as reflectance,
    or the literature's rule for counts (divide by the maximum, read only when needed). The
    no-data value ``ignore`` never counts as the maximum (a fill of 65535 or 1e20 would be)."""
    sample_max = None
    if np.dtype(dtype).kind == "f":
        sample = sample_values(raw, axes)
        finite = sample[np.isfinite(sample) & ((sample != ignore) if ignore is not None else True)]
        sample_max = float(finite.max()) if finite.size else 0.0
    try:
        return decide(dtype, max_of=lambda: exact_max(raw, ignore), stated=stated, convention=convention,
                      user=options.normalise, sample_max=sample_max)
    except ValueError as exc:
        raise ValueError(f"--normalise: {exc}") from None


def exact_max(raw, ignore: float | None = None) -> float:
    """The largest finite stored value of ``raw`` (an array, memmap, h5py dataset or a lazy
    wrapper) other than the no-data value ``ignore``, read in slabs along its first axis so that a
    big file never sits in memory whole."""
    shape = tuple(raw.shape)
    if not shape or 0 in shape:
        return 0.0
    slab = max(1, int((64 << 20) // max(1, int(np.prod(shape[1:])) * 8)))
    best = -np.inf
    for start in range(0, shape[0], slab):
        block = np.asarray(raw[start:start + slab])
        if block.dtype.kind == "f":
            block = block[np.isfinite(block)]
        if ignore is not None:
            block = block[block != ignore]
        if block.size:
            best = max(best, float(block.max()))
    return best if np.isfinite(best) else 0.0


def sample_values(raw, axes: tuple[int, int, int] | None = None, max_values: int = 65536) -> np.ndarray:
    """A cheap sample of a (possibly memory-mapped) array for sanity checks (NaN/Inf, maximum).

    Reads a few slices along the first *stored* axis, each cut to a short run of contiguous
    values, so that a cold memory-mapped file costs a handful of page reads, not thousands.
    ``axes`` is accepted for symmetry with the cube's description; the sample ignores it."""
    shape = raw.shape
    per_slice = max(1, max_values // 4)
    run = max(1, min(shape[2], per_slice))
    rows = max(1, min(shape[1], per_slice // run))
    out = []
    for i in np.unique(np.linspace(0, shape[0] - 1, 4).astype(int)):
        out.append(np.asarray(raw[int(i), :rows, :run]).reshape(-1))
    return np.concatenate(out)


def check_finite(values: np.ndarray, path, options: ReadOptions, *, sampled: bool = False) -> bool:
    """Raise NonFiniteError when NaN/Inf appear and the user did not ask for them to be zeroed.

    Returns True when non-finite values were found (and must be replaced by 0)."""
    if np.dtype(values.dtype).kind != "f":
        return False
    finite = np.isfinite(values)
    if finite.all():
        return False
    if options.nonfinite in ("zero", "mask"):
        return True
    bad = int(finite.size - np.count_nonzero(finite))
    where = "in a sample of " if sampled else "among "
    raise NonFiniteError(
        path, f"{bad} NaN/Inf values {where}{finite.size} values; open it with nonfinite='zero' "
              f"(CLI: --nonfinite zero) to read them as 0")


def zero_nonfinite(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr[~np.isfinite(arr)] = 0
    return arr


class FiniteView:
    """A lazy stored array (memmap, h5py dataset) whose NaN/Inf read as 0.

    ``nonfinite='zero'`` must hold for the whole file, not only for the rows the opening check
    samples, and loading a large memory-mapped file to clean it would defeat the mapping; so the
    values are cleaned as they are read."""

    def __init__(self, base):
        self.base = base

    @property
    def nonfinite_source(self):
        """The uncleaned values, for the cube's no-data mask (``nonfinite='mask'``)."""
        return self.base

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.base.dtype)

    @property
    def ndim(self) -> int:
        return len(self.base.shape)

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def __getitem__(self, index) -> np.ndarray:
        values = np.array(self.base[index], copy=True)
        if values.dtype.kind == "f":
            values[~np.isfinite(values)] = 0
        return values

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values if dtype is None else values.astype(dtype, copy=False)


def honour_nonfinite(raw, path, options: ReadOptions, warnings: list[str], *, lazy: bool):
    """The array a reader should put in its cube, given the NaN/Inf rule.

    Refuses NaN/Inf found by the check (a sample for lazy arrays, every value otherwise) unless
    the user asked for zeros; with ``nonfinite='zero'`` a lazy array is wrapped in a
    :class:`FiniteView`, so that values beyond the sample are cleaned too. With ``'mask'`` every
    array is wrapped (in memory too): the cube's no-data mask reads the NaN/Inf behind it."""
    if np.dtype(raw.dtype).kind != "f":
        return raw
    found = check_finite(sample_values(raw) if lazy else np.asarray(raw), path, options, sampled=lazy)
    if options.nonfinite == "mask":
        warnings.append("NaN/Inf values read as 0 and their pixels marked as no-data (user choice): the "
                        "metrics leave them out")
        return FiniteView(raw)
    if options.nonfinite != "zero":
        return raw
    if lazy:
        warnings.append("NaN/Inf values replaced by 0 (user choice)" if found else
                        "NaN/Inf values read as 0 wherever they occur (user choice; none in the sampled rows)")
        return FiniteView(raw)
    if found:
        warnings.append("NaN/Inf values replaced by 0 (user choice)")
        return zero_nonfinite(raw)
    return raw


# ------------------------------------------------------------------------------ wavelengths
_UNIT_FACTORS = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1e3, "µm": 1e3, "micrometer": 1e3, "micrometers": 1e3, "micrometre": 1e3,
    "micrometres": 1e3, "micron": 1e3, "microns": 1e3, "mm": 1e6, "millimeter": 1e6,
    "millimeters": 1e6, "m": 1e9, "meter": 1e9, "meters": 1e9,
}


def wavelengths_to_nm(values, units: str | None, path=None) -> tuple[np.ndarray | None, str]:
    """Convert a wavelength list to nanometres. Returns (wavelengths_nm or None, note).

    Known unit names are converted; unknown/missing units are inferred from the magnitude
    (values below 30 are micrometres, otherwise nanometres) and the note says so. Wavenumbers
    and band indices are not wavelengths and give None."""
    if values is None:
        return None, ""
    vec = np.asarray(values, dtype=np.float64).reshape(-1)
    if vec.size == 0 or not np.isfinite(vec).all():
        return None, "wavelength list is empty or not numeric: ignored"
    unit = (units or "").strip().lower()
    if unit in ("index", "wavenumber", "cm-1", "ghz", "mhz"):
        return None, f"wavelength units '{units}' are not lengths: band positions unknown"
    if unit in _UNIT_FACTORS:
        return vec * _UNIT_FACTORS[unit], ""
    if vec.max() < 30:
        return vec * 1e3, f"wavelength units {'missing' if not unit else repr(units)}: values below 30 read as micrometres"
    return vec, f"wavelength units {'missing' if not unit else repr(units)}: values read as nanometres"


# ------------------------------------------------------------------------------ writing
class _Signals:
    """SIGINT/SIGTERM seen by the CLI's handler (``note_signal``), so that an interruption a
    library swallowed (h5py drops a KeyboardInterrupt raised during its writes) still cancels
    the write, and so that handlers can wait while a library must not be interrupted."""

    count = 0
    last: int | None = None
    deferred = 0  # main-thread sections during which the handler only records the signal


def note_signal(signum: int) -> bool:
    """Record a signal; True when the handler should raise now (not inside ``deferred_interrupts``)."""
    _Signals.count += 1
    _Signals.last = signum
    return _Signals.deferred == 0


def interruption(signum: int | None) -> KeyboardInterrupt:
    return Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt()


def signals_seen() -> int:
    return _Signals.count


def check_interrupted(since: int) -> None:
    """Raise the interruption when a signal arrived after ``signals_seen()`` returned ``since``."""
    if _Signals.count != since:
        raise interruption(_Signals.last)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[int]:
    """Hold SIGINT/SIGTERM (as recorded by ``note_signal``) until the block ends, then raise.

    For library calls that an exception would leave in a broken state: HDF5 crashes later when
    a write is abandoned half-way. Yields the signal count at entry (``check_interrupted``)."""
    main = threading.current_thread() is threading.main_thread()
    start = _Signals.count
    if main:
        _Signals.deferred += 1
    try:
        yield start
    finally:
        if main:
            _Signals.deferred -= 1
        if _Signals.count != start:  # raised from finally: replaces whatever the block raised
            raise interruption(_Signals.last)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (os.umask can only
    set it, and setting it briefly would affect files other threads create meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(path: Path, directory: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (0600/0700) the mode open()/mkdir() would (umask)."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any error or interruption the temporary file is removed, so no half-written output is
    ever left; the result gets the mode the user's umask gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    since = signals_seen()
    tmp_path = None
    try:
        with deferred_interrupts():  # else a signal between creating and naming the file would leak it
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            tmp_path = Path(tmp)
        os.close(fd)
        yield tmp_path
        check_interrupted(since)
        usual_mode(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder inside ``parent``; removed with its contents if the block fails.
    It has the umask's folder mode, since a writer may rename it into the output."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with deferred_interrupts():
            tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".part", dir=parent))
        usual_mode(tmp, directory=True)
        yield tmp
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def reflectance_for_writing(cube) -> tuple[np.ndarray, dict]:
    """The (H, W, B) float32 data of a cube and the band metadata every writer stores."""
    data = np.ascontiguousarray(cube.data, dtype=np.float32)
    meta = {
        "wavelengths_nm": None if cube.wavelengths_nm is None else [float(v) for v in cube.wavelengths_nm],
        "fwhm_nm": None if cube.fwhm_nm is None else [float(v) for v in cube.fwhm_nm],
        "bad_bands": None if cube.bad_bands is None else [bool(v) for v in cube.bad_bands],
        "name": cube.name,
    }
    return data, meta


def plausible_wavelengths(vec: np.ndarray | None, bands: int) -> bool:
    """A 1-D increasing list of band centres (in nm or um) with one entry per band."""
    if vec is None:
        return False
    vec = np.asarray(vec, dtype=np.float64).reshape(-1)
    if vec.size != bands or bands < 2 or not np.isfinite(vec).all():
        return False
    return bool(np.all(np.diff(vec) > 0) and vec.min() > 0.1)

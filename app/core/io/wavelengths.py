"""Band centre wavelengths from a side file (``--wavelengths FILE``, File ▸ Attach wavelengths…).

Real cubes often come without wavelengths and with a small text file beside them (Jasper Ridge,
the Paris Hyperion/ALI pair). Accepted layouts, .txt or .csv, separated by commas, semicolons,
tabs or spaces:

* one value per line (or all values on one line);
* two columns: band index, wavelength (the index may start anywhere: sensor band numbers such
  as AVIRIS 4..219 are fine);
* a column named ``wavelength`` (``wl``, ``lambda``, ``center``...) in a header row, whatever the
  other columns hold (FWHM, ...).

Header lines (text before the numbers) and comment lines (``#``, ``%``, ``//``, ``;``) are
skipped. Units: ``nm`` or ``µm``/``um``/``micrometers`` in a header or comment line decide;
otherwise values below 30 are micrometres and are converted (the note says so).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from app.core.errors import CubeError, MissingFileError
from app.core.io._common import read_text

__all__ = ["read_wavelength_file", "attach_wavelengths", "WAVELENGTH_FILE_FILTER"]

WAVELENGTH_FILE_FILTER = "Wavelength lists (*.txt *.csv *.tsv *.dat *.wvl);;All files (*)"
MICROMETRE_LIMIT = 30.0  # values below this are micrometres (no band centre in nm is that short)
_MAX_BYTES = 4 << 20     # a wavelength list is a few kB; a cube opened by mistake is refused fast
_SPLIT = re.compile(r"[,;\t ]+")
_COMMENT = ("#", "%", "//", ";", "!")
_WAVE_COLUMN = re.compile(r"(wave|wavelength|^wl$|^wvl|lambda|cent(er|re)|^nm$|^um$|^µm$)", re.I)
_UM_WORDS = re.compile(r"(µm|μm|(?<![a-z])um(?![a-z])|micromet|microns?(?![a-z]))", re.I)
_NM_WORDS = re.compile(r"((?<![a-z])nm(?![a-z])|nanomet)", re.I)


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def read_wavelength_file(path: str | Path, bands: int | None = None) -> tuple[np.ndarray, str]:
    """(wavelengths in nm, a note saying where they came from and how the units were read).

    Raises CubeError naming ``path`` when the file is missing, holds no list of numbers, or (when
    ``bands`` is given) has another count than the cube's bands."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(path, "no such wavelength file" if not path.exists() else
                               "is a folder, not a wavelength file (.txt/.csv)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CubeError(path, f"cannot be read ({exc.strerror or exc})") from None
    if size > _MAX_BYTES:
        raise CubeError(path, f"is {size} bytes: too large for a wavelength list (one value per band, .txt/.csv)")
    text = read_text(path, "is a binary file, not a wavelength list (.txt/.csv, one value per band)")

    header: list[str] = []          # column names from the last text line before the numbers
    unit_words = ""                 # header and comment text, searched for units
    rows: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(_COMMENT):
            unit_words += " " + stripped
            continue
        tokens = [t for t in _SPLIT.split(stripped) if t]
        values = [_number(t) for t in tokens]
        if all(v is not None for v in values):
            rows.append((lineno, [float(v) for v in values]))
            continue
        if rows:
            raise CubeError(path, f"line {lineno} ({stripped[:40]!r}) is not numbers; only header lines may "
                                  f"come before the values")
        separators = r"[,;\t]+" if re.search(r"[,;\t]", stripped) else r"\s+"
        header = [t.strip().strip('"\'') for t in re.split(separators, stripped) if t.strip()]
        unit_words += " " + stripped
    if not rows:
        raise CubeError(path, "holds no numbers: expected one wavelength per band (or two columns: "
                              "band index, wavelength)")
    widths = {len(v) for _, v in rows}
    if len(rows) == 1 and len(rows[0][1]) > 2:  # all values on one line
        values = np.asarray(rows[0][1], dtype=np.float64)
        how = "one line of values"
    else:
        if len(widths) != 1:
            lineno = next(n for n, v in rows if len(v) != len(rows[0][1]))
            raise CubeError(path, f"line {lineno} has {len(next(v for n, v in rows if n == lineno))} columns, "
                                  f"line {rows[0][0]} has {len(rows[0][1])}: every line needs the same columns")
        table = np.asarray([v for _, v in rows], dtype=np.float64)
        column = _wavelength_column(header, table, path)
        values = table[:, column]
        how = ("one value per line" if table.shape[1] == 1 else
               "band index, wavelength" if table.shape[1] == 2 and column == 1 and not header else
               f"column {column + 1} of {table.shape[1]}")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise CubeError(path, "holds a wavelength that is not a positive number")
    if bands is not None and values.size != bands:
        raise CubeError(path, f"holds {values.size} wavelengths but the cube has {bands} bands")
    if _UM_WORDS.search(unit_words) and not _NM_WORDS.search(unit_words):
        nm, unit = values * 1e3, "micrometres (said by the file), converted to nm"
    elif _NM_WORDS.search(unit_words):
        nm, unit = values, "nm (said by the file)"
    elif values.max() < MICROMETRE_LIMIT:
        nm, unit = values * 1e3, f"no unit given: values below {MICROMETRE_LIMIT:g} read as micrometres, converted to nm"
    else:
        nm, unit = values, "no unit given: read as nm"
    note = f"wavelengths from {path.name} ({how}; {unit})"
    return nm, note


def _wavelength_column(header: list[str], table: np.ndarray, path: Path) -> int:
    """Which column holds the wavelengths: the one the header names; else the only one; else the
    second of (band index, wavelength)."""
    n = table.shape[1]
    if n == 1:
        return 0
    if len(header) == n:
        named = [i for i, name in enumerate(header) if _WAVE_COLUMN.search(name)]
        if len(named) == 1:
            return named[0]
    if n == 2:
        first = table[:, 0]
        if np.all(first == np.round(first)) and np.all(np.diff(first) > 0):
            return 1
        raise CubeError(path, "has two columns but the first is not a band index (whole numbers counting up); "
                              "name the wavelength column in a header line (e.g. 'band,wavelength')")
    raise CubeError(path, f"has {n} columns; name the wavelength column in a header line (e.g. "
                          f"'band,wavelength,fwhm') or keep one value per line")


def attach_wavelengths(cube, path: str | Path, parsed: tuple[np.ndarray, str] | None = None):
    """``cube`` with the wavelengths of the side file ``path`` (the cube is changed in place and
    returned); its warnings say where they came from, and which list they replace. ``parsed``: what
    :func:`read_wavelength_file` returned for ``path`` (the count is checked here)."""
    nm, note = parsed if parsed is not None else read_wavelength_file(path, cube.bands)
    if nm.size != cube.bands:
        raise CubeError(Path(path).expanduser(), f"holds {nm.size} wavelengths but {cube.source_path or cube.name} "
                                                 f"has {cube.bands} bands")
    warnings = cube.metadata.setdefault("warnings", [])
    if cube.wavelengths_nm is not None:
        note += f"; they replace the file's own ({cube.wavelengths_nm[0]:.1f}-{cube.wavelengths_nm[-1]:.1f} nm)"
    cube.wavelengths_nm = nm
    cube.metadata["wavelengths_file"] = str(Path(path).expanduser())
    warnings.append(note)
    return cube

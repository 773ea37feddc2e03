"""Spectral response functions (SRFs): load tables, resample them onto a cube's bands.

An SRF table gives, for each output band m (a camera channel or a satellite band), a relative
response r_m(lambda) sampled at wavelengths in nanometres. Applied to a cube with band centres
lambda_1..lambda_B it becomes a (M, B) float32 matrix whose row m holds the weight of each cube
band in output band m; every row sums to 1 (protocols.md), so a cube of ones maps to ones.

Resampling integrates the piecewise-linear response over each cube band's interval (half-way to
the neighbouring band centres), because a 1 nm satellite table sampled only at 10 nm band centres
would miss most of a narrow band. When the cube's wavelengths are exactly the table's grid (the
Nikon D700 matrix P on CAVE's 400:10:700 nm) the table values are used as they are.

Built-in tables live in ``resources/srf`` (each keeps a ``#`` header naming its source):

- ``nikon_d700``: the 3x31 matrix P of the CAVE fusion literature (MHF-Net, MulSR, MoG-DCN);
  the default for CAVE-like 400-700 nm cubes.
- ``nikon_d700_camspec``, ``nikon_d700_spfnet``: measured Nikon D700 sensitivities.
- ``worldview2``, ``worldview3``, ``quickbird2``, ``sentinel2a``, ``landsat8``: satellite
  multispectral responses (GRASS i.atcorr tables); panchromatic bands are left out unless asked.

Nothing here imports Qt or torch.
"""
from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.core.errors import HsiError

from app.core.paths import SRF_DIR  # re-exported: color.py and tests read srf.SRF_DIR

#: CAVE band centres: 400..700 nm in 10 nm steps (31 bands).
CAVE_WAVELENGTHS_NM = np.arange(400.0, 701.0, 10.0)

DEFAULT_CAVE_SRF = "nikon_d700"


class SrfError(HsiError):
    """An SRF cannot be loaded, is malformed, or does not fit the cube it is applied to."""


class UnknownSrfError(SrfError):
    """The name is neither a built-in SRF nor an existing file."""


class SrfRangeError(SrfError):
    """The SRF's bands do not overlap the cube's wavelength range (enough)."""


@dataclass(frozen=True)
class _BuiltIn:
    filename: str
    label: str
    excluded_by_default: tuple[str, ...] = ()


_BUILT_INS: dict[str, _BuiltIn] = {
    "nikon_d700": _BuiltIn("nikon_d700_P_cave_fusion_3x31.csv",
                           "Nikon D700 P, 3x31 on 400:10:700 nm (CAVE fusion convention; default for CAVE)"),
    "nikon_d700_camspec": _BuiltIn("nikon_d700_camspec_jiang2013_10nm.csv",
                                   "Nikon D700 measured, 400:10:720 nm (Jiang et al. 2013 camspec)"),
    "nikon_d700_spfnet": _BuiltIn("nikon_d700_spfnet_1nm.csv", "Nikon D700, 377-948 nm at 1 nm (SpfNet)"),
    "worldview2": _BuiltIn("worldview2.csv", "WorldView-2 multispectral (8 bands; Pan on request)",
                           ("Panchromatic",)),
    "worldview3": _BuiltIn("worldview3.csv", "WorldView-3 VNIR + SWIR (16 bands; Pan on request)", ("Pan",)),
    "quickbird2": _BuiltIn("quickbird2.csv", "QuickBird-2 multispectral (4 bands; pan on request)", ("pan",)),
    "sentinel2a": _BuiltIn("sentinel_2A_msi.csv", "Sentinel-2A MSI (13 bands)"),
    "landsat8": _BuiltIn("landsat_8.csv", "Landsat-8 OLI (8 bands; Pan on request)", ("Pan",)),
}

_ALIASES = {
    "nikon": "nikon_d700", "d700": "nikon_d700", "p": "nikon_d700", "nikon_d700_p": "nikon_d700",
    "wv2": "worldview2", "wv3": "worldview3", "qb2": "quickbird2", "quickbird": "quickbird2",
    "s2a": "sentinel2a", "sentinel2": "sentinel2a", "sentinel_2a": "sentinel2a", "sentinel_2a_msi": "sentinel2a",
    "l8": "landsat8", "landsat_8": "landsat8", "landsat": "landsat8",
    "nikon_d700_p_cave_fusion_3x31": "nikon_d700", "nikon_d700_camspec_jiang2013_10nm": "nikon_d700_camspec",
    "nikon_d700_spfnet_1nm": "nikon_d700_spfnet",
}


@dataclass(frozen=True, eq=False)
class SpectralResponse:
    """An SRF table as loaded.

    Attributes:
        name: built-in key, file stem or "matrix".
        source: the table's ``#`` header lines (where the numbers come from).
        table_wavelengths_nm: (K,) float64, strictly increasing, nm. Empty for a bare matrix.
        responses: (M, K) float64 relative responses, >= 0 (negative table values are clipped).
        band_names: M names.
        default_bands: names used when the caller does not choose (panchromatic bands left out).
    """

    name: str
    source: str
    table_wavelengths_nm: np.ndarray
    responses: np.ndarray
    band_names: tuple[str, ...]
    default_bands: tuple[str, ...]

    @property
    def centres_nm(self) -> np.ndarray:
        """(M,) response-weighted mean wavelength of each band over the whole table, nm."""
        wl = self.table_wavelengths_nm
        area = np.trapezoid(self.responses, wl, axis=1)
        first = np.trapezoid(self.responses * wl[None, :], wl, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(area > 0, first / np.where(area > 0, area, 1.0), np.nan)

    @property
    def range_nm(self) -> tuple[float, float]:
        """(first, last) wavelength where any band responds, nm."""
        wl = self.table_wavelengths_nm
        nonzero = np.flatnonzero(self.responses.max(axis=0) > 0)
        return float(wl[nonzero[0]]), float(wl[nonzero[-1]])


@dataclass(frozen=True, eq=False)
class ResampledSrf:
    """An SRF resampled onto one cube's bands.

    Attributes:
        name: the SRF's name.
        band_names: M names (the kept bands, in table order).
        matrix: (M, B) float32, rows sum to 1.
        centres_nm: (M,) effective centre of each row on the cube, sum_b matrix[m, b] * lambda_b, nm
            (None for a bare matrix applied without wavelengths).
        coverage: (M,) fraction of each band's response inside the cube's spectral range (1.0 = all).
        dropped: names of bands left out because the cube does not cover them.
        wavelengths_nm: (B,) the cube's band centres it was resampled onto (None for a bare matrix).
    """

    name: str
    band_names: tuple[str, ...]
    matrix: np.ndarray
    centres_nm: np.ndarray | None
    coverage: np.ndarray
    dropped: tuple[str, ...]
    wavelengths_nm: np.ndarray | None


# ---------------------------------------------------------------------------------- loading
def available_srfs() -> dict[str, str]:
    """Built-in SRF names -> one-line description (the GUI lists these; CLI ``--srf`` takes them)."""
    return {name: b.label for name, b in _BUILT_INS.items()}


def _canonical_name(name: str) -> str | None:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _BUILT_INS:
        return key
    return _ALIASES.get(key)


def _parse_number(text: str, where: str) -> float:
    text = text.strip()
    if text == "":
        return 0.0  # GRASS tables leave a band's cells empty outside its range
    try:
        return float(text)
    except ValueError:
        raise SrfError(f"{where}: '{text}' is not a number") from None


def parse_srf_csv(text: str, *, name: str = "user", origin: str = "<text>") -> SpectralResponse:
    """Parse an SRF table: ``#`` comment lines (the source), an optional header row, then rows of
    ``wavelength, response_band1, response_band2, ...``. Wavelengths in nm (values below 30 are
    taken as micrometres and converted). Empty cells read as 0; negative responses are clipped to 0.
    """
    comments: list[str] = []
    rows: list[list[str]] = []
    for line in io.StringIO(text):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        rows.extend(csv.reader([stripped]))
    if not rows:
        raise SrfError(f"{origin}: no table rows found")
    header: list[str] | None = None
    try:
        float(rows[0][0])
        [float(c) for c in rows[0][1:] if c.strip()]
    except ValueError:
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    if len(rows) < 2:
        raise SrfError(f"{origin}: an SRF table needs at least 2 wavelength rows, found {len(rows)}")
    n_cols = max(len(r) for r in rows)
    if n_cols < 2:
        raise SrfError(f"{origin}: an SRF table needs a wavelength column and at least one band column")
    values = np.zeros((len(rows), n_cols), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            values[i, j] = _parse_number(cell, f"{origin} row {i + 1 + (header is not None)}")
    if not np.isfinite(values).all():
        raise SrfError(f"{origin}: the table holds NaN or Inf values")
    wl = values[:, 0]
    if wl.max() < 30.0:  # micrometres: no optical SRF lies below 30 nm
        wl = wl * 1000.0
        comments.append("(wavelengths given in micrometres, converted to nm)")
    order = np.argsort(wl, kind="stable")
    wl = wl[order]
    if np.any(np.diff(wl) <= 0):
        raise SrfError(f"{origin}: wavelengths must be distinct (found a repeated wavelength)")
    responses = np.clip(values[order, 1:].T, 0.0, None)
    n_bands = responses.shape[0]
    if header is not None and len(header) >= n_cols:
        names = tuple(h or f"band {k + 1}" for k, h in enumerate(header[1:n_cols]))
    else:
        names = tuple(f"band {k + 1}" for k in range(n_bands))
    empty = [names[m] for m in range(n_bands) if not responses[m].any()]
    if empty:
        raise SrfError(f"{origin}: band(s) {', '.join(empty)} have no positive response")
    return SpectralResponse(name=name, source=" ".join(comments), table_wavelengths_nm=wl,
                            responses=responses, band_names=names, default_bands=names)


@functools.lru_cache(maxsize=None)
def _load_built_in(key: str) -> SpectralResponse:
    entry = _BUILT_INS[key]
    path = SRF_DIR / entry.filename
    if not path.is_file():
        raise SrfError(f"{path}: built-in SRF table is missing from the installation")
    srf = parse_srf_csv(path.read_text(encoding="utf-8"), name=key, origin=str(path))
    # Sentinel's column names carry the sheet's prefix ("S2A_SR_AV_B8A"); the band is "B8A".
    names = tuple(n.replace("S2A_SR_AV_", "") for n in srf.band_names)
    default = tuple(n for n in names if n not in entry.excluded_by_default)
    return SpectralResponse(name=key, source=srf.source, table_wavelengths_nm=srf.table_wavelengths_nm,
                            responses=srf.responses, band_names=names, default_bands=default)


def load_srf(name_or_path: str | Path | SpectralResponse) -> SpectralResponse:
    """A built-in SRF by name (see ``available_srfs``; file stems and short aliases such as "wv3"
    work too) or a user CSV file. Raises UnknownSrfError / SrfError with the reason."""
    if isinstance(name_or_path, SpectralResponse):
        return name_or_path
    if isinstance(name_or_path, str):
        key = _canonical_name(name_or_path)
        if key is not None:
            return _load_built_in(key)
    path = Path(name_or_path)
    if not path.is_file():
        raise UnknownSrfError(
            f"unknown SRF '{name_or_path}': not a built-in ({', '.join(_BUILT_INS)}) and no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SrfError(f"{path}: cannot read the SRF table ({exc})") from None
    return parse_srf_csv(text, name=path.stem, origin=str(path))


# ---------------------------------------------------------------------------------- resampling
def band_edges_nm(wavelengths_nm: np.ndarray) -> np.ndarray:
    """(B+1,) interval edges of bands centred at ``wavelengths_nm`` (B,), ascending order: half-way
    between neighbouring centres, the outer edges mirrored. A single band gets +-5 nm."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if wl.size == 1:
        return np.array([wl[0] - 5.0, wl[0] + 5.0])
    mid = 0.5 * (wl[1:] + wl[:-1])
    return np.concatenate([[wl[0] - (mid[0] - wl[0])], mid, [wl[-1] + (wl[-1] - mid[-1])]])


def _cumulative_integral(table_wl: np.ndarray, responses: np.ndarray, at_nm: np.ndarray) -> np.ndarray:
    """Exact integral of the piecewise-linear responses (M, K) from -inf to each of ``at_nm`` (E,):
    returns (M, E). Zero outside the table."""
    seg = np.diff(table_wl)
    cum = np.concatenate([np.zeros((responses.shape[0], 1)),
                          np.cumsum(0.5 * (responses[:, 1:] + responses[:, :-1]) * seg, axis=1)], axis=1)
    x = np.clip(at_nm, table_wl[0], table_wl[-1])
    j = np.clip(np.searchsorted(table_wl, x, side="right") - 1, 0, table_wl.size - 2)
    t = x - table_wl[j]
    r0, r1 = responses[:, j], responses[:, j + 1]
    slope = (r1 - r0) / seg[j]
    return cum[:, j] + r0 * t + 0.5 * slope * t * t


def _validate_wavelengths(wavelengths_nm) -> np.ndarray:
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    if wl.size == 0 or not np.isfinite(wl).all():
        raise SrfError("the cube's wavelength list is empty or holds NaN/Inf")
    if wl.size > 1 and len(np.unique(wl)) != wl.size:
        raise SrfError("the cube's wavelength list holds repeated values")
    return wl


def _resample_table(srf: SpectralResponse, wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band-integrated weights (M, B) (not yet normalised) and coverage (M,) for wavelengths ``wl``."""
    table_wl, resp = srf.table_wavelengths_nm, srf.responses
    total = _cumulative_integral(table_wl, resp, np.array([table_wl[-1]]))[:, 0]
    if wl.size == table_wl.size and np.allclose(wl, table_wl, atol=1e-6, rtol=0):
        # The table is already defined on the cube's bands (P on CAVE): keep its values exactly.
        return resp.copy(), np.ones(resp.shape[0])
    order = np.argsort(wl)
    edges = band_edges_nm(wl[order])
    cum = _cumulative_integral(table_wl, resp, edges)
    weights_sorted = np.diff(cum, axis=1)
    weights = np.empty_like(weights_sorted)
    weights[:, order] = weights_sorted
    coverage = (cum[:, -1] - cum[:, 0]) / total
    return np.clip(weights, 0.0, None), coverage


def resample_srf(srf, wavelengths_nm=None, *, bands: Sequence[str] | None = None,
                 min_coverage: float = 0.9, n_bands: int | None = None) -> ResampledSrf:
    """Resample an SRF onto a cube's bands.

    Args:
        srf: built-in name, CSV path, SpectralResponse, ResampledSrf (returned as is), or a bare
            (M, B) matrix (numpy/torch) whose columns already are the cube's bands (rows are normalised; a (B, M) matrix is transposed
            when unambiguous).
        wavelengths_nm: (B,) the cube's band centres, nm. Required for tables; optional for matrices.
        bands: names of the SRF bands to keep (default: the table's default bands that the cube covers).
        min_coverage: a band counts as covered when at least this fraction of its response lies
            within the cube's spectral range.
        n_bands: the cube's band count, to check a bare matrix against when there are no wavelengths.

    Returns:
        ResampledSrf with a (M, B) float32 matrix whose rows sum to 1.

    Raises:
        SrfRangeError: no band (or an explicitly requested band) overlaps the cube's range.
        SrfError: malformed input.
    """
    if isinstance(srf, ResampledSrf):
        if wavelengths_nm is not None and srf.wavelengths_nm is not None and not np.allclose(
                np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1), srf.wavelengths_nm, atol=1e-6):
            raise SrfError(f"SRF '{srf.name}' was resampled onto other wavelengths than this cube's")
        if n_bands is not None and srf.matrix.shape[1] != n_bands:
            raise SrfError(f"SRF '{srf.name}' has {srf.matrix.shape[1]} columns but the cube has {n_bands} bands")
        return srf
    if not isinstance(srf, (str, Path, SpectralResponse)):
        return _matrix_srf(srf, wavelengths_nm, n_bands)
    table = load_srf(srf)
    if wavelengths_nm is None:
        raise SrfError(f"SRF '{table.name}' is a table over wavelengths: the cube's wavelengths are needed "
                       "to apply it")
    wl = _validate_wavelengths(wavelengths_nm)
    if n_bands is not None and wl.size != n_bands:
        raise SrfError(f"the cube has {n_bands} bands but {wl.size} wavelengths")
    weights, coverage = _resample_table(table, wl)
    covered = coverage >= min_coverage
    names = table.band_names
    if bands is not None:
        wanted = list(bands)
        unknown = [b for b in wanted if b not in names]
        if unknown:
            raise SrfError(f"SRF '{table.name}' has no band(s) {', '.join(unknown)} (bands: {', '.join(names)})")
        idx = [names.index(b) for b in wanted]
        short = [names[i] for i in idx if not covered[i]]
        if short:
            raise SrfRangeError(_range_message(table, wl, short, coverage, min_coverage))
    else:
        idx = [i for i, n in enumerate(names) if n in table.default_bands and covered[i]]
        if not idx:
            raise SrfRangeError(_range_message(table, wl, list(table.default_bands), coverage, min_coverage))
    dropped = tuple(n for i, n in enumerate(names) if n in table.default_bands and i not in idx) \
        if bands is None else ()
    matrix = weights[idx]
    sums = matrix.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise SrfRangeError(_range_message(table, wl, [names[i] for i, s in zip(idx, sums[:, 0]) if s <= 0],
                                           coverage, min_coverage))
    matrix = (matrix / sums).astype(np.float32)
    centres = (matrix.astype(np.float64) * wl[None, :]).sum(axis=1)
    return ResampledSrf(name=table.name, band_names=tuple(names[i] for i in idx), matrix=matrix,
                        centres_nm=centres, coverage=coverage[idx], dropped=dropped, wavelengths_nm=wl)


def _range_message(table: SpectralResponse, wl: np.ndarray, bands: list[str], coverage: np.ndarray,
                   min_coverage: float) -> str:
    lo, hi = table.range_nm
    detail = ", ".join(f"{b} ({100 * coverage[table.band_names.index(b)]:.0f}%)" for b in bands)
    return (f"SRF '{table.name}' ({lo:.0f}-{hi:.0f} nm) does not overlap the cube's {wl.min():.0f}-{wl.max():.0f} nm "
            f"range enough: {detail} of the response inside (need {100 * min_coverage:.0f}%). "
            "Choose another SRF or the bands it covers.")


def _matrix_srf(matrix, wavelengths_nm, n_bands: int | None) -> ResampledSrf:
    try:
        import torch  # optional: accept tensors without making this module depend on torch
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise SrfError(f"an SRF matrix must be 2-D (M, B), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise SrfError("the SRF matrix holds NaN or Inf values")
    wl = _validate_wavelengths(wavelengths_nm) if wavelengths_nm is not None else None
    b = wl.size if wl is not None else n_bands
    if b is not None and m.shape[1] != b:
        if m.shape[0] == b:
            m = m.T  # given as (B, M), e.g. the 31x3 R of MHF-Net
        else:
            raise SrfError(f"the SRF matrix has shape {m.shape} but the cube has {b} bands")
    if np.any(m < 0):
        raise SrfError("the SRF matrix holds negative weights")
    sums = m.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise SrfError("a row of the SRF matrix is all zeros")
    out = (m / sums).astype(np.float32)
    centres = (out.astype(np.float64) * wl[None, :]).sum(axis=1) if wl is not None else None
    return ResampledSrf(name="matrix", band_names=tuple(f"band {k + 1}" for k in range(out.shape[0])),
                        matrix=out, centres_nm=centres, coverage=np.ones(out.shape[0]), dropped=(),
                        wavelengths_nm=wl)


def srf_matrix(srf, wavelengths_nm=None, *, bands: Sequence[str] | None = None,
               min_coverage: float = 0.9, n_bands: int | None = None) -> np.ndarray:
    """(M, B) float32 SRF matrix for a cube with band centres ``wavelengths_nm`` (B,) nm; every row
    sums to 1. ``srf`` is a built-in name, a CSV path, a SpectralResponse or a bare matrix.
    See ``resample_srf`` for the arguments and errors."""
    return resample_srf(srf, wavelengths_nm, bands=bands, min_coverage=min_coverage, n_bands=n_bands).matrix


def band_names(srf, wavelengths_nm=None, **kwargs) -> tuple[str, ...]:
    """Names of the rows of ``srf_matrix(srf, wavelengths_nm, **kwargs)``."""
    return resample_srf(srf, wavelengths_nm, **kwargs).band_names


def band_centres_nm(srf, wavelengths_nm=None, **kwargs) -> np.ndarray:
    """(M,) effective centre wavelength (nm) of each row of ``srf_matrix(srf, wavelengths_nm)``:
    where the viewer draws the guide's bands on a spectrum plot."""
    res = resample_srf(srf, wavelengths_nm, **kwargs)
    if res.centres_nm is None:
        raise SrfError("a bare SRF matrix has no band centres without the cube's wavelengths")
    return res.centres_nm


def default_srf_name(wavelengths_nm) -> str:
    """The SRF to use when the user names none: Nikon D700 P for visible (CAVE-like) cubes, else
    WorldView-3 (the remote-sensing fusion convention, e.g. Pavia/Chikusei). Raises SrfRangeError
    when neither covers the cube."""
    wl = _validate_wavelengths(wavelengths_nm)
    if wl.min() >= 380.0 and wl.max() <= 730.0:
        return DEFAULT_CAVE_SRF
    resample_srf("worldview3", wl)  # raises with the reason when it does not fit
    return "worldview3"


def srf_for_cube(srf, wavelengths_nm, bands: int, notes: list[str] | None = None, *,
                 srf_bands: Sequence[str] | None = None, no_wavelengths: Exception | None = None) -> ResampledSrf:
    """The SRF to apply to a cube of ``bands`` bands: ``srf`` (a built-in name, CSV, SpectralResponse,
    ResampledSrf or bare matrix) or, when None, the default for the cube's wavelengths
    (:func:`default_srf_name`). The one place that knows the fallback every caller shares: a cube
    without wavelengths whose band count is CAVE's (31) is taken as 400-700 nm in 10 nm steps, said
    in ``notes``; other cubes without wavelengths need a bare matrix.

    Raises SrfError saying what is missing (``no_wavelengths`` instead, when given, for a cube without
    wavelengths that the fallback does not cover)."""
    is_matrix = srf is not None and not isinstance(srf, (str, Path, SpectralResponse, ResampledSrf))
    wl = None if wavelengths_nm is None else np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    if isinstance(srf, ResampledSrf) and wl is None:
        wl = srf.wavelengths_nm
    if wl is None and not is_matrix and not isinstance(srf, ResampledSrf):
        if bands != CAVE_WAVELENGTHS_NM.size:
            if no_wavelengths is not None:
                raise no_wavelengths
            raise SrfError(f"the cube has {bands} bands and no wavelengths: an SRF table cannot be placed on its "
                           f"bands (give the wavelengths, or the SRF as a bands-wide matrix)")
        wl = CAVE_WAVELENGTHS_NM
        if notes is not None:
            notes.append("no wavelengths given: assumed CAVE bands 400:10:700 nm")
    spec = srf if srf is not None else default_srf_name(wl)
    return resample_srf(spec, wl, bands=srf_bands, n_bands=bands)

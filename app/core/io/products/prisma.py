"""PRISMA L1 / L2B / L2C / L2D products (HDF-EOS5 ``.he5``), VNIR and SWIR merged on wavelength.

Layout (PRISMA Products Specification): the cubes are ``HDFEOS/SWATHS/PRS_<level>_HCO/Data
Fields/VNIR_Cube`` and ``SWIR_Cube``, uint16, stored (lines, bands, samples): the band axis in the
middle. The file's root attributes give the band centres ``List_Cw_Vnir`` / ``List_Cw_Swir``
(nm), the widths ``List_Fwhm_Vnir`` / ``List_Fwhm_Swir`` and the flags ``List_Cw_Vnir_Flags`` /
``List_Cw_Swir_Flags`` (0: the band is not used; its centre is 0). The error matrices beside the
cubes (``VNIR_PIXEL_L2_ERR_MATRIX`` ...) have the same shape and are never read as the cube.

Values, as the specification states them:

- L2 (B: at-surface radiance, C/D: reflectance): value = ``L2Scale<Part>Min`` + DN x
  (``L2Scale<Part>Max`` - ``L2Scale<Part>Min``) / 65535, with <Part> Vnir or Swir; L2C/L2D
  reflectance is then taken as it is (stated); without these attributes L2C/L2D is read as
  reflectance x 10000 (a convention, said in a warning);
- L1 (at-sensor radiance): value = DN / ``ScaleFactor_<Part>`` - ``Offset_<Part>``.

Radiance (L1, L2B) is then divided by its maximum (the literature's rule for real scenes).

Merging: flagged bands (flag 0, or a centre of 0 without flags) are dropped; the remaining VNIR
and SWIR bands are sorted by wavelength together (PRISMA stores them from long to short), so the
bands of the VNIR/SWIR overlap (about 920-980 nm) are all kept, interleaved; a note says how many.
The merged cube stays lazy: each read takes the bands it needs from the two datasets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.cube import Cube
from app.core.errors import CubeError, NoCubeError
from app.core.io._common import ReadOptions, honour_nonfinite, sample_values
from app.core.io.value_range import ValueRange, decide, product_convention

PARTS = ("Vnir", "Swir")


def _swaths(handle) -> list[str]:
    import h5py

    group = handle.get("HDFEOS/SWATHS")
    if not isinstance(group, h5py.Group):
        return []
    return [name for name in group if name.upper().startswith("PRS_")]


def _cube_swath(handle) -> str | None:
    """The swath that holds the hyperspectral cubes (PRS_L1_HCO, PRS_L2D_HCO, ...)."""
    for name in _swaths(handle):
        fields = handle.get(f"HDFEOS/SWATHS/{name}/Data Fields")
        if fields is not None and any(f"{p.upper()}_Cube" in fields for p in PARTS):
            return name
    return None


def is_prisma(handle) -> bool:
    return _cube_swath(handle) is not None


def _attr(handle, key: str):
    if key not in handle.attrs:
        return None
    value = handle.attrs[key]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _vector(handle, key: str, n: int, path: Path) -> np.ndarray | None:
    value = _attr(handle, key)
    if value is None:
        return None
    try:
        vec = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CubeError(path, f"attribute {key} is not a list of numbers") from None
    if vec.size != n:
        raise CubeError(path, f"attribute {key} lists {vec.size} values for {n} bands")
    return vec


def _level(handle, swath: str) -> str:
    """'1', '2B', '2C' or '2D' from the swath's name (PRS_L2D_HCO), else Processing_Level."""
    name = swath.upper()
    if name.startswith("PRS_L1"):
        return "1"
    if name.startswith("PRS_L2") and len(name) > 6:
        return "2" + name[6]
    return str(_attr(handle, "Processing_Level") or "?").upper()


class MergedBands:
    """(lines, bands, samples) float32 physical values of the kept VNIR and SWIR bands in
    wavelength order, read lazily: ``parts`` are (dataset, stored band indices, gain, offset) and
    ``order`` the (part, position) of each merged band."""

    def __init__(self, parts, order, path: Path):
        self.parts = parts
        self.order = order
        self.path = path
        lines, _, samples = parts[0][0].shape
        self.shape = (int(lines), len(order), int(samples))
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values if dtype is None else values.astype(dtype, copy=False)

    def __getitem__(self, index):
        if index is Ellipsis:
            index = ()
        if not isinstance(index, tuple):
            index = (index,)
        index = tuple(index) + (slice(None),) * (3 - len(index))
        rows, bands, cols = index
        wanted = np.arange(self.shape[1])[bands]
        single = np.ndim(wanted) == 0
        wanted = np.atleast_1d(wanted)
        out = None
        for p, (ds, stored, gain, offset) in enumerate(self.parts):
            mine = [(i, int(stored[self.order[b][1]])) for i, b in enumerate(wanted) if self.order[b][0] == p]
            if not mine:
                continue
            picks = sorted({s for _, s in mine})
            try:
                block = np.asarray(ds[rows, picks, cols], dtype=np.float32)
            except OSError as exc:
                raise CubeError(self.path, f"the data of {ds.name} cannot be read ({' '.join(str(exc).split())}); "
                                           f"the file is truncated or damaged") from None
            block = block * np.float32(gain) + np.float32(offset)
            band_axis = block.ndim - 1 - (0 if isinstance(cols, (int, np.integer)) else 1)
            if out is None:
                shape = list(block.shape)
                shape[band_axis] = len(wanted)
                out = np.empty(shape, dtype=np.float32)
            where = [slice(None)] * block.ndim
            for i, s in mine:
                where[band_axis] = i
                src = [slice(None)] * block.ndim
                src[band_axis] = picks.index(s)
                out[tuple(where)] = block[tuple(src)]
        if single:
            out = np.take(out, 0, axis=out.ndim - 1 - (0 if isinstance(cols, (int, np.integer)) else 1))
        return out


def read(path: Path, options: ReadOptions) -> Cube:
    from app.core.io.containers import read_h5_cube

    return read_h5_cube(Path(path), options, _read)


def _read(handle, path: Path, options: ReadOptions) -> Cube:
    swath = _cube_swath(handle)
    if swath is None:
        raise NoCubeError(path, "no PRISMA VNIR_Cube / SWIR_Cube under HDFEOS/SWATHS/PRS_*/Data Fields")
    if options.var or options.layout:
        raise CubeError(path, "a PRISMA product is read as its merged VNIR + SWIR cube: --var and --layout do "
                              "not apply (open it with fmt='hdf5' to read one dataset as it is stored)")
    level = _level(handle, swath)
    fields = handle[f"HDFEOS/SWATHS/{swath}/Data Fields"]
    warnings: list[str] = []
    parts, entries, notes, part_names = [], [], [], []
    shape = None
    for part in PARTS:
        name = f"{part.upper()}_Cube"
        if name not in fields:
            continue
        ds = fields[name]
        if ds.ndim != 3:
            raise NoCubeError(path, f"{swath}/{name} has shape {ds.shape}; expected (lines, bands, samples)")
        if shape is not None and (ds.shape[0], ds.shape[2]) != shape:
            raise CubeError(path, f"{name} is {ds.shape[0]}x{ds.shape[2]} pixels but VNIR_Cube is {shape[0]}x{shape[1]}")
        shape = (ds.shape[0], ds.shape[2])
        n = ds.shape[1]
        cw = _vector(handle, f"List_Cw_{part}", n, path)
        if cw is None:
            raise CubeError(path, f"attribute List_Cw_{part} (the {part.upper()} band centres) is missing")
        fwhm = _vector(handle, f"List_Fwhm_{part}", n, path)
        flags = _vector(handle, f"List_Cw_{part}_Flags", n, path)
        keep = (flags != 0) if flags is not None else np.ones(n, dtype=bool)
        keep &= cw > 0
        gain, offset, rule_part = _calibration(handle, part, level, path, warnings)
        stored = np.flatnonzero(keep)
        p = len(parts)
        parts.append((ds, stored, gain, offset))
        part_names.append(part.upper())
        for pos, s in enumerate(stored):
            entries.append((float(cw[s]), p, pos, None if fwhm is None else float(fwhm[s])))
        notes.append(f"{part.upper()} {stored.size} of {n} bands kept" + (f" ({n - stored.size} flagged, dropped)"
                                                                          if stored.size < n else "") + rule_part)
    if not entries:
        raise NoCubeError(path, "every PRISMA band is flagged as not used")
    entries.sort(key=lambda e: (e[0], e[1]))  # by wavelength; VNIR first on a tie
    order = [(e[1], e[2]) for e in entries]
    wavelengths = np.asarray([e[0] for e in entries])
    fwhm = None if any(e[3] is None for e in entries) else np.asarray([e[3] for e in entries])
    overlap = ""
    if len(parts) == 2:
        v = wavelengths[np.asarray([o[0] == 0 for o in order])]
        s = wavelengths[np.asarray([o[0] == 1 for o in order])]
        if v.size and s.size and v.max() >= s.min():
            inside = int(np.count_nonzero((wavelengths >= s.min()) & (wavelengths <= v.max())))
            overlap = (f"; VNIR and SWIR overlap at {s.min():.1f}-{v.max():.1f} nm: all {inside} bands there kept, "
                       f"sorted by wavelength")
    warnings.insert(0, f"PRISMA L{level} ({swath}): {'; '.join(notes)}; merged by wavelength{overlap}")
    stated = convention = None
    reflectance = level in ("2C", "2D")
    if reflectance and all(p[2] is not None for p in parts):
        stated = ValueRange(1.0, 0.0, "stated", "PRISMA L2 reflectance: L2ScaleMin + DN x (L2ScaleMax - "
                                                "L2ScaleMin) / 65535, per VNIR / SWIR (the file's attributes)")
    elif reflectance:
        convention = product_convention("PRISMA L2", evidence="the product level, without L2Scale attributes")
        warnings.append("ASSUMPTION: the L2Scale*Min/Max attributes are missing: DN read as reflectance x 10000 "
                        "(--normalise overrides)")
        parts = [(ds, stored, 1.0, 0.0) for ds, stored, _, _ in parts]
    raw = MergedBands([(ds, stored, 1.0 if g is None else g, 0.0 if o is None else o) for ds, stored, g, o in parts],
                      order, path)
    raw = honour_nonfinite(raw, path, options, warnings, lazy=True)
    try:
        sample = sample_values(raw)
        sample = sample[np.isfinite(sample)]
        chosen = decide(np.float32, max_of=lambda: _physical_max(raw), stated=stated, convention=convention,
                        user=options.normalise, sample_max=float(sample.max()) if sample.size else 0.0)
    except ValueError as exc:
        raise ValueError(f"--normalise: {exc}") from None
    warnings.extend(chosen.warnings)
    return Cube(raw=raw, axes=(0, 2, 1), scale=chosen.multiplier, offset=chosen.offset, wavelengths_nm=wavelengths,
                fwhm_nm=fwhm, name=path.stem, source_path=path, normalisation=chosen.text,
                nonfinite_nodata=options.nonfinite == "mask",
                metadata={"format": "prisma", "product_level": f"L{level}", "swath": swath, "layout": "HBW",
                          "warnings": warnings, "value_rule": chosen.rule,
                          "band_source": [part_names[p] for p, _ in order]})


def _calibration(handle, part: str, level: str, path: Path, warnings: list[str]):
    """(gain, offset, words): physical value = DN x gain + offset for one part; gain None when the
    file states nothing."""
    if level.startswith("2"):
        lo, hi = _attr(handle, f"L2Scale{part}Min"), _attr(handle, f"L2Scale{part}Max")
        if lo is None or hi is None:
            return None, None, ""
        lo, hi = float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise CubeError(path, f"attributes L2Scale{part}Min/Max ({lo:g}, {hi:g}) do not give a range")
        return (hi - lo) / 65535.0, lo, f", value = {lo:g} + DN x ({hi:g} - {lo:g}) / 65535"
    factor, offset = _attr(handle, f"ScaleFactor_{part}"), _attr(handle, f"Offset_{part}")
    if factor is None:
        warnings.append(f"attribute ScaleFactor_{part} is missing: {part.upper()} DN read as they are")
        return 1.0, 0.0, ""
    factor = float(np.asarray(factor).reshape(-1)[0])
    offset = 0.0 if offset is None else float(np.asarray(offset).reshape(-1)[0])
    if not (np.isfinite(factor) and factor > 0 and np.isfinite(offset)):
        raise CubeError(path, f"attributes ScaleFactor_{part} / Offset_{part} ({factor:g}, {offset:g}) are not usable")
    return 1.0 / factor, -offset, f", radiance = DN / {factor:g} - {offset:g}"


def _physical_max(raw: MergedBands) -> float:
    """The largest physical value: per part the stored maximum of its kept bands x gain + offset."""
    best = -np.inf
    for ds, stored, gain, offset in raw.parts:
        bands = [int(s) for s in stored]
        top = -np.inf
        step = max(1, int((64 << 20) // max(1, ds.shape[2] * len(bands) * 2)))
        for start in range(0, ds.shape[0], step):
            block = np.asarray(ds[start:start + step, bands, :])
            if block.size:
                top = max(top, float(block.max()))
        if np.isfinite(top):
            best = max(best, top * gain + offset)
    return best if np.isfinite(best) else 0.0

"""EMIT L2A reflectance / L1B radiance (NetCDF4, read with h5py: NetCDF4 files are HDF5).

Layout: the root variable ``reflectance`` (or ``radiance``), (downtrack, crosstrack, bands) =
(H, W, B), float32 with ``_FillValue`` -9999 (no-data: the pixel is left out of the metrics) and,
when present, ``scale_factor`` / ``add_offset`` (stated); the group ``sensor_band_parameters``
holds ``wavelengths`` (nm; the ``units`` attribute is honoured), ``fwhm`` and
``good_wavelengths`` (0: a bad band). Recognised from that group and variable, not the name.
The netCDF4 library is not needed; NetCDF classic files (CDF-1/2/5, not HDF5) are not readable
here (``sniff`` says how to convert them).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from app.core.cube import Cube
from app.core.errors import CubeError, NoCubeError
from app.core.io._common import ReadOptions, wavelengths_to_nm

VARIABLES = ("reflectance", "radiance")
BAND_GROUP = "sensor_band_parameters"


def _cube_variable(handle) -> str | None:
    import h5py

    group = handle.get(BAND_GROUP)
    if not isinstance(group, h5py.Group) or "wavelengths" not in group:
        return None
    for name in VARIABLES:
        ds = handle.get(name)
        if isinstance(ds, h5py.Dataset) and ds.ndim == 3:
            return name
    return None


def is_emit(handle) -> bool:
    return _cube_variable(handle) is not None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def read(path: Path, options: ReadOptions) -> Cube:
    from app.core.io.containers import read_h5_cube

    return read_h5_cube(Path(path), options, _read)


def _read(handle, path: Path, options: ReadOptions) -> Cube:
    from app.core.io import containers

    name = _cube_variable(handle)
    if name is None:
        raise NoCubeError(path, f"no 3-D 'reflectance' or 'radiance' variable with a '{BAND_GROUP}' group")
    variables = containers.list_h5(handle, path, matlab=False)
    var = containers._find(variables, options.var or name, path)
    containers._check_h5_storage(var, path)
    bands_group = handle[BAND_GROUP]
    n = handle[name].shape[2]
    if not options.var:  # the product's own axis order: (downtrack, crosstrack, bands)
        options = dataclasses.replace(options, var=name, layout=options.layout or "HWB")
    cube = containers.cube_from_variable(var, variables, None, options, path, "emit", "C")
    warnings = [w for w in cube.metadata.get("warnings", []) if not w.startswith("wavelengths from variable")]
    if var.name != name:
        return cube  # another variable asked for by --var: read as the plain HDF5 reader does
    if cube.bands != n:
        raise CubeError(path, f"'{name}' read with {cube.bands} bands but {BAND_GROUP} lists {n}; the band axis "
                              f"of a {handle[name].shape} array is the last one (drop --layout)")

    def band_vector(key: str):
        if key not in bands_group:
            return None, None
        ds = bands_group[key]
        vec = np.asarray(ds[...], dtype=np.float64).reshape(-1)
        if vec.size != n:
            warnings.append(f"{BAND_GROUP}/{key} has {vec.size} values for {n} bands: ignored")
            return None, None
        return vec, _text(ds.attrs["units"]) if "units" in ds.attrs else None

    wl, units = band_vector("wavelengths")
    wavelengths, note = wavelengths_to_nm(wl, units or "nm", path)
    if note:
        warnings.append(note)
    fwhm, fwhm_units = band_vector("fwhm")
    if fwhm is not None:
        fwhm, _ = wavelengths_to_nm(fwhm, fwhm_units or units or "nm", path)
    good, _ = band_vector("good_wavelengths")
    bad = None if good is None else good == 0
    title = _text(handle.attrs["title"]) if "title" in handle.attrs else None
    if bad is not None and bad.any():
        warnings.append(f"{int(bad.sum())} bands flagged bad by {BAND_GROUP}/good_wavelengths (left out of the "
                        f"metrics)")
    metadata = {**cube.metadata, "format": "emit", "warnings": warnings, "variable": name}
    if title:
        metadata["product"] = title
    return cube.replace(wavelengths_nm=wavelengths, fwhm_nm=fwhm, bad_bands=bad, name=path.stem, metadata=metadata)

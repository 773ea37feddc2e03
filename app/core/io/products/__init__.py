"""Readers of sensor products (one module each), behind the format registry of :mod:`app.core.io`.

Each product is recognised from its own content and metadata (an XML's root and band table, an
HDF-EOS5 swath name, a NetCDF group), never from the file name alone:

- :mod:`.enmap`: EnMAP L1B/L1C/L2A, a folder or its ``*-SPECTRAL_IMAGE.TIF`` with ``*-METADATA.XML``;
- :mod:`.prisma`: PRISMA L1 / L2B / L2C / L2D ``.he5`` (VNIR + SWIR merged on wavelength);
- :mod:`.emit`: EMIT L2A reflectance / L1B radiance NetCDF4 (read with h5py).

HDF4 (Hyperion L1R, MODIS ...) has no reader here: :func:`app.core.io.sniff` says so and how to
convert it.
"""
from __future__ import annotations

from pathlib import Path

from app.core.io.products import emit, enmap, prisma

__all__ = ["emit", "enmap", "prisma", "hdf5_product"]


def hdf5_product(path: Path) -> str | None:
    """'prisma', 'emit' or None for an HDF5 file (opened briefly; a damaged file gives None and is
    reported by the plain HDF5 reader)."""
    try:
        import h5py

        with h5py.File(str(path), "r") as handle:
            if prisma.is_prisma(handle):
                return "prisma"
            if emit.is_emit(handle):
                return "emit"
    except Exception:  # noqa: BLE001: not ours to report here
        return None
    return None

"""One registry of cube readers and writers; the format is sniffed from the content.

>>> cube = open_cube("scene.hdr")             # ENVI, .mat v5/v7.3, .npy/.npz, TIFF, HDF5, PNG folder
>>> cube = open_cube("PRS_L2D_STD_....he5")    # sensor products: EnMAP, PRISMA, EMIT (app.core.io.products)
>>> save_cube(cube, "out.mat")                 # format from the extension (or fmt=...)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.core.cube import Cube
from app.core.errors import (
    CubeError,
    MissingFileError,
    OutOfMemoryError,
    UnknownFormatError,
    UnsafeFileError,
    memory_needed,
)
from app.core.io import containers, envi, imagefiles
from app.core.io._common import ReadOptions
from app.core.io.atomic import write_errors
from app.core.io.products import emit, enmap, hdf5_product, prisma
from app.core.io.value_range import LOUD

__all__ = ["open_cube", "save_cube", "output_format", "sniff", "ReadOptions", "FORMATS", "WRITE_FORMATS", "list_variables"]


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    extensions: tuple[str, ...]
    read: Callable[[Path, ReadOptions], Cube] | None
    write: Callable[[Cube, Path], Path] | None


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("envi", "ENVI (.hdr + .img/.dat/.raw/.bsq/.bil/.bip)", (".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip"),
           envi.read, envi.write),
    Format("mat-v5", "MATLAB v5/v7 .mat", (".mat",), containers.read_mat5,
           lambda c, p: containers.write_mat(c, p, "5")),
    Format("mat-v7.3", "MATLAB v7.3 .mat (HDF5)", (".mat",), containers.read_mat73,
           lambda c, p: containers.write_mat(c, p, "7.3")),
    Format("hdf5", "HDF5 / NetCDF4 (.h5/.hdf5/.he5/.nc)", (".h5", ".hdf5", ".he5", ".nc"), containers.read_hdf5,
           containers.write_hdf5),
    Format("npy", "NumPy .npy", (".npy",), containers.read_npy, containers.write_npy),
    Format("npz", "NumPy .npz", (".npz",), containers.read_npz, containers.write_npz),
    Format("tiff", "TIFF / GeoTIFF", (".tif", ".tiff"), imagefiles.read_tiff, imagefiles.write_tiff),
    Format("png-folder", "Folder of per-band PNG images (CAVE)", ("",), imagefiles.read_png_folder,
           imagefiles.write_png_folder),
    Format("enmap", "EnMAP product (folder, *-SPECTRAL_IMAGE.TIF or *-METADATA.XML)", (".tif", ".tiff", ""),
           enmap.read, None),
    Format("prisma", "PRISMA L1/L2 HDF-EOS5 (.he5)", (".he5",), prisma.read, None),
    Format("emit", "EMIT / NetCDF4 reflectance or radiance (.nc)", (".nc",), emit.read, None),
)}
WRITE_FORMATS = {".hdr": "envi", ".img": "envi", ".mat": "mat", ".h5": "hdf5", ".hdf5": "hdf5",
                 ".npy": "npy", ".npz": "npz", ".tif": "tiff", ".tiff": "tiff", "": "png-folder"}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HDF4_MAGIC = b"\x0e\x03\x13\x01"
log = logging.getLogger("hsi.io")


def sniff(path: str | Path) -> str:
    """The format name of a file or folder, decided from its content (magic bytes)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise MissingFileError(path, "is a broken symbolic link")
        raise MissingFileError(path, "no such file or folder")
    if path.is_dir():
        return "enmap" if enmap.in_folder(path) is not None else "png-folder"
    try:
        with open(path, "rb") as fh:
            head = fh.read(1032)
    except OSError as exc:
        raise CubeError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise CubeError(path, "the file is empty")
    if head.startswith(b"ENVI"):
        return "envi"
    if head.startswith(b"MATLAB 7.3 MAT-file"):
        return "mat-v7.3"
    if head.startswith(b"MATLAB 5.0 MAT-file") or head[:116].startswith(b"MATLAB"):
        return "mat-v5"
    if any(head[off:off + 8] == _HDF5_MAGIC for off in (0, 512, 1024)):
        return hdf5_product(path) or "hdf5"
    if head.startswith(_HDF4_MAGIC):
        raise UnknownFormatError(path, "is an HDF4 file (e.g. Hyperion L1R, MODIS): no library here reads HDF4; "
                                       "convert it to GeoTIFF first, e.g. gdal_translate -of GTiff "
                                       "HDF4_SDS:UNKNOWN:\"FILE.hdf\":0 out.tif (gdalinfo FILE.hdf lists the "
                                       "datasets), then open the .tif")
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"):
        raise UnknownFormatError(path, "is a NetCDF classic file (CDF-1/2/5), which this program cannot read (only "
                                       "NetCDF4, which is HDF5); convert it with nccopy -k nc4 FILE.nc out.nc")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "enmap" if enmap.metadata_beside(path) is not None else "tiff"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") and enmap.is_metadata(path):
        return "enmap"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UnsafeFileError(path, "is a Python pickle (whatever its extension says); pickles can run "
                                    "code when loaded, so it is not opened. Save the array with numpy.save")
    if head.startswith(b"\x89PNG"):
        raise UnknownFormatError(path, "is a single PNG image; open the folder that holds one PNG per band")
    if envi.header_for(path) is not None:
        return "envi"
    raise UnknownFormatError(path, f"is not a cube format this program reads (ENVI, MATLAB .mat, .npy/.npz, TIFF, "
                                   f"HDF5/NetCDF4, PNG band folder, EnMAP, PRISMA, EMIT); it starts with bytes "
                                   f"{head[:8]!r}")


def open_cube(path: str | Path, *, var: str | None = None, layout: str | None = None,
              hw: tuple[int, int] | None = None, normalise: str | float = "auto",
              nonfinite: str = "error", fmt: str | None = None, wavelengths: str | Path | None = None) -> Cube:
    """Read a cube from any supported file or folder.

    ``wavelengths``: a side file (.txt/.csv, one value per band, nm or µm) whose band centres replace
    the file's own (:mod:`app.core.io.wavelengths`); a count that is not the cube's bands is an error
    naming that file.

    Raises HsiError subclasses whose message names the file and the problem;
    AmbiguousCubeError (``.option``, ``.choices``) when the user must pick a variable/layout.
    """
    path = Path(path).expanduser()
    options = ReadOptions(var=var, layout=layout, hw=tuple(hw) if hw else None,
                          normalise=normalise, nonfinite=nonfinite)
    if nonfinite not in ("error", "zero", "mask"):
        raise ValueError(f"nonfinite must be 'error', 'zero' or 'mask', not {nonfinite!r}")
    side = None
    if wavelengths is not None:  # a bad list fails before the cube is opened
        from app.core.io.wavelengths import attach_wavelengths, read_wavelength_file

        side = read_wavelength_file(wavelengths)
    name = fmt or sniff(path)
    if name not in FORMATS:
        raise UnknownFormatError(path, f"unknown format '{name}' (known: {', '.join(FORMATS)})")
    try:
        cube = FORMATS[name].read(path, options)
    except MemoryError as exc:
        raise OutOfMemoryError(path, memory_needed(exc), "a memory-mapped format (ENVI, .npy, uncompressed "
                                                         "TIFF, HDF5) opens without loading it") from None
    cube.metadata.setdefault("format", name)
    for note in cube.metadata.get("warnings", []):  # assumptions that change the values: said on stderr too
        if str(note).startswith(LOUD):
            log.warning("%s: %s", path, note)
    if side is not None:
        try:
            attach_wavelengths(cube, wavelengths, side)
        except BaseException:
            for key in ("_h5file", "_tifffile"):  # the lazy reader's open file
                handle = cube.metadata.get(key)
                if handle is not None:
                    handle.close()
            raise
    if nonfinite == "mask" and not cube.nonfinite_nodata:
        cube = cube.replace(nonfinite_nodata=True)
    return cube


def list_variables(path: str | Path) -> list[str]:
    """Names and shapes of the arrays in a container file (for the GUI's variable picker)."""
    path = Path(path)
    name = sniff(path)
    if name == "mat-v5":
        return [v.describe() for v in containers.list_mat5(path)]
    if name in ("mat-v7.3", "hdf5", "prisma", "emit"):
        with containers._open_h5(path) as handle:
            return [v.describe() for v in containers.list_h5(handle, path, matlab=name == "mat-v7.3")]
    if name == "npz":
        return [v.describe() for v in containers.list_npz(path)]
    return []


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The writer a path selects (checked before long work, so a typo fails at once)."""
    path = Path(path).expanduser()
    name = fmt or WRITE_FORMATS.get(path.suffix.lower())
    if name is None or (name != "mat" and name != "envi" and (name not in FORMATS or FORMATS[name].write is None)):
        raise UnknownFormatError(path, f"cannot tell the output format from '{path.suffix}' "
                                       f"(use one of {', '.join(e for e in WRITE_FORMATS if e)} or a folder)")
    return name


def save_cube(cube: Cube, path: str | Path, *, fmt: str | None = None, **options) -> Path:
    """Write a cube (format from ``fmt`` or the extension; a path without extension is a PNG folder).

    Writers go through a temporary name and a rename, so a failure never leaves a partial file.
    Options: ``mat_version`` ('auto', '5', '7.3') for .mat, ``interleave``/``byteorder`` for ENVI."""
    path = Path(path).expanduser()
    name = output_format(path, fmt)
    try:
        with write_errors(path):  # a full disk or a read-only folder is named by the output path
            if name == "mat":
                return containers.write_mat(cube, path, options.get("mat_version", "auto"))
            if name == "envi":
                return envi.write(cube, path, interleave=options.get("interleave", "bsq"),
                                  byteorder=options.get("byteorder", "little"))
            return FORMATS[name].write(cube, path)
    except MemoryError as exc:  # the writers need the whole cube as float32 (and the formats a copy)
        raise OutOfMemoryError(cube.source_path or path,
                               memory_needed(exc) or cube.nbytes_float32) from None

"""TIFF / GeoTIFF cubes (tifffile) and CAVE-style folders of per-band PNG images."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from app.core.cube import Cube
from app.core.io import georef as georef_mod
from app.core.io.provenance import stamp
from app.core.io.value_range import ValueRange
from app.core.errors import CubeError, InconsistentBandsError, NoCubeError, TruncatedFileError
from app.core.io._common import (
    ReadOptions,
    atomic_dir,
    atomic_path,
    axes_from_layout,
    check_numeric,
    check_shape,
    detect_layout,
    honour_nonfinite,
    decide_range,
    reflectance_for_writing,
    wavelengths_to_nm,
)

CAVE_WAVELENGTHS_NM = np.arange(400.0, 701.0, 10.0)


# ------------------------------------------------------------------------------ TIFF
def _layout_from_axes(axes: str) -> str | None:
    """tifffile series axes (e.g. 'YXS', 'CYX', 'QYX', 'IYX') -> our layout letters."""
    axes = axes.upper()
    if len(axes) != 3 or "Y" not in axes or "X" not in axes:
        return None
    band_letter = [a for a in axes if a not in "YX"][0]
    return axes.replace("Y", "H").replace("X", "W").replace(band_letter, "B")


def _gdal_wavelengths(tif) -> tuple[list | None, str | None]:
    """Band wavelengths from a GeoTIFF's GDAL_METADATA XML (ENVI-style per-band items)."""
    tag = tif.pages[0].tags.get("GDAL_METADATA")
    if tag is None:
        return None, None
    try:
        root = ET.fromstring(tag.value)
    except ET.ParseError:
        return None, None
    by_band: dict[int, float] = {}
    units = None
    for item in root.iter("Item"):
        name = (item.get("name") or "").lower()
        if name in ("wavelength", "central_wavelength") and item.get("sample") is not None:
            try:
                by_band[int(item.get("sample"))] = float(item.text)
            except (TypeError, ValueError):
                continue
        elif name == "wavelength_units" and units is None:
            units = item.text
    if not by_band:
        return None, units
    return [by_band[k] for k in sorted(by_band)], units


def _gdal_scale_offset(tif, bands: int, warnings: list[str]):
    """(stated ValueRange or None, per-band gain or None, per-band offset or None) from a GeoTIFF's
    GDAL_METADATA XML: the per-band ``<Item name="SCALE" sample="k" role="scale">`` and
    ``OFFSET`` items that GDAL (rasterio's ``scales`` / ``offsets``) writes; value = stored x
    SCALE + OFFSET, a band without an item has 1 and 0."""
    tag = tif.pages[0].tags.get("GDAL_METADATA")
    if tag is None:
        return None, None, None
    try:
        root = ET.fromstring(tag.value)
    except ET.ParseError:
        return None, None, None
    gain, offset = np.ones(bands), np.zeros(bands)
    found = False
    for item in root.iter("Item"):
        role = (item.get("role") or item.get("name") or "").lower()
        if role not in ("scale", "offset") or item.get("sample") is None:
            continue
        try:
            k, value = int(item.get("sample")), float(item.text)
        except (TypeError, ValueError):
            warnings.append(f"GDAL metadata {role.upper()} {item.text!r} of band {item.get('sample')} is not a "
                            f"number: ignored")
            continue
        if not (0 <= k < bands and np.isfinite(value)):
            warnings.append(f"GDAL metadata {role.upper()} for band {k} ({value:g}) does not fit {bands} bands: ignored")
            continue
        (gain if role == "scale" else offset)[k] = value
        found = True
    if not found or (np.all(gain == 1.0) and np.all(offset == 0.0)):
        return None, None, None
    if np.any(gain == 0.0):
        warnings.append("GDAL metadata states a SCALE of 0 for some band: the stated scales are ignored")
        return None, None, None
    if np.ptp(gain) == 0 and np.ptp(offset) == 0:
        return ValueRange(float(gain[0]), float(offset[0]), "stated", f"stored values x the GDAL metadata's SCALE "
                                                                      f"{gain[0]:g} + OFFSET {offset[0]:g}"), None, None
    text = (f"stored values x the GDAL metadata's per-band SCALE ({gain.min():g} to {gain.max():g}) + OFFSET "
            f"({offset.min():g} to {offset.max():g})")
    return ValueRange(1.0, 0.0, "stated", text), gain, offset


def _gdal_nodata(tif, warnings: list[str]) -> tuple[float | None, bool]:
    """(no-data value, NaN marks no-data) from a GeoTIFF's GDAL_NODATA tag (42113, ASCII)."""
    tag = tif.pages[0].tags.get(42113)
    if tag is None:
        return None, False
    text = tag.value.decode("ascii", "replace") if isinstance(tag.value, bytes) else str(tag.value)
    text = text.strip().strip("\x00").strip()
    try:
        value = float(text)
    except ValueError:
        warnings.append(f"GDAL_NODATA {text!r} is not a number: ignored")
        return None, False
    if np.isnan(value):
        return None, True
    return value, False


class _TiffLog(logging.Filter):
    """Collects what tifffile logs for this thread instead of raising: it reports a cut or
    damaged file (page offsets past the end) only in the log, then reads the missing data as 0."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno < logging.WARNING:
            return True
        self.messages.append(" ".join(record.getMessage().split()))
        return False


@contextlib.contextmanager
def _tiff_log():
    logger = logging.getLogger("tifffile")
    catcher = _TiffLog()
    logger.addFilter(catcher)
    try:
        yield catcher.messages
    finally:
        logger.removeFilter(catcher)


def _check_tiff_extent(tif, series, path: Path, logged: list[str]) -> None:
    """Refuse a TIFF whose pages or image data lie past the end of the file."""
    size = os.path.getsize(path)
    end = 0
    for page in tif.pages:
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        for off, count in zip(offsets or (), counts or ()):
            if off and count:
                end = max(end, int(off) + int(count))
    if getattr(series, "dataoffset", None) is not None:
        end = max(end, int(series.dataoffset) + int(series.nbytes))
    if end > size:
        raise TruncatedFileError(path, f"holds {size} bytes but its image data reach byte {end}: the file is "
                                       f"truncated")
    damage = [m for m in logged if "offset" in m.lower() or "corrupt" in m.lower() or "invalid" in m.lower()]
    if damage:
        raise TruncatedFileError(path, f"is truncated or damaged (tifffile: {damage[0]})")


def read_tiff(path: Path, options: ReadOptions, product=None) -> Cube:
    """A TIFF / GeoTIFF cube. ``product`` (for sensor products, e.g. EnMAP): a function
    ``(bands, warnings) -> dict`` called before the value rule is decided, whose keys override what
    the TIFF itself says: ``stated`` / ``convention`` (ValueRange), ``band_gain`` / ``band_offset``,
    ``ignore_value``, ``wavelengths_nm``, ``fwhm_nm``, ``bad_bands``, ``name``, ``metadata``."""
    import tifffile

    with _tiff_log() as logged:
        try:
            tif = tifffile.TiffFile(str(path))
        except Exception as exc:
            raise CubeError(path, f"not a readable TIFF ({' '.join(str(exc).split())})") from None
        try:
            len(tif.pages)  # walks the whole chain of pages, where damage is logged
            series = tif.series[0] if tif.series else None
            if series is None:
                raise NoCubeError(path, "the TIFF holds no image (its directory of pages is empty or damaged)")
            _check_tiff_extent(tif, series, path, logged)
        except CubeError:
            tif.close()
            raise
        except Exception as exc:  # IndexError, KeyError, ValueError from a damaged directory
            tif.close()
            raise CubeError(path, f"not a readable TIFF ({' '.join(str(exc).split()) or type(exc).__name__}); "
                                  f"the file is truncated or damaged") from None
    try:
        return _tiff_cube(tif, series, path, options, product)
    except BaseException:
        tif.close()
        raise


def _tiff_cube(tif, series, path: Path, options: ReadOptions, product=None) -> Cube:
    import tifffile

    shape = tuple(series.shape)
    check_numeric(series.dtype, path, "the image")
    check_shape(shape, path, "the image")
    if len(shape) == 2:
        raise NoCubeError(path, f"a single-band image {shape}; a cube needs several bands")
    if len(shape) != 3:
        squeezed = tuple(s for s in shape if s > 1)
        if len(squeezed) != 3:
            raise NoCubeError(path, f"image shape {shape} is not a 3-D cube")
    meta = {}
    try:
        meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
    except Exception:  # foreign descriptions that merely look like JSON
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    stated = meta.get("layout") if isinstance(meta.get("layout"), str) else None
    layout = options.layout or stated or _layout_from_axes(series.axes) or detect_layout(shape, path)
    try:
        raw = tifffile.memmap(str(path))  # only works for uncompressed contiguous data
        lazy = True
    except Exception:  # compressed, tiled or strip-split: read it whole
        with _tiff_log() as logged:
            try:
                raw = series.asarray()
            except MemoryError:
                raise
            except Exception as exc:  # a damaged strip or tile: codec errors of every kind
                raise CubeError(path, f"the image data cannot be decoded ({' '.join(str(exc).split())}); the "
                                      f"file is damaged") from None
        if logged:
            raise CubeError(path, f"the image data are damaged (tifffile: {logged[0]})")
        lazy = False
    raw = raw.reshape(tuple(s for s in raw.shape if s > 1)) if raw.ndim != 3 else raw
    axes = axes_from_layout(layout, path)
    warnings = []
    nodata, nan_nodata = _gdal_nodata(tif, warnings)
    if nan_nodata and options.nonfinite == "error" and np.dtype(series.dtype).kind == "f":
        # GDAL_NODATA 'nan' states that NaN is the no-data value: masked, not an error
        options = dataclasses.replace(options, nonfinite="mask")
    raw = honour_nonfinite(raw, path, options, warnings, lazy=lazy)
    bands = raw.shape[axes[2]]
    stated, band_gain, band_offset = _gdal_scale_offset(tif, bands, warnings)
    extra = product(bands, warnings) if product is not None else {}
    if "stated" in extra or "convention" in extra:  # the product's own metadata outranks the TIFF's tags
        stated, band_gain, band_offset = extra.get("stated"), extra.get("band_gain"), extra.get("band_offset")
    nodata = extra.get("ignore_value", nodata)
    chosen = decide_range(series.dtype, options, raw, stated=stated, convention=extra.get("convention"), axes=axes,
                          ignore=nodata)
    warnings.extend(chosen.warnings)
    if chosen.rule != "stated":  # the user's rule (or a convention) replaces stated per-band scales
        band_gain = band_offset = None
    wavelengths = _numbers(meta.get("wavelengths_nm"), "wavelengths_nm", warnings)
    if wavelengths is None:
        gdal_wl, units = _gdal_wavelengths(tif)
        wavelengths, note = wavelengths_to_nm(gdal_wl, units, path)
        if note:
            warnings.append(note)
    if wavelengths is not None and len(wavelengths) != bands:
        warnings.append(f"{len(wavelengths)} wavelengths for {bands} bands: ignored")
        wavelengths = None
    fwhm = _numbers(meta.get("fwhm_nm"), "fwhm_nm", warnings)
    if fwhm is not None and len(fwhm) != bands:
        fwhm = None
    if extra.get("wavelengths_nm") is not None:
        wavelengths = extra["wavelengths_nm"]
    if extra.get("fwhm_nm") is not None:
        fwhm = extra["fwhm_nm"]
    cube = Cube(raw=raw, axes=axes, scale=chosen.multiplier, offset=chosen.offset, wavelengths_nm=wavelengths,
                band_gain=band_gain, band_offset=band_offset, bad_bands=extra.get("bad_bands"),
                ignore_value=nodata, nonfinite_nodata=options.nonfinite == "mask", fwhm_nm=fwhm,
                name=str(extra.get("name") or meta.get("name") or path.stem), source_path=path, normalisation=chosen.text,
                metadata={"format": "tiff", "layout": layout, "tiff_axes": series.axes, "warnings": warnings,
                          "value_rule": chosen.rule, **extra.get("metadata", {})})
    if meta.get("provenance"):
        cube.metadata["provenance"] = meta["provenance"]
    geo = _tiff_georef(tif, path, meta.get("georef"), warnings)
    if geo is not None:
        cube.metadata["georef"] = geo.to_dict()
    if not lazy:
        tif.close()
    else:
        cube.metadata["_tifffile"] = tif
    return cube


def _tiff_georef(tif, path: Path, described, warnings: list[str]):
    """The GeoTIFF's georeference (geokeys through rasterio where installed, else tifffile); the
    fuller copy of our own JSON description (WKT, ENVI fields) when it describes the same grid."""
    page = tif.pages[0]
    tags = page.tags
    if not any(code in tags for code in (georef_mod.TAG_TIEPOINT, georef_mod.TAG_TRANSFORMATION,
                                         georef_mod.TAG_GEOKEYS)):
        return None
    notes: list[str] = []
    geo = None
    if georef_mod.geotiff_backend() == "rasterio":
        try:
            geo, notes = georef_mod.read_rasterio(path)
        except Exception as exc:  # GDAL refuses a file tifffile reads: fall back to the tags
            notes = [f"rasterio cannot read the georeference ({' '.join(str(exc).split())}); read from the tags"]
            geo = None
            more_geo, more = georef_mod.from_geotiff_tags(tags)
            geo, notes = more_geo, notes + more
    else:
        geo, notes = georef_mod.from_geotiff_tags(tags)
    warnings.extend(notes)
    ours = georef_mod.georef_of({"georef": described}) if isinstance(described, dict) else None
    if geo is not None and ours is not None:
        tol = 1e-9 * min(geo.pixel_size)
        same_grid = all(abs(a - b) <= tol for a, b in zip(geo.transform, ours.transform))
        if same_grid and (geo.epsg is None or ours.epsg is None or geo.epsg == ours.epsg):
            return georef_mod.Georef(ours.transform, ours.crs_wkt, ours.epsg if ours.epsg is not None else geo.epsg,
                                     ours.envi)
    return geo


def _numbers(value, key: str, warnings: list[str]):
    """A list of finite numbers from the JSON description, or None (said in a warning)."""
    if value is None:
        return None
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        vec = None
    if vec is None or vec.ndim != 1 or not np.isfinite(vec).all():
        warnings.append(f"the description's '{key}' is not a list of numbers: ignored")
        return None
    return vec


def write_tiff(cube: Cube, path: Path) -> Path:
    """Float32 (Geo)TIFF: one image of B planar bands (B, H, W), which GIS software reads as a
    B-band raster; wavelengths, provenance and the georeference in the JSON description, and the
    georeference as GeoTIFF tags (set by rasterio where installed, else written by tifffile)."""
    import tifffile

    data, meta = reflectance_for_writing(cube)
    geo = georef_mod.georef_of(cube.metadata)
    description = {
        "layout": "BHW", "wavelengths_nm": meta["wavelengths_nm"], "fwhm_nm": meta["fwhm_nm"],
        "name": meta["name"], "provenance": cube.metadata.get("provenance"),
        "georef": None if geo is None else geo.to_dict(),
    }
    backend = georef_mod.geotiff_backend() if geo is not None else "tifffile"
    extratags = georef_mod.geotiff_extratags(geo) if geo is not None and backend == "tifffile" else ()
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(np.moveaxis(data, 2, 0)), photometric="minisblack",
                         planarconfig="separate", extratags=extratags,
                         metadata={k: v for k, v in description.items() if v is not None})
        if geo is not None and backend == "rasterio":
            georef_mod.write_rasterio(tmp, geo)
    return path


# ------------------------------------------------------------------------------ PNG folder
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def band_files(folder: Path) -> list[Path]:
    """PNG band files of a folder, sorted by the last number in their name."""
    pngs = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")]
    numbered = [(int(m.group(1)), p) for p in pngs if (m := _NUMBER.search(p.stem))]
    if not numbered and pngs:
        return sorted(pngs)
    return [p for _, p in sorted(numbered, key=lambda t: (t[0], t[1].name))]


def _check_numbering(folder: Path, files: list[Path]) -> None:
    """Refuse a folder whose numbered band files skip a number or repeat one: stacking what is
    there would shift every later band to the wrong wavelength without a word."""
    numbers = [int(m.group(1)) if (m := _NUMBER.search(p.stem)) else None for p in files]
    if None in numbers:
        return  # not numbered: sorted by name, nothing to check
    for prev, cur, prev_file, cur_file in zip(numbers, numbers[1:], files, files[1:]):
        if cur == prev:
            raise InconsistentBandsError(folder, f"band number {cur} appears twice ({prev_file.name}, {cur_file.name})")
        if cur != prev + 1:
            missing = ", ".join(str(n) for n in range(prev + 1, min(cur, prev + 6)))
            more = " ..." if cur - prev - 1 > 5 else ""
            raise InconsistentBandsError(folder, f"band {missing}{more} is missing: the files jump from "
                                                 f"{prev_file.name} to {cur_file.name}")
    if numbers[0] > 1:
        missing = ", ".join(str(n) for n in range(1, min(numbers[0], 6)))
        raise InconsistentBandsError(folder, f"band {missing}{' ...' if numbers[0] > 6 else ''} is missing: the "
                                             f"first file is {files[0].name}")


def looks_like_cave(folder: Path, files: list[Path]) -> bool:
    return len(files) == 31 and (folder.name.lower().endswith("_ms") or all(
        re.search(r"_ms_\d\d$", p.stem, re.I) for p in files))


def _read_band_png(path: Path) -> tuple[np.ndarray, int]:
    """(2-D array, bit depth) of one band image; colour PNGs must have equal channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
            mode = im.mode
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CubeError(path, f"not a readable PNG image ({exc})") from None
    if arr.ndim == 3:
        channels = arr[..., :3] if arr.shape[2] >= 3 else arr
        if not all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
            raise InconsistentBandsError(path, f"a colour image ({mode}) with different channels; a band "
                                               "image must be grey (or colour with equal channels)")
        arr = arr[..., 0]
    if arr.dtype == np.uint16 or mode.startswith("I"):
        return arr.astype(np.uint16, copy=False), 16
    if arr.dtype == np.uint8:
        return arr, 8
    raise CubeError(path, f"unsupported PNG pixel type {arr.dtype} (mode {mode})")


def read_png_folder(path: Path, options: ReadOptions) -> Cube:
    folder = Path(path)
    files = band_files(folder)
    if not files:
        raise NoCubeError(folder, "the folder holds no PNG band images")
    if len(files) < 2:
        raise NoCubeError(folder, f"the folder holds a single PNG ({files[0].name}); a cube needs several bands")
    _check_numbering(folder, files)
    bands, depths = [], set()
    first_shape = None
    for f in files:
        arr, depth = _read_band_png(f)
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape != first_shape:
            raise InconsistentBandsError(f, f"is {arr.shape[0]}x{arr.shape[1]} but {files[0].name} is "
                                            f"{first_shape[0]}x{first_shape[1]}: band images must share one size")
        bands.append(arr)
        depths.add(depth)
    if len(depths) > 1:
        raise InconsistentBandsError(folder, "band images mix 8-bit and 16-bit PNGs")
    raw = np.stack(bands, axis=-1)
    cave = looks_like_cave(folder, files)
    depth = depths.pop()
    top = 65535 if depth == 16 else 255
    if cave:
        stated_rule = f"{depth}-bit PNG bands divided by {top} (CAVE convention)"
    else:
        stated_rule = f"{depth}-bit PNG bands divided by {top}"
    chosen = decide_range(raw.dtype, options, raw,
                          convention=ValueRange(1.0 / top, 0.0, "convention", stated_rule))
    scale, rule = chosen.multiplier, chosen.text
    warnings = list(chosen.warnings)
    wavelengths = CAVE_WAVELENGTHS_NM.copy() if cave else None
    if cave:
        warnings.append("CAVE-style folder: bands taken as 400-700 nm in 10 nm steps")
    sidecar = folder / "metadata.json"
    provenance = None
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CubeError(sidecar, f"metadata file is not valid JSON ({exc})") from None
        wl = meta.get("wavelengths_nm")
        if wl is not None and len(wl) == raw.shape[2]:
            wavelengths = np.asarray(wl, dtype=np.float64)
        provenance = meta.get("provenance")
    name = folder.name
    cube = Cube(raw=raw, scale=scale, wavelengths_nm=wavelengths, name=name, source_path=folder,
                normalisation=rule,
                metadata={"format": "png-folder", "bit_depth": depth, "files": [f.name for f in files],
                          "warnings": warnings, "value_rule": chosen.rule})
    if provenance:
        cube.metadata["provenance"] = provenance
    return cube


def write_png_folder(cube: Cube, path: Path) -> Path:
    """One 16-bit PNG per band (reflectance clipped to [0, 1] x 65535), named <folder>_NN.png,
    plus metadata.json with the wavelengths. The folder appears complete or not at all."""
    from PIL import Image

    folder = Path(path)
    if folder.exists() and any(folder.iterdir()):
        raise CubeError(folder, "the target folder exists and is not empty; choose a new folder")
    data, meta = reflectance_for_writing(cube)
    digits = max(2, len(str(data.shape[2])))
    with atomic_dir(folder.parent, folder.name) as tmp:
        for k in range(data.shape[2]):
            band = np.round(np.clip(data[:, :, k], 0.0, 1.0) * 65535.0).astype(np.uint16)
            Image.fromarray(band).save(tmp / f"{folder.name}_{k + 1:0{digits}d}.png")
        (tmp / "metadata.json").write_text(json.dumps(stamp({
            "wavelengths_nm": meta["wavelengths_nm"], "name": meta["name"],
            "provenance": cube.metadata.get("provenance"), "encoding": "uint16 / 65535"},
            "cube-metadata", run_details=False)), encoding="utf-8")
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
        tmp.mkdir()  # atomic_dir removes its (now empty) placeholder
    return folder

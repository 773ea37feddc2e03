"""Georeference of a cube: an affine geotransform and a coordinate reference system (CRS).

The transform is GDAL's six numbers ``(x0, dx, rx, y0, ry, dy)``::

    X = x0 + col * dx + row * rx
    Y = y0 + col * ry + row * dy

with (row, col) continuous pixel coordinates in the **pixel-is-area** convention: (0, 0) is the
upper-left *corner* of the upper-left pixel and the centre of pixel (r, c) is (r + 0.5, c + 0.5).
A north-up image has rx = ry = 0 and dy < 0. Files that state PixelIsPoint (the tie point at a
pixel's centre) are shifted by half a pixel on reading, as GDAL does, and always written as area.

The CRS is kept as WKT and/or an EPSG code (either may be missing), and, for files that came from
an ENVI header, the ``map info`` projection fields (projection name, UTM zone and hemisphere, datum,
units) so that they are written back the same way.

Readers and writers of the formats:

- ENVI ``map info`` and ``coordinate system string`` (:func:`from_envi`, :func:`to_envi`); the
  reference pixel of ``map info`` is 1-based, (1, 1) being the upper-left corner of the first
  pixel; ``rotation=`` is the counter-clockwise angle of the grid in degrees (GDAL's reading).
- GeoTIFF ModelPixelScale + ModelTiepoint or ModelTransformation and the GeoKeyDirectory
  (EPSG-coded projected and geographic CRS, PixelIsArea / PixelIsPoint), with tifffile
  (:func:`from_geotiff_tags`, :func:`geotiff_extratags`) or, where it is installed, rasterio
  (:func:`read_rasterio`, :func:`write_rasterio`). ``HSI_GEOTIFF_BACKEND=tifffile`` (or
  ``rasterio``) forces one; both give the same transform and EPSG. A user-defined CRS (no EPSG
  code) is read as WKT only through rasterio.

A cube carries its georeference as ``cube.metadata['georef']``: the JSON-able dict of
:meth:`Georef.to_dict`. Super-resolution by s divides the pixel size by s and keeps the upper-left
corner (:meth:`Georef.scaled`); a simulated LR multiplies it (:meth:`Georef.coarsened`); a crop
moves the origin to its first pixel (:meth:`Georef.cropped`).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import HsiError

__all__ = ["Georef", "georef_of", "from_envi", "to_envi", "from_geotiff_tags", "geotiff_extratags",
           "geotiff_backend", "read_rasterio", "write_rasterio", "map_readout", "BACKEND_ENV"]

BACKEND_ENV = "HSI_GEOTIFF_BACKEND"

# GeoTIFF tags and keys (GeoTIFF 1.1, OGC 19-008r4)
TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_TRANSFORMATION = 34264
TAG_GEOKEYS = 34735
TAG_DOUBLE_PARAMS = 34736
TAG_ASCII_PARAMS = 34737
KEY_MODEL_TYPE = 1024        # 1 projected, 2 geographic, 3 geocentric
KEY_RASTER_TYPE = 1025       # 1 PixelIsArea, 2 PixelIsPoint
KEY_CITATION = 1026
KEY_GEOGRAPHIC_TYPE = 2048
KEY_GEOG_CITATION = 2049
KEY_GEOG_ANGULAR_UNITS = 2054
KEY_PROJECTED_TYPE = 3072
KEY_PROJ_CITATION = 3073
KEY_PROJ_LINEAR_UNITS = 3076
USER_DEFINED = 32767
_LINEAR_UNITS = {9001: "m", 9002: "ft", 9003: "US ft", 9036: "km"}


# ------------------------------------------------------------------------------ CRS naming
def _is_geographic_epsg(code: int | None) -> bool:
    # EPSG's geographic 2-D CRS live in 4000-4999 (4326 WGS 84, 4269 NAD83, 4258 ETRS89, ...)
    return code is not None and 4000 <= code <= 4999


def _epsg_name(code: int | None) -> str | None:
    if code is None:
        return None
    if code == 4326:
        return "WGS 84"
    if 32601 <= code <= 32660:
        return f"WGS 84 / UTM zone {code - 32600}N"
    if 32701 <= code <= 32760:
        return f"WGS 84 / UTM zone {code - 32700}S"
    if 26901 <= code <= 26923:
        return f"NAD83 / UTM zone {code - 26900}N"
    if code == 3857:
        return "WGS 84 / Pseudo-Mercator"
    return None


_WKT_HEAD = re.compile(r'^\s*([A-Z_0-9]+)\s*[\[(]\s*"([^"]*)"')
_WKT_EPSG = re.compile(r'(?:AUTHORITY\s*\[\s*"EPSG"\s*,\s*"?(\d+)"?\s*\]|ID\s*\[\s*"EPSG"\s*,\s*(\d+)\s*\])\s*\]\s*$')
_WKT_UNIT = re.compile(r'(?:LENGTHUNIT|ANGLEUNIT|UNIT)\s*\[\s*"([^"]+)"')


def _unit_short(name: str | None) -> str | None:
    if not name:
        return None
    low = name.strip().lower().replace("_", " ")
    if low in ("m", "metre", "meter", "meters", "metres"):
        return "m"
    if low in ("degree", "degrees", "deg", "dd"):
        return "deg"
    if low in ("km", "kilometre", "kilometer", "kilometers", "kilometres"):
        return "km"
    if low in ("foot", "feet", "ft", "international foot"):
        return "ft"
    if "us survey foot" in low or low in ("foot us", "us ft"):
        return "US ft"
    return name.strip()


# ------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class Georef:
    """An affine geotransform (GDAL order, pixel-is-area) and the CRS (WKT, EPSG, ENVI fields).

    Attributes:
        transform: (x0, dx, rx, y0, ry, dy); see the module's docstring.
        crs_wkt: the CRS as WKT (as the file gave it: ENVI's ESRI dialect, or GDAL's), or None.
        epsg: the EPSG code of the CRS, or None when unknown (a user-defined CRS).
        envi: the ENVI ``map info`` projection fields ('projection', 'zone', 'hemisphere',
            'datum', 'units'), or None when the georeference did not come from an ENVI header.
    """

    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str | None = None
    epsg: int | None = None
    envi: dict | None = field(default=None, compare=True)

    def __post_init__(self):
        t = tuple(float(v) for v in self.transform)
        if len(t) != 6 or not all(math.isfinite(v) for v in t):
            raise ValueError(f"a geotransform is six finite numbers, got {self.transform!r}")
        if t[1] * t[5] - t[2] * t[4] == 0.0:
            raise ValueError(f"the geotransform {t} is degenerate (zero pixel size)")
        object.__setattr__(self, "transform", t)
        if self.epsg is not None:
            object.__setattr__(self, "epsg", int(self.epsg))
        if self.crs_wkt is not None:
            object.__setattr__(self, "crs_wkt", str(self.crs_wkt).strip() or None)
        if self.envi is not None and not isinstance(self.envi, dict):
            raise ValueError(f"the ENVI projection fields must be a dict, got {type(self.envi).__name__}")

    # -------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The JSON-able form kept in ``cube.metadata['georef']``."""
        return {"transform": list(self.transform), "crs_wkt": self.crs_wkt, "epsg": self.epsg,
                "envi": None if self.envi is None else dict(self.envi)}

    @classmethod
    def from_dict(cls, d: dict) -> "Georef":
        envi = d.get("envi")
        return cls(tuple(d["transform"]), d.get("crs_wkt"), d.get("epsg"),
                   dict(envi) if isinstance(envi, dict) else None)

    # -------------------------------------------------------------- CRS facts
    @property
    def geographic(self) -> bool:
        """True when X, Y are longitude, latitude in degrees."""
        if self.crs_wkt:
            m = _WKT_HEAD.match(self.crs_wkt)
            if m:
                return m.group(1).upper() in ("GEOGCS", "GEOGCRS", "GEODCRS", "GEODETICCRS", "GEOGRAPHICCRS")
        if self.envi and str(self.envi.get("projection", "")).lower().startswith("geographic"):
            return True
        return _is_geographic_epsg(self.epsg)

    @property
    def crs_name(self) -> str | None:
        """A readable name of the CRS ('WGS 84 / UTM zone 33N'), or None when there is no CRS."""
        if self.crs_wkt:
            m = _WKT_HEAD.match(self.crs_wkt)
            if m and m.group(2) and m.group(2).lower() != "unnamed":
                return m.group(2)
        name = _epsg_name(self.epsg)
        if name:
            return name
        e = self.envi or {}
        proj = e.get("projection")
        if proj and str(proj).lower() != "arbitrary":
            if str(proj).upper() == "UTM" and e.get("zone"):
                return f"{e.get('datum') or ''} UTM zone {e['zone']}{str(e.get('hemisphere') or 'N')[:1].upper()}".strip()
            return str(proj) + (f" ({e['datum']})" if e.get("datum") else "")
        return None

    @property
    def units(self) -> str | None:
        """'m', 'deg', 'ft', ... of X and Y, or None when unknown."""
        if self.geographic:
            return "deg"
        if self.envi and self.envi.get("units"):
            return _unit_short(self.envi["units"])
        if self.crs_wkt:
            units = _WKT_UNIT.findall(self.crs_wkt)
            if units:
                return _unit_short(units[-1])
        if self.epsg is not None and _epsg_name(self.epsg):
            return "m"
        return None

    @property
    def label(self) -> str:
        """'EPSG:32633 (WGS 84 / UTM zone 33N)', 'WGS_1984_UTM_Zone_33N' or 'no CRS'."""
        name = self.crs_name
        if self.epsg is not None:
            return f"EPSG:{self.epsg}" + (f" ({name})" if name else "")
        return name or "no CRS"

    # -------------------------------------------------------------- geometry
    @property
    def pixel_size(self) -> tuple[float, float]:
        """(width, height) of a pixel in CRS units (positive)."""
        x0, dx, rx, y0, ry, dy = self.transform
        return math.hypot(dx, ry), math.hypot(rx, dy)

    @property
    def origin(self) -> tuple[float, float]:
        """(X, Y) of the upper-left corner of the upper-left pixel."""
        return self.transform[0], self.transform[3]

    def corner_to_map(self, row: float, col: float) -> tuple[float, float]:
        """(X, Y) of continuous pixel coordinates (row, col), (0, 0) = the upper-left corner."""
        x0, dx, rx, y0, ry, dy = self.transform
        return x0 + col * dx + row * rx, y0 + col * ry + row * dy

    def pixel_to_map(self, row: float, col: float) -> tuple[float, float]:
        """(X, Y) of the centre of pixel (row, col)."""
        return self.corner_to_map(row + 0.5, col + 0.5)

    def scaled(self, factor: int | float) -> "Georef":
        """The georeference of the same area on a grid ``factor`` times finer (super-resolution by
        ``factor``): the pixel size divided by ``factor``, the upper-left corner kept."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        x0, dx, rx, y0, ry, dy = self.transform
        return Georef((x0, dx / factor, rx / factor, y0, ry / factor, dy / factor), self.crs_wkt, self.epsg, self.envi)

    def coarsened(self, factor: int | float) -> "Georef":
        """The georeference of a grid ``factor`` times coarser (a simulated LR of blocks of
        ``factor`` x ``factor`` pixels from the upper-left corner): the pixel size multiplied."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        x0, dx, rx, y0, ry, dy = self.transform
        return Georef((x0, dx * factor, rx * factor, y0, ry * factor, dy * factor), self.crs_wkt, self.epsg, self.envi)

    def cropped(self, row0: int, col0: int) -> "Georef":
        """The georeference of a crop whose first pixel is (row0, col0) of this grid."""
        x0, dx, rx, y0, ry, dy = self.transform
        x, y = self.corner_to_map(row0, col0)
        return Georef((x, dx, rx, y, ry, dy), self.crs_wkt, self.epsg, self.envi)

    def describe(self) -> str:
        """'EPSG:32633 (WGS 84 / UTM zone 33N); pixel 30 x 30 m; origin (500000, 4200000) (upper-left corner)'."""
        w, h = self.pixel_size
        u = self.units
        unit = f" {u}" if u and u != "deg" else ("°" if u == "deg" else "")
        x0, dx, rx, y0, ry, dy = self.transform
        rot = ""
        if rx != 0.0 or ry != 0.0:
            rot = f"; rotated {math.degrees(math.atan2(ry, dx)):.6g}°"
        return (f"{self.label}; pixel {w:.10g} x {h:.10g}{unit}{rot}; "
                f"origin ({x0:.10g}, {y0:.10g}) (upper-left corner)")


def georef_of(metadata: dict | None) -> Georef | None:
    """The Georef of a cube's metadata ('georef'), or None (also for a malformed entry)."""
    d = (metadata or {}).get("georef")
    if isinstance(d, Georef):
        return d
    if not isinstance(d, dict) or "transform" not in d:
        return None
    try:
        return Georef.from_dict(d)
    except (TypeError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------ status bar
def _decimals(step: float) -> int:
    """Decimals that resolve a tenth of ``step``."""
    if not step > 0 or not math.isfinite(step):
        return 2
    return max(0, min(9, math.ceil(-math.log10(step / 10.0))))


def map_readout(georef, row: float, col: float, per_pixel: int = 1) -> str:
    """The map position of HR grid pixel (row, col) of a layer with ``per_pixel`` HR pixels per
    pixel of its own (1 for full resolution), for the status bar: 'E 500015.0 m, N 4199985.0 m'
    or 'lat 48.85012°, lon 2.35012°'; '' without a georeference. ``georef``: a Georef or a
    cube's metadata dict (or its 'georef' entry)."""
    if isinstance(georef, dict) and "transform" not in georef:
        georef = georef_of(georef)
    elif isinstance(georef, dict):
        georef = georef_of({"georef": georef})
    if georef is None:
        return ""
    s = max(1, int(per_pixel))
    x, y = georef.corner_to_map((row + 0.5) / s, (col + 0.5) / s)
    w, h = georef.pixel_size
    digits = _decimals(min(w, h) / s)
    if georef.geographic:
        return f"lat {y:.{digits}f}°, lon {x:.{digits}f}°"
    u = georef.units
    unit = f" {u}" if u else ""
    return f"E {x:.{digits}f}{unit}, N {y:.{digits}f}{unit}"


# ------------------------------------------------------------------------------ ENVI
_ENVI_UTM_EPSG = {("wgs-84", "n"): 32600, ("wgs-84", "s"): 32700, ("nad-83", "n"): 26900}
_EXACT_KEY = "geotransform exact"  # written beside map info: the transform to full precision
_EPSG_KEY = "coordinate system epsg"  # written when neither map info nor the WKT names the EPSG code


def _envi_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    text = str(value).strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return [v.strip() for v in text.split(",")]


def _envi_text(value) -> str | None:
    """A free-text header field that spectral split at commas, joined back."""
    if value is None:
        return None
    text = ",".join(value) if isinstance(value, list) else str(value)
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    return text or None


def from_envi(meta: dict, where="the header") -> tuple[Georef | None, list[str]]:
    """(Georef or None, warnings) from an ENVI header's fields (as spectral reads them: lower-case
    keys, lists split at commas): ``map info`` and ``coordinate system string``."""
    notes: list[str] = []
    fields = _envi_list(meta.get("map info"))
    wkt = _envi_text(meta.get("coordinate system string"))
    if not fields or fields == [""]:
        if wkt:
            notes.append("the header has a coordinate system string but no map info: no georeference")
        return None, notes
    if len(fields) < 7:
        notes.append(f"map info has {len(fields)} fields, at least 7 are needed: ignored")
        return None, notes
    try:
        refx, refy, east, north, xs, ys = (float(v) for v in fields[1:7])
    except ValueError:
        notes.append(f"map info {fields[1:7]} holds values that are not numbers: ignored")
        return None, notes
    projection = fields[0]
    keyed = {}
    plain = []
    for token in fields[7:]:
        if "=" in token:
            k, _, v = token.partition("=")
            keyed[k.strip().lower()] = v.strip()
        elif token:
            plain.append(token)
    envi: dict = {"projection": projection}
    if projection.upper() == "UTM" and len(plain) >= 2:
        try:
            envi["zone"] = int(float(plain[0]))
        except ValueError:
            notes.append(f"map info UTM zone {plain[0]!r} is not a number")
        envi["hemisphere"] = plain[1]
        plain = plain[2:]
    if plain:
        envi["datum"] = plain[0]
    if "units" in keyed:
        envi["units"] = keyed["units"]
    rotation = 0.0
    if "rotation" in keyed:
        try:
            rotation = float(keyed["rotation"])
        except ValueError:
            notes.append(f"map info rotation {keyed['rotation']!r} is not a number: taken as 0")
    if rotation:
        c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        dx, rx, ry, dy = c * xs, s * ys, s * xs, -c * ys
    else:
        dx, rx, ry, dy = xs, 0.0, 0.0, -ys
    x0 = east - (refx - 1.0) * dx - (refy - 1.0) * rx
    y0 = north - (refx - 1.0) * ry - (refy - 1.0) * dy
    epsg = None
    if wkt:
        m = _WKT_EPSG.search(wkt)
        if m:
            epsg = int(m.group(1) or m.group(2))
    if epsg is None:
        datum = str(envi.get("datum", "")).lower()
        if projection.upper() == "UTM" and "zone" in envi:
            base = _ENVI_UTM_EPSG.get((datum, str(envi.get("hemisphere", "")).strip()[:1].lower()))
            if base is not None and 1 <= envi["zone"] <= 60:
                epsg = base + envi["zone"]
        elif projection.lower().startswith("geographic") and datum == "wgs-84":
            epsg = 4326
    if epsg is None and meta.get(_EPSG_KEY):
        try:
            epsg = int(str(meta[_EPSG_KEY]).strip())
        except ValueError:
            notes.append(f"{_EPSG_KEY} {meta[_EPSG_KEY]!r} is not a whole number: ignored")
    try:
        georef = Georef((x0, dx, rx, y0, ry, dy), wkt, epsg, envi)
    except ValueError as exc:
        notes.append(f"map info ignored: {exc}")
        return None, notes
    exact = _envi_list(meta.get(_EXACT_KEY))
    if len(exact) == 6:
        try:
            t = tuple(float(v) for v in exact)
        except ValueError:
            t = None
        tol = 1e-6 * min(georef.pixel_size)
        if t is not None and all(abs(a - b) <= tol for a, b in zip(t, georef.transform)):
            georef = Georef(t, wkt, epsg, envi)  # the same grid, to the last bit
    return georef, notes


def _num(v: float) -> str:
    """Shortest text that reads back as the same float ('30', '7.5', '500000.125')."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def to_envi(georef: Georef) -> dict:
    """The ENVI header fields of a georeference: 'map info' (and 'coordinate system string' when
    the WKT is known, '{}'.format ready for spectral), plus the exact transform (ENVI's rotation
    is given in degrees, which would round a rotated grid)."""
    x0, dx, rx, y0, ry, dy = georef.transform
    if rx == 0.0 and ry == 0.0:
        xs, ys, rotation = dx, -dy, 0.0
    else:
        rotation = math.degrees(math.atan2(ry, dx))
        xs, ys = math.hypot(dx, ry), math.hypot(rx, dy)
    envi = dict(georef.envi or {})
    if not envi.get("projection"):
        epsg = georef.epsg
        if epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
            envi = {"projection": "UTM", "zone": epsg % 100, "hemisphere": "North" if epsg < 32700 else "South",
                    "datum": "WGS-84", "units": "Meters"}
        elif epsg is not None and 26901 <= epsg <= 26923:
            envi = {"projection": "UTM", "zone": epsg - 26900, "hemisphere": "North", "datum": "NAD-83",
                    "units": "Meters"}
        elif epsg == 4326:
            envi = {"projection": "Geographic Lat/Lon", "datum": "WGS-84", "units": "Degrees"}
        else:
            u = georef.units
            envi = {"projection": "Arbitrary", "units": {"m": "Meters", "deg": "Degrees", "ft": "Feet",
                                                         "km": "Km"}.get(u or "", u or "Meters")}
    parts = [str(envi["projection"]), "1", "1", _num(x0), _num(y0), _num(xs), _num(ys)]
    if str(envi["projection"]).upper() == "UTM" and envi.get("zone") is not None:
        parts += [str(envi["zone"]), str(envi.get("hemisphere") or "North")]
    if envi.get("datum"):
        parts.append(str(envi["datum"]))
    if envi.get("units"):
        parts.append(f"units={envi['units']}")
    if rotation:
        parts.append(f"rotation={_num(float(f'{rotation:.12g}'))}")  # (the exact grid: the field below)
    out = {"map info": "{" + ", ".join(parts) + "}",
           _EXACT_KEY: "{" + ", ".join(_num(v) for v in georef.transform) + "}"}
    wkt = georef.crs_wkt
    unnamed = str(envi["projection"]).lower() == "arbitrary"
    if not wkt and unnamed and georef.epsg is not None and geotiff_backend() == "rasterio":
        try:  # a CRS that map info cannot name (not UTM/WGS 84) still reaches GIS readers
            from rasterio.crs import CRS

            wkt = CRS.from_epsg(georef.epsg).to_wkt()  # (WKT1 with the EPSG authority: read back)
        except Exception:
            wkt = None
    if wkt:
        out["coordinate system string"] = "{" + " ".join(wkt.split("\n")) + "}"
    if unnamed and georef.epsg is not None and not (wkt and _WKT_EPSG.search(wkt)):
        out[_EPSG_KEY] = str(georef.epsg)
    return out


# ------------------------------------------------------------------------------ GeoTIFF
def geotiff_backend(prefer: str | None = None) -> str:
    """'rasterio' when it is installed (and not turned off), else 'tifffile'. ``prefer`` or the
    environment variable HSI_GEOTIFF_BACKEND ('tifffile', 'rasterio', 'auto') choose."""
    choice = (prefer or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in ("auto", "tifffile", "rasterio"):
        raise HsiError(f"{BACKEND_ENV} must be auto, tifffile or rasterio, not {choice!r}")
    if choice == "tifffile":
        return "tifffile"
    try:
        import rasterio  # noqa: F401
    except ImportError:
        if choice == "rasterio":
            raise HsiError(f"{BACKEND_ENV}=rasterio but rasterio is not installed (pip install rasterio)") from None
        return "tifffile"
    return "rasterio"


def _geokeys(tags) -> dict[int, object]:
    """GeoKeyDirectory -> {key: value} (shorts, doubles or text) from a tifffile page's tags."""
    tag = tags.get(TAG_GEOKEYS)
    if tag is None:
        return {}
    values = [int(v) for v in tag.value]
    doubles = tags.get(TAG_DOUBLE_PARAMS)
    doubles = tuple(doubles.value) if doubles is not None else ()
    ascii_tag = tags.get(TAG_ASCII_PARAMS)
    text = ascii_tag.value if ascii_tag is not None else ""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    keys: dict[int, object] = {}
    count = values[3] if len(values) >= 4 else 0
    for i in range(count):
        entry = values[4 + 4 * i: 8 + 4 * i]
        if len(entry) < 4:
            break
        key, location, n, offset = entry
        if location == 0:
            keys[key] = offset
        elif location == TAG_DOUBLE_PARAMS:
            keys[key] = doubles[offset:offset + n]
        elif location == TAG_ASCII_PARAMS:
            keys[key] = text[offset:offset + n].rstrip("|\x00")
    return keys


def from_geotiff_tags(tags) -> tuple[Georef | None, list[str]]:
    """(Georef or None, warnings) from the GeoTIFF tags of a tifffile page (``page.tags``)."""
    notes: list[str] = []
    keys = _geokeys(tags)
    matrix = tags.get(TAG_TRANSFORMATION)
    scale = tags.get(TAG_PIXEL_SCALE)
    tie = tags.get(TAG_TIEPOINT)
    if matrix is not None and len(matrix.value) >= 8:
        m = [float(v) for v in matrix.value]
        transform = (m[3], m[0], m[1], m[7], m[4], m[5])
    elif scale is not None and tie is not None and len(tie.value) >= 6 and len(scale.value) >= 2:
        t = [float(v) for v in tie.value]
        sx, sy = float(scale.value[0]), float(scale.value[1])
        if len(t) > 6:
            notes.append(f"{len(t) // 6} tie points with a pixel scale: the first one is used")
        i, j, x, y = t[0], t[1], t[3], t[4]
        transform = (x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy)
    elif tie is not None:
        notes.append("ground control points without a pixel scale or transformation are not used: no georeference")
        return None, notes
    else:
        return None, notes
    if keys.get(KEY_RASTER_TYPE) == 2:  # PixelIsPoint: the tie point is a pixel's centre
        x0, dx, rx, y0, ry, dy = transform
        transform = (x0 - 0.5 * dx - 0.5 * rx, dx, rx, y0 - 0.5 * ry - 0.5 * dy, ry, dy)
    epsg = None
    projected = keys.get(KEY_PROJECTED_TYPE)
    geographic = keys.get(KEY_GEOGRAPHIC_TYPE)
    model = keys.get(KEY_MODEL_TYPE)
    if isinstance(projected, int) and 0 < projected < USER_DEFINED:
        epsg = projected
    elif model != 1 and isinstance(geographic, int) and 0 < geographic < USER_DEFINED:
        epsg = geographic
    elif keys and model in (1, 2):
        notes.append("the GeoTIFF's CRS is user-defined (no EPSG code): only rasterio reads it; the transform is kept")
    try:
        return Georef(transform, None, epsg, None), notes
    except ValueError as exc:
        notes.append(f"GeoTIFF georeference ignored: {exc}")
        return None, notes


def geotiff_extratags(georef: Georef) -> list[tuple]:
    """tifffile ``extratags`` for a georeference: ModelPixelScale + ModelTiepoint (north-up) or
    ModelTransformation (rotated), and a GeoKeyDirectory with PixelIsArea and the EPSG code of a
    projected or geographic CRS when known."""
    x0, dx, rx, y0, ry, dy = georef.transform
    tags: list[tuple] = []
    if rx == 0.0 and ry == 0.0 and dx > 0 and dy < 0:
        tags.append((TAG_PIXEL_SCALE, "d", 3, (dx, -dy, 0.0), True))
        tags.append((TAG_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True))
    else:
        tags.append((TAG_TRANSFORMATION, "d", 16, (dx, rx, 0.0, x0, ry, dy, 0.0, y0,
                                                   0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), True))
    entries: list[tuple[int, int, int, int]] = []
    ascii_params = ""
    name = georef.crs_name
    if georef.epsg is not None:
        geographic = georef.geographic
        entries.append((KEY_MODEL_TYPE, 0, 1, 2 if geographic else 1))
    entries.append((KEY_RASTER_TYPE, 0, 1, 1))
    if georef.epsg is not None:
        if name:
            ascii_params += name + "|"
            entries.append((KEY_CITATION, TAG_ASCII_PARAMS, len(name) + 1, 0))
        if georef.geographic:
            entries.append((KEY_GEOGRAPHIC_TYPE, 0, 1, georef.epsg))
        else:
            entries.append((KEY_PROJECTED_TYPE, 0, 1, georef.epsg))
            if georef.units == "m":
                entries.append((KEY_PROJ_LINEAR_UNITS, 0, 1, 9001))
    entries.sort()
    directory = [1, 1, 0, len(entries)]
    for e in entries:
        directory.extend(e)
    tags.append((TAG_GEOKEYS, "H", len(directory), tuple(directory), True))
    if ascii_params:
        tags.append((TAG_ASCII_PARAMS, "s", 0, ascii_params, True))
    return tags


def read_rasterio(path: Path) -> tuple[Georef | None, list[str]]:
    """(Georef or None, warnings) of a GeoTIFF through rasterio (GDAL): the transform (area
    convention: GDAL shifts PixelIsPoint files) and the CRS (EPSG when it has one, else WKT)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(str(path), driver="GTiff") as ds:
            crs = ds.crs
            transform = ds.transform
            has_transform = not transform.is_identity
    if not has_transform:
        return None, notes
    epsg = wkt = None
    if crs is not None:
        try:
            epsg = crs.to_epsg()
        except Exception:
            epsg = None
        if epsg is None:
            wkt = crs.to_wkt()
    try:
        return Georef(tuple(transform.to_gdal()), wkt, epsg, None), notes
    except ValueError as exc:
        notes.append(f"GeoTIFF georeference ignored: {exc}")
        return None, notes


def write_rasterio(path: Path, georef: Georef) -> None:
    """Set the transform and CRS of an existing GeoTIFF in place through rasterio (GDAL encodes
    any WKT as geokeys)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import Affine

    crs = None
    if georef.epsg is not None:
        crs = CRS.from_epsg(georef.epsg)
    elif georef.crs_wkt:
        crs = CRS.from_wkt(georef.crs_wkt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(str(path), "r+", driver="GTiff") as ds:
            ds.transform = Affine.from_gdal(*georef.transform)
            if crs is not None:
                ds.crs = crs

"""ENVI header + binary data (BSQ/BIL/BIP, either byte order), memory-mapped through `spectral`."""
from __future__ import annotations

import base64
import json
import locale
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from app.core.cube import Cube
from app.core.io import georef as georef_mod
from app.core.io.value_range import ValueRange, product_convention
from app.core.errors import CubeError, MissingFileError, NonNumericError, TruncatedFileError
from app.core.io._common import (
    ReadOptions,
    atomic_dir,
    honour_nonfinite,
    decide_range,
    read_text,
    reflectance_for_writing,
    wavelengths_to_nm,
)

DATA_EXTENSIONS = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin", "")
_INTERLEAVE_AXES = {  # positions of (H, W, B) in the stored array
    "bsq": (1, 2, 0),  # bands, lines, samples
    "bil": (0, 2, 1),  # lines, bands, samples
    "bip": (0, 1, 2),  # lines, samples, bands
}


def header_for(path: Path) -> Path | None:
    """The header of an ENVI data file or the header itself; None when there is none."""
    path = Path(path)
    if path.suffix.lower() == ".hdr":
        return path
    for cand in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr"),
                 path.with_suffix(".HDR"), path.with_name(path.name + ".HDR")):
        if cand.is_file():
            return cand
    return None


def data_for(header: Path, meta: dict) -> Path:
    """The binary file that belongs to a header (by its 'data file' field or by name)."""
    named = meta.get("data file")
    if named:
        cand = header.parent / Path(str(named)).name
        if cand.is_file():
            return cand
    stem = header.with_suffix("")
    for ext in DATA_EXTENSIONS + tuple(e.upper() for e in DATA_EXTENSIONS if e):
        cand = stem.with_name(stem.name + ext) if ext else stem
        if cand.is_file() and cand.suffix.lower() != ".hdr":
            return cand
    raise MissingFileError(header, "ENVI header found but no data file beside it "
                                   f"(looked for {stem.name} with {', '.join(e or 'no extension' for e in DATA_EXTENSIONS)})")


def _header_text(header: Path) -> str:
    """The header as text: UTF-8, else Latin-1 (ENVI itself writes the system's 8-bit code page,
    so one accented letter in a description is common and harmless)."""
    text = read_text(header, "is a binary file, not an ENVI header (a text file starting with 'ENVI')")
    if not text.lstrip("\ufeff").startswith("ENVI"):
        raise CubeError(header, "is not an ENVI header: its first line does not start with 'ENVI'")
    return text.lstrip("\ufeff")


def _read_header(header: Path) -> dict:
    import spectral.io.envi as envi

    text = _header_text(header)
    encoding = locale.getpreferredencoding(False)
    try:
        fits = text.encode(encoding) == header.read_bytes()
    except (UnicodeError, LookupError, OSError):
        fits = False
    try:
        if fits:
            meta = envi.read_envi_header(str(header))
        else:  # spectral opens the file in the locale's encoding: give it a copy in that encoding
            with tempfile.TemporaryDirectory(prefix="hsi-hdr-") as tmp:
                copy = Path(tmp) / "header.hdr"
                copy.write_bytes(text.encode(encoding, errors="replace"))
                meta = envi.read_envi_header(str(copy))
    except Exception as exc:  # spectral raises several unrelated types for bad headers
        reason = " ".join(str(exc).split()) or "a { list } is not closed"
        raise CubeError(header, f"not a valid ENVI header ({reason})") from None
    for key in ("lines", "samples", "bands", "data type"):
        if key not in meta:
            raise CubeError(header, f"ENVI header lacks the mandatory field '{key}'")
    return meta


def _int_field(meta: dict, key: str, header: Path, default: int | None = None, minimum: int = 0) -> int:
    value = meta.get(key, default)
    text = " ".join(value) if isinstance(value, list) else str(value).strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise CubeError(header, f"ENVI header field '{key}' is {_shown(text)}, not a whole number")
    number = int(text)
    if number < minimum:
        raise CubeError(header, f"ENVI header field '{key}' is {number}; it must be at least {minimum}")
    return number


def _float_field(meta: dict, key: str, header: Path) -> float | None:
    value = meta.get(key)
    if value in (None, ""):
        return None
    text = " ".join(value) if isinstance(value, list) else str(value).strip()
    try:
        return float(text)
    except ValueError:
        raise CubeError(header, f"ENVI header field '{key}' is {_shown(text)}, not a number") from None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _float_list(meta: dict, key: str):
    value = meta.get(key)
    if value is None:
        return None
    try:
        return np.asarray([float(v) for v in (value if isinstance(value, list) else [value])])
    except (TypeError, ValueError):
        return None


_COMPLEX_TYPES = {"6": "complex64", "9": "complex128"}


def read(path: Path, options: ReadOptions) -> Cube:
    import spectral.io.envi as envi

    header = header_for(path)
    if header is None:
        raise MissingFileError(path, "ENVI data file without a .hdr header beside it")
    meta = _read_header(header)
    data_path = data_for(header, meta)
    lines = _int_field(meta, "lines", header, minimum=1)
    samples = _int_field(meta, "samples", header, minimum=1)
    bands = _int_field(meta, "bands", header, minimum=1)
    offset = _int_field(meta, "header offset", header, default=0)
    interleave = str(meta.get("interleave", "bsq")).strip().lower()
    if interleave not in _INTERLEAVE_AXES:
        raise CubeError(header, f"unknown ENVI interleave {_shown(interleave)} (expected bsq, bil or bip)")
    code = str(meta["data type"]).strip()
    if code in _COMPLEX_TYPES:
        raise NonNumericError(header, f"ENVI data type {code} is {_COMPLEX_TYPES[code]}: complex numbers; only "
                                      f"real-valued cubes are read (save the magnitude or the real part)")
    try:
        dtype = np.dtype(envi.envi_to_dtype[code])
    except KeyError:
        known = ", ".join(sorted((k for k in envi.envi_to_dtype if k not in _COMPLEX_TYPES), key=int))
        raise CubeError(header, f"unsupported ENVI data type {_shown(code)} (readable: {known})") from None
    byte_order = str(meta.get("byte order", "0")).strip()
    if byte_order not in ("0", "1"):
        raise CubeError(header, f"ENVI header field 'byte order' is {_shown(byte_order)}; it must be 0 (little "
                                f"endian) or 1 (big endian)")
    dtype = dtype.newbyteorder(">" if byte_order == "1" else "<")
    expected = offset + lines * samples * bands * dtype.itemsize
    actual = os.path.getsize(data_path)
    if actual < expected:
        raise TruncatedFileError(
            data_path, f"holds {actual} bytes but its header ({header.name}: {lines} lines x {samples} "
                       f"samples x {bands} bands of {dtype.name}) needs {expected}: the file is "
                       f"truncated or the header is wrong")
    stored_shape = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples),
                    "bip": (lines, samples, bands)}[interleave]
    try:
        raw = np.memmap(data_path, dtype=dtype, mode="r", offset=offset, shape=stored_shape)
    except (OSError, ValueError, OverflowError) as exc:
        raise CubeError(data_path, f"cannot be memory-mapped ({exc})") from None
    axes = _INTERLEAVE_AXES[interleave]

    warnings = []
    if actual > expected:
        warnings.append(f"data file has {actual - expected} bytes more than the header describes")

    ignore_value = _float_field(meta, "data ignore value", header)
    raw = honour_nonfinite(raw, data_path, options, warnings, lazy=True)
    stated = None
    rsf = _float_field(meta, "reflectance scale factor", header)
    if rsf is not None:
        if rsf > 0 and np.isfinite(rsf):
            stated = ValueRange(1.0 / rsf, 0.0, "stated", f"divided by the header's reflectance scale factor {rsf:g}")
        else:
            warnings.append(f"reflectance scale factor {rsf:g} is not a positive number: ignored")
    gains, offsets = _float_list(meta, "data gain values"), _float_list(meta, "data offset values")
    band_gain = band_offset = None
    if stated is None and (gains is not None or offsets is not None):
        g = gains if gains is not None and gains.size == bands else None
        o = offsets if offsets is not None and offsets.size == bands else None
        if (gains is not None and g is None) or (offsets is not None and o is None):
            warnings.append(f"data gain/offset values do not list {bands} numbers: ignored")
        elif (g is None or np.ptp(g) == 0) and (o is None or np.ptp(o) == 0):
            gain, offset = (float(g[0]) if g is not None else 1.0), (float(o[0]) if o is not None else 0.0)
            if gain != 0.0:
                stated = ValueRange(gain, offset, "stated", f"stored values x the header's data gain {gain:g} + "
                                                            f"data offset {offset:g}")
        elif not (np.isfinite(g if g is not None else 0).all() and np.isfinite(o if o is not None else 0).all()):
            warnings.append("the header's data gain/offset values are not all finite numbers: ignored")
        else:  # one gain and offset per band, applied band by band as the values are read
            band_gain, band_offset = g, o
            stated = ValueRange(1.0, 0.0, "stated", "stored values x the header's per-band data gain values "
                                f"({_span(g)}) + data offset values ({_span(o)})")
    convention = _product_convention(meta, dtype) if stated is None else None
    chosen = decide_range(dtype, options, raw, stated=stated, convention=convention, axes=axes, ignore=ignore_value)
    warnings.extend(chosen.warnings)
    if chosen.rule != "stated":  # the user's rule replaces the header's, per-band gains included
        band_gain = band_offset = None

    raw_wavelengths = _float_list(meta, "wavelength")
    if raw_wavelengths is None and meta.get("wavelength") not in (None, "", []):
        warnings.append("header's wavelength list holds values that are not numbers: ignored")
    wavelengths, note = wavelengths_to_nm(raw_wavelengths, meta.get("wavelength units"), header)
    if note:
        warnings.append(note)
    fwhm = _float_list(meta, "fwhm")
    if fwhm is not None and wavelengths is not None and raw_wavelengths[0] != 0:
        fwhm = fwhm * (wavelengths[0] / raw_wavelengths[0])  # same unit conversion as the centres
    if wavelengths is not None and wavelengths.size != bands:
        warnings.append(f"header lists {wavelengths.size} wavelengths for {bands} bands: ignored")
        wavelengths = None
    if fwhm is not None and fwhm.size != bands:
        fwhm = None
    bbl = _float_list(meta, "bbl")
    bad = (bbl == 0) if bbl is not None and bbl.size == bands else None
    geo, geo_notes = georef_mod.from_envi(meta)
    warnings.extend(geo_notes)

    return Cube(
        raw=raw, axes=axes, scale=chosen.multiplier, offset=chosen.offset, ignore_value=ignore_value,
        band_gain=band_gain, band_offset=band_offset, wavelengths_nm=wavelengths, fwhm_nm=fwhm, bad_bands=bad,
        name=header.stem, source_path=header, normalisation=chosen.text,
        metadata={"format": "envi", "interleave": interleave, "byte_order": "big" if dtype.byteorder == ">" else "little",
                  "data_file": str(data_path), "header": {k: v for k, v in meta.items() if k not in ("wavelength", "fwhm", "bbl")},
                  "warnings": warnings, "value_rule": chosen.rule, **_provenance_of(meta),
                  **({"georef": geo.to_dict()} if geo is not None else {})},
    )


def _span(values) -> str:
    if values is None:
        return "none"
    return f"{values.min():g} to {values.max():g}" if np.ptp(values) else f"{values[0]:g}"


_AVIRIS = re.compile(r"\baviris", re.I)
_REFLECTANCE_WORDS = re.compile(r"reflectance|\brfl\b|_rfl|rfl_|_corr_|\bcorr\b", re.I)
_RADIANCE_WORDS = re.compile(r"radiance|\brdn\b|_rdn|rdn_", re.I)


def _product_convention(meta: dict, dtype: np.dtype):
    """AVIRIS / AVIRIS-NG reflectance stored as int16/uint16 without a stated factor: x 10000, as
    JPL distributes it. Recognised from the header's ``sensor type`` and ``description`` (never the
    file name); radiance products (``rdn``) and floats (already reflectance) are left alone."""
    if dtype.newbyteorder("=") not in (np.dtype(np.int16), np.dtype(np.uint16)):
        return None
    sensor, description = str(meta.get("sensor type", "")), str(meta.get("description", ""))
    if not (_AVIRIS.search(sensor) or _AVIRIS.search(description)):
        return None
    text = f"{sensor} {description}"
    if _RADIANCE_WORDS.search(text) or not _REFLECTANCE_WORDS.search(text):
        return None
    return product_convention("AVIRIS reflectance", evidence="the header's sensor type / description")


_PROVENANCE_KEY = "provenance json base64"


def _provenance_of(meta: dict) -> dict:
    """{'provenance': dict} from the header's base64 JSON field written by ``write`` ({} if none)."""
    raw = meta.get(_PROVENANCE_KEY)
    if not raw:
        return {}
    try:
        value = json.loads(base64.b64decode(str(raw).strip()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return {"provenance": value} if isinstance(value, dict) else {}


def write(cube: Cube, path: Path, *, interleave: str = "bsq", byteorder: str = "little") -> Path:
    """Write float32 ENVI (header + .img) with wavelengths in nm, FWHM, bbl, provenance and the
    georeference (``map info``, ``coordinate system string``).

    ``path`` may name the header (.hdr) or the data file; both files appear together or not at all.
    """
    import spectral.io.envi as envi

    path = Path(path)
    header = path if path.suffix.lower() == ".hdr" else path.with_suffix(".hdr")
    data_file = header.with_suffix(".img") if path.suffix.lower() in (".hdr", "") else path
    data, meta = reflectance_for_writing(cube)
    interleave = interleave.lower()
    if interleave not in _INTERLEAVE_AXES:
        raise ValueError(f"interleave must be bsq, bil or bip, not {interleave!r}")
    md = {"description": f"{cube.name} written by hsi-sr-viewer", "wavelength units": "Nanometers",
          "reflectance scale factor": 1.0}
    if meta["wavelengths_nm"] is not None:
        md["wavelength"] = [f"{v:.6g}" for v in meta["wavelengths_nm"]]
    if meta["fwhm_nm"] is not None:
        md["fwhm"] = [f"{v:.6g}" for v in meta["fwhm_nm"]]
    if meta["bad_bands"] is not None:
        md["bbl"] = [0 if b else 1 for b in meta["bad_bands"]]
    for key, value in (cube.metadata.get("provenance") or {}).items():
        md[f"provenance {key}".replace("_", " ")] = str(value).replace("{", "(").replace("}", ")")
    geo = georef_mod.georef_of(cube.metadata)
    if geo is not None:  # map info, coordinate system string (and the transform to the last bit)
        md.update(georef_mod.to_envi(geo))
    if cube.metadata.get("provenance"):  # the exact provenance, read back by ``read``
        md[_PROVENANCE_KEY] = base64.b64encode(json.dumps(cube.metadata["provenance"], default=str)
                                               .encode("utf-8")).decode("ascii")
    with atomic_dir(header.parent, header.stem) as tmp:
        tmp_header = tmp / header.name
        tmp_data = tmp / data_file.name
        envi.save_image(str(tmp_header), data, dtype=np.float32, interleave=interleave,
                        byteorder=1 if byteorder == "big" else 0, metadata=md, force=True,
                        ext=data_file.suffix or ".img")
        produced = tmp / (header.stem + (data_file.suffix or ".img"))
        if produced != tmp_data:
            os.replace(produced, tmp_data)
        os.replace(tmp_data, data_file)
        os.replace(tmp_header, header)
    return header

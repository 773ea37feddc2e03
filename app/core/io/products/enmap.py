"""EnMAP products: ``*-SPECTRAL_IMAGE.TIF`` (a band-sequential GeoTIFF) with ``*-METADATA.XML``.

Open the product folder, the TIF or the XML. From the XML (``/level_X/specific/
bandCharacterisation/bandID[@number]``): the band centres (``wavelengthCenterOfBand``, nm), the
FWHM (``FWHMOfBand``), the per-band ``GainOfBand`` / ``OffsetOfBand`` (value = DN x gain +
offset, stated: applied band by band), and the no-data value (an element named ``noDataValue``,
else the TIF's GDAL_NODATA). An L2A product (reflectance) whose XML states no gain other than 1
is read as reflectance x 10000, the L2A convention; the level comes from the XML's product name
(``ENMAP01-____L2A-...``) or a level element, never from the path.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from app.core.cube import Cube
from app.core.errors import CubeError, MissingFileError
from app.core.io._common import ReadOptions
from app.core.io.value_range import ValueRange, product_convention

MAX_XML_BYTES = 64 << 20
_IMAGE = re.compile(r"SPECTRAL_IMAGE\.TIFF?$", re.I)
_METADATA = re.compile(r"METADATA\.XML$", re.I)
_LEVEL = re.compile(r"(?<![A-Z0-9])L(1B|1C|2A)(?![A-Z0-9])", re.I)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(xml_path: Path) -> ET.Element:
    try:
        if xml_path.stat().st_size > MAX_XML_BYTES:
            raise CubeError(xml_path, f"metadata XML larger than {MAX_XML_BYTES >> 20} MB: not read")
        return ET.parse(str(xml_path)).getroot()
    except ET.ParseError as exc:
        raise CubeError(xml_path, f"is not well-formed XML ({exc})") from None
    except OSError as exc:
        raise CubeError(xml_path, f"cannot be read ({exc.strerror or exc})") from None


def _band_elements(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if _local(e.tag) == "bandID" and _child(e, "wavelengthCenterOfBand") is not None]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for sub in element:
        if _local(sub.tag) == name:
            return sub
    return None


def is_metadata(xml_path: Path) -> bool:
    """True for an EnMAP METADATA.XML: a ``level_X`` root with a band characterisation table."""
    try:
        with open(xml_path, "rb") as fh:
            head = fh.read(4096)
        if b"level_X" not in head and b"bandCharacterisation" not in head:
            return False
        root = _parse(Path(xml_path))
    except (OSError, CubeError):
        return False
    return _local(root.tag) == "level_X" and bool(_band_elements(root))


def metadata_beside(tif: Path) -> Path | None:
    """The METADATA.XML of a ``*-SPECTRAL_IMAGE.TIF`` (same product name), when it is EnMAP's."""
    tif = Path(tif)
    if not _IMAGE.search(tif.name):
        return None
    stem = _IMAGE.sub("", tif.name)
    for cand in tif.parent.iterdir() if tif.parent.is_dir() else ():
        if cand.name.startswith(stem) and _METADATA.search(cand.name) and cand.is_file() and is_metadata(cand):
            return cand
    return None


def in_folder(folder: Path) -> tuple[Path, Path] | None:
    """(image, metadata) of the EnMAP product in ``folder``, or None when it holds none."""
    folder = Path(folder)
    try:
        xmls = [p for p in folder.iterdir() if p.is_file() and _METADATA.search(p.name)]
    except OSError:
        return None
    xmls = [p for p in xmls if is_metadata(p)]
    if not xmls:
        return None
    if len(xmls) > 1:
        raise CubeError(folder, f"holds {len(xmls)} EnMAP metadata files ({', '.join(p.name for p in xmls)}); "
                                f"open one of them")
    return image_of(xmls[0]), xmls[0]


def image_of(xml_path: Path) -> Path:
    """The SPECTRAL_IMAGE TIF a METADATA.XML belongs to: the file the XML names, else the file
    beside it with the same product name."""
    xml_path = Path(xml_path)
    root = _parse(xml_path)
    named = {Path(e.text.strip()).name for e in root.iter() if e.text and _IMAGE.search(e.text.strip())}
    for name in sorted(named):
        cand = xml_path.parent / name
        if cand.is_file():
            return cand
    stem = _METADATA.sub("", xml_path.name)
    for cand in sorted(xml_path.parent.iterdir()):
        if cand.name.startswith(stem) and _IMAGE.search(cand.name) and cand.is_file():
            return cand
    raise MissingFileError(xml_path, "EnMAP metadata without its SPECTRAL_IMAGE.TIF beside it"
                                     + (f" (it names {', '.join(sorted(named))})" if named else ""))


def _level(root: ET.Element) -> str | None:
    for e in root.iter():
        if _local(e.tag) in ("name", "productType", "processingLevel", "level", "productLevel") and e.text:
            m = _LEVEL.search(e.text)
            if m:
                return "L" + m.group(1).upper()
    return None


def _nodata(root: ET.Element) -> float | None:
    for e in root.iter():
        if _local(e.tag).lower() in ("nodatavalue", "nodata") and e.text:
            try:
                return float(e.text.strip())
            except ValueError:
                continue
    return None


def band_table(xml_path: Path) -> dict:
    """What the XML says about the bands: wavelengths, fwhm, gain, offset ((B,) arrays or None),
    level, nodata, count."""
    root = _parse(xml_path)
    elements = _band_elements(root)
    numbered = []
    for i, e in enumerate(elements):
        try:
            number = int(e.get("number", i + 1))
        except ValueError:
            number = i + 1
        numbered.append((number, e))
    numbered.sort(key=lambda t: t[0])

    def column(name: str) -> np.ndarray | None:
        values = []
        for _, e in numbered:
            sub = _child(e, name)
            if sub is None or sub.text is None:
                return None
            try:
                values.append(float(sub.text.strip()))
            except ValueError:
                raise CubeError(xml_path, f"{name} of band {e.get('number')} is {sub.text.strip()!r}, "
                                          f"not a number") from None
        return np.asarray(values) if values else None

    return {"wavelengths": column("wavelengthCenterOfBand"), "fwhm": column("FWHMOfBand"),
            "gain": column("GainOfBand"), "offset": column("OffsetOfBand"), "level": _level(root),
            "nodata": _nodata(root), "count": len(numbered)}


def locate(path: Path) -> tuple[Path, Path]:
    """(image, metadata) from the folder, the TIF or the XML of a product."""
    path = Path(path)
    if path.is_dir():
        found = in_folder(path)
        if found is None:
            raise MissingFileError(path, "holds no EnMAP METADATA.XML")
        return found
    if _METADATA.search(path.name) or path.suffix.lower() == ".xml":
        return image_of(path), path
    xml = metadata_beside(path)
    if xml is None:
        raise MissingFileError(path, "EnMAP image without its METADATA.XML beside it")
    return path, xml


def read(path: Path, options: ReadOptions) -> Cube:
    from app.core.io import imagefiles

    image, xml = locate(path)
    table = band_table(xml)

    def product(bands: int, warnings: list[str]) -> dict:
        if table["count"] != bands:
            raise CubeError(xml, f"lists {table['count']} bands but {image.name} holds {bands}")
        out: dict = {"wavelengths_nm": table["wavelengths"], "fwhm_nm": table["fwhm"], "name": _name(image),
                     "metadata": {"format": "enmap", "product_level": table["level"], "metadata_xml": str(xml),
                                  "image": str(image)}}
        gain, offset = table["gain"], table["offset"]
        gain = np.ones(bands) if gain is None else gain
        offset = np.zeros(bands) if offset is None else offset
        level = table["level"] or "unknown level"
        if np.any(gain != 1.0) or np.any(offset != 0.0):
            if np.any(gain == 0.0) or not (np.isfinite(gain).all() and np.isfinite(offset).all()):
                warnings.append(f"{xml.name}: GainOfBand/OffsetOfBand hold 0 or non-numbers: ignored")
            elif np.ptp(gain) == 0 and np.ptp(offset) == 0:
                out["stated"] = ValueRange(float(gain[0]), float(offset[0]), "stated",
                                           f"stored values x GainOfBand {gain[0]:g} + OffsetOfBand {offset[0]:g} "
                                           f"(EnMAP {level}, {xml.name})")
            else:
                out["stated"] = ValueRange(1.0, 0.0, "stated", f"stored values x the per-band GainOfBand "
                                           f"({gain.min():g} to {gain.max():g}) + OffsetOfBand ({offset.min():g} to "
                                           f"{offset.max():g}) (EnMAP {level}, {xml.name})")
                out["band_gain"], out["band_offset"] = gain, offset
        if "stated" not in out and table["level"] == "L2A":
            out["convention"] = product_convention("EnMAP L2A", evidence="the product level in its METADATA.XML")
        if table["nodata"] is not None:
            out["ignore_value"] = table["nodata"]
        return out

    return imagefiles.read_tiff(image, options, product=product)


def _name(image: Path) -> str:
    return _IMAGE.sub("", image.name).rstrip("-_") or image.stem

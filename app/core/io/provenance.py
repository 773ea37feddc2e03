"""The header every JSON document the project writes begins with, the check readers make on it,
and the cheap fingerprint of a data file that result rows carry.

Header (:func:`stamp`), before the document's own keys, which stay as they were::

    schema_version   int, per document kind (SCHEMA_VERSIONS). A document without one is version 1:
                     the unversioned shape the project wrote before the header existed.
    kind             "eval", "compare", "simulate" (protocol.json), "bench", "info", "cube-metadata"
    software         {"name", "version" (the installed package metadata, app.__version__), "python",
                     "numpy", "torch"}
    created          UTC time, ISO 8601, seconds
    command_line     the ``hsi-viewer`` arguments of the process, when the CLI started it
    arguments        what the producing function was given (paths, protocol, models, options...)
    metric_conventions  documents holding metric values: the metric table (column, label, unit,
                     better), the PSNR cap, SAM's left-out pixels, the value-range rule and where the
                     README explains them

:func:`app.core.io.jsonio.write_json` refuses a document without the header, so no results file
leaves the project unversioned.
"""
from __future__ import annotations

import functools
import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from app import DISTRIBUTION, __version__
from app.core.errors import HsiError
from app.core.io.envi import data_for
from app.core.io.value_range import FLOAT_UNIT_LIMIT

SCHEMA_VERSIONS: dict[str, int] = {
    # 2: the first versioned shape (header + per-row provenance); 1: the same keys without them
    "eval": 2, "compare": 2, "simulate": 2, "bench": 2, "info": 2, "cube-metadata": 2,
}
HEADER_KEYS = ("schema_version", "kind", "software", "created")
HASH_LIMIT_BYTES = 64 * 2 ** 20  # files up to this size get a sha256; larger ones size + mtime only
README_SECTION = "README.md, 'Metric conventions: how stored values become reflectance, and what is left out'"
VALUE_RANGE_RULE = (
    "stored values become [0, 1] by, in order: what the file states (scale factor, gain/offset, a stored "
    "maximum such as maxValue); a dataset convention (CAVE PNG /65535, 8-bit /255); floats up to "
    f"{FLOAT_UNIT_LIMIT:g} taken as reflectance; otherwise divided by the cube's own maximum. A prediction "
    "goes onto its GT's scale, chosen by the mean (never the maximum alone); every row states its rule")

_command_line: list[str] | None = None


class SchemaError(HsiError):
    """A document written by a newer version of the program (or with a broken schema_version)."""


def set_command_line(argv) -> None:
    """Record the CLI arguments of this process (the CLI's ``main`` does; ``None`` forgets them)."""
    global _command_line
    _command_line = None if argv is None else [str(a) for a in argv]


@functools.lru_cache(maxsize=1)
def software() -> dict:
    """{name, version, python, numpy, torch} of this process (torch from its package metadata: no import)."""
    try:
        torch_version = _metadata.version("torch")
    except _metadata.PackageNotFoundError:
        torch_version = None
    return {"name": DISTRIBUTION, "version": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch_version}


def stamp(doc: dict, kind: str, *, arguments: dict | None = None, metric_conventions: dict | None = None,
          run_details: bool = True) -> dict:
    """``doc`` with the header in front (a new dict; the document's own keys keep their values).

    A document that already has a header keeps it: it says who produced the data, not who re-saved it.
    ``metric_conventions``: the science's block (``app.core.science.metrics.metric_conventions()``);
    the value-range rule and the README reference are added here. ``run_details=False`` leaves the
    time and the command line out (metadata beside a cube: the same cube, the same bytes)."""
    if kind not in SCHEMA_VERSIONS:
        raise ValueError(f"unknown document kind {kind!r}; expected one of {', '.join(SCHEMA_VERSIONS)}")
    if is_stamped(doc):
        return doc
    header: dict = {"schema_version": SCHEMA_VERSIONS[kind], "kind": kind, "software": dict(software())}
    if run_details:
        header["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if run_details and _command_line is not None:
        header["command_line"] = ["hsi-viewer", *_command_line]
    if arguments is not None:
        header["arguments"] = arguments
    if metric_conventions is not None:
        header["metric_conventions"] = {**metric_conventions, "value_range": VALUE_RANGE_RULE,
                                        "reference": README_SECTION}
    return {**header, **{k: v for k, v in doc.items() if k not in header}}


def is_stamped(doc) -> bool:
    """True when ``doc`` carries the header (schema_version, kind and software; created where it applies)."""
    return (isinstance(doc, dict) and isinstance(doc.get("schema_version"), int) and doc.get("kind") in SCHEMA_VERSIONS
            and isinstance(doc.get("software"), dict))


def check_schema(doc: dict, kind: str, where: str = "") -> int:
    """The schema version of a ``kind`` document read from ``where`` (1 when it has none).

    Raises SchemaError (one line naming ``where``) for a version newer than this program reads or a
    schema_version that is not a positive whole number."""
    prefix = f"{where}: " if where else ""
    version = doc.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"{prefix}schema_version {version!r} is not a positive whole number")
    newest = SCHEMA_VERSIONS[kind]
    if version > newest:
        sw = doc.get("software") if isinstance(doc.get("software"), dict) else {}
        by = f"{sw.get('name') or DISTRIBUTION} {sw['version']}" if sw.get("version") else "a newer version"
        raise SchemaError(f"{prefix}written by a newer version ({by}, {kind} schema {version}); "
                          f"{DISTRIBUTION} {__version__} reads up to schema {newest}: update to open it")
    return version


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=256)
def _file_print(path: str, size: int, mtime_ns: int) -> dict:
    out = {"bytes": size, "mtime": _utc(mtime_ns / 1e9)}
    if size <= HASH_LIMIT_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out["sha256"] = digest.hexdigest()
    return out


def file_fingerprint(path) -> dict | None:
    """What identifies a data file cheaply: {"bytes", "mtime" (UTC)} plus "sha256" for files up to
    64 MiB (HASH_LIMIT_BYTES; a larger file is not read a second time). A folder (CAVE PNG bands):
    {"files", "bytes", "mtime" of the newest}. An ENVI header also gets its data file's print under
    "data". None when the path cannot be read (the row says so elsewhere)."""
    p = Path(path)
    try:
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            stats = [f.stat() for f in files]
            return {"files": len(files), "bytes": sum(s.st_size for s in stats),
                    "mtime": _utc(max((s.st_mtime for s in stats), default=p.stat().st_mtime))}
        st = p.stat()
        out = dict(_file_print(str(p.resolve()), st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    if p.suffix.lower() == ".hdr":
        try:
            data = data_for(p, {})
        except HsiError:
            data = None
        if data is not None:
            out["data"] = {"file": data.name, **(file_fingerprint(data) or {})}
    return out

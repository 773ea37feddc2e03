"""JSON as every file the project writes it: strict (no NaN or Infinity, which strict parsers
reject), numpy values as plain numbers and lists, paths as strings, written atomically.

A non-finite number becomes ``null``; the row or record that holds it says why in its notes (for
example "ERGAS needs the scale factor"), so nothing is lost but the unparseable token.

:func:`write_json` writes documents only: dicts stamped with the header of
:mod:`app.core.io.provenance` (schema_version, kind, software, created...).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.core.io._common import atomic_path
from app.core.io.provenance import is_stamped


def jsonable(value: Any, *, max_array_size: int | None = None) -> Any:
    """``value`` with JSON types only: dicts (string keys), lists, str, int, finite float, bool, None.

    Mappings (dicts, and read-only ones such as the metric results of
    :mod:`app.core.science.metric_result`) become dicts, numpy scalars and arrays numbers and lists,
    tuples lists, paths strings, non-finite floats None, anything else its ``str``. With
    ``max_array_size``, mapping entries holding a numpy array larger than that are left out (maps
    and per-pixel data do not belong in a results file).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, max_array_size=max_array_size) for k, v in value.items()
                if max_array_size is None or not isinstance(v, np.ndarray) or v.size <= max_array_size}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, max_array_size=max_array_size) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def dumps(value: Any, **kwargs) -> str:
    """Strict JSON text of :func:`jsonable` ``(value)`` (raises ValueError if a NaN slipped through)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


def write_json(path, payload: dict, *, max_array_size: int | None = 64) -> Path:
    """Write ``payload`` as indented strict JSON through a temporary file (nothing half-written).

    ``payload`` must carry the document header (:func:`app.core.io.provenance.stamp`): a ValueError
    otherwise (a programming error: every results file says what wrote it and in which schema)."""
    if not is_stamped(payload):
        raise ValueError(f"{path}: refusing to write a JSON document without its header "
                         f"(stamp it with app.core.io.provenance.stamp)")
    with atomic_path(Path(path)) as tmp:
        text = json.dumps(jsonable(payload, max_array_size=max_array_size), indent=2, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)

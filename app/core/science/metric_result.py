"""What :func:`app.core.science.metrics.compute_all` (and ``compute_all_many`` /
``compute_all_many_streamed``) return: typed, immutable results that also read as the dicts they
used to be.

- :class:`MetricResult`: the scalars (``psnr_db``, ``ssim``, ``sam_deg``, ``ergas``, ``rmse``, ``cc``,
  ``uiqi``) as float fields, the per-band curves (:class:`PerBand`), the maps (:class:`MetricMaps`)
  and what was computed how (``band_index``, ``scale``, ``n_pixels``, ``region``, ``masked``,
  ``masked_pixels``, ``excluded_bands``, ``excluded_band_indices``, ``notes``, ``conventions``).
- Each is also a read-only ``Mapping`` over its field names: ``result["psnr_db"]``,
  ``result.get("uiqi")``, ``"uiqi" in result``, ``dict(result)``, ``result["per_band"]["psnr_db"]``;
  assigning or deleting a key raises TypeError, setting an attribute FrozenInstanceError. A changed
  copy is :meth:`replace` (``dataclasses.replace``).
- A value that was not computed is not a key: ``compute_all_many`` leaves UIQI out, so its results
  have ``uiqi`` None and no ``"uiqi"`` key (nor ``per_band["uiqi"]``).
- They pickle (plain dataclasses of numpy arrays, floats and lists) and
  :func:`app.core.io.jsonio.jsonable` writes them as JSON objects (it takes any Mapping).

The arrays inside are numpy arrays as computed (not copied, not made read-only): "frozen" means
that the fields cannot be rebound, not that the maps are write-protected.

The metric table (:mod:`app.core.science.metric_table`) names the scalars that tables show, by the
keys used here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class _FieldMapping(Mapping):
    """A dataclass read as a read-only mapping of its fields; the fields named in ``_OPTIONAL`` are
    left out of the mapping while they are None (a value that was not computed)."""

    __slots__ = ()
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    _NESTED: ClassVar[dict[str, type]] = {}

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self)
                     if f.name not in self._OPTIONAL or getattr(self, f.name) is not None)

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def replace(self, **changes):
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The plain nested dict (the arrays themselves, not copies)."""
        return {k: (v.to_dict() if isinstance(v, _FieldMapping) else v) for k, v in self.items()}

    @classmethod
    def from_mapping(cls, values: Mapping):
        """From a mapping of the same keys (a plain dict as the metrics used to return, or a result);
        nested parts may be dicts too. A missing optional key is None; an unknown key is a TypeError."""
        kwargs = dict(values)
        for name in cls._OPTIONAL:
            kwargs.setdefault(name, None)
        for name, kind in cls._NESTED.items():
            part = kwargs.get(name)
            if part is not None and not isinstance(part, kind):
                kwargs[name] = kind.from_mapping(part)
        return cls(**kwargs)


@dataclass(frozen=True, eq=False)
class PerBand(_FieldMapping):
    """(B,) float64 curves, one value per band (NaN at excluded bands), and the band centres."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"uiqi"})

    psnr_db: np.ndarray
    rmse: np.ndarray
    ssim: np.ndarray
    cc: np.ndarray
    uiqi: np.ndarray | None = None              # None (no key): not computed (compute_all_many)
    wavelengths_nm: np.ndarray | None = None    # (B,) nm, or None when unknown


@dataclass(frozen=True, eq=False)
class MetricMaps(_FieldMapping):
    """(h, w) maps of the area (the region's size, else the image's)."""

    rmse: np.ndarray                 # float32, RMSE over bands per pixel
    abs_error: np.ndarray            # float32, |error| at the result's band_index
    sam_deg: np.ndarray              # float32, spectral angle in degrees (0 where not valid)
    sam_valid: np.ndarray            # bool, pixels the SAM scalar counts
    nodata: np.ndarray | None = None  # bool, no-data pixels left out, or None when there are none


@dataclass(frozen=True, eq=False)
class MetricResult(_FieldMapping):
    """The full-reference metrics of one output against its reference (see
    :func:`app.core.science.metrics.compute_all` for what each value is)."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"uiqi"})
    _NESTED: ClassVar[dict[str, type]] = {"per_band": PerBand, "maps": MetricMaps}

    psnr_db: float
    ssim: float
    sam_deg: float
    ergas: float
    rmse: float
    cc: float
    uiqi: float | None  # None (no key): not computed (compute_all_many)
    per_band: PerBand
    maps: MetricMaps
    masked_pixels: int = 0
    excluded_bands: int = 0
    excluded_band_indices: list[int] = field(default_factory=list)
    band_index: int = 0
    scale: float | None = None
    n_pixels: int = 0
    region: tuple[int, int, int, int] | None = None
    masked: bool = False
    notes: list[str] = field(default_factory=list)
    conventions: str = ""

    def with_ssim(self, mean: float, per_band: np.ndarray) -> MetricResult:
        """A copy with SSIM filled in (a pass that left it out, then ``ssim_many``)."""
        return self.replace(ssim=mean, per_band=self.per_band.replace(ssim=per_band))

"""The full-reference metrics every table shows, described once: the viewer's analysis table,
``compare``, ``eval``, the results browser and the exports all take their columns from ``METRICS``.

``key`` is the name in :func:`app.core.science.metrics.compute_all`'s result (a field of
:class:`app.core.science.metric_result.MetricResult`), ``column`` the name in results files (eval /
compare JSON and CSV rows, kept as published files have them).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from app.core.science.metric_result import MetricResult


@dataclass(frozen=True)
class Metric:
    key: str                 # compute_all's result key (MetricResult field)
    column: str              # results-file key
    label: str               # column title with its unit
    short: str               # narrow column title (plain-text tables)
    higher_is_better: bool
    fmt: str                 # str.format spec for one value
    unit: str = ""           # "" for unitless metrics

    def format(self, value) -> str:
        return "" if value is None else self.fmt.format(value)

    def value(self, result: "MetricResult | Mapping"):
        """This metric's scalar in a ``compute_all`` result (its typed field; a plain dict of the
        same keys also works)."""
        return result[self.key]


METRICS: tuple[Metric, ...] = (
    Metric("psnr_db", "psnr", "PSNR (dB)", "PSNR", True, "{:.2f}", "dB"),
    Metric("ssim", "ssim", "SSIM", "SSIM", True, "{:.4f}"),
    Metric("sam_deg", "sam_deg", "SAM (°)", "SAM°", False, "{:.3f}", "degrees"),
    Metric("ergas", "ergas", "ERGAS", "ERGAS", False, "{:.3f}"),
    Metric("rmse", "rmse", "RMSE", "RMSE", False, "{:.5f}"),
)
BY_COLUMN = {m.column: m for m in METRICS}
COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)
HIGHER_IS_BETTER: dict[str, bool] = {m.column: m.higher_is_better for m in METRICS}


def table_description() -> list[dict]:
    """The table as results files describe it: [{column, key, label, unit, better}] ('higher'/'lower')."""
    return [{"column": m.column, "key": m.key, "label": m.label, "unit": m.unit,
             "better": "higher" if m.higher_is_better else "lower"} for m in METRICS]


def row_values(result: "MetricResult | Mapping") -> dict:
    """``compute_all``'s scalars (a MetricResult, or a dict of the same keys) as a results-file
    row {column: value}."""
    return {m.column: m.value(result) for m in METRICS}

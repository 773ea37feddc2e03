"""What the user selected to analyse, free of Qt: the region of interest on the HR grid and the
analysis settings (error-map kind, metrics scope, per-band curve metric), plus the geometry helpers
that turn them into pixel masks. The scene holds them; :mod:`app.core.evaluation.analysis` reads them.

Coordinates: ROI points are (x, y) = (col, row) in continuous HR pixel units (pixel (r, c) spans
[c, c + 1) x [r, r + 1)); a pixel belongs to a ROI when its centre (c + 0.5, r + 0.5) does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.core.errors import HsiError

ERROR_KINDS: tuple[str, ...] = ("rmse", "abs_band")
ERROR_KIND_TITLES = {"rmse": "per-pixel RMSE over bands", "abs_band": "|error| at the current band"}
SCOPES: tuple[str, ...] = ("image", "roi", "view")
SCOPE_TITLES = {"image": "whole image", "roi": "ROI", "view": "visible view"}
CURVE_METRICS: tuple[str, ...] = ("psnr_db", "rmse", "ssim")
CURVE_TITLES = {"psnr_db": "PSNR (dB)", "rmse": "RMSE", "ssim": "SSIM"}
AB_MODES: tuple[str, ...] = ("swipe", "flicker")


class AnalysisError(HsiError):
    """The analysis cannot run (no reference, nothing to compare, bad ROI)."""


# ---------------------------------------------------------------------------------- ROI
def polygon_mask(points: Sequence[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """(height, width) bool: pixels whose centre lies inside the polygon ((x, y) vertices, even-odd
    rule). Only the polygon's bounding box is tested."""
    mask = np.zeros((height, width), dtype=bool)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return mask
    x0 = max(int(math.floor(pts[:, 0].min())), 0)
    x1 = min(int(math.ceil(pts[:, 0].max())), width)
    y0 = max(int(math.floor(pts[:, 1].min())), 0)
    y1 = min(int(math.ceil(pts[:, 1].max())), height)
    if x1 <= x0 or y1 <= y0:
        return mask
    cx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    cy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    xa, ya = pts[:, 0], pts[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    for ax, ay, bx, by in zip(xa, ya, xb, yb):
        if ay == by:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (ay > cy) != (by > cy)                       # (rows, 1)
        x_at = ax + (cy - ay) * (bx - ax) / (by - ay)          # (rows, 1)
        inside ^= crosses & (cx < x_at)
    mask[y0:y1, x0:x1] = inside
    return mask


@dataclass(frozen=True)
class Roi:
    """A region of interest on the HR grid: ``kind`` 'rect' (two corner points) or 'polygon'
    (three or more vertices); ``points`` are (x, y) = (col, row) in HR pixel units."""

    kind: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self):
        if self.kind not in ("rect", "polygon"):
            raise AnalysisError(f"unknown ROI kind {self.kind!r}; expected 'rect' or 'polygon'")
        pts = tuple((float(x), float(y)) for x, y in self.points)
        if not all(math.isfinite(v) for p in pts for v in p):
            raise AnalysisError(f"ROI points must be finite numbers, got {self.points!r}")
        if self.kind == "rect":
            if len(pts) != 2:
                raise AnalysisError(f"a rectangle ROI needs two corners, got {len(pts)} points")
            (xa, ya), (xb, yb) = pts
            pts = ((min(xa, xb), min(ya, yb)), (max(xa, xb), max(ya, yb)))
        elif len(pts) < 3:
            raise AnalysisError(f"a polygon ROI needs at least three vertices, got {len(pts)}")
        object.__setattr__(self, "points", pts)

    @classmethod
    def rect(cls, x0: float, y0: float, x1: float, y1: float) -> "Roi":
        return cls("rect", ((x0, y0), (x1, y1)))

    @classmethod
    def polygon(cls, points: Sequence[tuple[float, float]]) -> "Roi":
        return cls("polygon", tuple(points))

    def vertices(self) -> np.ndarray:
        """(N, 2) outline (x, y) (a rectangle's four corners)."""
        if self.kind == "rect":
            (x0, y0), (x1, y1) = self.points
            return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)
        return np.asarray(self.points, dtype=np.float64)

    def mask(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool of the pixels inside (centre rule)."""
        if self.kind == "rect":
            (x0, y0), (x1, y1) = self.points
            mask = np.zeros((height, width), dtype=bool)
            c0, c1 = max(int(math.ceil(x0 - 0.5)), 0), min(int(math.ceil(x1 - 0.5)), width)
            r0, r1 = max(int(math.ceil(y0 - 0.5)), 0), min(int(math.ceil(y1 - 0.5)), height)
            if c1 > c0 and r1 > r0:
                mask[r0:r1, c0:c1] = True
            return mask
        return polygon_mask(self.points, height, width)

    def describe(self) -> str:
        if self.kind == "rect":
            (x0, y0), (x1, y1) = self.points
            return f"rectangle rows {y0:.0f}–{y1:.0f}, cols {x0:.0f}–{x1:.0f}"
        return f"polygon of {len(self.points)} vertices"

    def to_dict(self) -> dict:
        """JSON-ready form (sessions): {'kind': ..., 'points': [[x, y], ...]}."""
        return {"kind": self.kind, "points": [[x, y] for x, y in self.points]}

    @classmethod
    def from_dict(cls, data: dict) -> "Roi":
        try:
            return cls(str(data["kind"]), tuple((float(p[0]), float(p[1])) for p in data["points"]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise AnalysisError(f"not a ROI description: {data!r} ({exc})") from None


@dataclass(frozen=True)
class AnalysisSettings:
    """What the analysis shows (saved in sessions): ``error_kind`` in ERROR_KINDS, ``scope`` of
    the metrics table in SCOPES, ``curve_metric`` of the per-band plot in CURVE_METRICS."""

    error_kind: str = "rmse"
    scope: str = "image"
    curve_metric: str = "psnr_db"

    def __post_init__(self):
        for name, allowed in (("error_kind", ERROR_KINDS), ("scope", SCOPES), ("curve_metric", CURVE_METRICS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name.replace('_', ' ')} {value!r}; expected one of {', '.join(allowed)}")

    def to_dict(self) -> dict:
        return {"error_kind": self.error_kind, "scope": self.scope, "curve_metric": self.curve_metric}

    @classmethod
    def from_dict(cls, data: dict) -> "AnalysisSettings":
        known = {k: str(v) for k, v in dict(data).items() if k in ("error_kind", "scope", "curve_metric")}
        return cls(**known)


@dataclass(frozen=True)
class ABChoice:
    """The A/B comparison (saved in sessions): ``mode`` in AB_MODES, the layers ``a_uid`` (left
    of the divider, first in flicker) and ``b_uid`` (None: not chosen), ``divider_x`` the swipe
    divider in HR pixels (None: not placed yet), ``b_chosen`` whether the user picked B (else B
    follows the newest reconstruction)."""

    mode: str = "swipe"
    a_uid: int | None = None
    b_uid: int | None = None
    divider_x: float | None = None
    b_chosen: bool = False

    def __post_init__(self):
        if self.mode not in AB_MODES:
            raise ValueError(f"unknown A/B mode {self.mode!r}; expected 'swipe' or 'flicker'")
        if self.divider_x is not None and not math.isfinite(float(self.divider_x)):
            raise ValueError(f"the A/B divider must be a finite number, got {self.divider_x!r}")


@dataclass(frozen=True)
class SpectraChoice:
    """Which spectra the spectra plot shows, and so what its CSV and File > Export write:
    ``residuals`` (reconstruction − GT on the right axis) and the layers whose curves the user
    hid (``hidden_uids``)."""

    residuals: bool = False
    hidden_uids: frozenset = frozenset()


# ---------------------------------------------------------------------------------- geometry helpers
def view_region(view_range, hr_shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) pixels shown by ``view_range`` ((x0, x1), (y0, y1)), clipped to the image;
    None when the whole image is visible or nothing is."""
    h, w = hr_shape
    if view_range is None:
        return None
    (vx0, vx1), (vy0, vy1) = view_range
    x0, x1 = max(int(math.floor(vx0)), 0), min(int(math.ceil(vx1)), w)
    y0, y1 = max(int(math.floor(vy0)), 0), min(int(math.ceil(vy1)), h)
    if x1 <= x0 or y1 <= y0 or (x0, y0, x1, y1) == (0, 0, w, h):
        return None
    return y0, y1, x0, x1

"""Where the user points, free of Qt: the clicked pixel, the pins (Shift+click), the hover, the
shared zoom (view range) and the region of interest, all on the scene's HR pixel grid.

:class:`Cursor` holds them and emits ``pixel``, ``pins``, ``hover``, ``view_range`` and ``roi`` of
the scene's :class:`~app.core.state.events.SceneEvents`; the grid (H, W) they are clamped to is
passed in by the scene (None without layers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.core.state.events import SceneEvents
from app.core.state.selection import Roi

MAX_PINS = 8


@dataclass(frozen=True)
class Hover:
    """The pointer over a panel: layer uid and HR (row, col); ``inside`` is False off the image."""

    uid: int
    row: int
    col: int
    inside: bool = True


def _clamped(grid: tuple[int, int], row: float, col: float) -> tuple[int, int]:
    h, w = grid
    return int(np.clip(int(math.floor(row)), 0, h - 1)), int(np.clip(int(math.floor(col)), 0, w - 1))


class Cursor:
    """Clicked pixel, pins, hover, view range and ROI. Setters validate and clamp, and emit only
    when the value really changed."""

    def __init__(self, events: SceneEvents):
        self._events = events
        self._pixel: tuple[int, int] | None = None
        self._pins: list[tuple[int, int]] = []
        self._hover: Hover | None = None
        self._view_range: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._roi: Roi | None = None

    # ------------------------------------------------------------------ clicked pixel and pins
    @property
    def pixel(self) -> tuple[int, int] | None:
        """The clicked pixel, HR (row, col), or None."""
        return self._pixel

    def set_pixel(self, grid: tuple[int, int] | None, row: int | None, col: int | None = None) -> None:
        """Select HR pixel (row, col) (clamped to ``grid``); a row of None (or no grid) clears it."""
        if row is None or grid is None:
            pixel = None
        else:
            if col is None:
                raise ValueError("set_pixel needs both row and col")
            pixel = _clamped(grid, row, col)
        if pixel != self._pixel:
            self._pixel = pixel
            self._events.pixel.emit(pixel)

    @property
    def pins(self) -> tuple[tuple[int, int], ...]:
        """Pixels collected with Shift+click (HR (row, col)), oldest first, at most MAX_PINS."""
        return tuple(self._pins)

    def add_pin(self, grid: tuple[int, int] | None, row: float, col: float) -> None:
        """Pin HR pixel (row, col) (clamped); pinning a pinned pixel again unpins it; beyond
        MAX_PINS the oldest pin goes."""
        if grid is None:
            return
        pin = _clamped(grid, row, col)
        if pin in self._pins:
            self._pins.remove(pin)
        else:
            self._pins.append(pin)
            del self._pins[:-MAX_PINS]
        self._events.pins.emit(self.pins)

    def clear_pins(self) -> None:
        if self._pins:
            self._pins.clear()
            self._events.pins.emit(self.pins)

    # ------------------------------------------------------------------ hover
    @property
    def hover(self) -> Hover | None:
        return self._hover

    def set_hover(self, grid: tuple[int, int] | None, uid: int | None, row: float | None = None,
                  col: float | None = None) -> None:
        """Pointer over layer ``uid`` at HR (row, col) (floats allowed); None when it leaves."""
        hover = None
        if uid is not None and row is not None and col is not None and grid is not None:
            h, w = grid
            r, c = int(math.floor(row)), int(math.floor(col))
            inside = 0 <= r < h and 0 <= c < w
            hover = Hover(int(uid), int(np.clip(r, 0, h - 1)), int(np.clip(c, 0, w - 1)), inside)
        if hover != self._hover:
            self._hover = hover
            self._events.hover.emit(hover)

    # ------------------------------------------------------------------ view range (zoom)
    @property
    def view_range(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """((x0, x1), (y0, y1)) in HR pixel units shown by every panel; None: the whole image."""
        return self._view_range

    def set_view_range(self, x_range: Sequence[float] | None, y_range: Sequence[float] | None = None,
                       source: object = None) -> None:
        """Set the shared zoom; ``source`` (the view that changed it) is passed to listeners so
        that it need not apply its own change again."""
        if x_range is None:
            new = None
        else:
            if y_range is None:
                raise ValueError("set_view_range needs both x and y ranges")
            x0, x1 = (float(v) for v in x_range)
            y0, y1 = (float(v) for v in y_range)
            if not all(math.isfinite(v) for v in (x0, x1, y0, y1)) or x1 <= x0 or y1 <= y0:
                raise ValueError(f"invalid view range x={x_range}, y={y_range}")
            new = ((x0, x1), (y0, y1))
        old = self._view_range
        if new is not None and old is not None:
            tol = 1e-6 * max(new[0][1] - new[0][0], new[1][1] - new[1][0])
            if all(abs(a - b) <= tol for a, b in zip((*new[0], *new[1]), (*old[0], *old[1]))):
                return
        elif new is None and old is None and source is not None:
            return
        self._view_range = new
        self._events.view_range.emit(new, source)

    def reset_view(self) -> None:
        """Show the whole image in every panel."""
        self._view_range = None
        self._events.view_range.emit(None, None)

    # ------------------------------------------------------------------ ROI
    @property
    def roi(self) -> Roi | None:
        """The region of interest (:class:`app.core.state.selection.Roi`, HR (x, y) points) or None."""
        return self._roi

    def set_roi(self, roi: Roi | dict | None) -> None:
        """Set (a Roi or its ``to_dict()`` form) or clear (None) the ROI; emits ``events.roi``."""
        if isinstance(roi, dict):
            roi = Roi.from_dict(roi)
        if roi is not None and not isinstance(roi, Roi):
            raise TypeError(f"set_roi takes a Roi, its dict form or None, got {type(roi).__name__}")
        if roi != self._roi:
            self._roi = roi
            self._events.roi.emit(roi)

    def roi_mask(self, grid: tuple[int, int] | None) -> np.ndarray | None:
        """(H, W) bool of the HR pixels inside the ROI, or None."""
        if self._roi is None or grid is None:
            return None
        return self._roi.mask(*grid)

    # ------------------------------------------------------------------ after the layers changed
    def follow_layers(self, grid: tuple[int, int] | None, live_uids: set[int]) -> None:
        """Fit the cursor to the new layers without emitting (the scene emits what changed): the
        pixel and pins onto ``grid``, the hover off closed layers; no layers (``grid`` None)
        clears the zoom and the ROI."""
        if self._pixel is not None:
            self._pixel = None if grid is None else (min(self._pixel[0], grid[0] - 1), min(self._pixel[1], grid[1] - 1))
        self._pins = [] if grid is None else [p for p in self._pins if p[0] < grid[0] and p[1] < grid[1]]
        if self._hover is not None and self._hover.uid not in live_uids:
            self._hover = None
        if not live_uids:
            self._view_range = None
            self._roi = None

"""The layers of a scene: :class:`Layer` (a cube with a role and a name), the roles, and
:class:`LayerList`, the ordered layers on one high-resolution pixel grid.

Geometry: all layers live on one HR pixel grid, the largest layer's (H, W). A layer of size
(H / s, W / s) for an integer ``s`` (the LR input) covers the grid at its true footprint: its pixel
(ly, lx) spans HR rows ly*s .. ly*s+s-1 and columns lx*s .. lx*s+s-1, so the LR pixel covering HR
pixel (y, x) is (y // s, x // s).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from app.core.cube import Cube
from app.core.errors import ShapeMismatchError

ROLES: tuple[str, ...] = ("gt", "lr", "guide", "recon")
ROLE_TITLES: dict[str, str] = {"gt": "GT", "lr": "LR", "guide": "Guide", "recon": "Recon"}
ROLE_DESCRIPTIONS: dict[str, str] = {
    "gt": "ground truth (reference)",
    "lr": "low-resolution input",
    "guide": "guide image (RGB / MSI)",
    "recon": "reconstruction",
}


@dataclass(eq=False)
class Layer:
    """One cube shown in the viewer.

    Attributes:
        cube: the data.
        role: one of ``ROLES``.
        name: display name.
        uid: unique within the scene, stable while the layer exists.
        scale: integer factor from this layer's grid to the scene's HR grid (1 for HR layers).
    """

    cube: Cube
    role: str
    name: str
    uid: int
    scale: int = 1

    @property
    def title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role)

    @property
    def label(self) -> str:
        """'GT · name' as used in legends and panel titles."""
        return f"{self.title} · {self.name}"


@dataclass
class SpectrumSample:
    """One curve of the spectra plot.

    ``wavelengths_nm`` is the x-axis (band indices when ``wavelengths_known`` is False); ``pixel``
    is the (row, col) in the layer's own grid; ``nominal`` says the x positions are assumed.
    """

    layer: Layer
    wavelengths_nm: np.ndarray
    values: np.ndarray
    pixel: tuple[int, int]
    wavelengths_known: bool = True
    nominal: bool = False

    @property
    def label(self) -> str:
        note = ", nominal λ" if self.nominal else ""
        return f"{self.layer.label} (r {self.pixel[0]}, c {self.pixel[1]}{note})"


def guess_role(path: str | Path, existing_roles: Iterable[str] = ()) -> str:
    """A first guess of a file's role from its name (the user confirms it in a dialog)."""
    stem = Path(path).name.lower()
    for ch in "-. ":
        stem = stem.replace(ch, "_")
    tokens = set(stem.split("_"))
    existing = set(existing_roles)

    def has(*words: str) -> bool:
        return any(w in tokens for w in words) or any(stem.startswith(w + "_") for w in words)

    if has("gt", "groundtruth", "truth", "hr", "ref", "reference", "orig", "original") \
            or "ground_truth" in stem:
        return "gt"
    if has("lr", "lowres", "low", "input", "lrhsi", "down", "downsampled") or "low_res" in stem:
        return "lr"
    if has("rgb", "msi", "guide", "hrmsi", "pan", "hrrgb"):
        return "guide"
    if has("sr", "recon", "reconstruction", "pred", "prediction", "output", "out", "fused", "result"):
        return "recon"
    return "recon" if "gt" in existing else "gt"


class LayerList:
    """The scene's layers in panel order (gt, lr, guide, recon; within a role, in the order they
    were added), their uids and the HR pixel grid they share. It emits nothing: the
    :class:`~app.core.state.scene.Scene` changes it and then tells the views (``events.layers``)."""

    def __init__(self):
        self._items: list[Layer] = []
        self._next_uid = 1
        self._grid: tuple[int, int] | None = None  # (H, W) of the HR pixel grid

    @property
    def items(self) -> list[Layer]:
        """The list itself (the scene's parts read it; only this class and the scene change it)."""
        return self._items

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, uid: int) -> Layer:
        for layer in self._items:
            if layer.uid == uid:
                return layer
        raise KeyError(f"no layer with uid {uid}")

    def with_role(self, role: str) -> list[Layer]:
        return [layer for layer in self._items if layer.role == role]

    @property
    def reference(self) -> Layer | None:
        """The layer that defines the band axis and the shared contrast: the first GT, else the
        first reconstruction, else the first LR, else the first layer."""
        for role in ("gt", "recon", "lr", "guide"):
            found = self.with_role(role)
            if found:
                return found[0]
        return None

    # ------------------------------------------------------------------ the HR grid
    @staticmethod
    def grid_of(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        return max(s[0] for s in shapes), max(s[1] for s in shapes)

    @staticmethod
    def scale_on(grid: tuple[int, int], shape_hw: tuple[int, int]) -> int | None:
        """Integer s with shape * s == grid, or None."""
        (gh, gw), (h, w) = grid, shape_hw
        if h <= 0 or w <= 0 or gh % h or gw % w:
            return None
        s = gh // h
        return s if gw // w == s else None

    @property
    def grid(self) -> tuple[int, int] | None:
        """(H, W) of the pixel grid, None without layers."""
        return self._grid if self._items else None

    def grid_with(self, cube: Cube, name: str | None = None) -> tuple[int, int]:
        """The grid once ``cube`` is added; ShapeMismatchError when it cannot be placed on it
        (every size must divide the largest evenly by the same integer factor)."""
        h, w, _ = cube.shape
        shapes = [l.cube.shape[:2] for l in self._items] + [(h, w)]
        grid = self.grid_of(shapes + ([self._grid] if self._grid else []))
        scales = [self.scale_on(grid, s) for s in shapes]
        if any(s is None for s in scales):
            bad = [(lay.label, lay.cube.shape[:2]) for lay, s in zip(self._items, scales) if s is None]
            if scales[-1] is None:
                bad.append((name or cube.name, (h, w)))
            where = f"{cube.source_path}: " if cube.source_path else ""
            listed = "; ".join(f"{lbl} is {sh[0]}x{sh[1]}" for lbl, sh in bad)
            raise ShapeMismatchError(
                f"{where}cannot place {name or cube.name} ({h}x{w}) with the open layers on one "
                f"{grid[0]}x{grid[1]} pixel grid: every size must divide the largest evenly by the "
                f"same integer factor ({listed}). Open a matching crop, or close the other layers first.")
        return grid

    def set_grid(self, grid: tuple[int, int]) -> None:
        self._grid = grid
        for layer in self._items:
            layer.scale = int(self.scale_on(grid, layer.cube.shape[:2]))

    @property
    def max_scale(self) -> int:
        return max((l.scale for l in self._items), default=1)

    @staticmethod
    def layer_pixel(layer: Layer, row: int, col: int) -> tuple[int, int]:
        """The pixel of ``layer`` covering HR pixel (row, col): (row // s, col // s)."""
        return int(row) // layer.scale, int(col) // layer.scale

    # ------------------------------------------------------------------ changes
    def new_layer(self, cube: Cube, role: str, name: str) -> Layer:
        """A layer with the next uid (not yet in the list)."""
        layer = Layer(cube=cube, role=role, name=name, uid=self._next_uid)
        self._next_uid += 1
        return layer

    def insert(self, layer: Layer) -> None:
        """Insert after the layers of the same or an earlier role."""
        rank = ROLES.index(layer.role)
        position = len(self._items)
        for i, other in enumerate(self._items):
            if ROLES.index(other.role) > rank:
                position = i
                break
        self._items.insert(position, layer)

    def remove(self, layer: Layer) -> None:
        """Remove ``layer``; the grid shrinks to the largest layer left when the others still fit
        it (e.g. 4x4 and 6x6 left of a 12x12 grid keep the 12x12 grid)."""
        self._items.remove(layer)
        if self._items:
            shapes = [l.cube.shape[:2] for l in self._items]
            grid = self.grid_of(shapes)
            if any(self.scale_on(grid, s) is None for s in shapes):
                grid = self._grid
            self.set_grid(grid)
        else:
            self._grid = None

    def clear(self) -> None:
        self._items.clear()
        self._grid = None

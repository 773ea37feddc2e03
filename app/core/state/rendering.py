"""Rendering, free of Qt: :func:`render` turns a frozen :class:`RenderRequest` (made by
:meth:`Scene.snapshot <app.core.state.scene.Scene.snapshot>`) into display images and levels. It
is a pure function so that a worker thread can run it on big cubes. A request holds a read-only
copy of the scene's :class:`RenderCache`; what :func:`render` computes anew goes into a dict of its
own that the GUI thread hands back with :meth:`Scene.keep_render_cache
<app.core.state.scene.Scene.keep_render_cache>`, so a worker never writes anything the GUI thread
reads. A request can ask for every ``step``-th pixel of a layer (``steps``): a memory-mapped cube
larger than its panel on screen is read at those pixels only.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.state.display import NOMINAL_RGB_NM, DisplayMode, channel_levels, nearest_band, percentile_levels
from app.core.state.layers import Layer

# band planes of memory-mapped cubes kept for the next render (a contrast change, a band revisited)
RENDER_CACHE_PLANE_BYTES = 96 * 1024 * 1024


class RenderCache:
    """What :func:`render` made that does not change with the band (colour pictures, band planes
    of memory-mapped cubes), by (kind, uid, id(cube), ...): written on the GUI thread only
    (:meth:`keep`), read by workers through :meth:`read_only` copies. Bounded: band planes up to
    RENDER_CACHE_PLANE_BYTES, 256 entries in all (the oldest go first)."""

    def __init__(self):
        self._entries: dict[tuple, Any] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, uid: int | None = None) -> None:
        """Drop the entries of layer ``uid`` (all when None)."""
        if uid is None:
            self._entries.clear()
        else:
            for key in [k for k in self._entries if k[1] == uid]:
                del self._entries[key]

    def keep(self, entries: Mapping[tuple, Any], live: Iterable[tuple[int, int]]) -> None:
        """Keep ``entries`` (a render's ``new_entries``) of the layers still open with the same
        cube, ``live`` holding their (uid, id(cube)) pairs."""
        live = set(live)
        cache = self._entries
        for key, value in entries.items():
            if (key[1], key[2]) in live:
                cache.pop(key, None)
                cache[key] = value  # (the newest last: dropped last)
        # bounded: colour pictures at many contrast settings, band planes of memory-mapped cubes
        planes = [k for k in cache if k[0] == "band"]
        size = sum(cache[k].nbytes for k in planes)
        for key in planes:
            if size <= RENDER_CACHE_PLANE_BYTES:
                break
            size -= cache.pop(key).nbytes
        if len(cache) > 256:
            for key in list(cache)[: len(cache) - 256]:
                del cache[key]

    def read_only(self) -> Mapping[tuple, Any]:
        """A read-only copy (for a :class:`RenderRequest`)."""
        return types.MappingProxyType(dict(self._entries))

    def uids_with(self, kind: str) -> set[int]:
        """Uids of the layers with an entry of ``kind`` ('true', 'colour', 'band')."""
        return {k[1] for k in self._entries if k[0] == kind}


@dataclass(frozen=True)
class RenderRequest:
    layers: tuple[Layer, ...]
    mode: DisplayMode
    bands: dict[int, int | None]
    rgb_bands: dict[int, tuple[int, int, int]]
    colour_image: dict[int, bool]
    colour_channels: dict[int, tuple[int, int, int]]
    shares_contrast: dict[int, bool]
    reference_uid: int | None
    percentiles: tuple[float, float]
    # a read-only copy of the scene's render cache (colour pictures do not depend on the band);
    # render() never writes it: what it makes anew goes to its ``new_entries``
    render_cache: Mapping[tuple, Any] = field(default_factory=lambda: types.MappingProxyType({}), compare=False)
    # per layer uid: show every step-th row and column (missing: 1)
    steps: Mapping[int, int] = field(default_factory=lambda: types.MappingProxyType({}), compare=False)

    def step(self, uid: int) -> int:
        return int(self.steps.get(uid, 1))


@dataclass
class RenderedImage:
    """What a panel shows: ``image`` (h, w) float32 or (h, w, 3); ``levels`` (low, high) or a
    (3, 2) array; ``is_rgb``; ``band`` (None for colour pictures); ``note`` says how it was made;
    ``step``: the image holds every step-th row and column of the layer (rows and columns
    ``0, step, ...`` up to ``(H // step) * step``), so it covers ``step`` layer pixels per pixel."""

    uid: int
    image: np.ndarray
    levels: Any
    is_rgb: bool
    band: int | None
    note: str = ""
    step: int = 1


def _strided(cube: Cube, step: int) -> tuple[slice, slice]:
    if step <= 1:
        return slice(None), slice(None)
    return slice(0, (cube.height // step) * step, step), slice(0, (cube.width // step) * step, step)


def _true_colour(layer: Layer, step: int = 1) -> tuple[np.ndarray, str]:
    """sRGB picture of a whole layer (every ``step``-th pixel): it does not depend on the band."""
    cube = layer.cube
    wl = cube.wavelengths_nm
    result: tuple[np.ndarray, str] | None = None
    problem = "colour module unavailable"
    try:
        from app.core.science.color import cube_to_srgb
    except ImportError:
        cube_to_srgb = None
    if cube_to_srgb is not None:
        try:
            # (a memory-mapped cube is read for the picture, never loaded and kept whole)
            data = cube.data if step <= 1 and cube.in_memory else cube.region(*_strided(cube, step))
            rgb, note = cube_to_srgb(data, wl)
            result = (np.asarray(rgb, dtype=np.float32), str(note) or "true colour: CIE 1931 2°, D65, sRGB")
        except HsiError as exc:  # shown as a note; the panel still gets a picture
            problem = str(exc)
    if result is None:
        bands = [nearest_band(wl, cube.bands, nm) for nm in NOMINAL_RGB_NM] if wl is not None \
            else [cube.bands - 1, cube.bands // 2, 0]
        rgb = np.stack([cube.band(k, step) for k in bands], axis=-1).astype(np.float32)
        hi = percentile_levels(rgb, 0.0, 99.5)[1]
        rgb = np.clip(rgb / (hi if hi > 0 else 1.0), 0.0, 1.0)
        result = (rgb, f"approximate colour ({problem}): bands {bands} as R, G, B")
    return result


def render(request: RenderRequest, new_entries: dict | None = None) -> dict[int, RenderedImage]:
    """Display image and levels for every layer of ``request`` (pure; runs in any thread).

    Shared contrast: layers on the reference's band axis use the levels of the reference layer
    (GT when present), so equal reflectance looks equal in every panel; colour images (an RGB
    guide) always use their own levels, one pair for all three channels to keep their balance.
    Levels come from the picture (a strided sample of it when big: ``percentile_levels``).

    ``request.render_cache`` is only read; colour pictures made anew are put in ``new_entries``
    (when given) for the caller to keep (:meth:`Scene.keep_render_cache`, on the GUI thread).
    """
    low, high = request.percentiles
    images: dict[int, np.ndarray] = {}
    out: dict[int, RenderedImage] = {}
    made: dict = new_entries if new_entries is not None else {}

    def cached(key):
        value = request.render_cache.get(key)
        return made.get(key) if value is None else value

    def plane(cube: Cube, uid: int, band: int, step: int) -> np.ndarray:
        """One band at ``step``; a memory-mapped cube's planes are cached per band (a contrast
        change or a return to a band does not read the file again)."""
        if not cube.is_lazy:
            return cube.band(band, step)
        key = ("band", uid, id(cube), int(band), step)
        found = cached(key)
        if found is None:
            found = made[key] = cube.band(band, step)
        return found

    for layer in request.layers:
        cube = layer.cube
        step = request.step(layer.uid)
        if request.colour_image[layer.uid]:
            channels = request.colour_channels.get(layer.uid, (0, 1, 2))
            # A colour image does not change with the band: cached with its levels, so that a band
            # switch neither restacks it nor repaints its panel (the grid skips identical images).
            key = ("colour", layer.uid, id(cube), channels, low, high, step)
            found = cached(key)
            if found is None:
                rgb = np.stack([cube.band(k, step) for k in channels], axis=-1).astype(np.float32)
                found = made[key] = (rgb, percentile_levels(rgb, low, high))
            rgb, levels = found
            how = "channels as stored" if channels == (0, 1, 2) else f"channels {channels} as R, G, B"
            out[layer.uid] = RenderedImage(layer.uid, rgb, levels, True, None, f"colour image ({how})", step)
        elif request.mode == DisplayMode.TRUE_COLOUR:
            key = ("true", layer.uid, id(cube), step)
            found = cached(key)
            if found is None:
                found = made[key] = _true_colour(layer, step)
            rgb, note = found
            out[layer.uid] = RenderedImage(layer.uid, rgb, (0.0, 1.0), True, None, note, step)
        elif request.mode == DisplayMode.RGB:
            kr, kg, kb = request.rgb_bands[layer.uid]
            rgb = np.stack([plane(cube, layer.uid, k, step) for k in (kr, kg, kb)], axis=-1)
            images[layer.uid] = rgb
            out[layer.uid] = RenderedImage(layer.uid, rgb, None, True, None,
                                           f"bands {kr}, {kg}, {kb} as R, G, B", step)
        else:
            band = request.bands[layer.uid]
            image = plane(cube, layer.uid, band, step)
            if step > 1 and not image.flags.c_contiguous:
                image = np.ascontiguousarray(image)  # (a strided view of a loaded cube: one copy)
            images[layer.uid] = image
            out[layer.uid] = RenderedImage(layer.uid, image, None, False, band, cube.band_label(band), step)

    def levels_of(image: np.ndarray):
        if image.ndim == 3:
            return channel_levels(image, low, high)
        return percentile_levels(image, low, high)

    shared_levels = None
    if request.reference_uid in images and any(request.shares_contrast.values()):
        shared_levels = levels_of(images[request.reference_uid])
    for uid, image in images.items():
        use_shared = request.shares_contrast.get(uid, False) and shared_levels is not None
        out[uid].levels = shared_levels if use_shared else levels_of(image)
    return out

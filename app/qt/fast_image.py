"""An ImageItem whose float-to-screen conversion is plain vectorised numpy.

pyqtgraph turns a float image into display bytes with a chunked ``nditer`` loop (numba, its fast
path, is not a dependency here) and checks it for NaN with a full ``min()``: on a band of a
band-interleaved cube (a strided view) the two were most of a band switch (``python main.py bench
--only viewer``: the band switch fell from about 60 to 25 ms with this item and band-sequential copies). :class:`FastImageItem` keeps pyqtgraph's data model (``image`` is still the float band,
``levels`` the float levels, so values, histograms and exports are unchanged) and only replaces
that conversion for the common cases:

- a 2-D float image with a 256-colour (or shorter) lookup table and scalar levels: one gather into
  a contiguous float32 buffer, scale, clip, cast to uint8 colour indices, then the indices' colours
  from the table (kept per table as premultiplied ARGB) into an ARGB32-premultiplied QImage;
- an (H, W, 3) float image with per-channel or shared levels and no table: the same per channel,
  an RGB888 QImage.

The RGB picture is converted once to ARGB32 premultiplied, the paint engine's own format (the
indexed one is made in it), so that the many partial repaints of a click do not convert it each time.

Anything else (NaN in the image, other dtypes, column-major order, auto-downsampling) goes through
pyqtgraph's own ``render``. NaN pixels would need transparency, which pyqtgraph already handles.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtGui import QImage
from pyqtgraph import functions_qimage


def scale_to_uint8(image: np.ndarray, lo: float, hi: float, top: int = 255, colours: float | None = None) -> np.ndarray:
    """``image`` mapped linearly from [lo, hi] to [0, top] (clipped), as uint8, the way pyqtgraph
    maps it (scale = ``colours`` / range, then truncation; ``colours`` is the table length for
    indexed pictures, 255 for RGB), so a picture looks the same either way."""
    rng = float(hi) - float(lo)
    scale = (top + 1 if colours is None else colours) / (rng if rng != 0 else 1.0)
    buf = np.subtract(image, np.float32(lo), dtype=np.float32)
    np.multiply(buf, np.float32(scale), out=buf)
    np.maximum(buf, 0.0, out=buf)
    np.minimum(buf, float(top), out=buf)
    return buf.astype(np.uint8)


_TABLES: dict[bytes, np.ndarray] = {}


def _argb_table(lut: np.ndarray) -> np.ndarray:
    """(n,) uint32 premultiplied ARGB of an (n, 3 or 4) uint8 lookup table, kept per table (a
    band switch recolours every panel with the same table)."""
    key = lut.tobytes() + np.asarray(lut.shape, np.int64).tobytes()
    table = _TABLES.get(key)
    if table is None:
        rgb = lut[:, :3].astype(np.uint32)
        alpha = lut[:, 3].astype(np.uint32) if lut.shape[1] == 4 else np.full(len(lut), 255, np.uint32)
        rgb = (rgb * alpha[:, None] + 127) // 255  # premultiplied (opaque tables are unchanged)
        table = (alpha << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        if len(_TABLES) > 64:
            _TABLES.clear()
        _TABLES[key] = table
    return table


class FastImageItem(pg.ImageItem):
    """``pg.ImageItem`` with a numpy conversion for mono float + LUT and RGB float images (see the
    module docstring). ``fast_renders`` counts the pictures it made (tests)."""

    fast_renders = 0

    def _fast_qimage(self):
        image, levels = self.image, self.levels
        if image is None or image.size == 0 or image.dtype.kind != "f" or levels is None \
                or self.axisOrder != "row-major" or self.autoDownsample:
            return None
        levels = np.asarray(levels, dtype=np.float64)
        if image.ndim == 2:
            lut = self.lut
            if lut is None or callable(lut) or levels.shape != (2,):
                return None
            lut = np.asarray(lut)
            if lut.dtype != np.uint8 or lut.ndim != 2 or not 1 <= lut.shape[0] <= 256:
                return None
            if self._imageHasNans is None:
                self._imageHasNans = bool(np.isnan(np.min(image)))
            if self._imageHasNans:
                return None
            idx = scale_to_uint8(image, levels[0], levels[1], top=lut.shape[0] - 1)
            # the colour of each index, already in the paint engine's format: one gather
            argb = np.take(_argb_table(lut), idx)
            return pg.functions.ndarray_to_qimage(argb, QImage.Format.Format_ARGB32_Premultiplied)
        if image.ndim == 3 and image.shape[2] == 3 and self.lut is None:
            if levels.shape == (2,):
                levels = np.tile(levels, (3, 1))
            if levels.shape != (3, 2):
                return None
            if self._imageHasNans is None:
                self._imageHasNans = bool(np.isnan(np.min(image)))
            if self._imageHasNans:
                return None
            rgb = np.empty(image.shape, dtype=np.uint8)
            for c in range(3):
                rgb[..., c] = scale_to_uint8(image[..., c], levels[c, 0], levels[c, 1], colours=255.0)
            return functions_qimage.try_make_qimage(rgb, levels=None, lut=None)
        return None

    def render(self):
        qimage = self._fast_qimage()
        if qimage is None:
            return super().render()
        # Qt's raster engine draws ARGB32_Premultiplied directly; an Indexed8 or RGB888 picture is
        # converted on every paint, and a click repaints strips of every panel and map
        if qimage.format() != QImage.Format.Format_ARGB32_Premultiplied:
            qimage = qimage.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        self._processingBuffer = None
        self._displayBuffer = None
        self.qimage = qimage
        self._renderRequired = False
        self._unrenderable = False
        FastImageItem.fast_renders += 1

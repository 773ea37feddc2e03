"""pyqtgraph colormaps for the names in ``app.core.state.scene.COLORMAPS``, and swatch icons."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyqtgraph as pg
from PyQt6.QtGui import QIcon, QImage, QPixmap


@lru_cache(maxsize=None)
def colormap(name: str) -> pg.ColorMap:
    if name == "gray":
        return pg.ColorMap(pos=[0.0, 1.0], color=[(0, 0, 0), (255, 255, 255)], name="gray")
    return pg.colormap.get(name)


def lookup_table(name: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB table."""
    return colormap(name).getLookupTable(0.0, 1.0, n, alpha=False)


def swatch_icon(name: str, width: int = 64, height: int = 12) -> QIcon:
    lut = lookup_table(name, width)
    strip = np.ascontiguousarray(np.repeat(lut[None, :, :], height, axis=0).astype(np.uint8))
    image = QImage(strip.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(image))

"""The status bar shows map coordinates beside row/col when the hovered layer has a georeference."""
from __future__ import annotations

import pytest
from PyQt6.QtCore import QPointF

from app.core.io.georef import Georef

pytestmark = pytest.mark.gui


def hover(qtbot, window, role, row, col):
    """Move the pointer over pixel (row, col) of the panel of ``role`` until the scene reports it (the
    position is mapped again at every try: under load the panels may still be laid out)."""
    panel = next(p for p in window.grid.panels if p.layer.role == role)

    def arrived() -> bool:
        pos = panel.graphics.mapFromScene(panel.view.mapViewToScene(QPointF(col + 0.5, row + 0.5)))
        qtbot.mouseMove(panel.graphics.viewport(), pos)
        hov = window.scene.hover
        return hov is not None and hov.uid == panel.layer.uid and (hov.row, hov.col) == (row, col)

    qtbot.waitUntil(arrived, timeout=15000)


def test_status_bar_shows_map_coordinates_of_georeferenced_layers(window, qtbot):
    gt = next(layer for layer in window.scene.layers if layer.role == "gt")
    lr = next(layer for layer in window.scene.layers if layer.role == "lr")
    hr = Georef((499980.0, 7.5, 0.0, 4200030.0, 0.0, -7.5), None, 32633)
    gt.cube.metadata["georef"] = hr.to_dict()
    lr.cube.metadata["georef"] = hr.coarsened(lr.scale).to_dict()  # 30 m LR pixels
    hover(qtbot, window, "gt", 13, 22)
    x, y = 499980.0 + 22.5 * 7.5, 4200030.0 - 13.5 * 7.5
    assert window.map_label.text() == f"E {x:.1f} m, N {y:.1f} m" and window.map_label.isVisible()
    # over the LR panel: the centre of HR pixel (13, 22) inside its LR pixel, the same place
    hover(qtbot, window, "lr", 13, 22)
    assert window.map_label.text() == f"E {x:.1f} m, N {y:.1f} m"
    assert "row 13, col 22" in window.position_label.text()
    hover(qtbot, window, "guide", 13, 22)  # no georeference: the label goes away
    assert window.map_label.text() == "" and not window.map_label.isVisible()

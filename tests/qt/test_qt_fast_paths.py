"""The viewer's fast paths give the same pictures as the slow ones: the numpy image conversion
(FastImageItem) against pyqtgraph's own, band-sequential band copies against the interleaved cube,
the spectra plot's light marker curves and its cached axis pictures, fixed-width status labels."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from app.core import cube as cube_mod
from app.core.cube import Cube
from app.core.io import open_cube
from app.qt.fast_image import FastImageItem
from tests.conftest import SAMPLE

pytestmark = pytest.mark.gui


def qimage_pixels(qimage) -> np.ndarray:
    """(H, W, 4) BGRA bytes of a QImage (any format)."""
    q = qimage.convertToFormat(qimage.Format.Format_ARGB32)
    ptr = q.constBits()
    ptr.setsize(q.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(q.height(), q.bytesPerLine() // 4, 4)[:, : q.width()].copy()


def real_cube() -> np.ndarray:
    return np.ascontiguousarray(open_cube(SAMPLE).load().data[:96, :80])


def rendered(item_cls, image, levels, colormap=None):
    item = item_cls(axisOrder="row-major")
    if colormap is not None:
        item.setColorMap(colormap)
    item.setImage(image, levels=levels, autoLevels=False)
    item.render()
    return item


@pytest.mark.parametrize("levels", [(0.05, 0.6), (0.3, 0.31), (-1.0, 2.0)])
def test_mono_band_picture_equals_pyqtgraphs(qapp, levels):
    cube = real_cube()
    band = cube[:, :, 12]  # a strided view of the interleaved cube, as the viewer shows it
    cmap = pg.colormap.get("viridis")
    before = FastImageItem.fast_renders
    fast = rendered(FastImageItem, band, levels, cmap)
    slow = rendered(pg.ImageItem, band, levels, cmap)
    assert FastImageItem.fast_renders == before + 1  # the fast path was taken
    assert fast.qimage.format() == fast.qimage.Format.Format_ARGB32_Premultiplied  # the engine's own format
    a, b = qimage_pixels(fast.qimage), qimage_pixels(slow.qimage)
    # same colour index for every pixel (a value exactly on an index boundary may round apart)
    assert np.mean(np.any(a != b, axis=2)) < 1e-3
    np.testing.assert_array_equal(fast.image, band)  # the item still holds the float band
    assert tuple(fast.levels) == pytest.approx(levels)


def test_rgb_picture_with_per_channel_levels_equals_pyqtgraphs(qapp):
    rgb = real_cube()[:, :, [25, 15, 5]]
    levels = np.array([[0.02, 0.7], [0.05, 0.5], [0.0, 0.9]])
    fast = rendered(FastImageItem, rgb, levels)
    slow = rendered(pg.ImageItem, rgb, levels)
    a, b = qimage_pixels(fast.qimage)[..., :3], qimage_pixels(slow.qimage)[..., :3]
    assert np.abs(a.astype(int) - b).max() <= 1
    assert np.mean(np.any(a != b, axis=2)) < 1e-3


def test_nan_pixels_take_pyqtgraphs_transparent_path(qapp):
    band = real_cube()[:, :, 3].copy()
    band[10:20, 5:9] = np.nan
    before = FastImageItem.fast_renders
    item = rendered(FastImageItem, band, (0.0, 0.5), pg.colormap.get("viridis"))
    assert FastImageItem.fast_renders == before  # fell back
    alpha = qimage_pixels(item.qimage)[..., 3]
    assert (alpha[10:20, 5:9] == 0).all() and (alpha[30:, 30:] == 255).all()


def test_band_copy_equals_the_interleaved_cube_and_is_dropped_when_the_values_change():
    data = real_cube()
    cube = Cube.from_array(data)
    assert cube.build_band_copy() and cube.band(7).flags["C_CONTIGUOUS"]
    for k in (0, 7, cube.bands - 1, -1):
        np.testing.assert_array_equal(cube.band(k), data[:, :, k])
    assert not cube.build_band_copy()  # already there
    renamed = cube.replace(name="other")
    np.testing.assert_array_equal(renamed.band(3), data[:, :, 3])
    rescaled = cube.replace(raw=data * 0.5)
    np.testing.assert_allclose(rescaled.band(3), data[:, :, 3] * 0.5)  # not the old copy
    np.testing.assert_allclose(rescaled.data, data * 0.5)


def test_band_copies_respect_the_memory_budget(monkeypatch):
    data = real_cube()
    monkeypatch.setattr(cube_mod, "BAND_COPY_BUDGET", cube_mod._band_copy_bytes[0] + data.nbytes + 10)
    first, second = Cube.from_array(data), Cube.from_array(data)
    assert first.build_band_copy()
    assert not second.build_band_copy()  # over budget: bands are read from the interleaved array
    np.testing.assert_array_equal(second.band(4), data[:, :, 4])
    del first  # its bytes go back to the budget
    import gc

    gc.collect()
    assert second.build_band_copy()


def test_scene_makes_band_copies_in_the_background():
    from app.core.state.scene import Scene

    scene = Scene()
    layer = scene.add_layer(Cube.from_array(real_cube()), "gt")
    import time

    end = time.monotonic() + 10
    while layer.cube._bsq is None and time.monotonic() < end:
        time.sleep(0.01)
    assert layer.cube._bsq is not None


def test_spectra_markers_and_cached_axes(qapp):
    from app.qt.spectra import CachedAxis, Curve, CurveLayer

    plot = pg.PlotWidget(axisItems={"left": CachedAxis("left")})
    plot.resize(400, 300)
    layer = CurveLayer()
    marked = Curve([400.0, 500.0, 600.0], [0.1, 0.4, 0.2], pen=pg.mkPen("w"), symbol="t1", symbolSize=10,
                   symbolBrush="#ff0000", symbolPen=None)
    line = Curve([400.0, 450.0, np.nan, 600.0], [0.05, 0.6, 0.3, 0.3], pen=pg.mkPen("#00ff00", width=3))
    layer.set_curves([marked, line])
    plot.addItem(layer)
    plot.setXRange(380, 620, padding=0)
    plot.setYRange(0.0, 0.7, padding=0)
    plot.show()
    qapp.processEvents()
    np.testing.assert_array_equal(layer.curves[0].yData, [0.1, 0.4, 0.2])
    assert layer.dataBounds(1) == (0.05, 0.6) and layer.dataBounds(0) == (400.0, 600.0)  # NaN left out
    image = qimage_pixels(plot.grab().toImage())
    reds = (image[..., 2] > 200) & (image[..., 1] < 60) & (image[..., 0] < 60)
    greens = (image[..., 1] > 200) & (image[..., 2] < 60) & (image[..., 0] < 60)
    assert reds.sum() > 20  # the red markers are drawn
    assert greens.sum() > 20  # and the green line
    # the line breaks at the NaN: no green between x = 450 and 600 at y = 0.3 (the right half)
    cols = np.nonzero(greens.any(axis=0))[0]
    assert cols.size and cols.max() - cols.min() < 0.5 * image.shape[1]
    layer.set_curves([])
    assert layer.dataBounds(0) == (None, None) and layer.boundingRect().isEmpty()
    axis = plot.getAxis("left")
    axis.setWidth(52)  # as in the spectra view: a fixed width
    calls = []
    original = CachedAxis.generateDrawSpecs

    def counting(self, p):
        calls.append(tuple(self.range))
        return original(self, p)

    CachedAxis.generateDrawSpecs = counting
    try:
        for lo, hi in [(0.0, 1.0), (0.0, 0.5), (0.0, 1.0), (0.0, 0.5), (0.0, 1.0)]:
            plot.setYRange(lo, hi, padding=0)
            plot.repaint()
            qapp.processEvents()
        assert len(calls) == 2  # the revisited ranges replay their pictures
        axis.setLabel("Radiance")  # a new label is a new picture
        plot.setYRange(0.0, 1.0, padding=0)
        plot.repaint()
        qapp.processEvents()
        assert len(calls) == 3
    finally:
        CachedAxis.generateDrawSpecs = original
        plot.close()


def test_status_labels_keep_their_width_and_full_text(qapp):
    from app.qt.graphics import StatusLabel

    label = StatusLabel(None, "row 0000, col 0000")
    width = label.width()
    long = "row 12, col 34 and a very long description that does not fit " * 3
    label.setText(long)
    assert label.text() == long and label.width() == width
    assert label.toolTip() == long  # elided on screen, whole in the tooltip
    label.setText("row 1, col 2")
    assert label.text() == "row 1, col 2" and label.toolTip() == ""


def test_status_bar_labels_sit_side_by_side_and_show_their_text(window, qtbot):
    window.show()
    window.scene.set_pixel(13, 22)
    qtbot.wait(50)
    window.statusBar().clearMessage()  # (a temporary message hides the normal widgets)
    qtbot.waitUntil(lambda: window.position_label.isVisible(), timeout=3000)
    labels = [window.position_label, window.value_label, window.values_label]
    for left, right in zip(labels, labels[1:]):
        assert left.geometry().right() < right.geometry().left()
    for label in labels[:2]:  # the templated ones are wide enough for the sample's texts
        assert label.full_text() == QLabel_text(label)
        # ... and the text is on screen: painted by the label itself (see ElidedLabel)
        pixels = qimage_pixels(label.grab().toImage())[..., :3].astype(int)
        background = np.median(pixels.reshape(-1, 3), axis=0)
        assert (np.abs(pixels - background).sum(axis=-1) > 120).sum() > 30
    assert window.values_label.geometry().right() < window.note_label.geometry().left()


def QLabel_text(label) -> str:  # noqa: N802 (what the label paints, elided or not)
    return label.shown_text()


def test_a_click_paints_the_spectra_before_returning(window, qtbot):
    """The spectra of a click are on screen when set_pixel returns (the crosshairs follow when the
    event loop paints the window), with the new curves."""
    import time

    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(50)
    spectra = window.spectra
    t0 = time.perf_counter()
    window.scene.set_pixel(20, 30)
    assert spectra.plot.painted_at > t0  # no event processed in between: painted in the click itself
    gt = window.scene.layers_with_role("gt")[0].cube
    np.testing.assert_allclose(spectra.curves[0].yData, gt.spectrum(20, 30))
    assert spectra.curve_layer.curves == spectra.curves
    assert "row 20, col 30" in spectra.title.text()
    qtbot.wait(20)
    for panel in window.grid.panels:  # ... and the crosshairs move in the same click
        assert panel.vline.value() == 30.5 and panel.hline.value() == 20.5


def test_label_and_legend_text_changes_never_ask_for_a_layout(window, qtbot):
    from PyQt6.QtCore import QEvent, QObject

    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(50)
    requests = []

    class Watch(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.LayoutRequest:
                requests.append(obj)
            return False

    watch = Watch()
    for widget in (window, window.statusBar(), window.spectra, window.spectra.legend):
        widget.installEventFilter(watch)
    window.scene.set_pixel(3, 4)  # (the first pixel may add legend rows: a new height)
    window.analysis.wait(60)  # the analysis shows its results (new layouts) in the background
    qtbot.wait(100)
    requests.clear()
    for row, col in [(50, 60), (70, 10), (10, 70)]:
        window.scene.set_pixel(row, col)
        qtbot.wait(10)
    assert requests == []
    legend = window.spectra.legend
    assert "(r 10, c 70)" in legend.text()
    pixels = qimage_pixels(legend.grab().toImage())[..., :3].astype(int)
    assert (np.abs(pixels - np.median(pixels.reshape(-1, 3), axis=0)).sum(axis=-1) > 120).sum() > 100

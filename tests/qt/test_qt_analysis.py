"""The analysis dock, ROI tools, spectra extras, A/B comparison and status bar, driven through the real
widgets on a real CAVE crop; every number is checked against app.core.science.metrics."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QPointF, Qt
from PyQt6.QtTest import QTest

from app.core.science import metrics
from app.core.evaluation.analysis import METRIC_COLUMNS, Roi
from app.core.cube import Cube
from app.core.state.scene import Scene
from tests.qt.conftest import CROP, SCALE, WL, food_array, scene_cubes
from tests.qt.test_qt_viewer import click_pixel, layer_panel

pytestmark = pytest.mark.gui


def second_recon() -> Cube:
    gt = food_array()
    rng = np.random.default_rng(3)
    return Cube.from_array(np.clip(gt * (1 + 0.08 * rng.standard_normal(gt.shape).astype(np.float32)), 0, 1),
                           WL, name="gt+8%noise")


@pytest.fixture
def analysed(window):
    """The window with a second reconstruction and the analysis computed."""
    window.scene.add_layer(second_recon(), "recon", "gt+8%noise")
    window.show_analysis()
    assert window.analysis.wait(60)
    assert window.analysis.result is not None
    return window


def view_pos(view, x, y) -> QPoint:
    """Viewport position of HR point (x, y) in a panel or map view."""
    return view.graphics.mapFromScene(view.view.mapViewToScene(QPointF(x, y)))


def recon_cubes(window):
    return [l for l in window.scene.layers if l.role == "recon"]


# ------------------------------------------------------------------------------ maps
def test_sam_map_shown_equals_the_core_sam_map(analysed):
    gt = analysed.scene.layers_with_role("gt")[0].cube
    for layer in recon_cubes(analysed):
        expected, valid = metrics.sam_map_deg(gt.data, layer.cube.data)
        shown = analysed.analysis.sam_views[layer.uid].values
        np.testing.assert_allclose(shown, expected, atol=2e-3)  # float32 engine vs float64 reference
        assert analysed.analysis.sam_views[layer.uid].isVisible()
        rmse = metrics.rmse_map(gt.data, layer.cube.data)
        np.testing.assert_allclose(analysed.analysis.error_views[layer.uid].values, rmse, atol=1e-6)
        view = analysed.analysis.sam_views[layer.uid]
        assert view._stride == 1  # 96 px: every pixel is on screen
        np.testing.assert_array_equal(view.image_item.image, view.values)


def test_one_locked_colour_scale_for_every_method(analysed):
    a = analysed.analysis
    sam_levels = {tuple(np.round(v.image_item.levels, 9)) for v in a.sam_views.values()}
    err_levels = {tuple(np.round(v.image_item.levels, 9)) for v in a.error_views.values()}
    assert len(sam_levels) == 1 and len(err_levels) == 1
    lo, hi = a.result.sam_levels
    assert (lo, hi) == pytest.approx(next(iter(sam_levels)))
    # the scale is the 99th percentile of every method's valid pixels pooled (not the worst method's own)
    pooled = np.concatenate([m.sam_map[m.sam_valid] for m in a.result.methods])
    assert hi == pytest.approx(np.percentile(pooled, 99), rel=1e-5)
    assert a.sam_bar.text() == f"{lo:.4g} – {hi:.4g}" and "all methods" in a.sam_bar.toolTip()


def test_abs_error_at_band_follows_the_band_slider(analysed, qtbot):
    a = analysed.analysis
    a.error_combo.setCurrentIndex(a.error_combo.findData("abs_band"))
    assert analysed.scene.analysis_settings.error_kind == "abs_band"
    analysed.band_bar.slider.setValue(9)
    assert a.wait(30)
    gt = analysed.scene.layers_with_role("gt")[0].cube
    for layer in recon_cubes(analysed):
        np.testing.assert_allclose(a.error_views[layer.uid].image_item.image,
                                   metrics.abs_error_map(gt.data, layer.cube.data, 9), atol=1e-7)
    assert "|err| 490 nm" in a.error_views[recon_cubes(analysed)[0].uid].title.full_text()


def test_maps_are_linked_to_the_panels_and_clickable(analysed, qtbot):
    a = analysed.analysis
    uid = recon_cubes(analysed)[0].uid
    sam_view = a.sam_views[uid]
    # zoom a map: the image panels follow, and the other way round
    sam_view.view.setRange(xRange=(10, 40), yRange=(10, 40), padding=0)
    (x0, x1), _ = layer_panel(analysed, "gt").view.viewRange()
    assert (x0 + x1) / 2 == pytest.approx(25, abs=0.5)
    qtbot.mouseClick(sam_view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(sam_view, 30.5, 20.5))
    assert analysed.scene.pixel == (20, 30)
    assert a.error_views[uid].vline.value() == pytest.approx(30.5)
    layer_panel(analysed, "gt").view.setRange(xRange=(50, 70), yRange=(50, 70), padding=0)
    (x0, x1), _ = a.error_views[uid].view.viewRange()
    assert (x0 + x1) / 2 == pytest.approx(60, abs=0.5)


# ------------------------------------------------------------------------------ metrics table
def test_metrics_table_equals_compute_all_and_sorts(analysed):
    a = analysed.analysis
    gt = analysed.scene.layers_with_role("gt")[0].cube
    rows = dict(a.table_rows())
    for layer in recon_cubes(analysed):
        ref = metrics.compute_all(gt.data, layer.cube.data, scale=SCALE)
        # the methods are analysed in one pass (compute_all_many): equal to float32 rounding
        assert rows[layer.name] == pytest.approx([ref[k] for k, _, _ in METRIC_COLUMNS], rel=1e-5)
    psnr_col = 1 + [k for k, _, _ in METRIC_COLUMNS].index("psnr_db")
    a.table.sortItems(psnr_col, Qt.SortOrder.DescendingOrder)
    values = [v[psnr_col - 1] for _, v in a.table_rows()]
    assert values == sorted(values, reverse=True)
    a.table.sortItems(psnr_col, Qt.SortOrder.AscendingOrder)
    assert [v[psnr_col - 1] for _, v in a.table_rows()] == sorted(values)
    assert a.table_csv().splitlines()[0] == "method,psnr_db,ssim,sam_deg,ergas,rmse"


def test_metrics_of_the_visible_view(analysed):
    a = analysed.analysis
    analysed.scene.set_view_range((20, 60), (30, 70))
    a.scope_combo.setCurrentIndex(a.scope_combo.findData("view"))
    assert a.wait(30)
    gt = analysed.scene.layers_with_role("gt")[0].cube
    layer = recon_cubes(analysed)[0]
    ref = metrics.compute_all(gt.data, layer.cube.data, scale=SCALE, region=(30, 70, 20, 60))
    assert dict(a.table_rows())[layer.name][0] == pytest.approx(ref["psnr_db"])
    assert "visible view" in a.table_note.text()


# ------------------------------------------------------------------------------ ROI
def test_drawing_a_rectangle_roi_by_dragging(analysed, qtbot):
    window = analysed
    window.roi_rect_action.trigger()
    assert window.grid.tool == "rect" and window.roi_rect_action.isChecked()
    panel = layer_panel(window, "gt")
    vp = panel.graphics.viewport()
    start, end = view_pos(panel, 20.0, 30.0), view_pos(panel, 44.0, 50.0)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for t in np.linspace(0.1, 1.0, 6):
        QTest.mouseMove(vp, QPoint(int(start.x() + t * (end.x() - start.x())),
                                   int(start.y() + t * (end.y() - start.y()))))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    roi = window.scene.roi
    assert roi is not None and roi.kind == "rect"
    (x0, y0), (x1, y1) = roi.points
    assert (x0, y0, x1, y1) == pytest.approx((20, 30, 44, 50), abs=0.6)
    assert window.grid.tool == "none" and not window.roi_rect_action.isChecked()
    for p in window.grid.panels:
        assert p.roi_item.isVisible()
    # spectra: mean +- std band per source equals numpy on the ROI pixels
    mask = roi.mask(CROP, CROP)
    gt = food_array()[mask].astype(np.float64)
    by_name = {s.layer.name: s for s in window.spectra.roi_samples}
    np.testing.assert_allclose(by_name["food_gt"].mean, gt.mean(0), rtol=1e-6)
    np.testing.assert_allclose(by_name["food_gt"].std, gt.std(0), rtol=1e-5, atol=1e-9)
    assert "ROI mean ± std" in window.spectra.legend.text()
    assert window.spectra.roi_items  # the filled bands are on the plot
    # metrics restricted to the ROI
    a = window.analysis
    a.scope_combo.setCurrentIndex(a.scope_combo.findData("roi"))
    assert a.wait(30)
    layer = recon_cubes(window)[0]
    ref = metrics.compute_all(window.scene.layers_with_role("gt")[0].cube.data, layer.cube.data, scale=SCALE,
                              mask=mask)
    assert dict(a.table_rows())[layer.name][2] == pytest.approx(ref["sam_deg"])
    qtbot.keyClick(window.grid.panels[0].graphics, Qt.Key.Key_Delete)
    assert window.scene.roi is None


def test_drawing_a_polygon_roi_by_clicking(window, qtbot):
    window.roi_polygon_action.trigger()
    panel = layer_panel(window, "recon")
    vp = panel.graphics.viewport()
    for x, y in ((10, 10), (60, 12), (50, 70)):
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=view_pos(panel, x, y))
    assert window.scene.roi is None and panel.draft_item.isVisible()
    # a double click as a mouse sends it: click, then double-click press and release
    last = view_pos(panel, 15, 60)
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=last)
    QTest.mouseDClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, last)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, last)
    roi = window.scene.roi
    assert roi is not None and roi.kind == "polygon" and len(roi.points) == 4
    np.testing.assert_allclose(roi.points[1], (60, 12), atol=0.6)
    assert window.scene.pixel != (12, 60)  # drawing did not select pixels


def test_escape_leaves_the_drawing_tool(window, qtbot):
    window.roi_polygon_action.trigger()
    qtbot.keyClick(window.grid.panels[0].graphics, Qt.Key.Key_Escape)
    assert window.grid.tool == "none"


# ------------------------------------------------------------------------------ spectra extras
def test_residual_curves_on_the_second_axis(window, qtbot):
    click_pixel(qtbot, layer_panel(window, "gt"), 41, 70)
    spectra = window.spectra
    cubes = dict(scene_cubes())
    spectra.residual_button.setChecked(True)  # off by default since many methods made the plot unreadable
    assert len(spectra.residual_curves) == 1
    np.testing.assert_allclose(spectra.residual_curves[0].yData,
                               cubes["recon"].spectrum(41, 70) - cubes["gt"].spectrum(41, 70), atol=1e-7)
    assert spectra.residual_layer in spectra.residual_view.addedItems  # drawn on the right axis' view
    assert spectra.residual_layer.curves == spectra.residual_curves
    assert spectra.plot.getAxis("right").isVisible()
    spectra.residual_button.setChecked(False)
    assert spectra.residual_curves == [] and not spectra.plot.getAxis("right").isVisible()
    assert spectra.residual_layer.curves == []


# ------------------------------------------------------------------------------ per-band curves
def test_per_band_curves_mark_the_worst_band_and_jump(analysed):
    a = analysed.analysis
    gt = analysed.scene.layers_with_role("gt")[0].cube
    layer = recon_cubes(analysed)[0]
    ref = metrics.compute_all(gt.data, layer.cube.data, scale=SCALE)["per_band"]["psnr_db"]
    np.testing.assert_allclose(a.curve_items[layer.uid].yData, ref, rtol=1e-6)
    assert a.worst_bands[layer.uid] == int(np.argmin(ref))
    a.curve_combo.setCurrentIndex(a.curve_combo.findData("rmse"))
    ref_rmse = metrics.compute_all(gt.data, layer.cube.data)["per_band"]["rmse"]
    np.testing.assert_allclose(a.curve_items[layer.uid].yData, ref_rmse, rtol=1e-5)
    assert a.worst_bands[layer.uid] == int(np.argmax(ref_rmse))
    # click on the plot at 620 nm: the band follows
    a.tabs.setCurrentIndex(2)
    vb = a.curve_plot.getViewBox()
    y_mid = float(np.mean(vb.viewRange()[1]))
    pos = a.curve_plot.mapFromScene(vb.mapViewToScene(QPointF(621.0, y_mid)))
    QTest.mouseClick(a.curve_plot.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
    assert analysed.scene.band_wavelength() == 620.0
    assert a.curve_band_line.value() == pytest.approx(620.0)
    analysed.worst_band_action.trigger()
    assert analysed.scene.band == a.worst_bands[layer.uid]


# ------------------------------------------------------------------------------ worst pixel
def test_go_to_worst_sam_and_error_pixel(analysed, qtbot):
    r = analysed.analysis.result
    qtbot.keyClick(analysed.grid.panels[0].graphics, Qt.Key.Key_G)
    worst_sam = max(float(m.sam_map[m.sam_valid].max()) for m in r.methods)
    row, col = analysed.scene.pixel
    assert max(float(m.sam_map[row, col]) for m in r.methods) == worst_sam
    qtbot.keyClick(analysed.grid.panels[0].graphics, Qt.Key.Key_G, Qt.KeyboardModifier.ShiftModifier)
    worst_err = max(float(m.error_map.max()) for m in r.methods)
    row, col = analysed.scene.pixel
    assert max(float(m.error_map[row, col]) for m in r.methods) == worst_err
    assert "Worst error pixel" in analysed.statusBar().currentMessage()


def test_worst_pixel_before_the_analysis_ran_waits_for_it(window):
    window.analysis.go_to_worst("sam")  # dock not computed yet: queued
    assert window.analysis.wait(60)
    r = window.analysis.result
    m = r.methods[0]
    assert m.sam_map[window.scene.pixel] == float(m.sam_map[m.sam_valid].max())


def test_cancel_stops_the_job(window, qtbot, monkeypatch):
    import app.core.evaluation.analysis as core

    window.scene.add_layer(second_recon(), "recon")
    slow = core.analysis_steps

    def steps(request, cache=None, tick=None, partial=None):  # a slow job: time to press Cancel
        import time

        gen = slow(request, cache, tick, partial)
        try:
            while True:
                value = next(gen)
                time.sleep(0.3)
                yield value
        except StopIteration as stop:
            return stop.value

    monkeypatch.setattr(core, "analysis_steps", steps)
    a = window.analysis
    a.refresh()
    qtbot.waitUntil(lambda: a.cancel_button.isVisible(), timeout=3000)
    qtbot.mouseClick(a.cancel_button, Qt.MouseButton.LeftButton)
    assert a.job.wait(10)
    assert a.result is None and "cancelled" in a.status.text()
    assert not a.cancel_button.isVisible()


def test_no_gt_explains_what_is_missing(qtbot, settings, errors):
    from app.qt.main_window import MainWindow

    scene = Scene()
    cubes = dict(scene_cubes())
    scene.add_layer(cubes["recon"], "recon", "alone")
    win = MainWindow(scene, settings=settings)
    qtbot.addWidget(win)
    win.show()
    win.analysis.refresh()
    assert "ground-truth" in win.analysis.placeholder.text() and not errors
    # a GT arrives: while the first analysis runs the placeholder says so (not the stale reason)
    scene.add_layer(cubes["gt"], "gt")
    win.analysis.refresh()
    assert "Analysing" in win.analysis.placeholder.text() and "food_gt" in win.analysis.placeholder.text()
    assert win.analysis.wait(30)
    qtbot.waitUntil(lambda: win.analysis.result is not None, timeout=5000)
    assert not win.analysis.placeholder.isVisible()


# ------------------------------------------------------------------------------ A/B comparison
def test_swipe_shows_a_left_of_the_divider_and_b_right(window, qtbot):
    window.swipe_action.trigger()
    ab = window.compare_ab
    assert window.ab_dock.isVisible() and ab.mode == "swipe"
    gt = layer_panel(window, "gt")
    recon = layer_panel(window, "recon")
    assert (ab.a_uid, ab.b_uid) == (gt.layer.uid, recon.layer.uid)
    ab.set_divider(40)
    np.testing.assert_array_equal(ab.image_a.image, gt.rendered.image)
    np.testing.assert_array_equal(ab.image_b.image, recon.rendered.image[:, 40:])
    assert ab.image_b.mapRectToParent(ab.image_b.boundingRect()).left() == pytest.approx(40)
    assert ab.shown_uid_at(10) == gt.layer.uid and ab.shown_uid_at(70) == recon.layer.uid
    # B = the LR panel: cut on its own grid, drawn at its footprint
    lr = layer_panel(window, "lr")
    ab.set_pair(gt.layer.uid, lr.layer.uid)
    np.testing.assert_array_equal(ab.image_b.image, lr.rendered.image[:, 40 // SCALE:])
    # the band follows
    window.scene.set_band(3)
    np.testing.assert_array_equal(ab.image_a.image, window.scene.layers[0].cube.band(3))
    # crosshair kept, clicks select pixels
    qtbot.mouseClick(ab.graphics.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(ab, 70.5, 12.5))
    assert window.scene.pixel == (12, 70)
    assert ab.vline.isVisible() and ab.vline.value() == pytest.approx(70.5)
    ab.swap()
    assert ab.a_uid == lr.layer.uid


def test_flicker_alternates_and_pans_with_the_panels(window, qtbot):
    window.flicker_action.trigger()
    ab = window.compare_ab
    assert ab.mode == "flicker" and ab.timer.isActive() and not ab.divider.isVisible()
    a_img = layer_panel(window, "gt").rendered.image
    b_img = layer_panel(window, "recon").rendered.image
    np.testing.assert_array_equal(ab.image_a.image, a_img)
    ab.toggle_flicker()
    np.testing.assert_array_equal(ab.image_a.image, b_img)
    assert "showing B" in ab.state_label.text()
    qtbot.waitUntil(lambda: not ab.showing_b, timeout=3000)  # the timer flips it back
    window.scene.set_view_range((10, 30), (10, 30))
    (x0, x1), _ = ab.view.viewRange()
    assert (x0 + x1) / 2 == pytest.approx(20, abs=0.5)
    ab.view.setRange(xRange=(50, 70), yRange=(50, 70), padding=0)
    (x0, x1), _ = layer_panel(window, "gt").view.viewRange()
    assert (x0 + x1) / 2 == pytest.approx(60, abs=0.5)
    window.swipe_action.trigger()
    assert not ab.timer.isActive()


# ------------------------------------------------------------------------------ status bar
def test_status_bar_lists_the_value_of_every_panel(window, qtbot):
    panel = layer_panel(window, "gt")
    qtbot.waitUntil(lambda: panel.graphics.viewport().isVisible(), timeout=2000)
    at_pixel = lambda: (window.scene.hover is not None  # noqa: E731
                        and (window.scene.hover.row, window.scene.hover.col) == (13, 22))

    def move_there():  # the view may still be settling on a loaded machine: aim again until it lands
        qtbot.mouseMove(panel.graphics.viewport(), view_pos(panel, 22.5, 13.5))
        qtbot.wait(20)
        return at_pixel()

    qtbot.waitUntil(move_there, timeout=3000)
    qtbot.wait(50)  # the status bar follows the hover event
    cubes = dict(scene_cubes())
    band = window.scene.band
    text = window.values_label.text()
    assert f"LR {cubes['lr'].spectrum(3, 5)[band]:.3g}" in text
    assert f"nearest+noise {cubes['recon'].spectrum(13, 22)[band]:.3g}" in text
    rgb = cubes["guide"].spectrum(13, 22)
    assert "Guide " + "/".join(f"{v:.3g}" for v in rgb) in text
    assert f"{cubes['gt'].spectrum(13, 22)[band]:.4g}" in window.value_label.text()


# ------------------------------------------------------------------------------ done-when checks
def test_band_slider_every_panel_shows_the_band_with_shared_levels(window):
    window.show_ab("swipe")  # the A/B view shows the GT panel's picture: same band, same levels
    window.band_bar.slider.setValue(12)
    ref = layer_panel(window, "gt")
    levels = tuple(ref.rendered.levels)
    for panel in window.grid.panels:
        if panel.layer.role == "guide":
            continue
        np.testing.assert_array_equal(panel.image_item.image, panel.layer.cube.band(12))
        assert tuple(panel.image_item.levels) == pytest.approx(levels)
    assert tuple(window.compare_ab.image_a.levels) == pytest.approx(levels)


def test_dragging_one_panel_pans_all(window, qtbot):
    panels = window.grid.panels
    panels[0].view.setRange(xRange=(20, 40), yRange=(20, 40), padding=0)
    vp = panels[0].graphics.viewport()
    start = view_pos(panels[0], 30, 30)
    end = view_pos(panels[0], 25, 30)  # drag left by 5 image pixels: the view moves right by 5
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for t in np.linspace(0.2, 1.0, 5):
        QTest.mouseMove(vp, QPoint(int(start.x() + t * (end.x() - start.x())), start.y()))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    for panel in panels:
        (x0, x1), (y0, y1) = panel.view.viewRange()
        assert (x0 + x1) / 2 == pytest.approx(35, abs=0.7)
        assert (y0 + y1) / 2 == pytest.approx(30, abs=0.7)


@pytest.mark.parametrize("scale", [4, 32])
def test_lr_hr_footprint_mapping(qtbot, settings, errors, scale):
    from app.qt.main_window import MainWindow

    gt = food_array()[:64, :64]
    h, w, b = gt.shape
    lr = gt.reshape(h // scale, scale, w // scale, scale, b).mean(axis=(1, 3))
    scene = Scene()
    scene.add_layer(Cube.from_array(gt, WL, name="gt"), "gt")
    scene.add_layer(Cube.from_array(lr, WL, name="lr"), "lr")
    win = MainWindow(scene, settings=settings)
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    qtbot.waitExposed(win)
    lr_layer = scene.layers_with_role("lr")[0]
    assert lr_layer.scale == scale
    gt_panel, lr_panel = layer_panel(win, "gt"), layer_panel(win, "lr")
    # HR -> LR: clicking HR pixel (37, 45) outlines the LR pixel covering it in every panel
    click_pixel(qtbot, gt_panel, 37, 45)
    ly, lx = 37 // scale, 45 // scale
    for panel in (gt_panel, lr_panel):
        rect = panel.footprint_item.rect()
        assert (rect.top(), rect.left(), rect.width(), rect.height()) == (ly * scale, lx * scale, scale, scale)
    lr_sample = next(s for s in win.spectra.samples if s.layer.role == "lr")
    assert lr_sample.pixel == (ly, lx)
    np.testing.assert_allclose(lr_sample.values, lr[ly, lx], rtol=1e-6)
    # LR -> HR: the LR image covers the HR extent, a click on it selects the HR pixel under the pointer
    assert lr_panel.image_item.mapRectToParent(lr_panel.image_item.boundingRect()).width() == pytest.approx(64)
    click_pixel(qtbot, lr_panel, 5, 61)
    assert scene.pixel == (5, 61)
    rect = gt_panel.footprint_item.rect()
    assert (rect.top(), rect.left()) == ((5 // scale) * scale, (61 // scale) * scale)


def test_big_images_are_shown_at_screen_resolution_and_full_resolution_when_zoomed(qtbot, settings, errors):
    from app.qt.main_window import MainWindow

    big = np.ascontiguousarray(np.tile(food_array()[..., 10:16], (12, 12, 1)))  # 1152x1152x6, real spectra
    scene = Scene()
    scene.add_layer(Cube.from_array(big, WL[10:16], name="big"), "gt")
    win = MainWindow(scene, settings=settings)
    qtbot.addWidget(win)
    win.resize(900, 700)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(win.grid.wait_idle, timeout=5000)
    panel = win.grid.panels[0]
    k = panel.decimation
    assert k >= 2  # about 1152 image pixels on a few hundred screen pixels
    band = big[..., scene.band]
    n = (1152 // k) * k
    np.testing.assert_array_equal(panel.image_item.image, band[:n:k, :n:k])
    assert panel.image_item.mapRectToParent(panel.image_item.boundingRect()).width() == pytest.approx(n)
    assert panel.rendered.image.shape == (1152, 1152)  # the full band is kept for everything else
    scene.set_view_range((500, 560), (500, 560))
    assert panel.decimation == 1
    np.testing.assert_array_equal(panel.image_item.image, band)


def test_maps_and_metrics_show_before_ssim(window, qtbot):
    """The first pass (maps, PSNR, SAM, ERGAS, RMSE) is on screen before SSIM, whose cells say '…'
    until the job is done; then the table holds every metric."""
    from app.core.evaluation.analysis import METRIC_COLUMNS

    a = window.analysis
    a.wait(30)
    a.cache.forget()
    seen = []

    def on_partial():
        ssim_col = [key for key, _, _ in METRIC_COLUMNS].index("ssim") + 1
        psnr_col = [key for key, _, _ in METRIC_COLUMNS].index("psnr_db") + 1
        seen.append((a.table.item(0, ssim_col).text(), a.table.item(0, psnr_col).text(),
                     a.result.pending, any(v.values is not None for v in a.sam_views.values())))

    a.partial_shown.connect(on_partial)
    with qtbot.waitSignal(a.updated, timeout=30000):
        a.refresh()
    assert len(seen) == 1
    ssim_text, psnr_text, pending, maps_shown = seen[0]
    assert ssim_text == "…" and psnr_text not in ("…", "—") and pending == ("ssim",) and maps_shown
    assert a.result.pending == ()
    assert all(np.isfinite(values[[k for k, _, _ in METRIC_COLUMNS].index("ssim")]) for _, values in a.table_rows())

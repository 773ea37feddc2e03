"""The value range of a layer in the viewer (issue 19): the badge in each panel's header, the range
chosen per layer (the analysis re-runs) and the colour scales of the error and SAM maps. Real
data: the AVIRIS Jasper Ridge crop, uint16 counts whose file states maxValue 5000, and a
prediction stored in the same counts (no maxValue: the viewer puts it on the GT's scale)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from app.core.evaluation.analysis import locked_levels
from app.core.evaluation.compare import compare
from app.core.science import metrics
from app.core.state.scene import Scene

pytestmark = pytest.mark.gui

DATA = Path(__file__).resolve().parents[1] / "data"
JASPER = DATA / "jasper_crop_2d.mat"   # (198, 16*12) uint16 counts, nRow/nCol, maxValue 5000


def write_counts(path: Path, counts: np.ndarray, like: dict) -> Path:
    """A prediction the way other code writes it: the GT's .mat layout and counts, no maxValue."""
    sio.savemat(path, {"Y": counts.astype(np.uint16), "nRow": like["nRow"], "nCol": like["nCol"]})
    return path


@pytest.fixture
def jasper_files(tmp_path):
    """(GT path, good prediction path, poor prediction path): GT + 1 % noise, and a strong blur."""
    mat = sio.loadmat(JASPER)
    counts = mat["Y"].astype(np.float64)
    rng = np.random.default_rng(19)
    good = np.clip(np.round(counts + rng.normal(0.0, 0.01 * counts.max(), counts.shape)), 0, 65535)
    cube = counts.reshape(198, 16, 12, order="F")
    poor = cube.reshape(198, 4, 4, 3, 4).mean(axis=(2, 4))   # 4 x 4 block means, repeated
    poor = np.repeat(np.repeat(poor, 4, axis=1), 4, axis=2).reshape(198, -1, order="F")
    return (JASPER, write_counts(tmp_path / "good_counts.mat", good, mat),
            write_counts(tmp_path / "poor_counts.mat", np.round(poor), mat))


@pytest.fixture
def empty_window(qtbot, settings, errors):
    from PyQt6.QtWidgets import QApplication

    from app.qt import theme
    from app.qt.main_window import MainWindow

    app = QApplication.instance()
    if not app.styleSheet() or theme.current().name != "dark":
        theme.apply(app, "dark")
    win = MainWindow(Scene(), settings=settings)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    return win


def open_and_analyse(qtbot, window, items):
    window.open_files(items, background=False)
    assert len(window.scene.layers) == len(items)
    window.show_analysis()
    qtbot.waitUntil(lambda: window.analysis.result is not None and window.analysis.settled()
                    and not window.analysis.result.pending, timeout=60_000)


def shown_psnr(window, name: str) -> float:
    for method, values in window.analysis.table_rows():
        if method == name:
            return values[0]
    raise AssertionError(f"{name} not in the metrics table")


def reanalysed(qtbot, window, before):
    qtbot.waitUntil(lambda: window.analysis.result is not before and window.analysis.settled()
                    and not window.analysis.result.pending, timeout=60_000)


def test_badges_and_range_override_on_real_jasper_counts(qtbot, empty_window, jasper_files):
    gt_path, good_path, _ = jasper_files
    window = empty_window
    open_and_analyse(qtbot, window, [("gt", str(gt_path)), ("recon", str(good_path))])
    scene = window.scene
    gt, pred = scene.layers_with_role("gt")[0], scene.layers_with_role("recon")[0]
    gt_panel, pred_panel = window.grid.panel_for(gt.uid), window.grid.panel_for(pred.uid)
    # the badges say the rule: the GT's file states maxValue; the counts prediction is on the GT's scale
    assert gt_panel.range_badge.isVisible() and gt_panel.range_text == "stated ÷5000"
    assert "maxValue 5000" in gt_panel.range_badge.toolTip()
    assert pred_panel.range_text == "GT scale ÷5000" and not pred_panel.range_loud
    assert "GT's units" in pred_panel.range_badge.toolTip()

    # the literature's number: compare on the same files, with its default options (the GT divided
    # by the maxValue its file states, the prediction on the GT's scale)
    doc = compare(str(gt_path), [str(good_path)], device="cpu")
    expected = doc["results"][0]["psnr"]
    assert doc["results"][0]["range"] == "gt-scale" and "maxValue 5000" in doc["results"][0]["gt_range_rule"]
    auto_psnr = shown_psnr(window, pred.name)
    assert auto_psnr == pytest.approx(expected, abs=0.01)
    assert 38.0 < auto_psnr < 46.0

    # a wrong divisor: the prediction's values double, the badge turns loud, the PSNR drops
    before = window.analysis.result
    stored = pred.cube.raw
    assert window.layer_ranges.choose(pred.uid, 2000.0)
    assert pred.cube.raw is stored  # a rescale of the same stored values, not a copy
    assert pred.cube.scale == pytest.approx(1 / 2000)
    reanalysed(qtbot, window, before)
    assert pred_panel.range_text.endswith("÷2000 set") and pred_panel.range_loud
    assert "mean is" in pred_panel.range_badge.toolTip()
    wrong = shown_psnr(window, pred.name)
    assert wrong < auto_psnr - 5.0
    gt_data = scene.layers_with_role("gt")[0].cube.data
    assert wrong == pytest.approx(metrics.compute_all(gt_data, pred.cube.data)["psnr_db"], abs=0.01)
    # the maps follow: the error map is the new cubes' RMSE map
    np.testing.assert_allclose(window.analysis.error_views[pred.uid].values,
                               metrics.rmse_map(gt_data, pred.cube.data), atol=1e-6)

    # back to auto: the literature's value again
    before = window.analysis.result
    assert window.layer_ranges.choose(pred.uid, "auto")
    reanalysed(qtbot, window, before)
    assert shown_psnr(window, pred.name) == pytest.approx(expected, abs=0.01)
    assert pred_panel.range_text == "GT scale ÷5000" and not pred_panel.range_loud

    # the file states no range for the prediction: said in one line, nothing changes
    assert not window.layer_ranges.choose(pred.uid, "stated")
    assert window.errors_reported and "states no value range" in window.errors_reported[-1]
    assert "\n" not in window.errors_reported[-1].strip()
    assert pred.cube.scale == pytest.approx(1 / 5000)


def test_gt_divided_by_its_maximum_moves_the_prediction_along(qtbot, empty_window, jasper_files):
    gt_path, good_path, _ = jasper_files
    window = empty_window
    open_and_analyse(qtbot, window, [("gt", str(gt_path)), ("recon", str(good_path))])
    scene = window.scene
    gt, pred = scene.layers_with_role("gt")[0], scene.layers_with_role("recon")[0]
    before = window.analysis.result
    assert window.layer_ranges.choose(gt.uid, "max")
    reanalysed(qtbot, window, before)
    vmax = float(sio.loadmat(gt_path)["Y"].max())
    assert gt.cube.scale == pytest.approx(1 / vmax) and pred.cube.scale == pytest.approx(1 / vmax)
    assert window.grid.panel_for(gt.uid).range_text == f"÷{vmax:g} max (set)"
    assert window.grid.panel_for(pred.uid).range_text == f"GT scale ÷{vmax:g}"
    # compare with the GT divided by its maximum (the literature's rule without a stated scale)
    doc = compare(str(gt_path), [str(good_path)], gt_range="max", device="cpu")
    assert shown_psnr(window, pred.name) == pytest.approx(doc["results"][0]["psnr"], abs=0.01)
    # the Layer menu offers the choices, the current one checked; 'stated' only where the file states one
    menu = window.layer_ranges.menu_for(gt)
    checked = [a.data() for a in menu.actions() if a.isChecked()]
    assert checked == ["max"]
    enabled = {a.data(): a.isEnabled() for a in menu.actions()}
    assert enabled["stated"] and not window.layer_ranges.menu_for(pred).actions()[1].isEnabled()


def test_colour_scales_follow_the_mode(qtbot, empty_window, jasper_files):
    gt_path, good_path, poor_path = jasper_files
    window = empty_window
    open_and_analyse(qtbot, window, [("gt", str(gt_path)), ("recon", str(good_path)), ("recon", str(poor_path))])
    view = window.analysis
    result = view.result
    methods = result.methods
    assert len(methods) == 2
    # default: one scale, the 99th percentile of every method's valid pixels pooled
    err = locked_levels([m.error_map for m in methods], percentile=99)
    sam = locked_levels([m.sam_map for m in methods], [m.sam_valid for m in methods], percentile=99)
    assert view.error_bar.text() == f"{err[0]:.4g} – {err[1]:.4g}"
    assert view.sam_bar.text() == f"{sam[0]:.4g} – {sam[1]:.4g}"
    for m in methods:
        assert tuple(view.error_views[m.layer.uid].image_item.levels) == pytest.approx(err)
        assert tuple(view.sam_views[m.layer.uid].image_item.levels) == pytest.approx(sam)
    pooled = np.concatenate([m.sam_map[m.sam_valid] for m in methods])
    assert sam[1] == pytest.approx(np.percentile(pooled, 99), rel=1e-5)

    # per method: each map its own 99th percentile, named in its title; the bars give no one range
    view.scale_combo.setCurrentIndex(view.scale_combo.findData("per_method"))
    assert view.scale_mode == "per_method"
    highs = {}
    for m in methods:
        own_err = np.percentile(m.error_map, 99)
        own_sam = np.percentile(m.sam_map[m.sam_valid], 99)
        assert view.error_views[m.layer.uid].image_item.levels[1] == pytest.approx(own_err, rel=1e-5)
        assert view.sam_views[m.layer.uid].image_item.levels[1] == pytest.approx(own_sam, rel=1e-5)
        assert f"scale 0–{own_err:.2g}" in view.error_views[m.layer.uid].title.full_text()
        highs[m.name] = own_err
    assert len(set(np.round(list(highs.values()), 9))) == 2  # the good method's maps are not black
    assert view.error_bar.text() == "" and "each map" in view.error_bar.toolTip()

    # the user's range: the fields appear and every map and bar takes the numbers
    view.set_scale_mode("user", error=(0.0, 0.02), sam=(0.5, 3.0))
    assert all(f.isVisible() for pair in view.scale_fields.values() for f in pair)
    assert view.error_bar.text() == "0 – 0.02" and view.sam_bar.text() == "0.5 – 3"
    for m in methods:
        assert tuple(view.sam_views[m.layer.uid].image_item.levels) == pytest.approx((0.5, 3.0))
    view.scale_fields["error"][1].setValue(0.05)  # typing in the max field
    assert view.error_bar.text() == "0 – 0.05"
    assert tuple(view.error_views[methods[0].layer.uid].image_item.levels) == pytest.approx((0.0, 0.05))
    view.scale_combo.setCurrentIndex(view.scale_combo.findData("shared"))
    assert view.error_bar.text() == f"{err[0]:.4g} – {err[1]:.4g}"
    assert not any(f.isVisible() for pair in view.scale_fields.values() for f in pair)


def test_clicking_the_badge_offers_the_choices(qtbot, empty_window, jasper_files):
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QApplication

    gt_path, good_path, _ = jasper_files
    window = empty_window
    open_and_analyse(qtbot, window, [("gt", str(gt_path)), ("recon", str(good_path))])
    pred = window.scene.layers_with_role("recon")[0]
    panel = window.grid.panel_for(pred.uid)
    qtbot.mouseClick(panel.range_badge, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: QApplication.activePopupWidget() is not None, timeout=5000)
    menu = QApplication.activePopupWidget()
    titles = [a.text() for a in menu.actions()]
    assert titles[:3] == ["Auto (the file, then the GT's scale)", "As the file states", "Divide by the maximum"]
    before = window.analysis.result
    next(a for a in menu.actions() if a.data() == "max").trigger()
    assert "divided by their maximum" in window.statusBar().currentMessage()  # what was chosen, said
    menu.close()
    reanalysed(qtbot, window, before)
    assert window.scene.layer_range(pred) == "max" and panel.range_text.endswith("max (set)")

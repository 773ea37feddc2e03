"""The results browser on real CAVE crops: load a compare JSON, sort by SAM (selector and header
clicks), best marks and colours, the chart, double-click opens the image in the main window, run
compare from the dialog with progress and cancel, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFont

from app.core.evaluation.results import HIGHER_IS_BETTER, load_results
from app.qt.browser import STAR, CompareDialog, ResultsBrowser, cell_colour
from tests.core.test_browser import make_dataset, run_compare

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return make_dataset(tmp_path_factory.mktemp("qt_browser_ds"))


@pytest.fixture(scope="module")
def compare_json(dataset, tmp_path_factory):
    return run_compare(dataset, tmp_path_factory.mktemp("qt_browser_json") / "results.json")


@pytest.fixture
def browser(window, qtbot) -> ResultsBrowser:
    window.browser_action.trigger()  # File ▸ Open results browser… (Ctrl+B)
    b = window.results_browser
    qtbot.waitExposed(b)
    return b


def column_of(browser, key: str) -> int:
    return ("image", "method", *browser.model.metrics).index(key)


def column_values(browser, key: str) -> list[float]:
    """The numbers shown in a metric column for the image rows, top to bottom."""
    col = column_of(browser, key)
    out = []
    for row in range(browser.model.rowCount()):
        if browser.model.row_kind(row)[0] == "entry":
            text = browser.model.index(row, col).data()
            out.append(float(text.replace(STAR, "")))
    return out


def click_header(qtbot, browser, key: str) -> None:
    header = browser.view.horizontalHeader()
    col = column_of(browser, key)
    x = header.sectionViewportPosition(col) + header.sectionSize(col) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=header.rect().center().__class__(x, 5))


def double_click(qtbot, view, index) -> None:
    """A user's double-click on a cell: press/release, then the double-click (Qt's item views emit
    doubleClicked only for the index that was pressed)."""
    pos = view.visualRect(index).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_load_sort_by_sam_and_double_click_opens_the_scene(window, browser, qtbot, compare_json, dataset, errors):
    doc = json.loads(compare_json.read_text())
    assert browser.open_json(compare_json)
    model = browser.model
    assert model.rowCount() == 6 + 2  # 3 images x 2 methods, then one mean row per method
    assert [model.index(r, 0).data() for r in (6, 7)] == ["mean (3 images)"] * 2
    assert [model.index(r, 1).data() for r in (6, 7)] == ["bicubic", "noisy"]

    # the metric selector: SAM, best (lowest) first; the mean rows stay at the bottom
    browser.set_metric("sam_deg")
    sam = column_values(browser, "sam_deg")
    assert sam == pytest.approx(sorted(r["sam_deg"] for r in doc["results"]), abs=5e-4)
    assert browser.image_rows()[0][1] == "bicubic" and browser.image_rows()[-1][1] == "noisy"
    assert model.index(7, 1).data() == "noisy" and model.index(7, 0).data().startswith("mean")

    # header clicks: PSNR sorts best (highest) first, a second click flips it, SAM again lowest first
    click_header(qtbot, browser, "psnr")
    psnr = column_values(browser, "psnr")
    assert psnr == sorted(psnr, reverse=True) and len(set(psnr)) == 6
    click_header(qtbot, browser, "psnr")
    assert column_values(browser, "psnr") == sorted(psnr)
    click_header(qtbot, browser, "sam_deg")
    assert column_values(browser, "sam_deg") == sorted(sam)
    expected = [(r["image"], r["model"]) for r in sorted(doc["results"], key=lambda r: r["sam_deg"])]
    assert browser.image_rows() == expected

    # best method per image: star and bold on bicubic's cells (noise makes every metric worse)
    table = browser.table
    for row in range(6):
        kind, entry = model.row_kind(row)
        for key in ("psnr", "sam_deg", "rmse"):
            index = model.index(row, column_of(browser, key))
            best = table.is_best(entry.image, entry.method, key)
            assert best == (entry.method == "bicubic")
            assert index.data().endswith(STAR) == best
            font = index.data(Qt.ItemDataRole.FontRole)
            assert (isinstance(font, QFont) and font.bold()) == best
            colour = index.data(Qt.ItemDataRole.BackgroundRole).color()
            assert colour == cell_colour(table.colour_value(key, entry.value(key)))
    # the best and the worst SAM cells get the two ends of the colour scale
    sam_col = column_of(browser, "sam_deg")
    assert model.index(0, sam_col).data(Qt.ItemDataRole.BackgroundRole).color() == cell_colour(1.0)
    assert model.index(5, sam_col).data(Qt.ItemDataRole.BackgroundRole).color() == cell_colour(0.0)
    # the mean rows: the best mean is starred
    assert model.index(6, sam_col).data().endswith(STAR) and not model.index(7, sam_col).data().endswith(STAR)
    assert float(model.index(6, sam_col).data().replace(STAR, "")) == pytest.approx(
        doc["summary"]["bicubic"]["sam_deg"], abs=5e-4)

    # the chart: SAM by image, one bar group per method, with a legend
    chart = browser.chart
    assert set(chart.bars) == {"bicubic", "noisy"} and len(chart.legend.items) == 2
    for j, method in enumerate(table.methods):
        bar = chart.bars[method]
        tops = np.asarray(bar.opts["y0"]) + np.asarray(bar.opts["height"])
        np.testing.assert_allclose(tops, table.pivot("sam_deg")[:, j], rtol=1e-12)
    assert "lower is better" in chart.plotItem.titleLabel.text

    # double-click the noisy row of food_pepper_ms: the viewer shows its GT and both reconstructions
    row = next(r for r in range(6) if model.row_kind(r)[1].image == "food_pepper_ms"
               and model.row_kind(r)[1].method == "noisy")
    with qtbot.waitSignal(browser.scene_opened, timeout=30000) as opened:
        double_click(qtbot, browser.view, model.index(row, 0))
    assert opened.args == ["food_pepper_ms"]
    assert browser.chart.highlight.isVisible()
    layers = window.scene.layers
    assert [(l.role, l.name) for l in layers] == [("gt", "food_pepper_ms"), ("recon", "bicubic"), ("recon", "noisy")]
    arrays = dataset["arrays"]["food_pepper_ms"]
    np.testing.assert_array_equal(layers[0].cube.data, arrays["gt"])
    np.testing.assert_array_equal(layers[1].cube.data, arrays["bicubic"])
    np.testing.assert_array_equal(layers[2].cube.data, arrays["noisy"])  # the uint16 B x H x W .mat, as compared
    assert window.scene.pixel == (16, 20)
    qtbot.waitUntil(lambda: len(window.grid.panels) == 3, timeout=10000)
    assert [p.layer.name for p in window.grid.panels] == ["food_pepper_ms", "bicubic", "noisy"]

    def whole_image_shown():  # each panel fits the 32 x 40 image (not zoomed far out)
        spans = [(p.view.viewRange()[0][1] - p.view.viewRange()[0][0], p.view.viewRange()[1][1] - p.view.viewRange()[1][0])
                 for p in window.grid.panels]
        return all(abs(min(xs / 40, ys / 32) - 1) < 0.02 for xs, ys in spans)

    qtbot.waitUntil(whole_image_shown, timeout=5000)
    assert window.analysis_dock.isVisible()
    assert not errors and not browser.errors_reported


def test_run_compare_from_the_dialog_with_progress_and_cancel(browser, qtbot, dataset, tmp_path, errors):
    dialog = CompareDialog(browser)
    qtbot.addWidget(dialog)
    assert "ground-truth" in dialog.problem()
    dialog.gt_edit.setText(str(dataset["gt"]))
    assert "at least one method" in dialog.problem()
    dialog.add_method(str(dataset["bicubic"]))
    dialog.add_method(str(dataset["noisy"]), "noisy+")
    dialog.scale_spin.setValue(4)
    dialog.device_combo.setCurrentText("cpu")
    out = tmp_path / "from_dialog.json"
    dialog.json_edit.setText(str(out))
    assert dialog.problem() is None
    values = dialog.values()
    assert values["names"] == ["bicubic", "noisy+"] and values["scale"] == 4 and values["pred_range"] == "auto"

    seen = []
    browser.compare_progress.connect(lambda done, total, label: seen.append((done, total)))
    with qtbot.waitSignal(browser.compare_finished, timeout=60000) as finished:
        browser.run_compare(values)
        assert browser.comparing and browser.progress.isVisible() and browser.cancel_button.isVisible()
    assert finished.args == ["done"]
    assert not browser.progress.isVisible() and not browser.comparing
    assert seen[-1] == (6, 6)
    assert browser.table.methods == ["bicubic", "noisy+"] and len(browser.table.entries) == 6
    written = load_results(out)  # the dialog's JSON was written and holds the same numbers
    for e in browser.table.entries:
        assert written.value(e.image, e.method, "psnr") == e.value("psnr")

    # cancel: the run stops, the table keeps the previous results
    with qtbot.waitSignal(browser.compare_finished, timeout=60000) as finished:
        browser.run_compare({**values, "json_out": str(tmp_path / "never.json")})
        browser.cancel_action.trigger()
    assert finished.args == ["cancelled"]
    assert not (tmp_path / "never.json").exists()
    assert len(browser.table.entries) == 6 and not browser.comparing and not errors


def test_bad_json_and_eval_results_are_explained(window, browser, qtbot, tmp_path, errors):
    bad = tmp_path / "foreign.json"
    bad.write_text(json.dumps({"layers": [1, 2]}))
    assert not browser.open_json(bad)
    assert len(errors) == 1 and str(bad) in errors[0][1] and "not compare/eval results" in errors[0][1]
    assert browser.table is None
    # an eval file opens (metrics, chart) but its rows cannot be opened in the viewer: said, not crashed
    doc = {"protocol": "bicubic-x4", "device": "cpu", "results": [
        {"image": "beads", "model": "bicubic", "psnr": 35.0, "ssim": 0.95, "sam_deg": 4.0, "ergas": 3.0,
         "rmse": 0.02, "seconds": 0.1},
        {"image": "beads", "model": "other", "psnr": 36.0, "ssim": 0.96, "sam_deg": 3.5, "ergas": 2.5,
         "rmse": 0.018, "seconds": 0.4}], "summary": {}}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(doc))
    assert browser.open_json(path)
    assert "Time (s)" in [browser.model.headerData(c, Qt.Orientation.Horizontal)
                          for c in range(browser.model.columnCount())]
    assert not browser.open_scene_action.isEnabled()
    layers_before = [l.name for l in window.scene.layers]
    double_click(qtbot, browser.view, browser.model.index(0, 0))
    assert len(errors) == 2 and "eval" in errors[1][1] and "no files to open" in errors[1][1]
    assert [l.name for l in window.scene.layers] == layers_before
    assert HIGHER_IS_BETTER["seconds"] is False


def test_mean_rows_follow_the_sort_and_the_chart_starts_at_a_round_floor(browser, qtbot, compare_json):
    from app.qt.browser import chart_floor

    assert browser.open_json(compare_json)
    model = browser.model
    means = [(r, model.index(r, 1).data()) for r in range(model.rowCount()) if model.row_kind(r)[0] == "mean"]
    assert [m for _, m in means] == ["bicubic", "noisy"]
    browser.sort_by("psnr", best_first=False)  # worst first: the worse mean (noisy) leads the mean rows too
    assert [model.index(r, 1).data() for r, _ in means] == ["noisy", "bicubic"]
    assert all(model.row_kind(r)[0] == "mean" for r, _ in means)  # still below the image rows
    browser.sort_by("psnr", best_first=True)
    assert [model.index(r, 1).data() for r, _ in means] == ["bicubic", "noisy"]
    browser.sort_by("method", best_first=False)
    assert [model.index(r, 1).data() for r, _ in means] == ["noisy", "bicubic"]

    browser.set_metric("psnr")
    chart = browser.chart
    values = browser.table.pivot("psnr")
    floor = chart.getViewBox().viewRange()[1][0]
    assert floor == chart_floor(float(np.nanmin(values)), float(np.nanmax(values)))
    assert 0 <= floor < np.nanmin(values) and float(floor).is_integer()  # PSNR in dB: a round floor
    assert all(np.all(np.asarray(bar.opts["y0"]) == floor) for bar in chart.bars.values())
    label = chart.getAxis("left").labelText
    assert floor == 0 or f"axis from {floor:g}" in label
    assert chart_floor(31.2, 45.7) == 30.0 and chart_floor(0.01, 0.05) == 0.0 and chart_floor(2.1, 2.3) == 2.05


def test_versions_and_row_provenance_are_shown_and_a_newer_file_refused(browser, compare_json, tmp_path, errors):
    import app
    from tests.core.test_json_schema import OLD_EVAL

    assert browser.open_json(compare_json)
    assert f"written by hsi-sr-viewer {app.__version__} (schema 2)" in browser.info_label.text()
    row = next(r for r in range(browser.model.rowCount()) if browser.model.row_kind(r)[0] == "entry")
    tip = browser.model.index(row, 0).data(Qt.ItemDataRole.ToolTipRole)
    entry = browser.model.row_kind(row)[1]
    assert f"prediction file: {entry.pred_path.stat().st_size} bytes, sha256 " in tip
    assert browser.open_json(OLD_EVAL)  # a committed version 1 file
    assert "schema 1 (no software version)" in browser.info_label.text()
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**json.loads(compare_json.read_text()), "schema_version": 3}))
    assert not browser.open_json(future)
    assert len(errors) == 1 and f"{future}: written by a newer version (hsi-sr-viewer" in errors[0][1]
    assert browser.table.source == OLD_EVAL  # the table shown stays

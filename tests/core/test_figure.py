"""app.core.export.figure: PNG size/DPI and content, true vector PDF/SVG (paths and text, rasters
embedded at native resolution), provenance in the metadata, and the paper-figure builder (shared
scales per row, identical insets, captions with PSNR/SAM from app.core.science.metrics)."""
from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from PIL import Image

from app.core.export import figure as F
from app.core.evaluation.analysis import make_request, run_analysis
from app.core.io.atomic import WriteError
from app.core.export.data import collect_spectra
from app.core.science.metrics import compute_all
from tests.core.export_helpers import food_scene

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def scene():
    s = food_scene()
    s.set_pixel(40, 50)
    s.add_pin(12, 70)
    return s


@pytest.fixture(scope="module")
def paper(scene):
    spec = F.PaperFigureSpec(methods=F.default_methods(scene), inset=(20, 30, 52, 62))
    return F.paper_figure(scene, spec)


def test_png_has_the_asked_size_and_dpi_and_shows_the_image(scene, tmp_path):
    path = F.save_figure(F.panel_figure(scene), tmp_path / "panel.png", dpi=150, size_in=(4, 3))
    with Image.open(path) as im:
        assert im.size == (600, 450)
        # PNG stores whole pixels per metre: 150 dpi is 5906 px/m = 150.012 dpi
        assert im.info["dpi"] == pytest.approx((150, 150), abs=0.0254 / 2 + 1e-6)
        rgb = np.asarray(im.convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200  # a real picture, not a blank canvas
    assert F.read_provenance(path)["view"] == "panel"


def test_pdf_is_vector_with_text_and_native_rasters(paper, scene, tmp_path, monkeypatch):
    pypdf = pytest.importorskip("pypdf")
    monkeypatch.setitem(matplotlib.rcParams, "pdf.compression", 0)
    path = F.save_figure(paper, tmp_path / "fig.pdf")
    raw = path.read_bytes()
    assert b"BT" in raw and b"ET" in raw and b" re" in raw and re.search(rb"\d l\s", raw)
    reader = pypdf.PdfReader(str(path))
    page = reader.pages[0]
    text = page.extract_text()
    assert "PSNR" in text and "SAM" in text and "bicubic" in text
    sizes = sorted({(img.image.size) for img in page.images})
    h, w = scene.hr_shape
    assert (w, h) in sizes          # each panel at the cube's own resolution
    assert (32, 32) in sizes        # the inset crop: 32 x 32 native pixels
    assert len(page.images) > 4     # many rasters, not one flattened picture
    prov = F.read_provenance(path)
    assert prov == json_loads(reader.metadata["/Subject"])
    models = [l["provenance"].get("model") for l in prov["layers"]]
    assert "bicubic" in models
    bic = next(l for l in prov["layers"] if l["provenance"].get("model") == "bicubic")
    assert {"weights_sha256", "scale", "seed", "device", "time"} <= set(bic["provenance"])


def json_loads(text):
    import json

    return json.loads(text)


def test_svg_has_paths_text_and_unresampled_images(paper, scene, tmp_path):
    path = F.save_figure(paper, tmp_path / "fig.svg")
    root = ET.parse(path).getroot()
    paths = root.findall(f".//{SVG}path")
    texts = ["".join(t.itertext()) for t in root.findall(f".//{SVG}text")]
    images = root.findall(f".//{SVG}image")
    assert len(paths) > 50
    assert any("PSNR" in t for t in texts) and any("reflectance" in t for t in texts)
    assert len(images) > 4
    h, w = scene.hr_shape
    sizes = set()
    for el in images:
        href = el.get("{http://www.w3.org/1999/xlink}href") or el.get("href")
        data = base64.b64decode(href.split(",", 1)[1])
        sizes.add(Image.open(io.BytesIO(data)).size)
    assert (w, h) in sizes and (32, 32) in sizes
    assert F.read_provenance(path)["view"] == "paper figure"


def test_paper_figure_shares_scales_insets_and_captions(paper, scene):
    methods = [scene.layer(u) for u in F.default_methods(scene)]
    assert methods[0].role == "gt" and len(methods) == 3
    rows = paper.axes  # panels, colorbars and insets
    gt = methods[0]
    for layer in methods[1:]:
        ref = compute_all(gt.cube.data, layer.cube.data, scale=scene.analysis_scale())
        caption = f"{layer.name}\nPSNR {ref['psnr_db']:.2f} dB · SAM {ref['sam_deg']:.2f}°"
        assert any(ax.get_title() == caption for ax in rows)
    # per view row, every panel image uses the same colour limits
    main_axes = [ax for ax in rows if ax.get_images() and ax.get_label() != "inset_axes" and ax.get_xlim() == (0, 96)]
    by_row = {}
    for ax in main_axes:
        by_row.setdefault(round(ax.get_position().y0, 3), []).append(ax.get_images()[0].get_clim())
    assert len(by_row) == 4
    for clims in by_row.values():
        assert len(set(clims)) == 1
    # one colorbar per non-RGB row (3), the same inset rectangle on each of the 10 panels
    colorbars = [ax._colorbar for ax in rows if getattr(ax, "_colorbar", None) is not None]
    assert [cb.ax.get_ylabel() for cb in colorbars] == ["reflectance", "RMSE", "SAM (°)"]
    # each colorbar spans its row's shared limits
    assert [tuple(cb.mappable.get_clim()) for cb in colorbars] == [c[0] for y, c in sorted(by_row.items(), reverse=True)][1:]
    rects = [(p.get_x(), p.get_y(), p.get_width(), p.get_height())
             for ax in rows for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle) and not p.get_fill()]
    assert len(rects) == 10 and set(rects) == {(20, 30, 32, 32)}


def test_spectra_figure_plots_the_exported_values(scene, tmp_path):
    curves = collect_spectra(scene)
    fig = F.spectra_figure(scene, curves)
    ax = fig.axes[0]
    lines = ax.get_lines()[: len(curves)]
    for line, curve in zip(lines, curves):
        assert line.get_label() == curve.label
        assert np.array_equal(line.get_ydata(), curve.y)
    assert ax.get_xlabel() == "wavelength (nm)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("(r 40, c 50)" in t for t in legend) and any("(r 12, c 70)" in t for t in legend)
    F.save_figure(fig, tmp_path / "spectra.svg")
    root = ET.parse(tmp_path / "spectra.svg").getroot()
    assert root.findall(f".//{SVG}image") == []  # a pure vector plot


def test_band_curves_figure(scene, tmp_path):
    result = run_analysis(make_request(scene))
    fig = F.band_curves_figure(result, "psnr_db", band=scene.band)
    ax = fig.axes[0]
    for line, m in zip(ax.get_lines(), result.methods):
        assert np.array_equal(line.get_ydata(), m.per_band("psnr_db"))
        assert np.array_equal(line.get_xdata(), scene.wavelengths_nm)
    path = F.save_figure(fig, tmp_path / "curves.png", dpi=100, size_in=(5, 3))
    with Image.open(path) as im:
        assert im.size == (500, 300)


def test_grid_figure_has_every_panel(scene, tmp_path):
    fig = F.grid_figure(scene)
    titles = [ax.get_title() for ax in fig.axes]
    for layer in scene.layers:
        assert any(t.startswith(layer.label) for t in titles)
    F.save_figure(fig, tmp_path / "grid.pdf")


def test_bad_requests_say_what_is_wrong(scene, tmp_path):
    with pytest.raises(F.FigureError, match="inside"):
        F.paper_figure(scene, F.PaperFigureSpec(methods=F.default_methods(scene), inset=(50, 50, 500, 60)))
    with pytest.raises(F.FigureError, match="at least one method"):
        F.paper_figure(scene, F.PaperFigureSpec(methods=[]))
    lr = scene.layers_with_role("lr")[0]
    with pytest.raises(F.FigureError, match="does not match"):
        F.paper_figure(scene, F.PaperFigureSpec(methods=[lr.uid]))
    with pytest.raises(WriteError, match="png, .pdf or .svg"):
        F.save_figure(F.panel_figure(scene), tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []


def test_view_inset_from_the_zoom(scene):
    scene.set_view_range((10.2, 40.7), (5.0, 30.0))
    try:
        assert F.view_inset(scene) == (10.0, 5.0, 41.0, 30.0)
    finally:
        scene.reset_view()
    assert F.view_inset(scene) is None


def test_auto_corner_puts_the_crop_opposite_the_inset(scene):
    """The crop never hides the inset box: a box in the upper left gets its crop lower right,
    one in the lower right gets it upper left."""
    for inset, expect_right, expect_lower in (((5, 5, 30, 30), True, True), ((60, 60, 90, 90), False, False)):
        fig = F.paper_figure(scene, F.PaperFigureSpec(methods=F.default_methods(scene)[1:], views=("band",),
                                                      inset=inset))
        F.figure_to_rgba(fig, dpi=50)  # lays the figure out
        panel = next(ax for ax in fig.axes if ax.child_axes)
        outer, crop = panel.get_position(), panel.child_axes[0].get_position()
        assert (crop.x0 > (outer.x0 + outer.x1) / 2) == expect_right
        assert (crop.y1 < (outer.y0 + outer.y1) / 2 + 1e-6) == expect_lower
        box = next(p for p in panel.patches if not p.get_fill())
        assert (box.get_x(), box.get_y()) == inset[:2]


def test_a_band_change_redraws_the_figure_without_computing_the_metrics_again(scene, monkeypatch):
    """The builder's preview after a band (or inset) change reuses the whole-image metrics and
    maps of the same cubes (computing them again kept every core busy and the window stuttering);
    a replaced cube is computed afresh, and the figure equals one made from scratch."""
    import app.core.science.metrics as M

    calls = []
    real = M.compute_all

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "compute_all", counting)
    F.FIGURE_METRICS._entries.clear()
    methods = F.default_methods(scene)
    spec = F.PaperFigureSpec(methods=methods, band=3, views=["band", "error", "sam"])
    first = F.render_paper_figure(F.paper_inputs(scene, spec))
    n = len(calls)
    assert n == len([uid for uid in methods if scene.layer(uid).role == "recon"]) and n > 0
    spec5 = F.PaperFigureSpec(methods=methods, band=5, views=["band", "error", "sam"])
    second = F.render_paper_figure(F.paper_inputs(scene, spec5))
    assert len(calls) == n  # nothing computed again
    assert first.hsi_provenance["metrics"] == second.hsi_provenance["metrics"]
    recon = next(l for l in scene.layers if l.role == "recon")
    kept = recon.cube
    recon.cube = kept.with_data(np.clip(kept.data * 0.9, 0, 1))
    try:
        third = F.render_paper_figure(F.paper_inputs(scene, spec5))
    finally:
        recon.cube = kept  # (the scene is the module's)
    assert len(calls) == n + 1  # the replaced cube's metrics are new
    assert third.hsi_provenance["metrics"][recon.name]["psnr_db"] != second.hsi_provenance["metrics"][recon.name]["psnr_db"]

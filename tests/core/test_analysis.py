"""app.core.evaluation.analysis: ROI geometry, worst pixels/bands, locked scales, ROI and residual spectra, and
the cancellable, cached analysis job, on a real CAVE crop (the bundled sample) where it matters."""
from __future__ import annotations

import numpy as np
import pytest

from app.core.science import metrics
from app.core.evaluation.analysis import (AnalysisCache, AnalysisError, AnalysisSettings, Cancelled, Roi, analysis_steps,
                               comparable_layers, locked_levels, make_request, polygon_mask, residual_spectra,
                               roi_spectra, run_analysis, view_region, worst_band, worst_pixels)
from app.core.cube import Cube
from app.core.state.scene import Scene
from tests.qt.conftest import SCALE, WL, food_array


def food_scene(n_recons: int = 2) -> Scene:
    """Real CAVE crop: GT, LR (block mean x4), RGB guide and ``n_recons`` reconstructions
    (nearest upsampling of the LR, plus a differently perturbed copy of the GT)."""
    gt = food_array()
    h, w, b = gt.shape
    lr = gt.reshape(h // SCALE, SCALE, w // SCALE, SCALE, b).mean(axis=(1, 3))
    scene = Scene()
    scene.add_layer(Cube.from_array(gt, WL, name="gt"), "gt")
    scene.add_layer(Cube.from_array(lr, WL, name="lr"), "lr")
    scene.add_layer(Cube.from_array(gt[..., [22, 15, 6]], None, name="rgb"), "guide")
    nearest = np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1)
    scene.add_layer(Cube.from_array(nearest, WL, name="nearest"), "recon")
    if n_recons > 1:
        rng = np.random.default_rng(1)
        noisy = np.clip(gt * (1 + 0.05 * rng.standard_normal(gt.shape).astype(np.float32)), 0, 1)
        scene.add_layer(Cube.from_array(noisy, WL, name="noisy"), "recon")
    return scene


# ------------------------------------------------------------------------------ ROI geometry
def test_rect_roi_mask_uses_pixel_centres():
    mask = Roi.rect(2.0, 1.0, 5.0, 4.0).mask(8, 8)
    expected = np.zeros((8, 8), bool)
    expected[1:4, 2:5] = True
    np.testing.assert_array_equal(mask, expected)
    # corners given in any order, a half pixel only counts when the centre is inside
    np.testing.assert_array_equal(Roi.rect(5.4, 4.4, 2.6, 1.6).mask(8, 8)[1:5, 2:6],
                                  [[False] * 4, [False, True, True, False], [False, True, True, False],
                                   [False] * 4])


def test_polygon_mask_triangle_known_answer():
    # right triangle (0,0)-(4,0)-(0,4): centre (c+.5, r+.5) inside when c + r + 1 < 4
    mask = polygon_mask([(0, 0), (4, 0), (0, 4)], 5, 5)
    r, c = np.mgrid[0:5, 0:5]
    np.testing.assert_array_equal(mask, (c + r + 1 < 4))
    # a square polygon equals the rectangle ROI
    np.testing.assert_array_equal(Roi.polygon([(1, 1), (6, 1), (6, 5), (1, 5)]).mask(8, 8),
                                  Roi.rect(1, 1, 6, 5).mask(8, 8))
    # a polygon off the image selects nothing, a clipped one only what is inside
    assert not polygon_mask([(20, 20), (30, 20), (25, 30)], 8, 8).any()
    assert polygon_mask([(-5, -5), (3, -5), (3, 3), (-5, 3)], 8, 8).sum() == 9


def test_roi_validation_and_round_trip():
    with pytest.raises(AnalysisError, match="two corners"):
        Roi("rect", ((0, 0),))
    with pytest.raises(AnalysisError, match="three vertices"):
        Roi.polygon([(0, 0), (1, 1)])
    with pytest.raises(AnalysisError, match="unknown ROI kind"):
        Roi("circle", ((0, 0), (1, 1)))
    with pytest.raises(AnalysisError, match="finite"):
        Roi.rect(0, 0, float("nan"), 1)
    roi = Roi.polygon([(1.5, 2), (7, 3), (4, 9)])
    assert Roi.from_dict(roi.to_dict()) == roi
    with pytest.raises(AnalysisError, match="not a ROI"):
        Roi.from_dict({"kind": "rect"})


def test_settings_validation_and_round_trip():
    s = AnalysisSettings(error_kind="abs_band", scope="roi", curve_metric="ssim")
    assert AnalysisSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown scope"):
        AnalysisSettings(scope="everything")


def test_view_region_clips_and_whole_image_is_none():
    assert view_region(None, (96, 96)) is None
    assert view_region(((-10, 200), (-3, 100)), (96, 96)) is None
    assert view_region(((10.2, 40.7), (5.0, 30.5)), (96, 96)) == (5, 31, 10, 41)


# ------------------------------------------------------------------------------ worst / levels
def test_worst_pixels_and_band():
    m = np.zeros((4, 5), np.float32)
    m[2, 3], m[0, 1], m[3, 0] = 9.0, 7.0, 8.0
    m[1, 1] = np.nan
    assert worst_pixels(m, 2) == [(2, 3), (3, 0)]
    valid = np.ones_like(m, bool)
    valid[2, 3] = False
    assert worst_pixels(m, 1, valid=valid) == [(3, 0)]
    roi = np.zeros_like(valid)
    roi[0, :] = True
    assert worst_pixels(m, 1, mask=roi) == [(0, 1)]
    assert worst_band(np.array([30.0, 25.0, np.inf, 28.0]), "psnr_db") == 1
    assert worst_band(np.array([0.01, 0.05, 0.02]), "rmse") == 1
    assert worst_band(np.array([np.nan, np.nan]), "ssim") is None


def test_locked_levels_is_the_percentile_of_all_maps_pooled():
    a = np.linspace(0, 1, 1001, dtype=np.float32).reshape(7, 143)
    b = a * 3
    lo, hi = locked_levels([a, b], percentile=99.5)
    assert lo == 0.0 and hi == pytest.approx(np.percentile(np.concatenate([a.ravel(), b.ravel()]), 99.5))
    valid = np.zeros_like(a, bool)
    valid[0, :10] = True
    assert locked_levels([b], [valid], percentile=100)[1] == pytest.approx(b[0, 9])


# ------------------------------------------------------------------------------ spectra
def test_roi_spectra_mean_std_per_layer_on_real_data():
    scene = food_scene()
    roi = Roi.rect(20, 30, 44, 50)  # rows 30..49, cols 20..43
    scene.set_roi(roi)
    out = {s.layer.name: s for s in roi_spectra(scene)}
    gt = food_array()
    block = gt[30:50, 20:44].reshape(-1, 31).astype(np.float64)
    np.testing.assert_allclose(out["gt"].mean, block.mean(0), rtol=1e-6)
    np.testing.assert_allclose(out["gt"].std, block.std(0), rtol=1e-5, atol=1e-9)
    assert out["gt"].n == 20 * 24
    # LR: every HR pixel of the ROI contributes the LR pixel covering it
    lr = scene.layers_with_role("lr")[0].cube.data
    rows, cols = np.nonzero(roi.mask(96, 96))
    lr_vals = lr[rows // SCALE, cols // SCALE].astype(np.float64)
    np.testing.assert_allclose(out["lr"].mean, lr_vals.mean(0), rtol=1e-6)
    np.testing.assert_allclose(out["lr"].std, lr_vals.std(0), rtol=1e-5, atol=1e-9)
    assert out["rgb"].mean.shape == (3,)


def test_residual_spectra_at_pixel_and_of_roi_means():
    scene = food_scene()
    scene.set_pixel(41, 70)
    gt = food_array()
    res = {r.layer.name: r for r in residual_spectra(scene)}
    nearest = scene.layers_with_role("recon")[0].cube
    np.testing.assert_allclose(res["nearest"].values, nearest.spectrum(41, 70) - gt[41, 70], atol=1e-7)
    roi = Roi.rect(0, 0, 16, 16)
    res_roi = {r.layer.name: r for r in residual_spectra(scene, roi=roi)}
    np.testing.assert_allclose(res_roi["nearest"].values,
                               nearest.data[:16, :16].mean((0, 1)) - gt[:16, :16].mean((0, 1)), atol=1e-6)
    # without a GT there is nothing to subtract from
    scene.remove_layer(scene.layers_with_role("gt")[0])
    assert residual_spectra(scene) == [] and comparable_layers(scene) == []


def test_guide_with_known_srf_plotted_at_srf_centres():
    from app.core.science.srf import band_centres_nm

    scene = food_scene(1)
    rgb = food_array()[..., [22, 15, 6]]
    scene.add_layer(Cube.from_array(rgb, None, name="rgb2", metadata={"srf": "nikon_d700"}), "guide")
    layer = [l for l in scene.layers if l.name == "rgb2"][0]
    x, known, nominal = scene.layer_wavelengths(layer)
    assert known and not nominal
    np.testing.assert_allclose(x, band_centres_nm("nikon_d700", WL))


# ------------------------------------------------------------------------------ scene API
def test_scene_roi_and_settings_events_and_scale():
    scene = food_scene()
    got = []
    scene.events.roi.connect(lambda roi: got.append(roi))
    scene.events.analysis.connect(lambda s: got.append(s))
    roi = Roi.rect(1, 2, 10, 12)
    scene.set_roi(roi.to_dict())
    scene.set_roi(roi)  # unchanged: no event
    scene.set_analysis_settings(scope="roi")
    scene.set_analysis_settings({"error_kind": "abs_band"})
    assert got == [roi, AnalysisSettings(scope="roi"), AnalysisSettings(error_kind="abs_band")]
    assert scene.roi_mask().sum() == 9 * 10
    assert scene.analysis_scale() == SCALE
    with pytest.raises(TypeError):
        scene.set_roi("rows 1-2")
    scene.clear()
    assert scene.roi is None and got[-1] is None


# ------------------------------------------------------------------------------ the job
def test_analysis_equals_compute_all_and_is_cached():
    scene = food_scene()
    cache = AnalysisCache()
    result = run_analysis(make_request(scene, "cpu"), cache)
    gt = scene.layers_with_role("gt")[0].cube
    assert [m.name for m in result.methods] == ["nearest", "noisy"]
    for m in result.methods:
        # the methods are analysed in one pass (compute_all_many): compute_all's numbers to float32 rounding
        ref = metrics.compute_all(gt.data, m.layer.cube.data, scale=SCALE, device="cpu")
        for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse"):
            assert m.scalar(key) == pytest.approx(ref[key], rel=1e-5)
        np.testing.assert_allclose(m.sam_map, ref["maps"]["sam_deg"], rtol=1e-6, atol=1e-5)  # float32 steps
        np.testing.assert_allclose(m.error_map, ref["maps"]["rmse"], rtol=1e-6, atol=0)
        np.testing.assert_allclose(m.per_band("psnr_db"), ref["per_band"]["psnr_db"], rtol=1e-6)
        assert "uiqi" not in m.full  # not shown by the viewer, not computed
    # one colour scale for all methods, from the worse method's maps
    assert result.sam_levels == locked_levels([m.sam_map for m in result.methods],
                                              [m.sam_valid for m in result.methods])
    misses = cache.misses
    run_analysis(make_request(scene, "cpu"), cache)
    assert cache.misses == misses  # nothing recomputed


def test_abs_error_at_band_and_band_change_uses_the_cache():
    scene = food_scene(1)
    cache = AnalysisCache()
    scene.set_analysis_settings(error_kind="abs_band")
    scene.set_band(7)
    r7 = run_analysis(make_request(scene, "cpu"), cache)
    gt, rec = scene.layers_with_role("gt")[0].cube, scene.layers_with_role("recon")[0].cube
    np.testing.assert_allclose(r7.methods[0].error_map, metrics.abs_error_map(gt.data, rec.data, 7))
    scene.set_band(20)
    r20 = run_analysis(make_request(scene, "cpu"), cache)
    np.testing.assert_allclose(r20.methods[0].error_map, metrics.abs_error_map(gt.data, rec.data, 20))
    assert r20.methods[0].full is r7.methods[0].full  # the whole-image pass came from the cache


def test_roi_and_view_scopes_equal_compute_all_on_the_area():
    scene = food_scene(1)
    gt, rec = scene.layers_with_role("gt")[0].cube, scene.layers_with_role("recon")[0].cube
    roi = Roi.polygon([(10, 10), (80, 15), (60, 85), (12, 70)])
    scene.set_roi(roi)
    scene.set_analysis_settings(scope="roi")
    r = run_analysis(make_request(scene, "cpu"))
    ref = metrics.compute_all(gt.data, rec.data, scale=SCALE, mask=roi.mask(96, 96), device="cpu")
    assert r.methods[0].scalar("sam_deg") == pytest.approx(ref["sam_deg"])
    assert r.methods[0].scalar("psnr_db") == pytest.approx(ref["psnr_db"])
    assert "ROI" in r.scope_note
    worst, _ = r.worst_pixel("sam")
    assert roi.mask(96, 96)[worst]  # the worst pixel is searched inside the ROI
    scene.set_view_range((20, 60), (10, 50))
    scene.set_analysis_settings(scope="view")
    r = run_analysis(make_request(scene, "cpu"))
    ref = metrics.compute_all(gt.data, rec.data, scale=SCALE, region=(10, 50, 20, 60), device="cpu")
    assert r.methods[0].scalar("rmse") == pytest.approx(ref["rmse"])
    assert r.scope_note == "visible view: rows 10–50, cols 20–60"


def test_worst_pixel_over_all_methods():
    scene = food_scene()
    r = run_analysis(make_request(scene, "cpu"))
    (row, col), method = r.worst_pixel("error")
    best = max(float(m.error_map.max()) for m in r.methods)
    assert method.error_map[row, col] == best
    (row, col), method = r.worst_pixel("sam")
    assert method.sam_valid[row, col]
    assert method.sam_map[row, col] == max(float(m.sam_map[m.sam_valid].max()) for m in r.methods)


def test_cancel_and_progress():
    scene = food_scene()
    seen = []
    with pytest.raises(Cancelled):
        run_analysis(make_request(scene, "cpu"), progress=lambda f, t: seen.append((f, t)),
                     should_cancel=lambda: len(seen) >= 1)
    assert seen and seen[0][0] == 0.0 and "nearest" in seen[0][1]
    fractions = [f for f, _ in analysis_steps(make_request(scene, "cpu"))]
    # the pass of both methods (0 -> 0.9), then each method's scope (nothing left for the whole image)
    assert fractions == [0.0, 0.9, 0.9, 1.0]
    # in two phases: the pass without SSIM, the partial result, SSIM, then the scopes; never backwards
    partials = []
    fractions = [f for f, _ in analysis_steps(make_request(scene, "cpu"), partial=partials.append)]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(partials) == 1 and partials[0].pending == ("ssim",)


def test_cancel_inside_the_whole_image_pass():
    """Cancel is checked after every row tile of the one pass over all methods, not only between steps."""
    scene = food_scene()
    cache = AnalysisCache()
    ticks = []
    with pytest.raises(Cancelled):
        run_analysis(make_request(scene, "cpu"), cache, progress=lambda f, t: ticks.append(f),
                     should_cancel=lambda: len(ticks) >= 2)
    assert ticks[0] == 0.0 and 0.0 < ticks[1] < 0.9  # stopped inside the pass (96 rows: 2 tiles)
    assert len(cache) == 0  # nothing half-done is cached


def test_requests_without_gt_or_reconstruction_say_why():
    scene = food_scene(1)
    scene.remove_layer(scene.layers_with_role("recon")[0])
    with pytest.raises(AnalysisError, match="no reconstruction"):
        make_request(scene)
    scene.remove_layer(scene.layers_with_role("gt")[0])
    with pytest.raises(AnalysisError, match="ground-truth"):
        make_request(scene)


def test_two_phase_analysis_gives_maps_first_and_the_same_final_result():
    """With a ``partial`` callback the maps and every metric but SSIM come first (SSIM pending, NaN),
    then the final result equals the one-pass result, SSIM included."""
    scene = food_scene()
    one = run_analysis(make_request(scene, "cpu"), AnalysisCache())
    partials = []
    two = run_analysis(make_request(scene, "cpu"), AnalysisCache(), partial=partials.append)
    assert len(partials) == 1 and partials[0].pending == ("ssim",) and two.pending == ()
    early = partials[0]
    for a, b, c in zip(one.methods, early.methods, two.methods):
        assert np.isnan(b.scalar("ssim")) and np.isnan(b.per_band("ssim")).all()
        for key in ("psnr_db", "sam_deg", "ergas", "rmse"):
            assert b.scalar(key) == pytest.approx(a.scalar(key), rel=1e-12)
            assert c.scalar(key) == pytest.approx(a.scalar(key), rel=1e-12)
        assert c.scalar("ssim") == pytest.approx(a.scalar("ssim"), rel=1e-9)
        np.testing.assert_allclose(c.per_band("ssim"), a.per_band("ssim"), rtol=1e-9)
        np.testing.assert_array_equal(b.sam_map, a.sam_map)
        np.testing.assert_array_equal(b.error_map, a.error_map)
    assert early.error_levels == one.error_levels and early.sam_levels == one.sam_levels
    # the cache holds the complete result only: a second run takes it and calls no partial
    cache = AnalysisCache()
    run_analysis(make_request(scene, "cpu"), cache, partial=partials.append)
    again = run_analysis(make_request(scene, "cpu"), cache, partial=partials.append)
    assert len(partials) == 2 and again.methods[0].scalar("ssim") == pytest.approx(one.methods[0].scalar("ssim"))

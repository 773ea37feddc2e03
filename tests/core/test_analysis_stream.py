"""The analysis of memory-mapped cubes streams by row tiles: same results as the one-pass
analysis of the loaded cubes, the cubes never loaded, memory bounded by the output maps plus a
tile (issue 24 item 4)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from app.core.evaluation.analysis import AnalysisSettings, make_request, run_analysis
from app.core.io import open_cube
from app.core.science import metrics
from app.core.state.scene import Scene
from tests.conftest import SAMPLE

WL = np.arange(400.0, 701.0, 10.0)
pytestmark = pytest.mark.skipif(not metrics.streamable(), reason="streaming needs the fused kernels (numba)")


def write_bip_uint16(path: Path, data: np.ndarray) -> Path:
    h, w, b = data.shape
    np.clip(np.rint(data * 10000.0), 0, 65535).astype("<u2").tofile(path.with_suffix(".img"))
    header = path.with_suffix(".hdr")
    header.write_text("ENVI\n"
                      f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\n"
                      "file type = ENVI Standard\ndata type = 12\ninterleave = bip\nbyte order = 0\n"
                      "reflectance scale factor = 10000\n"
                      f"wavelength = {{{', '.join(f'{v:.1f}' for v in WL)}}}\n")
    return header


def real_methods(gt: np.ndarray) -> list[np.ndarray]:
    """Two reconstructions of a real GT: x4 block mean upsampled, and a noisy gain."""
    h, w, b = gt.shape
    lr = gt.reshape(h // 4, 4, w // 4, 4, b).mean(axis=(1, 3))
    rng = np.random.default_rng(0)
    return [np.repeat(np.repeat(lr, 4, 0), 4, 1),
            np.clip(gt * 1.05 + 0.01 * rng.standard_normal(gt.shape).astype(np.float32), 0, 1)]


def scene_of(cubes) -> Scene:
    scene = Scene()
    for role, name, cube in cubes:
        scene.add_layer(cube, role, name)
    return scene


def compare(a, b) -> None:
    assert [m.layer.name for m in a.methods] == [m.layer.name for m in b.methods]
    for ma, mb in zip(a.methods, b.methods):
        for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc"):
            assert ma.full[key] == pytest.approx(mb.full[key], rel=1e-6, abs=1e-6, nan_ok=True), key
        for key in ("psnr_db", "rmse", "ssim", "cc"):
            np.testing.assert_allclose(ma.per_band(key), mb.per_band(key), rtol=1e-6, atol=1e-6)
        for key in ("rmse", "sam_deg", "abs_error", "sam_valid"):
            np.testing.assert_allclose(ma.full["maps"][key].astype(np.float64), mb.full["maps"][key].astype(np.float64),
                                       rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ma.error_map, mb.error_map, rtol=1e-6, atol=1e-6)
    assert a.error_levels == pytest.approx(b.error_levels, rel=1e-6)
    assert a.sam_levels == pytest.approx(b.sam_levels, rel=1e-6)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return open_cube(SAMPLE).load().data  # (256, 256, 31) real CAVE reflectance


def test_small_tiles_equal_the_one_pass_analysis(sample):
    gt = np.ascontiguousarray(sample[:120, :104])
    gt[:6, :6] = 0.0  # dark and zero spectra: left out of SAM over the whole image, not per tile
    from app.core.cube import Cube

    scene = scene_of([("gt", "gt", Cube.from_array(gt, WL))] +
                     [("recon", f"m{j}", Cube.from_array(m, WL)) for j, m in enumerate(real_methods(gt))])
    scene.set_band(9)
    for kind in ("rmse", "abs_band"):
        scene.set_analysis_settings(error_kind=kind)
        request = make_request(scene)
        steps: list[float] = []
        whole = run_analysis(request)
        tiled = run_analysis(request, tile_rows=7, progress=lambda f, _t: steps.append(f))
        compare(tiled, whole)
        assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)


def test_memory_mapped_cubes_stream_without_loading_and_within_a_tile_of_memory(tmp_path, sample, monkeypatch):
    from app.core.evaluation import analysis

    monkeypatch.setattr(analysis, "STREAM_TILE_BYTES", 1 << 21)  # 16-row tiles here
    gt = np.tile(sample, (2, 2, 1))[:448, :480]
    methods = real_methods(gt)
    cubes = [("gt", "gt", open_cube(write_bip_uint16(tmp_path / "gt", gt)))]
    cubes += [("recon", f"m{j}", open_cube(write_bip_uint16(tmp_path / f"m{j}", m))) for j, m in enumerate(methods)]
    scene = scene_of(cubes)
    scene.set_analysis_settings(AnalysisSettings(error_kind="abs_band"))
    assert all(layer.cube.is_lazy for layer in scene.layers)
    request = make_request(scene)
    tracemalloc.start()
    try:
        streamed = run_analysis(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(layer.cube.is_lazy for layer in scene.layers), "the pass read tiles, never whole cubes"
    h, w, b = gt.shape
    n = len(methods)
    map_set = n * h * w * (3 * 4 + 1)                 # RMSE, SAM, |error| float32 and valid, per method
    rows = max(16, analysis.STREAM_TILE_BYTES // (w * b * 4 * (n + 1)))
    tile = (rows + 10) * w * b * 4 * (n + 1)           # (SSIM reads 10 rows more)
    cubes_bytes = (n + 1) * h * w * b * 4              # what the one-pass analysis holds in memory
    assert peak < 2 * map_set + 2 * tile + (4 << 20), (peak, map_set, tile)
    assert peak < cubes_bytes / 2
    # the same figures as the cubes loaded and analysed in one pass
    loaded = scene_of([(role, name, cube.load()) for role, name, cube in cubes])
    loaded.set_analysis_settings(AnalysisSettings(error_kind="abs_band"))
    compare(streamed, run_analysis(make_request(loaded)))


def test_visible_view_metrics_of_memory_mapped_cubes_read_the_view_only(tmp_path, sample):
    gt = np.ascontiguousarray(sample[:160, :176])
    methods = real_methods(gt)
    cubes = [("gt", "gt", open_cube(write_bip_uint16(tmp_path / "gt", gt)))]
    cubes += [("recon", f"m{j}", open_cube(write_bip_uint16(tmp_path / f"m{j}", m))) for j, m in enumerate(methods)]
    results = []
    for scene in (scene_of(cubes), scene_of([(role, name, open_cube(cube.source_path.with_suffix(".hdr")).load())
                                             for role, name, cube in cubes])):
        scene.set_view_range((30.0, 110.0), (20.0, 90.0))
        scene.set_analysis_settings(AnalysisSettings(scope="view"))
        results.append(run_analysis(make_request(scene)))
        if scene.layers[0].cube.is_lazy:
            assert all(layer.cube.is_lazy for layer in scene.layers)
    mapped, loaded = results
    assert mapped.scope_note == loaded.scope_note and "rows 20" in mapped.scope_note
    for ma, mb in zip(mapped.methods, loaded.methods):
        assert ma.scope["region"] == mb.scope["region"]
        for key in ("psnr_db", "ssim", "sam_deg", "rmse", "cc", "uiqi"):
            assert ma.scope[key] == pytest.approx(mb.scope[key], rel=1e-6, abs=1e-6), key
        assert ma.scope["psnr_db"] != pytest.approx(ma.full["psnr_db"], abs=1e-3)  # the view, not the image


def test_paper_figure_of_memory_mapped_cubes_never_loads_them(tmp_path, sample):
    from app.core.export import figure as F

    gt = np.ascontiguousarray(sample[:128, :144])
    methods = real_methods(gt)
    cubes = [("gt", "gt", open_cube(write_bip_uint16(tmp_path / "gt", gt)))]
    cubes += [("recon", f"m{j}", open_cube(write_bip_uint16(tmp_path / f"m{j}", m))) for j, m in enumerate(methods)]
    figures = []
    for scene in (scene_of(cubes), scene_of([(role, name, open_cube(cube.source_path.with_suffix(".hdr")).load())
                                             for role, name, cube in cubes])):
        spec = F.PaperFigureSpec(methods=F.default_methods(scene), band=11, views=["true", "band", "error", "sam"],
                                 error_kind="abs_band")
        figures.append(F.paper_figure(scene, spec).hsi_provenance["metrics"])
        if scene.layers[0].cube.is_lazy:
            assert all(layer.cube.is_lazy for layer in scene.layers)
    mapped, loaded = figures
    assert mapped.keys() == loaded.keys() == {"m0", "m1"}
    for name in mapped:
        for key in ("psnr_db", "sam_deg", "ssim"):
            assert mapped[name][key] == pytest.approx(loaded[name][key], rel=1e-5), (name, key)

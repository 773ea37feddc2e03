"""The napari reader plugin (app/napari_plugin): discovered from the installed entry point, valid,
opening every format of tests/data through a real (headless) napari, a reconstruction beside its GT
on the GT's scale, declining what napari's own readers should keep, and one-line errors naming
the broken file.

The entry point is registered by the (editable) install: `make` reinstalls when pyproject.toml
changes; by hand, `.venv/bin/pip install -e . --no-deps --no-build-isolation`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from app import api  # noqa: E402
from app.core.errors import HsiError  # noqa: E402
from app.core.io import FORMATS  # noqa: E402
from app.napari_plugin.reader import get_reader  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
PLUGIN = "hsi-sr-viewer"
# every format of tests/data: ENVI (header and data file), MATLAB v5 and v7.3, HDF5, .npz, TIFF
# (pages and GeoTIFF samples), a CAVE folder of PNG bands
CUBES = ["fenix_bip.hdr", "fenix_bip.img", "paris_crop_v5.mat", "cave_crop_v73.mat", "jasper_crop.h5",
         "cave_crop.npz", "cave_crop_pages.tif", "fenix_crop_geo.tif", "cave_beads_crop_ms"]


@pytest.fixture(scope="module", autouse=True)
def napari_plugins(tmp_path_factory):
    """napari's settings in a temporary file (never the user's), and the installed plugins found
    as napari finds them at start-up (npe2's entry-point discovery)."""
    old = os.environ.get("NAPARI_CONFIG")
    os.environ["NAPARI_CONFIG"] = str(tmp_path_factory.mktemp("napari") / "settings.yaml")
    npe2.PluginManager.instance().discover(include_npe1=False)
    yield
    if old is None:
        os.environ.pop("NAPARI_CONFIG", None)
    else:
        os.environ["NAPARI_CONFIG"] = old


@pytest.fixture
def viewer():
    from napari.components import ViewerModel

    return ViewerModel()


def _one_line_naming(exc: BaseException, path: Path) -> str:
    text = str(exc)
    assert str(path) in text and "\n" not in text and "Traceback" not in text, text
    return text


# ---------------------------------------------------------------------------------- the manifest
def test_manifest_is_discovered_from_the_entry_point_and_valid():
    # every installed copy of the distribution that declares a napari manifest (a stale egg-info
    # from an old build may sit beside the install; napari, like npe2, looks at all of them)
    declared = [ep.value for dist in metadata.distributions() if dist.metadata["Name"] == PLUGIN
                for ep in dist.entry_points if ep.group == "napari.manifest" and ep.name == PLUGIN]
    # (an editable install and the egg-info pip leaves in the checkout both declare it: one value)
    assert declared and set(declared) == {"app.napari_plugin:napari.yaml"}

    pm = npe2.PluginManager()  # a fresh manager: only what discovery finds
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest(PLUGIN)
    assert manifest.package_metadata.name == PLUGIN
    # what `npe2 validate hsi-sr-viewer --imports` checks: the schema, and every python_name imports
    checked = npe2.PluginManifest.from_file(ROOT / "app" / "napari_plugin" / "napari.yaml")
    checked.validate_imports()
    assert checked.contributions == manifest.contributions  # discovery found this file
    (reader,) = checked.contributions.readers
    assert reader.command == f"{PLUGIN}.get_reader" and reader.accepts_directories
    # a pattern for every extension app.core.io reads (the PNG folder is the directory reader)
    extensions = {e for f in FORMATS.values() for e in f.extensions if e}
    assert {f"*{e}" for e in extensions} <= set(reader.filename_patterns), extensions
    assert "*.png" not in reader.filename_patterns  # single images stay napari's
    for name in CUBES:
        assert any(r.plugin_name == PLUGIN for r in pm.iter_compatible_readers([str(DATA / name)])), name


def test_plugin_module_imports_neither_napari_nor_qt():
    code = ("import sys, app.napari_plugin, app.napari_plugin.reader\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'napari', 'npe2', 'vispy', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'pyqtgraph', 'superqt'}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- opening cubes
@pytest.mark.parametrize("name", CUBES)
def test_napari_opens_each_format_as_a_bands_first_layer(viewer, name):
    path = DATA / name
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    cube = api.open_cube(path)
    h, w, b = cube.shape
    assert layer._type_string == "image" and layer.data.shape == (b, h, w) and layer.data.dtype == np.float32
    np.testing.assert_array_equal(layer.data, np.moveaxis(cube.data, 2, 0))
    assert viewer.dims.nsteps[0] == b  # the slider walks the bands
    assert tuple(layer.axis_labels) == ("band", "y", "x")
    assert layer.name == cube.name
    meta = layer.metadata
    if cube.wavelengths_nm is None:
        assert meta["wavelengths_nm"] is None
    else:
        np.testing.assert_allclose(meta["wavelengths_nm"], cube.wavelengths_nm)
        assert len(meta["wavelengths_nm"]) == b
    assert meta["value_rule"] == cube.metadata["value_rule"] and meta["value_range"] == cube.normalisation
    assert meta["format"] == cube.metadata["format"]
    assert meta["source_path"] == str(cube.source_path.resolve())
    assert not any(k.startswith("_") for k in meta)  # no file handles
    lo, hi = layer.contrast_limits
    values = layer.data[np.isfinite(layer.data)]
    assert values.min() <= lo < hi <= values.max()
    assert abs(lo - np.percentile(values, 1)) < 0.05 and abs(hi - np.percentile(values, 99)) < 0.05


def test_envi_and_mat_carry_their_wavelengths_and_value_rules(viewer):
    (envi,) = viewer.open(str(DATA / "fenix_bip.hdr"), plugin=PLUGIN)
    (mat,) = viewer.open(str(DATA / "cave_crop_v73.mat"), plugin=PLUGIN)
    assert envi.metadata["wavelengths_nm"][0] == pytest.approx(378.19)  # the header's first band
    assert envi.metadata["value_rule"] == "unit" and envi.metadata["interleave"] == "bip"
    assert mat.metadata["wavelengths_nm"][:2] == pytest.approx([400.0, 410.0])
    # CAVE uint16 in a .mat: divided by the cube's maximum (the literature's rule for real scenes)
    assert mat.metadata["value_rule"] == "max" and float(mat.data.max()) == pytest.approx(1.0)
    assert mat.name == "cave_crop_v73:hsi" and mat.metadata["variable"] == "hsi"


# ---------------------------------------------------------------------------------- GT and recon
def _counts_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A GT in counts (uint16, no stated scale) and a reconstruction in the same counts (float32,
    smoother, so that its own maximum is lower), both .h5, from the real Jasper Ridge crop."""
    import h5py
    from scipy.ndimage import uniform_filter

    src = api.open_cube(DATA / "jasper_crop.h5")
    counts = np.rint(np.moveaxis(src.data, 2, 0) * 10000).astype(np.uint16)          # (B, H, W)
    recon = uniform_filter(counts.astype(np.float32), size=(1, 3, 3), mode="nearest")
    gt_path, recon_path = tmp_path / "jasper_gt.h5", tmp_path / "jasper_recon.h5"
    for path, values in ((gt_path, counts), (recon_path, recon)):
        with h5py.File(path, "w") as f:
            f["counts"] = values
            f["wavelength_nm"] = src.wavelengths_nm
    return gt_path, recon_path, counts, recon


def test_a_reconstruction_opens_beside_its_gt_on_the_gt_scale(viewer, tmp_path):
    gt_path, recon_path, counts, recon = _counts_pair(tmp_path)
    assert recon.max() < counts.max() * 0.99
    gt_layer, recon_layer = viewer.open([str(gt_path), str(recon_path)], stack=True, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["jasper_gt:counts", "jasper_recon:counts"]
    # the GT: counts divided by its maximum; the recon: divided by the same number
    gt_max = float(counts.max())
    np.testing.assert_allclose(gt_layer.data, counts / gt_max, rtol=1e-6)
    np.testing.assert_allclose(recon_layer.data, recon / gt_max, rtol=1e-5, atol=1e-7)
    assert gt_layer.metadata["value_rule"] == "max" and recon_layer.metadata["value_rule"] == "gt-scale"
    assert recon_layer.metadata["gt_path"] == str(gt_path.resolve())
    assert "GT's units" in recon_layer.metadata["gt_scale"]
    assert recon_layer.data.shape == gt_layer.data.shape and recon_layer.data.dtype == np.float32
    assert tuple(recon_layer.contrast_limits) == tuple(gt_layer.contrast_limits)  # equal values look equal
    np.testing.assert_allclose(recon_layer.metadata["wavelengths_nm"], gt_layer.metadata["wavelengths_nm"])

    # opened alone, the reconstruction would be divided by its own (lower) maximum
    (alone,) = viewer.open(str(recon_path), plugin=PLUGIN)
    assert alone.metadata["value_rule"] == "max" and float(alone.data.max()) == pytest.approx(1.0)
    assert float(recon_layer.data.max()) < 0.99


def test_nan_pixels_open_as_no_data(viewer, tmp_path):
    import h5py

    src = api.open_cube(DATA / "jasper_crop.h5")
    values = np.moveaxis(src.data, 2, 0).copy()
    values[:, 3, 4] = np.nan
    path = tmp_path / "with_nan.h5"
    with h5py.File(path, "w") as f:
        f["reflectance"] = values
        f["wavelength_nm"] = src.wavelengths_nm
    with pytest.raises(HsiError, match="NaN"):
        api.open_cube(path)  # the library refuses by default; napari cannot ask, so the plugin masks
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert np.isfinite(layer.data).all() and (layer.data[:, 3, 4] == 0).all()
    expected = values.copy()
    expected[:, 3, 4] = 0
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.metadata["nodata_pixels"] == 1
    assert any("no-data" in w for w in layer.metadata["warnings"])


# ---------------------------------------------------------------------------------- not ours
def test_declines_files_that_are_not_cubes_so_napari_reads_them(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    rgb = tmp_path / "photo.tif"
    tifffile.imwrite(rgb, rng.integers(0, 255, (20, 30, 3), dtype=np.uint8), photometric="rgb")
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, rng.integers(0, 255, (20, 30), dtype=np.uint8))
    zstack = tmp_path / "zstack.tif"
    tifffile.imwrite(zstack, rng.integers(0, 255, (8, 20, 30), dtype=np.uint8), imagej=True, metadata={"axes": "ZYX"})
    flat = tmp_path / "plane.npy"
    np.save(flat, rng.random((20, 30)).astype(np.float32))
    analyze = tmp_path / "scan.hdr"  # an Analyze 7.5 header (napari's imageio reads those)
    analyze.write_bytes((348).to_bytes(4, "little") + bytes(344))
    analyze_data = tmp_path / "scan.img"
    analyze_data.write_bytes(bytes(20 * 30 * 2))
    radiance = tmp_path / "sky.hdr"  # a Radiance HDR picture
    radiance.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n" + bytes(16))
    tif_folder = tmp_path / "tiffs"
    tif_folder.mkdir()
    shutil.copy(grey, tif_folder / "a.tif")
    for path in (rgb, grey, zstack, flat, analyze, analyze_data, radiance, tif_folder):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(DATA / "jasper_crop.h5"), str(flat)]) is None  # a stack is all cubes or none
    for name in ("cave_crop_pages.tif", "fenix_crop_geo.tif", "cave_beads_crop_ms", "cave_crop.npz"):
        assert get_reader(str(DATA / name)) is not None, name

    # with no plugin named, npe2 tries the readers that claim *.tif: ours declines, napari's reads it
    layer_data = npe2.read([str(rgb)], stack=False)
    assert np.asarray(layer_data[0][0]).shape == (20, 30, 3)


# ---------------------------------------------------------------------------------- errors
def test_broken_files_raise_one_line_errors_naming_them(viewer, tmp_path):
    truncated = tmp_path / "fenix_bip.img"
    shutil.copy(DATA / "fenix_bip.hdr", tmp_path / "fenix_bip.hdr")
    truncated.write_bytes((DATA / "fenix_bip.img").read_bytes()[:20000])
    junk_mat = tmp_path / "junk.mat"
    junk_mat.write_bytes(b"MATLAB 5.0 MAT-file, Platform: x".ljust(128, b" ") + bytes(range(256)) * 8)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    for path, opened, words in ((truncated, tmp_path / "fenix_bip.hdr", "truncated"),
                                (junk_mat, junk_mat, "MATLAB"),
                                (empty, empty, "empty"),
                                (DATA / "cave_crop_bhw.npy", DATA / "cave_crop_bhw.npy", "napari cannot ask")):
        with pytest.raises(HsiError) as caught:
            viewer.open(str(opened), plugin=PLUGIN)
        assert words in _one_line_naming(caught.value, path)
    assert len(viewer.layers) == 0

    # in a stack, the error names the broken file, not the GT before it
    gt_path, _, _, _ = _counts_pair(tmp_path)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(HsiError) as caught:
        viewer.open([str(gt_path), str(broken)], stack=True, plugin=PLUGIN)
    assert str(gt_path) not in _one_line_naming(caught.value, broken)
    assert len(viewer.layers) == 0


# ---------------------------------------------------------------------------------- the Qt viewer
QT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import napari
    try:
        viewer = napari.Viewer(show=True)
        from napari._vispy.utils.gl import get_gl_extensions
        get_gl_extensions()
    except Exception as exc:  # no OpenGL context
        print("no OpenGL:", exc)
        sys.exit(77)
    (layer,) = viewer.open(sys.argv[1], plugin="hsi-sr-viewer")
    viewer.reset_view()
    viewer.dims.set_current_step(0, 45)
    from qtpy.QtWidgets import QApplication
    for _ in range(20):
        QApplication.processEvents()
    picture = viewer.export_figure(flash=False)[..., :3].astype(float)
    lo, hi = layer.contrast_limits
    expected = np.clip((layer.data[45] - lo) / (hi - lo), 0, 1) * 255
    print(picture.shape, float(np.abs(picture - expected[..., None]).max()))
    assert picture.shape[:2] == expected.shape, picture.shape
    assert np.abs(picture - expected[..., None]).max() <= 3
    viewer.close()
""")


@pytest.mark.slow  # 20-35 s: napari's Qt window under Xvfb (its OpenGL canvas cannot draw offscreen)
@pytest.mark.gui
def test_the_qt_viewer_shows_a_band_of_the_envi_file(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed: napari's OpenGL canvas cannot draw with QT_QPA_PLATFORM=offscreen")
    script = tmp_path / "qt_viewer.py"
    script.write_text(QT_SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "NAPARI_CONFIG": str(tmp_path / "settings.yaml"),
           "HOME": str(tmp_path)}
    done = subprocess.run(["xvfb-run", "-a", sys.executable, str(script), str(DATA / "fenix_bip.hdr")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode == 77:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]

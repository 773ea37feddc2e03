"""app.core.export.data and app.core.io.atomic: spectra / metrics / per-band CSV equal the plotted and
computed values, cubes round-trip with wavelengths and provenance, writes are atomic and fail
with a clear error on a read-only folder or a full disk."""
from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from app.core.io import atomic

from app.core.export import data as export
from app.core.evaluation.analysis import Roi, make_request, run_analysis
from app.core.io.atomic import WriteError
from app.core.io import open_cube
from app.core.science.metrics import compute_all
from tests.core.export_helpers import food_scene


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if not l.startswith("#")]
    rows = list(csv.reader(lines))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def scene():
    s = food_scene()
    s.set_pixel(37, 52)
    s.add_pin(10, 80)
    s.set_roi(Roi.rect(20, 30, 44, 50))
    return s


def test_spectra_csv_equals_the_plotted_values(scene, tmp_path):
    path = export.write_spectra_csv(scene, tmp_path / "spectra.csv")
    header, rows = read_csv(path)
    assert header[0] == "wavelength_nm"
    curves = export.collect_spectra(scene)
    # pixel and pin for each of the 5 layers, plus 5 ROI means
    assert len([c for c in curves if c.kind == "pixel"]) == 5
    assert len([c for c in curves if c.kind == "pin"]) == 5
    assert len([c for c in curves if c.kind == "roi"]) == 5
    wl = np.array([float(r[0]) for r in rows])
    for curve in curves:
        col = header.index(curve.label)
        values = {float(r[0]): r[col] for r in rows}
        for x, y in zip(curve.x, curve.y):
            assert float(values[float(x)]) == y  # full precision: the exact plotted value
    # the GT at the clicked pixel is the cube's spectrum; the LR curve is the covering LR pixel
    gt = scene.layers_with_role("gt")[0]
    col = header.index(f"{gt.label} (r 37, c 52)")
    gt_rows = [r for r in rows if r[col] != ""]
    assert np.allclose([float(r[col]) for r in gt_rows], gt.cube.spectrum(37, 52))
    lr = scene.layers_with_role("lr")[0]
    assert f"{lr.label} (r 9, c 13)" in header  # 37 // 4, 52 // 4
    # the RGB guide contributes 3 values at its nominal wavelengths, blank elsewhere
    guide_cols = [h for h in header if h.startswith("Guide") and "r 37" in h]
    assert len(guide_cols) == 1
    assert sum(1 for r in rows if r[header.index(guide_cols[0])] != "") == 3
    assert len(wl) == len(set(wl)) and np.all(np.diff(wl) > 0)
    # ROI mean and std columns equal the ROI statistics over the mask
    mask = scene.roi_mask()
    col = header.index(f"{gt.label} (ROI mean, {int(mask.sum())} px)")
    expected = gt.cube.data[mask].astype(np.float64).mean(axis=0)
    assert np.allclose([float(r[col]) for r in rows if r[col] != ""], expected, atol=1e-9)


def test_spectra_csv_has_the_residuals_of_every_reconstruction(scene, tmp_path):
    """The plot's right-axis curves (reconstruction − GT at the clicked pixel) are in the CSV;
    the figure's curves (collect_spectra's default) stay the reflectance curves only."""
    header, rows = read_csv(export.write_spectra_csv(scene, tmp_path / "spectra.csv"))
    gt = scene.layers_with_role("gt")[0]
    recons = scene.layers_with_role("recon")
    assert len(recons) >= 2
    for layer in recons:
        col = header.index(f"{layer.label} − ref (r 37, c 52)")
        values = np.array([float(r[col]) for r in rows if r[col] != ""])
        expected = layer.cube.spectrum(37, 52).astype(np.float64) - gt.cube.spectrum(37, 52).astype(np.float64)
        assert values.shape == (31,) and np.array_equal(values, expected)
    assert not any(c.kind == "residual" for c in export.collect_spectra(scene))


def test_spectra_csv_residuals_of_the_roi_means_without_a_pixel(tmp_path):
    s = food_scene()
    s.set_roi(Roi.rect(20, 30, 44, 50))
    header, rows = read_csv(export.write_spectra_csv(s, tmp_path / "roi.csv"))
    gt = s.layers_with_role("gt")[0]
    mask = s.roi_mask()
    for layer in s.layers_with_role("recon"):
        col = header.index(f"{layer.label} − ref (ROI mean)")
        values = np.array([float(r[col]) for r in rows if r[col] != ""])
        expected = (layer.cube.data[mask].astype(np.float64).mean(axis=0)
                    - gt.cube.data[mask].astype(np.float64).mean(axis=0))
        np.testing.assert_allclose(values, expected, atol=1e-12)


def test_spectra_csv_without_a_pixel_says_what_to_do(tmp_path):
    s = food_scene(with_computed=False)
    with pytest.raises(Exception, match="click a pixel"):
        export.write_spectra_csv(s, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_metrics_table_csv_and_markdown_equal_compute_all(scene, tmp_path):
    result = run_analysis(make_request(scene))
    csv_path = export.write_metrics(result, tmp_path / "metrics.csv")
    header, rows = read_csv(csv_path)
    assert header == ["method", "PSNR (dB)", "SSIM", "SAM (°)", "ERGAS", "RMSE"]
    gt = scene.layers_with_role("gt")[0]
    for row in rows:
        layer = next(l for l in scene.layers_with_role("recon") if l.name == row[0])
        ref = compute_all(gt.cube.data, layer.cube.data, scale=scene.analysis_scale())
        # the viewer analyses all methods in one pass (compute_all_many): equal to float32 rounding
        assert float(row[1]) == pytest.approx(ref["psnr_db"], rel=1e-5)
        assert float(row[3]) == pytest.approx(ref["sam_deg"], rel=1e-5)
        assert float(row[5]) == pytest.approx(ref["rmse"], rel=1e-5)
    md = export.write_metrics(result, tmp_path / "metrics.md").read_text(encoding="utf-8")
    lines = [l for l in md.splitlines() if l.startswith("|")]
    assert lines[0].startswith("| method | PSNR (dB)")
    assert len(lines) == 2 + len(rows)
    best_psnr = max(float(r[1]) for r in rows)
    assert f"**{best_psnr:.2f}**" in md
    with pytest.raises(WriteError, match=r"\.csv or \.md"):
        export.write_metrics(result, tmp_path / "metrics.txt")


def test_per_band_csv_equals_the_curves(scene, tmp_path):
    result = run_analysis(make_request(scene))
    header, rows = read_csv(export.write_per_band_csv(result, tmp_path / "bands.csv"))
    assert header[:2] == ["band", "wavelength_nm"]
    assert len(rows) == 31
    for m in result.methods:
        for metric in export.PER_BAND_METRICS:
            col = header.index(f"{m.name} {metric}")
            assert np.array_equal([float(r[col]) for r in rows], m.per_band(metric))
    assert [float(r[1]) for r in rows] == list(scene.wavelengths_nm)


@pytest.mark.parametrize("suffix", [".hdr", ".mat", ".npy", ".tif"])
def test_exported_cube_reads_back_with_wavelengths_and_provenance(scene, tmp_path, suffix):
    layer = next(l for l in scene.layers_with_role("recon") if "bicubic" in l.name)
    written = export.export_cube(layer.cube, tmp_path / f"recon{suffix}")
    back = open_cube(written)
    assert np.array_equal(back.data, layer.cube.data)
    assert np.allclose(back.wavelengths_nm, layer.cube.wavelengths_nm)
    prov = back.metadata["provenance"]
    original = layer.cube.metadata["provenance"]
    for key in ("model", "scale", "seed", "device", "time", "weights_sha256"):
        assert prov[key] == original[key], key
    assert prov["exported_by"].startswith("hsi-sr-viewer")


def test_export_cube_rejects_an_unknown_extension_before_writing(scene, tmp_path):
    with pytest.raises(Exception, match="output format"):
        export.export_cube(scene.layers[0].cube, tmp_path / "x.xyz")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_the_file_only_when_complete(tmp_path):
    target = tmp_path / "t.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_gives_a_clear_error(scene, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="read-only") as info:
            export.write_spectra_csv(scene, folder / "s.csv")
        assert str(folder / "s.csv") in str(info.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_read_only_error_is_translated(tmp_path, monkeypatch):
    """Works as root too: the OS refusal is simulated where the temporary file is created."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match="read-only") as info:
        atomic.write_text(tmp_path / "table.csv", "x")
    assert "table.csv" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_partial_file(scene, tmp_path, monkeypatch):
    real_open = open
    written = []

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            written.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullDisk(fh) if "w" in mode and str(file).endswith(".part") else fh

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(WriteError, match="disk is full") as info:
        export.write_spectra_csv(scene, tmp_path / "spectra.csv")
    assert "spectra.csv" in str(info.value)
    assert written, "the write was attempted"
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_a_cube(scene, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    with pytest.raises(WriteError, match="disk is full") as info:
        export.export_cube(scene.layers[-1].cube, tmp_path / "recon.npy")
    assert "recon.npy" in str(info.value)
    assert list(tmp_path.iterdir()) == []

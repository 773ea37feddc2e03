"""Sensor products and stated scales (issue 22 items 2 and 3).

Every file is written here with the library that writes the real format (h5py for HDF-EOS5 and
NetCDF4, tifffile / rasterio for GeoTIFF, spectral for ENVI), shaped like the real product (names,
attributes, axis orders, dtypes) at a small size, and the cube read back is checked against numpy
on the arrays written.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import UnknownFormatError
from app.core.io import open_cube, sniff

ROOT = Path(__file__).resolve().parents[2]
H, W = 12, 10
RNG = np.random.default_rng(22)


def _reflectance_dn(bands: int, high: int = 6000) -> np.ndarray:
    """(H, W, bands) int16 reflectance x 10000 with a vegetation-like rising spectrum."""
    base = np.linspace(300, high, bands)[None, None, :]
    return (base * RNG.uniform(0.3, 1.0, (H, W, 1))).astype(np.int16)


# ---------------------------------------------------------------------------------- ENVI per-band gains
def _save_envi(path: Path, data: np.ndarray, **metadata) -> Path:
    import spectral.io.envi as envi

    envi.save_image(str(path), data, dtype=data.dtype, interleave="bil", metadata=metadata, force=True, ext=".img")
    return path


def test_envi_per_band_gain_and_offset_are_applied_band_by_band_lazily(tmp_path):
    dn = _reflectance_dn(8)
    gains = np.linspace(1e-4, 2e-4, 8)
    offsets = np.linspace(0.0, -0.01, 8)
    hdr = _save_envi(tmp_path / "gains.hdr", dn, **{"data gain values": [f"{g:.8g}" for g in gains],
                                                    "data offset values": [f"{o:.8g}" for o in offsets]})
    cube = open_cube(hdr)
    expected = dn.astype(np.float64) * gains + offsets
    assert cube.is_lazy and isinstance(cube.raw, np.memmap)
    np.testing.assert_allclose(cube.band(5), expected[:, :, 5], rtol=1e-6, atol=1e-7)  # one band read
    np.testing.assert_allclose(cube.spectrum(3, 4), expected[3, 4], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cube.region(slice(2, 6), slice(1, 3)), expected[2:6, 1:3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cube.data, expected, rtol=1e-6, atol=1e-7)
    assert cube.metadata["value_rule"] == "stated" and "per-band data gain" in cube.normalisation
    assert not any("differ between bands" in w for w in cube.metadata["warnings"])
    # the user's rule replaces the header's, gains included (as for one gain per cube)
    forced = open_cube(hdr, normalise=100)
    np.testing.assert_allclose(forced.data, dn / 100.0, rtol=1e-6)


def test_aviris_reflectance_header_reads_as_x10000_and_radiance_does_not(tmp_path):
    dn = _reflectance_dn(6, high=4000)
    rfl = _save_envi(tmp_path / "scene.hdr", dn, **{"sensor type": "AVIRIS-NG",
                                                    "description": "ang20190624t2 surface reflectance (rfl)"})
    cube = open_cube(rfl)
    np.testing.assert_allclose(cube.data, dn / 10000.0, rtol=1e-6)
    assert cube.metadata["value_rule"] == "convention" and "AVIRIS" in cube.normalisation
    rdn = _save_envi(tmp_path / "radiance.hdr", dn, **{"sensor type": "AVIRIS-NG", "description": "radiance (rdn)"})
    assert open_cube(rdn).metadata["value_rule"] == "max"


# ---------------------------------------------------------------------------------- GeoTIFF SCALE / OFFSET
def _gdal_metadata_xml(scales, offsets) -> str:
    items = "".join(f'<Item name="SCALE" sample="{k}" role="scale">{s!r}</Item>'
                    f'<Item name="OFFSET" sample="{k}" role="offset">{o!r}</Item>'
                    for k, (s, o) in enumerate(zip(scales, offsets)))
    return f"<GDALMetadata>{items}</GDALMetadata>"


def test_geotiff_gdal_metadata_scale_offset_per_band_tifffile(tmp_path):
    import tifffile

    dn = _reflectance_dn(8)
    scales = [float(s) for s in np.linspace(1e-4, 3e-4, 8)]
    offsets = [float(o) for o in np.linspace(0.0, 0.02, 8)]
    path = tmp_path / "scaled.tif"
    tifffile.imwrite(path, np.moveaxis(dn, 2, 0), planarconfig="separate", photometric="minisblack",
                     extratags=[(42112, "s", 0, _gdal_metadata_xml(scales, offsets), True)])
    cube = open_cube(path)
    expected = dn.astype(np.float64) * scales + offsets
    np.testing.assert_allclose(cube.band(7), expected[:, :, 7], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cube.data, expected, rtol=1e-6, atol=1e-7)
    assert cube.metadata["value_rule"] == "stated" and "SCALE" in cube.normalisation
    # one scale for every band: the cube-wide stated rule
    same = tmp_path / "same.tif"
    tifffile.imwrite(same, np.moveaxis(dn, 2, 0), planarconfig="separate", photometric="minisblack",
                     extratags=[(42112, "s", 0, _gdal_metadata_xml([1e-4] * 8, [0.0] * 8), True)])
    one = open_cube(same)
    assert one.band_gain is None and one.scale == pytest.approx(1e-4)
    np.testing.assert_allclose(one.data, dn * 1e-4, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Dataset has no geotransform")
def test_geotiff_scales_offsets_written_by_rasterio(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    dn = _reflectance_dn(6)
    scales, offsets = [1e-4, 1e-4, 2e-4, 2e-4, 1e-4, 5e-5], [0.0, 0.01, 0.0, -0.01, 0.0, 0.0]
    path = tmp_path / "rio.tif"
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=6, dtype="int16", interleave="band") as dst:
        dst.write(np.moveaxis(dn, 2, 0))
        dst.scales = scales
        dst.offsets = offsets
    with rasterio.open(path) as src:  # what GDAL itself reads back
        assert list(src.scales) == pytest.approx(scales) and list(src.offsets) == pytest.approx(offsets)
    cube = open_cube(path)
    np.testing.assert_allclose(cube.data, dn.astype(np.float64) * scales + offsets, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------- the int16 warning
def test_int16_reflectance_like_data_without_scale_gets_a_loud_warning(tmp_path, caplog):
    import tifffile

    dn = _reflectance_dn(6, high=5000)
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, np.moveaxis(dn, 2, 0), planarconfig="separate", photometric="minisblack")
    with caplog.at_level(logging.WARNING, logger="hsi.io"):
        cube = open_cube(path)
    vmax = float(dn.max())
    np.testing.assert_allclose(cube.data, dn / vmax, rtol=1e-6)  # the literature's rule stays
    (note,) = [w for w in cube.metadata["warnings"] if w.startswith("ASSUMPTION")]
    assert "10000" in note and "--normalise 10000" in note and f"{vmax:g}" in note and "\n" not in note
    assert any("--normalise 10000" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    # counts far above 10000 and 8-bit data do not look like reflectance x 10000
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.moveaxis((dn.astype(np.int32) * 5).astype(np.uint16), 2, 0), planarconfig="separate",
                     photometric="minisblack")
    assert not any(w.startswith("ASSUMPTION") for w in open_cube(big).metadata["warnings"])
    assert not any(w.startswith("ASSUMPTION") for w in open_cube(path, normalise=10000).metadata["warnings"])


# ---------------------------------------------------------------------------------- EnMAP
ENMAP_NAME = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"


def _enmap_xml(wl, fwhm, gains, offsets, level="L2A", nodata=-32768) -> str:
    bands = "".join(f'<bandID number="{k + 1}"><wavelengthCenterOfBand>{w}</wavelengthCenterOfBand>'
                    f"<FWHMOfBand>{f}</FWHMOfBand><GainOfBand>{g!r}</GainOfBand><OffsetOfBand>{o!r}</OffsetOfBand>"
                    f"</bandID>" for k, (w, f, g, o) in enumerate(zip(wl, fwhm, gains, offsets)))
    name = ENMAP_NAME.replace("L2A", level)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<level_X xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<metadata><name>{name}-METADATA.XML</name></metadata>"
            f"<product><image><merge><noDataValue>{nodata}</noDataValue></merge></image>"
            f"<productFileInformation><file><name>{name}-SPECTRAL_IMAGE.TIF</name></file></productFileInformation>"
            f"</product><specific><bandCharacterisation>{bands}</bandCharacterisation></specific></level_X>")


def _enmap_product(folder: Path, dn: np.ndarray, gains=None, offsets=None, level="L2A"):
    import tifffile

    folder.mkdir()
    b = dn.shape[2]
    wl = np.round(np.linspace(418.4, 2445.5, b), 3)
    fwhm = np.round(np.linspace(6.5, 9.1, b), 3)
    gains = [1.0] * b if gains is None else gains
    offsets = [0.0] * b if offsets is None else offsets
    name = ENMAP_NAME.replace("L2A", level)
    tif = folder / f"{name}-SPECTRAL_IMAGE.TIF"
    tifffile.imwrite(tif, np.moveaxis(dn, 2, 0), planarconfig="separate", photometric="minisblack",
                     extratags=[(42113, "s", 0, "-32768", True)])  # band-sequential, GDAL_NODATA
    xml = folder / f"{name}-METADATA.XML"
    xml.write_text(_enmap_xml(wl, fwhm, gains, offsets, level), encoding="utf-8")
    (folder / f"{name}-QL_VNIR.TIF").write_bytes(b"II*\x00")  # other product files beside them
    return tif, xml, wl, fwhm


def test_enmap_l2a_folder_tif_and_xml_open_with_wavelengths_scale_and_nodata(tmp_path):
    dn = _reflectance_dn(8)
    dn[0, 0, :] = -32768
    dn[5, 7, 3] = -32768
    tif, xml, wl, fwhm = _enmap_product(tmp_path / "product", dn)
    cubes = [open_cube(p) for p in (tmp_path / "product", tif, xml)]
    expected = np.where(dn == -32768, 0.0, dn / 10000.0)
    for cube in cubes:
        assert cube.metadata["format"] == "enmap" and cube.metadata["product_level"] == "L2A"
        np.testing.assert_allclose(cube.data, expected, rtol=1e-6)
        np.testing.assert_allclose(cube.wavelengths_nm, wl)
        np.testing.assert_allclose(cube.fwhm_nm, fwhm)
        assert cube.ignore_value == -32768 and cube.nodata_count() == 2
        assert cube.metadata["value_rule"] == "convention" and "EnMAP L2A" in cube.normalisation
        assert not any(w.startswith("ASSUMPTION") for w in cube.metadata["warnings"])
    assert sniff(tmp_path / "product") == sniff(tif) == sniff(xml) == "enmap"


def test_enmap_stated_per_band_gains_win_over_the_l2a_convention(tmp_path):
    dn = _reflectance_dn(6)
    gains = [1e-4, 1e-4, 1.1e-4, 1.1e-4, 1.2e-4, 1.2e-4]
    offsets = [0.0, 0.0, 0.001, 0.001, 0.0, 0.0]
    tif, _, _, _ = _enmap_product(tmp_path / "p", dn, gains=gains, offsets=offsets)
    cube = open_cube(tif)
    np.testing.assert_allclose(cube.data, dn.astype(np.float64) * gains + offsets, rtol=1e-6, atol=1e-7)
    assert cube.metadata["value_rule"] == "stated" and "GainOfBand" in cube.normalisation


# ---------------------------------------------------------------------------------- PRISMA
def _prisma(path: Path, level: str = "2D", scales: bool = True):
    """A PRISMA-shaped .he5: VNIR 8 bands (the last one flagged), SWIR 6 (the first one flagged), both
    stored from long to short wavelength as (lines, bands, samples) uint16, error matrices beside."""
    import h5py

    cw_v = np.array([975.0, 940.0, 900.0, 800.0, 700.0, 600.0, 500.0, 0.0])
    cw_s = np.array([0.0, 2400.0, 2000.0, 1500.0, 990.0, 950.0])  # 950 and 990 overlap the VNIR
    fl_v = np.array([1, 1, 1, 1, 1, 1, 1, 0], dtype=np.uint8)
    fl_s = np.array([0, 1, 1, 1, 1, 1], dtype=np.uint8)
    fw_v = np.where(fl_v == 1, np.linspace(12.0, 9.0, 8), 0.0)
    fw_s = np.where(fl_s == 1, np.linspace(10.0, 13.0, 6), 0.0)
    vnir = RNG.integers(0, 65535, (H, 8, W), dtype=np.uint16)
    swir = RNG.integers(0, 65535, (H, 6, W), dtype=np.uint16)
    swath = "PRS_L1_HCO" if level == "1" else f"PRS_L{level}_HCO"
    with h5py.File(path, "w") as f:
        fields = f.create_group(f"HDFEOS/SWATHS/{swath}/Data Fields")
        fields.create_dataset("VNIR_Cube", data=vnir)
        fields.create_dataset("SWIR_Cube", data=swir)
        err = "L2" if level != "1" else "L1"
        fields.create_dataset(f"VNIR_PIXEL_{err}_ERR_MATRIX", data=np.zeros_like(vnir))  # same shape: not the cube
        fields.create_dataset(f"SWIR_PIXEL_{err}_ERR_MATRIX", data=np.zeros_like(swir))
        f.create_group(f"HDFEOS/SWATHS/{swath}/Geolocation Fields").create_dataset(
            "Latitude", data=np.zeros((H, W), dtype=np.float32))
        f.attrs["Product_ID"] = np.bytes_(f"PRS_L{level}_STD")
        f.attrs["Processing_Level"] = np.bytes_(level)
        f.attrs["List_Cw_Vnir"], f.attrs["List_Cw_Swir"] = cw_v.astype(np.float32), cw_s.astype(np.float32)
        f.attrs["List_Fwhm_Vnir"], f.attrs["List_Fwhm_Swir"] = fw_v.astype(np.float32), fw_s.astype(np.float32)
        f.attrs["List_Cw_Vnir_Flags"], f.attrs["List_Cw_Swir_Flags"] = fl_v, fl_s
        if level == "1":
            f.attrs["ScaleFactor_Vnir"], f.attrs["Offset_Vnir"] = np.float32(100.0), np.float32(0.5)
            f.attrs["ScaleFactor_Swir"], f.attrs["Offset_Swir"] = np.float32(200.0), np.float32(0.0)
        elif scales:
            f.attrs["L2ScaleVnirMin"], f.attrs["L2ScaleVnirMax"] = np.float32(0.0), np.float32(0.8)
            f.attrs["L2ScaleSwirMin"], f.attrs["L2ScaleSwirMax"] = np.float32(-0.01), np.float32(0.6)
    return vnir, swir, (cw_v, fw_v, fl_v), (cw_s, fw_s, fl_s)


def _prisma_reference(vnir, swir, v, s, calib):
    """numpy: physical values of the kept bands, (H, W, B) sorted by wavelength."""
    (gv, ov), (gs, os_) = calib
    cols, wls, fws = [], [], []
    for cube, (cw, fw, fl), g, o in ((vnir, v, gv, ov), (swir, s, gs, os_)):
        for k in np.flatnonzero(fl == 1):
            cols.append(cube[:, k, :].astype(np.float64) * g + o)
            wls.append(cw[k])
            fws.append(fw[k])
    order = np.argsort(np.asarray(wls), kind="stable")
    return np.stack(cols, axis=-1)[:, :, order], np.asarray(wls)[order], np.asarray(fws)[order]


def test_prisma_l2d_merges_vnir_and_swir_on_wavelength(tmp_path):
    path = tmp_path / "PRS_L2D_STD_20200413023942_20200413023947_0001.he5"
    vnir, swir, v, s = _prisma(path)
    expected, wl, fwhm = _prisma_reference(vnir, swir, v, s, ((0.8 / 65535, 0.0), (0.61 / 65535, -0.01)))
    assert sniff(path) == "prisma"
    cube = open_cube(path)
    assert cube.shape == (H, W, 12) and cube.is_lazy
    np.testing.assert_allclose(cube.wavelengths_nm, wl)
    assert np.all(np.diff(cube.wavelengths_nm) >= 0) and 0.0 not in cube.wavelengths_nm
    np.testing.assert_allclose(cube.fwhm_nm, fwhm, rtol=1e-6)
    np.testing.assert_allclose(cube.data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cube.band(4), expected[:, :, 4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cube.spectrum(7, 2), expected[7, 2], rtol=1e-5, atol=1e-6)
    assert cube.metadata["value_rule"] == "stated" and "L2Scale" in cube.normalisation
    merge = cube.metadata["warnings"][0]
    assert "VNIR 7 of 8 bands kept (1 flagged, dropped)" in merge and "SWIR 5 of 6" in merge and "overlap" in merge
    # 500-940 VNIR, 950 SWIR, 975 VNIR, 990-2400 SWIR: both sides of the overlap kept, by wavelength
    assert cube.metadata["band_source"] == ["VNIR"] * 6 + ["SWIR", "VNIR"] + ["SWIR"] * 4


def test_prisma_l1_radiance_is_calibrated_then_divided_by_its_maximum(tmp_path):
    path = tmp_path / "PRS_L1_STD_OFFL_20200524103704_20200524103708_0001.he5"
    vnir, swir, v, s = _prisma(path, level="1")
    radiance, wl, _ = _prisma_reference(vnir, swir, v, s, ((1 / 100.0, -0.5), (1 / 200.0, 0.0)))
    cube = open_cube(path)
    np.testing.assert_allclose(cube.wavelengths_nm, wl)
    np.testing.assert_allclose(cube.data, radiance / radiance.max(), rtol=1e-5, atol=1e-6)
    assert cube.metadata["value_rule"] == "max" and cube.metadata["product_level"] == "L1"


def test_prisma_l2_without_scale_attributes_is_read_as_x10000_with_a_warning(tmp_path):
    path = tmp_path / "p.he5"
    vnir, swir, v, s = _prisma(path, level="2C", scales=False)
    expected, _, _ = _prisma_reference(vnir, swir, v, s, ((1e-4, 0.0), (1e-4, 0.0)))
    cube = open_cube(path)
    np.testing.assert_allclose(cube.data, expected, rtol=1e-5)
    assert cube.metadata["value_rule"] == "convention"
    assert any(w.startswith("ASSUMPTION") and "L2Scale" in w for w in cube.metadata["warnings"])


# ---------------------------------------------------------------------------------- EMIT / NetCDF4
def _emit(path: Path, packed: bool = False):
    import h5py

    b = 14
    refl = RNG.uniform(0.0, 0.7, (H, W, b)).astype(np.float32)
    refl[2, 3, :] = -9999.0
    wl = np.linspace(381.0, 2493.0, b)
    fwhm = np.linspace(8.0, 8.6, b)
    good = np.ones(b, dtype=np.uint8)
    good[[6, 11]] = 0
    with h5py.File(path, "w") as f:
        f.attrs["title"] = np.bytes_("EMIT L2A Estimated Surface Reflectance 60 m V001")
        f.attrs["instrument"] = np.bytes_("EMIT")
        if packed:
            stored = np.where(refl == -9999.0, -9999, np.round(refl / 1e-4)).astype(np.int16)
            ds = f.create_dataset("reflectance", data=stored)
            ds.attrs["_FillValue"] = np.int16(-9999)
            ds.attrs["scale_factor"], ds.attrs["add_offset"] = np.float32(1e-4), np.float32(0.0)
        else:
            stored = refl
            ds = f.create_dataset("reflectance", data=refl)
            ds.attrs["_FillValue"] = np.float32(-9999.0)
        g = f.create_group("sensor_band_parameters")
        g.create_dataset("wavelengths", data=wl.astype(np.float32)).attrs["units"] = np.bytes_("nm")
        g.create_dataset("fwhm", data=fwhm.astype(np.float32)).attrs["units"] = np.bytes_("nm")
        g.create_dataset("good_wavelengths", data=good)
        loc = f.create_group("location")
        loc.create_dataset("lat", data=np.zeros((H, W)))
        loc.create_dataset("lon", data=np.zeros((H, W)))
    return stored, wl, fwhm, good


def test_emit_netcdf_reflectance_fill_wavelengths_fwhm_and_bad_bands(tmp_path):
    path = tmp_path / "EMIT_L2A_RFL_001_20230123T004529_2302216_003.nc"
    refl, wl, fwhm, good = _emit(path)
    assert sniff(path) == "emit"
    cube = open_cube(path)
    assert cube.shape == (H, W, 14) and cube.metadata["format"] == "emit"
    np.testing.assert_allclose(cube.data, np.where(refl == -9999.0, 0.0, refl), rtol=1e-6)
    np.testing.assert_allclose(cube.wavelengths_nm, wl, rtol=1e-6)
    np.testing.assert_allclose(cube.fwhm_nm, fwhm, rtol=1e-6)
    np.testing.assert_array_equal(cube.bad_bands, good == 0)
    assert cube.ignore_value == -9999.0 and cube.nodata_count() == 1 and cube.nodata_mask()[2, 3]
    assert cube.metadata["value_rule"] == "unit"


def test_emit_packed_int16_uses_scale_factor_and_fill(tmp_path):
    path = tmp_path / "packed.nc"
    stored, *_ = _emit(path, packed=True)
    cube = open_cube(path)
    np.testing.assert_allclose(cube.data, np.where(stored == -9999, 0.0, stored * np.float32(1e-4)), rtol=1e-6)
    assert cube.metadata["value_rule"] == "stated" and cube.nodata_count() == 1


def test_plain_netcdf4_without_band_group_is_plain_hdf5(tmp_path):
    import h5py

    path = tmp_path / "other.nc"
    with h5py.File(path, "w") as f:
        f.create_dataset("cube", data=np.zeros((4, 5, 6), dtype=np.float32))
    assert sniff(path) == "hdf5"


# ---------------------------------------------------------------------------------- HDF4 and the CLI
def test_hdf4_is_refused_with_how_to_convert(tmp_path):
    path = tmp_path / "EO1H0440342002212110PY.L1R"
    path.write_bytes(b"\x0e\x03\x13\x01" + bytes(2000))
    with pytest.raises(UnknownFormatError) as err:
        open_cube(path)
    text = str(err.value)
    assert str(path) in text and "HDF4" in text and "gdal_translate" in text and "\n" not in text


def test_main_info_on_products(tmp_path):
    prisma = tmp_path / "PRS_L2D.he5"
    vnir, swir, v, s = _prisma(prisma)
    _, wl, fwhm = _prisma_reference(vnir, swir, v, s, ((1.0, 0.0), (1.0, 0.0)))
    hdf4 = tmp_path / "hyperion.hdf"
    hdf4.write_bytes(b"\x0e\x03\x13\x01" + bytes(100))
    bare = tmp_path / "bare.tif"
    import tifffile

    tifffile.imwrite(bare, np.moveaxis(_reflectance_dn(6, high=5000), 2, 0), planarconfig="separate",
                     photometric="minisblack")
    code = ("import sys; from app.cli import main\n"
            "for args in sys.argv[1:]:\n"
            "    print('STATUS', main(args.split('|')), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code, f"info|{prisma}|--json", f"info|{hdf4}", f"info|{bare}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = done.stdout
    doc = json.loads(out[:out.index("STATUS 0")])
    assert doc["format"] == "prisma" and doc["shape_hwb"] == [H, W, 12]
    np.testing.assert_allclose(doc["wavelengths_nm"], wl, atol=1e-3)
    np.testing.assert_allclose(doc["fwhm_nm"], fwhm, atol=1e-3)
    assert "STATUS 2" in out
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HDF4" in errors[0] and str(hdf4) in errors[0]
    assert "Traceback" not in done.stderr
    loud = [line for line in done.stderr.splitlines() if line.startswith("WARNING:") and "--normalise 10000" in line]
    assert len(loud) == 1 and str(bare) in loud[0]


def test_product_metadata_that_does_not_fit_is_a_one_line_error_naming_the_file(tmp_path):
    import h5py

    from app.core.errors import CubeError
    from app.core.io import FORMATS

    dn = _reflectance_dn(8)
    tif, xml, _, _ = _enmap_product(tmp_path / "e", dn)
    xml.write_text(_enmap_xml(range(400, 407), [7.0] * 7, [1.0] * 7, [0.0] * 7), encoding="utf-8")  # 7 of 8 bands
    with pytest.raises(CubeError) as err:
        open_cube(tif)
    assert str(xml) in str(err.value) and "7 bands" in str(err.value) and "holds 8" in str(err.value)
    he5 = tmp_path / "p.he5"
    _prisma(he5)
    with h5py.File(he5, "a") as f:
        f.attrs["List_Cw_Swir"] = np.arange(5, dtype=np.float32)  # the SWIR cube has 6 bands
    with pytest.raises(CubeError) as err:
        open_cube(he5)
    assert str(he5) in str(err.value) and "List_Cw_Swir lists 5 values for 6 bands" in str(err.value)
    with pytest.raises(CubeError, match="--var and --layout do not apply"):
        open_cube(tmp_path / "p.he5", var="VNIR_Cube")
    assert not any(".hdf" in f.extensions for f in FORMATS.values())  # HDF4 is not advertised

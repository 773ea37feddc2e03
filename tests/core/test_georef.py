"""Georeference: the model (app.core.io.georef), ENVI map info and GeoTIFF tags read and written
(through rasterio and through tifffile, which must agree), carried through convert, sr, simulate
and exports, with the pixel size divided by the scale for SR and multiplied for a simulated LR.

Every file is checked against the libraries' own reading of it: GDAL (rasterio) for ENVI and
GeoTIFF, spectral for ENVI headers, tifffile's GeoTIFF decoder for the geokeys."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import spectral.io.envi as spectral_envi
import tifffile

from app.cli import main
from app.core.cube import Cube
from app.core.io import open_cube, save_cube
from app.core.io.georef import BACKEND_ENV, Georef, from_envi, georef_of, map_readout, to_envi

try:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import Affine
except ImportError:  # the tifffile path is tested without it; the cross-checks need it
    rasterio = None

needs_rasterio = pytest.mark.skipif(rasterio is None, reason="rasterio (GDAL) is not installed")
BACKENDS = ["tifffile", pytest.param("rasterio", marks=needs_rasterio)]

# ESRI WKT of WGS 84 / UTM zone 33N, as ENVI (and GDAL's ENVI driver) write it
UTM33_ESRI = ('PROJCS["WGS_1984_UTM_Zone_33N",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",'
              '6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],'
              'PROJECTION["Transverse_Mercator"],PARAMETER["False_Easting",500000.0],PARAMETER["False_Northing",0.0],'
              'PARAMETER["Central_Meridian",15.0],PARAMETER["Scale_Factor",0.9996],PARAMETER["Latitude_Of_Origin",0.0],'
              'UNIT["Meter",1.0]]')
UTM33 = (499980.0, 30.0, 0.0, 4200030.0, 0.0, -30.0)


@pytest.fixture
def fenix(data_dir) -> Cube:
    """The real FENIX crop (12 x 10 x 90), loaded."""
    return open_cube(data_dir / "fenix_crop_geo.tif").load()


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param


def use(monkeypatch, name: str) -> None:
    monkeypatch.setenv(BACKEND_ENV, name)


def write_envi_with_spectral(folder, data: np.ndarray, map_info: str, css: str | None = None, name="scene"):
    """An ENVI file written by spectral with a map info (and coordinate system string)."""
    md = {"map info": map_info, "wavelength units": "Nanometers"}
    if css:
        md["coordinate system string"] = "{" + css + "}"
    hdr = folder / f"{name}.hdr"
    spectral_envi.save_image(str(hdr), data.astype(np.float32), dtype=np.float32, interleave="bsq",
                             metadata=md, force=True, ext=".img")
    return hdr


def spectral_style(fields: dict) -> dict:
    """Header fields as spectral reads them: '{a, b}' values split into lists at commas."""
    return {k: [v.strip() for v in str(t)[1:-1].split(",")] if str(t).startswith("{") else str(t)
            for k, t in fields.items()}


def gdal_reading(path):
    """(transform in GDAL order, EPSG or None, CRS or None) as GDAL reads the file."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(str(path)) as ds:
            return tuple(ds.transform.to_gdal()), (ds.crs.to_epsg() if ds.crs else None), ds.crs, ds.count


def geo(cube: Cube) -> Georef:
    g = georef_of(cube.metadata)
    assert g is not None, f"{cube.name} lost its georeference: {cube.metadata.get('warnings')}"
    return g


# ------------------------------------------------------------------------------ the model
def test_model_geometry_scaling_and_crop():
    g = Georef(UTM33, None, 32633)
    assert g.pixel_to_map(0, 0) == (499995.0, 4200015.0)  # centre of the first pixel (pixel-is-area)
    assert g.corner_to_map(0, 0) == (499980.0, 4200030.0)
    assert g.pixel_to_map(2, 3) == (499980.0 + 3.5 * 30, 4200030.0 - 2.5 * 30)
    sr = g.scaled(4)
    assert sr.transform == (499980.0, 7.5, 0.0, 4200030.0, 0.0, -7.5)
    # the centre of an LR pixel is the mean of the centres of its 4 x 4 SR pixels
    centres = np.array([sr.pixel_to_map(8 + i, 12 + j) for i in range(4) for j in range(4)])
    assert tuple(centres.mean(axis=0)) == pytest.approx(g.pixel_to_map(2, 3), abs=1e-9)
    lr = g.coarsened(3)
    assert lr.transform == (499980.0, 90.0, 0.0, 4200030.0, 0.0, -90.0)
    assert lr.scaled(3) == g
    crop = g.cropped(2, 5)
    assert crop.origin == (499980.0 + 150.0, 4200030.0 - 60.0)
    assert crop.pixel_to_map(0, 0) == g.pixel_to_map(2, 5)
    rot = Georef((100.0, 8.0, 6.0, 200.0, 6.0, -8.0))  # rotated grid: the crop follows the axes
    assert rot.cropped(1, 2).pixel_to_map(3, 4) == pytest.approx(rot.pixel_to_map(4, 6))
    assert rot.pixel_size == (10.0, 10.0)
    assert Georef.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert g.label == "EPSG:32633 (WGS 84 / UTM zone 33N)" and g.units == "m" and not g.geographic
    assert Georef((2.0, 0.01, 0.0, 49.0, 0.0, -0.01), None, 4326).geographic
    for bad in [(0, 0, 0, 0, 0, 0), (1, 2, 3), (0, float("nan"), 0, 0, 0, -1)]:
        with pytest.raises(ValueError):
            Georef(bad)
    assert georef_of({"georef": {"transform": [0, 0, 0, 0, 0, 0]}}) is None  # malformed: ignored


def test_map_readout_for_the_status_bar():
    g = Georef(UTM33, None, 32633)
    assert map_readout({"georef": g.to_dict()}, 2, 3) == "E 500085 m, N 4199955 m"  # to a tenth of a pixel
    assert map_readout(g.scaled(4), 2, 3) == "E 500006.2 m, N 4200011.2 m"  # 7.5 m pixels: 0.1 m
    # an LR layer (4 HR pixels per pixel): HR pixel (9, 14) lies in LR pixel (2, 3)
    lr = g.coarsened(4).to_dict()
    x = 499980.0 + (14 + 0.5) / 4 * 120
    y = 4200030.0 - (9 + 0.5) / 4 * 120
    assert map_readout({"georef": lr}, 9, 14, per_pixel=4) == f"E {x:.0f} m, N {y:.0f} m"
    geog = Georef((2.25, 0.0001, 0.0, 48.9, 0.0, -0.0001), None, 4326)
    assert map_readout(geog, 0, 0) == "lat 48.89995°, lon 2.25005°"
    assert map_readout({}, 1, 1) == "" and map_readout(None, 1, 1) == ""


# ------------------------------------------------------------------------------ ENVI
MAP_INFOS = [
    ("{UTM, 1, 1, 499980, 4200030, 30, 30, 33, North, WGS-84, units=Meters}", None),
    ("{UTM, 2.5, 3.5, 500000, 4200000, 30, 20, 33, South, WGS-84, units=Meters}", None),
    ("{UTM, 1, 1, 500000, 4200000, 30, 30, 33, North, WGS-84, units=Meters, rotation=30}", None),
    ("{Geographic Lat/Lon, 1, 1, 2.25, 48.9, 0.001, 0.002, WGS-84, units=Degrees}", None),
    ("{UTM, 1, 1, 499980, 4200030, 30, 30, 33, North, WGS-84, units=Meters}", UTM33_ESRI),
]


@needs_rasterio
@pytest.mark.parametrize("map_info,css", MAP_INFOS)
def test_envi_map_info_is_read_as_gdal_reads_it(tmp_path, fenix, map_info, css):
    hdr = write_envi_with_spectral(tmp_path, np.moveaxis(fenix.data, 2, 0), map_info, css)
    g = geo(open_cube(hdr))
    transform, epsg, crs, _ = gdal_reading(hdr.with_suffix(".img"))
    assert g.transform == pytest.approx(transform, rel=1e-12, abs=1e-9)
    assert g.epsg == epsg
    if css:
        assert g.crs_wkt == css  # the coordinate system string, as written
        assert CRS.from_wkt(g.crs_wkt) == crs


@pytest.mark.parametrize("transform,epsg", [
    (UTM33, 32633),
    ((2.25, 0.001, 0.0, 48.9, 0.0, -0.002), 4326),
    ((500000.0, 25.98076211353316, 15.0, 4200000.0, 15.0, -25.98076211353316), 32633),  # rotated 30°
    ((4321000.0, 10.0, 0.0, 3210000.0, 0.0, -10.0), 3035),  # LAEA Europe: map info cannot name it
])
def test_envi_write_read_round_trip_exact(tmp_path, backend, transform, epsg):
    data = np.random.default_rng(1).random((6, 5, 4), dtype=np.float32)
    g = Georef(transform, None, epsg)
    hdr = save_cube(Cube.from_array(data, [450, 550, 650, 750], metadata={"georef": g.to_dict()}), tmp_path / "o.hdr")
    back = geo(open_cube(hdr))
    assert back.transform == transform and back.epsg == epsg  # exact, the rotated grid too
    meta = spectral_envi.read_envi_header(str(hdr))  # spectral's reading of the header
    assert meta["map info"][1:3] == ["1", "1"] and float(meta["map info"][3]) == transform[0]
    if backend == "rasterio":
        got, got_epsg, _, _ = gdal_reading(hdr.with_suffix(".img"))
        assert got == pytest.approx(transform, rel=1e-12, abs=1e-6)
        assert got_epsg == epsg


def test_envi_bad_map_info_is_a_note_not_a_crash(tmp_path, fenix):
    hdr = write_envi_with_spectral(tmp_path, np.moveaxis(fenix.data, 2, 0), "{UTM, 1, 1, east, north, 30, 30}")
    cube = open_cube(hdr)
    assert "georef" not in cube.metadata
    assert any("map info" in w and "not numbers" in w for w in cube.metadata["warnings"])
    g, notes = from_envi({"map info": ["UTM", "1", "1", "5", "6", "0", "0"]})
    assert g is None and "degenerate" in notes[0]
    assert main(["info", str(hdr)]) == 0


# ------------------------------------------------------------------------------ GeoTIFF
@pytest.mark.parametrize("writer", BACKENDS)
@pytest.mark.parametrize("transform,epsg", [
    (UTM33, 32633),
    ((2.25, 0.001, 0.0, 48.9, 0.0, -0.002), 4326),
    ((500000.0, 25.98076211353316, 15.0, 4200000.0, 15.0, -25.98076211353316), 32633),
])
def test_geotiff_written_and_read_both_ways_agree(tmp_path, monkeypatch, fenix, writer, transform, epsg):
    g = Georef(transform, UTM33_ESRI if epsg == 32633 else None, epsg,
               {"projection": "UTM", "zone": 33, "hemisphere": "North", "datum": "WGS-84"} if epsg == 32633 else None)
    use(monkeypatch, writer)
    path = save_cube(fenix.with_data(fenix.data, metadata={"georef": g.to_dict()}), tmp_path / "o.tif")
    read = {}
    for reader in ("tifffile", "rasterio") if rasterio is not None else ("tifffile",):
        use(monkeypatch, reader)
        cube = open_cube(path)
        read[reader] = cube.metadata["georef"]
        np.testing.assert_array_equal(cube.data, fenix.data)
        np.testing.assert_array_equal(cube.wavelengths_nm, fenix.wavelengths_nm)
        assert geo(cube) == g  # exact, with the WKT and the ENVI fields
    assert len({json.dumps(v, sort_keys=True) for v in read.values()}) == 1
    with tifffile.TiffFile(path) as tif:  # tifffile's own decoding of the geokeys
        keys = tif.geotiff_metadata
        code = keys.get("ProjectedCSTypeGeoKey") or keys.get("GeographicTypeGeoKey")
        assert int(code) == epsg
        assert int(keys["GTRasterTypeGeoKey"]) == 1  # PixelIsArea
        assert tif.series[0].shape == (90, 12, 10) and len(tif.pages) == 1  # one 90-band image
    if rasterio is not None:
        got, got_epsg, _, count = gdal_reading(path)
        assert got == pytest.approx(transform, rel=1e-12, abs=1e-9) and got_epsg == epsg and count == 90


@needs_rasterio
@pytest.mark.parametrize("epsg,transform", [(32633, UTM33), (4326, (2.25, 0.001, 0.0, 48.9, 0.0, -0.002))])
def test_geotiff_written_by_rasterio_read_with_tifffile(tmp_path, monkeypatch, fenix, epsg, transform):
    path = tmp_path / "gdal.tif"
    bands = np.moveaxis(fenix.data, 2, 0)
    with rasterio.open(path, "w", driver="GTiff", width=10, height=12, count=90, dtype="float32",
                       crs=CRS.from_epsg(epsg), transform=Affine.from_gdal(*transform)) as ds:
        ds.write(bands)
    got = {}
    for reader in ("tifffile", "rasterio"):
        use(monkeypatch, reader)
        cube = open_cube(path)
        got[reader] = geo(cube)
        np.testing.assert_array_equal(cube.data, fenix.data)
    assert got["tifffile"] == got["rasterio"] == Georef(transform, None, epsg)


def _geokeys(*entries):
    flat = [1, 1, 0, len(entries)]
    for e in sorted(entries):
        flat.extend(e)
    return (34735, "H", len(flat), tuple(flat), True)


@pytest.mark.parametrize("name,tags,expected", [
    ("point", [(33550, "d", 3, (30.0, 30.0, 0.0), True), (33922, "d", 6, (0, 0, 0, 499995.0, 4200015.0, 0), True),
               _geokeys((1024, 0, 1, 1), (1025, 0, 1, 2), (3072, 0, 1, 32633))],
     Georef(UTM33, None, 32633)),  # PixelIsPoint: the tie point is the first pixel's centre
    ("tie-inside", [(33550, "d", 3, (0.5, 0.25, 0.0), True), (33922, "d", 6, (4, 2, 0, 10.0, 20.0, 0), True),
                    _geokeys((1024, 0, 1, 2), (1025, 0, 1, 1), (2048, 0, 1, 4326))],
     Georef((8.0, 0.5, 0.0, 20.5, 0.0, -0.25), None, 4326)),
    ("matrix", [(34264, "d", 16, (8.0, 6.0, 0, 100.0, 6.0, -8.0, 0, 200.0, 0, 0, 0, 0, 0, 0, 0, 1.0), True),
                _geokeys((1024, 0, 1, 1), (1025, 0, 1, 1), (3072, 0, 1, 32633))],
     Georef((100.0, 8.0, 6.0, 200.0, 6.0, -8.0), None, 32633)),
])
def test_geotiff_written_by_tifffile_read_both_ways(tmp_path, monkeypatch, fenix, name, tags, expected):
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, np.moveaxis(fenix.data, 2, 0), photometric="minisblack", planarconfig="separate",
                     extratags=tags)
    use(monkeypatch, "tifffile")
    assert geo(open_cube(path)) == expected
    if rasterio is not None:
        use(monkeypatch, "rasterio")
        assert geo(open_cube(path)) == expected
        transform, epsg, _, _ = gdal_reading(path)  # GDAL shifts PixelIsPoint the same way
        assert transform == pytest.approx(expected.transform, rel=1e-12) and epsg == expected.epsg


@needs_rasterio
def test_user_defined_crs_kept_as_wkt_through_rasterio(tmp_path, monkeypatch, fenix):
    wkt = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=10.5 +k=0.9999 +x_0=400000 +y_0=0 +ellps=GRS80 "
                         "+units=m +no_defs").to_wkt()
    g = Georef((400000.0, 2.0, 0.0, 5600000.0, 0.0, -2.0), wkt, None)
    use(monkeypatch, "rasterio")
    out = save_cube(fenix.with_data(fenix.data, metadata={"georef": g.to_dict()}), tmp_path / "tm.tif")
    _, epsg, crs, _ = gdal_reading(out)
    assert epsg is None and crs == CRS.from_wkt(wkt)  # GDAL encoded the WKT as geokeys
    assert geo(open_cube(out)) == g
    hdr = save_cube(open_cube(out), tmp_path / "tm.hdr")  # ENVI keeps it in coordinate system string
    assert geo(open_cube(hdr)).crs_wkt == wkt
    assert gdal_reading(hdr.with_suffix(".img"))[2] == crs


def test_damaged_geokeys_do_not_break_reading(tmp_path, monkeypatch, fenix):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, np.moveaxis(fenix.data, 2, 0), photometric="minisblack", planarconfig="separate",
                     extratags=[(33922, "d", 6, (0, 0, 0, 1.0, 2.0, 0), True), (34735, "H", 6, (1, 1, 0, 9, 1024, 0), True)])
    use(monkeypatch, "tifffile")
    cube = open_cube(path)
    assert "georef" not in cube.metadata
    assert any("ground control points" in w for w in cube.metadata["warnings"])


# ------------------------------------------------------------------------------ convert, sr, simulate
def test_convert_envi_geotiff_envi_keeps_the_georeference(tmp_path, backend, fenix):
    src = write_envi_with_spectral(tmp_path, np.moveaxis(fenix.data, 2, 0),
                                   "{UTM, 1, 1, 499980, 4200030, 30, 30, 33, North, WGS-84, units=Meters}", UTM33_ESRI)
    first = geo(open_cube(src))
    assert main(["convert", str(src), str(tmp_path / "a.hdr")]) == 0
    assert main(["convert", str(tmp_path / "a.hdr"), str(tmp_path / "b.tif")]) == 0
    assert main(["convert", str(tmp_path / "b.tif"), str(tmp_path / "c.hdr")]) == 0
    for name in ("a.hdr", "b.tif", "c.hdr"):
        assert geo(open_cube(tmp_path / name)) == first  # transform, WKT, EPSG and the ENVI fields
    assert first.transform == UTM33 and first.epsg == 32633 and first.crs_wkt == UTM33_ESRI
    meta = spectral_envi.read_envi_header(str(tmp_path / "c.hdr"))
    assert meta["map info"][:10] == ["UTM", "1", "1", "499980", "4200030", "30", "30", "33", "North", "WGS-84"]
    assert ",".join(meta["coordinate system string"]) == UTM33_ESRI
    if backend == "rasterio":
        for name in ("b.tif", "c.img"):
            transform, epsg, _, _ = gdal_reading(tmp_path / name)
            assert transform == pytest.approx(UTM33) and epsg == 32633


@pytest.mark.parametrize("ext", [".tif", ".hdr"])
def test_sr_divides_the_pixel_size_by_the_scale(tmp_path, backend, fenix, ext):
    g = Georef(UTM33, UTM33_ESRI, 32633)
    lr = save_cube(fenix.with_data(fenix.data, metadata={"georef": g.to_dict()}), tmp_path / f"lr{ext}")
    out = tmp_path / f"sr{ext}"
    assert main(["sr", "--model", "bicubic", "--lr", str(lr), "--scale", "4", "--device", "cpu",
                 "--out", str(out)]) == 0
    sr = open_cube(out)
    assert sr.shape == (48, 40, 90)
    g_sr = geo(sr)  # (an ENVI file also names its map info projection: compared below)
    assert (g_sr.transform, g_sr.crs_wkt, g_sr.epsg) == ((499980.0, 7.5, 0.0, 4200030.0, 0.0, -7.5), UTM33_ESRI, 32633)
    if ext == ".hdr":
        meta = spectral_envi.read_envi_header(str(out))
        assert [float(v) for v in meta["map info"][3:7]] == [499980.0, 4200030.0, 7.5, 7.5]
        assert g_sr.envi == geo(open_cube(lr)).envi == {"projection": "UTM", "zone": 33, "hemisphere": "North",
                                                         "datum": "WGS-84", "units": "Meters"}
    if backend == "rasterio":
        transform, epsg, _, _ = gdal_reading(out if ext == ".tif" else out.with_suffix(".img"))
        assert transform == pytest.approx((499980.0, 7.5, 0.0, 4200030.0, 0.0, -7.5)) and epsg == 32633


def test_simulate_multiplies_the_pixel_size(tmp_path, backend, data_dir):
    cave = open_cube(data_dir / "cave_crop.npz").load()
    gt_cube = cave.with_data(cave.data[:30, :38], metadata={"georef": Georef(UTM33, None, 32633).to_dict()})
    gt = save_cube(gt_cube, tmp_path / "gt.tif")
    assert main(["simulate", "--gt", str(gt), "--protocol", "gauss-x4", "--format", ".tif",
                 "--out", str(tmp_path / "sim")]) == 0
    lr, guide = open_cube(tmp_path / "sim" / "lr.tif"), open_cube(tmp_path / "sim" / "guide.tif")
    assert lr.shape[:2] == (7, 9) and guide.shape[:2] == (28, 36)  # cropped (top-left) to 28 x 36
    assert geo(lr) == Georef((499980.0, 120.0, 0.0, 4200030.0, 0.0, -120.0), None, 32633)
    assert geo(guide) == Georef(UTM33, None, 32633)
    if backend == "rasterio":
        assert gdal_reading(tmp_path / "sim" / "lr.tif")[:2] == ((499980.0, 120.0, 0.0, 4200030.0, 0.0, -120.0), 32633)


def test_viewer_simulate_and_run_carry_the_georeference(data_dir):
    from app.core.inference.engine import run_to_end
    from app.core.inference.runs import execute, plan_for_cubes, simulate_inputs, simulated_georefs

    cave = open_cube(data_dir / "cave_crop.npz").load()
    g = Georef(UTM33, None, 32633)
    gt = cave.with_data(cave.data, metadata={"georef": g.to_dict()})
    lr, guide = simulate_inputs(gt, "gauss-x4")
    assert geo(lr) == g.coarsened(4) and geo(guide) == g
    out = run_to_end(execute(plan_for_cubes("bicubic", lr, scale=4, device="cpu")))
    assert geo(out) == g and out.shape[:2] == gt.shape[:2]
    # a crop that does not start at the first pixel moves the origin
    lr_geo, guide_geo = simulated_georefs({"georef": g.to_dict()}, {"scale": 2, "crop": {"rows": (3, 13), "cols": (1, 9)}})
    assert Georef.from_dict(guide_geo["georef"]).origin == (499980.0 + 30.0, 4200030.0 - 90.0)
    assert Georef.from_dict(lr_geo["georef"]).pixel_size == (60.0, 60.0)


# ------------------------------------------------------------------------------ exports, info
@pytest.mark.parametrize("name", ["o.npy", "o.npz", "o.h5", "o.mat"])
def test_container_formats_and_export_keep_it(tmp_path, fenix, name):
    from app.core.export.data import export_cube

    g = Georef(UTM33, UTM33_ESRI, 32633, {"projection": "UTM", "zone": 33, "hemisphere": "North"})
    cube = fenix.with_data(fenix.data, metadata={"georef": g.to_dict()})
    assert geo(open_cube(save_cube(cube, tmp_path / name))) == g
    assert geo(open_cube(export_cube(cube, tmp_path / f"export_{name}"))) == g


def test_info_prints_the_georeference(tmp_path, fenix, capsys):
    path = save_cube(fenix.with_data(fenix.data, metadata={"georef": Georef(UTM33, None, 32633).to_dict()}),
                     tmp_path / "g.hdr")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("georeference: EPSG:32633 (WGS 84 / UTM zone 33N); pixel 30 x 30 m; origin (499980, 4200030) "
            "(upper-left corner)") in out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["georef"]["transform"] == list(UTM33)
    assert main(["info", str(tmp_path.parent / "nothing.hdr")]) != 0
    assert main(["info", str(save_cube(fenix, tmp_path / "plain.hdr"))]) == 0
    assert "georeference: none" in capsys.readouterr().out


def test_to_envi_fields_name_the_projection(monkeypatch):
    fields = to_envi(Georef(UTM33, None, 32733))
    assert fields["map info"] == "{UTM, 1, 1, 499980, 4200030, 30, 30, 33, South, WGS-84, units=Meters}"
    fields = to_envi(Georef((2.25, 0.001, 0.0, 48.9, 0.0, -0.002), None, 4326))
    assert fields["map info"] == "{Geographic Lat/Lon, 1, 1, 2.25, 48.9, 0.001, 0.002, WGS-84, units=Degrees}"
    rotated = Georef((500000.0, 25.98076211353316, 15.0, 4200000.0, 15.0, -25.98076211353316), None, 32633)
    info = to_envi(rotated)["map info"]
    assert info.endswith("units=Meters, rotation=30}")
    assert math.isclose(float(info.split(",")[5]), 30.0)
    laea = Georef((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), None, 3035)  # map info cannot name it: the EPSG code is kept
    monkeypatch.setenv(BACKEND_ENV, "tifffile")
    assert to_envi(laea)["coordinate system epsg"] == "3035" and "coordinate system string" not in to_envi(laea)
    assert from_envi(spectral_style(to_envi(laea)))[0] == Georef(laea.transform, None, 3035,
                                                                 {"projection": "Arbitrary", "units": "Meters"})


def test_hostile_description_and_bad_backend_name(tmp_path, monkeypatch, fenix, capsys):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.moveaxis(fenix.data, 2, 0), photometric="minisblack", planarconfig="separate",
                     metadata={"layout": "BHW", "georef": {"transform": "abcdef", "crs_wkt": 5, "envi": 3}},
                     extratags=[(33550, "d", 3, (30.0, 30.0, 0.0), True),
                                (33922, "d", 6, (0, 0, 0, 499980.0, 4200030.0, 0), True)])
    use(monkeypatch, "tifffile")
    assert geo(open_cube(path)) == Georef(UTM33)  # the tags; the description's nonsense is not used
    use(monkeypatch, "gdal")
    assert main(["info", str(path)]) != 0
    err = capsys.readouterr().err
    assert "HSI_GEOTIFF_BACKEND must be auto, tifffile or rasterio, not 'gdal'" in err and "Traceback" not in err

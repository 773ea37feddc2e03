"""Rebuild tests/data from the real files in ../shared/data (run by hand; tests never read ../shared).

    python tests/data/make_test_data.py /path/to/shared

Every file is a small crop of a real cube, written by hand here (not with the project's writers)
so that the readers are tested against independent encodings of each format.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.io as sio
import tifffile
from PIL import Image

HERE = Path(__file__).resolve().parent


def cave_crop(shared: Path) -> np.ndarray:
    files = sorted((shared / "data/cave/beads_ms").glob("*.png"))
    return np.stack([np.array(Image.open(f))[200:232, 240:280] for f in files], axis=-1)  # 32x40x31 uint16


def envi_header(**fields) -> str:
    lines = ["ENVI"]
    for key, value in fields.items():
        key = key.replace("_", " ")
        if isinstance(value, (list, tuple, np.ndarray)):
            value = "{" + ", ".join(str(v) for v in value) + "}"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def main(shared: Path) -> None:
    cave = cave_crop(shared)
    # CAVE-style folder, 16-bit grey (the original encoding)
    folder = HERE / "cave_beads_crop_ms"
    folder.mkdir(exist_ok=True)
    for k in range(cave.shape[2]):
        Image.fromarray(cave[:, :, k]).save(folder / f"beads_ms_{k + 1:02d}.png")
    # the same bands as 8-bit RGBA with equal channels (some CAVE copies are stored like that)
    folder8 = HERE / "cave_beads_crop_rgba8_ms"
    folder8.mkdir(exist_ok=True)
    for k in range(cave.shape[2]):
        g = (cave[:, :, k] >> 8).astype(np.uint8)
        Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)]), mode="RGBA").save(folder8 / f"beads_ms_{k + 1:02d}.png")

    # FENIX ENVI cube, copied unchanged (uint16 BSQ, reflectance scale factor, ignore value, fwhm)
    fenix_src = shared / "data/real/fenix_envi"
    (HERE / "fenix").mkdir(exist_ok=True)
    for name in ("image.hdr", "image.dat"):
        (HERE / "fenix" / name).write_bytes((fenix_src / name).read_bytes())
    fenix = np.fromfile(fenix_src / "image.dat", dtype="<u2").reshape(450, 38, 23)  # BSQ
    hdr_text = (fenix_src / "image.hdr").read_text()
    wl_block = hdr_text[hdr_text.index("wavelength = {") + len("wavelength = {"):]
    wavelengths_nm = np.array([float(v) for v in wl_block[:wl_block.index("}")].split(",")])

    # big-endian BIL int16 crop with wavelengths in micrometres and a bad-band list
    crop = fenix[::5, 4:16, 2:12]  # 90 bands x 12 lines x 10 samples
    bands, lines, samples = crop.shape
    bil = np.ascontiguousarray(np.transpose(crop, (1, 0, 2))).astype(">u2")
    bil.tofile(HERE / "fenix_be_bil.raw")
    bbl = [0 if 1340 < w < 1450 or 1800 < w < 1950 else 1 for w in wavelengths_nm[::5]]
    (HERE / "fenix_be_bil.hdr").write_text(envi_header(
        samples=samples, lines=lines, bands=bands, header_offset=0, file_type="ENVI Standard",
        data_type=12, interleave="bil", byte_order=1, wavelength_units="Micrometers",
        reflectance_scale_factor=65535.0, wavelength=[f"{w / 1000:.6f}" for w in wavelengths_nm[::5]],
        bbl=bbl))
    # little-endian BIP float32 crop, values already reflectance, no units given (nm by magnitude)
    bip = np.ascontiguousarray(np.transpose(crop, (1, 2, 0))).astype("<f4") / 65535.0
    bip.tofile(HERE / "fenix_bip.img")
    (HERE / "fenix_bip.hdr").write_text(envi_header(
        samples=samples, lines=lines, bands=bands, header_offset=0, data_type=4, interleave="bip",
        byte_order=0, wavelength=[f"{w:.2f}" for w in wavelengths_nm[::5]]))

    # MATLAB v5: Paris Hyperion crop with the Hyperion band centres
    paris = sio.loadmat(shared / "data/real/paris_hyperion_ali/paris_data_hs_ms.mat")
    wl_lines = (shared / "data/real/paris_hyperion_ali/paris_HS_wavelengths_nm_from_grass_hyperion_table.txt").read_text().splitlines()
    paris_wl = np.array([float(l.split()[1]) for l in wl_lines if l.strip() and not l.startswith("#")])
    hs = paris["HSim"][:24, :20, :]
    ms = paris["MSim"][:24, :20, :]
    sio.savemat(HERE / "paris_crop_v5.mat", {"HSim": hs, "MSim": ms, "wavelength": paris_wl[None, :hs.shape[2]]})

    # the 9x128 ALI-from-Hyperion response matrix R (HySure's estimate) as an SRF CSV over the
    # Hyperion band centres: UMSFT's tests fuse the Paris crop with it (`main.py sr --srf` takes it)
    R = sio.loadmat(shared / "data/real/paris_hyperion_ali/R_HysureParis.mat")["R"]  # 9 x 128
    lines = ["# ALI (9 bands) from Hyperion (128 bands) spectral response R estimated by HySure for the Paris pair",
             "# (R_HysureParis.mat, Simoes et al. 2015); rows: Hyperion band centres in nm; columns: ALI bands",
             "wavelength_nm," + ",".join(f"ALI{k + 1}" for k in range(R.shape[0]))]
    lines += [f"{w:.2f}," + ",".join(f"{v:.6g}" for v in R[:, j]) for j, w in enumerate(paris_wl)]
    (HERE / "paris_srf_R_hysure.csv").write_text("\n".join(lines) + "\n")

    # MATLAB v7.3 (HDF5 with the 512-byte MATLAB user block; axes stored reversed), written by hand
    path73 = HERE / "cave_crop_v73.mat"
    with h5py.File(path73, "w", userblock_size=512) as f:
        ds = f.create_dataset("hsi", data=np.ascontiguousarray(cave.T))  # MATLAB sees 32x40x31 uint16
        ds.attrs["MATLAB_class"] = np.bytes_("uint16")
        wl = f.create_dataset("wavelengths", data=np.arange(400.0, 701.0, 10.0)[:, None])  # MATLAB 1x31
        wl.attrs["MATLAB_class"] = np.bytes_("double")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {time.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 ."
    with open(path73, "r+b") as fh:
        fh.write(text.ljust(116).encode() + b"\x00" * 8 + b"\x00\x02IM")

    # AVIRIS Jasper Ridge: 2-D bands x pixels matrix (Fortran pixel order) with nRow/nCol
    jr = sio.loadmat(shared / "data/real/jasper_ridge_aviris/jasperRidge2_R198.mat")
    cube = jr["Y"].reshape(198, 100, 100, order="F")[:, :16, :12]  # bands, rows, cols
    sio.savemat(HERE / "jasper_crop_2d.mat", {
        "Y": cube.reshape(198, -1, order="F"), "nRow": np.array([[16]], np.uint8),
        "nCol": np.array([[12]], np.uint8), "maxValue": jr["maxValue"]})

    # TIFF: CAVE crop as pages (one band per page) and FENIX crop as a pixel-interleaved GeoTIFF-like file
    tifffile.imwrite(HERE / "cave_crop_pages.tif", np.ascontiguousarray(np.moveaxis(cave, 2, 0)), photometric="minisblack")
    items = "".join(f'<Item name="wavelength" sample="{k}" role="description">{w / 1000:.6f}</Item>'
                    for k, w in enumerate(wavelengths_nm[::5]))
    gdal = f'<GDALMetadata><Item name="wavelength_units">Micrometers</Item>{items}</GDALMetadata>'
    tifffile.imwrite(HERE / "fenix_crop_geo.tif", np.ascontiguousarray(np.transpose(crop, (1, 2, 0))),
                     planarconfig="contig", photometric="minisblack", extratags=[(42112, "s", 0, gdal, True)])

    # HDF5 with the cube band-first and a wavelength dataset, plus an unrelated 3-D dataset
    with h5py.File(HERE / "jasper_crop.h5", "w") as f:
        f.create_dataset("scene/reflectance", data=cube.astype(np.float32) / 10000.0)  # B x H x W
        f.create_dataset("scene/wavelength_nm", data=np.linspace(380.0, 2500.0, 198))
        f.create_dataset("aux/mask", data=np.ones((2, 2, 2), np.uint8))

    # NumPy: the CAVE crop as .npy (band-first) and .npz with wavelengths
    np.save(HERE / "cave_crop_bhw.npy", np.ascontiguousarray(np.moveaxis(cave, 2, 0)))
    np.savez(HERE / "cave_crop.npz", cube=cave, wavelengths=np.arange(400.0, 701.0, 10.0))
    print("test data written to", HERE)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[2] / "shared"))

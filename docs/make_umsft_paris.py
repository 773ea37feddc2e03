"""UMSFT on the real Paris Hyperion/ALI pair: inputs, no-reference metrics, consistency, figure.

    python docs/make_umsft_paris.py inputs  SHARED_PARIS_DIR OUT_DIR   # LR-HSI and ALI guide files
    python main.py sr --model umsft --lr OUT_DIR/paris_lr.npz --guide OUT_DIR/paris_ali.npz \
        --srf tests/data/paris_srf_R_hysure.csv --scale 3 --protocol gauss-x3 --iters 400 \
        --out OUT_DIR/paris_umsft.npz [--blind]
    (optionally also: --model fuse --out OUT_DIR/paris_fuse.npz, and umsft with --option base=none
     --out OUT_DIR/paris_umsft_none.npz, the reference's from-scratch optimisation)
    python docs/make_umsft_paris.py analyse OUT_DIR [docs/umsft_paris.png]

The two sensors share a 30 m grid, so the Hyperion cube is reduced x3 (gauss-x3 block kernel) to
make the LR-HSI (24x24x128) and the ALI image (72x72x9) is the guide as acquired. There is no
ground truth at 10 m: the no-reference D_lambda / D_s / QNR and the consistency errors are the
figures; the 30 m Hyperion cube is shown (and compared with) only as a reduced-resolution check.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_inputs(src: Path, out: Path) -> None:
    import scipy.io as sio
    import torch

    from app.core.cube import Cube
    from app.core.io import save_cube
    from models.degradation import spatial_degrade

    d = sio.loadmat(src / "paris_data_hs_ms.mat")
    wl = np.array([float(l.split()[1]) for l in (src / "paris_HS_wavelengths_nm_from_grass_hyperion_table.txt")
                   .read_text().splitlines() if l.strip() and not l.startswith("#")])
    hs, ms = d["HSim"].astype(np.float32), d["MSim"].astype(np.float32)
    lr = spatial_degrade(torch.from_numpy(hs).permute(2, 0, 1)[None], "gauss-x3")[0].permute(1, 2, 0).numpy()
    out.mkdir(parents=True, exist_ok=True)
    save_cube(Cube.from_array(lr, wl, name="paris_hyperion_lr"), out / "paris_lr.npz")
    save_cube(Cube.from_array(ms, None, name="paris_ali"), out / "paris_ali.npz")
    save_cube(Cube.from_array(hs, wl, name="paris_hyperion"), out / "paris_hyperion_30m.npz")


def analyse(out: Path, png: Path | None) -> dict:
    import torch

    from app.core.science import srf as srf_mod
    from app.core.science.color import false_colour
    from app.core.science.consistency import consistency_check
    from app.core.io import open_cube
    from app.core.science.metrics import compute_all, qnr
    from models.baselines import bicubic_upsample

    lr = open_cube(out / "paris_lr.npz").load()
    ali = open_cube(out / "paris_ali.npz").load().data
    ref = open_cube(out / "paris_hyperion_30m.npz").load().data
    wl = lr.wavelengths_nm
    srf = srf_mod.srf_matrix(str(ROOT / "tests/data/paris_srf_R_hysure.csv"), wl, n_bands=lr.bands)
    bic = bicubic_upsample(torch.from_numpy(lr.data).permute(2, 0, 1)[None], 3)[0].permute(1, 2, 0).numpy()
    results = {"bicubic": np.clip(bic, 0, 1)}
    for name, file in (("fuse", "paris_fuse.npz"), ("umsft base=none", "paris_umsft_none.npz"),
                       ("umsft", "paris_umsft.npz"), ("umsft --blind", "paris_umsft_blind.npz")):
        if (out / file).exists():
            results[name] = open_cube(out / file).load().data
    # the ALI radiometry matched to SRF(Hyperion) as non-blind UMSFT does (per-band gain, offset)
    calibrated = None
    if (out / "paris_umsft.npz").exists():
        report = open_cube(out / "paris_umsft.npz").load().metadata["provenance"]["report"]
        calibrated = (ali - np.asarray(report["guide_offset"])) / np.asarray(report["guide_gain"])
    table = {}
    for name, fused in results.items():
        q = qnr(fused, lr.data, ali, scale=3, protocol="gauss-x3", device="cpu")
        c = consistency_check(fused, lr.data, ali, "gauss-x3", srf=srf, wavelengths_nm=wl, device="cpu")
        m = compute_all(np.clip(ref, 0, 1), fused, scale=3, device="cpu")
        table[name] = {"qnr": q["qnr"], "d_lambda": q["d_lambda"], "d_s": q["d_s"],
                       "lr_rmse": c["lr"]["rmse"], "lr_psnr": c["lr"]["psnr_db"],
                       "guide_rmse": c["guide"]["rmse"], "guide_sam": c["guide"]["sam_deg"],
                       "ref30m_psnr": m["psnr_db"], "ref30m_sam": m["sam_deg"]}
        if calibrated is not None:
            cc = consistency_check(fused, None, calibrated.astype(np.float32), "gauss-x3", srf=srf,
                                   wavelengths_nm=wl, device="cpu")
            table[name].update(guide_cal_rmse=cc["guide"]["rmse"], guide_cal_sam=cc["guide"]["sam_deg"])
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rgb_nm = (650.0, 550.0, 460.0)
        nir_nm = (855.0, 650.0, 550.0)

        def show(cube, nm, gain):
            return np.clip(false_colour(cube, wl, nm) * gain, 0, 1)

        lr_up = np.repeat(np.repeat(lr.data, 3, 0), 3, 1)
        ali_rgb = np.clip(ali[..., [3, 2, 1]] / np.percentile(ali[..., [3, 2, 1]], 99.5), 0, 1)
        panels = [("LR-HSI (Hyperion ÷3)", lr_up), ("ALI guide (R,G,B / NIR,R,G)", None)] + \
            [(n, results[n]) for n in ("fuse", "umsft", "umsft --blind") if n in results] + \
            [("Hyperion 30 m (not GT)", ref)]
        fig, axes = plt.subplots(2, len(panels), figsize=(2.1 * len(panels), 4.6), dpi=90)
        gain_rgb = 1.0 / np.percentile(false_colour(ref, wl, rgb_nm), 99.5)
        gain_nir = 1.0 / np.percentile(false_colour(ref, wl, nir_nm), 99.5)
        for j, (title, cube) in enumerate(panels):
            for i, (nm, gain) in enumerate(((rgb_nm, gain_rgb), (nir_nm, gain_nir))):
                ax = axes[i, j]
                if cube is None:
                    img = ali_rgb if i == 0 else np.clip(ali[..., [5, 3, 2]] / np.percentile(ali[..., [5, 3, 2]], 99.5), 0, 1)
                else:
                    img = show(cube, nm, gain)
                ax.imshow(img, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=7)
            axes[0, 0].set_ylabel("650/550/460 nm", fontsize=7)
            axes[1, 0].set_ylabel("855/650/550 nm", fontsize=7)
        fig.suptitle("UMSFT x3 on EO-1 Hyperion + ALI, Paris (false colour: Hyperion starts at 427 nm)", fontsize=8)
        fig.tight_layout()
        fig.savefig(png, dpi=90)
    return table


if __name__ == "__main__":
    if sys.argv[1] == "inputs":
        make_inputs(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(json.dumps(analyse(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None), indent=2))

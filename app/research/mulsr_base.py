"""Metrics of MulSR's guided-filter base alone (models/mulsr.py ``guided_filter_base``, the small
config's radius and ridge), i.e. what the shipped network starts from and refines:

    python -m app.research.mulsr_base --gt SCENE [SCENE ...] [--protocol mulsr-x8]

Each GT is simulated with the protocol (seed 0) as ``main.py eval`` does; metrics from app.core.science.metrics.
"""
from __future__ import annotations

import numpy as np
import torch

from app.core.science.degrade import simulate
from app.core.io import open_cube
from app.core.science.metrics import compute_all
from models.degradation import psf_kernel
from models.mulsr import CONFIGS, guided_filter_base


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.research.mulsr_base", description=__doc__)
    ap.add_argument("--gt", nargs="+", required=True)
    ap.add_argument("--protocol", default="mulsr-x8")
    args = ap.parse_args(argv)
    cfg = CONFIGS["small"]
    rows = []
    for path in args.gt:
        cube = open_cube(path)
        gt = np.asarray(cube.data, dtype=np.float32)
        lr, rgb, _ = simulate(gt, args.protocol, wavelengths_nm=cube.wavelengths_nm, seed=0)
        s = int(args.protocol.split("x")[-1])
        gt = gt[: lr.shape[0] * s, : lr.shape[1] * s]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 2, 0)))[None].float()  # noqa: E731
        psf = torch.as_tensor(psf_kernel(args.protocol), dtype=torch.float32)
        with torch.inference_mode():
            base = guided_filter_base(t(lr), t(rgb), psf, s, cfg.gf_radius, cfg.gf_eps)[0].permute(1, 2, 0).numpy()
        m = compute_all(gt, np.clip(base, 0, 1), scale=s)
        rows.append((m["psnr_db"], m["ssim"], m["sam_deg"]))
        print(f"{path}: guided base PSNR {m['psnr_db']:.3f} dB, SSIM {m['ssim']:.4f}, SAM {m['sam_deg']:.2f} deg")
    if len(rows) > 1:
        mean = np.mean(rows, axis=0)
        print(f"mean ({len(rows)}): guided base PSNR {mean[0]:.3f} dB, SSIM {mean[1]:.4f}, SAM {mean[2]:.2f} deg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

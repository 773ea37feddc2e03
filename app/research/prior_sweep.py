"""FUSE with the guided-filter prior over a grid of radii and ridges, next to FUSE with the GSA
prior: how ``models.classical.GUIDED_RADIUS`` / ``GUIDED_EPS`` were chosen (on training scenes), and
the FUSE figures on the training's validation crops that the HSR-Diff model card compares with:

    python -m app.research.prior_sweep --gt CAVE/beads_ms CAVE/cloth_ms ... --protocol gauss-x32 \\
        [--radius 1 2 3] [--eps 1e-6 3e-7 1e-7 3e-8] [--crop 256]

Each scene is simulated as ``main.py train`` does (``app.core.inference.training.load_scene``: seed 0, the
protocol's PSF, the default SRF for the cube's wavelengths); the estimate is made on the whole scene
and scored (``training.psnr_db``: mean band PSNR) on the whole scene, or with ``--crop`` on its
HR centre crop of that size, as the trainer's validation does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.core.inference.training import centre_crop, load_scene, psnr_db
from models.classical import GUIDED_EPS, GUIDED_RADIUS, fuse, guided_prior
from models.degradation import parse_protocol, psf_kernel


def sweep(folders: list[Path], protocol: str, radii, ridges, crop: int = 0, log=print) -> dict:
    """{(label): [score per scene]} for 'fuse gsa' and 'fuse guided r=R eps=E' (see the module docstring)."""
    scale = parse_protocol(protocol).scale
    psf = torch.as_tensor(psf_kernel(protocol), dtype=torch.float64)
    scores: dict[str, list[float]] = {}
    for folder in folders:
        sc = load_scene(Path(folder), protocol)
        if sc.guide is None or sc.srf is None:
            raise ValueError(f"{folder}: the protocol {protocol} gives no guide with a known SRF")
        lr, msi, srf = sc.lr[None].double(), sc.guide[None].double(), sc.srf.double()
        estimates = {"fuse gsa": fuse(lr, msi, srf, psf, scale)}
        for r in radii:
            for e in ridges:
                prior = guided_prior(lr, msi, psf, scale, int(r), float(e))
                estimates[f"fuse guided r={r} eps={e:g}"] = fuse(lr, msi, srf, psf, scale, prior=prior)
        row = []
        for label, est in estimates.items():
            sc.extra = {"est": est[0].float()}
            c = centre_crop(sc, crop, scale) if crop else sc
            value = psnr_db(c.extra["est"][None], c.gt[None])
            scores.setdefault(label, []).append(value)
            row.append(f"{label} {value:.3f}")
        log(f"{Path(folder).name}: " + ", ".join(row))
    for label, values in scores.items():
        log(f"mean ({len(values)}) {label}: {np.mean(values):.3f} dB")
    return scores


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.research.prior_sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", nargs="+", required=True, help="CAVE-style scene folders")
    ap.add_argument("--protocol", default="gauss-x32")
    ap.add_argument("--radius", nargs="+", type=int, default=[GUIDED_RADIUS])
    ap.add_argument("--eps", nargs="+", type=float, default=[GUIDED_EPS])
    ap.add_argument("--crop", type=int, default=0, help="HR centre crop to score (0: whole scenes)")
    args = ap.parse_args(argv)
    try:
        sweep(args.gt, args.protocol, args.radius, args.eps, args.crop)
    except Exception as exc:  # noqa: BLE001 - a clear line, not a traceback
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

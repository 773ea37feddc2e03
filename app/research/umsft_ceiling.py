"""How much can a per-image objective add to FUSE with the guided prior? The evidence behind the
UMSFT model card's "target not reached" (issue 23):

    python -m app.research.umsft_ceiling --gt CAVE/oil_painting_ms CAVE/egyptian_statue_ms \\
        --protocol gauss-x32 [--iters 200] [--every 20] [--feature-scale 4] [--threads 2]

For each scene (simulated as ``main.py train`` does: ``training.load_scene``), it prints

* ``base``: FUSE with the guided prior, UMSFT's starting estimate;
* ``consistent``: the base projected onto the set of cubes that reproduce both inputs exactly (the
  LR-HSI through the PSF and stride, the HR-MSI through the SRF). The true cube is in that set, so
  the projection never moves away from it; what it gains is all that the two data terms of UMSFT's
  objective can say about the base. Anything beyond it has to come from the network's own image
  prior, since every cube in the set has zero loss. Exact for block PSFs (kernel size = stride, the
  ``gauss-x{s}`` protocols): the two projections commute there, so one pass of each is the projection
  onto the intersection;
* the UMSFT learning curve: iteration, seconds, unsupervised loss, mean band PSNR of the kept estimate.

Scores are ``training.psnr_db`` (mean band PSNR) on the whole scene.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from app.core.inference.training import load_scene, psnr_db
from models.classical import fuse
from models.degradation import kernel_downsample, parse_protocol, psf_kernel, spectral_degrade


class CeilingError(ValueError):
    """Inputs this analysis cannot handle."""


def consistent_projection(z: torch.Tensor, lr: torch.Tensor, msi: torch.Tensor, srf: torch.Tensor,
                          psf: torch.Tensor, scale: int) -> torch.Tensor:
    """The cube nearest to ``z`` (N, B, H, W) in L2 that reproduces ``msi`` = SRF z per pixel and
    ``lr`` = PSF-weighted blocks of z, for a block PSF (size = stride). With a consistent pair
    (SRF(lr) = blocks of msi) the spectral and spatial projections commute, so applying each once is
    the projection onto their intersection."""
    if tuple(psf.shape) != (scale, scale):
        raise CeilingError(f"the exact projection needs a block PSF ({scale}x{scale} at x{scale}), "
                           f"got {tuple(psf.shape)}")
    z = z - torch.einsum("bm,nmhw->nbhw", torch.linalg.pinv(srf), spectral_degrade(z, srf) - msi)
    d = (lr - kernel_downsample(z, psf, scale)).contiguous()
    w = (psf / (psf ** 2).sum()).contiguous()
    return z + torch.kron(d, w[None, None])


def analyse(folder: Path, protocol: str, iters: int, every: int, feature_scale: int, log=print) -> dict:
    from models.umsft import UMSFT

    scale = parse_protocol(protocol).scale
    psf = torch.as_tensor(psf_kernel(protocol), dtype=torch.float64)
    sc = load_scene(Path(folder), protocol)
    if sc.guide is None or sc.srf is None:
        raise CeilingError(f"{folder}: the protocol {protocol} gives no guide with a known SRF")
    lr, msi, srf, gt = sc.lr[None].double(), sc.guide[None].double(), sc.srf.double(), sc.gt[None]
    base = fuse(lr, msi, srf, psf, scale, prior="guided")
    proj = consistent_projection(base, lr, msi, srf, psf, scale)
    out = {"scene": Path(folder).name, "base": psnr_db(base.float(), gt), "consistent": psnr_db(proj.float(), gt)}
    log(f"{out['scene']}: base (FUSE guided) {out['base']:.3f} dB; projected onto the data-consistent set "
        f"{out['consistent']:.3f} dB ({out['consistent'] - out['base']:+.3f})")
    if iters <= 0:
        return out
    model = UMSFT(scale, lr.shape[1], preview_every=every, patience=10 ** 9, feature_scale=feature_scale)
    gen = model.iterate(lr.float(), msi.float(), srf.float(), psf.float(), steps=iters)
    curve, t0 = [], time.perf_counter()
    while True:
        try:
            u = next(gen)
        except StopIteration as stop:
            final = stop.value
            break
        if u.preview is not None:
            p = psnr_db(u.preview.float(), gt)
            curve.append((u.step, time.perf_counter() - t0, u.loss, p))
            log(f"  iteration {u.step:4d}  {curve[-1][1]:7.1f} s  loss {u.loss:.4g}  {p:.3f} dB ({p - out['base']:+.3f})")
    out["umsft"] = psnr_db(final.float(), gt)
    out["seconds"] = time.perf_counter() - t0
    out["curve"] = curve
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.research.umsft_ceiling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", nargs="+", required=True, help="CAVE-style scene folders")
    ap.add_argument("--protocol", default="gauss-x32")
    ap.add_argument("--iters", type=int, default=200, help="UMSFT iterations (0: only the base and the projection)")
    ap.add_argument("--every", type=int, default=20, help="score the kept estimate every this many iterations")
    ap.add_argument("--feature-scale", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from app.core.errors import HsiError

    try:
        rows = [analyse(Path(g), args.protocol, args.iters, args.every, args.feature_scale) for g in args.gt]
    except (CeilingError, HsiError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    for key in ("base", "consistent", "umsft"):
        if any(key not in r for r in rows):
            continue
        print(f"mean ({len(rows)}) {key}: {np.mean([r[key] for r in rows]):.3f} dB")
    if args.iters > 0:
        print(f"mean seconds per scene (UMSFT iterations): {np.mean([r['seconds'] for r in rows]):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

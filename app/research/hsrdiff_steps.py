"""An HSR-Diff weights file (e.g. a training run's, not registered) on whole scenes, at several
sampler step counts: the gains over its FUSE base that the model card reports for runs it did not ship.

    python -m app.research.hsrdiff_steps --weights training/hsrdiff_conv/hsrdiff_x32.safetensors \\
        --gt CAVE/oil_painting_ms CAVE/egyptian_statue_ms [--config conv] [--steps 1 5 10 20] \\
        [--start mean|noise] [--seed 0] [--protocol gauss-x32]

The config is the one the trainer stored in the file's metadata unless ``--config`` names another.

Each scene is simulated as ``main.py train`` does (``training.load_scene``); the score is
``training.psnr_db`` (mean band PSNR, prediction clipped to [0, 1]) of the whole scene, printed as
the gain over the model's own base (FUSE with its config's prior) for each step count (DDIM up to 25
steps, as ``main.py sr``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.core.inference.training import load_scene, psnr_db
from models.degradation import parse_protocol, psf_kernel


class StepsError(ValueError):
    """A weights file this report cannot use."""


def load_run_weights(weights: Path, scale: int, config: str | None = None, start: str = "mean"):
    """HSRDiff with a training run's weights file (never unpickled: safetensors). ``config``: a name of
    ``hsr_diff.CONFIGS``; None takes the config the trainer stored in the file's metadata."""
    import dataclasses
    import json

    from safetensors.torch import load_file

    from app.core.inference.training import read_weights_metadata
    from models.hsr_diff import HSRDiff, HsrDiffConfig

    weights = Path(weights)
    if not weights.is_file():
        raise StepsError(f"{weights}: no such weights file")
    try:
        meta = read_weights_metadata(weights)
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise StepsError(f"{weights}: not a readable safetensors file ({exc})") from None
    if meta.get("model", "hsrdiff") != "hsrdiff":
        raise StepsError(f"{weights}: holds {meta['model']} weights, not HSR-Diff's")
    if config is None:
        stored = json.loads(meta.get("config", "null") or "null")
        if not isinstance(stored, dict):
            raise StepsError(f"{weights}: its metadata names no HSR-Diff config; give --config")
        fields = {f.name for f in dataclasses.fields(HsrDiffConfig)}
        config = HsrDiffConfig(**{k: v for k, v in stored.items() if k in fields})
    model = HSRDiff(scale, config=config, start=start)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise StepsError(f"{weights}: does not fit the HSR-Diff config {config!r} "
                         f"({str(exc).splitlines()[0]})") from None
    return model.eval()


def gains(weights: Path, config: str | None, folders: list[Path], steps: list[int], start: str = "mean",
          seed: int = 0, protocol: str = "gauss-x32", log=print,
          residual_scales: list[float] | None = None) -> dict[str, list[float]]:
    """Gain in dB over the model's base per scene, one value per step count (per step count and
    residual scale a, in that order, when ``residual_scales`` is given: the output base + a * (sample -
    base), a trust region on the denoiser's correction)."""
    scales = [1.0] if residual_scales is None else [float(a) for a in residual_scales]
    labels = [f"{n}" if residual_scales is None else f"{n}@{a:g}" for n in steps for a in scales]
    scale = parse_protocol(protocol).scale
    model = load_run_weights(weights, scale, config, start)
    psf = torch.as_tensor(psf_kernel(protocol), dtype=torch.float32)
    out: dict[str, list[float]] = {}
    for folder in folders:
        sc = load_scene(Path(folder), protocol)
        lr, msi, srf, gt = sc.lr[None], sc.guide[None], sc.srf.float(), sc.gt[None]
        est = model.estimate(lr, msi, srf, psf)
        base = psnr_db(est, gt)
        row = []
        with torch.no_grad():
            for n in steps:
                z = model(lr, msi, srf, psf, steps=n, generator=torch.Generator().manual_seed(seed), fuse_est=est)
                row.extend(psnr_db(est + a * (z - est), gt) - base for a in scales)
        out[Path(folder).name] = row
        what = f"steps {steps}" if residual_scales is None else f"steps@residual scale [{', '.join(labels)}]"
        log(f"{Path(folder).name}: base {base:.3f} dB; gain at {what}: " + ", ".join(f"{g:+.3f}" for g in row))
    mean = np.mean(list(out.values()), axis=0)
    log(f"mean ({len(out)}) gain at {what}: " + ", ".join(f"{g:+.3f}" for g in mean))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.research.hsrdiff_steps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--config", default=None, help="a config of models.hsr_diff.CONFIGS (default: the one the "
                    "trainer stored in the weights file)")
    ap.add_argument("--gt", nargs="+", required=True, type=Path, help="CAVE-style scene folders")
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 5, 10, 20])
    ap.add_argument("--start", default="mean", choices=("mean", "noise"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", default="gauss-x32")
    ap.add_argument("--residual-scale", nargs="+", type=float, default=None, metavar="A",
                    help="also score base + A * (sample - base) for each A (a trust region on the correction)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from app.core.errors import HsiError

    try:
        gains(args.weights, args.config, args.gt, args.steps, args.start, args.seed, args.protocol,
              residual_scales=args.residual_scale)
    except (StepsError, HsiError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

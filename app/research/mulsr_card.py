"""The figures MulSR's model card states for its tests, for a weights file (a training run's, before
it is installed, or the registered one): the ``eval-psnr`` lines of tests/models/test_mulsr.py and the
``gain-crop`` line of tests/models/test_weights_earn.py, plus whether half of the network's residual
would gain as much as the whole (the weight test rejects a file for which it does):

    python -m app.research.mulsr_card [--weights training/<run>/mulsr_x8.safetensors]

Every figure goes through the engine (``main.py eval``'s code path, seed 0, mulsr-x8, CPU) with the
file loaded in place of the registered one; the guided base alone is the same run with the residual
head zeroed. Nothing under resources/ is changed.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import models.spec as spec_module
from app.core.io import open_cube
from app.core.paths import PROJECT_DIR, SAMPLE_DIR
from app.research.earn import verdict, zeroing_loader
from models import registry
from models.spec import WeightsFile, sha256_of

BEADS = PROJECT_DIR / "tests" / "data" / "cave_beads_crop_ms"   # in a checkout
SAMPLE = SAMPLE_DIR


@contextmanager
def weights_in_place(path: Path | None, zero_tail: bool = False):
    """The registered MulSR spec loading ``path`` (None: the shipped file), its residual head zeroed
    when ``zero_tail``; restored afterwards."""
    spec = registry.get("mulsr")
    saved_spec, saved_load = spec, spec_module.load_weights
    if path is not None:
        old = spec.weights_for(8)
        wf = WeightsFile(8, str(Path(path).resolve()), sha256_of(Path(path)), old.card)
        spec_module._REGISTRY["mulsr"] = dataclasses.replace(spec, weights=(wf,))
    if zero_tail:
        spec_module.load_weights = zeroing_loader("mulsr", saved_load)
    try:
        yield
    finally:
        spec_module._REGISTRY["mulsr"] = saved_spec
        spec_module.load_weights = saved_load


def eval_psnr(folder: Path, models: list[str], weights: Path | None, zero_tail: bool = False) -> dict:
    from app.core.inference.batch import evaluate

    with weights_in_place(weights, zero_tail):
        doc = evaluate([folder], "mulsr-x8", models, device="cpu", seed=0)
    return {r["model"]: r["psnr"] for r in doc["results"]}


def gain_crop(weights: Path | None) -> tuple[float, float, float]:
    """(MulSR, guided base, half-residual) MPSNR on the sample's top-left 128 px, as the weight test."""
    from app.core.inference.engine import run_model, run_to_end
    from app.core.science.degrade import simulate
    from app.core.science.metrics import mpsnr

    g = open_cube(SAMPLE).data.astype(np.float32)[:128, :128]
    lr, rgb, _ = simulate(g, "mulsr-x8", seed=0)
    runs = []
    for zero in (False, True):
        with weights_in_place(weights, zero):
            runs.append(run_to_end(run_model("mulsr", lr, guide=rgb, scale=8, device="cpu")).data)
    pred, base = runs
    score = lambda x: float(mpsnr(g, np.clip(x, 0, 1)))  # noqa: E731
    return score(pred), score(base), score(base + 0.5 * (pred - base))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m app.research.mulsr_card", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="a MulSR x8 .safetensors file (default: the registered one)")
    args = ap.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        ap.error(f"{args.weights}: no such file")
    w = args.weights
    base_models = ["bicubic", "gsa", "fuse", "mulsr"]
    for folder, label in ((BEADS, "tests/data/cave_beads_crop_ms"), (SAMPLE, "resources/sample/fake_and_real_food_ms")):
        full = eval_psnr(folder, base_models, w)
        base = eval_psnr(folder, ["mulsr"], w, zero_tail=True)["mulsr"]
        print(f"eval-psnr {label}: {full['mulsr']:.3f} dB (bicubic {full['bicubic']:.3f}, gsa {full['gsa']:.3f}, "
              f"fuse {full['fuse']:.3f}; guided base alone {base:.3f})")
    pred, base, half = gain_crop(w)
    gain, half_gain = pred - base, half - base
    print(f"gain-crop resources/sample/fake_and_real_food_ms[:128, :128]: {pred:.3f} dB "
          f"(guided base alone {base:.3f}, {gain:+.3f} dB)")
    print(verdict(gain, half_gain))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Iterations per second of one training step (forward, loss, backward, Adam) under CPU settings.

``python -m app.research.train_profile [--model cst|mulsr|all] [--seconds 8] [--compile]``

The step is the trainer's own (app/core/inference/training.py: sample_batch, the model's loss or
training_step, Adam) on the bundled 256x256 CAVE sample (resources/sample, so no data folder is
needed), and each setting is timed for about ``--seconds`` after two warm-up steps. Settings: torch
threads 1 vs 2, channels_last memory format, batch and patch size, and optionally torch.compile
(inductor; its compile time is reported apart). Threads and channels_last change only the float
summation order, batch and patch change what is trained: the table gives patches/s as well so the
two kinds can be compared. The machine's load average is printed with the table because the figures
move with it.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from app.core.inference import training
from app.core.paths import SAMPLE_DIR


# (model, protocol, config, [(batch, patch)]): the shipped cards' batch/patch first
CASES = {
    "cst": ("cst", "bicubic-x4", "small", [(8, 64), (4, 64), (16, 64), (2, 128)]),
    "mulsr": ("mulsr", "mulsr-x8", "small", [(4, 96), (8, 96), (8, 64), (16, 48)]),
}


def _step_fn(model, scene, scale, batch, patch, gen, channels_last: bool, compiled=None):
    from models.degradation import parse_protocol, psf_kernel  # noqa: F401 - registry side effects
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    psf = torch.as_tensor(psf_kernel(parse_protocol(scene["protocol"])), dtype=torch.float32)
    step_fn = getattr(model, "training_step", None)
    fwd = compiled or model

    def step():
        lr, guide, gt = training.sample_batch([scene["scene"]], batch, patch, scale, gen)
        if channels_last:
            lr, gt = lr.contiguous(memory_format=torch.channels_last), gt.contiguous(memory_format=torch.channels_last)
            guide = None if guide is None else guide.contiguous(memory_format=torch.channels_last)
        inputs = training.model_inputs(lr, guide, scene["scene"].srf, psf)
        if step_fn is not None:
            loss = step_fn(inputs, gt, generator=gen)
        else:
            loss = training.hsi_loss(fwd(**inputs), gt)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        return float(loss.detach())

    return step


def time_setting(name: str, threads: int, channels_last: bool, batch: int, patch: int, seconds: float,
                 use_compile: bool = False) -> dict:
    from models import registry

    model_name, protocol, config, _ = CASES[name]
    torch.set_num_threads(threads)
    spec = registry.get(model_name)
    sc = training.load_scene(SAMPLE_DIR, protocol)
    scale = int(protocol.rsplit("x", 1)[1])
    torch.manual_seed(0)
    model = spec.factory(scale=scale, bands=sc.gt.shape[0], config=config).train()
    if channels_last:  # the 2-D convolutions only (MulSR's 3-D ones have no channels_last format)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    compiled, compile_s = None, None
    if use_compile:
        compiled = torch.compile(model)
    gen = torch.Generator().manual_seed(0)
    step = _step_fn(model, {"scene": sc, "protocol": protocol}, scale, batch, patch, gen, channels_last, compiled)
    t0 = time.perf_counter()
    step()
    if use_compile:
        compile_s = time.perf_counter() - t0
    step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= 3:
            break
    its = n / el
    return {"model": name, "threads": threads, "channels_last": channels_last, "compile": use_compile,
            "batch": batch, "patch": patch, "it_s": its, "patches_s": its * batch, "steps": n,
            "compile_s": compile_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("cst", "mulsr", "all"), default="all")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per setting (after 2 warm-up steps)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) at the card's setting")
    ap.add_argument("--quick", action="store_true", help="only threads x channels_last at the card's batch/patch")
    args = ap.parse_args(argv)
    names = list(CASES) if args.model == "all" else [args.model]
    rows = []
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    for name in names:
        # an unreported first setting: the process's first timed steps ran up to 7x slow (allocator, oneDNN set-up)
        time_setting(name, 1, False, *CASES[name][3][0], min(2.0, args.seconds))
        sizes = CASES[name][3]
        card = sizes[0]
        # alternating 1 and 2 threads, twice: on a shared machine the load moves while the table runs
        settings = [(t, cl, *card, False) for cl in (False, True, False) for t in (1, 2)]
        if not args.quick:
            settings += [(1, False, b, p, False) for b, p in sizes[1:]]
        if args.compile:
            settings.append((1, False, *card, True))
        for threads, cl, batch, patch, comp in settings:
            try:
                r = time_setting(name, threads, cl, batch, patch, args.seconds, comp)
            except Exception as exc:  # noqa: BLE001 - a setting that does not run is a row of the table
                print(f"{name} threads={threads} channels_last={cl} batch={batch} patch={patch} compile={comp}: "
                      f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
                continue
            rows.append(r)
            extra = f", compile {r['compile_s']:.0f} s" if r["compile_s"] else ""
            print(f"{name:6s} threads={threads} channels_last={int(cl)} compile={int(comp)} batch={batch:3d} "
                  f"patch={patch:4d}: {r['it_s']:.3f} it/s, {r['patches_s']:.2f} patches/s ({r['steps']} steps{extra})",
                  flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference engine: runs any registered model on any cube, on the GPU when there is one.

``run_model(...)`` is a generator: it yields ``Progress`` (with an optional preview of the current
estimate) and returns a ``RunResult``; the GUI worker and the CLI drive the same generator, and
cancelling is simply closing it (``gen.close()``), which takes effect at the next yield.

Big inputs are cut into tiles with overlap and blended with linear ramps; the overlap covers the
model's context (``ModelSpec.context_lr_px``), so a tiled run equals an untiled one. The tile size
follows the memory budget (free GPU memory on CUDA); on CUDA out-of-memory the tile is halved and
retried, and below a minimum the run moves to the CPU with a message.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generator, Iterator

import numpy as np
import torch

from app.core.device import available_devices, select_device  # noqa: F401  (re-exported for the GUI)
from app.core.errors import Cancelled, HsiError  # noqa: F401  (Cancelled: raised by run_to_end)
from models import registry
from models.registry import IterationUpdate, ModelSpec, StopRequested

MIN_TILE_LR_PX = 8
BLEND_LR_PX = 2


@dataclass
class Progress:
    """One report from a running job. ``fraction`` in [0, 1]; ``preview`` (H, W, B) float32."""

    fraction: float
    message: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    preview: np.ndarray | None = None


@dataclass
class RunResult:
    data: np.ndarray                    # (H, W, B) float32
    provenance: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ devices
def memory_budget_bytes(device: torch.device) -> int:
    """Bytes a run may use: most of the free GPU memory, or half of the available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ------------------------------------------------------------------------------ tiling
def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of core tiles of size ``tile`` covering ``length`` (the last may be shorter)."""
    return list(range(0, length, tile)) if tile < length else [0]


def _ramp(n_hr: int, lo_open: bool, hi_open: bool, context_hr: int, blend_hr: int) -> torch.Tensor:
    """Weights along one axis of a padded tile: 0 within ``context_hr`` of an inner edge, then a
    linear ramp over 2 * blend_hr; image borders (closed sides) get full weight."""
    pos = torch.arange(n_hr, dtype=torch.float64) + 0.5
    w = torch.ones(n_hr, dtype=torch.float64)
    if lo_open:
        w = torch.minimum(w, ((pos - context_hr) / (2 * blend_hr)).clamp(0, 1))
    if hi_open:
        w = torch.minimum(w, ((n_hr - pos - context_hr) / (2 * blend_hr)).clamp(0, 1))
    return w


def tiled_apply(fn, lr: torch.Tensor, guide: torch.Tensor | None, scale: int, tile_lr: int,
                context_lr: int, blend_lr: int = BLEND_LR_PX) -> Iterator[tuple[int, int, torch.Tensor | None]]:
    """Run ``fn(lr_tile, guide_tile) -> hr_tile`` over tiles; yields (done, total, None) after each
    tile and finally (total, total, output). Output is blended on the CPU in float64 weights."""
    n, b, h, w = lr.shape
    margin = context_lr + blend_lr
    ys, xs = tile_starts(h, tile_lr), tile_starts(w, tile_lr)
    total = len(ys) * len(xs)
    out = None
    weight = torch.zeros((1, 1, h * scale, w * scale), dtype=torch.float64)
    done = 0
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(y0 + tile_lr, h), min(x0 + tile_lr, w)
            py0, px0 = max(0, y0 - margin), max(0, x0 - margin)
            py1, px1 = min(h, y1 + margin), min(w, x1 + margin)
            lr_tile = lr[:, :, py0:py1, px0:px1]
            g_tile = None if guide is None else guide[:, :, py0 * scale:py1 * scale, px0 * scale:px1 * scale]
            pred = fn(lr_tile, g_tile).detach().to("cpu", torch.float64)
            if out is None:
                out = torch.zeros((n, pred.shape[1], h * scale, w * scale), dtype=torch.float64)
            wy = _ramp(pred.shape[2], py0 > 0, py1 < h, context_lr * scale, blend_lr * scale)
            wx = _ramp(pred.shape[3], px0 > 0, px1 < w, context_lr * scale, blend_lr * scale)
            wt = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, py0 * scale:py1 * scale, px0 * scale:px1 * scale] += pred * wt
            weight[:, :, py0 * scale:py1 * scale, px0 * scale:px1 * scale] += wt
            done += 1
            yield done, total, None
    yield total, total, (out / weight.clamp_min(1e-12)).to(torch.float32)


def choose_tile_lr(spec: ModelSpec, lr_hw: tuple[int, int], scale: int, budget_bytes: int) -> int:
    """Largest LR tile side (multiple of the model's size multiple) whose HR area fits the budget."""
    hr_px = budget_bytes / max(1, spec.memory_per_hr_px_bytes)
    side_hr = int(math.sqrt(max(hr_px, 1)))
    side_lr = max(MIN_TILE_LR_PX, side_hr // scale)
    side_lr = max(spec.size_multiple, side_lr - side_lr % max(1, spec.size_multiple))
    return min(side_lr, max(lr_hw))


# ------------------------------------------------------------------------------ running
def _to_nbhw(arr: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    if arr is None:
        return None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 3:
        raise HsiError(f"expected an (H, W, B) cube, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].to(device)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, ph, pw


def run_model(model_name: str, lr: np.ndarray, *, guide: np.ndarray | None = None, srf: np.ndarray | None = None,
              psf: np.ndarray | None = None, scale: int, device: str = "auto", steps: int | None = None,
              seed: int = 0, tile_lr: int | None = None, amp: bool | None = None,
              preview_every: int = 1, options: dict | None = None) -> Generator[Progress, None, RunResult]:
    """Run a registered model. ``lr`` (h, w, B), ``guide`` (h*s, w*s, M), ``srf`` (M, B), ``psf`` (k, k);
    ``options``: build options of the model (``ModelSpec.options``, e.g. {'blind': True}).

    Yields Progress; returns RunResult (use ``result = yield from run_model(...)`` or ``run_to_end``).
    Throwing ``StopRequested`` into the generator ends an iterative model early with its best
    estimate (the run then returns normally); for other models it propagates (a cancel)."""
    spec = registry.get(model_name)
    lr = np.asarray(lr, dtype=np.float32)
    if lr.ndim != 3:
        raise HsiError(f"{spec.name}: the LR-HSI must be (h, w, B), got {lr.shape}")
    h, w, bands = lr.shape
    available = ["lr_hsi"] + (["hr_msi"] if guide is not None else []) + (["srf"] if srf is not None else []) \
        + (["psf"] if psf is not None else [])
    if guide is not None and np.ndim(guide) == 3 and np.shape(guide)[2] == 3:
        available.append("hr_rgb")  # a 3-band guide is an RGB guide (passed to the model as hr_msi)
    reason = spec.why_not(available, scale, bands)
    if reason:
        if "hr_rgb" in spec.inputs and guide is not None and "hr_rgb" not in available:
            reason += f" (the guide given has shape {np.shape(guide)}; an RGB guide has 3 bands)"
        raise HsiError(f"{spec.name} cannot run: {reason}")
    if guide is not None and tuple(guide.shape[:2]) != (h * scale, w * scale):
        raise HsiError(f"the guide is {guide.shape[0]}x{guide.shape[1]} but LR {h}x{w} at x{scale} needs "
                       f"{h * scale}x{w * scale}")
    if srf is not None and guide is not None and np.asarray(srf).shape != (guide.shape[2], bands):
        raise HsiError(f"the SRF is {np.asarray(srf).shape}, expected ({guide.shape[2]}, {bands}) for this guide and cube")
    # the inputs given are checked above; the model then receives only those it declares, whichever
    # path called (eval has every input of its protocol): else eval, sr and the viewer would differ
    accepted = spec.accepted_inputs()
    guide = guide if "hr_msi" in accepted else None
    srf = srf if "srf" in accepted else None
    psf = psf if "psf" in accepted else None
    dev = select_device(device)
    messages: list[str] = []
    started = time.perf_counter()
    yield Progress(0.0, f"building {spec.title} on {dev}")
    options = dict(options or {})
    unknown = [k for k in options if k not in spec.options]
    if unknown:
        raise HsiError(f"{spec.name} has no option {', '.join(unknown)}"
                       + (f" (options: {', '.join(spec.options)})" if spec.options else ""))
    model = spec.build(scale, bands, **options)
    wf = spec.weights_for(scale)
    use_amp = bool(amp) if amp is not None else False
    steps = steps if steps is not None else spec.default_steps

    while True:  # retried on the CPU after repeated CUDA out-of-memory
        try:
            result = yield from _run_on(spec, model, lr, guide, srf, psf, scale, dev, steps, seed, tile_lr,
                                        use_amp, messages, preview_every)
            break
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_out_of_memory(exc) or dev.type == "cpu":
                raise
            messages.append(f"out of GPU memory even with the smallest tiles: continuing on the CPU")
            yield Progress(0.0, messages[-1])
            model = model.to("cpu")
            torch.cuda.empty_cache()
            dev = torch.device("cpu")
            tile_lr = None
    elapsed = time.perf_counter() - started
    provenance = {
        "model": spec.name, "title": spec.title, "paper": spec.paper, "scale": scale,
        "weights": None if wf is None else wf.file, "weights_sha256": None if wf is None else wf.sha256,
        "device": str(dev), "seed": seed, "steps": steps, "amp": use_amp, **({"options": options} if options else {}),
        "seconds": round(elapsed, 3), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report = getattr(model, "report", None)
    if isinstance(report, dict) and report:
        provenance["report"] = {k: v for k, v in report.items() if not hasattr(v, "shape")}
        if report.get("stopped"):
            messages.append(str(report["stopped"]))
    yield Progress(1.0, f"{spec.title}: done in {elapsed:.1f} s on {dev}")
    return RunResult(result, provenance, messages)


def _run_on(spec: ModelSpec, model, lr, guide, srf, psf, scale, dev, steps, seed, tile_lr, use_amp, messages,
            preview_every) -> Generator[Progress, None, np.ndarray]:
    model = model.to(dev)
    h, w, bands = lr.shape
    lr_t = _to_nbhw(lr, dev)
    guide_t = _to_nbhw(guide, dev)
    srf_t = None if srf is None else torch.as_tensor(np.asarray(srf, dtype=np.float32), device=dev)
    psf_t = None if psf is None else torch.as_tensor(np.asarray(psf, dtype=np.float32), device=dev)
    options = {}
    if spec.iterative or spec.stochastic:
        options["steps"] = steps
    if spec.stochastic:
        options["generator"] = torch.Generator(device=dev).manual_seed(seed)
    torch.manual_seed(seed)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if use_amp and dev.type == "cuda" else contextlib.nullcontext()

    def call(lr_tile, g_tile):
        inputs = {"lr_hsi": lr_tile, "hr_msi": g_tile, "srf": srf_t, "psf": psf_t}
        lr_p, ph, pw = _pad_to_multiple(lr_tile, spec.size_multiple)
        if ph or pw:
            inputs["lr_hsi"] = lr_p
            if g_tile is not None:
                inputs["hr_msi"] = torch.nn.functional.pad(g_tile, (0, pw * scale, 0, ph * scale), mode="replicate")
        with torch.inference_mode(), autocast:
            out = model(**inputs, **options)
        return out[..., :lr_tile.shape[-2] * scale, :lr_tile.shape[-1] * scale].float()

    if (spec.iterative or spec.stochastic) and hasattr(model, "iterate"):
        # whole-image optimisation / sampling: progress comes from the model's own iterations
        inputs = {"lr_hsi": lr_t, "hr_msi": guide_t, "srf": srf_t, "psf": psf_t}
        gen = model.iterate(**inputs, **options)
        last_preview = None
        stop_now = False
        with autocast:
            while True:
                try:
                    upd: IterationUpdate = next(gen) if not stop_now else gen.throw(StopRequested())
                except StopIteration as stop:
                    out = stop.value
                    break
                preview = None
                if upd.preview is not None and (upd.step % max(1, preview_every) == 0 or upd.step == upd.total):
                    preview = upd.preview[0].detach().float().cpu().permute(1, 2, 0).numpy()
                    last_preview = preview
                try:
                    yield Progress(upd.step / max(1, upd.total), upd.message or f"step {upd.step}/{upd.total}",
                                   upd.step, upd.total, upd.loss, preview)
                except StopRequested:
                    stop_now = True  # the model ends at its next step and returns its best estimate
        del last_preview
        return out[0].detach().float().cpu().permute(1, 2, 0).numpy()

    if not spec.tileable:
        yield Progress(0.05, f"running {spec.name} on the whole image")
        return call(lr_t, guide_t)[0].cpu().permute(1, 2, 0).numpy()

    budget = memory_budget_bytes(dev)
    tile = tile_lr or choose_tile_lr(spec, (h, w), scale, budget)
    while True:
        try:
            if tile >= max(h, w):
                yield Progress(0.05, f"running {spec.name} on the whole image ({h}x{w} LR)")
                return call(lr_t, guide_t)[0].cpu().permute(1, 2, 0).numpy()
            for done, total, out in tiled_apply(call, lr_t, guide_t, scale, tile, spec.context_lr_px):
                if out is None:
                    yield Progress(done / total, f"tile {done}/{total} ({tile}px LR tiles)", done, total)
            return out[0].permute(1, 2, 0).numpy()
        except Exception as exc:  # noqa: BLE001
            if not is_out_of_memory(exc) or min(tile, max(h, w)) // 2 < MIN_TILE_LR_PX:
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            tile = min(tile, max(h, w)) // 2
            messages.append(f"out of {'GPU ' if dev.type == 'cuda' else ''}memory: retrying with {tile}px LR tiles")
            yield Progress(0.0, messages[-1])


def run_to_end(gen: Generator, on_progress=None, should_cancel=None, should_stop=None):
    """Drive a job generator to its result; ``on_progress(Progress)`` after each yield; when
    ``should_cancel()`` turns true the generator is closed and Cancelled is raised; when
    ``should_stop()`` turns true ``StopRequested`` is thrown into it once (an iterative model then
    ends at its next step and the run returns its best estimate)."""
    stop_sent = False
    try:
        progress = next(gen)
        while True:
            if on_progress is not None:
                on_progress(progress)
            if should_cancel is not None and should_cancel():
                gen.close()
                raise Cancelled("cancelled by the user")
            if not stop_sent and should_stop is not None and should_stop():
                stop_sent = True
                progress = gen.throw(StopRequested())
            else:
                progress = next(gen)
    except StopIteration as stop:
        return stop.value

"""Headless jobs behind the CLI: simulate inputs, super-resolve a file, evaluate models on GT files.

Every function takes plain paths/values, reports progress through a callback and returns data
(printing is the CLI's business), so the GUI and tests can use them too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.core.cube import Cube, parse_nm_ranges
from app.core.io.datasets import scene_folders
from app.core.science.degrade import parse_protocol, simulate
from app.core.inference.engine import Progress, run_to_end
from app.core.inference.runs import execute, plan_for_cubes, simulate_inputs
from app.core.errors import HsiError
from app.core.io import open_cube, output_format, save_cube
from app.core.io.jsonio import write_json
from app.core.io.provenance import stamp
from app.core.science.metric_table import COLUMNS, row_values
from app.core.science.metrics import compute_all, metric_conventions
from models import registry

METRIC_KEYS = COLUMNS


# ------------------------------------------------------------------------------ simulate
def simulate_to_dir(gt_path, protocol: str, out_dir, *, srf: str | None = None, noise_sigma: float | None = None,
                    seed: int = 0, ext: str = ".npy", read_options: dict | None = None) -> dict:
    """Write lr<ext>, guide<ext> (when the protocol has one) and protocol.json into ``out_dir``."""
    output_format(Path(out_dir) / f"lr{ext}")
    gt = open_cube(gt_path, **(read_options or {})).load()
    lr, guide, meta = simulate(gt.data, protocol, srf=srf, wavelengths_nm=gt.wavelengths_nm,
                               noise_sigma=noise_sigma, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = {"protocol": meta["protocol"], "scale": meta["scale"], "seed": seed, "source": str(gt.source_path)}
    lr_cube = Cube.from_array(lr, gt.wavelengths_nm, name="lr", metadata={"provenance": prov})
    written = {"lr": str(save_cube(lr_cube, out / f"lr{ext}"))}
    if guide is not None:
        guide_cube = Cube.from_array(guide, None, name="guide", metadata={"provenance": {**prov, "srf": meta.get("srf")}})
        written["guide"] = str(save_cube(guide_cube, out / f"guide{ext}"))
    meta = stamp({**meta, "gt": str(gt.source_path), "files": written}, "simulate",
                 arguments={"gt": str(gt_path), "protocol": protocol, "srf": srf, "noise_sigma": noise_sigma,
                            "seed": seed, "ext": ext, "read_options": read_options or {}})
    write_json(out / "protocol.json", meta)
    return meta


# ------------------------------------------------------------------------------ super-resolve
def super_resolve(model: str, lr_path, out_path, *, scale: int, guide_path=None, srf: str | None = None,
                  protocol: str | None = None, device: str = "auto", steps: int | None = None, seed: int = 0,
                  on_progress: Callable[[Progress], None] | None = None, read_options: dict | None = None,
                  options: dict | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Run ``model`` on a file (``options``: the model's build options, e.g. {'blind': True}).
    ``should_stop()`` turning true ends an iterative model early with its best estimate so far."""
    registry.get(model)  # an unknown name fails before any file is read
    output_format(out_path)
    lr = open_cube(lr_path, **(read_options or {})).load()
    guide = open_cube(guide_path).load() if guide_path else None
    if protocol is not None:
        proto = parse_protocol(protocol, strict=False)
        if proto.scale != scale:
            raise HsiError(f"protocol {proto.name} does not match --scale {scale}")
    plan = plan_for_cubes(model, lr, guide, scale=scale, protocol=protocol, srf=srf, device=device, steps=steps,
                          seed=seed, options=options)
    if plan.scale != scale:
        raise HsiError(f"the guide is {guide.shape[0]}x{guide.shape[1]}: LR {lr.shape[0]}x{lr.shape[1]} at x{scale} "
                       f"needs {lr.shape[0] * scale}x{lr.shape[1] * scale}")
    result = run_to_end(execute(plan), on_progress, should_stop=should_stop)
    provenance = {**result.metadata["provenance"], "lr": str(lr.source_path),
                  "guide": None if guide is None else str(guide.source_path)}
    if protocol:
        provenance["protocol"] = protocol
    cube = Cube.from_array(result.data, lr.wavelengths_nm, name=f"{lr.name}_{model}",
                           metadata={"provenance": provenance})
    written = save_cube(cube, out_path)
    return {"out": str(written), "provenance": provenance, "messages": list(provenance.get("messages", []))}


# ------------------------------------------------------------------------------ evaluate
@dataclass
class EvalItem:
    image: str
    model: str
    metrics: dict | None
    seconds: float
    skipped: str | None = None
    run: dict | None = None  # iterative models: what their run reported (iterations, losses, options)
    provenance: dict | None = None  # options used, weights {file, sha256}, seed, steps: written into the row


def _row_provenance(prov: dict) -> dict:
    """What made a row's numbers: the model's options, its weights file and sha256, seed and steps."""
    out = {"options": dict(prov.get("options") or {}), "seed": prov.get("seed")}
    if prov.get("steps") is not None:
        out["steps"] = prov["steps"]
    if prov.get("weights"):
        out["weights"] = {"file": prov["weights"], "sha256": prov.get("weights_sha256")}
    return out


def gt_items(paths) -> list[Path]:
    """GT files/folders: a cube file, a CAVE scene folder, or a folder of CAVE scene folders."""
    items: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            items.extend(scene_folders(p))
        elif p.exists():
            items.append(p)
        else:
            raise HsiError(f"{p}: no such file or folder")
    if not items:
        raise HsiError("no ground-truth cube found in " + ", ".join(map(str, paths)))
    return items


def _reason(message: str) -> str:
    """'Bicubic cannot run: needs X' -> 'needs X' (the table already names the model)."""
    return message.split(" cannot run: ", 1)[-1]


def evaluate(gt_paths, protocol: str, models: list[str] | str, *, device: str = "auto", steps: int | None = None,
             seed: int = 0, on_item: Callable[[EvalItem], None] | None = None,
             on_progress: Callable[[Progress], None] | None = None, options: dict | None = None,
             exclude_bands=None, nonfinite: str = "error") -> dict:
    """Simulate each GT's inputs with ``protocol``, run every model that fits, compute the metrics.
    ``options``: model build options (e.g. {'blind': True}), each given only to the models that have it.
    ``exclude_bands``: nm ranges ('1340-1460,1790-1960') left out of the band means, with the GT's
    bad-band list; the GT's no-data pixels (``nonfinite='mask'`` adds NaN/Inf ones) are left out of
    every pixel statistic; each row counts both (``masked_pixels``, ``excluded_bands``).

    Returns the JSON document described by the CLI's ``eval`` command."""
    proto = parse_protocol(protocol)
    names = [s.name for s in registry.all_specs()] if models in ("all", ["all"]) else list(models)
    specs = [registry.get(n) for n in names]
    unused = [k for k in (options or {}) if not any(k in spec.options for spec in specs)]
    if unused:
        raise HsiError(f"no model among {', '.join(names)} has the option {', '.join(unused)}")
    exclude_ranges = parse_nm_ranges(exclude_bands)
    results: list[EvalItem] = []
    used_device = None
    for gt_path in gt_items(gt_paths):
        gt = open_cube(gt_path, nonfinite=nonfinite).load()
        excl = gt.excluded_bands(exclude_ranges)
        excl = excl if excl.any() else None
        lr, guide = simulate_inputs(gt, proto.name, seed=seed)
        hr = gt.data
        nodata = gt.nodata_mask() if gt.has_nodata_rule else None
        crop = lr.metadata["simulation"].get("crop", {})
        if crop.get("cropped"):
            (r0, r1), (c0, c1) = crop["rows"], crop["cols"]
            hr = hr[r0:r1, c0:c1]
            nodata = None if nodata is None else nodata[r0:r1, c0:c1]
        for spec in specs:
            try:
                # the viewer's Run model path: the same inputs, SRF and PSF for every model
                plan = plan_for_cubes(spec.name, lr, guide, scale=proto.scale, device=device, steps=steps, seed=seed,
                                      options={k: v for k, v in (options or {}).items() if k in spec.options})
            except HsiError as exc:
                item = EvalItem(gt.name, spec.name, None, 0.0, skipped=_reason(str(exc)))
            else:
                started = time.perf_counter()
                out = run_to_end(execute(plan), on_progress)
                seconds = time.perf_counter() - started
                prov = out.metadata["provenance"]
                used_device = prov["device"]
                m = compute_all(hr, out.data, scale=proto.scale, device=device if device != "auto" else None,
                                nodata=nodata, exclude_bands=excl)
                item = EvalItem(gt.name, spec.name, {**row_values(m), "masked_pixels": m["masked_pixels"],
                                                     "excluded_bands": m["excluded_bands"]}, seconds)
                item.provenance = _row_provenance(prov)
                report = prov.get("report") or {}
                if spec.iterative and report:
                    item.run = {"steps": prov.get("steps"), "options": prov.get("options", {}),
                                **{k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}}
            results.append(item)
            if on_item is not None:
                on_item(item)
    summary = {}
    for spec in specs:
        rows = [r for r in results if r.model == spec.name and r.metrics is not None]
        if rows:
            summary[spec.name] = {k: float(np.mean([r.metrics[k] for r in rows])) for k in METRIC_KEYS}
            summary[spec.name]["seconds"] = float(np.mean([r.seconds for r in rows]))
            summary[spec.name]["images"] = len(rows)
    return stamp({
        "protocol": proto.name, "device": used_device or device,
        "results": [{"image": r.image, "model": r.model, **(r.metrics or {}), "seconds": round(r.seconds, 3),
                     **({"skipped": r.skipped} if r.skipped else {}), **({"run": r.run} if r.run else {}),
                     # what made the numbers (a skipped row: the options it was given)
                     **(r.provenance or {"options": {k: v for k, v in (options or {}).items()
                                                     if k in registry.get(r.model).options}})}
                    for r in results],
        "summary": summary,
    }, "eval", metric_conventions=metric_conventions(),
        arguments={"gt": [str(p) for p in gt_paths], "protocol": proto.name, "models": names, "device": device,
                   "steps": steps, "seed": seed, "options": dict(options or {}),
                   "exclude_bands": [list(r) for r in exclude_ranges], "nonfinite": nonfinite})


def format_table(doc: dict) -> str:
    """Plain-text table: one row per image and model, then the mean per model."""
    head = f"{'image':<28} {'model':<10} {'PSNR':>7} {'SSIM':>7} {'SAM°':>6} {'ERGAS':>7} {'RMSE':>8} {'s':>7}"
    lines = [f"protocol {doc['protocol']}, device {doc['device']}", head, "-" * len(head)]
    for r in doc["results"]:
        if r.get("skipped"):
            lines.append(f"{r['image']:<28} {r['model']:<10} skipped: {r['skipped']}")
        else:
            px, bands = r.get("masked_pixels") or 0, r.get("excluded_bands") or 0
            left = f"  left out {px} no-data px, {bands} band{'s' if bands != 1 else ''}" if px or bands else ""
            lines.append(f"{r['image']:<28} {r['model']:<10} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['sam_deg']:6.2f} "
                         f"{r['ergas']:7.3f} {r['rmse']:8.5f} {r['seconds']:7.2f}{left}")
    lines.append("-" * len(head))
    for name, s in doc["summary"].items():
        lines.append(f"{'mean (' + str(s['images']) + ' images)':<28} {name:<10} {s['psnr']:7.2f} {s['ssim']:7.4f} "
                     f"{s['sam_deg']:6.2f} {s['ergas']:7.3f} {s['rmse']:8.5f} {s['seconds']:7.2f}")
    return "\n".join(lines)

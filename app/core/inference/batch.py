"""Headless jobs behind the CLI: simulate inputs, super-resolve a file, evaluate models on GT files.

Every function takes plain paths/values, reports progress through a callback and returns data
(printing is the CLI's business), so the GUI and tests can use them too.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.core.cube import Cube, parse_nm_ranges
from app.core.io.datasets import dataset_items, scene_name
from app.core.science.degrade import parse_protocol, simulate
from app.core.inference.engine import Progress, run_to_end
from app.core.inference.runs import execute, plan_for_cubes, simulate_inputs, simulated_georefs
from app.core.errors import HsiError
from app.core.io import open_cube, output_format, save_cube
from app.core.io.cluster import SINGLE_PROCESS, compute_threads, threads_as
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
    lr_geo, guide_geo = simulated_georefs(gt.metadata, meta)  # LR pixel size x scale, guide on the GT's grid
    lr_cube = Cube.from_array(lr, gt.wavelengths_nm, name="lr", metadata={"provenance": prov, **lr_geo})
    written = {"lr": str(save_cube(lr_cube, out / f"lr{ext}"))}
    if guide is not None:
        guide_cube = Cube.from_array(guide, None, name="guide",
                                     metadata={"provenance": {**prov, "srf": meta.get("srf")}, **guide_geo})
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
    geo = {"georef": result.metadata["georef"]} if result.metadata.get("georef") else {}  # LR's, pixel size / scale
    cube = Cube.from_array(result.data, lr.wavelengths_nm, name=f"{lr.name}_{model}",
                           metadata={"provenance": provenance, **geo})
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
    error: str | None = None  # the pair failed (an unreadable GT, a model that raised): one line naming the file
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
    """GT files/folders: a cube file, a CAVE scene folder, or a dataset folder of cube files of any
    supported format (.mat, .h5, .npy, .tif, ENVI, ...) and/or CAVE scene folders."""
    items: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = dataset_items(p)
            if not found:
                raise HsiError(f"{p}: no ground-truth cube in this folder (cube files such as .mat, .h5, .npy, "
                               f".tif, ENVI .hdr, or CAVE scene folders of PNG bands)")
            items.extend(found)
        elif p.exists():
            items.append(p)
        else:
            raise HsiError(f"{p}: no such file or folder")
    if not items:
        raise HsiError("no ground-truth cube found in " + ", ".join(map(str, paths)))
    return items


def _absolute_options(read_options: dict | None) -> dict | None:
    """Read options for a cluster worker: a wavelength side file by its absolute path."""
    if not read_options or not read_options.get("wavelengths"):
        return read_options
    return {**read_options, "wavelengths": str(Path(read_options["wavelengths"]).expanduser().absolute())}


def _reason(message: str) -> str:
    """'Bicubic cannot run: needs X' -> 'needs X' (the table already names the model)."""
    return message.split(" cannot run: ", 1)[-1]


@dataclass
class _Inputs:
    """One GT read and its inputs simulated: what every model of that image is run on."""
    name: str
    lr: Cube
    guide: Cube | None
    hr: np.ndarray
    nodata: np.ndarray | None
    excl: np.ndarray | None


def _prepare(gt_path, proto, *, seed: int, nonfinite: str, exclude_ranges, read_options: dict | None = None) -> _Inputs:
    gt = open_cube(gt_path, **{**(read_options or {}), "nonfinite": nonfinite}).load()
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
    return _Inputs(scene_name(gt_path), lr, guide, hr, nodata, excl)


def _run_pair(inputs: _Inputs, spec, proto, *, device: str, steps: int | None, seed: int, options: dict | None,
              on_progress: Callable[[Progress], None] | None = None) -> tuple[EvalItem, str | None]:
    """(the row of one model on one image, the device it ran on or None when it was skipped)."""
    try:
        # the viewer's Run model path: the same inputs, SRF and PSF for every model
        plan = plan_for_cubes(spec.name, inputs.lr, inputs.guide, scale=proto.scale, device=device, steps=steps,
                              seed=seed, options={k: v for k, v in (options or {}).items() if k in spec.options})
    except HsiError as exc:
        return EvalItem(inputs.name, spec.name, None, 0.0, skipped=_reason(str(exc))), None
    started = time.perf_counter()
    out = run_to_end(execute(plan), on_progress)
    seconds = time.perf_counter() - started
    prov = out.metadata["provenance"]
    m = compute_all(inputs.hr, out.data, scale=proto.scale, device=device if device != "auto" else None,
                    nodata=inputs.nodata, exclude_bands=inputs.excl)
    # (the row, plain values, is what crosses to the caller or a cluster worker's client)
    item = EvalItem(inputs.name, spec.name, {**row_values(m), "masked_pixels": m.masked_pixels,
                                             "excluded_bands": m.excluded_bands}, seconds)
    item.provenance = _row_provenance(prov)
    report = prov.get("report") or {}
    if spec.iterative and report:
        item.run = {"steps": prov.get("steps"), "options": prov.get("options", {}),
                    **{k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}}
    return item, prov["device"]


def _image_name(gt_path) -> str:
    """The name of an image whose GT could not be read (a scene folder's name, a file's stem)."""
    p = Path(gt_path)
    return p.name if p.is_dir() else p.stem


def _failed(gt_path, model: str, problem: BaseException | str) -> EvalItem:
    """The error row of a pair: one line naming the GT file."""
    if isinstance(problem, BaseException):
        text = "does not fit in memory" if isinstance(problem, MemoryError) else (
            " ".join(str(problem).split()) or type(problem).__name__)
    else:
        text = problem
    if str(gt_path) not in text:
        text = f"{gt_path}: {text}"
    return EvalItem(_image_name(gt_path), model, None, 0.0, error=text)


def eval_pair(gt_path: str, model: str, settings: dict) -> dict:
    """One (image, model) pair from the GT's path: read, simulate, run, score -- the task a cluster
    worker runs for ``evaluate(..., scheduler=...)``, the same code as the single-process loop.
    Returns {"item": the EvalItem's fields, "device": where the model ran or None}; a failure is an
    error row, never an exception."""
    proto = parse_protocol(settings["protocol"])
    try:
        spec = registry.get(model)
        with threads_as(settings.get("threads")):
            inputs = _prepare(gt_path, proto, seed=settings["seed"], nonfinite=settings["nonfinite"],
                              exclude_ranges=settings["exclude_ranges"], read_options=settings.get("read_options"))
            item, used = _run_pair(inputs, spec, proto, device=settings["device"], steps=settings["steps"],
                                   seed=settings["seed"], options=settings["options"])
    except Exception as exc:  # noqa: BLE001 - every problem of a pair becomes its error row
        item, used = _failed(gt_path, model, exc), None
    return {"item": asdict(item), "device": used}


def evaluate(gt_paths, protocol: str, models: list[str] | str, *, device: str = "auto", steps: int | None = None,
             seed: int = 0, on_item: Callable[[EvalItem], None] | None = None,
             on_progress: Callable[[Progress], None] | None = None, options: dict | None = None,
             exclude_bands=None, nonfinite: str = "error", scheduler: str | None = None,
             read_options: dict | None = None) -> dict:
    """Simulate each GT's inputs with ``protocol``, run every model that fits, compute the metrics.
    ``options``: model build options (e.g. {'blind': True}), each given only to the models that have it.
    ``exclude_bands``: nm ranges ('1340-1460,1790-1960') left out of the band means, with the GT's
    bad-band list; the GT's no-data pixels (``nonfinite='mask'`` adds NaN/Inf ones) are left out of
    every pixel statistic; each row counts both (``masked_pixels``, ``excluded_bands``).
    A GT that cannot be read, or a model that fails on it, gives an error row (``error``: one line
    naming the file) and the rest is still computed.
    ``scheduler``: 'tcp://HOST:PORT' or 'local:N' runs one dask task per (image, model) pair (see
    :mod:`app.core.io.cluster`; ``on_item`` is then called in completion order and ``on_progress``
    not at all); the rows are the same, in the same order.
    ``read_options``: ``open_cube`` keywords for every GT file (``var``, ``layout``, ``hw``,
    ``normalise``, ``wavelengths``: a side file of band centres), e.g. {'var': 'ref'} for a folder
    of Harvard .mat files. Rows are named by the file's stem (a scene folder's name).

    Returns the JSON document described by the CLI's ``eval`` command."""
    proto = parse_protocol(protocol)
    names = [s.name for s in registry.all_specs()] if models in ("all", ["all"]) else list(models)
    specs = [registry.get(n) for n in names]
    unused = [k for k in (options or {}) if not any(k in spec.options for spec in specs)]
    if unused:
        raise HsiError(f"no model among {', '.join(names)} has the option {', '.join(unused)}")
    exclude_ranges = parse_nm_ranges(exclude_bands)
    images = gt_items(gt_paths)
    results: list[EvalItem] = []
    used_device = None
    execution = dict(SINGLE_PROCESS)
    if scheduler is None:
        for gt_path in images:
            try:
                inputs = _prepare(gt_path, proto, seed=seed, nonfinite=nonfinite, exclude_ranges=exclude_ranges,
                                  read_options=read_options)
            except Exception as exc:  # noqa: BLE001 - an unreadable GT: an error row per model
                inputs = exc
            for spec in specs:
                used = None
                if isinstance(inputs, Exception):
                    item = _failed(gt_path, spec.name, inputs)
                else:
                    try:
                        item, used = _run_pair(inputs, spec, proto, device=device, steps=steps, seed=seed,
                                               options=options, on_progress=on_progress)
                    except Exception as exc:  # noqa: BLE001
                        item = _failed(gt_path, spec.name, exc)
                used_device = used or used_device
                results.append(item)
                if on_item is not None:
                    on_item(item)
    else:
        from app.core.io.cluster import connect

        settings = {"protocol": proto.name, "device": device, "steps": steps, "seed": seed, "options": options,
                    "exclude_ranges": exclude_ranges, "nonfinite": nonfinite, "threads": compute_threads(),
                    "read_options": _absolute_options(read_options)}
        # absolute paths: a worker may run in another directory (the files are on a shared filesystem)
        pairs = [(str(Path(p).absolute()), spec.name) for p in images for spec in specs]
        found: list[tuple[EvalItem, str | None] | None] = [None] * len(pairs)
        with connect(scheduler) as session:
            execution = session.execution
            for k, value, problem in session.run(eval_pair, [(p, m, settings) for p, m in pairs], name="eval"):
                if problem is not None:
                    found[k] = (_failed(pairs[k][0], pairs[k][1], f"the task failed on the cluster: {problem}"),
                                None)
                else:
                    found[k] = (EvalItem(**value["item"]), value["device"])
                if on_item is not None:
                    on_item(found[k][0])
        for item, used in found:
            used_device = used or used_device
            results.append(item)
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
                     **({"error": r.error} if r.error else {}),
                     # what made the numbers (a skipped or failed row: the options it was given)
                     **(r.provenance or {"options": {k: v for k, v in (options or {}).items()
                                                     if k in registry.get(r.model).options}})}
                    for r in results],
        "summary": summary,
        "execution": execution,
    }, "eval", metric_conventions=metric_conventions(),
        arguments={"gt": [str(p) for p in gt_paths], "protocol": proto.name, "models": names, "device": device,
                   "steps": steps, "seed": seed, "options": dict(options or {}),
                   "exclude_bands": [list(r) for r in exclude_ranges], "nonfinite": nonfinite,
                   "scheduler": scheduler})


def format_table(doc: dict) -> str:
    """Plain-text table: one row per image and model, then the mean per model."""
    head = f"{'image':<28} {'model':<10} {'PSNR':>7} {'SSIM':>7} {'SAM°':>6} {'ERGAS':>7} {'RMSE':>8} {'s':>7}"
    where = doc.get("execution") or {}
    on = f", on {where['scheduler']} ({where['workers']} workers)" if where.get("scheduler") else ""
    lines = [f"protocol {doc['protocol']}, device {doc['device']}{on}", head, "-" * len(head)]
    for r in doc["results"]:
        if r.get("skipped"):
            lines.append(f"{r['image']:<28} {r['model']:<10} skipped: {r['skipped']}")
        elif r.get("error"):
            lines.append(f"{r['image']:<28} {r['model']:<10} failed: {r['error']}")
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

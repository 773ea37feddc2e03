"""The ``compare`` driver: both sides listed and matched, the GT items read ahead on threads (or one
dask task per GT item on a cluster) and scored, rows sorted, means per method, and the document."""
from __future__ import annotations

import itertools
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.core.cube import parse_nm_ranges
from app.core.device import select_device
from app.core.errors import Cancelled, HsiError
from app.core.evaluation.compare.discovery import Item, Side, list_items, match_items
from app.core.evaluation.compare.scoring import compare_group, load_group, score_group
from app.core.evaluation.compare.tables import METRIC_KEYS
from app.core.io.cluster import SINGLE_PROCESS, compute_threads
from app.core.io.provenance import stamp
from app.core.io.value_range import parse_user_range
from app.core.science.metrics import CONVENTIONS, metric_conventions

__all__ = ["compare", "exit_status", "CompareCancelled"]

CompareCancelled = Cancelled  # the user stopped a comparison (``should_cancel`` turned true)


@dataclass
class _Method:
    name: str
    side: Side
    pairs: dict[int, Item]
    unmatched: list[tuple[Item, str]]


def _default_name(path: Path) -> str:
    p = Path(path).expanduser()
    name = p.name if p.is_dir() else p.stem
    return name or p.resolve().name or str(p)


def _resolve_device(device: str | None) -> str:
    return str(select_device(device, mps=False))


def _absolute(item: Item) -> Item:
    return Item(item.name, item.path.absolute(), item.stem)


def compare(gt, preds, *, names=None, scale: int | None = None, var: str | None = None,
            gt_var: str | None = None, layout: str | None = None, gt_layout: str | None = None,
            pred_range: str = "auto", gt_range: str = "auto", nonfinite: str = "error", crop: bool = False,
            per_band: bool = False, exclude_bands=None, gt_wavelengths: str | Path | None = None,
            device: str = "auto", workers: int | None = None,
            on_progress: Callable[[int, int, dict], None] | None = None,
            should_cancel: Callable[[], bool] | None = None, scheduler: str | None = None) -> dict:
    """Compare predictions (one file or folder per method) with the GT cubes; see the module docstring.

    Args:
        gt: a cube file, a scene folder or a folder of cubes.
        preds: one path per method (file or folder); ``names`` overrides the method names (default:
            the folder's name, or the file's stem).
        scale: HR/LR factor (ERGAS; cropping the GT to a multiple of it with ``crop``).
        var / layout / pred_range: how prediction files are read (``var``: variable in .mat/.npz/.h5;
            ``layout``: forced stored axis order; ``pred_range``: auto, unit, 8bit, 16bit or max).
        gt_var / gt_layout / gt_range: the same for the GT files.
        gt_wavelengths: a side file (.txt/.csv, one value per band, nm or µm) with the band centres of
            every GT file (replacing a file's own); predictions are compared on the GT's bands, so
            a prediction without wavelengths takes the GT's (the per-band curves and --exclude-bands).
        nonfinite: 'error' (a file with NaN/Inf is an error entry), 'zero' (read them as 0, said) or
            'mask' (read as 0 and their pixels left out of the metrics, counted).
        exclude_bands: wavelength ranges in nm ('1340-1460,1790-1960', or (low, high) pairs) whose
            bands leave the band means, as the files' bad-band lists (ENVI bbl) do; each row counts
            them (``excluded_bands``) and the no-data pixels left out (``masked_pixels``).
        crop: compare a smaller prediction with the matching part of the GT (said in the row).
        per_band: add per-band PSNR, SSIM and RMSE curves to each row.
        device: 'auto', 'cpu', 'cuda' (the metrics run there).
        workers: threads reading files ahead of the metric computation (default: 2).
        on_progress: called with (done, total, row) after each image/method pair.
        should_cancel: polled before each image and after each pair; when it returns True the reading
            threads stop and CompareCancelled is raised.
        scheduler: 'tcp://HOST:PORT' or 'local:N': one dask task per GT item (its GT and matched
            predictions, read by path on the worker; see :mod:`app.core.io.cluster`), results taken
            as they complete (``workers`` unused); the rows are the same, in the same order.

    Returns:
        {"command": "compare", "gt", "device", "scale", "methods", "images", "results", "summary",
        "errors", "unmatched", "ignored", "notes", "conventions", "seconds", "execution", "options"} after the
        header of app.core.io.provenance (schema_version, kind, software, created, arguments,
        metric_conventions); each result row also holds ``pred_file`` / ``gt_file`` (size, mtime, sha256 up
        to 64 MiB) and, when the prediction records it, ``pred_provenance``
        (``execution``: {"scheduler": the address or None, "workers": N}); each result row
        also holds ``gt_path`` and ``pred`` (absolute paths) so that a viewer can open the pair as read here.

    Raises:
        HsiError when nothing can be compared at all (a missing path, no GT cube, bad arguments);
        problems with single files end up in ``errors``.
    """
    started = time.perf_counter()
    for what, value in (("pred_range", pred_range), ("gt_range", gt_range)):
        try:
            parse_user_range(value)
        except ValueError as exc:
            raise HsiError(f"--{what.replace('_', '-')}: {exc}") from None
    preds = [Path(p).expanduser() for p in ([preds] if isinstance(preds, (str, Path)) else preds)]
    if not preds:
        raise HsiError("give at least one prediction (--pred PATH)")
    names = list(names or [])
    if len(names) > len(preds):
        raise HsiError(f"{len(names)} names (--name) for {len(preds)} predictions (--pred)")
    if scale is not None:
        if int(scale) != scale or scale < 1:
            raise HsiError(f"the scale must be a positive whole number, got {scale}")
        scale = int(scale)
    dev = _resolve_device(device)
    exclude_ranges = parse_nm_ranges(exclude_bands)

    gt_side = list_items(gt)
    if not gt_side.items:
        raise HsiError(f"{gt_side.path}: no ground-truth cube found (cube files or CAVE scene folders)")
    gt_items = gt_side.items
    methods: list[_Method] = []
    for k, p in enumerate(preds):
        given = k < len(names) and bool(names[k])
        name = names[k] if given else _default_name(p)
        if not given and p.is_file() and any(m.name == name for m in methods):
            name = p.name  # two files with one stem (x.npy, x.mat): keep the extension
        if any(m.name == name for m in methods):
            raise HsiError(f"two predictions are named '{name}' ({p} and "
                           f"{next(m.side.path for m in methods if m.name == name)}); give each a --name")
        side = list_items(p)
        if len(side.items) == 1 and len(gt_items) == 1 and (side.single or gt_side.single):
            pairs, unmatched = {0: side.items[0]}, []  # one cube each, named by the user: paired as given
        else:
            pairs, unmatched = match_items(gt_items, side.items, name)
        methods.append(_Method(name, side, pairs, unmatched))

    notes: list[str] = []
    if scale is None:
        notes.append("ERGAS left out: it needs the scale factor (--scale)")
    unmatched_doc = []
    for m in methods:
        for i, g in enumerate(gt_items):
            if i not in m.pairs:
                unmatched_doc.append({"model": m.name, "side": "gt", "image": g.name, "path": str(g.path),
                                      "reason": f"no prediction for this GT item in {m.side.path}"})
        for item, reason in m.unmatched:
            unmatched_doc.append({"model": m.name, "side": "pred", "image": item.name, "path": str(item.path),
                                  "reason": reason})
    ignored = [str(p) for p in gt_side.ignored] + [str(p) for m in methods for p in m.side.ignored]

    groups = [(i, g, [(m, m.pairs[i]) for m in methods if i in m.pairs]) for i, g in enumerate(gt_items)]
    groups = [grp for grp in groups if grp[2]]
    total = sum(len(grp[2]) for grp in groups)
    if nonfinite not in ("error", "zero", "mask"):
        raise HsiError(f"nonfinite must be 'error', 'zero' or 'mask', not {nonfinite!r}")
    opts = {"var": var, "layout": layout, "pred_range": pred_range, "gt_var": gt_var, "gt_layout": gt_layout,
            "gt_range": gt_range, "nonfinite": nonfinite, "scale": scale, "crop": crop, "device": dev,
            "per_band": per_band, "exclude_ranges": exclude_ranges,
            "gt_wavelengths": None if gt_wavelengths is None else str(Path(gt_wavelengths).expanduser().absolute())}

    results: list[dict] = []
    errors: list[dict] = []
    done = 0

    def report(row):
        nonlocal done
        done += 1
        (errors if "error" in row else results).append(row)
        if on_progress is not None:
            on_progress(done, total, row)

    if on_progress is not None:
        on_progress(0, total, {})
    execution = dict(SINGLE_PROCESS)
    if scheduler is not None:
        from app.core.io.cluster import connect

        # absolute paths: a worker may run in another directory (the files are on a shared filesystem)
        remote = {**opts, "threads": compute_threads()}
        tasks = [(_absolute(g), [(m.name, _absolute(item)) for m, item in entries], remote) for _, g, entries in groups]
        with connect(scheduler) as session:
            execution = session.execution
            for k, rows, problem in session.run(compare_group, tasks, name="compare", should_cancel=should_cancel):
                _, g, entries = groups[k]
                if problem is not None:  # the worker died, or the task could not run there
                    rows = [{"image": g.name, "model": m.name, "file": str(g.path),
                             "error": f"{g.path}: the task failed on the cluster: {problem}"} for m, _ in entries]
                for row in rows:
                    report(row)
    else:
        n_workers = max(1, int(workers if workers is not None else min(2, os.cpu_count() or 1)))
        ahead = n_workers + 1
        pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="compare-read")
        try:
            queue: deque = deque()
            pending = ((g, [(m.name, item) for m, item in entries]) for _, g, entries in groups)
            for g, entries in itertools.islice(pending, ahead):
                queue.append((entries, pool.submit(load_group, g, entries, opts)))
            while queue:
                if should_cancel is not None and should_cancel():
                    raise CompareCancelled("comparison cancelled by the user")
                entries, future = queue.popleft()
                g, gt_loaded, loaded = future.result()
                nxt = next(pending, None)
                if nxt is not None:
                    queue.append((nxt[1], pool.submit(load_group, *nxt, opts)))
                for row in score_group(g, gt_loaded, loaded, entries, opts):
                    report(row)
                    if should_cancel is not None and should_cancel():
                        raise CompareCancelled("comparison cancelled by the user")
                del gt_loaded, loaded
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    order = {(g.name, m.name): (i, k) for i, g in enumerate(gt_items) for k, m in enumerate(methods)}
    results.sort(key=lambda r: order[(r["image"], r["model"])])
    errors.sort(key=lambda r: order[(r["image"], r["model"])])
    summary = {}
    for m in methods:
        rows = [r for r in results if r["model"] == m.name]
        entry = {}
        for key in METRIC_KEYS:
            values = [r[key] for r in rows if r[key] is not None]
            entry[key] = float(np.mean(values)) if values and len(values) == len(rows) else None
        entry["images"] = len(rows)
        entry["errors"] = sum(1 for e in errors if e["model"] == m.name)
        entry["missing"] = sum(1 for u in unmatched_doc if u["model"] == m.name and u["side"] == "gt")
        summary[m.name] = entry
    counts = {s["images"] for s in summary.values()}
    if len(methods) > 1 and len(counts) > 1:
        notes.append("the methods' means cover different numbers of images (see errors and unmatched)")
    ranges = sorted({r["range"] for r in results})
    if ranges:
        notes.append("prediction value ranges: " + ", ".join(ranges))
    if ignored:
        notes.append(f"{len(ignored)} file(s) or folder(s) that hold no cube were ignored (listed under 'ignored')")
    return stamp({
        "command": "compare",
        "gt": str(gt_side.path),
        "device": dev,
        "scale": scale,
        "methods": [{"name": m.name, "path": str(m.side.path), "items": len(m.side.items)} for m in methods],
        "images": [g.name for g in gt_items],
        "results": results,
        "summary": summary,
        "errors": errors,
        "unmatched": unmatched_doc,
        "ignored": ignored,
        "notes": notes,
        "conventions": CONVENTIONS,
        "seconds": round(time.perf_counter() - started, 3),
        "execution": execution,
        # how the files were read, so that a viewer opens each pair the same way
        "options": {"var": var, "layout": layout, "pred_range": pred_range, "gt_var": gt_var,
                    "gt_layout": gt_layout, "gt_range": gt_range, "nonfinite": nonfinite, "crop": bool(crop),
                    # (only when given: a viewer reading an older document sees the same keys)
                    **({"exclude_bands": [list(r) for r in exclude_ranges]} if exclude_ranges else {}),
                    **({"gt_wavelengths": opts["gt_wavelengths"]} if gt_wavelengths is not None else {})},
    }, "compare", metric_conventions=metric_conventions(),
        arguments={"gt": str(gt), "preds": [str(p) for p in preds], "names": names, "scale": scale,
                   "per_band": bool(per_band), "device": device})


def exit_status(doc: dict) -> int:
    """0 when every GT item was compared with every method; 1 when an entry failed or is missing."""
    missing = any(u["side"] == "gt" for u in doc.get("unmatched", []))
    return 1 if doc.get("errors") or missing else 0


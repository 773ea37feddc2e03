"""Scoring the pairs of one GT item: read it and its matched predictions, then one metrics row (or
one error line) per method. ``compare_group`` is the task a cluster worker runs (imported there by
this module's path), the same code as the single-process loop."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from app.core.cube import bands_in_ranges
from app.core.errors import AmbiguousCubeError
from app.core.evaluation.compare.discovery import Item
from app.core.evaluation.compare.reading import Loaded, fit_size, read_cube
from app.core.io.cluster import threads_as
from app.core.io.provenance import file_fingerprint
from app.core.science.metrics import compute_all

__all__ = ["one_line", "load_group", "score_group", "compare_group"]


def one_line(path: Path, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError):
        text = "does not fit in memory"
    if str(path) not in text:
        text = f"{path}: {text}"
    return text


def _finite_or_none(value):
    return float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else None


def load_group(g: Item, entries: list[tuple[str, Item]], opts: dict) -> tuple[Item, Loaded | str, list]:
    """Read one GT item and its methods' predictions (fitted to it): (g, the GT or its one-line
    problem, [(method, item, prediction, GT view, crop, problem or None)])."""
    try:
        gt_loaded = read_cube(g.path, var=opts["gt_var"], layout=opts["gt_layout"], mode=opts["gt_range"],
                          nonfinite=opts["nonfinite"], wavelengths=opts.get("gt_wavelengths"))
    except Exception as exc:  # noqa: BLE001 - every problem of a file becomes one error line
        text = one_line(g.path, exc)
        if isinstance(exc, AmbiguousCubeError):  # the GT's own flags
            text = text.replace("(choose with --var", "(choose with --gt-var").replace(
                "(choose with --layout", "(choose with --gt-layout")
        return g, text, []
    out = []
    for name, item in entries:
        try:
            pred = read_cube(item.path, gt_shape=gt_loaded.data.shape, ref_mean=gt_loaded.mean,
                         gt_range=gt_loaded.value_range, var=opts["var"], layout=opts["layout"],
                         mode=opts["pred_range"], nonfinite=opts["nonfinite"])
            gt_view, crop_info = fit_size(gt_loaded.data, pred.data, opts["scale"], opts["crop"])
            out.append((name, item, pred, gt_view, crop_info, None))
        except Exception as exc:  # noqa: BLE001
            out.append((name, item, None, None, None, one_line(item.path, exc)))
    return g, gt_loaded, out


def score_group(g: Item, gt_loaded, loaded: list, entries: list[tuple[str, Item]], opts: dict):
    """The rows of one GT item, method by method: a metrics row, or an error row ({"image", "model",
    "file", "error"}) when the GT (every method's entry fails with it) or the prediction failed."""
    if isinstance(gt_loaded, str):
        for name, _ in entries:
            yield {"image": g.name, "model": name, "file": str(g.path), "error": gt_loaded}
        return
    for name, item, pred, gt_view, crop_info, problem in loaded:
        if problem is None:
            try:
                row = _metrics_row(g, name, item, pred, gt_view, gt_loaded, crop_info, opts["scale"], opts["device"],
                                   opts["per_band"], opts["exclude_ranges"])
            except Exception as exc:  # noqa: BLE001
                problem = one_line(item.path, exc)
        if problem is not None:
            row = {"image": g.name, "model": name, "file": str(item.path), "error": problem}
        yield row


def compare_group(g: Item, entries: list[tuple[str, Item]], opts: dict) -> list[dict]:
    """One GT item and its matched predictions, read from their paths and scored: the task a cluster
    worker runs for ``compare(..., scheduler=...)``, the same code as the single-process loop.
    Returns the rows (metrics or error rows) in method order; never raises for a file's problem."""
    with threads_as(opts.get("threads")):
        g, gt_loaded, loaded = load_group(g, entries, opts)
        return list(score_group(g, gt_loaded, loaded, entries, opts))


def _masks(pred: Loaded, gt: Loaded, crop_info: dict | None, exclude_ranges) -> tuple:
    """(no-data pixels of the pair on the compared grid or None, (B,) excluded bands or None)."""
    gt_nd = gt.nodata
    if gt_nd is not None and crop_info is not None:
        (r0, r1), (c0, c1) = crop_info["rows"], crop_info["cols"]
        gt_nd = gt_nd[r0:r1, c0:c1]
    present = [m for m in (gt_nd, pred.nodata) if m is not None]
    nodata = np.logical_or.reduce(present) if present else None
    bands = pred.data.shape[2]
    excl = np.zeros(bands, dtype=bool)
    for bad in (gt.bad_bands, pred.bad_bands):
        if bad is not None and bad.size == bands:
            excl |= bad
    if exclude_ranges:
        wl = gt.wavelengths if gt.wavelengths is not None else pred.wavelengths
        excl |= bands_in_ranges(wl, exclude_ranges, what="the GT (and the prediction)")
    return nodata, (excl if excl.any() else None)


def _metrics_row(g: Item, model: str, item: Item, pred: Loaded, gt_view: np.ndarray, gt: Loaded,
                 crop_info: dict | None, scale: int | None, device: str, per_band: bool,
                 exclude_ranges=()) -> dict:
    nodata, excl = _masks(pred, gt, crop_info, exclude_ranges)
    m = compute_all(gt_view, pred.data, scale=scale, gt_wavelengths_nm=gt.wavelengths,
                    pred_wavelengths_nm=pred.wavelengths, device=device, nodata=nodata, exclude_bands=excl)
    row = {"image": g.name, "model": model, "psnr": m.psnr_db, "ssim": m.ssim, "sam_deg": m.sam_deg,
           "ergas": _finite_or_none(m.ergas) if scale is not None else None, "rmse": m.rmse,
           "gt_path": str(g.path.absolute()), "pred": str(item.path.absolute()), "range": pred.range,
           "range_rule": pred.range_note, "layout": pred.layout,
           "masked_pixels": m.masked_pixels, "excluded_bands": m.excluded_bands,
           # which files these numbers came from: size, mtime and (up to 64 MiB) sha256
           "pred_file": file_fingerprint(item.path), "gt_file": file_fingerprint(g.path)}
    if pred.provenance:  # the prediction's own record (this tool's SR outputs: model, weights sha256, options)
        row["pred_provenance"] = pred.provenance
    notes = list(pred.notes) + [n for n in m.notes if not n.startswith("ERGAS needs")]
    if gt.range != "unit" or gt.notes:
        row["gt_range_rule"] = gt.range_note
    if crop_info is not None:
        row["crop"] = {"rows": crop_info["rows"], "cols": crop_info["cols"]}
        notes.insert(0, crop_info["note"])
    if notes:
        row["notes"] = notes
    if per_band:
        pb = m.per_band
        row["per_band"] = {
            "wavelengths_nm": None if pb.wavelengths_nm is None else [float(v) for v in pb.wavelengths_nm],
            "psnr": [_finite_or_none(float(v)) for v in pb.psnr_db],  # null at excluded bands
            "ssim": [_finite_or_none(float(v)) for v in pb.ssim],
            "rmse": [_finite_or_none(float(v)) for v in pb.rmse],
        }
    return row


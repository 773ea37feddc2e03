"""A comparison document as text: the plain table of the terminal, CSV and Markdown (best value per
column marked), and their atomic writers."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from app.core.io._common import atomic_path
from app.core.science.metric_table import COLUMNS, HIGHER_IS_BETTER, METRICS

__all__ = ["METRIC_KEYS", "format_table", "to_csv", "to_markdown", "write_csv", "write_markdown"]

METRIC_KEYS = COLUMNS
_COLUMNS = tuple((m.column, m.short, m.fmt) for m in METRICS)


def _best(rows: list[dict]) -> dict[str, set[int]]:
    """Indices of the best row per metric (ties share it); empty when fewer than two rows compete."""
    best: dict[str, set[int]] = {}
    for key, _, _ in _COLUMNS:
        values = [(i, r.get(key)) for i, r in enumerate(rows) if r.get(key) is not None and not
                  (isinstance(r.get(key), float) and math.isnan(r[key]))]
        if len(values) < 2:
            best[key] = set()
            continue
        pick = max if HIGHER_IS_BETTER[key] else min
        target = pick(v for _, v in values)
        best[key] = {i for i, v in values if v == target}
    return best


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return fmt.format(v)


def _table_rows(doc: dict) -> list[tuple[str, str, dict | None, str | None, set]]:
    """(image, model, metrics row or None, problem, best keys) for the per-image rows, then the means."""
    by_key = {(r["image"], r["model"]): r for r in doc["results"]}
    errs = {(e["image"], e["model"]): e for e in doc["errors"]}
    missing = {(u["image"], u["model"]) for u in doc["unmatched"] if u["side"] == "gt"}
    models = [m["name"] for m in doc["methods"]]
    out = []
    for image in doc["images"]:
        rows = [by_key.get((image, m)) for m in models]
        present = [r for r in rows if r is not None]
        best = _best(present)
        for model, r in zip(models, rows):
            if r is not None:
                idx = present.index(r)
                out.append((image, model, r, None, {k for k, s in best.items() if idx in s}))
            elif (image, model) in errs:
                out.append((image, model, None, "failed (see errors)", set()))
            elif (image, model) in missing:
                out.append((image, model, None, "no prediction", set()))
    means = [dict(doc["summary"][m], model=m) for m in models]
    # only means over the same images compare: the best is marked among the methods that cover the
    # largest image set
    sets = {m: frozenset(r["image"] for r in doc["results"] if r["model"] == m) for m in models}
    widest = max(sets.values(), key=len, default=frozenset())
    peers = [s for s in means if s["images"] and sets[s["model"]] == widest]
    best = _best(peers)
    for s in means:
        label = f"mean ({s['images']} image{'s' if s['images'] != 1 else ''})"
        if s["images"]:
            marks = {k for k, v in best.items() if s in peers and peers.index(s) in v}
            out.append((label, s["model"], s, None, marks))
        else:
            out.append((label, s["model"], None, "nothing compared", set()))
    return out


def format_table(doc: dict) -> str:
    """Plain-text table: one row per image and method, then the mean per method; * marks the best
    value of each column among the methods (per image and among the means)."""
    rows = _table_rows(doc)
    n_img = len(doc["images"])
    width_img = max([28] + [len(r[0]) + 1 for r in rows])
    width_model = max([10] + [len(r[1]) + 1 for r in rows])
    head = (f"{'image':<{width_img}} {'method':<{width_model}} " + " ".join(f"{t:>9}" for _, t, _ in _COLUMNS)
            + "  range")
    scale = f"x{doc['scale']}" if doc["scale"] else "not given (no ERGAS)"
    lines = [f"GT {doc['gt']} ({n_img} image{'s' if n_img != 1 else ''}); scale {scale}; device {doc['device']}"
             + ("; * = best per column" if len(doc["methods"]) > 1 else ""), head, "-" * len(head)]
    n_images = len(rows) - len(doc["methods"])
    for k, (image, model, r, problem, best) in enumerate(rows):
        if k == n_images:
            lines.append("-" * len(head))
        prefix = f"{image:<{width_img}} {model:<{width_model}} "
        if r is None:
            lines.append(prefix + problem)
            continue
        cells = []
        for key, _, fmt in _COLUMNS:
            text = _cell(r, key, fmt) + ("*" if key in best else " ")
            cells.append(f"{text:>9}")
        lines.append(prefix + " ".join(cells) + (f"  {r['range']}" if "range" in r else "") + _left_out(r))
    for u in doc["unmatched"]:
        if u["side"] == "pred":
            lines.append(f"unmatched ({u['model']}): {u['path']}: {u['reason']}")
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _left_out(row: dict) -> str:
    """'; left out 12 px, 3 bands' when masks removed anything from a row's metrics."""
    px, bands = row.get("masked_pixels") or 0, row.get("excluded_bands") or 0
    if not (px or bands):
        return ""
    return f"; left out {px} no-data px, {bands} band{'s' if bands != 1 else ''}"


def to_csv(doc: dict) -> str:
    """CSV: one line per image and method (errors and missing predictions included), then the means."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "model", *METRIC_KEYS, "range", "layout", "pred", "error", "masked_pixels",
                     "excluded_bands"])
    rows = {(r["image"], r["model"]): r for r in doc["results"]}
    errs = {(e["image"], e["model"]): e for e in doc["errors"]}
    missing = {(u["image"], u["model"]): u for u in doc["unmatched"] if u["side"] == "gt"}
    models = [m["name"] for m in doc["methods"]]

    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))

    for image in doc["images"]:
        for model in models:
            key = (image, model)
            if key in rows:
                r = rows[key]
                writer.writerow([image, model, *(num(r[k]) for k in METRIC_KEYS), r["range"], r["layout"], r["pred"], "",
                                 r.get("masked_pixels", 0), r.get("excluded_bands", 0)])
            elif key in errs:
                writer.writerow([image, model, *([""] * len(METRIC_KEYS)), "", "", errs[key]["file"], errs[key]["error"]])
            elif key in missing:
                writer.writerow([image, model, *([""] * len(METRIC_KEYS)), "", "", "", missing[key]["reason"]])
    for model in models:
        s = doc["summary"][model]
        writer.writerow([f"mean ({s['images']} images)", model, *(num(s[k]) for k in METRIC_KEYS), "", "", "", ""])
    return buf.getvalue()


def to_markdown(doc: dict) -> str:
    """A Markdown table (best per column in bold) with the errors, unmatched items and notes below."""
    titles = {m.column: m.label for m in METRICS}
    lines = [f"GT `{doc['gt']}`, scale {('x' + str(doc['scale'])) if doc['scale'] else 'not given'}, "
             f"device {doc['device']}.", "",
             "| image | method | " + " | ".join(titles[k] for k, _, _ in _COLUMNS) + " | range |",
             "|---|---|" + "---:|" * len(_COLUMNS) + "---|"]
    for image, model, r, problem, best in _table_rows(doc):
        label = f"**{image}**" if image.startswith("mean (") else image
        label = label.replace("|", "\\|")
        if r is None:
            lines.append(f"| {label} | {model} | " + " | ".join([""] * len(_COLUMNS)) + f" | {problem} |")
            continue
        cells = []
        for key, _, fmt in _COLUMNS:
            text = _cell(r, key, fmt)
            cells.append(f"**{text}**" if key in best else text)
        lines.append(f"| {label} | {model} | " + " | ".join(cells) + f" | {r.get('range', '')}{_left_out(r)} |")
    if doc["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e['model']}, {e['image']}: {e['error']}" for e in doc["errors"]]
    unmatched = [u for u in doc["unmatched"]]
    if unmatched:
        lines += ["", "Unmatched:", ""] + [f"- {u['model']} ({'GT' if u['side'] == 'gt' else 'prediction'}) "
                                           f"`{u['path']}`: {u['reason']}" for u in unmatched]
    if doc["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> Path:
    path = Path(path).expanduser()
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_csv(path, doc: dict) -> Path:
    return _write_text(Path(path), to_csv(doc))


def write_markdown(path, doc: dict) -> Path:
    return _write_text(Path(path), to_markdown(doc))

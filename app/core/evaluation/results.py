"""The dataset browser's state, free of Qt: a compare/eval results file as a table you can sort and
colour, the best method per image, the mean per method, and what to open for an image.

Files of every schema version up to this program's (``app.core.io.provenance.SCHEMA_VERSIONS``)
are read: a file without ``schema_version`` is version 1 (no header, no per-row provenance); a newer
one is refused with one line naming the file.

>>> table = load_results("results.json")          # written by `compare --json` or `eval --json`
>>> [e.method for e in table.sorted_entries("sam_deg")][:3]   # best (lowest SAM) first
>>> table.best_methods("beads_ms", "psnr")        # ['mynet'] (ties share it)
>>> request = table.scene_request("beads_ms")     # the GT and every method's prediction file
>>> opened = load_scene(request)                  # read exactly as compare read them

Both files have ``results`` rows ``{"image", "model", "psnr", "ssim", "sam_deg", "ergas", "rmse"}``;
compare's rows also carry the GT and prediction paths and the document the reading options
(``options``, ``scale``), so an image can be opened in the viewer with the same layout, value range
and crop that produced its metrics. ``eval`` keeps no reconstructions: its images cannot be opened.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.science.metric_table import HIGHER_IS_BETTER as _COMPARE_HIGHER
from app.core.science.metric_table import METRICS as _TABLE
from app.core.evaluation.compare import METRIC_KEYS, fit_size, list_items, read_cube  # the very readers compare used
from app.core.cube import Cube
from app.core.errors import HsiError, MissingFileError
from app.core.io.provenance import SchemaError, check_schema

__all__ = ["ResultsError", "Entry", "ResultsTable", "SceneRequest", "OpenedScene", "load_results", "parse_results",
           "load_scene", "METRICS", "METRIC_TITLES", "HIGHER_IS_BETTER", "METRIC_FORMATS"]

METRICS: tuple[str, ...] = tuple(METRIC_KEYS) + ("seconds",)
HIGHER_IS_BETTER: dict[str, bool] = {**_COMPARE_HIGHER, "seconds": False}
METRIC_TITLES: dict[str, str] = {**{m.column: m.label for m in _TABLE}, "seconds": "Time (s)"}
METRIC_FORMATS: dict[str, str] = {**{m.column: m.fmt for m in _TABLE}, "seconds": "{:.2f}"}
OPTION_KEYS = ("var", "layout", "pred_range", "gt_var", "gt_layout", "gt_range", "nonfinite", "crop")
_ROW_PROVENANCE = ("options", "weights", "seed", "steps", "pred_provenance", "pred_file", "gt_file")  # schema 2


class ResultsError(HsiError):
    """A results file cannot be used (not JSON, not compare/eval results) or an image cannot be opened."""


def _number(value) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN and infinite values."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Entry:
    """One image x method row of the long table. ``values`` maps each metric to a float or None."""

    image: str
    method: str
    values: dict
    pred_path: Path | None = None
    gt_path: Path | None = None
    range: str | None = None
    layout: str | None = None
    crop: dict | None = None
    notes: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)  # what made the row (schema 2): options, weights, files

    def value(self, metric: str) -> float | None:
        return self.values.get(metric)

    def provenance_lines(self) -> list[str]:
        """The row's provenance as short 'key: value' lines (empty for version 1 files)."""
        p = self.provenance
        lines = []
        weights = p.get("weights")
        if isinstance(weights, dict) and weights.get("file"):
            lines.append(f"weights: {weights['file']} (sha256 {str(weights.get('sha256'))[:12]}…)")
        if isinstance(p.get("options"), dict) and p["options"]:
            lines.append("options: " + ", ".join(f"{k}={v}" for k, v in p["options"].items()))
        for key in ("steps", "seed"):
            if p.get(key) is not None:
                lines.append(f"{key}: {p[key]}")
        made = p.get("pred_provenance")
        if isinstance(made, dict) and made.get("model"):
            sha = made.get("weights_sha256")
            lines.append(f"prediction made by: {made['model']}" + (f" (weights sha256 {str(sha)[:12]}…)" if sha else "")
                         + (f", options {made['options']}" if made.get("options") else ""))
        pred_file = p.get("pred_file")
        if isinstance(pred_file, dict):
            what = (f"sha256 {str(pred_file['sha256'])[:12]}…" if pred_file.get("sha256")
                    else f"modified {pred_file.get('mtime')}")
            lines.append(f"prediction file: {pred_file.get('bytes')} bytes, {what}")
        return lines


@dataclass(frozen=True)
class SceneRequest:
    """What to read to show one image: the GT file and each method's prediction, and how."""

    image: str
    gt_path: Path
    preds: tuple[tuple[str, Path], ...]
    options: dict
    scale: int | None
    problems: tuple[str, ...] = ()   # methods of this image that have no prediction to open


@dataclass
class OpenedScene:
    """The cubes of one image as compare compared them: ``gt`` (cropped like the predictions when the
    comparison used --crop) and one reconstruction per method, in the table's method order."""

    image: str
    gt: Cube
    recons: list[tuple[str, Cube]]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ResultsTable:
    """A compare or eval results document as images x methods x metrics.

    Attributes:
        source: the JSON file (None when built from a document in memory).
        kind: 'compare' or 'eval'.
        images / methods: display order (the document's).
        entries: one per image and method with metrics (long format, in image then method order).
        problems: (image, method, text) for pairs without metrics (errors, missing predictions,
            skipped models).
        options: how compare read the files (var, layout, pred_range, gt_*, nonfinite, crop).
        scale, device, protocol, notes: from the document.
    """

    source: Path | None
    kind: str
    images: list[str]
    methods: list[str]
    entries: list[Entry]
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    scale: int | None = None
    device: str | None = None
    protocol: str | None = None
    gt_root: str | None = None
    notes: list[str] = field(default_factory=list)
    schema_version: int = 1
    software: dict = field(default_factory=dict)   # who wrote the file ({} for version 1 files)

    def __post_init__(self):
        self._by_key = {(e.image, e.method): e for e in self.entries}
        self._ranges: dict[str, tuple] = {}   # per metric (min, max) over the cells: asked for every cell painted
        self._means: dict | None = None

    # ------------------------------------------------------------------ lookups
    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else f"{self.kind} results"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics with at least one value (ERGAS is absent when compare had no --scale)."""
        return tuple(m for m in METRICS if any(e.values.get(m) is not None for e in self.entries))

    def entry(self, image: str, method: str) -> Entry | None:
        return self._by_key.get((image, method))

    def value(self, image: str, method: str, metric: str) -> float | None:
        e = self._by_key.get((image, method))
        return None if e is None else e.values.get(metric)

    def long_rows(self) -> list[dict]:
        """One dict per entry: {'image', 'method', <metric>: value, ...} (long format)."""
        return [{"image": e.image, "method": e.method, **{m: e.values.get(m) for m in METRICS}} for e in self.entries]

    def pivot(self, metric: str) -> np.ndarray:
        """(n_images, n_methods) float64 values of ``metric``; NaN where a pair has no value."""
        _check_metric(metric)
        out = np.full((len(self.images), len(self.methods)), np.nan)
        for i, image in enumerate(self.images):
            for j, method in enumerate(self.methods):
                v = self.value(image, method, metric)
                if v is not None:
                    out[i, j] = v
        return out

    # ------------------------------------------------------------------ ranking
    def sorted_entries(self, key: str, best_first: bool = True) -> list[Entry]:
        """The entries sorted by a metric (``best_first``: highest PSNR/SSIM, lowest SAM/ERGAS/RMSE/time
        first) or by 'image' / 'method' (alphabetical; ``best_first`` means A to Z). Rows without a
        value always come last; ties keep the image then method order."""
        order = {(e.image, e.method): k for k, e in enumerate(self.entries)}
        if key in ("image", "method"):
            return sorted(self.entries, key=lambda e: (getattr(e, key).lower(), order[(e.image, e.method)]),
                          reverse=not best_first)
        _check_metric(key)
        descending = HIGHER_IS_BETTER[key] == best_first
        valued = [e for e in self.entries if e.values.get(key) is not None]
        missing = [e for e in self.entries if e.values.get(key) is None]
        valued.sort(key=lambda e: order[(e.image, e.method)])
        valued.sort(key=lambda e: e.values[key], reverse=descending)  # stable: ties keep the table order
        return valued + missing

    def best_methods(self, image: str, metric: str) -> list[str]:
        """The method(s) with the best value of ``metric`` for ``image``; empty when fewer than two
        methods have a value (nothing to compare)."""
        _check_metric(metric)
        values = [(m, self.value(image, m, metric)) for m in self.methods]
        values = [(m, v) for m, v in values if v is not None]
        if len(values) < 2:
            return []
        target = (max if HIGHER_IS_BETTER[metric] else min)(v for _, v in values)
        return [m for m, v in values if v == target]

    def is_best(self, image: str, method: str, metric: str) -> bool:
        return method in self.best_methods(image, metric)

    def means(self) -> dict[str, dict]:
        """Per method: {'images': n, <metric>: mean over its images or None}. A metric's mean is None when
        one of the method's images lacks it (a partial mean would not compare)."""
        out = {}
        for method in self.methods:
            rows = [e for e in self.entries if e.method == method]
            entry: dict = {"images": len(rows)}
            for metric in METRICS:
                values = [e.values.get(metric) for e in rows]
                entry[metric] = float(np.mean(values)) if values and all(v is not None for v in values) else None
            out[method] = entry
        return out

    def best_mean_methods(self, metric: str) -> list[str]:
        """The method(s) with the best mean of ``metric``, among the methods that cover the most images
        (means over different image sets do not compare); empty when fewer than two compete."""
        _check_metric(metric)
        if self._means is None:
            self._means = self.means()
        means = self._means
        covered = {m: frozenset(e.image for e in self.entries if e.method == m) for m in self.methods}
        widest = max(covered.values(), key=len, default=frozenset())
        values = [(m, means[m][metric]) for m in self.methods if covered[m] == widest and means[m][metric] is not None]
        if len(values) < 2:
            return []
        target = (max if HIGHER_IS_BETTER[metric] else min)(v for _, v in values)
        return [m for m, v in values if v == target]

    def colour_value(self, metric: str, value: float | None) -> float | None:
        """``value`` placed on the metric's range over all image x method cells: 1.0 for the best cell,
        0.0 for the worst (clipped; means use the same scale); 0.5 when every cell is equal; None
        without a value."""
        _check_metric(metric)
        if value is None:
            return None
        lo, hi = self._range(metric)
        if lo is None:
            return None
        if hi == lo:
            return 0.5
        t = (float(value) - lo) / (hi - lo)
        t = min(1.0, max(0.0, t))
        return t if HIGHER_IS_BETTER[metric] else 1.0 - t

    def colour_scale(self, metric: str) -> np.ndarray:
        """(n_images, n_methods) colour values of :meth:`colour_value` (NaN without a value)."""
        values = self.pivot(metric)
        out = np.full(values.shape, np.nan)
        for idx in zip(*np.nonzero(np.isfinite(values))):
            out[idx] = self.colour_value(metric, float(values[idx]))
        return out

    def _range(self, metric: str) -> tuple[float | None, float | None]:
        if metric not in self._ranges:
            values = [e.values[metric] for e in self.entries if e.values.get(metric) is not None]
            self._ranges[metric] = (float(min(values)), float(max(values))) if values else (None, None)
        return self._ranges[metric]

    # ------------------------------------------------------------------ opening an image
    def can_open(self) -> str | None:
        """None when images can be opened, else why not (one line)."""
        if self.kind == "eval":
            return (f"{self.name}: eval results hold no files to open (eval does not keep its reconstructions); "
                    f"save the predictions and compare them (`python main.py compare`) to open scenes")
        return None

    def scene_request(self, image: str) -> SceneRequest:
        """The GT file and every method's prediction for ``image`` (table method order).

        Raises ResultsError when the image is unknown, the results are eval results, or neither the
        GT nor any prediction file is known or still there."""
        if image not in self.images:
            raise ResultsError(f"{self.name}: no image named '{image}'")
        why = self.can_open()
        if why:
            raise ResultsError(why)
        entries = [e for m in self.methods if (e := self.entry(image, m)) is not None]
        gt_path = next((e.gt_path for e in entries if e.gt_path is not None), None)
        if gt_path is None and self.gt_root:
            gt_path = self._gt_from_root(image)
        if gt_path is None:
            raise ResultsError(f"{self.name}: the results do not say where the GT of '{image}' is")
        gt_path = self._existing(gt_path, f"the GT of '{image}'")
        preds, problems = [], []
        for method in self.methods:
            e = self.entry(image, method)
            if e is None:
                text = next((t for i, m, t in self.problems if i == image and m == method), "no result")
                problems.append(f"{method}: {text}")
            elif e.pred_path is None:
                problems.append(f"{method}: the results do not say which file was compared")
            else:
                try:
                    preds.append((method, self._existing(e.pred_path, f"the prediction of {method} for '{image}'")))
                except ResultsError as exc:
                    problems.append(str(exc))
        if not preds:
            raise ResultsError(f"{self.name}: no prediction of '{image}' can be opened: " + "; ".join(problems))
        return SceneRequest(image, gt_path, tuple(preds), dict(self.options), self.scale, tuple(problems))

    def _gt_from_root(self, image: str) -> Path | None:
        """Older compare results without per-row GT paths: find the item in the GT folder by name."""
        try:
            side = list_items(self._resolve(Path(self.gt_root)))
        except HsiError:
            return None
        return next((item.path for item in side.items if item.name == image), None)

    def _resolve(self, path: Path) -> Path:
        """A path as written, or relative to the results file when it does not exist as written."""
        path = Path(path).expanduser()
        if not path.exists() and not path.is_absolute() and self.source is not None:
            beside = self.source.parent / path
            if beside.exists():
                return beside
        return path

    def _existing(self, path: Path, what: str) -> Path:
        resolved = self._resolve(path)
        if not resolved.exists():
            raise ResultsError(f"{resolved}: {what} is no longer there (the results file {self.name} names it)")
        return resolved


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


# ---------------------------------------------------------------------------------- reading
def load_results(path) -> ResultsTable:
    """Read a compare or eval JSON file. Raises MissingFileError / ResultsError naming the file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(path, "no such results file")
    if path.is_dir():
        raise ResultsError(f"{path}: is a folder, not a compare/eval results JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a JSON file (it is not UTF-8 text)") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_results(doc, source=path)


def parse_results(doc, source: Path | None = None) -> ResultsTable:
    """A results document (a dict as written by compare or eval) as a :class:`ResultsTable`."""
    where = f"{source}: " if source is not None else ""
    foreign = (f"{where}not compare/eval results: expected a JSON object with a 'results' list of "
               f"{{\"image\", \"model\", \"psnr\", ...}} rows")
    version = 1
    if isinstance(doc, dict):  # the version first: a newer file may have another shape
        declared_kind = doc.get("kind")
        if declared_kind is not None and declared_kind not in ("compare", "eval"):
            raise ResultsError(f"{where}a {str(declared_kind)[:40]!r} document, not compare/eval results")
        try:
            version = check_schema(doc, declared_kind or ("compare" if doc.get("command") == "compare" else "eval"),
                                   str(source) if source is not None else "")
        except SchemaError as exc:
            raise ResultsError(str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ResultsError(foreign)
    rows = doc["results"]
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("model"), str):
            raise ResultsError(f"{foreign} (row {k + 1} has no 'image' and 'model' names)")
    kind = doc.get("kind") or ("compare" if doc.get("command") == "compare" else "eval")

    images = _names(doc.get("images"), [r["image"] for r in rows])
    method_list = doc.get("methods")
    declared = [m.get("name") for m in method_list if isinstance(m, dict)] if isinstance(method_list, list) else None
    methods = _names(declared, [r["model"] for r in rows])
    entries, problems = [], []
    for row in rows:
        if row.get("skipped"):
            problems.append((row["image"], row["model"], f"skipped: {row['skipped']}"))
            continue
        values = {m: _number(row.get(m)) for m in METRICS}
        if all(v is None for v in values.values()):
            problems.append((row["image"], row["model"], str(row.get("error") or "no metrics")))
            continue
        notes = row.get("notes")
        entries.append(Entry(
            image=row["image"], method=row["model"], values=values,
            pred_path=Path(row["pred"]) if isinstance(row.get("pred"), str) else None,
            gt_path=Path(row["gt_path"]) if isinstance(row.get("gt_path"), str) else None,
            range=row.get("range") if isinstance(row.get("range"), str) else None,
            layout=row.get("layout") if isinstance(row.get("layout"), str) else None,
            crop=row.get("crop") if isinstance(row.get("crop"), dict) else None,
            notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
            provenance={k: row[k] for k in _ROW_PROVENANCE if row.get(k) is not None}))
    if rows and not entries and not problems:
        raise ResultsError(foreign)
    seen = set()
    for e in entries:
        if (e.image, e.method) in seen:
            raise ResultsError(f"{where}image '{e.image}' has two results for method '{e.method}'")
        seen.add((e.image, e.method))
    for err in doc.get("errors") or []:
        if isinstance(err, dict) and isinstance(err.get("image"), str) and isinstance(err.get("model"), str):
            problems.append((err["image"], err["model"], str(err.get("error", "failed"))))
    for u in doc.get("unmatched") or []:
        if isinstance(u, dict) and u.get("side") == "gt" and isinstance(u.get("image"), str):
            problems.append((u["image"], str(u.get("model")), "no prediction"))
    # images/methods that only failed still get their place in the table's order
    images = _names(images, [i for i, _, _ in problems])
    methods = _names(methods, [m for _, m, _ in problems])
    raw_options = doc.get("options") if isinstance(doc.get("options"), dict) else {}
    options = {k: raw_options.get(k) for k in OPTION_KEYS}
    options["pred_range"] = options["pred_range"] or "auto"
    options["gt_range"] = options["gt_range"] or "auto"
    options["nonfinite"] = options["nonfinite"] or "error"
    options["crop"] = bool(options["crop"]) or any(e.crop for e in entries)
    scale = doc.get("scale")
    scale = int(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 1 else None
    notes = [str(n) for n in doc.get("notes") or [] if isinstance(n, str)]
    return ResultsTable(source=Path(source) if source is not None else None, kind=kind, images=images,
                        methods=methods, entries=entries, problems=problems, options=options, scale=scale,
                        device=doc.get("device") if isinstance(doc.get("device"), str) else None,
                        protocol=doc.get("protocol") if isinstance(doc.get("protocol"), str) else None,
                        gt_root=doc.get("gt") if isinstance(doc.get("gt"), str) else None, notes=notes,
                        schema_version=version,
                        software=doc["software"] if isinstance(doc.get("software"), dict) else {})


def _names(declared, found) -> list[str]:
    """Declared names first (when the document lists them), then any others in order of appearance."""
    out: list[str] = []
    for name in list(declared or []) + list(found):
        if isinstance(name, str) and name not in out:
            out.append(name)
    return out


# ---------------------------------------------------------------------------------- opening
def load_scene(request: SceneRequest) -> OpenedScene:
    """Read the GT and the predictions of one image with compare's own readers and options: the same
    axis order (fitted to the GT), value range and crop as the metrics. A prediction that cannot be
    read becomes a line of ``problems``; the GT failing raises (there is nothing to show)."""
    opts = request.options
    gt = read_cube(request.gt_path, var=opts.get("gt_var"), layout=opts.get("gt_layout"),
                   mode=opts.get("gt_range") or "auto", nonfinite=opts.get("nonfinite") or "error")
    problems = list(request.problems)
    notes: list[str] = []
    recons: list[tuple[str, Cube]] = []
    chosen_crop = None
    gt_view = gt.data
    for method, path in request.preds:
        try:
            pred = read_cube(path, gt_shape=gt.data.shape, ref_mean=gt.mean, gt_range=gt.value_range,
                             var=opts.get("var"), layout=opts.get("layout"), mode=opts.get("pred_range") or "auto",
                             nonfinite=opts.get("nonfinite") or "error")
            view, crop = fit_size(gt.data, pred.data, request.scale, bool(opts.get("crop")))
        except HsiError as exc:
            problems.append(f"{method}: {exc}")
            continue
        region = None if crop is None else (tuple(crop["rows"]), tuple(crop["cols"]))
        if recons and region != chosen_crop:
            problems.append(f"{method}: {path} covers a different part of the GT than {recons[0][0]}; not shown")
            continue
        if not recons:
            chosen_crop, gt_view = region, view
            if crop is not None:
                notes.append(crop["note"])
        cube = Cube.from_array(pred.data, pred.wavelengths if pred.wavelengths is not None else gt.wavelengths,
                               name=method, source_path=path, normalisation=pred.range_note,
                               metadata={"compare": {"range": pred.range, "layout": pred.layout,
                                                     "notes": list(pred.notes)}})
        recons.append((method, cube))
    if not recons:
        raise ResultsError(f"no prediction of '{request.image}' could be read: " + "; ".join(problems))
    gt_cube = Cube.from_array(gt_view, gt.wavelengths, name=request.image, source_path=request.gt_path,
                              normalisation=gt.range_note, metadata={"compare": {"crop": chosen_crop}})
    return OpenedScene(request.image, gt_cube, recons, problems, notes)

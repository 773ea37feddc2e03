"""Data export, free of Qt: spectra (pixel, pins, ROI) and metrics tables as CSV / Markdown,
per-band metric curves as CSV, and cubes with their wavelengths and provenance.

The spectra written are those the spectra plot shows: :func:`collect_spectra` is the one place
that gathers them, and both :func:`write_spectra_csv` and :func:`app.core.export.figure.spectra_figure`
use it, so a CSV value equals the plotted value. Every write is atomic (:mod:`app.core.io.atomic`)
and fails with a :class:`app.core.io.atomic.WriteError` naming the file.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from app import DISTRIBUTION, __version__
from app.core.io.jsonio import jsonable
from app.core.io.atomic import WriteError, write_errors, write_text
from app.core.cube import Cube
from app.core.errors import HsiError

if TYPE_CHECKING:  # pragma: no cover
    from app.core.evaluation.analysis import AnalysisResult
    from app.core.state.scene import Scene

APP_NAME = DISTRIBUTION
APP_VERSION = __version__


# ---------------------------------------------------------------------------------- provenance
def layer_provenance(cube: Cube) -> dict[str, Any]:
    """The provenance of a cube: the computed reconstruction's ``metadata['provenance']``
    (model, weights sha256, protocol, scale, seed, device, time...), or the file it came from."""
    prov = (cube.metadata or {}).get("provenance")
    out: dict[str, Any] = dict(prov) if isinstance(prov, dict) else {}
    if cube.source_path is not None:
        out.setdefault("source_file", str(cube.source_path))
    return out


def export_provenance(layers: Iterable[Any] = (), **extra: Any) -> dict[str, Any]:
    """What an exported figure or table records: the program, the time and, per layer
    (``Layer`` objects), its role, name and provenance."""
    record: dict[str, Any] = {
        "software": f"{APP_NAME} {APP_VERSION}",
        "exported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }
    entries = []
    for layer in layers:
        entries.append({"role": layer.role, "name": layer.name, "shape": list(layer.cube.shape),
                        "provenance": layer_provenance(layer.cube)})
    if entries:
        record["layers"] = entries
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


# ---------------------------------------------------------------------------------- spectra
@dataclass
class SpectrumCurve:
    """One curve of the spectra plot: ``x`` (nm, or band index when ``known`` is False), ``y``,
    ``std`` (ROI curves only), ``source`` (layer label), ``where`` ('r 3, c 5' or 'ROI ...'),
    ``kind`` ('pixel', 'pin' or 'roi') and ``role``."""

    source: str
    where: str
    kind: str
    role: str
    x: np.ndarray
    y: np.ndarray
    std: np.ndarray | None = None
    known: bool = True
    nominal: bool = False
    name: str = ""                          # the layer's name (``source`` is its label)
    pin: int | None = None                  # 1-based number of the pinned pixel (kind 'pin')
    pixel: tuple[int, int] | None = None    # the layer's own (row, col) (kinds 'pixel' and 'pin')

    @property
    def label(self) -> str:
        note = ", nominal λ" if self.nominal else ""
        return f"{self.source} ({self.where}{note})"


def collect_spectra(scene: "Scene", *, pixel: bool = True, pins: bool = True, roi: bool = True,
                    residuals: bool = False) -> list[SpectrumCurve]:
    """The curves the spectra plot shows: every layer at the clicked pixel, at each pinned
    pixel, and the ROI mean ± std (when the scene has a ROI). Pixels are each layer's own
    (row, col) (an LR layer gives the pixel whose footprint covers the HR pixel).

    ``residuals``: also the plot's right-axis curves, reconstruction − GT (kind 'residual') of
    every reconstruction comparable with the GT, at the clicked pixel (or of the ROI means when
    there is a ROI and no clicked pixel), as :func:`app.core.evaluation.analysis.residual_spectra` gives them."""
    curves: list[SpectrumCurve] = []
    points: list[tuple[str, int | None, tuple[int, int]]] = []
    if pixel and scene.pixel is not None:
        points.append(("pixel", None, scene.pixel))
    if pins:
        points.extend(("pin", i + 1, p) for i, p in enumerate(scene.pins) if p != scene.pixel or not pixel)
    for kind, pin, (r, c) in points:
        for s in scene.spectra_at(r, c):
            curves.append(SpectrumCurve(s.layer.label, f"r {s.pixel[0]}, c {s.pixel[1]}", kind, s.layer.role,
                                        np.asarray(s.wavelengths_nm, dtype=np.float64),
                                        np.asarray(s.values, dtype=np.float64), None, s.wavelengths_known, s.nominal,
                                        s.layer.name, pin, tuple(s.pixel)))
    if roi and getattr(scene, "roi", None) is not None:
        from app.core.evaluation.analysis import roi_spectra

        for s in roi_spectra(scene):
            curves.append(SpectrumCurve(s.layer.label, f"ROI mean, {s.n} px", "roi", s.layer.role,
                                        np.asarray(s.wavelengths_nm, dtype=np.float64),
                                        np.asarray(s.mean, dtype=np.float64), np.asarray(s.std, dtype=np.float64),
                                        s.wavelengths_known, name=s.layer.name))
    if residuals:
        from app.core.evaluation.analysis import residual_spectra

        found = []
        if pixel and scene.pixel is not None:
            found = residual_spectra(scene)
        elif roi and getattr(scene, "roi", None) is not None:
            found = residual_spectra(scene, roi=scene.roi)
        gts = scene.layers_with_role("gt")
        known = bool(gts) and scene.layer_wavelengths(gts[0])[1]
        for r in found:
            curves.append(SpectrumCurve(f"{r.layer.label} − ref", r.where, "residual", r.layer.role,
                                        np.asarray(r.wavelengths_nm, dtype=np.float64),
                                        np.asarray(r.values, dtype=np.float64), None, known, name=r.layer.name))
    return curves


def _fmt(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def spectra_table(curves: Sequence[SpectrumCurve]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): a wavelength column (the union of every curve's x, sorted) and one column
    per curve (plus one for the std of ROI curves); empty cells where a source has no band."""
    if not curves:
        raise HsiError("no spectra to export: click a pixel (Shift+click pins more) or draw a ROI first")
    known = all(c.known for c in curves)
    xs = np.unique(np.concatenate([c.x for c in curves]))
    header = ["wavelength_nm" if known else "band"]
    columns: list[dict[float, float]] = []
    for c in curves:
        header.append(c.label)
        columns.append(dict(zip(c.x.tolist(), c.y.tolist())))
        if c.std is not None:
            header.append(f"{c.source} (ROI std)")
            columns.append(dict(zip(c.x.tolist(), c.std.tolist())))
    rows = []
    for x in xs.tolist():
        rows.append([_fmt(x)] + [_fmt(col[x]) if x in col else "" for col in columns])
    return header, rows


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], comments: Sequence[str] = ()) -> str:
    buf = io.StringIO()
    for line in comments:
        buf.write(f"# {line}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_spectra_csv(scene: "Scene", path: str | Path, curves: Sequence[SpectrumCurve] | None = None) -> Path:
    """Spectra at the clicked pixel, the pinned pixels and the ROI, and the residuals
    (reconstruction − GT), as CSV (values as plotted, written with full float precision). Lines
    starting with '#' say where they come from."""
    curves = list(curves) if curves is not None else collect_spectra(scene, residuals=True)
    header, rows = spectra_table(curves)
    comments = [f"spectra exported by {APP_NAME} {APP_VERSION} on "
                f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
                "columns: source (role · name) and the pixel (row, col) in that source's own grid; "
                "'− ref' columns: reconstruction minus the GT (residual)"]
    return write_text(path, _csv_text(header, rows, comments))


# ---------------------------------------------------------------------------------- metrics
def metrics_rows(result: "AnalysisResult") -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the metrics table: method then PSNR, SSIM, SAM, ERGAS, RMSE."""
    from app.core.evaluation.analysis import METRIC_COLUMNS

    header = ["method"] + [title for _, title, _ in METRIC_COLUMNS]
    rows = [[row["name"]] + [row[key] for key, _, _ in METRIC_COLUMNS] for row in result.table()]
    return header, rows


def _scope_line(result: "AnalysisResult") -> str:
    ref = result.request.reference
    return f"reference: {ref.label}; scope: {result.scope_note}"


def write_metrics_csv(result: "AnalysisResult", path: str | Path) -> Path:
    header, rows = metrics_rows(result)
    body = [[r[0]] + [_fmt(v) for v in r[1:]] for r in rows]
    return write_text(path, _csv_text(header, body, [_scope_line(result)]))


def metrics_markdown(result: "AnalysisResult", digits: int = 4) -> str:
    """The metrics table as a Markdown table (best value per column in bold)."""
    from app.core.evaluation.analysis import METRIC_COLUMNS

    header, rows = metrics_rows(result)
    best: dict[int, float] = {}
    for j, (_, _, higher) in enumerate(METRIC_COLUMNS, start=1):
        vals = [r[j] for r in rows if math.isfinite(r[j])]
        if vals and len(rows) > 1:
            best[j] = max(vals) if higher else min(vals)
    lines = [f"<!-- {_scope_line(result)} -->", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        cells = [str(r[0]).replace("|", "\\|")]
        for j, v in enumerate(r[1:], start=1):
            text = "n/a" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits - 2, 2)}f}"
            cells.append(f"**{text}**" if best.get(j) == v else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_metrics_markdown(result: "AnalysisResult", path: str | Path) -> Path:
    return write_text(path, metrics_markdown(result))


def write_metrics(result: "AnalysisResult", path: str | Path) -> Path:
    """CSV or Markdown by the extension (.csv, .md)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return write_metrics_csv(result, path)
    if suffix in (".md", ".markdown"):
        return write_metrics_markdown(result, path)
    raise WriteError(path, "choose a .csv or .md file for the metrics table")


PER_BAND_METRICS: tuple[str, ...] = ("psnr_db", "rmse", "ssim")


def per_band_rows(result: "AnalysisResult", metrics: Sequence[str] = PER_BAND_METRICS) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): band, wavelength_nm, then '<method> <metric>' per method and metric."""
    if not result.methods:
        raise HsiError("no per-band metrics to export: run the analysis first (Ctrl+M)")
    ref = result.request.reference
    wl = ref.cube.wavelengths_nm
    n = len(result.methods[0].per_band(metrics[0]))
    header = ["band", "wavelength_nm"] + [f"{m.name} {k}" for m in result.methods for k in metrics]
    curves = [m.per_band(k) for m in result.methods for k in metrics]
    rows = [[b, "" if wl is None else float(wl[b])] + [float(c[b]) for c in curves] for b in range(n)]
    return header, rows


def write_per_band_csv(result: "AnalysisResult", path: str | Path, metrics: Sequence[str] = PER_BAND_METRICS) -> Path:
    header, rows = per_band_rows(result, metrics)
    body = [[r[0], r[1] if r[1] == "" else _fmt(r[1])] + [_fmt(v) for v in r[2:]] for r in rows]
    return write_text(path, _csv_text(header, body, [_scope_line(result) + " (per-band curves: whole image)"]))


# ---------------------------------------------------------------------------------- cubes
CUBE_EXTENSIONS: tuple[str, ...] = (".hdr", ".mat", ".npy", ".tif", ".tiff", ".npz", ".h5")


def export_cube(cube: Cube, path: str | Path, *, extra: dict | None = None, **options) -> Path:
    """Write ``cube`` (format from the extension: ENVI .hdr, .mat, .npy (+ .json sidecar), TIFF,
    ...) with its wavelengths and its provenance (plus ``extra``, e.g. the export time) in the
    file's metadata. Raises WriteError naming the file on a read-only folder or a full disk."""
    from app.core.io import output_format, save_cube

    path = Path(path).expanduser()
    output_format(path)  # a wrong extension fails before anything is written
    prov = layer_provenance(cube)
    prov["exported_by"] = f"{APP_NAME} {APP_VERSION}"
    prov.update(extra or {})
    data = cube.data
    out = Cube.from_array(data, cube.wavelengths_nm, name=cube.name, check_finite=False,
                          fwhm_nm=cube.fwhm_nm, bad_bands=cube.bad_bands,
                          metadata={"provenance": jsonable(prov),
                                    **({"georef": cube.metadata["georef"]} if cube.metadata.get("georef") else {})})
    with write_errors(path):
        return save_cube(out, path, **options)

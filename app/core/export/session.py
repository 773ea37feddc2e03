"""Sessions: save and restore the viewer's state as a versioned JSON file (no Qt).

A session records every layer (its file, role, name and how it was opened: variable, layout,
normalisation), the display (mode, band, RGB wavelengths, contrast percentiles, shared contrast,
colormap, zoom), the clicked and pinned pixels, the ROI and analysis settings, an opaque
``layout`` dict from the GUI (window geometry, dock state), and the provenance of every computed
reconstruction (model, weights sha256, protocol, scale, seed, device, time).

Layers computed in the app exist only in memory; :func:`save_session` writes them (with
``write_computed=True``) as .npy + .json sidecar beside the session (``<session>_data/``), so the
session restores them with their provenance. Restoring looks for each file at its recorded
absolute path, then at its path relative to the session file, then asks ``locate(missing_path)``
(the GUI shows a file dialog; tests pass a function), which returns the new path or None to skip.

Schema (version 1)::

    {"format": "hsi-sr-viewer session", "version": 1, "saved_utc": "...", "software": "...",
     "layers": [{"role", "name", "path", "relative", "kind": "file"|"computed"|"memory",
                 "open_options": {...}, "size_bytes", "shape", "provenance": {...}}],
     "display": {"mode", "band", "band_nm", "rgb_nm", "percentiles", "shared_contrast",
                 "colormap", "view_range"},
     "selection": {"pixel", "pins", "roi"}, "analysis": {...}, "layout": {...},
     "compare": {"mode": "swipe"|"flicker", "a", "b", "divider_x"},
     "method_colours": {"<method name>": "#rrggbb"}}

``compare`` is the A/B comparison (optional; older sessions have none): ``a`` and ``b`` are
indices into ``layers`` (or null), ``divider_x`` the swipe divider in HR pixels.
``method_colours`` (optional) keeps each reconstruction's colour in plots and figures by name.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from app.core.io.atomic import write_text
from app.core.errors import HsiError
from app.core.export.data import APP_NAME, APP_VERSION, jsonable, layer_provenance
from app.core.io.jsonio import dumps

if TYPE_CHECKING:  # pragma: no cover
    from app.core.cube import Cube
    from app.core.state.scene import Layer, Scene
    from app.core.state.selection import ABChoice

SESSION_FORMAT = "hsi-sr-viewer session"
SESSION_VERSION = 1
SESSION_SUFFIX = ".hsisession.json"
# (wavelengths: a side file of band centres attached to the file, File > Attach wavelengths)
OPEN_OPTION_KEYS = ("var", "layout", "hw", "normalise", "nonfinite", "wavelengths")

Locate = Callable[[Path], "str | Path | None"]


class SessionError(HsiError):
    """A session file cannot be read, is not a session, or is damaged; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class SaveReport:
    path: Path
    written: list[Path] = field(default_factory=list)   # computed layers written beside the session
    memory_only: list[str] = field(default_factory=list)  # layers not restorable (not written)


@dataclass
class RestoreReport:
    layers: list["Layer"] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # layers whose file was not found or failed
    notes: list[str] = field(default_factory=list)
    layout: dict = field(default_factory=dict)
    # the A/B comparison: {"mode", "a_uid", "b_uid", "divider_x"} with the uids of the restored
    # layers (None for a layer not restored), or None when the session has none
    compare: dict | None = None


# ---------------------------------------------------------------------------------- saving
def open_options_of(cube: "Cube") -> dict:
    """How a file was opened (the options the user chose), recorded by the viewer in
    ``cube.metadata['open_options']`` when it loads a file; else the variable the reader picked."""
    meta = cube.metadata or {}
    given = meta.get("open_options")
    if isinstance(given, dict):
        return {k: jsonable(v) for k, v in given.items() if k in OPEN_OPTION_KEYS and v is not None}
    if meta.get("variable") and meta.get("format") in ("mat-v5", "mat-v7.3", "hdf5", "npz"):
        return {"var": str(meta["variable"])}
    return {}


def memory_layers(scene: "Scene") -> list["Layer"]:
    """Layers that exist only in memory (computed or simulated): a session restores them only
    when :func:`save_session` writes them (``write_computed=True``)."""
    return [layer for layer in scene.layers if layer.cube.source_path is None]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def _data_dir(session_path: Path) -> Path:
    stem = session_path.name
    for suffix in (SESSION_SUFFIX, ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return session_path.with_name(stem + "_data")


def _compare_entry(scene: "Scene", compare: "ABChoice | None") -> dict | None:
    """The A/B comparison {"mode", "a", "b", "divider_x"} with the layers as indices."""
    if compare is None:
        return None
    index = {layer.uid: i for i, layer in enumerate(scene.layers)}
    divider = compare.divider_x
    return {"mode": str(compare.mode), "a": index.get(compare.a_uid), "b": index.get(compare.b_uid),
            "divider_x": None if divider is None else float(divider)}


def capture(scene: "Scene", *, layout: dict | None = None, session_dir: str | Path | None = None,
            written: dict[int, Path] | None = None, compare: "ABChoice | None" = None) -> dict:
    """The session dict of ``scene`` (see the module docstring). ``written`` maps the uid of an
    in-memory layer to the file it was saved to; ``compare`` is the A/B comparison to record
    (the GUI passes ``scene.ab``; None records none)."""
    written = written or {}
    base = Path(session_dir).resolve() if session_dir is not None else None
    layers = []
    for layer in scene.layers:
        cube = layer.cube
        path = written.get(layer.uid) or cube.source_path
        kind = "computed" if layer.uid in written else ("file" if cube.source_path is not None else "memory")
        entry: dict[str, Any] = {"role": layer.role, "name": layer.name, "kind": kind,
                                 "shape": list(cube.shape), "provenance": jsonable(layer_provenance(cube)),
                                 "open_options": open_options_of(cube) if kind == "file" else {}}
        if path is not None:
            path = Path(path).resolve()
            entry["path"] = str(path)
            if base is not None:
                try:
                    entry["relative"] = os.path.relpath(path, base)
                except ValueError:  # another drive on Windows
                    entry["relative"] = None
            if path.is_file():
                entry["size_bytes"] = path.stat().st_size
        else:
            entry["path"] = None
        layers.append(entry)
    roi = getattr(scene, "roi", None)
    settings = getattr(scene, "analysis_settings", None)
    return {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "saved_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "software": f"{APP_NAME} {APP_VERSION}",
        "layers": layers,
        "display": {
            "mode": scene.mode.value,
            "band": scene.band,
            "band_nm": scene.band_wavelength(),
            "rgb_nm": list(scene.rgb_nm),
            "percentiles": list(scene.percentiles),
            "shared_contrast": scene.shared_contrast,
            "colormap": scene.colormap,
            "view_range": None if scene.view_range is None else [list(r) for r in scene.view_range],
        },
        "selection": {
            "pixel": None if scene.pixel is None else list(scene.pixel),
            "pins": [list(p) for p in scene.pins],
            "roi": None if roi is None else roi.to_dict(),
        },
        "analysis": None if settings is None else settings.to_dict(),
        "layout": jsonable(layout or {}),
        "compare": _compare_entry(scene, compare),
        "method_colours": dict(getattr(scene, "method_colours", {}) or {}),
    }


def save_session(scene: "Scene", path: str | Path, *, layout: dict | None = None, write_computed: bool = True,
                 progress: Callable[[float, str], None] | None = None,
                 compare: "ABChoice | None" = None) -> SaveReport:
    """Write the session of ``scene`` to ``path`` (atomically). With ``write_computed``, layers
    that exist only in memory are first written to ``<session>_data/<name>.npy`` (+ .json sidecar
    with wavelengths and provenance) so that the session restores them."""
    from app.core.export.data import export_cube

    path = Path(path).expanduser().absolute()
    report = SaveReport(path)
    written: dict[int, Path] = {}
    todo = memory_layers(scene)
    if todo and write_computed:
        folder = _data_dir(path)
        used: set[str] = set()
        for i, layer in enumerate(todo):
            if progress:
                progress(i / (len(todo) + 1), f"Writing {layer.name}")
            stem = _safe_name(f"{layer.role}_{layer.name}")
            while stem in used:
                stem += "_"
            used.add(stem)
            target = folder / f"{stem}.npy"
            export_cube(layer.cube, target)
            written[layer.uid] = target
            report.written.append(target)
    elif todo:
        report.memory_only = [layer.label for layer in todo]
    if progress:
        progress(len(todo) / (len(todo) + 1), "Writing the session file")
    data = capture(scene, layout=layout, session_dir=path.parent, written=written, compare=compare)
    write_text(path, dumps(data, indent=2, ensure_ascii=False) + "\n")
    if progress:
        progress(1.0, "Session saved")
    return report


# ---------------------------------------------------------------------------------- reading
def _need(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise SessionError(path, f"is a damaged session file: {problem}")


def _pair(value, path: Path, what: str, *, allow_none: bool = True):
    if value is None and allow_none:
        return None
    _need(isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value), path,
          f"{what} must be a pair of numbers, got {value!r}")
    return value


def load_session(path: str | Path) -> dict:
    """Read and check a session file. Raises SessionError naming the file when it is missing,
    not JSON, not a session of this program, from a newer version or damaged."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SessionError(path, "no such session file") from None
    except UnicodeDecodeError:
        raise SessionError(path, "is not a session file (it is not UTF-8 text)") from None
    except OSError as exc:
        raise SessionError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SessionError(path, f"is not a valid session file (JSON error: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
        raise SessionError(path, f"is not a session file of {APP_NAME} (no \"format\": \"{SESSION_FORMAT}\" field)")
    version = data.get("version")
    _need(isinstance(version, int), path, "the version is missing")
    if version > SESSION_VERSION:
        raise SessionError(path, f"was written by a newer version of {APP_NAME} (session version {version}; "
                                 f"this program reads up to {SESSION_VERSION}); update the program")
    layers = data.get("layers")
    _need(isinstance(layers, list), path, "\"layers\" must be a list")
    for i, entry in enumerate(layers):
        _need(isinstance(entry, dict), path, f"layer {i + 1} is not an object")
        _need(entry.get("role") in ("gt", "lr", "guide", "recon"), path,
              f"layer {i + 1} has an unknown role {entry.get('role')!r}")
        _need(isinstance(entry.get("name"), str), path, f"layer {i + 1} has no name")
        _need(entry.get("path") is None or isinstance(entry.get("path"), str), path, f"layer {i + 1}: bad path")
        _need(isinstance(entry.get("open_options", {}), dict), path, f"layer {i + 1}: bad open options")
    display = data.get("display", {})
    _need(isinstance(display, dict), path, "\"display\" must be an object")
    _pair(display.get("percentiles"), path, "the contrast percentiles")
    view = display.get("view_range")
    if view is not None:
        _need(isinstance(view, list) and len(view) == 2, path, "the view range must be [[x0, x1], [y0, y1]]")
        _pair(view[0], path, "the view's x range", allow_none=False)
        _pair(view[1], path, "the view's y range", allow_none=False)
    selection = data.get("selection", {})
    _need(isinstance(selection, dict), path, "\"selection\" must be an object")
    _pair(selection.get("pixel"), path, "the pixel")
    pins = selection.get("pins", [])
    _need(isinstance(pins, list), path, "the pins must be a list")
    for pin in pins:
        _pair(pin, path, "a pin", allow_none=False)
    _need(isinstance(data.get("layout", {}), dict), path, "\"layout\" must be an object")
    colours = data.get("method_colours")
    if colours is not None:
        _need(isinstance(colours, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                and re.fullmatch(r"#[0-9a-fA-F]{6}", v) for k, v in colours.items()),
              path, "\"method_colours\" must map method names to '#rrggbb' colours")
    compare = data.get("compare")
    if compare is not None:
        _need(isinstance(compare, dict), path, "\"compare\" must be an object")
        _need(compare.get("mode") in ("swipe", "flicker"), path,
              f"the A/B mode must be 'swipe' or 'flicker', got {compare.get('mode')!r}")
        for key in ("a", "b"):
            value = compare.get(key)
            _need(value is None or (isinstance(value, int) and not isinstance(value, bool)
                                    and 0 <= value < len(layers)), path,
                  f"A/B layer {key!r} must be the index of a layer (0 to {len(layers) - 1}), got {value!r}")
        divider = compare.get("divider_x")
        _need(divider is None or (isinstance(divider, (int, float)) and not isinstance(divider, bool)), path,
              f"the A/B divider must be a number, got {divider!r}")
    return data


def _find_file(entry: dict, session_dir: Path, locate: Locate | None, report: RestoreReport) -> Path | None:
    recorded = Path(entry["path"])
    if recorded.exists():
        return recorded
    rel = entry.get("relative")
    if rel:
        candidate = (session_dir / rel)
        if candidate.exists():
            report.notes.append(f"{entry['name']}: found at {candidate} (next to the session)")
            return candidate
    if locate is not None:
        answer = locate(recorded)
        if answer:
            found = Path(answer).expanduser()
            if found.exists():
                report.notes.append(f"{entry['name']}: {recorded} moved to {found}")
                return found
            report.skipped.append(f"{entry['name']}: {found} does not exist either")
            return None
    report.skipped.append(f"{entry['name']}: {recorded} not found (moved or deleted)")
    return None


def restore_session(path: str | Path, scene: "Scene", *, locate: Locate | None = None,
                    open_fn: Callable[..., "Cube"] | None = None,
                    progress: Callable[[float, str], None] | None = None) -> RestoreReport:
    """Replace the scene's content by the session in ``path``. Files that moved go through
    ``locate``; a layer that cannot be found or opened is skipped and listed in the report
    (the rest of the session is restored). Raises SessionError for a bad session file; the scene
    is left untouched then."""
    from app.core.io import open_cube

    path = Path(path).expanduser().absolute()
    data = load_session(path)
    open_fn = open_fn or open_cube
    report = RestoreReport(layout=dict(data.get("layout") or {}))
    loaded: list[tuple[int, dict, "Cube"]] = []
    entries = data["layers"]
    for i, entry in enumerate(entries):
        if progress:
            progress(i / (len(entries) + 1), f"Opening {entry['name']}")
        if not entry.get("path"):
            report.skipped.append(f"{entry['name']}: computed in memory and not saved with the session")
            continue
        found = _find_file(entry, path.parent, locate, report)
        if found is None:
            continue
        options = {k: v for k, v in entry.get("open_options", {}).items() if k in OPEN_OPTION_KEYS}
        if "hw" in options and options["hw"] is not None:
            options["hw"] = tuple(options["hw"])
        try:
            cube = open_fn(found, **options)
        except HsiError as exc:
            report.skipped.append(f"{entry['name']}: {exc}")
            continue
        if entry.get("size_bytes") is not None and found.is_file() and found.stat().st_size != entry["size_bytes"]:
            report.notes.append(f"{entry['name']}: {found} has changed since the session was saved (size differs)")
        if options:
            cube.metadata["open_options"] = dict(entry.get("open_options", {}))
        prov = entry.get("provenance") or {}
        if entry.get("kind") == "computed" and prov and not cube.metadata.get("provenance"):
            cube.metadata["provenance"] = {k: v for k, v in prov.items() if k not in ("source_file", "exported_by")}
        loaded.append((i, entry, cube))

    scene.clear()
    if data.get("method_colours") and hasattr(scene, "set_method_colours"):
        scene.set_method_colours(data["method_colours"])  # before the layers: they find their colours
    restored: dict[int, "Layer"] = {}  # index in the session's layers -> restored layer
    for i, entry, cube in loaded:
        try:
            restored[i] = scene.add_layer(cube, entry["role"], entry["name"])
            report.layers.append(restored[i])
        except HsiError as exc:
            report.skipped.append(f"{entry['name']}: {exc}")
    _apply_state(scene, data, report)
    compare = data.get("compare")
    if compare is not None:
        uid = {i: layer.uid for i, layer in restored.items()}
        report.compare = {"mode": compare["mode"], "a_uid": uid.get(compare.get("a")),
                          "b_uid": uid.get(compare.get("b")), "divider_x": compare.get("divider_x")}
        if hasattr(scene, "set_ab"):  # a layer that was not restored keeps the scene's choice
            pair = {k: report.compare[k] for k in ("a_uid", "b_uid") if report.compare[k] is not None}
            if "b_uid" in pair:
                pair["b_chosen"] = True
            divider = report.compare["divider_x"]
            scene.set_ab(mode=report.compare["mode"], **pair,
                         **({} if divider is None else {"divider_x": float(divider)}))
    if progress:
        progress(1.0, "Session restored")
    return report


def _apply_state(scene: "Scene", data: dict, report: RestoreReport) -> None:
    display = data.get("display", {})
    selection = data.get("selection", {})

    def attempt(what: str, fn, *args) -> None:
        try:
            fn(*args)
        except (HsiError, ValueError, TypeError, KeyError) as exc:
            report.notes.append(f"{what} not restored: {exc}")

    if display.get("mode"):
        attempt("display mode", scene.set_mode, display["mode"])
    if display.get("rgb_nm"):
        attempt("RGB wavelengths", scene.set_rgb_nm, display["rgb_nm"])
    if display.get("percentiles"):
        attempt("contrast", scene.set_percentiles, *display["percentiles"])
    if "shared_contrast" in display:
        attempt("shared contrast", scene.set_shared_contrast, bool(display["shared_contrast"]))
    if display.get("colormap"):
        attempt("colormap", scene.set_colormap, display["colormap"])
    if scene.layers:
        if isinstance(display.get("band"), int):
            attempt("band", scene.set_band, display["band"])
        view = display.get("view_range")
        if view is not None:
            attempt("zoom", scene.set_view_range, view[0], view[1])
        else:
            scene.reset_view()
        pixel = selection.get("pixel")
        attempt("pixel", scene.set_pixel, *(pixel if pixel else (None, None)))
        scene.clear_pins()
        for pin in selection.get("pins", []):
            attempt("pin", scene.add_pin, *pin)
        if hasattr(scene, "set_roi"):
            roi = selection.get("roi")
            attempt("ROI", scene.set_roi, roi if roi else None)
    analysis = data.get("analysis")
    if analysis and hasattr(scene, "set_analysis_settings"):
        attempt("analysis settings", scene.set_analysis_settings, analysis)


def session_state(scene: "Scene") -> dict:
    """The comparable part of a scene's state (tests and the GUI's 'unsaved changes' check)."""
    data = capture(scene)
    return {"layers": [(e["role"], e["name"], tuple(e["shape"])) for e in data["layers"]],
            "display": data["display"], "selection": data["selection"], "analysis": data["analysis"]}


__all__ = ["SESSION_FORMAT", "SESSION_VERSION", "SESSION_SUFFIX", "SessionError", "SaveReport", "RestoreReport",
           "capture", "save_session", "load_session", "restore_session", "memory_layers", "open_options_of",
           "session_state"]


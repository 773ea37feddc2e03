"""The recovery folder: copies of the layers computed in the viewer, offered back after a crash
(no Qt).

Each viewer window that computes something gets a *session folder* under the recovery root::

    <root>/<utc time>-<pid>-<random>/
        lock.json          {"format", "version", "pid", "host", "process_started", "started_utc"}
        manifest.json      {"format", "version", "started_utc", "inputs": [...], "entries": [...]}
        001_bicubic_x4.npy + 001_bicubic_x4.npy.json   (the cube, wavelengths and provenance)

``inputs`` are the scene's layers read from files when the last copy was written (role, name,
path, open options), so that a restore reopens the reconstructions with their GT and inputs;
``entries`` are the copies (key, file, role, name, shape, time). Cubes are written as .npy with a
.json sidecar (``app.core.export.data.export_cube``, atomic; never pickle); the manifest is
written atomically after each change.

A window that ends normally removes its lock and, once its copies were saved or discarded, its
folder. A folder whose lock is missing, or names a process of this host that is gone, belongs to
a session that did not end normally: :meth:`RecoveryStore.stale_sessions` lists those (newest
first), keeping at most ``max_sessions`` of them (older ones are deleted).

The root is ``$HSI_VIEWER_RECOVERY_DIR`` when set, else ``recovery/`` in
:func:`app.core.paths.user_data_dir` (``~/.local/share/hsi-sr-viewer/recovery`` on Linux).
Cubes larger than ``max_cube_bytes`` (1 GiB of float32 by default) are not copied.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from app.core.errors import HsiError
from app.core.export.data import export_cube, jsonable
from app.core.export.session import open_options_of
from app.core.io.atomic import write_text
from app.core.io.jsonio import dumps
from app.core.paths import user_data_dir

if TYPE_CHECKING:  # pragma: no cover
    from app.core.cube import Cube
    from app.core.state.scene import Layer

RECOVERY_ENV = "HSI_VIEWER_RECOVERY_DIR"
RECOVERY_FORMAT = "hsi-sr-viewer recovery"
RECOVERY_VERSION = 1
MANIFEST = "manifest.json"
LOCK = "lock.json"
MAX_CUBE_BYTES = 1 << 30
MAX_SESSIONS = 5
_SESSION_NAME = re.compile(r"^\d{8}T\d{6}Z-\d+-[0-9a-f]{6}$")


def default_recovery_dir() -> Path:
    """``$HSI_VIEWER_RECOVERY_DIR``, else ``recovery/`` in the user data folder (not created here)."""
    given = os.environ.get(RECOVERY_ENV)
    return Path(given).expanduser() if given else user_data_dir() / "recovery"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe_name(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer")[:60]


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError, ValueError):
        return None


def lock_is_alive(lock: dict | None) -> bool:
    """True when the process that wrote ``lock`` may still run: same host and its pid lives with
    the same start time (a reused pid is another process). A lock of another host cannot be
    checked and counts as alive; a missing or damaged lock as dead."""
    import psutil

    if not isinstance(lock, dict):
        return False
    if lock.get("host") != socket.gethostname():
        return True
    pid = lock.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if not psutil.pid_exists(pid):
        return False
    started = _process_started(pid)
    recorded = lock.get("process_started")
    if started is None:
        return False
    if isinstance(recorded, (int, float)) and abs(started - float(recorded)) > 2.0:
        return False
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


@dataclass
class RecoveredEntry:
    """One copy in a session folder."""

    key: str
    file: Path
    role: str
    name: str
    shape: tuple[int, ...]
    written_utc: str = ""

    def to_dict(self) -> dict:
        return {"key": self.key, "file": self.file.name, "role": self.role, "name": self.name,
                "shape": list(self.shape), "written_utc": self.written_utc}


@dataclass
class RecoveredSession:
    """A session folder left by a viewer that did not end normally."""

    folder: Path
    started_utc: str
    entries: list[RecoveredEntry] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One line per copy: 'Recon · bicubic ×4 (96×96×31)'."""
        titles = {"gt": "GT", "lr": "LR", "guide": "Guide", "recon": "Recon"}
        return [f"{titles.get(e.role, e.role)} · {e.name} ({'×'.join(str(n) for n in e.shape)})"
                for e in self.entries]

    def existing_inputs(self) -> list[dict]:
        """The recorded input files that still exist."""
        return [i for i in self.inputs if i.get("path") and Path(i["path"]).exists()]


def _entries_of(folder: Path, manifest: dict) -> list[RecoveredEntry]:
    out = []
    for raw in manifest.get("entries") or []:
        if not isinstance(raw, dict):
            continue
        try:
            file = folder / Path(str(raw["file"])).name
            entry = RecoveredEntry(str(raw["key"]), file, str(raw.get("role", "recon")), str(raw.get("name", file.stem)),
                                   tuple(int(n) for n in raw.get("shape") or ()), str(raw.get("written_utc", "")))
        except (KeyError, TypeError, ValueError):
            continue
        if entry.file.is_file():
            out.append(entry)
    return out


def load_entry(entry: RecoveredEntry) -> "Cube":
    """The cube of a copy, in memory and with no file behind it (it is still unsaved work), with
    its wavelengths and provenance."""
    from app.core.cube import Cube
    from app.core.io import open_cube

    read = open_cube(entry.file)
    meta = dict(read.metadata or {})
    prov = dict(meta.get("provenance") or {})
    prov.pop("exported_by", None)
    metadata = {"provenance": prov} if prov else {}
    return Cube.from_array(read.data, read.wavelengths_nm, name=entry.name, check_finite=False,
                           fwhm_nm=read.fwhm_nm, bad_bands=read.bad_bands, metadata=metadata)


class RecoveryStore:
    """The session folder of one viewer window, and the folders other sessions left behind.

    :meth:`write` may run on a worker thread; the other methods run on the GUI thread. A key
    discarded (or the store closed) while its copy is being written gets no copy."""

    def __init__(self, root: str | Path | None = None, *, max_cube_bytes: int = MAX_CUBE_BYTES,
                 max_sessions: int = MAX_SESSIONS):
        self.root = Path(root).expanduser() if root is not None else default_recovery_dir()
        self.max_cube_bytes = int(max_cube_bytes)
        self.max_sessions = int(max_sessions)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.name = f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}"
        self._folder: Path | None = None
        self._lock = threading.Lock()
        self._entries: dict[str, RecoveredEntry] = {}
        self._dropped: set[str] = set()
        self._inputs: list[dict] = []
        self._next = 1
        self._closed = False
        self._started = _now()

    # ------------------------------------------------------------------ this session
    @property
    def folder(self) -> Path:
        """This window's session folder (created with the first copy)."""
        return self.root / self.name

    @property
    def entries(self) -> list[RecoveredEntry]:
        with self._lock:
            return list(self._entries.values())

    def new_key(self) -> str:
        with self._lock:
            key = f"{self._next:03d}"
            self._next += 1
            return key

    def too_big(self, cube: "Cube") -> str | None:
        """Why ``cube`` gets no copy (too big), or None."""
        size = int(cube.nbytes_float32)
        if size > self.max_cube_bytes:
            return (f"{cube.name} is not kept in the recovery folder ({size / 2**30:.1f} GB, more than "
                    f"{self.max_cube_bytes / 2**30:.1f} GB): save it to keep it")
        return None

    @staticmethod
    def scene_inputs(layers: Iterable["Layer"]) -> list[dict]:
        """The layers read from files (role, name, path, open options): what a restore reopens."""
        out = []
        for layer in layers:
            path = layer.cube.source_path
            if path is not None:
                out.append({"role": layer.role, "name": layer.name, "path": str(Path(path).resolve()),
                            "open_options": open_options_of(layer.cube)})
        return out

    def _ensure_folder(self) -> Path:
        folder = self.folder
        if self._folder is None:
            folder.mkdir(parents=True, exist_ok=True)
            lock = {"format": RECOVERY_FORMAT, "version": RECOVERY_VERSION, "pid": os.getpid(),
                    "host": socket.gethostname(), "process_started": _process_started(os.getpid()),
                    "started_utc": self._started}
            write_text(folder / LOCK, dumps(lock, indent=1) + "\n")
            self._folder = folder
        return folder

    def _write_manifest(self) -> None:
        data = {"format": RECOVERY_FORMAT, "version": RECOVERY_VERSION, "started_utc": self._started,
                "inputs": jsonable(self._inputs), "entries": [e.to_dict() for e in self._entries.values()]}
        write_text(self.folder / MANIFEST, dumps(data, indent=1, ensure_ascii=False) + "\n")

    def write(self, key: str, cube: "Cube", *, role: str, name: str, inputs: list[dict] | None = None
              ) -> RecoveredEntry | None:
        """Copy ``cube`` under ``key`` (any thread); None when the key was discarded or the store
        closed meanwhile. Raises HsiError when the cube is too big or cannot be written."""
        problem = self.too_big(cube)
        if problem:
            raise HsiError(problem)
        with self._lock:
            if self._closed or key in self._dropped:
                return None
            folder = self._ensure_folder()
        target = folder / f"{key}_{_safe_name(name)}.npy"
        export_cube(cube, target)
        entry = RecoveredEntry(key, target, role, name, tuple(int(n) for n in cube.shape), _now())
        with self._lock:
            if self._closed or key in self._dropped:
                self._dropped.discard(key)
                _remove_cube_files(target)
                return None
            self._entries[key] = entry
            if inputs is not None:
                self._inputs = list(inputs)
            self._write_manifest()
        return entry

    def discard(self, keys: Iterable[str | None]) -> None:
        """Remove the copies of ``keys`` (saved or discarded layers); a copy still being written
        is removed when it is done."""
        with self._lock:
            changed = False
            for key in keys:
                if key is None:
                    continue
                entry = self._entries.pop(key, None)
                if entry is None:
                    self._dropped.add(key)
                    continue
                _remove_cube_files(entry.file)
                changed = True
            if changed and self._folder is not None and self.folder.is_dir():
                try:
                    self._write_manifest()
                except (OSError, HsiError):
                    pass  # the copies are gone; a stale manifest only lists files that no longer exist

    def close(self) -> None:
        """The window ends normally: copies still here (nobody was asked about them) stay and are
        offered at the next start; the lock goes, and the folder too when no copy is left."""
        with self._lock:
            self._closed = True
            folder = self._folder
            if folder is None:
                return
            try:
                (folder / LOCK).unlink(missing_ok=True)
                if not self._entries:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass

    # ------------------------------------------------------------------ other sessions
    def _session_folders(self) -> list[Path]:
        try:
            children = [p for p in self.root.iterdir() if p.is_dir() and _SESSION_NAME.match(p.name)]
        except OSError:
            return []
        return sorted(children, key=lambda p: p.name, reverse=True)

    def stale_sessions(self) -> list[RecoveredSession]:
        """Sessions that did not end normally and left copies, newest first. Stale folders without
        a copy, and stale ones beyond the newest ``max_sessions``, are deleted."""
        found: list[RecoveredSession] = []
        for folder in self._session_folders():
            if folder.name == self.name:
                continue
            lock = _read_json(folder / LOCK) if (folder / LOCK).exists() else None
            if lock is not None and lock_is_alive(lock):
                continue
            manifest = _read_json(folder / MANIFEST)
            if lock is None and manifest is None and _age_s(folder) < 600:
                continue  # being created by another viewer (its lock is written next)
            entries = _entries_of(folder, manifest) if isinstance(manifest, dict) else []
            if not entries or len(found) >= self.max_sessions:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            inputs = [i for i in manifest.get("inputs") or [] if isinstance(i, dict)]
            found.append(RecoveredSession(folder, str(manifest.get("started_utc", "")), entries, inputs))
        return found

    def remove_session(self, session: RecoveredSession) -> None:
        """Delete a stale session folder (its copies were restored or discarded)."""
        folder = Path(session.folder)
        if folder.parent.resolve() == self.root.resolve() and _SESSION_NAME.match(folder.name) \
                and folder.name != self.name:
            shutil.rmtree(folder, ignore_errors=True)

    def adopt(self, entry: RecoveredEntry, inputs: list[dict] | None = None) -> RecoveredEntry:
        """Move a stale session's copy into this session (its layer is unsaved here now)."""
        key = self.new_key()
        with self._lock:
            folder = self._ensure_folder()
            target = folder / f"{key}_{_safe_name(entry.name)}.npy"
            for src, dst in ((entry.file, target), (_sidecar(entry.file), _sidecar(target))):
                if src.exists():
                    os.replace(src, dst)
            moved = RecoveredEntry(key, target, entry.role, entry.name, entry.shape, entry.written_utc)
            self._entries[key] = moved
            if inputs is not None:
                self._inputs = list(inputs)
            self._write_manifest()
        return moved


def _age_s(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _remove_cube_files(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def save_layers(layers: Iterable["Layer"], folder: str | Path, suffix: str = ".hdr") -> dict[int, Path]:
    """Write each layer as a cube file in ``folder`` (``<name>.hdr`` by default, with wavelengths
    and provenance; a number is added where a file of that name exists); {uid: path written}.
    Raises WriteError naming the file that cannot be written."""
    folder = Path(folder).expanduser()
    written: dict[int, Path] = {}
    taken: set[str] = set()
    for layer in layers:
        stem = _safe_name(layer.name)
        candidate, n = stem, 1
        while candidate in taken or any((folder / (candidate + ext)).exists() for ext in {suffix, ".img"}):
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(candidate)
        written[layer.uid] = export_cube(layer.cube, folder / (candidate + suffix))
    return written

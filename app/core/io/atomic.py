"""Atomic writes with clear errors, for every export (figures, CSV, sessions, cubes).

A file is written under a temporary name in the same folder and renamed over the target
(``os.replace``) only when complete, so a failure never leaves a partial file. The temporary path
comes from :func:`app.core.io._common.atomic_path` (the cube writers use the same helper); this
module adds the translation of operating-system errors into :class:`WriteError` messages that
name the file and say what to do: a read-only folder, a full disk (ENOSPC), a missing folder.

>>> with atomic_file("out/figure.pdf") as tmp:     # tmp: a Path beside the target
...     fig.savefig(tmp, format="pdf")
>>> write_text("out/table.csv", text)
>>> with write_errors("out/cube.hdr"):               # translate errors of a writer that is atomic itself
...     save_cube(cube, "out/cube.hdr")
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from app.core.errors import CubeError, HsiError
from app.core.io._common import atomic_path, usual_mode

__all__ = ["WriteError", "atomic_file", "write_text", "write_bytes", "write_errors", "describe_os_error"]


class WriteError(HsiError, OSError):
    """A file cannot be written; ``path`` is the target and the message says why.

    Also an OSError, since it replaces one: callers that handled the writer's OSError still do."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def describe_os_error(exc: OSError) -> str:
    """The reason of a failed write, in words, with what to do."""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code is None and ("no space left" in text or "not enough free space" in text):
        code = errno.ENOSPC  # numpy reports a failed preallocation without an errno
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", -1):
        return "cannot be written: the disk is full (no space left on the device); free some space or choose another disk"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ("cannot be written: the folder or file is read-only (permission denied); "
                "choose a folder you can write to")
    if code == errno.ENOENT:
        return "cannot be written: the folder does not exist"
    if code == errno.EISDIR:
        return "cannot be written: a folder of that name exists"
    if code == errno.ENAMETOOLONG:
        return "cannot be written: the file name is too long"
    return f"cannot be written ({exc.strerror or exc})"


@contextlib.contextmanager
def write_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into a :class:`WriteError` naming ``path``.
    HsiErrors pass through; a CubeError caused by an OSError is translated too."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, describe_os_error(exc)) from exc
    except CubeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise WriteError(path, describe_os_error(cause)) from exc
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` when the block succeeds,
    removed when it fails. OSErrors become :class:`WriteError` naming ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(path, describe_os_error(IsADirectoryError(errno.EISDIR, "is a directory")))
    with write_errors(path):
        with atomic_path(path) as tmp:
            yield tmp
            _usual_mode(tmp)


def _usual_mode(tmp: Path) -> None:
    """mkstemp creates 0600 files; an export gets the mode a plain open() would give (umask)."""
    usual_mode(tmp)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (flushed to disk before the rename)."""
    path = Path(path).expanduser()
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically (UTF-8, newlines as given)."""
    return write_bytes(path, text.encode(encoding))

"""Exceptions of the project. Every message names the file (when there is one) and the problem.

The GUI shows ``str(error)`` in a dialog; the CLI prints it and exits non-zero. Nothing here
imports Qt or torch.
"""
from __future__ import annotations

from pathlib import Path

from models.errors import HsiError  # noqa: F401  (the base class lives in the lowest layer)


class CubeError(HsiError):
    """A cube file cannot be read or written. ``path`` is the offending file or folder."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class MissingFileError(CubeError):
    """The file or folder does not exist (or a companion file such as the ENVI data is missing)."""


class UnknownFormatError(CubeError):
    """No reader recognises the file's content."""


class UnsafeFileError(CubeError):
    """The file would need unpickling (e.g. a pickle disguised as .npy); we refuse."""


class TruncatedFileError(CubeError):
    """The file holds fewer bytes than its header promises."""


class NoCubeError(CubeError):
    """The container (.mat/.npz/.h5) holds no 3-D numeric array (or 2-D with a known height/width)."""


class NonNumericError(CubeError):
    """The array holds strings, objects or structs instead of numbers."""


class NonFiniteError(CubeError):
    """The array holds NaN or Inf values (the user may ask for them to be replaced by 0)."""


class InconsistentBandsError(CubeError):
    """Per-band files disagree (sizes, channels) or a band count does not match its metadata."""


class AmbiguousCubeError(CubeError):
    """The reader cannot decide alone; ``choices`` lists the options, ``option`` names the flag.

    The GUI shows a picker with ``choices``; the CLI tells the user to pass ``--<option>``.
    """

    def __init__(self, path, problem: str, option: str, choices: list[str]):
        self.option = option
        self.choices = list(choices)
        super().__init__(path, f"{problem} (choose with --{option}: {', '.join(self.choices)})")


class ShapeMismatchError(HsiError):
    """Two cubes that must be compared have different shapes, band counts or wavelengths."""


class OutOfMemoryError(CubeError):
    """A cube (or a copy of it) does not fit in the memory that is free."""

    def __init__(self, path, needed_bytes: int | None = None, hint: str = ""):
        self.needed_bytes = needed_bytes
        free = available_memory()
        parts = []
        if needed_bytes:
            parts.append(f"needs {_gb(needed_bytes)} GB")
        if free is not None:
            parts.append(f"{_gb(free)} GB free")
        detail = f" ({', '.join(parts)})" if parts else ""
        super().__init__(path, f"does not fit in memory{detail}{'; ' + hint if hint else ''}")


def memory_needed(exc: BaseException) -> int | None:
    """Bytes of the allocation that failed, when numpy says (its MemoryError carries the request)."""
    size = getattr(exc, "_total_size", None)
    return int(size) if isinstance(size, (int,)) and size > 0 else None


def available_memory() -> int | None:
    """Bytes the system can still hand out (MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f}" if nbytes >= 1e8 else f"{nbytes / 1e9:.2f}"


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM). Raised by the CLI's handler so that ``finally``
    blocks and atomic writes clean up as they do for Ctrl+C; a KeyboardInterrupt so that code
    which already stops cleanly on Ctrl+C (training checkpoints) does the same here."""

    def __init__(self, signum: int = 15):
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")


class Cancelled(HsiError):
    """The user cancelled a job (a model run, an analysis, a comparison): nothing is returned."""

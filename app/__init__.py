"""HSI-SR Viewer. The version has one source, ``pyproject.toml``, read from the installed metadata."""
from __future__ import annotations

from importlib import metadata as _metadata

DISTRIBUTION = "hsi-sr-viewer"
try:
    __version__ = _metadata.version(DISTRIBUTION)
except _metadata.PackageNotFoundError:  # a bare checkout that was never installed (make installs it)
    __version__ = "0+unknown"

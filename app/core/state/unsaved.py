"""Which layers of a scene hold unsaved work (no Qt).

A layer is *unsaved* when it was computed in the app (a model run's reconstruction, inputs
simulated from the GT, or a layer restored from the recovery folder) and has not been written to
a file since: exporting it as a cube, saving a session that writes it, or the Save answer of the
viewer's prompt clears it, and so does discarding it. Layers opened from files never are, nor
the bundled sample's computed layers (the sample can be made again at any time).

The record keeps, for each unsaved layer, the key of its copy in the recovery folder
(:class:`app.core.export.recovery.RecoveryStore`), so that the copy is removed with the entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from app.core.state.scene import Layer

KINDS = ("run", "simulation", "restored")


@dataclass
class UnsavedEntry:
    """``layer``: the scene's layer; ``kind``: one of :data:`KINDS`; ``key``: its recovery copy
    (None while it has none: being written, too big, or the write failed)."""

    layer: Layer
    kind: str
    key: str | None = None

    @property
    def uid(self) -> int:
        return self.layer.uid

    @property
    def label(self) -> str:
        return self.layer.label


class UnsavedLayers:
    """The unsaved layers of one scene, in the order they were made."""

    def __init__(self):
        self._entries: dict[int, UnsavedEntry] = {}

    def add(self, layer: Layer, kind: str, key: str | None = None) -> UnsavedEntry:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of unsaved layer {kind!r}; use one of {', '.join(KINDS)}")
        entry = UnsavedEntry(layer, kind, key)
        self._entries[layer.uid] = entry
        return entry

    def set_key(self, uid: int, key: str | None) -> bool:
        """Record the recovery key of layer ``uid``; False when the layer is no longer unsaved."""
        entry = self._entries.get(uid)
        if entry is None:
            return False
        entry.key = key
        return True

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def entries(self) -> list[UnsavedEntry]:
        return list(self._entries.values())

    def get(self, uid: int) -> UnsavedEntry | None:
        return self._entries.get(uid)

    def among(self, layers: Iterable[Layer | int]) -> list[UnsavedEntry]:
        """The entries of those of ``layers`` (layers or uids) that are unsaved, in that order."""
        out = []
        for item in layers:
            uid = item if isinstance(item, int) else item.uid
            if uid in self._entries:
                out.append(self._entries[uid])
        return out

    def forget(self, uids: Iterable[int]) -> list[UnsavedEntry]:
        """Drop the entries of ``uids`` (saved or discarded); returns them (their recovery keys
        are to be discarded by the caller)."""
        return [self._entries.pop(uid) for uid in list(uids) if uid in self._entries]

    def prune(self, live: Iterable[Layer]) -> list[UnsavedEntry]:
        """Drop the entries whose layer left the scene (``live``: its layers now); returns them."""
        keep = {layer.uid for layer in live}
        return self.forget([uid for uid in self._entries if uid not in keep])

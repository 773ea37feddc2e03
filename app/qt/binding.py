"""Connecting Qt widgets to the plain-Python events of ``app.core.state.scene``."""
from __future__ import annotations

from typing import Any, Callable

from PyQt6 import sip
from PyQt6.QtCore import QObject


def subscribe(owner: QObject, event, callback: Callable[..., Any]) -> None:
    """Call ``callback`` on ``event`` for as long as the Qt object ``owner`` lives.

    The callback is dropped when ``owner`` is destroyed, and skipped if it fires after the C++
    object is gone but before ``destroyed`` was delivered (no RuntimeError from a dead widget).
    """

    def guarded(*args):
        if not sip.isdeleted(owner):
            callback(*args)

    event.connect(guarded)
    owner.destroyed.connect(lambda *_: event.disconnect(guarded))

"""Plain-Python events (no Qt): :class:`Event`, a list of callbacks, and :class:`SceneEvents`, the
events a :class:`~app.core.state.scene.Scene` emits. Each part of the scene (layers, display,
cursor, rendering) emits its own events of this one set; views subscribe to them through
``scene.events`` (``app.qt.binding`` ties a subscription to a widget's life)."""
from __future__ import annotations

from typing import Any, Callable


class Event:
    """A plain list of callbacks (no Qt): ``connect(cb)``, ``disconnect(cb)``, ``emit(*args)``."""

    def __init__(self, name: str = ""):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any] | None = None) -> None:
        """Remove one callback (no error when absent), or all when ``callback`` is None."""
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self)} callbacks)"


class SceneEvents:
    """The events a :class:`Scene` emits, with what each passes to its callbacks."""

    def __init__(self):
        self.layers = Event("layers")              # (layers: tuple[Layer, ...])
        self.band = Event("band")                  # (band: int)
        self.mode = Event("mode")                  # (mode: DisplayMode)
        self.rgb = Event("rgb")                    # (rgb_nm: tuple[float, float, float])
        self.pixel = Event("pixel")                # (pixel: tuple[int, int] | None), HR (row, col)
        self.pins = Event("pins")                  # (pins: tuple[tuple[int, int], ...]), HR (row, col)
        self.hover = Event("hover")                # (hover: Hover | None)
        self.contrast = Event("contrast")          # (shared: bool, percentiles: (low, high))
        self.colormap = Event("colormap")          # (name: str)
        self.view_range = Event("view_range")      # (view_range | None, source: object)
        self.roi = Event("roi")                    # (roi: app.core.state.selection.Roi | None)
        self.analysis = Event("analysis")          # (settings: app.core.state.selection.AnalysisSettings)
        self.colours = Event("colours")            # (method_colours: dict[str, str])
        self.rendered = Event("rendered")          # (frames: dict[int, RenderedImage]), pictures on screen
        self.ab = Event("ab")                      # (choice: app.core.state.selection.ABChoice)
        self.spectra = Event("spectra")            # (choice: app.core.state.selection.SpectraChoice)
        self.analysis_result = Event("analysis_result")  # (result: AnalysisResult | None, stale: bool)
        self.layer_range = Event("layer_range")    # (uid: int, choice: 'auto' | 'stated' | 'max' | float)

    def all(self) -> list[Event]:
        return [v for v in vars(self).values() if isinstance(v, Event)]


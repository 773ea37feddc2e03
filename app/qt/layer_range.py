"""The value range of each layer in the window: a badge in every panel's header with the rule the
layer's values were read with ('stated ÷5000', 'GT scale ÷5000', '÷4091 max', 'PNG ÷65535',
'unit'), loud when the rule looks wrong, and the choice of another range (auto / as the file
states / the maximum / a number) from the badge or from Layer ▸ Value range. The rules and the
rescaling are the scene's (:meth:`app.core.state.scene.Scene.set_layer_range`); the analysis,
pictures and spectra follow its ``layers`` event.
"""
from __future__ import annotations

from PyQt6.QtCore import QObject, QPoint
from PyQt6.QtGui import QAction, QActionGroup
from PyQt6.QtWidgets import QInputDialog, QMenu

from app.core.errors import HsiError
from app.core.state.scene import RANGE_CHOICE_TITLES, RANGE_CHOICES, Layer
from app.qt.binding import subscribe

NUMBER = "number"  # the menu entry that asks for a divisor


class LayerRanges(QObject):
    """Keeps the panels' range badges current and offers the range choices of a layer.

    ``window``: the main window (its ``scene``, ``grid`` of panels, ``report`` and ``unattended``)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.scene = window.scene
        self.menu = QMenu("&Layer", window)
        self.range_menu = self.menu.addMenu("Value &range")
        self.range_menu.setToolTipsVisible(True)
        self.range_menu.aboutToShow.connect(self._fill_range_menu)
        # (after the grid's own subscription: the panels of new layers exist when this runs)
        subscribe(self, self.scene.events.layers, lambda *_: self.sync())
        self.sync()

    def install(self, menubar, before=None) -> None:
        """Put the Layer menu in ``menubar`` (before the action ``before``, by default the Help
        menu's, else last)."""
        if before is None:
            before = next((a for a in menubar.actions() if a.text() == "&Help"), None)
        if before is not None:
            menubar.insertMenu(before, self.menu)
        else:
            menubar.addMenu(self.menu)

    # ------------------------------------------------------------------ badges
    def sync(self) -> None:
        """Every panel's badge from its layer's rule (and new panels' clicks wired)."""
        for panel in self.window.grid.panels:
            if not panel.property("range_wired"):
                panel.setProperty("range_wired", True)
                panel.range_menu_requested.connect(lambda p=panel: self.popup(p.layer, p.range_badge))
            try:
                badge = self.scene.range_badge(panel.layer)
            except HsiError as exc:  # a file that cannot be read any more: said in the badge
                panel.set_range_badge("?", f"Value range: cannot sample the values ({exc})", True)
                continue
            panel.set_range_badge(badge.text, badge.tooltip, badge.loud)

    # ------------------------------------------------------------------ choices
    def menu_for(self, layer: Layer, parent=None) -> QMenu:
        """The choices for ``layer``, the current one checked."""
        menu = QMenu(parent or self.window)
        menu.setToolTipsVisible(True)
        group = QActionGroup(menu)
        current = self.scene.layer_range(layer)
        can_choose = self.scene.range_badge(layer).can_choose
        for choice in RANGE_CHOICES + (NUMBER,):
            if choice == NUMBER:
                title = "Divide by a number…" + (f" (now {current:g})" if isinstance(current, float) else "")
            else:
                title = RANGE_CHOICE_TITLES[choice]
            action = QAction(title, menu)
            action.setCheckable(True)
            action.setChecked(current == choice or (choice == NUMBER and isinstance(current, float)))
            action.setData(choice)
            enabled = can_choose and (choice != "stated" or self.scene.stated_range_available(layer))
            action.setEnabled(enabled)
            if choice == "stated" and can_choose and not enabled:
                action.setToolTip("The file states no value range")
            action.triggered.connect(lambda _=False, c=choice, uid=layer.uid: self.choose(uid, c))
            group.addAction(action)
            menu.addAction(action)
        return menu

    def popup(self, layer: Layer, anchor) -> None:
        """The choices under the clicked badge."""
        menu = self.menu_for(layer, anchor)
        menu.popup(anchor.mapToGlobal(QPoint(0, anchor.height())))

    def _fill_range_menu(self) -> None:
        self.range_menu.clear()
        layers = self.scene.layers
        if not layers:
            self.range_menu.addAction("(no layers open)").setEnabled(False)
            return
        for layer in layers:
            sub = self.menu_for(layer, self.range_menu)
            sub.setTitle(f"{layer.label}  ({self.scene.range_badge(layer).text})")
            self.range_menu.addMenu(sub)

    def choose(self, uid: int, choice) -> bool:
        """Read layer ``uid`` with ``choice`` ('auto', 'stated', 'max', a number, or 'number': ask
        for it); errors are shown in one line. True when the range changed."""
        try:
            layer = self.scene.layer(uid)
        except KeyError:
            return False
        if choice == NUMBER:
            if self.window.unattended:
                return False
            current = self.scene.layer_range(layer)
            start = current if isinstance(current, float) else (1.0 / layer.cube.scale if layer.cube.scale else 1.0)
            value, ok = QInputDialog.getDouble(self.window, "Value range",
                                               f"Divide the stored values of {layer.label} by:", start,
                                               1e-12, 1e12, 6)
            if not ok:
                return False
            choice = value
        try:
            self.scene.set_layer_range(uid, choice)
        except (HsiError, ValueError) as exc:
            self.window.report(HsiError(f"{layer.label}: {exc}") if isinstance(exc, ValueError) else exc,
                               "Cannot change the value range")
            return False
        self.window.statusBar().showMessage(f"{layer.label}: {layer.cube.normalisation}", 8000)
        return True

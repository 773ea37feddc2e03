"""Small dialogs: role assignment for opened files, variable / axis-order pickers, errors.

Each is a module-level function so tests can replace it with ``monkeypatch.setattr``.
"""
from __future__ import annotations

import re
from pathlib import Path

from PyQt6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QGridLayout, QInputDialog, QLabel,
                             QMessageBox, QVBoxLayout, QWidget)

from app.core.state.scene import ROLE_DESCRIPTIONS, ROLES, ROLE_TITLES, guess_role


_PEEK_BYTES = 256 * 1024


def _header_text(path: Path) -> str:
    """The ENVI header of ``path`` (the .hdr itself, or the one beside a data file), or ''."""
    candidates = [path] if path.suffix.lower() == ".hdr" else [path.with_suffix(".hdr"),
                                                                path.with_name(path.name + ".hdr")]
    for hdr in candidates:
        try:
            if hdr.is_file() and hdr.stat().st_size <= _PEEK_BYTES:
                return hdr.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    return ""


def recorded_model(path: str | Path) -> str | None:
    """The model a file says made it (``provenance: model`` in its .json sidecar or ENVI header),
    read without opening the cube; None when the file records none or cannot be read."""
    import base64
    import json

    path = Path(path)
    side = path.with_name(path.name + ".json")
    try:
        if side.is_file() and side.stat().st_size <= _PEEK_BYTES:
            meta = json.loads(side.read_text(encoding="utf-8"))
            model = (meta.get("provenance") or {}).get("model") if isinstance(meta, dict) else None
            if model:
                return str(model)
    except (OSError, ValueError, AttributeError):
        pass
    text = _header_text(path)
    found = re.search(r"^\s*provenance json base64\s*=\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    if found:
        try:
            model = json.loads(base64.b64decode(found.group(1)).decode("utf-8")).get("model")
            if model:
                return str(model)
        except (ValueError, AttributeError):
            pass
    found = re.search(r"^\s*provenance model\s*=\s*(.+?)\s*$", text, re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


def initial_role(path: str, existing_roles=()) -> str:
    """The role pre-selected for ``path``: a file that records the model that made it is a
    reconstruction whatever its name; else the guess from the name."""
    guess = guess_role(path, existing_roles)
    if guess in ("gt", "recon") and recorded_model(path):
        return "recon"
    return guess


class RoleDialog(QDialog):
    """One row per file: its name and a role combo box (pre-filled with a guess)."""

    def __init__(self, paths: list[str], existing_roles=(), parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Open as…")
        self.paths = [str(p) for p in paths]
        layout = QVBoxLayout(self)
        intro = QLabel("What is each file? The reference (GT) sets the band axis and the shared "
                       "contrast; LR inputs are shown at their footprint on the GT grid.", self)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        self.combos: list[QComboBox] = []
        roles_so_far = list(existing_roles)
        for i, path in enumerate(self.paths):
            name = QLabel(Path(path).name, self)
            name.setToolTip(path)
            combo = QComboBox(self)
            for role in ROLES:
                combo.addItem(f"{ROLE_TITLES[role]} — {ROLE_DESCRIPTIONS[role]}", role)
            guess = initial_role(path, roles_so_far)
            roles_so_far.append(guess)
            combo.setCurrentIndex(ROLES.index(guess))
            grid.addWidget(name, i, 0)
            grid.addWidget(combo, i, 1)
            self.combos.append(combo)
        layout.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel,
                                   self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def roles(self) -> list[tuple[str, str]]:
        return [(combo.currentData(), path) for combo, path in zip(self.combos, self.paths)]


def ask_roles(parent: QWidget | None, paths: list[str], existing_roles=()) -> list[tuple[str, str]] | None:
    """(role, path) pairs chosen by the user, or None when cancelled."""
    dialog = RoleDialog(paths, existing_roles, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.roles()


_AXIS_HELP = "H = rows (height), W = columns (width), B = bands"
# The readers' messages end with the command-line flag that settles an ambiguity; in the window
# the user settles it with a picker, which is what the message must point to.
_CLI_HINT = re.compile(r"\s*\(choose with --([\w-]+): ([^)]*)\)")
_GUI_CONTROLS = {"layout": "the axis order", "var": "the variable"}


def without_cli_hint(text: str) -> str:
    """``text`` without its '(choose with --option: …)' hint (a picker shows the choices)."""
    return _CLI_HINT.sub("", text)


def gui_message(text: str) -> str:
    """``text`` with a '(choose with --option: a, b)' hint in the window's own words."""
    def say(match: re.Match) -> str:
        what = _GUI_CONTROLS.get(match.group(1), match.group(1))
        return f" (open the file again with File ▸ Open… and choose {what} when asked: {match.group(2)})"
    return _CLI_HINT.sub(say, text)


def ask_option(parent: QWidget | None, path: str, option: str, problem: str, choices: list[str]) -> str | None:
    """Ask which of ``choices`` to use for ``option`` ('var': which variable of a container;
    'layout': the stored axis order). None when cancelled."""
    name = Path(path).name if path else "the file"
    problem = without_cli_hint(problem)
    if option == "layout":
        title = "Axis order"
        label = (f"<b>{name}</b>: {problem}<br><br>In which order are the axes stored?<br>"
                 f"<span style='color:gray'>{_AXIS_HELP}</span>")
    elif option == "var":
        title = "Choose a variable"
        label = f"<b>{name}</b>: {problem}<br><br>Which variable holds the cube?"
    else:
        title = f"Choose {option}"
        label = f"<b>{name}</b>: {problem}<br><br>Choose {option}:"
    choice, ok = QInputDialog.getItem(parent, title, label, list(choices), 0, False)
    return str(choice) if ok and choice else None


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """A modal error box (``QMessageBox.critical``)."""
    QMessageBox.critical(parent, title, message)


def confirm(parent: QWidget | None, title: str, message: str) -> bool:
    answer = QMessageBox.question(parent, title, message,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.Yes)
    return answer == QMessageBox.StandardButton.Yes



# ---------------------------------------------------------------------------------- unsaved work
def _bullets(lines: list[str], limit: int = 12) -> str:
    shown = [f"  • {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  … and {len(lines) - limit} more")
    return "\n".join(shown)


def unsaved_box(parent: QWidget | None, action: str, labels: list[str]) -> QMessageBox:
    """The Save / Discard / Cancel question before ``action`` ('Close all layers', 'Quit', …)
    drops the unsaved layers ``labels``."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(f"{action}: unsaved results")
    n = len(labels)
    box.setText(f"<b>{n} result{'s' if n != 1 else ''} computed here {'are' if n != 1 else 'is'} not saved.</b>")
    box.setInformativeText(
        f"{_bullets(labels)}\n\nSave writes {'each' if n != 1 else 'it'} as an ENVI cube (.hdr/.img, with "
        f"wavelengths and provenance) in a folder you choose; Discard drops "
        f"{'them' if n != 1 else 'it'} and {'their' if n != 1 else 'its'} recovery copies.")
    box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                           | QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    return box


def ask_unsaved(parent: QWidget | None, action: str, labels: list[str]) -> str:
    """'save', 'discard' or 'cancel' (tests replace this function)."""
    answer = unsaved_box(parent, action, labels).exec()
    if answer == QMessageBox.StandardButton.Save:
        return "save"
    if answer == QMessageBox.StandardButton.Discard:
        return "discard"
    return "cancel"


def ask_save_folder(parent: QWidget | None, start: str) -> str | None:
    """The folder to save unsaved layers in (None when cancelled; tests replace this function)."""
    from PyQt6.QtWidgets import QFileDialog

    folder = QFileDialog.getExistingDirectory(parent, "Save the results in folder", start)
    return folder or None


def recovery_box(parent: QWidget | None, started_utc: str, labels: list[str], inputs: list[str]) -> QMessageBox:
    """Restore / Discard / Later for the results a viewer that did not end normally left in the
    recovery folder."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Recover unsaved results")
    when = started_utc.replace("T", " ").replace("+00:00", " UTC") if started_utc else "an earlier session"
    n = len(labels)
    box.setText(f"<b>The viewer started {when} did not close normally.</b><br>"
                f"It left {n} unsaved result{'s' if n != 1 else ''} in the recovery folder.")
    text = _bullets(labels)
    if inputs:
        text += "\n\nwith the files they were computed from:\n" + _bullets(inputs, 6)
    text += ("\n\nRestore opens them as layers (still unsaved); Discard deletes the copies; "
             "Later asks again at the next start.")
    box.setInformativeText(text)
    box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    later = box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(box.buttons()[0])
    box.setEscapeButton(later)
    return box


def ask_recover(parent: QWidget | None, started_utc: str, labels: list[str], inputs: list[str]) -> str:
    """'restore', 'discard' or 'later' (tests replace this function)."""
    box = recovery_box(parent, started_utc, labels, inputs)
    box.exec()
    clicked = box.clickedButton()
    return {"Restore": "restore", "Discard": "discard"}.get(clicked.text() if clicked else "", "later")

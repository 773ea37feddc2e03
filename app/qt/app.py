"""Entry point of the viewer: ``run_viewer(files, open_sample=True, screenshot=None)``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from PyQt6.QtCore import QSettings, QTimer
from PyQt6.QtWidgets import QApplication

from app.qt import theme
from app.qt.main_window import APP_NAME, MainWindow

SCREENSHOT_SIZE = (1400, 900)
SCREENSHOT_TIMEOUT_MS = 120_000


def get_app() -> QApplication:
    """The QApplication (created on first use)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName(APP_NAME)
        app.setOrganizationName("hsi-sr-viewer")
    return app


def build_window(files: list[tuple[str, str]] | None = None, *, open_sample: bool = True,
                 settings: QSettings | None = None, theme_name: str | None = None,
                 background: bool = True, unattended: bool = False, offer_recovery: bool = False) -> MainWindow:
    """Apply the theme, build the main window and start opening ``files`` (role, path) or,
    when there are none and ``open_sample`` is True, the bundled sample scene.

    With ``offer_recovery`` (the viewer and the browser commands; not ``show()`` from Python),
    results that a viewer which did not end normally left in the recovery folder are offered
    first (Restore / Discard / Later; never when ``unattended``); a restore takes the sample's place."""
    app = get_app()
    settings = settings if settings is not None else QSettings("hsi-sr-viewer", "viewer")
    name = theme_name or str(settings.value("theme", "dark"))
    theme.apply(app, name if name in theme.THEMES else "dark")
    window = MainWindow(settings=settings, unattended=unattended)
    restoring = window.offer_recovery() if offer_recovery else False
    if files:
        window.open_files([(str(f[0]), str(f[1]), *f[2:]) for f in files], background=background)
    elif open_sample and not restoring:
        window.open_sample(background=background)
    return window


def _take_screenshot(window: MainWindow, path: str, app: QApplication, result: dict) -> None:
    """Wait for loading, rendering and the analysis to finish and one paint to happen, then save
    and quit."""

    def ready() -> bool:
        return not window.loading and window.grid.wait_idle() and window.analysis.settled()

    def shoot():
        if not ready():  # something started in the last round (the analysis of the new layers)
            QTimer.singleShot(50, poll)
            return
        window.repaint()
        app.processEvents()
        pixmap = window.grab()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ok = pixmap.save(path, "PNG")
        if not ok:
            print(f"{path}: cannot write the screenshot", file=sys.stderr)
        # A screenshot of a window whose files failed to open is not a success.
        result["code"] = 0 if ok and not window.errors_reported else 1
        app.quit()

    def poll():
        if ready():
            QTimer.singleShot(400, shoot)  # one more event-loop round: layouts settle, first paint
        else:
            QTimer.singleShot(50, poll)

    def give_up():
        if "code" not in result:
            print("screenshot: timed out waiting for the scene to load, render and be analysed", file=sys.stderr)
            result["code"] = 1
            app.quit()

    QTimer.singleShot(100, poll)
    QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, give_up)


def run_viewer(files: list[tuple[str, str]] | None = None, *, open_sample: bool = True,
               screenshot: str | None = None) -> int:
    """Open the viewer and run the event loop; returns the exit code.

    Args:
        files: (role, path) pairs, role in {'gt', 'lr', 'guide', 'recon'}, or (role, path, options)
            with ``open_cube`` keywords (``var``, ``layout``, ``wavelengths``) for that file.
        open_sample: with no files, open the bundled sample scene.
        screenshot: render the window at 1400x900 once everything is loaded, save it as PNG
            there and quit — for checks without a human. No dialogs are shown: errors go to
            stderr and make the exit code 1 (the PNG is still written).
    """
    app = get_app()
    # Dialogs would block an unattended screenshot run: errors go to stderr instead.
    window = build_window(files, open_sample=open_sample, unattended=bool(screenshot), offer_recovery=True)
    result: dict = {}
    if screenshot:
        window.resize(*SCREENSHOT_SIZE)
        _take_screenshot(window, screenshot, app, result)
    window.show()
    code = app.exec()
    if screenshot:
        window.close()
        window.deleteLater()
        return int(result.get("code", code))
    return int(code)


def run_browser(json_path: str | None = None) -> int:
    """`python main.py browse [JSON]`: the viewer (empty) with the results browser in front."""
    app = get_app()
    window = build_window(None, open_sample=False, offer_recovery=True)
    window.show()
    browser = window.open_results_browser()
    if json_path:
        browser.open_json(json_path)
    return int(app.exec())


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("QT_API", "pyqt6")
    raise SystemExit(run_viewer())

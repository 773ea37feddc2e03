"""Dark (default) and light themes: a Fusion palette, a little style sheet, pyqtgraph colours."""
from __future__ import annotations

from dataclasses import dataclass

import pyqtgraph as pg
from PyQt6.QtGui import QColor, QPalette
from PyQt6.QtWidgets import QApplication


@dataclass(frozen=True)
class Theme:
    name: str
    window: str
    base: str
    alt_base: str
    text: str
    dim_text: str
    button: str
    highlight: str
    border: str
    plot_bg: str
    plot_fg: str
    image_bg: str
    crosshair: str
    footprint: str


DARK = Theme(
    name="dark", window="#1e2127", base="#16181d", alt_base="#22262d", text="#e3e6eb",
    dim_text="#8b93a1", button="#2a2e36", highlight="#3b82c4", border="#343a44",
    plot_bg="#121418", plot_fg="#c9ced6", image_bg="#0b0c0f", crosshair="#ffd84d",
    footprint="#ff5fd2",
)
LIGHT = Theme(
    name="light", window="#eef0f3", base="#ffffff", alt_base="#f5f6f8", text="#1c1f24",
    dim_text="#626b78", button="#e3e6ea", highlight="#2f6fb0", border="#c6ccd4",
    plot_bg="#ffffff", plot_fg="#30343a", image_bg="#d9dde3", crosshair="#d18b00",
    footprint="#c2187d",
)
THEMES = {"dark": DARK, "light": LIGHT}

# Role colours: panel badges and spectra curves use the same hue for the same role.
ROLE_COLOURS = {"gt": "#e8e8e8", "lr": "#ff9f43", "guide": "#4fc3f7", "recon": "#b388ff"}
# Reconstructions get distinct colours in the spectra plot (colour-blind friendly, Okabe-Ito-ish).
RECON_CURVE_COLOURS = ["#c77dff", "#2ec4b6", "#f15bb5", "#9ef01a", "#00bbf9", "#ff006e", "#fee440"]

# Shift+click pins: marker in the panels and curves in the spectra plot share the colour.
PIN_COLOURS = ["#00e5ff", "#76ff03", "#ff9100", "#ff4081", "#ffd600", "#b2ff59", "#40c4ff", "#ea80fc"]

_current = DARK


def curve_colour(role: str) -> str:
    """Colour of a role's curve in plots (GT takes the text colour so it reads on any background)."""
    if role == "gt":
        return _current.text
    if role == "lr" and _current.name == "light":
        return "#e07b00"
    if role == "guide" and _current.name == "light":
        return "#0288d1"
    return ROLE_COLOURS.get(role, _current.dim_text)


def current() -> Theme:
    return _current


def configure_pyqtgraph(theme: Theme) -> None:
    pg.setConfigOptions(antialias=True, background=theme.plot_bg, foreground=theme.plot_fg)


def apply(app: QApplication, name: str = "dark") -> Theme:
    """Apply a theme to the whole application (call before building widgets for pyqtgraph)."""
    global _current
    theme = THEMES[name]
    _current = theme
    app.setStyle("Fusion")
    pal = QPalette()
    c = QColor
    roles = QPalette.ColorRole
    pal.setColor(roles.Window, c(theme.window))
    pal.setColor(roles.WindowText, c(theme.text))
    pal.setColor(roles.Base, c(theme.base))
    pal.setColor(roles.AlternateBase, c(theme.alt_base))
    pal.setColor(roles.ToolTipBase, c(theme.alt_base))
    pal.setColor(roles.ToolTipText, c(theme.text))
    pal.setColor(roles.PlaceholderText, c(theme.dim_text))
    pal.setColor(roles.Text, c(theme.text))
    pal.setColor(roles.Button, c(theme.button))
    pal.setColor(roles.ButtonText, c(theme.text))
    pal.setColor(roles.BrightText, c("#ff5555"))
    pal.setColor(roles.Highlight, c(theme.highlight))
    pal.setColor(roles.HighlightedText, c("#ffffff"))
    pal.setColor(roles.Link, c(theme.highlight))
    pal.setColor(roles.Mid, c(theme.border))
    pal.setColor(roles.Dark, c(theme.base))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, c(theme.dim_text))
    app.setPalette(pal)
    app.setStyleSheet(style_sheet(theme))
    configure_pyqtgraph(theme)
    return theme


def style_sheet(t: Theme) -> str:
    return f"""
    QMainWindow::separator {{ background: {t.border}; width: 1px; height: 1px; }}
    QDockWidget {{ font-weight: 600; }}
    QDockWidget::title {{ background: {t.alt_base}; padding: 5px 8px; border-bottom: 1px solid {t.border}; }}
    QToolTip {{ border: 1px solid {t.border}; padding: 4px; }}
    QStatusBar {{ border-top: 1px solid {t.border}; }}
    QStatusBar QLabel {{ padding: 0 6px; }}
    QFrame#ImagePanel {{ background: {t.base}; border: 1px solid {t.border}; border-radius: 4px; }}
    QWidget#PanelHeader {{ background: {t.alt_base}; border-bottom: 1px solid {t.border};
                           border-top-left-radius: 4px; border-top-right-radius: 4px; }}
    QLabel#PanelName {{ font-weight: 600; }}
    QLabel#PanelInfo {{ color: {t.dim_text}; }}
    QLabel#RoleBadge {{ border-radius: 3px; padding: 1px 6px; font-weight: 700; color: #111; }}
    QLabel#DimLabel {{ color: {t.dim_text}; }}
    QLabel#SectionLabel {{ color: {t.dim_text}; font-weight: 600; text-transform: uppercase;
                           padding-top: 6px; }}
    QLabel#Placeholder {{ color: {t.dim_text}; font-size: 15px; }}
    QWidget#BandBar {{ background: {t.alt_base}; border-top: 1px solid {t.border}; }}
    QToolButton#ModeButton {{ padding: 4px 10px; border: 1px solid {t.border}; background: {t.button}; }}
    QToolButton#ModeButton:checked {{ background: {t.highlight}; color: white; border-color: {t.highlight}; }}
    QToolButton#PanelClose {{ border: none; padding: 0 4px; color: {t.dim_text}; }}
    QToolButton#PanelClose:hover {{ color: {t.text}; }}
    """

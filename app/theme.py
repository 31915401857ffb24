"""Dark and light themes: Qt's Fusion style with a palette, plus a short style sheet for the app's own widgets
(chat bubbles, code blocks, the banner, inline errors), which are addressed by objectName."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


@dataclass(frozen=True)
class Colors:
    window: str
    base: str
    alt: str
    text: str
    muted: str
    accent: str
    user: str
    assistant: str
    code: str
    error: str
    warn: str
    ok: str


DARK = Colors(window="#1e2127", base="#282c34", alt="#2f343e", text="#dcdfe4", muted="#8b929e", accent="#61afef",
              user="#2c3a4f", assistant="#2a2e36", code="#1b1e23", error="#e06c75", warn="#d19a66", ok="#98c379")
LIGHT = Colors(window="#f5f6f8", base="#ffffff", alt="#eef0f3", text="#1f2328", muted="#656d76", accent="#0969da",
               user="#ddeeff", assistant="#ffffff", code="#f3f4f6", error="#cf222e", warn="#9a6700", ok="#1a7f37")
THEMES = {"dark": DARK, "light": LIGHT}


def colors(name: str) -> Colors:
    return THEMES.get(name, DARK)


def apply(app: QApplication, name: str) -> Colors:
    c = colors(name)
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: c.window, QPalette.ColorRole.WindowText: c.text,
        QPalette.ColorRole.Base: c.base, QPalette.ColorRole.AlternateBase: c.alt,
        QPalette.ColorRole.Text: c.text, QPalette.ColorRole.Button: c.alt,
        QPalette.ColorRole.ButtonText: c.text, QPalette.ColorRole.Highlight: c.accent,
        QPalette.ColorRole.HighlightedText: c.base, QPalette.ColorRole.ToolTipBase: c.base,
        QPalette.ColorRole.ToolTipText: c.text, QPalette.ColorRole.PlaceholderText: c.muted,
        QPalette.ColorRole.Link: c.accent,
    }
    for role, value in roles.items():
        pal.setColor(role, QColor(value))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(c.muted))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(c.muted))
    app.setPalette(pal)
    app.setStyleSheet(STYLE.format(c=c))
    app.setProperty("nexus_theme", name if name in THEMES else "dark")
    return c


STYLE = """
#userBubble {{ background: {c.user}; border-radius: 8px; }}
#assistantBubble {{ background: {c.assistant}; border: 1px solid {c.alt}; border-radius: 8px; }}
#codeBlock {{ background: {c.code}; border: 1px solid {c.alt}; border-radius: 6px; }}
#codeBlock QLabel {{ font-family: monospace; }}
#codeHeader {{ color: {c.muted}; }}
#msgInfo, #hint, #muted {{ color: {c.muted}; }}
#inlineError {{ color: {c.error}; }}
#banner {{ background: {c.warn}; color: {c.base}; border-radius: 6px; }}
#banner QLabel {{ color: {c.base}; font-weight: bold; }}
#notice {{ background: {c.alt}; border: 1px solid {c.accent}; border-radius: 6px; }}
#chip {{ background: {c.alt}; border: 1px solid {c.muted}; border-radius: 6px; }}
#stateLabel {{ font-size: 18px; font-weight: bold; }}
QTabBar::tab {{ padding: 6px 14px; }}
"""

"""Text from outside (a service's error, a program's last line) made safe to show.

Whatever a remote service, a device or a capture program says ends up on a terminal, in
the journal, in ``status`` and in MQTT events: one printable line, bounded, with no
control characters (an escape sequence in an error body must not repaint a terminal).
"""

from __future__ import annotations


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, control characters as spaces, at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

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


def safe_name(name: str) -> str:
    """A file name fit for the wire (the multipart filename, the service's sample name):
    valid UTF-8 without control characters. Bytes that are not UTF-8 (decoded with
    ``surrogateescape``) and control characters become ``_``, so the name never grows
    past the file system's 255 bytes."""
    if name.isprintable():  # nearly every name: one C pass, not a generator per character
        return name
    return "".join("_" if _unsafe(c) else c for c in name)


def shown(text: str) -> str:
    """``text`` for a log line or a terminal, one line, reversible by eye: control
    characters and undecodable bytes escaped as ``\\n``, ``\\x1b``, ``\\xff``."""
    if not any(_unsafe(c) or c == "\\" for c in text):
        return text
    out = []
    for c in text:
        if "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\\\")
        elif _unsafe(c):
            out.append(c.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def _unsafe(c: str) -> bool:
    return not c.isprintable()  # also a lone surrogate: a byte that was not UTF-8


def age(seconds: float) -> str:
    """A duration as a person reads it at a glance: seconds, minutes, hours, then days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"

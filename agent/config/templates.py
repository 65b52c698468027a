"""Templates in labels and metadata values: ``{dir}``, ``{stem}``, ``{device_id}``, ...

Parsed once when the config is loaded, so an unknown placeholder or a missing environment
variable is a start-up error naming the key, never a surprise on the thousandth file.
``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..text import safe_name

FIELDS = ("dir", "stem", "name", "ext", "device_id", "hostname")
"""Placeholders besides ``{env:NAME}``; ``name`` and ``ext`` are extensions of the contract."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and placeholders, in order."""

    source: str
    parts: tuple[tuple[str, str], ...]
    """``("text", s)`` or ``("field", name)`` or ``("env", NAME)``."""

    @property
    def is_literal(self) -> bool:
        return all(kind == "text" for kind, _ in self.parts)

    def uses(self, name: str) -> bool:
        """Whether the placeholder ``{name}`` appears."""
        return ("field", name) in self.parts

    def render(self, path: Path, device_id: str, hostname: str) -> str:
        out: list[str] = []
        for kind, value in self.parts:
            if kind == "text":
                out.append(value)
            elif kind == "env":
                out.append(os.environ.get(value, ""))
            else:
                out.append(_field(value, path, device_id, hostname))
        return "".join(out)


def _field(name: str, path: Path, device_id: str, hostname: str) -> str:
    if name == "device_id":
        return device_id
    if name == "hostname":
        return hostname
    return safe_name(_path_field(name, path))  # from the file system: any bytes but "/"


def _path_field(name: str, path: Path) -> str:
    if name == "dir":
        return path.parent.name
    if name == "stem":
        return path.name.split(".", 1)[0] if path.name.startswith(".") else path.stem
    if name == "name":
        return path.name
    return path.suffix.lstrip(".")


def parse_template(text: str, field: str) -> Template:
    """Parse ``text``; raise ``InputError`` naming ``field`` on a bad placeholder."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            parts.append(("text", text[pos : match.start()]))
        token = match.group(0)
        pos = match.end()
        if token in ("{{", "}}"):
            parts.append(("text", token[0]))
            continue
        inner = match.group(1)
        if inner is None:
            raise InputError(field, f"unmatched brace in template {text!r} (write {{{{ or }}}})")
        if inner.startswith("env:"):
            name = inner[4:]
            if not _ENV_NAME.match(name):
                raise InputError(field, f"bad environment variable name in {{{inner}}}")
            if name not in os.environ:
                raise InputError(field, f"{{{inner}}}: environment variable {name} is not set")
            parts.append(("env", name))
        elif inner in FIELDS:
            parts.append(("field", inner))
        else:
            known = ", ".join("{" + f + "}" for f in (*FIELDS, "env:NAME"))
            raise InputError(field, f"unknown placeholder {{{inner}}}; known: {known}")
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return Template(text, tuple(parts))


def render_all(
    templates: Mapping[str, Template], path: Path, device_id: str, hostname: str
) -> dict[str, str]:
    return {key: t.render(path, device_id, hostname) for key, t in templates.items()}

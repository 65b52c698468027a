"""Capture commands: untrusted bytes in, a validated ``Command`` out.

A command arrives as an MQTT payload (``sources.mqtt``) or as the options of
``edge-uploader capture``; both are checked here, the same way. It is a small JSON object::

    {"id": "c-0017", "source": "accel", "duration_ms": 2000, "label": "idle",
     "session": "run-7", "category": "training", "metadata": {"operator": "ana"}}

Everything is checked before anything runs: a size limit, UTF-8, JSON without duplicate
keys or NaN, known keys only, types, duration bounds, a safe character set for ``id``,
``label`` and ``session`` (no ``/``, no ``..``: they end up in file names), string
metadata within the wire limits. ``source`` must name a configured capture source, so a
payload never chooses a path or a program. A refusal is an ``InputError`` whose ``field``
names the offending key; nothing here raises anything else, whatever the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import CONFIG_CATEGORIES
from ..errors import InputError
from ..metadata import check_metadata

MAX_COMMAND_BYTES = 8 * 1024
KEYS = ("id", "source", "duration_ms", "label", "session", "category", "metadata")
REQUIRED = ("id", "source", "duration_ms")
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
TEXT_RE = re.compile(r"[A-Za-z0-9 ._-]{1,128}\Z")
RESERVED_METADATA = ("session", "command_id", "capture_source", "device_id", "agent_version")
"""Metadata keys the agent sets itself; a command sets ``session`` with its own field."""


@dataclass(frozen=True)
class Command:
    id: str
    source: str
    duration_ms: int
    label: str | None = None
    session: str | None = None
    category: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def trigger_metadata(self) -> dict[str, str]:
        """What the command adds to the sample's metadata (written to the sidecar)."""
        meta = dict(self.metadata)
        meta["command_id"] = self.id
        meta["capture_source"] = self.source
        if self.session is not None:
            meta["session"] = self.session
        return meta


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InputError(key if key in KEYS else "", f"key {key[:40]!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InputError("", f"{name} is not a JSON number")


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``, or ``InputError``; bounded in size and nesting."""
    if len(raw) > MAX_COMMAND_BYTES:
        raise InputError("", f"payload is {len(raw)} bytes, over the {MAX_COMMAND_BYTES} limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("", "payload is not UTF-8 text") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InputError:
        raise
    except (json.JSONDecodeError, RecursionError):
        raise InputError("", "payload is not a JSON object") from None
    except ValueError:  # Python converts at most 4,300 digits to an int
        raise InputError("", "payload has a number of more than 4,300 digits") from None
    if not isinstance(data, dict):
        raise InputError("", f"payload is JSON {type(data).__name__}, expected an object")
    return data


def safe_text(value: object, name: str, pattern: re.Pattern[str] = TEXT_RE) -> str:
    """A string of the safe set, with at least one letter or digit (so never ``.``/``..``)."""
    if not isinstance(value, str):
        raise InputError(name, f"expected a string, got {_tname(value)}")
    if not pattern.match(value) or not any(c.isalnum() for c in value):
        allowed = (
            "letters, digits, space, '.', '_', '-'"
            if pattern is TEXT_RE
            else ("letters, digits, '.', '_', ':', '-'")
        )
        raise InputError(name, f"expected 1 to 128 of {allowed}, with a letter or digit")
    if value != value.strip():
        raise InputError(name, "must not start or end with a space")
    return value


def validate(
    raw: bytes,
    sources: Collection[str],
    max_duration_ms: int,
) -> Command:
    """Validate one command payload against the configured source names."""
    data = decode(raw)
    return validate_object(data, sources, max_duration_ms)


def command_id_of(raw: bytes) -> str | None:
    """The command's ``id`` if it is readable and safe (for a ``rejected`` event)."""
    try:
        return id_of(decode(raw))
    except InputError:
        return None


def id_of(data: Mapping[str, Any]) -> str | None:
    """The ``id`` of a decoded command if it is safe to repeat in an event, else None."""
    try:
        return safe_text(data.get("id"), "id", ID_RE)
    except InputError:
        return None


def validate_object(
    data: Mapping[str, Any], sources: Collection[str], max_duration_ms: int
) -> Command:
    unknown = sorted(k for k in data if k not in KEYS)
    if unknown:
        shown = unknown[0][:40]
        raise InputError(
            shown if shown.isprintable() else "", f"unknown key {shown!r}; known: {', '.join(KEYS)}"
        )
    for key in REQUIRED:
        if key not in data:
            raise InputError(key, "is required")
    cid = safe_text(data["id"], "id", ID_RE)
    source = data["source"]
    if not isinstance(source, str):
        raise InputError("source", f"expected a string, got {_tname(source)}")
    if source not in sources:
        names = ", ".join(sorted(sources)) or "none configured"
        raise InputError("source", f"not a configured capture source (known: {names})")
    duration = data["duration_ms"]
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise InputError("duration_ms", f"expected a whole number, got {_tname(duration)}")
    if not 1 <= duration <= max_duration_ms:
        raise InputError("duration_ms", f"expected 1 to {max_duration_ms}, got {duration}")
    label = _optional_text(data, "label")
    session = _optional_text(data, "session")
    category = data.get("category")
    if category is not None and (
        not isinstance(category, str) or category not in CONFIG_CATEGORIES
    ):
        raise InputError("category", f"expected one of {', '.join(CONFIG_CATEGORIES)}")
    metadata = check_metadata(data.get("metadata", {}), "metadata")
    for key in RESERVED_METADATA:
        if key in metadata:
            raise InputError(f"metadata.{key}", "is set by the agent (use the command's own field)")
    return Command(cid, source, duration, label, session, category, metadata)


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else safe_text(value, name)


def _tname(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)

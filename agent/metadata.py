"""Metadata rules shared by config, sidecars, commands and the wire format.

The ingestion service takes ``x-metadata`` as a JSON object of strings in one HTTP header.
Header size is bounded by proxies and servers (often 8-16 KiB in all), so the encoded
object is kept under ``MAX_METADATA_BYTES``; values are strings, keys are short printable
names. Everything that produces metadata goes through ``check_metadata`` before a file is
queued, so a sample is never sent with metadata the service might refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .errors import InputError

MAX_KEYS = 64
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 1024
MAX_METADATA_BYTES = 4096


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The exact ``x-metadata`` header value: compact JSON, ASCII only, keys sorted."""
    return json.dumps(dict(metadata), ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def check_key(key: object, field: str) -> str:
    if not isinstance(key, str):
        raise InputError(field, f"metadata keys must be strings, got {type(key).__name__}")
    if not key or len(key) > MAX_KEY_CHARS:
        raise InputError(field, f"metadata key must be 1 to {MAX_KEY_CHARS} characters")
    if not key.isprintable() or key != key.strip():
        raise InputError(field, f"metadata key {key!r} has control characters or edge spaces")
    return key


def check_value(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(field, f"metadata values must be strings, got {type(value).__name__}")
    if len(value) > MAX_VALUE_CHARS:
        raise InputError(field, f"metadata value longer than {MAX_VALUE_CHARS} characters")
    if "\n" in value or "\r" in value or "\x00" in value:  # three scans, no generator
        raise InputError(field, "metadata value has a NUL or line break")
    return value


def check_metadata(metadata: object, field: str = "metadata") -> dict[str, str]:
    """Validate an untrusted metadata object; the error names the offending key."""
    if not isinstance(metadata, Mapping):
        raise InputError(field, f"expected an object of strings, got {type(metadata).__name__}")
    if len(metadata) > MAX_KEYS:
        raise InputError(field, f"more than {MAX_KEYS} keys")
    out: dict[str, str] = {}
    chars = 0
    for key, value in metadata.items():
        # the checks of check_key and check_value inline (they run for every key of every
        # file queued); either is called only to say what is wrong
        if not (type(key) is str and 0 < len(key) <= MAX_KEY_CHARS and key.isprintable()
                and key == key.strip()):  # fmt: skip
            check_key(key, field)
        if not (type(value) is str and len(value) <= MAX_VALUE_CHARS and "\n" not in value
                and "\r" not in value and "\x00" not in value):  # fmt: skip
            check_value(value, f"{field}.{key}")
        out[key] = value
        chars += len(key) + len(value)
    if chars * MAX_ESCAPED_CHAR_BYTES + 6 * len(out) + 2 > MAX_METADATA_BYTES:
        check_size(out, field)  # it might be over: encode it to know
    return out


MAX_ESCAPED_CHAR_BYTES = 12
"""The most one character takes in ``encode_metadata``'s ASCII JSON (a character outside
the BMP is two ``\\uXXXX`` escapes); with 6 bytes of quotes, colon and comma per pair, an
object this small cannot be over the limit, and is not encoded just to measure it."""


def check_size(metadata: Mapping[str, str], field: str = "metadata") -> None:
    size = len(encode_metadata(metadata))
    if size > MAX_METADATA_BYTES:
        raise InputError(field, f"encoded metadata is {size} bytes, over {MAX_METADATA_BYTES}")

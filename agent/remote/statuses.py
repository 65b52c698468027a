"""What a service's answer says, read the same for both services and on every path (httpx
or ``Wire``): its JSON, its error text on one clean line, the status table and
``Retry-After``. Nothing here imports an HTTP client.

The one status table, naming the branch of the error tree (and so the ``Outcome``) that a
status means::

    2xx                      None (look at the body)
    401, 403                 AuthError       pause: the key is wrong or lacks rights
    3xx                      UrlError        pause: the URL is wrong
    408, 425, 429, 5xx       TransientError  retry later (``Retry-After`` honoured)
    other 4xx                PermanentError  never as is

A 404/405 stays a refusal of its file here; delivery (``core.verdicts``) treats the same
status for every file before any was accepted as a wrong URL and pauses instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from ..errors import AuthError, PermanentError, RemoteError, TransientError, UrlError
from ..text import one_line

MAX_ERROR_CHARS = 300


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``, or None (not JSON, not UTF-8, empty, nested too deep)."""
    if not body:
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def clean(text: str) -> str:
    """A service's words, safe for a terminal: one printable line, bounded."""
    return one_line(text, MAX_ERROR_CHARS)


def error_text(data: Any, body: bytes, *, file_errors: bool = False) -> str:
    """What the service says went wrong, as it says it (``clean`` it before showing it):
    its ``error`` field (and, with ``file_errors``, each ``files[i].error``), or the start
    of a body that is not JSON."""
    if isinstance(data, dict):
        parts = [data["error"]] if isinstance(data.get("error"), str) else []
        if file_errors:
            files = data.get("files")
            for f in files if isinstance(files, list) else []:
                if isinstance(f, dict) and isinstance(f.get("error"), str):
                    parts.append(f["error"])
        return "; ".join(parts)
    if data is None and body:
        return body[:MAX_ERROR_CHARS].decode("utf-8", "replace")
    return ""


def status_error(status: int) -> type[RemoteError] | None:
    """The branch of the error tree a status means (None: 2xx, read the body)."""
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return AuthError
    if 300 <= status < 400:
        return UrlError
    if status in (408, 425, 429) or status >= 500:
        return TransientError
    return PermanentError


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import email.utils  # an HTTP date is rare: the module costs a start-up 4 ms

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    return parse_retry_after(headers.get("retry-after"), now)

"""What an answer of the files endpoint means for each file of the request: the
``Answer`` the queue acts on (the table is in ``remote.ingestion``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..clock import RETRY_AFTER_CAP_SECONDS
from ..errors import Outcome, PermanentError, UrlError
from .statuses import clean, error_text, parse_json, parse_retry_after, status_error

log = logging.getLogger("edge_uploader.remote.ingestion")

MAX_SAMPLE_ID = 2**63 - 1
"""A sample id is a positive 64-bit integer (what the queue's SQLite column holds)."""
DUPLICATE_MARK = "already exists"
MAX_RESPONSE_BYTES = 1024 * 1024
"""Answers are read up to this size; a longer 200 answer is not trusted (retried)."""


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    reason: str = ""
    sample_id: int | None = None
    retry_after: float | None = None
    status: int | None = None
    sha256: str | None = None
    bytes_sent: int = 0
    timed_out: bool = False
    alone: bool = False
    """The request held several files and was refused as a whole (which file the refusal
    is about is unknown): send this file again in a request of its own."""


def classify(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
    """Map one HTTP response of the files endpoint to what happens next."""
    data: Any = parse_json(body)
    text = error_text(data, body, file_errors=True)
    if DUPLICATE_MARK in text and "hash" in text and status < 500:
        return Answer(Outcome.DUPLICATE, clean(text), status=status)
    if status == 200:
        return _classify_ok(data, text, status)
    error = status_error(status) or PermanentError  # a 2xx other than 200 is not a success
    if error is UrlError:
        where = headers.get("location", "")
        return Answer(Outcome.PAUSE, f"HTTP {status} redirect to {where!r}: check the URL",
                      status=status)  # fmt: skip
    reason = f"HTTP {status}: {clean(text)}" if text else f"HTTP {status}"
    if error.outcome is Outcome.RETRY:
        wait = parse_retry_after(headers.get("retry-after"), now)
        if wait is not None and wait > RETRY_AFTER_CAP_SECONDS:
            reason += (f" (Retry-After {wait:.0f} s: waiting {RETRY_AFTER_CAP_SECONDS:.0f} s,"
                       " the longest the agent waits)")  # fmt: skip
        return Answer(Outcome.RETRY, reason, status=status, retry_after=wait)
    return Answer(error.outcome, reason, status=status)


def classify_many(
    status: int, headers: Mapping[str, str], body: bytes, now: float, n: int, *,
    cut: bool = False,
) -> list[Answer]:  # fmt: skip
    """``classify`` for a request of ``n`` files: one answer per file, in order. A refusal of
    the whole request (which file it is about is unknown) sends each file again alone.
    ``cut``: the body was longer than ``MAX_RESPONSE_BYTES`` (a 200 so long is not trusted)."""
    if cut and status == 200:
        why = f"the service's answer was over {MAX_RESPONSE_BYTES // 1024} KiB: not read"
        return [Answer(Outcome.RETRY, why, status=200)] * n
    if n == 1:
        return [classify(status, headers, body, now)]
    data: Any = parse_json(body)
    files = data.get("files") if status == 200 and isinstance(data, dict) else None
    if isinstance(files, list) and files:
        if len(files) != n:
            why = f"the service listed {len(files)} files for the {n} sent"
            return [Answer(Outcome.RETRY, why, status=status)] * n
        return [_one_file(f, status) for f in files]
    one = classify(status, headers, body, now)
    if one.outcome in (Outcome.DEAD, Outcome.DUPLICATE):
        return [replace(one, outcome=Outcome.RETRY, alone=True)] * n
    return [one] * n


def timed_out(why: str, n: int) -> list[Answer]:
    """The answers of a request of ``n`` files that timed out (either HTTP path)."""
    return [Answer(Outcome.RETRY, f"timed out: {why}", timed_out=True)] * n


def network_error(reason: str, n: int) -> list[Answer]:
    """The answers of a request of ``n`` files the network failed (either HTTP path)."""
    return [Answer(Outcome.RETRY, f"network error: {reason}")] * n


def _one_file(entry: Any, status: int) -> Answer:
    """One ``files[i]`` of a request's answer."""
    if isinstance(entry, dict) and entry.get("success") is True:
        return Answer(Outcome.DELIVERED, sample_id=sample_id(entry), status=status)
    text = entry.get("error") if isinstance(entry, dict) else None
    text = text if isinstance(text, str) else ""
    if DUPLICATE_MARK in text and "hash" in text:
        return Answer(Outcome.DUPLICATE, clean(text), status=status)
    return Answer(Outcome.DEAD, clean(text or "the service refused the file"), status=status)


def sample_id(entry: dict[str, Any]) -> int | None:
    """``files[i].sampleId`` if it is a sample id (an integer from 1 to 2^63-1); None, with
    a warning, if the service sent something else (a string, 2^80, a float): the file is
    stored (the service said so) but its id is not trusted."""
    sid = entry.get("sampleId")
    if isinstance(sid, int) and not isinstance(sid, bool) and 0 < sid <= MAX_SAMPLE_ID:
        return sid
    if sid is not None:
        log.warning("the service stored %s but its sampleId %s is not a sample id (an integer"
                    " from 1 to 2^63-1): none kept", clean(str(entry.get("fileName", "a file"))),
                    clean(repr(sid))[:60])  # fmt: skip
    return None


def _classify_ok(data: Any, text: str, status: int) -> Answer:
    if not isinstance(data, dict):
        return Answer(Outcome.RETRY, "the service answered 200 without a JSON body",
                      status=status)  # fmt: skip
    files = data.get("files")
    all_ok = isinstance(files, list) and all(
        isinstance(f, dict) and f.get("success") is True for f in files
    )
    if data.get("success") is True and files and all_ok:
        return Answer(Outcome.DELIVERED, sample_id=sample_id(files[0]), status=status)
    if data.get("success") is True and not files:
        return Answer(Outcome.RETRY, "the service listed no files in its answer",
                      status=status)  # fmt: skip
    why = "the service answered 200 with success: false and no reason"
    return Answer(Outcome.DEAD, clean(text) if text else why, status=status)

"""Progress of an ``upload`` run: one updating line on a terminal, plain lines elsewhere.

On a terminal the line is redrawn a few times a second::

    [1234/5000]   24%  12.3 MB/50.0 MB  312 files/s  1.2 MB/s  ETA 0:12  failed 2

When the output is not a terminal (a log file, CI), a plain line is written every
``interval`` seconds instead, so logs stay readable. Messages (a refused file, a skipped
input) are printed on their own lines above the progress line. Rates are measured over the
last ten seconds, so the ETA follows the link as it speeds up or slows down.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, TextIO

from ..errors import QueueError
from ..store.queue import Queue
from .tracker import Summary, Tracker

TTY_INTERVAL = 0.25
PLAIN_INTERVAL = 2.0
RATE_WINDOW = 10.0
_CLEAR = "\r\x1b[K"


class Progress:
    """Draws a ``Tracker`` from its own thread until ``stop``; ``message`` is thread-safe."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None,
                 interval: float | None = None, enabled: bool = True) -> None:  # fmt: skip
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval or (TTY_INTERVAL if self.tty else PLAIN_INTERVAL)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._line = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracker: Tracker | None = None
        self._queue: Queue | None = None
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def start(self, tracker: Tracker, queue: Queue) -> None:
        self._tracker, self._queue = tracker, queue
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            if self.tty and self._line:
                self._write(_CLEAR)
                self._line = ""

    def message(self, text: str) -> None:
        with self._lock:
            if self.tty and self._line:
                self._write(f"{_CLEAR}{text}\n{self._line}")
            else:
                self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe must not stop the upload

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        """Refresh the counts from the queue and draw one line."""
        assert self._tracker is not None and self._queue is not None
        try:
            self._tracker.refresh(self._queue)
        except QueueError:  # a busy queue must not kill the display
            return
        line = self.render(self._tracker.snapshot(), time.monotonic())
        with self._lock:
            if self.tty:
                self._line = line
                self._write(_CLEAR + line)
            else:
                self._write(line + "\n")

    def render(self, snap: dict[str, Any], now: float) -> str:
        totals = snap["totals"]
        total = sum(n for n, _ in totals.values())
        total_bytes = sum(b for _, b in totals.values())
        outstanding = totals["pending"][0] + totals["uploading"][0]
        done = total - outstanding
        done_bytes = total_bytes - totals["pending"][1] - totals["uploading"][1]
        failed = totals["dead"][0] + totals["held"][0] + totals["gone"][0] + snap["skipped"]
        files_rate, bytes_rate = self._rates(now, done, done_bytes)
        width = len(str(total))
        plus = "+" if snap["scanning"] else ""
        pct = f"{100 * done / total:3.0f}%" if total else "  -%"
        parts = [f"[{done:>{width}}/{total}{plus}]", pct,
                 f"{_size(done_bytes)}/{_size(total_bytes)}",
                 f"{files_rate:.0f} files/s", f"{_size(bytes_rate)}/s"]  # fmt: skip
        if outstanding and files_rate > 0 and not snap["scanning"]:
            parts.append(f"ETA {_clock(outstanding / files_rate)}")
        if failed:
            parts.append(f"failed {failed}")
        if snap["paused"]:
            parts.append(f"refused: {snap['paused']}")
        elif snap["trouble_since"] is not None and snap["last_error"]:
            parts.append(f"retrying ({_short(snap['last_error'])})")
        line = "  ".join(parts)
        return line if self.tty else f"progress: {line}"

    def _rates(self, now: float, done: int, done_bytes: int) -> tuple[float, float]:
        samples = self._samples
        samples.append((now, done, done_bytes))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        t0, d0, b0 = samples[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return max(0.0, (done - d0) / span), max(0.0, (done_bytes - b0) / span)


def _size(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


OUTCOMES = {
    "done": "finished",
    "gave-up": "stopped: the ingestion service could not be reached",
    "refused": "stopped: authentication refused (the ingestion service refused the API key)",
    "wrong-url": "stopped: wrong URL (the ingestion service has no such route)",
    "interrupted": "interrupted",
    "budget": "stopped: the daily data budget ([ingestion] max_bytes_per_day) is spent",
}


ADVICE = {
    "refused": "fix the API key (EI_API_KEY, --api-key-file or [ingestion] api_key_file: a"
    " project API key, ei_...), then run the same command again",
    "wrong-url": "fix the URL (EI_INGESTION_URL, EI_INGESTION_ENDPOINT or [ingestion] url: the"
    " service's base, e.g. https://ingestion.edgeimpulse.com, without /v1 or /api/...), then"
    " run the same command again",
    "gave-up": "check the network or the service, then run the same command again to deliver"
    " the rest",
    "interrupted": "run the same command again to deliver the rest",
    "budget": "run the same command again when the budget or the window allows",
}
"""What to do next, by how the run ended (only when files are left)."""


def summary_document(s: Summary) -> dict[str, Any]:
    """``upload --json``: the summary as one JSON object (counts per state: files, bytes)."""
    t = s.totals
    pending = t["pending"][0] + t["uploading"][0]
    return {
        "batch": s.batch,
        "outcome": s.outcome,
        "outcome_text": OUTCOMES.get(s.outcome, s.outcome),
        "exit_status": s.exit_code,
        "elapsed_seconds": round(s.elapsed, 3),
        "files": sum(n for n, _ in t.values()),
        "bytes": sum(b for _, b in t.values()),
        "states": {state: {"files": n, "bytes": b} for state, (n, b) in t.items()},
        "sent_this_run": {"files": s.sent_files, "bytes": s.sent_bytes},
        "duplicates": s.duplicates,
        "skipped": s.skipped,
        "skipped_examples": [{"input": w, "reason": r} for w, r in s.skipped_examples],
        "refused_examples": [{"id": i, "path": p, "reason": r} for i, p, r in s.dead_examples],
        "last_error": s.last_error,
        "advice": ADVICE.get(s.outcome) if pending else None,
    }


def render_summary(s: Summary) -> str:
    """The end-of-run report: what was delivered, what was not and why, what to do next."""
    t = s.totals
    total = sum(n for n, _ in t.values())
    total_bytes = sum(b for _, b in t.values())
    delivered = t["delivered"][0]
    earlier = max(0, delivered - s.sent_files)
    rate = s.sent_files / s.elapsed if s.elapsed > 0 else 0.0
    lines = [
        f"upload {s.batch}: {OUTCOMES.get(s.outcome, s.outcome)} after {_clock(s.elapsed)}",
        f"  files in this batch: {total} ({_size(total_bytes)})",
        f"  delivered:           {delivered}  ({s.sent_files} this run, {_size(s.sent_bytes)}, "
        f"{rate:.1f} files/s; {earlier} earlier)",
    ]
    if s.duplicates:
        lines.append(f"    of which already at the service (duplicates): {s.duplicates}")
    pending = t["pending"][0] + t["uploading"][0]
    if pending:
        why = f" (last error: {s.last_error})" if s.last_error else ""
        lines.append(f"  not yet delivered:   {pending}{why}")
    if t["dead"][0]:
        lines.append(f"  refused (dead):      {t['dead'][0]}")
    if t["held"][0]:
        lines.append(f"  held (bad sidecar or metadata): {t['held'][0]}")
    if t["gone"][0]:
        lines.append(f"  vanished or changed before sending: {t['gone'][0]}")
    if s.skipped:
        lines.append(f"  skipped inputs:      {s.skipped}")
        lines.extend(f"    {what}: {why}" for what, why in s.skipped_examples[:20])
        if s.skipped > 20:
            lines.append(f"    ... and {s.skipped - 20} more (printed above)")
    if s.dead_examples:
        lines.append("  refused by the service:")
        lines.extend(f"    #{i} {path}: {reason}" for i, path, reason in s.dead_examples)
        if t["dead"][0] > len(s.dead_examples):
            lines.append(f"    ... and {t['dead'][0] - len(s.dead_examples)} more")
        lines.append(f"  see them all: edge-uploader dead list --batch {s.batch}; after fixing "
                     "the cause: edge-uploader dead retry --batch ... --all")  # fmt: skip
    if pending and s.outcome in ADVICE:
        lines.append("  " + ADVICE[s.outcome])
    if s.exit_code == 0:
        result = "OK, every file delivered"
    elif not (pending or t["dead"][0] or t["held"][0] or s.skipped):
        result = f"every file delivered, but {OUTCOMES.get(s.outcome, s.outcome)}"
    else:
        result = "NOT everything was delivered"
    lines.append("result: " + result)
    return "\n".join(lines)

"""``edge-uploader upload``: a one-off bulk upload through the daemon's own machinery.

There is no second upload path: files go through the same ``Intake`` (tagging, sidecars),
the same durable ``Queue`` and the same ``Delivery``/``Uploader`` as the daemon. What the
command adds is a *batch*: every row it queues carries the batch id (derived from the
command's inputs, see ``bulk.inputs.batch_id``), and its delivery leases and recovers only
that batch's rows. Hence:

- resumable: after a kill, a network loss or Ctrl-C, the same command finds the same
  batch; known files (same path, size, mtime) are not queued twice, delivered ones are not
  sent again, rows a kill left ``uploading`` go back to ``pending``;
- a daemon running on the same queue file keeps working: the command never touches its
  rows. (The daemon does deliver batch rows too, since it leases every due row; the
  command simply sees them delivered. A daemon *starting* while the command uploads
  returns the command's in-flight rows to pending; the resend is refused as a duplicate
  by the service, which counts as delivered.)
- finite: the command ends when its batch has no pending or uploading rows, when the
  service has been unreachable for ``give_up_after`` seconds, when it refuses the API key
  or the URL is wrong (uploads pause), or when nothing at all has happened for
  ``give_up_after`` seconds with nothing in flight (whatever holds delivery back).
  Undelivered rows stay pending, so a re-run delivers the rest.

Memory does not grow with the folder: inputs are expanded lazily and queued in chunks,
and all per-file state lives in the queue.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..core.delivery import PREFETCH, Delivery
from ..core.intake import BATCH, FIRST_BATCH, Intake, Item
from ..core.verdicts import pause_cause
from ..errors import InputError
from ..events import Event, Stats
from ..remote.ingestion import build_uploader
from ..store.queue import Queue, State
from .inputs import UploadRequest, batch_id, candidates, run_config
from .progress import Progress
from .tracker import Summary, Tracker

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0
MIN_QUIET_SECONDS = 2.0
"""Nothing in flight and no event this long (at least) ends a run that nothing moves."""
MAX_REMEMBERED = 100
"""Refused inputs remembered for the summary (all are printed as they happen)."""
_FINAL = (Event.DELIVERED, Event.DUPLICATE, Event.DEAD, Event.GONE)
_QUIET_LOGGERS = (Intake.__module__, Delivery.__module__)


class BulkUpload:
    """One run of the ``upload`` command. ``run`` returns a ``Summary``."""

    def __init__(
        self,
        config: Config,
        request: UploadRequest,
        progress: Progress,
        *,
        transport: httpx.BaseTransport | None = None,
        verbose: bool = False,
    ) -> None:
        self.config = run_config(config, request)
        self.request = request
        self.progress = progress
        self.transport = transport
        self.verbose = verbose
        self.batch = batch_id(request, config)
        self.tracker = Tracker(self.batch)
        self._stop = threading.Event()
        self._delivery: Delivery | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- control -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop soon (Ctrl-C): in-flight uploads finish or go back to pending."""
        self._stop.set()
        self.tracker.changed.set()

    def install_signals(self) -> None:
        """SIGINT/SIGTERM stop the run cleanly; a second Ctrl-C aborts at once."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.progress.message("stopping: uploads in flight finish, the rest stay queued "
                                  "(run the same command again to continue)")  # fmt: skip
            self.request_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    # -- the run -------------------------------------------------------------------------
    def run(self) -> Summary:
        cfg = self.config
        uploader = build_uploader(cfg, transport=self.transport)
        queue = Queue(cfg.queue.path)
        levels = self._quiet_logs()
        stats = Stats()
        stats.subscribe(self._on_event)
        delivery: Delivery | None = None
        outcome = "done"
        try:
            returned = queue.recover(batch=self.batch)
            queue.retry_now(batch=self.batch)  # a re-run is the user saying "try again now"
            if returned:
                self.progress.message(f"{returned} upload(s) interrupted last time are queued "
                                      "again")  # fmt: skip
            delivery = self._delivery = Delivery(
                queue, uploader, cfg.ingestion, stats, batch=self.batch, prefetch=PREFETCH
            )
            intake = Intake(queue, cfg, stats, on_queued=delivery.wake)
            self.tracker.refresh(queue)
            delivery.start()
            self.progress.start(self.tracker, queue)
            outcome = self._feed(intake, queue)
            with self.tracker.lock:
                self.tracker.scanning = False
            if outcome == "done":
                outcome = self._wait(queue, delivery)
        finally:
            if delivery is not None:
                delivery.stop(STOP_TIMEOUT_SECONDS)
            uploader.close()
            self.progress.stop()
            self._restore_signals()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            try:
                summary = self._summary(queue, outcome, delivery)
            finally:
                queue.close()
        return summary

    def _quiet_logs(self) -> dict[str, int]:
        """Per-file log lines would break the progress line; the run reports them itself."""
        levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
        if not self.verbose:
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        return levels

    def _feed(self, intake: Intake, queue: Queue) -> str:
        """Queue every candidate in chunks; returns early when the run must stop."""
        items = candidates(self.request, self.config, self.batch, self._refused)
        try:
            for chunk in _chunks(items, BATCH, first=FIRST_BATCH):
                intake.process(chunk)
                outcome = self._should_stop()
                if outcome:
                    return outcome
        except InputError as exc:
            # the info file cannot be read on (a syntax error): what was read is still sent
            self._refused(exc.field, exc.message)
        self.tracker.refresh(queue)
        return "done"

    def _wait(self, queue: Queue, delivery: Delivery) -> str:
        """Until the batch has nothing pending or uploading, or the run must stop.

        Woken by every final outcome; the queue is counted only when the outcomes seen
        since the last count could have finished the batch, or once a second (rows the
        daemon delivers for us send no events here).
        """
        t = self.tracker
        while True:
            totals = t.refresh(queue)
            outstanding = totals["pending"][0] + totals["uploading"][0]
            if outstanding == 0:
                return "done"
            with t.lock:
                finals_seen = t.finals
                t.wake_at_finals = finals_seen + outstanding
            while True:
                outcome = self._should_stop()
                if outcome:
                    return outcome
                t.changed.wait(self._wait_timeout())
                t.changed.clear()
                with t.lock:
                    progressed = t.finals - finals_seen
                if progressed >= outstanding or progressed == 0:
                    break  # maybe done, or a quiet second passed: count again

    def _wait_timeout(self) -> float:
        with self.tracker.lock:
            since = self.tracker.trouble_since
        if since is None:
            return 1.0
        left = since + self.request.give_up_after - time.monotonic()
        return max(0.01, min(1.0, left))

    def _should_stop(self) -> str | None:
        if self._stop.is_set():
            return "interrupted"
        with self.tracker.lock:
            if self.tracker.paused:
                return _paused_outcome(self.tracker.paused)
            since = self.tracker.trouble_since
            quiet_since = self.tracker.last_change
        now = time.monotonic()
        if since is not None and now - since >= self.request.give_up_after:
            return "gave-up"
        delivery = self._delivery
        if (
            delivery is not None
            and not delivery.inflight
            and now - quiet_since >= max(MIN_QUIET_SECONDS, self.request.give_up_after)
        ):
            # nothing is sent and nothing happens: stop, whatever holds delivery back
            return _paused_outcome(delivery.paused) if delivery.paused else "gave-up"
        if delivery is not None and delivery.held is not None:
            self.progress.message(f"uploads wait: {delivery.held.reason}")
            return "budget"
        return None

    # -- events --------------------------------------------------------------------------
    def _on_event(self, event: Event, info: dict[str, Any]) -> None:
        t = self.tracker
        message = None
        with t.lock:
            t.last_change = time.monotonic()
            if event in _FINAL:
                t.finals += 1
                t.trouble_since = None
            if event is Event.DELIVERED or event is Event.DUPLICATE:
                t.sent_files += 1
                t.sent_bytes += int(info.get("bytes", 0))
                t.duplicates += event is Event.DUPLICATE
            elif event is Event.DEAD:
                t.dead += 1
                message = f"refused by the service: {info.get('path')}: {info.get('reason')}"
            elif event is Event.GONE:
                message = f"not sent: {info.get('path')}: {info.get('reason')}"
            elif event is Event.RETRY:
                t.retries += 1
                t.last_error = str(info.get("reason") or "")
                if t.trouble_since is None:
                    t.trouble_since = time.monotonic()
            elif event is Event.PAUSED:
                t.paused = str(info.get("reason") or "refused")
                t.last_error = t.paused
            elif event is Event.HELD:
                message = f"held (not sent): {info.get('path')}: {info.get('reason')}"
        if event is Event.SKIPPED:
            self._refused(str(info.get("path")), str(info.get("reason")))
        if message:
            self.progress.message(message)
        if event is Event.PAUSED or (event in _FINAL and t.finals >= t.wake_at_finals):
            t.changed.set()

    def _refused(self, what: str, reason: str) -> None:
        """An input that is not queued: print it now, remember a few for the summary."""
        with self.tracker.lock:
            self.tracker.skipped += 1
            if len(self.tracker.skipped_examples) < MAX_REMEMBERED:
                self.tracker.skipped_examples.append((what, reason))
        self.progress.message(f"skipped {what}: {reason}")

    # -- the end -------------------------------------------------------------------------
    def _summary(self, queue: Queue, outcome: str, delivery: Delivery | None) -> Summary:
        t = self.tracker
        totals = t.refresh(queue)
        dead = [(r.id, r.path, r.last_error or "") for r in
                queue.rows(State.DEAD, batch=self.batch, limit=20)]  # fmt: skip
        paused = t.paused or (delivery.paused if delivery is not None else None)
        with t.lock:
            last_error = (paused if paused and outcome in ("refused", "wrong-url")
                          else t.last_error or paused)  # fmt: skip
            return Summary(
                batch=self.batch, outcome=outcome, totals=totals, sent_files=t.sent_files,
                sent_bytes=t.sent_bytes, duplicates=t.duplicates, skipped=t.skipped,
                skipped_examples=list(t.skipped_examples),
                elapsed=time.monotonic() - t.started, last_error=last_error,
                dead_examples=dead,
            )  # fmt: skip


def _paused_outcome(reason: str) -> str:
    return "wrong-url" if pause_cause(reason) == "url" else "refused"


def _chunks(items: Iterable[Item], size: int, *, first: int | None = None) -> Iterator[list[Item]]:
    """``items`` in lists of ``size``; from ``first`` doubling up to ``size``, if given."""
    chunk: list[Item] = []
    want = min(first or size, size)
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) >= want:
                yield chunk
                chunk = []
                want = min(2 * want, size)
    except InputError:  # the reading ended: the items read before it still go
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk

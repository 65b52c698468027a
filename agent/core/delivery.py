"""Delivery: lease due rows, upload them on a few workers, settle the results.

The dispatcher (a ``Loop``) owns every queue write of the delivery side; ``concurrency``
worker threads each hold one request at a time on the shared ``httpx.Client``. The
dispatcher sleeps on an event until a result arrives, a file is queued, or the next retry
is due: idle means idle, not a polling loop.

Two kinds of waiting:

- per row: a transient failure sets the row's ``next_attempt_at`` (exponential backoff with
  full jitter, ``Retry-After`` honoured);
- for the whole service: when the service is unreachable (network errors, 429, 503) or
  refuses the key (401/403), the dispatcher stops leasing and later sends a single probe
  before opening up again, so a day offline costs a handful of requests, not one per file.

A local delete or move (``after_upload``) happens only after the delivered state was
committed with a full sync.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clock import Clock, retry_delay, system_clock
from ..config import IngestionConfig
from ..errors import Outcome, QueueError
from ..events import Event, Stats
from ..loop import Loop
from ..remote.ingestion import Answer, Sample, Uploader
from ..store.queue import Queue, Result, Row, State
from .after_upload import AfterUpload

log = logging.getLogger(__name__)

QUEUE_RETRY_SECONDS = 5.0
GATHER_SECONDS = 0.02
"""Bulk mode: the longest a result waits before it is settled (with the others that came
back meanwhile, in one transaction)."""
PREFETCH = 32
"""Rows leased ahead of the workers while a backlog drains: fewer, larger transactions."""

NOT_SENT = Answer(Outcome.RETRY, "not sent: the pipeline stopped or the service is in trouble")
"""A prefetched row a worker gave back unsent; it returns to pending without an attempt."""


@dataclass
class _Done:
    row: Row
    answer: Answer
    latency: float
    decided: bool = False
    result: Result | None = None
    """What the queue records (None: requeue), decided once even if the write is retried."""


def _outage(answer: Answer) -> bool:
    """The whole service looks unreachable or refuses the key (not just this file)."""
    if answer.outcome is Outcome.PAUSE:
        return True
    return answer.outcome is Outcome.RETRY and answer.status in (None, 429, 503)


def row_sample(row: Row) -> Sample:
    extra = row.extra or {}
    parts = tuple(
        (str(p["name"]), str(p["content"]).encode("utf-8"), str(p.get("type", "application/json")))
        for p in extra.get("parts", [])
    )
    return Sample(
        path=Path(row.path), file_name=row.file_name, category=row.category, label=row.label,
        metadata=row.metadata, allow_duplicates=row.allow_duplicates, extra_parts=parts,
        expect_size=row.size, expect_mtime_ns=row.mtime_ns,
    )  # fmt: skip


class Delivery(Loop):
    """Delivers the queue; ``wake`` from sources, ``start``/``stop`` from the daemon."""

    def __init__(
        self, queue: Queue, uploader: Uploader, config: IngestionConfig, stats: Stats, *,
        clock: Clock = system_clock, rng: Callable[[], float] = random.random,
        watch_roots: Mapping[str, Path] | None = None, batch: str | None = None,
        prefetch: int = 0,
    ) -> None:  # fmt: skip
        super().__init__("dispatcher")
        self.queue = queue
        self.uploader = uploader
        self.config = config
        self.stats = stats
        self.clock = clock
        self.rng = rng
        self.after_upload = AfterUpload(watch_roots or {})
        self.batch = batch
        """Deliver only this batch's rows (the ``upload`` command); None: every row (daemon)."""
        self.prefetch = prefetch
        """Bulk mode: rows leased beyond ``concurrency``, waiting in memory for a free worker,
        so leases come in batches. The daemon uses ``PREFETCH`` too while a backlog drains."""
        self._caution = threading.Event()
        """Set by a worker that met a network failure or a refused key: the others start no
        prefetched row until the dispatcher has decided (hold, probe or pause)."""
        self._work: stdqueue.SimpleQueue[Row | None] = stdqueue.SimpleQueue()
        self._done: stdqueue.SimpleQueue[_Done] = stdqueue.SimpleQueue()
        self._inflight: dict[int, Row] = {}
        self._unsettled: list[_Done] = []
        self._queue_error: str | None = None
        self._hold_until = 0.0
        self._probe = False
        self._failures = 0
        self._paused_reason: str | None = None
        self._workers: list[threading.Thread] = []
        self._stop_timeout = 5.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        paused = self.queue.get_state().get("paused")
        self._paused_reason = str(paused) if paused else None
        for i in range(self.config.concurrency):
            t = threading.Thread(target=self._worker, name=f"upload-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        super().start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop leasing, let in-flight uploads finish within ``timeout``, requeue the rest."""
        self._stop_timeout = timeout
        super().stop(timeout + 1.0)  # its last settle may run just past the deadline
        for _ in self._workers:
            self._work.put(None)
        leftover = list(self._inflight)
        if leftover:
            log.info("stop: %d upload(s) did not finish in time; they stay queued", len(leftover))
            try:
                self.queue.requeue(leftover)
            except QueueError as exc:
                log.error("stop: %s; those rows return to pending at the next start", exc)
            self._inflight.clear()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def queue_error(self) -> str | None:
        """The last queue write error while it persists (a full disk), else None."""
        return self._queue_error

    @property
    def paused(self) -> str | None:
        return self._paused_reason

    def retry_now(self) -> None:
        """Drop every wait (used by ``retry-now`` and a reload with a new key)."""
        self._hold_until = 0.0
        self.wake()

    # -- threads -------------------------------------------------------------------------
    def _worker(self) -> None:
        while (row := self._work.get()) is not None:
            if self.prefetch and (self.stopping or self._caution.is_set()):
                self._done.put(_Done(row, NOT_SENT, 0.0))  # back to pending, no attempt
                self.wake()
                continue
            started = time.monotonic()
            try:
                answer = self.uploader.upload(row_sample(row))
            except Exception as exc:
                log.exception("upload of %s failed unexpectedly", row.path)
                answer = Answer(Outcome.RETRY, f"internal error: {type(exc).__name__}: {exc}")
            outage = self.prefetch and _outage(answer)
            if outage:
                self._caution.set()  # before the result is seen: no other worker starts more
            self._done.put(_Done(row, answer, time.monotonic() - started))
            if (not self.prefetch or outage or self.stopping
                    or self._work.qsize() <= self.config.concurrency):  # fmt: skip
                self.wake()  # (bulk mode: only when running low, or in trouble)

    def step(self) -> float | None:
        try:
            self._settle_done()
            if self.stopping:
                return None
            timeout = self._dispatch()
            if self.prefetch and self._inflight:
                # bulk mode: workers wake us only when they run low; settle what came
                # back at least every GATHER_SECONDS, several results per transaction
                timeout = GATHER_SECONDS if timeout is None else min(timeout, GATHER_SECONDS)
        except QueueError as exc:
            self._queue_failed(exc)
            return QUEUE_RETRY_SECONDS
        if self._queue_error is not None:
            log.warning("the queue can be written again; delivery resumes")
            self._queue_error = None
        return timeout

    def finish(self) -> None:
        """Stopping: settle what comes back from the uploads in flight until the deadline."""
        deadline = time.monotonic() + self._stop_timeout
        while self._inflight and time.monotonic() < deadline:
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            try:
                self._settle_done()
            except QueueError as exc:
                log.error("queue error while stopping: %s", exc)
                return

    def _queue_failed(self, exc: QueueError) -> None:
        """Log a queue write failure once per distinct message (a full disk can last
        hours); results already received are kept and written on the next try."""
        text = str(exc)
        if text != self._queue_error:
            log.error("queue error: %s; nothing is lost, retrying every %.0f s", text,
                      QUEUE_RETRY_SECONDS)  # fmt: skip
        self._queue_error = text

    def _dispatch(self) -> float | None:
        """Lease and hand out work; return how long to sleep (None: until woken)."""
        now = self.clock()
        if now < self._hold_until:
            return self._hold_until - now
        n = len(self._inflight)
        limit = self.config.concurrency - n
        if self._probe or self._paused_reason:
            limit = min(limit, 1 - n)
        elif self.prefetch:
            if n > self.config.concurrency + self.prefetch // 2:
                return None  # enough rows wait for a worker; lease again in a batch later
            limit += self.prefetch
        if limit <= 0:
            return None
        self._caution.clear()  # the hold is over: what is leased now may go out
        rows = self.queue.lease(limit, now, batch=self.batch)
        if rows:
            self.stats.progress()
        for row in rows:
            self._inflight[row.id] = row
            self._work.put(row)
        if len(rows) < limit:
            due = self.queue.next_due(batch=self.batch)
            if due is not None:
                return max(0.0, due - self.clock()) + 0.001
        return None

    # -- results -------------------------------------------------------------------------
    def _settle_done(self) -> None:
        """Write the finished uploads back. Rows stay in flight until the write commits:
        when it fails (a full disk), the same results are written on the next try."""
        while True:
            try:
                self._unsettled.append(self._done.get_nowait())
            except stdqueue.Empty:
                break
        done = self._unsettled = [d for d in self._unsettled if d.row.id in self._inflight]
        if not done:
            return
        if self.prefetch and any(_outage(d.answer) for d in done):
            done.extend(_Done(row, NOT_SENT, 0.0) for row in self._unstarted())
        now = self.clock()
        for d in done:
            if not d.decided:  # NOT_SENT: result None, back to pending, no attempt, no event
                d.result = None if d.answer is NOT_SENT else self._result(d, now)
                d.decided = True
        results = [d.result for d in done if d.result is not None]
        local = [d.row for d in done if d.result is not None and d.result.state is
                 State.DELIVERED and d.row.after_upload != "keep"]  # fmt: skip
        self.queue.settle(results, durable=bool(local))
        settled = [d for d in done if d.result is not None]
        requeue = [d.row.id for d in done if d.result is None]
        self._unsettled = [d for d in done if d.result is None]
        for d in settled:
            del self._inflight[d.row.id]
        self._note(done, now)
        self.stats.progress()
        for d in settled:
            self._report(d)
        if local:
            self.queue.mark_local_done(r.id for r in local if self.after_upload.finish(r))
        if requeue:
            self.queue.requeue(requeue)
            for row_id in requeue:
                del self._inflight[row_id]
            self._unsettled = []

    def _unstarted(self) -> list[Row]:
        """Take back the prefetched rows no worker has started (the service is in trouble)."""
        rows: list[Row] = []
        while True:
            try:
                row = self._work.get_nowait()
            except stdqueue.Empty:
                return rows
            if row is None:  # a stop sentinel: leave it for the workers
                self._work.put(None)
                return rows
            rows.append(row)

    def _result(self, d: _Done, now: float) -> Result | None:
        a, row = d.answer, d.row
        if a.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            self._failures = 0
            self._probe = False
            if self._paused_reason:
                self._paused_reason = None
                self.queue.set_state(paused=None)
                log.warning("uploads resumed: the service accepts the key again")
                self.stats.emit(Event.RESUMED)
            return Result(row.id, State.DELIVERED, None, 0.0, a.sha256, a.sample_id,
                          bytes_sent=a.bytes_sent)  # fmt: skip
        if a.outcome is Outcome.DEAD:
            return Result(row.id, State.DEAD, a.reason, 0.0, a.sha256)
        if a.outcome is Outcome.GONE:
            return Result(row.id, State.GONE, a.reason, 0.0, a.sha256, count_attempt=False)
        if a.outcome is Outcome.PAUSE:
            self._pause(a.reason, now)
            return None
        # RETRY: the first retry waits up to retry_base_seconds
        cfg = self.config
        delay = retry_delay(row.attempts, cfg.retry_base_seconds, cfg.retry_max_seconds,
                            a.retry_after, self.rng)  # fmt: skip
        if a.status in (None, 429, 503):
            if now >= self._hold_until:
                # One outage step per probe: the other uploads that were in flight when the
                # link went down fail inside the hold and must not escalate it (20 of them
                # would otherwise make a one-second blip a five-minute wait).
                self._failures += 1
            self._probe = True
            hold = retry_delay(self._failures, cfg.retry_base_seconds, cfg.retry_max_seconds,
                               a.retry_after, self.rng)  # fmt: skip
            self._hold_until = max(self._hold_until, now + hold)
        return Result(row.id, State.PENDING, a.reason, now + delay, a.sha256)

    def _pause(self, reason: str, now: float) -> None:
        self._hold_until = max(self._hold_until, now + self.config.auth_pause_seconds)
        if self._paused_reason != reason:
            self._paused_reason = reason
            self.queue.set_state(paused=reason)
            self.stats.emit(Event.PAUSED, reason=reason)
        log.error(
            "uploads paused: the service refused the request (%s). Check the API key and the"
            " URL %s; nothing is dead-lettered; next try in %.0f s",
            reason, self.uploader.url, self.config.auth_pause_seconds,
        )  # fmt: skip

    def _report(self, d: _Done) -> None:
        a, row = d.answer, d.row
        info: dict[str, Any] = {"path": row.path, "row_id": row.id, "reason": a.reason,
                                "latency": d.latency}  # fmt: skip
        if a.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            event = Event.DELIVERED if a.outcome is Outcome.DELIVERED else Event.DUPLICATE
            info.update(sample_id=a.sample_id, bytes=row.size)
            log.info("%s %s sample_id=%s category=%s", event.value, row.path, a.sample_id,
                     row.category)  # fmt: skip
        elif a.outcome is Outcome.DEAD:
            event = Event.DEAD
            log.warning("dead-lettered %s: %s", row.path, a.reason)
        elif a.outcome is Outcome.GONE:
            event = Event.GONE
            log.info("skipped %s: %s", row.path, a.reason)
        elif a.outcome is Outcome.PAUSE:
            return
        else:
            event = Event.RETRY
            log.info("will retry %s: %s", row.path, a.reason)
        self.stats.emit(event, **info)

    def _note(self, done: list[_Done], now: float) -> None:
        """Facts for ``status``, once per round (not once per file), best effort: a full
        disk must not stop the reporting."""
        facts: dict[str, object] = {}
        for d in done:
            if d.answer.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                facts["last_delivery_at"] = now
            elif d.answer.outcome is Outcome.RETRY and d.answer is not NOT_SENT:
                facts["last_error"] = d.answer.reason
        if not facts:
            return
        try:
            self.queue.set_state(**facts)
        except QueueError as exc:
            log.debug("could not record %s: %s", ", ".join(facts), exc)

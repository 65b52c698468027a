"""The delivery loop: lease due rows, upload them on a few workers, settle the results.

One dispatcher thread owns every queue write of the delivery side; ``concurrency`` worker
threads each hold one request at a time on the shared ``httpx.Client``. The dispatcher
sleeps on an event until a result arrives, a file is queued, or the next retry is due:
idle means idle, not a polling loop.

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
import os
import queue as stdqueue
import random
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clock import Clock, retry_delay, system_clock
from ..config import IngestionConfig
from ..errors import QueueError
from ..events import Event, Stats
from ..remote.ingestion import Answer, Outcome, Sample, Uploader
from ..store.queue import Queue, Result, Row, State
from .tagger import sidecar_path

log = logging.getLogger(__name__)


QUEUE_RETRY_SECONDS = 5.0


@dataclass
class _Done:
    row: Row
    answer: Answer
    latency: float
    decided: bool = False
    result: Result | None = None
    """What the queue records (None: requeue), decided once even if the write is retried."""


GATHER_SECONDS = 0.02
PREFETCH = 32
"""Rows leased ahead of the workers while a backlog drains: fewer, larger transactions."""
"""Bulk mode: the longest a result waits before it is settled (with the others that came
back meanwhile, in one transaction)."""

NOT_SENT = Answer(Outcome.RETRY, "not sent: the pipeline stopped or the service is in trouble")
"""A prefetched row a worker gave back unsent; it returns to pending without an attempt."""


def _outage(answer: Answer) -> bool:
    """The whole service looks unreachable or refuses the key (not just this file)."""
    if answer.outcome is Outcome.PAUSE:
        return True
    return answer.outcome is Outcome.RETRY and (
        answer.status is None or answer.status in (429, 503)
    )


def row_sample(row: Row) -> Sample:
    extra = row.extra or {}
    parts = tuple(
        (str(p["name"]), str(p["content"]).encode("utf-8"), str(p.get("type", "application/json")))
        for p in extra.get("parts", [])
    )
    return Sample(
        path=Path(row.path),
        file_name=row.file_name,
        category=row.category,
        label=row.label,
        metadata=row.metadata,
        allow_duplicates=row.allow_duplicates,
        extra_parts=parts,
        expect_size=row.size,
        expect_mtime_ns=row.mtime_ns,
    )


class Pipeline:
    """Delivers the queue. ``start``/``stop`` from the service; ``wake`` from sources."""

    def __init__(
        self,
        queue: Queue,
        uploader: Uploader,
        config: IngestionConfig,
        stats: Stats,
        *,
        clock: Clock = system_clock,
        rng: Callable[[], float] = random.random,
        watch_roots: dict[str, Path] | None = None,
        batch: str | None = None,
        prefetch: int = 0,
    ) -> None:
        self.queue = queue
        self.batch = batch
        """Deliver only this batch's rows (the ``upload`` command); None: every row (daemon)."""
        self.prefetch = prefetch
        """Bulk mode: rows leased beyond ``concurrency``, waiting in memory for a free worker,
        so leases come in batches. The daemon uses 0 (one lease per free worker)."""
        self._caution = threading.Event()
        """Set by a worker that met a network failure or a refused key: the others start no
        prefetched row until the dispatcher has decided (hold, probe or pause)."""
        self.uploader = uploader
        self.config = config
        self.stats = stats
        self.clock = clock
        self.rng = rng
        self.watch_roots = watch_roots or {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._work: stdqueue.SimpleQueue[Row | None] = stdqueue.SimpleQueue()
        self._done: stdqueue.SimpleQueue[_Done] = stdqueue.SimpleQueue()
        self._inflight: dict[int, Row] = {}
        self._unsettled: list[_Done] = []
        self._queue_error: str | None = None
        self._hold_until = 0.0
        self._probe = False
        self._failures = 0
        self._paused_reason: str | None = None
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._stop_timeout = 5.0
        self.hung = False
        """Test seam: a hung uploader (workers stop taking work) for watchdog tests."""

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        state = self.queue.get_state()
        if state.get("paused"):
            self._paused_reason = str(state["paused"])
        for i in range(self.config.concurrency):
            t = threading.Thread(target=self._worker, name=f"upload-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._dispatcher = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._dispatcher.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop leasing, let in-flight uploads finish within ``timeout``, requeue the rest."""
        self._stop_timeout = timeout
        self._stopping.set()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout + 1.0)  # its last settle may run just past the deadline
        for _ in self._threads:
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

    def alive(self) -> bool:
        """The dispatcher runs (for the health check; false before ``start``, after ``stop``)."""
        return self._dispatcher is not None and self._dispatcher.is_alive()

    @property
    def paused(self) -> str | None:
        return self._paused_reason

    def retry_now(self) -> None:
        """Drop every wait (used by ``retry-now`` and a reload with a new key)."""
        self._hold_until = 0.0
        self.wake()

    # -- threads -------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            row = self._work.get()
            if row is None:
                return
            if self.prefetch and (self._stopping.is_set() or self._caution.is_set()):
                self._done.put(_Done(row, NOT_SENT, 0.0))  # back to pending, no attempt
                self._wake.set()
                continue
            while self.hung and not self._stopping.is_set():
                time.sleep(0.05)
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
            if (not self.prefetch or outage or self._stopping.is_set()
                    or self._work.qsize() <= self.config.concurrency):  # fmt: skip
                self._wake.set()  # (bulk mode: only when running low, or in trouble)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._settle_done()
                if self._stopping.is_set():
                    break
                timeout = self._dispatch()
                if self.prefetch and self._inflight:
                    # bulk mode: workers wake us only when they run low; settle what came
                    # back at least every GATHER_SECONDS, several results per transaction
                    timeout = GATHER_SECONDS if timeout is None else min(timeout, GATHER_SECONDS)
            except QueueError as exc:
                self._queue_failed(exc)
                timeout = QUEUE_RETRY_SECONDS
            except Exception:  # the dispatcher must outlive any bug: log it and go on
                log.exception("delivery loop failed; retrying in %.0f s", QUEUE_RETRY_SECONDS)
                timeout = QUEUE_RETRY_SECONDS
            else:
                if self._queue_error is not None:
                    log.warning("the queue can be written again; delivery resumes")
                    self._queue_error = None
            self._wake.wait(timeout)
        deadline = time.monotonic() + self._stop_timeout
        while self._inflight and time.monotonic() < deadline:
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            try:
                self._settle_done()
            except QueueError as exc:
                log.error("queue error while stopping: %s", exc)
                break

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
        results: list[Result] = []
        requeue: list[int] = []
        local: list[Row] = []
        for d in done:
            if d.answer is NOT_SENT:
                d.decided = True  # result None: back to pending, no attempt, no event
            if not d.decided:
                d.result, d.decided = self._result(d, now), True
            if d.result is None:
                requeue.append(d.row.id)
                continue
            results.append(d.result)
            if d.result.state is State.DELIVERED and d.row.after_upload != "keep":
                local.append(d.row)
        facts: dict[str, object] = {}  # for `status`
        for d in done:
            if d.answer.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                facts["last_delivery_at"] = now
            elif d.answer.outcome is Outcome.RETRY and d.answer is not NOT_SENT:
                facts["last_error"] = d.answer.reason
        self.queue.settle(results, durable=bool(local))
        settled = [d for d in done if d.result is not None]
        self._unsettled = [d for d in done if d.result is None]
        for d in settled:
            del self._inflight[d.row.id]
        if facts:
            self._note(**facts)  # once per round, not once per file
        self.stats.progress()
        for d in settled:
            self._report(d)
        if local:
            self.queue.mark_local_done(r.id for r in local if self.finish_local(r))
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
        # RETRY
        attempt = row.attempts  # the first retry waits up to retry_base_seconds
        delay = retry_delay(attempt, self.config.retry_base_seconds,
                            self.config.retry_max_seconds, a.retry_after, self.rng)  # fmt: skip
        if a.status is None or a.status in (429, 503):
            if now >= self._hold_until:
                # One outage step per probe: the other uploads that were in flight when the
                # link went down fail inside the hold and must not escalate it (20 of them
                # would otherwise make a one-second blip a five-minute wait).
                self._failures += 1
            self._probe = True
            hold = retry_delay(self._failures, self.config.retry_base_seconds,
                               self.config.retry_max_seconds, a.retry_after, self.rng)  # fmt: skip
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

    def _note(self, **values: object) -> None:
        """Best-effort facts for ``status``; a full disk must not stop the reporting."""
        try:
            self.queue.set_state(**values)
        except QueueError as exc:
            log.debug("could not record %s: %s", ", ".join(values), exc)

    # -- after_upload --------------------------------------------------------------------
    def finish_local(self, row: Row) -> bool:
        """Delete or move a delivered file (and its sidecar). True when done or moot.

        Only the version that was delivered: a file rewritten in place since then is a new
        capture (queued as its own row), and it and its sidecar are left alone."""
        src = Path(row.path)
        try:
            st = os.stat(src, follow_symlinks=False)
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("after delivery, cannot check %s: %s", src, exc.strerror or exc)
            return False
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            log.info("kept %s: it changed after it was delivered (the new version is queued)", src)
            return True
        try:
            if row.after_upload == "delete":
                for p in (src, sidecar_path(src)):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                log.info("deleted %s after delivery", src)
            elif row.after_upload == "move" and row.move_to:
                dest = self._move_target(row, src)
                if src.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(src), str(dest))
                    side = sidecar_path(src)
                    if side.exists():
                        shutil.move(str(side), str(sidecar_path(dest)))
                    log.info("moved %s to %s after delivery", src, dest)
        except OSError as exc:
            log.error("after delivery, could not %s %s: %s", row.after_upload, src,
                      exc.strerror or exc)  # fmt: skip
            return False
        return True

    def _move_target(self, row: Row, src: Path) -> Path:
        root = self.watch_roots.get(row.source)
        base = Path(row.move_to or "")
        try:
            rel = src.relative_to(root) if root else Path(src.name)
        except ValueError:
            rel = Path(src.name)
        dest = base / rel
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{src.stem}.{n}{src.suffix}")
            n += 1
        return dest


def finish_pending_local(queue: Queue, pipeline: Pipeline) -> None:
    """At start-up: complete deletes/moves a crash interrupted after delivery."""
    rows = queue.unfinished_local_actions()
    if rows:
        queue.mark_local_done(r.id for r in rows if pipeline.finish_local(r))

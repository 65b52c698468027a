"""Delivery: lease due rows, send them in requests on a pool of workers, settle the answers.

The dispatcher (a ``Loop``) owns every queue write of the delivery side. It leases due
rows, groups those that may share a request (``core.batching``) and queues the requests;
worker threads take them and send each on the shared ``httpx.Client``, at most
``core.concurrency``'s limit at once (fixed, or adapted to the link). The dispatcher sleeps
on an event until answers arrive, a file is queued, or the next retry is due: idle means
idle, not a polling loop. What each answer means, per file and for the whole service
(sporadic errors back off one file; an outage holds everything behind one probe; a wrong
key or URL pauses), is ``core.verdicts``'s.

A local delete or move (``after_upload``) happens only after the delivered state was
committed with a full sync.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue as stdqueue
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import tzinfo
from pathlib import Path
from typing import Any

from ..clock import Clock, system_clock
from ..config import IngestionConfig
from ..errors import Outcome, QueueError
from ..events import Event, Stats
from ..loop import Loop
from ..remote.ingestion import Answer, Uploader
from ..store.queue import Queue, Result, Row, State
from .after_upload import AfterUpload
from .batching import requests
from .concurrency import Concurrency
from .inflight import NOT_SENT, Done, Gate, Sent, row_sample
from .metering import BUDGET_FULL_KEY, OVERRIDE_KEY, Hold, Meter
from .verdicts import FailureRun, ServiceState, pause_cause, pushback

log = logging.getLogger(__name__)

QUEUE_RETRY_SECONDS = 5.0
GATHER_SECONDS = 0.02
"""Bulk mode: the longest a delivery waits before it is settled (with the others that came
back meanwhile, in one transaction)."""
PREFETCH = 32
"""Requests kept ready beyond the limit while a backlog drains: workers never wait for the
dispatcher, and leases come in batches (fewer, larger transactions)."""
MAX_LEASE = 1000
STATUS_EVERY_SECONDS = 10.0


class Delivery(Loop):
    """Delivers the queue; ``wake`` from sources, ``start``/``stop`` from the daemon."""

    def __init__(
        self, queue: Queue, uploader: Uploader, config: IngestionConfig, stats: Stats, *,
        clock: Clock = system_clock, rng: Callable[[], float] = random.random,
        watch_roots: Mapping[str, Path] | None = None, batch: str | None = None,
        prefetch: int = 0, tz: tzinfo | None = None,
    ) -> None:  # fmt: skip
        super().__init__("dispatcher")
        self.queue = queue
        self.uploader = uploader
        self.config = config
        self.stats = stats
        self.clock = clock
        self.after_upload = AfterUpload(watch_roots or {})
        self.batch = batch
        """Deliver only this batch's rows (the ``upload`` command); None: every row (daemon)."""
        self.prefetch = prefetch
        """Requests kept ready beyond the limit (bulk mode); 0: one per free slot."""
        self.more_coming: Callable[[], bool] = lambda: False
        """Whether intake holds files it has not recorded yet (set by the daemon)."""
        fixed = None if config.concurrency == "auto" else config.concurrency
        self.concurrency = Concurrency(fixed, config.max_concurrency)
        self.state = ServiceState(config, rng)
        self.meter = Meter(config.link, queue, tz)
        self.held: Hold | None = None
        """Why nothing is sent now (outside the windows, budget spent), for other threads."""
        self._woken = False
        self._usage = 0
        """Bytes sent that the queue's daily count does not have yet."""
        self._gate = Gate(lambda: 1 if self.state.probe else self.concurrency.limit)
        self._caution = threading.Event()
        """Set when the service is in trouble (paused, breaker open) or a window closed:
        workers start no waiting request until the dispatcher has decided."""
        self._failure_run = FailureRun()
        self._alarms = self._alarms_read = 0
        self._alarm_lock = threading.Lock()
        """Cautions set by workers, and those whose answer the dispatcher has read: the
        caution is lifted only when no alarm waits to be read."""
        self._work: stdqueue.PriorityQueue[tuple[float, int, list[Row] | None]] = (
            stdqueue.PriorityQueue())  # fmt: skip
        """Requests for the workers, the highest priority first, then in order."""
        self._seq = itertools.count()
        self._new_rows = False
        self._done: stdqueue.SimpleQueue[Sent] = stdqueue.SimpleQueue()
        self._inflight: dict[int, Row] = {}
        self._unsettled: list[Done] = []
        self._gather_since = 0.0
        self._requests_out = 0
        self._rows_per_request = 1 if config.max_files_per_request == 1 else 2
        """Rows leased per request wanted: doubles while every request fills, follows what
        the grouping achieved otherwise (at least 2, so that sharing is always tried)."""
        self._dry = False  # the last lease found fewer rows than it asked for
        self._alone: set[int] = set()
        self._queue_error: str | None = None
        self._workers: list[threading.Thread] = []
        self._stop_timeout = 5.0
        self._status_at = -STATUS_EVERY_SECONDS
        self._status_shown: tuple[int, bool] = (0, False)
        self._delivery_noted_at = -math.inf

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        paused = self.queue.get_state().get("paused")
        self.state.paused = str(paused) if paused else None
        if self.batch is None:
            self.queue.set_state(**{OVERRIDE_KEY: None})  # a new start: the windows hold
        self._add_workers(self.concurrency.limit)
        super().start()

    def _add_workers(self, wanted: int) -> None:
        """Worker threads are started as the limit first needs them (an idle daemon or a
        slow link that never needs 32 keeps fewer threads and less memory)."""
        while len(self._workers) < min(wanted, self.config.workers):
            t = threading.Thread(target=self._worker, name=f"upload-{len(self._workers)}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._workers.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop leasing, let in-flight uploads finish within ``timeout``, requeue the rest."""
        self._stop_timeout = timeout
        self._gate.close()  # no waiting request starts now; those out finish or time out
        super().stop(timeout + 1.0)  # its last settle may run just past the deadline
        for _ in self._workers:
            self._work.put((math.inf, next(self._seq), None))
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
        return self.state.paused

    def retry_now(self) -> None:
        """Drop every wait (used by ``retry-now`` and a reload with a new key). Whether
        ``retry-now`` also asked to send outside the windows is read by the dispatcher."""
        self.state.retry_now()
        self._woken = True
        self.wake()

    # -- workers -------------------------------------------------------------------------
    def _worker(self) -> None:
        while (rows := self._work.get()[2]) is not None:
            in_flight = None if self._caution.is_set() else self._gate.enter()
            if in_flight is None:  # trouble, or stopping: back to pending, no attempt
                self._done.put(Sent(rows, [NOT_SENT] * len(rows), 0.0))
                self.wake()
                continue
            self.concurrency.started(in_flight)
            started = time.monotonic()
            try:
                answers = self.uploader.upload_many([row_sample(r) for r in rows])
            except Exception as exc:
                log.exception("upload of %s failed unexpectedly", rows[0].path)
                answers = [Answer(Outcome.RETRY, f"internal error: {type(exc).__name__}: {exc}")]
                answers *= len(rows)
            finally:
                self._gate.leave()
            latency = time.monotonic() - started
            alarm = False
            try:
                latency, alarm = self._account(answers, latency)
            except Exception:  # the answers must still reach the dispatcher, or rows hang
                log.exception("accounting for an answer failed")
            self._done.put(Sent(rows, answers, latency, alarm))
            self.wake()

    def _account(self, answers: list[Answer], latency: float) -> tuple[float, bool]:
        """Feed one request's answers to the limit and the breaker's early count."""
        if self.uploader.throttle is not None:
            latency = max(0.0, latency - self.uploader.throttle.waited())
        refused_at_once = all(a.status is None and not a.timed_out for a in answers)
        self.concurrency.finished(None if refused_at_once else latency,
                                  pushback=any(pushback(a) for a in answers))  # fmt: skip
        outage = self._failure_run.add(answers, self.concurrency.at_floor)
        alarm = outage or any(a.outcome is Outcome.PAUSE for a in answers)
        if alarm:
            with self._alarm_lock:  # counted and set together: the dispatcher's check
                self._alarms += 1  # and clear cannot fall between the two
                self._caution.set()  # before the answer is seen: no worker starts more
        return latency, alarm

    # -- the dispatcher --------------------------------------------------------------------
    def step(self) -> float | None:
        try:
            self._collect()
            gather = self._gathering()
            if gather is None:
                self._settle_done()
            if self.stopping:
                return None
            timeout = self._dispatch()
            if gather is not None:
                timeout = gather if timeout is None else min(timeout, gather)
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

    def _gathering(self) -> float | None:
        """Bulk mode: how much longer to gather answers before they are written in one
        transaction (None: write now). Anything but a delivery is written at once (it may
        change what the service state allows), and so is the last answer out."""
        if not self.prefetch or not self._unsettled or self.stopping or not self._requests_out:
            return None
        left = self._gather_since + GATHER_SECONDS - time.monotonic()
        if left <= 0 or len(self._unsettled) >= MAX_LEASE:
            return None
        delivered = (Outcome.DELIVERED, Outcome.DUPLICATE)
        if any(d.answer.outcome not in delivered for d in self._unsettled):
            return None
        return left

    def _queue_failed(self, exc: QueueError) -> None:
        """Log a queue write failure once per distinct message (a full disk can last
        hours); results already received are kept and written on the next try."""
        text = str(exc)
        if text != self._queue_error:
            log.error("queue error: %s; nothing is lost, retrying every %.0f s", text,
                      QUEUE_RETRY_SECONDS)  # fmt: skip
        self._queue_error = text

    def _dispatch(self) -> float | None:
        """Lease and queue requests; return how long to sleep (None: until woken)."""
        now = self.clock()
        if now < self.state.hold_until:
            return self.state.hold_until - now
        if self.meter.active:
            held = self._metered(now)
            if held is not None:
                return held
        if self.state.probe or self.state.paused:
            if self._inflight:
                return None  # the probe is out: its answer decides
            asked = 1
        else:
            limit = self.concurrency.limit
            self._add_workers(limit)
            wanted = limit + self.prefetch - self._requests_out
            if wanted <= 0 or (self._requests_out > limit and wanted < self.prefetch // 4):
                self._lease_urgent(now, limit)
                return None  # enough requests wait for the workers: lease in batches
            if self._dry and self._requests_out and self.more_coming():
                return None  # a request is out and intake is recording more: lease them
                # together when it is done or an answer comes, not a few rows at each wake
            full = self.config.max_files_per_request  # or a backlog goes in small requests
            asked = min(MAX_LEASE, max(wanted * self._rows_per_request, full))
        rows = self.queue.lease(asked, now, batch=self.batch)
        self._dry = len(rows) < asked
        with self._alarm_lock:  # the hold is over: what is leased may go out
            if self._alarms_read == self._alarms:
                self._caution.clear()
        if rows:
            self._queue_requests(rows, full=len(rows) == asked)
        closes = self.meter.closes_at(now) if self.meter.active else None
        wait = None if closes is None else max(0.0, closes - now) + 0.001
        if len(rows) < asked:
            due = self.queue.next_due(batch=self.batch)
            if due is not None:
                due_in = max(0.0, due - self.clock()) + 0.001
                wait = due_in if wait is None else min(wait, due_in)
        return wait

    def queued(self) -> None:
        """Intake recorded files (they may outrank what waits for the workers)."""
        self._new_rows = True
        self.wake()

    def _lease_urgent(self, now: float, limit: int) -> None:
        """New files of a higher priority than any in flight go ahead of the requests that
        wait (a sensor window does not wait behind a prefetched backlog of video)."""
        if not self._new_rows or not self._inflight:
            return
        self._new_rows = False
        floor = min(r.priority for r in self._inflight.values())
        rows = self.queue.lease(limit, now, batch=self.batch, above=floor)
        if rows:
            self._queue_requests(rows, full=False)

    def _metered(self, now: float) -> float | None:
        """Outside the windows or over the budget: nothing queued starts, nothing is
        leased; how long to sleep (None: sending is allowed)."""
        if self._woken:
            self._woken = False
            if self.queue.get_state().get(OVERRIDE_KEY) and not self.meter.override:
                self.meter.override = True
                log.info("retry-now: uploads go outside the upload windows until the next stop")
        held = self.held = self.meter.hold(now)
        if held is None:
            return None
        if held.window:  # the window closed: what waits for a worker stays queued
            self._caution.set()
            back = self._unstarted()
            if back:
                self.queue.requeue(r.id for r in back)
                for row in back:
                    del self._inflight[row.id]
                self.meter.settled(sum(r.size for r in back), 0, now)
        return max(0.0, held.until - now) + 0.001

    def _queue_requests(self, rows: list[Row], *, full: bool) -> None:
        self.stats.progress()
        cfg = self.config
        grouped = requests(rows, cfg.max_files_per_request, cfg.max_request_bytes, self._alone)
        if full and cfg.max_files_per_request > 1:
            achieved = len(rows) // len(grouped)
            filled = achieved * 10 >= self._rows_per_request * 9
            grown = min(cfg.max_files_per_request, self._rows_per_request * 2)
            self._rows_per_request = grown if filled else max(2, achieved)
        fits = self.meter.fit(grouped, self.clock())
        if fits < len(grouped):  # over today's budget: back to the queue, no attempt
            self.queue.requeue(r.id for request in grouped[fits:] for r in request)
            self.queue.set_state(**{BUDGET_FULL_KEY: self.meter.full})
            grouped = grouped[:fits]
        for request in grouped:
            for row in request:
                self._inflight[row.id] = row
            self._requests_out += 1
            self._work.put((-max(r.priority for r in request), next(self._seq), request))

    # -- answers ---------------------------------------------------------------------------
    def _collect(self) -> None:
        while True:
            try:
                sent = self._done.get_nowait()
            except stdqueue.Empty:
                return
            self._requests_out -= 1
            self._alarms_read += sent.alarm
            if not self._unsettled:
                self._gather_since = time.monotonic()
            went = sum(r.size for r, a in zip(sent.rows, sent.answers, strict=True)
                       if a is not NOT_SENT and a.outcome is not Outcome.GONE)  # fmt: skip
            self._usage += went
            self.meter.settled(sum(r.size for r in sent.rows), went, self.clock())
            pairs = zip(sent.rows, sent.answers, strict=True)
            request = next(self._seq)  # any number that names this request once
            self._unsettled.extend(Done(r, a, sent.latency, request=request) for r, a in pairs)

    def _settle_done(self) -> None:
        """Write the finished uploads back. Rows stay in flight until the write commits:
        when it fails (a full disk), the same results are written on the next try."""
        self._collect()
        done = self._unsettled = [d for d in self._unsettled if d.row.id in self._inflight]
        if not done:
            return
        now = self.clock()
        for d in done:
            if not d.decided:  # NOT_SENT: result None, back to pending, no attempt, no event
                d.result = None if d.answer is NOT_SENT else self._verdict(d, now)
                d.decided = True
        if self.state.probe or self.state.paused:
            self._caution.set()
            done.extend(Done(row, NOT_SENT, 0.0, True) for row in self._unstarted())
        results = [d.result for d in done if d.result is not None]
        local = [d.row for d in done if d.result is not None and d.result.state is
                 State.DELIVERED and d.row.after_upload != "keep"]  # fmt: skip
        usage = (self.meter.day, self._usage)
        self.queue.settle(results, durable=bool(local), facts=self._facts(done, now),
                          sent=usage)  # fmt: skip
        self._usage = 0
        settled = [d for d in done if d.result is not None]
        requeue = [d.row.id for d in done if d.result is None]
        self._unsettled = [d for d in done if d.result is None]
        for d in settled:
            del self._inflight[d.row.id]
            self._alone.discard(d.row.id)
        self.stats.progress()
        for d in settled:
            self._report(d)
        if local:
            self.queue.mark_local_done(self.after_upload.finish_all(local))
        if requeue:
            self.queue.requeue(requeue)
            for row_id in requeue:
                del self._inflight[row_id]
            self._unsettled = []

    def _verdict(self, d: Done, now: float) -> Result | None:
        verdict = self.state.verdict(d.row, d.answer, now, self.concurrency.at_floor, d.request,
                                     rtt=self.concurrency.rtt)  # fmt: skip
        if verdict.alone:
            self._alone.add(d.row.id)
        if self.state.newly_paused:
            self.queue.set_state(paused=self.state.newly_paused)
            self.stats.emit(Event.PAUSED, reason=self.state.newly_paused)
            url = pause_cause(self.state.newly_paused) == "url"
            log.error("uploads paused: %s. %s %s; nothing is dead-lettered; next try in %.0f s",
                      self.state.newly_paused, "Fix the URL" if url else
                      "The service refused the API key: fix the key for", self.uploader.url,
                      self.config.auth_pause_seconds)  # fmt: skip
        if self.state.resumed:
            self.queue.set_state(paused=None)
            self.stats.emit(Event.RESUMED)
        return verdict.result

    def _unstarted(self) -> list[Row]:
        """Take back the requests no worker has started (the service is in trouble)."""
        rows: list[Row] = []
        while True:
            try:
                item = self._work.get_nowait()
            except stdqueue.Empty:
                return rows
            request = item[2]
            if request is None:  # a stop sentinel: leave it for the workers
                self._work.put(item)
                return rows
            self._requests_out -= 1
            rows.extend(request)

    def _report(self, d: Done) -> None:
        a, row = d.answer, d.row
        info: dict[str, Any] = {"path": row.path, "row_id": row.id, "reason": a.reason,
                                "latency": d.latency}  # fmt: skip
        if a.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            event = Event.DELIVERED if a.outcome is Outcome.DELIVERED else Event.DUPLICATE
            info.update(sample_id=a.sample_id, bytes=row.size)
            log.info("%s %s sample_id=%s category=%s", event.value, row.path, a.sample_id,
                     row.category)  # fmt: skip
        elif d.result is not None and d.result.state is State.DEAD:
            event = Event.DEAD
            log.warning("dead-lettered %s: %s", row.path, a.reason)
        elif a.outcome is Outcome.GONE:
            event = Event.GONE
            log.info("skipped %s: %s", row.path, a.reason)
        else:
            event = Event.RETRY
            log.info("will retry %s: %s", row.path, a.reason)
        self.stats.emit(event, **info)

    def _facts(self, done: list[Done], now: float) -> dict[str, object]:
        """Facts for ``status``, written with the round's results (not once per file, and
        the time of the last delivery at most once a second)."""
        facts: dict[str, object] = {}
        for d in done:
            if d.answer.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                if now - self._delivery_noted_at >= 1.0 or now < self._delivery_noted_at:
                    facts["last_delivery_at"] = self._delivery_noted_at = now
            elif d.answer.outcome is Outcome.RETRY and d.answer is not NOT_SENT:
                facts["last_error"] = d.answer.reason
        limit, rtt = self.concurrency.limit, self.concurrency.rtt
        shown = (limit, self.state.outage)
        if shown != self._status_shown or now - self._status_at >= STATUS_EVERY_SECONDS:
            facts["concurrency"] = {
                "limit": limit,
                "maximum": self.concurrency.maximum,
                "adaptive": self.concurrency.adaptive,
                "outage": self.state.outage,
                "rtt_ms": None if rtt is None else round(rtt * 1000, 1),
            }
            self._status_shown, self._status_at = shown, now
        return facts

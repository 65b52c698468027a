"""Intake: from "a file exists" to a queued row, for every source.

The watcher, the reconciliation scan, capture sources and the ``upload`` command hand
files here as ``Item``s. For each, intake applies the file rules (``core.files``), reads
its sidecar (``core.sidecar``), runs the tagger (``core.tagger``) and records the batch in
the queue in one transaction (``Queue.record``), then wakes delivery. A file whose sidecar
or metadata cannot be used is recorded as *held* with the reason, so it is neither lost
nor sent with wrong metadata; fixing the sidecar releases it.

``submit`` hands an item to the intake thread (a bounded queue: a scan of 100,000 files
blocks there instead of buffering them); ``process`` decides a batch on the caller's
thread (the ``upload`` command feeds it directly).
"""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SPLIT_BY_GROUP, Config, WatchConfig
from ..errors import InputError, QueueError
from ..events import Event, Stats
from ..loop import Loop
from ..store.queue import NewFile, Queue, Recorded, State
from .files import VANISHED, ignored_name, stat_sample
from .sidecar import data_path, is_sidecar, read_sidecar
from .tagger import Context, Tagged, tag

log = logging.getLogger(__name__)

BATCH = 256
FIRST_BATCH = 32
"""The first batch after intake was idle: its files can be sent once it is recorded, so a
backlog's first upload does not wait for 256 files (about 70 ms); batches then double
to ``BATCH`` while files keep waiting (few, large transactions on a long backlog)."""
MAX_WAITING = 4 * BATCH
"""Items waiting for intake; a scan of 100,000 files blocks here instead of buffering them."""

OnQueued = Callable[[int | None, str | None], None]
"""Called with (row id or None, reason if not queued or held) once an item is decided."""


@dataclass(frozen=True)
class Item:
    path: Path
    watch: WatchConfig | None = None
    context: Context | None = None
    tagged: Tagged | None = None
    """Tags decided by the source itself (a capture command); then no sidecar is read."""
    source: str | None = None
    after_upload: str | None = None
    move_to: str | None = None
    allow_duplicates: bool | None = None
    upload_name: str | None = None
    extra: dict[str, object] | None = None
    batch: str | None = None
    on_queued: OnQueued | None = field(default=None, compare=False)
    stat: os.stat_result | None = field(default=None, compare=False)
    """The file's status as the source just read it (a folder walk): not asked again."""
    no_sidecar: bool = False
    """The source listed the file's folder and saw no sidecar for it: none is opened."""


def new_file(item: Item, config: Config, st: os.stat_result) -> NewFile:
    """The row a checked file would become: sidecar read and tagger run, no queue I/O.

    A sidecar or metadata that cannot be used gives a *held* row with the reason. The
    ``upload --dry-run`` preview calls this too, so it shows exactly what would be queued.
    """
    path, watch = item.path, item.watch
    state, error = State.PENDING, None
    tagged = item.tagged or Tagged(None, config.ingestion.category, {})
    if item.tagged is None:
        try:
            sidecar = None if item.no_sidecar else read_sidecar(path)
            tagged = tag(path, config, mtime=st.st_mtime, watch=watch, sidecar=sidecar,
                         context=item.context)  # fmt: skip
        except InputError as exc:
            state, error = State.HELD, str(exc)
    category = tagged.category if tagged.category != SPLIT_BY_GROUP else "training"
    return NewFile(
        path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
        source=item.source or (watch.key if watch else "upload"),
        label=tagged.label, category=category, metadata=tagged.metadata,
        state=state, last_error=error,
        after_upload=item.after_upload or (watch.after_upload if watch else "keep"),
        move_to=item.move_to or (str(watch.move_to) if watch and watch.move_to else None),
        allow_duplicates=(item.allow_duplicates if item.allow_duplicates is not None
                          else config.ingestion.allow_duplicates),
        upload_name=item.upload_name, extra=item.extra, batch=item.batch,
        priority=watch.priority if watch else 0,
    )  # fmt: skip


class Intake(Loop):
    """Thread-safe front door of the queue."""

    def __init__(
        self, queue: Queue, config: Config, stats: Stats, on_queued: Callable[[], None],
        on_missed: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        """``on_missed``: files could not be recorded (a full disk): a rescan must come
        soon, not at the next scan interval."""
        super().__init__("intake")
        self.queue = queue
        self.config = config
        self.stats = stats
        self.on_queued = on_queued
        self.on_missed = on_missed
        self._items: stdqueue.Queue[Item | None] = stdqueue.Queue(maxsize=MAX_WAITING)
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._drained = False
        self._batch = FIRST_BATCH

    def submit(self, item: Item) -> None:
        """Hand a file to intake; blocks while ``MAX_WAITING`` items wait (backpressure)."""
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._items.put(item)

    def more_coming(self) -> bool:
        """Files wait behind the batch being recorded (a scan is handing over a backlog)."""
        return self._items.qsize() > 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted item is decided (for scans and tests)."""
        return self._idle.wait(timeout)

    # -- the loop ------------------------------------------------------------------------
    def running(self) -> bool:
        return not self._drained  # a stop drains what was submitted before it

    def interrupt(self) -> None:
        try:
            self._items.put(None, timeout=10)
        except stdqueue.Full:
            log.warning("intake did not drain in time; a rescan will find what it missed")
            self._drained = True

    def step(self) -> float | None:
        first = self._items.get()
        items = [] if first is None else [first]
        self._drained = first is None
        while not self._drained and len(items) < self._batch:
            try:
                nxt = self._items.get_nowait()
            except stdqueue.Empty:
                break
            if nxt is None:
                self._drained = True
            else:
                items.append(nxt)
        # a full batch with more waiting: a backlog, take more at once; else start small
        full = len(items) >= self._batch and self._items.qsize() > 0
        self._batch = min(2 * self._batch, BATCH) if full else FIRST_BATCH
        try:
            self.process(items)
        except QueueError as exc:
            log.error("could not record %d file(s): %s; a rescan will find them", len(items), exc)
            self.on_missed()
        except Exception:  # one bad batch must not stall the next: log it and go on
            log.exception("intake failed on a batch of %d file(s)", len(items))
        finally:
            with self._lock:
                self._pending = max(0, self._pending - len(items))
                if self._pending == 0:
                    self._idle.set()
        return 0.0

    # -- the work ------------------------------------------------------------------------
    def process(self, items: Sequence[Item]) -> list[int]:
        """Decide a batch synchronously; returns the ids of newly queued rows."""
        decided: list[tuple[Item, NewFile]] = []
        versions: set[tuple[str, int, int]] = set()
        for item in items:
            f = self._decide(item)
            if f is None or (f.path, f.size, f.mtime_ns) in versions:
                continue
            versions.add((f.path, f.size, f.mtime_ns))
            decided.append((item, f))
        if not decided:
            return []
        try:
            recorded = self.queue.record([f for _, f in decided])
        except QueueError as exc:
            for item, _ in decided:  # a capture command waits for its file's fate
                if item.on_queued is not None:
                    item.on_queued(None, f"not recorded in the queue: {exc}")
            raise
        for (item, f), r in zip(decided, recorded, strict=True):
            self._report(item, f, r)
        if any(r.new or r.released or (r.joined and r.state is State.PENDING)
               for r in recorded):  # fmt: skip
            self.on_queued()  # a pending row that joined a batch: its delivery waits for it
        return [r.row_id for r in recorded if r.new]

    def _decide(self, item: Item) -> NewFile | None:
        path = item.path
        if is_sidecar(path):
            self._sidecar_changed(path)
            return None
        if ignored_name(path.name):
            self._skip(item, "hidden or temporary name", quiet=True)
            return None
        self.stats.emit(Event.SEEN, path=str(path))
        st = stat_sample(path, item.stat)
        if isinstance(st, str):
            self._skip(item, st, quiet=st == VANISHED)
            return None
        return new_file(item, self.config, st)

    def _report(self, item: Item, f: NewFile, r: Recorded) -> None:
        if r.new and f.state is State.HELD:
            log.warning("held %s: %s", f.path, f.last_error)
            self.stats.emit(Event.HELD, path=f.path, row_id=r.row_id, reason=f.last_error)
        elif r.new:
            if log.isEnabledFor(logging.INFO):  # its arguments cost a backlog per file
                log.info("queued %s category=%s label=%s", f.path, f.category,
                         "(from file name)" if f.label is None else repr(f.label))  # fmt: skip
            self.stats.emit(Event.QUEUED, path=f.path, row_id=r.row_id)
        elif r.released:
            log.info("released %s: it can be sent now", f.path)
            self.stats.emit(Event.QUEUED, path=f.path, row_id=r.row_id)
        if item.on_queued is not None:
            item.on_queued(r.row_id, f.last_error if r.new else None)

    def _skip(self, item: Item, reason: str, *, quiet: bool = False) -> None:
        (log.debug if quiet else log.warning)("skipped %s: %s", item.path, reason)
        self.stats.emit(Event.SKIPPED, path=str(item.path), reason=reason)
        if item.on_queued is not None:
            item.on_queued(None, reason)

    def _sidecar_changed(self, side: Path) -> None:
        """A sidecar was written: release the held data file it belongs to, re-tagged."""
        data = data_path(side)
        for row in self.queue.held_for(str(data)):
            try:
                tagged = tag(data, self.config, mtime=row.mtime_ns / 1e9,
                             watch=self.config.watch_for_key(row.source),
                             sidecar=read_sidecar(data))  # fmt: skip
            except InputError as exc:
                log.warning("still held %s: %s", data, exc)
                continue
            self.queue.retag(row.id, NewFile(
                path=row.path, size=row.size, mtime_ns=row.mtime_ns, source=row.source,
                label=tagged.label, category=tagged.category, metadata=tagged.metadata,
            ))  # fmt: skip
            log.info("released %s: its sidecar is now valid", data)
            self.stats.emit(Event.QUEUED, path=row.path, row_id=row.id)
            self.on_queued()

"""Intake: from "a file exists" to a queued row, for every source.

The watcher, the reconciliation scan, capture sources and the ``upload`` command all hand
files here. Intake filters names, checks the file (regular, non-empty, readable), reads
its sidecar, runs the tagger and records the result in the queue in batches. A file whose
sidecar or metadata cannot be used is recorded as *held* with the reason, so it is neither
lost nor sent with wrong metadata; fixing the sidecar releases it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue as stdqueue
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, WatchConfig
from ..errors import InputError, QueueError
from ..events import Event, Stats
from ..store.queue import NewFile, Queue, State
from .tagger import Context, is_sidecar, read_sidecar, tag

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
BATCH = 256
MAX_WAITING = 4 * BATCH
"""Items waiting for intake; a scan of 100,000 files blocks here instead of buffering them."""


def ignored_name(name: str) -> bool:
    """Hidden and temporary names are never samples (writers rename them into place)."""
    low = name.lower()
    return name.startswith(".") or low.endswith(TEMP_SUFFIXES) or low.endswith(".meta.json")


def matches(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p) for p in patterns)


@dataclass(frozen=True)
class Item:
    path: Path
    watch: WatchConfig | None = None
    context: Context | None = None
    source: str | None = None
    after_upload: str | None = None
    move_to: str | None = None
    allow_duplicates: bool | None = None
    upload_name: str | None = None
    extra: dict[str, object] | None = None
    batch: str | None = None
    on_queued: Callable[[int | None, str | None], None] | None = field(default=None, compare=False)
    """Called with (row id or None, reason if not queued) once the item is decided."""


def walk(root: Path, recursive: bool) -> Iterator[Path]:
    """Regular files under ``root`` (no symlinked folders), skipping hidden folders."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)
            except OSError:
                continue


VANISHED = "vanished before it could be queued"


def stat_sample(path: Path) -> os.stat_result | str:
    """The file's status if it can be a sample (regular, non-empty, readable), else why not."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return VANISHED
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "not readable by the agent"
    return st


def new_file(item: Item, config: Config, st: os.stat_result) -> NewFile:
    """The row a checked file would become: sidecar read and tagger run, no queue I/O.

    A sidecar or metadata that cannot be used gives a *held* row with the reason. The
    ``upload --dry-run`` preview calls this too, so it shows exactly what would be queued.
    """
    path, watch = item.path, item.watch
    state, error = State.PENDING, None
    label: str | None = None
    category = config.ingestion.category
    metadata: dict[str, str] = {}
    try:
        sidecar = read_sidecar(path)
        tagged = tag(path, config, mtime=st.st_mtime, watch=watch, sidecar=sidecar,
                     context=item.context)  # fmt: skip
        label, category, metadata = tagged.label, tagged.category, tagged.metadata
    except InputError as exc:
        state, error = State.HELD, str(exc)
    return NewFile(
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        source=item.source or (watch.key if watch else "upload"),
        label=label,
        category=category if category != "split-by-group" else "training",
        metadata=metadata,
        state=state,
        last_error=error,
        after_upload=item.after_upload or (watch.after_upload if watch else "keep"),
        move_to=item.move_to or (str(watch.move_to) if watch and watch.move_to else None),
        allow_duplicates=(
            item.allow_duplicates
            if item.allow_duplicates is not None
            else config.ingestion.allow_duplicates
        ),
        upload_name=item.upload_name,
        extra=item.extra,
        batch=item.batch,
    )


class Intake:
    """Thread-safe front door of the queue. ``submit`` never blocks on I/O."""

    def __init__(
        self, queue: Queue, config: Config, stats: Stats, on_queued: Callable[[], None]
    ) -> None:
        self.queue = queue
        self.config = config
        self.stats = stats
        self.on_queued = on_queued
        self._items: stdqueue.Queue[Item | None] = stdqueue.Queue(maxsize=MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._items.put(None, timeout=10)
            except stdqueue.Full:
                log.warning("intake did not drain in time; a rescan will find what it missed")
            self._thread.join(10)

    def alive(self) -> bool:
        """The intake thread runs (for the health check)."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, item: Item) -> None:
        """Hand a file to intake; blocks while ``MAX_WAITING`` items wait (backpressure)."""
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._items.put(item)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted item is decided (for scans and tests)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            first = self._items.get()
            if first is None:
                return
            items = [first]
            stop = False
            while len(items) < BATCH:
                try:
                    nxt = self._items.get_nowait()
                except stdqueue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            try:
                self.process(items)
            except QueueError as exc:
                log.error(
                    "could not record %d file(s): %s; a rescan will find them", len(items), exc
                )
            except Exception:
                log.exception("intake failed on a batch of %d file(s)", len(items))
            finally:
                with self._lock:
                    self._pending -= len(items)
                    if self._pending <= 0:
                        self._pending = 0
                        self._idle.set()
            if stop:
                return

    # -- the work ------------------------------------------------------------------------
    def process(self, items: Sequence[Item]) -> list[int]:
        """Decide a batch synchronously; returns the ids of newly queued rows."""
        new: list[NewFile] = []
        callbacks: list[tuple[Item, NewFile]] = []
        adopt: list[tuple[str, int, int, str]] = []
        paths: set[tuple[str, int, int]] = set()
        for item in items:
            decided = self._decide(item, adopt)
            if decided is None:
                continue
            version = (decided.path, decided.size, decided.mtime_ns)
            if version in paths:
                continue
            paths.add(version)
            new.append(decided)
            callbacks.append((item, decided))
        for batch in {a[3] for a in adopt}:
            self.queue.adopt([a[:3] for a in adopt if a[3] == batch], batch)
        if not new:
            return []
        try:
            ids = self.queue.enqueue_many(new)
        except QueueError as exc:
            # tell waiting sources (a capture command) that their file is not queued yet
            for item, _ in callbacks:
                if item.on_queued is not None:
                    item.on_queued(None, f"not recorded in the queue: {exc}")
            raise
        for item, f in callbacks:
            if f.state is State.HELD:
                log.warning("held %s: %s", f.path, f.last_error)
                self.stats.emit(Event.HELD, path=f.path, reason=f.last_error)
            else:
                log.info("queued %s category=%s label=%s", f.path, f.category,
                         "(from file name)" if f.label is None else repr(f.label))  # fmt: skip
                self.stats.emit(Event.QUEUED, path=f.path)
            if item.on_queued is not None:
                row = self.queue.latest_for_path(f.path)
                item.on_queued(row.id if row else None, f.last_error)
        if ids:
            self.on_queued()
        return ids

    def _decide(self, item: Item, adopt: list[tuple[str, int, int, str]]) -> NewFile | None:
        path = item.path
        if is_sidecar(path):
            self._sidecar_changed(path)
            return None
        if ignored_name(path.name):
            self._skip(item, "hidden or temporary name", quiet=True)
            return None
        self.stats.emit(Event.SEEN, path=str(path))
        st = stat_sample(path)
        if isinstance(st, str):
            self._skip(item, st, quiet=st == VANISHED)
            return None
        if self.queue.known(str(path), st.st_size, st.st_mtime_ns):
            if item.batch is not None:
                adopt.append((str(path), st.st_size, st.st_mtime_ns, item.batch))
                self._release_held(item, st)
            if item.on_queued is not None:
                row = self.queue.latest_for_path(str(path))
                item.on_queued(row.id if row else None, None)
            return None
        return new_file(item, self.config, st)

    def _release_held(self, item: Item, st: os.stat_result) -> None:
        """An ``upload`` re-run names a file held last time: tag it again (its sidecar may be
        fixed now, or the options changed) and queue it if it is sendable now."""
        row = self.queue.latest_for_path(str(item.path))
        if row is None or row.state is not State.HELD or row.size != st.st_size:
            return
        f = new_file(item, self.config, st)
        if f.state is State.PENDING:
            self.queue.retag(row.id, f)
            log.info("released %s: it can be sent now", item.path)
            self.stats.emit(Event.QUEUED, path=f.path)
            self.on_queued()

    def _skip(self, item: Item, reason: str, *, quiet: bool = False) -> None:
        (log.debug if quiet else log.warning)("skipped %s: %s", item.path, reason)
        self.stats.emit(Event.SKIPPED, path=str(item.path), reason=reason)
        if item.on_queued is not None:
            item.on_queued(None, reason)

    def _sidecar_changed(self, side: Path) -> None:
        """A sidecar was written: release the held data file it belongs to, re-tagged."""
        data = side.with_name(side.name[: -len(".meta.json")])
        for row in self.queue.held_for(str(data)):
            watch = next((w for w in self.config.watches if w.key == row.source), None)
            try:
                sidecar = read_sidecar(data)
                tagged = tag(data, self.config, mtime=row.mtime_ns / 1e9, watch=watch,
                             sidecar=sidecar)  # fmt: skip
            except InputError as exc:
                log.warning("still held %s: %s", data, exc)
                continue
            self.queue.retag(row.id, NewFile(
                path=row.path, size=row.size, mtime_ns=row.mtime_ns, source=row.source,
                label=tagged.label, category=tagged.category, metadata=tagged.metadata,
            ))  # fmt: skip
            log.info("released %s: its sidecar is now valid", data)
            self.stats.emit(Event.QUEUED, path=row.path)
            self.on_queued()

"""The directory watcher: watchdog's inotify observer, acting when a file is complete.

With inotify a file is complete when a writer closes it after writing (``IN_CLOSE_WRITE``,
watchdog's ``FileClosedEvent``) or when it is renamed into place (``FileMovedEvent``, also
from a folder outside the watch: the observer runs with full move events, so such a move
is not mistaken for a bare create); ``created``/``modified`` are ignored there, so a
half-written file is never queued. A folder moved into a watch is walked at once: its files
are complete and bring no events of their own. A folder *created* inside a watch is walked
too (files may have been written before its watch was added), but its files are taken
through the settle timer below, since a writer may still hold them open; their close events
usually come first.

Where only polling works (network file systems, ``force_polling = true``), there are no
close events: a file is taken once its size and modification time have not changed for
``settle_seconds``. The settle timer only runs while some file is settling.

A source that renames a file into a watched folder and queues it itself (the daemon's own
captures) ``claim``s the path first, so the file is submitted once, not twice.

The reconciliation scan (``sources.scan``) catches everything events missed: files
written while the agent was down, or during a crash. When the kernel's inotify queue
overflows (``IN_Q_OVERFLOW``: more events than ``fs.inotify.max_queued_events``, e.g.
20,000 files dropped at once), events are lost: watchdog rebuilds its watches and logs
it, and the watcher calls ``on_overflow`` so the daemon scans at once instead of at the
next ``scan_interval_seconds``.

Symbolic links are never followed: a link in a watched folder (to a file or a folder) is
not a sample, its target is not watched and the scan does not walk into it; a file is
opened with ``O_NOFOLLOW`` when it is sent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import WatchConfig
from ..core.files import walk, wanted
from ..core.intake import Item
from ..core.sidecar import data_path, is_sidecar
from ..events import Event, Stats
from ..loop import Loop

log = logging.getLogger(__name__)

Submit = Callable[[Item], None]
CLAIM_SECONDS = 60.0
MAX_CLAIMS = 1024
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
OVERFLOW_MARK = "queue overflowed"
"""watchdog reports ``IN_Q_OVERFLOW`` only by this warning of its inotify module."""


class _OverflowAlarm(logging.Filter):
    """Hears watchdog's overflow warning (and lets it through to the log)."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self.on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if OVERFLOW_MARK in record.getMessage():
            try:
                self.on_overflow()
            except Exception:  # the alarm must never break watchdog's reading thread
                log.exception("while reacting to an inotify overflow")
        return True


_NOTIFIED = (FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirDeletedEvent, DirMovedEvent,
             DirCreatedEvent)  # fmt: skip
"""What the handler acts on under inotify. Asking the kernel for these alone matters: by
default every open, read-only close and write of a watched file is an event, so each file
the agent reads to upload it would cost three events parsed in Python."""


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, watch: WatchConfig, polling: bool) -> None:
        self.watcher = watcher
        self.watch = watch
        self.polling = polling

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            log.exception("while handling %s", event)

    def _handle(self, event: FileSystemEvent) -> None:
        if event.is_synthetic:
            return  # watchdog's per-file events for a moved folder: the walk covers them
        if isinstance(event, FileClosedEvent):
            self.watcher.found(Path(_s(event.src_path)), self.watch)
        elif isinstance(event, FileMovedEvent):
            self.watcher.gone(Path(_s(event.src_path)), self.watch, False)
            if event.dest_path:  # empty: moved out of the watch
                self.watcher.found(Path(_s(event.dest_path)), self.watch)
        elif isinstance(event, FileDeletedEvent | DirDeletedEvent):
            self.watcher.gone(Path(_s(event.src_path)), self.watch, event.is_directory)
        elif isinstance(event, DirMovedEvent):
            self.watcher.gone(Path(_s(event.src_path)), self.watch, True)
            # polling reports every file of a moved folder as moved: no walk needed there
            if event.dest_path and self.watch.recursive and not self.polling:
                self.watcher.found_folder(Path(_s(event.dest_path)), self.watch)
        elif isinstance(event, DirCreatedEvent):
            if self.watch.recursive:
                self.watcher.found_folder(Path(_s(event.src_path)), self.watch, settle=True)
        elif self.polling and isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self.watcher.settling(Path(_s(event.src_path)), self.watch)


def _s(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class Watcher:
    """Watches every ``[[watch]]`` folder and submits each complete file to intake; a file
    or folder that leaves a watch (deleted, moved away) is an ``Event.REMOVED``."""

    def __init__(
        self, watches: tuple[WatchConfig, ...], submit: Submit, stats: Stats | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.watches = watches
        self.submit = submit
        self.stats = stats
        self._alarm = _OverflowAlarm(on_overflow) if on_overflow is not None else None
        self._observers: list[BaseObserver] = []
        self._settler = _Settler(self)
        self._claims: dict[Path, float] = {}
        self._claims_lock = threading.Lock()

    def start(self) -> None:
        polled = [w for w in self.watches if w.force_polling]
        notified = [w for w in self.watches if not w.force_polling]
        if notified:
            problem = self._start_inotify(notified)
            if problem is not None:
                log.warning("inotify unavailable (%s); polling with a settle time instead", problem)
                polled.extend(notified)
        if polled:
            interval = max(0.5, min(min(w.settle_seconds for w in polled), 5.0))
            polling = PollingObserver(timeout=interval)
            for w in polled:
                polling.schedule(_Handler(self, w, True), str(w.path), recursive=w.recursive)
            polling.start()
            self._observers.append(polling)
        if self._observers:
            self._settler.start()
        for w in self.watches:
            log.info("watching %s%s", w.path, " (polling)" if w in polled else "")

    def _start_inotify(self, watches: list[WatchConfig]) -> str | None:
        """Start the event observer; why it cannot run here, or None."""
        inotify = _event_observer()
        for w in watches:
            inotify.schedule(_Handler(self, w, False), str(w.path), recursive=w.recursive,
                             event_filter=list(_NOTIFIED))  # fmt: skip
        if type(inotify).__name__ != "InotifyObserver":
            return "no close-after-write events on this platform"
        try:
            inotify.start()
        except OSError as exc:  # e.g. fs.inotify.max_user_watches reached
            return str(exc)
        self._observers.append(inotify)
        if self._alarm is not None:
            overflow_log = logging.getLogger(OVERFLOW_LOGGER)
            overflow_log.setLevel(min(overflow_log.getEffectiveLevel(), logging.WARNING))
            overflow_log.addFilter(self._alarm)
        return None

    def stop(self) -> None:
        if self._alarm is not None:
            logging.getLogger(OVERFLOW_LOGGER).removeFilter(self._alarm)
        self._settler.stop()
        for obs in self._observers:
            obs.stop()
        for obs in self._observers:
            obs.join(5)
        self._observers.clear()

    def claim(self, path: Path) -> None:
        """The caller submits ``path`` itself (a capture it is about to rename into place):
        its next event, and its sidecar's, are not reported. Claims expire after
        ``CLAIM_SECONDS``."""
        now = time.monotonic()
        with self._claims_lock:
            if len(self._claims) >= MAX_CLAIMS:
                self._claims = {p: t for p, t in self._claims.items() if t > now}
            self._claims[path] = now + CLAIM_SECONDS

    def _claimed(self, path: Path) -> bool:
        """A claimed file's event is dropped once; its sidecar's (written just before the
        file is renamed into place) is dropped too, leaving the claim for the file."""
        with self._claims_lock:
            if is_sidecar(path):
                until = self._claims.get(data_path(path))
            else:
                until = self._claims.pop(path, None)
        return until is not None and until > time.monotonic()

    def found(self, path: Path, watch: WatchConfig) -> None:
        if wanted(path, watch):
            self._settler.forget(path)  # complete now: no need to wait for it to settle
            if not self._claimed(path):
                self.submit(Item(path=path, watch=watch))

    def gone(self, path: Path, watch: WatchConfig, is_dir: bool) -> None:
        if self.stats is not None and (is_dir or wanted(path, watch)):
            self.stats.emit(Event.REMOVED, path=str(path), is_dir=is_dir, watch=watch.key)

    def found_folder(self, folder: Path, watch: WatchConfig, *, settle: bool = False) -> None:
        """Report the files under ``folder``; with ``settle``, once they stopped changing."""
        if not folder.is_dir():
            return
        for path in walk(folder, watch.recursive):
            if settle:
                self.settling(path, watch)
            else:
                self.found(path, watch)

    def settling(self, path: Path, watch: WatchConfig) -> None:
        """Polling fallback: take ``path`` once it has not changed for ``settle_seconds``."""
        if wanted(path, watch):
            self._settler.add(path, watch)


class _Settler(Loop):
    """The settle timer: runs only while some file is settling."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__("settle")
        self.watcher = watcher
        self._files: dict[Path, tuple[WatchConfig, float, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def add(self, path: Path, watch: WatchConfig) -> None:
        sig = _signature(path)
        if sig is None:
            return
        with self._lock:
            self._files[path] = (watch, time.monotonic() + watch.settle_seconds, sig)
        self.wake()

    def forget(self, path: Path) -> None:
        with self._lock:
            self._files.pop(path, None)

    def step(self) -> float | None:
        now = time.monotonic()
        with self._lock:
            ready = [(p, w, s) for p, (w, due, s) in self._files.items() if due <= now]
            for p, _, _ in ready:
                del self._files[p]
        for p, w, s in ready:
            current = _signature(p)
            if current is None:
                continue
            if current != s:
                with self._lock:
                    self._files[p] = (w, now + w.settle_seconds, current)
                continue
            try:
                self.watcher.found(p, w)
            except Exception:  # one bad file must not end the settle timer
                log.exception("while taking %s", p)
        with self._lock:
            if not self._files:
                return None
            next_due = min(due for _, due, _ in self._files.values())
        return max(0.01, next_due - time.monotonic())


def _event_observer() -> BaseObserver:
    """inotify with full move events where there is inotify, else the native observer."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except Exception:  # not Linux: the inotify module refuses to load
        return Observer()
    return InotifyObserver(generate_full_events=True)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns

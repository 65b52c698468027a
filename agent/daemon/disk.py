"""The free-space floor: a full SD card must not lose data or crash-loop the daemon.

``[disk] min_free_bytes`` / ``min_free_percent`` set a floor for every file system that
holds a watched folder, a capture directory or the queue. Below it:

- new captures are refused with the reason: capture sources ask ``allow_capture(path)``
  (and ``reason(path)`` for the message) before they record anything;
- delivered files kept locally (``after_upload = "keep"``) are deleted oldest first until
  the floor is met again, if ``[disk] prune_delivered = true``. Only files inside a watched
  folder or a registered capture directory, still exactly as delivered (same size and
  modification time), are touched; the queue is synced first so no delivered state can
  roll back after its file is gone, and each row is marked ``pruned`` before its file goes
  so deletion sync never mistakes the unlink for a user's deletion;
- the queue is left alone: its rows are small, and a write that fails with "database or
  disk is full" is retried by intake and pipeline without losing anything.

Checks are cheap (``statvfs``) and event-driven: before each capture and health or
metrics request, and (at most once a second) when a source reports a file. Only while
some file system is below the floor does a thread re-check every
``check_interval_seconds``, to notice space coming back; then ``on_recover`` runs (the
service rescans the folders and wakes the uploader).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DiskConfig
from ..core.sidecar import sidecar_path
from ..errors import QueueError
from ..events import Event
from ..loop import Loop

if TYPE_CHECKING:
    from ..store.queue import Queue, Row

log = logging.getLogger(__name__)

RECHECK_MIN_SECONDS = 1.0
PRUNE_PAGE = 200
HYSTERESIS = 0.05
"""Captures resume (and pruning stops) a little above the floor, so they do not flap."""

StatVfs = Callable[[str], os.statvfs_result]


@dataclass(frozen=True)
class FsState:
    """One file system at the last check."""

    path: Path
    """The first configured folder on it (for messages)."""
    dev: int
    total_bytes: int
    free_bytes: int
    """Free for unprivileged users (``f_bavail``): what the service can use."""
    floor_bytes: int
    low: bool


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


class DiskGuard(Loop):
    """Watches the free space of the capture and queue file systems. Thread-safe."""

    def __init__(
        self,
        config: DiskConfig,
        folders: Iterable[Path],
        queue_path: Path,
        *,
        queue: Queue | None = None,
        on_change: Callable[[], None] | None = None,
        on_recover: Callable[[], None] | None = None,
        statvfs: StatVfs = os.statvfs,
    ) -> None:
        super().__init__("disk-guard")
        self.config = config
        self.queue = queue
        self.queue_dir = queue_path.parent
        self.on_change = on_change
        self.on_recover = on_recover
        self._statvfs = statvfs
        self._lock = threading.RLock()
        self._folders: list[Path] = []
        self._prunable: list[Path] = []
        self._states: dict[int, FsState] = {}
        self._checked_at = -1e9
        self._cursor = 0
        self._unmarked: list[int] = []
        for folder in [self.queue_dir, *folders]:
            self._add(folder, prunable=folder != self.queue_dir)

    # -- registration --------------------------------------------------------------------
    def _add(self, folder: Path, *, prunable: bool) -> None:
        folder = folder.absolute()
        with self._lock:
            if folder not in self._folders:
                self._folders.append(folder)
            if prunable and folder not in self._prunable:
                self._prunable.append(folder)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.check(force=True)
        super().start()

    def on_event(self, event: Event, info: dict[str, Any]) -> None:
        """A ``Stats`` listener: a source saw a file, so space may be shrinking."""
        if event in (Event.SEEN, Event.QUEUED):
            self.check()

    # -- the API for capture sources, health and metrics ----------------------------------
    def allow_capture(self, path: Path | None = None) -> bool:
        """May a capture be recorded (into ``path``)? False below the floor."""
        return self.reason(path) is None

    def reason(self, path: Path | None = None) -> str | None:
        """Why captures (into ``path``, or anywhere) are refused now; None when allowed.

        A capture needs room where its file goes and in the queue; without ``path``
        every watched file system counts. Always measured afresh (one ``statvfs`` each).
        """
        self.check(force=True)
        with self._lock:
            states = list(self._states.values())
        if path is not None:
            devs = {_dev(path), _dev(self.queue_dir)}
            states = [s for s in states if s.dev in devs]
        low = [s for s in states if s.low]
        if not low:
            return None
        return "; ".join(
            f"low disk space on {s.path}: {mib(s.free_bytes)} free, below the floor of"
            f" {mib(s.floor_bytes)} ([disk] min_free_bytes / min_free_percent)"
            for s in low
        )

    def states(self) -> list[FsState]:
        self.check(force=True)
        with self._lock:
            return list(self._states.values())

    # -- checking ------------------------------------------------------------------------
    def check(self, *, force: bool = False) -> None:
        """Re-read free space (at most once a second unless ``force``); log changes."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked_at < RECHECK_MIN_SECONDS:
                return
            self._checked_at = now
            before = {d: s.low for d, s in self._states.items()}
            states: dict[int, FsState] = {}
            for folder in self._folders:
                state = self._measure(folder, before)
                if state is not None and state.dev not in states:
                    states[state.dev] = state
            self._states = states
        went_low = [s for s in states.values() if s.low and not before.get(s.dev, False)]
        recovered = [s for s in states.values() if not s.low and before.get(s.dev, False)]
        for s in went_low:
            log.warning(
                "low disk space on %s: %s free, below the floor of %s: new captures are"
                " refused; %s", s.path, mib(s.free_bytes), mib(s.floor_bytes),
                "delivered files kept locally are pruned, oldest first"
                if self.config.prune_delivered else
                "delivered files are kept ([disk] prune_delivered = true would prune them)",
            )  # fmt: skip
        for s in recovered:
            log.warning("disk space is back on %s: %s free (floor %s): captures resume",
                        s.path, mib(s.free_bytes), mib(s.floor_bytes))  # fmt: skip
        if went_low:
            self.wake()
        if (went_low or recovered) and self.on_change is not None:
            self.on_change()
        if recovered and self.on_recover is not None and not any(s.low for s in states.values()):
            self.on_recover()

    def _measure(self, folder: Path, was_low: dict[int, bool]) -> FsState | None:
        dev = _dev(folder)
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # a folder not created yet: its parent's file system
        try:
            st = self._statvfs(str(probe))
        except OSError as exc:
            log.debug("cannot measure free space of %s: %s", folder, exc)
            return None
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        floor = self.config.floor(total)
        limit = floor + int(floor * HYSTERESIS) if was_low.get(dev, False) else floor
        return FsState(folder, dev, total, free, floor, low=floor > 0 and free < limit)

    # -- the loop: re-check while low, prune if allowed ----------------------------------
    def step(self) -> float | None:
        self.check(force=True)
        with self._lock:
            low = [s for s in self._states.values() if s.low]
        if low and self.config.prune_delivered:
            for s in low:
                self._prune(s)
            self.check(force=True)
        self._mark_pruned()  # rows pruned while the queue could not be written
        retry = low or bool(self._unmarked)
        return self.config.check_interval_seconds if retry else None

    def _prune(self, state: FsState) -> None:
        """Delete delivered, kept files on ``state``'s file system, oldest first, until
        it is above the floor again (with a margin)."""
        if self.queue is None:
            return
        target = state.floor_bytes + int(state.floor_bytes * HYSTERESIS)
        freed, count = 0, 0
        self._mark_pruned()  # rows pruned while the queue could not be written
        try:
            self.queue.sync()  # a delivered state must survive a power cut before the file goes
        except QueueError as exc:
            log.error("pruning: %s", exc)
            return
        while state.free_bytes + freed < target and not self.stopping:
            try:
                rows = self.queue.kept_delivered(self._cursor, PRUNE_PAGE)
            except QueueError as exc:
                log.error("pruning: %s", exc)
                return
            if not rows:
                break
            for row in rows:
                self._cursor = row.id
                size = self._prune_one(row, state.dev)
                if size:
                    freed += size
                    count += 1
                    if state.free_bytes + freed >= target:
                        break
            self._mark_pruned()
        if count:
            log.warning("pruned %d delivered file(s) on %s to free space (%s)", count,
                        state.path, mib(freed))  # fmt: skip
        elif state.free_bytes < target:
            log.debug("nothing left to prune on %s", state.path)

    def _prune_one(self, row: Row, dev: int) -> int:
        path = Path(row.path)
        if not self._may_prune(path):
            return 0
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return 0
        if st.st_dev != dev or st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
            return 0  # elsewhere, or rewritten since delivery: a newer version may be queued
        freed = st.st_blocks * 512
        # Marked first: the watcher reports the unlink at once, and deletion sync must find
        # a pruned row, not a kept file a user deleted. A queue too full to write is
        # marked later (the unlink is what frees the space).
        assert self.queue is not None
        try:
            self.queue.mark_pruned([row.id])
            marked = True
        except QueueError:
            marked = False
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not prune %s: %s", path, exc.strerror or exc)
            return 0
        try:
            sidecar_path(path).unlink()
        except OSError:
            pass
        log.info("pruned %s (delivered as sample %s) to free space", path, row.sample_id)
        if not marked:
            self._unmarked.append(row.id)
        return max(freed, 1)

    def _may_prune(self, path: Path) -> bool:
        with self._lock:
            return any(folder in path.parents for folder in self._prunable)

    def _mark_pruned(self) -> None:
        """Record pruned rows; on a full queue disk, keep them and try again later."""
        if self.queue is None or not self._unmarked:
            return
        try:
            self.queue.mark_pruned(self._unmarked)
            self._unmarked = []
        except QueueError as exc:
            log.debug("could not mark %d pruned row(s) yet: %s", len(self._unmarked), exc)


def _dev(path: Path) -> int:
    probe = path
    while True:
        try:
            return os.stat(probe).st_dev
        except OSError:
            if probe == probe.parent:
                return -1
            probe = probe.parent

"""The reconciliation scan: the file system is the truth before the queue.

At start-up and every ``[queue] scan_interval_seconds``, every file in a watched folder
that the queue does not know goes to intake: files written while the agent was down or
crashing, events the watcher missed, rows a power cut rolled back. A file modified in the
last ``settle_seconds`` is left to the watcher (it may still be written) and the scan
comes back for it soon after. Files intake could not record (the queue's disk was full)
bring a scan within seconds, again and again until they are recorded. The daemon starts
the watcher *before* the first scan, so a file written during the scan is caught by one
or the other (a known file is never queued twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..config import WatchConfig
from ..core.files import ignored_name, matches, walk
from ..core.intake import BATCH, Item
from ..loop import Loop
from ..store.queue import Queue

log = logging.getLogger(__name__)

MISSED_RESCAN_SECONDS = 5.0
"""How soon a scan follows files intake could not record (a full queue disk)."""


class Scanner(Loop):
    """Scans on start and every ``interval`` seconds; ``wake`` scans now."""

    def __init__(
        self, watches: Sequence[WatchConfig], queue: Queue, submit: Callable[[Item], None],
        interval: float,
    ) -> None:  # fmt: skip
        super().__init__("scan")
        self.watches = tuple(watches)
        self.queue = queue
        self.submit = submit
        self.interval = interval
        self.error_delay = interval  # a scan that failed is tried again at the next one
        self._recent = False
        self._missed = False
        self._last = 0.0

    def missed(self) -> None:
        """Intake could not record files (the queue's disk is full): scan again within
        ``MISSED_RESCAN_SECONDS`` (and again after that while recording keeps failing)."""
        if not self._missed:
            self._missed = True
            self.wake()

    def step(self) -> float | None:
        started = time.monotonic()
        if self._missed:
            wait = self._last + MISSED_RESCAN_SECONDS - started
            if wait > 0:
                return wait
            self._missed = False
        self._last = started
        n = self.scan()
        if n:
            log.info("scan found %d file(s) not yet queued (%.1f s)", n,
                     time.monotonic() - started)  # fmt: skip
        if self._recent and self.watches:
            return min(self.interval, max(w.settle_seconds for w in self.watches) + 0.5)
        return self.interval

    def scan(self) -> int:
        """Hand every unknown, settled file to intake; how many were handed.

        Files are handed ``BATCH`` at a time: handed one by one as the walk finds them,
        intake would wake for each and record a backlog one file per transaction."""
        handed = 0
        found: list[Item] = []
        self._recent = False
        now = time.time()
        for w in self.watches:
            for path in walk(w.path, w.recursive):
                if self.stopping:
                    return handed
                if ignored_name(path.name) or not matches(path.name, w.patterns):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                if self.queue.known(str(path), st.st_size, st.st_mtime_ns):
                    continue
                if now - st.st_mtime < w.settle_seconds:
                    self._recent = True
                    continue
                found.append(Item(path=path, watch=w))
                if len(found) >= BATCH:
                    handed += self._hand(found)
        return handed + self._hand(found)

    def _hand(self, found: list[Item]) -> int:
        for item in found:
            self.submit(item)
        n = len(found)
        found.clear()
        return n

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
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import WatchConfig
from ..core.files import ignored_name, matches, walk_folders
from ..core.intake import BATCH, Item
from ..core.sidecar import SIDECAR_SUFFIX
from ..loop import Loop
from ..store.queue import KNOWN_CHUNK, Queue

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
        intake would wake for each and record a backlog one file per transaction. Which
        files the queue knows is asked once per folder, not once per file; the status read
        here and what the folder's listing says of sidecars go with each file to intake."""
        handed = 0
        found: list[Item] = []
        self._recent = False
        now = time.time()
        for w in self.watches:
            for folder, names, others in walk_folders(w.path, w.recursive):
                if self.stopping:
                    return handed
                # a sidecar of any kind (a FIFO, a link) holds its file: intake says why
                sidecars = {n for n in (*names, *others) if n.endswith(SIDECAR_SUFFIX)}
                for at in range(0, len(names), KNOWN_CHUNK):  # a bounded chunk of statuses
                    seen = self._settled_candidates(w, folder, names[at : at + KNOWN_CHUNK],
                                                    sidecars, now)  # fmt: skip
                    for path, st, alone in seen:
                        found.append(Item(path=path, watch=w, stat=st, no_sidecar=alone))
                        if len(found) >= BATCH:
                            handed += self._hand(found)
        return handed + self._hand(found)

    def _settled_candidates(
        self, w: WatchConfig, folder: Path, names: Sequence[str], sidecars: set[str], now: float
    ) -> list[tuple[Path, os.stat_result, bool]]:
        """Of these names in ``folder``: the files of ``w`` the queue does not know and that
        have settled, each with its status and whether it has no sidecar (one not yet
        settled asks for an early rescan)."""
        seen: list[tuple[Path, os.stat_result, bool]] = []
        for name in names:
            if ignored_name(name) or not matches(name, w.patterns):
                continue
            path = folder / name
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            seen.append((path, st, name + SIDECAR_SUFFIX not in sidecars))
        known = self.queue.known_versions([(str(p), st) for p, st, _ in seen])
        out = []
        for path, st, alone in seen:
            if (str(path), st.st_size, st.st_mtime_ns) in known:
                continue
            if now - st.st_mtime < w.settle_seconds:
                self._recent = True
                continue
            out.append((path, st, alone))
        return out

    def _hand(self, found: list[Item]) -> int:
        for item in found:
            self.submit(item)
        n = len(found)
        found.clear()
        return n

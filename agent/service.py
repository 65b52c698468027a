"""The daemon: starts and stops the stages, scans for missed files, handles signals.

Start-up order matters for the guarantee: the queue is opened and rows a crash left
``uploading`` go back to ``pending``; the watcher starts *before* the reconciliation scan,
so a file written during the scan is caught by one or the other (a known file is never
queued twice). The scan repeats every ``[queue] scan_interval_seconds``.

Stop (SIGTERM, SIGINT): sources stop first, in-flight uploads get a few seconds to finish,
the rest stay queued for next time.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from agent.clock import Clock, system_clock
from agent.components import Component, build_components
from agent.config import Config, WatchConfig
from agent.events import Stats
from agent.intake import Intake, Item, ignored_name, matches, walk
from agent.pipeline import Pipeline, finish_pending_local
from agent.queue import Queue
from agent.uploader import Uploader, make_client
from agent.watcher import Watcher

log = logging.getLogger("agent.service")

STOP_TIMEOUT_SECONDS = 5.0


def build_uploader(
    config: Config, *, transport: httpx.BaseTransport | None = None, clock: Clock = system_clock
) -> Uploader:
    ing = config.ingestion
    verify: str | bool = str(ing.ca_file) if ing.ca_file else True
    client = make_client(
        concurrency=ing.concurrency, timeout=ing.timeout_seconds,
        connect_timeout=ing.connect_timeout_seconds, verify=verify, transport=transport,
    )  # fmt: skip
    return Uploader(client, ing.url, ing.api_key.load(), clock=clock)


class Service:
    """One running agent. ``start`` returns once the queue is open and sources run."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = system_clock,
        watch: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.transport = transport
        self.use_watcher = watch
        self.stats = Stats()
        self.stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._scan_now = threading.Event()
        self.queue: Queue | None = None
        self.pipeline: Pipeline | None = None
        self.intake: Intake | None = None
        self.watcher: Watcher | None = None
        self._scanner: threading.Thread | None = None
        self.components: list[Component] = build_components(config)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        uploader = build_uploader(cfg, transport=self.transport, clock=self.clock)
        self.queue = queue = Queue(cfg.queue.path, clock=self.clock)
        returned = queue.recover()
        if returned:
            log.info("%d upload(s) interrupted last time are queued again", returned)
        roots = {w.key: w.path for w in cfg.watches}
        self.pipeline = Pipeline(queue, uploader, cfg.ingestion, self.stats, clock=self.clock,
                                 watch_roots=roots)  # fmt: skip
        finish_pending_local(queue, self.pipeline)
        self.intake = Intake(queue, cfg, self.stats, on_queued=self.pipeline.wake)
        self.intake.start()
        self.pipeline.start()
        if self.use_watcher and cfg.watches:
            self.watcher = Watcher(cfg.watches, self._on_file)
            self.watcher.start()
        self._scanner = threading.Thread(target=self._scan_loop, name="scan", daemon=True)
        self._scanner.start()
        for component in self.components:
            component.start(self)
        log.info(
            "edge-uploader running: device %s, %d watch folder(s), queue %s, ingestion %s",
            cfg.device_id, len(cfg.watches), cfg.queue.path, cfg.ingestion.url,
        )  # fmt: skip

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self._stop_requested.set()
        self._scan_now.set()
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        if self.watcher is not None:
            self.watcher.stop()
        if self._scanner is not None:
            self._scanner.join(timeout)
        if self.intake is not None:
            self.intake.stop()
        if self.pipeline is not None:
            self.pipeline.stop(timeout)
            self.pipeline.uploader.client.close()
        if self.queue is not None:
            self.queue.close()
        self.stopped.set()
        log.info("edge-uploader stopped")

    def request_stop(self) -> None:
        self._stop_requested.set()

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT; the CLI's ``run``."""
        self._install_signals()
        self.start()
        try:
            while not self._stop_requested.wait(3600):
                pass
        finally:
            self.stop()
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop_requested.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)

    # -- sources -------------------------------------------------------------------------
    def _on_file(self, path: Path, watch: WatchConfig) -> None:
        if self.intake is not None:
            self.intake.submit(Item(path=path, watch=watch))

    def submit(self, item: Item) -> None:
        assert self.intake is not None
        self.intake.submit(item)

    def scan(self) -> int:
        """Queue every file in the watch folders the queue does not know. Returns how many
        candidates were handed to intake; files modified in the last ``settle_seconds``
        are left to the watcher (they may still be written)."""
        assert self.intake is not None and self.queue is not None
        handed = 0
        recent = False
        now = time.time()
        for w in self.config.watches:
            for path in walk(w.path, w.recursive):
                if self._stop_requested.is_set():
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
                    recent = True
                    continue
                self.intake.submit(Item(path=path, watch=w))
                handed += 1
        self._recent_skipped = recent
        return handed

    def _scan_loop(self) -> None:
        interval = self.config.queue.scan_interval_seconds
        while not self._stop_requested.is_set():
            try:
                self._recent_skipped = False
                started = time.monotonic()
                n = self.scan()
                if n:
                    log.info("scan found %d file(s) not yet queued (%.1f s)", n,
                             time.monotonic() - started)  # fmt: skip
            except Exception:
                log.exception("reconciliation scan failed")
            wait = interval
            if self._recent_skipped:
                wait = min(interval, max(w.settle_seconds for w in self.config.watches) + 0.5)
            self._scan_now.wait(wait)
            self._scan_now.clear()

    def scan_soon(self) -> None:
        self._scan_now.set()

    # -- introspection -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        assert self.queue is not None
        return {"counts": self.queue.counts(), **self.stats.snapshot()}

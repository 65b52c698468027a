"""The daemon: starts and stops the stages, reloads, handles signals, talks to systemd.

Start-up order matters for the guarantee: the queue is opened and rows a crash left
``uploading`` go back to ``pending``; deletes and moves a crash interrupted after a
delivery are finished; the watcher starts *before* the reconciliation scan, so a file
written during the scan is caught by one or the other (a known file is never queued
twice). Components start last, with a ``Runtime``; they stop first.

Stop (SIGTERM, SIGINT): sources stop first, in-flight uploads get a few seconds to finish,
the rest stay queued for next time.

Reload (SIGHUP) goes through the start-up path: the file is read and checked by
``config.preflight.prepare`` exactly as at start; an invalid file is logged and the
running config stays. A valid one stops the stages (components, watcher, scan, intake,
delivery; uploads in flight go back to pending) and starts them again with the new
config, on the same open queue: nothing queued is lost. Moving the queue (``[queue]
path``) needs a restart.

systemd (``daemon.systemd``): ``READY=1`` once the queue is open and the sources run,
``STATUS=`` with the queue depth and last delivery, ``WATCHDOG=1`` while ``daemon.health``
says the pipeline is alive, ``RELOADING=1``/``READY=1`` around a reload, ``STOPPING=1``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ..clock import Clock, system_clock
from ..config import Config
from ..config.preflight import prepare
from ..core.delivery import PREFETCH, Delivery
from ..core.intake import Intake
from ..core.runtime import Component, Runtime
from ..errors import AgentError, ConfigError, QueueError
from ..events import Stats
from ..remote.ingestion import build_uploader
from ..remote.proxy import proxy_for
from ..sources.scan import Scanner
from ..sources.watcher import Watcher
from ..store.queue import Queue
from . import wake
from .components import build_components
from .disk import DiskGuard
from .health import Health, assess
from .systemd import Notifier, SystemdReporter, watchdog_seconds

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0


class Daemon:
    """One running agent. ``start`` returns once the queue is open and sources run."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = system_clock,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        """The file a reload reads again (None: reload is refused)."""
        self.clock = clock
        self.transport = transport
        self.stats = Stats()
        self.stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._wakeup = threading.Event()
        self._lifecycle = threading.RLock()
        self.queue: Queue | None = None
        self.delivery: Delivery | None = None
        self.intake: Intake | None = None
        self.watcher: Watcher | None = None
        self.scanner: Scanner | None = None
        self.disk: DiskGuard | None = None
        self.reload_error: str | None = None
        self.notifier = notifier if notifier is not None else Notifier()
        self.reporter = SystemdReporter(
            self.notifier, alive=self._alive, status=self.status_line, watchdog=watchdog_seconds()
        )
        self.stats.subscribe(self.reporter.on_event)
        self.components: list[Component] = build_components(config, self)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        with self._lifecycle:
            self.queue = queue = Queue(cfg.queue.path, clock=self.clock)
            try:
                queue.check()  # a damaged file is named now, not deep in a worker's log
            except QueueError:
                queue.close()
                self.queue = None
                raise
            returned = queue.recover()
            if returned:
                log.info("%d upload(s) interrupted last time are queued again", returned)
            self._start_stages()
        proxy = proxy_for(cfg.ingestion.url)
        log.info(
            "edge-uploader running: device %s, %d watch folder(s), queue %s, ingestion %s%s",
            cfg.device_id, len(cfg.watches), cfg.queue.path, cfg.ingestion.url,
            f" through the proxy {proxy}" if proxy else "",
        )  # fmt: skip

    def _start_stages(self, *, tolerant: bool = False) -> None:
        """Everything but the queue, from ``self.config``: start-up and reload share it.
        ``tolerant``: a component that fails to start is logged, not raised (going back to
        the running config must not end the daemon because a file it read went bad)."""
        cfg, queue = self.config, self.queue
        assert queue is not None
        uploader = build_uploader(cfg, transport=self.transport, clock=self.clock,
                                  on_progress=self.stats.progress)  # fmt: skip
        roots = {w.key: w.path for w in cfg.watches}
        self.delivery = delivery = Delivery(queue, uploader, cfg.ingestion, self.stats,
                                            clock=self.clock, watch_roots=roots,
                                            prefetch=PREFETCH)  # fmt: skip
        delivery.after_upload.finish_pending(queue)
        self.intake = intake = Intake(queue, cfg, self.stats, on_queued=delivery.queued,
                                      on_missed=self._missed)  # fmt: skip
        delivery.more_coming = intake.more_coming
        self.disk = disk = DiskGuard(cfg.disk, [w.path for w in cfg.watches], cfg.queue.path,
                                     queue=queue, on_change=self.reporter.poke,
                                     on_recover=self._space_back)  # fmt: skip
        disk.start()
        self.stats.subscribe(disk.on_event)
        intake.start()
        delivery.start()
        if cfg.watches:
            self.watcher = Watcher(cfg.watches, intake.submit, self.stats,
                                   on_overflow=self._rescan)  # fmt: skip
            self.watcher.start()
        self.scanner = Scanner(cfg.watches, queue, intake.submit, cfg.queue.scan_interval_seconds)
        self.scanner.start()
        runtime = Runtime(config=cfg, queue=queue, stats=self.stats, clock=self.clock,
                          submit=intake.submit, claim=self._claim_for(self.watcher),
                          capture_refusal=disk.reason)  # fmt: skip
        for component in self.components:
            try:
                component.start(runtime)
            except Exception as exc:
                if not tolerant:
                    raise
                log.error("%s did not start again: %s", component.name, exc)

    def _rescan(self) -> None:
        """inotify lost events: scan now rather than at the next interval."""
        scanner = self.scanner
        if scanner is not None:
            log.warning("inotify lost events (queue overflow): scanning the watch folders now")
            scanner.wake()

    def _stop_stages(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop everything but the queue within ``timeout`` in all (systemd and the
        operator wait for the whole stop, not for each stage); uploads in flight that do
        not finish go back to pending."""
        deadline = time.monotonic() + timeout
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.scanner is not None:
            self.scanner.stop(max(0.5, deadline - time.monotonic()))
            self.scanner = None
        if self.intake is not None:
            self.intake.stop()
        if self.delivery is not None:
            self.delivery.stop(max(0.5, deadline - time.monotonic()))
            self.delivery.uploader.close()
        if self.disk is not None:
            self.stats.unsubscribe(self.disk.on_event)
            self.disk.stop()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self._stop_requested.set()
        self.reporter.stop()
        with self._lifecycle:
            self._stop_stages(timeout)
            if self.queue is not None:
                self.queue.close()
        self.stopped.set()
        log.info("edge-uploader stopped")

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._wakeup.set()

    def reload(self) -> bool:
        """Apply the config file again; False (and the old config runs on) if invalid."""
        self.notifier.reloading()
        log.info("reloading the config %s", self.config_path)
        try:
            new = self._checked_reload()
            components = build_components(new, self)
        except AgentError as exc:
            self.reload_error = str(exc)
            log.error("reload refused, the running config stays: %s", exc)
            self.notifier.ready()
            self.reporter.poke()
            return False
        with self._lifecycle:
            old = self.config
            self._stop_stages()
            self.config, self.components = new, components
            try:
                self._start_stages()
            except Exception as exc:
                log.error("reload failed while starting (%s); going back to the running config",
                          exc)  # fmt: skip
                self.reload_error = f"{type(exc).__name__}: {exc}"
                self._stop_stages()
                # stopped components are not restarted: fresh ones for the old config
                self.config, self.components = old, build_components(old, self)
                self._start_stages(tolerant=True)
                self.notifier.ready()
                return False
        self.reload_error = None
        log.info("config reloaded: %d watch folder(s), ingestion %s", len(new.watches),
                 new.ingestion.url)  # fmt: skip
        self.notifier.ready()
        self.reporter.poke()
        return True

    def _checked_reload(self) -> Config:
        path = self.config_path
        if path is None:
            raise ConfigError(self.config.source, "", "this agent was started without a"
                              " config file: nothing to reload")  # fmt: skip
        new = prepare(path)
        if new.queue.path != self.config.queue.path:
            raise ConfigError(new.source, "queue.path", f"changed from"
                              f" {self.config.queue.path} to {new.queue.path}: a reload"
                              " cannot move the queue (queued files would be left behind);"
                              " restart the service to use the new path")  # fmt: skip
        return new

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT, reloading on SIGHUP; the CLI's ``run``."""
        self._install_signals()
        self.start()
        assert self.queue is not None
        wake.install(self.retry_now, self.queue)  # SIGUSR1 from `retry-now` / `dead retry`
        self.notifier.ready()
        self.reporter.start()
        try:
            while not self._stop_requested.is_set():
                self._wakeup.wait(3600)
                self._wakeup.clear()
                if self._reload_requested.is_set() and not self._stop_requested.is_set():
                    self._reload_requested.clear()
                    self.reload()
        finally:
            self.notifier.stopping()
            self.stop()
        return 0

    def retry_now(self) -> None:
        """Send what is due now: drop delivery's waits (looked up now: a reload may have
        replaced it)."""
        delivery = self.delivery
        if delivery is not None:
            delivery.retry_now()

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.request_stop()

        def on_reload(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)

    # -- health --------------------------------------------------------------------------
    def health(self) -> Health:
        """The current health (``daemon.health``); a reload in progress counts as alive."""
        if not self._lifecycle.acquire(blocking=False):
            return Health(alive=True, healthy=False, reasons=["reloading"])
        try:
            return assess(self)
        finally:
            self._lifecycle.release()

    def _alive(self) -> tuple[bool, list[str]]:
        h = self.health()
        return h.alive, h.reasons

    def status_line(self) -> str:
        """One line for systemd's ``STATUS=`` (shown by ``systemctl status``)."""
        queue = self.queue
        if queue is None:
            return "starting"
        c = queue.counts()
        parts = [f"{c['pending'] + c['uploading']} to upload ({c['uploading']} in flight),"
                 f" {c['dead']} dead, {c['held']} held"]  # fmt: skip
        last = self.stats.last_delivery_at
        if last is None:
            last = queue.get_state().get("last_delivery_at")
        parts.append("last delivery " + (_iso(last) if last else "none yet"))
        parts.extend(r for r in self.health().reasons if r != "reloading")
        if self.reload_error:
            parts.append(f"last reload refused: {self.reload_error}")
        return "; ".join(parts)

    def _missed(self) -> None:
        """Intake could not record files: the scan comes back for them soon."""
        if self.scanner is not None:
            self.scanner.missed()

    def _space_back(self) -> None:
        """Free space returned: look for files intake could not record, and send."""
        if self.scanner is not None:
            self.scanner.wake()
        if self.delivery is not None:
            self.delivery.wake()
        self.reporter.poke()

    @staticmethod
    def _claim_for(watcher: Watcher | None) -> Callable[[Path], None]:
        """The runtime's claim: the watcher's, or nothing to claim from (no watches)."""
        return watcher.claim if watcher is not None else (lambda path: None)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""The daemon: starts and stops the stages, scans for missed files, handles signals.

Start-up order matters for the guarantee: the queue is opened and rows a crash left
``uploading`` go back to ``pending``; the watcher starts *before* the reconciliation scan,
so a file written during the scan is caught by one or the other (a known file is never
queued twice). The scan repeats every ``[queue] scan_interval_seconds``.

Stop (SIGTERM, SIGINT): sources stop first, in-flight uploads get a few seconds to finish,
the rest stay queued for next time.

Reload (SIGHUP) goes through the start-up path: the file is read and checked by
``agent.preflight.prepare`` exactly as at start; an invalid file is logged and the running
config stays. A valid one stops the stages (components, watcher, scan, intake, pipeline;
uploads in flight go back to pending) and starts them again with the new config, on the
same open queue: nothing queued is lost. Moving the queue (``[queue] path``) needs a restart.

systemd (``agent.notify``): ``READY=1`` once the queue is open and the sources run,
``STATUS=`` with the queue depth and last delivery, ``WATCHDOG=1`` while ``agent.health``
says the pipeline is alive, ``RELOADING=1``/``READY=1`` around a reload, ``STOPPING=1``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from ..clock import Clock, system_clock
from ..config import Config, WatchConfig
from ..config.preflight import prepare
from ..core.delivery import PREFETCH, Delivery
from ..core.files import ignored_name, matches, walk
from ..core.intake import Intake, Item
from ..errors import AgentError, ConfigError
from ..events import Stats
from ..remote.ingestion import build_uploader
from ..sources.watcher import Watcher
from ..store.queue import Queue
from . import wake
from .components import Component, build_components
from .disk import DiskGuard
from .health import Health, assess
from .systemd import Heartbeat, Notifier, watchdog_seconds

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0


class Service:
    """One running agent. ``start`` returns once the queue is open and sources run."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = system_clock,
        watch: bool = True,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        """The file a reload reads again (None: reload is refused)."""
        self.clock = clock
        self.transport = transport
        self.use_watcher = watch
        self.stats = Stats()
        self.stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._wakeup = threading.Event()
        self._scan_now = threading.Event()
        self._halt = threading.Event()
        """Set to end the current stages (a stop, or the first half of a reload)."""
        self._lifecycle = threading.RLock()
        self.queue: Queue | None = None
        self.pipeline: Delivery | None = None
        self.intake: Intake | None = None
        self.watcher: Watcher | None = None
        self.disk: DiskGuard | None = None
        """Free-space floor; capture sources ask ``service.disk.allow_capture(path)``."""
        self._scanner: threading.Thread | None = None
        self._recent_skipped = False
        self.reload_error: str | None = None
        self.notifier = notifier if notifier is not None else Notifier()
        self.heartbeat = Heartbeat(self.notifier, alive=self._alive, status=self.status_line,
                                   watchdog=watchdog_seconds())  # fmt: skip
        self.stats.subscribe(lambda event, info: self.heartbeat.poke())
        self.components: list[Component] = build_components(config)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        with self._lifecycle:
            self.queue = queue = Queue(cfg.queue.path, clock=self.clock)
            returned = queue.recover()
            if returned:
                log.info("%d upload(s) interrupted last time are queued again", returned)
            self._start_stages()
        log.info(
            "edge-uploader running: device %s, %d watch folder(s), queue %s, ingestion %s",
            cfg.device_id, len(cfg.watches), cfg.queue.path, cfg.ingestion.url,
        )  # fmt: skip

    def _start_stages(self, *, tolerant: bool = False) -> None:
        """Everything but the queue, from ``self.config``: start-up and reload share it.
        ``tolerant``: a component that fails to start is logged, not raised (going back to
        the running config must not end the daemon because a file it read went bad)."""
        cfg, queue = self.config, self.queue
        assert queue is not None
        self._halt = halt = threading.Event()
        uploader = build_uploader(cfg, transport=self.transport, clock=self.clock,
                                  on_progress=self.stats.progress)  # fmt: skip
        roots = {w.key: w.path for w in cfg.watches}
        self.pipeline = Delivery(queue, uploader, cfg.ingestion, self.stats, clock=self.clock,
                                 watch_roots=roots, prefetch=PREFETCH)  # fmt: skip
        self.pipeline.after_upload.finish_pending(queue)
        self.intake = Intake(queue, cfg, self.stats, on_queued=self.pipeline.wake)
        self.disk = DiskGuard(cfg.disk, [w.path for w in cfg.watches], cfg.queue.path,
                              queue=queue, on_change=self.heartbeat.poke,
                              on_recover=self._space_back)  # fmt: skip
        self.disk.start()
        self.stats.subscribe(self.disk.on_event)
        self.intake.start()
        self.pipeline.start()
        if self.use_watcher and cfg.watches:
            self.watcher = Watcher(cfg.watches, self._on_file)
            self.watcher.start()
        self._scanner = threading.Thread(target=self._scan_loop, args=(halt,), name="scan",
                                         daemon=True)  # fmt: skip
        self._scanner.start()
        for component in self.components:
            if not tolerant:
                component.start(self)
                continue
            try:
                component.start(self)
            except Exception as exc:
                log.error("%s did not start again: %s", component.name, exc)

    def _stop_stages(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop everything but the queue; uploads in flight go back to pending."""
        self._halt.set()
        self._scan_now.set()
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self._scanner is not None:
            self._scanner.join(timeout)
            self._scanner = None
        if self.intake is not None:
            self.intake.stop()
        if self.pipeline is not None:
            self.pipeline.stop(timeout)
            self.pipeline.uploader.close()
        if self.disk is not None:
            self.stats.unsubscribe(self.disk.on_event)
            self.disk.stop()
        self._scan_now.clear()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self._stop_requested.set()
        self.heartbeat.stop()
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
        path = self.config_path
        log.info("reloading the config %s", path)
        try:
            if path is None:
                raise ConfigError(self.config.source, "", "this agent was started without a"
                                  " config file: nothing to reload")  # fmt: skip
            new = prepare(path)
            if new.queue.path != self.config.queue.path:
                raise ConfigError(new.source, "queue.path", f"changed from"
                                  f" {self.config.queue.path} to {new.queue.path}: a reload"
                                  " cannot move the queue (queued files would be left behind);"
                                  " restart the service to use the new path")  # fmt: skip
            components = build_components(new)
        except AgentError as exc:
            self.reload_error = str(exc)
            log.error("reload refused, the running config stays: %s", exc)
            self.notifier.ready()
            self.heartbeat.poke()
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
                self.config, self.components = old, build_components(old)
                self._start_stages(tolerant=True)
                self.notifier.ready()
                return False
        self.reload_error = None
        log.info("config reloaded: %d watch folder(s), ingestion %s", len(new.watches),
                 new.ingestion.url)  # fmt: skip
        self.notifier.ready()
        self.heartbeat.poke()
        return True

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT, reloading on SIGHUP; the CLI's ``run``."""
        self._install_signals()
        self.start()
        wake.install(self)  # SIGUSR1 from `retry-now` / `dead retry`: send what is due now
        self.notifier.ready()
        self.heartbeat.start()
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
        """The current health (``agent.health``); a reload in progress counts as alive."""
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
        health = self.health()
        parts.extend(r for r in health.reasons if r != "reloading")
        if self.reload_error:
            parts.append(f"last reload refused: {self.reload_error}")
        return "; ".join(parts)

    def _space_back(self) -> None:
        """Free space returned: look for files intake could not record, and send."""
        self.scan_soon()
        if self.pipeline is not None:
            self.pipeline.wake()
        self.heartbeat.poke()

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
                if self._halt.is_set():
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

    def _scan_loop(self, halt: threading.Event) -> None:
        interval = self.config.queue.scan_interval_seconds
        while not halt.is_set():
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


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

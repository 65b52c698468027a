"""Is the agent healthy? One assessment for the systemd watchdog and for ``/healthz``.

Two levels, because restarting helps only with one of them:

- **alive** (the watchdog pings): the delivery threads run, and uploads in flight make
  progress — a body chunk sent, a result settled — within ``[health] stall_seconds``, or
  nothing is in flight (idle, waiting for a retry, paused on a refused key: idle by
  design). A queue that cannot be written (a full disk) is not a hang either: a restart
  would not free space, so the pings go on and the daemon does not crash-loop.
- **healthy** (``/healthz`` 200): alive, and nothing needs a person — uploads not paused,
  the queue writable, free space above the floor.

Progress is counted per body chunk sent (a request hook on the HTTP client, see
``remote.http.make_client``), so a 100 MB video on a slow link is never mistaken for a hang, while a
request that waits forever on a silent server is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Config
from ..core.delivery import Delivery
from ..core.intake import Intake
from ..events import Stats
from ..store.queue import Queue
from .disk import DiskGuard


class Vitals(Protocol):
    """What health checks and metrics read of a running daemon, and nothing more."""

    @property
    def config(self) -> Config: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def queue(self) -> Queue | None: ...
    @property
    def delivery(self) -> Delivery | None: ...
    @property
    def intake(self) -> Intake | None: ...
    @property
    def disk(self) -> DiskGuard | None: ...


@dataclass(frozen=True)
class Health:
    alive: bool
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    """Why not healthy (or not alive), one short sentence each."""


def assess(service: Vitals, *, now: float | None = None) -> Health:
    """Assess a running daemon; a daemon between stop and start (a reload) is alive."""
    now = time.monotonic() if now is None else now
    fatal: list[str] = []
    notes: list[str] = []
    delivery, intake = service.delivery, service.intake
    if delivery is None or intake is None:
        return Health(alive=True, healthy=False, reasons=["starting or reloading"])
    if not delivery.alive():
        fatal.append("the upload dispatcher thread is not running")
    if not intake.alive():
        fatal.append("the intake thread is not running")
    cfg = service.config
    stall = cfg.health.effective_stall_seconds(
        cfg.ingestion.timeout_seconds, cfg.ingestion.connect_timeout_seconds
    )
    quiet = now - service.stats.last_progress
    if delivery.queue_error:
        notes.append(f"the queue cannot be written: {delivery.queue_error}")
    elif delivery.inflight and quiet > stall:
        fatal.append(
            f"uploads stalled: {delivery.inflight} in flight and no progress for {quiet:.0f} s"
            f" (limit {stall:g} s)"
        )
    if delivery.paused:
        notes.append(f"uploads paused: {delivery.paused}")
    disk = service.disk.reason() if service.disk is not None else None
    if disk:
        notes.append(disk)
    return Health(alive=not fatal, healthy=not fatal and not notes, reasons=fatal + notes)

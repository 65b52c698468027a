"""The fixed vocabulary of lifecycle events, and the counters they drive.

Logs, Prometheus metrics, systemd ``STATUS=``, the MQTT heartbeat and command events all
hang off these few names, so a number in one place means the same as in every other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Event(StrEnum):
    SEEN = "seen"  # a source noticed a file
    QUEUED = "queued"  # recorded in the queue
    HELD = "held"  # not queued for upload: its sidecar or metadata is unusable
    SKIPPED = "skipped"  # not a sample (empty, vanished, not a regular file, unreadable)
    DELIVERED = "delivered"  # the service stored it
    DUPLICATE = "duplicate"  # the service had it already: counts as delivered
    RETRY = "retry"  # a transient failure; tried again later
    DEAD = "dead"  # permanently refused; set aside with the reason
    GONE = "gone"  # vanished or changed before it was sent
    PAUSED = "paused"  # uploads paused (wrong key, wrong URL)
    RESUMED = "resumed"
    REMOVED = "removed"  # a file or folder left a watched folder (deleted or moved away)


Listener = Callable[[Event, dict[str, Any]], None]


@dataclass
class Stats:
    """Counters since start, plus the latest facts a heartbeat needs. Thread-safe."""

    counts: dict[str, int] = field(default_factory=lambda: {e.value: 0 for e in Event})
    bytes_sent: int = 0
    last_delivery_at: float | None = None
    last_error: str | None = None
    paused: str | None = None
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys((0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), 0)
    )
    last_progress: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _listeners: list[Listener] = field(default_factory=list, repr=False)

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, event: Event, **info: Any) -> None:
        with self._lock:
            self.counts[event.value] += 1
            if event in (Event.DELIVERED, Event.DUPLICATE):
                self.last_delivery_at = time.time()
                self.bytes_sent += int(info.get("bytes", 0))
            if event in (Event.RETRY, Event.DEAD, Event.PAUSED) and info.get("reason"):
                self.last_error = str(info["reason"])
            if event is Event.PAUSED:
                self.paused = str(info.get("reason", "paused"))
            elif event is Event.RESUMED:
                self.paused = None
            latency = info.get("latency")
            if isinstance(latency, float):
                self.latency_sum += latency
                self.latency_count += 1
                for bound in self.latency_buckets:
                    if latency <= bound:
                        self.latency_buckets[bound] += 1
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event, info)
            except Exception:
                import logging

                logging.getLogger(__name__).exception("event listener failed")

    def progress(self) -> None:
        """Mark that the pipeline did something (the systemd watchdog reads this)."""
        with self._lock:
            self.last_progress = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "bytes_sent": self.bytes_sent,
                "last_delivery_at": self.last_delivery_at,
                "last_error": self.last_error,
                "paused": self.paused,
            }

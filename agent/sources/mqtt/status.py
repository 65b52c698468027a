"""The fleet status: a retained JSON document on ``{prefix}/status``, kept current.

A dashboard subscribed to ``edge-uploader/+/status`` sees every device's latest state
at once, including devices that went away (the broker publishes their last will, a
retained ``offline``). The status is published when the connection comes up, every
``heartbeat_seconds``, and soon after anything changes (a file queued, delivered or
dead-lettered, uploads paused or resumed), at most once per ``MIN_GAP_SECONDS`` (longer
when the queue is so large that counting it is slow), so a burst of ten thousand files
costs a handful of messages.

Format (keys are only ever added)::

    {"status": "online", "device_id": "pi-0042", "agent_version": "0.1.0",
     "at": "2026-05-01T10:00:00.000Z", "queue_depth": 3, "pending": 3, "held": 0,
     "dead_letters": 0, "delivered": 120, "oldest_pending_age_seconds": 12.5,
     "last_delivery_at": "2026-05-01T09:59:58.120Z", "uploads_paused": null,
     "last_error": null, "free_disk_bytes": 812345344, "captures_running": 0,
     "upload_window_open": null, "data_budget_left_bytes": null, "data_budget_spent": null,
     "site": "lab-3"}

(``upload_window_open`` is null without upload windows, the two budget keys without a
daily data budget; ``site`` is the ``[metadata] site`` value or null.)

    {"status": "offline", "device_id": "pi-0042", "agent_version": "0.1.0",
     "reason": "connection lost", "site": "lab-3"}   (the last will; "stopped" on a clean stop)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import __version__
from ...config.link import LinkConfig, local_day, window_state
from ...core.tagger import iso_utc
from ...events import Event, Stats
from ...loop import Loop
from ...store.queue import Queue

log = logging.getLogger(__name__)

MIN_GAP_SECONDS = 1.0
COST_FACTOR = 20.0
"""On-change updates wait at least 20 times as long as building one took (a queue of a
million rows makes ``counts`` slow): the heartbeat never costs more than ~5 % of a core."""
CHANGES = frozenset(
    {
        Event.QUEUED,
        Event.HELD,
        Event.DELIVERED,
        Event.DUPLICATE,
        Event.DEAD,
        Event.GONE,
        Event.PAUSED,
        Event.RESUMED,
    }
)


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def offline_document(
    device_id: str, reason: str, at: float | None = None, *, site: str | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": "offline",
        "device_id": device_id,
        "agent_version": __version__,
        "reason": reason,
        "site": site,
    }
    if at is not None:
        doc["at"] = iso_utc(at)
    return doc


def online_document(
    queue: Queue,
    stats: Stats,
    device_id: str,
    disk_path: Path,
    captures_running: int,
    now: float | None = None,
    link: LinkConfig | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    link = link or LinkConfig()
    window = window_state(link.upload_windows, now).open if link.upload_windows else None
    left: int | None = None
    if link.max_bytes_per_day:
        left = max(0, link.max_bytes_per_day - queue.bytes_sent_on(local_day(now)))
    counts = queue.counts()
    oldest = queue.oldest_pending()
    state = queue.get_state()
    last = state.get("last_delivery_at")
    try:
        free: int | None = shutil.disk_usage(disk_path).free
    except OSError:
        free = None
    return {
        "status": "online",
        "device_id": device_id,
        "agent_version": __version__,
        "site": site,
        "at": iso_utc(now),
        "queue_depth": counts["pending"] + counts["uploading"],
        "pending": counts["pending"],
        "held": counts["held"],
        "dead_letters": counts["dead"],
        "delivered": counts["delivered"],
        "oldest_pending_age_seconds": None if oldest is None else round(now - oldest, 1),
        "last_delivery_at": iso_utc(float(last)) if isinstance(last, int | float) else None,
        "uploads_paused": stats.paused or state.get("paused"),
        "last_error": state.get("last_error"),
        "free_disk_bytes": free,
        "captures_running": captures_running,
        "upload_window_open": window,
        "data_budget_left_bytes": left,
        "data_budget_spent": None
        if left is None
        else left == 0 or state.get("budget_full") == local_day(now),
    }


class StatusPublisher(Loop):
    """Publishes the status on a timer and on change; sleeps on an event in between."""

    def __init__(
        self,
        interval: float,
        build: Callable[[], dict[str, Any]],
        publish: Callable[[bytes], bool],
        connected: Callable[[], bool],
    ) -> None:
        super().__init__("mqtt-status")
        self.interval = interval
        self.build = build
        self.publish = publish
        self.connected = connected
        self._dirty = True
        self._last = 0.0
        self._cost = 0.0

    def changed(self, now_too: bool = False) -> None:
        """Something a dashboard cares about changed; ``now_too`` skips the minimum gap."""
        self._dirty = True
        if now_too:
            self._last = 0.0
        self.wake()

    def on_event(self, event: Event, info: dict[str, Any]) -> None:
        if event in CHANGES:
            self.changed()

    def step(self) -> float | None:
        now = time.monotonic()
        due = self._last + self.interval
        if self._dirty:
            due = min(due, self._last + max(MIN_GAP_SECONDS, self._cost * COST_FACTOR))
        if now < due:
            return due - now
        if not self.connected():
            return self.interval  # offline: the next connect wakes us
        self._dirty = False
        try:
            doc = self.build()
            self._cost = time.monotonic() - now
            self.publish(encode(doc))
        except Exception:
            log.exception("publishing the MQTT status failed")
        self._last = time.monotonic()
        return 0.0

"""What a component of the daemon may use while it runs: a narrow runtime, not the daemon.

A component (MQTT capture, deletion sync, the health endpoint) is built from the config
and started once the queue, intake and delivery run; it is stopped before them. It gets a
``Runtime``: the config, the queue, the event stats, the clock, and three doors into the
daemon (queue a file, tell the watcher a file is already on its way, ask whether a
capture may be recorded). Nothing else of the daemon is reachable from a component, so a
component cannot rewire another stage or depend on the daemon's attributes.

A runtime is built anew at every start and reload, with the stages of that run, so what
it holds is always current.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..clock import Clock
from ..config import Config
from ..events import Stats
from ..store.queue import Queue
from .intake import Item


@dataclass(frozen=True)
class Runtime:
    config: Config
    queue: Queue
    stats: Stats
    clock: Clock
    submit: Callable[[Item], None]
    """Queue a file through intake (blocks briefly when intake is busy)."""
    claim: Callable[[Path], None]
    """The caller submits this path itself: the watcher leaves its next event alone."""
    capture_refusal: Callable[[Path], str | None]
    """Why a capture into a folder may not be recorded now (the disk floor), or None."""


class Component(Protocol):
    name: str

    def start(self, runtime: Runtime) -> None:
        """Start threads; raise ``AgentError`` to refuse to start the daemon."""

    def stop(self) -> None:
        """Stop within a few seconds; never raise."""

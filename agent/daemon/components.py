"""Optional parts of the daemon (MQTT capture, health endpoint, deletion sync, ...).

A component is built from the config and started once the queue, intake and pipeline run,
so it can queue files and read state; it is stopped before them. Adding a part to the
daemon means writing a module with a ``Component`` and one line in ``build_components``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .httpd import HealthServer

if TYPE_CHECKING:
    from ..config import Config
    from .lifecycle import Service


class Component(Protocol):
    name: str

    def start(self, service: Service) -> None:
        """Start threads; raise ``AgentError`` to refuse to start the daemon."""

    def stop(self) -> None:
        """Stop within a few seconds; never raise."""


def build_components(config: Config) -> list[Component]:
    """The components this config asks for, in start order."""
    from ..project import deletesync
    from ..sources.mqtt.component import mqtt_components

    components: list[Component] = []
    components.extend(mqtt_components(config))
    if config.http.listen is not None:
        components.append(HealthServer(config.http, config.source))
    components.extend(deletesync.components(config))
    return components

"""The optional parts of the daemon, built from the config.

A component (``core.runtime.Component``) is started once the queue, intake and delivery
run, with a ``Runtime``; it is stopped before them. Adding a part to the daemon means
writing a component and one line here. Each is imported only when the config asks for
it: a daemon without ``[mqtt]`` never loads paho or pyserial (a megabyte and more of
memory on a small device, and start-up time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Config
from ..core.runtime import Component

if TYPE_CHECKING:
    from .health import Vitals


def build_components(config: Config, vitals: Vitals) -> list[Component]:
    """The components this config asks for, in start order."""
    components: list[Component] = []
    if config.mqtt is not None:
        from ..sources.mqtt.component import MqttComponent

        components.append(MqttComponent(config))
    if config.http.listen is not None:
        from .httpd import HealthServer

        components.append(HealthServer(config.http, vitals, config.source))
    if config.sync.delete_remote:
        from ..project.deletesync import DeleteSyncComponent

        components.append(DeleteSyncComponent(config))
    return components

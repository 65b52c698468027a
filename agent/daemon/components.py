"""The optional parts of the daemon, built from the config.

A component (``core.runtime.Component``) is started once the queue, intake and delivery
run, with a ``Runtime``; it is stopped before them. Adding a part to the daemon means
writing a component and one line here.
"""

from __future__ import annotations

from ..config import Config
from ..core.runtime import Component
from ..project.deletesync import DeleteSyncComponent
from ..sources.mqtt.component import MqttComponent
from .health import Vitals
from .httpd import HealthServer


def build_components(config: Config, vitals: Vitals) -> list[Component]:
    """The components this config asks for, in start order."""
    components: list[Component] = []
    if config.mqtt is not None:
        components.append(MqttComponent(config))
    if config.http.listen is not None:
        components.append(HealthServer(config.http, vitals, config.source))
    if config.sync.delete_remote:
        components.append(DeleteSyncComponent(config))
    return components

"""The MQTT connection: paho-mqtt 2 (callback API 2), MQTT 5 or 3.1.1, QoS 1, forever.

paho's own network thread (``loop_start``) owns the socket; other threads only enqueue
publishes, which paho sends in order and re-sends after a reconnect (QoS 1). Reconnects
use paho's exponential backoff between ``reconnect_min_seconds`` and
``reconnect_max_seconds``, forever: a broker that is down, unreachable or refusing our
credentials costs one attempt per backoff step, never a crash or a tight loop. Each
failure is logged once per attempt with the reason and the next wait; a refusal of the
credentials is an error (a config problem), a network failure a warning.

The session is clean: a capture command is about *now*, so commands published while the
device was offline are not replayed hours later. The subscription is therefore made
again on every (re)connect. A last will, retained on ``{prefix}/status``, marks the device
offline if the connection dies; a clean stop publishes the same retained state itself.

``Link`` is the seam: the component talks to this small interface, and unit tests can
put a fake in its place.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...config import MqttConfig
from ...errors import ConfigError
from ...secrets import Secret

MAX_INBOUND_PACKET_BYTES = 256 * 1024
"""The largest MQTT 5 packet the broker may send us (a command is at most 8 KiB)."""

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 1000
"""Events kept while disconnected; beyond that new ones are dropped (memory stays bounded)."""
MAX_CORRELATION_BYTES = 1024
CONNECT_TIMEOUT_SECONDS = 5.0
AUTH_REASONS = ("not authorized", "bad user name or password", "banned", "client identifier")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    response_topic: str | None = None
    correlation: bytes | None = None


class Link(Protocol):
    def start(self) -> None: ...
    def stop(self, last_status: bytes | None) -> None: ...
    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, correlation: bytes | None = None
    ) -> bool: ...
    @property
    def connected(self) -> bool: ...


class _Client(mqtt.Client):
    """paho's client, remembering why the last TCP/TLS connect failed (paho drops it)."""

    last_connect_error: str | None = None

    def _create_socket(self) -> Any:
        try:
            return super()._create_socket()
        except OSError as exc:
            self.last_connect_error = describe_os_error(exc)
            raise


def _no_delay(client: mqtt.Client) -> None:
    """Events are small packets sent in quick succession: do not let Nagle hold them."""
    setsockopt = getattr(client.socket(), "setsockopt", None)
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (check [mqtt.tls] ca_file)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The client TLS context of ``[mqtt.tls]``: TLS 1.2 or later, the host name checked."""
    tls = config.tls
    assert tls is not None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        source = config.password.config_source
        raise ConfigError(source, "mqtt.tls", f"cannot load the TLS files: {exc}") from None
    return ctx


class MqttLink:
    """One broker connection with a last will, a subscription and publishing."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        password: Secret | None,
        will: bytes,
        on_message: Callable[[Message], None],
        on_connected: Callable[[], None],
    ) -> None:
        self.config = config
        self.password = password
        self.will = will
        self.on_message = on_message
        self.on_connected = on_connected
        self._connected = threading.Event()
        self._failures = 0
        self._stopping = False
        self._refused: str | None = None
        self.client = self._build()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _build(self) -> _Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=True,
        )
        client.suppress_exceptions = True
        client.connect_timeout = CONNECT_TIMEOUT_SECONDS
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        client.reconnect_delay_set(cfg.reconnect_min_seconds, cfg.reconnect_max_seconds)
        client.will_set(cfg.status_topic, self.will, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self.password.reveal() if self.password else None)
        if cfg.tls is not None:
            client.tls_set_context(self._tls_context())
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.config)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        clean: Any = True if cfg.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        props = None
        if cfg.protocol == "5":
            # paho reads a whole message into memory before we can refuse it: ask the
            # broker not to send anything larger (commands are at most a few KiB)
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.MaximumPacketSize = MAX_INBOUND_PACKET_BYTES
        self.client.connect_async(
            cfg.host, cfg.port, keepalive=cfg.keepalive_seconds, clean_start=clean,
            properties=props,
        )  # fmt: skip
        self.client.loop_start()
        log.info(
            "MQTT: connecting to %s:%d as %s (MQTT %s%s), topics %s/...",
            cfg.host,
            cfg.port,
            cfg.client_id,
            cfg.protocol,
            ", TLS" if cfg.tls else "",
            cfg.topic_prefix,
        )

    def stop(self, last_status: bytes | None) -> None:
        """Publish the final retained status if connected, disconnect, end the thread."""
        self._stopping = True
        try:
            if last_status is not None and self.connected:
                info = self.client.publish(
                    self.config.status_topic, last_status, qos=1, retain=True
                )
                info.wait_for_publish(2.0)
        except (RuntimeError, ValueError, OSError):
            pass
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self._connected.clear()

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, correlation: bytes | None = None
    ) -> bool:
        """Queue one QoS 1 message; False if paho refused it (queue full, bad topic)."""
        props = None
        if correlation is not None and self.config.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        try:
            info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("MQTT: cannot publish to %r: %s", topic, exc)
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT: message to %s dropped: %s", topic, mqtt.error_string(info.rc))
            return False
        return True

    # -- paho callbacks (network thread; they must never raise) ----------------------------
    def _next_wait(self) -> int:
        cfg = self.config
        return int(
            min(
                cfg.reconnect_min_seconds * 2 ** max(0, self._failures - 1),
                cfg.reconnect_max_seconds,
            )
        )

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        try:
            cfg = self.config
            if reason.is_failure:
                self._failures += 1
                text = str(reason)
                auth = any(a in text.lower() for a in AUTH_REASONS)
                (log.error if auth else log.warning)(
                    "MQTT: broker %s:%d refused the connection: %s%s; retrying in %d s",
                    cfg.host,
                    cfg.port,
                    text,
                    " (check [mqtt] username and password_file / EI_MQTT_PASSWORD)" if auth else "",
                    self._next_wait(),
                )
                return
            if self._failures:
                log.info(
                    "MQTT: connected to %s:%d after %d failed attempt(s)",
                    cfg.host,
                    cfg.port,
                    self._failures,
                )
            else:
                log.info("MQTT: connected to %s:%d", cfg.host, cfg.port)
            self._failures = 0
            _no_delay(client)
            self._connected.set()
            client.subscribe([(topic, 1) for topic in cfg.command_topics])
            self.on_connected()
        except Exception:
            log.exception("MQTT: on_connect failed")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        try:
            self._failures += 1
            reason = self.client.last_connect_error or "connection failed"
            self.client.last_connect_error = None
            log.warning(
                "MQTT: cannot reach broker %s:%d: %s; retrying in %d s",
                self.config.host,
                self.config.port,
                reason,
                self._next_wait(),
            )
        except Exception:
            log.exception("MQTT: on_connect_fail failed")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        try:
            was = self._connected.is_set()
            self._connected.clear()
            if was and not self._stopping:
                log.warning(
                    "MQTT: connection to %s:%d lost (%s); reconnecting",
                    self.config.host,
                    self.config.port,
                    reason,
                )
        except Exception:
            log.exception("MQTT: on_disconnect failed")

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        try:
            refused = [r for r in reasons if getattr(r, "is_failure", False)]
            if refused:
                log.error(
                    "MQTT: broker refused a subscription of %s: %s (check the broker's ACL"
                    " for this user); commands on it will not arrive",
                    ", ".join(self.config.command_topics),
                    refused[0],
                )
            else:
                log.info("MQTT: listening for capture commands on %s",
                         ", ".join(self.config.command_topics))  # fmt: skip
        except Exception:
            log.exception("MQTT: on_subscribe failed")

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        """MQTT 5 tells us when the broker drops a message (3.1.1 drops silently)."""
        try:
            if getattr(reason, "is_failure", False):
                text = str(reason)
                if text != self._refused:  # once per reason, not once per message
                    log.error(
                        "MQTT: broker refused a message: %s (check that the broker's ACL lets"
                        " this user write %s/events, %s/status and any response topics)",
                        text, self.config.topic_prefix, self.config.topic_prefix,
                    )  # fmt: skip
                self._refused = text
        except Exception:
            log.exception("MQTT: on_publish failed")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            props = getattr(msg, "properties", None)
            response = getattr(props, "ResponseTopic", None) if props is not None else None
            corr = getattr(props, "CorrelationData", None) if props is not None else None
            if isinstance(corr, bytes | bytearray) and len(corr) <= MAX_CORRELATION_BYTES:
                corr = bytes(corr)
            else:
                corr = None
            self.on_message(
                Message(
                    topic=str(msg.topic),
                    payload=bytes(msg.payload),
                    retain=bool(msg.retain),
                    response_topic=response if isinstance(response, str) else None,
                    correlation=corr,
                )
            )
        except Exception:
            log.exception("MQTT: handling a message failed")

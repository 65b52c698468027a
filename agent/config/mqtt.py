"""The ``[mqtt]`` table: the broker link of capture commands, events and the heartbeat."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from ..secrets import SecretSource
from .model import MqttConfig, TlsConfig, default, site_capture_topic
from .table import Table

MAX_TOPIC_CHARS = 200
_default = partial(default, MqttConfig)


def parse_mqtt(
    top: Table, device_id: str, *, site: str | None = None, check_files: bool = True
) -> MqttConfig | None:
    if not top.has("mqtt"):
        return None
    t = top.table("mqtt")
    host = t.req_str("host")
    if any(c.isspace() for c in host) or "/" in host:
        raise t.error("host", f"expected a host name or address, got {host!r}")
    tls = _tls(t.table("tls"), check_files) if t.has("tls") else None
    port = t.get_int("port", 8883 if tls else 1883, 1, 65535)
    template = (t.get_str("topic_prefix") or "edge-uploader/{device_id}").rstrip("/")
    prefix = template.replace("{device_id}", device_id)
    if not topic_ok(prefix) or not prefix:
        raise t.error("topic_prefix", "expected a topic without +, #, NUL or empty levels")
    site_prefix, fleet = _group_topics(t, site)
    client_id = t.get_str("client_id") or device_id
    if len(client_id.encode("utf-8")) > 128:
        raise t.error("client_id", "expected at most 128 bytes")
    password_file = t.get_path("password_file")
    username = t.get_str("username")
    if password_file is not None and username is None:
        raise t.error("password_file", "needs a username (set [mqtt] username)")
    protocol = t.choice("protocol", _default("protocol"), ("5", "3.1.1")) or _default("protocol")
    keepalive = t.get_int("keepalive_seconds", _default("keepalive_seconds"), 5, 3600)
    rmin = t.get_int("reconnect_min_seconds", _default("reconnect_min_seconds"), 1, 3600)
    rmax = t.get_int("reconnect_max_seconds", _default("reconnect_max_seconds"), 1, 86400)
    if rmax < rmin:
        raise t.error("reconnect_max_seconds", "must be at least reconnect_min_seconds")
    cfg = MqttConfig(
        host=host,
        port=port,
        client_id=client_id,
        topic_prefix=prefix,
        username=username,
        password=SecretSource(
            "MQTT password",
            t.key("password_file"),
            file=password_file,
            env="EI_MQTT_PASSWORD",
            credential="mqtt_password",
            config_source=t.source,
        ),
        tls=tls,
        protocol=protocol,  # type: ignore[arg-type]
        keepalive_seconds=keepalive,
        heartbeat_seconds=t.get_float(
            "heartbeat_seconds", _default("heartbeat_seconds"), 1.0, 86400.0
        ),
        reconnect_min_seconds=rmin,
        reconnect_max_seconds=rmax,
        site_topic_prefix=site_prefix,
        fleet_topic=fleet,
        site=site,
        topic_pattern=template.replace("{device_id}", "+"),
    )
    t.finish()
    return cfg


def _group_topics(t: Table, site: str | None) -> tuple[str, str]:
    """``site_topic_prefix`` and ``fleet_topic`` (each "" when turned off), checked."""
    site_prefix = t.get_str("site_topic_prefix", _default("site_topic_prefix"), nonempty=False)
    site_prefix = (site_prefix or "").rstrip("/")
    if site_prefix and not topic_ok(site_prefix):
        raise t.error("site_topic_prefix", "expected a topic without +, #, NUL or empty levels")
    if site_prefix and site is not None and not topic_ok(site_capture_topic(site_prefix, site)):
        raise t.error("site_topic_prefix", f"the site topic for [metadata] site {site[:40]!r}"
                      " is not a usable topic (no +, #, empty levels; at most"
                      f" {MAX_TOPIC_CHARS} characters)")  # fmt: skip
    fleet = t.get_str("fleet_topic", _default("fleet_topic"), nonempty=False) or ""
    if fleet and not topic_ok(fleet):
        raise t.error("fleet_topic", "expected a topic without +, #, NUL or empty levels")
    return site_prefix, fleet


def _tls(t: Table, check_files: bool) -> TlsConfig:
    tls = TlsConfig(
        ca_file=_readable(t, "ca_file", check_files),
        cert_file=_readable(t, "cert_file", check_files),
        key_file=_readable(t, "key_file", check_files),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise t.error("key_file", "cert_file and key_file go together (a client certificate)")
    t.finish()
    return tls


def topic_ok(topic: str) -> bool:
    """A topic name we may publish to: no wildcards, NUL, empty levels; bounded length."""
    return (
        0 < len(topic) <= MAX_TOPIC_CHARS
        and not any(c in topic for c in "+#\x00")
        and "" not in topic.split("/")
        and topic.isprintable()
    )


def _readable(t: Table, name: str, check: bool) -> Path | None:
    path = t.get_path(name)
    if check and path is not None and not os.access(path, os.R_OK):
        raise t.error(name, f"{path} is not a readable file")
    return path

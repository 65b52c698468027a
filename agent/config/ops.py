"""Config sections for running unattended: ``[http]``, ``[health]`` and ``[disk]``.

Every error names the file, the key path and what was expected, like the rest of the
config (exit status 78).

Transport rules for service URLs live here too (``check_service_url``): plain ``http://``
is refused for anything but a loopback host unless the config says
``allow_insecure_http = true``, because the API key travels in a request header.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .model import DiskConfig, HealthConfig, HttpConfig, default, is_loopback
from .table import Table


def check_service_url(t: Table, key: str, url: str, allow_insecure_http: bool) -> None:
    """Refuse ``http://`` to a non-loopback host unless explicitly allowed.

    For ``[ingestion] url`` and ``[studio] url``: both carry the API key in a header.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise t.error(key, f"expected a URL with a host name, got {url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise t.error(
            key,
            f"{url} is plain http:// to a host that is not this machine: the API key would"
            " cross the network unencrypted. Use https://, or set allow_insecure_http = true"
            " in the same table if you really mean it",
        )


def parse_http(t: Table) -> HttpConfig:
    """``[http] listen = "127.0.0.1:9108"`` (host:port, ``[::1]:9108``, or a bare port)."""
    text = t.get_str("listen")
    t.finish()
    if text is None:
        return HttpConfig()
    host, port = _host_port(t, "listen", text.strip())
    return HttpConfig(listen=(host, port))


def _host_port(t: Table, key: str, text: str) -> tuple[str, int]:
    expected = 'expected "HOST:PORT" such as "127.0.0.1:9108" or "[::1]:9108"'
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise t.error(key, f"{expected}, got {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise t.error(key, f"{expected}, got {text!r}")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise t.error(key, f"{expected}, got {text!r}")
    return host, int(port_text)


def parse_health(t: Table) -> HealthConfig:
    stall = None
    if t.has("stall_seconds"):
        stall = t.get_float("stall_seconds", 0.0, 0.5, 86400.0)
    t.finish()
    return HealthConfig(stall_seconds=stall)


def parse_disk(t: Table) -> DiskConfig:
    cfg = DiskConfig(
        min_free_bytes=t.get_int("min_free_bytes", default(DiskConfig, "min_free_bytes"), 0, 2**62),
        min_free_percent=t.get_float(
            "min_free_percent", default(DiskConfig, "min_free_percent"), 0.0, 90.0
        ),
        prune_delivered=t.get_bool("prune_delivered", default(DiskConfig, "prune_delivered")),
        check_interval_seconds=t.get_float(
            "check_interval_seconds", default(DiskConfig, "check_interval_seconds"), 0.1, 3600.0
        ),
    )
    t.finish()
    return cfg

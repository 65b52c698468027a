"""Config sections for running unattended: ``[http]``, ``[health]`` and ``[disk]``.

Kept apart from ``agent.config`` so the core config module only gains one field and one
parse call per section. Every error names the file, the key path and what was expected,
like the rest of the config (exit status 78).

Transport rules for service URLs live here too (``check_service_url``): plain ``http://``
is refused for anything but a loopback host unless the config says
``allow_insecure_http = true``, because the API key travels in a request header.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .load import Table

DEFAULT_HTTP_PORT = 9108
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
DEFAULT_DISK_CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class HttpConfig:
    """The optional local health endpoint. ``listen`` None: no endpoint."""

    listen: tuple[str, int] | None = None

    @property
    def loopback(self) -> bool:
        return self.listen is None or is_loopback(self.listen[0])


@dataclass(frozen=True)
class HealthConfig:
    """What counts as a hung pipeline (stops the systemd watchdog pings)."""

    stall_seconds: float | None = None
    """Uploads in flight that send no byte and finish nothing for this long: hung.
    None: derived from the ingestion timeouts (see ``effective_stall_seconds``)."""

    def effective_stall_seconds(self, timeout: float, connect_timeout: float) -> float:
        """A legitimate request is silent for at most one read timeout (plus connect);
        uploads count every body chunk they send as progress, so a large file on a slow
        link never looks hung."""
        if self.stall_seconds is not None:
            return self.stall_seconds
        return max(300.0, timeout + connect_timeout + 60.0)


@dataclass(frozen=True)
class DiskConfig:
    """The free-space floor of the capture and queue file systems."""

    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    min_free_percent: float = 0.0
    prune_delivered: bool = False
    check_interval_seconds: float = DEFAULT_DISK_CHECK_SECONDS

    def floor(self, total_bytes: int) -> int:
        """The floor in bytes for a file system of ``total_bytes``: the larger rule wins."""
        return max(self.min_free_bytes, int(total_bytes * self.min_free_percent / 100.0))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        min_free_bytes=t.get_int("min_free_bytes", DEFAULT_MIN_FREE_BYTES, 0, 2**62),
        min_free_percent=t.get_float("min_free_percent", 0.0, 0.0, 90.0),
        prune_delivered=t.get_bool("prune_delivered", False),
        check_interval_seconds=t.get_float(
            "check_interval_seconds", DEFAULT_DISK_CHECK_SECONDS, 0.1, 3600.0
        ),
    )
    t.finish()
    return cfg

"""Which proxy the environment names for a URL, worked out as httpx does but without
importing it: ``check-config`` and start-up messages name the proxy, and they should not
pay for an HTTP client they do not use."""

from __future__ import annotations

import urllib.parse
import urllib.request

from ..text import one_line

MAX_SHOWN = 300
"""A proxy URL is shown on one line of at most this many characters."""


def proxy_url(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, minus ``NO_PROXY``), as httpx picks it, password and all: for the
    connection pool only, never for a message (``proxy_for`` is the one to show). None:
    direct."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or _bypassed(parts.hostname or "", proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def proxy_for(url: str) -> str | None:
    """``proxy_url`` as it may be shown: its password hidden, on one line. None: direct."""
    proxy = proxy_url(url)
    if proxy is None:
        return None
    p = urllib.parse.urlsplit(proxy)
    if p.password is not None:
        netloc = f"{p.username}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
        p = p._replace(netloc=netloc)
    return one_line(urllib.parse.urlunsplit(p), MAX_SHOWN)


def _bypassed(host: str, no_proxy: str) -> bool:
    """``NO_PROXY`` as httpx reads it: ``*``, host names (and their subdomains), a leading
    dot for a domain, IP addresses."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        name = (entry.partition(":")[0] if entry.count(":") == 1 else entry).lstrip(".")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False

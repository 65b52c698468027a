"""Which proxy the environment names for a URL, worked out as httpx does but without
importing it: ``check-config`` and start-up messages name the proxy, and they should not
pay for an HTTP client they do not use."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping

from ..text import one_line

MAX_SHOWN = 300
"""A proxy URL is shown on one line of at most this many characters."""


def proxy_url(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, minus ``NO_PROXY``), as httpx picks it, password and all: for the
    connection pool only, never for a message (``proxy_for`` is the one to show). None:
    direct."""
    parts = urllib.parse.urlsplit(url)
    proxies = proxies_from_environment(os.environ)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or _bypassed(parts.hostname or "", proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def proxies_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``urllib.request.getproxies_environment`` (which httpx reads) without importing
    ``urllib.request`` (a tenth of a start-up): ``<scheme>_proxy`` variables in any case,
    a lower-case one winning over its upper-case twin (an empty lower-case one removes
    it), and ``HTTP_PROXY`` ignored under CGI (``REQUEST_METHOD`` set, CVE-2016-1000110)."""
    proxies: dict[str, str] = {}
    lower: list[tuple[str, str]] = []
    for name, value in environ.items():
        if len(name) > 5 and name[-6] == "_" and name[-5:].lower() == "proxy":
            scheme = name[:-6].lower()
            if value:
                proxies[scheme] = value
            if name[-6:] == "_proxy":
                lower.append((scheme, value))
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for scheme, value in lower:
        if value:
            proxies[scheme] = value
        else:
            proxies.pop(scheme, None)
    return proxies


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

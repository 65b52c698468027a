"""The HTTP layer both remote services share: one way to build a client, read an answer,
clean its error text and decide what a status means.

The ingestion uploader (``remote.ingestion``) and the Studio client (``remote.studio``)
differ in their endpoints and their answers' shapes, not in how HTTP behaves, so this is
written once:

- ``make_client``: one ``httpx.Client`` per use with keep-alive, a bounded pool, no
  redirects (a redirect is a wrong URL, and the API key must not follow it elsewhere), TLS
  verified against the system store or ``ca_file``; ``make_transport``: its connection
  pool, which the uploader sends on directly;
- ``read_limited``: an answer is read up to a limit, never whole into memory, and within a
  deadline for the whole body (a server dripping a byte a second is cut);
- ``transport_reason``: a network failure in a few clean words.

What an answer says (its JSON, error text, status, ``Retry-After``) is read by
``remote.statuses``, re-exported here for the Studio client.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from .proxy import proxy_for as proxy_for  # its home before; kept for importers
from .proxy import proxy_url
from .statuses import MAX_ERROR_CHARS as MAX_ERROR_CHARS
from .statuses import clean as clean
from .statuses import error_text as error_text
from .statuses import parse_json as parse_json
from .statuses import parse_retry_after as parse_retry_after
from .statuses import retry_after as retry_after
from .statuses import status_error as status_error
from .throttle import progress_ticker
from .tls import client_context
from .wire import USER_AGENT


def make_transport(
    *, url: str, concurrency: int, ca_file: Path | None = None
) -> httpx.HTTPTransport:
    """The connection pool for one service at ``url``, through the proxy the environment
    names for it (``proxy_url``, as httpx would pick it). The uploader sends on it directly:
    ``httpx.Client.send``'s auth, redirect, cookie and response-wrapping layers do nothing
    for it and cost about a third of the CPU of a small upload."""
    proxy = proxy_url(url)
    return httpx.HTTPTransport(
        verify=tls_verify(ca_file, needed=_uses_tls(url) or _uses_tls(proxy or "")),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        proxy=proxy,
    )


def tls_verify(ca_file: Path | None, *, needed: bool = True) -> ssl.SSLContext | bool:
    """How TLS is verified: against ``ca_file``, or the default store (True). A link that
    carries no TLS (an ``http://`` service, direct or through an ``http://`` proxy) gets a
    context with no authority loaded: reading the default store costs about 35 ms of a
    start-up, and a TLS handshake on that context could only fail, never pass unverified."""
    if not needed:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and trusts no one
    if ca_file is not None:
        return client_context(ca_file)
    return True


def _uses_tls(url: str) -> bool:
    return url[:8].lower() == "https://"


def make_client(
    *, concurrency: int, timeout: float, connect_timeout: float, ca_file: Path | None = None,
    transport: httpx.BaseTransport | None = None, on_progress: Callable[[], None] | None = None,
) -> httpx.Client:  # fmt: skip
    """A client for one service; ``on_progress`` is called while request bodies stream out
    (at most every half second: the health check's proof that a long upload is not hung).
    A ``transport`` given is the whole link (its own proxy, if any): the environment's
    proxies are not mounted over it."""
    client = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
        follow_redirects=False,
        verify=tls_verify(ca_file),
        transport=transport,
        trust_env=transport is None,
    )
    if on_progress is not None:
        _count_body_progress(client, on_progress)
    return client


class AnswerTooSlow(httpx.ReadTimeout):
    """The answer's body did not arrive whole within its deadline."""


def read_limited(
    response: httpx.Response, limit: int, *, within: float | None = None
) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes, and whether there was more. ``within``: the whole
    body must arrive in that many seconds, else ``AnswerTooSlow``, a ``ReadTimeout`` (the
    client's timeout is per read: a server dripping a byte a second never trips it)."""
    deadline = None if within is None else time.monotonic() + within
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return b"".join(chunks)[:limit], True
        if deadline is not None and time.monotonic() > deadline:
            raise AnswerTooSlow(f"the answer did not arrive whole within {within:g} s")
    return b"".join(chunks), False


def transport_reason(exc: httpx.TransportError) -> str:
    """A network failure in a few clean words (``ConnectError: [Errno 111] ...``)."""
    return clean(f"{type(exc).__name__}: {str(exc) or type(exc).__name__}")


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, tick: Callable[[], None]) -> None:
        self.inner = inner
        self.tick = tick

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.tick()
            yield chunk

    def close(self) -> None:
        self.inner.close()


def _count_body_progress(client: httpx.Client, on_progress: Callable[[], None]) -> None:
    """A request hook, so it works whichever transport or proxy is used."""
    tick = progress_ticker(on_progress)

    def hook(request: httpx.Request) -> None:
        if isinstance(request.stream, httpx.SyncByteStream):
            request.stream = _CountingStream(request.stream, tick)

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks["request"], hook]}

"""The uploader: the only code that talks to the ingestion service.

One link with keep-alive connections, shared by the worker threads: ``Wire`` (lean HTTP/1.1
on sockets) for a direct link, httpx (``via_httpx``) through a proxy. Bodies are streamed
from the file, never read whole into memory (except files of at most ``SMALL_BODY_BYTES``,
sent in one write). ``classify`` maps what came back to an ``Outcome`` (the vocabulary of
``errors``), through the status table both services share (``remote.http``):

==================================  ===============  ==========================================
what came back                      outcome          queue
==================================  ===============  ==========================================
200, success, every file success    DELIVERED        delivered, sampleId kept
"An item with this hash already..." DUPLICATE        delivered (it already is at the service)
connect/read errors, timeouts,      RETRY            pending again after backoff (Retry-After
408, 425, 429, 5xx, 200 w/o JSON                     honoured)
401, 403, 3xx                       PAUSE            pending again; uploads pause: a wrong key or
                                                     URL must not burn the queue into dead letters
400, 404, 413, 421, 422, per-file   DEAD             dead, with the service's reason
errors, other 4xx
==================================  ===============  ==========================================

Wire format (see the project's ingestion reference): ``POST {url}/api/{category}/files``,
multipart with one part named ``data`` carrying the file under its own name; headers
``x-api-key``, ``x-label`` (percent-encoded like JavaScript's encodeURIComponent) or
``x-no-label: 1`` with an empty ``x-label``, ``x-disallow-duplicates: 1``, and
``x-metadata`` (compact ASCII JSON of strings).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from ..clock import Clock, system_clock
from ..config import Config
from ..errors import Outcome
from ..metadata import encode_metadata
from ..secrets import Secret
from .outcomes import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES
from .outcomes import Answer, classify_many, network_error, timed_out
from .outcomes import classify as classify
from .proxy import proxy_for, proxy_url
from .samples import SMALL_BODY_BYTES as SMALL_BODY_BYTES
from .samples import Sample, _body, _open, _unreadable, multipart
from .samples import content_type as content_type
from .statuses import clean
from .statuses import parse_retry_after as parse_retry_after
from .throttle import PIECE_BYTES, Throttle, progress_ticker
from .tls import client_context
from .wire import CHUNK_BYTES, USER_AGENT, SourceError, Wire, WireError
from .wire import AnswerTooSlow as WireTooSlow

if TYPE_CHECKING:
    import httpx

    from .via_httpx import HttpxLink

__all__ = ["Answer", "Outcome", "Sample", "Uploader", "build_uploader", "classify",
           "content_type", "encode_label", "parse_retry_after"]  # fmt: skip


def __getattr__(name: str) -> Any:
    """``make_client`` from here, as before, without importing httpx for a direct link."""
    if name == "make_client":
        from .http import make_client

        return make_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_label(label: str) -> str:
    """Percent-encode exactly like JavaScript's ``encodeURIComponent``."""
    return quote(label, safe="!~*'()")


def build_headers(sample: Sample, api_key: Secret) -> dict[str, str]:
    headers = {"x-api-key": api_key.reveal()}
    if sample.label == "":
        headers["x-label"] = ""
        headers["x-no-label"] = "1"
    elif sample.label is not None:
        headers["x-label"] = encode_label(sample.label)
    if not sample.allow_duplicates:
        headers["x-disallow-duplicates"] = "1"
    if sample.metadata:
        headers["x-metadata"] = encode_metadata(sample.metadata)
    return headers


def build_uploader(
    config: Config, *, transport: httpx.BaseTransport | None = None, clock: Clock = system_clock,
    on_progress: Callable[[], None] | None = None,
) -> Uploader:  # fmt: skip
    """The uploader for ``config``; ``on_progress`` is called while request bodies stream
    (the health check's proof that a long upload is not hung).

    A direct link sends on ``Wire`` (about a tenth of httpx's CPU per request); a link
    through a proxy, or a ``transport`` given (a test's mock), goes through httpx."""
    ing = config.ingestion
    throttle = Throttle(ing.link.max_bytes_per_second) if ing.link.max_bytes_per_second else None
    if transport is None and proxy_url(ing.url) is None:
        ca_file = ing.ca_file
        wire = Wire(ing.url, timeout=ing.timeout_seconds,
                    connect_timeout=ing.connect_timeout_seconds,
                    tls=lambda: client_context(ca_file), max_idle=ing.workers,
                    on_body=body_hook(throttle, on_progress),
                    piece_bytes=PIECE_BYTES if throttle else CHUNK_BYTES)  # fmt: skip
        uploader = Uploader(None, ing.url, ing.api_key.load(), clock=clock, wire=wire)
        uploader.throttle = throttle
        return uploader
    from .http import make_client, make_transport
    from .via_httpx import pace_bodies

    if transport is None:
        transport = make_transport(url=ing.url, concurrency=ing.workers, ca_file=ing.ca_file)
    client = make_client(
        concurrency=ing.workers, timeout=ing.timeout_seconds,
        connect_timeout=ing.connect_timeout_seconds, ca_file=ing.ca_file, transport=transport,
        on_progress=on_progress,
    )  # fmt: skip
    uploader = Uploader(client, ing.url, ing.api_key.load(), clock=clock, transport=transport)
    if throttle is not None:
        uploader.throttle = throttle
        pace_bodies(client, throttle)
    return uploader


def body_hook(
    throttle: Throttle | None, on_progress: Callable[[], None] | None
) -> Callable[[int], None] | None:
    """What runs before each piece of a body goes on the wire: the bandwidth cap's wait,
    then the progress tick."""
    if throttle is None and on_progress is None:
        return None
    tick = progress_ticker(on_progress) if on_progress is not None else None

    def hook(n: int) -> None:
        if throttle is not None:
            throttle.take(n)
        if tick is not None:
            tick()

    return hook


class Uploader:
    """Sends one request of samples at a time; never raises for what the service or network
    did. ``wire``: the lean link requests go on (``client`` is then unused, may be None);
    else ``transport``: the ``client``'s own, sent on directly (``make_transport``); else
    requests go through ``client.send``."""

    def __init__(
        self, client: httpx.Client | None, url: str, api_key: Secret, *, clock: Any = time.time,
        transport: httpx.BaseTransport | None = None, wire: Wire | None = None,
    ) -> None:  # fmt: skip
        if client is None and wire is None:
            raise ValueError("an uploader needs a client or a wire")
        self.client = client
        self.wire = wire
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.clock = clock
        self.transport = transport
        self.throttle: Throttle | None = None
        """The bandwidth cap on request bodies, if any."""
        self.proxy = proxy_for(self.url)
        """The proxy requests go through (named in network errors), or None."""
        self._httpx: HttpxLink | None = None
        if wire is None:
            from .via_httpx import HttpxLink

            assert client is not None
            self._httpx = HttpxLink(client, transport, self.proxy)

    def endpoint(self, category: str) -> str:
        return f"{self.url}/api/{category}/files"

    def close(self) -> None:
        if self.throttle is not None:
            self.throttle.close()
        if self.wire is not None:
            self.wire.close()
        if self.client is not None:
            self.client.close()

    def upload(self, sample: Sample) -> Answer:
        return self.upload_many([sample])[0]

    def upload_many(self, samples: Sequence[Sample]) -> list[Answer]:
        """Send ``samples`` in one request (they share category, label and metadata); one
        answer per sample, in order. A file that vanished or changed is answered without
        being sent; the others still go."""
        answers: list[Answer | None] = [None] * len(samples)
        opened: list[IO[bytes]] = []
        try:
            parts: list[tuple[int, IO[bytes] | bytes, str, int]] = []
            for i, sample in enumerate(samples):
                got = _open(sample)
                if isinstance(got, Answer):
                    answers[i] = got
                    continue
                fd, st = got
                size = st.st_size
                try:
                    body = _body(fd, st, opened)
                except OSError as exc:
                    answers[i] = _unreadable(exc)
                    continue
                if isinstance(body, Answer):
                    answers[i] = body
                    continue
                parts.append((i, *body, size))
            if parts:
                chosen = [samples[i] for i, *_ in parts]
                if self._httpx is not None:
                    sent = self._httpx.send(self.endpoint(chosen[0].category),
                                            build_headers(chosen[0], self.api_key), chosen,
                                            [c for _, c, _, _ in parts], self.clock)  # fmt: skip
                else:
                    assert self.wire is not None
                    sent = self._send_wire(self.wire, chosen, [(c, z) for _, c, _, z in parts])
                for (i, _, sha, size), answer in zip(parts, sent, strict=True):
                    delivered = answer.outcome is Outcome.DELIVERED
                    answers[i] = replace(answer, sha256=sha, bytes_sent=size if delivered else 0)
        finally:
            for handle in opened:
                handle.close()
        return [a for a in answers if a is not None]

    def _send_wire(
        self, wire: Wire, samples: Sequence[Sample],
        contents: Sequence[tuple[IO[bytes] | bytes, int]],
    ) -> list[Answer]:  # fmt: skip
        n = len(samples)
        boundary = new_boundary()
        headers = [*WIRE_HEADERS, *build_headers(samples[0], self.api_key).items(),
                   ("Content-Type", f"multipart/form-data; boundary={boundary}")]  # fmt: skip
        try:
            reply = wire.post(f"/api/{samples[0].category}/files", headers,
                              multipart(samples, contents, boundary.encode()),
                              limit=MAX_RESPONSE_BYTES, within=wire.timeout)  # fmt: skip
        except SourceError as exc:
            return [_unreadable(exc.error)] * n
        except WireError as exc:
            if exc.timeout:
                return timed_out(str(exc) if isinstance(exc, WireTooSlow) else exc.name, n)
            return network_error(clean(f"{exc.name}: {exc}"), n)
        return classify_many(reply.status, reply.headers, reply.body, self.clock(), n,
                             cut=reply.cut)  # fmt: skip


_BOUNDARY_KEY = os.urandom(32)
_boundaries = itertools.count()


def new_boundary() -> str:
    """128 unpredictable bits, as httpx draws a boundary, without a system call per request
    (``os.urandom`` is one, and a moment the workers hand the interpreter lock over): a
    keyed hash of a counter, the key drawn once."""
    counter = next(_boundaries).to_bytes(8, "big")
    return hashlib.blake2b(counter, key=_BOUNDARY_KEY, digest_size=16).hexdigest()


WIRE_HEADERS = (("User-Agent", USER_AGENT), ("Accept", "*/*"),
                ("Accept-Encoding", "identity"), ("Connection", "keep-alive"))  # fmt: skip
"""What httpx sends on every request, sent on the wire too."""

"""Requests through httpx, for a link the lean ``Wire`` does not take: one through a
proxy (httpx speaks CONNECT and proxy authentication), or a test's mock transport. The
answers are the ones ``Wire`` gives for the same exchange."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import httpx

from .http import AnswerTooSlow, read_limited, transport_reason
from .outcomes import MAX_RESPONSE_BYTES, Answer, classify_many, network_error, timed_out
from .samples import Sample, _unreadable, content_type
from .throttle import PIECE_BYTES, Throttle


class HttpxLink:
    """Sends on ``transport`` directly when given (``make_transport``: ``Client.send``'s
    auth, redirect and cookie layers do nothing here), else through ``client.send``."""

    def __init__(self, client: httpx.Client, transport: httpx.BaseTransport | None,
                 proxy: str | None) -> None:  # fmt: skip
        self.client = client
        self.transport = transport
        self.proxy = proxy
        self._headers = dict(client.headers)
        self._urls: dict[str, httpx.URL] = {}

    def send(
        self, endpoint: str, headers: dict[str, str], samples: Sequence[Sample],
        contents: Sequence[IO[bytes] | bytes], now: Callable[[], float],
    ) -> list[Answer]:  # fmt: skip
        files: list[tuple[str, tuple[str, Any, str]]] = []
        for sample, content in zip(samples, contents, strict=True):
            files.append(("data", (sample.file_name, content, content_type(sample.file_name))))
            files.extend(("data", part) for part in sample.extra_parts)
        n = len(samples)
        try:
            request = self._request(endpoint, headers, files)
            if all(isinstance(c, bytes) for c in contents):
                request.read()  # one write for the whole body, not one per multipart piece
            elif isinstance(request.stream, httpx.SyncByteStream):
                request.stream = _Coalesced(request.stream)  # a large file streams
            response = self._exchange(request)
            try:
                body, cut = read_limited(response, MAX_RESPONSE_BYTES,
                                         within=self.client.timeout.read)  # fmt: skip
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            return timed_out(str(exc) if isinstance(exc, AnswerTooSlow) else type(exc).__name__, n)
        except httpx.TransportError as exc:
            via = f" (through the proxy {self.proxy})" if self.proxy else ""
            return network_error(f"{transport_reason(exc)}{via}", n)
        except OSError as exc:
            return [_unreadable(exc)] * n
        return classify_many(response.status_code, response.headers, body, now(), n, cut=cut)

    def _request(
        self, endpoint: str, headers: dict[str, str], files: list[tuple[str, tuple[str, Any, str]]]
    ) -> httpx.Request:
        """The request ``client.build_request`` would make, without re-parsing the URL and
        re-merging the client's cookies and settings for every file."""
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = httpx.URL(endpoint)
        return httpx.Request("POST", url, headers={**self._headers, **headers}, files=files,
                             extensions={"timeout": self.client.timeout.as_dict()})  # fmt: skip

    def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer's body is left to stream. On the transport directly,
        the client's request hooks (progress, the bandwidth cap) are run here."""
        if self.transport is None:
            return self.client.send(request, stream=True)
        for hook in self.client.event_hooks["request"]:
            hook(request)
        return self.transport.handle_request(request)


COALESCE_BYTES = 16 * 1024
"""Pieces of a streamed body smaller than this are joined before they are written."""


class _Coalesced(httpx.SyncByteStream):
    """A streamed multipart body in few writes: httpx yields every part's headers, every
    small file and every boundary as a piece of its own (about 70 system calls, and as
    many reads at the service, for a request of 20 files); pieces below
    ``COALESCE_BYTES`` are joined, a large file's chunks pass as they are (no copy)."""

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        small: list[bytes] = []
        held = 0
        for chunk in self.inner:
            if len(chunk) >= COALESCE_BYTES:
                if small:
                    yield b"".join(small)
                    small, held = [], 0
                yield chunk
                continue
            small.append(chunk)
            held += len(chunk)
            if held >= COALESCE_BYTES:
                yield b"".join(small)
                small, held = [], 0
        if small:
            yield b"".join(small)

    def close(self) -> None:
        self.inner.close()


class _PacedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, throttle: Throttle) -> None:
        self.inner = inner
        self.throttle = throttle

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            for at in range(0, len(chunk), PIECE_BYTES):
                piece = chunk[at : at + PIECE_BYTES]
                self.throttle.take(len(piece))
                yield piece

    def close(self) -> None:
        self.inner.close()


def pace_bodies(client: httpx.Client, throttle: Throttle) -> None:
    """Every request body the client sends waits for ``throttle`` (a request hook, so it
    works with any transport, proxy or not)."""

    def hook(request: httpx.Request) -> None:
        if isinstance(request.stream, httpx.SyncByteStream):
            request.stream = _PacedStream(request.stream, throttle)

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks["request"], hook]}

"""A minimal ingestion server for benchmarks: it answers like the service and stores nothing.

    python bench/minserver.py [--port 0] [--api-key KEY] [--latency-ms N] [--fail-rate F]
        [--drop-rate F] [--lost-reply-rate F] [--max-inflight N] [--seed N]

Why not the project's local ingestion server: that one writes every sample to disk and
implements the whole API, so on a 2-core machine its own cost would be part of every
client's figure. This one does only what a client's speed depends on: HTTP/1.1 keep-alive,
Content-Length and chunked bodies, the headers (``x-api-key`` checked, ``x-metadata``
parsed), a lean multipart scan that hashes each sample part (SHA-256) so duplicates are
refused like the real service, and the JSON answer:
``{"success": all ok, "files": [{"success": true, "sampleId": N, "projectId": 1,
"fileName": ...} | {"success": false, "error": "An item with this hash already exists"}]}``,
one entry per sample part in order (``*.labels`` side parts are not samples).

Faults, drawn per request from one seeded generator (deterministic for a given arrival
order): ``--latency-ms`` (an asyncio timer, so many requests wait at once), ``--fail-rate``
(answered 500 or 503, half each, nothing stored), ``--drop-rate`` (the connection is
closed without an answer, nothing stored), ``--lost-reply-rate`` (stored, then closed
without an answer) and ``--max-inflight N`` (a request arriving while N are being
processed is answered 503 after the latency, nothing stored). No ``Retry-After`` is sent:
the real service documents none.

The first stdout line is ``minserver listening on http://HOST:PORT``. ``GET /stats``
returns the counters as JSON (times are ``time.monotonic()``, comparable across processes
on Linux); SIGTERM prints them as one line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

DUPLICATE = "An item with this hash already exists"
MAX_HEAD = 64 * 1024
DISPOSITION = re.compile(
    rb'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"(?:[^\r\n]*?filename="([^"]*)")?'
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Stats:
    """What the benchmark reads: every figure counted at the server."""

    requests: int = 0
    """POSTs to a files endpoint, whatever became of them."""
    stored: int = 0
    distinct: int = 0
    duplicates: int = 0
    """Sample parts refused because their hash was already stored."""
    errors_5xx: int = 0
    overload_503: int = 0
    dropped: int = 0
    lost_replies: int = 0
    unauthorized: int = 0
    bad_requests: int = 0
    body_bytes: int = 0
    inflight_peak: int = 0
    first_request_at: float | None = None
    last_new_at: float | None = None
    """When the last new distinct sample was stored."""


@dataclass
class Options:
    api_key: str
    latency: float
    fail_rate: float
    drop_rate: float
    lost_rate: float
    max_inflight: int
    seed: int


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True


@dataclass
class Server:
    opts: Options
    stats: Stats = field(default_factory=Stats)
    hashes: set[bytes] = field(default_factory=set)
    inflight: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(self.opts.seed)


def parse_head(head: bytes) -> Request | None:
    """Request line and headers (names lower-cased); None if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[2] == "HTTP/1.1"
    return Request(parts[0], parts[1], headers, keep_alive=keep)


def boundary_of(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode("latin-1")
    return None


def sample_parts(body: bytes, boundary: bytes) -> list[tuple[str, memoryview]] | None:
    """(file name, content) of each part named ``data`` that is not a ``.labels`` side part."""
    delim = b"\r\n--" + boundary
    view = memoryview(body)
    pos = body.find(delim[2:])
    if pos < 0:
        return None
    pos += len(delim) - 2
    parts: list[tuple[str, memoryview]] = []
    while body[pos : pos + 2] != b"--":
        head_end = body.find(b"\r\n\r\n", pos)
        end = body.find(delim, head_end + 4)
        if head_end < 0 or end < 0:
            return None
        match = DISPOSITION.search(body, pos, head_end + 2)
        if match and match.group(1) == b"data":
            name = (match.group(2) or b"").decode("utf-8", "replace")
            if not name.endswith(".labels"):
                parts.append((name, view[head_end + 4 : end]))
        pos = end + len(delim)
    return parts


def metadata_ok(value: str | None) -> bool:
    if value is None:
        return True
    try:
        data = json.loads(value)
    except ValueError:
        return False
    return isinstance(data, dict) and all(isinstance(v, str) for v in data.values())


def store(server: Server, req: Request) -> tuple[int, dict[str, object]]:
    """Scan the body, refuse duplicates, count the rest as stored."""
    boundary = boundary_of(req.headers.get("content-type", ""))
    parts = sample_parts(req.body, boundary) if boundary else None
    if not parts or not metadata_ok(req.headers.get("x-metadata")):
        server.stats.bad_requests += 1
        return 400, {"success": False, "error": "bad multipart body or x-metadata"}
    refuse = "x-disallow-duplicates" in req.headers
    files: list[dict[str, object]] = []
    st = server.stats
    for name, content in parts:
        digest = hashlib.sha256(content).digest()
        if refuse and digest in server.hashes:
            st.duplicates += 1
            files.append({"success": False, "error": DUPLICATE})
            continue
        st.stored += 1
        if digest not in server.hashes:
            server.hashes.add(digest)
            st.distinct = len(server.hashes)
            st.last_new_at = time.monotonic()
        files.append({"success": True, "sampleId": st.stored, "projectId": 1, "fileName": name})
    return 200, {"success": all(f["success"] for f in files), "files": files}


def response(status: int, body: dict[str, object], keep_alive: bool) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + data


class Connection(asyncio.Protocol):
    """One client connection: read a request, answer it, then read the next."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.req: Request | None = None
        self.need = 0
        self.chunked = False
        self.busy = False
        self.parsing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.advance()

    def advance(self) -> None:
        """Parse as far as the buffer allows; hand over each complete request."""
        self.parsing = True
        try:
            while not self.busy and self.transport and not self.transport.is_closing():
                if self.req is None and not self.read_head():
                    return
                body = self.read_chunked() if self.chunked else self.read_sized()
                if body is None:
                    return
                req, self.req = self.req, None
                assert req is not None
                req.body = body
                self.busy = True
                self.dispatch(req)
        finally:
            self.parsing = False

    def read_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.close()
            return False
        req = parse_head(bytes(self.buf[:end]))
        del self.buf[: end + 4]
        if req is None:
            self.close()
            return False
        self.req = req
        self.chunked = "chunked" in req.headers.get("transfer-encoding", "").lower()
        self.need = int(req.headers.get("content-length", "0") or 0)
        return True

    def read_sized(self) -> bytes | None:
        if len(self.buf) < self.need:
            return None
        body = bytes(self.buf[: self.need])
        del self.buf[: self.need]
        return body

    def read_chunked(self) -> bytes | None:
        """The whole chunked body once it is all in the buffer (trailers ignored)."""
        pos, out = 0, []
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                end = self.buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return None
                del self.buf[: end + 4]
                return b"".join(out)
            if len(self.buf) < eol + 2 + size + 2:
                return None
            out.append(bytes(self.buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2

    def dispatch(self, req: Request) -> None:
        server, st = self.server, self.server.stats
        if req.method == "GET" and req.path == "/stats":
            self.send(200, asdict(st), req.keep_alive)
            return
        if req.method != "POST" or not re.fullmatch(r"/api/[a-z-]+/files", req.path):
            self.send(404, {"success": False, "error": "not found"}, req.keep_alive)
            return
        st.requests += 1
        st.body_bytes += len(req.body)
        if st.first_request_at is None:
            st.first_request_at = time.monotonic()
        draw, half = server.rng.random(), server.rng.random()
        limit = server.opts.max_inflight
        if limit and server.inflight >= limit:
            st.overload_503 += 1
            st.errors_5xx += 1
            busy = {"success": False, "error": "overloaded"}
            self.later(lambda: self.send(503, busy, req.keep_alive))
            return
        server.inflight += 1
        st.inflight_peak = max(st.inflight_peak, server.inflight)
        self.later(lambda: self.process(req, draw, half))

    def later(self, action: Callable[[], None]) -> None:
        delay = self.server.opts.latency
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, action)
        else:
            action()

    def process(self, req: Request, draw: float, half: float) -> None:
        server, st, o = self.server, self.server.stats, self.server.opts
        server.inflight -= 1
        if req.headers.get("x-api-key") != o.api_key:
            st.unauthorized += 1
            self.send(401, {"success": False, "error": "Invalid API key"}, req.keep_alive)
            return
        if draw < o.drop_rate:
            st.dropped += 1
            self.close()
            return
        if draw < o.drop_rate + o.fail_rate:
            st.errors_5xx += 1
            self.send(500 if half < 0.5 else 503, {"success": False, "error": "injected"}, True)
            return
        status, body = store(server, req)
        if draw < o.drop_rate + o.fail_rate + o.lost_rate:
            st.lost_replies += 1
            self.close()
            return
        self.send(status, body, req.keep_alive)

    def send(self, status: int, body: dict[str, object], keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response(status, body, keep_alive))
        if not keep_alive:
            self.close()
            return
        self.busy = False
        if self.buf and not self.parsing:
            self.advance()  # a pipelined request that arrived while this one waited

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, opts: Options) -> None:
    server = Server(opts)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Connection(server), host, port, backlog=256)
    bound = srv.sockets[0].getsockname()
    print(f"minserver listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    srv.close()
    print("minserver stats " + json.dumps(asdict(server.stats)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default="ei_bench_key")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--fail-rate", type=float, default=0.0)
    ap.add_argument("--drop-rate", type=float, default=0.0)
    ap.add_argument("--lost-reply-rate", type=float, default=0.0)
    ap.add_argument("--max-inflight", type=int, default=0, help="0: no limit")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    opts = Options(
        a.api_key,
        a.latency_ms / 1000,
        a.fail_rate,
        a.drop_rate,
        a.lost_reply_rate,
        a.max_inflight,
        a.seed,
    )
    try:
        asyncio.run(serve(a.host, a.port, opts))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

"""A hostile or broken ingestion server for tests: one misbehaviour per mode.

A ``ThreadingHTTPServer`` that reads each request whole (so the client's body always goes
out) and then answers as the mode says. ``tls`` serves a certificate the client trusts
the issuer of but made for another host name (``wrong.example``): a wrong certificate.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODES = (
    "huge", "drip", "not-json", "no-files", "sid-string", "sid-huge", "success-false",
    "retry-after", "redirect", "ok",
)  # fmt: skip
"""``huge``: a 100 MB answer; ``drip``: the headers, then one byte every ``drip_seconds``;
``not-json``: 200 with HTML; ``no-files``: ``{"success": true}``; ``sid-string`` and
``sid-huge``: a sampleId of "4242" or 2^80; ``success-false``: 200 with ``success: false``;
``retry-after``: 503 with ``Retry-After: 999999``; ``redirect``: 307 to another host
(``redirect_to``); ``ok``: a correct answer (the control, and the TLS mode's answer)."""

HUGE_BYTES = 100_000_000


@dataclass
class Hostile:
    """What the server saw and sent, for the test to read."""

    mode: str
    drip_seconds: float = 1.0
    redirect_to: str = ""
    requests: int = 0
    sent_bytes: int = 0
    api_keys: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _file_entry(sample_id: object) -> dict[str, object]:
    return {"success": True, "sampleId": sample_id, "projectId": 1, "fileName": "x.csv"}


BODIES: dict[str, object] = {
    "no-files": {"success": True},
    "sid-string": {"success": True, "files": [_file_entry("4242")]},
    "sid-huge": {"success": True, "files": [_file_entry(2**80)]},
    "success-false": {"success": False},
    "retry-after": {"success": False, "error": "busy"},
    "ok": {"success": True, "files": [_file_entry(7)]},
}


class Handler(BaseHTTPRequestHandler):
    server: HostileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        state = self.server.state
        self._read_body()
        with state.lock:
            state.requests += 1
            state.api_keys.append(self.headers.get("x-api-key", ""))
        mode = state.mode
        try:
            if mode == "huge":
                self._huge(state)
            elif mode == "drip":
                self._drip(state)
            elif mode == "not-json":
                self._answer(200, b"<html><body>Gateway says hello</body></html>", "text/html")
            elif mode == "redirect":
                self._answer(307, b"", headers={"Location": state.redirect_to})
            elif mode == "retry-after":
                self._json(503, BODIES[mode], {"Retry-After": "999999"})
            else:
                self._json(200, BODIES[mode])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def _read_body(self) -> None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                self.rfile.read(size + 2)
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
        else:
            self.rfile.read(int(self.headers.get("content-length", "0")))

    def _answer(self, status: int, body: bytes, ctype: str = "application/json",
                headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        self._answer(status, json.dumps(doc).encode(), headers=headers)

    def _huge(self, state: Hostile) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()
        chunk = b'{"success": true, "files": [' + b" " * 65500
        while state.sent_bytes < HUGE_BYTES and not state.stopping.is_set():
            self.wfile.write(chunk)
            with state.lock:
                state.sent_bytes += len(chunk)

    def _drip(self, state: Hostile) -> None:
        body = json.dumps(BODIES["ok"]).encode() + b" " * 10_000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(body)):
            if state.stopping.wait(state.drip_seconds):
                return
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            with state.lock:
                state.sent_bytes += 1


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: Hostile, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:  # fmt: skip
        super().__init__((host, 0), Handler)
        self.state = state
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        host, port = self.server_address[:2]
        return f"{scheme}://{host!s}:{port}"

    def start(self) -> HostileServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self.shutdown()
        self.server_close()


def wrong_host_certificate(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (``ca.crt``, for the client to trust) and a server context whose certificate
    that CA signed for ``wrong.example``, not for 127.0.0.1."""
    return signed_certificate(folder, "wrong.example", "DNS:wrong.example")


def signed_certificate(folder: Path, name: str, san: str) -> tuple[Path, ssl.SSLContext]:
    """A CA (``ca.crt``) and a server context whose certificate it signed for ``san``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=hostile-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", f"/CN={name}")  # fmt: skip
    (folder / "san.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    return folder / "ca.crt", context

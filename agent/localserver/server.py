"""The local ingestion server, in process: start, stop, and what tests look at.

``LocalIngestionServer`` binds one port and serves it from a background thread with the
request handler of ``handler``; it owns the data folder (``store``), the Studio subset
(``studio``) and the fault injector (``faults``). Tests and benchmarks use it directly;
``edge-uploader local-ingestion`` runs it in the foreground (``cli``).
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from . import ingest
from .faults import FaultAction, FaultConfig, FaultInjector
from .handler import HTTPServer, KeyPolicy
from .store import SampleRecord, SampleStore
from .studio import StudioApi

STOP_GRACE_SECONDS = 1.0
DEFAULT_MAX_FILE_BYTES = 100_000_000


class LocalIngestionServer:
    """The emulator, in process: ``start()`` serves from a background thread.

    ``api_keys=None`` accepts any key starting ``ei_``. Faults apply to upload requests
    only and can be changed while running (``set_faults``, ``script_faults``).
    """

    def __init__(
        self,
        data_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        hmac_key: str | None = None,
        faults: FaultConfig | None = None,
        *,
        duplicate_style: str = "200",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        quiet: bool = False,
        log_stream: TextIO | None = None,
    ) -> None:
        if duplicate_style not in ingest.DUPLICATE_STYLES:
            raise ValueError(f"duplicate_style must be one of {ingest.DUPLICATE_STYLES}")
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys = KeyPolicy(api_keys)
        self.hmac_key = hmac_key
        self.faults = FaultInjector(faults)
        self.duplicate_style = duplicate_style
        self.max_file_bytes = max_file_bytes
        self.drain_limit = 2 * max_file_bytes + 1024 * 1024
        self.quiet = quiet
        self._log_stream = log_stream
        self._log_lock = threading.Lock()
        self._host, self._port = host, port
        self._store: SampleStore | None = None
        self._studio: StudioApi | None = None
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self.stopping = threading.Event()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> LocalIngestionServer:
        """Open the store, bind, and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self.stopping.clear()
        store = SampleStore(self.data_dir)
        try:
            self._httpd = HTTPServer((self._host, self._port), self)
        except OSError:
            store.close()
            raise
        self._store, self._studio = store, StudioApi(store, self.hmac_key)
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve,
            args=(self._httpd, self._wake[0]),
            name="local-ingestion",
            daemon=True,
        )
        self._thread.start()
        return self

    def _serve(self, httpd: HTTPServer, wake: socket.socket) -> None:
        """Accept loop that a stop wakes at once (``serve_forever`` polls: up to its interval
        per stop, which adds up over a test suite), and idles with no timer at all."""
        httpd.socket.setblocking(False)  # a vanished client must not block accept()
        httpd.timeout = 0
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self.stopping.is_set():
                        httpd.handle_request()

    def stop(self) -> None:
        """Stop accepting, close open connections, wait briefly for handlers, close the store."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        wake, self._wake = self._wake, None
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(STOP_GRACE_SECONDS)
        httpd.server_close()
        for end in wake or ():
            end.close()
        with self._conns_lock:
            conns = dict(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for thread in conns.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._store is not None:
            self._store.close()
            self._store = self._studio = None

    def __enter__(self) -> LocalIngestionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def store(self) -> SampleStore:
        """The open sample store (between ``start`` and ``stop``)."""
        if self._store is None:
            raise RuntimeError("server not started")
        return self._store

    @property
    def studio(self) -> StudioApi:
        """The Studio routes bound to the store."""
        if self._studio is None:
            raise RuntimeError("server not started")
        return self._studio

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:4810``; both /api and /v1 live under it."""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}"

    # --- test access -----------------------------------------------------------------

    def set_faults(self, config: FaultConfig) -> None:
        """Change fault settings live (re-seeds the RNG)."""
        self.faults.configure(config)

    def script_faults(self, actions: Iterable[FaultAction | str]) -> None:
        """Fix the fate of the next upload requests: "ok", "fail", "drop" or "lose"."""
        self.faults.script(actions)

    @property
    def upload_requests(self) -> int:
        """Upload requests received so far, whatever their fate."""
        return self.faults.requests

    def samples(self, category: str | None = None) -> list[SampleRecord]:
        """Live samples (not deleted), in id order."""
        return list(self.store.samples(category))

    def index_lines(self) -> list[dict[str, Any]]:
        """Every line of ``index.jsonl`` (accepted uploads, as sent); works after ``stop``."""
        path = self.data_dir / "index.jsonl"
        if self._store is not None:
            return self._store.index_lines()
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as index:
            return [json.loads(line) for line in index if line.strip()]

    # --- internals used by the handler -----------------------------------------------

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    def log_line(self, line: str) -> None:
        if self.quiet:
            return
        stream = self._log_stream or sys.stderr
        with self._log_lock, contextlib.suppress(ValueError, OSError):
            stream.write(line + "\n")
            stream.flush()

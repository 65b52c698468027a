"""``edge-uploader local-ingestion``: run the emulator in the foreground.

Secrets never come from the command line: accepted API keys come from ``--api-key-file``
(one per line, ``#`` comments allowed) or the ``EI_API_KEY`` variable; with neither, any
key starting ``ei_`` is accepted and a notice says so. The HMAC key comes from
``--hmac-key-file``; without it signatures are not checked (``signatureValidate`` null).

Stdout carries exactly one line, ``local-ingestion listening on http://HOST:PORT
data=DIR``, so scripts can learn the port; request logs go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType

from ..errors import ConfigError, SecretError
from .faults import FaultConfig
from .ingest import DUPLICATE_STYLES
from .server import DEFAULT_MAX_FILE_BYTES, LocalIngestionServer

SOURCE = "command line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``local-ingestion`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=4810,
        help="port to bind; 0 picks a free one (default %(default)s)",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="where samples are stored")
    parser.add_argument(
        "--api-key-file", type=Path, help="accepted API keys, one per line (else $EI_API_KEY)"
    )
    parser.add_argument(
        "--hmac-key-file", type=Path, help="project HMAC key used to check acquisition signatures"
    )
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of uploads answered --fail-status"
    )
    parser.add_argument(
        "--fail-status",
        type=int,
        default=500,
        help="status of injected failures; 429 and 503 carry Retry-After: 1 (default %(default)s)",
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before each upload answer")
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, help="fraction of uploads closed with no response"
    )
    parser.add_argument(
        "--lose-reply-rate",
        type=float,
        default=0.0,
        help="fraction of uploads stored, then closed with no response",
    )
    parser.add_argument(
        "--overload-above",
        type=int,
        default=0,
        metavar="N",
        help="answer 503 (Retry-After: 1) to uploads beyond N in flight at once (default: off)",
    )
    parser.add_argument(
        "--duplicate-style",
        choices=DUPLICATE_STYLES,
        default="200",
        help="duplicate refusal: 200 with files[i].success=false, or 400 (default %(default)s)",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        help="largest accepted file; bigger is answered 413 (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed for reproducible fault injection")
    parser.add_argument("--quiet", action="store_true", help="no request log on stderr")


def _read_secret_file(path: Path, option: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(str(path), option, f"cannot read: {exc.__class__.__name__}") from None
    lines = [line.strip() for line in text.splitlines()]
    values = [line for line in lines if line and not line.startswith("#")]
    if not values:
        raise SecretError(str(path), option, "file holds no key")
    return values


def _api_keys(args: argparse.Namespace) -> list[str] | None:
    if args.api_key_file is not None:
        return _read_secret_file(args.api_key_file, "--api-key-file")
    env = os.environ.get("EI_API_KEY", "").strip()
    return [env] if env else None


def build_server(args: argparse.Namespace) -> LocalIngestionServer:
    """Validate the options into a (not yet started) server; raises ConfigError."""
    keys = _api_keys(args)
    hmac_key = None
    if args.hmac_key_file is not None:
        hmac_key = _read_secret_file(args.hmac_key_file, "--hmac-key-file")[0]
    if not 0 <= args.port <= 65535:
        raise ConfigError(SOURCE, "--port", f"must be 0..65535, got {args.port}")
    if args.max_file_bytes < 1:
        raise ConfigError(SOURCE, "--max-file-bytes", "must be positive")
    try:
        faults = FaultConfig(
            fail_rate=args.fail_rate,
            fail_status=args.fail_status,
            latency_ms=args.latency_ms,
            drop_rate=args.drop_rate,
            lose_rate=args.lose_reply_rate,
            seed=args.seed,
            overload_above=args.overload_above,
        )
    except ValueError as exc:
        raise ConfigError(SOURCE, "faults", str(exc)) from None
    if keys is None:
        print(
            "local-ingestion: no --api-key-file and no EI_API_KEY; "
            "accepting any API key that starts with 'ei_'",
            file=sys.stderr,
            flush=True,
        )
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(SOURCE, "--data-dir", f"cannot create {args.data_dir}: {exc}") from None
    return LocalIngestionServer(
        args.data_dir,
        host=args.host,
        port=args.port,
        api_keys=keys,
        hmac_key=hmac_key,
        faults=faults,
        duplicate_style=args.duplicate_style,
        max_file_bytes=args.max_file_bytes,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status. Raises ConfigError."""
    server = build_server(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server.start()
        except (OSError, sqlite3.Error) as exc:
            # A port in use, a bad address, or a data dir we cannot write.
            raise ConfigError(SOURCE, "--host/--port/--data-dir", f"cannot start: {exc}") from None
        print(f"local-ingestion listening on {server.url} data={server.data_dir}", flush=True)
        while not stop.wait(0.2):
            pass
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

"""The clients edge-uploader is compared with, each run as its own process by bench/links.py.

    python bench/baselines.py naive URL KEY FOLDER
    python bench/baselines.py pool  URL KEY FOLDER [--threads 8]
    python bench/baselines.py floor URL KEY FOLDER [--connections 4] [--per-request 1]

``naive``: what a new user writes first: one ``httpx.Client``, one POST per file, one after
another. ``pool``: the same requests from a fixed pool of threads sharing one client. Both
send the agent's headers (``x-api-key``, ``x-disallow-duplicates: 1``, compact
``x-metadata`` with the same keys: site, location, device id, session = the file's
folder, ``captured_at`` from the file's modification time) and never retry: a failure is
counted, the file is left behind. That is the point of comparing: they are fast because
they do not care.

``floor``: not a client anyone would write; it measures the server. Every request is
built in memory beforehand (the same files, optionally several per request) and written
raw over a few keep-alive sockets, so the client costs almost nothing and the rate is what
the server itself can take.

Each prints one JSON line on exit: files sent and how many came back stored, refused as
duplicates, or failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

DEVICE = "bench-01"


def files_in(folder: str) -> list[Path]:
    """The folder's files in a stable order (what the agent walks too)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found.extend(Path(root, n) for n in sorted(names))
    return found


def metadata(path: Path) -> str:
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    meta = {
        "captured_at": mtime.strftime("%Y-%m-%dT%H:%M:%S.") + f"{mtime.microsecond // 1000:03d}Z",
        "device_id": DEVICE,
        "location": "lab",
        "session": path.parent.name,
        "site": "bench",
    }
    return json.dumps(meta, separators=(",", ":"))


def post_one(client: httpx.Client, url: str, key: str, path: Path) -> str:
    """One file, one request, no retry: 'stored', 'duplicate' or 'failed'."""
    headers = {"x-api-key": key, "x-disallow-duplicates": "1", "x-metadata": metadata(path)}
    try:
        with open(path, "rb") as fh:
            r = client.post(url, headers=headers, files={"data": (path.name, fh, "audio/wav")})
        if r.status_code != 200:
            return "failed"
        entry = r.json()["files"][0]
    except (httpx.HTTPError, ValueError, KeyError, IndexError):
        return "failed"
    if entry.get("success"):
        return "stored"
    return "duplicate" if "already exists" in str(entry.get("error")) else "failed"


def naive(url: str, key: str, folder: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    with httpx.Client(timeout=60) as client:
        for path in files_in(folder):
            counts[post_one(client, url, key, path)] += 1
    return counts


def pool(url: str, key: str, folder: str, threads: int) -> Counter[str]:
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(threads) as ex:
        return Counter(ex.map(lambda p: post_one(client, url, key, p), files_in(folder)))


def raw_request(host: str, path: str, key: str, files: list[Path]) -> bytes:
    """One complete HTTP request carrying ``files`` as multipart ``data`` parts."""
    boundary = "floorboundary7d3c1e"
    chunks = []
    for f in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="{f.name}"'
            f"\r\nContent-Type: audio/wav\r\n\r\n".encode()
        )
        chunks.append(f.read_bytes() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    body = b"".join(chunks)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\n"
        f"x-disallow-duplicates: 1\r\nx-metadata: {metadata(files[0])}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> int:
    """Status of the next response on ``sock`` (keep-alive, Content-Length bodies)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head = bytes(buf[:end]).decode("latin-1").lower()
    length = int(head.split("content-length:")[1].split("\r\n")[0])
    while len(buf) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    del buf[: end + 4 + length]
    return int(head.split(" ")[1])


def floor(url: str, key: str, folder: str, connections: int, per_request: int) -> Counter[str]:
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    paths = files_in(folder)
    batches = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
    requests = [raw_request(hostport, "/api/training/files", key, b) for b in batches]
    sizes = [len(b) for b in batches]
    order = itertools.count()
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        buf = bytearray()
        with socket.create_connection((host, int(port))) as sock:
            while (i := next(order)) < len(requests):
                sock.sendall(requests[i])
                status = read_response(sock, buf)
                with lock:
                    counts["stored" if status == 200 else "failed"] += sizes[i]

    print(json.dumps({"ready": len(requests)}), flush=True)  # building is not measured
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("naive", "pool", "floor"))
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--per-request", type=int, default=1)
    a = ap.parse_args()
    endpoint = a.url.rstrip("/") + "/api/training/files"
    started = time.monotonic()
    if a.kind == "naive":
        counts = naive(endpoint, a.key, a.folder)
    elif a.kind == "pool":
        counts = pool(endpoint, a.key, a.folder, a.threads)
    else:
        counts = floor(a.url, a.key, a.folder, a.connections, a.per_request)
    print(json.dumps({**counts, "seconds": round(time.monotonic() - started, 3)}), flush=True)


if __name__ == "__main__":
    main()

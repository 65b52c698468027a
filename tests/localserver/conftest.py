"""Fixtures: a real local ingestion server in a background thread, and an httpx client."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_uploader.localserver import LocalIngestionServer

API_KEY = "ei_test_key"
HMAC_KEY = "hmac-secret"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[LocalIngestionServer]:
    srv = LocalIngestionServer(
        data_dir, api_keys=[API_KEY], hmac_key=HMAC_KEY, max_file_bytes=64 * 1024, quiet=True
    )
    with srv:
        yield srv


# Building an SSL context per client costs ~50 ms; these tests speak plain HTTP anyway.
_SSL = ssl.create_default_context()


def make_client(url: str, key: str | None = API_KEY) -> httpx.Client:
    """An httpx client for ``url`` sending ``key`` as x-api-key (None: no key)."""
    headers = {} if key is None else {"x-api-key": key}
    return httpx.Client(base_url=url, headers=headers, timeout=5, verify=_SSL)


@pytest.fixture
def client(server: LocalIngestionServer) -> Iterator[httpx.Client]:
    with make_client(server.url) as c:
        yield c


def upload(
    client: httpx.Client,
    name: str = "idle.01.wav",
    data: bytes = b"RIFF....WAVE",
    *,
    category: str = "training",
    headers: dict[str, Any] | None = None,
    extra_parts: list[tuple[str, bytes]] | None = None,
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    """One multipart upload the way the agent sends it: every part named ``data``."""
    files = [("data", (name, data, content_type))]
    for part_name, part_data in extra_parts or []:
        files.append(("data", (part_name, part_data, "application/octet-stream")))
    return client.post(f"/api/{category}/files", files=files, headers=headers or {})


def acquisition(key: str | None, *, tamper: bool = False, alg: str = "HS256") -> bytes:
    """A data-acquisition JSON file signed the way the official clients sign (§7)."""
    message = {
        "protected": {"ver": "v1", "alg": alg, "iat": 1700000000},
        "signature": "0" * 64,
        "payload": {
            "device_name": "aa:bb:cc:dd:ee:ff",
            "device_type": "TEST_DEVICE",
            "interval_ms": 10,
            "sensors": [{"name": "accX", "units": "m/s2"}],
            "values": [[1.0], [2.0], [3.0]],
        },
    }
    raw = json.dumps(message).encode()
    if key is None:
        return raw
    digest = hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()
    signed = raw.replace(b"0" * 64, digest.encode(), 1)
    return signed.replace(b"3.0", b"4.0") if tamper else signed

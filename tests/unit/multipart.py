"""A tiny multipart/form-data reader for asserting what the uploader put on the wire."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    body: bytes


def _param(header: str, key: str) -> str | None:
    m = re.search(rf'(?:^|;)\s*{key}="((?:[^"\\]|\\.)*)"', header)
    return m.group(1) if m else None


def read_parts(request: httpx.Request) -> list[Part]:
    body = request.read()
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary="), ctype
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    chunks = body.split(b"--" + boundary)
    assert chunks[0] == b"", chunks[0]
    assert chunks[-1] == b"--\r\n", chunks[-1]
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        assert disp.startswith("form-data"), disp
        parts.append(Part(_param(disp, "name"), _param(disp, "filename"),
                          headers.get("content-type"), payload))  # fmt: skip
    return parts

"""The sidecar format: ``<file>.meta.json`` beside a capture, in one place.

A sidecar carries what the file system alone cannot say about a capture: its label, its
category and its metadata (an MQTT command's session and id, an operator's note)::

    {"label": "idle" | null, "category": "testing", "metadata": {"operator": "ana"}}

``null`` means unlabeled; a missing ``label`` says nothing (the service infers it from
the file name). A capture source writes it *before* it renames the data file into place
(``encode_sidecar``), so after a power cut the scan re-tags the file exactly. A sidecar is
untrusted input: bounded in size, strict about keys and types, never a FIFO's blocking
read; one that cannot be used holds its data file back with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..config import CATEGORIES, SPLIT_BY_GROUP
from ..errors import InputError, SidecarError
from ..metadata import check_metadata
from .tagger import UNSET, Context, Unset, check_label

SIDECAR_SUFFIX = ".meta.json"
MAX_SIDECAR_BYTES = 64 * 1024


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    return path.name.endswith(SIDECAR_SUFFIX)


def parse_sidecar(raw: bytes, where: str) -> Context:
    """Validate a sidecar's bytes: ``{"label": str|null, "category": str, "metadata": {}}``."""
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(where, f"larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SidecarError(where, f"not valid JSON: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, or a number of more than 4,300 digits
        raise SidecarError(where, f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    except RecursionError:  # nested brackets within the size limit
        raise SidecarError(where, "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise SidecarError(where, "expected a JSON object")
    unknown = sorted(set(data) - {"label", "category", "metadata"})
    if unknown:
        raise SidecarError(where, f"unknown key {unknown[0]!r} (known: label, category, metadata)")
    label: str | Unset | None = UNSET
    if "label" in data:
        label = data["label"]
        if label is not None:
            try:
                label = check_label(label, "label")
            except InputError as exc:
                raise SidecarError(where, str(exc)) from None
    category = data.get("category")
    if category is not None and category not in (*CATEGORIES, SPLIT_BY_GROUP):
        raise SidecarError(where, f"category must be one of {', '.join(CATEGORIES)}")
    try:
        metadata = check_metadata(data.get("metadata", {}), "metadata")
    except InputError as exc:
        raise SidecarError(where, str(exc)) from None
    return Context(label="" if "label" in data and label is None else label,
                   category=category, metadata=metadata)  # fmt: skip


def read_sidecar(path: Path) -> Context | None:
    """The sidecar of ``path`` if there is one; ``SidecarError`` if it cannot be used."""
    side = sidecar_path(path)
    try:
        # O_NONBLOCK: a FIFO at the sidecar's name must not block intake until a writer
        # comes; anything but a regular file is refused below.
        fd = os.open(side, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None  # a 255-byte file name: no sidecar name can exist beside it
        raise SidecarError(str(side), f"cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SidecarError(str(side), "cannot read: not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SIDECAR_BYTES and (chunk := os.read(fd, MAX_SIDECAR_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise SidecarError(str(side), f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return parse_sidecar(raw, str(side))


def data_path(side: Path) -> Path:
    """The data file a sidecar belongs to."""
    return side.with_name(side.name[: -len(SIDECAR_SUFFIX)])


def encode_sidecar(label: str | None, category: str | None, metadata: Mapping[str, str]) -> bytes:
    """The sidecar document a capture source writes (``label`` None: unlabeled)."""
    doc: dict[str, object] = {"label": label, "metadata": dict(metadata)}
    if category:
        doc["category"] = category
    return json.dumps(doc, indent=2).encode("utf-8")

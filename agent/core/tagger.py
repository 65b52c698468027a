"""The tagger: (file, source context, config) -> (label, category, metadata). Pure.

Layers, later wins:

1. ``[metadata]`` of the config (device, site, location, ...);
2. the watch's own ``metadata`` (templates such as ``{dir}`` capture a session folder; a
   file directly in the watched folder has no session folder, so a key made from ``{dir}``
   is left out for it);
3. the sidecar ``<file>.meta.json`` written next to the capture;
4. the trigger context (an MQTT command, the ``upload`` command's options);
5. derived values: ``device_id`` always, ``captured_at`` (ISO 8601 UTC of the file's
   modification time unless a layer above set it; off with ``[tagging] captured_at =
   false``), ``agent_version``.

Label: ``None`` means "let the service infer it from the file name" (no ``x-label``);
the empty string means "unlabeled" (``x-no-label: 1``); anything else is the label.

``split-by-group`` picks training or testing from a stable hash of the group key's value
(``[ingestion] group_key``, default ``session``), so one session never straddles both
sets. A sample with no group value is grouped by the folder that holds it.

No I/O: the sidecar is read by ``core.sidecar`` and handed in as a layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..config import SPLIT_BY_GROUP, Config, WatchConfig
from ..config.templates import render_all
from ..errors import InputError
from ..metadata import check_metadata

MAX_LABEL_CHARS = 256


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()
"""A layer that says nothing about the label (distinct from ``None``, "infer")."""


@dataclass(frozen=True)
class Context:
    """What a source knows beyond the file: a sidecar's or a trigger's label and metadata."""

    label: str | Unset | None = UNSET
    category: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tagged:
    label: str | None
    category: str
    metadata: dict[str, str]


def check_label(label: object, field: str) -> str:
    if not isinstance(label, str):
        raise InputError(field, f"expected a string, got {type(label).__name__}")
    if len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise InputError(field, f"expected printable text of at most {MAX_LABEL_CHARS} characters")
    return label


def group_category(value: str, testing_fraction: float) -> str:
    """Training or testing for a group value; the same value always gives the same side."""
    digest = hashlib.sha256(value.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "testing" if position < testing_fraction else "training"


def iso_utc(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _watch_metadata(path: Path, watch: WatchConfig, config: Config) -> dict[str, str]:
    """The watch's metadata for ``path``; keys made from ``{dir}`` only for files in a
    folder below the watched one (at the top, ``{dir}`` would be the watch's own name)."""
    templates = watch.metadata
    if path.parent == watch.path:
        templates = {k: t for k, t in templates.items() if not t.uses("dir")}
    return render_all(templates, path, config.device_id, config.hostname)


def tag(
    path: Path,
    config: Config,
    *,
    mtime: float,
    watch: WatchConfig | None = None,
    sidecar: Context | None = None,
    context: Context | None = None,
) -> Tagged:
    """Combine the layers for one file. Raises ``InputError`` if the result cannot be sent."""
    device_id = config.device_id
    metadata = render_all(config.metadata, path, device_id, config.hostname)
    label: str | None = None
    category = config.ingestion.category
    if watch is not None:
        metadata.update(_watch_metadata(path, watch, config))
        if watch.label is not None:
            label = watch.label.render(path, device_id, config.hostname)
        category = watch.category or category
    for layer in (sidecar, context):
        if layer is None:
            continue
        metadata.update(layer.metadata)
        if not isinstance(layer.label, Unset):
            label = layer.label
        category = layer.category or category
    metadata["device_id"] = device_id
    if config.tagging.captured_at:
        metadata.setdefault("captured_at", iso_utc(mtime))
    metadata["agent_version"] = __version__
    metadata = check_metadata(metadata)  # its size too
    if label is not None:
        label = check_label(label, "label")
    if category == SPLIT_BY_GROUP:
        group = metadata.get(config.ingestion.group_key) or str(path.parent)
        category = group_category(group, config.ingestion.testing_fraction)
    return Tagged(label=label, category=category, metadata=metadata)

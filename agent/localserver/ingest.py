"""What an upload means: headers and parts in, stored samples and a response body out.

Kept apart from the HTTP plumbing so the wire rules (reference ``ingestion-api.md`` §2-§4,
§7) read in one place. Choices where the real service is undocumented:

- ``x-metadata`` must be a JSON object of **string** values; anything else is a 400.
  The real service may coerce; being strict here catches agent bugs early.
- Header bytes arrive as Latin-1 text (one character per byte). ``x-metadata`` and
  ``x-label`` are re-decoded as UTF-8 when that is valid, so both the CLI's raw Latin-1
  and a UTF-8 sender work; ``\\u`` escapes are plain JSON.
- With ``x-disallow-duplicates``, refusals are answered in one of two shapes (``200``:
  per-file ``success:false``; ``400``: whole request refused, nothing stored). In the
  ``200`` shape the top-level ``success`` is false (with ``error``) unless every file
  was stored.
- ``split`` uploads become ``testing`` when the first 32 bits of the sha256 are 0 mod 5,
  else ``training`` (deterministic 80/20 by content).
- Acquisition ``.json`` files up to MAX_ACQUISITION_BYTES are parsed for device and
  signature details; CBOR acquisitions are stored but not parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .multipart import Part
from .store import DuplicateSample, NewSample, SampleStore, safe_filename

FILE_CATEGORIES = frozenset(
    {"training", "testing", "validation", "post-processing", "anomaly", "split"}
)
DATA_CATEGORIES = frozenset({"training", "testing", "anomaly"})
MAX_FILES_PER_REQUEST = 1000
MAX_LABELS_FILE_BYTES = 16 * 1024 * 1024
MAX_ACQUISITION_BYTES = 32 * 1024 * 1024
DUPLICATE_STYLES = ("200", "400")

_LABEL_RE = re.compile(r"^[a-zA-Z0-9\s\-_]+")
_SIGNATURE_RE = re.compile(rb'"signature"\s*:\s*"([0-9a-fA-F]{64})"')
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


class UploadRefused(Exception):
    """The request is refused as a whole with ``status`` and a JSON ``error``."""

    def __init__(self, status: int, error: str) -> None:
        self.status = status
        self.error = error
        super().__init__(error)


@dataclass(frozen=True)
class UploadContext:
    """Per-request facts taken from the URL and headers, validated before the body is read."""

    category: str
    label: str | None
    infer_label: bool
    metadata: dict[str, str]
    disallow_duplicates: bool
    add_date_id: bool
    header_boxes: list[dict[str, Any]] | None
    device_type: str | None
    headers: dict[str, str]


def header_text(value: str) -> str:
    """Header text as the client meant it: UTF-8 if the bytes are valid UTF-8, else Latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def infer_label(filename: str) -> str | None:
    """The service's rule: the leading ``[a-zA-Z0-9\\s-_]+`` run of the name (stops at '.')."""
    match = _LABEL_RE.match(filename)
    label = match.group(0).strip() if match else ""
    return label or None


def split_category(sha256: str) -> str:
    """Deterministic 80/20 training/testing split by content hash."""
    return "testing" if int(sha256[:8], 16) % 5 == 0 else "training"


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``x-metadata`` to a string map; UploadRefused(400) for anything else."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(header_text(raw))
    except json.JSONDecodeError as exc:
        raise UploadRefused(400, f"x-metadata is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UploadRefused(400, "x-metadata must be a JSON object")
    bad = sorted(k for k, v in value.items() if not isinstance(v, str))
    if bad:
        raise UploadRefused(400, f"x-metadata values must be strings (key {bad[0]!r})")
    return value


def _validate_boxes(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise UploadRefused(400, f"{where}: bounding boxes must be a list")
    for box in value:
        if not isinstance(box, dict) or not isinstance(box.get("label"), str):
            raise UploadRefused(400, f"{where}: each bounding box needs a string label")
        for key in ("x", "y", "width", "height"):
            if not isinstance(box.get(key), int | float) or isinstance(box.get(key), bool):
                raise UploadRefused(400, f"{where}: bounding box {key} must be a number")
    return value


SECRET_HEADERS = frozenset({"x-api-key", "x-jwt-token", "authorization", "cookie"})


def request_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    """Every header by lower-case name (repeats joined by ', '), credentials redacted.

    Values are the raw header bytes read as Latin-1 (one character per byte), so a test
    can tell a client's raw Latin-1 from UTF-8.
    """
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        value = "<redacted>" if key in SECRET_HEADERS else value
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _flag(headers: dict[str, str], name: str) -> bool:
    value = headers.get(name)
    return value is not None and value.strip().lower() not in ("0", "false", "no")


def context_from_headers(kind: str, category: str, headers: dict[str, str]) -> UploadContext:
    """Validate the URL (``kind`` is "files" or "data") and the headers; raises UploadRefused."""
    if category not in (FILE_CATEGORIES if kind == "files" else DATA_CATEGORIES):
        raise UploadRefused(400, f"Unknown category {category!r}")
    label: str | None = None
    infer = False
    if not _flag(headers, "x-no-label"):
        raw = headers.get("x-label", "")
        label = unquote(header_text(raw), encoding="utf-8", errors="replace") if raw else None
        infer = not label
    boxes = None
    if "x-bounding-boxes" in headers:
        try:
            parsed = json.loads(header_text(headers["x-bounding-boxes"]))
        except json.JSONDecodeError:
            raise UploadRefused(400, "x-bounding-boxes is not valid JSON") from None
        boxes = _validate_boxes(parsed, "x-bounding-boxes")
    return UploadContext(
        category=category,
        label=label,
        infer_label=infer,
        metadata=parse_metadata(headers.get("x-metadata")),
        disallow_duplicates="x-disallow-duplicates" in headers,
        add_date_id=_flag(headers, "x-add-date-id"),
        header_boxes=boxes,
        device_type=headers.get("x-device-type"),
        headers=headers,
    )


def acquisition_details(path: Path, size: int, hmac_key: str | None) -> dict[str, Any]:
    """Device fields and the signature verdict of a data-acquisition JSON file.

    Verification follows the signing invariant (§7): the signature is a same-length
    field, so zero its 64 hex digits in the raw bytes and recompute HMAC-SHA256 with the
    key's UTF-8 bytes. ``signatureValidate`` is None when no HMAC key is configured.
    """
    if size > MAX_ACQUISITION_BYTES:
        return {}
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if not isinstance(doc, dict) or not {"protected", "signature", "payload"} <= doc.keys():
        return {}
    protected = doc["protected"] if isinstance(doc["protected"], dict) else {}
    payload = doc["payload"] if isinstance(doc["payload"], dict) else {}
    signature = doc["signature"]
    method = protected.get("alg")
    verdict: bool | None = None
    if hmac_key is not None:
        verdict = False
        if method == "HS256" and isinstance(signature, str) and _HEX64_RE.fullmatch(signature):
            for match in _SIGNATURE_RE.finditer(raw):
                if match.group(1).decode("ascii").lower() != signature.lower():
                    continue
                zeroed = raw[: match.start(1)] + b"0" * 64 + raw[match.end(1) :]
                expected = hmac.new(hmac_key.encode("utf-8"), zeroed, hashlib.sha256)
                verdict = hmac.compare_digest(expected.hexdigest(), signature.lower())
                break
    details: dict[str, Any] = {
        "signatureValidate": verdict,
        "signatureMethod": method if isinstance(method, str) else None,
        "deviceName": payload.get("device_name"),
        "deviceType": payload.get("device_type"),
        "sensors": payload.get("sensors") if isinstance(payload.get("sensors"), list) else [],
    }
    interval = payload.get("interval_ms")
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        details["intervalMs"] = interval
    return details


def _load_labels_file(part: Part) -> dict[str, Any]:
    if part.size > MAX_LABELS_FILE_BYTES:
        raise UploadRefused(400, f"{part.filename}: labels file too large")
    try:
        doc = json.loads(part.path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UploadRefused(400, f"{part.filename}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise UploadRefused(400, f"{part.filename}: must be a JSON object")
    return doc


def _check_structured(name: str, labels: Any) -> list[dict[str, Any]]:
    """Structured labels must cover indices from 0 with inclusive, gap-free ranges."""
    if not isinstance(labels, list) or not labels:
        raise UploadRefused(400, f"structured_labels.labels: {name}: expected a non-empty list")
    expected = 0
    for item in labels:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise UploadRefused(400, f"structured_labels.labels: {name}: each needs a label")
        start, end = item.get("startIndex"), item.get("endIndex")
        if not isinstance(start, int) or not isinstance(end, int) or end < start:
            raise UploadRefused(400, f"structured_labels.labels: {name}: bad index range")
        if start != expected:
            raise UploadRefused(
                400, f"structured_labels.labels: {name}: gap or overlap at index {expected}"
            )
        expected = end + 1
    return labels


# labels-file name -> (its key holding the per-file map, the detail key we store it under)
_LABEL_FILES = {
    "bounding_boxes.labels": ("boundingBoxes", "boundingBoxes"),
    "structured_labels.labels": ("structuredLabels", "structuredLabels"),
    "label_map.labels": ("labels", "labelMap"),
    "attachments.labels": ("attachments", "attachments"),
}


def _side_labels(parts: list[Part]) -> dict[str, dict[str, Any]]:
    """Per sample-file-name extras from the ``*.labels`` parts (detail key -> value)."""
    extras: dict[str, dict[str, Any]] = {}
    for part in parts:
        spec = _LABEL_FILES.get(safe_filename(part.filename))
        if spec is None:
            continue  # other .labels files (e.g. info.labels) are not per-request data
        source_key, detail_key = spec
        per_file = _load_labels_file(part).get(source_key)
        if not isinstance(per_file, dict):
            raise UploadRefused(400, f"{part.filename}: missing object {source_key!r}")
        for name, value in per_file.items():
            if detail_key == "boundingBoxes":
                value = _validate_boxes(value, f"bounding_boxes.labels: {name}")
            elif detail_key == "structuredLabels":
                value = _check_structured(name, value)
            elif detail_key == "attachments" and not isinstance(value, list):
                raise UploadRefused(400, f"attachments.labels: {name}: expected a list")
            extras.setdefault(safe_filename(name), {})[detail_key] = value
    return extras


def _new_sample(
    ctx: UploadContext,
    part: Part,
    category: str,
    original: str,
    name: str,
    details: dict[str, Any],
) -> NewSample:
    """The sample record common to ``/files`` and legacy ``/data`` uploads."""
    return NewSample(
        category=category,
        requested_category=ctx.category,
        original_filename=original,
        label=infer_label(name) if ctx.infer_label else ctx.label,
        metadata=ctx.metadata,
        sha256=part.sha256,
        size=part.size,
        headers=ctx.headers,
        add_date_id=ctx.add_date_id,
        details=details,
    )


def store_files(
    store: SampleStore,
    ctx: UploadContext,
    parts: list[Part],
    *,
    hmac_key: str | None,
    duplicate_style: str,
) -> tuple[int, dict[str, Any]]:
    """Store the samples of one ``/files`` request; returns (HTTP status, JSON body).

    The caller owns ``parts`` and discards whatever temp files remain afterwards.
    """
    samples, extras = _sample_parts(parts)
    if ctx.disallow_duplicates and duplicate_style == "400":
        seen: set[str] = set()
        for part in samples:
            existing = store.find_duplicate(part.sha256)
            if existing is not None or part.sha256 in seen:
                raise UploadRefused(400, str(DuplicateSample(existing)))
            seen.add(part.sha256)
    results: list[dict[str, Any]] = []
    for part in samples:
        name = safe_filename(part.filename)
        details: dict[str, Any] = {"contentType": part.content_type}
        if ctx.device_type is not None:
            details["deviceType"] = ctx.device_type
        if name.lower().endswith(".json"):
            details.update(acquisition_details(part.path, part.size, hmac_key))
        if ctx.header_boxes is not None:
            details["boundingBoxes"] = ctx.header_boxes
        details.update(extras.get(name, {}))
        category = split_category(part.sha256) if ctx.category == "split" else ctx.category
        new = _new_sample(ctx, part, category, part.filename or name, name, details)
        try:
            record = store.add(new, part.path, disallow_duplicates=ctx.disallow_duplicates)
        except DuplicateSample as dup:
            if duplicate_style == "400":
                raise UploadRefused(400, str(dup)) from None
            results.append({"success": False, "error": str(dup)})
            continue
        results.append({"success": True, "sampleId": record.id, "projectId": record.project_id,
                        "fileName": record.filename})  # fmt: skip
    body: dict[str, Any] = {"success": all(r["success"] for r in results), "files": results}
    if not body["success"]:
        body["error"] = next(r["error"] for r in results if not r["success"])
    return 200, body


def _sample_parts(parts: list[Part]) -> tuple[list[Part], dict[str, dict[str, Any]]]:
    """The parts that are samples, and what the side label files say about them."""
    for part in parts:
        if part.name != "data":
            raise UploadRefused(400, f"Unexpected field {part.name!r} (every part is 'data')")
    label_parts = [p for p in parts if (p.filename or "").endswith(".labels")]
    extras = _side_labels(label_parts)
    attached = {
        safe_filename(name)
        for value in extras.values()
        for item in value.get("attachments", [])
        if isinstance(name := item.get("filename") if isinstance(item, dict) else item, str)
    }
    samples = [
        p
        for p in parts
        if not (p.filename or "").endswith(".labels") and safe_filename(p.filename) not in attached
    ]
    if not samples:
        raise UploadRefused(400, "No files uploaded (expected a multipart part named 'data')")
    if len(samples) > MAX_FILES_PER_REQUEST:
        raise UploadRefused(400, f"Too many files in one request (max {MAX_FILES_PER_REQUEST})")
    return samples, extras


def store_data(
    store: SampleStore,
    ctx: UploadContext,
    part: Part,
    *,
    hmac_key: str | None,
) -> str:
    """Store the raw body of a legacy ``/data`` request; returns the stored file name.

    Raises UploadRefused: 421 for a missing ``x-file-name``; 400 for a duplicate (the
    legacy path has one refusal shape, whatever the duplicate style).
    """
    raw_name = ctx.headers.get("x-file-name")
    if not raw_name:
        raise UploadRefused(421, "Missing x-file-name header")
    name = safe_filename(unquote(header_text(raw_name), encoding="utf-8", errors="replace"))
    details: dict[str, Any] = {"contentType": ctx.headers.get("content-type")}
    if ctx.device_type is not None:
        details["deviceType"] = ctx.device_type
    if name.lower().endswith(".json") or "json" in (details["contentType"] or ""):
        details.update(acquisition_details(part.path, part.size, hmac_key))
    new = _new_sample(ctx, part, ctx.category, name, name, details)
    try:
        record = store.add(new, part.path, disallow_duplicates=ctx.disallow_duplicates)
    except DuplicateSample as dup:
        raise UploadRefused(400, str(dup)) from None
    return record.filename

"""Edge Impulse ``info.labels`` files: what ``upload --info-file`` sends, entry by entry.

Two encodings (see the ingestion reference, section 6):

- JSON: ``{"version": 1, "files": [{...}, ...]}``;
- NDJSON: a first line ``{"__ndjson":true,...}``, then one ``{"__key":"files","__item":{...}}``
  per line (lines with another ``__key`` are ignored).

An entry::

    {"path": "training/idle.01.wav",         relative to the info file's folder
     "name": "idle.01",                      optional: the uploaded name (the extension is kept)
     "category": "training",                 optional
     "label": {"type": "label", "label": "idle"} | {"type": "unlabeled"}
            | {"type": "multi-label", "labels": [{"label", "startIndex", "endIndex"}]}
            | {"type": "keyvalue-labels", "labels": {"k": "v"}},
     "metadata": {"site": "A"},              optional, string values
     "boundingBoxes": [{"label", "x", "y", "width", "height"}]}   optional

The file is untrusted input. It is read as a stream (a 50,000-entry file never sits in
memory as one document), each entry is bounded in size, and it never chooses a path
outside its own folder: a path that resolves elsewhere (``..``, an absolute path, a
symbolic link) is refused. A bad entry is reported with its number, its path and the
reason; the other entries proceed. A JSON syntax error ends the JSON encoding (nothing
after it can be trusted); in NDJSON only the bad line is lost.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..config import CATEGORIES
from ..core.tagger import UNSET, Unset, check_label
from ..errors import InputError
from ..metadata import check_metadata

MAX_ENTRY_BYTES = 1024 * 1024
"""One entry (or any other top-level value) larger than this is refused."""
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 200
MAX_BOXES = 10_000
MAX_LABEL_PARTS = 100_000
_CHUNK = 64 * 1024
_NDJSON_MARK = re.compile(r'\A\ufeff?\s*\{\s*"__ndjson"\s*:\s*true\b')
_decoder = json.JSONDecoder()
_TOO_LARGE = object()


@dataclass(frozen=True)
class InfoEntry:
    """One usable entry: the file and how to tag it."""

    number: int
    """1-based position in the info file, for messages."""
    path: Path
    upload_name: str | None
    category: str | None
    label: str | Unset | None
    """A label, "" for unlabeled, or UNSET (the service infers it from the file name)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    parts: tuple[dict[str, str], ...] = ()
    """Extra multipart parts (``{"name", "content", "type"}``) for the queue's ``extra``."""

    @property
    def file_name(self) -> str:
        return self.upload_name or self.path.name


@dataclass(frozen=True)
class BadEntry:
    """An entry that cannot be used; ``where`` names the info file, entry number and path."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_info_file(info_file: Path) -> Iterator[InfoEntry | BadEntry]:
    """Every entry of ``info_file``, validated, in order. Raises ``InputError`` when the
    file itself cannot be read (missing, unreadable, not an info file at all)."""
    base = Path(os.path.realpath(info_file.parent))
    where = str(info_file)
    try:
        handle = open(info_file, encoding="utf-8")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise InputError(where, f"cannot read: {exc.strerror or exc}") from None
    return _entries(handle, base, where)


def _entries(handle: IO[str], base: Path, where: str) -> Iterator[InfoEntry | BadEntry]:
    with handle:
        try:
            head = handle.read(4096)
        except UnicodeDecodeError:
            raise InputError(where, "not UTF-8 text") from None
        handle.seek(0)
        raw_entries = _ndjson(handle, where) if _NDJSON_MARK.match(head) else _json(handle, where)
        for number, (place, raw) in enumerate(raw_entries, start=1):
            if isinstance(raw, BadEntry):
                yield raw
            else:
                yield parse_entry(raw, number, base, f"{where}: {place}")


# -- the two encodings -------------------------------------------------------------------
def _ndjson(handle: IO[str], where: str) -> Iterator[tuple[str, Any]]:
    """(``line N``, raw entry or BadEntry) for each ``files`` line."""
    line_no = 0
    while True:
        try:
            line = handle.readline(MAX_ENTRY_BYTES + 1)
        except UnicodeDecodeError:
            yield "", BadEntry(f"{where}: after line {line_no}", "not UTF-8 text; reading stopped")
            return
        if not line:
            return
        line_no += 1
        place = f"line {line_no}"
        if len(line) > MAX_ENTRY_BYTES and not line.endswith("\n"):
            yield place, BadEntry(f"{where}: {place}", f"longer than {MAX_ENTRY_BYTES} bytes")
            while line and not line.endswith("\n"):  # skip the rest of the long line
                line = handle.readline(MAX_ENTRY_BYTES)
            continue
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or a number of more than 4,300 digits
            why = _json_error(exc)
            if line_no == 1:
                raise InputError(where, f"line 1: not valid JSON: {why}") from None
            yield place, BadEntry(f"{where}: {place}", f"not valid JSON: {why}")
            continue
        except RecursionError:  # nested brackets within the size limit
            if line_no == 1:
                raise InputError(where, "line 1: not valid JSON: nested too deeply") from None
            yield place, BadEntry(f"{where}: {place}", "not valid JSON: nested too deeply")
            continue
        if line_no == 1:
            _check_version(doc, where)
        elif not isinstance(doc, dict):
            yield place, BadEntry(f"{where}: {place}", "expected a JSON object")
        elif doc.get("__key") == "files":
            yield place, doc.get("__item")


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return "a number with too many digits"


def _check_version(doc: Any, where: str) -> None:
    version = doc.get("version", 1) if isinstance(doc, dict) else None
    if version != 1:
        raise InputError(where, f"unsupported info file version {version!r} (expected 1)")


class _Stream:
    """Just enough of a streaming JSON reader for ``{"files": [...], ...}``: values are
    decoded one at a time from a sliding buffer, so memory is bounded by one entry."""

    def __init__(self, handle: IO[str], where: str) -> None:
        self.handle = handle
        self.where = where
        self.buf = ""
        self.pos = 0
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.handle.read(_CHUNK)
        except UnicodeDecodeError:
            raise InputError(self.where, "not UTF-8 text") from None
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-blank character ("" at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos : self.pos + 1]

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            found = repr(ch) if ch else "the end of the file"
            raise InputError(self.where, f"not valid JSON: expected {' or '.join(chars)}, "
                             f"found {found}")  # fmt: skip
        self.pos += 1
        return ch

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                doc, end = _decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > MAX_ENTRY_BYTES:
                    raise InputError(self.where, f"an entry is larger than {MAX_ENTRY_BYTES} "
                                     "bytes or not valid JSON") from None  # fmt: skip
                if self._fill():
                    continue
                raise InputError(self.where, f"not valid JSON: {exc.msg}") from None
            except RecursionError:  # nested brackets within the size limit
                raise InputError(self.where, "not valid JSON: nested too deeply") from None
            except ValueError as exc:  # a number of more than 4,300 digits
                raise InputError(self.where, f"not valid JSON: {_json_error(exc)}") from None
            if end == len(self.buf) and not self.eof and self._fill():
                continue  # a number may go on in the next chunk
            size, self.pos = end - self.pos, end
            if size > MAX_ENTRY_BYTES:
                return _TOO_LARGE
            return doc


def _json(handle: IO[str], where: str) -> Iterator[tuple[str, Any]]:
    """(``entry N``, raw entry) for each element of the ``files`` list."""
    s = _Stream(handle, where)
    number = 0
    s.expect("{")
    if s.peek() == "}":
        raise InputError(where, 'no "files" list')
    seen_files = False
    while True:
        key = s.value()
        if not isinstance(key, str):
            raise InputError(where, "not valid JSON: object keys must be strings")
        s.expect(":")
        if key == "files":
            seen_files = True
            s.expect("[")
            if s.peek() == "]":
                s.pos += 1
            else:
                while True:
                    number += 1
                    value = s.value()
                    if value is _TOO_LARGE:
                        value = BadEntry(f"{where}: entry {number}",
                                         f"larger than {MAX_ENTRY_BYTES} bytes")  # fmt: skip
                    yield f"entry {number}", value
                    if s.expect(",]") == "]":
                        break
        elif key == "version":
            _check_version({"version": s.value()}, where)
        elif s.value() is _TOO_LARGE:
            raise InputError(where, f"{key!r} is larger than {MAX_ENTRY_BYTES} bytes")
        if s.expect(",}") == "}":
            break
    if not seen_files:
        raise InputError(where, 'no "files" list')


# -- one entry -----------------------------------------------------------------------------
def parse_entry(raw: Any, number: int, base: Path, where: str) -> InfoEntry | BadEntry:
    """Validate one entry; ``base`` is the (real) folder that holds the info file, ``where``
    names the info file and the entry for messages."""
    label_where = where
    if not isinstance(raw, dict):
        return BadEntry(label_where, "expected a JSON object")
    path_text = raw.get("path")
    if isinstance(path_text, str) and path_text:
        label_where += f" ({path_text[:200]})"
    try:
        path = resolve_inside(base, path_text)
        name = _upload_name(raw.get("name"), path)
        category = _category(raw.get("category"))
        metadata = check_metadata(raw.get("metadata") or {}, "metadata")
        file_name = name or path.name
        label, parts = _label(raw.get("label"), file_name)
        boxes = raw.get("boundingBoxes")
        if boxes is not None:
            parts.append(_boxes_part(boxes, file_name))
    except InputError as exc:
        return BadEntry(label_where, str(exc))
    return InfoEntry(number=number, path=path, upload_name=name, category=category,
                     label=label, metadata=metadata, parts=tuple(parts))  # fmt: skip


def resolve_inside(base: Path, path_text: object) -> Path:
    """``path_text`` resolved against ``base``; refused unless it stays inside ``base``."""
    if not isinstance(path_text, str) or not path_text:
        raise InputError("path", "required: the file's path relative to the info file")
    if len(path_text) > MAX_PATH_CHARS or "\x00" in path_text:
        raise InputError("path", "not a usable path")
    try:
        real = Path(os.path.realpath(base / path_text))
        if real != base and base not in real.parents:
            raise InputError("path", f"outside the info file's folder {base}; refused")
        if not real.exists():
            raise InputError("path", "file not found")
        if not real.is_file():
            raise InputError("path", "not a regular file")
    except OSError as exc:  # a name longer than 255 bytes, a loop of links
        raise InputError("path", f"not a usable path: {exc.strerror or exc}") from None
    return real


def _category(category: object) -> str | None:
    if category is None or (isinstance(category, str) and category in CATEGORIES):
        return category
    raise InputError("category", f"expected one of {', '.join(CATEGORIES)}; got {category!r}")


def _upload_name(name: object, path: Path) -> str | None:
    """The ``name`` field as a safe file name, keeping the file's extension (as the CLI does)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise InputError("name", "expected a non-empty string")
    if (len(name) > MAX_NAME_CHARS or not name.isprintable() or "/" in name or "\\" in name
            or name in (".", "..")):  # fmt: skip
        raise InputError("name", f"expected a plain file name of at most {MAX_NAME_CHARS} "
                         "characters, without '/' or control characters")  # fmt: skip
    ext = path.suffix
    return name if not ext or name.lower().endswith(ext.lower()) else name + ext


def _label(raw: object, file_name: str) -> tuple[str | Unset | None, list[dict[str, str]]]:
    if raw is None:
        return UNSET, []
    if not isinstance(raw, dict):
        raise InputError("label", 'expected an object such as {"type": "label", "label": "idle"}')
    kind = raw.get("type")
    if kind == "label":
        return check_label(raw.get("label"), "label.label"), []
    if kind == "unlabeled":
        return "", []
    if kind == "multi-label":
        labels = _structured(raw.get("labels"))
        doc = {"version": 1, "type": "structured-labels", "structuredLabels": {file_name: labels}}
        return UNSET, [_part("structured_labels.labels", doc)]
    if kind == "keyvalue-labels":
        pairs = raw.get("labels")
        if not isinstance(pairs, dict) or not pairs or len(pairs) > 1000:
            raise InputError("label.labels", "expected an object of string keys and values")
        for k, v in pairs.items():
            check_label(k, "label.labels")
            check_label(v, f"label.labels.{k}")
        doc = {"version": 1, "type": "label-map-labels", "labels": {file_name: pairs}}
        return UNSET, [_part("label_map.labels", doc)]
    raise InputError("label.type", "expected label, unlabeled, multi-label or keyvalue-labels; "
                     f"got {kind!r}")  # fmt: skip


def _structured(labels: object) -> list[dict[str, Any]]:
    """Multi-label ranges: inclusive ``endIndex``, from 0, without gaps (as the service checks)."""
    if not isinstance(labels, list) or not labels or len(labels) > MAX_LABEL_PARTS:
        raise InputError("label.labels", "expected a non-empty list of label ranges")
    out: list[dict[str, Any]] = []
    expected = 0
    for i, item in enumerate(labels):
        where = f"label.labels[{i}]"
        if not isinstance(item, dict):
            raise InputError(where, "expected an object")
        label = check_label(item.get("label"), f"{where}.label")
        start, end = _as_int(item.get("startIndex")), _as_int(item.get("endIndex"))
        if start is None or end is None or end < start:
            raise InputError(where, "startIndex and endIndex must be whole numbers, end >= start")
        if start != expected:
            raise InputError(where, f"ranges must start at 0 without gaps; expected {expected}")
        expected = end + 1
        entry: dict[str, Any] = {"label": label, "startIndex": start, "endIndex": end}
        if "labelMap" in item:
            entry["labelMap"] = item["labelMap"]
        out.append(entry)
    return out


def _boxes_part(boxes: object, file_name: str) -> dict[str, str]:
    if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
        raise InputError("boundingBoxes", f"expected a list of at most {MAX_BOXES} boxes")
    clean: list[dict[str, Any]] = []
    for i, box in enumerate(boxes):
        where = f"boundingBoxes[{i}]"
        if not isinstance(box, dict):
            raise InputError(where, "expected an object with label, x, y, width, height")
        label = check_label(box.get("label"), f"{where}.label")
        item: dict[str, Any] = {"label": label}
        for key in ("x", "y", "width", "height"):
            value = _as_number(box.get(key))
            if value is None or value < 0:
                raise InputError(f"{where}.{key}", "expected a number >= 0")
            item[key] = value
        clean.append(item)
    doc = {"version": 1, "type": "bounding-box-labels", "boundingBoxes": {file_name: clean}}
    return _part("bounding_boxes.labels", doc)


def _part(name: str, doc: dict[str, Any]) -> dict[str, str]:
    content = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return {"name": name, "content": content, "type": "application/json"}


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None

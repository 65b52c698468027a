"""The sample store of the local ingestion server: files, an append-only index, live state.

Data dir layout::

    DATA_DIR/files/<sampleId>/<fileName>   the uploaded bytes, one directory per sample
    DATA_DIR/index.jsonl                   one JSON line per accepted upload, never rewritten
    DATA_DIR/project.db                    SQLite: the live samples (Studio edits, deletes)
    DATA_DIR/changes.jsonl                 one JSON line per Studio edit or delete
    DATA_DIR/tmp/                          parts being received (cleared at start-up)

``index.jsonl`` is what tests read to check wire compatibility, so it records what the
client sent (all headers, key redacted); ``project.db`` is what Studio routes read and
change. Sample ids come from an AUTOINCREMENT key, so they increase across restarts and
are never reused after a delete. One connection behind one lock serves every thread:
the emulator favours obviously-correct over parallel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .multipart import make_tmp_dir

PROJECT_ID = 1
MAX_FILENAME_BYTES = 200
INDEX_TAIL_BYTES = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    category TEXT NOT NULL,
    requested_category TEXT NOT NULL,
    filename TEXT NOT NULL,
    original_filename TEXT NOT NULL,
    label TEXT,
    metadata TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    added TEXT NOT NULL,
    details TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS samples_live_sha256 ON samples(sha256) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS samples_live_category ON samples(category, id) WHERE deleted_at IS NULL;
"""


class DuplicateSample(Exception):
    """A live sample already has these bytes and the client disallowed duplicates."""

    def __init__(self, existing_id: int | None) -> None:
        self.existing_id = existing_id
        where = f" (sample ID {existing_id})" if existing_id is not None else " (in this request)"
        super().__init__(f"An item with this hash already exists{where}")


@dataclass
class NewSample:
    """Everything known about an upload before it has an id; ``details`` are optional extras.

    ``details`` keys use the index/Studio spelling (``deviceName``, ``intervalMs``,
    ``signatureValidate``, ``boundingBoxes``...), so they pass through unchanged.
    """

    category: str
    requested_category: str
    original_filename: str
    label: str | None
    metadata: dict[str, str]
    sha256: str
    size: int
    headers: dict[str, str]
    add_date_id: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedSample:
    """A sample for ``SampleStore.seed``: what a listing shows, without bytes."""

    category: str
    filename: str
    label: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class SampleRecord:
    """One stored, live sample as tests and Studio routes see it."""

    id: int
    category: str
    requested_category: str
    filename: str
    original_filename: str
    label: str | None
    metadata: dict[str, str]
    sha256: str
    size: int
    added: str
    path: Path
    details: dict[str, Any]
    project_id: int = PROJECT_ID


def utc_now() -> datetime:
    """Now, in UTC, to the millisecond (what the index and Studio show)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(when: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, like the Studio API prints dates."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str | None) -> str:
    """A client-chosen name made safe to store: basename only, no control characters,
    no ``.``/``..``, no leading dots, at most MAX_FILENAME_BYTES of UTF-8."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_CHARS.sub("", base).strip().lstrip(".").strip()
    if not base:
        return "sample"
    if len(base.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return base
    stem, dot, ext = base.rpartition(".")
    if not dot or len(ext.encode("utf-8")) > 16:
        stem, ext = base, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return (cut or "sample") + suffix


def with_date_id(name: str, when: datetime, sample_id: int) -> str:
    """``x-add-date-id``: a unique suffix before the extension (unique through the id)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{when:%Y%m%dT%H%M%S}-{sample_id}"
    stem = stem.encode("utf-8")[: MAX_FILENAME_BYTES - 48].decode("utf-8", errors="ignore")
    return f"{stem}{suffix}.{ext}" if ext else f"{stem}{suffix}"


class SampleStore:
    """Thread-safe store; every public method may be called from any request thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.index_path = data_dir / "index.jsonl"
        self.changes_path = data_dir / "changes.jsonl"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = make_tmp_dir(data_dir)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            data_dir / "project.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._index = open(self.index_path, "a", encoding="utf-8")  # noqa: SIM115
        self._raise_sequence_to_index()

    def close(self) -> None:
        """Close the database and the index file."""
        with self._lock:
            self._index.close()
            self._db.close()

    def _raise_sequence_to_index(self) -> None:
        """Never hand out an id the index already shows (e.g. a crash after the index
        line was written but before the database commit, or a deleted project.db)."""
        highest = 0
        with open(self.index_path, "rb") as index:
            size = index.seek(0, os.SEEK_END)
            index.seek(max(0, size - INDEX_TAIL_BYTES))
            for line in index.read().splitlines():
                try:
                    highest = max(highest, int(json.loads(line)["sampleId"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a partial first line of the tail, or a torn last line
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='samples'").fetchone()
        if row is None:
            if highest:
                self._db.execute(
                    "INSERT INTO sqlite_sequence(name, seq) VALUES('samples', ?)", (highest,)
                )
        elif highest > int(row[0]):
            self._db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='samples'", (highest,))

    def _live_duplicate(self, sha256: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM samples WHERE sha256=? AND deleted_at IS NULL ORDER BY id LIMIT 1",
            (sha256,),
        ).fetchone()
        return None if row is None else int(row[0])

    def find_duplicate(self, sha256: str) -> int | None:
        """Id of a live sample with these bytes, if any."""
        with self._lock:
            return self._live_duplicate(sha256)

    def add(self, new: NewSample, part_path: Path, *, disallow_duplicates: bool) -> SampleRecord:
        """Store one sample: move its temp file in place, index it, commit.

        The duplicate check and the insert happen under one lock, so two concurrent
        uploads of the same bytes cannot both pass. Raises DuplicateSample.
        """
        with self._lock:
            if disallow_duplicates:
                existing = self._live_duplicate(new.sha256)
                if existing is not None:
                    raise DuplicateSample(existing)
            added = utc_now()
            original = safe_filename(new.original_filename)
            self._db.execute("BEGIN IMMEDIATE")
            dest: Path | None = None
            try:
                cur = self._db.execute(
                    "INSERT INTO samples (category, requested_category, filename,"
                    " original_filename, label, metadata, sha256, size, added, details)"
                    " VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?)",
                    (new.category, new.requested_category, new.original_filename, new.label,
                     json.dumps(new.metadata), new.sha256, new.size, iso(added),
                     json.dumps(new.details)),
                )  # fmt: skip
                sample_id = int(cur.lastrowid or 0)
                name = with_date_id(original, added, sample_id) if new.add_date_id else original
                self._db.execute("UPDATE samples SET filename=? WHERE id=?", (name, sample_id))
                dest = self._sample_path(sample_id, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                part_path.replace(dest)
                record = SampleRecord(
                    id=sample_id, category=new.category,
                    requested_category=new.requested_category, filename=name,
                    original_filename=new.original_filename, label=new.label,
                    metadata=dict(new.metadata), sha256=new.sha256, size=new.size,
                    added=iso(added), path=dest, details=dict(new.details),
                )  # fmt: skip
                self._index.write(json.dumps(_index_line(record, new.headers)) + "\n")
                self._index.flush()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                if dest is not None:
                    dest.unlink(missing_ok=True)
                raise
            return record

    def _sample_path(self, sample_id: int, name: str) -> Path:
        """``files/<id>/<name>``, refusing anything that would resolve outside ``files``."""
        path = self.files_dir / str(sample_id) / name
        if path.resolve().parent != (self.files_dir / str(sample_id)).resolve():
            raise ValueError(f"file name {name!r} escapes the data directory")
        return path

    def _record(self, row: tuple[Any, ...]) -> SampleRecord:
        (sid, category, requested, name, original, label, meta, sha, size, added, details) = row
        return SampleRecord(
            id=int(sid),
            category=category,
            requested_category=requested,
            filename=name,
            original_filename=original,
            label=label,
            metadata=json.loads(meta),
            sha256=sha,
            size=int(size),
            added=added,
            path=self.files_dir / str(sid) / name,
            details=json.loads(details),
        )

    _COLUMNS = (
        "id, category, requested_category, filename, original_filename, label, metadata,"
        " sha256, size, added, details"
    )

    def get(self, sample_id: int) -> SampleRecord | None:
        """A live sample by id, or None (also for deleted ones)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM samples WHERE id=? AND deleted_at IS NULL",
                (sample_id,),
            ).fetchone()
        return None if row is None else self._record(row)

    def samples(self, category: str | None = None) -> list[SampleRecord]:
        """Live samples in id order; ``category=None`` means all categories."""
        sql = f"SELECT {self._COLUMNS} FROM samples WHERE deleted_at IS NULL"
        args: tuple[str, ...] = ()
        if category is not None:
            sql += " AND category=?"
            args = (category,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [self._record(row) for row in rows]

    def page(self, category: str | None, offset: int, limit: int | None) -> list[SampleRecord]:
        """One page of live samples in id order, paged by SQLite: a listing of a large
        project decodes only the rows it returns."""
        sql = f"SELECT {self._COLUMNS} FROM samples WHERE deleted_at IS NULL"
        args: list[object] = []
        if category is not None:
            sql += " AND category=?"
            args.append(category)
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._record(row) for row in rows]

    def count(self, category: str | None = None) -> int:
        """How many live samples (of one category)."""
        sql = "SELECT COUNT(*) FROM samples WHERE deleted_at IS NULL"
        args: tuple[str, ...] = ()
        if category is not None:
            sql += " AND category=?"
            args = (category,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def seed(self, samples: Iterable[SeedSample]) -> int:
        """Store samples without bytes in one transaction; how many.

        For tests and benchmarks that need a large project fast (100,000 samples in a few
        seconds): no file under ``files/``, no line in ``index.jsonl`` and no duplicate
        check; each gets a fresh id and a SHA-256 of its name and position, and appears in
        listings, counts and ``get`` like an uploaded sample.
        """
        added = iso(utc_now())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.executemany(
                    "INSERT INTO samples (category, requested_category, filename,"
                    " original_filename, label, metadata, sha256, size, added, details)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, '{}')",
                    (
                        (s.category, s.category, s.filename, s.filename, s.label,
                         json.dumps(s.metadata), _seed_hash(i, s.filename), added)
                        for i, s in enumerate(samples)
                    ),
                )  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur.rowcount

    def set_metadata(self, sample_id: int, metadata: dict[str, str]) -> bool:
        """Replace a live sample's whole metadata map; False when there is no such sample."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE samples SET metadata=? WHERE id=? AND deleted_at IS NULL",
                (json.dumps(metadata), sample_id),
            )
            if cur.rowcount == 0:
                return False
            self._change({"op": "set-metadata", "sampleId": sample_id, "metadata": metadata})
            return True

    def delete(self, sample_id: int) -> bool:
        """Take a sample out of listings and duplicate checks; its bytes stay on disk."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE samples SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                (iso(utc_now()), sample_id),
            )
            if cur.rowcount == 0:
                return False
            self._change({"op": "delete", "sampleId": sample_id})
            return True

    def _change(self, entry: dict[str, Any]) -> None:
        entry["at"] = iso(utc_now())
        with open(self.changes_path, "a", encoding="utf-8") as changes:
            changes.write(json.dumps(entry) + "\n")

    def index_lines(self) -> list[dict[str, Any]]:
        """Every index line written so far (tests read this)."""
        with self._lock, open(self.index_path, encoding="utf-8") as index:
            return [json.loads(line) for line in index if line.strip()]


def _seed_hash(position: int, filename: str) -> str:
    return hashlib.sha256(f"seed:{position}:{filename}".encode()).hexdigest()


def _index_line(record: SampleRecord, headers: dict[str, str]) -> dict[str, Any]:
    line: dict[str, Any] = {
        "sampleId": record.id,
        "projectId": record.project_id,
        "category": record.category,
        "requestedCategory": record.requested_category,
        "fileName": record.filename,
        "originalFileName": record.original_filename,
        "label": record.label,
        "metadata": record.metadata,
        "sha256": record.sha256,
        "size": record.size,
        "added": record.added,
        "headers": headers,
    }
    line.update(record.details)
    return line

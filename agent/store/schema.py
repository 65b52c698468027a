"""The queue file's schema and its migrations, one step per version.

Version 1 is the queue (``files``, ``agent_state``); 2 adds the project side (the
``remote_deletes`` of deletion sync and the resumable ``backfill_*`` jobs, see
``store.ledger``); 3 adds the index the ``upload`` command leases its batch with; 4 adds
watch priorities and the bytes sent per day (the data budget); 5 adds the index the
status page counts the backlog per watch with. A file
is brought to ``SCHEMA_VERSION`` in one transaction when it is opened; a file written by
a newer version is refused, never downgraded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import QueueError

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state INTEGER NOT NULL,
    source TEXT NOT NULL,
    label TEXT,
    category TEXT NOT NULL,
    metadata TEXT NOT NULL,
    upload_name TEXT,
    extra TEXT,
    after_upload TEXT NOT NULL DEFAULT 'keep',
    move_to TEXT,
    allow_duplicates INTEGER NOT NULL DEFAULT 0,
    batch TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    sha256 TEXT,
    sample_id INTEGER,
    enqueued_at REAL NOT NULL,
    delivered_at REAL,
    local_done INTEGER NOT NULL DEFAULT 1,
    bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS files_due ON files (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS files_state ON files (state);
CREATE INDEX IF NOT EXISTS files_path ON files (path);
CREATE INDEX IF NOT EXISTS files_delivered ON files (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_batch ON files (batch) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: the project side. Deletion sync (a local file of a delivered sample went;
    # delete the sample after a grace period) and resumable metadata backfill jobs.
    2: """
CREATE INDEX IF NOT EXISTS files_sample ON files (sample_id) WHERE sample_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256) WHERE sha256 IS NOT NULL;
CREATE TABLE IF NOT EXISTS remote_deletes (
    row_id INTEGER PRIMARY KEY,
    sample_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT,
    state INTEGER NOT NULL,
    noticed_at REAL NOT NULL,
    due_at REAL NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS remote_deletes_due ON remote_deletes (state, due_at);
CREATE INDEX IF NOT EXISTS remote_deletes_done ON remote_deletes (done_at)
    WHERE done_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS backfill_jobs (
    job TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    selected_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS backfill_items (
    job TEXT NOT NULL,
    sample_id INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    PRIMARY KEY (job, sample_id)
) WITHOUT ROWID;
""",
    # 2 -> 3: the upload command leases, counts and recovers one batch's rows.
    3: """
CREATE INDEX IF NOT EXISTS files_batch_due ON files (batch, state, next_attempt_at)
    WHERE batch IS NOT NULL;
""",
    # 3 -> 4: metered links. Rows lease by priority (higher first), then oldest due; the
    # bytes sent per local day survive restarts, so a data budget is not reset by one.
    4: """
ALTER TABLE files ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS files_order ON files (state, priority DESC, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS link_usage (day TEXT PRIMARY KEY, bytes INTEGER NOT NULL)
    WITHOUT ROWID;
""",
    # 4 -> 5: the backlog per watch and state (``status``, the status page, refreshed every
    # few seconds) is counted from this index alone, not from the rows of a large queue.
    5: """
CREATE INDEX IF NOT EXISTS files_state_source ON files (state, source);
""",
}
"""Schema steps: ``_MIGRATIONS[n]`` takes a version ``n - 1`` file to version ``n``."""


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to ``SCHEMA_VERSION`` in one transaction (a crash leaves it as it
    was). The version is read again under the write lock, so two processes opening an
    old file at once migrate it once."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise QueueError(f"{path}: written by a newer edge-uploader (schema {version}); upgrade")
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            script = _SCHEMA + "".join(
                _MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)
            )
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise

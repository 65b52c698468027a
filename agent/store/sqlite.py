"""The one boundary between the agent and SQLite.

Every file the agent keeps (the queue with its ledger tables, the command journal) is a
``Database``: one connection in WAL mode shared by the process's threads under a lock,
short transactions, and one translation of errors: any ``sqlite3.Error``, on a read as on
a write ("database or disk is full", "database disk image is malformed", a locked file),
becomes a ``QueueError`` that names the file. Callers therefore catch one error class,
and a full disk never escapes as a raw ``sqlite3`` exception that kills a thread.

Durability: ``synchronous=NORMAL`` (the last commits may roll back on power loss; what
rolls back is found again by the reconciliation scan). ``writing(durable=True)`` syncs a
transaction before returning, and ``sync`` makes what was already committed durable.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import QueueDamaged, QueueError

WAL_CHECKPOINT_PAGES = 256
"""The WAL is copied into the file every 256 pages (1 MiB), not SQLite's 1000 (4 MiB): on a
nearly full disk the WAL must not be the thing that fills it (it can only be checkpointed,
and its space given back, while the file can still grow)."""
WAL_KEEP_BYTES = 1024 * 1024
"""After a checkpoint the WAL is cut back to this size (SQLite keeps it whole otherwise)."""

DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's primary result codes for a file that is not a sound database."""


def translate(path: Path, what: str, exc: sqlite3.Error, doing: str = "") -> QueueError:
    """The one error for ``exc`` on ``path``: ``QueueDamaged`` (with what to do) when the
    file itself is damaged, else ``QueueError``."""
    text = f"{path}: {doing}{exc}"
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF in DAMAGED_CODES:
        return QueueDamaged(f"{text}: the {what} file is damaged. " + repair_advice(what))
    return QueueError(text)


def repair_advice(what: str) -> str:
    """What a field engineer does about a damaged file."""
    if what == "queue":
        return ("Stop the agent and run `edge-uploader queue rebuild --config <the agent's"
                " config>`: it moves the file aside (kept, not deleted) and starts a new"
                " queue; the agent's reconciliation scan then queues again every file still"
                " in a watched folder.")  # fmt: skip
    return "Stop the agent and move the file aside (keep it); the agent starts a new one."


class Database:
    """One SQLite file. Thread-safe; ``reading`` and ``writing`` hold its lock."""

    def __init__(
        self, path: Path, *, what: str, setup: Callable[[sqlite3.Connection], None],
        timeout: float = 30.0,
    ) -> None:  # fmt: skip
        """Open (creating the folder and the file) and run ``setup`` (the schema)."""
        self.path = path
        self.what = what
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=timeout
            )
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self.connection.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
            self.connection.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            setup(self.connection)
            self._keep_owner()
        except sqlite3.Error as exc:
            self._abandon()
            raise translate(path, what, exc, f"cannot open the {what}: ") from None
        except OSError as exc:
            self._abandon()
            raise QueueError(f"{path}: cannot create the {what} folder: {exc.strerror}") from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """A file that failed to open is not left open (``queue rebuild`` moves it next)."""
        connection = getattr(self, "connection", None)
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a short read (or a single autocommit statement)."""
        with self._lock:
            try:
                yield self.connection
            except sqlite3.Error as exc:
                raise translate(self.path, self.what, exc) from None

    @contextlib.contextmanager
    def writing(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error. ``durable``: the
        commit is synced to disk before this returns (``synchronous=FULL`` for it)."""
        with self._lock:
            db = self.connection
            try:
                if durable:
                    db.execute("PRAGMA synchronous=FULL")
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._reset(durable)
                self._full(exc)
                raise translate(self.path, self.what, exc) from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    self._full(exc)
                    raise translate(self.path, self.what, exc) from None
                raise
            finally:
                self._reset(durable)

    def _reset(self, durable: bool) -> None:
        if durable:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("PRAGMA synchronous=NORMAL")

    def _full(self, exc: sqlite3.Error) -> None:
        """On "database or disk is full", give the WAL's space back: checkpoint it and cut
        it to nothing. Otherwise the WAL of the commits made before the disk filled keeps
        its size (SQLite reuses it, never shrinks it), and on a small disk it can hold all
        the space that was freed, so the queue stays full after the disk is not."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _rollback(self) -> None:
        """Roll back what is left: after "database or disk is full" SQLite may already have
        rolled the transaction back itself, and a second ROLLBACK would raise."""
        if self.connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("ROLLBACK")

    def sync(self) -> None:
        """Make every committed transaction durable without writing anything: with
        ``synchronous=NORMAL`` the last commits sit in the WAL file, unsynced; fsync it.
        Needed before deleting files whose delivered state must survive a power cut."""
        with self._lock:
            for path in (Path(f"{self.path}-wal"), self.path):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise QueueError(f"{path}: cannot sync: {exc.strerror}") from None
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise QueueError(f"{path}: cannot sync: {exc.strerror}") from None
                finally:
                    os.close(fd)

    def integrity_check(self) -> str:
        with self.reading() as db:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])

    def check(self) -> None:
        """``PRAGMA quick_check`` (every page read, no index cross-check: a second or so
        per 100,000 rows); ``QueueDamaged`` with its first finding if the file is not sound
        (a truncated file may open and fail only where a read meets the missing pages)."""
        with self.reading() as db:
            found = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
        if found != ["ok"]:
            why = "; ".join(found)[:200]
            raise QueueDamaged(f"{self.path}: the {self.what} file is damaged ({why}). "
                               + repair_advice(self.what))  # fmt: skip

    def close(self, *, optimize: bool = False) -> None:
        with self._lock:
            if optimize:
                with contextlib.suppress(sqlite3.Error):
                    self.connection.execute("PRAGMA optimize")
            self.connection.close()

    def _keep_owner(self) -> None:
        """Root opening the service's file (``status`` run with sudo) must not leave the
        ``-wal``/``-shm`` files owned by root: the service could no longer open it."""
        if os.geteuid() != 0:
            return
        st = self.path.stat()
        if st.st_uid == 0:
            return
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            with contextlib.suppress(OSError):
                if side.stat().st_uid != st.st_uid:
                    os.chown(side, st.st_uid, st.st_gid)

"""After delivery: delete or move the local file (``after_upload``), once it is safe.

Delivery calls this only after the delivered state was committed with a full sync, so a
power cut can never leave a file gone whose delivery the queue forgot. A crash between
that commit and the file operation is finished at the next start (``finish_pending``).
Only the version that was delivered is touched: a file rewritten in place since then is a
new capture (queued as its own row), and it and its sidecar are left alone.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..store.queue import Queue, Row
from .files import sync_folder
from .sidecar import sidecar_path

log = logging.getLogger(__name__)


class AfterUpload:
    """The delete/move rules of every watch; ``roots`` maps a row's source to its folder."""

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = dict(roots)
        self._targets: set[Path] = set()
        self._sources: set[Path] = set()
        self._moved: set[int] = set()

    def finish_pending(self, queue: Queue) -> None:
        """At start-up: complete deletes/moves a crash interrupted after delivery."""
        rows = queue.unfinished_local_actions()
        if rows:
            queue.mark_local_done(self.finish_all(rows))

    def finish_all(self, rows: Iterable[Row]) -> list[int]:
        """Finish each row; the ids done or moot. The folders moves touched are synced
        once for the lot, targets before sources, before any move counts as done (one
        sync per folder, not two per file: on an SD card each costs a journal commit)."""
        done = [r.id for r in rows if self._finish(r)]
        moved = {r for r in done if r in self._moved}
        self._moved.clear()
        try:
            for folder in sorted(self._targets) + sorted(self._sources - self._targets):
                sync_folder(folder)
        except OSError as exc:
            log.error("after delivery, cannot sync a folder: %s", exc.strerror or exc)
            done = [r for r in done if r not in moved]  # finished again at the next start
        finally:
            self._targets.clear()
            self._sources.clear()
        return done

    def finish(self, row: Row) -> bool:
        """Delete or move one delivered file (and its sidecar). True when done or moot."""
        return bool(self.finish_all([row]))

    def _finish(self, row: Row) -> bool:
        src = Path(row.path)
        try:
            st = os.stat(src, follow_symlinks=False)
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("after delivery, cannot check %s: %s", src, exc.strerror or exc)
            return False
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            log.info("kept %s: it changed after it was delivered (the new version is queued)", src)
            return True
        try:
            if row.after_upload == "delete":
                for p in (src, sidecar_path(src)):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                log.info("deleted %s after delivery", src)
            elif row.after_upload == "move" and row.move_to:
                self._move(row, src)
        except OSError as exc:
            log.error("after delivery, could not %s %s: %s", row.after_upload, src,
                      exc.strerror or exc)  # fmt: skip
            return False
        return True

    def _move(self, row: Row, src: Path) -> None:
        """Move the file and its sidecar; ``finish_all`` syncs the target folder, then the
        source (every folder made for it is synced into its parent at once): on a file
        system that commits names per folder, a power cut could otherwise keep the file
        gone from its folder but never arrived in the target."""
        dest = self._target(row, src)
        if src.exists():
            make_folders(dest.parent)
            move_file(src, dest)
            side = sidecar_path(src)
            if side.exists():
                move_file(side, sidecar_path(dest))
            self._targets.add(dest.parent)
            self._sources.add(src.parent)
            self._moved.add(row.id)
            log.info("moved %s to %s after delivery", src, dest)

    def _target(self, row: Row, src: Path) -> Path:
        """Under ``move_to``, the file's path relative to its watch; never overwriting."""
        root = self.roots.get(row.source)
        try:
            rel = src.relative_to(root) if root else Path(src.name)
        except ValueError:
            rel = Path(src.name)
        dest = Path(row.move_to or "") / rel
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{src.stem}.{n}{src.suffix}")
            n += 1
        return dest


def make_folders(folder: Path) -> None:
    """``mkdir -p`` with each new folder's name synced into its parent."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        sync_folder(new.parent)


def move_file(src: Path, dest: Path) -> None:
    """Rename; across file systems, copy with the copy synced before the source goes."""
    try:
        src.rename(dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dest)
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sync_folder(dest.parent)
        src.unlink()

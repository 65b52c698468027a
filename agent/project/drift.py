"""``sync --dry-run``: the drift between this device and the project, changing nothing.

Three lists, each streamed (memory does not grow with the ledger):

``not_delivered``  files in a watched folder that are not delivered: never queued (the
                   daemon is not running or missed them), pending, held, dead.
``local_gone``     delivered samples whose local file is gone, with what deletion sync
                   will do about each (scheduled, blocked, done, or nothing: sync is off
                   or the file was not kept under a watched folder).
``metadata``       remote samples whose metadata differs from what the config would give
                   the file now (``core.tagger.tag`` on the file, its sidecar and its
                   watch). Only keys the config controls are compared: ``[metadata]``, the
                   watch's ``metadata``, the sidecar's and ``device_id``. ``captured_at``
                   and ``agent_version`` are derived at upload time (the file's mtime, the
                   agent that sent it), so they are compared only when a config layer sets
                   them; keys the project added (a backfill, Studio edits) are ignored.
                   Samples queued by capture commands or the ``upload`` command carried
                   trigger context the config cannot reproduce: they are counted, not
                   compared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clock import Clock, system_clock
from ..config import Config, WatchConfig
from ..core.files import ignored_name, matches, walk
from ..core.sidecar import read_sidecar
from ..core.tagger import tag
from ..errors import InputError, PermanentError
from ..remote.studio import ProjectNotFound, SampleNotFound, StudioClient
from ..store.ledger import Candidate, DeleteState, Ledger
from ..store.queue import Queue, State
from .pool import bounded_map

Changes = dict[str, tuple[str | None, str]]


@dataclass(frozen=True)
class DriftItem:
    kind: str
    path: str
    detail: str = ""
    sample_id: int | None = None
    changes: Changes | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path, "detail": self.detail}
        if self.sample_id is not None:
            out["sample_id"] = self.sample_id
        if self.changes is not None:
            out["changes"] = {k: {"remote": a, "config": b} for k, (a, b) in self.changes.items()}
        return out


@dataclass
class DriftCounts:
    not_delivered: int = 0
    local_gone: int = 0
    metadata: int = 0
    compared: int = 0
    not_compared: int = 0
    errors: list[str] = field(default_factory=list)


def controlled_keys(config: Config, watch: WatchConfig, sidecar_keys: set[str]) -> set[str]:
    """The metadata keys the config decides for a file of ``watch``."""
    return set(config.metadata) | set(watch.metadata) | sidecar_keys | {"device_id"}


def expected_metadata(config: Config, watch: WatchConfig, path: Path) -> dict[str, str]:
    """What the config would send for ``path`` now, restricted to the keys it controls."""
    st = os.stat(path)
    sidecar = read_sidecar(path)
    tagged = tag(path, config, mtime=st.st_mtime, watch=watch, sidecar=sidecar)
    keys = controlled_keys(config, watch, set(sidecar.metadata) if sidecar else set())
    return {k: v for k, v in tagged.metadata.items() if k in keys}


def compare(expected: dict[str, str], remote: dict[str, str]) -> Changes:
    return {k: (remote.get(k), v) for k, v in sorted(expected.items()) if remote.get(k) != v}


class Drift:
    def __init__(
        self, config: Config, queue: Queue, studio: StudioClient | None, *,
        workers: int = 4, clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self.config = config
        self.queue = queue
        self.ledger = Ledger(queue)
        self.studio = studio
        self.workers = workers
        self.clock = clock
        self.counts = DriftCounts()
        self.watches = {w.key: w for w in config.watches}

    # -- local files not delivered -------------------------------------------------------
    def not_delivered(self) -> Iterator[DriftItem]:
        for w in self.config.watches:
            if not w.path.is_dir():
                self.counts.errors.append(f"watched folder {w.path} does not exist")
                continue
            for path in walk(w.path, w.recursive):
                if ignored_name(path.name) or not matches(path.name, w.patterns):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if st.st_size == 0:
                    continue  # never a sample
                row = self.queue.latest_for_path(str(path))
                if row is None:
                    detail = "not queued"
                elif (row.size, row.mtime_ns) != (st.st_size, st.st_mtime_ns):
                    detail = "changed since it was queued; this version is not queued"
                elif row.state is State.DELIVERED:
                    continue
                else:
                    detail = row.state.label + (f": {row.last_error}" if row.last_error else "")
                self.counts.not_delivered += 1
                yield DriftItem("not_delivered", str(path), detail)

    # -- delivered samples whose file is gone ---------------------------------------------
    def local_gone(self) -> Iterator[DriftItem]:
        roots = [w.path for w in self.config.watches]
        now = self.clock()
        for c in self.ledger.candidates():
            path = Path(c.path)
            if os.path.lexists(path):
                continue
            self.counts.local_gone += 1
            yield DriftItem("local_gone", c.path, self._gone_detail(c, path, roots, now),
                            sample_id=c.sample_id)  # fmt: skip

    def _gone_detail(self, c: Candidate, path: Path, roots: list[Path], now: float) -> str:
        d = self.ledger.deletion_for(c.row_id)
        if d is not None:
            if d.state is DeleteState.SCHEDULED:
                when = d.due_at - now
                due = f"due in {when / 60:.0f} min" if when > 0 else "due now"
                return f"remote deletion scheduled, {due}" + (" (confirmed)" if d.confirmed else "")
            note = f": {d.last_error}" if d.last_error else ""
            return f"remote deletion {d.state.label}{note}"
        root = next((r for r in roots if r in path.parents), None)
        if root is None:
            return "not under a watched folder: deletion sync leaves its sample alone"
        if not root.is_dir():
            return f"its watched folder {root} is missing: deletion sync leaves it alone"
        if not self.config.sync.delete_remote:
            return "deletion sync is off ([sync] delete_remote = false): the sample stays"
        return "not scheduled yet (the daemon's next check will)"

    # -- metadata ------------------------------------------------------------------------
    def metadata(self) -> Iterator[DriftItem]:
        """Needs the Studio client: one read per delivered, still-present file."""
        if self.studio is None:
            return
        self.studio.check_project()
        for (c, _), res in bounded_map(self._compare_one, self._comparable(), self.workers):
            if isinstance(res, Exception):
                if not isinstance(res, PermanentError) or isinstance(res, ProjectNotFound):
                    raise res  # a refused key, an unknown project, the service down: stop
                res = DriftItem("metadata", c.path, f"cannot compare: {res}", c.sample_id)
            self.counts.compared += 1
            if res is not None:
                self.counts.metadata += 1
                yield res

    def _comparable(self) -> Iterator[tuple[Candidate, WatchConfig]]:
        for c in self.ledger.candidates():
            watch = self.watches.get(c.source)
            if not os.path.lexists(c.path):
                continue
            if watch is None:
                self.counts.not_compared += 1
                continue
            yield c, watch

    def _compare_one(self, item: tuple[Candidate, WatchConfig]) -> DriftItem | None:
        """Runs on a worker thread: no shared counters here."""
        c, watch = item
        assert self.studio is not None
        try:
            expected = expected_metadata(self.config, watch, Path(c.path))
        except (InputError, OSError) as exc:
            return DriftItem("metadata", c.path, f"cannot tag the file now: {exc}", c.sample_id)
        try:
            remote = self.studio.get_sample(c.sample_id)
        except SampleNotFound:
            return DriftItem("metadata", c.path, "the sample is not in the project", c.sample_id)
        changes = compare(expected, remote.metadata)
        return DriftItem("metadata", c.path, "", c.sample_id, changes) if changes else None

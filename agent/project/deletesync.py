"""Deletion sync (opt-in, ``[sync] delete_remote = true``): when a delivered file that is
kept locally is deleted from a watched folder, its sample leaves the project too.

How a deletion travels::

    watcher (FileDeletedEvent, moved away)  ─┐
    reconciliation pass (file of a delivered ─┴─► remote_deletes: scheduled, due = now + grace
    row is gone; at start and periodically)              │
                                                         ▼ when due, unless the cap trips
                                      file back?  → forgotten (the sample stays)
                                      same bytes at another path (a rename)? → cancelled
                                      GET sample: gone already → done; other bytes → failed
                                      DELETE sample → done

Safety, in order of importance:

- **The cap.** If the deletions waiting (not confirmed by the operator) plus those done in
  the last hour exceed ``[sync] max_deletes_per_hour``, *nothing* is deleted: a mistaken
  ``rm -r`` or an unmounted card must not empty a project. The daemon logs an error, the
  state shows in ``edge-uploader status``, and the operator either confirms
  (``edge-uploader sync --config F --confirm-deletes``), cancels
  (``--cancel-deletes``: the samples stay), or restores the files.
- **The grace period** (``grace_seconds``) gives time to notice and undo.
- Only the newest version of a path counts, only rows with ``after_upload = "keep"`` and
  only paths under a folder that is watched now. A file pruned by the disk guard is not a
  deletion, even when the watcher reports the unlink before the row says ``pruned``.
- Only "no such file" is a deletion: a path that cannot be checked (an I/O error on a
  failing card, a folder the agent may no longer enter) postpones, never deletes.
- Before deleting, the sample is fetched and its SHA-256 compared with the file's: a
  ledger that belongs to another project (the API key was changed) deletes nothing.

Time comes from the injected clock, so tests move through the grace period instantly.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ..clock import Clock, retry_delay, system_clock
from ..config import Config
from ..core.files import ignored_name
from ..core.runtime import Runtime
from ..errors import AuthError, ConfigError, PermanentError, TransientError
from ..events import Event, Stats
from ..loop import Loop
from ..remote.studio import ProjectNotFound, SampleNotFound, StudioClient
from ..store.ledger import BLOCKED_KEY, Candidate, Delete, DeleteState, Ledger
from ..store.queue import Queue

log = logging.getLogger(__name__)

HOUR = 3600.0
SCHEDULE_BATCH = 200


@dataclass
class PassResult:
    """What one pass did; the ``sync`` command prints it."""

    scheduled: int = 0
    deleted: int = 0
    already_gone: int = 0
    kept: int = 0
    failed: int = 0
    postponed: int = 0
    blocked: dict[str, Any] | None = None
    stopped: str | None = None
    """Why the pass ended early (the service is unreachable, the key was refused)."""
    messages: list[str] = field(default_factory=list)


class _Stop(Exception):
    pass


def under(path: Path, roots: list[Path]) -> bool:
    return any(root in path.parents for root in roots)


def presence(path: str | Path) -> OSError | bool:
    """True: ``path`` exists; False: it is gone (``ENOENT``/``ENOTDIR``); else the error
    that stopped us from telling. Only "gone" may ever lead to a remote deletion: an I/O
    error on a failing card or a folder the agent may no longer enter is not a deletion
    (``os.path.lexists`` says False for both)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        return exc
    return True


class DeletionSync:
    """The logic, shared by the daemon component and the ``sync`` command."""

    def __init__(
        self, config: Config, queue: Queue, studio: StudioClient | None, *,
        clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self.config = config
        self.queue = queue
        self.ledger = Ledger(queue)
        self.studio = studio
        self.clock = clock
        self.roots = [w.path for w in config.watches]
        self._unmounted: set[Path] = set()

    # -- noticing ------------------------------------------------------------------------
    def live_roots(self) -> list[Path]:
        """Watched folders whose files can be judged now; rows under the others are left
        alone. A folder that is missing, or empty on another file system than it was on
        before (an SD card or USB disk that is not mounted), does not count: every file
        under it would look deleted."""
        known = self.queue.get_state()
        live: list[Path] = []
        for root in self.roots:
            try:
                dev = root.stat().st_dev
                empty = not any(os.scandir(root))
            except OSError:
                continue
            key = f"watch_device:{root}"
            before = known.get(key)
            if before is not None and before != dev and empty:
                if root not in self._unmounted:
                    log.warning("deletion sync: %s is empty and on another file system than"
                                " before (not mounted?); its files are not treated as deleted",
                                root)  # fmt: skip
                    self._unmounted.add(root)
                continue
            self._unmounted.discard(root)
            if before != dev:
                self.queue.set_state(**{key: dev})
            live.append(root)
        return live

    def notice(self, path: Path) -> int:
        """The watcher saw ``path`` go: schedule its sample if it is one of ours."""
        if presence(path) is not False or not under(path, self.live_roots()):
            return 0
        c = self.ledger.candidate_for_path(str(path))
        return 0 if c is None else self._schedule([c])

    def reconcile(self, stop: threading.Event | None = None) -> int:
        """Find delivered, kept files that are gone (events missed while the agent was
        down); schedule their samples. Streams the ledger; returns how many are new."""
        roots = self.live_roots()
        batch: list[Candidate] = []
        n = 0
        for c in self.ledger.candidates(unscheduled=True):
            if stop is not None and stop.is_set():
                break
            path = Path(c.path)
            if not under(path, roots) or presence(path) is not False:
                continue
            batch.append(c)
            if len(batch) >= SCHEDULE_BATCH:
                n += self._schedule(batch)
                batch = []
        if batch:
            n += self._schedule(batch)
        return n

    def _schedule(self, items: list[Candidate]) -> int:
        now = self.clock()
        grace = self.config.sync.grace_seconds
        n = self.ledger.schedule(items, now=now, due=now + grace)
        if n:
            for c in items[:5]:
                log.info("%s is gone: sample %d will be deleted from the project in %.0f s",
                         c.path, c.sample_id, grace)  # fmt: skip
            if len(items) > 5:
                log.info("... and %d more file(s) of delivered samples are gone", len(items) - 5)
        return n

    # -- executing -----------------------------------------------------------------------
    def run_due(self, *, confirmed_now: bool = False) -> PassResult:
        """Delete the samples whose grace period is over, unless the cap trips.
        ``confirmed_now``: deletions the operator confirmed run at once, grace or not."""
        result = PassResult()
        now = self.clock()
        counts = self.ledger.counts(now)
        cap = self.config.sync.max_deletes_per_hour
        over = counts["unconfirmed"] > 0 and counts["unconfirmed"] + counts["done_last_hour"] > cap
        result.blocked = self._set_blocked(over, counts, now)
        if self.studio is None:
            return result
        todo = itertools.chain(
            self.ledger.scheduled(confirmed=True) if confirmed_now else (),
            self.ledger.scheduled(due_by=now, confirmed=True if over else None),
        )
        first = next(todo, None)
        if first is None:
            return result
        try:
            # Once per client: a wrong URL or project must stop the pass, not turn every
            # "not found" into "already deleted".
            self._guard(self.studio.check_project, result)
            roots = self.live_roots()
            for d in itertools.chain((first,), todo):
                self._execute(d, result, roots)
        except _Stop:
            pass
        return result

    def _guard(self, fn: Callable[[], object], result: PassResult) -> None:
        try:
            fn()
        except (TransientError, AuthError, ConfigError, ProjectNotFound) as exc:
            self._stop(result, exc)

    @staticmethod
    def _stop(result: PassResult, exc: Exception) -> NoReturn:
        """End the pass: the service is unreachable (try later) or refuses us (say why)."""
        if isinstance(exc, TransientError):
            result.stopped = f"the Studio API is unreachable ({exc}); trying again later"
            log.warning("deletion sync: %s", result.stopped)
        else:
            result.stopped = str(exc)
            log.error("deletion sync stopped: %s", exc)
        raise _Stop from None

    def _execute(self, d: Delete, result: PassResult, roots: list[Path]) -> None:
        if not self._kept_by_local_facts(d, result, roots):
            self._delete_remote(d, result)

    def _kept_by_local_facts(self, d: Delete, result: PassResult, roots: list[Path]) -> bool:
        """What the device says first: the file cannot be checked (postpone), is back, was
        pruned rather than deleted, or its bytes live on at another path. True: decided."""
        now = self.clock()
        path = Path(d.path)
        here: OSError | bool = presence(path)
        if not here and not under(path, roots):
            here = OSError(errno.ENOENT, "its watched folder is not there (not mounted?)")
        if isinstance(here, OSError):
            delay = min(HOUR, 60.0 * 2 ** min(d.attempts, 6))  # 1 min, doubling to 1 h
            reason = f"cannot check {path}: {here.strerror or here}; not deleting its sample"
            self.ledger.retry_later(d.row_id, due=now + delay, reason=reason)
            log.warning("deletion sync: %s (trying again in %.0f s)", reason, delay)
            result.postponed += 1
            return True
        if here:
            self.ledger.forget(d.row_id)
            if d.sha256:  # back as a new version: the service called it a duplicate
                self.ledger.adopt_sample(d.sha256, d.sample_id)
            log.info("%s is back: sample %d stays in the project", path, d.sample_id)
            result.kept += 1
            return True
        keep = self._keep_reason(d)
        if keep is None:
            return False
        self.ledger.finish(d.row_id, DeleteState.CANCELLED, now=now, reason=keep)
        log.info("not deleting sample %d of %s: %s", d.sample_id, path, keep)
        result.kept += 1
        return True

    def _keep_reason(self, d: Delete) -> str | None:
        if not self.ledger.kept_locally(d.row_id):
            # Pruned by the disk guard (the watcher may report its unlink before the row is
            # marked), or no longer a kept file: nobody deleted the recording.
            return "its file was not deleted by a user (pruned to free space)"
        if d.sha256:
            others = [
                p for p in self.ledger.paths_with_sha256(d.sha256, exclude_row=d.row_id)
                if presence(p) is not False  # present, or cannot tell: keep the sample
            ]  # fmt: skip
            if others:
                self.ledger.adopt_sample(d.sha256, d.sample_id)
                return f"the same content is still at {others[0]}"
        return None

    def _delete_remote(self, d: Delete, result: PassResult) -> None:
        """Ask the project: the sample is gone already, holds other bytes, or goes now."""
        assert self.studio is not None
        now, path = self.clock(), Path(d.path)
        try:
            try:
                sample = self.studio.get_sample(d.sample_id)
            except SampleNotFound:
                gone = True
            else:
                if d.sha256 and sample.sha256 and sample.sha256.lower() != d.sha256.lower():
                    raise PermanentError(
                        f"sample {d.sample_id} holds other content than {path.name} (sha256"
                        f" {sample.sha256[:12]}... != {d.sha256[:12]}...): not deleted. Does"
                        " this queue belong to another project (was the API key changed)?"
                    )
                gone = not self.studio.delete_sample(d.sample_id)
        except TransientError as exc:
            delay = retry_delay(d.attempts + 1, 60.0, HOUR, exc.retry_after)
            self.ledger.retry_later(d.row_id, due=now + delay, reason=str(exc))
            result.postponed += 1
            self._stop(result, exc)
        except (AuthError, ConfigError, ProjectNotFound) as exc:
            self._stop(result, exc)
        except PermanentError as exc:
            self.ledger.finish(d.row_id, DeleteState.FAILED, now=now, reason=str(exc))
            log.error("could not delete sample %d of %s: %s", d.sample_id, path, exc)
            result.failed += 1
            result.messages.append(f"sample {d.sample_id} ({path}): {exc}")
            return
        self.ledger.finish(d.row_id, DeleteState.DONE, now=now,
                           reason="already gone from the project" if gone else None)  # fmt: skip
        if gone:
            result.already_gone += 1
            log.info("sample %d of %s was already gone from the project", d.sample_id, path)
        else:
            result.deleted += 1
            log.info("deleted sample %d from the project: %s was deleted locally", d.sample_id,
                     path)  # fmt: skip

    def _set_blocked(self, over: bool, counts: dict[str, int], now: float) -> dict[str, Any] | None:
        previous = self.queue.get_state().get(BLOCKED_KEY)
        if not over:
            if previous:
                self.queue.set_state(**{BLOCKED_KEY: None})
                log.warning("deletion sync unblocked: pending deletions are within the cap")
            return None
        before = previous if isinstance(previous, dict) else {}
        info = {
            "pending": counts["unconfirmed"],
            "deleted_last_hour": counts["done_last_hour"],
            "max_deletes_per_hour": self.config.sync.max_deletes_per_hour,
            "since": before.get("since", now),
            "logged_at": before.get("logged_at", 0.0),
            "confirm": confirm_hint(self.config.source),
        }
        if info != before:
            # Said when the block starts, then at most hourly: a slow `rm -r` of thousands
            # of files must not fill the journal.
            loud = now - float(info["logged_at"]) >= HOUR
            if loud:
                info["logged_at"] = now
            self.queue.set_state(**{BLOCKED_KEY: info})
        else:
            loud = False
        if loud:
            log.error(
                "DELETION SYNC BLOCKED: %d local file(s) of delivered samples were deleted,"
                " more than [sync] max_deletes_per_hour = %d: nothing is deleted in the"
                " project. Review with `edge-uploader sync --config %s --dry-run`; if intended"
                " run `%s`; to keep the samples run `edge-uploader sync --config %s"
                " --cancel-deletes`, or restore the files",
                info["pending"], info["max_deletes_per_hour"], self.config.source,
                info["confirm"], self.config.source,
            )  # fmt: skip
        return info


def confirm_hint(config_source: str) -> str:
    return f"edge-uploader sync --config {config_source} --confirm-deletes"


class DeleteSyncComponent:
    """The daemon part: notices deletions (``Event.REMOVED``) and runs due ones, a pass
    at a time on its own loop.

    It never contacts the Studio API at start-up (a device offline must still start);
    a wrong key or project is logged when a deletion falls due, and retried later.
    """

    name = "delete-sync"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = _Passes(self)
        self._cancel = threading.Event()
        self._paths: stdqueue.SimpleQueue[tuple[Path, bool]] = stdqueue.SimpleQueue()
        self._reconcile = True
        self._next_check = 0.0
        self.sync: DeletionSync | None = None
        self.studio: StudioClient | None = None
        self.stats: Stats | None = None

    def start(self, runtime: Runtime) -> None:
        self.clock = runtime.clock
        self.studio = StudioClient.from_config(self.config, cancel=self._cancel, clock=self.clock)
        self.sync = DeletionSync(self.config, runtime.queue, self.studio, clock=self.clock)
        self.stats = runtime.stats
        self.stats.subscribe(self._on_event)
        self.loop.start()
        log.info(
            "deletion sync on: samples of deleted files go after %.0f s, at most %d an hour"
            " without confirmation", self.config.sync.grace_seconds,
            self.config.sync.max_deletes_per_hour,
        )  # fmt: skip

    def stop(self) -> None:
        self._cancel.set()
        if self.stats is not None:
            self.stats.unsubscribe(self._on_event)
        self.loop.stop()
        if self.studio is not None:
            self.studio.close()

    def wake(self) -> None:
        """Run a pass now (after the clock moved, in tests)."""
        self.loop.wake()

    def reconcile_soon(self) -> None:
        self._reconcile = True
        self.loop.wake()

    def _on_event(self, event: Event, info: dict[str, Any]) -> None:
        """A ``Stats`` listener (the watcher's thread): just hand the path over."""
        if event is not Event.REMOVED:
            return
        path, is_dir = Path(str(info["path"])), bool(info.get("is_dir"))
        if not is_dir and ignored_name(path.name):
            return
        self._paths.put((path, is_dir))
        self.loop.wake()

    def run_pass(self) -> float:
        """One pass: notice what the watcher saw go, reconcile when due, delete what is
        due; the seconds until the next pass."""
        assert self.sync is not None
        held = True  # a pass that fails before run_due waits like a blocked one
        try:
            self._drain_paths()
            if self._reconcile or time.monotonic() >= self._next_check:
                self._reconcile = False
                self._next_check = time.monotonic() + self.config.sync.check_interval_seconds
                self.sync.reconcile(self._cancel)
            if not self._cancel.is_set():
                result = self.sync.run_due()
                held = bool(result.blocked or result.stopped)
            due = self.sync.ledger.next_due()
        except Exception:
            log.exception("deletion sync pass failed; trying again later")
            due = None
        # Blocked by the cap or stopped by an error: due rows stay due, so wait for the
        # next check (or a wake), not for them.
        wait = max(1.0 if held else 0.0, self._next_check - time.monotonic())
        if due is not None and not held:
            wait = min(wait, max(0.01, due - self.clock()))
        return wait

    def _drain_paths(self) -> None:
        assert self.sync is not None
        while True:
            try:
                path, is_dir = self._paths.get_nowait()
            except stdqueue.Empty:
                return
            if is_dir:
                self._reconcile = True
            else:
                self.sync.notice(path)


class _Passes(Loop):
    def __init__(self, component: DeleteSyncComponent) -> None:
        super().__init__("delete-sync")
        self.component = component

    def step(self) -> float | None:
        return self.component.run_pass()

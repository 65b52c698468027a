"""``metadata backfill``: give samples already in the project new metadata values.

Selection: this device's ledger (the ``sample_id`` of every delivered row in the queue),
or every sample of the project matching a filter (``--select all``); ``--label``,
``--category``, ``--filename`` and ``--where`` narrow either. For each selected sample the
client reads the sample, merges the new values into its map (every other key stays) and
writes the full map, skipping the write when the sample already has every value.

Resumable: a job id is derived from the project, the selection and the values. The
selected ids are first recorded in the queue file (``backfill_items``), then worked
through in id order, each outcome recorded as it comes; a re-run of the same command after
an interruption (Ctrl-C, kill -9, power loss, the service down) does only what is still
open. Outcomes lost with the last commits cost one read each, never a second write.

Stops early, keeping what is done, on a refused key (``AuthError``), an unknown project
(``ConfigError``) or a service that stays unreachable through the client's retries;
a sample deleted in the meantime or refused on its own is reported and the rest proceeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from ..clock import Clock, system_clock
from ..errors import AgentError, AuthError, ConfigError, InputError, TransientError
from ..remote.studio import (
    Merge,
    MetaFilter,
    ProjectNotFound,
    RemoteSample,
    SampleNotFound,
    StudioClient,
)
from ..store.ledger import ItemState, Ledger
from .pool import bounded_map

log = logging.getLogger(__name__)

FLUSH_EVERY = 20
FLUSH_SECONDS = 0.5
ProgressFn = Callable[[dict[str, int], int], None]
"""Called with the outcome counts so far and the number of samples to do this run."""


@dataclass(frozen=True)
class Selection:
    """Which samples a backfill touches."""

    mode: str = "ledger"
    """``ledger``: the samples this device delivered; ``all``: every sample of the project."""
    category: str = "all"
    labels: tuple[str, ...] = ()
    filename: str | None = None
    where: tuple[MetaFilter, ...] = ()

    def matches(self, s: RemoteSample) -> bool:
        """The filters, applied on our side (the ledger selection reads each sample)."""
        if self.category != "all" and s.category != self.category:
            return False
        if self.labels and s.label not in self.labels:
            return False
        if self.filename and self.filename.lower() not in s.filename.lower():
            return False
        return all(f.matches(s.metadata) for f in self.where)

    def describe(self) -> str:
        parts = ["this device's ledger" if self.mode == "ledger" else "all samples"]
        if self.category != "all":
            parts.append(f"category {self.category}")
        if self.labels:
            parts.append("label " + " or ".join(self.labels))
        if self.filename:
            parts.append(f"file name containing {self.filename!r}")
        for f in self.where:
            values = "|".join(f.values)
            parts.append(
                f"{f.key}{'=' if f.op == 'eq' else '!='}{values}" if values
                else (f"has {f.key}" if f.op == "eq" else f"no {f.key}")
            )  # fmt: skip
        return ", ".join(parts)


@dataclass(frozen=True)
class Plan:
    project_id: int
    selection: Selection
    changes: dict[str, str]

    def spec(self) -> dict[str, Any]:
        return {"project": self.project_id, "selection": asdict(self.selection),
                "set": dict(sorted(self.changes.items()))}  # fmt: skip

    @property
    def job_id(self) -> str:
        text = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Summary:
    job: str
    counts: dict[str, int] = field(default_factory=lambda: {s.label: 0 for s in ItemState})
    earlier: dict[str, int] = field(default_factory=dict)
    """Outcomes recorded by earlier runs of the same job."""
    todo: int = 0
    stopped: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.stopped or self.counts["failed"] else 0


def _quote(value: str | None) -> str:
    return "(unset)" if value is None else json.dumps(value, ensure_ascii=False)


def change_line(sample: RemoteSample, merge: Merge) -> str:
    """``sample 12 idle.01.wav: site: (unset) → "lab-a"; location: "x" → "y"``."""
    changes = "; ".join(f"{k}: {_quote(old)} → {_quote(new)}"
                        for k, (old, new) in merge.changed.items())  # fmt: skip
    return f"sample {sample.id} {sample.filename}: {changes}"


class Backfill:
    def __init__(
        self, studio: StudioClient, ledger: Ledger | None, plan: Plan, *, workers: int = 4,
        out: IO[str], progress: ProgressFn | None = None, clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self.studio = studio
        self.ledger = ledger
        self.plan = plan
        self.workers = workers
        self.out = out
        self.progress = progress
        self.clock = clock

    # -- selection -----------------------------------------------------------------------
    def selected_ids(self) -> Iterator[int]:
        sel = self.plan.selection
        if sel.mode == "ledger":
            if self.ledger is None:
                raise AgentError("the ledger selection needs the queue file")
            yield from self.ledger.sample_ids()
            return
        for s in self.studio.list_samples(sel.category, labels=sel.labels, filename=sel.filename,
                                          metadata=sel.where):  # fmt: skip
            yield s.id

    def _listed(self) -> Iterator[RemoteSample]:
        sel = self.plan.selection
        yield from self.studio.list_samples(sel.category, labels=sel.labels,
                                            filename=sel.filename, metadata=sel.where)  # fmt: skip

    def ledger_note(self) -> str | None:
        if self.plan.selection.mode != "ledger" or self.ledger is None:
            return None
        n = self.ledger.delivered_without_id()
        if not n:
            return None
        return (f"note: {n} delivered file(s) have no sample id (the service had them"
                " already) and are not in the ledger selection; use --select all with"
                " --filename to reach them")  # fmt: skip

    # -- one sample (worker threads) -----------------------------------------------------
    def _one(self, sample_id: int, *, write: bool,
             listed: RemoteSample | None = None) -> tuple[ItemState, str | None]:  # fmt: skip
        try:
            sample = listed or self.studio.get_sample(sample_id)
        except SampleNotFound:
            return ItemState.MISSING, "not in the project (deleted?)"
        if self.plan.selection.mode == "ledger" and not self.plan.selection.matches(sample):
            return ItemState.SKIPPED, None
        try:
            merge = self.studio.merge_metadata(sample_id, self.plan.changes, sample=sample,
                                               write=write)  # fmt: skip
        except SampleNotFound:
            return ItemState.MISSING, "deleted from the project during the backfill"
        except InputError as exc:
            return ItemState.FAILED, f"the merged metadata cannot be written: {exc}"
        if not merge.changed:
            return ItemState.UNCHANGED, None
        return ItemState.WRITTEN, change_line(sample, merge)

    @staticmethod
    def _fatal(exc: Exception) -> bool:
        return isinstance(exc, AuthError | TransientError | ConfigError | ProjectNotFound)

    @classmethod
    def _outcome(
        cls, res: tuple[ItemState, str | None] | Exception
    ) -> tuple[ItemState, str | None] | None:
        """One sample's result; None when the error stops the whole run (key, network,
        project). A per-sample refusal is a failure of that sample only; a bug re-raises."""
        if not isinstance(res, Exception):
            return res
        if cls._fatal(res):
            return None
        if not isinstance(res, AgentError):
            raise res
        return ItemState.FAILED, str(res)

    # -- dry run -------------------------------------------------------------------------
    def dry_run(self) -> Summary:
        """Say what would change, sample by sample; change nothing anywhere."""
        self.studio.check_project()
        summary = Summary(self.plan.job_id)
        results: Iterator[tuple[int, tuple[ItemState, str | None] | Exception]]
        if self.plan.selection.mode == "all":  # the listing carries the metadata: no reads
            results = (
                (s.id, res)
                for s, res in bounded_map(
                    lambda s: self._one(s.id, write=False, listed=s), self._listed(), 1
                )
            )
        else:
            results = bounded_map(lambda i: self._one(i, write=False), self.selected_ids(),
                                  self.workers)  # fmt: skip
        for sid, res in results:
            outcome = self._outcome(res)
            if outcome is None:
                summary.stopped = str(res)
                break
            state, detail = outcome
            summary.counts[state.label] += 1
            if state is ItemState.WRITTEN and detail:
                print(detail, file=self.out)
            elif state in (ItemState.MISSING, ItemState.FAILED):
                summary.problems.append(f"sample {sid}: {detail}")
        return summary

    # -- apply ---------------------------------------------------------------------------
    def apply(self) -> Summary:
        """Select, then write; resumable (see the module docstring)."""
        if self.ledger is None:
            raise AgentError("a backfill needs the queue file to record its progress")
        self.studio.check_project()
        ledger, job = self.ledger, self.plan.job_id
        summary = Summary(job)
        ledger.start_job(job, self.plan.spec(), now=self.clock())
        summary.earlier = {k: v for k, v in ledger.item_counts(job).items() if v}
        batch: list[int] = []
        for sid in self.selected_ids():
            batch.append(sid)
            if len(batch) >= 500:
                ledger.add_items(job, batch)
                batch = []
        ledger.add_items(job, batch)
        ledger.job_event(job, "selected_at", self.clock())
        counts_now = ledger.item_counts(job)
        summary.todo = counts_now["pending"] + counts_now["failed"]
        pending: list[tuple[int, ItemState, str | None]] = []
        last_flush = time.monotonic()
        try:
            for sid, res in bounded_map(lambda i: self._one(i, write=True),
                                        ledger.open_items(job), self.workers):  # fmt: skip
                outcome = self._outcome(res)
                if outcome is None:
                    summary.stopped = str(res)
                    break
                state, detail = outcome
                if state is ItemState.WRITTEN:
                    detail = None  # the change line is for dry runs; keep the table small
                summary.counts[state.label] += 1
                if state in (ItemState.MISSING, ItemState.FAILED):
                    summary.problems.append(f"sample {sid}: {detail}")
                    log.warning("sample %d: %s", sid, detail)
                pending.append((sid, state, detail))
                if len(pending) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                    ledger.mark_items(job, pending)
                    pending, last_flush = [], time.monotonic()
                if self.progress is not None:
                    self.progress(summary.counts, summary.todo)
        finally:
            ledger.mark_items(job, pending)
        if summary.stopped is None:
            ledger.job_event(job, "finished_at", self.clock())
        return summary

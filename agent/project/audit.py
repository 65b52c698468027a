"""``project audit``: is the project's training/testing split safe, and how is it spread?

Every sample of the project is listed through the Studio API, one category at a time, a
page at a time. For each sample only its category, its group value (the metadata value of
the group key, ``[ingestion] group_key``, default ``session``) and its ``--by`` value are
looked at, and only counters are kept: one small integer per group and per ``--by`` value
that packs a count per category (``SLOT_BITS`` bits each). Memory therefore grows with the
number of distinct groups, never with the number of samples, and no sample outlives its
page.

A group *leaks* when it has samples in both training and testing: the model is then
tested on recordings of the same session it was trained on. A sample whose metadata has no
(or an empty) group value belongs to no group; it is counted, with a few of its ids, since
the audit cannot tell which samples it belongs with.

The category of a sample is the category it was listed under, never a field of its own.
Categories the service refuses to list (only ``training`` and ``testing`` are required)
are reported as skipped; a project that changes while it is read (the listed count differs
from the ``totalCount`` the service announced) gets a warning, since a sample moved
between categories during the audit may be seen twice or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PermanentError
from ..remote.studio import PAGE_SIZE, ProjectNotFound, RemoteSample, StudioClient

CATEGORIES = ("training", "testing", "validation", "post-processing", "anomaly")
"""The categories listed, in this order; the first two are the split the audit checks."""
REQUIRED = frozenset({"training", "testing"})
SLOT_BITS = 40
MASK = (1 << SLOT_BITS) - 1
TRAINING, TESTING = 0, 1
UNGROUPED_EXAMPLES = 10


def unpack(packed: int) -> dict[str, int]:
    """A packed counter as ``{category: count}``, every category present."""
    return {c: (packed >> (SLOT_BITS * i)) & MASK for i, c in enumerate(CATEGORIES)}


def leaks(packed: int) -> bool:
    """True when the counter has samples in both training and testing."""
    return bool(packed & MASK) and bool((packed >> SLOT_BITS) & MASK)


@dataclass
class Tally:
    """The counters the audit keeps while samples stream past."""

    group_key: str
    by_key: str | None = None
    groups: dict[str, int] = field(default_factory=dict)
    by: dict[str | None, int] = field(default_factory=dict)
    totals: int = 0
    ungrouped: int = 0
    ungrouped_ids: list[int] = field(default_factory=list)

    def add(self, category_index: int, sample: RemoteSample) -> None:
        one = 1 << (SLOT_BITS * category_index)
        self.totals += one
        group = sample.metadata.get(self.group_key)
        if group:
            self.groups[group] = self.groups.get(group, 0) + one
        else:
            self.ungrouped += one
            if len(self.ungrouped_ids) < UNGROUPED_EXAMPLES:
                self.ungrouped_ids.append(sample.id)
        if self.by_key is not None:
            value = sample.metadata.get(self.by_key)
            self.by[value] = self.by.get(value, 0) + one


@dataclass(frozen=True)
class LeakingGroup:
    group: str
    counts: dict[str, int]


@dataclass(frozen=True)
class Report:
    """What the audit found; ``as_json`` is the ``--json`` document."""

    project_id: int
    group_key: str
    by_key: str | None
    totals: dict[str, int]
    groups: int
    leaking: list[LeakingGroup]
    ungrouped: dict[str, int]
    ungrouped_ids: list[int]
    by: list[tuple[str | None, dict[str, int]]]
    skipped: dict[str, str]
    warnings: list[str]

    @property
    def samples(self) -> int:
        return sum(self.totals.values())

    @property
    def leak(self) -> bool:
        return bool(self.leaking)

    def as_json(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "group_key": self.group_key,
            "by_key": self.by_key,
            "samples": self.samples,
            "categories": self.totals,
            "groups": self.groups,
            "leak": self.leak,
            "leaking_groups": [{"group": g.group, "categories": g.counts} for g in self.leaking],
            "ungrouped": {
                "samples": sum(self.ungrouped.values()),
                "categories": self.ungrouped,
                "sample_ids": self.ungrouped_ids,
            },
            "by": None
            if self.by_key is None
            else [{"value": value, "categories": counts} for value, counts in self.by],
            "skipped_categories": self.skipped,
            "warnings": self.warnings,
        }


def _leak_order(item: LeakingGroup) -> tuple[int, int, str]:
    c = item.counts
    return (-min(c["training"], c["testing"]), -sum(c.values()), item.group)


def report(tally: Tally, project_id: int, skipped: dict[str, str],
           warnings: list[str]) -> Report:  # fmt: skip
    """The finished report: leaking groups worst first (the smaller side of the split
    largest), ``--by`` values by size, the unset value last."""
    leaking = sorted(
        (LeakingGroup(g, unpack(v)) for g, v in tally.groups.items() if leaks(v)),
        key=_leak_order,
    )
    by = sorted(
        ((value, unpack(v)) for value, v in tally.by.items()),
        key=lambda x: (x[0] is None, -sum(x[1].values()), x[0] or ""),
    )
    return Report(
        project_id=project_id, group_key=tally.group_key, by_key=tally.by_key,
        totals=unpack(tally.totals), groups=len(tally.groups), leaking=leaking,
        ungrouped=unpack(tally.ungrouped), ungrouped_ids=list(tally.ungrouped_ids), by=by,
        skipped=skipped, warnings=warnings,
    )  # fmt: skip


Progress = Callable[[str, int], None]


def _announced(studio: StudioClient, category: str) -> int | None:
    """The service's own count of a category, to notice a project changing under us."""
    try:
        return studio.count(category)
    except PermanentError as exc:
        if isinstance(exc, ProjectNotFound):
            raise
        return None


def run_audit(
    studio: StudioClient, group_key: str, by_key: str | None = None, *,
    page_size: int = PAGE_SIZE, progress: Progress | None = None,
    categories: Iterable[str] = CATEGORIES,
) -> Report:  # fmt: skip
    """List every sample once, category by category, and report.

    A category other than training and testing that the service refuses to list is
    skipped with its reason; anything else the service refuses or fails stops the audit
    (the error propagates: a partial audit must never read as a clean split).
    """
    project_id = studio.check_project()
    tally = Tally(group_key, by_key)
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    for category in categories:
        index = CATEGORIES.index(category)
        seen = 0
        try:
            for sample in studio.list_samples(category, page_size=page_size):
                tally.add(index, sample)
                seen += 1
                if progress is not None and seen % page_size == 0:
                    progress(category, seen)
        except PermanentError as exc:
            if category in REQUIRED or seen or isinstance(exc, ProjectNotFound):
                raise
            skipped[category] = str(exc)
            continue
        announced = _announced(studio, category) if seen else None
        if announced is not None and announced != seen:
            warnings.append(
                f"{category}: {seen} sample(s) listed but the service now counts {announced}:"
                " the project changed during the audit; run it again when it is quiet"
            )
    return report(tally, project_id, skipped, warnings)

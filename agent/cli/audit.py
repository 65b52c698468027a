"""``project audit``: is the project's split safe, and how is its data spread?

    edge-uploader project audit --config FILE [--group-key K] [--by KEY] [--json]
        [--page-size N]

Exit statuses (documented in docs/studio.md): 0 the split is clean; 1 leakage: a group
has samples in both training and testing; 2 usage; 69 the audit could not finish (the
service unreachable through the retries, the key refused, an answer that makes no sense):
nothing is reported, so a failed audit never reads as a clean one; 78 a bad config or
option, or an unknown project.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, TYPE_CHECKING, Any

from ..errors import ConfigError, InputError, RemoteError
from ..metadata import check_key
from ..remote.categories import PAGE_SIZE
from ..text import one_line
from .options import add_config_option, load
from .parser import CONFIG, INTERRUPTED, USAGE, exit_statuses

if TYPE_CHECKING:  # the audit brings the Studio client and httpx: loaded when it runs
    from ..project.audit import Report

EX_UNAVAILABLE = 69
"""sysexits.h: a service is unavailable; here, the audit could not list the project."""
SOURCE = "command line"
SHOWN = 20
NAME_WIDTH = 40
MAX_PAGE_SIZE = 1000


def _key(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return check_key(value, option)
    except InputError as exc:
        raise ConfigError(SOURCE, option, exc.message) from None


def cmd_audit(args: argparse.Namespace) -> int:
    from ..project.audit import run_audit
    from ..remote.studio import StudioClient

    config = load(args, check_dirs=False)
    group_key = _key(args.group_key, "--group-key") or config.ingestion.group_key
    by_key = _key(args.by, "--by")
    studio = StudioClient.from_config(config)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() and not args.json else None
    try:
        found = run_audit(studio, group_key, by_key, page_size=args.page_size,
                          progress=progress)  # fmt: skip
    except RemoteError as exc:
        print(f"edge-uploader: the audit could not finish: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        studio.close()
        if progress is not None:
            progress.done()
    if args.json:
        json.dump(found.as_json(), sys.stdout, ensure_ascii=False, sort_keys=False)
        sys.stdout.write("\n")
    else:
        print_report(found, sys.stdout)
    return 1 if found.leak else 0


class _Progress:
    """``listing training: 12000`` redrawn in place on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.drawn = False

    def __call__(self, category: str, seen: int) -> None:
        self.stream.write(f"\r\x1b[Klisting {category}: {seen}")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# -- the text report -------------------------------------------------------------------------
def _columns(report: Report) -> list[str]:
    """Training and testing always; another category only when the project has some."""
    from ..project.audit import CATEGORIES

    return [c for c in CATEGORIES if c in ("training", "testing") or report.totals[c]]


def _name(value: str | None) -> str:
    return "(unset)" if value is None else one_line(value, NAME_WIDTH) or '""'


def _counts(counts: dict[str, int], columns: list[str]) -> str:
    return ", ".join(f"{c} {counts[c]}" for c in columns if counts[c])


def _table(
    title: str, rows: list[tuple[str, dict[str, int]]], columns: list[str], out: IO[str],
    *, total: bool,
) -> None:  # fmt: skip
    """A short table: at most ``SHOWN`` rows, then ``... and N more``."""
    shown = rows[:SHOWN]
    width = max([len(title), *(len(name) for name, _ in shown)])
    heads = [*columns, "total"] if total else columns
    print("  " + title.ljust(width) + "".join(f"  {h:>10}" for h in heads), file=out)
    for name, counts in shown:
        cells = [counts[c] for c in columns] + ([sum(counts.values())] if total else [])
        print("  " + name.ljust(width) + "".join(f"  {n:>10}" for n in cells), file=out)
    if len(rows) > SHOWN:
        print(f"  ... and {len(rows) - SHOWN} more", file=out)


def print_report(report: Report, out: IO[str]) -> None:
    columns = _columns(report)
    key = json.dumps(report.group_key, ensure_ascii=False)
    print(f"project {report.project_id}: {report.samples} sample(s)"
          f" ({_counts(report.totals, columns) or 'none'})", file=out)  # fmt: skip
    print(f"group key {key}: {report.groups} group(s)", file=out)
    if report.leaking:
        n = sum(g.counts["training"] + g.counts["testing"] for g in report.leaking)
        print(f"\nLEAKAGE: {len(report.leaking)} group(s) have samples in both training and"
              f" testing ({n} sample(s)):", file=out)  # fmt: skip
        rows = [(_name(g.group), g.counts) for g in report.leaking]
        _table(report.group_key, rows, ["training", "testing"], out, total=False)
    _print_ungrouped(report, columns, out)
    if report.by_key is not None:
        print(f"\nby {report.by_key}:", file=out)
        _table(report.by_key, [(_name(v), c) for v, c in report.by], columns, out, total=True)
    for category, reason in report.skipped.items():
        print(f"\nnot listed: {category}: {one_line(reason, 200)}", file=out)
    for warning in report.warnings:
        print(f"\nwarning: {warning}", file=out)
    if report.leaking:
        print(f"\nresult: LEAKAGE in {len(report.leaking)} group(s): the split is not safe",
              file=out)  # fmt: skip
    else:
        print("\nresult: the split is safe: no group has samples in both training and testing",
              file=out)  # fmt: skip


def _print_ungrouped(report: Report, columns: list[str], out: IO[str]) -> None:
    n = sum(report.ungrouped.values())
    if not n:
        print(f"every sample has a value for {report.group_key!r}", file=out)
        return
    ids = ", ".join(str(i) for i in report.ungrouped_ids)
    more = ", ..." if n > len(report.ungrouped_ids) else ""
    counts = _counts(report.ungrouped, columns)
    print(f"\nwithout a group value ({report.group_key!r} missing or empty): {n} sample(s)"
          f" ({counts}), e.g. sample {ids}{more}", file=out)  # fmt: skip


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_PAGE_SIZE}, got {value}")
    return value


def register(sub: Any) -> None:
    """Add ``project audit``."""
    statuses = exit_statuses(
        "0    no group leaks between training and testing",
        "1    leakage found: the groups are listed", USAGE,
        "69   the project could not be read (the service refused or is unreachable)",
        CONFIG, INTERRUPTED,
    )  # fmt: skip
    p = sub.add_parser("project", help="check the project's samples as a whole",
                       description="Check the project's samples as a whole (Studio API).",
                       epilog=statuses)  # fmt: skip
    actions = p.add_subparsers(dest="project_action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "audit",
        help="groups that leak between training and testing; samples per category and site",
        description="List every sample of the project through the Studio API and report the"
        " groups with samples in both training and testing (exit 1), the samples without a"
        " group value, and counts per category for each value of --by.",
        epilog=statuses,
    )
    add_config_option(a)
    a.add_argument("--group-key", metavar="K",
                   help="the metadata key that groups samples (default [ingestion] group_key,"
                   " itself 'session' by default)")  # fmt: skip
    a.add_argument("--by", metavar="KEY",
                   help="also count samples per category for each value of this metadata key"
                   " (for example site)")  # fmt: skip
    a.add_argument("--json", action="store_true", help="one JSON document instead of the text")
    a.add_argument("--page-size", type=_page_size, default=PAGE_SIZE, metavar="N",
                   help=f"samples per listing request (default {PAGE_SIZE})")  # fmt: skip
    a.set_defaults(func=cmd_audit)

"""Commands on the project side: ``metadata backfill`` and ``sync``.

    edge-uploader metadata backfill --config FILE --set KEY=VALUE ... [--set-file JSON]
        [--select ledger|all] [--label L] [--category C] [--filename F]
        [--where KEY=VALUE | KEY!=VALUE | KEY | !KEY] [--dry-run] [--concurrency N]
    edge-uploader sync --config FILE [--dry-run [--json] [--no-remote]]
        [--confirm-deletes | --cancel-deletes]

Exit statuses follow ``cli``: 0 done; 1 something left undone (a failed sample, a
refused key, the service unreachable: the message says which); 78 bad input (a bad key
or value, an unknown project, a missing queue): nothing was changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..config import Config
from ..errors import ConfigError, InputError
from ..metadata import check_key, check_metadata, check_value
from ..store.queue import Queue
from .options import add_config_option, load, open_queue
from .parser import INTERRUPTED, USAGE, exit_statuses

if TYPE_CHECKING:  # the backfill brings the Studio client and httpx: loaded when it runs
    from ..project.backfill import Backfill
    from ..project.backfill import Summary as BackfillSummary

SOURCE = "command line"
MAX_SET_FILE_BYTES = 64 * 1024


# -- argument parsing --------------------------------------------------------------------
def parse_assignment(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(SOURCE, option, f"expected KEY=VALUE, got {text!r}")
    try:
        return check_key(key, f"{option} {key}"), check_value(value, f"{option} {key}")
    except InputError as exc:
        raise ConfigError(SOURCE, option, exc.message) from None


def parse_changes(assignments: list[str], set_file: Path | None) -> dict[str, str]:
    """``--set`` values and ``--set-file`` (a JSON object of strings), validated like any
    metadata; a bad key or a value that is not a string is a ``ConfigError``."""
    changes: dict[str, str] = {}
    if set_file is not None:
        source = str(set_file)
        try:
            with open(set_file, "rb") as handle:
                raw = handle.read(MAX_SET_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_SET_FILE_BYTES:
            raise ConfigError(source, "", f"larger than {MAX_SET_FILE_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(source, "", f"not valid JSON: {exc}") from None
        try:
            changes.update(check_metadata(data, "metadata"))
        except InputError as exc:
            raise ConfigError(source, exc.field, exc.message) from None
    for text in assignments:
        key, value = parse_assignment(text, "--set")
        changes[key] = value
    if not changes:
        raise ConfigError(SOURCE, "--set", "nothing to set: give --set KEY=VALUE or --set-file")
    try:
        check_metadata(changes, "--set")
    except InputError as exc:
        raise ConfigError(SOURCE, exc.field, exc.message) from None
    return changes


def parse_where(items: list[str]) -> tuple[Any, ...]:
    """``KEY=VALUE`` (has the value), ``KEY!=VALUE`` (has not), ``KEY`` (has the key),
    ``!KEY`` (lacks it)."""
    from ..remote.studio import MetaFilter

    out = []
    for text in items:
        if "!=" in text:
            key, _, value = text.partition("!=")
            out.append(MetaFilter(_key(key), "neq", (value,)))
        elif "=" in text:
            key, _, value = text.partition("=")
            out.append(MetaFilter(_key(key), "eq", (value,)))
        elif text.startswith("!"):
            out.append(MetaFilter(_key(text[1:]), "neq"))
        else:
            out.append(MetaFilter(_key(text), "eq"))
    return tuple(out)


def _key(key: str) -> str:
    try:
        return check_key(key, "--where")
    except InputError as exc:
        raise ConfigError(SOURCE, "--where", exc.message) from None


class Progress:
    """One status line: redrawn in place on a terminal, a line every few seconds elsewhere."""

    def __init__(self, stream: IO[str], *, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = time.monotonic()
        self.last = 0.0
        self.text = ""

    def __call__(self, counts: dict[str, int], total: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        done = sum(v for k, v in counts.items() if k != "pending")
        rate = done / max(now - self.started, 1e-6)
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "pending")
        self.text = f"backfill: {done}/{total} ({shown or 'starting'}) {rate:.1f}/s" + (
            f", about {eta / 60:.0f} min left" if eta > 90 else ""
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + self.text + ("\n" if final else ""))
        else:
            self.stream.write(self.text + "\n")
        self.stream.flush()


# -- commands ------------------------------------------------------------------------------
def cmd_backfill(args: argparse.Namespace) -> int:
    from ..project.backfill import Backfill, Plan, Selection
    from ..remote.studio import StudioClient
    from ..store.ledger import Ledger

    config = load(args, check_dirs=False)
    changes = parse_changes(args.set, args.set_file)
    selection = Selection(
        mode=args.select, category=args.category, labels=tuple(args.label),
        filename=args.filename or None, where=parse_where(args.where),
    )  # fmt: skip
    queue = _backfill_queue(config, args)
    studio = StudioClient.from_config(config)
    try:
        plan = Plan(studio.project_id, selection, changes)
        out = sys.stdout
        shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in changes.items())
        print(f"backfill {plan.job_id}: project {plan.project_id}, {selection.describe()};"
              f" set {shown}", file=out)  # fmt: skip
        job = Backfill(studio, Ledger(queue) if queue is not None else None, plan,
                       workers=args.concurrency or config.studio.concurrency, out=out,
                       progress=None if args.dry_run else Progress(sys.stderr))  # fmt: skip
        note = job.ledger_note()
        if note:
            print(note, file=out)
        summary = _dry_run_backfill(job, out) if args.dry_run else _apply_backfill(job, out)
        for problem in summary.problems[:20]:
            print(f"  {problem}", file=out)
        if len(summary.problems) > 20:
            print(f"  ... and {len(summary.problems) - 20} more", file=out)
        if summary.stopped:
            print(f"edge-uploader: stopped: {summary.stopped}", file=sys.stderr)
            if not args.dry_run:
                print("progress is saved: run the same command again to continue",
                      file=sys.stderr)  # fmt: skip
        return summary.exit_code
    finally:
        studio.close()
        if queue is not None:
            queue.close()


def _backfill_queue(config: Config, args: argparse.Namespace) -> Queue | None:
    """The queue file: the ledger selection reads it, and an applied job records its
    progress there (created for a ``--select all`` job on a machine without an agent)."""
    if args.select == "all" and not args.dry_run:
        return open_queue(config, create=True)
    if args.select == "ledger" or config.queue.path.exists():
        return open_queue(config, why="the ledger selection reads this device's queue (run"
                          " the agent first, or use --select all)")  # fmt: skip
    return None


def _dry_run_backfill(job: Backfill, out: IO[str]) -> BackfillSummary:
    summary = job.dry_run()
    c = summary.counts
    print(f"dry run: {c['written']} sample(s) would change, {c['unchanged']} already have the"
          f" values, {c['skipped']} outside the filters, {c['missing']} not in the project,"
          f" {c['failed']} refused; nothing was changed", file=out)  # fmt: skip
    return summary


def _apply_backfill(job: Backfill, out: IO[str]) -> BackfillSummary:
    summary = job.apply()
    if isinstance(job.progress, Progress) and summary.todo:
        job.progress(summary.counts, summary.todo, final=True)
    if summary.earlier:
        earlier = ", ".join(f"{k} {v}" for k, v in summary.earlier.items())
        print(f"earlier runs of this job: {earlier}", file=out)
    c = summary.counts
    print(f"this run: {c['written']} written, {c['unchanged']} already had the values,"
          f" {c['skipped']} outside the filters, {c['missing']} not in the project,"
          f" {c['failed']} failed (of {summary.todo} to do)", file=out)  # fmt: skip
    return summary


def cmd_sync(args: argparse.Namespace) -> int:
    from ..project.deletesync import DeletionSync
    from ..remote.studio import StudioClient

    config = load(args, check_dirs=False)
    if args.confirm_deletes and args.cancel_deletes:
        raise ConfigError(SOURCE, "--confirm-deletes", "give one of --confirm-deletes and"
                          " --cancel-deletes")  # fmt: skip
    queue = open_queue(config, why="sync compares this device's queue")
    studio = None
    try:
        if not (args.cancel_deletes or (args.dry_run and args.no_remote)):
            studio = StudioClient.from_config(config)
        sync = DeletionSync(config, queue, studio)
        if args.cancel_deletes:
            n = sync.ledger.cancel_all(reason="cancelled by the operator (sync --cancel-deletes)")
            sync.run_due()
            print(f"cancelled {n} scheduled remote deletion(s); those samples stay")
            return 0
        if args.confirm_deletes:
            n = sync.ledger.confirm_all()
            print(f"confirmed {n} scheduled remote deletion(s)")
            return _print_pass(sync.run_due(confirmed_now=True))
        if args.dry_run:
            return _dry_run(config, queue, studio, json_lines=args.json)
        if not config.sync.delete_remote:
            print("deletion sync is off ([sync] delete_remote = false): nothing to do;"
                  " `sync --dry-run` shows the drift")  # fmt: skip
            return 0
        sync.reconcile()
        result = sync.run_due()
        return _print_pass(result)
    finally:
        if studio is not None:
            studio.close()
        queue.close()


def _print_pass(result: Any) -> int:
    print(
        f"remote deletions: {result.deleted} deleted, {result.already_gone} already gone,"
        f" {result.kept} kept (file back or renamed), {result.failed} failed,"
        f" {result.postponed} postponed"
    )
    for m in result.messages[:20]:
        print(f"  {m}")
    if result.blocked:
        b = result.blocked
        print(
            f"BLOCKED: {b['pending']} deletion(s) pending, more than max_deletes_per_hour ="
            f" {b['max_deletes_per_hour']}: nothing unconfirmed was deleted. Confirm with:"
            f" {b['confirm']}"
        )
    if result.stopped:
        print(f"edge-uploader: stopped: {result.stopped}", file=sys.stderr)
    return 1 if result.stopped or result.failed or result.blocked else 0


def _dry_run(config: Config, queue: Any, studio: Any, *, json_lines: bool) -> int:
    from ..project.drift import Drift

    drift = Drift(config, queue, studio, workers=config.studio.concurrency)
    sections = (
        ("local files not delivered", drift.not_delivered),
        ("delivered samples whose local file is gone", drift.local_gone),
        ("remote samples whose metadata differs from what the config gives now",
         drift.metadata),
    )  # fmt: skip
    for title, items in sections:
        if title.startswith("remote") and studio is None:
            continue
        if not json_lines:
            print(f"{title}:")
        n = 0
        for item in items():
            n += 1
            if json_lines:
                print(json.dumps(item.as_json(), ensure_ascii=False))
                continue
            sid = f"sample {item.sample_id}  " if item.sample_id is not None else ""
            if item.changes:
                detail = "; ".join(f"{k}: {_q(a)} → {_q(b)}" for k, (a, b) in item.changes.items())
            else:
                detail = item.detail
            print(f"  {sid}{item.path}  {detail}")
        if not json_lines:
            print(f"  ({n})" if n else "  none")
    c = drift.counts
    summary = {
        "kind": "summary", "not_delivered": c.not_delivered, "local_gone": c.local_gone,
        "metadata": c.metadata, "compared": c.compared, "not_compared": c.not_compared,
        "problems": c.errors,
    }  # fmt: skip
    if json_lines:
        print(json.dumps(summary))
    else:
        if studio is not None:
            print(
                f"compared the metadata of {c.compared} sample(s): keys from [metadata], the"
                " watch, sidecars and device_id (captured_at and agent_version are set per"
                " upload and not compared)"
                + (
                    f"; {c.not_compared} from capture commands or uploads not compared"
                    if c.not_compared
                    else ""
                )
            )
        for e in c.errors:
            print(f"note: {e}")
        print("dry run: nothing was changed")
    return 0


def _q(value: str | None) -> str:
    return "(unset)" if value is None else json.dumps(value, ensure_ascii=False)


# -- registration ------------------------------------------------------------------------
_UNDONE = "1    something left undone: a failed sample, a refused key, the service unreachable"
_BAD = "78   bad input (a key or value, an unknown project, a missing queue): nothing changed"


def register(sub: Any) -> None:
    """Add ``metadata backfill`` and ``sync``."""
    p = sub.add_parser(
        "metadata", help="change the metadata of samples already in the project",
        description="Change the metadata of samples already in the project (Studio API).",
        epilog=exit_statuses("0    done", _UNDONE, USAGE, _BAD, INTERRUPTED),
    )  # fmt: skip
    _register_backfill(p.add_subparsers(dest="metadata_action", required=True, metavar="ACTION"))
    _register_sync(sub)


def _register_backfill(actions: Any) -> None:
    from ..remote.categories import LIST_CATEGORIES

    b = actions.add_parser(
        "backfill",
        help="set metadata values on samples this device (or anyone) already uploaded",
        description="Set metadata on existing samples: read each, merge, write the full map."
        " Resumable: run the same command again after an interruption.",
        epilog=exit_statuses("0    done", _UNDONE, USAGE, _BAD, INTERRUPTED),
    )  # fmt: skip
    add_config_option(b)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a value to set (repeat for several keys)")  # fmt: skip
    b.add_argument("--set-file", type=Path, metavar="FILE",
                   help="a JSON object of string values to set")  # fmt: skip
    b.add_argument("--select", choices=("ledger", "all"), default="ledger",
                   help="ledger: the samples this device delivered (default); all: every"
                   " sample of the project that matches the filters")  # fmt: skip
    b.add_argument("--label", action="append", default=[], help="only samples with this label")
    b.add_argument("--category", choices=LIST_CATEGORIES, default="all")
    b.add_argument("--filename", help="only samples whose file name contains this")
    b.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only samples whose metadata matches: KEY=VALUE, KEY!=VALUE, KEY"
                   " (has the key) or !KEY (lacks it)")  # fmt: skip
    b.add_argument("--dry-run", action="store_true",
                   help="list what would change, sample by sample; change nothing")  # fmt: skip
    b.add_argument("--concurrency", type=int, choices=range(1, 33), metavar="N",
                   help="parallel requests (default [studio] concurrency)")  # fmt: skip
    b.set_defaults(func=cmd_backfill)


def _register_sync(sub: Any) -> None:
    s = sub.add_parser(
        "sync", help="the drift between this device and the project; deletion sync",
        description="Without options: one deletion-sync pass (needs [sync] delete_remote ="
        " true). --dry-run lists the drift and changes nothing.",
        epilog=exit_statuses("0    done", _UNDONE + ", deletions blocked by the cap", USAGE,
                             _BAD, INTERRUPTED),
    )  # fmt: skip
    add_config_option(s)
    s.add_argument("--dry-run", action="store_true", help="list the drift; change nothing")
    s.add_argument("--json", action="store_true", help="with --dry-run: one JSON object a line")
    s.add_argument(
        "--no-remote",
        action="store_true",
        help="with --dry-run: do not contact the Studio API (no metadata check)",
    )
    s.add_argument(
        "--confirm-deletes",
        action="store_true",
        help="allow every scheduled remote deletion now, over the cap and grace",
    )
    s.add_argument(
        "--cancel-deletes",
        action="store_true",
        help="cancel every scheduled remote deletion: those samples stay",
    )
    s.set_defaults(func=cmd_sync)

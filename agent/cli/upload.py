"""``edge-uploader upload [--config FILE] [options] PATH...``: a resumable bulk upload.

Options follow the official ``edge-impulse-uploader`` where it has one (``--category``,
``--label``, ``--metadata``, ``--info-file``, ``--allow-duplicates``, ``--concurrency``).
Without ``--config`` the API key comes from ``EI_API_KEY`` (or ``--api-key-file``), the URL
from ``EI_INGESTION_URL`` (or the default) and the queue lives in the per-user state folder.
Secrets are never accepted as arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from ..bulk.inputs import UploadRequest, candidates, info_labels_of, run_config
from ..bulk.tracker import EXIT_AUTH_REFUSED, EXIT_WRONG_URL
from ..config import CONFIG_CATEGORIES, Concurrency, Config
from ..core.files import stat_sample
from ..core.intake import new_file
from ..core.tagger import check_label
from ..errors import ConfigError, InputError
from ..metadata import check_key, check_metadata, check_value, encode_metadata
from ..secrets import SecretSource
from ..store.queue import State
from .options import add_config_option, load
from .parser import CONFIG, INTERRUPTED, USAGE, exit_statuses

SOURCE = "command line"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "upload",
        help="upload files, folders or an info.labels file once (resumable)",
        description="Upload files through the agent's queue: a progress display, a summary, "
        "and re-running the same command continues where it stopped without sending "
        "anything twice.",
        epilog=exit_statuses("0    every file delivered (or, with --dry-run, would be sent)",
                             "1    something was refused, skipped or is still undelivered"
                             " (the service unreachable for --give-up-after seconds)",
                             USAGE,
                             f"{EXIT_WRONG_URL}   wrong URL: the service has no such route",
                             f"{EXIT_AUTH_REFUSED}   authentication refused: the service"
                             " refused the API key",
                             CONFIG, INTERRUPTED),
    )  # fmt: skip
    p.add_argument("paths", nargs="*", metavar="PATH", help="files, folders or glob patterns")
    add_config_option(p, required=False, note="the built-in defaults and the environment")
    p.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="file holding the API key (default: the config's, or $EI_API_KEY)",
    )
    p.add_argument(
        "--info-file",
        type=Path,
        metavar="FILE",
        help="an Edge Impulse info.labels file (JSON or NDJSON): upload what it "
        "lists, with its labels, categories, metadata and bounding boxes",
    )
    _tag_options(p)
    _run_options(p)
    p.set_defaults(func=cmd_upload, parser=p)  # fmt: skip


def _tag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--category",
        choices=CONFIG_CATEGORIES,
        help="training, testing, split, ... (default: the config's, else training)",
    )
    p.add_argument(
        "--label",
        help='label for every file ("" = unlabeled); default: the '
        "service takes it from the file name (idle.01.wav -> idle)",
    )
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE|JSON",
        help="metadata for every file (repeatable): KEY=VALUE, or a JSON object of strings"
        """ as edge-impulse-uploader takes it, e.g. '{"site":"A"}'""",
    )
    p.add_argument(
        "--metadata-json",
        metavar="JSON",
        help="metadata for every file as a JSON"
        """ object of strings, e.g. '{"site":"A"}'""",
    )
    p.add_argument(
        "--category-from-folder",
        action="store_true",
        help="a file below a folder named training, testing or anomaly goes to that category"
        " (edge-impulse-uploader --directory's layout); others get --category",
    )
    p.add_argument(
        "--session",
        metavar="VALUE",
        help="group key value for the whole run ([ingestion] group_key, default 'session')",
    )
    p.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="do not ask the service to refuse files it already has",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        metavar="N|auto",
        help='requests in flight: 1-64, or "auto" to adapt them to the link'
        " (default: the config's, else auto)",
    )
    p.add_argument(
        "--max-bytes-per-second",
        type=int,
        metavar="N",
        help="cap the upload bandwidth (request bodies) at N bytes per second; 0: no cap"
        " (default: [ingestion] max_bytes_per_second, else none)",
    )
    p.add_argument(
        "--no-captured-at",
        dest="captured_at",
        action="store_false",
        help="do not add the derived captured_at metadata; files that then agree on label,"
        " category and metadata share requests (much faster for many small files)",
    )
    p.add_argument(
        "--give-up-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop when the service has been unreachable this long, or nothing at all has"
        " moved this long (default 60); what is left stays queued for the next run; a"
        " refused key or a wrong URL stops at once",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show name, label, category and metadata per file; send and queue nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log every file")


def cmd_upload(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.info_file is not None and args.paths:
        parser.error("give either PATH... or --info-file (which lists the files), not both")
    if args.info_file is None and not args.paths:
        parser.error("name at least one PATH (file, folder or glob), or --info-file")
    if args.category_from_folder and args.info_file is not None:
        parser.error("--category-from-folder reads folders: the info file names each category")
    _use_info_labels(args)
    config = load(args, check_dirs=False)
    if args.api_key_file is not None:
        key = SecretSource("API key", "--api-key-file", file=args.api_key_file.resolve(),
                           config_source=SOURCE)  # fmt: skip
        config = replace(config, ingestion=replace(config.ingestion, api_key=key))
    request = build_request(args)
    config = run_config(config, request)
    if args.dry_run:
        return preview(config, request, sys.stdout)

    from ..bulk.progress import Progress, render_summary, summary_document
    from ..bulk.run import BulkUpload
    from ..daemon.memory import tune_malloc

    tune_malloc()
    progress = Progress(sys.stderr, enabled=not args.no_progress)
    run = BulkUpload(config, request, progress, verbose=args.verbose)
    run.install_signals()
    summary = run.run()
    if args.json:
        print(json.dumps(summary_document(summary), sort_keys=True), flush=True)
    else:
        print(render_summary(summary), flush=True)
    return summary.exit_code


def _use_info_labels(args: argparse.Namespace) -> None:
    """``upload DIR`` with ``DIR/info.labels``: upload what it lists, and say so."""
    found = info_labels_of(tuple(args.paths)) if args.info_file is None else None
    if found is None:
        return
    print(f"using {found}: uploading the files it lists, with their labels, categories and"
          " metadata (as the Edge Impulse SDK does)", file=sys.stderr, flush=True)  # fmt: skip
    args.info_file, args.paths = found, []
    if args.category_from_folder:
        args.parser.error("--category-from-folder reads folders: info.labels names each category")


def build_request(args: argparse.Namespace) -> UploadRequest:
    """Validate the options; a bad value is a ``ConfigError`` naming the option."""
    metadata: dict[str, str] = {}
    if args.metadata_json is not None:
        metadata.update(_json_metadata(args.metadata_json, "--metadata-json"))
    for pair in args.metadata:
        if pair.lstrip().startswith("{"):  # a JSON object, as edge-impulse-uploader takes it
            metadata.update(_json_metadata(pair, "--metadata"))
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(SOURCE, f"--metadata {pair!r}", "expected KEY=VALUE")
        try:
            metadata[check_key(key.strip(), "--metadata")] = check_value(value, "--metadata")
        except InputError as exc:
            raise ConfigError(SOURCE, f"--metadata {pair!r}", exc.message) from None
    try:
        if args.label:
            check_label(args.label, "--label")
        if args.session is not None:
            check_value(args.session, "--session")
        check_metadata(metadata, "--metadata")
    except InputError as exc:
        raise ConfigError(SOURCE, exc.field, exc.message) from None
    concurrency = _concurrency(args.concurrency)
    if args.max_bytes_per_second is not None and not 0 <= args.max_bytes_per_second <= 10**12:
        raise ConfigError(SOURCE, "--max-bytes-per-second", "expected 0 or a positive number")
    if not 0 <= args.give_up_after <= 86400:
        raise ConfigError(SOURCE, "--give-up-after", "expected 0 to 86400 seconds")
    if args.info_file is not None and not args.info_file.is_file():
        raise ConfigError(SOURCE, "--info-file", f"{args.info_file}: no such file")
    return UploadRequest(
        paths=tuple(args.paths),
        info_file=args.info_file.resolve() if args.info_file is not None else None,
        category=args.category,
        label=args.label,
        metadata=metadata,
        session=args.session,
        allow_duplicates=args.allow_duplicates,
        concurrency=concurrency,
        give_up_after=args.give_up_after,
        captured_at=args.captured_at,
        max_bytes_per_second=args.max_bytes_per_second,
        category_from_folder=args.category_from_folder,
    )


def _json_metadata(text: str, option: str) -> dict[str, str]:
    """A JSON object of strings (the metadata wire rules: no other value types)."""
    try:
        return check_metadata(json.loads(text), option)
    except json.JSONDecodeError as exc:
        raise ConfigError(SOURCE, option, f"not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        raise ConfigError(SOURCE, option, f"not valid JSON: {exc}") from None
    except InputError as exc:
        raise ConfigError(SOURCE, exc.field, exc.message) from None


def _concurrency(value: str | None) -> Concurrency | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise ConfigError(SOURCE, "--concurrency", f'expected 1 to 64 or "auto", got {value!r}')
    return n


def preview(config: Config, request: UploadRequest, out: TextIO) -> int:
    """``--dry-run``: what each file would be sent with. Opens no queue, sends nothing."""
    bad = 0
    count = 0

    def refused(what: str, reason: str) -> None:
        nonlocal bad
        bad += 1
        print(f"skipped {what}: {reason}", file=out)

    for item in candidates(request, config, None, refused):
        st = stat_sample(item.path)
        if isinstance(st, str):
            refused(str(item.path), st)
            continue
        f = new_file(item, config, st)
        if f.state is State.HELD:
            refused(f.path, f"would be held: {f.last_error}")
            continue
        count += 1
        label = "(from file name)" if f.label is None else f.label or "(unlabeled)"
        name = f.upload_name or item.path.name
        line = (f"{f.path}  name={name}  label={label}  category={f.category}  "
                f"metadata={encode_metadata(f.metadata)}")  # fmt: skip
        parts = [p["name"] for p in (f.extra or {}).get("parts", [])]
        if parts:
            line += "  parts=" + ",".join(parts)
        print(line, file=out)
    print(f"dry run: {count} file(s) would be uploaded to {config.ingestion.url}"
          f"{f', {bad} skipped' if bad else ''}; nothing was sent or queued", file=out)  # fmt: skip
    return 1 if bad else 0

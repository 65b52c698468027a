"""``edge-uploader check-config [FILE | --config FILE] [--sample PATH]``: validate, and show
what would happen.

Prints the resolved config (secrets only by where they come from, never their value) and,
for ``--sample``, the label, category and metadata the tagger would give that file: the
field engineer's check before deploying a config to a device. Any problem is a config
error: exit status 78, the same the daemon would stop with. FILE may be given either way
(positionally, or with ``--config`` like every other command); without it the config is
found as every command finds it (``config.discover``).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from ..config import Config, IngestionConfig, WatchConfig
from ..core.files import ignored_name, matches
from ..core.sidecar import read_sidecar, sidecar_path
from ..core.tagger import tag
from ..errors import ConfigError, InputError
from ..metadata import encode_metadata
from ..remote.proxy import proxy_for
from ..secrets import SecretSource
from .options import add_config_option, load
from .parser import USAGE, exit_statuses

_SERVICE_LABEL = re.compile(r"[a-zA-Z0-9\s_-]+")
"""How the service infers a label from a file name when no x-label is sent."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config", help="validate a config; show how a sample would be tagged",
        description="Validate a config as the daemon would (every problem at once) and print"
        " what it resolves to, secrets only by where they come from; with --sample, the"
        " label, category and metadata that file would get.",
        epilog=exit_statuses("0    the config is valid", USAGE, "78   the config is invalid, a"
                             " secret cannot be read, or the sample would be held"),
    )  # fmt: skip
    p.add_argument("config_file", type=Path, nargs="?", metavar="FILE",
                   help="the TOML config to check (or give it with --config)")  # fmt: skip
    add_config_option(p)
    p.add_argument("--sample", type=Path, metavar="PATH",
                   help="show the label, category and metadata this file would get")  # fmt: skip
    p.set_defaults(func=cmd_check_config, parser=p)


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.config_file is not None:
        if args.config is not None and args.config != args.config_file:
            args.parser.error("give the config file once: FILE or --config FILE")
        args.config = args.config_file
    config = load(args)
    secret_line = describe_secret(config.ingestion.api_key)
    print(render_config(config, secret_line))
    if args.sample is not None:
        print(render_sample(config, args.sample))
    print("config OK")
    return 0


def describe_secret(source: SecretSource) -> str:
    """Where the secret comes from, after checking it can be read (never its value)."""
    source.load()  # raises SecretError (a ConfigError): exit 78
    if source.file is not None:
        return f"from the file {source.file}"
    if source.env and os.environ.get(source.env, "").strip():
        return f"from the environment variable {source.env}"
    return f"from the systemd credential {source.credential}"


def _concurrency(ing: IngestionConfig) -> str:
    files = ing.max_files_per_request
    shared = f", up to {files} files per request" if files > 1 else ", one file per request"
    if ing.concurrency == "auto":
        return f"auto (1 to {ing.max_concurrency}){shared}"
    return f"{ing.concurrency}{shared}"


def _link_lines(config: Config) -> list[str]:
    """The proxy and the metered-link keys, when any applies."""
    link, lines = config.ingestion.link, []
    proxy = proxy_for(config.ingestion.url)
    if proxy:
        lines.append(f"proxy: {proxy} (from the environment; NO_PROXY does not exempt the URL)")
    if link.max_bytes_per_second:
        lines.append(f"bandwidth cap: {link.max_bytes_per_second} bytes/s")
    if link.upload_windows:
        lines.append("upload windows (local time): " + ", ".join(map(str, link.upload_windows)))
    if link.max_bytes_per_day:
        lines.append(f"data budget: {link.max_bytes_per_day} bytes per local day")
    return lines


def render_config(config: Config, api_key: str) -> str:
    ing = config.ingestion
    lines = [
        f"config: {config.source}",
        f"device: id {config.device_id}, hostname {config.hostname}",
        f"ingestion: {ing.url}  category {ing.category}  concurrency {_concurrency(ing)}  "
        f"group key {ing.group_key}  duplicates {'allowed' if ing.allow_duplicates else 'refused'}",
        f"API key: {api_key}",
        f"queue: {config.queue.path}"
        + ("" if config.queue.path.exists() else " (not created yet)"),
    ]
    lines.extend(_link_lines(config))
    if not config.tagging.captured_at:
        lines.append("tagging: no derived captured_at ([tagging] captured_at = false)")
    if config.metadata:
        lines.append("metadata for every file:")
        lines.extend(f"  {k} = {t.source!r}" for k, t in sorted(config.metadata.items()))
    if not config.watches:
        lines.append("watch folders: none (upload command and capture sources only)")
    for i, w in enumerate(config.watches):
        lines.append(f"watch[{i}]: {w.path}  patterns {' '.join(w.patterns)}  "
                     f"{'recursive' if w.recursive else 'top level only'}  "
                     f"after upload: {w.after_upload}"
                     + (f" to {w.move_to}" if w.move_to else "")
                     + (f"  priority {w.priority}" if w.priority else ""))  # fmt: skip
        if w.label is not None:
            lines.append(f"  label = {w.label.source!r}")
        if w.category:
            lines.append(f"  category = {w.category}")
        lines.extend(f"  metadata {k} = {t.source!r}" for k, t in sorted(w.metadata.items()))
    return "\n".join(lines)


def watch_for(config: Config, path: Path) -> WatchConfig | None:
    """The watch whose folder holds ``path`` (the deepest one)."""
    best: WatchConfig | None = None
    for w in config.watches:
        inside = w.path in path.parents and (w.recursive or path.parent == w.path)
        if inside and (best is None or len(w.path.parts) > len(best.path.parts)):
            best = w
    return best


def render_sample(config: Config, sample: Path) -> str:
    path = Path(os.path.abspath(sample))  # noqa: PTH100 - as named, like the watcher sees it
    watch = watch_for(config, path)
    lines = [f"sample: {path}"]
    if watch is None:
        lines.append("  in no watch folder: tagged as `edge-uploader upload` tags it "
                     "(without options)")  # fmt: skip
    else:
        i = config.watches.index(watch)
        lines.append(f"  watch[{i}] ({watch.path})")
        if ignored_name(path.name) or not matches(path.name, watch.patterns):
            lines.append("  NOTE: the watcher ignores this name (hidden, temporary, or not "
                         "matching the patterns)")  # fmt: skip
    try:
        st = path.stat()
        mtime = st.st_mtime
    except OSError:
        mtime = time.time()
        lines.append("  (the file does not exist here; captured_at uses the current time)")
    try:
        sidecar = read_sidecar(path)
        tagged = tag(path, config, mtime=mtime, watch=watch, sidecar=sidecar)
    except InputError as exc:
        raise ConfigError(str(path), "", f"this file would be held, not sent: {exc}") from None
    if sidecar is not None:
        lines.append(f"  sidecar: {sidecar_path(path)}")
    if tagged.label is None:
        guess = _SERVICE_LABEL.match(path.name.split(".")[0])
        inferred = f" -> {guess.group(0)!r}" if guess else ""
        lines.append(f"  label: none sent; the service infers it from the file name{inferred}")
    elif tagged.label == "":
        lines.append("  label: unlabeled (x-no-label: 1)")
    else:
        lines.append(f"  label: {tagged.label}")
    lines.append(f"  category: {tagged.category}")
    lines.append(f"  metadata: {encode_metadata(tagged.metadata)}")
    return "\n".join(lines)

"""The ``[capture]`` table: the capture folder and its sources (serial sensors, programs).

The capture folder becomes an implicit ``[[watch]]`` (``CaptureConfig.watch``, added by
``load``). ``[[capture.command]]`` argument lists may hold only the declared placeholders
(``ARGV_PLACEHOLDERS``); ``render_arg`` fills them and nothing else.
"""

from __future__ import annotations

import re
import shutil
from functools import partial

from .model import (
    AFTER_UPLOAD,
    CAPTURE_PRIORITY,
    DEFAULT_BAUDRATE,
    DEFAULT_PATTERNS,
    MAX_PRIORITY,
    CaptureConfig,
    CaptureSource,
    CommandSource,
    Sensor,
    SerialSource,
    default,
)
from .table import Table

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
"""Capture source names: they appear in file names and MQTT commands."""
EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,10}\Z")
ARGV_PLACEHOLDERS = ("output", "duration_ms", "duration_s")
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_default = partial(default, CaptureConfig)


def parse_capture(top: Table, *, check_dirs: bool = True) -> CaptureConfig | None:
    if not top.has("capture"):
        return None
    t = top.table("capture")
    directory = t.get_path("dir")
    if directory is None:
        raise t.error("dir", "is required (the folder captures are written to)")
    if check_dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise t.error("dir", f"cannot create {directory}: {exc.strerror or exc}") from None
    sources: dict[str, CaptureSource] = {}
    for st in t.tables("serial"):
        _add(sources, st, _serial(st))
    for ct in t.tables("command"):
        _add(sources, ct, _command(ct, check_dirs))
    after = t.choice("after_upload", _default("after_upload"), AFTER_UPLOAD) or _default(
        "after_upload"
    )
    move_to = t.get_path("move_to")
    if (after == "move") != (move_to is not None):
        raise t.error("move_to", 'is required with, and only with, after_upload = "move"')
    if move_to is not None and (move_to == directory or directory in move_to.parents):
        raise t.error("move_to", f"{move_to} is inside the capture folder; it would loop")
    cfg = CaptureConfig(
        dir=directory,
        sources=sources,
        max_duration_ms=t.get_int("max_duration_ms", _default("max_duration_ms"), 1, 3_600_000),
        include_iat=t.get_bool("include_iat", _default("include_iat")),
        after_upload=after,  # type: ignore[arg-type]
        move_to=move_to,
        priority=t.get_int("priority", CAPTURE_PRIORITY, -MAX_PRIORITY, MAX_PRIORITY),
    )
    t.finish()
    return cfg


def _add(sources: dict[str, CaptureSource], t: Table, source: CaptureSource) -> None:
    if source.name in sources:
        raise t.error("name", f"{source.name!r} names another capture source too")
    sources[source.name] = source


def _name(t: Table) -> str:
    name = t.req_str("name")
    if not NAME_RE.match(name):
        raise t.error("name", "expected 1 to 64 letters, digits, '_' or '-'")
    return name


def _serial(t: Table) -> SerialSource:
    name = _name(t)
    port = t.req_str("port")
    sensors: list[Sensor] = []
    for i, s in enumerate(t.tables("sensors")):
        sname = s.req_str("name")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", sname):
            raise s.error("name", "expected 1 to 64 letters, digits, '_', '.' or '-'")
        units = s.get_str("units") or "N/A"
        if len(units) > 32 or not units.isprintable() or '"' in units:
            raise s.error("units", "expected printable text of at most 32 characters")
        if sname in {x.name for x in sensors}:
            raise s.error("name", f"sensor {sname!r} is listed twice (sensors[{i}])")
        sensors.append(Sensor(sname, units))
        s.finish()
    if not sensors:
        raise t.error("sensors", 'is required: [{ name = "accX", units = "m/s2" }, ...]')
    freq: float | None = None
    if t.data.get("frequency_hz", "auto") == "auto":
        t.seen.add("frequency_hz")
    elif isinstance(t.data["frequency_hz"], str):
        raise t.error("frequency_hz", 'expected a number of Hz or "auto"')
    else:
        freq = t.get_float("frequency_hz", 0.0, 0.001, 100_000.0) or None  # 0.0: refused
    default_timeout = 2.0 if freq is None else max(2.0, 5.0 / freq)
    cfg = SerialSource(
        name=name,
        port=port,
        baudrate=t.get_int("baudrate", DEFAULT_BAUDRATE, 50, 10_000_000),
        sensors=tuple(sensors),
        frequency_hz=freq,
        start_command=_line(t, "start_command"),
        stop_command=_line(t, "stop_command"),
        line_timeout_seconds=t.get_float("line_timeout_seconds", default_timeout, 0.05, 3600.0),
    )
    t.finish()
    return cfg


def _line(t: Table, name: str) -> str | None:
    value = t.get_str(name)
    if value is not None and (not value.isprintable() or len(value) > 256):
        raise t.error(name, "expected one printable line of at most 256 characters")
    return value


def _command(t: Table, check_dirs: bool) -> CommandSource:
    name = _name(t)
    argv = t.str_list("argv", ())
    if not argv:
        raise t.error("argv", 'is required, e.g. ["libcamera-still", "-o", "{output}"]')
    has_output = False
    for i, arg in enumerate(argv):
        fields = argv_fields(arg)
        if fields is None:
            raise t.error(f"argv[{i}]", f"unmatched brace in {arg!r} (write {{{{ or }}}})")
        unknown = fields - set(ARGV_PLACEHOLDERS)
        if unknown:
            known = ", ".join("{" + p + "}" for p in ARGV_PLACEHOLDERS)
            raise t.error(
                f"argv[{i}]", f"unknown placeholder {{{sorted(unknown)[0]}}}; known: {known}"
            )
        has_output = has_output or "output" in fields
    if not has_output:
        raise t.error("argv", "needs an {output} placeholder: where the program writes its file")
    if "{" in argv[0]:
        raise t.error("argv[0]", "the program itself cannot be a placeholder")
    if check_dirs and shutil.which(argv[0]) is None:
        raise t.error("argv[0]", f"{argv[0]!r} is not an executable program (or not on PATH)")
    ext = t.req_str("extension")
    ext = ext if ext.startswith(".") else f".{ext}"
    if not EXT_RE.match(ext):
        raise t.error("extension", f"expected a file extension such as .jpg, got {ext!r}")
    if f"*{ext.lower()}" not in DEFAULT_PATTERNS:
        raise t.error("extension", f"{ext} is not a type the ingestion service accepts")
    cfg = CommandSource(
        name=name,
        argv=argv,
        extension=ext.lower(),
        timeout_seconds=t.get_float(
            "timeout_seconds", default(CommandSource, "timeout_seconds"), 0.1, 86400.0
        ),
    )
    t.finish()
    return cfg


def argv_fields(arg: str) -> set[str] | None:
    """Placeholder names in one argument (None on an unmatched brace)."""
    found: set[str] = set()
    for m in _PLACEHOLDER_RE.finditer(arg):
        if m.group(0) in ("{{", "}}"):
            continue
        if m.group(1) is None:
            return None
        found.add(m.group(1))
    return found


def render_arg(arg: str, values: dict[str, str]) -> str:
    """Fill the declared placeholders of one argument; nothing else is substituted."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values[m.group(1)]

    return _PLACEHOLDER_RE.sub(sub, arg)

"""The ``[mqtt]`` and ``[capture]`` config sections, validated into frozen dataclasses.

Parsed with the shared ``Table`` reader of ``agent.config``, so every error names the
file, the key path and what was expected (exit status 78). The capture folder becomes an
implicit ``[[watch]]`` (see ``capture_watch``): the watcher and the reconciliation scan
then pick captures up like any other file, so a capture interrupted by a crash after its
data file was renamed into place is found again on the next start, tagged by its sidecar.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError
from ..secrets import SecretSource
from .load import DEFAULT_PATTERNS, WatchConfig

if TYPE_CHECKING:
    from .load import Table

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
"""Capture source names: they appear in file names and MQTT commands."""
EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,10}\Z")
ARGV_PLACEHOLDERS = ("output", "duration_ms", "duration_s")
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
MAX_TOPIC_CHARS = 200
DEFAULT_MAX_DURATION_MS = 60_000

Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    client_id: str
    topic_prefix: str
    username: str | None
    password: SecretSource
    tls: TlsConfig | None
    protocol: Protocol = "5"
    keepalive_seconds: int = 60
    heartbeat_seconds: float = 60.0
    reconnect_min_seconds: int = 1
    reconnect_max_seconds: int = 120

    @property
    def capture_topic(self) -> str:
        return f"{self.topic_prefix}/capture"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}/events"

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/status"


@dataclass(frozen=True)
class Sensor:
    name: str
    units: str


@dataclass(frozen=True)
class SerialSource:
    name: str
    port: str
    baudrate: int
    sensors: tuple[Sensor, ...]
    frequency_hz: float | None
    """None means "auto": the interval is measured from the lines' arrival times."""
    start_command: str | None = None
    stop_command: str | None = None
    line_timeout_seconds: float = 2.0
    kind: Literal["serial"] = "serial"

    extension = ".json"


@dataclass(frozen=True)
class CommandSource:
    name: str
    argv: tuple[str, ...]
    extension: str
    timeout_seconds: float
    kind: Literal["command"] = "command"


Source = SerialSource | CommandSource


@dataclass(frozen=True)
class CaptureConfig:
    dir: Path
    sources: dict[str, Source]
    max_duration_ms: int = DEFAULT_MAX_DURATION_MS
    include_iat: bool = True
    after_upload: Literal["keep", "delete", "move"] = "keep"
    move_to: Path | None = None

    @property
    def patterns(self) -> tuple[str, ...]:
        exts = sorted({s.extension.lower() for s in self.sources.values()} | {".json"})
        return tuple(f"*{e}" for e in exts)


def capture_watch(capture: CaptureConfig) -> WatchConfig:
    """The implicit watch of the capture folder (captures are complete when renamed in)."""
    return WatchConfig(
        path=capture.dir,
        patterns=capture.patterns,
        recursive=False,
        after_upload=capture.after_upload,
        move_to=capture.move_to,
        settle_seconds=0.0,
    )


def implicit_watches(
    capture: CaptureConfig | None, watches: tuple[WatchConfig, ...], source: str
) -> tuple[WatchConfig, ...]:
    """``watches`` plus the capture folder's watch; overlapping folders are a config error."""
    if capture is None:
        return watches
    for i, w in enumerate(watches):
        inside = capture.dir == w.path or w.path in capture.dir.parents
        if inside or capture.dir in w.path.parents:
            raise ConfigError(
                source,
                "capture.dir",
                f"{capture.dir} overlaps watch[{i}] ({w.path}); the capture folder is watched"
                " on its own, keep it apart from [[watch]] folders",
            )
    return (*watches, capture_watch(capture))


# -- [mqtt] ------------------------------------------------------------------------------
def parse_mqtt(top: Table, device_id: str, *, check_files: bool = True) -> MqttConfig | None:
    if not top.has("mqtt"):
        return None
    t = top.table("mqtt")
    host = t.req_str("host")
    if any(c.isspace() for c in host) or "/" in host:
        raise t.error("host", f"expected a host name or address, got {host!r}")
    tls: TlsConfig | None = None
    if t.has("tls"):
        tt = t.table("tls")
        tls = TlsConfig(
            ca_file=_readable(tt, "ca_file", check_files),
            cert_file=_readable(tt, "cert_file", check_files),
            key_file=_readable(tt, "key_file", check_files),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise tt.error("key_file", "cert_file and key_file go together (a client certificate)")
        tt.finish()
    port = t.get_int("port", 8883 if tls else 1883, 1, 65535)
    prefix = t.get_str("topic_prefix") or "edge-uploader/{device_id}"
    prefix = prefix.replace("{device_id}", device_id).rstrip("/")
    if not topic_ok(prefix) or not prefix:
        raise t.error("topic_prefix", "expected a topic without +, #, NUL or empty levels")
    client_id = t.get_str("client_id") or device_id
    if len(client_id.encode("utf-8")) > 128:
        raise t.error("client_id", "expected at most 128 bytes")
    password_file = t.get_path("password_file")
    username = t.get_str("username")
    if password_file is not None and username is None:
        raise t.error("password_file", "needs a username (set [mqtt] username)")
    protocol = t.choice("protocol", "5", ("5", "3.1.1")) or "5"
    keepalive = t.get_int("keepalive_seconds", 60, 5, 3600)
    rmin = t.get_int("reconnect_min_seconds", 1, 1, 3600)
    rmax = t.get_int("reconnect_max_seconds", 120, 1, 86400)
    if rmax < rmin:
        raise t.error("reconnect_max_seconds", "must be at least reconnect_min_seconds")
    cfg = MqttConfig(
        host=host,
        port=port,
        client_id=client_id,
        topic_prefix=prefix,
        username=username,
        password=SecretSource(
            "MQTT password",
            t.key("password_file"),
            file=password_file,
            env="EI_MQTT_PASSWORD",
            credential="mqtt_password",
            config_source=t.source,
        ),
        tls=tls,
        protocol=protocol,  # type: ignore[arg-type]
        keepalive_seconds=keepalive,
        heartbeat_seconds=t.get_float("heartbeat_seconds", 60.0, 1.0, 86400.0),
        reconnect_min_seconds=rmin,
        reconnect_max_seconds=rmax,
    )
    t.finish()
    return cfg


def topic_ok(topic: str) -> bool:
    """A topic name we may publish to: no wildcards, NUL, empty levels; bounded length."""
    return (
        0 < len(topic) <= MAX_TOPIC_CHARS
        and not any(c in topic for c in "+#\x00")
        and "" not in topic.split("/")
        and topic.isprintable()
    )


def _readable(t: Table, name: str, check: bool) -> Path | None:
    path = t.get_path(name)
    if check and path is not None and not os.access(path, os.R_OK):
        raise t.error(name, f"{path} is not a readable file")
    return path


# -- [capture] ---------------------------------------------------------------------------
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
    sources: dict[str, Source] = {}
    for st in t.tables("serial"):
        _add(sources, st, _serial(st))
    for ct in t.tables("command"):
        _add(sources, ct, _command(ct, check_dirs))
    after = t.choice("after_upload", "keep", ("keep", "delete", "move")) or "keep"
    move_to = t.get_path("move_to")
    if (after == "move") != (move_to is not None):
        raise t.error("move_to", 'is required with, and only with, after_upload = "move"')
    if move_to is not None and (move_to == directory or directory in move_to.parents):
        raise t.error("move_to", f"{move_to} is inside the capture folder; it would loop")
    cfg = CaptureConfig(
        dir=directory,
        sources=sources,
        max_duration_ms=t.get_int("max_duration_ms", DEFAULT_MAX_DURATION_MS, 1, 3_600_000),
        include_iat=t.get_bool("include_iat", True),
        after_upload=after,  # type: ignore[arg-type]
        move_to=move_to,
    )
    t.finish()
    return cfg


def _add(sources: dict[str, Source], t: Table, source: Source) -> None:
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
        freq = t.get_float("frequency_hz", 0.0, 0.001, 100_000.0)
    default_timeout = 2.0 if freq is None else max(2.0, 5.0 / freq)
    cfg = SerialSource(
        name=name,
        port=port,
        baudrate=t.get_int("baudrate", 115200, 50, 10_000_000),
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
        timeout_seconds=t.get_float("timeout_seconds", 60.0, 0.1, 86400.0),
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

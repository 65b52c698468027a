"""Serial sensors: read lines of numbers for a while, measure the rate, build a signed sample.

The device speaks like the Edge Impulse data forwarder expects: one reading per line,
values separated by commas, tabs or spaces (see the ingestion reference §9). The port is
opened per capture, exclusively, and its input buffer flushed, so stale lines do not
distort the timing; the first line after opening may be cut and is dropped.

The interval is *measured*: every line is stamped with the monotonic time its bytes were
read, and the least-squares slope of time against line number gives ``interval_ms``
(robust to scheduling jitter at both ends). With ``frequency_hz`` configured, the
declared rate is used instead, and a sensor that sends more than 20 % off it fails
the capture rather than produce a sample with a wrong time base.

Strict by design: a line that is not all numbers, a wrong column count, a silent sensor,
or a port that vanishes mid-capture raise ``CaptureError`` naming the port and the line,
and nothing is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import serial

from ..config import Sensor, SerialSource
from ..errors import CaptureError
from ..secrets import Secret

MAX_LINE_BYTES = 4096
READ_TIMEOUT_SECONDS = 0.05
FREQUENCY_TOLERANCE = 0.2
DEVICE_TYPE = "EDGE_UPLOADER"
_SPLIT = re.compile(rb"[,\t ]+")
_NUMBER = re.compile(rb"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")
_INT = re.compile(rb"[-+]?\d{1,15}\Z")
PLACEHOLDER = "0" * 64

Value = int | float
PortOpener = Callable[[SerialSource], Any]


@dataclass(frozen=True)
class Reading:
    values: list[list[Value]]
    interval_ms: float
    measured_hz: float


def open_port(source: SerialSource) -> Any:
    """Open the port exclusively (a second reader would steal lines); errors name it."""
    try:
        port = serial.Serial(
            source.port, source.baudrate, timeout=READ_TIMEOUT_SECONDS, exclusive=True
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "lock" in reason.lower():
            reason = "the port is busy (another program or capture holds it)"
        raise CaptureError(f"cannot open {source.port}: {reason}") from None
    return port


def parse_line(line: bytes, columns: int, number: int) -> list[Value]:
    """One line of numbers; ``CaptureError`` names the line on garbage or a wrong width."""
    shown = line[:60].decode("ascii", "replace")
    if line.startswith(b"ERR"):
        raise CaptureError(f"line {number}: the device reported an error: {shown!r}")
    fields = [f for f in _SPLIT.split(line) if f]
    values: list[Value] = []
    for f in fields:
        if not _NUMBER.match(f):
            raise CaptureError(f"line {number}: {shown!r} is not a list of numbers")
        values.append(int(f) if _INT.match(f) else float(f))
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise CaptureError(f"line {number}: {shown!r} has a value out of range")
    if len(values) != columns:
        raise CaptureError(
            f"line {number}: {len(values)} value(s), expected {columns} (one per sensor)"
        )
    return values


def slope(times: Sequence[float]) -> float:
    """Least-squares seconds per line of arrival times against line number."""
    n = len(times)
    mean_i = (n - 1) / 2
    mean_t = math.fsum(times) / n
    num = math.fsum((i - mean_i) * (t - mean_t) for i, t in enumerate(times))
    den = math.fsum((i - mean_i) ** 2 for i in range(n))
    return num / den


def read_serial(
    source: SerialSource,
    duration_ms: int,
    cancel: threading.Event,
    *,
    opener: PortOpener = open_port,
) -> Reading:
    """Read ``duration_ms`` of lines from ``source``; raise ``CaptureError`` on any problem."""
    port = opener(source)
    try:
        port.reset_input_buffer()
        if source.start_command:
            port.write(source.start_command.encode("utf-8") + b"\n")
        return _collect(port, source, duration_ms / 1000.0, cancel)
    except (serial.SerialException, OSError) as exc:
        raise CaptureError(f"{source.port} failed during the capture (unplugged?): {exc}") from None
    finally:
        if source.stop_command:
            try:
                port.write(source.stop_command.encode("utf-8") + b"\n")
            except (serial.SerialException, OSError):
                pass
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass


def _collect(port: Any, source: SerialSource, duration: float, cancel: threading.Event) -> Reading:
    columns = len(source.sensors)
    buf = bytearray()
    values: list[list[Value]] = []
    times: list[float] = []
    first_dropped = False
    number = 0
    started = time.monotonic()
    last_line = started
    t0: float | None = None
    while True:
        if cancel.is_set():
            raise CaptureError("capture cancelled: the agent is stopping")
        chunk = port.read(max(1, port.in_waiting))
        now = time.monotonic()
        if chunk:
            buf.extend(chunk)
            while (nl := buf.find(b"\n")) >= 0:
                line = bytes(buf[:nl]).strip()
                del buf[: nl + 1]
                if not first_dropped:
                    first_dropped = True  # may be the tail of a line sent before we opened
                    continue
                if not line:
                    continue
                number += 1
                last_line = now
                if t0 is None:
                    t0 = now
                elif now - t0 >= duration:
                    return _reading(values, times, source, duration)
                values.append(parse_line(line, columns, number))
                times.append(now)
            if len(buf) > MAX_LINE_BYTES:
                raise CaptureError(
                    f"{source.port}: no line break in {MAX_LINE_BYTES} bytes (wrong baud rate?)"
                )
        if t0 is not None and now - t0 >= duration:
            return _reading(values, times, source, duration)
        if now - last_line > source.line_timeout_seconds:
            raise CaptureError(
                f"no data from {source.port} for {source.line_timeout_seconds:g} s"
                f" (is the sensor sending at {source.baudrate} baud?)"
            )


def _reading(
    values: list[list[Value]], times: list[float], source: SerialSource, duration: float
) -> Reading:
    if len(values) < 2:
        raise CaptureError(f"only {len(values)} line(s) from {source.port} in {duration:g} s")
    measured = slope(times) * 1000.0
    if measured <= 0:
        raise CaptureError(f"{source.port}: lines arrived too fast to time")
    measured_hz = 1000.0 / measured
    interval = measured
    if source.frequency_hz is not None:
        interval = 1000.0 / source.frequency_hz
        if abs(measured_hz - source.frequency_hz) > FREQUENCY_TOLERANCE * source.frequency_hz:
            raise CaptureError(
                f"{source.port} sends at {measured_hz:.3g} Hz but frequency_hz is"
                f' {source.frequency_hz:g} (set frequency_hz = "auto" or fix the sensor)'
            )
    return Reading(values, round(interval, 6), round(measured_hz, 3))


def acquisition_bytes(
    *,
    device_name: str,
    interval_ms: float,
    sensors: Sequence[Sensor],
    values: list[list[Value]],
    hmac_key: Secret | None,
    iat: int | None,
) -> bytes:
    """A data-acquisition JSON document, signed per the ingestion reference §7.

    The message is serialized once with a 64-zero signature; the HMAC-SHA256 of those exact
    bytes (key as UTF-8) replaces the zeros, which keeps every other byte the same.
    """
    protected: dict[str, Any] = {"ver": "v1", "alg": "HS256" if hmac_key else "none"}
    if iat is not None:
        protected["iat"] = iat
    doc = {
        "protected": protected,
        "signature": PLACEHOLDER,
        "payload": {
            "device_name": device_name,
            "device_type": DEVICE_TYPE,
            "interval_ms": interval_ms,
            "sensors": [{"name": s.name, "units": s.units} for s in sensors],
            "values": values,
        },
    }
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if hmac_key is None:
        return raw
    digest = hmac.new(hmac_key.reveal().encode("utf-8"), raw, hashlib.sha256).hexdigest()
    marker = b'"signature":"' + PLACEHOLDER.encode("ascii") + b'"'
    at = raw.index(marker)
    return raw[:at] + b'"signature":"' + digest.encode("ascii") + b'"' + raw[at + len(marker) :]

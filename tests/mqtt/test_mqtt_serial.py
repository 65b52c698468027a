"""Serial capture against a real pty with a simulated 100 Hz sensor."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading

import pytest

from edge_uploader.config import Sensor as SensorSpec
from edge_uploader.config import SerialSource
from edge_uploader.errors import CaptureError
from edge_uploader.secrets import Secret
from edge_uploader.sources.serial import acquisition_bytes, parse_line, read_serial, slope

from .harness import Sensor

AXES = (SensorSpec("accX", "m/s2"), SensorSpec("accY", "m/s2"), SensorSpec("accZ", "m/s2"))


def source(path: str, **kw: object) -> SerialSource:
    args: dict[str, object] = {
        "name": "accel",
        "port": path,
        "baudrate": 115200,
        "sensors": AXES,
        "frequency_hz": None,
    }
    args.update(kw)
    return SerialSource(**args)  # type: ignore[arg-type]


def test_reads_100hz_and_measures_interval_within_5_percent(sensor: Sensor) -> None:
    reading = read_serial(source(sensor.path), 1000, threading.Event())
    assert 95 <= len(reading.values) <= 105
    assert all(len(row) == 3 for row in reading.values)
    assert abs(reading.interval_ms - 10.0) / 10.0 < 0.05
    assert abs(reading.measured_hz - 100.0) < 5


def test_declared_frequency_is_used_and_checked(sensor: Sensor) -> None:
    reading = read_serial(source(sensor.path, frequency_hz=100.0), 300, threading.Event())
    assert reading.interval_ms == 10.0
    with pytest.raises(CaptureError, match=r"sends at .* but frequency_hz is 50"):
        read_serial(source(sensor.path, frequency_hz=50.0), 300, threading.Event())


def test_garbage_line_fails_with_the_line(sensor: Sensor) -> None:
    sensor.line = lambda i: b"hello world\n" if i % 20 == 0 else Sensor.good_line(i)
    with pytest.raises(CaptureError, match=r"line \d+: 'hello world' is not a list of numbers"):
        read_serial(source(sensor.path), 1000, threading.Event())


def test_wrong_column_count_fails(sensor: Sensor) -> None:
    sensor.line = lambda i: b"1,2\n"
    with pytest.raises(CaptureError, match=r"2 value\(s\), expected 3"):
        read_serial(source(sensor.path), 500, threading.Event())


def test_missing_port_fails_clearly(tmp_path: object) -> None:
    with pytest.raises(CaptureError, match="cannot open /dev/does-not-exist"):
        read_serial(source("/dev/does-not-exist"), 500, threading.Event())


def test_unplugged_mid_capture_fails(sensor: Sensor) -> None:
    timer = threading.Timer(0.3, sensor.unplug)
    timer.start()
    with pytest.raises(CaptureError, match=r"failed during the capture|no data from"):
        read_serial(source(sensor.path, line_timeout_seconds=1.0), 3000, threading.Event())
    timer.join()


def test_silent_sensor_times_out(sensor: Sensor) -> None:
    sensor.line = lambda i: b""
    with pytest.raises(CaptureError, match="no data from"):
        read_serial(source(sensor.path, line_timeout_seconds=0.3), 2000, threading.Event())


def test_cancel_stops_a_capture(sensor: Sensor) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(CaptureError, match="cancelled"):
        read_serial(source(sensor.path), 5000, cancel)


def test_port_is_exclusive(sensor: Sensor) -> None:
    results: list[object] = []
    first = threading.Thread(
        target=lambda: results.append(read_serial(source(sensor.path), 800, threading.Event()))
    )
    first.start()
    threading.Event().wait(0.2)
    with pytest.raises(CaptureError, match="busy"):
        read_serial(source(sensor.path), 200, threading.Event())
    first.join()
    assert results


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"1,2,3", [1, 2, 3]), (b"1.5\t-2e3 +.25", [1.5, -2000.0, 0.25]), (b" 0, 0 ,0 ", [0, 0, 0])],
)
def test_parse_line(line: bytes, expected: list[float]) -> None:
    assert parse_line(line.strip(), 3, 1) == expected


@pytest.mark.parametrize("line", [b"1,2,nan", b"1,2,inf", b"1,,x", b"ERR sensor", b"0x10,1,2"])
def test_parse_line_refuses(line: bytes) -> None:
    with pytest.raises(CaptureError):
        parse_line(line, 3, 7)


def test_slope_is_exact_on_a_regular_series() -> None:
    assert slope([0.0, 0.01, 0.02, 0.03]) == pytest.approx(0.01)


def test_signature_verifies_like_the_service_does() -> None:
    raw = acquisition_bytes(
        device_name="pi-0042",
        interval_ms=10.0,
        sensors=AXES,
        values=[[1, 2, 3], [4.5, 5, 6]],
        hmac_key=Secret("k3y"),
        iat=1700000000,
    )
    doc = json.loads(raw)
    assert doc["protected"] == {"ver": "v1", "alg": "HS256", "iat": 1700000000}
    assert doc["payload"]["device_name"] == "pi-0042"
    assert doc["payload"]["sensors"][0] == {"name": "accX", "units": "m/s2"}
    sig = doc["signature"]
    assert re.fullmatch(r"[0-9a-f]{64}", sig)
    zeroed = raw.replace(sig.encode(), b"0" * 64)
    assert hmac.new(b"k3y", zeroed, hashlib.sha256).hexdigest() == sig


def test_unsigned_without_a_key() -> None:
    raw = acquisition_bytes(
        device_name="d", interval_ms=10.0, sensors=AXES[:1], values=[[1]], hmac_key=None, iat=None
    )
    doc = json.loads(raw)
    assert doc["protected"] == {"ver": "v1", "alg": "none"}
    assert doc["signature"] == "0" * 64

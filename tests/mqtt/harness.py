"""Helpers for the MQTT capture tests: a real Mosquitto, a pty "sensor", a test client.

Brokers run as child processes on a free loopback port, with every file they read in the
test's own folder. Mosquitto started as root drops to user ``mosquitto`` unless its config
says otherwise, so the configs name the current user (``user root`` under root; ignored
for anyone else) and no chown is needed.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import pty
import shutil
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_uploader.config import load_config
from edge_uploader.daemon.lifecycle import Daemon

API_KEY = "ei_mqtt_test_key"
HMAC_KEY = "hmac-test-secret"
DEVICE = "pi-0042"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
NO_MOSQUITTO = "the mosquitto broker binary is not installed (apt-get install mosquitto)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (returns its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- Mosquitto ---------------------------------------------------------------------------
class Broker:
    """One Mosquitto process; ``restart`` keeps the port and config."""

    def __init__(self, folder: Path, port: int, extra: str = "", tls: bool = False) -> None:
        assert MOSQUITTO is not None
        self.folder = folder
        self.port = port
        self.tls = tls
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.conf.write_text(
            f"user {getpass.getuser()}\nper_listener_settings true\n"
            f"listener {port} 127.0.0.1\npersistence false\nset_tcp_nodelay true\n"
            f"log_dest file {self.log}\nlog_type all\n{extra}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err} {self.log_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start listening")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class TlsFiles:
    folder: Path
    ca: Path
    passwords: dict[str, str]


def make_tls_files(folder: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost, a password file and an ACL."""

    def run(*argv: str) -> None:
        subprocess.run(argv, cwd=folder, check=True, capture_output=True)

    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edge-uploader-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        f"/CN={DEVICE}",
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
    )
    passwords = {DEVICE: "device-pass-1", "operator": "operator-pass-1"}
    (folder / "passwd").write_text("")
    for user, pw in passwords.items():
        run("mosquitto_passwd", "-b", "passwd", user, pw)
    (folder / "acl").write_text(
        f"user {DEVICE}\ntopic read edge-uploader/{DEVICE}/capture\n"
        f"topic write edge-uploader/{DEVICE}/events\ntopic write edge-uploader/{DEVICE}/status\n"
        f"topic write replies/#\n\n"
        "user operator\ntopic write edge-uploader/+/capture\ntopic read edge-uploader/#\n"
        "topic read replies/#\n"
    )
    return TlsFiles(folder, folder / "ca.crt", passwords)


# -- an MQTT client for the test side ----------------------------------------------------
class Observer:
    """A paho client that records every message on its subscriptions."""

    def __init__(
        self,
        port: int,
        *,
        tls: TlsFiles | None = None,
        user: str | None = None,
        protocol: int = mqtt.MQTTv5,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition(threading.RLock())
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"observer-{time.monotonic_ns()}",
            protocol=protocol,
        )
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca))
        if user is not None:
            assert tls is not None
            self.client.username_pw_set(user, tls.passwords[user])
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.socket().setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5), "subscription not acknowledged"

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        self.client.publish(topic, payload, qos=1, **kw).wait_for_publish(5)

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(m.payload) for m in self.messages if m.topic == topic]

    def json_on_prefix(self, prefix: str, suffix: str) -> list[dict[str, Any]]:
        """Every JSON payload on a topic starting with ``prefix`` and ending with ``suffix``."""
        with self.cond:
            return [json.loads(m.payload) for m in self.messages
                    if m.topic.startswith(prefix) and m.topic.endswith(suffix)]  # fmt: skip

    def events(
        self, command_id: str | None = None, topic: str | None = None
    ) -> list[dict[str, Any]]:
        topic = topic or f"edge-uploader/{DEVICE}/events"
        return [e for e in self.json_on(topic) if command_id is None or e.get("id") == command_id]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        """Wait (on message arrival, not a timer) until ``predicate`` is truthy."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self.cond.wait(left)
            return value

    def wait_event(
        self, command_id: str, names: tuple[str, ...], timeout: float = 15.0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events(command_id) if e["event"] in names), None)

        return self.wait_for(found, timeout, f"event {names} for {command_id}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- a serial sensor on a pty ------------------------------------------------------------
class Sensor:
    """A simulated 3-axis accelerometer writing lines at ``hz`` into a pty.

    Lines are scheduled on absolute deadlines, so the true interval is exactly 1/hz.
    Writes are non-blocking: while nobody reads, lines are dropped, like a real UART.
    """

    def __init__(self, hz: float = 100.0) -> None:
        self.hz = hz
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.line: Callable[[int], bytes] = self.good_line
        self._stop = threading.Event()
        self.unplugged = False
        self.received = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def good_line(i: int) -> bytes:
        t = i / 100
        return f"{math.sin(t):.4f},{math.cos(t):.4f}\t{9.81 + i % 7 / 100:.3f}\r\n".encode()

    def _run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            i += 1
            delay = start + i / self.hz - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.master, self.line(i))
            with contextlib.suppress(BlockingIOError, OSError):
                self.received.extend(os.read(self.master, 4096))  # start/stop commands

    def unplug(self) -> None:
        """Like pulling the USB cable: the port goes away under the reader."""
        self._stop.set()
        self.thread.join()
        os.close(self.master)
        self.unplugged = True

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        if not self.unplugged:
            os.close(self.master)
        os.close(self.slave)


# -- the local ingestion server and the agent ---------------------------------------------
WRITER = (
    "import sys, os, time; out, ms = sys.argv[1], int(sys.argv[2]);"
    " open(out, 'wb').write(b'\\x89PNG fake ' + os.urandom(32) + str(ms).encode())"
)


def agent_toml(
    tmp_path: Path,
    *,
    mqtt_port: int | None,
    ingestion_url: str,
    sensor_path: str | None,
    mqtt_extra: str = "",
    hmac: bool = True,
) -> str:
    (tmp_path / "api-key").write_text(API_KEY + "\n")
    (tmp_path / "hmac-key").write_text(HMAC_KEY + "\n")
    parts = [
        f'[device]\nid = "{DEVICE}"\n',
        '[metadata]\nsite = "lab-3"\nlocation = "bench-2"\n',
        f'[ingestion]\nurl = "{ingestion_url}"\napi_key_file = "api-key"\n'
        + ('hmac_key_file = "hmac-key"\n' if hmac else "")
        + "retry_base_seconds = 0.05\nretry_max_seconds = 0.3\nconcurrency = 2\n",
        '[queue]\npath = "state/queue.db"\nscan_interval_seconds = 60\n',
    ]
    if mqtt_port is not None:
        parts.append(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nheartbeat_seconds = 30\n'
            f"reconnect_min_seconds = 1\nreconnect_max_seconds = 2\n{mqtt_extra}"
        )
    parts.append('[capture]\ndir = "captures"\nmax_duration_ms = 10000\n')
    if sensor_path is not None:
        parts.append(
            f'[[capture.serial]]\nname = "accel"\nport = "{sensor_path}"\nbaudrate = 115200\n'
            'frequency_hz = "auto"\nstart_command = "START"\nstop_command = "STOP"\n'
            'sensors = [{ name = "accX", units = "m/s2" },'
            ' { name = "accY", units = "m/s2" }, { name = "accZ", units = "m/s2" }]\n'
        )
    parts.append(
        f'[[capture.command]]\nname = "snap"\nargv = [{json.dumps(sys.executable)}, "-c", '
        f'{json.dumps(WRITER)}, "{{output}}", "{{duration_ms}}"]\nextension = ".png"\n'
        "timeout_seconds = 10\n"
    )
    return "\n".join(parts)


@dataclass
class AgentRun:
    config_path: Path
    service: Daemon | None = None
    log: list[str] = field(default_factory=list)

    def start(self) -> Daemon:
        self.service = Daemon(load_config(self.config_path))
        self.service.start()
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


def command(cid: str, source: str = "accel", duration_ms: int = 1000, **kw: Any) -> bytes:
    return json.dumps({"id": cid, "source": source, "duration_ms": duration_ms, **kw}).encode()

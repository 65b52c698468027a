"""Known secrets never show: a scenario with an API key, an HMAC key and an MQTT password,
run with debug logging against the local ingestion server, including a wrong key and
config errors; every log line, status output, notification, health page and the agent's
``/proc/<pid>/cmdline`` is searched for them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer
from tests.mqtt.harness import MOSQUITTO, Broker

from .conftest import (
    API_KEY,
    REPO,
    Agent,
    NotifySocket,
    free_port,
    http_get,
    wait_for,
    write_config,
)

HMAC_KEY = "hmac-S3CRET-7f3a9c1e5b"
MQTT_PASSWORD = "mqtt-S3CRET-pa55w0rd-42"
SECRETS = (API_KEY, HMAC_KEY, MQTT_PASSWORD)


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "edge_uploader", "--log-level", "debug", *args],
                            capture_output=True, text=True, timeout=60, cwd=REPO,
                            env=env)  # fmt: skip
    return result.stdout + result.stderr


def _assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"
        assert secret[:12] not in text, f"part of a secret leaked into {where}"


@pytest.fixture
def request_cleanup():
    done: list = []
    yield done
    for stop in done:
        stop()


def test_no_secret_in_logs_status_notifications_or_cmdline(
    tmp_path: Path, server: LocalIngestionServer, notify_socket: NotifySocket, agents: list[Agent],
    request_cleanup: list,
) -> None:  # fmt: skip
    if MOSQUITTO is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto is not installed: the MQTT password would not be used")
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    passwd = broker_dir / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "device01", MQTT_PASSWORD],
                   check=True, capture_output=True)  # fmt: skip
    broker = Broker(broker_dir, free_port(), f"allow_anonymous false\npassword_file {passwd}\n")
    broker.start()
    request_cleanup.append(broker.stop)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "api_key").write_text(API_KEY + "\n")
    (creds / "mqtt_password").write_text(MQTT_PASSWORD + "\n")
    (tmp_path / "hmac_key").write_text(HMAC_KEY + "\n")
    (tmp_path / "hmac_key").chmod(0o600)
    port = free_port()
    mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = "device01"\n'
    config = write_config(tmp_path, server.url, f'[http]\nlisten = "127.0.0.1:{port}"\n' + mqtt)
    text = config.read_text().replace('api_key_file = "api_key"', 'hmac_key_file = "hmac_key"')
    config.write_text(text)
    (tmp_path / "api_key").unlink()  # the API key comes from the credential only
    env = {"CREDENTIALS_DIRECTORY": str(creds), "NOTIFY_SOCKET": notify_socket.name,
           "WATCHDOG_USEC": "1000000"}  # fmt: skip
    outputs: dict[str, str] = {}

    agent = Agent(config, env=env, level="debug")
    agents.append(agent)
    notify_socket.wait("READY", "1")
    outputs["cmdline"] = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes().decode()
    outputs["argv"] = " ".join(agent.argv)
    for i in range(3):
        (tmp_path / "captures" / f"s{i}.csv").write_text(f"t,v\n0,{i}\n")
    wait_for(lambda: len(server.index_lines()) == 3)
    # the password was really used: the broker let the device in
    wait_for(lambda: "as device01" in broker.log_text() or "u'device01'" in broker.log_text())
    outputs["healthz"] = http_get(f"http://127.0.0.1:{port}/healthz")[1]
    outputs["metrics"] = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    outputs["status"] = _cli("status", "--config", str(config))
    outputs["status --json"] = _cli("status", "--json", "--config", str(config))
    assert '"delivered": 3' in outputs["status --json"]
    assert agent.stop() == 0
    outputs["log"] = agent.log

    # the service refuses the key: uploads pause and say so, without the key
    old_url = server.url
    server.stop()
    other = LocalIngestionServer(tmp_path / "server2", api_keys=["ei_some_other_key"],
                                 quiet=True).start()  # fmt: skip
    try:
        config.write_text(config.read_text().replace(old_url, other.url))
        wrong = Agent(config, env=env, level="debug")
        agents.append(wrong)
        (tmp_path / "captures" / "refused.csv").write_text("t,v\n0,9\n")
        wait_for(lambda: "uploads paused" in wrong.log)
        outputs["paused status"] = _cli("status", "--config", str(config))
        assert "UPLOADS PAUSED: HTTP 401" in outputs["paused status"]
        assert wrong.stop() == 0
        outputs["paused log"] = wrong.log
    finally:
        other.stop()

    # config errors around the secrets: named by file and key, never by content
    config.write_text(text.replace('hmac_key_file = "hmac_key"', 'hmac_key_file = "."'))
    outputs["unreadable hmac"] = _cli("run", "--config", str(config), env=env)
    assert "hmac_key_file" in outputs["unreadable hmac"]
    outputs["no api key"] = _cli("run", "--config", str(config))
    assert "no API key" in outputs["no api key"]

    notify_socket.flush()
    outputs["notifications"] = "\n".join(str(f) for _, f in notify_socket.messages)
    assert "STATUS" in outputs["notifications"]
    for where, text_out in outputs.items():
        _assert_clean(where, text_out)

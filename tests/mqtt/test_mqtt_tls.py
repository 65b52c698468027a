"""A TLS broker with passwords and a topic ACL: right credentials work, wrong ones back off."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .harness import DEVICE, AgentRun, Broker, Observer, TlsFiles, command, wait_until

pytestmark = pytest.mark.mqtt

PREFIX = f"edge-uploader/{DEVICE}"


def tls_extra(tmp_path: Path, files: TlsFiles, password: str) -> str:
    (tmp_path / "mqtt-pass").write_text(password + "\n")
    return (
        f'username = "{DEVICE}"\npassword_file = "mqtt-pass"\n[mqtt.tls]\nca_file = "{files.ca}"\n'
    )


def test_tls_with_own_credentials_and_acl(
    tls_broker: tuple[Broker, TlsFiles],
    ingestion: LocalIngestionServer,
    tmp_path: Path,
    make_agent: Callable[..., AgentRun],
) -> None:
    broker, files = tls_broker
    extra = tls_extra(tmp_path, files, files.passwords[DEVICE])
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None, mqtt_extra=extra
    )
    agent.start()
    operator = Observer(broker.port, tls=files, user="operator")
    operator.subscribe(f"{PREFIX}/#")
    try:
        wait_until(lambda: operator.json_on(f"{PREFIX}/status"), what="online status over TLS")
        operator.publish(
            f"{PREFIX}/capture", command("tls-1", source="snap", duration_ms=5, label="cat")
        )
        done = operator.wait_event("tls-1", ("delivered", "failed", "rejected"))
        assert done["event"] == "delivered"
        assert [e["event"] for e in operator.events("tls-1")] == [
            "accepted",
            "captured",
            "queued",
            "delivered",
        ]
    finally:
        operator.close()


def test_wrong_password_is_a_clear_error_with_backoff(
    tls_broker: tuple[Broker, TlsFiles],
    ingestion: LocalIngestionServer,
    tmp_path: Path,
    make_agent: Callable[..., AgentRun],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, files = tls_broker
    extra = tls_extra(tmp_path, files, "not-the-password")
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None, mqtt_extra=extra
    )
    caplog.set_level(logging.INFO, logger="edge_uploader.sources.mqtt")
    started = time.monotonic()
    service = agent.start()

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "refused the connection" in r.getMessage()]

    got = wait_until(lambda: len(refusals()) >= 3 and refusals(), timeout=10, what="3 refusals")
    elapsed = time.monotonic() - started
    messages = [r.getMessage() for r in got]
    assert all(r.levelno == logging.ERROR for r in got)
    assert "Not authorized" in messages[0] and "password_file" in messages[0]
    assert "EI_MQTT_PASSWORD" in messages[0] and "not-the-password" not in " ".join(messages)
    waits = [int(m) for m in re.findall(r"retrying in (\d+) s", " ".join(messages))]
    assert waits[:3] == [1, 2, 2]  # reconnect_min_seconds = 1, reconnect_max_seconds = 2
    assert elapsed >= 2.5, "attempts must be spaced by the backoff, not a tight loop"
    # the daemon is alive and still delivers files
    assert service.delivery is not None and not service.stopped.is_set()
    assert broker.proc is not None and broker.proc.poll() is None


def test_untrusted_server_certificate_is_named(
    tls_broker: tuple[Broker, TlsFiles],
    ingestion: LocalIngestionServer,
    tmp_path: Path,
    make_agent: Callable[..., AgentRun],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, files = tls_broker
    other_ca = TlsFiles(files.folder, files.folder / "server.crt", files.passwords)  # not a CA
    extra = tls_extra(tmp_path, other_ca, files.passwords[DEVICE])
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None, mqtt_extra=extra
    )
    caplog.set_level(logging.INFO, logger="edge_uploader.sources.mqtt")
    agent.start()
    record = wait_until(
        lambda: next((r for r in caplog.records if "cannot reach broker" in r.getMessage()), None),
        what="a connect failure",
    )
    assert "TLS certificate not trusted" in record.getMessage()


def test_publishes_the_acl_refuses_are_an_error(
    tls_broker: tuple[Broker, TlsFiles],
    ingestion: LocalIngestionServer,
    tmp_path: Path,
    make_agent: Callable[..., AgentRun],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, files = tls_broker
    extra = tls_extra(tmp_path, files, files.passwords[DEVICE]).replace(
        "[mqtt.tls]", 'topic_prefix = "elsewhere/pi"\n[mqtt.tls]'
    )
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None, mqtt_extra=extra
    )
    caplog.set_level(logging.INFO, logger="edge_uploader.sources.mqtt")
    agent.start()
    record = wait_until(
        lambda: next((r for r in caplog.records if "refused a message" in r.getMessage()), None),
        what="the refused status message",
    )
    assert record.levelno == logging.ERROR and "Not authorized" in record.getMessage()
    assert "elsewhere/pi/status" in record.getMessage()


@pytest.mark.parametrize("tls_broker", ["client-certs"], indirect=True)
def test_client_certificate_as_identity(
    tls_broker: tuple[Broker, TlsFiles],
    ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
) -> None:
    broker, files = tls_broker
    extra = (
        f'[mqtt.tls]\nca_file = "{files.ca}"\ncert_file = "{files.folder / "client.crt"}"\n'
        f'key_file = "{files.folder / "client.key"}"\n'
    )
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None, mqtt_extra=extra
    )
    agent.start()
    assert agent.service is not None
    [component] = agent.service.components
    wait_until(lambda: component.link.connected, what="a connection with the client certificate")

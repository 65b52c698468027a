"""Fixtures for the MQTT capture tests (helpers in ``harness``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .fleet_harness import Fleet
from .harness import (
    API_KEY,
    DEVICE,
    HMAC_KEY,
    MOSQUITTO,
    NO_MOSQUITTO,
    AgentRun,
    Broker,
    Observer,
    Sensor,
    TlsFiles,
    agent_toml,
    free_port,
    make_tls_files,
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip(NO_MOSQUITTO)
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder, free_port(), "allow_anonymous true\n").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Certificates, passwords and the ACL: made once (RSA key generation is slow)."""
    if MOSQUITTO is None:
        pytest.skip(NO_MOSQUITTO)
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl or mosquitto_passwd is not installed")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["passwords"])
def tls_broker(
    request: pytest.FixtureRequest, tmp_path: Path, tls_files: TlsFiles
) -> Iterator[tuple[Broker, TlsFiles]]:
    """TLS with passwords and the ACL; ``client-certs``: the certificate is the identity."""
    files = tls_files
    folder = files.folder
    extra = (
        f"allow_anonymous false\nacl_file {folder}/acl\n"
        f"cafile {folder}/ca.crt\ncertfile {folder}/server.crt\nkeyfile {folder}/server.key\n"
        "tls_version tlsv1.2\n"
    )
    if request.param == "passwords":
        extra += f"password_file {folder}/passwd\n"
    else:
        extra += "require_certificate true\nuse_identity_as_username true\n"
    run_dir = tmp_path / "tlsbroker"
    run_dir.mkdir()
    b = Broker(run_dir, free_port(), extra, tls=True).start()
    yield b, files
    b.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    obs = Observer(broker.port)
    obs.subscribe(f"edge-uploader/{DEVICE}/#")
    yield obs
    obs.close()


@pytest.fixture
def sensor() -> Iterator[Sensor]:
    s = Sensor()
    yield s
    s.close()


@pytest.fixture
def ingestion(tmp_path: Path) -> Iterator[LocalIngestionServer]:
    srv = LocalIngestionServer(
        tmp_path / "ingestion", api_keys=[API_KEY], hmac_key=HMAC_KEY, quiet=True
    )
    with srv:
        yield srv


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentRun]]:
    runs: list[AgentRun] = []

    def make(**kw: Any) -> AgentRun:
        path = tmp_path / "agent.toml"
        path.write_text(agent_toml(tmp_path, **kw))
        run = AgentRun(path)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()


@pytest.fixture
def fleet(
    broker: Broker, ingestion: LocalIngestionServer, tmp_path: Path
) -> Iterator[tuple[Fleet, Observer]]:
    """Three agent processes: ``lab3-a``, ``lab3-b`` (site lab-3) and ``lab9-a`` (lab-9)."""
    obs = Observer(broker.port)
    obs.subscribe("edge-uploader/#")
    fleet = Fleet(tmp_path / "devices", broker.port, ingestion.url)
    fleet.add("lab3-a", "lab-3")
    fleet.add("lab3-b", "lab-3")
    fleet.add("lab9-a", "lab-9")
    try:
        fleet.start(obs)
        yield fleet, obs
    finally:
        fleet.stop()
        obs.close()

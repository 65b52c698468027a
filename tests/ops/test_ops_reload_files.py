"""SIGHUP after a file the running config needs went bad (the MQTT password file removed
while rotating it, a TLS file overwritten): the reload is refused and the daemon keeps
running. It must never exit (78 would also stop systemd from restarting it)."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from edge_uploader.config.preflight import prepare
from edge_uploader.daemon.health import assess
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import LocalIngestionServer

from .conftest import free_port, wait_for, write_config


def _mqtt(tmp_path: Path, tls: bool = False) -> str:
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    (tmp_path / "mqtt_password").chmod(0o600)
    text = (
        f'\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\nusername = "dev"\n'
        'password_file = "mqtt_password"\nreconnect_min_seconds = 60\n'
    )
    if tls:
        ca = ssl.get_default_verify_paths().cafile
        if ca is None or not Path(ca).is_file():
            pytest.skip("no system CA bundle to use as a valid CA file")
        shutil.copy(ca, tmp_path / "ca.pem")
        text += '[mqtt.tls]\nca_file = "ca.pem"\n'
    return text


def _run(config: Path) -> Daemon:
    service = Daemon(prepare(config), config_path=config)
    service.start()
    return service


def _still_serving(service: Daemon, tmp_path: Path, server: LocalIngestionServer) -> None:
    (tmp_path / "captures" / "after.csv").write_text("t,v\n0,after\n")
    wait_for(lambda: any(i["fileName"] == "after.csv" for i in server.index_lines()))
    assert assess(service).alive


def test_reload_with_the_mqtt_password_file_gone_is_refused(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    config = write_config(tmp_path, server.url, _mqtt(tmp_path))
    service = _run(config)
    try:
        (tmp_path / "mqtt_password").unlink()
        assert service.reload() is False
        assert service.reload_error is not None
        assert "mqtt.password_file" in service.reload_error
        _still_serving(service, tmp_path, server)
    finally:
        service.stop()


def test_reload_with_a_broken_tls_file_keeps_the_daemon_running(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    config = write_config(tmp_path, server.url, _mqtt(tmp_path, tls=True))
    service = _run(config)
    try:
        (tmp_path / "ca.pem").write_text("not a certificate\n")
        assert service.reload() is False
        assert service.reload_error is not None and "mqtt.tls" in service.reload_error
        _still_serving(service, tmp_path, server)
    finally:
        service.stop()

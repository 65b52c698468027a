"""The MQTT password file and the MQTT client key are secrets too: start-up and every
reload warn when other users can read them, like the API and HMAC key files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_uploader.config.preflight import prepare, warn_exposed


def test_exposed_mqtt_password_and_client_key_files_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "api_key"
    key.write_text("ei_secret_value_123\n")
    key.chmod(0o600)
    password = tmp_path / "mqtt_password"
    password.write_text("mqtt-s3cret\n")
    password.chmod(0o644)
    for name in ("client.crt", "client.key"):
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")
        (tmp_path / name).chmod(0o644)  # a certificate is public; its private key is not
    config = tmp_path / "agent.toml"
    config.write_text(
        '[ingestion]\nurl = "http://127.0.0.1:1"\napi_key_file = "api_key"\n'
        '[mqtt]\nhost = "127.0.0.1"\nusername = "dev"\npassword_file = "mqtt_password"\n'
        '[mqtt.tls]\ncert_file = "client.crt"\nkey_file = "client.key"\n'
    )
    config.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="edge_uploader.config.preflight"):
        cfg = prepare(config)
    assert set(warn_exposed(cfg)) == {password, tmp_path / "client.key"}
    assert f"{password} can be read by other users" in caplog.text
    assert "mqtt.password_file" in caplog.text and "mqtt.tls.key_file" in caplog.text
    assert "mqtt-s3cret" not in caplog.text

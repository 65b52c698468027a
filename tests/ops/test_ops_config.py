"""Config for unattended operation: [http], [health], [disk]; transport rules; secrets."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

import pytest

from edge_uploader.config import Config, DiskConfig, load_config, parse_config
from edge_uploader.config.ops import is_loopback
from edge_uploader.config.preflight import prepare, warn_exposed
from edge_uploader.errors import ConfigError
from edge_uploader.secrets import SecretSource, readable_by_others


def _parse(text: str, tmp_path: Path) -> Config:
    return parse_config(tomllib.loads(text), str(tmp_path / "agent.toml"), tmp_path)


def _error(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _parse(text, tmp_path)
    return info.value


def test_defaults_no_endpoint_and_a_floor(tmp_path: Path) -> None:
    cfg = _parse("", tmp_path)
    assert cfg.http.listen is None
    assert cfg.disk == DiskConfig()
    assert cfg.disk.min_free_bytes == 64 * 1024 * 1024
    assert cfg.health.effective_stall_seconds(60, 10) == 300
    assert cfg.health.effective_stall_seconds(600, 10) == 670


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"127.0.0.1:9108"', ("127.0.0.1", 9108)),
        ('"9108"', ("127.0.0.1", 9108)),
        ('"[::1]:9200"', ("::1", 9200)),
        ('"0.0.0.0:9108"', ("0.0.0.0", 9108)),
    ],
)
def test_http_listen(tmp_path: Path, text: str, expected: tuple[str, int]) -> None:
    cfg = _parse(f"[http]\nlisten = {text}\n", tmp_path)
    assert cfg.http.listen == expected
    assert cfg.http.loopback == (expected[0] != "0.0.0.0")


@pytest.mark.parametrize("text", ['"localhost"', '"1.2.3.4:99999"', '"::1:80"', "9108", '"[::1]"'])
def test_http_listen_errors_name_the_key(tmp_path: Path, text: str) -> None:
    err = _error(f"[http]\nlisten = {text}\n", tmp_path)
    assert err.key == "http.listen"
    assert str(tmp_path / "agent.toml") in str(err)


def test_disk_and_health_keys(tmp_path: Path) -> None:
    cfg = _parse(
        "[disk]\nmin_free_bytes = 1000\nmin_free_percent = 10\nprune_delivered = true\n"
        "check_interval_seconds = 2\n[health]\nstall_seconds = 30\n",
        tmp_path,
    )
    assert cfg.disk.floor(100_000) == 10_000
    assert cfg.disk.floor(1_000) == 1000
    assert cfg.disk.prune_delivered and cfg.disk.check_interval_seconds == 2
    assert cfg.health.effective_stall_seconds(60, 10) == 30
    assert _error("[disk]\nmin_free_percent = 95\n", tmp_path).key == "disk.min_free_percent"
    assert _error("[disk]\nmin_free_byte = 1\n", tmp_path).key == "disk.min_free_byte"
    assert _error("[health]\nstall_seconds = 0\n", tmp_path).key == "health.stall_seconds"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:4810", "http://localhost:4810", "http://[::1]:80", "https://example.com"],
)
def test_secure_or_loopback_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert _parse(f'[ingestion]\nurl = "{url}"\n', tmp_path).ingestion.url == url


@pytest.mark.parametrize("url", ["http://ingestion.example.com", "http://192.168.1.10:4810"])
def test_plain_http_to_another_host_is_refused_unless_allowed(tmp_path: Path, url: str) -> None:
    err = _error(f'[ingestion]\nurl = "{url}"\n', tmp_path)
    assert err.key == "ingestion.url"
    assert "allow_insecure_http" in err.message
    cfg = _parse(f'[ingestion]\nurl = "{url}"\nallow_insecure_http = true\n', tmp_path)
    assert cfg.ingestion.url == url


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_readable_by_others(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("x")
    f.chmod(0o600)
    assert not readable_by_others(f)
    f.chmod(0o644)
    assert readable_by_others(f)
    f.chmod(0o640)  # our own group: only the service's group may read it
    os.chown(f, -1, os.getegid())
    assert not readable_by_others(f)
    if os.geteuid() == 0:
        os.chown(f, -1, 65534)  # another group
        assert readable_by_others(f)


def test_start_up_warns_about_exposed_config_and_key_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "api_key"
    key.write_text("ei_secret_value_123\n")
    key.chmod(0o644)
    config = tmp_path / "agent.toml"
    config.write_text('[ingestion]\nurl = "http://127.0.0.1:1"\napi_key_file = "api_key"\n')
    config.chmod(0o604)
    with caplog.at_level(logging.WARNING, logger="edge_uploader.config.preflight"):
        cfg = prepare(config)
    assert set(warn_exposed(cfg)) == {config, key}
    text = caplog.text
    assert f"config file {config} can be read by other users" in text
    assert f"{key} can be read by other users" in text
    assert "ei_secret_value_123" not in text
    key.chmod(0o600)
    config.chmod(0o600)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_uploader.config.preflight"):
        prepare(config)
    assert caplog.text == ""


def test_a_blank_credential_means_not_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's ``SetCredential=hmac_key:\\n`` default is "no HMAC key", not an error."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("EI_HMAC_KEY", raising=False)
    (tmp_path / "hmac_key").write_text("\n")
    source = SecretSource("HMAC key", "ingestion.hmac_key_file", env="EI_HMAC_KEY",
                          credential="hmac_key")  # fmt: skip
    assert not source.configured()
    assert source.load_optional() is None
    (tmp_path / "hmac_key").write_text("abc123\n")
    loaded = source.load_optional()
    assert loaded is not None and loaded.reveal() == "abc123"


def test_missing_key_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "agent.toml"
    config.write_text('[ingestion]\nurl = "http://127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="no API key"):
        prepare(config)
    assert load_config(config).ingestion.url == "http://127.0.0.1:1"

"""Secrets: where they come from, in which order, and that they never print themselves."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge_uploader.errors import ConfigError, SecretError
from edge_uploader.secrets import (
    MAX_SECRET_BYTES,
    Secret,
    SecretSource,
    read_secret_file,
    readable_by_others,
)

KEY = "ei_5ecret_0123456789"


def source(file: Path | None = None) -> SecretSource:
    return SecretSource("API key", "ingestion.api_key_file", file=file, env="EI_API_KEY",
                        credential="api_key", config_source="/etc/agent.toml")  # fmt: skip


def test_secret_is_redacted_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret(KEY)
    assert s.reveal() == KEY
    assert repr(s) == str(s) == f"{s}" == "Secret('<redacted>')"
    assert KEY not in repr([s, {"k": s}])
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key is %s", s)
    assert KEY not in caplog.text


def test_secret_equality() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


def test_file_is_read_stripped_first_line(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text(f"  {KEY}  \nsecond line\n")
    assert source(file=f).load().reveal() == KEY


def test_order_file_then_env_then_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "key"
    f.write_text("from-file")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_key").write_text("from-credential\n")
    monkeypatch.setenv("EI_API_KEY", "from-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert source(file=f).load().reveal() == "from-file"
    assert source().load().reveal() == "from-env"
    monkeypatch.setenv("EI_API_KEY", "   ")
    assert source().load().reveal() == "from-credential"
    monkeypatch.delenv("EI_API_KEY")
    assert source().load().reveal() == "from-credential"


def test_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not source().configured()
    assert source().load_optional() is None
    assert source(file=tmp_path / "k").configured()
    monkeypatch.setenv("EI_API_KEY", "x")
    assert source().configured()
    assert source().load_optional() == Secret("x")


def test_missing_names_every_place_and_is_a_config_error() -> None:
    with pytest.raises(SecretError) as info:
        source().load()
    err = info.value
    assert isinstance(err, ConfigError)  # so the CLI exits 78
    assert err.source == "/etc/agent.toml"
    assert err.key == "ingestion.api_key_file"
    assert err.message == (
        "no API key: set ingestion.api_key_file, or the environment variable EI_API_KEY, "
        "or a systemd credential named api_key"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"\xff\xfe" + KEY.encode(), "is not UTF-8 text"),
        (b"x" * (MAX_SECRET_BYTES + 1), f"is larger than {MAX_SECRET_BYTES} bytes"),
    ],
)
def test_bad_files_are_named_never_shown(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "key"
    f.write_bytes(content)
    with pytest.raises(SecretError) as info:
        read_secret_file(f, "/etc/agent.toml", "ingestion.api_key_file")
    assert info.value.message == f"{f} {message}"
    assert KEY not in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as info:
        source(file=tmp_path / "absent").load()
    assert info.value.message == f"cannot read {tmp_path / 'absent'}: No such file or directory"


def test_readable_by_others(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text(KEY)
    f.chmod(0o600)
    assert not readable_by_others(f)
    f.chmod(0o640)
    os.chown(f, -1, os.getegid())
    assert not readable_by_others(f)  # only our own group: the service's, e.g. edge-uploader
    if os.geteuid() == 0:
        os.chown(f, -1, 65534)  # another group
        assert readable_by_others(f)
    f.chmod(0o604)
    assert readable_by_others(f)
    assert not readable_by_others(tmp_path / "absent")

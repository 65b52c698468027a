"""The command line itself: no abbreviations, no secrets in argv or errors, quiet broken
pipes, config discovery, ``--log-level`` anywhere, and every command's help.

The defects were seen in real processes, so most tests run ``python -m edge_uploader``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_uploader import cli
from edge_uploader.cli.parser import EXIT_STATUS_TITLE, walk
from edge_uploader.config import discover
from edge_uploader.store.queue import Queue
from tests.support import ROOT

SECRET = "ei_x"
SYSTEM_CONFIG = discover.SYSTEM_CONFIG
"""The real system path (the tests' fixture patches it in process, not in children)."""
REFUSAL = "secrets are not options: use EI_API_KEY or --api-key-file"


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command, with the test's own state and config folders."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "edge_uploader", *args], env=full, text=True,
                          capture_output=True, timeout=60, cwd=tmp_path, check=False)  # fmt: skip


def write_config(path: Path, queue: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[queue]\npath = "{queue}"\n')
    return path


def make_queue(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Queue(path).close()
    return path


# -- item 2: abbreviations and secrets -------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["upload", "--api-key", SECRET, "a.wav"],
        ["upload", f"--api-key={SECRET}", "a.wav"],
        ["upload", "a.wav", "--api_key", SECRET],
        ["status", "--api-key", SECRET],
        ["--api-key", SECRET, "status"],
        ["local-ingestion", "--data-dir", "d", "--api-key", SECRET],
    ],
)
def test_api_key_option_is_refused_without_echo(argv: list[str], tmp_path: Path) -> None:
    p = run(argv, tmp_path)
    assert p.returncode == 2
    assert REFUSAL in p.stderr
    assert SECRET not in p.stdout + p.stderr


@pytest.mark.parametrize(
    ("flag", "advice"),
    [
        ("--hmac-key", "use EI_HMAC_KEY or [ingestion] hmac_key_file"),
        ("--mqtt-password", "use EI_MQTT_PASSWORD or [mqtt] password_file"),
        ("--password", "use EI_MQTT_PASSWORD or [mqtt] password_file"),
        ("--token", "use EI_API_KEY or --api-key-file"),
    ],
)
def test_other_secret_options_are_refused(flag: str, advice: str, tmp_path: Path) -> None:
    p = run(["run", flag, "0123abcd-secret"], tmp_path)
    assert p.returncode == 2
    assert f"secrets are not options: {advice}" in p.stderr
    assert "0123abcd-secret" not in p.stdout + p.stderr


def test_no_parser_accepts_abbreviations() -> None:
    parsers = list(walk(cli.build_parser()))
    assert len(parsers) > 10
    assert all(not p.allow_abbrev for p in parsers)


def test_abbreviated_option_is_an_error_that_hides_keys(tmp_path: Path) -> None:
    """``--api-key-f`` is not ``--api-key-file``; the unknown words are not echoed as keys."""
    p = run(["status", "--api-key-f", SECRET], tmp_path)
    assert p.returncode == 2
    assert SECRET not in p.stdout + p.stderr
    assert "unrecognized arguments" in p.stderr


def test_key_given_where_its_file_goes_is_not_echoed(tmp_path: Path) -> None:
    p = run(["upload", "--api-key-file", SECRET, str(tmp_path)], tmp_path)
    assert p.returncode == 78
    assert "--api-key-file" in p.stderr
    assert SECRET not in p.stdout + p.stderr


def test_option_value_that_looks_like_a_key_is_not_echoed(tmp_path: Path) -> None:
    p = run(["upload", "--concurrency", SECRET, str(tmp_path)], tmp_path)
    assert p.returncode == 78
    assert "--concurrency" in p.stderr
    assert SECRET not in p.stdout + p.stderr


def test_key_given_as_the_config_path_is_not_echoed(tmp_path: Path) -> None:
    p = run(["status", "--config", SECRET], tmp_path)
    assert p.returncode == 78
    assert SECRET not in p.stdout + p.stderr


def test_metadata_json_with_a_huge_number_is_a_config_error(tmp_path: Path) -> None:
    p = run(["upload", "--metadata", '{"a": ' + "9" * 5000 + "}", str(tmp_path)], tmp_path)
    assert p.returncode == 78, p.stderr
    assert "--metadata" in p.stderr and "not valid JSON" in p.stderr
    assert "Traceback" not in p.stderr


# -- item 4: a reader that goes away ---------------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["dead", "list"]])
def test_closed_pipe_ends_quietly(command: list[str], tmp_path: Path) -> None:
    """``status | head -3`` where head has gone: no traceback, exit 141 (or 0)."""
    config = write_config(tmp_path / "a.toml", make_queue(tmp_path / "q.db"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_uploader", *command, "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the command writes anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


def test_closed_pipe_in_process_returns_141(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "a.toml", make_queue(tmp_path / "q.db"))
    r, w = os.pipe()
    os.close(r)
    saved = os.dup(1)
    try:
        os.dup2(w, 1)
        monkeypatch.setattr(sys, "stdout", open(1, "w", closefd=False))
        assert cli.main(["status", "-c", str(config)]) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)


# -- item 5: config discovery ----------------------------------------------------------------
def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "agent.toml"
    user = tmp_path / "xdg" / "edge-uploader" / "agent.toml"
    named = tmp_path / "named.toml"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    monkeypatch.setattr(discover, "SYSTEM_CONFIG", system)

    found = discover.find_config(None, required=False, env=env)
    assert found.path is None
    assert found.looked == ("--config (not given)", "$EDGE_UPLOADER_CONFIG (not set)",
                            str(system), str(user))  # fmt: skip
    for path in (user, system, named):
        write_config(path, tmp_path / "q.db")
    assert discover.find_config(None, required=True, env=env).path == system
    env[discover.CONFIG_ENV] = str(named)
    assert discover.find_config(None, required=True, env=env).path == named
    assert (
        discover.find_config(tmp_path / "x.toml", required=True, env=env).path
        == tmp_path / "x.toml"
    )
    system.unlink()
    del env[discover.CONFIG_ENV]
    assert discover.find_config(None, required=True, env=env).path == user


def test_user_config_defaults_to_dot_config(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/ignored"}
    assert discover.user_config(env) == tmp_path / ".config" / "edge-uploader" / "agent.toml"


def test_named_config_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(discover.ConfigError, match=r"EDGE_UPLOADER_CONFIG: .*no such file"):
        discover.find_config(None, required=False,
                             env={discover.CONFIG_ENV: str(tmp_path / "gone.toml")})  # fmt: skip


def test_status_finds_the_system_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = make_queue(tmp_path / "q.db")
    system = write_config(tmp_path / "etc" / "agent.toml", queue)
    monkeypatch.setattr(discover, "SYSTEM_CONFIG", system)
    assert cli.main(["status"]) == 0
    out, err = capsys.readouterr()
    assert f"queue: {queue}" in out
    assert f"config {system} (the system config" in err


def test_status_finds_config_from_environment_and_says_so(tmp_path: Path) -> None:
    queue = make_queue(tmp_path / "q.db")
    config = write_config(tmp_path / "named.toml", queue)
    p = run(["status", "--json"], tmp_path, EDGE_UPLOADER_CONFIG=str(config))
    assert p.returncode == 0, p.stderr
    assert str(queue) in p.stdout
    assert f"config {config} (from $EDGE_UPLOADER_CONFIG)" in p.stderr


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="this machine has a system config")
def test_status_finds_the_user_config(tmp_path: Path) -> None:
    queue = make_queue(tmp_path / "q.db")
    config = write_config(tmp_path / "xdg" / "edge-uploader" / "agent.toml", queue)
    p = run(["status"], tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert p.returncode == 0, p.stderr
    assert f"queue: {queue}" in p.stdout
    assert f"config {config} (the user config" in p.stderr


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="this machine has a system config")
def test_run_without_any_config_lists_the_places_looked(tmp_path: Path) -> None:
    p = run(["run"], tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert p.returncode == 78
    assert "no config file" not in p.stdout
    for place in ("--config (not given)", "$EDGE_UPLOADER_CONFIG (not set)",
                  str(SYSTEM_CONFIG), str(tmp_path / "xdg" / "edge-uploader")):  # fmt: skip
        assert place in p.stderr


def test_run_logs_the_config_it_found(tmp_path: Path) -> None:
    """The daemon names its config in the log (then stops here: no API key anywhere)."""
    config = write_config(tmp_path / "named.toml", tmp_path / "q.db")
    p = run(["run"], tmp_path, EDGE_UPLOADER_CONFIG=str(config), CREDENTIALS_DIRECTORY="")
    assert p.returncode == 78
    assert f"using the config {config} (from $EDGE_UPLOADER_CONFIG)" in p.stderr
    assert "API key" in p.stderr


def test_found_config_that_cannot_be_read_says_how_it_was_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    system = tmp_path / "etc" / "agent.toml"
    system.parent.mkdir()
    system.write_text("[queue\n")
    monkeypatch.setattr(discover, "SYSTEM_CONFIG", system)
    assert cli.main(["status"]) == 78
    err = capsys.readouterr().err
    assert f"{system}: not valid TOML" in err
    assert "(found as the system config; give --config FILE to use another)" in err


def test_quiet_log_level_hides_the_discovery_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    system = write_config(tmp_path / "etc" / "agent.toml", make_queue(tmp_path / "q.db"))
    monkeypatch.setattr(discover, "SYSTEM_CONFIG", system)
    assert cli.main(["status", "--log-level", "warning"]) == 0
    assert capsys.readouterr().err == ""


# -- item 6: check-config --config, --log-level after the command ---------------------------
def test_check_config_takes_config_option_or_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "a.toml", tmp_path / "q.db")
    for argv in (["check-config", str(config)], ["check-config", "--config", str(config)],
                 ["check-config", "-c", str(config)]):  # fmt: skip
        p = run(argv, tmp_path, EI_API_KEY="ei_check_key")
        assert p.returncode == 0, p.stderr
        assert "config OK" in p.stdout
    other = write_config(tmp_path / "b.toml", tmp_path / "q.db")
    p = run(["check-config", str(config), "--config", str(other)], tmp_path)
    assert p.returncode == 2


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_level_before_or_after_the_command(position: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "a.toml", make_queue(tmp_path / "q.db"))
    level = ["--log-level", "debug"]
    argv = [*level, "dead", "list", "-c", str(config)]
    if position == "after":
        argv = ["dead", "list", "-c", str(config), *level]
    p = run(argv, tmp_path)
    assert p.returncode == 0, p.stderr
    parsed = cli.build_parser().parse_args(argv)
    assert parsed.log_level == "debug"


def test_log_level_defaults_to_info() -> None:
    assert cli.build_parser().parse_args(["status"]).log_level == "info"


# -- item 11: help --------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return list(walk(parser))


def test_every_command_has_a_description_and_exit_statuses() -> None:
    parsers = _commands(cli.build_parser())
    names = {p.prog for p in parsers}
    assert {"edge-uploader upload", "edge-uploader dead list", "edge-uploader metadata backfill",
            "edge-uploader local-ingestion", "edge-uploader check-config"} <= names  # fmt: skip
    for p in parsers:
        text = p.format_help()
        assert p.description, f"{p.prog} has no description"
        assert EXIT_STATUS_TITLE in text, f"{p.prog} --help lists no exit status"
        assert " 0 " in text.replace("\n", " ") or "  0 " in text, p.prog
        assert "78" in text, p.prog


def test_help_in_a_real_process(tmp_path: Path) -> None:
    p = run(["dead", "retry", "--help"], tmp_path)
    assert p.returncode == 0
    assert EXIT_STATUS_TITLE in p.stdout


def test_each_command_is_found_in_the_module_that_adds_it() -> None:
    """A command line loads only its command's module: the table that says which must be
    what the modules register, every command in it."""
    import importlib

    seen: dict[str, str] = {}
    for name in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"edge_uploader.cli.{name}").register(sub)
        seen.update(dict.fromkeys(sub.choices, name))
    assert seen == cli.MODULE_OF
    for word in ("run", "status", "upload", "queue", "project", "fleet"):
        parser = cli.build_parser(["--log-level", "warning", word, "--help"])
        top = {p.prog.split()[1] for p in _commands(parser) if p is not parser}
        assert top == {w for w, m in seen.items() if m == seen[word]}

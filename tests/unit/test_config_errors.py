"""Config errors as a new user meets them: every problem of a file in one run, each naming
file, key and expectation, and "did you mean" for a misspelt key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_uploader.config import load_config
from edge_uploader.config.table import did_you_mean
from edge_uploader.errors import ConfigError, ConfigErrors
from tests.support import ROOT, child_env

SEVERAL = """\
[device]
id = "a/b"

[ingestion]
category = "trainign"
concurency = 4
timeout_seconds = -1

[queue]
scan_interval_seconds = "often"

[[watch]]
path = "captures"
after_uplaod = "delete"

[mqtt]
host = "broker"
port = 99999

[ingestoin]
url = "https://x"
"""
EXPECTED = [
    ("device.id", "expected printable text without '/'"),
    ("ingestion.category", "expected one of training, testing"),
    ("ingestion.timeout_seconds", "expected a number from 0.1 to 3600, got -1"),
    ("ingestion.concurency", "unknown key; did you mean 'concurrency'?"),
    ("queue.scan_interval_seconds", "expected a number from 1 to 86400, got a string"),
    ("watch[0].after_uplaod", "unknown key; did you mean 'after_upload'?"),
    ("mqtt.port", "expected a whole number from 1 to 65535, got 99999"),
    ("ingestoin", "unknown key; did you mean 'ingestion'?"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, SEVERAL)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, check_dirs=False)
    problems = info.value.problems
    assert [(p.key, p.source) for p in problems] == [(k, str(path)) for k, _ in EXPECTED]
    for problem, (_, expected) in zip(problems, EXPECTED, strict=True):
        assert expected in problem.message
    first = problems[0]  # the group reads as its first problem to code that wants one
    assert (info.value.source, info.value.key, info.value.message) == (
        first.source, first.key, first.message,
    )  # fmt: skip
    assert str(info.value) == "; ".join(map(str, problems))
    assert "\n" not in str(info.value)  # one log entry, one systemd status line


def test_one_problem_is_a_plain_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[queue]\nscan_interval_seconds = 0\n"), check_dirs=False)
    assert not isinstance(info.value, ConfigErrors)
    assert info.value.key == "queue.scan_interval_seconds"


def test_a_follow_on_error_of_the_same_key_is_not_repeated(tmp_path: Path) -> None:
    """A watch path of the wrong type is one problem, not also "is required"."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[[watch]]\npath = 5\n"), check_dirs=False)
    assert not isinstance(info.value, ConfigErrors)
    assert info.value.message == "expected a string, got a number"


@pytest.mark.parametrize(
    ("name", "known", "message"),
    [
        ("after_uplaod", {"after_upload", "move_to", "path"}, "did you mean 'after_upload'?"),
        ("catgory", {"category", "concurrency"}, "did you mean 'category'?"),
        ("zzz", {"category", "concurrency"}, "unknown key"),
    ],
)
def test_did_you_mean(name: str, known: set[str], message: str) -> None:
    assert did_you_mean(name, known).endswith(message)


def test_capture_source_errors_are_gathered(tmp_path: Path) -> None:
    text = (
        '[capture]\ndir = "caps"\nmax_duration_ms = 0\n'
        '[[capture.serial]]\nname = "accel"\nport = "/dev/null"\nfrequency_hz = 0\n'
        'sensors = [{ name = "x" }]\nbaudrate = 1\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(write(tmp_path, text), check_dirs=False)
    keys = [p.key for p in info.value.problems]
    assert keys == ["capture.serial[0].frequency_hz", "capture.serial[0].baudrate",
                    "capture.max_duration_ms"]  # fmt: skip


def test_check_config_prints_every_problem_in_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, SEVERAL)
    p = subprocess.run([sys.executable, "-m", "edge_uploader", "check-config", str(path)],
                       env=child_env(), text=True, capture_output=True, timeout=60,
                       cwd=ROOT, check=False)  # fmt: skip
    assert p.returncode == 78
    lines = p.stderr.splitlines()
    expected_lines = list(EXPECTED)  # check-config also checks that watched folders exist
    expected_lines.insert(5, ("watch[0].path", f"{tmp_path / 'captures'} does not exist"))
    assert len(lines) == len(expected_lines), p.stderr
    for line, (key, expected) in zip(lines, expected_lines, strict=True):
        assert line.startswith(f"edge-uploader: config error: {path}: {key}: ")
        assert expected in line

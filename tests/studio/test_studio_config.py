"""``[studio]`` and ``[sync]``: defaults, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_uploader.config import DEFAULT_STUDIO_URL, load_config, parse_config
from edge_uploader.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def parse(data: dict) -> object:
    return parse_config(data, "agent.toml", Path("."), check_dirs=False)


def test_defaults() -> None:
    c = parse({})
    assert c.studio.url == DEFAULT_STUDIO_URL and c.studio.project_id is None
    assert not c.sync.delete_remote and c.sync.grace_seconds == 3600
    assert c.sync.max_deletes_per_hour == 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"studio": {"project": 1}}, "agent.toml: studio.project: unknown key"),
        ({"studio": {"project_id": "12"}}, "studio.project_id: expected a whole number"),
        ({"studio": {"project_id": 0}}, "studio.project_id: expected a whole number"),
        ({"studio": {"url": "ftp://x"}}, "studio.url: expected an http:// or https:// URL"),
        ({"studio": {"url": "http://studio.example.com/v1"}}, "studio.url: http://studio"),
        ({"sync": {"delete_remote": "yes"}}, "sync.delete_remote: expected true or false"),
        ({"sync": {"grace_seconds": -1}}, "sync.grace_seconds: expected a number"),
        ({"sync": {"max_deletes_per_hour": 1.5}}, "sync.max_deletes_per_hour: expected a whole"),
        ({"sync": {"grace": 1}}, "agent.toml: sync.grace: unknown key"),
    ],
)
def test_errors_name_the_file_and_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert message in str(err.value)


def test_the_example_and_dev_configs_parse() -> None:
    example = load_config(ROOT / "config" / "agent.example.toml", check_dirs=False)
    assert not example.sync.delete_remote and example.studio.concurrency == 4
    dev = load_config(ROOT / "config" / "dev.toml", check_dirs=False)
    assert dev.studio.url == "http://127.0.0.1:4810/v1"

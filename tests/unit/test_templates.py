"""Templates: placeholders, escapes, and errors at parse time (never per file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_uploader.config.templates import parse_template, render_all
from edge_uploader.errors import InputError

PATH = Path("/data/captures/sess-12/idle.01.wav")


def render(text: str) -> str:
    return parse_template(text, "metadata.x").render(PATH, "pi-0042", "host-a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{dir}", "sess-12"),
        ("{stem}", "idle.01"),
        ("{name}", "idle.01.wav"),
        ("{ext}", "wav"),
        ("{device_id}", "pi-0042"),
        ("{hostname}", "host-a"),
        ("{device_id}/{dir}/{stem}", "pi-0042/sess-12/idle.01"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_fields(text: str, expected: str) -> None:
    assert render(text) == expected


def test_env_placeholder_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EU_SITE", "north field")
    assert render("site={env:EU_SITE}") == "site=north field"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{{dir}}", "{dir}"), ("a}}b", "a}b"), ("{{", "{"), ("{{{dir}}}", "{sess-12}")],
)
def test_double_braces_are_literal(text: str, expected: str) -> None:
    assert render(text) == expected


def test_literal_detection() -> None:
    assert parse_template("north {{x}}", "f").is_literal
    assert not parse_template("north {dir}", "f").is_literal
    assert parse_template("{dir}-x", "f").parts == (("field", "dir"), ("text", "-x"))


def test_unknown_placeholder_names_the_field_and_the_known_ones() -> None:
    with pytest.raises(InputError) as info:
        parse_template("{session}", "watch[0].label")
    assert info.value.field == "watch[0].label"
    assert info.value.message == (
        "unknown placeholder {session}; known: {dir}, {stem}, {name}, {ext}, {device_id}, "
        "{hostname}, {env:NAME}"
    )


@pytest.mark.parametrize("text", ["{dir", "dir}", "a{b", "}"])
def test_unmatched_braces(text: str) -> None:
    with pytest.raises(InputError, match="unmatched brace"):
        parse_template(text, "f")


def test_missing_environment_variable_is_a_parse_error() -> None:
    with pytest.raises(InputError) as info:
        parse_template("{env:EU_DOES_NOT_EXIST}", "metadata.site")
    assert info.value.field == "metadata.site"
    assert "environment variable EU_DOES_NOT_EXIST is not set" in info.value.message


@pytest.mark.parametrize("text", ["{env:}", "{env:1X}", "{env:A-B}"])
def test_bad_environment_variable_names(text: str) -> None:
    with pytest.raises(InputError, match="bad environment variable name"):
        parse_template(text, "f")


def test_render_all() -> None:
    templates = {"s": parse_template("{dir}", "a"), "d": parse_template("x-{device_id}", "b")}
    assert render_all(templates, PATH, "pi", "h") == {"s": "sess-12", "d": "x-pi"}

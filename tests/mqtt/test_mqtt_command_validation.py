"""The command validator: strict rules, named fields, and a property test over bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge_uploader.errors import InputError
from edge_uploader.sources.capture import file_name
from edge_uploader.sources.command import (
    ID_RE,
    KEYS,
    MAX_COMMAND_BYTES,
    TEXT_RE,
    Command,
    command_id_of,
    validate,
)

SOURCES = ("accel", "snap")
MAX_MS = 10_000


def ok(**kw: Any) -> bytes:
    doc = {"id": "c-1", "source": "accel", "duration_ms": 2000, **kw}
    return json.dumps(doc).encode()


def refused(raw: bytes) -> InputError:
    with pytest.raises(InputError) as info:
        validate(raw, SOURCES, MAX_MS)
    return info.value


def test_a_full_command() -> None:
    cmd = validate(
        ok(label="idle", session="run-7", category="testing", metadata={"operator": "ana"}),
        SOURCES,
        MAX_MS,
    )
    assert cmd == Command("c-1", "accel", 2000, "idle", "run-7", "testing", {"operator": "ana"})
    assert cmd.trigger_metadata() == {
        "operator": "ana",
        "command_id": "c-1",
        "capture_source": "accel",
        "session": "run-7",
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", ""),
        (b"not json", ""),
        (b"[1,2]", ""),
        (b"\xff\xfe", ""),
        (b'{"id":"a","id":"b","source":"accel","duration_ms":1}', "id"),
        (ok(extra=1), "extra"),
        (json.dumps({"source": "accel", "duration_ms": 1}).encode(), "id"),
        (ok(id="../etc"), "id"),
        (ok(id=7), "id"),
        (ok(source="/bin/sh"), "source"),
        (ok(source=["accel"]), "source"),
        (ok(duration_ms=0), "duration_ms"),
        (ok(duration_ms=MAX_MS + 1), "duration_ms"),
        (ok(duration_ms=1.5), "duration_ms"),
        (ok(duration_ms=True), "duration_ms"),
        (ok(duration_ms="100"), "duration_ms"),
        (ok(label="a/b"), "label"),
        (ok(label=".."), "label"),
        (ok(label="..."), "label"),
        (ok(label=" idle"), "label"),
        (ok(label=""), "label"),
        (ok(label="x" * 129), "label"),
        (ok(label="naïve"), "label"),
        (ok(session="run\n7"), "session"),
        (ok(category="trash"), "category"),
        (ok(metadata={"k": 1}), "metadata.k"),
        (ok(metadata=["k"]), "metadata"),
        (ok(metadata={"session": "x"}), "metadata.session"),
        (ok(metadata={"device_id": "spoof"}), "metadata.device_id"),
        (b'{"id":"a","source":"accel","duration_ms":NaN}', ""),
        (b"[" * 5000 + b"]" * 5000, ""),
        (b" " * (MAX_COMMAND_BYTES + 1), ""),
    ],
)
def test_refusals_name_the_field(raw: bytes, field: str) -> None:
    assert refused(raw).field == field


def test_a_number_python_will_not_convert_is_named_as_such() -> None:
    """Found by bench/fuzz.py: a 5,000-digit duration was refused as "not a JSON object"."""
    exc = refused(b'{"id": "c-1", "source": "accel", "duration_ms": ' + b"9" * 5000 + b"}")
    assert exc.field == "" and exc.message == "payload has a number of more than 4,300 digits"


def test_command_id_is_reported_only_when_safe() -> None:
    assert command_id_of(ok(label="a/b")) == "c-1"
    assert command_id_of(ok(id="../../x")) is None
    assert command_id_of(b"junk") is None


# -- the property test -------------------------------------------------------------------
PATHLIKE = st.sampled_from(
    [
        "../x",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        "~",
        "~root",
        "a\\b",
        "..\\..",
        "C:\\x",
        "\x00",
        "a\nb",
        "$(id)",
        "`id`",
        "{output}",
        "%2e%2e%2f",
        " .. ",
        ".hidden",
        "-rf",
        "x" * 200,
    ]
)
SAFE = "abcXYZ019 ._-"
HOSTILE = st.one_of(
    PATHLIKE,
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
VALID = {
    "id": st.text(alphabet="abc019._:-", min_size=1, max_size=16).filter(
        lambda t: any(c.isalnum() for c in t)
    ),
    "source": st.sampled_from(SOURCES),
    "duration_ms": st.integers(1, MAX_MS),
    "label": st.text(alphabet=SAFE, min_size=1, max_size=16),
    "session": st.text(alphabet=SAFE, min_size=1, max_size=16),
    "category": st.sampled_from(["training", "testing", "split", "split-by-group"]),
    "metadata": st.dictionaries(
        st.text(alphabet="abkz_", min_size=1, max_size=6), st.text(max_size=12), max_size=3
    ),
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid command with zero to three fields replaced, dropped or added."""
    keys = ["id", "source", "duration_ms", *draw(st.sets(st.sampled_from(KEYS[3:])))]
    doc: dict[str, Any] = {k: draw(VALID[k]) for k in keys}
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "path"]))
        key = draw(st.sampled_from(KEYS))
        if action == "replace":
            doc[key] = draw(HOSTILE)
        elif action == "drop":
            doc.pop(key, None)
        elif action == "add":
            doc[draw(st.text(max_size=8) | PATHLIKE)] = draw(HOSTILE)
        else:
            doc[draw(st.sampled_from(["label", "session", "id"]))] = draw(PATHLIKE)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


PAYLOADS = st.one_of(
    mutated(),
    mutated(),
    mutated(),
    mutated(),
    mutated().map(lambda raw: raw[: len(raw) // 2]),  # truncated JSON
    st.binary(max_size=64),  # not JSON, often not UTF-8
    HOSTILE.map(lambda v: json.dumps(v).encode()),  # JSON, not an object
    st.integers(MAX_COMMAND_BYTES - 200, MAX_COMMAND_BYTES * 3).map(  # oversized
        lambda n: json.dumps(
            {
                "id": "big",
                "source": "accel",
                "duration_ms": 1,
                "metadata": {"pad": "y" * min(n, 1000), "pad2": "z" * n},
            }
        ).encode()
    ),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS)
def test_every_payload_is_refused_or_safe(raw: bytes) -> None:
    """Whatever arrives: an InputError naming a field, or a command that is safe to run."""
    try:
        cmd = validate(raw, SOURCES, MAX_MS)
    except InputError as exc:
        head = exc.field.split(".")[0]
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        keys = list(doc) if isinstance(doc, dict) else []
        assert head in ("", *KEYS) or any(k.startswith(head) for k in keys)  # an unknown key
        assert exc.message
        event(f"refused: {head or 'payload'}")
        return
    event("accepted")
    assert len(raw) <= MAX_COMMAND_BYTES
    assert cmd.source in SOURCES
    assert 1 <= cmd.duration_ms <= MAX_MS
    assert ID_RE.match(cmd.id)
    for text in (cmd.label, cmd.session):
        assert text is None or (TEXT_RE.match(text) and "/" not in text and text.strip(".") != "")
    assert all(isinstance(v, str) for v in cmd.metadata.values())
    folder = Path("/captures")
    name = file_name(cmd, ".json", 1_700_000_000.0)
    assert (folder / name).parent == folder
    assert not name.startswith(".") and "/" not in name and re.fullmatch(r"[\w.-]+", name)

"""Sidecars and info.labels files against 20,000 generated hostile documents.

The generator and its rules are in ``tests/fuzzdocs.py``; ``bench/fuzz.py`` runs 100,000.
Whatever the bytes: a sidecar gives a usable context or a ``SidecarError`` naming the
sidecar and the key; an info file gives entries inside its own folder, bad entries named
by number, or an ``InputError`` naming the file; nothing else is ever raised. The fixed
cases below are what the fuzz found, kept as regressions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_uploader.bulk.infofile import BadEntry, parse_entry, read_info_file
from edge_uploader.core.sidecar import parse_sidecar
from edge_uploader.errors import InputError, SidecarError
from tests.fuzzdocs import make_info_folder, run_parsers

DOCUMENTS = 20_000
SEED = 20261202


def test_generated_documents_break_no_rule(tmp_path: Path) -> None:
    tally = run_parsers(SEED, DOCUMENTS, tmp_path)
    assert tally.broken == []
    assert sum(tally.outcomes.values()) > DOCUMENTS  # an info file counts each entry
    # the generator reaches every branch: each key refused, and valid documents accepted
    for kind in ("label", "category", "metadata", "unknown key", "not valid JSON",
                 "larger than", "expected a JSON"):  # fmt: skip
        assert tally.outcomes[f"sidecar refused: {kind}"] > 0, kind
    for key in ("path", "name", "category", "label", "metadata", "boundingBoxes"):
        assert tally.outcomes[f"entry refused: {key}"] > 0, key
    assert tally.outcomes["sidecar accepted"] > 500
    assert tally.outcomes["info entry accepted"] > 500
    assert tally.outcomes["info file refused"] > 100


# -- what the fuzz found (seed 1, documents 101, 138, 394) -----------------------------------
HUGE = b"1" * 5000


@pytest.mark.parametrize(
    "raw", [b'{"label": ' + HUGE + b"}", b'{"metadata": {"a": ' + HUGE + b"}}"]
)
def test_a_sidecar_with_a_5000_digit_number_is_refused(raw: bytes) -> None:
    """Python refuses to convert integers of more than 4,300 digits with a ValueError that
    is not a JSONDecodeError: it escaped the parser and stopped intake of the batch."""
    with pytest.raises(SidecarError) as info:
        parse_sidecar(raw, "x.wav.meta.json")
    assert info.value.field == "x.wav.meta.json"
    assert info.value.message.startswith("not valid JSON")


@pytest.mark.parametrize(
    ("body", "whole"),
    [
        (b'{"files": [' + HUGE + b"]}", True),
        (b'{"files": [{"path": "a.wav", "x": ' + HUGE + b"}]}", True),
        (b'{"__ndjson":true}\n{"__key":"files","__item":' + HUGE + b"}\n", False),
        (b'{"__ndjson":true}\n' + HUGE + b"\n", False),
    ],
)
def test_an_info_file_with_a_5000_digit_number_is_refused(
    tmp_path: Path, body: bytes, whole: bool
) -> None:
    info = make_info_folder(tmp_path / "infos", tmp_path / "outside.txt")
    info.write_bytes(body)
    if whole:  # JSON: nothing after a syntax error can be trusted
        with pytest.raises(InputError) as exc:
            list(read_info_file(info))
        assert exc.value.field == str(info) and "not valid JSON" in exc.value.message
    else:  # NDJSON: only that line is lost
        (bad,) = list(read_info_file(info))
        assert isinstance(bad, BadEntry) and bad.where == f"{info}: line 2"
        assert bad.reason == "not valid JSON: a number with too many digits"


def test_an_entry_path_with_a_name_over_255_bytes_is_refused(tmp_path: Path) -> None:
    """ENAMETOOLONG from the existence check escaped as an OSError."""
    got = parse_entry({"path": "x" * 300}, 1, tmp_path, "info.labels: entry 1")
    assert isinstance(got, BadEntry)
    assert got.reason.startswith("path: not a usable path")

"""info.labels parsing: both encodings, every label type, and every way an entry can be bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_uploader.bulk import infofile
from edge_uploader.bulk.infofile import BadEntry, InfoEntry, read_info_file
from edge_uploader.core.tagger import UNSET
from edge_uploader.errors import InputError


def _tree(root: Path) -> None:
    (root / "training").mkdir(parents=True)
    (root / "testing").mkdir()
    (root / "training" / "idle.01.wav").write_bytes(b"a")
    (root / "testing" / "car.1.png").write_bytes(b"b")


def _entries(path: Path) -> list[InfoEntry | BadEntry]:
    return list(read_info_file(path))


def test_json_entries_with_every_label_type(tmp_path: Path) -> None:
    _tree(tmp_path)
    doc = {
        "version": 1,
        "files": [
            {
                "path": "training/idle.01.wav",
                "category": "training",
                "label": {"type": "label", "label": "idle"},
                "metadata": {"site": "A"},
            },
            {
                "path": "testing/car.1.png",
                "name": "renamed-ok",
                "category": "testing",
                "label": {"type": "unlabeled"},
                "boundingBoxes": [{"label": "car", "x": 1, "y": 2, "width": 30, "height": 40.5}],
            },
            {
                "path": "training/idle.01.wav",
                "label": {
                    "type": "multi-label",
                    "labels": [
                        {"label": "a", "startIndex": 0, "endIndex": 9},
                        {"label": "b", "startIndex": 10, "endIndex": 19},
                    ],
                },
            },
            {
                "path": "training/idle.01.wav",
                "label": {"type": "keyvalue-labels", "labels": {"speed": "fast"}},
            },
        ],
    }
    (tmp_path / "info.labels").write_text(json.dumps(doc, indent=2))
    got = _entries(tmp_path / "info.labels")
    assert all(isinstance(e, InfoEntry) for e in got), got
    a, b, c, d = got  # type: ignore[misc]
    assert (a.label, a.category, dict(a.metadata), a.parts) == (
        "idle",
        "training",
        {"site": "A"},
        (),
    )
    assert a.path == (tmp_path / "training" / "idle.01.wav").resolve()
    assert b.label == "" and b.upload_name == "renamed-ok.png" and b.file_name == "renamed-ok.png"
    box = json.loads(b.parts[0]["content"])
    assert b.parts[0]["name"] == "bounding_boxes.labels"
    assert box == {
        "version": 1,
        "type": "bounding-box-labels",
        "boundingBoxes": {
            "renamed-ok.png": [{"label": "car", "x": 1, "y": 2, "width": 30, "height": 40.5}]
        },
    }
    assert c.label is UNSET and c.parts[0]["name"] == "structured_labels.labels"
    assert json.loads(c.parts[0]["content"])["structuredLabels"]["idle.01.wav"][1]["endIndex"] == 19
    assert d.parts[0]["name"] == "label_map.labels"
    assert json.loads(d.parts[0]["content"])["labels"] == {"idle.01.wav": {"speed": "fast"}}


def test_ndjson_entries(tmp_path: Path) -> None:
    _tree(tmp_path)
    lines = [
        {"__ndjson": True, "version": 1},
        {
            "__key": "files",
            "__item": {"path": "training/idle.01.wav", "label": {"type": "label", "label": "idle"}},
        },
        {"__key": "somethingElse", "__item": {}},
        {"__key": "files", "__item": {"path": "testing/car.1.png", "category": "testing"}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    (tmp_path / "info.labels").write_text(text)
    got = _entries(tmp_path / "info.labels")
    assert [type(e).__name__ for e in got] == ["InfoEntry", "InfoEntry", "BadEntry"]
    assert "line 5" in str(got[2]) and "not valid JSON" in str(got[2])
    assert got[1].category == "testing"  # type: ignore[union-attr]


def test_bad_entries_are_reported_and_the_rest_proceeds(tmp_path: Path) -> None:
    _tree(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.wav"
    outside.write_bytes(b"x")
    (tmp_path / "link.wav").symlink_to(outside)
    files = [
        {"path": "training/missing.wav"},
        "not an object",
        {"path": "training/idle.01.wav", "metadata": {"n": 5}},
        {"path": "../" + outside.name},
        {"path": str(outside)},
        {"path": "link.wav"},
        {"path": "training/idle.01.wav", "label": {"type": "label"}},
        {"path": "training/idle.01.wav", "category": "nonsense"},
        {"path": "training/idle.01.wav", "name": "a/b"},
        {"path": "training/idle.01.wav", "boundingBoxes": [{"label": "x", "x": "1"}]},
        {
            "path": "training/idle.01.wav",
            "label": {
                "type": "multi-label",
                "labels": [{"label": "a", "startIndex": 1, "endIndex": 3}],
            },
        },
        {"name": "no path"},
        {"path": "testing"},
        {"path": "testing/car.1.png"},
    ]
    (tmp_path / "info.labels").write_text(json.dumps({"version": 1, "files": files}))
    got = _entries(tmp_path / "info.labels")
    assert len(got) == len(files)
    *bad, good = got
    assert isinstance(good, InfoEntry) and good.path.name == "car.1.png"
    reasons = [str(b) for b in bad]
    assert all(isinstance(b, BadEntry) for b in bad), reasons
    expected = [
        "file not found",
        "expected a JSON object",
        "metadata values must be strings",
        "outside the info file's folder",
        "outside the info file's folder",
        "outside the info file's folder",
        "label.label",
        "category",
        "name",
        "boundingBoxes[0].x",
        "without gaps",
        "path: required",
        "not a regular file",
    ]
    for reason, text in zip(reasons, expected, strict=True):
        assert text in reason, (text, reason)
    assert "entry 1 (training/missing.wav)" in reasons[0]


def test_streaming_reads_entries_across_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path)
    monkeypatch.setattr(infofile, "_CHUNK", 7)
    files = [
        {"path": "training/idle.01.wav", "metadata": {"i": str(i) * 30}, "x": 123456789}
        for i in range(40)
    ]
    (tmp_path / "info.labels").write_text(
        json.dumps({"version": 1, "other": {"deep": [1, 2.5, "x"]}, "files": files, "tail": 42})
    )
    got = _entries(tmp_path / "info.labels")
    assert len(got) == 40 and all(isinstance(e, InfoEntry) for e in got)
    assert got[39].metadata["i"] == "39" * 30  # type: ignore[union-attr]


def test_unreadable_info_files(tmp_path: Path) -> None:
    for text, message in [
        ('{"version": 2, "files": []}', "unsupported info file version"),
        ('{"files": [ {"path": "a"} ', "not valid JSON"),
        ("[1, 2]", "not valid JSON"),
        ('{"version": 1}', 'no "files" list'),
        ('{"__ndjson":true,"version":3}\n', "unsupported info file version"),
    ]:
        path = tmp_path / "info.labels"
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            _entries(path)
    with pytest.raises(InputError, match="cannot read"):
        read_info_file(tmp_path / "nope.labels")


def test_an_oversized_entry_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infofile, "MAX_ENTRY_BYTES", 1000)
    path = tmp_path / "info.labels"
    path.write_text(json.dumps({"files": [{"path": "a", "metadata": {"k": "v" * 5000}}]}))
    got = _entries(path)
    assert len(got) == 1 and "entry 1: larger than 1000 bytes" in str(got[0])
    monkeypatch.setattr(infofile, "_CHUNK", 100)  # a broken entry is not buffered forever
    path.write_text('{"files": [{"path": "' + "a" * 5000)
    with pytest.raises(InputError, match="larger than 1000 bytes or not valid JSON"):
        _entries(path)
    lines = ['{"__ndjson":true}', json.dumps({"__key": "files", "__item": {"path": "x" * 5000}})]
    path.write_text("\n".join(lines) + "\n")
    got = _entries(path)
    assert len(got) == 1 and "longer than 1000 bytes" in str(got[0])


def test_deeply_nested_entries_are_refused_not_a_crash(tmp_path: Path) -> None:
    """Nested brackets within the entry size limit make the JSON decoder raise
    RecursionError: an NDJSON line is a bad entry (the rest proceeds); in JSON the
    reading ends with an InputError naming the file."""
    _tree(tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    good = json.dumps({"__key": "files", "__item": {"path": "training/idle.01.wav"}})
    (tmp_path / "nd.labels").write_text(
        '{"__ndjson":true,"version":1}\n' + f'{{"__key":"files","__item":{deep}}}\n' + good + "\n"
    )
    got = _entries(tmp_path / "nd.labels")
    assert [type(e).__name__ for e in got] == ["BadEntry", "InfoEntry"]
    assert "line 2" in str(got[0]) and "not valid JSON" in str(got[0])
    (tmp_path / "js.labels").write_text('{"version": 1, "files": [' + deep + "]}")
    with pytest.raises(InputError, match=r"js\.labels.*nested too deeply"):
        _entries(tmp_path / "js.labels")

"""The tagger: layer order, label semantics, group-aware split, sidecars and limits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_uploader import __version__
from edge_uploader.config import Config, TaggingConfig
from edge_uploader.core.sidecar import (
    MAX_SIDECAR_BYTES,
    is_sidecar,
    parse_sidecar,
    read_sidecar,
    sidecar_path,
)
from edge_uploader.core.tagger import UNSET, Context, group_category, iso_utc, tag
from edge_uploader.errors import InputError, SidecarError
from edge_uploader.metadata import MAX_METADATA_BYTES
from tests.unit.helpers import make_config

PATH = Path("/data/in/sess-7/idle.01.wav")
MTIME = 1_700_000_000.25


def config(**ingestion: Any) -> Config:
    data: dict[str, Any] = {
        "device": {"id": "pi-0042"},
        "metadata": {"site": "north", "a": "static", "b": "static", "c": "static",
                     "d": "static", "device_id": "spoofed"},
        "ingestion": {"category": "training", **ingestion},
        "watch": [{"path": "/data/in", "label": "{dir}", "category": "testing",
                   "metadata": {"b": "watch", "c": "watch", "d": "watch", "session": "{dir}"}}],
    }  # fmt: skip
    return make_config(data)


def test_layers_later_wins() -> None:
    cfg = config()
    t = tag(
        PATH, cfg, mtime=MTIME, watch=cfg.watches[0],
        sidecar=Context(metadata={"c": "sidecar", "d": "sidecar"}),
        context=Context(metadata={"d": "context", "agent_version": "0.0.0-fake"}),
    )  # fmt: skip
    assert t.metadata == {
        "site": "north",
        "a": "static",
        "b": "watch",
        "c": "sidecar",
        "d": "context",
        "session": "sess-7",
        "device_id": "pi-0042",  # derived: the config's device id always wins
        "captured_at": "2023-11-14T22:13:20.250Z",
        "agent_version": __version__,  # derived, always
    }


def test_captured_at_from_a_layer_is_kept() -> None:
    t = tag(PATH, config(), mtime=MTIME, sidecar=Context(metadata={"captured_at": "yesterday"}))
    assert t.metadata["captured_at"] == "yesterday"


def test_captured_at_can_be_turned_off() -> None:
    cfg = replace(config(), tagging=TaggingConfig(captured_at=False))
    assert "captured_at" not in tag(PATH, cfg, mtime=MTIME).metadata
    kept = tag(PATH, cfg, mtime=MTIME, sidecar=Context(metadata={"captured_at": "noon"}))
    assert kept.metadata["captured_at"] == "noon"  # a layer may still set it


def test_without_a_watch_only_static_and_derived() -> None:
    t = tag(PATH, config(), mtime=0.0)
    assert t.label is None
    assert t.category == "training"
    assert t.metadata["captured_at"] == "1970-01-01T00:00:00.000Z"
    assert "session" not in t.metadata


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"


# -- labels -------------------------------------------------------------------------------


def test_label_none_means_infer() -> None:
    assert tag(PATH, make_config(), mtime=0.0).label is None


def test_label_from_watch_template() -> None:
    cfg = config()
    assert tag(PATH, cfg, mtime=0.0, watch=cfg.watches[0]).label == "sess-7"


def test_sidecar_label_overrides_watch_and_context_overrides_sidecar() -> None:
    cfg = config()
    w = cfg.watches[0]
    assert tag(PATH, cfg, mtime=0, watch=w, sidecar=Context(label="cat")).label == "cat"
    both = tag(PATH, cfg, mtime=0, watch=w, sidecar=Context(label="cat"),
               context=Context(label="dog"))  # fmt: skip
    assert both.label == "dog"


def test_a_layer_that_says_nothing_keeps_the_label() -> None:
    cfg = config()
    t = tag(PATH, cfg, mtime=0, watch=cfg.watches[0], sidecar=Context(label=UNSET),
            context=Context(metadata={"x": "y"}))  # fmt: skip
    assert t.label == "sess-7"


def test_sidecar_label_null_means_unlabeled() -> None:
    ctx = parse_sidecar(b'{"label": null}', "s")
    assert ctx.label == ""
    cfg = config()
    assert tag(PATH, cfg, mtime=0, watch=cfg.watches[0], sidecar=ctx).label == ""


def test_context_label_none_means_infer_again() -> None:
    cfg = config()
    assert tag(PATH, cfg, mtime=0, watch=cfg.watches[0], context=Context(label=None)).label is None


def test_sidecar_without_label_says_nothing() -> None:
    assert parse_sidecar(b'{"metadata": {}}', "s").label is UNSET


@pytest.mark.parametrize("label", ["x" * 257, "tab\tlabel", "new\nline"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(InputError, match="printable text of at most 256"):
        tag(PATH, make_config(), mtime=0, context=Context(label=label))


# -- categories ---------------------------------------------------------------------------


def test_category_layers() -> None:
    cfg = config()
    w = cfg.watches[0]
    assert tag(PATH, cfg, mtime=0).category == "training"
    assert tag(PATH, cfg, mtime=0, watch=w).category == "testing"
    assert (
        tag(PATH, cfg, mtime=0, watch=w, sidecar=Context(category="anomaly")).category == "anomaly"
    )
    assert tag(PATH, cfg, mtime=0, watch=w, sidecar=Context(category="anomaly"),
               context=Context(category="split")).category == "split"  # fmt: skip


def test_split_by_group_same_session_same_side() -> None:
    cfg = make_config({"ingestion": {"category": "split-by-group", "testing_fraction": 0.5}})
    sides = {
        tag(Path(f"/d/{folder}/f{i}.wav"), cfg, mtime=float(i),
            context=Context(metadata={"session": "rec-42"})).category
        for i in range(20) for folder in ("a", "b", "c")
    }  # fmt: skip
    assert sides == {group_category("rec-42", 0.5)}
    assert sides <= {"training", "testing"}


def test_split_by_group_uses_the_configured_group_key() -> None:
    cfg = make_config({"ingestion": {"category": "split-by-group", "group_key": "recording"}})
    t = tag(PATH, cfg, mtime=0, context=Context(metadata={"recording": "r1", "session": "s"}))
    assert t.category == group_category("r1", 0.2)


def test_split_by_group_respects_the_fraction_over_many_groups() -> None:
    for fraction in (0.2, 0.5):
        n = 4000
        testing = sum(group_category(f"session-{i}", fraction) == "testing" for i in range(n))
        assert abs(testing / n - fraction) < 0.03


def test_split_by_group_extremes() -> None:
    assert {group_category(f"g{i}", 0.0) for i in range(200)} == {"training"}
    assert {group_category(f"g{i}", 1.0) for i in range(200)} == {"testing"}


def test_split_by_group_is_stable() -> None:
    # the same value lands on the same side in every process and version
    assert [group_category(f"s{i}", 0.2) for i in range(12)] == [
        group_category(f"s{i}", 0.2) for i in range(12)
    ]
    assert group_category("session-1", 0.2) == group_category("session-1", 0.2)


def test_split_by_group_without_a_group_value_groups_by_folder() -> None:
    cfg = make_config({"ingestion": {"category": "split-by-group", "testing_fraction": 0.5}})
    sides = {tag(Path(f"/d/sess-9/f{i}.wav"), cfg, mtime=0).category for i in range(10)}
    assert sides == {group_category("/d/sess-9", 0.5)}
    # and different folders spread over both sides
    spread = {tag(Path(f"/d/s{i}/f.wav"), cfg, mtime=0).category for i in range(40)}
    assert spread == {"training", "testing"}


def test_watch_split_by_group() -> None:
    cfg = make_config({"watch": [{"path": "/d", "category": "split-by-group",
                                  "metadata": {"session": "{dir}"}}]})  # fmt: skip
    t = tag(Path("/d/rec-3/a.wav"), cfg, mtime=0, watch=cfg.watches[0])
    assert t.category == group_category("rec-3", 0.2)


# -- metadata limits ----------------------------------------------------------------------


def test_metadata_over_the_size_limit_is_refused() -> None:
    big = {f"k{i}": "v" * 1000 for i in range(5)}
    with pytest.raises(InputError, match=f"over {MAX_METADATA_BYTES}"):
        tag(PATH, make_config(), mtime=0, context=Context(metadata=big))


def test_metadata_value_checked_after_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EU_TAG_MULTILINE", "x")
    cfg = make_config({"metadata": {"site": "{env:EU_TAG_MULTILINE}"}})
    monkeypatch.setenv("EU_TAG_MULTILINE", "a\nb")  # changed after start-up
    with pytest.raises(InputError, match="NUL or line break"):
        tag(PATH, cfg, mtime=0)


# -- sidecars -----------------------------------------------------------------------------


def test_sidecar_names() -> None:
    assert sidecar_path(PATH) == Path("/data/in/sess-7/idle.01.wav.meta.json")
    assert is_sidecar(Path("/x/a.wav.meta.json"))
    assert not is_sidecar(Path("/x/a.json"))


def test_full_sidecar() -> None:
    raw = json.dumps({"label": "wave é", "category": "testing",
                      "metadata": {"session": "s1", "operator": "Zoë"}}).encode()  # fmt: skip
    ctx = parse_sidecar(raw, "x.meta.json")
    assert ctx == Context(label="wave é", category="testing",
                          metadata={"session": "s1", "operator": "Zoë"})  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"labels": "x"}', "unknown key 'labels' (known: label, category, metadata)"),
        (b'{"metadata": {"n": 1}}', "metadata.n: metadata values must be strings, got int"),
        (b'{"metadata": {"n": null}}', "metadata values must be strings, got NoneType"),
        (b'{"metadata": ["a"]}', "expected an object of strings, got list"),
        (b'{"category": "train"}', "category must be one of"),
        (b'{"category": 3}', "category must be one of"),
        (b'{"label": 5}', "expected a string, got int"),
        (b'{"label": "a\\nb"}', "printable text"),
        (b'{"metadata": {"k": "' + b"v" * 1025 + b'"}}', "longer than 1024"),
    ],
)
def test_bad_sidecars(raw: bytes, message: str) -> None:
    with pytest.raises(SidecarError) as info:
        parse_sidecar(raw, "/d/a.wav.meta.json")
    assert info.value.field.startswith("/d/a.wav.meta.json")
    assert message in str(info.value)


def test_sidecar_too_large() -> None:
    raw = b'{"metadata": {"k": "' + b" " * MAX_SIDECAR_BYTES + b'"}}'
    with pytest.raises(SidecarError, match=f"larger than {MAX_SIDECAR_BYTES} bytes"):
        parse_sidecar(raw, "s")


def test_read_sidecar(tmp_path: Path) -> None:
    data = tmp_path / "a.wav"
    data.write_bytes(b"x")
    assert read_sidecar(data) is None
    sidecar_path(data).write_text('{"label": "dog"}')
    ctx = read_sidecar(data)
    assert ctx is not None and ctx.label == "dog"


def test_read_sidecar_too_large_file(tmp_path: Path) -> None:
    data = tmp_path / "a.wav"
    sidecar_path(data).write_bytes(b" " * (MAX_SIDECAR_BYTES + 10))
    with pytest.raises(SidecarError) as info:
        read_sidecar(data)
    assert info.value.field == str(sidecar_path(data))


def test_read_sidecar_that_is_a_folder(tmp_path: Path) -> None:
    data = tmp_path / "a.wav"
    sidecar_path(data).mkdir()
    with pytest.raises(SidecarError, match="cannot read"):
        read_sidecar(data)


def test_a_file_directly_in_the_watch_gets_no_session_folder() -> None:
    """``{dir}`` at the top of a watch would be the watch folder's own name."""
    cfg = make_config({"watch": [{"path": "/d", "category": "split-by-group", "label": "{dir}",
                                  "metadata": {"session": "{dir}", "rig": "r-{stem}"}}]})  # fmt: skip
    top = tag(Path("/d/a.wav"), cfg, mtime=0, watch=cfg.watches[0])
    assert "session" not in top.metadata and top.metadata["rig"] == "r-a"
    assert top.category == group_category("/d", 0.2)  # grouped by its folder, as documented
    assert top.label == "d"  # labels are not session keys: unchanged
    below = tag(Path("/d/rec-3/a.wav"), cfg, mtime=0, watch=cfg.watches[0])
    assert below.metadata["session"] == "rec-3"

"""Intake: names, file checks, sidecars, held files and dedup, on a real queue file."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import Config
from edge_uploader.core import intake as intake_mod
from edge_uploader.core.files import ignored_name, matches, walk
from edge_uploader.core.intake import Intake, Item
from edge_uploader.core.sidecar import sidecar_path
from edge_uploader.core.tagger import Context
from edge_uploader.events import Event, Stats
from edge_uploader.store.queue import Queue, State
from tests.fakes import FakeClock
from tests.unit.helpers import make_config


class Rig:
    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.root = tmp_path / "in"
        self.root.mkdir()
        self.config: Config = make_config({
            "device": {"id": "pi-7"},
            "metadata": {"site": "north"},
            "watch": [{"path": str(self.root), "metadata": {"session": "{dir}"},
                       "after_upload": "delete"}],
        })  # fmt: skip
        self.watch = self.config.watches[0]
        self.queue = Queue(tmp_path / "queue.db", clock=clock)
        self.stats = Stats()
        self.events: list[tuple[Event, dict[str, Any]]] = []
        self.stats.subscribe(lambda e, info: self.events.append((e, info)))
        self.woken = 0
        self.intake = Intake(self.queue, self.config, self.stats, on_queued=self._wake)

    def _wake(self) -> None:
        self.woken += 1

    def file(self, rel: str, content: bytes = b"data") -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def process(self, *paths: Path, **kw: Any) -> list[int]:
        kw.setdefault("watch", self.watch)
        return self.intake.process([Item(path=p, **kw) for p in paths])

    def skipped(self) -> dict[str, str]:
        return {Path(i["path"]).name: i["reason"] for e, i in self.events if e is Event.SKIPPED}


@pytest.fixture
def rig(tmp_path: Path, clock: FakeClock) -> Iterator[Rig]:
    r = Rig(tmp_path, clock)
    yield r
    r.queue.close()


def test_a_file_is_tagged_and_queued(rig: Rig) -> None:
    path = rig.file("sess-3/a.wav")
    (rid,) = rig.process(path)
    row = rig.queue.get(rid)
    assert row is not None
    st = os.stat(path)
    assert (row.path, row.size, row.mtime_ns) == (str(path), 4, st.st_mtime_ns)
    assert (row.state, row.source, row.category, row.label) == (
        State.PENDING,
        rig.watch.key,
        "training",
        None,
    )
    assert row.after_upload == "delete"
    assert {k: row.metadata[k] for k in ("site", "session", "device_id")} == {
        "site": "north",
        "session": "sess-3",
        "device_id": "pi-7",
    }
    assert rig.woken == 1
    assert [e for e, _ in rig.events] == [Event.SEEN, Event.QUEUED]


def test_a_watch_priority_goes_into_the_row(rig: Rig) -> None:
    urgent = replace(rig.watch, priority=7)
    (plain,) = rig.process(rig.file("a.wav"))
    (first,) = rig.process(rig.file("b.wav"), watch=urgent)
    assert [r.id for r in rig.queue.lease(2)] == [first, plain]


@pytest.mark.parametrize(
    "name",
    [".hidden.wav", "a.wav.tmp", "a.wav.part", "a.wav.partial", "a.wav.crdownload", "a.wav~",
     ".a.wav.swp", "A.WAV.TMP"],
)  # fmt: skip
def test_hidden_and_temporary_names_are_never_queued(rig: Rig, name: str) -> None:
    assert ignored_name(name)
    calls: list[tuple[int | None, str | None]] = []
    item = Item(path=rig.file(name), watch=rig.watch, on_queued=lambda i, r: calls.append((i, r)))
    assert rig.intake.process([item]) == []
    assert rig.queue.counts()["pending"] == 0
    assert calls == [(None, "hidden or temporary name")]


def test_ordinary_names_are_not_ignored() -> None:
    assert not ignored_name("a.wav")
    assert not ignored_name("partial.wav")
    assert matches("IDLE.WAV", ("*.wav",))
    assert not matches("idle.mp3", ("*.wav", "*.csv"))


def test_empty_non_regular_and_vanished_are_skipped_not_fatal(rig: Rig) -> None:
    empty = rig.file("empty.wav", b"")
    folder = rig.root / "folder.wav"
    folder.mkdir()
    fifo = rig.root / "fifo.wav"
    os.mkfifo(fifo)
    link = rig.root / "link.wav"
    link.symlink_to(rig.file("target.bin"))
    sock_path = rig.root / "sock.wav"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    good = rig.file("good.wav")
    try:
        ids = rig.process(empty, folder, fifo, link, sock_path, rig.root / "absent.wav", good)
    finally:
        sock.close()
    assert len(ids) == 1
    assert [r.path for r in rig.queue.rows()] == [str(good)]
    assert rig.skipped() == {
        "empty.wav": "empty file",
        "folder.wav": "not a regular file",
        "fifo.wav": "not a regular file",
        "link.wav": "not a regular file",
        "sock.wav": "not a regular file",
        "absent.wav": "vanished before it could be queued",
    }


def test_unreadable_file_is_skipped(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = rig.file("secret.wav")
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the permission check see a plain user
        real = os.access
        monkeypatch.setattr(intake_mod.os, "access",
                            lambda p, m: False if Path(p) == secret else real(p, m))  # fmt: skip
    good = rig.file("good.wav")
    assert len(rig.process(secret, good)) == 1
    assert rig.skipped() == {"secret.wav": "not readable by the agent"}


def test_known_files_are_not_queued_twice(rig: Rig) -> None:
    path = rig.file("a.wav")
    assert len(rig.process(path)) == 1
    assert rig.process(path) == []
    assert rig.process(path, path) == []
    assert rig.queue.counts()["pending"] == 1
    assert rig.woken == 1  # nothing new: the pipeline is not woken


def test_the_same_path_twice_in_one_batch(rig: Rig) -> None:
    path = rig.file("a.wav")
    assert len(rig.process(path, path)) == 1


def test_a_rewritten_file_is_a_new_version(rig: Rig) -> None:
    path = rig.file("a.wav")
    rig.process(path)
    st = os.stat(path)
    path.write_bytes(b"longer data")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert len(rig.process(path)) == 1
    assert rig.queue.counts()["pending"] == 2


def test_on_queued_reports_the_row(rig: Rig) -> None:
    calls: list[tuple[int | None, str | None]] = []
    path = rig.file("a.wav")
    rig.intake.process(
        [Item(path=path, watch=rig.watch, on_queued=lambda i, r: calls.append((i, r)))]
    )
    rig.intake.process(
        [Item(path=path, watch=rig.watch, on_queued=lambda i, r: calls.append((i, r)))]
    )
    rig.intake.process(
        [Item(path=rig.root / "nope.wav", on_queued=lambda i, r: calls.append((i, r)))]
    )
    row = rig.queue.latest_for_path(str(path))
    assert row is not None
    assert calls == [(row.id, None), (row.id, None), (None, "vanished before it could be queued")]


def test_item_options_override_the_watch(rig: Rig) -> None:
    path = rig.file("a.wav")
    (rid,) = rig.process(path, source="upload:cli", after_upload="keep", allow_duplicates=True,
                         upload_name="renamed.wav", batch="b1",
                         context=Context(label="cat", metadata={"operator": "zoe"}))  # fmt: skip
    row = rig.queue.get(rid)
    assert row is not None
    assert (row.source, row.after_upload, row.allow_duplicates, row.file_name, row.batch) == (
        "upload:cli",
        "keep",
        True,
        "renamed.wav",
        "b1",
    )
    assert (row.label, row.metadata["operator"]) == ("cat", "zoe")


def test_without_a_watch(rig: Rig) -> None:
    path = rig.file("a.wav")
    (rid,) = rig.intake.process([Item(path=path)])
    row = rig.queue.get(rid)
    assert row is not None
    assert (row.source, row.after_upload, row.move_to) == ("upload", "keep", None)
    assert "session" not in row.metadata


# -- sidecars and held files --------------------------------------------------------------


def test_sidecar_is_applied(rig: Rig) -> None:
    path = rig.file("a.wav")
    sidecar_path(path).write_text(
        '{"label": null, "category": "testing", "metadata": {"rig": "B"}}'
    )
    (rid,) = rig.process(path)
    row = rig.queue.get(rid)
    assert row is not None
    assert (row.label, row.category, row.metadata["rig"]) == ("", "testing", "B")


def test_a_held_file_is_released_when_its_sidecar_is_fixed(rig: Rig, clock: FakeClock) -> None:
    path = rig.file("sess-1/a.wav")
    side = sidecar_path(path)
    side.write_text('{"label": "cat", "metadata": {"n": 1}}')
    (rid,) = rig.process(path)
    row = rig.queue.get(rid)
    assert row is not None
    assert row.state is State.HELD
    assert (
        row.last_error is not None and "metadata values must be strings, got int" in row.last_error
    )
    assert rig.queue.lease(10) == []
    assert [e for e, _ in rig.events][-1] is Event.HELD

    # seeing the data file again changes nothing; a still-broken sidecar keeps it held
    assert rig.process(path) == []
    side.write_text("{broken")
    rig.process(side)
    assert rig.queue.counts()["held"] == 1

    side.write_text('{"label": "cat", "metadata": {"n": "1"}}')
    woken = rig.woken
    assert rig.process(side) == []  # a sidecar is never queued itself
    row = rig.queue.get(rid)
    assert row is not None
    assert (row.state, row.label, row.last_error) == (State.PENDING, "cat", None)
    assert (row.metadata["n"], row.metadata["session"], row.metadata["site"]) == (
        "1",
        "sess-1",
        "north",
    )
    assert rig.woken == woken + 1
    assert [r.id for r in rig.queue.lease(10)] == [rid]


def test_a_sidecar_without_a_held_file_does_nothing(rig: Rig) -> None:
    path = rig.file("a.wav")
    sidecar_path(path).write_text("{}")
    assert rig.process(sidecar_path(path)) == []
    assert rig.queue.counts()["pending"] == 0


def test_oversize_metadata_is_held(rig: Rig) -> None:
    path = rig.file("a.wav")
    big = {f"k{i}": "v" * 1000 for i in range(5)}
    (rid,) = rig.process(path, context=Context(metadata=big))
    row = rig.queue.get(rid)
    assert row is not None and row.state is State.HELD
    assert row.last_error is not None and "over 4096" in row.last_error


# -- the thread ---------------------------------------------------------------------------


def test_submit_and_wait_idle(rig: Rig) -> None:
    rig.intake.start()
    try:
        paths = [rig.file(f"s/{i}.wav", str(i).encode()) for i in range(300)]
        for p in paths:
            rig.intake.submit(Item(path=p, watch=rig.watch))
        assert rig.intake.wait_idle(10)
        assert rig.queue.counts()["pending"] == 300
    finally:
        rig.intake.stop()


def test_a_backlog_is_recorded_first_in_a_small_batch_then_in_doubling_ones(rig: Rig) -> None:
    """The first files of a backlog can be sent once their batch is recorded: it is small;
    while files keep waiting the batches double (few transactions on a long backlog)."""
    sizes: list[int] = []
    process = rig.intake.process
    rig.intake.process = lambda items: sizes.append(len(items)) or process(items)  # type: ignore[method-assign]
    for i in range(700):  # all waiting before intake starts: a scan's backlog
        rig.intake.submit(Item(path=rig.file(f"s/{i}.wav", str(i).encode()), watch=rig.watch))
    rig.intake.start()
    try:
        assert rig.intake.wait_idle(10)
        assert sizes == [32, 64, 128, 256, 220]
        rig.intake.submit(Item(path=rig.file("late.wav"), watch=rig.watch))
        assert rig.intake.wait_idle(10)
        assert sizes[-1] == 1 and rig.intake._batch == intake_mod.FIRST_BATCH
        assert rig.queue.counts()["pending"] == 701
    finally:
        rig.intake.stop()


def test_walk_skips_hidden_folders_and_symlinked_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / "b" / "x.wav").write_bytes(b"1")
    (tmp_path / "top.wav").write_bytes(b"1")
    (tmp_path / ".hidden" / "y.wav").write_bytes(b"1")
    (tmp_path / ".dot.wav").write_bytes(b"1")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    found = sorted(str(p.relative_to(tmp_path)) for p in walk(tmp_path, True))
    assert found == ["a/b/x.wav", "top.wav"]
    assert [p.name for p in walk(tmp_path, False)] == ["top.wav"]


def test_a_deeply_nested_sidecar_is_held_and_the_batch_proceeds(rig: Rig) -> None:
    """A sidecar of nested brackets (fits in the size limit) makes the JSON decoder raise
    RecursionError: that file is held, the other files of the batch are queued."""
    bad = rig.file("a.wav")
    sidecar_path(bad).write_text("[" * 30000 + "]" * 30000)
    good = rig.file("b.wav")
    rig.process(bad, good)
    bad_row, good_row = rig.queue.latest_for_path(str(bad)), rig.queue.latest_for_path(str(good))
    assert bad_row is not None and bad_row.state is State.HELD
    assert "not valid JSON" in (bad_row.last_error or "")
    assert good_row is not None and good_row.state is State.PENDING

"""after_upload = "move": the moved file's new name is synced before its old one goes.

On a file system that commits names per folder (POSIX's promise; FAT comes close), a
rename is durable in the target folder only after that folder is synced; a power cut
could otherwise keep the file gone from its folder but never arrived in the target.
The power-cut proof of the same, on a real mount, is in tests/integration/test_storms.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edge_uploader.core import after_upload
from edge_uploader.core.after_upload import AfterUpload
from edge_uploader.store.queue import NewFile, Queue, Result, State


def delivered_row(tmp_path: Path, src: Path, move_to: Path):  # type: ignore[no-untyped-def]
    queue = Queue(tmp_path / "queue.db")
    st = src.stat()
    new = NewFile(str(src), st.st_size, st.st_mtime_ns, "watch:in", None, "training", {},
                  after_upload="move", move_to=str(move_to))  # fmt: skip
    (rid,) = queue.enqueue_many([new])
    queue.lease(1)
    queue.settle([Result(rid, State.DELIVERED, sample_id=1)], durable=True)
    (row,) = queue.unfinished_local_actions()
    queue.close()
    return row


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Each folder sync, with the folder's names at that moment."""
    calls: list[tuple[str, list[str]]] = []
    real = after_upload.sync_folder

    def record(folder: Path) -> None:
        calls.append((str(folder), sorted(os.listdir(folder))))
        real(folder)

    monkeypatch.setattr(after_upload, "sync_folder", record)
    return calls


def test_move_syncs_new_folders_then_the_target_then_the_source(
    tmp_path: Path, synced: list[tuple[str, list[str]]]
) -> None:
    watch, done = tmp_path / "in", tmp_path / "done"
    (watch / "s1").mkdir(parents=True)
    src = watch / "s1" / "a.wav"
    src.write_bytes(b"a" * 100)
    row = delivered_row(tmp_path, src, done)
    assert AfterUpload({"watch:in": watch}).finish(row)
    assert (done / "s1" / "a.wav").read_bytes() == b"a" * 100
    assert synced == [
        (str(tmp_path), sorted(os.listdir(tmp_path))),  # "done" made: its name synced
        (str(done), ["s1"]),  # "done/s1" made
        (str(done / "s1"), ["a.wav"]),  # the file arrived: synced before ...
        (str(watch / "s1"), []),  # ... its old name's removal is
    ]


def test_move_across_file_systems_syncs_the_copy_before_the_source_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synced: list[tuple[str, list[str]]]
) -> None:
    watch, done = tmp_path / "in", tmp_path / "done"
    watch.mkdir()
    src = watch / "b.wav"
    src.write_bytes(b"b" * 100)
    row = delivered_row(tmp_path, src, done)
    done.mkdir()

    def exdev(self: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(Path, "rename", exdev)
    assert AfterUpload({"watch:in": watch}).finish(row)
    assert (done / "b.wav").read_bytes() == b"b" * 100 and not src.exists()
    assert (str(done), ["b.wav"]) == synced[0]  # the copy, before the source was unlinked
    assert synced[-1] == (str(watch), [])


def test_a_round_of_moves_syncs_each_folder_once(
    tmp_path: Path, synced: list[tuple[str, list[str]]]
) -> None:
    """Two syncs per file would cost two journal commits each on an SD card."""
    watch, done = tmp_path / "in", tmp_path / "done"
    watch.mkdir()
    done.mkdir()
    queue = Queue(tmp_path / "queue.db")
    news = []
    for name in ("a.wav", "b.wav", "c.wav"):
        (watch / name).write_bytes(name.encode() * 10)
        st = (watch / name).stat()
        news.append(NewFile(str(watch / name), st.st_size, st.st_mtime_ns, "watch:in", None,
                            "training", {}, after_upload="move", move_to=str(done)))  # fmt: skip
    ids = queue.enqueue_many(news)
    queue.lease(3)
    queue.settle([Result(i, State.DELIVERED, sample_id=i) for i in ids], durable=True)
    rows = queue.unfinished_local_actions()
    queue.close()
    assert sorted(AfterUpload({"watch:in": watch}).finish_all(rows)) == sorted(ids)
    assert synced == [(str(done), ["a.wav", "b.wav", "c.wav"]), (str(watch), [])]

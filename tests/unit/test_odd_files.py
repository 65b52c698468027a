"""Files the field throws at the agent: names that are not UTF-8 or carry control
characters, 255-byte names, files written to while they are read and an inotify queue
that overflows. Real SQLite, real files, real inotify."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_uploader.core.sidecar import read_sidecar
from edge_uploader.errors import Outcome
from edge_uploader.remote import ingestion
from edge_uploader.remote.ingestion import SMALL_BODY_BYTES, Sample, Uploader, make_client
from edge_uploader.secrets import Secret
from edge_uploader.sources.watcher import OVERFLOW_LOGGER, Watcher
from edge_uploader.store.queue import Queue, State
from edge_uploader.store.status import gather
from edge_uploader.text import safe_name, shown
from tests.fakes import FakeClock
from tests.unit.helpers import make_config, new_file

BAD = os.fsdecode(b"bad\xff\xfe name\nwith \x1b[2J.wav")
"""A name as the agent sees it: undecodable bytes surrogate-escaped, a newline, an escape."""
OK = {"success": True, "files": [{"success": True, "sampleId": 1}]}


@pytest.fixture
def q(tmp_path: Path, clock: FakeClock) -> Iterator[Queue]:
    queue = Queue(tmp_path / "queue.db", clock=clock)
    yield queue
    queue.close()


def test_a_name_that_is_not_utf8_is_queued_with_its_batch(q: Queue) -> None:
    """SQLite cannot store such a string as text: it used to fail the whole batch."""
    path = f"/cap/{BAD}"
    recorded = q.record([new_file("/cap/a.wav"), new_file(path), new_file("/cap/b.wav")])
    assert [r.new for r in recorded] == [True, True, True]
    assert q.known(path, 10, 1_000_000_000)
    row = q.latest_for_path(path)
    assert row is not None and row.path == path
    assert os.fsencode(row.path) == b"/cap/bad\xff\xfe name\nwith \x1b[2J.wav"
    assert not q.record([new_file(path)])[0].new  # a known version is not queued twice
    (leased,) = [r for r in q.lease(10) if r.path == path]
    assert leased.state is State.UPLOADING


def test_the_name_on_the_wire_is_utf8_without_control_characters(q: Queue) -> None:
    (rid,) = q.enqueue_many([new_file(f"/cap/{BAD}")])
    row = q.get(rid)
    assert row is not None
    assert row.file_name == "bad__ name_with _[2J.wav" == safe_name(BAD)
    assert len(safe_name("é" * 127).encode()) == 254  # never longer than the name was
    assert shown(BAD) == "bad\\xff\\xfe name\\nwith \\x1b[2J.wav"


def test_the_status_document_shows_such_names_escaped(q: Queue) -> None:
    q.enqueue_many([new_file(f"/cap/{BAD}", state=State.HELD, last_error=f"/cap/{BAD}: bad")])
    (held,) = gather(q)["held"]
    assert held["path"] == "/cap/bad\\xff\\xfe name\\nwith \\x1b[2J.wav"
    assert "\n" not in held["reason"] and "\udcff" not in held["reason"]


@pytest.fixture
def sent() -> list[bytes]:
    return []


@pytest.fixture
def uploader(sent: list[bytes]) -> Iterator[Uploader]:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(200, json=OK)

    client = make_client(concurrency=2, timeout=5, connect_timeout=5,
                         transport=httpx.MockTransport(answer))  # fmt: skip
    yield Uploader(client, "http://ingest.test", Secret("ei_k"))
    client.close()


@pytest.mark.parametrize("size", [SMALL_BODY_BYTES // 2, SMALL_BODY_BYTES * 3])
def test_a_file_appended_to_while_it_is_read_is_not_sent(
    uploader: Uploader, sent: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:  # fmt: skip
    """The writer appends after the file was checked and opened: the half-done version is
    never sent (the next close queues the complete one)."""
    path = tmp_path / "growing.wav"
    path.write_bytes(b"a" * size)
    st = path.stat()
    real_open = ingestion._open

    def open_then_append(sample: Sample) -> object:
        got = real_open(sample)
        with open(path, "ab") as fh:
            fh.write(b"b" * 100)
        return got

    monkeypatch.setattr(ingestion, "_open", open_then_append)
    a = uploader.upload(Sample(path=path, file_name=path.name, category="training",
                               label=None, metadata={}, expect_size=st.st_size,
                               expect_mtime_ns=st.st_mtime_ns))  # fmt: skip
    assert a.outcome is Outcome.GONE, a
    assert "changed while it was read" in a.reason
    assert sent == []


def test_a_file_renamed_over_after_opening_sends_the_bytes_it_hashed(
    uploader: Uploader, sent: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hash and body come from one open descriptor: a new file renamed over the name
    cannot mix into what is sent; it is a new version of its own."""
    path = tmp_path / "swap.wav"
    old = b"old" * (SMALL_BODY_BYTES // 2)
    path.write_bytes(old)
    real_open = ingestion._open

    def open_then_replace(sample: Sample) -> object:
        got = real_open(sample)
        (tmp_path / "new.tmp").write_bytes(b"new" * (SMALL_BODY_BYTES // 2))
        os.replace(tmp_path / "new.tmp", path)
        return got

    monkeypatch.setattr(ingestion, "_open", open_then_replace)
    a = uploader.upload(Sample(path=path, file_name=path.name, category="training",
                               label=None, metadata={}))  # fmt: skip
    assert a.outcome is Outcome.DELIVERED
    assert a.sha256 == hashlib.sha256(old).hexdigest()
    assert old in sent[0] and b"new" not in sent[0]


def test_a_255_byte_name_has_no_sidecar(tmp_path: Path) -> None:
    """``<name>.meta.json`` cannot exist beside it: the file used to be held forever."""
    path = tmp_path / ("a" * 251 + ".wav")
    path.write_bytes(b"x")
    assert read_sidecar(path) is None


def test_an_inotify_overflow_asks_for_a_rescan(tmp_path: Path) -> None:
    """watchdog reports ``IN_Q_OVERFLOW`` only by a warning of its inotify module."""
    config = make_config({"watch": [{"path": str(tmp_path)}]}, tmp_path)
    asked = threading.Event()
    watcher = Watcher(config.watches, lambda item: None, on_overflow=asked.set)
    watcher.start()
    try:
        logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; events were lost")
        assert asked.is_set()
    finally:
        watcher.stop()
    asked.clear()
    logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; events were lost")
    assert not asked.is_set()  # a stopped watcher no longer listens


def test_a_name_that_is_not_utf8_gives_sendable_metadata(tmp_path: Path) -> None:
    """``{dir}`` and ``{stem}`` of such a name used to carry lone surrogates into the
    queue (which cannot store them) and into ``x-metadata``."""
    from edge_uploader.core.tagger import tag

    folder = tmp_path / os.fsdecode(b"run-\xff")
    config = make_config({"watch": [{"path": str(tmp_path), "recursive": True,
                                     "metadata": {"session": "{dir}", "take": "{stem}"}}]},
                         tmp_path)  # fmt: skip
    tagged = tag(folder / BAD, config, mtime=0.0, watch=config.watches[0])
    assert tagged.metadata["session"] == "run-_"
    assert tagged.metadata["take"] == "bad__ name_with _[2J"


def test_a_dead_letter_with_such_a_name_is_listed_escaped(q: Queue) -> None:
    from edge_uploader.cli.queue_care import dead_json

    (rid,) = q.enqueue_many([new_file(f"/cap/{BAD}")])
    row = q.get(rid)
    assert row is not None
    doc = dead_json(row)
    assert doc["path"] == "/cap/bad\\xff\\xfe name\\nwith \\x1b[2J.wav"
    assert doc["file_name"] == "bad__ name_with _[2J.wav"
    doc_text = json.dumps(doc, ensure_ascii=False)
    assert doc_text.encode("utf-8")  # strict UTF-8: no lone surrogates left

"""``status``: the stable JSON document and the text rendering, from a real queue file."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_uploader import cli
from edge_uploader.cli.run import render_text, to_json
from edge_uploader.store.queue import Queue, Result, State
from edge_uploader.store.status import gather
from edge_uploader.text import age
from tests.fakes import FakeClock
from tests.unit.helpers import new_file

T0 = 1_700_000_000.0
CONCURRENCY = {"limit": 12, "maximum": 32, "adaptive": True, "outage": False, "rtt_ms": 53.4}


@pytest.fixture
def q(tmp_path: Path, clock: FakeClock) -> Iterator[Queue]:
    queue = Queue(tmp_path / "queue.db", clock=clock)
    a, b, c, _ = queue.enqueue_many([new_file(f"/d/{n}.wav", size=s) for n, s in
                                     (("a", 1000), ("b", 3000), ("c", 10), ("d", 20))])  # fmt: skip
    queue.enqueue_many([new_file("/d/h.wav", state=State.HELD, last_error="bad sidecar")])
    queue.lease(3)  # a, b, c
    clock.advance(100)
    queue.settle([Result(a, State.DELIVERED, sample_id=1), Result(c, State.DEAD, "HTTP 400: nope")])
    clock.advance(200)
    queue.settle([Result(b, State.DELIVERED, sample_id=2)])
    queue.set_state(last_delivery_at=T0 + 300, last_error="HTTP 500: boom",
                    paused="HTTP 401: Invalid API key", concurrency=CONCURRENCY)  # fmt: skip
    yield queue
    queue.close()


def test_gather(q: Queue) -> None:
    info = gather(q, now=T0 + 330)
    c_id = next(r.id for r in q.rows(State.DEAD))
    h_id = next(r.id for r in q.rows(State.HELD))
    a_id, b_id = (r.id for r in q.rows(State.DELIVERED))
    assert info == {
        "version": 1,
        "generated_at": T0 + 330,
        "queue": str(q.path),
        "counts": {"pending": 1, "uploading": 0, "delivered": 2, "dead": 1, "held": 1, "gone": 0},
        "backlog": 1,
        "backlog_by_watch": {"test": {"pending": 1, "uploading": 0, "dead": 1, "held": 1}},
        "oldest_pending_age_seconds": 330.0,
        "last_delivery_at": T0 + 300,
        "last_error": "HTTP 500: boom",
        "paused": "HTTP 401: Invalid API key",
        "concurrency": CONCURRENCY,
        "throughput": {
            "last_60s": {"files": 1, "bytes": 3000, "files_per_second": round(1 / 60, 3)},
            "last_300s": {"files": 2, "bytes": 4000, "files_per_second": round(2 / 300, 3)},
            "last_900s": {"files": 2, "bytes": 4000, "files_per_second": round(2 / 900, 3)},
        },
        "dead_letters": [
            {"id": c_id, "path": "/d/c.wav", "reason": "HTTP 400: nope", "attempts": 1}
        ],
        "held": [{"id": h_id, "path": "/d/h.wav", "reason": "bad sidecar"}],
        "recent_deliveries": [  # newest first, with the service's sample ids
            {
                "id": b_id,
                "path": "/d/b.wav",
                "sample_id": 2,
                "size": 3000,
                "delivered_at": T0 + 300,
            },
            {
                "id": a_id,
                "path": "/d/a.wav",
                "sample_id": 1,
                "size": 1000,
                "delivered_at": T0 + 100,
            },
        ],
        "remote_deletes": dict.fromkeys(
            ("scheduled", "done", "cancelled", "failed", "due", "unconfirmed", "done_last_hour"), 0
        )
        | {"blocked": None},
        "window": None,
        "budget": None,
        "max_bytes_per_second": 0,
    }


def test_dead_letters_are_limited(tmp_path: Path, clock: FakeClock) -> None:
    queue = Queue(tmp_path / "q.db", clock=clock)
    try:
        ids = queue.enqueue_many([new_file(f"/d/{i}.wav", size=i + 1) for i in range(30)])
        queue.lease(30)
        queue.settle([Result(i, State.DEAD, "x") for i in ids])
        info = gather(queue, dead_limit=5, now=T0)
        assert [d["id"] for d in info["dead_letters"]] == ids[:5]
        assert info["oldest_pending_age_seconds"] is None
        assert info["backlog"] == 0
    finally:
        queue.close()


def test_backlog_by_watch_and_recent_deliveries_are_bounded(tmp_path: Path,
                                                            clock: FakeClock) -> None:  # fmt: skip
    """The page asks every few seconds: lists stay at their limits, each watch counts
    only what is not delivered, and the counts come from an index, not the rows."""
    queue = Queue(tmp_path / "q.db", clock=clock)
    try:
        files = [new_file(f"/w{i % 2}/{i}.wav", size=i + 1) for i in range(40)]
        ids = queue.enqueue_many([replace(f, source=f"watch:/w{i % 2}")
                                  for i, f in enumerate(files)])  # fmt: skip
        queue.lease(30)
        for i in ids[:30]:
            clock.advance(1)
            queue.settle([Result(i, State.DELIVERED, sample_id=1000 + i)])
        info = gather(queue, now=clock(), recent_limit=5)
        assert [d["sample_id"] for d in info["recent_deliveries"]] == [
            1000 + i for i in reversed(ids[25:30])
        ]
        assert info["backlog_by_watch"] == {
            "watch:/w0": {"pending": 5, "uploading": 0, "dead": 0, "held": 0},
            "watch:/w1": {"pending": 5, "uploading": 0, "dead": 0, "held": 0},
        }
        with queue.reading() as db:
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT source, state, count(*) FROM files"
                " WHERE state IN (0, 1, 3, 4) GROUP BY source, state"
            ).fetchall()
        assert "COVERING INDEX files_state_source" in str(plan)
    finally:
        queue.close()


def test_json_is_stable_and_sorted(q: Queue) -> None:
    info = gather(q, now=T0 + 330)
    text = to_json(info)
    assert json.loads(text) == info
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(keys)


def test_render_text(q: Queue) -> None:
    info = gather(q, now=T0 + 330)
    info["last_delivery_at"] = time.time() - 30
    lines = render_text(info).splitlines()
    c_id = info["dead_letters"][0]["id"]
    h_id = info["held"][0]["id"]
    assert lines[0] == f"queue: {q.path}"
    assert lines[1] == "files: pending 1, uploading 0, delivered 2, dead 1, held 1, gone 0"
    assert lines[2] == "oldest pending: 6 min"
    assert lines[3] in {"last delivery: 30 s ago", "last delivery: 31 s ago"}
    assert lines[4:] == [
        "delivered: 1 in the last 1 min, 2 in the last 5 min, 2 in the last 15 min",
        "uploads: 12 request(s) in flight at most (auto, at most 32), round trip 53 ms",
        "UPLOADS PAUSED: HTTP 401: Invalid API key",
        "last error: HTTP 500: boom",
        "dead letters (first 1):",
        f"  #{c_id} /d/c.wav: HTTP 400: nope",
        "held (first 1):",
        f"  #{h_id} /d/h.wav: bad sidecar",
    ]


def test_render_text_of_an_empty_queue(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db")
    try:
        text = render_text(gather(queue))
    finally:
        queue.close()
    assert text.splitlines()[1:] == [
        "files: pending 0, uploading 0, delivered 0, dead 0, held 0, gone 0",
        "oldest pending: none",
        "delivered: 0 in the last 1 min, 0 in the last 5 min, 0 in the last 15 min",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (119.4, "119 s"), (120, "2 min"), (7199, "120 min"), (7200, "2.0 h"),
     (172799, "48.0 h"), (172800, "2.0 days"), (10 * 86400, "10.0 days")],
)  # fmt: skip
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_status_command_json(tmp_path: Path, q: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[queue]\npath = "{q.path}"\n')
    assert cli.main(["status", "--config", str(config), "--json", "--limit", "1"]) == 0
    info: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert info["counts"]["delivered"] == 2
    assert info["paused"] == "HTTP 401: Invalid API key"
    assert len(info["dead_letters"]) == 1


def test_status_without_a_queue_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[queue]\npath = "absent.db"\n')
    assert cli.main(["status", "--config", str(config)]) == 78
    assert "queue.path: no queue file here yet" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()

"""``edge-uploader upload`` against the real local ingestion server, in process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.cli import main
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.store.queue import NewFile, Queue, State

from .helpers import index, make_files, queue_path


def _by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["originalFileName"]: line for line in lines}


def _info_tree(root: Path) -> Path:
    (root / "training").mkdir(parents=True)
    (root / "testing").mkdir()
    (root / "training" / "idle.01.wav").write_bytes(b"RIFF idle one")
    (root / "training" / "wave.02.wav").write_bytes(b"RIFF wave two")
    (root / "training" / "noise.03.wav").write_bytes(b"RIFF noise three")
    (root / "testing" / "ok.1.png").write_bytes(b"\x89PNG car")
    (root / "testing" / "multi.json").write_bytes(b'{"payload": "multi"}')
    (root / "testing" / "kv.csv").write_bytes(b"a,b\n1,2\n")
    files = [
        {
            "path": "training/idle.01.wav",
            "category": "training",
            "label": {"type": "label", "label": "idle"},
            "metadata": {"site": "A", "mic": "2"},
        },
        {
            "path": "training/wave.02.wav",
            "category": "training",
            "label": {"type": "unlabeled"},
            "metadata": {"site": "B"},
        },
        {"path": "training/noise.03.wav", "category": "training"},
        {
            "path": "testing/ok.1.png",
            "name": "renamed-ok",
            "category": "testing",
            "label": {"type": "label", "label": "car"},
            "metadata": {"site": "B"},
            "boundingBoxes": [{"label": "car", "x": 10, "y": 20, "width": 30, "height": 40}],
        },
        {
            "path": "testing/multi.json",
            "category": "testing",
            "label": {
                "type": "multi-label",
                "labels": [
                    {"label": "up", "startIndex": 0, "endIndex": 4},
                    {"label": "down", "startIndex": 5, "endIndex": 9},
                ],
            },
        },
        {
            "path": "testing/kv.csv",
            "category": "testing",
            "label": {"type": "keyvalue-labels", "labels": {"speed": "fast"}},
        },
    ]
    info = root / "info.labels"
    info.write_text(json.dumps({"version": 1, "files": files}, indent=1))
    return info


def test_info_labels_tree_arrives_as_described(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = _info_tree(tmp_path / "dataset")
    assert main(["upload", "--info-file", str(info), "--session", "rec-7"]) == 0
    out = capsys.readouterr().out
    assert "delivered:           6  (6 this run" in out and "OK, every file delivered" in out
    got = _by_name(index(server.data_dir))
    assert set(got) == {
        "idle.01.wav",
        "wave.02.wav",
        "noise.03.wav",
        "renamed-ok.png",
        "multi.json",
        "kv.csv",
    }
    idle = got["idle.01.wav"]
    assert (idle["category"], idle["label"]) == ("training", "idle")
    assert idle["metadata"]["site"] == "A" and idle["metadata"]["mic"] == "2"
    assert idle["metadata"]["session"] == "rec-7" and "device_id" in idle["metadata"]
    assert idle["headers"]["x-label"] == "idle"
    assert idle["headers"]["x-disallow-duplicates"] == "1"
    wave = got["wave.02.wav"]
    assert wave["label"] is None and wave["headers"]["x-no-label"] == "1"
    noise = got["noise.03.wav"]
    assert noise["label"] == "noise" and "x-label" not in noise["headers"]  # from the file name
    car = got["renamed-ok.png"]
    assert (car["category"], car["label"], car["metadata"]["site"]) == ("testing", "car", "B")
    assert car["boundingBoxes"] == [{"label": "car", "x": 10, "y": 20, "width": 30, "height": 40}]
    assert [s["label"] for s in got["multi.json"]["structuredLabels"]] == ["up", "down"]
    assert got["kv.csv"]["labelMap"] == {"speed": "fast"}

    # the queue kept each sampleId
    q = Queue(queue_path(tmp_path))
    ids = {Path(r.path).name: r.sample_id for r in q.rows(State.DELIVERED)}
    q.close()
    assert ids["ok.1.png"] == car["sampleId"] and len(ids) == 6


def test_bad_info_entries_are_reported_and_the_rest_proceeds(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "good.1.wav").write_bytes(b"good one")
    (root / "good.2.wav").write_bytes(b"good two")
    with open(root / "huge.wav", "wb") as handle:  # sparse: no disk space used
        handle.truncate(100_000_001)
    (tmp_path / "secret.wav").write_bytes(b"outside")
    files = [
        {"path": "good.1.wav", "label": {"type": "label", "label": "g"}},
        {"path": "missing.wav"},
        {"path": "good.2.wav", "label": "not-an-object"},
        {"path": "good.2.wav", "metadata": {"count": 3}},
        {"path": "../secret.wav"},
        {"path": "huge.wav"},
        {"path": "good.2.wav", "metadata": {"site": "ok"}},
    ]
    info = root / "info.labels"
    info.write_text(json.dumps({"version": 1, "files": files}))
    assert main(["upload", "--info-file", str(info), "--no-progress"]) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for fragment in [
        "entry 2 (missing.wav): path: file not found",
        "entry 3 (good.2.wav): label: expected an object",
        "entry 4 (good.2.wav): metadata.count: metadata values must be strings, got int",
        "entry 5 (../secret.wav): path: outside the info file's folder",
        "huge.wav: 100.0 MB, over the ingestion service's limit of 100 MB",
    ]:
        assert fragment in text, fragment
    assert "skipped inputs:      5" in captured.out and "NOT everything" in captured.out
    got = _by_name(index(server.data_dir))
    assert set(got) == {"good.1.wav", "good.2.wav"}
    assert got["good.2.wav"]["metadata"]["site"] == "ok"


def test_plain_folder_with_options_and_a_resumed_rerun(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    make_files(data / "s1", 5)
    make_files(data / "s2", 3, prefix="knock", ext=".jpg")
    (data / "s1" / ".hidden.wav").write_bytes(b"hidden")
    (data / "s1" / "notes.md").write_bytes(b"not a sample")
    (data / "s1" / "bounding_boxes.labels").write_bytes(b"{}")
    side = data / "s2" / "knock.00001.jpg.meta.json"
    side.write_text(json.dumps({"metadata": {"from_sidecar": "yes"}}))
    args = [
        "upload",
        str(data),
        "--label",
        "bump",
        "--category",
        "testing",
        "--metadata",
        "site=Lab 4",
        "--metadata-json",
        '{"rig": "r2", "site": "x"}',
        "--session",
        "S-1",
        "--concurrency",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    got = index(server.data_dir)
    assert len(got) == 8
    for line in got:
        assert (line["label"], line["category"]) == ("bump", "testing")
        assert line["metadata"]["site"] == "Lab 4" and line["metadata"]["rig"] == "r2"
        assert line["metadata"]["session"] == "S-1"
    assert _by_name(got)["knock.00001.jpg"]["metadata"]["from_sidecar"] == "yes"
    capsys.readouterr()

    # the same command again: nothing is sent twice
    make_files(data / "s3", 2, prefix="late")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "delivered:           10  (2 this run" in out and "8 earlier" in out
    assert len(index(server.data_dir)) == 10


def test_label_from_file_name_and_allow_duplicates(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    files = make_files(tmp_path / "d", 2, prefix="noise")
    assert main(["upload", "--allow-duplicates", "--no-progress", *map(str, files)]) == 0
    for line in index(server.data_dir):
        assert line["label"] == "noise"
        assert "x-label" not in line["headers"] and "x-no-label" not in line["headers"]
        assert "x-disallow-duplicates" not in line["headers"]
        assert line["category"] == "training"


def test_dry_run_sends_and_queues_nothing(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = _info_tree(tmp_path / "dataset")
    (tmp_path / "dataset" / "training" / "empty.wav").write_bytes(b"")
    assert main(["upload", "--dry-run", "--info-file", str(info), "--metadata", "k=v"]) == 0
    out = capsys.readouterr().out.splitlines()
    car = next(line for line in out if "ok.1.png" in line)
    assert "name=renamed-ok.png" in car and "label=car" in car and "category=testing" in car
    assert '"site":"B"' in car and '"k":"v"' in car and "parts=bounding_boxes.labels" in car
    assert any("noise.03.wav" in line and "label=(from file name)" in line for line in out)
    assert any("wave.02.wav" in line and "label=(unlabeled)" in line for line in out)
    assert out[-1].startswith("dry run: 6 file(s) would be uploaded")
    assert not queue_path(tmp_path).exists() and index(server.data_dir) == []
    assert main(["upload", "--dry-run", str(tmp_path / "dataset" / "training")]) == 1
    assert "empty.wav: empty file" in capsys.readouterr().out


def test_the_daemons_rows_are_left_alone(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    (daemon_file,) = make_files(tmp_path / "watched", 1, prefix="daemon")
    q = Queue(queue_path(tmp_path))
    st = daemon_file.stat()
    q.enqueue_many(
        [
            NewFile(
                path=str(daemon_file),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                source="watch:/x",
                label=None,
                category="training",
                metadata={},
            )
        ]
    )
    (leased,) = q.lease(1)  # the daemon is uploading it right now
    q.close()
    assert main(["upload", "--no-progress", str(tmp_path / "other")]) == 1  # nothing there
    make_files(tmp_path / "other", 2)
    assert main(["upload", "--no-progress", str(tmp_path / "other")]) == 0
    q = Queue(queue_path(tmp_path))
    row = q.get(leased.id)
    q.close()
    assert row is not None and row.state is State.UPLOADING and row.batch is None
    assert len(index(server.data_dir)) == 2


def test_a_refused_key_stops_at_once_and_a_rerun_delivers(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_files(tmp_path / "d", 4)
    monkeypatch.setenv("EI_API_KEY", "ei_wrong")
    started = time.monotonic()
    assert main(["upload", "--no-progress", str(tmp_path / "d")]) == 77
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "authentication refused" in out and "Invalid API key" in out
    assert "fix the API key" in out and "run the same command again to deliver" not in out
    assert "not yet delivered:   4" in out
    key_file = tmp_path / "key"
    key_file.write_text(env["EI_API_KEY"] + "\n")
    assert (
        main(["upload", "--no-progress", "--api-key-file", str(key_file), str(tmp_path / "d")]) == 0
    )
    assert len(index(server.data_dir)) == 4


def test_no_captured_at_lets_one_session_share_requests(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "d"
    make_files(data, 40)
    args = ["upload", "--no-progress", "--session", "S-9", "--concurrency", "auto", str(data)]
    assert main([*args, "--no-captured-at", "--dry-run"]) == 0
    assert '"captured_at"' not in capsys.readouterr().out
    assert main([*args, "--no-captured-at"]) == 0
    got = index(server.data_dir)
    assert len(got) == 40
    assert all("captured_at" not in line["metadata"] for line in got)
    assert all(line["metadata"]["session"] == "S-9" for line in got)
    assert server.upload_requests <= 40 // 20 + 6  # far fewer requests than files
    capsys.readouterr()
    make_files(tmp_path / "e", 3, prefix="late")
    assert main([*args[:-1], str(tmp_path / "e")]) == 0  # captured_at is on by default
    assert all("captured_at" in line["metadata"] for line in index(server.data_dir)[40:])


def test_bad_options_are_config_errors(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["--metadata", "novalue"],
        ["--metadata-json", "[1]"],
        ["--metadata-json", '{"a": 1}'],
        ["--concurrency", "0"],
        ["--concurrency", "65"],
        ["--concurrency", "many"],
    ):
        assert main(["upload", *args, str(tmp_path)]) == 78, args
    with pytest.raises(SystemExit) as exc:
        main(["upload"])
    assert exc.value.code == 2
    os.environ.pop("EI_API_KEY")
    make_files(tmp_path / "d", 1)
    assert main(["upload", str(tmp_path / "d")]) == 78
    assert "no API key" in capsys.readouterr().err
    assert not queue_path(tmp_path).exists()


def test_a_held_file_is_released_by_a_rerun_once_its_sidecar_is_fixed(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "d"
    (_good, bad) = make_files(data, 2)
    side = bad.with_name(bad.name + ".meta.json")
    side.write_text("{not json")
    assert main(["upload", "--no-progress", str(data)]) == 1
    captured = capsys.readouterr()
    assert "held (not sent): " + str(bad) in captured.err
    assert "held (bad sidecar or metadata): 1" in captured.out
    side.write_text(json.dumps({"label": "fixed", "metadata": {"note": "ok"}}))
    assert main(["upload", "--no-progress", str(data)]) == 0
    got = _by_name(index(server.data_dir))
    assert got[bad.name]["label"] == "fixed" and got[bad.name]["metadata"]["note"] == "ok"
    assert len(got) == 2


def test_a_sidecar_that_is_not_a_file_holds_its_file_in_a_walked_folder(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder's listing tells which files have a sidecar: a FIFO or a link at a sidecar's
    name counts as one (and is refused), it is not taken for "no sidecar"."""
    data = tmp_path / "d"
    (good, fifo, link) = make_files(data, 3)
    os.mkfifo(fifo.with_name(fifo.name + ".meta.json"))
    link.with_name(link.name + ".meta.json").symlink_to("/dev/zero")
    assert main(["upload", "--no-progress", str(data)]) == 1
    assert "held (bad sidecar or metadata): 2" in capsys.readouterr().out
    assert set(_by_name(index(server.data_dir))) == {good.name}


def test_paths_globs_and_refused_names(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_files(tmp_path / "a", 2, prefix="glob")
    make_files(tmp_path / "b", 1, prefix="named", ext=".csv")
    (tmp_path / "notes.md").write_bytes(b"# not a sample")
    (tmp_path / "b" / "other.bin").write_bytes(b"binary")
    args = [
        "upload",
        "--no-progress",
        str(tmp_path / "a" / "*.wav"),
        str(tmp_path / "b" / "named.00000.csv"),
        str(tmp_path / "notes.md"),
        str(tmp_path / "nothing-*.wav"),
        str(tmp_path / "missing.wav"),
    ]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "notes.md: not a file type the ingestion service accepts" in captured.err
    assert "nothing-*.wav: no file matches this pattern" in captured.err
    assert "missing.wav: no such file or folder" in captured.err
    assert "skipped inputs:      3" in captured.out
    names = {line["originalFileName"] for line in index(server.data_dir)}
    assert names == {"glob.00000.wav", "glob.00001.wav", "named.00000.csv"}
    # an empty folder is not an error: nothing to send
    (tmp_path / "empty").mkdir()
    assert main(["upload", "--no-progress", str(tmp_path / "empty")]) == 0
    assert "files in this batch: 0" in capsys.readouterr().out


def test_a_truncated_info_file_delivers_what_was_read_and_reports_the_rest(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A JSON syntax error ends the reading, not the run: the entries read before it are
    delivered, the error is reported with the file, and the summary and exit 1 follow."""
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "good.1.wav").write_bytes(b"good one")
    (root / "good.2.wav").write_bytes(b"good two")
    info = root / "info.labels"
    info.write_text('{"version": 1, "files": [{"path": "good.1.wav"}, {"path": "good.2.wav"}, {"pa')
    assert main(["upload", "--info-file", str(info), "--no-progress"]) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert f"{info}: not valid JSON" in text
    assert "NOT everything" in captured.out
    assert set(_by_name(index(server.data_dir))) == {"good.1.wav", "good.2.wav"}


def test_the_first_files_are_recorded_in_a_small_chunk_then_chunks_double() -> None:
    """The first upload waits for the first chunk to be recorded: it is small, and the
    chunks then double to the intake's batch (few transactions over a long run)."""
    from edge_uploader.bulk.run import _chunks
    from edge_uploader.errors import InputError

    sizes = [len(c) for c in _chunks(iter(range(1000)), 256, first=32)]  # type: ignore[arg-type]
    assert sizes == [32, 64, 128, 256, 256, 256, 8]
    assert [len(c) for c in _chunks(iter(range(600)), 256)] == [256, 256, 88]  # type: ignore[arg-type]

    def broken() -> Any:
        yield from range(40)
        raise InputError("info.csv", "line 41: bad")

    got: list[int] = []
    with pytest.raises(InputError):
        for chunk in _chunks(broken(), 256, first=32):
            got.append(len(chunk))
    assert got == [32, 8]  # what was read before the error still goes

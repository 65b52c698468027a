"""The watcher on real inotify (and the polling fallback) in ``tmp_path``.

To prove that something was *not* reported without sleeping, a test writes a marker file
afterwards and waits for it: inotify delivers events in order, so once the marker is
reported every earlier event has been handled.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import WatchConfig
from edge_uploader.core.files import wanted
from edge_uploader.core.intake import Item
from edge_uploader.sources.watcher import Watcher
from tests.support import wait_for


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[Path, int, float]] = []
        self.markers = itertools.count()

    def __call__(self, item: Item) -> None:
        path = item.path
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        with self.lock:
            self.calls.append((path, size, time.monotonic()))

    def paths(self, include_markers: bool = False) -> list[Path]:
        with self.lock:
            return [
                p for p, _, _ in self.calls if include_markers or not p.name.startswith("zz-marker")
            ]

    def count(self, path: Path) -> int:
        return self.paths().count(path)

    def wait(self, path: Path, timeout: float = 5.0) -> None:
        wait_for(lambda: path in self.paths(include_markers=True), timeout)

    def sync(self, folder: Path) -> None:
        """Write a marker and wait until the watcher reported it."""
        marker = folder / f"zz-marker-{next(self.markers)}.wav"
        marker.write_bytes(b"m")
        self.wait(marker)


@pytest.fixture
def watch_dir(tmp_path: Path) -> Path:
    path = tmp_path / "in"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def start(watch_dir: Path) -> Iterator[Callable[..., tuple[Watcher, Seen]]]:
    started: list[Watcher] = []

    def run(**over: Any) -> tuple[Watcher, Seen]:
        seen = Seen()
        w = Watcher((WatchConfig(path=watch_dir, **over),), seen)
        w.start()
        started.append(w)
        return w, seen

    yield run
    for w in started:
        w.stop()


def test_close_after_write_is_reported_once(start: Any, watch_dir: Path) -> None:
    _, seen = start()
    path = watch_dir / "a.wav"
    path.write_bytes(b"x" * 1000)
    seen.wait(path)
    seen.sync(watch_dir)
    assert seen.paths() == [path]


def test_rename_into_place_is_reported_once(start: Any, watch_dir: Path) -> None:
    _, seen = start()
    for name, tmp in (("a.wav", ".a.wav.tmp"), ("b.wav", "b.wav.part"), ("c.csv", "c.csv.tmp")):
        (watch_dir / tmp).write_bytes(b"data")
        os.rename(watch_dir / tmp, watch_dir / name)
    seen.wait(watch_dir / "c.csv")
    seen.sync(watch_dir)
    assert seen.paths() == [watch_dir / "a.wav", watch_dir / "b.wav", watch_dir / "c.csv"]


def test_rename_from_outside_the_watch_is_reported(
    start: Any, watch_dir: Path, outside: Path
) -> None:
    """Writers often finish a file in /tmp (same file system) and move it in."""
    _, seen = start()
    (outside / "a.wav").write_bytes(b"data")
    os.rename(outside / "a.wav", watch_dir / "a.wav")
    seen.wait(watch_dir / "a.wav")
    seen.sync(watch_dir)
    assert seen.paths() == [watch_dir / "a.wav"]


def test_a_file_still_open_is_not_reported_until_closed(start: Any, watch_dir: Path) -> None:
    _, seen = start()
    path = watch_dir / "long.wav"
    with open(path, "wb") as f:
        for _ in range(3):
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        seen.sync(watch_dir)
        assert seen.paths() == []
    seen.wait(path)
    seen.sync(watch_dir)
    assert [(p, size) for p, size, _ in seen.calls if p == path] == [(path, 3 * 4096)]


def test_a_file_open_in_a_new_folder_is_not_reported_until_closed(
    start: Any, watch_dir: Path
) -> None:
    w, seen = start()
    folder = watch_dir / "sess-1"
    folder.mkdir()
    path = folder / "a.wav"
    with open(path, "wb") as f:
        f.write(b"partial")
        f.flush()
        seen.sync(watch_dir)
        seen.sync(folder)
        assert seen.paths() == []
        f.write(b" and the rest")
    seen.wait(path)
    seen.sync(folder)
    assert [(p, size) for p, size, _ in seen.calls if not p.name.startswith("zz")] == [
        (path, len(b"partial and the rest"))
    ]
    wait_for(lambda: not w._settler._files)  # nothing left to report later


def test_files_already_in_a_new_folder_are_taken_once_settled(start: Any, watch_dir: Path) -> None:
    """A folder created and filled before its inotify watch existed brings no close events:
    the walk of a created folder takes its files once they stopped changing."""
    w, seen = start(settle_seconds=0.2)
    quiet = watch_dir / "quiet"
    quiet.mkdir()
    seen.sync(watch_dir)
    (quiet / "b.wav").write_bytes(b"no events for me")
    seen.sync(quiet)  # its close event was reported...
    seen.calls.clear()  # ...but suppose it had been missed:
    started = time.monotonic()
    w.found_folder(quiet, w.watches[0], settle=True)
    wait_for(lambda: quiet / "b.wav" in seen.paths())
    assert time.monotonic() - started >= 0.2 - 0.05
    wait_for(lambda: not w._settler._files)
    seen.sync(watch_dir)
    assert seen.paths() == [quiet / "b.wav"]


def test_hidden_temporary_and_other_patterns_are_ignored(start: Any, watch_dir: Path) -> None:
    _, seen = start(patterns=("*.wav",))
    for name in (".hidden.wav", "a.wav.tmp", "a.wav.part", "a.wav~", "b.mp3", "c.csv"):
        (watch_dir / name).write_bytes(b"data")
    (watch_dir / ".cache").mkdir()
    (watch_dir / ".cache" / "d.wav").write_bytes(b"data")
    seen.sync(watch_dir)
    assert seen.paths() == []


def test_sidecars_are_reported(start: Any, watch_dir: Path) -> None:
    _, seen = start(patterns=("*.wav",))
    side = watch_dir / "a.wav.meta.json"
    side.write_text("{}")
    seen.wait(side)


def test_a_folder_moved_in_is_walked(start: Any, watch_dir: Path, outside: Path) -> None:
    w, seen = start()
    src = outside / "sess-9"
    (src / "sub").mkdir(parents=True)
    for rel in ("a.wav", "b.wav", "sub/c.wav", ".hidden.wav"):
        (src / rel).write_bytes(rel.encode())
    os.rename(src, watch_dir / "sess-9")
    dest = watch_dir / "sess-9"
    expected = {dest / "a.wav", dest / "b.wav", dest / "sub" / "c.wav"}
    wait_for(lambda: expected <= set(seen.paths()), 5)
    seen.sync(watch_dir)
    assert sorted(seen.paths()) == sorted(expected)
    assert not w._settler._files  # complete files: nothing waits to be reported again


def test_a_folder_renamed_within_the_watch_is_walked(start: Any, watch_dir: Path) -> None:
    staging = watch_dir / ".staging"
    (staging / "sess-2").mkdir(parents=True)
    (staging / "sess-2" / "a.wav").write_bytes(b"a")
    _, seen = start()
    os.rename(staging / "sess-2", watch_dir / "sess-2")
    seen.wait(watch_dir / "sess-2" / "a.wav")
    seen.sync(watch_dir)
    assert seen.paths() == [watch_dir / "sess-2" / "a.wav"]


def test_a_folder_moved_out_is_not_walked(start: Any, watch_dir: Path, outside: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (watch_dir / "old").mkdir()
    (outside / "cwd").mkdir()
    (outside / "cwd" / "not-mine.wav").write_bytes(b"x")
    monkeypatch.chdir(outside / "cwd")
    _, seen = start()
    os.rename(watch_dir / "old", outside / "old")
    seen.sync(watch_dir)
    assert seen.paths() == []


def test_not_recursive(start: Any, watch_dir: Path) -> None:
    (watch_dir / "sub").mkdir()
    _, seen = start(recursive=False)
    (watch_dir / "sub" / "a.wav").write_bytes(b"data")
    (watch_dir / "top.wav").write_bytes(b"data")
    seen.wait(watch_dir / "top.wav")
    seen.sync(watch_dir)
    assert seen.paths() == [watch_dir / "top.wav"]


def test_nothing_after_stop(start: Any, watch_dir: Path) -> None:
    w, seen = start()
    w.stop()
    (watch_dir / "late.wav").write_bytes(b"data")
    assert seen.paths() == []


def test_wanted() -> None:
    w = WatchConfig(path=Path("/in"), patterns=("*.wav",), recursive=False)
    assert wanted(Path("/in/a.WAV"), w)
    assert not wanted(Path("/in/sub/a.wav"), w)
    assert not wanted(Path("/elsewhere/a.wav"), w)
    assert not wanted(Path("/in/a.csv"), w)
    assert wanted(Path("/in/a.csv.meta.json"), w)
    assert not wanted(Path("/in/.a.csv.meta.json"), w)


# -- polling ------------------------------------------------------------------------------


def test_polling_takes_a_file_once_it_settled(start: Any, watch_dir: Path) -> None:
    _, seen = start(force_polling=True, settle_seconds=0.3)
    path = watch_dir / "a.wav"
    stop = threading.Event()

    def writer() -> None:
        with open(path, "wb") as f:
            for _ in range(8):
                f.write(b"x" * 100)
                f.flush()
                if stop.wait(0.15):  # a slow writer: a change every 0.15 s
                    return

    t = threading.Thread(target=writer)
    t.start()
    t.join(10)
    finished = time.monotonic()
    wait_for(lambda: path in seen.paths(), 10)
    ((p, size, when),) = seen.calls
    assert (p, size) == (path, 800)  # never the half-written file
    assert when - finished >= 0.3 - 0.05


def test_polling_sees_renames_and_new_folders(start: Any, watch_dir: Path, outside: Path) -> None:
    (watch_dir / ".staging" / "t").mkdir(parents=True)
    (watch_dir / ".staging" / "t" / "c.wav").write_bytes(b"c")
    _, seen = start(force_polling=True, settle_seconds=0.2)
    (outside / "s").mkdir()
    (outside / "s" / "b.wav").write_bytes(b"b")
    (watch_dir / ".a.wav.tmp").write_bytes(b"a")
    os.rename(watch_dir / ".a.wav.tmp", watch_dir / "a.wav")
    os.rename(outside / "s", watch_dir / "s")
    os.rename(watch_dir / ".staging" / "t", watch_dir / "t")
    expected = [watch_dir / "a.wav", watch_dir / "s" / "b.wav", watch_dir / "t" / "c.wav"]
    wait_for(lambda: set(expected) <= set(seen.paths()), 10)
    seen.sync(watch_dir)  # a later polling round: nothing was reported twice
    assert sorted(seen.paths()) == expected

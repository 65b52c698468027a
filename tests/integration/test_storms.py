"""The guarantee under crash storms and power cuts, scaled down from the benches.

``bench/crashstorm.py`` (100 kill -9 over 10,000 files) and ``bench/powercut.py`` (50
power cuts over 2,000 files) run the same harness (``bench/storm.py``) at full scale; here
it runs small enough for CI. The harness raises after any kill that lost a file or
stored one twice; the results also carry the queue's ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.storm import ROOT, PowerMount, Scenario, Storm, sync_folder


def fuse_missing() -> str | None:
    """Why the power-cut tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to mount a FUSE file system"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine"
    if shutil.which("umount") is None:
        return "no umount"
    probe = subprocess.run(
        [sys.executable, "-c", "import fuse"], capture_output=True, text=True, cwd=ROOT
    )
    if probe.returncode:
        return f"fusepy or libfuse2 missing: {probe.stderr.strip().splitlines()[-1]}"
    return None


needs_fuse = pytest.mark.skipif(fuse_missing() is not None, reason=str(fuse_missing()))


@pytest.mark.slow
def test_crash_storm_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    sc = Scenario(files=600, kills=12, seed=5, fail_rate=0.05, drop_rate=0.02, lose_rate=0.02)
    result = Storm(sc, tmp_path / "storm").run()
    assert result.kills == 12
    assert result.written == 600  # the device writes on while the agent is dead
    assert result.lost == [] and result.stored_twice == [] and result.integrity == []
    assert result.stored >= result.written
    assert result.rows.get("delivered", 0) >= result.written


@pytest.mark.root
@needs_fuse
def test_powerfs_keeps_only_what_was_synced(tmp_path: Path) -> None:
    """The model the power-cut test stands on: unsynced content and names go, synced
    content stays; otherwise a passing power-cut run would prove nothing."""
    fs = PowerMount(tmp_path / "state", tmp_path / "mnt", seed=0)
    fs.up()
    try:
        (fs.mnt / "unsynced.txt").write_text("lost")
        with open(fs.mnt / "synced.txt", "w") as fh:
            fh.write("kept")
            fh.flush()
            os.fsync(fh.fileno())
        with open(fs.mnt / "synced.txt", "a") as fh:
            fh.write(" and not this")
        answer = fs.cut()  # seed 0 keeps no uncommitted name
        assert answer == "ok 0 0"  # the fsync committed both names
        fs.up()
        assert (fs.mnt / "synced.txt").read_text() == "kept"
        assert (fs.mnt / "unsynced.txt").read_text() == ""
        (fs.mnt / "synced.txt").rename(fs.mnt / "renamed.txt")
        (fs.mnt / "late.txt").write_text("x")
        kept = fs.cut()
        fs.up()
        names = sorted(p.name for p in fs.mnt.iterdir())
        assert kept in ("ok 0 2", "ok 1 2", "ok 2 2")
        assert names == {"ok 0 2": ["synced.txt", "unsynced.txt"],
                         "ok 1 2": ["renamed.txt", "unsynced.txt"],
                         "ok 2 2": ["late.txt", "renamed.txt", "unsynced.txt"]}[kept]  # fmt: skip
    finally:
        fs.down()


@pytest.mark.slow
@pytest.mark.root
@needs_fuse
@pytest.mark.parametrize("model", ["ext4", "posix"])
def test_power_cuts_lose_nothing_and_keep_the_queue_sound(tmp_path: Path, model: str) -> None:
    sc = Scenario(files=100, kills=5, seed=2, power=True, model=model)
    result = Storm(sc, tmp_path / "storm").run()
    assert result.kills == 5
    assert result.written >= 95  # a cut abandons at most the file being written
    assert result.lost == [] and result.stored_twice == [] and result.integrity == []
    assert result.rows.get("delivered", 0) >= result.written


@pytest.mark.root
@needs_fuse
def test_a_moved_file_survives_a_cut_on_a_file_system_that_syncs_per_folder(
    tmp_path: Path,
) -> None:
    """The power-cut finding: after ``after_upload = "move"`` the device syncs its capture
    folder (a new capture arrives), the power goes, and the file must be in one of the
    two places. Before the move synced the target folder it was in neither."""
    from edge_uploader.core.after_upload import AfterUpload
    from edge_uploader.store.queue import NewFile, Queue, Result, State

    fs = PowerMount(tmp_path / "state", tmp_path / "mnt", seed=0, model="posix")
    fs.up()
    try:
        watch = fs.mnt / "captures"
        watch.mkdir()
        sync_folder(fs.mnt)
        src = watch / "a.json"
        with open(src, "wb") as fh:
            fh.write(b'{"a": 1}')
            fh.flush()
            os.fsync(fh.fileno())
        sync_folder(watch)
        queue = Queue(tmp_path / "queue.db")  # off the mount: only the move is on trial
        st = src.stat()
        new = NewFile(str(src), st.st_size, st.st_mtime_ns, "watch:c", None, "training", {},
                      after_upload="move", move_to=str(fs.mnt / "done"))  # fmt: skip
        (rid,) = queue.enqueue_many([new])
        queue.lease(1)
        queue.settle([Result(rid, State.DELIVERED, sample_id=1)], durable=True)
        (row,) = queue.unfinished_local_actions()
        queue.close()
        assert AfterUpload({"watch:c": watch}).finish(row)
        (watch / "b.json").write_bytes(b"next capture")
        sync_folder(watch)
        fs.cut("cut none")
        fs.up()
        survivors = [p.relative_to(fs.mnt).as_posix() for p in fs.mnt.rglob("a.json")]
        assert survivors == ["done/a.json"]
        assert (fs.mnt / "done" / "a.json").read_bytes() == b'{"a": 1}'
    finally:
        fs.down()

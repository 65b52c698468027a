"""Command sources (cameras, microphones): fixed argv, declared placeholders, timeouts."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_uploader.config import CommandSource, load_config
from edge_uploader.errors import CaptureError
from edge_uploader.sources.capture import Capturer, clean_stale, file_name
from edge_uploader.sources.command import Command
from edge_uploader.sources.program import CommandRunner, build_argv


def src(code: str, timeout: float = 5.0, extra: tuple[str, ...] = ()) -> CommandSource:
    return CommandSource("cam", (sys.executable, "-c", code, "{output}", *extra), ".png", timeout)


def test_only_declared_placeholders_are_filled(tmp_path: Path) -> None:
    source = CommandSource(
        "mic",
        ("arecord", "-d", "{duration_s}", "--ms={duration_ms}", "{{literal}}", "{output}"),
        ".wav",
        5,
    )
    argv = build_argv(source, tmp_path / ".tmp-x.wav", 2500)
    assert argv == ["arecord", "-d", "2.5", "--ms=2500", "{literal}", str(tmp_path / ".tmp-x.wav")]


def test_a_program_writes_its_file(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    size = CommandRunner().run(src("import sys; open(sys.argv[1], 'wb').write(b'png!')"), out, 10)
    assert size == 4 and out.read_bytes() == b"png!"


def test_exit_status_and_last_line_are_the_reason(tmp_path: Path) -> None:
    code = "import sys; print('noise'); print('camera not found', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CaptureError, match="exited with status 3: camera not found"):
        CommandRunner().run(src(code), tmp_path / "o.png", 10)


def test_no_output_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="without writing its output"):
        CommandRunner().run(src("pass"), tmp_path / "o.png", 10)


def test_symlink_output_is_refused(tmp_path: Path) -> None:
    code = "import os, sys; os.symlink('/etc/passwd', sys.argv[1])"
    with pytest.raises(CaptureError, match="other than a regular file"):
        CommandRunner().run(src(code), tmp_path / "o.png", 10)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(CaptureError, match=r"did not finish within 0\.5 s"):
        CommandRunner().run(src(code, timeout=0.5), tmp_path / "o.png", 10)
    assert time.monotonic() - started < 5
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:  # a zombie waiting for its reaper is dead too
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.02)
    else:
        pytest.fail("the grandchild survived the timeout")


def test_kill_all_cancels_a_running_capture(tmp_path: Path) -> None:
    runner = CommandRunner()
    threading.Timer(0.3, runner.kill_all).start()
    with pytest.raises(CaptureError, match="cancelled"):
        runner.run(src("import time; time.sleep(30)"), tmp_path / "o.png", 10)


def test_secrets_are_not_in_the_programs_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EI_API_KEY", "ei_secret")
    monkeypatch.setenv("EI_MQTT_PASSWORD", "pw")
    monkeypatch.setenv("HARMLESS", "1")
    code = "import os, sys, json; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
    out = tmp_path / "o.png"
    CommandRunner().run(src(code), out, 10)
    env = json.loads(out.read_text())
    assert "EI_API_KEY" not in env and "EI_MQTT_PASSWORD" not in env and env["HARMLESS"] == "1"


def test_capturer_writes_sidecar_first_and_renames_into_place(tmp_path: Path) -> None:
    code = "import sys; open(sys.argv[1], 'wb').write(b'img')"
    (tmp_path / "agent.toml").write_text(
        '[device]\nid = "d1"\n[queue]\npath = "q.db"\n[capture]\ndir = "caps"\n'
        f'[[capture.command]]\nname = "cam"\nargv = [{json.dumps(sys.executable)}, "-c",'
        f' {json.dumps(code)}, "{{output}}"]\nextension = ".png"\n'
    )
    config = load_config(tmp_path / "agent.toml")
    capturer = Capturer(config, None)
    cmd = Command("c-9", "cam", 10, "dog", "s-1", "testing", {"k": "v"})
    captured = capturer.capture(cmd)
    caps = tmp_path / "caps"
    assert [p.name for p in caps.iterdir()] == [captured.temp.name]  # hidden until committed
    assert captured.temp.name.startswith(".tmp-")
    captured.commit()
    names = sorted(p.name for p in caps.iterdir())
    assert names == [captured.path.name, captured.path.name + ".meta.json"]
    side = json.loads((caps / names[1]).read_text())
    assert side == {
        "label": "dog",
        "category": "testing",
        "metadata": {"k": "v", "command_id": "c-9", "capture_source": "cam", "session": "s-1"},
    }
    # renamed into place after the sidecar (a rename updates ctime)
    assert os.stat(caps / names[1]).st_ctime_ns <= os.stat(captured.path).st_ctime_ns


def test_clean_stale_removes_only_old_leftovers(tmp_path: Path) -> None:
    old = time.time() - 1000
    for name in (
        ".tmp-a.json",
        "b.json.meta.json",
        ".tmp-fresh.json",
        "c.json",
        "c.json.meta.json",
    ):
        (tmp_path / name).write_text("x")
        if name != ".tmp-fresh.json":
            os.utime(tmp_path / name, (old, old))
    assert clean_stale(tmp_path, 500) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-fresh.json",
        "c.json",
        "c.json.meta.json",
    ]


def test_file_names_are_unique_and_plain() -> None:
    cmd = Command("c", "accel", 10, "run 2")
    a, b = file_name(cmd, ".json", 1.5), file_name(cmd, ".json", 1.5)
    assert a != b and a.startswith("accel.run_2.19700101T000001.500Z.") and a.endswith(".json")


def test_a_chatty_failing_program_keeps_only_its_last_output(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for i in range(200000): print('noise line', i)\n"
        "print('camera not detected', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(CaptureError) as err:
        CommandRunner().run(src(code, timeout=30), tmp_path / "x.png", 10)
    assert str(err.value).endswith("exited with status 3: camera not detected")
    assert list(tmp_path.iterdir()) == []

"""``sync --dry-run``: the drift between the device and the project, changing nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os

from edge_uploader.cli import main

from .conftest import Env


def run(argv: list[str], code: int = 0) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == code
    return buf.getvalue()


def test_dry_run_lists_the_three_kinds_of_drift(env: Env) -> None:
    env.make_files(6)
    env.deliver(6)
    files = sorted(env.captures.glob("s1/*.csv"))
    (env.captures / "s1" / "late.csv").write_text("t,v\n0,1\n")  # not delivered
    os.unlink(files[0])  # delivered, gone locally
    # The config changes: [metadata] line moves, a new key appears; Studio edits another.
    text = env.config_path.read_text().replace('line = "L1"', 'line = "L2"\nsite = "lab-a"')
    env.config_path.write_text(text)
    samples = {s.filename: s for s in env.server.samples()}
    env.server.store.set_metadata(
        samples[files[1].name].id, {**samples[files[1].name].metadata, "line": "L2",
                                    "site": "lab-a", "reviewed": "yes"},
    )  # fmt: skip
    before = env.changes()

    out = run(["sync", "--config", str(env.config_path), "--dry-run"])
    assert f"{env.captures}/s1/late.csv  not queued" in out
    assert f"sample {samples[files[0].name].id}  {files[0]}  deletion sync is off" in out
    drift = [line for line in out.splitlines() if 'line: "L1" → "L2"' in line]
    assert len(drift) == 4  # 6 files - 1 gone - 1 already edited in Studio
    assert all('site: (unset) → "lab-a"' in line for line in drift)
    listed = "\n".join(line for line in out.splitlines() if line.startswith("  "))
    assert "captured_at" not in listed and "agent_version" not in listed
    assert "reviewed" not in listed
    assert "compared the metadata of 5 sample(s)" in out
    assert env.changes() == before  # a dry run changes nothing

    lines = [
        json.loads(x)
        for x in run(["sync", "--config", str(env.config_path), "--dry-run", "--json"]).splitlines()
    ]
    kinds = [x["kind"] for x in lines]
    assert kinds.count("not_delivered") == 1 and kinds.count("local_gone") == 1
    assert kinds.count("metadata") == 4 and kinds[-1] == "summary"
    one = next(x for x in lines if x["kind"] == "metadata")
    assert one["changes"]["line"] == {"remote": "L1", "config": "L2"}

    offline = run(["sync", "--config", str(env.config_path), "--dry-run", "--no-remote"])
    assert "late.csv" in offline and "remote samples" not in offline


def test_dry_run_reports_scheduled_deletions(env: Env) -> None:
    env.make_files(3)
    env.deliver(3)
    env.write_config("\n[sync]\ndelete_remote = true\ngrace_seconds = 7200\n")
    gone = sorted(env.captures.glob("s1/*.csv"))[0]
    os.unlink(gone)
    assert "0 deleted" in run(["sync", "--config", str(env.config_path)])  # schedules it
    out = run(["sync", "--config", str(env.config_path), "--dry-run", "--no-remote"])
    assert f"{gone}  remote deletion scheduled, due in 120 min" in out


def test_sync_without_the_queue_is_a_config_error(env: Env, capsys) -> None:
    assert main(["sync", "--config", str(env.config_path), "--dry-run"]) == 78
    assert "no queue file here" in capsys.readouterr().err

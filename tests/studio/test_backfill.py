"""``metadata backfill`` against the real local server, with samples delivered by the daemon."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edge_uploader.cli import main
from edge_uploader.project.backfill import Backfill, Plan, Selection
from edge_uploader.remote.studio import StudioClient
from edge_uploader.secrets import Secret
from edge_uploader.store.ledger import Ledger
from edge_uploader.store.queue import Queue

from .conftest import API_KEY, Env, wait_for

SET = ["--set", "site=lab-a", "--set", "location=bench 2"]
NEW = {"site": "lab-a", "location": "bench 2"}


def other_device_samples(env: Env, n: int) -> list[int]:
    """Samples some other device uploaded (not in our ledger), with their own metadata."""
    ids = []
    with httpx.Client(base_url=env.server.url, headers={"x-api-key": API_KEY}) as c:
        for i in range(n):
            meta = json.dumps({"device_id": "other", "site": "elsewhere", "n": str(i)})
            r = c.post("/api/training/files", files={"data": (f"o{i}.csv", f"o,{i}\n")},
                       headers={"x-metadata": meta})  # fmt: skip
            ids.append(r.json()["files"][0]["sampleId"])
    return ids


def remote(env: Env) -> dict[int, dict[str, str]]:
    return {s.id: s.metadata for s in env.server.samples()}


def writes(env: Env) -> list[int]:
    return [c["sampleId"] for c in env.changes() if c["op"] == "set-metadata"]


def backfill(env: Env, *extra: str) -> int:
    return main(["metadata", "backfill", "--config", str(env.config_path), *extra])


@pytest.fixture
def delivered(env: Env) -> Env:
    """300 samples delivered by the daemon, from two session folders."""
    env.make_files(150, folder="s1")
    env.make_files(150, folder="s2")
    env.deliver(300)
    return env


@pytest.fixture
def few(env: Env) -> Env:
    env.make_files(10)
    env.deliver(10)
    return env


def test_backfill_300_sets_keys_on_exactly_the_ledger_samples(delivered: Env, capsys) -> None:
    env = delivered
    others = other_device_samples(env, 40)
    before = remote(env)
    ours = env.ledger_ids()
    assert len(ours) == 300 and not set(ours) & set(others)

    assert backfill(env, *SET) == 0
    after = remote(env)
    for sid in ours:
        assert after[sid] == {**before[sid], **NEW}  # every other key in place
    for sid in others:
        assert after[sid] == before[sid]
    assert sorted(writes(env)) == ours  # exactly one write per selected sample
    out = capsys.readouterr().out
    assert "300 written" in out

    env.log.clear()
    assert backfill(env, *SET) == 0  # the same job again: nothing left to do
    assert env.log.count("GET", r"/v1/api/1/raw-data/\d+") == 0
    assert len(writes(env)) == 300

    assert backfill(env, "--set", "site=lab-a") == 0  # a new job: reads, writes nothing
    assert len(writes(env)) == 300
    assert "300 already had the values" in capsys.readouterr().out


def test_dry_run_lists_changes_and_changes_nothing(delivered: Env, capsys) -> None:
    env = delivered
    assert backfill(env, "--set", "site=lab-a", "--where", "session=s2", "--dry-run") == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("sample ")]
    assert len(lines) == 150 and all('site: (unset) → "lab-a"' in line for line in lines)
    assert "150 sample(s) would change" in out and "150 outside the filters" in out
    assert writes(env) == []
    q = Queue(env.config().queue.path)
    try:
        assert Ledger(q).item_counts(Plan(1, Selection(), {"site": "lab-a"}).job_id)["pending"] == 0
    finally:
        q.close()


class FailAfter(httpx.BaseTransport):
    """The real transport, except that after ``n`` metadata writes the service goes down."""

    def __init__(self, n: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.n = n

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/metadata"):
            if self.n <= 0:
                return httpx.Response(503, text="down for maintenance")
            self.n -= 1
        return self.inner.handle_request(request)


def run_job(env: Env, transport: httpx.BaseTransport | None = None):
    config = env.config()
    studio = StudioClient(
        httpx.Client(transport=transport or httpx.HTTPTransport()), config.studio.url,
        Secret(API_KEY), retry_attempts=2, retry_base_seconds=0.001, retry_max_seconds=0.002,
    )  # fmt: skip
    queue = Queue(config.queue.path)
    try:
        job = Backfill(studio, Ledger(queue), Plan(studio.project_id, Selection(), NEW),
                       workers=4, out=io.StringIO())  # fmt: skip
        return job.apply()
    finally:
        queue.close()
        studio.close()


def test_interrupted_backfill_resumes_with_only_the_rest(delivered: Env) -> None:
    env = delivered
    first = run_job(env, FailAfter(120))
    assert first.stopped and "503" in first.stopped and first.exit_code == 1
    assert len(writes(env)) == 120
    recorded = first.counts["written"]  # in-flight results past the failure are not kept
    assert 110 <= recorded <= 120

    env.log.clear()
    second = run_job(env)
    assert second.stopped is None and second.todo == 300 - recorded
    assert second.earlier == {"written": recorded, "pending": 300 - recorded}
    assert env.log.count("GET", r"/v1/api/1/raw-data/\d+") == 300 - recorded  # only the rest
    assert second.counts["written"] == 180
    assert second.counts["unchanged"] == 120 - recorded
    assert sorted(writes(env)) == env.ledger_ids()  # each sample written exactly once


@pytest.mark.slow
def test_backfill_killed_with_sigkill_resumes_without_rewriting(delivered: Env) -> None:
    env = delivered
    cmd = [sys.executable, "-m", "edge_uploader", "metadata", "backfill", "--config",
           str(env.config_path), *SET, "--concurrency", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).parents[2])  # fmt: skip
    try:
        wait_for(lambda: len(writes(env)) >= 60, 30, "the first writes")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    written_before = set(writes(env))
    assert 60 <= len(written_before) < 300

    q = Queue(env.config().queue.path)
    job = Plan(1, Selection(), NEW).job_id
    try:
        recorded = Ledger(q).item_counts(job)["written"]
    finally:
        q.close()
    assert recorded <= len(written_before)

    env.log.clear()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[2],
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Only the samples not recorded as done are read again, and none is written twice.
    assert env.log.count("GET", r"/v1/api/1/raw-data/\d+") == 300 - recorded
    assert sorted(writes(env)) == env.ledger_ids()


def test_select_all_with_filters_touches_only_matching_samples(delivered: Env, capsys) -> None:
    env = delivered
    others = other_device_samples(env, 10)
    before = remote(env)
    assert backfill(env, "--select", "all", "--where", "device_id=other", "--where", "n!=3",
                    "--set", "owner=team-b") == 0  # fmt: skip
    after = remote(env)
    changed = {sid for sid in after if after[sid] != before[sid]}
    assert changed == set(others) - {others[3]}
    for sid in changed:
        assert after[sid] == {**before[sid], "owner": "team-b"}

    assert backfill(env, "--select", "all", "--filename", "f0007", "--set", "x=1") == 0
    assert {sid for sid in remote(env) if "x" in remote(env)[sid]} == {
        s.id for s in env.server.samples() if "f0007" in s.filename
    }
    capsys.readouterr()


# -- bad input -----------------------------------------------------------------------------
def test_unknown_project_changes_nothing(few: Env, capsys) -> None:
    env = few
    text = env.config_path.read_text().replace("[studio]", "[studio]\nproject_id = 99")
    env.config_path.write_text(text)
    assert backfill(env, *SET) == 78
    err = capsys.readouterr().err
    assert "studio.project_id: project 99 is unknown to the Studio API" in err
    assert env.changes() == []


def test_wrong_api_key_changes_nothing(few: Env, capsys) -> None:
    env = few
    (env.root / "key").write_text("ei_wrong_key\n")
    assert backfill(env, *SET) == 1
    err = capsys.readouterr().err
    assert "refused the API key" in err and "Invalid API key" in err
    assert "ei_wrong_key" not in err
    assert env.changes() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-file", "set.json"], "set.json: metadata.site: metadata values must be strings"),
        (["--set", "site"], "--set: expected KEY=VALUE"),
        (["--set", " site=x"], "control characters or edge spaces"),
        (["--set", "k=" + "v" * 2000], "longer than 1024"),
        ([], "nothing to set"),
        (["--set", "a=b", "--where", ""], "--where"),
    ],
)
def test_bad_values_are_refused_before_any_request(
    few: Env, capsys, args: list[str], message: str
) -> None:
    env = few
    (env.root / "set.json").write_text('{"location": "desk", "site": 5}')
    args = [str(env.root / a) if a == "set.json" else a for a in args]
    env.log.clear()
    assert backfill(env, *args) == 78
    assert message in capsys.readouterr().err
    assert env.log.requests() == []  # not even a read
    assert env.changes() == []


def test_samples_deleted_remotely_are_reported_and_the_rest_proceeds(env: Env, capsys) -> None:
    env.make_files(30)
    env.deliver(30)
    ids = env.ledger_ids()
    for sid in ids[:2]:  # deleted in Studio before the backfill
        env.server.store.delete(sid)

    class DeleteAfterRead(httpx.BaseTransport):
        """Someone deletes sample ``ids[10]`` in Studio between our read and our write."""

        inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            if request.method == "GET" and request.url.path.endswith(f"/raw-data/{ids[10]}"):
                env.server.store.delete(ids[10])
            return response

    summary = run_job(env, DeleteAfterRead())
    assert summary.counts["missing"] == 3 and summary.counts["written"] == 27
    assert summary.exit_code == 0
    assert any(f"sample {ids[10]}: deleted from the project during" in p for p in summary.problems)
    assert sorted(writes(env)) == sorted(set(ids) - {ids[0], ids[1], ids[10]})

    assert backfill(env, *SET) == 0  # a re-run leaves the missing ones alone
    assert "0 not in the project" in capsys.readouterr().out


def test_without_a_queue_only_the_project_wide_selection_works(env: Env, capsys) -> None:
    others = other_device_samples(env, 5)
    assert backfill(env, *SET) == 78
    assert "no queue file here: the ledger selection" in capsys.readouterr().err
    assert backfill(env, "--select", "all", "--set", "site=x", "--dry-run") == 0
    assert not env.config().queue.path.exists()  # a dry run leaves no trace
    assert backfill(env, "--select", "all", "--set", "site=x") == 0
    assert sorted(writes(env)) == others

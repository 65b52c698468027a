"""``/metrics`` of a real agent process: delivered and duplicate files counted as their HELP
says, a backlog gauge that counts only what is left to send (``queue_depth`` keeps every
row), and the standard ``process_*`` metrics agreeing with ``/proc/<pid>``."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .conftest import Agent, free_port, http_get, wait_for, write_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _scrape(base: str) -> tuple[dict[str, float], dict[str, str]]:
    """(samples by name with labels, HELP text by metric name)."""
    status, text = http_get(base + "/metrics")
    assert status == 200
    values, helps = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            helps[name] = help_text
        elif not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values, helps


def _start(tmp_path: Path, url: str, agents: list[Agent], ingestion: str = "") -> tuple[Agent, str]:
    port = free_port()
    config = write_config(tmp_path, url, f'[http]\nlisten = "127.0.0.1:{port}"\n')
    config.write_text(config.read_text().replace("[ingestion]\n", f"[ingestion]\n{ingestion}"))
    agent = Agent(config)
    agents.append(agent)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base), timeout=20)
    return agent, base


def _up(base: str) -> bool:
    try:
        return http_get(base + "/healthz")[0] in (200, 503)
    except OSError:
        return False


def _proc_start_time(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    btime = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def test_duplicates_backlog_and_process_metrics(
    tmp_path: Path, server: LocalIngestionServer, agents: list[Agent]
) -> None:
    agent, base = _start(tmp_path, server.url, agents)
    captures = tmp_path / "captures"
    (captures / "a.csv").write_text("t,v\n0,1\n")
    wait_for(lambda: _scrape(base)[0]["edge_uploader_files_delivered_total"] == 1, timeout=20)
    (captures / "same-bytes.csv").write_text("t,v\n0,1\n")  # the service has these bytes
    wait_for(lambda: _scrape(base)[0]["edge_uploader_files_duplicate_total"] == 1, timeout=20)

    values, helps = _scrape(base)
    assert values["edge_uploader_files_delivered_total"] == 1, "a duplicate is not a new sample"
    assert "duplicates are not counted here" in helps["edge_uploader_files_delivered_total"]
    assert "not in files_delivered_total" in helps["edge_uploader_files_duplicate_total"]
    assert values['edge_uploader_queue_depth{state="delivered"}'] == 2, "both rows are done"
    assert values["edge_uploader_queue_backlog"] == 0
    assert "every row kept" in helps["edge_uploader_queue_depth"]

    pid = agent.proc.pid
    assert abs(values["process_start_time_seconds"] - _proc_start_time(pid)) < 1.0
    assert values["process_start_time_seconds"] <= time.time()
    assert 0 < values["process_cpu_seconds_total"] < 600
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    assert 0.5 < values["process_resident_memory_bytes"] / (rss_kb * 1024) < 2.0
    assert values["process_virtual_memory_bytes"] >= values["process_resident_memory_bytes"]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert 3 <= values["process_open_fds"] <= values["process_max_fds"]
    assert abs(values["process_open_fds"] - fds) <= 5  # threads open and close sockets
    cpu_before = values["process_cpu_seconds_total"]
    for i in range(20):
        (captures / f"more-{i}.csv").write_text(f"t,v\n0,{i + 10}\n")
    wait_for(lambda: _scrape(base)[0]["edge_uploader_files_delivered_total"] == 21, timeout=30)
    assert _scrape(base)[0]["process_cpu_seconds_total"] >= cpu_before
    assert agent.stop() == 0


def test_the_backlog_counts_files_waiting_not_delivered_rows(
    tmp_path: Path, server: LocalIngestionServer, agents: list[Agent]
) -> None:
    """Outside the upload window nothing is sent: the waiting files are the backlog."""
    start = time.localtime(time.time() + 3 * 3600)
    end = time.localtime(time.time() + 4 * 3600)
    window = f"{start.tm_hour:02d}:00-{end.tm_hour:02d}:00"
    agent, base = _start(tmp_path, server.url, agents,
                         f'upload_windows = ["{window}"]\n')  # fmt: skip
    del agent
    for i in range(3):
        (tmp_path / "captures" / f"w{i}.csv").write_text(f"t,v\n0,{i}\n")
    wait_for(lambda: _scrape(base)[0]["edge_uploader_files_enqueued_total"] == 3, timeout=20)
    values, _ = _scrape(base)
    assert values["edge_uploader_upload_window_open"] == 0
    assert values["edge_uploader_queue_backlog"] == 3
    assert values['edge_uploader_queue_depth{state="pending"}'] == 3
    assert values["edge_uploader_files_delivered_total"] == 0
    assert server.index_lines() == []


def test_help_and_type_lines_follow_the_exposition_format(
    tmp_path: Path, server: LocalIngestionServer, agents: list[Agent]
) -> None:
    _, base = _start(tmp_path, server.url, agents)
    text = http_get(base + "/metrics")[1]
    for name in ("process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"):
        assert re.search(rf"^# TYPE {name} (counter|gauge)$", text, re.M), name
    assert "# TYPE process_cpu_seconds_total counter" in text
    assert "# TYPE edge_uploader_queue_backlog gauge" in text

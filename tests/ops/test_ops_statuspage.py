"""The local status page (``[http] listen`` ``/``) and its ``/status.json``.

In process: the JSON is ``gather``'s document (the one ``status --json`` prints), the
server is read-only, the page loads nothing from elsewhere, and a broken queue answers 503
while the endpoint goes on. In headless Chromium (Debian's ``chromium``; skipped only
when it is not installed, CI installs it): a file name made of markup is shown as text,
and against a real agent with delivered, dead-lettered and held files the numbers the
page shows are those of ``status --json`` run as a process; a phone-sized screenshot;
an agent that cannot answer is said so on the page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import Config, HttpConfig, load_config
from edge_uploader.daemon.httpd import HealthServer
from edge_uploader.events import Stats
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.localserver.faults import FaultConfig
from edge_uploader.store.queue import Queue, Result, State
from edge_uploader.store.status import gather
from tests.unit.helpers import new_file

from .conftest import Agent, free_port, http_get, wait_for, write_config

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)"
)
XSS = "<img src=x onerror=alert(1)>.wav"


@dataclass
class _Vitals:
    """What the endpoint reads of a daemon; here a real queue file and the defaults."""

    queue: Queue | None
    config: Config = field(default_factory=lambda: load_config(None, check_dirs=False))
    stats: Stats = field(default_factory=Stats)
    delivery: None = None
    intake: None = None
    disk: None = None


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    """Two delivered files, a dead letter and a held file named like markup."""
    q = Queue(tmp_path / "queue.db")
    a, b, dead = q.enqueue_many([new_file(f"/cap/{n}") for n in ("a.wav", "b.wav", XSS)])
    q.enqueue_many([new_file(f"/cap/h-{XSS}", state=State.HELD, last_error=f"bad <b>{XSS}")])
    q.lease(3)
    q.settle([Result(a, State.DELIVERED, sample_id=71), Result(b, State.DELIVERED, sample_id=72),
              Result(dead, State.DEAD, f"HTTP 400: <script>alert(1)</script> {XSS}")])  # fmt: skip
    yield q
    q.close()


@pytest.fixture
def endpoint(queue: Queue) -> Iterator[tuple[str, _Vitals]]:
    vitals = _Vitals(queue)
    server = HealthServer(HttpConfig(listen=("127.0.0.1", 0)), vitals)  # type: ignore[arg-type]
    server.start(None)  # type: ignore[arg-type]  # the http component reads only vitals
    yield "http://{}:{}".format(*server.address), vitals
    server.stop()


def _request(url: str, method: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _steady(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("generated_at", "throughput")}


def test_status_json_is_the_status_document(endpoint: tuple[str, _Vitals], queue: Queue) -> None:
    base, _ = endpoint
    status, headers, body = _request(base + "/status.json", "GET")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert _steady(doc) == _steady(gather(queue))
    assert doc["throughput"]["last_900s"]["files"] == 2
    assert [d["sample_id"] for d in doc["recent_deliveries"]] == [72, 71]
    assert doc["dead_letters"][0]["path"] == f"/cap/{XSS}"  # the JSON carries it as it is


def test_the_page_is_read_only_and_self_contained(endpoint: tuple[str, _Vitals]) -> None:
    base, _ = endpoint
    status, headers, page = _request(base + "/", "GET")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    assert '<meta name="viewport" content="width=device-width' in text
    assert "@media (max-width: 600px)" in text
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "<link" not in text and "src=" not in text  # no stylesheet, script or image
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/status.json", "/healthz"):
            status, headers, _ = _request(base + path, method)
            assert (status, headers["Allow"]) == (405, "GET, HEAD"), (method, path)
    assert _request(base + "/status.json", "HEAD")[0] == 200


def test_a_broken_queue_answers_503_and_the_endpoint_goes_on(
    endpoint: tuple[str, _Vitals], queue: Queue
) -> None:
    base, vitals = endpoint
    vitals.queue = None  # a reload in progress
    status, body = http_get(base + "/status.json")
    assert status == 503 and json.loads(body) == {"error": "starting or reloading"}
    broken = Queue(queue.path)
    broken.close()  # every read now fails inside SQLite
    vitals.queue = broken
    status, body = http_get(base + "/status.json")
    assert status == 503 and str(queue.path) in json.loads(body)["error"]
    vitals.config = None  # type: ignore[assignment]  # a bug in gathering: 500, logged
    vitals.queue = queue
    assert http_get(base + "/status.json")[0] == 500
    assert http_get(base + "/")[0] == 200  # the same thread still serves


class _Dom(HTMLParser):
    """The page as Chromium left it: tags seen, the text of ``data-k`` fields, the
    attributes of those fields and the cells of each table body."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.fields: dict[str, dict[str, str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.body: dict[str, str] = {}
        self._field: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "body":
            self.body = a
        if "data-k" in a:
            self._field = a["data-k"]
            self.fields[self._field] = {**a, "text": ""}
        if tag == "tbody":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("b", "p"):
            self._field = None
        elif tag == "td" and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._field:
            self.fields[self._field]["text"] += data
        if self._cell is not None:
            self._cell.append(data)


def _chromium(tmp_path: Path, url: str, *extra: str) -> str:
    """Headless Chromium after the page's script ran (virtual time lets it fetch)."""
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
         *extra, url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _page(tmp_path: Path, url: str) -> _Dom:
    dom = _Dom(_chromium(tmp_path, url, "--dump-dom"))
    assert dom.body.get("data-state") == "ready", "the page's script did not fill the page"
    return dom


@needs_chromium
def test_file_names_and_answers_are_shown_as_text(
    endpoint: tuple[str, _Vitals], tmp_path: Path
) -> None:
    base, _ = endpoint
    dom = _page(tmp_path, base + "/")
    assert "img" not in dom.tags and "script" in dom.tags  # only the page's own script
    dead = dom.tables["dead"]
    assert dead[0][1:3] == [f"/cap/{XSS}", f"HTTP 400: <script>alert(1)</script> {XSS}"]
    assert dom.tables["held"][0][1:] == [f"/cap/h-{XSS}", f"bad <b>{XSS}"]
    assert [r[1:3] for r in dom.tables["recent"]] == [["/cap/b.wav", "72"], ["/cap/a.wav", "71"]]


def _number(shown: str) -> float | None:
    """A value the page keeps in ``data-v`` (JavaScript writes 12.0 as "12"; null as "")."""
    return None if shown == "" else float(shown)


def _window_around_now() -> str:
    """An upload window open now (local time) and closing in two hours."""
    now = datetime.now()
    return f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=2):%H:%M}"


def _status(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def _drop(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    tmp.rename(folder / name)


def _fill(tmp_path: Path, server: LocalIngestionServer, base: str) -> None:
    """Three delivered files, two dead letters (the service refuses them), one held."""
    captures = tmp_path / "captures"
    for i in range(3):
        _drop(captures, f"ok-{i}.csv", f"t,v\n0,{i}\n")
    wait_for(lambda: len(server.index_lines()) == 3, timeout=20)
    server.set_faults(FaultConfig(fail_rate=1.0, fail_status=400))
    _drop(captures, XSS, "RIFF-not-really")
    _drop(captures, "refused.csv", "t,v\n0,9\n")
    (captures / "bad.csv.meta.json").write_text('{"label": 3}')
    _drop(captures, "bad.csv", "t,v\n0,8\n")

    def settled() -> bool:
        doc = json.loads(http_get(base + "/status.json")[1])
        c = doc["counts"]
        return (c["delivered"], c["dead"], c["held"], doc["backlog"]) == (3, 2, 1, 0)

    wait_for(settled, timeout=30)
    server.set_faults(FaultConfig())


@needs_chromium
@pytest.mark.slow
def test_the_page_shows_what_status_json_says(
    tmp_path: Path, server: LocalIngestionServer, agents: list[Agent]
) -> None:
    port = free_port()
    window = _window_around_now()
    config = write_config(tmp_path, server.url, f'[http]\nlisten = "127.0.0.1:{port}"\n')
    metered = f'max_bytes_per_day = 5000000\nupload_windows = ["{window}"]\n'
    config.write_text(config.read_text().replace("[queue]", metered + "\n[queue]"))
    base = f"http://127.0.0.1:{port}"
    agents.append(agent := Agent(config))
    wait_for(lambda: agent.proc.poll() is None and "status page on" in agent.log, timeout=20)
    _fill(tmp_path, server, base)

    dom = _page(tmp_path, base + "/")
    info = _status(config)  # a separate process reading the same queue file
    f = dom.fields
    assert f["backlog"]["data-v"] == "0" == str(info["backlog"])
    for state, n in info["counts"].items():
        assert f[f"counts.{state}"]["data-v"] == str(n), state
    assert f["last_900s"]["data-v"] == str(info["throughput"]["last_900s"]["files"]) == "3"
    c = info["concurrency"]
    assert f["concurrency.limit"]["data-v"] == str(c["limit"])
    assert _number(f["concurrency.rtt_ms"]["data-v"]) == c["rtt_ms"]  # None until measured
    assert f["budget"]["data-v"] == str(info["budget"]["left_bytes"])
    assert info["budget"]["left_bytes"] < 5000000  # the delivered files count
    assert info["window"]["open"] and f["window"]["text"].startswith("open until")
    watch = f"watch:{tmp_path / 'captures'}"
    assert dom.tables["by-watch"] == [[watch, "0", "0", "2", "1"]]
    assert info["backlog_by_watch"] == {watch: {"pending": 0, "uploading": 0, "dead": 2,
                                                "held": 1}}  # fmt: skip
    assert [(r[1], r[2]) for r in dom.tables["recent"]] == [
        (d["path"], str(d["sample_id"])) for d in info["recent_deliveries"]
    ]
    assert [r[:3] for r in dom.tables["dead"]] == [
        [str(d["id"]), d["path"], d["reason"]] for d in info["dead_letters"]
    ]
    assert str(tmp_path / "captures" / XSS) in [d["path"] for d in info["dead_letters"]]
    assert "img" not in dom.tags
    assert [r[:2] for r in dom.tables["held"]] == [[str(d["id"]), d["path"]] for d in info["held"]]

    shot = tmp_path / "status.png"
    _chromium(tmp_path, base + "/", f"--screenshot={shot}", "--window-size=412,915")
    assert shot.exists() and shot.stat().st_size > 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert agent.proc.poll() is None, "the agent must still run"
    assert agent.stop() == 0


@needs_chromium
def test_the_page_says_when_the_agent_cannot_answer(
    endpoint: tuple[str, _Vitals], tmp_path: Path
) -> None:
    """A reload (or a queue that cannot be read) is shown on the page, not a blank page."""
    base, vitals = endpoint
    vitals.queue = None
    html = _chromium(tmp_path, base + "/", "--dump-dom")
    assert _Dom(html).body.get("data-state") is None  # never filled
    conn = _Conn(html).text
    assert conn == "cannot read the agent's status (starting or reloading); trying again"


class _Conn(HTMLParser):
    """The text of the page's connection line (``#conn``)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text, self._in = "", False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in = ("id", "conn") in attrs

    def handle_endtag(self, tag: str) -> None:
        self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.text += data

"""Links benchmark: edge-uploader against plain clients, over good and bad links, in one run.

    python bench/links.py                          # the full run (about 15-20 minutes)
    python bench/links.py --files 440 --rounds 1 --situations loopback,5xx   # a quick look

Why: a benchmark on a perfect loopback, against a server slower than the client, flatters
whoever is measured. This one measures its own server first (the floor: a raw client that
costs almost nothing), then runs every client against a fresh minimal server
(bench/minserver.py: headers parsed, body counted and hashed, a JSON answer, nothing
stored) in each situation, interleaved in rounds (round 1: every situation, every client;
round 2: the same), so that load from other work on a shared machine hits all of them
alike. Each client is its own process, with a fresh queue. Every figure is counted at the
server or read from the kernel, never taken from a client's own report.

The data: ``--files`` distinct files (default 2,200), every 11th one 200 KiB and the others
2 KB, 100 to a folder (``session-NN``), generated once. Each file has its own modification
time, 0.1 s after the one before, as captures have: with ``captured_at`` on (the agent's
default) every file's metadata differs and every file is its own request, as in the
field; only the ``-multi`` clients let a session's files share a request. A situation that
uses fewer files takes a prefix, so the mix of sizes stays the same.

The situations (``--situations`` takes their names):

=========  ===================================================================  =====  ====
name       the server                                                           files  cap
=========  ===================================================================  =====  ====
loopback   no latency, no faults                                                all    60 s
+50ms      every answer 50 ms late (a timer: many requests wait side by side)   all    15 s
+200ms     every answer 200 ms late                                             all    20 s
5xx        5 % of requests answered 500 or 503 (half each), nothing stored      all    30 s
drops      2 % of connections closed without an answer, nothing stored          all    30 s
lost       2 % of requests stored, then the connection closed (answer lost)     all    30 s
overload   +50 ms, and 503 to a request that arrives while 6 are in progress;   half   20 s
           the agent on its defaults (concurrency "auto": it must find the 6)
=========  ===================================================================  =====  ====

Faults are drawn from a generator seeded per round (``--seed``). A client still running at
the cap (``--cap-scale`` multiplies the caps) is stopped: its rate is what it had stored by
then over the cap, and "every file once" cannot be shown for it.

The clients (``--clients`` takes their names):

- ``run``: ``edge-uploader run`` with every file already in its watched folder when it
  starts (a backlog): its config has the device id, ``[metadata]`` site and location, the
  watch with ``session = "{dir}"``, and defaults for the rest; stopped once every file is
  stored. ``upload``: ``edge-uploader upload FOLDER --no-progress --metadata site=...
  --metadata location=...``, defaults otherwise; it exits by itself.
- ``run-multi``, ``upload-multi``: the same with ``[tagging] captured_at = false`` and
  ``upload --no-captured-at``, so that the files of a session share their headers and can
  go several to a request (``--max-files-per-request N`` also sets ``[ingestion]
  max_files_per_request``). Skipped, with the reason, when the installed agent lacks them.
- ``naive``: one ``httpx.Client``, one POST per file, one after another, no retries.
- ``pool8``: 8 threads sharing one ``httpx.Client``, one POST per file, no retries.

The columns of each situation's table:

- ``files/s``: the median over the rounds of: distinct files stored at the server, divided
  by the seconds from the client's process start to the last new file stored at the
  server (or to the cap). Start-up counts: a user waits for it too.
- ``x naive``, ``x pool8``: that median divided by the naive loop's, the pool's, median in
  the same situation.
- ``per round``: each round's files/s, in order.
- ``1st req s``: median seconds from the process start to its first request at the server.
- ``delivered``: the fewest distinct files at the server at the end of any round, of the
  files in the situation; ``*``: stopped at the cap in at least one round.
- ``once``: ``yes`` when in every round every file was stored and none twice; otherwise
  ``lost N`` (the most files missing after a round the client ended by itself: it gave
  up on them), ``stored twice``, ``cap`` (stopped before it was done).
- ``requests``: median over the rounds of HTTP requests the server received (every attempt,
  answered or not), and in brackets per file delivered: above 1 means retries, below 1
  several files per request.
- ``dups``: median of sample parts the server refused as already stored.
- ``5xx``: median of 500/503 answers the server sent (injected, or over the in-flight
  limit), and their share of the requests.
- ``CPU s``: median user + system CPU seconds of the client process (from ``wait4``).
- ``RSS MB``: the highest peak resident set size of the client process in any round.
- ``srv CPU``: median CPU seconds of the server process during that client's runs.

An overview (files/s and delivery per situation and client) and the targets, checked on
those medians (PASS / FAIL / SKIP), come last, as Markdown tables. The script exits 0
whatever the verdicts: it measures, it does not gate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KEY = "ei_bench_links_0000"
SMALL, LARGE, LARGE_EVERY = 2_000, 200 * 1024, 11
POLL = 0.1
EXIT_GRACE = 30.0


@dataclass(frozen=True)
class Situation:
    name: str
    title: str
    share: float
    cap: float
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    lost_rate: float = 0.0
    max_inflight: int = 0
    concurrency: int | None = None
    """The agent's and the pool's concurrency here; None: their defaults."""

    def server_args(self) -> list[str]:
        return [
            "--latency-ms",
            str(self.latency_ms),
            "--fail-rate",
            str(self.fail_rate),
            "--drop-rate",
            str(self.drop_rate),
            "--lost-reply-rate",
            str(self.lost_rate),
            "--max-inflight",
            str(self.max_inflight),
        ]


SITUATIONS = (
    Situation("loopback", "loopback, no faults", 1.0, 60),
    Situation("+50ms", "+50 ms per request", 1.0, 15, latency_ms=50),
    Situation("+200ms", "+200 ms per request", 1.0, 20, latency_ms=200),
    Situation("5xx", "5 % of requests answered 500/503", 1.0, 30, fail_rate=0.05),
    Situation("drops", "2 % of connections dropped before storing", 1.0, 30, drop_rate=0.02),
    Situation(
        "lost", "2 % of replies lost (stored, then the connection closed)", 1.0, 30, lost_rate=0.02
    ),
    Situation(
        "overload",
        "503 above 6 requests in flight, +50 ms; the agent on its defaults",
        0.5,
        20,
        latency_ms=50,
        max_inflight=6,
    ),
)


@dataclass(frozen=True)
class Client:
    name: str
    kind: str
    """run | upload | naive | pool"""
    multi: bool = False


CLIENTS = (
    Client("run", "run"),
    Client("upload", "upload"),
    Client("run-multi", "run", multi=True),
    Client("upload-multi", "upload", multi=True),
    Client("naive", "naive"),
    Client("pool8", "pool"),
)
AGENT_KINDS = ("run", "upload")


@dataclass
class Result:
    n: int
    seconds: float
    counted: int
    """Distinct files stored when the clock stopped."""
    distinct: int
    """Distinct files stored when the server stopped (a stopped client may finish a few)."""
    stored: int
    requests: int
    duplicates: int
    errors_5xx: int
    overload_503: int
    cpu: float
    rss_mb: float
    server_cpu: float
    capped: bool
    exit_status: int | None
    first_request: float | None
    """Seconds from the client's start to its first request at the server."""

    @property
    def rate(self) -> float:
        return self.counted / self.seconds if self.seconds > 0 else 0.0

    @property
    def once(self) -> bool:
        return self.distinct == self.n and self.stored == self.distinct


@dataclass
class Context:
    work: Path
    data: Path
    files: int
    agent: str
    seed: int
    cap_scale: float
    max_files_per_request: int | None
    multi_note: str | None
    """Why the multi variants are skipped; None: they run."""
    results: dict[tuple[str, str], list[Result]] = field(default_factory=dict)
    floors: dict[int, float] = field(default_factory=dict)
    """The server's own files/s by files per request."""
    runs: int = 0

    def count(self, sit: Situation) -> int:
        return max(LARGE_EVERY, round(self.files * sit.share))

    def folder(self, n: int) -> Path:
        """The first ``n`` files, as a tree of hard links (made once)."""
        target = self.work / f"files-{n}"
        if not target.exists():
            for src in sorted(self.data.rglob("*.wav"))[:n]:
                dst = target / src.relative_to(self.data)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
        return target


# --- data -----------------------------------------------------------------------------


def make_data(folder: Path, n: int, seed: int) -> int:
    """``n`` distinct files, every 11th large, 100 to a session folder, 0.1 s apart in
    modification time (an hour ago); bytes written."""
    rng = random.Random(seed)
    old = time.time() - 3600
    total = 0
    for i in range(n):
        size = LARGE if i % LARGE_EVERY == LARGE_EVERY - 1 else SMALL
        sub = folder / f"session-{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{('idle', 'wave', 'snake')[i % 3]}.{i:05d}.wav"
        path.write_bytes(rng.randbytes(size))
        at = old + i * 0.1
        os.utime(path, (at, at))
        total += size
    return total


# --- processes ------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point an agent elsewhere."""
    drop = ("EI_", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "XDG_STATE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def reap(proc: subprocess.Popen[bytes], block: bool) -> tuple[int, float, float] | None:
    """(exit status, CPU s, peak RSS MB) once the process has ended; None while it runs."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """SIGTERM, then SIGKILL after 15 s; the process's figures."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while (done := reap(proc, block=False)) is None:
        if time.monotonic() > deadline:
            proc.kill()
            return reap(proc, block=True) or (-9, 0.0, 0.0)
        time.sleep(0.02)
    return done


class MinServer:
    """A fresh bench/minserver.py with a situation's faults."""

    def __init__(self, sit: Situation | None, seed: int) -> None:
        args = sit.server_args() if sit else []
        cmd = [
            sys.executable,
            str(BENCH / "minserver.py"),
            "--api-key",
            KEY,
            "--seed",
            str(seed),
            *args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise SystemExit(f"minserver did not start: {line!r}")
        self.url = line.split()[-1]
        host, port = self.url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def stats(self) -> dict[str, float]:
        self.conn.request("GET", "/stats")
        return json.loads(self.conn.getresponse().read())

    def stop(self) -> tuple[dict[str, float], float]:
        """The final counters and the server's CPU seconds."""
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read().decode()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        line = next(x for x in out.splitlines() if x.startswith("minserver stats "))
        return json.loads(line.split(" ", 2)[2]), usage.ru_utime + usage.ru_stime


# --- the clients ----------------------------------------------------------------------


def agent_config(
    ctx: Context, sit: Situation, client: Client, folder: Path, url: str, state: Path
) -> Path:
    lines = [
        '[device]\nid = "bench-01"\n[metadata]\nsite = "bench"\nlocation = "lab"',
        f'[ingestion]\nurl = "{url}"',
    ]
    if sit.concurrency:
        lines.append(f"concurrency = {sit.concurrency}")
    if client.multi and ctx.max_files_per_request:
        lines.append(f"max_files_per_request = {ctx.max_files_per_request}")
    lines.append(f'[queue]\npath = "{state / "queue.db"}"')
    if client.multi:
        lines.append("[tagging]\ncaptured_at = false")
    if client.kind == "run":
        lines.append(f'[[watch]]\npath = "{folder}"\nmetadata = {{ session = "{{dir}}" }}')
    cfg = state / "agent.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def command(
    ctx: Context, sit: Situation, client: Client, folder: Path, url: str, state: Path
) -> tuple[list[str], dict[str, str]]:
    env = clean_env(EI_API_KEY=KEY)
    if client.kind == "run":
        cfg = agent_config(ctx, sit, client, folder, url, state)
        return [ctx.agent, "--log-level", "warning", "run", "--config", str(cfg)], env
    if client.kind == "upload":
        cmd = [
            ctx.agent,
            "--log-level",
            "warning",
            "upload",
            str(folder),
            "--no-progress",
            "--metadata",
            "site=bench",
            "--metadata",
            "location=lab",
        ]
        if sit.concurrency:
            cmd += ["--concurrency", str(sit.concurrency)]
        if client.multi:
            cmd.append("--no-captured-at")
            if ctx.max_files_per_request:
                cmd += ["--config", str(agent_config(ctx, sit, client, folder, url, state))]
        env.update(EI_INGESTION_URL=url, XDG_STATE_HOME=str(state))
        return cmd, env
    base = [sys.executable, str(BENCH / "baselines.py"), client.kind, url, KEY, str(folder)]
    if client.kind == "pool":
        base += ["--threads", "8"]
    return base, env


@dataclass
class Ending:
    seconds: float
    counted: int
    """Distinct files at the server when the clock stopped (the rate's numerator)."""
    capped: bool
    status: int
    cpu: float
    rss_mb: float


def watch(
    proc: subprocess.Popen[bytes], server: MinServer, n: int, t0: float, cap: float, daemon: bool
) -> Ending:
    """Wait until the client is done (a daemon: every file stored), or stop it at the cap."""
    complete_at: float | None = None
    while True:
        time.sleep(POLL)
        st = server.stats()
        now = time.monotonic()
        if complete_at is None and st["distinct"] >= n:
            complete_at = now
        done = reap(proc, block=False)
        if done is None and complete_at is None and now - t0 < cap:
            continue
        grace = complete_at is not None and not daemon and now - complete_at <= EXIT_GRACE
        if done is None and grace:
            continue
        if done is None and complete_at is None:
            return Ending(cap, int(st["distinct"]), True, *stop(proc))
        figures = done or stop(proc)
        last = server.stats()
        seconds = float(last["last_new_at"] or now) - t0
        return Ending(seconds, int(last["distinct"]), False, *figures)


def run_one(ctx: Context, sit: Situation, client: Client, rnd: int) -> Result:
    n = ctx.count(sit)
    folder = ctx.folder(n)
    ctx.runs += 1
    state = ctx.work / f"state-{ctx.runs}"
    state.mkdir()
    server = MinServer(sit, ctx.seed + rnd)
    try:
        cmd, env = command(ctx, sit, client, folder, server.url, state)
        with open(state / "stderr.txt", "wb") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
            end = watch(proc, server, n, t0, sit.cap * ctx.cap_scale, client.kind == "run")
    finally:
        final, server_cpu = server.stop()
    result = Result(
        n,
        end.seconds,
        end.counted,
        int(final["distinct"]),
        int(final["stored"]),
        int(final["requests"]),
        int(final["duplicates"]),
        int(final["errors_5xx"]),
        int(final["overload_503"]),
        end.cpu,
        end.rss_mb,
        server_cpu,
        end.capped,
        end.status,
        float(final["first_request_at"]) - t0 if final["first_request_at"] else None,
    )
    report_run(sit, client, rnd, result, state / "stderr.txt")
    shutil.rmtree(state, ignore_errors=True)
    return result


def report_run(sit: Situation, client: Client, rnd: int, r: Result, err: Path) -> None:
    note = "  stopped at the cap" if r.capped else ""
    print(
        f"  round {rnd + 1}  {sit.name:9} {client.name:13} {r.rate:7.1f} files/s  "
        f"{r.distinct}/{r.n} in {r.seconds:5.1f} s  {r.requests} requests  "
        f"exit {r.exit_status}{note}",
        file=sys.stderr,
        flush=True,
    )
    expected = (0, -15) if client.kind == "run" else (0,)
    if not r.capped and r.exit_status not in expected and client.kind in AGENT_KINDS:
        tail = err.read_text(errors="replace").strip().splitlines()[-5:]
        for line in tail:
            print(f"      {line}", file=sys.stderr)


# --- the server's own floor -----------------------------------------------------------


def floor(ctx: Context, per_request: int, connections: int = 4) -> tuple[float, float, float]:
    """(files/s, server CPU s, client CPU s) of the raw pre-built client on all the files."""
    folder = ctx.folder(ctx.files)
    server = MinServer(None, ctx.seed)
    try:
        cmd = [
            sys.executable,
            str(BENCH / "baselines.py"),
            "floor",
            server.url,
            KEY,
            str(folder),
            "--connections",
            str(connections),
            "--per-request",
            str(per_request),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # built: the clock starts now
        t0 = time.monotonic()
        proc.stdout.read()
        _, cpu, _ = reap(proc, block=True) or (0, 0.0, 0.0)
    finally:
        final, server_cpu = server.stop()
    seconds = float(final["last_new_at"] or t0 + 1) - t0
    return final["distinct"] / seconds, server_cpu, cpu


# --- support for several files per request --------------------------------------------


def multi_support(agent: str, work: Path, max_files: int | None) -> tuple[str | None, str]:
    """(why the multi variants cannot run or None, the upload --help text)."""
    helped = subprocess.run([agent, "upload", "--help"], capture_output=True, text=True)
    if "--no-captured-at" not in helped.stdout:
        return "the installed agent's `upload` has no --no-captured-at", helped.stdout
    probe = work / "probe"
    probe.mkdir()
    extra = f"max_files_per_request = {max_files}\n" if max_files else ""
    cfg = probe / "agent.toml"
    cfg.write_text(
        f'[ingestion]\nurl = "http://127.0.0.1:9"\n{extra}[queue]\n'
        f'path = "{probe / "q.db"}"\n[tagging]\ncaptured_at = false\n'
        f'[[watch]]\npath = "{probe}"\n'
    )
    checked = subprocess.run(
        [agent, "check-config", str(cfg)],
        capture_output=True,
        text=True,
        env=clean_env(EI_API_KEY=KEY),
    )
    if checked.returncode != 0:
        why = (checked.stdout + checked.stderr).strip().splitlines()[-1:]
        return f"the installed agent refuses the config keys: {' '.join(why)}", helped.stdout
    return None, helped.stdout


# --- the tables -----------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def rate_of(ctx: Context, sit: str, client: str) -> float | None:
    rs = ctx.results.get((sit, client))
    return med([r.rate for r in rs]) if rs else None


def once_text(rs: list[Result]) -> str:
    if all(r.once for r in rs):
        return "yes"
    notes = []
    if any(r.stored > r.distinct for r in rs):
        notes.append("stored twice")
    lost = max((r.n - r.distinct for r in rs if not r.capped), default=0)
    if lost:
        notes.append(f"lost {lost}")
    if any(r.capped for r in rs):
        notes.append("cap")
    return ", ".join(notes)


def requests_text(rs: list[Result]) -> str:
    per_file = med([r.requests / r.distinct for r in rs if r.distinct])
    return f"{med([r.requests for r in rs]):,.0f} ({per_file:.2f})"


def first_text(rs: list[Result]) -> str:
    starts = [r.first_request for r in rs if r.first_request is not None]
    return f"{med(starts):.2f}" if starts else "-"


def errors_text(rs: list[Result]) -> str:
    count = med([r.errors_5xx for r in rs])
    if not count:
        return "0"
    share = med([100 * r.errors_5xx / r.requests for r in rs if r.requests])
    return f"{count:,.0f} ({share:.0f} %)"


def row(ctx: Context, sit: Situation, client: Client, rs: list[Result]) -> str:
    rate = med([r.rate for r in rs])
    base = [rate_of(ctx, sit.name, b) for b in ("naive", "pool8")]
    vs = [f"{rate / b:.2f}x" if b else "-" for b in base]
    delivered = min(r.distinct for r in rs)
    star = "*" if any(r.capped for r in rs) else ""
    cells = [
        client.name,
        num(rate),
        *vs,
        " ".join(num(r.rate) for r in rs),
        first_text(rs),
        f"{delivered:,}/{rs[0].n:,}{star}",
        once_text(rs),
        requests_text(rs),
        f"{med([r.duplicates for r in rs]):,.0f}",
        errors_text(rs),
        f"{med([r.cpu for r in rs]):.1f}",
        f"{max(r.rss_mb for r in rs):.1f}",
        f"{med([r.server_cpu for r in rs]):.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEAD = (
    "| client | files/s | x naive | x pool8 | per round | 1st req s | delivered | once | requests "
    "| dups | 5xx | CPU s | RSS MB | srv CPU |"
)


def table(ctx: Context, sit: Situation, rounds: int) -> list[str]:
    n = ctx.count(sit)
    large = n // LARGE_EVERY
    cap = sit.cap * ctx.cap_scale
    out = [
        f"### {sit.name}: {sit.title}",
        f"{n:,} files ({n - large:,} x 2 KB + {large:,} x 200 KiB), cap {cap:.0f} s, "
        f"{rounds} round(s)",
        "",
        HEAD,
        "|" + " --- |" * (HEAD.count("|") - 1),
    ]
    for client in CLIENTS:
        rs = ctx.results.get((sit.name, client.name))
        if rs:
            out.append(row(ctx, sit, client, rs))
    if ctx.multi_note and any((sit.name, c.name) in ctx.results for c in CLIENTS):
        out.append(f"\nrun-multi, upload-multi: skipped: {ctx.multi_note}")
    return [*out, ""]


def floor_line(ctx: Context) -> str:
    """The server's floor beside the fastest client at loopback: who is the bottleneck."""
    floors = ", ".join(f"{num(v)} files/s at {k} per request" for k, v in ctx.floors.items())
    rates = [med([r.rate for r in rs]) for (s, _), rs in ctx.results.items() if s == "loopback"]
    best = f"; the fastest client at loopback: {num(max(rates))}" if rates else ""
    return f"The server alone takes {floors}{best}."


def overview(ctx: Context, sits: set[str]) -> list[str]:
    """One line per situation: every client's files/s and whether each file arrived once."""
    names = [c.name for c in CLIENTS if any((s, c.name) in ctx.results for s in sits)]
    out = ["### overview: files/s (median) and delivery", ""]
    if ctx.floors:
        out += [floor_line(ctx), ""]
    out += [
        "| situation | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for sit in SITUATIONS:
        if sit.name not in sits:
            continue
        cells = []
        for name in names:
            rs = ctx.results.get((sit.name, name))
            if rs:
                seen = once_text(rs)
                rate = num(med([r.rate for r in rs]))
                cells.append(f"{rate}, {'once' if seen == 'yes' else seen}")
            else:
                cells.append("-")
        out.append(f"| {sit.name} | " + " | ".join(cells) + " |")
    return [*out, ""]


# --- the targets ----------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    measured: str
    goal: str
    status: str


def _ratio(
    ctx: Context,
    label: str,
    a: tuple[str, str],
    b: tuple[str, str],
    goal: float,
    once: bool = False,
) -> Verdict:
    top, bottom = rate_of(ctx, *a), rate_of(ctx, *b)
    want = f">= {goal}x" + (", every file once" if once else "")
    if top is None or not bottom:
        return Verdict(label, "not run", want, "SKIP")
    value = top / bottom
    measured = f"{value:.2f}x ({num(top)} / {num(bottom)} files/s)"
    ok = value >= goal
    if once:
        rs = ctx.results[a]
        ok = ok and all(r.once for r in rs)
        measured += f"; once: {once_text(rs)}"
    return Verdict(label, measured, want, "PASS" if ok else "FAIL")


def _rate_at_least(ctx: Context, label: str, key: tuple[str, str], goal: float) -> Verdict:
    rate = rate_of(ctx, *key)
    if rate is None:
        return Verdict(label, "not run", f">= {goal:.0f} files/s", "SKIP")
    return Verdict(
        label, f"{num(rate)} files/s", f">= {goal:.0f} files/s", "PASS" if rate >= goal else "FAIL"
    )


def _overload(ctx: Context, client: str) -> Verdict:
    label = f"overload: {client}"
    goal = "every file, >= 80 files/s, < 15 % 503"
    rs = ctx.results.get(("overload", client))
    if not rs:
        return Verdict(label, "not run", goal, "SKIP")
    rate = med([r.rate for r in rs])
    share = med([100 * r.overload_503 / r.requests for r in rs if r.requests])
    delivered = min(r.distinct for r in rs)
    ok = all(r.once for r in rs) and rate >= 80 and share < 15
    measured = f"{delivered:,}/{rs[0].n:,}, {num(rate)} files/s, {share:.1f} % 503"
    return Verdict(label, measured, goal, "PASS" if ok else "FAIL")


def _rss(ctx: Context) -> Verdict:
    peaks = [
        (r.rss_mb, f"{c} {s}")
        for (s, c), rs in ctx.results.items()
        for r in rs
        if c in ("run", "upload", "run-multi", "upload-multi")
    ]
    if not peaks:
        return Verdict("peak RSS, every agent run", "not run", "<= 45 MB", "SKIP")
    peak, where = max(peaks)
    return Verdict(
        "peak RSS, every agent run",
        f"{peak:.1f} MB ({where})",
        "<= 45 MB",
        "PASS" if peak <= 45 else "FAIL",
    )


def verdicts(ctx: Context) -> list[Verdict]:
    out = []
    for c in ("run", "upload"):
        out.append(
            _ratio(
                ctx,
                f"loopback, 1 file/request: {c} / naive",
                ("loopback", c),
                ("loopback", "naive"),
                1.1,
            )
        )
    for c in ("run-multi", "upload-multi"):
        v = _ratio(
            ctx,
            f"loopback, several files/request: {c} / naive",
            ("loopback", c),
            ("loopback", "naive"),
            3.0,
        )
        if ctx.multi_note:
            v.measured = ctx.multi_note
        out.append(v)
    for c in ("run", "upload"):
        out.append(_ratio(ctx, f"+50 ms: {c} / pool8", ("+50ms", c), ("+50ms", "pool8"), 3.0))
    for c in ("run", "upload"):
        out.append(_rate_at_least(ctx, f"+200 ms: {c}", ("+200ms", c), 150))
    for sit, goal in (("5xx", 0.8), ("drops", 0.7), ("lost", 0.7)):
        for c in ("run", "upload"):
            out.append(
                _ratio(
                    ctx, f"{sit}: {c} / {c} at loopback", (sit, c), ("loopback", c), goal, once=True
                )
            )
    out += [_overload(ctx, "run"), _overload(ctx, "upload"), _rss(ctx)]
    return out


def summary(ctx: Context) -> list[str]:
    vs = verdicts(ctx)
    lines = [
        "### targets (medians of this run)",
        "",
        "| target | measured | goal | verdict |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {v.target} | {v.measured} | {v.goal} | {v.status} |" for v in vs]
    counts = {s: sum(v.status == s for v in vs) for s in ("PASS", "FAIL", "SKIP")}
    lines.append("")
    lines.append(", ".join(f"{k} {n}" for k, n in counts.items()))
    return lines


# --- main -----------------------------------------------------------------------------


def resolve_agent(given: str | None) -> str:
    if given:
        return given
    beside = Path(sys.executable).parent / "edge-uploader"
    found = str(beside) if beside.exists() else shutil.which("edge-uploader")
    if not found:
        raise SystemExit("no edge-uploader found: install the project or pass --agent PATH")
    return found


def pick(names: str | None, choices: tuple[str, ...], what: str) -> set[str]:
    if not names:
        return set(choices)
    wanted = {x.strip() for x in names.split(",") if x.strip()}
    unknown = wanted - set(choices)
    if unknown:
        raise SystemExit(
            f"unknown {what}: {', '.join(sorted(unknown))}; choose from {', '.join(choices)}"
        )
    return wanted


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2200, help="files in the data set (default 2200)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--situations", help="comma-separated: " + ",".join(s.name for s in SITUATIONS))
    ap.add_argument("--clients", help="comma-separated: " + ",".join(c.name for c in CLIENTS))
    ap.add_argument("--cap-scale", type=float, default=1.0, help="multiplies every time cap")
    ap.add_argument("--max-files-per-request", type=int, help="for the multi variants")
    ap.add_argument("--agent", help="the edge-uploader executable (default: this venv's)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-floor", action="store_true", help="skip measuring the server alone")
    return ap.parse_args()


def versions(agent: str) -> str:
    import httpx

    out = subprocess.run([agent, "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{out or 'edge-uploader ?'}; Python {sys.version.split()[0]}, httpx "
        f"{httpx.__version__}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}"
    )


def print_floor(ctx: Context) -> None:
    print(
        "### the server's floor (bench/minserver.py alone, a raw pre-built client, "
        "4 keep-alive connections, loopback)\n"
    )
    print("| files per request | files/s | server CPU s | client CPU s |")
    print("| --- | --- | --- | --- |")
    for per in (1, 100):
        rate, server_cpu, client_cpu = floor(ctx, per)
        ctx.floors[per] = rate
        print(f"| {per} | {num(rate)} | {server_cpu:.1f} | {client_cpu:.1f} |", flush=True)
    print()


def main() -> int:
    args = parse_args()
    sits = pick(args.situations, tuple(s.name for s in SITUATIONS), "situations")
    clients = pick(args.clients, tuple(c.name for c in CLIENTS), "clients")
    agent = resolve_agent(args.agent)
    work = Path(tempfile.mkdtemp(prefix="edge-uploader-links-"))
    started = time.monotonic()
    try:
        print(versions(agent))
        data = work / "data"
        total = make_data(data, args.files, args.seed)
        large = args.files // LARGE_EVERY
        print(
            f"data: {args.files:,} distinct files ({args.files - large:,} x 2 KB + {large:,} "
            f"x 200 KiB, {total / 1e6:.1f} MB), 100 per session folder\n"
        )
        note, _ = multi_support(agent, work, args.max_files_per_request)
        ctx = Context(
            work,
            data,
            args.files,
            agent,
            args.seed,
            args.cap_scale,
            args.max_files_per_request,
            note,
        )
        if not args.no_floor:
            print_floor(ctx)
        for rnd in range(args.rounds):
            for sit in SITUATIONS:
                if sit.name not in sits:
                    continue
                for client in CLIENTS:
                    if client.name not in clients or (client.multi and ctx.multi_note):
                        continue
                    result = run_one(ctx, sit, client, rnd)
                    ctx.results.setdefault((sit.name, client.name), []).append(result)
        for sit in SITUATIONS:
            if sit.name in sits:
                print("\n".join(table(ctx, sit, args.rounds)))
        print("\n".join(overview(ctx, sits)))
        print("\n".join(summary(ctx)))
        minutes = (time.monotonic() - started) / 60
        print(f"\n{minutes:.1f} min in all; load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

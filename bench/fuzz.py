"""Fuzzing at full scale (not part of the test run; the tests run 3,000 and 20,000).

    .venv/bin/python bench/fuzz.py                                   # 100,000 of each
    .venv/bin/python bench/fuzz.py --payloads 2000 --documents 2000  # a quick check

1. MQTT: generated command payloads (``tests/mqtt/fuzzing.py``: valid JSON with wrong
   types, missing and extra fields, huge numbers, deep nesting, long strings, invalid
   UTF-8, non-JSON bytes, sizes at and above the limit, paths and NUL bytes in fields)
   through a real Mosquitto into ``edge-uploader run`` (a command capture source, the local
   ingestion server). Every payload must be answered on its response topic; a rejection
   must name the field its defect is in; only valid commands may capture; no file may
   appear outside the capture folder; the agent must stay up and stop cleanly.
2. Parsers: generated sidecars and ``info.labels`` files (``tests/fuzzdocs.py``) through
   ``parse_sidecar``, ``read_info_file`` and ``parse_entry`` in this process.

Prints payloads/s, rejections by field, the agent's RSS before and after, crashes; exits 1
if any rule was broken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_uploader.localserver import LocalIngestionServer
from tests.fuzzdocs import run_parsers
from tests.mqtt.fuzzing import AgentProcess, Case, Fuzzer, generate, tree
from tests.mqtt.harness import (
    API_KEY,
    HMAC_KEY,
    MOSQUITTO,
    Broker,
    agent_toml,
    command,
    free_port,
)

CHUNK = 10_000


def mqtt_fuzz(payloads: int, seed: int, window: int) -> int:
    """The MQTT run; returns the number of broken rules and crashes."""
    if MOSQUITTO is None:
        print("mqtt: skipped, mosquitto is not installed")
        return 0
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "broker").mkdir()
        broker = Broker(tmp / "broker", free_port(), "allow_anonymous true\n").start()
        server = LocalIngestionServer(tmp / "ingestion", api_keys=[API_KEY], hmac_key=HMAC_KEY,
                                      quiet=True)  # fmt: skip
        try:
            with server:
                return _mqtt_run(tmp, broker, server, payloads, seed, window)
        finally:
            broker.stop()


def _mqtt_run(tmp: Path, broker: Broker, server: LocalIngestionServer, payloads: int, seed: int,
              window: int) -> int:  # fmt: skip
    config = tmp / "agent.toml"
    config.write_text(agent_toml(tmp, mqtt_port=broker.port, ingestion_url=server.url,
                                 sensor_path=None))  # fmt: skip
    before = tree(tmp)
    agent = AgentProcess(config, tmp / "agent.log")
    fuzzer = Fuzzer(broker.port)
    try:
        fuzzer.wait_online()
        rss_before = agent.rss_kib()
        cases = list(generate(seed, payloads))
        seconds = 0.0
        for first in range(0, payloads, CHUNK):
            seconds += fuzzer.publish(cases[first : first + CHUNK], window, first)
            print(f"  {first + len(cases[first : first + CHUNK]):7,d} payloads, {seconds:6.1f} s,"
                  f" agent RSS {agent.rss_kib() / 1024:.1f} MiB", flush=True)  # fmt: skip
        fuzzer.settle(cases, timeout=600)
        rss_after = agent.rss_kib()
        result = fuzzer.judge(cases)
        after = [Case(command("after-fuzz", source="snap", duration_ms=5), None, valid=True)]
        fuzzer.publish(after, first=payloads)
        fuzzer.settle(after, first=payloads)
        serves = fuzzer.judge(after, first=payloads).outcomes["delivered"] == 1
        alive = agent.alive()
    finally:
        fuzzer.close()
        code = agent.stop()
    new = tree(tmp) - before
    ours = ("captures/", "state/", "ingestion/", "broker/")
    outside = sorted(p for p in new if not p.startswith(ours) and p != "agent.log")
    data = [p for p in new if p.startswith("captures/") and not p.endswith(".meta.json")]
    ran = result.outcomes["delivered"] + result.outcomes["failed"] + 1
    crashes = int(not alive) + int(code != 0)
    print(f"mqtt: {payloads:,} payloads in {seconds:.1f} s = {payloads / seconds:,.0f} payloads/s"
          f" (window {window}, seed {seed})")  # fmt: skip
    print(f"  outcomes: {dict(result.outcomes.most_common())}")
    print(f"  rejections by field: {dict(result.rejections.most_common())}")
    print(f"  agent RSS before {rss_before / 1024:.1f} MiB, after {rss_after / 1024:.1f} MiB")
    print(f"  captures {len(data)} for {ran} commands run; files outside the capture folder:"
          f" {outside or 'none'}; serves a command after: {serves}")  # fmt: skip
    print(f"  crashes = {crashes} (alive: {alive}, exit status on SIGTERM: {code})")
    for line in result.wrong:
        print(f"  BROKEN {line}")
    return len(result.wrong) + crashes + len(outside) + int(len(data) != ran) + int(not serves)


def parser_fuzz(documents: int, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="fuzzdocs-") as tmp:
        start = time.monotonic()
        tally = run_parsers(seed, documents, Path(tmp))
        seconds = time.monotonic() - start
    kinds: Counter[str] = Counter()
    for outcome, count in tally.outcomes.items():
        kinds[outcome.split(":")[0]] += count
    print(f"parsers: {documents:,} documents in {seconds:.1f} s = {documents / seconds:,.0f}/s"
          f" (seed {seed})")  # fmt: skip
    print(f"  outcomes: {dict(kinds.most_common())}")
    refusals = {k: v for k, v in tally.outcomes.most_common() if "refused" in k}
    print(f"  refusals by field: {refusals}")
    print(f"  crashes (an exception other than the documented one) and broken rules ="
          f" {tally.outcomes['broken']}")  # fmt: skip
    for line in tally.broken:
        print(f"  BROKEN {line}")
    return tally.outcomes["broken"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--payloads", type=int, default=100_000)
    p.add_argument("--documents", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=20261202)
    p.add_argument("--window", type=int, default=32, help="MQTT payloads unanswered at once")
    args = p.parse_args()
    broken = 0
    if args.payloads:
        broken += mqtt_fuzz(args.payloads, args.seed, args.window)
    if args.documents:
        broken += parser_fuzz(args.documents, args.seed)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

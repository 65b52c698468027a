"""Many agents on one broker: each a real ``edge-uploader run`` process with its own folder.

Every device has a ``snap`` command source (``dd`` writing 64 random bytes: a real program,
cheap enough for hundreds of devices) and its ``[metadata] site``. ``Fleet.start`` waits on
each device's retained ``online`` heartbeat, so a test or benchmark can publish a group
command knowing every device is subscribed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import API_KEY, HMAC_KEY, Observer

DD = shutil.which("dd") or "/bin/dd"


def device_toml(
    folder: Path,
    device_id: str,
    *,
    site: str,
    mqtt_port: int,
    ingestion_url: str,
    heartbeat_seconds: float = 30.0,
    mqtt_extra: str = "",
) -> str:
    (folder / "api-key").write_text(API_KEY + "\n")
    (folder / "hmac-key").write_text(HMAC_KEY + "\n")
    argv = [DD, "if=/dev/urandom", "of={output}", "bs=64", "count=1", "status=none"]
    return (
        f'[device]\nid = "{device_id}"\n\n'
        f'[metadata]\nsite = "{site}"\n\n'
        f'[ingestion]\nurl = "{ingestion_url}"\napi_key_file = "api-key"\n'
        'hmac_key_file = "hmac-key"\nretry_base_seconds = 0.05\nretry_max_seconds = 0.5\n\n'
        '[queue]\npath = "state/queue.db"\nscan_interval_seconds = 600\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nheartbeat_seconds = {heartbeat_seconds}\n'
        f"reconnect_min_seconds = 1\nreconnect_max_seconds = 2\n{mqtt_extra}\n"
        '[capture]\ndir = "captures"\nmax_duration_ms = 10000\n\n'
        f'[[capture.command]]\nname = "snap"\nargv = {json.dumps(argv)}\nextension = ".png"\n'
        "timeout_seconds = 10\n"
    )


@dataclass
class AgentProcess:
    """One ``edge-uploader run`` child process; its log goes to ``agent.log``."""

    device_id: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.folder / "agent.toml"

    def start(self) -> AgentProcess:
        log = open(self.folder / "agent.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_uploader", "run", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env,
        )  # fmt: skip
        log.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        path = self.folder / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Fleet:
    """Devices ``{site}-dev-NN`` spread over sites, all on one broker and one server."""

    root: Path
    mqtt_port: int
    ingestion_url: str
    agents: list[AgentProcess] = field(default_factory=list)

    def add(self, device_id: str, site: str, **kw: Any) -> AgentProcess:
        folder = self.root / device_id
        folder.mkdir(parents=True)
        agent = AgentProcess(device_id, folder)
        agent.config.write_text(device_toml(
            folder, device_id, site=site, mqtt_port=self.mqtt_port,
            ingestion_url=self.ingestion_url, **kw,
        ))  # fmt: skip
        self.agents.append(agent)
        return agent

    def start(self, observer: Observer, timeout: float = 60.0) -> None:
        """Start every agent and wait for each one's retained ``online`` heartbeat."""
        for agent in self.agents:
            agent.start()
        self.wait_online(observer, [a.device_id for a in self.agents], timeout)

    @staticmethod
    def wait_online(observer: Observer, devices: list[str], timeout: float = 60.0) -> None:
        def all_online() -> bool:
            seen = {}
            for doc in observer.json_on_prefix("edge-uploader/", "/status"):
                seen[doc.get("device_id")] = doc.get("status")
            return all(seen.get(d) == "online" for d in devices)

        observer.wait_for(all_online, timeout, f"{len(devices)} devices online")

    def stop(self) -> None:
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in self.agents:
            agent.stop()

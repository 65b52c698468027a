"""Which config file a command uses when it is not told: one order, for every command.

1. ``--config FILE`` (``-c``);
2. the ``EDGE_UPLOADER_CONFIG`` environment variable (a file that must exist);
3. ``/etc/edge-uploader/agent.toml`` (the device's config, as ``make install`` puts it);
4. ``$XDG_CONFIG_HOME/edge-uploader/agent.toml`` (``~/.config/...`` when the variable is
   unset or not an absolute path, as the XDG base directory specification says).

A command that can run without a file (``upload``, ``status``, ``dead``, ``retry-now``)
falls back to the built-in defaults when none is found; the others refuse with a config
error that lists every place looked at.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CONFIG_ENV = "EDGE_UPLOADER_CONFIG"
SYSTEM_CONFIG = Path("/etc/edge-uploader/agent.toml")
"""The system-wide config. A module constant so tests can point it elsewhere."""
USER_CONFIG_NAME = Path("edge-uploader") / "agent.toml"


@dataclass(frozen=True)
class FoundConfig:
    """The file a command uses (``None``: the built-in defaults), how it was chosen, and
    every place that was looked at, for the messages."""

    path: Path | None
    how: str
    looked: tuple[str, ...]

    def describe(self) -> str:
        """One line for the terminal: which file, and why that one."""
        if self.path is None:
            return f"no config file found (looked at {', '.join(self.looked)}): {self.how}"
        return f"config {self.path} ({self.how})"


def user_config(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/edge-uploader/agent.toml``, or under ``~/.config``."""
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not Path(base).is_absolute():
        base = str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / USER_CONFIG_NAME


def find_config(
    explicit: Path | None, *, required: bool, env: Mapping[str, str] | None = None
) -> FoundConfig:
    """The config file to use, in the documented order.

    Raises ``ConfigError`` when ``EDGE_UPLOADER_CONFIG`` names a missing file, or when
    ``required`` and no file is found (the message lists the places looked at)."""
    env = os.environ if env is None else env
    if explicit is not None:
        return FoundConfig(explicit, "given with --config", ("--config",))
    looked = ["--config (not given)"]
    named = env.get(CONFIG_ENV, "").strip()
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError("environment", CONFIG_ENV, f"{path}: no such file")
        return FoundConfig(path, f"from ${CONFIG_ENV}", tuple(looked))
    looked.append(f"${CONFIG_ENV} (not set)")
    for path, how in ((SYSTEM_CONFIG, "the system config"), (user_config(env), "the user config")):
        if path.exists():
            return FoundConfig(path, how, tuple(looked))
        looked.append(str(path))
    if required:
        raise ConfigError(
            "config file", "", f"none found; looked at {', '.join(looked)}: give --config"
            f" FILE, or set {CONFIG_ENV}",
        )  # fmt: skip
    return FoundConfig(None, "the built-in defaults and the environment", tuple(looked))

"""Reading one TOML table: typed getters that name the key path, and unknown-key checks.

Every config error names the file, the dotted key path and what was expected, and the CLI
turns it into exit status 78. Unknown keys are errors too: a typo such as
``after_uplaod`` must not silently fall back to a default on a device nobody looks at.
Relative paths are resolved against the folder that holds the config file, so the same
file works whatever the current directory is (systemd starts services in ``/``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..metadata import check_key, check_value
from .templates import Template, parse_template


class Table:
    """A TOML table being read: typed getters that name the key path, and unknown-key checks."""

    def __init__(self, data: Mapping[str, Any], path: str, source: str, base: Path) -> None:
        self.data = data
        self.path = path
        self.source = source
        self.base = base
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def get_str(
        self, name: str, default: str | None = None, *, nonempty: bool = True
    ) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_tname(value)}")
        if nonempty and not value.strip():
            raise self.error(name, "expected a non-empty string")
        return value

    def req_str(self, name: str) -> str:
        value = self.get_str(name)
        if value is None:
            raise self.error(name, "is required")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_tname(value)}")
        return value

    def get_int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                name, f"expected a whole number from {lo} to {hi}, got {_tname(value)}"
            )
        if not lo <= value <= hi:
            raise self.error(name, f"expected a whole number from {lo} to {hi}, got {value}")
        return value

    def get_float(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {_tname(value)}")
        if not lo <= float(value) <= hi:
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {value}")
        return float(value)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        value = self.get_str(name)
        if value is None:
            return default
        if value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    def get_path(self, name: str, default: Path | None = None) -> Path | None:
        value = self.get_str(name)
        if value is None:
            return default
        return (self.base / os.path.expanduser(value)).resolve()

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, "expected a list of non-empty strings")
        if not value:
            raise self.error(name, "expected at least one entry")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(name, f"expected a table, got {_tname(value)}")
        return Table(value, self.key(name), self.source, self.base)

    def tables(self, name: str) -> list[Table]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(name, f"expected an array of tables ([[{self.key(name)}]])")
        return [
            Table(v, f"{self.key(name)}[{i}]", self.source, self.base) for i, v in enumerate(value)
        ]

    def template(self, name: str) -> Template | None:
        value = self.get_str(name, nonempty=False)
        if value is None:
            return None
        return self._parse_template(value, self.key(name))

    def metadata(self, name: str) -> dict[str, Template]:
        """A table of metadata templates; every value must be a string."""
        sub = self.table(name)
        out: dict[str, Template] = {}
        for key, value in sub.data.items():
            where = sub.key(key)
            try:
                check_key(key, where)
                check_value(value, where)
            except InputError as exc:
                raise ConfigError(self.source, where, exc.message) from None
            out[key] = self._parse_template(value, where)
            sub.seen.add(key)
        return out

    def _parse_template(self, text: str, where: str) -> Template:
        try:
            return parse_template(text, where)
        except InputError as exc:
            raise ConfigError(self.source, where, exc.message) from None

    def finish(self, extra_known: tuple[str, ...] = ()) -> None:
        """Reject keys nobody read: they are typos or options of a newer version."""
        unknown = sorted(set(self.data) - self.seen - set(extra_known))
        if unknown:
            raise ConfigError(self.source, self.key(unknown[0]), "unknown key")


def _tname(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "a table" if isinstance(value, Mapping) else type(value).__name__)


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None

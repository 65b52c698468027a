"""Reading one TOML table: typed getters that name the key path, and unknown-key checks.

Every config error names the file, the dotted key path and what was expected, and the CLI
turns it into exit status 78. Unknown keys are errors too: a typo such as
``after_uplaod`` must not silently fall back to a default on a device nobody looks at, and
the error suggests the closest known key ("did you mean 'after_upload'?").

Errors are gathered, not raised one by one: a getter that meets a bad value records it in
the shared ``Problems`` and returns the default, so the rest of the file is still checked
and one run reports every problem (``Problems.check`` raises them together at the end).
Relative paths are resolved against the folder that holds the config file, so the same
file works whatever the current directory is (systemd starts services in ``/``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, ConfigErrors, InputError
from ..metadata import check_key, check_value
from .templates import Template, parse_template

T = TypeVar("T")


class Problems:
    """Every error found in one config file, in the order met; one per key."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        """Record ``error``, unless its key already has one (a follow-on of the first)."""
        if error.key and any((e.source, e.key) == (error.source, error.key) for e in self.errors):
            return
        self.errors.append(error)

    def attempt(self, parse: Callable[[], T], fallback: T) -> T:
        """``parse()``, or ``fallback`` after recording the error it raised, so the rest of
        the file is still checked."""
        try:
            return parse()
        except ConfigErrors as exc:
            for error in exc.problems:
                self.add(error)
        except ConfigError as exc:
            self.add(exc)
        return fallback

    def check(self) -> None:
        """Raise what was found: the one error itself, or all of them as ``ConfigErrors``."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The unknown-key message, with the closest known key when one is close."""
    import difflib  # only a config with a mistake pays for it

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


class Table:
    """A TOML table being read: typed getters that name the key path, and unknown-key checks."""

    def __init__(
        self, data: Mapping[str, Any], path: str, source: str, base: Path,
        problems: Problems | None = None,
    ) -> None:  # fmt: skip
        self.data = data
        self.path = path
        self.source = source
        self.base = base
        self.seen: set[str] = set()
        self.problems = Problems() if problems is None else problems

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), message)

    def fail(self, name: str, message: str) -> None:
        """Record a bad value; the getter then returns its default and reading goes on."""
        self.problems.add(self.error(name, message))

    def _child(self, data: Mapping[str, Any], path: str) -> Table:
        return Table(data, path, self.source, self.base, self.problems)

    def has(self, name: str) -> bool:
        """Whether the key is set; asking makes it a known key (for "did you mean")."""
        self.seen.add(name)
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
            self.fail(name, f"expected a string, got {_tname(value)}")
            return default
        if nonempty and not value.strip():
            self.fail(name, "expected a non-empty string")
            return default
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
            self.fail(name, f"expected true or false, got {_tname(value)}")
            return default
        return value

    def get_int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"expected a whole number from {lo} to {hi}, got {_tname(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(name, f"expected a whole number from {lo} to {hi}, got {value}")
            return default
        return value

    def get_float(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"expected a number from {lo:g} to {hi:g}, got {_tname(value)}")
            return default
        if not lo <= float(value) <= hi:
            self.fail(name, f"expected a number from {lo:g} to {hi:g}, got {value}")
            return default
        return float(value)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        value = self.get_str(name)
        if value is None:
            return default
        if value not in choices:
            self.fail(name, f"expected one of {', '.join(choices)}; got {value!r}")
            return default
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
            self.fail(name, "expected a list of non-empty strings")
            return default
        if not value:
            self.fail(name, "expected at least one entry")
            return default
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.fail(name, f"expected a table, got {_tname(value)}")
            value = {}
        return self._child(value, self.key(name))

    def tables(self, name: str) -> list[Table]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.fail(name, f"expected an array of tables ([[{self.key(name)}]])")
            return []
        return [self._child(v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

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
            sub.seen.add(key)
            try:
                check_key(key, where)
                check_value(value, where)
            except InputError as exc:
                self.problems.add(ConfigError(self.source, where, exc.message))
                continue
            template = self._parse_template(value, where)
            if template is not None:
                out[key] = template
        return out

    def _parse_template(self, text: str, where: str) -> Template | None:
        try:
            return parse_template(text, where)
        except InputError as exc:
            self.problems.add(ConfigError(self.source, where, exc.message))
            return None

    def finish(self, extra_known: tuple[str, ...] = ()) -> None:
        """Reject keys nobody read (typos, or options of a newer version), each with the
        closest known key when there is one."""
        known = self.seen | set(extra_known)
        for name in sorted(set(self.data) - known):
            self.fail(name, did_you_mean(name, known))


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

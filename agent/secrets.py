"""Secrets (API key, HMAC key, MQTT password): read from a file or the environment, never shown.

A secret never travels on a command line and never reaches a log line: it is held in a
``Secret`` whose ``str``/``repr`` are redacted, and revealed only at the point of use.
Under systemd, ``LoadCredential=NAME:...`` puts the file in ``$CREDENTIALS_DIRECTORY``;
``SecretSource`` looks there by name as a last resort.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import SecretError

MAX_SECRET_BYTES = 4096

DEMO_API_KEY = "ei_local_dev_key_0000"
"""The key of the shipped demo (``config/dev-api-key``, ``make run``). It is published in
the repository and only the local ingestion server accepts it (a real key is ``ei_`` and
64 hex digits): a file holding it keeps nothing secret, so it is not warned about."""

SECRET_OPTIONS = {
    "api-key": ("EI_API_KEY", "--api-key-file"),
    "apikey": ("EI_API_KEY", "--api-key-file"),
    "key": ("EI_API_KEY", "--api-key-file"),
    "hmac-key": ("EI_HMAC_KEY", "[ingestion] hmac_key_file"),
    "hmac": ("EI_HMAC_KEY", "[ingestion] hmac_key_file"),
    "mqtt-password": ("EI_MQTT_PASSWORD", "[mqtt] password_file"),
    "password": ("EI_MQTT_PASSWORD", "[mqtt] password_file"),
    "passwd": ("EI_MQTT_PASSWORD", "[mqtt] password_file"),
}
"""Option names (normalised: lower case, ``_`` as ``-``) that would carry a secret, and
where that secret comes from instead: its environment variable and its file."""

_SECRETISH = re.compile(r"(token|secret|password|passwd)$")
"""Any other option ending so is refused too, with the API key's advice."""

_KEY_LIKE = re.compile(r"\bei_[A-Za-z0-9_]+")
"""An Edge Impulse API key as it appears in text; blanked out of usage errors."""


def secret_refusal(arg: str) -> str | None:
    """The refusal for ``arg`` when it is a secret-carrying option, else None. The value
    (``--api-key=ei_...`` or the next word) is never part of the message."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.lstrip("-").partition("=")[0].lower().replace("_", "-")
    if name.endswith("-file"):
        return None
    env, file = SECRET_OPTIONS.get(name, (None, None))
    if env is None and _SECRETISH.search(name):
        env, file = SECRET_OPTIONS["api-key"]
    if env is None:
        return None
    return f"secrets are not options: use {env} or {file}"


def redact(text: str) -> str:
    """``text`` with every word that looks like an API key replaced."""
    return _KEY_LIKE.sub("ei_(redacted)", text)


class Secret:
    """A string that will not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def is_demo(self) -> bool:
        """True for the public demo key (``DEMO_API_KEY``), which protects nothing."""
        return self._value == DEMO_API_KEY


@dataclass(frozen=True)
class SecretSource:
    """Where one secret comes from, in order: a file, an environment variable, a credential."""

    what: str
    """Human name for messages ("API key")."""
    config_key: str
    """The config key that names the file, for error messages ("ingestion.api_key_file")."""
    file: Path | None = None
    env: str | None = None
    credential: str | None = None
    config_source: str = "config"

    def configured(self) -> bool:
        """True when a file is named, the variable is set or the credential exists."""
        if self.file is not None:
            return True
        if self.env and os.environ.get(self.env, "").strip():
            return True
        return self._credential_path() is not None

    def load(self) -> Secret:
        """Read the secret; raise ``SecretError`` naming where it was looked for."""
        if self.file is not None:
            return Secret(read_secret_file(self.file, self.config_source, self.config_key))
        if self.env:
            value = os.environ.get(self.env, "").strip()
            if value:
                return Secret(value)
        cred = self._credential_path()
        if cred is not None:
            return Secret(read_secret_file(cred, self.config_source, self.config_key))
        places = [f"set {self.config_key}"]
        if self.env:
            places.append(f"the environment variable {self.env}")
        if self.credential:
            places.append(f"a systemd credential named {self.credential}")
        raise SecretError(
            self.config_source, self.config_key, f"no {self.what}: " + ", or ".join(places)
        )

    def load_optional(self) -> Secret | None:
        return self.load() if self.configured() else None

    def _credential_path(self) -> Path | None:
        """The credential file, unless it is missing or blank: the unit gives optional
        credentials a blank default (``SetCredential=hmac_key:\\n``), meaning "none"."""
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not (directory and self.credential):
            return None
        path = Path(directory) / self.credential
        try:
            with open(path, "rb") as handle:
                blank = not handle.read(MAX_SECRET_BYTES + 1).strip()
        except OSError:
            return None
        return None if blank else path


def read_secret_file(path: Path, source: str, key: str) -> str:
    """Read a one-line secret file; the message names the file, never its content."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        if _KEY_LIKE.match(path.name):  # a key given where its file was expected
            shown = "the file named (its name looks like an API key and is not shown)"
            raise SecretError(source, key, f"cannot read {shown}: {exc.strerror or exc}"
                              ) from None  # fmt: skip
        raise SecretError(source, key, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretError(source, key, f"{path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(source, key, f"{path} is not UTF-8 text") from None
    if not value:
        raise SecretError(source, key, f"{path} is empty")
    if "\n" in value:
        value = value.splitlines()[0].strip()
    return value


def readable_by_others(path: Path) -> bool:
    """True when users other than this process's own user and group can read ``path``
    (worth a warning for config and key files): any user, or a group other than ours.
    A file ``root:edge-uploader 0640`` read by the service user is fine."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_mode & stat.S_IROTH:
        return True
    return bool(st.st_mode & stat.S_IRGRP) and st.st_gid != os.getegid()

"""The one error tree of edge-uploader.

Every error the agent raises on purpose is an ``AgentError``. The tree decides what
happens next, so callers catch by branch, not by message::

    AgentError
    ├── ConfigError          bad config or arguments: exit status 78 (EX_CONFIG), nothing runs
    │   └── ConfigErrors     several problems in one config file, reported together
    ├── SecretError          a secret file or variable is missing or unreadable (a ConfigError)
    ├── InputError           untrusted input refused: a sidecar, an MQTT payload, an info file
    │   └── SidecarError     a ``<file>.meta.json`` that cannot be used: the file is held back
    ├── QueueError           the local queue cannot be opened or written (disk full, corrupt)
    │   └── QueueDamaged     the file is not a sound SQLite database: exit status 65
    ├── CaptureError         a capture source failed (port unplugged, garbage lines, timeout)
    └── RemoteError          the ingestion or Studio service refused or failed a request
        ├── TransientError   worth retrying later (network, timeouts, 408, 429, 5xx)   RETRY
        ├── PermanentError   never worth retrying as is (400, 404, 413, parse errors)  DEAD
        └── AuthError        the API key is wrong or lacks rights                      PAUSE
            └── UrlError     the URL is wrong (the service redirects elsewhere)        PAUSE

The branches of ``RemoteError`` are also the vocabulary of what happens next: each names
its ``Outcome``. The uploader reports an ``Outcome`` per file (it never raises for what the
service or the network did); the Studio client raises the error; both decide the branch
with the same status table (``remote.http.status_error``).

Messages name the file, key or field and the reason, and never contain a secret: secrets
are only ever held in ``secrets.Secret`` objects, whose ``repr`` is redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import ClassVar

EX_CONFIG = 78
"""sysexits.h: configuration error. systemd's ``RestartPreventExitStatus=78`` stops a loop."""
EX_DATAERR = 65
"""sysexits.h: data format error: a queue file is damaged (``queue rebuild`` sets it aside);
restarting cannot help, so the unit's ``RestartPreventExitStatus`` lists it too."""


class Outcome(Enum):
    """What happens to a file after one upload attempt."""

    DELIVERED = "delivered"  # stored; the sample id is kept
    DUPLICATE = "duplicate"  # the service had it already: counts as delivered
    RETRY = "retry"  # pending again after a backoff
    PAUSE = "pause"  # pending again; uploads pause until the key or URL is fixed
    DEAD = "dead"  # set aside with the service's reason
    GONE = "gone"  # the file vanished or changed before it was sent


class AgentError(Exception):
    """Base of every error edge-uploader raises on purpose."""


class ConfigError(AgentError):
    """The configuration (file, environment or arguments) is invalid.

    ``source`` is the file (or "environment"/"command line"), ``key`` the dotted key path.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class ConfigErrors(ConfigError):
    """Every problem found in one config file at once; ``problems`` in the order met. The
    ``source``, ``key`` and ``message`` are the first problem's; ``str`` is all of them on
    one line, in the order met (a log entry, systemd's status); the CLI prints one line each."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        super().__init__(first.source, first.key, first.message)
        self.args = (str(self),)

    def __str__(self) -> str:
        return "; ".join(str(p) for p in self.problems)


class SecretError(ConfigError):
    """A secret could not be read from its file or environment variable."""


class InputError(AgentError):
    """Untrusted input was refused; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class SidecarError(InputError):
    """A sidecar ``<file>.meta.json`` is malformed; its data file is held back."""


class QueueError(AgentError):
    """The durable queue or command journal could not be opened, read or written (a full
    disk, a corrupt file): every SQLite error on those files becomes this one."""


class QueueDamaged(QueueError):
    """A queue or journal file is damaged (garbage, truncated, "file is not a database",
    "database disk image is malformed"); the message names the file and what to do."""


class CaptureError(AgentError):
    """A capture source failed; nothing half-written is queued."""


class BrokerError(AgentError):
    """The MQTT broker could not be reached or refused a fleet command's connection."""


class RemoteError(AgentError):
    """A remote service refused or failed a request."""

    outcome: ClassVar[Outcome] = Outcome.DEAD

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientError(RemoteError):
    """Worth retrying later; ``retry_after`` is the server's hint in seconds, if any."""

    outcome = Outcome.RETRY

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class PermanentError(RemoteError):
    """The service will never accept this request as it is."""


class AuthError(RemoteError):
    """The API key is missing, wrong or lacks rights: a person must fix the config."""

    outcome = Outcome.PAUSE


class UrlError(AuthError):
    """The URL is wrong: the service answers with a redirect (which is never followed, so
    the API key never travels to another host)."""

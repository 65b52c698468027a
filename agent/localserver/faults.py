"""Fault injection for upload requests: failures, dropped connections, lost replies, latency.

None of this is vendor behaviour; it exists so the agent's retry, backoff and
dead-letter paths can be exercised against a real socket. Decisions come from a seeded
``random.Random`` taken in request-arrival order, so a sequential test replays exactly.
Tests that need an exact sequence can script the next decisions with ``FaultInjector.script``.
"""

from __future__ import annotations

import contextlib
import enum
import random
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

RETRY_AFTER_STATUSES = frozenset({429, 503})


class FaultAction(enum.Enum):
    """What to do with one upload request."""

    OK = "ok"  # handle normally
    FAIL = "fail"  # answer FaultConfig.fail_status after reading the body
    DROP = "drop"  # read the body, then close the connection with no response
    LOSE = "lose"  # store the upload as usual, then close the connection with no response
    OVERLOAD = "overload"  # more requests in flight than overload_above: 503, Retry-After


@dataclass(frozen=True)
class FaultConfig:
    """Validated fault settings; rates are fractions of upload requests in [0, 1]."""

    fail_rate: float = 0.0
    fail_status: int = 500
    latency_ms: int = 0
    drop_rate: float = 0.0
    seed: int | None = None
    lose_rate: float = 0.0
    """Uploads stored, then answered with nothing (the reply lost on the way back): the
    client cannot know its sample arrived, and its retry meets a duplicate."""
    overload_above: int = 0
    """Answer 503 to an upload request that arrives while this many are already being
    handled (an overloaded service); 0: never."""

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "lose_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.fail_rate + self.drop_rate + self.lose_rate > 1.0:
            raise ValueError("fail_rate + drop_rate + lose_rate must not exceed 1")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be a 4xx or 5xx code, got {self.fail_status}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if self.overload_above < 0:
            raise ValueError(f"overload_above must be >= 0, got {self.overload_above}")


@dataclass(frozen=True)
class FaultDecision:
    """The fate of one request, fixed when it arrives."""

    action: FaultAction
    status: int
    latency_seconds: float

    @property
    def retry_after(self) -> str | None:
        """``Retry-After`` value to send with a failure, if the status calls for one."""
        if self.action is FaultAction.OVERLOAD:
            return "1"
        return "1" if self.status in RETRY_AFTER_STATUSES else None


class FaultInjector:
    """Thread-safe source of ``FaultDecision`` s for upload requests."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or FaultConfig()
        self._rng = random.Random(self._config.seed)  # noqa: S311 - faults, not crypto
        self._script: deque[FaultAction] = deque()
        self._in_flight = 0
        self.requests = 0
        """Upload requests handled so far (tests count requests per file with it)."""

    @property
    def config(self) -> FaultConfig:
        """The settings in force."""
        return self._config

    def configure(self, config: FaultConfig) -> None:
        """Replace the settings and re-seed, so a test can switch faults on and off live."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)  # noqa: S311 - faults, not crypto

    def script(self, actions: Iterable[FaultAction | str]) -> None:
        """Queue exact decisions for the next requests; they win over the random rates."""
        with self._lock:
            self._script.extend(FaultAction(a) for a in actions)

    @contextlib.contextmanager
    def request(self) -> Iterator[FaultDecision]:
        """One upload request being handled: its fate, with overload counted while it lasts."""
        with self._lock:
            self._in_flight += 1
            self.requests += 1
            over = self._config.overload_above and self._in_flight > self._config.overload_above
        try:
            if over:
                yield FaultDecision(FaultAction.OVERLOAD, 503, 0.0)
            else:
                yield self.decide()
        finally:
            with self._lock:
                self._in_flight -= 1

    def decide(self) -> FaultDecision:
        """Decide the next request's fate (one RNG draw per request, for replayability)."""
        with self._lock:
            cfg = self._config
            latency = cfg.latency_ms / 1000.0
            if self._script:
                return FaultDecision(self._script.popleft(), cfg.fail_status, latency)
            if cfg.fail_rate == 0.0 and cfg.drop_rate == 0.0 and cfg.lose_rate == 0.0:
                return FaultDecision(FaultAction.OK, cfg.fail_status, latency)
            draw = self._rng.random()
        if draw < cfg.drop_rate:
            action = FaultAction.DROP
        elif draw < cfg.drop_rate + cfg.fail_rate:
            action = FaultAction.FAIL
        elif draw < cfg.drop_rate + cfg.fail_rate + cfg.lose_rate:
            action = FaultAction.LOSE
        else:
            action = FaultAction.OK
        return FaultDecision(action, cfg.fail_status, latency)

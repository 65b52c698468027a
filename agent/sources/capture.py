"""One capture, from a validated command to a complete file in the capture folder.

Used by the MQTT component and by ``edge-uploader capture``, so both write exactly the
same files. A capture is first *planned* (its final name and its tags, decided once), then
taken. The order of writes is what makes a crash harmless:

1. the data goes to a hidden temp name in the capture folder (``.tmp-<name>``; intake
   and the watcher ignore hidden names), flushed to disk;
2. the sidecar ``<name>.meta.json`` (label, category, session, command id) is written
   atomically (temp + rename);
3. the data file is renamed into place, and the folder synced.

So a data file under its final name always has its sidecar: the watcher or, after a
crash, the reconciliation scan queues it with the right tags. A crash before step 3 leaves
only hidden temp files and perhaps an orphan sidecar; ``clean_stale`` removes those on
the next start, so nothing half-written is ever uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import CaptureConfig, CaptureSource, CommandSource, Config, SerialSource
from ..core.files import sync_folder
from ..core.sidecar import SIDECAR_SUFFIX, encode_sidecar, sidecar_path
from ..core.tagger import Context, Tagged, iso_utc, tag
from ..errors import CaptureError, InputError
from ..secrets import Secret
from .command import Command
from .program import CommandRunner
from .serial import PortOpener, acquisition_bytes, open_port, read_serial

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Plan:
    """A capture decided before it runs: its file's final path and its tags.

    The tags are computed once, here (so a command whose metadata could never be sent is
    refused before anything is captured); the file gets them when it is queued, with
    ``captured_at`` stamped from the finished file like any other capture's.
    """

    command: Command
    source: CaptureSource
    path: Path
    tagged: Tagged
    planned_at: float

    @property
    def temp(self) -> Path:
        return self.path.with_name(TEMP_PREFIX + self.path.name)


@dataclass(frozen=True)
class Captured:
    """A capture whose data sits in a temp file, ready to be put in place by ``commit``."""

    path: Path
    temp: Path
    sidecar: dict[str, Any]
    sample_count: int | None = None
    frequency_hz: float | None = None
    interval_ms: float | None = None
    size: int = 0
    tagged: Tagged | None = None
    """The capture's tags for intake (``captured_at`` is the finished file's time)."""

    def commit(self) -> None:
        """Sidecar first, then the data file renamed into place; the folder is synced."""
        side = sidecar_path(self.path)
        side_tmp = side.with_name(TEMP_PREFIX + side.name)
        try:
            _write_synced(side_tmp, encode_sidecar(**self.sidecar))
            side_tmp.replace(side)
            self.temp.replace(self.path)
            sync_folder(self.path.parent)
        except OSError as exc:
            for p in (side_tmp, side, self.temp):
                with contextlib.suppress(OSError):
                    p.unlink()
            raise CaptureError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def file_name(command: Command, extension: str, now: float, suffix: str | None = None) -> str:
    """``<source>.<label>.<UTC time>.<random><ext>``: unique, readable, never hidden.

    Every part comes from validated text (source names and labels cannot hold ``/``);
    spaces become ``_``.
    """
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S") + f"{now % 1:.3f}"[1:]
    label = (command.label or "unlabeled").replace(" ", "_")
    return f"{command.source}.{label}.{stamp}Z.{suffix or secrets.token_hex(3)}{extension}"


class Capturer:
    """Runs captures for one config. Thread-safe; one capture per source at a time."""

    def __init__(
        self,
        config: Config,
        hmac_key: Secret | None,
        *,
        opener: PortOpener = open_port,
        clock: Any = time.time,
        disk_reason: Callable[[Path], str | None] | None = None,
    ) -> None:
        if config.capture is None:
            raise CaptureError("no [capture] section in the config")
        self.config = config
        self.capture_config: CaptureConfig = config.capture
        self.dir = config.capture.dir
        self.hmac_key = hmac_key
        self.opener = opener
        self.clock = clock
        self.runner = CommandRunner()
        self.disk_reason = disk_reason
        """Why captures into a folder are refused now (the disk floor), or None."""
        self.cancel = threading.Event()
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    # -- before anything runs ----------------------------------------------------------
    def plan(self, command: Command) -> Plan:
        """Name and tag the capture; ``InputError`` (field ``metadata``) when the sample's
        metadata could never be sent, ``CaptureError`` for an unknown source."""
        source = self.capture_config.sources.get(command.source)
        if source is None:
            raise CaptureError(f"no capture source named {command.source!r}")
        now = self.clock()
        name = file_name(command, source.extension, now)
        path = self.dir / name
        if path.parent != self.dir or name.startswith("."):
            raise CaptureError(f"refusing a capture name outside {self.dir}: {name!r}")
        context = Context(
            label=command.label if command.label is not None else "",
            category=command.category,
            metadata=command.trigger_metadata(),
        )
        try:
            tagged = tag(path, self.config, mtime=now, watch=self.capture_config.watch,
                         context=context)  # fmt: skip
        except InputError as exc:
            raise InputError("metadata", exc.message) from None
        return Plan(command, source, path, tagged, now)

    def try_reserve(self, source: str) -> bool:
        """Claim ``source`` for one capture; False when it is busy."""
        with self._lock:
            if source in self._busy:
                return False
            self._busy.add(source)
            return True

    def release(self, source: str) -> None:
        with self._lock:
            self._busy.discard(source)

    def stop(self) -> None:
        """Cancel running captures (serial reads notice within 50 ms; programs are killed)."""
        self.cancel.set()
        self.runner.kill_all()

    # -- the capture -----------------------------------------------------------------
    def refusal(self) -> str | None:
        """Why no capture may start now (free space below ``[disk]``'s floor), or None."""
        return self.disk_reason(self.dir) if self.disk_reason is not None else None

    def capture(self, request: Command | Plan) -> Captured:
        """Take the capture into a temp file; ``CaptureError`` with the reason on failure."""
        plan = request if isinstance(request, Plan) else self.plan(request)
        refused = self.refusal()
        if refused is not None:
            raise CaptureError(f"capture refused: {refused}")
        command, source, temp = plan.command, plan.source, plan.temp
        sidecar = {"label": command.label, "category": command.category,
                   "metadata": command.trigger_metadata()}  # fmt: skip
        try:
            if isinstance(source, SerialSource):
                captured = self._serial(source, command, plan.path, temp, sidecar)
            else:
                captured = self._command(source, command, plan.path, temp, sidecar)
            return replace(captured, tagged=_stamped(plan, temp))
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def _serial(
        self,
        source: SerialSource,
        command: Command,
        path: Path,
        temp: Path,
        sidecar: dict[str, Any],
    ) -> Captured:
        reading = read_serial(source, command.duration_ms, self.cancel, opener=self.opener)
        data = acquisition_bytes(
            device_name=self.config.device_id,
            interval_ms=reading.interval_ms,
            sensors=source.sensors,
            values=reading.values,
            hmac_key=self.hmac_key,
            iat=int(self.clock()) if self.capture_config.include_iat else None,
        )
        try:
            _write_synced(temp, data)
        except OSError as exc:
            raise CaptureError(f"cannot write {temp}: {exc.strerror or exc}") from None
        return Captured(
            path,
            temp,
            sidecar,
            sample_count=len(reading.values),
            frequency_hz=reading.measured_hz,
            interval_ms=reading.interval_ms,
            size=len(data),
        )

    def _command(
        self,
        source: CommandSource,
        command: Command,
        path: Path,
        temp: Path,
        sidecar: dict[str, Any],
    ) -> Captured:
        size = self.runner.run(source, temp, command.duration_ms)
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CaptureError(f"cannot sync {temp}: {exc.strerror or exc}") from None
        return Captured(path, temp, sidecar, sample_count=1, size=size)


def _stamped(plan: Plan, temp: Path) -> Tagged:
    """The plan's tags with ``captured_at`` from the finished file (the rename keeps its
    time), as the scan would derive it from the sidecar; a layer's own value stays."""
    meta = plan.tagged.metadata
    if meta.get("captured_at") != iso_utc(plan.planned_at):
        return plan.tagged
    try:
        mtime = os.stat(temp).st_mtime
    except OSError as exc:
        raise CaptureError(f"cannot check {temp}: {exc.strerror or exc}") from None
    return replace(plan.tagged, metadata={**meta, "captured_at": iso_utc(mtime)})


def clean_stale(folder: Path, older_than_seconds: float, now: float | None = None) -> int:
    """Remove temp files and orphan sidecars a crash left in the capture folder.

    Only entries older than ``older_than_seconds`` go: a manual ``capture`` running next to
    the daemon may own fresh ones. Returns how many were removed.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("cannot list the capture folder %s: %s", folder, exc.strerror or exc)
        return 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_seconds:
                continue
            orphan = (
                entry.name.endswith(SIDECAR_SUFFIX)
                and not (folder / entry.name[: -len(SIDECAR_SUFFIX)]).exists()
            )
            if entry.name.startswith(TEMP_PREFIX) or orphan:
                Path(entry.path).unlink()
                removed += 1
                log.info("removed %s: left by a capture that did not finish", entry.path)
        except OSError:
            continue
    return removed

"""The process's own resource use, read from ``/proc/self`` for the standard ``process_*``
metrics (the names and units the Prometheus client libraries export, so stock dashboards
and alerts work unchanged). Linux only: elsewhere ``read()`` returns None.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessStats:
    cpu_seconds: float
    """User plus system CPU time since the process started."""
    resident_bytes: int
    virtual_bytes: int
    start_time: float
    """Unix time the process started."""
    open_fds: int
    max_fds: int
    """The soft limit on open file descriptors (``RLIMIT_NOFILE``)."""


def parse_stat(text: str, *, ticks: int, page_size: int, boot_time: float) -> dict[str, float]:
    """CPU seconds, start time, virtual and resident bytes from a ``/proc/PID/stat`` line.

    The command name (field 2) is in parentheses and may itself hold spaces and ``)``:
    fields are counted from the last ``)`` (proc(5): utime is field 14, stime 15, starttime
    22, vsize 23, rss 24)."""
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state): field N is fields[N - 3]
    utime, stime = int(fields[11]), int(fields[12])
    return {
        "cpu_seconds": (utime + stime) / ticks,
        "start_time": boot_time + int(fields[19]) / ticks,
        "virtual_bytes": int(fields[20]),
        "resident_bytes": int(fields[21]) * page_size,
    }


def boot_time(proc: Path = PROC) -> float:
    """Unix time the machine booted (``btime`` in ``/proc/stat``)."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def read(proc: Path = PROC) -> ProcessStats | None:
    """This process's figures now, or None where ``/proc`` cannot be read."""
    try:
        stat = parse_stat(
            (proc / "self" / "stat").read_text(),
            ticks=os.sysconf("SC_CLK_TCK"),
            page_size=resource.getpagesize(),
            boot_time=boot_time(proc),
        )
        open_fds = sum(1 for _ in (proc / "self" / "fd").iterdir())
    except (OSError, ValueError, IndexError):
        return None
    return ProcessStats(
        cpu_seconds=stat["cpu_seconds"],
        resident_bytes=int(stat["resident_bytes"]),
        virtual_bytes=int(stat["virtual_bytes"]),
        start_time=stat["start_time"],
        open_fds=open_fds,
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )

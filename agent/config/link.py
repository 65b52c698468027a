"""The metered-link keys of ``[ingestion]``: a bandwidth cap, upload windows, a daily budget.

Field devices share cellular plans and site uplinks: after a week offline a backlog must
not take the whole link, must go when the link is cheap or free, and must not spend more
than the plan allows in a day. All three are optional; none changes what is captured and
queued, only when and how fast it is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as dtime

from .table import Table

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
MAX_WINDOWS = 48


@dataclass(frozen=True)
class Window:
    """Minutes after local midnight (``end`` up to 1440, "24:00"); ``end < start`` crosses
    midnight."""

    start: int
    end: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class LinkConfig:
    max_bytes_per_second: int = 0
    """A cap on request bodies, shared by every upload; 0: no cap."""
    upload_windows: tuple[Window, ...] = ()
    """Local times when uploads may go; empty: always."""
    max_bytes_per_day: int = 0
    """Bytes of files sent per local day (kept in the queue across restarts); 0: no budget."""


def parse_window(text: str) -> Window | None:
    """``"HH:MM-HH:MM"`` (24-hour, local time; ``24:00`` ends at midnight), or None."""
    m = _WINDOW.match(text.strip())
    if m is None:
        return None
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if end > 24 * 60 or start == end:
        return None
    return Window(start, end, text.strip())


def parse_link(t: Table) -> LinkConfig:
    """The keys from the ``[ingestion]`` table ``t`` (which the caller finishes)."""
    d = LinkConfig()
    windows = []
    listed = () if t.data.get("upload_windows") == [] else t.str_list("upload_windows", ())
    t.seen.add("upload_windows")  # an empty list is fine: no windows, always open
    for i, text in enumerate(listed):
        window = parse_window(text)
        if window is None:
            raise t.error("upload_windows", f'entry {i} is {text!r}: expected "HH:MM-HH:MM" in'
                          ' 24-hour local time, e.g. "01:00-05:00" (a window may cross'
                          ' midnight, "22:00-06:00"; start and end differ)')  # fmt: skip
        windows.append(window)
    if len(windows) > MAX_WINDOWS:
        raise t.error("upload_windows", f"expected at most {MAX_WINDOWS} windows")
    return LinkConfig(
        max_bytes_per_second=t.get_int("max_bytes_per_second", d.max_bytes_per_second, 0,
                                       10**12),
        upload_windows=tuple(windows),
        max_bytes_per_day=t.get_int("max_bytes_per_day", d.max_bytes_per_day, 0, 10**15),
    )  # fmt: skip


# -- local time: windows and days ---------------------------------------------------------
# ``tz`` None is the device's local time zone (what a field engineer means by "01:00");
# tests pass a fixed zone. Wall times become instants through ``datetime.timestamp``, so a
# daylight-saving change moves a window with the clock on the wall, as people expect.


@dataclass(frozen=True)
class WindowState:
    open: bool
    closes_at: float | None
    """When the open window ends (None: no windows, always open)."""
    next_open_at: float | None
    """When the next window opens, if closed now."""


def _local(ts: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def _at(day: date, minute: int, tz: tzinfo | None) -> float:
    day, minute = day + timedelta(days=minute // 1440), minute % 1440  # "24:00"
    moment = datetime.combine(day, dtime(minute // 60, minute % 60), tzinfo=tz)
    return moment.timestamp()


def _inside(windows: tuple[Window, ...], minute: int) -> bool:
    for w in windows:
        if w.start < w.end and w.start <= minute < w.end:
            return True
        if w.start > w.end and (minute >= w.start or minute < w.end):
            return True
    return False


def window_state(windows: tuple[Window, ...], now: float,
                 tz: tzinfo | None = None) -> WindowState:  # fmt: skip
    """Whether uploads may go at ``now``, and when that changes."""
    if not windows:
        return WindowState(True, None, None)
    local = _local(now, tz)
    today = local.date()
    days = [today + timedelta(days=d) for d in (-1, 0, 1, 2)]
    if _inside(windows, local.hour * 60 + local.minute):
        ends = sorted(t for d in days for w in windows if (t := _at(d, w.end, tz)) > now)
        for end in ends:  # adjacent windows ("01:00-02:00", "02:00-03:00") are one
            at = _local(end, tz)
            if not _inside(windows, at.hour * 60 + at.minute):
                return WindowState(True, end, None)
        return WindowState(True, None, None)  # windows that cover the whole day
    starts = [t for d in days for w in windows if (t := _at(d, w.start, tz)) > now]
    return WindowState(False, None, min(starts))


def local_day(ts: float, tz: tzinfo | None = None) -> str:
    """The local calendar day of ``ts`` (``YYYY-MM-DD``): a data budget's unit."""
    return _local(ts, tz).date().isoformat()


def next_midnight(ts: float, tz: tzinfo | None = None) -> float:
    """When the local day of ``ts`` ends (a data budget resets)."""
    return _at(_local(ts, tz).date() + timedelta(days=1), 0, tz)

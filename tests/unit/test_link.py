"""Metered links: upload windows in local time, the daily budget's day, the bandwidth cap
and the meter that tells the dispatcher when it may send. Injected time zones and clocks;
the budget's count lives in a real queue file."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_uploader.config.link import (
    LinkConfig,
    local_day,
    next_midnight,
    parse_window,
    window_state,
)
from edge_uploader.core.metering import Meter
from edge_uploader.errors import ConfigError
from edge_uploader.remote.throttle import BURST_SECONDS, Throttle
from edge_uploader.store.queue import Queue, Row, State
from tests.fakes import FakeClock

TZ = timezone(timedelta(hours=2))  # a fixed zone: no tz database needed


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, day, hour, minute, tzinfo=TZ).timestamp()


def windows(*texts: str) -> tuple:
    parsed = tuple(parse_window(t) for t in texts)
    assert None not in parsed
    return parsed  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("text", "ok"),
    [("01:00-05:00", True), ("22:00-06:00", True), ("12:30-13:00", True), ("00:00-24:00", True),
     ("1:00-5:00", False), ("01:00-01:00", False), ("25:00-01:00", False), ("01:60-02:00", False),
     ("24:00-01:00", False), ("01:00", False), (" 01:00-05:00 ", True)],
)  # fmt: skip
def test_window_syntax(text: str, ok: bool) -> None:
    assert (parse_window(text) is not None) is ok


def test_inside_a_window_it_says_when_it_closes() -> None:
    w = window_state(windows("01:00-05:00", "12:30-13:00"), at(2, 3), TZ)
    assert w.open and w.closes_at == at(2, 5) and w.next_open_at is None


def test_outside_it_says_when_the_next_opens() -> None:
    ws = windows("01:00-05:00", "12:30-13:00")
    assert window_state(ws, at(2, 6), TZ).next_open_at == at(2, 12, 30)
    assert window_state(ws, at(2, 14), TZ).next_open_at == at(3, 1)
    assert not window_state(ws, at(2, 5), TZ).open  # the end is not inside


def test_a_window_may_cross_midnight() -> None:
    ws = windows("22:00-06:00")
    assert window_state(ws, at(2, 23), TZ).closes_at == at(3, 6)
    assert window_state(ws, at(3, 2), TZ).closes_at == at(3, 6)
    assert window_state(ws, at(3, 12), TZ).next_open_at == at(3, 22)


def test_adjacent_windows_are_one_and_a_full_day_never_closes() -> None:
    assert window_state(windows("01:00-02:00", "02:00-03:00"), at(2, 1, 30), TZ).closes_at == at(
        2, 3
    )
    full = window_state(windows("00:00-24:00"), at(2, 9), TZ)
    assert full.open and full.closes_at is None
    assert window_state((), at(2, 9), TZ) == window_state((), 0.0)  # no windows: always open


def test_the_budget_day_is_the_local_day() -> None:
    assert local_day(at(2, 1), TZ) == "2026-12-02"
    assert local_day(at(2, 1), UTC) == "2026-12-01"  # 23:00 UTC the day before
    assert next_midnight(at(2, 15), TZ) == at(3, 0)


def test_config_keys(load_toml) -> None:  # type: ignore[no-untyped-def]
    cfg = load_toml(
        '[ingestion]\nmax_bytes_per_second = 100000\nupload_windows = ["01:00-05:00",'
        ' "22:00-02:00"]\nmax_bytes_per_day = 50000000\n'
    )
    link = cfg.ingestion.link
    assert link.max_bytes_per_second == 100_000 and link.max_bytes_per_day == 50_000_000
    assert [str(w) for w in link.upload_windows] == ["01:00-05:00", "22:00-02:00"]
    assert load_toml("[ingestion]\nupload_windows = []\n").ingestion.link.upload_windows == ()
    assert load_toml("").ingestion.link == LinkConfig()


def test_priorities(load_toml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "v").mkdir()
    cfg = load_toml(f'[[watch]]\npath = "{tmp_path / "v"}"\npriority = -3\n'
                    f'[capture]\ndir = "{tmp_path / "cap"}"\n')  # fmt: skip
    assert cfg.watches[0].priority == -3
    assert cfg.capture is not None and cfg.capture.priority == 10  # captures were asked for
    assert cfg.watches[-1].path == tmp_path / "cap" and cfg.watches[-1].priority == 10


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [('[ingestion]\nupload_windows = ["1-5"]\n', "ingestion.upload_windows", "HH:MM-HH:MM"),
     ("[ingestion]\nupload_windows = \"01:00-05:00\"\n", "ingestion.upload_windows", "list"),
     ("[ingestion]\nmax_bytes_per_second = -1\n", "ingestion.max_bytes_per_second", ""),
     ("[ingestion]\nmax_bytes_per_day = 1.5\n", "ingestion.max_bytes_per_day", ""),
     ("[[watch]]\npath = \".\"\npriority = \"high\"\n", "watch[0].priority", "")],
)  # fmt: skip
def test_config_errors_name_the_key(load_toml, body: str, key: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as exc:
        load_toml(body)
    assert exc.value.key == key and words in exc.value.message


# -- the bandwidth cap -------------------------------------------------------------------
class Waits:
    """The throttle's waits, on a fake clock that the waits move."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.total = 0.0

    def __call__(self, seconds: float) -> None:
        self.total += seconds
        self.clock.advance(seconds)


def test_the_cap_paces_bytes_to_the_rate(clock: FakeClock) -> None:
    waits = Waits(clock)
    throttle = Throttle(100_000, clock=clock, wait=waits)
    start = clock()
    for _ in range(600):  # 6 MB in 10 kB pieces
        throttle.take(10_000)
    elapsed = clock() - start
    # 100 kB/s: the last piece starts after 59.9 s, less one burst of credit
    assert elapsed == pytest.approx(60 - 0.1 - BURST_SECONDS, abs=0.01)


def test_after_a_quiet_spell_only_a_burst_goes_at_once(clock: FakeClock) -> None:
    waits = Waits(clock)
    throttle = Throttle(100_000, clock=clock, wait=waits)
    throttle.take(10_000)
    clock.advance(3600)
    credit = int(100_000 * BURST_SECONDS)
    throttle.take(credit)  # the burst credit...
    throttle.take(25_000)  # ...and then a piece may start at once
    assert waits.total == 0.0
    throttle.take(25_000)
    assert waits.total == pytest.approx(0.25)
    assert throttle.waited() == pytest.approx(0.25)  # this thread's wait, once
    assert throttle.waited() == 0.0


def test_one_cap_for_every_worker() -> None:
    throttle = Throttle(400_000)
    start = datetime.now().timestamp()

    def send() -> None:
        for _ in range(10):
            throttle.take(10_000)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 800 kB at 400 kB/s: about 2 s whatever the number of workers (less the burst)
    assert datetime.now().timestamp() - start >= 2.0 - BURST_SECONDS - 0.05


def test_a_closed_throttle_lets_everything_go(clock: FakeClock) -> None:
    waits = Waits(clock)
    throttle = Throttle(1_000, clock=clock, wait=waits)
    throttle.close()
    throttle.take(1_000_000)
    throttle.take(1_000_000)
    assert waits.total == 0.0


# -- the meter ---------------------------------------------------------------------------
def row(i: int, size: int) -> Row:
    return Row(id=i, path=f"/d/{i}", size=size, mtime_ns=1, state=State.UPLOADING,
               source="t", label=None, category="training", metadata={}, upload_name=None,
               extra=None, after_upload="keep", move_to=None, allow_duplicates=False,
               batch=None, attempts=0, next_attempt_at=0.0, last_error=None, sha256=None,
               sample_id=None, enqueued_at=0.0, delivered_at=None)  # fmt: skip


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path / "q.db")


def test_outside_the_windows_the_meter_holds_until_the_next_opens(queue: Queue) -> None:
    meter = Meter(LinkConfig(upload_windows=windows("01:00-05:00")), queue, TZ)
    held = meter.hold(at(2, 9))
    assert held is not None and held.until == at(3, 1) and "upload windows" in held.reason
    assert meter.hold(at(3, 2)) is None and meter.closes_at(at(3, 2)) == at(3, 5)
    meter.override = True  # retry-now
    assert meter.hold(at(2, 9)) is None and meter.closes_at(at(2, 9)) is None


def test_the_budget_fits_requests_and_survives_a_restart(queue: Queue) -> None:
    link = LinkConfig(max_bytes_per_day=10_000)
    meter = Meter(link, queue, TZ)
    now = at(2, 9)
    grouped = [[row(1, 3000)], [row(2, 3000), row(3, 3000)]]
    assert meter.fit(grouped, now) == 2  # 9,000 bytes reserved
    meter.settled(3000, 3000, now)
    meter.settled(6000, 6000, now)
    queue.settle([], sent=(meter.day, 9000))
    assert meter.hold(now) is None  # 1,000 bytes left
    again = Meter(link, queue, TZ)  # a restart: the count comes from the queue
    assert again.used(now) == 9000
    assert again.fit([[row(5, 600)], [row(6, 600)]], now) == 1  # the second does not fit...
    held = again.hold(now)  # ...so the day's budget is spent
    assert held is not None and held.until == at(3, 0) and "budget" in held.reason
    queue.set_state(budget_full=again.full)
    assert Meter(link, queue, TZ).hold(now) is not None  # and stays spent after a restart
    assert again.hold(at(3, 0)) is None  # a new day, a new budget


def test_a_file_larger_than_the_budget_goes_alone_first_thing(queue: Queue) -> None:
    meter = Meter(LinkConfig(max_bytes_per_day=1000), queue, TZ)
    assert meter.fit([[row(1, 5000)], [row(2, 10)]], at(2, 0, 1)) == 1
    assert meter.fit([[row(3, 10)]], at(2, 0, 1)) == 0  # the day is spent

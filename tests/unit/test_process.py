"""``/proc/self/stat`` parsing for the ``process_*`` metrics: fields counted from the last
``)``, since a command name may hold spaces and parentheses."""

from __future__ import annotations

from pathlib import Path

from edge_uploader.daemon import process


def test_fields_are_counted_after_the_command_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    line = ("4242 (odd) (name x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0"
            " 12000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0")  # fmt: skip
    got = process.parse_stat(line, ticks=100, page_size=4096, boot_time=1_700_000_000.0)
    assert got == {
        "cpu_seconds": 3.0,
        "start_time": 1_700_000_120.0,
        "virtual_bytes": 104857600,
        "resident_bytes": 2560 * 4096,
    }


def test_this_process_reads_plausibly() -> None:
    stats = process.read()
    assert stats is not None
    assert stats.resident_bytes > 1024 * 1024
    assert 0 < stats.open_fds <= stats.max_fds
    assert stats.cpu_seconds > 0


def test_no_proc_means_no_figures(tmp_path: Path) -> None:
    assert process.read(tmp_path) is None

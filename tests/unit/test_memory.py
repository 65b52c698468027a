"""What the upload commands load and hold: the C allocator's tuning, and no optional
library imported by a command that does not use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edge_uploader.daemon.memory import tune_malloc


def test_the_users_own_arena_setting_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_is_tuned_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert tune_malloc() is True


def loaded_after(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``modules``."""
    code = textwrap.dedent(f"""
        import sys
        for m in {list(modules)!r}:
            __import__(m)
        print(" ".join(sorted({{n.split(".")[0] for n in sys.modules}})))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return set(out.stdout.split())


def test_upload_loads_no_mqtt_serial_or_watcher_library() -> None:
    # the CLI registers every command; `upload` must not pay for paho, pyserial, watchdog
    loaded = loaded_after("edge_uploader.cli", "edge_uploader.bulk.run")
    assert not loaded & {"paho", "serial", "watchdog", "difflib"}


def test_a_daemon_without_mqtt_loads_no_mqtt_or_serial_library() -> None:
    loaded = loaded_after("edge_uploader.cli", "edge_uploader.daemon.lifecycle")
    assert "watchdog" in loaded  # it watches folders
    assert not loaded & {"paho", "serial"}

"""A sidecar is untrusted: whatever sits at ``<file>.meta.json`` (a FIFO, a device, a
folder) must give a prompt ``SidecarError``, never block the intake thread forever."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge_uploader.core.sidecar import read_sidecar, sidecar_path
from edge_uploader.errors import SidecarError


def _read_within(path: Path, seconds: float) -> BaseException | object:
    out: list[BaseException | object] = []

    def run() -> None:
        try:
            out.append(read_sidecar(path))
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        # unblock the reader (open a writer end) so the thread ends, then fail
        fd = os.open(sidecar_path(path), os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("read_sidecar blocked on a FIFO")
    return out[0]


def test_a_fifo_sidecar_is_refused_at_once(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("t,v\n0,1\n")
    os.mkfifo(sidecar_path(data))
    result = _read_within(data, 3.0)
    assert isinstance(result, SidecarError)
    assert "not a regular file" in str(result)


def test_a_folder_or_device_sidecar_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "b.csv"
    data.write_text("t,v\n0,1\n")
    sidecar_path(data).mkdir()
    with pytest.raises(SidecarError, match="not a regular file"):
        read_sidecar(data)
    sidecar_path(data).rmdir()
    sidecar_path(data).symlink_to("/dev/zero")
    with pytest.raises(SidecarError, match="not a regular file"):
        read_sidecar(data)


def test_a_symlinked_regular_sidecar_still_works(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("t,v\n0,1\n")
    real = tmp_path / "shared.json"
    real.write_text('{"label": "idle"}')
    sidecar_path(data).symlink_to(real)
    ctx = read_sidecar(data)
    assert ctx is not None and ctx.label == "idle"

"""``make install`` / ``make uninstall`` into a temporary DESTDIR: files, modes, the unit
pointing at PREFIX, a working venv, and config and keys never overwritten."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]


def _make(target: str, dest: Path, *extra: str) -> str:
    result = subprocess.run(["make", "-s", target, f"DESTDIR={dest}", *extra], cwd=REPO,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_and_uninstall_into_destdir(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    prefix = "/opt/eu-test"
    out = _make("install", dest, f"PREFIX={prefix}")
    assert "systemctl enable --now edge-uploader" in out

    conf = dest / "etc/edge-uploader"
    assert _mode(conf / "agent.toml") == 0o640
    assert _mode(conf / "api_key") == 0o600
    assert (conf / "api_key").read_bytes() == b""
    unit = dest / "etc/systemd/system/edge-uploader.service"
    assert _mode(unit) == 0o644
    text = unit.read_text()
    assert f"ExecStart={prefix}/venv/bin/python -m edge_uploader run" in text
    assert "/opt/edge-uploader" not in text
    assert (dest / "usr/lib/sysusers.d/edge-uploader.conf").read_text().count("edge-uploader") >= 2
    link = dest / "usr/local/bin/edge-uploader"
    assert link.is_symlink() and str(link.readlink()) == f"{prefix}/venv/bin/edge-uploader"
    assert _mode(dest / "srv/edge-uploader/captures") & 0o2000, "setgid capture folder"
    venv = dest / prefix.lstrip("/") / "venv"
    script = (venv / "bin/edge-uploader").read_text().splitlines()[0]
    # python3 or python3.X, whichever the venv's pip names
    assert script.startswith(f"#!{prefix}/venv/bin/python3"), "scripts name the final location"
    assert str(dest) not in (venv / "bin/activate").read_text()
    version = subprocess.run([str(venv / "bin/python"), "-m", "edge_uploader", "--version"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert version.stdout.startswith("edge-uploader "), version.stderr

    # the annotated example sits beside the skeleton, world-readable (it holds no secret)
    example = conf / "agent.example.toml"
    assert example.read_bytes() == (REPO / "config/agent.example.toml").read_bytes()
    assert _mode(example) == 0o644

    # the skeleton config is valid once its folders exist (here: under DESTDIR)
    skeleton = (conf / "agent.toml").read_text()
    for key in ("[disk]", "[http]", 'listen = "127.0.0.1:9108"', "/var/lib/edge-uploader"):
        assert key in skeleton

    # installing again keeps what the operator wrote (install-files is install's second
    # half; the first half only rebuilds the venv)
    (conf / "agent.toml").write_text("# mine\n")
    (conf / "api_key").write_text("ei_mine\n")
    example.write_text("# stale\n")
    _make("install-files", dest, f"PREFIX={prefix}")
    assert (conf / "agent.toml").read_text() == "# mine\n"
    assert example.read_bytes() == (REPO / "config/agent.example.toml").read_bytes()
    assert (conf / "api_key").read_text() == "ei_mine\n"
    assert _mode(conf / "api_key") == 0o600

    out = _make("uninstall", dest, f"PREFIX={prefix}")
    assert "kept:" in out
    assert not unit.exists() and not link.is_symlink() and not venv.exists()
    assert not (dest / "usr/lib/sysusers.d/edge-uploader.conf").exists()
    assert (conf / "agent.toml").exists() and (conf / "api_key").exists()


def test_skeleton_config_parses(tmp_path: Path) -> None:
    """The installed skeleton is a valid config (its folders made up under tmp_path)."""
    from edge_uploader.config import parse_config

    text = (REPO / "systemd/agent.toml").read_text()
    text = text.replace("/srv/edge-uploader/captures", str(tmp_path))
    text = text.replace("/var/lib/edge-uploader", str(tmp_path / "state"))
    import tomllib

    cfg = parse_config(tomllib.loads(text), "agent.toml", tmp_path)
    assert cfg.http.listen == ("127.0.0.1", 9108)
    assert cfg.disk.min_free_bytes == 256 * 1024 * 1024
    assert cfg.ingestion.url.startswith("https://")


def test_no_config_points_into_home() -> None:
    """The unit has ProtectHome=: a key file or folder under /home is invisible to the
    service, so neither shipped config names one outside a comment."""
    for name in ("config/agent.example.toml", "systemd/agent.toml"):
        for n, line in enumerate((REPO / name).read_text().splitlines(), 1):
            value = line.split("#", 1)[0]
            assert "/home" not in value and "~/" not in value, f"{name}:{n}: {line}"

"""The source distribution is the project, not just the package: built with ``python -m
build --sdist``, it carries the license, the tests, the docs, the configs, the unit, the
Makefile and the benchmarks (everything a packager or a field engineer needs from it)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile

import pytest

from .conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs `build`"),
]

REQUIRED = (
    "LICENSE", "README.md", "ARCHITECTURE.md", "Makefile", "pyproject.toml",
    "config/agent.example.toml", "config/dev.toml", "config/dev-api-key",
    "systemd/edge-uploader.service", "systemd/agent.toml", "systemd/edge-uploader.sysusers",
    "systemd/edge-uploader.default", "docs/deploy.md", "bench/drain.py", ".ci/run",
    "tests/conftest.py", "tests/ops/test_ops_sdist.py", "agent/daemon/lifecycle.py",
)  # fmt: skip


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[str]]:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (archive,) = out.glob("edge_uploader-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        names = [m.name.partition("/")[2] for m in members]
        wanted = {"LICENSE", "PKG-INFO"}
        texts = {
            n: tar.extractfile(m).read()  # type: ignore[union-attr]
            for n, m in zip(names, members, strict=True)
            if n in wanted
        }
    return texts, names


def test_the_sdist_carries_the_project(sdist: tuple[dict[str, bytes], list[str]]) -> None:
    texts, names = sdist
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"not in the sdist: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert texts["LICENSE"] == (REPO / "LICENSE").read_bytes()
    info = texts["PKG-INFO"].decode()
    assert "License-Expression: Apache-2.0" in info
    assert "License-File: LICENSE" in info


def test_the_license_is_the_apache_2_0_text() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="not a git checkout")  # fmt: skip
def test_every_tracked_file_is_in_the_sdist(sdist: tuple[dict[str, bytes], list[str]]) -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    left_out = set(tracked) - set(sdist[1]) - {".gitignore"}
    assert not left_out, f"tracked but not in the sdist: {sorted(left_out)}"

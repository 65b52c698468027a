"""The house rules of ARCHITECTURE.md, checked: small modules and functions, the layer
rule and no import cycle (import-linter's contracts in pyproject.toml), and that those
contracts do catch what they forbid."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_modules_and_functions_are_small() -> None:
    too_big: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_big.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_big.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert too_big == [], "split these (modules <= 500 lines, functions <= 60):\n" + "\n".join(
        too_big
    )


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts, on the package found under
    ``package_parent`` (a copy, so a test can break it)."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "edge_uploader",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return tmp_path


def test_the_package_keeps_its_contracts(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_an_import_against_the_layers_is_caught(copy: Path) -> None:
    """The store must not know the daemon."""
    queue = copy / "edge_uploader" / "store" / "queue.py"
    queue.write_text(queue.read_text() + "\nfrom ..daemon import wake  # noqa: E402\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "edge_uploader.store is not allowed to import edge_uploader.daemon" in result.stdout


def test_an_import_cycle_is_caught(copy: Path) -> None:
    """Two modules of one layer may not import each other (here: the file rules and
    intake, which uses them)."""
    files = copy / "edge_uploader" / "core" / "files.py"
    files.write_text(files.read_text() + "\nfrom . import intake  # noqa: E402\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "No import cycle anywhere in the package BROKEN" in result.stdout

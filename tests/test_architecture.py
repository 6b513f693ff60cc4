"""The layers of pyproject.toml's [tool.importlinter] contracts hold (so the README's test command checks them
too), and nothing below the CLI reaches up to the package root (``from sapiens2 import load_model``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    found = Path(sys.executable).with_name("lint-imports")
    return str(found) if found.exists() else "lint-imports"


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")  # the test extra installs it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_only_the_cli_imports_the_package_root():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("sapiens2")
    importers = graph.find_modules_that_directly_import("sapiens2")
    assert {m for m in importers if not m.startswith("sapiens2.cli")} == set()

"""The README's test command runs the linters too: ruff on the code and on the notebooks' code cells, mypy on wslab.

Their settings live in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``). Each test
fails with the linter's own output, so the fix is on the screen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wslab.runtime.timing import scaled

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_FILES = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("notebooks/solutions/*")])

# Notebooks whose code cells still have ruff findings, and which: their authors fix them, then
# delete the entry (the test fails while a clean notebook is still listed here).
NOT_YET_CLEAN: dict[str, str] = {}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=scaled(600),
        stdin=subprocess.DEVNULL,
    )


def test_ruff_finds_nothing_in_the_code():
    # The notebooks have their own test below, one per notebook.
    result = run("ruff", "check", "--no-cache", "--extend-exclude", "notebooks", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.xfail(strict=True, reason=f"not yet clean: {NOT_YET_CLEAN[path.name]}"))
        if path.name in NOT_YET_CLEAN else path
        for path in NOTEBOOK_FILES
    ],
    ids=[path.name for path in NOTEBOOK_FILES],
)
def test_ruff_finds_nothing_in_a_notebook(path: Path):
    result = run("ruff", "check", "--no-cache", str(path.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_not_yet_clean_names_only_notebooks_that_exist():
    assert set(NOT_YET_CLEAN) <= {path.name for path in NOTEBOOK_FILES}


def test_mypy_finds_nothing_in_wslab():
    result = run("mypy")  # what to check, and how strictly: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr

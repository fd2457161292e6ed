#!/usr/bin/env python3
"""The lab's own commands. Needs only Python 3.11+; it makes ``.venv`` on first use.

    python3 tasks.py lab        open JupyterLab on notebooks/
    python3 tasks.py test       run the unit tests and every notebook under nbval
    python3 tasks.py execute    re-execute notebooks in place (what gets committed)
    python3 tasks.py bench      run the benchmark scripts and print what they measured

Extra arguments after ``test`` go to pytest, after ``execute`` name notebooks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".wslab-installed"

MIN_PYTHON = (3, 11)


def _fail(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def _run(*args: str | Path, **kwargs) -> int:
    return subprocess.call([str(a) for a in args], cwd=ROOT, **kwargs)


def ensure_env() -> None:
    """Create .venv and install wslab with its test extra, again whenever pyproject.toml changes."""
    if sys.version_info < MIN_PYTHON:
        _fail(f"Python {'.'.join(map(str, MIN_PYTHON))}+ is required, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"Creating {VENV.relative_to(ROOT)} with {sys.executable}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing wslab and its dependencies (first run only, about a minute)", flush=True)
    steps = [
        [PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[lab,test]"],
    ]
    for step in steps:
        if _run(*step) != 0:
            _fail("installing dependencies failed (see pip's message above)")
    STAMP.write_text(wanted)


def lab(args: list[str]) -> int:
    ensure_env()
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
        args = [*args, "--allow-root"]  # containers and CI machines often run as root; Jupyter refuses by default
    return _run(BIN / "jupyter", "lab", "notebooks/", *args)


def test(args: list[str]) -> int:
    ensure_env()
    return _run(PYTHON, "-m", "pytest", *args)


def execute(args: list[str]) -> int:
    """Run notebooks top to bottom and store their outputs, as they are committed."""
    ensure_env()
    notebooks = args or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    for nb in notebooks:
        print(f"executing {nb}", flush=True)
        code = _run(
            PYTHON, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
            "--ExecutePreprocessor.timeout=300", "--ExecutePreprocessor.kernel_name=python3", nb,
        )
        if code != 0:
            return code
    return 0


def bench(args: list[str]) -> int:
    ensure_env()
    scripts = args or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    worst = 0
    for script in scripts:
        print(f"\n== {script}", flush=True)
        worst = max(worst, _run(PYTHON, script))
    return worst


COMMANDS = {"lab": lab, "test": test, "execute": execute, "bench": bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip())
        return 0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())

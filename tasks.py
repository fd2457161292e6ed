#!/usr/bin/env python3
"""The lab's own commands. Needs only Python 3.11+; it makes a virtual environment on first use.

    python3 tasks.py lab        open JupyterLab on notebooks/
    python3 tasks.py test       run the unit tests and every notebook under nbval
    python3 tasks.py execute    re-execute notebooks in place (what gets committed)
    python3 tasks.py bench      run the benchmark scripts and print what they measured
    python3 tasks.py pin        write constraints.txt from this environment (after a passing test run)

Extra arguments after ``test`` go to pytest, after ``execute`` name notebooks.

Options, before any other argument:

    --pinned    install the exact versions in constraints.txt, the ones CI last passed with.
                A teacher pins a workshop with it: ``python3 tasks.py test --pinned`` once
                before class, then every student runs ``python3 tasks.py lab --pinned``.
                Without it, pip installs the newest versions pyproject.toml allows.
    --quick     (test only) leave out the tests marked ``rerun``, which run every notebook
                again; the unit tests and nbval's pass over every notebook still run.

One environment per Python version: ``.venv`` belongs to the first Python that ran
tasks.py here (the version is in ``.venv/pyvenv.cfg``); another version gets its own
``.venv-3.13``, so ``python3.13 tasks.py test`` never disturbs the ``.venv`` of
``python3 tasks.py lab``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints.txt"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

MIN_PYTHON = (3, 11)


def _venv_version(path: Path) -> str | None:
    """The major.minor version a virtual environment was made with, from its pyvenv.cfg."""
    try:
        lines = (path / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return ".".join(value.strip().split(".")[:2])
    return None


def _choose_venv(root: Path = ROOT, version: str = VERSION) -> Path:
    """``.venv`` if it is free or made by this Python version, else ``.venv-3.X`` for this version."""
    default = root / ".venv"
    if _venv_version(default) in (None, version):
        return default
    return root / f".venv-{version}"


VENV = _choose_venv()
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".wslab-installed"


def _fail(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def _run(*args: str | Path, **kwargs) -> int:
    return subprocess.call([str(a) for a in args], cwd=ROOT, **kwargs)


def _options(args: list[str], allowed: tuple[str, ...]) -> tuple[set[str], list[str]]:
    """The tasks.py options that lead ``args`` (``--pinned``, ``--quick``), and the arguments after them."""
    found = set()
    while args and args[0] in allowed:
        found.add(args[0])
        args = args[1:]
    return found, args


def ensure_env(pinned: bool = False) -> None:
    """Create the venv and install wslab with its test extra, again whenever what it installs changes.

    What it installs is pyproject.toml, plus constraints.txt when ``pinned``: a
    change to either (or switching to ``--pinned``) installs again.
    """
    if sys.version_info < MIN_PYTHON:
        _fail(f"Python {'.'.join(map(str, MIN_PYTHON))}+ is required, this is {sys.version.split()[0]}")
    if pinned and not CONSTRAINTS.exists():
        _fail(f"--pinned needs {CONSTRAINTS.name}, which is missing")
    recipe = (ROOT / "pyproject.toml").read_bytes()
    if pinned:
        recipe += b"\n--pinned\n" + CONSTRAINTS.read_bytes()
    wanted = hashlib.sha256(recipe).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"Creating {VENV.relative_to(ROOT)} with {sys.executable} ({sys.version.split()[0]})", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    how = f"the versions pinned in {CONSTRAINTS.name}" if pinned else "its dependencies"
    print(f"Installing wslab and {how} into {VENV.relative_to(ROOT)} (first run only, about a minute)", flush=True)
    constraints = ["-c", CONSTRAINTS.name] if pinned else []
    steps = [
        [PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [PYTHON, "-m", "pip", "install", "--quiet", *constraints, "-e", ".[lab,test]"],
    ]
    for step in steps:
        if _run(*step) != 0:
            _fail("installing dependencies failed (see pip's message above)")
    STAMP.write_text(wanted)


def lab(args: list[str]) -> int:
    options, args = _options(args, ("--pinned",))
    ensure_env(pinned="--pinned" in options)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
        args = [*args, "--allow-root"]  # containers and CI machines often run as root; Jupyter refuses by default
    return _run(BIN / "jupyter", "lab", "notebooks/", *args)


def test(args: list[str]) -> int:
    options, args = _options(args, ("--pinned", "--quick"))
    ensure_env(pinned="--pinned" in options)
    if "--quick" in options:
        args = ["-m", "not rerun", *args]  # see the rerun marker in pyproject.toml
    return _run(PYTHON, "-m", "pytest", *args)


def execute(args: list[str]) -> int:
    """Run notebooks top to bottom and store their outputs, as they are committed."""
    options, args = _options(args, ("--pinned",))
    ensure_env(pinned="--pinned" in options)
    notebooks = args or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    for nb in notebooks:
        print(f"executing {nb}", flush=True)
        code = _run(
            PYTHON, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
            "--ExecutePreprocessor.timeout=300", "--ExecutePreprocessor.kernel_name=python3", nb,
        )
        if code != 0:
            return code
    # The notebooks' headers and the README state each notebook's time to learn and its waiting
    # time, both computed from what this run recorded: restate them.
    return _run(PYTHON, str(ROOT / "docs" / "learning_time.py"), "--write")


def bench(args: list[str]) -> int:
    options, args = _options(args, ("--pinned",))
    ensure_env(pinned="--pinned" in options)
    scripts = args or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    worst = 0
    for script in scripts:
        print(f"\n== {script}", flush=True)
        worst = max(worst, _run(PYTHON, script))
    return worst


def pin(args: list[str]) -> int:
    """Write constraints.txt: every package in this environment at its installed version, except wslab.

    Run it after ``python3 tasks.py test`` passed in this environment, so the
    file holds versions the suite is known to pass with.
    """
    if args:
        _fail("pin takes no arguments")
    ensure_env()
    frozen = subprocess.run(
        [str(PYTHON), "-m", "pip", "freeze", "--exclude-editable"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    pins = sorted((line for line in frozen.splitlines() if line and not line.startswith("#")), key=str.lower)
    header = [
        "# The versions `python3 tasks.py test` last passed with, used by `python3 tasks.py lab --pinned`",
        "# and `python3 tasks.py test --pinned` (pip install -c constraints.txt). CI's nightly job runs without it.",
        f"# Written by `python3 tasks.py pin` from Python {platform.python_version()} on {platform.system()}.",
    ]
    CONSTRAINTS.write_text("\n".join(header + pins) + "\n")
    print(f"wrote {len(pins)} pins to {CONSTRAINTS.name}")
    return 0


COMMANDS = {"lab": lab, "test": test, "execute": execute, "bench": bench, "pin": pin}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip())
        return 0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())

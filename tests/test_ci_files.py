"""The files that run CI and pin a classroom stay right: .ci/run, the GitHub workflow, constraints.txt, tasks.py.

The hosted workflow cannot run here, so it is checked as data: parsed with
PyYAML, its triggers, matrix and commands compared with what the README
promises. tasks.py is imported as a module to test its choices without
installing anything.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import wslab.runtime.chromium  # noqa: F401  (registers Chromium in PROGRAMS)
from wslab.runtime.programs import PROGRAMS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CI_RUN = ROOT / ".ci" / "run"
CONSTRAINTS = ROOT / "constraints.txt"
PYTHONS = ["3.11", "3.12", "3.13"]  # what the README's "Python 3.11 or later" means today


def load_tasks():
    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def direct_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[canonicalize_name(name)] = version
    return found


def debian_packages(program) -> list[str]:
    """``["chromium"]`` from ``{"Debian": "sudo apt install chromium"}`` (options left out)."""
    command = program.install.get("Debian/Ubuntu") or program.install["Debian"]
    match = re.fullmatch(r"(?:sudo )?apt(?:-get)? install((?: [\w.+-]+)+)", command)
    assert match, f"{program.name}: cannot read Debian packages from {command!r}"
    return [word for word in match.group(1).split() if not word.startswith("-")]


# -- the hosted workflow ------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True


def run_steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_workflow_runs_on_pushes_pull_requests_and_nightly(workflow):
    on = triggers(workflow)
    assert "push" in on and "pull_request" in on
    (schedule,) = on["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert (day, month, weekday) == ("*", "*", "*"), "the newest-dependencies run is nightly"


def test_workflow_matrix_is_linux_and_macos_for_every_promised_python(workflow):
    (job,) = workflow["jobs"].values()
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest"}
    assert matrix["python"] == PYTHONS
    assert job["runs-on"] == "${{ matrix.os }}"
    assert job["strategy"]["fail-fast"] is False, "one failing runner must not hide the others' results"
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    assert job["timeout-minutes"] <= 60


def test_workflow_runs_the_readme_command_pinned_and_nightly_unpinned(workflow):
    tests = {step["if"]: step["run"].strip() for step in run_steps(workflow) if "tasks.py" in step["run"]}
    assert tests == {
        "github.event_name != 'schedule'": "python3 tasks.py test --pinned",
        "github.event_name == 'schedule'": "python3 tasks.py test",
    }
    assert "python3 tasks.py test" in (ROOT / "README.md").read_text()


def test_workflow_runs_in_ci_mode_and_gets_every_program(workflow):
    assert workflow["env"]["CI"] == "true", "in CI a missing program must fail, not skip"
    apt = workflow["env"]["APT_PACKAGES"].split()
    installs = {step["name"]: step["run"] for step in run_steps(workflow) if "Install" in step.get("name", "")}
    assert len(installs) == 2 and all("playwright install" in run for run in installs.values())
    # Chromium comes from the runner image or Playwright (Ubuntu's apt chromium is a snap stub).
    for program in PROGRAMS.values():
        if program.name != "chromium":
            missing = set(debian_packages(program)) - set(apt)
            assert not missing, f"add {sorted(missing)} to APT_PACKAGES in ci.yml"


def test_workflow_says_what_skips_on_macos():
    assert re.search(r"What skips on macOS: .*TCP_USER_TIMEOUT", WORKFLOW.read_text())


# -- .ci/run ------------------------------------------------------------------------


def test_ci_run_is_an_executable_bash_script_without_syntax_errors():
    assert os.access(CI_RUN, os.X_OK)
    assert subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True).stderr == ""


def test_ci_run_runs_the_readme_command_then_every_other_python():
    script = CI_RUN.read_text()
    assert re.search(r"^run .* python3 tasks\.py test$", script, re.MULTILINE), "the README's command, unchanged"
    assert "pyenv" in script and "python3.$n" in script
    assert "--quick" in script


def test_ci_run_installs_every_program_the_lab_registers():
    packages = re.search(r"^PACKAGES=\(([^)]*)\)", CI_RUN.read_text(), re.MULTILINE).group(1).split()
    for program in PROGRAMS.values():
        missing = set(debian_packages(program)) - set(packages)
        assert not missing, f"add {sorted(missing)} to PACKAGES in .ci/run"


# -- constraints.txt ----------------------------------------------------------------


def test_constraints_pin_every_direct_dependency_within_what_pyproject_allows():
    pinned = pins()
    for requirement in direct_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_constraints_leave_out_wslab_itself():
    assert "wslab" not in pins()
    assert "-e " not in CONSTRAINTS.read_text()


# -- tasks.py -----------------------------------------------------------------------


def test_every_python_gets_its_own_venv_and_the_first_keeps_dot_venv(tmp_path):
    tasks = load_tasks()
    assert tasks._choose_venv(tmp_path, "3.13") == tmp_path / ".venv"  # nothing yet: the first takes .venv
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    assert tasks._choose_venv(tmp_path, "3.11") == tmp_path / ".venv"
    assert tasks._choose_venv(tmp_path, "3.13") == tmp_path / ".venv-3.13"


def test_this_suite_runs_in_the_venv_tasks_py_chooses_for_this_python():
    tasks = load_tasks()
    if not sys.prefix.startswith(str(ROOT / ".venv")):
        pytest.skip(f"not run by tasks.py (sys.prefix is {sys.prefix})")
    here = tasks._choose_venv(version=f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert Path(sys.prefix) == here


def test_tasks_options_lead_the_arguments_and_the_rest_go_to_pytest():
    tasks = load_tasks()
    assert tasks._options(["--pinned", "--quick", "-x", "tests/"], ("--pinned", "--quick")) == (
        {"--pinned", "--quick"}, ["-x", "tests/"])
    assert tasks._options(["-k", "--pinned"], ("--pinned",)) == (set(), ["-k", "--pinned"])


def test_pinned_and_quick_are_documented_where_teachers_look():
    tasks_doc = load_tasks().__doc__
    setup = (ROOT / "README.md").read_text().split("\n---\n", 1)[0]
    for text in (tasks_doc, setup):
        assert "python3 tasks.py lab --pinned" in text
        assert "constraints.txt" in text
    assert "--quick" in tasks_doc

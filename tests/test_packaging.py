"""The two install paths (pip with pyproject.toml, conda with environment.yml) stay in step."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    """Every requirement: the package's own and every extra's (the conda env is the lab and its tests)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return dict(_normalise(r) for r in requirements)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        items = entry["pip"] if isinstance(entry, dict) else [entry]
        for item in items:
            if item.startswith("-e") or item.split(">")[0].split("=")[0] in ("python", "pip"):
                continue
            name, spec = _normalise(item)
            found[name] = spec
    return found


def test_environment_yml_declares_the_same_dependencies_as_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_the_cli_installs_without_jupyter_and_the_extras_hold_the_rest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: {_normalise(r)[0] for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    core = {_normalise(r)[0] for r in project["dependencies"]}
    # What the notebooks need: Jupyter, and notebook 03's browser. Certificates (trustme) are core:
    # the runtime makes them for Tomcat's TLS connector and the wss:// servers.
    assert {"jupyterlab", "nest-asyncio2", "playwright"} <= extras["lab"]
    assert "trustme" in core
    assert not core & {"jupyterlab", "nest-asyncio2", "notebook", "ipykernel"}
    # The tests import yaml, and run ruff and mypy.
    assert {"pytest", "pyyaml", "ruff", "mypy"} <= extras["test"]


def test_tasks_py_installs_the_extras_the_lab_and_the_tests_need():
    assert '".[lab,test]"' in (ROOT / "tasks.py").read_text()


def test_environment_yml_installs_this_package_from_conda_forge_only():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    pip_section = next(e["pip"] for e in env["dependencies"] if isinstance(e, dict))
    assert "-e ." in pip_section
    assert "python>=3.11" in env["dependencies"]


def test_python_floor_matches_websockets_17():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)


def test_nest_asyncio_is_the_maintained_fork():
    names = set(pyproject_requirements())
    assert "nest-asyncio2" in names and "nest-asyncio" not in names


def test_readme_package_map_lists_every_module_and_only_those():
    readme = (ROOT / "README.md").read_text()
    mapped = set(re.findall(r"^\| `(wslab/[\w/]+(?:\.py|/))` \|", readme, re.MULTILINE))
    package = ROOT / "wslab"
    modules = {f"wslab/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    subpackages = {f"wslab/{p.parent.relative_to(package).as_posix()}/" for p in package.rglob("__init__.py")
                   if p.parent != package}
    on_disk = modules | subpackages
    assert mapped == on_disk, f"README map is stale: missing {on_disk - mapped}, extra {mapped - on_disk}"


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    listed = set(re.findall(r"^\| `(\d\d-[\w-]+)` \|", readme, re.MULTILINE))
    assert listed == notebooks

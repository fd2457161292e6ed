"""The Binder files (repo2docker) install what pyproject.toml declares, and the programs the notebooks start."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def test_binder_python_is_one_the_lab_supports():
    version = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-3\.(\d+)", version)
    assert match and int(match.group(1)) >= 11, version
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11"


def test_postbuild_installs_the_lab_extra_that_pyproject_declares_and_a_chromium():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK)
    text = post_build.read_text()
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installed = re.findall(r'-e "\.\[([\w,]+)\]"', text)
    assert installed and set(installed[0].split(",")) <= extras and "lab" in installed[0].split(",")
    assert "playwright install chromium" in text


def test_apt_txt_installs_the_programs_binder_can_run():
    packages = {line.strip() for line in (BINDER / "apt.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {"nginx-light", "redis-server"} <= packages
    # Binder's image is Ubuntu, whose apt chromium is a snap stub: Playwright's Chromium is used instead.
    assert "chromium" not in packages and "chromium-browser" not in packages


def test_readme_links_binder_and_says_what_skips_there():
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/v2/gh/" in readme and "binder/" in readme

"""``python -m wslab check``: one line per item with what to do, and exit 1 only when a core notebook's need is missing.

The command runs for real, in a subprocess. A missing program is simulated the way a
student could get it wrong: its environment variable names a file that does not exist.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from wslab.runtime.check import (
    Status,
    check_program,
    check_python,
    check_tcp_user_timeout,
    check_version,
    check_wslab,
)
from wslab.runtime.programs import CHROMIUM, LAST_CORE_NOTEBOOK, NGINX, PROGRAMS, Program
from wslab.runtime.timing import scaled

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    # Proxies in the environment change the loopback line (see the proxy test): leave them out unless given.
    base = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "wslab", "check"], capture_output=True, text=True, timeout=scaled(60),
        stdin=subprocess.DEVNULL, env={**base, **env},
    )


def line_about(result: subprocess.CompletedProcess[str], what: str) -> str:
    [line] = [line for line in result.stdout.splitlines() if line[10:].startswith(what)]
    return line


needs_chromium = pytest.mark.skipif(CHROMIUM.skip_reason() is not None, reason=str(CHROMIUM.skip_reason()))


@needs_chromium
def test_check_prints_one_line_per_item_and_passes_on_a_ready_machine():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    for what in ("Python 3.", "websockets ", "matplotlib ", "wslab ", "the notebooks' packages", "TCP_USER_TIMEOUT",
                 "loopback round trip", *PROGRAMS):
        line_about(result, what)  # exactly one line each
    assert line_about(result, "loopback round trip").startswith("ok ")
    assert line_about(result, "TCP_USER_TIMEOUT").startswith("info ")  # never a failure, wherever it runs
    assert result.stdout.splitlines()[-1].startswith("ready: ")


def test_a_missing_core_program_fails_the_check_and_says_how_to_install_it():
    result = run_check(WSLAB_CHROMIUM="/nonexistent/chromium")
    assert result.returncode == 1, result.stdout + result.stderr
    line = line_about(result, "chromium")
    assert line.startswith("MISSING   chromium (notebook 03, 06, 08): WSLAB_CHROMIUM=/nonexistent/chromium")
    assert "sudo apt install chromium" in line and "python -m playwright install chromium" in line
    assert result.stdout.splitlines()[-1].startswith("not ready: ") and "chromium" in result.stdout.splitlines()[-1]


@needs_chromium
def test_a_program_only_a_later_notebook_needs_is_optional_and_passes():
    result = run_check(WSLAB_NGINX="/nonexistent/nginx")
    assert result.returncode == 0, result.stdout + result.stderr
    line = line_about(result, "nginx")
    assert line.startswith("optional  nginx: optional for notebooks 06, 07, which skip without it")
    assert "sudo apt install nginx-light" in line and "brew install nginx" in line


def test_a_proxy_in_the_environment_is_skipped_for_loopback_and_the_check_names_no_proxy():
    # websockets sends ws:// through http_proxy, even to 127.0.0.1: a real refused proxy, on a closed port.
    # The lab passes proxy=None for loopback URLs, so the round trip works; the line still warns,
    # because a student's own websockets.connect() would go through that proxy and fail.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = run_check(http_proxy=f"http://127.0.0.1:{closed_port}")
    line = line_about(result, "loopback round trip")
    assert line.startswith("ok ") and f"127.0.0.1:{closed_port}" in line, result.stdout + result.stderr
    assert "export no_proxy=127.0.0.1,localhost" in line


def test_python_older_than_3_11_is_missing():
    assert check_python((3, 10, 12)).status == Status.MISSING
    assert "install Python 3.11 or later" in check_python((3, 10, 12)).detail
    assert check_python((3, 11, 0)).status == Status.OK
    assert check_python((3, 13, 1)).status == Status.OK


def test_a_package_older_than_its_minimum_is_missing_with_the_install_command():
    assert check_version("websockets", "16.0", 17, install="pip install x").status == Status.MISSING
    assert check_version("websockets", "17.0", 17, install="pip install x").status == Status.OK
    missing = check_version("matplotlib", None, install="pip install x")
    assert missing.status == Status.MISSING and missing.detail == "not installed: pip install x"


def test_tcp_user_timeout_is_information_never_a_failure():
    item = check_tcp_user_timeout()
    assert item.status == Status.INFO
    assert ("available" in item.detail) == hasattr(socket, "TCP_USER_TIMEOUT")


def test_a_program_line_fails_only_for_a_core_notebook(monkeypatch: pytest.MonkeyPatch):
    # Programs that exist only here, to check the rule without depending on what this machine has.
    core = Program("core-tool", needed_by=(f"{LAST_CORE_NOTEBOOK:02d}-a-core-notebook",), executables=(),
                   install={"Debian/Ubuntu": "sudo apt install core-tool"}, env_var="WSLAB_TEST_TOOL")
    later = Program("later-tool", needed_by=(f"{LAST_CORE_NOTEBOOK + 1:02d}-a-later-notebook",), executables=(),
                    install={"Debian/Ubuntu": "sudo apt install later-tool"}, env_var="WSLAB_TEST_TOOL")
    assert core.core and not later.core
    monkeypatch.setenv("WSLAB_TEST_TOOL", "/nonexistent/tool")
    assert check_program(core).status == Status.MISSING
    assert "sudo apt install core-tool" in check_program(core).detail
    assert check_program(later).status == Status.OPTIONAL
    monkeypatch.setenv("WSLAB_TEST_TOOL", sys.executable)  # any executable file is "found"
    assert check_program(core).status == check_program(later).status == Status.OK


def test_every_program_is_listed_without_importing_the_modules_that_start_them():
    # The old seam: chromium.py and nginx.py registered their programs on import, so a list read
    # before importing them was short. Now the list is one place.
    code = ("import sys; from wslab.runtime.programs import PROGRAMS; "
            "print(sorted(PROGRAMS)); print(sorted(m for m in sys.modules if m in "
            "('wslab.runtime.chromium', 'wslab.runtime.nginx')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60))
    assert result.stdout.splitlines() == [str(sorted(PROGRAMS)), "[]"], result.stderr
    assert {"chromium", "nginx"} <= set(PROGRAMS)


def test_chromium_is_core_and_nginx_is_not():
    assert CHROMIUM.core  # notebook 03
    assert not NGINX.core  # notebook 06


def test_the_report_shows_no_local_path(monkeypatch: pytest.MonkeyPatch, tmp_path):
    # Notebook 00 stores the report: where this checkout or this home directory is must not show.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(os.path.join(root, "notebooks"))  # where a notebook's kernel runs
    assert check_wslab().detail == f"from {os.path.join(os.pardir, 'wslab')}"
    monkeypatch.chdir(root)  # where `python -m wslab check` runs
    assert check_wslab().detail == f"from {os.path.join(os.curdir, 'wslab')}"
    # A program found under the home directory, as Playwright's own Chromium is.
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WSLAB_TEST_TOOL", str(tool))
    program = Program("tool", needed_by=("06-a-later-notebook",), executables=(), env_var="WSLAB_TEST_TOOL")
    item = check_program(program)
    assert item.status == Status.OK
    assert item.detail == f"tool found at ~{os.sep}{os.path.join('bin', 'tool')}"
    assert str(tmp_path) not in str(item)


def test_ci_fails_on_a_missing_program_but_skips_one_this_system_cannot_run(monkeypatch: pytest.MonkeyPatch):
    # A macOS runner with CI=true: a missing nginx is a failure (brew installs it), but iptables
    # and network namespaces do not exist there at all, so notebook 09's parts skip, saying why.
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(sys, "platform", "darwin")
    linux_only = Program(name="iptables", needed_by=("09-the-seeds-own-stack",), executables=("/nonexistent/x",),
                         install={"Debian/Ubuntu": "sudo apt install iptables"}, linux_only=True)
    portable = Program(name="nginx", needed_by=("06-idle-timeouts-and-deploys",), executables=("/nonexistent/x",),
                       install={"macOS": "brew install nginx"})
    assert linux_only.skip_reason() == "iptables: the lab runs it on Linux only, not supported on macOS"
    assert portable.skip_reason() is None  # in CI: its tests run and fail, naming the install command
    monkeypatch.delenv("CI")
    assert portable.skip_reason() == "nginx is not installed: brew install nginx (macOS)"

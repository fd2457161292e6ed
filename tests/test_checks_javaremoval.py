"""Notebook 09's check: your Broken.java, a vanished client, a clean close and a healthy control.

judge_removal is pure: the first tests give it the record of a run and read the verdicts and hints.
The exercise cell must start from the real Broken.java. The last tests run the check for real, on
mistakes a student makes, and skip where Tomcat or namespaces are missing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from wslab import LabError
from wslab.checks.javaremoval import REMOVE, RemovalRun, check_java_removal, judge_removal, removal_run
from wslab.faults.netns import vanish_skip_reason
from wslab.runtime.tomcat import tomcat_skip_reason
from wslab.servers.java import BROKEN, map_changes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "09-the-seeds-own-stack.ipynb"
SOLUTION = ROOT / "notebooks" / "solutions" / "09-java-removal.py"
TOMCAT_SKIP, NETNS_SKIP = tomcat_skip_reason(), vanish_skip_reason()
SESSIONS = {"vanished": "0", "clean close": "1", "healthy": "2"}


def _run(**changes) -> RemovalRun:
    """A run where everything went right; ``changes`` break it."""
    run = RemovalRun(sessions=dict(SESSIONS), quiet_s=1.3, healthy_received=13, map_size=2)
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def _messages(run: RemovalRun) -> dict[str, tuple[bool, str]]:
    return {case.name: (case.passed, case.message) for case in judge_removal(run).cases}


def test_a_run_where_the_dead_left_and_the_healthy_stayed_passes():
    report = judge_removal(_run())
    assert report.passed and [c.name for c in report.cases] == ["vanished", "clean close", "healthy", "map", "quiet"]


def test_nothing_removed_names_on_close_for_both_deaths():
    got = _messages(_run(failures={"0": 13, "1": 13}, map_size=4, quiet_lines=286))
    assert not got["vanished"][0] and "@OnClose (code 1006)" in got["vanished"][1]
    assert not got["clean close"][0] and "remove the session in an @OnClose method" in got["clean close"][1]
    assert got["healthy"][0]
    assert got["map"] == (False, "4 sessions in the map at the end, not 2 (the healthy client and the probe): "
                                 "the dead sessions are still in it")
    assert got["quiet"] == (False, "286 log lines in 1.3 s after the deaths: a dead session is still broadcast to")


def test_removing_on_errors_only_gets_its_own_hint():
    got = _messages(_run(failures={"1": 13}, map_size=3, quiet_lines=143))
    assert got["vanished"][0]
    assert not got["clean close"][0] and "@OnError runs only on errors" in got["clean close"][1]


def test_removing_clean_closes_only_gets_its_own_hint():
    got = _messages(_run(failures={"0": 13}, map_size=3, quiet_lines=143))
    assert got["clean close"][0]
    assert not got["vanished"][0] and "don't filter on the close code" in got["vanished"][1]


def test_clearing_the_whole_map_loses_the_healthy_client():
    got = _messages(_run(healthy_received=0, map_size=1))
    assert got["vanished"][0] and got["clean close"][0] and got["quiet"][0]
    assert not got["healthy"][0] and REMOVE in got["healthy"][1] and "never clear the whole map" in got["healthy"][1]
    assert got["map"] == (False, "1 session in the map at the end, not 2 (the healthy client and the probe): "
                                 "the healthy client is not in it any more")


def test_a_missing_log_line_and_an_exception_are_each_said_in_one_line():
    assert "keep that LOG.info line" in _messages(_run(map_size=None))["map"][1]
    got = _messages(_run(failures={"0": 13}, thrown=["@OnClose threw java.lang.NullPointerException"]))
    assert got["vanished"][1].endswith("(and your @OnClose threw java.lang.NullPointerException)")
    for run in (_run(compile_error="Broken.java:33: error: ')' expected"), _run(setup_error="the check could not run")):
        report = judge_removal(run)
        assert not any(c.passed for c in report.cases) and len({c.message for c in report.cases}) == 1
        assert "\n" not in report.cases[0].message


def _cell(tag: str) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell.source


def _java(python: str) -> str:
    """The BROKEN_JAVA string a cell (or the solution file) assigns."""
    namespace: dict = {}
    exec(compile(ast.parse(python), "<cell>", "exec"), namespace)  # noqa: S102 - our own notebook's cell
    return namespace["BROKEN_JAVA"]


def test_the_exercise_is_broken_java_plus_the_todo_and_the_solution_only_adds():
    broken = BROKEN.read_text().splitlines()
    exercise = [line for line in _java(_cell("exercise")).splitlines()
                if "TODO" not in line and "(An @OnError" not in line]
    assert [line for line in exercise if line.strip()] == [line for line in broken if line.strip()]
    solution = _java(SOLUTION.read_text()).splitlines()
    assert all(line in solution for line in broken)  # nothing of Broken.java was taken away
    assert any(line.strip().startswith("@OnClose") for line in solution)


async def test_the_check_wants_the_whole_class():
    with pytest.raises(LabError, match="takes your Broken.java as a string"):
        await check_java_removal("SESSIONS.remove(session.getId());")


@pytest.mark.skipif(TOMCAT_SKIP is not None, reason=TOMCAT_SKIP or "")
async def test_a_java_error_fails_every_case_in_one_line_without_starting_tomcat():
    broken = BROKEN.read_text().replace("SESSIONS.put(session.getId(), session);", "SESSIONS.put(")
    report = await check_java_removal(broken)
    assert not report.passed and {c.message for c in report.cases} == {report.cases[0].message}
    assert report.cases[0].message.startswith("javac failed: Broken.java:")


@pytest.mark.slow
@pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")
async def test_removing_only_on_error_fails_the_clean_close_for_real():
    on_error = BROKEN.read_text().replace("    static void broadcast() {", """    @OnError
    public void onError(Session session, Throwable error) { SESSIONS.remove(session.getId()); }

    static void broadcast() {""")
    run = await removal_run(on_error)
    report = judge_removal(run)
    got = {case.name: case for case in report.cases}
    assert got["vanished"].passed and got["healthy"].passed, report
    assert not got["clean close"].passed and "@OnError runs only on errors" in got["clean close"].message, report
    assert not got["map"].passed and got["map"].measured == {"size": 3}, report

    # The same run, as run_vanish gave it: the check relies on the order of the sessions, the clean
    # close at the fault, the healthy client's reports, and the probe's opened line after the watch.
    vanish = run.vanish
    assert vanish is not None and vanish.host_unchanged
    assert vanish.client_paths == ["/broken"] and len(vanish.rules) == 2
    opened = [c for c in map_changes(vanish.log, "Broken") if c.change == "opened"]
    # @OnError removed the vanished client (its read failed after about 1.5 s), not the clean one
    assert [c.size for c in opened] == [1, 2, 3, 3]
    assert [c.session for c in opened[:3]] == [run.sessions[role] for role in ("vanished", "clean close", "healthy")]
    assert vanish.probe_at is not None and opened[-1].at >= vanish.probe_at > opened[-2].at
    # The clean client closed at the fault: its failed broadcasts start at once.
    clean = run.sessions["clean close"]
    first = min(r.at for r in vanish.log.records if r.at and r.message == f"broadcast to session [{clean}] failed")
    assert first - vanish.fault_at < 0.5
    assert vanish.received_between(0, vanish.fault_at + 1.0, vanish.probe_at) > 5  # the healthy client kept receiving

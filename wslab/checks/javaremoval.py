"""Notebook 09's exercise: add the missing removal to ``Broken.java``, then make a client vanish for real.

The student edits the seed's endpoint, ``Broken.java``, held in a Python string::

    BROKEN_JAVA = '''package lab; ... @ServerEndpoint("/broken") public class Broken { ... }'''
    result = await wslab.checks.check_java_removal(BROKEN_JAVA)

:func:`check_java_removal` compiles it with ``javac`` (an error: its first
line, in every case's row), then runs it in a real Tomcat, in a network
namespace of its own (:func:`wslab.faults.netns.run_vanish`), with three
clients, connected in this order:

1. one that **vanishes**: an iptables DROP rule, then ``kill -9``; with
   ``tcp_retries2`` at 1, Tomcat's read fails after about 1.5 s;
2. one that **closes cleanly** at the same moment: a close frame, code 1000;
3. a **healthy** one, the control: it must stay in the map, and keep receiving.

Then, once every death has played out, a fourth client connects: the
endpoint's ``@OnOpen`` logs the map's size, ``session [3] opened, N in the map``.
The check reads the endpoint's own log lines (keep them): the session ids
from ``@OnOpen``, in connection order, and each failed broadcast,
``broadcast to session [0] failed``, while a dead session stays in the map.

:func:`judge_removal` turns the record of that run (:class:`RemovalRun`) into
the cases; it is pure, and tested without Tomcat.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..faults.netns import VanishRun, run_vanish
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.tomcat import compile_java
from ..servers.java import OPENED, map_changes
from ..studies.tomcatrun import failures_per_session
from .report import Case, Report

__all__ = ["QUIET_FROM", "RemovalRun", "WATCH", "check_java_removal", "judge_removal", "removal_run"]

ROLES = ("vanished", "clean close", "healthy")
# Seconds after the fault: the deaths have played out by then (the vanished client's after about
# 1.5 s), so from then on the log must be quiet, until the probe connects WATCH s after the fault.
QUIET_FROM = 2.2
WATCH = 3.0
BROADCASTS_PER_SECOND = 10  # Broken.java broadcasts every 100 ms

REMOVE = "SESSIONS.remove(session.getId())"
# What Tomcat logs when an endpoint's own method throws: "Failed to call onClose method of POJO end point ..."
_STUDENT_ERROR = re.compile(r"Failed to call (?P<method>\w+) method of POJO end point for POJO of type \[lab\.Broken\]")


@dataclass
class RemovalRun:
    """What happened in the check's run: all :func:`judge_removal` needs.

    Attributes:
        compile_error: javac's first error line, if it failed (then nothing ran).
        setup_error: Why the run could not happen or cannot be read (one line), if so.
        sessions: Each role's session id, from the ``opened`` lines in connection order.
        failures: Failed broadcasts per session id while the log should be quiet.
        quiet_lines: Log lines written while the log should be quiet.
        quiet_s: How long that window was, in seconds.
        healthy_received: Messages the healthy client received in that window.
        map_size: The map's size when the probe connected (its ``opened`` line), None if it logged none.
        thrown: Exceptions the endpoint's own methods threw, one line each.
        vanish: The run itself, for a closer look (None if it did not run).
    """

    compile_error: str | None = None
    setup_error: str | None = None
    sessions: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    quiet_lines: int = 0
    quiet_s: float = 0.0
    healthy_received: int = 0
    map_size: int | None = None
    thrown: list[str] = field(default_factory=list)
    vanish: VanishRun | None = field(default=None, repr=False)


def judge_removal(run: RemovalRun) -> Report:
    """The cases, each PASS or FAIL with the hint that names what still fails. Pure."""
    names = [*ROLES, "map", "quiet"]
    problem = (f"javac failed: {run.compile_error}" if run.compile_error is not None
               else run.setup_error)
    if problem is not None:
        return Report([Case(name, False, problem) for name in names])
    thrown = f" (and your {run.thrown[0]})" if run.thrown else ""
    leaked = {role: run.failures.get(run.sessions[role], 0) for role in ROLES[:2]}
    cases = []
    for role, hint in (
        ("vanished", "Tomcat's read failed with Connection timed out, so it called @OnError, then closed the "
                     f"session and called @OnClose (code 1006): remove the session there, {REMOVE}"),
        ("clean close", "a close frame makes Tomcat call @OnClose only, never @OnError: remove the session in "
                        f"an @OnClose method, by its id (the map's key): {REMOVE}"),
    ):
        failed = leaked[role]
        if failed == 0:
            cases.append(Case(role, True, "removed: no broadcast tried it again", {"failures": 0}))
            continue
        other = "clean close" if role == "vanished" else "vanished"
        if leaked[other] == 0:  # the other death was removed: the removal runs on one path only
            hint = {"vanished": "you removed the clean close but not this one: don't filter on the close code; "
                                "after an error Tomcat calls @OnClose too, with 1006",
                    "clean close": "you removed the vanished client but not this one: @OnError runs only on "
                                   "errors; a clean close calls @OnClose"}[role]
        cases.append(Case(role, False, f"still in the map: {failed} broadcasts failed on it in "
                                       f"{run.quiet_s:.1f} s. {hint}{thrown}", {"failures": failed}))
    expected = BROADCASTS_PER_SECOND * run.quiet_s / 2  # half of what it should get: a generous bound
    if run.healthy_received >= expected:
        cases.append(Case("healthy", True, f"still in the map: received {run.healthy_received} messages in "
                                           f"{run.quiet_s:.1f} s", {"received": run.healthy_received}))
    else:
        cases.append(Case("healthy", False, f"the healthy client received {run.healthy_received} messages in "
                                            f"{run.quiet_s:.1f} s: it left the map too. Remove only the session "
                                            f"that closed, {REMOVE}; never clear the whole map{thrown}",
                          {"received": run.healthy_received}))
    if run.map_size is None:
        cases.append(Case("map", False, "the probe's @OnOpen logged no 'session [..] opened, N in the map' line: "
                                        "keep that LOG.info line, the check reads the map's size from it"))
    elif run.map_size == 2:
        cases.append(Case("map", True, "2 sessions in the map at the end: the healthy client and the probe",
                          {"size": 2}))
    else:
        what = ("the dead sessions are still in it" if run.map_size > 2
                else "the healthy client is not in it any more")
        sessions = "session" if run.map_size == 1 else "sessions"
        cases.append(Case("map", False, f"{run.map_size} {sessions} in the map at the end, not 2 (the healthy client "
                                        f"and the probe): {what}", {"size": run.map_size}))
    if run.quiet_lines == 0:
        cases.append(Case("quiet", True, f"the log went quiet: 0 lines in {run.quiet_s:.1f} s", {"lines": 0}))
    else:
        why = "a dead session is still broadcast to" if any(leaked.values()) else "look at what your code logs"
        cases.append(Case("quiet", False, f"{run.quiet_lines} log lines in {run.quiet_s:.1f} s after the deaths: "
                                          f"{why}{thrown}", {"lines": run.quiet_lines}))
    return Report(cases)


async def removal_run(source: str) -> RemovalRun:
    """Setup and run: compile ``source`` as ``Broken.java``, then the three clients and the probe in a namespace."""
    run = RemovalRun()
    with tempfile.TemporaryDirectory(prefix="wslab-check-java-") as scratch:
        os.chmod(scratch, 0o755)  # readable from a user namespace too
        java, classes = Path(scratch) / "Broken.java", Path(scratch) / "classes"
        java.write_text(source, encoding="utf-8")
        try:
            await compile_java([java], classes)
        except LabError as exc:
            run.compile_error = str(exc).removeprefix("javac failed: ")
            return run
        classes.chmod(0o755)
        try:
            async with Lab() as lab:
                vanish = await run_vanish(lab, classes=classes, path="/broken", clients=1, clean=["/broken"],
                                          healthy=["/broken"], probe=["/broken"], until="", watch=WATCH, settle=0.3,
                                          opened=OPENED, name="check-netns")
        except LabError as exc:
            run.setup_error = f"the check could not run Tomcat: {exc}"
            return run
    run.vanish = vanish
    if not vanish.host_unchanged:  # never expected: then the check itself is broken, and says so
        run.setup_error = "the host's network settings changed during the run"
        return run
    opened = [c for c in map_changes(vanish.log, "Broken") if c.change == "opened"]
    if len(opened) < len(ROLES):
        run.setup_error = (f"found {len(opened)} 'session [..] opened, N in the map' lines for 3 clients: keep "
                           "@OnOpen's LOG.info line, the check reads the session ids from it")
        return run
    run.sessions = {role: change.session for role, change in zip(ROLES, opened, strict=False)}
    probe_at = vanish.probe_at or vanish.fault_at + WATCH
    start = vanish.fault_at + QUIET_FROM
    run.quiet_s = probe_at - start
    run.failures = failures_per_session(vanish.log, start, probe_at)
    run.quiet_lines = vanish.log.lines_between(start, probe_at)
    run.healthy_received = vanish.received_between(0, start, probe_at)
    probe = [c for c in opened[len(ROLES):] if c.at >= probe_at]
    run.map_size = probe[0].size if probe else None
    # "Failed to call onClose method ..." -> "@OnClose threw java.lang.NullPointerException: ..."
    run.thrown = [f"@O{m['method'][1:]} threw {r.trace.exception if r.trace else 'an exception'}"
                  for r in vanish.log.records if (m := _STUDENT_ERROR.search(r.message))]
    return run


async def check_java_removal(source: str) -> Report:
    """Run notebook 09's exercise for real: your ``Broken.java`` in Tomcat, a vanished client, a clean
    close and a healthy control. Takes about 10 s (javac, Tomcat's start, the deaths).

    Args:
        source: The whole of your ``Broken.java``, as a string.

    Returns:
        A :class:`~wslab.checks.report.Report`: one case per client, the map's size at the end, and
        whether the log went quiet. It never raises for a mistake in your Java.
    """
    if not isinstance(source, str) or "class Broken" not in source:
        raise LabError("check_java_removal(source) takes your Broken.java as a string, class Broken included")
    return judge_removal(await removal_run(source))

"""The vanished client, for real, against a real Tomcat: in a network namespace of its own.

The seed's ``Connection timed out`` comes from the kernel giving up on a peer
that stopped answering: after ``net.ipv4.tcp_retries2`` retransmissions, about
15 minutes by default. Notebook 01 gets the same error from Python sockets with
``TCP_USER_TIMEOUT``; Tomcat sets no such option, so here the kernel setting
itself must change, and that must not touch your machine. :func:`run_vanish`
runs the whole scenario in fresh, unnamed namespaces::

    unshare --net --pid --fork --kill-child -- python -m wslab.faults.netns_driver run ...

(``unshare --map-root-user --net ...`` without root: a user namespace makes
you root inside it, and only there). Inside, :mod:`wslab.faults.netns_driver`
lowers ``tcp_retries2``, starts Tomcat and the clients, adds an iptables DROP
rule for each client's port and kills it with ``kill -9``: no FIN, no RST,
nothing ever again, as when a laptop's lid closes. The setting and the rules
belong to the namespace, and vanish with it; :class:`VanishRun` records the
host's own setting and rules before and after, to show that they did not change.

Linux only. It needs Java and Tomcat (see :mod:`wslab.runtime.tomcat`),
iptables, and ``unshare`` allowed to create namespaces (root, or unprivileged
user namespaces). Without them tests skip with one line saying what is missing
(:func:`vanish_skip_reason`); in CI they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.errors import LabError
from ..runtime.javalog import TomcatLog
from ..runtime.lab import Lab
from ..runtime.programs import IPTABLES, UNSHARE, unshare_net
from ..runtime.timeline import EventKind
from ..runtime.timing import scaled
from ..runtime.tomcat import tomcat_skip_reason

__all__ = ["IPTABLES", "UNSHARE", "HostNetwork", "VanishRun", "host_network", "run_vanish", "vanish_skip_reason"]

TIMED_OUT = "java.io.IOException: Connection timed out"

def namespace_command() -> list[str]:
    """The ``unshare`` command the driver runs under: a new network namespace, and a PID namespace
    whose PID 1 is the driver, so that the kernel kills everything in it when the driver dies."""
    return [*unshare_net(), "--pid", "--fork", "--kill-child"]


def vanish_skip_reason() -> str | None:
    """Why :func:`run_vanish` can't run here (Java, Tomcat, iptables, namespaces, the OS), or None."""
    return tomcat_skip_reason() or IPTABLES.skip_reason() or UNSHARE.skip_reason()


@dataclass(frozen=True)
class HostNetwork:
    """The host's settings that the namespace must never change.

    Attributes:
        tcp_retries2: ``net.ipv4.tcp_retries2`` outside the namespace.
        iptables: The host's filter rules (``iptables -S``), or None when we may not read them
            (not root: then we could not change them either).
    """

    tcp_retries2: int
    iptables: str | None


def host_network() -> HostNetwork:
    """Read the host's ``tcp_retries2`` and, as root, its iptables rules."""
    retries2 = int(Path("/proc/sys/net/ipv4/tcp_retries2").read_text())
    rules = None
    iptables = IPTABLES.find() if os.geteuid() == 0 else None
    if iptables:
        done = subprocess.run([iptables, "-w", "-S"], capture_output=True, text=True, timeout=10)
        rules = done.stdout if done.returncode == 0 else None
    return HostNetwork(retries2, rules)


@dataclass
class VanishRun:
    """What happened in the namespace: when the clients vanished, and what Tomcat logged.

    Times (``fault_at``, ``until_at``, the log's records) are seconds since the epoch, as Tomcat logs them.

    Attributes:
        log: Tomcat's whole log, parsed (:class:`~wslab.runtime.javalog.TomcatLog`).
        fault_at: When the DROP rules were in and the clients were killed.
        until: The text waited for, and ``until_at`` when each record containing it was logged.
        client_ports: The vanished clients' local ports: the DROP rules' ports.
        client_paths: The endpoint each of those clients was connected to, e.g. ``/broken``.
        clean_paths: The endpoints of the clients that closed cleanly at the fault.
        healthy_paths: The endpoints of the healthy clients, which stayed.
        healthy_received: For each healthy client, ``(time, messages received so far)`` every 0.2 s.
        probe_at: When the probe clients started connecting (None: no probe).
        rules: The iptables rules added inside the namespace.
        tcp_retries2: The setting inside the namespace.
        javac_s, start_s: Seconds for javac, and for Tomcat to start (inside).
        wall_s: Seconds for the whole run, namespaces included.
        host_before, host_after: The host's own settings, read before and after.
    """

    log: TomcatLog
    fault_at: float
    until: str
    until_at: list[float]
    client_ports: list[int]
    client_paths: list[str]
    rules: list[str]
    tcp_retries2: int
    javac_s: float
    start_s: float
    wall_s: float
    host_before: HostNetwork
    host_after: HostNetwork
    interfaces: list[str] = field(default_factory=list)
    clean_paths: list[str] = field(default_factory=list)
    healthy_paths: list[str] = field(default_factory=list)
    healthy_received: list[list[tuple[float, int]]] = field(default_factory=list)
    probe_at: float | None = None

    def received_between(self, client: int, start: float, end: float) -> int:
        """How many messages healthy client number ``client`` received in ``[start, end]`` (epoch seconds),
        by its reports every 0.2 s: the first report at or after ``start`` to the last at or before ``end``."""
        inside = [count for at, count in self.healthy_received[client] if start <= at <= end]
        return inside[-1] - inside[0] if inside else 0

    @property
    def fault_to_until_s(self) -> float | None:
        """Seconds from the fault to the first record containing ``until``; None if it never came."""
        return self.until_at[0] - self.fault_at if self.until_at else None

    @property
    def host_unchanged(self) -> bool:
        """True if the host's tcp_retries2 and iptables rules are what they were before the run."""
        return self.host_before == self.host_after

    def __repr__(self) -> str:
        seen = f"{self.until!r} after {self.fault_to_until_s:.2f} s" if self.until_at else f"no {self.until!r}"
        return f"<VanishRun {len(self.client_ports)} clients vanished; {seen}; {len(self.log)} log records>"


async def run_vanish(
    lab: Lab,
    sources: Sequence[str | Path] = (),
    *,
    classes: str | Path | None = None,
    path: str | Sequence[str] = "/broken",
    clients: int = 1,
    retries2: int | None = 1,
    until: str = TIMED_OUT,
    watch: float = 0.0,
    settle: float = 1.0,
    ping: float | None = None,
    clean: Sequence[str] = (),
    healthy: Sequence[str] = (),
    probe: Sequence[str] = (),
    opened: str = "",
    fine: bool = False,
    properties: Mapping[str, object] | None = None,
    timeout: float = 30.0,
    name: str = "netns",
) -> VanishRun:
    """Start Tomcat in fresh namespaces, let ``clients`` connect to ``path``, and make them vanish.

    ``path`` may name several endpoints (``("/broken", "/fixed")``): ``clients`` connect to each,
    all vanish at once, and one Tomcat start serves both.

    The clients connect group by group, so that Tomcat numbers their sessions in this order: the
    vanishing ones, path by path as given; then the ``clean`` ones; then the ``healthy`` ones.
    Give ``opened`` to make their ``@OnOpen`` methods run in that order too.

    Args:
        sources, classes: The endpoints, as ``.java`` files or compiled classes
            (see :func:`~wslab.runtime.tomcat.launch_tomcat`).
        retries2: ``net.ipv4.tcp_retries2`` inside (1: the kernel gives up after about 1.5 s); None: leave it at 15.
        until: Wait until Tomcat logs a record containing this, once per vanished client (at most
            ``timeout`` s, scaled). ``""``: don't wait, only watch.
        watch: Then keep logging this many seconds more, e.g. to count the lines per second.
        settle: Seconds between the clients connecting and the fault.
        ping: The clients send a ping every this many seconds (None: never).
        clean: One more client per path given here, which closes cleanly (a close frame) at the fault.
        healthy: One more client per path given here, which stays connected and reading: a control.
        opened: Before the next group connects, wait until Tomcat has logged a record containing this
            once per client connected so far (at most 3 s, scaled), e.g. what ``@OnOpen`` logs. Tomcat answers a
            handshake before it calls ``@OnOpen``, so without it the next group's may run first.
        probe: After the watch, one more client per path given here connects (e.g. for ``@OnOpen`` to log the map).
        fine: Log Tomcat's NioEndpoint at FINE (the close path's ``Broken pipe``).
        properties: Java system properties, e.g. ``{"lab.readIdleMs": 2000}``.

    Raises:
        LabError: something is missing (one line saying what), or Tomcat or a client did not start.
    """
    reason = vanish_skip_reason()
    if reason is not None:
        raise LabError(reason)
    argv = [*namespace_command(), "--", sys.executable, "-m", "wslab.faults.netns_driver", "run",
            "--host-netns", str(os.stat("/proc/self/ns/net").st_ino), "--clients", str(clients),
            "--until", until, "--watch", str(watch), "--settle", str(settle), "--timeout", str(timeout)]
    paths = [path] if isinstance(path, str) else list(path)
    argv += [arg for each in paths for arg in ("--path", each)]
    argv += [arg for source in sources for arg in ("--source", str(Path(source).resolve()))]
    argv += ["--classes", str(Path(classes).resolve())] if classes is not None else []
    argv += ["--retries2", str(retries2)] if retries2 is not None else []
    argv += ["--ping", str(ping)] if ping else []
    argv += ["--fine"] if fine else []
    argv += ["--opened", opened] if opened else []
    for option, extra in (("--clean", clean), ("--healthy", healthy), ("--probe", probe)):
        argv += [arg for each in extra for arg in (option, each)]
    argv += [arg for key, value in (properties or {}).items() for arg in ("--property", f"{key}={value}")]
    before = host_network()
    started = time.monotonic()
    # Our directory, not the driver's: if the driver is killed, its files still go with this one.
    with tempfile.TemporaryDirectory(prefix="wslab-netns-") as work:
        os.chmod(work, 0o755)
        lab.timeline.record(name, EventKind.STARTED, detail=f"{clients} clients on {', '.join(paths)}")
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TMPDIR": work}, start_new_session=True,
        )
        # Tomcat's start and the wait each have their own timeout inside; this one bounds the rest.
        deadline = scaled(2 * timeout + watch + settle + 30)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), deadline)
        except BaseException as exc:  # the deadline, or the notebook's "interrupt"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # unshare and the driver; the PID namespace takes the rest
            await process.wait()
            if isinstance(exc, asyncio.TimeoutError):
                raise LabError(f"the run in the namespace did not end within {deadline:g} s; it was killed") from None
            raise
    wall_s = time.monotonic() - started
    after = host_network()
    lab.timeline.record(name, EventKind.EXITED, detail=f"code {process.returncode}")
    try:
        result = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise LabError(f"the namespace driver failed (exit code {process.returncode}): {last}") from None
    if "error" in result:
        raise LabError(f"in the namespace: {result['error']}")
    return VanishRun(
        log=TomcatLog(result["log"]), fault_at=result["fault_at"], until=until, until_at=result["until_at"],
        client_ports=result["client_ports"], client_paths=result["client_paths"], rules=result["rules"],
        tcp_retries2=result["tcp_retries2"], javac_s=result["javac_s"], start_s=result["start_s"], wall_s=wall_s,
        host_before=before, host_after=after, interfaces=result["interfaces"],
        clean_paths=list(clean), healthy_paths=list(healthy), probe_at=result["probe_at"],
        healthy_received=[[(at, count) for at, count in reports] for reports in result["healthy_received"]],
    )

"""Four ways a client dies, inflicted for real, and what the server sees.

=============  ===============================================================
clean-close    the client calls ``close()``: closing handshake, then FIN
killed         the client's process gets SIGKILL: its kernel sends a FIN
reset          the fault proxy closes both sides with SO_LINGER 0: an RST
vanished       the fault proxy stalls: no FIN, no RST, nothing ever again
=============  ===============================================================

Each failure is real: a separate process really dies, the RST is a real TCP
RST, the vanished peer really stops reading. :func:`run_failure` inflicts one
and reports what the server's connection ended with, read from the timeline.

Run as ``python -m wslab.faults.failures URL`` this module is the client that gets
killed: it connects, says ``open`` on stdout, and waits forever.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Lab
from ..runtime.server import LabServer
from ..runtime.timeline import Event, EventKind
from ..runtime.timing import wait_until
from .proxy import Fault, FaultProxy

__all__ = ["FailureMode", "FAILURE_MODES", "Victim", "Outcome", "connect_victim", "inflict", "observe", "run_failure"]


class FailureMode(StrEnum):
    """Four ways a client dies. A mode is also a plain string."""

    CLEAN_CLOSE = "clean-close"  # close(): closing handshake, then FIN
    KILLED = "killed"  # SIGKILL to the client's process: its kernel sends a FIN
    RESET = "reset"  # the fault proxy closes with SO_LINGER 0: an RST
    VANISHED = "vanished"  # the fault proxy stalls: no FIN, no RST, nothing ever again


FAILURE_MODES = tuple(mode.value for mode in FailureMode)

# Modes that need the fault proxy between client and server.
_VIA_PROXY = (FailureMode.RESET, FailureMode.VANISHED)


@dataclass
class Victim:
    """A client that is about to die, and the server-side connection that will see it."""

    mode: FailureMode
    server: LabServer
    server_ws: ServerConnection
    conn: str  # the server-side label on the timeline, e.g. "c3"
    client: Any = None  # a ClientConnection, or the Process for "killed"
    proxy: FaultProxy | None = None
    proxy_conn: str | None = None
    fault_at: float | None = None  # timeline time when the failure happened


@dataclass
class Outcome:
    """What the server saw after a client died."""

    mode: str
    conn: str
    exception: str  # e.g. "ConnectionClosedError", or "nothing" if still open
    rcvd: int | None
    sent: int | None
    close_code: int | None
    cause: str  # the __cause__ chain, e.g. "ConnectionResetError(104, 'Connection reset by peer')"
    detected_after: float | None  # seconds from the failure to the server's close; None: never

    def row(self) -> dict[str, Any]:
        """The columns that stay the same from run to run (no timing)."""
        return {
            "client died by": self.mode,
            "server sees": self.exception,
            "rcvd": "-" if self.rcvd is None else self.rcvd,
            "sent": "-" if self.sent is None else self.sent,
            "close_code": "-" if self.close_code is None else self.close_code,
            "__cause__": self.cause or "None",
        }


async def _new_server_connection(server: LabServer, before: set[ServerConnection], deadline: float) -> ServerConnection:
    try:
        await wait_until(lambda: bool(server.connections - before), deadline,
                         f"the client showing up on server {server.name!r}")
    except WaitTimeout as exc:
        raise LabError(str(exc)) from None
    return (server.connections - before).pop()


async def connect_victim(
    lab: Lab, server: LabServer, mode: str, *, proxy: FaultProxy | None = None, name: str | None = None,
    deadline: float = 5.0, **connect_options: Any,
) -> Victim:
    """Open a client to ``server`` that will die by ``mode``.

    ``reset`` and ``vanished`` go through ``proxy`` (a FaultProxy in front of
    the server); ``killed`` runs the client in a separate Python process.
    """
    if mode not in FAILURE_MODES:
        raise LabError(f"unknown failure mode {mode!r}: choose one of {', '.join(FAILURE_MODES)}")
    mode = FailureMode(mode)
    if mode in _VIA_PROXY and proxy is None:
        raise LabError(
            f"the {mode!r} failure needs a fault proxy: pass proxy=await wslab.start_proxy(lab, server, name=...)"
        )
    name = name or f"victim-{mode}"
    before = set(server.connections)
    # server_ws is filled in below, once the server has accepted the connection.
    victim = Victim(mode, server, None, "", proxy=proxy)  # type: ignore[arg-type]
    if mode == "killed":
        victim.client = await _spawn_client_process(lab, server.url, name, deadline)
    else:
        proxy_before = {c.label for c in proxy.connections} if proxy else set()
        url = proxy.url if proxy is not None and mode in _VIA_PROXY else server.url
        victim.client = await lab.connect(url, name=name, **connect_options)
        if proxy is not None and mode in _VIA_PROXY:
            fresh = [c.label for c in proxy.connections if c.label not in proxy_before]
            victim.proxy_conn = fresh[0] if fresh else None
    victim.server_ws = await _new_server_connection(server, before, deadline)
    victim.conn = lab.label(victim.server_ws)
    return victim


async def _spawn_client_process(lab: Lab, url: str, name: str, deadline: float) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wslab.faults.failures", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    await lab.track(name, _ProcessHandle(process))
    assert process.stdout is not None  # a PIPE, above
    try:
        line = await asyncio.wait_for(process.stdout.readline(), deadline)
    except asyncio.TimeoutError:
        line = b""
    if line.strip() != b"open":
        process.kill()
        raise LabError(f"the client process could not connect to {url} within {deadline} s")
    return process


class _ProcessHandle:
    """Lets the lab kill a client process it started, on close."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def inflict(lab: Lab, victim: Victim) -> None:
    """Make the victim's client die by its mode, now."""
    victim.fault_at = lab.timeline.now()
    lab.timeline.record("failure", EventKind.INFLICT, conn=victim.conn, detail=victim.mode)
    if victim.mode == FailureMode.CLEAN_CLOSE:
        await victim.client.close()
    elif victim.mode == FailureMode.KILLED:
        victim.client.send_signal(signal.SIGKILL)
        await victim.client.wait()
    elif victim.mode == FailureMode.RESET:
        assert victim.proxy is not None
        await victim.proxy.set_fault(Fault.RESET, conn=victim.proxy_conn)
    elif victim.mode == FailureMode.VANISHED:
        assert victim.proxy is not None
        await victim.proxy.set_fault(Fault.STALL, conn=victim.proxy_conn)


async def observe(lab: Lab, victim: Victim, *, timeout: float) -> Outcome:
    """Wait up to ``timeout`` seconds for the server's side of the victim to close; report what it saw."""

    def closed() -> list[Event]:
        return lab.timeline.select(source=victim.server.name, kind=EventKind.CLOSED, conn=victim.conn)

    try:
        await wait_until(lambda: bool(closed()), timeout, "the server noticing", poll=0.02)
    except WaitTimeout:
        return Outcome(victim.mode, victim.conn, "nothing", None, None, None, "", None)
    event = closed()[-1]
    exc = event.data["exc"]
    return Outcome(
        victim.mode, victim.conn, type(exc).__name__, event.data["rcvd"], event.data["sent"],
        event.code, _short(exc.__cause__), event.t - (victim.fault_at or 0.0),
    )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}({exc.errno}, {exc.strerror!r})"
    return f"{type(exc).__name__}({str(exc)!r})" if str(exc) else f"{type(exc).__name__}()"


async def run_failure(
    lab: Lab, server: LabServer, mode: str, *, proxy: FaultProxy | None = None, timeout: float = 3.0,
    settle: float = 0.1, **connect_options: Any,
) -> Outcome:
    """Connect a client, let it die by ``mode``, and report what the server saw within ``timeout``."""
    victim = await connect_victim(lab, server, mode, proxy=proxy, **connect_options)
    await asyncio.sleep(settle)
    await inflict(lab, victim)
    return await observe(lab, victim, timeout=timeout)


async def _idle_client(url: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, ping_interval=None) as ws:
        print("open", flush=True)
        await ws.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m wslab.faults.failures ws://127.0.0.1:PORT", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(_idle_client(sys.argv[1]))

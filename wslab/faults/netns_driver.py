"""The vanished client, inside a network namespace of its own: :mod:`wslab.faults.netns` runs this.

It is PID 1 of a fresh PID namespace in a fresh network namespace, started as::

    unshare --net --pid --fork --kill-child -- python -m wslab.faults.netns_driver run ...

and it refuses to run anywhere else: it changes a kernel setting and firewall
rules, and those must die with the namespace, never touch the host. Steps:

1. bring up ``lo`` (a new namespace has only ``lo``, and it is down);
2. lower ``net.ipv4.tcp_retries2`` (a per-namespace setting) so the kernel gives
   up on a silent peer in about 1.5 s instead of about 15 minutes;
3. start Tomcat, and the clients, each a separate process
   (:mod:`wslab.faults.netns_client`) so that it can be killed:
   first the ones that will vanish, then those that will close cleanly, then
   the healthy ones (in that order, so that Tomcat's session ids follow it);
4. the fault: an iptables DROP rule on each vanishing client's port (so nothing
   reaches Tomcat from it again, not even the FIN of its death), then
   ``kill -9``; at the same moment the clean clients send a close frame;
5. wait until Tomcat logs ``--until`` once per vanished client, then ``--watch`` seconds more;
6. optionally connect one more client per ``--probe`` path (its ``@OnOpen`` logs the map's size);
7. print one JSON object on stdout: the timings, the rules, what the healthy
   clients received, and Tomcat's whole log.

When it exits, the kernel kills every process left in its PID namespace, and
the network namespace (with its rules and its setting) disappears.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import scaled
from ..runtime.tomcat import Tomcat, launch_tomcat
from .netns import IPTABLES

RETRIES2 = Path("/proc/sys/net/ipv4/tcp_retries2")
# Each client runs this file by its path: a light process, quick to start (see its docstring).
CLIENT = Path(__file__).with_name("netns_client.py")


def bring_up_loopback() -> None:
    """``ip link set lo up``, without needing iproute2: read the flags, add IFF_UP (ioctls from <linux/sockios.h>)."""
    get_flags, set_flags, up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, get_flags, request)[:18])[1]
        fcntl.ioctl(sock, set_flags, struct.pack("16sH", b"lo", flags | up))


def blackhole(port: int) -> list[str]:
    """Drop every packet to or from ``port`` as it arrives (the INPUT chain), like a vanished laptop."""
    rules = [["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
             ["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"]]
    iptables = IPTABLES.require()  # by its full path: /usr/sbin is not on every user's PATH
    for rule in rules:
        subprocess.run([iptables, "-w", "-A", *rule], check=True, capture_output=True, timeout=10)
    return [" ".join(["-A", *rule]) for rule in rules]


async def start_client(ping: float | None, report: bool = False) -> asyncio.subprocess.Process:
    """A client in a process of its own, started now (Python takes a moment): it connects when told to
    (:func:`connect_clients`). With ``report``, it then prints ``{"received": N, "at": T}`` every 0.2 s."""
    argv = [sys.executable, str(CLIENT), "--open-timeout", str(scaled(10))]
    argv += ["--ping", str(ping)] if ping else []
    argv += ["--report"] if report else []
    return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def connect_clients(tomcat: Tomcat, group: list[tuple[asyncio.subprocess.Process, str]]) -> list[int]:
    """Tell each client of the group which path to connect to, side by side; return their local ports."""
    async def connect(process: asyncio.subprocess.Process, path: str) -> int:
        assert process.stdin is not None and process.stdout is not None  # both PIPEs
        process.stdin.write(json.dumps({"url": tomcat.url(path), "ca": str(tomcat.ca_file)}).encode() + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), scaled(15))
        if not line:
            raise LabError(f"a client could not connect to {tomcat.url(path)}")
        return int(json.loads(line)["port"])

    return list(await asyncio.gather(*(connect(process, path) for process, path in group)))


async def wait_opened(tomcat: Tomcat, text: str, count: int) -> None:
    """Wait until Tomcat has logged ``text`` ``count`` times (at most 3 s, scaled; "": don't wait).

    Tomcat answers a client's handshake, then creates its session and calls ``@OnOpen``; in between,
    on a busy machine, the next group's client may connect and open first. The endpoint's own log
    line says that this group's sessions are open.
    If it never comes (an endpoint that logs no such line), the run goes on: the caller sees it.
    """
    deadline = time.monotonic() + scaled(3.0)
    while text and len(tomcat.log().find(text)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def collect_reports(process: asyncio.subprocess.Process, into: list[list[float]]) -> None:
    """Append each ``[time, messages received so far]`` a healthy client reports to ``into``."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        report = json.loads(line)
        into.append([report["at"], report["received"]])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole scenario; returns what :func:`main` prints as JSON, with ``error`` if it failed."""
    result: dict[str, Any] = {"fault_at": None, "until_at": [], "log": "", "healthy_received": [], "probe_at": None}
    # Safety first: a new network namespace (not the host's), and PID 1 of a new PID namespace.
    if os.stat("/proc/self/ns/net").st_ino == args.host_netns or os.getpid() != 1:
        raise LabError("netns_driver runs only inside the namespaces wslab.faults.netns.run_vanish makes")
    result["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    bring_up_loopback()
    if args.retries2 is not None:
        RETRIES2.write_text(f"{args.retries2}\n")
    result["tcp_retries2"] = int(RETRIES2.read_text())
    # Every client process starts now, while Tomcat starts: each connects only when told. All get killed at the end.
    paths = [path for path in args.path or ["/broken"] for _ in range(args.clients)]
    groups: dict[str, list[tuple[asyncio.subprocess.Process, str]]] = {
        "vanishing": [(await start_client(args.ping), path) for path in paths],
        "clean": [(await start_client(args.ping), path) for path in args.clean],
        "healthy": [(await start_client(args.ping, report=True), path) for path in args.healthy],
        "probe": [(await start_client(None), path) for path in args.probe],
    }
    clients = [process for group in groups.values() for process, _ in group]
    tomcat = None
    async with Lab() as lab:
        try:
            properties = dict(item.split("=", 1) for item in args.property)
            tomcat = await launch_tomcat(lab, args.source, classes=args.classes, fine=args.fine,
                                         properties=properties, timeout=args.timeout)
            result.update(javac_s=tomcat.javac_s, start_s=tomcat.start_s)
            # Group by group, so that Tomcat numbers the sessions in this order: vanishing (path by path, in the
            # order given), clean, healthy. Within a group the clients connect side by side.
            ports: list[int] = []
            for path in dict.fromkeys(paths):
                ports += await connect_clients(tomcat, [(p, each) for p, each in groups["vanishing"] if each == path])
                await wait_opened(tomcat, args.opened, len(ports))
            result["client_ports"] = ports
            result["client_paths"] = paths
            await connect_clients(tomcat, groups["clean"])
            await wait_opened(tomcat, args.opened, len(ports) + len(groups["clean"]))
            await connect_clients(tomcat, groups["healthy"])
            result["healthy_received"] = [[] for _ in groups["healthy"]]
            for (process, _), reports in zip(groups["healthy"], result["healthy_received"], strict=True):
                lab.spawn(collect_reports(process, reports), name=f"reports-{process.pid}")
            await asyncio.sleep(args.settle)  # let broadcasts flow, as they would for a while in production
            # The fault: first the firewall (so even the FIN of the kill below is lost), then kill -9.
            result["rules"] = [rule for port in ports for rule in blackhole(port)]
            result["fault_at"] = fault_at = time.time()
            for process, _ in groups["vanishing"]:
                process.kill()
            for process, _ in groups["clean"]:
                process.terminate()  # the client's SIGTERM handler sends a close frame, 1000
            await asyncio.gather(*(process.wait() for process, _ in groups["vanishing"]))
            deadline = time.monotonic() + scaled(args.timeout)
            while args.until and time.monotonic() < deadline:
                if len(tomcat.log().find(args.until, since=fault_at)) >= len(paths):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(args.watch + 0.3)  # the aftermath; and the last record's frames arrive
            if args.until:
                result["until_at"] = [r.at for r in tomcat.log().find(args.until, since=fault_at)]
            if groups["probe"]:  # one more client per path: its @OnOpen logs the map's size now
                result["probe_at"] = time.time()
                await connect_clients(tomcat, groups["probe"])
                await asyncio.sleep(0.3)
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            result["error"] = _one_line(exc)
        finally:
            for process in clients:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            if tomcat is not None:
                result["log"] = tomcat.log_text()  # before lab.close() deletes Tomcat's directory
    return result


def _one_line(exc: BaseException) -> str:
    """One line for the caller to raise as a LabError; iptables says why it failed on stderr."""
    if isinstance(exc, LabError):
        return str(exc)
    detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else ""
    return f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wslab.faults.netns_driver", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="the whole scenario (inside the namespaces only)")
    runner.add_argument("--host-netns", type=int, required=True, help="the host's network namespace inode")
    runner.add_argument("--source", action="append", default=[], help="an endpoint's .java file")
    runner.add_argument("--classes", default=None, help="or a directory of compiled classes")
    runner.add_argument("--path", action="append", default=[], help="an endpoint the clients connect to")
    runner.add_argument("--clients", type=int, default=1, help="how many clients connect to each path")
    runner.add_argument("--retries2", type=int, default=None, help="net.ipv4.tcp_retries2 in the namespace")
    runner.add_argument("--until", default="", help="wait until Tomcat logs this once per client")
    runner.add_argument("--watch", type=float, default=0.0, help="then watch the log for this many seconds")
    runner.add_argument("--settle", type=float, default=1.0, help="seconds between connecting and the fault")
    runner.add_argument("--ping", type=float, default=None, help="the clients ping every this many seconds")
    runner.add_argument("--clean", action="append", default=[], help="a client here closes cleanly at the fault")
    runner.add_argument("--healthy", action="append", default=[], help="a client on this path stays, and reports")
    runner.add_argument("--probe", action="append", default=[], help="after the watch, one more client on this path")
    runner.add_argument("--opened", default="", help="before the next group connects, wait until Tomcat logs "
                        "this once per client connected so far")
    runner.add_argument("--fine", action="store_true", help="NioEndpoint logs at FINE")
    runner.add_argument("--property", action="append", default=[], help="a Java system property, KEY=VALUE")
    runner.add_argument("--timeout", type=float, default=30.0, help="for Tomcat to start, and for --until")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        result = asyncio.run(run(args))
    except (LabError, OSError) as exc:
        result = {"error": _one_line(exc)}
    result["driver_s"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())

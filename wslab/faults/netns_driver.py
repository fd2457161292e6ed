"""The vanished client, inside a network namespace of its own: :mod:`wslab.faults.netns` runs this.

It is PID 1 of a fresh PID namespace in a fresh network namespace, started as::

    unshare --net --pid --fork --kill-child -- python -m wslab.faults.netns_driver run ...

and it refuses to run anywhere else: it changes a kernel setting and firewall
rules, and those must die with the namespace, never touch the host. Steps:

1. bring up ``lo`` (a new namespace has only ``lo``, and it is down);
2. lower ``net.ipv4.tcp_retries2`` (a per-namespace setting) so the kernel gives
   up on a silent peer in about 1.5 s instead of about 15 minutes;
3. start Tomcat, and N clients, each a separate process
   (``python -m wslab.faults.netns_driver client URL``) so that it can be killed;
4. the fault: an iptables DROP rule on each client's port (so nothing reaches
   Tomcat from it again, not even the FIN of its death), then ``kill -9``;
5. wait until Tomcat logs ``--until`` once per client, then ``--watch`` seconds more;
6. print one JSON object on stdout: the timings, the rules, and Tomcat's whole log.

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
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import scaled
from ..runtime.tomcat import launch_tomcat
from .netns import IPTABLES

RETRIES2 = Path("/proc/sys/net/ipv4/tcp_retries2")


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


async def start_client(url: str, ca_file: Path, ping: float | None) -> tuple[asyncio.subprocess.Process, int]:
    """A client in a process of its own; returns it and its local port, once it is connected."""
    argv = [sys.executable, "-m", "wslab.faults.netns_driver", "client", url, "--ca", str(ca_file)]
    if ping:
        argv += ["--ping", str(ping)]
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None  # stdout=PIPE above
    line = await asyncio.wait_for(process.stdout.readline(), scaled(15))
    if not line:
        raise LabError(f"the client could not connect to {url}")
    return process, json.loads(line)["port"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole scenario; returns what :func:`main` prints as JSON, with ``error`` if it failed."""
    result: dict[str, Any] = {"fault_at": None, "until_at": [], "log": ""}
    # Safety first: a new network namespace (not the host's), and PID 1 of a new PID namespace.
    if os.stat("/proc/self/ns/net").st_ino == args.host_netns or os.getpid() != 1:
        raise LabError("netns_driver runs only inside the namespaces wslab.faults.netns.run_vanish makes")
    result["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    bring_up_loopback()
    if args.retries2 is not None:
        RETRIES2.write_text(f"{args.retries2}\n")
    result["tcp_retries2"] = int(RETRIES2.read_text())
    clients: list[asyncio.subprocess.Process] = []
    tomcat = None
    async with Lab() as lab:
        try:
            properties = dict(item.split("=", 1) for item in args.property)
            tomcat = await launch_tomcat(lab, args.source, classes=args.classes, fine=args.fine,
                                         properties=properties, timeout=args.timeout)
            result.update(javac_s=tomcat.javac_s, start_s=tomcat.start_s)
            # The clients connect side by side; every one that started is kept, so that all get killed.
            paths = [path for path in args.path or ["/broken"] for _ in range(args.clients)]
            outcomes = await asyncio.gather(
                *(start_client(tomcat.url(path), tomcat.ca_file, args.ping) for path in paths), return_exceptions=True)
            started = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
            clients += [process for process, _ in started]
            errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if errors:
                raise errors[0]
            result["client_ports"] = ports = [port for _, port in started]  # all started: in the order of paths
            result["client_paths"] = paths
            await asyncio.sleep(args.settle)  # let broadcasts flow, as they would for a while in production
            # The fault: first the firewall (so even the FIN of the kill below is lost), then kill -9.
            result["rules"] = [rule for port in ports for rule in blackhole(port)]
            result["fault_at"] = fault_at = time.time()
            for process in clients:
                process.kill()
            await asyncio.gather(*(process.wait() for process in clients))
            deadline = time.monotonic() + scaled(args.timeout)
            while args.until and time.monotonic() < deadline:
                if len(tomcat.log().find(args.until, since=fault_at)) >= len(clients):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(args.watch + 0.3)  # the aftermath; and the last record's frames arrive
            if args.until:
                result["until_at"] = [r.at for r in tomcat.log().find(args.until, since=fault_at)]
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


async def client(args: argparse.Namespace) -> None:
    """Connect, say which local port we have, then read every message until killed."""
    from websockets.asyncio.client import connect

    context = ssl.create_default_context(cafile=args.ca)
    # compression=None: with permessage-deflate, Tomcat would shrink "xxxx..." to almost nothing.
    async with connect(args.url, ssl=context, ping_interval=args.ping, ping_timeout=None, max_size=None,
                       compression=None, open_timeout=scaled(10)) as ws:
        port = ws.transport.get_extra_info("sockname")[1]
        print(json.dumps({"port": port}), flush=True)
        async for _ in ws:
            pass


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
    runner.add_argument("--fine", action="store_true", help="NioEndpoint logs at FINE")
    runner.add_argument("--property", action="append", default=[], help="a Java system property, KEY=VALUE")
    runner.add_argument("--timeout", type=float, default=30.0, help="for Tomcat to start, and for --until")
    victim = commands.add_parser("client", help="one wss:// client, to be killed")
    victim.add_argument("url")
    victim.add_argument("--ca", required=True)
    victim.add_argument("--ping", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "client":
        asyncio.run(client(args))
        return 0
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

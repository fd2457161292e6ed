"""A real nginx between the lab's clients and servers, as a reverse proxy for WebSockets.

:func:`start_nginx` writes an nginx config into a private temporary
directory and starts Debian's ``nginx`` (``nginx-light`` is enough) as a
child process listening on 127.0.0.1::

    server = await lab.serve(handler, name="echo")
    nginx = await start_nginx(lab, server, read_timeout=2)
    ws = await lab.connect(nginx.url, name="alice")   # through nginx
    print(nginx.config)                                # what nginx runs

The settings are the fields of :class:`~wslab.runtime.nginxconf.NginxSettings`, as keyword arguments;
:meth:`Nginx.reload` changes some of them the way ``nginx -s reload`` does.
A config nginx rejects is a one-line :class:`LabError` quoting nginx's own
``[emerg]`` line; a missing nginx is a LabError that says how to install it
(:data:`~wslab.runtime.programs.NGINX`; ``WSLAB_NGINX`` names one nginx to use).

**The port.** The lab opens the listening socket itself (port 0: the kernel
picks a free one) and hands it to nginx, which takes inherited sockets from
the environment variable ``NGINX="fd;"``. Letting nginx bind a port the lab
picked earlier would race with every other program on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .childprocess import ChildProcess
from .errors import LabError
from .lab import Lab, host_port
from .nginxconf import LEVELS, READY_PATH, NginxSettings, check_config, render_config, settings_with
from .programs import NGINX
from .timing import wait_until

__all__ = ["NGINX", "Nginx", "NginxSettings", "Reload", "check_config", "render_config", "start_nginx"]


async def _ask_ready(port: int, timeout: float = 1.0) -> str:
    """GET the ready location from nginx itself: ``"generation 2, worker 4242"``, or "" if not a 200."""

    async def get() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {READY_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return await reader.read()  # HTTP/1.0: nginx closes the connection after the answer
        finally:
            writer.close()

    response = (await asyncio.wait_for(get(), timeout)).decode(errors="replace")
    head, _, body = response.partition("\r\n\r\n")
    return body.strip() if head.startswith("HTTP/1.1 200") else ""


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (nginx's workers), from /proc, or ``pgrep -P`` where there is none."""
    proc = Path("/proc")
    if not proc.is_dir():
        import subprocess

        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout
        return sorted(int(word) for word in out.split())
    children = []
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (name) state ppid ...": the name may hold spaces, so split after its ")".
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":  # Z: exited, not yet reaped by the master
                children.append(int(stat.parent.name))
    return sorted(children)


@dataclass(frozen=True)
class Reload:
    """One :meth:`Nginx.reload`, in timeline seconds.

    Attributes:
        signalled_at: When the master got SIGHUP.
        ready_at: When new connections were sure to get the new config.
        old_workers: The workers of the previous config. They exit when their last tunnel
            ends, or at ``worker_shutdown_timeout``.
    """

    generation: int
    signalled_at: float
    ready_at: float
    old_workers: tuple[int, ...]


class Nginx(ChildProcess):
    """An nginx started by :func:`start_nginx`: a :class:`ChildProcess` with its config.

    ``lab.close()`` stops it with SIGTERM, which cuts every tunnel at once;
    :meth:`kill` is ``kill -9`` of nginx and its workers.

    Attributes:
        url: ``ws://127.0.0.1:PORT``: connect here to go through nginx.
        port: The port it listens on.
        upstreams: ``(host, port)`` of each server behind it.
        settings: The :class:`NginxSettings` it runs.
        config: The text of the nginx.conf it runs.
        generation: 1, then one more at each :meth:`reload`.
        executable: The nginx that runs.
    """

    host = "127.0.0.1"
    port: int
    upstreams: list[tuple[str, int]]
    settings: NginxSettings
    config: str
    generation: int
    executable: str

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def error_log_lines(self, level: str = "debug", containing: str = "") -> list[str]:
        """error.log's lines at ``level`` or more severe that contain ``containing``, as nginx wrote them."""
        if level not in LEVELS:
            raise LabError(f"unknown error.log level {level!r}: choose one of {', '.join(LEVELS)}")
        wanted = LEVELS[LEVELS.index(level):]
        with contextlib.suppress(FileNotFoundError):
            text = (self.directory / "error.log").read_text(errors="replace")
            return [
                line for line in text.splitlines()
                if (m := re.search(r" \[(\w+)\] ", line)) and m.group(1) in wanted and containing in line
            ]
        return []

    def worker_pids(self) -> list[int]:
        """The worker processes running now: after a reload, the old ones that still carry tunnels too."""
        return _children(self.pid) if self.running else []

    async def reload(self, timeout: float = 10.0, **changes: Any) -> Reload:
        """Change settings the way ``nginx -s reload`` does: test the new config, then SIGHUP the master.

        The master starts new workers with the new config and, 100 ms later,
        tells the old ones to stop accepting and quit; tunnels they carry stay
        open (until ``worker_shutdown_timeout``, if set). Returns when a new
        worker answers and every old one has logged "gracefully shutting down"
        (it stops accepting right after): from then on, new connections get the
        new config. With ``log_level`` above ``"notice"`` that line is not
        logged, and only the new workers are waited for.

        Raises:
            LabError: nginx rejected the new config (it keeps running the old one), or it is not running.
        """
        if not self.running:
            raise LabError(f"{self.name} is not running (exit code {self.process.returncode}): start it again")
        old_level, settings = self.settings.log_level, settings_with(self.settings, changes)
        generation = self.generation + 1
        config = render_config(self.port, self.upstreams, settings, generation)
        await check_config(self.executable, config)
        (self.directory / "nginx.conf").write_text(config)
        self.settings, self.config, self.generation = settings, config, generation
        old_workers = tuple(self.worker_pids())
        signalled_at = self.lab.timeline.now()
        os.kill(self.pid, signal.SIGHUP)
        self.lab.timeline.record(self.name, "reloaded", detail=f"generation {generation}")

        async def new_workers_answer() -> bool:
            with contextlib.suppress(OSError):
                return (await _ask_ready(self.port)).startswith(f"generation {generation},")
            return False

        def old_workers_stopped_accepting() -> bool:
            if LEVELS.index(old_level) > LEVELS.index("notice"):
                return True  # their "gracefully shutting down" is not logged
            quitting = self.error_log_lines("notice", containing="gracefully shutting down")
            return all(any(f" {pid}#{pid}: " in line for line in quitting) for pid in old_workers)

        await wait_until(new_workers_answer, timeout, f"{self.name}'s workers for generation {generation}")
        await wait_until(old_workers_stopped_accepting, timeout, f"{self.name}'s old workers stopping")
        return Reload(generation, signalled_at, self.lab.timeline.now(), old_workers)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return (f"<Nginx {self.name} {self.url} -> {len(self.upstreams)} upstream(s), "
                f"generation {self.generation}, {state}>")


def _addresses(upstreams: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of each upstream: one target or a list of them (servers, URLs, ports, pairs)."""
    if isinstance(upstreams, tuple) and len(upstreams) == 2 and isinstance(upstreams[1], int):
        upstreams = [upstreams]  # one (host, port) pair
    elif not isinstance(upstreams, (list, tuple)):
        upstreams = [upstreams]
    if not upstreams:
        raise LabError("nginx needs at least one upstream server: pass a server, a ws:// URL or a port")
    return [target if isinstance(target, tuple) else host_port(target) for target in upstreams]


def _listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1, on a port the kernel picks, for nginx to inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what nginx sets on its own sockets
    # Non-blocking, as nginx makes the sockets it opens itself (it leaves inherited ones as they are).
    # A blocking one hangs a worker: during a reload, old and new workers both wake up for a new
    # connection; the one that loses the race sits in accept() for good, and an old worker stuck
    # there never reads its order to quit.
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    sock.listen(511)  # nginx's default backlog
    return sock


async def start_nginx(
    lab: Lab, upstreams: Any, *, name: str = "nginx", timeout: float = 10.0, **settings: Any
) -> Nginx:
    """Start nginx on 127.0.0.1, in front of ``upstreams``, tracked by ``lab`` under ``name``.

    Args:
        upstreams: A server (anything with ``host`` and ``port``), a ``ws://`` URL, a port,
            a ``(host, port)`` pair, or a list of them: nginx takes them in turn.
        settings: Fields of :class:`NginxSettings`, e.g. ``read_timeout=2``.

    Returns when a worker answers an HTTP request. Starting under a name
    that is taken closes the old one first, so re-running a cell is safe.

    Raises:
        LabError: nginx is not installed (with the install command), rejected the config
            (with its ``[emerg]`` line), or did not start.
    """
    executable = NGINX.require()
    chosen = settings_with(NginxSettings(), settings)
    addresses = _addresses(upstreams)
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = render_config(port, addresses, chosen)

    def prepare(directory: Path) -> None:
        (directory / "nginx.conf").write_text(config)
        # Run as root, nginx's workers run as "nobody": they must reach their temporary files in here.
        directory.chmod(0o755)

    async def ready(directory: Path) -> bool:
        return (await _ask_ready(port)).startswith("generation 1,")

    try:
        await check_config(executable, config)  # a rejected config leaves a running nginx of that name alone
        await lab.close(name)
        nginx = await Nginx.start(
            lab, name, lambda directory: [executable, "-p", f"{directory}/", "-c", str(directory / "nginx.conf")],
            ready=ready, timeout=timeout, prepare=prepare,
            pass_fds=[sock.fileno()], env={"NGINX": f"{sock.fileno()};"},
        )
    finally:
        sock.close()  # nginx holds it now: when nginx exits, the port closes with it
    assert isinstance(nginx, Nginx)
    nginx.port, nginx.upstreams, nginx.settings, nginx.config = port, addresses, chosen, config
    nginx.generation, nginx.executable = 1, executable
    return nginx

"""A real nginx between the lab's clients and servers, as a reverse proxy for WebSockets.

:func:`start_nginx` writes an nginx config into a private temporary
directory and starts Debian's ``nginx`` (``nginx-light`` is enough) as a
child process listening on 127.0.0.1::

    server = await lab.serve(handler, name="echo")
    nginx = await start_nginx(lab, server, read_timeout=2)
    ws = await lab.connect(nginx.url, name="alice")   # through nginx
    print(nginx.config)                                # what nginx runs

The settings are the fields of :class:`NginxSettings`, as keyword arguments;
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
import dataclasses
import os
import re
import signal
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LabError
from .lab import Lab, host_port
from .programs import NGINX, ChildProcess
from .timing import scaled, wait_until

__all__ = ["NGINX", "Nginx", "NginxSettings", "Reload", "check_config", "render_config", "start_nginx"]

# nginx's error.log levels, least severe first.
LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")

# A location nginx answers itself: the lab asks it which config generation the workers run.
READY_PATH = "/.wslab/ready"


@dataclass(frozen=True)
class NginxSettings:
    """What the lab's nginx config says. Seconds may be fractions: ``0.5`` is written ``500ms``.

    Attributes:
        read_timeout: ``proxy_read_timeout``: a tunnel that carries no bytes, either way, for this long is cut.
        send_timeout: ``proxy_send_timeout``: a write to the server that makes no progress for this long is cut.
        forward_upgrade: Pass the ``Upgrade`` and ``Connection`` headers on. Without them the server sees a plain GET.
        http_version: ``proxy_http_version``. WebSocket needs ``"1.1"``: HTTP/1.0 has no Upgrade.
        worker_shutdown_timeout: After a reload, old workers cut the tunnels they still carry after
            this many seconds. None: they wait for every tunnel to end, however long that takes.
        worker_processes: How many workers accept connections.
        log_level: The least severe level error.log records. The idle cut is logged at ``"info"``.
        extra: More directives for the ``location /`` block, written as they are.
    """

    read_timeout: float = 60.0
    send_timeout: float = 60.0
    forward_upgrade: bool = True
    http_version: str = "1.1"
    worker_shutdown_timeout: float | None = None
    worker_processes: int = 1
    log_level: str = "info"
    extra: str = ""


def _settings(base: NginxSettings, changes: dict[str, Any]) -> NginxSettings:
    known = [f.name for f in dataclasses.fields(NginxSettings)]
    for key in changes:
        if key not in known:
            raise LabError(f"unknown nginx setting {key!r}: the settings are {', '.join(known)}")
    return dataclasses.replace(base, **changes)


def _time(seconds: float | str) -> str:
    """nginx's spelling of a duration: ``2s``, or ``500ms`` (nginx reads no fractions)."""
    if isinstance(seconds, str):
        return seconds
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def render_config(port: int, upstreams: Sequence[tuple[str, int]], settings: NginxSettings, generation: int = 1) -> str:
    """The nginx.conf the lab writes. Paths are relative to nginx's private directory (``nginx -p DIR``)."""
    s = settings
    main = [f"worker_processes {s.worker_processes};"]
    if s.worker_shutdown_timeout is not None:
        main.append(f"worker_shutdown_timeout {_time(s.worker_shutdown_timeout)};"
                    "  # after a reload, old workers cut their tunnels after this")
    servers = [f"        server {host}:{up_port};" for host, up_port in upstreams]
    if s.worker_processes != 1:
        # Shared memory, so that all workers take turns together instead of each from the first server.
        servers.insert(0, "        zone websocket_servers 64k;")
    # (directive, comment) pairs for "location /": the comments say why each line is there.
    proxy = [(f"proxy_http_version {s.http_version};", "WebSocket needs 1.1: HTTP/1.0 has no Upgrade")]
    if s.forward_upgrade:
        proxy += [
            ("proxy_set_header Upgrade $http_upgrade;", "hop-by-hop headers: nginx drops them"),
            ('proxy_set_header Connection "upgrade";', "unless told to pass them on"),
        ]
    else:
        proxy.append(("", "Upgrade and Connection are not passed on: the server sees a plain GET"))
    proxy += [
        ("proxy_set_header Host $http_host;", "the host and port the client asked for"),
        ("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", ""),
        (f"proxy_read_timeout {_time(s.read_timeout)};", "no bytes either way for this long: cut"),
        (f"proxy_send_timeout {_time(s.send_timeout)};", "a write to the server stuck this long: cut"),
        *((line.strip(), "") for line in s.extra.strip().splitlines()),
    ]
    location = [f"{directive:<41} # {comment}".strip() if comment else directive for directive, comment in proxy]
    indent = "\n" + " " * 12
    return f"""\
# nginx in front of the lab's WebSocket servers, written by wslab (generation {generation}).
# Relative paths are in nginx's private directory (nginx -p DIR).
daemon off;  # the lab is its parent: it stays in the foreground
{chr(10).join(main)}
pid nginx.pid;
error_log error.log {s.log_level};

events {{
    worker_connections 1024;
}}

http {{
    access_log access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    upstream websocket_servers {{  # round robin, when there are several
{chr(10).join(servers)}
    }}

    server {{
        listen 127.0.0.1:{port};  # the lab opened this socket and passed it on (NGINX="fd;")

        location = {READY_PATH} {{  # the lab asks which config the workers run
            access_log off;
            return 200 "generation {generation}, worker $pid\\n";
        }}

        location / {{
            proxy_pass http://websocket_servers;
            {indent.join(location)}
        }}
    }}
}}
"""


async def check_config(executable: str, config: str, timeout: float = 10.0) -> None:
    """Run ``nginx -t`` on ``config`` in a scratch directory.

    Raises:
        LabError: nginx rejected it; the message is nginx's own ``[emerg]`` line.
    """
    with tempfile.TemporaryDirectory(prefix="wslab-nginx-check-") as scratch:
        path = Path(scratch) / "nginx.conf"
        path.write_text(config)
        process = await asyncio.create_subprocess_exec(
            executable, "-t", "-q", "-p", scratch, "-c", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), scaled(timeout))
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise LabError(f"nginx -t did not finish within {scaled(timeout):g} s") from None
    if process.returncode == 0:
        return
    text = output.decode(errors="replace").replace(str(path), "nginx.conf")
    # nginx prints "[emerg] <what> in nginx.conf:<line>" after a timestamp and its pid (or "nginx: "),
    # then "test failed".
    emerg = re.search(r"\[emerg\] (?:\d+#\d+: )?(.*)", text)
    first = (text.strip().splitlines() or ["nginx -t failed"])[0]
    message = f"nginx: [emerg] {emerg.group(1).strip()}" if emerg else first
    if where := re.search(r"in nginx\.conf:(\d+)$", message):
        message += f" (that line: {config.splitlines()[int(where.group(1)) - 1].strip()!r})"
    raise LabError(f"nginx rejected the config: {message}")


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
        old_level, settings = self.settings.log_level, _settings(self.settings, changes)
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
    chosen = _settings(NginxSettings(), settings)
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

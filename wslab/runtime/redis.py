"""A real Redis, started by the lab: Debian's ``redis-server`` as a child process on 127.0.0.1.

Notebook 07 spreads sessions over several server processes, and they talk
through Redis (:mod:`wslab.servers.backplane`). The Redis is a real one::

    redis = await start_redis(lab)        # redis-server on a free port, in a temp dir
    r = redis.client()                    # a redis.asyncio client; lab.close() closes it
    await r.ping()
    await redis.restart(downtime=1.0)     # the process really stops, then starts on the same port
    await redis.kill()                    # kill -9
    await lab.close()                     # stops it and deletes its directory

It keeps nothing on disk (``--save ''``, ``--appendonly no``): a restart is a
Redis that has forgotten everything, which is what the backplane must survive.
:data:`REDIS` is its :class:`~wslab.runtime.programs.Program`: a missing
``redis-server`` skips the notebook and its tests on a laptop, and fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LabError
from .lab import Lab, Restart
from .programs import REDIS, ChildProcess, free_port
from .timeline import EventKind
from .timing import CLOSE_DEADLINE

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["REDIS", "RedisServer", "ping", "start_redis"]


# How many free ports to try: another process may take the port free_port() found before
# redis-server binds it (there is no port 0 for redis: 0 means "no TCP at all").
PORT_ATTEMPTS = 3


async def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis answers ``PING`` at ``host:port`` within ``timeout`` seconds.

    A real command, not just a TCP connect: Redis accepts connections a moment
    before it answers them (and answers ``-LOADING`` while it reads its data).
    Spoken in Redis's own protocol, so the runtime needs no Redis library.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                return await reader.readline() == b"+PONG\r\n"
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except OSError:  # refused, reset, or TimeoutError (an OSError too): not answering
        return False


class RedisServer:
    """A ``redis-server`` the lab started. Make one with :func:`start_redis`.

    The lab tracks it under its ``name``; its process is tracked (and on the
    timeline) as ``NAME-server``. Closing it closes the clients it handed out,
    then stops the process.

    Attributes:
        name: The lab's name for it.
        host: Always 127.0.0.1.
        port: Its port, kept across :meth:`restart`.
        process: The running :class:`~wslab.runtime.programs.ChildProcess`.
    """

    close_rank = 3  # with the servers, before the programs: its clients go first, then its process

    def __init__(self, lab: Lab, name: str, process: ChildProcess, port: int) -> None:
        self.lab = lab
        self.name = name
        self.host = "127.0.0.1"
        self.port = port
        self.process = process
        self._clients: list[redis.asyncio.Redis] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``: what the backplane and ``redis.asyncio.Redis.from_url`` take."""
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def client(self, **options: Any) -> redis.asyncio.Redis:
        """A ``redis.asyncio`` client of this server, closed when the lab closes this server.

        ``options`` go to ``redis.asyncio.Redis.from_url``. The lab's default is
        a 2 s socket timeout, so no command waits for ever.
        """
        import redis.asyncio

        options.setdefault("socket_timeout", 2.0)
        options.setdefault("socket_connect_timeout", 2.0)
        client = redis.asyncio.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    async def restart(self, *, downtime: float = 0.0) -> Restart:
        """Stop the process (SIGTERM), stay down ``downtime`` seconds, start a new one on the same port.

        Everything Redis held is gone: it keeps nothing on disk. Clients see
        their connections closed, then refused, then accepted again.
        """
        await self.process.close()
        down_at = self.lab.timeline.now()
        await asyncio.sleep(downtime)
        self.process = await _start_process(self.lab, self.name, self.port)
        return Restart(down_at, self.lab.timeline.now())

    async def kill(self) -> None:
        """SIGKILL, now (``kill -9``): Redis dies without a word; its clients' connections just end."""
        await self.process.kill()

    async def close(self) -> None:
        """Close the clients :meth:`client` made (each within a deadline), then stop the process."""
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # its server may be gone already: nothing left to close
                await asyncio.wait_for(client.aclose(), CLOSE_DEADLINE)
        await self.process.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.name} {self.url} pid {self.pid} {state}>"


def _argv(executable: str, port: int) -> Any:
    def argv(directory: Path) -> list[str]:
        return [
            executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",  # refuse anything but loopback, even if --bind were changed
            "--save", "",  # no snapshots ...
            "--appendonly", "no",  # ... and no append-only file: nothing survives a restart
            "--dir", str(directory),  # anything it writes anyway goes to the lab's temp dir
            "--daemonize", "no",  # stay our child, so lab.close() can stop it
            "--loglevel", "warning",  # quiet: only problems reach its log
            "--always-show-logo", "no",
        ]
    return argv


async def _start_process(lab: Lab, name: str, port: int) -> ChildProcess:
    executable = REDIS.require()

    async def ready(directory: Path) -> bool:
        return await ping("127.0.0.1", port, timeout=0.5)

    return await ChildProcess.start(lab, f"{name}-server", _argv(executable, port), ready=ready, log_name="redis.log")


async def start_redis(lab: Lab, *, name: str = "redis", port: int | None = None) -> RedisServer:
    """Start Debian's ``redis-server`` on 127.0.0.1, on a free port, in a temporary directory.

    Returns when it answers ``PING``. ``lab.close()`` stops it (SIGTERM) and
    deletes its directory; starting again under the same ``name`` stops the
    old one first, so re-running a notebook cell is safe.

    Raises:
        LabError: ``redis-server`` or the ``redis`` Python package is missing
            (the message says how to install it), or it did not start (the
            message quotes its last log line).
    """
    await lab.close(name)
    REDIS.require()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        chosen = port if port is not None else free_port()
        try:
            process = await _start_process(lab, name, chosen)
        except LabError as exc:
            # redis-server logs "Could not create server TCP listening socket ...: bind: Address already
            # in use", then, as its last line, "Failed listening on port P (TCP), aborting."
            taken = "Failed listening on port" in str(exc)
            if port is None and taken and attempt < PORT_ATTEMPTS:
                lab.timeline.record(f"{name}-server", EventKind.EXITED,
                                    detail=f"port {chosen} was taken: trying another")
                continue
            raise
        return await lab.track(name, RedisServer(lab, name, process, chosen))
    raise AssertionError("unreachable: the last attempt returns or raises")

"""A lab server in a process of its own: ``python -m wslab serve``, started and stopped by the lab.

Several server processes sharing one Redis (notebook 07) must really be
processes: a ``kill -9`` then takes one down with its memory, its sockets and
its sessions, and nothing in the survivor's memory can paper over that::

    p1 = await start_server_process(lab, "p1", "--server", "backplane", "--backplane", redis.url)
    ws = await lab.connect(p1.url, name="alice")
    await p1.kill()                        # kill -9: alice sees 1006
    await lab.close()                      # stops every process still running (SIGTERM)

Each is a :class:`~wslab.runtime.childprocess.ChildProcess` running this Python,
so it is the same wslab code; its output (the URL, then one line per event)
goes to a log in its temporary directory: :meth:`ServerProcess.lines`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from ..runtime.childprocess import ChildProcess
from ..runtime.lab import Lab

__all__ = ["ServerProcess", "start_server_process"]

LOG = "serve.log"


class ServerProcess:
    """A ``python -m wslab serve`` the lab started. Make one with :func:`start_server_process`.

    Attributes:
        name: The lab's name for it (and its source on the lab's timeline).
        url: The ``ws://`` URL it printed first.
        process: Its :class:`~wslab.runtime.childprocess.ChildProcess`, tracked by the lab under ``name``.
    """

    def __init__(self, name: str, url: str, process: ChildProcess) -> None:
        self.name = name
        self.url = url
        self.process = process
        self._final: list[str] | None = None  # its output, kept by stop() before its directory goes

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def lines(self) -> list[str]:
        """Everything it printed so far (stdout and stderr), one string per line; after :meth:`stop`, all of it."""
        return self._final if self._final is not None else _read(self.process.directory)

    async def kill(self) -> None:
        """``kill -9``: the process dies at once; its clients' connections end without a close frame."""
        await self.process.kill()

    async def stop(self, deadline: float = 5.0) -> int | None:
        """SIGTERM, like Ctrl-C: it drains (closes its connections with 1012, spread over its
        ``--drain-window``, 2 s by default: :mod:`wslab.servers.drain`) and exits. Returns its exit code.

        Its output stays readable with :meth:`lines`; then its directory is deleted
        (and it gets SIGKILL if it has not exited within ``deadline`` seconds).
        """
        process = self.process.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), deadline)
        self._final = _read(self.process.directory)
        await self.process.close()
        return process.returncode

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.process.returncode}"
        return f"<ServerProcess {self.name} {self.url} pid {self.pid} {state}>"


def _read(directory: Path) -> list[str]:
    try:
        return (directory / LOG).read_text(errors="replace").splitlines()
    except OSError:
        return []


async def start_server_process(lab: Lab, name: str, *serve_args: str, timeout: float = 15.0) -> ServerProcess:
    """Run ``python -m wslab serve SERVE_ARGS...`` as a child of the lab; return once it printed its URL.

    ``lab.close()`` stops it (SIGTERM, then SIGKILL at the deadline); starting
    another under the same ``name`` stops this one first.

    Raises:
        LabError: it exited, or printed no URL within ``timeout`` seconds (scaled);
            the message quotes its last line (a ``wslab serve: error: ...``).
    """
    # -u: unbuffered, so each line reaches the log when it is printed, even if the process is killed.
    argv = [sys.executable, "-u", "-m", "wslab", "serve", *serve_args]
    # The child runs in its temporary directory: make sure it imports this very wslab.
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)

    async def ready(directory: Path) -> bool:
        return any(line.startswith("ws://") for line in _read(directory))

    process = await ChildProcess.start(lab, name, lambda directory: argv, ready=ready, timeout=timeout,
                                       env={"PYTHONPATH": path}, log_name=LOG)
    url = next(line for line in _read(process.directory) if line.startswith("ws://"))
    return ServerProcess(name, url, process)

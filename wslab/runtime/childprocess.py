"""An external program running as a child process: started until it serves, then stopped for sure.

:meth:`ChildProcess.start` runs a program as a child of the kernel, in its own
temporary directory, on 127.0.0.1; ``lab.close()`` stops it (SIGTERM, then
SIGKILL at the deadline) and deletes the directory. On Linux it also gets
SIGTERM when the kernel itself dies (a restarted kernel never runs
``lab.close()``), so a room of restarted kernels leaves no nginx, Redis or
Tomcat behind. Which programs there are, and what to do when one is missing:
:mod:`wslab.runtime.programs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LabError, WaitTimeout
from .timeline import EventKind
from .timing import scaled, wait_until

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["ChildProcess", "free_port", "dies_with_parent"]


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the program gets SIGTERM when the process that started it dies (Linux).

    ``setpriv --pdeathsig TERM`` (util-linux, on every Debian) sets the kernel's
    parent-death signal, then execs the program, which keeps the setting and the
    pid. Without it (macOS), ``argv`` as it is: only ``lab.close()`` stops the program.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now, for a program that cannot listen on port 0 itself.

    Another process could take it before the program binds it: the program's
    start then fails with "address in use", and :meth:`ChildProcess.start`
    says so in one line.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """An external program running as a child process, in a temporary directory of its own.

    Make one with :meth:`start`. ``lab.close()`` closes it: SIGTERM (or the
    program's own stop signal), SIGKILL if it has not exited within the
    deadline, then the directory is deleted.

    Attributes:
        name: The lab's name for it.
        directory: Its private directory (config, logs, data).
        process: The :class:`asyncio.subprocess.Process`.
    """

    close_rank = 4  # after servers and clients: they may still be talking to it

    def __init__(self, lab: Lab, name: str, process: asyncio.subprocess.Process,
                 directory: tempfile.TemporaryDirectory[str], stop_signal: int) -> None:
        self.lab = lab
        self.name = name
        self.process = process
        self._directory = directory
        self.directory = Path(directory.name)
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    @classmethod
    async def start(
        cls,
        lab: Lab,
        name: str,
        argv: Callable[[Path], Sequence[str]],
        *,
        ready: Callable[[Path], Awaitable[bool]],
        timeout: float = 10.0,
        prepare: Callable[[Path], None] | None = None,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        stop_signal: int = signal.SIGTERM,
        log_name: str = "output.log",
    ) -> ChildProcess:
        """Start a program and wait until ``ready(directory)`` says it serves.

        Args:
            lab: The lab that tracks it under ``name`` (re-running closes the old one).
            argv: The command line, made from the private directory.
            ready: Polled every 20 ms until true; e.g. "the port accepts a connection".
            timeout: Seconds (scaled) to wait for ``ready``.
            prepare: Writes config files into the directory before the start.
            env: Environment variables to add to the kernel's own.
            pass_fds: File descriptors the program inherits, e.g. a listening socket the lab
                opened for it, so no other process can take the port in between.
            log_name: File in the directory that gets the program's stdout and stderr.

        Raises:
            LabError: it exited, or was not ready in time; the message quotes the last line it printed.
        """
        await lab.close(name)
        directory = tempfile.TemporaryDirectory(prefix=f"wslab-{name}-")
        path = Path(directory.name)
        if prepare is not None:
            prepare(path)
        log = open(path / log_name, "wb")  # noqa: SIM115  (the child writes to it; closed below)
        try:
            process = await asyncio.create_subprocess_exec(
                *dies_with_parent(argv(path)), cwd=path, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **(env or {})}, pass_fds=tuple(pass_fds), start_new_session=True,
            )
        except OSError as exc:
            directory.cleanup()
            raise LabError(f"cannot start {name}: {exc.strerror or exc}") from None
        finally:
            log.close()
        child = cls(lab, name, process, directory, stop_signal)
        serving = False

        async def serving_or_exited() -> bool:
            nonlocal serving
            with contextlib.suppress(OSError):  # e.g. "connection refused" while it starts
                serving = process.returncode is None and await ready(path)
            return serving or process.returncode is not None

        try:
            await wait_until(serving_or_exited, timeout, f"{name} ready", poll=0.02)
        except WaitTimeout:
            why = f"{name} was not ready within {scaled(timeout):g} s"
        else:
            if serving:
                lab.timeline.record(name, EventKind.STARTED, detail=f"pid {process.pid}")
                return await lab.track(name, child)
            why = f"{name} exited with code {process.returncode}"
        last = child.last_line(log_name)
        await child.close()
        raise LabError(why + (f": {last}" if last else ""))

    def last_line(self, log_name: str = "output.log") -> str:
        """The last non-empty line the program wrote to ``log_name`` in its directory."""
        with contextlib.suppress(OSError):
            lines = (self.directory / log_name).read_text(errors="replace").strip().splitlines()
            return lines[-1].strip() if lines else ""
        return ""

    async def kill(self) -> None:
        """SIGKILL, now: the program dies without cleaning up (a crash, ``kill -9``)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
            self.lab.timeline.record(self.name, EventKind.EXITED, detail="killed (SIGKILL)")

    async def close(self, deadline: float = 5.0) -> None:
        """Stop it (its stop signal, then SIGKILL after ``deadline`` s) and delete its directory."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, self.stop_signal)
            try:
                await asyncio.wait_for(self.process.wait(), deadline)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
            self.lab.timeline.record(self.name, EventKind.EXITED, detail=f"code {self.process.returncode}")
        self._kill_leftovers()
        self._directory.cleanup()

    def _kill_leftovers(self) -> None:
        """SIGKILL what is left of the program's process group, e.g. nginx workers whose master was killed alone.

        The group's id is the program's pid. While the group has members the
        kernel gives that number to no other process; so if no process has it
        now, the group is ours (or empty), never another program's.
        """
        try:
            os.kill(self.process.pid, 0)
            return  # the number belongs to a process: not ours, ours was reaped
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<ChildProcess {self.name} pid {self.pid} {state}>"


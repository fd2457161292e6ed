"""The lab's one exception a student sees: :class:`LabError`, one line that says what to do.

Errors a student can cause (a busy port, a bad URL, no server, a program that
is not installed) are raised as ``LabError`` with a message that fits on one
line. In a notebook it renders as that line, without a traceback.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["LabError", "WaitTimeout", "bind_error", "probe_bind"]


class LabError(Exception):
    """A mistake the lab can explain in one line: a busy port, a bad URL, no server.

    In a notebook it is shown as that one line, without a traceback.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom error display
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class WaitTimeout(LabError):
    """Something the lab waited for did not happen within its deadline."""


def bind_error(exc: OSError, host: str, port: int) -> LabError:
    """Explain in one line why listening on ``host:port`` failed.

    asyncio's ``create_server`` reports a failed bind differently across
    Python versions: 3.11 and 3.12 re-raise the ``OSError`` with its errno,
    3.13 raises ``OSError("could not bind on any address out of [...]")``
    with ``errno`` None. So when the errno is missing, the cause is found
    again with a plain socket bind (:func:`probe_bind`).
    """
    code = exc.errno if exc.errno is not None else probe_bind(host, port)
    if code == errno.EADDRINUSE:
        return LabError(f"port {port} on {host} is already in use: stop what runs there, or use port 0 for a free one")
    if code == errno.EADDRNOTAVAIL:
        return LabError(f"cannot listen on {host}: that address is not on this machine (use 127.0.0.1)")
    if code == errno.EACCES:
        return LabError(f"not allowed to listen on port {port}: ports below 1024 need privileges, use port 0")
    if isinstance(exc, socket.gaierror):
        return LabError(f"cannot listen on {host}: no such host name (use 127.0.0.1)")
    return LabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def probe_bind(host: str, port: int) -> int | None:
    """The errno a plain ``bind((host, port))`` fails with, or None if it succeeds (or the host does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            # The same option asyncio sets, so a port in TIME_WAIT is not reported as busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return exc.errno
    return None

"""The TCP layer under a WebSocket: the seed's two OS errors, and the bytes a kernel holds.

The blog post's Tomcat log shows two errors from the operating system, not
from WebSocket code: ``Connection timed out`` from a socket read and
``Broken pipe`` from a socket write. :func:`reproduce_seed_errors` gets the
same two, for real, from two sockets on 127.0.0.1::

    >>> result = reproduce_seed_errors()
    >>> print(result.reader_line)
    TimeoutError: [Errno 110] Connection timed out
    >>> print(result.writer_line)
    BrokenPipeError: [Errno 32] Broken pipe

On Linux it sets ``TCP_USER_TIMEOUT`` on the server's socket, so the kernel
gives up on a peer that stopped reading after 2 s instead of many minutes.
Other systems have no ``TCP_USER_TIMEOUT``: there it shows the nearest
portable equivalent, and says so in :attr:`SeedErrors.method`.

The seed's server spoke TLS (https on port 443), and its ``Broken pipe`` came
from closing the session, not from sending data: closing TLS cleanly writes
one last record, the ``close_notify`` alert. Pass ``tls=(server_context,
client_context)`` and the connection speaks TLS; when the read fails, the
session is closed the way Tomcat's ``SecureNioChannel.close()`` does it, and
:attr:`SeedErrors.close_error` holds what that last write got.

:func:`unsent_bytes` and :func:`unread_bytes` read how many bytes the kernel
holds in a socket's send and receive queues: where the data "accepted" by a
vanished peer really is.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

try:  # POSIX only
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None  # type: ignore[assignment]  # a module or None; the lab runs on Linux and macOS

__all__ = ["HAS_USER_TIMEOUT", "SeedErrors", "reproduce_seed_errors", "unsent_bytes", "unread_bytes"]

# TCP_USER_TIMEOUT exists on Linux only (since 2.6.37).
HAS_USER_TIMEOUT = hasattr(socket, "TCP_USER_TIMEOUT")

# The writer's chunk, and how long it waits when the kernel has no room.
_CHUNK = 4096
_RETRY = 0.05


@dataclass
class SeedErrors:
    """What a reader and a writer on a dying TCP connection got from the kernel.

    Attributes:
        method: ``"TCP_USER_TIMEOUT"`` (Linux) or ``"portable"`` (elsewhere).
        reader_error: The exception ``recv()`` raised, or None if it raised none.
        reader_after: When, in seconds since the peer stopped reading.
        writer_error: The exception that stopped the writer's ``send()``, or None.
        writer_after: When, in seconds since the peer stopped reading.
        bytes_accepted: How many bytes ``send()`` accepted before the error:
            the kernel took them, nobody ever read them.
        user_timeout: The ``TCP_USER_TIMEOUT`` set, in seconds (None if not set).
        writer_errors: Every error ``send()`` raised, in order; on the portable
            path a ``ConnectionResetError`` (the RST) may come before the
            ``BrokenPipeError`` that stops the writer.
        tls: Whether the connection spoke TLS.
        close_error: With TLS: what the write of the ``close_notify`` raised,
            when the session was closed after the reader's error (None if it
            went through, or without TLS).
        close_after: When, in seconds since the peer stopped reading.
    """

    method: str
    reader_error: BaseException | None
    reader_after: float | None
    writer_error: BaseException | None
    writer_after: float | None
    bytes_accepted: int
    user_timeout: float | None
    writer_errors: list[BaseException] = field(default_factory=list)
    tls: bool = False
    close_error: BaseException | None = None
    close_after: float | None = None

    @property
    def reader_line(self) -> str:
        """The reader's error as the last line of its traceback: ``TimeoutError: [Errno 110] ...``."""
        return _line(self.reader_error)

    @property
    def writer_line(self) -> str:
        """The writer's error as the last line of its traceback: ``BrokenPipeError: [Errno 32] ...``."""
        return _line(self.writer_error)

    @property
    def close_line(self) -> str:
        """What closing the TLS session got, as the last line of a traceback: ``BrokenPipeError: ...``."""
        return _line(self.close_error)


def _line(exc: BaseException | None) -> str:
    if exc is None:
        return "(no error)"
    return "".join(traceback.format_exception_only(exc)).strip()


def reproduce_seed_errors(
    *,
    user_timeout: float = 2.0,
    deadline: float = 10.0,
    portable: bool | None = None,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
) -> SeedErrors:
    """Make the kernel raise the seed's two errors on a real loopback TCP connection.

    A peer connects and never reads. The server's socket has a small send
    buffer; one thread keeps writing to it (non-blocking, retrying every
    50 ms when the kernel has no room) and another is blocked in ``recv()``.

    * With ``TCP_USER_TIMEOUT`` (Linux), the kernel gives up on the peer
      ``user_timeout`` seconds after its receive window closed: the blocked
      reader gets ``TimeoutError: [Errno 110] Connection timed out``, then the
      writer's next ``send()`` gets ``BrokenPipeError: [Errno 32] Broken pipe``.
    * ``portable=True`` (the default where ``TCP_USER_TIMEOUT`` is missing):
      the reader's socket has a ``user_timeout`` timeout, so ``recv()`` raises
      ``TimeoutError('timed out')``, raised by Python, not by the kernel, and
      without an errno; the peer then closes with unread data, which sends an
      RST: the writer's next ``send()`` may raise ``ConnectionResetError``, and
      it keeps writing until ``BrokenPipeError`` (or the deadline).

    * With ``tls``, the two sockets first complete a TLS handshake, and the
      writer sends TLS records. When the reader's ``recv()`` fails, the writer
      stops and the session is closed as Tomcat closes it: a ``close_notify``
      alert is written to the socket (after whatever the writer had left).
      That write is the first one after the kernel gave up: on Linux it gets
      ``BrokenPipeError``, in :attr:`SeedErrors.close_error`, and the writer
      gets no error at all (it was stopped before).

    It never waits more than ``deadline`` seconds and always closes its sockets.

    Args:
        user_timeout: Seconds before the kernel (or the socket timeout) gives up.
        deadline: Seconds after which everything stops, errors or not.
        portable: Force the portable path (True) or the Linux one (False).
        tls: ``(server_context, client_context)``: speak TLS. The server's
            certificate must be valid for ``127.0.0.1``.
    """
    if portable is None:
        portable = not HAS_USER_TIMEOUT
    if not portable and not HAS_USER_TIMEOUT:
        raise RuntimeError(f"TCP_USER_TIMEOUT is not available on {sys.platform}: use portable=True")
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server: socket.socket | None = None
    try:
        # The peer reads nothing: a small receive buffer makes its window close fast.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _CHUNK)
        peer.settimeout(deadline)
        peer.connect(listener.getsockname())
        listener.settimeout(deadline)
        server, _ = listener.accept()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CHUNK)
        session = _tls_handshake(server, peer, *tls, deadline) if tls is not None else None
        if portable:
            return _run_portable(server, peer, user_timeout, deadline, session)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(user_timeout * 1000))
        return _run_threads(server, "TCP_USER_TIMEOUT", user_timeout, deadline, session=session)
    finally:
        for sock in (server, peer, listener):
            if sock is not None:
                sock.close()


class _TLSSession:
    """The server's end of a TLS session, kept in memory and written to the socket by hand.

    Tomcat's ``SecureNioChannel`` works the same way: an ``SSLEngine``
    encrypts into a buffer, and ``flush()`` writes the buffer to the socket.
    ``pending`` is what was encrypted and not yet written.
    """

    def __init__(self, tls: ssl.SSLObject, outgoing: ssl.MemoryBIO) -> None:
        self.tls = tls
        self.outgoing = outgoing
        self.pending = bytearray()

    def encrypt(self, data: bytes) -> None:
        self.tls.write(data)
        self.pending += self.outgoing.read()

    def close_notify(self) -> None:
        """Close the session cleanly: queue the ``close_notify`` alert, as ``SSLEngine.closeOutbound()`` does."""
        with contextlib.suppress(ssl.SSLWantReadError):  # it would wait for the peer's close_notify: we don't
            self.tls.unwrap()
        self.pending += self.outgoing.read()


def _tls_handshake(
    server: socket.socket, peer: socket.socket, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    deadline: float,
) -> _TLSSession:
    """A TLS handshake between ``peer`` (the client, in a thread) and ``server``; the server's session."""
    ends = {}
    for name, context, sock in (("server", server_context, server), ("peer", client_context, peer)):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=name == "server",
                               server_hostname=None if name == "server" else "127.0.0.1")
        ends[name] = (sock, tls, incoming, outgoing)
    failed: list[BaseException] = []

    def client() -> None:
        try:
            _handshake(*ends["peer"])
        except (OSError, ssl.SSLError) as exc:
            failed.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    server.settimeout(deadline)
    try:
        _handshake(*ends["server"])
    except (OSError, ssl.SSLError):
        thread.join(deadline)
        if failed:
            raise failed[0] from None  # the client's reason (say, an untrusted certificate) says more
        raise
    finally:
        server.settimeout(None)
    thread.join(deadline)
    if failed:
        raise failed[0]
    _, tls, _, outgoing = ends["server"]
    return _TLSSession(tls, outgoing)


def _handshake(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
    """Drive one end's TLS handshake over a blocking socket (an in-memory TLS object does no I/O itself)."""
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the other end closed during the TLS handshake") from None
            incoming.write(data)
        except ssl.SSLError:
            if outgoing.pending:  # the alert that tells the other end why, so it doesn't wait for more
                with contextlib.suppress(OSError):
                    sock.sendall(outgoing.read())
            raise
    if outgoing.pending:  # the last handshake bytes (TLS 1.3: the client's Finished, the server's tickets)
        sock.sendall(outgoing.read())


def _run_portable(
    server: socket.socket, peer: socket.socket, user_timeout: float, deadline: float, session: _TLSSession | None
) -> SeedErrors:
    # No kernel timeout: the reader's socket timeout stands in for it, and the
    # peer closing its socket when the reader gives up stands in for the
    # kernel tearing the connection down.
    server.settimeout(user_timeout)
    return _run_threads(server, "portable", None, deadline, peer=peer, session=session)


def _run_threads(
    server: socket.socket,
    method: str,
    user_timeout: float | None,
    deadline: float,
    *,
    peer: socket.socket | None = None,
    session: _TLSSession | None = None,
) -> SeedErrors:
    """Run a blocked reader and a persistent writer on ``server`` until both fail or ``deadline``.

    With a TLS ``session``, the reader closes it when ``recv()`` fails, and the writer stops.
    """
    results: dict[str, tuple[BaseException | None, float | None]] = {}
    writer_errors: list[BaseException] = []
    accepted = 0
    stop = threading.Event()
    # With TLS, one thread at a time uses the session and writes to the socket (an SSL object is
    # not thread-safe), and once the session is closed the writer writes nothing more, as in Tomcat.
    socket_lock = threading.Lock()
    reader_blocked = threading.Event()
    start = time.monotonic()

    def close_session() -> None:
        """What Tomcat does after a failed read: ``WsSession.onClose`` -> ``SecureNioChannel.close`` -> ``flush``."""
        assert session is not None
        session.close_notify()
        try:
            _send_nowait(server, bytes(session.pending))  # the first write after the reader's error
        except OSError as exc:
            results["close"] = (exc, time.monotonic() - start)

    def reader() -> None:
        try:
            reader_blocked.set()
            try:
                data = server.recv(1)  # blocks: the peer never sends anything
            finally:
                reader_blocked.clear()
            results["reader"] = (None if data == b"" else RuntimeError(f"unexpected data {data!r}"), None)
        except OSError as exc:  # TimeoutError is an OSError
            results["reader"] = (exc, time.monotonic() - start)
            if session is not None:
                stop.set()  # the session is being closed: the writer sends nothing more on it
            with socket_lock:  # wait until the writer is between two sends
                if peer is not None:
                    # Portable path: the peer goes away once the reader has given up.
                    with contextlib.suppress(OSError):
                        peer.close()
                if session is not None:
                    close_session()

    def send_some() -> int:
        """Send the next chunk (encrypted first, with TLS); how many bytes the kernel accepted."""
        if reader_blocked.is_set() and _error_pending(server):
            # The kernel just gave up. The error goes to whichever call comes first; the seed's
            # went to the read (Tomcat's selector reports an error as "readable"): leave it to ours.
            raise BlockingIOError
        if session is None:
            return _send_nowait(server, b"x" * _CHUNK)
        with socket_lock:
            if stop.is_set():
                return 0
            if not session.pending:
                session.encrypt(b"x" * _CHUNK)
            sent = _send_nowait(server, bytes(session.pending))
            del session.pending[:sent]
            return sent

    def writer() -> None:
        nonlocal accepted
        while not stop.is_set():
            try:
                accepted += send_some()
            except (BlockingIOError, InterruptedError):
                stop.wait(_RETRY)  # the kernel has no room: try again soon, like a selector would
            except OSError as exc:
                if isinstance(exc, TimeoutError) and exc.errno is None:
                    continue  # Python's own socket timeout (Windows path): no room yet
                writer_errors.append(exc)
                results["writer"] = (exc, time.monotonic() - start)
                if peer is not None and isinstance(exc, ConnectionResetError) and len(writer_errors) == 1:
                    continue  # portable path: the RST first, the broken pipe on the next write
                return

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for thread in threads:
        thread.start()
    end = start + deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    stop.set()
    if any(thread.is_alive() for thread in threads):
        # Past the deadline: wake a reader still blocked in recv().
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(1.0)
    reader_error, reader_after = results.get("reader", (None, None))
    writer_error, writer_after = results.get("writer", (None, None))
    close_error, close_after = results.get("close", (None, None))
    return SeedErrors(
        method, reader_error, reader_after, writer_error, writer_after, accepted, user_timeout, writer_errors,
        tls=session is not None, close_error=close_error, close_after=close_after,
    )


def _error_pending(sock: socket.socket) -> bool:
    """Whether the kernel holds an error for ``sock`` that no call has received yet (POLLERR), without taking it."""
    if not hasattr(select, "poll"):  # Windows: no poll(), and no kernel timeout to race for anyway
        return False
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _send_nowait(sock: socket.socket, data: bytes) -> int:
    """``send()`` that never blocks: BlockingIOError when the kernel has no room."""
    if hasattr(socket, "MSG_DONTWAIT"):
        return sock.send(data, socket.MSG_DONTWAIT)
    return sock.send(data)  # Windows: the socket's own timeout bounds it


def unsent_bytes(sock: socket.socket | None) -> int | None:
    """Bytes in ``sock``'s kernel send queue, not yet acknowledged by the peer (Linux; else None)."""
    request = getattr(termios, "TIOCOUTQ", None) if termios else None
    if sock is None or request is None or not sys.platform.startswith("linux"):
        return None
    return _ioctl_int(sock, request)


def unread_bytes(sock: socket.socket | None) -> int | None:
    """Bytes in ``sock``'s kernel receive queue that the application has not read (None if unknown)."""
    request = getattr(termios, "FIONREAD", None) if termios else None
    if sock is None or request is None:
        return None
    return _ioctl_int(sock, request)


def _ioctl_int(sock: socket.socket, request: int) -> int | None:
    try:
        raw = fcntl.ioctl(sock.fileno(), request, struct.pack("i", 0))
    except OSError:
        return None
    value: int = struct.unpack("i", raw)[0]
    return value

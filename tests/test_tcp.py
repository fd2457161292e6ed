"""The seed's two OS errors, reproduced for real on loopback, and the kernel queue readers."""

from __future__ import annotations

import errno
import socket
import ssl
import sys
import time

import pytest
import trustme

from wslab.faults.tcp import HAS_USER_TIMEOUT, reproduce_seed_errors, unread_bytes, unsent_bytes
from wslab.runtime.timing import scaled

linux_only = pytest.mark.skipif(
    not HAS_USER_TIMEOUT, reason=f"TCP_USER_TIMEOUT is Linux-only; {sys.platform} uses the portable path"
)


@linux_only
def test_reader_times_out_and_writer_gets_broken_pipe_like_the_seed():
    start = time.monotonic()
    result = reproduce_seed_errors(user_timeout=2.0, deadline=scaled(10.0))
    took = time.monotonic() - start
    assert result.method == "TCP_USER_TIMEOUT"
    assert isinstance(result.reader_error, TimeoutError)
    assert result.reader_error.errno == errno.ETIMEDOUT == 110
    assert result.reader_line == "TimeoutError: [Errno 110] Connection timed out"
    assert isinstance(result.writer_error, BrokenPipeError)
    assert result.writer_error.errno == errno.EPIPE == 32
    assert result.writer_line == "BrokenPipeError: [Errno 32] Broken pipe"
    # The kernel gives up after the user timeout, not before; the writer fails right after the reader.
    # (Lower bounds are the kernel's own timing: a busy machine makes them later, never earlier.)
    assert 1.5 < result.reader_after < scaled(8.0)
    assert result.reader_after <= result.writer_after < result.reader_after + scaled(2.0)
    assert result.bytes_accepted > 0
    assert took < scaled(10.0) + scaled(3.0)


def test_portable_path_gives_a_timeout_without_errno_and_a_write_error():
    result = reproduce_seed_errors(user_timeout=0.5, deadline=scaled(5.0), portable=True)
    assert result.method == "portable"
    assert isinstance(result.reader_error, TimeoutError)
    assert result.reader_error.errno is None  # Python's socket timeout, not the kernel's ETIMEDOUT
    assert isinstance(result.writer_error, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))
    assert result.writer_errors and result.writer_errors[-1] is result.writer_error
    assert len(result.writer_errors) <= 2  # at most the RST, then the broken pipe
    if sys.platform.startswith("linux"):
        assert isinstance(result.writer_error, BrokenPipeError)
    assert 0.3 < result.reader_after < scaled(4.0)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@linux_only
def test_over_tls_the_broken_pipe_comes_from_the_close_notify_like_the_seed(tls):
    result = reproduce_seed_errors(user_timeout=2.0, deadline=scaled(10.0), tls=tls)
    assert result.tls and result.method == "TCP_USER_TIMEOUT"
    assert result.reader_line == "TimeoutError: [Errno 110] Connection timed out"
    # The seed's second line: the write of the close_notify, when the session is closed after the read failed.
    assert result.close_line == "BrokenPipeError: [Errno 32] Broken pipe"
    assert result.reader_after <= result.close_after < result.reader_after + scaled(1.0)
    # The data writer was stopped when the session closed: the broken pipe is the close path's, not a send's.
    assert result.writer_error is None
    assert result.bytes_accepted > 0  # TLS records the peer never read


def test_over_tls_the_portable_path_closes_the_session_too(tls):
    result = reproduce_seed_errors(user_timeout=0.5, deadline=scaled(5.0), portable=True, tls=tls)
    assert result.tls and result.method == "portable"
    assert isinstance(result.reader_error, TimeoutError) and result.reader_error.errno is None
    # The peer closed with unread data (an RST) before the close_notify was written.
    assert isinstance(result.close_error, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))
    assert result.writer_error is None


def test_without_tls_nothing_is_written_on_close():
    result = reproduce_seed_errors(user_timeout=0.5, deadline=scaled(5.0), portable=True)
    assert not result.tls and result.close_error is None and result.close_line == "(no error)"


def test_a_tls_handshake_that_fails_raises_and_closes_everything(tls):
    server_context, _ = tls
    stranger = ssl.create_default_context()  # does not trust the lab's throwaway CA
    with pytest.raises(ssl.SSLCertVerificationError):
        reproduce_seed_errors(user_timeout=0.5, deadline=scaled(5.0), tls=(server_context, stranger))


def test_deadline_bounds_the_run_and_sockets_are_closed():
    # A user timeout longer than the deadline: nothing fails in time, the call still returns.
    if HAS_USER_TIMEOUT:
        start = time.monotonic()
        result = reproduce_seed_errors(user_timeout=30.0, deadline=1.0)
        assert time.monotonic() - start < 1.0 + scaled(3.0)
        assert result.reader_error is None and result.writer_error is None
    else:
        pytest.skip(f"TCP_USER_TIMEOUT is Linux-only; {sys.platform} has no kernel timeout to outlast")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TIOCOUTQ is read on Linux only")
def test_queue_readers_see_bytes_nobody_read():
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname(), timeout=2)
    b, _ = listener.accept()
    try:
        a.sendall(b"x" * 1000)
        deadline = time.monotonic() + scaled(2)
        while unread_bytes(b) != 1000 and time.monotonic() < deadline:  # no event loop here: a plain poll
            time.sleep(0.01)
        assert unread_bytes(b) == 1000
        assert unsent_bytes(a) == 0  # on loopback the peer's kernel acknowledged them at once
        assert unsent_bytes(None) is None
    finally:
        for sock in (a, b, listener):
            sock.close()

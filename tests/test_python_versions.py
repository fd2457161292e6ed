"""What asyncio does differently on Python 3.11, 3.12 and 3.13, and the lab behaving the same on each.

CI runs this file on every interpreter it finds (see .ci/run). Each test
names the difference it pins:

- A failed bind: 3.11 and 3.12 raise the ``OSError`` with its errno; 3.13
  raises ``OSError("could not bind on any address out of [...]")`` with
  ``errno`` None when the address is not on this machine. The student's one
  line must be the same on all three (``wslab.runtime.errors.bind_error``).
- ``asyncio.Server.wait_closed()``: it returned at once after ``close()`` on
  3.11; on 3.12+ it waits until every connection has ended. A server or a
  proxy with a stalled peer must still stop within its deadline.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time

import pytest
from websockets.asyncio.server import ServerConnection

from wslab import Lab, LabError, start_proxy
from wslab.runtime.errors import bind_error
from wslab.runtime.timing import CLOSE_DEADLINE, scaled

FOREIGN = "192.0.2.1"  # TEST-NET-1, for documentation: never an address of this machine


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture
def busy_port():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def busy_line(port: int) -> str:
    return f"port {port} on 127.0.0.1 is already in use: stop what runs there, or use port 0 for a free one"


FOREIGN_LINE = f"cannot listen on {FOREIGN}: that address is not on this machine (use 127.0.0.1)"


# -- a failed bind is the same one line on every Python ---------------------------------


async def test_serving_on_a_busy_port_is_one_line(busy_port):
    async with Lab() as lab:
        with pytest.raises(LabError) as caught:
            await lab.serve(echo, name="echo", port=busy_port)
    assert str(caught.value) == busy_line(busy_port)


async def test_serving_on_an_address_not_on_this_machine_is_one_line():
    async with Lab() as lab:
        with pytest.raises(LabError) as caught:
            await lab.serve(echo, name="echo", host=FOREIGN)
    assert str(caught.value) == FOREIGN_LINE


async def test_a_proxy_on_a_busy_port_or_a_foreign_address_is_one_line(busy_port):
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        with pytest.raises(LabError) as busy:
            await start_proxy(lab, server, name="proxy", port=busy_port)
        with pytest.raises(LabError) as foreign:
            await start_proxy(lab, server, name="proxy", host=FOREIGN)
    assert str(busy.value) == busy_line(busy_port)
    assert str(foreign.value) == FOREIGN_LINE


async def test_serving_on_a_host_name_that_does_not_resolve_is_one_line():
    async with Lab() as lab:
        with pytest.raises(LabError) as caught:
            await lab.serve(echo, name="echo", host="no-such-host.invalid")
    assert str(caught.value) == "cannot listen on no-such-host.invalid: no such host name (use 127.0.0.1)"


def test_bind_error_without_an_errno_finds_the_cause_like_3_13_needs(busy_port):
    # What 3.13's create_server raises, built here so that every interpreter runs this path:
    # the message lists the addresses it tried, and errno is None.
    def as_on_3_13(host: str, port: int) -> OSError:
        return OSError(f"could not bind on any address out of [('{host}', {port})]")

    assert as_on_3_13(FOREIGN, 0).errno is None
    assert str(bind_error(as_on_3_13(FOREIGN, 0), FOREIGN, 0)) == FOREIGN_LINE
    assert str(bind_error(as_on_3_13("127.0.0.1", busy_port), "127.0.0.1", busy_port)) == busy_line(busy_port)
    # ... the same lines as from the errno that 3.11 and 3.12 report:
    with_errno = OSError(errno.EADDRNOTAVAIL, "cannot assign requested address")
    assert str(bind_error(with_errno, FOREIGN, 0)) == FOREIGN_LINE


# -- stopping never waits for a stalled peer (Server.wait_closed() on 3.12+) ------------


async def test_stopping_a_server_whose_client_stalled_ends_within_its_deadline():
    stalled = asyncio.Event()

    async def flood(ws: ServerConnection) -> None:
        payload = os.urandom(65536)  # random: permessage-deflate cannot shrink it
        await stalled.wait()
        while True:  # fills the buffers towards a client that no longer reads, then blocks
            await ws.send(payload)

    async with Lab() as lab:
        server = await lab.serve(flood, name="flood")
        proxy = await start_proxy(lab, server, name="proxy")
        await lab.connect(proxy.url, name="client")
        await proxy.set_fault("stall")
        stalled.set()
        await asyncio.sleep(0.3)  # let the server's send block on full buffers
        (server_ws,) = server.connections
        started = time.monotonic()
        await server.stop(deadline=0.5)
        took = time.monotonic() - started
        assert took < scaled(0.5 + CLOSE_DEADLINE + 1.0), f"stop() took {took:.1f} s"
        assert server_ws.state.name == "CLOSED"
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)


async def test_a_proxy_refuses_and_closes_at_once_while_connections_are_open():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        async with asyncio.timeout(scaled(1.0)):  # would wait for the open relay with wait_closed() on 3.12+
            await proxy.set_fault("refuse")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await ws.send("still relayed")
        assert await asyncio.wait_for(ws.recv(), scaled(2.0)) == "still relayed"
        async with asyncio.timeout(scaled(1.0)):
            await proxy.close()

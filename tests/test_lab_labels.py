"""Connection labels stay unique when old connections are garbage-collected."""

from __future__ import annotations

import asyncio
import gc

from wslab import Lab
from wslab.runtime.timing import scaled, wait_until


async def idle(ws):
    async for _ in ws:
        pass


async def test_a_new_connection_never_inherits_a_collected_connections_label():
    # Labels used to be keyed by id(ws): CPython reuses the id of a collected
    # object, so a new connection could get an old label, and its events.
    async with Lab() as lab:
        server = await lab.serve(idle, name="idle")
        labels = []
        for _ in range(40):
            await lab.connect(server.url, name="client")
            # The server registers the connection right after the handshake.
            await wait_until(lambda: server.connections, 1, "the server registering the connection")
            labels.append(lab.label(next(iter(server.connections))))
            await lab.close("client")
            await asyncio.sleep(scaled(0.02))
            gc.collect()
        assert len(set(labels)) == len(labels), labels

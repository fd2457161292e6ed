"""Reference solution for notebook 02's exercise: a handler that never keeps a dead session.

Load it into a cell with ``%load solutions/02-fixed-handler.py``, or check it::

    namespace = runpy.run_path("solutions/02-fixed-handler.py")
    await wslab.checks.check_handler(namespace["handler"], namespace["sessions"])
"""

import asyncio

from websockets.exceptions import ConnectionClosed

PING_INTERVAL = 0.5  # seconds between pings
PING_TIMEOUT = 0.5  # seconds to wait for the pong

sessions = {}


async def keepalive(ws):
    """Ping every PING_INTERVAL; no pong within PING_TIMEOUT: the peer vanished, abort."""
    while True:
        await asyncio.sleep(PING_INTERVAL)
        try:
            async with asyncio.timeout(PING_TIMEOUT):  # covers sending the ping too
                pong = await ws.ping()
                await pong
        except TimeoutError:
            ws.transport.abort()  # no closing handshake: the receive loop below ends now
            return
        except ConnectionClosed:
            return


async def handler(ws):
    sessions[id(ws)] = ws
    pinger = asyncio.create_task(keepalive(ws))
    try:
        async for message in ws:
            pass
    finally:  # a clean close, a FIN, an RST, or the abort above: the session goes
        pinger.cancel()
        sessions.pop(id(ws), None)

"""Reference solution for notebook 02's exercise: a handler that never keeps a dead session.

Load it into a cell with ``%load solutions/02-sessions.py``, run that cell, then the check cell.
"""

import asyncio

from websockets.exceptions import ConnectionClosed

PING_EVERY = 0.5  # seconds between pings
PONG_DEADLINE = 0.5  # seconds to wait for the pong (and for the ping to go out)

sessions = {}


async def ping_or_abort(ws):
    """Ping every PING_EVERY s; no pong within PONG_DEADLINE: the peer vanished, abort."""
    while True:
        await asyncio.sleep(PING_EVERY)
        try:
            async with asyncio.timeout(PONG_DEADLINE):
                pong = await ws.ping()  # returns once the ping is sent...
                await pong  # ...this waits for the pong
        except TimeoutError:
            ws.transport.abort()  # no closing handshake to wait for: the receive loop below ends now
            return
        except ConnectionClosed:
            return  # the client went some other way: the finally block below removes it


async def handler(ws):
    sessions[id(ws)] = ws
    pinger = asyncio.create_task(ping_or_abort(ws))
    try:
        async for _ in ws:
            pass  # this lab's clients only listen
    finally:  # a clean close, a FIN, an RST, or the abort above: the session goes, once
        pinger.cancel()
        sessions.pop(id(ws), None)

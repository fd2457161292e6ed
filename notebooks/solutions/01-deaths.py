# Reference solution for notebook 01's exercise: it replaces the whole exercise cell.
from websockets.protocol import State


async def break_link(proxy, link, how):
    """Make the client behind the proxy connection `link` die, and no other client."""
    # A reset is an event: SO_LINGER 0, then close, so both ends get an RST.
    # A stall is a state: the proxy stops reading and forwarding, and closes nothing: no FIN, no RST.
    fault = {"reset": "reset", "vanished": "stall"}[how]
    await proxy.set_fault(fault, conn=link)  # conn=: this link only, not every connection on the proxy


def stale_sessions(server):
    """What the server can know about each session in its map, from the connection's state alone."""
    report = {}
    for session_id, ws in server.sessions.items():
        if ws.state is not State.CLOSED:
            report[session_id] = "looks open"  # OPEN: healthy, or vanished; nothing here tells which
            continue
        cause = ws.close_exc.__cause__  # close_exc exists once the connection is CLOSED
        if isinstance(cause, ConnectionResetError):
            report[session_id] = "closed: RST"
        elif isinstance(cause, EOFError):
            report[session_id] = "closed: FIN"
        else:
            report[session_id] = "closed: clean"  # a close frame each way, no cause
    return report

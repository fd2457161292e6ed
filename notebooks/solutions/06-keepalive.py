def choose_ping_interval(idle_timeouts: list[float]) -> float | None:
    """Seconds between the client's pings, for a path whose intermediaries have these idle timeouts.

    idle_timeouts: the idle timeout (s) of each proxy or load balancer on the path, client side
                   first; empty when nothing on the path cuts idle connections.
    """
    if not idle_timeouts:
        return 20.0  # nothing cuts idle connections: websockets' default, to notice a vanished peer
    # The smallest timeout on the path cuts first, whichever hop it is. Half of it leaves room
    # for a late first ping: the proxy's timer starts before the client's ping interval does,
    # and every delay on the path (a slow link, a busy event loop) comes out of that margin.
    return min(idle_timeouts) / 2

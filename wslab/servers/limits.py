"""Connection caps: how many connections one client, and all clients together, may hold open.

Every connection is a file descriptor and some memory on the server. Nothing
in websockets limits how many one client opens: a client that opens
thousands and never reads them runs the server out of descriptors (often
1,024, or 256 on macOS), and then *nobody* can connect. :class:`ConnectionLimits`
refuses the opening handshake over either cap with ``503 Service Unavailable``
and a one-line reason, and the connections already open go on as before.

**Who is "one client"?** :func:`by_address`, the default, counts per source
IP address. That is what a server sees first, and what it must use before
it knows who is talking. But it is coarse: behind a NAT or a corporate proxy
many people share one address, and behind a reverse proxy (nginx) *every*
connection comes from the proxy, so the key must be the address the proxy
reports (``X-Forwarded-For``, trusted only from the proxy). On 127.0.0.1
every client of the lab shares one address, so a per-address cap is the
total cap in disguise; on Linux a client can pick another loopback address
(``127.0.0.2``: the whole 127.0.0.0/8 is loopback), which is how the tests
play two machines. Once a client is authenticated, its user is the better
key: pass ``key=`` any function of the connection and its request.

Counting starts when :meth:`ConnectionLimits.check` admits a handshake and
ends when that TCP connection is lost, so handshakes in progress count too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

__all__ = ["ConnectionLimits", "by_address"]

Key = Callable[[ServerConnection, Request], Hashable]


def by_address(connection: ServerConnection, request: Request) -> Hashable:
    """The client's source IP address (the first element of ``remote_address``)."""
    address = connection.remote_address
    return address[0] if address else None


class ConnectionLimits:
    """At most ``max_total`` connections in all, and ``max_per_client`` per client (``key``).

    Args:
        max_total: Connections the server holds at most; None: no cap.
        max_per_client: Connections one client (one ``key``) holds at most; None: no cap.
        key: Who a connection belongs to (default: :func:`by_address`).

    Attributes:
        open: Connections held now, per client.
        refused: Handshakes refused so far.
    """

    def __init__(
        self, *, max_total: int | None = None, max_per_client: int | None = None, key: Key = by_address
    ) -> None:
        for name, value in (("max_total", max_total), ("max_per_client", max_per_client)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no cap), not {value!r}")
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.key = key
        self.open: Counter[Hashable] = Counter()
        self.refused = 0

    @property
    def total(self) -> int:
        return sum(self.open.values())

    def refusal(self, client: Hashable) -> str | None:
        """Why a new connection from ``client`` would go over a cap, or None if it fits. No side effect."""
        if self.max_total is not None and self.total >= self.max_total:
            return f"server full: {self.total} connections open (max_total={self.max_total})"
        if self.max_per_client is not None and self.open[client] >= self.max_per_client:
            return (f"too many connections from {client}: {self.open[client]} open "
                    f"(max_per_client={self.max_per_client})")
        return None

    def check(self, connection: ServerConnection, request: Request) -> str | None:
        """Count ``connection`` in, until its TCP connection is lost; or return why it is refused."""
        client = self.key(connection, request)
        why = self.refusal(client)
        if why is not None:
            self.refused += 1
            return why
        self.open[client] += 1
        # Released however the connection ends: a handler that returns, an abort, a failed handshake.
        connection.connection_lost_waiter.add_done_callback(lambda _: self.release(client))
        return None

    def release(self, client: Hashable) -> None:
        """One connection of ``client`` is gone."""
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]

    def __repr__(self) -> str:
        return (f"ConnectionLimits(max_total={self.max_total}, max_per_client={self.max_per_client}; "
                f"{self.total} open, {self.refused} refused)")

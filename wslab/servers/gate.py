"""The front door of a lab server: what a connection must pass before its handler runs, and what ends it early.

A :class:`Gate` gathers the defences of notebook 08, each one optional:

====================  =================================================  ===========================
defence               against                                            answer
====================  =================================================  ===========================
``origins``           a page on another site using the victim's          HTTP 403 (websockets'
                      cookies (cross-site WebSocket hijacking)           ``origins=``)
``limits``            one client opening connections until the server    HTTP 503
                      runs out of file descriptors                       (:mod:`.limits`)
``admission``         a reconnect storm: every client back at once       HTTP 503 + ``Retry-After``,
                                                                         or close 1013 (:mod:`.admission`)
``auth``              no token, a forged one, an expired one             HTTP 401; close 4401 when a
                                                                         live token expires (:mod:`.auth`)
``max_size``          a message too big to hold                          close 1009 (websockets)
``open_timeout``      a handshake sent one byte a second (slowloris)     TCP closed (websockets)
====================  =================================================  ===========================

websockets itself refuses malformed frames (1002), invalid UTF-8 (1007),
garbage instead of HTTP (the TCP connection closes) and huge headers (431).
The lab's server records every refusal on the timeline (``refused``).

A server app carries its gate (``FixedServer(gate=Gate(...))``);
:func:`~wslab.servers.base.start_app` puts it in front of the app's handler::

    gate = Gate(origins=["http://127.0.0.1:8000"], auth=TokenSigner(secret, lifetime=60),
                admission=AdmissionControl(rate=200), limits=ConnectionLimits(max_per_client=10))
    server = await start_app(lab, FixedServer(lab.timeline, gate=gate))
"""

from __future__ import annotations

import asyncio
import http
import weakref
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from ..runtime.server import Handler
from ..runtime.timeline import EventKind, Timeline
from ..runtime.timing import CLOSE_DEADLINE, close_within
from .admission import AdmissionControl, AdmissionMode, Refusal
from .auth import TOKEN_EXPIRED, Claims, TokenError, TokenSigner, token_of
from .limits import ConnectionLimits

__all__ = ["Gate"]

TRY_AGAIN_LATER = 1013


class Gate:
    """Checks at the opening handshake, and the ends a connection may meet later. Every part is optional.

    Args:
        origins: The ``Origin`` values allowed (e.g. ``["https://app.example"]``); ``None`` in the
            list allows clients that send no ``Origin`` (non-browser clients). None: any origin.
        auth: Verifies the token of each handshake; closes a connection with 4401 when it expires.
        admission: Admits at most so many handshakes per second.
        limits: Caps connections per client and in all.
        max_size: Largest message accepted, in bytes: a bigger one closes the connection with 1009.
        open_timeout: Seconds a client has to complete its opening handshake.
    """

    def __init__(
        self,
        *,
        origins: Sequence[str | None] | None = None,
        auth: TokenSigner | None = None,
        admission: AdmissionControl | None = None,
        limits: ConnectionLimits | None = None,
        max_size: int | None = 2**20,
        open_timeout: float = 10.0,
    ) -> None:
        self.origins = list(origins) if origins is not None else None
        self.auth = auth
        self.admission = admission
        self.limits = limits
        self.max_size = max_size
        self.open_timeout = open_timeout
        # What the handshake decided, for the handler to act on (weak: a failed handshake leaves nothing).
        self._claims: weakref.WeakKeyDictionary[ServerConnection, Claims] = weakref.WeakKeyDictionary()
        self._turned_away: weakref.WeakKeyDictionary[ServerConnection, Refusal] = weakref.WeakKeyDictionary()

    @property
    def serve_options(self) -> dict[str, Any]:
        """Options for websockets' ``serve()``: the checks, and its own limits."""
        options: dict[str, Any] = {"process_request": self.process_request, "max_size": self.max_size,
                                   "open_timeout": self.open_timeout}
        if self.origins is not None:
            options["origins"] = self.origins  # websockets answers 403 to any other Origin
        return options

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The checks, cheapest first: caps, then rate, then the token's signature. None lets the handshake on."""
        if self.limits is not None and (why := self.limits.check(connection, request)) is not None:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, why + "\n")
        if self.admission is not None and (refusal := self.admission.decide()) is not None:
            if self.admission.mode is AdmissionMode.CLOSE_1013:
                self._turned_away[connection] = refusal  # accept, then close at once with 1013
            else:
                response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, refusal.reason + "\n")
                response.headers["Retry-After"] = str(refusal.retry_after)
                return response
        if self.auth is not None:
            try:
                self._claims[connection] = self.auth.verify(token_of(request))
            except TokenError as exc:
                response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{exc}\n")
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return response
        return None

    def wrap(self, handler: Handler, timeline: Timeline, source: str) -> Handler:
        """``handler`` behind this gate: turned away with 1013, or closed with 4401 when the token expires."""

        async def guarded(ws: ServerConnection) -> None:
            refusal = self._turned_away.pop(ws, None)
            if refusal is not None:
                timeline.record(source, EventKind.REFUSED, code=TRY_AGAIN_LATER, detail=refusal.reason,
                                retry_after=refusal.retry_after)
                await close_within(ws, CLOSE_DEADLINE, TRY_AGAIN_LATER, refusal.reason)
                return
            claims = self._claims.pop(ws, None)
            expiry = asyncio.create_task(self.expire(ws, claims, timeline, source)) if claims else None
            try:
                await handler(ws)
            finally:
                if expiry is not None:
                    expiry.cancel()

        guarded.__qualname__ = getattr(handler, "__qualname__", "handler")  # handler errors name your handler
        return guarded

    async def expire(self, ws: ServerConnection, claims: Claims, timeline: Timeline, source: str) -> None:
        """Close ``ws`` with 4401 "token expired" the moment its token expires."""
        assert self.auth is not None
        await asyncio.sleep(max(0.0, claims.expires - self.auth.clock()))
        timeline.record(source, EventKind.EXPIRED, code=TOKEN_EXPIRED, detail=f"{claims.subject}'s token expired")
        await close_within(ws, CLOSE_DEADLINE, TOKEN_EXPIRED, "token expired")

    def __repr__(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (("origins", self.origins), ("auth", self.auth),
                 ("admission", self.admission), ("limits", self.limits)) if value is not None]
        return f"Gate({', '.join(parts + [f'max_size={self.max_size}', f'open_timeout={self.open_timeout}'])})"

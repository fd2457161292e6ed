"""Short-lived tokens, signed with the standard library: mint one, check one in the opening handshake.

A token says who the client is and until when, and a signature proves the
server (or a login service sharing its secret) issued it::

    alice.1767225600.125.Xk3...    subject . expires (Unix seconds) . HMAC-SHA256, base64url

:class:`TokenSigner` mints and verifies them, without I/O (pass ``now`` to
test it). Why not a JWT (PyJWT)? A JWT signed with HS256 is this same HMAC,
with JSON and base64 around the claims: worth its dependency when tokens
come from an identity provider (standard claims, public keys, key rotation),
not for a lab whose server and clients share a secret in one process.

The browser's ``WebSocket`` cannot set headers, so the token rides in the
URL (``?token=...``); a Python client may send ``Authorization: Bearer ...``
instead. Both are read by :func:`token_of`. A token in a URL lands in access
logs: one reason to keep its lifetime short, and to check it at every
handshake. The server refuses a handshake without a valid token with HTTP
401, and closes a live connection when its token expires, with the
application code :data:`TOKEN_EXPIRED` (4401, "token expired"): the client
should come back with a fresh token (:mod:`wslab.servers.gate` does both).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from websockets.http11 import Request

__all__ = ["TOKEN_EXPIRED", "Claims", "TokenError", "TokenSigner", "token_of"]

# The close code for "your token expired: reconnect with a fresh one": 4000 + HTTP's 401, as in the
# graphql-ws protocol. Codes 4000-4999 are private: client and server agree on their meaning
# (wslab.clients.closecodes.REFRESH is the client's side).
TOKEN_EXPIRED = 4401

_SUBJECT = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Claims:
    """What a valid token says: who, and until when (Unix seconds)."""

    subject: str
    expires: float


class TokenError(Exception):
    """A token that does not let the client in; the message says why in one line (sent in the 401 body)."""


class TokenSigner:
    """Mints and verifies short-lived tokens with HMAC-SHA256.

    Args:
        secret: The shared secret (bytes; at least 16 of them).
        lifetime: Seconds a minted token stays valid.
        clock: Unix seconds (a wall clock: tokens cross machines); inject a fake one to test.
    """

    def __init__(self, secret: bytes, *, lifetime: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes, e.g. os.urandom(32)")
        if not lifetime > 0:
            raise ValueError(f"lifetime must be a positive number of seconds, not {lifetime!r}")
        self._secret = secret
        self.lifetime = lifetime
        self.clock = clock

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, subject: str, *, now: float | None = None, lifetime: float | None = None) -> str:
        """A token for ``subject`` (letters, digits, ``_`` and ``-``), valid ``lifetime`` seconds from ``now``."""
        if not _SUBJECT.fullmatch(subject):
            raise ValueError(f"subject must be 1-64 letters, digits, _ or -, not {subject!r}")
        now = self.clock() if now is None else now
        payload = f"{subject}.{now + (self.lifetime if lifetime is None else lifetime):.3f}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None, *, now: float | None = None) -> Claims:
        """The token's :class:`Claims` if it is genuine and not expired.

        Raises:
            TokenError: missing, malformed, forged (bad signature) or expired.
        """
        if not token:
            raise TokenError("token missing")
        subject, _, rest = token.partition(".")
        expires_text, _, signature = rest.rpartition(".")
        try:
            expires = float(expires_text)
        except ValueError:
            raise TokenError("token malformed") from None
        # compare_digest takes as long whatever the first wrong byte: no timing hint for a forger.
        if not hmac.compare_digest(signature, self._sign(f"{subject}.{expires_text}")):
            raise TokenError("token signature invalid")
        now = self.clock() if now is None else now
        if now >= expires:
            raise TokenError(f"token expired {now - expires:.1f} s ago")
        return Claims(subject, expires)

    def url(self, url: str, subject: str, *, now: float | None = None) -> str:
        """``url`` with a fresh token for ``subject`` in its query (``?token=...``), any old one replaced."""
        parts = urllib.parse.urlsplit(url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "token"]
        query.append(("token", self.mint(subject, now=now)))
        return urllib.parse.urlunsplit(parts._replace(path=parts.path or "/", query=urllib.parse.urlencode(query)))

    def __repr__(self) -> str:
        return f"TokenSigner(lifetime={self.lifetime})"  # never the secret


def token_of(request: Request) -> str | None:
    """The token of a handshake request: ``Authorization: Bearer ...``, else ``?token=`` in the URL."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query).get("token")
    return values[0] if values else None

"""Reference solution for notebook 08's exercise: the front door, and a fresh token for every attempt.

Load it into a cell with ``%load solutions/08-hardening.py``, run it, then the check again.
"""

from wslab.servers import TokenError, TokenSigner


def admit(origin: str | None, token: str | None, app_origin: str, signer: TokenSigner) -> int | None:
    """The server's decision at the opening handshake: None lets it in, or the HTTP status that refuses it.

    origin:     the page that opened the socket (the Origin header); None from a client that is not a browser
    token:      the token the client sent (?token=... in the URL, or Authorization: Bearer ...), or None
    app_origin: the one origin whose pages may connect, e.g. "http://127.0.0.1:8000"
    signer:     signer.verify(token) returns the token's claims, or raises TokenError (missing, forged, expired)
    """
    if origin is not None and origin != app_origin:
        return 403  # a page on another site: the browser sent the victim's cookies, not the victim's intent
    try:
        signer.verify(token)
    except TokenError:
        return 401  # no token, a forged one, or an expired one: who are you?
    return None


def url_for_attempt(signer: TokenSigner, server_url: str) -> str:
    """The URL the reconnecting client uses for its next attempt: the server's URL with a token in it."""
    return signer.url(server_url, "alice")  # minted now, for this attempt: valid when the handshake happens

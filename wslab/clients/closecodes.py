"""WebSocket close codes (RFC 6455, section 7.4), and whether a client should reconnect after each.

A browser hands ``onclose`` a ``CloseEvent`` with a ``code``; websockets
reports the same number as ``ws.close_code``. This module names every code
and holds the table a reconnecting client reads to decide what to do::

    >>> describe(1006)
    '1006 abnormal closure: the connection ended without a close frame (never sent on the wire)'
    >>> should_retry(1008)
    False

The table is a plain dict, visible and configurable. Keys are codes or
ranges of codes; an exact code wins over a range::

    my_table = {**RETRY, 4000: True}    # our server's 4000 means "come back later"
    ReconnectingClient(url, retry_table=my_table)

A close the *user* asked for (``client.close()``) never reconnects, whatever
the table says: that decision is made before the table is read.

:func:`after_close` splits "retry" in two, for a page's ``onclose``: retry
soon after a planned goodbye (1001, 1012), back off after anything else::

    >>> after_close(1012), after_close(1006, was_clean=False), after_close(1008)
    (<AfterClose.RETRY: 'retry'>, <AfterClose.BACK_OFF: 'back off'>, <AfterClose.STOP: 'stop'>)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CloseCode", "CODES", "RETRY", "RETRY_SOON", "REFRESH", "HTTP_RETRY", "AfterClose", "after_close",
    "describe", "name", "should_retry", "retry_reason", "status_reason", "table",
]


@dataclass(frozen=True)
class CloseCode:
    """One registered close code.

    Attributes:
        code: The number.
        name: Its short name in RFC 6455.
        meaning: One line: when an endpoint uses it.
        on_the_wire: False for the codes that are only *reported* locally
            (1005, 1006, 1015) and must never be sent in a close frame.
    """

    code: int
    name: str
    meaning: str
    on_the_wire: bool = True


CODES: dict[int, CloseCode] = {c.code: c for c in [
    CloseCode(1000, "normal closure", "the purpose of the connection is fulfilled"),
    CloseCode(1001, "going away", "the server is shutting down or the browser left the page"),
    CloseCode(1002, "protocol error", "the peer broke the WebSocket protocol"),
    CloseCode(1003, "unsupported data", "the peer got a type of data it cannot accept (e.g. binary)"),
    CloseCode(1005, "no status received", "a close frame arrived without a code", on_the_wire=False),
    CloseCode(1006, "abnormal closure", "the connection ended without a close frame", on_the_wire=False),
    CloseCode(1007, "invalid payload data", "a message was not valid for its type (e.g. bad UTF-8)"),
    CloseCode(1008, "policy violation", "the peer broke a rule of the application (e.g. not allowed)"),
    CloseCode(1009, "message too big", "a message was larger than the peer accepts"),
    CloseCode(1010, "mandatory extension", "the server did not negotiate an extension the client needs"),
    CloseCode(1011, "internal error", "the server hit an unexpected condition (or a keepalive ping timed out)"),
    CloseCode(1012, "service restart", "the server is restarting: reconnect in a moment"),
    CloseCode(1013, "try again later", "the server is overloaded: reconnect later"),
    CloseCode(1014, "bad gateway", "a gateway or proxy got an invalid answer from upstream"),
    CloseCode(1015, "TLS handshake failure", "the TLS handshake failed", on_the_wire=False),
]}


def name(code: int | None) -> str:
    """A short name for any code, registered or not: ``name(4001) == 'private (4000-4999)'``."""
    if code is None:
        return "no code"
    if code in CODES:
        return CODES[code].name
    if 3000 <= code <= 3999:
        return "registered (3000-3999)"
    if 4000 <= code <= 4999:
        return "private (4000-4999)"
    return "unassigned"


def describe(code: int | None) -> str:
    """``code``, its name and its meaning, in one line."""
    if code is None:
        return "no code: the connection is not closed"
    if code in CODES:
        c = CODES[code]
        tail = "" if c.on_the_wire else " (never sent on the wire)"
        return f"{code} {c.name}: {c.meaning}{tail}"
    if 3000 <= code <= 3999:
        return f"{code} registered (3000-3999): defined by a library or framework, registered with IANA"
    if 4000 <= code <= 4999:
        return f"{code} private (4000-4999): defined by this application, agreed between client and server"
    return f"{code} unassigned: not a valid close code"


# Whether to reconnect after a close with this code. Exact codes win over ranges.
RETRY: dict[int | range, bool] = {
    # The server closed on purpose and would do it again: reconnecting repeats the same failure.
    1002: False,  # protocol error: our bytes are wrong, they will be wrong again
    1003: False,  # unsupported data: same messages, same answer
    1007: False,  # invalid payload: same
    1008: False,  # policy violation: e.g. not authorised; hammering it does not help
    1009: False,  # message too big: same
    1010: False,  # mandatory extension: a configuration mismatch, not a glitch
    1015: False,  # TLS handshake failure: certificates don't fix themselves
    range(3000, 4000): False,  # registered codes (3000 unauthorized, 3003 forbidden): mostly auth
    range(4000, 5000): False,  # private codes: application policy (banned, kicked, logged out)
    # Transient: the server or the network will be back.
    1000: True,   # normal closure *from the server* (the user's own close never retries)
    1001: True,   # going away: the server is shutting down, another one will take over
    1005: True,   # no status: the server closed without saying why
    1006: True,   # abnormal: the link died (reset, vanished peer, killed process)
    1011: True,   # internal error, also a keepalive ping timeout
    1012: True,   # service restart
    1013: True,   # try again later
    1014: True,   # bad gateway
}

# Codes after which a client that can get fresh credentials reconnects with them, backoff started
# over: the server closed because the credentials expired, not because anything failed. 4401 is
# this lab's "token expired" (wslab.servers.auth): 4000 + the HTTP status a handshake would get,
# as the graphql-ws protocol does (4401 unauthorized, 4403 forbidden). Private codes mean only
# what client and server agree on: notebook 03's server closes with 4001 "banned", which stops.
REFRESH: frozenset[int] = frozenset({4401})

# After a refused opening handshake: the HTTP status, and whether to try again. websockets'
# own rule (websockets.client.process_exception) retries 500, 502, 503 and 504; this table adds
# 429, and says why. A status not listed here stops: the same request gets the same answer.
HTTP_RETRY: dict[int, tuple[bool, str]] = {
    400: (False, "bad request: the handshake itself is wrong"),
    401: (False, "unauthorized: the credentials were refused (missing, forged or expired), fresh ones too"),
    403: (False, "forbidden: this origin or this user may not connect"),
    404: (False, "not found: wrong URL"),
    426: (False, "upgrade required: not a WebSocket handshake"),
    429: (True, "too many requests: wait at least Retry-After"),
    431: (False, "header fields too large: the same headers get the same answer"),
    500: (True, "internal server error"),
    502: (True, "bad gateway: the proxy could not reach the server"),
    503: (True, "service unavailable: busy or full; wait at least Retry-After"),
    504: (True, "gateway timeout: the proxy gave up waiting for the server"),
}


def status_reason(status: int) -> str:
    """One line saying whether to retry after a handshake refused with HTTP ``status``, and why."""
    retry, why = HTTP_RETRY.get(status, (False, "not in the table: the same request gets the same answer"))
    return f"{'retry' if retry else 'stop'}: HTTP {status} {why}"


def _lookup(code: int, table: dict[int | range, bool]) -> tuple[bool, int | range] | None:
    if code in table:
        return table[code], code
    for key, retry in table.items():
        if isinstance(key, range) and code in key:
            return retry, key
    return None


def should_retry(code: int | None, table: dict[int | range, bool] = RETRY, *, default: bool = True) -> bool:
    """Whether a client should reconnect after a close with ``code``.

    ``None`` (no close code at all) counts as 1006. Codes the table doesn't
    list use ``default``: reconnecting is what ReconnectingWebSocket always does.
    """
    found = _lookup(1006 if code is None else code, table)
    return default if found is None else found[0]


def retry_reason(code: int | None, table: dict[int | range, bool] = RETRY, *, default: bool = True) -> str:
    """One line saying what the table decides for ``code`` and which entry decided it."""
    code = 1006 if code is None else code
    found = _lookup(code, table)
    if found is None:
        verdict, why = default, "not in the table: default"
    else:
        verdict, key = found
        why = f"table entry {key.start}-{key.stop - 1}" if isinstance(key, range) else "table entry"
    return f"{'retry' if verdict else 'stop'}: {describe(code)} ({why})"


class AfterClose(StrEnum):
    """What a client does after a close, in three words; also plain strings (``AfterClose.STOP == "stop"``)."""

    RETRY = "retry"  # reconnect soon: after a short random delay, and the backoff starts over
    BACK_OFF = "back off"  # reconnect, but wait longer after each failure (exponential backoff with jitter)
    STOP = "stop"  # don't reconnect: tell the user (log in again, reload)


# Among the codes RETRY reconnects after, the planned goodbyes: the server is going away or
# restarting on purpose (a deploy), and a new one listens in a moment. Every other close worth
# retrying means something failed, or nobody said why: back off.
RETRY_SOON: frozenset[int] = frozenset({1001, 1012})


def after_close(
    code: int | None, was_clean: bool = True, table: dict[int | range, bool] = RETRY, soon: frozenset[int] = RETRY_SOON
) -> AfterClose:
    """Stop, retry soon, or back off, after a close with ``code`` (notebook 03's exercise).

    ``table`` decides whether to reconnect at all (:func:`should_retry`). A
    planned goodbye (a code in ``soon``) is retried soon. Anything else worth
    retrying is a failure: back off. So is a close whose closing handshake did
    not complete (``wasClean`` false), whatever its code.
    """
    if not should_retry(code, table):
        return AfterClose.STOP
    if was_clean and code in soon:
        return AfterClose.RETRY
    return AfterClose.BACK_OFF


class _Table:
    """The retry table as rows: text in a terminal and nbval, HTML in JupyterLab."""

    def __init__(self, table: dict[int | range, bool]) -> None:
        self.rows = []
        for key in sorted(table, key=lambda k: k.start if isinstance(k, range) else k):
            label = f"{key.start}-{key.stop - 1}" if isinstance(key, range) else str(key)
            self.rows.append([label, name(key.start if isinstance(key, range) else key),
                              "retry" if table[key] else "stop"])

    def __str__(self) -> str:
        rows = [["code", "name", "decision"]] + self.rows
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        head = "<tr><th>code</th><th>name</th><th>decision</th></tr>"
        return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def table(retry_table: dict[int | range, bool] = RETRY) -> _Table:
    """The retry table, sorted by code, for display."""
    return _Table(retry_table)

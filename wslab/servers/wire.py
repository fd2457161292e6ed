"""The lab's one wire format for numbered broadcasts, and the "resync" control message.

Every lab server that numbers its broadcasts sends them the same way, in one
frame each: the sequence number, the send time, then the data::

    42 81237.512004 hello everyone

The frame is binary when the data is bytes, text when it is a string. The
send time is ``time.monotonic()`` on the server, so a receiver on the same
machine can compute the latency. A browser splits it with
``message.split(" ", 3)``.

A server that cannot replay a reconnecting client's gap sends, in a text frame::

    resync 10 19 35        (missed 10 to 19; live messages go on from 35)
    resync - - 35          (last_seq was from the future: the numbering restarted)

Anything else is not the lab's: :func:`decode` returns it as :class:`Other`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Numbered", "Resync", "Other", "encode", "encode_resync", "decode", "stamp", "unstamp"]


@dataclass(frozen=True)
class Numbered:
    """A numbered broadcast: its number, when the server sent it (monotonic seconds), its data."""

    seq: int
    sent_at: float
    data: bytes | str


@dataclass(frozen=True)
class Resync:
    """The server cannot replay the gap: ``missed`` (first, last) is lost, live messages go on from ``next_seq``."""

    missed: tuple[int, int] | None
    next_seq: int


@dataclass(frozen=True)
class Other:
    """A message that is not in the lab's format (another server's), unchanged."""

    data: bytes | str


def encode(seq: int, data: bytes | str = b"", *, sent_at: float | None = None) -> bytes | str:
    """``seq``, the send time (now, unless given) and ``data``, as one frame; bytes in, bytes out."""
    sent_at = time.monotonic() if sent_at is None else sent_at
    header = f"{seq} {sent_at:.6f} "
    return header.encode() + data if isinstance(data, bytes) else header + data


def encode_resync(missed: tuple[int, int] | None, next_seq: int) -> str:
    """The control message for a gap the server cannot replay."""
    first, last = missed if missed is not None else ("-", "-")
    return f"resync {first} {last} {next_seq}"


def decode(raw: bytes | str) -> Numbered | Resync | Other:
    """What a frame is: a :class:`Numbered` broadcast, a :class:`Resync`, or :class:`Other`."""
    head = raw[:64]  # the header is short: never decode a whole 64 KiB payload
    text = head.decode("latin-1") if isinstance(head, bytes) else head  # latin-1: any bytes, 1:1
    parts = text.split(" ", 3)
    try:
        if parts[0] == "resync" and len(parts) == 4:
            missed = None if parts[1] == "-" else (int(parts[1]), int(parts[2]))
            return Resync(missed, int(parts[3]))
        seq, sent_at = int(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        return Other(raw)
    header = len(parts[0]) + len(parts[1]) + 2
    return Numbered(seq, sent_at, raw[header:])


def stamp(seq: int, payload: bytes = b"") -> bytes:
    """A numbered broadcast sent now, as bytes: :func:`encode` for a bytes payload."""
    frame = encode(seq, payload)
    assert isinstance(frame, bytes)
    return frame


def unstamp(message: bytes | str) -> tuple[int, float]:
    """The sequence number and send time of a numbered broadcast.

    Raises:
        ValueError: the message is not a numbered broadcast.
    """
    decoded = decode(message)
    if not isinstance(decoded, Numbered):
        raise ValueError(f"not a numbered broadcast: {message[:40]!r}")
    return decoded.seq, decoded.sent_at

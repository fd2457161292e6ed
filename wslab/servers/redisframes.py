"""The backplane's frames in Redis: numbered by one Lua script, published, kept in a stream.

:class:`~wslab.servers.backplane.BackplaneServer` runs :data:`PUBLISH` for each
broadcast and :data:`HELLO` on each connection to Redis; :func:`unpack` turns
what Redis pushes or keeps back into the lab's frame, ``SEQ SENT_AT data``;
:func:`read_stream` reads a range of numbers back from the stream, for a
process catching up or a client resuming.

Why pub/sub for the live path, and not each process looping on ``XREAD BLOCK``
on the stream? Not speed: measured (``benchmarks/bench_backplane.py``, part 3,
one reader process, 100 to 2,000 frames/s on this lab's 2-core machine) the
two are within noise of each other, p50 0.4-1.2 ms for both. Three reasons:
PUBLISH keeps Redis's fan-out stateless (no cursor per process, no command per
batch from each reader); it is what real adapters do (Socket.IO's Redis
adapter); and its weakness is the lesson. Pub/sub is at-most-once: a frame
published while a subscriber is disconnected is gone for it. An XREAD loop
would resume from its cursor and hide that; here BackplaneServer reads the gap
from the stream after each reconnect (``catch_up``), and notebook 07 switches
that off to show what pub/sub alone loses. Pub/sub to be pushed, the stream to
be complete.
"""

from __future__ import annotations

import redis.asyncio

__all__ = ["PUBLISH", "HELLO", "unpack", "read_stream"]

# KEYS: counter, stream, channel. ARGV: maxlen, "t" (text) or "b" (binary), the frame's tail.
# The tail is wire.encode()'s frame without its number ("SENT_AT data"): the number is only
# known here, and putting it in front makes the frame "SEQ SENT_AT data", the lab's one format.
# Redis carries bytes only, so one letter in front says whether the frame was text or binary.
# The stream entry's id is 0-SEQ, so XRANGE can ask for numbers directly.
PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
local packed = ARGV[2] .. seq .. ' ' .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq, 'f', packed)
redis.call('PUBLISH', KEYS[3], packed)
return seq
"""

# KEYS: epoch, counter. ARGV: a new epoch id. Returns the epoch and the last number given out.
# The first process to reach a Redis sets the epoch; a Redis that restarted empty has none,
# so a new one tells every process that the numbering (and the stream) started again.
HELLO = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
"""


def unpack(packed: bytes) -> tuple[int, bytes | str]:
    """``b"t42 81237.5 hello"`` -> ``(42, "42 81237.5 hello")``: the number, and the frame as it was sent.

    Raises:
        ValueError: ``packed`` is not what the PUBLISH script makes.
    """
    if packed[:1] not in (b"t", b"b"):
        raise ValueError(f"not a backplane frame: {packed[:40]!r}")
    frame = packed[1:]
    seq = int(frame[: frame.index(b" ")])  # int() and index() raise ValueError too
    return seq, frame.decode() if packed[:1] == b"t" else frame


async def read_stream(
    client: redis.asyncio.Redis, stream: str, first: int, last: int,
) -> tuple[list[tuple[int, bytes | str]], list[str]]:
    """``XRANGE`` from number ``first`` to ``last``: the frames the stream still holds, and what it ignored.

    Returns ``(number, frame as sent)`` for each of PUBLISH's entries, in order,
    and one line for each entry that is not one of them (someone else's ``XADD``):
    skipped, as someone else's ``PUBLISH`` is on the channel.
    """
    frames, ignored = [], []
    entries = await client.xrange(stream, f"0-{first}", f"0-{last}")
    for entry_id, fields in entries or []:  # redis-py's types allow None for an empty reply
        packed = fields.get(b"f") if fields else None
        try:
            if not isinstance(packed, bytes):
                raise ValueError(f"no frame in entry {entry_id!r}")
            frames.append(unpack(packed))
        except ValueError as exc:
            ignored.append(f"ignored stream entry: {exc}")
    return frames, ignored

"""The backplane's side in Redis: three Lua scripts, and the frames they keep.

:class:`~wslab.servers.backplane.BackplaneServer` keeps three things in Redis,
under a prefix (``wslab:`` by default): a counter (``seq``), a stream of the
recent frames (``stream``, bounded by ``XADD MAXLEN ~``) and a pub/sub channel
(``broadcasts``); plus an ``epoch`` that changes when Redis restarted empty.
Each script runs atomically, so the numbers, the stream and the pub/sub order
always agree.

Why pub/sub for the live path, and not each process looping on ``XREAD BLOCK``
on the stream? Not speed: measured (``benchmarks/bench_backplane.py``, part 3,
one reader process, 100 to 2,000 frames/s on this lab's 2-core machine) the
two are within noise of each other, p50 0.4-1.2 ms for both. Three reasons:
PUBLISH keeps Redis's fan-out stateless (no cursor per process, no command per
batch from each reader); it is what real adapters do (Socket.IO's Redis
adapter); and its weakness is the lesson. Pub/sub is at-most-once: a frame
published while a subscriber is disconnected is gone for it. An XREAD loop
would resume from its cursor and hide that; here the process reads the gap
from the stream after each reconnect (``catch_up``), and notebook 07 switches
that off to show what pub/sub alone loses. Pub/sub to be pushed, the stream to
be complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["HELLO", "PUBLISH", "WINDOW", "read_range", "unpack"]

# KEYS: counter, stream, channel. ARGV: maxlen, "t" (text) or "b" (binary), the frame's tail.
# The tail is wire.encode()'s frame without its number ("SENT_AT data"): the number is only
# known here, and putting it in front makes the frame "SEQ SENT_AT data", the lab's one format.
# Redis carries bytes only, so one letter in front says whether the frame was text or binary.
PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
local packed = ARGV[2] .. seq .. ' ' .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq, 'f', packed)
redis.call('PUBLISH', KEYS[3], packed)
return seq
"""

# KEYS: counter, stream. Returns the oldest number the stream holds and the last one given out, read
# at one instant (a script runs atomically): the window a resuming client's gap is judged against.
WINDOW = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 then return {newest + 1, newest} end
return {tonumber(string.sub(first[1][1], 3)), newest}
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


async def read_range(
    client: redis.asyncio.Redis, stream: str, first: int, last: int,
) -> tuple[list[tuple[int, bytes | str]], list[str]]:
    """The frames numbered ``first`` to ``last`` that ``stream`` still holds, in order, and what it skipped.

    Returns ``(number, frame as sent)`` for each of PUBLISH's entries (numbered ``0-SEQ``, so a
    range of numbers is a range of entry ids), and one line for each entry that is not one of them
    (someone else's ``XADD``): skipped, as someone else's message on the channel is.
    """
    frames: list[tuple[int, bytes | str]] = []
    skipped: list[str] = []
    entries = await client.xrange(stream, f"0-{first}", f"0-{last}")
    for entry_id, fields in entries or []:  # redis-py's types allow None for an empty reply
        packed = fields.get(b"f") if fields else None  # the backplane's clients never decode: bytes
        try:
            if not isinstance(packed, bytes):
                raise ValueError(f"no frame in entry {entry_id!r}")
            frames.append(unpack(packed))
        except ValueError as exc:
            skipped.append(f"ignored stream entry: {exc}")
    return frames, skipped

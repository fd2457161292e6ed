"""Where a reconnecting client's broadcasts start again: replay its gap, or tell it to resync.

A client that comes back puts the last number it saw in the URL
(``?last_seq=N``). The server holds a window of recent broadcasts, numbered
``oldest`` to ``newest``: the Redis stream of
:class:`~wslab.servers.backplane.BackplaneServer`. What to do is a pure
function of those three numbers, :func:`plan_resume`:

=============================  =====================================  ==========================================
the client                     answer                                 it gets
=============================  =====================================  ==========================================
new: no ``last_seq``           ``None``                               live broadcasts only
gap inside the window          ``Replay(last_seq + 1, newest)``       its gap from the window, then live ones
gap older than the window      ``Resync((last_seq + 1, oldest - 1),   ``resync``, what the window holds, then
                               oldest)``                              live ones
``last_seq`` beyond ``newest`` ``Resync(None, newest + 1)``           ``resync``, then live ones
=============================  =====================================  ==========================================

The server carries the answer out (:func:`resume_steps` turns it into the
frames to send, also pure), so that the decision can be read, tested and
swapped on its own: notebook 07's exercise has you write it, and its check
runs your function inside a real BackplaneServer.

Limit: Redis here keeps nothing on disk. A client that was away while Redis
restarted, and comes back after the new numbering has passed its ``last_seq``,
is replayed frames of the new numbering as if they were its gap: nothing in
``?last_seq=N`` says which numbering N belongs to. Redis with persistence
(``appendonly yes``), or an epoch in the protocol, closes that hole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .wire import Resync

__all__ = ["Replay", "Resync", "ResumeFunction", "ResumeSteps", "plan_resume", "resume_steps"]


@dataclass(frozen=True)
class Replay:
    """Send broadcasts ``first`` to ``last`` (both included) from the window, then live ones.

    Empty when ``first > last``: a client that is up to date gets live broadcasts only.
    """

    first: int
    last: int


# What a resume decision returns: Replay, Resync (the wire's "resync" message: what the client
# missed for good, and the number its broadcasts go on from), or None (live broadcasts only).
ResumeAnswer = Replay | Resync | None
# plan_resume's signature: (last_seq, oldest, newest) -> answer. Any function of this shape will do.
ResumeFunction = Callable[[int | None, int, int], ResumeAnswer]


def plan_resume(last_seq: int | None, oldest: int, newest: int) -> Replay | Resync | None:
    """What a client that comes back with ``last_seq`` gets, when the window holds ``oldest`` to ``newest``.

    Args:
        last_seq: The last number the client saw; None for a client that never saw one.
        oldest: The oldest number the window still holds (``newest + 1`` when it is empty).
        newest: The last number given out so far.
    """
    if last_seq is None:
        return None  # a new client has nothing to catch up on: live broadcasts only
    if last_seq > newest:
        # A number never given out: the numbering started again (Redis restarted empty), so
        # N means nothing now. The client must reload its state, then take the new numbers.
        return Resync(None, newest + 1)
    if last_seq + 1 < oldest:
        # The window was trimmed past the start of the gap: say what is lost for good,
        # then go on with everything the window still holds.
        return Resync((last_seq + 1, oldest - 1), oldest)
    return Replay(last_seq + 1, newest)  # the whole gap is held (empty if the client is up to date)


@dataclass(frozen=True)
class ResumeSteps:
    """What the server sends a resuming client, in order.

    Attributes:
        resync: First, this ``resync`` message, if any.
        replay: Then the broadcasts numbered ``(first, last)``, read from the window; None: none.
        live_after: Then live broadcasts numbered above this (those up to it were in the window
            when the client came back); None: every live broadcast from the moment it connected.
    """

    resync: Resync | None
    replay: tuple[int, int] | None
    live_after: int | None


def resume_steps(answer: object, oldest: int, newest: int) -> ResumeSteps:
    """Turn a resume answer (:func:`plan_resume`'s, or yours) into what the server sends.

    The server does what the answer says, even when it is wrong: a replay that
    starts before ``oldest`` sends what the window holds, with a hole the
    client will see; one that ends before ``newest`` never sends the rest.

    Raises:
        TypeError: ``answer`` is not a Replay, a Resync or None (the message says what it was).
    """
    if answer is None:
        return ResumeSteps(None, None, None)
    if isinstance(answer, Replay) and _is_int(answer.first) and _is_int(answer.last):
        first, last = max(answer.first, 0), min(answer.last, newest)  # the window holds nothing else
        return ResumeSteps(None, (first, last) if first <= last else None, newest)
    if isinstance(answer, Resync) and _is_int(answer.next_seq) and (answer.missed is None or (
            isinstance(answer.missed, (tuple, list)) and len(answer.missed) == 2 and all(map(_is_int, answer.missed)))):
        first = max(answer.next_seq, 0)
        replay = (first, newest) if first <= newest else None  # "go on from next_seq": from the window first
        return ResumeSteps(answer, replay, max(newest, answer.next_seq - 1))
    raise TypeError(f"returned {answer!r}: return Replay(first, last), Resync(missed, next_seq) or None")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

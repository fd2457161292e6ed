"""Reference solution for notebook 07's exercise: where a reconnecting client's broadcasts start again.

Load it into a cell with ``%load solutions/07-resume.py``, run it, then the check again.
"""

from wslab.servers.resume import Replay, Resync


def decide_resume(last_seq: int | None, oldest: int, newest: int) -> Replay | Resync | None:
    """What a client that connects with ``last_seq`` gets, when the stream holds ``oldest`` to ``newest``.

    last_seq: the last number the client saw, or None for a client that never saw one.
    oldest:   the oldest number the Redis stream still holds (newest + 1 when it is empty).
    newest:   the last number given out so far.
    """
    if last_seq is None:
        return None  # a new client: live broadcasts only
    if last_seq > newest:
        return Resync(None, newest + 1)  # a number never given out: the numbering started again
    if last_seq + 1 < oldest:
        return Resync((last_seq + 1, oldest - 1), oldest)  # trimmed: say what is lost, replay the rest
    return Replay(last_seq + 1, newest)  # the whole gap is in the stream (empty if up to date)

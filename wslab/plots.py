"""Plots for the notebooks: each function takes measured samples and returns a Figure.

Every plot has a title and axis labels with units. The functions only draw:
the notebook measures, then passes its samples here. They don't depend on
each other, so a notebook can use one without the others.

In a notebook, assign the result (``fig = plots.session_map(samples)``): the
inline backend shows the figure once when the cell ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["session_map", "broadcast_latency"]


def _marks(ax, marks: Mapping[str, float] | None, *, label: bool = True) -> None:
    """Dashed vertical lines at the times of events, labelled at the top of ``ax``."""
    for text, t in (marks or {}).items():
        ax.axvline(t, color="0.4", linestyle="--", linewidth=1)
        if label:
            ax.annotate(
                text, xy=(t, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                textcoords="offset points", ha="left", va="top", fontsize=8, color="0.3", rotation=90,
            )


def session_map(
    samples: Sequence[tuple[float, int, int]],
    *,
    marks: Mapping[str, float] | None = None,
    title: str = "The naive server's session map only grows",
) -> Figure:
    """Sessions kept in the map against connections really open, over time.

    Args:
        samples: ``(t, sessions, open_connections)``: seconds on the lab's
            timeline, ``len(server.sessions)``, ``len(lab_server.connections)``.
        marks: Optional events to draw as vertical lines, ``{"label": t}``.
        title: The figure's title.
    """
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = [s[0] for s in samples]
    ax.step(t, [s[1] for s in samples], where="post", label="sessions in the map")
    ax.step(t, [s[2] for s in samples], where="post", label="connections really open")
    _marks(ax, marks)
    ax.set_title(title)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("count (sessions)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")  # the upper left stays free for the marks' labels
    fig.tight_layout()
    return fig


def broadcast_latency(
    samples: Iterable[tuple[str, float, float]],
    *,
    marks: Mapping[str, float] | None = None,
    until: float | None = None,
    title: str = "Healthy clients behind one stalled client",
) -> Figure:
    """Each healthy client's message latency, and how long since its last message.

    Top: one dot per message received, its latency (receive time minus the
    send time in its :func:`~wslab.servers.stamp`), on a log scale. Bottom:
    seconds since the client's last message, which grows in a straight line
    while a client starves.

    Args:
        samples: ``(client, t, latency)``: a client's name, when it received a
            message (seconds on the lab's timeline) and the latency in seconds.
        marks: Optional events to draw as vertical lines, ``{"label": t}``.
        until: Where the time axis ends (default: the last sample).
        title: The figure's title.
    """
    by_client: dict[str, list[tuple[float, float]]] = {}
    for client, t, latency in samples:
        by_client.setdefault(client, []).append((t, latency))
    end = until if until is not None else max((t for points in by_client.values() for t, _ in points), default=0.0)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for client, points in sorted(by_client.items()):
        points.sort()
        times = [t for t, _ in points]
        line = top.plot(times, [latency * 1000 for _, latency in points], ".", markersize=3, label=client)[0]
        # Time since the last message, on a 10 ms grid from the first message to the end.
        grid, since, i, step = [], [], 0, 0.01
        now = times[0]
        while now <= end:
            while i + 1 < len(times) and times[i + 1] <= now:
                i += 1
            grid.append(now)
            since.append(now - times[i])
            now += step
        bottom.plot(grid, since, color=line.get_color(), label=client)
    _marks(top, marks)
    _marks(bottom, marks, label=False)
    top.set_title(title)
    top.set_yscale("log")
    top.set_ylabel("latency (ms, log scale)")
    top.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper left", fontsize=8)  # the top panel carries the marks' labels
    bottom.set_ylabel("time since last message (s)")
    bottom.set_xlabel("time (s)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig

"""Plots for the notebooks: each function takes measured samples and returns a Figure.

Every plot has a title and axis labels with units. The functions only draw:
the notebook measures, then passes its samples here. They don't depend on
each other, so a notebook can use one without the others.

In a notebook, assign the result (``fig = plots.session_map(samples)``): the
inline backend shows the figure once when the cell ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .contention import Study
    from .simulate import HerdResult

__all__ = [
    "session_map", "broadcast_latency", "delay_spread", "attempts_per_bin", "fraction_back", "contention", "mark_times",
]


def mark_times(
    ax: Axes, marks: Mapping[str, float] | None, *, label: bool = True, color: str = "0.4", linestyle: str = "--",
    side: str = "right",
) -> None:
    """Vertical lines at the times of events, labelled at the top of ``ax``, on the ``side`` of each line."""
    for text, t in (marks or {}).items():
        ax.axvline(t, color=color, linestyle=linestyle, linewidth=1.2)
        if label:
            ax.annotate(
                text, xy=(t, 1), xycoords=("data", "axes fraction"), xytext=(3 if side == "right" else -5, -3),
                textcoords="offset points", ha="left" if side == "right" else "right", va="top", fontsize=8,
                color=color, rotation=90,
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
    mark_times(ax, marks)
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
    due: Mapping[str, float] | None = None,
    late: float = 1.0,
    until: float | None = None,
    title: str = "Healthy clients behind one stalled client",
) -> Figure:
    """Each healthy client's message latency, and how long since its last message.

    Top: one dot per message received, its latency (receive time minus the
    send time in its :func:`~wslab.servers.stamp`), on a log scale; messages
    at least ``late`` seconds late are drawn large, and the latest is
    labelled. Bottom: seconds since the client's last message, which grows in
    a straight line while a client starves.

    Args:
        samples: ``(client, t, latency)``: a client's name, when it received a
            message (seconds on the lab's timeline) and the latency in seconds.
        marks: Events that happened, drawn as dashed lines, ``{"label": t}``.
        due: Events that were due and did not happen (say, a keepalive ping),
            drawn as dotted red lines, ``{"label": t}``.
        late: Latency in seconds from which a message is drawn large.
        until: Where the time axis ends (default: the last sample).
        title: The figure's title.
    """
    by_client: dict[str, list[tuple[float, float]]] = {}
    for client, t, latency in samples:
        by_client.setdefault(client, []).append((t, latency))
    end = until if until is not None else max((t for points in by_client.values() for t, _ in points), default=0.0)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for client, points in sorted(by_client.items()):
        points.sort()
        times = [t for t, _ in points]
        line = top.plot(times, [latency * 1000 for _, latency in points], ".", markersize=3, label=client)[0]
        slow = [(t, latency) for t, latency in points if latency >= late]
        if slow:  # few, and the point of the plot: big enough to see, drawn over the lines
            top.plot([t for t, _ in slow], [latency * 1000 for _, latency in slow], "o", markersize=7,
                     color=line.get_color(), markeredgecolor="black", zorder=5)
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
    late_ones = [(t, latency, client) for client, points in by_client.items() for t, latency in points
                 if latency >= late]
    if late_ones:
        t, latency, _ = max(late_ones, key=lambda p: p[1])
        who = ",\n".join(sorted({client for _, _, client in late_ones}))
        top.annotate(  # on the right of the dot: the marks' labels are on the left of their lines
            f"{latency:.1f} s late:\n{who}", xy=(t, latency * 1000), xytext=(7, 0), textcoords="offset points",
            ha="left", va="top", fontsize=8,
        )
    # Labels on the left of their lines: the late messages arrive just after an event, on its right.
    mark_times(top, marks, side="left")
    mark_times(bottom, marks, label=False)
    mark_times(top, due, color="tab:red", linestyle=":", side="left")
    mark_times(bottom, due, label=False, color="tab:red", linestyle=":")
    top.set_title(title)
    top.set_yscale("log")
    top.set_ylim(top=top.get_ylim()[1] * 3)  # room above the latest message for the marks' labels
    top.set_ylabel("latency (ms, log scale)")
    top.grid(alpha=0.3, which="both")
    top.legend(loc="center left", fontsize=8, markerscale=3, title="message received by", title_fontsize=8)
    bottom.set_ylabel("time since last message (s)")
    bottom.set_xlabel("time on the lab's timeline (s)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- notebook 05: backoff delays, a herd's attempts over time, model against measurement --


def delay_spread(
    delays: Mapping[str, Sequence[Sequence[float]]],
    *,
    cap: float,
    title: str = "Delay before attempt n, over many seeds",
) -> Figure:
    """For each policy, the median delay per attempt number and the band holding 90 % of them.

    Args:
        delays: ``{policy: rows}``, one row per seed, ``rows[seed][n]`` = delay before attempt n.
        cap: The policies' ``max_delay``, drawn as a dashed line.
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, rows in delays.items():
        data = np.asarray(rows, dtype=float)
        n = np.arange(data.shape[1])
        low, mid, high = np.percentile(data, [5, 50, 95], axis=0)
        line = ax.plot(n, mid, marker=".", label=name)[0]
        ax.fill_between(n, low, high, color=line.get_color(), alpha=0.15)
    ax.axhline(cap, color="0.4", linestyle="--", linewidth=1)
    ax.annotate("cap", xy=(1, cap), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                textcoords="offset points", ha="right", fontsize=8, color="0.3")
    ax.set_title(title)
    ax.set_xlabel("attempt number n since the connection was lost")
    ax.set_ylabel("delay (s): median, 5-95 % band")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, cap * 1.1)
    fig.tight_layout()
    return fig


def attempts_per_bin(
    results: Mapping[str, HerdResult],
    *,
    bin: float = 0.1,
    until: float | None = None,
    title: str = "Reconnection attempts due per 100 ms",
) -> Figure:
    """One panel per strategy, on one y-scale: attempts due in each ``bin``, failed and accepted.

    A dashed line marks when the server was back; a dotted one the busiest
    ``bin`` seconds once it was back (:meth:`HerdResult.peak_attempts`, a sliding
    window: a wave that straddles two bars counts whole, so it can top them).
    """
    end = until if until is not None else max(
        max(r.attempt_times, default=0.0) for r in results.values()) + bin
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.6 * len(results) + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], results.items(), strict=True):
        ok = result.per_bin(bin, until=end, ok=True)
        failed = result.per_bin(bin, until=end, ok=False)
        edges = np.arange(len(ok) + 1) * bin
        # One filled staircase per series, not a bar per bin: hundreds of bars take seconds to draw.
        ax.stairs(failed, edges, fill=True, color="tab:red", alpha=0.6, label="failed")
        ax.stairs(failed + ok, edges, baseline=failed, fill=True, color="tab:green", label="accepted")
        ax.axvline(result.back_at, color="0.3", linestyle="--", linewidth=1)
        peak = result.peak_attempts(bin)
        ax.hlines(peak, result.back_at, end, color="0.2", linestyle=":", linewidth=1.2)
        ax.set_ylabel("attempts")
        ax.text(0.99, 0.9, f"{name}: busiest {bin * 1000:.0f} ms once back: {peak:,}", transform=ax.transAxes,
                ha="right", va="top", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].set_ylim(0, axes[0, 0].get_ylim()[1] * 1.25)  # room for each panel's label
    axes[0, 0].legend(loc="upper left", fontsize=8, ncols=2)
    axes[-1, 0].set_xlabel("time since the server went down (s); dashed: server back; dotted: busiest once back")
    axes[-1, 0].set_xlim(0, end)
    fig.tight_layout()
    return fig


def fraction_back(
    pairs: Mapping[str, tuple[HerdResult, HerdResult]],
    *,
    until: float | None = None,
    title: str = "Clients reconnected: measured (solid) and simulated (dashed)",
) -> Figure:
    """Cumulative fraction of the herd reconnected over time, ``{strategy: (real, simulated)}``."""
    end = until if until is not None else max(
        max(r.completion_time for r in pair if np.isfinite(r.completion_time)) for pair in pairs.values()) + 0.2
    times = np.linspace(0, end, 1000)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (real, model) in pairs.items():
        line = ax.plot(times, real.fraction_back(times), label=name)[0]
        ax.plot(times, model.fraction_back(times), linestyle="--", color=line.get_color())
    ax.set_title(title)
    ax.set_xlabel("time since the server went down (s)")
    ax.set_ylabel("fraction of clients reconnected")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def contention(
    result: Study, *, title: str = "The AWS study's model: N clients, one row, optimistic concurrency"
) -> Figure:
    """The study's two figures against the number of clients: calls (work) and completion time, per strategy."""
    fig, (work, time) = plt.subplots(1, 2, figsize=(10, 4))
    for name in result.calls:
        line = work.plot(result.clients, result.calls[name], marker=".", label=name)[0]
        time.plot(result.clients, result.completion[name], marker=".", color=line.get_color(), label=name)
    work.set_title("work: conditional writes the row received")
    work.set_ylabel(f"calls (mean of {result.runs} runs)")
    time.set_title("time until the last client's write succeeded")
    time.set_ylabel(f"seconds (mean of {result.runs} runs, log scale)")
    time.set_yscale("log")
    for ax in (work, time):
        ax.set_xlabel("clients contending (N)")
        ax.grid(alpha=0.3, which="both")
    work.set_ylim(bottom=0)
    work.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# -- notebook 06: idle timeouts against keepalive pings, deploys -------------------------------

"""Notebook 06's plots: survival against the ping interval, reconnection attempts in a deploy, close codes.

Like :mod:`wslab.studies.plots`: each function takes measured samples and returns a Figure with a
title and axis labels with units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .plots import mark_times

__all__ = ["survival_vs_ping_interval", "deploy_attempts", "close_codes"]


def survival_vs_ping_interval(
    points: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    timeout: float,
    watch: float,
    no_keepalive: Mapping[str, float] | None = None,
    title: str = "How long an idle WebSocket lives, against the client's ping interval",
) -> Figure:
    """Survival time against ping interval, per proxy in front, with the idle timeout drawn in.

    Args:
        points: ``{front: [(ping_interval, lived), ...]}``; ``lived`` None: alive when the watch ended.
        timeout: The proxy's idle timeout (s): a vertical and a horizontal line.
        watch: How long the connections were watched (s): survivors are drawn there, as triangles.
        no_keepalive: ``{front: lived}`` without any ping, drawn as a dotted horizontal line.
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    markers = iter("os^Dv")
    for k, (front, samples) in enumerate(points.items()):
        marker = next(markers)
        offset = (k - (len(points) - 1) / 2) * 0.03 * timeout  # side by side, where the fronts agree
        cut = [(x + offset, y) for x, y in samples if y is not None]
        alive = [x + offset for x, y in samples if y is None]
        line = ax.plot([x for x, _ in cut], [y for _, y in cut], marker, linestyle="none", label=f"{front}: cut")[0]
        ax.plot(alive, [watch] * len(alive), marker, linestyle="none", color=line.get_color(), fillstyle="none",
                markersize=9, label=f"{front}: alive at the end of the watch")
        if no_keepalive and front in no_keepalive:
            ax.axhline(no_keepalive[front], color=line.get_color(), linestyle=":", linewidth=1)
    ax.axvline(timeout, color="tab:red", linestyle="--", linewidth=1.2)
    ax.axvline(timeout / 2, color="tab:green", linestyle="--", linewidth=1.2)
    ax.annotate(f"idle timeout {timeout:g} s", xy=(timeout, 0.5), xycoords=("data", "axes fraction"),
                xytext=(4, 0), textcoords="offset points", color="tab:red", fontsize=8, rotation=90, va="center")
    ax.annotate("half the timeout", xy=(timeout / 2, 0.5), xycoords=("data", "axes fraction"), xytext=(4, 0),
                textcoords="offset points", color="tab:green", fontsize=8, rotation=90, va="center")
    ax.axhline(timeout, color="tab:red", linestyle="--", linewidth=0.8, alpha=0.5)
    if no_keepalive:
        ax.annotate("dotted: no keepalive at all", xy=(0.01, min(no_keepalive.values())),
                    xycoords=("axes fraction", "data"), xytext=(0, -11), textcoords="offset points", fontsize=8,
                    color="0.3")
    ax.set_title(title)
    ax.set_xlabel("client ping interval (s)")
    ax.set_ylabel(f"connection lived (s), watched {watch:g} s")
    ax.set_xlim(0, None)
    ax.set_ylim(0, watch * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def deploy_attempts(
    bins: Mapping[str, Sequence[int]],
    *,
    width: float = 0.1,
    marks: Mapping[str, float] | None = None,
    title: str = "Reconnection attempts reaching the new server, per 100 ms",
) -> Figure:
    """One panel per shutdown strategy: opening handshakes at the new server in each ``width``-second bin.

    Args:
        bins: ``{strategy: counts}``, ``counts[k]`` = handshakes in ``[k * width, (k + 1) * width)`` s after the
            shutdown began.
        marks: Events to draw in every panel, ``{"label": t}`` (e.g. the end of the drain window).
    """
    end = max((len(b) for b in bins.values()), default=1) * width
    peak = max((max(b, default=0) for b in bins.values()), default=1)
    fig, axes = plt.subplots(len(bins), 1, figsize=(8, 1.5 * len(bins) + 0.9), sharex=True, squeeze=False)
    for ax, (name, counts) in zip(axes[:, 0], bins.items(), strict=True):
        ax.bar(np.arange(len(counts)) * width, counts, width=width, align="edge", color="tab:blue")
        ax.axhline(max(counts, default=0), color="0.4", linestyle=":", linewidth=1)
        ax.set_title(f"{name}: at most {max(counts, default=0)} in 100 ms", fontsize=9, loc="left")
        ax.set_ylabel("handshakes")
        ax.set_ylim(0, peak * 1.15)
        ax.grid(alpha=0.3)
        mark_times(ax, marks, label=ax is axes[0, 0], side="left")
    fig.suptitle(title)
    axes[-1, 0].set_xlabel("time since the old server was signalled (s)")
    axes[-1, 0].set_xlim(0, end)
    fig.tight_layout()
    return fig


def close_codes(
    counts: Mapping[str, Mapping[int, int]],
    *,
    title: str = "The close code each client saw",
) -> Figure:
    """A histogram of close codes per strategy, ``{strategy: {code: clients}}``, as grouped bars."""
    codes = sorted({code for per in counts.values() for code in per})
    fig, ax = plt.subplots(figsize=(8, 3))
    width = 0.8 / max(1, len(codes))
    for k, code in enumerate(codes):
        x = np.arange(len(counts)) + (k - (len(codes) - 1) / 2) * width
        heights = [per.get(code, 0) for per in counts.values()]
        bars = ax.bar(x, heights, width=width, label=str(code))
        ax.bar_label(bars, labels=[str(h) if h else "" for h in heights], fontsize=8)
    ax.set_xticks(np.arange(len(counts)), list(counts))
    ax.set_title(title)
    ax.set_xlabel("shutdown strategy")
    ax.set_ylabel("clients")
    ax.set_ylim(0, max((max(per.values(), default=0) for per in counts.values()), default=1) * 1.2)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="close code", fontsize=8, title_fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig

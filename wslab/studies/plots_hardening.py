"""Notebook 08's plots: the reconnect storm, the busy-client grid, the token clients' connections.

Like :mod:`wslab.studies.plots`: each function takes measured samples and returns a Figure with a
title and axis labels with units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .busy import CellResult
    from .simulate import HerdResult
    from .storm import StormResult

__all__ = ["storm", "drop_grid", "connections"]


def storm(results: Mapping[str, StormResult], *, herd: HerdResult | None = None, herd_label: str = "",
          bin: float = 0.1, title: str = "A reconnect storm, with and without admission control") -> Figure:
    """Three panels over time since the outage: admitted handshakes per ``bin``, the server's CPU, clients back.

    ``herd`` (e.g. notebook 05's) is drawn in the last panel too, dashed, for comparison.
    """
    end = max(r.herd.completion_time if np.isfinite(r.herd.completion_time) else r.herd.back_at + 10
              for r in results.values()) + 0.5
    fig, (accepts, cpu, back) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    times = np.linspace(0, end, 1000)
    for name, result in results.items():
        accepted = np.frombuffer(result.herd.accepted_at, dtype=float) if len(result.herd.accepted_at) else np.zeros(0)
        counts = np.bincount((accepted / bin).astype(int), minlength=int(end / bin) + 1)[: int(end / bin) + 1]
        line = accepts.step(np.arange(len(counts)) * bin, counts, where="post", label=name)[0]
        cpu.step(np.arange(len(result.cpu)) * bin, 100 * result.cpu, where="post", color=line.get_color())
        back.plot(times, result.herd.fraction_back(times), color=line.get_color(), label=name)
        for ax in (accepts, cpu, back):
            ax.axvline(result.herd.back_at, color="0.5", linestyle=":", linewidth=1)
    if herd is not None:
        back.plot(times, herd.fraction_back(times), color="0.3", linestyle="--", label=herd_label or herd.label)
    accepts.set_title(title)
    accepts.set_ylabel(f"handshakes admitted\nper {bin * 1000:.0f} ms")
    cpu.set_ylabel("server CPU\n(% of one core)")
    cpu.set_ylim(0, 105)
    back.set_ylabel("fraction of\nclients back")
    back.set_ylim(0, 1.02)
    back.set_xlabel("time since the server went down (s); dotted: server listening again")
    back.set_xlim(0, end)
    accepts.legend(fontsize=8, loc="upper right")
    back.legend(fontsize=8, loc="lower right")
    for ax in (accepts, cpu, back):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def drop_grid(results: Mapping[str, Sequence[CellResult]], *, duration: float,
              title: str = "When keepalive dropped a busy (live) client") -> Figure:
    """One panel per way of handling messages: seconds until the server dropped the client, per cell.

    Columns are handler times, rows ``ping_timeout`` x ``max_queue``; a cell the client
    survived for the whole ``duration`` is white and says "never".
    """
    fig, axes = plt.subplots(1, len(results), figsize=(3.1 * len(results), 3.6), sharey=True, squeeze=False)
    image = None
    for ax, (name, cells) in zip(axes[0], results.items(), strict=True):
        handlers = sorted({r.cell.handler for r in cells})
        rows = sorted({(r.cell.ping_timeout, -1 if r.cell.max_queue is None else r.cell.max_queue) for r in cells})
        grid = np.full((len(rows), len(handlers)), np.nan)
        for r in cells:
            row = rows.index((r.cell.ping_timeout, -1 if r.cell.max_queue is None else r.cell.max_queue))
            grid[row, handlers.index(r.cell.handler)] = np.nan if r.dropped_at is None else r.dropped_at
            text = "never" if r.dropped_at is None else f"{r.dropped_at:.1f}"
            ax.text(handlers.index(r.cell.handler), row, text, ha="center", va="center", fontsize=8)
        image = ax.imshow(grid, cmap="Reds_r", vmin=0, vmax=duration, aspect="auto")
        ax.set_xticks(range(len(handlers)), [f"{h * 1000:.0f}" for h in handlers])
        ax.set_yticks(range(len(rows)), [f"{t:g} s, {'None' if q < 0 else q}" for t, q in rows])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("handler time per message (ms)")
    axes[0, 0].set_ylabel("ping_timeout, max_queue")
    if image is not None:
        fig.colorbar(image, ax=axes[0, -1], label="dropped after (s)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def connections(intervals: Mapping[str, Sequence[tuple[float, float]]], *, marks: Mapping[str, Sequence[float]]
                | None = None, until: float, title: str = "Connected, per client") -> Figure:
    """When each client was connected (bars), and its refused handshakes (``marks``, red crosses)."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(intervals) + 1.4))
    names = list(intervals)
    for row, name in enumerate(names):
        ax.broken_barh([(start, end - start) for start, end in intervals[name]], (row - 0.3, 0.6),
                       color="tab:green", alpha=0.8)
        refused = (marks or {}).get(name, [])
        ax.plot(refused, [row] * len(refused), "x", color="tab:red", markersize=9)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.invert_yaxis()
    ax.set_xlim(0, until)
    ax.set_xlabel("time since the clients started (s); x: handshake refused (401)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig

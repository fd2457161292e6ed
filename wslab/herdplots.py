"""Plots for notebook 05: backoff delays, a herd's attempts over time, model against measurement.

Like :mod:`wslab.plots`, each function takes results the notebook computed and
returns a Figure with a title and axis labels with units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .simulate import HerdResult

__all__ = ["delay_spread", "attempts_per_bin", "fraction_back"]


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
    title: str = "Reconnection attempts per 100 ms",
) -> Figure:
    """One panel per strategy: attempts started in each ``bin``, failed and accepted, and when the server was back."""
    end = until if until is not None else max(
        max(r.attempt_times, default=0.0) for r in results.values()) + bin
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.6 * len(results) + 0.8), sharex=True, squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], results.items()):
        ok = result.per_bin(bin, until=end, ok=True)
        failed = result.per_bin(bin, until=end, ok=False)
        left = np.arange(len(ok)) * bin
        ax.bar(left, failed, width=bin, align="edge", color="tab:red", alpha=0.6, label="failed")
        ax.bar(left, ok, width=bin, align="edge", bottom=failed, color="tab:green", label="accepted")
        ax.axvline(result.back_at, color="0.3", linestyle="--", linewidth=1)
        ax.set_ylabel("attempts")
        ax.text(0.99, 0.9, f"{name}", transform=ax.transAxes, ha="right", va="top", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncols=2)
    axes[-1, 0].set_xlabel("time since the server went down (s); dashed: server back")
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

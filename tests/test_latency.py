"""The latency analysis of notebook 02, on hand-made observations: no sockets, no timing."""

from __future__ import annotations

import math

import pytest

from wslab.studies.latency import LatencyRecord, analyse_latency, percentile


def record(**changes) -> LatencyRecord:
    """Two healthy clients, two stalled ones (ports 1 and 3); three messages, 0.1 s apart, from t = 10."""
    fields = dict(
        variant="v",
        start=10.0,
        interval=0.1,
        count=3,
        end=10.5,
        received=[
            [(0, 10.01), (1, 10.12), (2, 10.25)],  # on time, or nearly
            [(0, 10.30)],  # got the first message late, never the others
        ],
        held=[(10.0, {1: 100, 2: 50, 3: 7, 4: 0}), (10.5, {1: 0, 2: 1, 3: 9})],
        stalled_ports=frozenset({1, 3}),
        sessions_before=4,
        ports_after=frozenset({2, 3, 4}),
    )
    fields.update(changes)
    return LatencyRecord(**fields)


def test_latency_runs_from_the_scheduled_time_and_a_missing_message_counts_until_the_end():
    run = analyse_latency(record())
    assert run.latencies == pytest.approx([0.01, 0.02, 0.05, 0.30, 0.40, 0.30])
    assert run.delivered == pytest.approx(4 / 6)


def test_bytes_held_count_only_the_stalled_clients_from_the_start():
    run = analyse_latency(record())
    assert run.held == [(0.0, 107), (0.5, 9)]
    assert (run.held_peak, run.held_end) == (107, 9)


def test_removals_are_counted_from_the_ports_left_in_the_map():
    run = analyse_latency(record())
    assert (run.clients, run.stalled) == (4, 2)
    assert run.removed == 1  # port 1 left the map
    assert run.removed_stalled == 1  # ... and it was a stalled client


def test_a_run_where_nothing_arrived():
    run = analyse_latency(record(received=[[], []], held=[], ports_after=frozenset({1, 2, 3, 4})))
    assert run.delivered == 0
    assert run.latencies == pytest.approx([0.5, 0.4, 0.3] * 2)  # all censored at the end
    assert (run.held_peak, run.held_end, run.removed, run.removed_stalled) == (0, 0, 0, 0)


def test_no_healthy_client_and_no_message_give_no_latency():
    run = analyse_latency(record(received=[], count=0))
    assert run.latencies == [] and run.delivered == 0 and math.isnan(run.p99)


def test_percentile_interpolates_between_ranks():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))

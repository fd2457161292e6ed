"""Idle timeouts measured: the analysis without sockets, then every case for real through the proxy's idle-timeout."""

from __future__ import annotations

import sys

from wslab import Lab
from wslab.faults.proxy import start_proxy
from wslab.studies.idle import IdleCase, IdleOutcome, fronts_agree, run_idle_cases, serve_idle, survival_rows

QUIET = IdleCase("no keepalive")
PINGS = IdleCase("pings 1 s", client_pings=1.0)


def cut(front: str, case: IdleCase, lived: float) -> IdleOutcome:
    return IdleOutcome(front, case, lived=lived, code=1006, close_frame=False, cause="EOFError")


def test_the_server_learns_its_part_from_the_path():
    assert QUIET.path == "/" and PINGS.path == "/"  # the client's own pings: nothing for the server to do
    assert IdleCase("s", server_pings=0.5, server_sends=1.0).path == "/?server_pings=0.5&server_sends=1.0"


def test_survival_rows_put_the_fronts_side_by_side_and_sum_up_repeats():
    race = IdleCase("race", client_pings=2.0)
    outcomes = [
        cut("nginx", QUIET, 1.93), cut("proxy", QUIET, 2.0),
        IdleOutcome("nginx", PINGS), IdleOutcome("proxy", PINGS),
        cut("nginx", race, 1.99), cut("nginx", race, 2.01), IdleOutcome("nginx", race),
    ]
    rows = survival_rows(outcomes, watch=6)
    assert rows[0] == {"case": "no keepalive", "nginx": "cut at 1.93 s (1006, EOFError)",
                       "proxy": "cut at 2.00 s (1006, EOFError)"}
    assert rows[1] == {"case": "pings 1 s", "nginx": "alive after 6 s", "proxy": "alive after 6 s"}
    assert rows[2] == {"case": "race", "nginx": "1/3 alive after 6 s, cut at 1.99-2.01 s"}


def test_fronts_agree_only_on_the_same_fate_the_same_close_and_close_times():
    outcomes = [cut("a", QUIET, 1.9), cut("b", QUIET, 2.0), IdleOutcome("a", PINGS), IdleOutcome("b", PINGS)]
    assert all(a.agree for a in fronts_agree(outcomes, "a", "b"))

    kept_by_one = [IdleOutcome("a", PINGS), cut("b", PINGS, 2.0)]
    [verdict] = fronts_agree(kept_by_one, "a", "b")
    assert not verdict.agree and "a kept one that b cut" in verdict.detail

    far_apart = [cut("a", QUIET, 1.0), cut("b", QUIET, 2.0)]
    assert "cut 1.00 s apart" in fronts_agree(far_apart, "a", "b")[0].detail

    rst = IdleOutcome("b", QUIET, lived=2.0, code=1006, cause="ConnectionResetError")
    assert "closed differently" in fronts_agree([cut("a", QUIET, 2.0), rst], "a", "b")[0].detail


async def test_each_kind_of_traffic_resets_the_proxys_idle_timer_and_tcp_keepalive_does_not():
    cases = [
        QUIET,
        IdleCase("client pings", client_pings=0.4),
        IdleCase("server pings", server_pings=0.4),
        IdleCase("client sends", client_sends=0.4),
        IdleCase("server sends", server_sends=0.4),
        IdleCase("tcp keepalive", tcp_keepalive=1),
    ]
    async with Lab() as lab:
        server = await serve_idle(lab)
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("idle-timeout", timeout=1.0)
        outcomes = await run_idle_cases(lab, {"proxy": proxy.url}, cases, watch=2.5)
        assert lab.names == ["idle-server", "proxy"]  # every connection closed
    fate = {o.case.name: o for o in outcomes}
    assert not fate["no keepalive"].survived and fate["no keepalive"].cause == "EOFError"
    assert not fate["tcp keepalive"].survived  # probes carry no byte: the proxy's timer never sees them
    if sys.platform.startswith("linux"):
        assert abs(fate["tcp keepalive"].lived - 1.0) < 0.5
    for name in ("client pings", "server pings", "client sends", "server sends"):
        assert fate[name].survived, name

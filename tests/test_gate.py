"""The Gate on real sockets: origins, tokens that expire across reconnects, admission control, and the client's side."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from wslab import Lab
from wslab.clients.reconnect import ReconnectingClient
from wslab.runtime.timing import scaled, wait_until
from wslab.servers import AdmissionControl, FixedServer, Gate, ReplayServer, TokenSigner, start_app

SECRET = os.urandom(32)


async def test_an_origin_allow_list_refuses_other_pages_with_403():
    async with Lab() as lab:
        server = await start_app(lab, FixedServer(lab.timeline, origins=["http://127.0.0.1:8000"]))
        for origin in ("http://evil.example", "http://127.0.0.1:8001", None):  # None: no Origin header at all
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, origin=origin)
            assert refused.value.response.status_code == 403
        async with connect(server.url, origin="http://127.0.0.1:8000"):
            pass
        refusals = lab.timeline.select(source="fixed", kind="refused")
        assert len(refusals) == 3 and all("HTTP 403" in e.detail and "Origin" in e.detail for e in refusals)


async def test_without_an_allow_list_any_origin_gets_in():
    async with Lab() as lab:
        server = await start_app(lab, FixedServer(lab.timeline))
        async with connect(server.url, origin="http://evil.example"):
            pass


async def test_a_token_is_checked_at_the_handshake_and_a_live_connection_closes_with_4401_when_it_expires():
    signer = TokenSigner(SECRET, lifetime=0.6)
    async with Lab() as lab:
        server = await start_app(lab, FixedServer(lab.timeline, keepalive=False, gate=Gate(auth=signer)))
        for url, why in [(server.url, b"token missing"), (server.url + "/?token=x.1.y", b"token signature invalid"),
                         (server.url + "/?token=" + signer.mint("alice", lifetime=-1), b"token expired")]:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            assert refused.value.response.status_code == 401 and why in refused.value.response.body
        # A Python client may send the token in a header instead of the URL.
        started = time.monotonic()
        async with connect(server.url, additional_headers={"Authorization": f"Bearer {signer.mint('bob')}"}) as ws:
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), scaled(5))
        lasted = time.monotonic() - started
        assert (ws.close_code, ws.close_reason) == (4401, "token expired")
        assert 0.5 <= lasted <= 0.6 + scaled(1.0)
        assert lab.timeline.select(source="fixed", kind="expired")[0].code == 4401


async def test_a_client_that_mints_a_token_per_attempt_refreshes_on_4401_and_misses_nothing():
    signer = TokenSigner(SECRET, lifetime=0.7)
    async with Lab() as lab:
        app = ReplayServer(lab.timeline, gate=Gate(auth=signer))
        server = await start_app(lab, app)
        lab.spawn(app.broadcast_forever(0.02), name="broadcasts")
        client = ReconnectingClient(lambda: signer.url(server.url, "alice"), name="alice", timeline=lab.timeline,
                                    min_delay=0.05, record_messages=False, ping_interval=None)
        lab.spawn(client.run(), name="alice")
        await wait_until(lambda: client.opens >= 3, 5.0, "two refreshes")
        await client.close()
        assert client.gave_up is None
        assert client.sequence.missed == 0 and client.duplicates == 0  # replay filled every gap
        closes = lab.timeline.select(source="alice", kind="close")
        assert [e.code for e in closes[:2]] == [4401, 4401]
        assert not lab.timeline.select(source="fixed", kind="refused")  # never a stale token
        assert all("token=..." in e.detail for e in lab.timeline.select(source="alice", kind="connecting"))


async def test_a_client_with_a_fixed_url_stops_at_the_401_and_says_why():
    signer = TokenSigner(SECRET, lifetime=0.5)
    async with Lab() as lab:
        server = await start_app(lab, ReplayServer(lab.timeline, gate=Gate(auth=signer)))
        client = ReconnectingClient(signer.url(server.url, "alice"), name="alice", timeline=lab.timeline,
                                    min_delay=0.05, retry_table={4401: True}, ping_interval=None)
        lab.spawn(client.run(), name="alice")
        await client.wait_done(5.0)
        assert client.gave_up is not None and client.gave_up.startswith("stop: HTTP 401 unauthorized")
        assert client.opens == 1 and client.attempts == 2


@pytest.mark.parametrize("mode", ["503", "1013"])
async def test_admission_control_turns_the_excess_away_and_the_client_waits_at_least_what_it_was_told(mode):
    async with Lab() as lab:
        admission = AdmissionControl(rate=0.5, burst=1, mode=mode)  # one handshake, then one every 2 s
        server = await start_app(lab, FixedServer(lab.timeline, keepalive=False, gate=Gate(admission=admission)))
        async with connect(server.url):
            client = ReconnectingClient(server.url, name="late", timeline=lab.timeline, min_delay=0.05,
                                        ping_interval=None)
            lab.spawn(client.run(), name="late")
            # In 1013 mode the first attempt opens, then closes at once: wait for the second one.
            await wait_until(lambda: client.state == "open" and client.attempts == 2, 10.0, "the second attempt in")
        events = lab.timeline.select(source="late")
        retry = next(e for e in events if e.kind == "retry")
        second = [e for e in events if e.kind == "connecting"][1]
        assert retry.data["delay"] >= 2.0  # told "retry after 2 s" (or 1 s, rounded up to whole seconds) + jitter
        assert second.t - retry.t >= retry.data["delay"] - 0.01
        if mode == "503":
            assert "HTTP 503" in next(e for e in events if e.kind == "error").detail
        else:
            assert next(e for e in events if e.kind == "close").code == 1013
        assert lab.timeline.select(source="fixed", kind="refused")
        await client.close()

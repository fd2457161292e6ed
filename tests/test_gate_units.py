"""The pure parts of hardening, without sockets: tokens, the admission bucket, caps, and the client's decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from wslab.clients import closecodes
from wslab.clients.backoff import Backoff
from wslab.clients.policy import CloseEvent, GiveUp, ReconnectPolicy, Retry, hide_token, retry_after
from wslab.servers.admission import AdmissionControl, AdmissionMode, Refusal
from wslab.servers.auth import TokenError, TokenSigner
from wslab.servers.limits import ConnectionLimits

SECRET = b"0123456789abcdef0123456789abcdef"


# -- tokens ----------------------------------------------------------------------------------------


def test_a_token_is_valid_until_it_expires_and_not_a_moment_longer():
    signer = TokenSigner(SECRET, lifetime=2.0)
    token = signer.mint("alice", now=100.0)
    assert signer.verify(token, now=100.0).subject == "alice"
    assert signer.verify(token, now=101.999).expires == 102.0
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now=102.0)


@pytest.mark.parametrize(
    ("token", "why"),
    [(None, "missing"), ("", "missing"), ("alice", "malformed"), ("alice.soon.sig", "malformed"),
     ("alice.200.000.AAAA", "signature invalid")],
)
def test_a_bad_token_is_refused_with_a_reason(token, why):
    with pytest.raises(TokenError, match=why):
        TokenSigner(SECRET).verify(token, now=100.0)


def test_a_forged_token_fails_changing_any_part_or_the_secret():
    signer = TokenSigner(SECRET, lifetime=60)
    subject, expires, signature = signer.mint("alice", now=100.0).split(".", 1)[0], "160.000", None
    token = signer.mint("alice", now=100.0)
    signature = token.rsplit(".", 1)[1]
    for forged in (f"mallory.{expires}.{signature}", f"{subject}.9999999999.000.{signature}"):
        with pytest.raises(TokenError, match="signature"):
            signer.verify(forged, now=100.0)
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"another secret, 32 bytes long...").verify(token, now=100.0)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=64),
       st.floats(min_value=0, max_value=4e9), st.floats(min_value=0.01, max_value=3600))
def test_every_minted_token_verifies_for_its_lifetime(subject, now, lifetime):
    signer = TokenSigner(SECRET, lifetime=lifetime)
    claims = signer.verify(signer.mint(subject, now=now), now=now)
    assert claims.subject == subject and abs(claims.expires - (now + lifetime)) < 0.002


def test_signer_refuses_a_weak_secret_and_never_shows_it():
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSigner(b"short")
    assert "0123" not in repr(TokenSigner(SECRET))
    with pytest.raises(ValueError, match="subject"):
        TokenSigner(SECRET).mint("alice.admin")  # a dot would make the token ambiguous


def test_url_puts_a_fresh_token_in_and_keeps_the_rest():
    signer = TokenSigner(SECRET, lifetime=2)
    url = signer.url("ws://127.0.0.1:8765/feed?last_seq=41&token=old", "alice", now=100.0)
    assert url.startswith("ws://127.0.0.1:8765/feed?last_seq=41&token=alice.102.000.")
    assert hide_token(url) == "ws://127.0.0.1:8765/feed?last_seq=41&token=..."


# -- admission -------------------------------------------------------------------------------------


def test_admission_admits_the_burst_then_the_rate_and_spreads_the_rest():
    admission = AdmissionControl(rate=10, burst=5, clock=lambda: 0.0)
    decisions = [admission.decide(now=0.0) for _ in range(25)]
    assert decisions[:5] == [None] * 5
    refusals = [d for d in decisions[5:] if d is not None]
    assert len(refusals) == 20
    # Appointments 0.1 s apart at 10/s: the 20 refused are told 1 s (the first 10) and 2 s (the next 10).
    assert [r.retry_after for r in refusals] == [1] * 10 + [2] * 10
    assert admission.decide(now=0.1) is None  # one token back after 0.1 s
    assert (admission.admitted, admission.refused) == (6, 20)


def test_admission_appointments_are_whole_seconds_at_least_one():
    admission = AdmissionControl(rate=1000, burst=1)
    admission.decide(now=0.0)
    refusal = admission.decide(now=0.0)
    assert refusal == Refusal(1) and "retry after 1 s" in refusal.reason
    assert AdmissionControl(5, mode="1013").mode is AdmissionMode.CLOSE_1013
    with pytest.raises(ValueError):
        AdmissionControl(0)


# -- caps ----------------------------------------------------------------------------------------------


def test_caps_refuse_over_either_limit_and_free_a_place_on_release():
    limits = ConnectionLimits(max_total=3, max_per_client=2)
    limits.open.update({"10.0.0.1": 2})
    assert "max_per_client=2" in limits.refusal("10.0.0.1")
    assert limits.refusal("10.0.0.2") is None
    limits.open["10.0.0.2"] += 1
    assert "max_total=3" in limits.refusal("10.0.0.3")
    limits.release("10.0.0.1")
    assert limits.refusal("10.0.0.1") is None and limits.total == 2
    limits.release("10.0.0.2")
    assert "10.0.0.2" not in limits.open
    with pytest.raises(ValueError):
        ConnectionLimits(max_total=0)


# -- the client's decisions ----------------------------------------------------------------------------


def refused(status: int, **headers: str) -> InvalidStatus:
    return InvalidStatus(Response(status, "", Headers(headers), b""))


def policy(**options) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(min_delay=0.5, max_delay=8, factor=2), **options)


def test_retry_after_is_read_from_a_503_or_a_1013():
    assert retry_after(refused(503, **{"Retry-After": "3"})) == 3.0
    assert retry_after(refused(503)) is None
    assert retry_after(refused(503, **{"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None  # a date: ignored
    assert retry_after(CloseEvent(1013, "try again later: retry after 2 s", True)) == 2.0
    assert retry_after(CloseEvent(1013, "try again later", True)) is None
    assert retry_after(CloseEvent(1000, "retry after 2 s", True)) is None  # only 1013 carries one


def test_the_client_waits_at_least_what_the_server_said_spread_over_the_next_second():
    p = policy()
    delays = []
    for retry in range(1, 201):
        decision = p.decide(refused(503, **{"Retry-After": "3"}))
        assert decision.retry == retry and "retry after 3 s" in decision.why
        delays.append(decision.delay)
    assert 3.0 <= min(delays) < 3.1 and 3.9 < max(delays) < 4.0  # not before 3 s; spread over [3, 4)
    assert 2.0 <= p.decide(CloseEvent(1013, "try again later: retry after 2 s", True), uptime=0.0).delay < 3.0
    assert p.decide(refused(503)).delay == 0.5  # no Retry-After: the backoff, which the server's pacing left alone


@pytest.mark.parametrize("status", [400, 401, 403, 404, 431, 418])
def test_the_client_stops_on_a_refusal_that_would_repeat_and_says_why(status):
    decision = policy().decide(refused(status))
    assert isinstance(decision, GiveUp)
    assert decision.reason == closecodes.status_reason(status) and decision.reason.startswith(f"stop: HTTP {status}")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_the_client_retries_a_refusal_that_may_pass_later(status):
    assert isinstance(policy().decide(refused(status)), Retry)


def test_4401_refreshes_only_a_client_that_can_mint_credentials():
    expired = CloseEvent(4401, "token expired", True)
    fresh = policy(refresh_codes=closecodes.REFRESH)
    fresh.decide(ConnectionRefusedError())
    fresh.decide(ConnectionRefusedError())  # the backoff has grown to 2 s
    decision = fresh.decide(expired, uptime=2.0)
    assert decision == Retry(0.5, 1) and decision.why.startswith("refresh")  # started over, not counted as a failure
    assert fresh.decide(expired, uptime=2.0) == Retry(0.5, 1)  # and again at the next expiry: no growth
    fixed = policy()  # a fixed URL: a fresh token is not on offer, the table decides
    assert fixed.decide(expired, uptime=2.0) == GiveUp(closecodes.retry_reason(4401))
    assert isinstance(fresh.decide(CloseEvent(1008, "not allowed", True)), GiveUp)
    assert closecodes.should_retry(4401) is False and 4401 in closecodes.REFRESH

"""The close-code names and the retry table a reconnecting client reads."""

from __future__ import annotations

import pytest

from wslab.clients import closecodes
from wslab.clients.closecodes import (
    CODES,
    RETRY,
    RETRY_SOON,
    AfterClose,
    after_close,
    describe,
    name,
    retry_reason,
    should_retry,
)


def test_every_rfc_6455_code_has_a_name_and_a_meaning():
    for code in [*range(1000, 1004), *range(1005, 1016)]:
        assert code in CODES, code
        assert CODES[code].name and CODES[code].meaning
    assert {c for c, info in CODES.items() if not info.on_the_wire} == {1005, 1006, 1015}


def test_describe_names_ranges_and_unknown_codes():
    assert describe(1006).startswith("1006 abnormal closure")
    assert "never sent" in describe(1006)
    assert "private" in describe(4001) and "registered" in describe(3003)
    assert "unassigned" in describe(2999)
    assert name(None) == "no code"


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1012, 1013])
def test_transient_codes_retry(code):
    assert should_retry(code)


@pytest.mark.parametrize("code", [1008, 4000, 4001, 4999, 1002, 1003, 1007, 1009, 1010, 3000])
def test_policy_and_permanent_codes_stop(code):
    assert not should_retry(code)


def test_no_code_counts_as_abnormal_closure():
    assert should_retry(None) == should_retry(1006) is True


def test_exact_code_wins_over_range_and_table_is_configurable():
    table = {**RETRY, 4000: True}
    assert should_retry(4000, table) and not should_retry(4001, table)
    assert not should_retry(4000)  # the default table is untouched
    assert should_retry(2999) and not should_retry(2999, default=False)


def test_retry_reason_says_which_entry_decided():
    assert retry_reason(4003).startswith("stop: 4003") and "4000-4999" in retry_reason(4003)
    assert retry_reason(1012).startswith("retry: 1012 service restart")


def test_table_renders_every_entry():
    text = str(closecodes.table())
    assert len(text.splitlines()) == len(RETRY) + 2
    assert "4000-4999" in text and "<table>" in closecodes.table()._repr_html_()


def test_after_close_stops_exactly_where_the_retry_table_says_stop():
    for code in [*CODES, 2999, 3000, 3999, 4000, 4001, 4999]:
        assert (after_close(code) == AfterClose.STOP) == (not should_retry(code)), code


def test_after_close_retries_soon_only_after_a_clean_planned_goodbye():
    assert after_close(1001) == after_close(1012) == "retry"
    assert set(RETRY_SOON) == {1001, 1012}
    for code in (1000, 1005, 1006, 1011, 1013, 1014):
        assert after_close(code) == AfterClose.BACK_OFF == "back off", code
    assert after_close(1012, was_clean=False) == "back off"  # the closing handshake did not complete
    assert after_close(None, was_clean=False) == "back off"  # no code counts as 1006
    assert after_close(1008, was_clean=False) == "stop"  # a refusal stays a refusal
    assert after_close(4000, table={**RETRY, 4000: True}) == "back off"  # the table is configurable

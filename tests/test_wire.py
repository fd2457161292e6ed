"""The lab's one wire format for numbered broadcasts, as properties: what is encoded decodes to the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wslab.servers.wire import Numbered, Other, Resync, decode, encode, encode_resync, stamp, unstamp

seqs = st.integers(min_value=0, max_value=2**53)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(seqs, times, st.one_of(st.text(), st.binary()))
def test_numbered_messages_decode_to_their_number_time_and_data(seq, sent_at, data):
    frame = encode(seq, data, sent_at=sent_at)
    assert type(frame) is type(data)  # text stays a text frame, bytes a binary frame
    decoded = decode(frame)
    assert isinstance(decoded, Numbered)
    assert decoded.seq == seq and decoded.data == data
    assert abs(decoded.sent_at - sent_at) <= 1e-6 * max(1.0, sent_at)


@given(st.one_of(st.none(), st.tuples(seqs, seqs)), seqs)
def test_resync_decodes_to_what_was_missed_and_where_to_go_on(missed, next_seq):
    assert decode(encode_resync(missed, next_seq)) == Resync(missed, next_seq)


@given(st.one_of(st.text(), st.binary()))
def test_anything_else_is_other_and_unchanged(raw):
    decoded = decode(raw)
    if isinstance(decoded, Other):
        assert decoded.data == raw
    else:  # it happened to look like a lab frame: then it must re-encode to itself
        assert isinstance(decoded, (Numbered, Resync))


def test_stamp_and_unstamp_are_encode_and_decode_for_bytes():
    seq, sent_at = unstamp(stamp(7, b"payload"))
    assert seq == 7 and sent_at > 0


def test_unstamp_refuses_what_is_not_numbered():
    import pytest

    with pytest.raises(ValueError, match="not a numbered broadcast"):
        unstamp("hello")

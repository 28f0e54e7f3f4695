"""Result summaries for the recorder, from the bytes the client receives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.postgres import codec
from protocols.postgres.codec import I16, I32
from protocols.postgres.summary import ResultSummary


def datarow(*values: bytes) -> bytes:
    return codec.message(b"D", I16.pack(len(values)) + b"".join(I32.pack(len(v)) + v for v in values))


def complete(tag: bytes) -> bytes:
    return codec.message(b"C", tag + b"\x00")


STREAM = (codec.message(b"T", I16.pack(0)) + datarow(b"a" * 10) + datarow(b"b" * 100_000) + complete(b"SELECT 2")
          + codec.error_response("42501", 'wiregate: blocked by rule "r": no') + codec.ready_for_query(b"I")
          + codec.message(b"H", b"\x00" + I16.pack(0)) + codec.message(b"d", b"x\n") + codec.message(b"c", b"")
          + complete(b"COPY 1"))
EXPECTED = [("SELECT 2", 2, 100_022, None), ("", 0, 0, '42501 wiregate: blocked by rule "r": no'), ("COPY 1", 0, 2, None)]


def summarise(chunks: list[bytes]) -> list[tuple]:
    got: list[tuple] = []
    s = ResultSummary(lambda *a: got.append(a))
    for c in chunks:
        s.feed(c)
    return got


def test_results_are_reported_per_statement():
    assert summarise([STREAM]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 5000), max_size=40))
def test_any_chunking_gives_the_same_summary(cuts):
    chunks, pos = [], 0
    for c in cuts:
        chunks.append(STREAM[pos:pos + c])
        pos += c
    chunks.append(STREAM[pos:])
    assert summarise(chunks) == EXPECTED

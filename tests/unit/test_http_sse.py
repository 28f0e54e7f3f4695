"""Sans-IO tests of the text/event-stream splitter (protocols/http/sse.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.http.codec import HttpError
from protocols.http.sse import SseEvent, SseSplitter

BOM = b"\xef\xbb\xbf"
# what an MCP server (streamable HTTP) sends: one JSON-RPC message per event
MCP_STREAM = (b"event: message\r\nid: 1\r\n"
              b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\r\n\r\n"
              b": keep-alive\r\n\r\n"
              b"event: message\r\nid: 2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\r\n\r\n")


def split_feed(splitter: SseSplitter, data: bytes, cuts: list[int]) -> list[SseEvent]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list[SseEvent] = []
    for a, b in zip(points, points[1:]):
        events += splitter.feed(data[a:b])
    return events


def fields(events: list[SseEvent]) -> list[tuple]:
    return [(e.data, e.event, e.id) for e in events]


def test_mcp_stream():
    splitter = SseSplitter()
    events = splitter.feed(MCP_STREAM)
    assert fields(events) == [
        ('{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}', "message", "1"),
        (None, None, None),  # the keep-alive comment
        ('{"jsonrpc":"2.0","id":3,"result":{}}', "message", "2"),
    ]
    assert b"".join(e.raw for e in events) == MCP_STREAM
    assert events[1].raw == b": keep-alive\r\n\r\n"
    assert splitter.flush() == b""


def test_field_rules():
    stream = (b"data: first\ndata:second\ndata:  two spaces\ndata\n"  # one leading space dropped; bare name
              b"event: a\nevent: b\n"  # the last one wins
              b"id: 7\nid: x\x00y\n"  # an id with NUL is ignored
              b"retry: 3000\nunknown: z\n:comment\n\n")
    (event,) = SseSplitter().feed(stream)
    assert event.data == "first\nsecond\n two spaces\n"
    assert (event.event, event.id) == ("b", "7")
    (event,) = SseSplitter().feed(b"data:\n\n")
    assert event.data == ""
    (event,) = SseSplitter().feed(b"event: ping\n\n")
    assert event.data is None and event.event == "ping"
    (event,) = SseSplitter().feed("data: caf\u00e9 \u2713\n\n".encode())
    assert event.data == "caf\u00e9 \u2713"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_line_endings(eol):
    stream = eol.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    events = SseSplitter().feed(stream)
    assert fields(events) == [("a\nb", "e", None), ("c", None, None)]
    assert b"".join(e.raw for e in events) == stream


def test_mixed_line_endings():
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    events = SseSplitter().feed(stream)
    assert fields(events) == [("a\nb\nc", None, None), ("d", None, None)]


def test_cr_at_the_end_of_a_field_line_waits_for_a_possible_lf():
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r") == []
    assert splitter.feed(b"\n") == []  # CRLF, one line end: no blank line yet
    (event,) = splitter.feed(b"\r\n")
    assert event.raw == b"data: a\r\n\r\n"


def test_blank_cr_line_ends_the_event_at_once():
    splitter = SseSplitter()
    (event,) = splitter.feed(b"data: a\r\r")  # a CR-only stream must not wait for the next event
    assert event.data == "a"
    # an LF that turns that CR into CRLF belongs to the same line end: skipped, not a blank line
    (event,) = splitter.feed(b"\ndata: b\r\n\r\n")
    assert (event.data, event.raw) == ("b", b"\ndata: b\r\n\r\n")
    assert splitter.feed(b"\n") == [SseEvent(raw=b"\n", data=None, event=None, id=None)]


def test_bom_at_stream_start():
    events = SseSplitter().feed(BOM + b"data: x\n\n" + BOM + b"data: y\n\n")
    assert events[0].data == "x" and events[0].raw.startswith(BOM)
    # only at the start of the stream: later it is part of a field name, so not a data field
    assert events[1].data is None
    splitter = SseSplitter()
    assert splitter.feed(BOM[:1]) == [] and splitter.feed(BOM[1:2]) == []
    (event,) = splitter.feed(BOM[2:] + b"id: 1\n\n")
    assert event.id == "1" and event.raw == BOM + b"id: 1\n\n"
    (event,) = SseSplitter().feed(b"\xef\xbbdata: z\n\n")  # not a BOM after all
    assert event.data is None


def test_flush_returns_the_unterminated_tail():
    splitter = SseSplitter()
    assert fields(splitter.feed(b"data: done\n\ndata: cut")) == [("done", None, None)]
    assert splitter.flush() == b"data: cut"
    assert splitter.flush() == b""


def test_event_size_limit():
    event = b"data: " + b"x" * 94 + b"\n\n"  # 102 bytes
    assert len(SseSplitter(max_event_bytes=102).feed(event * 3)) == 3
    with pytest.raises(HttpError) as info:
        SseSplitter(max_event_bytes=101).feed(event)
    assert info.value.status == 502
    splitter = SseSplitter(max_event_bytes=1000)
    with pytest.raises(HttpError):
        for _ in range(100):
            splitter.feed(b"data: " + b"y" * 50)  # never terminated


def test_long_event_in_small_pieces_is_not_quadratic():
    splitter = SseSplitter(max_event_bytes=1 << 22)
    splitter.feed(b"data: ")
    for _ in range(20000):
        assert splitter.feed(b"z" * 100) == []
    (event,) = splitter.feed(b"\n\n")
    assert len(event.data) == 2_000_000


def test_with_data():
    (event,) = SseSplitter().feed(b": note\r\nevent: message\r\ndata: {\"secret\":\r\ndata: 1}\r\nid: 9\r\n\r\n")
    out = event.with_data('{"secret":\n"***"}')
    assert out == b': note\nevent: message\ndata: {"secret":\ndata: "***"}\nid: 9\n\n'
    (again,) = SseSplitter().feed(out)
    assert (again.data, again.event, again.id) == ('{"secret":\n"***"}', "message", "9")
    (event,) = SseSplitter().feed(b"event: e\n\n")
    assert event.with_data("") == b"event: e\ndata:\n\n"
    (event,) = SseSplitter().feed(BOM + b"data: a\r\r")
    assert event.with_data(" b") == BOM + b"data:  b\n\n"
    assert SseSplitter().feed(event.with_data(" b"))[0].data == " b"
    splitter = SseSplitter()
    splitter.feed(b"data: a\r\r")
    (event,) = splitter.feed(b"\ndata: b\r\r")  # starts with the LF of the previous CRLF
    assert event.with_data("c") == b"data: c\n\n"


# ---------------------------------------------------------------- properties

_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_line = st.one_of(
    st.tuples(st.just("data"), _text), st.tuples(st.just("event"), _text), st.tuples(st.just("id"), _text),
    st.tuples(st.just(":"), _text), st.tuples(st.just("retry"), st.just("10")))
_events = st.lists(st.lists(_line, max_size=4), min_size=1, max_size=5)


@st.composite
def streams(draw):
    """A stream of events with a random line end on every line, and the fields each event must give."""
    eols = st.sampled_from([b"\r\n", b"\n", b"\r"])
    out = [BOM] if draw(st.booleans()) else []
    previous = b""
    expected = []
    for lines in draw(_events):
        data: list[str] = []
        event = id_ = None
        for name, value in lines:
            eol = draw(eols)
            out.append((name if name == ":" else name + ": ").encode() + value.encode() + eol)
            previous = eol
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id" and "\0" not in value:
                id_ = value
        # after a CR, an LF would join it into one CRLF instead of making the blank line
        blank = draw(st.sampled_from([b"\r\n", b"\r"] if previous == b"\r" else [b"\r\n", b"\n", b"\r"]))
        out.append(blank)
        previous = blank
        expected.append(("\n".join(data) if data else None, event, id_))
    tail = draw(st.sampled_from([b"", b"data: unterminated", b"event: x\n"]))
    if previous == b"\r" and tail.startswith(b"\n"):
        tail = b""
    return b"".join(out) + tail, expected, tail


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(0, 2000), max_size=15))
def test_splits_change_nothing(stream, cuts):
    data, expected, tail = stream
    whole = SseSplitter()
    events = whole.feed(data)
    assert fields(events) == expected
    assert b"".join(e.raw for e in events) == data[:len(data) - len(tail)]
    assert whole.flush() == tail
    splitter = SseSplitter()
    split_events = split_feed(splitter, data, cuts)
    assert fields(split_events) == expected
    # the raw bytes are all there, in order, however they were cut
    assert b"".join(e.raw for e in split_events) + splitter.flush() == data


@settings(max_examples=200, deadline=None)
@given(streams(), _text.map(lambda s: s.replace("|", "\n")))
def test_with_data_keeps_the_other_fields(stream, new):
    data, expected, _ = stream
    for event, (_, name, id_) in zip(SseSplitter().feed(data), expected):
        (again,) = SseSplitter().feed(event.with_data(new))
        assert (again.data, again.event, again.id) == (new, name, id_)

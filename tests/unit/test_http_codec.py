"""Sans-IO tests of the HTTP/1.1 codec (protocols/http/codec.py): parsing, refusals, serializers.

Traffic below is shaped like what curl, httpx and common servers send; refusals follow RFC 9112/9110
and the request-smuggling cases (CL.TE, TE.CL, duplicate lengths, obs-fold, bare CR/LF).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.http import codec
from protocols.http.codec import (
    END, BodyChunk, HttpError, InterimHead, RequestHead, RequestParser, ResponseHead, ResponseParser,
)

CURL_GET = (b"GET /api/items?id=1&x=%20y HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\n"
            b"Accept: */*\r\n\r\n")
JSON = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
HTTPX_POST = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
              b"Connection: keep-alive\r\nUser-Agent: python-httpx/0.27.0\r\n"
              b"Content-Length: %d\r\nContent-Type: application/json\r\n\r\n%b" % (len(JSON), JSON))
CHUNKED_POST = (b"POST /upload HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                b"5;name=value\r\nhello\r\n"
                b"9;a=\"quoted ext\";b\r\n, w\r\n\r\nor\r\n"
                b"2\r\nld\r\n"
                b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")
WEBSOCKET = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def messages(events: list) -> list:
    """Events folded into (head, body) pairs (interim heads alone), so chunking does not matter."""
    out: list = []
    body = None
    for ev in events:
        if isinstance(ev, InterimHead):
            out.append((ev, None))
        elif isinstance(ev, (RequestHead, ResponseHead)):
            out.append([ev, b""])
            body = out[-1]
        elif isinstance(ev, BodyChunk):
            assert ev.data, "empty chunks are not emitted"
            assert body is not None
            body[1] += ev.data
        else:
            assert ev is END
            assert body is not None
            out[-1] = (body[0], body[1], "end")
            body = None
    return [tuple(m) for m in out]


def feed_split(parser, data: bytes, cuts: list[int]) -> list:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list = []
    for a, b in zip(points, points[1:]):
        events += parser.feed(data[a:b])
    return events


def refused(data: bytes, *, parser=None) -> HttpError:
    parser = parser or RequestParser()
    with pytest.raises(HttpError) as info:
        parser.feed(data)
    return info.value


# ---------------------------------------------------------------- requests


def test_curl_get():
    events = RequestParser().feed(CURL_GET)
    assert len(events) == 2 and events[1] is END
    head = events[0]
    assert head == RequestHead(
        method="GET", target="/api/items?id=1&x=%20y", version="1.1",
        headers=[(b"Host", b"localhost:8080"), (b"User-Agent", b"curl/8.5.0"), (b"Accept", b"*/*")],
        keep_alive=True, upgrade=False, body="none", content_length=None, expect_continue=False)


def test_httpx_post_with_length():
    parser = RequestParser()
    (head, body, end), = messages(parser.feed(HTTPX_POST))
    assert head.method == "POST" and head.body == "length" and head.content_length == len(JSON)
    assert body == JSON and end == "end"
    assert codec.header(head.headers, b"content-type") == b"application/json"
    assert not parser.in_message


def test_chunked_with_extensions_and_trailers():
    parser = RequestParser()
    events = parser.feed(CHUNKED_POST)
    (head, body, _), = messages(events)
    assert head.body == "chunked" and head.content_length is None
    assert body == b"hello, w\r\n\r\nor" + b"ld"
    # trailer fields are dropped (RFC 9112 7.1.2), never mixed into the head
    assert [n for n, _ in head.headers] == [b"Host", b"Transfer-Encoding", b"Trailer"]


def test_body_streams_as_it_arrives():
    parser = RequestParser()
    head_part = HTTPX_POST[:HTTPX_POST.index(b"\r\n\r\n") + 4]
    events = parser.feed(head_part + JSON[:10])
    assert isinstance(events[0], RequestHead) and events[1:] == [BodyChunk(JSON[:10])]
    assert parser.in_message
    assert parser.feed(JSON[10:]) == [BodyChunk(JSON[10:]), END]
    assert not parser.in_message


def test_pipelined_requests_in_one_feed_keep_their_order():
    data = CURL_GET + HTTPX_POST + CHUNKED_POST + b"DELETE /items/7 HTTP/1.1\r\nHost: a\r\n\r\n"
    got = messages(RequestParser().feed(data))
    assert [(h.method, h.target) for h, *_ in got] == [
        ("GET", "/api/items?id=1&x=%20y"), ("POST", "/mcp"), ("POST", "/upload"), ("DELETE", "/items/7")]
    assert [b for _, b, _ in got] == [b"", JSON, b"hello, w\r\n\r\norld", b""]


def test_every_byte_boundary_gives_the_same_events():
    data = CURL_GET + CHUNKED_POST + HTTPX_POST + WEBSOCKET + b"\x81\x05hello"
    whole = RequestParser()
    expected = messages(whole.feed(data))
    bytewise = RequestParser()
    events: list = []
    for i in range(len(data)):
        events += bytewise.feed(data[i:i + 1])
    assert messages(events) == expected
    assert bytewise.take_leftover() == whole.take_leftover() == b"\x81\x05hello"


def test_every_single_cut_gives_the_same_events():
    data = CHUNKED_POST + HTTPX_POST
    expected = messages(RequestParser().feed(data))
    for cut in range(1, len(data)):
        parser = RequestParser()
        assert messages(parser.feed(data[:cut]) + parser.feed(data[cut:])) == expected, cut


def test_websocket_upgrade_hands_over_leftover_bytes():
    parser = RequestParser()
    events = parser.feed(CURL_GET + WEBSOCKET + b"\x81\x85abcd")
    assert messages(events)[1][0].upgrade is True
    assert events[-1] is END and parser.upgraded
    assert parser.take_leftover() == b"\x81\x85abcd"
    # after the switch nothing is parsed: later bytes wait for take_leftover too
    assert parser.feed(b"GET / HTTP/1.1\r\n\r\n") == []
    assert parser.take_leftover() == b"GET / HTTP/1.1\r\n\r\n"
    assert parser.take_leftover() == b""
    parser.feed_eof()


@pytest.mark.parametrize(("fields", "upgrade"), [
    (b"Upgrade: h2c\r\n", False),  # no Connection: upgrade
    (b"Connection: Upgrade\r\nUpgrade:\r\n", False),  # empty Upgrade
    (b"Connection: keep-alive\r\nUpgrade: websocket\r\nConnection: upgrade\r\n", True),
    (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAA\r\n", True),
])
def test_what_counts_as_an_upgrade(fields, upgrade):
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n%b\r\n" % fields + CURL_GET)
    assert events[0].upgrade is upgrade and parser.upgraded is upgrade
    if upgrade:  # the upstream may still refuse: a fresh parser then picks up where this one stopped
        assert messages(RequestParser().feed(parser.take_leftover()))[0][0].target.startswith("/api/items")
    else:
        assert len(messages(events)) == 2


def test_expect_100_continue_gives_the_head_before_the_body():
    parser = RequestParser()
    head_bytes = (b"PUT /file HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    events = parser.feed(head_bytes)
    assert len(events) == 1 and events[0].expect_continue and parser.in_message
    assert parser.feed(b"data") == [BodyChunk(b"data"), END]
    events = RequestParser().feed(b"PUT /f HTTP/1.0\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
    assert events[0].expect_continue is False  # ignored in HTTP/1.0 (RFC 9110 10.1.1)


def test_http10_keep_alive_and_host():
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
    (h1, _, _), (h2, _, _) = messages(events)
    assert h1.version == "1.0" and h1.keep_alive and not h2.keep_alive


@pytest.mark.parametrize("connection", [b"close", b"keep-alive, close", b"Close"])
def test_connection_close_stops_parsing_after_the_request(connection):
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: %b\r\n\r\nGET /2 HTTP/1.1\r\n\r\n" % connection)
    assert len(messages(events)) == 1 and not events[0].keep_alive
    assert parser.feed(b"garbage that is never parsed") == []
    parser.feed_eof()


def test_options_asterisk_and_header_details():
    data = b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-A:  padded \t\r\nx-a: second\r\nX-Empty:\r\n\r\n"
    (head, _, _), = messages(RequestParser().feed(data))
    assert head.target == "*"
    # order, duplicates and name case kept; optional whitespace around values dropped
    assert head.headers == [(b"Host", b"a"), (b"X-A", b"padded"), (b"x-a", b"second"), (b"X-Empty", b"")]


def test_leading_blank_lines_are_ignored():
    (head, _, _), = messages(RequestParser().feed(b"\r\n\r\n" + CURL_GET))
    assert head.method == "GET"


def test_content_length_zero():
    events = RequestParser().feed(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert events[0].body == "length" and events[0].content_length == 0 and events[1:] == [END]


def test_feed_eof():
    parser = RequestParser()
    parser.feed(b"\r\n")
    parser.feed_eof()  # blank lines only: nothing was cut
    for partial in (CURL_GET[:10], HTTPX_POST[:-3], CHUNKED_POST[:-2]):
        parser = RequestParser()
        parser.feed(partial)
        assert parser.in_message
        with pytest.raises(HttpError) as info:
            parser.feed_eof()
        assert info.value.status == 400
    parser = RequestParser()
    parser.feed(CURL_GET)
    parser.feed_eof()


# ---------------------------------------------------------------- request refusals


@pytest.mark.parametrize(("data", "status", "words"), [
    # smuggling: two framings, or lengths that disagree
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400,
     "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, "Content-Length"),
    # transfer-codings
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400, "chunked"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", 400,
     "Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "gzip"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501, "unknown"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, "chunked"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
    # Host
    (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "missing Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, "more than one Host"),
    (b"GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n", 400, "Host"),
    # CR / LF / NUL in values, obs-fold, bare line ends
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400, "malformed"),
    # request-target forms
    (b"GET http://internal.example/admin HTTP/1.1\r\nHost: a\r\n\r\n", 400, "absolute-form"),
    (b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n", 400, "authority-form"),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "OPTIONS"),
    (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, "fragment"),
    (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed"),
    # versions
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "version"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0"),
    (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "version"),
    (b"GET /\r\n\r\n", 505, "HTTP/0.9"),
    # not HTTP at all (a TLS ClientHello), unknown method
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed"),
    (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"),
    # upgrades we will not splice
    (WEBSOCKET[:-2] + b"Content-Length: 3\r\n\r\nabc", 400, "body"),
    (b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 400, "HTTP/1.1"),
])
def test_refused_requests(data, status, words):
    err = refused(data)
    assert err.status == status
    assert words.lower() in err.reason.lower()
    assert "\n" not in err.reason


def test_refusal_is_the_same_however_the_bytes_arrive():
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    for i in range(1, len(data)):
        parser = RequestParser()
        with pytest.raises(HttpError) as info:
            parser.feed(data[:i])
            parser.feed(data[i:])
        assert info.value.status == 400


def test_parser_is_dead_after_an_error_and_keeps_earlier_events():
    parser = RequestParser()
    with pytest.raises(HttpError) as info:
        parser.feed(CURL_GET + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert messages(info.value.events)[0][0].target == "/api/items?id=1&x=%20y"
    with pytest.raises(HttpError):
        parser.feed(CURL_GET)
    with pytest.raises(HttpError):
        parser.feed_eof()


def test_head_limit_counts_bytes_before_the_head_completes():
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 100 + b"\r\n\r\n"
    assert RequestParser(max_head_bytes=len(head)).feed(head)[-1] is END
    assert refused(head, parser=RequestParser(max_head_bytes=len(head) - 1)).status == 431
    # an endless head is refused while it streams, not when (if ever) it completes
    parser = RequestParser(max_head_bytes=1000)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    with pytest.raises(HttpError) as info:
        for _ in range(100):
            parser.feed(b"a" * 50)
    assert info.value.status == 431
    # blank lines before a request count too
    assert refused(b"\r\n" * 600, parser=RequestParser(max_head_bytes=1000)).status == 431
    # the limit is per head: a long pipeline of small heads is fine
    assert len(messages(RequestParser(max_head_bytes=200).feed(CURL_GET * 50))) == 50


def test_too_many_headers():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n"
    assert RequestParser(max_headers=11).feed(data)[-1] is END
    assert refused(data, parser=RequestParser(max_headers=10)).status == 431


def test_body_limit():
    assert RequestParser(max_body_bytes=len(JSON)).feed(HTTPX_POST)[-1] is END
    err = refused(HTTPX_POST, parser=RequestParser(max_body_bytes=len(JSON) - 1))
    assert err.status == 413 and err.events == []  # refused on the declared length, before the head
    parser = RequestParser(max_body_bytes=12)
    events = parser.feed(CHUNKED_POST[:CHUNKED_POST.index(b"hello") + 7])
    assert messages(events)[0][1] == b"hello"
    with pytest.raises(HttpError) as info:
        parser.feed(CHUNKED_POST[CHUNKED_POST.index(b"hello") + 7:])  # 16 decoded bytes
    assert info.value.status == 413
    assert RequestParser(max_body_bytes=16).feed(CHUNKED_POST)[-1] is END
    assert refused(CHUNKED_POST, parser=RequestParser(max_body_bytes=15)).status == 413


def test_chunk_data_full_of_blank_lines_costs_no_more_than_any_data():
    data = b"\r\n\r\n" * (1 << 18)  # 1 MiB that looks like head ends everywhere
    raw = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           + codec.chunk(data) + codec.LAST_CHUNK + CURL_GET)
    parser = RequestParser()
    started = time.perf_counter()
    got = messages(parser.feed(raw))
    assert time.perf_counter() - started < 0.5  # one llhttp call, not one per CRLF CRLF
    assert got[0][1] == data and got[1][0].method == "GET"


def test_endless_chunk_extension_or_trailer_is_refused():
    parser = RequestParser(max_head_bytes=1000)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: ")
    with pytest.raises(HttpError) as info:
        for _ in range(100):
            parser.feed(b"t" * 50)
    assert info.value.status == 431
    parser = RequestParser(max_head_bytes=1000)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=")
    with pytest.raises(HttpError):
        for _ in range(100):
            parser.feed(b"e" * 50)


# ---------------------------------------------------------------- responses


def response_parser(*methods: str) -> ResponseParser:
    parser = ResponseParser()
    for method in methods:
        parser.expect(method)
    return parser


def test_response_with_length_then_chunked_with_trailers():
    data = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nab\r\n\r\n\r\n3;x=y\r\ncde\r\n0\r\n"
            b"Server-Timing: db;dur=53\r\n\r\n")
    (h1, b1, _), (h2, b2, _) = messages(response_parser("GET", "POST").feed(data))
    assert (h1.status, h1.reason, h1.body, h1.content_length, b1) == (200, "OK", "length", 2, b"{}")
    assert (h2.status, h2.reason, h2.body, b2) == (201, "Created", "chunked", b"ab\r\n\r\ncde")
    assert h1.keep_alive and h2.keep_alive


def test_head_response_has_no_body_whatever_its_headers_say():
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"HTTP/1.1 200 OK\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    parser = response_parser("HEAD", "HEAD", "HEAD", "GET")
    got = messages(parser.feed(data))
    assert [(h.body, h.content_length, b) for h, b, _ in got] == [
        ("none", 1234, b""), ("none", None, b""), ("none", None, b""), ("length", 3, b"abc")]
    assert got[0][0].keep_alive
    # and split anywhere
    for cut in range(1, len(data)):
        parser = response_parser("HEAD", "HEAD", "HEAD", "GET")
        assert messages(parser.feed(data[:cut]) + parser.feed(data[cut:])) == got, cut


def test_204_and_304_have_no_body():
    data = (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    got = messages(response_parser("DELETE", "GET", "GET").feed(data))
    assert [(h.status, h.body, b) for h, b, _ in got] == [
        (204, "none", b""), (304, "none", b""), (200, "length", b"ok")]


def test_interim_responses():
    parser = response_parser("POST")
    events = parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    assert events == [InterimHead(status=100, headers=[]),
                      InterimHead(status=103, headers=[(b"Link", b"</style.css>; rel=preload")])]
    assert parser.in_message  # the final response is still owed
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert events[0].status == 200 and events[1:] == [END] and not parser.in_message


def test_interim_response_with_body_headers_has_no_body():
    data = b"HTTP/1.1 150 Odd\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    got = messages(response_parser("GET").feed(data))
    assert got[0][0] == InterimHead(status=150, headers=[(b"Content-Length", b"3")])
    assert got[1][1] == b"abc"


def test_interim_then_eof_is_a_cut_response():
    parser = response_parser("POST")
    parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    with pytest.raises(HttpError) as info:
        parser.feed_eof()
    assert info.value.status == 502


def test_close_delimited_body():
    parser = response_parser("GET")
    events = parser.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst")
    assert events[0].body == "close" and not events[0].keep_alive
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n") == [BodyChunk(b"HTTP/1.1 200 OK\r\n\r\n")]
    assert parser.feed_eof() == [END]
    assert parser.feed_eof() == []


@pytest.mark.parametrize("partial", [
    b"HTTP/1.1 200 OK\r\nContent-Le",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
])
def test_response_cut_by_eof(partial):
    parser = response_parser("GET")
    parser.feed(partial)
    with pytest.raises(HttpError) as info:
        parser.feed_eof()
    assert info.value.status == 502


def test_switching_protocols():
    parser = response_parser("GET")
    events = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi")
    assert events[0].status == 101 and events[0].body == "none" and events[1:] == [END]
    assert parser.upgraded and parser.take_leftover() == b"\x81\x02hi"
    assert parser.feed(b"more") == [] and parser.take_leftover() == b"more"
    assert parser.feed_eof() == []


@pytest.mark.parametrize(("version", "connection", "keep_alive"), [
    (b"1.1", b"", True), (b"1.1", b"Connection: close\r\n", False),
    (b"1.0", b"", False), (b"1.0", b"Connection: keep-alive\r\n", True),
])
def test_response_keep_alive(version, connection, keep_alive):
    data = b"HTTP/%b 200 OK\r\n%bContent-Length: 1\r\n\r\nx" % (version, connection)
    parser = response_parser("GET")
    events = parser.feed(data + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert events[0].keep_alive is keep_alive
    # after a response that closes the connection nothing more is read from it
    assert len(messages(events)) == (2 if keep_alive else 1)


def test_response_without_expect_is_taken_as_not_head():
    (head, body, _), = messages(ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
    assert head.body == "length" and body == b"hi"


def test_response_without_reason_phrase():
    events = response_parser("GET").feed(b"HTTP/1.1 204\r\n\r\n")
    assert events[0].reason == "" and events[0].status == 204


@pytest.mark.parametrize(("data", "words"), [
    (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/2.0"),
    (b"HTTP/0.9 200 OK\r\n\r\n", "HTTP/0.9"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "transfer-coding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "transfer-coding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "malformed"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "malformed"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "Upgrade"),
])
def test_refused_responses(data, words):
    err = refused(data, parser=response_parser("GET"))
    assert err.status == 502 and words.lower() in err.reason.lower()


def test_response_limits():
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"Content-Length: 0\r\n\r\n"
    assert ResponseParser(max_head_bytes=len(head)).feed(head)[-1] is END
    assert refused(head, parser=ResponseParser(max_head_bytes=len(head) - 1)).status == 502
    assert refused(head, parser=ResponseParser(max_headers=5)).status == 502


# ---------------------------------------------------------------- serializers and helpers


def test_request_head_roundtrip():
    headers = [(b"Host", b"backend:9000"), (b"X-Forwarded-For", b"10.0.0.1"), (b"Content-Length", b"2")]
    raw = codec.request_head("POST", "/v1/x?y=1", headers)
    assert raw == (b"POST /v1/x?y=1 HTTP/1.1\r\nHost: backend:9000\r\nX-Forwarded-For: 10.0.0.1\r\n"
                   b"Content-Length: 2\r\n\r\n")
    (head, body, _), = messages(RequestParser().feed(raw + b"{}"))
    assert (head.method, head.target, head.headers, body) == ("POST", "/v1/x?y=1", headers, b"{}")


def test_response_head_roundtrip():
    raw = codec.response_head(404, "Not Found", [(b"Content-Length", b"0")])
    assert raw == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert codec.response_head(200, "OK", [], version="1.0") == b"HTTP/1.0 200 OK\r\n\r\n"
    head = response_parser("GET").feed(raw)[0]
    assert (head.status, head.reason) == (404, "Not Found")


@pytest.mark.parametrize("bad", [
    lambda: codec.request_head("GET", "/", [(b"X", b"a\r\nInjected: 1")]),
    lambda: codec.request_head("GET", "/", [(b"X", b"a\nb")]),
    lambda: codec.request_head("GET", "/", [(b"X", b"a\x00")]),
    lambda: codec.request_head("GET", "/", [(b"Bad Name", b"a")]),
    lambda: codec.request_head("GET", "/", [(b"", b"a")]),
    lambda: codec.request_head("GET", "/a b", []),
    lambda: codec.request_head("GET", "/a\r\n", []),
    lambda: codec.request_head("G T", "/", []),
    lambda: codec.response_head(200, "OK\r\nX: y", []),
    lambda: codec.response_head(20, "OK", []),
    lambda: codec.response_head(200, "OK", [(b"X:", b"y")]),
])
def test_serializers_refuse_what_would_break_framing(bad):
    with pytest.raises(ValueError):
        bad()


def test_chunk_framing_roundtrip():
    assert codec.chunk(b"") == b""
    assert codec.chunk(b"hello") == b"5\r\nhello\r\n"
    assert codec.chunk(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    pieces = [b"a", b"", b"\r\n\r\n", b"0\r\n\r\n", b"z" * 70000]
    raw = (codec.request_head("POST", "/", [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")])
           + b"".join(codec.chunk(p) for p in pieces) + codec.LAST_CHUNK)
    (_, body, end), = messages(RequestParser(max_body_bytes=None).feed(raw))
    assert body == b"".join(pieces) and end == "end"


def test_end_to_end_headers():
    headers = [(b"Host", b"a"), (b"Connection", b"keep-alive, X-Secret"), (b"Keep-Alive", b"timeout=5"),
               (b"x-secret", b"1"), (b"TE", b"trailers"), (b"Transfer-Encoding", b"chunked"),
               (b"Upgrade", b"h2c"), (b"Proxy-Authorization", b"Basic x"), (b"Proxy-Connection", b"close"),
               (b"Trailer", b"X"), (b"Proxy-Authenticate", b"Basic"), (b"Accept", b"*/*"), (b"X-Other", b"2")]
    assert codec.end_to_end(headers) == [(b"Host", b"a"), (b"Accept", b"*/*"), (b"X-Other", b"2")]
    assert codec.HOP_BY_HOP == {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                                b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate"}


def test_header_lookup():
    headers = [(b"Accept", b"text/html, application/json"), (b"ACCEPT", b" */* ,, "), (b"Accept-Language", b"en")]
    assert codec.header(headers, b"accept") == b"text/html, application/json"
    assert codec.header(headers, b"Missing") is None
    assert codec.header_values(headers, b"Accept") == [b"text/html", b"application/json", b"*/*"]
    assert codec.header_values(headers, b"missing") == []


def test_reason_phrase():
    assert codec.reason_phrase(404) == "Not Found"
    assert codec.reason_phrase(502) == "Bad Gateway"
    assert codec.reason_phrase(599) == ""


# ---------------------------------------------------------------- properties: splits change nothing

_token = st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=12)
_value = st.text("abcxyz ABC0123;=,/*\"()", max_size=20).map(str.strip)
_path = st.text("abcz019-._~%/!$&'()*+,;=:@", max_size=20).map(lambda s: "/" + s)
_extra = st.lists(st.tuples(_token.filter(lambda t: t.lower() not in {
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "expect", "trailer"}), _value),
    max_size=4)
_body = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n\r\n", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"])


def _chunked(draw, body: bytes) -> bytes:
    """``body`` as a chunked body cut at random places, with random extensions and trailers."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=5))))
    points = [0, *cuts, len(body)]
    out = []
    for a, b in zip(points, points[1:]):
        if b > a:
            ext = draw(st.sampled_from([b"", b";a=1", b';q="x y"', b";flag"]))
            out.append(b"%x%b\r\n%b\r\n" % (b - a, ext, body[a:b]))
    trailers = draw(st.lists(st.tuples(_token, _value), max_size=2))
    out.append(b"0\r\n" + b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in trailers) + b"\r\n")
    return b"".join(out)


@st.composite
def request_stream(draw):
    """Valid pipelined requests, and for each what the parser must report."""
    wire, expected = [], []
    for _ in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]))
        target = draw(_path)
        headers = [(b"Host", b"svc.internal")] + [(n.encode(), v.encode()) for n, v in draw(_extra)]
        framing = draw(st.sampled_from(["none", "length", "chunked"]))
        body = b"" if framing == "none" else draw(_body)
        if framing == "length":
            headers.append((b"Content-Length", b"%d" % len(body)))
            payload = body
        elif framing == "chunked":
            headers.append((b"Transfer-Encoding", b"chunked"))
            payload = _chunked(draw, body)
        else:
            payload = b""
        wire.append(codec.request_head(method, target, headers) + payload)
        expected.append((method, target, headers, framing, body))
    return b"".join(wire), expected


@st.composite
def response_stream(draw):
    """Valid responses to a sequence of requests (methods given), and what the parser must report."""
    wire, methods, expected = [], [], []
    count = draw(st.integers(1, 4))
    for i in range(count):
        method = draw(st.sampled_from(["GET", "POST", "HEAD"]))
        methods.append(method)
        for status in draw(st.lists(st.sampled_from([100, 103]), max_size=2)):
            wire.append(codec.response_head(status, codec.reason_phrase(status), []))
            expected.append(("interim", status))
        status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
        headers = [(n.encode(), v.encode()) for n, v in draw(_extra)]
        body = b"" if status in (204, 304) else draw(_body)
        kinds = ["length", "chunked"] + (["close"] if i == count - 1 and status not in (204, 304) else [])
        framing = draw(st.sampled_from(kinds))
        if framing == "length":
            headers.append((b"Content-Length", b"%d" % len(body)))
            payload = body
        elif framing == "chunked":
            headers.append((b"Transfer-Encoding", b"chunked"))
            payload = _chunked(draw, body)
        else:
            payload = body
        if method == "HEAD" or status in (204, 304):
            framing, body, payload = "none", b"", b""
        wire.append(codec.response_head(status, codec.reason_phrase(status), headers) + payload)
        expected.append((status, headers, framing, body))
    return b"".join(wire), methods, expected


def _request_summary(got):
    return [(h.method, h.target, h.headers, h.body, b) for h, b, end in got]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_stream(), st.lists(st.integers(0, 5000), max_size=12))
def test_request_splits_change_nothing(stream, cuts):
    data, expected = stream
    whole = messages(RequestParser().feed(data))
    assert _request_summary(whole) == expected
    parser = RequestParser()
    assert messages(feed_split(parser, data, cuts)) == whole
    assert not parser.in_message
    parser.feed_eof()


def _response_summary(got):
    out = []
    for m in got:
        head = m[0]
        if isinstance(head, InterimHead):
            out.append(("interim", head.status))
        else:
            out.append((head.status, head.headers, head.body, m[1]))
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response_stream(), st.lists(st.integers(0, 5000), max_size=12))
def test_response_splits_change_nothing(stream, cuts):
    data, methods, expected = stream
    results = []
    for split in (False, True):
        parser = response_parser(*methods)
        events = feed_split(parser, data, cuts) if split else parser.feed(data)
        events += parser.feed_eof()
        results.append(messages(events))
        assert all(len(m) == 2 or m[2] == "end" for m in results[-1])
    assert results[0] == results[1]
    assert _response_summary(results[0]) == expected


@settings(max_examples=100, deadline=None)
@given(request_stream(), st.binary(min_size=1, max_size=40), st.lists(st.integers(0, 5000), max_size=8))
def test_upgrade_leftover_survives_splits(stream, tail, cuts):
    data, expected = stream
    data += WEBSOCKET + tail
    parser = RequestParser()
    got = messages(feed_split(parser, data, cuts))
    assert len(got) == len(expected) + 1 and got[-1][0].upgrade
    assert parser.take_leftover() == tail


_mutations = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.integers(0, 5000),
                                st.sampled_from(list(b"\r\n:;, \t\x000123456789abfxHTP/."))), min_size=1, max_size=4)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for op, where, byte in mutations:
        i = where % (len(out) + 1)
        if op == "insert":
            out[i:i] = bytes([byte])
        elif out:
            i = min(i, len(out) - 1)
            if op == "delete":
                del out[i]
            else:
                out[i] = byte
    return bytes(out)


def _verdict(parser, data: bytes, cuts: list[int]):
    """(complete messages, error status or None); any exception but HttpError fails the test."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list = []
    status = None
    try:
        for a, b in zip(points, points[1:]):
            events += parser.feed(data[a:b])
        events += parser.feed_eof() or []
    except HttpError as exc:
        events += exc.events
        status = exc.status
    while events and events[-1] is not END:  # drop a message the error cut short
        events.pop()
    return messages(events), status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_stream(), response_stream(), _mutations, st.lists(st.integers(0, 5000), max_size=8))
def test_damaged_streams_get_the_same_verdict_however_split(requests, responses, mutations, cuts):
    data = _mutate(requests[0] + WEBSOCKET + b"tail", mutations)
    assert _verdict(RequestParser(max_body_bytes=200), data, []) == _verdict(
        RequestParser(max_body_bytes=200), data, cuts)
    data, methods, _ = responses
    data = _mutate(data, mutations)
    assert _verdict(response_parser(*methods), data, []) == _verdict(response_parser(*methods), data, cuts)

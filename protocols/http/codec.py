"""Sans-IO HTTP/1.1 codec for the reverse proxy: message parsers, head serializers, header helpers.

Parsing is done by llhttp (through ``httptools``); this module adds what a proxy needs on top and
what llhttp leaves to its caller: a strict RFC 9112/9110 profile against request smuggling (one
framing per message, one Host, origin-form targets only), head and body size limits, the
no-body rule for responses to HEAD, and events that the asyncio glue can stream.

How the byte stream is cut before it reaches llhttp, and why: httptools reports no positions, so
``feed`` hands llhttp one *segment* at a time, cut where the current message phase can end. A head
ends right after its first CRLF CRLF (llhttp is strict: bare LF or CR are errors); a Content-Length
body after that many bytes; a chunked body where its chunk-size lines say (a small locator reads
only those lines and skips the data; llhttp parses and checks everything and must agree). So a
message never ends inside a segment: head sizes are counted exactly, a HEAD response can be ended
at its head, and the events do not depend on how the stream was split.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import deque
from http import HTTPStatus

import msgspec
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

__all__ = [
    "END", "HOP_BY_HOP", "LAST_CHUNK", "BodyChunk", "Headers", "HttpError", "InterimHead", "MessageEnd",
    "RequestHead", "RequestParser", "ResponseHead", "ResponseParser", "chunk", "end_to_end", "header",
    "header_values", "reason_phrase", "request_head", "response_head",
]

Headers = list[tuple[bytes, bytes]]

LAST_CHUNK = b"0\r\n\r\n"
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate",
})

_CRLF2 = b"\r\n\r\n"
_OWS = b" \t"
# RFC 3986 host: IP-literal or reg-name / IPv4, then an optional port; empty is allowed (RFC 9110 7.2)
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_TARGET = re.compile(r"[\x21-\x7e]+")
_KNOWN_CODINGS = frozenset({b"chunked", b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress", b"identity"})

# parser phases: what the next bytes are
_HEAD, _LENGTH, _CHUNKED, _CLOSE, _DONE = range(5)
# where a chunked body stands: at a chunk-size line, in chunk data (and its CRLF), in the trailer section
_CK_SIZE, _CK_DATA, _CK_TRAILER = range(3)
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(Exception):
    """The peer sent something this codec refuses; ``status``/``reason`` are safe to send to a client.

    ``events`` holds what the failing ``feed`` had parsed before the error, in order (the
    requests before a bad pipelined one, say); the parser is dead after an error.
    """

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.events: list[RequestHead | ResponseHead | InterimHead | BodyChunk | MessageEnd] = []


class RequestHead(msgspec.Struct, frozen=True):
    method: str
    target: str
    version: str  # "1.1" | "1.0"
    headers: Headers
    keep_alive: bool  # what the client asked for
    upgrade: bool  # Connection: upgrade with an Upgrade header
    body: str  # "none" | "length" | "chunked"
    content_length: int | None
    expect_continue: bool  # Expect: 100-continue (HTTP/1.1 only)


class ResponseHead(msgspec.Struct, frozen=True):
    status: int
    reason: str
    version: str
    headers: Headers
    keep_alive: bool
    body: str  # "none" | "length" | "chunked" | "close" (until EOF)
    content_length: int | None  # as declared (also when body is "none", e.g. for HEAD)


class InterimHead(msgspec.Struct, frozen=True):
    """A 1xx response other than 101; the final response follows."""
    status: int
    headers: Headers


class BodyChunk(msgspec.Struct, frozen=True):
    data: bytes  # decoded body bytes (never empty)


class MessageEnd(msgspec.Struct, frozen=True):
    pass


END = MessageEnd()


# ---------------------------------------------------------------- header helpers


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (case-insensitive), or None."""
    name = name.lower()
    for n, v in headers:
        if len(n) == len(name) and n.lower() == name:
            return v
    return None


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of header ``name``, comma-separated lists flattened, items stripped, empty ones dropped."""
    name = name.lower()
    out: list[bytes] = []
    for n, v in headers:
        if len(n) == len(name) and n.lower() == name:
            out.extend(item for item in (part.strip(_OWS) for part in v.split(b",")) if item)
    return out


def end_to_end(headers: Headers) -> Headers:
    """``headers`` without hop-by-hop fields and without the fields named in Connection."""
    drop = HOP_BY_HOP.union(token.lower() for token in header_values(headers, b"connection"))
    return [(n, v) for n, v in headers if n.lower() not in drop]


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# ---------------------------------------------------------------- serializers


def _head_lines(first: bytes, headers: Headers) -> bytes:
    parts = [first]
    for n, v in headers:
        if _TOKEN.fullmatch(n) is None or _BAD_VALUE.search(v) is not None:
            raise ValueError(f"invalid header field {n[:40]!r}")
        parts.append(n + b": " + v + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def request_head(method: str, target: str, headers: Headers) -> bytes:
    """``METHOD TARGET HTTP/1.1`` and the header lines; ValueError on anything that would break framing."""
    if _TOKEN.fullmatch(method.encode("latin-1")) is None or _TARGET.fullmatch(target) is None:
        raise ValueError("invalid method or request-target")
    return _head_lines(f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), headers)


def response_head(status: int, reason: str, headers: Headers, version: str = "1.1") -> bytes:
    """``HTTP/1.1 STATUS REASON`` and the header lines; ValueError on anything that would break framing."""
    if not 100 <= status <= 999 or version not in ("1.1", "1.0") or _BAD_VALUE.search(reason.encode("latin-1")):
        raise ValueError("invalid status line")
    return _head_lines(f"HTTP/{version} {status} {reason}\r\n".encode("latin-1"), headers)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; b"" for empty data (an empty chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---------------------------------------------------------------- parsers


class _Fields:
    """What the framing and routing decisions need from a head, gathered in one pass."""

    __slots__ = ("hosts", "lengths", "codings", "connection", "upgrade", "expect")

    def __init__(self, headers: Headers):
        self.hosts: list[bytes] = []
        self.lengths: list[bytes] = []
        self.codings: list[bytes] = []
        self.connection: set[bytes] = set()
        self.upgrade = False
        self.expect: list[bytes] = []
        for n, v in headers:
            name = n.lower()
            if name == b"host":
                self.hosts.append(v)
            elif name == b"content-length":
                self.lengths.append(v)
            elif name == b"transfer-encoding":
                self.codings.extend(_items(v))
            elif name == b"connection":
                self.connection.update(_items(v))
            elif name == b"upgrade":
                self.upgrade = self.upgrade or bool(v)  # llhttp ignores an empty one, and so do we
            elif name == b"expect":
                self.expect.extend(_items(v))

    def content_length(self) -> int | None:
        """The declared length; ValueError when invalid or when the values differ."""
        if not self.lengths:
            return None
        values = {item.strip(_OWS) for v in self.lengths for item in v.split(b",")}
        if len(values) != 1:
            raise ValueError("differing Content-Length values")
        value = values.pop()
        if not value.isdigit() or len(value) > 18:
            raise ValueError("invalid Content-Length")
        return int(value)

    def keep_alive(self, version: str) -> bool:
        if b"close" in self.connection:
            return False
        return version == "1.1" or b"keep-alive" in self.connection


def _items(value: bytes) -> list[bytes]:
    return [item for item in (part.strip(_OWS).lower() for part in value.split(b",")) if item]


class _MessageParser(ABC):
    """The segment loop shared by both directions; subclasses supply llhttp's callbacks."""

    _bad = 400  # status of a malformed message
    _too_big = 431  # status of a head over the limits
    _upgrading = False

    def __init__(self, max_head_bytes: int, max_headers: int):
        self._max_head = max_head_bytes
        self._max_headers = max_headers
        self._parser: HttpRequestParser | HttpResponseParser = self._new_parser()
        self._phase = _HEAD
        self._changed = False  # a callback moved to another phase during the current segment
        self._tail = b""  # last bytes of the head (or trailer section), to find a CRLF CRLF cut by a feed
        self._head_bytes = 0
        self._remaining = 0
        # where the chunked body stands (see _chunked_end)
        self._ck_state = _CK_SIZE
        self._ck_left = 0
        self._ck_line = b""
        self._ck_trailer_bytes = 0
        self._ck_guard = False  # a chunked-body segment is being parsed
        self._ck_ends = False  # ... and it ends with the body
        self._ck_error: HttpError | None = None  # the locator found a fault where the segment ends
        self._headers: Headers = []
        self._trailers = 0
        self._events: list = []
        self._error: HttpError | None = None
        self._cb_error: HttpError | None = None
        self._leftover = b""
        self.in_message = False
        self.upgraded = False

    @abstractmethod
    def _new_parser(self) -> HttpRequestParser | HttpResponseParser:
        """A fresh llhttp parser for this direction, with the subclass as its callback object."""

    def take_leftover(self) -> bytes:
        """The bytes that followed the upgrade (request or 101 response) head; they belong to the new protocol."""
        data, self._leftover = self._leftover, b""
        return data

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            raise self._error
        if self.upgraded:
            # parsing stopped at the upgrade: whatever comes now belongs to the other protocol
            self._leftover += bytes(data)
            return []
        events = self._events = []
        if data:
            try:
                self._run(data if type(data) is bytes else bytes(data))
            except HttpError as exc:
                exc.events = events
                self._error = exc
                raise
        return events

    def _run(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        view = None
        while pos < n:
            phase = self._phase
            if phase == _LENGTH:
                end = min(n, pos + self._remaining)
            elif phase == _CHUNKED:
                end = self._chunked_end(data, pos, n)
            elif phase == _CLOSE:
                end = n
            elif phase == _DONE:
                if self.upgraded:
                    self._leftover += data[pos:]
                # else: after a message that closes the connection, nothing more is processed (RFC 9112 9.6)
                return
            else:
                end = self._crlf2_end(data, pos)
                if end < 0:
                    end = n
                self._head_bytes += end - pos
                if self._head_bytes > self._max_head:
                    raise HttpError(self._too_big, f"message head larger than {self._max_head} bytes")
            if pos == 0 and end == n:
                segment = data
            else:
                if view is None:
                    view = memoryview(data)
                segment = view[pos:end]
            self._changed = False
            if phase == _CHUNKED:
                self._ck_guard = True
                if end > pos:
                    self._execute(segment)
                self._ck_guard = False
                if self._ck_error is not None:
                    raise self._ck_error
                if self._ck_ends and not self._changed:
                    raise HttpError(self._bad, "malformed chunked body: it does not end where its framing says")
            else:
                self._execute(segment)
                if self._upgrading and self._phase == _DONE and not self.upgraded:
                    raise HttpError(self._bad, "malformed HTTP message: inconsistent protocol switch")
            if self._changed:
                self._tail = b""
            elif phase == _HEAD:
                self._tail = data[end - 3:end] if end - pos >= 3 else (self._tail + data[pos:end])[-3:]
            pos = end

    def _crlf2_end(self, data: bytes, pos: int) -> int:
        """Just past the first CRLF CRLF of this phase (``_tail`` holds its earlier bytes), else -1."""
        tail = self._tail
        if tail:
            i = (tail + data[pos:pos + 3]).find(_CRLF2)
            if i >= 0:
                return pos + i + 4 - len(tail)
        i = data.find(_CRLF2, pos)
        return i if i < 0 else i + 4

    def _chunked_end(self, data: bytes, pos: int, n: int) -> int:
        """Where the chunked body ends in ``data[pos:]`` (then ``_ck_ends``), else ``n``.

        Only chunk-size lines are looked at, to skip the chunk data: an end found by searching for
        CRLF CRLF would stop at every one of them inside the data. llhttp still parses and checks
        all of it; the two must agree on the end (see _run and on_message_complete).
        """
        self._ck_ends = False
        state = self._ck_state
        while pos < n:
            if state == _CK_DATA:
                step = min(self._ck_left, n - pos)
                self._ck_left -= step
                pos += step
                if not self._ck_left:
                    state = _CK_SIZE
            elif state == _CK_SIZE:
                i = data.find(b"\n", pos)
                line = self._ck_line + data[pos:n if i < 0 else i]
                if len(line) > self._max_head:
                    return self._ck_refuse(self._too_big, "chunk extension too large", pos)
                if i < 0:
                    self._ck_line = line
                    break
                size = line[:-1].split(b";", 1)[0].rstrip(_OWS)
                if line[-1:] != b"\r" or not 0 < len(size) <= 15 or _HEX.fullmatch(size) is None:
                    return self._ck_refuse(self._bad, "malformed chunked body: invalid chunk size line", pos)
                self._ck_line = b""
                pos = i + 1
                self._ck_left = int(size, 16) + 2  # the data and its CRLF
                if self._ck_left > 2:
                    state = _CK_DATA
                else:
                    state = _CK_TRAILER
                    self._tail = b"\r\n"  # the empty line that ends the trailer section may come first
                    self._ck_trailer_bytes = 0
            else:
                end = self._crlf2_end(data, pos)
                self._ck_trailer_bytes += (n if end < 0 else end) - pos
                if self._ck_trailer_bytes > self._max_head:
                    return self._ck_refuse(self._too_big, "trailer section too large", pos)
                if end >= 0:
                    self._ck_state = _CK_SIZE
                    self._tail = b""
                    self._ck_ends = True
                    return end
                self._tail = data[n - 3:n] if n - pos >= 3 else (self._tail + data[pos:n])[-3:]
                break
        self._ck_state = state
        return n

    def _ck_refuse(self, status: int, reason: str, pos: int) -> int:
        # refused once llhttp has had the bytes before the fault, so that what it finds there
        # (a body over its limit, say) comes first, as it would had the bytes come one by one
        self._ck_error = HttpError(status, reason)
        return pos

    def _execute(self, segment: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(segment)
        except HttpParserUpgrade as exc:
            if self._phase != _DONE or not self._upgrading:
                raise HttpError(self._bad, "unexpected protocol switch") from None
            self.upgraded = True
            self._leftover = bytes(segment[exc.args[0]:])
        except HttpParserError as exc:
            if self._cb_error is not None:
                raise self._cb_error from None
            raise self._malformed(str(exc)) from None

    def _malformed(self, detail: str) -> HttpError:
        return HttpError(self._bad, f"malformed HTTP message: {detail}")

    def _fail(self, status: int, reason: str) -> HttpError:
        # raised inside an llhttp callback: llhttp turns it into its own error, _execute re-raises this one
        self._cb_error = HttpError(status, reason)
        return self._cb_error

    def _enter_chunked(self) -> None:
        self._phase = _CHUNKED
        self._ck_state = _CK_SIZE
        self._ck_line = b""

    def _check_chunked_end(self) -> None:
        if self._phase == _CHUNKED and not self._ck_ends:
            raise self._fail(self._bad, "malformed chunked body: it ends before its framing says")

    # ---- llhttp callbacks common to both directions

    def on_message_begin(self) -> None:
        if self._ck_guard:
            # llhttp ended a chunked body before the segment did: the two disagree on the framing
            raise self._fail(self._bad, "malformed chunked body: it ends before its framing says")
        self.in_message = True
        self._headers = []
        self._trailers = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase == _HEAD:
            headers = self._headers
            headers.append((name, value.rstrip(_OWS)))
            if len(headers) > self._max_headers:
                raise self._fail(self._too_big, f"more than {self._max_headers} header fields")
        else:
            # a trailer field: a proxy may drop trailers (RFC 9112 7.1.2), but they still count
            self._trailers += 1
            if self._trailers > self._max_headers:
                raise self._fail(self._too_big, f"more than {self._max_headers} trailer fields")


class RequestParser(_MessageParser):
    """Client-to-proxy requests: RequestHead, BodyChunk..., END per request, in order."""

    def __init__(self, *, max_head_bytes: int = 16384, max_headers: int = 100, max_body_bytes: int | None = None):
        self._max_body = max_body_bytes
        self._body_bytes = 0
        self._url = b""
        self._upgrading = False
        self._keep_alive = True
        super().__init__(max_head_bytes, max_headers)

    def _new_parser(self) -> HttpRequestParser:
        return HttpRequestParser(self)

    def feed(self, data: bytes) -> list[RequestHead | BodyChunk | MessageEnd]:
        """Parse what arrived; raises HttpError (400, 413, 431, 501, 505) on a request it refuses."""
        return super().feed(data)

    def feed_eof(self) -> None:
        """The client closed its side; HttpError(400) when that cut a request short."""
        if self._error is not None:
            raise self._error
        if self.in_message and not self.upgraded:
            self._error = HttpError(400, "connection closed in the middle of a request")
            raise self._error

    def _malformed(self, detail: str) -> HttpError:
        if detail in ("Invalid HTTP version", "Pause on PRI/Upgrade"):
            return HttpError(505, "HTTP version not supported (HTTP/1.1 and 1.0 only)")
        return HttpError(400, f"malformed request: {detail}")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url = b""
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._fail(505, f"HTTP/{version} not supported (HTTP/1.1 and 1.0 only)")
        method = parser.get_method().decode("ascii")
        target = self._url.decode("ascii", "replace")
        if method == "CONNECT":
            raise self._fail(400, "CONNECT (authority-form request-target) is not supported: this is a reverse proxy")
        if target == "*":
            if method != "OPTIONS":
                raise self._fail(400, "request-target \"*\" is only allowed with OPTIONS")
        elif not target.startswith("/"):
            if "://" in target:
                raise self._fail(400, "absolute-form request-target is not supported: this is a reverse proxy")
            raise self._fail(400, "request-target must be an absolute path (origin-form)")
        elif "#" in target:
            raise self._fail(400, "request-target must not contain a fragment")
        headers = self._headers
        f = _Fields(headers)
        if len(f.hosts) > 1:
            raise self._fail(400, "more than one Host header")
        if not f.hosts and version == "1.1":
            raise self._fail(400, "missing Host header")
        if f.hosts and _HOST.fullmatch(f.hosts[0]) is None:
            raise self._fail(400, "invalid Host header")
        try:
            length = f.content_length()
        except ValueError as exc:
            raise self._fail(400, str(exc)) from None
        body = "none"
        if f.codings:
            if length is not None:
                raise self._fail(400, "both Content-Length and Transfer-Encoding")
            if version == "1.0":
                raise self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            if f.codings[-1] != b"chunked":
                raise self._fail(400, "Transfer-Encoding must end with chunked")
            if f.codings.count(b"chunked") > 1:
                raise self._fail(400, "chunked applied more than once")
            if len(f.codings) > 1:
                unknown = [c for c in f.codings if c.split(b";")[0].strip(_OWS) not in _KNOWN_CODINGS]
                what = "unknown" if unknown else "unsupported"
                raise self._fail(501, f"{what} transfer-coding: {(unknown or f.codings)[0].decode('latin-1')[:40]}")
            body = "chunked"
        elif length is not None:
            body = "length"
        upgrade = f.upgrade and b"upgrade" in f.connection
        if upgrade:
            if version == "1.0":
                raise self._fail(400, "Upgrade needs HTTP/1.1")
            if body == "chunked" or length:
                raise self._fail(400, "an upgrade request cannot have a body")
        if self._max_body is not None and length is not None and length > self._max_body:
            raise self._fail(413, f"request body larger than {self._max_body} bytes")
        keep_alive = f.keep_alive(version)
        self._keep_alive = keep_alive
        self._upgrading = upgrade
        self._events.append(RequestHead(
            method=method, target=target, version=version, headers=headers, keep_alive=keep_alive,
            upgrade=upgrade, body=body, content_length=length,
            # RFC 9110 10.1.1: an HTTP/1.0 client cannot have meant it
            expect_continue=version == "1.1" and b"100-continue" in f.expect))
        self._head_bytes = 0
        self._changed = True
        if body == "chunked":
            self._enter_chunked()
        elif length:
            self._phase = _LENGTH
            self._remaining = length

    def on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._max_body is not None and self._body_bytes > self._max_body:
            raise self._fail(413, f"request body larger than {self._max_body} bytes")
        if self._phase == _LENGTH:
            self._remaining -= len(data)
        self._events.append(BodyChunk(data))

    def on_message_complete(self) -> None:
        self._check_chunked_end()
        self._events.append(END)
        self.in_message = False
        self._phase = _DONE if self._upgrading or not self._keep_alive else _HEAD
        self._changed = True
        self._head_bytes = 0


class ResponseParser(_MessageParser):
    """Upstream responses: [InterimHead...] ResponseHead, BodyChunk..., END per response, in order."""

    _bad = 502
    _too_big = 502

    def __init__(self, *, max_head_bytes: int = 65536, max_headers: int = 200):
        self._expected: deque[str] = deque()
        self._reason = b""
        self._skip_complete = False
        self._reset = False
        self._keep_alive = True
        self._upgrading = False
        super().__init__(max_head_bytes, max_headers)

    def _new_parser(self) -> HttpResponseParser:
        return HttpResponseParser(self)

    def expect(self, method: str) -> None:
        """Announce the request the next response answers (FIFO); a HEAD request's response has no body.

        With nothing announced, a response is taken as the answer to a request other than HEAD.
        """
        self._expected.append(method.upper())

    def feed(self, data: bytes) -> list[ResponseHead | InterimHead | BodyChunk | MessageEnd]:
        """Parse what arrived; raises HttpError(502) on a response it refuses."""
        return super().feed(data)

    def feed_eof(self) -> list[ResponseHead | InterimHead | BodyChunk | MessageEnd]:
        """The upstream closed: [END] for a body read until close; HttpError(502) if that cut a response short."""
        if self._error is not None:
            raise self._error
        if self.upgraded or self._phase == _DONE:
            return []
        if self._phase == _CLOSE:
            self._phase = _DONE
            self.in_message = False
            return [END]
        if self.in_message:
            self._error = HttpError(502, "upstream closed the connection in the middle of a response")
            raise self._error
        return []

    def _execute(self, segment: bytes | memoryview) -> None:
        super()._execute(segment)
        if self._reset:
            # the message ended at its head though llhttp may wait for a body (HEAD): the segment
            # ended at that head, so a fresh parser starts exactly at the next message
            self._reset = False
            self._skip_complete = False
            self._parser = HttpResponseParser(self)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._fail(502, f"upstream answered with HTTP/{version}")
        status = parser.get_status_code()
        headers = self._headers
        f = _Fields(headers)
        self._head_bytes = 0
        if 100 <= status < 200 and status != 101:
            # interim: no body whatever the headers say; the final response still has to come
            self._events.append(InterimHead(status=status, headers=headers))
            self._skip_complete = self._reset = self._changed = True
            return
        method = self._expected.popleft() if self._expected else ""
        try:
            length = f.content_length()
        except ValueError as exc:
            raise self._fail(502, f"upstream sent {exc}") from None
        if f.codings and f.codings != [b"chunked"]:
            raise self._fail(502, "upstream used a transfer-coding other than chunked")
        if f.codings and length is not None:
            raise self._fail(502, "upstream sent both Content-Length and Transfer-Encoding")
        keep_alive = f.keep_alive(version)
        reason = self._reason.decode("latin-1")
        if status == 101:
            if not (f.upgrade and b"upgrade" in f.connection):
                raise self._fail(502, "101 response without Upgrade and Connection: upgrade")
            self._upgrading = True
            self._keep_alive = False
            self._events.append(ResponseHead(status=status, reason=reason, version=version, headers=headers,
                                             keep_alive=keep_alive, body="none", content_length=length))
            return  # llhttp completes the message and pauses for the upgrade
        if method == "HEAD" or status == 204 or status == 304:
            body = "none"
        elif f.codings:
            body = "chunked"
        elif length is not None:
            body = "length"
        else:
            body = "close"
            keep_alive = False
        self._keep_alive = keep_alive
        self._events.append(ResponseHead(status=status, reason=reason, version=version, headers=headers,
                                         keep_alive=keep_alive, body=body, content_length=length))
        self._changed = True
        if body == "none":
            self._skip_complete = self._reset = True
            self._message_done()
        elif body == "chunked":
            self._enter_chunked()
        elif body == "close":
            self._phase = _CLOSE
        elif length:
            self._phase = _LENGTH
            self._remaining = length
        # Content-Length: 0 - llhttp completes the message right away

    def on_body(self, data: bytes) -> None:
        if self._phase == _LENGTH:
            self._remaining -= len(data)
        self._events.append(BodyChunk(data))

    def on_message_complete(self) -> None:
        if self._skip_complete:
            return
        self._check_chunked_end()
        self._message_done()

    def _message_done(self) -> None:
        self._events.append(END)
        self.in_message = False
        self._phase = _DONE if self._upgrading or not self._keep_alive else _HEAD
        self._changed = True
        self._head_bytes = 0

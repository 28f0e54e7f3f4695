"""Sans-IO splitter for text/event-stream bodies (WHATWG HTML, "Server-sent events").

The proxy looks at each event of a streamed response (to mask or check its data) and must pass
everything else through byte for byte. So events keep their raw bytes, and only a changed event is
re-encoded (``SseEvent.with_data``). Lines end in CRLF, LF or CR; an event ends at a blank line;
a UTF-8 BOM may open the stream (it stays in the first event's raw bytes).

A blank line that is a lone CR at the end of the bytes received so far ends its event at once,
although an LF may follow to make it CRLF: a CR-only stream must not wait for the next event. Such an
LF then opens the next event's raw bytes and is skipped when that event is parsed.
"""

from __future__ import annotations

import re

import msgspec

from protocols.http.codec import HttpError

__all__ = ["SseEvent", "SseSplitter"]

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n|\r|\n")
_CR = 0x0D
_LF = 0x0A


class SseEvent(msgspec.Struct, frozen=True):
    raw: bytes  # the event's bytes as received, its terminating blank line included
    data: str | None  # data lines joined with "\n"; None when the event has no data field
    event: str | None
    id: str | None

    def with_data(self, data: str) -> bytes:
        """This event re-encoded with ``data``: other lines kept in order, LF line endings, blank line at end.

        The new data lines take the place of the first data line (or go last when there was none).
        """
        raw = self.raw
        prefix = b""
        if raw.startswith(_BOM):
            prefix, raw = _BOM, raw[3:]
        if len(raw) > 1 and raw[0] == _LF:
            raw = raw[1:]  # the LF of a CRLF whose CR ended the previous event
        new = [b"data: " + line if line else b"data:" for line in data.encode("utf-8").split(b"\n")]
        out: list[bytes] = []
        placed = False
        for line in _EOL.split(raw):
            if not line:
                continue  # the terminating blank line (and the empty piece after it)
            name = line.split(b":", 1)[0]
            if name == b"data":
                if not placed:
                    out.extend(new)
                    placed = True
                continue
            out.append(line)
        if not placed:
            out.extend(new)
        return prefix + b"\n".join(out) + b"\n\n"


def _event(raw: bytes, lines: list[bytes]) -> SseEvent:
    data: list[str] = []
    has_data = False
    event = id_ = None
    for line in lines:
        if line[:1] == b":":
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            has_data = True
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:  # the spec ignores an id holding NUL
                id_ = value.decode("utf-8", "replace")
    return SseEvent(raw=raw, data="\n".join(data) if has_data else None, event=event, id=id_)


class SseSplitter:
    """Cuts a text/event-stream into complete events; ``flush`` gives back an unterminated tail."""

    def __init__(self, *, max_event_bytes: int = 1 << 20):
        self._max = max_event_bytes
        self._buf = bytearray()
        self._scan = 0  # start of the first line of the pending event not parsed yet
        self._searched = 0  # no line end in _buf[_scan:_searched]
        self._lines: list[bytes] = []
        self._bom_checked = False
        self._skip_lf = False  # the previous event ended on a CR that an LF may complete

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events completed by ``data``; HttpError(502) once an event grows past the size limit."""
        buf = self._buf
        buf += data
        if not self._bom_checked:
            if len(buf) < 3 and _BOM.startswith(buf):
                return []
            self._bom_checked = True
            if buf.startswith(_BOM):
                self._scan = self._searched = 3
        events: list[SseEvent] = []
        while True:
            if self._skip_lf and buf:
                self._skip_lf = False
                if buf[0] == _LF:
                    self._scan = self._searched = 1
            match = _EOL.search(buf, max(self._scan, self._searched))
            if match is None:
                self._searched = len(buf)
                break
            start, end = match.span()
            cr_last = end == len(buf) and end - start == 1 and buf[start] == _CR
            if start != self._scan:  # a field or comment line
                if cr_last:
                    self._searched = start  # CR at the end: wait, it may be CRLF
                    break
                self._lines.append(bytes(buf[self._scan:start]))
                self._scan = self._searched = end
                continue
            # a blank line: the event is complete
            if end > self._max:
                break
            events.append(_event(bytes(buf[:end]), self._lines))
            del buf[:end]
            self._lines = []
            self._scan = self._searched = 0
            self._skip_lf = cr_last
        if len(buf) > self._max:
            raise HttpError(502, f"server-sent event larger than {self._max} bytes")
        return events

    def flush(self) -> bytes:
        """The bytes of an event that the stream ended before its blank line (dropped by the spec), raw."""
        tail = bytes(self._buf)
        self._buf = bytearray()
        self._scan = self._searched = 0
        self._lines = []
        return tail

"""Result summaries for the recorder, read from what the client receives (sans-IO).

``ResultSummary.feed`` is given the bytes the gateway sends to the client — after masking, so
nothing it reports can hold an unmasked value — and calls ``on_result(tag, rows, nbytes,
error)`` once per statement result: at every CommandComplete (``tag`` is its command tag, e.g.
``SELECT 3``) and at every ErrorResponse (``tag`` is "" and ``error`` is ``"SQLSTATE message"``).
``rows`` and ``nbytes`` count the DataRow / CopyData messages since the previous result.
Rows are counted from message headers only: large rows are never held.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.postgres import codec
from protocols.postgres.codec import U32, ProtocolViolation

OnResult = Callable[[str, int, int, "str | None"], None]

_DATAROW, _COPYDATA, _COMPLETE, _ERROR = 0x44, 0x64, 0x43, 0x45
# a CommandComplete or ErrorResponse larger than this is summarised without its text
_MAX_TEXT_MESSAGE = 64 * 1024


class ResultSummary:
    __slots__ = ("_on_result", "_held", "_skip", "rows", "nbytes")

    def __init__(self, on_result: OnResult) -> None:
        self._on_result = on_result
        self._held = b""  # an incomplete header, or an incomplete CommandComplete / ErrorResponse
        self._skip = 0  # bytes of a counted message still to pass
        self.rows = 0
        self.nbytes = 0

    def feed(self, data: bytes) -> None:
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        pos = min(self._skip, n)
        self._skip -= pos
        rows, nbytes = self.rows, self.nbytes  # locals: this runs for every row of every result
        unpack = U32.unpack_from
        try:
            while pos < n:
                if n - pos < 5:
                    self._held = data[pos:]
                    return
                t = data[pos]
                length = unpack(data, pos + 1)[0]
                if length < 4:
                    raise ProtocolViolation(f"invalid message length {length} towards the client")
                end = pos + 1 + length
                if t == _DATAROW:
                    rows += 1
                    nbytes += length - 4
                elif t == _COPYDATA:
                    nbytes += length - 4
                elif t == _COMPLETE or t == _ERROR:
                    if length > _MAX_TEXT_MESSAGE:
                        body = b""
                    elif end > n:
                        self._held = data[pos:]
                        return
                    else:
                        body = data[pos + 5:end]
                    self.rows, self.nbytes = rows, nbytes
                    self._result(t, body)
                    rows = nbytes = 0
                if end > n:
                    self._skip = end - n
                    return
                pos = end
        finally:
            self.rows, self.nbytes = rows, nbytes

    def _result(self, t: int, body: bytes) -> None:
        rows, nbytes = self.rows, self.nbytes
        self.rows = self.nbytes = 0
        if t == _COMPLETE:
            tag = body.rstrip(b"\x00").decode("utf-8", "replace") if body else "?"
            self._on_result(tag, rows, nbytes, None)
        else:
            fields = codec.parse_fields(body) if body else {}
            self._on_result("", rows, nbytes, f"{fields.get('C', '?')} {fields.get('M', '(error text too long)')}")

"""Sans-IO relay state machines for an authenticated PostgreSQL session.

``FrontendStream`` frames the client's bytes, hands every statement-carrying
message (Query, Parse, FunctionCall) to a check, and forwards everything else
as it arrives, without buffering large messages such as CopyData or Bind.

A refused message is not simply dropped: the upstream is sent a statement that
fails to parse, carrying a unique marker, in its place. The upstream therefore
does what a server does on an error (aborts the transaction block or the
implicit transaction of a pipeline, skips to Sync, reports its status in
ReadyForQuery), and ``BackendStream`` swaps that error for the gateway's own
ErrorResponse on the way back. Ordering against pipelined messages and
transaction state stay exactly as a real server would leave them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from protocols.postgres import codec
from protocols.postgres.codec import E_ERROR, F_FUNCTION_CALL, P_PARSE, Q_QUERY, S_SYNC, U32, X_TERMINATE, Z_READY, ProtocolViolation

# A statement larger than this is refused rather than buffered (server-side COPY
# data and Bind parameters are streamed and not subject to it).
MAX_STATEMENT_BYTES = 64 * 1024 * 1024
# Refusals whose marker never came back (the upstream skipped the statement
# because an earlier one in the same pipeline failed) are forgotten past this.
MAX_PENDING_REFUSALS = 256

Check = Callable[[int, bytes], "bytes | None"]


def _emit(data: bytes, start: int, stop: int, out: list[bytes] | None) -> bytes:
    """What a feed forwards: the pieces in ``out``, then ``data[start:stop]``.

    ``stop`` is where held-back bytes begin (or the end of ``data``); without
    pieces, ``start`` is 0 and the common case returns ``data`` itself, uncopied.
    """
    if out is None:
        return data if stop == len(data) else data[:stop]
    if stop > start:
        out.append(data[start:stop])
    return b"".join(out)


class Refusals:
    """Errors owed to the client, keyed by the marker the upstream will echo back."""

    __slots__ = ("prefix", "pending", "_seq")

    def __init__(self) -> None:
        self.prefix = b"wiregate_refused_" + secrets.token_hex(6).encode() + b"_"
        self.pending: dict[bytes, bytes] = {}
        self._seq = 0

    def register(self, error: bytes) -> bytes:
        self._seq += 1
        marker = self.prefix + str(self._seq).encode()
        pending = self.pending
        if len(pending) >= MAX_PENDING_REFUSALS:
            del pending[next(iter(pending))]
        pending[marker] = error
        return marker

    def take(self, body: bytes) -> bytes | None:
        """The gateway's error for an upstream ErrorResponse body, if it echoes one of our markers."""
        i = body.find(self.prefix)
        if i < 0:
            return None
        j = i + len(self.prefix)
        while j < len(body) and 0x30 <= body[j] <= 0x39:
            j += 1
        return self.pending.pop(body[i:j], None)


class FrontendStream:
    """Client → upstream."""

    __slots__ = ("_check", "_refusals", "_held", "_remaining", "_dropping", "_skip_to_sync")

    def __init__(self, check: Check, refusals: Refusals) -> None:
        self._check = check
        self._refusals = refusals
        self._held = b""  # incomplete header or incomplete inspected message
        self._remaining = 0  # bytes of a message that began in an earlier chunk
        self._dropping = False  # whether those remaining bytes are forwarded or dropped
        self._skip_to_sync = False  # after a refused extended-protocol message

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        pos = 0
        start = 0  # start of the current run of bytes forwarded unchanged
        out: list[bytes] | None = None
        rem = self._remaining
        if rem:
            if rem >= n:
                self._remaining = rem - n
                return b"" if self._dropping else data
            self._remaining = 0
            pos = rem
            if self._dropping:
                self._dropping = False
                start = pos
                out = []
        while pos < n:
            if n - pos < 5:
                self._held = data[pos:]
                break
            t = data[pos]
            length = U32.unpack_from(data, pos + 1)[0]
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length}")
            end = pos + 1 + length
            if self._skip_to_sync and t != S_SYNC and t != X_TERMINATE:
                # the server would ignore these until Sync; the gateway drops them
                if out is None:
                    out = []
                if pos > start:
                    out.append(data[start:pos])
                if end > n:
                    self._remaining = end - n
                    self._dropping = True
                    start = pos = n
                    break
                start = pos = end
                continue
            if t == Q_QUERY or t == P_PARSE or t == F_FUNCTION_CALL:
                if length > MAX_STATEMENT_BYTES:
                    raise ProtocolViolation(f"statement of {length} bytes exceeds the gateway's limit of {MAX_STATEMENT_BYTES}")
                if end > n:
                    self._held = data[pos:]
                    break
                error = self._check(t, data[pos + 5:end])
                if error is not None:
                    if out is None:
                        out = []
                    if pos > start:
                        out.append(data[start:pos])
                    marker = self._refusals.register(error)
                    if t == P_PARSE:
                        name, _ = codec.split_cstr(data, pos + 5)
                        out.append(codec.parse(name, marker))
                        self._skip_to_sync = True
                    else:
                        out.append(codec.message(b"Q", marker + b"\x00"))
                    start = end
                pos = end
                continue
            if t == S_SYNC:
                self._skip_to_sync = False
            if end > n:
                self._remaining = end - n
                pos = n
                break
            pos = end
        return _emit(data, start, pos, out)


class BackendStream:
    """Upstream → client. Passes bytes through, tracking message boundaries,
    the transaction status and the session parameters the server reports.

    The framing loop is written out in both streams on purpose: a function call
    per message costs more than the loop body on this path."""

    __slots__ = ("_refusals", "_held", "_remaining", "status", "parameters", "on_parameter")

    def __init__(self, refusals: Refusals, parameters: dict[str, str] | None = None) -> None:
        self._refusals = refusals
        self._held = b""
        self._remaining = 0
        self.status = b"I"
        self.parameters: dict[str, str] = parameters if parameters is not None else {}
        self.on_parameter: Callable[[str, str], None] | None = None

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        rem = self._remaining
        if rem >= n:
            self._remaining = rem - n
            return data
        self._remaining = 0
        pos = rem
        start = 0
        out: list[bytes] | None = None
        pending = self._refusals.pending
        while pos < n:
            if n - pos < 5:
                self._held = data[pos:]
                break
            t = data[pos]
            length = U32.unpack_from(data, pos + 1)[0]
            if length < 4:
                raise ProtocolViolation(f"upstream sent an invalid message length {length}")
            end = pos + 1 + length
            if t == Z_READY or t == S_SYNC or (t == E_ERROR and pending):
                if end > n:
                    self._held = data[pos:]
                    break
                if t == Z_READY:
                    self.status = data[pos + 5:end]
                elif t == S_SYNC:
                    self._parameter_status(data[pos + 5:end])
                else:
                    replacement = self._refusals.take(data[pos + 5:end])
                    if replacement is not None:
                        if out is None:
                            out = []
                        if pos > start:
                            out.append(data[start:pos])
                        out.append(replacement)
                        start = end
                pos = end
                continue
            if end > n:
                self._remaining = end - n
                pos = n
                break
            pos = end
        return _emit(data, start, pos, out)

    def _parameter_status(self, body: bytes) -> None:
        name, pos = codec.split_cstr(body, 0)
        value, _ = codec.split_cstr(body, pos)
        k, v = name.decode("utf-8", "replace"), value.decode("utf-8", "replace")
        self.parameters[k] = v
        if self.on_parameter is not None:
            self.on_parameter(k, v)

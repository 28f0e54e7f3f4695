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
from collections import deque
from collections.abc import Callable
from typing import Protocol

from protocols.postgres import codec
from protocols.postgres.codec import N_NOTICE, E_ERROR, F_FUNCTION_CALL, P_PARSE, Q_QUERY, S_SYNC, U32, X_TERMINATE, Z_READY, ProtocolViolation

# A statement larger than this is refused rather than buffered (server-side COPY
# data and Bind parameters are streamed and not subject to it).
MAX_STATEMENT_BYTES = 64 * 1024 * 1024
# Refusals whose marker never came back (the upstream skipped the statement
# because an earlier one in the same pipeline failed) are forgotten past this.
MAX_PENDING_REFUSALS = 256

Check = Callable[[int, bytes], "bytes | None"]


class _Hold(bytes):
    """What a check returns for a statement that waits for an approval (compared by identity)."""


# the check's answer for a message that must wait: the stream stops before it and keeps it,
# with everything after it, until ``FrontendStream.resume`` checks it again
HOLD = _Hold()


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


# Frontend message types (extended protocol) the relay may look into
B_BIND, D_DESCRIBE, E_EXECUTE, C_CLOSE, H_FLUSH = 0x42, 0x44, 0x45, 0x43, 0x48
# Bind and Describe messages are read only as far as their names; names longer than this are refused
MAX_NAME_BYTES = 64 * 1024
# what an expectation waits for, in the order the server answers
(X_QUERY, X_FUNCTION, X_PARSE, X_BIND, X_DESCRIBE_S, X_DESCRIBE_P, X_EXECUTE, X_CLOSE, X_SYNC) = range(9)
# a portal's result shape before anybody described it, and while a Describe is on its way
UNKNOWN = object()
DESCRIBING = object()


class Tracker:
    """What each reply of the server belongs to: the session's statements, portals and the
    queue of messages sent and not yet answered. Kept only when results are masked.

    ``queue`` holds ``[kind, ...]`` lists in the order the messages went upstream;
    ``statements`` maps a statement name to its SQL text (None: unknown), ``portals`` a portal
    name to ``[sql, plan]`` where plan is the masking plan of its rows (``UNKNOWN`` until
    described). A name the tracker does not hold has unknown SQL: masking then assumes the worst.
    """

    __slots__ = ("queue", "statements", "portals", "decode")

    def __init__(self, decode: Callable[[bytes], str | None] = lambda raw: raw.decode("utf-8", "replace")) -> None:
        self.queue: deque[list] = deque()
        self.statements: dict[bytes, str | None] = {}
        self.portals: dict[bytes, list] = {}
        # statement texts are kept decoded as they were when checked: a later change of
        # client_encoding must not change what a stored statement is read as
        self.decode = decode

    def forget_statements(self) -> None:
        """SQL-level DEALLOCATE / DISCARD / PREPARE may have changed what a name means."""
        self.statements.clear()


def _names(data: bytes, pos: int, stop: int, count: int) -> tuple[list[bytes], int] | None:
    """``count`` NUL-terminated strings from ``pos``; None when ``data[:stop]`` does not hold them all."""
    names = []
    for _ in range(count):
        nul = data.find(b"\x00", pos, stop)
        if nul < 0:
            return None
        names.append(data[pos:nul])
        pos = nul + 1
    return names, pos


class FrontendStream:
    """Client → upstream."""

    __slots__ = ("_check", "_refusals", "_held", "_remaining", "_dropping", "_skip_to_sync", "_inspect",
                 "_refused_names", "_tracker", "on_bind", "paused")

    def __init__(self, check: Check, refusals: Refusals, tracker: Tracker | None = None) -> None:
        self._check = check
        self._refusals = refusals
        self._held = b""  # incomplete header or incomplete inspected message
        self._remaining = 0  # bytes of a message that began in an earlier chunk
        self._dropping = False  # whether those remaining bytes are forwarded or dropped
        self._skip_to_sync = False  # after a refused extended-protocol message
        # statement names whose Parse was refused: a Bind or Describe of one is refused too
        self._refused_names: dict[bytes, bytes] = {}
        self._tracker = tracker
        # told the statement name of every Bind of a named statement (the recorder notes executions)
        self.on_bind: Callable[[bytes], None] | None = None
        # a statement waits for an approval: nothing more is forwarded until resume()
        self.paused = False
        # per message type: whether the relay looks into it
        self._inspect = bytearray(256)
        for t in (Q_QUERY, P_PARSE, F_FUNCTION_CALL):
            self._inspect[t] = 1
        if tracker is not None:
            for t in (B_BIND, D_DESCRIBE, E_EXECUTE, C_CLOSE, S_SYNC):
                self._inspect[t] = 1

    @property
    def at_boundary(self) -> bool:
        """Whether what was forwarded so far ends with a whole message (a refused message whose
        rest is being dropped was replaced whole)."""
        return self._remaining == 0 or self._dropping

    def resume(self) -> bytes:
        """After a HOLD: check the held message again (the check now knows its fate) and go on."""
        self.paused = False
        return self.feed(b"")

    def feed(self, data: bytes) -> bytes:
        if self.paused:
            self._held += data
            return b""
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
        inspect = self._inspect
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
            if inspect[t]:
                if t == B_BIND or t == D_DESCRIBE:
                    # only the names matter; a Bind's parameters may be large and are streamed
                    got = _names(data, pos + 5 + (t == D_DESCRIBE), min(end, n), 2 if t == B_BIND else 1)
                    if got is None:
                        if end <= n or n - pos > MAX_NAME_BYTES:
                            raise ProtocolViolation("a Bind or Describe message without its names")
                        self._held = data[pos:]
                        break
                    replacement = self._bind(got[0]) if t == B_BIND else self._describe(data[pos + 5], got[0][0])
                else:
                    if length > MAX_STATEMENT_BYTES:
                        raise ProtocolViolation(f"statement of {length} bytes exceeds the gateway's limit of {MAX_STATEMENT_BYTES}")
                    if end > n:
                        self._held = data[pos:]
                        break
                    replacement = self._message(t, data, pos + 5, end)
                    if replacement is HOLD:
                        self._held = data[pos:]
                        self.paused = True
                        break
                if replacement is not None:
                    if out is None:
                        out = []
                    if pos > start:
                        out.append(data[start:pos])
                    out.append(replacement)
                    if end > n:  # the rest of a refused Bind
                        self._remaining = end - n
                        self._dropping = True
                        start = pos = n
                        break
                    start = end
                elif end > n:
                    self._remaining = end - n
                    pos = n
                    break
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

    def _refuse(self, error: bytes, parse_name: bytes | None) -> bytes:
        """The marker sent upstream in place of a refused message."""
        marker = self._refusals.register(error)
        tracker = self._tracker
        if parse_name is None:
            if tracker is not None:
                tracker.queue.append([X_QUERY, None])
            return codec.message(b"Q", marker + b"\x00")
        self._skip_to_sync = True
        if tracker is not None:
            tracker.queue.append([X_PARSE])
        return codec.parse(parse_name, marker)

    def _message(self, t: int, data: bytes, body: int, end: int) -> bytes | None:
        """Query, Parse, FunctionCall (checked), and Execute, Close, Sync (tracked)."""
        tracker = self._tracker
        if t == S_SYNC:
            self._skip_to_sync = False
            tracker.queue.append([X_SYNC])  # type: ignore[union-attr]
            return None
        if t == E_EXECUTE:
            portal = data[body:data.index(b"\x00", body, end)]
            entry = tracker.portals.get(portal)  # type: ignore[union-attr]
            queue = tracker.queue  # type: ignore[union-attr]
            if entry is None or entry[1] is UNKNOWN:
                # the shape of the rows is needed to mask them: ask for it, the reply is not forwarded
                queue.append([X_DESCRIBE_P, portal, True])
                queue.append([X_EXECUTE, portal])
                return codec.message(b"D", b"P" + portal + b"\x00") + data[body - 5:end]
            queue.append([X_EXECUTE, portal])
            return None
        if t == C_CLOSE:
            name = data[body + 1:data.index(b"\x00", body + 1, end)]
            if data[body] == 0x53:  # S
                self._forget_refused(name)
                if tracker is not None:
                    tracker.statements.pop(name, None)
            elif tracker is not None:
                tracker.portals.pop(name, None)
            if tracker is not None:
                tracker.queue.append([X_CLOSE])
            return None
        error = self._check(t, data[body:end])
        if error is HOLD:
            return error
        if t == P_PARSE:
            name, sql_end = codec.split_cstr(data, body)
            if error is not None:
                self._refused_names[name] = error
                self._inspect[B_BIND] = self._inspect[D_DESCRIBE] = self._inspect[C_CLOSE] = 1
                return self._refuse(error, name)
            self._forget_refused(name)
            if tracker is not None:
                if not name or name not in tracker.statements:
                    # a named statement is never redefined: the server refuses a second Parse (42P05)
                    tracker.statements[name] = tracker.decode(data[sql_end:data.index(b"\x00", sql_end, end)])
                tracker.queue.append([X_PARSE])
            return None
        if error is not None:
            return self._refuse(error, None)
        if tracker is not None:
            if t == Q_QUERY:
                tracker.queue.append([X_QUERY, tracker.decode(data[body:end - 1])])
            else:
                tracker.queue.append([X_FUNCTION])
        return None

    def watch_binds(self, on_bind: Callable[[bytes], None]) -> None:
        self.on_bind = on_bind
        self._inspect[B_BIND] = 1

    def _forget_refused(self, name: bytes) -> None:
        if self._refused_names.pop(name, None) is not None and not self._refused_names and self._tracker is None:
            self._inspect[D_DESCRIBE] = self._inspect[C_CLOSE] = 0
            self._inspect[B_BIND] = self.on_bind is not None

    def _bind(self, names: list[bytes]) -> bytes | None:
        portal, statement = names
        error = self._refused_names.get(statement)
        if error is not None:
            return self._refuse(error, self._refusals.prefix)
        if statement and self.on_bind is not None:
            self.on_bind(statement)
        tracker = self._tracker
        if tracker is not None:
            tracker.portals[portal] = [tracker.statements.get(statement), UNKNOWN]
            tracker.queue.append([X_BIND])
        return None

    def _describe(self, kind: int, name: bytes) -> bytes | None:
        if kind == 0x53:  # S
            error = self._refused_names.get(name)
            if error is not None:
                return self._refuse(error, self._refusals.prefix)
            if self._tracker is not None:
                self._tracker.queue.append([X_DESCRIBE_S])
        elif self._tracker is not None:
            entry = self._tracker.portals.get(name)
            if entry is not None and entry[1] is UNKNOWN:
                entry[1] = DESCRIBING  # an Execute that follows need not ask again
            self._tracker.queue.append([X_DESCRIBE_P, name, False])
        return None


class BackendStream:
    """Upstream → client. Passes bytes through, tracking message boundaries,
    the transaction status and the session parameters the server reports.

    The framing loop is written out in both streams on purpose: a function call
    per message costs more than the loop body on this path."""

    __slots__ = ("_refusals", "_held", "_remaining", "status", "parameters", "on_parameter")

    @property
    def at_boundary(self) -> bool:
        """Whether what was forwarded so far ends with a whole message (a held partial
        message has not been forwarded yet), so the gateway may write one of its own."""
        return not self._remaining

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


class ResultMasker(Protocol):
    """Turns result shapes into masking plans and applies them (see protocols/postgres/resultmask.py).

    ``sql`` is the raw statement text the rows belong to (None when unknown), ``index`` the
    position of the statement within a multi-statement Query. A plan of None means the rows
    pass untouched.
    """

    def row_plan(self, sql: str | None, index: int, row_description: bytes) -> object | None: ...

    def mask_row(self, plan: object, body: bytes) -> bytes: ...

    def copy_plan(self, sql: str | None, index: int, copy_response: bytes) -> object | None: ...

    def mask_copy(self, plan: object, body: bytes) -> bytes: ...

    def mask_message(self, body: bytes, sql: str | None) -> bytes: ...

    def mask_notification(self, body: bytes) -> bytes: ...

    def statement_done(self, sql: str | None, index: int, tag: bytes) -> None: ...


# backend message types the masking stream reacts to
_T_ROWDESC, _N_NODATA, _D_DATAROW, _C_COMPLETE, _I_EMPTY, _S_SUSPENDED = 0x54, 0x6E, 0x44, 0x43, 0x49, 0x73
_H_COPYOUT, _D_COPYDATA, _V_FUNCTION, _A_NOTIFY = 0x48, 0x64, 0x56, 0x41
_PARSE_DONE, _BIND_DONE, _CLOSE_DONE = 0x31, 0x32, 0x33
_UNSET = object()
# a masked row or COPY row is held whole; past this the session is ended rather than leak it
MAX_MASKED_MESSAGE = 256 * 1024 * 1024


class MaskingBackendStream(BackendStream):
    """Upstream → client when results are masked: every reply is matched with what it
    answers (``Tracker``), so each DataRow and COPY row is rewritten by the plan of the
    statement or portal it belongs to. Rows whose plan is None are streamed as they come.
    """

    __slots__ = ("_tracker", "_masker", "_plan", "_copy", "_index")

    def __init__(self, refusals: Refusals, tracker: Tracker, masker: ResultMasker,
                 parameters: dict[str, str] | None = None) -> None:
        super().__init__(refusals, parameters)
        self._tracker = tracker
        self._masker = masker
        self._plan: object | None = None  # rows of the current simple-query statement
        self._copy: object | None = None  # rows of the current COPY TO
        self._index = 0  # statement index within the current Query

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
        row_plan: object | None = _UNSET
        mask_row = self._masker.mask_row
        while pos < n:
            if n - pos < 5:
                self._held = data[pos:]
                break
            t = data[pos]
            length = U32.unpack_from(data, pos + 1)[0]
            if length < 4:
                raise ProtocolViolation(f"upstream sent an invalid message length {length}")
            end = pos + 1 + length
            if t == _D_DATAROW or t == _D_COPYDATA:
                if t == _D_DATAROW:
                    if row_plan is _UNSET:  # rows in a run share their plan
                        row_plan = self._row_plan()
                    plan = row_plan
                else:
                    plan = self._copy
                if plan is None:
                    if end > n:
                        self._remaining = end - n
                        pos = n
                        break
                    pos = end
                    continue
                if length > MAX_MASKED_MESSAGE:
                    raise ProtocolViolation(f"a result row of {length} bytes is too large to mask")
                if end > n:
                    self._held = data[pos:]
                    break
                body = data[pos + 5:end]
                masked = mask_row(plan, body) if t == _D_DATAROW else self._masker.mask_copy(plan, body)
                if masked is not body:
                    if out is None:
                        out = []
                    if pos > start:
                        out.append(data[start:pos])
                    out.append((b"D" if t == _D_DATAROW else b"d") + U32.pack(len(masked) + 4))
                    out.append(masked)
                    start = end
                pos = end
                continue
            row_plan = _UNSET
            if end > n:
                if length > MAX_MASKED_MESSAGE:
                    raise ProtocolViolation(f"upstream message of {length} bytes is too large")
                self._held = data[pos:]
                break
            replacement = self._reply(t, data, pos + 5, end)
            if replacement is not None:
                if out is None:
                    out = []
                if pos > start:
                    out.append(data[start:pos])
                out.append(replacement)
                start = end
            pos = end
        return _emit(data, start, pos, out)

    def _current_sql(self, head: list | None) -> str | None:
        """The statement text the reply at the head of the queue belongs to, when known."""
        if head is None:
            return None
        if head[0] == X_QUERY:
            return head[1]
        if head[0] in (X_EXECUTE, X_DESCRIBE_P):
            entry = self._tracker.portals.get(head[1])
            return entry[0] if entry is not None else None
        return None

    def _row_plan(self) -> object | None:
        queue = self._tracker.queue
        if queue and queue[0][0] == X_EXECUTE:
            entry = self._tracker.portals.get(queue[0][1])
            if entry is None or entry[1] is UNKNOWN or entry[1] is DESCRIBING:
                # rows of a portal nobody described: the gateway always asks first, so this is a
                # broken promise of the protocol; do not guess
                raise ProtocolViolation("result rows for a portal whose shape is unknown")
            return entry[1]
        return self._plan

    def _reply(self, t: int, data: bytes, body: int, end: int) -> bytes | None:
        """Track one complete reply; returns what to send instead (b"" to drop it), or None."""
        queue = self._tracker.queue
        head = queue[0] if queue else None
        kind = head[0] if head is not None else -1
        if t == _T_ROWDESC or t == _N_NODATA:
            if kind == X_DESCRIBE_P:
                queue.popleft()
                portals = self._tracker.portals
                entry = portals.get(head[1])  # type: ignore[index]
                if entry is None:  # a cursor declared in SQL is a portal too
                    entry = portals[head[1]] = [None, UNKNOWN]  # type: ignore[index]
                entry[1] = self._masker.row_plan(entry[0], 0, data[body:end]) if t == _T_ROWDESC else None
                return b"" if head[2] else None  # type: ignore[index]
            if kind == X_DESCRIBE_S:
                queue.popleft()
            elif kind == X_QUERY and t == _T_ROWDESC:
                self._plan = self._masker.row_plan(head[1], self._index, data[body:end])  # type: ignore[index]
            return None
        if t == _C_COMPLETE or t == _I_EMPTY or t == _S_SUSPENDED:
            if t == _C_COMPLETE:
                # what a statement declared for later (a cursor, a prepared statement) counts
                # once the server has done it
                self._masker.statement_done(self._current_sql(head), self._index if kind == X_QUERY else 0,
                                            data[body:end])
            if kind == X_EXECUTE:
                queue.popleft()
            elif kind == X_QUERY:
                self._index += 1
            self._plan = self._copy = None
            return None
        if t == _H_COPYOUT:
            if kind == X_QUERY:
                self._copy = self._masker.copy_plan(head[1], self._index, data[body:end])  # type: ignore[index]
            elif kind == X_EXECUTE:
                entry = self._tracker.portals.get(head[1])  # type: ignore[index]
                self._copy = self._masker.copy_plan(entry[0] if entry else None, 0, data[body:end])
            return None
        if t == _PARSE_DONE or t == _BIND_DONE or t == _CLOSE_DONE:
            if kind in (X_PARSE, X_BIND, X_CLOSE):
                queue.popleft()
            return None
        if t == N_NOTICE or t == _A_NOTIFY:
            original = data[body:end]
            if t == N_NOTICE:
                masked = self._masker.mask_message(original, self._current_sql(head))
            else:
                masked = self._masker.mask_notification(original)
            return None if masked == original else codec.message(bytes((t,)), masked)
        if t == E_ERROR:
            replacement = self._refusals.take(data[body:end]) if self._refusals.pending else None
            if replacement is None:
                masked = self._masker.mask_message(data[body:end], self._current_sql(head))
                if masked != data[body:end]:
                    replacement = codec.message(b"E", masked)
            # the server skips to Sync (extended) or to the end of the Query
            while queue and queue[0][0] not in (X_SYNC, X_QUERY, X_FUNCTION):
                skipped = queue.popleft()
                if skipped[0] == X_DESCRIBE_P:
                    entry = self._tracker.portals.get(skipped[1])
                    if entry is not None and entry[1] is DESCRIBING:
                        entry[1] = UNKNOWN
            self._plan = self._copy = None
            return replacement
        if t == Z_READY:
            self.status = data[body:end]
            while queue:
                if queue.popleft()[0] in (X_SYNC, X_QUERY, X_FUNCTION):
                    break
            self._plan = self._copy = None
            self._index = 0
            return None
        if t == S_SYNC:
            self._parameter_status(data[body:end])
        return None

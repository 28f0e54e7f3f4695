"""The admin API on ``listen.admin``: health, metrics, sessions and approvals over HTTP/1.1 + JSON.

A deliberately small server: asyncio streams, the project's own sans-IO codec
(``protocols.http.codec.RequestParser``) for parsing, and a fixed route table. Every endpoint but
``/healthz`` needs ``Authorization: Bearer TOKEN``, checked by the same ``Authenticator`` the
protocols use. Members of ``identity.admin_groups`` may use every endpoint; approvers (in some
review rule's ``approvers``, as ``Broker.may_approve`` says) who are not admins may only list, read
and decide approval requests; anyone else gets 403. Whether an approver may decide one particular
request (their own, another rule's) is the broker's call: its ``ApprovalError`` status is the
HTTP status.

JSON shapes: ``GET /api/approvals`` -> ``{"approvals": [ApprovalRecord, ...]}``,
``GET /api/approvals/{id}`` and approve/deny -> the ``ApprovalRecord``,
``GET /api/sessions`` -> ``{"sessions": [session, ...]}``, ``GET /api/sessions/{id}`` -> a
session: a ``SessionRow`` whose ``seal`` is shown as ``{"key_id", "frames", "last_hash"}`` (hex) or
null; errors -> ``{"error": "..."}``.

Robustness: requests are read with a header timeout and a 64 KiB body limit; malformed ones get
a JSON 400 (or the codec's 413/431/505) and the connection is closed; nothing a client sends
ends the server. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import msgspec

from gateway.approval import ApprovalError, ApprovalRecord
from gateway.config import Config
from gateway.errors import WiregateError
from gateway.identity import AuthError, Authenticator, Identity, format_duration, groups_match, parse_duration
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from protocols.http import codec
from protocols.http.codec import END, HttpError, RequestHead
from recorder.index import SessionRow

__all__ = ["AdminServer", "ApprovalBroker", "SessionStore"]

log = logging.getLogger("wiregate.admin")

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
# a burst of scrapers and CLIs fits; a connection flood does not take the event loop's memory
MAX_CONNECTIONS = 256
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
WRITE_TIMEOUT_S = 10.0
# on close, requests being answered get this long to finish (an approval half-written is worse)
CLOSE_GRACE_S = 5.0
READ_SIZE = 65536
DEFAULT_SESSION_LIMIT = 100
MAX_LIMIT = 1000
MAX_FILTER_CHARS = 256
MAX_ID_CHARS = 128
MAX_REASON_CHARS = 2000

_JSON = "application/json"
_APPROVAL_STATUSES = frozenset({"pending", "approved", "denied", "expired", "withdrawn"})
_ENCODER = msgspec.json.Encoder()


class ApprovalBroker(Protocol):
    """What the admin API needs of ``gateway.broker.Broker``."""

    async def list_requests(self, status: str | None = "pending") -> list[ApprovalRecord]: ...
    async def get(self, approval_id: str) -> ApprovalRecord: ...
    async def approve(self, approval_id: str, approver: Identity,
                      for_seconds: float | None = None) -> ApprovalRecord: ...
    async def deny(self, approval_id: str, approver: Identity, reason: str | None = None) -> ApprovalRecord: ...
    def may_approve(self, identity: Identity) -> bool: ...


class SessionStore(Protocol):
    """What the admin API needs of ``gateway.store.Store``."""

    async def list_sessions(self, *, identity: str | None = None, target: str | None = None,
                            protocol: str | None = None, limit: int = 100) -> list[SessionRow]: ...
    async def get_session(self, session_id: str) -> SessionRow | None: ...


class _ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    for_: str | int | None = msgspec.field(default=None, name="for")


class _DenyBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


class _Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


class _Refusal(Exception):
    """Ends a request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> _Reply:
    return _Reply(status, _ENCODER.encode({"error": message}), _JSON, headers)


def _json(status: int, value: Any) -> _Reply:
    return _Reply(status, _ENCODER.encode(value))


def _session_view(row: SessionRow) -> dict[str, Any]:
    # the seal's raw signature bytes mean nothing to an API reader (`wiregate sessions verify`
    # checks it); which key sealed how many frames does
    view = msgspec.structs.asdict(row)
    seal = row.seal
    view["seal"] = None if seal is None else {"key_id": seal.key_id, "frames": seal.frames,
                                              "last_hash": seal.last_hash.hex()}
    return view


def _clean_id(raw: str) -> str:
    try:
        value = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        value = ""
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        raise _Refusal(400, f"invalid id: at most {MAX_ID_CHARS} printable characters")
    return value


# (method, endpoint, who): "admin" endpoints are for admins, "approver" ones for approvers too
_Route = tuple[str, str, str]


def _resolve(segments: list[str]) -> tuple[_Route, str | None] | None:
    match segments:
        case ["metrics"]:
            return ("GET", "metrics", "admin"), None
        case ["api", "sessions"]:
            return ("GET", "sessions", "admin"), None
        case ["api", "sessions", sid]:
            return ("GET", "session", "admin"), sid
        case ["api", "approvals"]:
            return ("GET", "approvals", "approver"), None
        case ["api", "approvals", aid]:
            return ("GET", "approval", "approver"), aid
        case ["api", "approvals", aid, "approve"]:
            return ("POST", "approve", "approver"), aid
        case ["api", "approvals", aid, "deny"]:
            return ("POST", "deny", "approver"), aid
    return None


class _Query:
    """The query string's parameters; each at most once, none that the endpoint does not know."""

    def __init__(self, query: str, allowed: frozenset[str]) -> None:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=20,
                              errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise _Refusal(400, "invalid query string") from None
        self.values: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise _Refusal(400, f"unknown query parameter {name[:40]!r} (known: {known})")
            if name in self.values:
                raise _Refusal(400, f"query parameter {name!r} given more than once")
            if len(value) > MAX_FILTER_CHARS or not value.isprintable():
                raise _Refusal(400, f"query parameter {name!r}: at most {MAX_FILTER_CHARS} printable characters")
            self.values[name] = value

    def text(self, name: str) -> str | None:
        return self.values.get(name) or None

    def limit(self, default: int) -> int:
        raw = self.values.get("limit")
        if raw is None:
            return default
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise _Refusal(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        return int(raw)


class AdminServer:
    """Serves the admin API; ``start`` binds, ``close`` stops accepting and ends the connections."""

    def __init__(self, cfg: Config, authenticator: Authenticator, broker: ApprovalBroker, store: SessionStore,
                 metrics: Metrics, *, health: Callable[[], dict], recorder_queue_depth: Callable[[], int | None],
                 header_timeout: float = HEADER_TIMEOUT_S, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self._cfg = cfg
        self._auth = authenticator
        self._broker = broker
        self._store = store
        self._metrics = metrics
        self._health = health
        self._queue_depth = recorder_queue_depth
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], _Connection] = {}

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server is not None else []

    async def start(self, host: str, port: int) -> None:
        if self._server is not None:
            raise RuntimeError("the admin API is already started")
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def close(self, grace: float = CLOSE_GRACE_S) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # idle keep-alive connections go at once; a request being answered may finish
        for task, conn in list(self._conns.items()):
            if not conn.busy:
                task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=grace)
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def reload(self, cfg: Config, authenticator: Authenticator | None = None) -> None:
        """Take a reloaded config (admin_groups may have changed) and, if given, its authenticator."""
        self._cfg = cfg
        if authenticator is not None:
            self._auth = authenticator

    # ------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= MAX_CONNECTIONS:
            with contextlib.suppress(Exception):
                writer.write(_encode(_error(503, "too many admin API connections; try again"), keep=False))
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.drain()
            writer.close()
            return
        conn = _Connection(self, reader, writer)
        self._conns[task] = conn
        try:
            await conn.run()
        finally:
            self._conns.pop(task, None)

    # ------------------------------------------------------------ requests

    async def respond(self, head: RequestHead, body: bytes, client: str) -> _Reply:
        """The reply to one request; never raises (but for cancellation)."""
        try:
            return await self._dispatch(head, body, client)
        except _Refusal as e:
            return _error(e.status, e.message, e.headers)
        except ApprovalError as e:
            return _error(e.status if 400 <= e.status <= 599 else 500, e.message)
        except Exception:
            log.exception("admin API: %s %s from %s failed", head.method, head.target[:200], client)
            return _error(500, "internal error (the gateway log has the details)")

    async def _dispatch(self, head: RequestHead, body: bytes, client: str) -> _Reply:
        method = "GET" if head.method == "HEAD" else head.method
        path, _, query = head.target.partition("?")
        segments = path.strip("/").split("/")
        if segments == ["healthz"]:
            if method != "GET":
                raise _Refusal(405, f"{head.method} is not allowed here (GET)", ((b"Allow", b"GET, HEAD"),))
            _Query(query, frozenset())
            return await self._healthz()
        identity = await self._identify(head, client)
        admin = groups_match(identity.groups, self._cfg.identity.admin_groups)
        if not admin and not self._may_approve(identity):
            raise _Refusal(403, f"{identity.name} may not use the admin API: it needs a member of "
                                "identity.admin_groups (or, for approvals, of a review rule's approvers)")
        found = _resolve(segments)
        if found is None:
            raise _Refusal(404, f"no such endpoint: {path[:200]}")
        (allowed, endpoint, who), raw_id = found
        if method != allowed:
            allow = b"GET, HEAD" if allowed == "GET" else allowed.encode()
            raise _Refusal(405, f"{head.method} is not allowed here ({allowed})", ((b"Allow", allow),))
        if who == "admin" and not admin:
            raise _Refusal(403, f"{identity.name} may not use {path[:200]}: it is for members of "
                                "identity.admin_groups")
        item = _clean_id(raw_id) if raw_id is not None else None
        if endpoint == "metrics":
            _Query(query, frozenset())
            return self._render_metrics()
        if endpoint == "sessions":
            q = _Query(query, frozenset({"identity", "target", "protocol", "limit"}))
            rows = await self._store.list_sessions(identity=q.text("identity"), target=q.text("target"),
                                                   protocol=q.text("protocol"),
                                                   limit=q.limit(DEFAULT_SESSION_LIMIT))
            return _json(200, {"sessions": [_session_view(r) for r in rows]})
        if endpoint == "session":
            _Query(query, frozenset())
            assert item is not None
            row = await self._store.get_session(item)
            if row is None:
                raise _Refusal(404, f"no session {item!r}")
            return _json(200, _session_view(row))
        if endpoint == "approvals":
            q = _Query(query, frozenset({"status"}))
            status = q.values.get("status", "pending")
            if status != "all" and status not in _APPROVAL_STATUSES:
                raise _Refusal(400, "status must be all or one of " + ", ".join(sorted(_APPROVAL_STATUSES)))
            records = await self._broker.list_requests(None if status == "all" else status)
            return _json(200, {"approvals": records})
        _Query(query, frozenset())
        assert item is not None
        if endpoint == "approval":
            return _json(200, await self._broker.get(item))
        if endpoint == "approve":
            for_seconds = _for_seconds(_decode(body, _ApproveBody).for_)
            record = await self._broker.approve(item, identity, for_seconds)
            log.info("admin API: %s approved %s%s (from %s)", identity.name, record.id,
                     f" for {format_duration(int(for_seconds))}" if for_seconds else "", client)
            return _json(200, record)
        reason = _decode(body, _DenyBody).reason
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise _Refusal(400, f"reason: at most {MAX_REASON_CHARS} characters")
        record = await self._broker.deny(item, identity, reason)
        log.info("admin API: %s denied %s (from %s)", identity.name, record.id, client)
        return _json(200, record)

    async def _identify(self, head: RequestHead, client: str) -> Identity:
        values = [v for n, v in head.headers if n.lower() == b"authorization"]
        if not values:
            raise _Refusal(401, "missing token: send Authorization: Bearer TOKEN",
                           ((b"WWW-Authenticate", b'Bearer realm="wiregate"'),))
        bad = ((b"WWW-Authenticate", b'Bearer realm="wiregate", error="invalid_token"'),)
        if len(values) > 1:
            raise _Refusal(400, "more than one Authorization header")
        scheme, _, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise _Refusal(401, "the Authorization header must be Bearer TOKEN", bad)
        try:
            text = token.strip().decode("ascii")
        except UnicodeDecodeError:
            raise _Refusal(401, "the token is not ASCII", bad) from None
        try:
            return await self._auth.authenticate(text)
        except AuthError as e:
            log.info("admin API: refused a token from %s: %s", client, e)
            raise _Refusal(401, str(e), bad) from None

    def _may_approve(self, identity: Identity) -> bool:
        try:
            return bool(self._broker.may_approve(identity))
        except Exception:
            log.exception("admin API: the approvals broker failed to say whether %s may approve", identity.name)
            return False

    async def _healthz(self) -> _Reply:
        try:
            report = self._health()
            if inspect.isawaitable(report):
                report = await report
            if not isinstance(report, dict):
                raise TypeError(f"health() returned {type(report).__name__}, not a dict")
            return _json(200 if report.get("status") == "ok" else 503, report)
        except Exception:
            log.exception("admin API: the health check failed")
            return _json(503, {"status": "error", "error": "the health check failed"})

    def _render_metrics(self) -> _Reply:
        try:
            depth = self._queue_depth()
        except Exception:
            log.exception("admin API: cannot read the recorder queue depth")
            depth = None
        text = self._metrics.render(recorder_queue_depth=depth)
        return _Reply(200, text.encode("utf-8"), METRICS_CONTENT_TYPE)


def _decode(body: bytes, kind: type[_ApproveBody] | type[_DenyBody]) -> Any:
    if not body.strip():
        return kind()
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        raise _Refusal(400, f"invalid request body: {e}") from None
    except msgspec.DecodeError:
        raise _Refusal(400, "the request body is not JSON") from None


def _for_seconds(value: str | int | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except WiregateError as e:
        raise _Refusal(400, f"for: {e}") from None
    if seconds <= 0:
        raise _Refusal(400, "for: must be longer than 0s")
    return float(seconds)


def _encode(reply: _Reply, *, keep: bool, head_only: bool = False) -> bytes:
    headers: list[tuple[bytes, bytes]] = [
        (b"Content-Type", reply.content_type.encode("latin-1")),
        (b"Content-Length", str(len(reply.body)).encode()),
        (b"Cache-Control", b"no-store"),
        (b"X-Content-Type-Options", b"nosniff"),
        *reply.headers,
    ]
    if not keep:
        headers.append((b"Connection", b"close"))
    head = codec.response_head(reply.status, codec.reason_phrase(reply.status), headers)
    return head if head_only else head + reply.body


class _Close(Exception):
    """The client went away."""


class _Connection:
    """One client connection: requests answered one after the other while it keeps the connection."""

    def __init__(self, server: AdminServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.parser = codec.RequestParser(max_head_bytes=MAX_HEAD_BYTES, max_headers=MAX_HEADERS,
                                          max_body_bytes=MAX_BODY_BYTES)
        self.events: deque[Any] = deque()
        # a parse error after complete pipelined requests: raised once those are answered
        self.failed: HttpError | None = None
        self.busy = False

    async def run(self) -> None:
        try:
            while True:
                head = await self._next_head()
                if head is None:
                    return
                self.busy = True
                if head.upgrade:
                    await self._send(_error(400, "protocol upgrades are not supported here"), head, keep=False)
                    return
                body = await self._read_body(head)
                reply = await self.server.respond(head, body, self.client)
                keep = head.keep_alive and reply.status < 500
                await self._send(reply, head, keep=keep)
                self.busy = False
                if not keep:
                    return
        except HttpError as e:
            await self._try_send(_error(e.status, e.reason))
        except TimeoutError:
            if self.parser.in_message:
                await self._try_send(_error(408, "the request did not arrive in time"))
        except (_Close, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("admin API: connection from %s failed; closing it", self.client)
            await self._try_send(_error(500, "internal error"))
        finally:
            self.writer.close()

    async def _read(self) -> bool:
        """Feed the parser what arrives next; False when the client closed its side."""
        if self.failed is not None:
            raise self.failed
        data = await self.reader.read(READ_SIZE)
        try:
            if data:
                self.events.extend(self.parser.feed(data))
            else:
                self.parser.feed_eof()
        except HttpError as e:
            self.events.extend(e.events)
            self.failed = e
        return bool(data)

    async def _next_head(self) -> RequestHead | None:
        """The next request head; None when the client closed or stayed idle too long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.idle_timeout
        started = False
        while not self.events:
            if self.failed is not None:
                raise self.failed
            if not started and self.parser.in_message:
                # the head has begun: it must be complete soon (slow-loris clients)
                started = True
                deadline = loop.time() + self.server.header_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    more = await self._read()
            except TimeoutError:
                if self.parser.in_message:
                    raise
                return None
            if not more and not self.events:
                if self.failed is not None:
                    raise self.failed
                return None
        event = self.events.popleft()
        if not isinstance(event, RequestHead):
            raise HttpError(400, "request body where a request head was expected")
        return event

    async def _read_body(self, head: RequestHead) -> bytes:
        if head.expect_continue and head.body != "none":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        parts: list[bytes] = []
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                while not self.events:
                    if not await self._read() and not self.events:
                        if self.failed is not None:
                            raise self.failed
                        raise _Close()
                event = self.events.popleft()
                if event is END:
                    return b"".join(parts)
                if isinstance(event, RequestHead):
                    raise HttpError(400, "a request head arrived inside a request body")
                parts.append(event.data)

    async def _send(self, reply: _Reply, head: RequestHead | None, *, keep: bool) -> None:
        head_only = head is not None and head.method == "HEAD"
        self.writer.write(_encode(reply, keep=keep, head_only=head_only))
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self.writer.drain()

    async def _try_send(self, reply: _Reply) -> None:
        with contextlib.suppress(Exception):
            await self._send(reply, None, keep=False)

"""The HTTP listener: identity, routing, policy and masking around a streaming HTTP/1.1 reverse proxy.

asyncio glue over the sans-IO pieces: ``codec`` parses and frames, ``paths`` routes, ``mcp``
decides JSON-RPC, ``bodymask`` masks, ``upstream`` keeps target connections. This module moves
bytes, applies backpressure and timeouts, and answers what the gateway refuses itself (JSON
bodies saying why; JSON-RPC errors for refused MCP calls).

Per request: the bearer token names the caller (401 without one or with a bad one), the Host
(``TARGET.anything``) or first path segment names the target (404), ``allow_groups`` admits the
caller (403), then the ``http`` rules decide ``METHOD /path`` (403 naming the rule). Bodies stream
through unless the gateway must read them: an MCP request (decided message by message), a JSON
or text response that mask rules apply to, or an MCP answer (filtered and masked). SSE answers
are transformed event by event, so the first event reaches the caller as soon as the target
sends it. WebSocket upgrades are spliced after the 101.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.config import Config, Target, parse_duration
from gateway.identity import AuthError, Authenticator, Identity, groups_match
from gateway.secrets import target_credential
from policy.engine import PolicyEngine
from policy.model import Decision, review_refusal
from protocols.http import codec
from protocols.http.bodymask import BodyTooDeep, media_type
from protocols.http.codec import END, BodyChunk, HttpError, InterimHead, RequestHead, ResponseHead
from protocols.http.jsonrpc import RpcError, decode_payload, encode, error_message
from protocols.http.paths import BadPath, normalize_path, route, split_target
from protocols.http.mcp import Hold
from protocols.http.session import HttpSession
from protocols.http.sse import SseSplitter
from protocols.http.upstream import READ_SIZE, Upstream, UpstreamConn, UpstreamError

if TYPE_CHECKING:
    from recorder.writer import Recorder
    from gateway.broker import Broker
    from gateway.metrics import Metrics

log = logging.getLogger("wiregate.http")

__all__ = ["HttpListener"]

# an MCP session with no request for this long is ended (its recording sealed)
MCP_IDLE_S = 600.0
# a refused request's body is read and dropped up to this much before the connection is closed
LINGER_BYTES = 1 << 20
LINGER_S = 2.0
# the transport buffer towards a caller above which the proxy waits for it to drain
HIGH_WATER = 256 * 1024
_JSON = b"application/json"
_VIA = b"1.1 wiregate"
# request headers the gateway sets itself, or never passes on
_DROPPED_REQUEST = frozenset({b"host", b"authorization", b"x-forwarded-for", b"x-forwarded-host",
                              b"x-forwarded-proto", b"forwarded", b"expect", b"content-length"})
_DROPPED_RESPONSE = frozenset({b"content-length"})


class _Close(Exception):
    """End the client connection now (its state is unknown, or the caller is gone)."""


class HttpListener:
    def __init__(self, cfg: Config, authenticator: Authenticator, policy: PolicyEngine,
                 recorder: Recorder | None = None):
        self.authenticator = authenticator
        self.recorder = recorder
        # review decisions wait here (gateway/broker.py); None: they are refused
        self.broker: Broker | None = None
        self.admin_url: str | None = None
        self.metrics: Metrics | None = None
        self.server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()
        # (target, Mcp-Session-Id) -> the session that id belongs to
        self.mcp_sessions: dict[tuple[str, str], HttpSession] = {}
        self._reaper: asyncio.Task | None = None
        self.upstreams: dict[str, Upstream] = {}
        self.targets: dict[str, Target] = {}
        # the connection each client task runs, and whether SIGTERM asked them to finish
        self._connections: dict[asyncio.Task, _ClientConnection] = {}
        self.draining = False
        self.reload(cfg, policy)

    def reload(self, cfg: Config, policy: PolicyEngine) -> None:
        """New targets, limits and rules for the requests to come; open connections stay. The
        targets' credentials are read again (a missing one is an error, and nothing changes)."""
        targets: dict[str, Target] = {t.name: t for t in cfg.targets if t.protocol == "http"}
        credentials: dict[str, tuple[bytes, bytes]] = {}
        for name, t in targets.items():
            secret = target_credential(t)
            if secret is not None:
                credentials[name] = (t.credential_header.encode("latin-1"), secret.reveal().encode("utf-8"))
        self.cfg = cfg
        self.policy = policy
        previous, self.targets = self.targets, targets
        self.credentials = credentials
        limits = cfg.http
        self.max_header_bytes = limits.max_header_bytes
        self.max_body_bytes = limits.max_body_bytes
        self.max_buffered = limits.max_buffered_bytes
        self.header_timeout = parse_duration(limits.header_timeout)
        self.idle_timeout = parse_duration(limits.idle_timeout)
        self.body_timeout = parse_duration(limits.body_timeout)
        self.upstream_timeout = parse_duration(limits.upstream_timeout)
        self.max_connections = limits.max_connections
        self.refuse_unrecorded = cfg.recording.on_record_failure == "refuse"
        old, self.upstreams = self.upstreams, {}
        for name, t in targets.items():
            kept, was = old.pop(name, None), previous.get(name)
            if kept is not None and was is not None and (was.url, was.tls_ca_file) == (t.url, t.tls_ca_file):
                self.upstreams[name] = kept  # keep its pooled connections
                continue
            upstream = self.upstreams[name] = Upstream(name, t.url or "", tls_ca_file=t.tls_ca_file,
                                                       connect_timeout=parse_duration(limits.connect_timeout))
            upstream.on_connect_error = lambda name=name: self._connect_failed(name)
        for upstream in old.values():
            upstream.close()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    @property
    def sockets(self) -> list:
        return list(self.server.sockets) if self.server is not None else []

    def _connect_failed(self, target: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_error("http", target)

    @property
    def open_sessions(self) -> int:
        return len(self._clients)

    async def drain(self, grace: float) -> None:
        """Stop accepting; let requests in flight finish for up to ``grace`` seconds (an idle
        keep-alive connection is closed at its next request boundary), then close the rest."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for task in list(self._clients):
            connection = self._connections.get(task)
            if connection is not None and connection.idle:
                task.cancel()
        if self._clients:  # none can join: the server is closed
            await asyncio.wait(set(self._clients), timeout=max(grace, 0.0))
        await self.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        for session in list(self.mcp_sessions.values()):
            session.end("the gateway stopped")
        self.mcp_sessions.clear()
        for upstream in self.upstreams.values():
            upstream.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, MCP_IDLE_S / 4))
            now = time.monotonic()
            for key, session in list(self.mcp_sessions.items()):
                if session.active == 0 and now - session.last_used > MCP_IDLE_S:
                    del self.mcp_sessions[key]
                    session.end(f"idle for {MCP_IDLE_S:g}s")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= self.max_connections:
            writer.write(_json_response(503, {"error": "overloaded",
                                              "message": "wiregate: too many connections; try again later"},
                                        close=True))
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self._clients.add(task)
        connection = self._connections[task] = _ClientConnection(self, reader, writer)
        try:
            await connection.run()
        finally:
            self._clients.discard(task)
            del self._connections[task]


class _ClientConnection:
    """One caller's TCP connection: requests one after another (pipelined ones queue up)."""

    def __init__(self, listener: HttpListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.l = listener
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.client_ip = str(peer[0])
        self.client = f"{peer[0]}:{peer[1]}" if len(peer) >= 2 else str(peer)
        self.parser = codec.RequestParser(max_head_bytes=listener.max_header_bytes,
                                          max_body_bytes=listener.max_body_bytes)
        self.events: deque[Any] = deque()
        # plain HTTP (and stateless MCP) sessions of this connection, per caller and target
        self.sessions: dict[tuple[str, str], HttpSession] = {}
        # a response has started for the current request: an error can no longer be answered
        self.responding = False
        # the connection may stay open after the current response
        self._keep = True
        self._auth_error = ""
        # bytes the caller sent while a response was streaming (see _watch_caller), not parsed yet
        self._early: bytes | None = None
        # a response head not written yet (see _hold_head)
        self._held: bytes | None = None
        # request body bytes streamed to the target for the current request
        self._streamed_in = 0
        # the last Authorization value seen on this connection and whom it proved
        self._last_auth: tuple[bytes, Identity] | None = None
        # between requests, with nothing of the next one read yet (a drain may close it now)
        self.idle = False

    # -- the connection's life ------------------------------------------------------------
    async def run(self) -> None:
        reason = "connection closed"
        try:
            while not self.l.draining:
                self.idle = not self.events and self._early is None
                head = await self._next_head()
                self.idle = False
                if head is None:
                    break
                self.responding = False
                if not await self._handle(head):
                    break
        except HttpError as exc:
            reason = exc.reason
            if not self.responding:
                await self._refuse(exc.status, _ERRORS.get(exc.status, "bad_request"), f"wiregate: {exc.reason}",
                                   keep=False)
        except TimeoutError:
            reason = "the caller was too slow"
            if not self.responding:
                await self._refuse(408, "request_timeout", "wiregate: the request did not arrive in time", keep=False)
        except (_Close, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            reason = "the gateway stopped"
            raise
        except Exception:
            log.exception("http connection from %s: internal error; closing it", self.client)
            reason = "internal error"
            if not self.responding:
                with contextlib.suppress(Exception):
                    await self._refuse(500, "internal_error", "wiregate: internal error", keep=False)
        finally:
            for session in self.sessions.values():
                session.end(reason)
            self.writer.close()

    async def _read(self) -> bytes:
        if self._early is not None:
            data, self._early = self._early, None
        else:
            data = await self.reader.read(READ_SIZE)
        if data:
            self.events.extend(self.parser.feed(data))
        else:
            self.parser.feed_eof()
        return data

    async def _next_head(self) -> RequestHead | None:
        """The next request head; None when the caller closed or stayed idle too long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.l.idle_timeout
        started = False
        while not self.events:
            if not started and self.parser.in_message:
                # the head has begun: it must be complete within header_timeout (slow-loris callers)
                started = True
                deadline = loop.time() + self.l.header_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self._read()
            except TimeoutError:
                if self.parser.in_message:
                    raise
                return None
            if not data:
                return None
        event = self.events.popleft()
        if not isinstance(event, RequestHead):
            raise HttpError(400, "a request body arrived where a request head was expected")
        if event.body == "none" and self.events and self.events[0] is END:
            self.events.popleft()  # nothing to read: the message ends with its head
        return event

    async def _body_event(self) -> Any:
        while not self.events:
            async with asyncio.timeout(self.l.body_timeout):
                if not await self._read():
                    raise _Close()
        return self.events.popleft()

    def _body_ready(self) -> bool:
        """The whole body of the current request has arrived already."""
        return any(e is END for e in self.events)

    async def _read_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._body_event()
            if event is END:
                return b"".join(parts)
            size += len(event.data)
            if size > limit:
                raise HttpError(413, f"the request body is larger than the {limit} bytes the gateway reads "
                                     "to check it")
            parts.append(event.data)

    # -- one request --------------------------------------------------------------------------
    async def _handle(self, head: RequestHead) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        started = time.monotonic()
        l = self.l
        try:
            raw_path, query = split_target(head.target)
            path = normalize_path(raw_path)
        except BadPath as exc:
            return await self._refuse(400, "bad_request", f"wiregate: {exc}", head=head)
        identity = await self._identify(head)
        if identity is None:
            return await self._unauthorized(head)
        host = codec.header(head.headers, b"host")
        host_text = host.decode("latin-1") if host else None
        routed = route(path, host_text, l.targets)
        if routed is None:
            return await self._refuse(404, "unknown_target",
                                      "wiregate: no target here: name it as the first path segment "
                                      "(/TARGET/...) or in the host name (TARGET.example.com)", head=head)
        name, target_path = routed
        by_path = not (host_text and "." in host_text and host_text.split(".", 1)[0] == name)
        target = l.targets[name]
        if not groups_match(identity.groups, target.allow_groups):
            shown = ", ".join(identity.groups) or "none"
            return await self._refuse(403, "forbidden", f'wiregate: your groups ({shown}) may not use target "{name}"',
                                      head=head)
        session = self._session(identity, target, head)
        if session is None:
            return await self._refuse(403, "forbidden", "wiregate: this MCP session belongs to another caller",
                                      head=head)
        session.active += 1
        session.last_used = time.monotonic()
        try:
            return await self._proxy(head, session, target, target_path, query, by_path, started)
        except UpstreamError as exc:
            if self.responding:
                raise _Close() from None
            shown = f"{target_path}?{query}" if query else target_path
            log.warning("http target %s: %s", name, exc.message)
            return await self._refuse(exc.status, _ERRORS.get(exc.status, "bad_gateway"), f"wiregate: {exc.message}",
                                      head=head, session=session, started=started, shown=shown, body_done=True)
        finally:
            session.active -= 1
            session.last_used = time.monotonic()

    async def _identify(self, head: RequestHead) -> Identity | None:
        value = codec.header(head.headers, b"authorization")
        last = self._last_auth
        if last is not None and last[0] == value and (last[1].expires_at is None or last[1].expires_at > time.time()):
            return last[1]
        if value is None:
            self._auth_error = "no bearer token: send Authorization: Bearer TOKEN"
            return None
        scheme, _, token = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._auth_error = "send the token as Authorization: Bearer TOKEN"
            return None
        try:
            identity = await self.l.authenticator.authenticate(token.strip())
        except AuthError as exc:
            self._auth_error = str(exc)
            return None
        self._last_auth = (value, identity)
        return identity

    async def _unauthorized(self, head: RequestHead) -> bool:
        message = f"wiregate: {self._auth_error}"
        return await self._refuse(401, "unauthorized", message, head=head,
                                  extra=[(b"WWW-Authenticate", b'Bearer realm="wiregate"')])

    def _session(self, identity: Identity, target: Target, head: RequestHead) -> HttpSession | None:
        l = self.l
        sid = codec.header(head.headers, b"mcp-session-id") if target.mcp else None
        if sid:
            key = (target.name, sid.decode("latin-1"))
            session = l.mcp_sessions.get(key)
            if session is not None:
                return session if session.identity.name == identity.name else None
            session = HttpSession(engine=l.policy, recorder=l.recorder, identity=identity, target=target,
                                  client=self.client, tls=False, mcp_session_id=key[1],
                                  refuse_unrecorded=l.refuse_unrecorded, holds=l.broker is not None)
            l.mcp_sessions[key] = session
            return session
        key = (identity.name, target.name)
        session = self.sessions.get(key)
        if session is None:
            session = HttpSession(engine=l.policy, recorder=l.recorder, identity=identity, target=target,
                                  client=self.client, tls=False, refuse_unrecorded=l.refuse_unrecorded,
                                  holds=l.broker is not None)
            self.sessions[key] = session
        return session

    async def _proxy(self, head: RequestHead, session: HttpSession, target: Target, target_path: str,
                     query: str, by_path: bool, started: float) -> bool:
        l = self.l
        shown = f"{target_path}?{query}" if query else target_path
        decision = session.policy.check_http(head.method, target_path, mcp=target.mcp)
        if not session.record_request(f"{head.method} {shown}", decision) and decision.allowed:
            return await self._refuse(503, "unrecordable", "wiregate: the request cannot be recorded, so it is "
                                      "not sent", head=head, session=session, started=started, shown=shown)
        if decision.action == "review" and l.broker is not None:
            decision = await self._await_approval(session, "http", f"{head.method} {target_path}",
                                                  f"{head.method} {shown}", decision.rule)
        if not decision.allowed:
            message = decision.message if decision.action == "deny" else review_refusal(decision, "the request")
            return await self._refuse(403, "forbidden", message, head=head, rule=decision.rule, session=session,
                                      started=started, shown=shown)

        self._streamed_in = 0
        mcp_post = session.mcp is not None and head.method == "POST"
        body: bytes | None = None
        if head.body == "none":
            body = b""
        if mcp_post:
            if media_type(codec.header(head.headers, b"content-type")) != "application/json":
                return await self._refuse(415, "unsupported_media_type",
                                          "wiregate: MCP requests must be application/json", head=head,
                                          session=session, started=started, shown=shown)
            self._continue(head)
            body = await self._read_body(l.max_buffered)
            try:
                messages, batch = decode_payload(body)
            except RpcError as exc:
                answer = error_message(None, exc.code, f"wiregate: {exc.message}")
                session.mcp.record("gateway", None, None, answer)
                status = 400
                await self._send(status, [(b"Content-Type", _JSON)], encode(answer), head)
                session.record_exchange(head.method, shown, status, len(body), 0, started)
                return head.keep_alive
            try:
                refusal = session.mcp.from_caller(messages, batch)
            except BodyTooDeep:
                return await self._refuse(400, "bad_request", "wiregate: the JSON-RPC payload is nested too deeply "
                                          "to be checked", head=head, session=session, started=started, shown=shown,
                                          body_done=True)
            if isinstance(refusal, Hold):
                not_approved = []
                for index, name, args, decision in refusal.calls:
                    recorded = f"{name} {encode(session.masker.mask_value(args)).decode()}"
                    decision = await self._await_approval(session, "tool", name, recorded, decision.rule, args)
                    if not decision.allowed:
                        not_approved.append((index, decision))
                refusal = session.mcp.settle(refusal, not_approved)
            if refusal is not None:
                payload = encode(refusal.body)
                await self._send(200, [(b"Content-Type", _JSON)], payload, head)
                session.record_exchange(head.method, shown, 200, len(body), len(payload), started)
                return head.keep_alive
        elif head.body != "none" and self._body_ready():
            body = await self._read_body(l.max_body_bytes)

        upstream = l.upstreams[target.name]
        up_target = f"{upstream.base_path}{target_path}" + (f"?{query}" if query else "")
        headers = self._upstream_headers(head, target, upstream, session, body)
        request = codec.request_head(head.method, up_target, headers)
        try:
            conn, resp = await self._send_upstream(upstream, head, request, body)
        except UpstreamError as exc:
            log.warning("http target %s: %s", target.name, exc.message)
            return await self._refuse(exc.status, _ERRORS.get(exc.status, "bad_gateway"), f"wiregate: {exc.message}",
                                      head=head, session=session, started=started, shown=shown,
                                      body_done=body is not None)
        try:
            sent, status = await self._respond(head, resp, conn, session, target, upstream, by_path)
        except BaseException:
            conn.close()
            raise
        session.record_exchange(head.method, shown, status, len(body) if body is not None else self._streamed_in,
                                sent, started)
        if target.mcp and head.method == "DELETE" and 200 <= status < 300:
            self._end_mcp(target, head, "the caller ended the MCP session")
        return head.keep_alive and self._keep

    async def _await_approval(self, session: HttpSession, kind: str, text: str, recorded: str, rule: str | None,
                              args: dict[str, Any] | None = None) -> Decision:
        """The request (or tool call) waits for an approval (gateway/broker.py). A caller that
        closes its connection meanwhile withdraws it."""
        hold = asyncio.ensure_future(self.l.broker.review(  # type: ignore[union-attr]
            requester=session.identity.name, groups=session.identity.groups, session_id=session.session_id,
            protocol="http", target=session.target.name, kind=kind, text=text, recorded=recorded, rule=rule or "",
            args=args, record=session.record))
        watch: asyncio.Future[bytes] | None = None
        try:
            while True:
                if watch is None and not self.events and self._early is None:
                    watch = asyncio.ensure_future(self.reader.read(READ_SIZE))
                await asyncio.wait({hold} if watch is None else {hold, watch}, return_when=asyncio.FIRST_COMPLETED)
                if hold.done():
                    break
                data = b"" if watch.exception() is not None else watch.result()  # type: ignore[union-attr]
                if not data:
                    hold.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hold
                    raise _Close()
                self._early, watch = data, None  # the rest of the request, or the next one: parsed later
        finally:
            await self._end_watch(watch)
            if not hold.done():
                hold.cancel()
                with contextlib.suppress(BaseException):
                    await hold
        return hold.result().decision(rule)

    def _continue(self, head: RequestHead) -> None:
        if head.expect_continue and not self._body_ready():
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _upstream_headers(self, head: RequestHead, target: Target, upstream: Upstream, session: HttpSession,
                          body: bytes | None) -> codec.Headers:
        dropped = _DROPPED_REQUEST
        credential = self.l.credentials.get(target.name)
        out: codec.Headers = [(b"Host", upstream.authority.encode("latin-1"))]
        for name, value in codec.end_to_end(head.headers):
            low = name.lower()
            if low in dropped and not (low == b"authorization" and target.forward_token):
                continue
            if credential is not None and low == credential[0].lower():
                continue
            if low == b"accept-encoding" and (session.masker.active or session.mcp is not None):
                continue  # the gateway must be able to read what it masks
            out.append((name, value))
        if session.masker.active or session.mcp is not None:
            out.append((b"Accept-Encoding", b"identity"))
        if credential is not None:
            out.append(credential)
        host = codec.header(head.headers, b"host")
        out.append((b"X-Forwarded-For", self.client_ip.encode("latin-1")))
        out.append((b"X-Forwarded-Proto", b"http"))
        if host is not None:
            out.append((b"X-Forwarded-Host", host))
        out.append((b"Via", _VIA))
        if head.upgrade:
            upgrade = codec.header(head.headers, b"upgrade")
            out.append((b"Connection", b"upgrade"))
            out.append((b"Upgrade", upgrade or b""))
        if body is not None:
            if body or head.body != "none" or head.method in ("POST", "PUT", "PATCH"):
                out.append((b"Content-Length", str(len(body)).encode()))
        elif head.body == "chunked":
            out.append((b"Transfer-Encoding", b"chunked"))
        else:
            out.append((b"Content-Length", str(head.content_length or 0).encode()))
        return out

    async def _send_upstream(self, upstream: Upstream, head: RequestHead, request: bytes,
                             body: bytes | None) -> tuple[UpstreamConn, ResponseHead]:
        """Send the request and wait for the response head. A reused connection the target had
        closed is retried once on a new one when the body can be sent again."""
        conn = await upstream.get()
        while True:
            conn.parser.expect(head.method)
            try:
                if body is not None:
                    conn.writer.write(request + body if len(body) < 65536 else request)
                    if len(body) >= 65536:
                        conn.writer.write(body)
                    await conn.writer.drain()
                else:
                    conn.writer.write(request)
                    self._continue(head)
                    try:
                        await self._stream_request_body(conn, head)
                    except (HttpError, TimeoutError, _Close) as exc:
                        raise _CallerFailed(exc) from None
                resp = await self._response_head(conn)
                return conn, resp
            except (ConnectionError, _UpstreamClosed) as exc:
                conn.close()
                if conn.reused and body is not None and not isinstance(exc, _UpstreamSpoke):
                    conn = await upstream.fresh()
                    continue
                raise UpstreamError(502, f'target "{upstream.name}" closed the connection before answering') \
                    from None
            except TimeoutError:
                conn.close()
                raise UpstreamError(504, f'target "{upstream.name}" did not answer within '
                                         f"{self.l.upstream_timeout:g}s") from None
            except HttpError as exc:
                conn.close()
                raise UpstreamError(502, f'target "{upstream.name}" sent a bad response: {exc.reason}') from None
            except _CallerFailed as exc:
                conn.close()  # the caller's body broke off or went wrong: its own error answers it
                raise exc.cause from None

    async def _stream_request_body(self, conn: UpstreamConn, head: RequestHead) -> None:
        chunked = head.body == "chunked"
        while True:
            event = await self._body_event()
            if event is END:
                if chunked:
                    conn.writer.write(codec.LAST_CHUNK)
                break
            self._streamed_in += len(event.data)
            conn.writer.write(codec.chunk(event.data) if chunked else event.data)
            if conn.writer.transport.get_write_buffer_size() > HIGH_WATER:
                await conn.writer.drain()
        await conn.writer.drain()

    async def _response_head(self, conn: UpstreamConn) -> ResponseHead:
        got_bytes = False
        async with asyncio.timeout(self.l.upstream_timeout):
            while True:
                while conn.events:
                    event = conn.events.popleft()
                    if isinstance(event, InterimHead):
                        if event.status != 100:  # 103 Early Hints and the like reach the caller
                            self.writer.write(codec.response_head(event.status, codec.reason_phrase(event.status),
                                                                  codec.end_to_end(event.headers)))
                        continue
                    if isinstance(event, ResponseHead):
                        return event
                    raise HttpError(502, "a response body came before its head")
                data = await conn.reader.read(READ_SIZE)
                if not data:
                    conn.parser.feed_eof()
                    raise _UpstreamSpoke() if got_bytes else _UpstreamClosed()
                got_bytes = True
                conn.events.extend(conn.parser.feed(data))

    # -- the response ---------------------------------------------------------------------
    async def _respond(self, head: RequestHead, resp: ResponseHead, conn: UpstreamConn, session: HttpSession,
                       target: Target, upstream: Upstream, by_path: bool) -> tuple[int, int]:
        """Relay the response; returns (body bytes sent to the caller, status)."""
        self._keep = True
        headers = [(n, v) for n, v in codec.end_to_end(resp.headers) if n.lower() not in _DROPPED_RESPONSE]
        if by_path:
            headers = [(n, _relocate(v, upstream, target.name)) if n.lower() == b"location" else (n, v)
                       for n, v in headers]
        if target.mcp and head.method in ("POST", "GET"):
            sid = codec.header(resp.headers, b"mcp-session-id")
            if sid and not session.mcp_session_id:
                self._adopt_mcp(session, target, sid.decode("latin-1"))
        if resp.status == 101:
            if not head.upgrade:
                raise HttpError(502, "the target switched protocols unasked")
            return await self._splice(head, resp, conn, headers), 101
        if head.upgrade:
            self._keep = False  # the request parser stopped at the upgrade: this connection ends here

        ctype = codec.header(resp.headers, b"content-type")
        media = media_type(ctype)
        sse = media == "text/event-stream"
        masker = session.masker
        transform_sse = sse and (session.mcp is not None or masker.active)
        transform_whole = not sse and resp.body != "none" and (
            (session.mcp is not None and media == "application/json") or (masker.active and masker.masks_media(ctype)))
        if (transform_sse or transform_whole) and _encoded(resp.headers):
            raise UpstreamError(502, "the target sent a compressed body the gateway must read to mask; "
                                "it asked for identity")
        if transform_whole:
            body = await self._upstream_body(conn, resp)
            out = self._transform(session, ctype, body)
            if out is None:
                raise UpstreamError(502, "the target's response could not be read to be masked "
                                    f"(not valid {media or 'text'})")
            self._write_head(resp.status, resp.reason, headers + [(b"Content-Length", str(len(out)).encode())], head,
                             out)
            await self.writer.drain()
            self._finish_upstream(conn, resp, upstream)
            return len(out), resp.status
        if resp.body == "none":
            # a HEAD or 304 answer describes the body a GET would get: its length goes along
            length = codec.header(resp.headers, b"content-length")
            if head.method == "HEAD" or resp.status == 304:
                if length is not None:
                    headers.append((b"Content-Length", length))
            elif resp.status >= 200 and resp.status != 204:
                headers.append((b"Content-Length", b"0"))
            async for _ in self._upstream_chunks(conn, resp):  # its end is already parsed
                pass
            self._write_head(resp.status, resp.reason, headers, head)
            await self.writer.drain()
            self._finish_upstream(conn, resp, upstream)
            return 0, resp.status
        chunked_out = head.version == "1.1" and (resp.body != "length" or transform_sse)
        if chunked_out:
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif resp.body == "length" and not transform_sse:
            headers.append((b"Content-Length", str(resp.content_length).encode()))
        else:
            self._keep = False  # an HTTP/1.0 caller learns where the body ends from the close
        self._hold_head(resp.status, resp.reason, headers, head)
        if transform_sse or resp.body != "length":
            self._emit(b"")  # a stream's caller sees the head at once, not with the first event
        sent = 0
        splitter = SseSplitter() if transform_sse else None
        # a body that has all arrived already cannot leave the caller waiting: no watch needed
        watcher = None if any(e is END for e in conn.events) else \
            asyncio.ensure_future(self._watch_caller(conn))
        try:
            async for data in self._upstream_chunks(conn, resp):
                if splitter is not None:
                    data = b"".join(self._sse_event(session, e) for e in splitter.feed(data))
                    if not data:
                        continue
                sent += len(data)
                self._emit(codec.chunk(data) if chunked_out else data)
                await self._drain()
        finally:
            await self._end_watch(watcher)
        if splitter is not None:
            tail = splitter.flush()
            if tail:
                tail = masker.mask_text(tail.decode("utf-8", "replace")).encode()
                sent += len(tail)
                self._emit(codec.chunk(tail) if chunked_out else tail)
        self._emit(codec.LAST_CHUNK if chunked_out else b"")
        await self.writer.drain()
        self._finish_upstream(conn, resp, upstream)
        return sent, resp.status

    async def _end_watch(self, watch: asyncio.Future | None) -> None:
        """Stop a read that watched for the caller going away: it must be over before the next
        read starts (a stream allows one reader), and what it got is kept for ``_read``."""
        if watch is None:
            return
        watch.cancel()
        try:
            data = await watch
        except BaseException:  # cancelled; a failed connection shows at the next read
            return
        if isinstance(data, bytes):
            self._early = data

    async def _watch_caller(self, conn: UpstreamConn) -> None:
        """While a response streams (an SSE feed may stay quiet for hours), notice a caller that
        went away and stop reading the target for it. Bytes that arrive instead (a pipelined
        request) are kept for ``_read``."""
        with contextlib.suppress(Exception):
            if self.events or self._early is not None:
                return
            data = await self.reader.read(READ_SIZE)
            if data:
                self._early = data
            else:
                conn.close()  # the relay then ends on the target's side

    def _write_head(self, status: int, reason: str, headers: codec.Headers, head: RequestHead,
                    body: bytes = b"") -> None:
        self._hold_head(status, reason, headers, head)
        self._emit(body)

    def _hold_head(self, status: int, reason: str, headers: codec.Headers, head: RequestHead) -> None:
        """The response head, kept until ``_emit`` sends it with the first body bytes (one write, one
        system call, for the common small response)."""
        if head.version == "1.0" and head.keep_alive and self._keep:
            headers = headers + [(b"Connection", b"keep-alive")]
        elif not head.keep_alive or not self._keep:
            headers = headers + [(b"Connection", b"close")]
        self._held = codec.response_head(status, reason, headers, version="1.1")
        self.responding = True

    def _emit(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.writer.write(held + data)
        elif data:
            self.writer.write(data)

    async def _drain(self) -> None:
        if self.writer.transport.get_write_buffer_size() > HIGH_WATER:
            async with asyncio.timeout(self.l.body_timeout):
                await self.writer.drain()

    def _finish_upstream(self, conn: UpstreamConn, resp: ResponseHead, upstream: Upstream) -> None:
        if resp.keep_alive and not conn.events:
            upstream.put(conn)
        else:
            conn.close()

    async def _upstream_chunks(self, conn: UpstreamConn, resp: ResponseHead):
        while True:
            while conn.events:
                event = conn.events.popleft()
                if event is END:
                    return
                if isinstance(event, BodyChunk):
                    yield event.data
                else:
                    raise HttpError(502, "the target sent a second response head")
            data = await conn.reader.read(READ_SIZE)
            if data:
                conn.events.extend(conn.parser.feed(data))
            else:
                conn.events.extend(conn.parser.feed_eof())
                if not conn.events:
                    raise HttpError(502, "the target closed the connection in the middle of its response")

    async def _upstream_body(self, conn: UpstreamConn, resp: ResponseHead) -> bytes:
        limit = self.l.max_buffered
        if resp.content_length is not None and resp.content_length > limit:
            raise UpstreamError(502, f"the target's response is larger than the {limit} bytes the gateway reads "
                                "to mask it")
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.l.upstream_timeout):
                async for data in self._upstream_chunks(conn, resp):
                    size += len(data)
                    if size > limit:
                        raise UpstreamError(502, f"the target's response is larger than the {limit} bytes the gateway "
                                            "reads to mask it")
                    parts.append(data)
        except TimeoutError:
            raise UpstreamError(504, f"the target did not send the whole body to mask within "
                                f"{self.l.upstream_timeout:g}s") from None
        return b"".join(parts)

    def _transform(self, session: HttpSession, ctype: bytes | None, body: bytes) -> bytes | None:
        if not body.strip():
            return body  # an empty body (a 202 to a notification, say) holds nothing to mask
        if session.mcp is not None and media_type(ctype) == "application/json":
            value = _decode_json(body)
            if value is _NOT_JSON:
                return None
            try:
                out = session.mcp.from_target(value)
            except BodyTooDeep:
                return None
            return body if out is value else encode(out)
        return session.masker.mask_body(ctype, body)

    def _sse_event(self, session: HttpSession, event: Any) -> bytes:
        if event.data is None or not event.data.strip():
            return event.raw
        data = event.data
        if session.mcp is not None:
            value = _decode_json(data)
            if value is not _NOT_JSON:
                try:
                    out = session.mcp.from_target(value)
                except BodyTooDeep:
                    raise UpstreamError(502, "the target sent an event nested too deeply to be masked") from None
                return event.raw if out is value else event.with_data(encode(out).decode())
        if data.lstrip()[:1] in ("{", "["):
            raw = data.encode()
            masked = session.masker.mask_json(raw)
            if masked is not None:
                return event.raw if masked is raw else event.with_data(masked.decode())
        text = session.masker.mask_text(data)
        return event.raw if text == data else event.with_data(text)

    async def _splice(self, head: RequestHead, resp: ResponseHead, conn: UpstreamConn,
                      headers: codec.Headers) -> int:
        """After a 101: bytes both ways until either side closes."""
        upgrade = codec.header(resp.headers, b"upgrade") or b""
        self.writer.write(codec.response_head(101, resp.reason, headers + [(b"Connection", b"Upgrade"),
                                                                           (b"Upgrade", upgrade)]))
        self.responding = True
        self._keep = False
        sent = 0
        leftover = self.parser.take_leftover()
        if leftover:
            conn.writer.write(leftover)
        up_left = conn.parser.take_leftover()
        if up_left:
            self.writer.write(up_left)
            sent += len(up_left)
        counter = [sent]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(READ_SIZE):
                    dst.write(data)
                    if count:
                        counter[0] += len(data)
                    await dst.drain()
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    dst.write_eof() if dst.can_write_eof() else dst.close()

        tasks = [asyncio.ensure_future(pump(self.reader, conn.writer, False)),
                 asyncio.ensure_future(pump(conn.reader, self.writer, True))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait(tasks, timeout=self.l.idle_timeout)
        finally:
            for task in tasks:
                task.cancel()
            conn.close()
        return counter[0]

    # -- MCP sessions ------------------------------------------------------------------------
    def _adopt_mcp(self, session: HttpSession, target: Target, sid: str) -> None:
        """The target assigned an Mcp-Session-Id: the session follows that id from now on."""
        key = (target.name, sid)
        if key in self.l.mcp_sessions:
            return
        session.mcp_session_id = sid
        for k, s in list(self.sessions.items()):
            if s is session:
                del self.sessions[k]
        self.l.mcp_sessions[key] = session

    def _end_mcp(self, target: Target, head: RequestHead, reason: str) -> None:
        sid = codec.header(head.headers, b"mcp-session-id")
        if sid:
            session = self.l.mcp_sessions.pop((target.name, sid.decode("latin-1")), None)
            if session is not None:
                session.end(reason)

    # -- the gateway's own answers -----------------------------------------------------------
    async def _send(self, status: int, headers: codec.Headers, body: bytes, head: RequestHead) -> None:
        self._keep = True
        self._write_head(status, codec.reason_phrase(status), headers + [(b"Content-Length", str(len(body)).encode())],
                         head, body)
        await self.writer.drain()

    async def _refuse(self, status: int, error: str, message: str, *, head: RequestHead | None = None,
                      keep: bool = True, rule: str | None = None, extra: codec.Headers = (),
                      session: HttpSession | None = None, started: float = 0.0, shown: str = "",
                      body_done: bool = False) -> bool:
        """Answer with a JSON error; False when the connection must close (a body still unread)."""
        payload: dict[str, Any] = {"error": error, "message": message}
        if rule is not None:
            payload["rule"] = rule
        pending_body = head is not None and head.body != "none" and not body_done and not self._body_ready()
        if pending_body:
            keep = False
        elif head is not None and head.body != "none" and not body_done:
            with contextlib.suppress(HttpError, _Close, TimeoutError):
                await self._read_body(self.l.max_body_bytes)  # already here: drop it, keep the connection
        keep = keep and (head is None or head.keep_alive)
        body = _json_response(status, payload, close=not keep, extra=extra, http10=head is not None and
                              head.version == "1.0" and keep)
        self.writer.write(body)
        self.responding = True
        with contextlib.suppress(OSError):
            await self.writer.drain()
        if session is not None and head is not None:
            session.record_exchange(head.method, shown, status, 0, len(body), started)
        if not keep:
            await self._linger()
        return keep

    async def _linger(self) -> None:
        """Read and drop what the caller is still sending for a little while, so that closing the
        socket does not reset the connection before the caller has read the answer."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            got = 0
            async with asyncio.timeout(LINGER_S):
                while got < LINGER_BYTES:
                    data = await self.reader.read(READ_SIZE)
                    if not data:
                        break
                    got += len(data)


# the "error" member of the gateway's own JSON answers, by status
_ERRORS = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large", 431: "headers_too_large",
           501: "not_implemented", 502: "bad_gateway", 504: "gateway_timeout", 505: "http_version_not_supported"}


class _CallerFailed(Exception):
    """The caller's side failed while its body streamed to the target (``cause`` says how)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class _UpstreamClosed(ConnectionError):
    """The target closed a connection before sending a byte of its answer."""


class _UpstreamSpoke(ConnectionError):
    """The target closed a connection in the middle of its response head."""



_NOT_JSON = object()


def _decode_json(data: bytes | str) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return _NOT_JSON


def _encoded(headers: codec.Headers) -> bool:
    coding = codec.header(headers, b"content-encoding")
    return coding is not None and coding.strip().lower() not in (b"", b"identity")


def _relocate(value: bytes, upstream: Upstream, target: str) -> bytes:
    """A Location the target sent, as the caller must follow it: through the gateway's /TARGET prefix."""
    text = value.decode("latin-1")
    origin = upstream.origin
    if text == origin or text.startswith((origin + "/", origin + "?")):
        text = text[len(origin):] or "/"
        text = text if text.startswith("/") else "/" + text
    elif not text.startswith("/") or text.startswith("//"):
        return value  # another site, or relative to the current path: right as it is
    base = upstream.base_path
    if base and (text == base or text.startswith((base + "/", base + "?"))):
        text = text[len(base):]
        text = text if text.startswith("/") else "/" + text
    return f"/{target}{text}".encode("latin-1")


def _json_response(status: int, payload: dict[str, Any], *, close: bool, extra: codec.Headers = (),
                   http10: bool = False) -> bytes:
    body = msgspec.json.encode(payload)
    headers: codec.Headers = [(b"Content-Type", _JSON), (b"Content-Length", str(len(body)).encode()),
                              (b"Cache-Control", b"no-store"), *extra]
    if close:
        headers.append((b"Connection", b"close"))
    elif http10:
        headers.append((b"Connection", b"keep-alive"))
    return codec.response_head(status, codec.reason_phrase(status), headers) + body

"""The asyncio side of one PostgreSQL session: thin glue around the codec.

Start-up (TLS, the caller's token, the upstream connection and its
authentication) is written as a coroutine over a small inbox; once both sides
are ready the session switches to callbacks, where bytes go straight from
``data_received`` through the sans-IO relay to the other transport, and each
side's write buffer pauses reading on the other (backpressure both ways).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import parse_listen
from gateway.errors import WiregateError, raised_at
from gateway.identity import AuthError, groups_match
from protocols.postgres import codec
from protocols.postgres.codec import F_FUNCTION_CALL, I32, P_PARSE, Q_QUERY, ProtocolViolation
from protocols.postgres.catalog import CATALOG_QUERY, CatalogError, CatalogReader, CatalogSnapshot
from protocols.postgres.relay import HOLD, BackendStream, FrontendStream, MaskingBackendStream, Refusals, Tracker
from protocols.postgres.resultmask import ResultMasking
from protocols.postgres.summary import ResultSummary
from recorder import events as rec
from recorder.capture import new_session_id, recorded_text
from recorder.writer import SessionRecorder
from protocols.postgres.upstream_auth import UpstreamAuth, UpstreamAuthError
from gateway.broker import held_message
from policy.model import Command, review_refusal

if TYPE_CHECKING:
    from gateway.config import Target
    from protocols.postgres.listener import PostgresListener

log = logging.getLogger("wiregate.postgres")

STARTUP_TIMEOUT = 60.0
UPSTREAM_CONNECT_TIMEOUT = 10.0
# named statement texts kept for recording their executions
_MAX_STATEMENT_TEXTS = 4096
# statement kinds that may give a statement name another meaning (SQL PREPARE shares its names
# with the protocol's Parse)
_NAMES_QUERIES = frozenset({"PREPARE", "DEALLOCATE", "DISCARD"})
# statement kinds after which the catalog snapshot may be out of date
_DDL = frozenset({"CREATE", "ALTER", "DROP", "COMMENT", "IMPORT"})
# the catalog's largest message: one row holding the whole catalog as JSON
MAX_CATALOG_MESSAGE = 256 * 1024 * 1024
# client parameters that are the gateway's to set, or that would change the protocol
_NOT_FORWARDED = {"user", "database", "replication"}


class _Refused(Exception):
    """End the start-up with this FATAL error for the client."""

    def __init__(self, code: str, text: str, hint: str | None = None):
        super().__init__(text)
        self.code, self.text, self.hint = code, text, hint


class _Inbox:
    """Bytes a side received before the relay takes over, read by the start-up coroutine."""

    __slots__ = ("buf", "eof", "seen", "_waiter")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.seen = False  # whether any byte ever arrived
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        self.seen = True
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def more(self) -> None:
        if self.eof:
            raise ConnectionResetError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self.more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_startup(self) -> bytes:
        while (length := codec.startup_length(self.buf)) is None:
            await self.more()
        return await self.read_exact(length)

    async def read_message(self, limit: int = 1 << 20) -> tuple[int, bytes]:
        head = await self.read_exact(5)
        length = codec.U32.unpack_from(head, 1)[0]
        if length < 4 or length > limit:
            raise ProtocolViolation(f"invalid message length {length}")
        return head[0], await self.read_exact(length - 4)


class _Side(asyncio.Protocol):
    """One transport of a session (client or upstream)."""

    def __init__(self, session: "PostgresSession") -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.inbox = _Inbox()
        self.relay = None  # FrontendStream or BackendStream once relaying
        self.peer: "_Side | None" = None
        self.peername: object = None
        # sees what this side forwards (the recorder's result summaries read the client's bytes)
        self.observe: Callable[[bytes], None] | None = None
        self.bytes_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        if self is self.session.client:
            self.session.start()

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None:
            self.inbox.feed(data)
            return
        self.bytes_in += len(data)
        try:
            out = relay.feed(data)
            if self.observe is not None and out:
                self.observe(out)
        except ProtocolViolation as e:
            self.session.protocol_violation(self, str(e))
            return
        except Exception as e:  # a bug must end this session, closed, not leave it half open
            self.session.internal_error(e)
            return
        if out:
            if self.session.held is not None and self is self.session.client:
                self.session.hold(out)
            else:
                self.peer.transport.write(out)  # type: ignore[union-attr]
        if self.session.notices and self is not self.session.client and relay.at_boundary:
            self.session.flush_notices()

    def eof_received(self) -> bool:
        self.inbox.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.feed_eof()
        self.session.side_lost(self)

    # the peer's reading follows this side's write buffer
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PostgresSession:
    """One client connection: start-up, then the relay."""

    def __init__(self, listener: "PostgresListener") -> None:
        self.listener = listener
        self.client = _Side(self)
        self.upstream: _Side | None = None
        self.identity = None
        self.target: "Target | None" = None
        self.policy = None
        self.client_addr = ""
        self.tls = False
        self.cancel_key: tuple[int, bytes] | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._encoding = "utf-8"
        self._scs_on = True
        self.catalog: CatalogSnapshot | None = None
        self.masking: ResultMasking | None = None
        self.tracker: Tracker | None = None
        # the session's recording (recorder/), its counters and why it ended
        self.recording: SessionRecorder | None = None
        self.session_id = ""
        self._commands = 0
        self._mark = 0.0  # when the last command went out or the last result came back
        self._end_reason = "client closed the connection"
        self._last_decision: tuple | None = None
        # fsync = "always": client bytes waiting until the recording of their commands is on disk
        self.held: list[bytes] | None = None
        # named statements' texts as recorded at Parse, for the executions of them
        self._statement_texts: dict[bytes, str] = {}
        # a statement held for an approval (gateway/broker.py): the wait, then its outcome for the
        # relay's second look at the message (None: forward it; bytes: the client's error)
        self._approval: asyncio.Task[None] | None = None
        self._released: tuple[bytes | None] | None = None
        self._cancelled = False
        # the gateway's own messages for the client, waiting for the upstream's stream to reach
        # a message boundary
        self.notices: list[bytes] = []

    # ------------------------------------------------------------ lifecycle

    def client_protocol(self) -> _Side:
        return self.client

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._startup())

    def side_lost(self, side: _Side) -> None:
        if side is self.client and self.upstream is not None and self.upstream.relay is not None:
            self.upstream.write(codec.TERMINATE)
        elif side is not self.client and not self._closed:
            self._end_reason = "the target closed the connection"
        self.close()

    def close(self, reason: str | None = None) -> None:
        """``reason`` replaces why the recording says the session ended."""
        if self._closed:
            return
        self._closed = True
        if reason is not None:
            self._end_reason = reason
        if self.recording is not None:
            self.recording.end(rec.SessionEnd(
                time=time.time(), reason=self._end_reason, commands=self._commands,
                bytes_in=self.client.bytes_in, bytes_out=self.upstream.bytes_in if self.upstream is not None else 0))
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._approval is not None and not self._approval.done():
            self._approval.cancel()  # withdraws the request
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.cancel_key is not None:
            self.listener.cancel_map.pop(self.cancel_key, None)
            self.listener.cancel_sessions.pop(self.cancel_key, None)
        self.listener.session_closed(self)

    def protocol_violation(self, side: _Side, text: str) -> None:
        self._end_reason = "protocol violation"
        if side is self.client:
            log.warning("session %s: client protocol violation: %s", self.client_addr, text)
            self.client.write(codec.fatal("08P01", f"wiregate: protocol violation: {text}"))
        else:
            log.warning("session %s: upstream protocol violation: %s", self.client_addr, text)
            self.client.write(codec.fatal("08P01", "wiregate: the target sent an invalid message; the session is closed"))
        self.close()

    def internal_error(self, exc: Exception) -> None:
        # the exception's text may quote row data: log only its type and where it was raised
        where = raised_at(exc)
        log.error("session %s: internal error %s at %s; the session is closed", self.client_addr,
                  type(exc).__name__, where)
        self._end_reason = "internal error"
        self.client.write(codec.fatal("XX000", "wiregate: internal error; the session is closed"))
        self.close()

    def _refuse(self, code: str, text: str, hint: str | None = None) -> None:
        self.client.write(codec.fatal(code, text, hint=hint))
        self.close()

    # ------------------------------------------------------------ start-up

    async def _startup(self) -> None:
        peer = self.client.peername
        self.client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "local")
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                await self._handshake(peer)
        except _Refused as e:
            log.info("session %s refused: %s", self.client_addr, e.text)
            self._refuse(e.code, e.text, e.hint)
        except ProtocolViolation as e:
            self._refuse("08P01", f"wiregate: {e}")
        except TimeoutError:
            self._refuse("08006", "wiregate: start-up took too long; the connection is closed")
        except (ConnectionError, ssl.SSLError, OSError) as e:
            # a connection that never sent a byte is a port probe (health check, load balancer)
            level = logging.INFO if self.client.inbox.seen else logging.DEBUG
            log.log(level, "session %s ended during start-up: %s", self.client_addr, e)
            self.close()
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception:  # a bug must end this session, never the gateway
            log.exception("session %s: unexpected error during start-up", self.client_addr)
            self._refuse("XX000", "wiregate: internal error during start-up; see the gateway's log")

    async def _handshake(self, peer: object) -> None:
        inbox = self.client.inbox
        loop = asyncio.get_running_loop()
        while True:
            while len(inbox.buf) < 4:
                await inbox.more()
            if codec.looks_like_http(bytes(inbox.buf[:4])):
                self.client.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                  b"Content-Length: 57\r\n\r\nThis is wiregate's PostgreSQL port; it does not speak HTTP\n")
                raise ConnectionResetError("HTTP request on the PostgreSQL port")
            packet = codec.parse_startup(await inbox.read_startup())
            if packet.kind == "ssl":
                if self.tls:
                    raise ProtocolViolation("SSLRequest inside TLS")
                if inbox.buf:
                    # bytes after SSLRequest before the handshake could be injected in the clear
                    raise ProtocolViolation("unexpected data after SSLRequest")
                self.client.write(b"S")
                new = await loop.start_tls(self.client.transport, self.client, self.listener.server_ssl, server_side=True)
                self.client.transport = new
                self.tls = True
                continue
            if packet.kind == "gssenc":
                self.client.write(b"N")  # GSSAPI encryption is not offered: the client goes on with SSL or plain
                continue
            if packet.kind == "cancel":
                await self.listener.forward_cancel(packet.cancel_pid, packet.cancel_key)
                raise ConnectionResetError("cancel request handled")
            break
        await self._authenticate(packet, peer)

    async def _authenticate(self, packet: codec.StartupPacket, peer: object) -> None:
        major, minor = packet.version >> 16, packet.version & 0xFFFF
        if major != 3:
            raise _Refused("0A000", f"wiregate: unsupported frontend protocol {major}.{minor}: only 3.0 is served")
        params = packet.params or {}
        if minor > 0 or any(k.startswith("_pq_.") for k in params):
            self.client.write(codec.negotiate_protocol_version(0, [k for k in params if k.startswith("_pq_.")]))
            params = {k: v for k, v in params.items() if not k.startswith("_pq_.")}
        user = params.get("user", "")
        target_name = params.get("database") or user
        if not user:
            raise _Refused("28000", "wiregate: no user name in the start-up packet: connect as the name in your token")
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise _Refused("28000", "wiregate: replication connections are not served through the gateway")
        if not self.tls and not _is_loopback(peer):
            raise _Refused("28000", "wiregate: a token is only accepted over TLS from a non-local address",
                           hint="connect with sslmode=require")
        self.client.write(codec.AUTH_CLEARTEXT)
        t, body = await self.client.inbox.read_message(limit=64 * 1024)
        if t != ord("p"):
            raise ProtocolViolation(f"expected a password message, got {chr(t)!r}")
        token = body.rstrip(b"\x00").decode("utf-8", "replace").strip()
        if not token:
            raise _Refused("28P01", f'wiregate: no token given for user "{user}": use your token as the password')
        try:
            identity = await self.listener.authenticator.authenticate(token)
        except AuthError as e:
            raise _Refused("28P01", f'wiregate: authentication failed for user "{user}": {e}') from None
        if identity.name != user:
            raise _Refused("28000", f'wiregate: user name "{user}" does not match the token, which is for "{identity.name}"',
                           hint=f'connect as user "{identity.name}"')
        target = self.listener.targets.get(target_name)
        if target is None:
            raise _Refused("3D000", f'wiregate: no PostgreSQL target named "{target_name}"',
                           hint="the database name selects the target")
        if not groups_match(identity.groups, target.allow_groups):
            raise _Refused("28000", f'wiregate: "{identity.name}" is not allowed on target "{target.name}"',
                           hint="none of your groups is in the target's allow_groups")
        self.identity, self.target = identity, target
        self.policy = self.listener.policy.session(protocol="postgres", target=target.name,
                                                   identity=identity.name, groups=identity.groups)
        forwarded = {k: v for k, v in params.items() if k not in _NOT_FORWARDED}
        self._check_startup_settings(forwarded)
        await self._connect_upstream(target, forwarded)

    def _check_startup_settings(self, params: dict[str, str]) -> None:
        """Settings in the start-up packet are SET statements the server runs before the first
        query (``options=-c role=admin`` is a SET ROLE): they go through the policy as such."""
        policy = self.policy
        if not policy.inspects_sql:
            return
        try:
            settings = codec.startup_settings(params)
        except ValueError as e:
            raise _Refused("42501", f"wiregate: start-up options refused: {e}",
                           hint="pass settings as -c name=value in options, or SET them after connecting") from None
        for name, value in settings:
            decision = policy.check_sql(f"SET {codec.quote_ident(name)} TO {codec.quote_literal(value)}")
            if not decision.allowed:
                raise _Refused(decision.sqlstate or "42501", f"{decision.message} (set by the start-up packet)")

    async def _connect_upstream(self, target: "Target", client_params: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        host, port = parse_listen(target.address or "")
        up = _Side(self)
        self.upstream = up
        try:
            password = self.listener.target_password(target)
        except WiregateError as e:
            log.error("target %s: %s", target.name, e)
            raise _Refused("08004", f'wiregate: target "{target.name}" is misconfigured on the gateway; see its log') from None
        try:
            async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT):
                transport, _ = await loop.create_connection(lambda: up, host, port)
                ctx = self.listener.upstream_ssl(target)
                if ctx is not None:
                    up.write(codec.ssl_request())
                    answer = await up.inbox.read_exact(1)
                    if answer == b"S":
                        up.transport = await loop.start_tls(
                            transport, up, ctx, server_hostname=host if target.tls == "verify-full" else None)
                    elif answer == b"N":
                        if target.tls in ("require", "verify-full"):
                            raise _Refused("08001", f'wiregate: target "{target.name}" does not offer TLS, which its tls = "{target.tls}" requires')
                    else:
                        raise ProtocolViolation("the target answered SSLRequest with neither S nor N")
                await self._upstream_startup(target, up, password, client_params)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as e:
            log.warning("target %s at %s: %s", target.name, target.address, e)
            if self.listener.metrics is not None:
                self.listener.metrics.upstream_error("postgres", target.name)
            raise _Refused("08001", f'wiregate: cannot reach target "{target.name}": {type(e).__name__}') from None

    async def _upstream_startup(self, target: "Target", up: _Side, password: str | None,
                                client_params: dict[str, str]) -> None:
        params = dict(client_params)
        params["user"] = target.user or ""
        params["database"] = target.database or target.name
        up.write(codec.startup_message(params))
        auth = UpstreamAuth(params["user"], password, self.listener.salted_cache)
        server_params: dict[str, str] = {}
        notices: list[bytes] = []
        upstream_key: tuple[int, bytes] | None = None
        while True:
            t, body = await up.inbox.read_message()
            if t == codec.R_AUTH:
                try:
                    reply = auth.step(I32.unpack_from(body, 0)[0], body[4:])
                except UpstreamAuthError as e:
                    log.error("target %s: authentication: %s", target.name, e)
                    raise _Refused("08004", f'wiregate: the gateway could not authenticate to target "{target.name}"; see its log') from None
                if reply:
                    up.write(reply)
            elif t == codec.E_ERROR:
                fields = codec.parse_fields(body)
                code = fields.get("C", "08004")
                log.error("target %s refused the session: %s %s", target.name, code, fields.get("M"))
                if code.startswith("28"):
                    raise _Refused("08004", f'wiregate: target "{target.name}" rejected the gateway\'s credentials; see its log')
                raise _Refused(code, f'wiregate: target "{target.name}": {fields.get("M", "error")}')
            elif t == codec.S_SYNC:
                name, pos = codec.split_cstr(body, 0)
                value, _ = codec.split_cstr(body, pos)
                server_params[name.decode()] = value.decode("utf-8", "replace")
            elif t == codec.K_BACKEND_KEY:
                upstream_key = (I32.unpack_from(body, 0)[0], body[4:])
            elif t == codec.N_NOTICE:
                notices.append(codec.message(b"N", body))
            elif t == codec.Z_READY:
                if self.policy.needs_catalog:
                    await self._load_catalog(up, server_params, params)
                self._go_live(up, server_params, notices, upstream_key, body)
                return
            elif t == codec.V_NEGOTIATE:
                continue
            else:
                raise ProtocolViolation(f"unexpected message {chr(t)!r} from the target during start-up")

    async def _load_catalog(self, up: _Side, server_params: dict[str, str], params: dict[str, str]) -> None:
        """The target's catalog, from the listener's cache or read on this connection (see catalog.py)."""
        target = self.target
        cache = self.listener.catalogs
        # start-up options can set the search path, which the snapshot records
        key = target.name + "\x00" + params.get("options", "") + "\x00" + params.get("search_path", "")
        snapshot = cache.get(key)
        pending = cache.loading.get(key) if snapshot is None else None
        if pending is not None:
            # another session is reading it: sessions starting together read it once
            snapshot = await asyncio.shield(pending)
        if snapshot is None:
            mine: asyncio.Future[CatalogSnapshot | None] = asyncio.get_running_loop().create_future()
            cache.loading.setdefault(key, mine)
            up.write(CATALOG_QUERY)
            reader = CatalogReader(codec.python_encoding(server_params.get("client_encoding", "UTF8")) or "utf-8")
            try:
                while snapshot is None:
                    t, body = await up.inbox.read_message(limit=MAX_CATALOG_MESSAGE)
                    snapshot = reader.feed(t, body)
            except CatalogError as e:
                log.error("target %s: cannot read the catalog: %s", target.name, e)
                raise _Refused("08004", f'wiregate: cannot read the catalog of target "{target.name}", which its '
                               "mask and table rules need; see the gateway's log") from None
            finally:
                # waiters get the snapshot, or None and read it themselves
                mine.set_result(snapshot)
                if cache.loading.get(key) is mine:
                    del cache.loading[key]
            cache.put(key, snapshot)
            log.info("target %s: catalog read (%d relations, %d functions)", target.name, len(snapshot.relations),
                     len(snapshot.functions))
        self.catalog = snapshot
        self.policy.set_catalog(snapshot.where_relation, snapshot.where_function, snapshot.search_path)

    def _go_live(self, up: _Side, server_params: dict[str, str], notices: list[bytes],
                 upstream_key: tuple[int, bytes] | None, status: bytes) -> None:
        recorder = self.listener.recorder
        if recorder is not None:
            self.session_id = new_session_id()
            self.recording = recorder.open(rec.SessionStart(
                session_id=self.session_id, time=time.time(), identity=self.identity.name,
                groups=tuple(self.identity.groups), target=self.target.name, protocol="postgres",
                client=self.client_addr, tls=self.tls, instance=recorder.instance, auth=self.identity.method))
            if not self.recording.writable and self.listener.on_record_failure == "refuse":
                self.recording = None
                raise _Refused("58030", "wiregate: the session is refused because the gateway cannot record it; "
                               "see the gateway's log")
        out = [codec.AUTH_OK]
        out += [codec.parameter_status(k, v) for k, v in server_params.items()]
        out += notices
        if upstream_key is not None:
            key = secrets.token_bytes(4)
            self.cancel_key = (upstream_key[0], key)
            self.listener.cancel_map[self.cancel_key] = (self.target, upstream_key)
            self.listener.cancel_sessions[self.cancel_key] = self
            out.append(codec.backend_key_data(upstream_key[0], key))
        out.append(codec.ready_for_query(status))
        self._on_parameter("client_encoding", server_params.get("client_encoding", "UTF8"))
        self._on_parameter("standard_conforming_strings", server_params.get("standard_conforming_strings", "on"))
        refusals = Refusals()
        if self.policy.masks:
            tracker = self.tracker = Tracker(self._decode_statement)
            self.masking = ResultMasking(self.policy, self.catalog, lambda: self._encoding, self.listener.lineage)
            backend: BackendStream = MaskingBackendStream(refusals, tracker, self.masking, server_params)
        else:
            tracker = None
            backend = BackendStream(refusals, server_params)
        backend.on_parameter = self._on_parameter
        backend.status = status
        self.client.peer, up.peer = up, self.client
        self.client.write(b"".join(out))
        pending_client, pending_up = bytes(self.client.inbox.buf), bytes(up.inbox.buf)
        self.client.inbox.buf.clear()
        up.inbox.buf.clear()
        self.client.relay = FrontendStream(self._check, refusals, tracker)
        up.relay = backend
        if self.recording is not None:
            up.observe = ResultSummary(self._on_result).feed
            self.client.relay.watch_binds(self._on_bind)
            self._mark = time.monotonic()
        log.info("session %s: %s connected to %s (%s)", self.client_addr, self.identity.name, self.target.name,
                 "tls" if self.tls else "plain")
        if pending_up:
            up.data_received(pending_up)
        if pending_client:
            self.client.data_received(pending_client)
        if self.client.inbox.eof:
            self.close()

    # ------------------------------------------------------------ policy

    def _record_command(self, msg_type: int, body: bytes, error: bytes | None) -> bytes | None:
        """Record what the caller asked and what was decided; refuse it when it cannot be recorded."""
        checked = self._last_decision
        if checked is not None:
            text, decision = checked
            action, rule, kinds, message = decision.action, decision.rule, decision.kinds, decision.message
        else:  # nothing to enforce here: the statement was not decoded for the policy
            raw = codec.parse_query(body) if msg_type == Q_QUERY else codec.parse_parse(body)[1] \
                if msg_type != F_FUNCTION_CALL else b"-- fastpath call"
            text = raw.decode(self._encoding or "utf-8", "replace")
            action, rule, kinds, message = "allow", None, (), ""
        if error is not None and action == "allow":
            action, message = "deny", codec.parse_fields(error[5:]).get("M", "")
        text = recorded_text(text, self.policy.masks.scans)
        if msg_type == P_PARSE and action == "allow":
            name = codec.parse_parse(body)[0]
            if name:
                if len(self._statement_texts) >= _MAX_STATEMENT_TEXTS:
                    self._statement_texts.clear()
                self._statement_texts[name] = text
        return self._record(msg_type, text, action, rule, kinds, message, error)

    def _on_bind(self, statement: bytes) -> None:
        """An execution of a named statement: recorded as a command of its own (kind ``execute``)."""
        text = self._statement_texts.get(statement)
        if text is None:  # prepared with SQL PREPARE, or before the texts were forgotten
            text = f"EXECUTE {statement.decode('utf-8', 'replace')}"
        refusal = self._record(None, text, "allow", None, (), f"execution of prepared statement "
                               f"{statement.decode('utf-8', 'replace')!r}", None)
        if refusal is not None:
            # the Bind cannot be refused from here any more; fail closed on the session instead
            self._end_reason = "the recorder could not take an execution"
            self.client.write(codec.fatal("58030", "wiregate: the session is closed because the gateway cannot "
                                          "record it; see the gateway's log"))
            self.close()

    def _record(self, msg_type: int | None, text: str, action: str, rule: str | None, kinds: tuple,
                message: str, error: bytes | None) -> bytes | None:
        self._commands += 1
        self._mark = time.monotonic()
        kind = "execute" if msg_type is None else "function_call" if msg_type == F_FUNCTION_CALL else "sql"
        ok = self.recording.record(rec.Command(time=time.time(), kind=kind,
                                           text=text, decision=action, rule=rule, kinds=tuple(kinds),
                                           message=message))  # type: ignore[union-attr]
        if ok and self.recording.sync_required and self.held is None:  # type: ignore[union-attr]
            # fsync = "always": what the client sent from here on waits for the recording
            self.held = []
            self.client.transport.pause_reading()  # type: ignore[union-attr]
            self.recording.synced().add_done_callback(self._synced)  # type: ignore[union-attr]
        if ok or error is not None or self.listener.on_record_failure == "continue":
            return None
        return codec.error_response("58030", "wiregate: the command is refused because the session recorder cannot "
                                    "record it (it is behind or failing); see the gateway's log")

    def hold(self, data: bytes) -> None:
        self.held.append(data)  # type: ignore[union-attr]

    def _synced(self, future: "asyncio.Future[bool]") -> None:
        held, self.held = self.held or [], None
        if self._closed:
            return
        if future.cancelled() or not future.result():
            if self.listener.on_record_failure == "refuse":
                self._end_reason = "the recorder failed"
                self.client.write(codec.fatal("58030", "wiregate: the session is closed because the gateway cannot "
                                              "record it; see the gateway's log"))
                self.close()
                return
        if held and self.upstream is not None:
            self.upstream.write(b"".join(held))
        self._resume_client()

    def _resume_client(self) -> None:
        if self.held is not None or (self.client.relay is not None and self.client.relay.paused):
            return  # still waiting for the recording or for an approval
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()

    def _on_result(self, tag: str, rows: int, nbytes: int, error: str | None) -> None:
        now = time.monotonic()
        duration = (now - self._mark) * 1000
        self._mark = now
        if self.recording is not None:
            if error is not None:
                error = recorded_text(error, self.policy.masks.scans)
            self.recording.record(rec.Result(time=time.time(), tag=tag, rows=rows, bytes=nbytes,
                                         duration_ms=round(duration, 3), error=error))

    def _decode_statement(self, raw: bytes) -> str | None:
        try:
            return raw.decode(self._encoding) if self._encoding else None
        except UnicodeDecodeError:
            return None

    def _on_parameter(self, name: str, value: str) -> None:
        if name == "client_encoding":
            self._encoding = codec.python_encoding(value)
        elif name == "standard_conforming_strings":
            self._scs_on = value == "on"

    def _check(self, msg_type: int, body: bytes) -> bytes | None:
        """The policy check for a statement-carrying message: None to forward it, HOLD to wait
        for an approval, else the client's error."""
        released = self._released
        if released is not None:  # the held message, once more: its approval has ended
            self._released = None
            if released[0] is not None:
                return released[0]
            sql, decision = self._last_decision  # type: ignore[misc]
            return self._allowed(msg_type, sql, decision)
        error = self._decide(msg_type, body)
        if self.recording is not None:
            refusal = self._record_command(msg_type, body, None if error is HOLD else error)
            if refusal is not None:
                return refusal
        if error is HOLD:
            self._hold(msg_type)
        return error

    # ------------------------------------------------------------ approvals

    def _hold(self, msg_type: int) -> None:
        sql, decision = self._last_decision  # type: ignore[misc]
        self.client.transport.pause_reading()  # type: ignore[union-attr]
        self._approval = asyncio.get_running_loop().create_task(self._await_approval(msg_type, sql, decision.rule))

    async def _await_approval(self, msg_type: int, sql: str, rule: str) -> None:
        broker = self.listener.broker
        kind = "function_call" if msg_type == F_FUNCTION_CALL else "sql"
        try:
            verdict = await broker.review(
                requester=self.identity.name, groups=self.identity.groups, session_id=self.session_id or None,
                protocol="postgres", target=self.target.name, kind=kind, text=sql,
                recorded=recorded_text(sql, self.policy.masks.scans), rule=rule, announce=self._announce,
                record=self.recording.record if self.recording is not None else None)
        except asyncio.CancelledError:
            if not self._cancelled:
                raise
            # the client's cancel request (psql's Ctrl-C): the request is withdrawn, the statement fails
            self._cancelled = False
            self._release(codec.error_response("57014", "canceling statement due to user request (its approval "
                                               "request was withdrawn)"))
            return
        self._release(None if verdict.approved else codec.error_response("42501", verdict.message))

    def _announce(self, record) -> None:
        self.tell_client(codec.notice_response(held_message(record, self.listener.admin_url)))

    def _release(self, error: bytes | None) -> None:
        self._approval = None
        if self._closed:
            return
        self._released = (error,)
        self.client.relay.paused = False  # type: ignore[union-attr]
        self.client.data_received(b"")  # the relay checks the held message again, then what followed it
        self._released = None
        self._resume_client()

    def cancel_hold(self) -> bool:
        """A cancel request for this session: withdraw a held statement's request. False when
        nothing is held (the target then gets the cancel request)."""
        if self._approval is None or self._approval.done():
            return False
        self._cancelled = True
        self._approval.cancel()
        return True

    def tell_client(self, message: bytes) -> None:
        """Write a message of the gateway's own between two of the upstream's."""
        up = self.upstream
        if up is not None and up.relay is not None and not up.relay.at_boundary:
            self.notices.append(message)
        else:
            self.client.write(message)

    def flush_notices(self) -> None:
        notices, self.notices = self.notices, []
        self.client.write(b"".join(notices))

    def _decide(self, msg_type: int, body: bytes) -> bytes | None:
        policy = self.policy
        self._last_decision = None
        if not policy.inspects_sql and self.catalog is None:
            return None
        if msg_type == F_FUNCTION_CALL:
            oid = I32.unpack_from(body, 0)[0] if len(body) >= 4 else 0
            name = self.catalog.functions.get(oid, "") if self.catalog is not None else ""
            sql = f"-- fastpath call of {name or f'function oid {oid}'}"
            if self.masking is not None and self.policy.masks.has_columns and not name.startswith("pg_catalog."):
                # its result comes back in a FunctionCallResponse, a value of unknown origin
                return codec.error_response("42501", "wiregate: blocked by mask rules: a fastpath call of a function "
                                            "that is not a built-in may return masked values unmasked")
            decision = policy.check(Command(protocol="postgres", target=self.target.name, kind="function_call",
                                            text=name))
        else:
            if msg_type == Q_QUERY:
                raw = codec.parse_query(body)
            else:
                raw = codec.parse_parse(body)[1]
            if not self._encoding:
                return codec.error_response("0A000", "wiregate: statements are refused: the session's client_encoding "
                                            "is not one the gateway can analyse", hint="SET client_encoding = 'UTF8'")
            if not self._scs_on and b"\\" in raw:
                return codec.error_response("0A000", "wiregate: a statement with a backslash is refused while "
                                            "standard_conforming_strings is off",
                                            hint="SET standard_conforming_strings = on")
            try:
                sql = raw.decode(self._encoding)
            except UnicodeDecodeError:
                return codec.error_response("22021", f"wiregate: the statement is not valid {self._encoding}")
            decision = policy.check_sql(sql)
        self._last_decision = (sql, decision)
        if decision.action == "allow":
            return self._allowed(msg_type, sql, decision)
        if decision.action == "review":
            if self.listener.broker is None:
                return codec.error_response(decision.sqlstate or "42501", review_refusal(decision, "the statement"))
            # what masking would refuse once approved is refused now, not put to an approver
            return self._mask_refusal(msg_type, sql) or HOLD
        return codec.error_response(decision.sqlstate, decision.message)

    def _mask_refusal(self, msg_type: int, sql: str) -> bytes | None:
        if self.masking is None or msg_type == F_FUNCTION_CALL:
            return None
        reason = self.masking.refusal(sql)
        if reason is None:
            return None
        return codec.error_response("42501", f"wiregate: blocked by mask rules: {reason}; masked values "
                                    "may not be copied where masking cannot follow them")

    def _allowed(self, msg_type: int, sql: str, decision) -> bytes | None:
        """What an allowed (or approved) statement still goes through."""
        refused = self._mask_refusal(msg_type, sql)
        if refused is not None:
            return refused
        if self.masking is not None and msg_type != F_FUNCTION_CALL:
            if self.tracker is not None and not _NAMES_QUERIES.isdisjoint(decision.kinds):
                self.tracker.forget_statements()
        if self.catalog is not None and not _DDL.isdisjoint(decision.kinds):
            # later sessions read the catalog again; this one places names it does not
            # hold along its search path (see SessionPolicy.set_catalog), and masking
            # stops trusting names (see ResultMasking.ddl_seen)
            self.listener.catalogs.invalidate_target(self.target.name)
            if self.masking is not None:
                self.masking.ddl_seen()
        return None


def _is_loopback(peer: object) -> bool:
    if not isinstance(peer, tuple):
        return True  # a unix socket
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False



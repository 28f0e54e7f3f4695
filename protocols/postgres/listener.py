"""The PostgreSQL listener: accepts clients, owns what its sessions share
(targets, TLS contexts, the cancel-key map, the SCRAM key cache).

Lifecycle: ``reload`` (SIGHUP) swaps targets and the policy engine for new sessions, open
ones stay; ``drain`` (SIGTERM) stops accepting, lets open sessions finish for a grace period
and closes the rest with ``FATAL 57P01`` (admin_shutdown), which clients and poolers know as
"the server is going away, reconnect".
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from gateway.config import parse_listen
from gateway.secrets import target_password
from gateway.tls import upstream_context
from protocols.postgres import codec
from protocols.postgres.catalog import CatalogCache
from protocols.postgres.resultmask import SharedLineage
from protocols.postgres.session import PostgresSession
from protocols.postgres.upstream_auth import SaltedPasswordCache

if TYPE_CHECKING:
    from gateway.broker import Broker
    from gateway.metrics import Metrics
    from gateway.config import Config, Target
    from gateway.identity import Authenticator
    from policy.engine import PolicyEngine
    from protocols.postgres.relay import BackendStream, FrontendStream
    from recorder.writer import Recorder

log = logging.getLogger("wiregate.postgres")

SHUTDOWN_SQLSTATE = "57P01"  # admin_shutdown
SHUTDOWN_MESSAGE = "wiregate: the gateway is shutting down"
SHUTDOWN_REASON = "the gateway shut down"
# a session closed by drain() in the middle of a reply (a result being streamed) gets this
# long to reach the end of a message, where the FATAL can be written; past it the connection
# is closed without one rather than cut a message in two
BOUNDARY_WAIT = 2.0
_BOUNDARY_POLL = 0.005


class PostgresListener:
    def __init__(self, cfg: "Config", authenticator: "Authenticator", policy: "PolicyEngine",
                 server_ssl: ssl.SSLContext, recorder: "Recorder | None" = None) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.server_ssl = server_ssl
        self.targets: dict[str, Target] = {t.name: t for t in cfg.targets if t.protocol == "postgres"}
        self.cancel_map: dict[tuple[int, bytes], tuple[Target, tuple[int, bytes]]] = {}
        # the session each cancel key belongs to: a cancel request withdraws a held statement
        self.cancel_sessions: dict[tuple[int, bytes], PostgresSession] = {}
        self.salted_cache = SaltedPasswordCache()
        self.catalogs = CatalogCache()
        self.lineage = SharedLineage()
        # None when recording is off
        self.recorder = recorder
        # set by the server: review decisions wait in the broker (None: they are refused), the
        # admin API's address named in held statements' notices, and the metrics
        self.broker: Broker | None = None
        self.admin_url: str | None = None
        self.metrics: Metrics | None = None
        self.on_record_failure = cfg.recording.on_record_failure
        self.sessions: set[PostgresSession] = set()
        # per target name: the Target the context was made for, and the context
        self._upstream_ssl: dict[str, tuple[Target, ssl.SSLContext | None]] = {}
        self._server: asyncio.base_events.Server | None = None
        # set by session_closed when the last session ends, while drain() waits for that
        self._idle: asyncio.Event | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, host, port, reuse_address=True, backlog=1024)

    @property
    def sockets(self) -> list:
        return list(self._server.sockets) if self._server else []

    def _new_session(self) -> asyncio.Protocol:
        session = PostgresSession(self)
        self.sessions.add(session)
        return session.client_protocol()  # its connection_made starts the session

    def session_closed(self, session: PostgresSession) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._idle is not None:
            self._idle.set()

    @property
    def open_sessions(self) -> int:
        """Client connections, those still starting up included."""
        return len(self.sessions)

    def reload(self, cfg: "Config", policy: "PolicyEngine", authenticator: "Authenticator | None" = None) -> None:
        """New targets and rules for new sessions; open sessions keep their target and connection
        (their policy follows the new engine through ``PolicyEngine.replace_with``, which the
        server calls). A target no longer configured refuses new sessions like an unknown one.
        ``authenticator``: a new one when the identity settings changed."""
        targets = {t.name: t for t in cfg.targets if t.protocol == "postgres"}
        for name, old in self.targets.items():
            if targets.get(name) != old:
                # another server, database or role: what was read of the old one does not apply
                self.catalogs.invalidate_target(name)
        self.targets = targets
        self.policy = policy
        if authenticator is not None:
            self.authenticator = authenticator
        self.on_record_failure = cfg.recording.on_record_failure
        # a CA file may have been replaced under an unchanged config: contexts are made again
        self._upstream_ssl.clear()

    def target_password(self, target: "Target") -> str | None:
        secret = target_password(target)
        return secret.reveal() if secret is not None else None

    def upstream_ssl(self, target: "Target") -> ssl.SSLContext | None:
        entry = self._upstream_ssl.get(target.name)
        # a session that picked its target before a reload asks with the old Target
        if entry is None or entry[0] is not target:
            entry = self._upstream_ssl[target.name] = (target, upstream_context(target.tls, target.tls_ca_file))
        return entry[1]

    async def forward_cancel(self, pid: int, key: bytes) -> None:
        """Send the upstream's own cancel key for the session the client's key names.
        Unknown keys are ignored silently, as PostgreSQL does."""
        session = self.cancel_sessions.get((pid, key))
        if session is not None and session.cancel_hold():
            return  # the statement was waiting for an approval, not running on the target
        entry = self.cancel_map.get((pid, key))
        if entry is None:
            log.info("cancel request with an unknown key ignored")
            return
        target, (up_pid, up_key) = entry
        host, port = parse_listen(target.address or "")
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(host, port)
                ctx = self.upstream_ssl(target)
                if ctx is not None:
                    writer.write(codec.ssl_request())
                    answer = await reader.readexactly(1)
                    if answer == b"S":
                        await writer.start_tls(ctx, server_hostname=host if target.tls == "verify-full" else None)
                writer.write(codec.cancel_request(up_pid, up_key))
                await writer.drain()
                await reader.read()  # the server closes the connection when done
                writer.close()
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            log.warning("cancel request to target %s failed: %s", target.name, e)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def drain(self, grace: float) -> None:
        """Stop accepting at once, wait up to ``grace`` seconds for open sessions to end, then
        close the rest with ``FATAL 57P01`` (see ``_shut_down``)."""
        if self._server is not None:
            self._server.close()
        if self.sessions:
            log.info("postgres: not accepting connections; waiting up to %gs for %d open sessions", grace,
                     len(self.sessions))
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(max(grace, 0.0)):
                    await self._idle.wait()
            except TimeoutError:
                pass
            finally:
                self._idle = None
        left = list(self.sessions)
        if left:
            log.info("postgres: closing %d sessions still open after the grace period", len(left))
            await asyncio.gather(*(self._shut_down(session) for session in left))
        if self._server is not None:
            await self._server.wait_closed()

    async def _shut_down(self, session: PostgresSession) -> None:
        """End one session cleanly: no statement after this starts, the client is told why
        (FATAL 57P01, written only between two of the target's messages) and the target gets a
        Terminate (only between two of the client's messages)."""
        client, up = session.client, session.upstream
        if client.relay is None or up is None or up.relay is None:
            # still starting up: once authenticated the client waits for the gateway's next
            # message, which may be an error; before that it may be inside the TLS handshake
            if session.identity is not None:
                client.write(codec.fatal(SHUTDOWN_SQLSTATE, SHUTDOWN_MESSAGE))
            session.close(SHUTDOWN_REASON)
            return
        if client.transport is not None and not client.transport.is_closing():
            client.transport.pause_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUNDARY_WAIT
        while not up.relay.at_boundary and session in self.sessions and loop.time() < deadline:
            await asyncio.sleep(_BOUNDARY_POLL)
        if session not in self.sessions:
            return  # ended meanwhile
        if up.relay.at_boundary:
            client.write(codec.fatal(SHUTDOWN_SQLSTATE, SHUTDOWN_MESSAGE))
        else:
            log.info("session %s: closed in the middle of a reply after %gs", session.client_addr, BOUNDARY_WAIT)
        if session.held is None and client.relay.at_boundary:
            up.write(codec.TERMINATE)
        session.close(SHUTDOWN_REASON)

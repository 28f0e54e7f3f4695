"""The PostgreSQL listener: accepts clients, owns what its sessions share
(targets, TLS contexts, the cancel-key map, the SCRAM key cache)."""

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
    from gateway.config import Config, Target
    from gateway.identity import Authenticator
    from policy.engine import PolicyEngine
    from recorder.writer import Recorder

log = logging.getLogger("wiregate.postgres")


class PostgresListener:
    def __init__(self, cfg: "Config", authenticator: "Authenticator", policy: "PolicyEngine",
                 server_ssl: ssl.SSLContext, recorder: "Recorder | None" = None) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.server_ssl = server_ssl
        self.targets: dict[str, Target] = {t.name: t for t in cfg.targets if t.protocol == "postgres"}
        self.cancel_map: dict[tuple[int, bytes], tuple[Target, tuple[int, bytes]]] = {}
        self.salted_cache = SaltedPasswordCache()
        self.catalogs = CatalogCache()
        self.lineage = SharedLineage()
        # None when recording is off
        self.recorder = recorder
        self.on_record_failure = cfg.recording.on_record_failure
        self.sessions: set[PostgresSession] = set()
        self._upstream_ssl: dict[str, ssl.SSLContext | None] = {}
        self._server: asyncio.base_events.Server | None = None

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

    def target_password(self, target: "Target") -> str | None:
        secret = target_password(target)
        return secret.reveal() if secret is not None else None

    def upstream_ssl(self, target: "Target") -> ssl.SSLContext | None:
        if target.name not in self._upstream_ssl:
            self._upstream_ssl[target.name] = upstream_context(target.tls, target.tls_ca_file)
        return self._upstream_ssl[target.name]

    async def forward_cancel(self, pid: int, key: bytes) -> None:
        """Send the upstream's own cancel key for the session the client's key names.
        Unknown keys are ignored silently, as PostgreSQL does."""
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

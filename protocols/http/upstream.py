"""Connections to one HTTP target, kept alive and reused (asyncio glue around ``codec``).

A connection goes back to the pool only after a response that ended cleanly with keep-alive;
it is dropped when it has been idle longer than ``IDLE_S`` (targets close idle connections on
their own clocks: uvicorn after 5 s, aiohttp after 75 s) or when the target closed it meanwhile.
A request sent on a reused connection that the target closed before answering is retried once on
a new connection by the caller (``Upstream.fresh``), if its body can be sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

from protocols.http.codec import ResponseParser

__all__ = ["Upstream", "UpstreamConn", "UpstreamError"]

IDLE_S = 4.0
MAX_IDLE = 64
READ_SIZE = 256 * 1024


class UpstreamError(Exception):
    """The target could not be reached or answered badly; ``status`` is what the caller gets (502/504)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class UpstreamConn:
    __slots__ = ("reader", "writer", "parser", "events", "reused", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.parser = ResponseParser()
        # parsed response events not handled yet
        self.events: deque = deque()
        self.reused = False
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    @property
    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader._buffer)  # noqa: SLF001


class Upstream:
    """Where one target lives (its URL) and its idle connections."""

    def __init__(self, name: str, url: str, *, connect_timeout: float, tls_ca_file: str | None = None):
        parts = urlsplit(url)
        self.name = name
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.secure else 80)
        default_port = parts.port is None or parts.port == (443 if self.secure else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        # what the target is told it is called (Host), and the prefix its own absolute URLs carry
        self.authority = host if default_port else f"{host}:{self.port}"
        self.origin = f"{parts.scheme}://{self.authority}"
        self.base_path = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.ssl: ssl.SSLContext | None = None
        if self.secure:
            self.ssl = ssl.create_default_context(cafile=tls_ca_file)
        self._idle: deque[UpstreamConn] = deque()
        # told of every failed connection attempt (the metrics' upstream connect errors)
        self.on_connect_error: Callable[[], None] | None = None

    async def get(self) -> UpstreamConn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_S and conn.usable:
                conn.reused = True
                return conn
            conn.close()
        return await self.fresh()

    async def fresh(self) -> UpstreamConn:
        try:
            return await self._connect()
        except UpstreamError:
            if self.on_connect_error is not None:
                self.on_connect_error()
            raise

    async def _connect(self) -> UpstreamConn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=READ_SIZE,
                                        server_hostname=self.host if self.ssl else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(504, f"cannot reach target \"{self.name}\": no connection within "
                                     f"{self.connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            raise UpstreamError(502, f"cannot reach target \"{self.name}\": TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamError(502, f"cannot reach target \"{self.name}\": {exc.strerror or exc}") from None
        return UpstreamConn(reader, writer)

    def put(self, conn: UpstreamConn) -> None:
        """Give back a connection whose last response ended cleanly and may be reused."""
        if len(self._idle) >= MAX_IDLE or not conn.usable:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

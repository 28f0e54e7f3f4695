"""The shared store: approval requests, `approve --for` grants, the sessions index and the dev token key.

Two implementations behind one API (``Store``):

* ``SqliteStore`` (the default, one instance): tables ``approvals`` and ``grants`` in
  ``state_dir/wiregate.db``, the file the recorder's session index (recorder/index.py) lives in.
  Both keep their schema version in the shared ``meta`` table under their own key; this store
  never writes the recorder's tables and reads sessions through a read-only ``Index``. The dev
  token key stays the file ``state_dir/keys/dev_token_ed25519.pem``. "Publish" only reaches
  this process's subscribers: there is no other instance.
* ``PostgresStore`` (``[gateway] store = "postgresql://..."``): every instance naming the URL
  shares approvals, grants, a mirror of each instance's sessions index and one dev token key, so
  they act as one. A decision made on one instance reaches the instance holding the command at
  once through LISTEN/NOTIFY on the channel ``wiregate_approvals``.

Schema changes bump ``SCHEMA_VERSION`` (the ``meta`` key ``gateway.store``) and add a step to the
migrations; a store written by a newer wiregate is refused, not guessed at.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import psycopg
import psycopg.conninfo
from cryptography.hazmat.primitives import serialization

from gateway.approval import FINAL, ApprovalRecord, Grant
from gateway.config import Config
from gateway.errors import WiregateError
from gateway.identity import dev_key_path
from gateway.keys import ensure_private_dir, load_or_create_ed25519
from recorder.events import Seal
from recorder.index import DB_NAME, Index, SessionRow

__all__ = [
    "NOTIFY_CHANNEL", "SCHEMA_VERSION", "PostgresStore", "SqliteStore", "Store", "dev_signing_key_pem_for",
    "open_store",
]

log = logging.getLogger("wiregate.store")

SCHEMA_VERSION = 1
SCHEMA_KEY = "gateway.store"
NOTIFY_CHANNEL = "wiregate_approvals"
# pg_advisory_xact_lock key serialising schema changes between instances: "wiregate" in ASCII
MIGRATION_LOCK_KEY = 0x7769726567617465
DEV_KEY_NAME = "dev_token_ed25519"
CONNECT_TIMEOUT_S = 10
# the recorder's writer thread waits on the mirror: a store that is down must not stall it for long
MIRROR_CONNECT_TIMEOUT_S = 3
MIRROR_RETRY_MIN_S = 5.0
MIRROR_RETRY_MAX_S = 60.0
LISTEN_RETRY_MIN_S = 0.2
LISTEN_RETRY_MAX_S = 10.0
# an idle LISTEN connection is checked this often, so a silently dead one is noticed
LISTEN_HEARTBEAT_S = 30.0
SQLITE_BUSY_TIMEOUT_MS = 5000

STATUSES: frozenset[str] = frozenset({"pending", *FINAL})

T = TypeVar("T")

# ---------------------------------------------------------------- rows

# One column per ApprovalRecord field, in this order (a test keeps the two in step: a new field
# needs a migration).
APPROVAL_COLUMNS = ("id", "requester", "groups", "target", "protocol", "kind", "command", "fingerprint", "rule",
                    "approvers", "session_id", "instance", "created", "expires", "status", "decided_by",
                    "decided_at", "reason", "grant_until")
_JSON_COLUMNS = frozenset({"groups", "approvers"})
_APPROVAL_SELECT = f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM approvals"
_APPROVAL_RETURNING = f"RETURNING {', '.join(APPROVAL_COLUMNS)}"

SESSION_COLUMNS = ("id", "identity", "groups", "target", "protocol", "client", "tls", "instance", "auth", "started",
                   "ended", "end_reason", "path", "frames", "commands", "denied", "sealed", "seal")

# Both engines accept these types (SQLite maps DOUBLE PRECISION to REAL).
_APPROVALS_DDL = (
    """CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        groups TEXT NOT NULL,          -- JSON array
        target TEXT NOT NULL,
        protocol TEXT NOT NULL,
        kind TEXT NOT NULL,
        command TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        rule TEXT NOT NULL,
        approvers TEXT NOT NULL,       -- JSON array
        session_id TEXT,
        instance TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at DOUBLE PRECISION,
        reason TEXT,
        grant_until DOUBLE PRECISION
    )""",
    "CREATE INDEX approvals_created ON approvals (created)",
    "CREATE INDEX approvals_status ON approvals (status, expires)",
    "CREATE INDEX approvals_instance ON approvals (instance, status)",
    """CREATE TABLE grants (
        approval_id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        target TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX grants_lookup ON grants (identity, target, fingerprint, until)",
)

_PG_SESSIONS_DDL = (
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        groups TEXT NOT NULL,          -- JSON array
        target TEXT NOT NULL,
        protocol TEXT NOT NULL,
        client TEXT NOT NULL,
        tls BOOLEAN NOT NULL,
        instance TEXT NOT NULL,
        auth TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        ended DOUBLE PRECISION,
        end_reason TEXT,
        path TEXT NOT NULL,            -- on the instance that recorded it
        frames BIGINT NOT NULL,
        commands BIGINT NOT NULL,
        denied BIGINT NOT NULL,
        sealed BOOLEAN NOT NULL,
        seal BYTEA                     -- msgpack of recorder.events.Seal
    )""",
    "CREATE INDEX sessions_started ON sessions (started)",
    "CREATE INDEX sessions_identity ON sessions (identity, started)",
    "CREATE INDEX sessions_target ON sessions (target, started)",
    "CREATE INDEX sessions_protocol ON sessions (protocol, started)",
    "CREATE TABLE dev_keys (name TEXT PRIMARY KEY, pem BYTEA NOT NULL)",
)

_META_DDL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

# version -> statements taking the schema from version - 1 to it
_SQLITE_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _APPROVALS_DDL}
_PG_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _APPROVALS_DDL + _PG_SESSIONS_DDL}

_SEAL_ENCODER = msgspec.msgpack.Encoder()
_SEAL_DECODER = msgspec.msgpack.Decoder(Seal)


def _approval_params(rec: ApprovalRecord) -> tuple[Any, ...]:
    return tuple(json.dumps(list(getattr(rec, c))) if c in _JSON_COLUMNS else getattr(rec, c)
                 for c in APPROVAL_COLUMNS)


def _approval(row: Sequence[Any]) -> ApprovalRecord:
    """A row back into a record, validated: a row this code cannot read is an error, never a guess."""
    fields = dict(zip(APPROVAL_COLUMNS, row))
    try:
        for c in _JSON_COLUMNS:
            fields[c] = json.loads(fields[c])
        return msgspec.convert(fields, ApprovalRecord)
    except (ValueError, TypeError, msgspec.ValidationError) as e:
        raise WiregateError(f"the store holds an unreadable approval request {fields.get('id')!r}: {e}") from None


def _session_params(r: SessionRow) -> tuple[Any, ...]:
    return (r.id, r.identity, json.dumps(list(r.groups)), r.target, r.protocol, r.client, bool(r.tls), r.instance,
            r.auth, r.started, r.ended, r.end_reason, r.path, r.frames, r.commands, r.denied, bool(r.sealed),
            _SEAL_ENCODER.encode(r.seal) if r.seal is not None else None)


def _session(row: Sequence[Any]) -> SessionRow:
    fields = dict(zip(SESSION_COLUMNS, row))
    try:
        fields["groups"] = tuple(json.loads(fields["groups"]))
        seal = fields["seal"]
        fields["seal"] = _SEAL_DECODER.decode(bytes(seal)) if seal is not None else None
        return msgspec.convert(fields, SessionRow)
    except (ValueError, TypeError, msgspec.ValidationError, msgspec.DecodeError) as e:
        raise WiregateError(f"the store holds an unreadable session row {fields.get('id')!r}: {e}") from None


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _check_decision(status: str, grant_until: float | None) -> None:
    if status not in FINAL:
        raise ValueError(f"a decision must be one of {', '.join(sorted(FINAL))}, not {status!r}")
    if grant_until is not None and status != "approved":
        raise ValueError("grant_until goes only with status 'approved'")


def _status_filter(status: str | None) -> str | None:
    if status is None or status == "all":
        return None
    if status not in STATUSES:
        raise ValueError(f"unknown approval status {status!r} (one of {', '.join(sorted(STATUSES))} or 'all')")
    return status


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return limit


def _pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ---------------------------------------------------------------- the API

class Store(abc.ABC):
    """Where approvals, grants, the sessions index and the dev token key live. Async methods run on
    the gateway's event loop; ``session_mirror`` and ``dev_signing_key_pem`` are synchronous."""

    kind: str

    def __init__(self, cfg: Config, *, instance: str) -> None:
        self.cfg = cfg
        self.instance = instance
        self._subscribers: list[Callable[[str], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; create or migrate the schema. ``WiregateError`` (one line) when that fails."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create_approval(self, rec: ApprovalRecord) -> None: ...

    @abc.abstractmethod
    async def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    @abc.abstractmethod
    async def find_approvals(self, prefix: str) -> list[ApprovalRecord]:
        """Requests whose id starts with ``prefix`` (case-sensitive), newest first; none for ""."""

    @abc.abstractmethod
    async def list_approvals(self, *, status: str | None = None, limit: int = 200) -> list[ApprovalRecord]:
        """Newest first; ``status`` None (or "all") for every status."""

    @abc.abstractmethod
    async def decide_approval(self, approval_id: str, *, status: str, decided_by: str | None, decided_at: float,
                              reason: str | None = None, grant_until: float | None = None) -> ApprovalRecord | None:
        """End a pending request, atomically: the updated record, or None when it is unknown or no
        longer pending (someone else decided first). With ``grant_until`` (status "approved" only)
        the grant is stored in the same transaction."""

    @abc.abstractmethod
    async def active_grant(self, identity: str, target: str, fingerprint: str, now: float) -> Grant | None:
        """A grant covering ``now`` (``until`` > ``now``), the longest-running one if several."""

    @abc.abstractmethod
    async def expire_pending(self, now: float) -> list[ApprovalRecord]:
        """Pending requests with ``expires`` <= ``now`` become "expired" (decided_at = now); returns them.
        Grants that ended are deleted on the way (the approval record keeps ``grant_until``)."""

    @abc.abstractmethod
    async def withdraw_instance(self, instance: str, now: float) -> list[ApprovalRecord]:
        """That instance's pending requests become "withdrawn" (decided_at = now); returns them."""

    @abc.abstractmethod
    async def publish(self, approval_id: str) -> None:
        """Tell every instance's subscribers that ``approval_id`` changed."""

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """``callback(approval_id)`` on the event loop for every publish by any instance; ``"*"`` after
        a lost connection came back (anything may have changed meanwhile)."""
        self._subscribers.append(callback)

    def _fire(self, approval_id: str) -> None:
        # call_soon: a failing subscriber reaches the loop's exception handler, not the publisher
        loop = self._loop or asyncio.get_running_loop()
        for callback in list(self._subscribers):
            loop.call_soon(callback, approval_id)

    @abc.abstractmethod
    def session_mirror(self) -> Callable[[Sequence[SessionRow]], None] | None:
        """A function the recorder's writer thread calls with changed session rows, or None when the
        recorder's own index is the index."""

    @abc.abstractmethod
    async def list_sessions(self, *, identity: str | None = None, target: str | None = None,
                            protocol: str | None = None, limit: int = 100) -> list[SessionRow]:
        """Newest first; filters are exact matches."""

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> SessionRow | None:
        """By exact id, or by a prefix naming exactly one session."""

    @abc.abstractmethod
    def dev_signing_key_pem(self) -> bytes:
        """The dev token Ed25519 private key (PEM, PKCS#8), created on first use. Blocking."""


def open_store(cfg: Config, *, instance: str) -> Store:
    """The store ``cfg`` names (not yet opened: call ``await store.open()``)."""
    if cfg.gateway.store:
        return PostgresStore(cfg, instance=instance)
    return SqliteStore(cfg, instance=instance)


def dev_signing_key_pem_for(cfg: Config) -> bytes:
    """The dev token key of the store ``cfg`` names, without an opened ``Store`` (``wiregate token
    issue``, an ``Authenticator`` built from a config alone). Blocking; for PostgreSQL it opens a
    short-lived connection and creates the schema if no gateway has yet."""
    if not cfg.gateway.store:
        return _file_dev_key_pem(cfg)
    url = cfg.gateway.store
    params = _pg_params(url, "keys", "")
    with _pg_connect_sync(url, params) as conn:
        _pg_migrate(conn, url)
        return _pg_dev_key(conn, url)


def _file_dev_key_pem(cfg: Config) -> bytes:
    return _pem(load_or_create_ed25519(dev_key_path(cfg)))


# ---------------------------------------------------------------- SQLite

class SqliteStore(Store):
    """The embedded store in ``state_dir/wiregate.db``: one connection, used from worker threads one
    call at a time (``asyncio.to_thread`` under a lock), so the event loop never waits on the disk."""

    kind = "sqlite"

    def __init__(self, cfg: Config, *, instance: str) -> None:
        super().__init__(cfg, instance=instance)
        self.state_dir = Path(cfg.gateway.state_dir)
        self.path = self.state_dir / DB_NAME
        self._db: sqlite3.Connection | None = None
        self._index: Index | None = None
        self._lock = threading.Lock()

    # -- plumbing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._db is None:
                raise WiregateError(f"{self.path}: the store is not open")
            try:
                return fn(self._db, *args)
            except sqlite3.Error as e:
                raise WiregateError(f"{self.path}: store error: {e}") from None

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        # IMMEDIATE: take the write lock up front, so a read-then-write inside is atomic
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        db.execute("COMMIT")

    # -- lifecycle

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            ensure_private_dir(self.state_dir)
            try:
                # the recorder's Index creates the file the same way: whoever is first, it is 0600
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except FileExistsError:
                pass
            except OSError as e:
                raise WiregateError(f"{self.path}: cannot create the store: {e.strerror or e}") from None
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as e:
                raise WiregateError(f"{self.path}: cannot open the store: {e}") from None
            try:
                db.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA journal_mode = WAL")
                self._migrate(db)
            except sqlite3.Error as e:
                db.close()
                raise WiregateError(f"{self.path}: cannot open the store: {e}") from None
            except BaseException:
                db.close()
                raise
            self._db = db

    def _version(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_KEY,)).fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(_META_DDL)  # shared with the recorder's index: same definition
        with self._transaction(db):
            version = self._version(db)
            if version > SCHEMA_VERSION:
                raise WiregateError(f"{self.path}: store schema {version} is newer than this wiregate's "
                                    f"({SCHEMA_VERSION}); upgrade wiregate")
            if version == SCHEMA_VERSION:
                return
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _SQLITE_MIGRATIONS[step]:
                    db.execute(statement)
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (SCHEMA_KEY, str(SCHEMA_VERSION)))
        log.info("%s: store schema %d -> %d", self.path, version, SCHEMA_VERSION)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- approvals

    async def create_approval(self, rec: ApprovalRecord) -> None:
        sql = f"INSERT INTO approvals ({', '.join(APPROVAL_COLUMNS)}) VALUES ({', '.join('?' * len(APPROVAL_COLUMNS))})"
        await self._call(lambda db: db.execute(sql, _approval_params(rec)))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        def get(db: sqlite3.Connection) -> ApprovalRecord | None:
            row = db.execute(f"{_APPROVAL_SELECT} WHERE id = ?", (approval_id,)).fetchone()
            return _approval(row) if row else None
        return await self._call(get)

    async def find_approvals(self, prefix: str) -> list[ApprovalRecord]:
        if not prefix:
            return []

        def find(db: sqlite3.Connection) -> list[ApprovalRecord]:
            rows = db.execute(f"{_APPROVAL_SELECT} WHERE id LIKE ? ESCAPE '\\' ORDER BY created DESC, id",
                              (_like_prefix(prefix),)).fetchall()
            return [_approval(r) for r in rows if r[0].startswith(prefix)]  # SQLite's LIKE ignores ASCII case
        return await self._call(find)

    async def list_approvals(self, *, status: str | None = None, limit: int = 200) -> list[ApprovalRecord]:
        wanted, limit = _status_filter(status), _check_limit(limit)

        def list_(db: sqlite3.Connection) -> list[ApprovalRecord]:
            if wanted is None:
                rows = db.execute(f"{_APPROVAL_SELECT} ORDER BY created DESC, id LIMIT ?", (limit,)).fetchall()
            else:
                rows = db.execute(f"{_APPROVAL_SELECT} WHERE status = ? ORDER BY created DESC, id LIMIT ?",
                                  (wanted, limit)).fetchall()
            return [_approval(r) for r in rows]
        return await self._call(list_)

    async def decide_approval(self, approval_id: str, *, status: str, decided_by: str | None, decided_at: float,
                              reason: str | None = None, grant_until: float | None = None) -> ApprovalRecord | None:
        _check_decision(status, grant_until)

        def decide(db: sqlite3.Connection) -> ApprovalRecord | None:
            with self._transaction(db):
                row = db.execute(f"{_APPROVAL_SELECT} WHERE id = ? AND status = 'pending'", (approval_id,)).fetchone()
                if row is None:
                    return None
                db.execute("UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ?, "
                           "grant_until = ? WHERE id = ?",
                           (status, decided_by, decided_at, reason, grant_until, approval_id))
                rec = msgspec.structs.replace(_approval(row), status=status, decided_by=decided_by,
                                              decided_at=decided_at, reason=reason, grant_until=grant_until)
                if grant_until is not None:
                    db.execute("INSERT INTO grants (approval_id, identity, target, fingerprint, until) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (rec.id, rec.requester, rec.target, rec.fingerprint, grant_until))
                return rec
        return await self._call(decide)

    async def active_grant(self, identity: str, target: str, fingerprint: str, now: float) -> Grant | None:
        def grant(db: sqlite3.Connection) -> Grant | None:
            row = db.execute("SELECT identity, target, fingerprint, until, approval_id FROM grants "
                             "WHERE identity = ? AND target = ? AND fingerprint = ? AND until > ? "
                             "ORDER BY until DESC LIMIT 1", (identity, target, fingerprint, now)).fetchone()
            return _grant(row) if row else None
        return await self._call(grant)

    async def expire_pending(self, now: float) -> list[ApprovalRecord]:
        return await self._call(self._end_pending, "expires <= ?", now, now, "expired")

    async def withdraw_instance(self, instance: str, now: float) -> list[ApprovalRecord]:
        return await self._call(self._end_pending, "instance = ?", instance, now, "withdrawn")

    def _end_pending(self, db: sqlite3.Connection, where: str, arg: Any, now: float, status: str) -> list[ApprovalRecord]:
        with self._transaction(db):
            rows = db.execute(f"{_APPROVAL_SELECT} WHERE status = 'pending' AND {where} ORDER BY created, id",
                              (arg,)).fetchall()
            db.execute(f"UPDATE approvals SET status = ?, decided_at = ? WHERE status = 'pending' AND {where}",
                       (status, now, arg))
            if status == "expired":
                db.execute("DELETE FROM grants WHERE until <= ?", (now,))
        return [msgspec.structs.replace(_approval(r), status=status, decided_at=now) for r in rows]

    async def publish(self, approval_id: str) -> None:
        self._fire(approval_id)

    # -- sessions: the recorder's index

    def session_mirror(self) -> None:
        return None

    def _sessions_index(self, db: sqlite3.Connection) -> Index | None:
        """The recorder's index, read-only; None until the recorder created it (nothing recorded yet)."""
        if self._index is None:
            created = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'").fetchone()
            if created is None:
                return None
            self._index = Index(self.state_dir, readonly=True)
        return self._index

    async def list_sessions(self, *, identity: str | None = None, target: str | None = None,
                            protocol: str | None = None, limit: int = 100) -> list[SessionRow]:
        limit = _check_limit(limit)

        def list_(db: sqlite3.Connection) -> list[SessionRow]:
            index = self._sessions_index(db)
            return index.list(identity=identity, target=target, protocol=protocol, limit=limit) if index else []
        return await self._call(list_)

    async def get_session(self, session_id: str) -> SessionRow | None:
        if not session_id:
            return None

        def get(db: sqlite3.Connection) -> SessionRow | None:
            index = self._sessions_index(db)
            if index is None:
                return None
            row = index.get(session_id)
            if row is not None:
                return row
            found = index.find(session_id)
            return found[0] if len(found) == 1 else None
        return await self._call(get)

    def dev_signing_key_pem(self) -> bytes:
        return _file_dev_key_pem(self.cfg)


def _grant(row: Sequence[Any]) -> Grant:
    identity, target, fingerprint, until, approval_id = row
    return Grant(identity=identity, target=target, fingerprint=fingerprint, until=float(until),
                 approval_id=approval_id)


# ---------------------------------------------------------------- PostgreSQL: connections and errors

def _secrets_of(url: str) -> list[str]:
    """Every spelling of the password ``url`` carries, longest first, to scrub from messages."""
    found: set[str] = set()
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        if password:
            found.add(str(password))
    except psycopg.Error:
        pass
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        if ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            found.update((raw, unquote(raw)))
        for value in parse_qs(parts.query).get("password", []):
            found.update((value, unquote(value)))
    except ValueError:
        pass
    return sorted((s for s in found if s), key=len, reverse=True)


def _where(url: str) -> str:
    """``url`` without password and query, for messages."""
    try:
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return f"{parts.scheme}://{user}{at}{hostport}{parts.path}"
    except ValueError:
        return "(an unparsable URL)"


def _one_line(error: BaseException | str, url: str) -> str:
    text = str(error)
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return " ".join(text.split()) or type(error).__name__


def _pg_params(url: str, role: str, instance: str) -> dict[str, Any]:
    """Connection keywords added to ``url`` (what it does not say itself). Checks the URL."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as e:
        raise WiregateError(f"gateway.store: not a usable PostgreSQL URL ({_where(url)}): {_one_line(e, url)}") from None
    params: dict[str, Any] = {}
    if "connect_timeout" not in given:
        params["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in given:
        params["application_name"] = f"wiregate {role} {instance}".strip()[:63]
    return params


def _connect_error(url: str, e: BaseException) -> WiregateError:
    return WiregateError(f"cannot connect to the store {_where(url)}: {_one_line(e, url)}")


def _pg_connect_sync(url: str, params: dict[str, Any]) -> psycopg.Connection[Any]:
    try:
        return psycopg.Connection.connect(url, autocommit=True, **params)
    except (psycopg.Error, OSError) as e:
        raise _connect_error(url, e) from None


def _pg_version(conn: psycopg.Connection[Any]) -> int:
    # pg_class through a query, not to_regclass(): that one answers from the backend's catalog
    # cache, which still says "no such table" after another instance created it while we waited
    exists = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
                          "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE c.relname = 'meta' AND n.nspname = current_schema())").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (SCHEMA_KEY,)).fetchone()
    return int(row[0]) if row else 0


def _pg_migrate(conn: psycopg.Connection[Any], url: str) -> None:
    """Create or migrate the schema; instances starting together serialise on an advisory lock."""
    def newer(version: int) -> WiregateError:
        return WiregateError(f"the store {_where(url)} has schema {version}, newer than this wiregate's "
                             f"({SCHEMA_VERSION}): upgrade wiregate")
    try:
        version = _pg_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise newer(version)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            version = _pg_version(conn)  # another instance may have migrated while we waited
            if version > SCHEMA_VERSION:
                raise newer(version)
            if version == SCHEMA_VERSION:
                return
            conn.execute(_META_DDL)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _PG_MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (SCHEMA_KEY, str(SCHEMA_VERSION)))
    except psycopg.Error as e:
        raise WiregateError(f"cannot create the store schema in {_where(url)}: {_one_line(e, url)}") from None
    log.info("store %s: schema %d -> %d", _where(url), version, SCHEMA_VERSION)


def _pg_dev_key(conn: psycopg.Connection[Any], url: str) -> bytes:
    """The shared dev token key: the first instance to ask stores one, everyone reads that one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        conn.execute("INSERT INTO dev_keys (name, pem) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                     (DEV_KEY_NAME, _pem(Ed25519PrivateKey.generate())))
        row = conn.execute("SELECT pem FROM dev_keys WHERE name = %s", (DEV_KEY_NAME,)).fetchone()
    except psycopg.Error as e:
        raise WiregateError(f"cannot read the dev token key from the store {_where(url)}: {_one_line(e, url)}") from None
    if row is None:  # only if someone deletes it between the two statements
        raise WiregateError(f"the store {_where(url)} lost its dev token key while it was read; try again")
    return bytes(row[0])


# ---------------------------------------------------------------- PostgreSQL: the store

_PG_UPSERT_SESSION = (f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
                      f"VALUES ({', '.join(['%s'] * len(SESSION_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
                      + ", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS[1:]))
_PG_SESSION_SELECT = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"

AsyncConn = psycopg.AsyncConnection[Any]


class PostgresStore(Store):
    """The store shared by every instance naming one PostgreSQL URL.

    One connection runs the queries, one call at a time (an ``asyncio.Lock``). When it breaks, the
    next call reconnects; the call that saw it break is retried on the new connection only if it
    is a read (or a NOTIFY): a write whose connection broke may or may not have committed, so it
    fails with a ``WiregateError`` instead of running twice. A second connection only LISTENs;
    it reconnects with backoff and then calls the subscribers with ``"*"``.
    """

    kind = "postgresql"

    def __init__(self, cfg: Config, *, instance: str) -> None:
        super().__init__(cfg, instance=instance)
        if not cfg.gateway.store:
            raise WiregateError("gateway.store: no PostgreSQL URL configured")
        self.url: str = cfg.gateway.store
        self.where = _where(self.url)
        self._conn: AsyncConn | None = None
        self._lock = asyncio.Lock()
        self._listen_task: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        # the recorder's writer thread only
        self._mirror_conn: psycopg.Connection[Any] | None = None
        self._mirror_lock = threading.Lock()
        self._mirror_failing = False
        self._mirror_retry_at = 0.0
        self._mirror_backoff = MIRROR_RETRY_MIN_S

    # -- lifecycle

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._closed = False
        params = _pg_params(self.url, "migrate", self.instance)

        def migrate() -> None:
            with _pg_connect_sync(self.url, params) as conn:
                _pg_migrate(conn, self.url)
        await asyncio.to_thread(migrate)
        self._conn = await self._connect("query")
        # LISTEN before open() returns: a publish right after it must not be missed
        try:
            listen = await self._connect_listener()
        except BaseException:
            await self._conn.close()
            self._conn = None
            raise
        self._listen_task = self._loop.create_task(self._listen(listen), name="wiregate-store-listen")
        self._opened = True

    async def _connect(self, role: str) -> AsyncConn:
        try:
            return await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                         **_pg_params(self.url, role, self.instance))
        except (psycopg.Error, OSError) as e:
            raise _connect_error(self.url, e) from None

    async def _connect_listener(self) -> AsyncConn:
        conn = await self._connect("listen")
        try:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as e:
            await conn.close()
            raise _connect_error(self.url, e) from None
        return conn

    async def close(self) -> None:
        self._closed = True
        self._opened = False
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
        await asyncio.to_thread(self._close_mirror)

    def _close_mirror(self) -> None:
        with self._mirror_lock:
            conn, self._mirror_conn = self._mirror_conn, None
            if conn is not None:
                conn.close()

    # -- the query connection

    async def _run(self, fn: Callable[[AsyncConn], Awaitable[T]], *, retry: bool) -> T:
        """``fn(conn)`` on the query connection; see the class docstring for what a broken one does."""
        async with self._lock:
            for attempt in (1, 2):
                if not self._opened:
                    raise WiregateError(f"the store {self.where} is not open")
                if self._conn is None or self._conn.closed:
                    self._conn = await self._connect("query")
                conn = self._conn
                try:
                    return await fn(conn)
                except psycopg.OperationalError as e:
                    if not conn.broken:
                        raise WiregateError(f"store {self.where}: {_one_line(e, self.url)}") from None
                    self._conn = None
                    await conn.close()
                    if not retry or attempt == 2:
                        raise WiregateError(f"store {self.where}: the connection was lost "
                                            f"({_one_line(e, self.url)})") from None
                    log.warning("store %s: the connection was lost; reconnecting", self.where)
                except psycopg.Error as e:
                    raise WiregateError(f"store {self.where}: {_one_line(e, self.url)}") from None
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, params: Sequence[Any] = (), *, retry: bool = True) -> list[tuple[Any, ...]]:
        async def fetch(conn: AsyncConn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description is not None else []
        return await self._run(fetch, retry=retry)

    # -- approvals

    async def create_approval(self, rec: ApprovalRecord) -> None:
        await self._fetch(f"INSERT INTO approvals ({', '.join(APPROVAL_COLUMNS)}) "
                          f"VALUES ({', '.join(['%s'] * len(APPROVAL_COLUMNS))})", _approval_params(rec), retry=False)

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        rows = await self._fetch(f"{_APPROVAL_SELECT} WHERE id = %s", (approval_id,))
        return _approval(rows[0]) if rows else None

    async def find_approvals(self, prefix: str) -> list[ApprovalRecord]:
        if not prefix:
            return []
        rows = await self._fetch(f"{_APPROVAL_SELECT} WHERE id LIKE %s ESCAPE '\\' ORDER BY created DESC, id",
                                 (_like_prefix(prefix),))
        return [_approval(r) for r in rows if r[0].startswith(prefix)]

    async def list_approvals(self, *, status: str | None = None, limit: int = 200) -> list[ApprovalRecord]:
        wanted, limit = _status_filter(status), _check_limit(limit)
        if wanted is None:
            rows = await self._fetch(f"{_APPROVAL_SELECT} ORDER BY created DESC, id LIMIT %s", (limit,))
        else:
            rows = await self._fetch(f"{_APPROVAL_SELECT} WHERE status = %s ORDER BY created DESC, id LIMIT %s",
                                     (wanted, limit))
        return [_approval(r) for r in rows]

    async def decide_approval(self, approval_id: str, *, status: str, decided_by: str | None, decided_at: float,
                              reason: str | None = None, grant_until: float | None = None) -> ApprovalRecord | None:
        _check_decision(status, grant_until)

        async def decide(conn: AsyncConn) -> ApprovalRecord | None:
            async with conn.transaction():
                cur = await conn.execute(
                    "UPDATE approvals SET status = %s, decided_by = %s, decided_at = %s, reason = %s, grant_until = %s "
                    f"WHERE id = %s AND status = 'pending' {_APPROVAL_RETURNING}",
                    (status, decided_by, decided_at, reason, grant_until, approval_id))
                row = await cur.fetchone()
                if row is None:
                    return None
                rec = _approval(row)
                if grant_until is not None:
                    await conn.execute("INSERT INTO grants (approval_id, identity, target, fingerprint, until) "
                                       "VALUES (%s, %s, %s, %s, %s)",
                                       (rec.id, rec.requester, rec.target, rec.fingerprint, grant_until))
                return rec
        return await self._run(decide, retry=False)

    async def active_grant(self, identity: str, target: str, fingerprint: str, now: float) -> Grant | None:
        rows = await self._fetch("SELECT identity, target, fingerprint, until, approval_id FROM grants "
                                 "WHERE identity = %s AND target = %s AND fingerprint = %s AND until > %s "
                                 "ORDER BY until DESC LIMIT 1", (identity, target, fingerprint, now))
        return _grant(rows[0]) if rows else None

    async def expire_pending(self, now: float) -> list[ApprovalRecord]:
        async def expire(conn: AsyncConn) -> list[ApprovalRecord]:
            async with conn.transaction():
                cur = await conn.execute("UPDATE approvals SET status = 'expired', decided_at = %s "
                                         f"WHERE status = 'pending' AND expires <= %s {_APPROVAL_RETURNING}",
                                         (now, now))
                rows = await cur.fetchall()
                await conn.execute("DELETE FROM grants WHERE until <= %s", (now,))
            return sorted((_approval(r) for r in rows), key=lambda r: (r.created, r.id))
        return await self._run(expire, retry=False)

    async def withdraw_instance(self, instance: str, now: float) -> list[ApprovalRecord]:
        rows = await self._fetch("UPDATE approvals SET status = 'withdrawn', decided_at = %s "
                                 f"WHERE status = 'pending' AND instance = %s {_APPROVAL_RETURNING}",
                                 (now, instance), retry=False)
        return sorted((_approval(r) for r in rows), key=lambda r: (r.created, r.id))

    async def publish(self, approval_id: str) -> None:
        # a repeated notification is harmless (subscribers re-read), so a lost connection is retried
        await self._fetch("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, approval_id))

    # -- the LISTEN connection

    async def _listen(self, conn: AsyncConn | None) -> None:
        delay = LISTEN_RETRY_MIN_S
        failing = False
        try:
            while not self._closed:
                if conn is None:
                    try:
                        conn = await self._connect_listener()
                    except WiregateError as e:
                        if not failing:
                            log.warning("store %s: cannot listen for approval decisions (%s); retrying", self.where, e)
                            failing = True
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, LISTEN_RETRY_MAX_S)
                        continue
                    log.info("store %s: listening for approval decisions again", self.where)
                    failing, delay = False, LISTEN_RETRY_MIN_S
                    self._fire("*")  # what was published while we were away is lost: re-read everything
                try:
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_HEARTBEAT_S):
                            if note.channel == NOTIFY_CHANNEL:
                                self._fire(note.payload)
                        await conn.execute("SELECT 1")  # a dead peer shows here, not in a silent wait
                except (psycopg.Error, OSError) as e:
                    if not self._closed:
                        log.warning("store %s: lost the LISTEN connection (%s); reconnecting",
                                    self.where, _one_line(e, self.url))
                        failing = True
                    old, conn = conn, None
                    await old.close()
        finally:
            if conn is not None:
                await conn.close()

    # -- sessions

    def session_mirror(self) -> Callable[[Sequence[SessionRow]], None]:
        return self._mirror

    def _mirror(self, rows: Sequence[SessionRow]) -> None:
        """Upsert ``rows`` (the recorder's writer thread). Never raises: on failure the batch is
        dropped (the local index keeps it) and the next tries come after a growing pause, so a store
        that is down costs the writer at most a connect timeout now and then."""
        if not rows or self._closed:
            return
        with self._mirror_lock:
            now = time.monotonic()
            if self._mirror_failing and now < self._mirror_retry_at:
                return
            try:
                if self._mirror_conn is None or self._mirror_conn.closed:
                    params = _pg_params(self.url, "recorder", self.instance)
                    params["connect_timeout"] = MIRROR_CONNECT_TIMEOUT_S
                    self._mirror_conn = _pg_connect_sync(self.url, params)
                conn = self._mirror_conn
                with conn.transaction():
                    with conn.cursor() as cur:
                        cur.executemany(_PG_UPSERT_SESSION, [_session_params(r) for r in rows])
            except Exception as e:  # anything: an exception here would stop the recorder
                if self._mirror_conn is not None and self._mirror_conn.broken:
                    self._mirror_conn.close()
                    self._mirror_conn = None
                if not self._mirror_failing:
                    log.warning("store %s: cannot mirror the sessions index (%s); the local index still has "
                                "the sessions", self.where, _one_line(e, self.url))
                    self._mirror_backoff = MIRROR_RETRY_MIN_S
                else:
                    self._mirror_backoff = min(self._mirror_backoff * 2, MIRROR_RETRY_MAX_S)
                self._mirror_failing = True
                self._mirror_retry_at = now + self._mirror_backoff
                return
            if self._mirror_failing:
                log.warning("store %s: mirroring the sessions index again", self.where)
                self._mirror_failing = False

    async def list_sessions(self, *, identity: str | None = None, target: str | None = None,
                            protocol: str | None = None, limit: int = 100) -> list[SessionRow]:
        limit = _check_limit(limit)
        where, args = [], []
        for column, value in (("identity", identity), ("target", target), ("protocol", protocol)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        sql = _PG_SESSION_SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY started DESC, id LIMIT %s"
        rows = await self._fetch(sql, (*args, limit))
        return [_session(r) for r in rows]

    async def get_session(self, session_id: str) -> SessionRow | None:
        if not session_id:
            return None
        rows = await self._fetch(f"{_PG_SESSION_SELECT} WHERE id = %s", (session_id,))
        if not rows:
            rows = await self._fetch(f"{_PG_SESSION_SELECT} WHERE id LIKE %s ESCAPE '\\' LIMIT 2",
                                     (_like_prefix(session_id),))
        return _session(rows[0]) if len(rows) == 1 else None

    def dev_signing_key_pem(self) -> bytes:
        with _pg_connect_sync(self.url, _pg_params(self.url, "keys", self.instance)) as conn:
            return _pg_dev_key(conn, self.url)

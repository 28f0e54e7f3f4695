"""The session index: one row per recorded session in ``state_dir/wiregate.db`` (SQLite).

The writer thread is the only writer (``Index(state_dir)``); the CLI and the admin API read it
(``Index(state_dir, readonly=True)``), also while the gateway runs (WAL mode: readers never wait
for the writer). The index is derived data with one exception: it keeps a copy of each session's
seal, so ``verify`` can tell a sealed file that was cut from one a crash left unsealed.

Schema changes bump ``SCHEMA_VERSION`` (the ``meta`` table, key ``recorder.sessions``) and migrate
in ``_migrate``; a database written by a newer wiregate is refused, not guessed at.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from gateway.errors import WiregateError
from recorder.events import Seal

DB_NAME = "wiregate.db"
SCHEMA_VERSION = 1
_SCHEMA_KEY = "recorder.sessions"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    groups TEXT NOT NULL,          -- JSON array
    target TEXT NOT NULL,
    protocol TEXT NOT NULL,
    client TEXT NOT NULL,
    tls INTEGER NOT NULL,
    instance TEXT NOT NULL,
    auth TEXT NOT NULL,
    started REAL NOT NULL,         -- UNIX seconds
    ended REAL,                    -- NULL while open (or after a crash)
    end_reason TEXT,
    path TEXT NOT NULL,            -- relative to the state dir
    frames INTEGER NOT NULL,
    commands INTEGER NOT NULL,
    denied INTEGER NOT NULL,
    sealed INTEGER NOT NULL,
    seal BLOB                      -- msgpack of recorder.events.Seal
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started);
CREATE INDEX IF NOT EXISTS sessions_identity ON sessions (identity, started);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions (target, started);
CREATE INDEX IF NOT EXISTS sessions_protocol ON sessions (protocol, started);
"""

_COLUMNS = ("id", "identity", "groups", "target", "protocol", "client", "tls", "instance", "auth", "started",
            "ended", "end_reason", "path", "frames", "commands", "denied", "sealed", "seal")
_UPSERT = (f"INSERT INTO sessions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT (id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:]))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM sessions"

_SEAL_ENCODER = msgspec.msgpack.Encoder()
_SEAL_DECODER = msgspec.msgpack.Decoder(Seal)


class SessionRow(msgspec.Struct, kw_only=True):
    """One session as the index knows it. ``path`` is absolute (stored relative to the state dir,
    so a copied state dir still finds its files)."""

    id: str
    identity: str
    groups: tuple[str, ...]
    target: str
    protocol: str
    client: str
    tls: bool
    instance: str
    auth: str
    started: float
    ended: float | None = None
    end_reason: str | None = None
    path: str
    frames: int = 0
    commands: int = 0
    denied: int = 0
    sealed: bool = False
    seal: Seal | None = None


class Index:
    """``Index(state_dir)`` creates the database on first use (file 0600); ``readonly=True`` opens an
    existing one without ever writing to it (``WiregateError`` when there is none)."""

    def __init__(self, state_dir: Path, *, readonly: bool = False):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.is_file():
                    raise WiregateError(f"{self.path}: no session index (no session was recorded with this state dir)")
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                           check_same_thread=False)
            else:
                self._create_private()
                # one writer thread uses it after the creating thread hands it over (start/stop)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode = WAL")
                # no fsync per commit: a power cut may lose the last commits, the files still hold them
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._check_schema()
        except sqlite3.Error as e:
            raise WiregateError(f"{self.path}: cannot open the session index: {e}") from None

    def _create_private(self) -> None:
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass

    def _check_schema(self) -> None:
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_SCHEMA_KEY,)).fetchone() if has_meta else None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise WiregateError(f"{self.path}: session index schema {version} is newer than this wiregate's "
                                f"({SCHEMA_VERSION}); upgrade wiregate")
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            if version == 0:
                raise WiregateError(f"{self.path}: holds no session index")
            raise WiregateError(f"{self.path}: session index schema {version} needs an upgrade "
                                "(start the gateway once with this version)")
        self._migrate(version)

    def _migrate(self, version: int) -> None:
        with self._transaction():
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (_SCHEMA_KEY, str(SCHEMA_VERSION)))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on the autocommit connection."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------ writing (the writer thread)

    def upsert_session(self, row: SessionRow) -> None:
        self.upsert_sessions((row,))

    def upsert_sessions(self, rows: Iterable[SessionRow]) -> None:
        """Insert or update rows, all in one transaction. Raises ``sqlite3.Error``."""
        values = [self._values(r) for r in rows]
        if values:
            with self._transaction():
                self._db.executemany(_UPSERT, values)

    def _values(self, r: SessionRow) -> tuple:
        path = Path(r.path)
        try:
            path = path.relative_to(self.state_dir)
        except ValueError:
            pass
        return (r.id, r.identity, json.dumps(list(r.groups)), r.target, r.protocol, r.client, int(r.tls),
                r.instance, r.auth, r.started, r.ended, r.end_reason, str(path), r.frames, r.commands, r.denied,
                int(r.sealed), _SEAL_ENCODER.encode(r.seal) if r.seal is not None else None)

    # ------------------------------------------------------------ reading

    def get(self, session_id: str) -> SessionRow | None:
        row = self._db.execute(f"{_SELECT} WHERE id = ?", (session_id,)).fetchone()
        return self._row(row) if row else None

    def find(self, prefix: str) -> list[SessionRow]:
        """Sessions whose id starts with ``prefix`` (ids are long; people type a few characters)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._db.execute(f"{_SELECT} WHERE id LIKE ? ESCAPE '\\' ORDER BY started DESC",
                                (escaped + "%",)).fetchall()
        return [self._row(r) for r in rows if r[0].startswith(prefix)]  # LIKE ignores case for ASCII

    def list(self, identity: str | None = None, target: str | None = None, protocol: str | None = None,
             since: float | None = None, limit: int | None = None) -> list[SessionRow]:
        """Sessions, newest first. Filters are exact matches; ``since`` (UNIX seconds) keeps sessions
        that started at or after it."""
        where, args = [], []
        for column, value in (("identity", identity), ("target", target), ("protocol", protocol)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY started DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self._db.execute(sql, args).fetchall()]

    def _row(self, r: tuple) -> SessionRow:
        (id_, identity, groups, target, protocol, client, tls, instance, auth, started, ended, end_reason, path,
         frames, commands, denied, sealed, seal) = r
        return SessionRow(id=id_, identity=identity, groups=tuple(json.loads(groups)), target=target,
                          protocol=protocol, client=client, tls=bool(tls), instance=instance, auth=auth,
                          started=started, ended=ended, end_reason=end_reason, path=str(self.state_dir / path),
                          frames=frames, commands=commands, denied=denied, sealed=bool(sealed),
                          seal=_SEAL_DECODER.decode(seal) if seal is not None else None)

    def close(self) -> None:
        self._db.close()


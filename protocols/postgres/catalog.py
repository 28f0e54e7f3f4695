"""What the gateway knows of a target's catalog: relations, their columns, view definitions,
text-like types and function names.

Masking needs it to name the source of a result column (RowDescription carries a table OID and
an attribute number), to expand views, and to tell text-like custom types (citext, domains
over text) from others; ``tables`` / ``functions`` rules use it to place an unqualified name
in the schemas that hold it. It is read with one simple Query on the session's own upstream
connection, before the session goes live, as the target's user (so it sees what that user
sees), and shared by the sessions of a target until it expires or a DDL statement passes.

Reading it is sans-IO: ``CATALOG_QUERY`` goes upstream, every reply goes through
``CatalogReader.feed`` until it returns the snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from protocols.postgres import codec
from protocols.postgres.codec import I16, I32

# objects below this OID were created by initdb: system catalogs, built-in types and functions
FIRST_NORMAL_OID = 16384
# a snapshot is re-read after this many seconds even when no DDL was seen
CATALOG_TTL = 60.0

# One row of six JSON arrays: decoding them is a few C calls, where thousands of DataRows
# (every column and function of the database) would cost tens of milliseconds of Python.
CATALOG_QUERY = codec.query(
    "SELECT"
    " (SELECT coalesce(json_agg(s), '[]') FROM unnest(current_schemas(true)) AS s),"
    # relations of every schema but TOAST; view definitions only outside the system schemas
    " (SELECT coalesce(json_agg(json_build_array(c.oid, n.nspname, c.relname, c.relkind,"
    "   CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    "   THEN pg_get_viewdef(c.oid) END)), '[]')"
    "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname NOT LIKE 'pg\\_toast%'),"
    " (SELECT coalesce(json_agg(json_build_array(a.attrelid, a.attnum, a.attname, a.atttypid)"
    "   ORDER BY a.attrelid, a.attnum), '[]')"
    "  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'f', 'p')"
    "  AND n.nspname NOT LIKE 'pg\\_toast%'),"
    " (SELECT coalesce(json_agg(oid), '[]') FROM pg_type WHERE typcategory = 'S'),"
    " (SELECT coalesce(json_agg(json_build_array(p.oid, n.nspname, p.proname)), '[]')"
    "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace),"
    # inheritance and partitions: a parent's rows include its children's
    " (SELECT coalesce(json_agg(json_build_array(inhrelid, inhparent)), '[]') FROM pg_inherits)"
)
_RESULTS = 6


class Relation(msgspec.Struct, frozen=True):
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, v view, m materialized view, f foreign, p partitioned
    columns: dict[int, str]  # attnum -> name
    types: dict[int, int] = {}  # attnum -> type OID
    definition: str | None = None  # views: pg_get_viewdef

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class CatalogSnapshot(msgspec.Struct, frozen=True):
    search_path: tuple[str, ...]
    relations: dict[int, Relation]
    text_types: frozenset[int]
    functions: dict[int, str]  # oid -> "schema.name"
    relation_schemas: dict[str, frozenset[str]]  # name -> schemas holding a relation so named
    function_schemas: dict[str, frozenset[str]]
    by_name: dict[tuple[str, str], int] = {}  # (schema, name) -> relation OID
    # inheritance (partitions included), both ways: relation OID -> its parents / its children
    parents: dict[int, tuple[int, ...]] = {}
    children: dict[int, tuple[int, ...]] = {}
    loaded_at: float = 0.0

    def where_relation(self, name: str) -> frozenset[str] | None:
        return self.relation_schemas.get(name)

    def where_function(self, name: str) -> frozenset[str] | None:
        return self.function_schemas.get(name)

    def relation(self, schema: str, name: str) -> Relation | None:
        oid = self.by_name.get((schema, name))
        return self.relations.get(oid) if oid is not None else None

    def relatives(self, oid: int) -> list[int]:
        """Every ancestor and descendant of a relation (inheritance, partitions), not itself."""
        seen = {oid}
        out: list[int] = []
        for links in (self.parents, self.children):
            stack = list(links.get(oid, ()))
            while stack:
                o = stack.pop()
                if o in seen:
                    continue
                seen.add(o)
                out.append(o)
                stack.extend(links.get(o, ()))
        return out

    def column(self, table_oid: int, attnum: int) -> tuple[Relation, str] | None:
        rel = self.relations.get(table_oid)
        if rel is None:
            return None
        col = rel.columns.get(attnum)
        return (rel, col) if col is not None else None


class CatalogReader:
    """Collects the reply to ``CATALOG_QUERY``; ``feed`` returns the snapshot once ReadyForQuery arrives."""

    def __init__(self, decode: str = "utf-8") -> None:
        self._decode = decode
        self._row: list[str | None] | None = None
        self._error: str | None = None

    def feed(self, t: int, body: bytes) -> CatalogSnapshot | None:
        if t == 0x44:  # DataRow
            self._row = _values(body, self._decode)
        elif t == codec.E_ERROR:
            self._error = codec.parse_fields(body).get("M", "error")
        elif t == codec.Z_READY:
            if self._error is not None:
                raise CatalogError(self._error)
            row = self._row
            if row is None or len(row) != _RESULTS or any(v is None for v in row):
                raise CatalogError("the catalog query returned no usable row")
            try:
                parts = [msgspec.json.decode(v) for v in row]  # type: ignore[arg-type]
                return build_snapshot([[p] for p in parts[0]], parts[1], parts[2], [[p] for p in parts[3]],
                                      parts[4], parts[5])
            except (msgspec.DecodeError, TypeError, ValueError) as e:
                raise CatalogError(f"the catalog query returned something unexpected: {type(e).__name__}") from None
        return None


class CatalogError(Exception):
    """The catalog could not be read."""


def _values(body: bytes, encoding: str) -> list[str | None]:
    count = I16.unpack_from(body, 0)[0]
    pos = 2
    out: list[str | None] = []
    for _ in range(count):
        n = I32.unpack_from(body, pos)[0]
        pos += 4
        if n < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + n].decode(encoding, "replace"))
            pos += n
    return out


def build_snapshot(path_rows, relation_rows, column_rows, type_rows, function_rows, inherit_rows=()) -> CatalogSnapshot:
    columns: dict[int, dict[int, str]] = {}
    types: dict[int, dict[int, int]] = {}
    for relid, attnum, attname, typid in column_rows:
        columns.setdefault(int(relid), {})[int(attnum)] = attname
        types.setdefault(int(relid), {})[int(attnum)] = int(typid)
    relations: dict[int, Relation] = {}
    relation_schemas: dict[str, set[str]] = {}
    for oid, schema, name, kind, definition in relation_rows:
        relations[int(oid)] = Relation(schema=schema, name=name, kind=kind, columns=columns.get(int(oid), {}),
                                       types=types.get(int(oid), {}), definition=definition)
        relation_schemas.setdefault(name, set()).add(schema)
    functions: dict[int, str] = {}
    function_schemas: dict[str, set[str]] = {}
    for oid, schema, name in function_rows:
        functions[int(oid)] = f"{schema}.{name}"
        function_schemas.setdefault(name, set()).add(schema)
    parents: dict[int, list[int]] = {}
    children: dict[int, list[int]] = {}
    for child, parent in inherit_rows:
        parents.setdefault(int(child), []).append(int(parent))
        children.setdefault(int(parent), []).append(int(child))
    return CatalogSnapshot(
        parents={k: tuple(v) for k, v in parents.items()},
        children={k: tuple(v) for k, v in children.items()},
        search_path=tuple(r[0] for r in path_rows if r[0]),
        relations=relations,
        text_types=frozenset(int(r[0]) for r in type_rows),
        functions=functions,
        relation_schemas={k: frozenset(v) for k, v in relation_schemas.items()},
        by_name={(r.schema, r.name): oid for oid, r in relations.items()},
        function_schemas={k: frozenset(v) for k, v in function_schemas.items()},
        loaded_at=time.monotonic(),
    )


class CatalogCache:
    """Snapshots per target, shared by its sessions; stale after ``ttl`` or once DDL was seen."""

    def __init__(self, ttl: float = CATALOG_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._snapshots: dict[str, CatalogSnapshot] = {}
        # reads in progress, by key: a session starting meanwhile waits for it (see session.py)
        self.loading: dict[str, asyncio.Future[CatalogSnapshot | None]] = {}

    def get(self, key: str) -> CatalogSnapshot | None:
        snap = self._snapshots.get(key)
        if snap is None or self._clock() - snap.loaded_at > self._ttl:
            return None
        return snap

    def put(self, key: str, snapshot: CatalogSnapshot) -> None:
        if len(self._snapshots) >= 256:  # keys are partly caller-chosen (start-up options)
            self._snapshots.pop(next(iter(self._snapshots)))
        self._snapshots[key] = snapshot

    def invalidate_target(self, target: str) -> None:
        """Forget every snapshot of ``target`` (keys are the target name, a NUL, then start-up options)."""
        prefix = target + "\x00"
        for key in [k for k in self._snapshots if k == target or k.startswith(prefix)]:
            del self._snapshots[key]

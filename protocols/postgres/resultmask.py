"""Masking plans for PostgreSQL results: which column of a result gets which mask.

The relay (``MaskingBackendStream``) hands over each RowDescription with the statement it
answers; this module names the *source* of every result column and builds the ``RowPlan`` that
``protocols.postgres.rows`` applies to the DataRows:

1. a plain column reference: PostgreSQL reports its table OID and attribute number, named with
   the catalog snapshot (a view column is followed to its base columns with the view's lineage;
   attribute 0 is a whole-row reference: every column of the table);
2. anything else (expressions, casts, aggregates): the statement's column lineage
   (``policy.lineage``, over the same snapshot);
3. when neither can tell (a relation created after the snapshot, a user-defined function, FETCH
   from a cursor, EXECUTE of a prepared statement...) the column is masked with the strictest
   column rule whenever the statement could read a masked column at all: fail closed, but
   ``SHOW`` or ``EXPLAIN`` output is not masked for nothing.

Detector rules apply to every column whatever its source. Error and notice texts go through the
detectors too; data-exception and constraint errors (SQLSTATE classes 22 and 23), which quote
the offending value, lose their quoted values and their detail when column rules apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import pglast
from pglast import parser as _pg
from pglast.stream import RawStream
from pglast.visitors import Visitor

from policy.engine import SessionPolicy
from policy.glob import split_qualified
from policy.maskrules import split_source
from policy.lineage import Catalog, LineageCache, OutputLineage
from policy.masking import Masker, scrub, strictest
from protocols.postgres import codec
from protocols.postgres.catalog import FIRST_NORMAL_OID, CatalogSnapshot, Relation
from protocols.postgres.codec import I16, ProtocolViolation
from protocols.postgres.rows import (
    BUILTIN_TYPES, NO_TEXT_OIDS, ColumnMask, CopyRewriter, RowPlan, TypeCatalog, copy_format, mask_data_row,
    parse_row_description,
)

# plans are cached per (statement, index, RowDescription); sessions repeat the same few shapes
_PLAN_CACHE_MAX = 512
# statement kinds whose rows come from a query the statement does not show
_INDIRECT = frozenset({"FETCH", "EXECUTE", "CALL", "MOVE"})
# system columns that hold values of *other* tables' columns (planner statistics): whatever
# masks apply anywhere apply to them
_FOREIGN_VALUES = frozenset(
    [f"pg_catalog.pg_stats.{c}" for c in ("most_common_vals", "histogram_bounds", "most_common_elems")]
    + [f"pg_catalog.pg_stats_ext.{c}" for c in ("most_common_vals",)]
    + [f"pg_catalog.pg_stats_ext_exprs.{c}" for c in ("most_common_vals", "histogram_bounds", "most_common_elems")]
    + [f"pg_catalog.pg_statistic.stavalues{i}" for i in range(1, 6)]
    + ["pg_catalog.pg_statistic_ext_data.stxdmcv", "pg_catalog.pg_statistic_ext_data.stxdexpr"]
)
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
# SQLSTATE classes whose messages never quote row values: transaction state, connection,
# resources, operator intervention, configuration (names, class 42, are handled apart)
_DATALESS_CLASSES = ("0A", "25", "26", "28", "2D", "40", "53", "54", "55", "57", "58", "08", "0B", "0F", "0L",
                     "0P", "F0")
_HIDDEN = "(message hidden by wiregate: it may hold masked values)"
# statements that hold code: what it does with the values it reads cannot be followed
_CODE_KINDS = frozenset({"DO", "CREATE FUNCTION", "CREATE PROCEDURE", "CREATE TRIGGER", "CREATE RULE",
                         "CREATE EVENT TRIGGER", "CREATE AGGREGATE", "CREATE OPERATOR"})
# built-in functions that keep a value somewhere it can be read back from later
_SIDE_EFFECTS = frozenset({
    "set_config", "pg_notify", "lo_from_bytea", "lo_put", "lowrite", "lo_import", "lo_export", "lo_create",
    "pg_file_write", "pg_logical_emit_message", "txid_current", "nextval", "setval",
    "dblink", "dblink_exec", "dblink_send_query", "dblink_open", "dblink_fetch", "pg_background_launch",
})
_WRITE_KINDS = frozenset({"INSERT", "UPDATE", "MERGE", "CREATE TABLE", "CREATE MATERIALIZED VIEW", "COPY FROM"})


def lineage_catalog(snapshot: CatalogSnapshot) -> Catalog:
    """The catalog as ``policy.lineage`` reads it."""
    relations: dict[str, tuple[str, ...]] = {}
    views: dict[str, str] = {}
    for rel in snapshot.relations.values():
        key = rel.qualified
        relations[key] = tuple(rel.columns[n] for n in sorted(rel.columns))
        if rel.definition is not None:
            views[key] = rel.definition
    functions = frozenset(name for name in snapshot.functions.values()
                          if not name.startswith(("pg_catalog.", "information_schema.")))
    return Catalog(relations=relations, views=views, search_path=snapshot.search_path, functions=functions)


class SharedLineage:
    """One lineage cache and one lineage view of each snapshot, shared by a listener's sessions."""

    def __init__(self) -> None:
        self.cache = LineageCache()
        self._catalogs: dict[int, tuple[CatalogSnapshot, Catalog]] = {}

    def catalog(self, snapshot: CatalogSnapshot) -> Catalog:
        hit = self._catalogs.get(id(snapshot))
        if hit is not None and hit[0] is snapshot:
            return hit[1]
        cat = lineage_catalog(snapshot)
        if len(self._catalogs) >= 16:
            self._catalogs.clear()
        self._catalogs[id(snapshot)] = (snapshot, cat)
        return cat


class _CopyPlan(msgspec.Struct):
    rewriter: CopyRewriter


class ResultMasking:
    """The ``ResultMasker`` of one session (see protocols/postgres/relay.py)."""

    def __init__(self, policy: SessionPolicy, snapshot: CatalogSnapshot | None, encoding: Callable[[], str],
                 lineage: SharedLineage) -> None:
        self._policy = policy
        self._masks = policy.masks
        self._snapshot = snapshot
        self._encoding = encoding
        self._lineage = lineage
        self._catalog = lineage.catalog(snapshot) if snapshot is not None else None
        self._scans = self._masks.scans
        self._blanket = self._masks.blanket()
        text_like = BUILTIN_TYPES.text_like | (snapshot.text_types if snapshot is not None else frozenset())
        self._types = TypeCatalog(text_like=text_like)
        # plans by RowDescription, or by (statement, index, RowDescription) when the statement mattered
        self._plans: dict[object, RowPlan | None] = {}
        self._relation_masked: dict[int, bool] = {}
        self._refusals: dict[tuple[int, bool, bool], tuple[Any, str | None]] = {}
        self._moved_before = False
        self._ddl_seen = False
        self._start_path = policy.search_path
        # cursors (DECLARE) and prepared statements (PREPARE) by name: the statement whose rows
        # a later FETCH / EXECUTE returns, as (text, index)
        self._named: dict[tuple[str, str], tuple[str, int]] = {}

    def statement_done(self, sql: str | None, index: int, tag: bytes) -> None:
        """A statement completed (CommandComplete): remember the cursor or prepared statement it
        declared (see ``_named``) now that the server has it."""
        if not (tag.startswith(b"DECLARE CURSOR") or tag.startswith(b"PREPARE")) or sql is None:
            return
        nodes = _statements(sql)
        node = nodes[index] if index < len(nodes) else {}
        for kind, key in (("DeclareCursorStmt", "portalname"), ("PrepareStmt", "name")):
            stmt = node.get(kind)
            if isinstance(stmt, dict) and isinstance(stmt.get(key), str):
                if len(self._named) >= _PLAN_CACHE_MAX:
                    self._named.clear()
                self._named[(kind, stmt[key])] = (sql, index)

    # -- rows --------------------------------------------------------------------------------
    def row_plan(self, sql: str | None, index: int, row_description: bytes) -> RowPlan | None:
        # most plans follow from the RowDescription alone (every column a plain reference)
        plans = self._plans
        try:
            return plans[row_description]
        except KeyError:
            pass
        key = (sql, index, row_description)
        try:
            return plans[key]
        except KeyError:
            pass
        plan, used_sql = self._build_plan(sql, index, row_description)
        if len(plans) >= _PLAN_CACHE_MAX:
            plans.clear()
        plans[key if used_sql else row_description] = plan
        return plan

    def mask_row(self, plan: RowPlan, body: bytes) -> bytes:
        return mask_data_row(body, plan)

    def _build_plan(self, sql: str | None, index: int, row_description: bytes) -> tuple[RowPlan | None, bool]:
        """The plan, and whether it depends on the statement (not only on the RowDescription)."""
        encoding = self._encoding() or "utf-8"
        fields = parse_row_description(row_description, encoding)
        if not fields:
            return None, False
        used_sql = False
        sources: list[frozenset[str] | None] = [frozenset()] * len(fields)
        # a column the lineage of a row-returning statement cannot tell is masked outright
        unknown_in_rows = False
        if self._masks.has_columns:
            server = [self._server_source(f.table_oid, f.attnum) if f.table_oid else None for f in fields]
            # a relation the snapshot does not know (a temporary one shadowing a table, one
            # created since) means names in this statement may not be what the snapshot says
            names_trusted = not self._stale and not any(f.table_oid and src is None for f, src in zip(fields, server))
            lineage: OutputLineage | None | bool = False  # False: not computed yet
            for i, f in enumerate(fields):
                src = server[i]
                if src is None:
                    used_sql = True
                    if lineage is False:
                        # with names in doubt only "derives from no column" (count(*), constants)
                        # still holds, and not even that once a session function may shadow a built-in
                        lineage = None if self._path_moved else self._statement_lineage(sql, index, len(fields))
                    if lineage is not None:
                        src = self._with_kin(lineage.columns[i])  # type: ignore[union-attr]
                        if src and not names_trusted:
                            src = None
                        unknown_in_rows = unknown_in_rows or src is None
                sources[i] = src
        columns: list[ColumnMask | None] = []
        unknown_reads: bool | None = None
        for f, src in zip(fields, sources):
            whole: Masker | None = None
            if src is None:
                used_sql = True
                if unknown_reads is None:
                    unknown_reads = unknown_in_rows or self._may_read_masked(sql)
                if unknown_reads:
                    whole = self._blanket
            elif src:
                whole = self._strictest(src)
            if whole is None and (not self._scans or f.type_oid in NO_TEXT_OIDS):
                columns.append(None)  # nothing to mask, or a type that cannot hold text
                continue
            columns.append(ColumnMask(f.type_oid, f.format, whole=whole, scans=self._scans, encoding=encoding,
                                      types=self._types))
        plan = RowPlan(columns)
        return (plan if plan.active else None), used_sql

    def _strictest(self, sources: frozenset[str]) -> Masker | None:
        if not _FOREIGN_VALUES.isdisjoint(sources):
            return self._blanket
        maskers = [m for m in (self._masks.source(s) for s in sources) if m is not None]
        if not maskers:
            return None
        if len(maskers) == 1:
            return maskers[0]
        style = strictest([m.style for m in maskers])
        return next(m for m in maskers if m.style == style)

    def _server_source(self, table_oid: int, attnum: int) -> frozenset[str] | None:
        """The source columns of a plain column reference, from the table OID the server reported."""
        snap = self._snapshot
        rel = snap.relations.get(table_oid) if snap is not None else None
        if rel is None:
            # initdb's objects (the system catalogs) are never masked unless a rule names them;
            # anything newer is a relation created after the snapshot: cannot tell
            return frozenset() if table_oid < FIRST_NORMAL_OID and snap is not None else None
        if attnum < 0:
            return frozenset()  # system columns: ctid, xmin...
        if attnum == 0:
            names = [rel.columns[n] for n in sorted(rel.columns)]
            out: set[str] = set()
            for n in range(1, len(names) + 1):
                one = self._server_source(table_oid, n)
                if one is None:
                    return None
                out |= one
            return frozenset(out)
        col = rel.columns.get(attnum)
        if col is None:
            return None
        own = frozenset({f"{_ident(rel.schema)}.{_ident(rel.name)}.{_ident(col)}"}) | self._kin(table_oid, col)
        if rel.kind in ("v", "m"):
            if rel.definition is None:
                return own if rel.schema in ("pg_catalog", "information_schema") else None
            vl = self._lineage.cache.view_lineage(rel.qualified, self._catalog)  # type: ignore[arg-type]
            if vl is None or attnum > len(vl.columns) or vl.columns[attnum - 1] is None:
                return None
            return own | vl.columns[attnum - 1]  # type: ignore[operator]
        return own

    def _kin(self, oid: int, column: str) -> frozenset[str]:
        """The same column in the relation's ancestors and descendants: a parent's rows include
        its partitions' and children's, and a partition holds its parent's rows, so a rule on
        either covers both."""
        snap = self._snapshot
        out = set()
        for other in snap.relatives(oid):  # type: ignore[union-attr]
            rel = snap.relations.get(other)  # type: ignore[union-attr]
            if rel is not None and column in rel.columns.values():
                out.add(f"{_ident(rel.schema)}.{_ident(rel.name)}.{_ident(column)}")
        return frozenset(out)

    def _with_kin(self, sources: frozenset[str] | None) -> frozenset[str] | None:
        """Lineage sources with each column's kin added (see ``_kin``)."""
        if not sources or self._snapshot is None or not self._snapshot.parents:
            return sources
        out = set(sources)
        for src in sources:
            schema, table, column = split_source(src)
            oid = self._snapshot.by_name.get((schema, table))
            if oid is not None:
                out |= self._kin(oid, column)
        return frozenset(out)

    def _statement_lineage(self, text: str | None, index: int, width: int, depth: int = 0, *,
                           exact: bool = True) -> OutputLineage | None:
        if text is None or self._catalog is None:
            return None
        found = self._lineage.cache.statement_lineages(text, self._catalog)
        if found is None or index >= len(found):
            return None
        lin = found[index]
        if lin is None and depth == 0 and self._named:
            # FETCH from a cursor / EXECUTE of a prepared statement: the rows of the declared query
            nodes = _statements(text)
            node = nodes[index] if index < len(nodes) else {}
            fetch, execute = node.get("FetchStmt"), node.get("ExecuteStmt")
            named = None
            if isinstance(fetch, dict):
                named = self._named.get(("DeclareCursorStmt", fetch.get("portalname", "")))
            elif isinstance(execute, dict):
                named = self._named.get(("PrepareStmt", execute.get("name", "")))
            if named is not None:
                return self._statement_lineage(named[0], named[1], width, depth + 1)
        if lin is None or (exact and len(lin.columns) != width):
            return None  # the shapes disagree: do not guess which column is which
        return lin

    def _may_read_masked(self, text: str | None) -> bool:
        """Whether a statement could return values of a masked column (conservative)."""
        if text is None or self._snapshot is None:
            return True
        analysis = self._policy.analyze(text)
        if analysis.error is not None or analysis.undecidable is not None:
            return True
        if not _INDIRECT.isdisjoint(analysis.kinds):
            return True
        if (self._path_moved and analysis.functions) or (self._stale and analysis.tables):
            return True  # DDL ran or the search path moved: names may mean something else now
        return self._calls_unknown_code(analysis) or self._touches_masked(analysis)

    def _calls_unknown_code(self, analysis: Any) -> bool:
        """Whether a statement calls a function that is not a built-in (it may read anything)."""
        snap = self._snapshot
        for fn in analysis.functions:
            schema, name = split_qualified(fn)
            if schema is not None:
                if schema != "pg_catalog":
                    return True
            elif (snap.where_function(name) or frozenset({"?"})) - {"pg_catalog"}:  # type: ignore[union-attr]
                return True
        return False

    @property
    def _path_moved(self) -> bool:
        """Whether the search path differs from the snapshot's: a session function may now
        shadow a built-in, a relation resolve to another schema."""
        return self._policy.search_path != self._start_path

    @property
    def _stale(self) -> bool:
        """Whether relation names may no longer mean what the snapshot says, in this session
        (DDL ran: a temporary relation may shadow a table, a column may have been renamed)."""
        return self._ddl_seen or self._path_moved

    def ddl_seen(self) -> None:
        """The session ran DDL: from now on lineage by name is not trusted (see ``_stale``)."""
        self._ddl_seen = True

    def _relation_has_masks(self, rel: Relation) -> bool:
        key = id(rel)
        hit = self._relation_masked.get(key)
        if hit is None:
            oid = self._snapshot.by_name.get((rel.schema, rel.name), 0)  # type: ignore[union-attr]
            hit = False
            for attnum in rel.columns:
                src = self._server_source(oid, attnum)
                if src is None or not _FOREIGN_VALUES.isdisjoint(src) or any(
                        self._masks.source(s) is not None for s in src):
                    hit = True
                    break
            self._relation_masked[key] = hit
        return hit

    # -- COPY --------------------------------------------------------------------------------
    def copy_plan(self, sql: str | None, index: int, copy_response: bytes) -> _CopyPlan | None:
        encoding = self._encoding() or "utf-8"
        text = sql
        stmt = _copy_statement(text, index)
        if len(copy_response) < 3:
            raise ProtocolViolation("CopyOutResponse is truncated")
        width = I16.unpack_from(copy_response, 1)[0]
        fmt = copy_format(stmt.get("options") if stmt is not None else None) if stmt is not None else None
        binary = copy_response[0] == 1
        if fmt is None:
            if self._masks.has_columns or self._scans:
                # without the statement the rows cannot be read safely: end the session rather than leak
                raise ProtocolViolation("COPY rows of a statement the gateway could not read")
            return None
        if fmt.encoding is not None:
            # COPY ... ENCODING 'x' writes its rows in that encoding, not the session's
            encoding = codec.python_encoding(fmt.encoding)
            if not encoding:
                raise ProtocolViolation(f"COPY rows in encoding {fmt.encoding!r}, which the gateway cannot mask")
        types, sources = self._copy_columns(stmt, text, index, width)
        columns: list[ColumnMask | None] = []
        unknown_reads: bool | None = None
        for type_oid, src in zip(types, sources):
            whole: Masker | None = None
            if src is None:
                if unknown_reads is None:
                    unknown_reads = self._may_read_masked(text)
                if unknown_reads:
                    whole = self._blanket
            elif src:
                whole = self._strictest(src)
            if whole is None and (not self._scans or type_oid in NO_TEXT_OIDS):
                columns.append(None)
                continue
            # a column of unknown type: masked values become NULL (valid for any type); detector
            # matches in its text are masked in place in the text formats
            text_like = None if type_oid else (not binary and whole is None)
            columns.append(ColumnMask(type_oid, 1 if binary else 0, whole=whole, scans=self._scans,
                                      encoding=encoding, types=self._types, text_like=text_like))
        plan = RowPlan(columns)
        if not plan.active:
            return None
        return _CopyPlan(CopyRewriter(fmt, plan, encoding))

    def mask_copy(self, plan: _CopyPlan, body: bytes) -> bytes:
        return plan.rewriter.rewrite(body)

    def _copy_columns(self, stmt: dict[str, Any], text: str | None, index: int,
                      width: int) -> tuple[list[int], list[frozenset[str] | None]]:
        snap = self._snapshot
        relation = stmt.get("relation")
        if relation is not None and snap is not None:
            schema = relation.get("schemaname")
            name = relation.get("relname", "")
            schemas = [schema] if schema else [s for s in snap.search_path if snap.relation(s, name) is not None][:1]
            rel = snap.relation(schemas[0], name) if schemas else None
            if rel is not None:
                oid = snap.by_name[(rel.schema, rel.name)]
                attnums = sorted(rel.columns)
                wanted = [_sval(c) for c in stmt.get("attlist", ())]
                if wanted:
                    by_name = {rel.columns[n]: n for n in attnums}
                    attnums = [by_name.get(w, -999) for w in wanted]
                if len(attnums) == width:
                    return ([rel.types.get(n, 0) for n in attnums],
                            [self._server_source(oid, n) if n > 0 else None for n in attnums])
        lin = self._statement_lineage(text, index, width)
        if lin is None:
            return [0] * width, [None] * width
        # COPY (query) sends no RowDescription: a column derived only from text-like columns is
        # taken as text (a mask string), anything else as of unknown type (NULL when masked)
        return [25 if src and all(self._source_is_text(s) for s in src) else 0 for src in lin.columns], list(lin.columns)

    def _source_is_text(self, source: str) -> bool:
        schema, table, column = split_source(source)
        rel = self._snapshot.relation(schema, table) if self._snapshot is not None else None
        if rel is None:
            return False
        for attnum, name in rel.columns.items():
            if name == column:
                return rel.types.get(attnum, 0) in self._types.text_like
        return False

    # -- error and notice texts ---------------------------------------------------------------
    def mask_message(self, body: bytes, sql: str | None = None) -> bytes:
        """An ErrorResponse / NoticeResponse body with values that may be masked taken out.

        Detectors run over every text field. With column rules, a message raised while a
        statement that may read a masked column runs (``RAISE NOTICE '%', ssn``, a data error
        quoting a value, a constraint error showing a key) keeps its SQLSTATE and severity but
        not its texts, unless its class cannot carry data (syntax, privileges, transaction
        state...): the gateway cannot tell which part of a text came from where.
        """
        encoding = self._encoding() or "utf-8"
        # surrogateescape: bytes invalid in the encoding go back out exactly as they came
        fields = codec.parse_fields(body, encoding, "surrogateescape")
        code = fields.get("C", "")
        reads = (self._masks.has_columns and not code.startswith(_DATALESS_CLASSES)
                 and self._may_read_masked(sql))
        # names in errors (class 42: `relation "x" does not exist`) are what the caller wrote,
        # except when a value was turned into a name (`ssn::regclass`): keep only quoted words
        # that appear in the statement
        names_only = reads and code.startswith("42")
        changed = False
        for key in ("M", "D", "H", "W", "w", "s", "t", "c", "d", "n"):
            value = fields.get(key)
            if not value:
                continue
            if reads and not names_only:
                new = _HIDDEN if key == "M" else ""
            else:
                new = value
                if names_only:
                    new = _QUOTED.sub(lambda m: m.group(0) if sql and m.group(0)[1:-1] in sql else '"***"', new)
                if self._scans:
                    new = scrub(new, self._scans) or ""
            if new != value:
                fields[key] = new
                changed = True
        if not changed:
            return body
        parts = [k.encode() + v.encode(encoding, "surrogateescape") + b"\x00" for k, v in fields.items() if v]
        return b"".join(parts) + b"\x00"

    def mask_notification(self, body: bytes) -> bytes:
        """A NotificationResponse body with detector matches in its payload masked."""
        if not self._scans or len(body) < 6:
            return body
        encoding = self._encoding() or "utf-8"
        nul = body.find(b"\x00", 4)
        end = body.find(b"\x00", nul + 1) if nul >= 0 else -1
        if end < 0:
            return body
        payload = body[nul + 1:end].decode(encoding, "surrogateescape")
        masked = scrub(payload, self._scans)
        if masked is payload:
            return body
        return body[:nul + 1] + (masked or "").encode(encoding, "surrogateescape") + b"\x00"

    # -- statements that would move masked values where masking cannot follow -----------------
    def refusal(self, sql: str) -> str | None:
        """Why ``sql`` must not run in this session (None: it may): it would copy values of a
        masked column into a table, a setting, a notification, a large object or code the
        gateway cannot follow, from where they could be read back unmasked."""
        if not self._masks.has_columns or self._snapshot is None:
            return None
        analysis = self._policy.analyze(sql)
        # statements that differ only in constants share their analysis object, and the answer
        # never depends on a constant: remember it per analysis (holding it keeps the id unique)
        # the search path as it was before this statement: a statement that moves it is
        # judged by where names resolved when it was written
        moved, self._moved_before = self._moved_before, self._path_moved
        key = (id(analysis), moved, self._ddl_seen)
        hit = self._refusals.get(key)
        if hit is not None and hit[0] is analysis:
            return hit[1]
        reason = self._refusal(sql, analysis, moved)
        if len(self._refusals) >= _PLAN_CACHE_MAX:
            self._refusals.clear()
        self._refusals[key] = (analysis, reason)
        return reason

    def _refusal(self, sql: str, analysis: Any, moved: bool) -> str | None:
        if analysis.error is not None:
            return None
        touches = self._touches_masked(analysis)
        unknown_code = self._calls_unknown_code(analysis)
        if not touches and not unknown_code and not (moved and analysis.functions):
            return None
        what = "a masked table" if touches else "a function that may read masked tables"
        if analysis.undecidable is not None or not _CODE_KINDS.isdisjoint(analysis.kinds):
            return f"it reads {what} inside code the gateway cannot follow"
        if touches and "ALTER" in analysis.kinds:
            # renaming, retyping (ALTER ... USING), generated columns, inheritance, attaching:
            # all can carry values out of a rule's reach
            return "it alters a relation with masked columns"
        for fn in sorted(analysis.functions):
            name = split_qualified(fn)[1]
            if name in _SIDE_EFFECTS or name.startswith(("pg_advisory", "pg_try_advisory")):
                return f"it calls {fn} while reading {what}"
        if _WRITE_KINDS.isdisjoint(analysis.kinds):
            return None
        for target, query in _written_queries(sql):
            if query is None:
                return f"it writes into {target} from {what} in a form the gateway cannot follow"
            lin = self._statement_lineage(query, 0, -1, exact=False) if not self._stale else None
            if lin is None:
                return f"it writes into {target} from {what} in a form the gateway cannot follow"
            for src in lin.columns:
                if src is None:
                    if self._may_read_masked(query):
                        return f"it writes values of unknown origin into {target} while reading {what}"
                    continue
                masked = sorted(x for x in src if self._masks.source(x) is not None or x in _FOREIGN_VALUES)
                if masked:
                    return f"it writes values of masked column {masked[0]} into {target}"
        return None

    def _touches_masked(self, analysis: Any) -> bool:
        snap = self._snapshot
        for ref in analysis.tables:
            schema, name = split_qualified(ref)
            schemas = [schema] if schema is not None else sorted(snap.where_relation(name) or ())
            if not schemas:
                return True  # not in the snapshot: it may be a copy made since
            for s in schemas:
                rel = snap.relation(s, name)
                if rel is None or self._relation_has_masks(rel):
                    return True
        return False


def _ident(name: str) -> str:
    return f'"{name}"' if "." in name or '"' in name else name


def _sval(node: Any) -> str:
    if isinstance(node, dict):
        s = node.get("String")
        if isinstance(s, dict):
            return s.get("sval", "")
    return ""


def _written_queries(sql: str) -> list[tuple[str, str | None]]:
    """(target, query text) for every write in ``sql``: the query whose rows a write stores,
    as SELECT text (None when it cannot be put as one)."""
    out: list[tuple[str, str | None]] = []

    def text(node: Any) -> str | None:
        try:
            return RawStream()(node)
        except Exception:
            return None

    class Writes(Visitor):
        def visit_InsertStmt(self, parent: Any, node: Any) -> None:
            target = text(node.relation) or "a table"
            if node.selectStmt is not None:
                out.append((target, text(node.selectStmt)))

        def visit_UpdateStmt(self, parent: Any, node: Any) -> None:
            target = text(node.relation) or "a table"
            exprs = [text(t.val) for t in node.targetList or ()]
            source = [text(node.relation)] + [text(f) for f in node.fromClause or ()]
            if None in exprs or None in source:
                out.append((target, None))
            else:
                out.append((target, f"SELECT {', '.join(exprs)} FROM {', '.join(source)}"))  # type: ignore[arg-type]

        def visit_MergeStmt(self, parent: Any, node: Any) -> None:
            out.append((text(node.relation) or "a table", None))

        def visit_CreateTableAsStmt(self, parent: Any, node: Any) -> None:
            out.append((text(node.into.rel) if node.into else "a table", text(node.query)))  # type: ignore[arg-type]

        def visit_SelectStmt(self, parent: Any, node: Any) -> None:
            if node.intoClause is not None:
                into = node.intoClause
                node.intoClause = None
                out.append((text(into.rel) or "a table", text(node)))

        def visit_CopyStmt(self, parent: Any, node: Any) -> None:
            if node.is_from and node.filename:  # COPY FROM a server file
                out.append(("a table", None))

    try:
        for stmt in pglast.parse_sql(sql):
            Writes()(stmt)
    except Exception:
        return [("a table", None)]
    return out


def _statements(text: str) -> list[dict[str, Any]]:
    """The statement nodes of ``text`` ({} for one that is not a dict; [] when it does not parse)."""
    try:
        tree = msgspec.json.decode(_pg.parse_sql_json(text))
    except Exception:
        return []
    out = []
    for item in tree.get("stmts", []):
        node = item.get("stmt") if isinstance(item, dict) else None
        out.append(node if isinstance(node, dict) else {})
    return out


def _copy_statement(text: str | None, index: int) -> dict[str, Any] | None:
    """The CopyStmt node of statement ``index`` of ``text``, or None."""
    if text is None:
        return None
    nodes = _statements(text)
    copy = nodes[index].get("CopyStmt") if index < len(nodes) else None
    return copy if isinstance(copy, dict) else None

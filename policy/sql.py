"""SQL analysis with PostgreSQL's own parser (libpg_query, through pglast).

``SqlAnalyzer.analyze(text)`` returns what a string does, as far as rules are concerned:

* ``kinds`` / ``leaves``: the statement kinds it contains: the leading keyword of every statement
  (``DROP``) plus a two-word form naming the object (``DROP TABLE``), nested statements included
  (a ``DELETE`` inside a ``WITH``, the statement ``EXPLAIN ANALYZE`` runs, a ``PREPARE``'s body, a
  ``CREATE RULE``'s actions, the statements of a ``DO`` block or function body, the SQL text handed
  to ``dblink_exec``...). Rules match those kinds, never substrings of the text, so a keyword inside
  a literal or a comment counts for nothing.
* ``tables``: every relation named, as ``schema.name`` when qualified, else ``name``, with
  identifiers as PostgreSQL folds them (a catalog prefix is dropped): FROM and JOIN items at any
  depth, DML targets, ``TABLE``/``COPY``/``LOCK``/``TRUNCATE``/``VACUUM``/... targets, relations
  created, altered, renamed (old and new name), dropped, commented, indexed, granted, the tables
  a view's or a function body's query reads, the table given to ``table_to_xml``. A name that
  refers to a CTE in scope is not a table (scoping follows PostgreSQL: a CTE is visible in its
  statement and, for ``WITH RECURSIVE``, in its siblings; a qualified name is never a CTE).
* ``functions``: every function call (``FuncCall``), same form (``pg_catalog.pg_sleep``,
  ``pg_sleep``): in any expression, in FROM, defaults, checks, index expressions, ``CALL p()``
  (a procedure counts as a function), bodies and nested SQL, and the functions a statement wires
  into an object that calls them later: ``CREATE [EVENT] TRIGGER ... EXECUTE FUNCTION f()``,
  ``CREATE OPERATOR (FUNCTION = f)``, aggregates' and types' support functions, ``CREATE CAST
  WITH FUNCTION``, transforms, conversions, operator classes, language / FDW / access method handlers.
* ``undecidable``: why some SQL this string would run cannot be seen, or None.

Bodies. ``DO`` blocks and ``CREATE FUNCTION``/``PROCEDURE`` bodies given as string literals are
analysed and count as what they do. ``LANGUAGE sql`` bodies are parsed as SQL. PL/pgSQL bodies go
through ``pglast.parser.parse_plpgsql_json`` (libpg_query compiles the statement's own text, so the
parameters and return type are the real ones), and every ``PLpgSQL_expr`` in the result is analysed:
``parseMode`` 0 is a whole statement (``execsql``, ``PERFORM``, ``RETURN QUERY``, ``FOR ... IN
query``, cursor queries, ``CALL``), 2 an expression (conditions, ``RETURN``, ``RAISE`` arguments,
defaults; analysed as ``SELECT <expr>``, not in statement position), 3-5 an assignment ``target
:= expr`` (the target's subscripts and the value are analysed). ``COMMIT``/``ROLLBACK`` inside a
body count as those kinds. Dynamic SQL (``EXECUTE``, ``FOR ... IN EXECUTE``, ``OPEN ... FOR
EXECUTE``, ``RETURN QUERY EXECUTE``) is analysed when the string is a single constant (a literal in
any quoting, optionally cast to ``text``/``varchar`` without a length); anything else, including a
concatenation of constants (an ``||`` on the search path could be anyone's operator), is
undecidable. Nested bodies recurse up to ``_MAX_DEPTH`` levels.

SQL-running functions. ``query_to_xml``, ``query_to_xmlschema``, ``query_to_xml_and_xmlschema``,
``ts_stat``, ``ts_rewrite(tsquery, text)``, ``dblink``, ``dblink_exec``, ``dblink_open``,
``dblink_send_query`` and ``pg_background_launch`` run SQL given as text: a constant argument is
analysed as a statement, a computed one is undecidable. ``table_to_xml*`` read the table named by
their first argument (added to ``tables`` when constant); ``schema_to_xml*`` and
``database_to_xml*`` read tables nobody named: undecidable. ``set_config('role', ...)`` and
``set_config('session_authorization', ...)`` are ``SET ROLE`` / ``SET SESSION AUTHORIZATION``; a
computed setting name is undecidable. These are matched on the last part of the name, whatever
the schema (dblink lives wherever the extension was installed).

Undecidable: dynamic SQL of a computed string, a SQL-running function given a computed argument
(or ``set_config`` a computed setting name), a body in a language other than sql/plpgsql
(including ``c`` and ``internal``, which run native code), a body without a language, a body that
does not parse (the server accepts one with ``check_function_bodies = off``), a PL/pgSQL body
using ``#option dump`` (libpg_query would print the function to the gateway's stdout), nesting
deeper than ``_MAX_DEPTH``. What was seen besides is still reported.

A plain ``EXPLAIN`` (no ANALYZE) plans its statement without running it: the statement's tables
and functions count (planning opens the tables and may evaluate functions), its kinds do not.

Not seen (no ``FuncCall`` in the raw parse tree, or known only to the catalog): operators and the
functions behind them, casts and their functions, SQL value functions (``CURRENT_USER``,
``CURRENT_DATE``...), ``COALESCE``/``GREATEST``/``NULLIF``-style expressions, attribute notation
calling a function (``t.f`` runs ``f(t)`` when ``t`` has no column ``f``), functions run by
triggers, rules, views, defaults or other functions that already exist, the tables a view or an
existing function reads, what ``GRANT ... ON ALL TABLES IN SCHEMA``, ``DROP SCHEMA ... CASCADE``,
``DROP OWNED``, ``IMPORT FOREIGN SCHEMA`` or a ``VACUUM`` without a table list cover, a table named
by OID or by a string given to any other function (``nextval('s')``, ``'t'::regclass``), which
schema an unqualified name resolves to (``search_path``).

Costs (see docs/policy.md): the parser is ~3-50 µs per statement, so analyses are cached at two
levels, both bounded LRUs owned by the analyzer instance:

1. exact text -> analysis (a dict lookup);
2. *shape* -> analysis, where the shape is ``pglast.parser.normalize(text)``: the text with every
   constant replaced by ``$n``. pgbench and ORMs send the same statement with different constants;
   normalizing (~2 µs) is cheaper than a parse and neither the statement kinds nor the names of
   tables and functions depend on a constant. An analysis that *does* look inside a literal (DO
   and function bodies, dynamic SQL, the arguments of SQL-running functions, EXPLAIN option
   values) is marked ``literal_sensitive`` and never stored at this level.

The shape is the normalized text itself, not ``pglast.parser.fingerprint``: a fingerprint is a
64-bit non-cryptographic hash, so a caller could search offline for an allowed statement and a
forbidden one with the same fingerprint, prime the cache with the first and run the second.
Keying on the normalized text makes a hit mean "same text except for constants", nothing weaker,
and normalize is also cheaper than fingerprint (see docs/policy.md for measured costs).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from pglast import parser as _pg

__all__ = ["SqlAnalysis", "SqlAnalyzer", "KNOWN_KINDS", "VERBS", "verb_of", "normalize_kind"]


class SqlAnalysis(msgspec.Struct, frozen=True):
    """What a SQL string does, as far as rules are concerned.

    ``kinds`` holds every kind found, both the bare keywords and the two-word forms
    (``{"DROP", "DROP TABLE"}``): a rule entry matches when it is in this set.
    ``leaves`` holds the most specific kind of each statement found (``{"DROP TABLE"}``):
    an allow rule covers a string only when it covers every leaf.
    """

    kinds: frozenset[str]
    statements: int
    error: str | None = None
    error_position: int | None = None
    leaves: frozenset[str] = frozenset()
    # the analysis depends on the contents of a string literal (DO / function bodies, option
    # values), so a statement differing only in constants may do something else
    literal_sensitive: bool = False
    # every relation the string touches, as "schema.name" when qualified, else "name"
    # (identifiers as PostgreSQL folds them: unquoted lowercased, quoted kept; a catalog prefix is dropped)
    tables: frozenset[str] = frozenset()
    # every function called, same form ("pg_catalog.pg_sleep", "pg_sleep", "dblink_exec")
    functions: frozenset[str] = frozenset()
    # why some SQL that this string would run cannot be seen (dynamic SQL, a body in an
    # unanalysable language, a SQL-running function given a computed argument); None when
    # everything was analysed. Human readable, used in the client's error message.
    undecidable: str | None = None

    @property
    def empty(self) -> bool:
        """Only whitespace, comments or semicolons: nothing to run."""
        return self.error is None and self.statements == 0


# --------------------------------------------------------------------------------------------
# Kind vocabulary

# ObjectType enum names (pglast.enums.ObjectType) as the words SQL uses for them.
OBJECT_WORDS: dict[str, str] = {
    "OBJECT_ACCESS_METHOD": "ACCESS METHOD",
    "OBJECT_AGGREGATE": "AGGREGATE",
    "OBJECT_AMOP": "OPERATOR FAMILY",
    "OBJECT_AMPROC": "OPERATOR FAMILY",
    "OBJECT_ATTRIBUTE": "TYPE",
    "OBJECT_CAST": "CAST",
    "OBJECT_COLUMN": "TABLE",
    "OBJECT_COLLATION": "COLLATION",
    "OBJECT_CONVERSION": "CONVERSION",
    "OBJECT_DATABASE": "DATABASE",
    "OBJECT_DEFAULT": "TABLE",
    "OBJECT_DEFACL": "DEFAULT PRIVILEGES",
    "OBJECT_DOMAIN": "DOMAIN",
    "OBJECT_DOMCONSTRAINT": "DOMAIN",
    "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER",
    "OBJECT_EXTENSION": "EXTENSION",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE",
    "OBJECT_FUNCTION": "FUNCTION",
    "OBJECT_INDEX": "INDEX",
    "OBJECT_LANGUAGE": "LANGUAGE",
    "OBJECT_LARGEOBJECT": "LARGE OBJECT",
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPERATOR": "OPERATOR",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
    "OBJECT_PARAMETER_ACL": "PARAMETER",
    "OBJECT_POLICY": "POLICY",
    "OBJECT_PROCEDURE": "PROCEDURE",
    "OBJECT_PUBLICATION": "PUBLICATION",
    "OBJECT_PUBLICATION_NAMESPACE": "PUBLICATION",
    "OBJECT_PUBLICATION_REL": "PUBLICATION",
    "OBJECT_ROLE": "ROLE",
    "OBJECT_ROUTINE": "ROUTINE",
    "OBJECT_RULE": "RULE",
    "OBJECT_SCHEMA": "SCHEMA",
    "OBJECT_SEQUENCE": "SEQUENCE",
    "OBJECT_SUBSCRIPTION": "SUBSCRIPTION",
    "OBJECT_STATISTIC_EXT": "STATISTICS",
    "OBJECT_TABCONSTRAINT": "TABLE",
    "OBJECT_TABLE": "TABLE",
    "OBJECT_TABLESPACE": "TABLESPACE",
    "OBJECT_TRANSFORM": "TRANSFORM",
    "OBJECT_TRIGGER": "TRIGGER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_TYPE": "TYPE",
    "OBJECT_USER_MAPPING": "USER MAPPING",
    "OBJECT_VIEW": "VIEW",
}

# TransactionStmt.kind -> (verb, object)
_TRANSACTION: dict[str, tuple[str, str | None]] = {
    "TRANS_STMT_BEGIN": ("BEGIN", None),
    "TRANS_STMT_START": ("BEGIN", None),
    "TRANS_STMT_COMMIT": ("COMMIT", None),
    "TRANS_STMT_ROLLBACK": ("ROLLBACK", None),
    "TRANS_STMT_SAVEPOINT": ("SAVEPOINT", None),
    "TRANS_STMT_RELEASE": ("RELEASE", None),
    "TRANS_STMT_ROLLBACK_TO": ("ROLLBACK", "TO SAVEPOINT"),
    "TRANS_STMT_PREPARE": ("PREPARE", "TRANSACTION"),
    "TRANS_STMT_COMMIT_PREPARED": ("COMMIT", "PREPARED"),
    "TRANS_STMT_ROLLBACK_PREPARED": ("ROLLBACK", "PREPARED"),
}

_REINDEX: dict[str, str] = {
    "REINDEX_OBJECT_INDEX": "INDEX",
    "REINDEX_OBJECT_TABLE": "TABLE",
    "REINDEX_OBJECT_SCHEMA": "SCHEMA",
    "REINDEX_OBJECT_SYSTEM": "SYSTEM",
    "REINDEX_OBJECT_DATABASE": "DATABASE",
}

# VariableSetStmt.name values that deserve their own kind: they change who you are
_SET_NAMES: dict[str, str] = {"role": "ROLE", "session_authorization": "SESSION AUTHORIZATION",
                              # where unqualified names resolve: the engine stops placing them
                              "search_path": "SEARCH_PATH"}

_MERGE_ACTIONS: dict[str, str] = {"CMD_UPDATE": "UPDATE", "CMD_INSERT": "INSERT", "CMD_DELETE": "DELETE"}

# EXPLAIN (ANALYZE <value>) values that turn execution off
_FALSE_WORDS = frozenset({"false", "off", "no", "0"})

# Rule entries accepted as another spelling of a kind.
KIND_ALIASES: dict[str, str] = {
    "START": "BEGIN",
    "START TRANSACTION": "BEGIN",
    "BEGIN TRANSACTION": "BEGIN",
    "BEGIN WORK": "BEGIN",
    "END": "COMMIT",
    "ABORT": "ROLLBACK",
    "RELEASE SAVEPOINT": "RELEASE",
    "TRUNCATE TABLE": "TRUNCATE",
    "LOCK TABLE": "LOCK",
    "CREATE TABLE AS": "CREATE TABLE",
    "CREATE USER": "CREATE ROLE",
    "CREATE GROUP": "CREATE ROLE",
    "ALTER USER": "ALTER ROLE",
    "ALTER GROUP": "ALTER ROLE",
    "DROP USER": "DROP ROLE",
    "DROP GROUP": "DROP ROLE",
    "COMMENT ON": "COMMENT",
}


def verb_of(kind: str) -> str:
    """The leading keyword(s) of a kind: ``DROP TABLE`` -> ``DROP``."""
    if kind.startswith("SECURITY LABEL"):
        return "SECURITY LABEL"
    return kind.split(" ", 1)[0]


def normalize_kind(entry: str) -> str:
    """A rule's ``match.sql`` entry as a kind: upper case, single spaces, aliases resolved."""
    kind = " ".join(entry.upper().split())
    return KIND_ALIASES.get(kind, kind)



# --------------------------------------------------------------------------------------------
# Tree walk
#
# A statement counts wherever it appears: a DELETE inside a WITH, the actions of a CREATE RULE.
# A SELECT counts only in a *statement position*: a top-level statement, or the query another
# statement runs as such (COPY (query), EXPLAIN ANALYZE, PREPARE, DECLARE, CREATE TABLE AS,
# CREATE VIEW, rule actions, a BEGIN ATOMIC body, a function body, dynamic SQL). Subqueries,
# INSERT ... SELECT sources and VALUES lists are part of the statement that holds them, so
# `INSERT INTO t VALUES (1)` is an INSERT and nothing else.
#
# The walk stack holds JSON nodes; a node wrapped in a 1-tuple is in statement position, and a
# _Scope entry changes which CTE names are visible to the entries below it that are popped next.
#
# libpg_query's JSON wraps a node in {"TypeName": {...}} only where the C field is a generic
# Node; a field typed as one struct (InsertStmt.relation is a RangeVar *) holds the fields bare.
# Handlers dispatch on the wrapper, so the typed fields that matter are listed below.

_NO_CTES: frozenset[str] = frozenset()
# nesting of bodies, dynamic SQL and SQL-running functions' arguments beyond which nothing is analysed
_MAX_DEPTH = 12
# nested texts (body statements and expressions, dynamic SQL...) one analysis parses at most: each
# costs a parse (~10-30 µs), so a huge body would otherwise hold the event loop for seconds
_MAX_NESTED = 5000


class _Scope:
    """A walk-stack entry: from here on, these CTE names are in scope."""

    __slots__ = ("ctes",)

    def __init__(self, ctes: frozenset[str]) -> None:
        self.ctes = ctes


class _Found:
    """What the walk collected so far."""

    __slots__ = ("leaves", "sensitive", "tables", "functions", "undecidable", "ctes", "depth", "nested", "bodies")

    def __init__(self) -> None:
        self.leaves: set[str] = set()
        self.sensitive = False
        self.tables: set[str] = set()
        self.functions: set[str] = set()
        self.undecidable: str | None = None
        self.ctes = _NO_CTES  # CTE names visible at the node being walked
        self.depth = 0  # how many texts deep (bodies, dynamic SQL) the walk is
        self.nested = 0  # how many nested texts were parsed
        # id(DoStmt / CreateFunctionStmt fields) -> that statement's own text, for the PL/pgSQL parser
        self.bodies: dict[int, str] | None = None

    def add(self, verb: str, obj: str | None = None) -> None:
        self.leaves.add(f"{verb} {obj}" if obj else verb)

    def undecide(self, reason: str) -> None:
        if self.undecidable is None:  # the first reason found is the one reported
            self.undecidable = reason


# A handler receives a statement node's fields, whether the node is in statement position,
# records its kinds and names and pushes the parts that may hold further statements onto the stack.
Handler = Callable[[dict[str, Any], bool, _Found, list[Any]], None]
Names = Callable[[dict[str, Any], _Found], None]

_HANDLERS: dict[str, Handler] = {}
_LEAVES: set[str] = set()  # filled while the handler table is built, then frozen into KNOWN_KINDS
_NO_FIELDS: frozenset[str] = frozenset()

# fields that hold a statement in statement position, per node type
_STMT_FIELDS: dict[str, frozenset[str]] = {
    "CopyStmt": frozenset({"query"}),
    "PrepareStmt": frozenset({"query"}),
    "DeclareCursorStmt": frozenset({"query"}),
    "CreateTableAsStmt": frozenset({"query"}),
    "ViewStmt": frozenset({"query"}),
    "RuleStmt": frozenset({"actions"}),
    "CreateFunctionStmt": frozenset({"sql_body"}),
}
# fields typed RangeVar (bare fields, no wrapper), per node type: always a relation, never a CTE
_RELATION_FIELDS: dict[str, frozenset[str]] = {
    node: frozenset(fields) for node, fields in {
        "AlterObjectDependsStmt": ("relation",), "AlterObjectSchemaStmt": ("relation",),
        "AlterOwnerStmt": ("relation",), "AlterPolicyStmt": ("table",), "AlterSeqStmt": ("sequence",),
        "AlterTableStmt": ("relation",), "ClusterStmt": ("relation",), "Constraint": ("pktable",),
        "CopyStmt": ("relation",), "CreatePolicyStmt": ("table",), "CreateSeqStmt": ("sequence",),
        "CreateStmt": ("relation",), "CreateTrigStmt": ("relation", "constrrel"), "DeleteStmt": ("relation",),
        "IndexStmt": ("relation",), "InsertStmt": ("relation",), "IntoClause": ("rel",), "MergeStmt": ("relation",),
        "PartitionCmd": ("name",), "PublicationTable": ("relation",), "RefreshMatViewStmt": ("relation",),
        "ReindexStmt": ("relation",), "RenameStmt": ("relation",), "RuleStmt": ("relation",),
        "TableLikeClause": ("relation",), "UpdateStmt": ("relation",), "VacuumRelation": ("relation",),
        "ViewStmt": ("view",),
    }.items()
}
# other typed fields that matter: field -> (struct type, whether its handler must run). A struct
# whose handler runs is pushed re-wrapped, so that it is handled when popped, under the CTE scope
# in force there; the others only carry relation fields and are expanded on the spot.
_TYPED_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "SelectStmt": {"larg": ("SelectStmt", True), "rarg": ("SelectStmt", True), "intoClause": ("IntoClause", False)},
    "CreateTableAsStmt": {"into": ("IntoClause", False)},
    "CallStmt": {"funccall": ("FuncCall", True)},
    "PublicationObjSpec": {"pubtable": ("PublicationTable", False)},
    "CreateForeignTableStmt": {"base": ("CreateStmt", False)},  # not its handler: no CREATE TABLE
    "AlterDefaultPrivilegesStmt": {"action": ("GrantStmt", True)},  # grants on objects not created yet
}
# fields not walked: a WITH clause is pushed by _push_scoped, with its scope; FOR UPDATE OF
# names FROM items (aliases, not tables), which are counted where they are defined
_IGNORED_FIELDS: dict[str, frozenset[str]] = {
    "SelectStmt": frozenset({"withClause", "lockingClause"}),
    **{node: frozenset({"withClause"}) for node in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")},
}
_NO_TYPED: dict[str, tuple[str, bool]] = {}
# node -> (every special field, statement fields, relation fields, typed fields); a special
# field in none of these is ignored
_SPECS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str], dict[str, tuple[str, bool]]]] = {
    node: (
        _STMT_FIELDS.get(node, _NO_FIELDS) | _RELATION_FIELDS.get(node, _NO_FIELDS)
        | frozenset(_TYPED_FIELDS.get(node, ())) | _IGNORED_FIELDS.get(node, _NO_FIELDS),
        _STMT_FIELDS.get(node, _NO_FIELDS), _RELATION_FIELDS.get(node, _NO_FIELDS), _TYPED_FIELDS.get(node, _NO_TYPED),
    )
    for node in {*_STMT_FIELDS, *_RELATION_FIELDS, *_TYPED_FIELDS, *_IGNORED_FIELDS}
}
# wrappers a statement list is nested in (BEGIN ATOMIC bodies): they keep the statement position
_LIST_WRAPPERS = frozenset({"List", "items"})


def _push_fields(node: str, fields: dict[str, Any], found: _Found, stack: list[Any]) -> None:
    spec = _SPECS.get(node)
    if spec is None:
        for value in fields.values():
            if type(value) is dict or type(value) is list:
                stack.append(value)
        return
    special, stmt_fields, relation_fields, typed = spec
    for key, value in fields.items():
        if type(value) is not dict and type(value) is not list:
            continue
        if key not in special:
            stack.append(value)
        elif key in stmt_fields:
            stack.append((value,))
        elif key in relation_fields:
            _add_relation(value, found)
        elif key in typed:
            struct, handled = typed[key]
            if handled:
                stack.append({struct: value})
            else:
                _push_fields(struct, value, found, stack)


def _push_scoped(node: str, fields: dict[str, Any], found: _Found, stack: list[Any]) -> None:
    """Push a statement's parts with its WITH clause's CTE names in scope where PostgreSQL sees them.

    The statement's own parts see every CTE; a CTE's query sees the CTEs listed before it, or
    all of them under WITH RECURSIVE; everything outside the statement sees none of them.
    """
    with_clause = fields.get("withClause")
    if type(with_clause) is not dict:
        _push_fields(node, fields, found, stack)
        return
    ctes: list[dict[str, Any]] = []
    for item in with_clause.get("ctes") or ():
        cte = item.get("CommonTableExpr") if type(item) is dict else None
        if type(cte) is dict:
            ctes.append(cte)
    names = [cte.get("ctename") or "" for cte in ctes]
    outer = found.ctes
    inner = outer | frozenset(names)
    # popped last: what follows the statement is back in the outer scope
    stack.append(_Scope(outer))
    _push_fields(node, fields, found, stack)
    stack.append(_Scope(inner))
    recursive = bool(with_clause.get("recursive"))
    for i, cte in enumerate(ctes):
        query = cte.get("ctequery")
        if type(query) is dict:
            stack.append(query)
            stack.append(_Scope(inner if recursive else outer | frozenset(names[:i])))


def _relation_name(fields: dict[str, Any]) -> str | None:
    name = fields.get("relname")
    if not name:
        return None
    schema = fields.get("schemaname")
    return f"{schema}.{name}" if schema else name


def _add_relation(fields: Any, found: _Found) -> None:
    if type(fields) is dict:
        name = _relation_name(fields)
        if name:
            found.tables.add(name)


def _names(items: Any) -> list[str]:
    """A list of String nodes (a qualified name) as strings."""
    if type(items) is not list:
        return []
    out = []
    for item in items:
        string = item.get("String") if type(item) is dict else None
        if type(string) is dict:
            out.append(string.get("sval", ""))
    return out


def _qualified(parts: list[str]) -> str:
    """schema.name from a name list, dropping a catalog prefix."""
    return ".".join(parts[-2:])


def _fixed(node: str, verb: str, obj: str | None = None, names: Names | None = None) -> None:
    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add(verb, obj)
        if names is not None:
            names(fields, found)
        _push_fields(node, fields, found, stack)

    _HANDLERS[node] = handle
    _LEAVES.add(f"{verb} {obj}" if obj else verb)


def _by_field(node: str, verb: str, field: str, table: dict[str, str], default: str | None = None,
              names: Names | None = None) -> None:
    """The object comes from an enum field; an unknown value still yields the bare verb."""

    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add(verb, table.get(fields.get(field, ""), default))
        if names is not None:
            names(fields, found)
        _push_fields(node, fields, found, stack)

    _HANDLERS[node] = handle
    _LEAVES.add(verb)
    _LEAVES.update(f"{verb} {w}" for w in table.values())
    if default:
        _LEAVES.add(f"{verb} {default}")


def _custom(node: str, *leaves: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[node] = fn
        _LEAVES.update(leaves)
        return fn

    return register


def _carrier(node: str) -> None:
    """A node with no kind of its own that holds typed relation fields."""

    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        _push_fields(node, fields, found, stack)

    _HANDLERS[node] = handle


for _node in ("Constraint", "PartitionCmd", "TableLikeClause", "VacuumRelation", "PublicationObjSpec"):
    _carrier(_node)


# -- names --
@_custom("RangeVar")
def _range_var(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    # a RangeVar node (not a typed field) is a FROM item or a utility statement's list entry
    name = fields.get("relname")
    if name:
        schema = fields.get("schemaname")
        if schema:
            found.tables.add(f"{schema}.{name}")
        elif name not in found.ctes:
            found.tables.add(name)


@_custom("FuncCall")
def _func_call(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    parts = _names(fields.get("funcname"))
    if parts:
        name = _qualified(parts)
        found.functions.add(name)
        special = _SQL_FUNCTIONS.get(parts[-1])
        if special is not None:
            special(name, fields, found)
    for key, value in fields.items():
        if key != "funcname" and (type(value) is dict or type(value) is list):
            stack.append(value)


def _trigger_function(fields: dict[str, Any], found: _Found) -> None:
    parts = _names(fields.get("funcname"))
    if parts:
        found.functions.add(_qualified(parts))


# Functions a statement wires into an object that will call them later (an operator, an
# aggregate, a cast, a type's I/O...): they count as called, like a trigger's function.
# DefElem names that name a function, per DefineStmt kind; None is for the other statements
_FUNCTION_OPTIONS: dict[str | None, frozenset[str]] = {
    "OBJECT_OPERATOR": frozenset({"function", "procedure", "restrict", "join"}),
    "OBJECT_AGGREGATE": frozenset({"sfunc", "finalfunc", "combinefunc", "serialfunc", "deserialfunc", "msfunc",
                                   "minvfunc", "mfinalfunc"}),
    "OBJECT_TYPE": frozenset({"input", "output", "receive", "send", "typmod_in", "typmod_out", "analyze",
                              "subscript", "canonical", "subtype_diff"}),
    "OBJECT_TSPARSER": frozenset({"start", "gettoken", "end", "lextypes", "headline"}),
    "OBJECT_TSTEMPLATE": frozenset({"init", "lexize"}),
    None: frozenset({"restrict", "join", "input", "output", "receive", "send", "typmod_in", "typmod_out", "analyze",
                     "subscript", "canonical", "subtype_diff", "handler", "validator"}),
}


def _option_functions(options: Any, kind: str | None, found: _Found) -> None:
    wanted = _FUNCTION_OPTIONS.get(kind)
    if wanted is None:
        return
    for option in options or ():
        elem = option.get("DefElem") if type(option) is dict else None
        if type(elem) is not dict or elem.get("defname") not in wanted:
            continue
        arg = elem.get("arg")
        if type(arg) is not dict:
            continue
        if "TypeName" in arg:
            parts = _names((arg["TypeName"] or {}).get("names"))
        elif "List" in arg:
            parts = _names((arg["List"] or {}).get("items"))
        else:
            parts = _names([arg])
        if parts and parts != ["none"]:  # RECEIVE = NONE and the like: no function
            found.functions.add(_qualified(parts))


def _define_functions(fields: dict[str, Any], found: _Found) -> None:
    _option_functions(fields.get("definition"), fields.get("kind"), found)


def _options_functions(field: str) -> Names:
    def names(fields: dict[str, Any], found: _Found) -> None:
        _option_functions(fields.get(field), None, found)

    return names


def _named_functions(*paths: tuple[str, ...]) -> Names:
    """Functions named by name lists at these paths (("func", "objname"), ("func_name",))."""

    def names(fields: dict[str, Any], found: _Found) -> None:
        for path in paths:
            node: Any = fields
            for key in path:
                node = node.get(key) if type(node) is dict else None
            parts = _names(node)
            if parts:
                found.functions.add(_qualified(parts))

    return names


@_custom("CreateOpClassItem")
def _opclass_item(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    if fields.get("itemtype") == 2:  # OPCLASS_ITEM_FUNCTION
        _named_functions(("name", "objname"))(fields, found)


# object types whose name list names a relation, or a relation followed by a member's name
_RELATION_OBJECTS = frozenset({
    "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE", "OBJECT_INDEX",
})
_MEMBER_OBJECTS = frozenset({
    "OBJECT_COLUMN", "OBJECT_TRIGGER", "OBJECT_RULE", "OBJECT_POLICY", "OBJECT_TABCONSTRAINT",
})


def _object_relation(objtype: Any, obj: Any) -> str | None:
    if type(obj) is not dict:
        return None
    if "List" in obj:
        parts = _names((obj["List"] or {}).get("items"))
    elif "String" in obj:
        parts = _names([obj])
    else:
        return None
    if objtype in _MEMBER_OBJECTS:
        parts = parts[:-1]
    elif objtype not in _RELATION_OBJECTS:
        return None
    return _qualified(parts) if parts else None


def _drop_names(fields: dict[str, Any], found: _Found) -> None:
    objtype = fields.get("removeType")
    if objtype in _RELATION_OBJECTS or objtype in _MEMBER_OBJECTS:
        for obj in fields.get("objects") or ():
            name = _object_relation(objtype, obj)
            if name:
                found.tables.add(name)


def _object_names(fields: dict[str, Any], found: _Found) -> None:
    name = _object_relation(fields.get("objtype"), fields.get("object"))
    if name:
        found.tables.add(name)


def _rename_names(fields: dict[str, Any], found: _Found) -> None:
    relation, new = fields.get("relation"), fields.get("newname")
    if fields.get("renameType") in _RELATION_OBJECTS and type(relation) is dict and new:
        schema = relation.get("schemaname")
        found.tables.add(f"{schema}.{new}" if schema else new)  # renamed in place: same schema


def _set_schema_names(fields: dict[str, Any], found: _Found) -> None:
    relation, schema = fields.get("relation"), fields.get("newschema")
    if fields.get("objectType") in _RELATION_OBJECTS and type(relation) is dict and schema and relation.get("relname"):
        found.tables.add(f"{schema}.{relation['relname']}")


def _index_names(fields: dict[str, Any], found: _Found) -> None:
    relation, index = fields.get("relation"), fields.get("idxname")
    if index and type(relation) is dict:
        schema = relation.get("schemaname")  # an index lives in its table's schema
        found.tables.add(f"{schema}.{index}" if schema else index)


# -- data --
@_custom("SelectStmt", "SELECT", "CREATE TABLE")
def _select(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    if top:
        found.add("SELECT")
    if "intoClause" in fields:  # SELECT ... INTO t creates a table
        found.add("CREATE", "TABLE")
    if "withClause" in fields:
        _push_scoped("SelectStmt", fields, found, stack)
    else:
        _push_fields("SelectStmt", fields, found, stack)


@_custom("InsertStmt", "INSERT", "UPDATE")
def _insert(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("INSERT")
    conflict = fields.get("onConflictClause")
    if isinstance(conflict, dict) and conflict.get("action") == "ONCONFLICT_UPDATE":
        found.add("UPDATE")  # INSERT ... ON CONFLICT DO UPDATE updates rows
    _push_scoped("InsertStmt", fields, found, stack)


def _dml(node: str, verb: str) -> None:
    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add(verb)
        _push_scoped(node, fields, found, stack)

    _HANDLERS[node] = handle
    _LEAVES.add(verb)


_dml("UpdateStmt", "UPDATE")
_dml("DeleteStmt", "DELETE")
_dml("MergeStmt", "MERGE")


@_custom("MergeWhenClause", *_MERGE_ACTIONS.values())
def _merge_action(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    action = _MERGE_ACTIONS.get(fields.get("commandType", ""))
    if action:  # MERGE ... THEN DELETE deletes rows, and so on
        found.add(action)
    _push_fields("MergeWhenClause", fields, found, stack)


@_custom("CopyStmt", "COPY", "COPY FROM", "COPY TO")
def _copy(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("COPY", "FROM" if fields.get("is_from") else "TO")
    _push_fields("CopyStmt", fields, found, stack)  # COPY (query) TO: the query runs


@_custom("ExplainStmt", "EXPLAIN")
def _explain(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("EXPLAIN")
    analyze = False
    for opt in fields.get("options", ()):
        elem = opt.get("DefElem") if isinstance(opt, dict) else None
        if not elem or elem.get("defname") != "analyze":
            continue
        arg = elem.get("arg")
        if arg is None:
            analyze = True
            continue
        # the value is a constant: ANALYZE 0 and ANALYZE 1 normalize alike
        found.sensitive = True
        analyze = not _is_false(arg)
    query = fields.get("query")
    if query is None:
        return
    if analyze:  # EXPLAIN ANALYZE executes the statement; plain EXPLAIN only plans it
        stack.append((query,))
    else:
        # planning still opens the tables and may run functions (constant folding): their
        # names count, the statement's kinds do not
        _names_only(query, found)


def _names_only(node: Any, found: _Found) -> None:
    sub = _Found()
    sub.tables, sub.functions, sub.depth, sub.bodies = found.tables, found.functions, found.depth, found.bodies
    sub.nested = found.nested
    _walk([node], sub)
    found.nested = sub.nested
    found.sensitive = found.sensitive or sub.sensitive
    if sub.undecidable is not None:
        found.undecide(sub.undecidable)


def _is_false(arg: Any) -> bool:
    if not isinstance(arg, dict):
        return False
    if "Integer" in arg:
        return not arg["Integer"].get("ival", 0)
    if "String" in arg:
        return str(arg["String"].get("sval", "")).lower() in _FALSE_WORDS
    if "Boolean" in arg:
        return not arg["Boolean"].get("boolval", False)
    return False  # unknown spelling: assume it executes (fail closed)


@_custom("CreateFunctionStmt", "CREATE FUNCTION", "CREATE PROCEDURE")
def _create_function(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    procedure = bool(fields.get("is_procedure"))
    found.add("CREATE", "PROCEDURE" if procedure else "FUNCTION")
    statement = found.bodies.pop(id(fields), None) if found.bodies else None
    language: str | None = None
    body: list[str] | None = None
    for opt in fields.get("options", ()):
        elem = opt.get("DefElem") if isinstance(opt, dict) else None
        if not elem:
            continue
        if elem.get("defname") == "language":
            language = _string_value(elem.get("arg"))
        elif elem.get("defname") == "as":
            arg = elem.get("arg")
            body = _names((arg.get("List") or {}).get("items")) if isinstance(arg, dict) and "List" in arg else []
    if body is not None:
        found.sensitive = True  # two bodies differing only in their text share a shape
        label = f"{'procedure' if procedure else 'function'} {_qualified(_names(fields.get('funcname')))}"
        _analyse_body(found, label, language, body, statement, fields)
    # a SQL-standard body (BEGIN ATOMIC ... END, RETURN expr) is parsed already: its statements count
    _push_fields("CreateFunctionStmt", fields, found, stack)


@_custom("DoStmt", "DO")
def _do(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("DO")
    found.sensitive = True
    statement = found.bodies.pop(id(fields), None) if found.bodies else None
    language, body = "plpgsql", None
    for arg in fields.get("args", ()):
        elem = arg.get("DefElem") if isinstance(arg, dict) else None
        if not elem:
            continue
        if elem.get("defname") == "language":
            language = _string_value(elem.get("arg")) or ""
        elif elem.get("defname") == "as":
            body = _string_value(elem.get("arg"))
    if body is not None:
        _analyse_body(found, "a DO block", language, [body], statement, None)


def _string_value(node: Any) -> str | None:
    string = node.get("String") if isinstance(node, dict) else None
    return string.get("sval", "") if isinstance(string, dict) else None


@_custom("TransactionStmt", *{f"{v} {o}" if o else v for v, o in _TRANSACTION.values()})
def _transaction(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    verb, obj = _TRANSACTION.get(fields.get("kind", ""), ("BEGIN", None))
    found.add(verb, obj)


@_custom("VariableSetStmt", "SET", "RESET", *(f"{v} {o}" for v in ("SET", "RESET") for o in _SET_NAMES.values()))
def _set(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    verb = "RESET" if fields.get("kind") in ("VAR_RESET", "VAR_RESET_ALL") else "SET"
    found.add(verb, _SET_NAMES.get(fields.get("name", "")))


def _alter_set(node: str, obj: str) -> None:
    """ALTER DATABASE / ROLE ... SET role = v: a default for later sessions, counted as the SET too."""

    @_custom(node, f"ALTER {obj}")
    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add("ALTER", obj)
        setstmt = fields.get("setstmt")
        # emitted without its node-type key; only the settings that have a kind of their own count
        if isinstance(setstmt, dict) and setstmt.get("name") in _SET_NAMES:
            _set(setstmt, top, found, stack)
        _push_fields(node, {k: v for k, v in fields.items() if k != "setstmt"}, found, stack)


_alter_set("AlterDatabaseSetStmt", "DATABASE")
_alter_set("AlterRoleSetStmt", "ROLE")


@_custom("VacuumStmt", "VACUUM", "ANALYZE")
def _vacuum(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("VACUUM" if fields.get("is_vacuumcmd") else "ANALYZE")
    _push_fields("VacuumStmt", fields, found, stack)  # the tables, in VacuumRelation nodes


@_custom("FetchStmt", "FETCH", "MOVE")
def _fetch(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("MOVE" if fields.get("ismove") else "FETCH")


def _grant(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("GRANT" if fields.get("is_grant") else "REVOKE")
    _push_fields("GrantStmt", fields, found, stack)  # GRANT ... ON TABLE t: RangeVar nodes


_HANDLERS["GrantStmt"] = _HANDLERS["GrantRoleStmt"] = _grant
_LEAVES.update(("GRANT", "REVOKE"))


@_custom("RenameStmt", *(f"ALTER {w}" for w in OBJECT_WORDS.values()))
def _rename(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    rename = fields.get("renameType", "")
    # RENAME COLUMN / CONSTRAINT / ATTRIBUTE are ALTER of the relation that holds them
    if rename in ("OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_ATTRIBUTE"):
        rename = fields.get("relationType", rename)
    found.add("ALTER", OBJECT_WORDS.get(rename))
    _rename_names(fields, found)
    _push_fields("RenameStmt", fields, found, stack)


# ObjectType-driven statements
_by_field("DropStmt", "DROP", "removeType", OBJECT_WORDS, names=_drop_names)
_by_field("AlterTableStmt", "ALTER", "objtype", OBJECT_WORDS)
_by_field("AlterTableMoveAllStmt", "ALTER", "objtype", OBJECT_WORDS)
_by_field("AlterObjectSchemaStmt", "ALTER", "objectType", OBJECT_WORDS, names=_set_schema_names)

_by_field("AlterOwnerStmt", "ALTER", "objectType", OBJECT_WORDS)
_by_field("AlterObjectDependsStmt", "ALTER", "objectType", OBJECT_WORDS)
_by_field("AlterFunctionStmt", "ALTER", "objtype", OBJECT_WORDS, "FUNCTION")
_by_field("CreateTableAsStmt", "CREATE", "objtype", OBJECT_WORDS, "TABLE")  # query counts too
_by_field("DefineStmt", "CREATE", "kind", OBJECT_WORDS, names=_define_functions)
_by_field("ReindexStmt", "REINDEX", "kind", _REINDEX)

_FIXED: tuple[tuple[str, str, str | None], ...] = (
    ("TruncateStmt", "TRUNCATE", None),
    ("CallStmt", "CALL", None),
    ("PrepareStmt", "PREPARE", None),  # its query counts too
    ("ExecuteStmt", "EXECUTE", None),
    ("DeallocateStmt", "DEALLOCATE", None),
    ("DeclareCursorStmt", "DECLARE", None),  # its query counts too
    ("ClosePortalStmt", "CLOSE", None),
    ("ListenStmt", "LISTEN", None),
    ("NotifyStmt", "NOTIFY", None),
    ("UnlistenStmt", "UNLISTEN", None),
    ("LockStmt", "LOCK", None),
    ("VariableShowStmt", "SHOW", None),
    ("ConstraintsSetStmt", "SET", "CONSTRAINTS"),
    ("ClusterStmt", "CLUSTER", None),
    ("CheckPointStmt", "CHECKPOINT", None),
    ("DiscardStmt", "DISCARD", None),
    ("LoadStmt", "LOAD", None),
    ("RefreshMatViewStmt", "REFRESH", "MATERIALIZED VIEW"),
    ("CommentStmt", "COMMENT", None),
    ("SecLabelStmt", "SECURITY LABEL", None),
    ("ImportForeignSchemaStmt", "IMPORT", "FOREIGN SCHEMA"),
    ("ReassignOwnedStmt", "REASSIGN", "OWNED"),
    ("DropOwnedStmt", "DROP", "OWNED"),
    ("AlterSystemStmt", "ALTER", "SYSTEM"),
    ("AlterDefaultPrivilegesStmt", "ALTER", "DEFAULT PRIVILEGES"),
    # CREATE
    ("CreateStmt", "CREATE", "TABLE"),
    ("CreateForeignTableStmt", "CREATE", "FOREIGN TABLE"),
    ("ViewStmt", "CREATE", "VIEW"),  # the view's query counts too
    ("IndexStmt", "CREATE", "INDEX"),
    ("CreateSeqStmt", "CREATE", "SEQUENCE"),
    ("CreateSchemaStmt", "CREATE", "SCHEMA"),  # its embedded CREATEs count too
    ("CreatedbStmt", "CREATE", "DATABASE"),
    ("CreateRoleStmt", "CREATE", "ROLE"),  # USER and GROUP are ROLE
    ("CreateTrigStmt", "CREATE", "TRIGGER"),
    ("CreateEventTrigStmt", "CREATE", "EVENT TRIGGER"),
    ("RuleStmt", "CREATE", "RULE"),  # the rule's actions count too
    ("CreateDomainStmt", "CREATE", "DOMAIN"),
    ("CreateEnumStmt", "CREATE", "TYPE"),
    ("CreateRangeStmt", "CREATE", "TYPE"),
    ("CompositeTypeStmt", "CREATE", "TYPE"),
    ("CreateExtensionStmt", "CREATE", "EXTENSION"),
    ("CreateFdwStmt", "CREATE", "FOREIGN DATA WRAPPER"),
    ("CreateForeignServerStmt", "CREATE", "SERVER"),
    ("CreateUserMappingStmt", "CREATE", "USER MAPPING"),
    ("CreatePolicyStmt", "CREATE", "POLICY"),
    ("CreatePublicationStmt", "CREATE", "PUBLICATION"),
    ("CreateSubscriptionStmt", "CREATE", "SUBSCRIPTION"),
    ("CreateTableSpaceStmt", "CREATE", "TABLESPACE"),
    ("CreateAmStmt", "CREATE", "ACCESS METHOD"),
    ("CreateCastStmt", "CREATE", "CAST"),
    ("CreateConversionStmt", "CREATE", "CONVERSION"),
    ("CreateOpClassStmt", "CREATE", "OPERATOR CLASS"),
    ("CreateOpFamilyStmt", "CREATE", "OPERATOR FAMILY"),
    ("CreatePLangStmt", "CREATE", "LANGUAGE"),
    ("CreateStatsStmt", "CREATE", "STATISTICS"),
    ("CreateTransformStmt", "CREATE", "TRANSFORM"),
    # ALTER
    ("AlterRoleStmt", "ALTER", "ROLE"),
    ("AlterDatabaseStmt", "ALTER", "DATABASE"),
    ("AlterDatabaseRefreshCollStmt", "ALTER", "DATABASE"),
    ("AlterSeqStmt", "ALTER", "SEQUENCE"),
    ("AlterDomainStmt", "ALTER", "DOMAIN"),
    ("AlterEnumStmt", "ALTER", "TYPE"),
    ("AlterTypeStmt", "ALTER", "TYPE"),
    ("AlterEventTrigStmt", "ALTER", "EVENT TRIGGER"),
    ("AlterExtensionStmt", "ALTER", "EXTENSION"),
    ("AlterExtensionContentsStmt", "ALTER", "EXTENSION"),
    ("AlterFdwStmt", "ALTER", "FOREIGN DATA WRAPPER"),
    ("AlterForeignServerStmt", "ALTER", "SERVER"),
    ("AlterUserMappingStmt", "ALTER", "USER MAPPING"),
    ("AlterPolicyStmt", "ALTER", "POLICY"),
    ("AlterPublicationStmt", "ALTER", "PUBLICATION"),
    ("AlterSubscriptionStmt", "ALTER", "SUBSCRIPTION"),
    ("AlterTableSpaceOptionsStmt", "ALTER", "TABLESPACE"),
    ("AlterCollationStmt", "ALTER", "COLLATION"),
    ("AlterOpFamilyStmt", "ALTER", "OPERATOR FAMILY"),
    ("AlterOperatorStmt", "ALTER", "OPERATOR"),
    ("AlterStatsStmt", "ALTER", "STATISTICS"),
    ("AlterTSConfigurationStmt", "ALTER", "TEXT SEARCH CONFIGURATION"),
    ("AlterTSDictionaryStmt", "ALTER", "TEXT SEARCH DICTIONARY"),
    # DROP forms with their own node
    ("DropRoleStmt", "DROP", "ROLE"),
    ("DropdbStmt", "DROP", "DATABASE"),
    ("DropSubscriptionStmt", "DROP", "SUBSCRIPTION"),
    ("DropTableSpaceStmt", "DROP", "TABLESPACE"),
    ("DropUserMappingStmt", "DROP", "USER MAPPING"),
)
# what some of them name besides their RangeVars
_FIXED_NAMES: dict[str, Names] = {
    "CommentStmt": _object_names,
    "SecLabelStmt": _object_names,
    "IndexStmt": _index_names,
    "CreateTrigStmt": _trigger_function,
    "CreateEventTrigStmt": _trigger_function,
    "CreateCastStmt": _named_functions(("func", "objname")),
    "CreateTransformStmt": _named_functions(("fromsql", "objname"), ("tosql", "objname")),
    "CreateConversionStmt": _named_functions(("func_name",)),
    "CreatePLangStmt": _named_functions(("plhandler",), ("plinline",), ("plvalidator",)),
    "CreateAmStmt": _named_functions(("handler_name",)),
    "CreateFdwStmt": _options_functions("func_options"),
    "AlterFdwStmt": _options_functions("func_options"),
    "AlterOperatorStmt": _options_functions("options"),
    "AlterTypeStmt": _options_functions("options"),
    "CreateRangeStmt": _options_functions("params"),
}
for _node, _verb, _obj in _FIXED:
    _fixed(_node, _verb, _obj, _FIXED_NAMES.get(_node))
del _node, _verb, _obj

# Bare verbs of every kind a rule could name: DROP, CREATE, ... and the object-less ones.
VERBS: frozenset[str] = frozenset(verb_of(k) for k in _LEAVES)
# Every kind a statement can produce; rule entries are checked against it.
KNOWN_KINDS: frozenset[str] = frozenset(_LEAVES) | VERBS | frozenset(
    # CREATE / ALTER / DROP of every object type, even the ones no handler above emits today
    f"{v} {w}" for v in ("CREATE", "ALTER", "DROP") for w in OBJECT_WORDS.values()
)
del _LEAVES


# --------------------------------------------------------------------------------------------
# SQL hidden in string constants: bodies, dynamic SQL, SQL-running functions
#
# Everything here reads the contents of a literal, so the caller marks the analysis
# literal-sensitive: the shape cache must never hand it to a text differing only in constants.


def _walk_text(sql: str, found: _Found, top: bool, what: str) -> None:
    """Analyse ``sql`` (nested in the string being analysed) into ``found``."""
    if not _may_nest(found, what):
        return
    try:
        stmts = _parse(sql)
    except _pg.ParseError as exc:
        found.undecide(f"{what} does not parse ({_parse_message(exc)}) and cannot be analysed")
        return
    _walk_nested(stmts, found, sql, top)


def _may_nest(found: _Found, what: str) -> bool:
    if found.depth >= _MAX_DEPTH:
        found.undecide(f"{what} is nested more than {_MAX_DEPTH} levels deep and cannot be analysed")
        return False
    found.nested += 1
    if found.nested > _MAX_NESTED:
        found.undecide(f"{what} cannot be analysed: the string holds more than {_MAX_NESTED} nested statements "
                       "and expressions")
        return False
    return True


def _walk_nested(stmts: list[Any], found: _Found, sql: str, top: bool) -> None:
    saved = found.ctes
    found.ctes = _NO_CTES  # a separate text: the CTEs around it are not in scope
    found.depth += 1
    try:
        _collect(stmts, found, sql, top)
    finally:
        found.depth -= 1
        found.ctes = saved


def _parse_message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else "syntax error"


# types a constant may be cast to and keep its text exactly (no length: varchar(3) truncates)
_TEXT_TYPES = frozenset({"text", "varchar"})
_REGCLASS_TYPES = frozenset({"text", "varchar", "regclass", "name"})


def _constant_text(node: Any, types: frozenset[str]) -> str | None:
    """The string a constant expression evaluates to, or None when it is not one."""
    while type(node) is dict:
        const = node.get("A_Const")
        if type(const) is dict:
            sval = const.get("sval")
            return sval.get("sval", "") if type(sval) is dict else None
        cast = node.get("TypeCast")
        if type(cast) is not dict:
            return None
        type_name = cast.get("typeName") or {}
        if any(type_name.get(k) for k in ("typmods", "arrayBounds", "setof", "pct_type")):
            return None
        parts = _names(type_name.get("names"))
        if not parts or parts[-1] not in types or parts[:-1] not in ([], ["pg_catalog"]):
            return None
        node = cast.get("arg")
    return None


def _constant_kind(node: Any) -> str | None:
    """"text" or "bool" for a constant argument, None when computed (overload resolution by hand)."""
    if type(node) is not dict:
        return None
    const = node.get("A_Const")
    if type(const) is dict:
        return "text" if "sval" in const else "bool" if "boolval" in const else None
    cast = node.get("TypeCast")
    if type(cast) is dict:
        parts = _names((cast.get("typeName") or {}).get("names"))
        if parts and parts[-1] in ("bool", "boolean"):
            return "bool"
        if _constant_text(node, _TEXT_TYPES) is not None:
            return "text"
    return None


_UNKNOWN = object()  # which argument holds the SQL cannot be told
_NO_SQL = object()  # this form of the function takes no SQL

# Where the SQL argument is, from the (positional) arguments: an index, _UNKNOWN or _NO_SQL.
SqlPosition = Callable[[list[Any]], Any]


def _at(index: int) -> SqlPosition:
    return lambda args: index if len(args) > index else _UNKNOWN


def _dblink_position(args: list[Any]) -> Any:
    # dblink / dblink_exec ([connname or connstr text,] sql text [, fail_on_error bool])
    if len(args) == 1:
        return 0
    if len(args) == 3:
        return 1
    if len(args) == 2:
        kind = _constant_kind(args[1])  # (sql, bool) or (conn, sql): a text second argument is SQL
        return 1 if kind == "text" else 0 if kind == "bool" else _UNKNOWN
    return _UNKNOWN


def _dblink_open_position(args: list[Any]) -> Any:
    # dblink_open ([connname text,] cursorname text, sql text [, fail_on_error bool])
    if len(args) == 2:
        return 1
    if len(args) == 4:
        return 2
    if len(args) == 3:
        kind = _constant_kind(args[2])
        return 2 if kind == "text" else 1 if kind == "bool" else _UNKNOWN
    return _UNKNOWN


def _sql_argument(fields: dict[str, Any], position: SqlPosition, param: str | None) -> Any:
    """The argument node holding the SQL, or _UNKNOWN / _NO_SQL."""
    if fields.get("func_variadic"):  # VARIADIC array: the arguments are not listed
        return _UNKNOWN
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for arg in fields.get("args") or ():
        named_arg = arg.get("NamedArgExpr") if type(arg) is dict else None
        if type(named_arg) is dict:
            named[named_arg.get("name") or ""] = named_arg.get("arg")
        else:
            positional.append(arg)
    if named:
        if param is not None and param in named:
            return named[param]
        if param is None:  # no parameter names (dblink): named notation cannot match it
            return _UNKNOWN
    where = position(positional)
    if type(where) is int:
        return positional[where] if where < len(positional) else _UNKNOWN
    return where


SqlFunction = Callable[[str, dict[str, Any], _Found], None]


def _runs_sql(position: SqlPosition, param: str | None = None) -> SqlFunction:
    def check(name: str, fields: dict[str, Any], found: _Found) -> None:
        found.sensitive = True  # f('DROP ...') and f($1) share a shape
        arg = _sql_argument(fields, position, param)
        if arg is _NO_SQL:
            return
        if arg is _UNKNOWN:
            found.undecide(f"which argument of {name} holds SQL text cannot be told, so it cannot be analysed")
            return
        text = _constant_text(arg, _TEXT_TYPES)
        if text is None:
            found.undecide(f"the SQL text passed to {name} is computed and cannot be analysed")
        else:
            _walk_text(text, found, True, f"the SQL text passed to {name}")

    return check


def _reads_table(name: str, fields: dict[str, Any], found: _Found) -> None:
    found.sensitive = True
    arg = _sql_argument(fields, _at(0), "tbl")
    text = _constant_text(arg, _REGCLASS_TYPES) if arg is not _UNKNOWN else None
    table = _regclass_name(text) if text is not None else None
    if table is None:
        found.undecide(f"the table passed to {name} is not a constant name and cannot be analysed")
    else:
        found.tables.add(table)


def _sets_config(name: str, fields: dict[str, Any], found: _Found) -> None:
    """set_config('role', ...) is SET ROLE: the setting's name decides the kind."""
    found.sensitive = True
    arg = _sql_argument(fields, _at(0), None)
    setting = _constant_text(arg, _TEXT_TYPES) if arg is not _UNKNOWN else None
    if setting is None:
        found.undecide(f"the setting passed to {name} is computed and cannot be analysed")
        return
    obj = _SET_NAMES.get(setting.translate(_ASCII_LOWER))  # setting names are case-insensitive
    if obj is not None:
        found.add("SET", obj)


def _reads_every_table(scope: str) -> SqlFunction:
    def check(name: str, fields: dict[str, Any], found: _Found) -> None:
        found.undecide(f"{name} reads every table of {scope}, which cannot be listed")

    return check


# Functions that run SQL given as text or read tables not named as relations, by the last part
# of their name: a function of that name in any schema is taken to be this one (fail closed).
_SQL_FUNCTIONS: dict[str, SqlFunction] = {
    "query_to_xml": _runs_sql(_at(0), "query"),
    "query_to_xmlschema": _runs_sql(_at(0), "query"),
    "query_to_xml_and_xmlschema": _runs_sql(_at(0), "query"),
    "ts_stat": _runs_sql(_at(0), "query"),
    # ts_rewrite(query tsquery, select text); the 3-argument form takes tsqueries only
    "ts_rewrite": _runs_sql(lambda args: 1 if len(args) == 2 else _NO_SQL if len(args) == 3 else _UNKNOWN),
    "dblink": _runs_sql(_dblink_position),
    "dblink_exec": _runs_sql(_dblink_position),
    "dblink_send_query": _runs_sql(lambda args: 1 if len(args) == 2 else _UNKNOWN),
    "dblink_open": _runs_sql(_dblink_open_position),
    "pg_background_launch": _runs_sql(_at(0), "sql"),
    "set_config": _sets_config,
    "table_to_xml": _reads_table,
    "table_to_xmlschema": _reads_table,
    "table_to_xml_and_xmlschema": _reads_table,
    **{f"schema_to_xml{s}": _reads_every_table("a schema") for s in ("", "schema", "_and_xmlschema")},
    **{f"database_to_xml{s}": _reads_every_table("the database") for s in ("", "schema", "_and_xmlschema")},
}

_NAMEDATALEN = 64
_DIGITS = re.compile(r"\s*[0-9]+\s*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SPACE = " \t\n\r\f\v"


def _identifier(name: str) -> str:
    """Truncate to NAMEDATALEN - 1 bytes on a character boundary, as PostgreSQL does."""
    data = name.encode()
    if len(data) < _NAMEDATALEN:
        return name
    return data[:_NAMEDATALEN - 1].decode("utf-8", "ignore")


def _regclass_name(text: str) -> str | None:
    """A regclass input string as schema.name (PostgreSQL's identifier rules); None for an OID or junk."""
    if _DIGITS.fullmatch(text) or text.strip(_SPACE) == "-":
        return None
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i < n and text[i] == '"':
            chunks = []
            j = i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                if text.startswith('"', k + 1):  # "" is a quote inside a quoted name
                    chunks.append(text[j:k + 1])
                    j = k + 2
                    continue
                chunks.append(text[j:k])
                i = k + 1
                break
            name = "".join(chunks)
        else:
            j = i
            while i < n and text[i] != "." and text[i] not in _SPACE:
                i += 1
            name = text[j:i].translate(_ASCII_LOWER)  # unquoted: ASCII letters fold (UTF-8 server)
        if not name:
            return None
        parts.append(_identifier(name))
        while i < n and text[i] in _SPACE:
            i += 1
        if i == n:
            break
        if text[i] != ".":
            return None
        i += 1
    return _qualified(parts) if len(parts) <= 3 else None


# -- bodies --

def _analyse_body(found: _Found, label: str, language: str | None, body: list[str],
                  statement: str | None, fields: dict[str, Any] | None) -> None:
    """A DO block's or function's body given as a string: what it runs counts."""
    if language is None:
        found.undecide(f"{label} has a body but no LANGUAGE and cannot be analysed")
    elif language not in ("sql", "plpgsql"):
        # PostgreSQL matches language names exactly: 'SQL' is not sql
        found.undecide(f"{label} is written in language {language}, which cannot be analysed")
    elif len(body) != 1:
        found.undecide(f"{label} has a body in {len(body)} parts, which cannot be analysed")
    elif language == "sql":
        _walk_text(body[0], found, True, f"the body of {label}")
    else:
        if statement is None:  # not a top-level statement of its text (cannot happen): rebuild it
            tag = _dollar_tag(body[0])
            statement = f"DO {tag}{body[0]}{tag}"
        _plpgsql_body(found, label, body[0], statement, fields)


def _dollar_tag(body: str) -> str:
    n = 0
    while f"$wg{n}$" in body:
        n += 1
    return f"$wg{n}$"


_DUMP_WORD = re.compile(r"(?i)dump")
# libpg_query fakes the catalog for a function's signature; these errors are its limits, not the body's
_SIGNATURE_LIMITS = re.compile(r"VARIADIC parameter must be an array|Not implemented")


def _plpgsql_body(found: _Found, label: str, body: str, statement: str, fields: dict[str, Any] | None) -> None:
    if not _may_nest(found, f"the body of {label}"):
        return
    if "#" in body and _DUMP_WORD.search(body) and _has_dump_option(body):
        found.undecide(f"{label} uses '#option dump', which is refused (the PL/pgSQL parser would print it "
                       "to the gateway's output)")
        return
    try:
        functions = _decode(_pg.parse_plpgsql_json(statement))
    except Exception as exc:
        message = _parse_message(exc)
        retry = _plain_signature(fields, body) if fields is not None and _SIGNATURE_LIMITS.search(message) else None
        try:
            if retry is None:
                raise
            functions = _decode(_pg.parse_plpgsql_json(retry))
        except Exception:
            found.undecide(f"{label} does not parse as PL/pgSQL ({message}) and cannot be analysed")
            return
    found.depth += 1
    try:
        _walk_plpgsql(functions, found, label)
    finally:
        found.depth -= 1


def _has_dump_option(body: str) -> bool:
    """Whether a PL/pgSQL body holds `#option dump` (made of tokens: comments may sit between)."""
    try:
        tokens = _pg.scan(body)
    except Exception:
        return True  # cannot tell: assume it does
    words = [body[t.start:t.end + 1].strip('"').lower() for t in tokens if t.name not in ("C_COMMENT", "SQL_COMMENT")]
    return any(words[i:i + 3] == ["#", "option", "dump"] for i in range(len(words) - 2))


def _plain_signature(fields: dict[str, Any], body: str) -> str | None:
    """The function rebuilt with a signature libpg_query can compile: same parameter names and modes,
    unqualified types, VARIADIC as a plain array, %TYPE as an unknown (row) type."""
    params = []
    for param in fields.get("parameters") or ():
        spec = param.get("FunctionParameter") if type(param) is dict else None
        if type(spec) is not dict:
            return None
        mode = {"FUNC_PARAM_OUT": "OUT ", "FUNC_PARAM_INOUT": "INOUT ", "FUNC_PARAM_TABLE": "OUT "}.get(
            spec.get("mode", ""), "")
        name = spec.get("name")
        params.append(f"{mode}{_quote_ident(name) + ' ' if name else ''}{_plain_type(spec.get('argType'))}")
    returns = fields.get("returnType")
    result = ""
    if type(returns) is dict:
        result = f" RETURNS {'SETOF ' if returns.get('setof') else ''}{_plain_type(returns)}"
    kind = "PROCEDURE" if fields.get("is_procedure") else "FUNCTION"
    tag = _dollar_tag(body)
    return f"CREATE {kind} wiregate_check({', '.join(params)}){result} LANGUAGE plpgsql AS {tag}{body}{tag}"


def _plain_type(type_name: Any) -> str:
    if type(type_name) is not dict:
        return '"wiregate_unknown"'
    parts = _names(type_name.get("names"))
    base = '"wiregate_unknown"' if type_name.get("pct_type") or not parts else _quote_ident(parts[-1])
    return base + "[]" * len(type_name.get("arrayBounds") or ())


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# PL/pgSQL statements whose field holds a string to EXECUTE: the rest of the statement is ordinary
_PL_DYNAMIC: dict[str, str] = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_open": "dynquery",
    "PLpgSQL_stmt_return_query": "dynquery",
}
_PL_KINDS: dict[str, str] = {"PLpgSQL_stmt_commit": "COMMIT", "PLpgSQL_stmt_rollback": "ROLLBACK"}
# PLpgSQL_expr.parseMode values (PostgreSQL's RawParseMode)
_MODE_STATEMENT = 0
_MODE_EXPRESSION = 2
_MODE_ASSIGNMENTS = (3, 4, 5)  # target, target.field, target.field.field := expression


def _walk_plpgsql(tree: Any, found: _Found, label: str) -> None:
    stack = [tree]
    while stack:
        node = stack.pop()
        if type(node) is list:
            stack.extend(node)
            continue
        if type(node) is not dict:
            continue
        for key, value in node.items():
            if key == "PLpgSQL_expr":
                if type(value) is dict:
                    _pl_expression(value, found, label)
            elif type(value) is dict:
                kind = _PL_KINDS.get(key)
                if kind is not None:
                    found.add(kind)
                dynamic = _PL_DYNAMIC.get(key)
                if dynamic is None:
                    stack.append(value)
                    continue
                for field, part in value.items():
                    if field == dynamic:
                        _pl_dynamic(part, found, label)
                    elif type(part) is dict or type(part) is list:
                        stack.append(part)
            elif type(value) is list:
                stack.append(value)


def _pl_expression(expr: dict[str, Any], found: _Found, label: str) -> None:
    query = expr.get("query") or ""
    mode = expr.get("parseMode", _MODE_STATEMENT)
    if mode == _MODE_STATEMENT:
        _walk_text(query, found, True, f"a statement in {label}")
    elif mode == _MODE_EXPRESSION:
        # PostgreSQL evaluates it as a SELECT of the expression (FROM / WHERE may follow)
        _walk_text("SELECT " + query, found, False, f"an expression in {label}")
    elif mode in _MODE_ASSIGNMENTS:
        _pl_assignment(query, found, label)
    else:
        found.undecide(f"a PL/pgSQL expression of an unknown kind in {label} cannot be analysed")


def _pl_assignment(query: str, found: _Found, label: str) -> None:
    """``target[subscripts] := value``: the subscripts and the value are expressions."""
    try:
        tokens = _pg.scan(query)
    except Exception:
        tokens = []
    depth = 0
    bracket: int | None = None
    for token in tokens:
        name = token.name
        if name in ("ASCII_40", "ASCII_91"):  # ( [
            if name == "ASCII_91" and depth == 0 and bracket is None:
                bracket = token.start
            depth += 1
        elif name in ("ASCII_41", "ASCII_93"):
            depth -= 1
        elif depth == 0 and name in ("COLON_EQUALS", "ASCII_61"):  # := or =
            what = f"an assignment in {label}"
            if bracket is not None:
                _walk_text("SELECT _" + query[bracket:token.start], found, False, what)
            _walk_text("SELECT " + query[token.end + 1:], found, False, what)
            return
    found.undecide(f"an assignment in {label} cannot be analysed")


def _pl_dynamic(part: Any, found: _Found, label: str) -> None:
    """The string expression of an EXECUTE: analysed when it is a single constant."""
    expr = part.get("PLpgSQL_expr") if type(part) is dict else None
    if type(expr) is not dict:
        return
    query = expr.get("query") or ""
    what = f"dynamic SQL in {label}"
    if not _may_nest(found, what):
        return
    try:
        stmts = _parse("SELECT " + query)
    except _pg.ParseError as exc:
        found.undecide(f"{what} does not parse ({_parse_message(exc)}) and cannot be analysed")
        return
    text = _select_constant(stmts)
    _walk_nested(stmts, found, "SELECT " + query, False)  # a computed string's own calls count
    if text is None:
        found.undecide(f"dynamic SQL (EXECUTE of a computed string) in {label} cannot be analysed")
    else:
        _walk_text(text, found, True, what)


def _select_constant(stmts: list[Any]) -> str | None:
    """The string of ``SELECT <constant>``, or None when the statement is anything more."""
    if len(stmts) != 1 or type(stmts[0]) is not dict:
        return None
    stmt = stmts[0].get("stmt")
    select = stmt.get("SelectStmt") if type(stmt) is dict else None
    if type(select) is not dict or set(select) - {"targetList", "limitOption", "op"}:
        return None
    targets = select.get("targetList") or []
    if len(targets) != 1 or type(targets[0]) is not dict:
        return None
    target = targets[0].get("ResTarget")
    return _constant_text(target.get("val"), _TEXT_TYPES) if type(target) is dict else None


# Node types that can never hold a statement or a name: the walk does not descend into them.
_LEAF_NODES = frozenset({
    "String", "Integer", "Float", "Boolean", "BitString", "A_Const", "A_Star", "ColumnRef",
    "ParamRef", "RoleSpec", "TypeName",
})


def _skip(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    pass


def _collect(stmts: list[Any], found: _Found, sql: str, top: bool = True) -> None:
    """Walk the statements of one text (``stmts`` from its parse tree) into ``found``."""
    stack: list[Any] = []
    source: bytes | None = None
    for raw in stmts:
        if type(raw) is not dict:
            continue
        stmt = raw.get("stmt")
        if type(stmt) is dict and ("DoStmt" in stmt or "CreateFunctionStmt" in stmt):
            body = stmt.get("DoStmt") or stmt.get("CreateFunctionStmt")
            if type(body) is dict:
                # the PL/pgSQL parser takes the statement itself (libpg_query locations are bytes)
                if source is None:
                    source = sql.encode()
                start, length = raw.get("stmt_location", 0), raw.get("stmt_len", 0)
                if found.bodies is None:
                    found.bodies = {}
                found.bodies[id(body)] = source[start:start + length if length else len(source)].decode()
        stack.append((stmt,) if top else stmt)
    _walk(stack, found)


def _walk(stack: list[Any], found: _Found) -> None:
    """Walk JSON parse-tree nodes with an explicit stack (deep trees must not hit the recursion limit)."""
    handlers = _WALK_TABLE
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        kind = type(node)
        top = kind is tuple
        if top:
            node = node[0]
            kind = type(node)
        if kind is dict:
            for key, value in node.items():
                handler = handlers.get(key)
                if handler is not None and type(value) is dict:
                    handler(value, top, found, stack)
                elif type(value) is dict or type(value) is list:
                    push((value,) if top and key in _LIST_WRAPPERS else value)
        elif kind is list:
            for value in node:
                if type(value) is dict or type(value) is list:
                    push((value,) if top else value)
        elif kind is _Scope:
            found.ctes = node.ctes


_WALK_TABLE: dict[str, Handler] = {**{name: _skip for name in _LEAF_NODES}, **_HANDLERS}


def _kinds_of(leaves: set[str]) -> frozenset[str]:
    return frozenset(leaves) | frozenset(verb_of(k) for k in leaves)


_NO_NAMES: frozenset[str] = frozenset()


def _error(message: str, position: int | None = None) -> SqlAnalysis:
    return SqlAnalysis(kinds=frozenset(), statements=0, error=message, error_position=position)


def _decode(tree_json: str) -> Any:
    try:
        return msgspec.json.decode(tree_json)
    except RecursionError:
        # msgspec's C decoder is recursive; `1+1+...+1` with a few hundred terms nests
        # deeper than Python's recursion limit allows. Such trees go through a slower
        # iterative decoder rather than being refused.
        return _decode_deep(tree_json)


def _parse(sql: str) -> list[Any]:
    """The raw statements of ``sql``; raises pglast's ParseError."""
    stmts = _decode(_pg.parse_sql_json(sql)).get("stmts", [])
    return stmts if type(stmts) is list else []


def analyze_uncached(sql: str) -> SqlAnalysis:
    """Parse and walk ``sql``; never raises."""
    if "\x00" in sql:
        # the parser reads a C string and would stop at the NUL; what follows would go unchecked
        return _error("statement contains a NUL character", sql.index("\x00") + 1)
    try:
        tree_json = _pg.parse_sql_json(sql)
    except _pg.ParseError as exc:
        message = str(exc.args[0]) if exc.args else "syntax error"
        index = exc.args[1] if len(exc.args) > 1 else None
        if index is not None:
            position: int | None = index + 1
        elif "end of input" in message:
            position = len(sql) + 1  # PostgreSQL points just past the last character
        else:
            position = None
        return _error(message, position)
    except UnicodeEncodeError:
        return _error("statement is not valid UTF-8 text")
    except Exception as exc:  # the parser must never take the gateway down
        return _error(f"cannot parse statement: {exc}")
    try:
        try:
            tree = msgspec.json.decode(tree_json)
        except RecursionError:
            tree = _decode_deep(tree_json)
        stmts = tree.get("stmts", [])
        found = _Found()
        _collect(stmts, found, sql)
    except Exception as exc:  # an unexpected tree: refuse, do not crash
        return _error(f"cannot analyse statement: {type(exc).__name__}")
    return SqlAnalysis(
        kinds=_kinds_of(found.leaves),
        statements=len(stmts),
        leaves=frozenset(found.leaves),
        literal_sensitive=found.sensitive,
        tables=frozenset(found.tables) if found.tables else _NO_NAMES,
        functions=frozenset(found.functions) if found.functions else _NO_NAMES,
        undecidable=found.undecidable,
    )


_JSON_TOKEN = re.compile(
    r'\s*(?:("(?:[^"\\]|\\.)*")|([{}\[\]])|[:,]|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(true|false|null))'
)
_JSON_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
# A parse tree this large is refused rather than decoded in pure Python.
_MAX_DEEP_JSON = 32 * 1024 * 1024


def _decode_deep(text: str) -> dict[str, Any]:
    """Decode libpg_query's JSON without recursion (slow; for very deep trees only)."""
    if len(text) > _MAX_DEEP_JSON:
        raise ValueError("parse tree too large")
    root: dict[str, Any] = {}
    containers: list[Any] = []
    keys: list[str | None] = []  # per open dict: the key waiting for its value
    decode_str = msgspec.json.decode

    def attach(value: Any) -> None:
        top = containers[-1]
        if type(top) is list:
            top.append(value)
        else:
            top[keys[-1]] = value
            keys[-1] = None

    pos, end = 0, len(text)
    while pos < end:
        m = _JSON_TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise ValueError(f"unexpected JSON at {pos}")
            break
        pos = m.end()
        string, bracket, number, word = m.groups()
        if bracket in ("{", "["):
            new: Any = {} if bracket == "{" else []
            if containers:
                attach(new)
            elif bracket == "{":
                new = root
            containers.append(new)
            keys.append(None)
        elif bracket:
            containers.pop()
            keys.pop()
        elif string is not None:
            value = decode_str(string)
            if type(containers[-1]) is dict and keys[-1] is None:
                keys[-1] = value
            else:
                attach(value)
        elif number is not None:
            attach(float(number) if "." in number or "e" in number.lower() else int(number))
        elif word is not None:
            attach(_JSON_WORDS[word])
    return root


class SqlAnalyzer:
    """Analyses SQL text, with a two-level bounded LRU cache (exact text, then shape).

    Not thread-safe for concurrent mutation beyond what the GIL gives; the gateway calls it
    from one event loop. Texts longer than ``max_cached_chars`` are analysed but not cached:
    huge one-off statements (bulk INSERTs) would otherwise pin megabytes for nothing.
    """

    __slots__ = ("cache_size", "max_cached_chars", "_exact", "_shape", "stats")

    def __init__(self, cache_size: int = 4096, *, max_cached_chars: int = 16384):
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.cache_size = cache_size
        self.max_cached_chars = max_cached_chars
        self._exact: OrderedDict[str, SqlAnalysis] = OrderedDict()
        self._shape: OrderedDict[str, SqlAnalysis] = OrderedDict()
        # [exact hits, shape hits, misses], for metrics and tests
        self.stats = [0, 0, 0]

    def analyze(self, sql: str) -> SqlAnalysis:
        hit = self._exact.get(sql)
        if hit is not None:
            self._exact.move_to_end(sql)
            self.stats[0] += 1
            return hit
        return self._miss(sql)

    def _miss(self, sql: str) -> SqlAnalysis:
        if len(sql) > self.max_cached_chars:
            self.stats[2] += 1
            return analyze_uncached(sql)
        shape = _shape_of(sql)
        analysis = self._shape.get(shape) if shape is not None else None
        if analysis is not None:
            self._shape.move_to_end(shape)  # type: ignore[arg-type]
            self.stats[1] += 1
        else:
            self.stats[2] += 1
            analysis = analyze_uncached(sql)
            if shape is not None and analysis.error is None and not analysis.literal_sensitive:
                _put(self._shape, shape, analysis, self.cache_size)
        _put(self._exact, sql, analysis, self.cache_size)
        return analysis

    def __len__(self) -> int:
        return len(self._exact)

    def clear(self) -> None:
        self._exact.clear()
        self._shape.clear()


def _shape_of(sql: str) -> str | None:
    """The text with constants replaced by $n; None when it cannot be normalized."""
    if "\x00" in sql:
        return None
    try:
        return _pg.normalize(sql)
    except Exception:  # the full analysis reports the error
        return None


def _put(cache: OrderedDict[str, SqlAnalysis], key: str, value: SqlAnalysis, size: int) -> None:
    cache[key] = value
    while len(cache) > size:
        try:
            cache.popitem(last=False)
        except KeyError:  # emptied meanwhile by another thread: nothing left to evict
            break


# --------------------------------------------------------------------------------------------
# The search path, as statements change it

RESET_PATH = "reset"  # back to the path the session started with


def search_path_effects(sql: str) -> list[tuple[str, ...] | str | None]:
    """What the top-level statements of ``sql`` do to the search path, in order.

    Each item is the new path (a tuple of schema names), ``RESET_PATH`` (``RESET search_path``,
    ``SET search_path TO DEFAULT``, ``RESET ALL``, ``DISCARD ALL``), or None when a statement
    changes it in a way that cannot be read (``set_config``, a value that is not a plain list).
    Statements that do not touch it are left out. Callers use this only for strings whose
    analysis reports ``SET SEARCH_PATH`` / ``RESET SEARCH_PATH`` / ``RESET`` / ``DISCARD``; a
    change hidden in a body (a DO block, a function's SET clause) shows as such a kind without a
    top-level effect here, and callers then treat the path as unknown.
    """
    try:
        tree = msgspec.json.decode(_pg.parse_sql_json(sql))
    except Exception:
        return [None]
    out: list[tuple[str, ...] | str | None] = []
    for item in tree.get("stmts", []):
        stmt = item.get("stmt") if isinstance(item, dict) else None
        if not isinstance(stmt, dict):
            continue
        var = stmt.get("VariableSetStmt")
        if isinstance(var, dict):
            kind = var.get("kind")
            if kind == "VAR_RESET_ALL":
                out.append(RESET_PATH)
            elif var.get("name") == "search_path":
                if kind in ("VAR_RESET", "VAR_SET_DEFAULT"):
                    out.append(RESET_PATH)
                elif kind == "VAR_SET_VALUE":
                    out.append(_path_value(var.get("args", [])))
                else:
                    out.append(None)
        elif stmt.get("DiscardStmt", {}).get("target") == "DISCARD_ALL":
            out.append(RESET_PATH)
    return out


def _path_value(args: list[Any]) -> tuple[str, ...] | None:
    names: list[str] = []
    for arg in args:
        const = arg.get("A_Const") if isinstance(arg, dict) else None
        sval = const.get("sval") if isinstance(const, dict) else None
        name = sval.get("sval") if isinstance(sval, dict) else None
        if not isinstance(name, str) or not name or "," in name or '"' in name:
            return None  # a quoted list or an odd name: PostgreSQL's reading is not ours to guess
        names.append(name)
    return tuple(names) or None

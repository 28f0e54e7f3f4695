"""SQL analysis with PostgreSQL's own parser (libpg_query, through pglast).

``SqlAnalyzer.analyze(text)`` returns the statement *kinds* a string contains: the leading
keyword of every statement (``DROP``) plus a two-word form naming the object (``DROP TABLE``),
nested statements included (a ``DELETE`` inside a ``WITH``, the statement ``EXPLAIN ANALYZE``
runs, a ``PREPARE``'s body, a ``CREATE RULE``'s actions...). Rules match those kinds, never
substrings of the text, so a keyword inside a literal or a comment counts for nothing.

Costs (see docs/policy.md): the parser is ~3-50 µs per statement, so analyses are cached at two
levels, both bounded LRUs owned by the analyzer instance:

1. exact text -> analysis (a dict lookup);
2. *shape* -> analysis, where the shape is ``pglast.parser.normalize(text)``: the text with every
   constant replaced by ``$n``. pgbench and ORMs send the same statement with different constants;
   normalizing (~2 µs) is cheaper than a parse and the statement kinds cannot depend on a constant.
   An analysis that *does* look inside a literal (DO bodies, function bodies, EXPLAIN option values)
   is marked ``literal_sensitive`` and never stored at this level.

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
_SET_NAMES: dict[str, str] = {"role": "ROLE", "session_authorization": "SESSION AUTHORIZATION"}

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
# CREATE VIEW, rule actions, a BEGIN ATOMIC body). Subqueries, INSERT ... SELECT sources and
# VALUES lists are part of the statement that holds them, so `INSERT INTO t VALUES (1)` is an
# INSERT and nothing else. Which tables a statement reads is the job of `tables` (later).
#
# The walk stack holds JSON nodes; a node wrapped in a 1-tuple is in statement position.

class _Found:
    """What the walk collected so far."""

    __slots__ = ("leaves", "sensitive")

    def __init__(self) -> None:
        self.leaves: set[str] = set()
        self.sensitive = False

    def add(self, verb: str, obj: str | None = None) -> None:
        self.leaves.add(f"{verb} {obj}" if obj else verb)


# A handler receives a statement node's fields, whether the node is in statement position,
# records its kinds and pushes the parts that may hold further statements onto the stack.
Handler = Callable[[dict[str, Any], bool, _Found, list[Any]], None]

_HANDLERS: dict[str, Handler] = {}
_LEAVES: set[str] = set()  # filled while the handler table is built, then frozen into KNOWN_KINDS
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
_NO_FIELDS: frozenset[str] = frozenset()
# wrappers a statement list is nested in (BEGIN ATOMIC bodies): they keep the statement position
_LIST_WRAPPERS = frozenset({"List", "items"})


def _push_fields(node: str, fields: dict[str, Any], stack: list[Any]) -> None:
    stmt_fields = _STMT_FIELDS.get(node, _NO_FIELDS)
    for key, value in fields.items():
        if type(value) is dict or type(value) is list:
            stack.append((value,) if key in stmt_fields else value)


def _fixed(node: str, verb: str, obj: str | None = None) -> None:
    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add(verb, obj)
        _push_fields(node, fields, stack)

    _HANDLERS[node] = handle
    _LEAVES.add(f"{verb} {obj}" if obj else verb)


def _by_field(node: str, verb: str, field: str, table: dict[str, str], default: str | None = None) -> None:
    """The object comes from an enum field; an unknown value still yields the bare verb."""

    def handle(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
        found.add(verb, table.get(fields.get(field, ""), default))
        _push_fields(node, fields, stack)

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


def _body_kinds(found: _Found, fields: dict[str, Any]) -> None:
    """Statements hidden in a DO block or a function body given as a string literal.

    Not analysed yet: the PL/pgSQL pass (pglast.parser.parse_plpgsql_json) belongs here. Until
    then the analysis only marks itself literal-sensitive, so that two bodies differing only in
    their text never share a cached analysis once this function looks inside them.
    """
    found.sensitive = True


# -- data --
@_custom("SelectStmt", "SELECT", "CREATE TABLE")
def _select(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    if top:
        found.add("SELECT")
    if "intoClause" in fields:  # SELECT ... INTO t creates a table
        found.add("CREATE", "TABLE")
    _push_fields("SelectStmt", fields, stack)


@_custom("InsertStmt", "INSERT", "UPDATE")
def _insert(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("INSERT")
    conflict = fields.get("onConflictClause")
    if isinstance(conflict, dict) and conflict.get("action") == "ONCONFLICT_UPDATE":
        found.add("UPDATE")  # INSERT ... ON CONFLICT DO UPDATE updates rows
    _push_fields("InsertStmt", fields, stack)


@_custom("MergeWhenClause", *_MERGE_ACTIONS.values())
def _merge_action(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    action = _MERGE_ACTIONS.get(fields.get("commandType", ""))
    if action:  # MERGE ... THEN DELETE deletes rows, and so on
        found.add(action)
    _push_fields("MergeWhenClause", fields, stack)


@_custom("CopyStmt", "COPY", "COPY FROM", "COPY TO")
def _copy(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("COPY", "FROM" if fields.get("is_from") else "TO")
    _push_fields("CopyStmt", fields, stack)  # COPY (query) TO: the query runs


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
    if analyze:  # EXPLAIN ANALYZE executes the statement; plain EXPLAIN only plans it
        query = fields.get("query")
        if query is not None:
            stack.append((query,))


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
    found.add("CREATE", "PROCEDURE" if fields.get("is_procedure") else "FUNCTION")
    if any(isinstance(o, dict) and o.get("DefElem", {}).get("defname") == "as" for o in fields.get("options", ())):
        _body_kinds(found, fields)
    # a SQL-standard body (BEGIN ATOMIC ... END) is parsed already: its statements count
    _push_fields("CreateFunctionStmt", fields, stack)


@_custom("DoStmt", "DO")
def _do(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("DO")
    _body_kinds(found, fields)


@_custom("TransactionStmt", *{f"{v} {o}" if o else v for v, o in _TRANSACTION.values()})
def _transaction(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    verb, obj = _TRANSACTION.get(fields.get("kind", ""), ("BEGIN", None))
    found.add(verb, obj)


@_custom("VariableSetStmt", "SET", "RESET", *(f"{v} {o}" for v in ("SET", "RESET") for o in _SET_NAMES.values()))
def _set(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    verb = "RESET" if fields.get("kind") in ("VAR_RESET", "VAR_RESET_ALL") else "SET"
    found.add(verb, _SET_NAMES.get(fields.get("name", "")))


@_custom("VacuumStmt", "VACUUM", "ANALYZE")
def _vacuum(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("VACUUM" if fields.get("is_vacuumcmd") else "ANALYZE")


@_custom("FetchStmt", "FETCH", "MOVE")
def _fetch(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("MOVE" if fields.get("ismove") else "FETCH")


def _grant(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    found.add("GRANT" if fields.get("is_grant") else "REVOKE")
    _push_fields("GrantStmt", fields, stack)


_HANDLERS["GrantStmt"] = _HANDLERS["GrantRoleStmt"] = _grant
_LEAVES.update(("GRANT", "REVOKE"))


@_custom("RenameStmt", *(f"ALTER {w}" for w in OBJECT_WORDS.values()))
def _rename(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    rename = fields.get("renameType", "")
    # RENAME COLUMN / CONSTRAINT / ATTRIBUTE are ALTER of the relation that holds them
    if rename in ("OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_ATTRIBUTE"):
        rename = fields.get("relationType", rename)
    found.add("ALTER", OBJECT_WORDS.get(rename))
    _push_fields("RenameStmt", fields, stack)


# ObjectType-driven statements
_by_field("DropStmt", "DROP", "removeType", OBJECT_WORDS)
_by_field("AlterTableStmt", "ALTER", "objtype", OBJECT_WORDS)
_by_field("AlterTableMoveAllStmt", "ALTER", "objtype", OBJECT_WORDS)
_by_field("AlterObjectSchemaStmt", "ALTER", "objectType", OBJECT_WORDS)
_by_field("AlterOwnerStmt", "ALTER", "objectType", OBJECT_WORDS)
_by_field("AlterObjectDependsStmt", "ALTER", "objectType", OBJECT_WORDS)
_by_field("AlterFunctionStmt", "ALTER", "objtype", OBJECT_WORDS, "FUNCTION")
_by_field("CreateTableAsStmt", "CREATE", "objtype", OBJECT_WORDS, "TABLE")  # query counts too
_by_field("DefineStmt", "CREATE", "kind", OBJECT_WORDS)
_by_field("ReindexStmt", "REINDEX", "kind", _REINDEX)

_FIXED: tuple[tuple[str, str, str | None], ...] = (
    ("UpdateStmt", "UPDATE", None),
    ("DeleteStmt", "DELETE", None),
    ("MergeStmt", "MERGE", None),
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
    ("AlterRoleSetStmt", "ALTER", "ROLE"),
    ("AlterDatabaseStmt", "ALTER", "DATABASE"),
    ("AlterDatabaseSetStmt", "ALTER", "DATABASE"),
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
for _node, _verb, _obj in _FIXED:
    _fixed(_node, _verb, _obj)
del _node, _verb, _obj

# Bare verbs of every kind a rule could name: DROP, CREATE, ... and the object-less ones.
VERBS: frozenset[str] = frozenset(verb_of(k) for k in _LEAVES)
# Every kind a statement can produce; rule entries are checked against it.
KNOWN_KINDS: frozenset[str] = frozenset(_LEAVES) | VERBS | frozenset(
    # CREATE / ALTER / DROP of every object type, even the ones no handler above emits today
    f"{v} {w}" for v in ("CREATE", "ALTER", "DROP") for w in OBJECT_WORDS.values()
)
del _LEAVES


# Node types that can never hold a statement: the walk does not descend into them.
_LEAF_NODES = frozenset({
    "String", "Integer", "Float", "Boolean", "BitString", "A_Const", "A_Star", "ColumnRef",
    "ParamRef", "RangeVar", "RoleSpec", "TypeName",
})


def _skip(fields: dict[str, Any], top: bool, found: _Found, stack: list[Any]) -> None:
    pass


def _collect(stmts: list[Any]) -> _Found:
    """Walk the JSON parse tree with an explicit stack (deep trees must not hit the recursion limit)."""
    found = _Found()
    handlers = _WALK_TABLE
    stack: list[Any] = [(s.get("stmt"),) for s in stmts if isinstance(s, dict)]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        top = type(node) is tuple
        if top:
            node = node[0]
        if type(node) is dict:
            for key, value in node.items():
                handler = handlers.get(key)
                if handler is not None and type(value) is dict:
                    handler(value, top, found, stack)
                elif type(value) is dict or type(value) is list:
                    push((value,) if top and key in _LIST_WRAPPERS else value)
        elif type(node) is list:
            for value in node:
                if type(value) is dict or type(value) is list:
                    push((value,) if top else value)
    return found


_WALK_TABLE: dict[str, Handler] = {**{name: _skip for name in _LEAF_NODES}, **_HANDLERS}


def _kinds_of(leaves: set[str]) -> frozenset[str]:
    return frozenset(leaves) | frozenset(verb_of(k) for k in leaves)


def _error(message: str, position: int | None = None) -> SqlAnalysis:
    return SqlAnalysis(kinds=frozenset(), statements=0, error=message, error_position=position)


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
            # msgspec's C decoder is recursive; `1+1+...+1` with a few hundred terms nests
            # deeper than Python's recursion limit allows. Such trees go through a slower
            # iterative decoder rather than being refused.
            tree = _decode_deep(tree_json)
        stmts = tree.get("stmts", [])
        found = _collect(stmts)
    except Exception as exc:  # an unexpected tree: refuse, do not crash
        return _error(f"cannot analyse statement: {type(exc).__name__}")
    return SqlAnalysis(
        kinds=_kinds_of(found.leaves),
        statements=len(stmts),
        leaves=frozenset(found.leaves),
        literal_sensitive=found.sensitive,
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

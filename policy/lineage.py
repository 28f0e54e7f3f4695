"""Column lineage: which source columns each output column of a statement derives from.

A mask rule names *source* columns (``users.email``, ``*.ssn``). For a plain column reference
PostgreSQL's RowDescription already says which table column a result column is (table OID and
attribute number, through aliases, subqueries and CTEs); it reports 0 for any expression and the
view itself for a view column. This module covers the rest: given one SQL text and a snapshot of
the catalog, ``output_lineage`` says for every output column the set of ``schema.table.column``
names its values derive from.

Why a resolver of our own over pglast rather than ``sqlglot.lineage``: pglast is PostgreSQL's own
grammar (``ROWS FROM``, ``JOIN ... USING (...) AS j``, ``JSON_TABLE``, ``RETURNING old/new`` all
parse), and parse + resolve costs tens of µs where sqlglot's qualify + lineage costs milliseconds
per statement. The resolver implements PostgreSQL's name-resolution rules (namespace items with
relation / column visibility, lateral-only items, column-before-whole-row lookup, outer levels).

Semantics, the contract the masking relay relies on:

* ``frozenset({...})``: the column's value is computed from these columns only (plus constants
  and parameters); a superset where PostgreSQL picks one at run time (the two sides of a USING
  column, CASE branches). Every column referenced anywhere in the output expression counts:
  arguments, CASE conditions, aggregate ORDER BY / FILTER, window PARTITION / ORDER, the output of
  a scalar subquery. ``count(email)`` derives from ``email``; whether that is harmless is for the
  rule to decide. Columns that only filter rows (WHERE, JOIN ON, HAVING) are not lineage.
* ``frozenset()``: derives from no column (constants, ``now()``, ``count(*)``, system columns).
* ``None``: cannot tell. Anything the resolver does not understand, a relation missing from the
  catalog, a function that is not a known built-in (user-defined code can read any table), a
  cast to a non-built-in type, an unknown operator: the affected columns are None, never empty.

A view column derives from itself (``public.v.col``) and from what its definition derives from,
recursively, so rules may name either the view or its base tables.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec
from pglast import parser as _pg

__all__ = ["Catalog", "OutputLineage", "LineageCache", "output_lineage", "statement_lineages", "view_lineage"]


class Catalog(msgspec.Struct, frozen=True):
    """What the session can see; built by the integrator from a catalog query.

    ``relations``: ``"schema.table" -> column names in attnum order`` (live columns only), for
    tables, views, materialized views, foreign tables; temporary tables under ``"pg_temp.name"``.
    ``views``: ``"schema.view" -> definition`` (``pg_get_viewdef``; fetch it with
    ``SET search_path = ''`` so every relation in it is schema-qualified), views and matviews.
    ``search_path``: the session's, ``$user`` already expanded. ``pg_temp`` and ``pg_catalog`` are
    searched first unless listed, as PostgreSQL does.
    ``functions``: ``"schema.name"`` of every function, aggregate and procedure outside
    ``pg_catalog`` (extensions included). ``None`` means unknown: only a fixed list of well-known
    built-ins is then trusted, every other call is None. When given, an unqualified call is trusted
    unless some schema of the search path defines a function of that name.
    """

    relations: dict[str, tuple[str, ...]]
    views: dict[str, str] = {}
    search_path: tuple[str, ...] = ("public",)
    functions: frozenset[str] | None = None


class OutputLineage(msgspec.Struct, frozen=True):
    """Per output column, in order: the source columns (``schema.table.column``), None = cannot tell.

    ``names`` are the output column names as PostgreSQL computes them (for cross-checking with a
    RowDescription; best effort for exotic expressions).
    """

    columns: tuple[frozenset[str] | None, ...]
    names: tuple[str, ...] = ()


Lineage = frozenset[str] | None
Cols = list[tuple[str, Lineage]]
_EMPTY: frozenset[str] = frozenset()


class _Fail(Exception):
    """The shape of a (sub)result cannot be determined: its column count is unknown."""


_TREE_ERRORS = (_Fail, RecursionError, KeyError, TypeError, AttributeError, IndexError, ValueError)


def _u(a: Lineage, b: Lineage) -> Lineage:
    if a is None or b is None:
        return None
    if not b:
        return a
    if not a:
        return b
    return a | b


def _union(cols: Cols | None) -> Lineage:
    if cols is None:
        return None
    out: Lineage = _EMPTY
    for _, lin in cols:
        out = _u(out, lin)
        if out is None:
            return None
    return out


def _names(nodes: list[Any]) -> list[str]:
    """The strings of a name list (``[{"String": {"sval": "x"}}, ...]``)."""
    return [n["String"]["sval"] for n in nodes]


# --------------------------------------------------------------------------------------------
# Built-in knowledge

# pg_catalog functions whose result can hold any column without a column reference showing it:
# they run SQL given as text, read table files, large objects or WAL. Never trusted.
# (Session state an earlier statement filled with copied values — set_config then
# current_setting, setval then currval — is closed the other way: the PostgreSQL relay refuses
# the statement that would copy a masked value there, see protocols/postgres/resultmask.py.)
_DENY_FUNCTIONS = frozenset("""
    query_to_xml query_to_xml_and_xmlschema query_to_xmlschema cursor_to_xml cursor_to_xmlschema
    table_to_xml table_to_xml_and_xmlschema table_to_xmlschema schema_to_xml
    schema_to_xml_and_xmlschema schema_to_xmlschema database_to_xml database_to_xml_and_xmlschema
    database_to_xmlschema ts_stat pg_read_file pg_read_binary_file lo_get loread lo_export
    pg_logical_slot_get_changes pg_logical_slot_peek_changes pg_logical_slot_get_binary_changes
    pg_logical_slot_peek_binary_changes
""".split())

# Well-known pg_catalog functions whose result is computed from their arguments only: trusted
# even when the catalog does not list the user-defined functions.
_BUILTIN_FUNCTIONS = frozenset("""
    ascii bit_length btrim char_length character_length chr concat concat_ws convert convert_from
    convert_to decode encode format initcap left length lower lpad ltrim md5 normalize octet_length
    overlay position quote_ident quote_literal quote_nullable regexp_count regexp_instr regexp_like
    regexp_match regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table
    regexp_substr repeat replace reverse right rpad rtrim split_part starts_with string_to_array
    string_to_table strpos substr substring to_ascii to_hex to_bin to_oct translate trim upper
    unistr casefold sha224 sha256 sha384 sha512 crc32 crc32c text similar_to_escape
    collation_for is_normalized
    abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi power
    pow radians round scale sign sqrt trim_scale trunc width_bucket random random_normal acos asin
    atan atan2 cos cot sin tan sinh cosh tanh asinh acosh atanh acosd asind atand cosd sind tand
    cotd atan2d erf erfc gamma lgamma
    age clock_timestamp date_add date_bin date_part date_subtract date_trunc extract isfinite
    justify_days justify_hours justify_interval make_date make_interval make_time make_timestamp
    make_timestamptz now statement_timestamp timeofday transaction_timestamp to_timestamp to_char
    to_date to_number timezone overlaps
    avg bit_and bit_or bit_xor bool_and bool_or count every max min sum string_agg array_agg json_agg
    jsonb_agg json_object_agg jsonb_object_agg json_agg_strict jsonb_agg_strict
    json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique jsonb_object_agg_unique
    json_object_agg_unique_strict jsonb_object_agg_unique_strict xmlagg corr covar_pop covar_samp
    regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
    stddev stddev_pop stddev_samp variance var_pop var_samp mode percentile_cont percentile_disc
    any_value range_agg range_intersect_agg
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    to_json to_jsonb row_to_json array_to_json json_build_array jsonb_build_array json_build_object
    jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each
    jsonb_each json_each_text jsonb_each_text json_extract_path json_extract_path_text
    jsonb_extract_path jsonb_extract_path_text json_object_keys jsonb_object_keys
    json_populate_record jsonb_populate_record json_populate_recordset jsonb_populate_recordset
    json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset json_strip_nulls
    jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty json_typeof jsonb_typeof
    jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz
    jsonb_path_query_array_tz jsonb_path_query_first_tz json_array_elements jsonb_array_elements
    json_array_elements_text jsonb_array_elements_text
    array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
    array_positions array_prepend array_remove array_replace array_to_string array_upper cardinality
    trim_array unnest generate_subscripts array_shuffle array_sample array_reverse array_sort
    num_nulls num_nonnulls generate_series pg_typeof pg_column_size pg_column_compression
    gen_random_uuid uuidv4 uuidv7 current_database current_schema current_schemas version
    host hostmask network masklen family abbrev broadcast netmask set_masklen inet_merge
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
    ts_headline setweight strip tsvector_to_array array_to_tsvector numnode querytree
    xmlcomment xpath xpath_exists xml_is_well_formed xml_is_well_formed_document
    xml_is_well_formed_content xmltext
    isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range numrange tsrange
    tstzrange daterange multirange
    get_bit get_byte set_bit set_byte bit_count
""".split())

# Set-returning built-ins usable in FROM, by the columns they produce.
_PER_ARG = "per-arg"  # unnest(a, b, ...): one column per argument, each from its own argument
_SCALAR = "scalar"  # one column, named after the alias or the function
_SRF_COLUMNS: dict[str, str | tuple[str, ...]] = {
    "unnest": _PER_ARG,
    **{name: _SCALAR for name in (
        "generate_series", "generate_subscripts", "regexp_matches", "regexp_split_to_table",
        "string_to_table", "json_object_keys", "jsonb_object_keys", "jsonb_path_query",
        "jsonb_path_query_tz")},
    **{name: ("key", "value") for name in ("json_each", "jsonb_each", "json_each_text", "jsonb_each_text")},
    **{name: ("value",) for name in (
        "json_array_elements", "jsonb_array_elements", "json_array_elements_text",
        "jsonb_array_elements_text")},
}

# Types a cast may target without running user code (unqualified spellings; the grammar writes
# the SQL-standard ones as pg_catalog.* already).
_BUILTIN_TYPES = frozenset("""
    text json jsonb jsonpath uuid date bytea inet cidr macaddr macaddr8 money xml name oid regclass
    regtype regproc regprocedure regoper regoperator regnamespace regrole regconfig regdictionary
    regcollation tsvector tsquery point line lseg box path polygon circle int2 int4 int8 float4
    float8 numeric bool boolean char bpchar varchar bit varbit timestamp timestamptz time timetz
    interval record unknown xid xid8 cid tid pg_lsn int4range int8range numrange tsrange tstzrange
    daterange int4multirange int8multirange nummultirange tsmultirange tstzmultirange
    datemultirange txid_snapshot pg_snapshot refcursor aclitem smallint integer bigint real
""".split())

# Built-in operator symbols. A user-defined operator can run arbitrary code; one whose symbol is
# not here makes its result None.
_OPERATORS = frozenset("""
    + - * / % ^ |/ ||/ @ & | # ~ << >> = <> != < > <= >= || ~~ ~~* !~~ !~~* ~* !~ !~* -> ->> #> #>>
    @> <@ ? ?| ?& && @@ @@@ @? #- <-> <<| |>> &< &> &<| |&> -|- ## ?# ?- ?-| ?|| <^ >^ @-@ !! <<=
    >>= ^@ <% %> <<% %>> <<-> <->>
""".split())
# [NOT] BETWEEN [SYMMETRIC] names itself rather than an operator; it expands to built-in comparisons
_BETWEEN_KINDS = frozenset({"AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN", "AEXPR_BETWEEN_SYM", "AEXPR_NOT_BETWEEN_SYM"})

# Columns every table has besides its own; they carry no user data.
_SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"})

_MAX_FIXPOINT = 64  # rounds for a recursive CTE's lineage to stop growing


# --------------------------------------------------------------------------------------------
# Catalog access for one analysis


class _Ctx:
    """Catalog lookups with per-analysis memos (the view memo may be shared across analyses)."""

    __slots__ = ("catalog", "rel_path", "fn_path", "rel_memo", "views", "view_stack", "fn_memo")

    def __init__(self, catalog: Catalog, view_memo: dict[str, Any] | None = None):
        self.catalog = catalog
        path = catalog.search_path
        implicit = tuple(s for s in ("pg_temp", "pg_catalog") if s not in path)
        self.rel_path = implicit + tuple(path)
        self.fn_path = tuple(s for s in path if s not in ("pg_catalog", "pg_temp"))
        self.rel_memo: dict[str, Cols | None] = {}
        self.views: dict[str, Any] = view_memo if view_memo is not None else {}
        self.view_stack: set[str] = set()
        self.fn_memo: dict[tuple[str | None, str], bool] = {}

    def lookup(self, schema: str | None, name: str) -> str | None:
        """The catalog key of a relation name, as PostgreSQL would resolve it."""
        rels, views = self.catalog.relations, self.catalog.views
        if schema is not None:
            key = f"{schema}.{name}"
            return key if key in rels or key in views else None
        for s in self.rel_path:
            key = f"{s}.{name}"
            if key in rels or key in views:
                return key
        return None

    def relation_cols(self, key: str) -> Cols | None:
        cols = self.rel_memo.get(key)
        if cols is None and key not in self.rel_memo:
            if key in self.catalog.views:
                view = self.view(key)
                if view is None:
                    cols = None
                else:
                    names, lineages = view
                    cols = [(n, _u(frozenset((f"{key}.{n}",)), lin)) for n, lin in zip(names, lineages)]
            else:
                names = self.catalog.relations.get(key)
                cols = None if names is None else [(n, frozenset((f"{key}.{n}",))) for n in names]
            self.rel_memo[key] = cols
        return cols

    def view(self, key: str) -> tuple[tuple[str, ...], tuple[Lineage, ...]] | None:
        """A view's column names and the lineage of its definition's columns."""
        if key in self.views:
            return self.views[key]
        if key in self.view_stack:  # a cycle cannot exist in PostgreSQL: the catalog is inconsistent
            return None
        self.view_stack.add(key)
        try:
            result = self._compute_view(key)
        finally:
            self.view_stack.discard(key)
        self.views[key] = result
        return result

    def _compute_view(self, key: str) -> tuple[tuple[str, ...], tuple[Lineage, ...]] | None:
        known = self.catalog.relations.get(key)
        cols: Cols | None
        try:
            stmts = _parse(self.catalog.views[key])
            if stmts is None or len(stmts) != 1 or "SelectStmt" not in stmts[0]:
                cols = None
            else:
                cols = _select(stmts[0]["SelectStmt"], None, self)
        except _TREE_ERRORS:
            cols = None
        if cols is None or (known is not None and len(known) != len(cols)):
            if known is None:
                return None
            return tuple(known), (None,) * len(known)
        names = tuple(known) if known is not None else tuple(n for n, _ in cols)
        return names, tuple(lin for _, lin in cols)

    def trusted_function(self, parts: list[str]) -> bool:
        """Whether a call's result derives from its arguments only."""
        if len(parts) == 1:
            schema, name = None, parts[0]
        elif len(parts) == 2:
            schema, name = parts
        else:
            return False
        key = (schema, name)
        hit = self.fn_memo.get(key)
        if hit is None:
            hit = self._trusted_function(schema, name)
            self.fn_memo[key] = hit
        return hit

    def _trusted_function(self, schema: str | None, name: str) -> bool:
        if name in _DENY_FUNCTIONS:
            return False
        if schema is not None:
            # a qualified pg_catalog call cannot be shadowed
            return schema == "pg_catalog"
        functions = self.catalog.functions
        if functions is None:
            return name in _BUILTIN_FUNCTIONS
        return not any(f"{s}.{name}" in functions for s in self.fn_path)


def _trusted_type(type_name: dict[str, Any]) -> bool:
    if type_name.get("pct_type"):
        return False
    names = _names(type_name.get("names", ()))
    if len(names) == 2:
        return names[0] == "pg_catalog"
    return len(names) == 1 and names[0] in _BUILTIN_TYPES


# --------------------------------------------------------------------------------------------
# Scopes


class _Item:
    """A namespace item: something in FROM that names can refer to (PostgreSQL's ParseNamespaceItem).

    ``cols`` None: the columns are unknown (an opaque relation or function).
    """

    __slots__ = ("refname", "relation", "cols", "rel_visible", "cols_visible", "table")

    def __init__(self, refname: str | None, cols: Cols | None, *, relation: str | None = None,
                 table: bool = False, rel_visible: bool = True, cols_visible: bool = True):
        self.refname = refname
        self.relation = relation  # catalog key, for schema-qualified references (no alias only)
        self.cols = cols
        self.table = table  # has system columns
        self.rel_visible = rel_visible
        self.cols_visible = cols_visible


_PENDING, _IN_PROGRESS, _DONE = 0, 1, 2


class _Cte:
    __slots__ = ("node", "scope", "state", "cols", "recursive")

    def __init__(self, node: dict[str, Any], scope: _Scope, recursive: bool):
        self.node = node
        self.scope = scope
        self.state = _PENDING
        self.cols: Cols | None = None
        self.recursive = recursive


class _Scope:
    """One query level: its namespace items, CTEs and named windows, and the level around it."""

    __slots__ = ("items", "ctes", "parent", "windows")

    def __init__(self, parent: _Scope | None, items: list[_Item] | None = None):
        self.parent = parent
        self.items: list[_Item] = items if items is not None else []
        self.ctes: dict[str, _Cte] = {}
        self.windows: dict[str, dict[str, Any]] = {}


def _find_cte(scope: _Scope | None, name: str) -> _Cte | None:
    while scope is not None:
        cte = scope.ctes.get(name)
        if cte is not None:
            return cte
        scope = scope.parent
    return None


def _find_item(scope: _Scope | None, schema: str | None, name: str, ctx: _Ctx) -> _Item | None:
    """The nearest item a qualifier names (``u`` in ``u.email``, ``public.users`` in ``public.users.email``)."""
    key = None
    if schema is not None:
        key = ctx.lookup(schema, name) or f"{schema}.{name}"
    while scope is not None:
        for item in scope.items:
            if not item.rel_visible:
                continue
            if (item.refname == name) if key is None else (item.relation == key):
                return item
        scope = scope.parent
    return None


def _item_column(item: _Item, name: str) -> Lineage:
    if item.cols is None:
        return None
    found: list[Lineage] = [lin for n, lin in item.cols if n == name]
    if len(found) == 1:
        return found[0]
    if not found and item.table and name in _SYSTEM_COLUMNS:
        return _EMPTY
    return None  # missing or ambiguous: PostgreSQL refuses the statement


def _unqualified(scope: _Scope | None, name: str) -> tuple[bool, Lineage]:
    """Resolve a bare column name level by level; (found, lineage)."""
    while scope is not None:
        hits: list[Lineage] = []
        opaque = False
        for item in scope.items:
            if not item.cols_visible:
                continue
            if item.cols is None:
                opaque = True
                continue
            n = len(hits)
            hits.extend(lin for col, lin in item.cols if col == name)
            if len(hits) == n and item.table and name in _SYSTEM_COLUMNS:
                hits.append(_EMPTY)
        if len(hits) == 1:
            # an opaque item with the same column would make PostgreSQL refuse the statement
            return True, hits[0]
        if hits or opaque:
            return True, None  # ambiguous, or possibly a column of the unknown item
        scope = scope.parent
    return False, None


def _column_ref(parts: list[Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    """A ColumnRef in an expression, resolved the way PostgreSQL's transformColumnRef does."""
    if "A_Star" in parts[-1]:
        names = [p["String"]["sval"] for p in parts[:-1] if "String" in p]
        if len(names) != len(parts) - 1 or not names:
            return None
        item = _qualifier_item(names, scope, ctx)
        return None if item is None else _union(item.cols)
    if not all("String" in p for p in parts):
        return None
    names = [p["String"]["sval"] for p in parts]
    n = len(names)
    if n == 1:
        found, lin = _unqualified(scope, names[0])
        if found:
            return lin
        item = _find_item(scope, None, names[0], ctx)  # a whole-row reference
        return None if item is None else _union(item.cols)
    if n == 2:
        item = _find_item(scope, None, names[0], ctx)
        if item is not None:
            return _item_column(item, names[1])
        found, lin = _unqualified(scope, names[0])  # column.field of a composite column
        return lin if found else None
    if n in (3, 4):
        item = _find_item(scope, names[-3], names[-2], ctx)
        if item is not None:
            return _item_column(item, names[-1])
        item = _find_item(scope, names[-4] if n == 4 else None, names[-3], ctx)
        if item is not None:  # table.column.field
            return _item_column(item, names[-2])
    return None


def _qualifier_item(names: list[str], scope: _Scope, ctx: _Ctx) -> _Item | None:
    if len(names) == 1:
        return _find_item(scope, None, names[0], ctx)
    if len(names) in (2, 3):  # schema.table or db.schema.table
        return _find_item(scope, names[-2], names[-1], ctx)
    return None


# --------------------------------------------------------------------------------------------
# Output column names (PostgreSQL's FigureColname)

_SQLVALUE_NAMES = {
    "SVFOP_CURRENT_DATE": "current_date", "SVFOP_CURRENT_TIME": "current_time",
    "SVFOP_CURRENT_TIME_N": "current_time", "SVFOP_CURRENT_TIMESTAMP": "current_timestamp",
    "SVFOP_CURRENT_TIMESTAMP_N": "current_timestamp", "SVFOP_LOCALTIME": "localtime",
    "SVFOP_LOCALTIME_N": "localtime", "SVFOP_LOCALTIMESTAMP": "localtimestamp",
    "SVFOP_LOCALTIMESTAMP_N": "localtimestamp", "SVFOP_CURRENT_ROLE": "current_role",
    "SVFOP_CURRENT_USER": "current_user", "SVFOP_USER": "user", "SVFOP_SESSION_USER": "session_user",
    "SVFOP_CURRENT_CATALOG": "current_catalog", "SVFOP_CURRENT_SCHEMA": "current_schema",
}
_FIXED_NAMES = {
    "GroupingFunc": "grouping", "MergeSupportFunc": "merge_action", "A_ArrayExpr": "array",
    "RowExpr": "row", "CoalesceExpr": "coalesce", "XmlSerialize": "xmlserialize",
    "JsonParseExpr": "json", "JsonScalarExpr": "json_scalar", "JsonSerializeExpr": "json_serialize",
    "JsonObjectConstructor": "json_object", "JsonArrayConstructor": "json_array",
    "JsonArrayQueryConstructor": "json_array", "JsonObjectAgg": "json_objectagg",
    "JsonArrayAgg": "json_arrayagg",
}
_JSON_FUNC_NAMES = {"JSON_EXISTS_OP": "json_exists", "JSON_QUERY_OP": "json_query", "JSON_VALUE_OP": "json_value"}


def _colname(node: Any) -> str:
    return _figure(node)[0] or "?column?"


def _figure(node: Any) -> tuple[str | None, int]:
    if type(node) is not dict or len(node) != 1:
        return None, 0
    ((kind, f),) = node.items()
    if kind == "ColumnRef":
        for part in reversed(f["fields"]):
            if "String" in part:
                return part["String"]["sval"], 2
        return None, 0
    if kind == "A_Indirection":
        for part in reversed(f.get("indirection", ())):
            if "String" in part:
                return part["String"]["sval"], 2
        return _figure(f.get("arg"))
    if kind == "FuncCall":
        return f["funcname"][-1]["String"]["sval"], 2
    if kind == "A_Expr":
        return ("nullif", 2) if f.get("kind") == "AEXPR_NULLIF" else (None, 0)
    if kind == "TypeCast":
        name, strength = _figure(f.get("arg"))
        if strength <= 1:
            names = _names(f.get("typeName", {}).get("names", ()))
            if names:
                return names[-1], 1
        return name, strength
    if kind == "CollateClause":
        return _figure(f.get("arg"))
    if kind in _FIXED_NAMES:
        return _FIXED_NAMES[kind], 2
    if kind == "SubLink":
        link = f.get("subLinkType")
        if link == "EXISTS_SUBLINK":
            return "exists", 2
        if link == "ARRAY_SUBLINK":
            return "array", 2
        if link == "EXPR_SUBLINK":
            return _first_target_name(f.get("subselect")), 2
        return None, 0
    if kind == "CaseExpr":
        name, strength = _figure(f.get("defresult"))
        return ("case", 1) if strength <= 1 else (name, strength)
    if kind == "MinMaxExpr":
        return ("greatest" if f.get("op") == "IS_GREATEST" else "least"), 2
    if kind == "SQLValueFunction":
        name = _SQLVALUE_NAMES.get(f.get("op", ""))
        return (name, 2) if name else (None, 0)
    if kind == "XmlExpr":
        op = f.get("op", "")
        return (None, 0) if op == "IS_DOCUMENT" or not op.startswith("IS_") else (op[3:].lower(), 2)
    if kind == "JsonFuncExpr":
        name = _JSON_FUNC_NAMES.get(f.get("op", ""))
        return (name, 2) if name else (None, 0)
    return None, 0


def _first_target_name(select: Any) -> str:
    """The name of a subquery's first output column (for a scalar subquery's own name)."""
    f = select.get("SelectStmt", select) if type(select) is dict else None
    while f is not None and f.get("op", "SETOP_NONE") != "SETOP_NONE":
        f = f.get("larg")
    if not f or not f.get("targetList"):
        return "?column?"
    target = f["targetList"][0].get("ResTarget", {})
    return target.get("name") or _colname(target.get("val"))


# --------------------------------------------------------------------------------------------
# Expressions


def _expr(node: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    """The columns an expression's value derives from; None for anything not understood."""
    if node is None:
        return _EMPTY
    if type(node) is list:
        return _exprs(node, scope, ctx)
    if type(node) is not dict or len(node) != 1:
        return None
    ((kind, f),) = node.items()
    handler = _EXPR_HANDLERS.get(kind)
    if handler is None:
        return None
    return handler(f, scope, ctx)


def _exprs(nodes: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    out: Lineage = _EMPTY
    for node in nodes or ():
        out = _u(out, _expr(node, scope, ctx))
        if out is None:
            return None
    return out


def _fields_of(*names: str) -> Any:
    """A handler that unions the listed fields of a node."""

    def handle(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
        out: Lineage = _EMPTY
        for name in names:
            value = f.get(name)
            if value is not None:
                out = _u(out, _expr(value, scope, ctx))
                if out is None:
                    return None
        return out

    return handle


def _no_columns(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _EMPTY


def _e_column_ref(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _column_ref(f["fields"], scope, ctx)


def _e_a_expr(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    name = _names(f.get("name", ()))
    if not name or (len(name) == 2 and name[0] != "pg_catalog") or len(name) > 2:
        return None
    if name[-1] not in _OPERATORS and f.get("kind") not in _BETWEEN_KINDS:
        return None
    return _u(_expr(f.get("lexpr"), scope, ctx), _expr(f.get("rexpr"), scope, ctx))


def _e_func_call(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    if not ctx.trusted_function(_names(f["funcname"])):
        return None
    out = _exprs(f.get("args"), scope, ctx)
    for sort in f.get("agg_order", ()):
        out = _u(out, _expr(sort, scope, ctx))
    out = _u(out, _expr(f.get("agg_filter"), scope, ctx))
    over = f.get("over")
    if over is not None:
        out = _u(out, _window(over, scope, ctx, 0))
    return out


def _window(w: dict[str, Any], scope: _Scope, ctx: _Ctx, depth: int) -> Lineage:
    out = _u(_exprs(w.get("partitionClause"), scope, ctx), _exprs(w.get("orderClause"), scope, ctx))
    out = _u(out, _u(_expr(w.get("startOffset"), scope, ctx), _expr(w.get("endOffset"), scope, ctx)))
    ref = w.get("refname")
    if ref is None and depth == 0 and w.get("name") and not w.get("partitionClause") and not w.get("orderClause"):
        ref = w["name"]  # OVER w: the whole named window
    if ref is not None:
        named = scope.windows.get(ref)
        if named is None or depth > 32:
            return None
        out = _u(out, _window(named, scope, ctx, depth + 1))
    return out


def _e_type_cast(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    if not _trusted_type(f.get("typeName", {})):
        return None  # a cast to a user type may call a user function
    return _expr(f.get("arg"), scope, ctx)


def _e_case(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    out = _u(_expr(f.get("arg"), scope, ctx), _expr(f.get("defresult"), scope, ctx))
    for when in f.get("args", ()):
        w = when.get("CaseWhen")
        if w is None:
            return None
        out = _u(out, _u(_expr(w.get("expr"), scope, ctx), _expr(w.get("result"), scope, ctx)))
    return out


def _subquery_lineage(select: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    try:
        return _union(_select_node(select, scope, ctx))
    except _Fail:
        return None


def _e_sublink(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    # the subquery's output flows into the value (EXPR, ARRAY) or is compared with it (ANY, ALL)
    return _u(_expr(f.get("testexpr"), scope, ctx), _subquery_lineage(f.get("subselect"), scope, ctx))


def _e_indirection(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    out = _expr(f.get("arg"), scope, ctx)
    for part in f.get("indirection", ()):
        idx = part.get("A_Indices")
        if idx is not None:
            out = _u(out, _u(_expr(idx.get("lidx"), scope, ctx), _expr(idx.get("uidx"), scope, ctx)))
        elif "String" not in part and "A_Star" not in part:
            return None
    return out


def _e_res_target(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _expr(f.get("val"), scope, ctx)


def _jve(d: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    """A JsonValueExpr, wrapped (in lists) or inline (in typed fields)."""
    if d is None:
        return _EMPTY
    d = d.get("JsonValueExpr", d)
    if "raw_expr" not in d:
        return None
    return _expr(d["raw_expr"], scope, ctx)


def _json_key_value(d: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    d = d.get("JsonKeyValue", d)
    return _u(_expr(d.get("key"), scope, ctx), _jve(d.get("value"), scope, ctx))


def _json_agg_constructor(d: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    out = _u(_exprs(d.get("agg_order"), scope, ctx), _expr(d.get("agg_filter"), scope, ctx))
    over = d.get("over")
    return out if over is None else _u(out, _window(over, scope, ctx, 0))


def _json_behavior(d: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    return _EMPTY if d is None else _expr(d.get("expr"), scope, ctx)


def _e_json_object(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    out: Lineage = _EMPTY
    for kv in f.get("exprs", ()):
        out = _u(out, _json_key_value(kv, scope, ctx))
    return out


def _e_json_array(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    out: Lineage = _EMPTY
    for v in f.get("exprs", ()):
        out = _u(out, _jve(v, scope, ctx))
    return out


def _e_json_object_agg(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _u(_json_agg_constructor(f.get("constructor", {}), scope, ctx), _json_key_value(f.get("arg", {}), scope, ctx))


def _e_json_array_agg(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _u(_json_agg_constructor(f.get("constructor", {}), scope, ctx), _jve(f.get("arg"), scope, ctx))


def _json_passing(items: Any, scope: _Scope, ctx: _Ctx) -> Lineage:
    out: Lineage = _EMPTY
    for arg in items or ():
        a = arg.get("JsonArgument", arg)
        out = _u(out, _jve(a.get("val"), scope, ctx))
    return out


def _e_json_func(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    out = _u(_jve(f.get("context_item"), scope, ctx), _expr(f.get("pathspec"), scope, ctx))
    out = _u(out, _json_passing(f.get("passing"), scope, ctx))
    return _u(out, _u(_json_behavior(f.get("on_empty"), scope, ctx), _json_behavior(f.get("on_error"), scope, ctx)))


def _e_json_inline_expr(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _jve(f.get("expr"), scope, ctx)


def _e_json_array_query(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _subquery_lineage(f.get("query"), scope, ctx)


def _e_multi_assign(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    return _multi_assign(f, scope, ctx)


_EXPR_HANDLERS: dict[str, Any] = {
    "ColumnRef": _e_column_ref,
    "A_Const": _no_columns,
    "ParamRef": _no_columns,
    "SQLValueFunction": _no_columns,
    "MergeSupportFunc": _no_columns,
    "SetToDefault": _no_columns,
    "A_Expr": _e_a_expr,
    "BoolExpr": _fields_of("args"),
    "FuncCall": _e_func_call,
    "NamedArgExpr": _fields_of("arg"),
    "TypeCast": _e_type_cast,
    "CollateClause": _fields_of("arg"),
    "CaseExpr": _e_case,
    "CoalesceExpr": _fields_of("args"),
    "MinMaxExpr": _fields_of("args"),
    "NullTest": _fields_of("arg"),
    "BooleanTest": _fields_of("arg"),
    "SubLink": _e_sublink,
    "RowExpr": _fields_of("args"),
    "A_ArrayExpr": _fields_of("elements"),
    "A_Indirection": _e_indirection,
    "GroupingFunc": _fields_of("args"),
    "XmlExpr": _fields_of("args", "named_args"),
    "XmlSerialize": _fields_of("expr"),
    "ResTarget": _e_res_target,
    "SortBy": _fields_of("node"),
    "List": _fields_of("items"),
    "JsonValueExpr": lambda f, s, c: _jve(f, s, c),
    "JsonKeyValue": lambda f, s, c: _json_key_value(f, s, c),
    "JsonObjectConstructor": _e_json_object,
    "JsonArrayConstructor": _e_json_array,
    "JsonArrayQueryConstructor": _e_json_array_query,
    "JsonObjectAgg": _e_json_object_agg,
    "JsonArrayAgg": _e_json_array_agg,
    "JsonFuncExpr": _e_json_func,
    "JsonParseExpr": _e_json_inline_expr,
    "JsonSerializeExpr": _e_json_inline_expr,
    "JsonScalarExpr": _fields_of("expr"),
    "JsonIsPredicate": _fields_of("expr"),
    "MultiAssignRef": _e_multi_assign,
}


def _multi_assign(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Lineage:
    """``SET (a, b) = (SELECT ...)`` / ``= ROW(...)``: the colno-th value of the source."""
    source, colno = f.get("source"), f.get("colno", 0)
    if type(source) is dict and "SubLink" in source:
        try:
            cols = _select_node(source["SubLink"].get("subselect"), scope, ctx)
        except _Fail:
            return None
        return cols[colno - 1][1] if 0 < colno <= len(cols) else None
    if type(source) is dict and "RowExpr" in source:
        args = source["RowExpr"].get("args", ())
        return _expr(args[colno - 1], scope, ctx) if 0 < colno <= len(args) else None
    return _expr(source, scope, ctx)


# --------------------------------------------------------------------------------------------
# Target lists


def _targets(targets: list[Any], scope: _Scope, ctx: _Ctx) -> Cols:
    out: Cols = []
    for target in targets:
        rt = target["ResTarget"]
        val = rt.get("val")
        if type(val) is dict and "ColumnRef" in val and "A_Star" in val["ColumnRef"]["fields"][-1]:
            out.extend(_star(val["ColumnRef"]["fields"], scope, ctx))
            continue
        if type(val) is dict and "A_Indirection" in val:
            ind = val["A_Indirection"]
            if ind.get("indirection") and "A_Star" in ind["indirection"][-1]:
                out.extend(_composite_star(ind, scope, ctx))
                continue
        out.append((rt.get("name") or _colname(val), _expr(val, scope, ctx)))
    return out


def _star(fields: list[Any], scope: _Scope, ctx: _Ctx) -> Cols:
    """``*`` or ``q.*`` in a target list: one output column per column."""
    if len(fields) == 1:
        items = [item for item in scope.items if item.cols_visible]
        if not items:
            raise _Fail  # SELECT * with no tables
        out: Cols = []
        for item in items:
            if item.cols is None:
                raise _Fail
            out.extend(item.cols)
        return out
    names = [p["String"]["sval"] for p in fields[:-1] if "String" in p]
    item = _qualifier_item(names, scope, ctx) if len(names) == len(fields) - 1 else None
    if item is None or item.cols is None:
        raise _Fail
    return list(item.cols)


def _composite_star(ind: dict[str, Any], scope: _Scope, ctx: _Ctx) -> Cols:
    """``(u).*``: expands like ``u.*`` when ``u`` is a whole-row reference; otherwise the width is unknown."""
    arg = ind.get("arg")
    if len(ind["indirection"]) == 1 and type(arg) is dict and "ColumnRef" in arg:
        parts = arg["ColumnRef"]["fields"]
        if all("String" in p for p in parts):
            names = [p["String"]["sval"] for p in parts]
            if len(names) == 1 and _unqualified(scope, names[0])[0]:
                raise _Fail  # a composite column: its fields are not in the catalog
            item = _qualifier_item(names, scope, ctx)
            if item is not None and item.cols is not None:
                return list(item.cols)
    raise _Fail


# --------------------------------------------------------------------------------------------
# Queries


def _select_node(node: Any, outer: _Scope | None, ctx: _Ctx) -> Cols:
    if type(node) is not dict or "SelectStmt" not in node:
        raise _Fail
    return _select(node["SelectStmt"], outer, ctx)


def _select(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols:
    """The output columns of a SelectStmt (plain, VALUES or set operation)."""
    scope = _Scope(outer)
    with_clause = f.get("withClause")
    if with_clause:
        _with(with_clause, scope, ctx)
    if f.get("op", "SETOP_NONE") != "SETOP_NONE":
        left = _select(f["larg"], scope, ctx)
        right = _select(f["rarg"], scope, ctx)
        if len(left) != len(right):
            raise _Fail
        # column i of a set operation derives from column i of every branch
        return [(name, _u(lin, right[i][1])) for i, (name, lin) in enumerate(left)]
    values = f.get("valuesLists")
    if values:
        rows = [row["List"]["items"] for row in values]
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            raise _Fail
        out: Cols = [(f"column{i + 1}", _EMPTY) for i in range(width)]
        for row in rows:
            out = [(name, _u(lin, _expr(row[i], scope, ctx))) for i, (name, lin) in enumerate(out)]
        return out
    for w in f.get("windowClause", ()):
        wd = w.get("WindowDef", {})
        if wd.get("name"):
            scope.windows[wd["name"]] = wd
    scope.items = _from_clause(f.get("fromClause", ()), scope, ctx)
    return _targets(f.get("targetList", ()), scope, ctx)


def _with(clause: dict[str, Any], scope: _Scope, ctx: _Ctx) -> None:
    recursive = bool(clause.get("recursive"))
    entries: list[tuple[str, _Cte]] = []
    for node in clause.get("ctes", ()):
        cte = node["CommonTableExpr"]
        entry = _Cte(cte, scope, recursive)
        entries.append((cte["ctename"], entry))
        if recursive:  # every CTE of a WITH RECURSIVE sees every other, itself included
            scope.ctes[cte["ctename"]] = entry
    for name, entry in entries:
        if entry.state == _PENDING:
            _eval_cte(entry, ctx)
        if not recursive:  # later CTEs and the query see it, earlier ones do not
            scope.ctes[name] = entry


def _eval_cte(entry: _Cte, ctx: _Ctx) -> None:
    entry.state = _IN_PROGRESS
    cte, scope = entry.node, entry.scope
    aliases = _names(cte.get("aliascolnames", ()))
    query = cte.get("ctequery")
    try:
        select = query.get("SelectStmt") if type(query) is dict else None
        if entry.recursive and select is not None and select.get("op") == "SETOP_UNION":
            # seed with the non-recursive term, then grow until the recursive term adds nothing
            entry.cols = _rename(_select(select["larg"], scope, ctx), aliases)
            for _ in range(_MAX_FIXPOINT):
                full = _rename(_select(select, scope, ctx), aliases)
                if len(full) != len(entry.cols):
                    raise _Fail
                grown = [(name, _u(lin, full[i][1])) for i, (name, lin) in enumerate(entry.cols)]
                if grown == entry.cols:
                    break
                entry.cols = grown
            else:
                raise _Fail
        else:
            out = _statement_cols(query, scope, ctx)
            if out is None:
                raise _Fail  # a data-modifying CTE without RETURNING cannot be read from
            entry.cols = _rename(out, aliases)
        entry.cols = entry.cols + _search_cycle_cols(cte, entry.cols)
    except _Fail:
        entry.cols = None
    entry.state = _DONE


def _search_cycle_cols(cte: dict[str, Any], cols: Cols) -> Cols:
    """The columns SEARCH ... SET and CYCLE ... SET ... USING add to a recursive CTE."""
    extra: Cols = []
    by_name = dict(cols)

    def of(names: list[str]) -> Lineage:
        out: Lineage = _EMPTY
        for n in names:
            if n not in by_name:
                raise _Fail
            out = _u(out, by_name[n])
        return out

    search = cte.get("search_clause")
    if search:
        extra.append((search["search_seq_column"], of(_names(search.get("search_col_list", ())))))
    cycle = cte.get("cycle_clause")
    if cycle:
        lin = of(_names(cycle.get("cycle_col_list", ())))
        extra.append((cycle["cycle_mark_column"], lin))
        extra.append((cycle["cycle_path_column"], lin))
    return extra


def _rename(cols: Cols | None, aliases: list[str]) -> Cols | None:
    """Apply an alias column list: it renames the first columns, in order."""
    if cols is None or not aliases:
        return cols
    if len(aliases) > len(cols):
        raise _Fail
    return [(aliases[i], lin) if i < len(aliases) else (name, lin) for i, (name, lin) in enumerate(cols)]


def _alias(f: dict[str, Any]) -> tuple[str | None, list[str]]:
    alias = f.get("alias")
    if not alias:
        return None, []
    return alias.get("aliasname"), _names(alias.get("colnames", ()))


# --------------------------------------------------------------------------------------------
# FROM


def _from_clause(nodes: Any, scope: _Scope, ctx: _Ctx) -> list[_Item]:
    items: list[_Item] = []
    for node in nodes:
        # `items` so far is what a LATERAL item may refer to; a new list each time
        new, _ = _from_node(node, scope, items, ctx)
        items = items + new
    return items


def _from_node(node: dict[str, Any], scope: _Scope, lateral: list[_Item], ctx: _Ctx) -> tuple[list[_Item], Cols | None]:
    """The namespace items a FROM entry adds, and the columns it exposes (for joins and ``*``)."""
    ((kind, f),) = node.items()
    if kind == "RangeVar":
        item = _range_var(f, scope, ctx)
    elif kind == "RangeSubselect":
        name, aliases = _alias(f)
        parent = _Scope(scope, list(lateral)) if f.get("lateral") else scope
        try:
            cols = _rename(_select_node(f.get("subquery"), parent, ctx), aliases)
        except _Fail:
            cols = None
        item = _Item(name, cols)
    elif kind == "RangeFunction":
        item = _range_function(f, _Scope(scope, list(lateral)), ctx)  # functions are implicitly lateral
    elif kind == "JoinExpr":
        return _join(f, scope, lateral, ctx)
    elif kind == "RangeTableSample":
        return _from_node(f["relation"], scope, lateral, ctx)
    elif kind == "RangeTableFunc":
        item = _xml_table(f, _Scope(scope, list(lateral)), ctx)
    elif kind == "JsonTable":
        item = _json_table(f, _Scope(scope, list(lateral)), ctx)
    else:
        item = _Item(_alias(f)[0] if type(f) is dict else None, None)
    return [item], item.cols


def _range_var(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> _Item:
    schema, name = f.get("schemaname"), f["relname"]
    alias, aliases = _alias(f)
    if schema is None:
        cte = _find_cte(scope, name)
        if cte is not None:
            if cte.state == _PENDING:
                _eval_cte(cte, ctx)
            elif cte.state == _IN_PROGRESS and cte.cols is None:
                raise _Fail  # referenced from its own non-recursive term
            return _Item(alias or name, _rename(cte.cols, aliases))
    key = ctx.lookup(schema, name)
    if key is None:
        return _Item(alias or name, None, relation=None if alias else f"{schema}.{name}" if schema else None)
    table = key not in ctx.catalog.views
    return _Item(alias or name, _rename(ctx.relation_cols(key), aliases), relation=None if alias else key, table=table)


def _range_function(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> _Item:
    name, aliases = _alias(f)
    funcs = f.get("functions", ())
    cols: Cols | None = []
    first_name = None
    for entry in funcs:
        call, coldef = (entry["List"]["items"] + [None, None])[:2]
        fc = call.get("FuncCall") if type(call) is dict else None
        if fc is None:
            cols = None
            break
        parts = _names(fc["funcname"])
        fname = parts[-1]
        first_name = first_name or fname
        if not ctx.trusted_function(parts):
            cols = None
            break
        args = [_expr(a, scope, ctx) for a in fc.get("args", ())]
        every = _EMPTY
        for a in args:
            every = _u(every, a)
        coldefs = coldef.get("List", {}).get("items") if type(coldef) is dict else None
        if not coldefs and len(funcs) == 1:
            coldefs = f.get("coldeflist")
        spec = _SRF_COLUMNS.get(fname)
        if coldefs:  # AS (a int, b text): a record-returning built-in such as json_to_recordset
            cols.extend((c["ColumnDef"]["colname"], every) for c in coldefs)
        elif spec == _PER_ARG:
            if len(args) == 1 and len(funcs) == 1 and name:
                cols.append((name, args[0]))
            else:
                cols.extend(("unnest", a) for a in args)
        elif spec == _SCALAR:
            cols.append((name if len(funcs) == 1 and name else fname, every))
        elif type(spec) is tuple:
            cols.extend((col, every) for col in spec)
        else:
            cols = None  # a result shape we do not know
            break
    if cols is not None and f.get("ordinality"):
        cols.append(("ordinality", _EMPTY))
    try:
        cols = _rename(cols, aliases)
    except _Fail:
        cols = None
    return _Item(name or first_name, cols)


def _xml_table(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> _Item:
    name, aliases = _alias(f)
    base = _u(_expr(f.get("docexpr"), scope, ctx), _expr(f.get("rowexpr"), scope, ctx))
    base = _u(base, _exprs(f.get("namespaces"), scope, ctx))
    cols: Cols = []
    for c in f.get("columns", ()):
        col = c["RangeTableFuncCol"]
        if col.get("for_ordinality"):
            cols.append((col["colname"], _EMPTY))
        else:
            lin = _u(base, _u(_expr(col.get("colexpr"), scope, ctx), _expr(col.get("coldefexpr"), scope, ctx)))
            cols.append((col["colname"], lin))
    try:
        return _Item(name or "xmltable", _rename(cols, aliases))
    except _Fail:
        return _Item(name or "xmltable", None)


def _json_table(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> _Item:
    name, aliases = _alias(f)
    base = _u(_jve(f.get("context_item"), scope, ctx), _json_passing(f.get("passing"), scope, ctx))
    base = _u(base, _json_behavior(f.get("on_error"), scope, ctx))
    cols: Cols = []

    def walk(columns: Any) -> None:
        for c in columns or ():
            col = c["JsonTableColumn"]
            kind = col.get("coltype")
            if kind == "JTC_NESTED":
                walk(col.get("columns"))
            elif kind == "JTC_FOR_ORDINALITY":
                cols.append((col["name"], _EMPTY))
            else:
                extra = _u(_json_behavior(col.get("on_empty"), scope, ctx), _json_behavior(col.get("on_error"), scope, ctx))
                cols.append((col["name"], _u(base, extra)))

    walk(f.get("columns"))
    try:
        return _Item(name or "json_table", _rename(cols, aliases))
    except _Fail:
        return _Item(name or "json_table", None)


def _join(f: dict[str, Any], scope: _Scope, lateral: list[_Item], ctx: _Ctx) -> tuple[list[_Item], Cols | None]:
    left_items, left = _from_node(f["larg"], scope, lateral, ctx)
    # the left side is visible to a LATERAL right side
    right_items, right = _from_node(f["rarg"], scope, lateral + left_items, ctx)
    alias, aliases = _alias(f)
    cols: Cols | None
    merged: Cols | None = []
    if left is None or right is None:
        cols = merged = None
    else:
        if f.get("isNatural"):
            right_names = {n for n, _ in right}
            using = [n for n, _ in left if n in right_names]
        else:
            using = _names(f.get("usingClause", ()))
        for col in using:
            lhs = [lin for n, lin in left if n == col]
            rhs = [lin for n, lin in right if n == col]
            if len(lhs) != 1 or len(rhs) != 1:
                raise _Fail  # PostgreSQL refuses a missing or repeated join column
            # a merged column is one side's value or the other's (COALESCE for FULL JOIN)
            merged.append((col, _u(lhs[0], rhs[0])))
        used = set(using)
        cols = merged + [c for c in left if c[0] not in used] + [c for c in right if c[0] not in used]
        try:
            cols = _rename(cols, aliases)
        except _Fail:
            cols = None
    join_item = _Item(alias, cols, rel_visible=alias is not None)
    if alias is not None:  # an aliased join hides what it contains
        items = [join_item]
    else:  # the joined items stay visible as table names, their columns only through the join
        items = left_items + right_items
        for item in items:
            item.cols_visible = False
        items.append(join_item)
    using_alias = f.get("join_using_alias")
    if using_alias:  # JOIN ... USING (a) AS j: j.a is the merged column
        items.append(_Item(using_alias.get("aliasname"), merged, cols_visible=False))
    return items, cols


# --------------------------------------------------------------------------------------------
# Data-modifying statements (RETURNING)


def _target(f: dict[str, Any], scope: _Scope, ctx: _Ctx) -> tuple[str | None, Cols | None]:
    rv = f["relation"]
    key = ctx.lookup(rv.get("schemaname"), rv["relname"])
    return key, (ctx.relation_cols(key) if key else None)


def _assign(extra: dict[str, Lineage], name: str, lin: Lineage) -> None:
    if name not in extra:
        raise _Fail  # not a column of the target
    extra[name] = _u(extra[name], lin)


def _returning(f: dict[str, Any], scope: _Scope, key: str | None, base: Cols | None,
               extra: dict[str, Lineage] | None, others: list[_Item], ctx: _Ctx) -> Cols | None:
    clause = f.get("returningClause")
    if not clause:
        return None
    rv = f["relation"]
    alias = (rv.get("alias") or {}).get("aliasname")
    new = None if base is None or extra is None else [(n, _u(lin, extra[n])) for n, lin in base]
    old_name, new_name = "old", "new"
    for opt in clause.get("options", ()):
        o = opt.get("ReturningOption", {})
        if o.get("option") == "RETURNING_OPTION_OLD":
            old_name = o.get("value") or old_name
        elif o.get("option") == "RETURNING_OPTION_NEW":
            new_name = o.get("value") or new_name
    table = key is not None and key not in ctx.catalog.views
    items = [_Item(alias or rv["relname"], new, relation=None if alias else key, table=table), *others,
             _Item(old_name, base, cols_visible=False), _Item(new_name, new, cols_visible=False)]
    return _targets(clause.get("exprs", ()), _Scope(scope, items), ctx)


def _insert(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    scope = _Scope(outer)
    if f.get("withClause"):
        _with(f["withClause"], scope, ctx)
    key, base = _target(f, scope, ctx)
    extra: dict[str, Lineage] | None = None
    if base is not None:
        extra = {n: _EMPTY for n, _ in base}
        names = [t["ResTarget"]["name"] for t in f.get("cols", ())] or [n for n, _ in base]
        source = f.get("selectStmt")
        if source is not None:
            try:
                src: Cols | None = _select_node(source, scope, ctx)
            except _Fail:
                src = None
            if src is None:
                extra = {n: None for n in extra}
            else:
                if len(src) > len(names):
                    raise _Fail
                for i, (_, lin) in enumerate(src):
                    _assign(extra, names[i], lin)
        conflict = f.get("onConflictClause")
        if conflict and conflict.get("action") == "ONCONFLICT_UPDATE":
            rv = f["relation"]
            alias = (rv.get("alias") or {}).get("aliasname")
            excluded = [(n, _u(lin, extra[n])) for n, lin in base]
            cscope = _Scope(scope, [_Item(alias or rv["relname"], base, relation=None if alias else key),
                                    _Item("excluded", excluded)])
            for t in conflict.get("targetList", ()):
                rt = t["ResTarget"]
                _assign(extra, rt["name"], _expr(rt.get("val"), cscope, ctx))
    return _returning(f, scope, key, base, extra, [], ctx)


def _update(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    scope = _Scope(outer)
    if f.get("withClause"):
        _with(f["withClause"], scope, ctx)
    key, base = _target(f, scope, ctx)
    from_items = _from_clause(f.get("fromClause", ()), scope, ctx)
    extra: dict[str, Lineage] | None = None
    if base is not None:
        extra = {n: _EMPTY for n, _ in base}
        rv = f["relation"]
        alias = (rv.get("alias") or {}).get("aliasname")
        table = key not in ctx.catalog.views
        uscope = _Scope(scope, [_Item(alias or rv["relname"], base, relation=None if alias else key, table=table),
                                *from_items])
        for t in f.get("targetList", ()):
            rt = t["ResTarget"]
            _assign(extra, rt["name"], _expr(rt.get("val"), uscope, ctx))
    return _returning(f, scope, key, base, extra, from_items, ctx)


def _delete(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    scope = _Scope(outer)
    if f.get("withClause"):
        _with(f["withClause"], scope, ctx)
    key, base = _target(f, scope, ctx)
    using = _from_clause(f.get("usingClause", ()), scope, ctx)
    extra = None if base is None else {n: _EMPTY for n, _ in base}
    return _returning(f, scope, key, base, extra, using, ctx)


def _merge(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    scope = _Scope(outer)
    if f.get("withClause"):
        _with(f["withClause"], scope, ctx)
    key, base = _target(f, scope, ctx)
    source, _ = _from_node(f["sourceRelation"], scope, [], ctx)
    extra: dict[str, Lineage] | None = None
    if base is not None:
        extra = {n: _EMPTY for n, _ in base}
        rv = f["relation"]
        alias = (rv.get("alias") or {}).get("aliasname")
        mscope = _Scope(scope, [_Item(alias or rv["relname"], base, relation=None if alias else key), *source])
        for clause in f.get("mergeWhenClauses", ()):
            w = clause["MergeWhenClause"]
            targets = [t["ResTarget"] for t in w.get("targetList", ())]
            if w.get("commandType") == "CMD_UPDATE":
                for rt in targets:
                    _assign(extra, rt["name"], _expr(rt.get("val"), mscope, ctx))
            elif w.get("commandType") == "CMD_INSERT":
                names = [rt["name"] for rt in targets] or [n for n, _ in base]
                values = w.get("values", ())
                if len(values) > len(names):
                    raise _Fail
                for i, v in enumerate(values):
                    _assign(extra, names[i], _expr(v, mscope, ctx))
    return _returning(f, scope, key, base, extra, source, ctx)


# --------------------------------------------------------------------------------------------
# Statements


def _copy(f: dict[str, Any], outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    if f.get("is_from"):
        return None
    if f.get("query") is not None:
        return _statement_cols(f["query"], outer, ctx)
    rv = f.get("relation")
    key = ctx.lookup(rv.get("schemaname"), rv["relname"]) if rv else None
    cols = ctx.relation_cols(key) if key else None
    if cols is None:
        raise _Fail
    wanted = _names(f.get("attlist", ()))
    if not wanted:
        return cols
    by_name = dict(cols)
    if any(n not in by_name for n in wanted):
        raise _Fail
    return [(n, by_name[n]) for n in wanted]


def _statement_cols(node: Any, outer: _Scope | None, ctx: _Ctx) -> Cols | None:
    """The output columns of a statement; None when it returns no rows."""
    if type(node) is not dict or len(node) != 1:
        raise _Fail
    ((kind, f),) = node.items()
    if kind == "SelectStmt":
        return None if f.get("intoClause") else _select(f, outer, ctx)
    if kind == "InsertStmt":
        return _insert(f, outer, ctx)
    if kind == "UpdateStmt":
        return _update(f, outer, ctx)
    if kind == "DeleteStmt":
        return _delete(f, outer, ctx)
    if kind == "MergeStmt":
        return _merge(f, outer, ctx)
    if kind == "CopyStmt":
        return _copy(f, outer, ctx)
    if kind in ("DeclareCursorStmt", "PrepareStmt"):
        # the rows a later FETCH / EXECUTE returns
        return _statement_cols(f.get("query"), outer, ctx)
    raise _Fail  # EXPLAIN, SHOW, FETCH, EXECUTE, CALL...: not analysed


def _parse(sql: str) -> list[dict[str, Any]] | None:
    if "\x00" in sql:
        return None
    try:
        tree = msgspec.json.decode(_pg.parse_sql_json(sql))
    except Exception:  # syntax errors, and trees too deep for the decoder
        return None
    return [s.get("stmt") for s in tree.get("stmts", ())]


def _lineage_of(stmt: Any, ctx: _Ctx) -> OutputLineage | None:
    try:
        cols = _statement_cols(stmt, None, ctx)
    except _TREE_ERRORS:
        # _Fail, a tree too deep to walk, or a tree shape this module does not expect: cannot tell
        return None
    if cols is None:
        return None
    return OutputLineage(columns=tuple(lin for _, lin in cols), names=tuple(n for n, _ in cols))


def statement_lineages(sql: str, catalog: Catalog, *, _views: dict[str, Any] | None = None
                       ) -> tuple[OutputLineage | None, ...] | None:
    """The lineage of every statement of ``sql``, in order (None where a statement returns no
    rows or cannot be analysed); None when ``sql`` does not parse."""
    stmts = _parse(sql)
    if stmts is None:
        return None
    ctx = _Ctx(catalog, _views)
    return tuple(_lineage_of(stmt, ctx) for stmt in stmts)


def output_lineage(sql: str, catalog: Catalog) -> OutputLineage | None:
    """The lineage of each output column of one statement.

    None: not exactly one statement, not row-returning (DECLARE / PREPARE count as their query,
    COPY ... TO as its rows), or the column count itself cannot be determined.
    """
    found = statement_lineages(sql, catalog)
    if found is None or len(found) != 1:
        return None
    return found[0]


def view_lineage(view: str, catalog: Catalog, *, _views: dict[str, Any] | None = None) -> OutputLineage | None:
    """The lineage of a view's (or materialized view's) columns in its definition, down to base
    tables and through the views it uses (those views' own columns included, not ``view``'s).
    ``view`` is ``schema.name`` or a name looked up along the search path."""
    ctx = _Ctx(catalog, _views)
    schema, _, name = view.rpartition(".")
    key = ctx.lookup(schema or None, name)
    if key is None or key not in catalog.views:
        return None
    try:
        found = ctx.view(key)
    except _TREE_ERRORS:
        return None
    if found is None:
        return None
    names, lineages = found
    return OutputLineage(columns=lineages, names=names)


class LineageCache:
    """Bounded LRU of lineages keyed on (statement text, catalog object).

    A catalog is identified by the object itself: each entry holds a reference to its catalog, so
    an ``id`` cannot be reused while the entry lives, and a refreshed catalog (a new object) never
    hits the entries of the old one. View lineages are memoised per catalog as well. Texts longer
    than ``max_cached_chars`` are analysed but not cached.
    """

    __slots__ = ("size", "max_cached_chars", "_entries", "_views", "_views_max", "stats")

    def __init__(self, size: int = 4096, *, max_cached_chars: int = 16384, catalogs: int = 8):
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.max_cached_chars = max_cached_chars
        self._entries: OrderedDict[tuple[int, str], tuple[Catalog, Any]] = OrderedDict()
        # per catalog: its view memo, bounded to the `catalogs` most recent
        self._views: OrderedDict[int, tuple[Catalog, dict[str, Any]]] = OrderedDict()
        self._views_max = catalogs
        self.stats = [0, 0]  # [hits, misses]

    def statement_lineages(self, sql: str, catalog: Catalog) -> tuple[OutputLineage | None, ...] | None:
        key = (id(catalog), sql)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is catalog:
            self._entries.move_to_end(key)
            self.stats[0] += 1
            return hit[1]
        self.stats[1] += 1
        result = statement_lineages(sql, catalog, _views=self._view_memo(catalog))
        if len(sql) <= self.max_cached_chars:
            self._entries[key] = (catalog, result)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return result

    def output_lineage(self, sql: str, catalog: Catalog) -> OutputLineage | None:
        found = self.statement_lineages(sql, catalog)
        if found is None or len(found) != 1:
            return None
        return found[0]

    def view_lineage(self, view: str, catalog: Catalog) -> OutputLineage | None:
        return view_lineage(view, catalog, _views=self._view_memo(catalog))

    def _view_memo(self, catalog: Catalog) -> dict[str, Any]:
        entry = self._views.get(id(catalog))
        if entry is not None and entry[0] is catalog:
            self._views.move_to_end(id(catalog))
            return entry[1]
        memo: dict[str, Any] = {}
        self._views[id(catalog)] = (catalog, memo)
        while len(self._views) > self._views_max:
            self._views.popitem(last=False)
        return memo

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._views.clear()

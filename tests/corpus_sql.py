"""The bypass corpus: ways to run a statement the policy denies, and statements that only look like one.

Shared by ``tests/unit/test_policy_corpus.py`` (every case through ``SessionPolicy.check_sql``)
and ``tests/e2e/test_postgres_policy_corpus.py`` (every case through the gateway with psql,
psycopg and asyncpg against a real PostgreSQL, checking that nothing happened).

The rules below are what the corpus runs against. A DENIED case is one way to make a server run
something one of them forbids; it must be refused (42501, the message naming the rule, or saying
why it cannot be decided), leave the database as it was and leave the session usable. An ALLOWED
case only mentions the words (in literals, comments, identifiers, names that a glob does not
cover, CTEs that shadow a table name, plans that do not execute...) and must run and return
``expect``.

Cases are written against the fixture database in ``SETUP_SQL`` (the e2e module creates it):
``t`` (3 rows), ``secrets``, ``vault.keys``, ``public.keys``, ``items`` and look-alikes such as
``secrets_archive``. Notes on glob semantics that decide some cases:

* ``tables = ["secrets"]``: the relation name ``secrets`` in any schema, exactly -- so
  ``secrets_archive`` and ``public_secrets`` are other tables (allowed cases), while
  ``public.secrets``, ``"secrets"``, ``U&"\\0073ecrets"`` and ``corpus.public.secrets`` are it.
* ``tables = ["vault.*"]``: ``vault.keys`` however spelled, and an unqualified ``keys`` once the
  caller has put ``vault`` on its search_path (``SET search_path``, ``set_config``). The corpus
  also expects unqualified names under the default search_path (``SELECT ... FROM t``) to pass:
  a schema glob that refused every unqualified table would make ``vault.*`` unusable.
* ``functions = ["pg_sleep*"]`` covers ``pg_sleep_for``, ``pg_sleep_until`` and a user function
  named ``pg_sleep_report`` (denied case ``fn-glob-prefix``), but not ``report_pg_sleep`` (allowed):
  a glob is anchored at both ends. ``lo_*`` needs the underscore: ``lower`` and ``log`` pass.
* ``"PG_SLEEP"(0)`` (quoted upper case) names a function that does not exist, so it is no bypass
  and not in the corpus; unquoted ``PG_SLEEP(0)`` folds to ``pg_sleep`` and is.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Case", "RULES", "RULE_NAMES", "DENIED", "ALLOWED", "SETUP_SQL", "refusal_problem"]

RULES: list[dict[str, Any]] = [
    {"name": "no-destructive", "action": "deny", "match": {"sql": ["DROP", "TRUNCATE", "DELETE"]}},
    {"name": "no-role-changes", "action": "deny",
     "match": {"sql": ["ALTER ROLE", "CREATE ROLE", "GRANT", "SET ROLE", "SET SESSION AUTHORIZATION"]}},
    {"name": "no-secrets", "action": "deny", "match": {"tables": ["secrets", "vault.*"]}},
    {"name": "no-sleep", "action": "deny",
     "match": {"functions": ["pg_sleep*", "dblink*", "lo_*", "pg_read_file", "pg_terminate_backend"]}},
    {"name": "no-copy-program", "action": "deny", "match": {"text": [r"\bPROGRAM\b"]}},
]
RULE_NAMES: tuple[str, ...] = tuple(r["name"] for r in RULES)

DESTRUCTIVE, ROLES, SECRETS, SLEEP, PROGRAM = RULE_NAMES

# Run by the e2e module as the `app` role in a fresh database (schemas public and vault owned by
# app); `wg_corpus_admin` is a NOLOGIN role app is a member of, so SET ROLE would succeed.
SETUP_SQL = """
CREATE TABLE t (id int);
INSERT INTO t VALUES (1), (2), (3);
CREATE TABLE secrets (id int, value text);
INSERT INTO secrets VALUES (1, 's3cr3t'), (2, 'hunter2');
CREATE TABLE vault.keys (id int, k text);
INSERT INTO vault.keys VALUES (1, 'k1');
CREATE TABLE keys (id int);
INSERT INTO keys VALUES (7);
CREATE TABLE secrets_archive (id int);
INSERT INTO secrets_archive VALUES (1), (2);
CREATE TABLE public_secrets (id int);
INSERT INTO public_secrets VALUES (5);
CREATE TABLE items (id int, note text);
INSERT INTO items VALUES (1, 'please DELETE me'), (2, 'keep'), (3, 'DROP it');
CREATE TABLE audit (id int, deleted boolean, drop_count int);
INSERT INTO audit VALUES (1, true, 4);
CREATE FUNCTION report_pg_sleep() RETURNS text LANGUAGE sql AS $$SELECT 'report'$$;
CREATE FUNCTION pg_sleep_report() RETURNS text LANGUAGE sql AS $$SELECT 'report'$$;
"""
ADMIN_ROLE = "wg_corpus_admin"


class Case(msgspec.Struct, frozen=True, kw_only=True):
    """One corpus entry.

    steps: SQL strings sent one after the other on one session (each one Query / one Parse);
      most cases have one.
    rules: (denied) the rules that may refuse it; the first in file order that applies is the
      expected one, a later one is listed where an analysis may legitimately stop earlier
      (``dblink_exec('..', 'DROP ..')`` is refused by ``no-sleep`` even if its SQL is not read).
    undecidable: (denied) a refusal because the analysis cannot tell what runs is acceptable
      (42501, message saying why).
    deny_at: (denied) index of the step that must be refused; steps before it must pass.
    codes: acceptable SQLSTATEs of the refusal.
    params: bind parameters for the last step ($1, $2 ...): extended protocol only.
    expect: (allowed) every row of every result of every step, psql ``-At`` style
      (``a|b``; NULL as ""); None: only success is checked.
    mutates: (allowed) the case may change the database (it is reset afterwards).
    allow_changes: (denied) fingerprint parts an allowed setup step may change.
    server_params: (unit test) server parameters the session reports before the steps, where
      an e2e step changes them on the server (``SET standard_conforming_strings = off``).
    clients: only these drivers run the case (default: every driver that can).
    """

    id: str
    group: str
    steps: tuple[str, ...]
    why: str = ""
    rules: tuple[str, ...] = ()
    undecidable: bool = False
    deny_at: int = -1
    codes: tuple[str, ...] = ("42501",)
    params: tuple[Any, ...] | None = None
    expect: tuple[str, ...] | None = None
    mutates: bool = False
    allow_changes: tuple[str, ...] = ()
    server_params: dict[str, str] = msgspec.field(default_factory=dict)
    clients: tuple[str, ...] | None = None

    @property
    def deny_index(self) -> int:
        return self.deny_at % len(self.steps)


def _steps(sql: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return (sql,) if isinstance(sql, str) else tuple(sql)


def D(id: str, group: str, sql: str | list[str], rules: str | tuple[str, ...] = (), **kw: Any) -> Case:
    return Case(id=id, group=group, steps=_steps(sql), rules=(rules,) if isinstance(rules, str) else rules, **kw)


def A(id: str, group: str, sql: str | list[str], expect: list[str] | None = None, **kw: Any) -> Case:
    return Case(id=id, group=group, steps=_steps(sql), expect=tuple(expect) if expect is not None else None, **kw)


def refusal_problem(case: Case, sqlstate: str | None, message: str | None) -> str | None:
    """None when (sqlstate, message) is an acceptable refusal of ``case``, else what is wrong."""
    if sqlstate is None:
        return "not refused"
    if sqlstate not in case.codes:
        return f"SQLSTATE {sqlstate}, expected {'/'.join(case.codes)}: {message}"
    message = message or ""
    if not message.startswith("wiregate:"):
        return f"refused by the server, not the gateway: {sqlstate} {message}"
    if any(f'rule "{r}"' in message for r in case.rules):
        return None
    if case.undecidable or sqlstate != "42501":
        # fail-closed refusals (undecidable, unparsable, backslash with scs off) say why
        low = message.lower()
        if "cannot" in low or "refused" in low or any(f'rule "{r}"' in message for r in RULE_NAMES):
            return None
        return f"refusal does not say why: {message}"
    return f"refused, but not by {' or '.join(case.rules)}: {message}"


# ------------------------------------------------------------------------------------------------
# DENIED: ways to run what a rule forbids

DENIED: list[Case] = [
    # ---- case and whitespace games
    D("ws-lower", "case-whitespace", "drop table t", DESTRUCTIVE),
    D("ws-mixed-case", "case-whitespace", "DrOp TaBlE t", DESTRUCTIVE),
    D("ws-tabs-newlines", "case-whitespace", "DROP\tTABLE\n\n   t", DESTRUCTIVE),
    D("ws-form-feed", "case-whitespace", "DELETE\fFROM\ft", DESTRUCTIVE,
      why="\\f is whitespace to PostgreSQL's lexer"),
    D("ws-empty-statements", "case-whitespace", ";;; DELETE FROM t ;;", DESTRUCTIVE),
    D("ws-truncate-spelled-out", "case-whitespace", "TRUNCATE TABLE ONLY t RESTART IDENTITY", DESTRUCTIVE),

    # ---- comments
    D("cmt-between-tokens", "comments", "/**/DROP/**/TABLE/**/t", DESTRUCTIVE),
    D("cmt-line-before", "comments", "-- just a select\nDELETE FROM t", DESTRUCTIVE),
    D("cmt-nested-before", "comments", "/* outer /* inner */ still a comment */ DELETE FROM t", DESTRUCTIVE),
    D("cmt-cr-ends-line-comment", "comments", "SELECT 1 -- a carriage return ends this comment\r; DROP TABLE t",
      DESTRUCTIVE, why="PostgreSQL ends -- comments at \\r as well as \\n"),
    D("cmt-markers-in-literals", "comments", "SELECT '/*'; DROP TABLE t; SELECT '*/'", DESTRUCTIVE),
    D("cmt-dashes-in-literal", "comments", "SELECT '--'; TRUNCATE t", DESTRUCTIVE),
    D("cmt-quote-in-comment", "comments", "DROP /* ' */ TABLE t /* ' */", DESTRUCTIVE),
    D("cmt-markers-in-identifiers", "comments", 'SELECT 1 AS "/*"; DROP TABLE t; SELECT 1 AS "*/"', DESTRUCTIVE),

    # ---- quoting, escapes
    D("q-quoted-identifiers", "quoting", 'DROP TABLE "public"."t"', DESTRUCTIVE),
    D("q-unicode-identifier", "quoting", 'DROP TABLE U&"\\0074"', DESTRUCTIVE),
    D("q-unicode-uescape", "quoting", "DELETE FROM U&\"!0074\" UESCAPE '!'", DESTRUCTIVE),
    D("q-estring-escaped-quote", "quoting", "SELECT E'\\''; DROP TABLE t; --'", DESTRUCTIVE,
      why="\\' ends nothing in an E-string: the literal is one quote, then DROP runs"),
    D("q-standard-string-backslash", "quoting", "SELECT 'a\\'; DELETE FROM t; --'", DESTRUCTIVE,
      why="with standard_conforming_strings on a backslash escapes nothing: the literal ends after it"),
    D("q-dollar-inside-identifier", "quoting", "SELECT 1 AS x$q$; DROP TABLE t; SELECT 2 AS y$q$", DESTRUCTIVE,
      why="x$q$ is an identifier, not the start of a dollar quote"),
    D("q-dollar-literal-holds-dollars", "quoting", "SELECT $q$ $$ $q$; DROP TABLE t", DESTRUCTIVE),

    # ---- several statements in one string (the MCP read-only wrapper escape)
    D("multi-select-drop", "multi-statement", "SELECT 1; DROP TABLE t", DESTRUCTIVE),
    D("mcp-commit-drop", "multi-statement", "COMMIT; DROP TABLE t", DESTRUCTIVE),
    D("mcp-rollback-delete", "multi-statement", "ROLLBACK; DELETE FROM t", DESTRUCTIVE),
    D("mcp-end-truncate", "multi-statement", "END; TRUNCATE t", DESTRUCTIVE),
    D("mcp-abort-drop", "multi-statement", "ABORT; DROP TABLE t", DESTRUCTIVE),
    D("mcp-commit-begin-again", "multi-statement",
      ["BEGIN TRANSACTION READ ONLY", "COMMIT; BEGIN; DELETE FROM t; COMMIT", "ROLLBACK"], DESTRUCTIVE, deny_at=1,
      why="ends the wrapper's read-only transaction and opens a read-write one"),
    D("mcp-select-commit-delete", "multi-statement", "SELECT 1; COMMIT; DELETE FROM t", DESTRUCTIVE),
    D("mcp-read-only-wrapper", "multi-statement",
      ["BEGIN TRANSACTION READ ONLY", "COMMIT; DROP TABLE t", "ROLLBACK"], DESTRUCTIVE, deny_at=1,
      why="what an MCP tool sends: its own read-only transaction around the agent's text"),

    # ---- transactions
    D("txn-one-string", "transactions", "BEGIN; SELECT 1; DROP TABLE t; COMMIT", DESTRUCTIVE),
    D("txn-insert-then-drop", "transactions", ["BEGIN", "INSERT INTO t VALUES (99)", "DROP TABLE t", "COMMIT"],
      DESTRUCTIVE, deny_at=2, why="the refusal aborts the transaction: the INSERT must not be committed"),
    D("txn-savepoint", "transactions",
      ["BEGIN", "SAVEPOINT a", "DELETE FROM t", "ROLLBACK TO SAVEPOINT a", "COMMIT"], DESTRUCTIVE, deny_at=2),
    D("txn-rolled-back-anyway", "transactions", "START TRANSACTION; DELETE FROM t; ROLLBACK", DESTRUCTIVE),

    # ---- data-modifying CTEs
    D("cte-delete-returning", "cte", "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", DESTRUCTIVE),
    D("cte-delete-unreferenced", "cte", "WITH d AS (DELETE FROM t) SELECT 1", DESTRUCTIVE,
      why="a data-modifying CTE runs even when nothing reads it"),
    D("cte-delete-into-insert", "cte",
      "WITH d AS (DELETE FROM t RETURNING id) INSERT INTO t SELECT id + 10 FROM d", DESTRUCTIVE),
    D("cte-delete-materialized", "cte", "WITH d AS MATERIALIZED (DELETE FROM t RETURNING id) SELECT 1",
      DESTRUCTIVE),

    # ---- EXPLAIN ANALYZE executes
    D("explain-analyze", "explain", "EXPLAIN ANALYZE DELETE FROM t", DESTRUCTIVE),
    D("explain-analyse", "explain", "EXPLAIN ANALYSE DELETE FROM t", DESTRUCTIVE, why="British spelling"),
    D("explain-analyse-verbose", "explain", "EXPLAIN ANALYSE VERBOSE DELETE FROM t", DESTRUCTIVE),
    D("explain-paren", "explain", "EXPLAIN (ANALYZE) DELETE FROM t", DESTRUCTIVE),
    D("explain-analyze-true", "explain", "EXPLAIN (ANALYZE TRUE, COSTS OFF) DELETE FROM t", DESTRUCTIVE),
    D("explain-analyze-1", "explain", "EXPLAIN (FORMAT JSON, ANALYZE 1) DELETE FROM t", DESTRUCTIVE),
    D("explain-analyze-string", "explain", "EXPLAIN (ANALYZE 'true') DELETE FROM t", DESTRUCTIVE),
    D("explain-analyze-on-lower", "explain", "explain (verbose, analyze on) delete from t", DESTRUCTIVE),
    D("explain-analyze-cte", "explain", "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
      DESTRUCTIVE),

    # ---- PREPARE / EXECUTE
    D("prepare-execute", "prepare", ["PREPARE p AS DELETE FROM t", "EXECUTE p"], DESTRUCTIVE, deny_at=0),
    D("prepare-params-one-string", "prepare", "PREPARE p(int) AS DELETE FROM t WHERE id > $1; EXECUTE p(0)",
      DESTRUCTIVE),

    # ---- COPY
    D("copy-delete-returning", "copy", "COPY (DELETE FROM t RETURNING *) TO STDOUT", DESTRUCTIVE),
    D("copy-cte-delete", "copy", "COPY (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) TO STDOUT",
      DESTRUCTIVE),
    D("copy-to-program", "copy", "COPY t TO PROGRAM 'cat > /dev/null'", PROGRAM),
    D("copy-from-program-lower", "copy", "copy t from /* x */ program 'echo 4'", PROGRAM),

    # ---- CREATE TABLE AS, SELECT INTO
    D("ctas-cte-delete", "create-as",
      "CREATE TABLE corpus_x AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", DESTRUCTIVE),
    D("select-into-cte-delete", "create-as",
      "WITH d AS (DELETE FROM t RETURNING *) SELECT * INTO corpus_x FROM d", DESTRUCTIVE),

    # ---- MERGE
    D("merge-delete", "merge",
      "MERGE INTO t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE", DESTRUCTIVE),
    D("merge-delete-cte-lower", "merge",
      "with s as (select 2 as id) merge into t using s on t.id = s.id when matched and true then delete",
      DESTRUCTIVE),

    # ---- rules and triggers
    D("rule-delete", "rules-triggers", "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM t", DESTRUCTIVE),
    D("rule-multi-action", "rules-triggers",
      "CREATE RULE r AS ON UPDATE TO secrets_archive DO ALSO (NOTIFY x; DELETE FROM t)", DESTRUCTIVE),
    D("trigger-function-same-string", "rules-triggers",
      "CREATE FUNCTION corpus_tf() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM t; RETURN NULL; END$$; "
      "CREATE TRIGGER corpus_tr AFTER INSERT ON items FOR EACH STATEMENT EXECUTE FUNCTION corpus_tf()",
      DESTRUCTIVE),
    D("trigger-execute-procedure", "rules-triggers",
      "CREATE FUNCTION corpus_tf() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN TRUNCATE t; RETURN NULL; END'; "
      "CREATE TRIGGER corpus_tr BEFORE UPDATE ON items EXECUTE PROCEDURE corpus_tf()", DESTRUCTIVE),

    # ---- DO blocks
    D("do-plain", "do", "DO $$BEGIN DROP TABLE t; END$$", DESTRUCTIVE),
    D("do-language-first", "do", "DO LANGUAGE plpgsql $$BEGIN DELETE FROM t; END$$", DESTRUCTIVE),
    D("do-tagged-dollar", "do", "DO $body$BEGIN TRUNCATE t; END$body$ LANGUAGE plpgsql", DESTRUCTIVE),
    D("do-execute-constant", "do", "DO $$BEGIN EXECUTE 'DROP TABLE t'; END$$", DESTRUCTIVE),
    D("do-execute-dollar-constant", "do", "DO $$BEGIN EXECUTE $q$DELETE FROM t$q$; END$$", DESTRUCTIVE),
    D("do-execute-concat", "do", "DO $$BEGIN EXECUTE 'DR' || 'OP TABLE t'; END$$", DESTRUCTIVE, undecidable=True),
    D("do-execute-format", "do", "DO $$BEGIN EXECUTE format('DROP TABLE %I', 't'); END$$", DESTRUCTIVE,
      undecidable=True),
    D("do-execute-variable", "do", "DO $$DECLARE q text := 'DROP TABLE t'; BEGIN EXECUTE q; END$$", DESTRUCTIVE,
      undecidable=True),
    D("do-execute-hex-decoded", "do",
      "DO $$BEGIN EXECUTE convert_from(decode('44524f50205441424c452074', 'hex'), 'UTF8'); END$$",
      DESTRUCTIVE, undecidable=True),
    D("do-execute-using", "do", "DO $$BEGIN EXECUTE 'DELETE FROM t WHERE id > $1' USING 0; END$$", DESTRUCTIVE),
    D("do-nested-do", "do", "DO $$BEGIN EXECUTE 'DO $x$BEGIN DROP TABLE t; END$x$'; END$$", DESTRUCTIVE),
    D("do-perform", "do", "DO $$BEGIN PERFORM pg_sleep(0); END$$", SLEEP),
    D("do-for-query-loop", "do",
      "DO $$DECLARE r record; BEGIN FOR r IN DELETE FROM t RETURNING * LOOP END LOOP; END$$", DESTRUCTIVE),
    D("do-for-execute-loop", "do",
      "DO $$DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM t RETURNING *' LOOP END LOOP; END$$",
      DESTRUCTIVE),
    D("do-exception-block", "do",
      "DO $$BEGIN BEGIN DROP TABLE t; EXCEPTION WHEN others THEN NULL; END; END$$", DESTRUCTIVE),
    D("do-if-branch", "do", "DO $$BEGIN IF now() > '2000-01-01' THEN DELETE FROM t; END IF; END$$", DESTRUCTIVE),
    D("do-unicode-body", "do", "DO U&'BEGIN \\0044ROP TABLE t; END'", DESTRUCTIVE),
    D("do-estring-body", "do", "DO E'BEGIN \\x44ROP TABLE t; END'", DESTRUCTIVE),
    D("do-continued-string-body", "do", "DO 'BEGIN DR'\n'OP TABLE t; END'", DESTRUCTIVE,
      why="string constants separated by a newline are one constant"),
    D("do-doubled-quotes", "do", "DO 'BEGIN EXECUTE ''DELETE FROM t''; END'", DESTRUCTIVE),
    D("do-plpython", "do", "DO LANGUAGE plpython3u $$plpy.execute('DROP TABLE t')$$", undecidable=True),
    D("do-declare-default-subquery", "do",
      "DO $$DECLARE n int := (SELECT count(*) FROM secrets); BEGIN RAISE NOTICE 'n=%', n; END$$", SECRETS),
    D("do-assert-message-leak", "do",
      "DO $$BEGIN ASSERT false, (SELECT string_agg(value, ',') FROM secrets); END$$", SECRETS),
    D("do-open-cursor", "do",
      "DO $$DECLARE c refcursor; r record; BEGIN OPEN c FOR SELECT * FROM secrets; FETCH c INTO r; "
      "RAISE NOTICE '%', r; END$$", SECRETS),
    D("do-create-role", "do", "DO $$BEGIN CREATE ROLE wg_corpus_evil; END$$", ROLES),
    D("do-assign-function", "do", "DO $$DECLARE x text; BEGIN x := pg_sleep(0)::text; END$$", SLEEP),

    # ---- function and procedure bodies
    D("fn-sql-body", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'", DESTRUCTIVE),
    D("fn-sql-body-several", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS int LANGUAGE sql AS $$SELECT 1; DELETE FROM t; SELECT 2$$", DESTRUCTIVE),
    D("fn-estring-body", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql AS E'DEL\\x45TE FROM t'", DESTRUCTIVE),
    D("fn-unicode-body", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql AS U&'\\0044ELETE FROM t'", DESTRUCTIVE),
    D("fn-continued-string-body", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql AS 'DEL'\n'ETE FROM t'", DESTRUCTIVE),
    D("fn-begin-atomic", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END", DESTRUCTIVE),
    D("proc-then-call", "function-bodies",
      ["CREATE PROCEDURE corpus_p() LANGUAGE plpgsql AS $$BEGIN TRUNCATE t; END$$", "CALL corpus_p()"],
      DESTRUCTIVE, deny_at=0),
    D("proc-atomic-and-call", "function-bodies",
      "CREATE PROCEDURE corpus_p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END; CALL corpus_p()", DESTRUCTIVE),
    D("fn-return-query", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS SETOF t LANGUAGE plpgsql AS "
      "$$BEGIN RETURN QUERY DELETE FROM t RETURNING *; END$$", DESTRUCTIVE),
    D("fn-return-query-execute", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS SETOF t LANGUAGE plpgsql AS "
      "$$BEGIN RETURN QUERY EXECUTE 'DELETE FROM t RETURNING *'; END$$", DESTRUCTIVE),
    D("fn-replaced-later", "function-bodies",
      ["CREATE FUNCTION corpus_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
       "CREATE OR REPLACE FUNCTION corpus_f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'",
       "SELECT corpus_f()"], DESTRUCTIVE, deny_at=1, allow_changes=("functions",),
      why="a harmless function is created first, then replaced"),
    D("fn-plpython", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE plpython3u AS $$plpy.execute('DROP TABLE t')$$",
      undecidable=True),
    D("fn-internal-wraps-pg-sleep", "function-bodies",
      "CREATE FUNCTION corpus_nap(float8) RETURNS void LANGUAGE internal AS 'pg_sleep'", SLEEP,
      undecidable=True, why="an internal-language function is a new name for a built-in"),
    D("fn-default-argument", "function-bodies",
      "CREATE FUNCTION corpus_f(x text DEFAULT pg_sleep(0)::text) RETURNS text LANGUAGE sql AS 'SELECT x'",
      SLEEP, why="the default is evaluated at every call that omits it"),
    D("fn-sql-standard-return", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS bigint LANGUAGE sql RETURN (SELECT count(*) FROM secrets)", SECRETS),
    D("fn-grant-in-body", "function-bodies",
      "CREATE FUNCTION corpus_f() RETURNS void LANGUAGE sql AS 'GRANT SELECT ON t TO PUBLIC'", ROLES),

    # ---- functions that run SQL given as a string
    D("dblink-exec-drop", "sql-running-functions", "SELECT dblink_exec('dbname=corpus', 'DROP TABLE t')",
      (DESTRUCTIVE, SLEEP)),
    D("dblink-exec-variable", "sql-running-functions",
      "SELECT dblink_exec('dbname=corpus', q) FROM (VALUES ('DROP TABLE t')) v(q)", (DESTRUCTIVE, SLEEP),
      undecidable=True),
    D("dblink-select-secrets", "sql-running-functions",
      "SELECT * FROM dblink('dbname=corpus', 'SELECT value FROM secrets') AS r(v text)", (SECRETS, SLEEP)),
    D("query-to-xml-cte-delete", "sql-running-functions",
      "SELECT query_to_xml('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', true, false, '')",
      DESTRUCTIVE),
    D("query-to-xml-secrets", "sql-running-functions",
      "SELECT query_to_xml('SELECT * FROM secrets', true, false, '')", SECRETS),
    D("query-to-xml-estring", "sql-running-functions",
      "SELECT pg_catalog.query_to_xml(E'SELECT * FROM \\x73ecrets', true, false, '')", SECRETS),
    D("query-to-xml-column-argument", "sql-running-functions",
      "SELECT query_to_xml(q, true, false, '') FROM (VALUES ('SELECT * FROM secrets')) v(q)", SECRETS,
      undecidable=True),
    D("query-to-xml-pg-sleep", "sql-running-functions",
      "SELECT query_to_xml('SELECT pg_sleep(0)', true, false, '')", SLEEP),
    D("table-to-xml", "sql-running-functions", "SELECT table_to_xml('secrets', true, false, '')", SECRETS),
    D("table-to-xml-regclass", "sql-running-functions",
      "SELECT table_to_xml('public.secrets'::regclass, true, false, '')", SECRETS),
    D("schema-to-xml", "sql-running-functions", "SELECT schema_to_xml('public', true, false, '')", SECRETS,
      undecidable=True, why="dumps every table of the schema, secrets included"),
    D("database-to-xml", "sql-running-functions", "SELECT database_to_xml(true, false, '')", SECRETS,
      undecidable=True, why="dumps every table of the database"),
    D("ts-stat-query", "sql-running-functions",
      "SELECT * FROM ts_stat('SELECT to_tsvector(value) FROM secrets')", SECRETS,
      undecidable=True, why="ts_stat runs its argument and returns every word of the result"),

    # ---- tables, every path
    D("tbl-plain", "tables", "SELECT * FROM secrets", SECRETS),
    D("tbl-schema-qualified", "tables", "SELECT * FROM public.secrets", SECRETS),
    D("tbl-quoted", "tables", 'SELECT * FROM "public"."secrets"', SECRETS),
    D("tbl-upper-case", "tables", "SELECT * FROM PUBLIC.SECRETS", SECRETS),
    D("tbl-unicode-escape", "tables", 'SELECT * FROM U&"\\0073ecrets"', SECRETS),
    D("tbl-catalog-qualified", "tables", "SELECT * FROM corpus.public.secrets", SECRETS,
      why="database.schema.table is accepted when the database is the current one"),
    D("tbl-spaced-dot", "tables", "SELECT * FROM public . secrets", SECRETS),
    D("tbl-only", "tables", "SELECT * FROM ONLY secrets", SECRETS),
    D("tbl-star-inheritance", "tables", "SELECT * FROM secrets*", SECRETS),
    D("tbl-tablesample", "tables", "SELECT * FROM secrets TABLESAMPLE SYSTEM (100)", SECRETS),
    D("tbl-whole-row", "tables", "SELECT s FROM secrets s", SECRETS),
    D("tbl-scalar-subquery", "tables", "SELECT (SELECT value FROM secrets LIMIT 1)", SECRETS),
    D("tbl-exists", "tables", "SELECT 1 WHERE EXISTS (SELECT 1 FROM secrets WHERE value LIKE 's%')", SECRETS),
    D("tbl-array-subquery", "tables", "SELECT id FROM t WHERE id = ANY (ARRAY(SELECT id FROM secrets))", SECRETS),
    D("tbl-cte", "tables", "WITH s AS (SELECT * FROM secrets) SELECT * FROM s", SECRETS),
    D("tbl-cte-sibling-scope", "tables",
      "WITH x AS (SELECT * FROM secrets), secrets AS (SELECT 99 AS id) SELECT * FROM x", SECRETS,
      why="a WITH item cannot see a later sibling: x reads the real table"),
    D("tbl-cte-outside-subquery", "tables",
      "SELECT * FROM (WITH secrets AS (SELECT 1 AS id) SELECT id FROM secrets) a, secrets b", SECRETS,
      why="the CTE is scoped to the subquery; b is the real table"),
    D("tbl-cte-qualified-reference", "tables", "WITH secrets AS (SELECT 1 AS id) SELECT * FROM public.secrets",
      SECRETS, why="a qualified name never refers to a CTE"),
    D("tbl-cte-update-target", "tables", "WITH secrets AS (SELECT 1 AS id) UPDATE secrets SET value = 'x'",
      SECRETS, why="a DML target is never a CTE"),
    D("tbl-cte-insert-target", "tables",
      "WITH secrets AS (SELECT 3 AS id) INSERT INTO secrets SELECT id, 'x' FROM secrets", SECRETS),
    D("tbl-join", "tables", "SELECT t.id, s.value FROM t JOIN secrets s ON s.id = t.id", SECRETS),
    D("tbl-lateral", "tables",
      "SELECT * FROM t, LATERAL (SELECT value FROM secrets WHERE secrets.id = t.id) s", SECRETS),
    D("tbl-insert-select", "tables", "INSERT INTO t SELECT id FROM secrets", SECRETS),
    D("tbl-table-statement", "tables", "TABLE secrets", SECRETS),
    D("tbl-copy-to", "tables", "COPY secrets TO STDOUT", SECRETS),
    D("tbl-copy-query", "tables", "COPY (SELECT * FROM secrets) TO STDOUT", SECRETS),
    D("tbl-view-definition", "tables", "CREATE VIEW corpus_v AS SELECT * FROM secrets", SECRETS),
    D("tbl-ctas", "tables", "CREATE TABLE corpus_x AS SELECT * FROM secrets", SECRETS),
    D("tbl-select-into", "tables", "SELECT * INTO corpus_x FROM secrets", SECRETS),
    D("tbl-materialized-view", "tables", "CREATE MATERIALIZED VIEW corpus_mv AS SELECT * FROM secrets", SECRETS),
    D("tbl-update-target", "tables", "UPDATE secrets SET value = 'pwned'", SECRETS),
    D("tbl-insert-target", "tables", "INSERT INTO secrets VALUES (3, 'x')", SECRETS),
    D("tbl-merge-target", "tables",
      "MERGE INTO secrets s USING (SELECT 1 AS id) v ON s.id = v.id WHEN MATCHED THEN UPDATE SET value = 'x'",
      SECRETS),
    D("tbl-rename", "tables", "ALTER TABLE secrets RENAME TO not_secret", SECRETS,
      why="renamed, later statements would not name it"),
    D("tbl-create-index", "tables", "CREATE INDEX ON secrets (value)", SECRETS),
    D("tbl-lock", "tables", "BEGIN; LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE; COMMIT", SECRETS),
    D("tbl-declare-cursor", "tables",
      "BEGIN; DECLARE c CURSOR FOR SELECT * FROM secrets; FETCH ALL FROM c; COMMIT", SECRETS),
    D("tbl-prepare", "tables", ["PREPARE p AS SELECT * FROM secrets", "EXECUTE p"], SECRETS, deny_at=0),
    D("tbl-explain-analyze", "tables", "EXPLAIN ANALYZE SELECT * FROM secrets", SECRETS),
    D("tbl-schema-element", "tables", "CREATE SCHEMA corpus_s CREATE VIEW v AS SELECT * FROM secrets", SECRETS,
      why="CREATE SCHEMA may carry CREATE VIEW / TABLE / INDEX / TRIGGER / GRANT elements"),
    D("tbl-rule-action", "tables",
      "CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO secrets VALUES (NEW.id, 'x')", SECRETS),
    D("tbl-function-body", "tables",
      "CREATE FUNCTION corpus_f() RETURNS SETOF text LANGUAGE sql AS 'SELECT value FROM secrets'", SECRETS),
    D("tbl-vault-qualified", "tables", "SELECT * FROM vault.keys", SECRETS),
    D("tbl-vault-quoted", "tables", 'SELECT * FROM "vault"."keys"', SECRETS),
    D("tbl-vault-upper", "tables", "SELECT k FROM VAULT.KEYS", SECRETS),
    D("tbl-vault-comment-dot", "tables", "SELECT * FROM vault /* x */ . keys", SECRETS),
    D("tbl-vault-catalog-qualified", "tables", "SELECT * FROM corpus.vault.keys", SECRETS),
    D("tbl-vault-set-schema", "tables", "CREATE SCHEMA corpus_s; ALTER TABLE vault.keys SET SCHEMA corpus_s",
      SECRETS, why="moved out of vault, later statements would not match vault.*"),
    D("tbl-vault-search-path", "tables", ["SET search_path = vault, public", "SELECT * FROM keys"], SECRETS,
      deny_at=1, why="unqualified keys is vault.keys once vault leads the search_path"),
    D("tbl-vault-search-path-rollback", "tables",
      ["SET search_path = vault, public", "BEGIN", "SET search_path = public", "ROLLBACK", "SELECT * FROM keys"],
      SECRETS, deny_at=4, why="ROLLBACK undoes the second SET: the search_path is vault's again"),
    D("tbl-vault-search-path-one-string", "tables", "SET search_path = vault; SELECT * FROM keys", SECRETS),
    D("tbl-vault-search-path-set-config", "tables",
      ["SELECT set_config('search_path', 'vault', false)", "SELECT * FROM keys"], SECRETS, deny_at=1),

    # ---- functions, every spelling and place
    D("fn-plain", "functions", "SELECT pg_sleep(0)", SLEEP),
    D("fn-upper", "functions", "SELECT PG_SLEEP(0)", SLEEP),
    D("fn-quoted", "functions", 'SELECT "pg_sleep"(0)', SLEEP),
    D("fn-qualified", "functions", "SELECT pg_catalog.pg_sleep(0)", SLEEP),
    D("fn-qualified-quoted", "functions", 'SELECT "pg_catalog"."pg_sleep"(0)', SLEEP),
    D("fn-unicode-escape", "functions", 'SELECT U&"pg\\005fsleep"(0)', SLEEP),
    D("fn-in-from", "functions", "SELECT * FROM pg_sleep(0)", SLEEP),
    D("fn-rows-from", "functions", "SELECT * FROM ROWS FROM (pg_sleep(0))", SLEEP),
    D("fn-lateral", "functions", "SELECT id FROM t, LATERAL pg_sleep(0)", SLEEP),
    D("fn-where", "functions", "SELECT id FROM t WHERE pg_sleep(0)::text = ''", SLEEP),
    D("fn-case", "functions", "SELECT CASE WHEN id > 0 THEN pg_sleep(0)::text END FROM t", SLEEP),
    D("fn-nested-argument", "functions", "SELECT coalesce(pg_sleep(0)::text, 'x')", SLEEP),
    D("fn-aggregate-filter", "functions", "SELECT count(*) FILTER (WHERE pg_sleep(0)::text = '') FROM t", SLEEP),
    D("fn-values", "functions", "VALUES (pg_sleep(0))", SLEEP),
    D("fn-cte", "functions", "WITH z AS (SELECT pg_sleep(0)) SELECT 1 FROM z", SLEEP),
    D("fn-update-where", "functions", "UPDATE t SET id = id WHERE pg_sleep(0)::text = ''", SLEEP),
    D("fn-returning", "functions", "INSERT INTO t VALUES (4) RETURNING pg_sleep(0)", SLEEP),
    D("fn-sleep-for", "functions", "SELECT pg_sleep_for('0 seconds')", SLEEP),
    D("fn-sleep-until", "functions", "SELECT pg_sleep_until(now())", SLEEP),
    D("fn-glob-prefix", "functions", "SELECT pg_sleep_report()", SLEEP,
      why="pg_sleep* covers any function whose name starts with pg_sleep"),
    D("fn-lo-from-bytea", "functions", "SELECT lo_from_bytea(0, 'x')", SLEEP),
    D("fn-lo-upper-qualified", "functions", "SELECT PG_CATALOG.LO_CREAT(-1)", SLEEP),
    D("fn-lo-import", "functions", "SELECT lo_import('/etc/hostname')", SLEEP),
    D("fn-read-file", "functions", "SELECT pg_read_file('/etc/hostname')", SLEEP),
    D("fn-terminate-self", "functions", "SELECT pg_terminate_backend(pg_backend_pid())", SLEEP),
    D("fn-terminate-from-subquery", "functions",
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = pg_backend_pid()", SLEEP),
    D("fn-dblink-connect", "functions", "SELECT dblink_connect('dbname=corpus')", SLEEP),
    D("fn-explain-analyze", "functions", "EXPLAIN ANALYZE SELECT pg_sleep(0)", SLEEP),
    D("fn-prepare", "functions", "PREPARE p AS SELECT pg_sleep(0)", SLEEP),
    D("fn-view", "functions", "CREATE VIEW corpus_v AS SELECT pg_sleep(0)::text AS z", SLEEP),
    D("fn-copy-query", "functions", "COPY (SELECT pg_sleep(0)) TO STDOUT", SLEEP),
    D("fn-column-default", "functions", "CREATE TABLE corpus_x (a int DEFAULT lo_creat(-1)::int)", SLEEP,
      why="runs at every INSERT that omits the column"),
    D("fn-policy-expression", "functions", "CREATE POLICY corpus_pol ON t USING (pg_sleep(0)::text = '')", SLEEP),
    D("fn-alter-column-using", "functions",
      "ALTER TABLE t ALTER COLUMN id TYPE int USING (pg_sleep(0)::text || '1')::int", SLEEP,
      why="the USING expression runs for every row"),
    D("fn-operator", "functions",
      "CREATE OPERATOR public.~~~ (FUNCTION = pg_sleep, RIGHTARG = double precision)", SLEEP,
      why="afterwards SELECT ~~~ 5.0 calls pg_sleep without naming it"),

    # ---- role changes
    D("role-create", "roles", "CREATE ROLE wg_corpus_evil", ROLES),
    D("role-create-user", "roles", "CREATE USER wg_corpus_evil", ROLES),
    D("role-create-group-lower", "roles", "create group wg_corpus_evil", ROLES),
    D("role-alter-user", "roles", "ALTER USER app CREATEROLE", ROLES),
    D("role-grant", "roles", "GRANT SELECT ON secrets_archive TO PUBLIC", ROLES),
    D("role-grant-lower-multi", "roles", "SELECT 1; grant all on t to public", ROLES),
    D("role-set-role", "roles", f"SET ROLE {ADMIN_ROLE}", ROLES),
    D("role-set-session-role", "roles", f"SET SESSION ROLE {ADMIN_ROLE}", ROLES),
    D("role-set-local-role", "roles", f"BEGIN; SET LOCAL ROLE {ADMIN_ROLE}; SELECT current_user; COMMIT", ROLES),
    D("role-set-session-authorization", "roles", f"SET SESSION AUTHORIZATION {ADMIN_ROLE}", ROLES),
    D("role-set-config", "roles", f"SELECT set_config('role', '{ADMIN_ROLE}', false)", ROLES,
      why="set_config('role', ...) is SET ROLE"),
    D("role-schema-element-grant", "roles",
      "CREATE SCHEMA corpus_s CREATE TABLE x (a int) GRANT ALL ON x TO PUBLIC", ROLES),
    D("role-function-set-clause", "roles",
      f"CREATE FUNCTION corpus_f() RETURNS text LANGUAGE sql SET role = {ADMIN_ROLE} AS 'SELECT current_user::text'",
      ROLES, why="the function body runs as that role"),
    D("role-alter-function-set", "roles", f"ALTER FUNCTION report_pg_sleep() SET role = {ADMIN_ROLE}", ROLES),
    D("role-database-default", "roles", f"ALTER DATABASE corpus SET role = '{ADMIN_ROLE}'", ROLES,
      why="every later session on the database starts as that role"),
    D("role-default-privileges", "roles", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", ROLES,
      why="a GRANT on every table created from now on"),

    # ---- server settings, bytes
    D("scs-off-backslash", "settings-bytes",
      ["SET standard_conforming_strings = off", "SELECT 'a\\'';DROP TABLE t;--'"], DESTRUCTIVE, deny_at=1,
      codes=("42501", "0A000", "42601"), server_params={"standard_conforming_strings": "off"},
      why="with the setting off the server ends the literal at \\'' and runs the DROP"),
    D("scs-off-set-config", "settings-bytes",
      ["SELECT set_config('standard_conforming_strings', 'off', false)", "SELECT 'a\\'';DELETE FROM t;--'"],
      DESTRUCTIVE, deny_at=1, codes=("42501", "0A000", "42601"),
      server_params={"standard_conforming_strings": "off"}),
    D("nul-byte", "settings-bytes", "SELECT 1\x00; DROP TABLE t", DESTRUCTIVE, codes=("42501", "42601"),
      clients=("unit",), why="drivers cannot send a NUL; the e2e module sends it on a raw socket"),
    D("client-encoding-sjis", "settings-bytes",
      ["SET client_encoding = 'SJIS'", "SELECT 'ソ表'; DROP TABLE t"], DESTRUCTIVE, deny_at=1,
      clients=("unit", "psycopg", "psycopg-prepared"),
      why="SJIS trail bytes include 0x5C (backslash); the text is decoded before analysis"),

    # ---- extended protocol: parameters (Parse / Bind / Execute)
    D("ext-delete-param", "extended", "DELETE FROM t WHERE id = $1", DESTRUCTIVE, params=(1,)),
    D("ext-secrets-param", "extended", "SELECT value FROM secrets WHERE id = $1", SECRETS, params=(1,)),
    D("ext-sleep-param", "extended", "SELECT pg_sleep($1)", SLEEP, params=(0.0,)),
    D("ext-query-to-xml-param", "extended", "SELECT query_to_xml($1, true, false, '')", DESTRUCTIVE,
      undecidable=True, params=("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",),
      why="the SQL arrives as a bind parameter: undecidable at Parse"),
    D("ext-table-to-xml-param", "extended", "SELECT table_to_xml($1::regclass, true, false, '')", SECRETS,
      undecidable=True, params=("secrets",)),
    D("ext-set-config-param", "extended", "SELECT set_config($1, $2, false)", ROLES, undecidable=True,
      params=("role", ADMIN_ROLE), why="a parameter name chosen at Bind may be role"),
]


# ------------------------------------------------------------------------------------------------
# ALLOWED: statements that only mention the words

ALLOWED: list[Case] = [
    # ---- literals, comments, identifiers
    A("lit-drop", "literals", "SELECT 'DROP TABLE t'", ["DROP TABLE t"]),
    A("lit-several", "literals", "SELECT 'DELETE FROM t; TRUNCATE t' AS note", ["DELETE FROM t; TRUNCATE t"]),
    A("lit-mcp-escape", "literals", "SELECT 'COMMIT; DROP TABLE t' AS q", ["COMMIT; DROP TABLE t"]),
    A("lit-dollar", "literals", "SELECT $$DROP TABLE t$$", ["DROP TABLE t"]),
    A("lit-dollar-tag", "literals", "SELECT $x$ $$; DROP TABLE t; $$ $x$", [" $$; DROP TABLE t; $$ "]),
    A("lit-estring-escaped-quote", "literals", "SELECT E'\\'; DROP TABLE t; --'", ["'; DROP TABLE t; --"]),
    A("lit-unicode", "literals", "SELECT U&'\\0044ROP TABLE t'", ["DROP TABLE t"]),
    A("lit-continued", "literals", "SELECT 'DROP '\n'TABLE t'", ["DROP TABLE t"]),
    A("lit-function-names", "literals", "SELECT 'pg_sleep(10)', 'lo_import', 'vault.keys'",
      ["pg_sleep(10)|lo_import|vault.keys"]),
    A("cmt-line", "comments", "SELECT 1 -- DROP TABLE t", ["1"]),
    A("cmt-block", "comments", "/* DROP TABLE t; */ SELECT 2", ["2"]),
    A("cmt-nested", "comments", "SELECT 3 /* outer /* DROP TABLE t; */ DELETE FROM t; */", ["3"]),
    A("cmt-nested-trap", "comments", "SELECT 4 /* /* */ ; DROP TABLE t; -- */",
      ["4"], why="comments nest: the DROP is still inside the outer comment"),
    A("ident-quoted-alias", "identifiers", 'SELECT 1 AS "DROP TABLE t"', ["1"]),
    A("ident-keyword-aliases", "identifiers", "SELECT 1 AS drop, 2 AS delete, 3 AS truncate, 4 AS grant",
      ["1|2|3|4"]),
    A("ident-dollar", "identifiers", "SELECT 1 AS x$q$", ["1"]),
    A("ident-columns", "identifiers", "SELECT drop_count, deleted::int FROM audit", ["4|1"]),
    A("ident-count-alias", "identifiers", "SELECT count(*) AS drop_count FROM t", ["3"]),
    A("ident-like-delete", "identifiers", "SELECT count(*) FROM items WHERE note LIKE '%DELETE%'", ["1"]),
    A("ident-cte-named-deleted", "identifiers", "WITH deleted AS (SELECT id FROM t) SELECT count(*) FROM deleted",
      ["3"]),

    # ---- tables the globs do not cover
    A("tbl-secrets-archive", "tables", "SELECT count(*) FROM secrets_archive", ["2"],
      why="the glob secrets matches that exact name only"),
    A("tbl-public-secrets", "tables", "SELECT count(*) FROM public_secrets", ["1"]),
    A("tbl-alias-named-secrets", "tables", "SELECT secrets.id FROM t AS secrets ORDER BY 1 LIMIT 1", ["1"],
      why="an alias is not a relation"),
    A("tbl-column-named-secrets", "tables", "SELECT 'x' AS secrets", ["x"]),
    A("tbl-public-keys", "tables", "SELECT id FROM public.keys", ["7"], why="keys outside vault"),
    A("tbl-cte-secrets", "tables", "WITH secrets AS (SELECT 1 AS id) SELECT id FROM secrets", ["1"],
      why="the CTE shadows the table within its scope: no real table is read"),
    A("tbl-cte-secrets-table-statement", "tables", "WITH secrets AS (SELECT 2 AS id) TABLE secrets", ["2"]),
    A("tbl-cte-secrets-in-subquery", "tables", "WITH secrets AS (SELECT 3 AS id) SELECT (SELECT id FROM secrets)",
      ["3"]),
    A("tbl-cte-recursive-secrets", "tables",
      "WITH RECURSIVE secrets(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM secrets WHERE n < 3) "
      "SELECT sum(n) FROM secrets", ["6"]),
    A("tbl-catalog-mentions-secrets", "tables",
      "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'secrets'", ["secrets"]),
    A("tbl-information-schema", "tables",
      "SELECT count(*) FROM information_schema.tables WHERE table_name = 'secrets'", ["1"]),
    A("tbl-pg-stat-activity", "tables", "SELECT (count(*) >= 1)::int FROM pg_stat_activity", ["1"]),

    # ---- functions the globs do not cover
    A("fn-report-pg-sleep", "functions", "SELECT report_pg_sleep()", ["report"],
      why="pg_sleep* is anchored at the start"),
    A("fn-lower-not-lo", "functions", "SELECT lower('DROP')", ["drop"]),
    A("fn-log-not-lo", "functions", "SELECT round(log(100))::int", ["2"]),
    A("fn-query-to-xml-harmless", "functions",
      "SELECT (query_to_xml('SELECT 1 AS deleted', true, false, '') IS NOT NULL)::int", ["1"],
      why="the SQL it runs is a constant and harmless"),
    A("fn-table-to-xml-other-table", "functions",
      "SELECT (table_to_xml('items', true, false, '') IS NOT NULL)::int", ["1"]),
    A("fn-set-config-other", "functions", "SELECT set_config('application_name', 'delete-me', false)",
      ["delete-me"]),

    # ---- plans without execution, DO and functions that do nothing denied
    A("explain-delete", "explain", "EXPLAIN (COSTS OFF) DELETE FROM t", why="only plans it"),
    A("explain-analyze-off", "explain", "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t"),
    A("explain-analyze-false-cte", "explain",
      "EXPLAIN (ANALYZE false) WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
    A("explain-analyze-select", "explain", "EXPLAIN ANALYZE SELECT count(*) FROM t"),
    A("do-notice", "do", "DO $$ BEGIN RAISE NOTICE 'drop table t'; END $$", []),
    A("do-execute-select", "do", "DO $$ BEGIN EXECUTE 'SELECT 1'; END $$", []),
    A("do-count-into", "do",
      "DO $$DECLARE n int; BEGIN SELECT count(*) INTO n FROM t; RAISE NOTICE 'deleted %', n; END$$", []),
    A("fn-create-sql", "function-bodies",
      ["CREATE FUNCTION corpus_one() RETURNS int LANGUAGE sql AS 'SELECT 1'", "SELECT corpus_one()"], ["1"],
      mutates=True),
    A("fn-create-plpgsql", "function-bodies",
      ["CREATE FUNCTION corpus_n() RETURNS bigint LANGUAGE plpgsql AS "
       "$$BEGIN RETURN (SELECT count(*) FROM t); END$$", "SELECT corpus_n()"], ["3"], mutates=True),
    A("fn-create-atomic", "function-bodies",
      ["CREATE FUNCTION corpus_a() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM t; END",
       "SELECT corpus_a()"], ["3"], mutates=True),
    A("view-create", "function-bodies",
      ["CREATE VIEW drop_report AS SELECT count(*) AS deleted FROM t", "SELECT deleted FROM drop_report"], ["3"],
      mutates=True),

    # ---- DML and session statements no rule denies
    A("dml-insert-returning", "dml", "INSERT INTO t VALUES (100) RETURNING id", ["100"], mutates=True),
    A("dml-update", "dml", "UPDATE t SET id = id + 10 WHERE id = 1 RETURNING id", ["11"], mutates=True),
    A("dml-select-for-update", "dml", "SELECT id FROM t ORDER BY id LIMIT 1 FOR UPDATE", ["1"]),
    A("txn-read-only", "transactions", "BEGIN READ ONLY; SELECT count(*) FROM t; COMMIT", ["3"]),
    A("txn-read-only-steps", "transactions", ["BEGIN READ ONLY", "SELECT count(*) FROM t", "COMMIT"], ["3"]),
    A("txn-savepoint-select", "transactions", "BEGIN; SAVEPOINT a; SELECT 1; ROLLBACK TO SAVEPOINT a; COMMIT", ["1"]),
    A("prepare-select", "prepare", ["PREPARE q AS SELECT count(*) FROM t", "EXECUTE q"], ["3"]),
    A("copy-literal-out", "copy", "COPY (SELECT 'DROP TABLE t') TO STDOUT", ["DROP TABLE t"]),
    A("copy-table-out", "copy", "COPY (SELECT id FROM t ORDER BY id) TO STDOUT", ["1", "2", "3"]),
    A("notify-drop", "session", "NOTIFY corpus_drop, 'DROP TABLE t'", []),
    A("set-application-name", "session", ["SET application_name = 'drop-table-bot'", "SHOW application_name"],
      ["drop-table-bot"]),
    A("reset-role", "session", "RESET ROLE", [], why="RESET ROLE only returns to the session's own role"),
    A("revoke", "session", "REVOKE ALL ON t FROM PUBLIC", [], mutates=True, why="REVOKE is not GRANT"),
    A("comment-on", "session", "COMMENT ON TABLE t IS 'never DROP or TRUNCATE this'", [], mutates=True),

    # ---- extended protocol
    A("ext-param-select", "extended", "SELECT count(*) FROM t WHERE id > $1", ["2"], params=(1,)),
    A("ext-param-value-looks-denied", "extended", "SELECT $1::text", ["DROP TABLE t"], params=("DROP TABLE t",),
      why="a parameter is a value, never SQL"),
]

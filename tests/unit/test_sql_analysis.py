"""SQL analysis: statement kinds from PostgreSQL's own parser, and the analysis cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.sql import KNOWN_KINDS, VERBS, SqlAnalysis, SqlAnalyzer, analyze_uncached, normalize_kind, verb_of

# (statement, most specific kinds expected: SqlAnalysis.leaves)
STATEMENTS: list[tuple[str, set[str]]] = [
    ("SELECT 1", {"SELECT"}),
    ("VALUES (1)", {"SELECT"}),
    ("TABLE t", {"SELECT"}),
    ("SELECT 1 UNION SELECT 2", {"SELECT"}),
    ("INSERT INTO t VALUES (1)", {"INSERT"}),
    ("INSERT INTO t SELECT * FROM s", {"INSERT"}),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING", {"INSERT"}),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1", {"INSERT", "UPDATE"}),
    ("UPDATE t SET a = (SELECT 1) WHERE b IN (SELECT 2)", {"UPDATE"}),
    ("DELETE FROM t", {"DELETE"}),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN UPDATE SET b = 1", {"MERGE", "UPDATE"}),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (1)",
     {"MERGE", "DELETE", "INSERT"}),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DO NOTHING", {"MERGE"}),
    ("COPY t FROM STDIN", {"COPY FROM"}),
    ("COPY t TO STDOUT", {"COPY TO"}),
    ("CREATE TABLE t (a int)", {"CREATE TABLE"}),
    ("CREATE TEMP TABLE t (a int)", {"CREATE TABLE"}),
    ("CREATE TABLE t PARTITION OF p FOR VALUES IN (1)", {"CREATE TABLE"}),
    ("ALTER TABLE t ADD COLUMN b int", {"ALTER TABLE"}),
    ("ALTER TABLE t DROP COLUMN b", {"ALTER TABLE"}),
    ("ALTER TABLE t RENAME COLUMN a TO b", {"ALTER TABLE"}),
    ("ALTER TABLE t OWNER TO u", {"ALTER TABLE"}),
    ("ALTER TABLE t SET SCHEMA s", {"ALTER TABLE"}),
    ("DROP TABLE t", {"DROP TABLE"}),
    ("DROP TABLE IF EXISTS a, b CASCADE", {"DROP TABLE"}),
    ("TRUNCATE t", {"TRUNCATE"}),
    ("TRUNCATE TABLE t RESTART IDENTITY", {"TRUNCATE"}),
    ("GRANT SELECT ON t TO u", {"GRANT"}),
    ("REVOKE SELECT ON t FROM u", {"REVOKE"}),
    ("GRANT r TO u", {"GRANT"}),
    ("REVOKE r FROM u", {"REVOKE"}),
    ("COMMENT ON TABLE t IS 'x'", {"COMMENT"}),
    ("CALL p(1)", {"CALL"}),
    ("DO $$ BEGIN END $$", {"DO"}),
    ("EXPLAIN SELECT 1", {"EXPLAIN"}),
    ("PREPARE q AS SELECT 1", {"PREPARE", "SELECT"}),
    ("EXECUTE q", {"EXECUTE"}),
    ("DEALLOCATE q", {"DEALLOCATE"}),
    ("DEALLOCATE ALL", {"DEALLOCATE"}),
    ("DECLARE c CURSOR FOR SELECT 1", {"DECLARE", "SELECT"}),
    ("FETCH 1 FROM c", {"FETCH"}),
    ("MOVE 1 IN c", {"MOVE"}),
    ("CLOSE c", {"CLOSE"}),
    ("LISTEN ch", {"LISTEN"}),
    ("NOTIFY ch, 'x'", {"NOTIFY"}),
    ("UNLISTEN *", {"UNLISTEN"}),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", {"LOCK"}),
    ("SET search_path = x", {"SET SEARCH_PATH"}),
    ("SET statement_timeout = 5", {"SET"}),
    ("ALTER DATABASE d SET role = 'admin'", {"ALTER DATABASE", "SET ROLE"}),
    ("ALTER ROLE r IN DATABASE d SET search_path = x", {"ALTER ROLE", "SET SEARCH_PATH"}),
    ("SET LOCAL work_mem = '1MB'", {"SET"}),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"SET"}),
    ("SET ROLE admin", {"SET ROLE"}),
    ("SET SESSION AUTHORIZATION admin", {"SET SESSION AUTHORIZATION"}),
    ("SET CONSTRAINTS ALL DEFERRED", {"SET CONSTRAINTS"}),
    ("RESET ROLE", {"RESET ROLE"}),
    ("RESET ALL", {"RESET"}),
    ("RESET work_mem", {"RESET"}),
    ("SHOW work_mem", {"SHOW"}),
    ("SHOW ALL", {"SHOW"}),
    ("BEGIN", {"BEGIN"}),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", {"BEGIN"}),
    ("START TRANSACTION", {"BEGIN"}),
    ("COMMIT", {"COMMIT"}),
    ("END", {"COMMIT"}),
    ("ROLLBACK", {"ROLLBACK"}),
    ("ABORT", {"ROLLBACK"}),
    ("SAVEPOINT s", {"SAVEPOINT"}),
    ("RELEASE SAVEPOINT s", {"RELEASE"}),
    ("RELEASE s", {"RELEASE"}),
    ("ROLLBACK TO SAVEPOINT s", {"ROLLBACK TO SAVEPOINT"}),
    ("PREPARE TRANSACTION 'g'", {"PREPARE TRANSACTION"}),
    ("COMMIT PREPARED 'g'", {"COMMIT PREPARED"}),
    ("ROLLBACK PREPARED 'g'", {"ROLLBACK PREPARED"}),
    ("VACUUM t", {"VACUUM"}),
    ("VACUUM (FULL, ANALYZE) t", {"VACUUM"}),
    ("ANALYZE t", {"ANALYZE"}),
    ("CLUSTER t USING i", {"CLUSTER"}),
    ("REINDEX TABLE t", {"REINDEX TABLE"}),
    ("REINDEX INDEX i", {"REINDEX INDEX"}),
    ("CHECKPOINT", {"CHECKPOINT"}),
    ("DISCARD ALL", {"DISCARD"}),
    ("LOAD 'auto_explain'", {"LOAD"}),
    ("REFRESH MATERIALIZED VIEW mv", {"REFRESH MATERIALIZED VIEW"}),
    ("SECURITY LABEL FOR selinux ON TABLE t IS 'x'", {"SECURITY LABEL"}),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local", {"IMPORT FOREIGN SCHEMA"}),
    ("REASSIGN OWNED BY a TO b", {"REASSIGN OWNED"}),
    ("DROP OWNED BY a", {"DROP OWNED"}),
    ("CREATE ROLE r", {"CREATE ROLE"}),
    ("CREATE USER u", {"CREATE ROLE"}),
    ("CREATE GROUP g", {"CREATE ROLE"}),
    ("ALTER ROLE r WITH LOGIN", {"ALTER ROLE"}),
    ("ALTER USER u SET work_mem = '1MB'", {"ALTER ROLE"}),
    ("DROP ROLE r", {"DROP ROLE"}),
    ("DROP USER u", {"DROP ROLE"}),
    ("CREATE DATABASE d", {"CREATE DATABASE"}),
    ("ALTER DATABASE d SET x = 1", {"ALTER DATABASE"}),
    ("DROP DATABASE d", {"DROP DATABASE"}),
    # a body given as a string runs what it holds
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {"CREATE FUNCTION", "SELECT"}),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", {"CREATE PROCEDURE", "SELECT"}),
    ("ALTER FUNCTION f() IMMUTABLE", {"ALTER FUNCTION"}),
    ("ALTER PROCEDURE p() SECURITY DEFINER", {"ALTER PROCEDURE"}),
    ("DROP FUNCTION f()", {"DROP FUNCTION"}),
    ("DROP PROCEDURE p()", {"DROP PROCEDURE"}),
    ("DROP ROUTINE f()", {"DROP ROUTINE"}),
    ("CREATE VIEW v AS SELECT 1", {"CREATE VIEW", "SELECT"}),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", {"CREATE MATERIALIZED VIEW", "SELECT"}),
    ("ALTER VIEW v RENAME TO w", {"ALTER VIEW"}),
    ("ALTER MATERIALIZED VIEW mv RENAME TO w", {"ALTER MATERIALIZED VIEW"}),
    ("DROP VIEW v", {"DROP VIEW"}),
    ("DROP MATERIALIZED VIEW mv", {"DROP MATERIALIZED VIEW"}),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", {"CREATE INDEX"}),
    ("ALTER INDEX i RENAME TO j", {"ALTER INDEX"}),
    ("DROP INDEX i", {"DROP INDEX"}),
    ("CREATE SEQUENCE s", {"CREATE SEQUENCE"}),
    ("ALTER SEQUENCE s RESTART", {"ALTER SEQUENCE"}),
    ("DROP SEQUENCE s", {"DROP SEQUENCE"}),
    ("CREATE SCHEMA s", {"CREATE SCHEMA"}),
    ("ALTER SCHEMA s RENAME TO x", {"ALTER SCHEMA"}),
    ("DROP SCHEMA s CASCADE", {"DROP SCHEMA"}),
    ("CREATE EXTENSION pgcrypto", {"CREATE EXTENSION"}),
    ("ALTER EXTENSION pgcrypto UPDATE", {"ALTER EXTENSION"}),
    ("DROP EXTENSION pgcrypto", {"DROP EXTENSION"}),
    ("CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()", {"CREATE TRIGGER"}),
    ("DROP TRIGGER tr ON t", {"DROP TRIGGER"}),
    ("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()", {"CREATE EVENT TRIGGER"}),
    ("CREATE TYPE ty AS ENUM ('a')", {"CREATE TYPE"}),
    ("CREATE TYPE ty AS (a int)", {"CREATE TYPE"}),
    ("CREATE TYPE ty AS RANGE (subtype = int4)", {"CREATE TYPE"}),
    ("ALTER TYPE ty ADD VALUE 'b'", {"ALTER TYPE"}),
    ("DROP TYPE ty", {"DROP TYPE"}),
    ("CREATE DOMAIN dm AS int", {"CREATE DOMAIN"}),
    ("ALTER DOMAIN dm SET NOT NULL", {"ALTER DOMAIN"}),
    ("DROP DOMAIN dm", {"DROP DOMAIN"}),
    ("CREATE POLICY pol ON t USING (true)", {"CREATE POLICY"}),
    ("ALTER POLICY pol ON t RENAME TO p2", {"ALTER POLICY"}),
    ("DROP POLICY pol ON t", {"DROP POLICY"}),
    ("CREATE PUBLICATION pub FOR ALL TABLES", {"CREATE PUBLICATION"}),
    ("CREATE SUBSCRIPTION sub CONNECTION 'x' PUBLICATION pub", {"CREATE SUBSCRIPTION"}),
    ("DROP SUBSCRIPTION sub", {"DROP SUBSCRIPTION"}),
    ("CREATE TABLESPACE ts LOCATION '/x'", {"CREATE TABLESPACE"}),
    ("DROP TABLESPACE ts", {"DROP TABLESPACE"}),
    ("CREATE SERVER srv FOREIGN DATA WRAPPER fdw", {"CREATE SERVER"}),
    ("CREATE FOREIGN DATA WRAPPER fdw", {"CREATE FOREIGN DATA WRAPPER"}),
    ("CREATE FOREIGN TABLE ft (a int) SERVER srv", {"CREATE FOREIGN TABLE"}),
    ("CREATE USER MAPPING FOR u SERVER srv", {"CREATE USER MAPPING"}),
    ("DROP USER MAPPING FOR u SERVER srv", {"DROP USER MAPPING"}),
    ("ALTER SYSTEM SET work_mem = '1MB'", {"ALTER SYSTEM"}),
    # a grant on objects created later is a grant too
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO u", {"ALTER DEFAULT PRIVILEGES", "GRANT"}),
    ("ALTER DEFAULT PRIVILEGES IN SCHEMA s REVOKE ALL ON TABLES FROM u", {"ALTER DEFAULT PRIVILEGES", "REVOKE"}),
    ("CREATE AGGREGATE ag (int) (sfunc = f, stype = int)", {"CREATE AGGREGATE"}),
    ("CREATE OPERATOR === (leftarg = int, rightarg = int, function = f)", {"CREATE OPERATOR"}),
    ("CREATE CAST (int AS text) WITH INOUT", {"CREATE CAST"}),
    ("CREATE STATISTICS st ON a, b FROM t", {"CREATE STATISTICS"}),
    ("CREATE ACCESS METHOD am TYPE INDEX HANDLER h", {"CREATE ACCESS METHOD"}),
    ("CREATE LANGUAGE plx HANDLER h", {"CREATE LANGUAGE"}),
    ("CREATE TEXT SEARCH CONFIGURATION c (COPY = english)", {"CREATE TEXT SEARCH CONFIGURATION"}),
    ("CREATE COLLATION co (locale = 'C')", {"CREATE COLLATION"}),
    ("CREATE CONVERSION cv FOR 'LATIN1' TO 'UTF8' FROM f", {"CREATE CONVERSION"}),
    ("CREATE OPERATOR CLASS oc FOR TYPE int USING btree AS OPERATOR 1 <", {"CREATE OPERATOR CLASS"}),
    ("CREATE RULE r AS ON INSERT TO t DO NOTHING", {"CREATE RULE"}),
    ("DROP RULE r ON t", {"DROP RULE"}),
]

# nested statements count as what they do
NESTED: list[tuple[str, set[str]]] = [
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"DELETE", "SELECT"}),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING *) INSERT INTO log SELECT * FROM u", {"UPDATE", "INSERT"}),
    ("WITH x AS (SELECT 1) DELETE FROM t", {"DELETE"}),
    ("EXPLAIN ANALYZE DELETE FROM t", {"EXPLAIN", "DELETE"}),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", {"EXPLAIN", "UPDATE"}),
    ("EXPLAIN (ANALYZE true) DELETE FROM t", {"EXPLAIN", "DELETE"}),
    ("EXPLAIN (ANALYZE on) DELETE FROM t", {"EXPLAIN", "DELETE"}),
    ("EXPLAIN (ANALYZE 1) DELETE FROM t", {"EXPLAIN", "DELETE"}),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", {"EXPLAIN"}),
    ("EXPLAIN (ANALYZE off) DELETE FROM t", {"EXPLAIN"}),
    ("EXPLAIN (ANALYZE 0) DELETE FROM t", {"EXPLAIN"}),
    ("EXPLAIN DELETE FROM t", {"EXPLAIN"}),
    ("EXPLAIN VERBOSE DELETE FROM t", {"EXPLAIN"}),
    ("EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING 1) SELECT 1", {"EXPLAIN", "DELETE", "SELECT"}),
    ("EXPLAIN ANALYZE EXECUTE q", {"EXPLAIN", "EXECUTE"}),
    ("PREPARE q AS DELETE FROM t WHERE a = $1", {"PREPARE", "DELETE"}),
    ("PREPARE q (int) AS INSERT INTO t VALUES ($1)", {"PREPARE", "INSERT"}),
    ("COPY (SELECT * FROM t) TO STDOUT", {"COPY TO", "SELECT"}),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", {"COPY TO", "DELETE"}),
    ("CREATE TABLE t2 AS SELECT 1", {"CREATE TABLE", "SELECT"}),
    ("CREATE TABLE t2 AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"CREATE TABLE", "DELETE", "SELECT"}),
    ("CREATE TABLE t2 AS EXECUTE q", {"CREATE TABLE", "EXECUTE"}),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", {"CREATE MATERIALIZED VIEW", "SELECT"}),
    ("SELECT * INTO t2 FROM t", {"SELECT", "CREATE TABLE"}),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD (DELETE FROM u; NOTIFY ch)", {"CREATE RULE", "DELETE", "NOTIFY"}),
    ("CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT 1", {"CREATE RULE", "SELECT"}),
    ("CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT 1",
     {"CREATE SCHEMA", "CREATE TABLE", "CREATE VIEW", "SELECT"}),
    ("CREATE FUNCTION f() RETURNS int BEGIN ATOMIC DELETE FROM t; SELECT 1; END",
     {"CREATE FUNCTION", "DELETE", "SELECT"}),
    ("CREATE FUNCTION f() RETURNS int RETURN 1", {"CREATE FUNCTION"}),
    ("DECLARE c CURSOR FOR SELECT 1", {"DECLARE", "SELECT"}),
]

MULTI: list[tuple[str, set[str], int]] = [
    ("SELECT 1; DROP TABLE x", {"SELECT", "DROP TABLE"}, 2),
    ("SELECT 1;DROP TABLE x;", {"SELECT", "DROP TABLE"}, 2),
    ("COMMIT; DROP TABLE users", {"COMMIT", "DROP TABLE"}, 2),
    ("BEGIN; UPDATE t SET a = 1; COMMIT", {"BEGIN", "UPDATE", "COMMIT"}, 3),
    ("select 1;\n\n  truncate t ;  -- done", {"SELECT", "TRUNCATE"}, 2),
]

# words in literals, comments and identifiers count for nothing
HIDING: list[tuple[str, set[str]]] = [
    ("SELECT 'DROP TABLE x'", {"SELECT"}),
    ("SELECT 'x; DROP TABLE x; --'", {"SELECT"}),
    ("SELECT 'it''s; DROP TABLE x'", {"SELECT"}),
    ("SELECT E'\\'; DROP TABLE x; --'", {"SELECT"}),
    ("SELECT $$; DROP TABLE x$$", {"SELECT"}),
    ("SELECT $tag$ ; DROP TABLE x; $tag$", {"SELECT"}),
    ("SELECT $a$ $$ ; DROP TABLE x $$ $a$", {"SELECT"}),
    ("SELECT 1 -- ; DROP TABLE x", {"SELECT"}),
    ("SELECT 1 /* ; DROP TABLE x */", {"SELECT"}),
    ("/* /* nested */ DROP TABLE x */ SELECT 1", {"SELECT"}),
    ('SELECT "DROP TABLE x" FROM t', {"SELECT"}),
    ('SELECT 1 AS "; DROP TABLE x; --"', {"SELECT"}),
    ("SELECT U&'\\0044ROP TABLE x'", {"SELECT"}),
    ("SELECT B'1010', X'FF'", {"SELECT"}),
    # standard_conforming_strings on: a backslash does not escape the quote
    ("SELECT 'a\\'';DROP TABLE x;--'", {"SELECT"}),
    # ...and here the literal really ends, so the DROP is seen
    ("SELECT 'a\\'; DROP TABLE x; --'", {"SELECT", "DROP TABLE"}),
    # case and comments do not hide a statement either
    ("dRoP /* x */ TaBlE x", {"DROP TABLE"}),
    ("/* SELECT */ DELETE FROM t", {"DELETE"}),
]


def _check(sql: str, leaves: set[str]) -> SqlAnalysis:
    a = analyze_uncached(sql)
    assert a.error is None, (sql, a.error)
    assert set(a.leaves) == leaves, sql
    # kinds = the leaves plus their leading keywords
    assert set(a.kinds) == leaves | {verb_of(k) for k in leaves}
    assert a.kinds <= KNOWN_KINDS
    return a


@pytest.mark.parametrize(("sql", "leaves"), STATEMENTS, ids=[s for s, _ in STATEMENTS])
def test_statement_kinds(sql: str, leaves: set[str]) -> None:
    a = _check(sql, leaves)
    assert a.statements == 1


@pytest.mark.parametrize(("sql", "leaves"), NESTED, ids=[s for s, _ in NESTED])
def test_nested_statements_count(sql: str, leaves: set[str]) -> None:
    _check(sql, leaves)


@pytest.mark.parametrize(("sql", "leaves", "count"), MULTI, ids=[s for s, _, _ in MULTI])
def test_every_statement_of_a_string_counts(sql: str, leaves: set[str], count: int) -> None:
    assert _check(sql, leaves).statements == count


@pytest.mark.parametrize(("sql", "leaves"), HIDING, ids=[s for s, _ in HIDING])
def test_literals_and_comments_hide_nothing_and_count_nothing(sql: str, leaves: set[str]) -> None:
    _check(sql, leaves)


def test_bare_and_two_word_kinds() -> None:
    a = analyze_uncached("DROP TABLE t; DROP VIEW v")
    assert a.kinds == {"DROP", "DROP TABLE", "DROP VIEW"}
    assert a.leaves == {"DROP TABLE", "DROP VIEW"}
    assert analyze_uncached("SECURITY LABEL ON TABLE t IS 'x'").kinds == {"SECURITY LABEL"}


def test_vocabulary() -> None:
    for verb in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CREATE", "ALTER", "DROP",
                 "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "CALL", "DO", "EXPLAIN", "PREPARE", "EXECUTE",
                 "DEALLOCATE", "DECLARE", "FETCH", "CLOSE", "LISTEN", "NOTIFY", "UNLISTEN", "LOCK", "SET",
                 "RESET", "SHOW", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "VACUUM", "ANALYZE", "CLUSTER",
                 "REINDEX", "CHECKPOINT", "DISCARD", "LOAD", "REFRESH", "SECURITY LABEL", "IMPORT", "REASSIGN"):
        assert verb in VERBS, verb
    for kind in ("CREATE TABLE", "DROP TABLE", "ALTER ROLE", "DROP DATABASE", "CREATE FUNCTION",
                 "DROP MATERIALIZED VIEW", "CREATE TEXT SEARCH DICTIONARY", "COPY FROM", "SET ROLE"):
        assert kind in KNOWN_KINDS, kind
    assert "DROP COLUMN" not in KNOWN_KINDS


@pytest.mark.parametrize(("entry", "kind"), [
    ("drop", "DROP"), ("  drop   table ", "DROP TABLE"), ("Drop User", "DROP ROLE"),
    ("start transaction", "BEGIN"), ("END", "COMMIT"), ("abort", "ROLLBACK"), ("truncate table", "TRUNCATE"),
])
def test_normalize_kind(entry: str, kind: str) -> None:
    assert normalize_kind(entry) == kind


def test_empty_strings() -> None:
    for sql in ("", "   ", ";", " ;; ", "-- just a comment", "/* c */ ;"):
        a = analyze_uncached(sql)
        assert a.error is None and a.statements == 0 and a.kinds == frozenset() and a.empty


@pytest.mark.parametrize(("sql", "message", "position"), [
    ("SELEC 1", 'syntax error at or near "SELEC"', 1),
    ("SELECT 1 FROM WHERE", 'syntax error at or near "WHERE"', 15),
    ("SELECT 1;\nSELEC 2", 'syntax error at or near "SELEC"', 11),
    ("SELECT 'ééé' FRO x", 'syntax error at or near "x"', 18),  # characters, not bytes
    ("SELECT 'abc", "unterminated quoted string", 8),
    ("SELECT 1 FROM", "syntax error at end of input", 14),
])
def test_invalid_sql_reports_error_and_position(sql: str, message: str, position: int) -> None:
    a = analyze_uncached(sql)
    assert a.error is not None and a.error.startswith(message)
    assert a.error_position == position
    assert a.kinds == frozenset() and not a.empty


def test_invalid_input_never_raises() -> None:
    assert analyze_uncached("SELECT 1\x00; DROP TABLE x").error == "statement contains a NUL character"
    assert analyze_uncached("SELECT '\ud800'").error is not None  # lone surrogate: not encodable
    # the parser's own limit
    assert analyze_uncached("SELECT " + "(" * 20000 + "1" + ")" * 20000).error is not None


def test_deep_trees_are_analysed_not_refused() -> None:
    # nests deeper than msgspec's recursive decoder allows: the iterative fallback takes over
    a = analyze_uncached("SELECT " + " + ".join(["1"] * 3000) + "; DROP TABLE x")
    assert a.error is None and a.leaves == {"SELECT", "DROP TABLE"}
    a = analyze_uncached("SELECT " + "(SELECT " * 400 + "1" + ")" * 400)
    assert a.error is None and a.leaves == {"SELECT"}


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_analyze_never_raises_on_arbitrary_text(text: str) -> None:
    a = SqlAnalyzer(cache_size=8).analyze(text)
    assert isinstance(a, SqlAnalysis)
    assert (a.error is None) or (a.kinds == frozenset())


_TOKENS = ["SELECT", "DROP", "TABLE", "t", "1", "'x'", "$$", ";", "(", ")", "--", "/*", "*/", "WITH", "AS",
           "DELETE", "FROM", "EXPLAIN", "ANALYZE", "E'\\''", ",", "\n", "\\", '"', "DO", "INTO"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25))
def test_analyze_never_raises_on_sql_like_text(tokens: list[str]) -> None:
    a = SqlAnalyzer(cache_size=8).analyze(" ".join(tokens))
    assert a.kinds <= KNOWN_KINDS


# ---- tables and functions -----------------------------------------------------------------

# (statement, every relation it names)
TABLES: list[tuple[str, set[str]]] = [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", {"pgbench_accounts"}),
    ("SELECT 1", set()),
    ("TABLE t", {"t"}),
    ("SELECT * FROM s.t", {"s.t"}),
    ("SELECT * FROM cat.s.t", {"s.t"}),  # the catalog prefix is dropped
    ('SELECT * FROM "MyTable", "My Schema"."Other", MixedCase', {"MyTable", "My Schema.Other", "mixedcase"}),
    ('SELECT * FROM U&"d\\0061t"', {"dat"}),
    ("SELECT * FROM a JOIN b USING (id) LEFT JOIN LATERAL (SELECT * FROM c WHERE c.id = a.id) l ON true "
     "NATURAL JOIN d CROSS JOIN (VALUES (1)) v(x)", {"a", "b", "c", "d"}),
    ("SELECT (SELECT max(x) FROM s1), EXISTS (SELECT 1 FROM s2) FROM m WHERE y IN (SELECT y FROM s3) "
     "ORDER BY (SELECT 1 FROM s4)", {"m", "s1", "s2", "s3", "s4"}),
    ("SELECT 1 UNION SELECT * FROM u1 INTERSECT (SELECT * FROM u2)", {"u1", "u2"}),
    ("SELECT * FROM t FOR UPDATE OF t", {"t"}),
    ("SELECT * INTO new_t FROM old_t", {"new_t", "old_t"}),
    ("INSERT INTO t SELECT * FROM s ON CONFLICT (a) DO UPDATE SET b = (SELECT b FROM c)", {"t", "s", "c"}),
    ("UPDATE t SET a = 1 FROM u WHERE t.id = u.id", {"t", "u"}),
    ("DELETE FROM t USING u WHERE t.id = u.id RETURNING (SELECT 1 FROM r)", {"t", "u", "r"}),
    ("MERGE INTO tgt USING src ON tgt.id = src.id WHEN MATCHED THEN DELETE", {"tgt", "src"}),
    ("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO archive SELECT * FROM d", {"t", "archive"}),
    ("COPY s.t (a) TO STDOUT", {"s.t"}),
    ("COPY (SELECT * FROM q) TO STDOUT", {"q"}),
    ("LOCK TABLE a, s.b IN ACCESS EXCLUSIVE MODE", {"a", "s.b"}),
    ("TRUNCATE a, s.b", {"a", "s.b"}),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES s.p (a)", {"t", "s.p"}),
    ("ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)", {"t", "p"}),
    ("ALTER TABLE s.t RENAME TO u", {"s.t", "s.u"}),
    ("ALTER TABLE t RENAME COLUMN a TO b", {"t"}),
    ("ALTER TABLE s.t SET SCHEMA x", {"s.t", "x.t"}),
    ("ALTER VIEW v OWNER TO u", {"v"}),
    ("CREATE INDEX i ON s.t (lower(a))", {"s.t", "s.i"}),
    ("CREATE INDEX ON t (a)", {"t"}),
    ("DROP TABLE IF EXISTS a, s.b CASCADE", {"a", "s.b"}),
    ("DROP VIEW c.s.v", {"s.v"}),
    ("DROP MATERIALIZED VIEW mv", {"mv"}),
    ("DROP FOREIGN TABLE ft", {"ft"}),
    ("DROP SEQUENCE s.seq", {"s.seq"}),
    ("DROP INDEX CONCURRENTLY i", {"i"}),
    ("DROP TRIGGER tr ON s.t", {"s.t"}),
    ("DROP POLICY p ON t", {"t"}),
    ("DROP FUNCTION f()", set()),
    ("DROP SCHEMA s CASCADE", set()),
    ("GRANT SELECT ON TABLE t, s.u TO x", {"t", "s.u"}),
    ("REVOKE ALL ON s.t FROM x", {"s.t"}),
    ("GRANT SELECT ON ALL TABLES IN SCHEMA s TO x", set()),
    ("COMMENT ON TABLE s.t IS 'x'", {"s.t"}),
    ("COMMENT ON COLUMN s.t.c IS 'x'", {"s.t"}),
    ("COMMENT ON CONSTRAINT c ON t IS 'x'", {"t"}),
    ("COMMENT ON FUNCTION f() IS 'x'", set()),
    ("SECURITY LABEL ON TABLE t IS 'x'", {"t"}),
    ("CREATE TABLE t (a int REFERENCES p, LIKE q) INHERITS (r)", {"t", "p", "q", "r"}),
    ("CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)", {"p1", "p"}),
    ("CREATE TABLE t2 AS SELECT * FROM t1", {"t2", "t1"}),
    ("CREATE VIEW v AS SELECT * FROM a, b", {"v", "a", "b"}),
    ("CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM big", {"mv", "big"}),
    ("CREATE FOREIGN TABLE ft (a int) SERVER srv", {"ft"}),
    ("CREATE SEQUENCE s.seq", {"s.seq"}),
    ("ALTER SEQUENCE seq RESTART", {"seq"}),
    ("CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()", {"t"}),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD INSERT INTO u VALUES (new.a)", {"t", "u"}),
    ("CREATE POLICY pol ON t USING (owner = current_user)", {"t"}),
    ("CREATE STATISTICS st ON a, b FROM t", {"t"}),
    ("CREATE PUBLICATION pub FOR TABLE t1, s.t2", {"t1", "s.t2"}),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv", {"s.mv"}),
    ("VACUUM (ANALYZE) t, s.u (a)", {"t", "s.u"}),
    ("ANALYZE t", {"t"}),
    ("VACUUM", set()),
    ("CLUSTER t USING i", {"t"}),
    ("REINDEX TABLE s.t", {"s.t"}),
    ("REINDEX INDEX i", {"i"}),
    ("DECLARE c CURSOR FOR SELECT * FROM secrets", {"secrets"}),
    ("PREPARE q AS SELECT * FROM p WHERE a = $1", {"p"}),
    ("EXPLAIN ANALYZE SELECT * FROM e", {"e"}),
    ("EXPLAIN SELECT * FROM e", {"e"}),  # planning opens the table
    ("SELECT 1; DROP TABLE x", {"x"}),
]


@pytest.mark.parametrize(("sql", "tables"), TABLES, ids=[s for s, _ in TABLES])
def test_tables_every_relation_named(sql: str, tables: set[str]) -> None:
    a = analyze_uncached(sql)
    assert a.error is None and a.undecidable is None
    assert set(a.tables) == tables


# CTE names in scope are not tables; everything outside their scope is
CTE_SCOPES: list[tuple[str, set[str]]] = [
    ("WITH x AS (SELECT 1) SELECT * FROM x", set()),
    ("WITH x AS (SELECT 1) SELECT * FROM public.x", {"public.x"}),  # qualified: never a CTE
    ("SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) s", {"secrets"}),
    ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s WHERE EXISTS (SELECT * FROM x)", {"x"}),
    ("(WITH x AS (SELECT 1) SELECT * FROM x) UNION SELECT * FROM x", {"x"}),
    ("SELECT * FROM c UNION ALL (WITH c AS (SELECT 1) SELECT * FROM c)", {"c"}),
    ("WITH c AS (SELECT 1) SELECT * FROM c UNION ALL SELECT * FROM c", set()),
    # a CTE's own query does not see it, nor the CTEs after it...
    ("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets", {"secrets"}),
    ("WITH y AS (SELECT * FROM x), x AS (SELECT 1) SELECT * FROM y", {"x"}),
    ("WITH x AS (SELECT 1), y AS (SELECT * FROM x, z) SELECT * FROM y", {"z"}),
    # ...unless the WITH is RECURSIVE
    ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", set()),
    ("WITH RECURSIVE y AS (SELECT * FROM x), x AS (SELECT 1) SELECT * FROM y", set()),
    # nested scopes
    ("WITH x AS (SELECT 1) SELECT * FROM (WITH y AS (SELECT * FROM x) SELECT * FROM y, x) s, x", set()),
    ("WITH x AS (SELECT 1) SELECT * FROM t WHERE a IN (SELECT * FROM x) "
     "AND b IN (WITH x AS (SELECT * FROM x) SELECT * FROM x)", {"t"}),
    ("UPDATE t SET a = 1 WHERE id IN (WITH t AS (SELECT 1) SELECT * FROM t)", {"t"}),
    # a DML target or SELECT INTO is a table even when a CTE has its name
    ("WITH t AS (SELECT 1) DELETE FROM t", {"t"}),
    ("WITH x AS (SELECT 1) SELECT * INTO x FROM x", {"x"}),
    ("WITH src AS (SELECT * FROM real_src) MERGE INTO tgt USING src ON tgt.id = src.id WHEN MATCHED THEN DELETE",
     {"real_src", "tgt"}),
    ("WITH v AS (SELECT 1) INSERT INTO log SELECT * FROM v", {"log"}),
    # a later statement of the string is outside every WITH
    ("WITH x AS (SELECT 1) SELECT * FROM x; SELECT * FROM x", {"x"}),
]


@pytest.mark.parametrize(("sql", "tables"), CTE_SCOPES, ids=[s for s, _ in CTE_SCOPES])
def test_cte_references_are_not_tables_within_their_scope(sql: str, tables: set[str]) -> None:
    a = analyze_uncached(sql)
    assert a.error is None
    assert set(a.tables) == tables


# (statement, every function called)
FUNCTIONS: list[tuple[str, set[str]]] = [
    ("SELECT pg_sleep(1)", {"pg_sleep"}),
    ('SELECT "pg_sleep"(1), PG_SLEEP(1), Pg_Sleep(1)', {"pg_sleep"}),
    ('SELECT PG_CATALOG.PG_SLEEP(1), pg_catalog."pg_sleep"(1), "pg_catalog".pg_sleep(1)', {"pg_catalog.pg_sleep"}),
    ('SELECT "PG_SLEEP"(1)', {"PG_SLEEP"}),  # quoted: kept as written (another function)
    ("SELECT db.s.f()", {"s.f"}),
    ("SELECT count(*), sum(a) FILTER (WHERE lower(b) = 'x'), rank() OVER (ORDER BY c) FROM t",
     {"count", "sum", "lower", "rank"}),
    ("SELECT * FROM generate_series(1, 3) g, LATERAL unnest(ARRAY[1]) u, ROWS FROM (f1(), f2()) r",
     {"generate_series", "unnest", "f1", "f2"}),
    ("SELECT * FROM t WHERE a IN (SELECT g(x) FROM u)", {"g"}),
    ("SELECT EXTRACT(year FROM now()), substring('x' FROM 1), trim(' x ')",
     {"now", "pg_catalog.extract", "pg_catalog.substring", "pg_catalog.btrim"}),
    # not FuncCalls: SQL value functions, COALESCE, casts, operators
    ("SELECT CURRENT_USER, CURRENT_DATE, coalesce(a, 1), a::text, 'x' || 'y', a OPERATOR(pg_catalog.+) 1 FROM t", set()),
    ("CALL p(1)", {"p"}),
    ("CALL s.p(f(1))", {"s.p", "f"}),
    ("INSERT INTO t VALUES (nextval('seq'), md5('x'))", {"nextval", "md5"}),
    ("UPDATE t SET a = upper(a) WHERE b = f()", {"upper", "f"}),
    ("CREATE TABLE t (a int DEFAULT d(), b int CHECK (b > k()), c int GENERATED ALWAYS AS (h(b)) STORED)",
     {"d", "k", "h"}),
    ("CREATE INDEX ON t USING gin (to_tsvector('english', b)) WHERE c(x)", {"to_tsvector", "c"}),
    ("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION s.f()", {"s.f"}),
    ("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE PROCEDURE etf()", {"etf"}),
    ("CREATE POLICY p ON t USING (allowed(owner))", {"allowed"}),
    ("EXPLAIN SELECT f(1)", {"f"}),  # planning may evaluate it
    ("PREPARE q AS SELECT f($1)", {"f"}),
    ("EXECUTE q(g(1))", {"g"}),
    ("COPY (SELECT f() FROM t) TO STDOUT", {"f"}),
    ("CREATE FUNCTION f(a int DEFAULT g()) RETURNS int LANGUAGE sql RETURN h(a)", {"g", "h"}),
    # functions wired into an object that calls them later
    ("CREATE OPERATOR public.~~~ (FUNCTION = pg_sleep, RIGHTARG = double precision)", {"pg_sleep"}),
    ("CREATE OPERATOR === (PROCEDURE = s.f, LEFTARG = int, RIGHTARG = int, RESTRICT = eqsel, COMMUTATOR = ===)",
     {"s.f", "eqsel"}),
    ("ALTER OPERATOR === (int, int) SET (JOIN = j)", {"j"}),
    ("CREATE AGGREGATE ag (int) (sfunc = s.f, stype = int, finalfunc = g)", {"s.f", "g"}),
    ("CREATE CAST (int AS text) WITH FUNCTION s.f(int)", {"s.f"}),
    ("CREATE TYPE ty (input = f_in, output = f_out, receive = none)", {"f_in", "f_out"}),
    ("CREATE TYPE r AS RANGE (subtype = float8, subtype_diff = float8mi)", {"float8mi"}),
    ("CREATE LANGUAGE plx HANDLER h INLINE i VALIDATOR v", {"h", "i", "v"}),
    ("CREATE FOREIGN DATA WRAPPER w HANDLER h VALIDATOR v", {"h", "v"}),
    ("CREATE ACCESS METHOD am TYPE INDEX HANDLER h", {"h"}),
    ("CREATE CONVERSION cv FOR 'LATIN1' TO 'UTF8' FROM f", {"f"}),
    ("CREATE OPERATOR CLASS oc FOR TYPE int USING btree AS OPERATOR 1 <, FUNCTION 1 cmp(int, int)", {"cmp"}),
    ("CREATE TRANSFORM FOR int LANGUAGE plx (FROM SQL WITH FUNCTION a(internal), TO SQL WITH FUNCTION b(internal))",
     {"a", "b"}),
    ("CREATE TEXT SEARCH TEMPLATE tt (INIT = i, LEXIZE = l)", {"i", "l"}),
]


@pytest.mark.parametrize(("sql", "functions"), FUNCTIONS, ids=[s for s, _ in FUNCTIONS])
def test_functions_every_call(sql: str, functions: set[str]) -> None:
    a = analyze_uncached(sql)
    assert a.error is None and a.undecidable is None
    assert set(a.functions) == functions


def test_names_of_a_failed_parse_are_empty() -> None:
    a = analyze_uncached("SELECT * FROM secrets WHERE")
    assert a.error is not None and a.tables == frozenset() and a.functions == frozenset()


_NAME_TOKENS = _TOKENS + ["secrets", "s.t", '"Q"', "pg_sleep(1)", "f(", "JOIN", "USING", "EXECUTE", "BEGIN", "END",
                          "$x$", "dblink_exec(", "query_to_xml(", "table_to_xml(", "LANGUAGE", "plpgsql", "sql",
                          "CREATE", "FUNCTION", "RETURNS", "int", "RECURSIVE", "UNION", "||", ":=", "PERFORM"]


def _check_names(a: SqlAnalysis) -> None:
    assert isinstance(a, SqlAnalysis)
    assert type(a.tables) is frozenset and type(a.functions) is frozenset
    if a.error is None:
        assert all(isinstance(n, str) and n for n in a.tables | a.functions)
        assert a.undecidable is None or (isinstance(a.undecidable, str) and a.undecidable)
        assert a.kinds <= KNOWN_KINDS
    else:
        assert not a.tables and not a.functions and a.undecidable is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_names_are_well_formed_for_arbitrary_text(text: str) -> None:
    _check_names(analyze_uncached(text))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_NAME_TOKENS), max_size=30))
def test_names_are_well_formed_for_sql_like_text(tokens: list[str]) -> None:
    text = " ".join(tokens)
    _check_names(analyze_uncached(text))
    for wrapped in (f"DO $w$ BEGIN {text}; END $w$", f"SELECT dblink_exec($w${text}$w$)",
                    f"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $w${text}$w$"):
        a = analyze_uncached(wrapped)
        assert a.error is None  # the outer statement parses; what is inside is analysed or undecidable
        _check_names(a)


# ---- cache -------------------------------------------------------------------------------

def test_exact_hit_returns_the_same_analysis() -> None:
    an = SqlAnalyzer()
    first = an.analyze("SELECT 1")
    assert an.analyze("SELECT 1") is first
    assert an.stats == [1, 0, 1]


def test_shape_hit_for_statements_differing_in_constants() -> None:
    an = SqlAnalyzer()
    q = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
    first = an.analyze(q.format(1))
    for n in range(2, 50):
        assert an.analyze(q.format(n)) is first
    assert an.stats == [0, 48, 1]
    # and a text seen again is an exact hit
    an.analyze(q.format(7))
    assert an.stats[0] == 1


def test_shape_cache_agrees_with_fresh_analysis() -> None:
    # differential: whatever the shape cache returns is what a fresh analysis says
    an = SqlAnalyzer()
    variants = [
        ("SELECT * FROM t WHERE a = {}", ["1", "'x'", "$$y$$", "E'z'", "1.5", "-3"]),
        ("UPDATE t SET a = {} WHERE b = 2", ["1", "'DROP TABLE x'", "NULL"]),
        ("INSERT INTO t VALUES ({}) ON CONFLICT DO NOTHING", ["1", "'a'"]),
        ("COPY (SELECT {}) TO STDOUT", ["1", "'a'"]),
        ("EXPLAIN (ANALYZE {}) DELETE FROM t", ["true", "false", "0", "1", "off", "'on'"]),
        ("SET work_mem = {}", ["'1MB'", "1024"]),
    ]
    for template, values in variants:
        for v in values:
            sql = template.format(v)
            assert an.analyze(sql) == analyze_uncached(sql), sql
    assert an.stats[1] > 0


def test_literal_sensitive_analyses_are_never_reused_by_shape() -> None:
    an = SqlAnalyzer()
    a = an.analyze("DO $$ BEGIN PERFORM 1; END $$")
    assert a.literal_sensitive
    b = an.analyze("DO $$ BEGIN DROP TABLE x; END $$")
    assert b.literal_sensitive
    assert an.stats == [0, 0, 2]  # two full analyses, no shape hit
    for sql in ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'"):
        assert an.analyze(sql).literal_sensitive
    assert an.stats[1] == 0
    # EXPLAIN (ANALYZE 0) and (ANALYZE 1) share a shape but not a meaning
    off = an.analyze("EXPLAIN (ANALYZE 0) DELETE FROM t")
    on = an.analyze("EXPLAIN (ANALYZE 1) DELETE FROM t")
    assert off.literal_sensitive and "DELETE" not in off.kinds and "DELETE" in on.kinds
    assert an.stats[1] == 0


def test_parse_errors_are_cached() -> None:
    an = SqlAnalyzer()
    a = an.analyze("SELEC 1")
    assert an.analyze("SELEC 1") is a and a.error is not None
    assert an.stats == [1, 0, 1]


def test_cache_is_bounded_lru() -> None:
    an = SqlAnalyzer(cache_size=4)
    for n in range(20):
        an.analyze(f"SELECT {n} FROM t{n}")  # distinct shapes
    assert len(an._exact) == 4 and len(an._shape) == 4
    an.analyze("SELECT 16 FROM t16")  # touch the oldest survivor
    an.analyze("SELECT 99 FROM t99")
    assert "SELECT 16 FROM t16" in an._exact and "SELECT 17 FROM t17" not in an._exact


def test_long_texts_are_not_cached() -> None:
    an = SqlAnalyzer(max_cached_chars=100)
    sql = "SELECT " + ", ".join(["1"] * 100)
    an.analyze(sql)
    an.analyze(sql)
    assert len(an) == 0 and an.stats == [0, 0, 2]


def test_caches_are_per_instance() -> None:
    a, b = SqlAnalyzer(), SqlAnalyzer()
    a.analyze("SELECT 1")
    assert len(a) == 1 and len(b) == 0
    with pytest.raises(ValueError):
        SqlAnalyzer(cache_size=0)

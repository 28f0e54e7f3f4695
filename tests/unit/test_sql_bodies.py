"""SQL hidden in string constants: DO and function bodies, dynamic SQL, SQL-running functions."""

from __future__ import annotations

import pytest

from policy.sql import KNOWN_KINDS, SqlAnalysis, SqlAnalyzer, analyze_uncached


def _ok(sql: str) -> SqlAnalysis:
    a = analyze_uncached(sql)
    assert a.error is None, (sql, a.error)
    assert a.kinds <= KNOWN_KINDS
    return a


# (text, leaves, tables, functions): everything analysed, nothing undecidable
ANALYSED: list[tuple[str, set[str], set[str], set[str]]] = [
    # DO blocks: the default language is plpgsql
    ("DO $$ BEGIN END $$", {"DO"}, set(), set()),
    ("DO $$ BEGIN DELETE FROM t; END $$", {"DO", "DELETE"}, {"t"}, set()),
    ("DO LANGUAGE plpgsql $x$ BEGIN DROP TABLE s.t; END $x$", {"DO", "DROP TABLE"}, {"s.t"}, set()),
    ("DO 'BEGIN TRUNCATE t; END'", {"DO", "TRUNCATE"}, {"t"}, set()),
    ("DO E'BEGIN DELETE FROM t WHERE a = \\'x\\'; END'", {"DO", "DELETE"}, {"t"}, set()),
    ("DO $$ BEGIN PERFORM pg_sleep(1); END $$", {"DO", "SELECT"}, set(), {"pg_sleep"}),
    ("DO $$ BEGIN COMMIT; DROP TABLE users; END $$", {"DO", "COMMIT", "DROP TABLE"}, {"users"}, set()),
    ("DO $$ BEGIN ROLLBACK; END $$", {"DO", "ROLLBACK"}, set(), set()),
    ("DO $$ BEGIN SET ROLE admin; END $$", {"DO", "SET ROLE"}, set(), set()),
    ("DO $$ BEGIN CALL s.p(1); END $$", {"DO", "CALL"}, set(), {"s.p"}),
    # expressions: conditions, assignments, RAISE / RETURN arguments are not statements, but
    # what they read and call counts
    ("DO $$ DECLARE n int := (SELECT count(*) FROM a); BEGIN IF n > (SELECT max(x) FROM b) THEN "
     "RAISE NOTICE '%', (SELECT lower(y) FROM c); END IF; WHILE f(n) LOOP n := n - 1; END LOOP; END $$",
     {"DO"}, {"a", "b", "c"}, {"count", "max", "lower", "f"}),
    ("DO $$ DECLARE x int[]; BEGIN x[(SELECT 1 FROM idx)] := (SELECT 2 FROM val); END $$", {"DO"}, {"idx", "val"}, set()),
    ("DO $$ <<l>> DECLARE x int; BEGIN l.x = g(1); END $$", {"DO"}, set(), {"g"}),
    ("DO $$ DECLARE c CURSOR FOR SELECT * FROM cur; r record; BEGIN OPEN c; "
     "FOR r IN SELECT * FROM loop_t LOOP NULL; END LOOP; END $$", {"DO", "SELECT"}, {"cur", "loop_t"}, set()),
    ("DO $$ BEGIN ASSERT (SELECT true FROM chk), 'x'; EXCEPTION WHEN others THEN DELETE FROM log; END $$",
     {"DO", "DELETE"}, {"chk", "log"}, set()),
    # dynamic SQL of a constant string in any quoting
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", {"DO", "DROP TABLE"}, {"t"}, set()),
    ("DO $$ BEGIN EXECUTE $q$DROP TABLE t$q$; END $$", {"DO", "DROP TABLE"}, {"t"}, set()),
    ("DO $$ BEGIN EXECUTE E'DROP TABLE \\x74'; END $$", {"DO", "DROP TABLE"}, {"t"}, set()),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM t'::text; END $$", {"DO", "DELETE"}, {"t"}, set()),
    ("DO $$ BEGIN EXECUTE 'SELECT 1 FROM t WHERE a = $1' USING h(2); END $$", {"DO", "SELECT"}, {"t"}, {"h"}),
    ("DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT * FROM dyn' LOOP END LOOP; END $$",
     {"DO", "SELECT"}, {"dyn"}, set()),
    ("DO $$ DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'UPDATE t SET a = 1 RETURNING *'; END $$",
     {"DO", "UPDATE"}, {"t"}, set()),
    ("DO $$ BEGIN EXECUTE ''; END $$", {"DO"}, set(), set()),
    # nested bodies recurse
    ("DO $$ BEGIN DO $i$ BEGIN DROP TABLE inner_t; END $i$; END $$", {"DO", "DROP TABLE"}, {"inner_t"}, set()),
    ("DO $$ BEGIN EXECUTE 'DO $i$ BEGIN EXECUTE ''TRUNCATE deep''; END $i$'; END $$", {"DO", "TRUNCATE"}, {"deep"}, set()),
    # CREATE FUNCTION / PROCEDURE bodies, also CREATE OR REPLACE
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'", {"CREATE FUNCTION", "DELETE"}, {"t"}, set()),
    ("CREATE OR REPLACE FUNCTION f() RETURNS SETOF secrets LANGUAGE sql AS $$ SELECT * FROM secrets; DELETE FROM log $$",
     {"CREATE FUNCTION", "SELECT", "DELETE"}, {"secrets", "log"}, set()),
    ("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$",
     {"CREATE PROCEDURE", "INSERT", "COMMIT"}, {"t"}, set()),
    ("CREATE OR REPLACE PROCEDURE p() AS $$ BEGIN UPDATE u SET a = 1; END $$ LANGUAGE plpgsql",
     {"CREATE PROCEDURE", "UPDATE"}, {"u"}, set()),
    ("CREATE FUNCTION f(a int) RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT x FROM t WHERE y = a; "
     "RETURN QUERY EXECUTE 'SELECT 1 FROM u'; END $$", {"CREATE FUNCTION", "SELECT"}, {"t", "u"}, set()),
    ("CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (NEW.a, TG_OP); "
     "RETURN NEW; END $$", {"CREATE FUNCTION", "INSERT"}, {"audit"}, set()),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'BEGIN DELETE FROM t WHERE a = ''x''; RETURN 1; END'",
     {"CREATE FUNCTION", "DELETE"}, {"t"}, set()),
    # signatures libpg_query cannot resolve on its own (VARIADIC, %TYPE, types in other schemas)
    ("CREATE FUNCTION f(VARIADIC a int[]) RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM v; a := a; RETURN 1; END $$",
     {"CREATE FUNCTION", "DELETE"}, {"v"}, set()),
    ("CREATE FUNCTION s.f(a other.ty, c t.col%TYPE) RETURNS other.ty LANGUAGE plpgsql AS $$ BEGIN c := 1; "
     "DELETE FROM q; RETURN a; END $$", {"CREATE FUNCTION", "DELETE"}, {"q"}, set()),
    # a body in a multi-statement string, after non-ASCII text (statement locations are bytes)
    ("SELECT 'é'; DO $$ BEGIN DELETE FROM tü; END $$; SELECT 1", {"SELECT", "DO", "DELETE"}, {"tü"}, set()),
    # SQL-running functions with a constant argument
    ("SELECT dblink_exec('DROP TABLE secrets')", {"SELECT", "DROP TABLE"}, {"secrets"}, {"dblink_exec"}),
    ("SELECT dblink_exec('conn', 'DROP TABLE secrets', true)", {"SELECT", "DROP TABLE"}, {"secrets"}, {"dblink_exec"}),
    ("SELECT ext.DBLINK_EXEC('dbname=x', 'DELETE FROM t')", {"SELECT", "DELETE"}, {"t"}, {"ext.dblink_exec"}),
    ("SELECT \"dblink_exec\"('TRUNCATE t', false)", {"SELECT", "TRUNCATE"}, {"t"}, {"dblink_exec"}),
    ("SELECT * FROM dblink('conn', 'SELECT * FROM remote') AS r(a int)", {"SELECT"}, {"remote"}, {"dblink"}),
    ("SELECT * FROM dblink('DELETE FROM t RETURNING 1') AS r(a int)", {"SELECT", "DELETE"}, {"t"}, {"dblink"}),
    ("SELECT dblink_send_query('conn', 'UPDATE t SET a = 1')", {"SELECT", "UPDATE"}, {"t"}, {"dblink_send_query"}),
    ("SELECT dblink_open('cur', 'SELECT * FROM a')", {"SELECT"}, {"a"}, {"dblink_open"}),
    ("SELECT dblink_open('conn', 'cur', 'SELECT * FROM b')", {"SELECT"}, {"b"}, {"dblink_open"}),
    ("SELECT dblink_open('cur', 'SELECT * FROM c', true)", {"SELECT"}, {"c"}, {"dblink_open"}),
    ("SELECT dblink_open('conn', 'cur', 'SELECT * FROM d', false)", {"SELECT"}, {"d"}, {"dblink_open"}),
    ("SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')", {"SELECT", "DELETE"}, {"t"}, {"query_to_xml"}),
    ("SELECT pg_catalog.query_to_xmlschema('SELECT * FROM s.t', true, false, '')", {"SELECT"}, {"s.t"},
     {"pg_catalog.query_to_xmlschema"}),
    ("SELECT query_to_xml_and_xmlschema(query => 'SELECT * FROM t', nulls => true, tableforest => false, targetns => '')",
     {"SELECT"}, {"t"}, {"query_to_xml_and_xmlschema"}),
    ("SELECT * FROM ts_stat('SELECT vector FROM apod')", {"SELECT"}, {"apod"}, {"ts_stat"}),
    ("SELECT ts_rewrite('a & b'::tsquery, 'SELECT t, s FROM aliases')", {"SELECT"}, {"aliases"}, {"ts_rewrite"}),
    ("SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)", {"SELECT"}, set(), {"ts_rewrite"}),
    ("DO $$ BEGIN PERFORM dblink_exec('DROP TABLE remote'); END $$", {"DO", "SELECT", "DROP TABLE"}, {"remote"},
     {"dblink_exec"}),
    # set_config of these settings is SET ROLE / SET SESSION AUTHORIZATION
    ("SELECT set_config('role', 'admin', false)", {"SELECT", "SET ROLE"}, set(), {"set_config"}),
    ("SELECT pg_catalog.set_config('ROLE', 'admin', true)", {"SELECT", "SET ROLE"}, set(), {"pg_catalog.set_config"}),
    ("SELECT set_config('session_authorization', 'admin', false)", {"SELECT", "SET SESSION AUTHORIZATION"}, set(),
     {"set_config"}),
    ("SELECT set_config('application_name', $1, false)", {"SELECT"}, set(), {"set_config"}),
    ("DO $$ BEGIN PERFORM set_config('role', 'admin', false); END $$", {"DO", "SELECT", "SET ROLE"}, set(),
     {"set_config"}),
    # functions that read the table they are given
    ("SELECT table_to_xml('secrets', true, false, '')", {"SELECT"}, {"secrets"}, {"table_to_xml"}),
    ("SELECT table_to_xml('  \"Sec\" . SECRETS ', true, false, '')", {"SELECT"}, {"Sec.secrets"}, {"table_to_xml"}),
    ("SELECT pg_catalog.table_to_xmlschema('db.s.t'::regclass, true, false, '')", {"SELECT"}, {"s.t"},
     {"pg_catalog.table_to_xmlschema"}),
    ("SELECT table_to_xml_and_xmlschema(tbl => 'x', nulls => true, tableforest => false, targetns => '')",
     {"SELECT"}, {"x"}, {"table_to_xml_and_xmlschema"}),
]


@pytest.mark.parametrize(("sql", "leaves", "tables", "functions"), ANALYSED, ids=[c[0] for c in ANALYSED])
def test_bodies_and_nested_sql_count_as_what_they_do(sql: str, leaves: set[str], tables: set[str],
                                                      functions: set[str]) -> None:
    a = _ok(sql)
    assert a.undecidable is None, a.undecidable
    assert set(a.leaves) == leaves
    assert set(a.tables) == tables
    assert set(a.functions) == functions
    # whatever a string constant held, the analysis must not be reused for another constant
    assert a.literal_sensitive


def test_what_holds_no_sql_text_is_not_literal_sensitive() -> None:
    # the SQL-standard body is parsed already: no constant is looked into
    a = _ok("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t; SELECT 1; END")
    assert a.leaves == {"CREATE FUNCTION", "DELETE", "SELECT"} and a.tables == {"t"} and not a.literal_sensitive
    # a cursor is declared elsewhere (and seen there)
    a = _ok("SELECT cursor_to_xml('c', 10, true, false, '')")
    assert a.functions == {"cursor_to_xml"} and a.undecidable is None and not a.literal_sensitive


# (text, the undecidable message); what the analysis found besides stays reported
UNDECIDABLE: list[tuple[str, str]] = [
    ("DO $$ BEGIN EXECUTE 'DR' || 'OP TABLE t'; END $$",
     "dynamic SQL (EXECUTE of a computed string) in a DO block cannot be analysed"),
    ("DO $$ DECLARE q text := 'DROP TABLE t'; BEGIN EXECUTE q; END $$",
     "dynamic SQL (EXECUTE of a computed string) in a DO block cannot be analysed"),
    ("DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$",
     "dynamic SQL (EXECUTE of a computed string) in a DO block cannot be analysed"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE ab'::varchar(12); END $$",  # a length truncates: not the literal
     "dynamic SQL (EXECUTE of a computed string) in a DO block cannot be analysed"),
    ("CREATE FUNCTION f(q text) RETURNS SETOF record LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE q; END $$",
     "dynamic SQL (EXECUTE of a computed string) in function f cannot be analysed"),
    ("CREATE PROCEDURE s.p(q text) LANGUAGE plpgsql AS $$ DECLARE r record; BEGIN FOR r IN EXECUTE q LOOP END LOOP; END $$",
     "dynamic SQL (EXECUTE of a computed string) in procedure s.p cannot be analysed"),
    ("DO $$ DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT ' || 1; END $$",
     "dynamic SQL (EXECUTE of a computed string) in a DO block cannot be analysed"),
    ("DO $$ BEGIN EXECUTE 'DROP TABL t'; END $$",
     'dynamic SQL in a DO block does not parse (syntax error at or near "TABL") and cannot be analysed'),
    ("DO LANGUAGE plpython3u $$ plpy.execute('DROP TABLE t') $$",
     "a DO block is written in language plpython3u, which cannot be analysed"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plperl AS $$ return 1 $$",
     "function f is written in language plperl, which cannot be analysed"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'sym'",
     "function f is written in language c, which cannot be analysed"),
    ("CREATE FUNCTION f(int, int) RETURNS int LANGUAGE internal AS 'int4pl'",
     "function f is written in language internal, which cannot be analysed"),
    # PostgreSQL matches a language name exactly: 'SQL' is not sql (and does not exist)
    ("CREATE FUNCTION f() RETURNS int LANGUAGE 'SQL' AS 'DELETE FROM t RETURNING 1'",
     "function f is written in language SQL, which cannot be analysed"),
    ("CREATE FUNCTION f() RETURNS int AS 'SELECT 1'",
     "function f has a body but no LANGUAGE and cannot be analysed"),
    # accepted by a server with check_function_bodies = off
    ("DO $$ BEGIN SELEC 1; END $$",
     'a DO block does not parse as PL/pgSQL (syntax error at or near "SELEC") and cannot be analysed'),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELET FROM t'",
     'the body of function f does not parse (syntax error at or near "DELET") and cannot be analysed'),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN y := 1; END $$",
     'function f does not parse as PL/pgSQL ("y" is not a known variable) and cannot be analysed'),
    ("SELECT dblink_exec(current_setting('x'))", "the SQL text passed to dblink_exec is computed and cannot be analysed"),
    ("SELECT dblink_exec('conn', $1, true)", "the SQL text passed to dblink_exec is computed and cannot be analysed"),
    ("SELECT * FROM dblink($1) AS r(a int)", "the SQL text passed to dblink is computed and cannot be analysed"),
    # (sql, bool) or (conn, sql)? a computed second argument may be the SQL
    ("SELECT dblink_exec('DROP TABLE t', x) FROM flags",
     "which argument of dblink_exec holds SQL text cannot be told, so it cannot be analysed"),
    ("SELECT dblink_exec('conn', $1)", "which argument of dblink_exec holds SQL text cannot be told, so it cannot be analysed"),
    ("SELECT dblink('conn', 'SELECT ' || 'x')", "which argument of dblink holds SQL text cannot be told, so it cannot be analysed"),
    ("SELECT dblink_exec(VARIADIC ARRAY['DROP TABLE t'])",
     "which argument of dblink_exec holds SQL text cannot be told, so it cannot be analysed"),
    ("SELECT query_to_xml(q, true, false, '') FROM queries",
     "the SQL text passed to query_to_xml is computed and cannot be analysed"),
    ("SELECT query_to_xml(nulls => true, query => 'SEL', tableforest => false, targetns => '')",
     'the SQL text passed to query_to_xml does not parse (syntax error at or near "SEL") and cannot be analysed'),
    ("SELECT ts_rewrite('a'::tsquery, q) FROM rewrites", "the SQL text passed to ts_rewrite is computed and cannot be analysed"),
    ("SELECT table_to_xml(relname::regclass, true, false, '') FROM pg_class",
     "the table passed to table_to_xml is not a constant name and cannot be analysed"),
    ("SELECT table_to_xml(16384, true, false, '')", "the table passed to table_to_xml is not a constant name and cannot be analysed"),
    ("SELECT table_to_xml('16384', true, false, '')", "the table passed to table_to_xml is not a constant name and cannot be analysed"),
    ("SELECT set_config($1, $2, false)", "the setting passed to set_config is computed and cannot be analysed"),
    ("SELECT schema_to_xml('public', true, false, '')", "schema_to_xml reads every table of a schema, which cannot be listed"),
    ("SELECT pg_catalog.database_to_xmlschema(true, false, '')",
     "pg_catalog.database_to_xmlschema reads every table of the database, which cannot be listed"),
]


@pytest.mark.parametrize(("sql", "reason"), UNDECIDABLE, ids=[c[0] for c in UNDECIDABLE])
def test_what_cannot_be_seen_is_undecidable_and_says_why(sql: str, reason: str) -> None:
    a = _ok(sql)
    assert a.undecidable == reason


def test_undecidable_keeps_what_was_seen() -> None:
    a = _ok("DO $$ BEGIN DELETE FROM t; EXECUTE 'TRUNC' || 'ATE u'; PERFORM pg_sleep(1); END $$")
    assert a.undecidable is not None
    assert {"DO", "DELETE", "SELECT"} <= a.leaves and "t" in a.tables and "pg_sleep" in a.functions
    # the computed string's own calls are seen too
    a = _ok("DO $$ BEGIN EXECUTE format('DROP TABLE %I', (SELECT name FROM victims)); END $$")
    assert a.undecidable and "format" in a.functions and "victims" in a.tables


def test_the_issue_example_never_passes_as_harmless() -> None:
    a = _ok("DO $$ BEGIN EXECUTE 'DR' || 'OP TABLE t'; END $$")
    assert a.undecidable is not None or "DROP TABLE" in a.kinds


def test_nesting_is_bounded() -> None:
    def nested(levels: int) -> str:
        sql = "DROP TABLE deepest;"
        for n in range(levels):
            sql = f"DO $t{n}$ BEGIN {sql} END $t{n}$;"
        return sql

    shallow = _ok(nested(3))
    assert shallow.undecidable is None and "DROP TABLE" in shallow.kinds and shallow.tables == {"deepest"}
    deep = _ok(nested(30))
    assert deep.undecidable is not None and "nested more than" in deep.undecidable
    # dynamic SQL inside dynamic SQL is bounded the same way
    sql = "DROP TABLE deepest"
    for n in range(30):
        sql = f"SELECT dblink_exec($q{n}${sql}$q{n}$)"
    a = _ok(sql)
    assert a.undecidable is not None and "nested more than" in a.undecidable


def test_the_work_per_string_is_bounded() -> None:
    # every statement and expression of a body is one more parse: a huge body is refused, not parsed
    body = "x := x + 1;" * 6000
    a = _ok(f"DO $$ DECLARE x int := 0; BEGIN {body} END $$")
    assert a.undecidable is not None and "more than 5000 nested statements" in a.undecidable
    a = _ok("DO $$ BEGIN END $$;" * 6000)
    assert a.undecidable is not None and "more than 5000 nested statements" in a.undecidable
    # a large body below the bound is analysed in full
    a = _ok(f"DO $$ DECLARE x int := 0; BEGIN {'x := x + 1;' * 1000} DELETE FROM t; END $$")
    assert a.undecidable is None and "DELETE" in a.kinds


@pytest.mark.parametrize("body", [
    "#option dump\nBEGIN END",
    "# OPTION DUMP\nBEGIN END",
    "#option /* c */ dump\nBEGIN END",
    "#variable_conflict use_column\n#option dump\nBEGIN END",
])
def test_option_dump_is_refused_and_prints_nothing(body: str, capfd: pytest.CaptureFixture[str]) -> None:
    # libpg_query honours `#option dump` by printing the compiled function to stdout
    for sql in (f"DO $$ {body} $$", f"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ {body} $$",
                f"SELECT dblink_exec('DO $$ {body} $$')"):
        a = _ok(sql)
        assert a.undecidable is not None and "#option dump" in a.undecidable
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_dump_in_a_string_or_comment_is_not_the_option() -> None:
    a = _ok("DO $$ BEGIN RAISE NOTICE '#option dump'; /* # option dump */ END $$")
    assert a.undecidable is None


def test_body_analysis_follows_the_text_not_the_shape() -> None:
    # two DO bodies differing only in a literal normalize alike; the analyses must differ
    an = SqlAnalyzer()
    harmless = an.analyze("DO $$ BEGIN EXECUTE 'SELECT 1'; END $$")
    harmful = an.analyze("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$")
    assert harmless.literal_sensitive and harmful.literal_sensitive
    assert "DROP TABLE" not in harmless.kinds and "DROP TABLE" in harmful.kinds
    assert harmful.tables == {"users"} and not harmless.tables
    assert an.stats == [0, 0, 2]
    # and so for every kind of string constant that is looked into
    pairs = [
        ("DO $$ BEGIN PERFORM 1; END $$", "DO $$ BEGIN DELETE FROM t; END $$"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
         "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'"),
        ("SELECT dblink_exec('SELECT 1')", "SELECT dblink_exec('DROP TABLE t')"),
        ("SELECT query_to_xml('SELECT 1', true, false, '')", "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, false, '')"),
        ("SELECT table_to_xml('public_t', true, false, '')", "SELECT table_to_xml('secrets', true, false, '')"),
        ("SELECT dblink_exec('SELECT 1')", "SELECT dblink_exec($1)"),
        ("SELECT set_config('application_name', 'x', false)", "SELECT set_config('role', 'x', false)"),
    ]
    for first, second in pairs:
        an = SqlAnalyzer()
        a, b = an.analyze(first), an.analyze(second)
        assert a != b, (first, second)
        assert an.stats[1] == 0, (first, second)
        assert b == analyze_uncached(second)


def test_plain_statements_stay_shape_cacheable() -> None:
    # table and function names are not constants: nothing about them needs the exact text
    an = SqlAnalyzer()
    first = an.analyze("SELECT lower(name) FROM users WHERE id = 1")
    again = an.analyze("SELECT lower(name) FROM users WHERE id = 2")
    assert again is first and not first.literal_sensitive and an.stats == [0, 1, 1]
    assert first.tables == {"users"} and first.functions == {"lower"}

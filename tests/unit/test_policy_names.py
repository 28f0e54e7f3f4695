"""Name rules (`tables`, `functions`): glob placement of qualified and unqualified names, the
catalog snapshot they are placed with, and start-up settings checked as SET statements."""

from __future__ import annotations

import pytest

from gateway.config import Config, Rule, RuleMatch
from gateway.errors import ConfigError
from policy.engine import PolicyEngine
from policy.glob import NameGlobs, split_qualified
from protocols.postgres.catalog import CatalogCache, CatalogReader, build_snapshot
from protocols.postgres import codec
from protocols.postgres.codec import I16, I32


@pytest.mark.parametrize("ref, parts", [
    ("users", (None, "users")), ("public.users", ("public", "users")), ('"my.t"', (None, "my.t")),
    ('vault."a.b"', ("vault", "a.b")), ("db.s.t", ("s", "t")), ('"x""y".z', ('x"y', "z")),
])
def test_split_qualified(ref, parts):
    assert split_qualified(ref) == parts


def test_globs_place_unqualified_names_where_the_catalog_says():
    g = NameGlobs(["secrets", "vault.*"])
    assert g.first_match(["public.secrets"]) == "public.secrets"  # a bare glob: any schema
    assert g.first_match(["vault.keys"]) == "vault.keys"
    assert g.first_match(["keys"], lambda n: {"public"}) is None
    assert g.first_match(["keys"], lambda n: {"public", "vault"}) == "keys"  # could be vault's
    assert g.first_match(["keys"], lambda n: None) == "keys"  # nobody knows: by name alone
    allow = NameGlobs(["public.*"])
    assert allow.covers(["public.users"]) and allow.covers(["users"], lambda n: {"public"})
    assert not allow.covers(["users"], lambda n: {"public", "archive"})  # every placement must be covered
    assert not allow.covers(["users"], lambda n: None)
    assert NameGlobs(["*.users"]).covers(["users"], lambda n: None)


def session(*rules: Rule, default: str = "allow"):
    from gateway.config import PolicySection
    return PolicyEngine(Config(rules=list(rules), policy=PolicySection(default=default))).session(
        protocol="postgres", target="db", identity="alice", groups=["dev"])


def test_tables_and_functions_rules_and_their_messages():
    s = session(Rule(name="no-secrets", action="deny", match=RuleMatch(tables=["secrets", "vault.*"])),
                Rule(name="no-sleep", action="deny", match=RuleMatch(functions=["pg_sleep*"])))
    d = s.check_sql("SELECT * FROM (SELECT 1 FROM public.secrets) s")
    assert d.rule == "no-secrets" and 'access to "public.secrets" is not allowed on target "db"' in d.message
    d = s.check_sql('SELECT pg_catalog."pg_sleep"(1)')
    assert d.rule == "no-sleep" and 'calling "pg_catalog.pg_sleep"' in d.message
    assert s.check_sql("SELECT * FROM secrets_archive").allowed
    assert s.check_sql("WITH secrets AS (SELECT 1) SELECT * FROM secrets").allowed


def test_allow_rules_on_names_need_every_name_covered():
    s = session(Rule(name="reports", action="allow", match=RuleMatch(tables=["public.report_*"])), default="deny")
    assert s.check_sql("SELECT * FROM report_a JOIN report_b USING (id)").allowed
    assert not s.check_sql("SELECT * FROM report_a JOIN users USING (id)").allowed
    assert not s.check_sql("SELECT 1").allowed  # touches no table: not covered by a tables rule


def test_undecidable_sql_is_refused_when_a_rule_could_apply():
    s = session(Rule(name="no-drop", action="deny", match=RuleMatch(sql=["DROP"])))
    d = s.check_sql("DO $$ BEGIN EXECUTE 'DR' || 'OP TABLE t'; END $$")
    assert d.action == "deny" and d.rule == "no-drop" and d.sqlstate == "42501"
    assert "dynamic SQL" in d.message and "this rule could apply to it" in d.message
    assert s.check_sql("DO $$ BEGIN EXECUTE 'SELECT 1'; END $$").allowed  # a constant is analysed
    assert session().check_sql("DO $$ BEGIN EXECUTE 'DR' || 'OP TABLE t'; END $$").allowed  # nothing to enforce


def test_search_path_follows_set_and_reset():
    s = session(Rule(name="no-vault", action="deny", match=RuleMatch(tables=["vault.*"])))
    s.set_catalog(lambda n: {"vault"} if n == "keys" else {"public"} if n == "t" else None,
                  lambda n: None, ("pg_catalog", "public"))
    assert s.check_sql("SELECT * FROM keys").rule == "no-vault"  # only vault holds it
    assert s.check_sql("SELECT * FROM new_table").allowed  # not in the catalog: along the path (public)
    assert s.check_sql("SET search_path = vault, public").allowed
    assert s.search_path == ("vault", "public")
    assert s.check_sql("SELECT * FROM new_table").rule == "no-vault"
    assert s.check_sql("RESET search_path").allowed and s.search_path == ("public",)
    assert s.check_sql("SELECT * FROM new_table").allowed
    assert s.check_sql("SELECT set_config('search_path', 'vault', false)").allowed
    assert s.search_path is None and s.check_sql("SELECT * FROM new_table").rule == "no-vault"


def test_name_globs_are_validated():
    with pytest.raises(ConfigError) as e:
        PolicyEngine(Config(rules=[Rule(name="x", action="deny", match=RuleMatch(tables=["", "a."]))]))
    assert e.value.errors == ["rules[0].match.tables[0]: '' is not a name glob (name or schema.name)",
                              "rules[0].match.tables[1]: 'a.' is not a name glob (name or schema.name)"]


# ---------------------------------------------------------------- catalog snapshot

def _row(*values):
    return I16.pack(len(values)) + b"".join(I32.pack(-1) if v is None else I32.pack(len(v)) + v
                                            for v in (None if v is None else str(v).encode() for v in values))


def test_catalog_reader_builds_a_snapshot():
    import json

    reader = CatalogReader()
    parts = [
        ["pg_catalog", "public"],
        [[16400, "public", "users", "r", None], [16410, "public", "emails", "v", "SELECT email FROM users"],
         [16420, "vault", "users", "r", None]],
        [[16400, 1, "id", 23], [16400, 2, "email", 25], [16410, 1, "email", 25], [16420, 1, "id", 23]],
        [25, 1043],
        [[2000, "pg_catalog", "now"], [17000, "public", "f"]],
        [[16420, 16400], [16430, 16420]],
    ]
    assert reader.feed(0x54, b"") is None
    reader.feed(0x44, _row(*(json.dumps(p) for p in parts)))
    reader.feed(0x43, b"SELECT 1\x00")
    snap = reader.feed(0x5A, b"I")
    assert snap.search_path == ("pg_catalog", "public")
    assert snap.column(16400, 2)[1] == "email" and snap.relations[16400].types == {1: 23, 2: 25}
    assert snap.where_relation("users") == {"public", "vault"} and snap.where_relation("nope") is None
    assert snap.relation("public", "emails").definition == "SELECT email FROM users"
    assert snap.functions[17000] == "public.f" and snap.where_function("now") == {"pg_catalog"}
    assert snap.text_types == {25, 1043}
    assert sorted(snap.relatives(16420)) == [16400, 16430] and sorted(snap.relatives(16400)) == [16420, 16430]


def test_catalog_reader_reports_errors():
    from protocols.postgres.catalog import CatalogError
    reader = CatalogReader()
    reader.feed(0x45, codec.error_response("42501", "permission denied")[5:])
    with pytest.raises(CatalogError, match="permission denied"):
        reader.feed(0x5A, b"I")
    reader = CatalogReader()
    reader.feed(0x44, _row("[]", "not json", "[]", "[]", "[]", "[]"))
    with pytest.raises(CatalogError, match="unexpected"):
        reader.feed(0x5A, b"I")


def test_catalog_cache_expires_and_is_invalidated_per_target():
    now = [0.0]
    cache = CatalogCache(ttl=60, clock=lambda: now[0])
    snap = build_snapshot([], [], [], [], [], [])
    snap = type(snap)(**{**{f: getattr(snap, f) for f in snap.__struct_fields__}, "loaded_at": 0.0})
    cache.put("db\x00\x00", snap)
    cache.put("db\x00-c search_path=x\x00", snap)
    cache.put("other\x00\x00", snap)
    assert cache.get("db\x00\x00") is snap
    now[0] = 61
    assert cache.get("db\x00\x00") is None
    now[0] = 0
    cache.invalidate_target("db")
    assert cache.get("db\x00-c search_path=x\x00") is None and cache.get("other\x00\x00") is snap


# ---------------------------------------------------------------- start-up settings

def test_startup_settings_are_read_like_postgres():
    got = codec.startup_settings({"user": "u", "database": "d", "application_name": "psql",
                                  "options": r"-c role=admin --search-path=vault\ x -cwork_mem=1MB"})
    assert got == [("application_name", "psql"), ("role", "admin"), ("search_path", "vault x"), ("work_mem", "1MB")]
    with pytest.raises(ValueError):
        codec.startup_settings({"options": "-e"})
    with pytest.raises(ValueError):
        codec.startup_settings({"options": "-c role"})


def test_startup_role_goes_through_the_rules():
    s = session(Rule(name="no-role", action="deny", match=RuleMatch(sql=["SET ROLE"])))
    for name, value in codec.startup_settings({"options": "-c role=admin"}):
        d = s.check_sql(f"SET {codec.quote_ident(name)} TO {codec.quote_literal(value)}")
    assert d.rule == "no-role"

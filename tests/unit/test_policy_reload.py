"""Reload of the policy core (``PolicyEngine.replace_with``) and decision counting (``on_decision``).

Open sessions keep their ``SessionPolicy`` objects across a SIGHUP: these tests check that such
a session decides by the new rules on its next check, keeps what it learnt about its
connection, keeps its masks, and that every check a protocol asks for is counted once.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from gateway.config import Config, HttpMatch, PolicySection, Rule, RuleMatch
from policy.engine import PolicyEngine, SessionPolicy
from policy.model import Command


def rule(name: str, action: str = "deny", **kw) -> Rule:
    match = kw.pop("match", None)
    if isinstance(match, dict):
        match = RuleMatch(**match)
    return Rule(name=name, action=action, match=match, **kw)


def engine(*rules: Rule, default: str = "allow", **kw) -> PolicyEngine:
    return PolicyEngine(Config(rules=list(rules), policy=PolicySection(default=default)), **kw)


def session(e: PolicyEngine, target: str = "prod-db", groups: tuple[str, ...] = ("dev",),
            protocol: str = "postgres") -> SessionPolicy:
    return e.session(protocol=protocol, target=target, identity="alice", groups=groups,
                     sql_arguments=["sql"])


NO_DROP = rule("no-drop", match={"sql": ["DROP"]})


# ---- rules follow the newest engine -------------------------------------------------------------

def test_open_session_sees_a_new_deny_rule() -> None:
    old = engine()
    s = session(old)
    assert s.check_sql("DROP TABLE t").allowed  # and cached
    assert not s.inspects_sql
    new = engine(NO_DROP)
    old.replace_with(new)
    # protocols skip check_sql while inspects_sql is false: it must not stay false until then
    assert s.inspects_sql
    d = s.check_sql("DROP TABLE t")
    assert d.action == "deny" and d.rule == "no-drop"
    assert s.check_sql("SELECT 1").allowed
    assert s.inspects_sql and [r.name for r in s.rules] == ["no-drop"]


def test_open_session_forgets_a_removed_rule() -> None:
    old = engine(NO_DROP, rule("no-rm", match={"command": ["rm *"]}))
    s = session(old)
    assert s.check_sql("DROP TABLE t").rule == "no-drop"
    assert s.check(Command(protocol="ssh", target="prod-db", kind="exec", text="rm -rf /")).rule == "no-rm"
    old.replace_with(engine())
    assert s.check_sql("DROP TABLE t").allowed
    assert s.check(Command(protocol="ssh", target="prod-db", kind="exec", text="rm -rf /")).allowed
    assert s.rules == () and not s.inspects_sql


def test_open_session_follows_a_changed_default() -> None:
    old = engine(rule("reads", "allow", match={"sql": ["SELECT"]}))
    s = session(old)
    assert s.check_sql("UPDATE t SET a = 1").allowed
    old.replace_with(engine(rule("reads", "allow", match={"sql": ["SELECT"]}), default="deny"))
    d = s.check_sql("UPDATE t SET a = 1")
    assert d.action == "deny" and d.rule is None and "policy default" in d.message
    assert s.check_sql("SELECT 1").rule == "reads"
    assert not s.check(Command(protocol="ssh", target="prod-db", kind="exec", text="ls")).allowed
    assert not s.tool_visible("anything")


def test_rules_whose_targets_or_groups_no_longer_apply() -> None:
    old = engine(rule("no-drop", targets=["prod-*"], groups=["dev"], match={"sql": ["DROP"]}))
    s = session(old)
    assert s.check_sql("DROP TABLE t").rule == "no-drop"
    moved = engine(rule("no-drop", targets=["staging-*"], groups=["dev"], match={"sql": ["DROP"]}))
    old.replace_with(moved)
    assert s.check_sql("DROP TABLE t").allowed and s.rules == ()
    regrouped = engine(rule("no-drop", targets=["prod-*"], groups=["dba"], match={"sql": ["DROP"]}))
    moved.replace_with(regrouped)
    assert s.check_sql("DROP TABLE t").allowed
    excepted = engine(rule("no-drop", targets=["prod-*"], except_groups=["dev"], match={"sql": ["DROP"]}))
    regrouped.replace_with(excepted)
    assert s.check_sql("DROP TABLE t").allowed
    back = engine(rule("no-drop", targets=["prod-*"], groups=["dev"], match={"sql": ["DROP"]}))
    excepted.replace_with(back)
    assert s.check_sql("DROP TABLE t").rule == "no-drop"


def test_chained_replacements() -> None:
    e1, e2, e3 = engine(), engine(NO_DROP), engine(rule("no-delete", match={"sql": ["DELETE"]}))
    idle = session(e1)  # no check between the replacements
    busy = session(e1)
    e1.replace_with(e2)
    assert busy.check_sql("DROP TABLE t").rule == "no-drop"
    e2.replace_with(e3)
    for s in (idle, busy):
        assert s.check_sql("DROP TABLE t").allowed
        assert s.check_sql("DELETE FROM t").rule == "no-delete"
    assert e1.current() is e3 and e3.current() is e3
    # a session asked of a replaced engine (a listener not reloaded yet) is made by the current one
    late = session(e1)
    assert late.check_sql("DELETE FROM t").rule == "no-delete"
    e4 = engine()
    e3.replace_with(e4)
    assert late.check_sql("DELETE FROM t").allowed


def test_replace_with_refuses_misuse() -> None:
    e1, e2, e3 = engine(), engine(), engine()
    with pytest.raises(ValueError):
        e1.replace_with(e1)
    e1.replace_with(e2)
    with pytest.raises(ValueError):
        e1.replace_with(e3)  # already replaced: replace the current one
    with pytest.raises(ValueError):
        e3.replace_with(e1)  # a replaced engine cannot come back (no cycles)
    e2.replace_with(e3)
    assert e1.current() is e3


def test_analyzer_is_passed_on() -> None:
    old, new = engine(), engine(NO_DROP)
    s = session(old)
    s.check_sql("SELECT 1")
    old.replace_with(new)
    assert new.analyzer is old.analyzer
    s.check_sql("DROP TABLE t")
    assert session(new).analyze("SELECT 1") is old.analyzer.analyze("SELECT 1")


def test_replaced_sessions_are_not_kept_alive() -> None:
    old = engine()
    ref = weakref.ref(session(old))
    gc.collect()
    assert ref() is None
    s = session(old)
    ref = weakref.ref(s)
    new = engine()
    old.replace_with(new)
    del s
    gc.collect()
    assert ref() is None


# ---- per-session state is kept -------------------------------------------------------------------

HIDDEN = rule("no-hidden", match={"tables": ["hidden.*"]})


def test_search_path_is_kept() -> None:
    old = engine(HIDDEN)
    s = session(old)
    assert s.check_sql("SET search_path = hidden").allowed
    assert s.search_path == ("hidden",)
    assert s.check_sql("SELECT * FROM t").rule == "no-hidden"
    old.replace_with(engine(HIDDEN, NO_DROP))
    assert s.check_sql("SELECT * FROM t").rule == "no-hidden"  # t is still looked for in hidden
    assert s.search_path == ("hidden",)
    assert s.check_sql("RESET search_path").allowed
    assert s.check_sql("SELECT * FROM t").allowed


def test_untracked_search_path_becomes_unknown() -> None:
    old = engine(NO_DROP)  # nothing names tables: the session did not follow its search path
    s = session(old)
    assert s.check_sql("SET search_path = hidden").allowed
    old.replace_with(engine(HIDDEN))
    # the path may be anything now: an unqualified name may be in hidden (fail closed)
    assert s.check_sql("SELECT * FROM t").rule == "no-hidden"
    assert s.search_path is None
    assert s.check_sql("SELECT * FROM public.t").allowed


def test_catalog_and_backslash_flag_are_kept() -> None:
    old = engine(rule("no-app", match={"tables": ["app.secrets"]}))
    s = session(old)
    s.set_catalog(lambda name: {"app"} if name == "secrets" else None, lambda name: None, ("public",))
    assert s.check_sql("SELECT * FROM secrets").rule == "no-app"
    s.set_server_parameter("standard_conforming_strings", "off")
    old.replace_with(engine(rule("no-app", match={"tables": ["app.secrets"]}), NO_DROP))
    assert s.check_sql("SELECT * FROM secrets").rule == "no-app"  # the catalog still places it
    assert s.check_sql("SELECT * FROM other").allowed
    assert s.check_sql("SELECT 'a\\'").sqlstate == "42601"  # still refused: the flag stays


MASK = rule("mask-mail", "mask", detectors=["email"])


def test_masks_of_open_sessions_are_unchanged() -> None:
    old = engine(MASK)
    plain_engine = engine()
    masked, plain = session(old), session(plain_engine)
    masks = masked.masks
    assert masked.mask_rules == ("mask-mail",)
    new = engine(NO_DROP, rule("mask-all", "mask", detectors=["credit_card"]))
    old.replace_with(new)
    assert masked.check_sql("DROP TABLE t").rule == "no-drop"
    assert masked.masks is masks and masked.mask_rules == ("mask-mail",)
    assert session(new).mask_rules == ("mask-all",)  # new sessions get the new masks
    # a session without masks keeps having none
    plain_engine.replace_with(engine(MASK))
    assert plain.check_sql("SELECT 1").allowed and not plain.masks and plain.mask_rules == ()


# ---- decision counting ---------------------------------------------------------------------------

class Counter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, protocol: str, action: str) -> None:
        self.calls.append((protocol, action))


def test_each_check_is_counted_once() -> None:
    count = Counter()
    e = engine(NO_DROP, rule("review-alter", "review", match={"sql": ["ALTER"]}, approvers=["dba"]),
               rule("no-rm", match={"command": ["rm *"]}), rule("no-admin", match={"http": HttpMatch(path=["/admin/*"])}),
               on_decision=count)
    s = session(e)
    s.check_sql("SELECT 1")
    s.check_sql("SELECT 1")  # cached: still counted
    s.check_sql("DROP TABLE t")
    s.check_sql("ALTER TABLE t ADD c int")
    s.check_sql("SELEKT")
    assert count.calls == [("postgres", "allow")] * 2 + [("postgres", "deny"), ("postgres", "review"),
                                                         ("postgres", "deny")]
    count.calls.clear()
    s.check(Command(protocol="postgres", target="prod-db", kind="sql", text="DROP TABLE t"))
    s.check(Command(protocol="postgres", target="prod-db", kind="exec", text="rm -rf /"))
    s.check(Command(protocol="postgres", target="prod-db", kind="exec", text="ls"))
    assert count.calls == [("postgres", "deny"), ("postgres", "deny"), ("postgres", "allow")]


def test_http_and_tool_calls_are_counted_once() -> None:
    count = Counter()
    e = engine(NO_DROP, rule("no-admin", match={"http": HttpMatch(path=["/admin/*"])}),
               rule("no-delete", match={"tool": ["delete_*"]}), default="deny", on_decision=count)
    s = session(e, protocol="http")
    s.check_http("GET", "/admin/x")
    s.check_http("POST", "/mcp", mcp=True)  # the transport of tool calls: allowed, counted as such
    assert count.calls == [("http", "deny"), ("http", "allow")]
    count.calls.clear()
    # one count per tool call, whatever SQL its arguments hold
    s.check_tool_call("query", {"sql": "SELECT 1; DROP TABLE t", "other_sql": "SELECT 2"})
    s.check_tool_call("delete_user", {"sql": "SELECT 1"})
    s.check_tool_call("query", {"sql": "SELECT 1"})
    assert count.calls == [("http", "deny")] * 3  # the last by policy default
    count.calls.clear()
    s.tool_visible("query")
    s.tool_visible("delete_user")
    assert count.calls == []
    # and the SQL inside a tool call does not leave the session uncounted afterwards
    s.check_sql("SELECT 1")
    assert count.calls == [("http", "deny")]


def test_tool_call_sql_counted_once_with_allowing_rules() -> None:
    count = Counter()
    e = engine(rule("q", "allow", match={"tool": ["query"]}), rule("reads", "allow", match={"sql": ["SELECT"]}),
               default="deny", on_decision=count)
    s = session(e, protocol="mcp")
    assert s.check_tool_call("query", {"sql": "SELECT 1", "b": {"sql": "SELECT 2"}}).allowed
    assert count.calls == [("mcp", "allow")]


def test_counter_is_carried_over_by_replace_with() -> None:
    count = Counter()
    old = engine(on_decision=count)
    s = session(old)
    s.check_sql("SELECT 1")
    new = engine(NO_DROP)
    early = session(new)  # made by the new engine before the replacement
    old.replace_with(new)
    assert new.on_decision is count
    s.check_sql("DROP TABLE t")
    early.check_sql("DROP TABLE t")
    session(new).check_sql("SELECT 1")
    assert count.calls == [("postgres", "allow"), ("postgres", "deny"), ("postgres", "deny"),
                           ("postgres", "allow")]
    # a new engine with a counter of its own keeps it
    other = Counter()
    newer = engine(on_decision=other)
    new.replace_with(newer)
    s.check_sql("DROP TABLE t")
    assert other.calls == [("postgres", "allow")] and len(count.calls) == 4


def test_no_counter_no_calls() -> None:
    s = session(engine(NO_DROP))
    assert s.check_sql("DROP TABLE t").rule == "no-drop"
    assert s.check_tool_call("q", {"sql": "DROP TABLE t"}).rule == "no-drop"

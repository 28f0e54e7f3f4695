"""The bypass corpus (tests/corpus_sql.py) through the policy engine, without a server.

Every DENIED case must be refused at its step (the steps before it allowed), every ALLOWED case
allowed at every step; a decision must not depend on what the session or the analyzer's caches
saw before.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from pglast import parser as pg_parser

from gateway.config import Config
from policy.engine import PolicyEngine, SessionPolicy
from policy.model import Command, Decision
from tests.corpus_sql import ALLOWED, DENIED, RULE_NAMES, RULES, Case, refusal_problem

TARGET = "corpus"


def corpus_config() -> Config:
    return msgspec.convert({"rules": RULES}, Config)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(corpus_config())


def new_session(engine: PolicyEngine) -> SessionPolicy:
    return engine.session(protocol="postgres", target=TARGET, identity="alice", groups=["dev"])


def unit_cases(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.clients is None or "unit" in c.clients]


def run_denied(s: SessionPolicy, case: Case) -> Decision:
    """Check the steps up to the refused one; return the refusal's decision."""
    for k, v in case.server_params.items():
        s.set_server_parameter(k, v)
    for i, step in enumerate(case.steps[:case.deny_index]):
        d = s.check_sql(step)
        assert d.allowed, f"setup step {i} {step!r} refused: {d.message}"
    return s.check_sql(case.steps[case.deny_index])


def run_allowed(s: SessionPolicy, case: Case) -> list[Decision]:
    return [s.check_sql(step) for step in case.steps]


def assert_refused(case: Case, d: Decision) -> None:
    assert d.action == "deny", f"{case.id} ({case.group}) was {d.action}ed; kinds={d.kinds}"
    problem = refusal_problem(case, d.sqlstate, d.message)
    assert problem is None, problem
    if case.rules and d.rule is not None and not case.undecidable:
        assert d.rule in case.rules, f"decided by {d.rule}, expected {case.rules}"


# ---- the corpus itself -----------------------------------------------------------------------

def test_corpus_size_and_ids() -> None:
    # issue 3, "Done when": at least 60 ways to run a denied statement, 30 legitimate look-alikes
    assert len(DENIED) >= 70 and len(ALLOWED) >= 35
    ids = Counter(c.id for c in DENIED + ALLOWED)
    assert [i for i, n in ids.items() if n > 1] == []
    for c in DENIED:
        assert c.rules or c.undecidable, c.id
        assert set(c.rules) <= set(RULE_NAMES), c.id
        assert c.expect is None and not c.mutates, c.id
    for c in ALLOWED:
        assert not c.rules and not c.undecidable and not c.server_params, c.id
    # every rule is exercised by the corpus
    assert {r for c in DENIED for r in c.rules} == set(RULE_NAMES)


@pytest.mark.parametrize("case", [c for c in DENIED + ALLOWED if "\x00" not in "".join(c.steps)],
                         ids=lambda c: c.id)
def test_corpus_statements_are_valid_postgresql(case: Case) -> None:
    # a case the server would reject as a syntax error proves nothing about the gateway
    for step in case.steps:
        pg_parser.parse_sql(step)


# ---- decisions ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", unit_cases(DENIED), ids=lambda c: f"{c.group}:{c.id}")
def test_denied(engine: PolicyEngine, case: Case) -> None:
    d = run_denied(new_session(engine), case)
    assert_refused(case, d)
    # again on a new session: now from the analyzer's caches
    assert run_denied(new_session(engine), case) == d


@pytest.mark.parametrize("case", unit_cases(ALLOWED), ids=lambda c: f"{c.group}:{c.id}")
def test_allowed(engine: PolicyEngine, case: Case) -> None:
    for step, d in zip(case.steps, run_allowed(new_session(engine), case)):
        assert d.allowed, f"{step!r} refused: {d.message}"


def changes_placement(case: Case) -> bool:
    """The case changes what the session knows about the server (search_path, scs)."""
    return bool(case.server_params) or any("search_path" in step for step in case.steps)


def test_decisions_do_not_depend_on_history() -> None:
    """One long session and one shared analyzer see the whole corpus, allowed cases first, then
    denied, then allowed again: every decision equals the one a fresh engine gives (no cache
    entry of a look-alike can let a denied statement through, nor the reverse). Cases that
    change the session's search_path or server settings get a session of their own, still on
    the shared analyzer."""
    fresh = {}
    for case in unit_cases(ALLOWED) + unit_cases(DENIED):
        s = new_session(PolicyEngine(corpus_config()))
        fresh[case.id] = (run_denied(s, case) if case in DENIED else run_allowed(s, case))
    engine = PolicyEngine(corpus_config())
    for order in (unit_cases(ALLOWED) + unit_cases(DENIED), unit_cases(DENIED) + unit_cases(ALLOWED)):
        shared = new_session(engine)
        for case in order:
            s = new_session(engine) if changes_placement(case) else shared
            got = run_denied(s, case) if case in DENIED else run_allowed(s, case)
            assert got == fresh[case.id], case.id


@pytest.mark.parametrize("reset", ["DISCARD ALL", "RESET ALL", "RESET search_path", "SET search_path TO DEFAULT",
                                   "SET search_path = \"$user\", public"])
def test_search_path_back_to_default(engine: PolicyEngine, reset: str) -> None:
    """After the search_path went to vault and came back (what a pooler's DISCARD ALL does
    between clients), unqualified names are placed as before again; vault stays protected."""
    s = new_session(engine)
    assert s.check_sql("SET search_path = vault, public").allowed
    assert s.check_sql("SELECT * FROM keys").action == "deny"
    assert s.check_sql(reset).allowed
    assert s.check_sql("SELECT count(*) FROM t").allowed
    assert s.check_sql("SELECT * FROM vault.keys").rule == "no-secrets"


@pytest.mark.parametrize("name", ["lo_creat", "pg_catalog.lo_open", "pg_sleep", "dblink_exec", ""])
def test_fastpath_calls_are_checked_against_functions(engine: PolicyEngine, name: str) -> None:
    # a FunctionCall message names its function by OID; the protocol passes the name it knows
    # ("" when it knows none, which must be refused while a functions rule could match)
    d = new_session(engine).check(Command(protocol="postgres", target=TARGET, kind="function_call", text=name))
    assert d.action == "deny" and d.rule == "no-sleep", d
    assert new_session(engine).check(
        Command(protocol="postgres", target=TARGET, kind="function_call", text="pg_catalog.lower")).allowed

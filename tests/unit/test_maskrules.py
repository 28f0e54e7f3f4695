"""Mask rules compiled: column globs, detectors, stacking."""

from __future__ import annotations

import pytest

from gateway.config import Config, Rule
from gateway.errors import ConfigError
from policy.engine import PolicyEngine
from policy.maskrules import split_source


def masks(*rules: Rule, groups=("dev",)):
    return PolicyEngine(Config(rules=list(rules)), mask_key=b"k" * 32).session(
        protocol="postgres", target="db", identity="a", groups=list(groups)).masks


def test_column_globs_match_source_columns():
    m = masks(Rule(name="a", action="mask", columns=["users.email", "*.ssn", "hr.*.salary"], style="partial"))
    assert m.column("public", "users", "email").style == "partial"
    assert m.column("sales", "users", "email") is not None  # table.column: any schema
    assert m.column("public", "people", "ssn") is not None
    assert m.column("hr", "staff", "salary") is not None and m.column("public", "staff", "salary") is None
    assert m.column("public", "users", "name") is None and m.column("public", "users_old", "email") is None
    assert m.source('public."my.table".ssn') is not None


def test_stacked_rules_take_the_strictest_style_and_every_detector():
    m = masks(Rule(name="a", action="mask", columns=["users.email"], style="partial"),
              Rule(name="b", action="mask", columns=["*.email"], style="hash"),
              Rule(name="c", action="mask", detectors=["email"], style="redact"),
              Rule(name="d", action="mask", detectors=["card"], style="null", groups=["ops"]))
    assert m.column("public", "users", "email").style == "hash"  # hash discloses less than partial
    assert [masker.style for _, masker in m.scans] == ["redact"]  # rule d is not for this caller
    assert m.blanket().style == "hash"
    assert m.names() == ("a", "b", "c")


def test_mask_rule_errors_name_their_keys():
    with pytest.raises(ConfigError) as e:
        PolicyEngine(Config(rules=[Rule(name="m", action="mask", columns=["email", "a..b"], detectors=["emial"])]))
    assert e.value.errors == [
        "rules[0].columns[0]: 'email' is not a column glob: write table.column, *.column or schema.table.column",
        "rules[0].columns[1]: 'a..b' is not a column glob: write table.column, *.column or schema.table.column",
        "rules[0].detectors[0]: unknown detector 'emial' (see docs/policy.md)",
    ]


@pytest.mark.parametrize("name, parts", [
    ("public.users.email", ("public", "users", "email")),
    ('public."my.table".ssn', ("public", "my.table", "ssn")),
    ("users.email", ("", "users", "email")),
])
def test_split_source(name, parts):
    assert split_source(name) == parts

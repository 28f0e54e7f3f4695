"""Config loading: every error with its key path, all at once; paths; warnings; secrets."""

from __future__ import annotations

import base64
import copy
import hashlib
import pickle
import struct
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import msgspec
import pytest

from gateway.cli import main as cli_main
from gateway.config import (
    Config,
    Target,
    check_config,
    format_duration,
    load_config,
    parse_duration,
    parse_listen,
)
from gateway.errors import ConfigError, WiregateError
from gateway.secrets import Secret, target_password, target_password_async

API_TOKEN_HASH = hashlib.sha256(b"ci-bot-api-token").hexdigest()


def _ssh_ed25519_line(comment: str = "ci-bot") -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


SPEC_EXAMPLE = f"""
[gateway]
state_dir = ".wiregate"

[listen]
postgres = "127.0.0.1:15432"
ssh      = "127.0.0.1:2222"
http     = "127.0.0.1:8080"
admin    = "127.0.0.1:8081"

[identity]
dev_tokens = true
admin_groups = ["wiregate-admins"]
[[identity.oidc]]
issuer = "https://idp.example.com/"
audience = "wiregate"
jwks_url = "https://idp.example.com/.well-known/jwks.json"
groups_claim = "groups"
[[identity.users]]
name = "ci-bot"
token_sha256 = "{API_TOKEN_HASH}"
groups = ["ci"]
ssh_keys = ["{_ssh_ed25519_line()}"]

[[targets]]
name = "prod-db"
protocol = "postgres"
address = "127.0.0.1:5432"
database = "app"
user = "app"
password_env = "PROD_DB_PASSWORD"
tls = "prefer"
allow_groups = ["dev", "agents"]

[[targets]]
name = "web-1"
protocol = "ssh"
address = "127.0.0.1:22"
user = "deploy"
key_file = "keys/deploy_ed25519"
known_hosts = "keys/known_hosts"
allow_groups = ["sre"]

[[targets]]
name = "tools"
protocol = "http"
url = "http://127.0.0.1:9000"
mcp = true
allow_groups = ["agents"]

[[rules]]
name = "no-destructive-sql"
targets = ["prod-db"]
groups = ["*"]
match = {{ sql = ["DROP", "DELETE", "TRUNCATE"] }}
action = "deny"

[[rules]]
name = "review-ddl"
match = {{ sql = ["ALTER", "CREATE"] }}
action = "review"
approvers = ["dba"]
timeout = "5m"

[[rules]]
name = "mask-pii"
action = "mask"
columns = ["users.email", "*.ssn"]
detectors = ["email", "credit_card"]
style = "partial"

[[rules]]
name = "no-rm"
targets = ["web-1"]
match = {{ command = ["rm -rf *", "shutdown*"] }}
action = "deny"

[[rules]]
name = "no-delete-tools"
targets = ["tools"]
match = {{ tool = ["delete_*"] }}
action = "deny"

[policy]
default = "allow"
"""

MINIMAL_TARGET = """
[[targets]]
name = "db"
protocol = "postgres"
address = "127.0.0.1:5432"
user = "app"
allow_groups = ["dev"]
"""


def write(tmp_path: Path, text: str, name: str = "wiregate.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.errors


def assert_error(errors: list[str], expected: str) -> None:
    assert any(expected in e for e in errors), f"{expected!r} not in:\n" + "\n".join(errors)


# ---- the SPEC example -----------------------------------------------------

def test_spec_example_loads_without_fetching_jwks(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("load_config must not fetch anything")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    cfg = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert isinstance(cfg, Config)
    assert [t.name for t in cfg.targets] == ["prod-db", "web-1", "tools"]
    assert [r.action for r in cfg.rules] == ["deny", "review", "mask", "deny", "deny"]
    assert cfg.rules[1].targets == ["*"] and cfg.rules[1].groups == ["*"]
    assert cfg.rules[0].match is not None and cfg.rules[0].match.sql == ["DROP", "DELETE", "TRUNCATE"]
    assert cfg.identity.oidc[0].audience == "wiregate"
    assert cfg.identity.users[0].token_sha256 == API_TOKEN_HASH
    assert cfg.targets[2].mcp is True
    assert cfg.policy.default == "allow"


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(write(conf_dir, SPEC_EXAMPLE))
    assert cfg.gateway.state_dir == str(conf_dir / ".wiregate")
    assert cfg.targets[1].key_file == str(conf_dir / "keys" / "deploy_ed25519")
    assert cfg.targets[1].known_hosts == str(conf_dir / "keys" / "known_hosts")


def test_all_path_keys_are_resolved(tmp_path):
    cfg = load_config(write(tmp_path, """
        [gateway]
        state_dir = "../state"
        tls_cert_file = "tls/cert.pem"
        tls_key_file = "/abs/key.pem"
        [[identity.oidc]]
        issuer = "https://idp/"
        audience = "wiregate"
        jwks_file = "jwks.json"
        [[targets]]
        name = "db"
        protocol = "postgres"
        address = "127.0.0.1:5432"
        user = "app"
        password_file = "secrets/db"
        tls_ca_file = "ca.pem"
    """))
    assert cfg.gateway.state_dir == str(tmp_path.parent / "state")
    assert cfg.gateway.tls_cert_file == str(tmp_path / "tls" / "cert.pem")
    assert cfg.gateway.tls_key_file == "/abs/key.pem"
    assert cfg.identity.oidc[0].jwks_file == str(tmp_path / "jwks.json")
    assert cfg.targets[0].password_file == str(tmp_path / "secrets" / "db")
    assert cfg.targets[0].tls_ca_file == str(tmp_path / "ca.pem")


def test_defaults_for_an_empty_file(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.identity.dev_tokens is False
    assert cfg.targets == [] and cfg.rules == []
    assert cfg.gateway.state_dir == str(tmp_path / ".wiregate")


# ---- file-level errors ----------------------------------------------------

def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert len(info.value.errors) == 1
    assert "nope.toml: no such config file" in info.value.errors[0]


def test_toml_syntax_error_has_line_and_column(tmp_path):
    errors = errors_of(tmp_path, '[listen]\npostgres = "127.0.0.1:1\n')
    assert len(errors) == 1
    assert "not valid TOML" in errors[0] and "line 2" in errors[0] and "column" in errors[0]


# ---- structural errors ----------------------------------------------------

def test_unknown_key_has_its_path(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET + """
        [[targets]]
        name = "db2"
        protocol = "postgres"
        address = "127.0.0.1:5432"
        user = "app"
        passwrod_env = "X"
    """)
    assert_error(errors, 'targets[1].passwrod_env: unknown key (did you mean "password_env"?)')


def test_unknown_section_and_nested_key(tmp_path):
    errors = errors_of(tmp_path, """
        [listne]
        postgres = "127.0.0.1:1"
        [[rules]]
        name = "r"
        action = "deny"
        match = { sqll = ["DROP"] }
    """)
    assert_error(errors, 'listne: unknown key (did you mean "listen"?)')
    assert_error(errors, "rules[0].match.sqll: unknown key")


def test_listen_must_be_a_string(tmp_path):
    errors = errors_of(tmp_path, "[listen]\npostgres = 15432\n")
    assert errors == ['listen.postgres: expected a string like "127.0.0.1:15432", got 15432']


def test_bad_action_lists_choices_in_order(tmp_path):
    errors = errors_of(tmp_path, '[[rules]]\nname = "r"\naction = "block"\n')
    assert errors == ['rules[0].action: must be one of allow, deny, review, mask, got "block"']


def test_required_key_missing(tmp_path):
    errors = errors_of(tmp_path, '[[targets]]\nprotocol = "http"\nurl = "http://x:1"\n')
    assert errors == ["targets[0].name: required key missing"]


def test_wrong_types_everywhere(tmp_path):
    errors = errors_of(tmp_path, """
        [identity]
        dev_tokens = "yes"
        admin_groups = "admins"
        [[identity.oidc]]
        issuer = "https://idp/"
        audience = ["wiregate", 3]
        jwks_file = "j.json"
        jwks_cache_seconds = "5m"
        [policy]
        default = "maybe"
    """)
    assert_error(errors, 'identity.dev_tokens: expected true or false, got "yes"')
    assert_error(errors, 'identity.admin_groups: expected a list of strings, got "admins"')
    assert_error(errors, "identity.oidc[0].audience[1]: expected a string, got 3")
    assert_error(errors, 'identity.oidc[0].jwks_cache_seconds: expected an integer, got "5m"')
    assert_error(errors, 'policy.default: must be one of allow, deny, got "maybe"')


def test_array_of_tables_expected(tmp_path):
    errors = errors_of(tmp_path, '[targets]\nname = "x"\n')
    assert errors == ["targets: expected a list of tables ([[targets]]), got a table"]


@pytest.mark.parametrize("section, key, hint", [
    ("[[targets]]\nname = \"db\"\nprotocol = \"postgres\"\naddress = \"h:1\"\nuser = \"u\"", "password",
     'use password_env = "VARIABLE" or password_file = "PATH" instead'),
    ("[[identity.users]]\nname = \"bot\"", "token", "put the sha256 hex of the token in token_sha256"),
    ("[[identity.oidc]]\nissuer = \"https://i/\"\naudience = \"a\"\njwks_file = \"j\"", "client_secret",
     "*_env or *_file"),
    ("[gateway]", "secret", "*_env or *_file"),
])
def test_inline_secrets_are_rejected_without_echoing_them(tmp_path, section, key, hint):
    errors = errors_of(tmp_path, f'{section}\n{key} = "hunter2-very-secret"\n')
    line = next(e for e in errors if f".{key}:" in e)
    assert "secret values must not be written in the config" in line
    assert hint in line
    assert all("hunter2" not in e for e in errors)


# ---- semantic errors ------------------------------------------------------

def test_duplicate_names(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET + MINIMAL_TARGET + """
        [[rules]]
        name = "r"
        action = "deny"
        [[rules]]
        name = "r"
        action = "allow"
    """)
    assert_error(errors, 'targets[1].name: duplicate target name "db" (also targets[0])')
    assert_error(errors, 'rules[1].name: duplicate rule name "r" (also rules[0])')


def test_rule_names_unknown_target(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET + """
        [[rules]]
        name = "r"
        action = "deny"
        targets = ["db", "*", "ghost", "d?", "prod-*"]
    """)
    assert errors == ['rules[0].targets[2]: unknown target "ghost"',
                      'rules[0].targets[4]: pattern "prod-*" matches no configured target']


@pytest.mark.parametrize("addr, message", [
    ("127.0.0.1", "the port is missing"),
    ("127.0.0.1:99999", "out of range"),
    ("127.0.0.1:http", "is not a number"),
    ("::1:5432", "IPv6 addresses need brackets"),
    (":5432", "host is missing"),
    ("[::1:5432", "[IPv6]:port"),
])
def test_bad_listen_addresses(tmp_path, addr, message):
    errors = errors_of(tmp_path, f'[listen]\nssh = "{addr}"\n')
    assert len(errors) == 1 and errors[0].startswith("listen.ssh: ") and message in errors[0]


def test_same_listen_address_twice(tmp_path):
    errors = errors_of(tmp_path, '[listen]\npostgres = "127.0.0.1:1000"\nhttp = "127.0.0.1:1000"\n')
    assert errors == ["listen.http: same address as listen.postgres"]


def test_parse_listen():
    assert parse_listen("127.0.0.1:15432") == ("127.0.0.1", 15432)
    assert parse_listen("[::1]:5432") == ("::1", 5432)
    assert parse_listen("localhost:0") == ("localhost", 0)
    assert parse_listen("0.0.0.0:65535") == ("0.0.0.0", 65535)
    for bad in ("", "x", "x:", "x:-1", "x:70000", "::1", "[::1]5432"):
        with pytest.raises(WiregateError):
            parse_listen(bad)


def test_target_protocol_requirements(tmp_path):
    errors = errors_of(tmp_path, """
        [[targets]]
        name = "pg"
        protocol = "postgres"
        [[targets]]
        name = "box"
        protocol = "ssh"
        address = "10.0.0.1:22"
        [[targets]]
        name = "api"
        protocol = "http"
        [[targets]]
        name = "api2"
        protocol = "http"
        url = "ftp://x"
    """)
    assert_error(errors, "targets[0].address: required for postgres targets")
    assert_error(errors, "targets[0].user: required for postgres targets")
    assert_error(errors, "targets[1].user: required for ssh targets")
    assert_error(errors, "targets[2].url: required for http targets")
    assert_error(errors, "targets[3].url: must start with http:// or https://")
    assert not any("targets[1].address" in e for e in errors)


def test_target_address_port_zero_is_refused(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET.replace("127.0.0.1:5432", "127.0.0.1:0"))
    assert_error(errors, "targets[0].address: port 0")


def test_password_env_and_file_together(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET + 'password_env = "A"\npassword_file = "f"\n')
    assert errors == ["targets[0]: set password_env or password_file, not both"]


def test_fields_of_another_protocol(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET + """mcp = true
        [[targets]]
        name = "box"
        protocol = "ssh"
        address = "10.0.0.1:22"
        user = "deploy"
        known_hosts = "kh"
        database = "app"
        tls = "require"
        [[targets]]
        name = "api"
        protocol = "http"
        url = "http://x:1"
        key_file = "k"
    """)
    assert_error(errors, "targets[0].mcp: not used by postgres targets (only by http)")
    assert_error(errors, "targets[1].database: not used by ssh targets (only by postgres)")
    assert_error(errors, "targets[1].tls: not used by ssh targets")
    assert_error(errors, "targets[2].key_file: not used by http targets (only by ssh)")
    assert len(errors) == 4


def test_ssh_target_needs_known_hosts(tmp_path):
    errors = errors_of(tmp_path, """[[targets]]
        name = "box"
        protocol = "ssh"
        address = "10.0.0.1:22"
        user = "deploy"
        key_file = "k"
        allow_groups = ["sre"]
    """)
    assert errors == ["targets[0].known_hosts: required for ssh targets: the file pinning the target's host key "
                      "(e.g. `ssh-keyscan -p 22 HOST > keys/known_hosts`, checked by you)"]


def test_ssh_ca_keys_checked(tmp_path):
    errors = errors_of(tmp_path, '[identity]\nssh_ca_keys = ["ssh-ed25519 notbase64!"]\n')
    assert errors == ['identity.ssh_ca_keys[0]: the key data after "ssh-ed25519" is not valid base64 of an SSH key']


def test_target_name_must_be_routable(tmp_path):
    errors = errors_of(tmp_path, MINIMAL_TARGET.replace('name = "db"', 'name = "my db/1"'))
    assert_error(errors, "targets[0].name:")


def test_oidc_needs_exactly_one_jwks_source(tmp_path):
    errors = errors_of(tmp_path, """
        [[identity.oidc]]
        issuer = "https://a/"
        audience = "wiregate"
        [[identity.oidc]]
        issuer = "https://b/"
        audience = "wiregate"
        jwks_url = "https://b/jwks"
        jwks_file = "jwks.json"
        [[identity.oidc]]
        issuer = "https://b/"
        audience = "wiregate"
        jwks_url = "file:///etc/passwd"
    """)
    assert_error(errors, "identity.oidc[0]: set exactly one of jwks_url and jwks_file")
    assert_error(errors, "identity.oidc[1]: set exactly one of jwks_url and jwks_file")
    assert_error(errors, 'identity.oidc[2].issuer: duplicate issuer "https://b/"')
    assert_error(errors, "identity.oidc[2].jwks_url: must be an http:// or https:// URL")


def test_token_sha256_must_be_hex_and_is_not_echoed(tmp_path):
    errors = errors_of(tmp_path, """
        [[identity.users]]
        name = "bot"
        token_sha256 = "my-plain-api-token"
        [[identity.users]]
        name = "bot2"
        token_sha256 = "%s"
    """ % ("g" * 64))
    assert_error(errors, "identity.users[0].token_sha256: must be 64 hex characters")
    assert_error(errors, "identity.users[1].token_sha256: must be 64 hex characters")
    assert all("my-plain-api-token" not in e for e in errors)


def test_ssh_keys_are_checked(tmp_path):
    good = _ssh_ed25519_line()
    errors = errors_of(tmp_path, f"""
        [[identity.users]]
        name = "a"
        ssh_keys = ["{good}", "ssh-ed25519 AAAA", "ssh-rsa {good.split()[1]}"]
        [[identity.users]]
        name = "b"
        ssh_keys = ["{good}"]
    """)
    assert_error(errors, "identity.users[0].ssh_keys[1]: the key data")
    assert_error(errors, 'identity.users[0].ssh_keys[2]: the key says type "ssh-ed25519"')
    assert_error(errors, "identity.users[1].ssh_keys[0]: the same key is listed for identity.users[0]")
    assert len(errors) == 3


def test_rule_action_specific_keys(tmp_path):
    errors = errors_of(tmp_path, """
        [[rules]]
        name = "review-no-approvers"
        action = "review"
        [[rules]]
        name = "mask-nothing"
        action = "mask"
        [[rules]]
        name = "deny-with-columns"
        action = "deny"
        columns = ["users.email"]
        [[rules]]
        name = "allow-with-detectors"
        action = "allow"
        detectors = ["email"]
        [[rules]]
        name = "review-with-columns"
        action = "review"
        approvers = ["dba"]
        columns = ["a.b"]
        [[rules]]
        name = "deny-with-approvers"
        action = "deny"
        approvers = ["dba"]
    """)
    assert_error(errors, "rules[0].approvers: a review rule needs approvers")
    assert_error(errors, "rules[1]: a mask rule needs columns, keys or detectors")
    assert_error(errors, "rules[2].columns: only used by mask rules, this rule is deny")
    assert_error(errors, "rules[3].detectors: only used by mask rules, this rule is allow")
    assert_error(errors, "rules[4].columns: only used by mask rules, this rule is review")
    assert_error(errors, "rules[5].approvers: only used by review rules, this rule is deny")
    assert len(errors) == 6


def test_rule_timeout_must_be_a_duration(tmp_path):
    errors = errors_of(tmp_path, """
        [[rules]]
        name = "r"
        action = "review"
        approvers = ["dba"]
        timeout = "5 minutes"
    """)
    assert len(errors) == 1 and errors[0].startswith('rules[0].timeout: "5 minutes" is not a duration')


def test_match_text_regex_error_names_the_index(tmp_path):
    errors = errors_of(tmp_path, """
        [[rules]]
        name = "r"
        action = "deny"
        match = { text = ["ok.*", "(unclosed", "[z-a]"] }
    """)
    assert errors[0].startswith("rules[0].match.text[1]: not a valid regular expression")
    assert errors[1].startswith("rules[0].match.text[2]: not a valid regular expression")
    assert len(errors) == 2


def test_many_errors_at_once_in_document_order(tmp_path):
    errors = errors_of(tmp_path, """
        [listen]
        postgres = 15432
        admin = "127.0.0.1"
        [[targets]]
        name = "db"
        protocol = "postgres"
        passwrod = "x"
        mcp = true
        [[targets]]
        protocol = "ssh"
        [[rules]]
        name = "r"
        action = "block"
        [[rules]]
        name = "r2"
        action = "deny"
        targets = ["nope"]
        match = { text = ["("] }
    """)
    expected_prefixes = [
        "listen.postgres:", "listen.admin:",
        "targets[0].passwrod:", "targets[0].mcp:", "targets[0].address:", "targets[0].user:",
        "targets[1].name:",
        "rules[0].action:",
        "rules[1].targets[0]:", "rules[1].match.text[0]:",
    ]
    assert [e.split(" ")[0] for e in errors] == expected_prefixes, errors
    # typed fields are still checked when other keys of the same item are wrong
    assert_error(errors, "targets[0].mcp: not used by postgres targets")


# ---- check_config warnings ------------------------------------------------

def test_check_reports_errors_without_warnings(tmp_path):
    errors, warnings = check_config(write(tmp_path, '[[rules]]\nname = "r"\naction = "block"\n'))
    assert errors and warnings == []


def test_check_warnings(tmp_path, monkeypatch):
    monkeypatch.delenv("WG_TEST_UNSET_VAR", raising=False)
    errors, warnings = check_config(write(tmp_path, """
        [[targets]]
        name = "db"
        protocol = "postgres"
        address = "127.0.0.1:5432"
        user = "app"
        password_env = "WG_TEST_UNSET_VAR"
        [[targets]]
        name = "db2"
        protocol = "postgres"
        address = "127.0.0.1:5432"
        user = "app"
        password_file = "secrets/missing"
        allow_groups = ["dev"]
    """))
    assert errors == []
    text = "\n".join(warnings)
    assert "targets[0].allow_groups: nobody can connect" in text
    assert "empty allow_groups means no one (fail closed)" in text
    assert "targets[0].password_env: environment variable WG_TEST_UNSET_VAR is not set" in text
    assert f"targets[1].password_file: {tmp_path / 'secrets' / 'missing'} does not exist" in text
    assert "listen: no listener configured" in text
    assert "identity: nobody can authenticate" in text
    assert "targets[1].allow_groups" not in text


def test_check_spec_example_is_clean_but_for_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PROD_DB_PASSWORD", "x")
    errors, warnings = check_config(write(tmp_path, SPEC_EXAMPLE))
    assert errors == []
    assert all("key_file" in w or "known_hosts" in w for w in warnings), warnings


# ---- durations --------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("2w", 1209600), ("90", 90),
    ("1h30m", 5400), (" 10s ", 10), ("0", 0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-5m", "5 m", "1.5h", "5M", "h1", "1h 30m", "5mm"])
def test_parse_duration_rejects(text):
    with pytest.raises(WiregateError, match="not a duration"):
        parse_duration(text)


def test_duration_round_trip_property():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.given(st.integers(min_value=0, max_value=10**9))
    def check(n: int) -> None:
        assert parse_duration(format_duration(n)) == n
        assert parse_duration(str(n)) == n

    check()


# ---- secrets ----------------------------------------------------------------

def _pg_target(**kw) -> Target:
    return Target(name="db", protocol="postgres", address="127.0.0.1:5432", user="app", **kw)


def test_secret_never_shows_its_value():
    s = Secret("hunter2")
    assert repr(s) == str(s) == f"{s}" == "Secret('***')"
    assert "hunter2" not in repr([s, {"k": s}])
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        copy.copy(s)
    with pytest.raises(TypeError):
        msgspec.json.encode({"password": s})


def test_config_repr_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("PROD_DB_PASSWORD", "hunter2")
    cfg = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert "hunter2" not in repr(cfg)
    assert "PROD_DB_PASSWORD" in repr(cfg)  # only the name of where it lives


def test_target_password_from_env_is_read_at_call_time(monkeypatch):
    t = _pg_target(password_env="WG_TEST_PW")
    monkeypatch.setenv("WG_TEST_PW", "one")
    assert target_password(t).reveal() == "one"
    monkeypatch.setenv("WG_TEST_PW", "two")
    assert target_password(t).reveal() == "two"


def test_target_password_errors_name_the_source_not_the_value(monkeypatch, tmp_path):
    monkeypatch.delenv("WG_TEST_PW", raising=False)
    with pytest.raises(WiregateError, match="environment variable WG_TEST_PW is not set"):
        target_password(_pg_target(password_env="WG_TEST_PW"))
    missing = tmp_path / "nope"
    with pytest.raises(WiregateError, match="password_file: cannot read .*nope"):
        target_password(_pg_target(password_file=str(missing)))


def test_target_password_from_file_strips_one_newline(tmp_path):
    f = tmp_path / "pw"
    f.write_text("s3cret \n\n")
    t = _pg_target(password_file=str(f))
    assert target_password(t).reveal() == "s3cret \n"
    f.write_text("rotated\n")
    assert target_password(t).reveal() == "rotated"
    import asyncio
    assert asyncio.run(target_password_async(t)).reveal() == "rotated"


# an unreadable file cannot be made for root (CI runs as root); a directory fails the same read path
def test_target_password_file_that_is_a_directory(tmp_path):
    with pytest.raises(WiregateError, match="password_file: cannot read .*: Is a directory"):
        target_password(_pg_target(password_file=str(tmp_path)))


def test_target_password_none_when_unset():
    assert target_password(_pg_target()) is None


# ---- CLI --------------------------------------------------------------------

def test_cli_check_prints_every_error(tmp_path, capsys):
    path = write(tmp_path, '[listen]\npostgres = 15432\n[[rules]]\nname = "r"\naction = "block"\n')
    assert cli_main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert 'error: listen.postgres: expected a string like "127.0.0.1:15432", got 15432' in err
    assert "error: rules[0].action: must be one of" in err
    assert "2 error(s)" in err


def test_cli_check_ok(tmp_path, capsys):
    path = write(tmp_path, '[listen]\npostgres = "127.0.0.1:15432"\n[identity]\ndev_tokens = true\n' + MINIMAL_TARGET)
    assert cli_main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad = write(tmp_path, "[listen\n")
    for argv in (["check", "-c", str(bad)], ["token", "issue", "--sub", "alice", "-c", str(bad)],
                 ["token", "issue", "--sub", "alice", "-c", str(tmp_path / "missing.toml")]):
        proc = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines and len(lines) <= 2, proc.stderr


def test_check_compiles_the_rules_as_serve_does(tmp_path):
    path = tmp_path / "wiregate.toml"
    path.write_text('[[rules]]\nname = "r"\naction = "deny"\nmatch = { sql = ["DROPP"] }\n')
    errors, _ = check_config(path)
    assert any(e.startswith("rules[0].match.sql[0]: unknown statement kind") for e in errors)

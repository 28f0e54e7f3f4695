"""Typed configuration: TOML decoded into msgspec structs.

Every struct forbids unknown fields so that a typo in the file is an error with
its key path rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class GatewaySection(_Base):
    state_dir: str = ".wiregate"
    store: str | None = None
    # TLS certificate offered to clients; a self-signed one is generated into
    # state_dir when these are absent.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class ListenSection(_Base):
    postgres: str | None = None
    ssh: str | None = None
    http: str | None = None
    admin: str | None = None


class OIDCProvider(_Base):
    issuer: str
    audience: str | list[str]
    jwks_url: str | None = None
    jwks_file: str | None = None
    groups_claim: str = "groups"
    subject_claim: str = "sub"
    # seconds a fetched JWKS is trusted before it is fetched again
    jwks_cache_seconds: int = 300
    leeway_seconds: int = 30


class UserAccount(_Base):
    name: str
    token_sha256: str | None = None
    groups: list[str] = []
    ssh_keys: list[str] = []


class IdentitySection(_Base):
    dev_tokens: bool = False
    admin_groups: list[str] = []
    oidc: list[OIDCProvider] = []
    users: list[UserAccount] = []


class Target(_Base):
    name: str
    protocol: Literal["postgres", "ssh", "http"]
    address: str | None = None
    # postgres
    database: str | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    tls: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    tls_ca_file: str | None = None
    # ssh
    key_file: str | None = None
    known_hosts: str | None = None
    # http
    url: str | None = None
    mcp: bool = False
    # who may open a session at all; empty means nobody (fail closed)
    allow_groups: list[str] = []


class HttpMatch(_Base):
    method: list[str] = []
    path: list[str] = []


class RuleMatch(_Base):
    sql: list[str] = []
    tables: list[str] = []
    functions: list[str] = []
    text: list[str] = []
    command: list[str] = []
    tool: list[str] = []
    http: HttpMatch | None = None


class Rule(_Base):
    name: str
    action: Literal["allow", "deny", "review", "mask"]
    targets: list[str] = ["*"]
    groups: list[str] = ["*"]
    except_groups: list[str] = []
    match: RuleMatch | None = None
    message: str | None = None
    # review
    approvers: list[str] = []
    timeout: str = "5m"
    # mask
    columns: list[str] = []
    detectors: list[str] = []
    style: Literal["redact", "partial", "hash", "null"] = "redact"


class PolicySection(_Base):
    default: Literal["allow", "deny"] = "allow"


class Config(_Base):
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    listen: ListenSection = msgspec.field(default_factory=ListenSection)
    identity: IdentitySection = msgspec.field(default_factory=IdentitySection)
    targets: list[Target] = []
    rules: list[Rule] = []
    policy: PolicySection = msgspec.field(default_factory=PolicySection)

"""Typed configuration: TOML decoded into msgspec structs.

Every struct forbids unknown fields so that a typo in the file is an error with
its key path rather than a silently ignored setting.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import fnmatch
import os
import re
import struct
import tomllib
import typing
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi

from gateway.errors import ConfigError, WiregateError


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class GatewaySection(_Base):
    state_dir: str = ".wiregate"
    # where approvals, grants, the sessions index and the dev token key live: None is SQLite in
    # state_dir (one instance); "postgresql://..." is shared by every instance that names it
    store: str | None = None
    # SIGTERM: sessions get this long to finish before they are closed
    shutdown_grace: str = "30s"
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
    # OpenSSH certificate authorities: a user certificate one of them signed proves the identity
    # whose name is one of its principals (that identity's groups come from identity.users)
    ssh_ca_keys: list[str] = []


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
    # pass the caller's own Authorization header to the upstream (off: the upstream never sees it)
    forward_token: bool = False
    # a credential of the gateway's own, sent to the upstream in this header on every request
    credential_header: str = "Authorization"
    credential_env: str | None = None
    credential_file: str | None = None
    # mcp: tools/call argument names (globs) whose string values are always analysed as SQL
    sql_arguments: list[str] = msgspec.field(default_factory=lambda: ["sql", "query", "statement", "*_sql"])
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
    # file operations ("write /etc/*", "remove *"): SFTP requests, legacy scp and rsync transfers
    file: list[str] = []
    # SSH forwarding: "local HOST:PORT", "remote HOST:PORT", "agent"
    forward: list[str] = []
    tool: list[str] = []
    # MCP tools/call arguments: argument name glob -> value patterns (globs, `re:` regexes)
    args: dict[str, list[str]] = {}
    http: HttpMatch | None = None


class Rule(_Base):
    name: str
    action: Literal["allow", "deny", "review", "mask"]
    # msgspec refuses non-empty mutable defaults (shared between instances)
    targets: list[str] = msgspec.field(default_factory=lambda: ["*"])
    groups: list[str] = msgspec.field(default_factory=lambda: ["*"])
    except_groups: list[str] = []
    match: RuleMatch | None = None
    message: str | None = None
    # review
    approvers: list[str] = []
    timeout: str = "5m"
    webhook: str | None = None
    # mask
    columns: list[str] = []
    detectors: list[str] = []
    # JSON object keys (name globs, any depth) whose values an HTTP/MCP body masks
    keys: list[str] = []
    style: Literal["redact", "partial", "hash", "null"] = "redact"


class SshSection(_Base):
    """Limits of the SSH listener (protocols/ssh/server.py)."""

    # a client that has not authenticated after this long is disconnected
    login_timeout: str = "30s"
    # open channels (sessions and forwards) per client connection
    max_channels: int = 32
    # connections still authenticating at once; more are closed at once
    max_unauthenticated: int = 256


class HttpSection(_Base):
    """Limits of the HTTP listener (protocols/http/listener.py)."""

    # request line and headers, in bytes (431 past it)
    max_header_bytes: int = 16384
    # a request body (413 past it)
    max_body_bytes: int = 64 * 1024 * 1024
    # a body the gateway must hold whole to check or mask it: MCP requests, masked JSON/text responses
    max_buffered_bytes: int = 8 * 1024 * 1024
    # a request head must arrive within this once it has started (408 and close past it)
    header_timeout: str = "10s"
    # an idle keep-alive connection is closed after this
    idle_timeout: str = "60s"
    # the longest silence while a request body is arriving
    body_timeout: str = "30s"
    # connecting to an upstream, and waiting for its response head
    connect_timeout: str = "10s"
    upstream_timeout: str = "60s"
    # open client connections at once; more are refused with 503
    max_connections: int = 1024


class PolicySection(_Base):
    default: Literal["allow", "deny"] = "allow"


class ApprovalsSection(_Base):
    """Just-in-time approvals (gateway/broker.py, docs/approvals.md)."""

    # the admin API address approvers use (WIREGATE_URL), named in notices and webhooks;
    # default: http:// + listen.admin
    url: str | None = None
    # POSTed a JSON message (with a Slack-compatible "text") when a request is created and decided;
    # a review rule's own `webhook` is used as well
    webhook: str | None = None
    # bearer token for the webhooks, from this environment variable
    webhook_token_env: str | None = None


class RecordingSection(_Base):
    """Session recordings (recorder/, docs/recording.md)."""

    enabled: bool = True
    # always: fsync every batch before the next command may pass; batch: fsync each batch after
    # writing it (the default); never: leave it to the OS
    fsync: Literal["always", "batch", "never"] = "batch"
    # the writer takes what is queued at most this often
    batch_ms: int = 50
    # events waiting for the writer; when full, new commands are refused (fail closed)
    queue_size: int = 10000
    # "refuse": a session whose events cannot be recorded gets its new commands refused;
    # "continue": they run unrecorded (and the gateway logs it)
    on_record_failure: Literal["refuse", "continue"] = "refuse"


class AuditSink(_Base):
    """One audit export: every recorded event, as JSON, delivered once per event id."""

    type: Literal["jsonl", "syslog", "webhook"]
    # jsonl: the file to append to
    path: str | None = None
    # syslog: "udp://host:514" or "tcp://host:601" (RFC 5424)
    address: str | None = None
    # webhook: POSTed JSON arrays of events; an optional bearer token from the environment
    url: str | None = None
    token_env: str | None = None
    batch_size: int = 100
    batch_ms: int = 1000
    # longest wait between retries of a failed delivery
    retry_max_s: float = 60.0


class Config(_Base):
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    listen: ListenSection = msgspec.field(default_factory=ListenSection)
    identity: IdentitySection = msgspec.field(default_factory=IdentitySection)
    targets: list[Target] = []
    rules: list[Rule] = []
    policy: PolicySection = msgspec.field(default_factory=PolicySection)
    approvals: ApprovalsSection = msgspec.field(default_factory=ApprovalsSection)
    ssh: SshSection = msgspec.field(default_factory=SshSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    recording: RecordingSection = msgspec.field(default_factory=RecordingSection)
    audit: list[AuditSink] = []


# --------------------------------------------------------------------------
# Loading and validation
#
# msgspec stops at the first problem, but an operator fixing a config wants the
# whole list at once. So the decoded TOML is first walked against the struct
# types (via msgspec.inspect) to collect every structural error, then semantic
# checks run on whatever parts could be typed, and only a clean document is
# converted in one go.
# --------------------------------------------------------------------------

# Config keys holding file system paths: relative ones are resolved against the
# folder of the config file, so the gateway behaves the same whatever its cwd.
_PATH_FIELDS: dict[type, tuple[str, ...]] = {
    GatewaySection: ("state_dir", "tls_cert_file", "tls_key_file"),
    OIDCProvider: ("jwks_file",),
    Target: ("password_file", "key_file", "known_hosts", "tls_ca_file", "credential_file"),
    AuditSink: ("path",),
}

# Examples shown in type errors, so the fix is obvious from the message.
_EXAMPLES: dict[tuple[type, str], str] = {
    (ListenSection, "postgres"): '"127.0.0.1:15432"',
    (ListenSection, "ssh"): '"127.0.0.1:2222"',
    (ListenSection, "http"): '"127.0.0.1:8080"',
    (ListenSection, "admin"): '"127.0.0.1:8081"',
    (Target, "address"): '"127.0.0.1:5432"',
    (Target, "url"): '"http://127.0.0.1:9000"',
    (Rule, "timeout"): '"5m"',
    (GatewaySection, "shutdown_grace"): '"30s"',
    (GatewaySection, "store"): '"postgresql://wiregate@db/wiregate"',
    (ApprovalsSection, "url"): '"https://wiregate.example.com:8081"',
    (Rule, "webhook"): '"https://hooks.slack.com/services/..."',
    (SshSection, "login_timeout"): '"30s"',
    (HttpSection, "header_timeout"): '"10s"',
    (HttpSection, "idle_timeout"): '"60s"',
    (HttpSection, "body_timeout"): '"30s"',
    (HttpSection, "connect_timeout"): '"10s"',
    (HttpSection, "upstream_timeout"): '"60s"',
}

# Keys of each protocol beyond the ones every target has (name, protocol, allow_groups).
_TARGET_KEYS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"address", "database", "user", "password_env", "password_file", "tls", "tls_ca_file"}),
    "ssh": frozenset({"address", "user", "password_env", "password_file", "key_file", "known_hosts"}),
    "http": frozenset({"url", "mcp", "tls_ca_file", "forward_token", "credential_header", "credential_env",
                       "credential_file", "sql_arguments"}),
}
_TARGET_COMMON_KEYS = frozenset({"name", "protocol", "allow_groups"})

# Names that, as unknown keys, almost certainly carry a secret value inline.
_SECRET_KEY_NAMES = frozenset({
    "password", "passwd", "pass", "token", "secret", "client_secret", "api_key", "apikey",
    "private_key", "access_token", "bearer", "credentials",
})
_SECRET_KEY_SUFFIXES = ("_password", "_secret", "_token", "_api_key")

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# headers the proxy itself owns: a credential cannot be smuggled in through them
_NOT_CREDENTIAL_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "proxy-connection", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
_TARGET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DEV_TOKEN_ISSUER = "wiregate-dev"


# ---- small public helpers -------------------------------------------------

def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an http target's base URL (scheme, host, optional port and path), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a valid URL: {e}"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host name"
    if port == 0:
        return "port 0 is not a port to connect to"
    if parts.query or parts.fragment:
        return "must not have a query string or a fragment"
    if parts.username or parts.password:
        return "must not carry credentials: use credential_env or credential_file"
    return None


def parse_listen(addr: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into host and port.

    Port 0 is accepted: it asks the OS for a free port (handy in tests).
    """
    if not isinstance(addr, str) or not addr.strip():
        raise WiregateError('expected host:port like "127.0.0.1:5432", got an empty value')
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise WiregateError(f'expected "[IPv6]:port" like "[::1]:5432", got "{addr}"')
        host, port_text = text[1:end], text[end + 2:]
    else:
        if ":" not in text:
            raise WiregateError(f'expected host:port like "127.0.0.1:5432", got "{addr}" (the port is missing)')
        host, port_text = text.rsplit(":", 1)
        if ":" in host:
            raise WiregateError(f'IPv6 addresses need brackets, e.g. "[::1]:5432", got "{addr}"')
    if not host:
        raise WiregateError(f'host is missing in "{addr}": write "0.0.0.0{text}" to use every interface')
    if not port_text.isdigit():
        raise WiregateError(f'port "{port_text}" in "{addr}" is not a number')
    port = int(port_text)
    if port > 65535:
        raise WiregateError(f'port {port} in "{addr}" is out of range (0-65535)')
    return host, port


def parse_duration(text: str) -> int:
    """Seconds in a duration: "30s", "5m", "1h", "7d", "2w", "1h30m", or bare seconds "90"."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise WiregateError(f"expected a duration like \"5m\", got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise WiregateError(f"duration must not be negative, got {text}")
        return text
    s = text.strip()
    if s.isdigit():
        return int(s)
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise WiregateError(
            f'"{text}" is not a duration: use a number with a unit s, m, h, d or w, like "30s", "5m", "1h30m", "7d"')
    return total


def format_duration(seconds: int) -> str:
    """The shortest string ``parse_duration`` reads back as ``seconds``."""
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


# ---- loading --------------------------------------------------------------

def load_config(path: Path) -> Config:
    """Read, validate and type a config file; ConfigError lists every problem."""
    path = Path(path)
    raw = _read_toml(path)
    errors: list[str] = []
    _walk(raw, mi.type_info(Config), "", errors, None, None)
    _semantic_checks(raw, errors)
    if errors:
        raise ConfigError(_in_document_order(errors, raw))
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:  # the walk should have caught it; never leave the user without a line
        raise ConfigError([f"{path}: {e}"]) from None
    return _resolve_paths(cfg, path.absolute().parent)


def check_config(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a config file, for `wiregate check`."""
    try:
        cfg = load_config(path)
        # the rules compile as `serve` would compile them (statement kinds, regexes, match keys)
        from policy.engine import PolicyEngine

        PolicyEngine(cfg)
    except ConfigError as e:
        return list(e.errors), []
    return [], config_warnings(cfg)


def config_warnings(cfg: Config) -> list[str]:
    """Things that load fine but probably do not do what the operator wants."""
    warnings: list[str] = []
    listen = cfg.listen
    if not any((listen.postgres, listen.ssh, listen.http, listen.admin)):
        warnings.append("listen: no listener configured: `wiregate serve` would serve nothing")
    if listen.admin and not cfg.identity.admin_groups:
        warnings.append("identity.admin_groups: empty: nobody can use the admin API on listen.admin")
    ident = cfg.identity
    if not ident.dev_tokens and not ident.oidc and not ident.users:
        warnings.append("identity: nobody can authenticate: dev_tokens = false, "
                        "no [[identity.oidc]] provider and no [[identity.users]]")
    for i, user in enumerate(ident.users):
        if not user.token_sha256 and not user.ssh_keys and not ident.ssh_ca_keys:
            warnings.append(f"identity.users[{i}]: {user.name!r} has neither token_sha256 nor ssh_keys: it cannot log in")
    for i, t in enumerate(cfg.targets):
        p = f"targets[{i}]"
        if not t.allow_groups:
            warnings.append(f"{p}.allow_groups: nobody can connect to {t.name!r}: "
                            "empty allow_groups means no one (fail closed)")
        if t.password_env and t.password_env not in os.environ:
            warnings.append(f"{p}.password_env: environment variable {t.password_env} is not set")
        for key in ("password_file", "key_file", "known_hosts", "tls_ca_file"):
            value = getattr(t, key)
            if value and not os.path.exists(value):
                warnings.append(f"{p}.{key}: {value} does not exist")
        if t.protocol == "ssh":
            if not t.key_file and not t.password_env and not t.password_file:
                warnings.append(f"{p}: no key_file, password_env or password_file: "
                                "the gateway has no credential for the upstream")
    for i, prov in enumerate(ident.oidc):
        if prov.jwks_file and not os.path.exists(prov.jwks_file):
            warnings.append(f"identity.oidc[{i}].jwks_file: {prov.jwks_file} does not exist")
    for i, r in enumerate(cfg.rules):
        if not r.groups:
            warnings.append(f"rules[{i}].groups: empty: rule {r.name!r} applies to no one")
    return warnings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file (pass -c FILE or set WIREGATE_CONFIG)"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already ends with "(at line L, column C)"
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(obj: Any) -> Any:
        changes = {}
        for key in _PATH_FIELDS[type(obj)]:
            value = getattr(obj, key)
            if value:
                p = Path(value).expanduser()
                changes[key] = os.path.normpath(p if p.is_absolute() else base / p)
        return msgspec.structs.replace(obj, **changes) if changes else obj

    return msgspec.structs.replace(
        cfg,
        gateway=fix(cfg.gateway),
        identity=msgspec.structs.replace(cfg.identity, oidc=[fix(p) for p in cfg.identity.oidc]),
        targets=[fix(t) for t in cfg.targets],
        audit=[fix(a) for a in cfg.audit],
    )


def _in_document_order(errors: list[str], raw: dict[str, Any]) -> list[str]:
    """Group errors by section and item as they appear in the file (stable: walk errors first)."""
    sections = {key: rank for rank, key in enumerate(raw)}

    def position(line: str) -> tuple[int, int]:
        m = re.match(r"([A-Za-z0-9_-]+)(?:\.[A-Za-z0-9_-]+)*(?:\[(\d+)\])?", line)
        if not m:
            return (len(sections), 0)
        return (sections.get(m.group(1), len(sections)), int(m.group(2)) if m.group(2) else -1)

    return sorted(errors, key=position)


# ---- structural walk ------------------------------------------------------

def _key_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _show(value: Any) -> str:
    """A value as the operator wrote it, briefly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return msgspec.json.encode(shown).decode()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _describe(t: mi.Type, path: str) -> str:
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.IntType):
        return "an integer"
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(map(str, t.values))
    if isinstance(t, mi.StructType):
        return "a table"
    if isinstance(t, mi.ListType):
        if isinstance(t.item_type, mi.StructType):
            return f"a list of tables ([[{path}]])"
        return f"a list of {_plural(_describe(t.item_type, path))}"
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(m, path) for m in t.types if not isinstance(m, mi.NoneType))
    if isinstance(t, mi.DictType):
        return f"a table of {_plural(_describe(t.value_type, path))}"
    return "a valid value"


def _plural(desc: str) -> str:
    for article in ("a ", "an "):
        if desc.startswith(article):
            return desc[len(article):] + "s"
    return desc


def _literal_values(owner: type | None, field: str | None, t: mi.LiteralType) -> tuple[Any, ...]:
    # msgspec sorts literal values; the declaration order reads better (allow, deny, review, mask).
    if owner is not None and field is not None:
        hint = typing.get_type_hints(owner).get(field)
        for candidate in (hint, *typing.get_args(hint)):
            if typing.get_origin(candidate) is Literal:
                return typing.get_args(candidate)
    return t.values


def _scalar_ok(value: Any, t: mi.Type) -> bool:
    if isinstance(t, mi.StrType):
        return isinstance(value, str)
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, mi.FloatType):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(t, mi.LiteralType):
        return any(value == v and type(value) is type(v) for v in t.values)
    return False


def _walk(value: Any, t: mi.Type, path: str, errors: list[str],
          owner: type | None, field: str | None) -> None:
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        # descend into the member shaped like the value, so errors point inside it
        for m in members:
            if (isinstance(value, dict) and isinstance(m, mi.StructType)) or (
                    isinstance(value, list) and isinstance(m, mi.ListType)):
                _walk(value, m, path, errors, owner, field)
                return
        if any(_scalar_ok(value, m) for m in members):
            return
        errors.append(f"{path}: expected {_describe(t, path)}{_example(owner, field)}, got {_show(value)}")
        return
    if isinstance(t, mi.StructType):
        _walk_struct(value, t, path, errors)
        return
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            errors.append(f"{path}: expected {_describe(t, path)}, got {_show(value)}")
            return
        for i, item in enumerate(value):
            _walk(item, t.item_type, f"{path}[{i}]", errors, owner, field)
        return
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected {_describe(t, path)}, got {_show(value)}")
            return
        for key, item in value.items():
            _walk(item, t.value_type, _key_path(path, key), errors, owner, field)
        return
    if isinstance(t, mi.LiteralType):
        if not _scalar_ok(value, t):
            allowed = ", ".join(map(str, _literal_values(owner, field, t)))
            errors.append(f"{path}: must be one of {allowed}, got {_show(value)}")
        return
    if not _scalar_ok(value, t):
        errors.append(f"{path}: expected {_describe(t, path)}{_example(owner, field)}, got {_show(value)}")


def _example(owner: type | None, field: str | None) -> str:
    example = _EXAMPLES.get((owner, field)) if owner is not None and field is not None else None
    return f" like {example}" if example else ""


def _walk_struct(value: Any, t: mi.StructType, path: str, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path or 'config'}: expected a table, got {_show(value)}")
        return
    fields = {f.encode_name: f for f in t.fields}
    for key, item in value.items():
        f = fields.get(key)
        if f is None:
            errors.append(_unknown_key(key, _key_path(path, key), fields))
            continue
        _walk(item, f.type, _key_path(path, key), errors, t.cls, f.name)
    for name, f in fields.items():
        if f.required and name not in value:
            errors.append(f"{_key_path(path, name)}: required key missing")


def _looks_secret(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEY_NAMES or k.endswith(_SECRET_KEY_SUFFIXES)


def _unknown_key(key: str, path: str, fields: dict[str, Any]) -> str:
    if _looks_secret(key):
        base = key.lower()
        env, file = f"{base}_env", f"{base}_file"
        if env in fields and file in fields:
            how = f'use {env} = "VARIABLE" or {file} = "PATH" instead'
        elif base == "token" and "token_sha256" in fields:
            how = "put the sha256 hex of the token in token_sha256 instead"
        else:
            how = "reference it with a *_env or *_file key instead"
        return f"{path}: secret values must not be written in the config: {how}"
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.7)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"{path}: unknown key{hint}"


# ---- semantic checks ------------------------------------------------------
# They run on the parts that can be typed even when other parts have errors,
# so one `wiregate check` shows everything there is to fix.

_BAD = object()  # marker: this value has a structural error (already reported)


def _clean(value: Any, t: mi.Type) -> Any:
    """``value`` without the parts that failed the structural walk, or _BAD."""
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        for m in members:
            if (isinstance(value, dict) and isinstance(m, mi.StructType)) or (
                    isinstance(value, list) and isinstance(m, mi.ListType)):
                return _clean(value, m)
        return value if any(_scalar_ok(value, m) for m in members) else _BAD
    if isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            return _BAD
        fields = {f.encode_name: f for f in t.fields}
        out = {}
        for key, item in value.items():
            if key in fields and (c := _clean(item, fields[key].type)) is not _BAD:
                out[key] = c
        if any(f.required and name not in out for name, f in fields.items()):
            return _BAD
        return out
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            return _BAD
        # a list with one bad item is dropped whole: indices in later errors must stay true
        items = [_clean(item, t.item_type) for item in value]
        return _BAD if any(item is _BAD for item in items) else items
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            return _BAD
        cleaned = {k: _clean(v, t.value_type) for k, v in value.items()}
        return _BAD if any(v is _BAD for v in cleaned.values()) else cleaned
    return value if _scalar_ok(value, t) else _BAD


def _typed(value: Any, t: type) -> Any:
    """``value`` as a ``t``, leaving out keys with errors; None when even that fails."""
    cleaned = _clean(value, mi.type_info(t))
    if cleaned is _BAD:
        return None
    try:
        return msgspec.convert(cleaned, t)
    except (msgspec.ValidationError, TypeError):
        return None


def _typed_items(values: Any, t: type) -> list[tuple[int, Any, dict[str, Any]]]:
    if not isinstance(values, list):
        return []
    out = []
    for i, item in enumerate(values):
        typed = _typed(item, t) if isinstance(item, dict) else None
        if typed is not None:
            out.append((i, typed, item))
    return out


def _raw_names(values: Any) -> list[tuple[int, str]]:
    if not isinstance(values, list):
        return []
    return [(i, v["name"]) for i, v in enumerate(values) if isinstance(v, dict) and isinstance(v.get("name"), str)]


def _semantic_checks(raw: dict[str, Any], errors: list[str]) -> None:
    section = raw.get("gateway")
    if isinstance(section, dict) and (gw := _typed(section, GatewaySection)) is not None:
        _check_gateway(gw, errors)
    section = raw.get("listen")
    if isinstance(section, dict) and (listen := _typed(section, ListenSection)) is not None:
        _check_listen(listen, errors)
    section = raw.get("identity")
    if isinstance(section, dict):
        _check_identity(section, errors)

    targets = raw.get("targets")
    _check_unique(_raw_names(targets), "targets", "target", errors)
    for i, t, raw_t in _typed_items(targets, Target):
        _check_target(f"targets[{i}]", t, raw_t, errors)

    section = raw.get("ssh")
    if isinstance(section, dict) and (ssh := _typed(section, SshSection)) is not None:
        try:
            if parse_duration(ssh.login_timeout) < 1:
                errors.append("ssh.login_timeout: must be at least 1s")
        except WiregateError as e:
            errors.append(f"ssh.login_timeout: {e}")
        if ssh.max_channels < 1:
            errors.append("ssh.max_channels: must be at least 1")
        if ssh.max_unauthenticated < 1:
            errors.append("ssh.max_unauthenticated: must be at least 1")
    section = raw.get("http")
    if isinstance(section, dict) and (http := _typed(section, HttpSection)) is not None:
        for key in ("header_timeout", "idle_timeout", "body_timeout", "connect_timeout", "upstream_timeout"):
            try:
                if parse_duration(getattr(http, key)) < 1:
                    errors.append(f"http.{key}: must be at least 1s")
            except WiregateError as e:
                errors.append(f"http.{key}: {e}")
        for key, least in (("max_header_bytes", 1024), ("max_body_bytes", 1), ("max_buffered_bytes", 1024),
                           ("max_connections", 1)):
            if getattr(http, key) < least:
                errors.append(f"http.{key}: must be at least {least}")
    section = raw.get("recording")
    if isinstance(section, dict) and (rec := _typed(section, RecordingSection)) is not None:
        if rec.batch_ms < 1 or rec.batch_ms > 10000:
            errors.append("recording.batch_ms: must be between 1 and 10000")
        if rec.queue_size < 100:
            errors.append("recording.queue_size: must be at least 100")
    for i, a, _raw_a in _typed_items(raw.get("audit"), AuditSink):
        _check_audit(f"audit[{i}]", a, errors)
    section = raw.get("approvals")
    if isinstance(section, dict) and (ap := _typed(section, ApprovalsSection)) is not None:
        for key in ("url", "webhook"):
            if getattr(ap, key) is not None:
                _check_webhook_url(getattr(ap, key), f"approvals.{key}", errors)
        if ap.webhook_token_env is not None and not ap.webhook_token_env:
            errors.append("approvals.webhook_token_env: must name an environment variable")

    known_targets = {name for _, name in _raw_names(targets)}
    rules = raw.get("rules")
    _check_unique(_raw_names(rules), "rules", "rule", errors)
    for i, r, raw_r in _typed_items(rules, Rule):
        _check_rule(f"rules[{i}]", r, raw_r, known_targets, errors)


_AUDIT_NEEDS = {"jsonl": "path", "syslog": "address", "webhook": "url"}


def _check_audit(p: str, a: AuditSink, errors: list[str]) -> None:
    needed = _AUDIT_NEEDS[a.type]
    if not getattr(a, needed):
        errors.append(f'{p}.{needed}: required for type = "{a.type}"')
    for key in ("path", "address", "url", "token_env"):
        if key != needed and getattr(a, key) and not (key == "token_env" and a.type == "webhook"):
            errors.append(f'{p}.{key}: not used by type = "{a.type}"')
    if a.type == "syslog" and a.address and not a.address.startswith(("udp://", "tcp://")):
        errors.append(f'{p}.address: write "udp://host:514" or "tcp://host:601"')
    if a.type == "webhook" and a.url and not a.url.startswith(("http://", "https://")):
        errors.append(f"{p}.url: must be an http:// or https:// URL")
    if a.batch_size < 1 or a.batch_ms < 1 or a.retry_max_s <= 0:
        errors.append(f"{p}: batch_size, batch_ms and retry_max_s must be positive")


def _check_unique(names: list[tuple[int, str]], section: str, what: str, errors: list[str]) -> None:
    first: dict[str, int] = {}
    for i, name in names:
        if name in first:
            errors.append(f'{section}[{i}].name: duplicate {what} name "{name}" (also {section}[{first[name]}])')
        else:
            first[name] = i


def _check_address(value: str | None, path: str, errors: list[str], *, allow_port_zero: bool) -> None:
    if value is None:
        return
    try:
        _, port = parse_listen(value)
    except WiregateError as e:
        errors.append(f"{path}: {e}")
        return
    if port == 0 and not allow_port_zero:
        errors.append(f'{path}: port 0 in "{value}" is not a port to connect to')


def _check_gateway(gw: GatewaySection, errors: list[str]) -> None:
    if bool(gw.tls_cert_file) != bool(gw.tls_key_file):
        errors.append("gateway: set both tls_cert_file and tls_key_file, or neither "
                      "(a self-signed certificate is generated then)")
    if not gw.state_dir.strip():
        errors.append("gateway.state_dir: must not be empty")
    if gw.store is not None and not gw.store.startswith(("postgresql://", "postgres://")):
        errors.append('gateway.store: must be a PostgreSQL URL ("postgresql://user@host/db"); '
                      "leave it out for the embedded SQLite store in state_dir")
    try:
        if parse_duration(gw.shutdown_grace) < 0:
            errors.append("gateway.shutdown_grace: must not be negative")
    except WiregateError as e:
        errors.append(f"gateway.shutdown_grace: {e}")


def _check_webhook_url(url: str, key: str, errors: list[str]) -> None:
    if not url.startswith(("http://", "https://")):
        errors.append(f"{key}: must be an http:// or https:// URL")


def _check_listen(listen: ListenSection, errors: list[str]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for key in ("postgres", "ssh", "http", "admin"):
        value = getattr(listen, key)
        _check_address(value, f"listen.{key}", errors, allow_port_zero=True)
        try:
            host, port = parse_listen(value) if value is not None else (None, 0)
        except WiregateError:
            continue
        if host is not None and port != 0:
            if (host, port) in seen:
                errors.append(f"listen.{key}: same address as listen.{seen[(host, port)]}")
            seen[(host, port)] = key


def _check_identity(raw: dict[str, Any], errors: list[str]) -> None:
    providers = _typed_items(raw.get("oidc"), OIDCProvider)
    issuers: dict[str, int] = {}
    for i, prov, _ in providers:
        p = f"identity.oidc[{i}]"
        if not prov.issuer:
            errors.append(f"{p}.issuer: must not be empty")
        elif prov.issuer == DEV_TOKEN_ISSUER:
            errors.append(f'{p}.issuer: "{DEV_TOKEN_ISSUER}" is reserved for dev tokens')
        elif prov.issuer in issuers:
            errors.append(f'{p}.issuer: duplicate issuer "{prov.issuer}" (also identity.oidc[{issuers[prov.issuer]}])')
        else:
            issuers[prov.issuer] = i
        if not prov.audience:
            errors.append(f"{p}.audience: must not be empty")
        if bool(prov.jwks_url) == bool(prov.jwks_file):
            errors.append(f"{p}: set exactly one of jwks_url and jwks_file")
        if prov.jwks_url and not prov.jwks_url.startswith(("https://", "http://")):
            errors.append(f"{p}.jwks_url: must be an http:// or https:// URL, got {_show(prov.jwks_url)}")
        if not prov.groups_claim:
            errors.append(f"{p}.groups_claim: must not be empty")
        if not prov.subject_claim:
            errors.append(f"{p}.subject_claim: must not be empty")
        if prov.jwks_cache_seconds < 0:
            errors.append(f"{p}.jwks_cache_seconds: must not be negative")
        if prov.leeway_seconds < 0:
            errors.append(f"{p}.leeway_seconds: must not be negative")

    users = raw.get("users")
    _check_unique(_raw_names(users), "identity.users", "user", errors)
    key_owner: dict[str, str] = {}
    for i, user, _ in _typed_items(users, UserAccount):
        p = f"identity.users[{i}]"
        if not user.name.strip():
            errors.append(f"{p}.name: must not be empty")
        if user.token_sha256 is not None and not _HEX64_RE.fullmatch(user.token_sha256):
            # never echo the value: it may be the token itself pasted by mistake
            errors.append(f"{p}.token_sha256: must be 64 hex characters, the sha256 of the token "
                          f"(printf %s TOKEN | sha256sum), got {len(user.token_sha256)} characters")
        if (user.ssh_keys or raw.get("ssh_ca_keys")) and re.search(r'[",\s\\]', user.name):
            errors.append(f"{p}.name: {_show(user.name)} cannot log in with SSH keys or certificates: "
                          "a name used over SSH has no quote, comma, space or backslash")
        for j, key in enumerate(user.ssh_keys):
            problem = _ssh_key_problem(key)
            if problem:
                errors.append(f"{p}.ssh_keys[{j}]: {problem}")
                continue
            blob = key.split()[1]
            if blob in key_owner and key_owner[blob] != p:
                errors.append(f"{p}.ssh_keys[{j}]: the same key is listed for {key_owner[blob]}")
            key_owner.setdefault(blob, p)
    cas = raw.get("ssh_ca_keys")
    if isinstance(cas, list):
        for j, key in enumerate(cas):
            problem = _ssh_key_problem(key) if isinstance(key, str) else None
            if problem:
                errors.append(f"identity.ssh_ca_keys[{j}]: {problem}")
            elif isinstance(key, str) and key.split()[1] in key_owner:
                errors.append(f"identity.ssh_ca_keys[{j}]: the same key is listed for {key_owner[key.split()[1]]}")


def _ssh_key_problem(line: str) -> str | None:
    """Why ``line`` is not an OpenSSH public key line ("TYPE BASE64 [comment]"), or None."""
    parts = line.split()
    if len(parts) < 2:
        return 'expected an OpenSSH public key like "ssh-ed25519 AAAA... comment"'
    kind, blob = parts[0], parts[1]
    try:
        data = base64.b64decode(blob, validate=True)
        (n,) = struct.unpack(">I", data[:4])
        inner = data[4:4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return f'the key data after "{kind}" is not valid base64 of an SSH key'
    if inner != kind:
        return f'the key says type "{inner}" but the line says "{kind}"'
    return None


def _check_target(p: str, t: Target, raw: dict[str, Any], errors: list[str]) -> None:
    if not _TARGET_NAME_RE.fullmatch(t.name):
        errors.append(f"{p}.name: {_show(t.name)} must be 1-63 letters, digits, '-' or '_' "
                      "(it is used as a database name, SSH user part and URL path segment)")
    all_keys = _TARGET_COMMON_KEYS.union(*_TARGET_KEYS.values())
    # unknown keys were reported by the walk; here only keys of another protocol
    foreign = sorted((set(raw) & all_keys) - _TARGET_COMMON_KEYS - _TARGET_KEYS[t.protocol])
    for key in foreign:
        users = [proto for proto, keys in _TARGET_KEYS.items() if key in keys]
        errors.append(f"{p}.{key}: not used by {t.protocol} targets (only by {', '.join(users)})")
    if t.protocol in ("postgres", "ssh"):
        for key in ("address", "user"):
            if not raw.get(key):
                errors.append(f"{p}.{key}: required for {t.protocol} targets")
        _check_address(t.address, f"{p}.address", errors, allow_port_zero=False)
    if t.protocol == "ssh" and not raw.get("known_hosts"):
        errors.append(f"{p}.known_hosts: required for ssh targets: the file pinning the target's host key "
                      '(e.g. `ssh-keyscan -p 22 HOST > keys/known_hosts`, checked by you)')
    if t.protocol == "http":
        if not t.url:
            errors.append(f"{p}.url: required for http targets")
        elif not t.url.startswith(("http://", "https://")):
            errors.append(f"{p}.url: must start with http:// or https://, got {_show(t.url)}")
        else:
            problem = url_problem(t.url)
            if problem:
                errors.append(f"{p}.url: {problem}")
        if "credential_env" in raw and "credential_file" in raw:
            errors.append(f"{p}: set credential_env or credential_file, not both")
        if not _HEADER_NAME_RE.fullmatch(t.credential_header):
            errors.append(f"{p}.credential_header: {_show(t.credential_header)} is not an HTTP header name")
        elif t.credential_header.lower() in _NOT_CREDENTIAL_HEADERS:
            errors.append(f"{p}.credential_header: {t.credential_header} is set by the gateway itself")
        own = t.credential_env or t.credential_file
        if t.forward_token and own and t.credential_header.lower() == "authorization":
            errors.append(f"{p}: forward_token and a credential in the Authorization header exclude each other")
        if t.sql_arguments and not t.mcp and "sql_arguments" in raw:
            errors.append(f"{p}.sql_arguments: only used when mcp = true")
    if "password_env" in raw and "password_file" in raw:
        errors.append(f"{p}: set password_env or password_file, not both")
    if t.password_env is not None and not t.password_env:
        errors.append(f"{p}.password_env: must name an environment variable")


def _check_rule(p: str, r: Rule, raw: dict[str, Any], known_targets: set[str], errors: list[str]) -> None:
    if not r.name.strip():
        errors.append(f"{p}.name: must not be empty")
    for j, name in enumerate(r.targets):
        if name == "*" or name in known_targets:
            continue
        # the policy engine matches rule targets as fnmatch globs; a glob that
        # matches nothing is as much a typo as an unknown name
        if any(c in name for c in "*?["):
            if not any(fnmatch.fnmatchcase(t, name) for t in known_targets):
                errors.append(f'{p}.targets[{j}]: pattern "{name}" matches no configured target')
        else:
            errors.append(f'{p}.targets[{j}]: unknown target "{name}"')
    if r.action == "review":
        if not r.approvers:
            errors.append(f"{p}.approvers: a review rule needs approvers (groups that may approve)")
        try:
            if parse_duration(r.timeout) <= 0:
                errors.append(f"{p}.timeout: must be longer than 0s")
        except WiregateError as e:
            errors.append(f"{p}.timeout: {e}")
        if r.webhook is not None:
            _check_webhook_url(r.webhook, f"{p}.webhook", errors)
    else:
        for key in ("approvers", "timeout", "webhook"):
            if key in raw:
                errors.append(f"{p}.{key}: only used by review rules, this rule is {r.action}")
    if r.action == "mask":
        if not r.columns and not r.detectors and not r.keys:
            errors.append(f"{p}: a mask rule needs columns, keys or detectors")
    else:
        for key in ("columns", "detectors", "keys", "style"):
            if key in raw:
                errors.append(f"{p}.{key}: only used by mask rules, this rule is {r.action}")
    if r.match is not None:
        for j, pattern in enumerate(r.match.text):
            try:
                re.compile(pattern)
            except re.error as e:
                errors.append(f"{p}.match.text[{j}]: not a valid regular expression: {e}")

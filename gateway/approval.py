"""What an approval request is, and the fingerprint that `approve --for` grants on.

These are the records the store keeps (gateway/store.py) and the broker works on
(gateway/broker.py); the admin API and `wiregate approvals` show them as JSON.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

import msgspec

Status = Literal["pending", "approved", "denied", "expired", "withdrawn"]
FINAL: frozenset[str] = frozenset({"approved", "denied", "expired", "withdrawn"})


class ApprovalRecord(msgspec.Struct, kw_only=True):
    """One request for a second person's approval of one held command."""

    id: str
    requester: str
    groups: tuple[str, ...]
    target: str
    protocol: str
    # the Command kind: sql, function_call, exec, tool, http
    kind: str
    # the command as the recording holds it (masked)
    command: str
    fingerprint: str
    rule: str
    # the groups whose members may decide (the rule's `approvers`)
    approvers: tuple[str, ...]
    session_id: str | None
    # which gateway holds the command
    instance: str
    created: float  # UNIX seconds
    expires: float
    status: Status = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None
    # approve --for: until when the same requester runs the same fingerprint on the target unasked
    grant_until: float | None = None


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """An `approve --for` window."""

    identity: str
    target: str
    fingerprint: str
    until: float
    approval_id: str


def new_approval_id() -> str:
    """Short enough to type (people copy it from a NOTICE), long enough never to collide."""
    return "ap-" + secrets.token_hex(6)


def fingerprint(kind: str, text: str, args: dict[str, Any] | None = None) -> str:
    """The identity of a command for `approve --for`.

    SQL is its token stream (PostgreSQL's own scanner, libpg_query through pglast) with every
    literal constant replaced, comments dropped and keywords and unquoted names case-folded:
    approving ``UPDATE t SET a = 1 WHERE id = 5`` for 30 minutes also passes ``update t set
    a = 2 where id = 6``, never another statement (a minus sign is an operator token: ``id = -1``
    is another shape than ``id = 1``, which errs on the side of asking again). (libpg_query's fingerprint is coarser: it
    gives ``ALTER COLUMN c SET DEFAULT 1`` and ``... DROP DEFAULT`` the same value.) Anything
    else, and SQL the scanner refuses, is its exact text (and tool arguments).
    """
    digest = hashlib.sha256(kind.encode() + b"\0")
    shape = _sql_shape(text) if kind == "sql" else None
    digest.update((shape if shape is not None else text).encode("utf-8", "surrogatepass"))
    if args is not None:
        digest.update(b"\0" + msgspec.json.encode(args, order="sorted"))
    return f"{kind}:{'shape' if shape is not None else 'text'}:{digest.hexdigest()[:32]}"


_CONSTANTS = frozenset({"ICONST", "FCONST", "SCONST", "BCONST", "XCONST", "USCONST"})
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _sql_shape(sql: str) -> str | None:
    if "\0" in sql:  # the scanner stops at a NUL: what follows would not count
        return None
    try:
        from pglast.parser import scan

        tokens = scan(sql)
    except Exception:  # the scanner refuses it: the exact text stands for it
        return None
    parts: list[str] = []
    for token in tokens:
        if token.name in _COMMENTS:
            continue
        if token.name in _CONSTANTS:
            parts.append("?")
        elif token.kind != "NO_KEYWORD":
            parts.append(token.name)
        else:
            raw = sql[token.start:token.end + 1]  # positions count characters
            # PostgreSQL folds unquoted names to lower case in ASCII only (É and é are two names)
            parts.append(raw.translate(_ASCII_LOWER) if token.name == "IDENT" and not raw.startswith(('"', "U&", "u&"))
                         else raw)
    while parts and parts[-1] == ";":
        parts.pop()
    return "\x1f".join(parts)


class ApprovalError(Exception):
    """A refused approval operation; ``status`` is the admin API's HTTP status for it
    (403 not an approver / own request, 404 unknown id, 409 already decided, 400 bad input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

"""The command model every protocol maps its traffic onto, and the decision it gets back."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Action = Literal["allow", "deny", "review"]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a caller asks a target to do.

    kind: "sql" (a statement string, possibly several statements), "function_call"
    (PostgreSQL fastpath call, text names the function), "exec" (SSH command line),
    "tool" (MCP tools/call, text names the tool, ``args`` holds its arguments; None when
    unknown, as when deciding whether a tool is listed at all), "http" (text is
    ``METHOD /path`` with the path normalised and without its query string).
    """

    protocol: str
    target: str
    kind: str
    text: str
    args: dict[str, Any] | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy core decided for a command.

    For a refusal, ``sqlstate`` and ``message`` are what the client is shown;
    ``rule`` is None when no rule decided (policy default or analysis failure).
    """

    action: Action
    rule: str | None = None
    message: str = ""
    sqlstate: str = "42501"
    # statement kinds found by the analysis, for the recorder
    kinds: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


ALLOW = Decision(action="allow")
# what an allowed command becomes when its record cannot be kept (on_record_failure = "refuse")
UNRECORDABLE = Decision(action="deny", message="wiregate: the session cannot be recorded: command refused")


def review_refusal(decision: Decision, what: str) -> str:
    """What a caller is told when ``decision`` asks for an approval that cannot be waited for
    here: ``what`` ("the statement", "the command") is refused, naming the rule. Approvals hold
    SQL statements, SSH exec commands, HTTP requests and MCP tool calls (gateway/broker.py);
    lines typed at a shell, file transfers and forwards cannot wait for one."""
    return (f'wiregate: blocked by rule "{decision.rule}": {what} needs an approval, and only SQL '
            "statements, SSH exec commands, HTTP requests and MCP tool calls can wait for one")

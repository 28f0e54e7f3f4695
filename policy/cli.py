"""`wiregate policy test`: dry-run one command against the rules and say who decided.

Exit status (documented in docs/policy.md):

* 0 — a decision was made and printed, whatever it is (allow, deny or review): this is a dry run;
* 1 — the configuration is invalid, or the target is unknown (``PolicyUsageError``, printed as one
  line by ``gateway.cli``; the exception carries ``exit_code = 2`` for a caller that distinguishes
  usage errors);
* 2 — command-line usage errors caught by argparse (missing ``--target``, two of ``--sql``/...).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import msgspec

from gateway.config import Config
from gateway.errors import WiregateError
from policy.engine import PolicyEngine
from policy.glob import GlobSet
from policy.model import Command, Decision
from protocols.http.paths import BadPath, normalize_path, split_target


class PolicyUsageError(WiregateError):
    """The dry run was asked something that cannot be answered (unknown target, no command)."""

    exit_code = 2


def policy_test(
    cfg: Config,
    *,
    target: str,
    name: str,
    groups: Sequence[str],
    sql: str | None = None,
    command: str | None = None,
    tool: str | None = None,
    file: str | None = None,
    forward: str | None = None,
    http: str | None = None,
    tool_args: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the decision for one command and the rule that made it; return the exit status."""
    out = out if out is not None else sys.stdout
    given = [x for x in (sql, command, tool, file, forward, http) if x is not None]
    if len(given) != 1:
        raise PolicyUsageError("policy test: give exactly one of --sql, --command, --tool, --file, --forward, --http")
    arguments: dict | None = None
    if tool_args is not None:
        if tool is None:
            raise PolicyUsageError("policy test: --args goes with --tool")
        try:
            arguments = msgspec.json.decode(tool_args)
        except msgspec.DecodeError as exc:
            raise PolicyUsageError(f"policy test: --args is not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise PolicyUsageError('policy test: --args must be a JSON object, like \'{"sql": "SELECT 1"}\'')
    if http is not None:
        method, _, path = http.strip().partition(" ")
        if not method or not path.strip().startswith("/"):
            raise PolicyUsageError('policy test: --http takes "METHOD /PATH", like "DELETE /admin/users"')
        try:
            # decided on the path as the gateway forwards it: normalised, without the query string
            path = normalize_path(split_target(path.strip())[0])
        except BadPath as exc:
            raise PolicyUsageError(f"policy test: --http: {exc}") from None
        http = f"{method.upper()} {path}"
    spec = next((t for t in cfg.targets if t.name == target), None)
    if spec is None:
        known = ", ".join(t.name for t in cfg.targets) or "none configured"
        raise PolicyUsageError(f'policy test: unknown target "{target}" (targets: {known})')

    engine = PolicyEngine(cfg)
    session = engine.session(protocol=spec.protocol, target=target, identity=name, groups=list(groups),
                             sql_arguments=spec.sql_arguments if spec.mcp else ())

    if sql is not None:
        analysis = session.analyze(sql)
        decision = session.check_sql(sql)
        state = "error" if analysis.error is not None else "empty" if analysis.empty else ""
        print(_line(decision, state=state, default=engine.default), file=out)
        if analysis.error is not None:
            where = f" at character {analysis.error_position}" if analysis.error_position else ""
            print(f"parse error: {analysis.error}{where}", file=out)
        else:
            kinds = ", ".join(sorted(analysis.kinds)) or "(none: empty statement)"
            print(f"statements: {analysis.statements}  kinds: {kinds}", file=out)
            if analysis.tables or analysis.functions:
                print(f"tables: {', '.join(sorted(analysis.tables)) or '-'}  "
                      f"functions: {', '.join(sorted(analysis.functions)) or '-'}", file=out)
            if analysis.undecidable is not None:
                print(f"cannot be analysed: {analysis.undecidable}", file=out)
        if session.mask_rules:
            print(f"results masked by: {', '.join(session.mask_rules)}", file=out)
    elif tool is not None and arguments is not None:
        print(_line(session.check_tool_call(tool, arguments), state="", default=engine.default), file=out)
    elif tool is not None:
        decision = session.check(Command(protocol=spec.protocol, target=target, kind="tool", text=tool))
        print(_line(decision, state="", default=engine.default), file=out)
        if not session.tool_visible(tool):
            print("tools/list: hidden from this caller", file=out)
    elif http is not None:
        method, _, path = http.partition(" ")
        decision = session.check_http(method, path, mcp=spec.mcp)
        state = "transport" if spec.mcp and decision.rule is None else ""
        print(_line(decision, state=state, default=engine.default), file=out)
    else:
        kind, text = next((k, v) for k, v in (("exec", command), ("file", file), ("forward", forward))
                          if v is not None)
        decision = session.check(Command(protocol=spec.protocol, target=target, kind=kind, text=text or ""))
        print(_line(decision, state="forward" if kind == "forward" else "", default=engine.default), file=out)

    if not GlobSet(spec.allow_groups).matches_any(groups):
        # rules decide commands; whether the session opens at all is the target's allow_groups
        shown = ", ".join(groups) or "no groups"
        print(
            f'note: [{shown}] matches none of allow_groups [{", ".join(spec.allow_groups)}] '
            f'of target "{target}": the session itself would be refused',
            file=out,
        )
    return 0


def _line(decision: Decision, *, state: str, default: str) -> str:
    """``deny  rule=NAME  message`` / ``allow  (no rule matched; policy default allow)``."""
    if decision.rule is not None:
        who = f"rule={decision.rule}"
    elif state == "error":
        who = "(statement does not parse; refused)" if decision.action == "deny" else "(statement does not parse; no rule here inspects SQL)"
    elif state == "empty":
        who = "(empty statement: nothing to run)"
    elif state == "transport":
        who = "(no rule matched; on an MCP target policy.default decides the tool calls, not the transport)"
    elif state == "forward":
        who = "(no rule allows it: forwarding is refused whatever the default)"
    else:
        who = f"(no rule matched; policy default {default})"
    return f"{decision.action}  {who}  {decision.message}".rstrip()

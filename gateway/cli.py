"""The `wiregate` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.errors import ConfigError, WiregateError


def _config_path(value: str | None) -> Path:
    if value:
        return Path(value)
    env = os.environ.get("WIREGATE_CONFIG")
    if env:
        return Path(env)
    return Path("wiregate.toml")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (default: $WIREGATE_CONFIG, then ./wiregate.toml)")


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.server import serve

    path = _config_path(args.config)
    return serve(load_config(path), path)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(keep=args.keep, port=args.port)


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.config import check_config

    path = _config_path(args.config)
    errors, warnings = check_config(path)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from policy.cli import policy_test

    cfg = load_config(_config_path(args.config))
    groups = [g for g in (args.groups or "").split(",") if g]
    return policy_test(cfg, target=args.target, name=args.as_name, groups=groups,
                       sql=args.sql, command=args.command, tool=args.tool, file=args.file,
                       forward=args.forward, http=args.http, tool_args=args.tool_args)


def _cmd_token_issue(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.identity import issue_dev_token, parse_duration

    cfg = load_config(_config_path(args.config))
    groups = [g for g in (args.groups or "").split(",") if g]
    print(issue_dev_token(cfg, sub=args.sub, groups=groups, ttl_seconds=parse_duration(args.ttl)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wiregate", description="Identity-aware access gateway for PostgreSQL, SSH and HTTP/MCP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from recorder.cli import add_parsers as add_recording_parsers

    p = sub.add_parser("serve", help="run every listener the config names")
    _add_config(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="start a throwaway PostgreSQL with fake PII behind the gateway")
    p.add_argument("--port", type=int, default=15432, help="gateway PostgreSQL port (default 15432)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory on exit")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("check", help="validate a config file")
    _add_config(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("policy", help="policy tools")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    pt = psub.add_parser("test", help="dry-run a command against the rules")
    _add_config(pt)
    pt.add_argument("--target", required=True)
    pt.add_argument("--as", dest="as_name", required=True, metavar="NAME")
    pt.add_argument("--groups", default="", help="comma-separated groups")
    what = pt.add_mutually_exclusive_group(required=True)
    what.add_argument("--sql")
    what.add_argument("--command")
    what.add_argument("--tool")
    what.add_argument("--file", metavar="'OP PATH'", help='an SSH file operation, e.g. "write /etc/hosts"')
    what.add_argument("--forward", metavar="'local HOST:PORT'",
                      help='an SSH forwarding request: "local HOST:PORT", "remote HOST:PORT" or "agent"')
    what.add_argument("--http", metavar="'METHOD /PATH'",
                      help='an HTTP request as the target sees it, e.g. "DELETE /admin/x"')
    pt.add_argument("--args", dest="tool_args", metavar="JSON", help="with --tool: the call's arguments, a JSON object")
    pt.set_defaults(func=_cmd_policy_test)

    p = sub.add_parser("token", help="dev tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")
    ti = tsub.add_parser("issue", help="mint a signed dev token")
    _add_config(ti)
    ti.add_argument("--sub", required=True, help="subject (the identity name)")
    ti.add_argument("--groups", default="", help="comma-separated groups")
    ti.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 7d (default 1h)")
    ti.set_defaults(func=_cmd_token_issue)
    add_recording_parsers(sub)  # sessions list|show|verify|export|pubkey, replay
    from gateway.approvals_cli import add_subcommand as add_approvals_parser

    add_approvals_parser(sub)  # approvals list|approve|deny, over the admin API
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        for line in e.errors:
            print(f"wiregate: {line}", file=sys.stderr)
        return 1
    except WiregateError as e:
        print(f"wiregate: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

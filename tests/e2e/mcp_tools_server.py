"""An MCP tools server on the streamable HTTP transport, for the gateway's MCP end-to-end tests.

    python -m tests.e2e.mcp_tools_server --port P --calls-log FILE [--json-response] [--host H]

Built with the MCP Python SDK (``mcp.server.mcpserver.MCPServer``), endpoint
``/mcp``, stateful sessions (``Mcp-Session-Id``). Responses are SSE streams
(the SDK default) or, with ``--json-response``, plain JSON bodies.

Tools: ``echo``, ``query`` (canned rows with PII, no database), ``delete_user``,
``run_command`` (does not run anything), ``get_secret`` (text with an AWS access
key id), ``progress`` (n progress + log notifications 0.2 s apart, so its SSE
response streams). Resource ``config://app`` (text with an email).

Every ``tools/call`` that reaches the server, known tool or not, is appended
to the calls log as one JSON line ``{"tool", "arguments", "headers"}`` before
it runs: a test proves a denied call never arrived by its absence, and proves
the caller's token was not forwarded from ``headers`` (the raw HTTP request
headers, lower-case names).

DNS-rebinding protection is off: behind the gateway the Host header names the
gateway, and these tests are about the gateway, not the SDK's host check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning

__all__ = [
    "AWS_KEY_ID",
    "CONFIG_TEXT",
    "PROGRESS_SPACING",
    "QUERY_ROWS",
    "TOOL_NAMES",
    "CallsLog",
    "build_server",
    "main",
]

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
QUERY_ROWS: list[dict[str, Any]] = [{"id": 1, "email": "alice@example.com", "ssn": "123-45-6789"}]
CONFIG_TEXT = "[app]\nowner = ops@example.com\nregion = eu-west-1\n"
PROGRESS_SPACING = 0.2
TOOL_NAMES = ("echo", "query", "delete_user", "run_command", "get_secret", "progress")


class CallsLog:
    """Server middleware that appends every inbound ``tools/call`` to a JSON-lines file."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            params = dict(ctx.params or {})
            raw_headers = getattr(ctx.request, "headers", None)
            headers = {k.lower(): v for k, v in raw_headers.items()} if raw_headers is not None else None
            line = json.dumps({"tool": params.get("name"), "arguments": params.get("arguments"),
                               "headers": headers})
            # one write per line, appended: the test reads the file while the server runs
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        return await call_next(ctx)


def build_server(calls_log: Path) -> MCPServer:
    server = MCPServer("wiregate-e2e-tools", version="1.0", log_level="WARNING",
                       middleware=[CallsLog(calls_log)])

    @server.tool(structured_output=False)
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool(structured_output=False)
    def query(sql: str) -> str:
        """Run a SQL query (canned result: one row with PII)."""
        return json.dumps({"sql": sql, "rows": QUERY_ROWS})

    @server.tool(structured_output=False)
    def delete_user(id: int) -> str:
        """Delete a user by id."""
        return f"deleted user {id}"

    @server.tool(structured_output=False)
    def run_command(command: str) -> str:
        """Run a shell command (pretend: nothing is executed)."""
        return f"ran: {command}\nexit status 0"

    @server.tool(structured_output=False)
    def get_secret(name: str) -> str:
        """Fetch a named secret."""
        return f"secret {name}: aws_access_key_id={AWS_KEY_ID}"

    @server.tool(structured_output=False)
    async def progress(n: int, ctx: Context) -> str:
        """Send n progress and log notifications, 0.2 s apart, then return."""
        for k in range(n):
            if k:
                await asyncio.sleep(PROGRESS_SPACING)
            await ctx.report_progress(k + 1, n, f"step {k + 1}/{n}")
            await ctx.info(f"step {k + 1} of {n}")
        return f"done {n}"

    @server.resource("config://app", mime_type="text/plain")
    def app_config() -> str:
        """The application's configuration file."""
        return CONFIG_TEXT

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls-log", type=Path, required=True)
    parser.add_argument("--json-response", action="store_true", help="plain JSON responses instead of SSE")
    args = parser.parse_args(argv)
    # ctx.info is deprecated for the newest protocol revision; the handshake sessions used here still carry it
    warnings.simplefilter("ignore", MCPDeprecationWarning)
    args.calls_log.parent.mkdir(parents=True, exist_ok=True)
    args.calls_log.touch()
    server = build_server(args.calls_log)
    print(f"mcp_tools_server on http://{args.host}:{args.port}/mcp"
          f" ({'json' if args.json_response else 'sse'} responses)", flush=True)
    server.run("streamable-http", host=args.host, port=args.port, json_response=args.json_response,
               transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


if __name__ == "__main__":
    main()

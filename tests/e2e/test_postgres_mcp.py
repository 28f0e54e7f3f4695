"""An MCP database tool through the gateway: the reference PostgreSQL MCP server
(npm @modelcontextprotocol/server-postgres, installed by `make test`), driven by
the MCP Python SDK's own client over stdio, with the gateway's DSN as its only argument."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

try:
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # older SDKs
    from mcp.shared.exceptions import McpError

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv" / "mcp-node" / "node_modules" / ".bin" / "mcp-server-postgres"


def mcp_server() -> str:
    if not SERVER.exists():
        pytest.fail(f"{SERVER} is missing: run `make test` (it installs the reference MCP server with npm)")
    if shutil.which("node") is None:
        pytest.fail("node is missing: install Node.js (Debian package nodejs)")
    return str(SERVER)


async def call(dsn: str, tool_calls: list[tuple[str, dict]]) -> list[tuple[bool, str]]:
    params = StdioServerParameters(command=mcp_server(), args=[dsn], env=dict(os.environ))
    out = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for name, args in tool_calls:
                try:
                    result = await session.call_tool(name, args)
                except McpError as e:  # the reference server reports a failed query as a JSON-RPC error
                    out.append((True, str(e)))
                    continue
                text = "".join(getattr(c, "text", "") for c in result.content)
                out.append((bool(getattr(result, "is_error", None) or getattr(result, "isError", False)), text))
    return out


def test_mcp_query_tool_reads_and_cannot_escape_its_read_only_wrapper(gw, alice):
    # loopback without TLS: node-postgres would verify the gateway's self-signed certificate
    dsn = gw.dsn("alice", alice, "appdb", sslmode="disable")
    results = asyncio.run(asyncio.wait_for(call(dsn, [
        ("query", {"sql": "SELECT count(*) AS n FROM customers"}),
        ("query", {"sql": "COMMIT; DROP TABLE customers"}),
        ("query", {"sql": "COMMIT; TRUNCATE customers"}),
        ("query", {"sql": "SELECT name FROM customers ORDER BY id LIMIT 1"}),
    ]), 60))
    ok, text = results[0]
    assert not ok and int(json.loads(text)[0]["n"]) >= 50
    for failed, text in results[1:3]:
        assert failed and 'wiregate: blocked by rule "no-destructive-sql"' in text
    ok, text = results[3]
    assert not ok and json.loads(text)[0]["name"]

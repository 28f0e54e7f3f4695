"""HTTP through the gateway: a real aiohttp upstream and a real MCP server (the MCP Python SDK),
driven by httpx, aiohttp's WebSocket client, raw sockets and the SDK's own client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.http_services import McpServerProcess, UpstreamProcess, mcp_client
from tests.e2e.http_upstream import BINARY_BODY, USERS
from tests.e2e.mcp_tools_server import AWS_KEY_ID

try:
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # older SDKs
    from mcp.shared.exceptions import McpError

MiB = 1 << 20
UPSTREAM_CREDENTIAL = "upstream-api-key-7f3a"

RULES = [
    {"name": "no-admin-deletes", "targets": ["api"], "action": "deny",
     "match": {"http": {"method": ["DELETE"], "path": ["/echo/admin/*"]}}},
    {"name": "no-delete-tools", "targets": ["tools*"], "action": "deny", "match": {"tool": ["delete_*"]}},
    {"name": "no-rm", "targets": ["tools*"], "action": "deny",
     "match": {"tool": ["run_command"], "args": {"command": ["rm *", "re:shutdown"]}}},
    {"name": "no-destructive-sql", "action": "deny", "match": {"sql": ["DROP", "TRUNCATE"]}},
    {"name": "review-ddl", "action": "review", "match": {"sql": ["ALTER"]}, "approvers": ["dba"], "timeout": "1s"},
    {"name": "mask-pii", "action": "mask", "targets": ["api", "tools*"], "detectors": ["email", "credit_card", "aws_key"],
     "keys": ["api_token", "ssn"]},
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")).start() as up:
        yield up


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory) -> Iterator[McpServerProcess]:
    with McpServerProcess(tmp_path_factory.mktemp("mcp")).start() as srv:
        yield srv


@pytest.fixture(scope="module")
def mcp_json_server(tmp_path_factory) -> Iterator[McpServerProcess]:
    with McpServerProcess(tmp_path_factory.mktemp("mcp-json"), json_response=True).start() as srv:
        yield srv


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, mcp_server, mcp_json_server) -> Iterator[GatewayProcess]:
    targets = [
        {"name": "api", "protocol": "http", "url": upstream.url, "allow_groups": ["dev", "agents"],
         "credential_header": "X-Api-Key", "credential_env": "WG_TEST_UPSTREAM_KEY"},
        {"name": "passthru", "protocol": "http", "url": upstream.url + "/echo", "allow_groups": ["dev"],
         "forward_token": True},
        {"name": "ops", "protocol": "http", "url": upstream.url, "allow_groups": ["ops"]},
        {"name": "down", "protocol": "http", "url": "http://127.0.0.1:1", "allow_groups": ["dev"]},
        {"name": "tools", "protocol": "http", "url": mcp_server.url, "mcp": True, "allow_groups": ["agents"]},
        {"name": "tools-json", "protocol": "http", "url": mcp_json_server.url, "mcp": True,
         "allow_groups": ["agents"]},
    ]
    g = GatewayProcess(tmp_path_factory.mktemp("gw"), targets=targets, rules=RULES, postgres=False, http=True,
                       env={"WG_TEST_UPSTREAM_KEY": UPSTREAM_CREDENTIAL},
                       extra={"http": {"max_body_bytes": 32 * MiB, "header_timeout": "1s",
                                       "max_buffered_bytes": 4 * MiB}})
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def token(gw) -> str:
    return gw.token("alice", ["dev", "agents"])


@pytest.fixture(scope="module")
def client(gw, token) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        yield c


def echo(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---- identity and routing ------------------------------------------------------------------

def test_missing_and_bad_tokens_get_401_with_a_reason(gw) -> None:
    with httpx.Client(base_url=gw.http_url, timeout=10) as c:
        r = c.get("/api/echo/x")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized" and "Authorization: Bearer" in r.json()["message"]
        r = c.get("/api/echo/x", headers={"Authorization": "Basic YWxpY2U6cHc="})
        assert r.status_code == 401 and "Bearer" in r.json()["message"]
        r = c.get("/api/echo/x", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and "unknown token" in r.json()["message"]
        good = gw.token("alice", ["dev"])
        forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
        r = c.get("/api/echo/x", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and "signature" in r.json()["message"]
        assert c.get("/api/echo/x", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_unknown_target_and_group_not_allowed(client) -> None:
    r = client.get("/nope/x")
    assert r.status_code == 404 and r.json()["error"] == "unknown_target"
    r = client.get("/ops/echo/x")
    assert r.status_code == 403
    assert r.json()["message"] == 'wiregate: your groups (dev, agents) may not use target "ops"'


def test_routing_by_path_and_by_host(client) -> None:
    seen = echo(client.get("/api/echo/a/b?x=1&x=2"))
    assert seen["path"] == "/echo/a/b?x=1&x=2" and seen["method"] == "GET"
    seen = echo(client.get("/echo/by-host", headers={"Host": "api.gateway.example:8080"}))
    assert seen["path"] == "/echo/by-host"
    # a base path in the target's URL is put in front
    seen = echo(client.get("/passthru/deeper"))
    assert seen["path"] == "/echo/deeper"


def test_headers_the_upstream_sees(client, token) -> None:
    seen = echo(client.get("/api/echo/h", headers={"Connection": "X-Private, keep-alive", "X-Private": "drop me",
                                                   "Keep-Alive": "timeout=5", "TE": "trailers",
                                                   "X-Forwarded-For": "6.6.6.6", "X-Custom": "kept"}))
    h = seen["headers"]
    assert "authorization" not in h  # the caller's token stays at the gateway
    assert h["x-api-key"] == [UPSTREAM_CREDENTIAL]
    for hop in ("x-private", "keep-alive", "te"):
        assert hop not in h, hop
    assert h["x-custom"] == ["kept"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]  # a caller cannot claim another address
    assert h["x-forwarded-proto"] == ["http"] and h["via"] == ["1.1 wiregate"]
    assert h["host"][0].startswith("127.0.0.1:")
    seen = echo(client.get("/passthru/t"))
    assert seen["headers"]["authorization"] == [f"Bearer {token}"]  # forward_token = true


def test_redirects_point_back_through_the_gateway(client) -> None:
    r = client.get("/api/redirect")
    assert r.status_code == 302 and r.headers["location"] == "/api/echo/after-redirect"


# ---- policy ------------------------------------------------------------------------------------

def test_denied_method_and_path(client) -> None:
    r = client.delete("/api/echo/admin/users")
    assert r.status_code == 403
    body = r.json()
    assert body["rule"] == "no-admin-deletes"
    assert body["message"].startswith('wiregate: blocked by rule "no-admin-deletes": DELETE requests to paths')
    assert echo(client.get("/api/echo/admin/users"))["method"] == "GET"
    assert echo(client.delete("/api/echo/other"))["method"] == "DELETE"
    # spellings of the same path are decided as the path they are
    for path in ("/api/echo//admin/users", "/api/echo/./admin/users", "/api/echo/x/../admin/users",
                 "/api/echo/%61dmin/users"):
        r = client.delete(path)
        assert r.status_code == 403, path


# ---- bodies ---------------------------------------------------------------------------------------

def test_json_bodies_are_masked(client) -> None:
    r = client.get("/api/users")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    users = r.json()
    assert len(users) == len(USERS)
    for got, raw in zip(users, USERS):
        assert got["name"] == raw["name"] and got["age"] == raw["age"]
        assert got["email"] == "****" and got["card"] == "****"
        assert got["api_token"] == "****" and got["profile"]["ssn"] == "****"


def test_text_is_masked_and_binary_passes(client) -> None:
    text = client.get("/api/text").text
    assert "alice@example.com" not in text and "4111" not in text and "invoice 42" in text
    assert client.get("/api/binary").content == BINARY_BODY


def test_sse_events_arrive_as_they_are_sent_and_masked(client) -> None:
    t0 = time.monotonic()
    arrivals = []
    with client.stream("GET", "/api/sse", params={"n": 4, "interval": 0.4}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - t0, json.loads(line[5:])))
    total = time.monotonic() - t0
    assert [d["i"] for _, d in arrivals] == [0, 1, 2, 3]
    assert all(d["email"] == "****" for _, d in arrivals)
    assert arrivals[0][0] < total - 0.8  # the first event did not wait for the stream's end


def test_streamed_upload_and_download(client) -> None:
    blob = hashlib.sha256(b"seed").digest() * (16 * MiB // 32)

    def chunks():
        for i in range(0, len(blob), 1 * MiB):
            yield blob[i:i + MiB]

    seen = echo(client.post("/api/echo/upload", content=chunks()))
    assert seen["body_len"] == len(blob) and seen["body_sha256"] == hashlib.sha256(blob).hexdigest()
    seen = echo(client.put("/api/echo/put", content=blob[:3 * MiB]))
    assert seen["body_len"] == 3 * MiB
    r = client.get("/api/stream", params={"chunks": 20, "size": 100_000, "interval": 0})
    assert r.status_code == 200 and len(r.content) == 2_000_000


def test_status_codes_head_and_keep_alive(gw, token) -> None:
    # one connection for all of them: each answer must end where it ends
    with httpx.Client(base_url=gw.http_url, headers={"Authorization": f"Bearer {token}"},
                      limits=httpx.Limits(max_connections=1), timeout=10) as c:
        for code in (200, 201, 204, 304, 404, 500):
            r = c.get(f"/api/status/{code}")
            assert r.status_code == code
        r = c.head("/api/big", params={"size": 5000})
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) >= 5000
        assert c.get("/api/big", params={"size": 5000}).status_code == 200


def test_websocket_passes_through(gw, token) -> None:
    async def talk() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
            async with s.ws_connect(f"{gw.http_url}/api/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hello"
                await ws.send_bytes(b"\x00" * 300_000)
                assert (await ws.receive()).data == b"\x00" * 300_000

    asyncio.run(talk())


def test_unreachable_target_is_502(client) -> None:
    r = client.get("/down/x")
    assert r.status_code == 502 and 'cannot reach target "down"' in r.json()["message"]


# ---- MCP ---------------------------------------------------------------------------------------

def mcp(gw, token: str, target: str = "tools"):
    return mcp_client(f"{gw.http_url}/{target}/mcp", {"Authorization": f"Bearer {token}"})


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("target", ["tools", "tools-json"])
def test_mcp_tools_list_shows_only_callable_tools(gw, token, target) -> None:
    async def go() -> list[str]:
        async with mcp(gw, token, target) as s:
            return sorted(t.name for t in (await s.list_tools()).tools)

    assert run(go()) == ["echo", "get_secret", "progress", "query", "run_command"]


@pytest.mark.parametrize("target", ["tools", "tools-json"])
def test_mcp_allowed_calls_and_masked_results(gw, token, mcp_server, mcp_json_server, target) -> None:
    async def go() -> dict:
        async with mcp(gw, token, target) as s:
            out = {}
            out["echo"] = (await s.call_tool("echo", {"text": "hi there"})).content[0].text
            out["query"] = (await s.call_tool("query", {"sql": "SELECT email, ssn FROM users"})).content[0].text
            out["secret"] = (await s.call_tool("get_secret", {"name": "aws"})).content[0].text
            out["resource"] = (await s.read_resource("config://app")).contents[0].text
            out["ls"] = (await s.call_tool("run_command", {"command": "ls -l"})).content[0].text
            return out

    out = run(go())
    assert "hi there" in out["echo"]
    rows = json.loads(out["query"])
    assert rows["sql"] == "SELECT email, ssn FROM users"
    assert rows["rows"][0]["email"] == "****" and rows["rows"][0]["ssn"] == "****"
    assert AWS_KEY_ID not in out["secret"]
    assert "ops@example.com" not in out["resource"] and "region" in out["resource"]
    server = mcp_server if target == "tools" else mcp_json_server
    calls = server.calls()
    assert {"echo", "query", "get_secret", "run_command"} <= {c["tool"] for c in calls}
    # the caller's token never reached the MCP server
    assert all("authorization" not in {k.lower() for k in (c.get("headers") or {})} for c in calls)


def test_mcp_denied_calls_never_reach_the_server(gw, token, mcp_server) -> None:
    before = len(mcp_server.calls())

    async def go() -> list[str]:
        errors = []
        async with mcp(gw, token) as s:
            for name, args in (("delete_user", {"id": 7}),
                               ("query", {"sql": "SELECT 1; DROP TABLE users"}),
                               ("query", {"sql": "ALTER TABLE users ADD c int"}),
                               ("run_command", {"command": "rm -rf /srv"}),
                               ("echo", {"text": "truncate table audit"})):
                try:
                    result = await s.call_tool(name, args)
                except McpError as exc:
                    errors.append(str(exc))
                else:
                    errors.append(f"ALLOWED: {result}")
            # the session goes on after refusals
            assert "still" in (await s.call_tool("echo", {"text": "still here"})).content[0].text
        return errors

    errors = run(go())
    assert 'blocked by rule "no-delete-tools": tool "delete_user" is not allowed' in errors[0]
    assert 'blocked by rule "no-destructive-sql": DROP statements are not allowed' in errors[1]
    assert '(tool "query", argument "sql")' in errors[1]
    assert 'blocked by rule "review-ddl"' in errors[2] and "approval" in errors[2]
    assert 'blocked by rule "no-rm": argument "command" matching "rm *"' in errors[3]
    assert 'blocked by rule "no-destructive-sql"' in errors[4]
    after = mcp_server.calls()[before:]
    assert [c["tool"] for c in after] == ["echo"]


def test_mcp_progress_streams_through(gw, token) -> None:
    seen: list[float] = []

    async def go() -> tuple[float, float]:
        async def on_log(params) -> None:
            seen.append(time.monotonic())

        t0 = time.monotonic()
        async with mcp_client(f"{gw.http_url}/tools/mcp", {"Authorization": f"Bearer {token}"},
                              logging_callback=on_log) as s:
            t1 = time.monotonic()
            await s.call_tool("progress", {"n": 4})
            return t1, time.monotonic()

    t1, done = run(go())
    assert len(seen) == 4
    assert seen[0] < done - 0.4  # the first notification came while the call was still running


def test_mcp_raw_wire_errors(gw, token) -> None:
    with httpx.Client(base_url=gw.http_url, headers={"Authorization": f"Bearer {token}",
                                                     "Accept": "application/json, text/event-stream"},
                      timeout=10) as c:
        r = c.post("/tools/mcp", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = c.post("/tools/mcp", json={"id": 1, "method": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == -32600
        r = c.post("/tools/mcp", content=b"hello", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}},
                 {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "delete_user", "arguments": {"id": 1}}}]
        r = c.post("/tools/mcp", json=batch)
        assert r.status_code == 200
        answers = r.json()
        assert [a["id"] for a in answers] == [1, 2]
        assert "another call in the same batch was refused" in answers[0]["error"]["message"]
        assert answers[1]["error"]["data"]["rule"] == "no-delete-tools"


# ---- bad input -------------------------------------------------------------------------------------

def raw(gw, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection((gw.host, gw.http_port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_malformed_and_oversized_requests(gw, token, client) -> None:
    assert raw(gw, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(gw, b"GET /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               ).startswith(b"HTTP/1.1 400")
    assert raw(gw, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")[:12] in (b"HTTP/1.1 505", b"HTTP/1.1 400")
    big = b"GET /api/echo HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(gw, big).startswith(b"HTTP/1.1 431")
    head = (f"POST /api/echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {40 * MiB}\r\n\r\n").encode()
    assert raw(gw, head).startswith(b"HTTP/1.1 413")
    # still serving
    assert echo(client.get("/api/echo/after"))["path"] == "/echo/after"


def test_slow_client_is_cut_off(gw, client) -> None:
    t0 = time.monotonic()
    out = raw(gw, b"GET /api/echo HTTP/1.1\r\nHost: x\r\n", wait=10)
    assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5
    assert echo(client.get("/api/echo/ok"))["path"] == "/echo/ok"


# ---- recording ------------------------------------------------------------------------------------

def wiregate(gw, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def test_recordings_replay_and_hold_nothing_raw(gw, token) -> None:
    async def go() -> None:
        async with mcp(gw, token) as s:
            await s.call_tool("query", {"sql": "SELECT email FROM users WHERE email = 'bob@example.com'"})
            with pytest.raises(McpError):
                await s.call_tool("delete_user", {"id": 9})

    run(go())
    time.sleep(0.5)
    listing = [json.loads(line) for line in wiregate(gw, "sessions", "list", "--json").splitlines()]
    http_sessions = [s for s in listing if s["protocol"] == "http" and s["target"] == "tools"]
    assert http_sessions
    replays = "\n".join(wiregate(gw, "replay", s["id"], "--speed", "0") for s in http_sessions)
    assert "-> mcp tools/call" in replays and "<- mcp tools/call" in replays
    assert 'blocked by rule "no-delete-tools"' in replays
    assert "tool> delete_user" in replays
    state = Path(gw.workdir) / "state"
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (b"bob@example.com", b"alice@example.com", AWS_KEY_ID.encode(), token.encode(),
                           UPSTREAM_CREDENTIAL.encode()):
                assert secret not in data, (path, secret)
    assert " 0 failed" in wiregate(gw, "sessions", "verify", "--all")


def test_mcp_session_belongs_to_its_caller(gw, token) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=gw.http_url, headers=headers, timeout=10) as c:
        r = c.post("/tools-json/mcp", json=init, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        sid = r.headers["mcp-session-id"]
        other = gw.token("mallory", ["agents"])
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        r = c.post("/tools-json/mcp", json=ping, headers={"Authorization": f"Bearer {other}", "Mcp-Session-Id": sid})
        assert r.status_code == 403 and "belongs to another caller" in r.json()["message"]
        r = c.post("/tools-json/mcp", json=ping, headers={"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid,
                                                         "Mcp-Protocol-Version": "2025-06-18"})
        assert r.status_code == 200 and r.json()["result"] == {}


def test_a_broken_streamed_upload_is_the_callers_error(gw, token, client) -> None:
    with socket.create_connection((gw.host, gw.http_port), timeout=10) as s:
        s.sendall((f"POST /api/echo/up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").encode())
        time.sleep(0.3)  # the body is streaming to the target by now
        s.sendall(b"ZZ\r\nnot a chunk\r\n")
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert echo(client.get("/api/echo/still"))["path"] == "/echo/still"

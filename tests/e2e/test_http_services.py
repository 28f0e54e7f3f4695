"""The HTTP/MCP end-to-end upstreams, exercised directly (no gateway in between).

The gateway tests rely on exactly this behaviour: the fixture data, streaming
timing (SSE events and MCP notifications leave one by one), the echo's view of
the request, and the MCP calls log. If these drift, a gateway test could pass
or fail for the upstream's reasons rather than the gateway's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from tests.e2e.http_services import McpServerProcess, UpstreamProcess, mcp_client
from tests.e2e.http_upstream import BINARY_BODY, ECHO_BODY_KEEP, TEXT_BODY, USERS, sse_event, stream_chunk
from tests.e2e.mcp_tools_server import AWS_KEY_ID, CONFIG_TEXT, PROGRESS_SPACING, QUERY_ROWS, TOOL_NAMES

MiB = 1 << 20


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")).start() as up:
        yield up


@pytest.fixture(scope="module")
def client(upstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module", params=["sse", "json"])
def mcp_server(request, tmp_path_factory) -> Iterator[McpServerProcess]:
    server = McpServerProcess(tmp_path_factory.mktemp(f"mcp-{request.param}"), json_response=request.param == "json")
    with server.start():
        yield server


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


# --------------------------------------------------------------------------- plain HTTP upstream


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_echo_reports_method_raw_path_and_headers(client, method):
    body = b"" if method in ("GET", "OPTIONS") else "h\u00e9llo".encode()
    r = client.request(method, "/echo/a%20b/c?x=1&y=two%20words&x=2", content=body or None,
                       headers=[("X-Multi", "one"), ("X-Multi", "two"), ("X-Case", "Value")])
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["method"] == method
    assert echo["path"] == "/echo/a%20b/c?x=1&y=two%20words&x=2"
    assert echo["headers"]["x-multi"] == ["one", "two"]
    assert echo["headers"]["x-case"] == ["Value"]
    assert all(name == name.lower() for name in echo["headers"])
    assert echo["body"] == body.decode()
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_echo_keeps_64k_of_text_but_hashes_everything(client):
    body = b"\xff" + b"a" * (ECHO_BODY_KEEP + 5000)
    echo = client.post("/echo/big", content=body).json()
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["body"].startswith("\ufffd") and len(echo["body"]) == ECHO_BODY_KEEP
    assert echo["path"] == "/echo/big"


def test_echo_hashes_a_16_mib_chunked_upload(client):
    piece = bytes(range(256)) * 4096  # 1 MiB
    expected = hashlib.sha256(piece * 16).hexdigest()

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield piece

    r = client.post("/echo/upload", content=chunks())
    echo = r.json()
    assert echo["headers"]["transfer-encoding"] == ["chunked"]
    assert "content-length" not in echo["headers"]
    assert echo["body_len"] == 16 * MiB
    assert echo["body_sha256"] == expected


def test_users_carry_the_pii_the_masking_tests_look_for(client):
    r = client.get("/users")
    assert r.headers["content-type"].startswith("application/json")
    users = r.json()
    assert users == USERS and len(users) == 2
    assert users[0]["email"] == "alice@example.com"
    for user in users:
        assert re.fullmatch(r"[a-z]+@example\.com", user["email"])
        assert re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", user["card"])
        assert re.fullmatch(r"tok_[A-Za-z0-9]{24}", user["api_token"])
        assert isinstance(user["age"], int) and isinstance(user["name"], str)
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", user["profile"]["ssn"])
    assert users[0]["card"] == "4111 1111 1111 1111" and users[0]["profile"]["ssn"] == "123-45-6789"


def test_text_and_binary_bodies(client):
    r = client.get("/text")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == TEXT_BODY
    assert "alice@example.com" in r.text and "4111 1111 1111 1111" in r.text
    r = client.get("/binary")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == BINARY_BODY and b"bob@example.com" in r.content
    assert int(r.headers["content-length"]) == len(BINARY_BODY)


def test_sse_events_arrive_one_by_one(upstream):
    n, interval = 5, 0.3

    async def run() -> tuple[str, list[float], bytes, float]:
        arrivals: list[float] = []
        body = b""
        async with httpx.AsyncClient(timeout=10) as c:
            t0 = time.monotonic()
            async with c.stream("GET", f"{upstream.url}/sse?n={n}&interval={interval}") as r:
                ctype = r.headers["content-type"]
                async for chunk in r.aiter_raw():
                    body += chunk
                    while body.count(b"\n\n") > len(arrivals):
                        arrivals.append(time.monotonic() - t0)
            return ctype, arrivals, body, time.monotonic() - t0

    ctype, arrivals, body, total = asyncio.run(run())
    assert ctype.startswith("text/event-stream")
    assert body == b"".join(sse_event(k) for k in range(n))
    assert b'data: {"i": 3, "email": "user3@example.com"}' in body
    assert len(arrivals) == n
    assert total >= (n - 1) * interval * 0.9
    # the first event is not held back until the stream ends
    assert arrivals[0] < total - 2 * interval, (arrivals, total)
    assert all(b - a > interval / 2 for a, b in zip(arrivals, arrivals[1:])), arrivals


def test_stream_is_chunked_and_incremental(upstream):
    chunks, size, interval = 4, 3000, 0.2

    async def run() -> tuple[httpx.Headers, bytes, float, float]:
        async with httpx.AsyncClient(timeout=10) as c:
            t0 = time.monotonic()
            first = None
            body = b""
            async with c.stream("GET", f"{upstream.url}/stream?chunks={chunks}&size={size}&interval={interval}") as r:
                async for part in r.aiter_raw():
                    first = time.monotonic() - t0 if first is None else first
                    body += part
            return r.headers, body, first, time.monotonic() - t0

    headers, body, first, total = asyncio.run(run())
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/octet-stream"
    assert body == b"".join(stream_chunk(k, size) for k in range(chunks))
    assert total >= (chunks - 1) * interval * 0.9
    assert first < total - interval


def test_slow_waits(client):
    t0 = time.monotonic()
    r = client.get("/slow", params={"delay": "0.5"})
    assert r.status_code == 200 and r.json() == {"delay": 0.5}
    assert time.monotonic() - t0 >= 0.5


@pytest.mark.parametrize("code", [200, 201, 204, 304, 400, 403, 404, 500, 502, 503])
def test_status(client, code):
    r = client.get(f"/status/{code}")
    assert r.status_code == code
    if code in (204, 304):
        assert r.content == b""
    else:
        assert r.json() == {"status": code}


@pytest.mark.parametrize("path", ["/status/99", "/status/600", "/status/abc", "/sse?n=x", "/slow?delay=-1",
                                  "/stream?chunks=1e3", "/big?size=-5"])
def test_bad_arguments_are_rejected(client, path):
    assert client.get(path).status_code == 400


@pytest.mark.parametrize("size", [1000, 100_000, 2 * MiB])
def test_big_is_json_of_about_the_requested_size(client, size):
    r = client.get("/big", params={"size": size})
    assert r.headers["content-type"].startswith("application/json")
    assert size <= len(r.content) <= size + 200
    rows = r.json()["rows"]
    assert rows[-1]["email"] == f"user{len(rows) - 1}@example.com"


def test_redirect(client):
    r = client.get("/redirect")
    assert r.status_code == 302 and r.headers["location"] == "/echo/after-redirect"
    r = client.get("/redirect", follow_redirects=True)
    assert r.status_code == 200 and r.json()["path"] == "/echo/after-redirect"


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


def test_websocket_echoes_text_and_binary(upstream):
    async def run() -> list:
        got = []
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{upstream.url}/ws") as ws:
                for msg in ["hello alice@example.com", b"\x00\x01bin\xff", b"z" * MiB, "last"]:
                    await (ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg))
                    reply = await asyncio.wait_for(ws.receive(), 5)
                    got.append((reply.type, reply.data))
        return got

    got = asyncio.run(run())
    assert got == [(aiohttp.WSMsgType.TEXT, "hello alice@example.com"), (aiohttp.WSMsgType.BINARY, b"\x00\x01bin\xff"),
                   (aiohttp.WSMsgType.BINARY, b"z" * MiB), (aiohttp.WSMsgType.TEXT, "last")]


def test_upstream_log_and_process(upstream):
    assert upstream.alive() and upstream.url == f"http://127.0.0.1:{upstream.port}"
    assert "listening" in upstream.log()


# --------------------------------------------------------------------------- MCP tools server


def test_mcp_wire_mode_and_session_id(mcp_server):
    """SSE mode answers POSTs with an event stream, --json-response with a JSON body; both hand out a session."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}
    r = httpx.post(mcp_server.mcp_url, json=init, timeout=10,
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 200, r.text
    assert r.headers.get("mcp-session-id")
    ctype = r.headers["content-type"]
    if mcp_server.json_response:
        assert ctype.startswith("application/json")
        assert r.json()["result"]["serverInfo"]["name"] == "wiregate-e2e-tools"
    else:
        assert ctype.startswith("text/event-stream")
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        assert json.loads(data[-1])["result"]["serverInfo"]["name"] == "wiregate-e2e-tools"
    # a request on a made-up session is refused, so the session id is really checked
    r = httpx.post(mcp_server.mcp_url, timeout=10, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream", "Mcp-Session-Id": "not-a-session",
                            "Mcp-Protocol-Version": "2025-06-18"})
    assert r.status_code in (400, 404)


def test_mcp_tools_resource_and_calls_log(mcp_server):
    token = "Bearer caller-token-123"

    async def run() -> dict:
        out: dict = {}
        async with mcp_client(mcp_server.mcp_url, {"Authorization": token}) as s:
            out["tools"] = {t.name: t for t in (await s.list_tools()).tools}
            out["echo"] = await s.call_tool("echo", {"text": "hi bob@example.com"})
            out["query"] = await s.call_tool("query", {"sql": "SELECT * FROM users"})
            out["delete_user"] = await s.call_tool("delete_user", {"id": 7})
            out["run_command"] = await s.call_tool("run_command", {"command": "rm -rf /tmp/x"})
            out["get_secret"] = await s.call_tool("get_secret", {"name": "aws"})
            out["unknown"] = await s.call_tool("no_such_tool", {"a": 1})
            out["resources"] = [str(r.uri) for r in (await s.list_resources()).resources]
            out["config"] = await s.read_resource("config://app")
        async with mcp_client(mcp_server.mcp_url, {}) as s:
            out["anonymous"] = await s.call_tool("echo", {"text": "no token"})
        return out

    before = len(mcp_server.calls())
    out = asyncio.run(asyncio.wait_for(run(), 30))

    tools = out["tools"]
    assert set(tools) == set(TOOL_NAMES)
    assert tools["delete_user"].input_schema["properties"]["id"]["type"] == "integer"
    assert tools["query"].input_schema["required"] == ["sql"]
    assert text_of(out["echo"]) == "hi bob@example.com"
    assert json.loads(text_of(out["query"])) == {"sql": "SELECT * FROM users", "rows": QUERY_ROWS}
    assert "alice@example.com" in text_of(out["query"]) and "123-45-6789" in text_of(out["query"])
    assert text_of(out["delete_user"]) == "deleted user 7"
    assert "rm -rf /tmp/x" in text_of(out["run_command"])
    assert AWS_KEY_ID in text_of(out["get_secret"])
    for name in ("echo", "query", "delete_user", "run_command", "get_secret", "anonymous"):
        assert not out[name].is_error, name
    assert out["unknown"].is_error
    assert "config://app" in out["resources"]
    [content] = out["config"].contents
    assert content.text == CONFIG_TEXT and "ops@example.com" in content.text

    calls = mcp_server.calls()[before:]
    assert [(c["tool"], c["arguments"]) for c in calls] == [
        ("echo", {"text": "hi bob@example.com"}), ("query", {"sql": "SELECT * FROM users"}),
        ("delete_user", {"id": 7}), ("run_command", {"command": "rm -rf /tmp/x"}), ("get_secret", {"name": "aws"}),
        ("no_such_tool", {"a": 1}), ("echo", {"text": "no token"})]
    for c in calls[:-1]:
        assert c["headers"]["authorization"] == token
        assert c["headers"]["mcp-session-id"]
    assert "authorization" not in calls[-1]["headers"]
    assert calls[-1]["headers"]["mcp-session-id"] != calls[0]["headers"]["mcp-session-id"]


def test_mcp_progress_notifications(mcp_server):
    n = 4

    async def run() -> tuple[str, list[float], list[float], float]:
        progress: list[float] = []
        logs: list[float] = []
        t0 = time.monotonic()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(time.monotonic() - t0)

        async def on_log(params) -> None:
            logs.append(time.monotonic() - t0)

        async with mcp_client(mcp_server.mcp_url, {}, logging_callback=on_log) as s:
            t0 = time.monotonic()
            result = await s.call_tool("progress", {"n": n}, progress_callback=on_progress)
            done = time.monotonic() - t0
        return text_of(result), progress, logs, done

    text, progress, logs, done = asyncio.run(asyncio.wait_for(run(), 30))
    assert text == f"done {n}"
    assert done >= (n - 1) * PROGRESS_SPACING * 0.9
    if mcp_server.json_response:
        # one JSON body per POST has no room for notifications: the SDK (2.3) drops them. Gateway tests that
        # use JSON mode as the "nothing streams" case rely on this; if it changes, they need a look.
        assert progress == [] and logs == [], (progress, logs, done)
    else:
        assert len(progress) == n and len(logs) == n
        # the SSE response streams: the first notification is not held back until the result
        assert progress[0] < done - 2 * PROGRESS_SPACING, (progress, done)
        assert logs[0] < done - 2 * PROGRESS_SPACING, (logs, done)

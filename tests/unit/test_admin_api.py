"""gateway.admin: the admin API served in-process, with a real Authenticator and dev tokens.

The broker and the store are small stand-ins implementing the methods the admin API calls (the
real ones have their own tests); the server runs on its own event loop in a thread so that the
tests can talk to it with plain sockets and httpx, as a client on another host would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.admin import AdminServer
from gateway.approval import ApprovalError, ApprovalRecord
from gateway.config import Config, GatewaySection, IdentitySection
from gateway.identity import Authenticator, Identity, groups_match, issue_dev_token
from gateway.metrics import Metrics
from recorder.events import Seal
from recorder.index import SessionRow

APPROVER_GROUPS = ["approvers"]


# ---- stand-ins ------------------------------------------------------------------------------

class FakeBroker:
    """Keeps records in a dict and decides as gateway/broker.py promises to."""

    def __init__(self) -> None:
        self.records: dict[str, ApprovalRecord] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None

    def add(self, id: str, requester: str = "alice", *, status: str = "pending", created: float | None = None,
            command: str = "UPDATE accounts SET balance = 0", **extra: Any) -> ApprovalRecord:
        now = time.time()
        rec = ApprovalRecord(id=id, requester=requester, groups=("dev",), target=extra.pop("target", "prod-db"),
                             protocol="postgres", kind="sql", command=command, fingerprint="sql:abc",
                             rule=extra.pop("rule", "prod-writes"), approvers=tuple(APPROVER_GROUPS),
                             session_id="s-1", instance="gw-1", created=created if created is not None else now - 90,
                             expires=now + 300, status=status, **extra)  # type: ignore[arg-type]
        self.records[id] = rec
        return rec

    def may_approve(self, identity: Identity) -> bool:
        return groups_match(identity.groups, APPROVER_GROUPS)

    async def list_requests(self, status: str | None = "pending") -> list[ApprovalRecord]:
        self.calls.append(("list", status))
        if self.fail is not None:
            raise self.fail
        recs = [r for r in self.records.values() if status is None or r.status == status]
        return sorted(recs, key=lambda r: r.created, reverse=True)

    async def get(self, approval_id: str) -> ApprovalRecord:
        if approval_id in self.records:
            return self.records[approval_id]
        found = [r for k, r in self.records.items() if k.startswith(approval_id)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ApprovalError(400, f"{approval_id!r} names {len(found)} requests; give more of the id")
        raise ApprovalError(404, f"no approval request {approval_id!r}")

    async def _decidable(self, approval_id: str, approver: Identity) -> ApprovalRecord:
        rec = await self.get(approval_id)
        if approver.name == rec.requester:
            raise ApprovalError(403, f"{rec.id}: nobody approves or denies their own request")
        if not groups_match(approver.groups, rec.approvers):
            raise ApprovalError(403, f"{rec.id}: {approver.name} is not an approver for rule {rec.rule!r}")
        if rec.status != "pending":
            raise ApprovalError(409, f"{rec.id} is already {rec.status}")
        return rec

    async def approve(self, approval_id: str, approver: Identity, for_seconds: float | None = None) -> ApprovalRecord:
        self.calls.append(("approve", approval_id, approver, for_seconds))
        rec = await self._decidable(approval_id, approver)
        now = time.time()
        rec.status, rec.decided_by, rec.decided_at = "approved", approver.name, now
        rec.grant_until = now + for_seconds if for_seconds else None
        return rec

    async def deny(self, approval_id: str, approver: Identity, reason: str | None = None) -> ApprovalRecord:
        self.calls.append(("deny", approval_id, approver, reason))
        rec = await self._decidable(approval_id, approver)
        rec.status, rec.decided_by, rec.decided_at, rec.reason = "denied", approver.name, time.time(), reason
        return rec


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[SessionRow] = []
        self.calls: list[dict[str, Any]] = []

    async def list_sessions(self, *, identity: str | None = None, target: str | None = None,
                            protocol: str | None = None, limit: int = 100) -> list[SessionRow]:
        self.calls.append({"identity": identity, "target": target, "protocol": protocol, "limit": limit})
        rows = [r for r in self.rows if (identity is None or r.identity == identity)
                and (target is None or r.target == target) and (protocol is None or r.protocol == protocol)]
        return rows[:limit]

    async def get_session(self, session_id: str) -> SessionRow | None:
        found = [r for r in self.rows if r.id == session_id or r.id.startswith(session_id)]
        return found[0] if len(found) == 1 else None


def session_row(id: str, identity: str = "alice", *, sealed: bool = False) -> SessionRow:
    seal = Seal(session_id=id, frames=12, last_hash=b"\x01" * 32, key_id="rk-1", signature=b"\x02" * 64) if sealed else None
    return SessionRow(id=id, identity=identity, groups=("dev",), target="prod-db", protocol="postgres",
                      client="10.0.0.5:5555", tls=True, instance="gw-1", auth="dev", started=1_700_000_000.0,
                      ended=1_700_000_060.0 if sealed else None, path=f"/state/recordings/{id}.wgr",
                      frames=12, commands=3, denied=1, sealed=sealed, seal=seal)


# ---- the harness ----------------------------------------------------------------------------

class AdminHarness:
    """An AdminServer on 127.0.0.1:<free port>, on its own loop in a daemon thread."""

    def __init__(self, state_dir: Path) -> None:
        self.cfg = Config(gateway=GatewaySection(state_dir=str(state_dir)),
                          identity=IdentitySection(dev_tokens=True, admin_groups=["admins", "sre-*"]))
        self.broker = FakeBroker()
        self.store = FakeStore()
        self.metrics = Metrics()
        self.health: Any = {"status": "ok", "instance": "gw-1"}
        self.depth: int | None = 3
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="admin-api-test", daemon=True)
        self.thread.start()
        self.server = AdminServer(self.cfg, Authenticator(self.cfg), self.broker, self.store, self.metrics,
                                  health=lambda: self.health, recorder_queue_depth=lambda: self.depth)
        self.run(self.server.start("127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens = {
            "admin": self.token("root", ["admins"]),
            "sre": self.token("sam", ["sre-oncall"]),
            "approver": self.token("bob", ["approvers"]),
            "alice": self.token("alice", ["dev", "approvers"]),
            "nobody": self.token("eve", ["dev"]),
        }

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def token(self, sub: str, groups: list[str]) -> str:
        return issue_dev_token(self.cfg, sub=sub, groups=groups, ttl_seconds=3600)

    def reset(self) -> None:
        self.broker.__init__()  # type: ignore[misc]
        self.store.__init__()  # type: ignore[misc]
        self.health = {"status": "ok", "instance": "gw-1"}
        self.depth = 3
        self.server.reload(self.cfg)
        self.server.header_timeout = 10.0

    def close(self) -> None:
        self.run(self.server.close(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminHarness]:
    h = AdminHarness(tmp_path_factory.mktemp("admin-state"))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture()
def h(harness: AdminHarness) -> Iterator[AdminHarness]:
    harness.reset()
    yield harness


@pytest.fixture()
def client(h: AdminHarness) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=h.url, timeout=10, trust_env=False) as c:
        yield c


def auth(h: AdminHarness, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.tokens[who]}"}


def raw(h: AdminHarness, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", h.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response (Content-Length framed) from ``sock``; leftovers stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response head"
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    del buf[:len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers["content-length"])
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


# ---- /healthz -------------------------------------------------------------------------------

def test_healthz_needs_no_token_and_reports_unhealthy_as_503(h: AdminHarness, client: httpx.Client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "instance": "gw-1"}
    assert r.headers["content-type"] == "application/json"
    h.health = {"status": "draining"}
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "draining"
    h.health = None  # a broken health callback is a 503, not a crash
    assert client.get("/healthz").status_code == 503
    h.health = {"status": "ok"}
    r = client.head("/healthz")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0
    r = client.post("/healthz")
    assert r.status_code == 405 and "GET" in r.headers["allow"]


# ---- authentication and authorization -------------------------------------------------------

@pytest.mark.parametrize("path", ["/metrics", "/api/sessions", "/api/approvals", "/api/approvals/ap-1", "/nope"])
def test_missing_token_is_401_with_www_authenticate(client: httpx.Client, path: str):
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["error"]


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic YWxpY2U6cHc=", "Bearer", "Bearer a.b.c"])
def test_bad_token_is_401(client: httpx.Client, header: str):
    r = client.get("/api/approvals", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]


def test_token_from_another_gateway_is_401(h: AdminHarness, client: httpx.Client, tmp_path: Path):
    other = Config(gateway=GatewaySection(state_dir=str(tmp_path)), identity=IdentitySection(dev_tokens=True))
    token = issue_dev_token(other, sub="root", groups=["admins"], ttl_seconds=600)
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "signature" in r.json()["error"]
    assert token not in r.text


@pytest.mark.parametrize("method,path", [("GET", "/metrics"), ("GET", "/api/sessions"), ("GET", "/api/sessions/s1"),
                                         ("GET", "/api/approvals"), ("POST", "/api/approvals/ap-1/approve"),
                                         ("GET", "/nope")])
def test_neither_admin_nor_approver_is_403(h: AdminHarness, client: httpx.Client, method: str, path: str):
    h.broker.add("ap-1")
    r = client.request(method, path, headers=auth(h, "nobody"))
    assert r.status_code == 403 and "eve" in r.json()["error"]
    assert h.broker.records["ap-1"].status == "pending"


def test_approver_may_use_approvals_only(h: AdminHarness, client: httpx.Client):
    h.broker.add("ap-1")
    h.store.rows = [session_row("s1")]
    hdr = auth(h, "approver")
    assert client.get("/api/approvals", headers=hdr).status_code == 200
    assert client.get("/api/approvals/ap-1", headers=hdr).status_code == 200
    for path in ("/metrics", "/api/sessions", "/api/sessions/s1"):
        r = client.get(path, headers=hdr)
        assert r.status_code == 403, path
        assert "admin_groups" in r.json()["error"]
    assert h.store.calls == []
    r = client.post("/api/approvals/ap-1/approve", headers=hdr)
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["decided_by"] == "bob"


def test_admin_reaches_every_endpoint(h: AdminHarness, client: httpx.Client):
    h.broker.add("ap-1")
    h.store.rows = [session_row("s1", sealed=True)]
    for who in ("admin", "sre"):  # a literal group and a pattern in admin_groups
        hdr = auth(h, who)
        for path in ("/metrics", "/api/sessions", "/api/sessions/s1", "/api/approvals", "/api/approvals/ap-1"):
            assert client.get(path, headers=hdr).status_code == 200, (who, path)


def test_reload_changes_who_is_admin(h: AdminHarness, client: httpx.Client):
    hdr = auth(h, "nobody")
    assert client.get("/metrics", headers=hdr).status_code == 403
    h.server.reload(Config(gateway=h.cfg.gateway, identity=IdentitySection(dev_tokens=True, admin_groups=["dev"])))
    assert client.get("/metrics", headers=hdr).status_code == 200
    assert client.get("/metrics", headers=auth(h, "admin")).status_code == 403


# ---- endpoints ------------------------------------------------------------------------------

def test_metrics_endpoint(h: AdminHarness, client: httpx.Client):
    h.metrics.session_opened("postgres", "prod-db")
    r = client.get("/metrics", headers=auth(h, "admin"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'wiregate_sessions_open{protocol="postgres",target="prod-db"} 1' in r.text.splitlines()
    assert "wiregate_recorder_queue_depth 3" in r.text.splitlines()
    h.depth = None
    r = client.get("/metrics", headers=auth(h, "admin"))
    assert not any(ln.startswith("wiregate_recorder_queue_depth ") for ln in r.text.splitlines())


def test_sessions_list_filters_and_limits(h: AdminHarness, client: httpx.Client):
    h.store.rows = [session_row("s1"), session_row("s2", "bob", sealed=True)]
    hdr = auth(h, "admin")
    r = client.get("/api/sessions", headers=hdr)
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["sessions"]] == ["s1", "s2"]
    assert h.store.calls[-1] == {"identity": None, "target": None, "protocol": None, "limit": 100}
    r = client.get("/api/sessions", params={"identity": "bob", "target": "prod-db", "protocol": "postgres",
                                            "limit": "5"}, headers=hdr)
    assert [s["id"] for s in r.json()["sessions"]] == ["s2"]
    assert h.store.calls[-1] == {"identity": "bob", "target": "prod-db", "protocol": "postgres", "limit": 5}
    for query in ("limit=0", "limit=1001", "limit=abc", "bogus=1", "identity=a&identity=b"):
        r = client.get(f"/api/sessions?{query}", headers=hdr)
        assert r.status_code == 400, query
        assert r.json()["error"]


def test_session_show_renders_the_seal_as_a_small_dict(h: AdminHarness, client: httpx.Client):
    h.store.rows = [session_row("s-abc", sealed=True), session_row("s-def")]
    hdr = auth(h, "admin")
    doc = client.get("/api/sessions/s-abc", headers=hdr).json()
    assert doc["id"] == "s-abc" and doc["sealed"] is True and doc["groups"] == ["dev"]
    assert doc["seal"] == {"key_id": "rk-1", "frames": 12, "last_hash": "01" * 32}
    assert client.get("/api/sessions/s-def", headers=hdr).json()["seal"] is None
    r = client.get("/api/sessions/s-zzz", headers=hdr)
    assert r.status_code == 404 and "s-zzz" in r.json()["error"]


def test_approvals_list_and_status_filter(h: AdminHarness, client: httpx.Client):
    h.broker.add("ap-old", created=time.time() - 500)
    h.broker.add("ap-new")
    h.broker.add("ap-done", status="denied")
    hdr = auth(h, "approver")
    r = client.get("/api/approvals", headers=hdr)
    assert [a["id"] for a in r.json()["approvals"]] == ["ap-new", "ap-old"]
    assert h.broker.calls[-1] == ("list", "pending")
    first = r.json()["approvals"][0]
    assert first["requester"] == "alice" and first["approvers"] == APPROVER_GROUPS and first["status"] == "pending"
    r = client.get("/api/approvals?status=all", headers=hdr)
    assert {a["id"] for a in r.json()["approvals"]} == {"ap-old", "ap-new", "ap-done"}
    assert h.broker.calls[-1] == ("list", None)
    assert client.get("/api/approvals?status=denied", headers=hdr).json()["approvals"][0]["id"] == "ap-done"
    r = client.get("/api/approvals?status=maybe", headers=hdr)
    assert r.status_code == 400 and "status" in r.json()["error"]


def test_approve_with_for_passes_the_tokens_identity(h: AdminHarness, client: httpx.Client,
                                                     caplog: pytest.LogCaptureFixture):
    h.broker.add("ap-123456")
    token = h.tokens["approver"]
    with caplog.at_level(logging.INFO, logger="wiregate.admin"):
        r = client.post("/api/approvals/ap-1234/approve", json={"for": "30m"}, headers=auth(h, "approver"))
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == "ap-123456" and doc["status"] == "approved"
    assert doc["grant_until"] - doc["decided_at"] == pytest.approx(1800)
    _, approval_id, approver, for_seconds = h.broker.calls[-1]
    assert approval_id == "ap-1234" and for_seconds == 1800
    assert isinstance(approver, Identity) and approver.name == "bob" and approver.groups == ("approvers",)
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "wiregate.admin"]
    assert any("bob" in m and "approved ap-123456 for 30m" in m for m in logged)
    assert not any(token in m for m in caplog.messages)


def test_deny_with_reason(h: AdminHarness, client: httpx.Client, caplog: pytest.LogCaptureFixture):
    h.broker.add("ap-9")
    with caplog.at_level(logging.INFO, logger="wiregate.admin"):
        r = client.post("/api/approvals/ap-9/deny", json={"reason": "not during the freeze"}, headers=auth(h, "admin"))
        # the admin is no approver of this rule: the broker refuses, the API passes its status on
        assert r.status_code == 403 and "not an approver" in r.json()["error"]
        r = client.post("/api/approvals/ap-9/deny", json={"reason": "not during the freeze"},
                        headers=auth(h, "approver"))
    assert r.status_code == 200 and r.json()["status"] == "denied" and r.json()["reason"] == "not during the freeze"
    assert h.broker.calls[-1][3] == "not during the freeze"
    assert any("bob" in m and "denied" in m and "ap-9" in m for m in caplog.messages)


def test_approval_errors_map_to_their_status(h: AdminHarness, client: httpx.Client):
    h.broker.add("ap-own", requester="alice")
    h.broker.add("ap-done", status="approved")
    h.broker.add("ap-x1")
    h.broker.add("ap-x2")
    cases = [
        ("alice", "/api/approvals/ap-own/approve", 403, "own request"),
        ("approver", "/api/approvals/ap-none/approve", 404, "no approval request"),
        ("approver", "/api/approvals/ap-done/deny", 409, "already approved"),
        ("approver", "/api/approvals/ap-x/approve", 400, "names 2 requests"),
    ]
    for who, path, status, text in cases:
        r = client.post(path, headers=auth(h, who))
        assert r.status_code == status, path
        assert text in r.json()["error"]
    r = client.get("/api/approvals/ap-none", headers=auth(h, "approver"))
    assert r.status_code == 404
    for bad in ("%ff%fe", "%0a", "a" * 200):
        r = client.get(f"/api/approvals/{bad}", headers=auth(h, "approver"))
        assert r.status_code == 400 and "invalid id" in r.json()["error"], bad
    assert h.broker.records["ap-own"].status == "pending"


@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "invalid request body"),
    (b'{"for": "soon"}', "not a duration"),
    (b'{"for": "0s"}', "longer than 0s"),
    (b'{"for": true}', "invalid request body"),
    (b'{"for": "30m", "extra": 1}', "extra"),
    (b"\xff\xfe", "not JSON"),
])
def test_bad_approve_bodies_are_400(h: AdminHarness, client: httpx.Client, body: bytes, fragment: str):
    h.broker.add("ap-1")
    r = client.post("/api/approvals/ap-1/approve", content=body,
                    headers={**auth(h, "approver"), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    assert h.broker.records["ap-1"].status == "pending"


def test_unknown_path_and_wrong_method(h: AdminHarness, client: httpx.Client):
    hdr = auth(h, "admin")
    for path in ("/api", "/api/nothing", "/api/approvals/ap-1/maybe", "/api/sessions/a/b"):
        r = client.get(path, headers=hdr)
        assert r.status_code == 404, path
        assert r.json()["error"].startswith("no such endpoint")
    r = client.post("/metrics", headers=hdr)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = client.get("/api/approvals/ap-1/approve", headers=hdr)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.delete("/api/approvals", headers=hdr)
    assert r.status_code == 405


def test_internal_errors_are_500_and_the_server_keeps_serving(h: AdminHarness, client: httpx.Client):
    h.broker.fail = RuntimeError("database on fire")
    r = client.get("/api/approvals", headers=auth(h, "admin"))
    assert r.status_code == 500 and "fire" not in r.text
    h.broker.fail = None
    assert client.get("/api/approvals", headers=auth(h, "admin")).status_code == 200


# ---- HTTP/1.1 on the wire -------------------------------------------------------------------

def test_keep_alive_serves_two_requests_on_one_connection(h: AdminHarness):
    token = h.tokens["admin"].encode()
    req = (b"GET /api/approvals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        buf = bytearray()
        s.sendall(req)
        status, headers, body = read_response(s, buf)
        assert status == 200 and "connection" not in headers and json.loads(body) == {"approvals": []}
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(s, buf)
        assert status == 200 and json.loads(body)["status"] == "ok"
        # two pipelined requests in one segment, the second one asking to close
        s.sendall(req + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_response(s, buf)[0] == 200
        status, headers, _ = read_response(s, buf)
        assert status == 200 and headers["connection"] == "close"
        assert s.recv(10) == b""


def test_post_body_split_across_segments(h: AdminHarness):
    h.broker.add("ap-1")
    body = b'{"for": "1h"}'
    head = (f"POST /api/approvals/ap-1/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {h.tokens['approver']}\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body[:5])
        time.sleep(0.05)
        s.sendall(body[5:])
        status, _, resp = read_response(s, bytearray())
    assert status == 200 and json.loads(resp)["status"] == "approved"
    assert h.broker.calls[-1][3] == 3600


@pytest.mark.parametrize("garbage", [
    b"HELLO\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # a TLS hello
    b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_garbage_gets_400_and_the_server_still_serves(h: AdminHarness, client: httpx.Client, garbage: bytes):
    reply = raw(h, garbage)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert b"Connection: close" in reply
    assert "error" in json.loads(reply.partition(b"\r\n\r\n")[2])
    assert client.get("/healthz").status_code == 200


def test_bad_request_after_a_good_pipelined_one(h: AdminHarness):
    reply = raw(h, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nNONSENSE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 400 " in reply


def test_oversized_body_is_413(h: AdminHarness):
    head = (f"POST /api/approvals/ap-1/deny HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {h.tokens['admin']}\r\n"
            f"Content-Length: {64 * 1024 + 1}\r\n\r\n").encode()
    assert raw(h, head).startswith(b"HTTP/1.1 413 ")
    chunked = (f"POST /api/approvals/ap-1/deny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{64 * 1024 + 1:x}\r\n").encode() + b"x" * (64 * 1024 + 1) + b"\r\n0\r\n\r\n"
    assert raw(h, chunked).startswith(b"HTTP/1.1 413 ")


def test_slow_head_times_out_with_408(h: AdminHarness, client: httpx.Client):
    h.server.header_timeout = 0.3
    started = time.monotonic()
    reply = raw(h, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3
    assert client.get("/healthz").status_code == 200


def test_http10_and_upgrade(h: AdminHarness):
    reply = raw(h, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in reply
    reply = raw(h, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_never_take_the_server_down(harness: AdminHarness, data: bytes):
    try:
        with socket.create_connection(("127.0.0.1", harness.port), timeout=5) as s:
            s.sendall(data + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
    except ConnectionResetError:
        reply = b""
    assert reply == b"" or reply.startswith(b"HTTP/1.1 ")
    with socket.create_connection(("127.0.0.1", harness.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(12) == b"HTTP/1.1 200"


def test_close_ends_idle_connections(tmp_path: Path):
    other = AdminHarness(tmp_path)
    s = socket.create_connection(("127.0.0.1", other.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s, bytearray())[0] == 200
        started = time.monotonic()
        other.close()
        assert time.monotonic() - started < 1.0  # the idle keep-alive connection did not hold it up
        assert s.recv(10) == b""
    finally:
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", other.port), timeout=1).close()

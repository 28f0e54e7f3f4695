"""Just-in-time approvals end to end: a real gateway process in front of a throwaway PostgreSQL,
Debian's sshd and an aiohttp upstream; held statements from psycopg, held exec commands from
OpenSSH's ssh, held HTTP requests from httpx; decisions through the admin API, the
`wiregate approvals` CLI and the webhooks a local receiver collects."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.http_services import McpServerProcess, UpstreamProcess, mcp_client
from tests.e2e.ssh_gateway import Caller

RULES = [
    {"name": "review-ddl", "targets": ["appdb"], "match": {"sql": ["ALTER", "CREATE"]}, "action": "review",
     "approvers": ["dba"], "timeout": "30s"},
    {"name": "review-comments", "targets": ["appdb"], "match": {"sql": ["COMMENT"]}, "action": "review",
     "approvers": ["dba"], "timeout": "2s"},
    {"name": "review-restarts", "targets": ["web"], "match": {"command": ["touch *"]}, "action": "review",
     "approvers": ["dba"], "timeout": "30s"},
    {"name": "review-deploys", "targets": ["api"], "match": {"http": {"method": ["POST"], "path": ["/echo/deploy*"]}},
     "action": "review", "approvers": ["dba"], "timeout": "30s"},
    {"name": "review-commands", "targets": ["tools"], "match": {"tool": ["run_command"]}, "action": "review",
     "approvers": ["dba"], "timeout": "30s"},
]


class Webhooks:
    """A local receiver for the approval webhooks."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hooks.received.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, approval_id: str) -> list[dict]:
        return [m for m in self.received if m["approval"]["id"] == approval_id]


@pytest.fixture(scope="module")
def hooks() -> Iterator[Webhooks]:
    h = Webhooks()
    yield h
    h.server.shutdown()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")).start() as up:
        yield up


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory) -> Iterator[McpServerProcess]:
    with McpServerProcess(tmp_path_factory.mktemp("mcp")).start() as srv:
        yield srv


@pytest.fixture(scope="module")
def g(pg, sshd, upstream, mcp_server, hooks, tmp_path_factory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("approvals")
    caller = Caller(workdir, "alice")
    targets = [pg_target("appdb", pg, allow_groups=["dev", "dba"]),
               {"name": "web", "protocol": "ssh", "address": f"127.0.0.1:{sshd.port}", "user": "root",
                "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "allow_groups": ["dev"]},
               {"name": "api", "protocol": "http", "url": upstream.url, "allow_groups": ["dev"]},
               {"name": "tools", "protocol": "http", "url": mcp_server.url, "mcp": True, "allow_groups": ["dev"]}]
    rules = [dict(r) for r in RULES]
    rules[0]["webhook"] = hooks.url  # a rule's own webhook, next to the global one
    gw = GatewayProcess(workdir / "gw", targets=targets, rules=rules, ssh=True, http=True, admin=True,
                        users=[{"name": "alice", "groups": ["dev"], "ssh_keys": [caller.public_line]}],
                        identity={"admin_groups": ["wiregate-admins"]},
                        extra={"approvals": {"webhook": hooks.url, "webhook_token_env": "WG_TEST_HOOK_TOKEN"}},
                        env={PW_ENV: pg.app_password, "WG_TEST_HOOK_TOKEN": "hook-secret"}).start()
    gw.caller = caller  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tokens(g) -> dict[str, str]:
    return {"alice": g.token("alice", ["dev"]), "bob": g.token("bob", ["dba", "wiregate-admins"]),
            "carol": g.token("carol", ["dba"]), "dave": g.token("dave", ["dev"]),
            "erin": g.token("erin", ["dev", "dba"])}


def api(g, token: str | None, method: str, path: str, body: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, g.admin_url + path, headers=headers, json=body, timeout=10)


def pending(g, token: str, *, requester: str, timeout: float = 10) -> dict:
    """The newest pending request of ``requester``, waiting for it to appear."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in api(g, token, "GET", "/api/approvals").json()["approvals"]:
            if item["requester"] == requester and item["status"] == "pending":
                return item
        time.sleep(0.05)
    raise AssertionError(f"no pending request of {requester} within {timeout}s")


class Held(threading.Thread):
    """Run statements on one psycopg connection in a thread; notices and the outcome are kept."""

    def __init__(self, dsn: str, *statements: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        self.statements = statements
        self.error: psycopg.Error | None = None
        self.results: list = []
        self.finished = 0.0

    def run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                for statement in self.statements:
                    cur.execute(statement)
                    self.results.append(cur.statusmessage)
        except psycopg.Error as e:
            self.error = e
        self.finished = time.monotonic()


def columns(pg, table: str) -> set[str]:
    out = pg.psql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'", dbname="app")
    return set(out.split())


def test_approved_statement_runs_and_the_session_goes_on(g, pg, tokens, hooks) -> None:
    held = Held(g.dsn("alice", tokens["alice"], "appdb"), "ALTER TABLE items ADD COLUMN approved_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="alice")
    assert request["command"] == "ALTER TABLE items ADD COLUMN approved_1 int"
    assert request["rule"] == "review-ddl" and request["target"] == "appdb" and request["protocol"] == "postgres"
    assert request["approvers"] == ["dba"] and request["groups"] == ["dev"]
    time.sleep(0.3)
    assert held.is_alive(), "the statement must wait for the approval"
    assert "approved_1" not in columns(pg, "items")
    # the client was told which request, and how to approve it
    assert any(request["id"] in n and "wiregate approvals approve" in n for n in held.notices), held.notices
    answer = api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/approve")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "approved" and answer.json()["decided_by"] == "bob"
    held.join(10)
    assert held.error is None and held.results == ["ALTER TABLE"]
    assert "approved_1" in columns(pg, "items")
    # the same connection goes on
    with held.conn.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM items").fetchone()[0] > 0
    held.conn.close()
    # webhooks: created and decided, JSON with a Slack-style text, the global hook's token; the
    # rule's webhook is the same URL here, so each event arrives once
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(hooks.events(request["id"])) < 2:
        time.sleep(0.05)
    events = hooks.events(request["id"])
    assert [e["event"] for e in events] == ["approval.requested", "approval.decided"]
    assert "alice" in events[0]["text"] and request["id"] in events[0]["text"]
    assert "approved by *bob*" in events[1]["text"]
    assert all(e["auth"] == "Bearer hook-secret" for e in events)


def test_denied_statement_fails_with_42501_and_the_reason(g, pg, tokens) -> None:
    held = Held(g.dsn("alice", tokens["alice"], "appdb"), "ALTER TABLE items ADD COLUMN denied_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="alice")
    answer = api(g, tokens["carol"], "POST", f"/api/approvals/{request['id']}/deny", {"reason": "not during the freeze"})
    assert answer.status_code == 200, answer.text
    held.join(10)
    assert isinstance(held.error, psycopg.errors.InsufficientPrivilege)
    assert held.error.sqlstate == "42501"
    message = held.error.diag.message_primary
    assert request["id"] in message and "denied by carol" in message and "not during the freeze" in message
    assert "denied_1" not in columns(pg, "items")
    with held.conn.cursor() as cur:  # still usable
        assert cur.execute("SELECT 1").fetchone() == (1,)
    held.conn.close()


def test_timeout_fails_with_42501(g, tokens) -> None:
    started = time.monotonic()
    held = Held(g.dsn("alice", tokens["alice"], "appdb"), "COMMENT ON TABLE items IS 'x'")
    held.start()
    held.join(15)
    assert held.error is not None and held.error.sqlstate == "42501"
    assert "timed out after 2s" in held.error.diag.message_primary
    assert 1.5 < held.finished - started < 8
    held.conn.close()
    records = api(g, tokens["bob"], "GET", "/api/approvals?status=all").json()["approvals"]
    assert any(r["rule"] == "review-comments" and r["status"] == "expired" for r in records)


def test_nobody_approves_their_own_request_nor_a_non_approver(g, pg, tokens) -> None:
    held = Held(g.dsn("erin", tokens["erin"], "appdb"), "ALTER TABLE items ADD COLUMN self_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="erin")
    own = api(g, tokens["erin"], "POST", f"/api/approvals/{request['id']}/approve")
    assert own.status_code == 403 and "own request" in own.json()["error"]
    outsider = api(g, tokens["dave"], "POST", f"/api/approvals/{request['id']}/approve")
    assert outsider.status_code == 403
    assert held.is_alive()
    assert api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/deny").status_code == 200
    held.join(10)
    assert held.error is not None and "self_1" not in columns(pg, "items")
    # a decided request cannot be decided again
    again = api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/approve")
    assert again.status_code == 409
    held.conn.close()


def test_a_requester_who_disconnects_withdraws_the_request(g, pg, tokens) -> None:
    held = Held(g.dsn("dave", tokens["dave"], "appdb"), "ALTER TABLE items ADD COLUMN gone_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="dave")
    # cut the client's connection under it, as a crashed client's would be (shutdown on a
    # duplicate: the descriptor psycopg holds stays its own)
    cut = socket.socket(fileno=os.dup(held.conn.pgconn.socket))
    cut.shutdown(socket.SHUT_RDWR)
    cut.close()
    deadline = time.monotonic() + 10
    status = "pending"
    while time.monotonic() < deadline and status == "pending":
        status = api(g, tokens["bob"], "GET", f"/api/approvals/{request['id']}").json()["status"]
        time.sleep(0.05)
    assert status == "withdrawn"
    answer = api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/approve")
    assert answer.status_code == 409
    assert "gone_1" not in columns(pg, "items")
    held.join(10)


def test_a_cancel_request_withdraws_a_held_statement(g, tokens) -> None:
    held = Held(g.dsn("dave", tokens["dave"], "appdb"), "ALTER TABLE items ADD COLUMN cancelled_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="dave")
    held.conn.cancel()  # what psql sends on Ctrl-C
    held.join(10)
    assert isinstance(held.error, psycopg.errors.QueryCanceled), held.error
    assert api(g, tokens["bob"], "GET", f"/api/approvals/{request['id']}").json()["status"] == "withdrawn"
    with held.conn.cursor() as cur:  # the session goes on
        assert cur.execute("SELECT 1").fetchone() == (1,)
    held.conn.close()


def test_approve_for_a_window_grants_the_same_statement_shape(g, pg, tokens) -> None:
    dsn = g.dsn("alice", tokens["alice"], "appdb")
    pg.psql("CREATE TABLE IF NOT EXISTS grant_t (id int); ALTER TABLE grant_t OWNER TO app", dbname="app")
    first = Held(dsn, "ALTER TABLE grant_t ALTER COLUMN id SET DEFAULT 1")
    first.start()
    request = pending(g, tokens["bob"], requester="alice")
    out = subprocess.run([sys.executable, "-m", "gateway", "approvals", "approve", request["id"], "--for", "30m"],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "WIREGATE_URL": g.admin_url, "WIREGATE_TOKEN": tokens["bob"]})
    assert out.returncode == 0, out.stderr
    first.join(10)
    assert first.error is None
    first.conn.close()
    before = len(api(g, tokens["bob"], "GET", "/api/approvals?status=all").json()["approvals"])
    # the same statement with another constant passes at once, without a new request
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("ALTER TABLE grant_t ALTER COLUMN id SET DEFAULT 2")
        assert time.monotonic() - started < 2
    # another statement shape is held again
    shape = Held(dsn, "ALTER TABLE grant_t ALTER COLUMN id DROP DEFAULT")
    shape.start()
    request_shape = pending(g, tokens["bob"], requester="alice")
    api(g, tokens["bob"], "POST", f"/api/approvals/{request_shape['id']}/deny")
    shape.join(10)
    assert shape.error is not None and shape.error.sqlstate == "42501"
    shape.conn.close()
    # another identity is not covered by alice's window
    other = Held(g.dsn("dave", tokens["dave"], "appdb"), "ALTER TABLE grant_t ALTER COLUMN id SET DEFAULT 3")
    other.start()
    request_dave = pending(g, tokens["bob"], requester="dave")
    api(g, tokens["bob"], "POST", f"/api/approvals/{request_dave['id']}/deny")
    other.join(10)
    assert other.error is not None and other.error.sqlstate == "42501"
    other.conn.close()
    after = api(g, tokens["bob"], "GET", "/api/approvals?status=all").json()["approvals"]
    assert len(after) == before + 2  # the other shape's and dave's, none for the granted one
    default = pg.psql("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'grant_t'::regclass",
                      dbname="app")
    assert default.strip() == "2"


def test_cli_lists_and_denies(g, tokens) -> None:
    env = {**os.environ, "WIREGATE_URL": g.admin_url, "WIREGATE_TOKEN": tokens["bob"]}
    held = Held(g.dsn("alice", tokens["alice"], "appdb"), "ALTER TABLE items ADD COLUMN cli_1 int")
    held.start()
    request = pending(g, tokens["bob"], requester="alice")
    listed = subprocess.run([sys.executable, "-m", "gateway", "approvals", "list"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert listed.returncode == 0 and request["id"] in listed.stdout and "alice" in listed.stdout
    denied = subprocess.run([sys.executable, "-m", "gateway", "approvals", "deny", request["id"], "--reason", "use a migration"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert denied.returncode == 0, denied.stderr
    held.join(10)
    assert "use a migration" in held.error.diag.message_primary
    held.conn.close()
    # the CLI refuses a missing token with one line
    no_token = subprocess.run([sys.executable, "-m", "gateway", "approvals", "list"], capture_output=True, text=True,
                              env={k: v for k, v in env.items() if k != "WIREGATE_TOKEN"}, timeout=30)
    assert no_token.returncode != 0 and "WIREGATE_TOKEN" in no_token.stderr and "Traceback" not in no_token.stderr


def test_admin_api_refuses_missing_and_non_admin_tokens(g, tokens) -> None:
    assert api(g, None, "GET", "/healthz").status_code == 200
    for path in ("/api/sessions", "/api/approvals", "/metrics"):
        assert api(g, None, "GET", path).status_code == 401
        assert api(g, "not-a-token", "GET", path).status_code == 401
    # dave is neither an admin nor an approver
    for path in ("/api/sessions", "/api/approvals", "/metrics"):
        assert api(g, tokens["dave"], "GET", path).status_code == 403
    # carol approves but is no admin: approvals only
    assert api(g, tokens["carol"], "GET", "/api/approvals").status_code == 200
    assert api(g, tokens["carol"], "GET", "/api/sessions").status_code == 403
    sessions = api(g, tokens["bob"], "GET", "/api/sessions").json()["sessions"]
    assert sessions and {"id", "identity", "target", "protocol"} <= set(sessions[0])
    one = api(g, tokens["bob"], "GET", f"/api/sessions/{sessions[0]['id']}")
    assert one.status_code == 200 and one.json()["id"] == sessions[0]["id"]
    metrics = api(g, tokens["bob"], "GET", "/metrics").text
    for name in ("wiregate_sessions_open", "wiregate_sessions_total", "wiregate_commands_total",
                 "wiregate_approval_wait_seconds_bucket", "wiregate_recorder_queue_depth",
                 "wiregate_upstream_connect_errors_total", "wiregate_bytes_proxied_total"):
        assert name in metrics, name
    assert 'wiregate_commands_total{protocol="postgres",decision="review"}' in metrics

    def value(sample: str) -> float:
        lines = [line for line in metrics.splitlines() if line.startswith(sample + " ")]
        assert lines, f"{sample} missing from:\n{metrics}"
        return float(lines[0].split()[-1])

    # earlier tests in this module ran sessions and approvals through this gateway
    assert value('wiregate_sessions_total{protocol="postgres",target="appdb"}') >= 5
    assert value('wiregate_bytes_proxied_total{protocol="postgres",target="appdb",direction="in"}') > 0
    assert value('wiregate_bytes_proxied_total{protocol="postgres",target="appdb",direction="out"}') > 0
    assert value('wiregate_commands_total{protocol="postgres",decision="approved"}') >= 1
    assert value('wiregate_commands_total{protocol="postgres",decision="denied"}') >= 1
    assert value('wiregate_approval_wait_seconds_count{outcome="approved"}') >= 1
    assert value("wiregate_recorder_queue_depth") >= 0


def test_ssh_exec_waits_for_approval(g, tokens) -> None:
    from tests.e2e.ssh_gateway import SshGateway  # noqa: F401 (the options it builds are reused below)

    host_pub = (g.workdir / "state" / "keys" / "ssh_host_ed25519.pub").read_text().split()
    known = g.workdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{g.ssh_port} {host_pub[0]} {host_pub[1]}\n")
    options = ["-F", "/dev/null", "-p", str(g.ssh_port), "-i", str(g.caller.key_path), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR"]
    marker = f"/tmp/wiregate-approved-{os.getpid()}"
    proc = subprocess.Popen(["ssh", *options, "web@127.0.0.1", f"touch {marker} && echo done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    request = pending(g, tokens["bob"], requester="alice")
    assert request["protocol"] == "ssh" and request["command"] == f"touch {marker} && echo done"
    assert not os.path.exists(marker)
    assert api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/approve").status_code == 200
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == b"done\n"
    assert request["id"].encode() in err and b"held for approval" in err
    assert os.path.exists(marker)
    os.unlink(marker)
    # denied: exit status 126, the reason on stderr
    proc = subprocess.Popen(["ssh", *options, "web@127.0.0.1", f"touch {marker}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    request = pending(g, tokens["bob"], requester="alice")
    api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/deny", {"reason": "no"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 126 and b"denied by bob: no" in err
    assert not os.path.exists(marker)


def test_http_request_waits_for_approval(g, tokens) -> None:
    result: dict = {}

    def call() -> None:
        result["response"] = httpx.post(f"{g.http_url}/api/echo/deploy", json={"version": 7},
                                        headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)

    thread = threading.Thread(target=call)
    thread.start()
    request = pending(g, tokens["bob"], requester="alice")
    assert request["protocol"] == "http" and request["command"] == "POST /echo/deploy"
    assert thread.is_alive()
    api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/approve")
    thread.join(15)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["body"] == '{"version":7}' and response.json()["method"] == "POST"
    # denied: 403 naming the rule and the request
    thread = threading.Thread(target=call)
    thread.start()
    request = pending(g, tokens["bob"], requester="alice")
    api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/deny")
    thread.join(15)
    assert result["response"].status_code == 403
    assert request["id"] in result["response"].json()["message"]


def test_mcp_tool_call_waits_for_approval(g, tokens, mcp_server) -> None:
    import asyncio

    try:
        from mcp.shared.exceptions import MCPError as McpError
    except ImportError:  # older SDKs
        from mcp.shared.exceptions import McpError

    async def call(command: str) -> str:
        async with mcp_client(f"{g.http_url}/tools/mcp", {"Authorization": f"Bearer {tokens['alice']}"}) as session:
            try:
                result = await session.call_tool("run_command", {"command": command})
            except McpError as e:
                return f"ERROR {e}"
            return result.content[0].text

    def decide(action: str) -> None:
        request = pending(g, tokens["bob"], requester="alice", timeout=20)
        assert request["protocol"] == "http" and request["kind"] == "tool"
        assert request["command"].startswith("run_command ")
        api(g, tokens["bob"], "POST", f"/api/approvals/{request['id']}/{action}")

    before = len(mcp_server.calls())
    approver = threading.Thread(target=decide, args=("approve",))
    approver.start()
    assert asyncio.run(call("uptime")) == "ran: uptime\nexit status 0"
    approver.join(10)
    approver = threading.Thread(target=decide, args=("deny",))
    approver.start()
    answer = asyncio.run(call("reboot"))
    approver.join(10)
    assert answer.startswith("ERROR") and 'blocked by rule "review-commands"' in answer and "denied by bob" in answer
    assert [c["arguments"]["command"] for c in mcp_server.calls()[before:] if c["tool"] == "run_command"] == ["uptime"]


def test_the_gateway_logged_no_internal_error(g) -> None:
    """Held and released requests leave every connection in order (run last in this module)."""
    log = g.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]

"""Session recordings of PostgreSQL sessions, end to end: what a session leaves in the state dir,
what `wiregate sessions ...` makes of it, and what never reaches it (unmasked values, tokens,
the upstream password)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from gateway.pgserver import fake_customers
from recorder.events import Command, Result, SessionEnd, SessionStart
from recorder.format import read_recording, verify
from tests.conftest import CUSTOMER_ROWS
from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess

CUSTOMERS = fake_customers(CUSTOMER_ROWS)
RULES = [
    {"name": "no-drop", "action": "deny", "match": {"sql": ["DROP"]}},
    {"name": "mask-ssn", "action": "mask", "columns": ["customers.ssn"], "style": "redact"},
    {"name": "mask-email", "action": "mask", "detectors": ["email"], "style": "redact"},
]


def wiregate(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=60)


def recordings(gw: GatewayProcess) -> list[Path]:
    return sorted((gw.workdir / "state" / "recordings").rglob("*.wgrec"))


def wait_sealed(gw: GatewayProcess, n: int, timeout: float = 10) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = recordings(gw)
        if len(files) >= n and all(read_recording(f).sealed for f in files[-n:]):
            return files
        time.sleep(0.05)
    raise AssertionError(f"{n} sealed recordings expected, found {len(recordings(gw))}")


@pytest.fixture(scope="module")
def rgw(pg, tmp_path_factory):
    g = GatewayProcess(tmp_path_factory.mktemp("rec-gateway"), targets=[pg_target("rec", pg, tls="require")],
                       rules=RULES, env={PW_ENV: pg.app_password}).start()
    yield g
    g.stop()


def test_a_session_is_recorded_with_its_commands_decisions_and_results(rgw):
    token = rgw.token("alice", ["dev"])
    before = len(recordings(rgw))
    with psycopg.connect(rgw.dsn("alice", token, "rec"), autocommit=True) as conn:
        assert len(conn.execute("SELECT id, ssn, email FROM customers ORDER BY id").fetchall()) == CUSTOMER_ROWS
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE customers")
        conn.execute("SELECT 'mail me: bob@example.com'")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
    [path] = wait_sealed(rgw, before + 1)[before:]
    rec = read_recording(path)
    events = [e for _, e in rec.events]
    start, end = events[0], events[-1]
    assert isinstance(start, SessionStart) and isinstance(end, SessionEnd)
    assert (start.identity, start.target, start.protocol, start.tls, start.groups) == ("alice", "rec", "postgres", True, ("dev",))
    commands = [e for e in events if isinstance(e, Command)]
    results = [e for e in events if isinstance(e, Result)]
    assert [c.decision for c in commands] == ["allow", "deny", "allow", "allow"]
    assert commands[1].rule == "no-drop" and "DROP" in commands[1].kinds
    assert "bob@example.com" not in commands[2].text and "mail me" in commands[2].text  # masked in the recording too
    assert results[0].tag == f"SELECT {CUSTOMER_ROWS}" and results[0].rows == CUSTOMER_ROWS and results[0].bytes > 0
    assert results[1].error.startswith("42501") and results[-1].error.startswith("42P01")
    assert end.commands == 4
    report = verify(path, public_keys(rgw))
    assert report.ok and not report.warnings, (report.errors, report.warnings)


def public_keys(gw: GatewayProcess) -> dict:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from gateway.keys import ed25519_key_id

    key = load_pem_private_key((gw.workdir / "state" / "keys" / "recording_ed25519.pem").read_bytes(), None)
    return {ed25519_key_id(key.public_key()): key.public_key()}


def test_the_state_dir_holds_no_unmasked_value_no_token_and_no_password(rgw, pg):
    token = rgw.token("bob", ["dev"])
    before = len(recordings(rgw))
    with psycopg.connect(rgw.dsn("bob", token, "rec")) as conn:
        conn.execute("SELECT * FROM customers").fetchall()
        conn.execute("SELECT note, email, ssn FROM customers WHERE ssn = %s", (CUSTOMERS[0]["ssn"],)).fetchall()
    wait_sealed(rgw, before + 1)
    raw = b"".join(p.read_bytes() for p in (rgw.workdir / "state").rglob("*") if p.is_file())
    assert token.encode() not in raw and pg.app_password.encode() not in raw
    for c in CUSTOMERS:
        assert c["ssn"].encode() not in raw, "an SSN reached the state dir"
        assert c["email"].encode() not in raw, "an email reached the state dir"


def test_sessions_cli_lists_shows_verifies_and_replays(rgw):
    token = rgw.token("carol", ["dev"])
    before = len(recordings(rgw))
    with psycopg.connect(rgw.dsn("carol", token, "rec"), autocommit=True) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE customers")
    [path] = wait_sealed(rgw, before + 1)[before:]
    listed = wiregate(rgw, "sessions", "list", "--json", "--identity", "carol")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    sid = row.get("session_id") or row.get("id")
    assert path.stem == sid
    shown = wiregate(rgw, "sessions", "show", sid[:12])
    assert shown.returncode == 0 and "carol" in shown.stdout, shown.stderr
    verified = wiregate(rgw, "sessions", "verify", "--all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    replay = wiregate(rgw, "replay", sid, "--speed", "0")
    assert replay.returncode == 0 and "SELECT 1" in replay.stdout and 'blocked by rule "no-drop"' in replay.stdout
    exported = wiregate(rgw, "sessions", "export", sid, "--format", "jsonl")
    kinds = [json.loads(line)["kind"] for line in exported.stdout.splitlines()]
    assert exported.returncode == 0 and kinds[0] == "start" or "start" in kinds[0]


def test_tampering_is_caught_by_verify(rgw, tmp_path):
    token = rgw.token("dave", ["dev"])
    before = len(recordings(rgw))
    with psycopg.connect(rgw.dsn("dave", token, "rec"), autocommit=True) as conn:
        for i in range(5):
            conn.execute(f"SELECT {i}")
    [path] = wait_sealed(rgw, before + 1)[before:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    bad = wiregate(rgw, "sessions", "verify", path.stem)
    assert bad.returncode == 1, bad.stdout + bad.stderr


def test_recorder_that_cannot_keep_up_refuses_commands(pg, tmp_path):
    """A queue the writer drains only every 5 s fills up: new commands are refused, not run unrecorded."""
    g = GatewayProcess(tmp_path, targets=[pg_target("rec", pg, tls="disable")], env={PW_ENV: pg.app_password},
                       extra={"recording": {"batch_ms": 5000, "queue_size": 100}}).start()
    try:
        with psycopg.connect(g.dsn("erin", g.token("erin", ["dev"]), "rec", sslmode="disable"),
                             autocommit=True) as conn:
            refused = 0
            for i in range(300):
                try:
                    conn.execute(f"SELECT {i}")
                except psycopg.errors.IoError as e:  # SQLSTATE 58030
                    assert "cannot record" in str(e)
                    refused += 1
            assert refused > 0
            time.sleep(5.5)  # the writer caught up: commands run again
            assert conn.execute("SELECT 42").fetchone() == (42,)
    finally:
        g.stop()


def test_kill_9_under_load_leaves_verifiable_recordings(pg, tmp_path):
    g = GatewayProcess(tmp_path, targets=[pg_target("rec", pg, tls="disable")], env={PW_ENV: pg.app_password}).start()
    dsn = g.dsn("frank", g.token("frank", ["dev"]), "rec", sslmode="disable")
    load = subprocess.Popen([sys.executable, "-c", f"""
import psycopg, sys
with psycopg.connect({dsn!r}, autocommit=True) as conn:
    i = 0
    while True:
        conn.execute("SELECT %s, repeat('x', 200)", (i,)); i += 1
"""], stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        os.kill(g.proc.pid, signal.SIGKILL)
        g.proc.wait(10)
    finally:
        load.kill()
        load.wait()
    files = recordings(g)
    assert files
    keys = public_keys(g)
    for f in files:
        report = verify(f, keys)
        assert report.ok, report.errors  # a torn tail and a missing seal are warnings only
        assert len(read_recording(f).events) > 10
    # the CLI also checks the files against the index: a crash never looks like tampering
    checked = wiregate(g, "sessions", "verify", "--all")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_fsync_always_holds_each_command_until_its_recording_is_on_disk(pg, tmp_path):
    g = GatewayProcess(tmp_path, targets=[pg_target("rec", pg, tls="disable")], env={PW_ENV: pg.app_password},
                       extra={"recording": {"fsync": "always"}}).start()
    try:
        with psycopg.connect(g.dsn("gina", g.token("gina", ["dev"]), "rec", sslmode="disable"),
                             autocommit=True) as conn:
            for i in range(50):
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            with conn.pipeline():
                cursors = [conn.execute("SELECT %s::int", (i,)) for i in range(20)]
            assert [c.fetchone()[0] for c in cursors] == list(range(20))
        [path] = wait_sealed(g, 1)
        events = [e for _, e in read_recording(path).events]
        results = [e for e in events if isinstance(e, Result)]
        assert sum(r.tag == "SELECT 1" for r in results) == 70
        # psycopg prepares a statement it runs often: its executions are recorded one by one
        executions = [e for e in events if isinstance(e, Command) and e.kind == "execute"]
        assert executions and all("SELECT $1::int" in e.text for e in executions)
        assert sum(isinstance(e, Command) and e.kind in ("sql", "execute") for e in events) >= 70
        assert verify(path, public_keys(g)).ok
    finally:
        g.stop()


class _Receiver:
    """A webhook receiver that can be stopped and started again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: list[str] = []
        self.server = None

    def start(self) -> None:
        import http.server
        import threading

        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.ids.extend(e["id"] for e in json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_receiver_down_for_a_while_gets_every_event_once(pg, tmp_path):
    from gateway.pgserver import free_port

    receiver = _Receiver(free_port())
    receiver.start()
    g = GatewayProcess(tmp_path, targets=[pg_target("rec", pg, tls="disable")], env={PW_ENV: pg.app_password},
                       extra={"audit": [{"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/events",
                                         "batch_ms": 50, "retry_max_s": 0.5}]}).start()
    try:
        dsn = g.dsn("hank", g.token("hank", ["dev"]), "rec", sslmode="disable")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(20):
                conn.execute(f"SELECT {i}")
        wait_sealed(g, 1)
        receiver.stop()  # down: events are spooled
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(30):
                conn.execute(f"SELECT {i}")
        wait_sealed(g, 2)
        time.sleep(1.0)
        receiver.start()
        expected = {f"{f.stem}:{seq}" for f in recordings(g) for seq, _ in read_recording(f).events}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not expected <= set(receiver.ids):
            time.sleep(0.1)
        assert expected <= set(receiver.ids), f"{len(expected - set(receiver.ids))} events never arrived"
        assert len(receiver.ids) == len(set(receiver.ids)), "an event arrived twice"
    finally:
        g.stop()
        receiver.stop()

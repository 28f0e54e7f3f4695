"""Quick checks of the throwaway PostgreSQL helper (gateway/pgserver.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest

from gateway.pgserver import (
    PgServerError,
    ThrowawayPostgres,
    customers_sql,
    expected_item,
    fake_customers,
    free_port,
    items_sql,
    luhn_valid,
    sql_ident,
    sql_literal,
)

# AuthenticationRequest codes from the PostgreSQL protocol
AUTH_CODES = {"trust": 0, "password": 3, "md5": 5, "scram-sha-256": 10}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def _auth_request(port: int, user: str, *, use_ssl: bool = False, cafile: str | None = None) -> int:
    """Send a StartupMessage and return the code of the server's first Authentication message."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if use_ssl:
            sock.sendall(struct.pack("!II", 8, 80877103))
            assert _recv_exact(sock, 1) == b"S"
            ctx = ssl.create_default_context(cafile=cafile)
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        params = b"user\x00" + user.encode() + b"\x00database\x00postgres\x00\x00"
        sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        kind, length = struct.unpack("!cI", _recv_exact(sock, 5))
        body = _recv_exact(sock, length - 4)
        assert kind == b"R", (kind, body)
        return struct.unpack("!I", body[:4])[0]
    finally:
        sock.close()


def test_fake_data_is_deterministic_and_plausible():
    rows = fake_customers(200)
    assert rows[:50] == fake_customers(50)
    for r in rows:
        assert luhn_valid(r["card"]), r
        assert r["card"].isdigit() and len(r["card"]) in (15, 16)
        assert len(r["ssn"]) == 11 and r["ssn"][3] == "-" and r["ssn"][6] == "-"
        assert "555-01" in r["phone"]
        assert "@example." in r["email"] and "@example." in r["note"]
    assert len({r["email"] for r in rows}) == 200
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_quoting():
    assert sql_literal("it's") == "'it''s'"
    assert sql_ident('we"ird') == '"we""ird"'
    with pytest.raises(ValueError):
        sql_literal("a\x00b")


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_bad_auth_method():
    with pytest.raises(PgServerError, match="auth must be one of"):
        ThrowawayPostgres(auth="ident")


@pytest.mark.parametrize("auth", ["scram-sha-256", "md5", "password", "trust"])
def test_server_speaks_the_requested_auth(auth):
    with ThrowawayPostgres(auth=auth) as pg:
        pg.create_role("app", "pa'ss word")
        pg.create_database("app", owner="app")
        assert _auth_request(pg.port, "app") == AUTH_CODES[auth]
        assert _auth_request(pg.port, pg.superuser, use_ssl=True, cafile=str(pg.cert_file)) == AUTH_CODES[auth]
        if auth == "md5":  # stored as md5, or md5 auth would silently negotiate SCRAM
            assert pg.psql("SELECT count(*) FROM pg_authid WHERE rolpassword LIKE 'md5%'").strip() == "2"
        # psql over TCP with the URL from dsn(), TLS verified against the generated cert
        url = pg.dsn("app", user="app", sslmode="verify-full", sslrootcert=str(pg.cert_file))
        out = subprocess.run(["psql", url, "-XAtc", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "app|t"


def test_seed_psql_errors_and_cleanup():
    pg = ThrowawayPostgres(ssl=False)
    with pg:
        assert pg.cert_file is None
        pg.create_role("app", "pw")
        pg.create_database("app", owner="app")
        pg.psql(customers_sql(20, owner="app") + items_sql(100, owner="app"), dbname="app")
        assert pg.psql("SELECT count(*) FROM customers", dbname="app").strip() == "20"
        owner = pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'items'", dbname="app").strip()
        assert owner == "app"
        row = pg.psql("SELECT id, label, qty, price FROM items WHERE id = 42", dbname="app").strip()
        i, label, qty, price, _ = expected_item(42)
        assert row == f"{i}|{label}|{qty}|{price}"
        with pytest.raises(PgServerError, match="does_not_exist"):
            pg.psql("SELECT * FROM does_not_exist", dbname="app")
        assert pg.dsn("app", user="app", sslmode="disable") == \
            f"postgresql://app:pw@127.0.0.1:{pg.port}/app?sslmode=disable"
        root = pg.root_dir
        assert root is not None and root.exists()
    assert not root.exists()
    pg.stop()  # twice is fine
    with pytest.raises(PgServerError, match="not running"):
        pg.psql("SELECT 1")


def test_taken_port_fails_with_log_tail():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pg = ThrowawayPostgres(port=port, ssl=False)
        with pytest.raises(PgServerError, match="did not start") as exc:
            pg.start()
        assert "could not bind" in str(exc.value) or "in use" in str(exc.value)
        assert pg.root_dir is not None and not pg.root_dir.exists()


def test_demo_config_is_valid(tmp_path):
    from gateway.config import load_config
    from gateway.demo import DEMO_PASSWORD_ENV, demo_config

    path = tmp_path / "wiregate.toml"
    path.write_text(demo_config(state_dir=tmp_path / "state", port=15432, pg_port=5432))
    assert "[listen]" in path.read_text() and "ssh =" not in path.read_text()
    cfg = load_config(path)
    assert cfg.listen.postgres == "127.0.0.1:15432"
    assert cfg.identity.dev_tokens
    [target] = cfg.targets
    assert (target.name, target.password_env, target.allow_groups) == ("demo", DEMO_PASSWORD_ENV, ["dev"])
    assert [r.action for r in cfg.rules] == ["deny", "review", "mask", "mask"] and cfg.policy.default == "allow"
    from policy.engine import PolicyEngine
    assert PolicyEngine(cfg).session(protocol="postgres", target="demo", identity="demo", groups=["dev"]).masks


def test_demo_end_to_end(tmp_path):
    """`wiregate demo`: banner with a working psql URL, DROP blocked, SIGINT cleans everything up."""
    port = free_port()
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port)],
                                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r'psql "(postgresql://demo:[^"]+)"', out.read_text())
            if m:
                url = m.group(1)
                break
            time.sleep(0.2)
        assert url, f"no banner; stderr:\n{err.read_text()}"
        assert url.endswith(f"@127.0.0.1:{port}/demo?sslmode=require")
        tmpdir = re.search(r"config\s+(\S+)/wiregate.toml", out.read_text()).group(1)
        ok = subprocess.run(["psql", url, "-XAtc", "SELECT count(*) FROM customers"], capture_output=True,
                            text=True, timeout=30)
        assert (ok.returncode, ok.stdout.strip()) == (0, "200"), ok.stderr
        masked = subprocess.run(["psql", url, "-XAtc", "SELECT ssn, email FROM customers ORDER BY id LIMIT 1"],
                                capture_output=True, text=True, timeout=30)
        ssn, email = masked.stdout.strip().split("|")
        real = fake_customers(1)[0]
        assert ssn == "*" * (len(real["ssn"]) - 4) + real["ssn"][-4:] and email == "****", masked.stdout
        blocked = subprocess.run(["psql", url, "-XAtc", "DROP TABLE customers"], capture_output=True, text=True,
                                 timeout=30)
        assert blocked.returncode != 0 and 'blocked by rule "no-destructive-sql"' in blocked.stderr
        # the approval flow as the banner prints it: a held CREATE, approved with the printed command
        approvals = re.search(r"^  (WIREGATE_URL=\S+ WIREGATE_TOKEN=\S+) wiregate approvals list$", out.read_text(), re.M)
        assert approvals, out.read_text()
        env = dict(os.environ)
        env.update(dict(pair.split("=", 1) for pair in approvals.group(1).split()))
        held = subprocess.Popen(["psql", url, "-XAtc", "CREATE TABLE notes (id int, body text)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        request_id = None
        deadline = time.monotonic() + 20
        while request_id is None and time.monotonic() < deadline:
            listed = subprocess.run([sys.executable, "-m", "gateway", "approvals", "list", "--json"], env=env,
                                    capture_output=True, text=True, timeout=30)
            assert listed.returncode == 0, listed.stderr
            found = re.search(r'"id":\s*"(ap-[0-9a-f]+)"', listed.stdout)
            request_id = found.group(1) if found else None
            time.sleep(0.1)
        assert request_id, "the held CREATE did not show up in `wiregate approvals list`"
        approved = subprocess.run([sys.executable, "-m", "gateway", "approvals", "approve", request_id], env=env,
                                  capture_output=True, text=True, timeout=30)
        assert approved.returncode == 0, approved.stderr
        held_out, held_err = held.communicate(timeout=30)
        assert held.returncode == 0 and request_id in held_err, (held_out, held_err)
        # the SSH target: the banner's ssh command works as printed
        ssh_cmd = re.search(r"^  (ssh -p \d+ .*demo-ssh@127\.0\.0\.1)$", out.read_text(), re.M)
        assert ssh_cmd, out.read_text()
        env_file = re.search(r"^  cat (\S+)", out.read_text(), re.M).group(1)
        base = ssh_cmd.group(1).split() + ["-o", "BatchMode=yes"]
        shown = subprocess.run([*base, f"cat {env_file}"], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert "LOG_LEVEL=info" in shown.stdout and "AKIAIOSFODNN7EXAMPLE" not in shown.stdout
        assert "ops.lead@example.com" not in shown.stdout
        refused = subprocess.run([*base, "rm -rf /tmp/nothing"], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 126 and 'blocked by rule "no-destructive-commands"' in refused.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, err.read_text()
        assert not os.path.exists(tmpdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

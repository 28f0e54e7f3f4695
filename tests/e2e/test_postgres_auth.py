"""Who may connect: tokens, user names, targets, groups, TLS; upstream authentication methods."""

from __future__ import annotations

import hashlib

import psycopg

from gateway.pgserver import fake_customers
import pytest

from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess


def connect_error(dsn: str) -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn, connect_timeout=10).close()
    return e.value


def sqlstate_of(err: psycopg.OperationalError) -> str | None:
    # libpq reports a FATAL at start-up as an OperationalError; its text carries our message
    diag = getattr(err, "diag", None)
    return diag.sqlstate if diag is not None else None


def test_bad_token_is_28P01(gw):
    err = connect_error(gw.dsn("alice", "not-a-token", "appdb"))
    assert "authentication failed" in str(err)


def test_expired_token_is_refused(gw):
    import time

    import jwt

    from gateway.config import load_config
    from gateway.identity import dev_key_path
    from gateway.keys import ed25519_key_id, load_or_create_ed25519

    key = load_or_create_ed25519(dev_key_path(load_config(gw.config_path)))
    now = int(time.time())
    token = jwt.encode({"iss": "wiregate-dev", "aud": "wiregate", "sub": "alice", "groups": ["dev"],
                        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, key, algorithm="EdDSA",
                       headers={"kid": ed25519_key_id(key.public_key())})
    err = connect_error(gw.dsn("alice", token, "appdb"))
    assert "expired" in str(err)


def test_tampered_token_is_refused(gw, alice):
    head, payload, sig = alice.split(".")
    bad_sig = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    err = connect_error(gw.dsn("alice", f"{head}.{payload}.{bad_sig}", "appdb"))
    assert "authentication failed" in str(err)


def test_user_must_match_token_subject(gw, alice):
    err = connect_error(gw.dsn("bob", alice, "appdb"))
    assert 'does not match the token, which is for "alice"' in str(err)


def test_unknown_target_is_3D000(gw, alice):
    err = connect_error(gw.dsn("alice", alice, "nosuchdb"))
    assert 'no PostgreSQL target named "nosuchdb"' in str(err)
    assert sqlstate_of(err) in (None, "3D000")


def test_group_not_allowed(gw, alice):
    err = connect_error(gw.dsn("alice", alice, "dba-only"))
    assert 'not allowed on target "dba-only"' in str(err)


def test_without_tls_from_loopback_is_accepted(gw, alice):
    with psycopg.connect(gw.dsn("alice", alice, "appdb", sslmode="disable")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use is False


def test_gssenc_request_is_refused_and_client_goes_on(gw, alice):
    # gssencmode=prefer makes libpq try GSSENCRequest only with credentials; send it by hand instead
    import socket
    import struct

    s = socket.create_connection((gw.host, gw.port))
    s.sendall(struct.pack("!ii", 8, 80877104))
    assert s.recv(1) == b"N"
    s.sendall(struct.pack("!ii", 8, 80877103))
    assert s.recv(1) == b"S"
    s.close()


def test_service_account_token(pg, tmp_path):
    token = "svc-token-for-ci-bot-0123456789"
    g = GatewayProcess(tmp_path, targets=[pg_target("appdb", pg, allow_groups=["ci"])],
                       users=[{"name": "ci-bot", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                               "groups": ["ci"]}],
                       env={PW_ENV: pg.app_password}).start()
    try:
        with psycopg.connect(g.dsn("ci-bot", token, "appdb")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
        err = connect_error(g.dsn("ci-bot", token + "x", "appdb"))
        assert "authentication failed" in str(err)
    finally:
        g.stop()


@pytest.mark.parametrize("auth", ["md5", "password", "trust"])
def test_upstream_auth_methods(make_pg, tmp_path, auth):
    server = make_pg(auth)
    g = GatewayProcess(tmp_path, targets=[pg_target("t", server, tls="prefer")],
                       env={PW_ENV: server.app_password}).start()
    try:
        token = g.token("alice", ["dev"])
        with psycopg.connect(g.dsn("alice", token, "t")) as conn:
            assert conn.execute("SELECT current_user, 40 + 2").fetchone() == ("app", 42)
    finally:
        g.stop()


def test_upstream_wrong_password_is_not_revealed(pg, tmp_path):
    g = GatewayProcess(tmp_path, targets=[pg_target("t", pg)], env={PW_ENV: "wrong-password"}).start()
    try:
        err = connect_error(g.dsn("alice", g.token("alice", ["dev"]), "t"))
        assert "rejected the gateway's credentials" in str(err)
        assert "wrong-password" not in str(err) and "wrong-password" not in g.log()
    finally:
        g.stop()


def test_upstream_tls_required_but_not_offered(make_pg, tmp_path):
    server = make_pg("scram-sha-256", ssl=False)
    g = GatewayProcess(tmp_path, targets=[pg_target("t", server, tls="require")],
                       env={PW_ENV: server.app_password}).start()
    try:
        err = connect_error(g.dsn("alice", g.token("alice", ["dev"]), "t"))
        assert "does not offer TLS" in str(err)
    finally:
        g.stop()


def test_upstream_down_is_a_clear_error(pg, tmp_path):
    from gateway.pgserver import free_port

    target = pg_target("t", pg)
    target["address"] = f"127.0.0.1:{free_port()}"
    g = GatewayProcess(tmp_path, targets=[target], env={PW_ENV: "x"}).start()
    try:
        err = connect_error(g.dsn("alice", g.token("alice", ["dev"]), "t"))
        assert 'cannot reach target "t"' in str(err)
    finally:
        g.stop()


def test_mask_rules_apply_to_their_groups_only(pg, tmp_path):
    g = GatewayProcess(tmp_path, targets=[pg_target("t", pg, allow_groups=["dev", "ops"])], env={PW_ENV: pg.app_password},
                       rules=[{"name": "mask-pii", "action": "mask", "columns": ["*.ssn"], "groups": ["dev"]}]).start()
    try:
        sql = "SELECT ssn FROM customers ORDER BY id LIMIT 1"
        with psycopg.connect(g.dsn("alice", g.token("alice", ["dev"]), "t")) as conn:
            assert conn.execute(sql).fetchone() == ("****",)
        # a caller no mask rule applies to sees the value
        with psycopg.connect(g.dsn("bob", g.token("bob", ["ops"]), "t")) as conn:
            assert conn.execute(sql).fetchone()[0] == fake_customers(1)[0]["ssn"]
    finally:
        g.stop()


def test_upstream_verify_full_checks_the_certificate(pg, tmp_path):
    from gateway.tls import write_self_signed

    good = pg_target("good", pg, tls="verify-full")
    good["tls_ca_file"] = str(pg.cert_file)
    other_ca = tmp_path / "other.crt"
    write_self_signed(other_ca, tmp_path / "other.key", "someone-else", ["127.0.0.1"])
    bad = pg_target("bad", pg, tls="verify-full")
    bad["tls_ca_file"] = str(other_ca)
    g = GatewayProcess(tmp_path / "gw", targets=[good, bad], env={PW_ENV: pg.app_password}).start()
    try:
        token = g.token("alice", ["dev"])
        with psycopg.connect(g.dsn("alice", token, "good")) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        err = connect_error(g.dsn("alice", token, "bad"))
        assert 'cannot reach target "bad"' in str(err)
        assert "CERTIFICATE_VERIFY_FAILED" in g.log() or "certificate verify failed" in g.log()
    finally:
        g.stop()

"""deploy/wiregate.toml runs: the app with the settings the compose file and the manifests pass.

Docker is not available, so the container is played by a subprocess: the deploy config with only
what a container's network gives it rewritten (listen addresses to free loopback ports, the state
dir to a temp dir, the store and the demo target to the throwaway PostgreSQL), the environment
the compose file and the Deployment set (PGPASSWORD for the store, DEMO_DB_PASSWORD for the
target), the demo target seeded from deploy/demo-seed.sql. Then what the orchestrators rely on:
``/healthz`` on the admin port, the store URL used, a client through the postgres port with a dev
token, the config's mask, deny and review rules in force (the review decided through the admin
API), and SIGTERM ending the process with status 0.

Also the image's build stage: ``pip wheel`` on exactly what the Dockerfile copies (this needs a
package index for the build backend, as ``docker build`` does).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import load_config, parse_duration
from gateway.demo import stop_process
from gateway.identity import issue_dev_token
from gateway.pgserver import free_port
from tests.unit.test_deploy import DEPLOY, ROOT, _instructions

START_TIMEOUT = 30.0


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/wiregate.toml no longer has exactly one {old!r}"
    return text.replace(old, new)


@dataclass
class Deployed:
    proc: subprocess.Popen
    config_path: Path
    ports: dict[str, int]
    env: dict[str, str]
    store_db: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _seed_demo_target(pg) -> str:
    """The demo target's role and database, as the compose file's demo-db makes them."""
    password = secrets.token_urlsafe(12)
    pg.create_role("demo", password)
    pg.create_database("demo", owner="demo")
    # as the postgres image runs its init scripts: as the database's own user
    pg.psql((DEPLOY / "demo-seed.sql").read_text(), dbname="demo", user="demo")
    return password


def _deploy_config(pg, state_dir: Path, ports: dict[str, int], store_url: str) -> str:
    text = (DEPLOY / "wiregate.toml").read_text()
    original = tomllib.loads(text)
    for key, port in ports.items():
        text = _replace_once(text, f'{key} = "{original["listen"][key]}"', f'{key} = "127.0.0.1:{port}"')
    text = _replace_once(text, f'state_dir = "{original["gateway"]["state_dir"]}"', f'state_dir = "{state_dir}"')
    text = _replace_once(text, f'store = "{original["gateway"]["store"]}"', f'store = "{store_url}"')
    demo = original["targets"][0]
    text = _replace_once(text, f'address = "{demo["address"]}"', f'address = "127.0.0.1:{pg.port}"')
    # nothing else differs from what the containers get
    changed = tomllib.loads(text)
    assert {k: v for k, v in changed.items() if k not in ("gateway", "listen", "targets")} == \
        {k: v for k, v in original.items() if k not in ("gateway", "listen", "targets")}
    assert {k: v for k, v in changed["gateway"].items() if k not in ("state_dir", "store")} == \
        {k: v for k, v in original["gateway"].items() if k not in ("state_dir", "store")}
    assert {k: v for k, v in changed["targets"][0].items() if k != "address"} == \
        {k: v for k, v in demo.items() if k != "address"}
    return text


def _wait_listening(d: Deployed) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = set(d.ports.values())
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise AssertionError(f"wiregate serve exited with {d.proc.returncode}:\n{d.log()}")
        for port in list(pending):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                pending.discard(port)
            except OSError:
                pass
        if not pending:
            return
        time.sleep(0.1)
    names = sorted(k for k, p in d.ports.items() if p in pending)
    raise AssertionError(f"not listening within {START_TIMEOUT:.0f} s: {', '.join(names)}\n{d.log()[-4000:]}")


@pytest.fixture(scope="module")
def deployed(pg, tmp_path_factory) -> Iterator[Deployed]:
    work = tmp_path_factory.mktemp("deploy")
    demo_password = _seed_demo_target(pg)
    # the store: its own role (as compose's store service makes it) and a fresh database
    store_role = f"wiregate_{secrets.token_hex(3)}"
    store_password = secrets.token_urlsafe(12)
    pg.create_role(store_role, store_password)
    store_db = f"wiregate_deploy_{secrets.token_hex(4)}"
    pg.create_database(store_db, owner=store_role)
    store_url = f"postgresql://{store_role}@127.0.0.1:{pg.port}/{store_db}"

    ports = {key: free_port() for key in ("postgres", "ssh", "http", "admin")}
    config_path = work / "wiregate.toml"
    config_path.write_text(_deploy_config(pg, work / "state", ports, store_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=store_password, DEMO_DB_PASSWORD=demo_password, WIREGATE_CONFIG=str(config_path))
    log_path = work / "gateway.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(config_path)], env=env,
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT)
    d = Deployed(proc, config_path, ports, env, store_db, log_path)
    try:
        _wait_listening(d)
        yield d
    finally:
        stop_process(proc)


def _healthz(d: Deployed) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{d.ports['admin']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _psql(d: Deployed, token: str, *args: str) -> subprocess.CompletedProcess:
    dsn = f"postgresql://alice:{token}@127.0.0.1:{d.ports['postgres']}/demo?sslmode=require"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    return subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", dsn, *args],
                          capture_output=True, text=True, timeout=60, env=env)


def _token(d: Deployed, sub: str, groups: list[str]) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSWORD", d.env["PGPASSWORD"])
        return issue_dev_token(load_config(d.config_path), sub=sub, groups=groups, ttl_seconds=600)


@pytest.fixture(scope="module")
def alice(deployed: Deployed) -> str:
    # as `docker compose exec gateway wiregate token issue` would: the same config and environment,
    # so the dev key comes from the shared store (libpq reads PGPASSWORD)
    return _token(deployed, "alice", ["dev"])


def test_healthz_answers_200_without_a_token(deployed):
    deadline = time.monotonic() + 10
    status, body = _healthz(deployed)
    while status != 200 and time.monotonic() < deadline:  # the store may still be opening
        time.sleep(0.2)
        status, body = _healthz(deployed)
    assert status == 200, f"{status} {body}\n{deployed.log()[-4000:]}"
    assert body.get("status") == "ok"
    assert body.get("store") == "postgresql"


def test_the_configured_store_holds_the_gateways_tables(deployed, pg):
    tables = pg.psql("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables "
                     "WHERE table_schema = 'public'", dbname=deployed.store_db).strip()
    assert tables, f"the gateway created nothing in {deployed.store_db}\n{deployed.log()[-4000:]}"
    assert "approvals" in tables.split(","), tables


def test_psql_through_the_postgres_port_with_a_dev_token(deployed, alice):
    p = _psql(deployed, alice, "-c", "SELECT name, email, ssn, card_number FROM customers WHERE id = 1")
    assert p.returncode == 0, f"{p.stderr}\n{deployed.log()[-4000:]}"
    name, email, ssn, card = p.stdout.strip().split("|")
    assert name == "Alice Example"
    # rule mask-pii, style partial: only the last four characters stay
    assert email != "alice@example.com" and email.endswith(".com") and "*" in email
    assert ssn != "900-12-3401" and ssn.endswith("3401")
    # the credit_card detector
    assert card != "4111111111111111" and card.endswith("1111")


def test_the_configs_deny_rule_is_in_force(deployed, alice):
    p = _psql(deployed, alice, "-c", "DROP TABLE orders")
    assert p.returncode != 0
    assert 'blocked by rule "no-destructive-sql"' in p.stderr
    still = _psql(deployed, alice, "-c", "SELECT count(*) FROM orders")
    assert still.returncode == 0 and still.stdout.strip() == "5"


def _admin(d: Deployed, token: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{d.ports['admin']}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_the_configs_review_rule_holds_until_an_approver_decides(deployed, alice):
    dsn = f"postgresql://alice:{alice}@127.0.0.1:{deployed.ports['postgres']}/demo?sslmode=require"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    held = subprocess.Popen(["psql", "-X", "-v", "ON_ERROR_STOP=1", dsn, "-c", "DELETE FROM orders WHERE id = 5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        bob = _token(deployed, "bob", ["dba"])
        deadline = time.monotonic() + 15
        pending: list[dict] = []
        while not pending and time.monotonic() < deadline and held.poll() is None:
            pending = [a for a in _admin(deployed, bob, "/api/approvals")["approvals"]
                       if a["requester"] == "alice" and a["rule"] == "review-writes"]
            time.sleep(0.1)
        assert pending, f"no pending request for the DELETE\n{deployed.log()[-4000:]}"
        decided = _admin(deployed, bob, f"/api/approvals/{pending[0]['id']}/deny", {"reason": "not today"})
        assert decided["status"] == "denied"
        _out, err = held.communicate(timeout=15)
    finally:
        if held.poll() is None:
            held.kill()
            held.communicate()
    assert held.returncode != 0
    assert "review-writes" in err, err
    # the notice named the request and where approvers decide it (approvals.url of the config)
    assert pending[0]["id"][:8] in err and "http://localhost:8081" in err, err
    assert _psql(deployed, alice, "-c", "SELECT count(*) FROM orders").stdout.strip() == "5"


def test_a_group_outside_allow_groups_is_refused(deployed):
    token = _token(deployed, "alice", ["ops"])
    p = _psql(deployed, token, "-c", "SELECT 1")
    assert p.returncode != 0 and "FATAL" in p.stderr


def test_sigterm_exits_0_within_the_grace(deployed):
    # the last test of the module: it ends the gateway
    grace = parse_duration(tomllib.loads(deployed.config_path.read_text())["gateway"]["shutdown_grace"])
    assert deployed.proc.poll() is None, deployed.log()[-4000:]
    start = time.monotonic()
    deployed.proc.send_signal(signal.SIGTERM)
    try:
        rc = deployed.proc.wait(grace + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace + 10:.0f} s after SIGTERM\n{deployed.log()[-4000:]}")
    assert rc == 0, deployed.log()[-4000:]
    # no session was open: nothing to wait for
    assert time.monotonic() - start < grace
    for port in deployed.ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


# ---------------------------------------------------------------- the image's build stage


def test_the_build_stage_wheel_from_what_the_dockerfile_copies(tmp_path):
    ctx = tmp_path / "src"
    ctx.mkdir()
    for word, rest in _instructions(DEPLOY / "Dockerfile"):
        if word != "COPY" or rest.startswith("--from") or rest.startswith("deploy/"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, ctx / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(ROOT / src, ctx / src)
    # the Dockerfile's `pip wheel --no-deps --wheel-dir /dist .`, build isolation and all
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir",
                           str(tmp_path / "dist"), "."], cwd=ctx, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("wiregate-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = z.read(entry).decode()
    for module in ("gateway/cli.py", "gateway/config.py", "gateway/store.py", "gateway/admin.py",
                   "policy/engine.py", "recorder/writer.py", "protocols/postgres/listener.py",
                   "protocols/ssh/server.py", "protocols/http/listener.py"):
        assert module in names, module
    assert "wiregate = gateway.cli:main" in entry_points
    assert not any("__pycache__" in n or n.startswith(("tests/", "deploy/")) for n in names)

"""Reload and drain of the PostgreSQL and SSH listeners, driven in-process.

The listeners run on 127.0.0.1:0 in the test's event loop, as gateway/server.py starts them,
in front of the throwaway PostgreSQL (``pg``) and OpenSSH (``sshd``) servers; clients are
psycopg's and asyncssh's. A reload is what the server does on SIGHUP: a new engine, the
listeners' ``reload`` and ``old.replace_with(new)``; a drain what it does on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import psycopg
import pytest

from gateway.config import Config, load_config
from gateway.demo import render_config
from gateway.identity import Authenticator, issue_dev_token
from gateway.tls import server_context
from policy.engine import PolicyEngine
from protocols.postgres import codec
from protocols.postgres import listener as pg_listener
from protocols.postgres.listener import PostgresListener
from protocols.ssh.server import SHUTDOWN_MESSAGE, SshListener

PW_ENV = "WG_LIFECYCLE_APP_PASSWORD"
NO_CUSTOMERS = {"name": "no-customers", "match": {"tables": ["customers"]}, "action": "deny"}


def run(coro: Awaitable) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Setup:
    """Config files in a temporary directory; ``config(...)`` writes and loads one."""

    def __init__(self, workdir: Path, *, users: list[dict] | None = None):
        self.workdir = workdir
        self.users = users or []
        self._n = 0

    def config(self, targets: list[dict], rules: list[dict] | None = None, ssh: dict | None = None) -> Config:
        self._n += 1
        path = self.workdir / f"wiregate-{self._n}.toml"
        arrays: dict[str, list[dict]] = {"targets": targets, "rules": rules or []}
        if self.users:
            arrays["identity.users"] = self.users
        path.write_text(render_config(
            {"gateway": {"state_dir": "state"}, "identity": {"dev_tokens": True},
             "policy": {"default": "allow"}, "recording": {"enabled": False}, "ssh": ssh or {}}, arrays))
        return load_config(path)


def pg_target(name: str, pg) -> dict:
    return {"name": name, "protocol": "postgres", "address": f"127.0.0.1:{pg.port}", "database": "app",
            "user": "app", "password_env": PW_ENV, "tls": "disable", "allow_groups": ["dev"]}


def reload(listener, old: PolicyEngine, cfg: Config) -> PolicyEngine:
    """What the server does on SIGHUP."""
    new = PolicyEngine(cfg, analyzer=old.analyzer, mask_key=old.mask_key)
    listener.reload(cfg, new)
    old.replace_with(new)
    return new


class PgGateway:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.policy = PolicyEngine(cfg)
        self.listener = PostgresListener(cfg, Authenticator(cfg), self.policy,
                                         server_context(Path(cfg.gateway.state_dir), None, None))
        self.token = issue_dev_token(cfg, sub="alice", groups=["dev"], ttl_seconds=600)
        self.port = 0

    async def __aenter__(self) -> "PgGateway":
        await self.listener.start("127.0.0.1", 0)
        self.port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.close()

    def reload(self, cfg: Config) -> None:
        self.policy = reload(self.listener, self.policy, cfg)

    async def connect(self, target: str = "appdb") -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            host="127.0.0.1", port=self.port, user="alice", password=self.token, dbname=target,
            sslmode="disable", autocommit=True, connect_timeout=10)


@pytest.fixture
def pg_setup(pg, tmp_path, monkeypatch) -> Setup:
    monkeypatch.setenv(PW_ENV, pg.app_password)
    monkeypatch.chdir(tmp_path)
    return Setup(tmp_path)


async def scalar(conn: psycopg.AsyncConnection, sql: str) -> object:
    cur = await conn.execute(sql)
    row = await cur.fetchone()
    return row[0] if row else None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# ---- PostgreSQL: reload ------------------------------------------------------------------------------

def test_reload_applies_a_new_deny_rule_to_an_open_session(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            conn = await gw.connect()
            assert await scalar(conn, "SELECT count(*) FROM customers") == 50
            gw.reload(pg_setup.config([pg_target("appdb", pg)], [NO_CUSTOMERS]))
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
                await conn.execute("SELECT count(*) FROM customers")
            assert exc.value.sqlstate == "42501" and 'blocked by rule "no-customers"' in str(exc.value)
            # the session goes on
            assert await scalar(conn, "SELECT count(*) FROM items") == 1000
            # and loses the rule again on the next reload
            gw.reload(pg_setup.config([pg_target("appdb", pg)]))
            assert await scalar(conn, "SELECT count(*) FROM customers") == 50
            await conn.close()

    run(go())


def test_reload_adds_and_removes_targets(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            open_conn = await gw.connect("appdb")
            with pytest.raises(psycopg.OperationalError, match='no PostgreSQL target named "second"'):
                await gw.connect("second")
            gw.reload(pg_setup.config([pg_target("second", pg)]))
            second = await gw.connect("second")
            assert await scalar(second, "SELECT current_database()") == "app"
            # appdb is gone for new sessions; the open one stays
            with pytest.raises(psycopg.OperationalError, match='no PostgreSQL target named "appdb"'):
                await gw.connect("appdb")
            assert await scalar(open_conn, "SELECT 1") == 1
            assert gw.listener.open_sessions == 2
            for conn in (open_conn, second):
                await conn.close()

    run(go())


# ---- PostgreSQL: drain -------------------------------------------------------------------------------

def test_drain_closes_an_idle_session_after_the_grace_with_57P01(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            conn = await gw.connect()
            assert await scalar(conn, "SELECT 1") == 1
            assert gw.listener.open_sessions == 1
            started = time.monotonic()
            drain = asyncio.create_task(gw.listener.drain(0.5))
            await asyncio.sleep(0.1)
            # no new connections from the start of the drain on
            assert await asyncio.to_thread(refused, gw.port)
            assert gw.listener.open_sessions == 1 and not drain.done()
            await drain
            elapsed = time.monotonic() - started
            assert 0.5 <= elapsed < 3, elapsed
            assert gw.listener.open_sessions == 0
            with pytest.raises(psycopg.OperationalError) as exc:
                await conn.execute("SELECT 1")
            assert exc.value.sqlstate == "57P01"
            assert "wiregate: the gateway is shutting down" in str(exc.value)
            await conn.close()

    run(go())


def test_drain_ends_a_session_busy_in_a_query(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            conn = await gw.connect()
            query = asyncio.create_task(conn.execute("SELECT pg_sleep(3)"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await gw.listener.drain(0.3)
            assert time.monotonic() - started < 2
            with pytest.raises(psycopg.OperationalError) as exc:
                await query
            assert exc.value.sqlstate == "57P01"
            await conn.close()

    run(go())


def test_drain_never_cuts_a_message_in_two(pg, pg_setup, monkeypatch):
    """A client that stops reading in the middle of a large result: the reply it has is cut
    where the gateway stopped forwarding, and no FATAL is written into the middle of a row."""
    monkeypatch.setattr(pg_listener, "BOUNDARY_WAIT", 0.5)

    def messages(data: bytes) -> tuple[list[int], bytes]:
        """Complete messages' types, and the incomplete rest."""
        types, pos = [], 0
        while len(data) - pos >= 5:
            end = pos + 1 + int.from_bytes(data[pos + 1:pos + 5], "big")
            if end > len(data):
                break
            types.append(data[pos])
            pos = end
        return types, data[pos:]

    def talk(port: int, token: str) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(codec.startup_message({"user": "alice", "database": "appdb"}))
        assert s.recv(9)[:1] == b"R"  # AuthenticationCleartextPassword
        s.sendall(codec.message(b"p", token.encode() + b"\0"))
        got = b""
        while not got.endswith(codec.ready_for_query(b"I")):
            got += s.recv(65536)
        s.sendall(codec.message(b"Q", b"SELECT repeat('x', 1000000) FROM generate_series(1, 64)\0"))
        return s

    def read_all(s: socket.socket) -> bytes:
        out = b""
        while chunk := s.recv(1 << 20):
            out += chunk
        s.close()
        return out

    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            s = await asyncio.to_thread(talk, gw.port, gw.token)
            await asyncio.sleep(0.5)  # the socket buffers fill up; the gateway stops reading the target
            await gw.listener.drain(0.1)
            assert gw.listener.open_sessions == 0
            return await asyncio.to_thread(read_all, s)

    data = run(go())
    types, rest = messages(data)
    assert set(types) <= {ord("T"), ord("D")}, set(types)
    assert rest and len(types) < 66  # stopped in the middle of the result
    # ... where a FATAL would have become part of a row
    assert b"57P01" not in data and pg_listener.SHUTDOWN_MESSAGE.encode() not in data


def test_drain_returns_as_soon_as_the_sessions_end(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            conns = [await gw.connect() for _ in range(3)]
            started = time.monotonic()
            drain = asyncio.create_task(gw.listener.drain(30))
            for conn in conns:
                await asyncio.sleep(0.1)
                assert await scalar(conn, "SELECT 1") == 1  # open sessions keep working meanwhile
                await conn.close()
            await asyncio.wait_for(drain, 5)
            return time.monotonic() - started

    elapsed = run(go())
    assert elapsed < 2, elapsed  # the last session ended at ~0.3 s; the grace was 30 s


def test_drain_with_no_sessions_returns_at_once(pg, pg_setup):
    async def go():
        async with PgGateway(pg_setup.config([pg_target("appdb", pg)])) as gw:
            started = time.monotonic()
            await gw.listener.drain(30)
            assert time.monotonic() - started < 1
            assert await asyncio.to_thread(refused, gw.port)

    run(go())


# ---- SSH ------------------------------------------------------------------------------------------

class SshClient(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


class SshGateway:
    def __init__(self, setup: Setup, cfg: Config, key: asyncssh.SSHKey):
        self.setup = setup
        self.policy = PolicyEngine(cfg)
        self.listener = SshListener(cfg, Authenticator(cfg), self.policy, Path(cfg.gateway.state_dir))
        self.key = key
        self.port = 0

    async def __aenter__(self) -> "SshGateway":
        await self.listener.start("127.0.0.1", 0)
        self.port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.close()

    def reload(self, cfg: Config) -> None:
        self.policy = reload(self.listener, self.policy, cfg)

    async def connect(self, target: str = "web") -> tuple[asyncssh.SSHClientConnection, SshClient]:
        conn, client = await asyncssh.create_connection(
            SshClient, "127.0.0.1", self.port, username=target, client_keys=[self.key], known_hosts=None,
            config=None, agent_path=None)
        return conn, client  # type: ignore[return-value]


@pytest.fixture
def ssh_setup(sshd, tmp_path, monkeypatch) -> tuple[Setup, asyncssh.SSHKey, Callable[..., dict]]:
    monkeypatch.chdir(tmp_path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    setup = Setup(tmp_path, users=[{"name": "alice", "groups": ["sre"],
                                    "ssh_keys": [key.export_public_key().decode().strip()]}])

    def target(name: str) -> dict:
        return {"name": name, "protocol": "ssh", "address": f"127.0.0.1:{sshd.port}", "user": "root",
                "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "allow_groups": ["sre"]}

    return setup, key, target


def test_ssh_reload_rules_and_targets(ssh_setup):
    setup, key, target = ssh_setup

    async def go():
        async with SshGateway(setup, setup.config([target("web")]), key) as gw:
            conn, _ = await gw.connect("web")
            assert (await conn.run("echo hello", check=True)).stdout == "hello\n"
            gw.reload(setup.config([target("other")], [{"name": "no-echo", "match": {"command": ["echo *"]},
                                                         "action": "deny"}]))
            # the open connection stays, under the new rules
            result = await conn.run("echo hello")
            assert result.exit_status == 126 and 'blocked by rule "no-echo"' in result.stderr
            assert (await conn.run("true")).exit_status == 0
            # web is gone for new connections, other is there
            with pytest.raises(asyncssh.PermissionDenied):
                await gw.connect("web")
            other, _ = await gw.connect("other")
            assert (await other.run("uname", check=True)).exit_status == 0
            assert gw.listener.open_sessions == 2
            # listener options follow too: a rule that may allow agent forwarding turns it on
            gw.reload(setup.config([target("other")], [{"name": "agent", "match": {"forward": ["agent"]},
                                                         "action": "allow"}], ssh={"login_timeout": "5s"}))
            assert gw.listener.agent_forwarding and gw.listener.login_timeout == 5
            third, _ = await gw.connect("other")
            assert (await third.run("true")).exit_status == 0
            for c in (conn, other, third):
                c.close()
                await c.wait_closed()

    run(go())


def test_ssh_drain_tells_open_channels_and_disconnects(ssh_setup, tmp_path):
    setup, key, target = ssh_setup
    key_path = tmp_path / "alice_ed25519"
    key_path.write_bytes(key.export_private_key())
    key_path.chmod(0o600)

    async def go():
        async with SshGateway(setup, setup.config([target("web")]), key) as gw:
            # OpenSSH's client: it reports the disconnect code and reason it receives
            ssh = await asyncio.create_subprocess_exec(
                "ssh", "-F", "/dev/null", "-T", "-p", str(gw.port), "-i", str(key_path), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=INFO", "web@127.0.0.1", "echo started; sleep 30",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
            assert await asyncio.wait_for(ssh.stdout.readline(), 10) == b"started\n"
            assert gw.listener.open_sessions == 1
            started = time.monotonic()
            drain = asyncio.create_task(gw.listener.drain(0.5))
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(refused, gw.port)
            await asyncio.wait_for(drain, 10)
            elapsed = time.monotonic() - started
            assert 0.5 <= elapsed < 4, elapsed
            assert gw.listener.open_sessions == 0
            _, stderr = await asyncio.wait_for(ssh.communicate(), 10)
            return ssh.returncode, stderr.decode()

    status, stderr = run(go())
    assert status == 255  # ssh's own "the connection ended", not the command's status
    # on the channel's stderr (OpenSSH leaves the disconnect message unreported when it has
    # already seen its session channel close; the asyncssh test below checks that one)
    assert SHUTDOWN_MESSAGE in stderr.splitlines(), stderr


def test_ssh_drain_with_a_pty_writes_a_terminal_line(ssh_setup, caplog):
    setup, key, target = ssh_setup
    caplog.set_level(logging.DEBUG, logger="asyncssh")

    async def go():
        async with SshGateway(setup, setup.config([target("web")]), key) as gw:
            conn, _ = await gw.connect()
            process = await conn.create_process(term_type="xterm", stdin=asyncssh.PIPE)
            await asyncio.sleep(0.3)
            await gw.listener.drain(0.2)
            output = await asyncio.wait_for(process.stdout.read(), 5)
            await asyncio.wait_for(conn.wait_closed(), 5)
            return output

    output = run(go())
    assert output.endswith(f"\r\n{SHUTDOWN_MESSAGE}\r\n"), output[-200:]
    # the client's side of the connection: SSH_DISCONNECT_BY_APPLICATION is 11
    received = [r.getMessage() for r in caplog.records if "Received disconnect" in r.getMessage()]
    assert received and received[0].endswith(f"Received disconnect: {SHUTDOWN_MESSAGE} (11)"), received


def test_ssh_drain_returns_as_soon_as_the_connections_end(ssh_setup):
    setup, key, target = ssh_setup

    async def go():
        async with SshGateway(setup, setup.config([target("web")]), key) as gw:
            conn, _ = await gw.connect()
            started = time.monotonic()
            drain = asyncio.create_task(gw.listener.drain(30))
            # the open connection keeps working meanwhile
            assert (await conn.run("echo still here", check=True)).stdout == "still here\n"
            conn.close()
            await conn.wait_closed()
            await asyncio.wait_for(drain, 5)
            return time.monotonic() - started

    elapsed = run(go())
    assert elapsed < 3, elapsed

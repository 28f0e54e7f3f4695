"""`wiregate demo`: a throwaway PostgreSQL full of fake PII, with the gateway in front.

Everything lives in one temp dir (server data, gateway config, gateway state
and log) and is removed on Ctrl-C / SIGTERM unless ``--keep`` is given. The
helpers for rendering a config and running ``wiregate serve`` as a child
process are shared with the benchmarks.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.errors import WiregateError
from gateway.pgserver import log_tail

DEMO_TARGET = "demo"
DEMO_USER = "demo"
DEMO_GROUP = "dev"
# the demo's approver, who also reads the admin API
DEMO_APPROVER = "lead"
DEMO_ADMIN_GROUP = "leads"
DEMO_PASSWORD_ENV = "WIREGATE_DEMO_DB_PASSWORD"
DEMO_CUSTOMERS = 200
DEMO_TOKEN_TTL = 8 * 3600
DESTRUCTIVE_SQL = ["DROP", "TRUNCATE", "ALTER ROLE", "CREATE ROLE", "GRANT"]
DEMO_SSH_TARGET = "demo-ssh"
DEMO_SSH_PORT = 2222
# a file on the SSH target with fake secrets, to show output masking
DEMO_ENV_TEXT = ("APP_ADMIN_EMAIL=ops.lead@example.com\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
                 "PAYMENT_TEST_CARD=4111 1111 1111 1111\nLOG_LEVEL=info\n")


class DemoSsh:
    """The demo's SSH side: a throwaway sshd, the caller's key, the gateway's SSH port."""

    def __init__(self, tmp: Path, port: int):
        import asyncssh

        from gateway.sshserver import ThrowawaySshd

        self.sshd = ThrowawaySshd(base_dir=tmp / "sshd").start()
        self.port = port
        key = asyncssh.generate_private_key("ssh-ed25519", comment=DEMO_USER)
        self.key_path = tmp / "demo_ed25519"
        self.key_path.write_bytes(key.export_private_key())
        self.key_path.chmod(0o600)
        self.public_key = key.export_public_key().decode().strip()
        self.known_hosts = tmp / "gateway_known_hosts"
        self.env_file = self.sshd.root_dir / "app.env"
        self.env_file.write_text(DEMO_ENV_TEXT)

    def pin_gateway(self, state_dir: Path) -> None:
        kind, blob = (state_dir / "keys" / "ssh_host_ed25519.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")

    def command(self) -> str:
        return (f"ssh -p {self.port} -i {self.key_path} -o IdentitiesOnly=yes "
                f"-o UserKnownHostsFile={self.known_hosts} {DEMO_SSH_TARGET}@127.0.0.1")

    def stop(self) -> None:
        self.sshd.stop()


# --------------------------------------------------------------------------- config rendering


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (str, Path)):
        s = str(v)
        out = []
        for ch in s:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def render_config(sections: Mapping[str, Mapping[str, Any]], arrays: Mapping[str, Iterable[Mapping[str, Any]]],
                  header: str = "") -> str:
    """TOML text: plain ``[sections]`` first, then ``[[arrays]]`` of tables (file order kept)."""
    lines = [f"# {line}" for line in header.splitlines()]
    if lines:
        lines.append("")
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for name, items in arrays.items():
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the gateway as a child process


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start_gateway(config_path: Path, log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``python -m gateway serve -c CONFIG`` with stdout+stderr appended to ``log_path``.

    The child gets its own session so that a Ctrl-C meant for the caller does
    not reach it; stop it with ``stop_process``.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(config_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env,
                                start_new_session=True)


def wait_listening(proc: subprocess.Popen, host: str, port: int, log_path: Path, timeout: float = 15.0) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise with the child's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise WiregateError(f"the gateway exited with status {proc.returncode} before listening on "
                                f"{host}:{port}; its output:\n{log_tail(log_path)}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise WiregateError(f"the gateway did not listen on {host}:{port} within {timeout:.0f} s; "
                                f"its output:\n{log_tail(log_path)}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Fine on an already finished process."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- demo


def demo_config(*, state_dir: Path, port: int, pg_port: int, ssh: "DemoSsh | None" = None,
                admin_port: int | None = None) -> str:
    listen = {"postgres": f"127.0.0.1:{port}"}
    if admin_port is not None:
        listen["admin"] = f"127.0.0.1:{admin_port}"
    ssh_targets: list[dict[str, Any]] = []
    ssh_rules: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    if ssh is not None:
        listen["ssh"] = f"127.0.0.1:{ssh.port}"
        ssh_targets.append({"name": DEMO_SSH_TARGET, "protocol": "ssh", "address": f"127.0.0.1:{ssh.sshd.port}",
                            "user": "root", "key_file": str(ssh.sshd.client_key),
                            "known_hosts": str(ssh.sshd.known_hosts), "allow_groups": [DEMO_GROUP]})
        ssh_rules = [{"name": "no-destructive-commands", "targets": [DEMO_SSH_TARGET],
                      "match": {"command": ["rm -rf *", "shutdown*", "reboot*"]}, "action": "deny"},
                     {"name": "no-system-writes", "targets": [DEMO_SSH_TARGET],
                      "match": {"file": ["write /etc/*", "remove /etc/*"]}, "action": "deny"},
                     {"name": "mask-secrets", "targets": [DEMO_SSH_TARGET], "action": "mask",
                      "detectors": ["aws_key", "private_key", "jwt", "bearer_token"], "style": "redact"}]
        users.append({"name": DEMO_USER, "groups": [DEMO_GROUP], "ssh_keys": [ssh.public_key]})
    return render_config(
        {
            "gateway": {"state_dir": str(state_dir)},
            "listen": listen,
            "identity": {"dev_tokens": True, "admin_groups": [DEMO_ADMIN_GROUP]},
        },
        {
            **({"identity.users": users} if users else {}),
            "targets": [{
                "name": DEMO_TARGET,
                "protocol": "postgres",
                "address": f"127.0.0.1:{pg_port}",
                "database": "app",
                "user": "app",
                "password_env": DEMO_PASSWORD_ENV,
                "tls": "prefer",
                "allow_groups": [DEMO_GROUP],
            }, *ssh_targets],
            "rules": [*ssh_rules, {
                "name": "no-destructive-sql",
                "match": {"sql": DESTRUCTIVE_SQL},
                "action": "deny",
            }, {
                "name": "review-schema-changes",
                "match": {"sql": ["ALTER", "CREATE"]},
                "action": "review",
                "approvers": [DEMO_ADMIN_GROUP],
                "timeout": "10m",
            }, {
                "name": "mask-ids",
                "action": "mask",
                "columns": ["customers.ssn", "customers.card"],
                "style": "partial",
            }, {
                "name": "mask-contacts",
                "action": "mask",
                "detectors": ["email", "phone", "credit_card"],
                "style": "redact",
            }],
            # [policy] is a plain section but reads best at the end
        },
        header="wiregate demo configuration, generated by `wiregate demo`.\n"
               "The target's password comes from $" + DEMO_PASSWORD_ENV + "; it is never written here.",
    ) + '\n[policy]\ndefault = "allow"\n'


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


class _LogEcho:
    """Echo complete new lines of the gateway's log file to our stderr."""

    def __init__(self, path: Path, prefix: str) -> None:
        self._f = open(path, "rb")
        self._f.seek(0, os.SEEK_END)
        self._prefix = prefix
        self._rest = b""

    def pump(self, final: bool = False) -> None:
        data = self._rest + self._f.read()
        lines = data.split(b"\n")
        self._rest = b"" if final else lines.pop()
        for line in lines:
            if line:
                print(f"{self._prefix}{line.decode(errors='replace')}", file=sys.stderr)
        sys.stderr.flush()

    def close(self) -> None:
        self._f.close()


def run_demo(keep: bool = False, port: int = 15432) -> int:
    from gateway.pgserver import ThrowawayPostgres, customers_sql

    if not 0 < port < 65536:
        raise WiregateError(f"--port {port}: not a TCP port")
    if not port_is_free(port):
        raise WiregateError(f"127.0.0.1:{port} is already in use (another wiregate demo?); "
                            "stop it or pick another port with --port")

    old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C and SIGTERM unwind the stack wherever we are, so the finally
    # below cleans up even when they arrive half-way through start-up.
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)

    tmp = Path(tempfile.mkdtemp(prefix="wiregate-demo-"))
    tmp.chmod(0o711)  # the server's user (nobody, when we are root) must reach its dir inside
    pg: ThrowawayPostgres | None = None
    ssh: DemoSsh | None = None
    gw: subprocess.Popen | None = None
    status = 0
    try:
        print("wiregate demo: starting a throwaway PostgreSQL ...", file=sys.stderr, flush=True)
        pg = ThrowawayPostgres(auth="scram-sha-256", ssl=True, base_dir=tmp, keep=keep).start()
        app_password = secrets.token_urlsafe(18)
        pg.create_role("app", app_password)
        pg.create_database("app", owner="app")
        pg.psql(customers_sql(DEMO_CUSTOMERS, owner="app"), dbname="app")

        ssh, ssh_note = _start_ssh(tmp, port)

        config_path = tmp / "wiregate.toml"
        admin_port = _free_port()
        config_path.write_text(demo_config(state_dir=tmp / "state", port=port, pg_port=pg.port, ssh=ssh,
                                           admin_port=admin_port))

        from gateway.config import load_config
        from gateway.identity import issue_dev_token

        cfg = load_config(config_path)
        token = issue_dev_token(cfg, sub=DEMO_USER, groups=[DEMO_GROUP], ttl_seconds=DEMO_TOKEN_TTL)
        approver = issue_dev_token(cfg, sub=DEMO_APPROVER, groups=[DEMO_ADMIN_GROUP], ttl_seconds=DEMO_TOKEN_TTL)

        print("wiregate demo: starting the gateway ...", file=sys.stderr, flush=True)
        log_path = tmp / "gateway.log"
        log_path.touch()
        gw = start_gateway(config_path, log_path, env={DEMO_PASSWORD_ENV: app_password})
        wait_listening(gw, "127.0.0.1", port, log_path, timeout=15)
        if ssh is not None:
            wait_listening(gw, "127.0.0.1", ssh.port, log_path, timeout=15)
            ssh.pin_gateway(tmp / "state")

        url = f"postgresql://{DEMO_USER}:{quote(token, safe='')}@127.0.0.1:{port}/{DEMO_TARGET}?sslmode=require"
        wait_listening(gw, "127.0.0.1", admin_port, log_path, timeout=15)
        approve = f"WIREGATE_URL=http://127.0.0.1:{admin_port} WIREGATE_TOKEN={approver} wiregate approvals"
        print(_banner(pg=pg, port=port, tmp=tmp, config_path=config_path, log_path=log_path, url=url, keep=keep,
                      ssh=ssh, ssh_note=ssh_note, approve=approve), flush=True)

        time.sleep(0.3)  # let the gateway log our readiness probe before echoing its log
        echo = _LogEcho(log_path, "gateway | ")
        try:
            while gw.poll() is None:
                echo.pump()
                time.sleep(0.2)
            echo.pump(final=True)
        finally:
            echo.close()
        print(f"wiregate demo: the gateway exited unexpectedly (status {gw.returncode})", file=sys.stderr)
        status = 1
    except (_Stop, KeyboardInterrupt):
        print("\nwiregate demo: stopping ...", file=sys.stderr, flush=True)
    finally:
        # a second Ctrl-C must not leave a server behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop_process(gw)
            if ssh is not None:
                ssh.stop()
            if pg is not None:
                pg.stop()
            if keep:
                print(f"wiregate demo: kept {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    if status == 0:
        print("wiregate demo: stopped.", file=sys.stderr)
    return status


def _start_ssh(tmp: Path, port: int) -> tuple[DemoSsh | None, str]:
    """The SSH side of the demo where Debian's sshd is installed and we may run it (as root)."""
    from gateway.sshserver import SSHD, SshdError

    if not os.access(SSHD, os.X_OK):
        return None, f"no SSH target: {SSHD} is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return None, "no SSH target: the throwaway sshd must run as root"
    ssh_port = DEMO_SSH_PORT if port_is_free(DEMO_SSH_PORT) else _free_port()
    print("wiregate demo: starting a throwaway sshd ...", file=sys.stderr, flush=True)
    try:
        return DemoSsh(tmp, ssh_port), ""
    except SshdError as e:
        return None, f"no SSH target: {e}"


def _free_port() -> int:
    from gateway.pgserver import free_port

    return free_port()


def _ssh_banner(ssh: DemoSsh | None, note: str) -> str:
    if ssh is None:
        return f"\n({note})\n" if note else ""
    return f"""
SSH through the gateway (your key is {ssh.key_path}; target "{DEMO_SSH_TARGET}" is a throwaway sshd):

  {ssh.command()}

Then try:

  cat {ssh.env_file}          # the email, AWS key and card are masked
  rm -rf /tmp/anything         # blocked by rule "no-destructive-commands"
  scp -P {ssh.port} -i {ssh.key_path} -o UserKnownHostsFile={ssh.known_hosts} /etc/hostname {DEMO_SSH_TARGET}@127.0.0.1:/etc/x
                               # blocked by rule "no-system-writes"
"""


def _banner(*, pg: Any, port: int, tmp: Path, config_path: Path, log_path: Path, url: str, keep: bool,
            ssh: DemoSsh | None = None, ssh_note: str = "", approve: str = "") -> str:
    version = pg.bindir.parent.name if pg.bindir is not None else "?"
    ends = f"{tmp} is kept" if keep else f"{tmp} is removed"
    return f"""
wiregate demo is running

  PostgreSQL {version} (throwaway)  127.0.0.1:{pg.port}  database "app": table customers, {DEMO_CUSTOMERS} rows of fake PII
  wiregate gateway           127.0.0.1:{port}  target "{DEMO_TARGET}", you are "{DEMO_USER}" (group "{DEMO_GROUP}")
  config                     {config_path}
  gateway log                {log_path}  (also echoed below)

Connect through the gateway; the password in the URL is a dev token valid for 8 hours:

  psql "{url}"

Then try:

  SELECT * FROM customers LIMIT 5;            -- ssn and card masked, emails and phones redacted
  SELECT upper(ssn), note FROM customers;      -- masked through expressions, and inside free text
  DROP TABLE customers;                        -- blocked by rule "no-destructive-sql"
  CREATE TABLE notes (id int, body text);      -- held for approval by rule "review-schema-changes"

and approve (or deny) it as "{DEMO_APPROVER}", the demo's approver, from another terminal:

  {approve} list
  {approve} approve <ID>
{_ssh_banner(ssh, ssh_note)}
Every session is recorded; after you disconnect, in another terminal:

  wiregate sessions list -c {config_path}
  wiregate replay <ID> -c {config_path} --speed 0

Press Ctrl-C to stop everything ({ends}).
"""

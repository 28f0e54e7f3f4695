"""A gateway serving SSH in front of a throwaway OpenSSH server, and the callers' keys, for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh

from tests.e2e.gateway_process import GatewayProcess
from gateway.sshserver import ThrowawaySshd, other_host_key_line

PASSWORD_ENV = "WG_TEST_SSH_PASSWORD"
SECRET_EMAIL = "carol.secret@example.com"
SECRET_AWS = "AKIAIOSFODNN7EXAMPLE"


class Caller:
    """An OpenSSH key pair for one identity, and the client options to reach the gateway."""

    def __init__(self, workdir: Path, name: str):
        key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
        self.name = name
        self.key_path = workdir / f"{name}_ed25519"
        self.key_path.write_bytes(key.export_private_key())
        self.key_path.chmod(0o600)
        self.public_line = key.export_public_key().decode().strip()
        self.key = key


class SshGateway:
    """``gw`` (a GatewayProcess with listen.ssh) and everything tests need to reach it."""

    def __init__(self, workdir: Path, sshd: ThrowawaySshd, *, rules: list[dict] | None = None,
                 policy_default: str = "allow", extra: dict | None = None, identity: dict | None = None,
                 password_user: tuple[str, str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.sshd = sshd
        self.alice = Caller(workdir, "alice")
        self.bob = Caller(workdir, "bob")  # not in any group allowed on the targets
        bad_known_hosts = workdir / "bad_known_hosts"
        bad_known_hosts.write_text(other_host_key_line(sshd.port) + "\n")
        common = {"protocol": "ssh", "address": f"127.0.0.1:{sshd.port}", "user": "root",
                  "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts)}
        targets = [
            {"name": "web", "allow_groups": ["sre"], **common},
            {"name": "masked", "allow_groups": ["sre"], **common},
            {"name": "relay", "allow_groups": ["sre"], **common},
            *([{"name": "as-user", "allow_groups": ["sre"], "protocol": "ssh", "address": f"127.0.0.1:{sshd.port}",
                 "user": password_user[0], "password_env": PASSWORD_ENV, "known_hosts": str(sshd.known_hosts)}]
              if password_user else []),
            {"name": "pinned-wrong", "allow_groups": ["sre"], **common, "known_hosts": str(bad_known_hosts)},
        ]
        self.gw = GatewayProcess(
            workdir / "gateway", targets=targets, rules=rules, policy_default=policy_default, ssh=True,
            users=[{"name": "alice", "groups": ["sre"], "ssh_keys": [self.alice.public_line]},
                   {"name": "bob", "groups": ["web"], "ssh_keys": [self.bob.public_line]}],
            extra=extra, identity=identity, env={PASSWORD_ENV: password_user[1]} if password_user else None)
        self.known_hosts = workdir / "gateway_known_hosts"

    def start(self) -> "SshGateway":
        self.gw.start()
        host_pub = (self.gw.workdir / "state" / "keys" / "ssh_host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.gw.ssh_port} {host_pub[0]} {host_pub[1]}\n")
        return self

    def stop(self) -> None:
        self.gw.stop()

    @property
    def port(self) -> int:
        assert self.gw.ssh_port is not None
        return self.gw.ssh_port

    def options(self, caller: Caller | None = None) -> list[str]:
        """``-o`` options for ssh, scp, sftp (no port flag: -p / -P differ)."""
        caller = caller or self.alice
        return ["-F", "/dev/null", "-o", f"Port={self.port}", "-o", f"IdentityFile={caller.key_path}",
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def ssh(self, target: str, *command: str, caller: Caller | None = None, input: bytes | None = None,
            extra: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.options(caller), *extra, f"{target}@127.0.0.1", *command],
                              input=input, capture_output=True, timeout=timeout)

    def connect(self, target: str = "web", **kwargs) -> "asyncssh.SSHClientConnection":
        """An asyncssh client connection (awaitable) as alice, unless told otherwise."""
        options = {"username": target, "client_keys": [self.alice.key], "known_hosts": str(self.known_hosts),
                   "config": None, "agent_path": None}
        options.update(kwargs)
        return asyncssh.connect("127.0.0.1", self.port, **options)

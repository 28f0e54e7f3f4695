"""Run `wiregate serve` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import load_config
from gateway.demo import render_config, stop_process
from gateway.identity import issue_dev_token
from gateway.pgserver import free_port


class GatewayProcess:
    def __init__(self, workdir: Path, *, targets: list[dict], rules: list[dict] | None = None,
                 users: list[dict] | None = None, env: dict[str, str] | None = None,
                 policy_default: str = "allow", identity: dict | None = None, extra: dict | None = None,
                 ssh: bool = False, http: bool = False, postgres: bool = True, admin: bool = False,
                 store: str | None = None, gateway: dict | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = "127.0.0.1"
        # listen.ssh too, on its own port
        self.ssh_port = free_port() if ssh else None
        self.serves_postgres = postgres
        # listen.http too, on its own port
        self.http_port = free_port() if http else None
        listen = {"postgres": f"{self.host}:{self.port}"} if postgres else {}
        if ssh:
            listen["ssh"] = f"{self.host}:{self.ssh_port}"
        if http:
            listen["http"] = f"{self.host}:{self.http_port}"
        # listen.admin too (the admin API), on its own port
        self.admin_port = free_port() if admin else None
        if admin:
            listen["admin"] = f"{self.host}:{self.admin_port}"
        section = {"state_dir": "state", **({"store": store} if store else {}), **(gateway or {})}
        workdir.mkdir(parents=True, exist_ok=True)
        ident = {"dev_tokens": True}
        ident.update(identity or {})
        arrays: dict[str, list[dict]] = {"targets": targets, "rules": rules or []}
        if users:
            arrays["identity.users"] = users
        self.config_path = workdir / "wiregate.toml"
        self.config_path.write_text(render_config(
            {"gateway": section, "listen": listen,
             "identity": ident, "policy": {"default": policy_default},
             **{k: v for k, v in (extra or {}).items() if not isinstance(v, list)}},
            {**arrays, **{k: v for k, v in (extra or {}).items() if isinstance(v, list)}}))
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "gateway.log"

    def start(self) -> "GatewayProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(self.config_path)],
                                     env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                for port in (self.port if self.serves_postgres else None, self.ssh_port, self.http_port,
                             self.admin_port):
                    if port is not None:
                        socket.create_connection((self.host, port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not listen within 20 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def token(self, sub: str, groups: list[str], ttl: int = 3600) -> str:
        return issue_dev_token(load_config(self.config_path), sub=sub, groups=groups, ttl_seconds=ttl)

    def dsn(self, user: str, token: str, target: str, sslmode: str = "require", **params: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in params.items())
        return f"postgresql://{user}:{token}@{self.host}:{self.port}/{target}?sslmode={sslmode}{extra}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        stop_process(self.proc)

"""Real upstream servers for the HTTP/MCP end-to-end tests, as subprocesses, plus client helpers.

    with UpstreamProcess(workdir).start() as up:        # tests/e2e/http_upstream.py
        httpx.get(up.url + "/users")
    with McpServerProcess(workdir, json_response=False).start() as mcp:   # tests/e2e/mcp_tools_server.py
        async with mcp_client(mcp.mcp_url, {"Authorization": "Bearer ..."}) as session:
            await session.call_tool("echo", {"text": "hi"})
        mcp.calls()                                     # every tools/call the server received

Each server runs with the venv's interpreter on a fresh loopback port, logs to a
file in its workdir, and counts as ready once its port accepts a connection. A
failed start raises with the log; ``.log()`` gives it to a failing test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway.demo import stop_process
from gateway.pgserver import free_port

__all__ = ["McpServerProcess", "ServiceProcess", "UpstreamProcess", "mcp_client"]

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 20.0


class ServiceProcess:
    """A ``python -m MODULE --port P ...`` child process on 127.0.0.1."""

    module = ""
    name = "service"

    def __init__(self, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port(HOST)
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = workdir / f"{self.name}-{self.port}.log"
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--host", self.host, "--port", str(self.port), *self.extra_args]

    def start(self) -> Self:
        env = dict(os.environ)
        # the module lives in the repo's tests package, which is not installed
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {START_TIMEOUT:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UpstreamProcess(ServiceProcess):
    """tests/e2e/http_upstream.py: echo, PII bodies, SSE, streams, redirects, WebSocket."""

    module = "tests.e2e.http_upstream"
    name = "http-upstream"


class McpServerProcess(ServiceProcess):
    """tests/e2e/mcp_tools_server.py at ``.mcp_url``; SSE responses, or JSON with ``json_response=True``."""

    module = "tests.e2e.mcp_tools_server"
    name = "mcp-server"

    def __init__(self, workdir: Path, *, json_response: bool = False) -> None:
        super().__init__(workdir)
        self.json_response = json_response
        self.mcp_url = f"{self.url}/mcp"
        self.calls_log = workdir / f"mcp-calls-{self.port}.jsonl"
        self.extra_args = ["--calls-log", str(self.calls_log)] + (["--json-response"] if json_response else [])

    def calls(self) -> list[dict[str, Any]]:
        """Every tools/call received so far: ``{"tool", "arguments", "headers"}``, oldest first."""
        if not self.calls_log.exists():
            return []
        lines = self.calls_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str] | None = None, *, timeout: float = 30.0,
                     **session_kwargs: Any) -> AsyncIterator[ClientSession]:
    """An initialized SDK ``ClientSession`` over streamable HTTP to ``url``, sending ``headers`` on every request.

    ``session_kwargs`` go to ``ClientSession`` (e.g. ``logging_callback``). The
    session is deleted (HTTP DELETE) on exit, as the SDK client does.
    """
    http_timeout = httpx2.Timeout(timeout, read=max(timeout, 60.0))
    async with httpx2.AsyncClient(headers=dict(headers or {}), timeout=http_timeout) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=timeout, **session_kwargs) as session:
                await session.initialize()
                yield session

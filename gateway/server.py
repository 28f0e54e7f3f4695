"""`wiregate serve`: start every listener the config names and run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config, parse_listen
from gateway.errors import WiregateError
from gateway.identity import Authenticator
from gateway.tls import server_context
from policy.engine import PolicyEngine
from policy.masking import load_or_create_key

if TYPE_CHECKING:
    from recorder.sinks import AuditExporter
    from recorder.writer import Recorder

log = logging.getLogger("wiregate")


def setup_logging() -> None:
    level = os.environ.get("WIREGATE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(cfg: Config) -> int:
    setup_logging()
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; run on asyncio's loop rather than not at all
        return asyncio.run(_serve(cfg))
    return uvloop.run(_serve(cfg))


async def _serve(cfg: Config) -> int:
    if cfg.listen.admin:
        log.warning("listen.admin: this version of wiregate does not serve the admin API yet; ignored")
    if not cfg.listen.postgres and not cfg.listen.ssh and not cfg.listen.http:
        raise WiregateError("nothing to serve: set listen.postgres, listen.ssh or listen.http in the config")
    state_dir = Path(cfg.gateway.state_dir)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    authenticator = Authenticator(cfg)
    # the `hash` mask style's key: stable across restarts so hashed values stay comparable
    policy = PolicyEngine(cfg, mask_key=load_or_create_key(state_dir / "keys" / "mask_hmac.key"))
    recorder, exporter = start_recorder(cfg, state_dir)
    listeners: list = []
    try:
        if cfg.listen.postgres:
            from protocols.postgres.listener import PostgresListener

            server_ssl = server_context(state_dir, cfg.gateway.tls_cert_file, cfg.gateway.tls_key_file)
            pg = PostgresListener(cfg, authenticator, policy, server_ssl, recorder)
            await _start(pg, "postgres", cfg.listen.postgres)
            listeners.append(pg)
            log.info("postgres listening on %s (%d targets)", _addrs(pg), len(pg.targets))
        if cfg.listen.ssh:
            from protocols.ssh.server import SshListener

            ssh = SshListener(cfg, authenticator, policy, state_dir, recorder)
            await _start(ssh, "ssh", cfg.listen.ssh)
            listeners.append(ssh)
            log.info("ssh listening on %s (%d targets)", _addrs(ssh), len(ssh.targets))
        if cfg.listen.http:
            from protocols.http.listener import HttpListener

            http = HttpListener(cfg, authenticator, policy, recorder)
            await _start(http, "http", cfg.listen.http)
            listeners.append(http)
            log.info("http listening on %s (%d targets)", _addrs(http), len(http.targets))
    except BaseException:
        for listener in listeners:
            await listener.close()
        stop_recorder(recorder, exporter)
        raise

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    for listener in listeners:
        await listener.close()
    # the writer thread drains what is queued (sessions just closed seal their files)
    await asyncio.get_running_loop().run_in_executor(None, stop_recorder, recorder, exporter)
    return 0


async def _start(listener, name: str, address: str) -> None:
    host, port = parse_listen(address)
    try:
        await listener.start(host, port)
    except OSError as e:
        raise WiregateError(f"listen.{name}: cannot listen on {address}: {e.strerror}") from None


def _addrs(listener) -> str:
    return ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in listener.sockets)


def start_recorder(cfg: Config, state_dir: Path) -> "tuple[Recorder | None, AuditExporter | None]":
    """The session recorder and its audit export (None when recording is off / no sinks)."""
    if not cfg.recording.enabled:
        log.warning("recording is off ([recording] enabled = false): sessions leave no evidence")
        return None, None
    from gateway.keys import load_or_create_ed25519
    from recorder.cli import RECORDING_KEY
    from recorder.writer import Recorder

    sinks = None
    if cfg.audit:
        from recorder.sinks import AuditExporter

        sinks = AuditExporter(state_dir, cfg.audit)
        sinks.start()
    key = load_or_create_ed25519(state_dir / RECORDING_KEY)
    recorder = Recorder(state_dir, cfg.recording, key, instance=f"{socket.gethostname()}:{os.getpid()}", sinks=sinks)
    recorder.start()
    return recorder, sinks


def stop_recorder(recorder: "Recorder | None", exporter: "AuditExporter | None") -> None:
    if recorder is not None:
        recorder.stop()
    if exporter is not None:
        exporter.stop()

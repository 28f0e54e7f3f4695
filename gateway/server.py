"""`wiregate serve`: start every listener the config names and run until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config, parse_listen
from gateway.errors import WiregateError
from gateway.identity import Authenticator, parse_duration
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


def serve(cfg: Config, config_path: Path | None = None) -> int:
    """``config_path`` is read again on SIGHUP (None: SIGHUP is ignored)."""
    setup_logging()
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; run on asyncio's loop rather than not at all
        return asyncio.run(_serve(cfg, config_path))
    return uvloop.run(_serve(cfg, config_path))


async def _serve(cfg: Config, config_path: Path | None) -> int:
    gateway = Gateway(cfg, config_path)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def hangup() -> None:
        task = loop.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    await stop.wait()
    loop.remove_signal_handler(signal.SIGHUP)
    # a second SIGTERM/SIGINT during the drain stops at once
    loop.add_signal_handler(signal.SIGTERM, gateway.hurry)
    loop.add_signal_handler(signal.SIGINT, gateway.hurry)
    await gateway.stop()
    return 0


class Gateway:
    """Everything `wiregate serve` runs, owned in one place: the store, the recorder, the
    policy engine, the approval broker, the listeners and the admin API."""

    def __init__(self, cfg: Config, config_path: Path | None) -> None:
        if not (cfg.listen.postgres or cfg.listen.ssh or cfg.listen.http):
            raise WiregateError("nothing to serve: set listen.postgres, listen.ssh or listen.http in the config")
        self.cfg = cfg
        self.config_path = config_path
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.state_dir = Path(cfg.gateway.state_dir)
        self.listeners: list = []
        self.admin = None
        self.store = None
        self.broker = None
        self.recorder = None
        self.exporter = None
        self.state = "starting"
        self._hurry = asyncio.Event()

    async def start(self) -> None:
        from gateway.broker import Broker
        from gateway.metrics import Metrics
        from gateway.notify import Notifier, admin_url
        from gateway.store import open_store

        cfg = self.cfg
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.metrics = Metrics()
        self.store = open_store(cfg, instance=self.instance)
        await self.store.open()
        try:
            self.authenticator = Authenticator(cfg, store=self.store)
            # the `hash` mask style's key: stable across restarts so hashed values stay comparable
            self.policy = PolicyEngine(cfg, mask_key=load_or_create_key(self.state_dir / "keys" / "mask_hmac.key"),
                                       on_decision=self.metrics.command)
            self.recorder, self.exporter = start_recorder(cfg, self.state_dir)
            if self.recorder is not None:
                self.recorder.metrics = self.metrics
                self.recorder.mirror = self.store.session_mirror()
            self.notifier = Notifier(cfg)
            self.broker = Broker(cfg, self.store, instance=self.instance, metrics=self.metrics, notifier=self.notifier)
            await self.broker.start()
            await self._start_listeners(admin_url(cfg))
        except BaseException:
            await self._close_all()
            raise
        self.state = "ok"

    async def _start_listeners(self, url: str | None) -> None:
        cfg = self.cfg
        if cfg.listen.postgres:
            from protocols.postgres.listener import PostgresListener

            server_ssl = server_context(self.state_dir, cfg.gateway.tls_cert_file, cfg.gateway.tls_key_file)
            pg = PostgresListener(cfg, self.authenticator, self.policy, server_ssl, self.recorder)
            await self._start(pg, "postgres", cfg.listen.postgres, url)
            log.info("postgres listening on %s (%d targets)", _addrs(pg), len(pg.targets))
        if cfg.listen.ssh:
            from protocols.ssh.server import SshListener

            ssh = SshListener(cfg, self.authenticator, self.policy, self.state_dir, self.recorder)
            await self._start(ssh, "ssh", cfg.listen.ssh, url)
            log.info("ssh listening on %s (%d targets)", _addrs(ssh), len(ssh.targets))
        if cfg.listen.http:
            from protocols.http.listener import HttpListener

            http = HttpListener(cfg, self.authenticator, self.policy, self.recorder)
            await self._start(http, "http", cfg.listen.http, url)
            log.info("http listening on %s (%d targets)", _addrs(http), len(http.targets))
        if cfg.listen.admin:
            from gateway.admin import AdminServer

            recorder = self.recorder
            self.admin = AdminServer(cfg, self.authenticator, self.broker, self.store, self.metrics,
                                     health=self.health,
                                     recorder_queue_depth=lambda: recorder.queued if recorder is not None else None)
            await _start(self.admin, "admin", cfg.listen.admin)
            log.info("admin API listening on %s (store: %s)", _addrs(self.admin), self.store.kind)

    async def _start(self, listener, name: str, address: str, url: str | None) -> None:
        listener.broker = self.broker
        listener.admin_url = url
        listener.metrics = self.metrics
        await _start(listener, name, address)
        self.listeners.append(listener)

    def health(self) -> dict:
        recorder = self.recorder
        status = self.state
        if status == "ok" and recorder is not None and not recorder.healthy and \
                self.cfg.recording.on_record_failure == "refuse":
            status = "recorder failing"
        return {"status": status, "instance": self.instance, "store": self.store.kind if self.store else None,
                "sessions": sum(listener.open_sessions for listener in self.listeners)}

    async def reload(self) -> None:
        """SIGHUP: read the config again; new rules and targets apply to new sessions and to the
        next command of open ones. A config with errors changes nothing."""
        from gateway.config import load_config

        if self.config_path is None:
            log.warning("SIGHUP: no config file to read again; ignored")
            return
        try:
            cfg = await asyncio.to_thread(load_config, self.config_path)
        except WiregateError as e:
            log.error("SIGHUP: %s: not reloaded, the running config stays:\n%s", self.config_path, e)
            return
        for key in ("state_dir", "store", "tls_cert_file", "tls_key_file"):
            if getattr(cfg.gateway, key) != getattr(self.cfg.gateway, key):
                log.warning("SIGHUP: gateway.%s changed: it takes effect at the next start", key)
        if cfg.listen != self.cfg.listen:
            log.warning("SIGHUP: listen addresses changed: they take effect at the next start")
        from gateway.notify import admin_url

        reloaded: list = []
        try:
            authenticator = Authenticator(cfg, store=self.store)
            policy = PolicyEngine(cfg, analyzer=self.policy.analyzer, mask_key=self.policy.mask_key,
                                  on_decision=self.metrics.command)
            for listener in self.listeners:
                listener.reload(cfg, policy)
                reloaded.append(listener)
        except WiregateError as e:
            for listener in reloaded:  # all or nothing: back to the running config
                listener.reload(self.cfg, self.policy)
            log.error("SIGHUP: %s: not reloaded, the running config stays:\n%s", self.config_path, e)
            return
        url = admin_url(cfg)
        for listener in self.listeners:
            listener.authenticator = authenticator
            listener.admin_url = url
        self.policy.replace_with(policy)
        self.policy, self.authenticator, self.cfg = policy, authenticator, cfg
        self.broker.reload(cfg)
        self.notifier.reload(cfg)
        if self.admin is not None:
            self.admin.reload(cfg, authenticator)
        log.info("SIGHUP: reloaded %s: %d targets, %d rules", self.config_path, len(cfg.targets), len(cfg.rules))

    def hurry(self) -> None:
        self._hurry.set()

    async def stop(self) -> None:
        """SIGTERM: stop accepting, let sessions finish within gateway.shutdown_grace, then close them."""
        self.state = "draining"
        grace = parse_duration(self.cfg.gateway.shutdown_grace)
        open_now = sum(listener.open_sessions for listener in self.listeners)
        log.info("stopping: %d open sessions get up to %gs to finish", open_now, grace)
        drains = asyncio.gather(*(listener.drain(grace) for listener in self.listeners), return_exceptions=True)
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({drains, hurry}, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        await self._close_all()

    async def _close_all(self) -> None:
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.close()
        if self.broker is not None:
            await self.broker.close()
        if self.admin is not None:
            await self.admin.close()
        # the writer thread drains what is queued (sessions just closed seal their files)
        await asyncio.get_running_loop().run_in_executor(None, stop_recorder, self.recorder, self.exporter)
        if self.store is not None:
            await self.store.close()


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

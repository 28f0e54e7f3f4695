"""The SSH listener and one client connection: authentication, the target, limits, forwarding.

``SshListener`` owns what connections share (targets, the key index, the host key, the
recorder); ``SshConnection`` is asyncssh's per-connection ``SSHServer``: it proves who is
calling (``auth``), opens the gateway's own connection to the target once (``upstream``), and
hands each session channel to ``channel.SessionChannel``.

Limits that keep a bad client from hurting others (``[ssh]`` in the config): ``login_timeout``
to authenticate, ``MAX_AUTH_FAILURES`` failed attempts, ``max_unauthenticated`` connections
still authenticating at once, ``max_channels`` open channels per connection; a protocol error
(garbage after the banner) closes only that connection.

Lifecycle: ``SshListener.reload`` (SIGHUP) swaps targets, keys and the policy engine for new
connections, open ones stay; ``drain`` (SIGTERM) stops accepting, lets open connections finish
for a grace period, then tells each open session channel why on stderr and disconnects
(SSH_DISCONNECT_BY_APPLICATION).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.constants import DISC_BY_APPLICATION, OPEN_ADMINISTRATIVELY_PROHIBITED

from gateway.config import parse_duration
from gateway.errors import raised_at
from gateway.identity import AuthError, Identity, groups_match
from gateway.keys import install_private_file
from policy.model import Command, Decision
from protocols.ssh.auth import IDENTITY_OPTION, KeyIndex, parse_username
from protocols.ssh.channel import SessionChannel
from protocols.ssh.forward import Tunnel
from protocols.ssh.upstream import UpstreamError, connect_upstream

if TYPE_CHECKING:
    from gateway.broker import Broker
    from gateway.metrics import Metrics
    from gateway.config import Config, Target
    from gateway.identity import Authenticator
    from policy.engine import PolicyEngine, SessionPolicy
    from recorder.writer import Recorder

log = logging.getLogger("wiregate.ssh")

HOST_KEY = Path("keys") / "ssh_host_ed25519"
MAX_AUTH_FAILURES = 6
# a failed token costs the caller this long, so guessing is slow
FAILED_TOKEN_DELAY = 0.5
SERVER_VERSION = "wiregate"
SHUTDOWN_MESSAGE = "wiregate: the gateway is shutting down"
SHUTDOWN_REASON = "the gateway shut down"
# between telling the channels and disconnecting: a client that reads the disconnect in the same
# batch as the message may exit before it writes the message out (OpenSSH's does)
NOTICE_DELAY = 0.2
# after the disconnects, how long drain() waits for the connections to report their end (their
# recordings end there)
CLOSE_WAIT = 2.0


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The gateway's SSH host key (OpenSSH format, mode 0600), generated on first start."""
    path = Path(state_dir) / HOST_KEY
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    key = asyncssh.generate_private_key("ssh-ed25519", comment="wiregate host key")
    if install_private_file(path, key.export_private_key(), "the SSH host key"):
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
        return key
    return asyncssh.read_private_key(path)


class SshListener:
    def __init__(self, cfg: "Config", authenticator: "Authenticator", policy: "PolicyEngine",
                 state_dir: Path, recorder: "Recorder | None" = None) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.targets: dict[str, Target] = {t.name: t for t in cfg.targets if t.protocol == "ssh"}
        self.keys = KeyIndex(cfg)
        self.host_key = load_or_create_host_key(state_dir)
        self.recorder = recorder
        # set by the server: review decisions on exec commands wait in the broker (None: they are
        # refused), the admin API's address named in the held line, and the metrics
        self.broker: Broker | None = None
        self.admin_url: str | None = None
        self.metrics: Metrics | None = None
        self.on_record_failure = cfg.recording.on_record_failure
        self.login_timeout = parse_duration(cfg.ssh.login_timeout)
        self.max_channels = cfg.ssh.max_channels
        self.max_unauthenticated = cfg.ssh.max_unauthenticated
        self.agent_forwarding = _agent_forwarding(policy)
        self.connections: set[SshConnection] = set()
        self.unauthenticated = 0
        self._server: asyncssh.SSHAcceptor | None = None
        # set by connection_closed when the last connection ends, while drain() waits for that
        self._idle: asyncio.Event | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncssh.create_server(
            lambda: SshConnection(self), host, port, server_host_keys=[self.host_key],
            server_version=SERVER_VERSION, encoding=None, line_editor=False, allow_pty=True,
            x11_forwarding=False, agent_forwarding=self.agent_forwarding, login_timeout=self.login_timeout,
            keepalive_interval=60, keepalive_count_max=3, gss_host=None, reuse_address=True,
            backlog=1024, allow_scp=False, sftp_factory=None)

    @property
    def sockets(self) -> list:
        return list(self._server.sockets) if self._server is not None else []

    @property
    def open_sessions(self) -> int:
        """Client connections, those still authenticating included."""
        return len(self.connections)

    def connection_closed(self, conn: "SshConnection") -> None:
        self.connections.discard(conn)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def reload(self, cfg: "Config", policy: "PolicyEngine", authenticator: "Authenticator | None" = None) -> None:
        """New targets, keys, limits and rules for new connections; open connections keep their
        target and upstream connection (their policy follows the new engine through
        ``PolicyEngine.replace_with``, which the server calls). A connection still
        authenticating looks its target up again when it completes: a target no longer
        configured refuses it. ``authenticator``: a new one when the identity settings changed."""
        self.targets = {t.name: t for t in cfg.targets if t.protocol == "ssh"}
        self.keys = KeyIndex(cfg)
        self.policy = policy
        if authenticator is not None:
            self.authenticator = authenticator
        self.on_record_failure = cfg.recording.on_record_failure
        self.max_channels = cfg.ssh.max_channels
        self.max_unauthenticated = cfg.ssh.max_unauthenticated
        login_timeout = parse_duration(cfg.ssh.login_timeout)
        agent_forwarding = _agent_forwarding(policy)
        if self._server is not None and (login_timeout, agent_forwarding) != (self.login_timeout,
                                                                             self.agent_forwarding):
            # options of connections accepted from now on
            self._server.update(login_timeout=login_timeout, agent_forwarding=agent_forwarding)
        self.login_timeout, self.agent_forwarding = login_timeout, agent_forwarding

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def drain(self, grace: float) -> None:
        """Stop accepting at once, wait up to ``grace`` seconds for open connections to end,
        then close the rest: each open session channel is told why on stderr, and the
        connection is disconnected (SSH_DISCONNECT_BY_APPLICATION)."""
        if self._server is not None:
            self._server.close()
        if self.connections:
            log.info("ssh: not accepting connections; waiting up to %gs for %d open connections", grace,
                     len(self.connections))
            await self._wait_idle(grace)
        if self.connections:
            log.info("ssh: closing %d connections still open after the grace period", len(self.connections))
            left = list(self.connections)
            if sum(conn.tell_shutdown() for conn in left):  # every channel told before any disconnect
                await asyncio.sleep(NOTICE_DELAY)
            for conn in left:
                conn.disconnect_shutdown()
            await self._wait_idle(CLOSE_WAIT)
        if self._server is not None:
            await self._server.wait_closed()

    async def _wait_idle(self, timeout: float) -> None:
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            pass
        finally:
            self._idle = None


class SshConnection(asyncssh.SSHServer):
    """One client connection (asyncssh calls these methods)."""

    def __init__(self, listener: SshListener):
        self.listener = listener
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_addr = "?"
        self.target: Target | None = None
        self.identity: Identity | None = None
        self.policy: SessionPolicy | None = None
        self._claimed: str | None = None  # NAME of NAME@TARGET
        self._target_name = ""
        self._candidate: Identity | None = None  # who a successful token check proved
        self._failures = 0
        self._authenticated = False
        self._counted = False
        self._upstream: asyncio.Task | None = None
        self._home: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.channels: set[Any] = set()

    # ---- connection ---------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.client_addr = f"{peer[0]}:{peer[1]}"
        listener = self.listener
        listener.connections.add(self)
        if listener.unauthenticated >= listener.max_unauthenticated:
            log.warning("ssh: %s refused: %d connections are already authenticating", self.client_addr,
                        listener.unauthenticated)
            conn.close()
            return
        listener.unauthenticated += 1
        self._counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        self.listener.connection_closed(self)
        if exc is not None and not self._authenticated:
            log.info("ssh: %s disconnected before authenticating: %s", self.client_addr, exc)
        for task in list(self._tasks):
            task.cancel()
        if self._upstream is not None:
            if self._upstream.done() and not self._upstream.cancelled() and self._upstream.exception() is None:
                self._upstream.result().close()
            else:
                self._upstream.cancel()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def tell_shutdown(self) -> int:
        """The gateway is stopping: say so on the stderr of each open session channel (with a
        PTY on the terminal, as the channel's own messages). Returns how many were told."""
        told = 0
        for channel in list(self.channels):
            if isinstance(channel, SessionChannel) and channel.chan is not None and not channel.closed:
                channel.end_reason = SHUTDOWN_REASON
                try:
                    if channel.term is not None:
                        channel.chan.write(f"\r\n{SHUTDOWN_MESSAGE}\r\n".encode())
                    else:
                        channel.chan.write_stderr(f"{SHUTDOWN_MESSAGE}\n".encode())
                    told += 1
                except (OSError, asyncssh.Error):
                    pass  # the channel is closing already
        return told

    def disconnect_shutdown(self) -> None:
        if self.conn is not None:
            self.conn.disconnect(DISC_BY_APPLICATION, SHUTDOWN_MESSAGE)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.listener.unauthenticated -= 1

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            # a bug must not leave the connection hanging: log where, never the data, and close
            log.error("ssh: %s: internal error %s at %s; closing the connection", self.client_addr,
                      type(exc).__name__, raised_at(exc))
            self.close()

    # ---- authentication -----------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        name, target_name = parse_username(username)
        self._claimed = name
        self._target_name = target_name
        self.target = self.listener.targets.get(target_name)
        if self.target is not None:
            # keys and certificates: only those of identities that may log in here as `name`
            self.conn.set_authorized_keys(self.listener.keys.authorized(self.target, name))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Only reached for keys the connection's authorized entries do not hold: never accepted.
        No banner: a public key proves nothing before its signature, and anyone may hold one."""
        return self._failed()

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._token(password)

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        if self.target is None:
            return False
        # "Password" in the prompt: clients that answer password prompts (sshpass, asyncssh) answer it
        prompt = ("Password (your wiregate token): ", False)
        return "wiregate", f'Sign in to target "{self.target.name}" with your token', "", [prompt]

    async def validate_kbdint_response(self, username: str, responses: list[str]) -> bool:
        if len(responses) != 1:
            return self._failed()
        return await self._token(responses[0])

    async def _token(self, token: str) -> bool:
        self._candidate = None
        try:
            identity = await self.listener.authenticator.authenticate(token)
        except AuthError as e:
            self._banner(f"wiregate: authentication failed: {e}")
            await asyncio.sleep(FAILED_TOKEN_DELAY)
            return self._failed()
        if not self._eligible(identity):
            self._explain(identity)
            return self._failed()
        # a True answer completes authentication at once: this is who logged in
        self._candidate = identity
        return True

    def _eligible(self, identity: Identity) -> bool:
        target = self.target
        return (target is not None and (self._claimed is None or self._claimed == identity.name)
                and groups_match(identity.groups, target.allow_groups))

    def _explain(self, identity: Identity) -> None:
        """Tell a caller who proved an identity why it still cannot log in."""
        target = self.target
        if target is None:
            self._banner(f'wiregate: no SSH target named "{self._target_name}": connect as TARGET@gateway '
                         "(with your key) or NAME@TARGET@gateway (with your token as the password)")
        elif self._claimed is not None and self._claimed != identity.name:
            self._banner(f'wiregate: user name "{self._claimed}" does not match the credential, which is '
                         f'for "{identity.name}"')
        elif not groups_match(identity.groups, target.allow_groups):
            self._banner(f'wiregate: "{identity.name}" is not allowed on target "{target.name}" '
                         "(none of your groups is in its allow_groups)")

    def _failed(self) -> bool:
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES:
            log.info("ssh: %s: too many failed authentication attempts; closing", self.client_addr)
            self.conn.close()
        return False

    def _banner(self, text: str) -> None:
        try:
            self.conn.send_auth_banner(text + "\r\n")
        except OSError:
            pass  # authentication already over

    def auth_completed(self) -> None:
        # a token check answers True only as the last step (self._candidate); otherwise asyncssh
        # accepted a key or certificate from the connection's entries, which names the identity
        identity = self._candidate
        if identity is None:
            certificate = bool(self.conn.get_key_option("cert-authority"))
            identity = self.listener.keys.matched(self.conn.get_key_option(IDENTITY_OPTION), certificate=certificate)
        # the configuration may have been reloaded since begin_auth: the target as it is now
        self.target = self.listener.targets.get(self._target_name)
        if self.target is None:
            log.info("ssh: %s: target %r is no longer configured; closing", self.client_addr, self._target_name)
            self.close()
            return
        if identity is None or not self._eligible(identity):
            log.error("ssh: %s: authentication completed without an eligible identity; closing", self.client_addr)
            self.close()
            return
        self.identity = identity
        self._authenticated = True
        self._uncount()
        self.policy = self.listener.policy.session(protocol="ssh", target=self.target.name,
                                                   identity=identity.name, groups=identity.groups)
        log.info("ssh: %s: %s connected to %s (%s)", self.client_addr, identity.name, self.target.name,
                 identity.method)

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The gateway's connection to the target, opened by the first channel that needs it (by
        then the client has asked for agent forwarding, if it does)."""
        if self._upstream is None:
            agent_path = self.conn.get_agent_path()
            if agent_path is not None and not self._forward_decision("agent", record=True).allowed:
                agent_path = None
            self._upstream = asyncio.get_running_loop().create_task(
                connect_upstream(self.target, agent_path=agent_path))
            self._upstream.add_done_callback(_quiet)
            self._upstream.add_done_callback(self._connected)
        return await asyncio.shield(self._upstream)

    def _connected(self, task: asyncio.Task) -> None:
        metrics = self.listener.metrics
        if metrics is not None and not task.cancelled() and task.exception() is not None:
            metrics.upstream_error("ssh", self.target.name)

    async def home(self) -> str:
        """The target user's home directory, where relative file paths start (learnt once per
        connection over SFTP: scp and rsync name files relative to it)."""
        if self._home is None:
            self._home = asyncio.get_running_loop().create_task(self._learn_home())
            self._home.add_done_callback(_quiet)
        return await asyncio.shield(self._home)

    async def _learn_home(self) -> str:
        upstream = await self.upstream()
        try:
            async with upstream.start_sftp_client() as sftp:
                home = await sftp.realpath(".")
        except (asyncssh.Error, OSError) as e:
            raise UpstreamError(f'wiregate: cannot learn the home directory on target "{self.target.name}", '
                                f"so relative paths cannot be checked: {getattr(e, 'reason', None) or e}") from None
        if isinstance(home, bytes):
            home = home.decode("utf-8", "surrogateescape")
        return home

    # ---- channels -----------------------------------------------------------------------

    def session_requested(self) -> Any:
        self._channel_limit()
        channel = SessionChannel(self)
        self.channels.add(channel)  # counted from the request on, so a burst cannot pass the limit
        return channel

    def _channel_limit(self) -> None:
        limit = self.listener.max_channels
        if len(self.channels) >= limit:
            raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"wiregate: at most {limit} channels per connection")

    def channel_closed(self, channel: Any) -> None:
        self.channels.discard(channel)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        self._channel_limit()
        what = f"local {dest_host}:{dest_port}"

        async def to_destination(factory):
            upstream = await self.upstream()
            return await upstream.create_connection(factory, dest_host, dest_port)

        tunnel = Tunnel(self, what, to_destination)
        decision = self._forward_decision(what)
        tunnel.record_decision(decision)

        if not decision.allowed:
            raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, decision.message)
        self.channels.add(tunnel)
        return tunnel

    async def server_requested(self, listen_host: str, listen_port: int) -> Any:
        what = f"remote {listen_host}:{listen_port}"
        decision = self._forward_decision(what, record=True)
        if not decision.allowed:
            return False

        def accepted(orig_host: str, orig_port: int) -> Tunnel:
            # a connection the target accepted on the forwarded port, carried back to the client
            async def to_client(factory):
                self._channel_limit()
                return await self.conn.create_connection(factory, listen_host, listen_port, orig_host, orig_port)

            tunnel = Tunnel(self, f"{what} from {orig_host}:{orig_port}", to_client)
            tunnel.record_decision(decision)
            self.channels.add(tunnel)
            return tunnel

        try:
            upstream = await self.upstream()
            return await upstream.create_server(accepted, listen_host, listen_port)
        except (UpstreamError, asyncssh.Error, OSError) as e:
            log.info("ssh: %s: %s failed on the target: %s", self.client_addr, what, e)
            return False

    def _forward_decision(self, what: str, *, record: bool = False) -> Decision:
        """The policy's word on a forwarding request; ``record``: as a recording of its own."""
        decision = self.policy.check(Command(protocol="ssh", target=self.target.name, kind="forward", text=what))
        if not decision.allowed:
            log.info("ssh: %s: %s refused: %s", self.client_addr, what, decision.message)
        if record:
            Tunnel(self, what).record_decision(decision, end=True)
        return decision


def _agent_forwarding(policy: "PolicyEngine") -> bool:
    """The caller's agent is only ever exposed to the gateway when some rule may allow it."""
    return any(r.forward is not None and r.forward.matches("agent") for r in policy.rules)


def _quiet(task: asyncio.Task) -> None:
    """Retrieve a task's exception so that an upstream failure nobody awaited is not logged as lost."""
    if not task.cancelled():
        task.exception()

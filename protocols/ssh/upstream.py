"""The gateway's own SSH connection to a target: its credential, its pinned host key.

The caller never sees the target's key or password, and the gateway never uses anything it
was not told to: no ``~/.ssh/config``, no default identity files, no agent of the gateway's
own. The target's ``known_hosts`` is the only trust anchor; a host key that is not in it
refuses the session with a message saying so (``UpstreamError``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncssh

from gateway.config import parse_listen
from gateway.errors import WiregateError
from gateway.secrets import target_password_async

if TYPE_CHECKING:
    from gateway.config import Target

CONNECT_TIMEOUT = 15.0
# what the gateway tells the target it is, in the server's logs
CLIENT_VERSION = "wiregate"


class UpstreamError(WiregateError):
    """The gateway could not reach or log in to the target; the message is for the caller."""


async def connect_upstream(target: "Target", *, agent_path: str | None = None) -> asyncssh.SSHClientConnection:
    """Log in to ``target`` as its configured user; ``agent_path``: forward the caller's agent
    (only when a rule allowed it)."""
    host, port = parse_listen(target.address or "")  # validated by the config loader
    if not target.known_hosts:
        raise UpstreamError(f'wiregate: target "{target.name}" has no known_hosts: its host key cannot be '
                            "checked, so the gateway does not connect")
    try:
        password = await target_password_async(target)
    except WiregateError as e:
        raise UpstreamError(f'wiregate: the gateway has no usable credential for target "{target.name}"; '
                            "see its log") from e
    client_keys = None
    if target.key_file:
        try:
            client_keys = [await asyncio.to_thread(asyncssh.read_private_key, target.key_file)]
        except (OSError, asyncssh.KeyImportError) as e:
            raise UpstreamError(f'wiregate: the gateway cannot read the key of target "{target.name}"; '
                                "see its log") from WiregateError(f"{target.key_file}: {e}")
    try:
        known_hosts = await asyncio.to_thread(asyncssh.read_known_hosts, target.known_hosts)
    except (OSError, ValueError) as e:
        raise UpstreamError(f'wiregate: the known_hosts of target "{target.name}" cannot be read; '
                            "see its log") from WiregateError(f"{target.known_hosts}: {e}")
    try:
        return await asyncssh.connect(
            host, port, username=target.user, known_hosts=known_hosts,
            client_keys=client_keys, password=password.reveal() if password is not None else None,
            config=None, agent_path=agent_path, agent_forwarding=agent_path is not None,
            preferred_auth="publickey,password,keyboard-interactive" if client_keys else
            "password,keyboard-interactive",
            x509_trusted_certs=None, gss_host=None, client_version=CLIENT_VERSION,
            connect_timeout=CONNECT_TIMEOUT, login_timeout=CONNECT_TIMEOUT, encoding=None,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise UpstreamError(
            f'wiregate: the host key of target "{target.name}" ({host}:{port}) does not match its pinned '
            "known_hosts: refusing to connect (possible man-in-the-middle; the gateway's operator updates "
            "known_hosts if the host key was changed on purpose)") from WiregateError(
                f"target {target.name}: host key not in {target.known_hosts}")
    except asyncssh.PermissionDenied:
        raise UpstreamError(f'wiregate: target "{target.name}" refused the gateway\'s credential '
                            f'for user "{target.user}"') from None
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
        raise UpstreamError(f'wiregate: cannot connect to target "{target.name}" ({host}:{port}): {reason}') from None

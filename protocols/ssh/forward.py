"""Port forwarding through the gateway: a caller's ``ssh -L`` carried to the target's network.

Forwarding opens a path past the gateway's command checks, so it is refused unless a rule
allows it by name (``match = { forward = ["local db.internal:5432"] }``; see the policy core).
Every request, allowed or refused, is a recording of its own: who asked for which
destination, what the policy said, and how many bytes went each way. The bytes themselves are
not recorded or inspected: a forwarded port carries another protocol.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from policy.model import Decision
from protocols.ssh.upstream import UpstreamError
from recorder import events as rec
from recorder.capture import new_session_id

if TYPE_CHECKING:
    from protocols.ssh.server import SshConnection


class Tunnel(asyncssh.SSHTCPSession):
    """The first half of one forwarded connection; it opens the second half (``open_other``)
    and relays between them.

    Local forwarding (``ssh -L``): the first half is the client's direct-tcpip channel, the
    second a direct-tcpip channel from the target to the destination. Remote forwarding
    (``ssh -R``): the first half is a connection the target accepted on the forwarded port,
    the second a forwarded-tcpip channel back to the client."""

    def __init__(self, owner: "SshConnection", what: str,
                 open_other: Callable[[Callable[[], asyncssh.SSHTCPSession]], Awaitable[tuple]] | None = None):
        self.owner = owner
        self.what = what
        self.open_other = open_other
        self.chan: asyncssh.SSHTCPChannel | None = None
        self.up: asyncssh.SSHTCPChannel | None = None
        self.started = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.reason = "closed"
        self.recording = None
        self._pending: list[bytes | None] = []

    def record_decision(self, decision: Decision, *, end: bool = False) -> None:
        owner = self.owner
        recorder = owner.listener.recorder
        if recorder is None:
            return
        self.recording = recorder.open(rec.SessionStart(
            session_id=new_session_id(), time=self.started, identity=owner.identity.name,
            groups=tuple(owner.identity.groups), target=owner.target.name, protocol="ssh",
            client=owner.client_addr, tls=True, instance=recorder.instance, auth=owner.identity.method))
        self.recording.record(rec.Command(time=time.time(), kind="forward", text=self.what,
                                          decision=decision.action, rule=decision.rule, message=decision.message))
        if end or not decision.allowed:
            self.reason = "refused" if not decision.allowed else "listening"
            self._end()

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self.chan = chan
        chan.pause_reading()
        self.owner.spawn(self._open())

    async def _open(self) -> None:
        try:
            self.up, _ = await self.open_other(lambda: _OtherSide(self))
        except (UpstreamError, asyncssh.Error, OSError) as e:
            self.reason = f"could not open the other side: {getattr(e, 'reason', None) or e}"
            self.chan.close()
            return
        if self.closed:
            self.up.close()
            return
        for data in self._pending:
            self._send(data)
        self._pending.clear()
        self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.bytes_in += len(data)
        if self.up is None:
            self._pending.append(data)
        else:
            self.up.write(data)

    def eof_received(self) -> bool:
        if self.up is None:
            self._pending.append(None)
        else:
            self.up.write_eof()
        return True

    def _send(self, data: bytes | None) -> None:
        if data is None:
            self.up.write_eof()
        else:
            self.up.write(data)

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.up is not None:
            self.up.close()
        self.owner.channel_closed(self)
        self._end()

    def _end(self) -> None:
        if self.recording is None:
            return
        now = time.time()
        self.recording.record(rec.Result(time=now, tag=self.reason, rows=0, bytes=self.bytes_in + self.bytes_out,
                                         duration_ms=(now - self.started) * 1000))
        self.recording.end(rec.SessionEnd(time=now, reason=self.reason, commands=1, bytes_in=self.bytes_in,
                                          bytes_out=self.bytes_out))
        self.recording = None


class _OtherSide(asyncssh.SSHTCPSession):
    def __init__(self, peer: Tunnel):
        self.peer = peer

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.peer.bytes_out += len(data)
        self.peer.chan.write(data)

    def eof_received(self) -> bool:
        self.peer.chan.write_eof()
        return True

    def pause_writing(self) -> None:
        self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.peer.closed:
            self.peer.chan.close()

"""One HTTP session: a caller on a target, with its policy, masking, MCP state and recording.

A plain HTTP session lives as long as the caller's connection (one recording per connection and
target). An MCP session lives as long as its ``Mcp-Session-Id``: the SDKs spread one session over
several connections, and the recording follows the session, not the sockets.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.config import Target
from gateway.identity import Identity
from policy.engine import PolicyEngine
from policy.model import Decision
from protocols.http.bodymask import BodyMasker
from protocols.http.jsonrpc import encode
from protocols.http.mcp import McpExchange
from recorder import events as rec
from recorder.capture import new_session_id, recorded_text

if TYPE_CHECKING:
    from recorder.writer import Recorder, SessionRecorder

__all__ = ["HttpSession"]


class HttpSession:
    __slots__ = ("identity", "target", "policy", "masker", "mcp", "session_id", "recording", "commands",
                 "bytes_in", "bytes_out", "last_used", "active", "mcp_session_id", "ended", "refuse_unrecorded")

    def __init__(self, *, engine: PolicyEngine, recorder: Recorder | None, identity: Identity, target: Target,
                 client: str, tls: bool, mcp_session_id: str = "", refuse_unrecorded: bool = True,
                 holds: bool = False):
        self.identity = identity
        # on_record_failure = "refuse": an allowed command whose record cannot be queued is refused
        self.refuse_unrecorded = refuse_unrecorded
        self.target = target
        self.policy = engine.session(protocol="http", target=target.name, identity=identity.name,
                                     groups=identity.groups, sql_arguments=target.sql_arguments if target.mcp else ())
        self.masker = BodyMasker(self.policy.masks)
        self.mcp = McpExchange(self.policy, self.masker, self._record_rpc, self._record_tool,
                               holds=holds) if target.mcp else None
        self.mcp_session_id = mcp_session_id
        self.session_id = new_session_id()
        self.commands = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_used = time.monotonic()
        # requests in flight: an MCP session is not reaped while one of them is still streaming
        self.active = 0
        self.ended = False
        self.recording: SessionRecorder | None = None
        if recorder is not None:
            self.recording = recorder.open(rec.SessionStart(
                session_id=self.session_id, time=time.time(), identity=identity.name, groups=tuple(identity.groups),
                target=target.name, protocol="http", client=client, tls=tls, instance=recorder.instance,
                auth=identity.method))

    @property
    def scans(self):
        return self.policy.masks.scans

    def record(self, event: Any) -> bool:
        """False: a recording is on and the event could not be queued."""
        if self.recording is None:
            return True
        return self.recording.record(event)

    def record_request(self, text: str, decision: Decision) -> bool:
        """False: the request must be refused, its record could not be kept (see ``refuse_unrecorded``)."""
        self.commands += 1
        return self._kept(rec.Command(time=time.time(), kind="http", text=recorded_text(text, self.scans),
                                       decision=decision.action, rule=decision.rule, message=decision.message))

    def record_exchange(self, method: str, text: str, status: int, bytes_in: int, bytes_out: int,
                        started: float) -> None:
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.record(rec.HttpExchange(time=time.time(), method=method, path=recorded_text(text, self.scans),
                                     status=status, bytes_in=bytes_in, bytes_out=bytes_out,
                                     duration_ms=(time.monotonic() - started) * 1000))

    def _kept(self, event: Any) -> bool:
        return self.record(event) or not self.refuse_unrecorded

    def _record_rpc(self, direction: str, method: str | None, id_: str | None, message: dict[str, Any]) -> None:
        self.record(rec.RpcMessage(time=time.time(), direction=direction, mcp_session=self.mcp_session_id,
                                   method=method, id=id_, text=recorded_text(encode(message).decode(), self.scans)))

    def _record_tool(self, name: str, args: dict[str, Any], decision: Decision) -> bool:
        self.commands += 1
        text = f"{name} {encode(args).decode()}" if args else name
        return self._kept(rec.Command(time=time.time(), kind="tool", text=recorded_text(text, self.scans),
                                decision=decision.action, rule=decision.rule, message=decision.message))

    def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self.recording is not None:
            self.recording.end(rec.SessionEnd(time=time.time(), reason=reason, commands=self.commands,
                                              bytes_in=self.bytes_in, bytes_out=self.bytes_out))
            self.recording = None

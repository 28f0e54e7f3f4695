"""MCP over JSON-RPC, as the gateway reads it: the policy on what a caller sends, the filtering and
masking of what the target answers, and what each message leaves in the recording.

Sans-IO: one ``McpExchange`` per MCP session (the caller, the target and the ``Mcp-Session-Id``)
takes decoded JSON-RPC messages and returns what to forward or answer. The asyncio glue
(``listener.py``) moves the bytes.

* ``tools/call``: the tool and its arguments go through ``SessionPolicy.check_tool_call`` (tool
  and ``args`` rules, then SQL found in the arguments). A refused call is answered by the gateway
  with a JSON-RPC error naming the rule; the target never sees it. In a batch, one refused call
  refuses the whole batch (every request in it gets an error saying why), so a batch is either
  forwarded as it came or not at all. A ``tools/call`` sent as a notification (no id) is decided
  too, since JSON-RPC servers run notifications; refused, it is answered with an error whose id
  is null.
* ``tools/list``: the answer keeps only the tools ``SessionPolicy.tool_visible`` lets the caller see.
* Every other answer and every message the target starts (notifications, its own requests) is
  masked (``BodyMasker.mask_value``) in every member but ``jsonrpc``, ``id`` and ``method``:
  ``result``, ``error`` and ``params`` (tool results, resources, prompts, log messages), and any
  member a non-conforming target adds. The ``result`` of a listing (``initialize``, ``*/list``)
  describes the server, not data, and is left as it is: a key rule on ``password`` must not empty
  a tool's input schema.
* Answers are matched to requests by id. A caller that reuses an id still awaiting its answer
  (``tools/call`` and ``ping`` both as id 1) must not get the call's result treated as a ``ping``
  answer, unmasked: while requests of different methods share an id, each answer to it is
  treated as an answer to any of them (filtered and masked).
* Every message, both ways, is handed to ``record`` masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policy.engine import SessionPolicy
from policy.model import UNRECORDABLE, Decision, review_refusal
from protocols.http.bodymask import BodyMasker
from protocols.http.jsonrpc import REFUSED, Message, error_message, id_text

__all__ = ["McpExchange", "Refusal", "Hold", "Recorded"]

# answers that describe the server rather than carry data: not masked
_LISTINGS = frozenset({"initialize", "tools/list", "prompts/list", "resources/list", "resources/templates/list",
                       "ping"})
# requests whose answers the gateway waits for, per session, before it forgets the oldest
_MAX_PENDING = 4096
# members of a JSON-RPC message that frame it rather than carry data: a key rule must not null an id
_FRAME = frozenset({"jsonrpc", "id", "method"})
_FRAME_LISTING = _FRAME | {"result"}
# the members that carry a message's data, masked as values (their own names are not data)
_DATA = ("result", "error", "params")

# (direction "in" | "out" | "gateway", method, id as JSON text or None, the masked message)
Recorded = Callable[[str, str | None, str | None, dict[str, Any]], None]
# (the tool call that was decided: name, arguments masked for the record, decision); False when an
# allowed call cannot be recorded and must be refused (on_record_failure = "refuse")
Decided = Callable[[str, dict[str, Any], Decision], bool]


class Refusal:
    """The gateway's own answer to a payload it will not forward: ``body`` is a JSON-RPC error
    (or a batch of them) for the caller."""

    __slots__ = ("body", "decision")

    def __init__(self, body: Any, decision: Decision):
        self.body = body
        self.decision = decision


class Hold:
    """A payload with tool calls a review rule sent for approval: ``calls`` are (index, tool
    name, arguments, decision). The glue waits for each, then calls ``McpExchange.settle``."""

    __slots__ = ("messages", "batch", "calls")

    def __init__(self, messages: list[Message], batch: bool, calls: list[tuple[int, str, dict[str, Any], Decision]]):
        self.messages = messages
        self.batch = batch
        self.calls = calls


class McpExchange:
    """The JSON-RPC side of one MCP session (see the module docstring)."""

    __slots__ = ("policy", "masker", "record", "decided", "holds", "_pending", "_asked")

    def __init__(self, policy: SessionPolicy, masker: BodyMasker, record: Recorded, decided: Decided,
                 *, holds: bool = False):
        self.policy = policy
        self.masker = masker
        self.record = record
        self.decided = decided
        # review decisions wait for an approval (a broker runs); otherwise they are refused
        self.holds = holds
        # request id (JSON text) -> (the methods of the requests sent with it, answers still to come)
        self._pending: dict[str, tuple[frozenset[str], int]] = {}
        # the same for the target's own requests (sampling, elicitation) that the caller answers
        self._asked: dict[str, tuple[frozenset[str], int]] = {}

    # -- what the caller sends ------------------------------------------------------------
    def from_caller(self, messages: list[Message], batch: bool) -> Refusal | Hold | None:
        """Decide a payload; None means forward it as it came."""
        refused: list[tuple[int, Decision]] = []
        held: list[tuple[int, str, dict[str, Any], Decision]] = []
        for i, msg in enumerate(messages):
            answered = _answered(self._asked, id_text(msg.id)) if msg.kind == "response" else None
            self.record("in", msg.method or _shown(answered), _id(msg), self.masker.mask_value(msg.obj))
            if msg.kind != "response" and msg.method == "tools/call":
                decision = self._check_call(msg)
                if decision.action == "review":
                    params = msg.obj["params"]
                    held.append((i, params["name"], params.get("arguments") or {}, decision))
                elif not decision.allowed:
                    refused.append((i, decision))
        if refused:
            return self._refuse(messages, refused, batch)
        if held:
            return Hold(messages, batch, held)
        self._forwarding(messages)
        return None

    def settle(self, hold: Hold, refused: list[tuple[int, Decision]]) -> Refusal | None:
        """After the approvals of a held payload: ``refused`` are the calls not approved."""
        if refused:
            return self._refuse(hold.messages, refused, hold.batch)
        self._forwarding(hold.messages)
        return None

    def _forwarding(self, messages: list[Message]) -> None:
        for msg in messages:
            if msg.kind == "request":
                _remember(self._pending, id_text(msg.id), msg.method or "")
        return None

    def _check_call(self, msg: Message) -> Decision:
        params = msg.obj.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        args = params.get("arguments", {}) if isinstance(params, dict) else None
        if not isinstance(name, str) or not isinstance(args, (dict, type(None))):
            decision = Decision(action="deny", rule=None,
                                message="wiregate: a tools/call needs params.name (a string) and params.arguments "
                                        "(an object)")
            self.decided(str(name), {}, decision)
            return decision
        decision = self.policy.check_tool_call(name, args or {})
        if decision.action == "review" and not self.holds:
            decision = Decision(action="deny", rule=decision.rule, message=review_refusal(decision, "the call"),
                                kinds=decision.kinds)
        if not self.decided(name, self.masker.mask_value(args or {}), decision) and decision.allowed:
            return UNRECORDABLE
        return decision

    def _refuse(self, messages: list[Message], refused: list[tuple[int, Decision]], batch: bool) -> Refusal:
        first = refused[0][1]
        by_index = dict(refused)
        answers = []
        for i, msg in enumerate(messages):
            decision = by_index.get(i)
            if msg.kind != "request" and decision is None:
                continue  # a notification is not answered, unless it is the refused call itself
            if decision is not None:
                answer = error_message(msg.id, REFUSED, decision.message,
                                       {"rule": decision.rule, "decision": "deny"})
            else:
                answer = error_message(msg.id, REFUSED,
                                       f"wiregate: not sent: another call in the same batch was refused "
                                       f"({first.message})", {"rule": first.rule, "decision": "deny"})
            self.record("gateway", msg.method, _id(msg), answer)
            answers.append(answer)
        return Refusal(answers if batch else answers[0], first)

    # -- what the target sends ------------------------------------------------------------
    def from_target(self, obj: Any) -> Any:
        """One message (or a batch) from the target, filtered and masked; returns ``obj`` itself when
        nothing changed. Something that is not a JSON-RPC object is masked whole, as data."""
        if isinstance(obj, list):
            out = [self._one(item) for item in obj]
            return obj if all(a is b for a, b in zip(out, obj)) else out
        return self._one(obj)

    def _one(self, obj: Any) -> Any:
        if not isinstance(obj, dict):
            out = self.masker.mask_value(obj)
            self.record("out", None, None, {"value": out})
            return out
        method = obj.get("method")
        msg_id = obj.get("id")
        if method is None and ("result" in obj or "error" in obj):
            answered = _answered(self._pending, id_text(msg_id)) if "id" in obj else None
            out = obj
            if answered is None or "tools/list" in answered:
                # an answer the gateway cannot place (its request forgotten) is filtered too: fail closed
                out = self._visible_tools(obj)
            listing = answered is not None and answered <= _LISTINGS
            out = self._masked(out, _FRAME_LISTING if listing else _FRAME)
            self.record("out", _shown(answered), id_text(msg_id) if "id" in obj else None, out)
            return out
        out = self._masked(obj, _FRAME)
        if isinstance(method, str) and "id" in obj:
            _remember(self._asked, id_text(msg_id), method)
        self.record("out", method if isinstance(method, str) else None,
                    id_text(msg_id) if "id" in obj else None, out)
        return out

    def _masked(self, obj: dict[str, Any], kept: frozenset[str]) -> dict[str, Any]:
        """``obj`` with every member not in ``kept`` masked (``obj`` itself when nothing changed)."""
        out = obj
        for key in _DATA:
            if key in obj and key not in kept:
                value = self.masker.mask_value(obj[key])
                if value is not obj[key]:
                    if out is obj:
                        out = dict(obj)
                    out[key] = value
        # members JSON-RPC does not know are masked with their names, as any object is
        extra = {k: v for k, v in obj.items() if k not in kept and k not in _DATA}
        if extra:
            masked = self.masker.mask_value(extra)
            if masked is not extra:
                out = {k: v for k, v in out.items() if k not in extra}
                out.update(masked)
        return out

    def _visible_tools(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = obj.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return obj
        kept = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
                and self.policy.tool_visible(t["name"])]
        if len(kept) == len(tools):
            return obj
        return {**obj, "result": {**result, "tools": kept}}


def _remember(pending: dict[str, tuple[frozenset[str], int]], key: str, method: str) -> None:
    known = pending.get(key)
    if known is not None:  # an id reused before its answer came: either answer may be either's
        pending[key] = (known[0] | {method}, known[1] + 1)
        return
    if len(pending) >= _MAX_PENDING:
        pending.pop(next(iter(pending)))  # an answer that never came: forget the oldest
    pending[key] = (frozenset((method,)), 1)


def _answered(pending: dict[str, tuple[frozenset[str], int]], key: str) -> frozenset[str] | None:
    """The methods an answer with this id may answer (None: no request is waiting for it)."""
    known = pending.get(key)
    if known is None:
        return None
    methods, left = known
    if left > 1:
        pending[key] = (methods, left - 1)
    else:
        del pending[key]
    return methods


def _shown(methods: frozenset[str] | None) -> str | None:
    """The method an answer is recorded under: None when unknown or ambiguous."""
    return next(iter(methods)) if methods is not None and len(methods) == 1 else None


def _id(msg: Message) -> str | None:
    return id_text(msg.id) if msg.kind != "notification" else None

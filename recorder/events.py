"""What a session recording holds: one versioned msgspec struct per event kind.

Events are encoded as msgpack arrays (``array_like``), tagged by a small integer in front of the
fields, so a frame spends one byte on its kind and none on field names. Evolving a kind keeps old
files readable both ways: new fields go at the END with a default (an older reader ignores extra
trailing fields, a newer one fills in the default); a field is never removed, retyped or reordered,
and a tag is never reused. Anything else is a new ``FORMAT_VERSION`` (docs/recording.md).

Times are UNIX seconds (float). Texts and terminal data are recorded as the caller hands them
over: the caller masks them first (recorder/capture.py); the recorder never sees raw values.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import msgspec

FORMAT_VERSION = 1


class _Event(msgspec.Struct, array_like=True, frozen=True, tag_field="k", gc=False):
    """Base of every recorded kind (``gc=False``: events hold only strings, bytes and numbers)."""


class SessionStart(_Event, tag=1, kw_only=True):
    session_id: str
    time: float
    identity: str
    groups: tuple[str, ...]
    target: str
    protocol: str  # "postgres" | "ssh" | "http"
    client: str  # "ip:port" of the caller
    tls: bool
    instance: str  # the gateway instance that served the session
    auth: str  # how the caller proved who they are: "dev-token" | "oidc" | "api-token" | "ssh-key" | ...


class Command(_Event, tag=2, kw_only=True):
    time: float
    kind: str  # "sql" | "function_call" | "exec" | "tool" | "http" | "sftp" | ...
    text: str  # already masked by the caller
    decision: str  # "allow" | "deny" | "review"
    rule: str | None
    kinds: tuple[str, ...] = ()  # statement kinds the analysis found
    message: str = ""  # what a refused caller was told


class Result(_Event, tag=3, kw_only=True):
    time: float
    tag: str  # command tag, e.g. "SELECT 3"
    rows: int
    bytes: int
    duration_ms: float
    error: str | None = None  # SQLSTATE and masked message


class TermInput(_Event, tag=4, kw_only=True):
    time: float
    data: bytes


class TermOutput(_Event, tag=5, kw_only=True):
    time: float
    data: bytes


class TermResize(_Event, tag=6, kw_only=True):
    time: float
    cols: int
    rows: int


class HttpExchange(_Event, tag=7, kw_only=True):
    time: float
    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    duration_ms: float


class ApprovalRequested(_Event, tag=8, kw_only=True):
    time: float
    request_id: str
    rule: str
    approvers: tuple[str, ...]
    text: str


class ApprovalDecided(_Event, tag=9, kw_only=True):
    time: float
    request_id: str
    decision: str
    by: str
    reason: str = ""


class SessionEnd(_Event, tag=10, kw_only=True):
    time: float
    reason: str
    commands: int
    bytes_in: int
    bytes_out: int


class EventsLost(_Event, tag=11, kw_only=True):
    """Written by the recorder itself: ``count`` events of this session were refused at this point
    (the queue was full), so a gap in the evidence is visible in the evidence."""

    time: float
    count: int
    reason: str


class Seal(_Event, tag=12, kw_only=True):
    """The last frame of a finished session: an Ed25519 signature over ``seal_message(...)``.

    ``frames`` counts the event frames before the seal; ``last_hash`` is the SHA-256 of the last
    of them. Not an ``Event``: it is never handed out as one (``Recording.seal`` holds it)."""

    session_id: str
    frames: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    last_hash: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    key_id: str
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class RpcMessage(_Event, tag=13, kw_only=True):
    """One JSON-RPC message of an MCP session, masked as the other side saw it (or would have)."""

    time: float
    direction: str  # "in" (caller to target) | "out" (target to caller) | "gateway" (the gateway's own answer)
    mcp_session: str  # the Mcp-Session-Id it travelled under; "" before the target assigned one
    method: str | None  # a request's or notification's method; for a response, the method it answers if known
    id: str | None  # the JSON-RPC id as JSON text ('7', '"a1"'); None for a notification
    text: str  # the whole message as JSON, masked, cut at the recorder's text limit


Event = Union[SessionStart, Command, Result, TermInput, TermOutput, TermResize, HttpExchange,
              ApprovalRequested, ApprovalDecided, SessionEnd, EventsLost, RpcMessage]
Payload = Union[Event, Seal]
EVENT_TYPES: tuple[type, ...] = Event.__args__  # type: ignore[attr-defined]

# The "kind" of each struct in JSON exports (the msgpack tag is the number).
KIND_NAMES: dict[type, str] = {
    SessionStart: "session_start",
    Command: "command",
    Result: "result",
    TermInput: "term_input",
    TermOutput: "term_output",
    TermResize: "term_resize",
    HttpExchange: "http_exchange",
    ApprovalRequested: "approval_requested",
    ApprovalDecided: "approval_decided",
    SessionEnd: "session_end",
    EventsLost: "events_lost",
    RpcMessage: "rpc_message",
    Seal: "seal",
}
KNOWN_TAGS: frozenset[int] = frozenset(t.__struct_config__.tag for t in KIND_NAMES)


def kind_of(event: Any) -> str:
    """The JSON kind name of an event (or seal)."""
    return KIND_NAMES[type(event)]


def event_to_json(event: Any) -> dict[str, Any]:
    """A plain JSON-able dict: ``"kind"`` (the name in ``KIND_NAMES``), then every field by name.
    ``bytes`` fields (terminal data, the seal's hash and signature) are base64 strings under their
    own name; tuples are lists. A ``Command``'s own ``kind`` field ("sql", "exec", ...) is
    ``"command_kind"`` here, so ``"kind"`` always names the event."""
    fields = msgspec.to_builtins(msgspec.structs.asdict(event))
    out: dict[str, Any] = {"kind": KIND_NAMES[type(event)]}
    for name, value in fields.items():
        out["command_kind" if name == "kind" else name] = list(value) if type(value) is tuple else value
    return out

"""JSON-RPC 2.0 messages as MCP carries them: one message or a batch in a body or an SSE event.

Sans-IO: bytes in, plain dicts out. A payload that is not JSON-RPC is refused whole (fail closed):
the gateway decides per message, so it must understand every message it forwards. That includes a
payload nested past the decoder's recursion limit and one that repeats a member name in an object:
the gateway forwards the payload as it came, and a target whose parser keeps the *first* duplicate
(``{"method": "tools/call", "method": "ping"}``) would act on a message the gateway never decided.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

__all__ = ["PARSE_ERROR", "INVALID_REQUEST", "REFUSED", "RpcError", "Message", "decode_payload", "id_text",
           "error_message"]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
# the server-error range is the implementation's own: the gateway's refusal of a call
REFUSED = -32001

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
# a JSON string literal: every colon outside one separates an object member from its name
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class RpcError(ValueError):
    """A payload that is not JSON-RPC; ``code`` is PARSE_ERROR or INVALID_REQUEST."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Message(msgspec.Struct, frozen=True):
    """One JSON-RPC message. ``obj`` is the decoded object as received."""

    kind: Literal["request", "notification", "response"]
    obj: dict[str, Any]

    @property
    def method(self) -> str | None:
        return self.obj.get("method") if self.kind != "response" else None

    @property
    def id(self) -> Any:
        return self.obj.get("id")


def decode_payload(body: bytes | str) -> tuple[list[Message], bool]:
    """The messages of a body and whether it was a batch (a JSON array). Raises ``RpcError``."""
    try:
        value = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RpcError(PARSE_ERROR, f"not JSON: {exc}") from None
    except RecursionError:
        raise RpcError(PARSE_ERROR, "not JSON-RPC: nested too deeply") from None
    if _duplicate_members(body, value):
        raise RpcError(INVALID_REQUEST, "an object repeats a member name")
    if isinstance(value, list):
        if not value:
            raise RpcError(INVALID_REQUEST, "an empty batch")
        return [_message(item, f"batch element {i}") for i, item in enumerate(value)], True
    return [_message(value, "the message")], False


def _duplicate_members(body: bytes | str, value: Any) -> bool:
    """Whether the JSON text declares more object members than ``value`` (decoded, last one wins) holds."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    colons = data.count(b":")
    if not colons:
        return False
    members = 0
    stack = [value]  # iterative: the value may be nested close to the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            members += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if colons == members:
        return False  # no colon inside a string: each one is a member
    return _STRING_LITERAL.sub(b"", data).count(b":") != members


def _message(value: Any, where: str) -> Message:
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, f"{where} is not a JSON object")
    if value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, f'{where} lacks "jsonrpc": "2.0"')
    if "id" in value and not isinstance(value["id"], (str, int, type(None))) or isinstance(value.get("id"), bool):
        raise RpcError(INVALID_REQUEST, f"{where} has an id that is neither a string nor a number")
    method = value.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise RpcError(INVALID_REQUEST, f"{where} has a method that is not a string")
        params = value.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            raise RpcError(INVALID_REQUEST, f"{where} has params that are neither an object nor an array")
        return Message("request" if "id" in value else "notification", value)
    if "id" in value and (("result" in value) != ("error" in value)):
        return Message("response", value)
    raise RpcError(INVALID_REQUEST, f"{where} is neither a request, a notification nor a response")


def id_text(value: Any) -> str:
    """An id as JSON text, the key under which a response is matched to its request."""
    return _encoder.encode(value).decode()


def error_message(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": error}


def encode(value: Any) -> bytes:
    return _encoder.encode(value)

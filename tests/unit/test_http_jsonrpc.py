"""JSON-RPC 2.0 payloads (protocols/http/jsonrpc.py): what is a request, a notification, a
response or a batch, and every form that is refused (fail closed) with the right error code."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.http.jsonrpc import (
    INVALID_REQUEST, PARSE_ERROR, REFUSED, Message, RpcError, decode_payload, encode, error_message, id_text,
)


def one(body: bytes | str) -> Message:
    messages, batch = decode_payload(body)
    assert not batch and len(messages) == 1
    return messages[0]


def refused(body: bytes | str) -> RpcError:
    with pytest.raises(RpcError) as info:
        decode_payload(body)
    return info.value


# ---- valid messages ------------------------------------------------------------------------

@pytest.mark.parametrize("id_", [1, 0, -5, 2**70, "abc", "", None])
def test_request(id_: object) -> None:
    obj = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": "q", "arguments": {}}}
    msg = one(json.dumps(obj).encode())
    assert msg.kind == "request"
    assert msg.method == "tools/call"
    assert msg.id == id_
    assert msg.obj == obj


@pytest.mark.parametrize("params", [None, {}, [], [1, "a"], {"a": {"b": [1]}}])
def test_request_params_object_array_or_absent(params: object) -> None:
    obj: dict = {"jsonrpc": "2.0", "id": 7, "method": "m"}
    if params is not None:
        obj["params"] = params
    assert one(json.dumps(obj)).kind == "request"


def test_explicit_null_params_is_as_absent() -> None:
    assert one(b'{"jsonrpc":"2.0","id":1,"method":"m","params":null}').kind == "request"


def test_notification() -> None:
    msg = one(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert msg.kind == "notification"
    assert msg.method == "notifications/initialized"
    assert msg.id is None


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}',
    b'{"jsonrpc":"2.0","id":"x","result":null}',
    b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}',
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}',
])
def test_response(body: bytes) -> None:
    msg = one(body)
    assert msg.kind == "response"
    assert msg.method is None  # a response has no method, whatever it holds


def test_batch_of_mixed_messages() -> None:
    body = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 0}},
        {"jsonrpc": "2.0", "id": 9, "result": {}},
    ])
    messages, batch = decode_payload(body)
    assert batch
    assert [m.kind for m in messages] == ["request", "notification", "response"]
    assert [m.id for m in messages] == [1, None, 9]


def test_batch_of_one_is_still_a_batch() -> None:
    messages, batch = decode_payload(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]')
    assert batch and len(messages) == 1


def test_whitespace_and_str_input() -> None:
    assert one(' \n{ "jsonrpc" : "2.0" , "id" : 1 , "method" : "ping" }\t').kind == "request"


def test_colons_inside_strings_are_not_members() -> None:
    msg = one(b'{"jsonrpc":"2.0","id":"a:b","method":"x:y","params":{"k:":"v::","\\"::":":"}}')
    assert msg.obj["params"] == {"k:": "v::", '"::': ":"}


# ---- refused payloads --------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"[", b"{'a': 1}", b"NaN", b"\xff\xfe", b'{"a":1}x',
                                  b"1e999", b'"\\ud800"', b'{"jsonrpc":"2.0",}', b"\xef\xbb\xbf{}"])
def test_not_json_is_parse_error(body: bytes) -> None:
    assert refused(body).code == PARSE_ERROR


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_nesting_past_the_recursion_limit_is_parse_error(depth: int) -> None:
    # msgspec raises RecursionError here, which the listener would not have caught
    assert refused(b"[" * depth + b"]" * depth).code == PARSE_ERROR
    assert refused(b'{"a":' * depth + b"1" + b"}" * depth).code == PARSE_ERROR


@pytest.mark.parametrize(("body", "words"), [
    (b"[]", "empty batch"),
    (b"1", "not a JSON object"),
    (b'"x"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'[{"jsonrpc":"2.0","id":1,"method":"m"}, 5]', "batch element 1 is not a JSON object"),
    (b"[[]]", "batch element 0 is not a JSON object"),
    (b'{"id":1,"method":"m"}', '"jsonrpc": "2.0"'),
    (b'{"jsonrpc":"1.0","id":1,"method":"m"}', '"jsonrpc": "2.0"'),
    (b'{"jsonrpc":2.0,"id":1,"method":"m"}', '"jsonrpc": "2.0"'),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"m"}', "id that is neither"),
    (b'{"jsonrpc":"2.0","id":true,"method":"m"}', "id that is neither"),
    (b'{"jsonrpc":"2.0","id":false,"result":1}', "id that is neither"),
    (b'{"jsonrpc":"2.0","id":[1],"method":"m"}', "id that is neither"),
    (b'{"jsonrpc":"2.0","id":{},"method":"m"}', "id that is neither"),
    (b'{"jsonrpc":"2.0","id":1,"method":""}', "method that is not a string"),
    (b'{"jsonrpc":"2.0","id":1,"method":5}', "method that is not a string"),
    (b'{"jsonrpc":"2.0","id":1,"method":["m"]}', "method that is not a string"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}', "params"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":3}', "params"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":true}', "params"),
    (b'{"jsonrpc":"2.0"}', "neither a request"),
    (b'{"jsonrpc":"2.0","id":1}', "neither a request"),
    (b'{"jsonrpc":"2.0","result":1}', "neither a request"),  # a response needs its id
    (b'{"jsonrpc":"2.0","id":1,"result":1,"error":{}}', "neither a request"),
    (b'[{"jsonrpc":"2.0","id":1,"method":"m"},{"jsonrpc":"2.0","id":2}]', "batch element 1 is neither"),
])
def test_invalid_request(body: bytes, words: str) -> None:
    exc = refused(body)
    assert exc.code == INVALID_REQUEST
    assert words in exc.message
    assert str(exc) == exc.message


@pytest.mark.parametrize("body", [
    # a first-wins parser at the target would run the call the gateway read as a ping
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","name":"read"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"sql":"DROP TABLE t",'
    b'"sql":"SELECT 1"}}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"id":3,"method":"ping"}]',
    b'{"jsonrpc":"2.0","id":"a:b","method":"m","params":{"x":"::","x":":"}}',
    b'{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"m"}',
])
def test_duplicate_member_names_are_refused(body: bytes) -> None:
    exc = refused(body)
    assert exc.code == INVALID_REQUEST and "repeats a member name" in exc.message
    assert refused(body.decode()).code == INVALID_REQUEST


# ---- helpers -----------------------------------------------------------------------------

def test_id_text_and_error_message() -> None:
    assert [id_text(v) for v in (1, "1", None, 2**70)] == ["1", '"1"', "null", str(2**70)]
    assert error_message(3, REFUSED, "no") == {"jsonrpc": "2.0", "id": 3, "error": {"code": REFUSED, "message": "no"}}
    assert error_message(None, PARSE_ERROR, "bad", {"rule": "r"})["error"]["data"] == {"rule": "r"}
    assert msgspec.json.decode(encode(error_message("x", -1, "m"))) == error_message("x", -1, "m")
    assert (PARSE_ERROR, INVALID_REQUEST) == (-32700, -32600)


# ---- properties --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error", "x", "a:b"]) | st.text(max_size=4),
        inner, max_size=5),
    max_leaves=20,
)
# values shaped like JSON-RPC, so that the later checks are reached as well
MESSAGE = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2])},
    optional={"id": JSON, "method": st.sampled_from(["m", "", "tools/call"]) | JSON, "params": JSON,
              "result": JSON, "error": JSON},
)


def _check(body: bytes | str, unique: bool = False) -> None:
    """``unique``: the body's objects repeat no member name (so none may be refused for it)."""
    try:
        messages, batch = decode_payload(body)
    except RpcError as exc:
        assert exc.code in (PARSE_ERROR, INVALID_REQUEST)
        assert not (unique and "repeats" in exc.message)
        return
    for msg in messages:
        assert msg.kind in ("request", "notification", "response")
        assert msg.obj["jsonrpc"] == "2.0"
        assert (msg.method is not None) == (msg.kind != "response")
        id_text(msg.id)


@settings(max_examples=200, deadline=None)
@given(JSON | MESSAGE | st.lists(MESSAGE | JSON, max_size=4))
def test_random_json_raises_only_rpc_error(value: object) -> None:
    _check(json.dumps(value), unique=True)
    _check(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"), unique=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40))
def test_random_bytes_raise_only_rpc_error(body: bytes | str) -> None:
    _check(body)


@settings(max_examples=100, deadline=None)
@given(MESSAGE)
def test_valid_messages_round_trip(value: dict) -> None:
    body = json.dumps(value).encode()
    try:
        messages, batch = decode_payload(body)
    except RpcError:
        return
    assert not batch and messages[0].obj == value


@settings(max_examples=100, deadline=None)
@given(MESSAGE, st.data())
def test_any_repeated_member_is_refused(value: dict, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(value)))
    again = json.dumps({key: data.draw(JSON)})
    body = json.dumps([{"x": [value]}])[:-4] + ", " + again[1:-1] + "}]}]"
    exc = refused(body)
    assert exc.code == INVALID_REQUEST and "repeats a member name" in exc.message

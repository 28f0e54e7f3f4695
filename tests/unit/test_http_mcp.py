"""MCP over JSON-RPC (protocols/http/mcp.py) with a real policy and masker: tool calls decided,
refusals shaped as JSON-RPC errors, tools/list filtered, target messages masked (listings not),
answers matched to requests by id, and every message recorded masked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Config, PolicySection, Rule, RuleMatch
from policy.engine import PolicyEngine
from policy.model import Decision
from protocols.http import mcp as mcp_module
from protocols.http.bodymask import BodyMasker
from protocols.http.jsonrpc import REFUSED, RpcError, decode_payload
from protocols.http.mcp import McpExchange, Refusal

EMAIL = "bob@example.com"
MASK = "****"
FRAME = ("jsonrpc", "id", "method")

RULES = [
    Rule(name="pii", action="mask", detectors=["email"], keys=["ssn"]),
    Rule(name="no-delete", action="deny", match=RuleMatch(tool=["delete_*"])),
    Rule(name="no-drop", action="deny", match=RuleMatch(sql=["DROP"])),
    Rule(name="review-ddl", action="review", match=RuleMatch(sql=["ALTER"]), approvers=["dba"]),
    Rule(name="review-deploy", action="review", match=RuleMatch(tool=["deploy"]), approvers=["ops"]),
]


class Exchange:
    """An McpExchange over the rules above, with what it recorded and decided."""

    def __init__(self, rules: list[Rule] | None = None, default: str = "allow"):
        cfg = Config(rules=RULES if rules is None else rules, policy=PolicySection(default=default))
        policy = PolicyEngine(cfg).session(protocol="http", target="tools", identity="alice", groups=["dev"],
                                           sql_arguments=["sql"])
        self.records: list[tuple[str, str | None, str | None, Any]] = []
        self.decisions: list[tuple[str, dict[str, Any], Decision]] = []
        self.ex = McpExchange(policy, BodyMasker(policy.masks),
                              lambda *a: self.records.append(a), lambda *a: self.decisions.append(a) or True)

    def send(self, payload: Any) -> Refusal | None:
        messages, batch = decode_payload(json.dumps(payload))
        return self.ex.from_caller(messages, batch)

    def answer(self, obj: Any) -> Any:
        return self.ex.from_target(obj)


def req(id_: Any, method: str, params: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        obj["params"] = params
    return obj


def call(id_: Any, name: str, arguments: Any = None) -> dict[str, Any]:
    return req(id_, "tools/call", {"name": name, "arguments": {} if arguments is None else arguments})


def result(id_: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": value}


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


# ---- tools/call allowed, then its answer -------------------------------------------------

def test_allowed_call_is_recorded_pending_then_answer_masked_and_recorded() -> None:
    x = Exchange()
    assert x.send(call(1, "lookup", {"who": EMAIL, "ssn": "123-45-6789"})) is None
    assert x.records == [("in", "tools/call", "1", call(1, "lookup", {"who": MASK, "ssn": MASK}))]
    [(name, args, decision)] = x.decisions
    assert (name, args, decision.action, decision.rule) == ("lookup", {"who": MASK, "ssn": MASK}, "allow", None)

    answer = result(1, text_result(f"found {EMAIL}"))
    out = x.answer(answer)
    assert out == result(1, text_result(f"found {MASK}"))
    assert answer["result"]["content"][0]["text"] == f"found {EMAIL}"  # the input is not changed in place
    assert x.records[-1] == ("out", "tools/call", "1", out)
    # the answer was matched: a second one with the same id is an unknown answer (still masked)
    again = x.answer(answer)
    assert again == out
    assert x.records[-1][1] is None


def test_answer_with_nothing_to_mask_is_returned_as_is() -> None:
    x = Exchange()
    x.send(call("a", "lookup"))
    answer = result("a", text_result("nothing here"))
    assert x.answer(answer) is answer
    assert x.records[-1] == ("out", "tools/call", '"a"', answer)


def test_error_answer_is_masked() -> None:
    x = Exchange()
    x.send(call(2, "lookup"))
    out = x.answer({"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": f"no user {EMAIL}",
                                                         "data": {"ssn": "1"}}})
    assert out["error"] == {"code": -1, "message": f"no user {MASK}", "data": {"ssn": MASK}}


# ---- tools/call refused ------------------------------------------------------------------

def test_denied_tool_is_answered_by_the_gateway() -> None:
    x = Exchange()
    refusal = x.send(call(7, "delete_user", {"id": 3}))
    assert isinstance(refusal, Refusal)
    assert refusal.decision.action == "deny" and refusal.decision.rule == "no-delete"
    body = refusal.body
    assert body["jsonrpc"] == "2.0" and body["id"] == 7
    assert body["error"]["code"] == REFUSED
    assert body["error"]["message"].startswith('wiregate: blocked by rule "no-delete"')
    assert body["error"]["data"] == {"rule": "no-delete", "decision": "deny"}
    assert [r[0] for r in x.records] == ["in", "gateway"]
    assert x.records[1] == ("gateway", "tools/call", "7", body)
    assert x.decisions[0][2].rule == "no-delete"
    # not forwarded, so nothing waits for an answer with id 7
    assert x.ex._pending == {}


def test_sql_in_arguments_is_denied() -> None:
    x = Exchange()
    refusal = x.send(call(1, "query", {"sql": "DROP TABLE users"}))
    assert refusal is not None
    assert refusal.body["error"]["data"]["rule"] == "no-drop"
    assert 'tool "query", argument "sql"' in refusal.body["error"]["message"]
    # SQL found by its look in an argument not named as SQL is checked as well
    refusal = x.send(call(2, "query", {"opts": {"text": "DROP TABLE users"}}))
    assert refusal is not None and refusal.decision.rule == "no-drop"
    assert x.send(call(3, "query", {"sql": "SELECT 1"})) is None


@pytest.mark.parametrize(("payload", "rule"), [
    (call(1, "query", {"sql": "ALTER TABLE t ADD c int"}), "review-ddl"),
    (call(1, "deploy", {"env": "prod"}), "review-deploy"),
])
def test_review_is_refused_with_an_approval_note(payload: dict, rule: str) -> None:
    x = Exchange()
    refusal = x.send(payload)
    assert refusal is not None
    assert refusal.decision.action == "deny" and refusal.decision.rule == rule
    message = refusal.body["error"]["message"]
    assert message.startswith(f'wiregate: blocked by rule "{rule}"')
    assert "needs an approval" in message
    assert refusal.body["error"]["data"] == {"rule": rule, "decision": "deny"}
    assert x.decisions[0][2].action == "deny"


def test_batch_with_one_refused_call_is_refused_whole() -> None:
    x = Exchange()
    batch = [
        call(1, "lookup", {"who": EMAIL}),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        call("two", "delete_user"),
        req(3, "ping"),
        result("s9", {"answer": 1}),  # the caller answering something: not answered back
    ]
    refusal = x.send(batch)
    assert refusal is not None and isinstance(refusal.body, list)
    assert refusal.decision.rule == "no-delete"
    assert [a["id"] for a in refusal.body] == [1, "two", 3]
    first, refused, ping = refusal.body
    assert refused["error"]["message"].startswith('wiregate: blocked by rule "no-delete"')
    for other in (first, ping):
        assert other["error"]["code"] == REFUSED
        assert other["error"]["message"].startswith("wiregate: not sent: another call in the same batch was refused")
        assert 'rule "no-delete"' in other["error"]["message"]
    assert all(a["error"]["data"] == {"rule": "no-delete", "decision": "deny"} for a in refusal.body)
    gateway = [r for r in x.records if r[0] == "gateway"]
    assert [(r[1], r[2]) for r in gateway] == [("tools/call", "1"), ("tools/call", '"two"'), ("ping", "3")]
    # every message in was recorded, masked
    ins = [r for r in x.records if r[0] == "in"]
    assert len(ins) == 5 and ins[0][3]["params"]["arguments"] == {"who": MASK}
    assert x.ex._pending == {}


def test_batch_of_allowed_calls_is_forwarded_and_remembered() -> None:
    x = Exchange()
    assert x.send([call(1, "a"), req(2, "tools/list"), {"jsonrpc": "2.0", "method": "notifications/x"}]) is None
    assert set(x.ex._pending) == {"1", "2"}


@pytest.mark.parametrize("params", [
    None, [], ["delete_user"], {"arguments": {}}, {"name": 5}, {"name": None},
    {"name": "lookup", "arguments": []}, {"name": "lookup", "arguments": "x"}, {"name": "lookup", "arguments": 1},
])
def test_malformed_tool_call_is_refused(params: Any) -> None:
    x = Exchange()
    refusal = x.send(req(1, "tools/call", params))
    assert refusal is not None
    assert refusal.decision.rule is None
    assert refusal.body["error"]["data"] == {"rule": None, "decision": "deny"}
    assert "params.name" in refusal.body["error"]["message"]


def test_null_arguments_are_no_arguments() -> None:
    x = Exchange()
    assert x.send(req(1, "tools/call", {"name": "lookup", "arguments": None})) is None
    assert x.send(req(2, "tools/call", {"name": "lookup"})) is None


def test_tool_call_notification_is_decided_too() -> None:
    # JSON-RPC servers run notifications: one must not slip a call past the policy
    x = Exchange()
    note = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete_user", "arguments": {}}}
    refusal = x.send(note)
    assert refusal is not None and refusal.decision.rule == "no-delete"
    assert refusal.body["id"] is None and refusal.body["error"]["data"]["rule"] == "no-delete"
    assert x.records[-1][0] == "gateway" and x.records[-1][2] is None
    refusal = x.send([note, req(1, "ping")])
    assert refusal is not None and [a["id"] for a in refusal.body] == [None, 1]
    allowed = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "lookup", "arguments": {}}}
    assert x.send(allowed) is None
    assert x.ex._pending == {}


def test_default_deny_refuses_unlisted_tools() -> None:
    x = Exchange([Rule(name="ok", action="allow", match=RuleMatch(tool=["read_*"]))], default="deny")
    assert x.send(call(1, "read_rows")) is None
    refusal = x.send(call(2, "write_rows"))
    assert refusal is not None and refusal.decision.action == "deny"


# ---- tools/list and other listings -------------------------------------------------------

def test_tools_list_is_filtered_and_keeps_pagination() -> None:
    x = Exchange()
    assert x.send(req(4, "tools/list", {"cursor": "c1"})) is None
    tools = [
        {"name": "read", "description": f"mail {EMAIL}", "inputSchema": {"properties": {"ssn": {"type": "string"}}}},
        {"name": "delete_user", "description": "gone"},
        "not a tool",
        {"description": "no name"},
        {"name": 5},
    ]
    answer = result(4, {"tools": tools, "nextCursor": "c2", "_meta": {"k": EMAIL}})
    out = x.answer(answer)
    # only tools the caller may call, and nothing in a listing is masked
    assert out["result"] == {"tools": [tools[0]], "nextCursor": "c2", "_meta": {"k": EMAIL}}
    assert out["id"] == 4 and out["jsonrpc"] == "2.0"
    assert answer["result"]["tools"] == tools
    assert x.records[-1] == ("out", "tools/list", "4", out)


def test_tools_list_with_every_tool_visible_is_returned_as_is() -> None:
    x = Exchange()
    x.send(req(1, "tools/list"))
    answer = result(1, {"tools": [{"name": "read"}, {"name": "write", "description": EMAIL}]})
    assert x.answer(answer) is answer


def test_tools_list_without_a_tool_array_passes() -> None:
    x = Exchange()
    x.send(req(1, "tools/list"))
    answer = result(1, {"tools": "oops"})
    assert x.answer(answer) is answer


@pytest.mark.parametrize("method", ["initialize", "prompts/list", "resources/list", "resources/templates/list",
                                    "ping"])
def test_listings_are_not_masked(method: str) -> None:
    x = Exchange()
    x.send(req(1, method))
    answer = result(1, {"serverInfo": {"name": "s"}, "instructions": f"ask {EMAIL}", "ssn": "x"})
    assert x.answer(answer) is answer
    assert x.records[-1] == ("out", method, "1", answer)


def test_error_of_a_listing_is_masked() -> None:
    x = Exchange()
    x.send(req(1, "resources/list"))
    out = x.answer({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": f"denied for {EMAIL}"}})
    assert out["error"]["message"] == f"denied for {MASK}"


@pytest.mark.parametrize("method", ["resources/read", "prompts/get", "completion/complete"])
def test_data_answers_are_masked(method: str) -> None:
    x = Exchange()
    x.send(req(1, method))
    out = x.answer(result(1, {"contents": [{"text": EMAIL}]}))
    assert out["result"] == {"contents": [{"text": MASK}]}


# ---- answers matched by id ----------------------------------------------------------------

def test_reused_id_does_not_unmask_a_call_answer() -> None:
    # the call's result must not be taken for the ping's (a listing, unmasked)
    x = Exchange()
    assert x.send([call(1, "lookup"), req(1, "ping")]) is None
    first = x.answer(result(1, text_result(EMAIL)))
    second = x.answer(result(1, text_result(EMAIL)))
    assert first["result"]["content"][0]["text"] == MASK
    assert second["result"]["content"][0]["text"] == MASK
    assert x.records[-2][1] is None  # either method: recorded as unknown
    assert x.ex._pending == {}


def test_reused_id_over_separate_payloads_and_late_reuse() -> None:
    x = Exchange()
    x.send(call(1, "lookup"))
    x.send(req(1, "ping"))
    assert x.answer(result(1, {}))["result"] == {}
    x.send(req(1, "ping"))  # reused again while the call is still unanswered
    for _ in range(2):
        assert x.answer(result(1, text_result(EMAIL)))["result"]["content"][0]["text"] == MASK


def test_reused_id_of_tools_list_and_call_is_filtered_and_masked() -> None:
    x = Exchange()
    x.send([req(2, "tools/list"), call(2, "lookup")])
    out = x.answer(result(2, {"tools": [{"name": "delete_user"}, {"name": "read", "description": EMAIL}]}))
    assert out["result"]["tools"] == [{"name": "read", "description": MASK}]


def test_same_method_twice_under_one_id_keeps_its_method() -> None:
    x = Exchange()
    x.send([req(3, "tools/list"), req(3, "tools/list")])
    answer = result(3, {"tools": [{"name": "read", "description": EMAIL}]})
    assert x.answer(answer) is answer
    assert x.answer(answer) is answer
    assert [r[1] for r in x.records[-2:]] == ["tools/list", "tools/list"]
    assert x.ex._pending == {}


def test_answer_to_unknown_id_is_masked() -> None:
    x = Exchange()
    out = x.answer(result(99, {"serverInfo": EMAIL}))
    assert out["result"] == {"serverInfo": MASK}
    assert x.records[-1] == ("out", None, "99", out)
    out = x.answer({"jsonrpc": "2.0", "result": EMAIL})  # no id at all
    assert out["result"] == MASK and x.records[-1][2] is None


def test_pending_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_module, "_MAX_PENDING", 8)
    x = Exchange()
    x.send(req(0, "initialize"))
    for i in range(1, 20):
        x.send(call(i, "lookup"))
    assert len(x.ex._pending) == 8
    assert "19" in x.ex._pending and "0" not in x.ex._pending
    # the oldest was forgotten: its answer is treated as unknown, so masked
    out = x.answer(result(0, {"instructions": EMAIL}))
    assert out["result"] == {"instructions": MASK}
    assert x.records[-1][1] is None


def test_default_pending_bound_holds() -> None:
    x = Exchange()
    for i in range(mcp_module._MAX_PENDING + 50):
        x.ex.from_caller(*decode_payload(json.dumps(req(i, "ping"))))
    assert len(x.ex._pending) == mcp_module._MAX_PENDING
    assert str(mcp_module._MAX_PENDING + 49) in x.ex._pending


# ---- messages the target starts ----------------------------------------------------------

def test_target_notification_params_are_masked() -> None:
    x = Exchange()
    note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": f"hi {EMAIL}"}}
    out = x.answer(note)
    assert out == {**note, "params": {"level": "info", "data": f"hi {MASK}"}}
    assert x.records[-1] == ("out", "notifications/message", None, out)
    plain = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert x.answer(plain) is plain


def test_target_request_is_remembered_for_the_callers_answer() -> None:
    x = Exchange()
    ask = req("s1", "sampling/createMessage", {"messages": [{"role": "user", "content": {"text": EMAIL}}]})
    out = x.answer(ask)
    assert out["params"]["messages"][0]["content"]["text"] == MASK
    assert x.records[-1] == ("out", "sampling/createMessage", '"s1"', out)
    # the caller's answer is recorded with the method it answers, masked, and forwarded
    reply = result("s1", {"role": "assistant", "content": {"type": "text", "text": f"to {EMAIL}"}})
    assert x.send(reply) is None
    direction, method, id_, recorded = x.records[-1]
    assert (direction, method, id_) == ("in", "sampling/createMessage", '"s1"')
    assert recorded["result"]["content"]["text"] == f"to {MASK}"
    assert x.ex._pending == {}  # an answer is not a request the target must answer
    # a second answer to the same id no longer names a method
    x.send(reply)
    assert x.records[-1][1] is None


def test_members_beyond_the_frame_are_masked_and_the_frame_is_not() -> None:
    rules = [Rule(name="pii", action="mask", detectors=["email"], keys=["id", "method", "jsonrpc", "extra"])]
    x = Exchange(rules)
    x.send(call(5, "lookup"))
    out = x.answer({"jsonrpc": "2.0", "id": 5, "result": {"id": 9}, "leak": EMAIL, "extra": "x"})
    # a non-conforming target's extra members are data too; the id still matches the request
    assert out == {"jsonrpc": "2.0", "id": 5, "result": {"id": None}, "leak": MASK, "extra": MASK}
    out = x.answer({"jsonrpc": "2.0", "id": "t", "method": "roots/list", "result": EMAIL})
    assert out["result"] == MASK and out["method"] == "roots/list" and out["id"] == "t"
    # with their names: a key rule sees them, and a name that is data is scrubbed
    x = Exchange()
    x.send(call(6, "lookup"))
    out = x.answer({"jsonrpc": "2.0", "id": 6, "result": {}, "ssn": "1", EMAIL: 2})
    assert out == {"jsonrpc": "2.0", "id": 6, "result": {}, "ssn": MASK, MASK: 2}


@pytest.mark.parametrize("garbage", [EMAIL, f"x {EMAIL}", 5, None, True, 1.5, [EMAIL, 3], {"foo": EMAIL},
                                     {"method": 7, "params": EMAIL}, {"id": 1}, {}, []])
def test_garbage_from_the_target_is_masked_and_does_not_crash(garbage: Any) -> None:
    x = Exchange()
    out = x.answer(garbage)
    assert EMAIL not in json.dumps(out)
    assert x.records or garbage == []
    for direction, _, _, recorded in x.records:
        assert direction == "out" and isinstance(recorded, dict) and EMAIL not in json.dumps(recorded)


def test_batch_from_the_target() -> None:
    x = Exchange()
    x.send([call(1, "lookup"), req(2, "tools/list")])
    clean = result(2, {"tools": [{"name": "read"}]})
    batch = [result(1, text_result(EMAIL)), clean]
    out = x.answer(batch)
    assert out[0]["result"]["content"][0]["text"] == MASK and out[1] is clean
    unchanged = [result(3, {"n": 1}), {"jsonrpc": "2.0", "method": "notifications/x"}]
    assert x.answer(unchanged) is unchanged


# ---- properties ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10) | st.sampled_from([EMAIL, "DROP TABLE t", "SELECT * FROM t", "ALTER TABLE t ADD c int",
                                              "delete_user"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["sql", "ssn", "name", "arguments", "q", EMAIL]) | st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)
NAMES = st.sampled_from(["lookup", "delete_user", "deploy", "query", ""]) | st.text(max_size=8) | JSON
PARAMS = st.one_of(
    st.fixed_dictionaries({"name": NAMES}, optional={"arguments": JSON, "_meta": JSON}),
    JSON,
)
IDS = st.integers(-3, 3) | st.sampled_from(["a", "", "1"]) | st.none()
TOOL_CALL = st.builds(lambda id_, params: {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params},
                      IDS, PARAMS)
NOTE_CALL = st.builds(lambda params: {"jsonrpc": "2.0", "method": "tools/call", "params": params}, PARAMS)


def _exchange() -> Exchange:
    return Exchange()


@settings(max_examples=150, deadline=None)
@given(st.lists(TOOL_CALL | NOTE_CALL | st.builds(req, IDS, st.sampled_from(["ping", "tools/list"])),
                min_size=1, max_size=4), st.booleans())
def test_random_tool_calls_never_raise(payload: list[dict], as_batch: bool) -> None:
    x = _exchange()
    body = json.dumps(payload if as_batch else payload[0])
    try:
        messages, batch = decode_payload(body)
    except RpcError:
        return
    refusal = x.ex.from_caller(messages, batch)
    if refusal is None:
        assert not any(r[0] == "gateway" for r in x.records)
        return
    answers = refusal.body if batch else [refusal.body]
    assert isinstance(refusal.body, list) == batch
    assert answers and all(a["error"]["code"] == REFUSED and a["error"]["data"]["decision"] == "deny"
                           for a in answers)
    assert all(a["error"]["message"].startswith("wiregate: ") for a in answers)
    assert not refusal.decision.allowed
    assert x.ex._pending == {}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.builds(req, IDS, st.sampled_from(["tools/call", "tools/list", "ping", "resources/read"]),
                          st.just({"name": "lookup"})), max_size=3),
       JSON | st.builds(lambda id_, r: {"jsonrpc": "2.0", "id": id_, "result": r}, IDS, JSON)
       | st.builds(lambda m, p: {"jsonrpc": "2.0", "method": m, "params": p}, st.text(max_size=5) | JSON, JSON))
def test_random_target_messages_never_raise_nor_leak(asked: list[dict], message: Any) -> None:
    x = _exchange()
    for r in asked:
        x.ex.from_caller(*decode_payload(json.dumps(r)))
    out = x.answer(message)
    listing = isinstance(message, dict) and any(r["method"] in ("tools/list", "ping") for r in asked)
    if listing:
        return  # a listing's result is left as it is
    # the frame (jsonrpc, id, method) is not masked: everything else is
    shown = {k: v for k, v in out.items() if k not in FRAME} if isinstance(out, dict) else out
    assert EMAIL not in json.dumps(shown)
    for direction, _, _, recorded in x.records:
        assert EMAIL not in json.dumps({k: v for k, v in recorded.items() if k not in FRAME})

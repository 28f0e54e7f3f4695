"""The approval broker (gateway/broker.py) and its webhooks (gateway/notify.py).

Everything runs on the real embedded store (SqliteStore in a tmp dir), real ``Identity`` objects
and a ``Config`` loaded from TOML; the broker's clock is injected so grant windows and expiry
need no sleeping. The one real wait is a rule timeout of 1s. Webhooks go to a real HTTP server
on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from gateway.approval import ApprovalError, ApprovalRecord, fingerprint
from gateway.broker import MAX_GRANT_S, Broker, Verdict, held_message, refusal
from gateway.config import Config, load_config
from gateway.identity import Identity
from gateway.notify import Notifier
from gateway.store import open_store
from policy.model import Decision
from recorder.events import ApprovalDecided, ApprovalRequested

T = TypeVar("T")

NOW = 1_700_000_000.0
INSTANCE = "gw-test"
TOKEN_ENV = "WIREGATE_TEST_HOOK_TOKEN"

ALICE = Identity(name="alice", groups=("dev", "dba"), method="dev")   # the requester, also a dba
BOB = Identity(name="bob", groups=("dba",), method="oidc")
SAM = Identity(name="sam", groups=("sec-team",), method="oidc")      # matches the pattern sec-*
CAROL = Identity(name="carol", groups=("dev",), method="dev")         # no approver
OLGA = Identity(name="olga", groups=("ops",), method="dev")           # approves review-ddl only

HOLD = dict(requester="alice", groups=("dev", "dba"), session_id="s-1", protocol="postgres", target="appdb",
            kind="sql", text="DELETE FROM accounts WHERE id = 5", recorded="DELETE FROM accounts WHERE id = ***",
            rule="review-deletes")


class Clock:
    """The broker's clock, moved by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingMetrics:
    """The two calls the broker makes, remembered."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self.waits: list[tuple[float, str]] = []

    def command(self, protocol: str, decision: str) -> None:
        self.commands.append((protocol, decision))

    def approval_wait(self, seconds: float, outcome: str) -> None:
        self.waits.append((seconds, outcome))


# ---------------------------------------------------------------- config

def config(tmp_path: Path, *, with_ddl: bool = True, approvals: str = "", deletes_webhook: str | None = None,
           ddl_webhook: str | None = None, name: str = "wiregate.toml") -> Config:
    text = f"""
[gateway]
state_dir = "{tmp_path / 'state'}"

{approvals}

[[targets]]
name = "appdb"
protocol = "postgres"
address = "127.0.0.1:5432"
user = "app"
allow_groups = ["*"]

[[targets]]
name = "otherdb"
protocol = "postgres"
address = "127.0.0.1:5433"
user = "app"
allow_groups = ["*"]

[[rules]]
name = "review-deletes"
action = "review"
match = {{ sql = ["delete"] }}
approvers = ["dba", "sec-*"]
timeout = "1s"
{f'webhook = "{deletes_webhook}"' if deletes_webhook else ""}
"""
    if with_ddl:
        text += f"""
[[rules]]
name = "review-ddl"
action = "review"
match = {{ sql = ["alter_table"] }}
approvers = ["ops"]
timeout = "2m"
{f'webhook = "{ddl_webhook}"' if ddl_webhook else ""}
"""
    text += """
[[rules]]
name = "reads"
action = "allow"
"""
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


@asynccontextmanager
async def running(cfg: Config, *, clock: Clock | None = None, notifier: Notifier | None = None,
                  metrics: RecordingMetrics | None = None) -> AsyncIterator[Broker]:
    store = open_store(cfg, instance=INSTANCE)
    await store.open()
    broker = Broker(cfg, store, instance=INSTANCE, clock=clock or Clock(), notifier=notifier,
                    metrics=metrics)  # type: ignore[arg-type]
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()
        await store.close()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(fn(), 20))


async def start_hold(broker: Broker, **overrides: Any) -> tuple[asyncio.Task[Verdict], ApprovalRecord]:
    """A hold running in a task, once it announced its request."""
    announced: asyncio.Future[ApprovalRecord] = asyncio.get_running_loop().create_future()

    def announce(record: ApprovalRecord) -> None:
        assert not announced.done(), "announced twice"
        announced.set_result(record)

    task = asyncio.create_task(broker.hold(**{**HOLD, **overrides}, announce=announce))
    await asyncio.wait({task, announced}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if not announced.done():
        verdict = task.result() if task.done() else None
        task.cancel()
        raise AssertionError(f"the command was not held: {verdict}")
    return task, announced.result()


async def assert_held(broker: Broker, **overrides: Any) -> ApprovalRecord:
    """The hold makes a request (then it is withdrawn again)."""
    task, record = await start_hold(broker, **overrides)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return record


async def status_of(broker: Broker, approval_id: str) -> str:
    record = await broker.store.get_approval(approval_id)
    assert record is not None
    return record.status


def stored(id_: str, **fields: Any) -> ApprovalRecord:
    base = dict(id=id_, requester="alice", groups=("dev",), target="appdb", protocol="postgres", kind="sql",
                command="DELETE FROM t", fingerprint="sql:shape:x", rule="review-deletes", approvers=("dba",),
                session_id=None, instance="gw-other", created=NOW, expires=NOW + 60)
    return ApprovalRecord(**{**base, **fields})


# ---------------------------------------------------------------- hold and decide

def test_hold_announces_the_request_and_an_approval_releases_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    metrics = RecordingMetrics()

    async def go() -> None:
        async with running(cfg, metrics=metrics) as broker:
            task, rec = await start_hold(broker)
            assert rec.requester == "alice" and rec.groups == ("dev", "dba")
            assert (rec.target, rec.protocol, rec.kind) == ("appdb", "postgres", "sql")
            assert rec.command == HOLD["recorded"]  # approvers see the recorded (masked) text
            assert rec.fingerprint == fingerprint("sql", HOLD["text"])
            assert rec.rule == "review-deletes" and rec.approvers == ("dba", "sec-*")
            assert rec.session_id == "s-1" and rec.instance == INSTANCE
            assert rec.created == NOW and rec.expires == NOW + 1
            assert rec.status == "pending" and rec.decided_by is None
            assert rec.id.startswith("ap-")
            assert await broker.store.get_approval(rec.id) == rec
            assert [r.id for r in await broker.list_requests()] == [rec.id]
            assert not task.done()

            decided = await broker.approve(rec.id, BOB)
            assert decided.status == "approved" and decided.decided_by == "bob" and decided.decided_at == NOW
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.approved is True and verdict.grant is None and verdict.message == ""
            assert verdict.record is not None
            assert verdict.record.id == rec.id and verdict.record.status == "approved"
            assert verdict.record.decided_by == "bob"
            assert await broker.list_requests() == []
        assert metrics.commands == [("postgres", "approved")]
        assert [o for _, o in metrics.waits] == ["approved"]
    run(go)


def test_a_pattern_approver_may_approve(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            await broker.approve(rec.id, SAM)
            assert (await asyncio.wait_for(task, 5)).approved
    run(go)


def test_deny_with_a_reason(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            decided = await broker.deny(rec.id, BOB, "  not during the freeze  ")
            assert decided.status == "denied" and decided.reason == "not during the freeze"
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.approved is False
            assert verdict.record is not None and verdict.record.status == "denied"
            assert verdict.message == (f'wiregate: blocked by rule "review-deletes": approval request {rec.id} '
                                       "was denied by bob: not during the freeze")
    run(go)


def test_deny_without_a_reason(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            decided = await broker.deny(rec.id, BOB, "   ")
            assert decided.reason is None
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.message.endswith(f"approval request {rec.id} was denied by bob")
            # a long reason is clipped, not refused
            _, rec2 = await start_hold(broker)
            assert (await broker.deny(rec2.id, BOB, "x" * 2000)).reason == "x" * 500
    run(go)


def test_timeout_expires_the_request(tmp_path: Path) -> None:
    metrics = RecordingMetrics()

    async def go() -> None:
        async with running(config(tmp_path), metrics=metrics) as broker:
            task, rec = await start_hold(broker)
            verdict = await asyncio.wait_for(task, 5)  # the rule says 1s
            assert verdict.approved is False
            assert verdict.record is not None and verdict.record.status == "expired"
            assert verdict.record.decided_by is None
            assert "timed out after 1s" in verdict.message and rec.id in verdict.message
            assert await status_of(broker, rec.id) == "expired"
            with pytest.raises(ApprovalError) as e:
                await broker.approve(rec.id, BOB)
            assert e.value.status == 409 and "expired" in e.value.message
        assert metrics.commands == [("postgres", "expired")]
        assert len(metrics.waits) == 1 and metrics.waits[0][1] == "expired"
    run(go)


def test_cancelling_the_hold_withdraws_the_request(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await status_of(broker, rec.id) == "withdrawn"
            with pytest.raises(ApprovalError) as e:
                await broker.approve(rec.id, BOB)
            assert e.value.status == 409 and "withdrawn" in e.value.message
            with pytest.raises(ApprovalError) as e:
                await broker.deny(rec.id, BOB)
            assert e.value.status == 409
    run(go)


def test_close_withdraws_what_this_instance_holds(tmp_path: Path) -> None:
    async def go() -> None:
        store = open_store(config(tmp_path), instance=INSTANCE)
        await store.open()
        broker = Broker(config(tmp_path), store, instance=INSTANCE, clock=Clock())
        await broker.start()
        task, rec = await start_hold(broker)
        await broker.close()
        try:
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.approved is False
        except asyncio.CancelledError:
            pass  # the held command dies with the gateway either way
        assert await status_of(broker, rec.id) == "withdrawn"
        await store.close()
    run(go)


def test_start_expires_requests_left_pending(tmp_path: Path) -> None:
    async def go() -> None:
        cfg = config(tmp_path)
        store = open_store(cfg, instance=INSTANCE)
        await store.open()
        await store.create_approval(stored("ap-000000000001", expires=NOW - 1))
        await store.create_approval(stored("ap-000000000002", expires=NOW + 60))
        await store.close()
        async with running(cfg) as broker:
            assert await status_of(broker, "ap-000000000001") == "expired"
            assert await status_of(broker, "ap-000000000002") == "pending"
    run(go)


# ---------------------------------------------------------------- the approver's errors

def test_who_may_decide(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            for who, words in ((ALICE, "own request"), (CAROL, "not an approver"), (OLGA, "not an approver")):
                for decide in (broker.approve, broker.deny):
                    with pytest.raises(ApprovalError) as e:
                        await decide(rec.id, who)
                    assert e.value.status == 403 and words in e.value.message, (who.name, e.value.message)
            assert await status_of(broker, rec.id) == "pending"
            await broker.approve(rec.id, BOB)
            await asyncio.wait_for(task, 5)
            for decide in (broker.approve, broker.deny):
                with pytest.raises(ApprovalError) as e:
                    await decide(rec.id, SAM)
                assert e.value.status == 409 and "already approved by bob" in e.value.message
    run(go)


def test_unknown_and_prefix_ids(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            for id_ in ("ap-abcd10000001", "ap-abcd20000002", "ap-ffff00000003"):
                await broker.store.create_approval(stored(id_))
            for missing in ("ap-000000000000", "ap-9", "nothing", ""):
                with pytest.raises(ApprovalError) as e:
                    await broker.get(missing)
                assert e.value.status == 404
            with pytest.raises(ApprovalError) as e:
                await broker.approve("ap-000000000000", BOB)
            assert e.value.status == 404
            with pytest.raises(ApprovalError) as e:
                await broker.get("ap-abcd")
            assert e.value.status == 400 and "2" in e.value.message
            with pytest.raises(ApprovalError) as e:
                await broker.approve("ap-abcd", BOB)
            assert e.value.status == 400
            assert (await broker.get("ap-ffff")).id == "ap-ffff00000003"
            assert (await broker.get("ap-abcd20000002")).id == "ap-abcd20000002"
            # prefixes are case-sensitive: ids are lower-case hex
            with pytest.raises(ApprovalError) as e:
                await broker.get("AP-FFFF")
            assert e.value.status == 404
            decided = await broker.approve("ap-abcd1", BOB)
            assert decided.id == "ap-abcd10000001" and decided.status == "approved"
            assert await status_of(broker, "ap-abcd20000002") == "pending"
    run(go)


@pytest.mark.parametrize("for_seconds", [0, -5, MAX_GRANT_S + 1, float("inf"), float("nan")])
def test_approve_for_out_of_range(tmp_path: Path, for_seconds: float) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            await broker.store.create_approval(stored("ap-000000000001"))
            with pytest.raises(ApprovalError) as e:
                await broker.approve("ap-000000000001", BOB, for_seconds)
            assert e.value.status == 400
            assert await status_of(broker, "ap-000000000001") == "pending"
            # the longest window is accepted
            decided = await broker.approve("ap-000000000001", BOB, MAX_GRANT_S)
            assert decided.grant_until == NOW + MAX_GRANT_S
    run(go)


def test_a_request_past_its_expiry_is_not_decided(tmp_path: Path) -> None:
    clock = Clock()

    async def go() -> None:
        async with running(config(tmp_path), clock=clock) as broker:
            # held by another instance, whose timer has not fired yet
            await broker.store.create_approval(stored("ap-000000000001", expires=NOW + 60))
            clock.now = NOW + 60
            with pytest.raises(ApprovalError) as e:
                await broker.approve("ap-000000000001", BOB)
            assert e.value.status == 409 and "expired" in e.value.message
            assert await status_of(broker, "ap-000000000001") == "expired"
    run(go)


def test_expiring_on_decision_wakes_the_held_command(tmp_path: Path) -> None:
    clock = Clock()

    async def go() -> None:
        async with running(config(tmp_path), clock=clock) as broker:
            # review-ddl waits 2m: only the approver's attempt can end it within this test
            task, rec = await start_hold(broker, rule="review-ddl")
            clock.now = rec.expires
            with pytest.raises(ApprovalError) as e:
                await broker.approve(rec.id, OLGA)
            assert e.value.status == 409 and "expired" in e.value.message
            verdict = await asyncio.wait_for(task, 2)
            assert not verdict.approved and verdict.record is not None and verdict.record.status == "expired"
            assert "timed out after 2m" in verdict.message
    run(go)


def test_list_requests_expires_and_filters(tmp_path: Path) -> None:
    clock = Clock()

    async def go() -> None:
        async with running(config(tmp_path), clock=clock) as broker:
            await broker.store.create_approval(stored("ap-000000000001", created=NOW, expires=NOW + 10))
            await broker.store.create_approval(stored("ap-000000000002", created=NOW + 1, expires=NOW + 100))
            assert [r.id for r in await broker.list_requests()] == ["ap-000000000002", "ap-000000000001"]
            clock.now = NOW + 10
            assert [r.id for r in await broker.list_requests()] == ["ap-000000000002"]
            assert [r.id for r in await broker.list_requests("expired")] == ["ap-000000000001"]
            assert len(await broker.list_requests(None)) == 2
    run(go)


# ---------------------------------------------------------------- approve --for

def test_approve_for_grants_the_same_command(tmp_path: Path) -> None:
    clock = Clock()
    metrics = RecordingMetrics()

    async def go() -> None:
        async with running(config(tmp_path), clock=clock, metrics=metrics) as broker:
            task, rec = await start_hold(broker)
            decided = await broker.approve(rec.id, BOB, for_seconds=60)
            assert decided.grant_until == NOW + 60
            assert (await asyncio.wait_for(task, 5)).approved
            before = await broker.store.list_approvals()

            clock.now = NOW + 30
            announced: list[ApprovalRecord] = []
            # other constants and spelling: the same statement
            verdict = await broker.hold(**{**HOLD, "text": "delete from ACCOUNTS where id = 77;",
                                           "recorded": "delete ..."}, announce=announced.append)
            assert verdict == Verdict(approved=True, grant=rec.id)
            assert announced == []
            assert await broker.store.list_approvals() == before
            assert metrics.commands[-1] == ("postgres", "granted")

            # any other requester, target or statement waits for its own approval
            await assert_held(broker, requester="carol", groups=("dev",))
            await assert_held(broker, target="otherdb")
            await assert_held(broker, text="DELETE FROM payroll WHERE id = 5")
            await assert_held(broker, text="DELETE FROM accounts")
            await assert_held(broker, kind="exec")
            assert len(await broker.store.list_approvals()) == len(before) + 5

            clock.now = NOW + 59.9
            assert (await broker.hold(**HOLD)).grant == rec.id
            clock.now = NOW + 60  # the window is over
            held = await assert_held(broker)
            assert held.id != rec.id
    run(go)


def test_a_plain_approval_grants_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            await broker.approve(rec.id, BOB)
            await asyncio.wait_for(task, 5)
            await assert_held(broker)
    run(go)


def test_a_denial_grants_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, rec = await start_hold(broker)
            await broker.deny(rec.id, BOB, "no")
            await asyncio.wait_for(task, 5)
            await assert_held(broker)
    run(go)


def test_tool_grants_depend_on_the_arguments(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            tool = dict(protocol="http", kind="tool", text="run_query", recorded="run_query(...)")
            task, rec = await start_hold(broker, **tool, args={"sql": "DELETE FROM t", "db": "main"})
            await broker.approve(rec.id, BOB, for_seconds=600)
            await asyncio.wait_for(task, 5)
            same = await broker.hold(**{**HOLD, **tool}, args={"db": "main", "sql": "DELETE FROM t"})
            assert same.approved and same.grant == rec.id
            await assert_held(broker, **tool, args={"sql": "DELETE FROM u", "db": "main"})
    run(go)


# ---------------------------------------------------------------- approvers and reload

def test_may_approve(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            assert broker.may_approve(BOB) and broker.may_approve(SAM) and broker.may_approve(OLGA)
            assert not broker.may_approve(CAROL)
            assert not broker.may_approve(Identity(name="x", groups=(), method="dev"))
            broker.reload(config(tmp_path, with_ddl=False, name="b.toml"))
            assert not broker.may_approve(OLGA) and broker.may_approve(BOB)
    run(go)


def test_no_review_rules_means_no_approvers(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[[rules]]\nname = "all"\naction = "allow"\n')

    async def go() -> None:
        async with running(load_config(path)) as broker:
            for who in (ALICE, BOB, SAM, OLGA, CAROL):
                assert not broker.may_approve(who)
    run(go)


def test_reload_removing_a_rule(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, held = await start_hold(broker, rule="review-ddl", text="ALTER TABLE t DROP COLUMN c",
                                          recorded="ALTER TABLE t DROP COLUMN c")
            assert held.approvers == ("ops",) and held.expires == NOW + 120
            broker.reload(config(tmp_path, with_ddl=False, name="b.toml"))

            before = await broker.store.list_approvals(status=None)
            verdict = await broker.hold(**{**HOLD, "rule": "review-ddl"})
            assert verdict.approved is False and verdict.record is None
            assert verdict.message == 'wiregate: blocked by rule "review-ddl": the rule no longer exists'
            assert await broker.store.list_approvals(status=None) == before

            # the request made before the reload keeps the approvers it was made with
            await broker.approve(held.id, OLGA)
            assert (await asyncio.wait_for(task, 5)).approved
    run(go)


def test_unknown_rule_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            for rule in ("reads", "nope"):  # an allow rule is no review rule
                verdict = await broker.hold(**{**HOLD, "rule": rule})
                assert not verdict.approved and "no longer exists" in verdict.message
            assert await broker.store.list_approvals() == []
    run(go)


# ---------------------------------------------------------------- webhooks

class Hooks:
    """A local HTTP server remembering every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hooks.lock:
                    hooks.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[tuple[str, str, str]]:
        """(path, event, approval status) in arrival order."""
        with self.lock:
            return [(p, b["event"], b["approval"]["status"]) for p, _, b in self.posts]

    async def wait_for(self, n: int) -> None:
        for _ in range(500):
            with self.lock:
                if len(self.posts) >= n:
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} webhook posts, got {self.events()}")


@pytest.fixture
def hooks() -> Any:
    server = Hooks()
    yield server
    server.close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def test_webhooks_on_request_and_decision(tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret-hook-token")
    cfg = config(tmp_path, approvals=f'[approvals]\nwebhook = "{hooks.url}/global"\nwebhook_token_env = "{TOKEN_ENV}"\n'
                                     'url = "https://wiregate.example.com:8081/"',
                 deletes_webhook=f"{hooks.url}/rule")

    async def go() -> None:
        async with running(cfg, notifier=Notifier(cfg)) as broker:
            task, rec = await start_hold(broker)
            await hooks.wait_for(2)
            await broker.approve(rec.id, BOB, for_seconds=1800)
            await asyncio.wait_for(task, 5)
            await hooks.wait_for(4)

        assert sorted(hooks.events()[:2]) == [("/global", "approval.requested", "pending"),
                                             ("/rule", "approval.requested", "pending")]
        assert sorted(hooks.events()[2:]) == [("/global", "approval.decided", "approved"),
                                             ("/rule", "approval.decided", "approved")]
        for path, headers, body in hooks.posts:
            assert headers["Authorization"] == "Bearer s3cret-hook-token"
            assert headers["Content-Type"] == "application/json"
            approval = msgspec.convert(body["approval"], ApprovalRecord)
            assert approval.id == rec.id and approval.requester == "alice" and approval.target == "appdb"
            assert approval.command == HOLD["recorded"]
        requested = next(b for _, _, b in hooks.posts if b["event"] == "approval.requested")
        assert msgspec.convert(requested["approval"], ApprovalRecord) == rec
        text = requested["text"]
        assert "*alice*" in text and "*appdb*" in text and rec.id in text and HOLD["recorded"] in text
        assert "WIREGATE_URL=https://wiregate.example.com:8081 wiregate approvals approve" in text
        decided = next(b for _, _, b in hooks.posts if b["event"] == "approval.decided")
        assert decided["approval"]["decided_by"] == "bob"
        assert decided["text"] == (f"Request {rec.id} by *alice* on *appdb* was approved by *bob*, "
                                   "and the same command for 30 min.")
    run(go)


def test_webhook_texts_of_refusals(tmp_path: Path, hooks: Hooks) -> None:
    cfg = config(tmp_path, approvals=f'[approvals]\nwebhook = "{hooks.url}/global"')

    async def go() -> None:
        async with running(cfg, notifier=Notifier(cfg)) as broker:
            task, denied = await start_hold(broker)
            await broker.deny(denied.id, BOB, "not now")
            await asyncio.wait_for(task, 5)
            task, withdrawn = await start_hold(broker)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await hooks.wait_for(4)
        with hooks.lock:
            decided = {b["approval"]["id"]: b for _, _, b in hooks.posts if b["event"] == "approval.decided"}
            headers = [h for _, h, _ in hooks.posts]
        assert all("Authorization" not in h for h in headers)  # no token configured, none sent
        assert decided[denied.id]["approval"]["status"] == "denied"
        assert decided[denied.id]["text"] == (f'blocked by rule "review-deletes": approval request {denied.id} '
                                              "was denied by bob: not now.")
        assert decided[withdrawn.id]["approval"]["status"] == "withdrawn"
        assert withdrawn.id in decided[withdrawn.id]["text"] and "withdrawn" in decided[withdrawn.id]["text"]
    run(go)


def test_a_failing_webhook_holds_nothing_up(tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t")
    cfg = config(tmp_path, approvals=f'[approvals]\nwebhook = "{refused_url()}"\nwebhook_token_env = "{TOKEN_ENV}"',
                 deletes_webhook=f"{hooks.url}/rule")

    async def go() -> None:
        async with running(cfg, notifier=Notifier(cfg)) as broker:
            task, rec = await start_hold(broker)
            # deliveries run in threads, each on its own: the order is only sure once one arrived
            await hooks.wait_for(1)
            await broker.approve(rec.id, BOB)
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.approved
            await hooks.wait_for(2)  # the working webhook still gets both
        assert [e for _, e, _ in hooks.events()] == ["approval.requested", "approval.decided"]
    run(go)


def test_only_failing_webhooks(tmp_path: Path, hooks: Hooks, caplog: pytest.LogCaptureFixture) -> None:
    # one refuses the connection, one answers 500; both carry a secret in the path, as Slack's do
    refused = refused_url() + "/T000-refused-secret"
    cfg = config(tmp_path, approvals=f'[approvals]\nwebhook = "{refused}"',
                 deletes_webhook=f"{hooks.url}/fail/T000-answer-secret")
    loop_errors: list[dict[str, Any]] = []

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        async with running(cfg, notifier=Notifier(cfg)) as broker:
            task, rec = await start_hold(broker)
            await broker.deny(rec.id, BOB)
            assert not (await asyncio.wait_for(task, 5)).approved
            assert await status_of(broker, rec.id) == "denied"
            await hooks.wait_for(2)

    with caplog.at_level("WARNING", logger="wiregate.approvals"):
        run(go)
    assert loop_errors == []  # the failures were handled, not left in a task
    messages = [r.getMessage() for r in caplog.records if r.name == "wiregate.approvals"]
    assert sum("failed" in m for m in messages) == 2 and sum("answered 500" in m for m in messages) == 2
    assert not any("secret" in m for m in messages), messages


def test_a_rule_webhook_equal_to_the_global_one_is_posted_once(tmp_path: Path, hooks: Hooks) -> None:
    url = f"{hooks.url}/same"
    cfg = config(tmp_path, approvals=f'[approvals]\nwebhook = "{url}"', ddl_webhook=url)

    async def go() -> None:
        async with running(cfg, notifier=Notifier(cfg)) as broker:
            task, rec = await start_hold(broker, rule="review-ddl")
            await hooks.wait_for(1)
            await broker.approve(rec.id, OLGA)
            await asyncio.wait_for(task, 5)
        # close() waited for the deliveries: nothing more is on its way
        assert hooks.events() == [("/same", "approval.requested", "pending"), ("/same", "approval.decided", "approved")]
    run(go)


# ---------------------------------------------------------------- texts

def _rec(**fields: Any) -> ApprovalRecord:
    return stored("ap-0123456789ab", **{"approvers": ("dba", "sec-*"), **fields})


@pytest.mark.parametrize("fields, text", [
    (dict(status="denied", decided_by="bob", reason="not now"), "was denied by bob: not now"),
    (dict(status="denied", decided_by="bob"), "was denied by bob"),
    (dict(status="expired", expires=NOW + 1), "timed out after 1s without a decision"),
    (dict(status="expired", expires=NOW + 90), "timed out after 90s without a decision"),
    (dict(status="expired", expires=NOW + 300), "timed out after 5m without a decision"),
    (dict(status="expired", expires=NOW + 5400), "timed out after 90m without a decision"),
    (dict(status="expired", expires=NOW + 7200), "timed out after 2h without a decision"),
    (dict(status="withdrawn"), "was withdrawn"),
])
def test_refusal(fields: dict[str, Any], text: str) -> None:
    assert refusal(_rec(**fields)) == f'wiregate: blocked by rule "review-deletes": approval request ap-0123456789ab {text}'


@pytest.mark.parametrize("status", ["pending", "approved"])
def test_no_refusal_for_approved_or_pending(status: str) -> None:
    assert refusal(_rec(status=status, decided_by="bob")) == ""


def test_held_message() -> None:
    rec = _rec(expires=NOW + 300)
    assert held_message(rec, None) == (
        'wiregate: held for approval by rule "review-deletes": request ap-0123456789ab waits up to 5m '
        "for one of dba, sec-* (wiregate approvals approve ap-0123456789ab)")
    assert held_message(rec, "https://gw.example:8081").endswith(
        "(WIREGATE_URL=https://gw.example:8081 wiregate approvals approve ap-0123456789ab)")


# ---------------------------------------------------------------- review: what the protocols call

def test_review_records_the_request_and_its_outcome(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            events: list[Any] = []
            announced: list[ApprovalRecord] = []
            task = asyncio.create_task(broker.review(**HOLD, record=events.append, announce=announced.append))
            while not announced:
                await asyncio.sleep(0.01)
            await broker.deny(announced[0].id, BOB, "no")
            verdict = await asyncio.wait_for(task, 5)
            assert verdict.decision("review-deletes") == Decision(action="deny", rule="review-deletes",
                                                                  message=verdict.message)
            assert [type(e) for e in events] == [ApprovalRequested, ApprovalDecided]
            assert events[0].request_id == events[1].request_id == announced[0].id
            assert events[0].text == HOLD["recorded"]
            assert (events[1].decision, events[1].by, events[1].reason) == ("denied", "bob", "no")
    run(go)


def test_review_of_a_removed_rule_records_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            broker.reload(config(tmp_path, with_ddl=False, name="b.toml"))
            events: list[Any] = []
            verdict = await broker.review(**{**HOLD, "rule": "review-ddl"}, record=events.append)
            assert not verdict.approved and events == []  # not a "granted" event
            assert verdict.decision("review-ddl").action == "deny"
    run(go)


def test_review_refuses_when_the_store_fails(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            async def broken(*args: Any, **kwargs: Any) -> None:
                raise OSError("disk full")

            broker.store.create_approval = broken  # type: ignore[method-assign]
            events: list[Any] = []
            verdict = await broker.review(**HOLD, record=events.append)
            assert not verdict.approved and events == []
            assert verdict.message == ('wiregate: blocked by rule "review-deletes": this needs an approval and the '
                                       "gateway could not request one; see its log")
    run(go)


def test_a_granted_review_is_recorded_as_granted(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(config(tmp_path)) as broker:
            task, held = await start_hold(broker)
            await broker.approve(held.id, BOB, for_seconds=60)
            await asyncio.wait_for(task, 5)
            events: list[Any] = []
            verdict = await broker.review(**HOLD, record=events.append)
            assert verdict.approved and verdict.grant == held.id
            assert verdict.decision("review-deletes") == Decision(action="allow", rule="review-deletes")
            assert [(type(e), e.request_id, e.decision) for e in events] == [(ApprovalDecided, held.id, "granted")]
    run(go)

"""`wiregate approvals ...` against an in-process admin API (the harness of test_admin_api)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.cli import main
from tests.unit.test_admin_api import AdminHarness


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminHarness]:
    h = AdminHarness(tmp_path_factory.mktemp("approvals-cli-state"))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture()
def h(harness: AdminHarness, monkeypatch: pytest.MonkeyPatch) -> AdminHarness:
    harness.reset()
    monkeypatch.setenv("WIREGATE_URL", harness.url + "/")
    monkeypatch.setenv("WIREGATE_TOKEN", harness.tokens["approver"])
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return harness


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["approvals", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_a_table(h: AdminHarness, capsys: pytest.CaptureFixture[str]):
    h.broker.add("ap-aaaa11", created=time.time() - 125,
                 command="UPDATE accounts\n   SET balance = 0\tWHERE id = 7 -- " + "x" * 200)
    h.broker.add("ap-bbbb22", requester="carol", created=time.time() - 7200, command="DELETE FROM t\x1b[2J",
                 target="billing", rule="deletes")
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "AGE", "REQUESTER", "TARGET", "RULE", "COMMAND"]
    assert len(lines) == 3  # each command on one line
    assert lines[1].split()[:5] == ["ap-aaaa11", "2m", "alice", "prod-db", "prod-writes"]
    assert "UPDATE accounts SET balance = 0 WHERE id = 7" in lines[1] and lines[1].endswith("…")
    assert lines[2].split()[:5] == ["ap-bbbb22", "2h", "carol", "billing", "deletes"]
    assert "\x1b" not in out and "DELETE FROM t\\x1b[2J" in lines[2]
    assert h.broker.calls[-1] == ("list", "pending")


def test_list_all_and_json(h: AdminHarness, capsys: pytest.CaptureFixture[str]):
    h.broker.add("ap-1")
    h.broker.add("ap-2", status="denied", created=time.time() - 1000)
    code, out, _ = run(capsys, "list", "--all")
    assert code == 0 and h.broker.calls[-1] == ("list", None)
    assert "STATUS" in out.splitlines()[0]
    assert any(line.startswith("ap-2") and "denied" in line for line in out.splitlines())
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [r["id"] for r in doc] == ["ap-1"] and doc[0]["command"] == "UPDATE accounts SET balance = 0"


def test_list_empty(h: AdminHarness, capsys: pytest.CaptureFixture[str]):
    assert run(capsys, "list") == (0, "no pending approval requests\n", "")


def test_approve_for_and_deny(h: AdminHarness, capsys: pytest.CaptureFixture[str]):
    h.broker.add("ap-c0ffee")
    h.broker.add("ap-d00d00")
    code, out, err = run(capsys, "approve", "ap-c0f", "--for", "30m")
    assert (code, out, err) == (0, "approved ap-c0ffee for 30m\n", "")
    _, approval_id, approver, for_seconds = h.broker.calls[-1]
    assert approval_id == "ap-c0f" and approver.name == "bob" and for_seconds == 1800
    code, out, _ = run(capsys, "deny", "ap-d00d00", "--reason", "not now")
    assert (code, out) == (0, "denied ap-d00d00: not now\n")
    assert h.broker.records["ap-d00d00"].status == "denied"


def test_approve_without_for(h: AdminHarness, capsys: pytest.CaptureFixture[str]):
    h.broker.add("ap-1")
    assert run(capsys, "approve", "ap-1") == (0, "approved ap-1\n", "")
    assert h.broker.calls[-1][3] is None


def test_api_errors_are_one_line(h: AdminHarness, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch):
    h.broker.add("ap-own", requester="alice")
    h.broker.add("ap-done", requester="carol", status="approved")
    monkeypatch.setenv("WIREGATE_TOKEN", h.tokens["alice"])
    code, out, err = run(capsys, "approve", "ap-own")
    assert code == 1 and out == ""
    assert err == "wiregate: ap-own: nobody approves or denies their own request\n"
    code, _, err = run(capsys, "deny", "ap-done")
    assert code == 1 and err == "wiregate: ap-done is already approved\n"
    code, _, err = run(capsys, "approve", "ap-nope")
    assert code == 1 and err == "wiregate: no approval request 'ap-nope'\n"
    monkeypatch.setenv("WIREGATE_TOKEN", h.tokens["nobody"])
    code, _, err = run(capsys, "list")
    assert code == 1 and err.startswith("wiregate: eve may not use the admin API") and err.count("\n") == 1
    monkeypatch.setenv("WIREGATE_TOKEN", "garbage")
    code, _, err = run(capsys, "list")
    assert code == 1 and err.startswith("wiregate: unknown token") and "garbage" not in err


def test_missing_token(h: AdminHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WIREGATE_TOKEN")
    code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert err.startswith("wiregate: WIREGATE_TOKEN is not set") and err.count("\n") == 1
    assert h.broker.calls == []


def test_unreachable_url(h: AdminHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WIREGATE_URL", f"http://127.0.0.1:{port}")
    code, out, err = run(capsys, "approve", "ap-1")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"http://127.0.0.1:{port}" in err and "WIREGATE_URL" in err


def test_bad_url_and_bad_duration_are_refused_locally(h: AdminHarness, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch):
    code, _, err = run(capsys, "approve", "ap-1", "--for", "soon")
    assert code == 1 and err.startswith("wiregate: --for:") and h.broker.calls == []
    monkeypatch.setenv("WIREGATE_URL", "ftp://example.com")
    code, _, err = run(capsys, "list")
    assert code == 1 and "WIREGATE_URL" in err


def test_not_an_admin_api(h: AdminHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    # something else answers on WIREGATE_URL: a clear line, not a traceback
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        monkeypatch.setenv("WIREGATE_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        code, _, err = run(capsys, "list")
        t.join(5)
    assert code == 1 and "did not answer with JSON" in err

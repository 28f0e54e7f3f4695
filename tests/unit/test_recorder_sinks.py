"""Audit export (recorder/sinks.py): real files, real loopback sockets, real HTTP receivers."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.config import AuditSink
from gateway.errors import WiregateError
from recorder.sinks import UDP_MAX_BYTES, AuditExporter, syslog_message

SECRET_TEXT = "select * from vault where pin = 'zz-very-secret-zz'"
TOKEN = "tok-abcdef-0123456789-not-for-logs"


def event(i: int, **extra) -> dict:
    return {"kind": "command", "time": 1_700_000_000.0 + i, "text": f"select {i}", "decision": "allow",
            "rule": None, **extra}


def publish_range(exp: AuditExporter, start: int, stop: int, session: str = "s1") -> list[str]:
    ids = []
    for i in range(start, stop):
        eid = f"{session}:{i}"
        exp.publish(eid, event(i))
        ids.append(eid)
    return ids


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def jsonl_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def spool_segments(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "audit").glob("spool-*.jsonl"))


@pytest.fixture
def exporters():
    made: list[AuditExporter] = []

    def make(state: Path, sinks: list[AuditSink], **kw) -> AuditExporter:
        exp = AuditExporter(state, sinks, **kw)
        made.append(exp)
        exp.start()
        return exp

    yield make
    for exp in made:
        exp.stop(timeout=5)


# --------------------------------------------------------------------------
# A webhook receiver: a real http.server that can be stopped and restarted on its port
# --------------------------------------------------------------------------

class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []              # ids of accepted events, in arrival order
        self.requests: list[dict] = []        # every request: status, headers, ids
        self.respond: Callable[[list[dict]], int] = lambda batch: 200
        self.hold = threading.Event()         # cleared: requests wait (a slow receiver)
        self.hold.set()
        self.inflight = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest?src=wiregate"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"     # keep-alive, as real receivers do

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._conns.add(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.inflight += 1
                receiver.hold.wait()
                batch = json.loads(body)
                status = receiver.respond(batch)
                with receiver.lock:
                    receiver.requests.append({"status": status, "path": self.path, "headers": dict(self.headers),
                                              "ids": [e["id"] for e in batch]})
                    if 200 <= status < 300:
                        receiver.ids.extend(e["id"] for e in batch)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        with self.lock:
            conns, self._conns = self._conns, set()
        for c in conns:  # kept-alive connections too: the receiver is really gone
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def accepted(self) -> list[str]:
        with self.lock:
            return list(self.ids)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    if r._server is not None:
        r.hold.set()
        r.stop()


def webhook(url: str, **kw) -> AuditSink:
    kw.setdefault("batch_size", 50)
    kw.setdefault("batch_ms", 20)
    kw.setdefault("retry_max_s", 0.2)
    return AuditSink(type="webhook", url=url, **kw)


# --------------------------------------------------------------------------
# jsonl
# --------------------------------------------------------------------------

def test_jsonl_delivers_every_event_once_in_order(tmp_path, exporters):
    out = tmp_path / "audit.jsonl"
    exp = exporters(tmp_path / "state", [AuditSink(type="jsonl", path=str(out))])
    ids = publish_range(exp, 0, 2000)
    exp.publish("s2:0", {})        # an event without fields is still a valid line
    wait_until(lambda: len(jsonl_ids(out)) == 2001, what="jsonl delivery")
    assert jsonl_ids(out) == ids + ["s2:0"]
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"id": "s1:0", **event(0)}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert exp.status()[0].delivered == 2001


def test_publish_rejects_an_event_carrying_its_own_id(tmp_path, exporters):
    exp = exporters(tmp_path / "state", [])
    with pytest.raises(ValueError):
        exp.publish("s1:0", {"id": "forged"})
    with pytest.raises(TypeError):
        exp.publish("", event(0))


def test_jsonl_resumes_exactly_once_after_a_crash_between_write_and_cursor(tmp_path, exporters):
    out = tmp_path / "audit.jsonl"
    state = tmp_path / "state"
    sinks = [AuditSink(type="jsonl", path=str(out))]
    exp = exporters(state, sinks)
    ids = publish_range(exp, 0, 10)
    wait_until(lambda: len(jsonl_ids(out)) == 10)
    [cursor] = (state / "audit" / "cursors").glob("*.json")
    early = cursor.read_bytes()
    ids += publish_range(exp, 10, 30)
    wait_until(lambda: len(jsonl_ids(out)) == 30)
    exp.stop()
    # the crash: events 10..29 reached the file, the cursor save after them did not
    cursor.write_bytes(early)
    exp2 = exporters(state, sinks)
    ids += publish_range(exp2, 30, 40)
    wait_until(lambda: len(jsonl_ids(out)) >= 40)
    time.sleep(0.2)
    assert jsonl_ids(out) == ids


def test_jsonl_follows_logrotate_and_ends_a_torn_line(tmp_path, exporters):
    out = tmp_path / "audit.jsonl"
    out.write_bytes(b'{"id":"old:1","kind":"comm')       # torn by a crash of an earlier writer
    exp = exporters(tmp_path / "state", [AuditSink(type="jsonl", path=str(out))])
    publish_range(exp, 0, 5)
    wait_until(lambda: out.read_text().count("\n") == 6)
    lines = out.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines[1:]] == [f"s1:{i}" for i in range(5)]
    out.rename(tmp_path / "audit.jsonl.1")
    publish_range(exp, 5, 8)
    wait_until(lambda: len(jsonl_ids(out)) == 3)
    assert jsonl_ids(out) == ["s1:5", "s1:6", "s1:7"]


# --------------------------------------------------------------------------
# syslog
# --------------------------------------------------------------------------

# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
RFC5424 = re.compile(
    rb'<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z|-) (?P<host>[\x21-\x7e]{1,255}) '
    rb'(?P<app>[\x21-\x7e]{1,48}) (?P<procid>[\x21-\x7e]{1,128}) (?P<msgid>[\x21-\x7e]{1,32}) '
    rb'\[(?P<sdid>[^ \]]+)(?P<params>(?: [^=\]]+="(?:[^"\\\]]|\\["\\\]])*")*)\] '
    rb'(?P<msg>\xef\xbb\xbf.*)\Z', re.S)


def parse_rfc5424(frame: bytes) -> dict:
    m = RFC5424.match(frame)
    assert m, frame[:200]
    params = dict(re.findall(r'([^ =]+)="((?:[^"\\\]]|\\["\\\]])*)"', m["params"].decode()))
    return {"pri": int(m["pri"]), "ts": m["ts"].decode(), "app": m["app"].decode(), "procid": m["procid"].decode(),
            "msgid": m["msgid"].decode(), "sdid": m["sdid"].decode(), "params": params,
            "json": json.loads(m["msg"][3:].decode()), "size": len(frame)}


def test_syslog_udp_rfc5424_one_datagram_per_event(tmp_path, exporters):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    port = sock.getsockname()[1]
    exp = exporters(tmp_path / "state", [AuditSink(type="syslog", address=f"udp://127.0.0.1:{port}")])
    exp.publish("sess-a:1", event(1))
    exp.publish("sess-a:2", event(2, decision="deny", rule="no-vault"))
    exp.publish('we"ird]:3', event(3, text="x" * 10_000 + "é" * 3000, groups=["g"] * 5000))
    frames = [parse_rfc5424(sock.recvfrom(65535)[0]) for _ in range(3)]
    sock.close()
    a, b, big = frames
    assert a["pri"] == 13 * 8 + 6 and b["pri"] == 13 * 8 + 4     # log audit; deny is a warning
    assert a["ts"] == "2023-11-14T22:13:21.000000Z"
    assert (a["app"], a["procid"], a["msgid"], a["sdid"]) == ("wiregate", str(os.getpid()), "command", "wiregate@32473")
    assert a["params"] == {"id": "sess-a:1", "session": "sess-a"}
    assert a["json"] == {"id": "sess-a:1", **event(1)}
    assert b["json"]["rule"] == "no-vault"
    # too big for a datagram: shortened to valid JSON, with a note, the id intact
    assert big["size"] <= UDP_MAX_BYTES
    assert big["params"]["id"] == 'we\\"ird\\]:3' and int(big["params"]["truncated"]) > 10_000
    assert big["json"]["id"] == 'we"ird]:3' and big["json"]["truncated"] is True
    assert big["json"]["text"].startswith("xxxx") and big["json"]["text"].endswith("…")


def test_syslog_message_stays_within_any_budget():
    line = json.dumps({"id": "s:1", **event(1, text="€" * 5000)}, ensure_ascii=False).encode()
    for budget in (2048, 600, 300):
        frame = syslog_message(line, "host wiregate 1", budget)
        assert len(frame) <= budget
        parsed = parse_rfc5424(frame)
        assert parsed["json"]["id"] == "s:1" and parsed["json"]["truncated"] is True


class TcpSyslog:
    """A syslog-over-TCP receiver parsing RFC 6587 octet-counted frames."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.frames: list[dict] = []
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b" " in buf[:12]:
                length, _, rest = buf.partition(b" ")
                assert length.isdigit(), buf[:40]
                if len(rest) < int(length):
                    break
                frame, buf = rest[:int(length)], rest[int(length):]
                with self.lock:
                    self.frames.append(parse_rfc5424(frame))

    def ids(self) -> list[str]:
        with self.lock:
            return [f["params"]["id"] for f in self.frames]

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)      # wakes the accept thread (Linux)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)     # close() alone does not wake the reader thread
                except OSError:
                    pass
                c.close()


def test_syslog_tcp_octet_counting_and_reconnect(tmp_path, exporters):
    rx = TcpSyslog()
    port = rx.port
    exp = exporters(tmp_path / "state", [AuditSink(type="syslog", address=f"tcp://127.0.0.1:{port}",
                                                    retry_max_s=0.2)])
    ids = publish_range(exp, 0, 300)
    wait_until(lambda: len(rx.ids()) == 300, what="tcp syslog")
    assert rx.ids() == ids
    assert rx.frames[5]["json"] == {"id": "s1:5", **event(5)}
    # the receiver goes away; events published meanwhile arrive once it is back
    rx.close()
    time.sleep(0.1)
    ids2 = publish_range(exp, 300, 400)
    time.sleep(0.5)
    wait_until(lambda: exp.status()[0].failing, what="failure noticed")
    rx2 = TcpSyslog(port)
    try:
        wait_until(lambda: len(rx2.ids()) >= 100, what="tcp syslog after restart")
        time.sleep(0.2)
        assert rx2.ids() == ids2
    finally:
        rx2.close()


# --------------------------------------------------------------------------
# webhook
# --------------------------------------------------------------------------

def test_webhook_receiver_down_then_back_gets_every_event_once_in_order(tmp_path, exporters, receiver,
                                                                         monkeypatch, caplog):
    monkeypatch.setenv("AUDIT_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG, logger="wiregate.audit")
    exp = exporters(tmp_path / "state", [webhook(receiver.url, token_env="AUDIT_TOKEN", batch_size=40)])
    ids = publish_range(exp, 0, 100)
    wait_until(lambda: len(receiver.accepted()) == 100, what="first delivery")
    receiver.stop()                                  # connection refused from now on
    ids += publish_range(exp, 100, 300)
    wait_until(lambda: exp.status()[0].failing, what="failure noticed")
    time.sleep(0.5)                                  # several retries hit the closed port
    assert len(receiver.accepted()) == 100
    receiver.start()                                 # same port
    ids += publish_range(exp, 300, 350)
    wait_until(lambda: len(receiver.accepted()) >= 350, what="delivery after restart")
    time.sleep(0.3)
    assert receiver.accepted() == ids                # every id once, in order
    req = receiver.requests[0]
    assert req["path"] == "/ingest?src=wiregate"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["Content-Type"] == "application/json"
    assert all(1 <= len(r["ids"]) <= 40 for r in receiver.requests)
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert len(set(keys)) == len(keys)               # each accepted batch has its own key
    assert "ConnectionRefusedError" in caplog.text
    assert TOKEN not in caplog.text and "select 1" not in caplog.text and "src=wiregate" not in caplog.text


def test_webhook_503_is_retried_with_the_same_batch_and_key(tmp_path, exporters, receiver, caplog):
    failures = {"left": 4}

    def respond(batch: list[dict]) -> int:
        if failures["left"]:
            failures["left"] -= 1
            return 503
        return 200

    receiver.respond = respond
    caplog.set_level(logging.DEBUG, logger="wiregate.audit")
    exp = exporters(tmp_path / "state", [webhook(receiver.url, batch_size=25, batch_ms=5)])
    ids = []
    for i in range(200):
        exp.publish(f"s1:{i}", event(i, text=SECRET_TEXT))
        ids.append(f"s1:{i}")
    wait_until(lambda: len(receiver.accepted()) == 200, what="delivery through 503s")
    time.sleep(0.2)
    assert receiver.accepted() == ids
    statuses = [r["status"] for r in receiver.requests]
    assert statuses[:5] == [503, 503, 503, 503, 200]
    first_five = receiver.requests[:5]
    assert len({tuple(r["ids"]) for r in first_five}) == 1           # the same batch, resent
    assert len({r["headers"]["Idempotency-Key"] for r in first_five}) == 1
    assert "HTTP 503" in caplog.text and "zz-very-secret-zz" not in caplog.text


def test_webhook_poison_event_is_set_aside_the_rest_delivered(tmp_path, exporters, receiver, caplog):
    receiver.respond = lambda batch: 422 if any(e["id"] == "s1:13" for e in batch) else 200
    state = tmp_path / "state"
    exp = exporters(state, [webhook(receiver.url, batch_size=20, batch_ms=50)])
    ids = publish_range(exp, 0, 40)
    wait_until(lambda: len(receiver.accepted()) == 39, what="delivery around the poison event")
    time.sleep(0.2)
    assert receiver.accepted() == [i for i in ids if i != "s1:13"]
    [rejected] = (state / "audit" / "rejected").glob("*.jsonl")
    assert jsonl_ids(rejected) == ["s1:13"]
    assert exp.status()[0].dead_lettered == 1
    assert "HTTP 422" in caplog.text and "s1:13" in caplog.text


def test_webhook_401_holds_events_until_the_receiver_is_fixed(tmp_path, exporters, receiver):
    state = {"ok": False}
    receiver.respond = lambda batch: 200 if state["ok"] else 401
    exp = exporters(tmp_path / "state", [webhook(receiver.url)])
    ids = publish_range(exp, 0, 60)
    wait_until(lambda: len(receiver.requests) >= 3, what="retries")
    assert receiver.accepted() == [] and exp.status()[0].last_error == "HTTP 401"
    state["ok"] = True
    wait_until(lambda: len(receiver.accepted()) == 60, what="delivery once fixed")
    assert receiver.accepted() == ids
    assert exp.status()[0].dead_lettered == 0


def test_cursor_survives_an_exporter_restart(tmp_path, exporters, receiver):
    state = tmp_path / "state"
    out = tmp_path / "audit.jsonl"
    sinks = [AuditSink(type="jsonl", path=str(out)), webhook(receiver.url)]
    exp = exporters(state, sinks)
    ids = publish_range(exp, 0, 100)
    wait_until(lambda: len(receiver.accepted()) == 100 and len(jsonl_ids(out)) == 100)
    receiver.stop()
    ids += publish_range(exp, 100, 150)              # spooled, not yet delivered to the webhook
    wait_until(lambda: len(jsonl_ids(out)) == 150)
    exp.stop(timeout=2)
    receiver.start()
    # the sinks in another order: each keeps its own cursor
    exp2 = exporters(state, list(reversed(sinks)))
    ids += publish_range(exp2, 150, 200)
    wait_until(lambda: len(receiver.accepted()) >= 200 and len(jsonl_ids(out)) >= 200)
    time.sleep(0.3)
    assert receiver.accepted() == ids
    assert jsonl_ids(out) == ids


def test_a_second_exporter_on_the_same_state_dir_is_refused(tmp_path, exporters):
    exporters(tmp_path / "state", [])
    with pytest.raises(WiregateError, match="another audit exporter"):
        AuditExporter(tmp_path / "state", [])


def test_missing_token_env_fails_closed(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_AUDIT_TOKEN", raising=False)
    with pytest.raises(WiregateError, match="NO_SUCH_AUDIT_TOKEN"):
        AuditExporter(tmp_path / "state", [webhook("http://127.0.0.1:9/x", token_env="NO_SUCH_AUDIT_TOKEN")])
    AuditExporter(tmp_path / "state", []).stop()     # the failed one released the folder


# --------------------------------------------------------------------------
# the spool
# --------------------------------------------------------------------------

def test_spool_is_trimmed_once_every_sink_has_passed_a_segment(tmp_path, exporters, receiver):
    state = tmp_path / "state"
    out = tmp_path / "audit.jsonl"
    receiver.stop()
    exp = exporters(state, [AuditSink(type="jsonl", path=str(out)), webhook(receiver.url, batch_size=100)],
                    segment_bytes=8192)
    ids = []
    for chunk in range(10):
        ids += publish_range(exp, chunk * 100, (chunk + 1) * 100)
        time.sleep(0.03)
    wait_until(lambda: len(jsonl_ids(out)) == 1000)
    time.sleep(1.2)
    # the jsonl sink is done, the webhook is not: its segments stay
    held = spool_segments(state)
    assert len(held) > 5
    receiver.start()
    wait_until(lambda: len(receiver.accepted()) == 1000, what="webhook catch-up")
    wait_until(lambda: len(spool_segments(state)) <= 2, what="spool trim")
    assert receiver.accepted() == ids
    assert spool_segments(state)[-1] >= held[-1]


def test_torn_spool_tail_after_a_crash_is_skipped(tmp_path, exporters):
    state = tmp_path / "state"
    out = tmp_path / "audit.jsonl"
    sinks = [AuditSink(type="jsonl", path=str(out))]
    exp = exporters(state, sinks)
    ids = publish_range(exp, 0, 5)
    wait_until(lambda: len(jsonl_ids(out)) == 5)
    exp.stop()
    last = state / "audit" / spool_segments(state)[-1]
    with open(last, "ab") as f:
        f.write(b'{"id":"s1:5","kind":"com')          # the crash hit mid-line
    exp2 = exporters(state, sinks)
    ids += publish_range(exp2, 6, 9)
    wait_until(lambda: len(jsonl_ids(out)) == 8)
    assert jsonl_ids(out) == ids


def test_a_slow_receiver_does_not_block_publish(tmp_path, exporters, receiver):
    receiver.hold.clear()                            # every request hangs until released
    exp = exporters(tmp_path / "state", [webhook(receiver.url, batch_size=100, batch_ms=1)])
    n = 20_000
    began = time.perf_counter()
    ids = publish_range(exp, 0, n)
    elapsed = time.perf_counter() - began
    assert receiver.accepted() == []
    assert elapsed < 5, elapsed
    receiver.hold.set()
    wait_until(lambda: len(receiver.accepted()) == n, timeout=60, what="delivery after the stall")
    assert receiver.accepted() == ids


def test_stop_does_not_hang_on_a_hung_receiver(tmp_path, exporters, receiver, caplog):
    state = tmp_path / "state"
    receiver.hold.clear()
    exp = exporters(state, [webhook(receiver.url)])
    ids = publish_range(exp, 0, 10)
    wait_until(lambda: receiver.inflight == 1, what="a request in flight")
    began = time.monotonic()
    exp.stop(timeout=0.5)
    assert time.monotonic() - began < 2
    assert "still delivering at stop" in caplog.text
    receiver.respond = lambda batch: 500      # the hung request fails once released
    receiver.hold.set()
    wait_until(lambda: len(receiver.requests) == 1)
    receiver.respond = lambda batch: 200
    exp2 = exporters(state, [webhook(receiver.url)])
    ids += publish_range(exp2, 10, 20)
    wait_until(lambda: len(receiver.accepted()) == 20, what="delivery by the next exporter")
    assert receiver.accepted() == ids


def test_throughput(tmp_path, exporters, receiver, capsys):
    """publish and webhook delivery rates, printed for the record (run with -s)."""
    state = tmp_path / "state"
    receiver.stop()
    exp = exporters(state, [webhook(receiver.url, batch_size=500, batch_ms=50)])
    n = 50_000
    payload = [event(i, text=f"select * from orders where id = {i}", identity="alice@example.com")
               for i in range(n)]
    began = time.perf_counter()
    for i, ev in enumerate(payload):
        exp.publish(f"bench:{i}", ev)
    publish_rate = n / (time.perf_counter() - began)
    time.sleep(0.3)                                  # spooled and fsynced
    receiver.start()
    began = time.perf_counter()
    wait_until(lambda: len(receiver.accepted()) == n, timeout=120, what="bulk delivery")
    deliver_rate = n / (time.perf_counter() - began)
    with capsys.disabled():
        print(f"\naudit publish: {publish_rate:,.0f} events/s; webhook delivery: {deliver_rate:,.0f} events/s "
              f"(batches of 500, loopback, http.server receiver)")
    assert publish_rate > 20_000

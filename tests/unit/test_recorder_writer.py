"""The recorder's writer and index: real files and a real SQLite index in tmp dirs.

Write failures are real too: a path component that is a file (ENOTDIR), and RLIMIT_FSIZE in a
child process (EFBIG, as a full disk would fail a write). The crash test SIGKILLs a child that
is writing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import RecordingSection
from gateway.errors import WiregateError
from gateway.keys import ed25519_key_id, load_or_create_ed25519
from recorder.events import Command, EventsLost, Result, SessionEnd, SessionStart
from recorder.format import read_recording, verify
from recorder.index import SCHEMA_VERSION, Index
from recorder.writer import STOPPED_REASON, Recorder

KEY = Ed25519PrivateKey.generate()
KEYS = {ed25519_key_id(KEY.public_key()): KEY.public_key()}
# an "unmasked value" that must never reach the log
SECRET = "4111-1111-1111-1111"
REPO = Path(__file__).resolve().parents[2]


def start(sid: str, *, identity: str = "alice", target: str = "prod-db", protocol: str = "postgres",
          at: float | None = None) -> SessionStart:
    return SessionStart(session_id=sid, time=time.time() if at is None else at, identity=identity,
                        groups=("dev",), target=target, protocol=protocol, client="10.1.2.3:5555", tls=True,
                        instance="gw-test", auth="dev-token")


def cmd(i: int, decision: str = "allow", text: str | None = None) -> Command:
    return Command(time=time.time(), kind="sql", text=text if text is not None else f"SELECT {i}",
                   decision=decision, rule=None if decision == "allow" else "no-drop")


def result(rows: int = 1) -> Result:
    return Result(time=time.time(), tag=f"SELECT {rows}", rows=rows, bytes=42, duration_ms=0.3)


def end(commands: int = 0) -> SessionEnd:
    return SessionEnd(time=time.time(), reason="client closed", commands=commands, bytes_in=10, bytes_out=20)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def files(state: Path) -> list[Path]:
    return sorted((state / "recordings").rglob("*.wgrec"))


@pytest.fixture
def make(tmp_path):
    made: list[Recorder] = []

    def make(sinks=None, **cfg) -> Recorder:
        rec = Recorder(tmp_path / "state", RecordingSection(**cfg), KEY, instance="gw-test", sinks=sinks)
        rec.start()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.stop()


class FsyncProbe:
    """Wraps os.fsync: records which file or directory each call made durable."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def count(self, path: Path) -> int:
        return self.calls.count(str(path))


# ---- what gets written ---------------------------------------------------------------

def test_a_session_is_written_sealed_and_indexed(make, tmp_path):
    rec = make()
    s = rec.open(start("s1"))
    assert s.writable and rec.healthy
    for i in range(3):
        assert s.record(cmd(i)) and s.record(result())
    assert s.record(cmd(9, decision="deny", text="DROP TABLE t"))
    s.end(end(4))
    assert not s.writable and not s.record(cmd(10))  # after the end: refused
    rec.stop()
    [path] = files(tmp_path / "state")
    assert path.name == "s1.wgrec" and path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    recording = read_recording(path)
    kinds = [type(e).__name__ for _, e in recording.events]
    assert kinds == ["SessionStart"] + ["Command", "Result"] * 3 + ["Command", "SessionEnd"]
    report = verify(path, KEYS)
    assert report.ok and report.sealed and not report.warnings
    row = Index(tmp_path / "state", readonly=True).get("s1")
    assert (row.frames, row.commands, row.denied, row.sealed, row.end_reason) == (9, 4, 1, True, "client closed")
    assert row.seal == recording.seal and Path(row.path) == path


def test_stop_seals_the_sessions_still_open(make, tmp_path):
    rec = make()
    s = rec.open(start("open-at-stop"))
    s.record(cmd(1))
    rec.stop()
    assert not rec.healthy and not s.writable and not s.record(cmd(2))
    [path] = files(tmp_path / "state")
    last = read_recording(path).events[-1][1]
    assert isinstance(last, SessionEnd) and last.reason == STOPPED_REASON and last.commands == 1
    report = verify(path, KEYS)
    assert report.ok and report.sealed and not report.warnings
    assert Index(tmp_path / "state", readonly=True).get("open-at-stop").end_reason == STOPPED_REASON


def test_record_of_a_session_end_ends_and_seals(make, tmp_path):
    rec = make()
    s = rec.open(start("via-record"))
    assert s.record(end(0))
    assert not s.record(cmd(1))
    rec.stop()
    assert read_recording(files(tmp_path / "state")[0]).sealed


def test_session_ids_are_checked_and_not_reused_while_open(make):
    rec = make()
    with pytest.raises(ValueError):
        rec.open(start("../escape"))
    rec.open(start("dup"))
    with pytest.raises(ValueError, match="already"):
        rec.open(start("dup"))


def test_a_malformed_event_leaves_an_events_lost_frame_and_no_value_in_the_log(make, tmp_path, caplog):
    rec = make()
    s = rec.open(start("bad"))
    assert s.record(Result(time=time.time(), tag=SECRET, rows="many", bytes=1, duration_ms=1.0))  # type: ignore[arg-type]
    assert s.record(cmd(1))
    s.end(end(1))
    rec.stop()
    [path] = files(tmp_path / "state")
    events = [e for _, e in read_recording(path).events]
    assert isinstance(events[1], EventsLost) and events[1].count == 1 and isinstance(events[2], Command)
    assert verify(path, KEYS).ok and rec.failure is None
    assert "a Result event cannot be recorded" in caplog.text and SECRET not in caplog.text


# ---- batching and fsync -------------------------------------------------------------

def test_events_queued_together_are_written_in_one_batch(make, tmp_path):
    rec = make(batch_ms=300)
    s = rec.open(start("batched"))
    wait_for(lambda: rec.batches == 1)  # the first event after a quiet time goes at once
    for i in range(200):
        assert s.record(cmd(i))
    time.sleep(0.05)
    assert rec.batches == 1  # the writer waits out batch_ms to gather them
    wait_for(lambda: rec.events_written == 201)
    assert rec.batches == 2


def test_fsync_batch_makes_every_batch_and_every_new_directory_durable(make, tmp_path, monkeypatch):
    probe = FsyncProbe(monkeypatch)
    rec = make(fsync="batch", batch_ms=1)
    s = rec.open(start("fs-batch"))
    for i in range(4):
        wait_for(lambda: rec.queued == 0 and rec.events_written == 1 + i)
        if i < 3:
            s.record(cmd(i))
    s.end(end(3))
    rec.stop()
    [path] = files(tmp_path / "state")
    assert probe.count(path) == rec.batches == 5  # start, 3 commands, end + seal
    assert probe.count(path.parent) == 1 and probe.count(path.parent.parent) == 1


def test_fsync_never_leaves_it_to_the_os(make, tmp_path, monkeypatch):
    probe = FsyncProbe(monkeypatch)
    rec = make(fsync="never", batch_ms=1)
    s = rec.open(start("fs-never"))
    for i in range(50):
        s.record(cmd(i))
    s.end(end(50))
    rec.stop()
    assert probe.calls == [] and verify(files(tmp_path / "state")[0], KEYS).ok


def test_fsync_always_acknowledges_after_the_fsync_without_waiting_for_batch_ms(make, tmp_path, monkeypatch):
    probe = FsyncProbe(monkeypatch)
    rec = make(fsync="always", batch_ms=5000)

    async def run() -> None:
        s = rec.open(start("fs-always"))
        assert s.sync_required
        for i in range(3):
            assert s.record(cmd(i))
            began = time.monotonic()
            assert await s.synced() is True
            assert time.monotonic() - began < 2  # not batch_ms: the caller is waiting
            path = files(tmp_path / "state")[0]
            # durable before acknowledged: every frame so far is on disk and the file was fsynced
            assert probe.count(path) >= i + 1 and len(read_recording(path).events) == i + 2

    asyncio.run(run())


# ---- back pressure and failures ---------------------------------------------------------

def test_a_full_queue_refuses_and_the_gap_is_recorded(make, tmp_path, caplog):
    rec = make(batch_ms=1000, queue_size=10)
    s = rec.open(start("full"))
    wait_for(lambda: rec.events_written == 1)
    accepted = [s.record(cmd(i)) for i in range(30)]
    assert accepted == [True] * 10 + [False] * 20
    assert rec.healthy and s.writable and s.lost == 20  # back pressure, not a failure
    wait_for(lambda: rec.queued == 0 and rec.events_written == 11)
    assert s.record(cmd(99))
    s.end(end(11))
    rec.stop()
    events = [e for _, e in read_recording(files(tmp_path / "state")[0]).events]
    lost = [e for e in events if isinstance(e, EventsLost)]
    assert len(lost) == 1 and lost[0].count == 20 and events[events.index(lost[0]) + 1].text == "SELECT 99"
    assert "20 refused because the queue was full" in caplog.text


def test_a_write_failure_makes_the_recorder_refuse_everything_and_logs_once(make, tmp_path, caplog):
    rec = make(batch_ms=1)
    day = tmp_path / "state" / "recordings" / "2023-11-14"
    day.write_bytes(b"")  # the day's directory cannot be created: writing the session file fails

    async def run() -> None:
        s = rec.open(start("doomed", at=1_700_000_000.0))
        assert await s.synced() is False
        assert not rec.healthy and not s.writable
        assert not s.record(cmd(1, text=SECRET)) and not s.record(cmd(2))
        later = rec.open(start("later"))
        assert not later.writable and not later.record(cmd(3))
        assert await later.synced() is False

    asyncio.run(run())
    assert "ENOTDIR" in rec.failure
    rec.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "wiregate.recorder"]
    assert len(errors) == 1 and "cannot write" in errors[0].getMessage()
    assert "refused because the recorder is not recording" in caplog.text and SECRET not in caplog.text


CHILD_PRELUDE = """
import json, logging, resource, signal, sys, time
from pathlib import Path
from gateway.config import RecordingSection
from gateway.keys import load_or_create_ed25519
from recorder.events import Command, Result, SessionEnd, SessionStart, TermOutput
from recorder.writer import Recorder
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
state = Path(sys.argv[1])
key = load_or_create_ed25519(state / "keys" / "recording.pem")
def start(sid):
    return SessionStart(session_id=sid, time=time.time(), identity="alice", groups=("dev",), target="db",
                        protocol="postgres", client="10.0.0.1:1", tls=False, instance="child", auth="dev-token")
"""


def run_child(script: str, state: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(script), str(state)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def child_keys(state: Path) -> dict:
    key = load_or_create_ed25519(state / "keys" / "recording.pem")
    return {ed25519_key_id(key.public_key()): key.public_key()}


def test_a_full_disk_fails_closed(tmp_path):
    """RLIMIT_FSIZE makes a write fail half way, as a full disk does (EFBIG instead of ENOSPC)."""
    state = tmp_path / "state"
    child = run_child(f"""
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a plain EFBIG error instead of a kill
        rec = Recorder(state, RecordingSection(batch_ms=1, fsync="batch"), key, instance="child")
        rec.start()
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        s = rec.open(start("full-disk"))
        accepted = 0
        for i in range(200):
            accepted += s.record(TermOutput(time=time.time(), data=b"{SECRET} " + bytes(60_000)))
            time.sleep(0.005)
            if not rec.healthy:
                break
        after = [s.record(Command(time=time.time(), kind="sql", text="{SECRET}", decision="allow", rule=None))
                 for _ in range(3)]
        print(json.dumps({{"healthy": rec.healthy, "failure": rec.failure, "accepted": accepted,
                           "after": after, "writable": s.writable}}))
        rec.stop()
    """, state)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    got = json.loads(out)
    assert got["healthy"] is False and got["writable"] is False and got["after"] == [False] * 3
    assert "EFBIG" in got["failure"] and "full-disk.wgrec" in got["failure"]
    assert 3 <= got["accepted"] < 200
    assert err.count("ERROR recorder: cannot write") == 1 and SECRET not in err, err
    [path] = files(state)
    report = verify(path, child_keys(state))
    assert report.ok, report.errors  # what reached the disk is intact: a torn tail, no seal
    assert any(w.startswith("not sealed") for w in report.warnings)
    assert len(read_recording(path).events) >= 3


def test_a_recorder_killed_while_writing_leaves_files_that_verify_up_to_their_torn_tail(tmp_path):
    state = tmp_path / "state"
    child = run_child("""
        import os
        rec = Recorder(state, RecordingSection(batch_ms=2, fsync="never", queue_size=5000), key, instance="child")
        rec.start()
        sessions, opened, n = [], 0, 0
        def new():
            global opened
            opened += 1
            return rec.open(start(f"kill-{opened}"))
        sessions = [new() for _ in range(6)]
        while True:
            for k, s in enumerate(sessions):
                ok = s.record(Command(time=time.time(), kind="sql", text=f"SELECT {n}", decision="allow", rule=None))
                ok &= s.record(Result(time=time.time(), tag="SELECT 1", rows=1, bytes=20, duration_ms=0.1))
                ok &= s.record(TermOutput(time=time.time(), data=os.urandom(1000 + (n * 7919) % 60000)))
                if not ok:
                    time.sleep(0.001)
                if n % 97 == k:
                    s.end(SessionEnd(time=time.time(), reason="done", commands=n, bytes_in=0, bytes_out=0))
                    sessions[k] = new()
            n += 1
            if n == 300:
                print("ready", flush=True)
    """, state)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    keys = child_keys(state)
    paths = files(state)
    sealed = unsealed = 0
    for path in paths:
        report = verify(path, keys)
        assert report.ok, (path.name, report.errors)
        if report.sealed:
            sealed += 1
            assert not report.warnings
        else:
            unsealed += 1
            assert all(w.startswith(("torn last frame", "not sealed", "the file is empty", "torn header"))
                       for w in report.warnings), report.warnings
    assert sealed >= 1 and unsealed >= 1 and len(paths) == sealed + unsealed
    assert sum(len(read_recording(p).events) for p in paths) > 1000
    # the index survives too (WAL: a crash loses at most the last commits)
    rows = Index(state, readonly=True).list()
    assert {r.id for r in rows if r.sealed} <= {p.stem for p in paths}


# ---- concurrency, sinks, index ---------------------------------------------------------------

def test_each_session_keeps_its_order_under_concurrent_sessions(make, tmp_path):
    rec = make(batch_ms=2, queue_size=100_000)
    per_session = 400

    def client(n: int) -> None:
        s = rec.open(start(f"conc-{n}"))
        for i in range(per_session):
            while not s.record(cmd(i, text=f"{n}:{i}")):
                time.sleep(0.001)
        s.end(end(per_session))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.stop()
    for n in range(8):
        path = next((tmp_path / "state" / "recordings").rglob(f"conc-{n}.wgrec"))
        events = [e for _, e in read_recording(path).events]
        assert [e.text for e in events[1:-1]] == [f"{n}:{i}" for i in range(per_session)]
        assert verify(path, KEYS).ok


class SinkProbe:
    """An audit sink that checks, at each publish, that the event is already in the file."""

    def __init__(self, state: Path):
        self.state = state
        self.published: list[tuple[str, dict]] = []
        self.before_disk: list[str] = []

    def publish(self, event_id: str, event: dict) -> None:
        self.published.append((event_id, event))
        sid, _, seq = event_id.rpartition(":")
        path = next((self.state / "recordings").rglob(f"{sid}.wgrec"))
        rec = read_recording(path)
        on_disk = rec.sealed if event["kind"] == "seal" else len(rec.events) > int(seq)
        if not on_disk:
            self.before_disk.append(event_id)


def test_sinks_get_every_event_after_it_is_on_disk(make, tmp_path):
    probe = SinkProbe(tmp_path / "state")
    rec = make(sinks=probe, batch_ms=1)
    s = rec.open(start("audited"))
    for i in range(5):
        s.record(cmd(i))
        s.record(result())
    s.end(end(5))
    rec.stop()
    assert [i for i, _ in probe.published] == [f"audited:{n}" for n in range(13)]
    assert probe.before_disk == []
    kinds = [e["kind"] for _, e in probe.published]
    assert kinds[0] == "session_start" and kinds[-2:] == ["session_end", "seal"]
    first = probe.published[1][1]
    assert first["session_id"] == "audited" and first["seq"] == 1 and first["text"] == "SELECT 0"
    json.dumps([e for _, e in probe.published])


def test_a_failing_sink_does_not_stop_the_recording(make, tmp_path, caplog):
    class Broken:
        def publish(self, event_id, event):
            raise ConnectionError(SECRET)

    rec = make(sinks=Broken(), batch_ms=1)
    s = rec.open(start("sink-down"))
    s.record(cmd(1))
    s.end(end(1))
    rec.stop()
    assert rec.failure is None and verify(files(tmp_path / "state")[0], KEYS).ok
    assert "audit export refused event sink-down:0 (ConnectionError)" in caplog.text
    assert "4 recorded but refused by the audit export" in caplog.text  # start, command, end, seal and SECRET not in caplog.text


def test_the_index_answers_by_identity_target_protocol_and_time(make, tmp_path):
    rec = make(batch_ms=1)
    base = 1_750_000_000.0
    plan = [("a1", "alice", "prod-db", "postgres", base), ("a2", "alice", "web-1", "ssh", base + 3600),
            ("b1", "bob", "prod-db", "postgres", base + 7200), ("c1", "carol", "mcp", "http", base + 10800)]
    for sid, who, target, protocol, at in plan:
        s = rec.open(start(sid, identity=who, target=target, protocol=protocol, at=at))
        s.record(cmd(1))
        s.record(cmd(2, decision="deny"))
        if sid != "c1":
            s.end(end(2))
    wait_for(lambda: rec.events_written >= 3 * 5 + 3 and rec.queued == 0)
    index = Index(tmp_path / "state", readonly=True)  # while the writer runs
    ids = lambda rows: [r.id for r in rows]  # noqa: E731
    assert ids(index.list()) == ["c1", "b1", "a2", "a1"]  # newest first
    assert ids(index.list(identity="alice")) == ["a2", "a1"]
    assert ids(index.list(target="prod-db")) == ["b1", "a1"]
    assert ids(index.list(protocol="ssh")) == ["a2"]
    assert ids(index.list(since=base + 3600)) == ["c1", "b1", "a2"]
    assert ids(index.list(identity="alice", protocol="postgres", since=base - 1)) == ["a1"]
    assert ids(index.list(limit=1)) == ["c1"] and ids(index.find("a")) == ["a2", "a1"]
    b1 = index.get("b1")
    assert (b1.identity, b1.groups, b1.client, b1.tls, b1.instance, b1.auth) == \
        ("bob", ("dev",), "10.1.2.3:5555", True, "gw-test", "dev-token")
    assert (b1.frames, b1.commands, b1.denied, b1.sealed, b1.started) == (4, 2, 1, True, base + 7200)
    assert Path(b1.path).is_file() and verify(Path(b1.path), KEYS, known_seal=b1.seal).ok
    c1 = index.get("c1")
    assert (c1.sealed, c1.ended, c1.seal, c1.frames) == (False, None, None, 3)
    assert index.get("nope") is None
    with pytest.raises(sqlite3.OperationalError):  # read-only means read-only
        index._db.execute("DELETE FROM sessions")
    rec.stop()
    assert Index(tmp_path / "state", readonly=True).get("c1").end_reason == STOPPED_REASON


def test_the_index_schema_is_versioned(tmp_path):
    with pytest.raises(WiregateError, match="no session index"):
        Index(tmp_path, readonly=True)
    Index(tmp_path).close()
    db = sqlite3.connect(tmp_path / "wiregate.db")
    assert db.execute("SELECT value FROM meta WHERE key = 'recorder.sessions'").fetchone() == (str(SCHEMA_VERSION),)
    assert (tmp_path / "wiregate.db").stat().st_mode & 0o777 == 0o600
    db.execute("UPDATE meta SET value = '99' WHERE key = 'recorder.sessions'")
    db.commit()
    db.close()
    with pytest.raises(WiregateError, match="newer than this wiregate"):
        Index(tmp_path)


def test_a_day_directory_removed_under_the_writer_is_made_again(make, tmp_path):
    rec = make(batch_ms=1)
    first = rec.open(start("day-1"))
    first.end(end())
    wait_for(lambda: rec.events_written == 3)
    [path] = files(tmp_path / "state")
    path.unlink()
    path.parent.rmdir()  # e.g. a retention job clearing the recordings
    second = rec.open(start("day-2"))
    second.end(end())
    rec.stop()
    assert rec.failure is None and [p.name for p in files(tmp_path / "state")] == ["day-2.wgrec"]

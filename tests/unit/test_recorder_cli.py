"""`wiregate sessions ...` and `wiregate replay`: every command on real recordings.

The recordings are written by the real recorder (recorder.writer.Recorder, real Ed25519 key, real
SQLite index) into a tmp state dir; a crashed session is written with the real SessionFile and left
unsealed with a torn tail. Tampering is done on the file's bytes. Commands run through
``gateway.cli.main``, so errors are checked as the operator sees them (one line, exit status)."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.cli
from gateway.config import RecordingSection
from gateway.errors import WiregateError
from gateway.keys import ed25519_key_id, load_or_create_ed25519
from recorder import cli as rcli
from recorder.events import (
    ApprovalDecided,
    ApprovalRequested,
    Command,
    EventsLost,
    HttpExchange,
    Result,
    SessionEnd,
    SessionStart,
    TermInput,
    TermOutput,
    TermResize,
)
from recorder.format import FRAME_HEAD, SessionFile, encode_header, recording_path
from recorder.index import Index, SessionRow
from recorder.replay import transcript, visible
from recorder.writer import Recorder

T0 = time.time() - 3 * 3600  # the first session started three hours ago
SQL_ID = "0192aaaa1000000000000000000000a1"
SSH_ID = "0192aaaa2000000000000000000000b2"
HTTP_ID = "0192bbbb0000000000000000000000c3"
CRASH_ID = "0192cccc0000000000000000000000d4"


def _start(sid: str, t: float, *, identity: str, target: str, protocol: str, groups=("dev",)) -> SessionStart:
    return SessionStart(session_id=sid, time=t, identity=identity, groups=tuple(groups), target=target,
                        protocol=protocol, client="10.0.0.7:51234", tls=protocol != "ssh", instance="gw-1:4242",
                        auth="dev-token" if protocol != "ssh" else "ssh-key")


SQL_EVENTS = [
    Command(time=T0 + 1.0, kind="sql", text="SELECT name, email FROM customers", decision="allow", rule=None,
            kinds=("SELECT",)),
    Result(time=T0 + 1.25, tag="SELECT 3", rows=3, bytes=120, duration_ms=2.5),
    Command(time=T0 + 2.0, kind="sql", text="DROP TABLE customers;", decision="deny", rule="no-destructive-sql",
            kinds=("DROP",),
            message='wiregate: blocked by rule "no-destructive-sql": DROP statements are not allowed on target '
                    '"prod-db"'),
    Command(time=T0 + 3.0, kind="sql", text="SELECT 1/0\nFROM items", decision="allow", rule=None,
            kinds=("SELECT",)),
    Result(time=T0 + 3.5, tag="", rows=0, bytes=0, duration_ms=0.75, error="22012 division by zero"),
    Command(time=T0 + 4.0, kind="sql", text="ALTER TABLE items ADD note text", decision="review",
            rule="review-ddl", kinds=("ALTER",)),
    ApprovalRequested(time=T0 + 4.0, request_id="apr-7", rule="review-ddl", approvers=("dba",),
                      text="ALTER TABLE items ADD note text"),
    ApprovalDecided(time=T0 + 5.0, request_id="apr-7", decision="denied", by="carol", reason="not today"),
    EventsLost(time=T0 + 5.5, count=2, reason="the recorder's queue was full"),
]
SQL_END = SessionEnd(time=T0 + 6.0, reason="client closed the connection", commands=4, bytes_in=300,
                     bytes_out=4500)

SSH_EVENTS = [
    TermResize(time=T0 + 60.0, cols=120, rows=40),
    TermOutput(time=T0 + 60.5, data=b"deploy@web-1:~$ "),
    TermInput(time=T0 + 61.0, data=b"ls\r"),
    # "é" (c3 a9) split across two chunks, as a terminal stream may split it
    TermOutput(time=T0 + 61.25, data=b"ls\r\ncaf\xc3"),
    TermOutput(time=T0 + 61.5, data=b"\xa9.txt\r\n\x1b[1mdeploy@web-1:~$ \x1b[0m"),
    TermResize(time=T0 + 62.0, cols=100, rows=30),
    TermOutput(time=T0 + 63.0, data=b"logout\r\n"),
]
SSH_END = SessionEnd(time=T0 + 64.0, reason="client closed the connection", commands=0, bytes_in=3, bytes_out=80)

HTTP_EVENTS = [
    Command(time=T0 + 7200.0, kind="tool", text='delete_user {"id": 7}', decision="deny", rule="no-delete-tools",
            message='wiregate: blocked by rule "no-delete-tools": tool delete_user is not allowed'),
    HttpExchange(time=T0 + 7200.25, method="POST", path="/tools/mcp", status=200, bytes_in=150, bytes_out=2300,
                 duration_ms=12.5),
]
HTTP_END = SessionEnd(time=T0 + 7201.0, reason="client closed the connection", commands=1, bytes_in=150,
                      bytes_out=2300)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with three sealed sessions (postgres, ssh, http), written by the real recorder."""
    state = tmp_path_factory.mktemp("state")
    key = load_or_create_ed25519(state / rcli.RECORDING_KEY)
    recorder = Recorder(state, RecordingSection(fsync="never", batch_ms=1), key, instance="gw-1:4242")
    recorder.start()
    try:
        for start, events, end in (
            (_start(SQL_ID, T0, identity="alice", target="prod-db", protocol="postgres"), SQL_EVENTS, SQL_END),
            (_start(SSH_ID, T0 + 60, identity="bob", target="web-1", protocol="ssh", groups=("sre",)),
             SSH_EVENTS, SSH_END),
            (_start(HTTP_ID, T0 + 7200, identity="agent-7", target="tools", protocol="http", groups=("agents",)),
             HTTP_EVENTS, HTTP_END),
        ):
            session = recorder.open(start)
            for event in events:
                assert session.record(event)
            assert session.end(end)
    finally:
        recorder.stop()
    assert recorder.healthy is False and recorder.failure is None
    return state


@pytest.fixture
def state(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded state dir (tests tamper with it)."""
    import shutil

    copy = tmp_path / "state"
    shutil.copytree(recorded, copy)
    return copy


def _file(state: Path, sid: str) -> Path:
    (path,) = (state / "recordings").glob(f"*/{sid}.wgrec")
    return path


def _frames(path: Path, sid: str) -> tuple[bytes, list[bytes]]:
    """(header, [each frame with its 4-byte head]) of a recording file."""
    data = path.read_bytes()
    pos = len(encode_header(sid))
    header, frames = data[:pos], []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        frames.append(data[pos:pos + FRAME_HEAD + length])
        pos += FRAME_HEAD + length
    return header, frames


@pytest.fixture
def wiregate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``wiregate ARGS`` through gateway.cli.main: (exit status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = gateway.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wiregate: "), err
    assert "Traceback" not in err
    return lines[0]


# ---- sessions list ---------------------------------------------------------------------------

def test_list_table_newest_first(wiregate, state: Path):
    code, out, err = wiregate("sessions", "list", "--state-dir", str(state))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "DURATION", "IDENTITY", "TARGET", "PROTOCOL", "CLIENT",
                                "COMMANDS", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == [HTTP_ID, SSH_ID, SQL_ID]
    sql = lines[3]
    assert "alice" in sql and "prod-db" in sql and "postgres" in sql and "10.0.0.7:51234" in sql
    assert "4 (1 denied)" in sql and sql.endswith("sealed") and "6.0s" in sql
    assert datetime.fromtimestamp(T0).strftime("%Y-%m-%d %H:%M:%S") in sql


def test_list_json_and_filters(wiregate, state: Path):
    code, out, _ = wiregate("sessions", "list", "--state-dir", str(state), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [HTTP_ID, SSH_ID, SQL_ID]
    sql = rows[2]
    assert sql["identity"] == "alice" and sql["groups"] == ["dev"] and sql["target"] == "prod-db"
    assert sql["protocol"] == "postgres" and sql["commands"] == 4 and sql["denied"] == 1
    assert sql["sealed"] is True and sql["started"] == pytest.approx(T0) and sql["duration_s"] == 6.0
    assert sql["seal_key_id"] == ed25519_key_id(
        load_or_create_ed25519(state / rcli.RECORDING_KEY).public_key())
    assert Path(sql["path"]) == _file(state, SQL_ID)

    def ids(*flags: str) -> list[str]:
        code, out, _ = wiregate("sessions", "list", "--state-dir", str(state), "--json", *flags)
        assert code == 0
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert ids("--identity", "bob") == [SSH_ID]
    assert ids("--target", "prod-db") == [SQL_ID]
    assert ids("--protocol", "http") == [HTTP_ID]
    assert ids("--identity", "alice", "--target", "web-1") == []
    assert ids("--since", "2h") == [HTTP_ID]  # the http session started 1 h ago, the others 3 h ago
    assert ids("--since", "4h") == [HTTP_ID, SSH_ID, SQL_ID]
    local = datetime.fromtimestamp(T0 + 30).strftime("%Y-%m-%dT%H:%M:%S")  # a local time, as typed
    assert ids("--since", local) == [HTTP_ID, SSH_ID]


def test_list_bad_since_is_one_line(wiregate, state: Path):
    code, out, err = wiregate("sessions", "list", "--state-dir", str(state), "--since", "yesterday")
    assert code == 1 and out == ""
    assert "--since" in _one_error_line(err)


def test_list_without_index_reads_the_files(wiregate, state: Path):
    (state / "wiregate.db").unlink()
    code, out, err = wiregate("sessions", "list", "--state-dir", str(state), "--json", "--protocol", "postgres")
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["id"] == SQL_ID and row["commands"] == 4 and row["denied"] == 1 and row["sealed"] is True


def test_a_damaged_index_falls_back_to_the_files(wiregate, state: Path):
    (state / "wiregate.db").write_bytes(b"this is not an SQLite database" * 100)
    for suffix in ("-wal", "-shm"):
        (state / f"wiregate.db{suffix}").unlink(missing_ok=True)
    code, out, err = wiregate("sessions", "list", "--state-dir", str(state), "--json")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == [HTTP_ID, SSH_ID, SQL_ID]
    assert "reading the recording files instead" in err
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all")
    assert code == 0 and out.splitlines()[-1] == "3 sessions: 3 ok, 0 with warnings, 0 failed"


def test_list_verify_marks_tampered_sessions(wiregate, state: Path):
    path = _file(state, SSH_ID)
    data = bytearray(path.read_bytes())
    data[data.index(b"logout")] ^= 0x20
    path.write_bytes(bytes(data))
    code, out, _ = wiregate("sessions", "list", "--state-dir", str(state), "--verify")
    assert code == 0
    marks = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert marks == {HTTP_ID: "OK", SSH_ID: "FAIL", SQL_ID: "OK"}


# ---- sessions show ---------------------------------------------------------------------------

def test_show_by_prefix(wiregate, state: Path):
    code, out, err = wiregate("sessions", "show", "--state-dir", str(state), "0192aaaa1")
    assert code == 0, err
    fields = {line[:10].strip(): line[11:] for line in out.splitlines() if line[:10].strip()}
    assert fields["session"] == SQL_ID
    assert fields["identity"] == "alice [dev] (auth dev-token)"
    assert fields["target"] == "prod-db (postgres)"
    assert fields["client"] == "10.0.0.7:51234, TLS"
    assert fields["gateway"] == "gw-1:4242"
    assert "after 6.0s (client closed the connection)" in fields["ended"]
    assert fields["traffic"] == "300 B in, 4.5 kB out"
    assert str(_file(state, SQL_ID)) in fields["file"] and "11 frames" in fields["file"]
    assert fields["seal"].startswith("sealed with key ")
    assert fields["verify"] == "OK"
    assert fields["commands"] == "4: 2 allowed, 1 denied, 1 held for review"
    assert '1 denied by rule "no-destructive-sql"' in out and '1 held for review by rule "review-ddl"' in out
    assert fields["results"] == "2 (1 errors), 3 rows, 120 B"
    assert fields["approvals"] == "1 requested, 1 denied"
    assert fields["lost"].startswith("2 events could not be recorded")
    assert "not allowed (2):" in out
    assert 'deny    rule "no-destructive-sql": DROP TABLE customers;' in out


def test_show_unknown_and_ambiguous_ids(wiregate, state: Path):
    code, out, err = wiregate("sessions", "show", "--state-dir", str(state), "ffff")
    assert code == 1 and out == ""
    assert 'no session "ffff"' in _one_error_line(err)
    code, out, err = wiregate("sessions", "show", "--state-dir", str(state), "0192aaaa")
    line = _one_error_line(err)
    assert code == 1 and "ambiguous" in line and SQL_ID in line and SSH_ID in line


def test_show_finds_a_session_missing_from_the_index(wiregate, state: Path):
    (state / "wiregate.db").unlink()
    code, out, _ = wiregate("sessions", "show", "--state-dir", str(state), "0192bbbb")
    assert code == 0 and f"session    {HTTP_ID}" in out and "not in the session index" in out


# ---- sessions verify -------------------------------------------------------------------------

def test_verify_one_and_all_ok(wiregate, state: Path):
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "0192aaaa1000")
    assert code == 0 and out.startswith(f"OK    {SQL_ID}  11 frames, sealed with key ")
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all")
    assert code == 0
    assert out.splitlines()[-1] == "3 sessions: 3 ok, 0 with warnings, 0 failed"


def test_verify_needs_an_id_or_all(wiregate, state: Path):
    with pytest.raises(SystemExit) as e:
        wiregate("sessions", "verify", "--state-dir", str(state))
    assert e.value.code == 2


def test_verify_catches_a_flipped_byte(wiregate, state: Path):
    path = _file(state, SQL_ID)
    data = bytearray(path.read_bytes())
    data[data.index(b"DROP TABLE")] ^= 0x01
    path.write_bytes(bytes(data))
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all")
    assert code == 1
    assert f"FAIL  {SQL_ID}" in out
    assert "error: frame 3 was changed" in out
    assert out.splitlines()[-1] == "3 sessions: 2 ok, 0 with warnings, 1 failed"


def test_verify_catches_a_dropped_frame(wiregate, state: Path):
    path = _file(state, SQL_ID)
    header, frames = _frames(path, SQL_ID)
    path.write_bytes(header + b"".join(frames[:2] + frames[3:]))
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), SQL_ID)
    assert code == 1 and out.startswith(f"FAIL  {SQL_ID}")
    assert "frame 2 is missing" in out


def test_verify_catches_swapped_frames(wiregate, state: Path):
    path = _file(state, SQL_ID)
    header, frames = _frames(path, SQL_ID)
    frames[2], frames[3] = frames[3], frames[2]
    path.write_bytes(header + b"".join(frames))
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), SQL_ID)
    assert code == 1 and "out of order" in out


def test_verify_catches_a_cut_sealed_file(wiregate, state: Path):
    path = _file(state, SSH_ID)
    header, frames = _frames(path, SSH_ID)
    path.write_bytes(header + b"".join(frames[:4]))  # cut on a frame boundary: looks like a crash
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), SSH_ID)
    assert code == 1 and "the index holds a seal" in out


def test_verify_reports_a_deleted_file(wiregate, state: Path):
    _file(state, HTTP_ID).unlink()
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all")
    assert code == 1
    assert f"FAIL  {HTTP_ID}" in out and "the recording file is missing" in out


def test_verify_torn_tail_after_a_crash_is_a_warning(wiregate, state: Path):
    """A session the gateway never ended (kill -9): frames flushed, no seal, a half-written frame."""
    start = _start(CRASH_ID, T0 + 100, identity="dave", target="prod-db", protocol="postgres")
    path = recording_path(state, CRASH_ID, start.time)
    path.parent.mkdir(exist_ok=True)
    f = SessionFile(path, CRASH_ID)
    f.append(start)
    f.append(Command(time=T0 + 101, kind="sql", text="SELECT 1", decision="allow", rule=None))
    f.flush(fsync=False)
    f.close()
    with open(path, "ab") as out:
        out.write(b"\x00\x00\x40" + bytes([0x5A ^ 0x40]) + b"\x93\x02")  # a 64-byte frame cut after 2 bytes
    index = Index(state)
    index.upsert_session(SessionRow(id=CRASH_ID, identity="dave", groups=(), target="prod-db", protocol="postgres",
                                    client="10.0.0.7:51234", tls=True, instance="gw-1:4242", auth="dev-token",
                                    started=start.time, path=str(path), frames=2, commands=1))
    index.close()
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "0192cccc")
    assert code == 0, out
    assert out.startswith(f"WARN  {CRASH_ID}  2 frames, not sealed")
    assert "warning: torn last frame" in out and "not sealed" in out
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all")
    assert code == 0 and out.splitlines()[-1] == "4 sessions: 3 ok, 1 with warnings, 0 failed"
    # the readable part is still shown and replayed
    code, out, err = wiregate("replay", "--state-dir", str(state), "0192cccc", "--speed", "0")
    assert code == 0 and "prod-db=> SELECT 1;" in out and "torn last frame" in err


def test_verify_catches_whole_frames_cut_from_an_unsealed_file(wiregate, state: Path):
    """Without a seal, a cut at a frame boundary looks like a crash; the index's frame count tells."""
    start = _start(CRASH_ID, T0 + 100, identity="dave", target="prod-db", protocol="postgres")
    path = recording_path(state, CRASH_ID, start.time)
    path.parent.mkdir(exist_ok=True)
    f = SessionFile(path, CRASH_ID)
    f.append(start)
    for i in range(3):
        f.append(Command(time=T0 + 101 + i, kind="sql", text=f"SELECT {i}", decision="allow", rule=None))
    f.flush(fsync=False)
    f.close()
    index = Index(state)
    index.upsert_session(SessionRow(id=CRASH_ID, identity="dave", groups=(), target="prod-db", protocol="postgres",
                                    client="10.0.0.7:51234", tls=True, instance="gw-1:4242", auth="dev-token",
                                    started=start.time, path=str(path), frames=4, commands=3))
    index.close()
    header, frames = _frames(path, CRASH_ID)
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), CRASH_ID)
    assert code == 0, out
    path.write_bytes(header + b"".join(frames[:2]))  # the last two commands removed
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), CRASH_ID)
    assert code == 1 and "frames were cut from its end" in out, out


def test_verify_with_the_exported_key_only(wiregate, state: Path, tmp_path: Path):
    code, pem, _ = wiregate("sessions", "pubkey", "--state-dir", str(state))
    assert code == 0
    key_file = tmp_path / "recording.pub.pem"
    key_file.write_text(pem)
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), "--all", "--key", str(key_file))
    assert code == 0 and out.splitlines()[-1].endswith("3 ok, 0 with warnings, 0 failed")
    # a key the seals were not made with: every seal fails, even though the state dir holds the right key
    other = tmp_path / "other.pub.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), SQL_ID, "--key", str(other))
    assert code == 1 and "not a known recording key" in out


def test_verify_rejects_a_resealed_file_signed_by_another_key(wiregate, state: Path):
    """An attacker who rewrites a session and seals it with their own key is caught."""
    path = _file(state, SQL_ID)
    path.unlink()
    forged = SessionFile(path, SQL_ID)
    forged.append(_start(SQL_ID, T0, identity="alice", target="prod-db", protocol="postgres"))
    forged.append(SQL_END)
    forged.seal(Ed25519PrivateKey.generate())
    forged.flush(fsync=False)
    forged.close()
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(state), SQL_ID)
    assert code == 1 and "not a known recording key" in out


# ---- sessions pubkey -------------------------------------------------------------------------

def test_pubkey_is_the_recording_key(wiregate, state: Path):
    code, out, err = wiregate("sessions", "pubkey", "--state-dir", str(state))
    assert code == 0
    public = serialization.load_pem_public_key(out.encode())
    expected = load_or_create_ed25519(state / rcli.RECORDING_KEY).public_key()
    assert ed25519_key_id(public) == ed25519_key_id(expected)
    assert ed25519_key_id(expected) in err
    (state / rcli.RECORDING_KEY).unlink()
    code, _, err = wiregate("sessions", "pubkey", "--state-dir", str(state))
    assert code == 1 and "no recording key" in _one_error_line(err)


# ---- sessions export -------------------------------------------------------------------------

def test_export_jsonl(wiregate, state: Path):
    code, out, _ = wiregate("sessions", "export", "--state-dir", str(state), "0192aaaa10", "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == list(range(len(SQL_EVENTS) + 3))
    assert {r["session_id"] for r in records} == {SQL_ID}
    assert [r["kind"] for r in records] == (["session_start", "command", "result", "command", "command", "result",
                                             "command", "approval_requested", "approval_decided", "events_lost",
                                             "session_end", "seal"])
    drop = records[3]
    assert drop["command_kind"] == "sql" and drop["text"] == "DROP TABLE customers;"
    assert drop["decision"] == "deny" and drop["rule"] == "no-destructive-sql"
    assert records[-1]["frames"] == len(SQL_EVENTS) + 2


def test_export_to_a_private_file(wiregate, state: Path, tmp_path: Path):
    target = tmp_path / "out.jsonl"
    code, out, _ = wiregate("sessions", "export", "--state-dir", str(state), SSH_ID, "--format", "jsonl",
                            "-o", str(target))
    assert code == 0 and out == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    lines = target.read_text().splitlines()
    assert json.loads(lines[3])["kind"] == "term_input"
    code, _, err = wiregate("sessions", "export", "--state-dir", str(state), SSH_ID, "--format", "jsonl",
                            "-o", str(tmp_path / "missing-dir" / "x"))
    assert code == 1 and "cannot write" in _one_error_line(err)


def _asciicast(text: str) -> tuple[dict, list[list]]:
    """Parse and validate an asciicast v2 file: header object, then [time, code, data] events."""
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header.get("timestamp", 0), int)
    events = [json.loads(line) for line in lines[1:]]
    last = 0.0
    for event in events:
        assert isinstance(event, list) and len(event) == 3
        t, code, data = event
        assert isinstance(t, float | int) and t >= last
        assert code in ("o", "i", "r", "m") and isinstance(data, str)
        last = t
    return header, events


def test_export_asciicast_terminal_session(wiregate, state: Path):
    code, out, _ = wiregate("sessions", "export", "--state-dir", str(state), SSH_ID, "--format", "asciicast")
    assert code == 0
    header, events = _asciicast(out)
    assert (header["width"], header["height"]) == (120, 40)  # the first resize
    assert header["timestamp"] == int(T0 + 60) and header["duration"] == pytest.approx(4.0)
    assert events[0] == [0.5, "o", "deploy@web-1:~$ "]
    assert [1.0, "i", "ls\r"] in events
    assert [2.0, "r", "100x30"] in events
    output = "".join(data for _, code, data in events if code == "o")
    assert "café.txt" in output and "\x1b[1m" in output  # the split character and the escapes survive


def test_export_asciicast_sql_session_is_the_transcript(wiregate, state: Path):
    code, out, _ = wiregate("sessions", "export", "--state-dir", str(state), SQL_ID, "--format", "asciicast")
    assert code == 0
    header, events = _asciicast(out)
    assert (header["width"], header["height"]) == (80, 24)
    output = "".join(data for _, _, data in events)
    assert "prod-db=> DROP TABLE customers;\r\n" in output
    assert "\n" not in output.replace("\r\n", "")  # terminal line ends
    assert events[1][0] == pytest.approx(1.0)


def test_export_unknown_id(wiregate, state: Path):
    code, out, err = wiregate("sessions", "export", "--state-dir", str(state), "nope", "--format", "jsonl")
    assert code == 1 and out == "" and 'no session "nope"' in _one_error_line(err)


# ---- replay ----------------------------------------------------------------------------------

def test_replay_sql_transcript_at_once(wiregate, state: Path):
    started = time.monotonic()
    code, out, err = wiregate("replay", "--state-dir", str(state), "0192aaaa1", "--speed", "0")
    assert code == 0, err
    assert time.monotonic() - started < 3  # the session spans 6 s
    body = out.splitlines()
    assert body[0].startswith(f"-- session {SQL_ID}: alice [dev] -> prod-db (postgres) from 10.0.0.7:51234, TLS")
    assert body[1:] == [
        "prod-db=> SELECT name, email FROM customers;",
        "SELECT 3",
        "Time: 2.500 ms",
        "prod-db=> DROP TABLE customers;",
        '-- blocked by rule "no-destructive-sql": DROP statements are not allowed on target "prod-db"',
        "prod-db=> SELECT 1/0",
        "prod-db-> FROM items;",
        "ERROR:  22012: division by zero",
        "Time: 0.750 ms",
        "prod-db=> ALTER TABLE items ADD note text;",
        '-- review required by rule "review-ddl"',
        '-- approval apr-7 requested from dba (rule "review-ddl")',
        "-- approval apr-7 denied by carol: not today",
        "-- 2 events not recorded here: the recorder's queue was full",
        "-- session ended (client closed the connection) after 6.0s: 4 commands, 300 B in, 4.5 kB out",
    ]


def test_replay_ssh_writes_the_terminal_bytes(state: Path):
    out = _Sink()
    assert rcli.replay(state, SSH_ID, speed=0, out=out, sleep=_no_sleep) == 0
    assert bytes(out.data) == b"".join(e.data for e in SSH_EVENTS if isinstance(e, TermOutput))


def test_replay_http(wiregate, state: Path):
    code, out, _ = wiregate("replay", "--state-dir", str(state), HTTP_ID, "--speed", "0")
    assert code == 0
    assert 'tool> delete_user {"id": 7}\n# blocked by rule "no-delete-tools": tool delete_user is not allowed\n' in out
    assert "POST /tools/mcp -> 200  (150 B in, 2.3 kB out, 12.5 ms)\n" in out


def test_replay_timing_is_divided_by_speed(state: Path):
    waits: list[float] = []
    out = _Sink()
    rcli.replay(state, SSH_ID, speed=2, out=out, sleep=waits.append)
    # outputs at +60.5, +61.25, +61.5, +63.0: gaps 0.75, 0.25, 1.5, halved
    assert waits == pytest.approx([0.375, 0.125, 0.75])
    assert out.flushes >= 4  # each chunk is flushed as it is shown
    waits.clear()
    rcli.replay(state, SSH_ID, speed=1, max_idle=0.5, out=_Sink(), sleep=waits.append)
    assert waits == pytest.approx([0.5, 0.25, 0.5])
    waits.clear()
    rcli.replay(state, SSH_ID, speed=0, out=_Sink(), sleep=waits.append)
    assert waits == []


def test_replay_rejects_negative_speed(wiregate, state: Path):
    code, _, err = wiregate("replay", "--state-dir", str(state), SQL_ID, "--speed", "-1")
    assert code == 1 and "--speed" in _one_error_line(err)


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.flushes = 0

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)

    def flush(self) -> None:
        self.flushes += 1


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds}s at --speed 0")


# ---- what a recorded value cannot do to the reader's terminal --------------------------------

def test_transcript_escapes_control_characters():
    start = _start("s1", T0, identity="eve\x1b]0;owned\x07", target="prod-db", protocol="postgres")
    sneaky = Command(time=T0 + 1, kind="sql", text="SELECT 1;\r\n\x1b[1A\x1b[2KSELECT 2", decision="allow",
                     rule=None)
    forged = Result(time=T0 + 2, tag="SELECT 1\nprod-db=> GRANT ALL", rows=1, bytes=1, duration_ms=1.0)
    text = "".join(chunk for _, chunk in transcript([start, sneaky, forged]))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "eve\\x1b]0;owned\\x07" in text
    assert "prod-db=> SELECT 1;\nprod-db-> \\x1b[1A\\x1b[2KSELECT 2;\n" in text
    assert "SELECT 1\\x0aprod-db=> GRANT ALL\n" in text  # one line: no forged prompt
    assert visible("tab\there") == "tab\\x09here" and visible("a\tb\r\nc", newlines=True) == "a\tb\nc"


# ---- finding the state dir -------------------------------------------------------------------

def test_state_dir_from_the_config(wiregate, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    os.symlink(state, conf_dir / "gwstate")
    config = conf_dir / "wiregate.toml"
    config.write_text('[gateway]\nstate_dir = "gwstate"\n')  # relative to the config's folder
    code, out, _ = wiregate("sessions", "list", "-c", str(config), "--json")
    assert code == 0 and len(out.splitlines()) == 3
    monkeypatch.setenv("WIREGATE_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    code, out, _ = wiregate("sessions", "verify", "--all")
    assert code == 0 and "3 ok" in out


def test_state_dir_errors_are_one_line(wiregate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code, _, err = wiregate("sessions", "list", "--state-dir", str(tmp_path / "nowhere"))
    assert code == 1 and "no such state directory" in _one_error_line(err)
    monkeypatch.delenv("WIREGATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = wiregate("sessions", "list")
    assert code == 1 and "give -c FILE or --state-dir DIR" in _one_error_line(err)
    with pytest.raises(SystemExit) as e:  # both at once: argparse usage error
        wiregate("sessions", "list", "-c", "x.toml", "--state-dir", str(tmp_path))
    assert e.value.code == 2


def test_empty_state_dir(wiregate, tmp_path: Path):
    code, out, err = wiregate("sessions", "list", "--state-dir", str(tmp_path))
    assert code == 0 and out == "" and "no sessions" in err
    code, out, _ = wiregate("sessions", "verify", "--state-dir", str(tmp_path), "--all")
    assert code == 0 and out.splitlines()[-1] == "0 sessions: 0 ok, 0 with warnings, 0 failed"


def test_parse_since():
    now = 1_800_000_000.0
    assert rcli.parse_since("2h", now) == now - 7200
    assert rcli.parse_since("1h30m", now) == now - 5400
    assert rcli.parse_since("2026-11-21T10:00:00+00:00", now) == datetime.fromisoformat(
        "2026-11-21T10:00:00+00:00").timestamp()
    assert rcli.parse_since("2026-11-21T10:00Z", now) == datetime.fromisoformat("2026-11-21T10:00+00:00").timestamp()
    with pytest.raises(WiregateError):
        rcli.parse_since("last tuesday", now)

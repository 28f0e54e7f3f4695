"""The recording file format: round trips, and every kind of tampering `verify` must catch.

Real files in tmp dirs, real Ed25519 keys; tampering is done on the bytes, as an attacker would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.keys import ed25519_key_id
from recorder.events import (
    FORMAT_VERSION,
    KIND_NAMES,
    ApprovalDecided,
    ApprovalRequested,
    Command,
    EventsLost,
    HttpExchange,
    Result,
    RpcMessage,
    Seal,
    SessionEnd,
    SessionStart,
    TermInput,
    TermOutput,
    TermResize,
    event_to_json,
)
from recorder.format import (
    FRAME_HEAD,
    MAGIC,
    RecordingError,
    SessionFile,
    encode_header,
    frame_head,
    read_recording,
    seal_message,
    verify,
)

SID = "0191a2b3c4d5e6f708192a3b"
KEY = Ed25519PrivateKey.generate()
KEYS = {ed25519_key_id(KEY.public_key()): KEY.public_key()}


def start(sid: str = SID) -> SessionStart:
    return SessionStart(session_id=sid, time=1_700_000_000.25, identity="alice", groups=("dev", "oncall"),
                        target="prod-db", protocol="postgres", client="10.0.0.7:51234", tls=True,
                        instance="gw-1:4242", auth="dev-token")


def end(commands: int = 1) -> SessionEnd:
    return SessionEnd(time=1_700_000_100.0, reason="client closed the connection", commands=commands,
                      bytes_in=1234, bytes_out=56789)


EVERY_KIND = [
    start(),
    Command(time=1_700_000_001.5, kind="sql", text="SELECT name, email FROM customers WHERE id = '***'",
            decision="allow", rule=None, kinds=("SELECT",)),
    Result(time=1_700_000_001.6, tag="SELECT 1", rows=1, bytes=87, duration_ms=1.25),
    Command(time=1_700_000_002.0, kind="sql", text="DROP TABLE customers", decision="deny", rule="no-drop",
            kinds=("DROP",), message='blocked by rule "no-drop"'),
    Result(time=1_700_000_002.1, tag="", rows=0, bytes=0, duration_ms=0.0, error="42501 blocked"),
    TermInput(time=1_700_000_003.0, data=b"ls -la\r"),
    TermOutput(time=1_700_000_003.1, data=b"total 0\r\n\x1b[0m\xff\x00"),
    TermResize(time=1_700_000_003.2, cols=120, rows=40),
    HttpExchange(time=1_700_000_004.0, method="POST", path="/mcp", status=200, bytes_in=300, bytes_out=4000,
                 duration_ms=12.5),
    ApprovalRequested(time=1_700_000_005.0, request_id="apr-1", rule="review-deletes", approvers=("dba", "sre"),
                      text="DELETE FROM orders WHERE id = '***'"),
    ApprovalDecided(time=1_700_000_006.0, request_id="apr-1", decision="approve", by="bob", reason="ticket 42"),
    EventsLost(time=1_700_000_007.0, count=3, reason="the recorder's queue was full"),
    RpcMessage(time=1_700_000_008.0, direction="in", mcp_session="4f2a", method="tools/call", id="7",
               text='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query"}}'),
    end(commands=2),
]


def write(path: Path, events: list, *, seal: bool = True, key: Ed25519PrivateKey = KEY, sid: str = SID) -> Path:
    f = SessionFile(path, sid)
    for e in events:
        f.append(e)
    if seal:
        f.seal(key)
    f.flush(fsync=False)
    f.close()
    return path


def commands(n: int) -> list:
    return [Command(time=1_700_000_000.0 + i, kind="sql", text=f"SELECT {i}", decision="allow", rule=None)
            for i in range(n)]


def session(n: int = 6) -> list:
    """start, n commands, end: frames 0..n+1, then the seal (frame n+2)."""
    return [start(), *commands(n), end(n)]


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each frame (head included), from the file's own length heads."""
    pos = len(encode_header(SID))
    spans = []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        spans.append((pos, pos + FRAME_HEAD + length))
        pos += FRAME_HEAD + length
    return spans


def joined(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    header = data[:spans[0][0]]
    return header + b"".join(data[a:b] for a, b in spans)


@pytest.fixture
def sealed(tmp_path) -> Path:
    return write(tmp_path / f"{SID}.wgrec", session())


def errors_of(path: Path, **kw) -> list[str]:
    report = verify(path, KEYS, **kw)
    assert report.ok == (not report.errors)
    return report.errors


# ---- round trips ------------------------------------------------------------

def test_every_event_kind_round_trips_and_verifies(tmp_path):
    path = write(tmp_path / "s.wgrec", EVERY_KIND)
    rec = read_recording(path)
    assert rec.version == FORMAT_VERSION and rec.session_id == SID
    assert [e for _, e in rec.events] == EVERY_KIND
    assert [seq for seq, _ in rec.events] == list(range(len(EVERY_KIND)))
    assert rec.sealed and rec.seal.frames == len(EVERY_KIND) and not rec.problems and rec.torn_bytes == 0
    report = verify(path, KEYS)
    assert report.ok and report.sealed and not report.warnings, report
    assert report.frames == len(EVERY_KIND) and report.key_id == ed25519_key_id(KEY.public_key())


def test_every_kind_has_a_json_form_with_its_kind_and_fields():
    assert set(KIND_NAMES) == {type(e) for e in EVERY_KIND} | {Seal}
    for event in EVERY_KIND:
        out = event_to_json(event)
        assert out["kind"] == KIND_NAMES[type(event)]
        fields = {"command_kind" if f == "kind" else f for f in event.__struct_fields__}
        assert set(out) == {"kind", *fields}
        json.dumps(out)  # plain JSON
    assert event_to_json(EVERY_KIND[1])["command_kind"] == "sql"
    assert event_to_json(EVERY_KIND[0])["groups"] == ["dev", "oncall"]
    output = event_to_json(EVERY_KIND[6])["data"]
    import base64

    assert base64.b64decode(output) == b"total 0\r\n\x1b[0m\xff\x00"


def test_frames_are_compact_msgpack_arrays(tmp_path):
    pair = [Command(time=1_700_000_001.5, kind="sql", text="SELECT * FROM customers WHERE id = 42",
                    decision="allow", rule=None, kinds=("SELECT",)),
            Result(time=1_700_000_001.6, tag="SELECT 1", rows=1, bytes=120, duration_ms=0.512)]
    f = SessionFile(tmp_path / "c.wgrec", SID)
    f.append(start())
    bodies = [f.append(e) for e in pair]
    f.close()
    # an array [seq, prev, [tag, fields...]]: no field names anywhere
    assert all(b[0] == 0x93 for b in bodies) and b"decision" not in bodies[0]
    overhead = sum(FRAME_HEAD + len(b) for b in bodies) - sum(len(msgspec.msgpack.encode(e)) for e in pair)
    assert overhead <= 2 * (FRAME_HEAD + 1 + 3 + 34)  # head, array, seq, 32-byte link per frame
    assert sum(FRAME_HEAD + len(b) for b in bodies) < 200


def test_an_event_written_by_a_newer_version_with_more_fields_still_reads(tmp_path):
    class CommandV2(msgspec.Struct, array_like=True, tag_field="k", tag=2, kw_only=True):
        time: float
        kind: str
        text: str
        decision: str
        rule: str | None
        kinds: tuple[str, ...] = ()
        message: str = ""
        risk: int = 7  # a field a later version added at the end

    raw = msgspec.msgpack.encode(CommandV2(time=1.0, kind="sql", text="SELECT 1", decision="allow", rule=None))
    assert msgspec.msgpack.decode(raw, type=Command) == Command(time=1.0, kind="sql", text="SELECT 1",
                                                                decision="allow", rule=None)


def test_an_unknown_event_kind_is_a_warning_and_its_place_in_the_chain_is_checked(tmp_path):
    header = encode_header(SID)
    prev = hashlib.sha256(header).digest()
    out = bytearray(header)
    for seq, payload in enumerate([msgspec.msgpack.encode(start()), msgspec.msgpack.encode([99, 1.5, "new"]),
                                   msgspec.msgpack.encode(commands(1)[0])]):
        body = msgspec.msgpack.encode([seq, prev, msgspec.Raw(payload)])
        out += frame_head(len(body)) + body
        prev = hashlib.sha256(body).digest()
    path = tmp_path / "u.wgrec"
    path.write_bytes(bytes(out))
    report = verify(path, KEYS)
    assert report.ok, report.errors
    assert any("unknown event kind 99" in w for w in report.warnings)
    assert [type(e) for _, e in read_recording(path).events] == [SessionStart, Command]


def test_a_malformed_event_is_refused_before_it_reaches_the_file(tmp_path):
    f = SessionFile(tmp_path / "m.wgrec", SID)
    f.append(start())
    with pytest.raises(ValueError, match="malformed Result"):
        f.append(Result(time=1.0, tag="SELECT 1", rows="many", bytes=1, duration_ms=1.0))  # type: ignore[arg-type]
    assert f.frames == 1
    f.append(end(0))
    f.seal(KEY)
    f.flush(False)
    f.close()
    assert verify(tmp_path / "m.wgrec", KEYS).ok


def test_a_session_file_is_private_and_never_overwritten(tmp_path):
    path = write(tmp_path / "p.wgrec", session())
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        SessionFile(path, SID)


def test_session_ids_that_are_not_safe_file_names_are_refused(tmp_path):
    for bad in ("", "../x", ".hidden", "a/b", "x" * 129, "é"):
        with pytest.raises(ValueError):
            SessionFile(tmp_path / "x.wgrec", bad)


# ---- tampering ----------------------------------------------------------------

def test_a_clean_sealed_file_has_no_errors_and_no_warnings(sealed):
    report = verify(sealed, KEYS)
    assert report.ok and report.sealed and not report.warnings and report.frames == 8


def test_a_flipped_byte_in_a_frame_is_reported_by_frame_number(sealed):
    data = bytearray(sealed.read_bytes())
    a, b = frame_spans(bytes(data))[3]
    text_at = data.index(b"SELECT 2", a, b)
    data[text_at + 7] ^= 0x01  # "SELECT 2" -> "SELECT 3": still a valid event
    sealed.write_bytes(bytes(data))
    errors = errors_of(sealed)
    assert errors == ["frame 3 was changed: frame 4's link to it does not match"]


def test_a_flipped_byte_in_the_header_is_an_error(sealed):
    data = bytearray(sealed.read_bytes())
    data[len(MAGIC) + 4] ^= 0x20  # a character of the session id
    sealed.write_bytes(bytes(data))
    assert any("header" in e for e in errors_of(sealed))


def test_a_header_from_another_session_does_not_fit_the_chain(sealed):
    data = sealed.read_bytes()
    other = encode_header("another-session")
    sealed.write_bytes(other + data[len(encode_header(SID)):])
    errors = errors_of(sealed)
    assert "the header was changed: frame 0's link to it does not match" in errors
    assert "the seal names another session" in errors


def test_a_dropped_frame_is_reported_missing(sealed):
    data = sealed.read_bytes()
    spans = frame_spans(data)
    sealed.write_bytes(joined(data, spans[:4] + spans[5:]))
    errors = errors_of(sealed)
    assert "frame 4 is missing" in errors
    assert any("the seal covers 8 frames, the file holds 7" in e for e in errors)


def test_two_swapped_frames_are_reported_once_as_out_of_order(sealed):
    data = sealed.read_bytes()
    spans = frame_spans(data)
    spans[3], spans[4] = spans[4], spans[3]
    sealed.write_bytes(joined(data, spans))
    errors = errors_of(sealed)
    assert errors == ["frame 3 is out of order: found after frame 4"]


def test_a_renumbered_file_without_a_frame_does_not_verify(tmp_path):
    """Drop a frame and rewrite every later one so numbers and links fit: only the seal catches it."""
    events = session()
    full = write(tmp_path / "full.wgrec", events)
    cut = write(tmp_path / "cut.wgrec", events[:4] + events[5:], seal=False)
    seal_frame = frame_spans(full.read_bytes())[-1]
    cut.write_bytes(cut.read_bytes() + full.read_bytes()[seal_frame[0]:seal_frame[1]])
    errors = errors_of(cut)
    assert any("the seal covers 8 frames, the file holds 7" in e for e in errors)


def test_a_file_cut_in_its_last_frame_after_a_crash_is_only_a_warning(tmp_path):
    path = write(tmp_path / "crash.wgrec", session()[:-1], seal=False)  # the session never ended
    data = path.read_bytes()
    a, b = frame_spans(data)[-1]
    path.write_bytes(data[:a + (b - a) // 2])
    report = verify(path, KEYS)
    assert report.ok, report.errors
    assert any(w.startswith("torn last frame") for w in report.warnings)
    assert any(w.startswith("not sealed") for w in report.warnings)
    assert len(read_recording(path).events) == 6


def test_a_file_cut_inside_its_seal_is_a_warning_alone_and_an_error_with_the_index(tmp_path):
    path = write(tmp_path / "s.wgrec", session())
    known = read_recording(path).seal
    data = path.read_bytes()
    a, b = frame_spans(data)[-1]
    path.write_bytes(data[:b - 10])
    report = verify(path, KEYS)
    assert report.ok and any("while sealing" in w for w in report.warnings), report
    assert any("index holds a seal" in e for e in errors_of(path, known_seal=known))


def test_cutting_the_seal_off_a_sealed_file_is_an_error(sealed):
    data = sealed.read_bytes()
    spans = frame_spans(data)
    sealed.write_bytes(data[:spans[-1][0]])
    assert errors_of(sealed) == ["the session ended but its seal is missing: the file was cut after frame 7"]


def test_cutting_whole_frames_off_a_sealed_file_is_caught_with_the_index_seal(sealed):
    known = read_recording(sealed).seal
    data = sealed.read_bytes()
    spans = frame_spans(data)
    sealed.write_bytes(data[:spans[-3][0]])  # seal, end and the last command gone
    alone = verify(sealed, KEYS)
    assert alone.ok and any(w.startswith("not sealed") for w in alone.warnings)  # looks like a crash ...
    errors = errors_of(sealed, known_seal=known)  # ... until the index's copy of the seal says otherwise
    assert errors == ["not sealed, but the index holds a seal over 8 frames: the file was cut after frame 5"]


def test_a_forged_seal_is_an_error(tmp_path):
    """Change a frame, rebuild the whole chain and seal it again claiming the real key's id."""
    events = session()
    events[2] = Command(time=1.0, kind="sql", text="SELECT 'nothing to see'", decision="allow", rule=None)
    path = write(tmp_path / "forged.wgrec", events, seal=False)
    f_data = path.read_bytes()
    rec_hash = hashlib.sha256(f_data[frame_spans(f_data)[-1][0] + FRAME_HEAD:]).digest()
    forger = Ed25519PrivateKey.generate()
    seal = Seal(session_id=SID, frames=len(events), last_hash=rec_hash, key_id=ed25519_key_id(KEY.public_key()),
                signature=forger.sign(seal_message(SID, len(events), rec_hash)))
    body = msgspec.msgpack.encode([len(events), rec_hash, seal])
    path.write_bytes(f_data + frame_head(len(body)) + body)
    errors = errors_of(path)
    assert errors == ["the seal's signature is not valid (the seal was forged or changed)"]


def test_a_seal_by_an_unknown_key_is_an_error(tmp_path):
    path = write(tmp_path / "k.wgrec", session(), key=Ed25519PrivateKey.generate())
    assert any("not a known recording key" in e for e in errors_of(path))


def test_a_frame_appended_after_the_seal_is_an_error(sealed):
    data = sealed.read_bytes()
    last = frame_spans(data)[-1]
    prev = hashlib.sha256(data[last[0] + FRAME_HEAD:last[1]]).digest()
    body = msgspec.msgpack.encode([9, prev, commands(1)[0]])
    sealed.write_bytes(data + frame_head(len(body)) + body)
    errors = errors_of(sealed)
    assert "1 frames were appended after the seal" in errors
    assert any("after the session's end" in e for e in errors)


def test_a_partial_frame_appended_after_the_seal_is_an_error(sealed):
    sealed.write_bytes(sealed.read_bytes() + frame_head(100) + b"\x93\x09")
    assert any("appended to a sealed file" in e for e in errors_of(sealed))


def test_a_damaged_length_in_the_middle_is_an_error(sealed):
    data = bytearray(sealed.read_bytes())
    a, _ = frame_spans(bytes(data))[2]
    data[a + 2] ^= 0x40
    sealed.write_bytes(bytes(data))
    errors = errors_of(sealed)
    assert any("damaged length" in e for e in errors)


def test_zeros_a_crash_left_at_the_end_are_a_warning(tmp_path):
    path = write(tmp_path / "z.wgrec", session()[:-1], seal=False)
    path.write_bytes(path.read_bytes() + bytes(4096))
    report = verify(path, KEYS)
    assert report.ok and any("zero bytes" in w for w in report.warnings)


def test_empty_torn_foreign_and_missing_files(tmp_path):
    empty = tmp_path / "empty.wgrec"
    empty.write_bytes(b"")
    assert verify(empty, KEYS).ok and verify(empty, KEYS).warnings
    torn = tmp_path / "torn.wgrec"
    torn.write_bytes(encode_header(SID)[:9])
    assert verify(torn, KEYS).ok and "torn header" in verify(torn, KEYS).warnings[0]
    foreign = tmp_path / "foreign.wgrec"
    foreign.write_bytes(b"PK\x03\x04 not a recording at all")
    assert errors_of(foreign) == ["not a wiregate recording (bad magic)"]
    with pytest.raises(RecordingError):
        read_recording(foreign)
    future = tmp_path / "future.wgrec"
    header = bytearray(encode_header(SID))
    header[len(MAGIC)] = FORMAT_VERSION + 1
    future.write_bytes(bytes(header))
    assert "recording format version" in errors_of(future)[0]
    assert errors_of(tmp_path / "gone.wgrec")[0].startswith("cannot read the file")


# ---- properties -----------------------------------------------------------------

_text = st.text(max_size=40)
_time = st.floats(min_value=0, max_value=4e9, allow_nan=False)
_names = st.tuples(*[st.text(min_size=1, max_size=8)] * 2)
_event = st.one_of(
    st.builds(Command, time=_time, kind=st.sampled_from(["sql", "exec", "tool"]), text=_text,
              decision=st.sampled_from(["allow", "deny", "review"]), rule=st.none() | _text,
              kinds=st.lists(st.text(max_size=8), max_size=3).map(tuple), message=_text),
    st.builds(Result, time=_time, tag=_text, rows=st.integers(0, 2**40), bytes=st.integers(0, 2**40),
              duration_ms=_time, error=st.none() | _text),
    st.builds(TermInput, time=_time, data=st.binary(max_size=64)),
    st.builds(TermOutput, time=_time, data=st.binary(max_size=64)),
    st.builds(TermResize, time=_time, cols=st.integers(0, 1000), rows=st.integers(0, 1000)),
    st.builds(HttpExchange, time=_time, method=st.sampled_from(["GET", "POST"]), path=_text,
              status=st.integers(100, 599), bytes_in=st.integers(0, 2**31), bytes_out=st.integers(0, 2**31),
              duration_ms=_time),
    st.builds(ApprovalRequested, time=_time, request_id=_text, rule=_text, approvers=_names, text=_text),
    st.builds(ApprovalDecided, time=_time, request_id=_text, decision=st.sampled_from(["approve", "deny"]),
              by=_text, reason=_text),
    st.builds(EventsLost, time=_time, count=st.integers(1, 10**6), reason=_text),
)
_session_id = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sid=_session_id, middle=st.lists(_event, max_size=30), sealed=st.booleans())
def test_property_what_is_written_is_what_is_read(tmp_path_factory, sid, middle, sealed):
    events = [start(sid), *middle] + ([end(len(middle))] if sealed else [])
    path = write(tmp_path_factory.mktemp("p") / f"{sid}.wgrec", events, seal=sealed, sid=sid)
    rec = read_recording(path)
    assert [e for _, e in rec.events] == events and rec.sealed == sealed and not rec.problems
    report = verify(path, KEYS)
    assert report.ok, report.errors
    assert bool(report.warnings) != sealed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(middle=st.lists(_event, min_size=0, max_size=8), where=st.floats(0, 1, exclude_max=True),
       mask=st.integers(1, 255))
def test_property_any_single_changed_byte_of_a_sealed_file_is_an_error(tmp_path_factory, middle, where, mask):
    path = write(tmp_path_factory.mktemp("f") / "s.wgrec", [start(), *middle, end(len(middle))])
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= mask
    path.write_bytes(bytes(data))
    report = verify(path, KEYS)
    assert not report.ok, f"a changed byte at {int(where * len(data))} of {len(data)} passed: {report}"


def test_every_single_byte_of_a_sealed_file_is_covered(tmp_path):
    """Exhaustive for one small session: each position flipped (two masks) is an error."""
    path = write(tmp_path / "x.wgrec", [start(), *EVERY_KIND[1:4], end(2)])
    original = path.read_bytes()
    passed = []
    for i in range(len(original)):
        for mask in (0x01, 0x80):
            data = bytearray(original)
            data[i] ^= mask
            path.write_bytes(bytes(data))
            if verify(path, KEYS).ok:
                passed.append((i, mask))
    assert not passed

"""Sans-IO tests of the PostgreSQL codec and relay state machines (no sockets)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.postgres import codec
from protocols.postgres.codec import ProtocolViolation
from protocols.postgres.relay import MAX_STATEMENT_BYTES, BackendStream, FrontendStream, Refusals
from protocols.postgres.upstream_auth import SaltedPasswordCache, UpstreamAuth, UpstreamAuthError


def frames(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        length = codec.U32.unpack_from(data, pos + 1)[0]
        out.append((data[pos:pos + 1], data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    assert pos == len(data)
    return out


def feed_chunks(stream, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return b"".join(stream.feed(data[a:b]) for a, b in zip(points, points[1:]) if b > a)


def bind(portal=b"", stmt=b"", params=(b"1",)) -> bytes:
    body = portal + b"\0" + stmt + b"\0" + codec.I16.pack(0) + codec.I16.pack(len(params))
    body += b"".join(codec.I32.pack(len(p)) + p for p in params) + codec.I16.pack(0)
    return codec.message(b"B", body)


EXECUTE = codec.message(b"E", b"\0" + codec.I32.pack(0))
DESCRIBE = codec.message(b"D", b"P\0")


def deny_drop(t: int, body: bytes) -> bytes | None:
    if b"DROP" in body:
        return codec.error_response("42501", 'wiregate: blocked by rule "no-drop"')
    return None


# ------------------------------------------------------------------ codec


def test_startup_roundtrip():
    pkt = codec.startup_message({"user": "alice", "database": "prod", "application_name": "psql"})
    length = codec.startup_length(pkt)
    assert length == len(pkt)
    parsed = codec.parse_startup(pkt)
    assert parsed.kind == "startup" and parsed.version == codec.PROTOCOL_3_0
    assert parsed.params == {"user": "alice", "database": "prod", "application_name": "psql"}


def test_special_startup_packets():
    assert codec.parse_startup(codec.ssl_request()).kind == "ssl"
    assert codec.parse_startup(codec.I32.pack(8) + codec.I32.pack(codec.GSSENC_REQUEST_CODE)).kind == "gssenc"
    c = codec.parse_startup(codec.cancel_request(1234, b"abcd"))
    assert (c.kind, c.cancel_pid, c.cancel_key) == ("cancel", 1234, b"abcd")


@pytest.mark.parametrize("length", [0, 3, 7, 10001, 0x7FFFFFFF, -1])
def test_absurd_startup_lengths_are_violations(length):
    with pytest.raises(ProtocolViolation):
        codec.startup_length(codec.I32.pack(length) + b"\0" * 4)


def test_unterminated_startup_is_violation():
    body = codec.I32.pack(codec.PROTOCOL_3_0) + b"user\0alice"
    with pytest.raises(ProtocolViolation):
        codec.parse_startup(codec.I32.pack(len(body) + 4) + body)


def test_http_is_recognised():
    assert codec.looks_like_http(b"GET / HTTP/1.1\r\n")
    assert not codec.looks_like_http(codec.ssl_request())


def test_error_fields_roundtrip():
    msg = codec.error_response("42501", "nope", detail="d", hint="h", position=7)
    (t, body), = frames(msg)
    assert t == b"E"
    assert codec.parse_fields(body) == {"S": "ERROR", "V": "ERROR", "C": "42501", "M": "nope", "D": "d", "H": "h", "P": "7"}


@given(st.binary(max_size=200))
def test_parse_startup_never_crashes_otherwise(data):
    pkt = codec.I32.pack(len(data) + 8) + codec.I32.pack(codec.PROTOCOL_3_0) + data
    try:
        codec.parse_startup(pkt)
    except ProtocolViolation:
        pass


# ------------------------------------------------------------------ frontend relay

message_st = st.one_of(
    st.binary(max_size=40).map(lambda b: codec.query(b.hex())),
    st.binary(max_size=3000).map(lambda b: codec.message(b"d", b)),
    st.just(codec.SYNC),
    st.just(EXECUTE),
    st.just(DESCRIBE),
    st.binary(max_size=60).map(lambda b: codec.parse(b"s1", b.hex().encode())),
    st.binary(max_size=600).map(lambda b: bind(params=(b,))),
)


@settings(max_examples=200)
@given(st.lists(message_st, min_size=1, max_size=30), st.lists(st.integers(0, 10**6), max_size=12))
def test_frontend_passes_allowed_stream_unchanged_whatever_the_chunking(msgs, cuts):
    data = b"".join(msgs)
    seen: list[bytes] = []

    def check(t, body):
        seen.append(body)
        return None

    stream = FrontendStream(check, Refusals())
    assert feed_chunks(stream, data, cuts) == data
    assert len(seen) == sum(1 for m in msgs if m[:1] in (b"Q", b"P"))


@settings(max_examples=200)
@given(st.lists(st.integers(0, 10**6), max_size=12))
def test_frontend_substitutes_refused_query_and_skips_to_sync(cuts):
    refusals = Refusals()
    data = (codec.query("SELECT 1") + codec.query("DROP TABLE t") + codec.parse(b"s", b"DROP TABLE t")
            + bind(stmt=b"s") + EXECUTE + codec.message(b"d", b"x" * 100) + codec.SYNC + codec.query("SELECT 2"))
    out = feed_chunks(FrontendStream(deny_drop, refusals), data, cuts)
    got = frames(out)
    assert [t for t, _ in got] == [b"Q", b"Q", b"P", b"S", b"Q"]
    assert got[0][1] == b"SELECT 1\0" and got[4][1] == b"SELECT 2\0"
    assert got[1][1].startswith(refusals.prefix) and b"DROP" not in out
    name, sql = codec.parse_parse(got[2][1])
    assert name == b"s" and sql.startswith(refusals.prefix)
    assert len(refusals.pending) == 2


def test_frontend_rejects_bad_lengths():
    with pytest.raises(ProtocolViolation):
        FrontendStream(deny_drop, Refusals()).feed(b"Q" + codec.I32.pack(2))
    with pytest.raises(ProtocolViolation):
        FrontendStream(deny_drop, Refusals()).feed(b"Q" + codec.U32.pack(MAX_STATEMENT_BYTES + 5))


def test_frontend_streams_large_copy_data_without_holding_it():
    stream = FrontendStream(deny_drop, Refusals())
    head = b"d" + codec.I32.pack(4 + 1_000_000)
    assert stream.feed(head + b"a" * 1000) == head + b"a" * 1000
    assert stream.feed(b"b" * 999_000) == b"b" * 999_000
    assert stream.feed(codec.SYNC) == codec.SYNC


# ------------------------------------------------------------------ backend relay


def server_error(text: str) -> bytes:
    return codec.error_response("42601", text)


@settings(max_examples=200)
@given(st.lists(st.integers(0, 10**6), max_size=12))
def test_backend_swaps_marked_error_whatever_the_chunking(cuts):
    refusals = Refusals()
    ours = codec.error_response("42501", 'wiregate: blocked by rule "r"')
    marker = refusals.register(ours)
    rows = b"".join(codec.message(b"D", codec.I16.pack(1) + codec.I32.pack(300) + b"v" * 300) for _ in range(20))
    data = (rows + codec.message(b"C", b"SELECT 20\0") + codec.ready_for_query(b"T")
            + server_error(f'syntax error at or near "{marker.decode()}"') + codec.ready_for_query(b"E")
            + codec.parameter_status("client_encoding", "LATIN1"))
    stream = BackendStream(refusals)
    out = feed_chunks(stream, data, cuts)
    assert out == data.replace(server_error(f'syntax error at or near "{marker.decode()}"'), ours)
    assert stream.status == b"E" and stream.parameters["client_encoding"] == "LATIN1"
    assert not refusals.pending


def test_backend_leaves_other_errors_alone():
    refusals = Refusals()
    refusals.register(codec.error_response("42501", "x"))
    err = server_error('relation "t" does not exist')
    assert BackendStream(refusals).feed(err) == err
    assert len(refusals.pending) == 1


def test_refusals_are_bounded():
    refusals = Refusals()
    for _ in range(1000):
        refusals.register(b"e")
    assert len(refusals.pending) <= 256


# ------------------------------------------------------------------ upstream auth


def test_scram_against_a_reference_server_computation():
    password, salt, iterations = "s3cret", b"saltsaltsalt", 4096
    auth = UpstreamAuth("app", password, SaltedPasswordCache())
    first = auth.step(10, b"SCRAM-SHA-256\0\0")
    client_first_bare = first[first.index(b"n=,r="):].decode()
    client_nonce = client_first_bare.split("r=", 1)[1]
    server_first = f"r={client_nonce}SERVER,s={base64.b64encode(salt).decode()},i={iterations}"
    final = auth.step(11, server_first.encode())[5:].decode()
    without_proof, proof = final.rsplit(",p=", 1)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    sig = hmac.new(stored, auth_message, "sha256").digest()
    recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), sig))
    assert hashlib.sha256(recovered).digest() == stored
    server_sig = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth_message, "sha256").digest()
    assert auth.step(12, b"v=" + base64.b64encode(server_sig)) is None
    assert auth.step(0, b"") is None


def test_scram_refuses_a_server_that_cannot_prove_the_password():
    auth = UpstreamAuth("app", "pw", SaltedPasswordCache())
    first = auth.step(10, b"SCRAM-SHA-256\0\0")
    nonce = first.split(b"r=", 1)[1].decode()
    auth.step(11, f"r={nonce}X,s={base64.b64encode(b'salt').decode()},i=4096".encode())
    with pytest.raises(UpstreamAuthError):
        auth.step(12, b"v=" + base64.b64encode(b"\0" * 32))
    # AuthenticationOk before the server proved itself
    auth = UpstreamAuth("app", "pw", SaltedPasswordCache())
    auth.step(10, b"SCRAM-SHA-256\0\0")
    with pytest.raises(UpstreamAuthError):
        auth.step(0, b"")


def test_md5_and_cleartext():
    auth = UpstreamAuth("app", "pw", SaltedPasswordCache())
    msg = auth.step(5, b"abcd")
    inner = hashlib.md5(b"pwapp").hexdigest().encode()
    assert msg == codec.password_message(b"md5" + hashlib.md5(inner + b"abcd").hexdigest().encode())
    assert UpstreamAuth("app", "pw", SaltedPasswordCache()).step(3, b"") == codec.password_message(b"pw")
    with pytest.raises(UpstreamAuthError):
        UpstreamAuth("app", None, SaltedPasswordCache()).step(3, b"")
    with pytest.raises(UpstreamAuthError):
        UpstreamAuth("app", "pw", SaltedPasswordCache()).step(7, b"")  # GSS


def test_loopback_detection_for_cleartext_tokens():
    from protocols.postgres.session import _is_loopback

    assert _is_loopback(("127.0.0.1", 5000)) and _is_loopback(("127.8.9.1", 1)) and _is_loopback(("::1", 1, 0, 0))
    assert _is_loopback("/tmp/.s.PGSQL.5432") and _is_loopback(None)  # unix sockets
    assert not _is_loopback(("10.0.0.5", 5000)) and not _is_loopback(("2001:db8::1", 1, 0, 0))
    assert not _is_loopback(("::ffff:10.0.0.5", 1, 0, 0)) and not _is_loopback(("not-an-ip", 1))

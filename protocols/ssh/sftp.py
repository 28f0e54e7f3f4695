"""Sans-IO inspection of an SFTP subsystem channel (protocol version 3, as OpenSSH speaks it).

The gateway relays an SFTP channel byte for byte, but must see each file operation on its own
so the policy can refuse it (a write under a path, a remove, ...) and the recorder can log it
with its path and byte counts. This module holds:

* ``PacketFramer``: cuts a byte stream into uint32-length-prefixed SFTP packets.
* ``SftpInspector``: per channel state machine. ``client_packet`` parses a request into a
  ``ClientRequest`` carrying the ``FileOp`` the policy checks; ``server_packet`` follows the
  replies and yields a ``Transfer`` for each finished operation worth recording; ``refuse`` /
  ``unsupported`` build the STATUS reply sent instead of forwarding a request.
* Encoders for every packet the inspector reads, shared by the glue and the tests.

Wire format: draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions (its PROTOCOL file).
Deliberate choices, each one fail-closed:

* Anything that does not parse raises ``SftpError``; the channel must then be closed, never
  relayed unparsed. That includes trailing bytes after a request, unknown attribute flags,
  NUL bytes in paths (OpenSSH's server rejects them too), a request before the server's
  VERSION, a server VERSION above 3 (later versions lay OPEN out differently), a reply whose
  id is not pending or whose type does not answer its request.
* An EXTENDED request whose name is not reviewed here is ``unsupported``: the glue answers it
  with SSH_FX_OP_UNSUPPORTED instead of forwarding something that may write.
* Paths are normalised lexically (``posixpath.normpath``, a leading ``//`` folded to ``/``).
  The server resolves symlinks, the gateway cannot see them: ``/srv/link/../etc`` is checked
  as ``/etc`` even when the server lands elsewhere. A relative path is joined to the session
  directory, learnt from the NAME reply to the first ``REALPATH "."`` (OpenSSH's sftp sends it
  on start) or given as ``cwd=``; until then relative paths stay relative. scp (SFTP mode, the
  default since OpenSSH 9.0) never sends it: ``scp f host:x`` is checked as ``write x``.
* An OPEN with READ only is a "read"; any other flag (WRITE, CREAT, TRUNC, APPEND, EXCL or an
  unknown bit) makes it a "write", so a read-write open is checked as a write.
* SYMLINK's arguments are read in the order OpenSSH's server reads them (target path first,
  then the link path; OpenSSH swapped them against the draft, see its PROTOCOL file). A
  relative target is resolved against the link's directory, where the kernel resolves it.
* Two-path operations read like the sftp command: ``rename OLD NEW``, ``symlink TARGET LINK``,
  ``link TARGET LINK``; ``path2`` is always the name that gets created.
* Handle-based requests (READ, WRITE, CLOSE, FSTAT, READDIR, fsync, fstatvfs) carry the path
  of the OPEN/OPENDIR that was checked and need no check themselves. FSETSTAT is checked as
  ``setstat`` of the handle's path and copy-data as ``write`` of its destination handle's
  path; either on a handle the server never issued raises ``SftpError`` (every real handle
  passed through ``server_packet`` before the client could know it).
* Stat-like requests (STAT, LSTAT, REALPATH, READLINK, statvfs, expand-path, home-directory)
  are checked as "stat" but never yield a ``Transfer``: clients send them by the hundred. A
  directory listing is recorded once, as a "list" Transfer when its handle is closed. Failed OPENs and
  mutations do yield one, with ``ok`` False, so refused-by-the-server attempts are recorded.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Iterable

import msgspec

U32 = struct.Struct("!I")
U64 = struct.Struct("!Q")
_HEAD = struct.Struct("!IBI")  # length, type, request id

# OpenSSH's sftp-server and client cap a packet at 256 KiB (SFTP_MAX_MSG_LENGTH); the extra
# KiB leaves room for headers around a full 256 KiB of data from other implementations.
DEFAULT_MAX_PACKET = 256 * 1024 + 1024
MAX_PENDING = 4096
MAX_HANDLES = 1024

# Packet types (draft-ietf-secsh-filexfer-02 section 3)
FXP_INIT = 1
FXP_VERSION = 2
FXP_OPEN = 3
FXP_CLOSE = 4
FXP_READ = 5
FXP_WRITE = 6
FXP_LSTAT = 7
FXP_FSTAT = 8
FXP_SETSTAT = 9
FXP_FSETSTAT = 10
FXP_OPENDIR = 11
FXP_READDIR = 12
FXP_REMOVE = 13
FXP_MKDIR = 14
FXP_RMDIR = 15
FXP_REALPATH = 16
FXP_STAT = 17
FXP_RENAME = 18
FXP_READLINK = 19
FXP_SYMLINK = 20
FXP_STATUS = 101
FXP_HANDLE = 102
FXP_DATA = 103
FXP_NAME = 104
FXP_ATTRS = 105
FXP_EXTENDED = 200
FXP_EXTENDED_REPLY = 201

TYPE_NAMES: dict[int, str] = {
    FXP_INIT: "INIT", FXP_VERSION: "VERSION", FXP_OPEN: "OPEN", FXP_CLOSE: "CLOSE",
    FXP_READ: "READ", FXP_WRITE: "WRITE", FXP_LSTAT: "LSTAT", FXP_FSTAT: "FSTAT",
    FXP_SETSTAT: "SETSTAT", FXP_FSETSTAT: "FSETSTAT", FXP_OPENDIR: "OPENDIR",
    FXP_READDIR: "READDIR", FXP_REMOVE: "REMOVE", FXP_MKDIR: "MKDIR", FXP_RMDIR: "RMDIR",
    FXP_REALPATH: "REALPATH", FXP_STAT: "STAT", FXP_RENAME: "RENAME", FXP_READLINK: "READLINK",
    FXP_SYMLINK: "SYMLINK", FXP_STATUS: "STATUS", FXP_HANDLE: "HANDLE", FXP_DATA: "DATA",
    FXP_NAME: "NAME", FXP_ATTRS: "ATTRS", FXP_EXTENDED: "EXTENDED",
    FXP_EXTENDED_REPLY: "EXTENDED_REPLY",
}

# Open flags (pflags)
FXF_READ = 0x01
FXF_WRITE = 0x02
FXF_APPEND = 0x04
FXF_CREAT = 0x08
FXF_TRUNC = 0x10
FXF_EXCL = 0x20

# Attribute flags
ATTR_SIZE = 0x01
ATTR_UIDGID = 0x02
ATTR_PERMISSIONS = 0x04
ATTR_ACMODTIME = 0x08
ATTR_EXTENDED = 0x80000000
_ATTR_KNOWN = ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED

# Status codes
FX_OK = 0
FX_EOF = 1
FX_NO_SUCH_FILE = 2
FX_PERMISSION_DENIED = 3
FX_FAILURE = 4
FX_BAD_MESSAGE = 5
FX_NO_CONNECTION = 6
FX_CONNECTION_LOST = 7
FX_OP_UNSUPPORTED = 8

# The EXTENDED requests reviewed here; any other name is answered OP_UNSUPPORTED.
EXT_POSIX_RENAME = "posix-rename@openssh.com"
EXT_STATVFS = "statvfs@openssh.com"
EXT_FSTATVFS = "fstatvfs@openssh.com"
EXT_HARDLINK = "hardlink@openssh.com"
EXT_FSYNC = "fsync@openssh.com"
EXT_LSETSTAT = "lsetstat@openssh.com"
EXT_LIMITS = "limits@openssh.com"
EXT_EXPAND_PATH = "expand-path@openssh.com"
EXT_COPY_DATA = "copy-data"
EXT_HOME_DIRECTORY = "home-directory"
EXT_USERS_GROUPS = "users-groups-by-id@openssh.com"
KNOWN_EXTENSIONS = frozenset({
    EXT_POSIX_RENAME, EXT_STATVFS, EXT_FSTATVFS, EXT_HARDLINK, EXT_FSYNC, EXT_LSETSTAT,
    EXT_LIMITS, EXT_EXPAND_PATH, EXT_COPY_DATA, EXT_HOME_DIRECTORY, EXT_USERS_GROUPS,
})

FILE_OPS = frozenset({"read", "write", "list", "stat", "remove", "rename", "mkdir", "rmdir",
                      "setstat", "symlink", "link"})


class SftpError(Exception):
    """The SFTP stream cannot be inspected (malformed, oversized, out of step); close the channel."""


# ---------------------------------------------------------------- data


class FileOp(msgspec.Struct, frozen=True):
    """One file operation as the policy sees it; ``command`` is the text rules match."""

    op: str  # one of FILE_OPS
    path: str
    path2: str | None = None  # rename / symlink / link: the name that gets created

    @property
    def command(self) -> str:
        if self.path2 is None:
            return f"{self.op} {self.path}"
        return f"{self.op} {self.path} {self.path2}"


class ClientRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed client packet.

    ``op`` is what the policy must check (None: nothing to check, e.g. a READ on a handle whose
    OPEN was checked). ``path`` is the path involved when known, checked or not. ``unsupported``
    marks an EXTENDED request this module has not reviewed: answer it with ``unsupported()``.
    """

    type: str  # packet type name, e.g. "OPEN", "EXTENDED"
    id: int | None  # request id; None for INIT
    op: FileOp | None = None
    path: str | None = None
    unsupported: bool = False
    extension: str | None = None  # the EXTENDED request name
    # an OPEN that may read the file's contents (FXF_READ), whatever else it may do: its op is
    # "write" when it may also write, but the gateway must know it hands out contents
    reads: bool = False


class Transfer(msgspec.Struct, frozen=True):
    """A finished operation to record: a closed handle or a mutation the server answered."""

    op: str
    path: str
    bytes_read: int
    bytes_written: int
    ok: bool
    status_message: str
    path2: str | None = None

    @property
    def command(self) -> str:
        """The operation as the policy saw it (``FileOp.command``)."""
        return f"{self.op} {self.path}" if self.path2 is None else f"{self.op} {self.path} {self.path2}"


class Status(msgspec.Struct, frozen=True):
    """A decoded SSH_FXP_STATUS."""

    id: int
    code: int
    message: str
    language: str


# ---------------------------------------------------------------- encoders


def packet(ptype: int, body: bytes = b"") -> bytes:
    return U32.pack(len(body) + 1) + bytes((ptype,)) + body


def string(value: bytes | str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return U32.pack(len(raw)) + raw


def encode_attrs(*, size: int | None = None, uid_gid: tuple[int, int] | None = None,
                 permissions: int | None = None, times: tuple[int, int] | None = None,
                 extended: Iterable[tuple[bytes | str, bytes | str]] = ()) -> bytes:
    """ATTRS as in draft-02 section 5; no argument gives the empty attributes (flags 0)."""
    flags = 0
    parts: list[bytes] = []
    if size is not None:
        flags |= ATTR_SIZE
        parts.append(U64.pack(size))
    if uid_gid is not None:
        flags |= ATTR_UIDGID
        parts.append(U32.pack(uid_gid[0]) + U32.pack(uid_gid[1]))
    if permissions is not None:
        flags |= ATTR_PERMISSIONS
        parts.append(U32.pack(permissions))
    if times is not None:
        flags |= ATTR_ACMODTIME
        parts.append(U32.pack(times[0]) + U32.pack(times[1]))
    ext = list(extended)
    if ext:
        flags |= ATTR_EXTENDED
        parts.append(U32.pack(len(ext)) + b"".join(string(k) + string(v) for k, v in ext))
    return U32.pack(flags) + b"".join(parts)


EMPTY_ATTRS = encode_attrs()


def _extensions(pairs: Iterable[tuple[bytes | str, bytes | str]]) -> bytes:
    return b"".join(string(k) + string(v) for k, v in pairs)


def init(version: int = 3, extensions: Iterable[tuple[bytes | str, bytes | str]] = ()) -> bytes:
    return packet(FXP_INIT, U32.pack(version) + _extensions(extensions))


def version_reply(version: int = 3,
                  extensions: Iterable[tuple[bytes | str, bytes | str]] = ()) -> bytes:
    return packet(FXP_VERSION, U32.pack(version) + _extensions(extensions))


def open_request(rid: int, path: bytes | str, pflags: int, attrs: bytes = EMPTY_ATTRS) -> bytes:
    return packet(FXP_OPEN, U32.pack(rid) + string(path) + U32.pack(pflags) + attrs)


def handle_request(ptype: int, rid: int, handle: bytes) -> bytes:
    """CLOSE, FSTAT, READDIR."""
    return packet(ptype, U32.pack(rid) + string(handle))


def read_request(rid: int, handle: bytes, offset: int, length: int) -> bytes:
    return packet(FXP_READ, U32.pack(rid) + string(handle) + U64.pack(offset) + U32.pack(length))


def write_request(rid: int, handle: bytes, offset: int, data: bytes) -> bytes:
    return packet(FXP_WRITE, U32.pack(rid) + string(handle) + U64.pack(offset) + string(data))


def fsetstat_request(rid: int, handle: bytes, attrs: bytes = EMPTY_ATTRS) -> bytes:
    return packet(FXP_FSETSTAT, U32.pack(rid) + string(handle) + attrs)


def path_request(ptype: int, rid: int, path: bytes | str) -> bytes:
    """LSTAT, STAT, OPENDIR, REMOVE, RMDIR, REALPATH, READLINK."""
    return packet(ptype, U32.pack(rid) + string(path))


def path_attrs_request(ptype: int, rid: int, path: bytes | str,
                       attrs: bytes = EMPTY_ATTRS) -> bytes:
    """SETSTAT, MKDIR."""
    return packet(ptype, U32.pack(rid) + string(path) + attrs)


def two_path_request(ptype: int, rid: int, first: bytes | str, second: bytes | str) -> bytes:
    """RENAME (old, new); SYMLINK in OpenSSH's order (target, link)."""
    return packet(ptype, U32.pack(rid) + string(first) + string(second))


def extended_request(rid: int, name: bytes | str, body: bytes = b"") -> bytes:
    """EXTENDED; ``body`` is the request-specific data, already encoded."""
    return packet(FXP_EXTENDED, U32.pack(rid) + string(name) + body)


def copy_data_request(rid: int, read_handle: bytes, read_offset: int, length: int,
                      write_handle: bytes, write_offset: int) -> bytes:
    body = (string(read_handle) + U64.pack(read_offset) + U64.pack(length)
            + string(write_handle) + U64.pack(write_offset))
    return extended_request(rid, EXT_COPY_DATA, body)


def status(rid: int, code: int, message: str = "", language: str = "") -> bytes:
    return packet(FXP_STATUS, U32.pack(rid) + U32.pack(code) + string(message) + string(language))


def handle_reply(rid: int, handle: bytes) -> bytes:
    return packet(FXP_HANDLE, U32.pack(rid) + string(handle))


def data_reply(rid: int, data: bytes) -> bytes:
    return packet(FXP_DATA, U32.pack(rid) + string(data))


def name_reply(rid: int, names: Iterable[bytes | str]) -> bytes:
    """NAME with each filename as its own longname and empty attributes."""
    items = list(names)
    body = b"".join(string(n) + string(n) + EMPTY_ATTRS for n in items)
    return packet(FXP_NAME, U32.pack(rid) + U32.pack(len(items)) + body)


def attrs_reply(rid: int, attrs: bytes = EMPTY_ATTRS) -> bytes:
    return packet(FXP_ATTRS, U32.pack(rid) + attrs)


def extended_reply(rid: int, data: bytes = b"") -> bytes:
    return packet(FXP_EXTENDED_REPLY, U32.pack(rid) + data)


# ---------------------------------------------------------------- decoding


class _Reader:
    """Bounds-checked reads over one packet body; every shortfall is an SftpError."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, pos: int, what: str) -> None:
        self.buf = buf
        self.pos = pos
        self.what = what

    def _need(self, n: int) -> int:
        start = self.pos
        if len(self.buf) - start < n:
            raise SftpError(f"truncated SFTP {self.what} packet")
        self.pos = start + n
        return start

    def u32(self) -> int:
        return U32.unpack_from(self.buf, self._need(4))[0]

    def u64(self) -> int:
        return U64.unpack_from(self.buf, self._need(8))[0]

    def string(self) -> bytes:
        n = self.u32()
        start = self._need(n)
        return self.buf[start:start + n]

    def skip_string(self) -> int:
        """Skip a string without copying it (WRITE data); returns its length."""
        n = self.u32()
        self._need(n)
        return n

    def path(self) -> str:
        raw = self.string()
        if b"\x00" in raw:
            raise SftpError(f"NUL byte in a path of an SFTP {self.what} packet")
        return raw.decode("utf-8", "surrogateescape")

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")

    def attrs(self) -> None:
        flags = self.u32()
        if flags & ~_ATTR_KNOWN:
            raise SftpError(f"unknown attribute flags {flags:#x} in an SFTP {self.what} packet")
        if flags & ATTR_SIZE:
            self._need(8)
        if flags & ATTR_UIDGID:
            self._need(8)
        if flags & ATTR_PERMISSIONS:
            self._need(4)
        if flags & ATTR_ACMODTIME:
            self._need(8)
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.skip_string()
                self.skip_string()

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise SftpError(f"{len(self.buf) - self.pos} trailing bytes in an SFTP {self.what} packet")


def _open_packet(pkt: bytes) -> int:
    """Check the length header of a whole packet and return its type."""
    if len(pkt) < 5 or U32.unpack_from(pkt, 0)[0] != len(pkt) - 4:
        raise SftpError("not one whole SFTP packet (length header does not match)")
    return pkt[4]


def decode_status(pkt: bytes) -> Status:
    """Decode a STATUS packet; message and language may be absent (servers before version 3)."""
    if _open_packet(pkt) != FXP_STATUS:
        raise SftpError(f"expected an SFTP STATUS packet, got type {pkt[4]}")
    r = _Reader(pkt, 5, "STATUS")
    rid, code = r.u32(), r.u32()
    message = language = ""
    if r.remaining:
        message = r.text()
        if r.remaining:
            language = r.text()
    return Status(rid, code, message, language)


def _open_op(pflags: int) -> str:
    return "read" if pflags & ~FXF_READ == 0 else "write"


# ---------------------------------------------------------------- framing


def normalize_path(path: str) -> str:
    """A path as file rules see it: normalised as text (``..`` and ``.`` folded), an empty one
    read as ``.``. The policy texts of SFTP, scp and rsync all go through here."""
    out = posixpath.normpath(path or ".")
    if out.startswith("//"):
        # POSIX leaves a leading "//" implementation-defined and normpath keeps it; Linux
        # reads it as "/", and a rule on "/etc" must not be dodged by "//etc".
        out = "/" + out.lstrip("/")
    return out


class PacketFramer:
    """Incremental framing of uint32-length-prefixed packets, for one direction of a channel.

    A length of 0 or above ``max_packet`` raises ``SftpError`` as soon as its four bytes are in,
    so an oversized packet is never buffered; after an error every ``feed`` raises again.
    """

    __slots__ = ("max_packet", "_buf", "_error")

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held back (non-zero at EOF means a truncated stream)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise SftpError(self._error)
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, size = 0, len(buf)
        with memoryview(buf) as view:
            while size - pos >= 4:
                length = U32.unpack_from(buf, pos)[0]
                if length == 0 or length > self.max_packet:
                    self._error = (f"SFTP packet length {length} is out of bounds "
                                   f"(1..{self.max_packet})")
                    raise SftpError(self._error)
                end = pos + 4 + length
                if end > size:
                    break
                out.append(bytes(view[pos:end]))
                pos = end
        if pos:
            del buf[:pos]
        return out


# ---------------------------------------------------------------- inspector


class _Handle:
    __slots__ = ("op", "path", "bytes_read", "bytes_written", "error")

    def __init__(self, op: str, path: str) -> None:
        self.op = op
        self.path = path
        self.bytes_read = 0
        self.bytes_written = 0
        self.error: str | None = None  # first failed READ/WRITE/copy-data, for the Transfer


class _Pending:
    """What a reply needs to know about the request it answers."""

    __slots__ = ("ptype", "ext", "op", "handle", "length", "learn_cwd")

    def __init__(self, ptype: int, ext: str | None, op: FileOp | None, handle: bytes | None,
                 length: int = 0, learn_cwd: bool = False) -> None:
        self.ptype = ptype
        self.ext = ext
        self.op = op
        self.handle = handle
        self.length = length
        self.learn_cwd = learn_cwd


# Reply types each request may get besides STATUS
_REPLIES: dict[int, frozenset[int]] = {
    FXP_OPEN: frozenset({FXP_HANDLE}), FXP_OPENDIR: frozenset({FXP_HANDLE}),
    FXP_READ: frozenset({FXP_DATA}), FXP_READDIR: frozenset({FXP_NAME}),
    FXP_REALPATH: frozenset({FXP_NAME}), FXP_READLINK: frozenset({FXP_NAME}),
    FXP_STAT: frozenset({FXP_ATTRS}), FXP_LSTAT: frozenset({FXP_ATTRS}),
    FXP_FSTAT: frozenset({FXP_ATTRS}),
}
_EXT_REPLIES: dict[str, frozenset[int]] = {
    EXT_STATVFS: frozenset({FXP_EXTENDED_REPLY}), EXT_FSTATVFS: frozenset({FXP_EXTENDED_REPLY}),
    EXT_LIMITS: frozenset({FXP_EXTENDED_REPLY}), EXT_USERS_GROUPS: frozenset({FXP_EXTENDED_REPLY}),
    EXT_EXPAND_PATH: frozenset({FXP_NAME}), EXT_HOME_DIRECTORY: frozenset({FXP_NAME}),
}
_NONE: frozenset[int] = frozenset()
# Requests whose STATUS is recorded as a Transfer on its own
_RECORDED = frozenset({FXP_REMOVE, FXP_RENAME, FXP_MKDIR, FXP_RMDIR, FXP_SETSTAT, FXP_FSETSTAT,
                       FXP_SYMLINK})
_RECORDED_EXT = frozenset({EXT_POSIX_RENAME, EXT_HARDLINK, EXT_LSETSTAT})
_PATH_OPS = {FXP_LSTAT: "stat", FXP_STAT: "stat", FXP_REALPATH: "stat", FXP_READLINK: "stat",
             FXP_OPENDIR: "list", FXP_REMOVE: "remove", FXP_RMDIR: "rmdir"}


class SftpInspector:
    """Follows one SFTP channel: parses requests, matches replies, tracks handles and bytes.

    Memory is bounded: more than ``max_pending`` requests in flight or ``max_handles`` open
    handles raises ``SftpError`` (OpenSSH's sftp keeps 64 requests in flight by default, so the
    limits only stop a peer that is trying to exhaust the gateway's memory).
    """

    def __init__(self, *, max_packet: int = DEFAULT_MAX_PACKET, max_pending: int = MAX_PENDING,
                 max_handles: int = MAX_HANDLES, cwd: str | None = None) -> None:
        self.client_framer = PacketFramer(max_packet)
        self.server_framer = PacketFramer(max_packet)
        self.max_pending = max_pending
        self.max_handles = max_handles
        self.client_version: int | None = None
        self.version: int | None = None  # negotiated: the server's VERSION
        self.server_extensions: dict[str, bytes] = {}
        # The server's working directory (the user's home), from the first REALPATH "." reply
        # unless the glue already knows it: scp in SFTP mode never sends that REALPATH.
        self.cwd: str | None = None
        if cwd is not None:
            if not cwd.startswith("/"):
                raise ValueError(f"cwd must be absolute, got {cwd!r}")
            self.cwd = self.resolve(cwd)
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _Handle] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def handle_path(self, handle: bytes) -> str | None:
        h = self._handles.get(handle)
        return None if h is None else h.path

    # ------------------------------------------------------------ paths

    def resolve(self, path: str) -> str:
        """Lexical normalisation; relative paths join the session directory once it is known."""
        if not path:
            # REALPATH "" means "." to OpenSSH's server; elsewhere "" fails there (ENOENT), so
            # reading it as the directory only ever makes a check stricter.
            path = "."
        if not path.startswith("/") and self.cwd is not None:
            path = f"{self.cwd}/{path}"
        return normalize_path(path)

    def _symlink_target(self, target: str, link: str) -> str:
        if target.startswith("/"):
            return self.resolve(target)
        return self.resolve(posixpath.join(posixpath.dirname(link), target))

    # ------------------------------------------------------------ client side

    def client_packet(self, pkt: bytes) -> ClientRequest:
        """Parse one whole client packet (header included) and remember what its reply means."""
        ptype = _open_packet(pkt)
        name = TYPE_NAMES.get(ptype)
        if ptype == FXP_INIT:
            if self.client_version is not None:
                raise SftpError("second SFTP INIT on the channel")
            r = _Reader(pkt, 5, "INIT")
            version = r.u32()
            while r.remaining:  # extension pairs; OpenSSH's client sends none
                r.skip_string()
                r.skip_string()
            self.client_version = version
            return ClientRequest(type="INIT", id=None)
        if name is None or ptype in (FXP_VERSION, FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME,
                                     FXP_ATTRS, FXP_EXTENDED_REPLY):
            raise SftpError(f"SFTP client sent packet type {ptype}, which is not a request")
        if self.version is None:
            raise SftpError(f"SFTP {name} request before the server's VERSION")
        r = _Reader(pkt, 5, name)
        rid = r.u32()
        if rid in self._pending:
            raise SftpError(f"SFTP request id {rid} reused while still pending")
        if ptype == FXP_EXTENDED:
            req, pend = self._extended(r, rid)
        else:
            req, pend = self._request(ptype, name, r, rid)
        r.end()
        if pend is not None:
            if len(self._pending) >= self.max_pending:
                raise SftpError(f"more than {self.max_pending} SFTP requests pending")
            self._pending[rid] = pend
        return req

    def _known_handle(self, handle: bytes, what: str) -> _Handle:
        h = self._handles.get(handle)
        if h is None:
            raise SftpError(f"SFTP {what} on a handle the server never issued")
        return h

    def _request(self, ptype: int, name: str, r: _Reader,
                 rid: int) -> tuple[ClientRequest, _Pending]:
        op: FileOp | None = None
        handle: bytes | None = None
        path: str | None = None
        length = 0
        learn_cwd = False
        reads = False
        if ptype == FXP_OPEN:
            path = self.resolve(r.path())
            pflags = r.u32()
            reads = bool(pflags & FXF_READ)
            r.attrs()
            op = FileOp(_open_op(pflags), path)
        elif ptype in _PATH_OPS:
            raw = r.path()
            path = self.resolve(raw)
            op = FileOp(_PATH_OPS[ptype], path)
            learn_cwd = ptype == FXP_REALPATH and raw in (".", "") and self.cwd is None
        elif ptype in (FXP_SETSTAT, FXP_MKDIR):
            path = self.resolve(r.path())
            r.attrs()
            op = FileOp("setstat" if ptype == FXP_SETSTAT else "mkdir", path)
        elif ptype == FXP_RENAME:
            old, new = self.resolve(r.path()), self.resolve(r.path())
            path, op = old, FileOp("rename", old, new)
        elif ptype == FXP_SYMLINK:
            target_raw = r.path()
            link = self.resolve(r.path())
            path, op = link, FileOp("symlink", self._symlink_target(target_raw, link), link)
        elif ptype == FXP_FSETSTAT:
            handle = r.string()
            r.attrs()
            path = self._known_handle(handle, name).path
            op = FileOp("setstat", path)
        else:  # CLOSE, READ, WRITE, FSTAT, READDIR: the OPEN/OPENDIR was checked
            handle = r.string()
            if ptype == FXP_READ:
                r.u64()
                r.u32()
            elif ptype == FXP_WRITE:
                r.u64()
                length = r.skip_string()
            path = self.handle_path(handle)
        pend = _Pending(ptype, None, op, handle, length, learn_cwd)
        return ClientRequest(type=name, id=rid, op=op, path=path, reads=reads), pend

    def _extended(self, r: _Reader, rid: int) -> tuple[ClientRequest, _Pending | None]:
        ext = r.string().decode("utf-8", "surrogateescape")
        if ext not in KNOWN_EXTENSIONS:
            # Not registered: the glue answers it itself and the server never sees it.
            r.pos = len(r.buf)
            return ClientRequest(type="EXTENDED", id=rid, unsupported=True, extension=ext), None
        r.what = f"EXTENDED {ext}"
        op: FileOp | None = None
        handle: bytes | None = None
        path: str | None = None
        if ext in (EXT_POSIX_RENAME, EXT_HARDLINK):
            old, new = self.resolve(r.path()), self.resolve(r.path())
            path, op = old, FileOp("rename" if ext == EXT_POSIX_RENAME else "link", old, new)
        elif ext in (EXT_STATVFS, EXT_LSETSTAT):
            path = self.resolve(r.path())
            if ext == EXT_LSETSTAT:
                r.attrs()
            op = FileOp("stat" if ext == EXT_STATVFS else "setstat", path)
        elif ext == EXT_EXPAND_PATH:
            raw = r.path()
            # "~" and "~user" are expanded by the server; joining them to the cwd would lie.
            path = raw if raw.startswith("~") else self.resolve(raw)
            op = FileOp("stat", path)
        elif ext == EXT_HOME_DIRECTORY:
            path = "~" + r.path()
            op = FileOp("stat", path)
        elif ext in (EXT_FSTATVFS, EXT_FSYNC):
            handle = r.string()
            path = self.handle_path(handle)
        elif ext == EXT_COPY_DATA:
            self._known_handle(r.string(), "copy-data source")
            r.u64()
            r.u64()
            handle = r.string()
            r.u64()
            path = self._known_handle(handle, "copy-data destination").path
            op = FileOp("write", path)
        elif ext == EXT_USERS_GROUPS:
            uids, gids = r.string(), r.string()
            if len(uids) % 4 or len(gids) % 4:
                raise SftpError("users-groups-by-id@openssh.com id lists are not whole uint32s")
        # limits@openssh.com carries nothing
        req = ClientRequest(type="EXTENDED", id=rid, op=op, path=path, extension=ext)
        return req, _Pending(FXP_EXTENDED, ext, op, handle)

    def _status_reply(self, req: ClientRequest, code: int, message: str) -> bytes:
        if req.id is None:
            raise SftpError(f"cannot answer an SFTP {req.type} with a STATUS (no request id)")
        # The request is not forwarded, so no reply will come to clear it.
        self._pending.pop(req.id, None)
        return status(req.id, code, message)

    def refuse(self, req: ClientRequest, message: str) -> bytes:
        """SSH_FXP_STATUS PERMISSION_DENIED for ``req``, sent to the client instead of forwarding it."""
        return self._status_reply(req, FX_PERMISSION_DENIED, message)

    def unsupported(self, req: ClientRequest, message: str | None = None) -> bytes:
        """SSH_FXP_STATUS OP_UNSUPPORTED for ``req`` (an unreviewed EXTENDED request)."""
        if message is None:
            message = f"wiregate: SFTP extension {req.extension or req.type!r} is not supported"
        return self._status_reply(req, FX_OP_UNSUPPORTED, message)

    # ------------------------------------------------------------ server side

    def server_packet(self, pkt: bytes) -> list[Transfer]:
        """Follow one whole server packet; returns the operations it finished."""
        ptype = _open_packet(pkt)
        if ptype == FXP_VERSION:
            return self._version(pkt)
        if self.version is None:
            raise SftpError(f"SFTP server sent packet type {ptype} before VERSION")
        name = TYPE_NAMES.get(ptype)
        if ptype not in (FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS,
                         FXP_EXTENDED_REPLY) or name is None:
            raise SftpError(f"SFTP server sent packet type {ptype}, which is not a reply")
        r = _Reader(pkt, 5, name)
        rid = r.u32()
        pend = self._pending.get(rid)
        if pend is None:
            raise SftpError(f"SFTP {name} reply to unknown request id {rid}")
        if ptype != FXP_STATUS:
            allowed = _EXT_REPLIES.get(pend.ext, _NONE) if pend.ext else _REPLIES.get(pend.ptype, _NONE)
            if ptype not in allowed:
                raise SftpError(f"SFTP {name} reply does not answer a "
                                f"{pend.ext or TYPE_NAMES[pend.ptype]} request")
        if ptype == FXP_STATUS:
            st = decode_status(pkt)
            out = self._on_status(pend, st.code, st.message)
        elif ptype == FXP_HANDLE:
            handle = r.string()
            r.end()
            self._on_handle(pend, handle)
            out = []
        elif ptype == FXP_DATA:
            n = r.skip_string()
            r.end()
            h = self._handles.get(pend.handle) if pend.handle is not None else None
            if h is not None:
                h.bytes_read += n
            out = []
        elif ptype == FXP_NAME and pend.learn_cwd:
            if r.u32() >= 1:
                first = r.path()
                if first.startswith("/"):
                    self.cwd = self.resolve(first)
            out = []
        else:
            out = []
        del self._pending[rid]
        return out

    def _version(self, pkt: bytes) -> list[Transfer]:
        if self.client_version is None:
            raise SftpError("SFTP VERSION before the client's INIT")
        if self.version is not None:
            raise SftpError("second SFTP VERSION on the channel")
        r = _Reader(pkt, 5, "VERSION")
        version = r.u32()
        if version > 3:
            raise SftpError(f"SFTP version {version} negotiated; the gateway inspects version 3 only")
        extensions: dict[str, bytes] = {}
        while r.remaining:
            key = r.string().decode("utf-8", "surrogateescape")
            extensions[key] = r.string()
        self.version = version
        self.server_extensions = extensions
        return []

    def _on_handle(self, pend: _Pending, handle: bytes) -> None:
        if pend.op is None:  # unreachable: only OPEN/OPENDIR take a HANDLE, both carry an op
            raise SftpError("SFTP HANDLE reply to a request without a path")
        if handle in self._handles:
            raise SftpError("SFTP server issued a handle that is already open")
        if len(self._handles) >= self.max_handles:
            raise SftpError(f"more than {self.max_handles} SFTP handles open")
        self._handles[handle] = _Handle(pend.op.op, pend.op.path)

    def _on_status(self, pend: _Pending, code: int, message: str) -> list[Transfer]:
        ok = code == FX_OK
        ptype = pend.ptype
        if ptype == FXP_CLOSE:
            h = self._handles.pop(pend.handle, None) if pend.handle is not None else None
            if h is None:
                return []
            if h.error is not None:
                return [Transfer(h.op, h.path, h.bytes_read, h.bytes_written, False, h.error)]
            return [Transfer(h.op, h.path, h.bytes_read, h.bytes_written, ok, message)]
        if ptype in (FXP_WRITE, FXP_READ) or pend.ext == EXT_COPY_DATA:
            h = self._handles.get(pend.handle) if pend.handle is not None else None
            if h is not None:
                if ok and ptype == FXP_WRITE:
                    h.bytes_written += pend.length
                elif not ok and code != FX_EOF and h.error is None:
                    h.error = message or f"SFTP status {code}"
            return []
        if pend.op is None:
            return []
        if ptype in (FXP_OPEN, FXP_OPENDIR):
            # Success comes as HANDLE; a STATUS here is the server refusing the open.
            return [Transfer(pend.op.op, pend.op.path, 0, 0, ok, message)]
        if ptype in _RECORDED or pend.ext in _RECORDED_EXT:
            return [Transfer(pend.op.op, pend.op.path, 0, 0, ok, message, pend.op.path2)]
        return []

    # ------------------------------------------------------------ end of channel

    def finish(self) -> list[Transfer]:
        """The channel closed: open handles and unanswered mutations become failed Transfers."""
        out = [Transfer(h.op, h.path, h.bytes_read, h.bytes_written, False,
                        "channel closed before the handle was closed")
               for h in self._handles.values()]
        for pend in self._pending.values():
            if pend.op is not None and (pend.ptype in _RECORDED or pend.ext in _RECORDED_EXT
                                        or pend.ptype in (FXP_OPEN, FXP_OPENDIR)):
                out.append(Transfer(pend.op.op, pend.op.path, 0, 0, False,
                                    "channel closed before the server answered", pend.op.path2))
        self._handles.clear()
        self._pending.clear()
        return out

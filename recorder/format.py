"""The per-session recording file: header, length-prefixed frames, hash chain, Ed25519 seal.

Layout (docs/recording.md is the reference)::

    header  = b"WGREC\\0" · version (1 byte) · n (1 byte) · session id (n bytes, ASCII)
              · CRC-32 of the bytes before it (4 bytes, big-endian)
    frame   = length (3 bytes, big-endian) · check (1 byte) · body (length bytes)
    body    = msgpack [seq, prev, payload]     prev = SHA-256 of the previous body (of the header
                                               for seq 0); payload = a tagged event or the seal

The check byte (``0x5A`` xor the three length bytes) tells a frame cut short by a crash (a valid
length pointing past the end of the file: a warning) from a damaged length (an error), so no single
changed byte can pass for a crash. The seal is the last frame of a finished session and signs
(session id, frame count, hash of the last frame) with the gateway's Ed25519 key.

``SessionFile`` is the writer's side (one writer thread); ``read_recording`` and ``verify`` are
pure readers over the file's bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from pathlib import Path
from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import WiregateError
from gateway.keys import ed25519_key_id
from recorder.events import FORMAT_VERSION, KNOWN_TAGS, Event, Payload, Seal, SessionEnd, SessionStart

MAGIC = b"WGREC\x00"
SUFFIX = ".wgrec"
FRAME_HEAD = 4
MAX_FRAME = (1 << 24) - 1
_CHECK_SEED = 0x5A
_SEAL_CONTEXT = b"wiregate-recording-seal\x00"
# a session id names a file: keep it to characters that are safe in any path
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# at most this many problems of one verify are listed one by one (a renumbered file breaks every link)
_MAX_LISTED = 20


class RecordingError(WiregateError):
    """A file that is not a readable wiregate recording (bad magic, unknown version, damaged header)."""


class TornHeader(RecordingError):
    """The file ends inside its header: the gateway stopped while creating it."""


Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class Frame(msgspec.Struct, array_like=True, frozen=True, gc=False):
    seq: Seq
    prev: Digest  # SHA-256 of the previous frame's body (of the header for frame 0)
    payload: Payload


class _RawFrame(msgspec.Struct, array_like=True, frozen=True, gc=False):
    seq: Seq
    prev: Digest
    payload: msgspec.Raw


class _Tag(msgspec.Struct, array_like=True, gc=False):
    k: int


_ENCODER = msgspec.msgpack.Encoder()
_FRAME_DECODER = msgspec.msgpack.Decoder(Frame)
_RAW_DECODER = msgspec.msgpack.Decoder(_RawFrame)
_PAYLOAD_DECODER = msgspec.msgpack.Decoder(Payload)
_TAG_DECODER = msgspec.msgpack.Decoder(_Tag)


def check_session_id(session_id: str) -> str:
    if not SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(f"session id {session_id!r}: 1-128 characters of A-Z a-z 0-9 . _ -, not starting with . _ -")
    return session_id


def encode_header(session_id: str) -> bytes:
    raw = check_session_id(session_id).encode("ascii")
    head = MAGIC + bytes((FORMAT_VERSION, len(raw))) + raw
    # the CRC makes a damaged id length an error: misread, it would shift every frame boundary
    return head + zlib.crc32(head).to_bytes(4, "big")


def frame_head(length: int) -> bytes:
    if not 0 < length <= MAX_FRAME:
        raise ValueError(f"frame of {length} bytes (at most {MAX_FRAME})")
    b0, b1, b2 = length >> 16, (length >> 8) & 0xFF, length & 0xFF
    return bytes((b0, b1, b2, _CHECK_SEED ^ b0 ^ b1 ^ b2))


def seal_message(session_id: str, frames: int, last_hash: bytes) -> bytes:
    """What the seal signs. The context string and version keep a seal from meaning anything else."""
    return (_SEAL_CONTEXT + bytes((FORMAT_VERSION,)) + frames.to_bytes(8, "big") + last_hash
            + session_id.encode("utf-8"))


def recording_path(state_dir: Path, session_id: str, started: float) -> Path:
    """``state_dir/recordings/<UTC date of the start>/<session id>.wgrec``."""
    day = time.strftime("%Y-%m-%d", time.gmtime(started))
    return Path(state_dir) / "recordings" / day / f"{check_session_id(session_id)}{SUFFIX}"


# ---------------------------------------------------------------- writing


class SessionFile:
    """One session's file, append-only. Used by one thread; nothing reaches the disk before ``flush``.

    ``append`` encodes a frame into a buffer; ``flush`` writes the buffer with ``os.write`` (the fd
    is ``O_APPEND``) and fsyncs if asked. After an ``OSError`` the file's tail is unknown (possibly a
    torn frame): the caller stops using it.
    """

    def __init__(self, path: Path, session_id: str):
        header = encode_header(session_id)
        self.path = Path(path)
        self.session_id = session_id
        # O_EXCL: evidence is never overwritten, not even by a session id that comes twice
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._buf = bytearray(header)
        self._last = hashlib.sha256(header).digest()
        self._seq = 0
        self.sealed = False

    @property
    def frames(self) -> int:
        """Event frames appended so far (the seal not counted)."""
        return self._seq

    @property
    def last_hash(self) -> bytes:
        return self._last

    def append(self, event: Event) -> bytes:
        """Add ``event`` as the next frame; the frame body (bytes hashed into the chain) is returned.

        The body is decoded back before it is accepted, so a malformed event (a caller's bug) raises
        ``ValueError`` here instead of leaving a frame that no reader could decode.
        """
        if self.sealed:
            raise ValueError(f"session {self.session_id}: append after the seal")
        try:
            body = _ENCODER.encode(Frame(self._seq, self._last, event))
            _FRAME_DECODER.decode(body)
        except msgspec.ValidationError as e:  # its message names a field's place, never a value
            raise ValueError(f"malformed {type(event).__name__} event: {e}") from None
        except (ValueError, TypeError, OverflowError, msgspec.MsgspecError) as e:
            raise ValueError(f"malformed {type(event).__name__} event ({type(e).__name__})") from None
        self._buf += frame_head(len(body))  # ValueError when too large
        self._buf += body
        self._last = hashlib.sha256(body).digest()
        self._seq += 1
        return body

    def seal(self, key: Ed25519PrivateKey) -> Seal:
        """Append the seal frame (still to be flushed); no frame can follow it."""
        if self.sealed:
            raise ValueError(f"session {self.session_id}: sealed twice")
        seal = Seal(session_id=self.session_id, frames=self._seq, last_hash=self._last,
                    key_id=ed25519_key_id(key.public_key()),
                    signature=key.sign(seal_message(self.session_id, self._seq, self._last)))
        body = _ENCODER.encode(Frame(self._seq, self._last, seal))
        self._buf += frame_head(len(body))
        self._buf += body
        self.sealed = True
        return seal

    @property
    def pending(self) -> int:
        """Bytes appended but not yet written."""
        return len(self._buf)

    def flush(self, fsync: bool) -> None:
        view = memoryview(self._buf)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        finally:
            view.release()
        self._buf.clear()
        if fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file without writing what is still buffered (``flush`` first to keep it)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


# ---------------------------------------------------------------- reading


class Recording(msgspec.Struct, kw_only=True):
    """What ``read_recording`` makes of a file: every readable event, the seal, and what was wrong."""

    version: int
    session_id: str
    events: list[tuple[int, Event]]  # (seq, event), in file order
    seal: Seal | None
    torn_bytes: int  # bytes after the last complete frame (a crash while writing)
    problems: list[str]  # what stopped or skipped reading; ``verify`` says what it means

    @property
    def sealed(self) -> bool:
        return self.seal is not None


class VerifyReport(msgspec.Struct, kw_only=True):
    """``ok`` is False when anything was changed, removed, reordered, added or forged (``errors``);
    ``warnings`` are what a crash leaves (a torn last frame, no seal) and unknown newer kinds."""

    path: str
    session_id: str | None
    frames: int  # event frames that could be read
    sealed: bool  # carries a seal whose signature verified
    key_id: str | None
    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


class _Scanned(msgspec.Struct, kw_only=True):
    """One complete frame as found in the file (``payload`` None: it does not decode)."""

    index: int  # position among the file's frames
    offset: int
    digest: bytes
    seq: int | None
    prev: bytes | None
    payload: Payload | None
    unknown_tag: int | None = None
    error: str | None = None


class _Scan(msgspec.Struct, kw_only=True):
    version: int
    session_id: str
    header_hash: bytes
    frames: list[_Scanned]
    torn_bytes: int
    torn_reason: str | None  # set when the file ends inside a frame (or in zeros)
    corrupt: str | None  # a frame head that is not one: reading stopped there


def read_recording(path: Path) -> Recording:
    """The events of a recording file (lenient: skips what does not decode and says so in
    ``problems``; no hash or signature is checked here — that is ``verify``).

    A file cut inside its header (a crash right after it was created) reads as no events.
    Raises ``OSError`` when the file cannot be read, ``RecordingError`` when it is not a recording.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        scan = _scan(data)
    except TornHeader as e:  # a crash right after the file was created: a recording of nothing
        return Recording(version=FORMAT_VERSION, session_id=path.name.removesuffix(SUFFIX), events=[], seal=None,
                         torn_bytes=len(data), problems=[str(e)])
    events: list[tuple[int, Event]] = []
    seal: Seal | None = None
    problems: list[str] = []
    for f in scan.frames:
        if f.payload is None:
            problems.append(_frame_problem(f))
        elif isinstance(f.payload, Seal):
            seal = f.payload
        else:
            events.append((f.seq, f.payload))  # type: ignore[arg-type]
    if scan.corrupt:
        problems.append(scan.corrupt)
    if scan.torn_reason:
        problems.append(scan.torn_reason)
    return Recording(version=scan.version, session_id=scan.session_id, events=events, seal=seal,
                     torn_bytes=scan.torn_bytes, problems=problems)


def verify(path: Path, public_keys: dict[str, Ed25519PublicKey], *, known_seal: Seal | None = None) -> VerifyReport:
    """Check a recording's hash chain, frame order and seal.

    ``public_keys`` maps key ids (``gateway.keys.ed25519_key_id``) to the keys a seal may be signed
    with. ``known_seal`` is the seal the index holds for this session (``SessionRow.seal``), when
    there is one: a file that no longer carries that seal was cut (error), where the file alone
    could only say "not sealed" (warning).
    """
    path = Path(path)
    errors: list[str] = []
    warnings: list[str] = []
    try:
        data = path.read_bytes()
    except OSError as e:
        return VerifyReport(path=str(path), session_id=None, frames=0, sealed=False, key_id=None,
                            errors=[f"cannot read the file: {e.strerror or e}"], warnings=[])
    if not data:
        if known_seal is not None:
            errors.append("the file is empty but the index holds its seal: it was cut")
        else:
            warnings.append("the file is empty: the gateway stopped before the session's first frame was written")
        return VerifyReport(path=str(path), session_id=None, frames=0, sealed=False, key_id=None,
                            errors=errors, warnings=warnings)
    try:
        scan = _scan(data)
    except TornHeader as e:
        if known_seal is None:
            warnings.append(f"{e}: the gateway stopped while creating the file")
        else:
            errors.append(f"{e}, but the index holds its seal: the file was cut")
        return VerifyReport(path=str(path), session_id=None, frames=0, sealed=False, key_id=None,
                            errors=errors, warnings=warnings)
    except RecordingError as e:
        errors.append(str(e))
        return VerifyReport(path=str(path), session_id=None, frames=0, sealed=False, key_id=None,
                            errors=errors, warnings=warnings)

    frames = scan.frames
    seal_at = [f for f in frames if isinstance(f.payload, Seal)]
    seal_frame = seal_at[-1] if seal_at else None
    body = [f for f in frames if f is not seal_frame]
    errors += _check_order_and_chain(scan, body)
    end_at = next((f for f in body if isinstance(f.payload, SessionEnd)), None)

    for f in body:
        if f.payload is None:
            if f.unknown_tag is not None:
                warnings.append(f"{_name(f)}: unknown event kind {f.unknown_tag} (a newer wiregate wrote it); "
                                "its place in the chain is checked, its content is skipped")
            continue
        if isinstance(f.payload, Seal):
            errors.append(f"{_name(f)}: a seal that is not the last frame (frames were appended after it)")
        elif end_at is not None and f.index > end_at.index:
            errors.append(f"{_name(f)}: an event after the session's end")
    if body and isinstance(body[0].payload, SessionStart):
        if body[0].payload.session_id != scan.session_id:
            errors.append("frame 0: the session start names another session than the header")
    elif body and body[0].payload is not None:
        errors.append("frame 0: not a session start")

    sealed = False
    key_id = None
    if scan.corrupt:
        errors.append(scan.corrupt)
    if seal_frame is not None:
        key_id = seal_frame.payload.key_id  # type: ignore[union-attr]
        seal_errors = _check_seal(scan, seal_frame, body, public_keys)
        errors += seal_errors
        sealed = not seal_errors
        if seal_frame.index != len(frames) - 1:
            errors.append(f"{len(frames) - 1 - seal_frame.index} frames were appended after the seal")
        if end_at is None:
            errors.append("sealed without a session end")
        if scan.torn_reason:
            errors.append(f"{scan.torn_reason} after the seal: something was appended to a sealed file")
        if known_seal is not None and (known_seal.frames, known_seal.last_hash) != \
                (seal_frame.payload.frames, seal_frame.payload.last_hash):  # type: ignore[union-attr]
            errors.append(f"the seal differs from the one the index holds (over {known_seal.frames} frames)")
    elif not scan.corrupt:
        last = len(body) - 1
        if known_seal is not None:
            errors.append(f"not sealed, but the index holds a seal over {known_seal.frames} frames: "
                          f"the file was cut after frame {last}" if last >= 0 else "the file was cut after its header")
        elif end_at is not None and not scan.torn_reason:
            errors.append(f"the session ended but its seal is missing: the file was cut after frame {last}")
        elif end_at is not None:
            warnings.append(f"{scan.torn_reason}: the gateway stopped while sealing; {_upto(last)} "
                            "chained but not signed")
        else:
            if scan.torn_reason:
                warnings.append(f"{scan.torn_reason}: the gateway stopped while writing it")
            warnings.append(f"not sealed: the session did not end cleanly (gateway stopped or crashed); "
                            f"{_upto(last)} chained but not signed" if last >= 0 else
                            "not sealed and no frame was written")
    return VerifyReport(path=str(path), session_id=scan.session_id, frames=len(body), sealed=sealed,
                        key_id=key_id, errors=_cap(errors), warnings=_cap(warnings))


def _check_order_and_chain(scan: _Scan, body: list[_Scanned]) -> list[str]:
    """Missing, repeated and reordered frames (by their numbers), then every hash link, taken in
    number order so a reordering is reported once and not as a series of broken links."""
    errors: list[str] = []
    seen: dict[int, _Scanned] = {}
    highest = -1
    for f in body:
        if f.seq is None:
            continue
        if f.seq in seen:
            errors.append(f"frame {f.seq} appears twice (positions {seen[f.seq].index} and {f.index})")
            continue
        if f.seq < highest:
            errors.append(f"frame {f.seq} is out of order: found after frame {highest}")
        seen[f.seq] = f
        highest = max(highest, f.seq)
        if f.payload is None and f.unknown_tag is None:
            errors.append(f"{_name(f)}: {f.error} (changed)")
    for f in body:
        if f.seq is None:
            errors.append(f"{_name(f)}: {f.error} (changed)")
    # gaps between the numbers found (computed from them: a damaged number may be huge)
    previous = -1
    for seq in sorted(seen):
        if seq > previous + 1:
            lo, hi = previous + 1, seq - 1
            errors.append(f"frame {lo} is missing" if lo == hi else f"frames {lo}-{hi} are missing")
        previous = seq
    for seq, f in sorted(seen.items()):
        if seq == 0:
            if f.prev != scan.header_hash:
                errors.append("the header was changed: frame 0's link to it does not match")
        elif seq - 1 in seen and f.prev != seen[seq - 1].digest:
            errors.append(f"frame {seq - 1} was changed: frame {seq}'s link to it does not match")
    return errors


def _check_seal(scan: _Scan, f: _Scanned, body: list[_Scanned], public_keys: dict[str, Ed25519PublicKey]) -> list[str]:
    seal: Seal = f.payload  # type: ignore[assignment]
    errors = []
    last_digest = body[-1].digest if body else scan.header_hash
    if seal.session_id != scan.session_id:
        errors.append("the seal names another session")
    if seal.frames != len(body) or f.seq != len(body):
        missing = f"; frames {len(body)}-{seal.frames - 1} are missing (the file was cut)" if seal.frames > len(body) else ""
        errors.append(f"the seal covers {seal.frames} frames, the file holds {len(body)}{missing}")
    elif seal.last_hash != last_digest:
        errors.append(f"frame {len(body) - 1} was changed: it does not match the seal")
    if f.prev != seal.last_hash:
        errors.append("the seal frame's link does not match the hash it signs")
    key = public_keys.get(seal.key_id)
    if key is None:
        errors.append(f"the seal is signed with key {seal.key_id!r}, which is not a known recording key")
    else:
        try:
            key.verify(seal.signature, seal_message(seal.session_id, seal.frames, seal.last_hash))
        except InvalidSignature:
            errors.append("the seal's signature is not valid (the seal was forged or changed)")
    return errors


def _scan(data: bytes) -> _Scan:
    """Split a file into its header and complete frames; say where and why reading stopped."""
    session_id, end = _read_header(data)
    frames: list[_Scanned] = []
    pos, size = end, len(data)
    torn_reason = corrupt = None
    while pos < size:
        if size - pos < FRAME_HEAD:
            torn_reason = f"torn last frame: {size - pos} bytes at offset {pos}"
            break
        b0, b1, b2, check = data[pos], data[pos + 1], data[pos + 2], data[pos + 3]
        length = (b0 << 16) | (b1 << 8) | b2
        if check != _CHECK_SEED ^ b0 ^ b1 ^ b2 or length == 0:
            # a frame head is never all zeros: zeros to the end are blocks a crash left unwritten
            if data.count(0, pos) == size - pos:
                torn_reason = f"torn last frame: the file ends in {size - pos} zero bytes at offset {pos}"
            else:
                corrupt = (f"the frame after frame {len(frames) - 1} (offset {pos}) has a damaged length: "
                           f"{size - pos} bytes from there cannot be read")
            break
        if pos + FRAME_HEAD + length > size:
            torn_reason = f"torn last frame: {size - pos - FRAME_HEAD} of {length} bytes at offset {pos}"
            break
        frames.append(_decode_frame(len(frames), pos, data[pos + FRAME_HEAD:pos + FRAME_HEAD + length]))
        pos += FRAME_HEAD + length
    return _Scan(version=FORMAT_VERSION, session_id=session_id, header_hash=hashlib.sha256(data[:end]).digest(),
                 frames=frames, torn_bytes=size - pos if torn_reason else 0, torn_reason=torn_reason,
                 corrupt=corrupt)


def _read_header(data: bytes) -> tuple[str, int]:
    """The session id and the header's length; ``RecordingError`` when there is no valid header."""
    fixed = len(MAGIC) + 2
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise RecordingError("not a wiregate recording (bad magic)")
    if len(data) < fixed:
        raise TornHeader(f"torn header ({len(data)} bytes)")
    version, n = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != FORMAT_VERSION:
        raise RecordingError(f"recording format version {version} (this wiregate reads {FORMAT_VERSION})")
    if n > 128:
        raise RecordingError("the header is damaged (session id length)")
    end = fixed + n + 4
    if len(data) < end:
        raise TornHeader(f"torn header ({len(data)} of {end} bytes)")
    if zlib.crc32(data[: end - 4]).to_bytes(4, "big") != data[end - 4:end]:
        raise RecordingError("the header is damaged (checksum)")
    try:
        return check_session_id(data[fixed:end - 4].decode("ascii")), end
    except (UnicodeDecodeError, ValueError):
        raise RecordingError("the header is damaged (session id)") from None


def _decode_frame(index: int, offset: int, raw: bytes) -> _Scanned:
    digest = hashlib.sha256(raw).digest()
    # anything a damaged body can raise (msgspec raises UnicodeDecodeError for bad UTF-8)
    try:
        rf = _RAW_DECODER.decode(raw)
    except (ValueError, TypeError):
        return _Scanned(index=index, offset=offset, digest=digest, seq=None, prev=None, payload=None,
                        error="the frame does not decode")
    try:
        payload = _PAYLOAD_DECODER.decode(rf.payload)
    except (ValueError, TypeError):
        try:
            tag = _TAG_DECODER.decode(rf.payload).k
        except (ValueError, TypeError):
            tag = None
        unknown = tag if tag is not None and tag not in KNOWN_TAGS else None
        return _Scanned(index=index, offset=offset, digest=digest, seq=rf.seq, prev=rf.prev, payload=None,
                        unknown_tag=unknown, error="its event does not decode")
    return _Scanned(index=index, offset=offset, digest=digest, seq=rf.seq, prev=rf.prev, payload=payload)


def _frame_problem(f: _Scanned) -> str:
    if f.unknown_tag is not None:
        return f"{_name(f)}: unknown event kind {f.unknown_tag} skipped"
    return f"{_name(f)}: {f.error}"


def _name(f: _Scanned) -> str:
    return f"frame {f.seq}" if f.seq is not None and f.seq == f.index else \
        f"frame at position {f.index} (offset {f.offset})"


def _upto(last: int) -> str:
    return "frame 0" if last == 0 else f"frames 0-{last}"


def _cap(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LISTED:
        return lines
    return lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more"]

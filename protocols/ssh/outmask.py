"""Masking one SSH output stream (exec stdout/stderr, the PTY stream) with the mask rules' detectors.

``StreamMasker(scans)`` is sans-IO: ``feed(bytes)`` returns what may be released now, masked;
``flush()`` releases what it still holds. The text is UTF-8; bytes that are not are carried
through surrogateescape, so when nothing matches the output is byte for byte the input, in
whatever pieces it was fed.

Detectors need whole values, and a stream has no values: the unit is the line. A complete line
(up to and including its LF) is scrubbed (``policy.masking.scrub``; the null style, which would
drop a whole value, becomes the ``****`` mask here) and released; a partial last line is held
until its LF, a ``flush`` (the glue calls it after a short quiet time, about 10 ms, and at EOF)
or 64 KiB. A chunk with no possible match (``DetectorSet.quick_reject``) passes in one piece.

Early release (``eager=True``, for the PTY): a short partial line is released at once, so
keystroke echo and prompts pass without the quiet-time delay, when all of these hold: it is at
most 64 bytes, it came whole in a feed of at most 64 bytes (the tail of a larger read is a cut
through program output, where a secret may go on in the next read), and the line so far
(with what already went out of it) holds no PEM armour (``-----``) and either passes
``quick_reject`` or holds no match and ends in a word that passes it (a ``user@host:~$``
prompt). What went out of a line, early or by a flush, is kept (its last 1 KiB) as
the context its rest is scanned with: a match that began in it is masked from there on, and a
BEGIN line released in pieces still masks the key lines after it. What went out is not taken
back: output trickling a few bytes at a time can show the start of a secret (the first digits
of a card). exec streams may turn early release off: then the output of any chunking equals
the output of the whole stream at once (for lines under 64 KiB and key blocks under 256 KiB).

Private keys span lines: a line with ``-----BEGIN`` and ``PRIVATE KEY`` (and no END after it)
starts a block that is held until a line with ``-----END``, then scrubbed as one text, so the
``private_key`` detector masks it whole. A block past 256 KiB is released as ``****`` and the
masker stays inside the key: every following line that could be key material (a run of 16 or
more base64 characters; blank lines pass as they are) becomes ``****`` until the END line,
itself masked; a line that could not be key material ends this state and is scrubbed as usual.
A flush that releases an unfinished block, or a partial line with an unfinished BEGIN, enters
the same state, so a key arriving in slow pieces is still masked.

Limits: detection is textual. Output with ANSI colour codes (or any other bytes) inside a
secret, a secret split over two lines (wrapped by the program, or split by ``fold``), or one
encoded (base64, hex, JSON escapes) is not seen. A partial line longer than 64 KiB is released
at that size: a secret straddling the cut is missed. Masks change the length of a line, so
column alignment in a terminal can shift.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from policy.detectors import DetectorSet
from policy.masking import REDACTED, Scan, scrub

__all__ = ["EAGER_MAX", "MAX_PARTIAL", "MAX_KEY_BLOCK", "StreamMasker"]

EAGER_MAX = 64
MAX_PARTIAL = 64 * 1024
MAX_KEY_BLOCK = 256 * 1024

_BEGIN = b"-----BEGIN"
_END = b"-----END"
_PRIVATE_KEY = b"PRIVATE KEY"
_ARMOUR = b"-----"
_MASK = REDACTED.encode("ascii")
_KEY_MATERIAL = re.compile(rb"[A-Za-z0-9+/=]{16,}")
# how much of a line already released is kept as context for its rest
_HEAD_KEEP = 1024
# lines are checked for a possible match (quick_reject) in blocks of about this size
_BLOCK = 2048


def _split_terminator(line: bytes) -> tuple[bytes, bytes]:
    if line.endswith(b"\r\n"):
        return line[:-2], b"\r\n"
    if line.endswith(b"\n"):
        return line[:-1], b"\n"
    return line, b""


def _open_key(data: bytes) -> bool:
    """Whether ``data`` holds a private key BEGIN line with no END after it."""
    begin = data.rfind(_BEGIN)
    return begin >= 0 and data.find(_PRIVATE_KEY, begin) >= 0 and data.find(_END, begin) < 0


class StreamMasker:
    """Masks one output stream, line by line (sans-IO; one per stream)."""

    __slots__ = ("_scans", "_any", "_keys", "_eager", "_buf", "_head", "_block", "_scanned", "_in_key")

    def __init__(self, scans: Sequence[Scan], *, eager: bool = True):
        self._scans = tuple(scans)
        # one set with every detector: its quick_reject is True exactly when every scan's is
        names: set[str] = set()
        for detectors, _masker in self._scans:
            names |= detectors.names
        self._any = DetectorSet(names)
        self._keys = "private_key" in names
        self._eager = eager
        self._buf = bytearray()
        # the start of the current line, already released (early or by a flush), unmasked: the
        # context its rest is scanned with
        self._head = bytearray()
        self._block = False  # the buffer starts with a held private key block
        self._scanned = 0  # bytes of that block already searched for its END line
        self._in_key = False  # past an unfinished key: masking its lines

    @property
    def pending(self) -> bool:
        """Whether bytes are held (the glue arms its quiet-time timer for ``flush``)."""
        return bool(self._buf)

    def feed(self, data: bytes) -> bytes:
        """What of the stream so far can be released now, masked."""
        if not self._any:
            return bytes(data)
        if not data:
            return b""
        buf = self._buf
        buf += data
        out = bytearray()
        done = self._lines(out)
        del buf[:done]
        if not buf:
            return bytes(out)
        if self._block:
            if len(buf) > MAX_KEY_BLOCK:
                out += _MASK + _split_terminator(bytes(buf))[1]
                buf.clear()
                self._block = False
                self._in_key = True
        elif self._in_key:
            if len(buf) > MAX_PARTIAL:
                out += self._key_partial(bytes(buf))
                buf.clear()
        elif len(buf) > MAX_PARTIAL:
            out += self._release(bytes(buf))
            buf.clear()
        elif self._eager and len(data) <= EAGER_MAX and len(buf) <= len(data):
            line_so_far = bytes(self._head + buf)
            if _ARMOUR not in line_so_far and (self._any.quick_reject(line_so_far) or self._settled(line_so_far)):
                out += buf
                self._add_head(buf)
                buf.clear()
        return bytes(out)

    def _settled(self, line: bytes) -> bool:
        """A line no detector matches whose last word cannot be the start of a match either: a
        prompt like ``root@host:~# `` (the ``@`` defeats ``quick_reject``, not ``find``)."""
        # the word still being written (nothing, when the line ends in a space) could grow into a match
        words = line.split()
        tail = b"" if not words or line[-1:].isspace() else words[-1]
        if tail and not self._any.quick_reject(tail):
            return False
        if sum(line.count(d) for d in b"0123456789") >= 8:
            return False  # number detectors work across words (grouped cards, phones): keep holding
        return not self._any.find(line.decode("utf-8", "surrogateescape"))

    def flush(self) -> bytes:
        """Release everything held, masked."""
        if not self._buf:
            return b""
        data = bytes(self._buf)
        self._buf.clear()
        if self._block:
            self._block = False
            masked = self._scrub(data)
            # the rest of the key may still come: mask it when it does
            self._in_key = masked != data
            return masked
        if self._in_key:
            return self._key_partial(data)
        return self._release(data)

    # ---------------------------------------------------------------- internals

    def _lines(self, out: bytearray) -> int:
        """Release the complete lines at the start of the buffer; returns how many bytes went."""
        buf = self._buf
        pos, n = 0, len(buf)
        checked = 0  # the lines before this offset are in a block that may match: one by one
        while pos < n:
            if self._block:
                end = self._block_end(pos)
                if end < 0:
                    break
                out += self._scrub(bytes(buf[pos:end]))
                self._block = False
                pos = end
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if self._in_key:
                line = bytes(buf[pos:nl + 1])
                masked = self._key_line(line)
                if not self._in_key and masked is line:
                    continue  # not key material: the key is over, read the line as usual
                out += masked
                self._head.clear()
                pos = nl + 1
                continue
            if self._head:
                # the rest of a line whose start went out already
                line = bytes(buf[pos:nl + 1])
                out += self._scrub_rest(line)
                if self._keys and _open_key(bytes(self._head) + line):
                    self._in_key = True  # too late to hold the block: mask its lines
                self._head.clear()
                pos = nl + 1
                continue
            if pos >= checked:
                # the usual case: nothing in a block of whole lines can match
                end = max(buf.rfind(b"\n", pos, pos + _BLOCK), nl) + 1
                if self._any.quick_reject(bytes(buf[pos:end])):
                    out += buf[pos:end]
                    pos = end
                    continue
                checked = end
            line = bytes(buf[pos:nl + 1])
            if self._keys and _open_key(line):
                self._block = True
                self._scanned = 0
                continue
            out += self._scrub(line)
            pos = nl + 1
        return pos

    def _block_end(self, start: int) -> int:
        """Where the held key block starting at ``start`` ends (after its END line), or -1."""
        buf = self._buf
        i = start + self._scanned
        if self._scanned == 0:
            i = buf.find(b"\n", start) + 1  # past the BEGIN line
        while True:
            nl = buf.find(b"\n", i)
            if nl < 0:
                self._scanned = i - start
                return -1
            if buf.find(_END, i, nl) >= 0:
                return nl + 1
            i = nl + 1

    def _key_line(self, line: bytes) -> bytes:
        """A line met inside an unfinished key: masked, or ``line`` itself when it ends the state."""
        content, term = _split_terminator(line)
        if _END in content:
            self._in_key = False
            return _MASK + term
        if not content.strip():
            return line
        if _KEY_MATERIAL.search(content):
            return _MASK + term
        self._in_key = False
        return line

    def _key_partial(self, data: bytes) -> bytes:
        masked = self._key_line(data)
        if masked is data and not self._in_key:
            return self._release(data)
        return masked

    def _release(self, data: bytes) -> bytes:
        """A partial line released; an unfinished BEGIN in the line keeps masking what follows."""
        if self._keys and _open_key(bytes(self._head) + data):
            self._in_key = True
        out = self._scrub_rest(data)
        self._add_head(data)
        return out

    def _add_head(self, data: bytes | bytearray) -> None:
        head = self._head
        head += data
        if len(head) > _HEAD_KEEP:
            del head[:-_HEAD_KEEP]

    def _scrub_rest(self, data: bytes) -> bytes:
        """``data`` masked as the rest of the line ``_head`` started.

        A match lying in both is masked from where ``data`` starts; one that needs the head
        as context (an AWS secret after its label) is found too.
        """
        head = bytes(self._head)
        if not head:
            return self._scrub(data)
        content, term = _split_terminator(data)
        if self._any.quick_reject(head + content):
            return data
        head_text = head.decode("utf-8", "surrogateescape")
        text = rest = content.decode("utf-8", "surrogateescape")
        cut = len(head_text)
        for detectors, masker in self._scans:
            spans = [(max(s - cut, 0), e - cut) for s, e, _name in detectors.find(head_text + rest) if e > cut]
            if spans:
                masked = masker.spans(rest, spans)
                if masked is None:
                    return _MASK + term
                rest = masked
        final = scrub(rest, self._scans)
        if final is text:
            return data
        if final is None:
            final = REDACTED
        return final.encode("utf-8", "surrogateescape") + term

    def _scrub(self, data: bytes) -> bytes:
        """``data`` (lines, the last one possibly partial) with every match masked."""
        if self._any.quick_reject(data):
            return data
        content, term = _split_terminator(data)
        text = content.decode("utf-8", "surrogateescape")
        masked = scrub(text, self._scans)
        if masked is text:
            return data
        if masked is None:
            masked = REDACTED
        return masked.encode("utf-8", "surrogateescape") + term

"""Mask styles: what a masked value, or a detected part of one, becomes.

=========  ==========================================================================================
style      result
=========  ==========================================================================================
redact     ``****`` (the whole value, or each detector match)
partial    every character but the last four becomes ``*`` (``************1111``); a value of four
           characters or fewer becomes ``****``
hash       ``hash:`` + the first 16 hex digits of HMAC-SHA256(key, UTF-8 bytes of the value): the same
           value always gives the same token under one key (joins, ``GROUP BY`` and counts still
           work), the value cannot be recovered from it, and another key gives other tokens
null       SQL NULL; when a detector matches inside a value, the whole value becomes NULL
=========  ==========================================================================================

Mask strings hold only ``*``, ``hash:`` and hex digits: no quote, backslash, comma, tab, brace or
whitespace, so a mask written into a JSON string, an array literal or a COPY row does not change
its syntax (the COPY writer still escapes what the kept part of a value holds).

``scrub(value, scans)`` applies detector masking until no detector matches any more: a partial
mask keeps four characters, which next to other digits could form a new match, so it rescans
(at most ``MAX_PASSES`` times, then the whole value is redacted).

The HMAC key is the gateway's own secret (``load_or_create_key``): whoever holds it can test
guesses against hash tokens, so it never leaves the gateway and is not in the configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import WiregateError
from gateway.keys import install_private_file
from policy.detectors import DetectorSet, Span

__all__ = ["STYLES", "REDACTED", "HASH_PREFIX", "KEY_BYTES", "MAX_PASSES", "Masker", "Scan", "scrub",
           "has_match", "strictest", "load_or_create_key"]

STYLES: tuple[str, ...] = ("redact", "partial", "hash", "null")
REDACTED = "****"
HASH_PREFIX = "hash:"
HASH_HEX_CHARS = 16
KEY_BYTES = 32
MAX_PASSES = 3
# what a style lets the client learn, least first: the strictest style wins when rules stack
_DISCLOSURE = {"null": 0, "redact": 1, "hash": 2, "partial": 3}


class Masker:
    """One style with its HMAC key. Immutable; the key is never shown in its repr."""

    __slots__ = ("style", "_mac")

    def __init__(self, style: str, key: bytes = b""):
        if style not in _DISCLOSURE:
            raise ValueError(f"unknown mask style {style!r}; known: {', '.join(STYLES)}")
        if style == "hash" and len(key) < 16:
            raise ValueError("the hash style needs an HMAC key of at least 16 bytes")
        object.__setattr__(self, "style", style)
        # keyed once; each token copies this state instead of re-deriving the padded key
        object.__setattr__(self, "_mac", hmac.new(key, digestmod=hashlib.sha256) if style == "hash" else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Masker is immutable")

    def __repr__(self) -> str:
        return f"Masker({self.style!r})"

    @property
    def is_null(self) -> bool:
        return self.style == "null"

    def token(self, value: str) -> str:
        """The replacement text for ``value`` (for the null style: the redact mask)."""
        style = self.style
        if style == "partial":
            if len(value) <= 4:
                return REDACTED
            return "*" * (len(value) - 4) + value[-4:]
        if style == "hash":
            mac = self._mac.copy()
            # surrogatepass: a value decoded with surrogateescape still hashes, to its own token
            mac.update(value.encode("utf-8", "surrogatepass"))
            return HASH_PREFIX + mac.hexdigest()[:HASH_HEX_CHARS]
        return REDACTED

    def whole(self, value: str) -> str | None:
        """The mask of a whole value; None means SQL NULL."""
        if self.style == "null":
            return None
        return self.token(value)

    def spans(self, value: str, spans: Sequence[Span] | Sequence[tuple[int, int]]) -> str | None:
        """``value`` with only ``spans`` (sorted, non-overlapping) masked; None means SQL NULL.

        Returns ``value`` itself when ``spans`` is empty.
        """
        if not spans:
            return value
        if self.style == "null":
            return None
        parts: list[str] = []
        pos = 0
        for span in spans:
            s, e = span[0], span[1]
            parts.append(value[pos:s])
            parts.append(self.token(value[s:e]))
            pos = e
        parts.append(value[pos:])
        return "".join(parts)


# a DetectorSet with the masker for its matches (one per mask rule style)
Scan = tuple[DetectorSet, Masker]


def scrub(value: str, scans: Sequence[Scan], context: str = "") -> str | None:
    """``value`` with every detector match masked; None means SQL NULL.

    ``context`` is read in front of ``value`` by the detectors but never masked: a JSON key
    (``"SecretAccessKey": "``) is the label that lets a labelled detector see a secret.
    Returns ``value`` itself (the same object) when nothing matched, so callers can skip
    re-encoding. The result never contains a match of any of the scans.
    """
    n = len(context)
    out = value
    for _ in range(MAX_PASSES):
        changed = False
        for detectors, masker in scans:
            spans = _spans(detectors, out, context, n)
            if spans:
                out = masker.spans(out, spans)
                if out is None:
                    return None
                changed = True
        if not changed:
            return out
    if any(_spans(detectors, out, context, n) for detectors, _ in scans):
        # the masks keep forming new matches with what is kept around them: keep nothing
        return REDACTED
    return out


def _spans(detectors: DetectorSet, value: str, context: str, n: int) -> list:
    if not n:
        return detectors.find(value)
    return [(max(s, n) - n, e - n) for s, e, _ in detectors.find(context + value) if e > n]


def has_match(value: str, scans: Sequence[Scan]) -> bool:
    """Whether any detector of ``scans`` matches in ``value``."""
    return any(detectors.find(value) for detectors, _ in scans)


def strictest(styles: Sequence[str]) -> str:
    """The style disclosing the least, when several mask rules hit one column (null, redact, hash, partial)."""
    if not styles:
        raise ValueError("no styles")
    return min(styles, key=_DISCLOSURE.__getitem__)


# --------------------------------------------------------------------------- the HMAC key


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The HMAC key at ``path`` (32 random bytes, mode 0600), created on first use.

    An existing file is never overwritten: a file that is too short or readable by other users
    is an error for the operator to resolve. Creation is race-safe across processes (written to
    a private temp file, then hard-linked into place), so two gateways starting at once agree.
    """
    path = Path(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    if not install_private_file(path, key, "the masking key"):
        return _read_key(path)  # another gateway created it first: use the same key
    return key


def _read_key(path: Path) -> bytes:
    # FileNotFoundError propagates: the caller creates the key then
    try:
        st = os.stat(path)
        if os.name == "posix" and st.st_mode & 0o077:
            raise WiregateError(f"{path}: the masking key is accessible by other users "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WiregateError(f"{path}: cannot read the masking key: {e.strerror or e}") from None
    if len(data) < KEY_BYTES:
        raise WiregateError(f"{path}: the masking key is {len(data)} bytes, expected {KEY_BYTES}; "
                            "it is not replaced automatically (hash tokens would change): restore it or remove it")
    return data

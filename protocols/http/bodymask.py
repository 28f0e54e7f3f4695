"""Masking HTTP and MCP bodies with the mask rules' detectors and JSON key rules.

``BodyMasker(masks)`` is sans-IO: it takes whole bodies (or decoded JSON values) and returns
them masked. The asyncio glue picks what to buffer with ``masks_media`` and masks with
``mask_body``; an MCP relay that has decoded a JSON-RPC message itself calls ``mask_value``.

JSON (``mask_json``, ``mask_value``):

* every string value anywhere is scrubbed by the detectors (``policy.masking.scrub``); a string
  that is the value of an object member is scanned with its key in front, as the text
  ``"key": "value"``, so the labelled detectors (``"SecretAccessKey": "..."``,
  ``"Authorization": "Bearer ..."``) see their label; only the value is masked. With the null
  style a detector match makes the whole value JSON null, as it makes a SQL value NULL.
* a number whose text holds a detector match (a card number sent as a JSON number) becomes
  null: a number cannot hold a mask string, as a masked non-text SQL column becomes NULL.
* object keys are scrubbed by the detectors too: maps keyed by user (``{"alice@x.com": ...}``)
  are common, and a key is as visible as a value. A key cannot be null, so the null style
  gives the ``****`` mask there. Masked keys that collide with another key of the same object
  get a suffix (``****#2``, ``****#3``...): no member is dropped and the object stays valid.
  Keys that were not masked keep their names.
* a value under an object key matched by ``MaskSet.json_key`` (the rule's ``keys`` globs, any
  depth, case-insensitive) is masked whole: a string becomes the masker's token (the null style
  gives null), numbers and booleans become null, null stays null; inside an object or array
  under such a key every scalar is masked the same way (keys stay, scrubbed by the detectors
  only). Nested under two key rules, the stricter style of the two wins.
* a string that itself holds JSON (after optional whitespace it starts with ``{`` or ``[`` and
  parses) is masked as JSON, recursively, and re-serialized compactly only when something in it
  changed: MCP tools return rows as JSON text inside ``content[].text``, and key rules must
  reach them. A string that does not parse is scrubbed as text.
* when nothing changed, ``mask_json`` returns the body itself and ``mask_value`` the value
  itself (the same objects). Otherwise the body is re-encoded compactly (msgspec): integers of
  any size stay exact and floats keep their exact text (they are carried as ``msgspec.Raw``).
* duplicate keys: the last one wins, as in JavaScript and Python. A body holding duplicates is
  always re-encoded, so an earlier duplicate, which some parsers would pick, never passes
  unmasked (it is detected by counting the members the text declares, which costs a scan only
  when the body holds colons inside strings).
* refused (``None``: the caller refuses the body): invalid JSON, invalid UTF-8, a ``\\uD800``
  lone surrogate escape (msgspec cannot decode it), and nesting deeper than ``MAX_DEPTH``
  (256) containers, counting those of JSON held in strings. ``mask_value`` raises
  ``BodyTooDeep`` (a ValueError) instead, since None is a JSON value.

Fast path: with no key rules, a body that no detector can match (``DetectorSet.quick_reject``
on the raw bytes) is only validated (msgspec's ``Raw`` decoder, about 1 GB/s, plus UTF-8),
never decoded into objects, and returned as it is. ``quick_reject`` is sound on raw JSON only
when it holds no ``\\u`` escape (``\\u0040`` is an ``@`` its byte checks would not see); the
other escapes only take characters away. With key rules the body is decoded and walked, but
detectors are skipped when ``quick_reject`` says none can match. Otherwise the detectors run
once per JSON document over all its strings, keys and long numbers joined (see ``_Walk``), and
only the values that hold a match are scrubbed one by one. The depth limit applies where
a body is walked: a deep body that the fast path only validates passes.

Other media types (``mask_body``, by media type, parameters and case ignored):

* ``application/json``, ``*/*+json`` (and ``text/json``): ``mask_json``; a ``charset`` other
  than UTF-8 is transcoded there and back. A UTF-8 byte order mark is kept.
* ``application/x-ndjson``, ``application/ndjson``, ``application/jsonl`` (``x-jsonl``,
  ``jsonlines``) and ``application/json-seq``: each line is a JSON text (a leading RS byte of
  json-seq is kept); blank lines pass; one invalid line refuses the body.
* ``text/*``, ``*/*+xml`` (SVG too) and textual application types (XML, JavaScript, YAML,
  GraphQL, SQL, form data):
  ``mask_text`` (detectors only; the null style gives ``****`` for each match, as the text has
  no value to null). ``charset`` is honoured (default UTF-8); an unknown charset or bytes it
  cannot decode refuse the body (with key rules only, text is not looked at). ``text/event-stream`` is masked as text here: key rules do
  not reach the JSON in its events, which the glue masks event by event with ``mask_json``.
* no Content-Type at all: the body is sniffed: JSON when it parses as JSON (and refused as
  JSON is), else text when it is UTF-8, else passed as it is.
* anything else (images, ``application/octet-stream``, archives, multipart...) passes as it is.

Limits: detection is textual, per string value (with its key) or per line of text: a secret
split over several JSON strings, base64- or percent-encoded (form data), or compressed is not
seen; bodies must arrive decoded (no ``Content-Encoding``), which is the glue's job.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import islice
from typing import Any

import msgspec

from policy.detectors import DetectorSet
from policy.masking import REDACTED, Masker, Scan, scrub, strictest
from policy.maskrules import MaskSet

__all__ = ["MAX_DEPTH", "BodyMasker", "BodyTooDeep", "media_type"]

MAX_DEPTH = 256

# floats as their exact text: re-encoding never rounds, and 1e400 does not fail
_DECODER = msgspec.json.Decoder(float_hook=msgspec.Raw)
# validates syntax without building objects (the fast path)
_VALIDATOR = msgspec.json.Decoder(msgspec.Raw)
_ENCODER = msgspec.json.Encoder()

_JSON_START = re.compile(r"[ \t\n\r]*[\[{]")
_JSON_START_B = re.compile(rb"[ \t\n\r]*[\[{]")
# a JSON string literal (unrolled loop: no per-character alternation)
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BOM = b"\xef\xbb\xbf"
# a number's text shorter than this holds no detector match (the digit detectors need 8 digits)
_NUMBER_MIN = 8
_INT_SCAN = 10 ** (_NUMBER_MIN - 1)
_LABELLED = frozenset({"aws_key", "bearer_token"})

_NDJSON = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonl",
                     "application/jsonlines", "application/x-jsonlines", "application/json-seq"})
_TEXTUAL = frozenset({"application/xml", "application/javascript", "application/x-javascript",
                      "application/ecmascript", "application/yaml", "application/x-yaml", "application/graphql",
                      "application/sql", "application/x-www-form-urlencoded"})
_JSON, _LINES, _TEXT, _SNIFF, _OPAQUE = range(5)


class BodyTooDeep(ValueError):
    """A JSON value nested deeper than ``MAX_DEPTH`` containers: it is not masked."""


class _Malformed(Exception):
    """Inside JSON held in a string: cannot be masked (raised up to ``mask_json``)."""


def media_type(content_type: bytes | None) -> str:
    """``b"Application/JSON; charset=utf-8"`` -> ``"application/json"``; ``""`` when absent."""
    if not content_type:
        return ""
    return content_type.split(b";", 1)[0].strip().decode("latin-1").lower()


def _charset(content_type: bytes | None) -> str | None:
    """The ``charset`` parameter, unquoted; None when absent."""
    if not content_type:
        return None
    for param in content_type.split(b";")[1:]:
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"charset":
            return value.strip().strip(b'"').decode("latin-1").strip() or None
    return None


def _kind(mt: str) -> int:
    if not mt:
        return _SNIFF
    top, _, sub = mt.partition("/")
    if sub == "json" or sub.endswith("+json"):
        return _JSON
    if mt in _NDJSON:
        return _LINES
    if top == "text" or mt in _TEXTUAL or sub.endswith("+xml"):
        return _TEXT
    return _OPAQUE


def _ascii_compatible(codec: str) -> bool:
    """Whether every ASCII character is its own byte in this (Python codec name) encoding."""
    return codec in ("utf-8", "ascii") or codec.startswith(("iso8859-", "cp125", "latin", "koi8-", "mac-"))


def _duplicates(data: bytes, members: int) -> bool:
    """Whether the JSON text ``data`` declares more object members than the ``members`` decoded."""
    colons = data.count(b":")
    if colons == members:
        return False  # no colon in any string: every colon is a member
    return _STRING_LITERAL.sub(b"", data).count(b":") != members


def _number_text(v: int | float | msgspec.Raw) -> str | None:
    """A number's text when it is long enough to hold a detector match."""
    if isinstance(v, int):
        return str(v) if v >= _INT_SCAN or v <= -_INT_SCAN else None
    if isinstance(v, float):
        return repr(v)
    return bytes(v).decode("ascii") if len(v) >= _NUMBER_MIN else None


def _stricter(a: Masker | None, b: Masker | None) -> Masker | None:
    if a is None:
        return b
    if b is None or a is b:
        return a
    return a if strictest([a.style, b.style]) == a.style else b


class _Walk:
    """One masking pass over a decoded JSON value (counts members for the duplicate check).

    Detectors run in two steps per JSON document (the body, or JSON held in a string): every
    string, key and long number of the document, joined with NUL, goes through one ``find`` of
    all the rules' detectors at once, which names the pieces that hold a match (``dirty``); the
    walk then scrubs only those. One regex pass over the whole text instead of a ``find`` per
    value: a body of many short values, most of them clean, costs a fraction. NUL breaks every
    detector's pattern and satisfies every look-behind, so what matches in a piece alone also
    matches among the others; context can only add matches (a PEM block running on, an
    ``Authorization`` label before a ``Bearer`` piece), and an added match only costs a scrub.
    """

    __slots__ = ("masks", "keys", "scans", "text_scans", "labelled", "union", "members", "dirty", "escaped")

    def __init__(self, masks: MaskSet, scans: Sequence[Scan], text_scans: Sequence[Scan], labelled: bool,
                 union: DetectorSet | None):
        self.masks = masks
        self.keys = masks.has_keys
        self.scans = scans
        self.text_scans = text_scans if scans else ()
        self.labelled = labelled and bool(scans)
        self.union = union if scans else None
        self.members = 0
        # pieces of the current document that hold a detector match
        self.dirty: set[str] = set()
        # the document holds JSON text with \u escapes in a string: its pieces do not show it all
        self.escaped = False

    def document(self, v: Any, depth: int) -> Any:
        """``v`` masked: a whole JSON document (a body, or JSON held in a string)."""
        saved = self.dirty
        if self.union is not None:
            pieces: list[str] = []
            names: list[str] = []
            self.escaped = False
            self.collect(v, depth, "", pieces, names)
            self.dirty = self.matching(pieces, names)
            if not self.dirty and not self.keys and not self.escaped:
                self.dirty = saved
                return v  # nothing to mask: no need to walk it
        try:
            return self.value(v, depth, None, "")
        finally:
            self.dirty = saved

    def collect(self, v: Any, depth: int, label: str, pieces: list[str], names: list[str]) -> None:
        """The texts the detectors must see in ``v`` (``pieces``) and what each belongs to (``names``).

        Plain strings and short numbers inside containers are handled in line: bodies are mostly
        those, and a call per value would cost more than the detectors do.
        """
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                raise BodyTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
            self.members += len(v)
            plain = not self.labelled
            for k, x in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"not a decoded JSON object key: {type(k).__name__}")
                pieces.append(k)
                names.append(k)
                tx = type(x)
                if tx is str and plain and "\\u" not in x:
                    pieces.append(x)
                    names.append(x)
                elif not ((tx is int and -_INT_SCAN < x < _INT_SCAN) or x is None or tx is bool):
                    self.collect(x, depth + 1, k, pieces, names)
        elif isinstance(v, list):
            if depth >= MAX_DEPTH:
                raise BodyTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
            plain = not (label and self.labelled)
            for x in v:
                tx = type(x)
                if tx is str and plain and "\\u" not in x:
                    pieces.append(x)
                    names.append(x)
                elif not ((tx is int and -_INT_SCAN < x < _INT_SCAN) or x is None or tx is bool):
                    self.collect(x, depth + 1, label, pieces, names)
        elif isinstance(v, str):
            pieces.append(f'"{label}": "{v}' if label and self.labelled else v)
            names.append(v)
            if "\\u" in v and _JSON_START.match(v):
                self.escaped = True
        elif v is None or isinstance(v, bool):
            pass
        elif isinstance(v, (int, float, msgspec.Raw)):
            text = _number_text(v)
            if text is not None:
                pieces.append(text)
                names.append(text)
        else:
            raise TypeError(f"not a decoded JSON value: {type(v).__name__}")

    def matching(self, pieces: list[str], names: list[str]) -> set[str]:
        assert self.union is not None
        spans = self.union.find("\x00".join(pieces))
        if not spans:
            return set()
        starts: list[int] = []
        pos = 0
        for piece in pieces:
            starts.append(pos)
            pos += len(piece) + 1
        dirty: set[str] = set()
        for s, e, _ in spans:
            i = bisect_right(starts, s) - 1
            while i < len(starts) and starts[i] < e:
                dirty.add(names[i])
                i += 1
        return dirty

    def value(self, v: Any, depth: int, whole: Masker | None, label: str) -> Any:
        if isinstance(v, str):
            if whole is not None:
                return whole.whole(v)
            return self.string(v, depth, label)
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                raise BodyTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
            return self.object(v, depth + 1, whole)
        if isinstance(v, list):
            if depth >= MAX_DEPTH:
                raise BodyTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
            return self.array(v, depth + 1, whole, label)
        if v is None:
            return None
        if isinstance(v, bool):
            return None if whole is not None else v
        if isinstance(v, (int, float, msgspec.Raw)):
            if whole is not None:
                return None
            if self.scans:
                text = _number_text(v)
                if text is not None and text in self.dirty and any(d.find(text) for d, _ in self.scans):
                    return None
            return v
        raise TypeError(f"not a decoded JSON value: {type(v).__name__}")

    def object(self, obj: dict[str, Any], depth: int, whole: Masker | None) -> dict[str, Any]:
        if self.union is None:
            self.members += len(obj)  # else counted by collect
        keys = self.keys
        out: list[tuple[str, Any, bool]] | None = None
        for i, (k, val) in enumerate(obj.items()):
            if not isinstance(k, str):
                raise TypeError(f"not a decoded JSON object key: {type(k).__name__}")
            nk = self.key(k)
            w = _stricter(whole, self.masks.json_key(k)) if keys else whole
            nv = self.value(val, depth, w, k)
            if out is None:
                if nk is k and nv is val:
                    continue
                out = [(kk, vv, False) for kk, vv in islice(obj.items(), i)]
            out.append((nk, nv, nk is not k))
        if out is None:
            return obj
        if not any(renamed for _, _, renamed in out):
            return {k: v for k, v, _ in out}
        # unmasked keys keep their names; masked ones take a free name
        taken = {k for k, _, renamed in out if not renamed}
        result: dict[str, Any] = {}
        for k, v, renamed in out:
            if renamed:
                base, n = k, 2
                while k in taken or k in result:
                    k = f"{base}#{n}"
                    n += 1
            result[k] = v
        return result

    def array(self, arr: list[Any], depth: int, whole: Masker | None, label: str) -> list[Any]:
        out: list[Any] | None = None
        for i, item in enumerate(arr):
            new = self.value(item, depth, whole, label)
            if out is None:
                if new is item:
                    continue
                out = arr[:i]
            out.append(new)
        return arr if out is None else out

    def key(self, k: str) -> str:
        if not self.text_scans or k not in self.dirty:
            return k
        masked = scrub(k, self.text_scans)
        return REDACTED if masked is None else masked

    def string(self, s: str, depth: int, label: str) -> str | None:
        if _JSON_START.match(s):
            nested = self.nested(s, depth)
            if nested is not None:
                return nested
        if not self.scans or s not in self.dirty:
            return s
        if label and self.labelled:
            return self.scrub_labelled(s, label)
        return scrub(s, self.scans)

    def nested(self, s: str, depth: int) -> str | None:
        """``s`` masked as the JSON it holds; None when it is not JSON."""
        # nothing to find in it: its text held no match, and without \u escapes its strings
        # hold no character its text does not show
        if not self.keys and s not in self.dirty and "\\u" not in s:
            return s
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError:
            return None  # lone surrogates: not from JSON text; scrubbed as text
        try:
            v = _DECODER.decode(data)
        except RecursionError:
            raise BodyTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        except (msgspec.DecodeError, ValueError):
            return None
        saved, self.members = self.members, 0
        out = self.document(v, depth)
        members, self.members = self.members, saved
        if out is v and not _duplicates(data, members):
            return s
        try:
            return _ENCODER.encode(out).decode("utf-8")
        except (TypeError, ValueError, msgspec.EncodeError) as e:
            raise _Malformed(str(e)) from None

    def scrub_labelled(self, value: str, label: str) -> str | None:
        """``scrub`` with ``"label": "`` in front as context: only spans in ``value`` are masked."""
        return scrub(value, self.scans, f'"{label}": "')


class BodyMasker:
    """The mask rules of one session, applied to HTTP bodies. Immutable; shareable."""

    __slots__ = ("masks", "active", "_scans", "_text_scans", "_labelled", "_union")

    def __init__(self, masks: MaskSet):
        self.masks = masks
        self._scans: tuple[Scan, ...] = masks.scans
        # text has no value to null: the null style masks each match like redact does
        self._text_scans: tuple[Scan, ...] = tuple((d, Masker("redact") if m.is_null else m) for d, m in self._scans)
        self._labelled = any(d.names & _LABELLED for d, _ in self._scans)
        # one byte pre-check for all rules' detectors
        self._union = DetectorSet(set().union(*(d.names for d, _ in self._scans))) if self._scans else None
        self.active = bool(self._scans) or masks.has_keys

    # ------------------------------------------------------------------ JSON

    def mask_value(self, value: Any) -> Any:
        """A decoded JSON value, masked; the same object when nothing changed.

        Raises BodyTooDeep past ``MAX_DEPTH`` and TypeError for a value JSON cannot hold.
        """
        if not self.active:
            return value
        try:
            return self._walk(self._scans).document(value, 0)
        except _Malformed as e:
            raise ValueError(f"cannot mask JSON held in a string: {e}") from None

    def mask_json(self, body: bytes) -> bytes | None:
        """A JSON body, masked; ``body`` itself when nothing changed; None when it cannot be masked."""
        if not self.active:
            return body
        return self._mask_json(body, self._possible_scans(body))

    def _possible_scans(self, data: bytes) -> tuple[Scan, ...]:
        """The scans, or () when no detector can match the raw JSON ``data``."""
        if self._union is None or (b"\\u" not in data and self._union.quick_reject(data)):
            return ()
        return self._scans

    def _walk(self, scans: tuple[Scan, ...]) -> _Walk:
        return _Walk(self.masks, scans, self._text_scans, self._labelled, self._union)

    def _mask_json(self, body: bytes, scans: tuple[Scan, ...]) -> bytes | None:
        if body.startswith(_BOM):
            rest = body[len(_BOM):]
            inner = self._mask_json(rest, scans)
            if inner is None or inner is rest:
                return None if inner is None else body
            return _BOM + inner
        if not scans and not self.masks.has_keys:
            # nothing to mask: only refuse what is not JSON
            try:
                _VALIDATOR.decode(body)
                if not body.isascii():
                    body.decode("utf-8")
            except (msgspec.DecodeError, ValueError, RecursionError):
                return None
            return body
        try:
            value = _DECODER.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):
            return None
        walk = self._walk(scans)
        try:
            out = walk.document(value, 0)
        except (BodyTooDeep, _Malformed):
            return None
        if out is value and not _duplicates(body, walk.members):
            return body
        try:
            return _ENCODER.encode(out)
        except (TypeError, ValueError, msgspec.EncodeError):
            return None

    # ------------------------------------------------------------------ text

    def mask_text(self, text: str) -> str:
        """``text`` with every detector match masked; ``text`` itself when none matched."""
        if not self._text_scans:
            return text
        out = scrub(text, self._text_scans)
        return REDACTED if out is None else out  # (no null masker among the text scans)

    def _mask_text_bytes(self, body: bytes, charset: str | None) -> bytes | None:
        try:
            codec = codecs.lookup(charset or "utf-8").name
            text = body.decode(codec)
        except (LookupError, ValueError):
            return None
        if not self._scans or (_ascii_compatible(codec) and self._union.quick_reject(body)):
            return body
        out = self.mask_text(text)
        if out is text:
            return body
        try:
            return out.encode(codec)
        except ValueError:
            return None

    # ------------------------------------------------------------------ bodies

    def masks_media(self, content_type: bytes | None) -> bool:
        """Whether ``mask_body`` looks inside bodies of this type (False when it has nothing to
        mask there: no rule, or text with key rules only)."""
        kind = _kind(media_type(content_type))
        if kind == _TEXT:
            return bool(self._scans)
        return self.active and kind != _OPAQUE

    def mask_body(self, content_type: bytes | None, body: bytes) -> bytes | None:
        """``body`` masked by its media type; ``body`` itself when nothing changed; None: cannot mask."""
        if not self.active:
            return body
        kind = _kind(media_type(content_type))
        if kind == _OPAQUE:
            return body
        if kind == _TEXT:
            return self._mask_text_bytes(body, _charset(content_type)) if self._scans else body
        if kind == _JSON:
            return self._mask_json_charset(body, _charset(content_type))
        if kind == _LINES:
            return self._mask_lines(body)
        # no Content-Type: what the body looks like
        if _JSON_START_B.match(body):
            try:
                _VALIDATOR.decode(body)
            except (msgspec.DecodeError, RecursionError):
                pass
            else:
                return self.mask_json(body)
        if not self._scans:
            return body
        try:
            body.decode("utf-8")
        except ValueError:
            return body  # binary
        return self._mask_text_bytes(body, None)

    def _mask_json_charset(self, body: bytes, charset: str | None) -> bytes | None:
        if charset is None:
            return self.mask_json(body)
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            return None
        if codec in ("utf-8", "ascii"):
            return self.mask_json(body)
        try:
            utf8 = body.decode(codec).encode("utf-8")
        except ValueError:
            return None
        out = self.mask_json(utf8)
        if out is None or out is utf8:
            return None if out is None else body
        try:
            return out.decode("utf-8").encode(codec)
        except ValueError:
            return None

    def _mask_lines(self, body: bytes) -> bytes | None:
        scans = self._possible_scans(body)
        lines = body.split(b"\n")
        changed = False
        for i, line in enumerate(lines):
            # a json-seq record starts with RS; a CRLF line ends with CR: both stay as they are
            start = 1 if line.startswith(b"\x1e") else 0
            end = len(line) - 1 if line.endswith(b"\r") else len(line)
            text = line[start:end]
            if not text.strip():
                continue
            out = self._mask_json(text, scans)
            if out is None:
                return None
            if out is not text:
                lines[i] = line[:start] + out + line[end:]
                changed = True
        return b"\n".join(lines) if changed else body

"""Masking result rows on the wire: DataRow bodies and ``COPY ... TO STDOUT`` payloads.

Sans-IO: the relay hands over a message body and a per-column plan, and gets back the body to
forward, with every length recomputed. A plan entry is None (the column passes byte for byte) or
a ``ColumnMask``: a whole-column mask (a ``columns`` rule hit), detector scans, or both.

The column keeps its type:

* **text-like** types (text, varchar, bpchar, name, "char", unknown, and whatever the caller's
  ``TypeCatalog`` adds, e.g. citext or a domain over text): a whole-column mask writes the mask
  string; detectors rewrite only their matches. Text and binary formats carry the same bytes
  (text in the client encoding), so both are handled alike.
* **every other type** becomes NULL when the column is masked, or when a detector matches in
  its text. Text format: the text PostgreSQL sent is scanned. Binary format: int8, numeric,
  json, jsonb, jsonpath, xml, bytea, records and arrays (any dimension) of those are decoded to
  text and scanned; bytea is scanned as its raw bytes (as Latin-1, so every ASCII byte is seen).
* types that **cannot hold text** (``NO_TEXT_OIDS``: bool, int2/int4, floats, money, dates,
  times, intervals, uuid, network, geometric, bit strings, oid and reg* types, ranges of
  those...) are never scanned, in either format; a whole-column mask still makes them NULL.
* a binary value of a type this module cannot decode (hstore, tsvector, ranges of int8 or
  numeric, enums, composites the catalog does not name...) is **NULL** whenever detectors are
  active: it could hold text that cannot be checked, so it is not passed unchecked.

Text values are decoded with ``surrogateescape``: bytes that are not valid in the client
encoding survive a rewrite unchanged and never make masking fail.

COPY: ``copy_format(options)`` reads the options of a pglast ``CopyStmt``; ``CopyRewriter``
rewrites the CopyData payloads of one ``COPY ... TO STDOUT`` in order (text, CSV and binary;
the header line and the binary signature pass untouched). PostgreSQL sends one row per CopyData
message; a payload holding several whole rows is handled too, a row cut across payloads is a
``ProtocolViolation``.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from policy.masking import REDACTED, Masker, Scan, has_match, scrub
from protocols.postgres.codec import I16, I32, ProtocolViolation, split_cstr

__all__ = [
    "TEXT_LIKE_OIDS", "NO_TEXT_OIDS", "BUILTIN_ARRAYS", "TypeCatalog", "BUILTIN_TYPES", "Field",
    "ColumnMask", "RowPlan", "parse_row_description", "mask_value", "mask_data_row",
    "CopyFormat", "copy_format", "CopyRewriter", "COPY_SIGNATURE",
]

# ----------------------------------------------------------------------------- type OIDs

TEXT_LIKE_OIDS: frozenset[int] = frozenset({25, 1043, 1042, 19, 18, 705})

_INT8, _NUMERIC, _BYTEA, _JSON, _JSONB, _XML, _JSONPATH, _RECORD = 20, 1700, 17, 114, 3802, 142, 4072, 2249

# values of these types cannot carry text a detector could find (numbers too short or printed with
# exponents or grouping, timestamps, addresses, identifiers from the catalog), in either format
NO_TEXT_OIDS: frozenset[int] = frozenset({
    16,                                   # bool
    21, 23, 26, 27, 28, 29, 5069, 22, 30,  # int2 int4 oid tid xid cid xid8 int2vector oidvector
    700, 701, 790,                        # float4 float8 money
    1082, 1083, 1266, 1114, 1184, 1186,   # date time timetz timestamp timestamptz interval
    2950, 869, 650, 829, 774,             # uuid inet cidr macaddr macaddr8
    600, 601, 602, 603, 604, 628, 718,    # point lseg path box polygon line circle
    1560, 1562, 3220, 2970, 5038,         # bit varbit pg_lsn txid_snapshot pg_snapshot
    3904, 3912, 3908, 3910,               # int4range daterange tsrange tstzrange
    4451, 4535, 4533, 4534,               # and their multiranges
    24, 2202, 2203, 2204, 2205, 2206, 4096, 4089, 3734, 3769, 4191,  # reg* (an oid in binary)
})

# array type OID -> element type OID, for the built-in types
BUILTIN_ARRAYS: Mapping[int, int] = MappingProxyType({
    1000: 16, 1001: 17, 1002: 18, 1003: 19, 1005: 21, 1006: 22, 1007: 23, 1008: 24, 1009: 25, 1010: 27,
    1011: 28, 1012: 29, 1013: 30, 1014: 1042, 1015: 1043, 1016: 20, 1017: 600, 1018: 601, 1019: 602,
    1020: 603, 1021: 700, 1022: 701, 1027: 604, 1028: 26, 1040: 829, 1041: 869, 1115: 1114, 1182: 1082,
    1183: 1083, 1185: 1184, 1187: 1186, 1231: 1700, 1270: 1266, 1561: 1560, 1563: 1562, 143: 142,
    199: 114, 271: 5069, 629: 628, 651: 650, 719: 718, 775: 774, 791: 790, 2207: 2202, 2208: 2203,
    2209: 2204, 2210: 2205, 2211: 2206, 2287: 2249, 2951: 2950, 3221: 3220, 3807: 3802, 4073: 4072,
    4090: 4089, 4097: 4096, 3735: 3734, 3770: 3769, 4192: 4191, 3905: 3904, 3913: 3912, 3909: 3908,
    3911: 3910, 2949: 2970, 5039: 5038, 6150: 4451, 6155: 4535, 6152: 4533, 6153: 4534,
})


class TypeCatalog(msgspec.Struct, frozen=True):
    """What the masking layer knows about type OIDs beyond the built-ins (from the catalog).

    ``text_like``: types whose values are client-encoded text in both formats (add citext and
    domains over text). ``arrays``: array type -> element type (add arrays of those).
    ``composites``: composite (row) types, whose binary form describes its own fields.
    Domains should be given to ``ColumnMask`` as their base type.
    """

    text_like: frozenset[int] = TEXT_LIKE_OIDS
    arrays: Mapping[int, int] = BUILTIN_ARRAYS
    composites: frozenset[int] = frozenset({_RECORD})


BUILTIN_TYPES = TypeCatalog()


class Field(msgspec.Struct, frozen=True):
    """One column of a RowDescription."""

    name: str
    table_oid: int
    attnum: int
    type_oid: int
    type_size: int
    typmod: int
    format: int


_FIELD_TAIL = struct.Struct("!IhIhih")


def parse_row_description(body: bytes, encoding: str = "utf-8") -> list[Field]:
    """The fields of a RowDescription body (names decoded from the client encoding)."""
    try:
        count = I16.unpack_from(body, 0)[0]
        pos = 2
        fields = []
        for _ in range(count):
            raw_name, pos = split_cstr(body, pos)
            table_oid, attnum, type_oid, size, typmod, fmt = _FIELD_TAIL.unpack_from(body, pos)
            pos += _FIELD_TAIL.size
            fields.append(Field(raw_name.decode(encoding, "replace"), table_oid, attnum, type_oid, size, typmod, fmt))
    except struct.error:
        raise ProtocolViolation("RowDescription is truncated") from None
    if count < 0 or pos != len(body):
        raise ProtocolViolation("RowDescription has a wrong length")
    return fields


# ----------------------------------------------------------------------------- one value


def _ascii_compatible(encoding: str) -> bool:
    """Whether ASCII text is the same bytes in ``encoding`` (true of every PostgreSQL client encoding)."""
    ascii_ = bytes(range(128))
    try:
        return ascii_.decode(encoding) == ascii_.decode("ascii") and "@".encode(encoding) == b"@"
    except (UnicodeError, LookupError):
        return False


# how a column is handled, decided once per ColumnMask
_TEXT, _NO_TEXT, _OTHER = 0, 1, 2


class ColumnMask:
    """How to mask one result column. Immutable; build one per column of a result.

    ``whole``: the masker of a ``columns`` rule hit (the strictest when several hit), or None.
    ``scans``: (DetectorSet, Masker) pairs of the detector rules that apply (one pair per style).
    ``type_oid`` and ``format`` come from the RowDescription (or the Bind result formats),
    ``encoding`` is the Python codec of the client encoding (for COPY: of the COPY's encoding).
    ``text_like`` overrides the catalog's verdict for this column.
    """

    __slots__ = ("type_oid", "format", "encoding", "whole", "scans", "types", "kind", "text_like", "_quick",
                 "constant")

    def __init__(self, type_oid: int, format: int = 0, *, whole: Masker | None = None, scans: Sequence[Scan] = (),
                 encoding: str = "utf-8", text_like: bool | None = None, types: TypeCatalog = BUILTIN_TYPES):
        if format not in (0, 1):
            raise ValueError(f"unknown format code {format}")
        scans = tuple((d, m) for d, m in scans if d)
        text_like = type_oid in types.text_like if text_like is None else text_like
        set_ = object.__setattr__
        set_(self, "type_oid", type_oid)
        set_(self, "format", format)
        set_(self, "encoding", encoding)
        set_(self, "whole", whole)
        set_(self, "scans", scans)
        set_(self, "types", types)
        set_(self, "text_like", text_like)
        set_(self, "kind", _TEXT if text_like else _NO_TEXT if type_oid in NO_TEXT_OIDS else _OTHER)
        # a whole-column redact writes the same bytes for every value: encode them once
        set_(self, "constant", REDACTED.encode(encoding) if whole is not None and whole.style == "redact" else None)
        quick: Callable[[bytes], bool] | None = None
        if scans and _ascii_compatible(encoding):
            if len(scans) == 1:
                quick = scans[0][0].quick_reject
            else:
                rejects = tuple(d.quick_reject for d, _ in scans)
                quick = lambda data: all(r(data) for r in rejects)  # noqa: E731
        set_(self, "_quick", quick)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ColumnMask is immutable")

    def __repr__(self) -> str:
        return (f"ColumnMask(type_oid={self.type_oid}, format={self.format}, whole={self.whole!r}, "
                f"scans={[sorted(d.names) for d, _ in self.scans]!r}, text_like={self.text_like})")

    @property
    def active(self) -> bool:
        return self.whole is not None or bool(self.scans)

    def could_match(self, data: bytes) -> bool:
        """False when no detector can match the client-encoded text ``data`` (the cheap pre-check)."""
        quick = self._quick
        return quick is None or not quick(data)


def mask_value(cm: ColumnMask, raw: bytes, binary: bool) -> bytes | None:
    """The masked form of one non-NULL value; None means NULL.

    Returns ``raw`` itself (the same object) when the value passes unchanged.
    """
    if cm.whole is not None:
        if cm.kind != _TEXT:
            return None
        if cm.constant is not None:
            return cm.constant
        text = raw.decode(cm.encoding, "surrogateescape")
        return _encode(cm, cm.whole.whole(text))
    if not cm.scans or cm.kind == _NO_TEXT:
        return raw
    if cm.kind == _TEXT:
        if not cm.could_match(raw):
            return raw
        text = raw.decode(cm.encoding, "surrogateescape")
        out = scrub(text, cm.scans)
        if out is text:
            return raw
        return _encode(cm, out)
    # not text-like: the whole value goes when a detector matches in its text
    oid = cm.type_oid
    if oid == _BYTEA:
        data = raw if binary else _bytea_from_text(raw)
        if data is None:
            return None
        if not cm.could_match(data):
            return raw
        return None if has_match(data.decode("latin-1"), cm.scans) else raw
    if not binary:
        if not cm.could_match(raw):
            return raw
        return None if has_match(raw.decode(cm.encoding, "surrogateescape"), cm.scans) else raw
    if oid == _JSON or oid == _XML or ((oid == _JSONB or oid == _JSONPATH) and raw[:1] == b"\x01"):
        # client-encoded text (after a version byte, which no pre-check looks for)
        if not cm.could_match(raw):
            return raw
    text = _binary_text(oid, raw, cm.encoding, cm.types, 0)
    if text is None:
        return None
    if not text:
        return raw
    return None if has_match(text, cm.scans) else raw


def _encode(cm: ColumnMask, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return text.encode(cm.encoding, "surrogateescape")
    except UnicodeError:
        # a kept character the encoding cannot hold (cannot happen for text that came from it)
        return REDACTED.encode("ascii")


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-7]{3})")


def _bytea_from_text(raw: bytes) -> bytes | None:
    """The bytes of a bytea in text format (hex ``\\x...`` or the old escape format)."""
    if raw[:2] == b"\\x":
        try:
            return bytes.fromhex(raw[2:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    if b"\\" not in raw:
        return raw
    return _BYTEA_ESCAPE.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1), 8) & 0xFF]), raw)


_NUMERIC_HEAD = struct.Struct("!hhHh")
_I64 = struct.Struct("!q")
# nesting deeper than this (arrays of records of arrays...) is refused rather than recursed into
_MAX_DEPTH = 16


def _binary_text(oid: int, raw: bytes, encoding: str, types: TypeCatalog, depth: int) -> str | None:
    """The text of a binary value for detector scanning; "" when it cannot hold text, None when unknown."""
    try:
        if oid in types.text_like or oid == _JSON or oid == _XML:
            return raw.decode(encoding, "surrogateescape")
        if oid in NO_TEXT_OIDS:
            return ""
        if oid == _INT8:
            return str(_I64.unpack(raw)[0])
        if oid == _NUMERIC:
            return _numeric_text(raw)
        if oid == _JSONB or oid == _JSONPATH:
            return raw[1:].decode(encoding, "surrogateescape") if raw[:1] == b"\x01" else None
        if oid == _BYTEA:
            return raw.decode("latin-1")
        if depth >= _MAX_DEPTH:
            return None
        if oid in types.arrays:
            return _array_text(raw, encoding, types, depth)
        if oid in types.composites:
            return _record_text(raw, encoding, types, depth)
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _numeric_text(raw: bytes) -> str | None:
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(raw, 0)
    if sign not in (0x0000, 0x4000):
        # NaN, Infinity, -Infinity
        return "NaN"
    if len(raw) != 8 + 2 * ndigits or ndigits < 0:
        raise ValueError("bad numeric")
    digits = struct.unpack_from(f"!{ndigits}h", raw, 8)
    parts = ["-"] if sign == 0x4000 else []
    if weight < 0:
        parts.append("0")
    else:
        for i in range(weight + 1):
            d = digits[i] if i < ndigits else 0
            parts.append(str(d) if i == 0 else f"{d:04d}")
    if dscale > 0:
        frac = []
        i = weight + 1
        while len(frac) * 4 < dscale:
            frac.append(f"{digits[i]:04d}" if 0 <= i < ndigits else "0000")
            i += 1
        parts.append("." + "".join(frac)[:dscale])
    return "".join(parts)


def _array_text(raw: bytes, encoding: str, types: TypeCatalog, depth: int) -> str | None:
    ndim, _flags, elem = struct.unpack_from("!iiI", raw, 0)
    if ndim < 0 or ndim > 6:
        return None
    pos = 12
    count = 1 if ndim else 0
    for _ in range(ndim):
        size = I32.unpack_from(raw, pos)[0]
        if size < 0:
            return None
        count *= size
        pos += 8
    if elem in NO_TEXT_OIDS:
        return ""
    return _items_text(raw, pos, count, elem, encoding, types, depth)


def _record_text(raw: bytes, encoding: str, types: TypeCatalog, depth: int) -> str | None:
    return _items_text(raw, 4, I32.unpack_from(raw, 0)[0], None, encoding, types, depth)


def _items_text(raw: bytes, pos: int, count: int, elem: int | None, encoding: str, types: TypeCatalog,
                depth: int) -> str | None:
    """The elements of a binary array (all of type ``elem``) or record (each field led by its
    type OID: ``elem`` None) as text for the detectors; None when they cannot all be decoded."""
    texts = []
    for _ in range(count):
        if elem is None:
            oid, length = struct.unpack_from("!Ii", raw, pos)
            pos += 8
        else:
            oid, length = elem, I32.unpack_from(raw, pos)[0]
            pos += 4
        if length < 0:
            continue
        if pos + length > len(raw):
            return None
        text = _binary_text(oid, raw[pos:pos + length], encoding, types, depth + 1)
        if text is None:
            return None
        texts.append(text)
        pos += length
    if pos != len(raw):
        return None
    # a newline keeps elements apart: no detector pattern spans one
    return "\n".join(texts)


# ----------------------------------------------------------------------------- DataRow


class RowPlan:
    """A per-column plan, with what ``mask_data_row`` needs precomputed. Immutable."""

    __slots__ = ("columns", "ncols", "last")

    def __init__(self, columns: Sequence[ColumnMask | None]):
        cols = tuple(c if c is not None and c.active else None for c in columns)
        last = -1
        for i, c in enumerate(cols):
            if c is not None:
                last = i
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "ncols", len(cols))
        # columns after this one are never looked at
        object.__setattr__(self, "last", last)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RowPlan is immutable")

    @property
    def active(self) -> bool:
        return self.last >= 0


_NULL_LENGTH = I32.pack(-1)


def _rewrite_fields(buf: bytes, pos: int, count: int, plan: RowPlan, binary: bool | None, full: bool,
                    pieces: list[bytes], copied: int) -> tuple[int, int]:
    """Walk ``count`` (length, bytes) fields from ``pos``, masking per ``plan``.

    Replaced fields go to ``pieces`` (with the untouched bytes before them, from ``copied``).
    Returns (position after the last field walked, new ``copied``). With ``full`` false the
    walk stops after the plan's last masked column.
    """
    cols = plan.columns
    end = count if full else plan.last + 1
    unpack = I32.unpack_from
    size = len(buf)
    for i in range(end):
        length = unpack(buf, pos)[0]
        start = pos
        pos += 4
        if length < 0:
            if length != -1:
                raise ProtocolViolation(f"negative field length {length}")
            continue
        stop = pos + length
        if stop > size:
            raise ProtocolViolation("field runs past the end of the message")
        cm = cols[i]
        if cm is not None:
            raw = buf[pos:stop]
            new = mask_value(cm, raw, cm.format == 1 if binary is None else binary)
            if new is not raw:
                pieces.append(buf[copied:start])
                pieces.append(_NULL_LENGTH if new is None else I32.pack(len(new)) + new)
                copied = stop
        pos = stop
    return pos, copied


def mask_data_row(body: bytes, plan: RowPlan | Sequence[ColumnMask | None]) -> bytes:
    """The DataRow body with the plan's columns masked; ``body`` itself when nothing changed.

    The column count must be the plan's (else ``ProtocolViolation``: the plan belongs to another
    result, and guessing would leak). Columns after the last masked one are not parsed.
    """
    if not isinstance(plan, RowPlan):
        plan = RowPlan(plan)
    if type(body) is not bytes:
        body = bytes(body)
    if len(body) < 2:
        raise ProtocolViolation("DataRow is truncated")
    count = I16.unpack_from(body, 0)[0]
    if count != plan.ncols:
        raise ProtocolViolation(f"DataRow has {count} columns, the row description {plan.ncols}")
    if plan.last < 0:
        return body
    pieces: list[bytes] = []
    try:
        _, copied = _rewrite_fields(body, 2, count, plan, None, False, pieces, 0)
    except struct.error:
        raise ProtocolViolation("DataRow is truncated") from None
    if not pieces:
        return body
    pieces.append(body[copied:])
    return b"".join(pieces)


# ----------------------------------------------------------------------------- COPY options

CopyKind = Literal["text", "csv", "binary"]


class CopyFormat(msgspec.Struct, frozen=True):
    """The output format of a ``COPY ... TO STDOUT`` (PostgreSQL's defaults per format)."""

    format: CopyKind = "text"
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    header: bool = False
    # the ENCODING option as written (a PostgreSQL encoding name), None when absent
    encoding: str | None = None


def _defelem_value(arg: dict[str, Any] | None) -> Any:
    if arg is None:
        return None
    ((kind, node),) = arg.items()
    if kind == "String":
        return node.get("sval", "")
    if kind == "Boolean":
        return bool(node.get("boolval", False))
    if kind == "Integer":
        return node.get("ival", 0)
    if kind == "Float":
        return node.get("fval", "0")
    if kind == "A_Star":
        return "*"
    if kind == "List":
        return [_defelem_value(item) for item in node.get("items", [])]
    return node


def _header_choice(value: Any) -> bool:
    # PostgreSQL: no value, a boolean, 0/1, or the words true/false/on/off (and "match", COPY FROM only)
    if value is None or value is True or value is False:
        return value is not False
    if isinstance(value, int):
        if value in (0, 1):
            return bool(value)
    elif isinstance(value, str):
        word = value.lower()
        if word in ("true", "on", "1", "match"):
            return True
        if word in ("false", "off", "0"):
            return False
    raise ValueError(f"header requires a Boolean value or \"match\", not {value!r}")


def _one_byte_char(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) != 1 or ord(value) > 127:
        raise ValueError(f"COPY {name} must be a single one-byte character")
    return value


def copy_format(options: Sequence[dict[str, Any]] | None) -> CopyFormat:
    """The ``CopyFormat`` of a pglast ``CopyStmt``'s ``options`` (JSON: ``[{"DefElem": {...}}]``).

    Both spellings produce the same DefElems (``WITH (FORMAT csv, HEADER)`` and ``CSV HEADER``).
    Raises ValueError for what PostgreSQL itself rejects (an unknown format, a delimiter of more
    than one character...), so the caller refuses the statement instead of guessing.
    """
    values: dict[str, Any] = {}
    for option in options or ():
        elem = option.get("DefElem", option)
        name = str(elem.get("defname", "")).lower()
        values[name] = _defelem_value(elem.get("arg"))
    kind = values.get("format", "text")
    if kind not in ("text", "csv", "binary"):
        raise ValueError(f'COPY format "{kind}" not recognized')
    csv = kind == "csv"
    delimiter = _one_byte_char("delimiter", values["delimiter"]) if "delimiter" in values else ("," if csv else "\t")
    if delimiter in "\r\n\\":
        raise ValueError("COPY delimiter cannot be newline, carriage return or backslash")
    if not csv and delimiter in ".abcdefghijklmnopqrstuvwxyz0123456789":
        raise ValueError(f'COPY delimiter cannot be "{delimiter}"')
    null = values.get("null", "" if csv else "\\N")
    if not isinstance(null, str) or "\r" in null or "\n" in null:
        raise ValueError("COPY null representation cannot use newline or carriage return")
    quote = _one_byte_char("quote", values["quote"]) if "quote" in values else '"'
    escape = _one_byte_char("escape", values["escape"]) if "escape" in values else quote
    if csv and (delimiter == quote or delimiter in null or quote in null):
        raise ValueError("COPY delimiter, quote and null string must not collide")
    if not csv and delimiter in null:
        raise ValueError("COPY delimiter must not appear in the NULL specification")
    encoding = values.get("encoding")
    return CopyFormat(format=kind, delimiter=delimiter, null=null, quote=quote, escape=escape,
                      header=_header_choice(values["header"]) if "header" in values else False,
                      encoding=encoding if isinstance(encoding, str) else None)


# ----------------------------------------------------------------------------- COPY rows

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEAD = struct.Struct("!ii")

# encodings in which a multi-byte character can contain an ASCII byte (a backslash, a quote, the
# delimiter): COPY text there is split after decoding, never on raw bytes
_ASCII_EMBEDDING = frozenset({"shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "big5", "cp950",
                              "big5hkscs", "gbk", "gb18030", "cp949", "johab", "cp936"})


def _embeds_ascii(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in _ASCII_EMBEDDING
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


class _Dialect:
    """The compiled patterns of one text or CSV COPY format, for bytes or str."""

    __slots__ = ("field", "nl", "cr", "delim", "null", "null_is_value", "unescape", "escape",
                 "csv", "quote", "escape_char", "quoted_part", "needs_quotes")

    def __init__(self, fmt: CopyFormat, as_bytes: bool):
        def conv(s: str) -> Any:
            return s.encode("ascii") if as_bytes else s

        def pat(s: str) -> Any:
            return re.compile(conv(s), re.DOTALL)

        self.csv = fmt.format == "csv"
        self.nl, self.cr = conv("\n"), conv("\r")
        self.delim = conv(fmt.delimiter)
        d = re.escape(fmt.delimiter)
        if self.csv:
            q, e = re.escape(fmt.quote), re.escape(fmt.escape)
            # an escape inside quotes takes the next quote or escape literally (as PostgreSQL reads it);
            # atomic groups: "\"" never ends a field by backtracking
            inner = rf"(?>[^{q}]|{q}{q})*+" if fmt.quote == fmt.escape else rf"(?>[^{q}{e}]|{e}[{q}{e}]|{e})*+"
            quoted = rf"{q}{inner}{q}"
            self.field = pat(rf"(?:[^{q}{d}\r\n]++|{quoted})*+").match
            self.quoted_part = pat(rf"({quoted})|[^{q}]+").finditer
            # inside quotes: escape + (quote or escape) stands for the second character
            self.unescape = pat(rf"{e}([{q}{e}])")
            self.quote = conv(fmt.quote)
            self.escape_char = conv(fmt.escape)
            self.needs_quotes = pat(rf"[{d}{q}\r\n]").search
            self.null = conv(fmt.null)
            # PostgreSQL quotes a value equal to the null string, so an unquoted one is NULL
            self.null_is_value = False
        else:
            self.field = pat(rf"(?:[^\\{d}\r\n]++|\\.)*+").match
            self.unescape = pat(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))")
            self.escape = pat(rf"[\\\n\r\t\b\f\v{d}]")
            self.null = conv(fmt.null)
            # a value is written with its backslashes doubled, so "\N" can only be NULL; a null
            # string that an escaped value can equal ("NA") cannot be told apart from that value
            self.null_is_value = not _text_null_unambiguous(fmt.null, fmt.delimiter)


def _text_null_unambiguous(null: str, delimiter: str) -> bool:
    """Whether no escaped value can print as ``null`` (text format)."""
    i = 0
    while i < len(null):
        c = null[i]
        if c == "\\":
            nxt = null[i + 1:i + 2]
            if nxt == "" or nxt not in "\\bfnrtv" + delimiter:
                return True
            i += 2
            continue
        if c in "\n\r\t\b\f\v" or c == delimiter:
            return True
        i += 1
    return False


def _second_char(m: re.Match[Any]) -> Any:
    return m.group(1)


_TEXT_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TEXT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
_TEXT_UNESCAPES_B = {k.encode(): v.encode() for k, v in _TEXT_UNESCAPES.items()}
_TEXT_ESCAPES_B = {k.encode(): v.encode() for k, v in _TEXT_ESCAPES.items()}


class CopyRewriter:
    """Masks the CopyData payloads of one ``COPY ... TO STDOUT``, fed in order.

    ``plan`` has one entry per output column (as for a DataRow); ``encoding`` is the Python
    codec of the COPY data (the client encoding, or the COPY's ENCODING option). Stateful (the
    header line, the binary signature), so one instance per COPY.
    """

    __slots__ = ("fmt", "plan", "encoding", "_header_pending", "_signature_pending", "_ended", "_dialect",
                 "_as_bytes")

    def __init__(self, fmt: CopyFormat, plan: RowPlan | Sequence[ColumnMask | None], encoding: str = "utf-8"):
        self.fmt = fmt
        self.plan = plan if isinstance(plan, RowPlan) else RowPlan(plan)
        self.encoding = encoding
        self._header_pending = fmt.header and fmt.format != "binary"
        self._signature_pending = fmt.format == "binary"
        self._ended = False
        self._as_bytes = not _embeds_ascii(encoding)
        for cm in self.plan.columns:
            # a field is decoded twice (to split the row, then to mask it): both must agree
            if cm is not None and codecs.lookup(cm.encoding).name != codecs.lookup(encoding).name:
                raise ValueError(f"column mask for {cm.encoding!r} in a COPY encoded in {encoding!r}")
        self._dialect = None if fmt.format == "binary" else _Dialect(fmt, self._as_bytes)

    def rewrite(self, payload: bytes) -> bytes:
        """The payload to forward; ``payload`` itself when nothing in it changed."""
        if type(payload) is not bytes:
            payload = bytes(payload)
        if not self.plan.active:
            return payload
        if self.fmt.format == "binary":
            return self._rewrite_binary(payload)
        if not payload:
            return payload
        if self._as_bytes:
            return self._rewrite_lines(payload)
        text = payload.decode(self.encoding, "surrogateescape")
        out = self._rewrite_lines(text)
        return payload if out is text else out.encode(self.encoding, "surrogateescape")

    # ------------------------------------------------------------------ binary

    def _rewrite_binary(self, payload: bytes) -> bytes:
        pos = 0
        size = len(payload)
        try:
            if self._signature_pending:
                if payload[:11] != COPY_SIGNATURE:
                    raise ProtocolViolation("binary COPY data does not start with the PGCOPY signature")
                _flags, ext = _COPY_HEAD.unpack_from(payload, 11)
                pos = 19 + ext
                if ext < 0 or pos > size:
                    raise ProtocolViolation("binary COPY header is truncated")
                self._signature_pending = False
            pieces: list[bytes] = []
            copied = 0
            while pos < size:
                if self._ended:
                    raise ProtocolViolation("binary COPY data after the trailer")
                count = I16.unpack_from(payload, pos)[0]
                if count == -1:
                    self._ended = True
                    pos += 2
                    continue
                if count != self.plan.ncols:
                    raise ProtocolViolation(f"COPY row has {count} fields, expected {self.plan.ncols}")
                pos, copied = _rewrite_fields(payload, pos + 2, count, self.plan, True, True, pieces, copied)
        except struct.error:
            raise ProtocolViolation("binary COPY row is truncated") from None
        if pos != size:
            raise ProtocolViolation("binary COPY row runs past its message")
        if not pieces:
            return payload
        pieces.append(payload[copied:])
        return b"".join(pieces)

    # ------------------------------------------------------------------ text and CSV

    def _rewrite_lines(self, data: Any) -> Any:
        """Rows of text or CSV COPY data (bytes, or str for ASCII-embedding encodings)."""
        dia = self._dialect
        assert dia is not None
        size = len(data)
        pos = 0
        pieces: list[Any] = []
        copied = 0
        field = dia.field
        delim, nl, cr = dia.delim, dia.nl, dia.cr
        ncols = self.plan.ncols
        cols = self.plan.columns
        while pos < size:
            spans = []
            while True:
                end = field(data, pos).end()
                spans.append((pos, end))
                pos = end
                if data[pos:pos + 1] == delim:
                    pos += 1
                    continue
                break
            if data[pos:pos + 1] == cr:
                pos += 1
            if data[pos:pos + 1] == nl:
                pos += 1
            elif pos < size:
                what = "an unterminated quoted field" if dia.csv else "a stray character"
                raise ProtocolViolation(f"COPY row has {what} at byte {pos}")
            if self._header_pending:
                self._header_pending = False
                continue
            if len(spans) != ncols:
                raise ProtocolViolation(f"COPY row has {len(spans)} fields, expected {ncols}")
            for i in range(self.plan.last + 1):
                cm = cols[i]
                if cm is None:
                    continue
                s, e = spans[i]
                rendered = self._mask_field(cm, data[s:e])
                if rendered is not None:
                    pieces.append(data[copied:s])
                    pieces.append(rendered)
                    copied = e
        if not pieces:
            return data
        pieces.append(data[copied:])
        return data[:0].join(pieces)

    def _mask_field(self, cm: ColumnMask, raw: Any) -> Any:
        """The rewritten field (escaped or quoted), or None when it passes unchanged."""
        dia = self._dialect
        assert dia is not None
        if raw == dia.null and not dia.null_is_value:
            return None
        value = self._csv_value(raw) if dia.csv else self._text_value(raw)
        value_bytes = value if self._as_bytes else value.encode(self.encoding, "surrogateescape")
        new = mask_value(cm, value_bytes, False)
        if new is value_bytes:
            return None
        if new is None:
            return dia.null
        out = new if self._as_bytes else new.decode(self.encoding, "surrogateescape")
        return self._csv_quote(out) if dia.csv else self._text_escape(out)

    def _text_value(self, raw: Any) -> Any:
        dia = self._dialect
        backslash = b"\\" if self._as_bytes else "\\"
        if backslash not in raw:
            return raw
        if self._as_bytes:
            def repl(m: re.Match[bytes]) -> bytes:
                if m.group(1) is not None:
                    return bytes([int(m.group(1), 8) & 0xFF])
                if m.group(2) is not None:
                    return bytes([int(m.group(2), 16)])
                c = m.group(3)
                return _TEXT_UNESCAPES_B.get(c, c)
        else:
            def repl(m: re.Match[str]) -> str:  # type: ignore[misc]
                if m.group(1) is not None:
                    return chr(int(m.group(1), 8) & 0xFF)
                if m.group(2) is not None:
                    return chr(int(m.group(2), 16))
                c = m.group(3)
                return _TEXT_UNESCAPES.get(c, c)
        return dia.unescape.sub(repl, raw)

    def _text_escape(self, value: Any) -> Any:
        dia = self._dialect
        table = _TEXT_ESCAPES_B if self._as_bytes else _TEXT_ESCAPES
        delim = dia.delim
        backslash = b"\\" if self._as_bytes else "\\"
        return dia.escape.sub(lambda m: table.get(m.group(), backslash + delim), value)

    def _csv_value(self, raw: Any) -> Any:
        dia = self._dialect
        q, e = dia.quote, dia.escape_char
        if q not in raw:
            return raw
        parts = []
        for m in dia.quoted_part(raw):
            if m.group(1) is None:
                parts.append(m.group())
                continue
            inner = m.group(1)[1:-1]
            parts.append(inner.replace(q + q, q) if q == e else dia.unescape.sub(_second_char, inner))
        return raw[:0].join(parts)

    def _csv_quote(self, value: Any) -> Any:
        dia = self._dialect
        q, e = dia.quote, dia.escape_char
        dot = b"\\." if self._as_bytes else "\\."
        if dia.needs_quotes(value) is None and value != dia.null and value != dot:
            return value
        if q == e:
            body = value.replace(q, q + q)
        else:
            body = value.replace(e, e + e).replace(q, e + q)
        return q + body + q

"""Masking result rows on the wire: DataRow (text and binary formats) and COPY TO STDOUT payloads.

The wire samples marked "from PostgreSQL" were captured from a PostgreSQL 18 server (binary
result values through libpq, COPY payloads through get_copy_data).
"""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import parser as pg_parser

from policy.detectors import CANONICAL_NAMES, DetectorSet
from policy.masking import Masker, has_match
from protocols.postgres import rows
from protocols.postgres.codec import I16, I32, ProtocolViolation
from protocols.postgres.rows import (BUILTIN_TYPES, COPY_SIGNATURE, ColumnMask, CopyFormat, CopyRewriter, Field,
                                     RowPlan, TypeCatalog, copy_format, mask_data_row, mask_value,
                                     parse_row_description)

KEY = b"k" * 32
EMAIL_CARD = DetectorSet(["email", "card"])
ALL = DetectorSet(CANONICAL_NAMES)
REDACT_ALL = ((ALL, Masker("redact")),)
PARTIAL_EMAIL_CARD = ((EMAIL_CARD, Masker("partial")),)

TEXT, VARCHAR, BPCHAR, NAME, CHAR, INT4, INT8, NUMERIC, FLOAT8, BOOL = 25, 1043, 1042, 19, 18, 23, 20, 1700, 701, 16
JSON, JSONB, XML, BYTEA, UUID, TIMESTAMPTZ, RECORD = 114, 3802, 142, 17, 2950, 1184, 2249
TEXT_ARRAY, INT4_ARRAY, INT8_ARRAY, RECORD_ARRAY = 1009, 1007, 1016, 2287


# ------------------------------------------------------------------ helpers (independent of rows.py)


def data_row(values: list[bytes | None]) -> bytes:
    out = [I16.pack(len(values))]
    for v in values:
        out.append(I32.pack(-1) if v is None else I32.pack(len(v)) + v)
    return b"".join(out)


def parse_data_row(body: bytes) -> list[bytes | None]:
    count = I16.unpack_from(body, 0)[0]
    pos = 2
    values: list[bytes | None] = []
    for _ in range(count):
        length = I32.unpack_from(body, pos)[0]
        pos += 4
        if length == -1:
            values.append(None)
            continue
        assert length >= 0 and pos + length <= len(body)
        values.append(body[pos:pos + length])
        pos += length
    assert pos == len(body), "bytes left over after the last column"
    return values


def text_cm(**kw) -> ColumnMask:
    return ColumnMask(TEXT, **kw)


def array_binary(elem: int, items: list[bytes | None], dims: list[int] | None = None) -> bytes:
    dims = dims or [len(items)]
    out = [struct.pack("!iiI", len(dims), int(any(i is None for i in items)), elem)]
    out += [struct.pack("!ii", d, 1) for d in dims]
    out += [I32.pack(-1) if i is None else I32.pack(len(i)) + i for i in items]
    return b"".join(out)


def record_binary(fields: list[tuple[int, bytes | None]]) -> bytes:
    out = [I32.pack(len(fields))]
    for oid, v in fields:
        out.append(struct.pack("!I", oid) + (I32.pack(-1) if v is None else I32.pack(len(v)) + v))
    return b"".join(out)


# ------------------------------------------------------------------ RowDescription


def test_parse_row_description():
    def field(name: bytes, table: int, att: int, oid: int, size: int, mod: int, fmt: int) -> bytes:
        return name + b"\0" + struct.pack("!IhIhih", table, att, oid, size, mod, fmt)

    body = I16.pack(3) + field(b"id", 16384, 1, INT4, 4, -1, 0) + field(b"\xc3\xa9mail", 16384, 2, TEXT, -1, -1, 1) \
        + field(b"?column?", 0, 0, NUMERIC, -1, 655366, 0)
    fields = parse_row_description(body)
    assert fields == [Field("id", 16384, 1, INT4, 4, -1, 0), Field("émail", 16384, 2, TEXT, -1, -1, 1),
                      Field("?column?", 0, 0, NUMERIC, -1, 655366, 0)]
    assert parse_row_description(I16.pack(0)) == []
    with pytest.raises(ProtocolViolation):
        parse_row_description(body[:-3])
    with pytest.raises(ProtocolViolation):
        parse_row_description(body + b"x")
    with pytest.raises(ProtocolViolation):
        parse_row_description(I16.pack(1) + b"no terminator")


# ------------------------------------------------------------------ DataRow, text format


def test_unmasked_row_is_returned_as_is():
    body = data_row([b"1", b"alice@example.com", None])
    assert mask_data_row(body, [None, None, None]) is body
    assert mask_data_row(body, [None, text_cm(scans=PARTIAL_EMAIL_CARD), None]) is not body
    plain = data_row([b"1", b"nothing to see", None])
    assert mask_data_row(plain, [None, text_cm(scans=REDACT_ALL), text_cm(scans=REDACT_ALL)]) is plain
    # an inactive ColumnMask (no whole mask, no detectors) is no mask
    assert mask_data_row(body, [None, text_cm(scans=((DetectorSet([]), Masker("redact")),)), None]) is body


def test_whole_column_styles_text_format():
    body = data_row([b"7", b"alice@example.com", b"4111111111111111"])
    for style, expected in [("redact", b"****"), ("partial", b"*************.com"), ("null", None)]:
        plan = [None, text_cm(whole=Masker(style, KEY)), None]
        assert parse_data_row(mask_data_row(body, plan)) == [b"7", expected, b"4111111111111111"]
    hashed = parse_data_row(mask_data_row(body, [None, text_cm(whole=Masker("hash", KEY)), None]))[1]
    assert hashed == Masker("hash", KEY).whole("alice@example.com").encode()


def test_detectors_mask_only_the_match_in_text():
    body = data_row([b"Prefers mail: alice@example.com. Card 4111 1111 1111 1111!", b"x"])
    out = parse_data_row(mask_data_row(body, [text_cm(scans=PARTIAL_EMAIL_CARD), None]))
    assert out == [b"Prefers mail: *************.com. Card ***************1111!", b"x"]


def test_null_values_stay_null():
    body = data_row([None, None, None])
    plan = [text_cm(whole=Masker("redact")), ColumnMask(INT8, whole=Masker("redact")), text_cm(scans=REDACT_ALL)]
    assert parse_data_row(mask_data_row(body, plan)) == [None, None, None]


def test_other_types_become_null_text_format():
    card = b"4111111111111111"
    body = data_row([card, b"12", card, b'{"e": "a@b.com"}', b"{a@b.com,c}", b"(x@y.org,1)", b"t"])
    plan = [ColumnMask(INT8, scans=REDACT_ALL), ColumnMask(INT8, scans=REDACT_ALL),
            ColumnMask(NUMERIC, scans=REDACT_ALL), ColumnMask(JSONB, scans=REDACT_ALL),
            ColumnMask(TEXT_ARRAY, scans=REDACT_ALL), ColumnMask(RECORD, scans=REDACT_ALL),
            ColumnMask(BOOL, whole=Masker("partial"))]
    assert parse_data_row(mask_data_row(body, plan)) == [None, b"12", None, None, None, None, None]


def test_types_that_cannot_hold_text_are_not_scanned():
    ts = b"2024-01-15 10:11:12.123456+00"
    uid = b"12345678-1234-4111-1111-111111111111"
    body = data_row([ts, uid, b"378282246310005", b"1234567890"])
    plan = [ColumnMask(TIMESTAMPTZ, scans=REDACT_ALL), ColumnMask(UUID, scans=REDACT_ALL),
            ColumnMask(FLOAT8, scans=REDACT_ALL), ColumnMask(INT4, scans=REDACT_ALL)]
    assert mask_data_row(body, plan) is body
    # a whole-column mask still applies
    assert parse_data_row(mask_data_row(body, [ColumnMask(TIMESTAMPTZ, whole=Masker("redact")), None, None, None])) \
        == [None, uid, b"378282246310005", b"1234567890"]


def test_text_like_types_keep_the_mask():
    body = data_row([b"alice@example.com", b"bob@example.com", b"x", b"carol@example.com  ", b"me@example.org"])
    plan = [ColumnMask(VARCHAR, whole=Masker("redact")), ColumnMask(NAME, scans=REDACT_ALL),
            ColumnMask(CHAR, whole=Masker("partial")), ColumnMask(BPCHAR, scans=REDACT_ALL),
            ColumnMask(99999, scans=REDACT_ALL, text_like=True)]  # e.g. citext, flagged by the caller
    assert parse_data_row(mask_data_row(body, plan)) == [b"****", b"****", b"****", b"****  ", b"****"]


def test_multibyte_utf8_partial_counts_characters():
    value = "Zoë Ünïcødé ✓✓".encode()
    out = parse_data_row(mask_data_row(data_row([value]), [text_cm(whole=Masker("partial"))]))
    assert out == ["**********é ✓✓".encode()]
    note = "Écrire à zoë@exämple.fr — merci".encode()
    out = parse_data_row(mask_data_row(data_row([note]), [text_cm(scans=REDACT_ALL)]))
    assert out == ["Écrire à **** — merci".encode()]


def test_latin1_client_encoding():
    value = "Zoë: zoë@example.com, née".encode("latin-1")
    plan = [text_cm(scans=PARTIAL_EMAIL_CARD, encoding="latin-1"), text_cm(whole=Masker("partial"), encoding="latin-1")]
    out = parse_data_row(mask_data_row(data_row([value, "crème brûlée".encode("latin-1")]), plan))
    assert out == ["Zoë: ***********.com, née".encode("latin-1"), "********ûlée".encode("latin-1")]


def test_bytes_invalid_in_the_encoding_survive():
    value = b"bad \xff\xfe bytes, mail alice@example.com \xc3"
    out = parse_data_row(mask_data_row(data_row([value]), [text_cm(scans=REDACT_ALL)]))
    assert out == [b"bad \xff\xfe bytes, mail **** \xc3"]
    hashed = parse_data_row(mask_data_row(data_row([b"\xff"]), [text_cm(whole=Masker("hash", KEY))]))[0]
    assert hashed.startswith(b"hash:") and hashed != parse_data_row(
        mask_data_row(data_row([b"\xfe"]), [text_cm(whole=Masker("hash", KEY))]))[0]


def test_ascii_embedding_encoding_datarow():
    # in Shift JIS, "ソ" is 0x83 0x5C: its second byte is an ASCII backslash
    value = "ソフト alice@example.com".encode("shift_jis")
    assert b"\\" in value
    out = parse_data_row(mask_data_row(data_row([value]), [text_cm(scans=REDACT_ALL, encoding="shift_jis")]))
    assert out == ["ソフト ****".encode("shift_jis")]


def test_plan_must_fit_the_row():
    body = data_row([b"1", b"2"])
    with pytest.raises(ProtocolViolation, match="2 columns"):
        mask_data_row(body, [text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation):
        mask_data_row(body[:-1], [None, text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation):
        mask_data_row(I16.pack(1) + I32.pack(-2), [text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation):
        mask_data_row(b"\x00", [text_cm(scans=REDACT_ALL)])


def test_row_plan_precomputes_the_last_masked_column():
    plan = RowPlan([None, text_cm(scans=REDACT_ALL), None, ColumnMask(TEXT)])
    assert plan.ncols == 4 and plan.last == 1 and plan.active
    assert not RowPlan([None, ColumnMask(TEXT)]).active
    # columns after the last masked one are not parsed: a broken tail is the server's business
    body = data_row([b"a", b"alice@example.com"]) + b""
    assert parse_data_row(mask_data_row(body, RowPlan([None, text_cm(scans=REDACT_ALL)]))) == [b"a", b"****"]


# ------------------------------------------------------------------ DataRow, binary format

# from PostgreSQL: binary values
INT8_CARD = bytes.fromhex("000e9b08a568f1c7")                       # 4111111111111111::int8
NUMERIC_CARD = bytes.fromhex("0004000300000000100f045704570457")    # 4111111111111111::numeric
NUMERIC_SAMPLES = {
    "0003000100000003000109291a7c": "12345.678",
    "0002ffff40000005000107d0": "-0.00012",
    "00000000c0000000": "NaN",
    "0000000000000000": "0",
    "00010005000000000001": "100000000000000000000",
    "0001000100000000000a": "100000",
    "0001ffff0000000403e8": "0.1000",
    "00000000d0000020": "NaN",  # Infinity: no digits to scan
}
JSONB_EMAIL = b'\x01{"a": "x@y.com"}'
TEXT_ARRAY_EMAIL = bytes.fromhex("0000000100000001000000190000000300000001000000076140622e636f6dffffffff0000000163")
INT8_ARRAY_2D = bytes.fromhex("0000000200000000000000140000000200000001000000020000000100000008000000000000000100"
                              "0000080000000000000002000000080000000000000003000000080000000000000004")
RECORD_EMAIL_CARD = bytes.fromhex("00000003000002c1000000076140622e636f6d00000014"
                                  "00000008000e9b08a568f1c700000019ffffffff")
PG_RECORD_ARRAY = bytes.fromhex("0000000100000000000008c900000001000000010000001900000002"
                                "000000170000000400000001000002c10000000178")


@pytest.mark.parametrize("hexvalue, text", NUMERIC_SAMPLES.items())
def test_numeric_binary_decodes_like_postgres(hexvalue, text):
    assert rows._numeric_text(bytes.fromhex(hexvalue)) == text


def test_binary_values_are_decoded_and_scanned():
    binary = dict(format=1, scans=REDACT_ALL)
    cases = [
        (INT8, INT8_CARD, None), (INT8, struct.pack("!q", -42), "same"),
        (NUMERIC, NUMERIC_CARD, None), (NUMERIC, bytes.fromhex("0003000100000003000109291a7c"), "same"),
        (JSON, b'{"a": "x@y.com"}', None), (JSON, b'{"a": 1}', "same"),
        (JSONB, JSONB_EMAIL, None), (JSONB, b'\x01{"a": 1}', "same"), (JSONB, b'\x02{"a": 1}', None),
        (XML, b"<a>x@y.com</a>", None), (XML, b"<a>1</a>", "same"),
        (BYTEA, b"x@y.com", None), (BYTEA, b"\x00\xff\x10", "same"),
        (TEXT_ARRAY, TEXT_ARRAY_EMAIL, None), (INT8_ARRAY, INT8_ARRAY_2D, "same"),
        (INT8_ARRAY, array_binary(INT8, [struct.pack("!q", 1), None, INT8_CARD]), None),
        (INT4_ARRAY, array_binary(INT4, [b"\x00\x00\x00\x01"]), "same"),
        (RECORD, RECORD_EMAIL_CARD, None), (RECORD, record_binary([(INT4, b"\0\0\0\1"), (TEXT, b"ok")]), "same"),
        (RECORD_ARRAY, PG_RECORD_ARRAY, "same"),
        (RECORD_ARRAY, array_binary(RECORD, [record_binary([(TEXT, b"a@b.com")])]), None),
        (TEXT_ARRAY, array_binary(TEXT, []), "same"),
        (TEXT_ARRAY, TEXT_ARRAY_EMAIL[:-1], None),  # truncated: cannot be checked
        (FLOAT8, struct.pack("!d", 4111111111111111.0), "same"), (UUID, uuid.uuid4().bytes, "same"),
        (TIMESTAMPTZ, struct.pack("!q", 1), "same"), (BOOL, b"\x01", "same"),
        (3614, b"\x00\x00\x00\x01alice@example.com\x00", None),  # tsvector: not decodable, detectors on
        (99999, b"nothing", None),
    ]
    for oid, value, expected in cases:
        cm = ColumnMask(oid, **binary)
        out = mask_value(cm, value, True)
        assert (out is value) if expected == "same" else (out is None), (oid, value)


def test_binary_text_like_is_masked_in_place():
    body = data_row([b"mail alice@example.com", b"x"])
    plan = [text_cm(format=1, scans=REDACT_ALL), ColumnMask(CHAR, format=1, whole=Masker("redact"))]
    assert parse_data_row(mask_data_row(body, plan)) == [b"mail ****", b"****"]


def test_binary_whole_column_mask_on_other_types_is_null():
    body = data_row([INT8_CARD, JSONB_EMAIL, struct.pack("!d", 1.5)])
    plan = [ColumnMask(t, format=1, whole=Masker("partial")) for t in (INT8, JSONB, FLOAT8)]
    assert parse_data_row(mask_data_row(body, plan)) == [None, None, None]


def test_catalog_types():
    citext, citext_array, composite = 50001, 50002, 50003
    types = TypeCatalog(text_like=BUILTIN_TYPES.text_like | {citext},
                        arrays={**BUILTIN_TYPES.arrays, citext_array: citext},
                        composites=frozenset({RECORD, composite}))
    assert mask_value(ColumnMask(citext, format=1, scans=REDACT_ALL, types=types), b"a@b.com x", True) == b"**** x"
    arr = array_binary(citext, [b"ok", b"a@b.com"])
    assert mask_value(ColumnMask(citext_array, format=1, scans=REDACT_ALL, types=types), arr, True) is None
    ok = array_binary(citext, [b"ok"])
    assert mask_value(ColumnMask(citext_array, format=1, scans=REDACT_ALL, types=types), ok, True) is ok
    rec = record_binary([(citext, b"fine")])
    assert mask_value(ColumnMask(composite, format=1, scans=REDACT_ALL, types=types), rec, True) is rec
    # without the catalog entry, the same values cannot be checked
    assert mask_value(ColumnMask(citext_array, format=1, scans=REDACT_ALL), ok, True) is None
    assert mask_value(ColumnMask(composite, format=1, scans=REDACT_ALL), rec, True) is None


def test_bytea_text_formats():
    cm = ColumnMask(BYTEA, scans=REDACT_ALL)
    assert mask_value(cm, b"\\x" + b"x@y.com".hex().encode(), False) is None
    fine = b"\\x00ff"
    assert mask_value(cm, fine, False) is fine
    assert mask_value(cm, b"x\\100y.com", False) is None          # escape format: \100 is "@"
    assert mask_value(cm, b"\\xzz", False) is None                  # not hex: cannot be checked


# ------------------------------------------------------------------ DataRow properties

_PIECES = st.sampled_from([
    "a", "Z", " ", "-", "@", "example.com", "4111", "1111", "0", "5", "+", "(", ")", "eyJ", "hbGciOiJIUzI1NiJ9",
    ".", "Bearer ", "AKIA", "IOSFODNN7EXAMPLE", "\t", "\n", "\r", "\\", '"', "'", ",", ";", "|", "é", "ソ",
    # whole matches of every detector family, so masking happens in most examples
    "alice@example.com", "4111 1111 1111 1111", "123-45-6789", "(555) 123-4567", "DE89370400440532013000",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "Bearer abcdefGHIJKL12345",
])
dense_text = st.lists(_PIECES, max_size=30).map("".join)
values = st.one_of(st.none(), dense_text.map(str.encode), st.binary(max_size=40))
maskers = st.sampled_from([Masker("redact"), Masker("partial"), Masker("hash", KEY), Masker("null")])
detector_sets = st.sampled_from([ALL, EMAIL_CARD, DetectorSet(["ssn", "phone"]), DetectorSet(["jwt", "bearer"])])
type_oids = st.sampled_from([TEXT, VARCHAR, INT8, NUMERIC, JSONB, BYTEA, INT4, TEXT_ARRAY, 99999])


@st.composite
def column_masks(draw) -> ColumnMask | None:
    if draw(st.booleans()):
        return None
    whole = draw(st.one_of(st.none(), maskers))
    scans = draw(st.lists(st.tuples(detector_sets, maskers), max_size=2))
    return ColumnMask(draw(type_oids), draw(st.sampled_from([0, 1])), whole=whole, scans=scans)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(values, column_masks()), max_size=12))
def test_mask_data_row_properties(columns):
    body = data_row([v for v, _ in columns])
    plan = [cm for _, cm in columns]
    out = mask_data_row(body, plan)
    result = parse_data_row(out)  # a valid DataRow: lengths consistent, nothing left over
    assert len(result) == len(columns)
    for (before, cm), after in zip(columns, result):
        if cm is None or not cm.active or before is None:
            assert after == before
            continue
        if cm.whole is not None:
            if not cm.text_like:
                assert after is None
            else:
                expected = cm.whole.whole(before.decode("utf-8", "surrogateescape"))
                assert after == (None if expected is None else expected.encode("utf-8", "surrogateescape"))
            continue
        if not cm.text_like:
            assert after is None or after == before
            continue
        if after is not None:
            assert not has_match(after.decode("utf-8", "surrogateescape"), cm.scans)
    if out is not body:
        assert out != body


# ------------------------------------------------------------------ COPY options


def copy_options(sql: str) -> CopyFormat:
    import json

    stmt = json.loads(pg_parser.parse_sql_json(sql))["stmts"][0]["stmt"]["CopyStmt"]
    return copy_format(stmt.get("options"))


@pytest.mark.parametrize("sql, expected", [
    ("COPY t TO STDOUT", CopyFormat()),
    ("COPY t TO STDOUT CSV", CopyFormat(format="csv", delimiter=",", null="")),
    ("COPY t TO STDOUT CSV HEADER", CopyFormat(format="csv", delimiter=",", null="", header=True)),
    ("COPY t TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'NA')",
     CopyFormat(format="csv", delimiter=";", null="NA", quote="'", escape="\\", header=True)),
    ("COPY t TO STDOUT WITH CSV DELIMITER AS '|' NULL AS 'x' QUOTE AS '\"' FORCE QUOTE a, b",
     CopyFormat(format="csv", delimiter="|", null="x")),
    ("COPY t TO STDOUT BINARY", CopyFormat(format="binary")),
    ("COPY t TO STDOUT WITH (FORMAT binary)", CopyFormat(format="binary")),
    ("COPY t TO STDOUT WITH DELIMITER '|' NULL ''", CopyFormat(delimiter="|", null="")),
    ("COPY (SELECT 1) TO STDOUT WITH (HEADER, FORMAT text, ENCODING 'latin1')",
     CopyFormat(header=True, encoding="latin1")),
    ("COPY t TO STDOUT (HEADER 0)", CopyFormat()),
    ("COPY t TO STDOUT (HEADER 1)", CopyFormat(header=True)),
    ("COPY t TO STDOUT (HEADER off, FORMAT csv)", CopyFormat(format="csv", delimiter=",", null="")),
    ("COPY t TO STDOUT (FORMAT csv, HEADER on, FORCE_QUOTE *)", CopyFormat(format="csv", delimiter=",", null="",
                                                                          header=True)),
    ("COPY t TO STDOUT (DELIMITER E'\\t', NULL '\\N')", CopyFormat()),
])
def test_copy_format_from_pglast(sql, expected):
    assert copy_options(sql) == expected


@pytest.mark.parametrize("sql", [
    "COPY t TO STDOUT (FORMAT 'CSV')",             # PostgreSQL's format names are case-sensitive
    "COPY t TO STDOUT (FORMAT parquet)",
    "COPY t TO STDOUT (DELIMITER '||')",
    "COPY t TO STDOUT (DELIMITER 'a')",
    "COPY t TO STDOUT (FORMAT csv, QUOTE ',')",
    "COPY t TO STDOUT (HEADER 'maybe')",
    "COPY t TO STDOUT (NULL E'\\n')",
])
def test_copy_format_refuses_what_postgres_refuses(sql):
    with pytest.raises(ValueError):
        copy_options(sql)


# ------------------------------------------------------------------ COPY text and CSV

# from PostgreSQL: COPY t TO STDOUT, for t(id int, e text, n text, j jsonb)
PG_TEXT = [b'1\ta@b.com\ttab\\there\\nnl \\\\\\\\ back, comma "q"\t{"k": [1, "x"]}\n', b"2\t\\N\t\t\\N\n",
           b"3\tx\tNA\t\\N\n"]
PG_CSV_HEADER = [b"id,e,n,j\n", b'1,a@b.com,"tab\there\nnl \\\\ back, comma ""q""","{""k"": [1, ""x""]}"\n',
                 b'2,,"",\n', b"3,x,NA,\n"]
PG_BINARY = [b'PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00'
             b'\x00\x07a@b.com\x00\x00\x00\x1etab\there\nnl \\\\ back, comma "q"\x00\x00\x00\x10\x01{"k": [1, "x"]}',
             b"\x00\x04\x00\x00\x00\x04\x00\x00\x00\x02\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff",
             b"\x00\x04\x00\x00\x00\x04\x00\x00\x00\x03\x00\x00\x00\x01x\x00\x00\x00\x02NA\xff\xff\xff\xff",
             b"\xff\xff"]
T_PLAN = [None, text_cm(whole=Masker("partial")), text_cm(scans=REDACT_ALL), ColumnMask(JSONB, scans=REDACT_ALL)]


def test_copy_text_rows_from_postgres():
    rw = CopyRewriter(CopyFormat(), T_PLAN)
    assert [rw.rewrite(p) for p in PG_TEXT] == [
        b'1\t***.com\ttab\\there\\nnl \\\\\\\\ back, comma "q"\t{"k": [1, "x"]}\n', b"2\t\\N\t\t\\N\n",
        b"3\t****\tNA\t\\N\n"]
    rw = CopyRewriter(CopyFormat(), T_PLAN)
    unchanged = PG_TEXT[1]
    assert rw.rewrite(unchanged) is unchanged


def test_copy_text_escapes_are_decoded_and_rewritten():
    plan = [text_cm(scans=REDACT_ALL), ColumnMask(INT8, scans=REDACT_ALL)]
    rw = CopyRewriter(CopyFormat(), plan)
    # a tab, a newline and a backslash around an email; the masked value is escaped again
    row = b"a\\tb\\\\ alice@example.com\\nend\\\\\t4111111111111111\n"
    assert rw.rewrite(row) == b"a\\tb\\\\ ****\\nend\\\\\t\\N\n"
    # an escaped delimiter does not split the field
    rw = CopyRewriter(CopyFormat(delimiter="|"), plan)
    assert rw.rewrite(b"x\\|y a@b.com|12\n") == b"x\\|y ****|12\n"
    # the masked text keeps the delimiter escaped when it contains one
    rw = CopyRewriter(CopyFormat(delimiter="|"), [text_cm(whole=Masker("partial")), None])
    assert rw.rewrite(b"abcdef\\|gh|1\n") == b"*****f\\|gh|1\n"


def test_copy_text_header_passes_untouched():
    rw = CopyRewriter(CopyFormat(header=True), [text_cm(whole=Masker("redact"))])
    header = b"alice@example.com\n"  # a column named like an email is still a header
    assert rw.rewrite(header) is header
    assert rw.rewrite(b"x\n") == b"****\n"
    assert rw.rewrite(b"y\n") == b"****\n"


def test_copy_text_custom_null_strings():
    cm = text_cm(whole=Masker("redact"))
    rw = CopyRewriter(CopyFormat(null="\\N"), [cm])
    assert rw.rewrite(b"\\N\n") == b"\\N\n"
    # "NA" is ambiguous in text format (a value "NA" prints the same), so it is masked as a value
    rw = CopyRewriter(CopyFormat(null="NA"), [cm, ColumnMask(INT8, whole=Masker("redact"))])
    assert rw.rewrite(b"NA\tNA\n") == b"****\tNA\n"
    assert rw.rewrite(b"x\t5\n") == b"****\tNA\n"


def test_copy_csv_rows_from_postgres():
    rw = CopyRewriter(copy_options("COPY t TO STDOUT WITH (FORMAT csv, HEADER)"), T_PLAN)
    out = [rw.rewrite(p) for p in PG_CSV_HEADER]
    assert out[0] is PG_CSV_HEADER[0]
    assert out[1:] == [b'1,***.com,"tab\there\nnl \\\\ back, comma ""q""","{""k"": [1, ""x""]}"\n',
                       b'2,,"",\n', b"3,****,NA,\n"]


def test_copy_csv_quoting():
    plan = [text_cm(scans=REDACT_ALL), text_cm(whole=Masker("partial")), ColumnMask(INT8, scans=REDACT_ALL)]
    rw = CopyRewriter(CopyFormat(format="csv", delimiter=",", null=""), plan)
    row = b'"a,b ""q"" alice@example.com\nline2",abcd"x,y",4111111111111111\n'
    # field 2 is abcd"x,y" -> value abcdx,y -> partial keeps "dx,y", which needs quotes again
    assert rw.rewrite(row) == b'"a,b ""q"" ****\nline2","***dx,y",\n'
    # a masked value equal to the null string is quoted, a NULL is written as the null string
    rw = CopyRewriter(CopyFormat(format="csv", delimiter=",", null="****"), [text_cm(whole=Masker("redact"))])
    assert rw.rewrite(b"secret\n") == b'"****"\n'
    assert rw.rewrite(b"****\n") == b"****\n"
    assert rw.rewrite(b'"****"\n') == b'"****"\n'


def test_copy_csv_custom_quote_and_escape():
    fmt = copy_options("COPY t TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\\', NULL 'NA')")
    rw = CopyRewriter(fmt, [None, text_cm(scans=REDACT_ALL), text_cm(whole=Masker("partial"))])
    row = b"'1','it\\'s a@b.com, ok','x\\\\y\\'zz'\n"
    # the third value is x\\y'zz: partial keeps "y'zz", whose quote is escaped again
    assert rw.rewrite(row) == b"'1','it\\'s ****, ok','**y\\'zz'\n"
    assert rw.rewrite(b"1,NA,'NA'\n") == b"1,NA,****\n"


def test_copy_csv_quoted_end_marker_passes():
    rw = CopyRewriter(CopyFormat(format="csv", delimiter=",", null=""), [text_cm(scans=REDACT_ALL)])
    assert rw.rewrite(b'"\\."\n') == b'"\\."\n'


def test_copy_rows_must_fit_the_plan():
    rw = CopyRewriter(CopyFormat(), [None, text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation, match="3 fields"):
        rw.rewrite(b"a\tb\tc\n")
    rw = CopyRewriter(CopyFormat(format="csv", delimiter=",", null=""), [None, text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation, match="unterminated"):
        rw.rewrite(b'a,"b\n')
    rw = CopyRewriter(CopyFormat(), [text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation):
        rw.rewrite(b"ends in a backslash \\")


def test_copy_several_rows_in_one_payload_and_crlf():
    rw = CopyRewriter(CopyFormat(), [None, text_cm(scans=REDACT_ALL)])
    assert rw.rewrite(b"1\ta@b.com\n2\tok\r\n3\tc@d.org") == b"1\t****\n2\tok\r\n3\t****"


def test_copy_plan_encoding_must_match():
    with pytest.raises(ValueError, match="latin-1"):
        CopyRewriter(CopyFormat(), [text_cm(scans=REDACT_ALL, encoding="latin-1")], encoding="utf-8")
    CopyRewriter(CopyFormat(), [text_cm(scans=REDACT_ALL, encoding="UTF8")], encoding="utf-8")


def test_copy_text_shift_jis_splits_after_decoding():
    # "ソ" ends in byte 0x5C (a backslash): split on raw bytes, it would escape the tab after it
    plan = [text_cm(scans=REDACT_ALL, encoding="shift_jis"), text_cm(scans=REDACT_ALL, encoding="shift_jis")]
    rw = CopyRewriter(CopyFormat(), plan, encoding="shift_jis")
    row = "ソ\talice@example.com ソ\n".encode("shift_jis")
    assert rw.rewrite(row) == "ソ\t**** ソ\n".encode("shift_jis")
    same = "ソ\tソ\n".encode("shift_jis")
    assert rw.rewrite(same) is same


# ------------------------------------------------------------------ COPY binary


def test_copy_binary_rows_from_postgres():
    rw = CopyRewriter(CopyFormat(format="binary"), [ColumnMask(INT4, format=1), *T_PLAN[1:3],
                                                     ColumnMask(JSONB, format=1, scans=REDACT_ALL)])
    out = [rw.rewrite(p) for p in PG_BINARY]
    assert out[0].startswith(COPY_SIGNATURE) and b"a@b.com" not in out[0] and b"***.com" in out[0]
    assert out[1] is PG_BINARY[1]
    assert out[2] == PG_BINARY[2].replace(b"\x00\x00\x00\x01x", b"\x00\x00\x00\x04****")
    assert out[3] is PG_BINARY[3]


def test_copy_binary_empty_and_broken():
    empty = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff"
    rw = CopyRewriter(CopyFormat(format="binary"), [text_cm(format=1, scans=REDACT_ALL)])
    assert rw.rewrite(empty) is empty
    with pytest.raises(ProtocolViolation, match="after the trailer"):
        rw.rewrite(b"\x00\x01\x00\x00\x00\x01x")
    with pytest.raises(ProtocolViolation, match="signature"):
        CopyRewriter(CopyFormat(format="binary"), [text_cm(scans=REDACT_ALL)]).rewrite(b"NOTCOPY" + b"\0" * 20)
    rw = CopyRewriter(CopyFormat(format="binary"), [text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation, match="2 fields"):
        rw.rewrite(empty[:19] + b"\x00\x02" + I32.pack(-1) * 2)
    rw = CopyRewriter(CopyFormat(format="binary"), [text_cm(scans=REDACT_ALL)])
    with pytest.raises(ProtocolViolation):
        rw.rewrite(empty[:19] + b"\x00\x01" + I32.pack(10) + b"short")
    # a header extension area is skipped
    ext = COPY_SIGNATURE + struct.pack("!ii", 0, 3) + b"abc" + b"\x00\x01" + I32.pack(7) + b"a@b.com"
    out = CopyRewriter(CopyFormat(format="binary"), [text_cm(scans=REDACT_ALL)]).rewrite(ext)
    assert out == ext[:22] + b"\x00\x01" + I32.pack(4) + b"****"


# ------------------------------------------------------------------ COPY properties

# reference writers and readers, written from the COPY documentation, independent of rows.py


def ref_text_escape(value: str, delim: str) -> str:
    out = []
    for c in value:
        if c == "\\" or c == delim:
            out.append("\\" + c)
        elif c in "\b\f\n\r\t\v":
            out.append("\\" + "bfnrtv"["\b\f\n\r\t\v".index(c)])
        else:
            out.append(c)
    return "".join(out)


def ref_text_read(line: str, delim: str, null: str) -> tuple[list[str | None], list[str]]:
    """(values, raw field texts) of one text-format line."""
    assert line.endswith("\n")
    fields, raws, cur, raw, i = [], [], [], [], 0
    body = line[:-1]
    while i <= len(body):
        c = body[i] if i < len(body) else None
        if c is None or c == delim:
            text = "".join(raw)
            fields.append(None if text == null else "".join(cur))
            raws.append(text)
            cur, raw = [], []
            i += 1
            if c is None:
                break
            continue
        if c == "\\":
            nxt = body[i + 1]
            raw.append(c + nxt)
            cur.append({"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}.get(nxt, nxt))
            i += 2
            continue
        raw.append(c)
        cur.append(c)
        i += 1
    return fields, raws


def ref_csv_write(value: str | None, fmt: CopyFormat) -> str:
    if value is None:
        return fmt.null
    q, e = fmt.quote, fmt.escape
    if any(c in value for c in (fmt.delimiter, q, "\n", "\r")) or value == fmt.null:
        return q + "".join(e + c if c in (q, e) else c for c in value) + q
    return value


def ref_csv_read(line: str, fmt: CopyFormat) -> tuple[list[str | None], list[str]]:
    """(values, raw field texts) of one CSV line."""
    q, e, d = fmt.quote, fmt.escape, fmt.delimiter
    fields, raws, cur, quoted_any, in_quote, i, start = [], [], [], False, False, 0, 0
    while True:
        c = line[i]
        if in_quote:
            if c == e and line[i + 1] in (q, e) and not (e == q and line[i + 1] != q):
                cur.append(line[i + 1])
                i += 2
                continue
            if c == q:
                in_quote = False
            else:
                cur.append(c)
            i += 1
            continue
        if c == q:
            in_quote = quoted_any = True
            i += 1
            continue
        if c == d or c == "\n":
            text = "".join(cur)
            fields.append(None if not quoted_any and text == fmt.null else text)
            raws.append(line[start:i])
            cur, quoted_any = [], False
            i += 1
            start = i
            if c == "\n":
                assert i == len(line)
                return fields, raws
            continue
        cur.append(c)
        i += 1


copy_text_values = st.one_of(st.none(), dense_text, st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                                              max_size=20))
text_plans = st.one_of(
    st.none(),
    st.builds(lambda m: text_cm(whole=m), maskers),
    st.builds(lambda d, m: text_cm(scans=[(d, m)]), detector_sets, maskers),
    st.builds(lambda d, m: ColumnMask(INT8, scans=[(d, m)]), detector_sets, maskers),
    st.builds(lambda m: ColumnMask(NUMERIC, whole=m), maskers),
)
csv_formats = st.sampled_from([
    CopyFormat(format="csv", delimiter=",", null=""),
    CopyFormat(format="csv", delimiter=";", null="NULL", quote="'", escape="\\"),
    CopyFormat(format="csv", delimiter="\t", null="\\N", quote='"', escape='"'),
])


def check_masked(before, after, cm: ColumnMask | None) -> None:
    if cm is None or before is None:
        assert after == before
    elif cm.whole is not None:
        assert after == (cm.whole.whole(before) if cm.text_like else None)
    elif not cm.text_like:
        assert after is None or after == before
    elif after is not None:
        assert not has_match(after, cm.scans)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(copy_text_values, text_plans), min_size=1, max_size=8), st.sampled_from(["\t", "|", ","]))
def test_copy_text_properties(columns, delim):
    fmt = CopyFormat(delimiter=delim)
    plan = [cm for _, cm in columns]
    line = delim.join("\\N" if v is None else ref_text_escape(v, delim) for v, _ in columns) + "\n"
    payload = line.encode()
    out = CopyRewriter(fmt, plan).rewrite(payload)
    result, raw_out = ref_text_read(out.decode(), delim, "\\N")
    original, raw_in = ref_text_read(line, delim, "\\N")
    assert len(result) == len(columns)
    for (before, cm), orig, after, r_in, r_out in zip(columns, original, result, raw_in, raw_out):
        assert orig == before
        check_masked(before, after, cm)
        if cm is None:
            assert r_out == r_in
    if all(cm is None for cm in plan):
        assert out is payload


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(copy_text_values, text_plans), min_size=1, max_size=8), csv_formats, st.booleans())
def test_copy_csv_properties(columns, fmt, header):
    fmt = CopyFormat(format="csv", delimiter=fmt.delimiter, null=fmt.null, quote=fmt.quote, escape=fmt.escape,
                     header=header)
    plan = [cm for _, cm in columns]
    rw = CopyRewriter(fmt, plan)
    if header:
        head = (fmt.delimiter.join(ref_csv_write(f"col{i}@x.com", fmt) for i in range(len(columns))) + "\n").encode()
        assert rw.rewrite(head) is head
    line = fmt.delimiter.join(ref_csv_write(v, fmt) for v, _ in columns) + "\n"
    original, raw_in = ref_csv_read(line, fmt)
    assert original == [v for v, _ in columns]
    out = rw.rewrite(line.encode())
    result, raw_out = ref_csv_read(out.decode(), fmt)
    assert len(result) == len(columns)
    for (before, cm), after, r_in, r_out in zip(columns, result, raw_in, raw_out):
        check_masked(before, after, cm)
        if cm is None:
            assert r_out == r_in
    if all(cm is None for cm in plan):
        assert out == line.encode()


def copy_binary_tuple(values: list[bytes | None]) -> bytes:
    return data_row(values)  # same layout: Int16 count, then Int32 length + bytes per field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(values, column_masks()), min_size=3, max_size=3), max_size=4))
def test_copy_binary_properties(table):
    # one plan for every row: the first row's masks, in binary format
    first = table[0] if table else [(b"", None)] * 3
    plan = [None if cm is None else ColumnMask(cm.type_oid, 1, whole=cm.whole, scans=cm.scans) for _, cm in first]
    tuples = [copy_binary_tuple([v for v, _ in row]) for row in table]
    payloads = [COPY_SIGNATURE + struct.pack("!ii", 0, 0) + (tuples[0] if tuples else b"")] + tuples[1:] + [b"\xff\xff"]
    rw = CopyRewriter(CopyFormat(format="binary"), plan)
    outs = [rw.rewrite(p) for p in payloads]
    assert outs[0][:19] == payloads[0][:19]
    assert outs[-1] == b"\xff\xff"
    bodies = ([outs[0][19:]] if tuples else []) + outs[1:-1]
    assert len(bodies) == len(table)
    for row, body in zip(table, bodies):
        result = parse_data_row(body)
        assert len(result) == 3
        for (before, _), cm, after in zip(row, plan, result):
            if cm is None or before is None:
                assert after == before
            elif cm.whole is not None:
                if cm.text_like:
                    expected = cm.whole.whole(before.decode("utf-8", "surrogateescape"))
                    assert after == (None if expected is None else expected.encode("utf-8", "surrogateescape"))
                else:
                    assert after is None
            elif not cm.text_like:
                assert after is None or after == before
            elif after is not None:
                assert not has_match(after.decode("utf-8", "surrogateescape"), cm.scans)


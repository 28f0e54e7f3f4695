"""Extended-protocol tracking in the relay: refused statement names, and matching every reply
with what it answers so result rows can be masked (sans-IO, no sockets)."""

from __future__ import annotations

from protocols.postgres import codec
from protocols.postgres.codec import I16, I32
from protocols.postgres.relay import BackendStream, FrontendStream, MaskingBackendStream, Refusals, Tracker

DENIED = codec.error_response("42501", 'wiregate: blocked by rule "r": no')


def check(t: int, body: bytes) -> bytes | None:
    return DENIED if b"DROP" in body else None


# -- frontend messages
def bind(portal: bytes, stmt: bytes, params: list[bytes] = ()) -> bytes:
    body = portal + b"\x00" + stmt + b"\x00" + I16.pack(0) + I16.pack(len(params))
    body += b"".join(I32.pack(len(p)) + p for p in params) + I16.pack(0)
    return codec.message(b"B", body)


def describe(kind: bytes, name: bytes) -> bytes:
    return codec.message(b"D", kind + name + b"\x00")


def execute(portal: bytes = b"") -> bytes:
    return codec.message(b"E", portal + b"\x00" + I32.pack(0))


def close(kind: bytes, name: bytes) -> bytes:
    return codec.message(b"C", kind + name + b"\x00")


SYNC = codec.SYNC


# -- backend messages
def rowdesc(*names: str) -> bytes:
    body = I16.pack(len(names)) + b"".join(
        n.encode() + b"\x00" + I32.pack(0) + I16.pack(0) + I32.pack(25) + I16.pack(-1) + I32.pack(-1) + I16.pack(0)
        for n in names)
    return codec.message(b"T", body)


def datarow(*values: bytes) -> bytes:
    return codec.message(b"D", I16.pack(len(values)) + b"".join(I32.pack(len(v)) + v for v in values))


def complete(tag: bytes = b"SELECT 1") -> bytes:
    return codec.message(b"C", tag + b"\x00")


PARSED, BOUND, CLOSED, NODATA = (codec.message(c, b"") for c in (b"1", b"2", b"3", b"n"))
PARAMS = codec.message(b"t", I16.pack(0))
READY = codec.ready_for_query(b"I")


class Masker:
    """Masks every value of a result whose RowDescription names a column "secret"."""

    def __init__(self) -> None:
        self.plans: list[tuple[str | None, int]] = []

    def row_plan(self, sql, index, row_description):
        if b"secret\x00" not in row_description:
            return None
        self.plans.append((sql, index))
        return "mask"

    def mask_row(self, plan, body):
        return body.replace(b"hunter2", b"*******")

    def copy_plan(self, sql, index, copy_response):
        return "copy" if sql and "secret" in sql else None

    def mask_copy(self, plan, body):
        return body.replace(b"hunter2", b"*******")

    def mask_message(self, body, sql):
        return body.replace(b"hunter2", b"*******")

    def mask_notification(self, body):
        return body.replace(b"hunter2", b"*******")

    def statement_done(self, sql, index, tag):
        self.done = getattr(self, "done", []) + [(sql, index, tag)]


def streams(masker=None):
    refusals = Refusals()
    tracker = Tracker()
    m = masker or Masker()
    return FrontendStream(check, refusals, tracker), MaskingBackendStream(refusals, tracker, m), m


def split_messages(data: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length = I32.unpack_from(data, pos + 1)[0]
        out.append((chr(data[pos]), data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def types(data: bytes) -> str:
    return "".join(t for t, _ in split_messages(data))


def feed_bytewise(stream, data: bytes) -> bytes:
    return b"".join(stream.feed(data[i:i + 1]) for i in range(len(data)))


def test_unnamed_statement_with_portal_describe_is_masked():
    front, back, masker = streams()
    sent = front.feed(codec.parse(b"", b"SELECT secret FROM t") + bind(b"", b"") + describe(b"P", b"") + execute()
                      + SYNC)
    assert types(sent) == "PBDES"
    got = back.feed(PARSED + BOUND + rowdesc("secret") + datarow(b"hunter2") + complete() + READY)
    assert types(got) == "12TDCZ"
    assert b"hunter2" not in got and b"*******" in got
    assert masker.plans == [("SELECT secret FROM t", 0)]


def test_execute_without_describe_gets_an_injected_describe_whose_reply_is_swallowed():
    front, back, masker = streams()
    # asyncpg: prepare (Parse + Describe statement), later Bind + Execute without a Describe
    assert types(front.feed(codec.parse(b"s1", b"SELECT secret FROM t") + describe(b"S", b"s1") + SYNC)) == "PDS"
    assert types(back.feed(PARSED + PARAMS + rowdesc("secret") + READY)) == "1tTZ"
    sent = front.feed(bind(b"", b"s1") + execute() + SYNC)
    assert types(sent) == "BDES"  # the gateway's Describe portal before the Execute
    got = back.feed(BOUND + rowdesc("secret") + datarow(b"hunter2") + datarow(b"hunter2") + complete() + READY)
    assert types(got) == "2DDCZ"  # no RowDescription the client did not ask for
    assert b"hunter2" not in got
    assert masker.plans == [("SELECT secret FROM t", 0)]


def test_byte_by_byte_feeding_gives_the_same_stream():
    front, back, _ = streams()
    data = codec.parse(b"", b"SELECT secret FROM t") + bind(b"", b"", [b"x" * 300]) + execute() + SYNC
    sent = feed_bytewise(front, data)
    assert types(sent) == "PBDES"
    got = feed_bytewise(back, PARSED + BOUND + rowdesc("secret") + datarow(b"hunter2", b"ok") + complete() + READY)
    assert types(got) == "2DCZ"[0:0] + "12DCZ"
    assert b"hunter2" not in got and b"ok" in got


def test_simple_query_plans_follow_the_statement_index():
    front, back, masker = streams()
    front.feed(codec.query("SELECT secret FROM t; SELECT 1 AS other"))
    got = back.feed(rowdesc("secret") + datarow(b"hunter2") + complete() + rowdesc("other") + datarow(b"hunter2")
                    + complete() + READY)
    rows = [body for t, body in split_messages(got) if t == "D"]
    assert b"hunter2" not in rows[0] and b"hunter2" in rows[1]
    assert masker.plans == [("SELECT secret FROM t; SELECT 1 AS other", 0)]
    # the next Query starts counting again
    front.feed(codec.query("SELECT secret FROM t"))
    back.feed(rowdesc("secret") + datarow(b"x") + complete() + READY)
    assert masker.plans[-1][1] == 0


def test_error_skips_expectations_to_sync_and_pipelines_stay_aligned():
    front, back, masker = streams()
    front.feed(codec.parse(b"", b"SELECT nope") + bind(b"", b"") + describe(b"P", b"") + execute() + SYNC
               + codec.parse(b"", b"SELECT secret FROM t") + bind(b"", b"") + describe(b"P", b"") + execute() + SYNC)
    error = codec.error_response("42703", "column does not exist")
    got = back.feed(error + READY + PARSED + BOUND + rowdesc("secret") + datarow(b"hunter2") + complete() + READY)
    assert types(got) == "EZ12TDCZ"
    assert b"hunter2" not in got
    assert not back._tracker.queue


def test_injected_describe_of_a_missing_portal_reports_the_error_once():
    front, back, _ = streams()
    sent = front.feed(execute(b"nope") + SYNC)
    assert types(sent) == "DES"
    got = back.feed(codec.error_response("34000", 'portal "nope" does not exist') + READY)
    assert types(got) == "EZ"
    assert not back._tracker.queue


def test_cursor_declared_in_sql_is_a_portal_too():
    front, back, _ = streams()
    front.feed(codec.query("DECLARE c CURSOR WITH HOLD FOR SELECT secret FROM t"))
    back.feed(complete(b"DECLARE CURSOR") + READY)
    assert types(front.feed(execute(b"c") + SYNC)) == "DES"
    got = back.feed(rowdesc("secret") + datarow(b"hunter2") + codec.message(b"s", b"") + READY)
    assert types(got) == "DsZ" and b"hunter2" not in got


def test_copy_out_rows_go_through_the_copy_plan():
    front, back, _ = streams()
    front.feed(codec.query("COPY (SELECT secret FROM t) TO STDOUT"))
    copy_out = codec.message(b"H", b"\x00" + I16.pack(1) + I16.pack(0))
    got = back.feed(copy_out + codec.message(b"d", b"hunter2\n") + codec.message(b"c", b"") + complete(b"COPY 1") + READY)
    assert types(got) == "HdcCZ" and b"hunter2" not in got


def test_error_and_notice_texts_go_through_the_masker():
    front, back, _ = streams()
    front.feed(codec.query("SELECT secret::int FROM t"))
    got = back.feed(codec.notice_response("saw hunter2") + codec.error_response("22P02", 'invalid input "hunter2"')
                    + READY)
    assert types(got) == "NEZ" and b"hunter2" not in got


def test_unmasked_rows_are_streamed_without_holding():
    front, back, _ = streams()
    front.feed(codec.query("SELECT 1 AS other"))
    back.feed(rowdesc("other"))
    big = datarow(b"y" * 100_000)
    first = back.feed(big[:1000])
    assert first == big[:1000]  # forwarded before the row is complete


def test_bind_and_describe_of_a_refused_statement_are_refused():
    refusals = Refusals()
    front = FrontendStream(check, refusals)
    back = BackendStream(refusals)
    sent = front.feed(codec.parse(b"s1", b"DROP TABLE t") + SYNC)
    assert refusals.prefix in sent
    back.feed(codec.error_response("42601", f'syntax error at or near "{split_marker(sent)}"') + READY)
    # next cycle: the statement name is remembered as refused
    sent = front.feed(bind(b"", b"s1", [b"z" * 50]) + execute() + SYNC)
    assert types(sent) == "PS" and refusals.prefix in sent  # the Bind became a marker, Execute skipped
    got = back.feed(codec.error_response("42601", f'syntax error at or near "{split_marker(sent)}"') + READY)
    assert codec.parse_fields(split_messages(got)[0][1])["C"] == "42501"
    sent = front.feed(describe(b"S", b"s1") + SYNC)
    assert types(sent) == "PS"
    # once closed (or parsed again with an allowed text) the name is free
    back.feed(codec.error_response("42601", f'syntax error at or near "{split_marker(sent)}"') + READY)
    sent = front.feed(close(b"S", b"s1") + bind(b"", b"s1") + SYNC)
    assert types(sent) == "CBS"


def test_a_refused_bind_split_across_chunks_drops_its_tail():
    refusals = Refusals()
    front = FrontendStream(check, refusals)
    front.feed(codec.parse(b"s1", b"DROP TABLE t") + SYNC)
    data = bind(b"", b"s1", [b"q" * 5000]) + execute() + SYNC + codec.query("SELECT 1")
    sent = front.feed(data[:100]) + front.feed(data[100:3000]) + front.feed(data[3000:])
    assert types(sent) == "PSQ"
    assert b"q" * 10 not in sent


def split_marker(sent: bytes) -> str:
    i = sent.rindex(b"wiregate_refused_")
    j = i + len(b"wiregate_refused_") + 13
    while sent[j:j + 1].isdigit():
        j += 1
    return sent[i:j].decode()


# ---------------------------------------------------------------- property: the stream stays valid

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from policy.detectors import DetectorSet  # noqa: E402
from policy.masking import Masker as StyleMasker  # noqa: E402
from protocols.postgres.rows import ColumnMask, RowPlan, mask_data_row, parse_row_description  # noqa: E402

_TYPES = [25, 1043, 23, 20, 1700, 114, 17, 16, 2950]
_SAMPLES = ["", "plain", "bob@example.com", "card 4111 1111 1111 1111 ok", "123-45-6789", "é ünïcode", "42",
            "4111111111111111", '{"mail": "a@b.co"}', "\\x00ff"]


class PlanMasker:
    """A ResultMasker that masks columns as the drawn choices say, with the real row rewriter."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = choices
        self.scans = ((DetectorSet(["email", "credit_card"]), StyleMasker("redact")),)

    def row_plan(self, sql, index, row_description):
        fields = parse_row_description(row_description)
        cols = []
        for i, f in enumerate(fields):
            choice = self.choices[i % len(self.choices)]
            if choice == 0:
                cols.append(None)
            else:
                whole = StyleMasker(["redact", "partial", "hash", "null"][choice % 4], b"k" * 32) if choice >= 2 else None
                cols.append(ColumnMask(f.type_oid, f.format, whole=whole, scans=self.scans))
        return RowPlan(cols)

    def mask_row(self, plan, body):
        return mask_data_row(body, plan)

    def copy_plan(self, *a):
        return None

    def mask_copy(self, plan, body):
        return body

    def mask_message(self, body, sql):
        return body

    def mask_notification(self, body):
        return body

    def statement_done(self, sql, index, tag):
        pass


def _rowdesc_typed(types: list[int], fmt: int) -> bytes:
    body = I16.pack(len(types)) + b"".join(
        f"c{i}".encode() + b"\x00" + I32.pack(0) + I16.pack(0) + I32.pack(t) + I16.pack(-1) + I32.pack(-1)
        + I16.pack(fmt) for i, t in enumerate(types))
    return codec.message(b"T", body)


@st.composite
def results(draw):
    width = draw(st.integers(1, 6))
    types = [draw(st.sampled_from(_TYPES)) for _ in range(width)]
    nrows = draw(st.integers(0, 8))
    value = st.one_of(st.none(), st.sampled_from(_SAMPLES), st.text(max_size=30))
    rows = [[draw(value) for _ in range(width)] for _ in range(nrows)]
    choices = draw(st.lists(st.integers(0, 5), min_size=1, max_size=6))
    cuts = draw(st.lists(st.integers(1, 64), max_size=12))
    return types, rows, choices, cuts


@settings(max_examples=150, deadline=None)
@given(results(), st.sampled_from([0, 1]))
def test_masking_keeps_rows_columns_and_framing(drawn, fmt):
    types, rows, choices, cuts = drawn
    front, back, _ = streams(PlanMasker(choices))
    front.feed(codec.query("SELECT ..."))
    encoded = [[None if v is None else v.encode() for v in row] for row in rows]
    data = (_rowdesc_typed(types, fmt)
            + b"".join(codec.message(b"D", I16.pack(len(r)) + b"".join(
                I32.pack(-1) if v is None else I32.pack(len(v)) + v for v in r)) for r in encoded)
            + complete(f"SELECT {len(rows)}".encode()) + READY)
    out, pos = [], 0
    for cut in cuts + [len(data)]:
        out.append(back.feed(data[pos:pos + cut]))
        pos = min(len(data), pos + cut)
        if pos >= len(data):
            break
    got = split_messages(b"".join(out))  # raises on a broken frame
    assert "".join(t for t, _ in got) == "T" + "D" * len(rows) + "CZ"
    plan = PlanMasker(choices).row_plan(None, 0, _rowdesc_typed(types, fmt)[5:])
    for (_, body), original in zip(got[1:-2], encoded):
        assert I16.unpack_from(body, 0)[0] == len(types)
        values, p = [], 2
        for _ in types:
            n = I32.unpack_from(body, p)[0]
            p += 4
            values.append(None if n < 0 else body[p:p + n])
            p += max(n, 0)
        assert p == len(body)  # nothing left over
        for i, (new, old) in enumerate(zip(values, original)):
            if plan.columns[i] is None:
                assert new == old  # columns without a mask pass byte for byte


def test_a_second_parse_of_a_named_statement_does_not_replace_it():
    # the server refuses it (42P05): rows of the name are still the first statement's
    front, back, masker = streams()
    front.feed(codec.parse(b"s1", b"SELECT secret FROM t") + SYNC)
    back.feed(PARSED + READY)
    front.feed(codec.parse(b"s1", b"SELECT 1 AS harmless") + SYNC)
    back.feed(codec.error_response("42P05", 'prepared statement "s1" already exists') + READY)
    front.feed(bind(b"", b"s1") + execute() + SYNC)
    back.feed(BOUND + rowdesc("secret") + datarow(b"hunter2") + complete() + READY)
    assert masker.plans[-1] == ("SELECT secret FROM t", 0)


def test_statement_names_are_forgotten_when_sql_may_have_redefined_them():
    tracker = Tracker()
    tracker.statements[b"s1"] = "SELECT 1"
    tracker.forget_statements()
    front = FrontendStream(check, Refusals(), tracker)
    front.feed(bind(b"", b"s1") + execute() + SYNC)
    assert tracker.portals[b""][0] is None  # unknown: masking assumes the worst


def test_declarations_count_when_the_server_completes_them():
    front, back, masker = streams()
    front.feed(codec.query("SELECT 1/0; DECLARE c CURSOR FOR SELECT secret FROM t"))
    back.feed(codec.error_response("22012", "division by zero") + READY)
    assert not getattr(masker, "done", [])  # the DECLARE never ran
    front.feed(codec.query("SELECT 1; DECLARE c CURSOR FOR SELECT secret FROM t"))
    back.feed(rowdesc("x") + datarow(b"1") + complete() + complete(b"DECLARE CURSOR") + READY)
    assert masker.done[-1] == ("SELECT 1; DECLARE c CURSOR FOR SELECT secret FROM t", 1, b"DECLARE CURSOR\x00")


def test_statements_are_kept_as_decoded_when_checked():
    seen = []
    tracker = Tracker(lambda raw: seen.append(raw) or raw.decode("latin-1"))
    front = FrontendStream(check, Refusals(), tracker)
    front.feed(codec.parse(b"s", "SELECT 'é'".encode("latin-1")) + SYNC)
    assert tracker.statements[b"s"] == "SELECT 'é'" and seen

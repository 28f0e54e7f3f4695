"""Masking HTTP/MCP bodies: detectors on every string (and key, and number), JSON key rules at any
depth, JSON held in strings, media types, and what is refused (fail closed)."""

from __future__ import annotations

import json
import re

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Rule
from policy.masking import Masker, has_match
from policy.maskrules import MaskSet, compile_mask_rule
from protocols.http import bodymask
from protocols.http.bodymask import MAX_DEPTH, BodyMasker, BodyTooDeep, media_type

KEY = b"k" * 32
EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"
CARD_DIGITS = 4111111111111111
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def masker(*rules: dict) -> BodyMasker:
    errors: list[str] = []
    compiled = [compile_mask_rule(i, Rule(name=f"r{i}", action="mask", **r), errors) for i, r in enumerate(rules)]
    assert not errors
    return BodyMasker(MaskSet(compiled, key=KEY))


def dec(body: bytes | None):
    assert body is not None
    return msgspec.json.decode(body)


DETECT = masker({"detectors": ["email", "credit_card", "aws_key", "bearer_token", "ssn"]})
KEYS = masker({"keys": ["ssn", "*_token", "Password"]})


# ------------------------------------------------------------------ media types


def test_media_type_drops_parameters_and_case():
    assert media_type(b"Application/JSON; charset=UTF-8") == "application/json"
    assert media_type(b" text/plain ") == "text/plain"
    assert media_type(None) == "" and media_type(b"") == ""


def test_masks_media_by_type():
    m = DETECT
    for ct in (b"application/json", b"application/problem+json; charset=utf-8", b"text/html", b"TEXT/CSV",
               b"application/x-ndjson", b"application/xml", b"image/svg+xml", None):
        assert m.masks_media(ct), ct
    for ct in (b"image/png", b"application/octet-stream", b"application/zip", b"multipart/form-data; boundary=x"):
        assert not m.masks_media(ct), ct
    assert not masker({"columns": ["t.c"]}).masks_media(b"application/json")


# ------------------------------------------------------------------ detectors


def test_detectors_scrub_strings_at_any_depth():
    body = json.dumps({"a": {"b": [1, {"c": f"mail {EMAIL} now"}]}, "card": CARD, "ok": "plain"}).encode()
    assert dec(DETECT.mask_json(body)) == {"a": {"b": [1, {"c": "mail **** now"}]}, "card": "****", "ok": "plain"}


def test_detectors_see_through_json_escapes():
    body = b'{"a": "alice\\u0040example.com", "b": "x\\ny"}'
    assert dec(DETECT.mask_json(body)) == {"a": "****", "b": "x\ny"}


def test_keys_are_scrubbed_and_collisions_keep_every_member():
    body = json.dumps({EMAIL: 1, "bob@example.org": 2, "****": 3, "plain": 4}).encode()
    out = DETECT.mask_json(body)
    assert out is not None and EMAIL.encode() not in out and b"bob@" not in out
    # the unmasked key keeps its name; the masked ones take free names
    assert dec(out) == {"****#2": 1, "****#3": 2, "****": 3, "plain": 4}


def test_null_style_detector_match_nulls_the_value_but_not_a_key():
    m = masker({"detectors": ["email"], "style": "null"})
    assert dec(m.mask_json(json.dumps({EMAIL: f"to {EMAIL}", "n": "x"}).encode())) == {"****": None, "n": "x"}


def test_every_value_is_scanned_on_its_own():
    # what comes before a value (its key) must not hide a match that needs a word boundary
    m = masker({"detectors": ["iban", "email"]})
    body = json.dumps({"acct": "DE89370400440532013000", "x": ["k", "DE89 3704 0044 0532 0130 00"],
                       "y": {"z": EMAIL}}).encode()
    assert dec(m.mask_json(body)) == {"acct": "****", "x": ["k", "****"], "y": {"z": "****"}}


def test_escapes_inside_json_held_in_a_string_are_seen():
    inner = '{"e": "alice\\u0040example.com"}'
    body = json.dumps({"t": inner, "u": "plain"}).encode()
    assert b"@" not in body
    assert dec(dec(DETECT.mask_json(body))["t"]) == {"e": "****"}


def test_mask_value_takes_python_floats():
    value = {"n": 4111111111111111.0, "m": 0.5}
    assert DETECT.mask_value(value) == {"n": None, "m": 0.5}


def test_labelled_detectors_see_the_key_as_label():
    body = json.dumps({"SecretAccessKey": AWS_SECRET, "Authorization": "Bearer abc",
                       "other": "Bearer abc", "list": {"authorization": ["Bearer xyz"]}}).encode()
    assert dec(DETECT.mask_json(body)) == {"SecretAccessKey": "****", "Authorization": "Bearer ****",
                                          "other": "Bearer abc", "list": {"authorization": ["Bearer ****"]}}


def test_numbers_holding_a_card_become_null_others_stay_exact():
    big = 2 ** 80 + 1
    body = f'{{"card": {CARD_DIGITS}, "big": {big}, "neg": -{big}, "f": 1.10, "e": 1E400, "x": "{EMAIL}"}}'.encode()
    out = DETECT.mask_json(body)
    assert out == f'{{"card":null,"big":{big},"neg":-{big},"f":1.10,"e":1E400,"x":"****"}}'.encode()


def test_floats_round_trip_exactly_when_reencoded():
    body = b'[4.111111111111111e15, 0.1, -0.0, 10.0e-1, 1e-400, "' + EMAIL.encode() + b'"]'
    assert DETECT.mask_json(body) == b'[4.111111111111111e15,0.1,-0.0,10.0e-1,1e-400,"****"]'


def test_non_bmp_text_is_kept():
    body = json.dumps({"a": f"\U0001F600 {EMAIL} \U0001F600", "b": "\U00010348"}, ensure_ascii=False).encode()
    assert dec(DETECT.mask_json(body)) == {"a": "\U0001F600 **** \U0001F600", "b": "\U00010348"}
    escaped = json.dumps({"a": f"\U0001F600 {EMAIL}"}).encode()  # surrogate pair escapes
    assert dec(DETECT.mask_json(escaped)) == {"a": "\U0001F600 ****"}


# ------------------------------------------------------------------ key rules


def test_key_rules_mask_values_at_any_depth_case_insensitively():
    body = json.dumps({"SSN": "123-45-6789", "user": {"api_TOKEN": "t0k", "items": [{"password": "pw"}]},
                       "name": "bob"}).encode()
    assert dec(KEYS.mask_json(body)) == {"SSN": "****", "user": {"api_TOKEN": "****", "items": [{"password": "****"}]},
                                         "name": "bob"}


def test_key_rule_masks_every_scalar_under_it_keys_stay():
    body = json.dumps({"ssn": {"value": "1", "n": 5, "f": 1.5, "ok": True, "none": None, "l": ["a", [2, False]]}}).encode()
    assert dec(KEYS.mask_json(body)) == {"ssn": {"value": "****", "n": None, "f": None, "ok": None, "none": None,
                                                 "l": ["****", [None, None]]}}


def test_key_rule_numbers_and_booleans_become_null():
    assert dec(KEYS.mask_json(b'{"ssn": 123456789, "a_token": false}')) == {"ssn": None, "a_token": None}


@pytest.mark.parametrize("style,expected", [
    ("redact", "****"),
    ("partial", "*******6789"),
    ("hash", Masker("hash", KEY).token("123-45-6789")),
    ("null", None),
])
def test_key_rule_styles(style, expected):
    m = masker({"keys": ["ssn"], "style": style})
    out = dec(m.mask_json(b'{"ssn": "123-45-6789", "other": "123-45-6789"}'))
    assert out == {"ssn": expected, "other": "123-45-6789"}


def test_hash_style_is_stable_and_keyed():
    m = masker({"keys": ["email"], "style": "hash"})
    out = dec(m.mask_json(json.dumps([{"email": EMAIL}, {"email": EMAIL}, {"email": "b@x.org"}]).encode()))
    assert out[0]["email"] == out[1]["email"] != out[2]["email"]
    assert re.fullmatch(r"hash:[0-9a-f]{16}", out[0]["email"])


def test_nested_key_rules_take_the_stricter_style():
    m = masker({"keys": ["user"], "style": "partial"}, {"keys": ["ssn"], "style": "null"})
    out = dec(m.mask_json(b'{"user": {"name": "bobbyjones", "ssn": "123-45-6789"}}'))
    assert out == {"user": {"name": "******ones", "ssn": None}}


def test_keys_and_detectors_together():
    m = masker({"keys": ["ssn"]}, {"detectors": ["email"], "style": "partial"})
    out = dec(m.mask_json(json.dumps({"ssn": EMAIL, "mail": EMAIL}).encode()))
    assert out == {"ssn": "****", "mail": "*************.com"}


# ------------------------------------------------------------------ JSON in strings


def test_key_rules_reach_json_held_in_mcp_text_content():
    rows = json.dumps([{"id": 1, "ssn": "123-45-6789"}, {"id": 2, "ssn": "987-65-4321"}], indent=2)
    msg = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": rows}]}}
    out = dec(KEYS.mask_json(json.dumps(msg).encode()))
    text = out["result"]["content"][0]["text"]
    assert text == '[{"id":1,"ssn":"****"},{"id":2,"ssn":"****"}]'  # compact once changed
    assert out["id"] == 7 and out["jsonrpc"] == "2.0"


def test_json_in_strings_nests_recursively_and_keeps_text_when_unchanged():
    inner = json.dumps({"ssn": "1"})
    outer = json.dumps({"t": inner})
    body = json.dumps({"x": "  " + outer, "keep": '{ "a" : 1 }', "bad": "[not json " + EMAIL}).encode()
    m = masker({"keys": ["ssn"]}, {"detectors": ["email"]})
    out = dec(m.mask_json(body))
    assert json.loads(json.loads(out["x"])["t"]) == {"ssn": "****"}
    assert out["keep"] == '{ "a" : 1 }'  # not re-serialized
    assert out["bad"] == "[not json ****"  # scrubbed as text


def test_json_string_under_a_key_rule_is_masked_whole():
    assert dec(KEYS.mask_json(json.dumps({"ssn": '{"a": 1}'}).encode())) == {"ssn": "****"}


# ------------------------------------------------------------------ unchanged, duplicates, refusals


def test_nothing_to_mask_returns_the_same_objects():
    body = b'{"a": [1, 2.50, "x"], "b": {"c": null}}'
    for m in (DETECT, KEYS, masker({"columns": ["t.c"]})):
        assert m.mask_json(body) is body
    value = msgspec.json.decode(body)
    assert DETECT.mask_value(value) is value and KEYS.mask_value(value) is value
    text = "nothing here"
    assert DETECT.mask_text(text) is text


def test_fast_path_does_not_decode(monkeypatch):
    class Refuse:
        def decode(self, data):
            raise AssertionError("decoded")

    monkeypatch.setattr(bodymask, "_DECODER", Refuse())
    body = b'{"a": "plain text", "n": [1, 2, 3]}'
    assert DETECT.mask_json(body) is body
    assert DETECT.mask_json(b'{"a": 1') is None  # still validated


def test_duplicate_keys_never_let_an_earlier_value_through():
    out = KEYS.mask_json(b'{"ssn": "123-45-6789", "ssn": null}')
    assert out is not None and b"123-45-6789" not in out and dec(out) == {"ssn": None}
    out = DETECT.mask_json(b'{"a": "' + EMAIL.encode() + b'", "a": "ok", "b": "x:y"}')
    assert out is not None and EMAIL.encode() not in out and dec(out) == {"a": "ok", "b": "x:y"}
    # inside JSON held in a string too
    inner = '{"ssn": "123-45-6789", "ssn": 1}'
    out = KEYS.mask_json(json.dumps({"t": inner}).encode())
    assert out is not None and b"123-45-6789" not in out


def test_colons_in_strings_are_not_duplicates():
    body = b'{"url": "http://x:80/a:b", "t": "12:30", "k": {"a": 1}}'
    assert KEYS.mask_json(body) is body


@pytest.mark.parametrize("body", [b'{"a": 1', b"{'a': 1}", b"[1] 2", b"", b"NaN", b'{"a": "\xff"}',
                                  b'["\xc3"]', b'["\\ud800"]'])
def test_invalid_json_or_utf8_is_refused(body):
    for m in (DETECT, KEYS):
        assert m.mask_json(body) is None


def test_depth_limit():
    ok = b"[" * MAX_DEPTH + b'"' + EMAIL.encode() + b'"' + b"]" * MAX_DEPTH
    assert DETECT.mask_json(ok) == b"[" * MAX_DEPTH + b'"****"' + b"]" * MAX_DEPTH
    deep = b"[" * (MAX_DEPTH + 1) + b'"' + EMAIL.encode() + b'"' + b"]" * (MAX_DEPTH + 1)
    assert DETECT.mask_json(deep) is None
    assert KEYS.mask_json(b'{"a":' * 300 + b"1" + b"}" * 300) is None
    assert KEYS.mask_json(b"[" * 100_000 + b"]" * 100_000) is None
    # JSON held in a string counts on top of the depth it sits at
    held = json.dumps([[["[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3)]]]).encode()
    assert KEYS.mask_json(held) is held
    held = json.dumps([[["[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)]]]).encode()
    assert KEYS.mask_json(held) is None
    value: list = [EMAIL]
    for _ in range(MAX_DEPTH):
        value = [value]
    with pytest.raises(BodyTooDeep):
        DETECT.mask_value(value)


def test_mask_value_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError):
        DETECT.mask_value({"a": object()})


def test_inactive_masker_passes_everything():
    m = masker({"columns": ["t.c"]})
    assert not m.active and DETECT.active and KEYS.active
    body = b"not json " + EMAIL.encode()
    assert m.mask_body(b"application/json", body) is body


# ------------------------------------------------------------------ bodies


def test_mask_body_json_types():
    body = json.dumps({"e": EMAIL}).encode()
    for ct in (b"application/json", b"Application/JSON; charset=utf-8", b"application/vnd.api+json", b"text/json"):
        assert dec(DETECT.mask_body(ct, body)) == {"e": "****"}, ct
    assert DETECT.mask_body(b"application/json", b"{oops") is None


def test_mask_body_json_other_charset_and_bom():
    body = json.dumps({"e": EMAIL, "c": "café"}, ensure_ascii=False).encode("utf-16-le")
    out = DETECT.mask_body(b"application/json; charset=UTF-16LE", body)
    assert json.loads(out.decode("utf-16-le")) == {"e": "****", "c": "café"}
    plain = json.dumps({"c": "café"}).encode("utf-16-le")
    assert DETECT.mask_body(b"application/json; charset=utf-16le", plain) is plain
    bom = b"\xef\xbb\xbf" + json.dumps({"e": EMAIL}).encode()
    assert DETECT.mask_body(b"application/json", bom) == b'\xef\xbb\xbf{"e":"****"}'
    clean = b'\xef\xbb\xbf{"e": 1}'
    assert KEYS.mask_body(b"application/json", clean) is clean


def test_mask_body_text_with_charset():
    body = f"café {EMAIL} card {CARD}\n".encode("latin-1")
    assert DETECT.mask_body(b"text/plain; charset=ISO-8859-1", body) == "café **** card ****\n".encode("latin-1")
    assert DETECT.mask_body(b"text/plain; charset=\"latin1\"", body) is not None
    # default UTF-8: latin-1 bytes do not decode
    assert DETECT.mask_body(b"text/plain", body) is None
    assert DETECT.mask_body(b"text/plain; charset=no-such-charset", b"x") is None
    clean = "plain text é".encode()
    assert DETECT.mask_body(b"text/html", clean) is clean
    # key rules do not apply to text
    text = b'{"ssn": "1"}'
    assert KEYS.mask_body(b"text/plain", text) is text


def test_mask_text_null_style_masks_the_match():
    m = masker({"detectors": ["email"], "style": "null"})
    assert m.mask_text(f"to {EMAIL}.") == "to ****."
    assert m.mask_body(b"application/xml", f"<a>{EMAIL}</a>".encode()) == b"<a>****</a>"


def test_mask_body_ndjson():
    lines = [json.dumps({"e": EMAIL}), "", json.dumps({"ssn": 5}) + "\r", "  ", "\x1e" + json.dumps([EMAIL])]
    body = "\n".join(lines).encode() + b"\n"
    m = masker({"keys": ["ssn"]}, {"detectors": ["email"]})
    out = m.mask_body(b"application/x-ndjson", body)
    assert out == b'{"e":"****"}\n\n{"ssn":null}\r\n  \n\x1e["****"]\n'
    clean = b'{"a": 1}\n{"b": 2}\n'
    for ct in (b"application/x-ndjson", b"application/jsonl"):
        assert m.mask_body(ct, clean) is clean
    assert m.mask_body(b"application/x-ndjson", b'{"a": 1}\n{"b":\n') is None
    assert DETECT.mask_body(b"application/x-ndjson", b'{"a": 1}\nnot json\n') is None


def test_binary_passes_unchanged():
    body = b"\x89PNG\r\n\x1a\n" + EMAIL.encode() + b"\xff\x00"
    for ct in (b"image/png", b"application/octet-stream"):
        assert DETECT.mask_body(ct, body) is body
        assert KEYS.mask_body(ct, body) is body


def test_absent_content_type_is_sniffed():
    assert dec(DETECT.mask_body(None, json.dumps({"e": EMAIL}).encode())) == {"e": "****"}
    assert DETECT.mask_body(None, f"hello {EMAIL}".encode()) == b"hello ****"
    assert DETECT.mask_body(None, b"{ not json " + EMAIL.encode()) == b"{ not json ****"
    binary = b"\xff\xfe" + EMAIL.encode()
    assert DETECT.mask_body(b"", binary) is binary
    # JSON is refused as JSON, not taken as text
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert KEYS.mask_body(None, deep) is None
    assert KEYS.mask_body(None, b'{"ssn": 1}') == b'{"ssn":null}'


def test_text_with_key_rules_only_is_not_looked_at():
    body = "café".encode("latin-1")
    assert not KEYS.masks_media(b"text/plain") and KEYS.masks_media(b"application/json")
    assert KEYS.mask_body(b"text/plain", body) is body


# ------------------------------------------------------------------ properties

CARDS = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]
secret = st.one_of(st.emails(), st.sampled_from(CARDS), st.sampled_from([EMAIL, "bob.smith+x@mail.example.co.uk"]))
sprinkled = st.lists(st.one_of(st.text(max_size=12), secret), max_size=4).map(" ".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    sprinkled)


def _json_values(leaves, keys):
    def extend(children):
        return st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4),
                         children.map(lambda v: json.dumps(v)))  # JSON held in a string
    return st.recursive(leaves, extend, max_leaves=20)


PROPERTY = masker({"detectors": ["email", "credit_card"], "style": "partial"}, {"detectors": ["email"]},
                  {"keys": ["secret*"], "style": "hash"})
SCANS = PROPERTY._scans


def _no_match(v) -> None:
    if isinstance(v, str):
        assert not has_match(v, SCANS), v
        if bodymask._JSON_START.match(v):
            try:
                inner = msgspec.json.decode(v)
            except msgspec.DecodeError:
                return
            _no_match(inner)
    elif isinstance(v, dict):
        for k, x in v.items():
            assert not has_match(k, SCANS), k
            _no_match(x)
    elif isinstance(v, list):
        for x in v:
            _no_match(x)
    elif isinstance(v, int) and not isinstance(v, bool):
        assert not has_match(str(v), SCANS), v


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values(scalars, sprinkled))
def test_property_masked_json_decodes_and_holds_no_match(value):
    body = json.dumps(value).encode()
    out = PROPERTY.mask_json(body)
    assert out is not None
    decoded = msgspec.json.decode(out)
    _no_match(decoded)
    # the decoded path gives the same result
    assert decoded == msgspec.json.decode(msgspec.json.encode(PROPERTY.mask_value(value)))


clean_text = st.text(st.characters(blacklist_characters="@0123456789\\", blacklist_categories=("Cs", "Nd")), max_size=12)
# numbers too short for any digit detector (a float's repr can hold 17 digits)
clean_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(-1e4, 1e4).map(lambda f: round(f, 2)), clean_text)


@settings(max_examples=150, deadline=None)
@given(_json_values(clean_scalars, clean_text))
def test_property_nothing_to_mask_returns_the_input(value):
    m = masker({"detectors": ["email", "credit_card", "ssn", "phone", "iban"], "style": "partial"})
    assert m.mask_value(value) is value
    body = json.dumps(value, ensure_ascii=False).encode()
    assert m.mask_json(body) is body
    escaped = json.dumps(value).encode()  # \u escapes: decoded and walked, still unchanged
    assert m.mask_json(escaped) is escaped

"""Mask styles, detector scrubbing and the HMAC key file."""

from __future__ import annotations

import os
import re
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import WiregateError
from gateway.pgserver import luhn_valid
from policy.detectors import CANONICAL_NAMES, DetectorSet
from policy.masking import (HASH_PREFIX, KEY_BYTES, REDACTED, STYLES, Masker, has_match, load_or_create_key,
                            scrub, strictest)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
ALL = DetectorSet(CANONICAL_NAMES)
HASH_TOKEN = re.compile(r"hash:[0-9a-f]{16}")


def test_redact():
    m = Masker("redact")
    assert m.whole("alice@example.com") == REDACTED == "****"
    assert m.whole("") == REDACTED
    assert m.spans("mail alice@example.com now", [(5, 22)]) == "mail **** now"


def test_partial_keeps_the_last_four_characters():
    m = Masker("partial")
    assert m.whole("4111111111111111") == "************1111"
    assert m.whole("abcde") == "*bcde"
    assert m.whole("résumé-ünïcödé") == "**********cödé"
    for short in ("", "a", "abcd"):
        assert m.whole(short) == REDACTED
    assert m.spans("card 4111 1111 1111 1111 ok", [(5, 24)]) == "card ***************1111 ok"


def test_hash_is_keyed_stable_and_not_the_value():
    a, b, other = Masker("hash", KEY), Masker("hash", KEY), Masker("hash", OTHER_KEY)
    token = a.whole("alice@example.com")
    assert HASH_TOKEN.fullmatch(token)
    assert token.startswith(HASH_PREFIX)
    assert a.whole("alice@example.com") == token == b.whole("alice@example.com")
    assert other.whole("alice@example.com") != token
    assert a.whole("bob@example.com") != token
    assert "alice" not in token
    # the same value hashes alike whether it is a whole value or a detector match (joins across both)
    assert a.spans("to alice@example.com", [(3, 20)]) == f"to {token}"
    # values that are not valid UTF-8 (decoded with surrogateescape) still hash, to distinct tokens
    assert a.whole("a\udcff") != a.whole("a\udcfe")


def test_null():
    m = Masker("null")
    assert m.whole("anything") is None
    assert m.spans("mail alice@example.com", [(5, 22)]) is None
    assert m.is_null and not Masker("redact").is_null


def test_spans_without_spans_return_the_value_itself():
    value = "nothing to see"
    for style in STYLES:
        assert Masker(style, KEY).spans(value, []) is value


def test_masker_validation_and_immutability():
    with pytest.raises(ValueError, match="unknown mask style"):
        Masker("scramble")
    with pytest.raises(ValueError, match="HMAC key"):
        Masker("hash")
    with pytest.raises(ValueError, match="HMAC key"):
        Masker("hash", b"short")
    m = Masker("hash", KEY)
    with pytest.raises(AttributeError):
        m.style = "redact"  # type: ignore[misc]
    assert repr(m) == "Masker('hash')"
    assert "k" * 8 not in repr(m)


def test_mask_strings_do_not_break_quoting():
    forbidden = set("'\"\\,\t\n{}[] ")
    for style in ("redact", "hash"):
        for value in ("x", "alice@example.com", "a,b\t{c}"):
            assert not forbidden & set(Masker(style, KEY).whole(value))
    assert not forbidden & set(Masker("partial").whole("a,b\t{c}d12345")[:-4])


def test_strictest():
    assert strictest(["partial", "hash", "redact"]) == "redact"
    assert strictest(["partial", "null"]) == "null"
    assert strictest(["partial", "hash"]) == "hash"
    with pytest.raises(ValueError):
        strictest([])


# ------------------------------------------------------------------ scrub


def test_scrub_masks_only_the_matches():
    scans = [(DetectorSet(["email"]), Masker("redact")), (DetectorSet(["card"]), Masker("partial"))]
    text = "Send to alice@example.com, card 4111 1111 1111 1111."
    assert scrub(text, scans) == "Send to ****, card ***************1111."
    plain = "nothing here"
    assert scrub(plain, scans) is plain
    assert scrub(text, [(DetectorSet(["email"]), Masker("null"))]) is None


def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def test_scrub_rescans_what_partial_keeps():
    # a card whose kept last four start with 4, then a 9-digit group: after one partial pass the
    # kept "4..." and the group form a new 13-digit Luhn-valid number, which must be masked too
    ds = DetectorSet(["card"])
    card = _luhn_complete("411111111111402")
    group = _luhn_complete(card[-4:] + "00000000")[4:]
    text = f"{card[:4]} {card[4:8]} {card[8:12]} {card[12:]} {group}"
    one_pass = Masker("partial").spans(text, ds.find(text))
    assert one_pass == f"***************{card[12:]} {group}"
    assert ds.find(one_pass), "the kept tail forms a new match"
    out = scrub(text, [(ds, Masker("partial"))])
    assert not ds.find(out)
    assert card[12:] not in out


def test_has_match():
    scans = [(DetectorSet(["ssn"]), Masker("redact"))]
    assert has_match("ssn 123-45-6789", scans)
    assert not has_match("ssn 000-45-6789", scans)


_PIECES = st.sampled_from([
    "0", "1", "4", "5", "4111", "1111", " ", "-", "+", "(", ")", "@", "a", "example.com", "eyJ",
    "hbGciOiJIUzI1NiJ9", "Bearer ", "AKIA", "IOSFODNN7EXAMPLE", "DE89", "3704", "\n", "é",
])
dense_text = st.lists(_PIECES, max_size=50).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(dense_text, st.text(max_size=100)), st.sampled_from(STYLES), st.sampled_from(STYLES))
def test_scrub_leaves_no_match(text, style_a, style_b):
    scans = [(DetectorSet(["email", "card", "ssn", "phone", "iban"]), Masker(style_a, KEY)),
             (DetectorSet(["jwt", "bearer", "aws_key", "private_key"]), Masker(style_b, KEY))]
    out = scrub(text, scans)
    if out is None:
        assert "null" in (style_a, style_b) and has_match(text, scans)
        return
    assert not has_match(out, scans)
    if not has_match(text, scans):
        assert out is text


# ------------------------------------------------------------------ key file


def test_key_is_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "mask.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_key_is_never_overwritten(tmp_path):
    path = tmp_path / "mask.key"
    path.write_bytes(b"x" * 40)
    os.chmod(path, 0o600)
    assert load_or_create_key(path) == b"x" * 40
    assert path.read_bytes() == b"x" * 40


def test_bad_key_files_are_errors(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 5)
    os.chmod(short, 0o600)
    with pytest.raises(WiregateError, match="5 bytes"):
        load_or_create_key(short)
    assert short.read_bytes() == b"x" * 5
    open_ = tmp_path / "open.key"
    open_.write_bytes(b"x" * 32)
    os.chmod(open_, 0o644)
    with pytest.raises(WiregateError, match="chmod 600"):
        load_or_create_key(open_)

"""Value detectors: true positives, near misses, spans, and the quick pre-check's soundness."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.detectors import ALIASES, CANONICAL_NAMES, DETECTOR_NAMES, DetectorSet, canonical

ALL = DetectorSet(CANONICAL_NAMES)


def found(text: str, *names: str) -> list[tuple[str, str]]:
    ds = DetectorSet(names) if names else ALL
    return [(text[s:e], n) for s, e, n in ds.find(text)]


def matched(text: str, name: str) -> list[str]:
    return [t for t, _ in found(text, name)]


# ------------------------------------------------------------------ names


def test_names_and_aliases():
    assert set(CANONICAL_NAMES) <= DETECTOR_NAMES
    for alias, name in ALIASES.items():
        assert canonical(alias) == name
        assert DetectorSet([alias]) == DetectorSet([name])
    assert canonical("email") == "email"
    assert {"card", "us_ssn", "aws_keys", "private_keys", "bearer"} <= DETECTOR_NAMES
    with pytest.raises(KeyError, match="unknown detector 'passport'"):
        canonical("passport")
    with pytest.raises(KeyError):
        DetectorSet(["email", "nope"])


def test_detector_set_is_immutable_and_hashable():
    ds = DetectorSet(["email", "card"])
    with pytest.raises(AttributeError):
        ds.names = frozenset()  # type: ignore[misc]
    assert ds.names == {"email", "credit_card"}
    assert hash(ds) == hash(DetectorSet(["credit_card", "email"]))
    assert not DetectorSet([])
    assert DetectorSet([]).find("alice@example.com") == []
    assert DetectorSet([]).quick_reject(b"alice@example.com 4111111111111111")


# ------------------------------------------------------------------ email


@pytest.mark.parametrize("text, expected", [
    ("alice@example.com", "alice@example.com"),
    ("Mail: <bob.smith+tag@mail.example.co.uk>, thanks", "bob.smith+tag@mail.example.co.uk"),
    ("contact:jo_o-x%y@sub-domain.example.org.", "jo_o-x%y@sub-domain.example.org"),
    ("rené.müller@exämple.de wrote", "rené.müller@exämple.de"),
    ('{"email": "ops@example.net"}', "ops@example.net"),
])
def test_email_found_inside_text(text, expected):
    assert matched(text, "email") == [expected]


@pytest.mark.parametrize("text", [
    "user@localhost", "@example.com", "a@b", "name@domain.c1", "x @ example.com", "no at sign here",
    "foo@.com", "foo@-bar.com",
])
def test_email_near_misses(text):
    assert matched(text, "email") == []


def test_email_spans_are_exact():
    text = "to alice@example.com, cc bob@example.org; done"
    assert found(text, "email") == [("alice@example.com", "email"), ("bob@example.org", "email")]


# ------------------------------------------------------------------ cards


@pytest.mark.parametrize("number", [
    "4111111111111111", "4012888888881881", "5555555555554444", "5105105105105100", "2221000000000009",
    "378282246310005", "371449635398431", "6011111111111117", "6011000990139424", "3530111333300000",
    "4222222222222",  # 13-digit Visa
])
def test_card_numbers(number):
    assert matched(f"card {number} on file", "credit_card") == [number]


@pytest.mark.parametrize("text, expected", [
    ("4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("4111-1111-1111-1111.", "4111-1111-1111-1111"),
    ("Amex 3782 822463 10005 exp 12/27", "3782 822463 10005"),
    ("x4111111111111111y", "4111111111111111"),
])
def test_card_grouped(text, expected):
    assert matched(text, "credit_card") == [expected]


def test_two_grouped_cards_in_a_row_are_both_found():
    text = "Cards: 4111 1111 1111 1111 5500 0000 0000 0004"
    assert matched(text, "card") == ["4111 1111 1111 1111", "5500 0000 0000 0004"]


def test_card_after_a_leading_number_group():
    assert matched("In 2023 4111 1111 1111 1111 was used", "card") == ["4111 1111 1111 1111"]


@pytest.mark.parametrize("text", [
    "4111111111111112",                  # bad Luhn
    "4111 1111 1111 1112",
    "41111111111111110",                 # 17 digits, Luhn fails
    "94111111111111111",                 # a valid card inside a longer digit run
    "41111111111111111000",              # 20 digits
    "123456789012345678901234567890",
    "1700000000000",                     # a millisecond timestamp
    "7992739871300000",                  # Luhn-valid but no card network starts with 7
    "1234567812345670",                  # Luhn-valid, starts with 1
    "411111111111",                      # 12 digits
    "2720 9999 9999 9999 99",            # 2-series must be 16 digits
    "4111  1111  1111  1111",            # double spaces are not card grouping
])
def test_card_near_misses(text):
    assert matched(text, "credit_card") == []


# ------------------------------------------------------------------ SSN


def test_ssn():
    assert matched("SSN 123-45-6789.", "ssn") == ["123-45-6789"]
    assert matched("ssn:078-05-1120", "us_ssn") == ["078-05-1120"]


@pytest.mark.parametrize("text", [
    "000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321", "123-00-4567", "123-45-0000",
    "123456789",            # undashed form is not detected (documented)
    "1123-45-6789", "123-45-67890", "12-345-6789", "123 45 6789",
])
def test_ssn_near_misses(text):
    assert matched(text, "ssn") == []


# ------------------------------------------------------------------ phone


@pytest.mark.parametrize("text, expected", [
    ("call (555) 123-4567 now", "(555) 123-4567"),
    ("(555)123-4567", "(555)123-4567"),
    ("555-123-4567", "555-123-4567"),
    ("555.123.4567", "555.123.4567"),
    ("1-800-555-1234", "1-800-555-1234"),
    ("+14155552671", "+14155552671"),
    ("+44 20 7946 0958", "+44 20 7946 0958"),
    ("+1 (201) 555-0142", "+1 (201) 555-0142"),
    ("+49-30-901820", "+49-30-901820"),
    ("tel:+33.1.23.45.67.89", "+33.1.23.45.67.89"),
])
def test_phone_formats(text, expected):
    assert matched(text, "phone") == [expected]


@pytest.mark.parametrize("text", [
    "5551234567", "15551234567", "id 1234567890123", "1700000000000",   # bare digit runs
    "2024-01-15", "2024-01-15T10:11:12+05:30", "555-1234", "555-123.4567",  # dates, mixed separators
    "123-45-6789",            # SSN-shaped
    "x+12345678", "+123 45",  # no word before "+", at least 8 digits
    "+1234567890123456789",   # too long for E.164
    "192.168.100.200",
])
def test_phone_near_misses(text):
    assert matched(text, "phone") == []


# ------------------------------------------------------------------ IBAN


@pytest.mark.parametrize("iban", [
    "DE89 3704 0044 0532 0130 00", "GB29 NWBK 6016 1331 9268 19", "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00", "BE68 5390 0754 7034", "NO93 8601 1117 947", "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
    "CH93 0076 2011 6238 5295 7", "IT60 X054 2811 1010 0000 0123 456", "LC55 HEMM 0001 0001 0012 0012 0002 3015",
    "GB29NWBK60161331926819", "DE89370400440532013000",
])
def test_iban(iban):
    assert matched(f"pay to {iban} today", "iban") == [iban]


def test_iban_followed_by_another_group_keeps_its_own_length():
    assert matched("BE68 5390 0754 7034 2024 invoice", "iban") == ["BE68 5390 0754 7034"]


@pytest.mark.parametrize("text", [
    "DE89 3704 0044 0532 0130 01",     # bad checksum
    "DE88370400440532013000",
    "DE89 3704 0044 0532 0130",        # too short for DE
    "DE8937040044053201300000",        # too long for DE (a longer alphanumeric run)
    "ZZ89370400440532013000",          # no such country
    "de89370400440532013000",          # lowercase
    "XDE89370400440532013000",         # inside a longer word
    "DE89  3704 0044 0532 0130 00",    # double space
])
def test_iban_near_misses(text):
    assert matched(text, "iban") == []


# ------------------------------------------------------------------ AWS keys


def test_aws_access_key_ids():
    assert matched("key AKIAIOSFODNN7EXAMPLE used", "aws_key") == ["AKIAIOSFODNN7EXAMPLE"]
    assert matched("ASIAY34FZKBOKMUTVV7A", "aws_keys") == ["ASIAY34FZKBOKMUTVV7A"]
    assert matched("XAKIAIOSFODNN7EXAMPLE", "aws_key") == []
    assert matched("AKIAIOSFODNN7EXAMPLEX", "aws_key") == []
    assert matched("AKIAiosfodnn7example", "aws_key") == []


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("text", [
    f"aws_secret_access_key = {SECRET}",
    f"export AWS_SECRET_ACCESS_KEY={SECRET}",
    f'{{"SecretAccessKey": "{SECRET}", "x": 1}}',
    f"aws-secret-key: '{SECRET}'",
    f"secret_access_key => {SECRET}",
])
def test_aws_secret_keys_only_the_secret(text):
    assert matched(text, "aws_key") == [SECRET]


def test_aws_secret_needs_a_label():
    assert matched(f"value {SECRET} here", "aws_key") == []
    assert matched(f"aws_secret_access_key = {SECRET}XYZ", "aws_key") == []  # not 40 characters


# ------------------------------------------------------------------ private keys

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy\n-----END RSA PRIVATE KEY-----"


def test_private_key_block():
    text = f"key:\n{PEM}\ntrailer"
    assert matched(text, "private_key") == [PEM]
    for label in ("PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        block = f"-----BEGIN {label}-----\nabc\n-----END {label}-----"
        assert matched(f"x {block} y", "private_keys") == [block]
    pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----"
    assert matched(pgp, "private_key") == [pgp]


def test_truncated_private_key_is_masked_to_the_end():
    text = "leaked: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    assert matched(text, "private_key") == [text[len("leaked: "):]]


def test_two_private_keys_and_non_keys():
    text = f"{PEM} and {PEM}"
    assert matched(text, "private_key") == [PEM, PEM]
    assert matched("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "private_key") == []
    assert matched("the PRIVATE KEY is elsewhere", "private_key") == []


# ------------------------------------------------------------------ JWT and bearer tokens

TOKEN = pyjwt.encode({"sub": "alice", "n": 1}, "a-test-signing-key-of-32-bytes-or-more", algorithm="HS256")


def test_jwt():
    assert TOKEN.startswith("eyJ")
    assert matched(f"token={TOKEN}&x=1", "jwt") == [TOKEN]
    unsecured = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."
    assert matched(f"{unsecured} rest", "jwt") == [unsecured]
    jwe = "eyJhbGciOiJSU0EtT0FFUCJ9.OKOawDo13gRp.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYI.XFBoMYUZodetZdvTiFvSkQ"
    assert matched(jwe, "jwt") == [jwe]


@pytest.mark.parametrize("text", [
    "eyJ", "eyJhbGc.x.y", "neyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9",
])
def test_jwt_near_misses(text):
    assert matched(text, "jwt") == []


def test_bearer_tokens():
    assert matched("Authorization: Bearer abc", "bearer_token") == ["abc"]
    assert matched('"authorization": "bearer xyz-123"', "bearer") == ["xyz-123"]
    assert matched("curl -H 'Bearer ghp_16C7e42F292c6912E7710c838347Ae178B4a'", "bearer") == [
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a"]
    assert matched("BEARER abcdefGHIJKLmnopq", "bearer") == ["abcdefGHIJKLmnopq"]


@pytest.mark.parametrize("text", [
    "the bearer of bad news", "Bearer Internationalization", "bearer", "Bearer abc123", "bearerabcdefghijklmnop123",
])
def test_bearer_near_misses(text):
    assert matched(text, "bearer") == []


def test_overlapping_matches_merge():
    text = f"Authorization: Bearer {TOKEN} ok"
    spans = ALL.find(text)
    assert [(text[s:e], n) for s, e, n in spans] == [(TOKEN, "bearer_token")]


def test_spans_are_sorted_and_disjoint():
    text = (f"{TOKEN} alice@example.com 4111 1111 1111 1111 123-45-6789 (555) 123-4567 "
            f"DE89 3704 0044 0532 0130 00 AKIAIOSFODNN7EXAMPLE {PEM}")
    spans = ALL.find(text)
    assert [n for _, _, n in spans] == ["jwt", "email", "credit_card", "ssn", "phone", "iban", "aws_key",
                                        "private_key"]
    for (s1, e1, _), (s2, e2, _) in zip(spans, spans[1:]):
        assert s1 < e1 <= s2 < e2


def test_fake_customer_data_is_found():
    from gateway.pgserver import fake_customers

    for row in fake_customers(30):
        assert matched(row["email"], "email") == [row["email"]]
        assert matched(row["card"], "card") == [row["card"]]
        assert matched(row["ssn"], "ssn") == [row["ssn"]]
        assert matched(row["phone"], "phone") == [row["phone"]]
        assert found(row["note"], "email")


# ------------------------------------------------------------------ quick_reject


def test_quick_reject():
    assert ALL.quick_reject(b"The quick brown fox jumps over the lazy dog 42 times")
    assert ALL.quick_reject(b"")
    assert ALL.quick_reject(b"order 12345678 shipped")  # 8 digits, no + or -: nothing can match
    for positive in ["alice@example.com", "4111111111111111", "123-45-6789", "+44 20 7946 0958",
                     "(555) 123-4567", "GB29NWBK60161331926819", "AKIAIOSFODNN7EXAMPLE",
                     f"aws_secret_access_key={SECRET}", PEM, TOKEN, "Authorization: Bearer x"]:
        assert ALL.find(positive), positive
        assert not ALL.quick_reject(positive.encode()), positive
    # only the detectors of the set count
    assert DetectorSet(["email"]).quick_reject(b"4111111111111111")
    assert DetectorSet(["card"]).quick_reject(b"alice@example.com")
    assert not DetectorSet(["ssn"]).quick_reject(b"123-45-6789")


# an alphabet dense in what detectors look for, so generated text often comes close to a match
_PIECES = st.sampled_from([
    "0", "1", "4", "5", "9", "4111", "1111", " ", "-", ".", "+", "(", ")", "@", "a", "Z", "DE", "89", "GB29",
    "example.com", "eyJ", "hbGciOiJIUzI1NiJ9", "Bearer ", "AKIA", "IOSFODNN7EXAMPLE", "aws_secret_access_key=",
    "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "\n", "é", "ソ", "K", "_", "/",
])
dense_text = st.lists(_PIECES, max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(dense_text, st.text(max_size=120)))
def test_quick_reject_never_hides_a_match(text):
    for names in (CANONICAL_NAMES, ["email"], ["card", "ssn"], ["phone"], ["iban"], ["aws_key", "bearer"],
                  ["jwt", "private_key"]):
        ds = DetectorSet(names)
        spans = ds.find(text)
        for encoding in ("utf-8", "latin-1", "cp932"):
            try:
                data = text.encode(encoding)
            except UnicodeEncodeError:
                continue
            if spans:
                assert not ds.quick_reject(data), (names, text, encoding)


@settings(max_examples=300, deadline=None)
@given(st.one_of(dense_text, st.text(max_size=120)))
def test_find_returns_sorted_disjoint_spans_within_the_text(text):
    spans = ALL.find(text)
    for s, e, name in spans:
        assert 0 <= s < e <= len(text) and name in CANONICAL_NAMES
    for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert e1 <= s2

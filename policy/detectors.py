"""Value detectors: sensitive substrings found anywhere in a text value.

A mask rule's ``detectors`` names some of these; ``DetectorSet(names)`` compiles them once and
``find(text)`` returns the spans to mask. Every detector is validated past its regex where a
checksum or a registry exists, so ids, timestamps and ordinary numbers are left alone:

==============  =============================================================================
name (aliases)  what matches
==============  =============================================================================
email           ``local@domain.tld`` (Unicode letters allowed, the TLD is 2-63 letters)
credit_card     13-19 digits, optionally grouped by single spaces or dashes, Luhn-valid, with
(card)          a card-network first digit (3, 4, 5, 6, or 2221-2720 for 16 digits). A bare digit
                run longer than 19 is never a card; a grouped sequence (``4111 1111 ...``) is
                split at its group boundaries, so two grouped cards in a row are both found.
ssn (us_ssn)    ``ddd-dd-dddd`` with a valid area (not 000, 666, 900-999), group (not 00) and
                serial (not 0000). The undashed 9-digit form is NOT detected: nine-digit runs
                are everywhere (ids, ZIP+4, routing numbers); a column that stores undashed
                SSNs is masked by a ``columns`` rule, not by a detector.
phone           formatted numbers only: ``+`` followed by 8-15 digits with optional separators
                (E.164, ``+44 20 7946 0958``, ``+1 (555) 123-4567``), and North American
                ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567`` (optionally led by ``1-``).
                Bare digit runs never match, so ids and timestamps are not masked.
iban            country code + check digits + BBAN, compact or in groups of four separated by
                single spaces, uppercase; the length must be the registry's length for that
                country and the ISO 7064 mod-97 checksum must hold.
aws_key         access key ids (``AKIA``, ``ASIA`` ... + 16 characters); 40-character secret
(aws_keys)      keys only after a label (``aws_secret_access_key = ...``,
                ``"SecretAccessKey": "..."``): only the secret is masked, not the label.
private_key     a whole PEM block ``-----BEGIN ... PRIVATE KEY-----`` ... ``-----END ...``
(private_keys)  (PGP ``PRIVATE KEY BLOCK`` too); a block cut off before its END line is masked to
                the end of the value.
jwt             three (JWS) to five (JWE) base64url segments whose header starts ``eyJ``
                (``{"``); the whole token is masked.
bearer_token    the token after ``Bearer`` (any case): masked when at least 16 characters and
(bearer)        token-like (a digit, a symbol or mixed case), or of any length after an
                ``Authorization:`` label. The word ``Bearer`` itself is kept.
==============  =============================================================================

Limits: digits are ASCII ``0-9`` only (full-width digits are not detected); detection is
textual, so a value written with escapes (``alice\\u0040example.com`` in JSON) is not seen.

``quick_reject(data)`` is the hot-path pre-check on raw bytes in any ASCII-compatible encoding
(every PostgreSQL client encoding is one): it returns True only when no detector of the set
can match, from necessary conditions (digit count, ``@``, fixed markers), in about a
microsecond per 100 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CANONICAL_NAMES", "ALIASES", "DETECTOR_NAMES", "DetectorSet", "canonical", "Span"]

CANONICAL_NAMES: tuple[str, ...] = (
    "email", "credit_card", "ssn", "phone", "iban", "aws_key", "private_key", "jwt", "bearer_token",
)
ALIASES: dict[str, str] = {
    "card": "credit_card",
    "us_ssn": "ssn",
    "aws_keys": "aws_key",
    "private_keys": "private_key",
    "bearer": "bearer_token",
}
DETECTOR_NAMES: frozenset[str] = frozenset(CANONICAL_NAMES) | frozenset(ALIASES)
_CANONICAL_SET = frozenset(CANONICAL_NAMES)

Span = tuple[int, int, str]


def canonical(name: str) -> str:
    """The canonical detector name for ``name`` (an alias or a canonical name); KeyError if unknown."""
    if name in _CANONICAL_SET:
        return name
    try:
        return ALIASES[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTOR_NAMES))}") from None


# --------------------------------------------------------------------------- email

# The local part may only start where the previous character could not belong to it: without
# that lookbehind, a long word before an "@" is rescanned from every one of its positions.
_EMAIL = re.compile(r"(?<![\w.%+\-])[\w.%+\-]+@(?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,63}")


def _find_email(text: str, out: list[Span]) -> None:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        out.append((m.start(), m.end(), "email"))


# --------------------------------------------------------------------------- payment cards

# A region of digits, spaces and dashes from a digit to a digit, at least 13 characters long;
# split at doubled separators, it gives the chunks "digits separated by single spaces or dashes".
# (A character-class repeat: the regex engine runs it far faster than a repeated group.)
_DIGIT_REGION = re.compile(r"[0-9](?<![0-9][0-9])[0-9 \-]{11,}[0-9]")
_DOUBLE_SEPARATOR = re.compile(r"[ \-]{2,}")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # 2d, minus 9 when above 9


def _luhn(digits: str) -> bool:
    b = digits.encode("ascii")
    # summing bytes is a C loop; every ASCII digit is its value + 48
    return (sum(b[-1::-2]) + sum(b[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(b)) % 10 == 0


def _card_number(digits: str) -> bool:
    n = len(digits)
    if n < 13 or n > 19:
        return False
    first = digits[0]
    if first == "2":
        # Mastercard's 2-series: 2221-2720, 16 digits
        if n != 16 or not "2221" <= digits[:4] <= "2720":
            return False
    elif first not in "3456":
        # 1, 7, 8, 9 and 0 lead no card network's numbers; 13-19 digit ids often start with them
        return False
    return _luhn(digits)


def _find_cards(text: str, out: list[Span]) -> None:
    for m in _DIGIT_REGION.finditer(text):
        region = m.group()
        base = m.start()
        if region.isdigit():
            # one bare run: a card only if the whole run is one (never a slice of a longer number)
            if _card_number(region):
                out.append((base, m.end(), "credit_card"))
            continue
        pos = 0
        for sep in _DOUBLE_SEPARATOR.finditer(region):
            _card_chunk(region[pos:sep.start()], base + pos, out)
            pos = sep.end()
        _card_chunk(region[pos:], base + pos, out)


def _card_chunk(chunk: str, base: int, out: list[Span]) -> None:
    """Cards in digits separated by single spaces or dashes (``chunk`` starts and ends with a digit)."""
    digits = chunk.replace(" ", "").replace("-", "")
    if len(digits) < 13:
        return
    # the usual case first: the whole chunk is one number
    if len(digits) <= 19 and _card_number(digits):
        out.append((base, base + len(chunk), "credit_card"))
        return
    if len(digits) == len(chunk):
        return  # a bare run longer than a card
    groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(chunk)]
    i, n = 0, len(groups)
    while i < n:
        # the longest run of whole groups from group i that is a card number
        best = -1
        digits = ""
        for j in range(i, n):
            s, e = groups[j]
            digits += chunk[s:e]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _card_number(digits):
                best = j
        if best >= 0:
            out.append((base + groups[i][0], base + groups[best][1], "credit_card"))
            i = best + 1
        else:
            i += 1


# --------------------------------------------------------------------------- US SSN

# anchored on the first dash (rarer than digits, so the engine skips ahead to it); the area is the
# three digits before it
_SSN = re.compile(r"-(?<=(?<![0-9])[0-9]{3}-)([0-9]{2})-([0-9]{4})(?![0-9])")


def _find_ssn(text: str, out: list[Span]) -> None:
    for m in _SSN.finditer(text):
        start = m.start() - 3
        area = text[start:m.start()]
        group, serial = m.groups()
        if area == "000" or area == "666" or area[0] == "9" or group == "00" or serial == "0000":
            continue
        out.append((start, m.end(), "ssn"))


# --------------------------------------------------------------------------- phone

# Two patterns, each starting with a fixed character, so the regex engine can skip to candidates.
_PHONE_PAREN = re.compile(r"\([0-9]{3}\) ?[0-9]{3}[ .\-][0-9]{4}(?![0-9])")
# anchored on the first separator, the area code being the three digits before it
_PHONE_DASHED = re.compile(r"([.\-])(?<=(?<![0-9])[0-9]{3}[.\-])[0-9]{3}\1[0-9]{4}(?![0-9])")
# "+", then digits with at most one separator between them, or a parenthesised area code
_PHONE_INTL = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9])){3,16}(?![0-9])")
_NOT_DIGIT = re.compile(r"[^0-9]+")


def _nanp_start(text: str, start: int) -> int:
    """Where a North American number starting at ``start`` really starts: a leading ``1-`` belongs to it."""
    if start >= 2 and text[start - 2] == "1" and text[start - 1] in " .-":
        if start == 2 or not "0" <= text[start - 3] <= "9":
            return start - 2
    return start


def _find_phone(text: str, out: list[Span]) -> None:
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if 8 <= len(_NOT_DIGIT.sub("", m.group())) <= 15:
                out.append((m.start(), m.end(), "phone"))
    if "(" in text:
        for m in _PHONE_PAREN.finditer(text):
            out.append((_nanp_start(text, m.start()), m.end(), "phone"))
    for m in _PHONE_DASHED.finditer(text):
        out.append((_nanp_start(text, m.start() - 3), m.end(), "phone"))


# --------------------------------------------------------------------------- IBAN

# IBAN lengths by country: the SWIFT IBAN registry, the territories that use another country's
# format under their own code, and the countries with published (experimental) formats.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    # territories using the French, British and Finnish formats
    "GF": 27, "GP": 27, "MQ": 27, "RE": 27, "PF": 27, "TF": 27, "YT": 27, "NC": 27, "BL": 27, "MF": 27,
    "PM": 27, "WF": 27, "IM": 22, "JE": 22, "GG": 22, "AX": 18,
    # published formats outside the registry
    "DZ": 26, "AO": 25, "BJ": 28, "BF": 28, "CM": 27, "CV": 25, "CF": 27, "TD": 27, "KM": 27, "CG": 27,
    "CI": 28, "GQ": 27, "GA": 27, "GW": 25, "IR": 26, "MG": 27, "ML": 28, "MA": 28, "MZ": 25, "NE": 28,
    "SN": 28, "TG": 28,
}
# matches the check digits (digits are rarer than capitals, so the engine skips ahead on them);
# the country code is the two capitals before, which must start a word
_IBAN_CHECK = re.compile(r"[0-9](?<=(?<![A-Za-z0-9])[A-Z][A-Z][0-9])[0-9]")
_IBAN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _iban_checksum(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _find_iban(text: str, out: list[Span]) -> None:
    n = len(text)
    for m in _IBAN_CHECK.finditer(text):
        start = m.start() - 2
        length = _IBAN_LENGTHS.get(text[start:m.start()])
        if length is None:
            continue
        chars = [text[start:m.end()]]
        count = 4
        i = m.end()
        # the country's length exactly, spaces allowed only between groups of four
        while count < length and i < n:
            c = text[i]
            if c == " " and count % 4 == 0 and i + 1 < n and text[i + 1] in _IBAN_CHARS:
                i += 1
                continue
            if c not in _IBAN_CHARS:
                break
            chars.append(c)
            count += 1
            i += 1
        if count != length or (i < n and text[i] in _ALNUM):
            continue
        if _iban_checksum("".join(chars)):
            out.append((start, i, "iban"))


# --------------------------------------------------------------------------- AWS keys

_AWS_ID_SUFFIXES = "KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA|3T[A-Z0-9]"
_AWS_ID = re.compile(rf"A(?<![A-Z0-9]A)(?:{_AWS_ID_SUFFIXES})[A-Z0-9]{{16}}(?![A-Z0-9])")
_SEP = r"[_\-. ]?"
_AWS_SECRET = re.compile(
    rf"(?:aws{_SEP}secret{_SEP}(?:access{_SEP})?key|secret{_SEP}access{_SEP}key)"
    r"[\"']?(?:\s*(?:=>|[:=])\s*|\s+)[\"']?"
    r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE | re.ASCII,
)


def _find_aws(text: str, out: list[Span]) -> None:
    for m in _AWS_ID.finditer(text):
        out.append((m.start(), m.end(), "aws_key"))
    # a case-insensitive pattern gets no prefix scan from the regex engine: look for the label first
    if "secret" in text.lower():
        for m in _AWS_SECRET.finditer(text):
            out.append((m.start(1), m.end(1), "aws_key"))


# --------------------------------------------------------------------------- private keys

_PEM_LABEL = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_PRIVATE_KEY = re.compile(rf"-----BEGIN{_PEM_LABEL}(?:.*?-----END{_PEM_LABEL}|.*\Z)", re.DOTALL)


def _find_private_key(text: str, out: list[Span]) -> None:
    if "PRIVATE KEY" not in text:
        return
    for m in _PRIVATE_KEY.finditer(text):
        out.append((m.start(), m.end(), "private_key"))


# --------------------------------------------------------------------------- JWT

_B64 = r"[A-Za-z0-9_\-]"
_JWT = re.compile(rf"(?<!{_B64})eyJ{_B64}{{8,}}\.{_B64}{{2,}}\.{_B64}*(?:\.{_B64}*){{0,2}}")


def _find_jwt(text: str, out: list[Span]) -> None:
    if "eyJ" not in text:
        return
    for m in _JWT.finditer(text):
        out.append((m.start(), m.end(), "jwt"))


# --------------------------------------------------------------------------- bearer tokens

_BEARER = re.compile(r"[Bb](?<![A-Za-z0-9][Bb])(?i:earer)[ \t]+([A-Za-z0-9\-._~+/]+=*)", re.ASCII)
# what may precede "Bearer" to make any token length count: the Authorization label
_AUTH_LABEL = re.compile(r"authorization[\"']?\s*[:=]\s*[\"']?\Z", re.IGNORECASE | re.ASCII)
_TOKEN_SYMBOLS = frozenset("0123456789-._~+/=")


def _token_like(token: str) -> bool:
    if len(token) < 16:
        return False
    if not _TOKEN_SYMBOLS.isdisjoint(token):
        return True
    # letters only: a token has mixed case past its first letter, an English word does not
    rest = token[1:]
    return not (rest.islower() or rest.isupper())


def _find_bearer(text: str, out: list[Span]) -> None:
    for m in _BEARER.finditer(text):
        if _token_like(m.group(1)) or _AUTH_LABEL.search(text, max(0, m.start() - 64), m.start()):
            out.append((m.start(1), m.end(1), "bearer_token"))


# --------------------------------------------------------------------------- the set

_AWS_ID_HINT = re.compile(rb"A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA|3T)").search
# every byte to its class: capital letter "A", digit "0", anything else "."; one C-speed pass
# gives the digit count and whether an IBAN start (two capitals, two digits) is there
_CLASSES = bytes(65 if 65 <= b <= 90 else 48 if 48 <= b <= 57 else 46 for b in range(256))


class DetectorSet:
    """A compiled set of detectors; immutable, shareable between sessions and threads.

    Both ``find`` and ``quick_reject`` first test each detector's necessary conditions on the
    ASCII bytes of the text (digit count, ``@``, fixed markers): a few C-speed byte scans
    decide which regexes run at all, so ordinary values cost about a microsecond.
    """

    __slots__ = ("names", "_email", "_card", "_ssn", "_phone", "_iban", "_aws", "_pem", "_jwt", "_bearer",
                 "_count_digits", "_lower")

    def __init__(self, names: Iterable[str]):
        canon = frozenset(canonical(n) for n in names)
        set_ = object.__setattr__
        set_(self, "names", canon)
        for name in CANONICAL_NAMES:
            set_(self, _FLAG[name], name in canon)
        set_(self, "_count_digits", bool(canon & {"credit_card", "ssn", "phone", "iban"}))
        set_(self, "_lower", bool(canon & {"aws_key", "bearer_token"}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DetectorSet is immutable")

    def __repr__(self) -> str:
        return f"DetectorSet({sorted(self.names)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DetectorSet) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __bool__(self) -> bool:
        return bool(self.names)

    def find(self, text: str) -> list[Span]:
        """Sorted, non-overlapping ``(start, end, name)`` spans of ``text`` to mask.

        Overlapping matches of different detectors (a JWT after ``Bearer``) merge into one span
        covering both, named after the one that starts first.
        """
        out: list[Span] = []
        # UTF-8 keeps every ASCII character as its own byte: the byte checks below see what the
        # regexes would see (surrogatepass: a value decoded with surrogateescape still encodes)
        data = text.encode("utf-8", "surrogatepass")
        find = data.find
        if self._count_digits:
            classes = data.translate(_CLASSES)
            digits = classes.count(48)
        else:
            classes, digits = b"", 0
        if self._email and find(b"@") >= 0:
            _find_email(text, out)
        if digits >= 8:
            if self._card and digits >= 13:
                _find_cards(text, out)
            if self._ssn and digits >= 9 and find(b"-") >= 0:
                _find_ssn(text, out)
            if self._phone and (digits >= 10 or find(b"+") >= 0):
                _find_phone(text, out)
        if self._iban and digits >= 2 and classes.find(b"AA00") >= 0:
            _find_iban(text, out)
        if self._lower:
            low = data.lower()
            if self._aws and (low.find(b"secret") >= 0 or _AWS_ID_HINT(data) is not None):
                _find_aws(text, out)
            if self._bearer and low.find(b"bearer") >= 0:
                _find_bearer(text, out)
        if self._pem and find(b"PRIVATE KEY") >= 0:
            _find_private_key(text, out)
        if self._jwt and find(b"eyJ") >= 0:
            _find_jwt(text, out)
        if len(out) < 2:
            return out
        out.sort()
        merged = [out[0]]
        for s, e, name in out[1:]:
            ps, pe, pname = merged[-1]
            if s < pe:
                if e > pe:
                    merged[-1] = (ps, e, pname)
            else:
                merged.append((s, e, name))
        return merged

    def quick_reject(self, data: bytes) -> bool:
        """True when no detector of the set can match the text ``data`` encodes.

        ``data`` is text in an ASCII-compatible encoding (UTF-8, LATIN1, SJIS...): every check
        here is a necessary condition of a detector (the same ones ``find`` uses to pick its
        regexes), stated on ASCII bytes, so a True is never wrong; a False only means ``find``
        has to look.
        """
        find = data.find
        if self._count_digits:
            classes = data.translate(_CLASSES)
            digits = classes.count(48)
            if digits >= 8:
                if self._card and digits >= 13:
                    return False
                if self._phone and (digits >= 10 or find(b"+") >= 0):
                    return False
                if self._ssn and digits >= 9 and find(b"-") >= 0:
                    return False
            if self._iban and digits >= 2 and classes.find(b"AA00") >= 0:
                return False
        if self._email and find(b"@") >= 0:
            return False
        if self._jwt and find(b"eyJ") >= 0:
            return False
        if self._pem and find(b"PRIVATE KEY") >= 0:
            return False
        if self._lower:
            low = data.lower()
            if self._bearer and low.find(b"bearer") >= 0:
                return False
            if self._aws and (low.find(b"secret") >= 0 or _AWS_ID_HINT(data) is not None):
                return False
        return True


_FLAG = {
    "email": "_email", "credit_card": "_card", "ssn": "_ssn", "phone": "_phone", "iban": "_iban",
    "aws_key": "_aws", "private_key": "_pem", "jwt": "_jwt", "bearer_token": "_bearer",
}

"""Sans-IO codec for PostgreSQL frontend/backend protocol 3.0.

Pure functions that build and parse messages, plus helpers for the startup
packet. No sockets here: the proxy session feeds bytes in and writes what comes
out. See https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

from __future__ import annotations

import struct
from typing import NamedTuple

I32 = struct.Struct("!i")
U32 = struct.Struct("!I")
I16 = struct.Struct("!h")
HEADER = struct.Struct("!cI")

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# PostgreSQL's own limit for a startup packet (MAX_STARTUP_PACKET_LENGTH)
MAX_STARTUP_PACKET = 10000

# Message type bytes, as ints (indexing bytes gives ints)
Q_QUERY = 0x51  # Q
P_PARSE = 0x50  # P
F_FUNCTION_CALL = 0x46  # F
S_SYNC = 0x53  # S (frontend) / ParameterStatus (backend)
X_TERMINATE = 0x58  # X
E_ERROR = 0x45  # E (backend) / Execute (frontend)
Z_READY = 0x5A  # Z
R_AUTH = 0x52  # R
K_BACKEND_KEY = 0x4B  # K
N_NOTICE = 0x4E  # N
V_NEGOTIATE = 0x76  # v

HTTP_PREFIXES = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ")


class ProtocolViolation(Exception):
    """The peer sent bytes that are not valid protocol; the session must end."""


class StartupPacket(NamedTuple):
    kind: str  # "startup" | "ssl" | "gssenc" | "cancel"
    version: int = 0
    params: dict[str, str] | None = None
    cancel_pid: int = 0
    cancel_key: bytes = b""


# ---------------------------------------------------------------- builders


def message(kind: bytes, body: bytes) -> bytes:
    return kind + I32.pack(len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


AUTH_OK = message(b"R", I32.pack(0))
AUTH_CLEARTEXT = message(b"R", I32.pack(3))
SYNC = message(b"S", b"")
FLUSH = message(b"H", b"")
TERMINATE = message(b"X", b"")


def _fields(severity: str, code: str, text: str, detail: str | None, hint: str | None,
            position: int | None) -> bytes:
    parts = [b"S", cstr(severity), b"V", cstr(severity), b"C", cstr(code), b"M", cstr(text)]
    if detail:
        parts += [b"D", cstr(detail)]
    if hint:
        parts += [b"H", cstr(hint)]
    if position:
        parts += [b"P", cstr(str(position))]
    parts.append(b"\x00")
    return b"".join(parts)


def error_response(code: str, text: str, *, severity: str = "ERROR", detail: str | None = None,
                   hint: str | None = None, position: int | None = None) -> bytes:
    return message(b"E", _fields(severity, code, text, detail, hint, position))


def notice_response(text: str, *, code: str = "00000", severity: str = "NOTICE",
                    detail: str | None = None, hint: str | None = None) -> bytes:
    return message(b"N", _fields(severity, code, text, detail, hint, None))


def fatal(code: str, text: str, *, hint: str | None = None) -> bytes:
    return error_response(code, text, severity="FATAL", hint=hint)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, key: bytes) -> bytes:
    return message(b"K", I32.pack(pid) + key)


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def negotiate_protocol_version(minor: int, unsupported: list[str]) -> bytes:
    body = I32.pack(minor) + I32.pack(len(unsupported)) + b"".join(cstr(o) for o in unsupported)
    return message(b"v", body)


def startup_message(params: dict[str, str]) -> bytes:
    body = I32.pack(PROTOCOL_3_0) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return I32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return I32.pack(8) + I32.pack(SSL_REQUEST_CODE)


def cancel_request(pid: int, key: bytes) -> bytes:
    body = I32.pack(CANCEL_REQUEST_CODE) + I32.pack(pid) + key
    return I32.pack(len(body) + 4) + body


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def parse(name: bytes, sql: bytes) -> bytes:
    """A Parse with no parameter types; ``name`` and ``sql`` are raw bytes without terminator."""
    return message(b"P", name + b"\x00" + sql + b"\x00" + I16.pack(0))


def password_message(secret: bytes) -> bytes:
    return message(b"p", secret + b"\x00")


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", cstr(mechanism) + I32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(b"p", data)


# ---------------------------------------------------------------- parsers


def looks_like_http(prefix: bytes) -> bool:
    return prefix[:4] in HTTP_PREFIXES


def startup_length(buf: bytes | bytearray) -> int | None:
    """Length of the startup packet at the head of ``buf``, or None if fewer than 4 bytes are there."""
    if len(buf) < 4:
        return None
    length = I32.unpack_from(buf, 0)[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise ProtocolViolation(f"invalid startup packet length {length}")
    return length


def parse_startup(packet: bytes) -> StartupPacket:
    """Parse a whole startup-phase packet (length word included)."""
    code = I32.unpack_from(packet, 4)[0]
    if code == SSL_REQUEST_CODE:
        return StartupPacket("ssl")
    if code == GSSENC_REQUEST_CODE:
        return StartupPacket("gssenc")
    if code == CANCEL_REQUEST_CODE:
        if len(packet) < 16:
            raise ProtocolViolation("invalid cancel request length")
        return StartupPacket("cancel", cancel_pid=I32.unpack_from(packet, 8)[0], cancel_key=bytes(packet[12:]))
    major = code >> 16
    if major != 3:
        return StartupPacket("startup", version=code, params={})
    parts = bytes(packet[8:]).split(b"\x00")
    # the list ends with the packet's terminator: ["k", "v", ..., "", ""]
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolViolation("startup packet is not terminated")
    parts = parts[:-2]
    if len(parts) % 2:
        raise ProtocolViolation("startup packet has a parameter without a value")
    params: dict[str, str] = {}
    for i in range(0, len(parts), 2):
        try:
            k, v = parts[i].decode(), parts[i + 1].decode()
        except UnicodeDecodeError as e:
            raise ProtocolViolation("startup parameters are not valid UTF-8") from e
        if not k:
            raise ProtocolViolation("startup packet has an empty parameter name")
        params[k] = v
    return StartupPacket("startup", version=code, params=params)


def parse_fields(body: bytes, encoding: str = "utf-8", errors: str = "replace") -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body, decoded from ``encoding``."""
    out: dict[str, str] = {}
    pos = 0
    n = len(body)
    while pos < n and body[pos] != 0:
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            raise ProtocolViolation("error field is not NUL-terminated")
        out[chr(body[pos])] = body[pos + 1:end].decode(encoding, errors)
        pos = end + 1
    return out


def split_cstr(body: bytes, pos: int) -> tuple[bytes, int]:
    """The NUL-terminated string at ``pos`` and the position after its terminator."""
    end = body.find(b"\x00", pos)
    if end < 0:
        raise ProtocolViolation("string is not NUL-terminated")
    return body[pos:end], end + 1


def parse_parse(body: bytes) -> tuple[bytes, bytes]:
    """(statement name, query text) of a Parse message body."""
    name, pos = split_cstr(body, 0)
    sql, _ = split_cstr(body, pos)
    return name, sql


def parse_query(body: bytes) -> bytes:
    sql, _ = split_cstr(body, 0)
    return sql


# ---------------------------------------------------------------- start-up settings

# start-up parameters that are not server settings
_NOT_SETTINGS = frozenset({"user", "database", "replication", "options"})


def startup_settings(params: dict[str, str]) -> list[tuple[str, str]]:
    """The server settings a start-up packet asks for: its parameters, and the ``-c name=value``
    / ``--name=value`` switches in ``options`` (words split on spaces, ``\\`` escapes the next
    character, as PostgreSQL reads them). Raises ValueError for any other switch."""
    out = [(k, v) for k, v in params.items() if k not in _NOT_SETTINGS]
    words: list[str] = []
    word: list[str] = []
    escaped = False
    for ch in params.get("options", ""):
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-c" and i + 1 < len(words):
            setting, i = words[i + 1], i + 2
        elif w.startswith("-c") and len(w) > 2:
            setting, i = w[2:], i + 1
        elif w.startswith("--") and len(w) > 2:
            setting, i = w[2:], i + 1
        else:
            raise ValueError(f"the switch {w!r} is not a -c name=value setting")
        name, eq, value = setting.partition("=")
        if not eq or not name:
            raise ValueError(f"{setting!r} is not name=value")
        out.append((name.replace("-", "_"), value))
    return out


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# PostgreSQL client_encoding names and the Python codec for each
PG_ENCODINGS = {
    "UTF8": "utf-8", "UNICODE": "utf-8", "SQL_ASCII": "utf-8", "LATIN1": "latin-1", "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3", "LATIN4": "iso8859-4", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15", "LATIN10": "iso8859-16",
    "WIN1250": "cp1250", "WIN1251": "cp1251", "WIN1252": "cp1252", "WIN1253": "cp1253", "WIN1254": "cp1254",
    "WIN1255": "cp1255", "WIN1256": "cp1256", "WIN1257": "cp1257", "WIN1258": "cp1258", "WIN866": "cp866",
    "WIN874": "cp874", "KOI8R": "koi8-r", "KOI8U": "koi8-u", "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8", "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr", "EUC_CN": "gb2312", "SJIS": "shift_jis", "BIG5": "big5", "GBK": "gbk",
    "UHC": "cp949", "GB18030": "gb18030", "JOHAB": "johab", "SHIFT_JIS_2004": "shift_jis_2004",
    "EUC_JIS_2004": "euc_jis_2004",
}
# PostgreSQL matches encoding names ignoring case and anything not a letter or digit
_PG_ENCODINGS_LOOSE = {"".join(ch for ch in k if ch.isalnum()): v for k, v in PG_ENCODINGS.items()}


def python_encoding(pg_name: str) -> str:
    """The Python codec for a PostgreSQL encoding name ("" when the gateway has none)."""
    return _PG_ENCODINGS_LOOSE.get("".join(ch for ch in pg_name.upper() if ch.isalnum()), "")

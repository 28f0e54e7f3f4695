"""Request paths as rules see them (protocols/http/paths.py): normalisation, including the
classic bypass spellings of ``/admin``, request-target splitting and routing to a target."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.http.paths import BadPath, normalize_path, route, split_target

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

# ---- normalize_path: table ---------------------------------------------------------------

NORMALIZED = [
    ("/", "/"),
    ("/admin", "/admin"),
    ("/admin/", "/admin/"),
    ("/admin/users", "/admin/users"),
    # bypass spellings of /admin: every one must read as /admin
    ("//admin", "/admin"),
    ("///admin//", "/admin/"),
    ("/./admin", "/admin"),
    ("/a/../admin", "/admin"),
    ("/a/b/../../admin", "/admin"),
    ("/../admin", "/admin"),
    ("/../../../admin", "/admin"),
    ("/%2e%2e/admin", "/admin"),
    ("/%2E%2E/admin", "/admin"),
    ("/%2e/admin", "/admin"),
    ("/x/%2e%2E/admin", "/admin"),
    ("/x/.%2e/admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/%41DMIN", "/ADMIN"),
    ("/%61%64%6D%69%6e", "/admin"),
    ("/ad%6Din/x", "/admin/x"),
    # an encoded slash is not a separator: it stays, upper-cased, and ".." beside it is no segment
    ("/admin%2f..", "/admin%2F.."),
    ("/admin%2F..", "/admin%2F.."),
    ("/a%2f%2e%2e/admin", "/a%2F../admin"),
    # reserved characters stay escaped, with upper-case hex
    ("/a%3fb", "/a%3Fb"),
    ("/a%3Fb", "/a%3Fb"),
    ("/%25", "/%25"),
    ("/%2561", "/%2561"),  # %25 is "%": decoding it would make a second escape
    ("/%c3%a9", "/%C3%A9"),
    ("/a%20b", "/a%20b"),
    # trailing dot segments keep the directory form
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/.", "/a/"),
    ("/a/..", "/"),
    ("/..", "/"),
    ("/.", "/"),
    ("/a//", "/a/"),
    # dots that are not whole segments are names
    ("/a/...", "/a/..."),
    ("/a/..b/.c", "/a/..b/.c"),
    ("/a/b..", "/a/b.."),
    # sub-delimiters and the like pass untouched
    ("/a;b=c/d:e@f", "/a;b=c/d:e@f"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZED)
def test_normalize_table(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", ["/%", "/%4", "/a%zz", "/%g1", "/%%41", "/%4%41", "/a/%"])
def test_normalize_refuses_broken_escapes(raw: str) -> None:
    with pytest.raises(BadPath, match="two hex digits"):
        normalize_path(raw)


@pytest.mark.parametrize("raw", ["/%00", "/a%00b", "/admin/%00/x"])
def test_normalize_refuses_encoded_nul(raw: str) -> None:
    with pytest.raises(BadPath, match="NUL"):
        normalize_path(raw)


@pytest.mark.parametrize("raw", ["", "admin", "a/../admin", "*", "%2Fadmin", "http://h/admin"])
def test_normalize_refuses_a_path_without_leading_slash(raw: str) -> None:
    # it used to drop the first segment silently: "x/admin" read as "/admin"
    with pytest.raises(BadPath, match="starting with /"):
        normalize_path(raw)


def test_bad_path_is_a_value_error() -> None:
    assert issubclass(BadPath, ValueError)


# ---- normalize_path: properties ----------------------------------------------------------

def _spell(b: int, case: int) -> str:
    low, up = f"{b:02x}", f"{b:02X}"
    return "%" + (low, up, up[0] + low[1], low[0] + up[1])[case]


_ESCAPE = st.builds(_spell, st.integers(1, 255), st.integers(0, 3))
_SEGMENT = st.lists(
    st.one_of(st.sampled_from(list(UNRESERVED + "!$&'()*+,;=:@")), _ESCAPE,
              st.sampled_from([".", "..", "%2e", "%2E%2e", "%2F", "%2f"])),
    max_size=6).map("".join)
PATHS = st.lists(_SEGMENT, min_size=1, max_size=8).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=200, deadline=None)
@given(PATHS)
def test_normalize_is_idempotent(path: str) -> None:
    once = normalize_path(path)
    assert normalize_path(once) == once


@settings(max_examples=200, deadline=None)
@given(PATHS)
def test_normalize_leaves_no_empty_or_dot_segment(path: str) -> None:
    out = normalize_path(path)
    assert out.startswith("/")
    assert "//" not in out
    body = out[1:].removesuffix("/")
    segments = body.split("/") if body else []
    assert all(seg not in ("", ".", "..") for seg in segments)
    assert "/./" not in out and "/../" not in out and not out.endswith(("/.", "/.."))


@settings(max_examples=200, deadline=None)
@given(PATHS)
def test_normalize_decodes_unreserved_only(path: str) -> None:
    out = normalize_path(path)
    left = re.findall(r"%(..)", out)
    # every escape left is upper-case hex of a character that is not unreserved ...
    assert all(re.fullmatch(r"[0-9A-F]{2}", e) and chr(int(e, 16)) not in UNRESERVED for e in left)
    # ... and came from the input (dot segments may drop some, none is made up) ...
    kept = Counter(e.upper() for e in re.findall(r"%(..)", path) if chr(int(e, 16)) not in UNRESERVED)
    assert not Counter(left) - kept
    # ... and no reserved character was decoded: each one in the output was there literally
    literal_in, literal_out = re.sub(r"%..", "", path), re.sub(r"%..", "", out)
    for ch in set(literal_out) - set(UNRESERVED):
        assert literal_out.count(ch) <= literal_in.count(ch), ch


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_normalize_raises_only_bad_path(text: str) -> None:
    try:
        out = normalize_path("/" + text)
    except BadPath:
        return
    assert out.startswith("/")


def test_reserved_escapes_are_never_decoded() -> None:
    for b in range(1, 256):
        ch = chr(b)
        out = normalize_path(f"/x%{b:02x}y")
        if ch in UNRESERVED:
            assert out == f"/x{ch}y"
        else:
            assert out == f"/x%{b:02X}y"


# ---- split_target ------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "expected"), [
    ("/", ("/", "")),
    ("/a/b", ("/a/b", "")),
    ("/a/b?x=1&y=2", ("/a/b", "x=1&y=2")),
    ("/a?", ("/a", "")),
    ("/a?b?c", ("/a", "b?c")),
    ("/a%20b?q=%41", ("/a%20b", "q=%41")),
    ('/a?q="<x>"|{}^`[]\\', ("/a", 'q="<x>"|{}^`[]\\')),
    ("/a;p=1/b", ("/a;p=1/b", "")),
])
def test_split_target(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(("target", "why"), [
    ("/a#frag", "fragment"),
    ("/a?x=1#frag", "fragment"),
    ("a/b", "starting with /"),
    ("", "starting with /"),
    ("*", "starting with /"),
    ("http://h/a", "starting with /"),
    ("?x", "starting with /"),
    ("/a b", "characters a URI may not"),
    ("/a\\b", "characters a URI may not"),
    ("/é", "characters a URI may not"),
    ("/a\x00", "characters a URI may not"),
    ("/a\tb", "characters a URI may not"),
    ("/a?x y", "query string"),
    ("/a?x\r\n", "query string"),
    ("/a?é", "query string"),
])
def test_split_target_refuses(target: str, why: str) -> None:
    with pytest.raises(BadPath, match=why):
        split_target(target)


# ---- route ---------------------------------------------------------------------------------

TARGETS = frozenset({"tools", "api"})


@pytest.mark.parametrize(("path", "host", "expected"), [
    ("/tools/mcp", None, ("tools", "/mcp")),
    ("/tools", None, ("tools", "/")),
    ("/tools/", None, ("tools", "/")),
    ("/tools/a/b", "gateway.example.com", ("tools", "/a/b")),
    ("/mcp", "tools.example.com", ("tools", "/mcp")),
    ("/api/x", "tools.example.com", ("tools", "/api/x")),  # the host wins; the path goes as it is
    ("/tools/x", "tools.gw.example.com:8443", ("tools", "/tools/x")),
    ("/api/x", "nothere.example.com", ("api", "/x")),  # a host naming no target: the path decides
    ("/api/x", "tools", ("api", "/x")),  # a bare host name (no dot) names no target
    ("/api/x", "", ("api", "/x")),
    ("/", None, None),
    ("/other/x", None, None),
    ("/toolsx/a", None, None),
    ("/other/x", "other.example.com", None),
    ("/Tools/x", None, None),  # names are matched exactly
])
def test_route(path: str, host: str | None, expected: tuple[str, str] | None) -> None:
    assert route(path, host, TARGETS) == expected


def test_route_after_normalize_sees_bypass_spellings() -> None:
    # the listener routes the normalised path: an encoded or dotted target name is still that target
    for raw in ("/%74ools/mcp", "//tools/mcp", "/x/../tools/mcp", "/./tools//mcp"):
        assert route(normalize_path(raw), None, TARGETS) == ("tools", "/mcp")

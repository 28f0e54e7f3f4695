"""Request paths as rules see them, and which target a request is for.

Rules match the path the *target* will act on, so the gateway decides on the same string it
forwards: percent-encoded unreserved characters are decoded (``/%61dmin`` is ``/admin``), the
remaining escapes are upper-cased, dot segments are removed and repeated slashes merged (as nginx
does by default). Otherwise ``//admin``, ``/x/../admin`` or ``/%61dmin`` would slip past a rule on
``/admin/*`` and still reach ``/admin`` at a target that normalises for itself. An encoded slash
(``%2F``) stays encoded: it is not a segment boundary to the gateway, and forwarded as it came.
"""

from __future__ import annotations

import re
from collections.abc import Container

__all__ = ["BadPath", "normalize_path", "split_target", "route"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
# what RFC 3986 allows in a path, escapes included (checked after decoding nothing)
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]|^`{}\"<>\\]*")


class BadPath(ValueError):
    """A request-target the gateway will not forward (the message says why)."""


def split_target(target: str) -> tuple[str, str]:
    """``/a/b?x=1`` -> (``/a/b``, ``x=1``); the query is "" when absent. A fragment is refused
    (clients never send one) as is anything outside the characters a URI may hold."""
    path, sep, query = target.partition("?")
    if "#" in target:
        raise BadPath("a request-target must not carry a fragment (#...)")
    if not path.startswith("/"):
        raise BadPath("the request-target must be a path starting with /")
    if not _PATH_CHARS.fullmatch(path):
        raise BadPath("the path holds characters a URI may not (escape them with %XX)")
    if sep and not _QUERY_CHARS.fullmatch(query):
        raise BadPath("the query string holds characters a URI may not (escape them with %XX)")
    return path, query


def _decode_unreserved(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return ch if ch in _UNRESERVED else "%" + m.group(1).upper()


def normalize_path(path: str) -> str:
    """The canonical form of an origin-form path (see the module docstring). Raises ``BadPath``
    for a ``%`` not followed by two hex digits, for an encoded NUL and for a path that does not
    start with ``/`` (its first segment would silently be lost)."""
    if not path.startswith("/"):
        raise BadPath("the request-target must be a path starting with /")
    if "%" in path:
        if path.count("%") != len(_PCT.findall(path)):
            raise BadPath("the path has a % that is not followed by two hex digits")
        if "%00" in path:
            raise BadPath("the path holds an encoded NUL (%00)")
        path = _PCT.sub(_decode_unreserved, path)
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg not in (".", ""):
            out.append(seg)
    trailing = segments[-1] in ("", ".", "..") and len(segments) > 2 and out
    return "/" + "/".join(out) + ("/" if trailing else "")


def route(path: str, host: str | None, targets: Container[str]) -> tuple[str, str] | None:
    """The target a request is for and the path to forward, or None.

    ``Host: TARGET.<anything>`` names the target and the path goes as it is; otherwise the first
    path segment names it and is taken off (``/tools/mcp`` -> ``tools``, ``/mcp``).
    """
    if host:
        name = host.split(".", 1)[0] if "." in host else ""
        if name and name in targets:
            return name, path
    first, _, rest = path[1:].partition("/")
    if first and first in targets:
        return first, "/" + rest
    return None

"""Glob sets and shell command-line splitting for rule matching.

Globs are ``fnmatch`` patterns (``*``, ``?``, ``[...]``), matched case-sensitively against
the whole string: target names, group names, MCP tool names and SSH command lines are all
case-sensitive where they come from.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable, Sequence

EVERYONE = "*"


class GlobSet:
    """A list of globs compiled into one regex; ``matches`` is true when any glob matches."""

    __slots__ = ("patterns", "everything", "_match")

    def __init__(self, patterns: Sequence[str]):
        self.patterns = tuple(patterns)
        # "*" matches every string; keep that as a flag so the common default costs nothing
        self.everything = EVERYONE in self.patterns
        if self.patterns:
            joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns)
            self._match = re.compile(joined).match
        else:
            self._match = None

    def matches(self, value: str) -> bool:
        if self.everything:
            return True
        return self._match is not None and self._match(value) is not None

    def matches_any(self, values: Iterable[str]) -> bool:
        """True when one of ``values`` matches; ``"*"`` matches even an empty ``values``."""
        if self.everything:
            return True
        return any(self.matches(v) for v in values)

    def first_match(self, value: str) -> str | None:
        """The first pattern (in list order) that matches ``value``, for messages."""
        for p in self.patterns:
            if fnmatch.fnmatchcase(value, p):
                return p
        return None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


# Characters that let one command line run more than one program, substitute the output of
# another, or redirect files. A line containing any of them (quoted or not) is not a
# "simple command" for allow rules.
_COMPOUND = re.compile(r"[;&|\n\r`<>()]|\$\(|\$\{")
# Where a line is split into segments for deny/review matching. Splitting also inside
# quotes over-approximates on purpose: a deny rule may then match a little too much,
# never too little.
_SEPARATORS = re.compile(r"\$\(|[;&|\n\r`()<>{}]+")
_SPACES = re.compile(r"\s+")


def normalize_command(line: str) -> str:
    """Collapse runs of whitespace and strip, so `rm  -rf /` and `rm -rf /` compare equal."""
    return _SPACES.sub(" ", line).strip()


def _unquoted(segment: str) -> str | None:
    """The segment as the shell would pass its words (quotes and backslashes removed)."""
    try:
        words = shlex.split(segment, posix=True)
    except ValueError:
        return None
    return " ".join(words)


def command_candidates(line: str) -> list[str]:
    """Every string a deny/review command glob is tried against.

    The whole line, then each segment between shell separators (``;``, ``&&``, ``|``,
    newlines, ``$(``, backticks, parentheses, redirections), each both as written and
    with shell quoting removed. ``echo ok; "rm" -rf /`` thus yields ``rm -rf /``.
    """
    seen: dict[str, None] = {}
    whole = normalize_command(line)
    if whole:
        seen[whole] = None
    for raw in _SEPARATORS.split(line):
        seg = normalize_command(raw)
        if not seg:
            continue
        seen[seg] = None
        unq = _unquoted(seg)
        if unq:
            seen[normalize_command(unq)] = None
    unq_whole = _unquoted(whole)
    if unq_whole:
        seen[normalize_command(unq_whole)] = None
    return list(seen)


def simple_command(line: str) -> str | None:
    """The normalized line when it is one simple command (allow rules), else None."""
    if _COMPOUND.search(line):
        return None
    unq = _unquoted(line)
    if unq is None:
        return None
    return normalize_command(unq)

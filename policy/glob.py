"""Glob sets and shell command-line splitting for rule matching.

Globs are ``fnmatch`` patterns (``*``, ``?``, ``[...]``), matched case-sensitively against
the whole string: target names, group names, MCP tool names and SSH command lines are all
case-sensitive where they come from.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Sequence

EVERYONE = "*"
# the schemas holding an object of a given name, from the catalog (None: unknown)
Where = Callable[[str], "Collection[str] | None"]


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


REGEX_PREFIX = "re:"


def pattern_problem(pattern: str) -> str | None:
    """Why a ``command`` / ``file`` entry is unusable (empty, a bad ``re:`` regex), or None."""
    if not pattern.strip():
        return "empty pattern"
    if pattern.startswith(REGEX_PREFIX):
        try:
            re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as exc:
            return f"invalid regular expression: {exc}"
    return None


class PatternSet:
    """Globs and ``re:`` regexes for command lines and file operations.

    A glob must match the whole string. A regex (``re:^rm\\s+-[a-z]*r``) is searched
    (``re.search``) when matching for deny/review, and must match the whole string
    (``re.fullmatch``) when matching for allow, so an allow regex cannot cover more than it
    says. Both are case-sensitive, like the commands and paths they match.
    """

    __slots__ = ("patterns", "_globs", "_regexes")

    def __init__(self, patterns: Sequence[str]):
        self.patterns = tuple(patterns)
        self._globs = GlobSet([p for p in self.patterns if not p.startswith(REGEX_PREFIX)])
        self._regexes = tuple((p, re.compile(p[len(REGEX_PREFIX):])) for p in self.patterns
                              if p.startswith(REGEX_PREFIX))

    def first_match(self, value: str, *, full: bool) -> str | None:
        """The first entry matching ``value`` (``full``: regexes must match all of it), or None."""
        if self._globs.matches(value):
            return self._globs.first_match(value) or EVERYONE
        for text, rx in self._regexes:
            if (rx.fullmatch(value) if full else rx.search(value)) is not None:
                return text
        return None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"PatternSet({list(self.patterns)!r})"


class NameGlobs:
    """Globs on relation or function names as the SQL analysis reports them.

    A reference is ``schema.name`` when written qualified, else ``name``; a part that itself
    holds a dot or a double quote is written quoted (``"my.table"``), so the split is never
    ambiguous. A pattern without a dot matches the name in any schema; ``schema.name``
    matches a qualified reference when both parts match.

    An unqualified reference lives in whichever schema of the session's search_path holds
    that name first, which the gateway does not see. ``where(name)`` answers from the
    catalog with the schemas that hold an object of that name (None: no catalog). For deny
    and review (``matches``) the reference matches when the pattern's schema part matches one
    of them, or by name alone when the catalog has no answer. For allow (``covers``) every
    such schema must match, and without an answer only a pattern whose schema part is ``*``
    covers it. Matching is case-sensitive: PostgreSQL has already folded unquoted
    identifiers to lower case.
    """

    __slots__ = ("patterns", "_split")

    def __init__(self, patterns: Sequence[str]):
        self.patterns = tuple(patterns)
        split: list[tuple[str | None, str]] = []
        for p in self.patterns:
            schema, dot, name = p.partition(".")
            split.append((schema, name) if dot else (None, p))
        self._split = tuple(split)

    def _matches(self, ref: str, where: Where | None, *, covering: bool) -> bool:
        schema, name = split_qualified(ref)
        candidates = where(name) if schema is None and where is not None else None
        for ps, pn in self._split:
            if not fnmatch.fnmatchcase(name, pn):
                continue
            if ps is None:
                return True
            if schema is not None:
                if fnmatch.fnmatchcase(schema, ps):
                    return True
            elif candidates:
                hits = [fnmatch.fnmatchcase(c, ps) for c in candidates]
                if all(hits) if covering else any(hits):
                    return True
            elif ps == EVERYONE or not covering:
                return True
        return False

    def first_match(self, refs: Iterable[str], where: Where | None = None) -> str | None:
        """The first reference (sorted) that a pattern matches; None when none does."""
        for ref in sorted(refs):
            if self._matches(ref, where, covering=False):
                return ref
        return None

    def covers(self, refs: Iterable[str], where: Where | None = None) -> bool:
        return all(self._matches(ref, where, covering=True) for ref in refs)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"NameGlobs({list(self.patterns)!r})"


_QUALIFIED = re.compile(r'("(?:[^"]|"")*"|[^".]*)(?:\.|$)')


def split_qualified(ref: str) -> tuple[str | None, str]:
    """``schema.name`` -> (schema, name); ``name`` -> (None, name); quoted parts unquoted.

    More than two parts (``db.schema.name``) keep the last two.
    """
    if "." not in ref:
        return None, ref
    parts: list[str] = []
    pos = 0
    while pos <= len(ref):
        m = _QUALIFIED.match(ref, pos)
        if m is None or m.end() == pos:
            break
        part = m.group(1)
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            part = part[1:-1].replace('""', '"')
        parts.append(part)
        pos = m.end()
    if len(parts) < 2:
        return None, parts[0] if parts else ref
    return parts[-2], parts[-1]

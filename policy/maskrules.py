"""Mask rules, compiled: which source columns they cover, which detectors they run, in which style.

Every mask rule that applies to a session stacks (SPEC): a column covered by several rules is
masked in the style of the first one in file order; detectors of every rule run over every
value, each rule's matches masked in that rule's style, rules in file order.

A ``columns`` glob is ``table.column`` (any schema) or ``schema.table.column``, matched
case-sensitively against the *source* column of a result column (see docs/policy.md, Masking):
PostgreSQL has already folded unquoted identifiers to lower case.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

import msgspec

from gateway.config import Rule
from policy.detectors import DetectorSet, canonical
from policy.masking import Masker, Scan, strictest

__all__ = ["MaskRule", "MaskSet", "compile_mask_rule"]


class MaskRule(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str
    style: str
    # (schema glob or None, table glob, column glob)
    columns: tuple[tuple[str | None, str, str], ...] = ()
    detectors: tuple[str, ...] = ()
    # JSON key name globs (HTTP and MCP bodies), matched case-insensitively
    keys: tuple[str, ...] = ()


def compile_mask_rule(i: int, rule: Rule, errors: list[str]) -> MaskRule:
    where = f"rules[{i}]"
    columns: list[tuple[str | None, str, str]] = []
    for j, glob in enumerate(rule.columns):
        parts = glob.split(".")
        if len(parts) == 2 and all(parts):
            columns.append((None, parts[0], parts[1]))
        elif len(parts) == 3 and all(parts):
            columns.append((parts[0], parts[1], parts[2]))
        else:
            errors.append(f"{where}.columns[{j}]: {glob!r} is not a column glob: write table.column, *.column "
                          "or schema.table.column")
    detectors: list[str] = []
    for j, name in enumerate(rule.detectors):
        try:
            canon = canonical(name)
        except KeyError:
            errors.append(f"{where}.detectors[{j}]: unknown detector {name!r} (see docs/policy.md)")
            continue
        if canon not in detectors:
            detectors.append(canon)
    keys: list[str] = []
    for j, glob in enumerate(rule.keys):
        if not glob or not glob.strip():
            errors.append(f"{where}.keys[{j}]: must be a key name glob like \"email\" or \"*_token\"")
        elif glob.lower() not in keys:
            keys.append(glob.lower())
    return MaskRule(index=i, name=rule.name, style=rule.style, columns=tuple(columns), detectors=tuple(detectors),
                    keys=tuple(keys))


def _column_regex(columns: Sequence[tuple[str | None, str, str]]) -> re.Pattern[str] | None:
    """One regex over ``schema\\x00table\\x00column`` for all globs of a rule."""
    if not columns:
        return None
    alternatives = []
    for schema, table, column in columns:
        s = fnmatch.translate(schema or "*")[4:-3]  # strip (?s: ... )\Z
        alternatives.append(f"(?:{s})\x00(?:{fnmatch.translate(table)[4:-3]})\x00(?:{fnmatch.translate(column)[4:-3]})")
    return re.compile("(?s:" + "|".join(alternatives) + r")\Z")


class MaskSet:
    """The mask rules of one session, ready to apply."""

    __slots__ = ("rules", "key", "_columns", "detector_passes", "has_columns", "has_keys", "_keys", "_cache",
                 "_key_cache")

    def __init__(self, rules: Sequence[MaskRule], key: bytes):
        self.rules = tuple(rules)
        self.key = key
        self._columns = tuple((r, _column_regex(r.columns)) for r in self.rules if r.columns)
        # (rule, detectors, masker) per rule with detectors, in file order
        self.detector_passes: tuple[tuple[MaskRule, DetectorSet, Masker], ...] = tuple(
            (r, DetectorSet(r.detectors), Masker(r.style, key)) for r in self.rules if r.detectors)
        self.has_columns = bool(self._columns)
        self._keys = tuple((r, re.compile("|".join(fnmatch.translate(g) for g in r.keys)))
                           for r in self.rules if r.keys)
        self.has_keys = bool(self._keys)
        self._cache: dict[tuple[str, str, str], Masker | None] = {}
        self._key_cache: dict[str, Masker | None] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def column(self, schema: str, table: str, column: str) -> Masker | None:
        """The masker for this source column (the strictest style when several rules cover it)."""
        key = (schema, table, column)
        try:
            return self._cache[key]
        except KeyError:
            pass
        subject = f"{schema}\x00{table}\x00{column}"
        styles = [rule.style for rule, regex in self._columns if regex is not None and regex.match(subject)]
        hit = Masker(strictest(styles), self.key) if styles else None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def json_key(self, name: str) -> Masker | None:
        """The masker for values under this JSON object key (the strictest style when several rules
        name it), or None when no ``keys`` glob matches it."""
        try:
            return self._key_cache[name]
        except KeyError:
            pass
        lowered = name.lower()
        styles = [rule.style for rule, regex in self._keys if regex.match(lowered)]
        hit = Masker(strictest(styles), self.key) if styles else None
        if len(self._key_cache) > 4096:
            self._key_cache.clear()
        self._key_cache[name] = hit
        return hit

    def source(self, name: str) -> Masker | None:
        """``column`` for a ``schema.table.column`` name as lineage reports it."""
        schema, table, column = split_source(name)
        return self.column(schema, table, column)

    @property
    def scans(self) -> tuple[Scan, ...]:
        """(detectors, masker) per mask rule with detectors, in file order."""
        return tuple((d, m) for _r, d, m in self.detector_passes)

    def blanket(self) -> Masker | None:
        """The masker for a column whose source cannot be told: the strictest of the column rules."""
        styles = [rule.style for rule, _ in self._columns]
        return Masker(strictest(styles), self.key) if styles else None

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)


def split_source(name: str) -> tuple[str, str, str]:
    """``schema.table.column`` -> its three parts (quoted parts, as in ``"a.b"``, kept whole)."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in name:
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    if len(parts) < 3:
        parts = [""] * (3 - len(parts)) + parts
    return parts[-3], parts[-2], parts[-1]

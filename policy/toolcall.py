"""Where SQL hides in the arguments of an MCP tool call.

A tool that runs SQL takes it as a string argument. Arguments whose name matches the target's
``sql_arguments`` globs are always SQL: they are analysed like a PostgreSQL statement, and one that
does not parse is refused wherever SQL is enforced (fail closed). Any other string argument that
reads as SQL (it starts with a statement keyword and the PostgreSQL grammar parses it) is analysed
too, so a tool that names its argument ``text`` does not hide a ``DROP TABLE``; prose that merely
starts with "select" or "delete" does not parse and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from policy.glob import GlobSet

__all__ = ["SqlArgument", "sql_arguments", "looks_like_sql"]

# nested arguments deeper than this are not searched: the caller refuses such a call (see below)
MAX_DEPTH = 32

# the first keyword of every statement PostgreSQL accepts, as a word at the start of the text
_SQL_START = re.compile(
    r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*\(*\s*"
    r"(?:select|insert|update|delete|merge|with|values|table|copy|create|alter|drop|truncate|grant|revoke|"
    r"comment|security|do|call|execute|prepare|deallocate|explain|analy[sz]e|vacuum|cluster|reindex|refresh|"
    r"lock|begin|start|commit|end|rollback|abort|savepoint|release|set|reset|show|discard|listen|notify|"
    r"unlisten|load|import|declare|fetch|move|close|checkpoint|reassign|import)\b",
    re.IGNORECASE | re.DOTALL,
)


class SqlArgument:
    """A string argument to analyse: its path (``sql``, ``options.query``, ``statements[2]``),
    its text, and whether its name says it is SQL (then it must parse)."""

    __slots__ = ("path", "text", "named")

    def __init__(self, path: str, text: str, named: bool):
        self.path = path
        self.text = text
        self.named = named

    def __repr__(self) -> str:
        return f"SqlArgument({self.path!r}, named={self.named})"


class TooDeep(ValueError):
    """Arguments nested deeper than ``MAX_DEPTH``: they cannot all be searched."""


def looks_like_sql(text: str) -> bool:
    return _SQL_START.match(text) is not None


def sql_arguments(args: dict[str, Any], named: GlobSet) -> list[SqlArgument]:
    """Every string in ``args`` that is or may be SQL, in argument order. Raises ``TooDeep``."""
    return list(_walk(args, "", named, False, 0))


def _walk(value: Any, path: str, named: GlobSet, under_named: bool, depth: int) -> Iterator[SqlArgument]:
    if depth > MAX_DEPTH:
        raise TooDeep(f"the arguments are nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if under_named:
            yield SqlArgument(path, value, True)
        elif looks_like_sql(value):
            yield SqlArgument(path, value, False)
    elif isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            yield from _walk(item, f"{path}.{key}" if path else key, named,
                             under_named or named.matches(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]", named, under_named, depth + 1)

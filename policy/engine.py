"""Rules and decisions: the policy core every protocol asks.

``PolicyEngine(cfg)`` compiles the rules once; ``engine.session(...)`` keeps only the rules that
apply to one caller on one target; ``SessionPolicy.check_sql`` / ``check`` decide each command.
Semantics are documented in docs/policy.md; the short version:

* rules are tried in file order, the first ``deny`` / ``review`` / ``allow`` rule whose ``match``
  matches decides, ``mask`` rules never decide;
* a deny/review rule matches when *any* statement of the string matches it, an allow rule only
  when it covers *every* statement (so ``allow SELECT`` cannot let ``SELECT 1; DROP TABLE t`` by);
* nothing decided: ``policy.default``;
* SQL that does not parse is refused whenever the session has anything to enforce.

Reload (SIGHUP) builds a new engine and calls ``old.replace_with(new)``: open sessions keep
their ``SessionPolicy`` objects, which pick up the new rules on their next check (one attribute
test per check while nothing changed). ``on_decision`` counts the decisions protocols ask for.
"""

from __future__ import annotations

import re
import secrets
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import msgspec

from gateway.config import Config, Rule
from gateway.errors import ConfigError
from policy.maskrules import MaskRule, MaskSet, compile_mask_rule
from policy.glob import (REGEX_PREFIX, GlobSet, NameGlobs, PatternSet, Where, command_candidates, pattern_problem,
                         simple_command)
from policy.model import ALLOW, Command, Decision
from policy.toolcall import TooDeep, sql_arguments
from policy.sql import RESET_PATH, KNOWN_KINDS, search_path_effects, SqlAnalysis, SqlAnalyzer, normalize_kind, verb_of

__all__ = ["PolicyEngine", "SessionPolicy", "CompiledRule"]

# per-session decision caches are cleared when they reach this many entries: the key space is
# caller-controlled (kind combinations, texts), memory must not be
_SESSION_CACHE_MAX = 1024
# texts longer than this are not kept as cache keys
_TEXT_KEY_MAX = 16384

_NOUNS = {"exec": "command", "tool": "tool call", "function_call": "function call", "http": "request",
          "file": "file operation", "forward": "forwarding request"}

_BACKSLASH_REFUSED = Decision(
    action="deny", rule=None, sqlstate="42601",
    message="wiregate: cannot analyse statement: standard_conforming_strings is off and the statement "
    "contains a backslash; turn it back on (SET standard_conforming_strings = on)",
)

_METHOD_GLOB = re.compile(r"[A-Za-z*?\[\]!-]+")

DecidingAction = Literal["allow", "deny", "review"]


class CompiledRule(msgspec.Struct, frozen=True, kw_only=True):
    """A deny/review/allow rule, ready to match."""

    index: int
    name: str
    action: DecidingAction
    message: str | None
    targets: GlobSet
    groups: GlobSet
    except_groups: GlobSet
    # no `match` table: the rule matches every command
    match_all: bool
    # normalized sql kind entries in file order, and as a set
    sql: tuple[str, ...] = ()
    sql_set: frozenset[str] = frozenset()
    text: tuple[re.Pattern[str], ...] = ()
    command: PatternSet | None = None
    file: PatternSet | None = None
    forward: GlobSet | None = None
    tool: GlobSet | None = None
    # (argument name globs, value patterns) per `args` entry
    args: tuple[tuple[GlobSet, PatternSet], ...] = ()
    http_methods: GlobSet | None = None
    http_paths: PatternSet | None = None
    tables: NameGlobs | None = None
    functions: NameGlobs | None = None

    @property
    def can_match_sql(self) -> bool:
        # command / file / forward / tool / http conditions can never hold for a SQL statement
        return self.match_all or (self.command is None and self.tool is None and self.file is None
                                  and self.forward is None and not self.args and self.http_methods is None
                                  and self.http_paths is None)

    def applies_to(self, target: str, groups: Sequence[str]) -> bool:
        if not self.targets.matches(target):
            return False
        if not self.groups.matches_any(groups):
            return False
        return not (self.except_groups and self.except_groups.matches_any(groups))


def _compile_rule(i: int, rule: Rule, errors: list[str]) -> CompiledRule | None:
    where = f"rules[{i}]"
    m = rule.match
    base = dict(
        index=i,
        name=rule.name,
        action=rule.action,
        message=rule.message,
        targets=GlobSet(rule.targets),
        groups=GlobSet(rule.groups),
        except_groups=GlobSet(rule.except_groups),
    )
    if m is None or rule.action == "mask":
        # masking rules shape results, they never decide; only who they apply to matters here
        return CompiledRule(match_all=True, **base)
    if not (m.sql or m.text or m.command or m.file or m.forward or m.tool or m.tables or m.functions or m.http
            or m.args):
        errors.append(f"{where}.match: empty; leave `match` out to match every command")
    sql: list[str] = []
    for j, entry in enumerate(m.sql):
        kind = normalize_kind(entry)
        if kind not in KNOWN_KINDS:
            errors.append(f"{where}.match.sql[{j}]: unknown statement kind {entry!r} (see docs/policy.md)")
        elif kind not in sql:
            sql.append(kind)
    text: list[re.Pattern[str]] = []
    for key in ("tables", "functions"):
        for j, pattern in enumerate(getattr(m, key)):
            if not pattern or pattern.startswith(".") or pattern.endswith("."):
                errors.append(f"{where}.match.{key}[{j}]: {pattern!r} is not a name glob (name or schema.name)")
    for j, pattern in enumerate(m.text):
        try:
            text.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            errors.append(f"{where}.match.text[{j}]: invalid regular expression: {exc}")
    for key in ("command", "file"):
        for j, pattern in enumerate(getattr(m, key)):
            problem = pattern_problem(pattern)
            if problem:
                errors.append(f"{where}.match.{key}[{j}]: {problem}")
    for j, pattern in enumerate(m.forward):
        if pattern != "agent" and not pattern.startswith(("local ", "remote ")):
            errors.append(f'{where}.match.forward[{j}]: {pattern!r} must be "local HOST:PORT", '
                          '"remote HOST:PORT" or "agent" (globs allowed in HOST and PORT)')
    for name, patterns in m.args.items():
        if not name:
            errors.append(f"{where}.match.args: an empty argument name")
        if not patterns:
            errors.append(f"{where}.match.args.{name}: needs at least one value pattern")
        for j, pattern in enumerate(patterns):
            problem = pattern_problem(pattern)
            if problem:
                errors.append(f"{where}.match.args.{name}[{j}]: {problem}")
    http = m.http
    if http is not None:
        if not (http.method or http.path):
            errors.append(f"{where}.match.http: set method, path or both")
        for j, method in enumerate(http.method):
            if not method or not _METHOD_GLOB.fullmatch(method):
                errors.append(f"{where}.match.http.method[{j}]: {method!r} is not an HTTP method (or a glob of one)")
        for j, pattern in enumerate(http.path):
            problem = pattern_problem(pattern)
            if problem:
                errors.append(f"{where}.match.http.path[{j}]: {problem}")
            elif not pattern.startswith(("/", "*", REGEX_PREFIX)):
                errors.append(f"{where}.match.http.path[{j}]: {pattern!r} must start with / (paths are matched "
                              "as the target sees them, without the query string)")
    return CompiledRule(
        match_all=False,
        sql=tuple(sql),
        sql_set=frozenset(sql),
        text=tuple(text),
        command=PatternSet(m.command) if m.command and not errors else None,
        file=PatternSet(m.file) if m.file and not errors else None,
        forward=GlobSet(m.forward) if m.forward else None,
        tool=GlobSet(m.tool) if m.tool else None,
        args=tuple((GlobSet([n]), PatternSet(p)) for n, p in m.args.items()) if not errors else (),
        http_methods=GlobSet([x.upper() for x in http.method]) if http is not None and http.method else None,
        http_paths=PatternSet(http.path) if http is not None and http.path and not errors else None,
        tables=NameGlobs(m.tables) if m.tables else None,
        functions=NameGlobs(m.functions) if m.functions else None,
        **base,
    )


OnDecision = Callable[[str, str], None]


class PolicyEngine:
    """The compiled rules of one configuration. Build a new one on reload and hand it to
    ``replace_with``.

    ``on_decision(protocol, action)`` is called once per check a protocol asks for
    (``check_sql``, ``check``, ``check_http``, ``check_tool_call``; not ``tool_visible``): the
    server's command counters.
    """

    def __init__(self, cfg: Config, *, analyzer: SqlAnalyzer | None = None, mask_key: bytes | None = None,
                 on_decision: OnDecision | None = None):
        errors: list[str] = []
        rules = [_compile_rule(i, r, errors) for i, r in enumerate(cfg.rules)]
        masks = {i: compile_mask_rule(i, r, errors) for i, r in enumerate(cfg.rules) if r.action == "mask"}
        if errors:
            raise ConfigError(errors)
        self._masks: dict[int, MaskRule] = masks
        # the `hash` style's HMAC key: the server passes the one kept in its state dir
        self.mask_key = mask_key if mask_key is not None else secrets.token_bytes(32)
        self.rules: tuple[CompiledRule, ...] = tuple(r for r in rules if r is not None and r.action != "mask")
        self.mask_rules: tuple[CompiledRule, ...] = tuple(r for r in rules if r is not None and r.action == "mask")
        self.default: Literal["allow", "deny"] = cfg.policy.default
        # pass the previous engine's analyzer on reload to keep its cache warm
        self.analyzer = analyzer if analyzer is not None else SqlAnalyzer()
        self.on_decision = on_decision
        # the engine that replaced this one (see replace_with); None while this one is current
        self.successor: PolicyEngine | None = None
        # the open sessions bound to this engine, told when it is replaced
        self._sessions: weakref.WeakSet[SessionPolicy] = weakref.WeakSet()

    def current(self) -> PolicyEngine:
        """The newest engine of the chain of replacements that starts here."""
        engine = self
        while engine.successor is not None:
            engine = engine.successor
        return engine

    def replace_with(self, new: PolicyEngine) -> None:
        """Make ``new`` the engine of every session of this one (and of engines it replaced).

        Each session follows on its next check: the rules that apply to its caller and target,
        ``policy.default`` and what is derived from them are recomputed and its cached decisions
        dropped; what it learnt about the connection stays (search path, catalog, transaction,
        standard_conforming_strings). A session that did not follow the search path so far
        (no table or function rules, no masks) and must now treats it as unknown, which places
        unqualified names in any schema (fail closed).

        Mask rules are not changed for open sessions: their masking (result rewriting, output
        detectors, recorded text) was built when they started. New mask rules apply to new
        sessions.

        The analyzer (and its cache) and ``on_decision`` (when ``new`` has none) are passed on.
        ``session()`` on a replaced engine makes the session from the current one.
        """
        if new is self or new.successor is not None:
            raise ValueError("replace_with: the new engine must be a current engine other than this one")
        if self.successor is not None:
            raise ValueError("replace_with: this engine was already replaced; replace the current one")
        new.analyzer = self.analyzer
        if new.on_decision is None and self.on_decision is not None:
            new.on_decision = self.on_decision
            for session in new._sessions:
                session._on_decision = new.on_decision
        self.successor = new
        for session in list(self._sessions):
            session._rebind(new)
        self._sessions.clear()

    def session(self, *, protocol: str, target: str, identity: str, groups: Sequence[str],
                sql_arguments: Sequence[str] = ()) -> SessionPolicy:
        """``sql_arguments``: MCP tool argument name globs that always hold SQL (the target's)."""
        if self.successor is not None:
            return self.current().session(protocol=protocol, target=target, identity=identity, groups=groups,
                                          sql_arguments=sql_arguments)
        rules = tuple(r for r in self.rules if r.applies_to(target, groups))
        masks = [self._masks[r.index] for r in self.mask_rules if r.applies_to(target, groups)]
        return SessionPolicy(
            engine=self, protocol=protocol, target=target, identity=identity, groups=tuple(groups), rules=rules,
            masks=MaskSet(masks, self.mask_key), sql_arguments=sql_arguments,
        )


class SessionPolicy:
    """The rules that apply to one caller on one target, and the decisions they make.

    Bound to the engine that made it until that engine is replaced (``replace_with``); then
    ``_stale`` is set and the next check recomputes the rules from the new engine.
    """

    __slots__ = (
        "protocol", "target", "identity", "groups", "rules", "mask_rules", "masks", "default", "inspects_sql",
        "_sql_rules", "_analyze", "_by_leaves", "_by_text", "_text_sensitive", "_name_sensitive",
        "_backslash_unsafe", "_where_table", "_where_function", "search_path", "_initial_path", "_catalog",
        "_in_txn", "_tracks_path", "_sql_arguments", "_engine", "_stale", "_on_decision", "__weakref__",
    )

    def __init__(
        self, *, engine: PolicyEngine, protocol: str, target: str, identity: str,
        groups: tuple[str, ...], rules: tuple[CompiledRule, ...], masks: MaskSet | None = None,
        sql_arguments: Sequence[str] = (),
    ):
        self.protocol = protocol
        self.target = target
        self.identity = identity
        self.groups = groups
        self.rules = rules
        # the mask rules that apply to this caller on this target, and their names
        self.masks = masks if masks is not None else MaskSet((), engine.mask_key)
        self.mask_rules = self.masks.names()
        self.default = engine.default
        self._sql_arguments = GlobSet(sql_arguments)
        self._analyze = engine.analyzer.analyze
        self._engine = engine
        self._stale = False
        self._on_decision = engine.on_decision
        engine._sessions.add(self)
        self._derive()
        self._by_leaves: dict[tuple, Decision] = {}
        self._by_text: dict[str, Decision] = {}
        # the analyser reads string literals as PostgreSQL does with standard_conforming_strings
        # on; with it off, a backslash changes where a literal ends (see set_server_parameter)
        self._backslash_unsafe = False
        # where unqualified names resolve (see set_catalog): the catalog's answer for the names it
        # holds, the search path for the others; None when the path is not known
        self._catalog: tuple[Where, Where] | None = None
        # inside BEGIN ... COMMIT, as far as the statements tell (wrong only towards caution: a
        # path change inside a transaction merely widens where names may be)
        self._in_txn = False
        # name rules place names along it, masking resolves lineage with it
        self._tracks_path = self._name_sensitive or bool(self.masks)
        self._initial_path: tuple[str, ...] | None = _DEFAULT_PATH
        self.search_path: tuple[str, ...] | None = _DEFAULT_PATH
        self._where_table: Where = _default_table_schemas
        self._where_function: Where = _default_function_schemas

    def _derive(self) -> None:
        """What the decisions need from ``rules`` and ``default``, beyond the rules themselves."""
        self._sql_rules = tuple(r for r in self.rules if r.can_match_sql)
        self.inspects_sql = _could_refuse_sql(self._sql_rules, self.default)
        # decisions depend on the statement kinds only, unless a text regex may decide
        self._text_sensitive = any(r.text for r in self._sql_rules)
        # ... or the tables and functions, when a rule names some
        self._name_sensitive = any(r.tables is not None or r.functions is not None for r in self._sql_rules)

    # -- reload ------------------------------------------------------------------------------
    def _rebind(self, engine: PolicyEngine) -> None:
        """Called by ``replace_with``: follow ``engine`` on the next check."""
        self._engine = engine
        engine._sessions.add(self)
        self._stale = True
        # protocols skip check_sql for sessions with nothing to enforce: until the new rules
        # are computed, assume there is
        self.inspects_sql = True

    def _follow(self) -> None:
        """Take the rules of the current engine; the session's own state stays."""
        engine = self._engine
        self._stale = False
        self.rules = tuple(r for r in engine.rules if r.applies_to(self.target, self.groups))
        self.default = engine.default
        self._analyze = engine.analyzer.analyze
        self._on_decision = engine.on_decision
        self._derive()
        tracks = self._name_sensitive or bool(self.masks)
        if tracks and not self._tracks_path:
            # nobody followed SET search_path in this session so far: where names are is unknown
            self._tracks_path = True
            self.search_path = None
        self._place()  # drops the cached decisions too

    # -- SQL ------------------------------------------------------------------------------
    def check_sql(self, sql: str) -> Decision:
        # the body is written out here (no helper call): this runs once per statement
        if self._stale:
            self._follow()
        if self._backslash_unsafe and "\\" in sql and self.inspects_sql:
            decision = _BACKSLASH_REFUSED
        elif (analysis := self._analyze(sql)).error is not None:
            decision = self._unparsable(analysis)
        elif self._tracks_path and not _PATH_AND_TXN.isdisjoint(analysis.leaves) and \
                (after := self._follow_search_path(sql, analysis)) is not _SAME:
            decision = self._decide_sql(analysis, sql)  # with either path possible, uncached
            self.search_path = after  # type: ignore[assignment]
            self._place()
        elif self._text_sensitive:
            decision = self._by_text.get(sql)  # type: ignore[assignment]
            if decision is None:
                decision = self._decide_sql(analysis, sql)
                if len(sql) <= _TEXT_KEY_MAX:
                    _remember(self._by_text, sql, decision)
        else:
            if self._name_sensitive:
                key: tuple = (analysis.leaves, analysis.undecidable, analysis.tables, analysis.functions)
            else:
                key = (analysis.leaves, analysis.undecidable)
            decision = self._by_leaves.get(key)  # type: ignore[assignment]
            if decision is None:
                decision = self._decide_sql(analysis, sql)
                _remember(self._by_leaves, key, decision)
        if self._on_decision is not None:
            self._on_decision(self.protocol, decision.action)
        return decision

    def _check_sql_uncounted(self, sql: str) -> Decision:
        """``check_sql`` as part of a larger check, which counts itself."""
        if self._stale:
            self._follow()  # first: following resets the callback restored below
        count, self._on_decision = self._on_decision, None
        try:
            return self.check_sql(sql)
        finally:
            self._on_decision = count

    def set_catalog(self, tables: Where, functions: Where, search_path: tuple[str, ...]) -> None:
        """Place unqualified names with the target's catalog (see ``NameGlobs``).

        ``tables(name)`` / ``functions(name)`` give the schemas that hold an object of that name;
        a name the catalog does not hold (created since) may be in any schema of the session's
        search path, which starts as ``search_path`` and follows SET / RESET search_path.
        Without a catalog (a dry run), names are placed as PostgreSQL's default search path
        would: ``public``, and ``pg_catalog`` for ``pg_*`` relations and for functions.
        Decisions cached so far are dropped.
        """
        self._catalog = (tables, functions)
        self._initial_path = self.search_path = tuple(s for s in search_path if s != "pg_catalog")
        self._place()

    def _place(self) -> None:
        self._by_leaves.clear()
        self._by_text.clear()
        if self._catalog is None:
            if self.search_path == _DEFAULT_PATH:
                self._where_table, self._where_function = _default_table_schemas, _default_function_schemas
                return
            self._catalog = (_nowhere, _nowhere)  # a dry run whose path changed: only the path places names
        path = frozenset(self.search_path) if self.search_path is not None else None
        tables, functions = self._catalog

        def where_table(name: str) -> Collection[str] | None:
            return tables(name) or path

        def where_function(name: str) -> Collection[str] | None:
            return functions(name) or path

        self._where_table, self._where_function = where_table, where_function

    def _follow_search_path(self, sql: str, analysis: SqlAnalysis) -> object:
        """The search path after this string (``_SAME`` when unchanged). Until the string is
        decided, names are placed with the old and the new path both possible."""
        leaves = analysis.leaves
        began, ended = "BEGIN" in leaves, not leaves.isdisjoint(_TXN_ENDS)
        in_txn = self._in_txn or began
        if began != ended:  # with both in one string their order is unknown: keep what we had
            self._in_txn = began
        if _PATH_CHANGES.isdisjoint(leaves):
            return _SAME
        before = self.search_path
        path = before
        effects = search_path_effects(sql)
        for effect in effects:
            path = self._initial_path if effect == RESET_PATH else effect  # type: ignore[assignment]
        if "SET SEARCH_PATH" in leaves and (analysis.literal_sensitive or not effects or None in effects):
            path = None  # set where the gateway cannot read it (a body, set_config)
        if path is not None and before is not None and in_txn:
            # a ROLLBACK may undo it: until then, either path is possible
            path = tuple(dict.fromkeys(before + path))
        if path == before:
            return _SAME
        self.search_path = None if path is None or before is None else tuple(dict.fromkeys(before + path))
        self._place()
        return path

    def set_server_parameter(self, name: str, value: str) -> None:
        """Follow a server ParameterStatus, for a protocol that does not track it itself.

        libpg_query scans string literals with standard_conforming_strings on. If the session
        turns it off, ``'a\\'';DROP TABLE t;--'`` is one literal to the analyser but a DROP to
        the server; from then on statements containing a backslash are refused (fail closed).
        Without a backslash both settings scan the same text identically.
        """
        if name == "standard_conforming_strings":
            self._backslash_unsafe = value.strip().lower() not in ("on", "true", "1", "yes")

    @property
    def needs_catalog(self) -> bool:
        """Whether decisions or masking depend on the target's catalog (see ``set_catalog``)."""
        if self._stale:
            self._follow()
        return bool(self.masks) or self._name_sensitive

    def analyze(self, sql: str) -> SqlAnalysis:
        """The (cached) analysis behind ``check_sql``, for callers that want the kinds."""
        return self._analyze(sql)

    def _unparsable(self, analysis: SqlAnalysis) -> Decision:
        if not self.inspects_sql:
            return ALLOW
        where = f" (at character {analysis.error_position})" if analysis.error_position else ""
        return Decision(
            action="deny", rule=None, sqlstate="42601",
            message=f"wiregate: cannot analyse statement: {analysis.error}{where}",
        )

    def _decide_sql(self, analysis: SqlAnalysis, sql: str) -> Decision:
        kinds = tuple(sorted(analysis.kinds))
        if analysis.empty:
            return Decision(action="allow", kinds=kinds)
        hidden = analysis.undecidable
        for rule in self._sql_rules:
            subject = self._sql_hit(rule, analysis, sql)
            if subject is not None:
                return self._decision(rule, subject, kinds)
            if hidden is not None and rule.action != "allow":
                # SQL the analysis cannot see might be what this rule is about: fail closed
                return self._decision(rule, ("", False), kinds, reason=f"{hidden}, and this rule could apply to it")
        return self._default(kinds, "statement")

    def _sql_hit(self, rule: CompiledRule, analysis: SqlAnalysis, sql: str) -> tuple[str, bool] | None:
        """None when the rule does not match; else the message subject (text, plural)."""
        if rule.match_all:
            return ("this statement", False)
        allow = rule.action == "allow"
        if allow and analysis.undecidable is not None:
            return None  # an allow rule cannot cover SQL nobody can see
        subject = ("this statement", False)
        if rule.sql:
            if allow:
                # an allow rule must cover every statement found, nested ones included
                entries = rule.sql_set
                if not all(leaf in entries or verb_of(leaf) in entries for leaf in analysis.leaves):
                    return None
            else:
                kinds = analysis.kinds
                hit = tuple(k for k in rule.sql if k in kinds)
                if not hit:
                    return None
                subject = (f"{_join(hit)} statements", True)
        for globs, names, where, verb in ((rule.tables, analysis.tables, self._where_table, "access to"),
                                          (rule.functions, analysis.functions, self._where_function, "calling")):
            if globs is not None:
                found = _names_hit(globs, names, where, allow)
                if found is None:
                    return None
                if found:
                    subject = (f'{verb} "{found}"', False)
        if rule.text and not any(p.search(sql) for p in rule.text):
            return None
        return subject

    # -- other command kinds ----------------------------------------------------------------
    def check(self, command: Command) -> Decision:
        if command.kind == "sql":
            return self.check_sql(command.text)
        if self._stale:
            self._follow()
        decision = self._check_other(command)
        if self._on_decision is not None:
            self._on_decision(self.protocol, decision.action)
        return decision

    def _check_other(self, command: Command) -> Decision:
        """``check`` of anything but SQL, uncounted."""
        noun = _NOUNS.get(command.kind, "request")
        forward = command.kind == "forward"
        for rule in self.rules:
            # forwarding opens a path into the target's network: only a rule naming it allows it
            if forward and rule.action == "allow" and rule.forward is None:
                continue
            hit = _other_hit(rule, command)
            if hit is not None:
                return self._decision(rule, hit or (f"this {noun}", False), ())
        if forward:
            return Decision(action="deny", rule=None,
                            message=f"wiregate: forwarding refused: no rule allows {command.text} "
                                    f"on target \"{self.target}\"")
        return self._default((), noun)

    # -- HTTP requests --------------------------------------------------------------------------
    def check_http(self, method: str, path: str, *, mcp: bool = False) -> Decision:
        """An HTTP request (``path`` normalised, without its query). On an MCP target the request is
        the transport of tool calls: only a rule decides it, and ``policy.default`` is left to the
        tool calls it carries (``check_tool_call``)."""
        if self._stale:
            self._follow()
        decision = self._check_other(Command(protocol=self.protocol, target=self.target, kind="http",
                                             text=f"{method} {path}"))
        if mcp and decision.rule is None:
            decision = ALLOW
        if self._on_decision is not None:
            self._on_decision(self.protocol, decision.action)
        return decision

    # -- MCP tool calls -----------------------------------------------------------------------
    def check_tool_call(self, name: str, args: dict[str, Any]) -> Decision:
        """A ``tools/call``: the tool and its arguments against the rules, then every argument that
        holds SQL through ``check_sql``. The strictest outcome wins: deny, then review, then allow
        (under ``policy.default = "deny"`` both the call and its SQL need an allowing rule)."""
        if self._stale:
            self._follow()
        decision = self._tool_call(name, args)
        if self._on_decision is not None:
            self._on_decision(self.protocol, decision.action)
        return decision

    def _tool_call(self, name: str, args: dict[str, Any]) -> Decision:
        decision = self._check_other(Command(protocol=self.protocol, target=self.target, kind="tool", text=name,
                                             args=args))
        if decision.action == "deny":
            return decision
        try:
            found = sql_arguments(args, self._sql_arguments)
        except TooDeep as exc:
            return Decision(action="deny", rule=None, message=f"wiregate: cannot analyse tool call: {exc}")
        for arg in found:
            if not arg.named and self._analyze(arg.text).error is not None:
                continue  # read like SQL at first sight, but is not
            sql = self._check_sql_uncounted(arg.text)
            if sql.allowed:
                continue
            sql = msgspec.structs.replace(sql, message=f'{sql.message} (tool "{name}", argument "{arg.path}")')
            if sql.action == "deny":
                return sql
            if decision.action == "allow":
                decision = sql
        return decision

    def tool_visible(self, name: str) -> bool:
        """Whether ``tools/list`` shows this tool: some call of it could be allowed (or approved).

        A rule whose ``args`` decide cannot be settled without the arguments: a deny rule of that
        kind leaves the tool listed (other arguments may pass), an allow or review rule lists it."""
        if self._stale:
            self._follow()
        command = Command(protocol=self.protocol, target=self.target, kind="tool", text=name)
        for rule in self.rules:
            if rule.args:
                if rule.action != "deny" and _other_hit(msgspec.structs.replace(rule, args=()), command) is not None:
                    return True
                continue
            if _other_hit(rule, command) is not None:
                return rule.action != "deny"
        return self.default == "allow"

    # -- decisions --------------------------------------------------------------------------
    def _decision(self, rule: CompiledRule, subject: tuple[str, bool], kinds: tuple[str, ...],
                  reason: str | None = None) -> Decision:
        """``subject`` is what the reason talks about, and whether it is plural."""
        if rule.action == "allow":
            return Decision(action="allow", rule=rule.name, kinds=kinds)
        what, plural = subject
        if rule.action == "deny":
            verb = "are not allowed" if plural else "is not allowed"
            reason = reason or rule.message or f"{what} {verb} on target \"{self.target}\""
            message = f"wiregate: blocked by rule \"{rule.name}\": {reason}"
        else:
            verb = "need approval" if plural else "needs approval"
            reason = reason or rule.message or f"{what} {verb} on target \"{self.target}\""
            message = f"wiregate: review required by rule \"{rule.name}\": {reason}"
        return Decision(action=rule.action, rule=rule.name, message=message, kinds=kinds)

    def _default(self, kinds: tuple[str, ...], noun: str) -> Decision:
        if self.default == "allow":
            return Decision(action="allow", kinds=kinds) if kinds else ALLOW
        return Decision(
            action="deny", rule=None, kinds=kinds,
            message=f"wiregate: blocked by policy default: no rule allows this {noun}",
        )


def _could_refuse_sql(rules: tuple[CompiledRule, ...], default: str) -> bool:
    """Whether any SQL statement could be refused: a deny/review rule is reachable, or the default denies."""
    for rule in rules:
        if rule.action != "allow":
            return True
        if rule.match_all:
            return False  # an unconditional allow decides everything after it
    return default == "deny"


def _default_table_schemas(name: str) -> frozenset[str]:
    return _CATALOG_AND_PUBLIC if name.startswith("pg_") else _PUBLIC


def _default_function_schemas(name: str) -> frozenset[str]:
    return _CATALOG_AND_PUBLIC


_PUBLIC = frozenset({"public"})
_DEFAULT_PATH = ("public",)
# kinds of statements that may change the session's search path (a bare RESET may be RESET ALL)
_PATH_CHANGES = frozenset({"SET SEARCH_PATH", "RESET SEARCH_PATH", "RESET", "DISCARD"})
_TXN_ENDS = frozenset({"COMMIT", "ROLLBACK", "PREPARE TRANSACTION"})
_PATH_AND_TXN = _PATH_CHANGES | _TXN_ENDS | {"BEGIN"}
_SAME = object()


_CATALOG_AND_PUBLIC = frozenset({"pg_catalog", "public"})


def _nowhere(name: str) -> None:
    return None


def _names_hit(globs: NameGlobs, names: frozenset[str], where: Where, allow: bool) -> str | None:
    """Deny/review: the first name matched, or None. Allow: "" when every name (at least one) is covered."""
    if allow:
        return "" if names and globs.covers(names, where) else None
    return globs.first_match(names, where)


def _other_hit(rule: CompiledRule, command: Command) -> tuple[str, bool] | tuple[()] | None:
    """Match an exec / tool / other command; SQL kind conditions never hold for them.

    None when the rule does not match; else the message subject (text, plural), or ()
    when the rule has nothing specific to say.
    """
    if rule.match_all:
        return ()
    if rule.sql or rule.tables is not None:
        return None
    hit: tuple[str, bool] | tuple[()] = ()
    if rule.functions is not None:
        # a PostgreSQL fastpath call; text is the function's name when the protocol knows it
        if command.kind != "function_call":
            return None
        if not command.text:
            if rule.action == "allow":
                return None
            hit = ("a fastpath call of a function the gateway cannot name", False)
        elif rule.action == "allow":
            if not rule.functions.covers((command.text,)):
                return None
        elif rule.functions.first_match((command.text,)) is None:
            return None
        else:
            hit = (f'calling "{command.text}"', False)
    if rule.command is not None:
        if command.kind != "exec":
            return None
        if rule.action == "allow":
            line = simple_command(command.text)
            if line is None or rule.command.first_match(line, full=True) is None:
                return None
        else:
            for candidate in command_candidates(command.text):
                pattern = rule.command.first_match(candidate, full=False)
                if pattern is not None:
                    hit = (f'commands matching "{pattern}"', True)
                    break
            else:
                return None
    if rule.file is not None:
        if command.kind != "file":
            return None
        pattern = rule.file.first_match(command.text, full=True)
        if pattern is None:
            return None
        hit = (f'file operations matching "{pattern}"', True)
    if rule.forward is not None:
        if command.kind != "forward" or not rule.forward.matches(command.text):
            return None
        hit = (f"forwarding ({command.text})", False)
    if rule.tool is not None:
        if command.kind != "tool" or not rule.tool.matches(command.text):
            return None
        hit = (f'tool "{command.text}"', False)
    if rule.args:
        if command.kind != "tool" or command.args is None:
            return None
        found = _args_hit(rule.args, command.args, rule.action == "allow")
        if found is None:
            return None
        if found:
            hit = (found, False)
    if rule.http_methods is not None or rule.http_paths is not None:
        if command.kind != "http":
            return None
        method, _, path = command.text.partition(" ")
        if rule.http_methods is not None and not rule.http_methods.matches(method):
            return None
        if rule.http_paths is not None:
            pattern = rule.http_paths.first_match(path, full=rule.action == "allow")
            if pattern is None:
                return None
            hit = (f'{method} requests to paths matching "{pattern}"', True)
    if rule.text and not any(p.search(command.text) for p in rule.text):
        return None
    return hit


def argument_text(value: Any) -> str:
    """An argument's value as ``args`` patterns see it: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _args_hit(entries: tuple[tuple[GlobSet, PatternSet], ...], args: dict[str, Any], allow: bool) -> str | None:
    """Every entry must hold (entries are ANDed, like the other keys of a `match`).

    Deny/review: an entry holds when a value of an argument it names matches one of its patterns;
    the subject names the first such argument. Allow: an entry holds when it names at least one
    argument and covers the whole value of each it names; the subject is "".
    """
    subject = ""
    for names, patterns in entries:
        named = [(k, v) for k, v in args.items() if names.matches(k)]
        if allow:
            if not named or any(patterns.first_match(argument_text(v), full=True) is None for _, v in named):
                return None
            continue
        for key, value in named:
            pattern = patterns.first_match(argument_text(value), full=False)
            if pattern is not None:
                subject = subject or f'argument "{key}" matching "{pattern}"'
                break
        else:
            return None
    return subject


def _join(items: tuple[str, ...]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _remember(cache: dict, key: object, value: Decision) -> None:
    if len(cache) >= _SESSION_CACHE_MAX:
        cache.clear()
    cache[key] = value

"""`wiregate sessions ...` and `wiregate replay`: forensics on recordings, offline from the state dir.

Nothing here needs a running gateway, the network or a valid policy: ``--state-dir DIR`` works on a
copied state dir alone (``-c FILE`` only to find it). The session index (``wiregate.db``) is used
when present; without it, the recording files are scanned, so recordings copied without their index
can still be listed, shown, verified, exported and replayed.

Exit status: 0 on success (``verify``: also when there are only warnings, such as a torn last frame
after a crash); 1 when ``verify`` finds an error in any session, and for every operator error
(unknown or ambiguous session id, unreadable state dir, unknown key), printed as one line by
``gateway.cli``; 2 for command-line usage errors (argparse).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import WiregateError
from gateway.keys import ed25519_key_id
from recorder.events import ApprovalDecided, ApprovalRequested, Command, EventsLost, Result
from recorder.format import SUFFIX, Recording, VerifyReport, read_recording, verify
from recorder.index import DB_NAME, Index, SessionRow
from recorder.replay import (
    asciicast_lines,
    format_duration,
    format_size,
    format_time,
    jsonl_lines,
    play,
    replay_chunks,
    session_end,
    session_start,
    visible,
)

# The recorder's signing key, as `wiregate serve` creates it (gateway/server.py).
RECORDING_KEY = Path("keys") / "recording_ed25519.pem"
# Public keys of earlier recording keys an operator keeps so that old seals still verify.
RETIRED_KEYS_GLOB = "recording*.pub.pem"
RECORDINGS_DIR = "recordings"
# how many refused commands `sessions show` lists one by one
SHOW_REFUSED = 20
_DECIDED = {"allow": "allowed", "deny": "denied", "review": "held for review"}
_DURATION_AGO = re.compile(r"\s*\d+\s*[smhdw]?(\s*\d+\s*[smhdw])*\s*")


# ---- where the sessions are ------------------------------------------------------------------

def state_dir_of(args: argparse.Namespace) -> Path:
    """``--state-dir`` as given, else ``gateway.state_dir`` of the config (``-c``, then
    ``$WIREGATE_CONFIG``, then ``./wiregate.toml``)."""
    if getattr(args, "state_dir", None):
        path = Path(args.state_dir)
    else:
        from gateway.config import load_config

        config = args.config or os.environ.get("WIREGATE_CONFIG") or "wiregate.toml"
        if not Path(config).exists() and not args.config:
            raise WiregateError(f"{config}: no config file; give -c FILE or --state-dir DIR")
        path = Path(load_config(Path(config)).gateway.state_dir)
    if not path.is_dir():
        raise WiregateError(f"{path}: no such state directory")
    return path.absolute()


class Located(msgspec.Struct, kw_only=True):
    """One session found by id: its file (which may be missing) and its index row (if indexed)."""

    session_id: str
    path: Path
    row: SessionRow | None = None


def from_index(state_dir: Path, query: Callable[[Index], list[SessionRow]]) -> list[SessionRow] | None:
    """``query`` run on the session index, opened read-only; None when the state dir has none
    (recordings copied alone) or it cannot be read (then with a warning: the recording files are
    the evidence, the index only finds them faster)."""
    if not (state_dir / DB_NAME).is_file():
        return None
    try:
        index = Index(state_dir, readonly=True)
        try:
            return query(index)
        finally:
            index.close()
    except (WiregateError, sqlite3.Error) as e:
        print(f"wiregate: warning: {e}; reading the recording files instead", file=sys.stderr)
        return None


def recording_files(state_dir: Path) -> dict[str, Path]:
    """Every recording file under ``state_dir/recordings``, by session id (the file's name)."""
    found: dict[str, Path] = {}
    for path in sorted((state_dir / RECORDINGS_DIR).glob(f"*/*{SUFFIX}")):
        found.setdefault(path.name[: -len(SUFFIX)], path)
    return found


def locate(state_dir: Path, wanted: str) -> Located:
    """The session whose id is ``wanted`` or starts with it; ``WiregateError`` when there is no such
    session or the prefix names more than one. The index and the files on disk are both searched,
    so a session missing from either is still found."""
    wanted = wanted.strip()
    if not wanted:
        raise WiregateError("give a session id (or the first characters of one)")
    rows = {r.id: r for r in from_index(state_dir, lambda index: index.find(wanted)) or ()}
    files = {sid: p for sid, p in recording_files(state_dir).items() if sid.startswith(wanted)}
    ids = sorted(set(rows) | set(files))
    if wanted in ids:
        ids = [wanted]  # a full id is never ambiguous, even when it prefixes another
    if not ids:
        raise WiregateError(f'no session "{visible(wanted)}" in {state_dir}: see `wiregate sessions list`')
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise WiregateError(f'session id "{visible(wanted)}" is ambiguous: {len(ids)} sessions start with it '
                            f"({shown}); give more characters")
    sid = ids[0]
    row = rows.get(sid)
    path = files.get(sid) or Path(row.path)  # type: ignore[union-attr]
    return Located(session_id=sid, path=path, row=row)


def load(found: Located) -> Recording:
    """The recording's events; ``WiregateError`` naming the file when it cannot be read at all."""
    try:
        return read_recording(found.path)
    except FileNotFoundError:
        raise WiregateError(f"session {found.session_id}: its recording file is missing ({found.path})") from None
    except OSError as e:
        raise WiregateError(f"{found.path}: cannot read: {e.strerror or e}") from None
    except WiregateError as e:
        raise WiregateError(f"{found.path}: {e}") from None


def row_from_recording(path: Path, recording: Recording) -> SessionRow:
    """What the index would say about a session, worked out from its file (no index at hand)."""
    events = [e for _, e in recording.events]
    start = session_start(events)
    end = session_end(events)
    commands = [e for e in events if isinstance(e, Command)]
    return SessionRow(
        id=recording.session_id,
        identity=start.identity if start else "?", groups=start.groups if start else (),
        target=start.target if start else "?", protocol=start.protocol if start else "?",
        client=start.client if start else "?", tls=start.tls if start else False,
        instance=start.instance if start else "?", auth=start.auth if start else "?",
        started=start.time if start else (events[0].time if events else path.stat().st_mtime),
        ended=end.time if end else None, end_reason=end.reason if end else None, path=str(path),
        frames=len(recording.events), commands=len(commands),
        denied=sum(c.decision == "deny" for c in commands), sealed=recording.sealed, seal=recording.seal)


def all_sessions(state_dir: Path, *, read_files: bool = True) -> tuple[list[SessionRow], dict[str, Path], bool]:
    """(the index's rows, or rows read from the files when there is no usable index and
    ``read_files``; every file by session id; whether the rows came from the index)."""
    files = recording_files(state_dir)
    indexed = from_index(state_dir, lambda index: index.list())
    if indexed is not None:
        return indexed, files, True
    rows = []
    for path in files.values() if read_files else ():
        try:
            rows.append(row_from_recording(path, read_recording(path)))
        except (OSError, WiregateError) as e:
            print(f"wiregate: warning: {path}: cannot read ({e}); skipped", file=sys.stderr)
    rows.sort(key=lambda r: (-r.started, r.id))
    return rows, files, False


def parse_since(text: str, now: float | None = None) -> float:
    """UNIX time from ``--since``: a duration ago (``2h``, ``7d``, ``1h30m``) or a date and time
    (``2026-11-21``, ``2026-11-21T10:00``; local time unless it carries an offset or ``Z``)."""
    from gateway.config import parse_duration

    now = time.time() if now is None else now
    if _DURATION_AGO.fullmatch(text):
        return now - parse_duration(text.replace(" ", ""))
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WiregateError(f'--since "{text}": expected a duration ago like 2h or 7d, or a date and time '
                            "like 2026-11-21T10:00") from None
    return moment.astimezone().timestamp()  # a naive time is local time


# ---- sessions list ---------------------------------------------------------------------------

def sessions_list(
    state_dir: Path,
    *,
    identity: str | None = None,
    target: str | None = None,
    protocol: str | None = None,
    since: float | None = None,
    as_json: bool = False,
    check: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print matching sessions, newest first: a table, or one JSON object per line (``as_json``).
    ``check`` verifies each session's file too (slower: reads every file)."""
    out = out if out is not None else sys.stdout
    rows, files, _ = all_sessions(state_dir)
    rows = [r for r in rows
            if (identity is None or r.identity == identity) and (target is None or r.target == target)
            and (protocol is None or r.protocol == protocol) and (since is None or r.started >= since)]
    verdicts: dict[str, str] = {}
    if check:
        keys = verify_keys(state_dir)
        for r in rows:
            verdicts[r.id] = _verdict(_verify_one(r.id, files.get(r.id) or Path(r.path), r, keys))
    if as_json:
        for r in rows:
            record = session_json(r)
            if check:
                record["verify"] = verdicts[r.id]
            print(json.dumps(record, ensure_ascii=False), file=out)
        return 0
    if not rows:
        print("no sessions", file=sys.stderr)
        return 0
    header = ["ID", "STARTED", "DURATION", "IDENTITY", "TARGET", "PROTOCOL", "CLIENT", "COMMANDS", "STATE"]
    table = [header]
    for r in rows:
        commands = f"{r.commands} ({r.denied} denied)" if r.denied else str(r.commands)
        state = "sealed" if r.sealed else "open"
        if check:
            state = f"{state} {verdicts[r.id]}"
        table.append([r.id, _short_time(r.started), _duration(r), visible(r.identity), visible(r.target),
                      visible(r.protocol), visible(r.client), commands, state])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=out)
    return 0


def session_json(r: SessionRow) -> dict[str, Any]:
    """One session as ``sessions list --json`` prints it (times as UNIX seconds and ISO 8601)."""
    return {
        "id": r.id, "started": r.started, "started_at": _iso(r.started),
        "ended": r.ended, "ended_at": _iso(r.ended) if r.ended is not None else None,
        "duration_s": round(r.ended - r.started, 3) if r.ended is not None else None,
        "identity": r.identity, "groups": list(r.groups), "target": r.target, "protocol": r.protocol,
        "client": r.client, "tls": r.tls, "auth": r.auth, "instance": r.instance, "end_reason": r.end_reason,
        "frames": r.frames, "commands": r.commands, "denied": r.denied, "sealed": r.sealed,
        "seal_key_id": r.seal.key_id if r.seal is not None else None, "path": r.path,
    }


def _short_time(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def _duration(r: SessionRow) -> str:
    return format_duration(r.ended - r.started) if r.ended is not None else "-"


# ---- sessions show ---------------------------------------------------------------------------

def sessions_show(state_dir: Path, session: str, *, out: TextIO | None = None) -> int:
    """Print a session's metadata and a summary of its commands by decision."""
    out = out if out is not None else sys.stdout
    found = locate(state_dir, session)
    recording = load(found)
    events = [e for _, e in recording.events]
    start, end = session_start(events), session_end(events)

    def field(name: str, value: str) -> None:
        print(f"{name:<10} {value}", file=out)

    field("session", found.session_id)
    if start is not None:
        groups = f" [{visible(', '.join(start.groups))}]" if start.groups else ""
        field("identity", f"{visible(start.identity)}{groups} (auth {visible(start.auth)})")
        field("target", f"{visible(start.target)} ({visible(start.protocol)})")
        field("client", f"{visible(start.client)}, {'TLS' if start.tls else 'no TLS'}")
        field("gateway", visible(start.instance))
        field("started", format_time(start.time))
    else:
        field("started", "(no session start frame: see `wiregate sessions verify`)")
    if end is not None:
        after = f" after {format_duration(end.time - start.time)}" if start is not None else ""
        field("ended", f"{format_time(end.time)}{after} ({visible(end.reason)})")
        field("traffic", f"{format_size(end.bytes_in)} in, {format_size(end.bytes_out)} out")
    else:
        field("ended", "not ended: still open, or the gateway stopped before the session ended")
    size = found.path.stat().st_size
    field("file", f"{found.path} ({format_size(size)}, {len(recording.events)} frames)")
    if recording.seal is not None:
        field("seal", f"sealed with key {visible(recording.seal.key_id)} over {recording.seal.frames} frames")
    else:
        field("seal", "not sealed")
    if found.row is None:
        field("index", "not in the session index")
    try:
        report = _verify_one(found.session_id, found.path, found.row, verify_keys(state_dir))
        verdict = _verdict(report)
        reasons = report.errors or report.warnings
        field("verify", verdict + (f": {reasons[0]}" if reasons else "")
              + (f" (and {len(reasons) - 1} more: `wiregate sessions verify {found.session_id}`)"
                 if len(reasons) > 1 else ""))
    except WiregateError as e:  # a damaged key file: say so, and show the rest
        field("verify", f"cannot check: {e}")

    commands = [e for e in events if isinstance(e, Command)]
    by_decision = Counter(c.decision for c in commands)
    summary = ", ".join(f"{n} {_DECIDED.get(d, d)}"
                        for d, n in sorted(by_decision.items(), key=lambda x: (x[0] != "allow", x[0])))
    field("commands", f"{len(commands)}" + (f": {visible(summary)}" if summary else ""))
    by_rule = Counter((c.decision, c.rule) for c in commands if c.decision != "allow")
    for (decision, rule), n in sorted(by_rule.items(), key=lambda x: (-x[1], x[0][0], x[0][1] or "")):
        who = f'rule "{visible(rule)}"' if rule else "no rule (policy default or refused by the gateway)"
        field("", f"{n} {visible(_DECIDED.get(decision, decision))} by {who}")
    results = [e for e in events if isinstance(e, Result)]
    errors = sum(r.error is not None for r in results)
    if results:
        field("results", f"{len(results)} ({errors} errors), {sum(r.rows for r in results)} rows, "
                         f"{format_size(sum(r.bytes for r in results))}")
    requested = sum(isinstance(e, ApprovalRequested) for e in events)
    if requested:
        decided = Counter(e.decision for e in events if isinstance(e, ApprovalDecided))
        field("approvals", f"{requested} requested" + "".join(f", {n} {visible(d)}" for d, n in decided.items()))
    lost = sum(e.count for e in events if isinstance(e, EventsLost))
    if lost:
        field("lost", f"{lost} events could not be recorded (the recorder was behind or failing)")
    refused = [c for c in commands if c.decision != "allow"]
    if refused:
        print(f"\nnot allowed ({len(refused)}):", file=out)
        for c in refused[:SHOW_REFUSED]:
            text = visible(" ".join(c.text.split()))
            text = text if len(text) <= 100 else text[:99] + "…"
            rule = f'rule "{visible(c.rule)}"' if c.rule else "no rule"
            print(f"  {_short_time(c.time)}  {visible(c.decision):<6}  {rule}: {text}", file=out)
        if len(refused) > SHOW_REFUSED:
            print(f"  ... and {len(refused) - SHOW_REFUSED} more (`wiregate replay {found.session_id} --speed 0`)",
                  file=out)
    return 0


# ---- sessions verify -------------------------------------------------------------------------

def verify_keys(state_dir: Path, key_files: Sequence[str] = ()) -> dict[str, Ed25519PublicKey]:
    """Public keys a seal may be signed with, by key id. ``key_files`` (PEM, public or private) are
    the only keys trusted when given: an investigator who doubts the state dir brings the key
    exported earlier with ``sessions pubkey``. Otherwise: the state dir's recording key and any
    ``keys/recording*.pub.pem`` kept from earlier keys."""
    paths = [Path(p) for p in key_files]
    if not paths:
        paths = [p for p in [state_dir / RECORDING_KEY] if p.is_file()]
        paths += sorted((state_dir / "keys").glob(RETIRED_KEYS_GLOB))
    keys = {}
    for path in paths:
        key = _public_key(path)
        keys[ed25519_key_id(key)] = key
    return keys


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WiregateError(f"{path}: cannot read key: {e.strerror or e}") from None
    key: Any
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise WiregateError(f"{path}: not a PEM key ({e})") from None
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise WiregateError(f"{path}: expected an Ed25519 key, found {type(key).__name__}")
    return key


def sessions_verify(
    state_dir: Path,
    session: str | None = None,
    *,
    every: bool = False,
    key_files: Sequence[str] = (),
    out: TextIO | None = None,
) -> int:
    """Verify one session (``session``, an id or prefix) or all of them (``every``): each gets a
    line OK / WARN / FAIL, followed by the reasons. 1 when any session FAILs, else 0."""
    out = out if out is not None else sys.stdout
    if (session is None) == (not every):
        raise WiregateError("sessions verify: give a session id or --all")
    keys = verify_keys(state_dir, key_files)
    if not keys:
        print(f"wiregate: warning: no recording key in {state_dir / 'keys'}: seals cannot be checked "
              "(give --key FILE)", file=sys.stderr)
    if session is not None:
        found = locate(state_dir, session)
        report = _verify_one(found.session_id, found.path, found.row, keys)
        _print_report(found.session_id, report, out)
        return 0 if report.ok else 1

    rows, files, indexed = all_sessions(state_dir, read_files=False)  # without an index, the files are all there is
    row_by_id = {r.id: r for r in rows} if indexed else {}
    ids = sorted(set(row_by_id) | set(files))
    counts: Counter[str] = Counter()
    for sid in ids:
        row = row_by_id.get(sid)
        path = files.get(sid) or Path(row.path)  # type: ignore[union-attr]
        report = _verify_one(sid, path, row, keys)
        if indexed and row is None:
            report.warnings.append("not in the session index (the gateway stopped before indexing it, "
                                   "or its row was removed)")
        counts[_verdict(report)] += 1
        _print_report(sid, report, out)
    print(f"{len(ids)} sessions: {counts['OK']} ok, {counts['WARN']} with warnings, {counts['FAIL']} failed",
          file=out)
    return 1 if counts["FAIL"] else 0


def _verify_one(sid: str, path: Path, row: SessionRow | None, keys: dict[str, Ed25519PublicKey]) -> VerifyReport:
    if not path.exists():
        where = "the index lists it" if row is not None else "expected"
        return VerifyReport(path=str(path), session_id=sid, frames=0, sealed=False, key_id=None,
                            errors=[f"the recording file is missing ({where} at {path})"], warnings=[])
    report = verify(path, keys, known_seal=row.seal if row is not None else None)
    if row is not None and row.frames > report.frames:
        # the index counts frames once they are written: a file holding fewer lost whole frames,
        # which a crash does not do (only fsync = "never" and a machine crash could)
        report.errors.append(f"the file holds {report.frames} whole frames, the index counts {row.frames} written: "
                             "frames were cut from its end")
    if report.session_id is not None and report.session_id != sid:
        report.errors.append(f"the file's header names session {report.session_id}, not {sid} (file renamed?)")
    return report


def _verdict(report: VerifyReport) -> str:
    return "FAIL" if report.errors else "WARN" if report.warnings else "OK"


def _print_report(sid: str, report: VerifyReport, out: TextIO) -> None:
    what = f"{report.frames} frames"
    what += f", sealed with key {visible(report.key_id)}" if report.sealed else ", not sealed"
    print(f"{_verdict(report):<4}  {sid}  {what}", file=out)
    for line in report.errors:
        print(f"      error: {line}", file=out)
    for line in report.warnings:
        print(f"      warning: {line}", file=out)


# ---- sessions pubkey -------------------------------------------------------------------------

def sessions_pubkey(state_dir: Path, *, out: TextIO | None = None) -> int:
    """Print the recording key's public half (PEM), to verify seals away from this state dir."""
    out = out if out is not None else sys.stdout
    path = state_dir / RECORDING_KEY
    if not path.is_file():
        raise WiregateError(f"{path}: no recording key (the gateway creates it when it first records)")
    key = _public_key(path)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    print(f"key id {ed25519_key_id(key)}", file=sys.stderr)
    out.write(pem.decode("ascii"))
    return 0


# ---- sessions export -------------------------------------------------------------------------

def sessions_export(
    state_dir: Path,
    session: str,
    *,
    fmt: str,
    output: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Write a session as JSON lines (every frame, seal included) or as an asciicast v2 file, to
    ``output`` (created 0600) or stdout."""
    found = locate(state_dir, session)
    recording = load(found)
    if fmt == "jsonl":
        frames: list[tuple[int, Any]] = list(recording.events)
        if recording.seal is not None:
            frames.append((recording.seal.frames, recording.seal))
        lines: Iterable[str] = jsonl_lines(found.session_id, frames)
    elif fmt == "asciicast":
        lines = asciicast_lines([e for _, e in recording.events])
    else:
        raise WiregateError(f'sessions export: unknown format "{fmt}" (jsonl or asciicast)')
    _warn_problems(found, recording)
    if output is None or output == "-":
        target = out if out is not None else sys.stdout
        for line in lines:
            target.write(line + "\n")
        return 0
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
    except OSError as e:
        raise WiregateError(f"{output}: cannot write: {e.strerror or e}") from None
    return 0


def _warn_problems(found: Located, recording: Recording) -> None:
    for problem in recording.problems:
        print(f"wiregate: warning: session {found.session_id}: {problem} "
              "(what could be read is shown; `wiregate sessions verify` says more)", file=sys.stderr)


# ---- replay ----------------------------------------------------------------------------------

def replay(
    state_dir: Path,
    session: str,
    *,
    speed: float = 1.0,
    max_idle: float | None = None,
    out: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Replay a session to ``out`` (a binary stream; stdout by default): a terminal session as the
    terminal showed it, anything else as a transcript, with the recorded timing divided by ``speed``
    (0: all at once)."""
    if speed < 0:
        raise WiregateError("replay: --speed must be 0 (at once) or more")
    if max_idle is not None and max_idle < 0:
        raise WiregateError("replay: --max-idle must not be negative")
    found = locate(state_dir, session)
    recording = load(found)
    _warn_problems(found, recording)
    target = out if out is not None else sys.stdout.buffer
    play(replay_chunks([e for _, e in recording.events]), target, speed=speed, max_idle=max_idle, sleep=sleep)
    return 0


# ---- argparse --------------------------------------------------------------------------------

def add_parsers(sub: Any) -> None:
    """Register ``sessions`` (list, show, verify, export, pubkey) and ``replay`` on the ``wiregate``
    subparsers; each sets ``func(args) -> int``."""
    p = sub.add_parser("sessions", help="work on session recordings (offline, from the state dir)")
    ssub = p.add_subparsers(dest="sessions_command", required=True, metavar="SUBCOMMAND")

    s = ssub.add_parser("list", help="list recorded sessions, newest first")
    _add_state(s)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--identity", help="only this caller (exact name)")
    s.add_argument("--target", help="only this target")
    s.add_argument("--protocol", choices=("postgres", "ssh", "http"), help="only this protocol")
    s.add_argument("--since", help="started at or after: a duration ago (2h, 7d) or a local date/time "
                                   "(2026-11-21T10:00)")
    s.add_argument("--verify", action="store_true", help="also verify each session's file (OK/WARN/FAIL)")
    s.set_defaults(func=_cmd_list)

    s = ssub.add_parser("show", help="a session's metadata and its commands by decision")
    _add_state(s)
    s.add_argument("session", metavar="ID", help="session id, or its first characters")
    s.set_defaults(func=_cmd_show)

    s = ssub.add_parser("verify", help="check hash chains and seals; exit 1 when anything was tampered with")
    _add_state(s)
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("session", metavar="ID", nargs="?", help="session id, or its first characters")
    which.add_argument("--all", action="store_true", help="every session in the state dir")
    s.add_argument("--key", action="append", default=[], metavar="FILE",
                   help="trust only this public key (PEM, from `sessions pubkey`); repeatable")
    s.set_defaults(func=_cmd_verify)

    s = ssub.add_parser("export", help="write a session as JSON lines or an asciicast v2 file")
    _add_state(s)
    s.add_argument("session", metavar="ID", help="session id, or its first characters")
    s.add_argument("--format", required=True, choices=("jsonl", "asciicast"), dest="fmt")
    s.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    s.set_defaults(func=_cmd_export)

    s = ssub.add_parser("pubkey", help="print the recording key's public key (PEM) to verify seals elsewhere")
    _add_state(s)
    s.set_defaults(func=_cmd_pubkey)

    p = sub.add_parser("replay", help="replay a session: SSH as the terminal showed it, SQL as a psql transcript")
    _add_state(p)
    p.add_argument("session", metavar="ID", help="session id, or its first characters")
    p.add_argument("--speed", type=float, default=1.0, help="speed factor (2: twice as fast; 0: all at once)")
    p.add_argument("--max-idle", type=float, metavar="SECONDS", help="wait at most this long between outputs")
    p.set_defaults(func=_cmd_replay)


def _add_state(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", help="config file whose state_dir to read "
                                              "(default: $WIREGATE_CONFIG, then ./wiregate.toml)")
    where.add_argument("--state-dir", metavar="DIR", help="read this state dir (e.g. a copy), no config needed")


def _pipe_safe(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``wiregate sessions list | head``: a reader that goes away is not an error worth a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            # later flushes at exit would raise again: point stdout at /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
    return run


@_pipe_safe
def _cmd_list(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    since = parse_since(args.since) if args.since else None
    return sessions_list(state_dir, identity=args.identity, target=args.target, protocol=args.protocol,
                         since=since, as_json=args.json, check=args.verify)


@_pipe_safe
def _cmd_show(args: argparse.Namespace) -> int:
    return sessions_show(state_dir_of(args), args.session)


@_pipe_safe
def _cmd_verify(args: argparse.Namespace) -> int:
    return sessions_verify(state_dir_of(args), args.session, every=args.all, key_files=args.key)


@_pipe_safe
def _cmd_export(args: argparse.Namespace) -> int:
    return sessions_export(state_dir_of(args), args.session, fmt=args.fmt, output=args.output)


@_pipe_safe
def _cmd_pubkey(args: argparse.Namespace) -> int:
    return sessions_pubkey(state_dir_of(args))


@_pipe_safe
def _cmd_replay(args: argparse.Namespace) -> int:
    return replay(state_dir_of(args), args.session, speed=args.speed, max_idle=args.max_idle)

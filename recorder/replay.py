"""Turning a recorded session back into what a person reads: transcripts, terminal replay, exports.

Everything here is pure over a sequence of events (``recorder.events``) except ``play``, which
writes timed chunks to a stream. Three renderings:

* a terminal session (SSH with a terminal stream): the bytes the terminal showed, as recorded;
* any other session: a text transcript. PostgreSQL reads like psql (``target=> SELECT ...;``,
  then the command tag or ``ERROR:``), with the policy's decision as a ``--`` comment whenever a
  command was not simply allowed; SSH commands read like a shell, HTTP as ``METHOD path -> status``;
* exports: JSON lines (one ``event_to_json`` object per frame, with its ``seq``) and asciicast v2
  (https://docs.asciinema.org/manual/asciicast/v2/) for asciinema players.

A chunk is ``(time, data)``: the UNIX time of the event that produced it and what to show.
"""

from __future__ import annotations

import codecs
import json
import re
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO

from recorder.events import (
    ApprovalDecided,
    ApprovalRequested,
    Command,
    EventsLost,
    HttpExchange,
    Result,
    RpcMessage,
    SessionEnd,
    SessionStart,
    TermInput,
    TermOutput,
    TermResize,
    event_to_json,
)

DEFAULT_COLS = 80
DEFAULT_ROWS = 24

# How a non-SQL command is shown in a transcript, by command kind (see Command.kind).
_PROMPTS = {"exec": "$ ", "sftp": "sftp> ", "scp": "scp> ", "tool": "tool> "}
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
# C0 controls, DEL and C1 controls (a C1 CSI, U+009B, is an escape sequence on many terminals)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_KEEP_LF = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def session_start(events: Iterable[object]) -> SessionStart | None:
    """The session's start event (the first frame of a well-formed recording)."""
    for event in events:
        if isinstance(event, SessionStart):
            return event
    return None


def session_end(events: Sequence[object]) -> SessionEnd | None:
    """The session's end event, if the session ended (cleanly or not) before the recording stopped."""
    for event in reversed(events):
        if isinstance(event, SessionEnd):
            return event
    return None


def is_terminal(events: Iterable[object]) -> bool:
    """Whether the session has a terminal stream to replay (rather than a command transcript)."""
    return any(isinstance(e, TermOutput) for e in events)


# ---- text transcripts --------------------------------------------------------------------------

def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``), so that a recorded value cannot
    drive the reader's terminal (erase lines, retitle the window) or forge transcript lines.
    ``newlines=True`` keeps line breaks and tabs (of a multi-line statement; CRLF becomes LF)."""
    if newlines:
        text = text.replace("\r\n", "\n")
        return _CONTROL_KEEP_LF.sub(_escape, text)
    return _CONTROL.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def transcript(events: Sequence[object]) -> Iterator[tuple[float, str]]:
    """A readable transcript of a session, one chunk (ending in a newline) per event worth showing.

    PostgreSQL sessions read like psql; SSH commands like a shell (``$ ls``); HTTP exchanges as
    ``METHOD path -> status``. Commands that were denied or held for review are followed by a
    comment naming the rule, so a reader sees what the caller tried and what the policy said.
    Every recorded string goes through ``visible``.
    """
    start = session_start(events)
    sql = start is not None and start.protocol == "postgres"
    comment = "-- " if sql else "# "
    target = visible(start.target) if start is not None else ""
    prompt, continuation = f"{target}=> ", f"{target}-> "
    for event in events:
        match event:
            case SessionStart():
                yield event.time, f"{comment}{describe_start(event)}\n"
            case Command():
                text = _command_line(event, sql=sql, prompt=prompt, continuation=continuation)
                if text:
                    yield event.time, text
                note = decision_note(event)
                if note:
                    yield event.time, f"{comment}{note}\n"
            case Result():
                lines = _result_lines(event, sql=sql)
                if lines:
                    yield event.time, lines
            case HttpExchange():
                yield event.time, (f"{visible(event.method)} {visible(event.path)} -> {event.status}  "
                                   f"({format_size(event.bytes_in)} in, {format_size(event.bytes_out)} out, "
                                   f"{event.duration_ms:.1f} ms)\n")
            case RpcMessage():
                yield event.time, rpc_line(event)
            case ApprovalRequested():
                approvers = visible(", ".join(event.approvers)) or "nobody named"
                yield event.time, (f"{comment}approval {visible(event.request_id)} requested from {approvers} "
                                   f'(rule "{visible(event.rule)}")\n')
            case ApprovalDecided():
                why = f": {visible(event.reason)}" if event.reason else ""
                by = f" by {visible(event.by)}" if event.by else ""
                yield event.time, (f"{comment}approval {visible(event.request_id)} "
                                   f"{visible(event.decision)}{by}{why}\n")
            case EventsLost():
                # the evidence has a gap here, and says so
                yield event.time, f"{comment}{event.count} events not recorded here: {visible(event.reason)}\n"
            case SessionEnd():
                yield event.time, f"{comment}{describe_end(event, start)}\n"


_RPC_ARROWS = {"in": "->", "out": "<-", "gateway": "<-"}


def rpc_line(msg: RpcMessage) -> str:
    """``-> tools/call #3 {...}`` for what the caller sent, ``<- #3 {...}`` for the answer; an answer the
    gateway gave itself (a refusal) says so, so a reader sees the target was never asked."""
    arrow = _RPC_ARROWS.get(msg.direction, visible(msg.direction))
    parts = [f"{arrow} mcp"]
    if msg.method:
        parts.append(visible(msg.method))
    if msg.id is not None:
        parts.append(f"#{visible(msg.id)}")
    if msg.direction == "gateway":
        parts.append("(answered by the gateway)")
    return " ".join(parts) + "  " + visible(msg.text) + "\n"


def _command_line(cmd: Command, *, sql: bool, prompt: str, continuation: str) -> str:
    text = visible(cmd.text, newlines=True).strip("\n")
    if sql and cmd.kind == "sql":
        text = text.strip()
        # psql shows the terminating semicolon; statements sent through the extended protocol have none
        if not text.endswith(";") and "--" not in text.rsplit("\n", 1)[-1]:
            text += ";"
        return prompt + text.replace("\n", f"\n{continuation}") + "\n"
    if cmd.kind == "http":
        return ""  # the exchange line that follows says it (METHOD path -> status)
    if sql:  # e.g. a fast-path function call: not SQL, so a comment keeps the transcript valid psql input
        return f"-- {visible(cmd.kind)}: " + text.replace("\n", "\n-- ") + "\n"
    lead = _PROMPTS.get(cmd.kind) or f"{visible(cmd.kind)}> "
    return lead + text.replace("\n", "\n" + " " * len(lead)) + "\n"


def decision_note(cmd: Command) -> str:
    """``blocked by rule "X": why`` for a command that was not simply allowed; "" when it was."""
    if cmd.decision == "allow":
        return ""
    said = visible(cmd.message.removeprefix("wiregate: "))
    if said.startswith(("blocked", "review required")):
        return said  # the policy's own words, which name the rule (what the caller was told)
    what = {"deny": "blocked", "review": "review required"}.get(cmd.decision) or visible(cmd.decision)
    who = f' by rule "{visible(cmd.rule)}"' if cmd.rule else " (no rule decided)"
    return f"{what}{who}: {said}" if said else f"{what}{who}"


def _result_lines(result: Result, *, sql: bool) -> str:
    if result.error is not None:
        error = visible(result.error)
        if sql:
            # "SQLSTATE message", shown as psql shows it with VERBOSITY verbose
            code, _, text = error.partition(" ")
            head = f"ERROR:  {code}: {text}" if _SQLSTATE.fullmatch(code) and text else f"ERROR:  {error}"
        else:
            head = f"error: {error}"
    else:
        head = visible(result.tag)
    lines = f"{head}\n" if head else ""
    return f"{lines}Time: {result.duration_ms:.3f} ms\n" if sql else lines


def describe_start(start: SessionStart) -> str:
    """One line saying who connected to what, from where, and when."""
    groups = f" [{visible(', '.join(start.groups))}]" if start.groups else ""
    tls = "TLS" if start.tls else "no TLS"
    return (f"session {visible(start.session_id)}: {visible(start.identity)}{groups} -> {visible(start.target)} "
            f"({visible(start.protocol)}) from {visible(start.client)}, {tls}, auth {visible(start.auth)}, "
            f"gateway {visible(start.instance)}, at {format_time(start.time)}")


def describe_end(end: SessionEnd, start: SessionStart | None) -> str:
    """One line saying how the session ended and how much went through it."""
    after = f" after {format_duration(end.time - start.time)}" if start is not None else ""
    return (f"session ended ({visible(end.reason)}){after}: {end.commands} commands, "
            f"{format_size(end.bytes_in)} in, {format_size(end.bytes_out)} out")


# ---- what a replay writes --------------------------------------------------------------------

def replay_chunks(events: Sequence[object]) -> Iterator[tuple[float, bytes]]:
    """The bytes a replay writes, with their times: the terminal stream for a terminal session
    (exactly the bytes recorded, escape sequences included), else the transcript as UTF-8."""
    if is_terminal(events):
        for event in events:
            if isinstance(event, TermOutput):
                yield event.time, event.data
    else:
        for t, text in transcript(events):
            yield t, text.encode("utf-8")


def play(
    chunks: Iterable[tuple[float, bytes]],
    out: BinaryIO,
    *,
    speed: float = 1.0,
    max_idle: float | None = None,
    sleep: Callable[[float], None] = _time.sleep,
) -> None:
    """Write the chunks to ``out`` with their recorded spacing divided by ``speed`` (0: at once).

    ``max_idle`` caps any single wait (in replay seconds), so a session idle for an hour does not
    keep the reader waiting an hour. ``out`` is flushed after each chunk so the timing shows.
    """
    if speed < 0:
        raise ValueError("speed must not be negative")
    previous: float | None = None
    for t, data in chunks:
        if speed and previous is not None:
            wait = max(0.0, t - previous) / speed
            if max_idle is not None:
                wait = min(wait, max_idle)
            if wait > 0:
                sleep(wait)
        previous = t
        out.write(data)
        if speed:
            out.flush()
    out.flush()


# ---- exports ---------------------------------------------------------------------------------

def jsonl_lines(session_id: str, frames: Iterable[tuple[int, object]]) -> Iterator[str]:
    """One JSON object per frame: ``event_to_json`` of the event with the session id and the frame's
    seq after its ``kind`` (the shape the audit sinks deliver, so both can be read alike)."""
    for seq, event in frames:
        body = event_to_json(event)
        record = {"kind": body.pop("kind"), "session_id": session_id, "seq": seq}
        record.update(body)
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def asciicast_lines(events: Sequence[object]) -> Iterator[str]:
    """An asciicast v2 file, line by line: the header, then ``[seconds, code, data]`` events.

    Terminal sessions give ``"o"`` (output), ``"i"`` (input) and ``"r"`` (resize) events; the
    initial size is the first resize recorded, else 80x24. Other sessions are shown as their text
    transcript written to a terminal. Times are relative to the session start.
    """
    start = session_start(events)
    end = session_end(events)
    origin = start.time if start is not None else next((e.time for e in events), 0.0)
    first_resize = next((e for e in events if isinstance(e, TermResize)), None)
    cols, rows = (first_resize.cols, first_resize.rows) if first_resize else (DEFAULT_COLS, DEFAULT_ROWS)
    header: dict[str, object] = {"version": 2, "width": cols, "height": rows, "timestamp": int(origin)}
    if end is not None:
        header["duration"] = round(max(0.0, end.time - origin), 6)
    if start is not None:
        header["title"] = f"{start.identity} -> {start.target} ({start.protocol}) {start.session_id}"
    yield _dumps(header)

    def at(t: float) -> float:
        return round(max(0.0, t - origin), 6)

    if not is_terminal(events):
        for t, text in transcript(events):
            yield _dumps([at(t), "o", text.replace("\n", "\r\n")])
        return

    # a multi-byte character may be split across two recorded chunks: decode each stream incrementally
    decoders = {"o": codecs.getincrementaldecoder("utf-8")("replace"),
                "i": codecs.getincrementaldecoder("utf-8")("replace")}
    for event in events:
        if isinstance(event, (TermOutput, TermInput)):
            code = "o" if isinstance(event, TermOutput) else "i"
            text = decoders[code].decode(event.data)
            if text:
                yield _dumps([at(event.time), code, text])
        elif isinstance(event, TermResize) and event is not first_resize:
            yield _dumps([at(event.time), "r", f"{event.cols}x{event.rows}"])
    for code, decoder in decoders.items():
        rest = decoder.decode(b"", final=True)
        if rest:
            yield _dumps([at(end.time if end is not None else origin), code, rest])


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---- small formatting helpers (shared with the CLI) ------------------------------------------

def format_time(t: float) -> str:
    """Local time with its UTC offset, to the second: ``2026-11-21 10:00:03+01:00``."""
    return datetime.fromtimestamp(t).astimezone().isoformat(sep=" ", timespec="seconds")


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.0s``, ``4m05s``, ``2h03m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_size(n: int) -> str:
    """``512 B``, ``1.5 kB``, ``3.2 MB`` (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"

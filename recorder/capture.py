"""What protocols hand to the recorder: session ids, and command texts fit to be recorded."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from policy.masking import Scan, scrub
from recorder.events import ApprovalDecided, ApprovalRequested

if TYPE_CHECKING:
    from gateway.approval import ApprovalRecord
    from gateway.broker import Verdict

# a recorded command text longer than this keeps its head and says how much was left out
MAX_RECORDED_TEXT = 1024 * 1024


def new_session_id() -> str:
    """A session id that sorts by start time: 12 hex digits of milliseconds, then 20 random ones."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def recorded_text(text: str, scans: Sequence[Scan]) -> str:
    """``text`` as it may be recorded: detector matches masked (a literal the caller typed is
    masked in the recording as it would be in a result), and cut at ``MAX_RECORDED_TEXT``."""
    if len(text) > MAX_RECORDED_TEXT:
        text = f"{text[:MAX_RECORDED_TEXT]}… [{len(text) - MAX_RECORDED_TEXT} more characters not recorded]"
    if scans:
        text = scrub(text, scans) or ""
    return text


def approval_requested(record: "ApprovalRecord") -> ApprovalRequested:
    return ApprovalRequested(time=record.created, request_id=record.id, rule=record.rule,
                             approvers=tuple(record.approvers), text=record.command)


def approval_decided(verdict: "Verdict") -> ApprovalDecided:
    """How a held command ended; an `approve --for` window names the request that granted it."""
    if verdict.record is None:
        return ApprovalDecided(time=time.time(), request_id=verdict.grant or "", decision="granted", by="")
    r = verdict.record
    return ApprovalDecided(time=r.decided_at or time.time(), request_id=r.id, decision=r.status,
                           by=r.decided_by or "", reason=r.reason or "")

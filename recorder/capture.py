"""What protocols hand to the recorder: session ids, and command texts fit to be recorded."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from policy.masking import Scan, scrub

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

"""The gateway's Prometheus metrics: plain in-memory counters and their text exposition.

One ``Metrics`` object per running gateway (``wiregate serve`` creates it and hands it to the
listeners, the broker and the admin API); there are no module-level registries, so tests and
several gateways in one process never share counts. The calls on the hot path are a dict update
under an uncontended lock: the recorder's writer thread may report too, and a scrape must never see
a half-applied update.

``render`` writes the Prometheus text format 0.0.4, deterministically (families in a fixed order,
series sorted by their labels), so that two scrapes of an idle gateway are byte-identical.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["APPROVAL_WAIT_BUCKETS", "CONTENT_TYPE", "Metrics", "escape_label_value"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Approval waits are human reaction times: from seconds (an approver watching) to an hour (the
# longest sensible review timeout); finer buckets would only cost series.
APPROVAL_WAIT_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Labels = tuple[tuple[str, str], ...]


def escape_label_value(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def _non_negative(n: float) -> float:
    # a counter must never go down, whatever a caller passes (NaN compares False and lands on 0 too)
    return n if n > 0 else 0


class _Histogram:
    """One label set's histogram: per-bucket (non-cumulative) counts, a sum and a count."""

    __slots__ = ("buckets", "sum", "count")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.sum = 0.0
        self.count = 0


class Metrics:
    """The gateway's counters, gauges and approval-wait histogram (names: see ``render``)."""

    def __init__(self, *, approval_buckets: Sequence[float] = APPROVAL_WAIT_BUCKETS) -> None:
        bounds = tuple(float(b) for b in approval_buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError("approval_buckets must be finite, distinct and increasing")
        self._bounds = bounds
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], int] = {}
        self._sessions: dict[tuple[str, str], int] = {}
        self._commands: dict[tuple[str, str], int] = {}
        self._waits: dict[str, _Histogram] = {}
        self._upstream_errors: dict[tuple[str, str], int] = {}
        self._bytes: dict[tuple[str, str, str], int] = {}

    # ------------------------------------------------------------ recording

    def session_opened(self, protocol: str, target: str) -> None:
        key = (protocol, target)
        with self._lock:
            self._open[key] = self._open.get(key, 0) + 1
            self._sessions[key] = self._sessions.get(key, 0) + 1

    def session_closed(self, protocol: str, target: str, bytes_in: int, bytes_out: int) -> None:
        key = (protocol, target)
        with self._lock:
            # a close without its open (a listener reloaded in between, say) must not go below zero
            self._open[key] = max(0, self._open.get(key, 0) - 1)
            for direction, n in (("in", bytes_in), ("out", bytes_out)):
                k = (protocol, target, direction)
                self._bytes[k] = self._bytes.get(k, 0) + int(_non_negative(n))

    def command(self, protocol: str, decision: str) -> None:
        key = (protocol, decision)
        with self._lock:
            self._commands[key] = self._commands.get(key, 0) + 1

    def approval_wait(self, seconds: float, outcome: str) -> None:
        seconds = float(_non_negative(seconds))
        bounds = self._bounds
        # the first bucket whose upper bound holds the value; len(bounds) is the +Inf bucket
        index = next((i for i, b in enumerate(bounds) if seconds <= b), len(bounds))
        with self._lock:
            h = self._waits.get(outcome)
            if h is None:
                h = self._waits[outcome] = _Histogram(len(bounds) + 1)
            h.buckets[index] += 1
            h.sum += seconds
            h.count += 1

    def upstream_error(self, protocol: str, target: str) -> None:
        key = (protocol, target)
        with self._lock:
            self._upstream_errors[key] = self._upstream_errors.get(key, 0) + 1

    def sessions_open(self, protocol: str, target: str) -> int:
        """The gauge's current value (for tests and the health report)."""
        with self._lock:
            return self._open.get((protocol, target), 0)

    # ------------------------------------------------------------ exposition

    def render(self, *, recorder_queue_depth: int | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """Everything in the Prometheus text format 0.0.4.

        ``recorder_queue_depth`` None (no recorder) leaves that gauge without a sample. ``extra``
        adds gauges: ``{name: number}`` or ``{name: [({label: value, ...}, number), ...]}``;
        ValueError on a name that is not a metric name or collides with one of the built-in ones.
        """
        with self._lock:
            opened = dict(self._open)
            sessions = dict(self._sessions)
            commands = dict(self._commands)
            waits = {k: (list(h.buckets), h.sum, h.count) for k, h in self._waits.items()}
            errors = dict(self._upstream_errors)
            moved = dict(self._bytes)
        out: list[str] = []
        pt = ("protocol", "target")
        _family(out, "wiregate_sessions_open", "gauge", "Sessions open now.", _series(pt, opened))
        _family(out, "wiregate_sessions_total", "counter", "Sessions opened since the gateway started.",
                _series(pt, sessions))
        _family(out, "wiregate_commands_total", "counter", "Commands checked, by the decision they got.",
                _series(("protocol", "decision"), commands))
        self._render_waits(out, waits)
        _family(out, "wiregate_recorder_queue_depth", "gauge", "Events waiting for the recorder's writer.",
                [] if recorder_queue_depth is None else [("", (), recorder_queue_depth)])
        _family(out, "wiregate_upstream_connect_errors_total", "counter",
                "Connections to a target that failed.", _series(pt, errors))
        _family(out, "wiregate_bytes_proxied_total", "counter",
                "Bytes relayed in closed sessions; in: from the client, out: to the client.",
                _series(("protocol", "target", "direction"), moved))
        if extra:
            families = {line.split(" ", 3)[2] for line in out if line.startswith("# TYPE ")}
            taken = families | {f + s for f in families for s in ("_bucket", "_sum", "_count")}
            for name in sorted(extra):
                if not isinstance(name, str) or _METRIC_NAME.fullmatch(name) is None or name in taken:
                    raise ValueError(f"extra metric name {name!r} is not a metric name or is taken")
                _family(out, name, "gauge", "", _extra_series(name, extra[name]))
        return "\n".join(out) + "\n"

    def _render_waits(self, out: list[str], waits: dict[str, tuple[list[int], float, int]]) -> None:
        name = "wiregate_approval_wait_seconds"
        lines: list[tuple[str, Labels, float]] = []
        for outcome in sorted(waits):
            buckets, total, count = waits[outcome]
            running = 0
            for bound, n in zip((*self._bounds, math.inf), buckets):
                running += n
                lines.append(("_bucket", (("outcome", outcome), ("le", _number(bound))), running))
            lines.append(("_sum", (("outcome", outcome),), total))
            lines.append(("_count", (("outcome", outcome),), count))
        _family(out, name, "histogram", "Time a held command waited for its approval request to end.", lines)


def _series(names: tuple[str, ...], values: Mapping[tuple[str, ...], float]) -> list[tuple[str, Labels, float]]:
    return [("", tuple(zip(names, key)), values[key]) for key in sorted(values)]


def _extra_series(name: str, value: Any) -> list[tuple[str, Labels, float]]:
    if isinstance(value, (int, float)):
        return [("", (), value)]
    rows: list[tuple[str, Labels, float]] = []
    for item in value:
        labels, number = item
        if not isinstance(number, (int, float)):
            raise ValueError(f"extra metric {name}: {number!r} is not a number")
        for label in labels:
            if _LABEL_NAME.fullmatch(label) is None or label.startswith("__"):
                raise ValueError(f"extra metric {name}: {label!r} is not a label name")
        rows.append(("", tuple(sorted((str(k), str(v)) for k, v in labels.items())), number))
    return sorted(rows, key=lambda r: r[1])


def _family(out: list[str], name: str, kind: str, help_text: str, lines: list[tuple[str, Labels, float]]) -> None:
    if help_text:
        out.append(f"# HELP {name} {_escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")
    for suffix, labels, value in lines:
        out.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

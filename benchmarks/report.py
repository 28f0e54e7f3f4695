"""What the benchmark parts share: number formatting (benchmarks/run.py, ssh.py, http.py) and the
way a part runs on its own (``python -m benchmarks.ssh``)."""

from __future__ import annotations

import contextlib
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from gateway.errors import WiregateError


def why(e: BaseException) -> str:
    """An error as one line of a report: a wiregate error says it itself, others carry their type."""
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, WiregateError) else f"{type(e).__name__}: {text}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (1..99) of the samples; the only sample when there is one."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT ignored for the duration: a teardown that stops servers is not cut short."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_standalone(run: Callable[..., Any], render: Callable[[Any], list[str]], *, short: bool) -> int:
    """Run one benchmark part with progress on stderr and its markdown on stdout; 1 when it reported
    errors, 130 when interrupted. SIGTERM unwinds like Ctrl-C, so the servers it started are stopped."""
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run(short=short, say=say)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    print("\n".join(render(report)))
    return 1 if report.errors else 0


def fmt(v: float | None, ratio: bool = False, decimals: int = 3) -> str:
    """A table cell: ``n/a`` for a missing value, ``1.23x`` for a ratio, else fewer decimals
    the larger the number (thousands grouped)."""
    if v is None:
        return "n/a"
    if ratio:
        return f"{v:.2f}x"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{decimals}f}"

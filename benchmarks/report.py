"""Number formatting shared by the benchmark reports (benchmarks/run.py, benchmarks/ssh.py)."""

from __future__ import annotations


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

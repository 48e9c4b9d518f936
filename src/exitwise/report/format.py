"""The one set of number formatters, shared by the pages, the Markdown tables and the figures.

FLOPs follow the package convention (FLOPs = 2 x MACs); fractions are 1.0 = 100%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "count",
    "duration",
    "fewer",
    "flops",
    "flops_unit",
    "listing",
    "ms",
    "number",
    "pct",
    "pct_exact",
    "points",
    "safe_name",
    "shares",
    "size",
    "threshold",
    "thresholds",
    "times",
]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def pct(fraction: float | None, digits: int = 1) -> str:
    """``0.9812`` -> ``"98.1%"``; ``None`` -> ``"-"``."""
    return "-" if fraction is None else f"{100.0 * fraction:.{digits}f}%"


def pct_exact(fraction: float | None) -> str:
    """A set level (epsilon, delta) as a percentage, all its digits: ``0.05`` -> ``"5%"``,
    ``0.0025`` -> ``"0.25%"``; ``None`` -> ``"-"``."""
    return "-" if fraction is None else f"{100.0 * fraction:.6g}%"


def points(delta: float | None, digits: int = 1) -> str:
    """An accuracy difference in percentage points: ``-0.0123`` -> ``"-1.2 pt"``."""
    return "-" if delta is None else f"{100.0 * delta:+.{digits}f} pt"


def shares(values: Sequence[float], unit: str = "%") -> str:
    """Exit shares: ``[0.8, 0.2]`` -> ``"80% / 20%"`` (``unit=""``: ``"80 / 20"``)."""
    return " / ".join(f"{100.0 * v:.0f}{unit}" for v in values)


def fewer(fraction: float) -> str:
    """A FLOPs fraction as a ratio: ``0.31`` -> ``"3.2× fewer"``, ``1.02`` -> ``"2.0% more"``."""
    if fraction <= 0 or not math.isfinite(fraction):
        return "n/a"
    if fraction <= 1.0:
        return f"{1.0 / fraction:.1f}× fewer"
    return f"{100.0 * (fraction - 1.0):.1f}% more"


def flops_unit(largest: float, unit: str = "FLOPs") -> tuple[float, str]:
    """The one unit picker: the largest prefix that shows ``largest`` as 10 or more.

    ``1.11e9`` -> ``(1e6, "MFLOPs")`` (1,110.9), ``2.5e10`` -> ``(1e9, "GFLOPs")`` (25.0): a value
    keeps at least three significant digits, and a table's small entries stay readable.

    Args:
        largest: the largest raw count to show (a whole table or axis takes one unit).
        unit: ``"FLOPs"`` or ``"MACs"``.
    """
    for scale, prefix in _PREFIXES:
        if abs(largest) >= 10 * scale:
            return scale, prefix + unit
    return 1.0, unit


def number(value: float) -> str:
    """One decimal from 10 up, three significant digits below: ``324.41`` -> ``"324.4"``."""
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def flops(value: float, unit: str = "FLOPs") -> str:
    """``1110879232`` -> ``"1,110.9 MFLOPs"``; ``22016`` -> ``"22.0 kFLOPs"``."""
    scale, name = flops_unit(value, unit)
    return f"{number(value / scale)} {name}"


def ms(mean: float, ci95: float | None = None) -> str:
    """A latency: ``(12.345, 0.41)`` -> ``"12.3 ± 0.41 ms"``; ``(3.2,)`` -> ``"3.2 ms"``."""
    if not math.isfinite(mean):
        return "-"
    text = number(mean)
    return f"{text} ms" if ci95 is None else f"{text} ± {number(ci95)} ms"


def size(value: float) -> str:
    """A byte count: ``1234`` -> ``"1,234 B"``; ``150720`` -> ``"147.2 KiB"``; ``3.1e6`` ->
    ``"2.96 MiB"``."""
    if value >= 10 * 2**20:
        return f"{value / 2**20:,.1f} MiB"
    if value >= 2**20:
        return f"{value / 2**20:.2f} MiB"
    if value >= 10 * 2**10:
        return f"{value / 2**10:,.1f} KiB"
    return f"{value:,.0f} B"


def times(ratio: float | None) -> str:
    """A ratio: ``2.345`` -> ``"2.35×"``; ``None`` or not finite -> ``"-"``."""
    return "-" if ratio is None or not math.isfinite(ratio) else f"{ratio:.2f}×"


def duration(seconds: float) -> str:
    """``512.3`` -> ``"8 min 32 s"``; ``7260`` -> ``"2 h 1 min"``; ``4.25`` -> ``"4.2 s"``."""
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"


def threshold(value: float | None) -> str:
    """``0.9`` -> ``"0.9"``, ``0.99951`` -> ``"0.99951"``; ``None`` -> ``"-"``."""
    return "-" if value is None else f"{value:g}"


def thresholds(values: Sequence[float] | None) -> str:
    """Per-exit thresholds, shallow to deep: ``(0.9, 0.95, 0.99)`` -> ``"0.9 / 0.95 / 0.99"``;
    ``None`` -> ``"-"``."""
    return "-" if values is None else " / ".join(threshold(v) for v in values)


def count(value: int) -> str:
    """``2580`` -> ``"2,580"``."""
    return f"{value:,}"


def listing(value: object) -> str:
    """A value, or one per epoch: ``["cpu", "cuda"]`` -> ``"cpu, cuda"``."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def safe_name(name: str) -> str:
    """A policy name made safe for a file name: other than ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)

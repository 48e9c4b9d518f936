"""Exit placement by cumulative-FLOPs fraction (EENets, Demir & Akbas; SPINN's equidistant rule).

Targets, for ``n`` side exits and ``i = 1..n``, as fractions of the backbone's FLOPs:

* ``linear``  : ``i / (n + 1)`` (equidistant; SPINN, seed 002)
* ``pareto``  : ``1 - 0.8 ** i``
* ``fine``    : ``1 - 0.95 ** i``
* ``golden``  : ``phi ** (i - 1 - n)`` with phi the golden ratio

Each target is snapped to the nearest block boundary; the fractions achieved are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DISTRIBUTIONS", "target_fractions", "snap_to_blocks"]

_GOLDEN = (1 + 5**0.5) / 2
DISTRIBUTIONS = ("linear", "pareto", "fine", "golden")


def target_fractions(distribution: str, num_exits: int) -> list[float]:
    """Cumulative-FLOPs fractions at which ``num_exits`` side exits should sit."""
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    n = num_exits
    if distribution == "linear":
        return [i / (n + 1) for i in range(1, n + 1)]
    if distribution == "pareto":
        return [1 - 0.8**i for i in range(1, n + 1)]
    if distribution == "fine":
        return [1 - 0.95**i for i in range(1, n + 1)]
    if distribution in ("golden", "golden_ratio"):
        return [_GOLDEN ** (i - 1 - n) for i in range(1, n + 1)]
    raise ValueError(f"unknown exit distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


def snap_to_blocks(
    block_names: Sequence[str],
    block_flops: Sequence[int],
    total_flops: int,
    targets: Sequence[float],
) -> tuple[list[str], list[float]]:
    """Pick, for each target fraction, the block boundary nearest to it (distinct, in order).

    The last block is never chosen: the backbone's own classifier sits after it.

    Returns:
        The names of the blocks the exits go after, and the cumulative fractions they achieve.
    """
    if len(block_names) != len(block_flops):
        raise ValueError("block_names and block_flops must have the same length")
    cum, total = [], 0
    for f in block_flops[:-1]:
        total += f
        cum.append(total / total_flops)
    if len(targets) > len(cum):
        raise ValueError(
            f"{len(targets)} side exits asked for, but the backbone has only {len(cum)} "
            "block boundaries before its classifier"
        )
    chosen: list[int] = []
    for k, t in enumerate(targets):
        lo = chosen[-1] + 1 if chosen else 0
        hi = len(cum) - (len(targets) - k)  # leave room for the exits still to place
        best = min(range(lo, hi + 1), key=lambda j: (abs(cum[j] - t), j))
        chosen.append(best)
    return [block_names[j] for j in chosen], [cum[j] for j in chosen]

"""The one set of formatters: units, signs, edge cases."""

from __future__ import annotations

import math

import pytest

from exitwise.report import format as fmt


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [(0.9812, 1, "98.1%"), (0.98125, 2, "98.12%"), (1.0, 0, "100%"), (0.0, 1, "0.0%"),
     (1.022, 1, "102.2%"), (None, 1, "-")],
)  # fmt: skip
def test_pct(value: float | None, digits: int, text: str) -> None:
    assert fmt.pct(value, digits) == text


def test_points_carry_their_sign() -> None:
    assert fmt.points(-0.0123) == "-1.2 pt"
    assert fmt.points(0.0028, 2) == "+0.28 pt"
    assert fmt.points(0.0) == "+0.0 pt"
    assert fmt.points(None) == "-"


@pytest.mark.parametrize(
    ("largest", "scale", "unit"),
    [(5.0, 1.0, "FLOPs"), (9_999, 1.0, "FLOPs"), (10_000, 1e3, "kFLOPs"), (9.9e6, 1e3, "kFLOPs"),
     (1.11e9, 1e6, "MFLOPs"), (9.99e9, 1e6, "MFLOPs"), (1e10, 1e9, "GFLOPs"),
     (2.5e10, 1e9, "GFLOPs"), (3e13, 1e12, "TFLOPs")],
)  # fmt: skip
def test_one_unit_picker(largest: float, scale: float, unit: str) -> None:
    """The largest prefix that shows the value as 10 or more (the old pickers disagreed at
    1e9, 1e10 and 2e10)."""
    assert fmt.flops_unit(largest) == (scale, unit)
    assert fmt.flops_unit(largest, "MACs") == (scale, unit.replace("FLOPs", "MACs"))


def test_flops_text() -> None:
    assert fmt.flops(1_110_857_216) == "1,110.9 MFLOPs"
    assert fmt.flops(555_428_608, "MACs") == "555.4 MMACs"
    assert fmt.flops(22_016) == "22.0 kFLOPs"
    assert fmt.flops(512) == "512.0 FLOPs"
    assert fmt.flops(3) == "3 FLOPs"
    assert fmt.flops(2.5e10) == "25.0 GFLOPs"


def test_number_keeps_three_significant_digits() -> None:
    assert [fmt.number(v) for v in (1110.857, 14.03, 7.01235, 0.022016)] == [
        "1,110.9", "14.0", "7.01", "0.022",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0.0 s"), (4.25, "4.2 s"), (59.4, "59.4 s"), (59.6, "1 min 0 s"), (512.3, "8 min 32 s"),
     (3600, "1 h 0 min"), (7260, "2 h 1 min")],
)  # fmt: skip
def test_duration(seconds: float, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_fewer() -> None:
    assert fmt.fewer(0.31) == "3.2× fewer"
    assert fmt.fewer(1.0) == "1.0× fewer"
    assert fmt.fewer(1.022) == "2.2% more"
    assert fmt.fewer(0.0) == fmt.fewer(math.nan) == fmt.fewer(math.inf) == "n/a"


def test_set_levels_and_per_exit_thresholds() -> None:
    assert [fmt.pct_exact(v) for v in (0.05, 0.1, 0.0025, 0.15, 1.0, None)] == [
        "5%", "10%", "0.25%", "15%", "100%", "-",
    ]  # fmt: skip
    assert fmt.thresholds((0.9, 0.9775, 1.0)) == "0.9 / 0.9775 / 1"
    assert fmt.thresholds(None) == "-"


def test_thresholds_shares_and_names() -> None:
    assert [fmt.threshold(t) for t in (0.9, 0.99951, 1.0, 2, None)] == [
        "0.9", "0.99951", "1", "2", "-",
    ]  # fmt: skip
    assert fmt.shares([0.8, 0.15, 0.05]) == "80% / 15% / 5%"
    assert fmt.shares([0.5, 0.5], "") == "50 / 50"
    assert fmt.count(2580) == "2,580"
    assert fmt.listing(["cpu", "cuda:0"]) == "cpu, cuda:0" and fmt.listing(2) == "2"
    assert fmt.safe_name("max prob/odd<b>") == "max_prob_odd_b_"
    assert fmt.safe_name("entropy-v2.1") == "entropy-v2.1"

"""Temperature scaling (Guo et al. 2017) and the expected calibration error."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from exitwise.calibration import (
    Reliability,
    expected_calibration_error,
    fit_global_temperature,
    fit_temperature,
    fit_temperatures,
    reliability,
)
from exitwise.outputs import ExitOutput


def sampled(n=20000, classes=10, scale=2.0, seed=0):
    """Logits ``z`` and labels drawn from ``softmax(z)``: ``z`` is perfectly calibrated."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64) * scale
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z, labels


def nll(logits, labels, t=1.0):
    return float(F.cross_entropy(logits.double() / t, labels))


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_a_known_temperature(true_t):
    z, y = sampled()
    # logits = z * T: dividing by T gives back the calibrated z
    assert fit_temperature(z * true_t, y) == pytest.approx(true_t, rel=0.05)


def test_over_confident_logits_get_t_above_one_and_a_lower_nll():
    z, y = sampled(n=4000, seed=1)
    over = z * 3.0
    t = fit_temperature(over, y)
    assert t > 1.0
    assert nll(over, y, t) <= nll(over, y)
    # a minimum: nearby temperatures do no better
    assert nll(over, y, t) <= min(nll(over, y, t * 1.01), nll(over, y, t / 1.01))


def test_nll_after_fitting_is_never_above_t_one():
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(300, 5, generator=g) * (seed + 1)
        y = torch.randint(0, 5, (300,), generator=g)
        t = fit_temperature(logits, y)
        assert nll(logits, y, t) <= nll(logits, y) + 1e-12


def test_fit_is_deterministic_and_dtype_independent():
    z, y = sampled(n=2000, seed=2)
    t64 = fit_temperature(z * 2, y)
    assert fit_temperature(z * 2, y) == t64
    assert fit_temperature((z * 2).float(), y) == pytest.approx(t64, rel=1e-5)


def test_temperature_is_clamped_and_degenerate_logits_give_one():
    y = torch.tensor([0, 1, 2, 0])
    separable = F.one_hot(y, 3).double() * 10  # every sample right: NLL falls as T -> 0
    assert fit_temperature(separable, y) == 0.01
    assert fit_temperature(separable, y, bounds=(0.2, 5.0)) == 0.2
    wrong = F.one_hot((y + 1) % 3, 3).double() * 10  # every sample wrong: T -> inf
    assert fit_temperature(wrong, y) == 100.0
    assert fit_temperature(torch.zeros(4, 3), y) == 1.0


def test_per_exit_and_global_temperatures():
    z, y = sampled(n=4000, seed=3)
    outputs = [ExitOutput(z * 0.5), ExitOutput(z * 3.0)]
    temps = fit_temperatures(outputs, y)
    assert temps == [fit_temperature(z * 0.5, y), fit_temperature(z * 3.0, y)]
    t = fit_global_temperature(outputs, y)
    assert temps[0] < t < temps[1]

    def total(u):
        return sum(nll(o.logits, y, u) for o in outputs)

    assert total(t) <= min(total(t * 1.01), total(t / 1.01), total(1.0))
    assert fit_global_temperature(outputs[:1], y) == pytest.approx(temps[0], rel=1e-12)


def test_ece_by_hand():
    # two classes, logits [d, 0]: the confidence is sigmoid(d)
    conf = [0.61, 0.63, 0.9, 0.95]
    d = torch.tensor([math.log(c / (1 - c)) for c in conf], dtype=torch.float64)
    logits = torch.stack([d, torch.zeros(4, dtype=torch.float64)], dim=1)
    y = torch.tensor([0, 1, 0, 1])  # right, wrong, right, wrong
    # bins of width 1/15: 0.61, 0.63 in (0.6, 0.667]; 0.9 in (0.867, 0.933]; 0.95 in (0.933, 1]
    expected = 2 / 4 * abs(0.5 - 0.62) + 1 / 4 * abs(1 - 0.9) + 1 / 4 * abs(0 - 0.95)
    assert expected_calibration_error(logits, y) == pytest.approx(expected, abs=1e-12)
    # the temperature divides the logits
    assert expected_calibration_error(logits * 2, y, temperature=2.0) == pytest.approx(expected)
    # one bin: |accuracy - mean confidence|
    assert expected_calibration_error(logits, y, bins=1) == pytest.approx(abs(0.5 - sum(conf) / 4))


def test_reliability_diagram():
    z, y = sampled(n=3000, seed=4)
    diagram = reliability(z * 2, y)
    assert isinstance(diagram, Reliability) and len(diagram.bins) == 15
    assert diagram.num_samples == 3000 and diagram.temperature == 1.0
    assert diagram.bins[0].lower == 0.0 and diagram.bins[-1].upper == 1.0
    for a, b in zip(diagram.bins, diagram.bins[1:], strict=False):
        assert a.upper == b.lower
    for b in diagram.bins:
        if b.count == 0:
            assert b.confidence == 0.0 and b.accuracy == 0.0
        else:
            assert b.lower < b.confidence <= b.upper and 0.0 <= b.accuracy <= 1.0
    assert diagram.ece == expected_calibration_error(z * 2, y)
    gaps = sum(b.count / 3000 * abs(b.accuracy - b.confidence) for b in diagram.bins)
    assert diagram.ece == pytest.approx(gaps)
    # fitting the temperature calibrates: the ECE falls
    t = fit_temperature(z * 2, y)
    assert reliability(z * 2, y, t).ece < diagram.ece / 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        diagram.ece = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("logits", "labels", "kwargs", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), {}, r"\(N, num_classes\)"),
        (torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), {}, "floating"),
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.int64), {}, r"shape \(4,\)"),
        (torch.zeros(4, 3), torch.zeros(4), {}, "integer class indices"),
        (torch.zeros(4, 3), torch.full((4,), 3), {}, r"\[0, 2\]"),
        (torch.full((4, 3), math.nan), torch.zeros(4, dtype=torch.int64), {}, "NaN"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), {}, "at least one sample"),
    ],
)
def test_bad_input_is_refused_in_one_line(logits, labels, kwargs, match):
    for fn in (fit_temperature, expected_calibration_error):
        with pytest.raises(ValueError, match=match) as info:
            fn(logits, labels, **kwargs)
        assert "\n" not in str(info.value)


def test_bad_settings_are_refused():
    logits, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        expected_calibration_error(logits, y, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        reliability(logits, y, temperature=math.nan)
    with pytest.raises(ValueError, match="bins must be an integer >= 1"):
        reliability(logits, y, bins=0)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, y, bounds=(0.0, 10.0))
    with pytest.raises(ValueError, match="at least one exit"):
        fit_temperatures([], y)
    with pytest.raises(ValueError, match="logits of exit 1"):
        fit_global_temperature([ExitOutput(logits), ExitOutput(torch.zeros(3, 3))], y)

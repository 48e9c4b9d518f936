import math

import pytest
import torch

from exitwise.nets import ExitOutput
from exitwise.policies import (
    POLICIES,
    Capped,
    Committee,
    Entropy,
    ExitPolicy,
    MaxProbability,
    MeanEnsemble,
    Offloaded,
    Patience,
    PolicyContext,
    final_decision,
)


def outs(*rows):
    return [ExitOutput(torch.tensor(r, dtype=torch.float64)) for r in rows]


def test_max_probability_threshold_per_exit():
    logits = outs([[2.0, 0.0], [0.0, 0.0]], [[0.0, 3.0], [1.0, 0.0]])
    p_hi = 1 / (1 + math.exp(-2))  # softmax of [2, 0]
    dec = MaxProbability(0.8).decide(0, logits)
    assert dec.exit_mask.tolist() == [p_hi >= 0.8, False]
    assert dec.prediction.tolist() == [0, 0]
    assert dec.confidence[1].item() == pytest.approx(0.5)
    per_exit = MaxProbability([0.99, 0.5])
    assert per_exit.decide(0, logits).exit_mask.tolist() == [False, False]
    assert per_exit.decide(1, logits).exit_mask.tolist() == [True, True]


def test_temperature_softens_confidence():
    logits = outs([[4.0, 0.0]])
    hot = MaxProbability(0.9, temperature=4.0).decide(0, logits)
    cold = MaxProbability(0.9).decide(0, logits)
    assert hot.confidence.item() < cold.confidence.item()
    assert cold.exit_mask.item() and not hot.exit_mask.item()


def test_entropy_rule_in_nats_and_normalised():
    logits = outs([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    dec = Entropy(0.1).decide(0, logits)
    assert dec.exit_mask.tolist() == [True, False]
    norm = Entropy(0.999, normalized=True).decide(0, logits)
    assert norm.exit_mask.tolist() == [True, False]  # uniform has normalised entropy exactly 1
    assert norm.confidence[1].item() == pytest.approx(0.0, abs=1e-12)


def test_final_decision_takes_everyone():
    dec = final_decision(outs([[0.0, 1.0], [3.0, 1.0]])[0])
    assert dec.exit_mask.all() and dec.prediction.tolist() == [1, 0]


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        MaxProbability(0.5, temperature=0.0)
    with pytest.raises(ValueError, match="NaN"):
        MaxProbability(float("nan"))
    with pytest.raises(ValueError, match="2 per-exit values but exit 2"):
        MaxProbability([0.5, 0.6]).decide(2, outs([[1.0]], [[1.0]], [[1.0]]))


def test_capped_policy_forces_an_exit():
    logits = outs([[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]])
    capped = Capped(MaxProbability(0.99), max_exit=1)
    assert not capped.decide(0, logits).exit_mask.item()
    assert capped.decide(1, logits).exit_mask.item()
    with pytest.raises(ValueError, match="max_exit"):
        Capped(MaxProbability(0.5), -1)


def test_rules_read_exit_outputs_never_networks():
    """DESIGN: policies.py imports outputs.py, not nets/ (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, exitwise.policies; "
        "print(sorted(m for m in sys.modules if m.startswith('exitwise.nets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_imports_keep_working():
    from exitwise import nets, outputs, policies
    from exitwise.nets import multi_exit

    assert nets.ExitOutput is outputs.ExitOutput is multi_exit.ExitOutput
    assert policies.ExitDecision is outputs.ExitDecision
    assert nets.as_exit_output is outputs.as_exit_output


# ------------------------------------------------------------------ temperatures, the last exit


def test_final_uses_the_temperature_of_the_last_exit():
    logits = outs([[4.0, 0.0]], [[4.0, 0.0]], [[0.0, 4.0]])
    cold = final_decision(logits[-1])
    policy = MaxProbability(0.9, temperature=[1.0, 1.0, 4.0])
    hot = policy.final(logits)
    assert hot.exit_mask.all() and hot.prediction.tolist() == [1]
    assert hot.confidence.item() == pytest.approx(1 / (1 + math.exp(-1)))  # softmax([0, 1])
    assert hot.confidence.item() < cold.confidence.item()
    assert MaxProbability(0.9, temperature=4.0).final(logits).confidence == hot.confidence
    assert Capped(policy, 1).final(logits).confidence == hot.confidence
    assert final_decision(logits[-1], 4.0).confidence == hot.confidence


def test_entropy_temperature_and_its_last_exit():
    logits = outs([[3.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]])
    cold, hot = Entropy(0.5, normalized=True), Entropy(0.5, normalized=True, temperature=10.0)
    assert cold.decide(0, logits).exit_mask.item() and not hot.decide(0, logits).exit_mask.item()
    # the last exit reports the rule's own score, 1 - normalised entropy, at its temperature
    p = torch.softmax(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64), dim=0)
    expected = 1 + float((p * p.log()).sum()) / math.log(3)
    final = hot.final(logits)
    assert final.exit_mask.all() and final.prediction.item() == 0
    assert final.confidence.item() == pytest.approx(expected)
    assert final.confidence.item() == pytest.approx(hot.decide(1, logits).confidence.item())


# ------------------------------------------------------------------------------ new exit rules


def test_committee_weights_the_exits_by_accuracy():
    logits = outs(
        [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], [[0.0] * 3] * 2
    )
    p0, p1 = (torch.softmax(o.logits, dim=1) for o in logits[:2])
    rule = Committee(0.5, weights=[0.6, 0.9, 1.0])
    first = rule.decide(0, logits)  # exit 0 alone, whatever its weight
    assert torch.equal(first.confidence, p0.amax(dim=1))
    combined = (0.6 * p0 + 0.9 * p1) / 1.5
    dec = rule.decide(1, logits)
    assert torch.allclose(dec.confidence, combined.amax(dim=1), rtol=0, atol=1e-15)
    assert dec.prediction.tolist() == combined.argmax(dim=1).tolist() == [0, 2]
    assert dec.exit_mask.tolist() == (combined.amax(dim=1) >= 0.5).tolist()
    per_side_exit = Committee([0.99, 0.1], weights=[0.6, 0.9])
    assert per_side_exit.decide(1, logits).exit_mask.all()
    # temperatures per exit scale each exit before combining
    hot = Committee(0.5, [0.6, 0.9, 1.0], temperature=[2.0, 0.5, 1.0]).decide(1, logits)
    p0t = torch.softmax(logits[0].logits / 2, dim=1)
    p1t = torch.softmax(logits[1].logits / 0.5, dim=1)
    expected = ((0.6 * p0t + 0.9 * p1t) / 1.5).amax(dim=1)
    assert torch.allclose(hot.confidence, expected, rtol=0, atol=1e-15)


def test_mean_ensemble_is_the_plain_mean():
    g = torch.Generator().manual_seed(0)
    logits = [ExitOutput(torch.randn(6, 4, generator=g, dtype=torch.float64)) for _ in range(3)]
    mean = torch.stack([torch.softmax(o.logits, dim=1) for o in logits]).mean(dim=0)
    dec = MeanEnsemble(0.4).decide(2, logits)
    assert torch.allclose(dec.confidence, mean.amax(dim=1), rtol=0, atol=1e-15)
    assert torch.equal(dec.prediction, mean.argmax(dim=1))
    same = Committee(0.4, weights=[0.7, 0.7, 0.7]).decide(2, logits)
    assert torch.allclose(same.confidence, dec.confidence, rtol=0, atol=1e-15)


def test_committee_and_mean_count_their_matrix_product():
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(1)
    logits = [ExitOutput(torch.randn(5, 7, generator=g, dtype=torch.float64)) for _ in range(4)]
    for rule in (Committee(0.5, [0.5, 0.6, 0.7, 0.8]), MeanEnsemble(0.5)):
        assert rule.decision_flops(0, 7) == 0  # nothing to combine at exit 0
        for i in range(3):
            with FlopCounterMode(display=False) as counter:
                rule.decide(i, logits[: i + 1])
            assert counter.get_total_flops() == 5 * rule.decision_flops(i, 7)
        assert rule.decision_flops(2, 7) == 2 * 7 * 3
    assert MaxProbability(0.5).decision_flops(2, 7) == 0


def test_patience_needs_agreeing_consecutive_exits():
    # argmax per exit, for 3 samples: [0, 0, 1, 1], [0, 1, 1, 1], [0, 1, 0, 1]
    def row(c):
        return [3.0 if k == c else 0.0 for k in range(2)]

    logits = outs(
        [row(0), row(0), row(0)], [row(0), row(1), row(1)], [row(1), row(1), row(0)], [row(1)] * 3
    )
    assert Patience(1).decide(0, logits).exit_mask.all()
    two = Patience(2)
    assert not two.decide(0, logits).exit_mask.any()
    assert two.decide(1, logits).exit_mask.tolist() == [True, False, False]
    assert two.decide(2, logits).exit_mask.tolist() == [False, True, False]
    three = Patience(3)
    assert not three.decide(1, logits).exit_mask.any()
    assert three.decide(2, logits).exit_mask.tolist() == [False, False, False]
    dec = two.decide(2, logits)
    assert dec.prediction.tolist() == [1, 1, 0]
    assert dec.confidence[0].item() == pytest.approx(1 / (1 + math.exp(-3)))
    assert Patience(2, temperature=3.0).decide(2, logits).confidence[0].item() == pytest.approx(
        1 / (1 + math.exp(-1))
    )
    assert Patience(4).decision_flops(2, 2) == 0
    assert Capped(Patience(4), 1).decide(1, logits).exit_mask.all()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Committee(math.nan, [0.5, 0.5]), "alpha is NaN"),
        (lambda: Committee(-0.1, [0.5, 0.5]), "alpha must be >= 0"),
        (lambda: Committee(0.5, [0.5, -0.1]), "weights must be finite and >= 0"),
        (lambda: Committee(0.5, [0.5, math.nan]), "weights must be finite and >= 0"),
        (lambda: Committee(0.5, [0.0, 0.0]), r"weights\[0\] must be > 0"),
        (lambda: Committee(0.5, []), "at least one value"),
        (lambda: MeanEnsemble(math.nan), "threshold is NaN"),
        (lambda: MeanEnsemble(0.5, temperature=[1.0, -1.0]), "temperatures must be > 0"),
        (lambda: MaxProbability(-1.0), "threshold must be >= 0"),
        (lambda: Entropy(0.5, temperature=0.0), "temperatures must be > 0"),
        (lambda: Patience(0), "patience must be an integer >= 1"),
        (lambda: Patience(1.5), "patience must be an integer >= 1"),
        (lambda: Patience(math.nan), "patience must be an integer >= 1"),
    ],
)
def test_new_rules_check_their_arguments_in_one_line(build, match):
    with pytest.raises(ValueError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


def test_per_exit_values_must_fit_the_network():
    ok = [
        MaxProbability([0.5, 0.6, 0.7], temperature=[1.0, 2.0, 1.0, 1.5]),
        Committee(0.5, [0.5, 0.6, 0.7]),  # one weight per side exit
        Committee(0.5, [0.5, 0.6, 0.7, 0.9]),  # or one per exit
        Patience(3, temperature=[1.0] * 4),
    ]
    for rule in ok:
        rule.check_exits(4)
    bad = [
        (MaxProbability([0.5, 0.6]), "threshold has 2 per-exit values but the network has 3 side"),
        (MaxProbability(0.5, temperature=[1.0] * 3), "temperature has 3 .* 4 exits"),
        (Entropy([0.1] * 4), "threshold has 4"),
        (Committee([0.5] * 4, [0.5] * 4), "alpha has 4"),
        (Committee(0.5, [0.5, 0.6]), "weights has 2 values but the network has 4 exits"),
        (MeanEnsemble(0.5, temperature=[1.0] * 5), "temperature has 5"),
        (Patience(2, temperature=[1.0, 1.0]), "temperature has 2"),
        (Capped(MaxProbability([0.5]), 1), "threshold has 1"),
    ]
    for rule, match in bad:
        with pytest.raises(ValueError, match=match) as info:
            rule.check_exits(4)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ registry


def test_registry_builds_every_rule_in_a_context():
    assert {"committee", "mean_ensemble", "patience"} <= set(POLICIES.names())
    ctx = PolicyContext(temperature=(1.5, 1.2, 1.0, 0.9), exit_weights=(0.5, 0.6, 0.7, 0.8))
    for name in POLICIES:
        family = POLICIES.get(name)
        grid = family.thresholds_for(4)
        assert grid and all(not math.isnan(t) for t in grid)
        for t in grid:
            rule = family.make(t, ctx)
            assert isinstance(rule, ExitPolicy)
            rule.check_exits(4)
    committee = POLICIES.get("committee").make(0.9, ctx)
    assert isinstance(committee, Committee) and committee.weights == ctx.exit_weights
    assert committee.temperature_at(3) == 0.9
    assert isinstance(POLICIES.get("mean_ensemble").make(0.9, ctx), MeanEnsemble)
    assert POLICIES.get("max_probability").make(0.9, ctx).temperature_at(0) == 1.5
    patience = POLICIES.get("patience")
    assert patience.thresholds_for(3) == (1.0, 2.0, 3.0)
    assert patience.thresholds_for(6)[-1] == 6.0
    rule = patience.make(2.0, PolicyContext())
    assert isinstance(rule, Patience) and rule.patience == 2
    with pytest.raises(ValueError, match="patience must be an integer"):
        patience.make(2.5, PolicyContext())
    with pytest.raises(ValueError, match="committee needs exit weights") as info:
        POLICIES.get("committee").make(0.9, PolicyContext())
    assert "\n" not in str(info.value)
    assert (
        POLICIES.get("max_probability").thresholds_for(7)
        == POLICIES.get("max_probability").thresholds
    )


def test_offloaded_edge_exits_then_the_final_exit():
    """Exits 0..k decide with the inner rule; later side exits never let go (the cloud runs to
    the final exit) and the final decision is the final exit's plain argmax."""
    from exitwise.cost import CostAccount
    from exitwise.routing import simulate

    # 3 samples, 4 exits: sample 0 confident at exit 0, sample 1 only at exit 2, sample 2 never
    o = outs(
        [[5.0, 0.0], [0.0, 0.1], [0.1, 0.0]],
        [[5.0, 0.0], [0.0, 0.2], [0.2, 0.0]],
        [[5.0, 0.0], [0.0, 9.0], [0.0, 0.3]],
        [[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]],
    )
    costs = CostAccount((10, 20, 30, 40), (1, 2, 3, 4), (3, 8, 8))
    inner = MaxProbability(0.9)
    res = simulate(o, Offloaded(inner, 1), costs)
    assert res.exit_idx.tolist() == [0, 3, 3]  # exit 2 is in the cloud: it never lets go
    assert res.prediction.tolist() == [0, 0, 1]  # offloaded: the final exit's argmax
    assert res.flops.tolist() == [11, 110, 110]
    assert simulate(o, Offloaded(inner, 2), costs).exit_idx.tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="side exit in 0..2 of a 4-exit model, got 3"):
        Offloaded(inner, 3).check_exits(4)
    with pytest.raises(ValueError, match=">= 0"):
        Offloaded(inner, -1)

import math

import pytest
import torch

from exitwise.nets import ExitOutput
from exitwise.policies import Entropy, MaxProbability, final_decision


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
    from exitwise.policies import Capped

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

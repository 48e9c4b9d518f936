import pytest
import torch

from exitwise.experiments import choose_threshold, efficiency_study
from exitwise.routing import OperatingPoint
from tests.training.test_trainer import tiny_data, tiny_model


def pt(t, acc, flops):
    return OperatingPoint(t, acc, flops, flops / 100, (1.0,))


def test_choose_threshold_takes_the_cheapest_good_enough_point():
    points = [pt(0.5, 0.90, 40), pt(0.8, 0.95, 60), pt(0.9, 0.96, 80), pt(1.0, 0.97, 100)]
    assert choose_threshold(points, 0.95).threshold == 0.8
    assert choose_threshold(points, 0.99).threshold == 1.0  # none qualifies: most accurate


def test_study_reports_every_exit_policy_and_oracle():
    torch.manual_seed(0)
    ev = efficiency_study(tiny_model().eval(), tiny_data(), tolerance=0.0, model_name="tiny")
    assert [e["exit"] for e in ev["exits"]] == [0, 1]
    assert ev["costs"]["backbone_flops"] == ev["backbone"]["flops"]
    for name in ("max_probability", "entropy"):
        pol = ev["policies"][name]
        assert pol["sweep"] and pol["pareto"] and pol["chosen"] is not None
        assert pol["chosen"]["val_accuracy"] >= 0
    assert 0 <= ev["oracle"]["accuracy"] <= 1
    assert ev["oracle"]["accuracy"] >= max(e["accuracy"] for e in ev["exits"]) - 1e-12
    with pytest.raises(ValueError, match="unknown policies"):
        efficiency_study(tiny_model(), tiny_data(), policies=["patience"])

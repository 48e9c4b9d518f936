import pytest
import torch

from exitwise.experiments import choose_threshold, efficiency_study
from exitwise.results import EfficiencyResult, OperatingPoint
from tests.training.test_trainer import tiny_data, tiny_model


def pt(t, acc, flops):
    return OperatingPoint(t, acc, flops, flops / 100, (1.0,))


def test_choose_threshold_takes_the_cheapest_good_enough_point():
    points = [pt(0.5, 0.90, 40), pt(0.8, 0.95, 60), pt(0.9, 0.96, 80), pt(1.0, 0.97, 100)]
    assert choose_threshold(points, 0.95).threshold == 0.8
    assert choose_threshold(points, 0.99).threshold == 1.0  # none qualifies: most accurate


def test_study_reports_every_exit_policy_and_oracle():
    torch.manual_seed(0)
    data = tiny_data()
    model = tiny_model().eval()
    ev = efficiency_study(model, data, tolerance=0.0, model_name="tiny")
    assert [e.exit for e in ev.exits] == [0, 1]
    assert ev.costs.backbone_flops == ev.backbone.flops == model.costs.backbone_flops
    with torch.no_grad():
        val_x = data.val.images.float() / 255
        val_acc = [float((lg.argmax(1) == data.val.labels).double().mean()) for lg in model(val_x)]
    assert [e.val_accuracy for e in ev.exits] == pytest.approx(val_acc)
    for name in ("max_probability", "entropy"):
        pol = ev.policies[name]
        assert pol.sweep and pol.pareto and pol.chosen is not None
        # the chosen threshold's validation accuracy is the validation sweep's at that threshold
        (val_point,) = [p for p in pol.val_sweep if p.threshold == pol.chosen.threshold]
        assert pol.chosen.val_accuracy == val_point.accuracy
        assert pol.chosen.val_accuracy >= val_acc[-1]  # tolerance 0: not below the final exit
    assert ev.oracle.accuracy >= max(e.accuracy for e in ev.exits) - 1e-12
    assert EfficiencyResult.from_json(ev.to_json()) == ev
    with pytest.raises(KeyError, match="unknown exit policy 'patience'"):
        efficiency_study(tiny_model(), tiny_data(), policies=["patience"])

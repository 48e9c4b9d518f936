import pytest
import torch

from exitwise.experiments import choose_threshold, efficiency_study
from exitwise.results import EfficiencyResult, OperatingPoint
from exitwise.training import TrainConfig, train
from tests.training.test_trainer import CFG, tiny_data, tiny_model


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained one epoch (exits that disagree: 100% / 62%), in eval mode, and its
    data; the study does not change it."""
    torch.manual_seed(0)
    data = tiny_data()
    model = tiny_model()
    train(model, data, TrainConfig(**{**CFG, "epochs": 1}))
    return model.eval(), data


def pt(t, acc, flops):
    return OperatingPoint(t, acc, flops, flops / 100, (1.0,))


@torch.no_grad()
def routed_accuracy(model, split, rule, threshold):
    """Accuracy when each image leaves at the first exit whose softmax passes the rule (max
    probability >= t, or entropy / log(classes) <= t), else at the last: by hand."""
    exit_logits = model(split.images.float() / 255)
    pred = exit_logits[-1].argmax(1)
    left = torch.zeros(len(pred), dtype=torch.bool)
    for logits in exit_logits[:-1]:
        p = logits.softmax(1)
        if rule == "max_probability":
            leaves = p.max(1).values >= threshold
        else:
            entropy = -(p * p.clamp_min(1e-30).log()).sum(1) / torch.log(torch.tensor(p.shape[1]))
            leaves = entropy <= threshold
        take = leaves & ~left
        pred = torch.where(take, logits.argmax(1), pred)
        left |= leaves
    return float((pred == split.labels).double().mean())


def test_choose_threshold_takes_the_cheapest_good_enough_point():
    points = [pt(0.5, 0.90, 40), pt(0.8, 0.95, 60), pt(0.9, 0.96, 80), pt(1.0, 0.97, 100)]
    assert choose_threshold(points, 0.95).threshold == 0.8
    assert choose_threshold(points, 0.99).threshold == 1.0  # none qualifies: most accurate


def test_study_reports_every_exit_policy_and_oracle(trained):
    model, data = trained
    ev = efficiency_study(model, data, tolerance=0.0, model_name="tiny", calibrate=False)
    assert ev.calibration is None and "committee" not in ev.policies  # no weights without it
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
        # ... and what routing the validation split by hand gives, there and at every threshold
        assert pol.chosen.val_accuracy == pytest.approx(
            routed_accuracy(model, data.val, name, pol.chosen.threshold), abs=1e-12
        )
        by_hand = [routed_accuracy(model, data.val, name, p.threshold) for p in pol.val_sweep]
        assert [p.accuracy for p in pol.val_sweep] == pytest.approx(by_hand, abs=1e-12)
        assert len(set(by_hand)) > 1  # the sweep is not flat: a wrong threshold would show
        assert pol.chosen.val_accuracy >= val_acc[-1]  # tolerance 0: not below the final exit
    assert ev.oracle.accuracy >= max(e.accuracy for e in ev.exits) - 1e-12
    assert EfficiencyResult.from_json(ev.to_json()) == ev
    with pytest.raises(KeyError, match="unknown exit policy 'no_such_rule'"):
        efficiency_study(tiny_model(), tiny_data(), policies=["no_such_rule"])


def test_calibrated_study_applies_temperatures_and_searches_per_exit_thresholds(trained):
    from exitwise.policies import MaxProbability
    from exitwise.routing import collect_outputs, simulate

    model, data = trained
    rules = ["max_probability", "entropy", "committee", "mean_ensemble", "patience"]
    ev = efficiency_study(model, data, rules, tolerance=0.005, model_name="tiny")
    cal = ev.calibration
    assert cal is not None and len(cal.temperatures) == model.num_exits
    assert cal.exit_weights == pytest.approx([e.val_accuracy for e in ev.exits])
    for e in cal.exits:  # fitted by NLL on validation: it rarely hurts NLL on test by much
        assert e.nll_after <= e.nll_before + 0.05
    assert {"committee", "mean_ensemble", "patience", "max_probability_per_exit"} <= set(
        ev.policies
    )
    # the shared max-probability sweep uses the fitted temperatures
    mp = ev.policies["max_probability"]
    outs, labels = collect_outputs(model, [(data.test.images.float() / 255, data.test.labels)])
    t = mp.sweep[5].threshold
    res = simulate(outs, MaxProbability(t, temperature=cal.temperatures), model.costs)
    assert mp.sweep[5].accuracy == pytest.approx(res.accuracy(labels))
    # per-exit thresholds: on validation never costlier than the shared threshold it started from
    per_exit = ev.policies["max_probability_per_exit"]
    assert per_exit.chosen is not None and per_exit.chosen.thresholds is not None
    assert len(per_exit.chosen.thresholds) == model.num_exits - 1
    (shared_val,) = [p for p in mp.val_sweep if p.threshold == mp.chosen.threshold]
    (mine_val,) = [p for p in per_exit.val_sweep if p.threshold == 0.005]
    assert mine_val.accuracy >= ev.exits[-1].val_accuracy - 0.005 - 1e-12
    assert mine_val.mean_flops <= shared_val.mean_flops + 1e-9
    assert EfficiencyResult.from_json(ev.to_json()) == ev

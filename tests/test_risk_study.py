"""The risk-control study of a run: typed, every reported risk is what the live rule does."""

import dataclasses

import pytest
import torch

from exitwise.errors import InputError
from exitwise.experiments.risk import METHODS, RISKS, RULES, SHIFTS, RiskSettings, risk_study
from exitwise.policies import MaxProbability
from exitwise.results import RiskResult
from exitwise.routing import route
from exitwise.training import TrainConfig, train
from tests.training.test_trainer import tiny_data, tiny_model

SETTINGS = RiskSettings(
    epsilon=0.1, delta=0.2, epsilons=(0.05, 0.1, 0.2), splits=20, shift_samples=24
)


@pytest.fixture(scope="module")
def study():
    data = tiny_data(n=96)
    model = tiny_model()
    train(model, data, TrainConfig(epochs=1, batch_size=32, augment="none", lr=0.05))
    model.eval()
    temps = [1.3] * model.num_exits
    return model, data, temps, risk_study(model, data, temps, SETTINGS, "tiny")


def test_the_study_is_typed_and_complete(study):
    model, _, _, result = study
    assert RiskResult.from_json(result.to_json()) == result
    combos = {(f.rule, f.risk, f.method) for f in result.fitted}
    assert combos == {(r, k, m) for r in RULES for k in RISKS for m in METHODS}
    assert len(result.recalibrated) == len(result.fitted)
    assert {(e.rule, e.risk) for e in result.evidence} == {(r, k) for r in RULES for k in RISKS}
    for ev in result.evidence:
        assert [row.epsilon for row in ev.rows] == list(SETTINGS.epsilons)
        for row in ev.rows:
            assert 0 <= row.crc_risk_p10 <= row.crc_risk_p90 <= 1
            assert 0 <= row.crc_mean_risk <= 1 and 0 <= row.ltt_violation_rate <= 1
            # every fraction lies between the first exit's path and the last exit's path
            path = model.costs.path_fractions
            for f in (row.crc_flops_fraction, row.ltt_flops_fraction, row.best_flops_fraction):
                assert path[0] - 1e-9 <= f <= path[-1] + 1e-9
    assert len(result.shift) == len(SHIFTS) * len(METHODS)
    assert result.config.temperatures == [1.3, 1.3]


def test_fitted_risks_are_what_the_live_rule_does_on_test(study):
    model, data, temps, result = study
    x, y = data.test.images.float() / 255, data.test.labels
    with torch.no_grad():
        final = model(x)[-1].argmax(1)
    for fit in result.fitted:
        res = route(model, x, MaxProbability(list(fit.thresholds), temperature=temps))
        wrong = res.prediction != final
        if fit.risk == "gap":
            wrong &= (final == y) & (res.prediction != y)
        assert fit.test_risk == pytest.approx(float(wrong.double().mean()), abs=1e-12)
        assert fit.test_accuracy == pytest.approx(res.accuracy(y), abs=1e-12)
        assert fit.test_flops_fraction == pytest.approx(
            res.mean_flops / model.costs.backbone_flops, rel=1e-9
        )
        assert all(t <= 1.01 for t in fit.thresholds)  # JSON-safe "never leave"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epsilon": 0.0}, "--epsilon must be in (0, 1), got 0.0"),
        ({"delta": 1.5}, "--delta must be in (0, 1), got 1.5"),
        ({"method": "bonferroni"}, "--method must be crc or ltt"),
        ({"rule": "global"}, "--rule must be shared or per_exit"),
        ({"splits": 0}, "--splits must be >= 1"),
        ({"shift_samples": -1}, "--shift-samples must be >= 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change, message):
    with pytest.raises(InputError) as e:
        dataclasses.replace(SETTINGS, **change).check()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_users_rule_comes_back_as_a_live_policy(study, tmp_path):
    from exitwise.experiments.risk import fitted_policy

    model, data, temps, result = study
    (tmp_path / "risk").mkdir()
    result.save(tmp_path / "risk" / "risk.json")
    policy = fitted_policy(tmp_path)
    (mine,) = [
        f
        for f in result.fitted
        if (f.method, f.rule, f.risk) == (SETTINGS.method, SETTINGS.rule, "disagreement")
    ]
    assert list(policy.threshold) == list(mine.thresholds) and policy.temperature == tuple(temps)
    x = data.test.images.float() / 255
    res = route(model, x, policy)
    assert res.accuracy(data.test.labels) == pytest.approx(mine.test_accuracy, abs=1e-12)

"""The robustness study: typed result, resume only on an identical configuration, checked plan."""

import pytest
import torch

from exitwise.errors import InputError
from exitwise.experiments.robustness import (
    Disturbance,
    plan_robustness,
    robustness_study,
    slowdown_summary,
)
from exitwise.policies import MaxProbability
from exitwise.results import RobustnessResult
from exitwise.training import TrainConfig, train
from tests.training.test_trainer import tiny_data, tiny_model

DISTURBANCES = [
    Disturbance("gaussian_noise", (0.0, 0.1)),
    Disturbance("slowdown", (0.0, 4 / 255), target="all"),
]


@pytest.fixture(scope="module")
def setup():
    data = tiny_data()
    model = tiny_model().eval()
    x = data.test.images.float() / 255
    return model, x, data.test.labels


def _run(setup, path, labels_seen=None, **kw):
    model, x, y = setup
    seen = labels_seen if labels_seen is not None else []
    study = robustness_study(
        model,
        x,
        y,
        MaxProbability(0.6),
        DISTURBANCES,
        state_path=path,
        progress=seen.append,
        **{"cap_exit": 0, "seed": 0, "batch_size": 16, **kw},
    )
    return study, seen


def test_study_is_typed_saved_and_resumed_only_when_everything_matches(setup, tmp_path):
    path = tmp_path / "study.json"
    study, seen = _run(setup, path)
    assert isinstance(study, RobustnessResult) and not any("resumed" in s for s in seen)
    assert set(study.results) == {
        "gaussian_noise@0",
        "gaussian_noise@0.1",
        "slowdown[all]@0",
        "slowdown[all]@0.0156863",
    }
    row = study.results["gaussian_noise@0"]
    assert row.kind == "corruption" and len(row.exit_accuracy) == 2 and row.capped is not None
    assert row.backbone_accuracy == row.exit_accuracy[-1]
    assert RobustnessResult.load(path).results == study.results

    again, seen = _run(setup, path)
    assert seen and all(s.endswith("(resumed)") for s in seen)
    assert again.results == study.results

    for change in ({"seed": 1}, {"cap_exit": None}, {"batch_size": 8}):
        _, seen = _run(setup, path, **change)
        assert not any("resumed" in s for s in seen), change
        _run(setup, path)  # back to the first configuration (recomputed, not resumed)


def test_other_weights_or_a_damaged_file_start_afresh(setup, tmp_path):
    path = tmp_path / "study.json"
    _run(setup, path)
    model, x, y = setup
    other = tiny_model().eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    seen: list[str] = []
    robustness_study(
        other,
        x,
        y,
        MaxProbability(0.6),
        DISTURBANCES,
        cap_exit=0,
        batch_size=16,
        state_path=path,
        progress=seen.append,
    )
    assert not any("resumed" in s for s in seen)
    path.write_text("{ not json")
    _, seen = _run(setup, path)
    assert not any("resumed" in s for s in seen)
    assert RobustnessResult.load(path).config.seed == 0


def test_slowdown_summary_measures_the_erased_saving(setup, tmp_path):
    study, _ = _run(setup, tmp_path / "s.json")
    rows = slowdown_summary(study)
    assert [r.eps for r in rows] == [0.0, pytest.approx(4 / 255)]
    clean, attacked = (
        study.results[k].routed for k in ("slowdown[all]@0", "slowdown[all]@0.0156863")
    )
    saving0 = 1 - clean.flops_fraction
    assert rows[1].routed.saving == pytest.approx(1 - attacked.flops_fraction)
    expected = (saving0 - (1 - attacked.flops_fraction)) / saving0 if saving0 > 0 else 0.0
    assert rows[1].routed.saving_erased == pytest.approx(expected)
    assert rows[0].routed.saving_erased == 0.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_model(), tiny_data(), TrainConfig(epochs=1, batch_size=32, augment="none"), out)
    return out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples": -5}, "--samples must be a positive number of test images, got -5"),
        ({"samples": 0}, "--samples must be a positive number of test images, got 0"),
        ({"cap_exit": 1}, "--cap-exit must be a side exit in 0..0"),
        ({"threshold": 2.0}, "--threshold is a max-probability in [0, 1], got 2.0"),
    ],
)
def test_plan_refuses_bad_options_before_any_data_loads(run_dir, kwargs, message):
    with pytest.raises(InputError) as e:
        plan_robustness(run_dir, **{"cap_exit": 0, **kwargs})
    assert message in str(e.value)
    assert not (run_dir / "robustness").exists()


def test_plan_takes_the_validation_threshold_when_there_is_none_given(run_dir):
    plan = plan_robustness(run_dir, samples=4, cap_exit=0, quick=True)
    assert plan.policy.threshold == 0.9 and "no evaluation.json" in plan.threshold_source
    assert plan.total == sum(len(d.levels) for d in plan.disturbances) > 0

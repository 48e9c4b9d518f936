"""eval_mode, and every caller that evaluates: they hand the model back exactly as they found it.

The model of these tests is in a mixed mode, as in two-stage training: training, with one batch
norm kept in eval (frozen statistics).
"""

import pytest
from torch import nn

from exitwise.nets import eval_mode
from exitwise.policies import MaxProbability
from exitwise.robustness import FGSM, PGD, attack_success_rate
from exitwise.routing import collect_outputs, route
from exitwise.training import evaluate_exits
from tests.training.test_trainer import tiny_data, tiny_model


def mixed_mode_model():
    model = tiny_model().train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    frozen.eval()
    return model


def modes(model):
    return {name: m.training for name, m in model.named_modules()}


class Boom(Exception):
    pass


def explode_in_last_stage(model):
    def hook(*_):
        raise Boom

    return model.stages[-1].register_forward_hook(hook)


def test_eval_mode_sets_eval_and_restores_each_flag():
    model = mixed_mode_model()
    before = modes(model)
    assert sorted(set(before.values())) == [False, True]
    with eval_mode(model) as m:
        assert m is model
        assert not any(m.training for m in model.modules())
    assert modes(model) == before
    with pytest.raises(Boom), eval_mode(model):
        raise Boom
    assert modes(model) == before


def test_eval_mode_keeps_a_model_in_eval_in_eval():
    model = tiny_model().eval()
    with eval_mode(model):
        model.train()  # the body may change modes: they are put back
    assert not any(m.training for m in model.modules())


def _route(model, x, y):
    route(model, x, MaxProbability(1.01))  # every sample reaches the last stage


def _collect(model, x, y):
    collect_outputs(model, [x[:4], x[4:]])


def _evaluate(model, x, y):
    evaluate_exits(model, tiny_data().test, batch_size=8)


def _fgsm(model, x, y):
    FGSM(model, eps=0.03)(x, y)


def _pgd(model, x, y):
    PGD(model, eps=0.03, steps=2, seed=0)(x, y)


def _success_rate(model, x, y):
    attack_success_rate(model, x, y)


def _routed_success_rate(model, x, y):
    attack_success_rate(model, x, y, policy=MaxProbability(1.01))


def _study(model, x, y):
    from exitwise.experiments.robustness import Disturbance, robustness_study

    robustness_study(
        model,
        x,
        y,
        MaxProbability(0.9),
        [Disturbance("gaussian_noise", (0.0, 0.1)), Disturbance("fgsm", (0.03,))],
        cap_exit=0,
        batch_size=8,
    )


CALLERS = [_route, _collect, _evaluate, _fgsm, _pgd, _success_rate, _routed_success_rate, _study]


@pytest.mark.parametrize("call", CALLERS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_callers_hand_back_every_submodule_mode(call, fail):
    model = mixed_mode_model()
    data = tiny_data()
    x, y = data.test.images[:12].float() / 255, data.test.labels[:12]
    before = modes(model)
    if fail:
        handle = explode_in_last_stage(model)
        with pytest.raises(Boom):
            call(model, x, y)
        handle.remove()
    else:
        call(model, x, y)
    assert modes(model) == before

"""Library code takes a seed and leaves the caller's global RNG state alone (DESIGN)."""

import random

import numpy as np
import pytest
import torch

from exitwise.experiments.robustness import Disturbance, perturb
from exitwise.nets import build_multi_exit
from exitwise.robustness import PGD, Slowdown
from exitwise.training import TrainConfig, load_model, train
from tests.training.test_trainer import CFG, tiny_data, tiny_model


def rng_states():
    return (
        torch.get_rng_state(),
        np.random.get_state()[1].copy(),  # noqa: NPY002 - the global state is the point
        random.getstate(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    )


def assert_untouched(before):
    after = rng_states()
    assert torch.equal(before[0], after[0]), "torch CPU RNG state changed"
    assert np.array_equal(before[1], after[1]), "numpy RNG state changed"
    assert before[2] == after[2], "python RNG state changed"
    assert all(torch.equal(a, b) for a, b in zip(before[3], after[3], strict=False))


def test_seeded_build_leaves_the_rng_alone_and_is_reproducible():
    torch.manual_seed(123)
    before = rng_states()
    a = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=["layer1.0"], seed=1)
    assert_untouched(before)
    b = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=["layer1.0"], seed=1)
    c = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=["layer1.0"], seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unseeded_builds_draw_from_the_global_rng_as_torch_modules_do():
    torch.manual_seed(0)
    a = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=[])
    torch.manual_seed(0)
    b = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=[])
    c = build_multi_exit("resnet20", 5, input_shape=(3, 8, 8), exits_after=[])
    w = next(k for k in a.state_dict() if k.endswith("weight"))
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(b.state_dict()[w], c.state_dict()[w])


@pytest.mark.parametrize("seed", [0, None])
def test_load_model_leaves_the_rng_alone(tmp_path, seed):
    from exitwise.training import save_model

    model = build_multi_exit(
        "resnet20", 5, input_shape=(3, 8, 8), exits_after=["layer1.0"], seed=seed
    )
    save_model(tmp_path, model)
    before = rng_states()
    loaded = load_model(tmp_path).model
    assert_untouched(before)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_training_leaves_the_rng_alone_and_repeats_exactly(tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 1})
    model = tiny_model()
    torch.manual_seed(7)
    before = rng_states()
    train(model, tiny_data(), cfg, tmp_path / "a")
    assert_untouched(before)
    again = tiny_model()
    train(again, tiny_data(), cfg, tmp_path / "b")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_dropout_is_seeded_per_epoch_not_by_the_caller():
    """A model with dropout trains to the same weights whatever the caller's RNG state."""
    from torch import nn

    cfg = TrainConfig(**{**CFG, "epochs": 1})
    runs = []
    for caller_seed in (1, 2):
        model = tiny_model()  # seeded: the same initial weights
        model.exits[0] = nn.Sequential(nn.Dropout(0.5), *model.exits[0])
        torch.manual_seed(caller_seed)
        train(model, tiny_data(), cfg)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("attack", ["pgd", "pgd_l2", "slowdown"])
def test_random_starts_come_from_the_seed_not_the_global_rng(attack):
    model = tiny_model().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 0])

    def make(seed):
        if attack == "slowdown":
            return Slowdown(model, eps=0.05, steps=1, alpha=0.0, seed=seed)
        norm = "l2" if attack == "pgd_l2" else "linf"
        return PGD(model, eps=0.05, norm=norm, steps=1, alpha=0.0, seed=seed)

    torch.manual_seed(3)
    before = rng_states()
    a = make(5)(x, y)
    assert_untouched(before)
    torch.manual_seed(99)
    assert torch.equal(a, make(5)(x, y))  # the caller's state does not matter
    assert not torch.equal(a, make(6)(x, y))
    assert not torch.equal(a, x)  # alpha=0: only the random start moved it


def test_a_generator_drives_the_random_start():
    model = tiny_model().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    a = PGD(model, eps=0.05, steps=1, alpha=0.0, generator=torch.Generator().manual_seed(1))(x, y)
    b = PGD(model, eps=0.05, steps=1, alpha=0.0, seed=1)(x, y)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="seed or a generator, not both"):
        PGD(model, seed=1, generator=torch.Generator())


@pytest.mark.parametrize("name", ["pgd", "slowdown", "gaussian_noise"])
def test_the_study_perturbs_from_its_seed(name):
    model = tiny_model().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    d = Disturbance(name, (0.05,), target="all" if name == "slowdown" else "final")
    torch.manual_seed(0)
    before = rng_states()
    a = perturb(model, d, 0.05, x, y, seed=11)
    assert_untouched(before)
    torch.manual_seed(1)
    assert torch.equal(a, perturb(model, d, 0.05, x, y, seed=11))

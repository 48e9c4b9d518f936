"""Attacks: budgets, [0, 1], model mode and gradients left alone, and that they work on a small
trained multi-exit model (success grows with eps, slowdown raises FLOPs, DeepFool is minimal and
its batching changes nothing)."""

import pytest
import torch
from torch import nn

from exitwise.nets import build_multi_exit
from exitwise.nets.multi_exit import ExitOutput
from exitwise.policies import MaxProbability
from exitwise.robustness import (
    BIM,
    FGSM,
    PGD,
    Attack,
    DeepFool,
    Slowdown,
    attack_success_rate,
    routed_log_probs,
)
from exitwise.routing import route
from exitwise.training import TrainConfig, train
from tests.training.test_trainer import tiny_data, tiny_model

TARGETS = [0, 1, "final", "all", "routed"]
TOL = 1e-6


def three_exit_model():
    """Untrained, 3 exits, 8x8 inputs: enough for the contract checks."""
    return build_multi_exit(
        "resnet20",
        4,
        input_shape=(3, 8, 8),
        exits_after=["layer1.0", "layer2.0"],
        exit_head="pool",
        mean=[0.5] * 3,
        std=[0.25] * 3,
        seed=0,
    ).eval()


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tiny_model (2 exits) trained 3 epochs on tiny_data; the 24 test images and labels."""
    data, model = tiny_data(), tiny_model()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, augment="none", warmup_epochs=0.0)
    train(model, data, cfg, tmp_path_factory.mktemp("robust"))
    model.eval()
    x, y = data.test.images.float() / 255, data.test.labels
    with torch.no_grad():
        assert float((model(x)[-1].argmax(1) == y).double().mean()) > 0.9
    return model, x, y


ATTACKS = {
    "fgsm": lambda m, t: (FGSM(m, 0.05, target=t), "linf", 0.05),
    "bim": lambda m, t: (BIM(m, 0.05, steps=3, target=t), "linf", 0.05),
    "pgd_linf": lambda m, t: (PGD(m, 0.05, steps=3, target=t, seed=0), "linf", 0.05),
    "pgd_l2": lambda m, t: (PGD(m, 0.5, norm="l2", steps=3, target=t, seed=0), "l2", 0.5),
    "pgd_l2_big_step": lambda m, t: (
        PGD(m, 0.3, norm="l2", steps=2, alpha=2.0, target=t, seed=1),
        "l2",
        0.3,
    ),
}


def dist(adv, x, norm):
    d = (adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_output_inside_the_ball_and_the_box(name, target):
    model = three_exit_model()
    x, y = batch()
    x[0, 0, :2] = 0.0  # pixels on the box edges
    x[1, 1, :2] = 1.0
    before = x.clone()
    atk, norm, eps = ATTACKS[name](model, target)
    adv = atk(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.equal(x, before)  # input not mutated
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    d = dist(adv, x, norm)
    assert bool((d <= eps + TOL).all()), d
    assert float(d.max()) > 0.5 * eps  # it did move


def test_fgsm_on_every_device_is_the_cpu_attack(device):
    """On the images' device: inside the ball and the box, the step the CPU takes (the sign of
    the gradient may flip only where the gradient is ~0), and a seeded random start that is the
    same on every device."""
    model = three_exit_model()
    x, y = batch()
    cpu = FGSM(model, 0.05, target="all")(x, y)
    model.to(device)
    adv = FGSM(model, 0.05, target="all")(x.to(device), y.to(device))
    assert adv.device.type == device.type and adv.dtype == x.dtype
    adv = adv.cpu()
    assert float((adv - x).abs().max()) <= 0.05 + TOL
    assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    assert float((adv != cpu).double().mean()) < 0.01
    start = PGD(model, 0.05, steps=1, alpha=0.0, seed=1)(x.to(device), y.to(device)).cpu()
    model.cpu()
    assert torch.equal(start, PGD(model, 0.05, steps=1, alpha=0.0, seed=1)(x, y))  # one start


def test_slowdown_and_deepfool_stay_in_the_box():
    model = three_exit_model()
    x, _ = batch()
    adv = Slowdown(model, eps=0.04, steps=3, seed=0)(x)
    assert float((adv - x).abs().max()) <= 0.04 + TOL
    assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    for target in TARGETS:
        adv = DeepFool(model, target=target, max_iter=5)(x)
        assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0


def test_pgd_is_reproducible_under_a_seed_and_labels_default_to_predictions():
    model = three_exit_model()
    x, _ = batch()
    a = PGD(model, 0.05, steps=2, seed=3)(x)
    assert torch.equal(a, PGD(model, 0.05, steps=2, seed=3)(x))
    assert not torch.equal(a, PGD(model, 0.05, steps=2, seed=4)(x))
    with torch.no_grad():
        pred = model(x)[-1].argmax(1)
    assert torch.equal(a, PGD(model, 0.05, steps=2, seed=3)(x, pred))


def test_eps_zero_returns_the_images():
    model = three_exit_model()
    x, y = batch()
    for atk in (FGSM(model, 0.0), PGD(model, 0.0), BIM(model, 0.0)):
        assert torch.equal(atk(x, y), x)


def modes(model):
    return [m.training for m in model.modules()]


class Boom(RuntimeError):
    pass


class Exploding(PGD):
    def objective(self, x, labels):
        assert not self.model.training  # the attack runs the model in eval mode
        raise Boom


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_model_mode_is_restored_even_after_an_exception(mode):
    model = three_exit_model()
    model.train(mode != "eval")
    if mode == "mixed":
        model.exits[0].eval()
        model.stages[1][-1].eval()
    expected = modes(model)
    x, y = batch()
    seen = []
    for atk in (
        FGSM(model, 0.03),
        PGD(model, 0.03, steps=1, target="routed"),
        DeepFool(model, max_iter=2),
        Slowdown(model, 0.03, steps=1),
    ):
        original = atk.exit_outputs

        def spy(inp, original=original):
            seen.append(modes(model))
            return original(inp)

        atk.exit_outputs = spy
        atk(x, y)
        assert modes(model) == expected
    assert seen and all(not any(s) for s in seen)
    with pytest.raises(Boom):
        Exploding(model, 0.03, steps=1)(x, y)
    assert modes(model) == expected


def test_no_parameter_gradients_are_left_behind():
    model = three_exit_model()
    x, y = batch()
    for atk in (
        FGSM(model, 0.03, target="all"),
        BIM(model, 0.03, steps=2),
        PGD(model, 0.3, norm="l2", steps=2, target="routed"),
        DeepFool(model, max_iter=3),
        Slowdown(model, 0.03, steps=2),
    ):
        atk(x, y)
    assert all(p.grad is None for p in model.parameters())
    # gradients a caller already had are untouched
    p = next(model.parameters())
    p.grad = torch.ones_like(p)
    PGD(model, 0.03, steps=1)(x, y)
    assert torch.equal(p.grad, torch.ones_like(p))


def test_invalid_arguments_are_refused():
    model = three_exit_model()
    x, y = batch()
    with pytest.raises(ValueError, match="target"):
        FGSM(model, 0.1, target="everything")
    with pytest.raises(ValueError, match="out of range"):
        FGSM(model, 0.1, target=3)
    with pytest.raises(ValueError, match="eps"):
        PGD(model, -0.1)
    with pytest.raises(ValueError, match="norm"):
        PGD(model, 0.1, norm="l1")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FGSM(model, 0.1)(x * 2 - 1, y)
    with pytest.raises(ValueError, match="labels"):
        FGSM(model, 0.1)(x, y[:2])
    with pytest.raises(ValueError, match="threshold"):
        FGSM(model, 0.1, target="routed", threshold=[0.9])(x, y)


def test_loss_of_each_target():
    model = three_exit_model()
    x, y = batch()
    with torch.no_grad():
        outs = model.forward_outputs(x)
        ce = [nn.functional.cross_entropy(o.logits, y, reduction="none") for o in outs]
        for target, expected in [(0, ce[0]), (1, ce[1]), ("final", ce[2]), ("all", sum(ce))]:
            got = FGSM(model, 0.1, target=target).objective(x, y)
            assert torch.allclose(got, expected, atol=1e-5), target


def test_routed_surrogate_is_a_distribution_that_tends_to_hard_routing():
    g = torch.Generator().manual_seed(0)
    outs = [ExitOutput(torch.randn(200, 5, generator=g) * 3) for _ in range(3)]
    logp = routed_log_probs(outs, threshold=[0.8, 0.6], temperature=0.05)
    assert torch.allclose(logp.exp().sum(1), torch.ones(200), atol=1e-5)
    hard = routed_log_probs(outs, threshold=[0.8, 0.6], temperature=1e-5).exp()
    p = [torch.softmax(o.logits, 1) for o in outs]
    leave0 = p[0].amax(1) >= 0.8
    leave1 = ~leave0 & (p[1].amax(1) >= 0.6)
    expected = torch.where(leave0[:, None], p[0], torch.where(leave1[:, None], p[1], p[2]))
    margin = torch.minimum((p[0].amax(1) - 0.8).abs(), (p[1].amax(1) - 0.6).abs())
    clear = margin > 1e-3
    assert torch.allclose(hard[clear], expected[clear], atol=1e-4)
    one = routed_log_probs(outs[:1])
    assert torch.allclose(one, torch.log_softmax(outs[0].logits, 1))


def test_success_grows_with_eps_on_a_trained_model(trained):
    model, x, y = trained
    rates = [
        attack_success_rate(model, PGD(model, eps, steps=10, seed=0)(x, y), y)
        for eps in (0.01, 0.1, 0.3)
    ]
    assert rates == sorted(rates), rates
    assert rates[-1] - rates[0] >= 0.3, rates
    assert rates[-1] >= 0.8, rates
    # FGSM at the same budget does no better than PGD
    assert attack_success_rate(model, FGSM(model, 0.3)(x, y), y) <= rates[-1]


def test_routed_attack_changes_the_routed_prediction(trained):
    model, x, y = trained
    policy = MaxProbability(0.9)
    clean = attack_success_rate(model, x, y, policy=policy)
    adv = PGD(model, 0.3, steps=10, target="routed", threshold=0.9, seed=0)(x, y)
    routed = attack_success_rate(model, adv, y, policy=policy)
    noise = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()
    random = attack_success_rate(model, noise.clamp(0, 1), y, policy=policy)
    assert routed >= clean + 0.3, (clean, routed)
    assert routed > random, (random, routed)


def test_slowdown_raises_the_flops_of_routed_inference(trained):
    model, x, y = trained
    policy = MaxProbability(0.8)
    clean = route(model, x, policy)
    assert clean.exit_shares[0] >= 0.75  # many samples leave early on clean data
    adv = Slowdown(model, eps=0.1, steps=20, seed=0)(x, y)
    slowed = route(model, adv, policy)
    assert slowed.mean_flops >= 1.5 * clean.mean_flops, (clean.mean_flops, slowed.mean_flops)
    assert slowed.exit_shares[0] <= clean.exit_shares[0] - 0.2
    assert float((adv - x).abs().max()) <= 0.1 + TOL


def test_slowdown_lowers_a_learned_confidence():
    model = build_multi_exit(
        "resnet20",
        3,
        input_shape=(3, 8, 8),
        exits_after=["layer1.0"],
        exit_head="eenets",
        exit_head_options={"variant": "pool"},
        mean=[0.5] * 3,
        std=[0.25] * 3,
        seed=0,
    ).eval()
    x, _ = batch()
    atk = Slowdown(model, eps=0.2, steps=10, seed=0, confidence_weight=10.0)
    adv = atk(x)
    with torch.no_grad():
        before = model.forward_outputs(x)[0].confidence.mean()
        after = model.forward_outputs(adv)[0].confidence.mean()
        assert float(atk.objective(adv, None).mean()) > float(atk.objective(x, None).mean())
    assert float(after) < float(before)


def deepfool_l2(model, x):
    adv, iters = DeepFool(model)(x, return_iterations=True)
    return adv, iters, (adv - x).flatten(1).norm(dim=1)


def random_minimal_l2(model, x, pred, seed=0):
    """Per sample, the L2 size of the smallest multiple of a random direction that fools it."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(x.shape, generator=g)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    best = torch.full((x.shape[0],), float("inf"))
    with torch.no_grad():
        for r in torch.linspace(0.1, 8.0, 40):
            a = (x + r * d).clamp(0, 1)
            fooled = model(a)[-1].argmax(1) != pred
            best = torch.where(fooled & best.isinf(), (a - x).flatten(1).norm(dim=1), best)
    return best


def test_deepfool_fools_most_with_small_perturbations(trained):
    model, x, y = trained
    with torch.no_grad():
        pred = model(x)[-1].argmax(1)
    adv, iters, l2 = deepfool_l2(model, x)
    assert attack_success_rate(model, adv, pred) >= 0.9
    assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    assert bool((iters >= 1).all()) and bool((iters <= 50).all())
    assert len(set(iters.tolist())) > 1  # samples stop at different iterations (frozen)
    rand = random_minimal_l2(model, x, pred)
    assert float(l2.median()) < 0.5 * float(rand.median()), (l2.median(), rand.median())


def test_deepfool_batched_equals_per_sample(trained):
    model, x, _ = trained
    adv, iters, l2 = deepfool_l2(model, x)
    single = [deepfool_l2(model, x[i : i + 1]) for i in range(x.shape[0])]
    adv1 = torch.cat([s[0] for s in single])
    iters1 = torch.cat([s[1] for s in single])
    assert torch.equal(iters, iters1)
    assert torch.allclose(adv, adv1, atol=1e-5)
    assert torch.allclose(l2, torch.cat([s[2] for s in single]), rtol=1e-4, atol=1e-6)


def test_deepfool_uses_one_batched_gradient_call_per_iteration(trained, monkeypatch):
    model, x, _ = trained
    calls = []
    grad = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    _, iters = DeepFool(model)(x, return_iterations=True)
    assert all(calls) and len(calls) == int(iters.max())


class FinalExit(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[-1]


def test_deepfool_agrees_with_foolbox(trained):
    fb = pytest.importorskip("foolbox")
    model, x, _ = trained
    with torch.no_grad():
        pred = model(x)[-1].argmax(1)
    _, _, ours = deepfool_l2(model, x)
    fmodel = fb.PyTorchModel(FinalExit(model).eval(), bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    _, clipped, success = attack(fmodel, x, pred, epsilons=None)
    theirs = (clipped - x).flatten(1).norm(dim=1)
    both = success & (ours > 0)
    ratio = float(ours[both].mean() / theirs[both].mean())
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_deepfool_agrees_with_torchattacks(trained):
    ta = pytest.importorskip("torchattacks")
    model, x, _ = trained
    x = x[:12]
    with torch.no_grad():
        pred = model(x)[-1].argmax(1)
    adv, _, ours = deepfool_l2(model, x)
    theirs_adv = ta.DeepFool(FinalExit(model).eval(), steps=50, overshoot=0.02)(x, pred)
    theirs = (theirs_adv - x).flatten(1).norm(dim=1)
    with torch.no_grad():
        fooled = (model(theirs_adv)[-1].argmax(1) != pred) & (model(adv)[-1].argmax(1) != pred)
    assert int(fooled.sum()) >= 6
    ratio = float(ours[fooled].mean() / theirs[fooled].mean())
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_attack_success_rate_counts_misclassified_samples(trained):
    model, x, y = trained
    with torch.no_grad():
        outs = model(x)
    for i in (0, -1):
        expected = float((outs[i].argmax(1) != y).double().mean())
        assert attack_success_rate(model, x, y, exit_idx=i) == pytest.approx(expected)
    wrong = (y + 1) % 3
    assert attack_success_rate(model, x, wrong) >= 0.9
    assert attack_success_rate(model, x[:0], y[:0]) == 0.0


def test_attack_base_class_is_abstract_and_works_on_plain_classifiers():
    model = three_exit_model()
    x, y = batch()
    with pytest.raises(NotImplementedError):
        Attack(model, 0.1)(x, y)
    plain = FinalExit(model).eval()
    adv = PGD(plain, 0.05, steps=2, seed=0)(x, y)
    assert float((adv - x).abs().max()) <= 0.05 + TOL

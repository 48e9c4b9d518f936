"""EENets: exit block, the v0/v1/v2 losses against a manual loop, gradients, learned policy."""

import math

import pytest
import torch

from exitwise.nets import EENetsExit, ExitOutput, build_multi_exit
from exitwise.policies import LearnedConfidence
from exitwise.routing import collect_outputs, route, simulate
from exitwise.training import TrainConfig, train
from exitwise.training.eenets import eenets_loss
from tests.training.test_trainer import tiny_data


def random_outputs(batch=4, classes=3, exits=3, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(exits):
        logits = torch.randn(batch, classes, generator=g, dtype=torch.float64)
        conf = torch.rand(batch, generator=g, dtype=torch.float64) if i < exits - 1 else None
        logits.requires_grad_(requires_grad)
        if conf is not None:
            conf.requires_grad_(requires_grad)
        outs.append(ExitOutput(logits, conf))
    return outs


def manual(outs, target, costs, version, lam):
    """Sample by sample, in plain Python floats, as the paper writes it."""
    n_exits, batch = len(outs), len(target)
    probs = [torch.softmax(o.logits.detach(), 1).tolist() for o in outs]
    confs = [o.confidence.detach().tolist() for o in outs[:-1]]
    if version == "v0":
        return sum(
            -sum(math.log(probs[i][b][target[b]]) for b in range(batch)) / batch
            for i in range(n_exits)
        )
    total = 0.0
    terms = []  # (nll_i, cost_i) for i = n-1 .. 0
    cum_p = [row[:] for row in probs[-1]]
    cum_k = [costs[-1]] * batch
    terms.append((cum_p, cum_k))
    for i in range(n_exits - 2, -1, -1):
        cum_p = [
            [
                confs[i][b] * probs[i][b][c] + (1 - confs[i][b]) * cum_p[b][c]
                for c in range(len(cum_p[b]))
            ]
            for b in range(batch)
        ]
        cum_k = [confs[i][b] * costs[i] + (1 - confs[i][b]) * cum_k[b] for b in range(batch)]
        terms.append((cum_p, cum_k))

    def term(p, k):
        nll = -sum(math.log(p[b][target[b]]) for b in range(batch)) / batch
        return nll + lam * sum(k) / batch

    if version == "v1":
        return term(*terms[-1])
    for p, k in terms:
        total += term(p, k)
    return total


@pytest.mark.parametrize("version", ["v0", "v1", "v2"])
@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_losses_match_a_manual_loop(version, lam):
    outs = random_outputs()
    target = torch.tensor([0, 2, 1, 2])
    costs = [0.3, 0.6, 1.05]
    total, _, _ = eenets_loss(outs, target, costs, version, lam)
    assert float(total) == pytest.approx(
        manual(outs, target.tolist(), costs, version, lam), rel=1e-10
    )


def test_v1_extremes_pick_one_exit():
    outs = random_outputs(exits=2)
    target = torch.tensor([0, 1, 2, 0])
    sure = [ExitOutput(outs[0].logits, torch.ones(4, dtype=torch.float64)), outs[1]]
    total, pred, cost = eenets_loss(sure, target, [0.4, 1.0], "v1", 1.0)
    assert float(cost) == pytest.approx(0.4)
    assert float(pred) == pytest.approx(
        float(torch.nn.functional.cross_entropy(outs[0].logits, target))
    )
    unsure = [ExitOutput(outs[0].logits, torch.zeros(4, dtype=torch.float64)), outs[1]]
    _, pred, cost = eenets_loss(unsure, target, [0.4, 1.0], "v1", 1.0)
    assert float(cost) == pytest.approx(1.0)
    assert float(pred) == pytest.approx(
        float(torch.nn.functional.cross_entropy(outs[1].logits, target))
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_gradients_are_exact(version):
    outs = random_outputs(batch=3, classes=3, exits=3, requires_grad=True)
    target = torch.tensor([1, 0, 2])
    leaves = [t for o in outs for t in (o.logits, o.confidence) if t is not None]

    def f(*flat):
        it = iter(flat)
        rebuilt = [ExitOutput(next(it), next(it)) for _ in range(2)] + [ExitOutput(next(it))]
        return eenets_loss(rebuilt, target, [0.2, 0.5, 1.0], version, 0.5)[0]

    assert torch.autograd.gradcheck(f, leaves)
    total = f(*leaves)
    total.backward()
    # a more confident shallow exit lowers the expected cost term: its gradient carries it
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)


def test_loss_arguments_are_checked():
    outs = random_outputs(exits=2)
    with pytest.raises(ValueError, match="one of"):
        eenets_loss(outs, torch.zeros(4, dtype=torch.long), [0.5, 1.0], "v9")
    with pytest.raises(ValueError, match="one cost per exit"):
        eenets_loss(outs, torch.zeros(4, dtype=torch.long), [1.0])
    no_conf = [ExitOutput(outs[0].logits), outs[1]]
    with pytest.raises(ValueError, match="exit_head='eenets'"):
        eenets_loss(no_conf, torch.zeros(4, dtype=torch.long), [0.5, 1.0], "v1")


@pytest.mark.parametrize("variant", ["plain", "pool", "bnpool"])
def test_exit_block_variants(variant):
    head = EENetsExit(8, 5, feature_shape=(8, 4, 4), variant=variant)
    logits, conf = head(torch.rand(3, 8, 4, 4))
    assert logits.shape == (3, 5) and conf.shape == (3, 1)
    assert ((conf >= 0) & (conf <= 1)).all()
    with pytest.raises(ValueError, match="plain, pool or bnpool"):
        EENetsExit(8, 5, variant="deep")
    with pytest.raises(ValueError, match="feature_shape"):
        EENetsExit(8, 5, variant="plain")


def eenets_net():
    return build_multi_exit(
        "resnet20",
        3,
        input_shape=(3, 8, 8),
        distribution="pareto",
        num_side_exits=2,
        exit_head="eenets",
        exit_head_options={"variant": "pool"},
        mean=[0.5] * 3,
        std=[0.25] * 3,
        seed=0,
    )


def test_learned_confidence_routed_equals_simulated():
    net = eenets_net().double().eval()
    x = torch.rand(40, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outputs, _ = collect_outputs(net, [x])
    assert net.has_confidence and outputs[0].confidence.shape == (40,)
    med = float(outputs[0].confidence.median())
    for t in (0.0, med, 0.5, 1.01):
        policy = LearnedConfidence(t)
        r, s = route(net, x, policy), simulate(outputs, policy, net.costs)
        assert torch.equal(r.exit_idx, s.exit_idx) and torch.equal(r.prediction, s.prediction)
        assert torch.equal(r.flops, s.flops)
    assert route(net, x, LearnedConfidence(0.0)).exit_counts[0] == 40


def test_learned_confidence_needs_confidence_outputs():
    with pytest.raises(ValueError, match="no learned confidence"):
        LearnedConfidence().decide(0, [ExitOutput(torch.zeros(2, 3))])


def test_training_with_the_eenets_schedule(tmp_path):
    net = eenets_net()
    cfg = TrainConfig(
        epochs=3,
        batch_size=16,
        lr=0.05,
        augment="none",
        warmup_epochs=0.0,
        loss="eenets",
        eenets_loss="v1",
        eenets_lambda=1.0,
        eenets_v0_epochs=1,
    )
    result = train(net, tiny_data(), cfg, tmp_path)
    assert [r["phase"] for r in result.history] == ["eenets-v0", "eenets-v1", "eenets-v1"]
    assert result.history[-1]["val_accuracy"][-1] > 0.9
    plain = build_multi_exit("resnet20", 3, input_shape=(3, 8, 8), exits_after=["layer1.0"])
    with pytest.raises(ValueError, match="exit_head='eenets'"):
        train(plain, tiny_data(), cfg)


def test_efficiency_study_adds_the_learned_rule():
    from exitwise.experiments import efficiency_study

    ev = efficiency_study(eenets_net().eval(), tiny_data())
    assert set(ev.policies) == {
        "max_probability", "entropy", "learned_confidence",
        "max_probability_per_exit", "max_probability_per_exit_budget",
    }  # fmt: skip
    default = ev.policies["learned_confidence"].default
    assert default is not None and default.threshold == 0.5

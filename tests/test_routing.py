"""Routed inference equals the offline simulation; exited samples never run later stages."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from exitwise.policies import (
    Capped,
    Committee,
    Entropy,
    ExitPolicy,
    MaxProbability,
    MeanEnsemble,
    Patience,
)
from exitwise.routing import (
    ExitResults,
    OperatingPoint,
    collect_outputs,
    default_thresholds,
    oracle,
    pareto_front,
    route,
    route_until,
    simulate,
    sweep,
)
from tests.conftest import build_small_net


def first_exit_confidence(net, x):
    with torch.no_grad():
        return torch.softmax(net(x)[0], dim=1).amax(dim=1)


def policies_for(net, x):
    conf = first_exit_confidence(net, x)
    q = [float(conf.quantile(p)) for p in (0.3, 0.6)]
    return [
        MaxProbability(0.0),  # everything leaves at the first exit
        MaxProbability(1.01),  # nothing leaves early
        MaxProbability(q[0]),
        MaxProbability(q[1]),
        MaxProbability([q[1], q[0], 0.3]),
        Entropy(1.7),
        Entropy(0.9, normalized=True),
        *new_rules(net, x, q),
    ]


WEIGHTS = (0.55, 0.7, 0.8, 0.9)  # stand-ins for validation accuracies
TEMPS = (1.6, 1.3, 0.9, 1.2)  # one temperature per exit, the last included


def spread(rule, net, x):
    """Per-side-exit thresholds at quantiles of ``rule``'s own confidences at each exit (0.7,
    0.5, 0.3), so that samples leave at every side exit; interpolated quantiles keep them away
    from ties within float32 rounding."""
    outputs, _ = collect_outputs(net, [x])
    return [
        float(rule.decide(i, outputs[: i + 1]).confidence.quantile(p))
        for i, p in enumerate((0.7, 0.5, 0.3))
    ]


def new_rules(net, x, q):
    """The temperature-scaled, combining and patience rules, at thresholds around ``q`` and at
    thresholds spread over the side exits."""
    committee, mean = Committee(math.inf, WEIGHTS, TEMPS), MeanEnsemble(math.inf)
    return [
        MaxProbability([q[1], q[0], 0.3], temperature=TEMPS),
        Entropy(0.9, normalized=True, temperature=TEMPS),
        Committee(q[0], WEIGHTS),
        Committee(spread(committee, net, x), WEIGHTS[:3], temperature=TEMPS),
        Committee(1.01, WEIGHTS),  # nobody leaves early: every side exit combines
        MeanEnsemble(q[1]),
        MeanEnsemble(spread(mean, net, x)),
        Capped(Committee(q[1], WEIGHTS, temperature=TEMPS), max_exit=2),
        *(Patience(p) for p in (1, 2, 3, 4)),
    ]


def assert_routed_equals_simulated(net, batch, policies, atol=0.0):
    outputs, _ = collect_outputs(net, [batch[:20], batch[20:]])
    for policy in policies:
        with FlopCounterMode(display=False) as counter:
            routed = route(net, batch, policy)
        simulated = simulate(outputs, policy, net.costs)
        assert torch.equal(routed.prediction.cpu(), simulated.prediction), policy
        assert torch.equal(routed.exit_idx.cpu(), simulated.exit_idx), policy
        assert torch.equal(routed.flops.cpu(), simulated.flops), policy
        assert torch.allclose(routed.confidence.cpu(), simulated.confidence, atol=atol), policy
        assert routed.total_flops == counter.get_total_flops(), policy


def test_routed_equals_simulated(small_net, batch):
    assert_routed_equals_simulated(small_net, batch, policies_for(small_net, batch))


def small_net_f32(device):
    """``small_net`` in float32 (the dtype models train and run in), on ``device``."""
    return build_small_net().to(device).eval()


def test_routed_equals_simulated_in_float32(device, batch):
    """Float32, on every device: compaction changes batch sizes, and so the kernels that run;
    thresholds sit at quantiles of the confidences, away from ties within rounding."""
    net, x = small_net_f32(device), batch.float().to(device)
    with torch.no_grad():
        conf = torch.softmax(net(x)[0], dim=1).amax(dim=1).cpu()
    q = [float(conf.quantile(p)) for p in (0.3, 0.6)]
    policies = [
        MaxProbability(0.0),
        MaxProbability(1.01),
        MaxProbability(q[0]),
        MaxProbability([q[1], q[0], 0.3]),
        Entropy(0.9, normalized=True),
        *new_rules(net, x, q),
    ]
    assert_routed_equals_simulated(net, x, policies, atol=1e-6)


def test_extremes(small_net, batch):
    first = route(small_net, batch, MaxProbability(0.0))
    assert first.exit_counts == [48, 0, 0, 0]
    assert first.mean_flops == small_net.costs.path_flops[0]
    last = route(small_net, batch, MaxProbability(1.01))
    assert last.exit_counts == [0, 0, 0, 48]
    assert last.mean_flops == small_net.costs.path_flops[-1]
    with torch.no_grad():
        assert torch.equal(last.prediction, small_net(batch)[-1].argmax(dim=1))


def test_no_stage_runs_for_exited_samples(small_net, batch):
    policy = MaxProbability(float(first_exit_confidence(small_net, batch).quantile(0.5)))
    seen = []
    hooks = [
        stage.register_forward_hook(lambda m, i, o, k=k: seen.append((k, i[0].shape[0])))
        for k, stage in enumerate(small_net.stages)
    ]
    try:
        res = route(small_net, batch, policy)
    finally:
        for h in hooks:
            h.remove()
    remaining = len(batch)
    expected = []
    for k, count in enumerate(res.exit_counts):
        if remaining == 0:
            break
        expected.append((k, remaining))
        remaining -= count
    assert seen == expected
    assert res.exit_counts[0] >= 20  # a real share left early


def test_everyone_leaving_first_never_runs_deeper_stages(small_net, batch):
    calls = []
    hook = small_net.stages[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        route(small_net, batch, MaxProbability(0.0))
    finally:
        hook.remove()
    assert calls == []


def test_batch_of_one_matches_the_batch(small_net, batch):
    policy = MaxProbability(float(first_exit_confidence(small_net, batch).quantile(0.5)))
    full = route(small_net, batch, policy)
    for i in (0, 7, 31):
        one = route(small_net, batch[i : i + 1], policy)
        assert len(one) == 1
        assert one.prediction.item() == full.prediction[i].item()
        assert one.exit_idx.item() == full.exit_idx[i].item()
        assert one.flops.item() == full.flops[i].item()


def test_empty_batch(small_net):
    res = route(small_net, torch.zeros(0, 3, 16, 16, dtype=torch.float64), MaxProbability(0.5))
    assert len(res) == 0 and res.exit_counts == [0, 0, 0, 0] and res.mean_flops == 0.0


def test_route_restores_training_mode(small_net, batch):
    small_net.train()
    route(small_net, batch[:4], MaxProbability(0.5))
    assert small_net.training
    assert all(m.training for m in small_net.modules())


def test_route_rejects_bad_input(small_net):
    with pytest.raises(ValueError, match="expected 3 input channel"):
        route(small_net, torch.rand(2, 4, 16, 16, dtype=torch.float64), MaxProbability(0.5))


def test_route_refuses_a_batch_of_another_dtype_in_one_line(batch):
    net = small_net_f32("cpu")
    with pytest.raises(ValueError) as info:
        route(net, batch, MaxProbability(0.5))  # float64 batch, float32 model
    message = str(info.value)
    assert "\n" not in message
    assert "expected a torch.float32 batch" in message and "got torch.float64" in message
    assert "x.to(torch.float32)" in message
    with pytest.raises(ValueError, match="floating-point batch.*x.float\\(\\) / 255"):
        route(net, (batch * 255).to(torch.uint8), MaxProbability(0.5))


@pytest.mark.parametrize("policy", ["max_probability", MaxProbability, 0.9, None])
def test_route_needs_a_policy_object(small_net, batch, policy):
    with pytest.raises(TypeError, match="needs an ExitPolicy object") as info:
        route(small_net, batch[:2], policy)
    if isinstance(policy, str):
        assert "MaxProbability(0.9)" in str(info.value)
    outputs, _ = collect_outputs(small_net, [batch[:2]])
    with pytest.raises(TypeError, match="needs an ExitPolicy object"):
        simulate(outputs, policy, small_net.costs)


def test_sweep_is_monotone_for_max_probability(small_net, batch):
    outputs, _ = collect_outputs(small_net, [batch])
    labels = torch.arange(len(batch)) % 7
    points = sweep(outputs, labels, small_net.costs, MaxProbability, default_thresholds())
    flops = [p.mean_flops for p in points]
    assert flops == sorted(flops)
    assert points[0].exit_shares[0] == 1.0 and points[-1].exit_shares[-1] == 1.0
    assert points[-1].flops_fraction == pytest.approx(
        small_net.costs.path_flops[-1] / small_net.costs.backbone_flops
    )


def test_oracle_takes_the_first_correct_exit():
    from exitwise.cost import CostAccount
    from exitwise.nets import ExitOutput

    costs = CostAccount((10, 10, 10), (1, 1, 1), (3, 4, 4))
    # three samples, two classes: sample 0 right at exit 0, sample 1 only at exit 2, sample 2 never
    logits = [
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]),
        torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
    ]
    res = oracle([ExitOutput(t) for t in logits], torch.tensor([0, 1, 1]), costs)
    assert res.exit_idx.tolist() == [0, 2, 2]
    assert res.prediction.tolist() == [0, 1, 0]
    assert res.flops.tolist() == [11, 33, 33]


def test_pareto_front_keeps_only_undominated_points():
    def pt(acc, flops):
        return OperatingPoint(0.0, acc, flops, flops / 100, (1.0,))

    points = [pt(0.9, 50), pt(0.8, 60), pt(0.95, 70), pt(0.7, 20), pt(0.95, 90), pt(0.7, 30)]
    front = pareto_front(points)
    assert [(p.accuracy, p.mean_flops) for p in front] == [(0.7, 20), (0.9, 50), (0.95, 70)]


def test_results_accuracy_checks_shapes():
    res = ExitResults(
        torch.tensor([1, 0]), torch.tensor([0, 1]), torch.ones(2), torch.tensor([5, 9]), 2
    )
    assert res.accuracy(torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="labels must have shape"):
        res.accuracy(torch.tensor([1, 1, 1]))


def test_combining_rules_pay_for_their_combination(small_net, batch):
    """Committee and mean: ``2 * num_classes * k`` FLOPs per sample at side exit ``k - 1``
    (``k`` exits combined; nothing at exit 0, nor at the last exit, which decides alone)."""
    path, classes = small_net.costs.path_flops, small_net.num_classes
    for rule in (Committee(1.01, WEIGHTS), MeanEnsemble(1.01)):
        res = route(small_net, batch, rule)
        assert res.exit_counts == [0, 0, 0, 48]
        assert res.flops.tolist() == [path[-1] + 2 * classes * (2 + 3)] * 48
        first = route(small_net, batch, Committee(0.0, WEIGHTS))
        assert first.flops.tolist() == [path[0]] * 48
    capped = route(small_net, batch, Capped(MeanEnsemble(1.01), max_exit=1))
    assert capped.exit_counts == [0, 48, 0, 0]
    assert capped.flops.tolist() == [path[1] + 2 * classes * 2] * 48


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_patience_routed_equals_simulated_with_agreeing_exits(batch, dtype):
    """The untrained net's exits each predict one class, so no two agree; centring each exit's
    logits over the batch (through its bias) makes predictions vary, and some samples meet
    patience 2 at the middle exits."""
    net, x = build_small_net().to(dtype).eval(), batch.to(dtype)
    with torch.no_grad():
        for head, logits in zip(net.exits, net(x), strict=True):
            head[-1].bias -= logits.mean(dim=0)
    counts = route(net, x, Patience(2)).exit_counts
    assert counts[0] == 0 and counts[1] > 0 and counts[2] > 0
    assert route(net, x, Patience(4)).exit_counts == [0, 0, 0, 48]
    assert route(net, x, Patience(1)).exit_counts == [48, 0, 0, 0]
    rules = [Patience(p, temperature=TEMPS) for p in (1, 2, 3, 4)]
    assert_routed_equals_simulated(net, x, rules, atol=1e-6 if dtype == torch.float32 else 0.0)


def test_per_exit_values_are_checked_before_anything_runs(small_net, batch):
    calls = []
    hook = small_net.stages[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="temperature has 3 per-exit values"):
            route(small_net, batch, MaxProbability(0.5, temperature=[1.0, 1.0, 1.0]))
        with pytest.raises(ValueError, match="weights has 2 values"):
            route(small_net, batch, Committee(0.5, [0.5, 0.6]))
    finally:
        hook.remove()
    assert calls == []
    outputs, _ = collect_outputs(small_net, [batch[:4]])
    with pytest.raises(ValueError, match="alpha has 4 per-exit values"):
        simulate(outputs, Committee([0.5] * 4, WEIGHTS), small_net.costs)


def test_an_object_with_decide_only_is_told_to_subclass(small_net, batch):
    class Duck:
        def decide(self, exit_idx, outputs):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="subclass exitwise.policies.ExitPolicy"):
        route(small_net, batch[:2], Duck())
    assert not isinstance(Duck(), ExitPolicy)


def test_route_until_a_side_exit_leaves_the_rest_running(small_net, batch):
    """Up to side exit k: the samples that left are route's up to k; the rest keep their rows,
    the tensor after stage k and the outputs of exits 0..k, as the whole model computes them."""
    policy = MaxProbability((0.187, 0.206, 0.19))  # this untrained net: several exits taken
    whole = route(small_net, batch, policy)
    assert 0 < int((whole.exit_idx <= 1).sum()) < len(batch)  # both kinds below
    with torch.no_grad():
        outs = small_net.forward_outputs(batch)
        edge, _ = small_net.split(1)
        _, h_all = edge(batch)
    run = route_until(small_net, batch, policy, 1)
    left = torch.cat([r for r, *_ in run.parts]) if run.parts else torch.zeros(0)
    assert sorted(left.tolist()) == (whole.exit_idx <= 1).nonzero().flatten().tolist()
    assert run.rows is not None
    assert run.rows.tolist() == (whole.exit_idx > 1).nonzero().flatten().tolist()
    assert torch.equal(run.h, h_all[run.rows])
    assert len(run.history) == 2
    for i, out in enumerate(run.history):
        assert torch.equal(out.logits, outs[i].logits[run.rows])
    with pytest.raises(ValueError, match="stop must be an exit in 0..3, got 4"):
        route_until(small_net, batch, policy, 4)


def test_route_until_when_everyone_left(small_net, batch):
    run = route_until(small_net, batch, MaxProbability(0.0), 2)
    assert len(run.parts) == 1 and run.parts[0][0] is None and run.parts[0][1] == 0
    assert run.rows is not None and len(run.rows) == 0 and len(run.h) == 0

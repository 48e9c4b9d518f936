"""Per-exit thresholds: never worse than the best shared threshold, honest about targets, and
the thresholds found offline run live in ``route`` with the same decisions and costs."""

import dataclasses
import math

import pytest
import torch

from exitwise.calibration import (
    PerExitThresholds,
    max_probability_scores,
    per_exit_front,
    search_per_exit,
)
from exitwise.policies import MaxProbability, default_thresholds
from exitwise.routing import collect_outputs, route, simulate
from tests.conftest import build_small_net

SHARED = [*default_thresholds(), 1.01]


def synthetic(n, num_exits, seed, classes=10, shifts=None):
    """Scores, predictions and labels of exits that get better with depth, each exit with its
    own confidence scale (so one shared threshold cannot suit them all), and path FLOPs.
    ``shifts`` sets each side exit's over- (> 0) or under-confidence (< 0)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    easy = torch.rand(n, generator=g)
    preds, scores = [], []
    for i in range(num_exits):
        skill = 0.3 + 0.6 * (i + 1) / num_exits
        right = torch.rand(n, generator=g) < (skill + 0.6 * (easy - 0.5)).clamp(0, 1)
        wrong = (labels + torch.randint(1, classes, (n,), generator=g)) % classes
        preds.append(torch.where(right, labels, wrong))
        if i < num_exits - 1:
            scale = float(torch.empty(1).uniform_(0.5, 3.0, generator=g))
            shift = float(torch.empty(1).uniform_(-1.0, 1.5, generator=g))
            shift = shift if shifts is None else shifts[i]
            signal = 2.0 * right.double() + easy + 0.7 * torch.randn(n, generator=g)
            scores.append(torch.sigmoid(scale * (signal - 1.5) + shift).float())
    pf = [int(1000 * (i + 1) ** 1.5) for i in range(num_exits)]
    return torch.stack(scores), torch.stack(preds), labels, pf


def counted(scores, preds, labels, pf, thresholds):
    """Accuracy, mean FLOPs and exit shares of per-exit thresholds, counted plainly."""
    thr = torch.tensor(thresholds, dtype=scores.dtype).unsqueeze(1)
    leave = torch.cat([scores >= thr, torch.ones_like(scores[:1], dtype=torch.bool)])
    ex = leave.to(torch.int8).argmax(dim=0)
    acc = float((preds.gather(0, ex.unsqueeze(0))[0] == labels).double().mean())
    flops = float(torch.tensor(pf, dtype=torch.float64)[ex].mean())
    shares = tuple(c / len(labels) for c in torch.bincount(ex, minlength=len(pf)).tolist())
    return acc, flops, shares


def order(acc, flops, objective, goal):
    """The objective's order as a tuple (higher is better): met, its number, the other."""
    if objective == "accuracy":
        return (1, -flops, acc) if acc >= goal else (0, acc, -flops)
    return (1, acc, -flops) if flops <= goal else (0, -flops, acc)


def best_shared(scores, preds, labels, pf, objective, goal):
    points = []
    for t in SHARED:
        acc, flops, _ = counted(scores, preds, labels, pf, [t] * scores.shape[0])
        points.append(order(acc, flops, objective, goal))
    return max(points)


def check_reported(r: PerExitThresholds, scores, preds, labels, pf):
    """The reported numbers are those of the thresholds, and ``met`` says the truth."""
    acc, flops, shares = counted(scores, preds, labels, pf, r.thresholds)
    assert r.accuracy == acc and r.mean_flops == pytest.approx(flops, rel=1e-12)
    assert r.exit_shares == pytest.approx(shares)
    met = acc >= r.target if r.objective == "accuracy" else flops <= r.target
    assert r.met == met
    acc, flops, shares = counted(scores, preds, labels, pf, [r.shared.threshold] * len(scores))
    assert (r.shared.accuracy, r.shared.exit_shares) == (acc, pytest.approx(shares))


def test_per_exit_beats_shared_when_exits_differ():
    scores, preds, labels, pf = synthetic(6000, 4, seed=0, shifts=(2.0, -1.5, 0.5))
    final = float((preds[-1] == labels).double().mean())
    r = search_per_exit(scores, preds, labels, pf, target_accuracy=final - 0.005)
    check_reported(r, scores, preds, labels, pf)
    assert r.met and r.accuracy >= final - 0.005
    assert r.mean_flops < 0.8 * r.shared.mean_flops  # cheaper at the same target
    budget = r.shared.mean_flops
    b = search_per_exit(scores, preds, labels, pf, flops_budget=budget)
    check_reported(b, scores, preds, labels, pf)
    assert b.met and b.mean_flops <= budget
    assert b.accuracy > b.shared.accuracy + 0.02  # more accurate at the same budget
    assert len(set(r.thresholds)) == len(r.thresholds)  # really one threshold per exit


@pytest.mark.parametrize("seed", range(20))
def test_never_worse_than_the_best_shared_threshold(seed):
    g = torch.Generator().manual_seed(100 + seed)
    num_exits = int(torch.randint(2, 6, (1,), generator=g))
    n = int(torch.randint(200, 1500, (1,), generator=g))
    scores, preds, labels, pf = synthetic(n, num_exits, seed=seed)
    final = float((preds[-1] == labels).double().mean())
    target = final - float(torch.empty(1).uniform_(-0.05, 0.15, generator=g))
    budget = pf[0] + float(torch.rand(1, generator=g)) * (pf[-1] - pf[0])
    for objective, goal in (("accuracy", target), ("flops", budget)):
        kwargs = {"target_accuracy" if objective == "accuracy" else "flops_budget": goal}
        r = search_per_exit(scores, preds, labels, pf, num_candidates=40, **kwargs)
        assert (r.objective, r.target) == (objective, goal)
        check_reported(r, scores, preds, labels, pf)
        shared = best_shared(scores, preds, labels, pf, objective, goal)
        assert order(r.shared.accuracy, r.shared.mean_flops, objective, goal) == pytest.approx(
            shared
        )
        assert order(r.accuracy, r.mean_flops, objective, goal) >= shared


def test_close_to_exhaustive_search_on_two_side_exits():
    """Against every pair of candidate thresholds (a grid small enough to enumerate)."""
    scores, preds, labels, pf = synthetic(3000, 3, seed=7)
    grid = [i / 20 for i in range(21)] + [1.01]
    final = float((preds[-1] == labels).double().mean())
    for objective, goal in (("accuracy", final - 0.01), ("flops", 0.5 * (pf[0] + pf[-1]))):
        kwargs = {"target_accuracy" if objective == "accuracy" else "flops_budget": goal}
        r = search_per_exit(scores, preds, labels, pf, shared_grid=grid, num_candidates=1, **kwargs)
        best = max(
            order(*counted(scores, preds, labels, pf, [a, b])[:2], objective, goal)
            for a in grid
            for b in grid
        )
        got = order(r.accuracy, r.mean_flops, objective, goal)
        assert got[0] == best[0] == 1
        assert got[1] >= best[1] - (0.02 * pf[-1] if objective == "accuracy" else 0.003)


def test_respects_target_and_budget_along_the_front():
    scores, preds, labels, pf = synthetic(4000, 5, seed=3)
    targets = [0.5, 0.6, 0.7, 0.75]
    front = per_exit_front(scores, preds, labels, pf, target_accuracies=targets)
    assert [p.target for p in front] == targets
    for p in front:
        check_reported(p, scores, preds, labels, pf)
        assert p.met and p.accuracy >= p.target and p.objective == "accuracy"
    assert front[1] == search_per_exit(scores, preds, labels, pf, target_accuracy=targets[1])
    budgets = [pf[0] * 1.5, pf[1], pf[2], pf[3]]
    front = per_exit_front(scores, preds, labels, pf, flops_budgets=budgets)
    for p in front:
        check_reported(p, scores, preds, labels, pf)
        assert p.met and p.mean_flops <= p.target and p.objective == "flops"
    assert front[2] == search_per_exit(scores, preds, labels, pf, flops_budget=budgets[2])
    assert [p.accuracy for p in front] == sorted(p.accuracy for p in front)


def test_unreachable_objectives_return_the_closest_point_flagged():
    scores, preds, labels, pf = synthetic(2000, 4, seed=5)
    r = search_per_exit(scores, preds, labels, pf, target_accuracy=1.01)
    check_reported(r, scores, preds, labels, pf)
    assert not r.met
    assert r.accuracy >= max(
        counted(scores, preds, labels, pf, [t] * 3)[0] for t in SHARED
    )  # the most accurate point found, at least the best shared one
    b = search_per_exit(scores, preds, labels, pf, flops_budget=pf[0] - 1)
    check_reported(b, scores, preds, labels, pf)
    assert not b.met and b.mean_flops == pf[0]  # the cheapest: everyone leaves at exit 0
    assert b.exit_shares[0] == 1.0


def test_deterministic_and_inputs_untouched():
    scores, preds, labels, pf = synthetic(1500, 4, seed=9)
    copies = [scores.clone(), preds.clone(), labels.clone()]
    a = search_per_exit(scores, preds, labels, pf, target_accuracy=0.6)
    b = search_per_exit(scores, preds, labels, torch.tensor(pf), target_accuracy=0.6)
    assert a == b and dataclasses.is_dataclass(a)
    assert all(torch.equal(x, y) for x, y in zip(copies, (scores, preds, labels), strict=True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.accuracy = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_thresholds_run_live_in_route(dtype):
    """The searched thresholds (with per-exit temperatures) as ``MaxProbability`` in ``route``:
    the same predictions, exits and FLOPs as ``simulate``, and the numbers the search reported."""
    net = build_small_net().to(dtype).eval()
    g = torch.Generator().manual_seed(11)
    x = torch.rand(96, 3, 16, 16, generator=g, dtype=dtype)
    outputs, _ = collect_outputs(net, [x[:50], x[50:]])
    # An untrained net: say each sample's class is what a random exit (mostly the last) says.
    said = torch.stack([o.logits.argmax(dim=1) for o in outputs])
    labels = said.gather(
        0, torch.multinomial(torch.tensor([1.0, 1, 1, 3]), 96, True, generator=g)[None]
    )[0]
    temperature = (0.5, 0.8, 1.5, 1.0)
    scores, preds = max_probability_scores(outputs, temperature)
    assert scores.shape == (3, 96) and preds.shape == (4, 96) and scores.dtype == dtype
    pf = net.costs.path_flops
    budgets = [pf[0] + f * (pf[-1] - pf[0]) for f in (0.2, 0.5)]
    front = per_exit_front(scores, preds, labels, pf, flops_budgets=budgets)
    for r in front:
        policy = r.policy(temperature)
        assert isinstance(policy, MaxProbability)
        routed = route(net, x, policy)
        simulated = simulate(outputs, policy, net.costs)
        assert torch.equal(routed.prediction, simulated.prediction)
        assert torch.equal(routed.exit_idx, simulated.exit_idx)
        assert torch.equal(routed.flops, simulated.flops)
        assert routed.accuracy(labels) == r.accuracy
        assert routed.mean_flops == r.mean_flops <= r.target
        assert tuple(routed.exit_shares) == pytest.approx(r.exit_shares)
        assert len(set(routed.exit_idx.tolist())) > 2  # the budget makes samples leave early


def test_input_errors_are_clear():
    scores, preds, labels, pf = synthetic(100, 3, seed=1)
    ok = {"target_accuracy": 0.5}
    with pytest.raises(ValueError, match=r"scores \(3, 100\).*expected scores \(2, 100\)"):
        search_per_exit(torch.cat([scores, scores[:1]]), preds, labels, pf, **ok)
    with pytest.raises(ValueError, match=r"labels \(99,\).*labels \(100,\)"):
        search_per_exit(scores, preds, labels[:99], pf, **ok)
    with pytest.raises(ValueError, match="scores must be a tensor .E-1, N."):
        search_per_exit(scores[0], preds, labels, pf, **ok)
    with pytest.raises(TypeError, match="labels must be a tensor"):
        search_per_exit(scores, preds, labels.tolist(), pf, **ok)
    with pytest.raises(ValueError, match=r"one value per exit \(3\).*costs.path_flops"):
        search_per_exit(scores, preds, labels, pf[:2], **ok)
    with pytest.raises(ValueError, match="finite and >= 0"):
        search_per_exit(scores, preds, labels, [1, math.inf, 3], **ok)
    with pytest.raises(ValueError, match="exactly one of target_accuracy"):
        search_per_exit(scores, preds, labels, pf)
    with pytest.raises(ValueError, match="exactly one of target_accuracy"):
        search_per_exit(scores, preds, labels, pf, target_accuracy=0.5, flops_budget=2000)
    with pytest.raises(ValueError, match="must be finite"):
        search_per_exit(scores, preds, labels, pf, target_accuracy=math.nan)
    with pytest.raises(ValueError, match="exactly one of target_accuracies"):
        per_exit_front(scores, preds, labels, pf)
    with pytest.raises(ValueError, match="score_bound"):
        search_per_exit(scores + 1, preds, labels, pf, **ok)
    with pytest.raises(ValueError, match="NaN"):
        search_per_exit(scores.masked_fill(scores > 0.5, math.nan), preds, labels, pf, **ok)
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        search_per_exit(scores.bfloat16(), preds, labels, pf, **ok)
    with pytest.raises(ValueError, match="integer class indices"):
        search_per_exit(scores, preds.float(), labels, pf, **ok)
    with pytest.raises(ValueError, match="at least 2 exits"):
        max_probability_scores([])

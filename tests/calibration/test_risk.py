"""Risk control (CRC, LTT) of early exit: losses, p-values, guarantees, live policy, evidence."""

import math

import pytest
import torch
from scipy.stats import binom

from exitwise.calibration.risk import (
    RiskControlledThresholds,
    crc_index,
    default_grid,
    exit_indices,
    fit_crc,
    fit_ltt,
    fixed_sequence_test,
    hb_p_value,
    loss_matrix,
    ltt_index,
    quantile_path,
    risk_evidence,
)
from exitwise.calibration.thresholds import max_probability_scores
from exitwise.policies import MaxProbability
from exitwise.routing import collect_outputs, route, simulate

# ------------------------------------------------------------------------------------ helpers


def hand_made():
    """Three exits (two side exits), five samples; thresholds (0.9, 0.5) send them to
    exits 0, 1, 2, 1, 0."""
    scores = torch.tensor(
        [
            [0.95, 0.40, 0.80, 0.10, 0.90],  # exit 0
            [0.20, 0.60, 0.40, 0.50, 0.00],  # exit 1
        ]
    )
    preds = torch.tensor(
        [
            [1, 0, 3, 2, 4],  # exit 0
            [0, 1, 3, 2, 4],  # exit 1
            [1, 2, 0, 1, 4],  # last exit
        ]
    )
    labels = torch.tensor([0, 1, 0, 1, 3])
    return scores, preds, labels


def synthetic_draw(n, g):
    """One exit before the last: score s ~ U(0, 1); the early prediction disagrees with the last
    exit (which is always right) with probability 1 - s. At shared threshold t in [0, 1] the
    disagreement (= gap) risk is R(t) = int_t^1 (1 - s) ds = (1 - t)^2 / 2."""
    s = torch.rand(1, n, generator=g, dtype=torch.float64)
    wrong = torch.rand(n, generator=g, dtype=torch.float64) < 1 - s[0]
    labels = torch.zeros(n, dtype=torch.int64)
    return s, torch.stack([wrong.to(torch.int64), labels]), labels


def true_risk(t):
    return 0.0 if math.isinf(t) else (1 - t) ** 2 / 2


# ------------------------------------------------------------------------------------- losses


def test_losses_on_a_hand_made_example():
    scores, preds, labels = hand_made()
    grid = [2.0, 0.9, 0.5]  # nobody early; exit 0 for sample 0 and 4, ...; everyone early
    exits = exit_indices(scores, thresholds=grid)
    assert exits.tolist() == [[2, 2, 2, 2, 2], [0, 2, 2, 2, 0], [0, 1, 0, 1, 0]]

    dis = loss_matrix(scores, preds, labels, "disagreement", thresholds=grid)
    # at (0.5): predictions 1, 1, 3, 2, 4 against the last exit's 1, 2, 0, 1, 4
    assert dis.tolist() == [[False] * 5, [False] * 5, [False, True, True, True, False]]

    gap = loss_matrix(scores, preds, labels, "gap", thresholds=grid)
    # the last exit is right for samples 2 and 3 only, and both are wrong early (3 and 2);
    # sample 1 disagrees, but the last exit is wrong too: no gap
    assert gap.tolist() == [[False] * 5, [False] * 5, [False, False, True, True, False]]


def test_per_exit_path_sets_each_exit_its_own_threshold():
    scores, preds, labels = hand_made()
    path = torch.tensor([[0.9, 0.5], [0.9, 0.3], [0.05, 0.3]])
    exits = exit_indices(scores, per_exit_path=path)
    assert exits.tolist() == [[0, 1, 2, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    # a shared grid is the per-exit path with equal columns
    grid = torch.tensor([0.9, 0.5, 0.2])
    shared = loss_matrix(scores, preds, labels, thresholds=grid)
    as_path = loss_matrix(scores, preds, labels, per_exit_path=grid.unsqueeze(1).expand(-1, 2))
    assert torch.equal(shared, as_path)


def test_quantile_path_passes_about_a_share_q_at_every_exit():
    g = torch.Generator().manual_seed(3)
    tuning = torch.stack([torch.rand(4000, generator=g) ** p for p in (3.0, 1.0, 0.3)])
    levels = [0.0, 0.1, 0.5, 0.9, 1.0]
    path = quantile_path(tuning, levels)
    assert path.shape == (5, 3) and path.dtype == torch.float64
    assert bool((path[1:] <= path[:-1]).all())
    for row, q in zip(path, levels, strict=True):
        passing = (tuning.double() >= row.unsqueeze(1)).double().mean(dim=1)
        assert torch.allclose(passing, torch.full((3,), q, dtype=torch.float64), atol=2e-3)
    # different exits get different thresholds at the same level
    assert path[2, 0] < path[2, 1] < path[2, 2]


# ---------------------------------------------------------------------- p-values, the methods


@pytest.mark.parametrize(
    "n, k, eps",
    [(100, 0, 0.1), (100, 3, 0.1), (100, 10, 0.1), (100, 25, 0.1), (1000, 37, 0.05), (50, 9, 0.3)],
)
def test_hb_p_value_matches_a_direct_computation(n, k, eps):
    r = k / n
    a = min(r, eps)
    h1 = (a * math.log(a / eps) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - eps))
    expected = min(math.exp(-n * h1), math.e * binom.cdf(k, n, eps), 1.0)
    got = float(hb_p_value(r, n, eps))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    # vectorised, and a float32 mean k/n (a few ulps off) still counts k losses
    many = hb_p_value(torch.tensor([r, r], dtype=torch.float32), n, eps)
    assert many.shape == (2,)
    assert float(many[0]) == pytest.approx(expected, rel=1e-5)


def test_fixed_sequence_testing_stops_at_the_first_non_rejection():
    p = torch.tensor([0.01, 0.02, 0.5, 0.001, 0.001])
    assert fixed_sequence_test(p, 0.05) == 1  # the later small p-values are never tested
    assert fixed_sequence_test(p, 0.005) == -1
    assert fixed_sequence_test(torch.tensor([0.0, 0.0]), 0.1) == 1


def test_crc_and_ltt_scan_from_the_conservative_end():
    n = 100
    counts = [0, 2, 5, 20, 3, 60]  # risk rises, dips at row 4 (non-monotone), rises
    losses = torch.zeros(len(counts), n, dtype=torch.bool)
    for row, c in enumerate(counts):
        losses[row, :c] = True
    # CRC: (c + 1) / 101 <= eps; eps = 0.1 -> c <= 9.1: rows 0..2 qualify, row 3 stops the scan
    assert crc_index(losses, 0.1) == 2
    assert crc_index(losses, 0.005) == -1  # even 1/(n+1) > eps
    # LTT: the same rows are rejected as the p-values say, in sequence
    p = hb_p_value(torch.tensor(counts, dtype=torch.float64) / n, n, 0.1)
    assert ltt_index(losses, 0.1, 0.1) == fixed_sequence_test(p, 0.1)
    assert bool(p[4] <= 0.1) and ltt_index(losses, 0.1, 0.1) < 4


def test_nothing_qualifies_returns_everyone_to_the_last_exit():
    scores, preds, labels = hand_made()
    fit = fit_ltt(scores, preds, labels, epsilon=0.01, delta=0.1)
    assert not fit.qualified and fit.grid_index == -1
    assert fit.thresholds == (math.inf, math.inf) and fit.calibration_risk == 0.0
    assert isinstance(fit.policy(), MaxProbability)
    assert exit_indices(scores, per_exit_path=torch.tensor([fit.thresholds])).eq(2).all()


# -------------------------------------------------------------------------------- guarantees


def test_crc_and_ltt_keep_their_guarantees_where_a_naive_rule_does_not():
    """1000 calibration draws of n = 50 from a model whose risk is known in closed form."""
    eps, delta, n, draws = 0.1, 0.1, 50, 1000
    grid = torch.tensor(default_grid(), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    crc, ltt, naive, ltt_qualified = [], [], [], 0
    for _ in range(draws):
        s, preds, labels = synthetic_draw(n, g)
        losses = loss_matrix(s, preds, labels, thresholds=grid)
        i, j = crc_index(losses, eps), ltt_index(losses, eps, delta)
        crc.append(true_risk(float(grid[i])) if i >= 0 else 0.0)
        ltt.append(true_risk(float(grid[j])) if j >= 0 else 0.0)
        ltt_qualified += j >= 0
        # broken on purpose: no finite-sample correction (empirical risk <= eps)
        ok = losses.double().mean(dim=1) <= eps
        k = int(ok.to(torch.int64).cumprod(0).sum()) - 1
        naive.append(true_risk(float(grid[k])) if k >= 0 else 0.0)
    crc_t, ltt_t, naive_t = (torch.tensor(x, dtype=torch.float64) for x in (crc, ltt, naive))

    def se(x):
        return float(x.std()) / math.sqrt(draws)

    # CRC: E[R] <= eps (3 standard errors of slack), and it is not trivially conservative:
    # E[R] >= eps - 2/(n+1) - the grid's step in risk near the optimum (Angelopoulos et al.)
    assert float(crc_t.mean()) <= eps + 3 * se(crc_t)
    assert float(crc_t.mean()) >= eps - 2 / (n + 1) - 0.005
    assert float(naive_t.mean()) > eps + 3 * se(naive_t)  # the broken rule overshoots
    # LTT: P(R > eps) <= delta (2 binomial standard errors of slack), while choosing something
    band = 2 * math.sqrt(delta * (1 - delta) / draws)
    assert float((ltt_t > eps).double().mean()) <= delta + band
    assert ltt_qualified >= 0.9 * draws and float(ltt_t.mean()) > eps / 4
    assert float((naive_t > eps).double().mean()) > delta + 3 * band


# ---------------------------------------------------------------------------- the live policy


@pytest.mark.parametrize("risk", ["disagreement", "gap"])
@pytest.mark.parametrize("per_exit", [False, True])
def test_fitted_thresholds_run_live_as_fitted(risk, per_exit, small_net, batch):
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 7, (batch.shape[0],), generator=g)
    outputs, _ = collect_outputs(small_net, [batch])
    temperature = 1.5
    scores, preds = max_probability_scores(outputs, temperature)
    path = None
    if per_exit:
        # a path built on a separate tuning split (fresh images), never on the calibration set
        tune, _ = collect_outputs(
            small_net, [torch.rand(32, 3, 16, 16, generator=g, dtype=torch.float64)]
        )
        path = quantile_path(max_probability_scores(tune, temperature)[0])
    fit = fit_crc(scores, preds, labels, 0.3, risk, per_exit_path=path)
    assert isinstance(fit, RiskControlledThresholds) and fit.qualified
    assert fit.per_exit == per_exit and len(fit.thresholds) == small_net.num_exits - 1

    policy = fit.policy(temperature=temperature)
    costs = small_net.costs_at(batch.shape[1:])
    sim = simulate(outputs, policy, costs)
    live = route(small_net, batch, policy)
    assert torch.equal(live.exit_idx, sim.exit_idx)
    assert torch.equal(live.prediction, sim.prediction)
    assert torch.equal(live.flops, sim.flops)
    assert bool((live.exit_idx < small_net.num_exits - 1).any())  # some leave early

    final = preds[-1]
    if risk == "disagreement":
        realised = (live.prediction != final).double().mean()
    else:
        realised = ((final == labels) & (live.prediction != labels)).double().mean()
    assert float(realised) == fit.calibration_risk
    assert fit.calibration_risk <= 0.3


# -------------------------------------------------------------------------------- evidence


def test_risk_evidence_equals_fits_on_each_split():
    g = torch.Generator().manual_seed(1)
    n, n_cal, splits, eps = 600, 180, 4, [0.05, 0.2]
    scores = torch.rand(2, n, generator=g)
    preds = torch.randint(0, 3, (3, n), generator=g)
    preds[:, scores[1] > 0.6] = preds[-1, scores[1] > 0.6]  # sure samples agree
    labels = torch.randint(0, 3, (n,), generator=g)
    path_flops = torch.tensor([10.0, 25.0, 40.0])
    ev = risk_evidence(
        scores, preds, labels, path_flops, eps, 0.1, n_splits=splits, calib_fraction=0.3, seed=7
    )
    assert (ev.n_calib, ev.n_test, ev.grid_size, ev.backbone_flops) == (n_cal, 420, 104, 40.0)

    split = torch.Generator().manual_seed(7)  # split s = the s-th randperm of this generator
    best = torch.zeros(len(eps), dtype=torch.float64)
    for s in range(splits):
        perm = torch.randperm(n, generator=split)
        cal, test = perm[:n_cal], perm[n_cal:]
        test_risk = loss_matrix(scores[:, test], preds[:, test], labels[test]).double().mean(1)
        test_flops = path_flops[exit_indices(scores[:, test])].double().mean(dim=1)
        for j, e in enumerate(eps):
            point = ev.points[j]
            for record, fit in (
                (point.crc, fit_crc(scores[:, cal], preds[:, cal], labels[cal], e)),
                (point.ltt, fit_ltt(scores[:, cal], preds[:, cal], labels[cal], e, 0.1)),
            ):
                i = fit.grid_index
                risk = float(test_risk[i]) if i >= 0 else 0.0
                flops = float(test_flops[i]) if i >= 0 else 40.0
                assert record.test_risks[s] == pytest.approx(risk, abs=1e-12)
                assert record.flops_fractions[s] == pytest.approx(flops / 40.0, abs=1e-12)
            # the best unconstrained point knows the test part
            best[j] += min([40.0] + test_flops[test_risk <= e].tolist()) / splits
    for j, point in enumerate(ev.points):
        assert point.best_flops == pytest.approx(float(best[j]), abs=1e-9)
        crc = point.crc
        assert crc.mean_test_risk == pytest.approx(sum(crc.test_risks) / splits)
        assert crc.test_risk_quantiles[0] <= crc.test_risk_quantiles[1]
        assert crc.test_risk_quantiles[1] <= crc.test_risk_quantiles[2]
        share = sum(r > point.epsilon for r in point.ltt.test_risks) / splits
        assert point.ltt.violation_rate == share


def test_risk_evidence_shows_the_guarantees_on_synthetic_data():
    g = torch.Generator().manual_seed(2)
    scores, preds, labels = synthetic_draw(6000, g)
    ev = risk_evidence(
        scores, preds, labels, [1.0, 3.0], [0.05, 0.1], 0.1, n_splits=300, calib_fraction=0.05
    )
    for point in ev.points:
        crc, ltt = point.crc, point.ltt
        slack = 3 * crc.std_test_risk / math.sqrt(300)
        assert crc.mean_test_risk <= point.epsilon + slack
        assert ltt.violation_rate <= 0.1 + 2 * math.sqrt(0.1 * 0.9 / 300)
        # LTT is the more careful, so never cheaper than CRC on average; both save FLOPs
        assert crc.mean_flops <= ltt.mean_flops < 3.0
        assert point.best_flops <= crc.mean_flops + 0.05


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_levels_outside_the_open_unit_interval_are_refused(bad):
    scores, preds, labels = hand_made()
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\)"):
        fit_crc(scores, preds, labels, bad)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        fit_ltt(scores, preds, labels, 0.1, bad)
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\)"):
        risk_evidence(scores, preds, labels, [1, 2, 3], [0.1, bad], 0.1)


def test_mismatched_shapes_are_refused():
    scores, preds, labels = hand_made()
    with pytest.raises(ValueError, match=r"preds must be .* \(3, 5\)"):
        fit_crc(scores, preds[:2], labels, 0.1)
    with pytest.raises(ValueError, match=r"labels must be .* \(5,\)"):
        fit_crc(scores, preds, labels[:4], 0.1)
    with pytest.raises(ValueError, match="scores must be a floating"):
        fit_crc(scores[0], preds, labels, 0.1)
    with pytest.raises(ValueError, match=r"per_exit_path must be \(L, E-1\) = \(L, 2\)"):
        fit_crc(scores, preds, labels, 0.1, per_exit_path=torch.tensor([[0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="path_flops must have one value per exit"):
        risk_evidence(scores, preds, labels, [1.0, 2.0], [0.1], 0.1)
    with pytest.raises(ValueError, match="unknown risk 'gapp'"):
        fit_crc(scores, preds, labels, 0.1, "gapp")  # type: ignore[arg-type]


def test_unordered_grids_are_refused():
    scores, preds, labels = hand_made()
    with pytest.raises(ValueError, match=r"row 1 .* is above row 0.*sorted\(grid, reverse=True\)"):
        fit_crc(scores, preds, labels, 0.1, thresholds=[0.5, 0.9])
    with pytest.raises(ValueError, match="non-increasing at every exit.*cummin"):
        fit_ltt(
            scores, preds, labels, 0.1, 0.1, per_exit_path=torch.tensor([[0.9, 0.5], [0.8, 0.6]])
        )
    with pytest.raises(ValueError, match="not both"):
        fit_crc(scores, preds, labels, 0.1, thresholds=[0.5], per_exit_path=torch.ones(1, 2))
    with pytest.raises(ValueError, match="levels must increase"):
        quantile_path(scores, [0.5, 0.1])

"""The offloading study (seed 002's grid) against a real cloud on loopback: the exact numbers
from every exit's outputs agree with what the edge runtime and the cloud answer live, the
cloud-only baseline is the final exit, and a rerun resumes from the saved rows."""

from __future__ import annotations

import pytest
import torch

from exitwise.errors import InputError
from exitwise.experiments.offload import (
    CLOUD_ONLY,
    OffloadSettings,
    blurred,
    edge_policy,
    json_request_bytes,
    mean_ci95,
    offload_config,
    offload_study,
    t975,
    total_rows,
)
from exitwise.policies import PolicyContext
from exitwise.results import OffloadResult
from exitwise.serving.edge import CloudOnly, EdgeRuntime
from exitwise.serving.server import build_app
from tests.conftest import build_small_net
from tests.serving.test_server import LoopbackServer

CTX = PolicyContext(temperature=(1.0, 1.1, 0.9, 1.0), exit_weights=(0.5, 0.6, 0.7, 0.8))
N = 40


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, 7, (N,), generator=g)


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(build_app(build_small_net())) as s:
        yield s


def _classifier(net, url, made):
    def make(method, alpha, k):
        if method == CLOUD_ONLY:
            rt = CloudOnly(net, url)
        else:
            rt = EdgeRuntime(net, k - 1, edge_policy(method, alpha, CTX), url)
        made.append((method, alpha, k))
        return rt.classify

    return make


def test_exact_numbers_agree_with_the_live_answers(tmp_path, data, server):
    net = build_small_net().eval()
    images, labels = data
    settings = OffloadSettings(sigmas=(0.0, 0.8), alphas=(0.18, 0.2), latency_images=6, warmup=1)
    config = offload_config(net, "run", "synthetic", N, settings, CTX)
    assert config.edge_exits == [1, 2, 3] and total_rows(config) == 2 * (2 * 2 * 3 + 1)
    made, said = [], []
    state = tmp_path / "offload.json"
    result = offload_study(
        net, images, labels, config, CTX, _classifier(net, server.url, made), "t",
        state_path=state, progress=said.append,
    )  # fmt: skip
    assert len(result.rows) == total_rows(config) == len(made) == len(said)
    with torch.no_grad():
        outs = [net.forward_outputs(blurred(images, s).float() / 255) for s in (0.0, 0.8)]
    costs = net.costs_at((3, 16, 16))
    shares = set()
    for row in result.rows:
        assert row.fallbacks == 0 and row.latency_images == 6
        assert row.live_agreement >= 5 / 6, row  # batch-of-1 rounding may flip a tie, rarely
        assert row.latency_ms > 0 and row.latency_ci95_ms > 0
        assert row.wire_bytes == pytest.approx(row.request_bytes * (1 - row.edge_share))
        assert row.json_bytes > 2 * row.request_bytes  # JSON lists: several times the bytes
        if row.method == CLOUD_ONLY:
            final = outs[row.sigma > 0][-1].logits.argmax(1)
            assert row.accuracy == pytest.approx(float((final == labels).double().mean()))
            assert row.edge_share == 0 and row.edge_flops == 0
            assert row.cloud_flops == costs.backbone_flops
            assert row.request_bytes > 3 * 16 * 16  # header + the raw image
        else:
            shares.add(row.edge_share)
            total = row.edge_flops + row.cloud_flops
            assert costs.path_flops[0] <= total <= costs.path_flops[-1] + 1e3
            # the cloud runs the stages after exit k and the final exit, no side head
            cost = sum(costs.stage_flops[row.edge_exits :]) + costs.exit_flops[-1]
            assert row.cloud_flops == pytest.approx((1 - row.edge_share) * cost)
    assert len(shares) > 3  # the thresholds split the images between edge and cloud
    ee = {(r.sigma, r.method, r.alpha, r.edge_exits): r for r in result.rows}
    for (sigma, method, alpha, k), row in ee.items():
        if k is not None and k > 1:  # more edge exits: more images classified on the edge
            assert row.edge_share >= ee[(sigma, method, alpha, k - 1)].edge_share

    # resume: nothing is measured again; a changed grid starts afresh
    def refuse(*_):
        raise AssertionError("a saved row was measured again")

    again = offload_study(net, images, labels, config, CTX, refuse, "t", state_path=state)
    assert again.to_json()["rows"] == result.to_json()["rows"]
    assert OffloadResult.load(state).rows == result.rows
    small = OffloadSettings(
        sigmas=(0.0,), alphas=(0.18,), edge_exits=(1,), methods=("max_probability",),
        latency_images=3, warmup=0,
    )  # fmt: skip
    other = offload_config(net, "run", "synthetic", N, small, CTX)
    made.clear()
    make = _classifier(net, server.url, made)
    fresh = offload_study(net, images, labels, other, CTX, make, "t", state_path=state)
    assert len(fresh.rows) == len(made) == 2


def test_settings_are_checked():
    net = build_small_net()
    for bad, match in (
        (OffloadSettings(sigmas=(-1.0,)), "sigmas must be numbers >= 0"),
        (OffloadSettings(alphas=(1.5,)), "alphas must be in"),
        (OffloadSettings(methods=("entropy",)), "methods must be among"),
        (OffloadSettings(edge_exits=(4,)), "edge exits k must be in 1..3"),
        (OffloadSettings(latency_images=1), "latency_images must be >= 2"),
        (OffloadSettings(features="INT8"), "FP32 or FP16"),
    ):
        with pytest.raises(InputError, match=match):
            offload_config(net, "r", "d", 10, bad, CTX)


def test_helpers():
    scipy_stats = pytest.importorskip("scipy.stats")
    values = [10.0, 12.5, 11.0, 9.5, 13.0, 10.5, 11.5]
    mean, ci, std = mean_ci95(values)
    t = scipy_stats.t.ppf(0.975, len(values) - 1)
    assert mean == pytest.approx(sum(values) / 7)
    assert ci == pytest.approx(t * std / 7**0.5, rel=2e-4)
    for df in (1, 6, 30, 31, 60, 250):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=2e-4)
    with pytest.raises(ValueError, match=">= 2 values"):
        mean_ci95([1.0])
    x = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    assert torch.equal(blurred(x, 0), x) and blurred(x, 1.0).dtype == torch.uint8
    assert float(blurred(x, 1.0).float().std()) < float(x.float().std())
    t16 = torch.zeros(1, 2, 2, 2, dtype=torch.float16)
    assert json_request_bytes("features", t16) == len(
        '{"inputs":[{"name":"features","shape":[1,2,2,2],"datatype":"FP16","data":'
        "[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]}]}"
    )

"""FLOPs against closed-form counts on a hand-built network."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from exitwise.cost import CostAccount, count_flops
from exitwise.nets import MultiExitNet, PoolHead
from exitwise.policies import MaxProbability
from exitwise.routing import route


def hand_built() -> MultiExitNet:
    stages = [
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.ReLU()),
    ]
    exits = [PoolHead(4, 5), PoolHead(8, 5)]
    return MultiExitNet(stages, exits, input_shape=(3, 8, 8), num_classes=5)


def test_costs_match_closed_form():
    costs = hand_built().costs
    conv1 = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 x output elements x MACs per output
    conv2 = 2 * (8 * 4 * 4) * (4 * 3 * 3)
    head1, head2 = 2 * 4 * 5, 2 * 8 * 5  # pooling is free; linear in x out MACs
    assert costs.stage_flops == (conv1, conv2)
    assert costs.exit_flops == (head1, head2)
    assert costs.path_flops == (conv1 + head1, conv1 + head1 + conv2 + head2)
    assert costs.backbone_flops == conv1 + conv2 + head2
    rows = costs.rows()
    assert rows[1]["path_macs"] * 2 == rows[1]["path_flops"]
    assert costs.to_dict()["backbone_macs"] == costs.backbone_flops // 2


def test_count_flops_of_a_linear_layer():
    layer = nn.Linear(10, 3)
    assert count_flops(lambda: layer(torch.zeros(4, 10))) == 2 * 4 * 10 * 3


def test_routed_flops_equal_what_flop_counter_mode_counts():
    net = hand_built().eval()
    x = torch.rand(17, 3, 8, 8)
    for threshold in (0.0, 0.2, 0.21, 0.22, 1.01):
        with FlopCounterMode(display=False) as counter:
            res = route(net, x, MaxProbability(threshold))
        assert res.total_flops == counter.get_total_flops()


def test_cost_account_rejects_mismatched_lengths():
    import pytest

    with pytest.raises(ValueError, match="one stage per exit"):
        CostAccount((1, 2), (1,), (3, 8, 8))


# -- a cost account per input shape ------------------------------------------------------------


def closed_form(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Stage and head FLOPs of ``hand_built`` on an ``h x w`` input."""
    h2, w2 = (h + 1) // 2, (w + 1) // 2  # 3x3 conv, stride 2, padding 1
    conv1 = 2 * (4 * h * w) * (3 * 3 * 3)
    conv2 = 2 * (8 * h2 * w2) * (4 * 3 * 3)
    return (conv1, conv2), (2 * 4 * 5, 2 * 8 * 5)


def test_costs_at_other_shapes_match_closed_form():
    net = hand_built()
    for h, w in [(8, 8), (16, 16), (12, 20), (5, 7)]:
        stages, heads = closed_form(h, w)
        costs = net.costs_at((3, h, w))
        assert costs.stage_flops == stages and costs.exit_flops == heads, (h, w)
        assert costs.input_shape == (3, h, w)
    assert net.costs == net.costs_at((3, 8, 8))  # the build shape's account
    assert net.costs_at([3, 16, 16]) is net.costs_at((3, 16, 16))  # measured once


@pytest.mark.parametrize("make", [hand_built, lambda: cifar_net()], ids=["hand_built", "resnet20"])
def test_routed_flops_equal_flop_counter_mode_at_shapes_it_was_not_built_for(make):
    """Routed at 2-3 resolutions, each account first measured inside the caller's counter: the
    measurement is not counted, and what is counted is what route reports."""
    g = torch.Generator().manual_seed(0)
    for side in (12, 16, 32):
        net = make().eval()  # a fresh model: no account for this side yet
        x = torch.rand(17, 3, side, side, generator=g)
        assert (3, side, side) not in net._costs
        for threshold in (0.0, 0.3, 1.01):
            with FlopCounterMode(display=False) as counter:
                res = route(net, x, MaxProbability(threshold))
            assert res.total_flops == counter.get_total_flops(), (side, threshold)
        assert res.flops[0] == net.costs_at((3, side, side)).path_flops[-1]
        assert net.costs_at((3, side, side)).backbone_flops > net.costs.backbone_flops


def cifar_net():
    from exitwise.nets import build_multi_exit

    return build_multi_exit(
        "resnet20", 5, input_shape=(3, 8, 8), exits_after=["layer1.0", "layer2.0"], seed=0
    )


def test_a_larger_input_costs_more_than_the_build_shape_says():
    net = cifar_net().eval()
    x = torch.rand(4, 3, 16, 16)
    res = route(net, x, MaxProbability(1.01))
    assert res.flops.tolist() == [net.costs_at((3, 16, 16)).path_flops[-1]] * 4
    # every convolution covers 4x the area; the heads' linear layers cost the same
    s8, s16 = net.costs.stage_flops, net.costs_at((3, 16, 16)).stage_flops
    assert [b == 4 * a for a, b in zip(s8, s16, strict=True)] == [True] * 3


def test_shapes_the_network_cannot_run_are_refused_naming_both():
    stages = [nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())]  # no padding: needs 3x3
    net = MultiExitNet(stages, [PoolHead(4, 5)], input_shape=(3, 8, 8), num_classes=5)
    with pytest.raises(ValueError, match=r"built for inputs \(3, 8, 8\).*shape \(3, 2, 2\)"):
        net.costs_at((3, 2, 2))
    with pytest.raises(ValueError, match=r"built for inputs \(3, 8, 8\).*shape \(3, 2, 2\)"):
        route(net, torch.rand(1, 3, 2, 2), MaxProbability(0.5))
    with pytest.raises(ValueError, match=r"\(3, H, W\).*got \(1, 8, 8\)"):
        net.costs_at((1, 8, 8))
    with pytest.raises(ValueError, match=r"got \(3, 0, 8\)"):
        net.costs_at((3, 0, 8))
    assert (3, 2, 2) not in net._costs


def test_measuring_a_shape_leaves_modes_and_counters_alone():
    net = hand_built().train()
    net.stages[0].eval()
    before = {n: m.training for n, m in net.named_modules()}
    with FlopCounterMode(display=False) as counter:
        net.costs_at((3, 16, 16))
    assert counter.get_total_flops() == 0
    assert {n: m.training for n, m in net.named_modules()} == before

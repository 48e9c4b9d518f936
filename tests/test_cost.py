"""FLOPs against closed-form counts on a hand-built network."""

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

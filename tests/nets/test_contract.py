"""Contract checks over the whole backbone registry (timm-style): shapes, gradients, no NaN."""

import pytest
import torch
import torch.nn.functional as F

from exitwise.nets import BACKBONES, PRESETS, build_multi_exit, build_preset


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_trains_through_every_exit(name):
    net = build_multi_exit(
        name,
        num_classes=5,
        input_shape=(3, 32, 32),
        distribution="linear",
        num_side_exits=2,
        exit_head="pool",
        seed=0,
    )
    net.train()
    x = torch.rand(2, 3, 32, 32)
    logits = net(x)
    assert len(logits) == net.num_exits == 3
    for out in logits:
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
    loss = sum(F.cross_entropy(out, torch.tensor([0, 3])) for out in logits)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_accepts_one_channel(name):
    net = build_multi_exit(
        name,
        num_classes=4,
        input_shape=(1, 32, 32),
        distribution="pareto",
        num_side_exits=1,
        exit_head="branchy",
    ).eval()
    with torch.no_grad():
        assert [o.shape for o in net(torch.rand(1, 1, 32, 32))] == [(1, 4), (1, 4)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_with_expected_exits(preset):
    net = build_preset(preset, num_classes=43)
    assert net.num_exits == 4
    assert len(net.costs.path_flops) == 4
    fractions = net.costs.path_fractions
    assert all(a < b for a, b in zip(fractions, fractions[1:], strict=False))


def test_branchy_resnet18_exits_after_the_residual_stages():
    net = build_preset("branchy_resnet18", num_classes=43)
    assert net.exit_blocks == ["layer1.1", "layer2.1", "layer3.1"]
    assert net.stage_blocks[-1] == ["layer4.0", "layer4.1"]


def test_mobilenet_preset_places_exits_equidistant_in_flops():
    net = build_preset("mobilenet_v2_3exits", num_classes=10)
    placement = net.placement
    assert placement["targets"] == [0.25, 0.5, 0.75]
    for target, achieved in zip(placement["targets"], placement["achieved"], strict=True):
        assert abs(target - achieved) < 0.06
    assert net.exit_blocks == placement["blocks"]


def test_config_rebuilds_an_identical_architecture():
    net = build_preset("branchy_resnet18", num_classes=10, seed=3)
    again = build_multi_exit(**net.config)
    assert again.costs == net.costs
    for (n1, p1), (n2, p2) in zip(
        net.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)

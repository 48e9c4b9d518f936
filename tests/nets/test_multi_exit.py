import pytest
import torch

from exitwise.nets import build_backbone, build_multi_exit, build_preset


def test_edge_then_cloud_equals_the_whole_model(small_net, batch, device):
    net, x = small_net.to(device), batch.to(device)
    with torch.no_grad():
        whole = net.forward_outputs(x)
        for k in range(net.num_exits - 1):
            edge, cloud = net.split(k)
            edge_outs, h = edge(x)
            cloud_outs = cloud(h)
            assert len(edge_outs) == k + 1 and len(edge_outs) + len(cloud_outs) == len(whole)
            for a, b in zip(edge_outs + cloud_outs, whole, strict=True):
                assert a.logits.device.type == device.type
                assert torch.equal(a.logits, b.logits)
            # the cloud's final exit alone (its side heads skipped) is the same final exit
            assert torch.equal(cloud.final_output(h).logits, whole[-1].logits)
        assert torch.equal(net.final_output(x).logits, whole[-1].logits)


def test_edge_then_cloud_equals_whole_for_mobilenet():
    net = build_preset("mobilenet_v2_3exits", num_classes=10, input_shape=(3, 32, 32)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        whole = net(x)
        edge, cloud = net.split(1)
        outs, h = edge(x)
        got = [o.logits for o in outs + cloud(h)]
    assert all(torch.equal(a, b) for a, b in zip(got, whole, strict=True))


def test_split_point_must_be_a_side_exit(small_net):
    with pytest.raises(ValueError, match=r"split point must be a side exit in 0..2, got 3"):
        small_net.split(3)


def test_split_parts_share_parameters(small_net):
    edge, cloud = small_net.split(0)
    assert edge.stages[0] is small_net.stages[0] and cloud.exits[-1] is small_net.exits[-1]


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(2, 1, 16, 16, dtype=torch.float64), r"expected 3 input channel\(s\)"),
        (torch.rand(3, 16, 16, dtype=torch.float64), r"4-D batch .*unsqueeze"),
        (torch.rand(2, 3, 4, 16, 16, dtype=torch.float64), "4-D batch"),
        (torch.full((2, 3, 16, 16), float("nan"), dtype=torch.float64), "NaN or Inf"),
        (torch.full((1, 3, 16, 16), float("inf"), dtype=torch.float64), "NaN or Inf"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "floating-point"),
    ],
)
def test_bad_input_says_what_was_expected(small_net, x, message):
    with pytest.raises(ValueError, match=message):
        small_net(x)


def test_batches_of_another_dtype_or_device_are_refused_with_the_fix(small_net):
    with pytest.raises(ValueError, match=r"expected a torch.float64 batch.*got torch.float32"):
        small_net(torch.rand(2, 3, 16, 16))
    meta = torch.empty(2, 3, 16, 16, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"batch is on meta but the model on cpu.*x.to\('cpu'\)"):
        small_net(meta)


def test_other_input_sizes_run_and_too_small_ones_are_refused():
    net = build_multi_exit(
        "resnet18", 5, input_shape=(3, 32, 32), exits_after=["layer1.1"],
        backbone_options={"stem": "cifar"}, exit_head="pool",
    ).eval()  # fmt: skip
    with torch.no_grad():
        assert [o.shape for o in net(torch.rand(2, 3, 48, 40))] == [(2, 5), (2, 5)]
    assert net.costs_at((3, 48, 40)).backbone_flops > net.costs.backbone_flops


def test_non_tensor_input_is_refused(small_net):
    with pytest.raises(TypeError, match="torch.Tensor"):
        small_net([[1.0]])


def test_unknown_backbone_names_near_matches():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet19'.*Did you mean"):
        build_backbone("resnet19", 10)
    with pytest.raises(KeyError, match="unknown backbone"):
        build_multi_exit("vgg16", 10, exits_after=[])


def test_bad_exit_placement_is_refused():
    with pytest.raises(
        ValueError, match=r"unknown block name\(s\) \['layer9.0'\].*available: stem"
    ):
        build_multi_exit("resnet20", 10, exits_after=["layer9.0"])
    with pytest.raises(ValueError, match="network order"):
        build_multi_exit("resnet20", 10, exits_after=["layer2.0", "layer1.0"])
    with pytest.raises(ValueError, match="last block"):
        build_multi_exit("resnet20", 10, exits_after=["layer3.2"])
    with pytest.raises(ValueError, match="exactly one of"):
        build_multi_exit("resnet20", 10)
    with pytest.raises(ValueError, match="stem must be"):
        build_multi_exit("resnet18", 10, exits_after=[], backbone_options={"stem": "tiny"})


def test_normalisation_lives_inside_the_model():
    kw = dict(input_shape=(3, 16, 16), exits_after=["layer1.0"], seed=0)
    plain = build_multi_exit("resnet20", 5, **kw).eval()
    normed = build_multi_exit("resnet20", 5, mean=[0.5] * 3, std=[0.25] * 3, **kw).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(normed(x)[-1], plain((x - 0.5) / 0.25)[-1], atol=1e-5)


def test_exit_heads_are_sized_and_costed():
    pool = build_multi_exit(
        "resnet20", 5, input_shape=(3, 16, 16), exits_after=["layer1.0"], exit_head="pool"
    )
    conv = build_multi_exit(
        "resnet20",
        5,
        input_shape=(3, 16, 16),
        exits_after=["layer1.0"],
        exit_head="branchy",
        exit_head_options={"width": 32},
    )
    assert pool.costs.exit_flops[0] == 2 * 16 * 5  # pooling is free, linear 16 -> 5
    # conv 3x3 stride 2: 16 -> 32 channels on an 8x8 output, then linear 32 -> 5
    assert conv.costs.exit_flops[0] == 2 * 8 * 8 * 32 * 16 * 9 + 2 * 32 * 5

import math

import pytest

from exitwise.nets import build_multi_exit, snap_to_blocks, target_fractions


def test_target_fractions_follow_the_eenets_distributions():
    assert target_fractions("linear", 3) == [0.25, 0.5, 0.75]
    assert target_fractions("pareto", 2) == pytest.approx([0.2, 0.36])
    assert target_fractions("fine", 2) == pytest.approx([0.05, 0.0975])
    phi = (1 + math.sqrt(5)) / 2
    assert target_fractions("golden", 3) == pytest.approx([phi**-3, phi**-2, phi**-1])
    with pytest.raises(ValueError, match="unknown exit distribution 'cubic'"):
        target_fractions("cubic", 2)


def test_snap_picks_the_nearest_distinct_boundaries():
    names = ["a", "b", "c", "d", "e"]
    flops = [10, 10, 10, 10, 60]  # cumulative fractions before the last block: .1 .2 .3 .4
    chosen, achieved = snap_to_blocks(names, flops, 100, [0.12, 0.13, 0.9])
    assert chosen == ["a", "b", "d"]
    assert achieved == pytest.approx([0.1, 0.2, 0.4])
    with pytest.raises(ValueError, match="only 4 block boundaries"):
        snap_to_blocks(names, flops, 100, [0.1] * 5)


@pytest.mark.parametrize("distribution", ["linear", "pareto", "fine", "golden"])
def test_placement_reports_achieved_fractions_in_order(distribution):
    net = build_multi_exit("resnet56", 10, distribution=distribution, num_side_exits=3)
    achieved = net.placement["achieved"]
    assert achieved == sorted(achieved) and len(set(achieved)) == 3
    assert net.exit_blocks == net.placement["blocks"]
    # The achieved fractions are path costs: the backbone FLOPs up to each exit's block, as the
    # measured cost account counts them (stages 0..i, without the side exits' heads) ...
    costs = net.costs
    for i, fraction in enumerate(achieved):
        assert fraction == pytest.approx(sum(costs.stage_flops[: i + 1]) / costs.backbone_flops)
    # ... and a sample leaving at exit i pays them plus the heads it ran
    for i, fraction in enumerate(achieved):
        heads = sum(costs.exit_flops[: i + 1]) / costs.backbone_flops
        assert costs.path_fractions[i] == pytest.approx(fraction + heads)

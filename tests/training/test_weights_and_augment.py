import pytest
import torch

from exitwise.training import LOSS_WEIGHTS, loss_weights
from exitwise.training.augment import AUGMENT_PRESETS, augment_batch


@pytest.mark.parametrize("name", LOSS_WEIGHTS.names())
@pytest.mark.parametrize("num_exits", [1, 2, 4])
def test_every_schedule_sums_to_one(name, num_exits):
    for epoch in (0, 3, 9):
        w = loss_weights(name, num_exits, epoch, 10)
        assert len(w) == num_exits and sum(w) == pytest.approx(1.0)
        assert all(x >= 0 for x in w)


def test_schedule_shapes():
    assert loss_weights("linear", 4) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert loss_weights("final", 3) == [0.0, 0.0, 1.0]
    assert loss_weights("gradual", 2, 0, 5) == pytest.approx([0.5, 0.5])
    assert loss_weights("gradual", 2, 4, 5) == pytest.approx(loss_weights("linear", 2))
    with pytest.raises(KeyError, match="unknown loss-weight schedule"):
        loss_weights("cubic", 3)


def test_joint_loss_matches_a_manual_loop():
    torch.manual_seed(0)
    logits = [torch.randn(5, 3, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 1, 0])
    w = loss_weights("linear", 3)
    total = sum(
        wi * torch.nn.functional.cross_entropy(li, y) for wi, li in zip(w, logits, strict=True)
    )
    manual = 0.0
    for wi, li in zip(w, logits, strict=True):
        logp = torch.log_softmax(li, dim=1)
        manual += wi * -sum(float(logp[r, y[r]].detach()) for r in range(5)) / 5
    assert float(total.detach()) == pytest.approx(manual, rel=1e-6)


def test_augmentation_is_seeded_bounded_and_not_in_place():
    x = torch.rand(6, 3, 16, 16)
    before = x.clone()
    cfg = AUGMENT_PRESETS["signs"]
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    assert augment_batch(x, AUGMENT_PRESETS["none"], torch.Generator()) is x

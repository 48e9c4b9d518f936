import pytest
import torch

from exitwise.training import LOSS_WEIGHTS, joint_loss, loss_weights
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


def manual_joint_loss(logits, y, weights, smoothing):
    """Per exit, per sample, in Python floats: (1 - s) * NLL + s * mean over classes of -log p."""
    total = 0.0
    for w, li in zip(weights, logits, strict=True):
        if w == 0:
            continue
        logp = torch.log_softmax(li.detach().double(), dim=1).tolist()
        k = len(logp[0])
        per_sample = [
            (1 - smoothing) * -row[int(t)] + smoothing * -sum(row) / k
            for row, t in zip(logp, y.tolist(), strict=True)
        ]
        total += w * sum(per_sample) / len(per_sample)
    return total


@pytest.mark.parametrize("schedule", ["uniform", "linear", "final"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_joint_loss_matches_a_manual_loop(schedule, smoothing):
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 3, generator=g, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 1, 0])
    w = loss_weights(schedule, 3)
    total = joint_loss(logits, y, w, label_smoothing=smoothing)
    assert float(total.detach()) == pytest.approx(
        manual_joint_loss(logits, y, w, smoothing), rel=1e-6
    )
    total.backward()
    for wi, li in zip(w, logits, strict=True):  # exits of weight 0 get no gradient at all
        assert (li.grad is None) == (wi == 0)


def test_joint_loss_is_what_the_trainer_minimises(monkeypatch):
    """The trainer calls joint_loss with the schedule's weights (a frozen exit weighs 0)."""
    import exitwise.training.trainer as trainer
    from tests.training.test_trainer import CFG, tiny_data, tiny_model

    seen = []

    def spy(exit_logits, target, weights, label_smoothing=0.0):
        seen.append((len(exit_logits), list(weights), label_smoothing))
        return joint_loss(exit_logits, target, weights, label_smoothing)

    monkeypatch.setattr(trainer, "joint_loss", spy)
    cfg = trainer.TrainConfig(**{**CFG, "epochs": 1, "loss_weights": "linear"}, label_smoothing=0.1)
    trainer.train(tiny_model(), tiny_data(), cfg)
    assert seen and all(s == (2, pytest.approx([1 / 3, 2 / 3]), 0.1) for s in seen)


def test_joint_loss_arguments_are_checked():
    logits = [torch.zeros(2, 3), torch.zeros(2, 3)]
    with pytest.raises(ValueError, match="one weight per exit"):
        joint_loss(logits, torch.tensor([0, 1]), [1.0])
    with pytest.raises(ValueError, match="every exit's weight is 0"):
        joint_loss(logits, torch.tensor([0, 1]), [0.0, 0.0])


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

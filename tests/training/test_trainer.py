"""Training on tiny data: it learns, it checkpoints safely, it resumes to the same result."""

import json

import pytest
import torch

from exitwise.data import ArrayDataset, DatasetSplits
from exitwise.nets import build_multi_exit
from exitwise.training import CheckpointError, TrainConfig, load_model, train
from exitwise.training.checkpoint import load_pair, save_pair


def tiny_data(n=96, classes=3, seed=0) -> DatasetSplits:
    """Three classes told apart by which colour channel is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def make(m):
        labels = torch.arange(m) % classes
        images = (torch.rand(m, 3, 8, 8, generator=g) * 80).to(torch.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i, c] += 150
        return ArrayDataset(images, labels)

    return DatasetSplits(
        "tiny",
        make(n),
        make(24),
        make(24),
        classes,
        ["r", "g", "b"],
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )


def tiny_model():
    return build_multi_exit(
        "resnet20",
        3,
        input_shape=(3, 8, 8),
        exits_after=["layer1.0"],
        exit_head="pool",
        mean=[0.5] * 3,
        std=[0.25] * 3,
        seed=0,
    )


CFG = dict(epochs=3, batch_size=16, lr=0.05, augment="none", warmup_epochs=0.0)


def test_training_learns_every_exit(tmp_path):
    model = tiny_model()
    result = train(model, tiny_data(), TrainConfig(**CFG), tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert {r["threads"] for r in result.history} == {torch.get_num_threads()}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert min(result.history[-1]["val_accuracy"]) > 0.9
    loaded = load_model(tmp_path)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), loaded.model(x), strict=True))
    assert loaded.meta["train_config"]["epochs"] == 3


def test_resume_after_interruption_gives_the_same_model(tmp_path):
    data, cfg = tiny_data(), TrainConfig(**CFG)
    straight = tiny_model()
    train(straight, data, cfg, tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupt

    interrupted = tiny_model()
    with pytest.raises(Interrupt):
        train(interrupted, data, cfg, tmp_path / "resumed", on_epoch=stop_after_first_epoch)
    assert not (tmp_path / "resumed" / "model.json").exists()
    resumed = tiny_model()
    result = train(resumed, data, cfg, tmp_path / "resumed")
    assert result.resumed_from_epoch == 1
    for (k, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_two_stage_freezes_the_backbone(tmp_path):
    model = tiny_model()
    cfg = TrainConfig(**{**CFG, "epochs": 1}, two_stage=True, backbone_epochs=1)
    seen = {}

    def snapshot(record):
        seen[record["phase"]] = {k: v.clone() for k, v in model.state_dict().items()}

    train(model, tiny_data(), cfg, on_epoch=snapshot)
    before, after = seen["backbone"], seen["exits"]
    backbone_keys = [k for k in before if k.startswith(("stages.", "exits.1."))]
    side_keys = [k for k in before if k.startswith("exits.0.") and "weight" in k]
    assert all(torch.equal(before[k], after[k]) for k in backbone_keys)
    assert any(not torch.equal(before[k], after[k]) for k in side_keys)


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny_model(), tiny_data(), TrainConfig(**{**CFG, "epochs": 1}), tmp_path)
    with pytest.raises(CheckpointError, match="different model or training config"):
        train(tiny_model(), tiny_data(), TrainConfig(**{**CFG, "lr": 0.1}), tmp_path)


def test_mismatched_data_is_refused():
    with pytest.raises(ValueError, match=r"expects \(3, 8, 8\)"):
        model = build_multi_exit("resnet20", 3, input_shape=(3, 8, 8), exits_after=[])
        data = tiny_data()
        data.train = ArrayDataset(
            torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
        )
        data.val = data.test = data.train
        train(model, data, TrainConfig(**CFG))


def test_torn_checkpoint_is_detected(tmp_path):
    save_pair(tmp_path, "x", {"a": torch.ones(2)}, {"epoch": 1})
    meta = json.loads((tmp_path / "x.json").read_text())
    save_pair(tmp_path, "x", {"a": torch.zeros(2)}, {"epoch": 2})
    (tmp_path / "x.json").write_text(json.dumps(meta))  # the JSON of an older save
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_pair(tmp_path, "x")
    with pytest.raises(CheckpointError, match="expected y.safetensors and y.json"):
        load_pair(tmp_path, "y")
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_train_config_is_refused():
    for bad, msg in [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"batch_size": 1}, "batch_size"),
        ({"augment": "crazy"}, "augment"),
        ({"two_stage": True}, "backbone_epochs"),
    ]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**bad).validate()


def test_one_epoch_on_every_device(tmp_path, device):
    """Batches go to the device, checkpoints hold CPU tensors, the record names the device."""
    from exitwise.devices import describe_device
    from exitwise.training.checkpoint import load_pair

    model = tiny_model()
    result = train(model, tiny_data(), TrainConfig(**{**CFG, "epochs": 1}), tmp_path, device=device)
    assert next(model.parameters()).device.type == device.type
    (record,) = result.history
    assert record["device"] == describe_device(device) and record["precision"] == "fp32"
    assert min(record["val_accuracy"]) > 0.5
    tensors, meta = load_pair(tmp_path, "model")
    assert {t.device.type for t in tensors.values()} == {"cpu"}
    assert meta["device"] == describe_device(device) and meta["precision"] == "fp32"
    loaded = load_model(tmp_path, device=device).model
    assert next(loaded.parameters()).device.type == device.type


def test_bf16_and_channels_last_train_and_are_recorded(tmp_path):
    """bf16 autocast is allowed on the CPU (for tests; CUDA needs compute capability >= 8)."""
    model = tiny_model()
    cfg = TrainConfig(**{**CFG, "epochs": 2}, precision="bf16", channels_last=True)
    result = train(model, tiny_data(), cfg, tmp_path)
    assert [r["precision"] for r in result.history] == ["bf16", "bf16"]
    assert all(r["channels_last"] for r in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast


def test_resume_may_change_the_device_and_channels_last_but_not_the_precision(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(**{**CFG, "epochs": 1})
    train(tiny_model(), data, cfg, tmp_path)
    more = TrainConfig(**{**CFG, "epochs": 2}, channels_last=True)
    with pytest.raises(CheckpointError, match="different model or training config"):
        train(tiny_model(), data, more, tmp_path)  # epochs differ: refused
    same_but_channels_last = TrainConfig(**{**CFG, "epochs": 1}, channels_last=True)
    resumed = train(tiny_model(), data, same_but_channels_last, tmp_path)
    assert resumed.resumed_from_epoch == 1
    with pytest.raises(CheckpointError, match="different model or training config"):
        train(tiny_model(), data, TrainConfig(**{**CFG, "epochs": 1}, precision="bf16"), tmp_path)


class _Stop(Exception):
    pass


def interrupt_after_first_epoch(data, cfg, run_dir, **kw):
    """Train ``tiny_model()`` into ``run_dir`` and stop it after the first epoch's checkpoint."""

    def stop(record):
        raise _Stop

    with pytest.raises(_Stop):
        train(tiny_model(), data, cfg, run_dir, on_epoch=stop, **kw)


def test_a_checkpoint_saved_before_precision_existed_resumes(tmp_path):
    """Keys added to TrainConfig since a checkpoint was written take their defaults."""
    data, cfg = tiny_data(), TrainConfig(**{**CFG, "epochs": 2})
    interrupt_after_first_epoch(data, cfg, tmp_path)
    tensors, meta = load_pair(tmp_path, "train_state")
    for key in ("precision", "channels_last"):
        del meta["train_config"][key]
    meta.pop("token")
    save_pair(tmp_path, "train_state", tensors, meta)
    assert train(tiny_model(), data, cfg, tmp_path).resumed_from_epoch == 1


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_a_run_interrupted_on_the_cpu_resumes_on_every_device(tmp_path, device):
    from exitwise.devices import describe_device

    data, cfg = tiny_data(), TrainConfig(**{**CFG, "epochs": 2})
    interrupt_after_first_epoch(data, cfg, tmp_path, device="cpu")
    result = train(tiny_model(), data, cfg, tmp_path, device=device)
    assert result.resumed_from_epoch == 1
    assert [r["device"] for r in result.history] == ["cpu", describe_device(device)]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]

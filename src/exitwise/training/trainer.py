"""Joint training of every exit (BranchyNet), optionally in two stages, resumable and deterministic.

Randomness is re-seeded from ``(seed, epoch)`` at the start of every epoch (shuffling,
augmentation, dropout), so a run resumed from the checkpoint of epoch ``k`` continues exactly as an
uninterrupted run would (on the same device, with the same thread count). Shuffling and the
augmentation's parameters come from a CPU generator, so they are the same on every device;
dropout draws from the training device's generator, seeded inside a fork of the caller's RNG
state, which :func:`train` hands back unchanged.

Training runs on one device (``cpu``, ``cuda``, ``mps``), in ``fp32`` or with ``bf16`` autocast,
optionally in channels-last memory format; checkpoints hold CPU tensors, so a run may resume on
another device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from exitwise.data import ArrayDataset, DatasetSplits, iterate_batches
from exitwise.devices import (
    PRECISIONS,
    autocast,
    check_precision,
    describe_device,
    fork_rng,
    module_device,
    seed_rng,
)
from exitwise.nets import MultiExitNet, eval_mode
from exitwise.training.augment import AUGMENT_PRESETS, augment_batch
from exitwise.training.checkpoint import CheckpointError, load_pair, save_model, save_pair
from exitwise.training.eenets import EENETS_LOSSES, eenets_loss
from exitwise.training.weights import LOSS_WEIGHTS, joint_loss, loss_weights

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate_exits",
    "iterate_batches",
    "resume_view",
    "EXECUTION_KEYS",
]


@dataclass
class TrainConfig:
    """How to train. ``epochs`` counts the joint (or, with ``two_stage``, the exits-only) epochs.

    Attributes:
        epochs: epochs of joint training (two-stage: of training the exits on the frozen backbone).
        batch_size: training batch size.
        optimizer: ``sgd`` (momentum, Nesterov) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: decoupled for AdamW, L2 for SGD.
        schedule: ``cosine`` (per step, after warm-up), ``step`` (x0.1 at 50% and 75%) or
            ``constant``.
        warmup_epochs: linear warm-up length, in epochs.
        loss: ``weighted`` (BranchyNet's weighted sum of per-exit cross-entropies) or ``eenets``
            (cost-aware, needs exits with a learned confidence).
        loss_weights: per-exit loss weight schedule (``uniform``, ``linear``, ``sqrt``, ``gradual``,
            ``final``), for the ``weighted`` loss.
        eenets_loss: ``v1`` or ``v2`` (see :mod:`exitwise.training.eenets`).
        eenets_lambda: weight of the expected cost in the EENets loss.
        eenets_v0_epochs: EENets' two-stage schedule: the first epochs use ``v0`` (every exit's
            NLL, no cost), the rest ``eenets_loss``.
        two_stage: first train the backbone alone for ``backbone_epochs``, then the side exits
            with the backbone frozen for ``epochs``.
        backbone_epochs: epochs of the first stage when ``two_stage``.
        augment: augmentation preset (``signs``, ``digits``, ``natural``, ``none``).
        label_smoothing: cross-entropy label smoothing.
        seed: seeds shuffling, augmentation and dropout.
        eval_batch_size: batch size for validation.
        precision: ``fp32``, or ``bf16`` for bfloat16 autocast in the forward pass and the loss
            (weights, optimizer state and validation stay float32). Needs a device that runs
            bf16: a CUDA GPU of compute capability >= 8.0, or the CPU (allowed, for testing;
            usually slower there).
        channels_last: keep the model and the batches in channels-last memory format (faster
            convolutions on CUDA tensor cores); the numbers are the same up to rounding.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    loss: str = "weighted"
    loss_weights: str = "uniform"
    eenets_loss: str = "v1"
    eenets_lambda: float = 1.0
    eenets_v0_epochs: int = 0
    two_stage: bool = False
    backbone_epochs: int = 0
    augment: str = "signs"
    label_smoothing: float = 0.0
    seed: int = 0
    eval_batch_size: int = 512
    precision: str = "fp32"
    channels_last: bool = False

    def validate(self) -> None:
        if self.epochs < 0 or self.backbone_epochs < 0:
            raise ValueError("epochs and backbone_epochs must be >= 0")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.augment not in AUGMENT_PRESETS:
            raise ValueError(
                f"augment must be one of {sorted(AUGMENT_PRESETS)}, got {self.augment!r}"
            )
        LOSS_WEIGHTS.get(self.loss_weights)
        if self.loss not in ("weighted", "eenets"):
            raise ValueError(f"loss must be 'weighted' or 'eenets', got {self.loss!r}")
        if self.eenets_loss not in EENETS_LOSSES:
            raise ValueError(
                f"eenets_loss must be one of {EENETS_LOSSES}, got {self.eenets_loss!r}"
            )
        if self.eenets_lambda < 0 or self.eenets_v0_epochs < 0:
            raise ValueError("eenets_lambda and eenets_v0_epochs must be >= 0")
        if self.loss == "eenets" and self.two_stage:
            raise ValueError(
                "the eenets loss has its own schedule (eenets_v0_epochs); two_stage=false"
            )
        if self.two_stage and self.backbone_epochs == 0:
            raise ValueError("two_stage needs backbone_epochs > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.backbone_epochs if self.two_stage else 0)


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


#: Keys of :class:`TrainConfig` that change how, not what, is computed: a run resumes when only
#: they differ (like the device, which is not part of the training config at all).
EXECUTION_KEYS = ("channels_last",)


@torch.no_grad()
def evaluate_exits(
    model: MultiExitNet,
    data: ArrayDataset,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> list[float]:
    """Accuracy of every exit on ``data`` (each exit sees every sample).

    Runs in eval mode (every submodule's mode is restored) on ``device``, where the batches are
    moved (default: the model's device; the model must be there).
    """
    dev = torch.device(device) if device is not None else module_device(model)
    correct = torch.zeros(model.num_exits, dtype=torch.int64, device=dev)
    with eval_mode(model):
        for x, y in iterate_batches(data, batch_size, device=dev):
            for i, logits in enumerate(model(x)):
                correct[i] += (logits.argmax(dim=1) == y).sum()
    return (correct.cpu().double() / max(len(data), 1)).tolist()


def _lr_at(cfg: TrainConfig, phase_epochs: int, progress: float) -> float:
    """Learning rate at ``progress`` epochs into a phase of ``phase_epochs`` epochs."""
    warm = min(cfg.warmup_epochs, phase_epochs)
    if warm > 0 and progress < warm:
        return cfg.lr * (progress + 1e-3) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (progress - warm) / max(phase_epochs - warm, 1e-9)
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(frac, 1.0)))


def _phase_name(cfg: TrainConfig, epoch: int, exits_only: bool) -> str:
    if cfg.loss == "eenets":
        return "eenets-v0" if epoch < cfg.eenets_v0_epochs else f"eenets-{cfg.eenets_loss}"
    return "exits" if exits_only else ("backbone" if cfg.two_stage else "joint")


def _make_optimizer(model: MultiExitNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _set_phase(model: MultiExitNet, exits_only: bool) -> None:
    """In the exits-only phase freeze the backbone (stages and final classifier)."""
    for module in [*model.stages, model.exits[-1]]:
        for p in module.parameters():
            p.requires_grad_(not exits_only)
    for head in model.exits[:-1]:
        for p in head.parameters():
            p.requires_grad_(True)


def resume_view(train_config: dict[str, Any]) -> dict[str, Any]:
    """A saved training config as compared for resuming: keys added since it was saved take
    their defaults, and the execution-only keys are left out."""
    full = {**asdict(TrainConfig()), **train_config}
    return {k: v for k, v in full.items() if k not in EXECUTION_KEYS}


def train(
    model: MultiExitNet,
    data: DatasetSplits,
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = True,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train every exit of ``model`` on ``data.train``, validating each epoch on ``data.val``.

    With ``run_dir`` a checkpoint is written atomically after every epoch and the final model is
    saved as ``model.safetensors`` + ``model.json``; with ``resume`` an existing checkpoint there
    is continued (on any device: the device is not part of the compared configuration; the
    precision is). The caller's global RNG state is the same afterwards; the model is left in
    eval mode on ``device``.

    Args:
        device: where to train; the model is moved there (default: where it is).
        on_step: called as ``on_step(epoch, step, steps_per_epoch, loss)``.
        on_epoch: called with each epoch's record (loss, per-exit validation accuracy, seconds,
            threads, device and precision).
    """
    cfg.validate()
    dev = torch.device(device) if device is not None else module_device(model)
    check_precision(cfg.precision, dev)
    if cfg.loss == "eenets" and not model.has_confidence:
        raise ValueError(
            "the eenets loss needs side exits with a learned confidence: build the model with "
            "exit_head='eenets' (model.options.exit_head=eenets)"
        )
    if tuple(data.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"the data's images are {tuple(data.input_shape)} but the model expects "
            f"{tuple(model.input_shape)}; build the model with "
            f"input_shape={tuple(data.input_shape)}"
        )
    if data.num_classes != model.num_classes:
        raise ValueError(f"the data has {data.num_classes} classes, the model {model.num_classes}")
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(model, cfg)
    result = TrainResult()
    start_epoch = 0
    cfg_dict = asdict(cfg)
    if run_dir is not None and resume and (Path(run_dir) / "train_state.json").exists():
        tensors, meta = load_pair(run_dir, "train_state")
        if meta["model_config"] != model.config or resume_view(meta["train_config"]) != resume_view(
            cfg_dict
        ):
            raise CheckpointError(
                f"{run_dir} holds a checkpoint of a different model or training config; "
                "use another run directory or resume=False"
            )
        model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        _load_optimizer(opt, tensors, meta["optimizer"])  # moved to the parameters' device
        start_epoch = meta["epoch"]
        result.history = meta["history"]
        result.seconds = meta["seconds"]
        result.resumed_from_epoch = start_epoch

    aug = AUGMENT_PRESETS[cfg.augment]
    costs = model.costs_at(data.input_shape).path_fractions  # EENets' exit costs (FLOPs)
    n_train = len(data.train)
    steps = max(n_train // cfg.batch_size, 1)
    first_phase = cfg.backbone_epochs if cfg.two_stage else 0
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    where = describe_device(dev)
    with fork_rng(dev):  # per-epoch seeding below; the caller's RNG state comes back after
        for epoch in range(start_epoch, cfg.total_epochs):
            t0 = time.perf_counter()
            exits_only = cfg.two_stage and epoch >= first_phase
            phase_epochs = cfg.epochs if exits_only or not cfg.two_stage else first_phase
            phase_epoch = epoch - first_phase if exits_only else epoch
            if cfg.two_stage and not exits_only:
                weights = loss_weights("final", model.num_exits)
            else:
                weights = loss_weights(cfg.loss_weights, model.num_exits, phase_epoch, phase_epochs)
            if exits_only:  # the backbone's own exit is frozen: only the side exits learn
                weights = [*weights[:-1], 0.0]
            _set_phase(model, exits_only)
            model.train()
            if exits_only:
                for module in model.stages:
                    module.eval()  # keep the frozen backbone's batch-norm statistics
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            seed_rng(cfg.seed * 7_919 + epoch, dev)  # dropout
            total_loss = torch.zeros((), dtype=torch.float64, device=dev)
            seen = 0
            lr = cfg.lr
            batches = iterate_batches(data.train, cfg.batch_size, g, drop_last=True, device=dev)
            for step, (x, y) in enumerate(batches):
                lr = _lr_at(cfg, phase_epochs, phase_epoch + step / steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                x = augment_batch(x, aug, g).contiguous(memory_format=memory_format)
                with autocast(dev, cfg.precision):
                    if cfg.loss == "eenets":
                        version = "v0" if epoch < cfg.eenets_v0_epochs else cfg.eenets_loss
                        loss, _, _ = eenets_loss(
                            model.forward_outputs(x), y, costs, version, cfg.eenets_lambda
                        )
                    else:
                        loss = joint_loss(model(x), y, weights, cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.detach().double() * len(y)
                seen += len(y)
                if on_step is not None:
                    on_step(epoch, step, steps, float(loss.detach()))
            val_acc = (
                evaluate_exits(model, data.val, cfg.eval_batch_size, dev) if len(data.val) else []
            )
            seconds = time.perf_counter() - t0
            result.seconds += seconds
            record = {
                "epoch": epoch + 1,
                "phase": _phase_name(cfg, epoch, exits_only),
                "train_loss": float(total_loss) / max(seen, 1),
                "val_accuracy": val_acc,
                "lr_end": lr,
                "seconds": seconds,
                "threads": torch.get_num_threads(),
                "device": where,
                "precision": cfg.precision,
                "channels_last": cfg.channels_last,
            }
            result.history.append(record)
            if run_dir is not None:  # checkpoint first: an interruption in on_epoch loses nothing
                model_t = {f"model.{k}": v for k, v in model.state_dict().items()}
                opt_t, opt_meta = _optimizer_tensors(opt)
                save_pair(
                    run_dir,
                    "train_state",
                    {**model_t, **opt_t},
                    {
                        "epoch": epoch + 1,
                        "history": result.history,
                        "seconds": result.seconds,
                        "model_config": model.config,
                        "train_config": cfg_dict,
                        "optimizer": opt_meta,
                    },
                )
            if on_epoch is not None:
                on_epoch(record)
    _set_phase(model, False)
    model.eval()
    if run_dir is not None:
        save_model(
            run_dir,
            model,
            {
                "train_config": cfg_dict,
                "history": result.history,
                "train_seconds": result.seconds,
                "dataset": data.name,
                # what the last epoch ran on (a resumed run may have changed it; see history)
                "device": result.history[-1].get("device") if result.history else where,
                "precision": cfg.precision,
            },
        )
    return result

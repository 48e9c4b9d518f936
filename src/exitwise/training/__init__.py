"""Training: the joint loss and its per-exit weights, augmentation, the trainer, safe checkpoints.

``iterate_batches`` lives in :mod:`exitwise.data` (re-exported here for older imports).
"""

from exitwise.training.checkpoint import (
    CheckpointError,
    LoadedModel,
    load_model,
    save_model,
)
from exitwise.training.trainer import (
    TrainConfig,
    TrainResult,
    evaluate_exits,
    iterate_batches,
    train,
)
from exitwise.training.weights import LOSS_WEIGHTS, joint_loss, loss_weights

load_checkpoint = load_model

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "load_model",
    "load_checkpoint",
    "save_model",
    "TrainConfig",
    "TrainResult",
    "evaluate_exits",
    "iterate_batches",
    "train",
    "LOSS_WEIGHTS",
    "joint_loss",
    "loss_weights",
]

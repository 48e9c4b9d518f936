"""One way to run a module in eval mode and hand it back exactly as it was found."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

from torch import nn

__all__ = ["eval_mode"]

M = TypeVar("M", bound=nn.Module)


@contextlib.contextmanager
def eval_mode(module: M) -> Iterator[M]:
    """Put ``module`` and every submodule in eval mode; restore each one's flag on exit.

    Mixed modes survive (e.g. a frozen batch norm kept in eval inside a model in training), also
    when the body raises. Every evaluation in exitwise (routing, collecting outputs, measuring
    costs, attacks, the studies) runs inside it, as torchattacks' attacks do.

    Example:
        >>> with eval_mode(model):
        ...     logits = model(x)
    """
    modes = [(m, m.training) for m in module.modules()]
    if any(training for _, training in modes):  # walking eval() is skipped when already in eval
        module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            if m.training != training:  # Module.__setattr__ is slow: set only what changed
                m.training = training

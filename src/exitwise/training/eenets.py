"""EENets' cost-aware training losses (Demir & Akbas; reference: eksuas/eenets.pytorch).

With ``p_i`` the softmax of exit ``i``, ``c_i`` its learned confidence and ``k_i`` the cost of
leaving there (FLOPs of the exit path / FLOPs of the plain backbone, from the cost account),
the cumulative prediction and cost are mixed from the deepest exit back:

    P_n = p_n,  K_n = k_n
    P_i = c_i * p_i + (1 - c_i) * P_{i+1}
    K_i = c_i * k_i + (1 - c_i) * K_{i+1}

* ``v0``: sum of every exit's NLL (no cost; the first stage of two-stage training);
* ``v1``: NLL(P_0) + lambda * mean(K_0);
* ``v2``: sum over i of [NLL(P_i) + lambda * mean(K_i)].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from exitwise.nets import ExitOutput

__all__ = ["EENETS_LOSSES", "eenets_loss"]

EENETS_LOSSES = ("v0", "v1", "v2")
_EPS = 1e-12


def _nll(probs: Tensor, target: Tensor) -> Tensor:
    return F.nll_loss(torch.log(probs.clamp_min(_EPS)), target)


def eenets_loss(
    outputs: Sequence[ExitOutput],
    target: Tensor,
    costs: Sequence[float],
    version: str = "v1",
    lambda_cost: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The EENets loss of one batch.

    Args:
        outputs: every exit's output, shallow to deep; side exits must carry a confidence.
        target: ``(B,)`` class indices.
        costs: per-exit cost ``k_i`` (fractions of the plain backbone's FLOPs).
        version: ``v0``, ``v1`` or ``v2``.
        lambda_cost: weight of the expected cost.

    Returns:
        ``(total, prediction part, cost part)``; the parts are 0 for ``v0``'s cost and ``v2``.
    """
    if version not in EENETS_LOSSES:
        raise ValueError(f"EENets loss must be one of {EENETS_LOSSES}, got {version!r}")
    if len(costs) != len(outputs):
        raise ValueError(f"one cost per exit expected, got {len(costs)} for {len(outputs)} exits")
    probs = [torch.softmax(o.logits, dim=1) for o in outputs]
    zero = probs[0].new_zeros(())
    if version == "v0":
        pred_loss = sum((_nll(p, target) for p in probs), zero)
        return pred_loss, pred_loss, zero
    confs = []
    for i, o in enumerate(outputs[:-1]):
        if o.confidence is None:
            raise ValueError(
                f"exit {i} has no confidence output; EENets losses v1/v2 need exit_head='eenets'"
            )
        confs.append(o.confidence.reshape(-1, 1).to(probs[0].dtype))
    cum_pred = probs[-1]
    cum_cost = probs[0].new_full((probs[0].shape[0], 1), float(costs[-1]))
    total = zero
    if version == "v2":
        total = _nll(cum_pred, target) + lambda_cost * cum_cost.mean()
    for i in range(len(outputs) - 2, -1, -1):
        c = confs[i]
        cum_pred = c * probs[i] + (1 - c) * cum_pred
        cum_cost = c * float(costs[i]) + (1 - c) * cum_cost
        if version == "v2":
            total = total + _nll(cum_pred, target) + lambda_cost * cum_cost.mean()
    if version == "v2":
        return total, zero, zero
    pred_loss, cost_loss = _nll(cum_pred, target), cum_cost.mean()
    return pred_loss + lambda_cost * cost_loss, pred_loss, cost_loss

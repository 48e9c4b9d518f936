"""Adversarial attacks on multi-exit networks (seed 000, Fig. 6), torchattacks-style.

``adv = Attack(model, eps, target=...)(images, labels)``: images and adversarial images are
pixel-space batches in [0, 1] (any normalisation lives inside the model). A call

* puts the model in eval mode and afterwards restores the mode it found on every submodule, also
  when the attack raises (:func:`exitwise.nets.eval_mode`);
* runs where the images are (the model must be on their device);
* never mutates ``images``;
* takes gradients with :func:`torch.autograd.grad` with respect to the input only, so no
  parameter ``.grad`` is created or changed.

What is attacked is chosen by ``target`` and computed in one place, :meth:`Attack.loss_logits`
(which calls the model through :meth:`Attack.exit_outputs`):

* an ``int``: that exit's prediction;
* ``"final"``: the last exit, i.e. what a conventional attacker of the backbone does;
* ``"all"``: every exit at once (an adaptive attacker): the loss is the sum of the exits'
  cross-entropies;
* ``"routed"``: the routed early-exit prediction, through a differentiable surrogate of the
  max-probability exit decision (:func:`routed_log_probs`).

Attacks: :class:`FGSM` (Goodfellow et al., ICLR 2015), :class:`BIM` (Kurakin et al., ICLR 2017
workshop), :class:`PGD` (Madry et al., ICLR 2018; L-inf or L2), :class:`DeepFool`
(Moosavi-Dezfooli et al., CVPR 2016; batched over samples and candidate classes) and
:class:`Slowdown` (DeepSloth, Hong et al., ICLR 2021), which attacks the efficiency of early exit
rather than its accuracy. :func:`attack_success_rate` measures the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exitwise.nets.modes import eval_mode
from exitwise.nets.multi_exit import MultiExitNet
from exitwise.outputs import ExitOutput, as_exit_output

__all__ = [
    "TARGETS",
    "Attack",
    "FGSM",
    "BIM",
    "PGD",
    "DeepFool",
    "Slowdown",
    "routed_log_probs",
    "attack_success_rate",
]

#: The named targets; an ``int`` exit index is accepted too.
TARGETS = ("final", "all", "routed")


def routed_log_probs(
    outputs: Sequence[ExitOutput],
    threshold: float | Sequence[float] = 0.9,
    temperature: float = 0.05,
) -> Tensor:
    """Log of the differentiable mixture that stands in for max-probability routing.

    With ``p_i = softmax(logits_i)``, ``s_i = sigmoid((max_c p_i[c] - threshold_i) / temperature)``
    for the side exits (the soft "leaves at exit i" decision) and ``s_last = 1``, the mixture

        ``P = sum_i [prod_{j<i} (1 - s_j)] s_i p_i``

    tends to the routed model's class distribution as ``temperature -> 0``. It is computed in
    log space (``logsigmoid`` and ``logsumexp``), so it stays finite for confident exits.

    Args:
        outputs: the exits' outputs, shallow to deep.
        threshold: the max-probability threshold, one value or one per side exit.
        temperature: sharpness of the soft decision (> 0).

    Returns:
        ``log P``.

    Shape:
        every ``outputs[i].logits`` ``(B, K)``; output ``(B, K)``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logps = [F.log_softmax(o.logits, dim=1) for o in outputs]
    n_side = len(logps) - 1
    if isinstance(threshold, (int, float)):
        thresholds = [float(threshold)] * n_side
    else:
        thresholds = [float(t) for t in threshold]
        if len(thresholds) != n_side:
            raise ValueError(
                f"threshold needs one value per side exit ({n_side}), got {len(thresholds)}"
            )
    log_stay = torch.zeros_like(logps[-1][:, 0])  # log prod_{j<i} (1 - s_j)
    terms = []
    for logp, thr in zip(logps[:-1], thresholds, strict=True):
        a = (logp.amax(dim=1).exp() - thr) / temperature
        terms.append((log_stay + F.logsigmoid(a)).unsqueeze(1) + logp)
        log_stay = log_stay + F.logsigmoid(-a)
    terms.append(log_stay.unsqueeze(1) + logps[-1])
    return torch.logsumexp(torch.stack(terms), dim=0)


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class Attack:
    """Base class: the call protocol, the target selection and the loss.

    Subclasses implement :meth:`forward`; they get the loss to maximise from :meth:`objective`
    and its input gradient from :meth:`input_grad`.

    Args:
        model: a :class:`~exitwise.nets.multi_exit.MultiExitNet` (or any module whose output is
            a tensor of logits, a list of them, or which has ``forward_outputs``), taking
            pixel-space inputs in [0, 1].
        eps: the perturbation budget (radius of the L-inf or L2 ball), or ``None`` for attacks
            without one (DeepFool).
        target: an exit index, ``"final"``, ``"all"`` or ``"routed"`` (see the module doc).
        threshold: the max-probability exit threshold the ``"routed"`` surrogate models (one
            value, or one per side exit).
        temperature: sharpness of the ``"routed"`` surrogate's soft exit decision.

    Shape:
        images ``(B, C, H, W)`` in [0, 1], labels ``(B,)`` int64; output ``(B, C, H, W)`` in
        [0, 1].
    """

    #: Whether the attack uses labels; when it does and none are given, the model's clean
    #: prediction (under ``target``) stands in for them.
    needs_labels = True

    def __init__(
        self,
        model: nn.Module,
        eps: float | None,
        target: int | str = "final",
        threshold: float | Sequence[float] = 0.9,
        temperature: float = 0.05,
    ) -> None:
        if eps is not None and (not math.isfinite(float(eps)) or float(eps) < 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise TypeError(f"target must be an exit index or one of {TARGETS}, got {target!r}")
        if isinstance(target, str) and target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; use an exit index or one of {TARGETS}")
        num_exits = getattr(model, "num_exits", None)
        if isinstance(target, int) and num_exits is not None:
            if not -num_exits <= target < num_exits:
                raise ValueError(f"target exit {target} out of range for {num_exits} exits")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.eps = None if eps is None else float(eps)
        self.target = target
        self.threshold = threshold
        self.temperature = float(temperature)

    # -- the one place the model is called --------------------------------------------------
    def exit_outputs(self, x: Tensor) -> list[ExitOutput]:
        """Every exit's output on ``x`` (this is where the model runs).

        Shape:
            ``x`` ``(B, C, H, W)`` in [0, 1]; one ``ExitOutput`` with ``(B, K)`` logits per exit.
        """
        fo = getattr(self.model, "forward_outputs", None)
        if callable(fo):
            return list(fo(x))
        out = self.model(x)
        if isinstance(out, Tensor):
            return [ExitOutput(out)]
        return [as_exit_output(o) for o in out]

    def loss_logits(self, x: Tensor) -> Tensor:
        """Per-class log-scores of what ``target`` attacks; the loss is their negative at the label.

        * exit ``i`` / ``"final"``: ``log_softmax`` of that exit's logits (its cross-entropy is
          the exit's cross-entropy; class differences equal logit differences);
        * ``"all"``: the sum over exits of ``log_softmax`` (minus its value at the label is the
          sum of the exits' cross-entropies; its argmax is the geometric-mean ensemble);
        * ``"routed"``: :func:`routed_log_probs` (its value at the label is the log-likelihood
          of the routed surrogate).

        Shape:
            ``x`` ``(B, C, H, W)`` in [0, 1]; output ``(B, K)``.
        """
        outs = self.exit_outputs(x)
        if self.target == "all":
            return torch.stack([F.log_softmax(o.logits, dim=1) for o in outs]).sum(dim=0)
        if self.target == "routed":
            return routed_log_probs(outs, self.threshold, self.temperature)
        idx = -1 if self.target == "final" else int(self.target)
        if not -len(outs) <= idx < len(outs):
            raise ValueError(f"target exit {idx} out of range for {len(outs)} exits")
        return F.log_softmax(outs[idx].logits, dim=1)

    def objective(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Per-sample loss the attack maximises: ``-loss_logits(x)[label]``.

        Shape:
            ``x`` ``(B, C, H, W)`` in [0, 1], ``labels`` ``(B,)``; output ``(B,)``.
        """
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs labels")
        return F.nll_loss(self.loss_logits(x), labels, reduction="none")

    def input_grad(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Gradient of ``objective(x, labels).sum()`` with respect to ``x`` only.

        Shape:
            ``(B, C, H, W)`` -> ``(B, C, H, W)``.
        """
        x = x.detach().requires_grad_(True)
        loss = self.objective(x, labels).sum()
        (grad,) = torch.autograd.grad(loss, x)
        return grad.detach()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The argmax of :meth:`loss_logits` (the attacked prediction), ``(B,)`` int64."""
        return self.loss_logits(x).argmax(dim=1)

    # -- the call protocol ------------------------------------------------------------------
    def forward(self, images: Tensor, labels: Tensor | None, **kwargs: Any) -> Any:
        """The attack proper, on validated, detached images (model already in eval mode)."""
        raise NotImplementedError

    def __call__(self, images: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Any:
        """Attack ``images`` (pixel space, [0, 1]); returns the adversarial images.

        Shape:
            images ``(B, C, H, W)`` in [0, 1], labels ``(B,)``; output ``(B, C, H, W)`` in
            [0, 1], same dtype and device.
        """
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"images must be a floating-point batch (B, C, H, W) in [0, 1], got shape "
                f"{tuple(images.shape)} and dtype {images.dtype}"
            )
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ValueError(
                "images must be in pixel space [0, 1] (normalisation belongs inside the model), "
                f"got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]"
            )
        if labels is not None:
            labels = labels.detach().to(device=images.device, dtype=torch.int64)
            if labels.shape != images.shape[:1]:
                raise ValueError(
                    f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
                )
        x = images.detach().clone()
        with eval_mode(self.model), torch.enable_grad():
            if self.needs_labels and labels is None:
                labels = self.predict(x)
            return self.forward(x, labels, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps}, target={self.target!r})"


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., "Explaining and Harnessing Adversarial
    Examples", ICLR 2015): ``x + eps * sign(grad_x loss)``, clipped to [0, 1].

    Args:
        model, eps, target, threshold, temperature: see :class:`Attack`; ``eps`` is the L-inf
            budget in pixel units (e.g. 8/255).

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1].
    """

    eps: float  # a budget is required here (the base class allows None, for DeepFool)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        target: int | str = "final",
        threshold: float | Sequence[float] = 0.9,
        temperature: float = 0.05,
    ) -> None:
        super().__init__(model, eps, target, threshold, temperature)

    def forward(self, images: Tensor, labels: Tensor | None, **kwargs: Any) -> Tensor:
        if self.eps == 0:
            return images.clone()
        grad = self.input_grad(images, labels)
        return (images + self.eps * grad.sign()).clamp_(0.0, 1.0).detach()


class PGD(Attack):
    """Projected Gradient Descent (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018), in the L-inf or the L2 ball.

    From an optional random start inside the ball, ``steps`` ascent steps of size ``alpha``
    (sign of the gradient for L-inf, the per-sample normalised gradient for L2), each followed by
    the projection on the ball of radius ``eps`` around the clean image and clipping to [0, 1].

    Args:
        model, eps, target, threshold, temperature: see :class:`Attack`.
        norm: ``"linf"`` or ``"l2"`` (the L2 norm is per sample, over all pixels and channels).
        steps: number of ascent steps.
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: start from a uniform point of the L-inf ball, or, for L2, a uniformly
            random direction at a radius drawn uniformly in [0, eps].
        seed: seeds the random start on every call (reproducible, and the same on every device:
            it is drawn on the CPU); the global RNG is not touched.
        generator: a CPU ``torch.Generator`` the random start draws from instead (advanced on
            every call). With neither, the global RNG is used, as PyTorch's own random
            functions do.

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1].
    """

    eps: float  # a budget is required here (the base class allows None, for DeepFool)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        norm: str = "linf",
        steps: int = 10,
        alpha: float | None = None,
        random_start: bool = True,
        target: int | str = "final",
        threshold: float | Sequence[float] = 0.9,
        temperature: float = 0.05,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, target, threshold, temperature)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.norm = norm
        self.steps = int(steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else float(alpha)
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.random_start = random_start
        if seed is not None and generator is not None:
            raise ValueError("give a seed or a generator, not both")
        if generator is not None and torch.device(generator.device).type != "cpu":
            raise ValueError(
                f"the generator must be a CPU generator (random starts are drawn on the CPU and "
                f"moved to the images' device), got one on {generator.device}"
            )
        self.seed = seed
        self.generator = generator

    def _project(self, adv: Tensor, x0: Tensor) -> Tensor:
        eps = self.eps
        if self.norm == "linf":
            adv = torch.minimum(torch.maximum(adv, x0 - eps), x0 + eps)
        else:
            delta = adv - x0
            n = _flat_norm(delta)
            factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
            adv = x0 + delta * _per_sample(factor, delta)
        return adv.clamp_(0.0, 1.0)

    def _start(self, x0: Tensor) -> Tensor:
        if not self.random_start:
            return x0.clone()
        g = self.generator
        if self.seed is not None:
            g = torch.Generator().manual_seed(self.seed)
        # Drawn on the CPU, so one seed gives one start on every device.
        if self.norm == "linf":
            u = torch.rand(x0.shape, generator=g, dtype=x0.dtype)
            delta = (2.0 * u - 1.0) * self.eps
        else:
            d = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
            d = d / _per_sample(_flat_norm(d).clamp_min(1e-12), d)
            r = torch.rand(x0.shape[0], generator=g, dtype=x0.dtype)
            delta = d * _per_sample(r * self.eps, d)
        return self._project(x0 + delta.to(x0.device), x0)

    def _step(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return self.alpha * grad.sign()
        n = _per_sample(_flat_norm(grad).clamp_min(1e-12), grad)
        return self.alpha * grad / n

    def forward(self, images: Tensor, labels: Tensor | None, **kwargs: Any) -> Tensor:
        x0 = images
        if self.eps == 0:
            return x0.clone()
        adv = self._start(x0)
        for _ in range(self.steps):
            grad = self.input_grad(adv, labels)
            adv = self._project(adv + self._step(grad), x0)
        return adv.detach()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps}, norm={self.norm!r}, steps={self.steps}, "
            f"alpha={self.alpha:.4g}, target={self.target!r})"
        )


class BIM(PGD):
    """Basic Iterative Method (Kurakin et al., "Adversarial Examples in the Physical World",
    ICLR 2017 workshop): iterated FGSM steps of size ``alpha`` from the clean image, each clipped
    to the L-inf ball of radius ``eps`` and to [0, 1]; L-inf PGD without random start.

    Args:
        model, eps, target, threshold, temperature: see :class:`Attack`.
        steps: number of steps.
        alpha: step size; default ``2.5 * eps / steps``.

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        alpha: float | None = None,
        target: int | str = "final",
        threshold: float | Sequence[float] = 0.9,
        temperature: float = 0.05,
    ) -> None:
        super().__init__(
            model,
            eps,
            norm="linf",
            steps=steps,
            alpha=alpha,
            random_start=False,
            target=target,
            threshold=threshold,
            temperature=temperature,
        )


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep
    neural networks", CVPR 2016): the smallest L2 step across the nearest linearised decision
    boundary, repeated until the prediction changes. Untargeted, no ``eps``.

    At each iteration, for every sample still classified as its clean class ``k0`` and every
    candidate class ``k`` (the ``num_candidates`` top classes of the clean prediction), with
    ``f'_k = f_k - f_k0`` and ``w'_k = grad f_k - grad f_k0``, the step is
    ``r = (|f'_l| / ||w'_l|| + 1e-4) w'_l / ||w'_l||`` for ``l = argmin_k |f'_k| / ||w'_k||``;
    the steps add up to ``r_tot`` and the image is ``clip(x0 + (1 + overshoot) r_tot, 0, 1)``
    (as in the authors' reference code).

    The attack is batched: each iteration runs the model once on the samples not yet fooled and
    takes the input gradients of all their candidate logits in one vectorised backward pass
    (``torch.autograd.grad(..., is_grads_batched=True)``). This relies on the samples being
    independent in eval mode (true for batch norm with running statistics). Fooled samples are
    frozen. The gradients take ``num_candidates`` times the batch's input memory.

    ``target`` selects the scores attacked (:meth:`Attack.loss_logits`); for a single exit their
    differences are the logit differences, so the result is that of DeepFool on the logits.

    Args:
        model, target, threshold, temperature: see :class:`Attack`.
        num_candidates: how many of the top clean classes are candidate targets (including the
            clean class itself).
        overshoot: the final push past the boundary.
        max_iter: the maximum number of iterations per sample.

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1] and, with
        ``return_iterations=True``, also ``(B,)`` int64 iterations taken per sample.
    """

    needs_labels = False

    def __init__(
        self,
        model: nn.Module,
        target: int | str = "final",
        num_candidates: int = 10,
        overshoot: float = 0.02,
        max_iter: int = 50,
        threshold: float | Sequence[float] = 0.9,
        temperature: float = 0.05,
    ) -> None:
        super().__init__(model, None, target, threshold, temperature)
        if num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if overshoot < 0:
            raise ValueError(f"overshoot must be >= 0, got {overshoot}")
        self.num_candidates = int(num_candidates)
        self.overshoot = float(overshoot)
        self.max_iter = int(max_iter)

    @overload
    def __call__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        return_iterations: Literal[False] = False,
        **kwargs: Any,
    ) -> Tensor: ...

    @overload
    def __call__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        return_iterations: Literal[True],
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]: ...

    def __call__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        return_iterations: bool = False,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attack ``images`` ([0, 1]); ``labels`` are ignored (the clean prediction is used).

        Returns:
            The adversarial images, and with ``return_iterations`` the ``(B,)`` number of
            iterations each sample took.
        """
        return super().__call__(images, labels, return_iterations=return_iterations, **kwargs)

    def forward(
        self, images: Tensor, labels: Tensor | None, return_iterations: bool = False, **kw: Any
    ) -> Tensor | tuple[Tensor, Tensor]:
        x0 = images
        b = x0.shape[0]
        iters = torch.zeros(b, dtype=torch.int64, device=x0.device)
        adv = x0.clone()
        if b == 0:
            return (adv, iters) if return_iterations else adv
        with torch.no_grad():
            scores0 = self.loss_logits(x0)
        k = min(self.num_candidates, scores0.shape[1])
        if k < 2:
            return (adv, iters) if return_iterations else adv
        cand = scores0.topk(k, dim=1).indices  # (B, k); column 0 is the clean class
        orig = cand[:, 0]
        r_tot = torch.zeros_like(x0)
        active = torch.arange(b, device=x0.device)
        eye = torch.eye(k, dtype=x0.dtype, device=x0.device)
        for _ in range(self.max_iter):
            xa = adv[active].requires_grad_(True)
            scores = self.loss_logits(xa)
            still = scores.argmax(dim=1) == orig[active]
            if not bool(still.any()):
                break
            f = scores.gather(1, cand[active])  # (A, k)
            grads = torch.autograd.grad(
                f,
                xa,
                grad_outputs=eye.unsqueeze(1).expand(k, f.shape[0], k),
                is_grads_batched=True,
            )[0]  # (k, A, C, H, W)
            rows = active[still]
            g = grads[:, still].transpose(0, 1).flatten(2)  # (S, k, D)
            fs = f.detach()[still]
            w = g[:, 1:] - g[:, :1]  # (S, k-1, D)
            fd = (fs[:, 1:] - fs[:, :1]).abs()  # (S, k-1)
            wn = w.norm(dim=2)
            pert = fd / wn.clamp_min(1e-12)
            best = pert.argmin(dim=1)
            pick = torch.arange(best.shape[0], device=x0.device)
            w_l, wn_l, pert_l = w[pick, best], wn[pick, best], pert[pick, best]
            r_i = (pert_l + 1e-4).unsqueeze(1) * w_l / wn_l.clamp_min(1e-12).unsqueeze(1)
            r_tot[rows] += r_i.view(-1, *x0.shape[1:])
            adv[rows] = (x0[rows] + (1.0 + self.overshoot) * r_tot[rows]).clamp(0.0, 1.0)
            iters[rows] += 1
            active = rows
        adv = adv.detach()
        return (adv, iters) if return_iterations else adv

    def __repr__(self) -> str:
        return (
            f"DeepFool(target={self.target!r}, num_candidates={self.num_candidates}, "
            f"overshoot={self.overshoot}, max_iter={self.max_iter})"
        )


class Slowdown(PGD):
    """DeepSloth slowdown attack (Hong et al., "A Panda? No, It's a Sloth: Slowdown Attacks on
    Adaptive Multi-Exit Neural Network Inference", ICLR 2021).

    An L-inf PGD perturbation (radius ``eps``) that makes every side exit unsure, so that samples
    stop leaving early and the routed model spends its full cost. It minimises, over the side
    exits, ``sum_i KL(U || softmax_i)`` (``U`` the uniform distribution; equivalently it
    maximises their cross-entropy to ``U``); for exits with a learned confidence (EENets) it also
    maximises ``log(1 - confidence_i)``, weighted by ``confidence_weight``. Labels are not
    needed (they are accepted and ignored); ``target`` does not apply.

    Args:
        model: see :class:`Attack`; needs at least one side exit.
        eps: L-inf budget (pixel units).
        steps, alpha, random_start, seed, generator: see :class:`PGD`.
        exits: the side exits to attack (default: all of them).
        confidence_weight: weight of the learned-confidence term.

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1].
    """

    needs_labels = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 20,
        alpha: float | None = None,
        random_start: bool = True,
        seed: int | None = None,
        exits: Sequence[int] | None = None,
        confidence_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            model,
            eps,
            norm="linf",
            steps=steps,
            alpha=alpha,
            random_start=random_start,
            seed=seed,
            generator=generator,
        )
        num_exits = getattr(model, "num_exits", None)
        if num_exits is not None and num_exits < 2:
            raise ValueError("Slowdown needs a model with at least one side exit")
        self.exits = None if exits is None else [int(e) for e in exits]
        self.confidence_weight = float(confidence_weight)

    def objective(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """``-sum_i KL(U || softmax_i) + w * sum_i log(1 - conf_i)`` over the side exits.

        Shape:
            ``x`` ``(B, C, H, W)`` in [0, 1]; output ``(B,)``.
        """
        outs = self.exit_outputs(x)
        if len(outs) < 2:
            raise ValueError("Slowdown needs a model with at least one side exit")
        chosen = range(len(outs) - 1) if self.exits is None else self.exits
        loss = x.new_zeros(x.shape[0])
        for i in chosen:
            if not 0 <= i < len(outs) - 1:
                raise ValueError(f"exit {i} is not a side exit of a {len(outs)}-exit model")
            out = outs[i]
            logp = F.log_softmax(out.logits, dim=1)
            kl = -math.log(logp.shape[1]) - logp.mean(dim=1)  # KL(U || p)
            loss = loss - kl
            if out.confidence is not None and self.confidence_weight:
                conf = out.confidence.to(loss.dtype).clamp(0.0, 1.0 - 1e-6)
                loss = loss + self.confidence_weight * torch.log1p(-conf)
        return loss

    def __repr__(self) -> str:
        return f"Slowdown(eps={self.eps}, steps={self.steps}, alpha={self.alpha:.4g})"


@torch.no_grad()
def attack_success_rate(
    model: nn.Module,
    x_adv: Tensor,
    labels: Tensor,
    exit_idx: int = -1,
    policy: Any | None = None,
) -> float:
    """Fraction of ``x_adv`` misclassified (untargeted success rate).

    Args:
        model: the multi-exit network (run in eval mode; its mode is restored).
        x_adv: adversarial images in [0, 1].
        labels: the true classes.
        exit_idx: which exit's prediction counts (default: the last).
        policy: when given (an :class:`~exitwise.policies.ExitPolicy`), the routed prediction
            of :func:`exitwise.routing.route` counts instead of ``exit_idx``.

    Shape:
        ``x_adv`` ``(B, C, H, W)`` in [0, 1], ``labels`` ``(B,)``.
    """
    if x_adv.shape[0] != labels.shape[0]:
        raise ValueError(f"got {x_adv.shape[0]} images but {labels.shape[0]} labels")
    if x_adv.shape[0] == 0:
        return 0.0
    if policy is not None:
        from exitwise.routing import route

        if not isinstance(model, MultiExitNet):
            raise TypeError(
                f"a routed success rate needs a MultiExitNet, got {type(model).__name__}; "
                "leave policy=None to score one exit"
            )
        pred = route(model, x_adv, policy).prediction
    else:
        with eval_mode(model):
            out = model(x_adv)
        logits = out if isinstance(out, Tensor) else as_exit_output(out[exit_idx]).logits
        pred = logits.argmax(dim=1)
    return float((pred != labels.to(pred.device)).double().mean())

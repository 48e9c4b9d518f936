"""Devices and numeric precision (floor 1): which accelerator a run uses and how it is named.

* :func:`resolve_device` turns a configured name (``auto``, ``cpu``, ``cuda``, ``cuda:1``,
  ``mps``) into a :class:`torch.device`, refusing a device this machine does not have;
* :func:`describe_device` names it for records (``cuda:0 (NVIDIA H200)``, ``cpu``);
* :func:`check_precision` and :func:`autocast` handle ``fp32`` / ``bf16`` training;
* :func:`fork_rng` and :func:`seed_rng` let library code seed the generators a computation draws
  from (CPU and the device's) and hand the caller's state back untouched.

bf16 runs on CUDA devices that support it and, for testing, on the CPU (PyTorch's CPU autocast is
exact in its semantics but usually slower than fp32 on CPUs without AMX / AVX512-BF16). On MPS it
is allowed when a bf16 matmul works there.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "DEVICE_NAMES",
    "PRECISIONS",
    "resolve_device",
    "describe_device",
    "module_device",
    "supports_bf16",
    "check_precision",
    "autocast",
    "fork_rng",
    "seed_rng",
]

#: What a config's ``device`` may say (``cuda:N`` picks one GPU).
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
#: Training precisions: plain float32, or bfloat16 autocast in the forward pass and the loss.
PRECISIONS = ("fp32", "bf16")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` a configured name stands for on this machine.

    ``auto`` is ``cuda`` when a GPU is visible, else ``mps`` when available, else ``cpu``.

    Raises:
        ValueError: for an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        text = str(name)
    elif isinstance(name, str):
        text = name.strip().lower()
    else:
        raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)}, got {name!r}")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind not in DEVICE_NAMES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(
            f"unknown device {name!r}; use one of {', '.join(DEVICE_NAMES)} (or cuda:N)"
        )
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise ValueError(
                "device 'mps' was asked for but MPS is not available on this machine; "
                "use device=auto or device=cpu"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {text!r} was asked for but CUDA is not available on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
            "use device=auto or device=cpu"
        )
    i = int(index) if index else torch.cuda.current_device()
    if i >= torch.cuda.device_count():
        raise ValueError(
            f"device {text!r} was asked for but this machine has {torch.cuda.device_count()} "
            f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device("cuda", i)


def describe_device(device: torch.device | str) -> str:
    """A name for records: ``cuda:0 (NVIDIA H200)``, ``mps`` or ``cpu``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        i = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return dev.type


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); ``cpu`` for an empty module."""
    first: torch.Tensor | None = next(iter(module.parameters()), None)
    if first is None:
        first = next(iter(module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def supports_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast can run on ``device`` (asked once per device: :func:`autocast`
    checks it on every batch, and on MPS the answer costs a bf16 matmul and a sync)."""
    return _supports_bf16(torch.device(device))


@functools.cache
def _supports_bf16(dev: torch.device) -> bool:
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "mps":
        try:
            a = torch.ones(2, 2, device=dev, dtype=torch.bfloat16)
            (a @ a).cpu()
        except (RuntimeError, TypeError):
            return False
        return True
    return False


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise a ``ValueError`` naming the fix when ``precision`` cannot run on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not supports_bf16(device):
        raise ValueError(
            f"precision bf16 was asked for but {describe_device(device)} cannot run bfloat16 "
            "(CUDA needs compute capability 8.0 or newer, e.g. A100/H100); use precision=fp32"
        )


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision, device)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _accelerator(device: torch.device) -> tuple[str, list[int]] | None:
    if device.type == "cuda":
        return "cuda", [device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "mps":
        return "mps", [0]
    return None


@contextlib.contextmanager
def fork_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Save the CPU generator's state (and ``device``'s) and restore it on exit.

    Library code seeds inside it with :func:`seed_rng`, so a caller's global RNG state is
    the same after the call as before it.
    """
    acc = _accelerator(torch.device(device))
    if acc is None:
        with torch.random.fork_rng(devices=[]):
            yield
    else:
        kind, indices = acc
        with torch.random.fork_rng(devices=indices, device_type=kind):
            yield


def seed_rng(seed: int, device: torch.device | str = "cpu") -> None:
    """Seed the CPU generator and ``device``'s default generator (not every GPU's)."""
    torch.default_generator.manual_seed(seed)
    acc = _accelerator(torch.device(device))
    if acc is not None and acc[0] == "cuda":
        with torch.cuda.device(acc[1][0]):
            torch.cuda.manual_seed(seed)
    elif acc is not None:
        torch.mps.manual_seed(seed)

"""Safe, atomic checkpoints: tensors in safetensors, everything else in JSON. Nothing is unpickled.

A run directory holds
  * ``model.safetensors`` + ``model.json``: the trained model and the config that rebuilds it;
  * ``train_state.safetensors`` + ``train_state.json``: model and optimizer tensors after the last
    finished epoch, with the history, so training resumes where it stopped.
Each pair is written to temporary files and renamed into place; a shared random token in both
files tells a complete pair from a torn one.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from exitwise.atomic import atomic_write
from exitwise.nets import MultiExitNet, build_multi_exit

__all__ = ["save_pair", "load_pair", "save_model", "load_model", "LoadedModel", "CheckpointError"]

MODEL_FORMAT = "exitwise.model/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, torn or does not fit the model."""


def save_pair(
    directory: str | Path, stem: str, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` atomically, tied by a shared token."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(
        d / f"{stem}.safetensors", lambda p: save_file(flat, str(p), metadata={"token": token})
    )
    payload = json.dumps({**meta, "token": token}, indent=2, sort_keys=True)
    atomic_write(d / f"{stem}.json", lambda p: p.write_text(payload))


def load_pair(directory: str | Path, stem: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a pair written by :func:`save_pair`; raise :class:`CheckpointError` if torn."""
    d = Path(directory)
    st, js = d / f"{stem}.safetensors", d / f"{stem}.json"
    if not st.exists() or not js.exists():
        raise CheckpointError(f"no checkpoint {stem!r} in {d}: expected {st.name} and {js.name}")
    try:
        meta = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{js} is not valid JSON: {e}") from None
    with safe_open(str(st), framework="pt") as f:
        token = (f.metadata() or {}).get("token")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    if token is None or token != meta.get("token"):
        raise CheckpointError(
            f"{st.name} and {js.name} in {d} do not belong together (interrupted write?); "
            "delete both or restore them from the same save"
        )
    return tensors, meta


def save_model(
    directory: str | Path, model: MultiExitNet, extra: dict[str, Any] | None = None
) -> None:
    """Save the model's weights and the config that rebuilds it."""
    meta = {"format": MODEL_FORMAT, "model_config": model.config, **(extra or {})}
    save_pair(directory, "model", model.state_dict(), meta)


@dataclass
class LoadedModel:
    model: MultiExitNet
    meta: dict


def load_model(directory: str | Path) -> LoadedModel:
    """Rebuild the model saved in ``directory`` and load its weights (strictly)."""
    tensors, meta = load_pair(directory, "model")
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{directory}: expected format {MODEL_FORMAT!r}, got {meta.get('format')!r}"
        )
    model = build_multi_exit(**meta["model_config"])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: weights do not fit the saved config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return LoadedModel(model.eval(), meta)

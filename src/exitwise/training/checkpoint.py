"""Safe, atomic checkpoints: tensors in safetensors, everything else in JSON. Nothing is unpickled.

A run directory holds
  * ``model.safetensors`` + ``model.json``: the trained model and the config that rebuilds it;
  * ``train_state.safetensors`` + ``train_state.json``: model and optimizer tensors after the last
    finished epoch, with the history, so training resumes where it stopped.
Each pair is written to temporary files and renamed into place; a shared random token in both
files tells a complete pair from a torn one.

Reading checks before it trusts: :func:`check_pair` opens only the JSON and the safetensors header
(a truncated or foreign file is refused there), :func:`check_model_files` also rebuilds the model
from ``model.json`` and compares every saved tensor's name and shape with it, and
:func:`check_model_fits` compares a model with the data it is given. Each refuses with a
one-line :class:`CheckpointError`.
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
from exitwise.data import DatasetSplits
from exitwise.devices import fork_rng
from exitwise.errors import InputError, read_json_object
from exitwise.nets import MultiExitNet, build_multi_exit

__all__ = [
    "save_pair",
    "load_pair",
    "check_pair",
    "save_model",
    "load_model",
    "check_model_files",
    "check_model_fits",
    "LoadedModel",
    "CheckpointError",
]

MODEL_FORMAT = "exitwise.model/1"


class CheckpointError(InputError, RuntimeError):
    """A checkpoint is missing, torn, damaged or does not fit the model or the data."""


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


def _header(st: Path, what: str) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """The token and the tensor shapes of a safetensors file, from its header alone."""
    try:
        with safe_open(str(st), framework="pt") as f:
            token = (f.metadata() or {}).get("token")
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError)
        raise CheckpointError(
            f"{st} is not a readable safetensors file ({e}); expected {what}: "
            "restore it or train again"
        ) from None
    return token, shapes


def check_pair(directory: str | Path, stem: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """Check a pair written by :func:`save_pair` without reading its tensors.

    Returns:
        The JSON metadata and the shape of every tensor, by name.

    Raises:
        CheckpointError: a file is missing, damaged (truncated, not JSON, not safetensors) or
            the two do not belong together (a torn write).
    """
    d = Path(directory)
    st, js = d / f"{stem}.safetensors", d / f"{stem}.json"
    what = f"a checkpoint written by exitwise ({stem})"
    if not st.is_file() or not js.is_file():
        raise CheckpointError(f"no checkpoint {stem!r} in {d}: expected {st.name} and {js.name}")
    try:
        meta = read_json_object(js, what)
    except InputError as e:
        raise CheckpointError(str(e)) from None
    token, shapes = _header(st, what)
    if token is None or token != meta.get("token"):
        raise CheckpointError(
            f"{st.name} and {js.name} in {d} do not belong together (interrupted write?); "
            "delete both or restore them from the same save"
        )
    return meta, shapes


def load_pair(directory: str | Path, stem: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a pair written by :func:`save_pair`; raise :class:`CheckpointError` if torn."""
    meta, _ = check_pair(directory, stem)
    return _read_tensors(Path(directory) / f"{stem}.safetensors", meta), meta


def _read_tensors(st: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The tensors of a pair already checked (:func:`check_pair` gave ``meta``)."""
    try:
        with safe_open(str(st), framework="pt") as f:
            if (f.metadata() or {}).get("token") != meta.get("token"):
                raise CheckpointError(f"{st} changed while it was read; read it again")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no iter
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{st} cannot be read ({e}); restore it or train again") from None
    return tensors


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


def check_model_files(directory: str | Path) -> tuple[MultiExitNet, dict]:
    """Check a saved model cheaply, reading no tensor data: ``model.json`` parses, is ours and
    rebuilds a model, and ``model.safetensors`` (its header) holds exactly that model's tensors,
    with the same shapes.

    Returns:
        The model rebuilt from ``model.json`` (freshly initialised: weights NOT loaded) and the
        metadata.

    Raises:
        CheckpointError: with a one-line message naming the file and what is wrong.
    """
    d = Path(directory)
    if not d.is_dir():
        state = "is a file" if d.exists() else "does not exist"
        raise CheckpointError(f"{d} {state}; expected a run directory written by `exitwise train`")
    if not (d / "model.json").exists():
        raise CheckpointError(
            f"{d} holds no trained model (model.json missing); train one with `exitwise train`"
        )
    meta, shapes = check_pair(d, "model")
    js = d / "model.json"
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{js}: expected format {MODEL_FORMAT!r}, got {meta.get('format')!r}")
    config = meta.get("model_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{js}: expected a model_config object, got {config!r}")
    try:
        with fork_rng("cpu"):  # initialised only to be overwritten: leave the caller's RNG alone
            model = build_multi_exit(**config)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        reason = e.args[0] if e.args else type(e).__name__
        raise CheckpointError(f"{js}: its model_config does not build a model: {reason}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} tensor(s) of another shape, e.g. {k} is {list(shapes[k])} where "
                f"the config builds {list(expected[k])}"
            )
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{d / 'model.safetensors'} does not fit {js}: {'; '.join(parts)}; the two files "
            "come from different models"
        )
    return model, meta


def load_model(directory: str | Path, device: torch.device | str | None = None) -> LoadedModel:
    """Rebuild the model saved in ``directory`` and load its weights (strictly), after
    :func:`check_model_files`; the model is in eval mode, on ``device`` (default: the CPU).

    Checkpoints hold CPU tensors, so a model trained on one device loads on any other. The
    caller's global RNG state is left as it was.
    """
    model, meta = check_model_files(directory)  # reads model.json and the header once
    model.load_state_dict(_read_tensors(Path(directory) / "model.safetensors", meta), strict=True)
    if device is not None:
        model.to(device)
    return LoadedModel(model.eval(), meta)


def check_model_fits(model: MultiExitNet, data: DatasetSplits, where: str | Path = "") -> None:
    """Refuse a model whose input shape or number of classes differs from ``data``'s (it would
    run on any image size and report the FLOPs of another one)."""
    prefix = f"{where}: " if str(where) else ""
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise CheckpointError(
            f"{prefix}the model takes images of shape {list(model.input_shape)} but {data.name}'s "
            f"are {list(data.input_shape)}; use the data it was trained on (see run_config.json)"
        )
    if model.num_classes != data.num_classes:
        raise CheckpointError(
            f"{prefix}the model has {model.num_classes} classes but {data.name} has "
            f"{data.num_classes}; use the data it was trained on (see run_config.json)"
        )

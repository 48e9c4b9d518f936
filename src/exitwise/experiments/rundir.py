"""A run directory, and the checks a verb runs on one before it loads data or writes a file.

A run directory (``output_dir``) holds ``run_config.json`` (the resolved config), the model pair
``model.safetensors`` + ``model.json``, the resume point ``train_state.safetensors`` +
``train_state.json``, and what evaluation and studies write.

* :func:`check_output_dir`: before training into ``cfg.output_dir``; a run already there must
  have been trained with the same data, model and training config (it is resumed, never mixed).
* :func:`check_resume`: once the model is built (the data gives its input shape and
  normalisation), before anything is written: the checkpoints there must be of this model.
* :func:`run_config`: the config of a trained run (its ``run_config.json`` + overrides), after
  checking its model files and that the overrides keep its dataset.

Each raises an :class:`~exitwise.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from exitwise.config import ConfigError, RunConfig, load_config
from exitwise.errors import InputError, read_json_object
from exitwise.nets import MultiExitNet
from exitwise.training.checkpoint import CheckpointError, check_model_files, check_pair
from exitwise.training.trainer import resume_view

__all__ = ["RUN_CONFIG", "check_output_dir", "check_resume", "run_config"]

RUN_CONFIG = "run_config.json"
_SAVED = ("train_state", "model")  # the checkpoint pairs a run directory may hold


def _without_device(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run config without its device: the device is where a command runs, not what the
    run is, so a run trained on a GPU is resumed or evaluated on any machine (the command's
    own device setting, default auto, applies)."""
    return {k: v for k, v in saved.items() if k != "device"}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": leaf}`` (JSON-normalised: tuples become lists)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: json.loads(json.dumps(value))}


def _first_difference(saved: Any, new: Any, prefix: str) -> tuple[str, str, str] | None:
    """The first dotted key whose value differs, with both values as JSON, or None."""
    a, b = _flat(saved, prefix), _flat(new, prefix)
    for key in sorted(set(a) | set(b)):
        if a.get(key, ...) != b.get(key, ...):
            show = [json.dumps(d[key]) if key in d else "(unset)" for d in (a, b)]
            return key, show[0], show[1]
    return None


def _has(directory: Path, stem: str) -> bool:
    return (directory / f"{stem}.json").exists() or (directory / f"{stem}.safetensors").exists()


def check_output_dir(cfg: RunConfig) -> None:
    """Refuse to train into ``cfg.output_dir`` if a run there differs from ``cfg`` (data except
    its root folder, model or training config), or if its files are damaged. Reads JSON and
    safetensors headers only."""
    out = Path(cfg.output_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"output_dir {str(out)!r} is a file; expected a folder")
    fix = f"train with the same config, choose another output_dir, or delete {out}"
    saved_path = out / RUN_CONFIG
    if saved_path.exists():
        saved = read_json_object(saved_path, f"the config of the run trained in {out}")
        try:
            old = load_config(base=_without_device(saved))
        except InputError as e:
            raise ConfigError(f"{saved_path}: {e}") from None
        for section in ("data", "model", "train"):
            a, b = asdict(getattr(old, section)), asdict(getattr(cfg, section))
            if section == "data":
                a.pop("root"), b.pop("root")
            if section == "train":  # execution-only keys (channels_last) may change
                a, b = resume_view(a), resume_view(b)
            diff = _first_difference(a, b, section)
            if diff:
                key, was, now = diff
                raise ConfigError(
                    f"{out} holds a run trained with {key}={was}, but this config has "
                    f"{key}={now}: {fix}"
                )
    for stem in _SAVED:
        if _has(out, stem):
            meta, _ = check_pair(out, stem)
            saved_train = meta.get("train_config")
            if saved_train is None:
                continue
            diff = _first_difference(
                resume_view(saved_train), resume_view(asdict(cfg.train)), "train"
            )
            if diff:
                key, was, now = diff
                raise CheckpointError(
                    f"{out / (stem + '.json')} was trained with {key}={was}, but this config has "
                    f"{key}={now}: {fix}"
                )


def check_resume(out: str | Path, model: MultiExitNet) -> None:
    """Refuse to train ``model`` into ``out`` if a checkpoint there is of another model (another
    architecture, input shape, normalisation or class count)."""
    out = Path(out)
    for stem in _SAVED:
        if out.is_dir() and _has(out, stem):
            meta, _ = check_pair(out, stem)
            diff = _first_difference(meta.get("model_config"), model.config, "model_config")
            if diff:
                key, was, now = diff
                raise CheckpointError(
                    f"{out / (stem + '.json')} is a checkpoint of another model ({key}={was}, "
                    f"this one has {now}; the data decides input_shape, mean, std and "
                    f"num_classes): use another output_dir, or delete {out}"
                )


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The config of the run trained in ``run_dir`` (its ``run_config.json``, then
    ``overrides``), once its model files are checked (:func:`check_model_files`).

    Overrides may change how to evaluate, not what was trained on: the dataset must stay the one
    ``model.json`` records.
    """
    run_dir = Path(run_dir)
    _, meta = check_model_files(run_dir)
    saved_path = run_dir / RUN_CONFIG
    base = None
    if saved_path.exists():
        base = read_json_object(saved_path, "the config of the run, written by `exitwise train`")
        base = _without_device(base)
        try:
            load_config(base=base)
        except InputError as e:
            raise ConfigError(f"{saved_path}: {e}") from None
    cfg = load_config(None, overrides, base=base)
    trained_on = meta.get("dataset")
    if trained_on is not None and trained_on != cfg.data.name:
        raise ConfigError(
            f"{run_dir / 'model.json'} was trained on {trained_on!r}, but the config names "
            f"data.name={cfg.data.name!r}; evaluate a model on the dataset it was trained on"
        )
    return cfg

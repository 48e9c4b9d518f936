"""The main job's steps as functions: load data, build the model, train, evaluate, report."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitwise.atomic import write_json
from exitwise.config import ConfigError, RunConfig
from exitwise.data import DatasetSplits, load_dataset
from exitwise.devices import resolve_device
from exitwise.experiments.efficiency import efficiency_study
from exitwise.experiments.rundir import RUN_CONFIG, check_output_dir, check_resume
from exitwise.nets import MultiExitNet, build_multi_exit, build_preset
from exitwise.results import EfficiencyResult, TrainingInfo
from exitwise.training import TrainResult, load_model, train
from exitwise.training.checkpoint import check_model_fits

__all__ = ["load_data", "build_model", "train_run", "evaluate_run", "write_json", "machine"]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()}"


def _recorded(history: list[dict[str, Any]], key: str) -> Any:
    """The one value of ``key`` over the epoch records, the sorted distinct values, or None."""
    values = sorted({r[key] for r in history if r.get(key) is not None})
    return values[0] if len(values) == 1 else (values or None)


def load_data(cfg: RunConfig) -> DatasetSplits:
    return load_dataset(
        cfg.data.name,
        cfg.data.root,
        seed=cfg.data.seed,
        val_fraction=cfg.data.val_fraction,
        **cfg.data.options,
    )


def build_model(cfg: RunConfig, data: DatasetSplits) -> MultiExitNet:
    kwargs = {
        "input_shape": data.input_shape,
        "mean": list(data.mean),
        "std": list(data.std),
        "seed": cfg.model.seed,
        **cfg.model.options,
    }
    try:
        if cfg.model.preset:
            return build_preset(cfg.model.preset, data.num_classes, **kwargs)
        return build_multi_exit(num_classes=data.num_classes, **kwargs)
    except (TypeError, ValueError, KeyError) as e:  # e.g. exits_after names no block
        raise ConfigError(f"model.options: {e.args[0] if e.args else e}") from None


def train_run(
    cfg: RunConfig,
    data: DatasetSplits | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[MultiExitNet, TrainResult, DatasetSplits]:
    """Train the configured model into ``cfg.output_dir`` (resuming a run found there), on
    ``cfg.device``.

    A run there of another config or model is refused before anything is written; one trained
    on another device is resumed.
    """
    check_output_dir(cfg)
    data = data or load_data(cfg)
    model = build_model(cfg, data)
    out = Path(cfg.output_dir)
    check_resume(out, model)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_CONFIG, cfg.to_dict())
    device = resolve_device(cfg.device)
    result = train(model, data, cfg.train, out, on_step=on_step, on_epoch=on_epoch, device=device)
    return model, result, data


def evaluate_run(
    run_dir: str | Path,
    cfg: RunConfig,
    data: DatasetSplits | None = None,
    progress: Callable[[int], None] | None = None,
    command: str | None = None,
) -> tuple[EfficiencyResult, Path]:
    """Evaluate the model saved in ``run_dir`` on ``cfg.device``; write ``evaluation.json`` and
    the report there. The training's device and precision come from its epoch records.

    Returns:
        The evaluation and the path of ``report.html``.
    """
    from exitwise.report import write_report

    run_dir = Path(run_dir)
    loaded = load_model(run_dir, device=resolve_device(cfg.device))
    data = data or load_data(cfg)
    check_model_fits(loaded.model, data, run_dir)
    name = cfg.model.preset or loaded.model.config.get("backbone", "model")
    evaluation = efficiency_study(
        loaded.model,
        data,
        cfg.eval.policies,
        cfg.eval.tolerance,
        cfg.eval.batch_size,
        progress=progress,
        model_name=name,
        calibrate=cfg.eval.calibrate,
        per_exit=cfg.eval.per_exit,
    )
    history = loaded.meta.get("history") or []
    # Threads, device and precision as recorded by each training epoch (a resumed run may have
    # changed them); runs trained before epochs recorded them say None, not this command's.
    evaluation.training = TrainingInfo(
        seconds=float(loaded.meta.get("train_seconds", 0.0)),
        epochs=len(history),
        device=_recorded(history, "device"),
        machine=machine(),
        threads=_recorded(history, "threads"),
        precision=_recorded(history, "precision"),
        history=history,
    )
    evaluation.command = command
    evaluation.save(run_dir / "evaluation.json")
    report = write_report(evaluation, run_dir)
    return evaluation, report

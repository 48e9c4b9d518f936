"""Typed run configuration: dataclass defaults, YAML files (``yaml.safe_load``) and
``key=value`` command-line overrides with dotted keys. Unknown keys are rejected with near matches.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from exitwise.training.trainer import TrainConfig

__all__ = ["DataConfig", "ModelConfig", "EvalConfig", "RunConfig", "load_config", "ConfigError"]


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    """Which dataset (``exitwise info`` lists them) and how to split it."""

    name: str = "synthetic-signs"
    root: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """A named preset (``branchy_resnet18``, ``mobilenet_v2_3exits``) or none, plus keyword
    arguments of ``exitwise.nets.build_multi_exit`` that override it (input shape, classes and
    normalisation come from the dataset)."""

    preset: str | None = "branchy_resnet18"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class EvalConfig:
    """Which exit policies to sweep, and the accuracy tolerance used to pick a threshold on the
    validation split (0.005 = within 0.5 points of the final exit)."""

    policies: list[str] = field(default_factory=lambda: ["max_probability", "entropy"])
    tolerance: float = 0.005
    batch_size: int = 512


@dataclass
class RunConfig:
    """Everything one ``exitwise run`` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12))
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/signs"
    threads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge(obj: Any, values: dict[str, Any], path: str) -> None:
    """Set ``values`` on dataclass ``obj`` recursively, refusing unknown keys."""
    names = {f.name: f for f in fields(obj)}
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown config key {where!r}.{hint} Valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where!r} is a section; expected a mapping, got {value!r}")
            _merge(current, value, where)
        elif isinstance(current, dict) and isinstance(value, dict):
            _deep_update(current, value)
        else:
            setattr(obj, key, _coerce(value, current, where))


def _deep_update(target: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _coerce(value: Any, current: Any, where: str) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where!r} expects true/false, got {value!r}")
        return value
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where!r} expects a number, got {value!r}")
        return (
            type(current)(value)
            if isinstance(current, float) or float(value).is_integer()
            else value
        )
    if isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{where!r} expects a string, got {value!r}")
    if isinstance(current, list) and not isinstance(value, list):
        return [value]
    return value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cursor = out
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then ``base`` (e.g. a saved run's config), then the YAML file, then
    ``key=value`` overrides (values parsed as YAML)."""
    cfg = RunConfig()
    if base:
        _merge(cfg, base, "")
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p} must hold a mapping at the top level, got {type(loaded).__name__}"
            )
        _merge(cfg, loaded, "")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from None
        _merge(cfg, _nest(key.strip(), value), "")
    cfg.train.validate()
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {cfg.threads}")
    return cfg

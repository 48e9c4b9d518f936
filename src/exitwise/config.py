"""Typed run configuration: dataclass defaults, YAML files (``yaml.safe_load``) and
``key=value`` command-line overrides with dotted keys.

:func:`load_config` checks the whole configuration before anything is loaded or written: unknown
keys (with near matches), values against the dataclass types (an ``int`` field takes no 1.5),
registered names (dataset, preset, backbone, exit head, policies), the dataset loader's options
and the model builder's keywords, and an ``output_dir`` that is not a file. Bad input raises
:class:`ConfigError`, an :class:`~exitwise.errors.InputError`.

The YAML presets ship in the package (``exitwise/configs/``): ``--config NAME`` takes a shipped
name (:func:`shipped_configs`) or a path.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from exitwise.errors import InputError
from exitwise.registry import did_you_mean
from exitwise.training.trainer import TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "EvalConfig",
    "RunConfig",
    "load_config",
    "ConfigError",
    "shipped_configs",
    "resolve_config",
]


class ConfigError(InputError):
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
    validation split (0.005 = within 0.5 points of the final exit).

    ``calibrate`` fits a temperature per exit by NLL on the validation split and applies it in
    every confidence-based rule (the committee's weights are the exits' validation accuracies);
    ``per_exit`` adds max-probability with per-exit thresholds searched on validation, for
    accuracy targets and for FLOPs budgets.
    """

    policies: list[str] = field(
        default_factory=lambda: [
            "max_probability",
            "entropy",
            "committee",
            "mean_ensemble",
            "patience",
        ]
    )
    tolerance: float = 0.005
    batch_size: int = 512
    calibrate: bool = True
    per_exit: bool = True


@dataclass
class RunConfig:
    """Everything one ``exitwise run`` needs.

    ``device`` is ``auto`` (CUDA if a GPU is visible, else MPS if available, else the CPU),
    ``cpu``, ``cuda`` (or ``cuda:N``) or ``mps``; training, evaluation and the robustness study
    run there. It is not part of what a resumed training compares, so a run may continue on
    another device.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12))
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/signs"
    threads: int = 2
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _merge(obj: Any, values: dict[str, Any], path: str) -> None:
    """Set ``values`` on dataclass ``obj`` recursively, refusing unknown keys and wrong types."""
    names = {f.name: f for f in fields(obj)}
    hints = _hints(type(obj))
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            hint = did_you_mean(key, names)
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
            setattr(obj, key, _coerce(value, hints[key], where))


def _deep_update(target: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in words:
        return words[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (a field's annotation); ConfigError if it is not one.

    Integers are exact: 3 and 3.0 give 3, 1.5 is refused. Numbers become floats. A scalar given
    for a list becomes a one-item list.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where!r} expects {_describe(tp)}, got {value!r}")
    bad = ConfigError(f"{where!r} expects {_describe(tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if isinstance(value, float) and not value.is_integer():
            raise bad
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list:
        items = value if isinstance(value, list) else [value]
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return value
    return value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cursor = out
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def _shipped_dir() -> Any:
    return resources.files("exitwise").joinpath("configs")


def shipped_configs() -> list[str]:
    """Names of the YAML configs shipped in the package (``--config NAME`` takes them)."""
    return sorted(
        f.name[: -len(".yaml")] for f in _shipped_dir().iterdir() if f.name.endswith(".yaml")
    )


def resolve_config(ref: str | Path) -> tuple[str, str]:
    """The YAML text of a config given as a path or as a shipped name (with or without
    ``.yaml``).

    Returns:
        ``(label, text)``: the path or ``shipped:NAME``, and the file's text.
    """
    p = Path(ref)
    if p.is_file():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {p}: {e}") from None
    if p.is_dir():
        raise ConfigError(f"config {str(ref)!r} is a directory; expected a YAML file")
    names = shipped_configs()
    text = str(ref)
    stem = text[: -len(".yaml")] if text.endswith(".yaml") else text
    if "/" not in text and "\\" not in text and stem in names:
        resource = _shipped_dir().joinpath(f"{stem}.yaml")
        return f"shipped:{stem}", resource.read_text(encoding="utf-8")
    hint = did_you_mean(Path(stem).name, names)
    raise ConfigError(
        f"config {text!r} is neither a file nor a shipped config.{hint} Shipped: {', '.join(names)}"
    )


def _parse_yaml(label: str, text: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{label} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{label} must hold a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then ``base`` (e.g. a saved run's config), then the YAML file (a path or a
    shipped name), then ``key=value`` overrides (values parsed as YAML); then the whole result
    is checked (:func:`check_config`)."""
    cfg = RunConfig()
    if base:
        _merge(cfg, base, "")
    if path is not None:
        _merge(cfg, _parse_yaml(*resolve_config(path)), "")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"override {item!r}: cannot parse the value: {problem}") from None
        _merge(cfg, _nest(key.strip(), value), "")
    check_config(cfg)
    return cfg


def check_config(cfg: RunConfig) -> None:
    """Check what the types alone do not: ranges, registered names, the dataset's options, the
    model builder's keywords and the output folder. ConfigError at the first problem."""
    from exitwise.data import DATASETS
    from exitwise.nets import BACKBONES, DISTRIBUTIONS, EXIT_HEADS, PRESETS, build_multi_exit
    from exitwise.policies import POLICIES

    for key in ("epochs", "backbone_epochs"):
        if getattr(cfg.train, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg.train, key)}")
    try:
        cfg.train.validate()
    except KeyError as e:  # a registry lookup (loss_weights)
        raise ConfigError(f"train: {e.args[0]}") from None
    except ValueError as e:
        raise ConfigError(f"train: {e}") from None
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {cfg.threads}")
    _check_device(cfg)
    if not 0 <= cfg.eval.tolerance < 1:
        raise ConfigError(f"eval.tolerance must be in [0, 1), got {cfg.eval.tolerance}")
    if cfg.eval.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    for name in cfg.eval.policies:
        _registered(POLICIES, name, "eval.policies")

    factory = _registered(DATASETS, cfg.data.name, "data.name")
    _check_options(
        cfg.data.options,
        inspect.signature(factory),
        "data.options",
        f"dataset {cfg.data.name!r}",
        skip={"root", "seed", "val_fraction"},
    )

    if cfg.model.preset is not None and cfg.model.preset not in PRESETS:
        hint = did_you_mean(cfg.model.preset, PRESETS)
        raise ConfigError(
            f"model.preset: unknown preset {cfg.model.preset!r}.{hint} Available: "
            f"{', '.join(sorted(PRESETS))}, or null with model.options.backbone"
        )
    opts = cfg.model.options
    for fixed in ("num_classes", "input_shape"):
        if fixed in opts:
            raise ConfigError(
                f"model.options.{fixed} is taken from the dataset; remove it (got {opts[fixed]!r})"
            )
    _check_options(
        opts,
        inspect.signature(build_multi_exit),
        "model.options",
        "exitwise.nets.build_multi_exit",
        skip={"num_classes", "input_shape"},
        check_types=False,
    )
    merged = {**(PRESETS.get(cfg.model.preset or "", {})), **opts}
    if "backbone" not in merged:
        raise ConfigError(
            "model: no backbone; give model.preset (e.g. branchy_resnet18) or "
            "model.options.backbone (e.g. resnet18)"
        )
    _registered(BACKBONES, merged["backbone"], "model.options.backbone")
    if "exit_head" in merged:
        _registered(EXIT_HEADS, merged["exit_head"], "model.options.exit_head")
    if merged.get("distribution") is not None:
        _registered(
            DISTRIBUTIONS, merged["distribution"], "model.options.distribution", "distribution"
        )

    out = Path(cfg.output_dir)
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"output_dir {str(out)!r}: {folder} is a file; expected a folder")


def _check_device(cfg: RunConfig) -> None:
    """The device exists on this machine and runs the training precision."""
    from exitwise.devices import check_precision, resolve_device

    try:
        device = resolve_device(cfg.device)
    except ValueError as e:  # its message names the device key and the fix
        raise ConfigError(str(e)) from None
    try:
        check_precision(cfg.train.precision, device)
    except ValueError as e:
        raise ConfigError(f"train.precision: {e}") from None


def _registered(registry: Any, name: Any, where: str, kind: str = "name") -> Any:
    """``registry``'s entry for ``name`` (a Registry, a dict or a tuple of names), or
    ConfigError with near matches."""
    if isinstance(registry, (dict, tuple, list, set, frozenset)):
        if name in registry:
            return registry[name] if isinstance(registry, dict) else name
        names = sorted(registry)
        hint = did_you_mean(name, names, quote=True)
        raise ConfigError(f"{where}: unknown {kind} {name!r}.{hint} Available: {', '.join(names)}")
    try:
        return registry.get(name)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{where}: {e.args[0] if e.args else e}") from None


def _check_options(
    options: dict[str, Any],
    signature: inspect.Signature,
    where: str,
    owner: str,
    skip: set[str],
    check_types: bool = True,
) -> None:
    """Refuse keys that ``signature`` does not take, and (``check_types``) values whose type
    differs from the parameter's default (an int default takes integers, a bool true/false)."""
    params = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        k: p
        for k, p in params.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k not in skip
    }
    for key, value in options.items():
        if key not in accepted:
            hint = did_you_mean(key, accepted)
            raise ConfigError(
                f"{where}.{key}: {owner} takes no option {key!r}.{hint} It takes: "
                f"{', '.join(sorted(accepted)) or 'no options'}"
            )
        default = accepted[key].default
        if check_types and default is not inspect.Parameter.empty and default is not None:
            options[key] = _coerce(value, type(default), f"{where}.{key}")

"""Report layer: an evaluation dictionary (``evaluation.json``) -> PNG figures, CSVs, one HTML page.

Example:
    >>> from exitwise.report import write_report
    >>> write_report(evaluation, "runs/resnet18")  # doctest: +SKIP
    PosixPath('runs/resnet18/report.html')

Files written into ``out_dir``:

* ``exit_costs.png``: FLOPs to reach each exit and each exit's accuracy (Fig. 3 of Chesalin et
  al.); ``accuracy_vs_flops.png``: accuracy against mean FLOPs over the threshold sweep (Fig. 4);
  ``exit_shares.png``: where the images leave; ``training.png`` when a training history exists.
* ``exits.csv``, ``sweep_<policy>.csv``, ``pareto_<policy>.csv``.
* ``report.html``: self-contained (figures as base64 data URIs, inline CSS, no script).

Required keys (checked by :func:`validate_evaluation`; anything else is optional and shown when
present): ``title``; ``dataset.name``; ``model.name``; ``costs.stage_flops``, ``costs.exit_flops``,
``costs.path_flops`` (one entry per exit) and ``costs.backbone_flops``; ``exits`` (a list with
``exit``, ``block``, ``accuracy``, ``path_flops``, ``path_fraction``); ``backbone.accuracy`` and
``backbone.flops``; ``oracle.accuracy``, ``oracle.mean_flops``, ``oracle.flops_fraction``,
``oracle.exit_shares``; ``policies`` (a non-empty dict of name -> ``sweep`` and ``pareto`` lists
of operating points, each with ``threshold``, ``accuracy``, ``mean_flops``, ``flops_fraction``,
``exit_shares``, and an optional ``chosen`` point). Optional: ``training`` (``seconds``,
``epochs``, ``device``, ``machine``, ``history``), ``command``, ``notes``. FLOPs = 2 x MACs.

Every file is written to a temporary name in ``out_dir`` then moved into place with
:func:`os.replace`, and the page is written last, after everything it shows was rendered: a
failure never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exitwise.report import html, plots
from exitwise.report.compare import write_comparison
from exitwise.report.html import safe_name
from exitwise.report.robustness import write_robustness_report

__all__ = [
    "REPORT_FILE",
    "validate_evaluation",
    "write_report",
    "write_robustness_report",
    "write_comparison",
    "write_tables",
]

REPORT_FILE = "report.html"

_REQUIRED: tuple[tuple[str, ...], ...] = (
    ("title",),
    ("dataset", "name"),
    ("model", "name"),
    ("costs", "stage_flops"),
    ("costs", "exit_flops"),
    ("costs", "path_flops"),
    ("costs", "backbone_flops"),
    ("exits",),
    ("backbone", "accuracy"),
    ("backbone", "flops"),
    ("oracle", "accuracy"),
    ("oracle", "mean_flops"),
    ("oracle", "flops_fraction"),
    ("oracle", "exit_shares"),
    ("policies",),
)
_EXIT_KEYS = ("exit", "block", "accuracy", "path_flops", "path_fraction")
_POINT_KEYS = ("threshold", "accuracy", "mean_flops", "flops_fraction", "exit_shares")
_COST_LISTS = ("stage_flops", "exit_flops", "path_flops")


# ---------------------------------------------------------------------------------- validation


def _where(path: Sequence[str | int]) -> str:
    return "evaluation" + "".join(f"[{key!r}]" for key in path)


def _lookup(evaluation: Mapping[str, Any], path: Sequence[str | int]) -> Any:
    """The value at ``path``; ``ValueError`` naming the first missing (or ``None``) step."""
    node: Any = evaluation
    for depth, key in enumerate(path):
        if isinstance(key, str) and not isinstance(node, Mapping):
            raise ValueError(f"{_where(path[:depth])} must be a dict, got {type(node).__name__}")
        missing = key not in node if isinstance(key, str) else key >= len(node)
        if missing or node[key] is None:
            raise ValueError(f"{_where(path[: depth + 1])} is missing")
        node = node[key]
    return node


def _require_list(
    evaluation: Mapping[str, Any],
    path: Sequence[str | int],
    length: int | None,
) -> list:
    value = _lookup(evaluation, path)
    if not isinstance(value, list | tuple) or (length is None and not value):
        raise ValueError(f"{_where(path)} must be a non-empty list")
    if length is not None and len(value) != length:
        raise ValueError(
            f"{_where(path)} has {len(value)} entries, expected {length} (one per exit)"
        )
    return list(value)


def _check_point(evaluation: Mapping[str, Any], path: Sequence[str | int], num_exits: int) -> None:
    for key in _POINT_KEYS:
        _lookup(evaluation, [*path, key])
    _require_list(evaluation, [*path, "exit_shares"], num_exits)


def _check_policy(evaluation: Mapping[str, Any], name: str, num_exits: int) -> None:
    base: list[str | int] = ["policies", name]
    _lookup(evaluation, base)
    for part in ("sweep", "pareto"):
        points = _require_list(evaluation, [*base, part], None)
        for i in range(len(points)):
            _check_point(evaluation, [*base, part, i], num_exits)
    if evaluation["policies"][name].get("chosen"):
        _check_point(evaluation, [*base, "chosen"], num_exits)


def validate_evaluation(evaluation: Mapping[str, Any]) -> None:
    """Check that ``evaluation`` holds everything the report needs.

    Args:
        evaluation: the evaluation dictionary (see the package docs for the schema).

    Raises:
        ValueError: naming the key path that is missing or malformed, for instance
            ``evaluation['costs']['path_flops'] is missing``.
    """
    if not isinstance(evaluation, Mapping):
        raise ValueError(f"evaluation must be a dict, got {type(evaluation).__name__}")
    for path in _REQUIRED:
        _lookup(evaluation, path)
    num_exits = len(_require_list(evaluation, ["exits"], None))
    for i in range(num_exits):
        for key in _EXIT_KEYS:
            _lookup(evaluation, ["exits", i, key])
    for key in _COST_LISTS:
        _require_list(evaluation, ["costs", key], num_exits)
    _require_list(evaluation, ["oracle", "exit_shares"], num_exits)
    policies = evaluation["policies"]
    if not isinstance(policies, Mapping) or not policies:
        raise ValueError("evaluation['policies'] must be a non-empty dict")
    for name in policies:
        _check_policy(evaluation, name, num_exits)


# -------------------------------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The temporary file is created with the usual permissions (``0o666`` less the umask).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _exits_table(evaluation: Mapping[str, Any]) -> bytes:
    costs = evaluation["costs"]
    macs = costs.get("path_macs") or [p // 2 for p in costs["path_flops"]]
    rows = [
        [ex["exit"], ex["block"], ex["accuracy"], ex["path_flops"], macs[i], ex["path_fraction"]]
        for i, ex in enumerate(evaluation["exits"])
    ]
    header = ["exit", "block", "accuracy", "path_flops", "path_macs", "path_fraction"]
    return _csv_bytes(header, rows)


def _points_table(points: Sequence[Mapping[str, Any]], num_exits: int) -> bytes:
    header = ["threshold", "accuracy", "mean_flops", "mean_macs", "flops_fraction"]
    header += [f"share_exit_{i}" for i in range(num_exits)]
    rows = [
        [
            p["threshold"],
            p["accuracy"],
            p["mean_flops"],
            p.get("mean_macs", p["mean_flops"] / 2),
            p["flops_fraction"],
            *p["exit_shares"],
        ]
        for p in points
    ]
    return _csv_bytes(header, rows)


def _tables(evaluation: Mapping[str, Any]) -> dict[str, bytes]:
    num_exits = len(evaluation["exits"])
    out = {"exits.csv": _exits_table(evaluation)}
    for name, policy in evaluation["policies"].items():
        out[f"sweep_{safe_name(name)}.csv"] = _points_table(policy["sweep"], num_exits)
        out[f"pareto_{safe_name(name)}.csv"] = _points_table(policy["pareto"], num_exits)
    return out


def _write_all(files: Mapping[str, bytes], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        _atomic_write(out_dir / name, data)
        paths.append(out_dir / name)
    return paths


def write_tables(evaluation: dict, out_dir: str | Path) -> list[Path]:
    """Write the CSV tables: ``exits.csv``, ``sweep_<policy>.csv`` and ``pareto_<policy>.csv``.

    Args:
        evaluation: the evaluation dictionary.
        out_dir: folder to write into (created if needed).

    Returns:
        The paths written, ``exits.csv`` first.

    Raises:
        ValueError: if a required key is missing (the message names its path).
    """
    validate_evaluation(evaluation)
    return _write_all(_tables(evaluation), Path(out_dir))


def write_report(evaluation: dict, out_dir: str | Path) -> Path:
    """Write the figures, the CSV tables and the self-contained ``report.html``.

    Everything is rendered in memory first, so a failure (a bad value, a plotting error) writes
    nothing; each file is then moved into place atomically, the page last.

    Args:
        evaluation: the evaluation dictionary.
        out_dir: folder to write into (created if needed).

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: if a required key is missing (the message names its path).
    """
    validate_evaluation(evaluation)
    figures = plots.render_figures(evaluation)
    page = html.render_html(evaluation, figures).encode("utf-8")
    out = Path(out_dir)
    _write_all({**_tables(evaluation), **figures}, out)
    _atomic_write(out / REPORT_FILE, page)
    return out / REPORT_FILE

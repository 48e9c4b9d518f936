"""The HTML page of a report: one self-contained file, figures embedded as base64 data URIs.

No external resources (fonts, styles, scripts, images) and no JavaScript: the page opens the same
from a laptop, an artifact store or an e-mail attachment. Every string taken from the evaluation
dictionary goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from exitwise.report.plots import exit_colors, format_threshold

__all__ = [
    "CAPTIONS",
    "TOLERANCE",
    "format_duration",
    "format_flops",
    "format_pct",
    "headline_point",
    "render_html",
    "safe_name",
    "table_unit",
]

TOLERANCE = 0.005
"""Accuracy drop (absolute, 0.005 = half a point) accepted when no chosen point is given."""

CAPTIONS: dict[str, tuple[str, str]] = {
    "exit_costs.png": (
        "What each exit costs",
        "Left: FLOPs a single image spends to leave at each exit (batch size 1), split into the "
        "backbone stages it ran, the earlier exit heads it passed without leaving, and the head "
        "of the exit itself. The dashed line is the plain backbone without side exits; the label "
        "on each bar gives its share of that cost. The right axis shows the same cost in MACs "
        "(FLOPs = 2 x MACs). Right: accuracy if every image were forced out at that exit; the "
        "dashed line is the plain backbone, the dotted line the oracle.",
    ),
    "accuracy_vs_flops.png": (
        "Accuracy against FLOPs actually spent",
        "Each marker is one threshold of an exit policy: its accuracy against the mean FLOPs per "
        "image, as % of the plain backbone (bottom axis) and in absolute FLOPs (top axis). The "
        "thick step line is the policy's Pareto front: the best accuracy reachable within a "
        "given budget. Grey dots are the single exits, the black square the plain backbone, the "
        "star the oracle (each image leaves at the first exit that classifies it correctly). Up "
        "and to the left is better. The right panel zooms into the region near the final exit's "
        "accuracy and labels the Pareto points with their threshold; a ring marks the chosen "
        "operating point.",
    ),
    "exit_shares.png": (
        "Where the images leave",
        "For each policy, the share of images that leave at each exit (stacked, shallow exits at "
        "the bottom) as the threshold changes, with the resulting mean FLOPs as % of the plain "
        "backbone (dashed). The mean can pass 100%: an image that runs to the final exit also "
        "pays for the side heads it passed on the way.",
    ),
    "training.png": (
        "Training",
        "Training loss per epoch and the validation accuracy of every exit.",
    ),
}

_CSS = """
:root { --ink: #1d1f23; --muted: #5d6470; --line: #e3e6ea; --zebra: #f6f7f9; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink); line-height: 1.5;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", sans-serif; font-size: 15px; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 64px; }
h1 { font-size: 1.75rem; margin: 0 0 6px; line-height: 1.25; }
h2 { font-size: 1.25rem; margin: 40px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 24px 0 6px; }
p, li { max-width: 80ch; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
  background: var(--zebra); padding: 1px 5px; border-radius: 4px; }
.meta { color: var(--muted); margin: 2px 0; }
.meta b { color: var(--ink); font-weight: 600; }
.headline { margin: 22px 0 8px; padding: 16px 18px; border: 1px solid var(--line);
  border-left: 4px solid var(--accent); border-radius: 6px; background: #fbfcfd; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); gap: 12px;
  margin-bottom: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .k { color: var(--muted); font-size: .85rem; }
.card .v { font-size: 1.6rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .s { color: var(--muted); font-size: .85rem; }
.headline ul { margin: 6px 0 0; padding-left: 20px; }
figure { margin: 18px 0 28px; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: 6px; max-width: 100ch; }
figcaption b { color: var(--ink); }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: .9rem; }
th, td { padding: 5px 9px; text-align: right; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 12ch; }
th { border-bottom: 2px solid #c9ced6; font-weight: 600; background: #fff; }
td { font-variant-numeric: tabular-nums; }
th.l, td.l { text-align: left; }
tbody tr:nth-child(even) { background: var(--zebra); }
tr.hl td { background: #e6f1f8; font-weight: 600; }
tr.ref td { border-top: 1px solid #c9ced6; color: var(--muted); }
.scroll { overflow-x: auto; }
.bar { display: inline-flex; width: 140px; height: 11px; border-radius: 2px; overflow: hidden;
  vertical-align: middle; background: var(--line); margin-right: 6px; }
.bar span { display: block; height: 100%; }
.small { color: var(--muted); font-size: .85rem; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px;
  border-radius: 2px; vertical-align: middle; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 8px 0; }
dt { color: var(--muted); }
dd { margin: 0; }
footer { margin-top: 48px; color: var(--muted); font-size: .8rem; }
"""


# ----------------------------------------------------------------------------------- formatting


def format_pct(fraction: float, digits: int = 1) -> str:
    """``0.9812`` -> ``"98.1%"``.

    Args:
        fraction: a value where 1.0 means 100%.
        digits: decimals to keep.

    Returns:
        The percentage as text.
    """
    return f"{100.0 * fraction:.{digits}f}%"


def format_flops(flops: float, unit: str = "FLOPs") -> str:
    """``1110879232`` -> ``"1.11 GFLOPs"``, ``324408704`` -> ``"324.4 MFLOPs"``.

    Args:
        flops: a raw count.
        unit: the counted quantity, ``"FLOPs"`` or ``"MACs"``.

    Returns:
        The count with an SI prefix and the unit.
    """
    for scale, prefix, fmt in (
        (1e12, "T", ".2f"),
        (1e9, "G", ".2f"),
        (1e6, "M", ".1f"),
        (1e3, "k", ".1f"),
    ):
        if abs(flops) >= scale:
            return f"{flops / scale:{fmt}} {prefix}{unit}"
    return f"{flops:.0f} {unit}"


def table_unit(largest: float) -> tuple[float, str]:
    """One SI prefix for a whole table column set, chosen from its largest value.

    Args:
        largest: the largest raw count the table shows (usually the backbone's FLOPs).

    Returns:
        ``(scale, prefix)``, e.g. ``(1e6, "M")``.
    """
    for scale, prefix in ((1e10, "G"), (1e6, "M"), (1e3, "k")):
        if largest >= scale:
            return (1e9 if prefix == "G" else scale), prefix
    return 1.0, ""


def _num(value: float, scale: float) -> str:
    """``value / scale`` with one decimal, or three significant digits below 10."""
    v = value / scale
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def format_duration(seconds: float) -> str:
    """``512.3`` -> ``"8 min 32 s"``.

    Args:
        seconds: a duration.

    Returns:
        The duration in h / min / s.
    """
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"


def _fewer(fraction: float) -> str:
    """``0.31`` -> ``"3.2× fewer"``; ``1.02`` -> ``"2.0% more"``."""
    if fraction <= 0 or not math.isfinite(fraction):
        return "n/a"
    if fraction <= 1.0:
        return f"{1.0 / fraction:.1f}× fewer"
    return f"{100.0 * (fraction - 1.0):.1f}% more"


def _points_delta(acc: float, ref: float) -> str:
    delta = 100.0 * (acc - ref)
    sign = "+" if delta > 0.05 else ("\u2212" if delta < -0.05 else "\u00b1")
    return f"{sign}{abs(delta):.1f} pts"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# ------------------------------------------------------------------------------------ headline


def headline_point(
    policy: Mapping[str, Any], reference_accuracy: float, tolerance: float = TOLERANCE
) -> tuple[Mapping[str, Any], str]:
    """The operating point a policy is summarised by, and why it was picked.

    The chosen point when there is one; otherwise the cheapest sweep point within ``tolerance``
    of ``reference_accuracy``, else the most accurate sweep point.

    Args:
        policy: one entry of ``evaluation["policies"]``.
        reference_accuracy: accuracy of the final exit.
        tolerance: accepted absolute accuracy drop.

    Returns:
        ``(point, reason)``.
    """
    chosen = policy.get("chosen")
    if chosen:
        return chosen, "chosen"
    near = [p for p in policy["sweep"] if p["accuracy"] >= reference_accuracy - tolerance]
    if near:
        best = min(near, key=lambda p: (p["mean_flops"], -p["accuracy"]))
        return best, f"cheapest sweep point within {100 * tolerance:g} points of the final exit"
    best = max(policy["sweep"], key=lambda p: (p["accuracy"], -p["mean_flops"]))
    return best, "most accurate sweep point"


def _shares_text(shares: Sequence[float]) -> str:
    """``[0.8, 0.2]`` -> ``"images leaving at exits 0 / 1: 80% / 20%"``."""
    ids = " / ".join(str(i) for i in range(len(shares)))
    return f"images leaving at exits {ids}: " + " / ".join(format_pct(s, 0) for s in shares)


def _policy_sentence(name: str, policy: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    ref = evaluation["backbone"]["accuracy"]
    point, reason = headline_point(policy, ref)
    frac = point["flops_fraction"]
    text = (
        f"With <b>{_e(name)}</b> at t = {_e(format_threshold(point['threshold']))}: "
        f"<b>{format_pct(point['accuracy'])}</b> ({_points_delta(point['accuracy'], ref)}) at "
        f"<b>{format_pct(frac, 0)}</b> of the backbone's FLOPs ({_fewer(frac)}); "
        f"{_shares_text(point['exit_shares'])}."
    )
    if reason == "chosen":
        rule = point.get("rule")
        val = point.get("val_accuracy")
        extra = f"Chosen by: {_e(rule)}" if rule else "Chosen operating point"
        if isinstance(val, int | float):
            extra += f" (validation accuracy {format_pct(val)})"
        return f"{text} <span class='small'>{extra}.</span>"
    return f"{text} <span class='small'>({_e(reason)}, picked on this split: optimistic).</span>"


def _card(key: str, value: str, sub: str) -> str:
    return (
        f'<div class="card"><div class="k">{key}</div><div class="v">{value}</div>'
        f'<div class="s">{sub}</div></div>'
    )


def _headline_cards(evaluation: Mapping[str, Any]) -> list[str]:
    bb, orc = evaluation["backbone"], evaluation["oracle"]
    cards = [
        _card(
            "Final exit (plain backbone)",
            format_pct(bb["accuracy"]),
            f"at {_e(format_flops(bb['flops']))} per image",
        )
    ]
    for name, policy in evaluation["policies"].items():
        point, reason = headline_point(policy, bb["accuracy"])
        tag = {"chosen": "chosen", "most accurate sweep point": "most accurate"}.get(
            reason, f"cheapest within {100 * TOLERANCE:g} pts"
        )
        cards.append(
            _card(
                f"{_e(name)}, t = {_e(format_threshold(point['threshold']))} ({tag})",
                format_pct(point["accuracy"]),
                f"at {format_pct(point['flops_fraction'], 0)} of the FLOPs "
                f"({_fewer(point['flops_fraction'])})",
            )
        )
    cards.append(
        _card(
            "Oracle (upper bound)",
            format_pct(orc["accuracy"]),
            f"at {format_pct(orc['flops_fraction'], 0)} of the FLOPs "
            f"({_fewer(orc['flops_fraction'])})",
        )
    )
    return cards


def _headline_sentences(evaluation: Mapping[str, Any]) -> list[str]:
    bb, orc = evaluation["backbone"], evaluation["oracle"]
    costs, exits = evaluation["costs"], evaluation["exits"]
    macs = costs.get("backbone_macs", bb["flops"] / 2)
    items = [
        f"Final exit: <b>{format_pct(bb['accuracy'])}</b> at "
        f"<b>{_e(format_flops(bb['flops']))}</b> ({_e(format_flops(macs, 'MACs'))}) per image."
    ]
    items += [
        _policy_sentence(name, pol, evaluation) for name, pol in evaluation["policies"].items()
    ]
    items.append(
        f"Oracle (each image leaves at the first exit that gets it right): "
        f"<b>{format_pct(orc['accuracy'])}</b> at {format_pct(orc['flops_fraction'], 0)} of the "
        f"backbone's FLOPs ({_fewer(orc['flops_fraction'])}): the ceiling for any exit rule "
        f"on these exits."
    )
    first = exits[0]
    items.append(
        f"Exit {_e(first['exit'])} alone (after <code>{_e(first['block'])}</code>): "
        f"{format_pct(first['accuracy'])} at {format_pct(first['path_fraction'], 0)} of the "
        f"backbone's FLOPs."
    )
    overhead = costs["path_flops"][-1] / costs["backbone_flops"] - 1.0
    items.append(
        f"An image that runs to the final exit pays {format_pct(overhead)} more FLOPs "
        f"than the plain backbone (the side heads it passed)."
    )
    return items


def _headline(evaluation: Mapping[str, Any]) -> str:
    cards = "".join(_headline_cards(evaluation))
    items = "".join(f"<li>{s}</li>" for s in _headline_sentences(evaluation))
    return f'<section class="headline"><div class="cards">{cards}</div><ul>{items}</ul></section>'


# -------------------------------------------------------------------------------------- header


def _dataset_line(dataset: Mapping[str, Any]) -> str:
    parts = [f"<b>{_e(dataset['name'])}</b>"]
    if dataset.get("split"):
        parts.append(f"{_e(dataset['split'])} split")
    if dataset.get("num_samples") is not None:
        parts.append(f"{int(dataset['num_samples']):,} images")
    if dataset.get("num_classes") is not None:
        parts.append(f"{int(dataset['num_classes'])} classes")
    return "Dataset: " + ", ".join(parts)


def _model_line(model: Mapping[str, Any], num_exits: int) -> str:
    parts = [f"<b>{_e(model['name'])}</b>"]
    if model.get("backbone"):
        parts.append(f"backbone {_e(model['backbone'])}")
    parts.append(f"{int(model.get('num_exits', num_exits))} exits")
    if model.get("exit_blocks"):
        parts.append("after " + ", ".join(f"<code>{_e(b)}</code>" for b in model["exit_blocks"]))
    if model.get("num_parameters") is not None:
        parts.append(f"{model['num_parameters'] / 1e6:.2f} M parameters")
    return "Model: " + ", ".join(parts)


def _header(evaluation: Mapping[str, Any]) -> str:
    lines = [
        _dataset_line(evaluation["dataset"]),
        _model_line(evaluation["model"], len(evaluation["exits"])),
    ]
    shape = evaluation["costs"].get("input_shape")
    if shape:
        lines.append("Input: " + " \u00d7 ".join(_e(s) for s in shape))
    if evaluation.get("command"):
        lines.append(f"Command: <code>{_e(evaluation['command'])}</code>")
    meta = "".join(f'<p class="meta">{line}</p>' for line in lines)
    return f"<header><h1>{_e(evaluation['title'])}</h1>{meta}</header>"


# ------------------------------------------------------------------------------------- figures


def _figure(name: str, png: bytes) -> str:
    title, text = CAPTIONS.get(name, (name, ""))
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name.removesuffix(".png"))}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(title)}">'
        f"<figcaption><b>{_e(title)}.</b> {_e(text)} <span class='small'>"
        f"(<code>{_e(name)}</code>)</span></figcaption></figure>"
    )


def _figures(figures: Mapping[str, bytes]) -> str:
    return "<h2>Figures</h2>" + "".join(_figure(n, png) for n, png in figures.items())


# -------------------------------------------------------------------------------------- tables


def _table(
    head: Sequence[str],
    rows: Sequence[str],
    left: int = 1,
    last_left: bool = False,
) -> str:
    cells = "".join(
        f'<th class="l">{h}</th>'
        if i < left or (last_left and i == len(head) - 1)
        else f"<th>{h}</th>"
        for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll"><table><thead><tr>{cells}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _row(values: Sequence[str], left: int = 1, cls: str = "", last_left: bool = False) -> str:
    cells = "".join(
        f'<td class="l">{v}</td>'
        if i < left or (last_left and i == len(values) - 1)
        else f"<td>{v}</td>"
        for i, v in enumerate(values)
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>{cells}</tr>"


def _exit_rows(evaluation: Mapping[str, Any], scale: float) -> list[str]:
    costs, exits = evaluation["costs"], evaluation["exits"]
    ref = evaluation["backbone"]["accuracy"]
    macs = costs.get("path_macs") or [p / 2 for p in costs["path_flops"]]
    rows = []
    for i, ex in enumerate(exits):
        rows.append(
            _row(
                [
                    _e(ex["exit"]),
                    f"<code>{_e(ex['block'])}</code>",
                    _num(costs["stage_flops"][i], scale),
                    _num(costs["exit_flops"][i], scale),
                    _num(ex["path_flops"], scale),
                    _num(macs[i], scale),
                    format_pct(ex["path_fraction"]),
                    format_pct(ex["accuracy"]),
                    _points_delta(ex["accuracy"], ref),
                ],
                left=2,
            )
        )
    return rows


def _backbone_row(evaluation: Mapping[str, Any], scale: float) -> str:
    bb, costs = evaluation["backbone"], evaluation["costs"]
    macs = costs.get("backbone_macs", bb["flops"] / 2)
    label = bb.get("label") or "plain backbone"
    row = _row(
        [
            "",
            _e(label),
            "",
            "",
            _num(bb["flops"], scale),
            _num(macs, scale),
            "100.0%",
            format_pct(bb["accuracy"]),
            "",
        ],
        left=2,
        cls="ref",
    )
    return row.replace('<td class="l">', '<td class="l wrap">', 2)


def _exits_section(evaluation: Mapping[str, Any]) -> str:
    scale, p = table_unit(float(evaluation["costs"]["backbone_flops"]))
    head = [
        "Exit",
        "After block",
        f"Stage ({p}FLOPs)",
        f"Head ({p}FLOPs)",
        f"To reach ({p}FLOPs)",
        f"To reach ({p}MACs)",
        "% of backbone",
        "Accuracy",
        "vs final",
    ]
    rows = _exit_rows(evaluation, scale) + [_backbone_row(evaluation, scale)]
    return (
        "<h2>Exits</h2><p>Cost of leaving at each exit (every stage and every exit head up to "
        "it) and the accuracy if all images left there. <code>exits.csv</code> has the raw "
        "numbers.</p>" + _table(head, rows, left=2)
    )


def _share_bar(shares: Sequence[float]) -> str:
    colors = exit_colors(len(shares))
    spans = "".join(
        f'<span style="width:{100.0 * s:.2f}%;background:{c}"></span>'
        for s, c in zip(shares, colors, strict=True)
    )
    text = " / ".join(f"{100.0 * s:.0f}" for s in shares)
    return f'<span class="bar">{spans}</span>{text}'


def _point_row(point: Mapping[str, Any], ref: float, scale: float, highlight: bool) -> str:
    macs = point.get("mean_macs", point["mean_flops"] / 2)
    return _row(
        [
            _e(format_threshold(point["threshold"])),
            format_pct(point["accuracy"]),
            _points_delta(point["accuracy"], ref),
            _num(point["mean_flops"], scale),
            _num(macs, scale),
            format_pct(point["flops_fraction"]),
            _fewer(point["flops_fraction"]),
            _share_bar(point["exit_shares"]),
        ],
        left=1,
        cls="hl" if highlight else "",
        last_left=True,
    )


def _exit_legend(evaluation: Mapping[str, Any]) -> str:
    colors = exit_colors(len(evaluation["exits"]))
    items = "".join(
        f'<span style="background:{c}"></span>exit {_e(ex["exit"])}'
        for c, ex in zip(colors, evaluation["exits"], strict=True)
    )
    return f'<p class="small legend">Exit shares (%):{items}</p>'


def _policy_section(name: str, policy: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    ref = evaluation["backbone"]["accuracy"]
    scale, unit = table_unit(float(evaluation["costs"]["backbone_flops"]))
    chosen = policy.get("chosen")
    pareto = sorted(policy.get("pareto") or [], key=lambda p: p["mean_flops"])
    rows = [
        _point_row(p, ref, scale, bool(chosen) and p["threshold"] == chosen["threshold"])
        for p in pareto
    ]
    if chosen and not any(p["threshold"] == chosen["threshold"] for p in pareto):
        rows.append(_point_row(chosen, ref, scale, True))
    head = [
        "Threshold t",
        "Accuracy",
        "vs final",
        f"Mean {unit}FLOPs",
        f"Mean {unit}MACs",
        "% of backbone",
        "FLOPs vs backbone",
        "Exit shares (%)",
    ]
    label = policy.get("label")
    intro = f"<p>Rule: {_e(label)}. " if label else "<p>"
    intro += (
        f"Pareto front of {len(policy['sweep'])} thresholds "
        f"(all of them in <code>{_e('sweep_' + safe_name(name) + '.csv')}</code>)."
    )
    if chosen:
        intro += " Highlighted: the chosen operating point"
        intro += f", {_e(chosen['rule'])}." if chosen.get("rule") else "."
    table = _table(head, rows, last_left=True)
    return f"<h3>{_e(name)}</h3>{intro}</p>" + table + _exit_legend(evaluation)


def _policies_section(evaluation: Mapping[str, Any]) -> str:
    parts = [_policy_section(n, p, evaluation) for n, p in evaluation["policies"].items()]
    return "<h2>Exit policies</h2>" + "".join(parts)


def safe_name(name: str) -> str:
    """A policy name made safe for a file name (letters, digits, ``_``, ``-``, ``.``).

    Args:
        name: the policy name.

    Returns:
        The name with every other character replaced by ``_``.
    """
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)


# ----------------------------------------------------------------------------- other sections


def _training_section(evaluation: Mapping[str, Any]) -> str:
    training = evaluation.get("training")
    if not training:
        return ""
    items: list[tuple[str, str]] = []
    if training.get("seconds") is not None:
        items.append(("Training time", format_duration(float(training["seconds"]))))
    for key, label in (("epochs", "Epochs"), ("device", "Device"), ("machine", "Machine")):
        if training.get(key) not in (None, ""):
            items.append((label, _e(training[key])))
    history = training.get("history") or []
    if history and history[-1].get("val_accuracy"):
        accs = " / ".join(format_pct(a) for a in history[-1]["val_accuracy"] if a is not None)
        items.append(("Last epoch, validation accuracy per exit", accs))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h2>Training</h2><dl>{body}</dl>"


def _costs_section(evaluation: Mapping[str, Any]) -> str:
    costs = evaluation["costs"]
    convention = costs.get("convention") or "FLOPs = 2 x MACs"
    macs = costs.get("backbone_macs", costs["backbone_flops"] / 2)
    items = [
        ("Convention", _e(convention)),
        (
            "Plain backbone",
            f"{_e(format_flops(costs['backbone_flops']))} = "
            f"{_e(format_flops(macs, 'MACs'))} per image",
        ),
    ]
    if costs.get("input_shape"):
        items.append(("Input shape", " \u00d7 ".join(_e(s) for s in costs["input_shape"])))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return (
        "<h2>How FLOPs are counted</h2><dl>" + body + "</dl><p class='small'>Mean FLOPs of a "
        "policy average the cost of the exit each image leaves at; an image pays every stage "
        "and every exit head up to that exit. Percentages are relative to the plain backbone "
        "(no side exits).</p>"
    )


def _notes_section(evaluation: Mapping[str, Any]) -> str:
    notes = evaluation.get("notes") or []
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def render_html(evaluation: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """The whole report page.

    Args:
        evaluation: a validated evaluation dictionary.
        figures: ``{file name: PNG bytes}`` in display order, embedded as data URIs.

    Returns:
        The HTML document as a string.
    """
    body = "".join(
        [
            _header(evaluation),
            _headline(evaluation),
            _figures(figures),
            _exits_section(evaluation),
            _policies_section(evaluation),
            _training_section(evaluation),
            _costs_section(evaluation),
            _notes_section(evaluation),
            "<footer>Generated by exitwise.report. Self-contained: figures are embedded in this "
            "file; the CSV tables lie next to it.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(evaluation['title'])}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )

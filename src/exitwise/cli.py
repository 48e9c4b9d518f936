"""The ``exitwise`` command: train, evaluate and report on early-exit networks.

exitwise run                                  # the main job on the built-in synthetic-signs
exitwise run --config gtsrb_branchy_resnet18 train.epochs=3   # a shipped config + overrides
exitwise info                                 # backbones, presets, datasets, policies, configs

Bad input (a config, a file, an option) is refused before data loads or a file is written: the
library raises an ``InputError`` and :class:`_Verbs` prints its one line and exits with status 2.
"""

from __future__ import annotations

import os

# Before torch loads: busy-waiting OpenMP threads make small ops far slower on few cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from exitwise.errors import InputError, one_line  # noqa: E402

console = Console(stderr=False, soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _Verbs(TyperGroup):
    """The one place bad input meets the user: an ``InputError`` from any verb becomes one line
    on stderr and exit status 2, with no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as e:  # ConfigError, CheckpointError, ResultError, CompareError, ...
            err.print(Text.assemble(("error: ", "bold red"), one_line(str(e))))
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Verbs,
    help="Early-exit neural networks for computer vision: build, train, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here
    typer.Option(
        "--config",
        "-c",
        help="YAML config: a file, or the name of a shipped one (`exitwise info` lists them); "
        "defaults apply to what it omits.",
    ),
]
Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Argument(
        help="key=value overrides with dotted keys, e.g. train.epochs=3 data.name=gtsrb "
        "model.options.backbone_options.stem=cifar. Unknown keys are rejected.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--device",
        help="where to compute: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; "
        "the same as the override device=...",
        show_default=False,
    ),
]


def _device_option(device: str | None, default: str):
    """``--device`` (or ``default``) as a torch device; a one-line error when it is unknown or
    absent, before anything loads."""
    from exitwise.devices import resolve_device

    try:
        return resolve_device(device or default)
    except ValueError as e:
        raise InputError(f"--device: {e}") from None


def _with_device(overrides: list[str] | None, device: str | None) -> list[str] | None:
    """``--device`` as the override ``device=...`` (it wins over the config's)."""
    return [*(overrides or []), f"device={device}"] if device else overrides


def _setup(
    config: Path | None,
    overrides: list[str] | None,
    run_dir: Path | None = None,
    trains: bool = False,
):
    """Resolve and check the config (a trained run's own, with its model files, when
    ``run_dir`` is given; the run already in output_dir, when the verb ``trains``) and threads.
    """
    from exitwise.config import load_config
    from exitwise.experiments.rundir import check_output_dir, run_config

    if run_dir is not None:
        cfg = run_config(run_dir, overrides)
    else:
        cfg = load_config(config, overrides)
    if trains:
        check_output_dir(cfg)
    import torch

    torch.set_num_threads(cfg.threads)
    return cfg


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _load_data(cfg):
    from exitwise.experiments.pipeline import load_data

    t0 = time.perf_counter()
    with console.status(f"loading dataset {cfg.data.name}..."):
        try:
            data = load_data(cfg)
        except (FileNotFoundError, ValueError, KeyError) as e:
            reason = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise InputError(f"cannot load dataset {cfg.data.name!r}: {reason}") from None
    console.print(
        f"dataset [bold]{data.name}[/bold]: {len(data.train)} train / {len(data.val)} val / "
        f"{len(data.test)} test, {data.num_classes} classes, images {data.input_shape} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return data


def _trained_run(run_dir: Path, overrides=None, device=None, check_model=None):
    """The run's config, its model (on ``device``, else the config's device) and its dataset,
    checked to fit each other; ``check_model(model)`` runs before the data loads."""
    from exitwise.devices import resolve_device
    from exitwise.training.checkpoint import check_model_fits, load_model

    cfg = _setup(None, overrides, run_dir)
    model = load_model(run_dir, device=device or resolve_device(cfg.device)).model
    if check_model is not None:
        check_model(model)
    data = _load_data(cfg)
    check_model_fits(model, data, run_dir)
    return cfg, model, data


def _policy_context(model, data, run_dir: Path):
    """The run's saved temperatures and committee weights (a PolicyContext), else fitted on the
    validation split now."""
    from exitwise.data import iterate_batches
    from exitwise.experiments.calibration import run_policy_context
    from exitwise.routing import collect_outputs

    def val_outputs():
        return collect_outputs(model, iterate_batches(data.val, 256))[0], data.val.labels

    return run_policy_context(run_dir, model.num_exits, val_outputs)


def _train(cfg, data):
    from exitwise.experiments.pipeline import train_run

    with _progress() as progress:
        task = progress.add_task("training", total=None, info="")

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            progress.update(
                task,
                total=steps,
                completed=step + 1,
                description=f"epoch {epoch + 1}/{cfg.train.total_epochs}",
                info=f"loss {loss:.3f}",
            )

        def on_epoch(rec: dict) -> None:
            accs = " ".join(f"{100 * a:.1f}" for a in rec["val_accuracy"])
            progress.console.print(
                f"epoch {rec['epoch']:>3} \\[{rec['phase']}]  loss {rec['train_loss']:.4f}  "
                f"val acc per exit (%): {accs}  ({rec['seconds']:.0f} s)"
            )

        model, result, data = train_run(cfg, data, on_step=on_step, on_epoch=on_epoch)
    if result.resumed_from_epoch:
        console.print(f"resumed from the checkpoint of epoch {result.resumed_from_epoch}")
    console.print(
        f"trained {cfg.train.total_epochs} epochs in {result.seconds / 60:.1f} min -> "
        f"{cfg.output_dir}/model.safetensors"
    )
    return model


def _evaluate(cfg, run_dir: Path, data, command: str):
    from exitwise.experiments.pipeline import evaluate_run

    with _progress() as progress:
        task = progress.add_task("evaluating", total=len(data.test) + len(data.val), info="")
        evaluation, report = evaluate_run(
            run_dir, cfg, data, progress=lambda n: progress.advance(task, n), command=command
        )
    _summary(evaluation)
    console.print(f"\n[bold green]report:[/bold green] {report.resolve()}")
    return evaluation


def _summary(ev) -> None:
    """The evaluation's per-exit table and each rule's validation-chosen point, in the terminal."""
    from exitwise.report import format as fmt

    bb = ev.costs.backbone_flops
    table = Table(title=ev.title)
    for col in ("exit", "after", "accuracy", "MFLOPs to reach", "% of backbone"):
        table.add_column(col, justify="right")
    for e in ev.exits:
        table.add_row(
            str(e.exit),
            e.block,
            fmt.pct(e.accuracy, 2),
            f"{e.path_flops / 1e6:.1f}",
            fmt.pct(e.path_flops / bb),
        )
    console.print(table)
    for name, pol in ev.policies.items():
        ch = pol.chosen
        if ch:
            shares = fmt.shares(ch.exit_shares)
            console.print(
                f"{name}: threshold {ch.threshold:g} (chosen on validation) -> test accuracy "
                f"{fmt.pct(ch.accuracy, 2)} at {fmt.pct(ch.flops_fraction)} of the "
                f"backbone's FLOPs; exit shares {shares}"
            )
    o = ev.oracle
    console.print(f"oracle: {fmt.pct(o.accuracy, 2)} at {fmt.pct(o.flops_fraction)} of the FLOPs")


def _command() -> str:
    return "exitwise " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def run(config: ConfigOpt = None, overrides: Overrides = None, device: DeviceOpt = None) -> None:
    """The main job: train a multi-exit network, evaluate every exit and policy, write a report.

    Defaults: BranchyResNet18 on the built-in synthetic-signs dataset (no downloads), about
    4 minutes on 2 CPU cores. Results go to output_dir (runs/signs): model.safetensors +
    model.json, evaluation.json, CSV tables, PNG figures and report.html. Re-running resumes an
    interrupted training.
    """
    cfg = _setup(config, _with_device(overrides, device), trains=True)
    data = _load_data(cfg)
    _train(cfg, data)
    _evaluate(cfg, Path(cfg.output_dir), data, _command())


@app.command()
def train(config: ConfigOpt = None, overrides: Overrides = None, device: DeviceOpt = None) -> None:
    """Train only (resumes from output_dir's checkpoint if one of the same config is there, also
    one trained on another device)."""
    cfg = _setup(config, _with_device(overrides, device), trains=True)
    _train(cfg, _load_data(cfg))


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise train`")],
    overrides: Overrides = None,
    device: DeviceOpt = None,
) -> None:
    """Evaluate a trained model on its dataset's test split and write the report into RUN_DIR.

    Thresholds are chosen on the validation split. The run's own config (run_config.json) is
    used; overrides (e.g. eval.tolerance=0.01) apply on top.
    """
    cfg = _setup(None, _with_device(overrides, device), run_dir)
    _evaluate(cfg, run_dir, _load_data(cfg), _command())


@app.command()
def robustness(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise run`/`train`")],
    samples: Annotated[int, typer.Option(help="test images used (a seeded random subset)")] = 500,
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="max-probability threshold of the routed model (default: the one "
            "chosen on validation in evaluation.json, else 0.9)"
        ),
    ] = None,
    cap_exit: Annotated[
        int, typer.Option(help="also report the slowdown defence that caps exits at this exit")
    ] = 1,
    quick: Annotated[bool, typer.Option(help="fewer levels per disturbance")] = False,
    seed: Annotated[int, typer.Option(help="seeds the subset, the noise and random starts")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Robustness study (seed 000 Figs. 5 and 6): noise, blur, FGSM/PGD/BIM/DeepFool and the
    slowdown attack, at increasing levels. For each: accuracy of every exit, routed accuracy, mean
    FLOPs and exit shares, for the early-exit model and the backbone alone. Writes
    RUN_DIR/robustness/ (study.json, CSV, PNG, robustness.html); an interrupted study resumes.
    """
    from exitwise.devices import resolve_device
    from exitwise.experiments.robustness import plan_robustness, run_robustness
    from exitwise.report import robustness_markdown, write_robustness_report
    from exitwise.training.checkpoint import check_model_fits

    cfg = _setup(None, _with_device(None, device), run_dir)
    plan = plan_robustness(
        run_dir, samples, threshold, cap_exit, quick, seed, device=resolve_device(cfg.device)
    )
    data = _load_data(cfg)
    check_model_fits(plan.model, data, run_dir)
    console.print(
        f"routed model: {plan.policy!r} (threshold {plan.threshold_source}); defence: capped at "
        f"exit {plan.cap_exit}; {min(plan.samples, len(data.test))} images"
    )
    name = cfg.model.preset or plan.model.config["backbone"]
    with _progress() as progress:
        task = progress.add_task("robustness", total=plan.total, info="")
        study = run_robustness(
            plan,
            data.test.images,
            data.test.labels,
            data.name,
            f"Robustness of {name} on {data.name}",
            _command(),
            progress=lambda key: progress.update(task, advance=1, info=key),
        )
    report = write_robustness_report(study, plan.out_dir)
    print(robustness_markdown(study))
    console.print(f"\n[bold green]robustness report:[/bold green] {report.resolve()}")


@app.command()
def risk(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise run`/`train`")],
    epsilon: Annotated[
        float, typer.Option(help="the risk to control, e.g. 0.02 = 2% of images changed")
    ] = 0.02,
    delta: Annotated[float, typer.Option(help="LTT: P(risk > epsilon) <= delta")] = 0.1,
    method: Annotated[
        str, typer.Option(help="crc (expected risk <= epsilon) or ltt (with probability)")
    ] = "ltt",
    rule: Annotated[
        str, typer.Option(help="shared (one threshold) or per_exit (a threshold per exit)")
    ] = "shared",
    splits: Annotated[
        int, typer.Option(help="random calibration/test splits of the evidence")
    ] = 200,
    shift_samples: Annotated[
        int, typer.Option(help="test images blurred / noised for the shift check (0: skip)")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="seeds the splits and the disturbances")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Exit thresholds with guarantees (Jazbec et al. 2024): Conformal Risk Control and
    Learn-then-Test for the disagreement with the final exit and for the ground-truth gap, with
    one shared threshold and per-exit thresholds. Calibrated on validation with the run's
    temperatures and measured on test; evidence over many random splits of the test set; the
    rules under blur and noise. Writes RUN_DIR/risk/ (risk.json, CSV, PNG, risk.html) and prints
    the tables. The fitted rule is an ordinary max-probability rule (thresholds in risk.json).
    """
    from exitwise.experiments.risk import RiskSettings, run_risk
    from exitwise.report import risk_markdown, write_risk_report

    settings = RiskSettings(
        epsilon=epsilon, delta=delta, method=method, rule=rule, splits=splits,  # type: ignore[arg-type]
        shift_samples=shift_samples, seed=seed,
    )  # fmt: skip
    settings.check()
    cfg, model, data = _trained_run(run_dir, _with_device(None, device))
    name = cfg.model.preset or model.config["backbone"]
    with console.status("risk control: outputs, fits, evidence, shift...") as status:
        result = run_risk(
            run_dir,
            model,
            data,
            settings,
            f"Risk control of {name} on {data.name}",
            _command(),
            progress=lambda step: status.update(f"risk control: {step}"),
        )
    report = write_risk_report(result, run_dir / "risk")
    print(risk_markdown(result))
    console.print(f"\n[bold green]risk report:[/bold green] {report.resolve()}")


@app.command()
def summary(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories with evaluation.json")],
    at: Annotated[
        Optional[list[float]],  # noqa: UP045
        typer.Option(
            help="also every rule's test point at this threshold (repeatable), e.g. --at 0.8 "
            "--at 0.9 for seed 002's committee settings"
        ),
    ] = None,
) -> None:
    """Print the evaluation of one or more runs as Markdown tables (for docs and notes)."""
    from exitwise.report import efficiency_markdown, operating_points_markdown

    for ev in [_read_evaluation(d) for d in run_dirs]:  # every file is checked before printing
        print(efficiency_markdown(ev))
        if at:
            print(operating_points_markdown(ev, at))


def _read_evaluation(run_dir: Path):
    """The run's evaluation.json as an EfficiencyResult (ResultError, a one-line InputError,
    when it is missing, old or damaged)."""
    from exitwise.results import EfficiencyResult

    return EfficiencyResult.load(run_dir / "evaluation.json")


@app.command()
def compare(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="run directories with evaluation.json, compared together")
    ],
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="run of the plain network (its final exit is the reference accuracy and its "
            "FLOPs are 100%); default: the first run's final exit"
        ),
    ] = None,
    budget: Annotated[
        Optional[list[float]],  # noqa: UP045
        typer.Option(help="mean-FLOPs budget as a fraction of the reference (repeatable)"),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="accuracy tolerance vs the reference (0.005 = 0.5 points)")
    ] = 0.005,
    goal_fraction: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="also check 'within tolerance at <= this fraction of the FLOPs'"),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="write comparison.json, comparison.md and comparison.png here"),
    ] = None,
) -> None:
    """Compare runs at equal mean FLOPs (e.g. EENets vs BranchyNet exits on one backbone) and
    against a plain network. Thresholds are chosen on each run's validation split; test numbers
    are reported. Prints Markdown tables."""
    from exitwise.experiments.compare import compare_runs
    from exitwise.report import comparison_markdown, write_comparison

    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; expected a folder for the comparison files")
    if goal_fraction is not None and not goal_fraction > 0:
        raise InputError(f"--goal-fraction must be a positive fraction, got {goal_fraction}")
    runs = {}
    for d in run_dirs:
        name = d.resolve().name
        if name in runs:
            raise InputError(f"two runs are named {name}: give directories with distinct names")
        runs[name] = _read_evaluation(d)
    ref = (reference.resolve().name, _read_evaluation(reference)) if reference else None
    result = compare_runs(runs, budget or (0.2, 0.3, 0.4, 0.5), ref, tolerance, goal_fraction)
    print(comparison_markdown(result))
    if out is not None:
        for path in write_comparison(result, out):
            err.print(f"wrote {path}")


def _numbers(text: str, flag: str, kind: type = float) -> tuple:
    """``"0,0.5,1"`` as numbers, or a one-line error naming the flag."""
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"{flag} must be comma-separated {kind.__name__}s such as 0.8,0.9, got {text!r}"
        ) from None
    if not values:
        raise InputError(f"{flag} must name at least one value, got {text!r}")
    return values


@app.command()
def offload(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise run`/`train`")],
    link: Annotated[
        str,
        typer.Option(
            help="netns: two network namespaces joined by a veth pair shaped by tc tbf, the "
            "delay by a relay (or netem); loopback: the relay alone on 127.0.0.1; auto: netns "
            "when permitted"
        ),
    ] = "auto",
    samples: Annotated[
        int, typer.Option(help="images timed one at a time through the link per row")
    ] = 100,
    sigmas: Annotated[
        str, typer.Option(help="Gaussian blur levels (pixels), seed 002's by default")
    ] = "0,0.1,0.2,0.5,0.8,0.9,1,1.2,1.5,1.8",
    alphas: Annotated[str, typer.Option(help="confidence thresholds at the edge")] = "0.8,0.9",
    k: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="active side exits on the edge, e.g. 1,2,3 (default: every one)"),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="edge rules: max_probability and/or committee")
    ] = "max_probability,committee",
    rate_mbit: Annotated[float, typer.Option(help="link rate (seed 002: 93.9)")] = 93.9,
    rtt_ms: Annotated[float, typer.Option(help="round-trip time (seed 002: 11.91)")] = 11.91,
    jitter_ms: Annotated[float, typer.Option(help="std of the RTT (seed 002: 0.66)")] = 0.66,
    fp16: Annotated[bool, typer.Option(help="send FP16 features instead of FP32")] = False,
    iperf_seconds: Annotated[
        float, typer.Option(help="iperf3 duration for the throughput (0: skip)")
    ] = 5.0,
    seed: Annotated[int, typer.Option(help="seeds the timed subset and the jitter")] = 0,
) -> None:
    """Seed 002's edge-cloud offloading study: blur levels x alpha x k, max-probability and the
    committee at the edge against the cloud-only baseline, over an emulated link (seed 002's:
    93.9 Mbit/s, RTT 11.91 +- 0.66 ms) measured first with iperf3 and empty HTTP round trips.
    The cloud is a real `exitwise serve` on its own core. Accuracy, edge share, FLOPs and bytes
    are exact over the test split; latency is timed per image with a 95% CI. Resumable. Writes
    RUN_DIR/offload/ (offload.json, link.json, CSV, PNG, offload.html) and prints the tables."""
    from exitwise.experiments.offload import OffloadSettings, total_rows
    from exitwise.serving.link import LinkSpec, LinkUnavailable

    if link not in ("netns", "loopback", "auto"):
        raise InputError(f"--link must be netns, loopback or auto, got {link!r}")
    try:
        spec = LinkSpec(rate_mbit=rate_mbit, rtt_ms=rtt_ms, jitter_ms=jitter_ms)
    except ValueError as e:
        raise InputError(f"link: {e}") from None
    settings = OffloadSettings(
        sigmas=_numbers(sigmas, "--sigmas"),
        alphas=_numbers(alphas, "--alphas"),
        edge_exits=None if k is None else _numbers(k, "--k", int),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        latency_images=samples,
        features="FP16" if fp16 else "FP32",
        seed=seed,
    )
    if iperf_seconds < 0:
        raise InputError(f"--iperf-seconds must be >= 0, got {iperf_seconds}")

    from exitwise.experiments.offload import offload_config, run_offload
    from exitwise.report import offload_markdown, write_offload_report

    cfg, model, data = _trained_run(run_dir, device="cpu")
    settings.check(model.num_exits)
    ctx = _policy_context(model, data, run_dir)
    name = cfg.model.preset or model.config["backbone"]
    config = offload_config(model, str(run_dir), data.name, len(data.test), settings, ctx)
    with _progress() as progress:
        task = progress.add_task("offloading", total=total_rows(config), info="")
        try:
            result = run_offload(
                run_dir, model, data.test.images, data.test.labels, ctx, settings,
                dataset=data.name, title=f"Edge-cloud offloading of {name} on {data.name}",
                mode=link, spec=spec, command=_command(), iperf_seconds=iperf_seconds,
                progress=lambda label: progress.update(task, advance=1, info=label),
            )  # fmt: skip
        except LinkUnavailable as e:
            raise InputError(f"{e} (--link loopback runs without namespaces)") from None
    files = write_offload_report(result, run_dir / "offload")
    print(offload_markdown(result))
    console.print(f"\n[bold green]offload report:[/bold green] {files[-1].resolve()}")


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise train`")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1..65535")] = 8000,
    token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="require `Authorization: Bearer TOKEN` on /v2/models/..."),
    ] = None,
    max_body_mb: Annotated[float, typer.Option(help="larger request bodies get 413")] = 64.0,
    timeout_s: Annotated[float, typer.Option(help="slower model runs get 504")] = 30.0,
    max_in_flight: Annotated[
        int, typer.Option(help="requests computed at once; one more gets 503")
    ] = 8,
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="CPU threads of the model (default: PyTorch's, one per core)"),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            help="dynamic batching: concurrent requests to a model share one run of up to this "
            "many samples (1: off)"
        ),
    ] = 1,
    max_delay_ms: Annotated[
        float, typer.Option(help="dynamic batching: how long a batch waits for more requests")
    ] = 2.0,
    device: DeviceOpt = None,
) -> None:
    """Serve the run's cloud parts over the Open Inference Protocol (KServe v2, binary tensors):
    cloud_k{k} after each side exit k, and cloud_image (the whole model, the cloud-only
    baseline)."""

    if not host.strip():
        raise InputError("--host must be an address, e.g. 127.0.0.1 or 0.0.0.0")
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {port}")
    if token is not None and not token.strip():
        raise InputError("--token must not be empty; omit it to serve without a token")
    for flag, value in (("--max-body-mb", max_body_mb), ("--timeout-s", timeout_s)):
        if not value > 0:
            raise InputError(f"{flag} must be > 0, got {value}")
    if max_in_flight < 1:
        raise InputError(f"--max-in-flight must be >= 1, got {max_in_flight}")
    dev = _device_option(device, "auto")
    if max_batch < 1:
        raise InputError(f"--max-batch must be >= 1 (1: no batching), got {max_batch}")
    if not (math.isfinite(max_delay_ms) and 0 <= max_delay_ms < 1000 * timeout_s):
        raise InputError(
            f"--max-delay-ms must be >= 0 and shorter than --timeout-s, got {max_delay_ms}"
        )
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)

    import uvicorn

    from exitwise.serving.server import IMAGE_MODEL, ServerLimits, build_app, cloud_model_name
    from exitwise.training.checkpoint import load_model

    model = load_model(run_dir, device=dev).model
    limits = ServerLimits(
        max_body_bytes=max(1, int(max_body_mb * 2**20)),
        timeout_s=timeout_s,
        max_in_flight=max_in_flight,
        token=token,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms if max_batch > 1 else 0.0,
    )
    names = [cloud_model_name(k) for k in range(model.num_exits - 1)] + [IMAGE_MODEL]
    err.print(f"serving {', '.join(names)} on {dev} at http://{host}:{port}/v2")
    uvicorn.run(build_app(model, limits=limits), host=host, port=port, log_level="warning")


def _edge_policy(model, data, run_dir: Path, method: str):
    """``make(alpha)`` for the edge rule ``method`` in the run's context: its saved temperatures
    and committee weights, else fitted on the validation split now."""
    from exitwise.policies import POLICIES

    ctx = _policy_context(model, data, run_dir)
    if method == "committee" and ctx.exit_weights is not None and ctx.exit_weights[0] == 0:
        raise InputError("exit 0 classifies no validation image right; the committee needs it")
    return lambda alpha: POLICIES.get(method).make(alpha, ctx)


@app.command()
def edge(
    run_dir: Annotated[Path, typer.Argument(help="a directory written by `exitwise train`")],
    cloud: Annotated[
        str, typer.Option(help="the cloud server (`exitwise serve`), e.g. http://127.0.0.1:8000")
    ],
    split: Annotated[int, typer.Option(help="split after this side exit k (cloud_k{k})")],
    threshold: Annotated[
        float, typer.Option(help="max-probability threshold (the committee's alpha)")
    ],
    committee: Annotated[
        bool, typer.Option(help="seed 002's committee of edge exits, weighted by val accuracy")
    ] = False,
    samples: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="the first N test images (default: all)", show_default=False),
    ] = None,
    token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="send `Authorization: Bearer TOKEN`"),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(help="wait this long for the cloud, then fall back")
    ] = 10.0,
    batch_size: Annotated[int, typer.Option(help="images per edge batch (one request)")] = 64,
    fp16: Annotated[bool, typer.Option(help="send FP16 features instead of FP32")] = False,
    device: DeviceOpt = None,
) -> None:
    """The edge runtime on the run's test split: early exit on the edge up to exit k, the rest
    offloaded to the cloud in one request per batch; falls back to the most confident edge exit
    when the cloud fails. Prints accuracy, edge share, fallback count and mean latency."""
    if not cloud.startswith(("http://", "https://")):
        raise InputError(f"--cloud must be a URL such as http://127.0.0.1:8000, got {cloud!r}")
    if split < 0:
        raise InputError(f"--split must be a side exit >= 0, got {split}")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise InputError(
            f"--threshold must be a number >= 0 (above 1: never leave), got {threshold}"
        )
    if samples is not None and samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    if token is not None and not token.strip():
        raise InputError("--token must not be empty; omit it to send none")
    if not timeout_s > 0:
        raise InputError(f"--timeout-s must be > 0, got {timeout_s}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    dev = _device_option(device, "cpu")

    from exitwise.serving.edge import EdgeRuntime, run_batches

    def check_split(model) -> None:
        if split > model.num_exits - 2:
            raise InputError(
                f"--split must be a side exit in 0..{model.num_exits - 2} of this model, "
                f"got {split}"
            )

    _, model, data = _trained_run(run_dir, device=dev, check_model=check_split)
    # the run's calibration (temperatures, committee weights), else fitted on validation now
    policy = _edge_policy(model, data, run_dir, "committee" if committee else "max_probability")(
        threshold
    )
    images, labels = data.test.images, data.test.labels
    if samples is not None:
        images, labels = images[:samples], labels[:samples]
    features = "FP16" if fp16 else "FP32"
    with EdgeRuntime(
        model, split, policy, cloud, token, features, read_timeout_s=timeout_s
    ) as runtime:
        err.print(f"{runtime!r}: {len(images)} test images in batches of {batch_size}")
        results = run_batches(runtime, images, batch_size)
    n = len(images)
    correct = sum(
        int((r.prediction == labels[i * batch_size : i * batch_size + len(r)]).sum())
        for i, r in enumerate(results)
    )
    on_edge = sum(len(r) - r.offloaded for r in results)
    fallback = sum(r.fallback_count for r in results)
    reasons = sorted({r.fallback_reason for r in results if r.fallback_reason})
    sent = [r.payload_bytes for r in results if r.payload_bytes]

    def mean_ms(field: str) -> float:
        return sum(getattr(r, field) for r in results) / len(results)

    console.print(
        f"accuracy {100 * correct / n:.2f}% on {n} images; edge share {100 * on_edge / n:.1f}%; "
        f"fallback {fallback}"
    )
    console.print(
        f"mean latency per batch {mean_ms('total_ms'):.1f} ms (edge {mean_ms('edge_ms'):.1f}, "
        f"codec {mean_ms('encode_ms'):.1f}, network+cloud {mean_ms('network_ms'):.1f}); "
        f"per image {len(results) * mean_ms('total_ms') / n:.2f} ms"
    )
    if sent:
        console.print(f"{len(sent)} requests, {sum(sent) / len(sent):.0f} bytes each on average")
    for reason in reasons:
        console.print(f"fallback reason: {reason}")


@app.command()
def validate(config: ConfigOpt = None, overrides: Overrides = None) -> None:
    """Check a config and its overrides, and print the resolved configuration as YAML."""
    import yaml

    cfg = _setup(config, overrides)
    console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


@app.command()
def info(
    preset: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="also print the cost account of this preset at 3x32x32, 43 classes"),
    ] = None,
) -> None:
    """List backbones, presets, exit heads, datasets, exit policies, loss-weight schedules and
    the shipped configs."""
    from exitwise.config import shipped_configs
    from exitwise.data import DATASETS
    from exitwise.nets import BACKBONES, EXIT_HEADS, PRESETS, build_preset
    from exitwise.policies import POLICIES
    from exitwise.registry import did_you_mean
    from exitwise.training import LOSS_WEIGHTS

    if preset is not None and preset not in PRESETS:
        hint = did_you_mean(preset, PRESETS)
        raise InputError(
            f"--preset: unknown preset {preset!r}.{hint} Available: {', '.join(sorted(PRESETS))}"
        )
    for title, names in (
        ("backbones", BACKBONES.names()),
        ("presets", sorted(PRESETS)),
        ("exit heads", EXIT_HEADS.names()),
        ("datasets", DATASETS.names()),
        ("exit policies", POLICIES.names()),
        ("loss weights", LOSS_WEIGHTS.names()),
        ("configs (--config NAME)", shipped_configs()),
    ):
        console.print(f"[bold]{title}:[/bold] {', '.join(names)}")
    if preset:
        net = build_preset(preset, 43)
        table = Table(title=f"{preset}: FLOPs = 2 x MACs, per image at {net.input_shape}")
        for col in (
            "exit",
            "after",
            "stage MFLOPs",
            "head MFLOPs",
            "path MFLOPs",
            "path MMACs",
            "% of backbone",
        ):
            table.add_column(col, justify="right")
        blocks = [*net.exit_blocks, "final"]
        for r in net.costs.rows():
            table.add_row(
                str(r["exit"]),
                blocks[int(r["exit"])],
                f"{r['stage_flops'] / 1e6:.2f}",
                f"{r['head_flops'] / 1e6:.2f}",
                f"{r['path_flops'] / 1e6:.2f}",
                f"{r['path_macs'] / 1e6:.2f}",
                f"{100 * r['path_fraction']:.1f}%",
            )
        console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

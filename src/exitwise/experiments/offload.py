"""The edge-cloud offloading study of a trained run (issue 12, floor 5), after seed 002
(Pacheco et al.): an early-exit network split between an edge device and a cloud server.

The edge runs the network up to its k-th side exit; a sample that no edge exit lets go (the
max-probability rule, or seed 002's accuracy-weighted committee, at confidence alpha) is
offloaded: the tensor after exit k travels over HTTP (Open Inference Protocol, binary tensor
extension) and the cloud answers at the final exit. The baseline sends the raw image to the
cloud, which runs the whole network. Seed 002's grid: Gaussian blur sigma in
``LEVEL_GRIDS["seed002_blur"]``, alpha in {0.8, 0.9}, k in {1, 2, 3}; the rules are
temperature-calibrated (per exit, on the validation split) and the committee weighs each exit by
its validation accuracy, clean (the seed's own code took them from the test set, keyed by the
blur level of the request; we never look at the test set or the level).

Per row, two kinds of numbers:

* exact, over the whole test set, from the outputs of every exit computed once per blur level
  and :class:`~exitwise.policies.Offloaded` (what the edge runtime and the cloud decide
  together): total accuracy, the share classified at the edge, mean FLOPs on each side, and the
  request bytes per offloaded image (the binary request's body, and the same tensor as JSON
  lists, the seed's encoding);
* measured for real: the end-to-end latency of ``latency_images`` images (a seeded subset, the
  same for every row), each classified alone by :class:`~exitwise.serving.edge.EdgeRuntime`
  through the link to a real ``exitwise serve``, with the 95% confidence interval of the mean.
  The live answers are compared with the exact simulation (``live_agreement``).

The study is resumable: every finished row is saved at once, and a rerun under the same
configuration measures only the missing rows.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from exitwise.atomic import write_json
from exitwise.cost import CostAccount
from exitwise.data import ArrayDataset, iterate_batches
from exitwise.devices import describe_device
from exitwise.errors import InputError
from exitwise.experiments.robustness import model_fingerprint
from exitwise.nets import MultiExitNet
from exitwise.outputs import ExitOutput
from exitwise.policies import POLICIES, ExitPolicy, Offloaded, PolicyContext
from exitwise.results import LinkInfo, OffloadConfig, OffloadResult, OffloadRow, ResultError
from exitwise.robustness.corruptions import LEVEL_GRIDS, corrupt
from exitwise.routing import collect_outputs, simulate
from exitwise.serving.edge import CloudOnly, EdgeResult, EdgeRuntime
from exitwise.serving.link import EmulatedLink, LinkMeasurement, LinkSpec, measure_link, pin
from exitwise.serving.protocol import encode_request

__all__ = [
    "METHODS",
    "CLOUD_ONLY",
    "OffloadSettings",
    "Classifier",
    "blurred",
    "edge_policy",
    "offload_study",
    "mean_ci95",
    "t975",
    "json_request_bytes",
    "offload_config",
    "total_rows",
    "resumable",
    "link_info",
    "run_offload",
]

#: The rules the edge may use (seed 002's EE-DNN and committee of side exits).
METHODS = ("max_probability", "committee")
#: The baseline's method name: the raw image to the cloud, the whole network there.
CLOUD_ONLY = "cloud_only"

#: Classifies one batch (edge runtime, or the cloud-only client) for a row: (method, alpha, k).
Classifier = Callable[[Tensor], EdgeResult]


@dataclass(frozen=True)
class OffloadSettings:
    """Seed 002's grid and how much is measured live.

    Attributes:
        sigmas: Gaussian blur levels (standard deviation in pixels).
        alphas: confidence thresholds of the edge's rules.
        edge_exits: k, the number of active side exits on the edge (1-based, as in the seed;
            the model is split after side exit ``k - 1``); ``None``: every k.
        methods: edge rules, a subset of :data:`METHODS`.
        latency_images: images classified one at a time through the link for each row.
        features: datatype of the offloaded tensor, ``FP32`` or ``FP16``.
        seed: seed of the latency subset.
        warmup: requests made (and not counted) before each row's measurement.
    """

    sigmas: tuple[float, ...] = LEVEL_GRIDS["seed002_blur"]
    alphas: tuple[float, ...] = (0.8, 0.9)
    edge_exits: tuple[int, ...] | None = None
    methods: tuple[str, ...] = METHODS
    latency_images: int = 100
    features: str = "FP32"
    seed: int = 0
    warmup: int = 3

    def ks(self, num_exits: int) -> tuple[int, ...]:
        """The k of the grid for a model with ``num_exits`` exits (checked)."""
        ks = self.edge_exits if self.edge_exits is not None else tuple(range(1, num_exits))
        bad = [k for k in ks if not 1 <= k <= num_exits - 1]
        if bad:
            raise InputError(
                f"edge exits k must be in 1..{num_exits - 1} (side exits of this model), got {bad}"
            )
        return tuple(ks)

    def check(self, num_exits: int) -> None:
        """Refuse a grid that cannot run, with one line saying what was expected."""
        if not self.sigmas or any(not (math.isfinite(s) and s >= 0) for s in self.sigmas):
            raise InputError(f"sigmas must be numbers >= 0, got {list(self.sigmas)}")
        if not self.alphas or any(not (0 <= a <= 1) for a in self.alphas):
            raise InputError(f"alphas must be in [0, 1], got {list(self.alphas)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown:
            raise InputError(f"methods must be among {list(METHODS)}, got {list(self.methods)}")
        if self.latency_images < 2:
            raise InputError(
                f"latency_images must be >= 2 (a confidence interval needs two), got "
                f"{self.latency_images}"
            )
        if self.features not in ("FP32", "FP16"):
            raise InputError(f"features must be FP32 or FP16, got {self.features!r}")
        if self.warmup < 0:
            raise InputError(f"warmup must be >= 0, got {self.warmup}")
        self.ks(num_exits)


def blurred(images: Tensor, sigma: float) -> Tensor:
    """uint8 images blurred with standard deviation ``sigma`` pixels and quantised back to
    uint8: what a blurred camera delivers, the same bytes for the edge and the cloud."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if sigma == 0:
        return images.clone()
    x = corrupt("gaussian_blur", images.float() / 255, sigma)
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


def edge_policy(method: str, alpha: float, ctx: PolicyContext) -> ExitPolicy:
    """The edge's rule ``method`` at confidence ``alpha`` in the run's context."""
    if method not in METHODS:
        raise InputError(f"unknown edge rule {method!r}; expected one of {list(METHODS)}")
    return POLICIES.get(method).make(alpha, ctx)


#: Student's t 0.975 quantiles for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    """Student's t 0.975 quantile: tabulated up to 30 degrees of freedom, above from the
    Cornish-Fisher expansion around the normal quantile (error below 1e-4 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, half-width of its 95% confidence interval (Student's t), standard deviation."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a confidence interval needs >= 2 values, got {n}")
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return mean, t975(n - 1) * std / math.sqrt(n), std


def json_request_bytes(name: str, tensor: Tensor) -> int:
    """Bytes of an inference request carrying ``tensor`` as JSON lists (``tensor.tolist()``,
    the seed's encoding) instead of raw bytes."""
    datatype = {torch.float32: "FP32", torch.float16: "FP16", torch.uint8: "UINT8"}[tensor.dtype]
    body = {
        "inputs": [
            {
                "name": name,
                "shape": list(tensor.shape),
                "datatype": datatype,
                "data": tensor.flatten().tolist(),
            }
        ]
    }
    return len(json.dumps(body, separators=(",", ":")).encode())


@dataclass
class _Level:
    """One blur level: the test images, every exit's outputs, and the latency subset."""

    sigma: float
    images: Tensor  # uint8, all test images
    outputs: list[ExitOutput]
    subset: Tensor  # indices of the latency images


def _level(
    model: MultiExitNet, images: Tensor, sigma: float, subset: Tensor, batch_size: int
) -> _Level:
    x = blurred(images, sigma)
    data = ArrayDataset(x, torch.zeros(len(x), dtype=torch.int64))
    outputs, _ = collect_outputs(model, iterate_batches(data, batch_size))
    return _Level(sigma, x, outputs, subset)


def _request_sizes(
    model: MultiExitNet, image: Tensor, k: int | None, features: str
) -> tuple[int, int]:
    """Bytes of the request that carries one uint8 ``image`` (``k`` None: the raw image to the
    cloud-only baseline) or the tensor the edge sends after its ``k``-th side exit: binary, and
    as JSON lists."""
    if k is None:
        return len(encode_request({"image": image})[0]), json_request_bytes("image", image)
    p = next(model.parameters())
    edge, _ = model.split(k - 1)
    with torch.no_grad():
        h = edge(image.to(p.device).to(p.dtype) / 255)[1]
    h = h.cpu().to(torch.float16 if features == "FP16" else torch.float32)
    return len(encode_request({"features": h})[0]), json_request_bytes("features", h)


def _exact(
    level: _Level,
    labels: Tensor,
    costs: CostAccount,
    policy: Offloaded | None,
) -> tuple[dict[str, float], Tensor, Tensor]:
    """Accuracy, edge share and FLOPs per side over the whole test set, and the predictions
    and 'decided on the edge' flags of every image."""
    n = len(labels)
    if policy is None:  # cloud-only: the conventional network, the backbone alone
        pred = level.outputs[-1].logits.argmax(1)
        flops = {"edge_flops": 0.0, "cloud_flops": float(costs.backbone_flops)}
        at_edge = torch.zeros(n, dtype=torch.bool)
    else:
        res = simulate(level.outputs, policy, costs)
        pred = res.prediction
        at_edge = res.exit_idx <= policy.k
        classes = level.outputs[0].logits.shape[1]
        decide = sum(policy.decision_flops(i, classes) for i in range(policy.k + 1))
        handed_over = costs.path_flops[policy.k] + decide
        edge = torch.where(at_edge, res.flops.double(), torch.full((n,), float(handed_over)))
        # the cloud runs its stages and the final exit alone (no side head: it has no rule)
        cost = sum(costs.stage_flops[policy.k + 1 :]) + costs.exit_flops[-1]
        cloud = torch.where(at_edge, 0.0, float(cost)).double()
        flops = {"edge_flops": float(edge.mean()), "cloud_flops": float(cloud.mean())}
    exact = {
        "accuracy": float((pred == labels).double().mean()),
        "edge_share": float(at_edge.double().mean()),
        **flops,
    }
    return exact, pred, at_edge


def _live(
    classify: Classifier,
    level: _Level,
    expected: Tensor,
    expected_edge: Tensor,
    warmup: int,
) -> dict[str, float | int]:
    """Classify the subset one image at a time; latency statistics and agreement."""
    images = level.images
    for j in level.subset[:warmup].tolist():
        classify(images[j : j + 1])
    totals, edge_ms, network_ms = [], [], []
    agree = fallbacks = at_edge = 0
    for j in level.subset.tolist():
        r = classify(images[j : j + 1])
        totals.append(r.total_ms)
        edge_ms.append(r.edge_ms)
        network_ms.append(r.network_ms)
        where = r.where[0]
        fallbacks += where == "fallback"
        at_edge += where == "edge"
        agree += bool(r.prediction[0] == expected[j]) and (where == "edge") == bool(
            expected_edge[j]
        )
    mean, ci, std = mean_ci95(totals)
    m = len(totals)
    return {
        "latency_ms": mean,
        "latency_ci95_ms": ci,
        "latency_std_ms": std,
        "edge_ms": statistics.fmean(edge_ms),
        "network_ms": statistics.fmean(network_ms),
        "latency_images": m,
        "live_edge_share": at_edge / m,
        "live_agreement": agree / m,
        "fallbacks": fallbacks,
    }


def _key(sigma: float, method: str, alpha: float | None, k: int | None) -> tuple:
    return (round(sigma, 9), method, None if alpha is None else round(alpha, 9), k)


def _row_key(row: OffloadRow) -> tuple:
    return _key(row.sigma, row.method, row.alpha, row.edge_exits)


def offload_config(
    model: MultiExitNet,
    run: str,
    dataset: str,
    test_images: int,
    settings: OffloadSettings,
    ctx: PolicyContext,
) -> OffloadConfig:
    """The configuration an offloading study of ``model`` runs under (checked)."""
    settings.check(model.num_exits)
    temps = ctx.temperature
    temperatures = list(temps) if isinstance(temps, tuple) else [float(temps)] * model.num_exits
    return OffloadConfig(
        run=run,
        dataset=dataset,
        input_shape=list(model.input_shape),
        num_exits=model.num_exits,
        sigmas=[float(s) for s in settings.sigmas],
        alphas=[float(a) for a in settings.alphas],
        edge_exits=list(settings.ks(model.num_exits)),
        methods=list(settings.methods),
        latency_images=min(settings.latency_images, test_images),
        test_images=test_images,
        features=settings.features,  # type: ignore[arg-type]
        seed=settings.seed,
        temperatures=[float(t) for t in temperatures],
        exit_weights=[float(w) for w in ctx.exit_weights or ()],
        fingerprint=model_fingerprint(model),
    )


def total_rows(config: OffloadConfig) -> int:
    """Rows of the study: per level, every rule x alpha x k, and the cloud-only baseline."""
    per_level = len(config.methods) * len(config.alphas) * len(config.edge_exits) + 1
    return len(config.sigmas) * per_level


def resumable(path: Path | None, config: OffloadConfig) -> list[OffloadRow]:
    """The rows saved at ``path`` if that study ran under an equal configuration."""
    if path is None or not path.exists():
        return []
    try:
        saved = OffloadResult.load(path)
    except ResultError:
        return []  # another format or damaged: start afresh (it is overwritten as we go)
    return list(saved.rows) if saved.config == config else []


def offload_study(
    model: MultiExitNet,
    images: Tensor,
    labels: Tensor,
    config: OffloadConfig,
    ctx: PolicyContext,
    classifier: Callable[[str, float | None, int | None], Classifier],
    title: str,
    link: LinkInfo | None = None,
    state_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    batch_size: int = 256,
    warmup: int = 3,
) -> OffloadResult:
    """Seed 002's grid over uint8 test ``images``: exact accuracy, edge share, FLOPs and bytes,
    and the live latency through ``classifier``.

    Args:
        model: the trained network (on the CPU or its device; it is not changed).
        images: uint8 ``(N, C, H, W)`` test images; ``labels`` their classes.
        config: from :func:`offload_config`.
        ctx: the run's temperatures and committee weights (fitted on validation).
        classifier: ``classifier(method, alpha, k)`` returns what classifies a batch for that
            row: an :class:`~exitwise.serving.edge.EdgeRuntime` split after side exit ``k - 1``
            (its ``classify``), or for ``method="cloud_only"`` (alpha and k None) the cloud-only
            client; it is called once per row.
        title: the study's title.
        link: the measured link, recorded with the result.
        state_path: where the study is saved after every row, and resumed from.
        progress: called with a short label after every row (and at resumed ones).
        batch_size: batch size of the exact pass over the test set.
        warmup: requests made before each row's measurement, not counted.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(
            f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) != len(labels) or len(images) != config.test_images:
        raise ValueError(
            f"expected {config.test_images} images and labels, got {len(images)} and {len(labels)}"
        )
    costs = model.costs_at(tuple(images.shape[1:]))
    done = {_row_key(r): r for r in resumable(state_path, config)}
    result = OffloadResult(
        title=title, config=config, link=link, rows=[], image_bytes=int(images[0].numel())
    )
    say = progress or (lambda _label: None)
    g = torch.Generator().manual_seed(config.seed)
    subset = torch.randperm(len(labels), generator=g)[: config.latency_images]
    labels = labels.cpu()

    def save() -> None:
        if state_path is not None:
            result.save(state_path)

    grid: list[tuple[str, float | None, int | None]] = [(CLOUD_ONLY, None, None)] + [
        (m, a, k) for k in config.edge_exits for a in config.alphas for m in config.methods
    ]
    for sigma in config.sigmas:
        level: _Level | None = None  # computed at the first row of this level not saved
        sizes: dict[int | None, tuple[int, int]] = {}  # request bytes per k, of one image
        for method, alpha, k in grid:
            key = _key(sigma, method, alpha, k)
            if key in done:
                result.rows.append(done[key])
                say(f"σ={sigma:g} {method} (saved)")
                continue
            if level is None:
                level = _level(model, images, sigma, subset, batch_size)
            if k not in sizes:
                first = level.images[int(subset[0]) : int(subset[0]) + 1]
                sizes[k] = _request_sizes(model, first, k, config.features)
            request, as_json = sizes[k]
            policy = None
            if method != CLOUD_ONLY:
                assert alpha is not None and k is not None
                policy = Offloaded(edge_policy(method, alpha, ctx), k - 1)
            exact, pred, at_edge = _exact(level, labels, costs, policy)
            live = _live(classifier(method, alpha, k), level, pred, at_edge, warmup)
            row = OffloadRow(
                sigma=float(sigma),
                method=method,
                alpha=alpha,
                edge_exits=k,
                request_bytes=float(request),
                json_bytes=float(as_json),
                wire_bytes=float(request * (1 - exact["edge_share"])),
                **exact,  # type: ignore[arg-type]
                **live,  # type: ignore[arg-type]
            )
            result.rows.append(row)
            save()
            label = method if alpha is None else f"{method} α={alpha:g} k={k}"
            say(f"σ={sigma:g} {label}")
    save()
    return result


# ------------------------------------------------------------------------- the study of a run


def link_info(m: LinkMeasurement) -> LinkInfo:
    """What the study records of the link it ran on (the full measurement: ``link.json``)."""
    notes = [f"RTT by {m.rtt_method}"]
    if m.raw_rtt_ms_mean is not None:
        notes.append(f"raw path ({m.raw_rtt_method}) {m.raw_rtt_ms_mean:.2f} ms")
    if m.throughput_note:
        notes.append(m.throughput_note)
    return LinkInfo(
        mode=m.mode,  # type: ignore[arg-type]
        delay_by=m.delay_by,  # type: ignore[arg-type]
        rate_mbit=m.spec.rate_mbit,
        rtt_ms=m.spec.rtt_ms,
        jitter_ms=m.spec.jitter_ms,
        measured_rtt_ms=m.rtt_ms_mean,
        measured_rtt_std_ms=m.rtt_ms_std,
        measured_mbit=m.throughput_mbit_mean,
        measured_mbit_std=m.throughput_mbit_std,
        rtt_samples=m.rtt_n,
        edge_cpus=list(m.edge_cpus),
        cloud_cpus=list(m.cloud_cpus),
        note="; ".join(notes),
    )


@contextlib.contextmanager
def _edge_process(cpus: set[int]) -> Iterator[None]:
    """This process on the edge's cores with one compute thread; restored afterwards."""
    threads = torch.get_num_threads()
    affinity = pin(cpus)
    torch.set_num_threads(len(cpus))
    try:
        yield
    finally:
        pin(affinity)
        torch.set_num_threads(threads)


def _log_tail(path: Path) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:]) or "no output"


def run_offload(
    run_dir: str | Path,
    model: MultiExitNet,
    images: Tensor,
    labels: Tensor,
    ctx: PolicyContext,
    settings: OffloadSettings,
    *,
    dataset: str,
    title: str,
    mode: str = "netns",
    spec: LinkSpec | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
    rtt_samples: int = 50,
    iperf_seconds: float = 5.0,
    server_timeout_s: float = 120.0,
) -> OffloadResult:
    """The offloading study of a saved run over an emulated link, saved (and resumed) as
    ``run_dir/offload/offload.json``, with the link's measurement as ``link.json``.

    The cloud is a real ``exitwise serve RUN_DIR`` (final exit, one thread) in the cloud's
    namespace on the cloud's core, behind the delaying relay; this process is the edge, in the
    edge's namespace on the edge's core with one compute thread while it measures.

    Args:
        run_dir: the trained run (``exitwise run`` / ``train``).
        model: its network, on the CPU.
        images, labels: the uint8 test split.
        ctx: the run's temperatures and committee weights (see
            :func:`~exitwise.experiments.calibration.run_policy_context`).
        settings: the grid.
        dataset, title, command: recorded with the result.
        mode: ``netns`` (two namespaces and a veth pair shaped by ``tc tbf``), ``loopback``
            (the relay alone on 127.0.0.1, pacing the rate itself) or ``auto``.
        spec: the link (default: seed 002's, 93.9 Mbit/s, RTT 11.91 ± 0.66 ms).
        progress: called with a short label after every row.
        rtt_samples: empty HTTP round trips measured through the link.
        iperf_seconds: iperf3's duration (0: no throughput measurement).
        server_timeout_s: how long the cloud may take to start.
    """
    run_dir = Path(run_dir)
    out = run_dir / "offload"
    out.mkdir(parents=True, exist_ok=True)
    config = offload_config(model, str(run_dir), dataset, len(labels), settings, ctx)
    with EmulatedLink(spec, mode, seed=settings.seed) as link:
        port = link.cloud_free_port()
        server_log = out / "server.log"
        with open(server_log, "w") as log_file:
            server = link.cloud_popen(
                [
                    sys.executable, "-m", "exitwise.cli", "serve", str(run_dir),
                    "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                    "--threads", str(len(link.cloud_cpus)),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            link.wait_listening(server, port, server_timeout_s)
        except RuntimeError as e:
            raise InputError(
                f"the cloud server did not start: {e}: {_log_tail(server_log)}"
            ) from None
        url = link.start_relay(port)
        measured = measure_link(
            link, n_rtt=rtt_samples, iperf_seconds=iperf_seconds, url=url + "/v2/health/live"
        )
        write_json(out / "link.json", measured.to_json())
        clients: list[EdgeRuntime] = []

        def classifier(method: str, alpha: float | None, k: int | None) -> Classifier:
            for old in clients:
                old.close()
            clients.clear()
            rt: EdgeRuntime
            if method == CLOUD_ONLY:
                rt = CloudOnly(model, url)
            else:
                assert alpha is not None and k is not None
                rule = edge_policy(method, alpha, ctx)
                rt = EdgeRuntime(model, k - 1, rule, url, features=settings.features)
            clients.append(rt)
            return rt.classify

        try:
            with link.edge_side(), _edge_process(link.edge_cpus):
                result = offload_study(
                    model, images, labels, config, ctx, classifier, title,
                    link=link_info(measured), state_path=out / "offload.json",
                    progress=progress, warmup=settings.warmup,
                )  # fmt: skip
        finally:
            for c in clients:
                c.close()
            server.terminate()
            server.wait(10)
    result.command = command
    result.device = describe_device(torch.device("cpu"))
    result.save(out / "offload.json")
    return result

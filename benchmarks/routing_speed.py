"""Routed batched inference against the plain backbone, on the CPU, in one run.

Prints, at batch 256 and at batch 1: the mean FLOPs ratio (routed / plain backbone), the ideal
speedup it implies, the realised wall-clock speedup and realised / ideal. At batch 1 it also
prints the routing overhead over running the same stages and heads directly (no policy, no
bookkeeping), sample by sample.

    python benchmarks/routing_speed.py                      # untrained, 60% leave at exit 0
    python benchmarks/routing_speed.py --checkpoint runs/x  # a trained model and its own threshold

Without a checkpoint the threshold is the 40th percentile of exit 0's confidence on the batch, so
about 60% of the samples leave at the first exit (the issue's "realistic share").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from exitwise.nets import MultiExitNet, build_preset  # noqa: E402
from exitwise.policies import MaxProbability  # noqa: E402
from exitwise.routing import route  # noqa: E402


def plain_backbone(model: MultiExitNet) -> nn.Module:
    """The torchvision backbone alone: every stage and its own classifier, no side exits."""
    return nn.Sequential(*model.stages, model.exits[-1]).eval()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_images(n: int, shape: tuple[int, int, int], data: str | None) -> torch.Tensor:
    if data:
        from exitwise.data import load_dataset

        split = load_dataset(data).test
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(split), generator=g)[:n]
        return split.images[idx].float() / 255
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="branchy_resnet18")
    ap.add_argument("--num-classes", type=int, default=43)
    ap.add_argument("--checkpoint", help="a run directory written by `exitwise train`")
    ap.add_argument(
        "--threshold", type=float, help="max-probability threshold (default: see above)"
    )
    ap.add_argument("--first-exit-share", type=float, default=0.6)
    ap.add_argument("--data", default=None, help="dataset name for real images, e.g. gtsrb")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--single", type=int, default=200, help="samples timed one by one at batch 1")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        from exitwise.training import load_checkpoint

        model = load_checkpoint(args.checkpoint).model
    else:
        model = build_preset(args.preset, args.num_classes, seed=0)
    model.eval()
    plain = plain_backbone(model)
    x = load_images(args.batch, model.input_shape, args.data)

    with torch.no_grad():
        conf0 = torch.softmax(model(x)[0], dim=1).amax(dim=1)
    threshold = args.threshold
    if threshold is None:
        threshold = float(conf0.quantile(1 - args.first_exit_share))
    policy = MaxProbability(threshold)
    backbone_flops = model.costs.backbone_flops
    rows = []

    # Batch: the whole batch through the plain backbone vs routed.
    res = route(model, x, policy)
    with torch.no_grad():
        t_plain = timed(lambda: plain(x), args.repeats)
    t_routed = timed(lambda: route(model, x, policy), args.repeats)
    ratio = res.mean_flops / backbone_flops
    rows.append(
        {
            "batch": args.batch,
            "exit_shares": res.exit_shares,
            "flops_ratio": ratio,
            "ideal_speedup": 1 / ratio,
            "realized_speedup": t_plain / t_routed,
            "realized_over_ideal": (t_plain / t_routed) * ratio,
            "plain_ms": 1e3 * t_plain,
            "routed_ms": 1e3 * t_routed,
        }
    )

    # Batch 1: sample by sample; also the same stages and heads run directly, without routing.
    singles = [x[i : i + 1] for i in range(min(args.single, len(x)))]
    exits = [int(route(model, s, policy).exit_idx) for s in singles]

    def direct() -> None:
        for s, k in zip(singles, exits, strict=True):
            h = s
            for i in range(k + 1):
                h = model.stages[i](h)
                model.exits[i](h)

    def routed_one_by_one() -> None:
        for s in singles:
            route(model, s, policy)

    def plain_one_by_one() -> None:
        for s in singles:
            plain(s)

    reps = max(3, args.repeats // 2)
    with torch.no_grad():
        t_plain1 = timed(plain_one_by_one, reps)
        t_direct1 = timed(direct, reps)
    t_routed1 = timed(routed_one_by_one, reps)
    flops1 = sum(model.costs.path_flops[k] for k in exits) / len(exits)
    ratio1 = flops1 / backbone_flops
    rows.append(
        {
            "batch": 1,
            "exit_shares": [exits.count(i) / len(exits) for i in range(model.num_exits)],
            "flops_ratio": ratio1,
            "ideal_speedup": 1 / ratio1,
            "realized_speedup": t_plain1 / t_routed1,
            "realized_over_ideal": t_plain1 / t_routed1 * ratio1,
            "plain_ms": 1e3 * t_plain1 / len(singles),
            "routed_ms": 1e3 * t_routed1 / len(singles),
            "direct_ms": 1e3 * t_direct1 / len(singles),
            "routing_overhead": t_routed1 / t_direct1 - 1,
        }
    )

    print(
        f"model: {args.checkpoint or args.preset}  input: {tuple(model.input_shape)}  "
        f"threads: {args.threads}  threshold: {threshold:.4g}  data: {args.data or 'uniform noise'}"
    )
    print(
        f"plain backbone: {backbone_flops / 1e6:.1f} MFLOPs "
        f"({backbone_flops / 2e6:.1f} MMACs) per image"
    )
    head = (
        f"{'batch':>5} | {'exit shares':<23} | {'FLOPs ratio':>11} | {'ideal x':>7} | "
        f"{'realised x':>10} | {'real/ideal':>10} | {'plain ms':>8} | {'routed ms':>9} | overhead"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        shares = " ".join(f"{s:.2f}" for s in r["exit_shares"])
        over = f"{100 * r['routing_overhead']:+.1f}%" if "routing_overhead" in r else "-"
        print(
            f"{r['batch']:>5} | {shares:<23} | {r['flops_ratio']:>11.3f} | "
            f"{r['ideal_speedup']:>7.2f} | "
            f"{r['realized_speedup']:>10.2f} | {r['realized_over_ideal']:>10.3f} | "
            f"{r['plain_ms']:>8.2f} | {r['routed_ms']:>9.2f} | {over}"
        )
    print(
        "ms are per batch at batch > 1 and per image at batch 1; overhead = routed vs the same "
        "stages and heads run directly"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threshold": threshold, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

"""Batched DeepFool (exitwise) against torchattacks' per-sample DeepFool, in one run.

Same model (the final exit of a trained multi-exit network), same correctly classified test
images, same settings (50 steps, overshoot 0.02, all classes as candidates). Prints the time of
each, the speed ratio, the fooling rates and the median L2 size of the perturbations.

    pip install torchattacks   # benchmark-only peer, not a dependency of exitwise
    python benchmarks/deepfool_speed.py runs/gtsrb_branchy_resnet18 --samples 100
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from exitwise.config import load_config  # noqa: E402
from exitwise.experiments.pipeline import load_data  # noqa: E402
from exitwise.robustness.attacks import DeepFool  # noqa: E402
from exitwise.training import load_model  # noqa: E402


class FinalExit(nn.Module):
    """The backbone alone: the multi-exit model's last exit, as torchattacks expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir", help="a directory written by `exitwise run`")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    cfg = load_config(None, None, base=json.load(open(f"{args.run_dir}/run_config.json")))
    model = load_model(args.run_dir).model.eval()
    data = load_data(cfg)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.test), generator=g)[: 4 * args.samples]
    x, y = data.test.images[idx].float() / 255, data.test.labels[idx]
    with torch.no_grad():
        ok = model(x)[-1].argmax(1) == y
    x, y = x[ok][: args.samples], y[ok][: args.samples]
    final = FinalExit(model).eval()
    classes = data.num_classes

    ours = DeepFool(model, target="final", num_candidates=classes, overshoot=0.02, max_iter=50)
    theirs = torchattacks.DeepFool(final, steps=50, overshoot=0.02)
    rows = {}
    for name, attack in (
        ("exitwise (batched)", lambda: ours(x, y)),
        ("torchattacks", lambda: theirs(x, y)),
    ):
        t0 = time.perf_counter()
        adv = attack()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            fooled = final(adv).argmax(1) != y
        l2 = (adv - x).flatten(1).norm(dim=1)
        rows[name] = {
            "seconds": seconds,
            "fooling_rate": float(fooled.float().mean()),
            "median_l2": float(l2[fooled].median()) if fooled.any() else float("nan"),
        }
    print(
        f"model: {args.run_dir} (final exit), {len(y)} correctly classified test images, "
        f"{classes} classes, threads {args.threads}"
    )
    print(f"{'attack':<20} | {'seconds':>8} | {'fooling rate':>12} | {'median L2':>9}")
    for name, r in rows.items():
        print(
            f"{name:<20} | {r['seconds']:>8.1f} | {100 * r['fooling_rate']:>11.1f}% | "
            f"{r['median_l2']:>9.3f}"
        )
    ratio = rows["torchattacks"]["seconds"] / rows["exitwise (batched)"]["seconds"]
    print(f"speed-up of the batched DeepFool: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "speedup": ratio, "samples": len(y)}, f, indent=2)


if __name__ == "__main__":
    main()

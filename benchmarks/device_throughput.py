"""Training and routed-inference throughput on the CPU and on CUDA, side by side, in one run.

A short GTSRB-shaped run (BranchyResNet18, 43 classes, 3x32x32): real GTSRB from --data-root when
its .npz files are there, else the built-in synthetic-signs. For each setting it trains a fresh
model with the library's own trainer (`exitwise.training.train`: augmentation, the joint loss,
validation off) and times the last epoch, then times routed inference
(`exitwise.routing.route`, batches moved from the uint8 CPU dataset to the device), with a
max-probability threshold that lets about half of the samples leave at the first exit.

Settings: cpu fp32; with a GPU also cuda fp32 and cuda bf16 + channels-last.

    python benchmarks/device_throughput.py                       # a few hundred images on the CPU
    python benchmarks/device_throughput.py --cuda-images 16384   # more on the GPU, where it is
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from exitwise.data import ArrayDataset, DatasetSplits, iterate_batches, load_dataset  # noqa: E402
from exitwise.devices import autocast, describe_device, supports_bf16  # noqa: E402
from exitwise.nets import build_preset  # noqa: E402
from exitwise.policies import MaxProbability  # noqa: E402
from exitwise.routing import route  # noqa: E402
from exitwise.training import TrainConfig, train  # noqa: E402


@dataclass(frozen=True)
class Setting:
    device: str
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def label(self) -> str:
        return f"{self.device} {self.precision}" + (" channels-last" if self.channels_last else "")


def load(data_root: str, synthetic_per_class: int) -> DatasetSplits:
    root = Path(data_root)
    if (root / "gtsrb32_train_part1.npz").is_file():
        return load_dataset("gtsrb", root)
    return load_dataset(
        "synthetic-signs", train_per_class=synthetic_per_class, test_per_class=synthetic_per_class
    )


def subset(data: DatasetSplits, n_train: int, n_test: int) -> DatasetSplits:
    """``n_train`` training and ``n_test`` test images (seeded), no validation split."""
    g = torch.Generator().manual_seed(0)

    def take(split: ArrayDataset, n: int) -> ArrayDataset:
        idx = torch.randperm(len(split), generator=g)[: min(n, len(split))]
        return ArrayDataset(split.images[idx], split.labels[idx])

    empty = ArrayDataset(data.train.images[:0], data.train.labels[:0])
    return DatasetSplits(
        data.name,
        take(data.train, n_train),
        empty,
        take(data.test, n_test),
        data.num_classes,
        data.class_names,
        data.mean,
        data.std,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(setting: Setting, data: DatasetSplits, args: argparse.Namespace) -> dict:
    dev = torch.device(setting.device)
    model = build_preset(
        "branchy_resnet18",
        data.num_classes,
        input_shape=data.input_shape,
        mean=list(data.mean),
        std=list(data.std),
        seed=0,
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=0.05,
        warmup_epochs=0.0,
        augment="signs",
        precision=setting.precision,
        channels_last=setting.channels_last,
    )
    result = train(model, data, cfg, device=dev)
    last = result.history[-1]
    trained = (len(data.train) // args.batch) * args.batch
    train_ips = trained / last["seconds"]

    # Routed inference: about half of the samples leave at exit 0.
    x0 = data.test.images[: args.batch].float().div(255).to(dev)
    with torch.no_grad(), autocast(dev, setting.precision):
        conf = torch.softmax(model(x0)[0].float(), dim=1).amax(dim=1)
    policy = MaxProbability(float(conf.quantile(0.5)))
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format

    def routed_pass() -> tuple[int, int]:
        n, flops = 0, 0
        for x, _ in iterate_batches(data.test, args.batch, device=dev):
            with autocast(dev, setting.precision):
                res = route(model, x.contiguous(memory_format=memory_format), policy)
            n += len(res)
            flops += res.total_flops
        sync(dev)
        return n, flops

    routed_pass()  # warm-up (kernels, allocator, cost account)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        n, flops = routed_pass()
        times.append(time.perf_counter() - t0)
    costs = model.costs_at(data.input_shape)
    return {
        "setting": setting.label,
        "device": describe_device(dev),
        "recorded_device": last["device"],
        "precision": last["precision"],
        "train_images": trained,
        "train_images_per_s": train_ips,
        "routed_images": n,
        "routed_images_per_s": n / statistics.median(times),
        "routed_flops_fraction": flops / n / costs.backbone_flops,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-root", default=str(Path("..") / "shared" / "data" / "gtsrb"))
    ap.add_argument("--images", type=int, default=384, help="training images on the CPU")
    ap.add_argument("--cuda-images", type=int, default=4096, help="training images on CUDA")
    ap.add_argument("--test-images", type=int, default=512, help="routed images (per pass)")
    ap.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="routed passes (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synthetic-per-class", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    full = load(args.data_root, args.synthetic_per_class)
    settings = [Setting("cpu")]
    if torch.cuda.is_available():
        settings.append(Setting("cuda"))
        if supports_bf16("cuda"):
            settings.append(Setting("cuda", "bf16", channels_last=True))
    rows = []
    for s in settings:
        n_train = args.images if s.device == "cpu" else args.cuda_images
        rows.append(measure(s, subset(full, n_train, args.test_images), args))

    cpu = rows[0]
    print(
        f"BranchyResNet18 on {full.name} {full.input_shape}, batch {args.batch}, "
        f"{args.epochs} epochs (last timed), {args.threads} CPU threads"
    )
    print(
        f"{'setting':<26} {'device':<28} {'train img/s':>12} {'x cpu':>7} "
        f"{'routed img/s':>13} {'x cpu':>7} {'routed FLOPs':>13}"
    )
    for r in rows:
        print(
            f"{r['setting']:<26} {r['device']:<28} {r['train_images_per_s']:>12.0f} "
            f"{r['train_images_per_s'] / cpu['train_images_per_s']:>7.1f} "
            f"{r['routed_images_per_s']:>13.0f} "
            f"{r['routed_images_per_s'] / cpu['routed_images_per_s']:>7.1f} "
            f"{100 * r['routed_flops_fraction']:>12.1f}%"
        )
    print(
        f"(train: {cpu['train_images']} images on the CPU, "
        + ", ".join(f"{r['train_images']} on {r['setting']}" for r in rows[1:])
        + f"; routed: {cpu['routed_images']} test images per pass, median of {args.repeats})"
        if len(rows) > 1
        else f"(train: {cpu['train_images']} images; routed: {cpu['routed_images']} test images "
        f"per pass, median of {args.repeats}; no GPU here)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

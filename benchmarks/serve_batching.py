"""The cloud server's throughput and latency without and with dynamic batching, in one run.

A real server (uvicorn on loopback, in its own process, so that the clients do not share its
interpreter) serves a model: by default the `mobilenet_v2_3exits` preset (seed 002) at 80 px with
101 classes, randomly initialised (speed does not depend on the weights), or a trained run with
--run-dir. N concurrent clients (threads, each with its own keep-alive httpx client) send one
sample per request as fast as they are answered, for --seconds per setting and model: the
intermediate tensor after side exit 0 to `cloud_k0`, and a UINT8 image to `cloud_image`. Each
setting gets a fresh server: first unbatched (max_batch 1), then with dynamic batching
(--max-batch, --max-delay-ms). It prints requests/s, latency p50/p95, the mean batch the server
ran, and the ratio of the two throughputs.

    python benchmarks/serve_batching.py                         # 16 clients, 10 s per row
    python benchmarks/serve_batching.py --seconds 2 --clients 4 # a quick check
    python benchmarks/serve_batching.py --run-dir runs/caltech --out serve_batching.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import torch  # noqa: E402

from exitwise.nets import MultiExitNet, build_preset  # noqa: E402
from exitwise.serving.protocol import HEADER_LENGTH, decode_response, encode_request  # noqa: E402
from exitwise.serving.server import IMAGE_MODEL, cloud_model_name  # noqa: E402


def load_net(args: argparse.Namespace) -> MultiExitNet:
    if args.run_dir:
        from exitwise.training.checkpoint import load_model

        return load_model(args.run_dir).model
    size = args.size
    return build_preset(args.preset, args.num_classes, input_shape=(3, size, size), seed=0).eval()


def serve_child(args: argparse.Namespace) -> None:
    """The server process: prints its port, serves until its stdin closes, then prints what its
    batchers did."""
    import uvicorn

    from exitwise.serving.server import ServerLimits, build_app

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = ServerLimits(
        max_in_flight=args.max_in_flight,
        max_batch=args.child_batch,
        max_delay_ms=args.max_delay_ms if args.child_batch > 1 else 0.0,
        timeout_s=60,
    )
    app = build_app(load_net(args), limits=limits)
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only then (else 40 ms per request: Nagle)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    server.run(sockets=[sock])
    stats = {
        name: {"runs": b.runs, "requests": b.requests, "samples": b.samples}
        for name, b in app.state.batchers.items()
    }
    print(json.dumps(stats), flush=True)


class Server:
    """This script in --serve-child mode, as a context manager giving its URL."""

    def __init__(self, argv: list[str], max_batch: int) -> None:
        cmd = [sys.executable, __file__, *argv, "--serve-child", "--child-batch", str(max_batch)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.stats: dict = {}

    def __enter__(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            raise RuntimeError(f"the server did not start (said {line!r})")
        url = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.05)

    def __exit__(self, *_: object) -> None:
        try:
            out, _ = self.proc.communicate(timeout=60)  # closes its stdin: it stops
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        self.stats = json.loads(lines[-1]) if lines else {}


def load(url: str, model: str, body: bytes, headers: dict, clients: int, seconds: float) -> dict:
    """``clients`` threads posting ``body`` for ``seconds``; requests/s and latency."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            c.post(f"/v2/models/{model}/infer", content=body, headers=headers)  # connect, warm
            start.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
                dt = time.perf_counter() - t0
                if r.status_code == 200 and len(
                    decode_response(r.content, r.headers.get(HEADER_LENGTH))["prediction"]
                ):
                    latencies[i].append(dt)
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - t0
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        raise RuntimeError(f"no request to {model} was answered ({sum(errors)} errors)")
    q = statistics.quantiles(flat, n=100, method="inclusive") if len(flat) > 1 else flat * 99
    return {
        "requests": len(flat),
        "errors": sum(errors),
        "requests_per_s": len(flat) / elapsed,
        "latency_p50_ms": 1e3 * q[49],
        "latency_p95_ms": 1e3 * q[94],
        "latency_mean_ms": 1e3 * statistics.fmean(flat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="mobilenet_v2_3exits")
    ap.add_argument("--num-classes", type=int, default=101)
    ap.add_argument("--size", type=int, default=80, help="input size in pixels (square)")
    ap.add_argument("--run-dir", help="a directory written by `exitwise train` (else random)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="per setting and model")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--max-in-flight", type=int, default=None, help="default: 2 x clients")
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    ap.add_argument("--models", default=f"{cloud_model_name(0)},{IMAGE_MODEL}")
    ap.add_argument("--out", help="also write the results here (JSON)")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.max_in_flight is None:
        args.max_in_flight = 2 * args.clients
    if args.serve_child:
        serve_child(args)
        return
    if args.clients < 1 or args.seconds <= 0 or args.max_batch < 2:
        ap.error("--clients >= 1, --seconds > 0 and --max-batch >= 2 are needed")

    net = load_net(args)
    c, h, w = net.input_shape
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, c, h, w), generator=g, dtype=torch.uint8)
    bodies = {}
    for model in args.models.split(","):
        if model == IMAGE_MODEL:
            bodies[model] = encode_request({"image": image})
        else:
            k = int(model.removeprefix("cloud_k"))
            with torch.no_grad():
                features = net.split(k)[0](image.float() / 255)[1]
            bodies[model] = encode_request({"features": features})
    argv = [a for a in sys.argv[1:] if a != "--serve-child"]
    rows = []
    for label, max_batch in (("unbatched", 1), (f"batch<={args.max_batch}", args.max_batch)):
        server = Server(argv, max_batch)
        with server as url:
            done = [
                {"setting": label, "max_batch": max_batch, "model": model}
                | load(url, model, body, headers, args.clients, args.seconds)
                for model, (body, headers) in bodies.items()
            ]
        for row in done:  # the mean batch over the whole run, warm-up requests included
            stats = server.stats.get(row["model"])
            if stats and stats["runs"]:
                row["mean_batch"] = stats["samples"] / stats["runs"]
        rows += done
    print(
        f"\n{args.clients} clients, 1 sample per request, {args.seconds:g} s per row; "
        f"batching: max_batch {args.max_batch}, max_delay_ms {args.max_delay_ms:g}; "
        f"model {args.run_dir or f'{args.preset} {args.size}px (random init)'}\n"
    )
    head = f"{'model':<12} {'setting':<12} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
    print(head + f"{'batch':>6} {'errors':>6}")
    for r in rows:
        print(
            f"{r['model']:<12} {r['setting']:<12} {r['requests_per_s']:>8.1f} "
            f"{r['latency_p50_ms']:>8.1f} {r['latency_p95_ms']:>8.1f} "
            f"{r.get('mean_batch', float('nan')):>6.1f} {r['errors']:>6d}"
        )
    ratios = {}
    for model in bodies:
        base, batched = (r for r in rows if r["model"] == model)
        ratios[model] = batched["requests_per_s"] / base["requests_per_s"]
        print(f"{model}: throughput with batching / without = {ratios[model]:.2f}x")
    if args.out:
        result = {
            "args": {
                k: v for k, v in vars(args).items() if k not in ("serve_child", "child_batch")
            },
            "rows": rows,
            "throughput_ratio": ratios,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        }
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

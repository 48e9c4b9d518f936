"""Reliability of edge + cloud on a real server on loopback (issue 12, point 7):

- through :class:`EdgeRuntime` and HTTP, edge + cloud answer bit for bit in FP32 what the model
  answers locally, for every split point, whether the edge lets no sample go or some;
- 32 edge clients in threads against one server with a small in-flight bound: some requests get
  503 and are retried, and no answer is lost, duplicated, reordered or mixed up between clients;
- ``exitwise serve`` in a subprocess killed with SIGKILL mid-run: every image is still answered
  (those offloaded meanwhile as flagged fallbacks) and nothing raises; restarted on the same
  port, the same runtime offloads again;
- a cloud answering 200 with a malformed body is a fallback too, never an exception.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
import torch
from fastapi import FastAPI
from fastapi.responses import Response

from exitwise.policies import MaxProbability, final_decision
from exitwise.routing import route
from exitwise.serving.edge import CLOUD, EDGE, FALLBACK, EdgeRuntime
from exitwise.serving.protocol import HEADER_LENGTH
from exitwise.serving.server import ServerLimits, build_app
from exitwise.training.checkpoint import load_model, save_model
from tests.conftest import build_small_net
from tests.serving.test_edge import _fallback_reference
from tests.serving.test_server import LoopbackServer

THRESHOLDS = (0.187, 0.206, 0.19)  # this untrained net's batches leave at several exits
NEVER = 2.0  # a max-probability threshold no sample reaches


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def _edge_rule(k, thresholds=THRESHOLDS):
    """``thresholds`` at exits ``0..k``; no sample leaves at a later side exit, as with a
    cloud serving without a rule (it answers every offloaded sample at the final exit)."""
    return MaxProbability(tuple(thresholds[: k + 1]) + (NEVER,) * (len(thresholds) - k - 1))


def _bits(t):
    return t.float().contiguous().view(torch.int32)


def _check(got, want, fallback=None, exact=True):
    """``got`` (an EdgeResult) answers every image once, in input order: an edge or cloud
    answer equal to ``want`` (route's), a fallback equal to ``fallback`` (prediction, exit)."""
    assert len(got) == len(want.prediction) == got.prediction.shape[0]
    assert set(got.where) <= {EDGE, CLOUD, FALLBACK}
    assert (got.fallback_reason is not None) == (got.fallback_count > 0)
    decided = torch.tensor([w != FALLBACK for w in got.where])
    assert torch.equal(got.prediction[decided], want.prediction[decided])
    assert torch.equal(got.exit_idx[decided], want.exit_idx[decided])
    if exact:
        assert torch.equal(_bits(got.confidence[decided]), _bits(want.confidence[decided]))
    else:
        assert torch.allclose(got.confidence[decided], want.confidence[decided].float(), atol=1e-6)
    if fallback is not None:
        pred, exit_idx = fallback
        assert torch.equal(got.prediction[~decided], pred[~decided])
        assert torch.equal(got.exit_idx[~decided], exit_idx[~decided])
    else:
        assert bool(decided.all())


# ---------------------------------------------------------------- 1. bit for bit over HTTP


@torch.no_grad()
def test_edge_plus_cloud_over_http_is_the_model_bit_for_bit(net):
    """test_server checks cloud(edge(x)) with hand-made requests and test_edge the runtime with
    a 1e-6 tolerance; here the runtime's whole answer (prediction, exit AND the confidence's
    bits) equals the local model's, for every k, with no sample leaving on the edge (the
    whole model's final exit) and with some leaving (route with the same edge rule)."""
    images = _images(24, seed=11)
    x = images.float() / 255
    whole = final_decision(net.forward_outputs(x)[-1])
    last = net.num_exits - 1
    split_somewhere = False
    with LoopbackServer(build_app(build_small_net())) as s:
        for k in range(net.num_exits - 1):
            with EdgeRuntime(net, k, MaxProbability(NEVER), s.url) as rt:
                got = rt.classify(images)
            assert got.where == (CLOUD,) * len(x) and got.attempts == 1
            assert torch.equal(got.prediction, whole.prediction)
            assert torch.equal(_bits(got.confidence), _bits(whole.confidence))
            assert got.exit_idx.tolist() == [last] * len(x)

            with EdgeRuntime(net, k, MaxProbability(THRESHOLDS), s.url) as rt:
                got = rt.classify(images)
            _check(got, route(net, x, _edge_rule(k)))
            split_somewhere |= 0 < got.offloaded < len(x)
    assert split_somewhere  # some k split the batch between the edge and the cloud


# ------------------------------------------------------------- 2. 32 concurrent edge clients


class _StatusLog:
    """ASGI wrapper counting the server's responses by status; ``saw_503`` is set on the first
    503."""

    def __init__(self, app) -> None:
        self.app, self.counts, self.saw_503 = app, Counter(), threading.Event()
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        async def send_and_count(message):
            if message["type"] == "http.response.start":
                with self._lock:
                    self.counts[message["status"]] += 1
                if message["status"] == 503:
                    self.saw_503.set()
            await send(message)

        await self.app(scope, receive, send_and_count)


def test_32_concurrent_clients_lose_and_mix_up_nothing(net):
    """32 threads, each its own runtime (split k = t % 3), classify 3 batches of their own
    images against one cloud admitting 2 requests at once. Each answer must be route's for
    those very images, bit for bit: the untrained net predicts nearly one class, so it is the
    confidence's bits (and the exit) that would show an answer given to the wrong image,
    batch or client."""
    clients, batches, size, max_in_flight = 32, 3, 6, 2
    RETRIES = 100  # noqa: N806
    data = [[_images(size, seed=1000 + 10 * t + b) for b in range(batches)] for t in range(clients)]
    wants = {
        (t, b): route(net, images.float() / 255, _edge_rule(t % 3))
        for t in range(clients)
        for b, images in enumerate(data[t])
    }

    # The cloud holds its first `max_in_flight` runs until it has answered some request 503:
    # both slots are then taken, so the bound is certainly hit, whatever the scheduling.
    cloud_net = build_small_net()
    held, hold_lock = [0], threading.Lock()
    app = _StatusLog(build_app(cloud_net, limits=ServerLimits(max_in_flight=max_in_flight)))

    def hold(*_):
        with hold_lock:
            held[0] += 1
            first = held[0] <= max_in_flight
        if first:
            app.saw_503.wait(20)

    handle = cloud_net.stages[-1].register_forward_pre_hook(hold)
    results: dict[tuple[int, int], object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(clients)

    def client(t, url):
        try:
            rule = MaxProbability(THRESHOLDS)
            # from 5 ms, doubling up to 0.2 s: about 20 s of asking before giving up (32 client
            # threads and the server share 2 cores and the GIL: under load the contention
            # lasts; with no cap, a client refused a dozen times slept for many seconds)
            with EdgeRuntime(
                net, t % 3, rule, url, retries=RETRIES, backoff_s=0.005, max_backoff_s=0.2
            ) as rt:
                start.wait(30)
                for b, images in enumerate(data[t]):
                    results[t, b] = rt.classify(images)
        except BaseException as e:  # reported below
            errors.append(e)

    try:
        with LoopbackServer(app) as s:
            threads = [threading.Thread(target=client, args=(t, s.url)) for t in range(clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(300)
            assert not any(th.is_alive() for th in threads), "a client hangs"
    finally:
        app.saw_503.set()
        handle.remove()
    assert not errors, errors
    assert sorted(results) == sorted(wants)  # every client answered every batch
    fell_back = 0
    for (t, b), got in results.items():
        fallback = None
        if got.fallback_count:  # only if a client ran out of retries: flagged, and correct
            fell_back += 1
            assert "HTTP 503" in got.fallback_reason and got.attempts == RETRIES + 1
            x = data[t][b].float() / 255
            fallback = _fallback_reference(net, x, MaxProbability(THRESHOLDS), t % 3)
        _check(got, wants[t, b], fallback)  # its own images' answers, in order, exactly
    # the bound was hit and the 503s were retried; every attempt got exactly one response,
    # and each batch answered by the cloud exactly one 200
    assert app.counts[503] > 0
    assert set(app.counts) <= {200, 503}, app.counts
    assert sum(got.attempts for got in results.values()) == sum(app.counts.values())
    assert app.counts[200] == sum(CLOUD in got.where for got in results.values())
    assert sum(got.attempts > 1 for got in results.values()) > 0
    assert fell_back == 0, f"{fell_back} batches ran out of retries"  # 20 s of asking is ample
    assert sum(got.offloaded > 0 for got in results.values()) > 3 * max_in_flight


# ------------------------------------------------------------ 3. the cloud killed and restarted


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Runs `exitwise serve ARGS` (the CLI's own entry point) in a child forked for each line it
# reads, and prints the child's pid. Importing torch and torchvision takes seconds on a busy
# machine; the processes forked after importing share that cost, and only the child runs
# anything (fork before any thread or OpenMP pool exists).
_FORK_SERVE = """
import os, sys, traceback
import exitwise.cli, exitwise.serving.server, exitwise.training.checkpoint, uvicorn
children = []
while sys.stdin.readline():
    pid = os.fork()
    if pid == 0:
        os.dup2(2, 1)  # stdout is the parent's pid channel
        code = 1
        try:
            exitwise.cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    children.append(pid)
    print(pid, flush=True)
for pid in children:
    os.waitpid(pid, 0)
"""


class _Servers:
    """``exitwise serve`` processes on one port, started on demand, killed with SIGKILL."""

    def __init__(self, run_dir, port, log_path) -> None:
        self.url, self.port, self.log_path, self.pids = (
            f"http://127.0.0.1:{port}",
            port,
            log_path,
            [],
        )
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
        args = ["serve", str(run_dir), "--port", str(port), "--device", "cpu"]
        with open(log_path, "wb") as log:
            self.forker = subprocess.Popen(
                [sys.executable, "-c", _FORK_SERVE, *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            )  # fmt: skip

    def start(self) -> int:
        """Start one and wait until it is ready; its pid."""
        self.forker.stdin.write(b"serve\n")
        self.forker.stdin.flush()
        line = self.forker.stdout.readline()
        assert line.strip().isdigit(), f"exitwise serve did not start: {self.log_path.read_text()}"
        self.pids.append(int(line))
        self._poll("ready", lambda: httpx.get(f"{self.url}/v2/health/ready", timeout=1.0))
        return self.pids[-1]

    def kill(self, pid) -> None:
        """SIGKILL, then wait until nothing listens on the port."""
        os.kill(pid, signal.SIGKILL)
        self._poll("refusing", lambda: socket.create_connection(("127.0.0.1", self.port), 1.0))

    def _poll(self, what, attempt, timeout_s=60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.forker.poll() is None, f"the forker exited: {self.log_path.read_text()}"
            try:
                r = attempt()
            except (httpx.TransportError, ConnectionRefusedError):
                if what == "refusing":
                    return
            else:
                if what == "refusing":
                    r.close()
                elif r.status_code == 200:
                    return
            assert time.monotonic() < deadline, f"not {what}: {self.log_path.read_text()}"
            time.sleep(0.05)  # polling

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.forker.stdin.close()
        try:
            self.forker.wait(10)
        except subprocess.TimeoutExpired:
            self.forker.kill()
            self.forker.wait(10)
        self.forker.stdout.close()


def test_the_cloud_killed_mid_run_falls_back_then_resumes(tmp_path):
    """An edge thread classifies batch after batch of new images against `exitwise serve`;
    the test kills the server with SIGKILL once 3 batches got the cloud's answer, waits for 3
    batches offloaded while it is down, and starts a new server on the same port. Each batch
    records the phase it began and ended in: those wholly up are answered by edge + cloud,
    those wholly down by flagged fallbacks ("cannot connect"), the one in flight at the kill
    by either; all equal the local model's answers."""
    run_dir = tmp_path / "run"
    save_model(run_dir, build_small_net())
    net = load_model(run_dir).model.eval()
    k, size = 1, 8
    rule = MaxProbability(THRESHOLDS)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"

    UP, KILLING, DOWN, RESTARTING, UP_AGAIN = range(5)
    phase = [UP]
    log: list[tuple[int, int, int, torch.Tensor, object]] = []  # (batch, phase before, after, ..)
    cond = threading.Condition()
    resumed, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def count(start, end=None, where=None):
        end = start if end is None else end
        return sum(
            p0 == start and p1 == end and (where is None or where in got.where)
            for _, p0, p1, _, got in log
        )

    def edge():
        try:
            with EdgeRuntime(
                net, k, rule, url, connect_timeout_s=0.5, read_timeout_s=10, retries=1,
                backoff_s=0.01,
            ) as rt:  # fmt: skip
                b = 0
                while not stop.is_set() and b < 2000:
                    images = _images(size, seed=500 + b)
                    before = phase[0]
                    got = rt.classify(images)
                    with cond:
                        log.append((b, before, phase[0], images, got))
                        cond.notify_all()
                        # the cloud is down and fallbacks are seen: do not spin on 2 cores while
                        # it restarts; carry on once it is back
                        wait = count(DOWN, where=FALLBACK) >= 3 and not resumed.is_set()
                    if wait:
                        resumed.wait(60)
                    b += 1
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            with cond:
                cond.notify_all()

    def wait_for(what, predicate):
        with cond:
            ok = cond.wait_for(lambda: predicate() or errors, timeout=60)
        assert not errors, errors
        assert ok, f"timed out waiting for {what}"

    thread = threading.Thread(target=edge)
    servers = _Servers(run_dir, port, tmp_path / "serve.log")
    try:
        first = servers.start()
        thread.start()
        wait_for("3 batches answered by the cloud", lambda: count(UP, where=CLOUD) >= 3)

        phase[0] = KILLING
        servers.kill(first)
        phase[0] = DOWN
        wait_for("3 fallbacks", lambda: count(DOWN, where=FALLBACK) >= 3)

        phase[0] = RESTARTING
        servers.start()  # a new process on the same port
        phase[0] = UP_AGAIN
        resumed.set()
        wait_for("3 batches answered by the restarted cloud",
                 lambda: count(UP_AGAIN, where=CLOUD) >= 3)  # fmt: skip
    finally:
        stop.set()
        resumed.set()
        if thread.ident is not None:
            thread.join(60)
        servers.close()
    assert not thread.is_alive() and not errors, errors

    assert [b for b, *_ in log] == list(range(len(log)))  # every batch answered once, in order
    for _, before, after, images, got in log:
        x = images.float() / 255
        # across processes: equal predictions and exits, confidences to float rounding
        _check(got, route(net, x, _edge_rule(k)), _fallback_reference(net, x, rule, k), False)
        if before == after == DOWN and got.offloaded:  # all sent while nothing listens
            assert got.where.count(FALLBACK) == got.offloaded
            assert "cannot connect" in got.fallback_reason and "after 2 attempts" in (
                got.fallback_reason
            )
        if before in (UP, UP_AGAIN) and after == before:
            assert got.fallback_count == 0, got.fallback_reason
        if before == KILLING and got.fallback_count:  # in flight when killed: any reason
            assert got.fallback_reason
    assert count(RESTARTING) + count(RESTARTING, UP_AGAIN) == 0  # the edge waited, as asked


# ---------------------------------------------------------- 4. a 200 with a malformed body


def _rogue_cloud(header: bytes):
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str):
        return Response(header, headers={HEADER_LENGTH: str(len(header))})

    return app


@pytest.mark.parametrize(
    "data",
    [
        ["a", "b", "c"],  # strings
        [None, 1, 2],  # nulls
        [1e400, 1, 2],  # JSON's Infinity for an INT64
        [10**30, 1, 2],  # beyond int64
        [[1, 2], [3], []],  # ragged
    ],
)
def test_a_malformed_200_is_a_fallback_not_an_exception(net, data):
    """A JSON ``data`` list that is no INT64 tensor: decode_response raises ValueError,
    TypeError or RuntimeError there, not ProtocolError."""
    outputs = [
        {"name": "prediction", "datatype": "INT64", "shape": [3], "data": data},
        {"name": "confidence", "datatype": "FP32", "shape": [3], "data": [0.5] * 3},
        {"name": "exit_idx", "datatype": "INT64", "shape": [3], "data": [3] * 3},
    ]
    header = json.dumps({"outputs": outputs}).encode()  # 1e400 is written as Infinity
    images = _images(3, seed=7)
    with (
        LoopbackServer(_rogue_cloud(header)) as s,
        EdgeRuntime(net, 0, MaxProbability(NEVER), s.url) as rt,
    ):
        got = rt.classify(images)
    assert got.where == (FALLBACK,) * 3 and got.attempts == 1
    assert got.fallback_reason.startswith("malformed response")
    pred, exit_idx = _fallback_reference(net, images.float() / 255, MaxProbability(NEVER), 0)
    assert torch.equal(got.prediction, pred) and torch.equal(got.exit_idx, exit_idx)

"""Dynamic batching: the Batcher's gathering rules on a fake model, then a real server where many
concurrent requests of different sizes share model runs and each gets exactly its own rows."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from exitwise.policies import MaxProbability
from exitwise.serving.batching import Batcher
from exitwise.serving.protocol import HEADER_LENGTH, decode_response, encode_request
from exitwise.serving.server import IMAGE_MODEL, ServerLimits, build_app, cloud_model_name
from tests.conftest import build_small_net
from tests.serving.test_server import LoopbackServer

# ---------------------------------------------------------------------------- the Batcher alone


class FakeModel:
    """Row sums as "predictions"; records the size of every batch it ran."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batches.append(len(x))
        if self.fail:
            raise RuntimeError("boom")
        return {"sum": x.sum(dim=1), "first": x[:, 0].clone()}


def _gather(sizes, max_batch, max_delay_s, model, gap_s=0.0):
    """Submit requests of ``sizes`` rows (row i of request j holds j*100 + i) and await them."""

    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(model, pool, max_batch, max_delay_s)
            futures = []
            for j, n in enumerate(sizes):
                x = (j * 100 + torch.arange(n, dtype=torch.float64))[:, None].repeat(1, 3)
                futures.append(batcher.submit(x))
                if gap_s:
                    await asyncio.sleep(gap_s)
            results = await asyncio.gather(*futures, return_exceptions=True)
            return batcher, results

    return asyncio.run(main())


def test_requests_are_gathered_up_to_max_batch_and_split_back():
    model = FakeModel()
    sizes = [1, 3, 2, 2, 5, 1, 1]
    batcher, results = _gather(sizes, max_batch=4, max_delay_s=0.05, model=model)
    # 1+3 fills a batch; 2+2 another; 5 is larger than 4 and runs alone; 1+1 wait out the delay
    assert model.batches == [4, 4, 5, 2]
    assert (batcher.runs, batcher.requests, batcher.samples) == (4, len(sizes), sum(sizes))
    for j, (n, out) in enumerate(zip(sizes, results, strict=True)):
        rows = j * 100 + torch.arange(n, dtype=torch.float64)
        assert torch.equal(out["first"], rows) and torch.equal(out["sum"], 3 * rows)


def test_a_request_that_would_overflow_sends_the_queued_batch_first():
    model = FakeModel()
    _, results = _gather([3, 2, 1], max_batch=4, max_delay_s=0.05, model=model)
    assert model.batches == [3, 3]
    assert [r["first"].tolist() for r in results] == [[0, 1, 2], [100, 101], [200]]


def test_the_delay_bounds_the_wait_of_the_first_request():
    model = FakeModel()
    t0 = time.perf_counter()
    _gather([1, 1], max_batch=64, max_delay_s=0.02, model=model, gap_s=0.1)
    assert model.batches == [1, 1]  # the second came after the first's delay had passed
    assert time.perf_counter() - t0 < 5


def test_max_batch_one_runs_every_request_alone_at_once():
    model = FakeModel()
    _, results = _gather([2, 1, 3], max_batch=1, max_delay_s=10.0, model=model)
    assert model.batches == [2, 1, 3]
    assert results[2]["first"].tolist() == [200, 201, 202]


@pytest.mark.parametrize(("max_runs", "batches"), [(1, [1, 5]), (2, [1, 1, 4])])
def test_requests_pile_up_while_the_model_runs(max_runs, batches):
    """Without a delay a lone request runs at once; those that arrive while ``max_runs`` runs
    are in progress gather into the next batch."""
    gate = threading.Event()
    model = FakeModel()

    def slow(x):
        gate.wait(10)
        return model(x)

    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(slow, pool, max_batch=8, max_delay_s=0.0, max_runs=max_runs)
            futures = [batcher.submit(torch.zeros(1, 3))]
            await asyncio.sleep(0.05)
            futures += [batcher.submit(torch.full((1, 3), float(i))) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(*futures)

    results = asyncio.run(main())
    assert sorted(model.batches) == sorted(batches)
    assert [r["first"].tolist() for r in results] == [[float(i)] for i in range(6)]


def test_a_failed_run_fails_every_request_of_its_batch():
    _, results = _gather([1, 1, 1], max_batch=3, max_delay_s=0.05, model=FakeModel(fail=True))
    assert all(isinstance(r, RuntimeError) and "boom" in str(r) for r in results)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        ServerLimits(max_batch=0)
    with pytest.raises(ValueError, match="max_batch must be an integer"):
        ServerLimits(max_batch=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_delay_ms must be a finite number >= 0"):
        ServerLimits(max_batch=4, max_delay_ms=-1)
    with pytest.raises(ValueError, match="max_delay_ms must be a finite number"):
        ServerLimits(max_batch=4, max_delay_ms=float("nan"))
    with pytest.raises(ValueError, match="shorter than the timeout"):
        ServerLimits(max_batch=4, max_delay_ms=2000, timeout_s=1)
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(FakeModel(), ThreadPoolExecutor(1), max_batch=0)
    with pytest.raises(ValueError, match="max_runs"):
        Batcher(FakeModel(), ThreadPoolExecutor(1), max_runs=0)


# ------------------------------------------------------------------------- a real server on HTTP

THRESHOLDS = (0.187, 0.206, 0.19)  # this untrained net's samples leave at several exits


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


def _requests(net, count=40, seed=0):
    """(model name, inputs) pairs of 1 to 4 samples: images and features after exits 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = int(torch.randint(1, 5, (1,), generator=g))
        images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        k = i % 3 - 1
        if k < 0:
            out.append((IMAGE_MODEL, {"image": images}))
        else:
            with torch.no_grad():
                h = net.split(k)[0](images.float() / 255)[1]
            out.append((cloud_model_name(k), {"features": h}))
    return out


def _post(client, model, inputs):
    body, headers = encode_request(inputs)
    r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return decode_response(r.content, r.headers.get(HEADER_LENGTH))


def test_concurrent_requests_share_runs_and_each_gets_its_own_rows(net):
    policy = MaxProbability(THRESHOLDS)
    requests = _requests(net)
    with LoopbackServer(build_app(net, policy=policy)) as s, httpx.Client(base_url=s.url) as c:
        alone = [_post(c, model, inputs) for model, inputs in requests]
    exits = torch.cat([a["exit_idx"] for a in alone])
    assert len(set(exits.tolist())) >= 3  # rows that leave at different exits: a mix-up shows

    limits = ServerLimits(max_batch=16, max_delay_ms=50, max_in_flight=len(requests))
    app = build_app(net, policy=policy, limits=limits)
    got: list = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(i, client):
        start.wait(10)
        got[i] = _post(client, *requests[i])

    with LoopbackServer(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        threads = [threading.Thread(target=send, args=(i, c)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for (_, inputs), want, answer in zip(requests, alone, got, strict=True):
        assert answer is not None
        n = len(next(iter(inputs.values())))
        assert answer["prediction"].shape == (n,)
        assert torch.equal(answer["prediction"], want["prediction"])
        assert torch.equal(answer["exit_idx"], want["exit_idx"])
        torch.testing.assert_close(answer["confidence"], want["confidence"], rtol=1e-5, atol=1e-6)
    stats = app.state.batchers
    assert sum(b.requests for b in stats.values()) == len(requests)
    assert sum(b.samples for b in stats.values()) == sum(len(a["prediction"]) for a in alone)
    runs = sum(b.runs for b in stats.values())
    assert runs < len(requests) / 2, f"{runs} runs for {len(requests)} requests: little batching"


def test_timeout_and_in_flight_bound_hold_with_batching(net):
    """A stalled batch: its requests get 504 and keep their slots, one more gets 503."""
    release = threading.Event()

    def stall(*_):
        release.wait(10)

    handle = net.stages[-1].register_forward_pre_hook(stall)
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    try:
        limits = ServerLimits(timeout_s=0.5, max_in_flight=2, max_batch=4, max_delay_ms=20)
        app = build_app(net, limits=limits)
        with LoopbackServer(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
            body, headers = encode_request({"image": images})
            url = f"/v2/models/{IMAGE_MODEL}/infer"
            with ThreadPoolExecutor(2) as pool:
                slow = list(pool.map(lambda _: c.post(url, content=body, headers=headers), [0, 1]))
            assert [r.status_code for r in slow] == [504, 504], [r.text for r in slow]
            assert app.state.batchers[IMAGE_MODEL].runs == 0
            busy = c.post(url, content=body, headers=headers)
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
            release.set()
            deadline = time.monotonic() + 10
            while (r := c.post(url, content=body, headers=headers)).status_code == 503:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert r.status_code == 200
            assert app.state.batchers[IMAGE_MODEL].runs == 2  # the stalled pair, then this one
    finally:
        release.set()
        handle.remove()

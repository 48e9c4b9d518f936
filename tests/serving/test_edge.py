"""The edge runtime against a real uvicorn cloud on loopback: edge + cloud decide as ``route``
does, one request carries exactly the header and the raw tensor bytes, every failure of the
cloud falls back to the edge's exits without losing an image, retries are bounded, and eight
runtimes in threads lose and mix up nothing."""

import socket
import threading

import pytest
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from exitwise.policies import Committee, MaxProbability, Offloaded
from exitwise.routing import route
from exitwise.serving.edge import CLOUD, EDGE, FALLBACK, CloudOnly, EdgeRuntime
from exitwise.serving.server import ServerLimits, build_app
from tests.conftest import build_small_net
from tests.serving.test_server import LoopbackServer

THRESHOLDS = (0.187, 0.206, 0.19)  # this untrained net's batches leave at several exits
TOKEN = "edge-token"


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


@pytest.fixture(scope="module")
def server():
    """The cloud, with its own copy of the (seeded, identical) network."""
    app = build_app(build_small_net(), limits=ServerLimits(token=TOKEN))
    with LoopbackServer(app) as s:
        yield s


def _images(n=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def _runtime(net, url, k, policy=None, **kw):
    kw.setdefault("token", TOKEN)
    return EdgeRuntime(net, k, policy or MaxProbability(THRESHOLDS), url, **kw)


def _free_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there now: connection refused
    return url


@torch.no_grad()
def _fallback_reference(net, x, policy, k):
    """Each sample's most confident edge exit under the rule (ties: the deeper)."""
    outs = net.forward_outputs(x)
    decs = [policy.decide(i, outs[: i + 1]) for i in range(k + 1)]
    conf = torch.stack([d.confidence for d in decs])  # (k+1, N)
    pred = torch.stack([d.prediction for d in decs])
    best = k - conf.flip(0).argmax(0)
    return pred.gather(0, best[None])[0], best


@pytest.mark.parametrize("policy", ["max_probability", "committee"])
def test_edge_then_cloud_equals_route(net, server, policy):
    rule = (
        MaxProbability(THRESHOLDS)
        if policy == "max_probability"
        else Committee((0.1875, 0.173, 0.171), weights=(0.5, 0.6, 0.7))
    )
    images = _images()
    x = images.float() / 255
    spread = set()
    for k in range(net.num_exits - 1):
        with _runtime(net, server.url, k, rule) as rt:
            got = rt.classify(images)
        want = route(net, x, Offloaded(rule, k))
        assert got.exit_idx.tolist() == want.exit_idx.tolist()
        assert torch.equal(got.prediction, want.prediction)
        assert torch.allclose(got.confidence, want.confidence.float(), atol=1e-6)
        assert list(got.where) == [EDGE if e <= k else CLOUD for e in want.exit_idx.tolist()]
        assert got.fallback_reason is None and got.fallback_count == 0
        assert got.attempts == (1 if got.offloaded else 0)
        assert got.total_ms >= got.edge_ms + got.network_ms
        spread.add((got.offloaded > 0, got.offloaded < len(images)))
    assert (True, True) in spread  # some k split the batch between edge and cloud


def test_float_input_equals_uint8_input(net, server):
    images = _images(6, seed=5)
    with _runtime(net, server.url, 1) as rt:
        a, b = rt.classify(images), rt.classify(images.float() / 255)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.exit_idx, b.exit_idx)


def test_cloud_with_the_same_rule_equals_route_with_it(net):
    """A cloud serving the same max-probability rule continues where the edge stopped."""
    rule = MaxProbability(THRESHOLDS)
    images = _images(24, seed=4)
    with LoopbackServer(build_app(build_small_net(), policy=rule)) as s:
        for k in range(net.num_exits - 1):
            with EdgeRuntime(net, k, rule, s.url) as rt:
                got = rt.classify(images)
            want = route(net, images.float() / 255, rule)
            assert got.exit_idx.tolist() == want.exit_idx.tolist()
            assert torch.equal(got.prediction, want.prediction)
    assert len(set(want.exit_idx.tolist())) >= 3


@torch.no_grad()
@pytest.mark.parametrize(("features", "itemsize"), [("FP32", 4), ("FP16", 2)])
def test_one_request_carries_the_header_and_the_raw_tensor_bytes(net, server, features, itemsize):
    k, never = 1, MaxProbability(2.0)  # nothing leaves on the edge: all offloaded
    images = _images(5)
    with _runtime(net, server.url, k, never, features=features) as rt:
        got = rt.classify(images)
    h = net.split(k)[0](images.float() / 255)[1]
    assert got.offloaded == 5 and got.attempts == 1
    assert got.payload_bytes == got.header_bytes + h.numel() * itemsize
    assert 0 < got.header_bytes < 300
    cloud = net.split(k)[1](
        h.to(getattr(torch, {"FP32": "float32", "FP16": "float16"}[features])).float()
    )
    assert torch.equal(got.prediction, cloud[-1].logits.argmax(1))
    assert set(got.exit_idx.tolist()) == {net.num_exits - 1}


def test_nothing_offloaded_sends_nothing(net):
    with EdgeRuntime(net, 0, MaxProbability(0.0), _free_port_url()) as rt:
        got = rt.classify(_images(4))
    assert got.where == (EDGE,) * 4 and got.attempts == 0 and got.payload_bytes == 0
    assert got.exit_idx.tolist() == [0] * 4


def _check_fallback(net, got, images, rule, k):
    x = images.float() / 255
    want = route(net, x, Offloaded(rule, k))
    ref_pred, ref_exit = _fallback_reference(net, x, rule, k)
    assert len(got) == len(images)
    assert got.fallback_count == got.offloaded > 0
    for j, w in enumerate(got.where):
        if w == EDGE:
            assert got.exit_idx[j] == want.exit_idx[j] <= k
            assert got.prediction[j] == want.prediction[j]
        else:
            assert w == FALLBACK
            assert got.exit_idx[j] == ref_exit[j] and got.prediction[j] == ref_pred[j]


def test_connection_refused_falls_back_after_bounded_retries(net):
    rule, k, images = MaxProbability(THRESHOLDS), 1, _images()
    with EdgeRuntime(net, k, rule, _free_port_url(), retries=2, backoff_s=0.01) as rt:
        got = rt.classify(images)
    _check_fallback(net, got, images, rule, k)
    assert got.attempts == 3
    assert "cannot connect" in got.fallback_reason and "after 3 attempts" in got.fallback_reason


def test_a_stalled_cloud_falls_back_on_read_timeout_without_retrying(net):
    release = threading.Event()
    cloud_net = build_small_net()
    handle = cloud_net.stages[-1].register_forward_pre_hook(lambda *_: release.wait(10))
    rule, k, images = MaxProbability(THRESHOLDS), 0, _images()
    try:
        with LoopbackServer(build_app(cloud_net)) as s:
            with EdgeRuntime(net, k, rule, s.url, read_timeout_s=0.3) as rt:
                got = rt.classify(images)
            release.set()
    finally:
        release.set()
        handle.remove()
    _check_fallback(net, got, images, rule, k)
    assert got.attempts == 1 and "no answer in time" in got.fallback_reason
    assert 250 < got.network_ms < 3000


def _counting_app(status):
    hits = []
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str):
        hits.append(name)
        return JSONResponse({"error": f"status {status}"}, status_code=status)

    return app, hits


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (504, 3), (400, 1), (404, 1)])
def test_retries_only_503_and_504_and_at_most_twice(net, status, attempts):
    app, hits = _counting_app(status)
    with (
        LoopbackServer(app) as s,
        EdgeRuntime(net, 0, MaxProbability(2.0), s.url, backoff_s=0.01) as rt,
    ):
        got = rt.classify(_images(3))
    assert got.attempts == attempts == len(hits)
    assert got.where == (FALLBACK,) * 3
    assert f"HTTP {status}: status {status}" in got.fallback_reason


def test_a_wrong_token_is_not_retried(net, server):
    with _runtime(net, server.url, 0, MaxProbability(2.0), token="wrong") as rt:
        got = rt.classify(_images(2))
    assert got.attempts == 1 and got.where == (FALLBACK,) * 2
    assert "HTTP 401" in got.fallback_reason


def test_eight_runtimes_in_threads_lose_and_mix_up_nothing(net, server):
    rule = MaxProbability(THRESHOLDS)
    batches = [_images(12, seed=100 + t) for t in range(8)]
    wants = [route(net, b.float() / 255, Offloaded(rule, t % 3)) for t, b in enumerate(batches)]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(t):
        try:
            with _runtime(net, server.url, t % 3, rule) as rt:
                results[t] = [rt.classify(batches[t]) for _ in range(3)]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert sorted(results) == list(range(8))
    for t, runs in results.items():
        for got in runs:
            assert got.fallback_count == 0, got.fallback_reason
            assert got.exit_idx.tolist() == wants[t].exit_idx.tolist()
            assert torch.equal(got.prediction, wants[t].prediction)


def test_bad_settings_are_refused(net):
    with pytest.raises(ValueError, match="split point"):
        EdgeRuntime(net, 3, MaxProbability(0.5), "http://x")
    with pytest.raises(ValueError, match="features"):
        EdgeRuntime(net, 0, MaxProbability(0.5), "http://x", features="INT8")
    with pytest.raises(ValueError, match="http://"):
        EdgeRuntime(net, 0, MaxProbability(0.5), "127.0.0.1:8000")
    with pytest.raises(TypeError, match="ExitPolicy"):
        EdgeRuntime(net, 0, 0.5, "http://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_timeout_s"):
        EdgeRuntime(net, 0, MaxProbability(0.5), "http://x", read_timeout_s=0)


def test_cloud_only_sends_the_raw_image_and_gets_the_final_exit(net, server):
    images = _images(5, seed=9)
    with CloudOnly(net, server.url, token=TOKEN) as rt:
        got = rt.classify(images)
    with torch.no_grad():
        want = net.forward_outputs(images.float() / 255)[-1].logits.argmax(1)
    assert torch.equal(got.prediction, want)
    assert got.where == (CLOUD,) * 5 and got.exit_idx.tolist() == [net.num_exits - 1] * 5
    assert got.payload_bytes == got.header_bytes + images.numel()  # raw uint8 after the header
    assert got.edge_ms == 0 and got.attempts == 1
    with pytest.raises(TypeError, match="uint8 images"):
        rt.classify(images.float())


def test_cloud_only_without_a_cloud_answers_nothing_but_flags_it(net):
    with CloudOnly(net, _free_port_url(), retries=1, backoff_s=0.001) as rt:
        got = rt.classify(_images(3))
    assert got.where == (FALLBACK,) * 3 and got.prediction.tolist() == [-1] * 3
    assert "cannot connect" in (got.fallback_reason or "") and got.attempts == 2

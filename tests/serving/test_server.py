"""The cloud server, over HTTP on loopback with a real uvicorn: health, metadata, cloud(edge(x))
equal to the whole model bit for bit in FP32, and every refusal with its 4xx (the server stays
up)."""

import json
import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from exitwise.policies import MaxProbability, final_decision
from exitwise.routing import simulate
from exitwise.serving.protocol import (
    HEADER_LENGTH,
    INFER_REQUEST_SCHEMA,
    decode_response,
    encode_request,
)
from exitwise.serving.server import IMAGE_MODEL, ServerLimits, build_app, cloud_model_name
from tests.conftest import build_small_net

TOKEN = "s3cret"
MAX_BODY = 200_000


def tcp_socket() -> socket.socket:
    """A TCP socket that asyncio gives TCP_NODELAY: it sets it only on sockets whose proto is
    IPPROTO_TCP, and ``socket.socket()`` has proto 0. Without it uvicorn's separate writes of a
    response's head and body meet Nagle and delayed ACKs: 40 ms per request on loopback."""
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


class LoopbackServer:
    """A uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app) -> None:
        self.sock = tcp_socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


@pytest.fixture(scope="module")
def server(net):
    app = build_app(net, limits=ServerLimits(max_body_bytes=MAX_BODY, token=TOKEN))
    with LoopbackServer(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as c:
        yield c


def _images(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def _infer(client, model, inputs, headers=None):
    body, h = encode_request(inputs)
    return client.post(f"/v2/models/{model}/infer", content=body, headers={**h, **(headers or {})})


def _decode(r):
    assert r.status_code == 200, r.text
    return decode_response(r.content, r.headers.get(HEADER_LENGTH))


def test_health_and_metadata(client, net):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    for k in range(net.num_exits - 1):
        name = cloud_model_name(k)
        meta = client.get(f"/v2/models/{name}").json()
        feat = net.split(k)[0](torch.zeros(1, 3, 16, 16))[1]
        assert meta["inputs"] == [
            {"name": "features", "datatype": "FP32", "shape": [-1, *feat.shape[1:]]}
        ]
        assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
            ("prediction", "INT64", [-1]),
            ("confidence", "FP32", [-1]),
            ("exit_idx", "INT64", [-1]),
        ]
        assert client.get(f"/v2/models/{name}/ready").json()["ready"] is True
    meta = client.get(f"/v2/models/{IMAGE_MODEL}").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 3, 16, 16]}


@torch.no_grad()
def test_cloud_of_edge_equals_the_whole_model_bit_for_bit(client, net):
    x = _images().float() / 255
    whole = final_decision(net.forward_outputs(x)[-1])
    for k in range(net.num_exits - 1):
        edge, _ = net.split(k)
        h = edge(x)[1]
        got = _decode(_infer(client, cloud_model_name(k), {"features": h}))
        assert torch.equal(got["prediction"], whole.prediction)
        assert torch.equal(got["confidence"].view(torch.int32), whole.confidence.view(torch.int32))
        assert got["exit_idx"].tolist() == [net.num_exits - 1] * len(x)


@torch.no_grad()
def test_fp16_features_are_accepted_and_cast(client, net):
    x = _images(3).float() / 255
    h = net.split(1)[0](x)[1].half()
    want = final_decision(net.split(1)[1](h.float())[-1])
    got = _decode(_infer(client, cloud_model_name(1), {"features": h}))
    assert torch.equal(got["prediction"], want.prediction)
    assert torch.equal(got["confidence"], want.confidence)


@torch.no_grad()
def test_cloud_only_image_model_equals_the_local_model(client, net):
    images = _images(5, seed=2)
    whole = final_decision(net.forward_outputs(images.float() / 255)[-1])
    got = _decode(_infer(client, IMAGE_MODEL, {"image": images}))
    assert torch.equal(got["prediction"], whole.prediction)
    assert torch.equal(got["confidence"], whole.confidence)


@torch.no_grad()
def test_json_data_inputs_and_outputs(client, net):
    """Tensors as JSON ``data`` lists give the binary answers; a JSON request gets JSON back,
    and a binary one the mix of binary and JSON outputs it asks for."""
    images = _images(3, seed=4)
    want = _decode(_infer(client, IMAGE_MODEL, {"image": images}))
    body, h = encode_request({"image": images}, binary=False)
    r = client.post(f"/v2/models/{IMAGE_MODEL}/infer", content=body, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert HEADER_LENGTH not in r.headers
    answer = r.json()
    assert [o["name"] for o in answer["outputs"]] == ["prediction", "confidence", "exit_idx"]
    assert all("data" in o and "parameters" not in o for o in answer["outputs"])
    got = decode_response(r.content, None)
    assert all(torch.equal(got[k], want[k]) for k in want)

    h1 = net.split(1)[0](images.float() / 255)[1]
    want = _decode(_infer(client, cloud_model_name(1), {"features": h1}))
    nested = {"name": "features", "shape": list(h1.shape), "datatype": "FP32", "data": h1.tolist()}
    r = client.post(f"/v2/models/{cloud_model_name(1)}/infer", json={"inputs": [nested]})
    assert torch.equal(decode_response(r.content, None)["confidence"], want["confidence"])

    body, h = encode_request({"features": h1})
    head_len = int(h[HEADER_LENGTH])
    header = json.loads(body[:head_len])
    header["outputs"] = [
        {"name": "confidence", "parameters": {"binary_data": False}},
        {"name": "prediction"},
    ]
    r = _raw(client, cloud_model_name(1), header, body[head_len:])
    assert r.status_code == 200, r.text
    head = json.loads(r.content[: int(r.headers[HEADER_LENGTH])])
    assert [("data" in o, "parameters" in o) for o in head["outputs"]] == [
        (True, False),
        (False, True),
    ]
    got = decode_response(r.content, r.headers[HEADER_LENGTH])
    assert list(got) == ["confidence", "prediction"]
    assert torch.equal(got["confidence"], want["confidence"])
    assert torch.equal(got["prediction"], want["prediction"])


def test_openapi_describes_the_protocol(server, net):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert set(doc["paths"]) == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
    }
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]
    assert body["application/json"]["schema"] == INFER_REQUEST_SCHEMA
    assert "application/octet-stream" in body
    name = next(p for p in infer["parameters"] if p["name"] == "name")
    served = [cloud_model_name(k) for k in range(net.num_exits - 1)] + [IMAGE_MODEL]
    assert sorted(name["schema"]["enum"]) == sorted(served)
    assert {HEADER_LENGTH} <= {p["name"] for p in infer["parameters"]}
    assert {"200", "400", "401", "404", "413", "503", "504"} <= set(infer["responses"])
    assert infer["security"] == [{"HTTPBearer": []}]  # this server has a token
    assert httpx.get(f"{server.url}/docs").status_code == 404  # no UI


def _raw(client, model, header, data=b"", length=None, headers=None):
    head = json.dumps(header).encode()
    h = {HEADER_LENGTH: str(len(head) if length is None else length), **(headers or {})}
    return client.post(f"/v2/models/{model}/infer", content=head + data, headers=h)


def _feature_entry(net, k=0, n=1, **over):
    shape = [n, *net.split(k)[0](torch.zeros(1, 3, 16, 16))[1].shape[1:]]
    entry = {"name": "features", "shape": shape, "datatype": "FP32"}
    entry["parameters"] = {"binary_data_size": 4 * torch.Size(shape).numel()}
    entry.update(over)
    return entry, bytes(entry["parameters"]["binary_data_size"])


@torch.no_grad()
def test_every_malformed_request_gets_its_4xx_and_the_server_stays_up(client, server, net):
    entry, data = _feature_entry(net)
    name = cloud_model_name(0)
    nan = torch.zeros(1, *entry["shape"][1:])
    nan[0, 0, 0, 0] = float("nan")
    cases = [
        (400, _raw(client, name, {"inputs": [entry]}, data, length=len(data) + 10**6)),
        (400, _raw(client, name, {"inputs": [entry]}, data, length=5)),
        (400, _raw(client, name, {"inputs": [entry]}, data[:-8])),
        (400, _raw(client, name, {"inputs": [entry]}, data + b"\0\0")),
        (400, _raw(client, name, {"inputs": [{**entry, "datatype": "INT64"}]}, data)),
        (400, _raw(client, name, {"inputs": [{**entry, "shape": [1, 1, 1, 1]}]}, data)),
        (400, _infer(client, name, {"features": nan})),
        (400, _infer(client, IMAGE_MODEL, {"image": _images(2).float()})),
        (413, _raw(client, name, {"inputs": [entry]}, bytes(MAX_BODY + 1))),
        (404, _infer(client, "cloud_k99", {"features": torch.zeros(1)})),
        (404, client.get("/v2/models/nope")),
        (401, _infer(client, name, {"features": nan}, headers={"Authorization": "Bearer no"})),
        (401, httpx.post(f"{server.url}/v2/models/{name}/infer", content=b"{}")),
        (401, httpx.get(f"{server.url}/v2/models/{name}")),
    ]
    for status, r in cases:
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and r.json()["error"]
    assert client.get("/v2/health/live").status_code == 200
    good = _infer(client, IMAGE_MODEL, {"image": _images(2)})
    assert _decode(good)["prediction"].shape == (2,)


@torch.no_grad()
def test_threshold_policy_matches_the_offline_simulation(net):
    """With a max-probability rule the cloud's exits decide as :func:`simulate` does on the
    whole model, for samples that reach the cloud (the edge's exits are not asked there)."""
    thresholds = (0.187, 0.206, 0.19)  # this untrained net's batch leaves at 3 exits
    policy = MaxProbability(thresholds)
    x = _images(8, seed=3).float() / 255
    outs = net.forward_outputs(x)
    with LoopbackServer(build_app(net, policy=policy)) as s, httpx.Client(base_url=s.url) as c:
        got = _decode(_infer(c, IMAGE_MODEL, {"image": (x * 255).round().to(torch.uint8)}))
        sim = simulate(outs, policy, net.costs)
        assert got["exit_idx"].tolist() == sim.exit_idx.tolist()
        assert torch.equal(got["prediction"], sim.prediction)
        assert len(set(sim.exit_idx.tolist())) >= 3
        k = 0
        h = net.split(k)[0](x)[1]
        cloud = _decode(_infer(c, cloud_model_name(k), {"features": h}))
        # the cloud ignores exit k and below: same as simulating with those exits never taken
        never = MaxProbability((2.0,) * (k + 1) + thresholds[k + 1 :])
        want = simulate(outs, never, net.costs)
        assert len(set(want.exit_idx.tolist())) > 1
        assert cloud["exit_idx"].tolist() == want.exit_idx.tolist()
        assert torch.equal(cloud["prediction"], want.prediction)


def test_timeout_and_in_flight_bound(net):
    """A slow model run gets 504 (keeping its slot until it ends), a request beyond the bound
    503, and the server answers health checks meanwhile."""
    release = threading.Event()

    def stall(*_):
        release.wait(10)

    handle = net.stages[-1].register_forward_pre_hook(stall)
    try:
        limits = ServerLimits(timeout_s=0.3, max_in_flight=1)
        with LoopbackServer(build_app(net, limits=limits)) as s, httpx.Client(base_url=s.url) as c:
            slow = _infer(c, IMAGE_MODEL, {"image": _images(1)})
            assert slow.status_code == 504 and "longer than" in slow.json()["error"]
            busy = _infer(c, IMAGE_MODEL, {"image": _images(1)})
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
            assert c.get("/v2/health/live").status_code == 200
            release.set()
            handle.remove()
            deadline = time.monotonic() + 10
            while (r := _infer(c, IMAGE_MODEL, {"image": _images(1)})).status_code == 503:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert r.status_code == 200
    finally:
        release.set()
        handle.remove()


def test_build_app_refuses_bad_settings(net):
    with pytest.raises(ValueError, match="max_in_flight"):
        ServerLimits(max_in_flight=0)
    with pytest.raises(ValueError, match="timeout_s"):
        ServerLimits(timeout_s=0)
    with pytest.raises(TypeError, match="MaxProbability"):
        build_app(net, policy=object())  # type: ignore[arg-type]

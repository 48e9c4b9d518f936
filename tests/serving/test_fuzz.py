"""The server under fuzz: more than 1,000 malformed requests, each answered with a 4xx and the
protocol's ``{"error": "..."}`` (never a 5xx, never a dropped connection), after which the
server still answers a valid request correctly, with bounded memory.

The server runs in its own process (uvicorn on a free loopback port), so its resident memory is
its alone: measured after a warm-up round and after the fuzz, between which more than 40 MB of
request bodies that are refused only once fully decoded (a NaN in the last sample) pass through;
a server that kept them would grow by that much. The requests come from schemathesis, generated
from the server's own OpenAPI document (positive and negative data), and from hand-written binary
cases: wrong header lengths, truncated and oversized bodies, wrong datatypes and shapes, byte
counts that do not match, NaN and Inf, unknown models, bad and non-object JSON, huge and negative
dimensions, and bad JSON ``data``.
"""

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
import torch
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from exitwise.policies import final_decision
from exitwise.serving.protocol import HEADER_LENGTH, decode_response, encode_request
from exitwise.serving.server import IMAGE_MODEL, cloud_model_name
from tests.conftest import build_small_net

MAX_BODY = 200_000
MIN_MALFORMED = 1_000
RSS_GROWTH_MB = 10  # observed: under 1 MB

SERVER = f"""
import socket, sys, torch, uvicorn
torch.set_num_threads(1)
from exitwise.serving.server import ServerLimits, build_app
from tests.conftest import build_small_net
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
app = build_app(build_small_net().eval(), limits=ServerLimits(max_body_bytes={MAX_BODY}))
uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off")).run(sockets=[sock])
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@pytest.fixture(scope="module")
def server():
    """``(url, pid)`` of a server in its own process; stopped after the module."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


def _feature_shape(net, k):
    with torch.no_grad():
        return list(net.split(k)[0](torch.zeros(1, 3, 16, 16))[1].shape[1:])


def _binary(header: dict, data: bytes, length=None) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + data, {HEADER_LENGTH: str(len(head) if length is None else length)}


def malformed_cases(net, seed=0):
    """``(what, model, body, headers, status)``: hand-written malformed requests (``status``
    None: any 4xx)."""
    rng = random.Random(seed)
    feat = _feature_shape(net, 0)
    models = [
        (cloud_model_name(0), "features", "FP32", feat, 4),
        (cloud_model_name(1), "features", "FP16", _feature_shape(net, 1), 2),
        (IMAGE_MODEL, "image", "UINT8", [3, 16, 16], 1),
    ]
    for model, name, datatype, shape, itemsize in models:
        n = rng.randint(1, 3)
        full = [n, *shape]
        size = itemsize * n * torch.Size(shape).numel()
        entry = {
            "name": name,
            "shape": full,
            "datatype": datatype,
            "parameters": {"binary_data_size": size},
        }
        data = bytes(size)

        def case(
            what, header=None, payload=data, length=None, status=400, e0=entry, m=model, **over
        ):
            e = {**e0, **over}
            body, headers = _binary(
                header if header is not None else {"inputs": [e]}, payload, length
            )
            return what, m, body, headers, status

        head_len = len(json.dumps({"inputs": [entry]}).encode())
        for length in [-1, 0, head_len - 1, head_len + 1, head_len + size, 10**9, "x", "1.5", ""]:
            yield case(f"header length {length!r}", length=length)
        for _ in range(15):
            yield case("header length inside the JSON", length=rng.randint(1, head_len - 1))
        for _ in range(20):
            yield case("truncated body", payload=data[: rng.randrange(size)])
        for _ in range(10):
            yield case("trailing bytes", payload=data + bytes(rng.randint(1, 64)))
        for dt in ["FP64", "INT8", "INT32", "BOOL", "BYTES", "BF16", "fp32", "", None, 3, [], {}]:
            if dt != datatype:
                yield case(f"datatype {dt!r}", datatype=dt)
        other = {"FP32": "UINT8", "FP16": "UINT8", "UINT8": "FP32"}[datatype]
        yield case("the other datatype's bytes", datatype=other)
        bad_shapes = [
            [],
            shape,
            [n, *shape, 1],
            [n, *shape[:-1], shape[-1] + 1],
            [n, *shape[1:], 2 * shape[0]],
            [0, *shape],
            [-1, *shape],
            [n, -shape[0], *shape[1:]],
            [2**40, *shape],
            [10**18, *shape],
            [2**62, 2**62, 2**62, 2**62],
            [float(n), *shape],
            [str(n), *shape],
            [None, *shape],
            [[n], *shape],
            [True, *shape],
            "1x2",
            None,
            {"n": n},
        ]
        for s in bad_shapes:
            yield case(f"shape {s!r}", shape=s)
        for s in [size - 1, size + 1, size - itemsize, size * 2, 0, 2**62, -size, 1.5, "24", True]:
            yield case(f"binary_data_size {s!r}", parameters={"binary_data_size": s})
        for p in [None, [], "x", 3]:
            yield case(f"parameters {p!r}", parameters=p)
        yield case("no binary_data_size and no data", parameters={})
        if datatype != "UINT8":
            dtype = {"FP32": torch.float32, "FP16": torch.float16}[datatype]
            for bad in [float("nan"), float("inf"), -float("inf")] * 4:
                x = torch.zeros(full, dtype=dtype)
                x.view(-1)[rng.randrange(x.numel())] = bad
                body, headers = encode_request({name: x})
                yield f"{bad} at a random place", model, body, headers, 400
        # JSON "data" (no binary extension)
        count = n * torch.Size(shape).numel()
        good = [0] * count
        json_cases = [
            ("data count - 1", good[:-1]),
            ("data count + 1", [*good, 0]),
            ("data nested wrong", [good]),
            ("data a dict", {"a": good}),
            ("data a string", "0" * count),
            ("data null", None),
            ("data with a string", [*good[:-1], "1"]),
            ("data with a bool", [*good[:-1], True]),
            ("data with null", [*good[:-1], None]),
            ("data with a list", [*good[:-1], [0]]),
            ("data with NaN", [*good[:-1], float("nan")]),
            ("data with Infinity", [*good[:-1], float("inf")]),
            ("data with a huge int", [*good[:-1], 10**400]),
            ("data beyond range", [*good[:-1], 300 if datatype == "UINT8" else 1e300]),
            ("data negative", [*good[:-1], -1 if datatype == "UINT8" else -1e300]),
            ("data and binary_data_size", good),
        ]
        for what, values in json_cases:
            e = {k: v for k, v in entry.items() if k != "parameters"}
            if what == "data and binary_data_size":
                e["parameters"] = entry["parameters"]
            body = json.dumps({"inputs": [{**e, "data": values}]}).encode()
            yield what, model, body, {}, 400
        # the header's structure
        structures = [
            {},
            {"inputs": []},
            {"inputs": {}},
            {"inputs": entry},
            {"inputs": [entry, entry]},
            {"inputs": [3]},
            {"inputs": [None]},
            {"inputs": [{**entry, "name": "nope"}]},
            {"inputs": [{**entry, "name": None}]},
            {"inputs": [{**entry, "name": ["x"]}]},
            {"inputs": [entry], "outputs": "prediction"},
            {"inputs": [entry], "outputs": [{"name": "nope"}]},
            {"inputs": [entry], "outputs": [{"name": "prediction"}, {"name": "prediction"}]},
            {"inputs": [entry], "outputs": [{"name": "prediction", "parameters": []}]},
            {
                "inputs": [entry],
                "outputs": [{"name": "confidence", "parameters": {"binary_data": 1}}],
            },
            {
                "inputs": [entry],
                "outputs": [{"name": "prediction", "parameters": {"classification": 2}}],
            },
            {"inputs": [entry], "outputs": [None]},
            {"inputs": [entry], "parameters": {"binary_data_output": "yes"}},
            {"inputs": [entry], "parameters": "x"},
            {"inputs": [entry], "id": 7},
            {"inputs": [entry], "id": ["a"]},
        ]
        for header in structures:
            yield case(f"header {json.dumps(header)[:60]}", header=header)
        # not JSON, or JSON but not an object
        for raw in [
            b"",
            b"{",
            b"{}}",
            b"nul",
            b"\xff\xfe\x00",
            b"[" * 50_000,
            b"1" * 5000,
            b'{"a":',
        ]:
            yield f"bad JSON {raw[:10]!r}", model, raw, {}, 400
        for raw in [b"[]", b"[1, 2]", b"3", b'"inputs"', b"null", b"true"]:
            yield f"non-object JSON {raw!r}", model, raw, {}, 400
        for _ in range(20):
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
            yield "random bytes", model, raw, {HEADER_LENGTH: str(rng.randint(1, len(raw)))}, 400
        for _ in range(3):
            yield case("oversized body", payload=bytes(MAX_BODY + rng.randint(1, 1000)), status=413)
    good_body, good_headers = encode_request(
        {"image": torch.zeros(1, 3, 16, 16, dtype=torch.uint8)}
    )
    for name in ["nope", "cloud_k99", "cloud_k-1", "CLOUD_IMAGE", "cloud_image ", "%00", "a" * 300]:
        yield f"unknown model {name[:20]!r}", name, good_body, good_headers, 404


def _send(client, model, body, headers):
    return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def _assert_error(r, status, what):
    assert 400 <= r.status_code < 500, f"{what}: HTTP {r.status_code} {r.text[:300]}"
    assert status is None or r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], what


def _late_refusals(net, count):
    """Bodies near the size limit refused only after the whole tensor is decoded."""
    shape = [1, *_feature_shape(net, 0)]
    per = 4 * torch.Size(shape).numel()
    n = max(1, (MAX_BODY - 1000) // per)
    x = torch.rand(n, *shape[1:], generator=torch.Generator().manual_seed(0))
    x[-1].view(-1)[-1] = float("nan")
    body, headers = encode_request({"features": x})
    return [(cloud_model_name(0), body, headers)] * count, len(body) * count


def _schemathesis_round(url, examples):
    """schemathesis' requests from the server's OpenAPI; returns the status counts."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: Counter = Counter()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in ops} >= {"POST /v2/models/{name}/infer", "GET /v2/models/{name}"}
    session = requests.Session()
    for op in ops:
        modes = [GenerationMode.POSITIVE]
        if op.path_parameters or op.body:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            n = examples if op.label.startswith("POST") else max(1, examples // 8)

            @settings(
                max_examples=n,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                response = case.call(base_url=url, session=session, timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=checks)
                if response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text[:300]

            run()
    return statuses


def test_over_a_thousand_malformed_requests_get_4xx_and_the_server_survives(server, net):
    url, pid = server
    cases = [*malformed_cases(net, seed=0), *malformed_cases(net, seed=1)]
    late, late_bytes = _late_refusals(net, 220)
    assert late_bytes > 40e6
    with httpx.Client(base_url=url, timeout=30) as client:
        # warm-up: one of each kind of case, then the memory baseline
        seen = set()
        for what, model, body, headers, status in cases:
            kind = what.split(" ")[0]
            if kind not in seen:
                seen.add(kind)
                _assert_error(_send(client, model, body, headers), status, what)
        for model, body, headers in late[:20]:
            _assert_error(_send(client, model, body, headers), 400, "NaN in the last sample")
        assert client.get("/openapi.json").status_code == 200  # built once, then cached
        images = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(3))
        images = images.to(torch.uint8)
        valid = encode_request({"image": images})
        assert _send(client, IMAGE_MODEL, *valid).status_code == 200  # the model's first run
        rss_before = _rss_mb(pid)

        for what, model, body, headers, status in cases:
            _assert_error(_send(client, model, body, headers), status, what)
        for model, body, headers in late[20:]:
            _assert_error(_send(client, model, body, headers), 400, "NaN in the last sample")
        chunked = client.post(  # no Content-Length: the stream is cut at the limit
            f"/v2/models/{IMAGE_MODEL}/infer", content=iter([bytes(50_000)] * 5)
        )
        _assert_error(chunked, 413, "oversized chunked body")
        for method in ("GET", "PUT", "DELETE"):
            r = client.request(method, f"/v2/models/{IMAGE_MODEL}/infer")
            _assert_error(r, 405, f"{method} on infer")
        _assert_error(client.get("/v2/nothing/here"), 404, "unknown path")

        statuses = _schemathesis_round(url, examples=150)
        assert not [s for s in statuses if s >= 500], statuses
        refused = sum(c for s, c in statuses.items() if 400 <= s < 500)
        total = len(cases) + len(late) + 5 + refused
        assert total >= MIN_MALFORMED, f"only {total} malformed requests"

        # still up, still right
        assert client.get("/v2/health/live").json() == {"live": True}
        r = _send(client, IMAGE_MODEL, *valid)
        assert r.status_code == 200, r.text
        got = decode_response(r.content, r.headers.get(HEADER_LENGTH))
        with torch.no_grad():
            want = final_decision(net.forward_outputs(images.float() / 255)[-1])
        assert torch.equal(got["prediction"], want.prediction)
        assert torch.equal(got["confidence"], want.confidence)
        growth = _rss_mb(pid) - rss_before
        assert growth < RSS_GROWTH_MB, (
            f"the server grew by {growth:.1f} MB over {total} malformed requests "
            f"({late_bytes / 1e6:.0f} MB refused after decoding)"
        )

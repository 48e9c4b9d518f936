"""Triton's own Python HTTP client against our server: health, metadata, and inference with
binary and JSON tensors both ways, equal to our own client's answers."""

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from exitwise.policies import MaxProbability
from exitwise.serving.protocol import HEADER_LENGTH, decode_response, encode_request
from exitwise.serving.server import IMAGE_MODEL, build_app, cloud_model_name
from tests.conftest import build_small_net
from tests.serving.test_server import LoopbackServer

OUTPUTS = ("prediction", "confidence", "exit_idx")


@pytest.fixture(scope="module")
def net():
    return build_small_net().eval()


@pytest.fixture(scope="module")
def server(net):
    with LoopbackServer(build_app(net, policy=MaxProbability((0.187, 0.206, 0.19)))) as s:
        yield s


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def _ours(server, model, inputs):
    body, headers = encode_request(inputs)
    r = httpx.post(f"{server.url}/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return decode_response(r.content, r.headers.get(HEADER_LENGTH))


def test_health_and_metadata(triton, net):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert triton.is_model_ready(IMAGE_MODEL) and not triton.is_model_ready("nope")
    meta = triton.get_model_metadata(cloud_model_name(0))
    assert meta["name"] == cloud_model_name(0)
    assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"][0] == -1
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS)


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_infer_equals_our_own_client(triton, server, net, binary_in, binary_out):
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        features = net.split(1)[0](images.float() / 255)[1]
    for model, name, x in [
        (IMAGE_MODEL, "image", images),
        (cloud_model_name(1), "features", features),
        (cloud_model_name(1), "features", features.half()),
    ]:
        array = x.numpy()
        datatype = {np.uint8: "UINT8", np.float32: "FP32", np.float16: "FP16"}[array.dtype.type]
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary_in)
        asked = (
            None
            if binary_out is None
            else [httpclient.InferRequestedOutput(o, binary_data=binary_out) for o in OUTPUTS]
        )
        result = triton.infer(model, [tensor], outputs=asked, request_id="t1")
        response = result.get_response()
        assert response["model_name"] == model and response["id"] == "t1"
        # without outputs named, tritonclient asks binary_data_output: true
        binary = True if binary_out is None else binary_out
        assert all(("parameters" in o) == binary for o in response["outputs"]), response
        want = _ours(server, model, {name: x})
        assert len(set(want["exit_idx"].tolist())) > 1  # rows leave at several exits
        for o in OUTPUTS:
            got = result.as_numpy(o)
            assert got.dtype == want[o].numpy().dtype, o
            assert np.array_equal(got, want[o].numpy()), o


def test_errors_reach_tritonclient_as_messages(triton):
    tensor = httpclient.InferInput("image", [1, 3, 8, 8], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 3, 16, 16\]"):
        triton.infer(IMAGE_MODEL, [tensor])
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.infer("nope", [tensor])

"""The Open Inference Protocol codec: bit-exact round trips and one refusal per malformed case."""

import json

import pytest
import torch

from exitwise.serving.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    TensorSpec,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

SPEC = TensorSpec("x", "FP32", (-1, 2, 3), accepts=("FP16",))
OUT = (TensorSpec("prediction", "INT64", (-1,)),)


def _x(dtype=torch.float32, n=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 2, 3, generator=g) * 100).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.int64])
def test_request_round_trip_is_bit_exact(dtype):
    x = _x(dtype) if dtype.is_floating_point else torch.arange(24).reshape(4, 2, 3).to(dtype)
    body, headers = encode_request({"x": x}, request_id="r1")
    name = {torch.float32: "FP32", torch.float16: "FP16", torch.uint8: "UINT8"}.get(dtype, "INT64")
    spec = TensorSpec("x", name, (-1, 2, 3))
    req = decode_request(body, headers[HEADER_LENGTH], [spec], OUT)
    got = req.inputs["x"]
    assert got.dtype == dtype and got.shape == x.shape
    assert got.view(-1).view(torch.uint8).tolist() == x.reshape(-1).view(torch.uint8).tolist()
    assert req.id == "r1" and req.outputs == {"prediction": True}


def test_fp32_keeps_every_bit():
    x = torch.tensor([[[1e-45, -0.0, 3.4028235e38], [1.0 / 3, -2.5, 7e-39]]])  # denormals, -0
    body, headers = encode_request({"x": x})
    got = decode_request(body, headers[HEADER_LENGTH], [SPEC]).inputs["x"]
    assert torch.equal(got.view(torch.int32), x.view(torch.int32))


def test_body_is_json_header_then_little_endian_bytes():
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    body, headers = encode_request({"x": x})
    n = int(headers[HEADER_LENGTH])
    header = json.loads(body[:n])
    assert header["inputs"][0] == {
        "name": "x",
        "shape": [1, 2, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 24},
    }
    assert body[n : n + 4] == b"\x00\x00\x80\x3f"  # 1.0f little-endian


def test_response_round_trip_binary_and_json():
    outs = {
        "prediction": torch.tensor([3, 1, 0]),
        "confidence": torch.tensor([0.5, 0.25, 1.0]),
    }
    body, headers = encode_response("m", outs, request_id="a")
    got = decode_response(body, headers.get(HEADER_LENGTH))
    assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in outs.items())
    body, headers = encode_response("m", outs, binary={"prediction": False, "confidence": False})
    assert HEADER_LENGTH not in headers
    got = decode_response(body, None)
    assert all(torch.equal(got[k], v) for k, v in outs.items())


def _request(header: dict, data: bytes = b"") -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + data, len(head)


def _entry(**over):
    entry = {
        "name": "x",
        "shape": [1, 2, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 24},
    }
    entry.update(over)
    return entry


GOOD = torch.ones(1, 2, 3).numpy().tobytes()


@pytest.mark.parametrize(
    ("body_len", "header", "data", "match"),
    [
        ("short", {"inputs": [_entry()]}, GOOD, "JSON header"),
        ("long", {"inputs": [_entry()]}, GOOD, "not a JSON header"),
        ("beyond", {"inputs": [_entry()]}, GOOD, "at most the body"),
        ("nan", {"inputs": [_entry()]}, GOOD, "must be an integer"),
        (None, {"inputs": [_entry()]}, GOOD[:-4], "short of its data"),
        (None, {"inputs": [_entry()]}, GOOD + b"\0", "follow the last tensor"),
        (None, {"inputs": [_entry(datatype="FP64")]}, GOOD, "expected datatype FP32 or FP16"),
        (None, {"inputs": [_entry(datatype="UINT8")]}, GOOD, "expected datatype"),
        (None, {"inputs": [_entry(shape=[1, 3, 2])]}, GOOD, r"expected shape \[-1, 2, 3\]"),
        (None, {"inputs": [_entry(shape=[1, 2])]}, GOOD, "expected shape"),
        (None, {"inputs": [_entry(shape=[0, 2, 3])]}, b"", "at least one"),
        (None, {"inputs": [_entry(shape=[1, -2, 3])]}, GOOD, "non-negative"),
        (None, {"inputs": [_entry(parameters={"binary_data_size": 20})]}, GOOD, "needs 24"),
        (None, {"inputs": [_entry(parameters={})]}, GOOD, "binary_data_size = 24"),
        (None, {"inputs": [_entry(name="y")]}, GOOD, "unknown input 'y'"),
        (None, {"inputs": [_entry(), _entry()]}, GOOD + GOOD, "appears twice"),
        (None, {"inputs": []}, b"", "non-empty 'inputs'"),
        (None, {"inputs": [_entry(data=[1, 2, 3, 4, 5, 6])]}, GOOD, "both 'data' and binary"),
        (None, {"inputs": [_entry(parameters=[])]}, GOOD, "parameters must be an object"),
        (None, {"inputs": [_entry()], "parameters": {"binary_data_output": 1}}, GOOD, "true or"),
        (None, {"inputs": [_entry()], "outputs": [{"name": "prediction"}] * 2}, GOOD, "twice"),
        (
            None,
            {"inputs": [_entry()], "outputs": [{"name": "prediction", "parameters": 3}]},
            GOOD,
            "parameters must be an object",
        ),
        (
            None,
            {
                "inputs": [_entry()],
                "outputs": [{"name": "prediction", "parameters": {"classification": 3}}],
            },
            GOOD,
            "classification extension is not supported",
        ),
        (None, {"inputs": [_entry()], "outputs": [{"name": "z"}]}, GOOD, "unknown output"),
        (None, {"inputs": [_entry()], "id": 3}, GOOD, "id must be a string"),
    ],
)
def test_malformed_requests_are_refused_with_400(body_len, header, data, match):
    body, n = _request(header, data)
    length = {
        None: n,
        "short": n - 1,
        "long": n + 3,
        "beyond": len(body) + 1,
        "nan": "twelve",
    }[body_len]
    with pytest.raises(ProtocolError, match=match) as info:
        decode_request(body, length, [SPEC], OUT)
    assert info.value.status == 400


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused(bad):
    x = torch.zeros(2, 2, 3)
    x[1, 0, 2] = bad
    for dtype in (torch.float32, torch.float16):
        body, headers = encode_request({"x": x.to(dtype)})
        with pytest.raises(ProtocolError, match="NaN or Inf") as info:
            decode_request(body, headers[HEADER_LENGTH], [SPEC])
        assert info.value.status == 400


def _json_entry(data, datatype="FP32", shape=(1, 2, 3)):
    return {"name": "x", "shape": list(shape), "datatype": datatype, "data": data}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.int64])
def test_json_data_round_trip_is_exact(dtype):
    """Tensors as JSON ``data`` lists (the protocol's plain form) decode to the same values as
    their binary form; a JSON-only request gets JSON outputs unless it asks for binary."""
    if dtype.is_floating_point:
        x = _x(dtype)
    else:
        x = torch.tensor([0, 255, 7, 1, 2, 3] * 4).reshape(4, 2, 3).to(dtype)
        if dtype == torch.int64:
            x[0, 0, 0], x[0, 0, 1] = -(2**63), 2**63 - 1
    name = {torch.float32: "FP32", torch.float16: "FP16", torch.uint8: "UINT8"}.get(dtype, "INT64")
    spec = TensorSpec("x", name, (-1, 2, 3))
    body, headers = encode_request({"x": x}, request_id="j", binary=False)
    assert HEADER_LENGTH not in headers and json.loads(body)["inputs"][0]["data"]
    req = decode_request(body, headers.get(HEADER_LENGTH), [spec], OUT)
    got = req.inputs["x"]
    assert got.dtype == dtype and got.shape == x.shape
    assert got.reshape(-1).view(torch.uint8).tolist() == x.reshape(-1).view(torch.uint8).tolist()
    assert req.id == "j" and req.outputs == {"prediction": False}
    nested = json.dumps({"inputs": [_json_entry(x.tolist(), name, x.shape)]}).encode()
    assert torch.equal(decode_request(nested, None, [spec]).inputs["x"], x)


def test_binary_outputs_follow_the_request():
    """binary_data_output sets the default, an output's binary_data overrides it, and without
    either an output is binary exactly when some input came as binary data."""
    outs = (TensorSpec("a", "INT64", (-1,)), TensorSpec("b", "FP32", (-1,)))
    data = [0.5] * 6

    def asked(header, binary_input=False):
        if binary_input:
            header["inputs"] = [_entry()]
            body, n = _request(header, GOOD)
            return decode_request(body, n, [SPEC], outs).outputs
        header["inputs"] = [_json_entry(data)]
        return decode_request(json.dumps(header).encode(), None, [SPEC], outs).outputs

    assert asked({}) == {"a": False, "b": False}
    assert asked({}, binary_input=True) == {"a": True, "b": True}
    assert asked({"outputs": []}, binary_input=True) == {"a": True, "b": True}
    assert asked({"parameters": {"binary_data_output": True}}) == {"a": True, "b": True}
    assert asked({"parameters": {"binary_data_output": False}}, True) == {"a": False, "b": False}
    mixed = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "b", "parameters": {"binary_data": False}}, {"name": "a"}],
    }
    assert asked(mixed) == {"b": False, "a": True}
    assert list(asked(mixed)) == ["b", "a"]  # in the order asked
    assert asked({"outputs": [{"name": "b", "parameters": {"binary_data": True}}]}) == {"b": True}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (_json_entry([0.0] * 5), "holds 5 values but shape"),
        (_json_entry([[0.0] * 6]), "nested 'data' must follow shape"),
        (_json_entry([[[0.0] * 3, [0.0] * 2]]), "expected lists of 3 at depth 2"),
        (_json_entry([[[0.0] * 3, 0.0]]), "expected lists of 3 at depth 2, got float"),
        (_json_entry([[[0.0] * 3, [0.0] * 3]], shape=(2, 2, 3)), "expected lists of 2 at depth 0"),
        (_json_entry({"a": 1}), "'data' must be a list"),
        (_json_entry("000000"), "'data' must be a list"),
        (_json_entry([0.0] * 5 + ["1"]), "must hold numbers, got str"),
        (_json_entry([0.0] * 5 + [True]), "must hold numbers, got bool"),
        (_json_entry([0.0] * 5 + [None]), "must hold numbers, got NoneType"),
        (_json_entry([0.0] * 5 + [float("nan")]), "NaN or Inf"),
        (_json_entry([0.0] * 5 + [-float("inf")]), "NaN or Inf"),
        (_json_entry([0.0] * 5 + [1e39]), "NaN or Inf values .or numbers beyond FP32's range"),
        (_json_entry([0.0] * 5 + [70000.0], "FP16"), "beyond FP16's range"),
        (_json_entry([0] * 5 + [10**400]), "integer too large for FP32"),
        (_json_entry([0] * 5 + [256], "UINT8"), r"lie in \[0, 255\], got values from 0 to 256"),
        (_json_entry([0] * 5 + [-1], "UINT8"), r"lie in \[0, 255\]"),
        (_json_entry([0] * 5 + [2**63], "INT64"), "lie in"),
        (_json_entry([0] * 5 + [1.0], "UINT8"), "must hold integers, got float"),
        (_json_entry([0] * 5 + [False], "INT64"), "must hold integers, got bool"),
    ],
)
def test_malformed_json_data_is_refused_with_400(entry, match):
    specs = [SPEC, TensorSpec("x", "UINT8", (-1, 2, 3)), TensorSpec("x", "INT64", (-1, 2, 3))]
    spec = {"UINT8": specs[1], "INT64": specs[2]}.get(entry["datatype"], SPEC)
    body = json.dumps({"inputs": [entry]}).encode()
    with pytest.raises(ProtocolError, match=match) as info:
        decode_request(body, None, [spec])
    assert info.value.status == 400


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"inputs": [1' + b"0" * 5000 + b"]}", b"\xff\xfe{}"],
)
def test_pathological_json_is_a_400_not_a_crash(body):
    """Too deep for the parser, more digits than Python converts, not UTF-8."""
    with pytest.raises(ProtocolError, match="not a JSON header") as info:
        decode_request(body, None, [SPEC])
    assert info.value.status == 400


def test_missing_input_is_refused():
    spec2 = TensorSpec("y", "UINT8", (-1,))
    body, headers = encode_request({"x": torch.zeros(1, 2, 3)})
    with pytest.raises(ProtocolError, match=r"missing input\(s\) \['y'\]"):
        decode_request(body, headers[HEADER_LENGTH], [SPEC, spec2])


def test_malformed_response_is_refused():
    body, headers = encode_response("m", {"p": torch.tensor([1, 2])})
    with pytest.raises(ProtocolError, match="bytes follow"):
        decode_response(body + b"\0", headers[HEADER_LENGTH])
    with pytest.raises(ProtocolError, match="bytes left"):
        decode_response(body[:-1], headers[HEADER_LENGTH])
    with pytest.raises(ProtocolError, match="error: boom"):
        decode_response(b'{"error": "boom"}', None)

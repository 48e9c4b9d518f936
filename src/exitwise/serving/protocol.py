"""The Open Inference Protocol (KServe v2) with the binary tensor data extension (floor 4).

A binary request or response is a JSON header followed by the raw bytes of its tensors, in the
order the header lists them; the HTTP header ``Inference-Header-Content-Length`` gives the JSON
header's length in bytes, and every binary tensor carries ``"parameters": {"binary_data_size": n}``
(see Triton's ``docs/protocol/extension_binary_data.md``). Tensors travel row-major and
little-endian. A body without ``Inference-Header-Content-Length`` is all JSON.

A request's input may also carry its values as JSON in ``"data"`` (the protocol's plain form):
a flat row-major list, or lists nested as the shape; integers in range for UINT8 and INT64,
numbers for FP32 and FP16. Non-finite floats are refused in both forms (NaN, Infinity, or a
number beyond the datatype's range): a classifier has no answer for them. Binary stays the
default of our own client (:func:`encode_request`), as JSON lists cost several times the bytes.

Outputs come back binary or as JSON ``"data"``, as the extension says: the request's
``parameters.binary_data_output`` sets the default for every output, an output's own
``parameters.binary_data`` overrides it, and without either an output is binary exactly when the
request sent some input as binary data (a JSON-only request gets a JSON-only answer).

Nothing here unpickles: bytes become tensors only through ``numpy.frombuffer`` with an explicit
little-endian dtype, after :func:`decode_request` has checked the header against the model's
metadata (names, datatypes, shapes with ``-1`` for any size, byte or value counts, no trailing
bytes, finite floats). Every violation raises one :class:`ProtocolError` carrying the HTTP status
to answer with. :data:`INFER_REQUEST_SCHEMA` and friends are the protocol's JSON bodies as JSON
Schema, for the server's OpenAPI document.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "HEADER_LENGTH",
    "DATATYPES",
    "ProtocolError",
    "TensorSpec",
    "ModelMetadata",
    "InferRequest",
    "datatype_of",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "INFER_REQUEST_SCHEMA",
    "INFER_RESPONSE_SCHEMA",
    "ERROR_SCHEMA",
]

#: The HTTP header that gives the JSON header's length in a binary body.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: Protocol datatype -> (torch dtype, little-endian numpy dtype).
DATATYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "FP32": (torch.float32, np.dtype("<f4")),
    "FP16": (torch.float16, np.dtype("<f2")),
    "UINT8": (torch.uint8, np.dtype("u1")),
    "INT64": (torch.int64, np.dtype("<i8")),
}
_BY_DTYPE = {torch_dtype: name for name, (torch_dtype, _) in DATATYPES.items()}


class ProtocolError(ValueError):
    """A request or response that breaks the protocol or the model's metadata.

    Attributes:
        status: the HTTP status to answer with (400 malformed, 401 unauthorised, 404 unknown
            model, 413 too large, 503 busy, 504 timed out).
        message: one line: what was expected, what arrived.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


def datatype_of(dtype: torch.dtype) -> str:
    """The protocol datatype of a torch dtype (``torch.float32`` -> ``"FP32"``)."""
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise ValueError(
            f"no protocol datatype for {dtype}; supported: "
            + ", ".join(f"{v[0]} ({k})" for k, v in DATATYPES.items())
        ) from None


@dataclass(frozen=True)
class TensorSpec:
    """One input or output in a model's metadata.

    Attributes:
        name: the tensor's name.
        datatype: its protocol datatype (what the metadata reports).
        shape: its shape, ``-1`` for a dimension of any size (the batch).
        accepts: further datatypes an input also accepts (converted by the model).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    accepts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMetadata:
    """What ``GET /v2/models/{name}`` answers."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "pytorch"
    versions: tuple[str, ...] = ("1",)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
        }


@dataclass
class InferRequest:
    """A decoded, validated request.

    Attributes:
        inputs: the input tensors by name (CPU, in the datatype they arrived in).
        outputs: the requested outputs and whether each is wanted as binary data (all of the
            model's outputs, binary, when the request names none).
        id: the request's ``id``, echoed in the response.
    """

    inputs: dict[str, Tensor]
    outputs: dict[str, bool] = field(default_factory=dict)
    id: str | None = None


# ------------------------------------------------------------------------------------ encoding


def _tensor_bytes(t: Tensor) -> bytes:
    """Row-major little-endian bytes of a CPU copy of ``t``."""
    name = datatype_of(t.dtype)
    array = t.detach().cpu().contiguous().numpy()
    return array.astype(DATATYPES[name][1], copy=False).tobytes(order="C")


def _join(header: dict[str, Any], chunks: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    headers = {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return head + b"".join(chunks), headers


def _tensor_entries(
    tensors: Mapping[str, Tensor], is_binary: Callable[[str], bool]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The JSON entries of named tensors (name, shape, datatype, and ``binary_data_size`` or
    ``"data"``) and the binary chunks that follow the header, in order."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, t in tensors.items():
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(t.shape),
            "datatype": datatype_of(t.dtype),
        }
        if is_binary(name):
            data = _tensor_bytes(t)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = t.detach().cpu().reshape(-1).tolist()
        entries.append(entry)
    return entries, chunks


def encode_request(
    inputs: Mapping[str, Tensor],
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    binary: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """An inference request, binary unless ``binary`` is False.

    Args:
        inputs: tensors by input name (FP32, FP16, UINT8 or INT64).
        outputs: output names to ask for (default: all).
        request_id: echoed back by the server.
        binary: send the tensors as binary data and ask for binary outputs (the default), or
            send them as JSON ``"data"`` lists and ask for JSON outputs (the protocol's plain
            form, several times the bytes).

    Returns:
        The body and the HTTP headers to send with it.
    """
    entries, chunks = _tensor_entries(inputs, lambda _name: binary)
    header: dict[str, Any] = {"inputs": entries}
    if request_id is not None:
        header["id"] = request_id
    if outputs is not None:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    if not binary:
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        return head, {"Content-Type": "application/json"}
    return _join(header, chunks)


def encode_response(
    model_name: str,
    outputs: Mapping[str, Tensor],
    binary: Mapping[str, bool] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """An inference response; each output binary unless ``binary[name]`` is False (then its
    values go in ``"data"``). Returns the body and the HTTP headers."""
    entries, chunks = _tensor_entries(
        outputs, lambda name: binary is None or binary.get(name, True)
    )
    header: dict[str, Any] = {"model_name": model_name, "outputs": entries}
    if request_id is not None:
        header["id"] = request_id
    if not chunks:
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        return head, {"Content-Type": "application/json"}
    return _join(header, chunks)


# ------------------------------------------------------------------------------------ decoding


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def _split(body: bytes, header_length: int | str | None) -> tuple[dict[str, Any], memoryview]:
    """Parse the JSON header; return it and the binary part that follows."""
    if header_length is None:
        n = len(body)
    else:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise _bad(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise _bad(
                f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes; expected the JSON "
                "header's length, at most the body's"
            )
    try:
        header = json.loads(bytes(body[:n]).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, too deep, too many digits
        reason = " ".join(str(e).split())[:200]
        raise _bad(f"the first {n} bytes of the body are not a JSON header ({reason})") from None
    if not isinstance(header, dict):
        raise _bad(f"the JSON header is a {type(header).__name__}; expected an object")
    return header, memoryview(body)[n:]


def _shape(entry: Mapping[str, Any], what: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(f"{what}: shape must be a list of non-negative integers, got {shape!r:.200}")
    return tuple(shape)


def _binary_size(entry: Mapping[str, Any], what: str) -> int | None:
    params = entry.get("parameters", {})
    if not isinstance(params, dict):
        raise _bad(f"{what}: parameters must be an object, got {params!r:.100}")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(f"{what}: binary_data_size must be a non-negative integer, got {size!r:.100}")
    return size


def _tensor(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...]) -> Tensor:
    torch_dtype, np_dtype = DATATYPES[datatype]
    array = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="), copy=True)
    return torch.from_numpy(array).reshape(shape).to(torch_dtype)


def _check_finite(t: Tensor, what: str) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise _bad(
            f"{what} holds NaN or Inf values (or numbers beyond {datatype_of(t.dtype)}'s range); "
            "expected finite numbers"
        )


def _flat_values(data: Any, shape: tuple[int, ...], what: str) -> list[Any]:
    """The values of a JSON ``"data"``: a flat row-major list, or lists nested as ``shape``."""
    count = math.prod(shape)
    if not isinstance(data, list):
        raise _bad(f"{what}: 'data' must be a list of {count} values, got {type(data).__name__}")
    if not any(isinstance(v, list) for v in data):
        if len(data) != count:
            raise _bad(
                f"{what}: 'data' holds {len(data)} values but shape {list(shape)} needs {count}"
            )
        return data
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        for v in level:
            if not isinstance(v, list) or len(v) != size:
                got = f"a list of {len(v)}" if isinstance(v, list) else type(v).__name__
                raise _bad(
                    f"{what}: nested 'data' must follow shape {list(shape)}: expected lists of "
                    f"{size} at depth {depth}, got {got}"
                )
        level = [x for v in level for x in v]
    return level


def _json_tensor(data: Any, datatype: str, shape: tuple[int, ...], what: str) -> Tensor:
    """A tensor from JSON ``"data"``, its values checked against ``datatype``."""
    torch_dtype, np_dtype = DATATYPES[datatype]
    values = _flat_values(data, shape, what)
    kinds = set(map(type, values))
    if np_dtype.kind in "iu":
        if not kinds <= {int}:
            odd = sorted(k.__name__ for k in kinds - {int})
            raise _bad(f"{what}: {datatype} 'data' must hold integers, got {', '.join(odd)}")
        info = np.iinfo(np_dtype)
        if values and not (info.min <= min(values) and max(values) <= info.max):
            raise _bad(
                f"{what}: {datatype} 'data' must lie in [{info.min}, {info.max}], got values "
                f"from {min(values)} to {max(values)}"
            )
        array = np.array(values, dtype=np_dtype.newbyteorder("="))
    else:
        if not kinds <= {int, float}:
            odd = sorted(k.__name__ for k in kinds - {int, float})
            raise _bad(f"{what}: {datatype} 'data' must hold numbers, got {', '.join(odd)}")
        try:
            wide = np.array(values, dtype=np.float64)
        except OverflowError:
            raise _bad(f"{what}: 'data' holds an integer too large for {datatype}") from None
        with np.errstate(over="ignore", invalid="ignore"):
            array = wide.astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array).reshape(shape).to(torch_dtype)


def decode_request(
    body: bytes,
    header_length: int | str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec] = (),
) -> InferRequest:
    """Parse and validate a request against a model's metadata.

    Each input arrives as binary data (``parameters.binary_data_size``) or as JSON ``"data"``,
    never both; see the module's docstring for the rules, and for which outputs are answered as
    binary.

    Args:
        body: the whole HTTP body.
        header_length: the ``Inference-Header-Content-Length`` value (``None`` if absent: then
            the body is all JSON and every input carries ``"data"``).
        inputs: the model's inputs (every one must arrive, nothing else).
        outputs: the model's outputs (a request may name a subset).

    Raises:
        ProtocolError: (400) for anything that does not fit, naming what was expected.
    """
    header, rest = _split(body, header_length)
    entries = header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise _bad(f"the JSON header needs a non-empty 'inputs' list, got {entries!r:.200}")
    specs = {s.name: s for s in inputs}
    offset, tensors, any_binary = 0, {}, False
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _bad(f"inputs[{i}] must be an object, got {entry!r:.200}")
        name: str
        name = entry.get("name")  # type: ignore[assignment]
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise _bad(f"inputs[{i}]: unknown input {name!r:.100}; expected one of {sorted(specs)}")
        if name in tensors:
            raise _bad(f"input {name!r} appears twice")
        what = f"input {name!r}"
        datatype = entry.get("datatype")
        allowed = (spec.datatype, *spec.accepts)
        if datatype not in allowed:
            raise _bad(f"{what}: expected datatype {' or '.join(allowed)}, got {datatype!r:.100}")
        shape = _shape(entry, what)
        if len(shape) != len(spec.shape) or any(
            e != -1 and d != e for d, e in zip(shape, spec.shape, strict=True)
        ):
            raise _bad(f"{what}: expected shape {list(spec.shape)} (-1: any), got {list(shape)}")
        if spec.shape and spec.shape[0] == -1 and shape[0] < 1:
            raise _bad(f"{what}: expected a batch of at least one, got shape {list(shape)}")
        size = _binary_size(entry, what)
        if "data" in entry:
            if size is not None:
                raise _bad(f"{what}: has both 'data' and binary_data_size; expected one of them")
            t = _json_tensor(entry["data"], datatype, shape, what)
        else:
            expected = math.prod(shape) * DATATYPES[datatype][1].itemsize
            if size is None:
                raise _bad(
                    f"{what}: expected parameters.binary_data_size = {expected} (binary data) or "
                    "'data' (JSON values), got neither"
                )
            if size != expected:
                raise _bad(
                    f"{what}: binary_data_size is {size} bytes but shape {list(shape)} of "
                    f"{datatype} needs {expected}"
                )
            if offset + size > len(rest):
                raise _bad(
                    f"{what}: the body ends {offset + size - len(rest)} bytes short of its data "
                    "(truncated?)"
                )
            t = _tensor(rest[offset : offset + size], datatype, shape)
            offset += size
            any_binary = True
        _check_finite(t, what)
        tensors[name] = t
    missing = sorted(set(specs) - set(tensors))
    if missing:
        raise _bad(f"missing input(s) {missing}")
    if offset != len(rest):
        raise _bad(
            f"{len(rest) - offset} bytes follow the last tensor; expected the body to end there"
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad(f"id must be a string, got {request_id!r:.100}")
    return InferRequest(tensors, _requested(header, outputs, any_binary), request_id)


def _flag(params: Any, key: str, what: str) -> bool | None:
    """A boolean parameter (``None`` when absent)."""
    if not isinstance(params, dict):
        raise _bad(f"{what}: parameters must be an object, got {params!r:.100}")
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{what}: {key} must be true or false, got {value!r:.100}")
    return value


def _requested(
    header: Mapping[str, Any], outputs: Sequence[TensorSpec], any_binary: bool
) -> dict[str, bool]:
    """The outputs to answer, each with whether it goes back as binary data."""
    known = [s.name for s in outputs]
    default = _flag(header.get("parameters", {}), "binary_data_output", "the request")
    if default is None:
        default = any_binary
    asked = header.get("outputs")
    if asked is None or asked == []:
        return dict.fromkeys(known, default)
    if not isinstance(asked, list):
        raise _bad(f"'outputs' must be a list, got {asked!r:.100}")
    wanted: dict[str, bool] = {}
    for i, entry in enumerate(asked):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in known:
            raise _bad(f"outputs[{i}]: unknown output {name!r:.100}; expected one of {known}")
        if name in wanted:
            raise _bad(f"outputs[{i}]: output {name!r} is asked twice")
        params = entry.get("parameters", {})
        binary = _flag(params, "binary_data", f"outputs[{i}]")
        if params.get("classification"):
            raise _bad(f"outputs[{i}]: the classification extension is not supported")
        wanted[name] = default if binary is None else binary
    return wanted


def decode_response(body: bytes, header_length: int | str | None) -> dict[str, Tensor]:
    """The output tensors of a response, by name (binary or JSON ``data``), validated: known
    datatypes, byte counts equal to shape x itemsize, no trailing bytes.

    Raises:
        ProtocolError: (400) for a malformed response; a protocol ``{"error": ...}`` body is
            raised with status 500 (the caller knows the real HTTP status).
    """
    header, rest = _split(body, header_length)
    if "error" in header:
        raise ProtocolError(500, f"the server answered with an error: {header['error']}")
    entries = header.get("outputs")
    if not isinstance(entries, list):
        raise _bad(f"the response needs an 'outputs' list, got {entries!r}")
    offset, tensors = 0, {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(f"outputs[{i}] must be an object with a name, got {entry!r}")
        what = f"output {entry['name']!r}"
        datatype = entry.get("datatype")
        if datatype not in DATATYPES:
            raise _bad(f"{what}: expected a datatype in {sorted(DATATYPES)}, got {datatype!r}")
        shape = _shape(entry, what)
        size = _binary_size(entry, what)
        if size is None:
            data = entry.get("data")
            if not isinstance(data, list) or len(data) != math.prod(shape):
                raise _bad(f"{what}: expected {math.prod(shape)} values in 'data'")
            t = torch.tensor(data, dtype=DATATYPES[datatype][0]).reshape(shape)
        else:
            expected = math.prod(shape) * DATATYPES[datatype][1].itemsize
            if size != expected or offset + size > len(rest):
                raise _bad(
                    f"{what}: binary_data_size {size}, expected {expected}, with "
                    f"{len(rest) - offset} bytes left in the body"
                )
            t = _tensor(rest[offset : offset + size], datatype, shape)
            offset += size
        tensors[entry["name"]] = t
    if offset != len(rest):
        raise _bad(f"{len(rest) - offset} bytes follow the last output tensor")
    return tensors


# ------------------------------------------------------------------------- JSON Schema (OpenAPI)

_PARAMETERS = {
    "type": "object",
    "description": "Free-form parameters; the binary extension reads binary_data_size, "
    "binary_data and binary_data_output.",
}

#: The protocol's JSON inference request (KServe v2 ``$inference_request``), as this server
#: reads it: the datatypes it knows, shapes of non-negative integers.
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": sorted(DATATYPES)},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                    },
                    "data": {
                        "type": "array",
                        "description": "The values, row-major: flat, or lists nested as the "
                        "shape. Absent for a binary tensor.",
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data": {"type": "boolean"}},
                    },
                },
            },
        },
    },
}

#: The protocol's JSON inference response (``$inference_response``); in a binary response this
#: is the JSON header, the tensors' bytes follow it.
INFER_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string"},
                    "parameters": _PARAMETERS,
                    "data": {"type": "array"},
                },
            },
        },
    },
}

#: The protocol's error body (``$inference_error_response`` and the others).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": False,
}

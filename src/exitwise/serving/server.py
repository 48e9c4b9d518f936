"""The cloud server: a :class:`MultiExitNet`'s cloud parts behind the Open Inference Protocol.

``build_app(model)`` returns a FastAPI app with one protocol model per split point ``k``
(``cloud_k{k}``: the tensor after side exit ``k`` in; prediction, confidence and the exit taken
out) and ``cloud_image`` (a UINT8 image batch in, the whole model: the cloud-only baseline).
Serve it with uvicorn (``exitwise serve RUN_DIR``) or any ASGI server.

Inputs arrive as binary tensors (the protocol's binary extension, what our edge client sends) or
as JSON ``"data"`` lists; outputs go back binary or as JSON as the request asks (see
:mod:`exitwise.serving.protocol`). ``GET /openapi.json`` describes the endpoints, the inference
request body as the protocol's JSON schema.

Every refusal is a :class:`~exitwise.serving.protocol.ProtocolError` turned into the protocol's
``{"error": "..."}`` by one exception handler: 400 malformed, 401 missing or wrong bearer token,
404 unknown model, 413 body too large, 503 too many requests in flight, 504 timed out. The model
runs in eval mode under ``torch.no_grad()`` in a worker thread, so the event loop keeps answering
health checks (and refusals) while it computes. Every request to a model goes through that
model's :class:`~exitwise.serving.batching.Batcher`: with ``max_batch > 1`` concurrent requests
share one model run (dynamic batching), with the default ``max_batch=1`` each runs alone.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import Tensor

from exitwise.nets import MultiExitNet
from exitwise.outputs import ExitOutput
from exitwise.policies import MaxProbability, final_decision
from exitwise.serving.batching import Batcher
from exitwise.serving.protocol import (
    ERROR_SCHEMA,
    HEADER_LENGTH,
    INFER_REQUEST_SCHEMA,
    INFER_RESPONSE_SCHEMA,
    ModelMetadata,
    ProtocolError,
    TensorSpec,
    decode_request,
    encode_response,
)

__all__ = ["build_app", "ServerLimits", "IMAGE_MODEL", "cloud_model_name"]

#: The cloud-only baseline's model name.
IMAGE_MODEL = "cloud_image"

OUTPUTS = (
    TensorSpec("prediction", "INT64", (-1,)),
    TensorSpec("confidence", "FP32", (-1,)),
    TensorSpec("exit_idx", "INT64", (-1,)),
)


def cloud_model_name(k: int) -> str:
    """The protocol name of the cloud part after split point ``k``."""
    return f"cloud_k{k}"


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts.

    Attributes:
        max_body_bytes: larger request bodies get 413.
        timeout_s: a request whose model run takes longer gets 504 (the run finishes in its
            thread and keeps its in-flight slot until then).
        max_in_flight: requests admitted at once; one more gets 503.
        token: if set, ``/v2/models/...`` needs ``Authorization: Bearer <token>`` (401 without);
            the health endpoints stay open.
        max_batch: dynamic batching: concurrent requests to one model share one run of up to
            this many samples (a larger request runs alone), one run of each model at a time,
            while the next batch gathers. 1 (the default) runs each request alone, up to
            ``max_in_flight`` at once. Batches fill only from requests in flight, so
            ``max_in_flight`` bounds them too.
        max_delay_ms: how long the first request of a batch waits for more (ignored when
            ``max_batch`` is 1). The timeout counts this wait.
    """

    max_body_bytes: int = 64 * 2**20
    timeout_s: float = 30.0
    max_in_flight: int = 8
    token: str | None = None
    max_batch: int = 1
    max_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.token is not None and not self.token:
            raise ValueError("token must be a non-empty string or None")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int):
            raise ValueError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (1: no batching), got {self.max_batch}")
        if not (math.isfinite(self.max_delay_ms) and self.max_delay_ms >= 0):
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {self.max_delay_ms}")
        if self.max_delay_ms >= 1000 * self.timeout_s:
            raise ValueError(
                f"max_delay_ms ({self.max_delay_ms:g}) must be shorter than the timeout "
                f"({1000 * self.timeout_s:g} ms), or every batched request would time out"
            )


class _Slots:
    """A thread-safe count of requests in flight; released from the worker thread."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                raise ProtocolError(
                    503, f"the server is busy ({self.limit} requests in flight); retry later"
                )
            self.used += 1

    def give(self, *_: object) -> None:
        with self._lock:
            self.used -= 1


@dataclass(frozen=True)
class _Entry:
    metadata: ModelMetadata
    run: Callable[[Tensor], dict[str, Tensor]]


def _final(output: ExitOutput, exit_idx: int) -> dict[str, Tensor]:
    """Every sample leaves at the final exit ``exit_idx`` (its plain argmax)."""
    dec = final_decision(output)
    return {
        "prediction": dec.prediction,
        "confidence": dec.confidence.float(),
        "exit_idx": torch.full_like(dec.prediction, exit_idx),
    }


def _decide(outputs, first_exit: int, policy: MaxProbability) -> dict[str, Tensor]:
    """Prediction, confidence and exit of every sample under ``policy``, given the outputs of
    exits ``first_exit..`` (the last being the final exit)."""
    # MaxProbability reads only the exit it decides at, so the edge's exits need not be here:
    # pad the history to global exit indices with the first cloud output (never read).
    history = [outputs[0]] * first_exit + list(outputs)
    last = len(history) - 1
    dec = policy.final(history)
    pred, conf = dec.prediction.clone(), dec.confidence.clone()
    exit_idx = torch.full_like(pred, last)
    for i in range(last - 1, first_exit - 1, -1):  # the shallowest exit that lets a sample go wins
        d = policy.decide(i, history[: i + 1])
        pred = torch.where(d.exit_mask, d.prediction, pred)
        conf = torch.where(d.exit_mask, d.confidence, conf)
        exit_idx = torch.where(d.exit_mask, torch.full_like(exit_idx, i), exit_idx)
    return {"prediction": pred, "confidence": conf.float(), "exit_idx": exit_idx}


def _entries(model: MultiExitNet, policy: MaxProbability | None) -> dict[str, _Entry]:
    p = next(model.parameters())
    c, h, w = model.input_shape
    entries: dict[str, _Entry] = {}
    last = model.num_exits - 1
    with torch.no_grad():
        probe = torch.zeros((1, c, h, w), dtype=p.dtype, device=p.device)
    for k in range(model.num_exits - 1):
        edge, cloud = model.split(k)
        with torch.no_grad():
            feat_shape = tuple(int(d) for d in edge(probe)[1].shape[1:])

        def run_cloud(t: Tensor, cloud=cloud, k=k) -> dict[str, Tensor]:
            x = t.to(device=p.device, dtype=torch.float32).to(p.dtype)
            if policy is None:  # no rule: the final exit alone, no side head evaluated
                return _final(cloud.final_output(x), last)
            return _decide(cloud(x), k + 1, policy)

        spec = TensorSpec("features", "FP32", (-1, *feat_shape), accepts=("FP16",))
        entries[cloud_model_name(k)] = _Entry(
            ModelMetadata(cloud_model_name(k), (spec,), OUTPUTS), run_cloud
        )

    def run_image(t: Tensor) -> dict[str, Tensor]:
        x = t.to(device=p.device).to(p.dtype) / 255
        if policy is None:  # the conventional network: the backbone and its classifier
            return _final(model.final_output(x), last)
        return _decide(model.forward_outputs(x), 0, policy)

    spec = TensorSpec("image", "UINT8", (-1, c, h, w))
    entries[IMAGE_MODEL] = _Entry(ModelMetadata(IMAGE_MODEL, (spec,), OUTPUTS), run_image)
    return entries


def build_app(
    model: MultiExitNet,
    policy: MaxProbability | None = None,
    limits: ServerLimits | None = None,
) -> FastAPI:
    """An Open Inference Protocol app serving ``model``'s cloud parts.

    The app owns ``model`` from now on: it is put in eval mode and must not be trained while
    served.

    Args:
        model: the network, on the device it should run on.
        policy: the exit rule over the cloud's exits (``None``: every sample leaves at the final
            exit; a :class:`~exitwise.policies.MaxProbability`: the first cloud exit whose
            max-probability reaches its threshold). ``cloud_image`` uses it over all exits.
        limits: body size, timeout, in-flight bound, bearer token and dynamic batching.

    The app's ``state.batchers`` holds each model's :class:`~exitwise.serving.batching.Batcher`
    (its ``runs``, ``requests`` and ``samples`` count what it did).
    """
    if policy is not None:
        if not isinstance(policy, MaxProbability):
            raise TypeError(
                "the cloud sees only its own exits, so it takes a MaxProbability rule (or None), "
                f"got {type(policy).__name__}"
            )
        policy.check_exits(model.num_exits)
    limits = limits or ServerLimits()
    model.eval()
    entries = _entries(model, policy)
    slots = _Slots(limits.max_in_flight)
    pool = ThreadPoolExecutor(max_workers=limits.max_in_flight, thread_name_prefix="exitwise-infer")
    batched = limits.max_batch > 1
    delay_s = limits.max_delay_ms / 1000 if batched else 0.0
    runs = 1 if batched else limits.max_in_flight  # runs of one model at once
    batchers = {
        name: Batcher(entry.run, pool, limits.max_batch, delay_s, runs)
        for name, entry in entries.items()
    }
    app = FastAPI(
        title="exitwise cloud",
        version="1",
        summary="The cloud parts of an early-exit network over the Open Inference Protocol "
        "(KServe v2) with the binary tensor data extension.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    #: Each model's batcher (``runs``, ``requests``, ``samples`` count what it did).
    app.state.batchers = batchers

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        """The one place errors become the protocol's ``{"error": ...}``."""
        if isinstance(exc, ProtocolError):
            status, message = exc.status, exc.message
        elif isinstance(exc, StarletteHTTPException):
            status, message = exc.status_code, str(exc.detail)
        else:
            status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    for kind in (ProtocolError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, on_error)

    def lookup(request: Request, name: str) -> _Entry:
        if limits.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), limits.token.encode()
            ):
                raise ProtocolError(401, "missing or wrong bearer token (Authorization: Bearer T)")
        entry = entries.get(name)
        if entry is None:
            raise ProtocolError(404, f"unknown model {name!r:.100}; served: {sorted(entries)}")
        return entry

    # The OpenAPI document: the served names, the errors, the bearer token where there is one
    # (the check itself is ``lookup``'s; the scheme only documents it).
    def model_name() -> Any:
        return Path(description="a served model", json_schema_extra={"enum": sorted(entries)})

    guarded = [Depends(HTTPBearer(auto_error=False))] if limits.token is not None else []

    def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
        return {
            code: {
                "description": _REASONS[code],
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
            for code in codes
        }

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "exitwise", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}", dependencies=guarded, responses=errors(401, 404))
    async def metadata(request: Request, name: str = model_name()) -> dict:
        return lookup(request, name).metadata.to_json()

    @app.get("/v2/models/{name}/ready", dependencies=guarded, responses=errors(401, 404))
    async def model_ready(request: Request, name: str = model_name()) -> dict:
        lookup(request, name)
        return {"name": name, "ready": True}

    @app.post(
        "/v2/models/{name}/infer",
        dependencies=guarded,
        response_class=Response,
        responses={
            200: {
                "description": "The outputs: JSON, or a JSON header then the binary tensors",
                "content": {
                    "application/json": {"schema": INFER_RESPONSE_SCHEMA},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **errors(400, 401, 404, 413, 503, 504),
        },
        openapi_extra={
            "parameters": [
                {
                    "name": HEADER_LENGTH,
                    "in": "header",
                    "required": False,
                    "description": "the JSON header's length in bytes, when binary tensors "
                    "follow it",
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": INFER_REQUEST_SCHEMA},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                    },
                },
            },
        },
    )
    async def infer(request: Request, name: str = model_name()) -> Response:
        entry = lookup(request, name)
        slots.take()
        try:
            body = await _read_body(request, limits.max_body_bytes)
            meta = entry.metadata
            req = decode_request(
                body, request.headers.get(HEADER_LENGTH), meta.inputs, meta.outputs
            )
        except BaseException:
            slots.give()
            raise
        answer = batchers[name].submit(req.inputs[meta.inputs[0].name])
        answer.add_done_callback(_released(slots))  # the slot is held until the run ends
        try:
            result = await asyncio.wait_for(asyncio.shield(answer), limits.timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(504, f"the model took longer than {limits.timeout_s:g} s") from None
        out = {k: result[k] for k in req.outputs}
        body, headers = encode_response(name, out, req.outputs, req.id)
        return Response(body, headers=headers, media_type=headers["Content-Type"])

    return app


_REASONS = {
    400: "Malformed, or does not fit the model's metadata",
    401: "Missing or wrong bearer token",
    404: "Unknown model",
    413: "The body exceeds the size limit",
    503: "Too many requests in flight; retry later",
    504: "The model did not answer in time",
}


def _released(slots: _Slots) -> Callable[[asyncio.Future], None]:
    """A done-callback that frees a slot and marks the answer's error as seen (the handler
    re-raises it if it still waits; one that timed out does not)."""

    def release(answer: asyncio.Future) -> None:
        slots.give()
        if not answer.cancelled():
            answer.exception()

    return release


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``max_bytes``."""
    declared = request.headers.get("content-length")
    too_large = ProtocolError(413, f"the request body exceeds the limit of {max_bytes} bytes")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)

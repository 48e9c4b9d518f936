"""The edge runtime: early exit on the device, the rest offloaded to the cloud (floor 4).

Seed 002 (Pacheco et al., "Inference Time Optimization Using BranchyNet Partitioning", and its
follow-ups): the edge runs a :class:`~exitwise.nets.MultiExitNet`'s stages and exits ``0..k``;
a sample leaves at the first edge exit whose rule lets it go (the rule decides exactly as
:func:`~exitwise.routing.route` does, compacting the batch after each exit); every sample still
running after exit ``k`` is offloaded, all of them in ONE Open Inference Protocol request with a
binary tensor (``cloud_k{k}``, served by :func:`~exitwise.serving.server.build_app`), and the
answers are merged back in input order.

Fallback: when the cloud cannot answer (connection refused, connect or read timeout, an HTTP
error, a malformed response), every offloaded sample is answered by its most confident edge
exit, confidence being the rule's own score at that exit (for the committee, the committee's top
probability there); on a tie the deeper exit wins. Its ``where`` is ``"fallback"`` and the
result carries the reason. Nothing is lost and nothing raises. We take the most confident exit
rather than the last one because each edge exit the sample passed through already failed the
rule's threshold; the rule's score is the only evidence of which one is likelier right, and the
deeper exit wins ties since it is usually the more accurate.

Retries: at most ``retries`` more attempts after the first, with jittered exponential backoff,
and only for a failed connection (connect error or connect timeout) or a 503 / 504 answer. A 4xx is
never retried, nor a read timeout (the cloud may still be computing; waiting again would only
make the answer later than the fallback).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import torch
from torch import Tensor

from exitwise.nets.multi_exit import MultiExitNet
from exitwise.outputs import ExitOutput
from exitwise.policies import ExitPolicy
from exitwise.routing import route_until
from exitwise.serving.protocol import HEADER_LENGTH, ProtocolError, decode_response, encode_request
from exitwise.serving.server import IMAGE_MODEL, cloud_model_name

__all__ = ["EdgeRuntime", "CloudOnly", "EdgeResult", "EDGE", "CLOUD", "FALLBACK"]

log = logging.getLogger(__name__)

#: Where a sample was decided.
EDGE, CLOUD, FALLBACK = "edge", "cloud", "fallback"

_RETRY_STATUS = (503, 504)
_FEATURE_DTYPES = {"FP32": torch.float32, "FP16": torch.float16}


@dataclass(frozen=True)
class EdgeResult:
    """What :meth:`EdgeRuntime.classify` answers for a batch of ``N`` images, in input order.

    Attributes:
        prediction: ``(N,)`` int64 predicted class.
        confidence: ``(N,)`` float32, the rule's confidence at the exit taken (the cloud's
            max-probability for samples the cloud decided).
        exit_idx: ``(N,)`` int64 global exit index (``0..k`` on the edge, ``k+1..`` in the
            cloud; a fallback sample carries the edge exit that answered it).
        where: per image, ``"edge"``, ``"cloud"`` or ``"fallback"``.
        fallback_reason: why the cloud's answer was not used (``None`` when it was, or when
            nothing was offloaded).
        edge_ms: edge compute (stages, exits and rule).
        encode_ms: encoding the request and decoding the response.
        network_ms: from sending the request to receiving the whole response (network, the
            cloud's queue and compute, retries and their backoff).
        total_ms: the whole call.
        payload_bytes: bytes of the request's body (JSON header + raw tensor bytes; 0 when
            nothing was offloaded), sent once per attempt.
        header_bytes: of which the JSON header.
        attempts: HTTP attempts made (0 when nothing was offloaded).
    """

    prediction: Tensor
    confidence: Tensor
    exit_idx: Tensor
    where: tuple[str, ...]
    fallback_reason: str | None
    edge_ms: float
    encode_ms: float
    network_ms: float
    total_ms: float
    payload_bytes: int
    header_bytes: int
    attempts: int

    def __len__(self) -> int:
        return len(self.where)

    @property
    def offloaded(self) -> int:
        """Samples sent to the cloud (answered by it or by the fallback)."""
        return sum(w != EDGE for w in self.where)

    @property
    def fallback_count(self) -> int:
        return sum(w == FALLBACK for w in self.where)

    @property
    def edge_share(self) -> float:
        """Fraction of the samples that left at an edge exit."""
        return sum(w == EDGE for w in self.where) / max(len(self), 1)

    def accuracy(self, labels: Tensor) -> float:
        if labels.shape != self.prediction.shape:
            raise ValueError(
                f"labels must have shape {tuple(self.prediction.shape)}, got {tuple(labels.shape)}"
            )
        return float((self.prediction == labels.cpu()).double().mean())


class _CloudFailed(Exception):
    """The cloud gave no usable answer; the message is the fallback's reason."""

    def __init__(self, reason: str, attempts: int = 0, network_ms: float = 0.0) -> None:
        super().__init__(" ".join(reason.split()))
        self.attempts, self.network_ms = attempts, network_ms


class EdgeRuntime:
    """Early exit on the edge, one offloading request per batch, fallback when the cloud fails.

    Args:
        model: the whole network; the runtime uses its stages and exits ``0..k`` (shared, on the
            model's device and in its dtype) and never changes its mode for good (it runs in
            eval mode and restores the previous mode).
        k: the split point, a side exit in ``0..num_exits - 2``.
        policy: the exit rule at the edge's exits (any :class:`~exitwise.policies.ExitPolicy`,
            e.g. ``MaxProbability(0.9)`` or a ``Committee``), decided as ``route`` does.
        base_url: the cloud server, e.g. ``http://127.0.0.1:8000``.
        token: sent as ``Authorization: Bearer <token>`` if given.
        features: ``"FP32"`` or ``"FP16"``, the datatype of the offloaded tensor.
        connect_timeout_s: how long to wait for a connection.
        read_timeout_s: how long to wait for the answer (and each write).
        retries: further attempts after a failed connection or a 503 / 504.
        backoff_s: mean wait before the first retry; doubled before each next one up to
            ``max_backoff_s``, each wait drawn uniformly from half to one and a half of it
            (jitter, so that clients refused together do not all come back together).
        max_backoff_s: the cap of the mean wait (a client refused many times keeps asking at
            this pace instead of sleeping ever longer while the cloud may be free).
        seed: seeds the jitter (``None``: from the OS).
    """

    def __init__(
        self,
        model: MultiExitNet,
        k: int,
        policy: ExitPolicy,
        base_url: str,
        token: str | None = None,
        features: str = "FP32",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        seed: int | None = None,
    ) -> None:
        if not isinstance(policy, ExitPolicy):
            raise TypeError(
                f"policy must be an ExitPolicy such as MaxProbability(0.9), got "
                f"{type(policy).__name__}"
            )
        policy.check_exits(model.num_exits)
        model.split(k)  # refuses a k that is not a side exit, naming the range
        if features not in _FEATURE_DTYPES:
            raise ValueError(f"features must be one of {sorted(_FEATURE_DTYPES)}, got {features!r}")
        self.model, self.k, self.policy = model, k, policy
        self.features = features
        self.model_name = cloud_model_name(k)
        self._retry(retries, backoff_s, max_backoff_s, seed)
        self._connect(base_url, token, connect_timeout_s, read_timeout_s)

    def _connect(
        self, base_url: str, token: str | None, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        """The keep-alive client (checked)."""
        self.client = _http_client(base_url, token, connect_timeout_s, read_timeout_s)

    def _retry(
        self, retries: int, backoff_s: float, max_backoff_s: float, seed: int | None
    ) -> None:
        """The retry policy (checked): capped exponential backoff with jitter."""
        if retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(
                f"retries, backoff_s and max_backoff_s must be >= 0, got {retries}, {backoff_s} "
                f"and {max_backoff_s}"
            )
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self._jitter = random.Random(seed)

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the HTTP client (its kept-alive connections)."""
        self.client.close()

    def __enter__(self) -> EdgeRuntime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EdgeRuntime(k={self.k}, policy={self.policy!r}, cloud={self.client.base_url}, "
            f"features={self.features})"
        )

    # ---------------------------------------------------------------------------- inference

    def _as_batch(self, images: Tensor) -> Tensor:
        p = next(self.model.parameters())
        if isinstance(images, Tensor) and images.dtype == torch.uint8:
            return images.to(p.device).to(p.dtype) / 255
        return images

    @torch.no_grad()
    def _edge(self, x: Tensor):
        """Run exits ``0..k`` with per-sample early exit (:func:`~exitwise.routing.route_until`,
        as :func:`~exitwise.routing.route` does).

        Returns the edge decisions ``(rows, exit, prediction, confidence)`` of the samples that
        left, and for the rest: their rows, the tensor after stage ``k``, and the outputs of
        their edge exits (what the fallback reads, if it is needed).
        """
        run = route_until(self.model, x, self.policy, self.k)
        every = torch.arange(x.shape[0], device=x.device)
        rows = run.rows if run.rows is not None else every
        parts = [(r if r is not None else every, i, p, c) for r, i, p, c in run.parts]
        return parts, rows, run.h, run.history

    @torch.no_grad()
    def _fallback(self, history: list[ExitOutput]) -> tuple[Tensor, Tensor, Tensor]:
        """Each offloaded sample's most confident edge exit (ties: the deeper): prediction,
        confidence and exit, from the outputs of its edge exits (only when the cloud failed)."""
        decs = [self.policy.decide(i, history[: i + 1]) for i in range(len(history))]
        conf = torch.stack([d.confidence for d in decs])  # (k + 1, offloaded)
        best = len(decs) - 1 - conf.flip(0).argmax(0)
        pick = best.unsqueeze(0)
        pred = torch.stack([d.prediction for d in decs]).gather(0, pick)[0]
        return pred, conf.gather(0, pick)[0], best

    def classify(self, images: Tensor) -> EdgeResult:
        """Classify a batch: early exit on the edge, the rest in one request to the cloud.

        Args:
            images: ``(N, C, H, W)``, float in [0, 1] in the model's dtype, or uint8 pixels
                (divided by 255).

        Returns:
            Per image prediction, confidence, global exit and where it was decided, in input
            order, with the timings and the request's size. A cloud failure never raises: the
            offloaded images get the fallback (see the module's docstring).
        """
        t0 = time.perf_counter()
        x = self._as_batch(images)
        parts, rows, h, history = self._edge(x)
        n = x.shape[0]
        t_edge = time.perf_counter()

        pred = torch.empty(n, dtype=torch.int64)
        conf = torch.empty(n, dtype=torch.float32)
        exit_idx = torch.empty(n, dtype=torch.int64)
        where = [EDGE] * n
        for r, i, p, c in parts:
            r = r.cpu()
            pred[r], conf[r], exit_idx[r] = p.cpu(), c.float().cpu(), i

        reason, encode_ms, network_ms, payload, header, attempts = None, 0.0, 0.0, 0, 0, 0
        if len(rows):
            r = rows.cpu()
            t1 = time.perf_counter()
            feats = h.to(_FEATURE_DTYPES[self.features])
            body, headers = encode_request({"features": feats})
            payload, header = len(body), int(headers[HEADER_LENGTH])
            encode_ms = (time.perf_counter() - t1) * 1e3
            try:
                response, attempts, network_ms = self._post(body, headers)
                t2 = time.perf_counter()
                out = self._read(response, len(r))
                encode_ms += (time.perf_counter() - t2) * 1e3
                pred[r], conf[r], exit_idx[r] = out
                for j in r.tolist():
                    where[j] = CLOUD
            except _CloudFailed as e:
                reason = str(e)
                log.warning(
                    "cloud %s failed, %d image(s) answered on the edge: %s",
                    self.model_name,
                    len(r),
                    reason,
                )
                fb_pred, fb_conf, fb_exit = self._fallback(history)
                pred[r], conf[r], exit_idx[r] = fb_pred.cpu(), fb_conf.float().cpu(), fb_exit.cpu()
                for j in r.tolist():
                    where[j] = FALLBACK
                if not attempts:  # failed before a response arrived
                    attempts, network_ms = e.attempts, e.network_ms

        return EdgeResult(
            prediction=pred,
            confidence=conf,
            exit_idx=exit_idx,
            where=tuple(where),
            fallback_reason=reason,
            edge_ms=(t_edge - t0) * 1e3,
            encode_ms=encode_ms,
            network_ms=network_ms,
            total_ms=(time.perf_counter() - t0) * 1e3,
            payload_bytes=payload,
            header_bytes=header,
            attempts=attempts,
        )

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, int, float]:
        """POST with bounded retries; the 200 response, the attempts made and the time spent."""
        url = f"/v2/models/{self.model_name}/infer"
        t0, attempt = time.perf_counter(), 0
        while True:
            attempt += 1
            retry: str
            try:
                response = self.client.post(url, content=body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                retry = f"cannot connect to {self.client.base_url} ({type(e).__name__}: {e})"
            except httpx.TimeoutException as e:
                raise self._failed(f"no answer in time ({type(e).__name__})", attempt, t0) from None
            except httpx.HTTPError as e:
                raise self._failed(f"{type(e).__name__}: {e}", attempt, t0) from None
            else:
                if response.status_code == 200:
                    return response, attempt, (time.perf_counter() - t0) * 1e3
                retry = f"HTTP {response.status_code}: {_error_text(response)}"
                if response.status_code not in _RETRY_STATUS:
                    raise self._failed(retry, attempt, t0)
            if attempt > self.retries:
                raise self._failed(f"{retry} (after {attempt} attempts)", attempt, t0)
            mean = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            time.sleep(mean * self._jitter.uniform(0.5, 1.5))

    @staticmethod
    def _failed(reason: str, attempts: int, t0: float) -> _CloudFailed:
        return _CloudFailed(reason, attempts, (time.perf_counter() - t0) * 1e3)

    def _read(self, response: httpx.Response, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """The cloud's prediction, confidence and exit for ``m`` samples, checked."""
        try:
            out = decode_response(response.content, response.headers.get(HEADER_LENGTH))
        except ProtocolError as e:
            raise _CloudFailed(f"malformed response: {e.message}") from None
        except (ValueError, TypeError, RuntimeError) as e:  # e.g. JSON "data" that is no tensor
            raise _CloudFailed(f"malformed response: {type(e).__name__}: {e}") from None
        got: list[Tensor] = []
        for name, dtype in (
            ("prediction", torch.int64),
            ("confidence", None),
            ("exit_idx", torch.int64),
        ):
            t = out.get(name)
            if t is None or tuple(t.shape) != (m,) or (dtype is not None and t.dtype != dtype):
                shape = None if t is None else (tuple(t.shape), t.dtype)
                raise _CloudFailed(
                    f"malformed response: expected {name} of shape ({m},), got {shape}"
                )
            got.append(t)
        pred, conf, exit_idx = got
        lo, hi = self.k + 1, self.model.num_exits - 1
        if m and not (int(exit_idx.min()) >= lo and int(exit_idx.max()) <= hi):
            raise _CloudFailed(f"malformed response: exit_idx outside {lo}..{hi}")
        if m and not (int(pred.min()) >= 0 and int(pred.max()) < self.model.num_classes):
            raise _CloudFailed(
                f"malformed response: prediction outside 0..{self.model.num_classes - 1}"
            )
        return pred, conf.float(), exit_idx


def _http_client(
    base_url: str, token: str | None, connect_timeout_s: float, read_timeout_s: float
) -> httpx.Client:
    """A keep-alive client for the cloud, checked: URL scheme, token, timeouts."""
    for name, value in (
        ("connect_timeout_s", connect_timeout_s),
        ("read_timeout_s", read_timeout_s),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
    )


def _error_text(response: httpx.Response) -> str:
    """The protocol's ``{"error": ...}`` message, else the start of the body."""
    try:
        data = response.json()
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return response.text[:200]


def run_batches(runtime: EdgeRuntime, images: Tensor, batch_size: int) -> Sequence[EdgeResult]:
    """``runtime.classify`` over ``images`` in consecutive batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [runtime.classify(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]


class CloudOnly(EdgeRuntime):
    """Seed 002's baseline: the edge computes nothing and sends the raw uint8 image to the cloud
    (``cloud_image``), which runs the whole network. Same client, timeouts and bounded retries
    as :class:`EdgeRuntime`; every image is ``where="cloud"``. There is no edge exit to fall
    back on: when the cloud fails, each image is answered ``prediction=-1`` (no answer),
    confidence 0, ``exit_idx=-1``, flagged ``"fallback"`` with the reason; nothing raises.

    Args:
        model: the network (only its input shape and classes are read, to check the answers).
        base_url, token, connect_timeout_s, read_timeout_s, retries, backoff_s, max_backoff_s,
            seed: as for :class:`EdgeRuntime`.
    """

    def __init__(
        self,
        model: MultiExitNet,
        base_url: str,
        token: str | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        seed: int | None = None,
    ) -> None:
        self.model, self.k, self.features = model, -1, "UINT8"
        self.model_name = IMAGE_MODEL
        self._retry(retries, backoff_s, max_backoff_s, seed)
        self._connect(base_url, token, connect_timeout_s, read_timeout_s)

    def __repr__(self) -> str:
        return f"CloudOnly(cloud={self.client.base_url})"

    def classify(self, images: Tensor) -> EdgeResult:
        """Send uint8 ``(N, C, H, W)`` images in one request; the cloud's answers in order."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(
                f"the cloud-only baseline sends uint8 images (N, C, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        t0 = time.perf_counter()
        n = images.shape[0]
        body, headers = encode_request({"image": images.cpu().contiguous()})
        encode_ms = (time.perf_counter() - t0) * 1e3
        reason, where, network_ms, attempts = None, CLOUD, 0.0, 0
        try:
            response, attempts, network_ms = self._post(body, headers)
            t2 = time.perf_counter()
            pred, conf, exit_idx = self._read(response, n)
            encode_ms += (time.perf_counter() - t2) * 1e3
        except _CloudFailed as e:
            reason, where = str(e), FALLBACK
            log.warning("cloud %s failed, %d image(s) unanswered: %s", self.model_name, n, reason)
            pred = torch.full((n,), -1, dtype=torch.int64)
            conf, exit_idx = torch.zeros(n), torch.full((n,), -1, dtype=torch.int64)
            attempts, network_ms = attempts or e.attempts, network_ms or e.network_ms
        return EdgeResult(
            prediction=pred,
            confidence=conf,
            exit_idx=exit_idx,
            where=(where,) * n,
            fallback_reason=reason,
            edge_ms=0.0,
            encode_ms=encode_ms,
            network_ms=network_ms,
            total_ms=(time.perf_counter() - t0) * 1e3,
            payload_bytes=len(body),
            header_bytes=int(headers[HEADER_LENGTH]),
            attempts=attempts,
        )

"""Dynamic batching: concurrent requests to one model gathered into one model run.

A :class:`Batcher` queues the requests that arrive on the event loop, first in first out. The
batch at the head of the queue (the first requests whose samples fit in ``max_batch``) is ready
when it is full, when the next request would not fit, or ``max_delay_s`` after its first request
arrived; a ready batch goes to the worker pool as soon as fewer than ``max_runs`` of this model's
runs are in progress. So while the model computes, requests pile up into the next batch, as in
Triton's dynamic batcher with one model instance (``max_batch_size``,
``max_queue_delay_microseconds``). The batch is the requests' tensors concatenated along dim 0;
the outputs are split back by rows, so every request gets exactly its own. A request larger than
``max_batch`` runs alone, never split. With ``max_batch=1`` every request is a full batch, ready
at once: the server's unbatched mode is this same path, with ``max_runs`` requests computed at
once.

Samples of a batch can differ from a lone run in the last bits of a float, since a convolution
may pick another algorithm for another batch size.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import reduce

import torch
from torch import Tensor

__all__ = ["Batcher"]

logger = logging.getLogger(__name__)

Outputs = dict[str, Tensor]


class Batcher:
    """Gathers the requests to one model into batches, on the event loop's thread.

    Args:
        run: the model: a batch in, per-sample outputs (dim 0) by name out; called in ``pool``
            under ``torch.no_grad()``.
        pool: the worker threads.
        max_batch: samples in one run at most (a larger request runs alone); 1 turns batching off.
        max_delay_s: how long the first request of a batch waits for more.
        max_runs: runs of this model in progress at once.

    Attributes:
        runs: model runs so far.
        requests: requests answered by them.
        samples: samples in them.
    """

    def __init__(
        self,
        run: Callable[[Tensor], Outputs],
        pool: Executor,
        max_batch: int = 1,
        max_delay_s: float = 0.0,
        max_runs: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not max_delay_s >= 0:
            raise ValueError(f"max_delay_s must be >= 0, got {max_delay_s}")
        if max_runs < 1:
            raise ValueError(f"max_runs must be >= 1, got {max_runs}")
        self.run, self.pool = run, pool
        self.max_batch, self.max_delay_s, self.max_runs = max_batch, max_delay_s, max_runs
        self.runs = self.requests = self.samples = 0
        self._queue: deque[_Queued] = deque()
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, x: Tensor) -> asyncio.Future[Outputs]:
        """Queue ``x`` (a batch along dim 0); the future holds its own rows of the outputs.

        Must be called on the event loop's thread. The future is never cancelled by the batcher:
        a caller that stops waiting leaves the run to finish.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._queue.append(_Queued(x, future, loop.time()))
        self._dispatch()
        return future

    def _head(self) -> tuple[int, bool]:
        """How many queued requests the head batch takes, and whether it is ready."""
        rows = count = 0
        for q in self._queue:
            if count and rows + len(q.x) > self.max_batch:
                return count, True  # the next request does not fit: as full as it gets
            rows += len(q.x)
            count += 1
        waited = asyncio.get_running_loop().time() - self._queue[0].arrived
        # (a timer may fire a clock tick early)
        return count, rows >= self.max_batch or waited >= self.max_delay_s - 1e-6

    def _dispatch(self) -> None:
        """Send every ready batch to the pool that a free run allows; time the next one."""
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.max_runs:
            count, ready = self._head()
            if not ready:
                if self._timer is None:
                    due = self._queue[0].arrived + self.max_delay_s
                    self._timer = loop.call_at(due, self._on_timer)
                return
            items = [self._queue.popleft() for _ in range(count)]
            self._running += 1
            job = self.pool.submit(self._run_batch, [q.x for q in items])

            def done(job: Future[Outputs], items: list[_Queued] = items) -> None:  # worker thread
                try:
                    loop.call_soon_threadsafe(self._deliver, job, items)
                except RuntimeError:  # the loop has closed: nobody waits for these answers
                    pass

            job.add_done_callback(done)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _run_batch(self, xs: list[Tensor]) -> Outputs:
        """The model over the requests' rows, in a worker thread."""
        if len(xs) == 1:
            x = xs[0]
        else:  # e.g. FP16 and FP32 features: the wider type, exactly
            dtype = reduce(torch.promote_types, (t.dtype for t in xs))
            x = torch.cat([t.to(dtype) for t in xs])
        with torch.no_grad():
            out = {k: v.cpu() for k, v in self.run(x).items()}
        logger.debug("ran %d request(s), %d sample(s), in one batch", len(xs), len(x))
        return out

    def _deliver(self, job: Future[Outputs], items: list[_Queued]) -> None:
        """Split the batch's outputs back to its requests, on the event loop's thread."""
        self._running -= 1
        try:
            error = (
                RuntimeError("the model run was cancelled") if job.cancelled() else job.exception()
            )
            if error is not None:
                for q in items:
                    if not q.future.done():
                        q.future.set_exception(error)
                return
            sizes = [len(q.x) for q in items]
            parts = {name: t.split(sizes) for name, t in job.result().items()}
            self.runs += 1
            self.requests += len(items)
            self.samples += sum(sizes)
            for i, q in enumerate(items):
                if not q.future.done():
                    q.future.set_result({name: p[i] for name, p in parts.items()})
        finally:
            self._dispatch()


@dataclass
class _Queued:
    x: Tensor
    future: asyncio.Future[Outputs]
    arrived: float

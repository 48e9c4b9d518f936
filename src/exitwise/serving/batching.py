"""Dynamic batching: concurrent requests to one model gathered into one model run.

A :class:`Batcher` queues the requests that arrive on the event loop, and hands a batch to the
worker pool when the queued samples reach ``max_batch`` or ``max_delay_s`` after the first of
them was queued, whichever comes first. The batch is the requests' tensors concatenated along
dim 0; the outputs are split back by rows, so every request gets exactly its own. A request
larger than ``max_batch`` runs alone, never split. With ``max_batch=1`` every request runs alone
at once: the server's unbatched mode is this same path.

Triton's dynamic batcher (``max_batch_size``, ``max_queue_delay_microseconds``) works the same
way; as there, samples of a batch can differ from a lone run in the last bits of a float, since
a convolution may pick another algorithm for another batch size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future
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
        max_delay_s: how long the first queued request waits for others.

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
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not max_delay_s >= 0:
            raise ValueError(f"max_delay_s must be >= 0, got {max_delay_s}")
        self.run, self.pool = run, pool
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.runs = self.requests = self.samples = 0
        self._pending: list[tuple[Tensor, asyncio.Future[Outputs]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, x: Tensor) -> asyncio.Future[Outputs]:
        """Queue ``x`` (a batch along dim 0); the future holds its own rows of the outputs.

        Must be called on the event loop's thread. The future is never cancelled by the batcher:
        a caller that stops waiting leaves the run to finish.
        """
        loop = asyncio.get_running_loop()
        if self._pending and self._rows + len(x) > self.max_batch:
            self._flush()  # x would overflow the queued batch: send that one first
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append((x, future))
        self._rows += len(x)
        if self._rows >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s, self._flush)
        return future

    def _flush(self) -> None:
        """Hand the queued requests to the pool as one batch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._pending, self._rows = self._pending, [], 0
        if not items:
            return
        loop = asyncio.get_running_loop()
        job = self.pool.submit(self._run_batch, [x for x, _ in items])

        def done(job: Future[Outputs]) -> None:  # in the worker thread
            try:
                loop.call_soon_threadsafe(self._deliver, job, items)
            except RuntimeError:  # the loop has closed: nobody waits for these answers
                pass

        job.add_done_callback(done)

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

    def _deliver(
        self, job: Future[Outputs], items: list[tuple[Tensor, asyncio.Future[Outputs]]]
    ) -> None:
        """Split the batch's outputs back to its requests, on the event loop's thread."""
        futures = [f for _, f in items]
        error = RuntimeError("the model run was cancelled") if job.cancelled() else job.exception()
        if error is not None:
            for f in futures:
                if not f.done():
                    f.set_exception(error)
            return
        sizes = [len(x) for x, _ in items]
        out = job.result()
        parts = {name: t.split(sizes) for name, t in out.items()}
        self.runs += 1
        self.requests += len(items)
        self.samples += sum(sizes)
        for i, f in enumerate(futures):
            if not f.done():
                f.set_result({name: p[i] for name, p in parts.items()})

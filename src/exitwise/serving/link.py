"""An emulated edge-cloud network link (floor 4): namespaces, ``tc tbf``, and a delaying relay.

Seed 002 measured its link first (RTT 11.91 +/- 0.66 ms, 93.9 +/- 3.8 Mbit/s) and reported
latencies over it. This module reproduces such a link on one Linux machine:

* :class:`LinkSpec` says what the link should be; its defaults are seed 002's link.
* :class:`EmulatedLink` builds it. ``mode="netns"`` puts the edge and the cloud in two network
  namespaces joined by a veth pair whose two ends are shaped by ``tc tbf`` (the rate). Kernels
  without ``netem`` (this one) cannot delay packets in ``tc``, so the delay and its jitter come
  from a :class:`Relay` in the cloud namespace, in front of the cloud server: a TCP relay that
  holds every chunk for the one-way delay in each direction. Where the kernel has ``netem``, it
  delays, jitters and shapes both ends instead and the relay only forwards. ``mode="loopback"``
  (no root needed) is the relay alone on 127.0.0.1, pacing the rate itself.
* :func:`measure_link` measures what was actually achieved through the whole path: iperf3
  throughput and empty HTTP round trips through the relay, and the raw RTT of the path without
  the relay for reference. Every study reports its :class:`LinkMeasurement`.

The relay never reorders bytes: a chunk is delivered at ``max(previous chunk's delivery,
arrival + delay)``. The delay of each direction is ``rtt/2`` plus Gaussian jitter of standard
deviation ``jitter/sqrt(2)`` (so that the RTT's standard deviation is ``jitter``), clipped at 0,
drawn from a :class:`random.Random` seeded per connection and direction. It also emulates the TCP
handshake: a relayed connection is accepted at once on the local side, so nothing crosses it
before one RTT has passed (as a real SYN / SYN-ACK would take), and a refused upstream connect
is answered with a reset after that RTT.

This file imports nothing but the standard library, so that it runs as a light process by path
(``python .../link.py relay ...``) without importing the package (whose ``__init__`` loads
torch). ``python -m exitwise.serving.link relay ...`` works too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "LinkSpec",
    "LinkUnavailable",
    "Relay",
    "RelayStats",
    "EmulatedLink",
    "LinkMeasurement",
    "measure_link",
    "measure_http_rtt",
    "netns_available",
    "netem_available",
    "cleanup_stale",
    "pin",
    "main",
]

log = logging.getLogger(__name__)

#: Namespace name prefix; stale namespaces ``xw-edge-<pid>[-n]`` of dead pids are removed.
NS_PREFIX = "xw"
#: The health path an OIP server answers, used for the empty HTTP round trips.
HEALTH_PATH = "/v2/health/live"

_CLONE_NEWNET = 0x40000000
_CHUNK = 65536
#: Wire bytes per TCP payload byte on a 1500-byte MTU with timestamps: (1448 + 32 + 20 + 14) / 1448.
_WIRE_PER_PAYLOAD = 1514 / 1448
_MAX_LEAD = 0.001  # the most a hold may wake up early, s
_LEAD_STEP = 20e-6  # how the lead learns, s per chunk
_UNPACED_BUFFER = 4 << 20  # bytes a relay direction holds at most when it does not pace


class LinkUnavailable(RuntimeError):
    """The emulated link cannot be built here (namespaces not permitted, tools missing...)."""


# --------------------------------------------------------------------------------------------
# The specification


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"LinkSpec.{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        want = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"LinkSpec.{name}: expected {want}, got {value!r}")
    return v


@dataclass(frozen=True)
class LinkSpec:
    """The link to emulate. Defaults: seed 002's measured link.

    Attributes:
        rate_mbit: TCP goodput in each direction, Mbit/s (10^6 bits per second), as iperf3
            measures it (seed 002 measured its link so). ``tc`` shapes the wire rate,
            :attr:`wire_rate_mbit`, which adds 66 bytes of headers to 1448 of payload; the
            relay paces payload bytes at ``rate_mbit`` itself.
        rtt_ms: mean round-trip time added by the link, ms.
        jitter_ms: standard deviation of the RTT, ms (each direction gets ``jitter/sqrt(2)``).
        burst_kb: token-bucket depth, KiB (``tc tbf burst``; the relay's pacing burst). It must
            hold at least ``rate / HZ`` of bytes for tbf to reach the rate; 64 KiB also holds a
            full 64 KiB GSO segment of the veth.
        queue_ms: how long a packet may wait in the shaper's queue, ms (``tc tbf latency``; the
            relay's pacing backlog). Bounds the bufferbloat under a saturating transfer.
    """

    rate_mbit: float = 93.9
    rtt_ms: float = 11.91
    jitter_ms: float = 0.66
    burst_kb: float = 64.0
    queue_ms: float = 25.0

    def __post_init__(self) -> None:
        for f in fields(self):
            positive = f.name in ("rate_mbit", "burst_kb", "queue_ms")
            object.__setattr__(
                self, f.name, _check_number(f.name, getattr(self, f.name), positive=positive)
            )

    @property
    def wire_rate_mbit(self) -> float:
        """The rate ``tc`` is given: ``rate_mbit`` plus the Ethernet, IP and TCP headers."""
        return self.rate_mbit * _WIRE_PER_PAYLOAD

    @property
    def one_way_s(self) -> float:
        """Mean one-way delay, seconds."""
        return self.rtt_ms / 2000.0

    @property
    def one_way_std_s(self) -> float:
        """Standard deviation of the one-way delay, seconds."""
        return self.jitter_ms / 1000.0 / math.sqrt(2.0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> LinkSpec:
        if not isinstance(data, dict):
            raise ValueError(f"LinkSpec: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"LinkSpec: expected keys among {sorted(known)}, got {unknown}")
        return cls(**data)


# --------------------------------------------------------------------------------------------
# The delaying relay


@dataclass
class RelayStats:
    """Counters of a relay (read them after the traffic, they are not locked)."""

    connections: int = 0
    failed_connects: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client


class _Pacer:
    """A token bucket in virtual time (GCRA): when may ``n`` bytes leave, at ``rate``."""

    def __init__(self, rate_bps: float, burst_bytes: float) -> None:
        self.byte_s = 8.0 / rate_bps
        self.tau = burst_bytes * self.byte_s
        self.tat = -math.inf

    def departure(self, now: float, n: int) -> float:
        self.tat = max(self.tat, now) + n * self.byte_s
        return max(now, self.tat - self.tau)


class _Direction:
    """One direction of one relayed connection: read, stamp, hold, write in order."""

    def __init__(
        self,
        core: _RelayCore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
        pacer: _Pacer | None,
        floor: float,
        counter: str,
    ) -> None:
        self.core = core
        self.reader = reader
        self.writer = writer
        self.rng = rng
        self.pacer = pacer
        self.floor = floor  # nothing leaves before (the emulated handshake)
        self.last = floor  # delivery time of the previous chunk
        self.counter = counter
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.held = 0
        self.room = asyncio.Event()
        self.room.set()

    async def run(self) -> None:
        """Until the EOF has been passed on; raises if either end breaks."""
        tasks = {asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._send())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        piece = max(1500, int(core.burst_bytes)) if self.pacer else _CHUNK
        while True:
            await self.room.wait()
            data = await self.reader.read(_CHUNK)
            now = max(loop.time(), self.floor)
            if not data:
                self.last = max(self.last, now + core.delay(self.rng))
                await self.queue.put((self.last, None))
                return
            for i in range(0, len(data), piece):
                part = data[i : i + piece]
                leave = self.pacer.departure(now, len(part)) if self.pacer else now
                self.last = max(self.last, leave + core.delay(self.rng))
                self.held += len(part)
                self.queue.put_nowait((self.last, part))
            if self.held >= core.buffer_bytes:
                self.room.clear()

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when, data = await self.queue.get()
            wait = when - loop.time()
            if wait > 0:
                # Wake up ``lead`` early: the relay's own timer and wake-up overshoot, learnt.
                await asyncio.sleep(max(0.0, wait - self.core.lead))
                self.core.learn(loop.time() - when)
            if data is None:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            self.writer.write(data)
            await self.writer.drain()
            self.held -= len(data)
            setattr(
                self.core.stats, self.counter, getattr(self.core.stats, self.counter) + len(data)
            )
            if self.held < self.core.buffer_bytes:
                self.room.set()


def _precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop on ``select()``, whose timeout has microsecond resolution.

    The default epoll selector rounds every timeout up to the next millisecond, which would add
    0.5 ms on average to each held chunk (1 ms to an RTT). A relay has few sockets.
    """
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a refused or broken connection would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _RelayCore:
    """The asyncio part of :class:`Relay` (also what the relay process runs)."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        rtt_ms: float,
        jitter_ms: float,
        rate_mbit: float | None,
        burst_kb: float,
        queue_ms: float,
        seed: int,
        handshake: bool,
        connect_timeout_s: float,
    ) -> None:
        self.listen = listen
        self.target = target
        self.mean_s = rtt_ms / 2000.0
        self.std_s = jitter_ms / 1000.0 / math.sqrt(2.0)
        self.rate_bps = rate_mbit * 1e6 if rate_mbit else None
        self.burst_bytes = burst_kb * 1024.0
        self.seed = seed
        self.handshake = handshake
        self.connect_timeout_s = connect_timeout_s
        if self.rate_bps:
            bdp = self.rate_bps / 8.0 * (2 * self.mean_s + 4 * self.std_s + queue_ms / 1000.0)
            self.buffer_bytes = max(65536, int(bdp + self.burst_bytes))
            self.pacers: tuple[_Pacer | None, _Pacer | None] = (
                _Pacer(self.rate_bps, self.burst_bytes),
                _Pacer(self.rate_bps, self.burst_bytes),
            )
        else:
            self.buffer_bytes = _UNPACED_BUFFER
            self.pacers = (None, None)
        self.stats = RelayStats()
        self.lead = 0.0  # seconds a hold wakes up early, to absorb the timer's overshoot
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids = itertools.count()

    def learn(self, late: float) -> None:
        """Adjust the timer lead by how late (negative: early) a chunk was written.

        A sign step (a running median): a wake-up delayed by a busy CPU moves it no more than
        a punctual one, so the lead tracks the typical overshoot, not the outliers.
        """
        step = _LEAD_STEP if late > 0 else -_LEAD_STEP
        self.lead = min(_MAX_LEAD, max(0.0, self.lead + step))

    def delay(self, rng: random.Random) -> float:
        if self.std_s == 0:
            return self.mean_s
        return max(0.0, rng.gauss(self.mean_s, self.std_s))

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._accepted, self.listen[0], self.listen[1], reuse_address=True
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _accepted(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._relay(c_reader, c_writer)
        except asyncio.CancelledError:  # stop(): asyncio's stream callback must not see it
            c_writer.transport.abort()
        finally:
            self.tasks.discard(task)  # type: ignore[arg-type]

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        loop = asyncio.get_running_loop()
        conn = next(self.ids)
        up_rng = random.Random(f"{self.seed}:{conn}:up")
        down_rng = random.Random(f"{self.seed}:{conn}:down")
        floor = loop.time()
        if self.handshake:
            floor += self.delay(up_rng) + self.delay(down_rng)
        self.stats.connections += 1
        try:
            t_reader, t_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), self.connect_timeout_s
            )
        except (OSError, asyncio.TimeoutError) as e:
            self.stats.failed_connects += 1
            log.warning(
                "relay %s:%d: expected the target %s:%d to accept, got %s; resetting the client",
                *self.address,
                *self.target,
                e or type(e).__name__,
            )
            await asyncio.sleep(max(0.0, floor - loop.time()))
            _reset(c_writer)
            return
        up = _Direction(self, c_reader, t_writer, up_rng, self.pacers[0], floor, "bytes_up")
        down = _Direction(self, t_reader, c_writer, down_rng, self.pacers[1], floor, "bytes_down")
        tasks = [asyncio.ensure_future(up.run()), asyncio.ensure_future(down.run())]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            broken = [t.exception() for t in done if not t.cancelled() and t.exception()]
            if broken:
                log.debug("relay connection %d broken: %s", conn, broken[0])
                _reset(c_writer)
                _reset(t_writer)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (c_writer, t_writer):
                w.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await w.wait_closed()


class Relay:
    """A delaying (and optionally rate-pacing) TCP relay, in a background thread.

    Every connection accepted on ``listen`` is forwarded to ``target``; see the module's
    docstring for the delay model. ``rate_mbit`` (None: unpaced) paces each direction with a
    token bucket of ``burst_kb`` KiB shared by all the relay's connections, as one link would.

    Use as a context manager, or ``start()`` / ``stop()``; ``address`` is the bound
    ``(host, port)`` (``listen`` may ask for port 0).
    """

    def __init__(
        self,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        rtt_ms: float = 0.0,
        jitter_ms: float = 0.0,
        rate_mbit: float | None = None,
        burst_kb: float = 64.0,
        queue_ms: float = 25.0,
        seed: int = 0,
        handshake: bool = True,
        connect_timeout_s: float = 5.0,
    ) -> None:
        LinkSpec(rate_mbit or 1.0, rtt_ms, jitter_ms, burst_kb, queue_ms)  # validates
        self.core = _RelayCore(
            listen,
            target,
            rtt_ms=rtt_ms,
            jitter_ms=jitter_ms,
            rate_mbit=rate_mbit,
            burst_kb=burst_kb,
            queue_ms=queue_ms,
            seed=seed,
            handshake=handshake,
            connect_timeout_s=connect_timeout_s,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    @classmethod
    def from_spec(
        cls,
        spec: LinkSpec,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        pace: bool = True,
        seed: int = 0,
    ) -> Relay:
        """The relay for ``spec``: its delay and jitter, and its rate if ``pace``."""
        return cls(
            target,
            listen,
            rtt_ms=spec.rtt_ms,
            jitter_ms=spec.jitter_ms,
            rate_mbit=spec.rate_mbit if pace else None,
            burst_kb=spec.burst_kb,
            queue_ms=spec.queue_ms,
            seed=seed,
        )

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("Relay.address: expected a started relay, got one not started")
        return self._address

    @property
    def stats(self) -> RelayStats:
        return self.core.stats

    def start(self) -> Relay:
        if self._thread is not None:
            raise RuntimeError("Relay.start: expected a relay not started, got a started one")
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = _precise_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.core.start())
                self._address = self.core.address
            except BaseException as e:  # reported to start()'s caller
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.core.stop())
                loop.close()

        self._thread = threading.Thread(target=serve, name="exitwise-relay", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Namespaces, cores, processes


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20) -> str:
    """Run a short administrative command; a one-line ``LinkUnavailable`` when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LinkUnavailable(f"`{' '.join(argv)}`: expected to run, got {e}") from e
    if check and done.returncode != 0:
        err = (done.stderr or done.stdout).strip().replace("\n", " | ")
        raise LinkUnavailable(f"`{' '.join(argv)}`: expected exit 0, got {done.returncode}: {err}")
    return done.stdout


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@contextlib.contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """Move the calling thread into network namespace ``name``; back on exit."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


_NETNS_PROBE: tuple[bool, str] | None = None


def netns_available() -> tuple[bool, str]:
    """Whether :class:`EmulatedLink` can use ``mode="netns"`` here, and if not, why.

    Probes once per process by adding and deleting a namespace.
    """
    global _NETNS_PROBE
    if _NETNS_PROBE is not None:
        return _NETNS_PROBE
    if not sys.platform.startswith("linux"):
        why = f"network namespaces need Linux, this is {sys.platform}"
    elif os.geteuid() != 0:
        why = (
            f"network namespaces need root (CAP_NET_ADMIN), this process runs as uid {os.geteuid()}"
        )
    elif shutil.which("ip") is None or shutil.which("tc") is None:
        why = "network namespaces need iproute2's `ip` and `tc`, not found on PATH"
    else:
        probe = f"{NS_PREFIX}-probe-{os.getpid()}"
        try:
            _run(["ip", "netns", "add", probe])
            _run(["ip", "netns", "del", probe])
            why = ""
        except LinkUnavailable as e:
            why = f"`ip netns add` is not permitted: {e}"
    _NETNS_PROBE = (not why, why)
    return _NETNS_PROBE


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_netns(name: str) -> None:
    """Kill what runs in namespace ``name`` and delete it (its veth end goes with it)."""
    pids = _run(["ip", "netns", "pids", name], check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run(["ip", "netns", "del", name], check=False)


def cleanup_stale(prefix: str = NS_PREFIX) -> list[str]:
    """Delete the namespaces ``<prefix>-(edge|cloud|probe)-<pid>[-n]`` whose pid is dead.

    They are what a crashed run leaves behind. Answers the names deleted.
    """
    gone = []
    pattern = re.compile(rf"^{re.escape(prefix)}-(edge|cloud|probe)-(\d+)(-\d+)?$")
    for name in _netns_list():
        m = pattern.match(name)
        if m and not _pid_alive(int(m.group(2))):
            _delete_netns(name)
            gone.append(name)
    if gone:
        log.info("removed stale namespaces %s", gone)
    return gone


def _cpu_list(cpus: Iterable[int]) -> set[int]:
    chosen = {int(c) for c in cpus}
    # the machine's cores (not this thread's current mask, so that a pinned thread can be
    # given its former mask back)
    allowed = set(range(os.cpu_count() or 1))
    if not chosen or not chosen <= allowed:
        raise ValueError(f"cpus: expected a non-empty subset of {sorted(allowed)}, got {chosen}")
    return chosen


def pin(cpus: Iterable[int], *, all_threads: bool = True) -> set[int]:
    """Pin this process (every thread of it, or only the calling one) to ``cpus``.

    Threads started afterwards inherit the mask of the thread that starts them. Answers the
    calling thread's previous mask, so that it can be restored.
    """
    chosen = _cpu_list(cpus)
    before = os.sched_getaffinity(0)
    tids = [threading.get_native_id()]
    if all_threads:
        with contextlib.suppress(OSError):
            tids = [int(t) for t in os.listdir("/proc/self/task")]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, chosen)
    return before


def _default_cpus() -> tuple[set[int], set[int]]:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        log.warning("only core %s: the edge and the cloud will share it", allowed)
        return {allowed[0]}, {allowed[0]}
    return {allowed[0]}, {allowed[1]}


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid``'s network namespace has a TCP socket listening on ``port``."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmulatedLink:
    """Seed 002's network between an edge and a cloud on this machine (a context manager).

    Args:
        spec: the link (default: seed 002's).
        mode: ``"netns"`` (two namespaces, a veth pair, ``tc tbf`` on both ends, the delay by a
            relay or by ``netem`` where the kernel has it), ``"loopback"`` (the relay alone on
            127.0.0.1, pacing the rate itself), or ``"auto"`` (netns when permitted).
        edge_cpus, cloud_cpus: the cores the edge and cloud processes are pinned to (default:
            the first and second allowed cores). The relay runs on the cloud's cores.
        seed: seeds the relays' jitter (each relay gets ``seed + its index``).
        use_netem: None probes the kernel for ``netem``; False never uses it.
        realtime_relay: run the relay processes under SCHED_FIFO where permitted (root), so
            that a busy core does not delay the emulated network's wake-ups.

    Raises:
        LinkUnavailable: on entering, when ``mode="netns"`` cannot be built here.
    """

    SUBNET = "10.211.0"

    _active: set[str] = set()  # tags of links alive in this process

    def __init__(
        self,
        spec: LinkSpec | None = None,
        mode: str = "netns",
        *,
        edge_cpus: Iterable[int] | None = None,
        cloud_cpus: Iterable[int] | None = None,
        seed: int = 0,
        use_netem: bool | None = None,
        realtime_relay: bool = True,
    ) -> None:
        if mode not in ("netns", "loopback", "auto"):
            raise ValueError(f"mode: expected 'netns', 'loopback' or 'auto', got {mode!r}")
        self.spec = spec if spec is not None else LinkSpec()
        self.requested_mode = mode
        self.mode = mode
        default_edge, default_cloud = _default_cpus()
        self.edge_cpus = _cpu_list(edge_cpus) if edge_cpus is not None else default_edge
        self.cloud_cpus = _cpu_list(cloud_cpus) if cloud_cpus is not None else default_cloud
        self.seed = seed
        self.use_netem = use_netem
        self.realtime_relay = realtime_relay
        self.delay_by = "relay"
        self.rate_by = "relay"
        self.edge_ns: str | None = None
        self.cloud_ns: str | None = None
        self.edge_dev: str | None = None
        self.cloud_dev: str | None = None
        self.edge_address = "127.0.0.1"
        self.cloud_address = "127.0.0.1"
        self._tag: str | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._relays = 0
        self._tmp: str | None = None
        self._entered = False

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> EmulatedLink:
        if self._entered:
            raise RuntimeError("EmulatedLink: expected a link not entered, got an entered one")
        mode = self.requested_mode
        if mode == "auto":
            ok, why = netns_available()
            mode = "netns" if ok else "loopback"
            if not ok:
                log.warning("emulated link: loopback mode, because %s", why)
        self.mode = mode
        self._tmp = tempfile.mkdtemp(prefix="exitwise-link-")
        self._entered = True
        try:
            if mode == "netns":
                self._build_netns()
            else:
                self.delay_by = self.rate_by = "relay"
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build_netns(self) -> None:
        ok, why = netns_available()
        if not ok:
            raise LinkUnavailable(f"{why}; EmulatedLink(mode='loopback') needs none of this")
        with contextlib.suppress(LinkUnavailable):
            cleanup_stale()
        pid = os.getpid()
        n = 0
        while f"{pid}-{n}" in EmulatedLink._active:
            n += 1
        self._tag = f"{pid}-{n}" if n else str(pid)
        EmulatedLink._active.add(f"{pid}-{n}")
        self._active_key = f"{pid}-{n}"
        self.edge_ns = f"{NS_PREFIX}-edge-{self._tag}"
        self.cloud_ns = f"{NS_PREFIX}-cloud-{self._tag}"
        self.edge_dev = f"xwe{pid}x{n}"[:15]
        self.cloud_dev = f"xwc{pid}x{n}"[:15]
        self.edge_address = f"{self.SUBNET}.1"
        self.cloud_address = f"{self.SUBNET}.2"
        existing = set(_netns_list())
        for ns in (self.edge_ns, self.cloud_ns):
            if ns in existing:  # left over by a crashed run with the same name
                log.info("removing leftover namespace %s", ns)
                _delete_netns(ns)
        _run(["ip", "link", "del", self.edge_dev], check=False)
        e, c = self.edge_ns, self.cloud_ns
        _run(["ip", "netns", "add", e])
        _run(["ip", "netns", "add", c])
        _run(["ip", "link", "add", self.edge_dev, "type", "veth", "peer", "name", self.cloud_dev])
        _run(["ip", "link", "set", self.edge_dev, "netns", e])
        _run(["ip", "link", "set", self.cloud_dev, "netns", c])
        for ns, dev, addr in (
            (e, self.edge_dev, self.edge_address),
            (c, self.cloud_dev, self.cloud_address),
        ):
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        use_netem = self.use_netem
        if use_netem is None or use_netem:
            has = netem_available(e, self.edge_dev)
            if use_netem and not has:
                raise LinkUnavailable("use_netem=True: expected a kernel with netem, got none")
            use_netem = has
        s = self.spec
        for ns, dev in ((e, self.edge_dev), (c, self.cloud_dev)):
            if use_netem:
                argv = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem"]
                argv += ["delay", f"{s.rtt_ms / 2}ms", f"{s.jitter_ms / math.sqrt(2)}ms"]
                if os.path.exists("/usr/lib/tc/normal.dist"):
                    argv += ["distribution", "normal"]
                argv += ["rate", f"{s.wire_rate_mbit:.3f}mbit"]
            else:
                argv = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf"]
                argv += ["rate", f"{s.wire_rate_mbit:.3f}mbit", "burst", f"{s.burst_kb}kb"]
                argv += ["latency", f"{s.queue_ms}ms"]
            _run(argv)
        self.delay_by = "netem" if use_netem else "relay"
        self.rate_by = "netem" if use_netem else "tbf"
        log.info(
            "emulated link %s <-> %s: %s, delay by %s, rate by %s",
            e,
            c,
            s,
            self.delay_by,
            self.rate_by,
        )

    def close(self) -> None:
        """Stop every process this link started and delete its namespaces (idempotent)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self._procs.clear()
        if self.mode == "netns":
            for ns in (self.edge_ns, self.cloud_ns):
                if ns is not None:
                    with contextlib.suppress(LinkUnavailable):
                        _delete_netns(ns)
            if self.edge_dev is not None:
                with contextlib.suppress(LinkUnavailable):
                    _run(["ip", "link", "del", self.edge_dev], check=False)
            EmulatedLink._active.discard(getattr(self, "_active_key", ""))
        if self._tmp is not None:
            for name in sorted(os.listdir(self._tmp)):
                if name.endswith(".log"):
                    with open(os.path.join(self._tmp, name)) as f:
                        text = f.read().strip()
                    if text:
                        log.warning("%s said: %s", name[:-4], text.replace("\n", " | ")[:2000])
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._entered = False

    # -- processes and threads on either side ---------------------------------------------

    def _check_entered(self, what: str) -> None:
        if not self._entered:
            raise RuntimeError(
                f"EmulatedLink.{what}: expected an entered link (`with ...`), got none"
            )

    def _popen(
        self, ns: str | None, cpus: Iterable[int], argv: Sequence[str], **kw: Any
    ) -> subprocess.Popen[Any]:
        prefix: list[str] = []
        if self.mode == "netns":
            assert ns is not None
            prefix = ["ip", "netns", "exec", ns]
        chosen = ",".join(str(c) for c in sorted(_cpu_list(cpus)))
        proc = subprocess.Popen([*prefix, "taskset", "-c", chosen, *argv], **kw)
        self._procs.append(proc)
        return proc

    def cloud_popen(
        self, argv: Sequence[str], cpus: Iterable[int] | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in the cloud's namespace, pinned to ``cpus`` (default: the cloud's).

        ``kw`` goes to :class:`subprocess.Popen`. The process is terminated when the link
        closes, if it still runs.
        """
        self._check_entered("cloud_popen")
        return self._popen(self.cloud_ns, cpus or self.cloud_cpus, argv, **kw)

    def edge_popen(
        self, argv: Sequence[str], cpus: Iterable[int] | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in the edge's namespace, pinned to ``cpus`` (default: the edge's)."""
        self._check_entered("edge_popen")
        return self._popen(self.edge_ns, cpus or self.edge_cpus, argv, **kw)

    @contextlib.contextmanager
    def edge_side(self) -> Iterator[None]:
        """Run the calling thread in the edge's namespace (a no-op in loopback mode).

        Sockets keep the namespace they were made in, and an HTTP client opens (and reopens)
        its connections when it sends: make every request inside the block, e.g. the whole
        study loop, so that a reconnection does not happen in the wrong namespace. Other
        threads are not moved.
        """
        self._check_entered("edge_side")
        with self._side(self.edge_ns):
            yield

    @contextlib.contextmanager
    def cloud_side(self) -> Iterator[None]:
        """Run the calling thread in the cloud's namespace (a no-op in loopback mode)."""
        self._check_entered("cloud_side")
        with self._side(self.cloud_ns):
            yield

    def _side(self, ns: str | None) -> contextlib.AbstractContextManager[None]:
        """The calling thread in namespace ``ns`` (netns mode), else nothing changes."""
        if self.mode != "netns":
            return contextlib.nullcontext()
        assert ns is not None
        return _in_netns(ns)

    def _helper(self, args: Sequence[str], name: str) -> tuple[subprocess.Popen[Any], str, int]:
        """Start this file as a process in the cloud namespace; wait for its ready file."""
        assert self._tmp is not None
        ready = os.path.join(self._tmp, f"{name}.ready")
        errlog = open(os.path.join(self._tmp, f"{name}.log"), "w")  # noqa: SIM115
        # By path, so that the package (whose __init__ loads torch) is not imported; -I keeps
        # this file's folder (and the environment's PYTHON* settings) off sys.path.
        argv = [sys.executable, "-I", os.path.abspath(__file__), *args, "--ready-file", ready]
        try:
            proc = self.cloud_popen(argv, stdout=subprocess.DEVNULL, stderr=errlog)
        finally:
            errlog.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(self._tmp, f"{name}.log")) as f:
                    err = f.read().strip().splitlines()[-1:] or ["no output"]
                state = f"exit {proc.returncode}" if proc.returncode is not None else "no answer"
                raise LinkUnavailable(
                    f"{name}: expected it to listen within 20 s, got {state}: {err[0]}"
                )
            time.sleep(0.01)
        with open(ready) as f:
            host, port = f.read().split()
        return proc, host, int(port)

    def relay_endpoint(
        self, target_port: int, target_host: str = "127.0.0.1", *, seed: int | None = None
    ) -> tuple[str, int]:
        """Start a relay process in front of ``target_host:target_port`` (in the cloud's
        namespace); answers the ``(host, port)`` the edge connects to.

        In netns mode it listens on the cloud's veth address and only delays (``tc`` shapes the
        rate); with netem it only forwards. In loopback mode it listens on 127.0.0.1 and also
        paces the rate.
        """
        self._check_entered("relay_endpoint")
        s = self.spec
        index = self._relays
        self._relays += 1
        listen_host = self.cloud_address if self.mode == "netns" else "127.0.0.1"
        args = ["relay", "--listen", f"{listen_host}:0", "--target", f"{target_host}:{target_port}"]
        if self.delay_by == "relay":
            args += ["--rtt-ms", str(s.rtt_ms), "--jitter-ms", str(s.jitter_ms)]
        else:
            args += ["--rtt-ms", "0", "--jitter-ms", "0", "--no-handshake"]
        if self.mode == "loopback":
            args += ["--rate-mbit", str(s.rate_mbit), "--burst-kb", str(s.burst_kb)]
            args += ["--queue-ms", str(s.queue_ms)]
        args += ["--seed", str(self.seed + index if seed is None else seed)]
        if self.realtime_relay:
            args += ["--realtime"]
        _, host, port = self._helper(args, f"relay{index}")
        return host, port

    def start_relay(
        self, target_port: int, target_host: str = "127.0.0.1", *, seed: int | None = None
    ) -> str:
        """:meth:`relay_endpoint` as the URL the edge should use, e.g. ``http://10.211.0.2:P``."""
        host, port = self.relay_endpoint(target_port, target_host, seed=seed)
        return f"http://{host}:{port}"

    def cloud_free_port(self) -> int:
        """A TCP port free on the cloud's 127.0.0.1 now (for a server about to start there)."""
        self._check_entered("cloud_free_port")
        with self.cloud_side():
            return _free_port()

    def wait_listening(
        self, proc: subprocess.Popen[Any], port: int, timeout_s: float = 60.0
    ) -> None:
        """Wait until ``proc`` (started by :meth:`cloud_popen` or :meth:`edge_popen`) listens
        on TCP ``port`` in its namespace; ``RuntimeError`` if it exits or the time runs out.

        Looks at the process's own socket table, so nothing connects to the server.
        """
        deadline = time.monotonic() + timeout_s
        while not _listening(proc.pid, port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"expected the process {proc.args!r} to listen on port {port}, "
                    f"got its exit with status {proc.returncode}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"expected the process {proc.args!r} to listen on port {port} within "
                    f"{timeout_s:g} s, got no listening socket"
                )
            time.sleep(0.02)

    def start_http_responder(self) -> int:
        """A minimal keep-alive HTTP server in the cloud's namespace on 127.0.0.1, answering
        ``GET /v2/health/live`` with 200 and an empty body; answers its port."""
        self._check_entered("start_http_responder")
        _, _, port = self._helper(["http-responder", "--listen", "127.0.0.1:0"], "responder")
        return port

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "delay_by": self.delay_by,
            "rate_by": self.rate_by,
            "edge_ns": self.edge_ns,
            "cloud_ns": self.cloud_ns,
            "edge_cpus": sorted(self.edge_cpus),
            "cloud_cpus": sorted(self.cloud_cpus),
        }


def netem_available(ns: str, dev: str) -> bool:
    """Whether ``tc`` can put a ``netem`` qdisc on ``dev`` in namespace ``ns`` (probe, removed)."""
    probe = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        log.info("no netem here (%s): the relay delays", done.stderr.strip())
        return False
    subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)
    return True


# --------------------------------------------------------------------------------------------
# Measurement


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def measure_http_rtt(url: str, n: int = 50, *, timeout_s: float = 10.0) -> list[float]:
    """``n`` empty ``GET`` round trips to ``url`` over one keep-alive connection, in ms.

    One warm-up request (which also pays for the TCP handshake) is not counted. Every answer
    must be a 2xx.
    """
    m = re.match(r"^http://([^/:]+)(?::(\d+))?(/.*)?$", url)
    if not m:
        raise ValueError(f"url: expected http://HOST[:PORT][/PATH], got {url!r}")
    host, port, path = m.group(1), int(m.group(2) or 80), m.group(3) or "/"
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    samples = []
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            dt = (time.perf_counter() - t0) * 1000.0
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"GET {url}: expected a 2xx, got {resp.status} {resp.reason}")
            if i:
                samples.append(dt)
    finally:
        conn.close()
    return samples


def _tcp_rst_rtt(host: str, n: int, port: int = 9) -> list[float]:
    """RTTs of ``connect`` to a closed port (SYN answered by a reset), in ms."""
    samples = []
    for _ in range(n):
        with socket.socket() as s:
            s.settimeout(5)
            t0 = time.perf_counter()
            try:
                s.connect((host, port))
            except ConnectionRefusedError:
                samples.append((time.perf_counter() - t0) * 1000.0)
            else:
                raise RuntimeError(f"{host}:{port}: expected a closed port, got a connection")
    return samples


@dataclass(frozen=True)
class LinkMeasurement:
    """What :func:`measure_link` measured through the whole path (report it with a study).

    ``rtt_ms_*``: empty HTTP round trips through the relay (what a request pays beyond its
    bytes). ``raw_rtt_ms_*``: the path without the relay (``ping``, or a TCP SYN answered by a
    reset), for reference. ``throughput_mbit_*``: iperf3 from the edge to the cloud through the
    relay, as the receiver saw it: the mean and standard deviation of its 1 s intervals after
    the first ``iperf_omit_s`` seconds (TCP's slow start), and the whole test's total; None,
    with ``throughput_note`` saying why, when iperf3 could not run.
    """

    spec: LinkSpec
    mode: str
    delay_by: str
    rate_by: str
    edge_cpus: tuple[int, ...]
    cloud_cpus: tuple[int, ...]
    rtt_ms_mean: float
    rtt_ms_std: float
    rtt_n: int
    rtt_method: str
    raw_rtt_ms_mean: float | None
    raw_rtt_ms_std: float | None
    raw_rtt_method: str
    throughput_mbit_mean: float | None
    throughput_mbit_std: float | None
    throughput_mbit_total: float | None
    throughput_intervals: int
    throughput_note: str
    iperf_seconds: float
    iperf_omit_s: float
    measured_at: str
    kernel: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_json()
        data["edge_cpus"], data["cloud_cpus"] = list(self.edge_cpus), list(self.cloud_cpus)
        return data

    @classmethod
    def from_json(cls, data: Any) -> LinkMeasurement:
        if not isinstance(data, dict):
            raise ValueError(f"LinkMeasurement: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            missing, extra = sorted(names - set(data)), sorted(set(data) - names)
            raise ValueError(
                f"LinkMeasurement: expected keys {sorted(names)}; "
                f"missing {missing}, unknown {extra}"
            )
        return cls(
            **{
                **data,
                "spec": LinkSpec.from_json(data["spec"]),
                "edge_cpus": tuple(data["edge_cpus"]),
                "cloud_cpus": tuple(data["cloud_cpus"]),
            }
        )

    def summary(self) -> str:
        """One line for a report."""
        if self.throughput_mbit_mean is not None:
            std = "" if self.throughput_mbit_std is None else f" ± {self.throughput_mbit_std:.1f}"
            tp = (
                f"{self.throughput_mbit_mean:.1f}{std} Mbit/s (iperf3, "
                f"{self.throughput_intervals} x 1 s)"
            )
        else:
            tp = f"throughput not measured ({self.throughput_note})"
        return (
            f"RTT {self.rtt_ms_mean:.2f} ± {self.rtt_ms_std:.2f} ms ({self.rtt_n} empty HTTP "
            f"round trips), {tp}; asked {self.spec.rtt_ms:g} ± {self.spec.jitter_ms:g} ms, "
            f"{self.spec.rate_mbit:g} Mbit/s; {self.mode}, delay by {self.delay_by}, rate by "
            f"{self.rate_by}"
        )


@dataclass
class _Throughput:
    mean: float | None = None
    std: float | None = None
    total: float | None = None
    intervals: int = 0
    note: str = ""


def _iperf3(link: EmulatedLink, seconds: float, omit: float) -> _Throughput:
    """iperf3 from the edge to the cloud, through a relay of its own."""
    if shutil.which("iperf3") is None:
        return _Throughput(note="iperf3 not found on PATH (Debian: apt-get install iperf3)")
    port = link.cloud_free_port()
    server = link.cloud_popen(
        ["iperf3", "-s", "-J", "-B", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            link.wait_listening(server, port, timeout_s=10)
        except RuntimeError as e:
            return _Throughput(note=f"iperf3 server: {e}")
        host, rport = link.relay_endpoint(port)
        argv = ["iperf3", "-c", host, "-p", str(rport), "-J", "-t", f"{seconds:g}"]
        argv += ["-O", f"{omit:g}", "--get-server-output"]
        client = link.edge_popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        limit = seconds + omit + 30
        try:
            out, err = client.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            return _Throughput(note=f"iperf3 client: expected it to finish within {limit:g} s")
    finally:
        server.terminate()
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        return _Throughput(note=f"iperf3: expected JSON, got {(out or err)[:200]!r}")
    if "error" in report:
        return _Throughput(note=f"iperf3: {report['error']}")
    total = report["end"]["sum_received"]["bits_per_second"] / 1e6
    received = report.get("server_output_json", {}).get("intervals")
    note = "" if received else "the receiver's intervals are missing: the sender's"
    rates = [
        iv["sum"]["bits_per_second"] / 1e6
        for iv in received or report.get("intervals", [])
        if iv["sum"].get("seconds", 0) > 0.5 and not iv["sum"].get("omitted")
    ]
    mean, std = _mean_std(rates)
    if len(rates) < 2:
        std = None
    return _Throughput(mean if rates else total, std, total, len(rates), note)


def measure_link(
    link: EmulatedLink,
    *,
    n_rtt: int = 50,
    iperf_seconds: float = 3.0,
    iperf_omit_s: float = 1.0,
    url: str | None = None,
    raw_n: int = 20,
) -> LinkMeasurement:
    """Measure what ``link`` achieves through the whole path (the relay included).

    Args:
        link: an entered :class:`EmulatedLink`.
        n_rtt: empty HTTP round trips (after one warm-up) over one keep-alive connection.
        iperf_seconds: iperf3's measured duration (``-t``); 0 skips the throughput.
        iperf_omit_s: seconds of TCP slow start left out first (``-O``).
        url: the HTTP URL to time (e.g. the cloud server's relay URL + ``/v2/health/live``);
            default: a minimal responder started in the cloud behind a relay of its own.
        raw_n: round trips of the raw path (no relay) for reference.
    """
    link._check_entered("measure_link")
    if n_rtt < 2:
        raise ValueError(f"n_rtt: expected at least 2 round trips, got {n_rtt}")
    if url is None:
        url = link.start_relay(link.start_http_responder()) + HEALTH_PATH
    with link.edge_side():
        samples = measure_http_rtt(url, n_rtt)
        raw_mean: float | None
        raw_std: float | None
        if shutil.which("ping"):
            raw_method = "ping"
            out = _run(
                ["ping", "-n", "-q", "-c", str(raw_n), "-i", "0.01", link.cloud_address],
                check=False,
            )
            m = re.search(r"= [\d.]+/([\d.]+)/[\d.]+/([\d.]+) ms", out)
            raw_mean, raw_std = (float(m.group(1)), float(m.group(2))) if m else (None, None)
        else:
            raw_method = "TCP SYN to a closed port, answered by a reset (no ping here)"
            raw_mean, raw_std = _mean_std(_tcp_rst_rtt(link.cloud_address, raw_n))
    mean, std = _mean_std(samples)
    assert mean is not None and std is not None
    if iperf_seconds > 0:
        tp = _iperf3(link, iperf_seconds, iperf_omit_s)
    else:
        tp = _Throughput(note="not asked (iperf_seconds=0)")
    return LinkMeasurement(
        spec=link.spec,
        mode=link.mode,
        delay_by=link.delay_by,
        rate_by=link.rate_by,
        edge_cpus=tuple(sorted(link.edge_cpus)),
        cloud_cpus=tuple(sorted(link.cloud_cpus)),
        rtt_ms_mean=mean,
        rtt_ms_std=std,
        rtt_n=len(samples),
        rtt_method=f"HTTP GET {urllib.parse.urlsplit(url).path or '/'}, keep-alive",
        raw_rtt_ms_mean=raw_mean,
        raw_rtt_ms_std=raw_std,
        raw_rtt_method=raw_method,
        throughput_mbit_mean=tp.mean,
        throughput_mbit_std=tp.std,
        throughput_mbit_total=tp.total,
        throughput_intervals=tp.intervals,
        throughput_note=tp.note,
        iperf_seconds=float(iperf_seconds),
        iperf_omit_s=float(iperf_omit_s),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        kernel=platform.release(),
    )


# --------------------------------------------------------------------------------------------
# The processes: ``python link.py relay ...`` and ``python link.py http-responder ...``


async def _respond_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            ok = len(parts) >= 2 and parts[1].split("?")[0] == HEALTH_PATH
            status = b"200 OK" if ok else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _write_ready(path: str | None, address: tuple[str, int]) -> None:
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(f"{address[0]} {address[1]}\n")
        os.replace(path + ".tmp", path)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if getattr(args, "realtime", False):
        # The relay stands for the network, whose packets do not queue behind the endpoints'
        # computations: SCHED_FIFO wakes it up on time on a busy core.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except (OSError, AttributeError) as e:
            log.info("relay: no real-time priority (%s)", e)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.command == "relay":
        core = _RelayCore(
            args.listen,
            args.target,
            rtt_ms=args.rtt_ms,
            jitter_ms=args.jitter_ms,
            rate_mbit=args.rate_mbit,
            burst_kb=args.burst_kb,
            queue_ms=args.queue_ms,
            seed=args.seed,
            handshake=not args.no_handshake,
            connect_timeout_s=args.connect_timeout_s,
        )
        await core.start()
        _write_ready(args.ready_file, core.address)
        await stop.wait()
        await core.stop()
    else:
        server = await asyncio.start_server(_respond_http, *args.listen)
        _write_ready(args.ready_file, server.sockets[0].getsockname()[:2])
        await stop.wait()
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The relay and the HTTP responder as processes; they print nothing but errors."""
    parser = argparse.ArgumentParser(prog="python -m exitwise.serving.link")
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="a delaying TCP relay")
    relay.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    relay.add_argument("--target", type=_host_port, required=True, metavar="HOST:PORT")
    relay.add_argument("--rtt-ms", type=float, default=LinkSpec.rtt_ms)
    relay.add_argument("--jitter-ms", type=float, default=LinkSpec.jitter_ms)
    relay.add_argument("--rate-mbit", type=float, default=None, help="pace (default: no)")
    relay.add_argument("--burst-kb", type=float, default=LinkSpec.burst_kb)
    relay.add_argument("--queue-ms", type=float, default=LinkSpec.queue_ms)
    relay.add_argument("--seed", type=int, default=0)
    relay.add_argument("--no-handshake", action="store_true", help="no RTT before first bytes")
    relay.add_argument("--connect-timeout-s", type=float, default=5.0)
    relay.add_argument("--realtime", action="store_true", help="SCHED_FIFO where permitted")
    relay.add_argument("--ready-file", help="written with 'HOST PORT' once listening")
    resp = sub.add_parser("http-responder", help=f"200 to GET {HEALTH_PATH}, keep-alive")
    resp.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    resp.add_argument("--ready-file", help="written with 'HOST PORT' once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    if args.command == "relay":
        try:
            LinkSpec(
                args.rate_mbit or 1.0, args.rtt_ms, args.jitter_ms, args.burst_kb, args.queue_ms
            )
        except ValueError as e:
            parser.error(str(e))
    try:
        loop = _precise_loop()
        try:
            loop.run_until_complete(_serve(args))
        finally:
            loop.close()
    except OSError as e:
        # the process's one line on stderr, through the logging main() set up
        log.error("%s: expected to listen on %s:%s, got %s", args.command, *args.listen, e)
        return 1
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        log = logging.getLogger("exitwise.serving.link")
    sys.exit(main())

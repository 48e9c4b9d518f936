"""The emulated link: the delaying relay on loopback (bytes, order, delay, half-close, a dead
target, pacing), the spec, and the namespaces (built, crossed, entered, torn down)."""

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from exitwise.serving import link as link_module
from exitwise.serving.link import (
    EmulatedLink,
    LinkMeasurement,
    LinkSpec,
    LinkUnavailable,
    Relay,
    measure_link,
    netns_available,
)

NETNS, WHY_NOT = netns_available()
needs_netns = pytest.mark.skipif(not NETNS, reason=f"no network namespaces here: {WHY_NOT}")


# -- helpers ---------------------------------------------------------------------------------


class TcpServer:
    """A threaded TCP server on ``sock`` (bound, not yet listening); ``handle(conn)`` per
    connection. ``sock`` may be bound in another network namespace."""

    def __init__(self, handle, sock=None):
        self.sock = sock or socket.socket()
        if sock is None:
            self.sock.bind(("127.0.0.1", 0))
        self.handle = handle
        self.address = self.sock.getsockname()[:2]

    def __enter__(self):
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                self.handle(conn)
            except OSError:
                pass

    def __exit__(self, *exc):
        # shutdown() wakes the accepting thread; close() alone would leave it blocked.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def echo(conn):
    """Echo until the client's EOF, then half-close back."""
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def count_then_answer(conn):
    """Read to EOF, then answer how many bytes came."""
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    conn.sendall(str(total).encode())
    conn.shutdown(socket.SHUT_WR)


def recv_all(sock):
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def round_trips(address, n):
    """``n`` one-byte round trips over one connection, in ms (after one not counted)."""
    with socket.create_connection(address, timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n + 1):
            t0 = time.perf_counter()
            c.sendall(b"x")
            assert c.recv(16) == b"x"
            times.append((time.perf_counter() - t0) * 1000)
    return times[0], times[1:]


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


# -- the spec --------------------------------------------------------------------------------


def test_spec_defaults_are_seed_002s_link_and_round_trip_through_json():
    spec = LinkSpec()
    assert (spec.rate_mbit, spec.rtt_ms, spec.jitter_ms) == (93.9, 11.91, 0.66)
    assert LinkSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert spec.one_way_s == pytest.approx(0.005955)
    assert spec.one_way_std_s * 2**0.5 == pytest.approx(0.00066)
    assert spec.wire_rate_mbit == pytest.approx(93.9 * 1514 / 1448)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rate_mbit": 0}, "rate_mbit"),
        ({"rate_mbit": -5}, "rate_mbit"),
        ({"rtt_ms": -1}, "rtt_ms"),
        ({"jitter_ms": float("nan")}, "jitter_ms"),
        ({"burst_kb": float("inf")}, "burst_kb"),
        ({"queue_ms": "25"}, "queue_ms"),
        ({"rtt_ms": True}, "rtt_ms"),
    ],
)
def test_spec_refuses_what_is_not_a_link(kwargs, field):
    with pytest.raises(ValueError, match=f"LinkSpec.{field}: expected"):
        LinkSpec(**kwargs)


def test_spec_from_json_refuses_unknown_keys_and_non_objects():
    with pytest.raises(ValueError, match="unknown_ms"):
        LinkSpec.from_json({"rtt_ms": 5, "unknown_ms": 1})
    with pytest.raises(ValueError, match="JSON object"):
        LinkSpec.from_json([1, 2])
    assert LinkSpec.from_json({"rtt_ms": 0}).rtt_ms == 0.0


def test_relay_refuses_a_bad_spec():
    with pytest.raises(ValueError, match="rtt_ms"):
        Relay(("127.0.0.1", 1), rtt_ms=-3)


# -- the relay -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_relay_keeps_every_byte_in_order_both_ways_despite_jitter(seed):
    """Random chunk sizes, and jitter (4 ms std) far above the gaps between chunks: were a
    chunk allowed to overtake, the echo would come back shuffled."""
    rng = random.Random(seed)
    payload = rng.randbytes(300_000)
    cuts = sorted(rng.sample(range(1, len(payload)), 400))
    chunks = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    with TcpServer(echo) as server, Relay(server.address, rtt_ms=4, jitter_ms=4, seed=seed) as r:
        with socket.create_connection(r.address, timeout=10) as c:
            got = []
            reader = threading.Thread(target=lambda: got.append(recv_all(c)))
            reader.start()
            for chunk in chunks:
                c.sendall(chunk)
                if rng.random() < 0.05:
                    time.sleep(0.001)
            c.shutdown(socket.SHUT_WR)  # half-close: the echo must still all come back
            reader.join(timeout=15)
        stats = r.stats
    assert got and len(got[0]) == len(payload)
    assert got[0] == payload
    assert stats.bytes_up == stats.bytes_down == len(payload)


def test_relay_adds_the_round_trip_time_and_the_handshake():
    rtt = 20.0
    with TcpServer(echo) as server, Relay(server.address, rtt_ms=rtt, jitter_ms=0) as r:
        first, rest = round_trips(r.address, 15)
    # The relay wakes up to 1 ms early to absorb its timer's lateness, never more.
    assert min(rest) >= rtt - 1.5, rest
    assert statistics.median(rest) < rtt + 15, rest  # loose: a busy machine is late
    # The first bytes also wait for the emulated SYN / SYN-ACK: one more RTT.
    assert first >= 2 * rtt - 3, first


def test_relay_jitter_spreads_the_rtt_around_its_mean():
    with TcpServer(echo) as server:
        with Relay(server.address, rtt_ms=10, jitter_ms=3, seed=7) as r:
            _, jittered = round_trips(r.address, 40)
    assert statistics.stdev(jittered) > 1.0, jittered
    assert min(jittered) < 10.5 < max(jittered), jittered


def test_relay_survives_a_dead_target_and_serves_once_it_is_up():
    target = socket.socket()
    target.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    with Relay(target.getsockname(), rtt_ms=2, jitter_ms=0) as r:
        with socket.create_connection(r.address, timeout=10) as c:
            c.sendall(b"hello")
            try:
                answer = c.recv(16)
            except ConnectionResetError:
                answer = b""
        assert answer == b""
        assert r.stats.failed_connects == 1
        with TcpServer(echo, sock=target):
            _, times = round_trips(r.address, 3)
        assert len(times) == 3
        assert r.stats.connections == 2


def test_relay_paces_the_rate():
    size, rate_mbit = 400_000, 8.0  # 0.4 s at 8 Mbit/s
    with TcpServer(count_then_answer) as server:
        with Relay(server.address, rate_mbit=rate_mbit, burst_kb=16) as r:
            with socket.create_connection(r.address, timeout=10) as c:
                t0 = time.perf_counter()
                c.sendall(os.urandom(size))
                c.shutdown(socket.SHUT_WR)
                answer = recv_all(c)
                elapsed = time.perf_counter() - t0
    assert answer == str(size).encode()
    ideal = (size - 16 * 1024) * 8 / (rate_mbit * 1e6)
    assert ideal * 0.9 < elapsed < ideal * 4 + 1, (elapsed, ideal)


def test_relay_process_relays_and_prints_nothing(tmp_path):
    ready = tmp_path / "ready"
    with TcpServer(echo) as server:
        argv = [sys.executable, "-I", link_module.__file__, "relay", "--listen", "127.0.0.1:0"]
        argv += ["--target", f"{server.address[0]}:{server.address[1]}", "--rtt-ms", "4"]
        argv += ["--jitter-ms", "0.5", "--seed", "3", "--ready-file", str(ready)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while not ready.exists():
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.01)
            host, port = ready.read_text().split()
            _, times = round_trips((host, int(port)), 5)
            # 4 ms +- 0.5: the relay may aim up to 1 ms early per direction for its wake-ups
            assert min(times) >= 1.5
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert (out, err) == (b"", b"")


def test_relay_command_line_refuses_a_bad_address_and_a_bad_delay():
    with pytest.raises(SystemExit):
        link_module.main(["relay", "--listen", "nowhere", "--target", "127.0.0.1:1"])
    with pytest.raises(SystemExit):
        link_module.main(
            ["relay", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--rtt-ms", "-1"]
        )


# -- the emulated link -----------------------------------------------------------------------


def test_loopback_link_relays_with_delay_and_measures():
    spec = LinkSpec(rtt_ms=8, jitter_ms=0.5)
    with EmulatedLink(spec, mode="loopback") as link:
        assert (link.mode, link.delay_by, link.rate_by) == ("loopback", "relay", "relay")
        with link.edge_side():  # a no-op here
            pass
        m = measure_link(link, n_rtt=10, iperf_seconds=0)
    assert m.rtt_n == 10 and m.rtt_ms_mean >= spec.rtt_ms - 1.5
    assert m.throughput_mbit_mean is None and "iperf_seconds=0" in m.throughput_note
    again = LinkMeasurement.from_json(json.loads(json.dumps(m.to_json())))
    assert again == m
    with pytest.raises(ValueError, match="missing"):
        LinkMeasurement.from_json({"mode": "loopback"})


def test_link_refuses_unknown_modes_and_cores():
    with pytest.raises(ValueError, match="mode"):
        EmulatedLink(mode="wifi")
    with pytest.raises(ValueError, match="cpus"):
        EmulatedLink(mode="loopback", edge_cpus={10_000})
    with pytest.raises(RuntimeError, match="entered"):
        EmulatedLink(mode="loopback").start_relay(80)


def test_netns_mode_says_why_it_cannot_and_points_to_loopback(monkeypatch):
    monkeypatch.setattr(link_module, "_NETNS_PROBE", (False, "namespaces need root here"))
    with pytest.raises(LinkUnavailable, match="need root here.*mode='loopback'"):
        with EmulatedLink(mode="netns"):
            pass
    with EmulatedLink(mode="auto") as link:
        assert link.mode == "loopback"


@needs_netns
def test_netns_link_is_built_crossed_entered_and_torn_down():
    spec = LinkSpec(rate_mbit=50, rtt_ms=6, jitter_ms=0.3)
    with EmulatedLink(spec, mode="netns", seed=1) as link:
        edge, cloud = link.edge_ns, link.cloud_ns
        assert {edge, cloud} <= netns_names()
        qdiscs = subprocess.run(
            ["tc", "-n", edge, "qdisc", "show", "dev", link.edge_dev],
            capture_output=True,
            text=True,
        ).stdout
        assert link.rate_by in qdiscs, qdiscs  # tbf (or netem)

        # A server bound in the cloud's namespace; the edge reaches it over the veth.
        with link.cloud_side():
            veth_sock = socket.socket()
            veth_sock.bind((link.cloud_address, 0))
            local_sock = socket.socket()
            local_sock.bind(("127.0.0.1", 0))
        with TcpServer(echo, sock=veth_sock) as veth_server:
            with link.edge_side():
                _, raw = round_trips(veth_server.address, 5)
            # Outside the edge's namespace the cloud's address is not reachable.
            with pytest.raises(OSError):
                socket.create_connection(veth_server.address, timeout=0.5).close()
        assert statistics.median(raw) < spec.rtt_ms  # the veth alone does not delay

        # Through the relay in front of a cloud-local server: the delay is added.
        with TcpServer(echo, sock=local_sock) as local_server:
            url = link.start_relay(local_server.address[1])
            host, port = url.removeprefix("http://").split(":")
            assert host == link.cloud_address
            with link.edge_side():
                _, delayed = round_trips((host, int(port)), 8)
        assert min(delayed) >= spec.rtt_ms - 1.5, delayed

        # Processes run in their namespace, pinned to their cores.
        probe = "import os; print(os.stat('/proc/self/ns/net').st_ino, *os.sched_getaffinity(0))"
        out = link.cloud_popen([sys.executable, "-c", probe], stdout=subprocess.PIPE)
        ino, *cpus = out.communicate(timeout=10)[0].split()
        assert int(ino) == os.stat(f"/var/run/netns/{cloud}").st_ino
        assert {int(c) for c in cpus} == link.cloud_cpus

        m = measure_link(link, n_rtt=8, iperf_seconds=1, iperf_omit_s=0, raw_n=5)
        assert (m.mode, m.delay_by) == ("netns", link.delay_by)
        assert m.rtt_ms_mean >= spec.rtt_ms - 1.5
        if shutil.which("iperf3"):  # installed by the README's test command (Debian's)
            assert m.throughput_mbit_mean is not None, m.throughput_note
            assert 0.5 * spec.rate_mbit < m.throughput_mbit_mean < 1.2 * spec.rate_mbit
        else:
            assert m.throughput_mbit_mean is None and "iperf3" in m.throughput_note
    assert not {edge, cloud} & netns_names()


@needs_netns
def test_netns_link_is_torn_down_after_an_error_and_replaces_a_leftover():
    leftover = f"xw-edge-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", leftover], check=True)  # as a crashed run leaves it
    try:
        with pytest.raises(KeyError):
            with EmulatedLink(LinkSpec(rtt_ms=1), mode="netns") as link:
                assert link.edge_ns == leftover
                names = (link.edge_ns, link.cloud_ns)
                raise KeyError("boom")
        assert not set(names) & netns_names()
    finally:
        subprocess.run(["ip", "netns", "del", leftover], capture_output=True)
    assert not {n for n in netns_names() if n.endswith(f"-{os.getpid()}")}

"""Issue 17: the HTTP/2 abuse set, each case with a legitimate client alongside.

Every test starts a shard (1000x64 synthetic table), runs a probe (h2_probe.py: unary Lookups of 3
rows at 100 calls a second over one connection, in a process of its own) for PROBE_SECONDS with
nothing else going on, then again while an attacker on raw sockets misbehaves for ATTACK_SECONDS,
and checks:

- the probe got no error and its p99 stayed within 2x its unloaded p99, or within +5 ms of it when
  that is larger (the unloaded p99 of a debug build on a shared 2-vCPU machine is a few ms, and one
  scheduler hiccup moves it by as much);
- the shard's peak RSS (VmHWM) during the attack grew by at most 64 MiB per attacking connection
  and 1 GiB in all (docs/operations.md, "Security");
- the process is alive;
- the bound of the case held (a connection closed, a limit hit).

The figures of each case are printed (run with -s) in one line `ABUSE case: ...`; docs/operations.md
quotes them. Only loopback; every server is stopped by its fixture, every socket closed.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

import h2.settings
import pytest

from raw_h2 import RawH2, grpc_frame

HERE = os.path.dirname(os.path.abspath(__file__))
LOOKUP = "/shardrank.v1.Shard/Lookup"
PROBE_RATE = 100
PROBE_SECONDS = 1.5
ATTACK_SECONDS = 2.5
MIB = 1 << 20
# What one connection may make a shard hold: --max-connection-queued-bytes (64 MiB) of answers,
# plus the connection's own state (nghttp2's session, buffers): 4 MiB is ample for it.
PER_CONNECTION_BOUND = 64 * MIB + 4 * MIB
PROCESS_BOUND = 1 << 30

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


# ---------------------------------------------------------------------------------------------
# Raw frames

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value, first=0x00):
    """A literal header field with a new name (0x00: without indexing, 0x40: with incremental
    indexing), no Huffman coding: stateless for the encoder."""
    return bytes([first]) + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


# :method POST and :scheme http from the static table, the rest literal.
REQUEST_BLOCK = b"\x83\x86" + literal(b":path", LOOKUP.encode()) + literal(b":authority", b"localhost") \
    + literal(b"content-type", b"application/grpc") + literal(b"te", b"trailers")


class Attacker:
    """One raw HTTP/2 connection driven without a protocol library: bytes go out as fast as the
    socket takes them (non-blocking), whatever comes back is read and dropped (or not at all)."""

    def __init__(self, port, read=True, settings=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.out = bytearray(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.read = read
        self.closed = False
        self.received = bytearray()
        self.sent = 0

    def pump(self):
        """Sends what the socket takes now; reads what is there (when reading). False once closed."""
        if self.closed:
            return False
        try:
            while self.out:
                n = self.sock.send(self.out)
                if n <= 0:
                    break
                self.sent += n
                del self.out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True
            return False
        if self.read:
            self.drain()
        return not self.closed

    def drain(self, keep=False):
        try:
            while True:
                d = self.sock.recv(1 << 16)
                if not d:
                    self.closed = True
                    break
                if keep:
                    self.received += d
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True

    def wait_closed(self, limit):
        """Reads (keeping the bytes) until the server closes the connection or `limit` s pass."""
        deadline = time.monotonic() + limit
        self.sock.setblocking(True)
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = self.sock.recv(1 << 16)
            except socket.timeout:
                break
            except OSError:
                self.closed = True
                break
            if not d:
                self.closed = True
            self.received += d
        self.sock.setblocking(False)
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def pace(attackers, build, until, backlog=256 << 10):
    """Keeps every open attacker's outgoing bytes topped up with `build(attacker)` until `until`,
    sleeping on select while the sockets take nothing."""
    import select
    while time.monotonic() < until:
        live = [a for a in attackers if not a.closed]
        if not live:
            return
        for a in live:
            if len(a.out) < backlog:
                a.out += build(a)
            a.pump()
        select.select([a.sock for a in live if a.read and not a.closed],
                      [a.sock for a in live if a.out and not a.closed], [], 0.01)


# ---------------------------------------------------------------------------------------------
# The probe and the measurement


class Probe:
    def __init__(self, port, body):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "h2_probe.py"), str(port), str(PROBE_RATE),
                                      body.hex()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "the probe did not start"

    def start(self, seconds):
        self.proc.stdin.write(f"run {seconds}\n")
        self.proc.stdin.flush()

    def result(self):
        line = self.proc.stdout.readline()
        assert line, "the probe died"
        r = json.loads(line)
        lat = sorted(r["latencies_ms"])
        r["p50"] = lat[len(lat) // 2]
        r["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return r

    def run(self, seconds):
        self.start(seconds)
        return self.result()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def hwm_bytes(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def lookup_body(pb):
    return pb.shard_pb2.LookupRequest(table="items", ids=[1, 2, 3]).SerializeToString()


# SHARDRANK_ABUSE_SPLIT_CPUS=1: the attacker (this process) runs on the last CPU only, the shard
# (every thread) and the probe on the others, as if the attacker were another machine; by default
# all three share every CPU. For measurements by hand (docs/operations.md), not for scripts/test.
SPLIT_CPUS = os.environ.get("SHARDRANK_ABUSE_SPLIT_CPUS") == "1" and len(os.sched_getaffinity(0)) >= 2


def pin(pid, cpus):
    """Every thread of process `pid` onto `cpus`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


def under_attack(srv, body, case, attack, connections=1, seconds=ATTACK_SECONDS):
    """Measures the probe unloaded, then during `attack(until)` (which returns a dict of its own
    figures); checks the probe, the memory and the process; prints and returns the figures."""
    probe = Probe(srv.port, body)
    every = os.sched_getaffinity(0)
    if SPLIT_CPUS:
        attacker_cpu = {max(every)}
        pin(srv.proc.pid, every - attacker_cpu)
        pin(probe.proc.pid, every - attacker_cpu)
        os.sched_setaffinity(0, attacker_cpu)
    try:
        base = probe.run(PROBE_SECONDS)
        rss0, cpu0 = srv.rss_bytes(), srv.cpu_seconds()
        t0 = time.monotonic()
        probe.start(seconds)
        figures = attack(t0 + seconds) or {}
        loaded = probe.result()
        elapsed = time.monotonic() - t0
        cpu = srv.cpu_seconds() - cpu0
        grown = max(0, hwm_bytes(srv) - rss0)
    finally:
        probe.stop()
        if SPLIT_CPUS:
            os.sched_setaffinity(0, every)
    alive = srv.proc.poll() is None
    figures.update(probe_p50_ms=(round(base["p50"], 2), round(loaded["p50"], 2)),
                   probe_p99_ms=(round(base["p99"], 2), round(loaded["p99"], 2)),
                   probe_calls=loaded["n"], probe_errors=loaded["error_count"],
                   rss_growth_mib=round(grown / MIB, 1), server_cpu_s=round(cpu, 2), seconds=round(elapsed, 1))
    print(f"ABUSE {case}: " + json.dumps(figures))
    assert alive, f"the shard died: {srv.proc.returncode}"
    assert loaded["error_count"] == 0, f"the probe failed {loaded['error_count']} calls: {loaded['errors']}"
    bound = max(2 * base["p99"], base["p99"] + 5)
    assert loaded["p99"] <= bound, f"probe p99 {loaded['p99']:.1f} ms under attack > {bound:.1f} ms (unloaded {base['p99']:.1f} ms)"
    assert grown <= min(PROCESS_BOUND, connections * PER_CONNECTION_BOUND), f"RSS grew {grown / MIB:.1f} MiB"
    return figures


def shard_args(*extra):
    return ["shard", "--synthetic", "1000x64", "--port", "0", "--admin-port", "0"] + list(extra)


def metric(srv, name, **labels):
    import re
    import urllib.request
    port = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------------------
# The cases


# Cancelled calls a second, in all: 20,000 on one connection (past the limiter's refill: it is
# sent away after ~1.3 s and reconnects), 10,000 over 64 (the attacker's 64 sockets, the shard and
# the probe share this machine's two cores).
RESET_RATE = {1: 20_000, 64: 10_000}
# SHARDRANK_ABUSE_RESET_RATE=64:40000 (or 1:N) overrides a rate, for measurements by hand.
for spec in filter(None, os.environ.get("SHARDRANK_ABUSE_RESET_RATE", "").split(",")):
    conns, rate = spec.split(":")
    RESET_RATE[int(conns)] = int(rate)


@pytest.mark.parametrize("connections", [1, 64])
def test_rapid_reset(server_factory, lookup_body, pb, connections):
    """HEADERS + DATA (a Lookup of 256 rows) + RST_STREAM(CANCEL) at a fixed rate (RESET_RATE), on 1
    or 64 connections; a connection sent away (nghttp2's limiter: 20,000 resets, then
    5,000 a second) is replaced. Work done after cancel: Lookups answered in full (counted OK)."""
    srv = server_factory(shard_args())
    req = frame(DATA, END_STREAM, 0, grpc_frame(pb.shard_pb2.LookupRequest(table="items", ids=list(range(256))).SerializeToString()))
    sent = {"resets": 0, "connections": connections}

    def build(a):
        chunk = bytearray()
        for _ in range(50):
            sid = a.next_sid
            a.next_sid += 2
            chunk += frame(HEADERS, END_HEADERS, sid, REQUEST_BLOCK) + req[:5] + struct.pack(">I", sid) + req[9:] \
                + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
        sent["resets"] += 50
        return chunk

    def attack(until):
        attackers = []
        try:
            for _ in range(connections):
                a = Attacker(srv.port)
                a.next_sid = 1
                attackers.append(a)
            start = time.monotonic()
            while time.monotonic() < until:
                # At most RESET_RATE cancelled calls a second in all: the attacker shares this
                # machine's two cores with the shard and the probe (unpaced, it takes a whole core
                # and the probe measures the machine, not the shard).
                due = RESET_RATE[connections] * (time.monotonic() - start)
                for a in attackers:
                    if sent["resets"] < due and len(a.out) < (64 << 10) and not a.closed:
                        a.out += build(a)
                    a.pump()
                if sent["resets"] >= due:
                    time.sleep(0.002)  # pacing of the fixed rate
                for i, a in enumerate(attackers):
                    if a.closed:  # sent away: a fresh connection takes its place
                        a.close()
                        attackers[i] = Attacker(srv.port)
                        attackers[i].next_sid = 1
                        sent["connections"] += 1
        finally:
            for a in attackers:
                a.close()
        # Work done for calls the client cancelled: Lookups that ran (the probe's are OK too).
        sent["lookups_ok"] = metric(srv, "shardrank_rpc_requests_total", method=LOOKUP, code="OK")
        sent["lookups_cancelled"] = metric(srv, "shardrank_rpc_requests_total", method=LOOKUP, code="CANCELLED")
        return sent

    f = under_attack(srv, lookup_body, f"rapid reset, {connections} connection(s)", attack, connections=connections)
    assert f["resets"] > 0.8 * RESET_RATE[connections] * ATTACK_SECONDS, "the attack did not keep its rate"


def test_continuation_flood(server_factory, lookup_body):
    """HEADERS without END_HEADERS, then CONTINUATION frames forever (the 2024 CONTINUATION flood;
    CVE-2024-28182 for nghttp2): nghttp2 closes the connection after 8 CONTINUATIONs (Debian's
    1.52.0-1+deb12u3 has the 1.61 fix), long before the header timeout (10 s); the attacker
    reconnects and goes on."""
    srv = server_factory(shard_args())
    filler = literal(b"x-flood", b"a" * 4000)
    cont = frame(CONTINUATION, 0, 1, filler * 4)  # 16,036 bytes: under SETTINGS_MAX_FRAME_SIZE (16 KiB)

    # One connection first: closed after a few frames, well inside the header timeout (its
    # GOAWAY is often lost: the server closes with the flood unread, which resets the connection).
    a = Attacker(srv.port, read=False)
    a.out += frame(HEADERS, 0, 1, b"\x83\x86") + cont * 100
    t0 = time.monotonic()
    while a.out and a.pump() and time.monotonic() - t0 < 2:
        a.wait_closed(0.01)
    assert a.wait_closed(3), "the server kept reading CONTINUATION frames"
    assert time.monotonic() - t0 < 2
    a.close()

    stats = {"connections": 0, "bytes_sent": 0}

    def attack(until):
        while time.monotonic() < until:
            a = Attacker(srv.port)
            a.out += frame(HEADERS, 0, 1, b"\x83\x86")
            try:
                pace([a], lambda _: cont * 8, until)
            finally:
                stats["connections"] += 1
                stats["bytes_sent"] += a.sent
                a.close()
        stats["kib_sent_per_connection"] = round(stats["bytes_sent"] / max(1, stats["connections"]) / 1024, 1)
        return stats

    f = under_attack(srv, lookup_body, "CONTINUATION flood", attack)
    print("ABUSE CONTINUATION flood: server CPU per connection "
          f"{1000 * f['server_cpu_s'] / max(1, f['connections']):.2f} ms")
    assert f["connections"] > 10


def bomb_block(first):
    """A request header block of HEADERS + 8 CONTINUATIONs (9 x 16 KiB): on the connection's
    first block a 4,000-byte header enters the HPACK dynamic table (index 62), and every other
    byte of the block is a one-byte reference to it: ~147,000 fields of 4 KiB, ~590 MB decoded."""
    head = b"\x83\x86" + literal(b":path", LOOKUP.encode()) + literal(b":authority", b"localhost") \
        + literal(b"content-type", b"application/grpc")
    if first:
        head += literal(b"x-bomb", b"b" * 4000, first=0x40)
    size = 16 << 10
    frames = [head + b"\xbe" * (size - len(head))] + [b"\xbe" * size] * 8
    return frames


def test_hpack_bomb(server_factory, lookup_body):
    """HPACK bomb: header blocks whose one-byte fields each expand to a 4 KiB dynamic-table entry.
    What the server spends per block must stay small: the header list is over its limit (8 KiB)
    after two fields, and the rest of the block must not be inspected field by field."""
    srv = server_factory(shard_args())
    stats = {"blocks": 0, "connections": 0}

    def build(a):
        frames = bomb_block(a.first)
        a.first = False
        sid = a.next_sid
        a.next_sid += 2
        stats["blocks"] += 1
        out = frame(HEADERS, END_STREAM, sid, frames[0])
        for i, f in enumerate(frames[1:]):
            out += frame(CONTINUATION, END_HEADERS if i == len(frames) - 2 else 0, sid, f)
        return out

    def attack(until):
        a = None
        try:
            while time.monotonic() < until:
                a = Attacker(srv.port)
                stats["connections"] += 1
                a.first, a.next_sid = True, 1
                pace([a], build, until, backlog=1)  # one block at a time
                a.close()
        finally:
            if a:
                a.close()
        return stats

    f = under_attack(srv, lookup_body, "HPACK bomb", attack)
    per_block_ms = 1000 * f["server_cpu_s"] / max(1, f["blocks"])
    print(f"ABUSE HPACK bomb: {f['blocks']} blocks of 147 KiB (~590 MB decoded each), server CPU {per_block_ms:.2f} ms per block")
    assert f["blocks"] >= 20, "the attack did not get going"
    assert per_block_ms < 20, f"{per_block_ms:.1f} ms of server CPU per 147 KiB header block"


@pytest.mark.parametrize("kind", ["SETTINGS", "PING"])
def test_settings_and_ping_floods_from_a_peer_that_never_reads(server_factory, lookup_body, kind):
    """SETTINGS (each needs an ACK) or PING (each needs an ACK) frames as fast as the socket takes
    them, never reading: the server stops reading while its socket is backed up, and nghttp2 sends
    the connection away once 1,000 ACKs wait (`nghttp2_option_set_max_outbound_ack`): the ACKs a
    connection can make the server hold are bounded; the attacker reconnects and goes on."""
    srv = server_factory(shard_args())
    one = frame(SETTINGS, 0, 0, struct.pack(">HI", 0x2, 0)) if kind == "SETTINGS" else frame(PING, 0, 0, b"12345678")
    burst = one * 4096
    stats = {"connections": 0, "frames_sent": 0}

    def attack(until):
        while time.monotonic() < until:
            a = Attacker(srv.port, read=False)
            try:
                pace([a], lambda _: burst, until)
            finally:
                stats["connections"] += 1
                stats["frames_sent"] += a.sent // len(one)
                a.close()
        return stats

    f = under_attack(srv, lookup_body, f"{kind} flood, never reading", attack)
    assert f["connections"] >= 2, "the server never sent the flooding connection away"


def test_window_update_flood(server_factory, lookup_body):
    """WINDOW_UPDATE frames (increment 1, connection and a stream) as fast as the socket takes
    them, reading what comes back: nothing to hold, only CPU per frame."""
    srv = server_factory(shard_args())
    burst = (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1))) * 2048
    opening = frame(HEADERS, END_HEADERS, 1, REQUEST_BLOCK)  # stream 1 open, its request never ended
    stats = {"frames_sent": 0}

    def attack(until):
        a = Attacker(srv.port)
        a.out += opening
        try:
            pace([a], lambda _: burst, until)
        finally:
            stats["frames_sent"] = (a.sent - len(opening)) // 13
            stats["connection_closed"] = a.closed
            a.close()
        return stats

    f = under_attack(srv, lookup_body, "WINDOW_UPDATE flood", attack)
    print(f"ABUSE WINDOW_UPDATE flood: {f['frames_sent'] / f['seconds'] / 1000:.0f}k frames/s, "
          f"server CPU {1e6 * f['server_cpu_s'] / max(1, f['frames_sent']):.2f} us per frame")
    assert f["frames_sent"] > 100_000


ONE_MIB_IDS = list(range(1000)) * 4  # a 1 MiB answer from the 64-dim float32 table


def test_zero_window(server_factory, lookup_body, pb):
    """A peer that grants no stream window (SETTINGS_INITIAL_WINDOW_SIZE 0), asking for 200
    answers of 1 MiB: the connection holds at most --max-connection-queued-bytes (64 MiB), the
    rest fail RESOURCE_EXHAUSTED at once."""
    srv = server_factory(shard_args())
    body = pb.shard_pb2.LookupRequest(table="items", ids=ONE_MIB_IDS).SerializeToString()
    stats = {}

    def attack(until):
        c = RawH2(srv.port)
        try:
            c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            c.sock.sendall(c.conn.data_to_send())
            sids = [c.start(LOOKUP, body) for _ in range(200)]
            while time.monotonic() < until and not c.closed:
                c.pump(0.05)
            stats["refused"] = sum(1 for s in sids if c.responses[s].trailer("grpc-status") == "8")
            stats["held"] = sum(1 for s in sids if not c.responses[s].ended and c.responses[s].reset is None)
        finally:
            c.close()
        return stats

    f = under_attack(srv, lookup_body, "zero window", attack)
    assert f["held"] <= 66 and f["refused"] >= 200 - 66, f  # 64 MiB of ~1,000,000-byte answers


def test_slow_reader(server_factory, lookup_body, pb):
    """A peer that opens every window (2^31-1) and asks for 100 answers of 4 MiB, then reads
    nothing: the server stops reading the connection while its socket is backed up, and what it
    holds is bounded by --max-connection-queued-bytes (64 MiB)."""
    srv = server_factory(shard_args())
    body = grpc_frame(pb.shard_pb2.LookupRequest(table="items", ids=ONE_MIB_IDS * 4).SerializeToString())
    stats = {}

    def attack(until):
        c = RawH2(srv.port)
        try:
            c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            c.conn.increment_flow_control_window(2**31 - 1 - 65535)
            c.sock.sendall(c.conn.data_to_send())
            # One call first: the server's SETTINGS and window (16 MiB) are known before the
            # 100 requests (3 MiB) are framed at once.
            assert c.call(LOOKUP, lookup_body).trailer("grpc-status") == "0"
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sock.setblocking(False)
            out = bytearray()
            for _ in range(100):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, c.request_headers(LOOKUP), end_stream=False)
                for i in range(0, len(body), 16384):
                    c.conn.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
                out += c.conn.data_to_send()
            stats["request_bytes"] = len(out)
            sent = 0
            while time.monotonic() < until:
                try:
                    sent += c.sock.send(out[sent:]) if sent < len(out) else 0
                except BlockingIOError:
                    pass
                except OSError:
                    break
                time.sleep(0.01)  # the attacker's own pacing: it only ever writes
            stats["request_bytes_taken"] = sent
        finally:
            c.close()
        return stats

    under_attack(srv, lookup_body, "slow reader", attack)


def test_slowloris_streams_never_ended(server_factory, lookup_body):
    """Slowloris: 256 streams (the stream limit) on one connection, each a Lookup whose 5-byte
    prefix announces a 4 MiB message that keeps coming and never ends, as fast as the stream
    windows allow. What the server buffers for unfinished requests on one connection must stay
    within the per-connection bound (64 MiB), not grow to 256 x 4 MiB = 1 GiB."""
    srv = server_factory(shard_args())
    stats = {"data_bytes": 0}

    def attack(until):
        c = RawH2(srv.port)
        try:
            sids = [c.start(LOOKUP, struct.pack(">BI", 0, (4 << 20) - 5), framed=False, end=False) for _ in range(256)]
            chunk = b"\0" * 16384
            while time.monotonic() < until and not c.closed:
                progressed = False
                for s in sids:
                    if s not in c.conn.streams or c.responses[s].reset is not None or c.responses[s].ended:
                        continue
                    room = min(c.conn.local_flow_control_window(s), 4 * len(chunk))
                    while room >= len(chunk):
                        c.conn.send_data(s, chunk, end_stream=False)
                        stats["data_bytes"] += len(chunk)
                        room -= len(chunk)
                        progressed = True
                try:
                    c.sock.settimeout(2)
                    c.sock.sendall(c.conn.data_to_send())
                except OSError:
                    break
                c.pump(0.001 if progressed else 0.01)  # (pump(0) would read a closed socket)
            stats["streams_failed"] = sum(1 for s in sids if c.responses[s].reset is not None or c.responses[s].ended)
            stats["mib_sent"] = round(stats.pop("data_bytes") / MIB, 1)
        finally:
            c.close()
        return stats

    under_attack(srv, lookup_body, "slowloris, 256 unended streams", attack)


def test_many_idle_connections(server_factory, lookup_body):
    """The issue's 15,000 idle connections (preface + SETTINGS, then nothing), opened in batches
    of 200 (the listen backlog is 256: a fuller one drops SYNs, retried after a second), each
    batch once the server answered the last (its SETTINGS, or closing it), against a shard with
    --max-connections 15000 (the default is 10,000; the descriptor limit here, 20,000, leaves
    17,500): the probe's connection and 14,999 of them are kept, the last one is closed at once."""
    import resource
    import select

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(15_000, soft - 200)  # this process needs a descriptor per connection too
    cap = 15_000
    srv = server_factory(shard_args("--max-connection-idle-seconds", "0", "--max-connections", str(cap)))
    stats = {"wanted": want}

    def attack(until):
        socks, kept = [], 0
        t0 = time.monotonic()
        try:
            while len(socks) < want:
                batch = []
                for _ in range(min(200, want - len(socks))):
                    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
                    batch.append(s)
                socks += batch
                poller = select.poll()  # select() takes no descriptor past 1023
                for s in batch:
                    poller.register(s, select.POLLIN)
                pending, deadline = {s.fileno(): s for s in batch}, time.monotonic() + 10
                while pending and time.monotonic() < deadline:
                    for fd, _ in poller.poll(500):
                        s = pending.pop(fd, None)
                        if s is None:
                            continue
                        poller.unregister(fd)
                        try:
                            kept += 1 if s.recv(1 << 16) else 0
                        except OSError:
                            pass
                assert not pending, f"{len(pending)} connections got no answer within 10 s"
            stats["opened"], stats["kept_open"] = len(socks), kept
            stats["open_seconds"] = round(time.monotonic() - t0, 1)
            stats["server_rss_mib_all_open"] = round(srv.rss_bytes() / MIB, 1)
        finally:
            for s in socks:
                s.close()
        return stats

    f = under_attack(srv, lookup_body, f"{want} idle connections", attack, connections=want, seconds=8)
    print(f"ABUSE idle connections: {f['rss_growth_mib'] * 1024 / max(1, f['kept_open']):.1f} KiB per connection kept")
    assert f["opened"] == want
    assert f["kept_open"] == min(want, cap - 1), "the server did not keep exactly --max-connections (one is the probe's)"


def test_garbage_and_oversize_frames(server_factory, lookup_body):
    """Connections that send garbage instead of a preface, a frame header announcing 16 MiB
    (over SETTINGS_MAX_FRAME_SIZE), a frame of an unknown type of 16 KiB, or random bytes after
    the preface, in a loop: each is closed at once, nothing of the announced 16 MiB is buffered."""
    srv = server_factory(shard_args())
    rnd = os.urandom(1 << 16)
    payloads = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + rnd[:4096],
        PREFACE + frame(SETTINGS, 0, 0) + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + rnd,  # 16 MiB DATA announced
        PREFACE + frame(SETTINGS, 0, 0) + frame(0xfa, 0, 0, rnd[:16000]) * 8 + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x",
        PREFACE + rnd,
    ]
    stats = {"connections": 0, "closed_by_server": 0}
    t0 = time.monotonic()
    for p in payloads:  # each closed by the server, and quickly
        a = Attacker(srv.port, read=False)
        a.out = bytearray(p)
        a.pump()
        assert a.wait_closed(2), f"a connection that sent {p[:40]!r}... was kept"
        a.close()
    assert time.monotonic() - t0 < 3

    def attack(until):
        i = 0
        while time.monotonic() < until:
            a = Attacker(srv.port, read=False)
            a.out = bytearray(payloads[i % len(payloads)])
            i += 1
            a.pump()
            stats["connections"] += 1
            stats["closed_by_server"] += a.wait_closed(1)
            a.close()
        return stats

    f = under_attack(srv, lookup_body, "garbage and oversize frames", attack)
    assert f["closed_by_server"] == f["connections"]

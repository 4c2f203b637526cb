"""A stock gRPC client (Python grpcio from PyPI) calls ShardRank with stubs generated from the
committed .proto files: bytes, dtypes, status codes, deadlines, cancellation, limits, health and
graceful shutdown."""
import signal
import struct
import threading
import time

import grpc
import numpy as np
import pytest


def expected_rows(ids, dim):
    """The synthetic table's definition: x[j] = Float((i*31 + j) % 1000) / 1000 in float32."""
    ids = np.asarray(ids, dtype=np.uint64)
    j = np.arange(dim, dtype=np.uint64)
    v = (ids[:, None] * np.uint64(31) + j[None, :]) % np.uint64(1000)
    return v.astype(np.float32) / np.float32(1000)


def stub(pb, target):
    ch = grpc.insecure_channel(target)
    return ch, pb.shard_pb2_grpc.ShardStub(ch)


def test_health_check_serving(pb, shard):
    with grpc.insecure_channel(shard.target) as ch:
        h = pb.health_pb2_grpc.HealthStub(ch)
        r = h.Check(pb.health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert r.status == pb.health_pb2.HealthCheckResponse.SERVING
        r = h.Check(pb.health_pb2.HealthCheckRequest(service="shardrank.v1.Shard"), timeout=5)
        assert r.status == pb.health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            h.Check(pb.health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_lookup_bytes_exact(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        ids = [0, 1, 999, 5000, 7, 7, 123456789]
        r = s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids), timeout=5)
        assert r.dim == 64
        assert r.dtype == pb.common_pb2.DTYPE_F32
        assert list(r.missing_ids) == [5000, 123456789]
        found = [i for i in ids if i < 1000]
        assert r.vectors == expected_rows(found, 64).astype("<f4").tobytes()
        assert r.version == 1


def test_lookup_256_ids_byte_for_byte(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        ids = list(range(0, 1000, 3))[:256]
        assert len(ids) == 256
        r = s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids), timeout=5)
        assert len(r.vectors) == 256 * 64 * 4
        assert r.vectors == expected_rows(ids, 64).astype("<f4").tobytes()


def test_lookup_f16_and_int8(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        ids = [3, 500, 998]
        want = expected_rows(ids, 64)
        r = s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids, dtype=pb.common_pb2.DTYPE_F16), timeout=5)
        assert r.dtype == pb.common_pb2.DTYPE_F16
        assert r.vectors == want.astype("<f2").tobytes()
        r = s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids, dtype=pb.common_pb2.DTYPE_INT8), timeout=5)
        assert r.dtype == pb.common_pb2.DTYPE_INT8
        q = np.frombuffer(r.vectors, dtype=np.int8).reshape(3, 64).astype(np.float32)
        scales = np.frombuffer(r.scales, dtype="<f4")
        assert scales.shape == (3,)
        assert np.allclose(q * scales[:, None], want, atol=scales.max() / 2 + 1e-7)


def test_unknown_table_is_not_found(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            s.Lookup(pb.shard_pb2.LookupRequest(table="users", ids=[1]), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert "users" in e.value.details()


def test_info(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        r = s.Info(pb.shard_pb2.InfoRequest(), timeout=5)
        assert r.source == "synthetic:1000x64"
        assert [(t.name, t.dim, t.rows) for t in r.tables] == [("items", 64, 1000)]


def test_search_matches_bruteforce(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        rng = np.random.default_rng(7)
        q = rng.standard_normal((3, 64)).astype(np.float32)
        r = s.Search(pb.shard_pb2.SearchRequest(table="items", queries=q.astype("<f4").tobytes(), dim=64, k=10,
                                                exclude_ids=[0, 1]), timeout=10)
        table = expected_rows(list(range(1000)), 64)
        scores = q @ table.T
        scores[:, [0, 1]] = -np.inf
        assert len(r.results) == 3
        for qi, hits in enumerate(r.results):
            order = sorted(range(1000), key=lambda i: (-scores[qi, i], i))[:10]
            assert list(hits.ids) == order
            assert np.allclose(list(hits.scores), scores[qi, order], rtol=1e-4, atol=1e-4)


def test_unimplemented_method_and_service(pb, shard):
    with grpc.insecure_channel(shard.target) as ch:
        for path, word in [("/shardrank.v1.Shard/Nope", "Nope"), ("/no.such.Service/Call", "no.such.Service")]:
            call = ch.unary_unary(path, request_serializer=lambda x: x, response_deserializer=lambda x: x)
            with pytest.raises(grpc.RpcError) as e:
                call(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert word in e.value.details()


def test_garbage_request_is_invalid_argument(pb, shard):
    with grpc.insecure_channel(shard.target) as ch:
        call = ch.unary_unary("/shardrank.v1.Shard/Lookup", request_serializer=lambda x: x, response_deserializer=lambda x: x)
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff\xff\xff\xff", timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "LookupRequest" in e.value.details()


def test_oversize_message_rejected_without_buffering(pb, shard):
    with grpc.insecure_channel(shard.target, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary("/shardrank.v1.Shard/Lookup", request_serializer=lambda x: x, response_deserializer=lambda x: x)
        rss_before = shard.rss_bytes()
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            call(b"\x00" * (64 << 20), timeout=20)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "exceeds the limit" in e.value.details()
        assert time.monotonic() - t0 < 10
        # The server never held the 64 MiB message.
        assert shard.rss_bytes() - rss_before < (16 << 20)
        # And the connection still works.
        r = pb.shard_pb2_grpc.ShardStub(ch).Info(pb.shard_pb2.InfoRequest(), timeout=5)
        assert r.tables[0].name == "items"


def test_lookup_batch_limit(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=list(range(100_001))), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "limit" in e.value.details()


def test_search_validation(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        cases = [
            (dict(table="items", queries=b"\x00" * 12, dim=64, k=10), "multiple"),
            (dict(table="items", queries=np.zeros(64, dtype="<f4").tobytes(), dim=64, k=0), "k=0"),
            (dict(table="items", queries=np.full(64, np.nan, dtype="<f4").tobytes(), dim=64, k=5), "NaN"),
            (dict(table="items", queries=np.zeros(32, dtype="<f4").tobytes(), dim=32, k=5), "dim"),
        ]
        for kwargs, word in cases:
            with pytest.raises(grpc.RpcError) as e:
                s.Search(pb.shard_pb2.SearchRequest(**kwargs), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kwargs
            assert word in e.value.details()


def slow_search(pb, dim=64, queries=512):
    q = np.ones((queries, dim), dtype="<f4")
    return pb.shard_pb2.SearchRequest(table="items", queries=q.tobytes(), dim=dim, k=10)


def test_deadline_exceeded_on_time(pb, big_shard):
    ch, s = stub(pb, big_shard.target)
    with ch:
        s.Info(pb.shard_pb2.InfoRequest(), timeout=5)  # connect first
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            s.Search(slow_search(pb), timeout=0.2)
        elapsed = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.19 <= elapsed < 0.3, elapsed


def test_cancellation_stops_server_work(pb, big_shard):
    ch, s = stub(pb, big_shard.target)
    with ch:
        s.Info(pb.shard_pb2.InfoRequest(), timeout=5)
        fut = s.Search.future(slow_search(pb), timeout=60)
        # Wait until the server is visibly working on it (CPU time rising), not a guessed time.
        start, deadline = big_shard.cpu_seconds(), time.monotonic() + 10
        while big_shard.cpu_seconds() - start < 0.1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert big_shard.cpu_seconds() - start >= 0.1, "the search should be running"
        assert not fut.done()
        assert fut.cancel()
        # Then until its CPU time stops rising (two readings 100 ms apart within 10 ms), and check
        # it stays idle over a measured half second.
        last, deadline = big_shard.cpu_seconds(), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = big_shard.cpu_seconds()
            if now - last < 0.01:
                break
            last = now
        idle0 = big_shard.cpu_seconds()
        time.sleep(0.5)   # the measurement window, not a synchronisation
        assert big_shard.cpu_seconds() - idle0 < 0.1, "the server kept working after the cancel"
        assert fut.cancelled()
        # The server still answers.
        assert s.Info(pb.shard_pb2.InfoRequest(), timeout=5).tables[0].rows == 200000


def test_server_deadline_enforced_without_client_help(pb, big_shard):
    """grpc-timeout alone (the client waits longer) ends the call at the server's deadline."""
    from raw_h2 import RawH2
    conn = RawH2(big_shard.port)
    req = slow_search(pb).SerializeToString()
    t0 = time.monotonic()
    resp = conn.call("/shardrank.v1.Shard/Search", req, extra_headers=[("grpc-timeout", "150m")], wait=10)
    elapsed = time.monotonic() - t0
    assert resp.trailer("grpc-status") == "4", resp.headers
    assert 0.14 <= elapsed < 0.35, elapsed
    conn.close()


def test_metadata_binary_roundtrip_accepted(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        r, call = s.Lookup.with_call(pb.shard_pb2.LookupRequest(table="items", ids=[1]), timeout=5,
                                     metadata=[("x-trace-bin", b"\x00\x01\xfe\xff"), ("x-user", "u1")])
        assert call.code() == grpc.StatusCode.OK
        assert len(r.vectors) == 256


def test_many_concurrent_calls(pb, shard):
    ch, s = stub(pb, shard.target)
    with ch:
        futs = [s.Lookup.future(pb.shard_pb2.LookupRequest(table="items", ids=[i % 1000, (i * 7) % 1000]), timeout=10)
                for i in range(500)]
        for i, f in enumerate(futs):
            r = f.result()
            assert r.vectors == expected_rows([i % 1000, (i * 7) % 1000], 64).astype("<f4").tobytes()


def test_sigterm_not_serving_then_clean_exit(pb, server_factory):
    srv = server_factory(["shard", "--synthetic", "100x8", "--port", "0"])
    ch = grpc.insecure_channel(srv.target)
    h = pb.health_pb2_grpc.HealthStub(ch)
    seen = []
    done = threading.Event()

    def watch():
        try:
            for r in h.Watch(pb.health_pb2.HealthCheckRequest(service=""), timeout=20):
                seen.append(r.status)
        except grpc.RpcError as e:
            seen.append(e.code())
        done.set()
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen[:1] == [pb.health_pb2.HealthCheckResponse.SERVING]
    srv.proc.send_signal(signal.SIGTERM)
    assert done.wait(10), "Watch did not end after SIGTERM"
    assert pb.health_pb2.HealthCheckResponse.NOT_SERVING in seen, seen
    assert srv.proc.wait(timeout=10) == 0
    ch.close()


def test_in_flight_limit_gives_resource_exhausted(pb, server_factory):
    srv = server_factory(["shard", "--synthetic", "200000x64", "--port", "0", "--workers", "1", "--max-in-flight", "2",
                          "--admin-port", "0"])
    import re
    from test_metrics import scrape, value
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    ch, s = stub(pb, srv.target)
    with ch:
        s.Info(pb.shard_pb2.InfoRequest(), timeout=5)
        slow = [s.Search.future(slow_search(pb, queries=64), timeout=30) for _ in range(2)]
        # Wait until both slow calls hold their slots (the server's in-flight gauge says 2).
        deadline = time.monotonic() + 10
        while (value(scrape(admin), "shardrank_rpc_in_flight") or 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert value(scrape(admin), "shardrank_rpc_in_flight") == 2
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            s.Search(slow_search(pb, queries=1), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - t0 < 0.5, "overload must be answered at once"
        for f in slow:
            f.cancel()


def test_open_watch_streams_count_toward_the_in_flight_limit(pb, server_factory):
    """A streaming call (health Watch) holds an in-flight slot while its stream is open, so
    `--max-in-flight` bounds them too; the slot comes back when the stream ends."""
    import re
    from test_metrics import scrape, value
    srv = server_factory(["shard", "--synthetic", "100x8", "--port", "0", "--max-in-flight", "2", "--admin-port", "0"])
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    ch = grpc.insecure_channel(srv.target)
    h = pb.health_pb2_grpc.HealthStub(ch)
    s = pb.shard_pb2_grpc.ShardStub(ch)
    watches = [h.Watch(pb.health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(2)]
    for w in watches:
        assert next(w).status == pb.health_pb2.HealthCheckResponse.SERVING   # both streams are open
    with pytest.raises(grpc.RpcError) as e:
        s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[1]), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 calls in flight" in e.value.details()
    watches[0].cancel()
    deadline = time.monotonic() + 10
    while (value(scrape(admin), "shardrank_rpc_in_flight") or 0) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[1]), timeout=5).dim == 8
    watches[1].cancel()
    ch.close()

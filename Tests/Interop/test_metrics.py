"""Every process serves Prometheus text metrics on its admin port: requests by method and status,
latency histograms, in-flight, and component gauges (table-set version for a shard)."""
import re
import socket
import time
import urllib.request

import grpc
import pytest


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        return r.read().decode()


def value(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_shard_metrics(pb, server_factory):
    srv = server_factory(["shard", "--synthetic", "100x8", "--port", "0", "--admin-port", "0"])
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb.shard_pb2_grpc.ShardStub(ch)
        for _ in range(7):
            stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[1, 2]), timeout=5)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                stub.Lookup(pb.shard_pb2.LookupRequest(table="nope", ids=[1]), timeout=5)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/shardrank.v1.Shard/Nope")(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    text = scrape(admin)
    # Calls that resolved to no method are counted under method="unknown", with no histogram.
    assert value(text, "shardrank_rpc_requests_total", method="unknown", code="UNIMPLEMENTED") == 2
    assert value(text, "shardrank_rpc_duration_seconds_count", method="unknown") is None
    # Every served method's OK counter and histogram exist from the start, at 0 until used.
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Shard/Search", code="OK") == 0
    assert value(text, "shardrank_rpc_duration_seconds_count", method="/shardrank.v1.Shard/Search") == 0
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Shard/Lookup", code="OK") == 7
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Shard/Lookup", code="NOT_FOUND") == 3
    assert value(text, "shardrank_rpc_duration_seconds_count", method="/shardrank.v1.Shard/Lookup") == 10
    assert value(text, "shardrank_rpc_in_flight") == 0
    assert value(text, "shardrank_table_set_version") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"


def test_request_ids_in_structured_logs_and_forwarded(pb, tmp_path, server_factory):
    """A call's x-request-id appears in the server's structured log line for it, and the
    coordinator forwards it to the shard calls it makes for that request."""
    import json
    from tables_support import build, write_input
    from conftest import shardrank_bin
    inp = tmp_path / "in"
    write_input(str(inp), n_items=100, n_users=10)
    assert build(shardrank_bin(), str(inp), str(tmp_path / "t"), 1).returncode == 0
    shard = server_factory(["shard", "--tables", str(tmp_path / "t"), "--port", "0", "--log-level", "debug"])
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({"shards": [[shard.target]]}))
    coord = server_factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "debug"])
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    with grpc.insecure_channel(coord.target) as ch:
        recommender_pb2_grpc.RecommenderStub(ch).Recommend(recommender_pb2.RecommendRequest(user_id=3, k=5), timeout=5,
                                                           metadata=[("x-request-id", "req-7f3a")])
    coord.stop()
    shard.stop()
    clog = coord.proc.stderr.read()
    slog = shard.proc.stderr.read()
    assert "request_id=req-7f3a" in clog and "method=/shardrank.v1.Recommender/Recommend" in clog
    assert "request_id=req-7f3a" in slog and "method=/shardrank.v1.Shard/Search" in slog


def test_connection_metrics(pb, server_factory):
    """Open and refused gRPC connections and the bytes queued for sending are exported: two
    connections held open count 2; with --max-connections 2 a third is refused and counted."""
    srv = server_factory(["shard", "--synthetic", "100x8", "--port", "0", "--admin-port", "0", "--max-connections", "2"])
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    assert value(scrape(admin), "shardrank_connections_open") == 0
    channels = [grpc.insecure_channel(srv.target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(2)]
    try:
        for ch in channels:
            pb.shard_pb2_grpc.ShardStub(ch).Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[1]), timeout=5)
        text = scrape(admin)
        assert value(text, "shardrank_connections_open") == 2
        assert value(text, "shardrank_connections_refused_total") == 0
        assert value(text, "shardrank_queued_bytes") == 0
        # A third connection is closed by the server at once, before anything is read.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    if s.recv(4096) == b"":
                        break
                except ConnectionResetError:
                    break
            else:
                pytest.fail("the connection over the cap was not closed")
        assert value(scrape(admin), "shardrank_connections_refused_total") == 1
    finally:
        for ch in channels:
            ch.close()

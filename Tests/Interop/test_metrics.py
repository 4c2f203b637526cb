"""Every process serves Prometheus text metrics on its admin port: requests by method and status,
latency histograms, in-flight, and component gauges (table-set version for a shard)."""
import re
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
    text = scrape(admin)
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Shard/Lookup", code="OK") == 7
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Shard/Lookup", code="NOT_FOUND") == 3
    assert value(text, "shardrank_rpc_duration_seconds_count", method="/shardrank.v1.Shard/Lookup") == 10
    assert value(text, "shardrank_rpc_in_flight") == 0
    assert value(text, "shardrank_table_set_version") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"

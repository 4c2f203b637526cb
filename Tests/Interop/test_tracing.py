"""Tracing across the fan-out with real processes: a Recommend sent by grpcio with a sampled W3C
`traceparent` yields span lines (JSON on stderr) from the coordinator — the server span, one per
pipeline stage, one per shard call — and from every shard called — one per handler — all with the
trace id the client sent and with consistent parent links. Tracing off writes nothing."""
import json

import grpc
import pytest

from conftest import shardrank_bin
from tables_support import build, write_input

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
STAGES = ["stage.retrieve", "stage.filter", "stage.gather", "stage.rank", "stage.post_rank"]


@pytest.fixture(scope="module")
def rpb(pb):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    return recommender_pb2, recommender_pb2_grpc


def start_cluster(tmp_path, factory, rate):
    write_input(str(tmp_path / "input"), n_items=600, n_users=60)
    root = tmp_path / "tables"
    out = build(shardrank_bin(), str(tmp_path / "input"), str(root), 2)
    assert out.returncode == 0, out.stderr
    flags = ["--trace-sample-rate", rate] if rate is not None else []
    shards = [factory(["shard", "--tables", str(root), "--shard", str(s), "--of", "2", "--port", "0", "--log-level", "warning", *flags])
              for s in range(2)]
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps({"tables": str(root), "shards": [[s.target] for s in shards],
                                "coordinator": {"health_interval_ms": 100, "default_deadline_ms": 2000}}))
    coordinator = factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning", *flags])
    return shards, coordinator


def recommend(rpb, coordinator, user, metadata=()):
    with grpc.insecure_channel(coordinator.target) as ch:
        return rpb[1].RecommenderStub(ch).Recommend(rpb[0].RecommendRequest(user_id=user, k=10), metadata=list(metadata), timeout=5)


def spans_of(server):
    """Stops `server` and returns the span lines it wrote to stderr."""
    assert server.stop() == 0
    spans = []
    for line in server.proc.stderr.read().splitlines():
        if line.startswith('{"span":'):
            spans.append(json.loads(line)["span"])
    return spans


def test_one_recommend_yields_a_span_per_stage_and_per_shard_call_with_the_clients_trace_id(rpb, tmp_path, server_factory):
    # A rate too small to sample anything by itself: only the client's sampled traceparent is traced.
    shards, coordinator = start_cluster(tmp_path, server_factory, "0.000000001")
    r = recommend(rpb, coordinator, 7, [("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01"), ("tracestate", "vendor=abc")])
    assert len(r.items) == 10 and not r.coverage.degraded
    # Unsampled and absent contexts are not recorded anywhere.
    recommend(rpb, coordinator, 8, [("traceparent", f"00-{'1' * 32}-{CLIENT_SPAN}-00")])
    recommend(rpb, coordinator, 9)
    coord = spans_of(coordinator)
    per_shard = [spans_of(s) for s in shards]

    everything = coord + [s for l in per_shard for s in l]
    assert {s["trace_id"] for s in everything} == {TRACE_ID}, "only the sampled request is traced, under the client's trace id"

    roots = [s for s in coord if s["kind"] == "server"]
    assert len(roots) == 1
    root = roots[0]
    assert root["name"] == "shardrank.v1.Recommender/Recommend" and root["status"] == "OK"
    assert root["parent_span_id"] == CLIENT_SPAN and root["tracestate"] == "vendor=abc"
    assert root["service"] == "coordinator"

    stages = [s for s in coord if s["kind"] == "internal"]
    assert [s["name"] for s in stages] == STAGES
    assert all(s["parent_span_id"] == root["span_id"] for s in stages)
    starts = [s["start_unix_nano"] for s in stages]
    assert starts == sorted(starts) and starts[0] >= root["start_unix_nano"]
    assert sum(s["duration_us"] for s in stages) <= root["duration_us"]

    calls = [s for s in coord if s["kind"] == "client"]
    stage_ids = {s["span_id"] for s in stages}
    assert calls and all(c["parent_span_id"] in stage_ids for c in calls), "every shard call hangs under the stage it ran in"
    retrieve = stages[0]["span_id"]
    searches = [c for c in calls if c["attributes"]["rpc.method"] == "Search"]
    assert sorted(c["attributes"]["shardrank.shard"] for c in searches) == [0, 1], "a Search span per shard"
    assert all(c["parent_span_id"] == retrieve for c in searches)

    # Each shard wrote one server span per call it got, parented to that call's span.
    calls_by_id = {c["span_id"]: c for c in calls}
    for shard_index, spans in enumerate(per_shard):
        assert spans, f"shard {shard_index} wrote no span"
        for s in spans:
            assert s["kind"] == "server" and s["service"] == f"shard-{shard_index}"
            call = calls_by_id.get(s["parent_span_id"])
            assert call is not None, f"shard span {s} has no matching call span"
            assert call["attributes"]["shardrank.shard"] == shard_index == s["attributes"]["shardrank.shard"]
            assert s["name"] == "shardrank.v1.Shard/" + call["attributes"]["rpc.method"]
            assert s["duration_us"] <= call["duration_us"]
    answered = {s["parent_span_id"] for l in per_shard for s in l}
    assert answered == set(calls_by_id), "every shard call has the shard's own span"
    assert len({s["span_id"] for s in everything}) == len(everything), "span ids are unique"


def test_tracing_off_writes_no_spans_whatever_the_client_sends(rpb, tmp_path, server_factory):
    shards, coordinator = start_cluster(tmp_path, server_factory, None)
    r = recommend(rpb, coordinator, 7, [("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01")])
    assert len(r.items) == 10
    assert spans_of(coordinator) == []
    assert all(spans_of(s) == [] for s in shards)


def test_a_bad_sample_rate_is_a_usage_error():
    import subprocess
    for value in ["-0.1", "1.5", "nan"]:
        out = subprocess.run([shardrank_bin(), "shard", "--synthetic", "10x4", "--trace-sample-rate", value],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 64, out
        assert "--trace-sample-rate must be in 0...1" in out.stderr


def test_recommend_trace_prints_the_trace_id_the_spans_carry(rpb, tmp_path, server_factory):
    import subprocess
    shards, coordinator = start_cluster(tmp_path, server_factory, "0.000000001")
    out = subprocess.run([shardrank_bin(), "recommend", "--target", coordinator.target, "--user", "7", "--trace"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    trace_id = out.stderr.split("trace_id ", 1)[1].split()[0]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    coord = spans_of(coordinator)
    assert {s["trace_id"] for s in coord} == {trace_id}
    assert [s["name"] for s in coord if s["kind"] == "server"] == ["shardrank.v1.Recommender/Recommend"]
    assert all({s["trace_id"] for s in spans_of(sh)} == {trace_id} for sh in shards)

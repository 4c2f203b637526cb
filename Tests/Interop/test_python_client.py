"""The Python client package (clients/python), installed the way a user installs it (pip, into a
fresh directory, offline), against real shard and coordinator processes: its committed stubs are
what proto/ generates; it imports alone and beside other copies of the same protos; lookups route
every id to its shard (the servers' hash) and come back in the caller's order; search merges the
shards; recommend/rank/similar answer what the raw stubs answer; recorded events are excluded;
errors carry the status name; several coordinators are routed with the Swift CoordinatorRing; and
the README's Python snippet runs on the README's 2-shard cluster."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from conftest import ROOT, shardrank_bin
from tables_support import SEED, item_vectors, jump, mix64, shard_of
from test_cluster import LocalCluster
from test_sessions import ring

PACKAGE = os.path.join(ROOT, "clients", "python")
STUBS = os.path.join(PACKAGE, "src", "shardrank_client", "_proto")
GEN = os.path.join(ROOT, "scripts", "gen-python-stubs.py")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install ./clients/python` into a fresh directory (no index, no build isolation: offline)."""
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps",
                          "--no-build-isolation", "--target", str(target), PACKAGE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr + "\n(the build backend is flit_core, in scripts/requirements.txt: run scripts/setup)"
    assert not os.path.exists(os.path.join(PACKAGE, "build")), "the install left build output in the repository"
    return str(target)


@pytest.fixture(scope="module")
def sr(installed):
    """The installed package, imported from where pip put it."""
    sys.path.insert(0, installed)
    try:
        import shardrank_client
    finally:
        sys.path.remove(installed)
    assert shardrank_client.__file__.startswith(installed + os.sep), shardrank_client.__file__
    return shardrank_client


@pytest.fixture(scope="module")
def rpb(pb):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    return recommender_pb2, recommender_pb2_grpc


@pytest.fixture(scope="module")
def servers(module_server_factory):
    return module_server_factory


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, servers):
    """2 shards over a built table set (items 1000..1599, dim 16, f32) and a coordinator."""
    cl = LocalCluster(tmp_path_factory.mktemp("cluster"), servers)
    yield cl
    cl.close()


def shard_targets(cl):
    return [reps[0].target for reps in cl.shards]


# ---- the package ---------------------------------------------------------------------------------

def test_the_committed_stubs_are_what_proto_generates(tmp_path):
    out = subprocess.run([sys.executable, GEN, "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{out.stderr}\nrun scripts/gen-python-stubs and commit"
    # The check fails on a stale copy, naming what differs.
    stale = tmp_path / "_proto"
    shutil.copytree(STUBS, stale, ignore=shutil.ignore_patterns("__pycache__"))
    with open(stale / "shardrank" / "v1" / "recommender_pb2.py", "a") as f:
        f.write("# edited\n")
    os.remove(stale / "shardrank" / "v1" / "shard_pb2_grpc.py")
    out = subprocess.run([sys.executable, GEN, "--check", "--dest", str(stale)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "shardrank/v1/recommender_pb2.py" in out.stderr and "shardrank/v1/shard_pb2_grpc.py (missing)" in out.stderr, out.stderr
    # Nothing machine-specific is committed, and every import of a generated module stays inside the package.
    files = subprocess.run(["git", "ls-files", "clients/python"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "clients/python/src/shardrank_client/_proto/shardrank/v1/recommender_pb2_grpc.py" in files
    for f in files:
        text = open(os.path.join(ROOT, f), encoding="utf-8").read()
        assert ROOT not in text and not re.search(r"/(home|tmp|work|Users)/", text), f
        for line in text.splitlines():
            assert not re.match(r"\s*(from|import) (shardrank\.|grpc\.health)", line), f"{f}: {line}"


def test_the_package_installs_and_imports_alone_beside_other_copies_of_the_protos(installed):
    files = {os.path.relpath(os.path.join(d, n), installed) for d, _, ns in os.walk(installed) for n in ns if "__pycache__" not in d}
    for f in ["py.typed", "pb.py", "_proto/shardrank/v1/recommender_pb2.py", "_proto/shardrank/v1/recommender_pb2.pyi",
              "_proto/shardrank/v1/shard_pb2_grpc.py", "_proto/grpc/health/v1/health_pb2_grpc.py"]:
        assert f"shardrank_client/{f}" in files, sorted(files)
    assert not {f.split(os.sep)[0] for f in files} - {"shardrank_client", "shardrank_client-0.1.0.dist-info"}, sorted(files)
    meta = open(os.path.join(installed, "shardrank_client-0.1.0.dist-info", "METADATA")).read()
    assert "Requires-Dist: grpcio>=1.76.0" in meta and "Requires-Dist: protobuf>=6.31.1" in meta and "Requires-Dist: numpy" in meta
    # A fresh interpreter (-I: no PYTHONPATH, no current directory) that already holds *different*
    # files named grpc/health/v1/health.proto (as grpcio-health-checking registers) and
    # shardrank/v1/common.proto in protobuf's default pool imports the package, and the stubs work.
    code = f"""
import json, sys
from google.protobuf import descriptor_pb2, descriptor_pool
for name, package in [("grpc/health/v1/health.proto", "grpc.health.v1"), ("shardrank/v1/common.proto", "shardrank.v1")]:
    fd = descriptor_pb2.FileDescriptorProto(name=name, package=package)
    fd.message_type.add(name="HealthCheckRequest" if "health" in name else "Other").field.add(name="x", number=9, type=9, label=1)
    descriptor_pool.Default().Add(fd)
sys.path.insert(0, {installed!r})
import shardrank_client
from shardrank_client import Recommender, Shards, ShardRankError
from shardrank_client.pb import recommender_pb2, common_pb2, health_pb2
req = recommender_pb2.RecommendRequest(user_id=7, k=3, sources=[common_pb2.SOURCE_POPULAR])
back = recommender_pb2.RecommendRequest.FromString(req.SerializeToString())
print(json.dumps({{"file": shardrank_client.__file__, "k": back.k, "sources": list(back.sources),
                  "serving": health_pb2.HealthCheckResponse.SERVING,
                  "module": type(req).__module__,
                  "leaked": sorted(m for m in sys.modules if m == "shardrank" or m.startswith(("shardrank.", "grpc.health")))}}))
"""
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["file"].startswith(installed + os.sep)
    assert (doc["k"], doc["sources"], doc["serving"]) == (3, [4], 1)
    assert doc["module"] == "shardrank_client._proto.shardrank.v1.recommender_pb2"
    assert doc["leaked"] == [], "the package must not create top-level shardrank or grpc.health modules"


def test_routing_is_the_servers_hash_and_the_coordinator_ring(sr):
    from shardrank_client.routing import fnv1a64, jump_consistent_hash, stable_hash, stable_hash_key
    # Golden values of Tests/ShardRankTablesTests/StableHashTests.swift.
    golden = {0: 0xE220A8397B1DCDAF, 1: 0x910A2DEC89025CC1, 42: 0xBDD732262FEB6E95, 123_456_789: 0x223C74D93DEB7679,
              9_223_372_036_854_775_813: 0x54A64D19D7534F30, 2**64 - 1: 0xE4D971771B652C20}
    assert {i: stable_hash(i) for i in golden} == golden
    by_id = {0: [0, 1, 2, 7, 8, 258], 1: [0, 0, 0, 3, 15, 527], 42: [0, 0, 0, 0, 0, 151], 123_456_789: [0, 0, 0, 4, 10, 534],
             9_223_372_036_854_775_813: [0, 0, 0, 5, 8, 757], 2**64 - 1: [0, 0, 2, 3, 3, 650]}
    for i, want in by_id.items():
        assert [sr.ShardRouter(s).shard_of(i) for s in (1, 2, 3, 8, 16, 1000)] == want, i
        assert [int(sr.ShardRouter(s).shards_of([i])[0]) for s in (1, 2, 3, 8, 16, 1000)] == want, i
    by_key = {"all": [1, 2, 4, 12], "Action": [1, 1, 3, 14], "FR": [0, 0, 4, 4], "42": [0, 2, 2, 13], "": [0, 0, 3, 9]}
    for key, want in by_key.items():
        assert [sr.ShardRouter(s).shard_of_key(key) for s in (2, 3, 8, 16)] == want, key
    assert stable_hash_key("all") == 0x6D44568E9F2C3937 and fnv1a64("FR") == 0x09056E07B59EC8D1
    assert [jump_consistent_hash(k, 10) for k in (0, 1, 2, 3, 0xDEADBEEF, 2**64 - 1)] == [0, 6, 6, 8, 5, 9]
    assert int(np.bincount(sr.ShardRouter(8).shards_of(np.arange(10_000)))[3]) == 1268
    # The vectorised router, the scalar one and the tests' own implementation agree, for any seed.
    ids = np.random.default_rng(5).integers(0, 2**64, size=3000, dtype=np.uint64)
    for shards in (1, 2, 3, 7, 64, 1000):
        for seed in (SEED, 1, 2**64 - 1):
            r = sr.ShardRouter(shards, seed)
            vec = r.shards_of(ids).tolist()
            assert vec == [r.shard_of(int(i)) for i in ids] == [shard_of(int(i), shards, seed) for i in ids], (shards, seed)
    assert jump(mix64((5 + SEED) % 2**64), 4) == sr.ShardRouter(4).shard_of(5)
    with pytest.raises(ValueError):
        sr.ShardRouter(2).shards_of([1, -2])
    with pytest.raises(ValueError):
        sr.ShardRouter(2).shards_of(np.array([1.5]))
    # The coordinator ring: docs/operations.md's formula (test_sessions.ring), whatever the list order.
    lists = [["127.0.0.1:7000", "127.0.0.1:7001"], ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"], ["a:1"],
             [f"coord-{i}.svc:7000" for i in range(7)]]
    for addresses in lists:
        fwd, rev = sr.CoordinatorRing(addresses), sr.CoordinatorRing(addresses[::-1])
        for user in list(range(1, 3000)) + [2**64 - 1, 2**63]:
            assert fwd.coordinator_of(user) == addresses[ring(addresses, user)] == rev.coordinator_of(user)
    # Ties (the same address twice) go to the earlier one, as in CoordinatorRing.swift.
    assert {sr.CoordinatorRing(["x:1", "y:1", "x:1"]).index_of(u) for u in range(1, 500)} == {0, 1}
    three = sr.CoordinatorRing(lists[1])
    counts = np.bincount([three.index_of(u) for u in range(1, 30_001)])
    assert all(abs(c - 10_000) < 600 for c in counts), counts


# ---- shards --------------------------------------------------------------------------------------

def test_lookup_sends_each_id_to_its_shard_and_keeps_the_callers_order(sr, pb, cluster):
    s0, s1 = shard_targets(cluster)
    ids_by_shard = {s: [int(i) for i in cluster.ids if shard_of(int(i), 2) == s] for s in (0, 1)}
    assert min(len(v) for v in ids_by_shard.values()) > 100
    a, b = ids_by_shard[0], ids_by_shard[1]
    ids = [b[0], a[0], 5, b[1], a[1], a[0], 999_999, b[2]]        # both shards, a repeat, two missing ids
    with sr.Shards([s1, s0], timeout=5) as shards:                 # any order: Info says which shard is which
        infos = shards.info()
        assert [(i.shard, i.shard_count, i.address, i.hash, i.hash_seed, i.version) for i in infos] == \
            [(0, 2, s0, "splitmix64+jump-v1", SEED, 1), (1, 2, s1, "splitmix64+jump-v1", SEED, 1)]
        items = [i.table("items") for i in infos]
        assert [(t.kind, t.dim, t.dtype) for t in items] == [("embedding", cluster.dim, "f32")] * 2
        assert [t.rows for t in items] == [len(a), len(b)], "the shards hold exactly the ids the client routes to them"
        rows = shards.lookup(ids)
        found = [i for i in ids if i not in (5, 999_999)]
        assert rows.ids.tolist() == found and rows.missing_ids == [5, 999_999]
        assert rows.dtype == "f32" and rows.vectors.dtype == np.float32 and rows.scales is None
        np.testing.assert_array_equal(rows.vectors, item_vectors(found, cluster.dim, 1))
        assert rows.versions == {0: 1, 1: 1}
        # The same rows as a direct Lookup of each shard's own ids.
        for s, target in ((0, s0), (1, s1)):
            own = [i for i in found if shard_of(i, 2) == s]
            r = pb.shard_pb2_grpc.ShardStub(grpc.insecure_channel(target)).Lookup(pb.shard_pb2.LookupRequest(table="items", ids=own), timeout=5)
            direct = np.frombuffer(r.vectors, dtype="<f4").reshape(-1, r.dim)
            np.testing.assert_array_equal(rows.vectors[[found.index(i) for i in own]], direct)
            assert (r.shard, r.shard_count) == (s, 2)
        # What the README's old snippet did: every id to one shard is refused.
        with pytest.raises(grpc.RpcError) as e:
            pb.shard_pb2_grpc.ShardStub(grpc.insecure_channel(s0)).Lookup(pb.shard_pb2.LookupRequest(table="items", ids=found), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "belongs to shard 1 of 2" in e.value.details()
        # Every row of the table at once, shuffled; numpy ids; other dtypes; nothing.
        every = np.random.default_rng(3).permutation(np.asarray(cluster.ids, dtype=np.uint64))
        all_rows = shards.lookup(every)
        assert all_rows.ids.tolist() == every.tolist() and all_rows.missing_ids == []
        np.testing.assert_array_equal(all_rows.vectors, item_vectors(every.astype(np.int64), cluster.dim, 1))
        half = shards.lookup(ids, dtype="f16")
        assert half.vectors.dtype == np.float16 and half.ids.tolist() == found
        np.testing.assert_array_equal(half.vectors, item_vectors(found, cluster.dim, 1).astype(np.float16))
        q = shards.lookup(ids, dtype="int8")
        assert q.vectors.dtype == np.int8 and q.scales.shape == (len(found),) and q.missing_ids == [5, 999_999]
        want = item_vectors(found, cluster.dim, 1)
        assert np.all(np.abs(q.float32() - want) <= q.scales[:, None] * 0.51 + 1e-6)
        none = shards.lookup([])
        assert none.vectors.shape == (0, cluster.dim) and none.missing_ids == []
        only_missing = shards.lookup([5])
        assert only_missing.vectors.shape == (0, cluster.dim) and only_missing.missing_ids == [5]
        assert shards.shard_of(a[0]) == 0 and shards.shard_of(b[0]) == 1
        assert shards.health() == {s1: "SERVING", s0: "SERVING"}
    # From the topology file, and with a replica that is down listed first: it is skipped.
    with sr.Shards.from_topology(cluster.topology, timeout=5) as shards:
        np.testing.assert_array_equal(shards.lookup(ids).vectors, rows.vectors)
    dead = closed_port()
    with sr.Shards([[dead, s0], [s1]], timeout=5) as shards:
        got = shards.lookup(ids)
        assert got.ids.tolist() == found
        np.testing.assert_array_equal(got.vectors, rows.vectors)
        assert shards.health()[dead] == "UNAVAILABLE"
    # Addresses that are not the table set's shards are refused, naming them.
    with pytest.raises(sr.ShardRankError) as e:
        sr.Shards([s0], timeout=5).lookup(ids)
    assert e.value.code == "FAILED_PRECONDITION" and "1 shard address(es) given for a table set of 2 shards" in e.value.message
    with pytest.raises(sr.ShardRankError) as e:
        sr.Shards([[s1], [s0]], timeout=5).lookup(ids)
    assert e.value.code == "FAILED_PRECONDITION" and f"{s1} is shard 1 of 2, listed as shard 0" in e.value.message


def test_a_synthetic_shard_one_of_one(sr, shard):
    # docs/api.md: row i of the synthetic table is Float((i*31 + j) % 1000) / 1000; it reports hash "none".
    with sr.Shards([shard.target], timeout=5) as shards:
        (info,) = shards.info()
        assert (info.shard, info.shard_count, info.hash, info.hash_seed, info.source) == (0, 1, "none", SEED, "synthetic:1000x64")
        rows = shards.lookup([999, 0, 1000, 31])
        want = ((np.array([999, 0, 31])[:, None] * 31 + np.arange(64)[None, :]) % 1000).astype(np.float32) / np.float32(1000)
        assert rows.ids.tolist() == [999, 0, 31] and rows.missing_ids == [1000]
        np.testing.assert_array_equal(rows.vectors, want)
        (hits,) = shards.search(np.ones(64), k=3)
        assert hits.ids.tolist()[0] == int(np.argmax(((np.arange(1000)[:, None] * 31 + np.arange(64)) % 1000).sum(axis=1)))


def test_search_merges_every_shard(sr, cluster):
    vectors = item_vectors(cluster.ids, cluster.dim, 1).astype(np.float64)
    queries = np.random.default_rng(9).standard_normal((3, cluster.dim)).astype(np.float32)
    with sr.Shards(shard_targets(cluster), timeout=5) as shards:
        hits = shards.search(queries, k=10, mode="exact")
        assert len(hits) == 3
        for q, h in zip(queries, hits):
            scores = vectors @ q.astype(np.float64)
            want = sorted(range(len(scores)), key=lambda n: (-scores[n], cluster.ids[n]))[:10]
            assert h.ids.tolist() == [int(cluster.ids[n]) for n in want]
            np.testing.assert_allclose(h.scores, scores[want], rtol=1e-4, atol=1e-3)
        assert {shard_of(int(i), 2) for h in hits for i in h.ids} == {0, 1}, "the answers come from both shards"
        top = int(hits[0].ids[0])
        again = shards.search(queries[0], k=10, exclude_ids=[top])[0]
        assert top not in again.ids.tolist() and again.ids.tolist()[:9] == hits[0].ids.tolist()[1:]


# ---- the coordinator -----------------------------------------------------------------------------

def items_of(resp):
    return [(i.item_id, i.score, [int(s) for s in i.sources]) for i in resp.items]


def source_names(pb, resp):
    return [(i.item_id, i.score, tuple(pb.common_pb2.Source.Name(s)[len("SOURCE_"):].lower() for s in i.sources)) for i in resp.items]


def test_recommend_rank_and_similar_answer_what_the_raw_stubs_answer(sr, pb, rpb, cluster):
    target = cluster.coordinator.target
    stub = rpb[1].RecommenderStub(cluster.channel)
    with sr.Recommender(target, timeout=5) as rec:
        got = rec.recommend(7, k=10)
        raw = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=10), timeout=5)
        assert len(got.items) == 10 and [(i.item_id, i.score, i.sources) for i in got.items] == source_names(pb, raw)
        assert got.item_ids == [i.item_id for i in raw.items]
        assert (got.version, got.cold_start, got.user_vector_source, got.session_events, got.coordinator) == (1, False, "stored", 0, target)
        assert raw.user_vector_source == rpb[0].USER_VECTOR_SOURCE_STORED
        c = got.coverage
        assert (c.shards_asked, c.shards_answered, c.degraded, c.sources_failed, got.degraded) == (2, 2, False, (), False)
        assert got.timings.total_us > 0 and got.candidates >= 10 and got.features is None
        # Every option reaches the wire.
        first = got.item_ids[0]
        got = rec.recommend(7, k=5, sources=["popular"], context=sr.Context(exclude_ids=[first], country="FR"),
                            budgets=sr.Budgets(popular=40), diversity_lambda=1.0, genre_cap=3, return_features=True)
        raw = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=5, sources=[pb.common_pb2.SOURCE_POPULAR], diversity_lambda=1.0,
                                                     context=rpb[0].Context(exclude_ids=[first], country="FR"), genre_cap=3,
                                                     budgets=rpb[0].Budgets(popular=40), return_features=True), timeout=5)
        assert [(i.item_id, i.score, i.sources) for i in got.items] == source_names(pb, raw)
        assert first not in got.item_ids and all(i.sources == ("popular",) for i in got.items)
        f = got.features
        assert f.names == tuple(raw.features.names) and f.item_ids.tolist() == list(raw.features.item_ids)
        assert f.values.shape == (len(f.item_ids), len(f.names)) and len(f.names) > 0
        np.testing.assert_array_equal(f.values, np.array(raw.features.values, dtype=np.float32).reshape(f.values.shape))
        # Rank and Similar.
        cands = [int(i) for i in cluster.ids[:20]]
        got = rec.rank(7, cands, k=5)
        raw = stub.Rank(rpb[0].RankRequest(user_id=7, candidate_ids=cands, k=5), timeout=5)
        assert [(i.item_id, i.score, i.sources) for i in got.items] == source_names(pb, raw) and len(got.items) == 5
        assert len(rec.rank(7, cands).items) == 20
        item = int(cluster.ids[3])
        got = rec.similar(item, k=5)
        raw = stub.Similar(rpb[0].SimilarRequest(item_id=item, k=5), timeout=5)
        assert [(i.item_id, i.score, i.sources) for i in got.items] == source_names(pb, raw) and len(got.items) == 5
        assert item not in got.item_ids
        assert rec.health() == {target: "SERVING"}


def test_recorded_events_are_excluded_from_the_next_recommend(sr, cluster):
    with sr.Recommender(cluster.coordinator.target, timeout=5) as rec:
        before = rec.recommend(21, k=10, diversity_lambda=1.0)
        top = before.item_ids[:3]
        ack = rec.record_events(21, top, kind="click")
        assert (ack.accepted, ack.session_events) == (3, 3)
        after = rec.recommend(21, k=10, diversity_lambda=1.0)
        assert after.session_events == 3 and not set(top) & set(after.item_ids) and len(after.item_ids) == 10
        # RecordEventsBatch: many users in one call; items or Event objects.
        t22, t23 = rec.recommend(22, k=5).item_ids, rec.recommend(23, k=5).item_ids
        done = rec.record_events_batch({22: t22[:2], 23: [sr.Event(t23[0], kind="purchase", timestamp_unix_s=int(time.time()) - 60)]})
        assert (done.accepted, done.users, done.calls) == (3, 2, 1)
        r22, r23 = rec.recommend(22, k=5), rec.recommend(23, k=5)
        assert (r22.session_events, r23.session_events) == (2, 1)
        assert not set(t22[:2]) & set(r22.item_ids) and t23[0] not in r23.item_ids
        # One bad entry refuses the whole batch: nothing of it is applied.
        with pytest.raises(sr.ShardRankError) as e:
            rec.record_events_batch([(24, [int(cluster.ids[1])]), (25, [int(cluster.ids[2]), 0])])
        assert e.value.code == "INVALID_ARGUMENT" and "users[1].events[1].item_id" in e.value.message, e.value
        assert rec.recommend(24, k=5).session_events == 0
        # replace with no events clears the session.
        assert rec.record_events(21, [], replace=True).session_events == 0
        assert rec.recommend(21, k=10).session_events == 0


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def test_errors_carry_the_status_name_and_every_call_has_a_deadline(sr, cluster):
    target = cluster.coordinator.target
    with sr.Recommender(target, timeout=5) as rec:
        with pytest.raises(sr.ShardRankError) as e:
            rec.recommend(7, k=0)
        err = e.value
        assert (err.code, err.status, err.target) == ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, target)
        assert str(err) == f"INVALID_ARGUMENT: {err.message}" and "k=0" in err.message
        with pytest.raises(sr.ShardRankError) as e:
            rec.recommend(7, k=5, user_vector="tower")
        assert e.value.code == "FAILED_PRECONDITION"
        with pytest.raises(sr.ShardRankError) as e:
            rec.similar(123_456_789, k=5)
        assert e.value.code == "NOT_FOUND" and "123456789" in e.value.message
        with pytest.raises(ValueError, match="unknown source 'nope'"):
            rec.recommend(7, sources=["nope"])
        with pytest.raises(ValueError, match="unknown event kind"):
            rec.record_events(7, [1], kind="like")
    with sr.Shards(shard_targets(cluster), timeout=5) as shards:
        with pytest.raises(sr.ShardRankError) as e:
            shards.lookup([int(cluster.ids[0]), int(cluster.ids[1])], table="no_such_table")
        assert e.value.code == "NOT_FOUND" and "no_such_table" in e.value.message
        with pytest.raises(sr.ShardRankError) as e:
            shards.search(np.full(cluster.dim + 1, 0.5), k=5)
        assert e.value.code == "INVALID_ARGUMENT"
    # Nothing listening: UNAVAILABLE. A listener that never answers: DEADLINE_EXCEEDED at the deadline.
    with pytest.raises(sr.ShardRankError) as e:
        sr.Recommender(closed_port(), timeout=5).recommend(7)
    assert e.value.code == "UNAVAILABLE"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        for call in (lambda: sr.Recommender(address, timeout=0.3).recommend(7),
                     lambda: sr.Recommender(address).record_events(7, [1], timeout=0.3),
                     lambda: sr.Shards([address], timeout=0.3).lookup([1])):
            start = time.monotonic()
            with pytest.raises(sr.ShardRankError) as e:
                call()
            elapsed = time.monotonic() - start
            assert e.value.code == "DEADLINE_EXCEEDED" and e.value.target == address, e.value
            assert 0.25 <= elapsed < 3.0, elapsed
        assert sr.Recommender(address).health(timeout=0.3) == {address: "DEADLINE_EXCEEDED"}
    finally:
        silent.close()
    with pytest.raises(ValueError):
        sr.Recommender(target, timeout=0)


def test_several_coordinators_are_routed_like_the_swift_coordinator_ring(sr, rpb, cluster, servers, tmp_path):
    second = servers(["coordinator", "--topology", str(cluster.topology), "--port", "0", "--log-level", "warning"])
    targets = [cluster.coordinator.target, second.target]
    raw = {t: rpb[1].RecommenderStub(grpc.insecure_channel(t)) for t in targets}
    rec = sr.Recommender(targets, timeout=5)
    assert [rec.coordinator_of(u) for u in range(1, 2001)] == [targets[ring(targets, u)] for u in range(1, 2001)]
    # The Swift ring (record-events --file) puts each user's session on one coordinator; the
    # client's recommend of that user reaches it.
    users = list(range(301, 341))
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp,kind\n" + "".join(f"{u},{cluster.ids[u - 300]},0,view\n" for u in users))
    out = subprocess.run([shardrank_bin(), "record-events", "--target", ",".join(targets), "--file", str(events)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    homes = set()
    for u in users:
        r = rec.recommend(u, k=5)
        homes.add(r.coordinator)
        assert r.session_events == 1, (u, r.coordinator)
        other = targets[1 - targets.index(r.coordinator)]
        assert raw[other].Recommend(rpb[0].RecommendRequest(user_id=u, k=5), timeout=5).session_events == 0
    assert homes == set(targets)
    # The client's own batches go one per coordinator, each user's events to the user's coordinator.
    batch = {u: [int(cluster.ids[u - 400]), int(cluster.ids[u - 390])] for u in range(401, 431)}
    done = rec.record_events_batch(batch)
    assert (done.accepted, done.users, done.calls) == (60, 30, 2)
    for u in batch:
        home = targets[ring(targets, u)]
        for t in targets:
            assert raw[t].Recommend(rpb[0].RecommendRequest(user_id=u, k=5), timeout=5).session_events == (2 if t == home else 0), (u, t)
    assert rec.record_events(401, [int(cluster.ids[50])]).coordinator == targets[ring(targets, 401)]
    assert rec.health() == {t: "SERVING" for t in targets}
    rec.close()
    second.stop()


def test_the_readme_python_snippet_runs_on_the_readmes_cluster(sr, servers, tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("### Calling a shard from Python", 1)[1].split("\n### ", 1)[0]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "pip install ./clients/python" in section and "shardrank_client" in snippet
    # The README's cluster ("A cluster by hand"), with a smaller world and ports chosen by the system.
    b = shardrank_bin()
    for cmd in (["synth", "--out", "world", "--users", "200", "--items", "600", "--quiet"],
                ["build", "--input", "world", "--out", "tables", "--shards", "2", "--ann", "auto", "--quiet"]):
        out = subprocess.run([b, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    shards = [servers(["shard", "--tables", str(tmp_path / "tables"), "--shard", str(s), "--of", "2", "--port", "0", "--log-level", "warning"])
              for s in (0, 1)]
    (tmp_path / "topology.json").write_text(json.dumps({"tables": str(tmp_path / "tables"), "shards": [[s.target] for s in shards],
                                                        "coordinator": {"health_interval_ms": 100}}))
    coord = servers(["coordinator", "--topology", str(tmp_path / "topology.json"), "--port", "0", "--log-level", "warning"])
    code = snippet.replace("127.0.0.1:7101", shards[0].target).replace("127.0.0.1:7102", shards[1].target) \
                  .replace("127.0.0.1:7000", coord.target)
    wait_serving(sr, coord.target)
    env = {}
    exec(compile(code, "README.md", "exec"), env)
    rows = env["rows"]
    items = np.load(tmp_path / "world" / "items.npy")
    assert rows.ids.tolist() == [1, 2, 3] and rows.missing_ids == []
    np.testing.assert_array_equal(rows.vectors, items[:3])          # item_ids.npy is 1..600 in order
    assert len(env["hits"].ids) == 5 and len(env["top"]) == 10
    assert {sr.ShardRouter(2).shard_of(i) for i in (1, 2, 3)} == {0, 1}, "the snippet's ids live on both shards"
    after = sr.Recommender(coord.target, timeout=5).recommend(42, k=10)
    assert after.session_events == 2 and not set(env["top"][:2]) & set(after.item_ids)
    for s in (*shards, coord):
        s.stop()


def wait_serving(sr, target, seconds=10):
    deadline = time.monotonic() + seconds
    with sr.Recommender(target, timeout=1) as rec:
        while rec.health()[target] != "SERVING":
            assert time.monotonic() < deadline, f"{target} never SERVING"
            time.sleep(0.05)

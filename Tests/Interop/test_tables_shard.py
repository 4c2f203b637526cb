"""Table-set shards called by a stock gRPC client: a table set built by `shardrank build` from an
input directory written with numpy, served by two shard processes, checked byte for byte; then
hot reload under load (rows are a function of (id, version): no torn batch, versions never go
backwards, no failed request) and a corrupt version that must not replace a good one."""
import glob
import os
import re
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import shardrank_bin
from tables_support import build, delta_varint, item_vectors, shard_of, undelta_varint, write_input


def make_root(tmp_path, shards):
    inp = tmp_path / "input"
    ids, dim = write_input(str(inp))
    root = tmp_path / "tables"
    out = build(shardrank_bin(), str(inp), str(root), shards)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("/v1")
    return {"root": str(root), "input": str(inp), "ids": [int(i) for i in ids], "dim": dim, "tmp": tmp_path}


@pytest.fixture
def table_root(tmp_path):
    """Two shards."""
    return make_root(tmp_path, 2)


@pytest.fixture
def single_root(tmp_path):
    """One shard (for reload tests, which rebuild it)."""
    return make_root(tmp_path, 1)


def shard_stub(pb, srv):
    ch = grpc.insecure_channel(srv.target)
    return ch, pb.shard_pb2_grpc.ShardStub(ch)


def test_lookup_rows_exact_per_shard(pb, table_root, server_factory):
    ids, dim = table_root["ids"], table_root["dim"]
    for s in range(2):
        srv = server_factory(["shard", "--tables", table_root["root"], "--shard", str(s), "--of", "2", "--port", "0"])
        ch, stub = shard_stub(pb, srv)
        with ch:
            mine = [i for i in ids if shard_of(i, 2) == s]
            assert 100 < len(mine) < 300
            ask = mine[:50] + [mine[0]]
            r = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ask), timeout=5)
            assert r.version == 1 and r.shard == s and r.shard_count == 2
            assert r.vectors == item_vectors(ask, dim, 1).astype("<f4").tobytes()
            # f16 conversion on the way out
            r16 = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ask[:5], dtype=pb.common_pb2.DTYPE_F16), timeout=5)
            assert r16.vectors == item_vectors(ask[:5], dim, 1).astype("<f2").tobytes()
            # ids of the other shard are refused, unknown ids are missing
            other = next(i for i in ids if shard_of(i, 2) != s)
            with pytest.raises(grpc.RpcError) as e:
                stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[mine[0], other]), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"shard {shard_of(other, 2)}" in e.value.details()
            absent = next(i for i in range(10**6, 10**6 + 100) if shard_of(i, 2) == s)
            r = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=[absent, mine[1]]), timeout=5)
            assert list(r.missing_ids) == [absent]
            # wrong kinds and unknown tables
            with pytest.raises(grpc.RpcError) as e:
                stub.Lookup(pb.shard_pb2.LookupRequest(table="popular", ids=[1]), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as e:
                stub.Lookup(pb.shard_pb2.LookupRequest(table="nope", ids=[1]), timeout=5)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_search_equals_bruteforce_on_the_slice(pb, table_root, server_factory):
    ids, dim = table_root["ids"], table_root["dim"]
    srv = server_factory(["shard", "--tables", table_root["root"], "--shard", "1", "--of", "2", "--port", "0"])
    ch, stub = shard_stub(pb, srv)
    with ch:
        mine = np.array([i for i in ids if shard_of(i, 2) == 1])
        rows = item_vectors(mine, dim, 1)
        q = np.random.default_rng(5).standard_normal((4, dim)).astype(np.float32)
        excl = [int(mine[3]), int(mine[7])]
        r = stub.Search(pb.shard_pb2.SearchRequest(table="items", queries=q.tobytes(), dim=dim, k=7, exclude_ids=excl), timeout=10)
        scores = q @ rows.T
        for qi, hits in enumerate(r.results):
            order = sorted((int(i) for i in range(len(mine)) if int(mine[i]) not in excl), key=lambda i: (-scores[qi, i], mine[i]))[:7]
            assert list(hits.ids) == [int(mine[i]) for i in order]
            assert np.allclose(hits.scores, scores[qi, order], rtol=1e-4, atol=1e-3)


def test_lists_and_info(pb, table_root, server_factory):
    srvs = [server_factory(["shard", "--tables", table_root["root"], "--shard", str(s), "--of", "2", "--port", "0"]) for s in range(2)]
    found = {}
    for srv in srvs:
        ch, stub = shard_stub(pb, srv)
        with ch:
            info = stub.Info(pb.shard_pb2.InfoRequest(), timeout=5)
            names = {t.name for t in info.tables}
            assert {"items", "users", "popular", "genre_top"} <= names
            assert info.hash == "splitmix64+jump-v1"
            r = stub.Lists(pb.shard_pb2.ListsRequest(table="genre_top", keys=["Drama", "Comedy", "Nope"], limit=5), timeout=5)
            for l in r.lists:
                assert len(l.ids) <= 5 and list(l.scores) == sorted(l.scores, reverse=True)
                found[l.key] = list(l.ids)
            assert "Nope" in r.missing_keys
    assert set(found) == {"Drama", "Comedy"}  # each key lives on exactly one shard


def test_histories_exclusions_and_the_hash_seed(pb, tmp_path, server_factory):
    """A table set built with --hash-seed: the shards say the seed in Info and hold ids where that
    seed puts them; every user's whole history comes back delta-varint encoded; Search excludes a
    delta-varint `exclude_sorted` (with `exclude_ids`), and refuses a malformed one by name."""
    seed = 0x1234ABCD5678EF01
    inp = tmp_path / "input"
    ids, dim = write_input(str(inp))
    root = tmp_path / "tables"
    out = build(shardrank_bin(), str(inp), str(root), 2, "--hash-seed", hex(seed), "--recent", "3")
    assert out.returncode == 0, out.stderr
    bad = build(shardrank_bin(), str(inp), str(tmp_path / "t0"), 2, "--hash-seed", "0")
    assert bad.returncode != 0 and "--hash-seed" in bad.stderr
    history = {}
    with open(inp / "interactions.csv") as f:
        next(f)
        for line in f:
            u, i = line.split(",")[:2]
            history.setdefault(int(u), set()).add(int(i))
    assert any(len(h) > 3 for h in history.values())  # histories longer than the recent items
    SR = pb.shard_pb2
    for s in range(2):
        srv = server_factory(["shard", "--tables", str(root), "--shard", str(s), "--of", "2", "--port", "0"])
        ch, stub = shard_stub(pb, srv)
        with ch:
            assert stub.Info(SR.InfoRequest(), timeout=5).hash_seed == seed
            mine = [u for u in history if shard_of(u, 2, seed) == s]
            assert mine and any(shard_of(u, 2) != s for u in mine)  # the seed moved some users
            r = stub.Profiles(SR.ProfilesRequest(table="profiles", user_ids=mine), timeout=5)
            assert not r.missing_user_ids and [p.user_id for p in r.profiles] == mine
            for p in r.profiles:
                assert undelta_varint(p.history) == sorted(history[p.user_id])
                assert p.history_count == len(history[p.user_id]) and len(p.recent_item_ids) <= 3
                assert p.history == delta_varint(history[p.user_id])
            # Search: every third item of this shard excluded through exclude_sorted, one more
            # through exclude_ids.
            items = [int(i) for i in ids if shard_of(int(i), 2, seed) == s]
            q = np.random.default_rng(s).standard_normal(dim).astype(np.float32)
            excluded = items[::3]
            r = stub.Search(SR.SearchRequest(table="items", queries=q.tobytes(), dim=dim, k=20, exclude_ids=[items[1]],
                                             exclude_sorted=delta_varint(excluded)), timeout=10)
            got = list(r.results[0].ids)
            assert len(got) == 20 and not set(got) & (set(excluded) | {items[1]})
            rows = item_vectors(np.array(items), dim, 1)
            scores = rows @ q
            keep = [j for j in range(len(items)) if items[j] not in set(excluded) | {items[1]}]
            want = [items[j] for j in sorted(keep, key=lambda j: (-scores[j], items[j]))[:20]]
            assert got == want
            with pytest.raises(grpc.RpcError) as e:
                stub.Search(SR.SearchRequest(table="items", queries=q.tobytes(), dim=dim, k=5, exclude_sorted=bytes([5, 0x80])), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exclude_sorted" in e.value.details()


def corrupt_newest(root):
    newest = sorted(glob.glob(os.path.join(root, "v*")), key=lambda p: int(p.rsplit("v", 1)[1]))[-1]
    files = sorted(f for f in glob.glob(os.path.join(newest, "*")) if not f.endswith("manifest.json"))
    target = next(f for f in files if "items" in os.path.basename(f))
    with open(target, "r+b") as f:
        f.seek(os.path.getsize(target) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    return newest


def test_hot_reload_under_load(pb, single_root, server_factory):
    table_root = single_root
    ids, dim, root = table_root["ids"], table_root["dim"], table_root["root"]
    srv = server_factory(["shard", "--tables", root, "--shard", "0", "--of", "1", "--port", "0", "--reload-seconds", "0", "--admin-port", "0"])
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    ch, stub = shard_stub(pb, srv)
    stop = threading.Event()
    ledger = {"ok": 0, "failed": [], "torn": 0, "backwards": 0, "versions": set()}

    def worker(seed):
        rng = np.random.default_rng(seed)
        last = 0
        while not stop.is_set():
            ask = [int(x) for x in rng.choice(ids, size=32)]
            try:
                r = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ask), timeout=5)
            except grpc.RpcError as e:
                ledger["failed"].append(e.code())
                continue
            ledger["ok"] += 1
            ledger["versions"].add(r.version)
            if r.version < last:
                ledger["backwards"] += 1
            last = r.version
            if r.vectors != item_vectors(ask, dim, r.version).astype("<f4").tobytes():
                ledger["torn"] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for v in range(2, 5):
            write_input(table_root["input"], version=v)
            out = build(shardrank_bin(), table_root["input"], root, 1)
            assert out.returncode == 0, out.stderr
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while v not in ledger["versions"] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert v in ledger["versions"], f"v{v} never served"
        # A corrupt newer version is rejected; v4 keeps serving.
        write_input(table_root["input"], version=5)
        assert build(shardrank_bin(), table_root["input"], root, 1).returncode == 0
        corrupt_newest(root)
        srv.proc.send_signal(signal.SIGHUP)
        # Wait for the reload to have run and refused v5 (not a fixed sleep: the assertion below
        # that v5 never served would pass if the reload had not happened yet).
        from test_metrics import scrape, value
        deadline = time.monotonic() + 10
        while (value(scrape(admin), "shardrank_reload_rejections_total") or 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert value(scrape(admin), "shardrank_reload_rejections_total") == 1, "the corrupt v5 was never examined"
    finally:
        stop.set()
        for t in threads:
            t.join()
    ch.close()
    assert ledger["failed"] == []
    assert ledger["torn"] == 0
    assert ledger["backwards"] == 0
    assert 5 not in ledger["versions"]
    assert ledger["ok"] > 100
    # Health stayed SERVING and the shard still answers from v4.
    with grpc.insecure_channel(srv.target) as ch2:
        h = pb.health_pb2_grpc.HealthStub(ch2)
        assert h.Check(pb.health_pb2.HealthCheckRequest(), timeout=5).status == pb.health_pb2.HealthCheckResponse.SERVING
        r = pb.shard_pb2_grpc.ShardStub(ch2).Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids[:3]), timeout=5)
        assert r.version == 4


def test_pinned_version(pb, single_root, server_factory):
    table_root = single_root
    root = table_root["root"]
    srv = server_factory(["shard", "--tables", root, "--shard", "0", "--of", "1", "--port", "0", "--reload-seconds", "0.2"])
    ch, stub = shard_stub(pb, srv)
    with ch:
        write_input(table_root["input"], version=2)
        assert build(shardrank_bin(), table_root["input"], root, 1).returncode == 0
        deadline = time.monotonic() + 10
        while stub.Info(pb.shard_pb2.InfoRequest(), timeout=5).version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        ids = table_root["ids"][:4]
        # The previous version stays readable for requests that pin it (a rollout in progress).
        r1 = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids, version=1), timeout=5)
        assert r1.version == 1 and r1.vectors == item_vectors(ids, table_root["dim"], 1).astype("<f4").tobytes()
        with pytest.raises(grpc.RpcError) as e:
            stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids, version=7), timeout=5)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_shard_refuses_missing_or_bad_tables(tmp_path, server_factory):
    import subprocess
    out = subprocess.run([shardrank_bin(), "shard", "--tables", str(tmp_path / "none"), "--port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "no complete table-set version" in out.stderr


def test_build_errors_name_file_and_row(tmp_path):
    inp = tmp_path / "in"
    write_input(str(inp))
    with open(inp / "interactions.csv", "a") as f:
        f.write("1,999999,5,4\n")
    out = build(shardrank_bin(), str(inp), str(tmp_path / "root"), 2)
    assert out.returncode != 0
    assert "interactions.csv:" in out.stderr and "999999" in out.stderr
    assert not os.path.exists(tmp_path / "root" / "v1" / "manifest.json")


def test_ann_search_through_grpcio(pb, tmp_path, server_factory):
    """A table set built with `--ann`: a stock client asks for ANN and EXACT, reads which mode
    answered, gets k results without excluded ids, and the knobs change the work done."""
    inp = tmp_path / "input"
    rng = np.random.default_rng(11)
    n, dim = 20000, 16
    ids, _ = write_input(str(inp), n_items=n, dim=dim)
    centres = rng.standard_normal((30, dim)).astype(np.float32)
    rows = (centres[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)
    np.save(inp / "items.npy", rows)
    root = tmp_path / "tables"
    out = build(shardrank_bin(), str(inp), str(root), 1, "--ann", "auto", "--ann-lists", "64", "--ann-nprobe", "8", "--ann-rerank", "100")
    assert out.returncode == 0, out.stderr
    srv = server_factory(["shard", "--tables", str(root), "--shard", "0", "--of", "1", "--port", "0"])
    ch, stub = shard_stub(pb, srv)
    SR = pb.shard_pb2
    with ch:
        q = rng.standard_normal((20, dim)).astype(np.float32)
        truth = q @ rows.T
        hits = 0
        for qi in range(20):
            exclude = [int(ids[i]) for i in np.argsort(-truth[qi])[:5]]  # the 5 best are excluded
            a = stub.Search(SR.SearchRequest(table="items", queries=q[qi].tobytes(), dim=dim, k=10, exclude_ids=exclude), timeout=10)
            e = stub.Search(SR.SearchRequest(table="items", queries=q[qi].tobytes(), dim=dim, k=10, exclude_ids=exclude,
                                             mode=SR.SEARCH_MODE_EXACT), timeout=10)
            assert a.mode == SR.SEARCH_MODE_ANN and e.mode == SR.SEARCH_MODE_EXACT
            got = list(a.results[0].ids)
            assert len(got) == 10 and not set(got) & set(exclude)
            hits += len(set(got) & set(e.results[0].ids))
            # ANN scores are the exact scores of the returned rows.
            pos = {int(i): k for k, i in enumerate(ids)}
            assert np.allclose(a.results[0].scores, [truth[qi, pos[i]] for i in got], rtol=1e-4, atol=1e-3)
        assert hits / 200 >= 0.9
        # Knobs beyond the limits are INVALID_ARGUMENT; an unknown mode too.
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(SR.SearchRequest(table="items", queries=q[0].tobytes(), dim=dim, k=10, mode=SR.SEARCH_MODE_ANN,
                                         rerank=10**6), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "rerank" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(SR.SearchRequest(table="items", queries=q[0].tobytes(), dim=dim, k=10, mode=7), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The manifest records the index and the recall build measured.
    import json
    m = json.load(open(root / "v1" / "manifest.json"))
    ix = next(t for t in m["tables"] if t["name"] == "items")["index"]
    assert ix["kind"] == "ivfpq4" and ix["lists"] == 64 and ix["nprobe"] == 8 and ix["rerank"] == 100 and ix["recallAt10"] > 0.8


def covisitation_reference(interactions_csv, k, window):
    """The definition of `build --similar-source interactions` (docs/table-format.md), directly:
    per user the distinct items by time (ties: file order), pairs at distance <= window (0: any),
    score c_ij / sqrt(n_i n_j), best k, ties to the lower id."""
    import math
    from collections import defaultdict
    rows = []
    with open(interactions_csv) as f:
        next(f)
        for line_no, line in enumerate(f):
            u, i, t = line.strip().split(",")[:3]
            rows.append((int(u), int(t), line_no, int(i)))
    seqs = defaultdict(list)
    for u, _, _, i in sorted(rows):
        if i not in seqs[u]:
            seqs[u].append(i)
    n, c = defaultdict(int), defaultdict(lambda: defaultdict(int))
    for s in seqs.values():
        for i in s:
            n[i] += 1
        for p in range(len(s)):
            for q in range(len(s)):
                if p != q and (window == 0 or abs(p - q) <= window):
                    c[s[p]][s[q]] += 1
    out = {}
    for i, row in c.items():
        scored = sorted(((-float(np.float32(cij / math.sqrt(n[i] * n[j]))), j) for j, cij in row.items()))[:k]
        out[i] = ([j for _, j in scored], [-s for s, _ in scored])
    return out


def test_build_similar_from_interactions(pb, tmp_path, server_factory):
    """`build --similar K --similar-source interactions --covisit-window W`: the shard serves the
    co-visitation lists of the definition; items without co-visits have empty lists; bad flags are
    usage errors (64) and a missing interactions.csv is a build error naming it."""
    inp = tmp_path / "input"
    ids, _ = write_input(str(inp))
    root = tmp_path / "tables"
    out = build(shardrank_bin(), str(inp), str(root), 1, "--similar", "3", "--similar-source", "interactions", "--covisit-window", "2")
    assert out.returncode == 0, out.stderr
    want = covisitation_reference(inp / "interactions.csv", 3, 2)
    assert len(want) > 20
    srv = server_factory(["shard", "--tables", str(root), "--shard", "0", "--of", "1", "--port", "0"])
    ch, stub = shard_stub(pb, srv)
    with ch:
        keys = [str(int(i)) for i in ids]
        r = stub.Lists(pb.shard_pb2.ListsRequest(table="similar", keys=keys, limit=10), timeout=10)
        got = {int(l.key): (list(l.ids), list(l.scores)) for l in r.lists}
    for i in ids:
        i = int(i)
        ids_want, scores_want = want.get(i, ([], []))
        ids_got, scores_got = got.get(i, ([], []))
        assert ids_got == ids_want, i
        assert np.allclose(scores_got, scores_want, rtol=1e-6, atol=0), i
    assert any(len(v[0]) == 3 for v in got.values()) and any(i not in want for i in map(int, ids))

    bad = build(shardrank_bin(), str(inp), str(tmp_path / "r2"), 1, "--similar", "3", "--similar-source", "graph")
    assert bad.returncode == 64 and "--similar-source" in bad.stderr
    bad = build(shardrank_bin(), str(inp), str(tmp_path / "r2"), 1, "--similar-source", "interactions")
    assert bad.returncode == 64 and "--similar K" in bad.stderr
    bad = build(shardrank_bin(), str(inp), str(tmp_path / "r2"), 1, "--similar", "3", "--covisit-window", "-1")
    assert bad.returncode == 64 and "--covisit-window" in bad.stderr
    os.remove(inp / "interactions.csv")
    bad = build(shardrank_bin(), str(inp), str(tmp_path / "r2"), 1, "--similar", "3", "--similar-source", "interactions")
    assert bad.returncode == 1 and "interactions.csv" in bad.stderr, bad.stderr
    assert not os.path.exists(tmp_path / "r2" / "v1" / "manifest.json")


def test_a_shard_started_over_a_corrupt_newest_version_serves_the_last_good_one(pb, single_root, server_factory):
    """As a hot reload does: the corrupt newest version is refused (named in the log, counted in
    the metrics) and the newest version that verifies serves; a later good version is taken."""
    from test_metrics import scrape, value
    table_root = single_root
    root, ids, dim = table_root["root"], table_root["ids"], table_root["dim"]
    write_input(table_root["input"], version=2)
    assert build(shardrank_bin(), table_root["input"], root, 1).returncode == 0
    corrupt_newest(root)   # v2
    srv = server_factory(["shard", "--tables", root, "--shard", "0", "--of", "1", "--port", "0", "--reload-seconds", "0",
                          "--admin-port", "0", "--log-level", "info"])
    admin = int(re.search(r"admin listening on \S+:(\d+)", srv.preamble).group(1))
    ch, stub = shard_stub(pb, srv)
    with ch:
        r = stub.Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids[:3]), timeout=5)
        assert r.version == 1 and r.vectors == item_vectors(ids[:3], dim, 1).astype("<f4").tobytes()
        assert value(scrape(admin), "shardrank_reload_rejections_total") == 1
        # A good v3 is switched to on reload; the refused v2 is not tried again.
        write_input(table_root["input"], version=3)
        assert build(shardrank_bin(), table_root["input"], root, 1).returncode == 0
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while stub.Info(pb.shard_pb2.InfoRequest(), timeout=5).version != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stub.Info(pb.shard_pb2.InfoRequest(), timeout=5).version == 3

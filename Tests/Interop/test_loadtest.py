"""`shardrank loadtest` measures what it says against a real cluster (shard processes over a
built table set, items 1000...1599, users 1...60, two shards, and a coordinator, all on loopback
and stopped at teardown): Lookups against one shard ask only for that shard's ids; Recommends
draw the users the cluster holds (no silent cold starts) and the report counts cold starts; the
id and user spaces the report names are the ones used. Also `Shard.Ids` and `Recommender.Info`
through a stock gRPC client, and `shardrank info` against a coordinator."""
import json
import subprocess

import grpc
import pytest

from conftest import shardrank_bin
from tables_support import shard_of
from test_cluster import LocalCluster


def loadtest(*args, timeout=120):
    out = subprocess.run([shardrank_bin(), "loadtest", "--warmup", "0", "--quiet", *args],
                         capture_output=True, text=True, timeout=timeout)
    return out


def test_lookups_ask_one_shard_only_for_its_own_ids(tmp_path, server_factory):
    cl = LocalCluster(tmp_path, server_factory)
    shard = cl.shards[1][0].target
    own = [int(i) for i in cl.ids if shard_of(int(i), 2) == 1]
    out = loadtest("--target", shard, "--mix", "lookup", "--batch", "8", "--concurrency", "2", "--duration", "1", "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["ok"] > 0 and rep["error_count"] == 0, rep["errors"]
    assert rep["vectors"] == rep["ok"] * 8, "every id asked for is one the shard holds"
    assert rep["id_space"] == len(own)
    assert f"the {len(own)} ids of table 'items' on shard 1 of 2" in rep["id_source"], rep["id_source"]
    assert "users" not in rep and rep["cold_starts"] == 0
    # The text summary says the same.
    text = loadtest("--target", shard, "--mix", "lookup", "--batch", "8", "--concurrency", "2", "--duration", "0.5")
    assert text.returncode == 0, text.stderr
    assert f"item ids: the {len(own)} ids of table 'items' on shard 1 of 2" in text.stdout, text.stdout
    # --id-space still overrides: ids 0...999, none of them in this table (items start at 1000),
    # most of them another shard's: refused, and the run exits 3.
    forced = loadtest("--target", shard, "--mix", "lookup", "--batch", "4", "--concurrency", "2", "--duration", "0.5",
                      "--id-space", "1000")
    assert forced.returncode == 3, (forced.returncode, forced.stderr)
    assert "item ids: 0...999 (--id-space 1000)" in forced.stdout and "INVALID_ARGUMENT" in forced.stdout
    cl.close()


def test_recommend_users_come_from_the_cluster_and_cold_starts_are_counted(tmp_path, server_factory):
    cl = LocalCluster(tmp_path, server_factory)
    coord = cl.coordinator.target
    out = loadtest("--target", coord, "--mix", "recommend", "--rate", "50", "--duration", "1", "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["ok"] == rep["sent"] == 50
    assert rep["cold_starts"] == 0 and rep["cold_start_share"] == 0
    assert rep["users"] == 60
    assert rep["user_source"] == "1...60 of table 'users' (60 rows over 2 shards; from the coordinator's Info)"
    assert "id_space" not in rep  # Recommend draws no item ids
    # Users the cluster does not hold are cold starts: counted, and said in the summary.
    wide = loadtest("--target", coord, "--mix", "recommend", "--rate", "50", "--duration", "1", "--user-space", "600", "--zipf", "0")
    assert wide.returncode == 0, wide.stderr
    line = next(l for l in wide.stdout.splitlines() if l.startswith("requests:"))
    cold = int(line.split("cold starts ")[1].split()[0])
    assert 0 < cold < 50, line
    assert "user ids: 1...600 (--user-space 600)" in wide.stdout
    # Rank, Similar and Record draw the items table's ids: nothing is refused.
    mixed = loadtest("--target", coord, "--mix", "rank:1,similar:1,record:1", "--rate", "60", "--duration", "1", "--json")
    assert mixed.returncode == 0, mixed.stderr
    m = json.loads(mixed.stdout)
    assert m["error_count"] == 0, m["errors"]
    assert m["id_source"] == "1000...1599 of table 'items' (600 rows over 2 shards; from the coordinator's Info)"
    cl.close()


def test_ids_and_cluster_info_over_stock_grpc(pb, tmp_path, server_factory):
    from shardrank.v1 import recommender_pb2_grpc
    cl = LocalCluster(tmp_path, server_factory)
    with grpc.insecure_channel(cl.coordinator.target) as ch:
        info = recommender_pb2_grpc.RecommenderStub(ch).Info(pb.shard_pb2.InfoRequest(), timeout=5)
    tables = {t.name: t for t in info.tables}
    assert info.shard_count == 2 and info.users_table == "users" and info.items_table == "items"
    assert (tables["items"].rows, tables["items"].min_id, tables["items"].max_id) == (600, 1000, 1599)
    assert (tables["users"].rows, tables["users"].min_id, tables["users"].max_id) == (60, 1, 60)
    with grpc.insecure_channel(cl.shards[0][0].target) as ch:
        stub = pb.shard_pb2_grpc.ShardStub(ch)
        got, offset = [], 0
        while True:
            page = stub.Ids(pb.shard_pb2.IdsRequest(table="items", offset=offset, limit=100), timeout=5)
            if not page.ids:
                break
            got += page.ids
            offset += len(page.ids)
        assert page.rows == len(got) and page.shard == 0 and page.shard_count == 2
        assert sorted(got) == sorted(int(i) for i in cl.ids if shard_of(int(i), 2) == 0)
        with pytest.raises(grpc.RpcError) as e:
            stub.Ids(pb.shard_pb2.IdsRequest(table="items", limit=262_145), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in e.value.details()
    # `shardrank info` against a coordinator prints the cluster's tables.
    out = subprocess.run([shardrank_bin(), "info", "--target", cl.coordinator.target], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("coordinator over 2 shards") and "users table 'users'" in out.stdout
    assert any(l.split()[:1] == ["items"] and "rows 600" in l and "ids 1000...1599" in l for l in out.stdout.splitlines()), out.stdout
    cl.close()

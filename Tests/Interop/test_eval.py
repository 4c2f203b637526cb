"""`shardrank eval` end to end on a small synthetic world with known factors: the two-stage
answer keeps >= 0.95 of the exhaustive recall@10 ceiling at the default budgets, beats the
popularity baseline, and the JSON report carries every metric per K and budget."""
import json
import subprocess

from conftest import shardrank_bin
from test_cluster import LocalCluster  # noqa: F401  (shared helpers)


def test_eval_on_a_synthetic_world(tmp_path, server_factory):
    b = shardrank_bin()
    inp = tmp_path / "world"
    out = subprocess.run([b, "synth", "--out", str(inp), "--users", "400", "--items", "3000", "--dim", "16", "--seed", "5", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    root = tmp_path / "tables"
    out = subprocess.run([b, "build", "--input", str(inp), "--out", str(root), "--shards", "2", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shards = [server_factory(["shard", "--tables", str(root), "--shard", str(s), "--of", "2", "--port", "0", "--log-level", "warning"])
              for s in range(2)]
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps({"tables": str(root), "shards": [[s.target] for s in shards]}))
    coord = server_factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning"])
    report_path = tmp_path / "eval.json"
    out = subprocess.run([b, "eval", "--target", coord.target, "--heldout", str(inp / "heldout.csv"), "--k", "10,20",
                          "--budgets", "50,200", "--max-users", "150", "--json", "--out", str(report_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == json.loads(report_path.read_text())
    rows = {(r["name"], r["budget"]): r for r in report["rows"]}
    exhaustive = rows[("exhaustive", 0)]
    popularity = rows[("popularity", 0)]
    assert report["catalog_size"] == 3000
    for budget in (50, 200):
        r = rows[("two-stage", budget)]
        assert r["users"] == 150 and r["failed"] == 0
        for k in ("10", "20"):
            for m in ("precision", "recall", "map_common", "map_course", "ndcg"):
                assert 0 <= r["metrics"][k][m] <= 1
        assert r["metrics"]["10"]["recall"] >= 0.95 * exhaustive["metrics"]["10"]["recall"]
        assert r["latency_p99_ms"] >= r["latency_p50_ms"] > 0
    assert exhaustive["metrics"]["10"]["recall"] > popularity["metrics"]["10"]["recall"]
    # The PNG of quality and p99 against budget.
    import os
    png = tmp_path / "eval.png"
    root_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    out = subprocess.run([os.path.join(root_dir, "scripts", "plot"), str(report_path), "--out", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # The course AP is never above the common one for the same list (it divides by N >= min(N, #relevant)).
    assert exhaustive["metrics"]["10"]["map_course"] <= exhaustive["metrics"]["10"]["map_common"] + 1e-12


def test_eval_rejects_a_bad_heldout_file(tmp_path):
    bad = tmp_path / "heldout.csv"
    bad.write_text("user_id,item_id,timestamp\n1,2,3\nx,2,3\n")
    out = subprocess.run([shardrank_bin(), "eval", "--target", "127.0.0.1:1", "--heldout", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "heldout.csv:3" in out.stderr


def test_eval_against_nothing_fails_at_once_with_a_human_message(tmp_path):
    held = tmp_path / "heldout.csv"
    held.write_text("user_id,item_id,timestamp\n1,2,3\n")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    import time
    t0 = time.monotonic()
    out = subprocess.run([shardrank_bin(), "eval", "--target", f"127.0.0.1:{port}", "--heldout", str(held)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "nothing is listening" in out.stderr and f"127.0.0.1:{port}" in out.stderr, out.stderr
    assert "eval: two-stage" not in out.stderr, "no configuration runs against a dead coordinator"
    assert time.monotonic() - t0 < 10

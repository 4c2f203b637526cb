"""A short nemesis soak (scripts/soak, docs/operations.md "Soak"): 45 s of fixed-rate Recommend
load and Lookups while replicas are killed, stopped, cut off (network namespaces, when root),
reloaded and rolled; the ledger must find nothing lost, unflagged or late, and the counters must
reconcile. The second test corrupts the ledger on purpose (--inject lose) and expects the soak to
fail: a check that cannot fail checks nothing."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, shardrank_bin


def soak(tmp_path, *extra, duration=45, timeout=420):
    run_dir = tmp_path / "soak"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "soak.py"), "--binary", shardrank_bin(),
                          "--run-dir", str(run_dir), "--duration-s", str(duration), "--rate", "30", "--lookup-rate", "10",
                          "--seed", "3", *extra], capture_output=True, text=True, timeout=timeout)
    report = json.loads((run_dir / "soak-report.json").read_text()) if (run_dir / "soak-report.json").exists() else None
    return out, report


def test_soak_45s_finds_nothing_lost_late_or_unflagged(tmp_path):
    out, rep = soak(tmp_path)
    assert rep is not None, out.stderr[-3000:]
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert rep["ok"] and rep["violations"] == {}
    f = rep["figures"]
    assert f["recommend_total"] >= 0.9 * 30 * 45 and f["lookup_total"] >= 0.9 * 10 * 45
    kinds = {e["kind"] for e in rep["nemesis"]}
    assert {"kill-9", "SIGSTOP"} <= kinds or len(kinds) >= 3, kinds
    c = rep["reconciliation"]["coordinator_requests_by_code"]
    assert c["server_metrics"] == c["server_log"]
    assert "RESULT: OK" in out.stdout


def test_soak_fails_when_an_outcome_is_lost(tmp_path):
    out, rep = soak(tmp_path, "--inject", "lose", duration=12)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    assert rep["violations"]["lost (no outcome)"]["count"] == 1
    assert "counters do not reconcile" in rep["violations"]        # the server counted the request the ledger lost
    assert "RESULT: VIOLATIONS" in out.stdout


def test_an_answer_the_transport_never_delivered_is_not_counted_as_one(pb, tmp_path, server_factory):
    """A client whose stream window is 0 cannot receive the answer: the coordinator computes it,
    cannot send it, and ends the call DEADLINE_EXCEEDED at the deadline. Its counters must then say
    one DEADLINE_EXCEEDED and no answer (the soak saw 3 such over-counts in 10 minutes)."""
    import h2.settings
    from raw_h2 import RawH2
    from shardrank.v1 import recommender_pb2
    from test_cluster import LocalCluster
    from test_metrics import scrape, value
    cl = LocalCluster(tmp_path, server_factory)
    try:
        method = "/shardrank.v1.Recommender/Recommend"
        before = scrape(cl.admin_port)

        def delta(after, name, **labels):
            return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

        def ended(after):
            return delta(after, "shardrank_rpc_requests_total", method=method, code="DEADLINE_EXCEEDED") + \
                delta(after, "shardrank_rpc_requests_total", method=method, code="CANCELLED")
        c = RawH2(cl.coordinator.port)
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.sock.sendall(c.conn.data_to_send())
        c.pump(0.2)
        body = recommender_pb2.RecommendRequest(user_id=7, k=10).SerializeToString()
        sid = c.start(method, body, extra_headers=[("grpc-timeout", "300m")])
        c.wait(sid, wait=3)
        c.close()
        # Wait for the call's end to be counted (the answers counter is updated before it).
        limit = time.monotonic() + 10
        after = scrape(cl.admin_port)
        while ended(after) < 1 and time.monotonic() < limit:
            time.sleep(0.05)
            after = scrape(cl.admin_port)
        assert delta(after, "shardrank_rpc_requests_total", method=method, code="OK") == 0
        assert ended(after) == 1, after
        assert delta(after, "shardrank_recommend_answers_total") == 0, "an answer never delivered was counted"
    finally:
        cl.close()

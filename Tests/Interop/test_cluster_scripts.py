"""The cluster scripts against real processes: cluster/up, status, down on loopback (re-runs, a
taken port, only verified PIDs signalled), the netns mode (one network namespace per process,
links cut and healed with cluster/fault), and the Kubernetes manifests of cluster/k8s/generate
validated against the Kubernetes schemas (PyPI kubernetes-validate, pinned in
cluster/requirements.txt). Every run directory is a temp dir, every cluster is taken down (and
its namespaces removed) even when a test fails."""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, shardrank_bin
from tables_support import build, write_input

CLUSTER = os.path.join(ROOT, "cluster")


def sh(*argv, timeout=60):
    env = dict(os.environ, SHARDRANK_BIN=shardrank_bin())
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)


def cluster(cmd, *args, timeout=60):
    return sh(os.path.join(CLUSTER, cmd), *args, timeout=timeout)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def bindable(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def has_admin_port():
    return "--admin-port" in sh(shardrank_bin(), "shard", "--help", timeout=30).stdout


def alive(pid):
    """Running and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def status_json(topo, run_dir):
    out = cluster("status", topo, "--run-dir", run_dir, "--json", timeout=30)
    return out.returncode, json.loads(out.stdout or "[]")


def proc_name(row):
    return f"shard-{row['shard']}-{row['replica']}" if row["role"] == "shard" else f"coordinator-{row['replica']}"


def recommend(target, user=7):
    out = sh(shardrank_bin(), "recommend", "--target", target, "--user", str(user), "--json", "--timeout-ms", "1000",
             timeout=30)
    doc = json.loads(out.stdout)
    # A full answer exits 0, a degraded one 4 (the answer is printed either way).
    assert out.returncode == (4 if doc["coverage"]["degraded"] else 0), out.stderr
    return doc


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster-tables")
    write_input(str(d / "input"), n_items=400, n_users=40)
    out = build(shardrank_bin(), str(d / "input"), str(d / "tables"), 2)
    assert out.returncode == 0, out.stderr
    return str(d / "tables")


@pytest.fixture
def run_dir(tmp_path):
    d = str(tmp_path / "run")
    yield d
    # Always taken down, even when the test failed half-way.
    cluster("down", "--run-dir", d, "--grace", "5", timeout=60)


def write_topology(path, tables, shards, coordinators, **extra):
    topo = {"tables": tables, "shards": shards, "coordinators": coordinators,
            "coordinator": {"health_interval_ms": 100, "default_deadline_ms": 1000}, **extra}
    path.write_text(json.dumps(topo))
    return str(path)


def test_local_up_status_rerun_down(tables, tmp_path, run_dir):
    p0, p1, pc = free_ports(3)
    extra = {}
    if has_admin_port():  # metrics on PORT+offset for every process
        offset = next((o for o in range(1000, 4000, 7) if all(p + o < 65536 and bindable(p + o) for p in (p0, p1, pc))), None)
        if offset:
            extra["admin"] = {"port_offset": offset}
    topo = write_topology(tmp_path / "two.json", tables, [[f"127.0.0.1:{p0}"], [f"127.0.0.1:{p1}"]], [f"127.0.0.1:{pc}"],
                          **extra)
    t0 = time.monotonic()
    up = cluster("up", topo, "--run-dir", run_dir, "--timeout", "20")
    assert up.returncode == 0, up.stderr
    assert time.monotonic() - t0 < 20
    assert len([l for l in up.stdout.splitlines() if " SERVING" in l]) == 3, up.stdout

    rc, rows = status_json(topo, run_dir)
    assert rc == 0
    assert [(r["role"], r["shard"], r["replica"], r["address"], r["health"]) for r in rows] == [
        ("shard", 0, 0, f"127.0.0.1:{p0}", "SERVING"), ("shard", 1, 0, f"127.0.0.1:{p1}", "SERVING"),
        ("coordinator", None, 0, f"127.0.0.1:{pc}", "SERVING")]
    pids = {proc_name(r): r["pid"] for r in rows}
    assert all(alive(p) for p in pids.values())
    for name in ("shard-0-0", "shard-1-0", "coordinator-0"):
        assert os.path.exists(os.path.join(run_dir, name + ".pid")) and os.path.exists(os.path.join(run_dir, name + ".log"))
    text = cluster("status", topo, "--run-dir", run_dir)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 4  # header + one line per process

    # The cluster answers, over both shards.
    doc = recommend(f"127.0.0.1:{pc}")
    assert len(doc["items"]) == 10 and not doc["coverage"]["degraded"] and doc["coverage"]["shards_answered"] == 2

    if extra:
        import urllib.request
        assert [r["admin"] for r in rows] == [f"127.0.0.1:{p + extra['admin']['port_offset']}" for p in (p0, p1, pc)]
        for r in rows:
            with urllib.request.urlopen(f"http://{r['admin']}/metrics", timeout=5) as resp:
                assert resp.status == 200 and b"shardrank_" in resp.read()

    # Up again: nothing restarted.
    again = cluster("up", topo, "--run-dir", run_dir, "--json")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert {proc_name(r): r["pid"] for r in json.loads(again.stdout)} == pids

    # A dead shard shows in status, and up restarts just that one.
    victim = pids["shard-1-0"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The coordinator stops saying SERVING once it notices (readiness: every shard reachable).
    deadline = time.monotonic() + 10
    while True:
        rc, rows = status_json(topo, run_dir)
        if [r["health"] for r in rows] == ["SERVING", "STOPPED", "NOT_SERVING"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rc == 1 and [r["health"] for r in rows] == ["SERVING", "STOPPED", "NOT_SERVING"]
    healed = cluster("up", topo, "--run-dir", run_dir, "--json")
    assert healed.returncode == 0, healed.stderr
    rows = json.loads(healed.stdout)
    assert [r["health"] for r in rows][:2] == ["SERVING", "SERVING"]
    deadline = time.monotonic() + 10
    while rows[2]["health"] != "SERVING" and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = status_json(topo, run_dir)[1]
    assert all(r["health"] == "SERVING" for r in rows), rows
    assert rows[0]["pid"] == pids["shard-0-0"] and rows[2]["pid"] == pids["coordinator-0"]
    assert rows[1]["pid"] != victim

    # A pid file that names someone else's process is never signalled.
    os.kill(rows[1]["pid"], signal.SIGKILL)
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        with open(f"/proc/{stranger.pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        with open(os.path.join(run_dir, "shard-1-0.pid"), "w") as f:
            f.write(f"{stranger.pid} {start}\n")
        # A process that does not stop on SIGTERM (here: SIGSTOPped) is SIGKILLed after the grace time.
        os.kill(rows[0]["pid"], signal.SIGSTOP)
        t0 = time.monotonic()
        down = cluster("down", topo, "--run-dir", run_dir, "--grace", "1")
        assert down.returncode == 0, down.stderr
        assert "SIGKILL" in down.stderr and time.monotonic() - t0 < 10
        assert stranger.poll() is None, "cluster/down signalled a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()

    # Down: nothing left, pid files and state gone, logs kept; down and status when down are fine.
    for pid in (rows[0]["pid"], rows[2]["pid"]):
        assert not alive(pid)
    assert not [f for f in os.listdir(run_dir) if f.endswith(".pid")]
    assert not os.path.exists(os.path.join(run_dir, "cluster.json"))
    assert os.path.exists(os.path.join(run_dir, "shard-0-0.log"))
    assert cluster("down", topo, "--run-dir", run_dir).returncode == 0
    st = cluster("status", topo, "--run-dir", run_dir)
    assert st.returncode == 1 and "nothing is up" in st.stderr


def test_local_up_with_tls(tables, tmp_path, run_dir):
    """`up --tls`: development certificates in RUN_DIR/certs, mutual TLS between coordinator and
    shards, status over TLS; a cleartext client is refused, a TLS client is answered."""
    p0, p1, pc = free_ports(3)
    topo = write_topology(tmp_path / "tls.json", tables, [[f"127.0.0.1:{p0}"], [f"127.0.0.1:{p1}"]], [f"127.0.0.1:{pc}"])
    up = cluster("up", topo, "--run-dir", run_dir, "--timeout", "30", "--tls", timeout=120)
    assert up.returncode == 0, up.stderr
    assert len([l for l in up.stdout.splitlines() if " SERVING" in l]) == 3, up.stdout
    certs = os.path.join(run_dir, "certs")
    assert all(os.path.exists(os.path.join(certs, f)) for f in ("ca.pem", "shard.pem", "coordinator-key.pem", "client.pem"))
    rc, rows = status_json(topo, run_dir)
    assert rc == 0 and all(r["health"] == "SERVING" for r in rows), rows
    out = sh(shardrank_bin(), "recommend", "--target", f"127.0.0.1:{pc}", "--user", "7", "--json", "--tls-ca",
             os.path.join(certs, "ca.pem"), timeout=30)
    assert out.returncode == 0 and not json.loads(out.stdout)["coverage"]["degraded"], out.stderr
    out = sh(shardrank_bin(), "recommend", "--target", f"127.0.0.1:{pc}", "--user", "7", "--timeout-ms", "1000", timeout=30)
    assert out.returncode == 1, out.stdout
    # Running `up` again without --tls on the TLS cluster is refused.
    again = cluster("up", topo, "--run-dir", run_dir, timeout=60)
    assert again.returncode != 0 and "TLS" in again.stderr, again.stderr


def test_a_taken_port_is_refused_by_address(tables, tmp_path, run_dir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        p1, pc = free_ports(2)
        topo = write_topology(tmp_path / "clash.json", tables, [[f"127.0.0.1:{p1}"], [f"127.0.0.1:{taken}"]], [f"127.0.0.1:{pc}"])
        out = cluster("up", topo, "--run-dir", run_dir, timeout=30)
        assert out.returncode != 0
        assert f"127.0.0.1:{taken}" in out.stderr and "in use" in out.stderr, out.stderr
        # Nothing was started: the other ports are still free, no pid files, no state.
        for p in (p1, pc):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            s.close()
        assert not [f for f in os.listdir(run_dir) if f.endswith(".pid") or f == "cluster.json"]
    finally:
        holder.close()


def test_a_topology_without_coordinators_says_so(tables, tmp_path, run_dir):
    p0, p1 = free_ports(2)
    topo = write_topology(tmp_path / "shards-only.json", tables, [[f"127.0.0.1:{p0}"], [f"127.0.0.1:{p1}"]], [])
    try:
        out = cluster("up", topo, "--run-dir", run_dir, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "no \"coordinators\": starting shards only" in out.stderr, out.stderr
        assert "binary " in out.stderr, "cluster/up names the binary it runs"
    finally:
        cluster("down", topo, "--run-dir", run_dir, timeout=60)


def test_a_process_that_fails_to_start_is_reported_and_undone(tables, tmp_path, run_dir):
    ports = free_ports(4)
    # Three shards over a table set built for two: every shard exits at once with a reason.
    topo = write_topology(tmp_path / "three.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:3]], [f"127.0.0.1:{ports[3]}"])
    out = cluster("up", topo, "--run-dir", run_dir, "--timeout", "20")
    assert out.returncode == 2
    assert "exited with status" in out.stderr and "of 3" in out.stderr, out.stderr  # the log's last lines
    assert not [f for f in os.listdir(run_dir) if f.endswith(".pid") or f == "cluster.json"]
    assert all(bindable(p) for p in ports)


def test_clear_refusals(tables, tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("cluster_tool", os.path.join(CLUSTER, "cluster.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    topo = write_topology(tmp_path / "t.json", tables, [["127.0.0.1:7101"]], [])
    # The netns mode without root.
    monkeypatch.setattr(tool.os, "geteuid", lambda: 1000)
    assert tool.main(["up", "--netns", topo, "--run-dir", str(tmp_path / "r")]) == 2
    assert "needs root" in capsys.readouterr().err
    monkeypatch.undo()
    # Non-loopback addresses without --netns; a missing table set.
    bad = write_topology(tmp_path / "far.json", tables, [["10.1.2.3:7101"]], [])
    assert tool.main(["up", bad, "--run-dir", str(tmp_path / "r")]) == 2
    assert "10.1.2.3:7101" in capsys.readouterr().err
    nowhere = write_topology(tmp_path / "none.json", str(tmp_path / "nope"), [["127.0.0.1:7101"]], [])
    assert tool.main(["up", nowhere, "--run-dir", str(tmp_path / "r")]) == 2
    assert "no table set" in capsys.readouterr().err
    assert tool.main(["fault", "cut", "0", "0", "--run-dir", str(tmp_path / "r")]) == 2
    assert "netns" in capsys.readouterr().err
    for cmd in ("up", "down", "status", "fault"):
        h = cluster(cmd, "--help", timeout=10)
        assert h.returncode == 0 and "usage: cluster " + cmd in h.stdout


def test_the_release_build_is_preferred_to_a_newer_debug_build(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("cluster_tool_bin", os.path.join(CLUSTER, "cluster.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.delenv("SHARDRANK_BIN", raising=False)
    monkeypatch.setattr(tool, "REPO", str(tmp_path))
    paths = {}
    for kind in ("release", "debug"):
        d = tmp_path / ".build" / kind
        d.mkdir(parents=True)
        paths[kind] = d / "shardrank"
        paths[kind].write_text("#!/bin/sh\n")
        paths[kind].chmod(0o755)
    os.utime(paths["release"], (1_000_000, 1_000_000))  # the debug build is newer
    assert tool.find_binary(None) == str(paths["release"])
    paths["release"].unlink()
    assert tool.find_binary(None) == str(paths["debug"])
    paths["debug"].unlink()
    with pytest.raises(tool.Fail, match="no shardrank binary"):
        tool.find_binary(None)


def test_4x2_plus_coordinator_serves_within_10s(tmp_path_factory, tmp_path, run_dir):
    d = tmp_path_factory.mktemp("cluster-tables-4")
    write_input(str(d / "input"), n_items=400, n_users=40)
    assert build(shardrank_bin(), str(d / "input"), str(d / "tables"), 4).returncode == 0
    ports = free_ports(9)
    topo = write_topology(tmp_path / "big.json", str(d / "tables"),
                          [[f"127.0.0.1:{ports[s]}", f"127.0.0.1:{ports[4 + s]}"] for s in range(4)], [f"127.0.0.1:{ports[8]}"])
    t0 = time.monotonic()
    up = cluster("up", topo, "--run-dir", run_dir, "--timeout", "10")
    took = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    assert took <= 10, f"4x2+1 took {took:.1f} s to reach SERVING"
    rows = status_json(topo, run_dir)[1]
    assert len(rows) == 9 and all(r["health"] == "SERVING" for r in rows)
    doc = recommend(rows[-1]["address"])
    assert doc["coverage"]["shards_answered"] == 4 and not doc["coverage"]["degraded"]
    assert cluster("down", topo, "--run-dir", run_dir).returncode == 0
    assert not any(alive(r["pid"]) for r in rows)


def test_down_and_status_without_a_topology_cover_every_cluster_under_run(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("cluster_tool", os.path.join(CLUSTER, "cluster.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, "DEFAULT_RUN_ROOT", str(tmp_path))
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        procs = tool.processes({"shards": [["127.0.0.1:9"]], "coordinators": []})
        (d / "cluster.json").write_text(json.dumps({"topology": f"/x/{name}.json", "mode": "local", "binary": shardrank_bin(),
                                                    "run_dir": str(d), "source_processes": procs, "processes": procs,
                                                    "netns": None}))
        (d / "shard-0-0.pid").write_text("999999999 1\n")  # stale: never signalled, just removed
    assert tool.main(["status", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["cluster"], r["health"]) for r in rows] == [("a", "STOPPED"), ("b", "STOPPED")]
    assert tool.main(["down"]) == 0
    assert not list(tmp_path.glob("*/cluster.json")) and not list(tmp_path.glob("*/*.pid"))
    assert tool.main(["status"]) == 1 and "nothing is up" in capsys.readouterr().err


def test_topology_files_of_one_name_get_their_own_run_directories(tables, tmp_path, capsys, monkeypatch):
    """Two clusters from two files both named topology.json (in different directories) run side
    by side: each gets run/topology-<hash of its path>/, which cluster/up names; status lists
    both, `down TOPOLOGY` stops only its own, a bare down stops the rest."""
    spec = importlib.util.spec_from_file_location("cluster_tool_dirs", os.path.join(CLUSTER, "cluster.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = tmp_path / "run"
    monkeypatch.setattr(tool, "DEFAULT_RUN_ROOT", str(root))
    monkeypatch.setenv("SHARDRANK_BIN", shardrank_bin())
    ports = free_ports(4)
    topos = []
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        topos.append(write_topology(tmp_path / name / "topology.json", tables,
                                    [[f"127.0.0.1:{ports[2 * i]}"], [f"127.0.0.1:{ports[2 * i + 1]}"]], []))
    dirs = [tool.run_dir_for(t, None) for t in topos]
    assert dirs[0] != dirs[1] and all(os.path.dirname(d) == str(root) for d in dirs), dirs
    assert all(re.fullmatch(r"topology-[0-9a-f]{8}", os.path.basename(d)) for d in dirs), dirs
    # The same file reached through another path (a symlink) is the same cluster.
    os.symlink(tmp_path / "a", tmp_path / "a-link")
    assert tool.run_dir_for(str(tmp_path / "a-link" / "topology.json"), None) == dirs[0]
    assert tool.run_dir_for(topos[0], str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    try:
        for t, d in zip(topos, dirs):
            capsys.readouterr()
            assert tool.main(["up", t, "--timeout", "20"]) == 0, capsys.readouterr().err
            err = capsys.readouterr().err
            assert f"run directory {d}" in err, err
            assert os.path.exists(os.path.join(d, "cluster.json"))
        assert tool.main(["status", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert sorted((r["cluster"], r["address"]) for r in rows) == sorted(
            (os.path.basename(d), f"127.0.0.1:{p}") for d, pair in zip(dirs, (ports[:2], ports[2:])) for p in pair)
        assert all(r["health"] == "SERVING" for r in rows)
        pids = {r["address"]: r["pid"] for r in rows}
        assert tool.main(["down", topos[0], "--grace", "5"]) == 0
        assert not any(alive(pids[f"127.0.0.1:{p}"]) for p in ports[:2])
        assert all(alive(pids[f"127.0.0.1:{p}"]) for p in ports[2:])
        assert tool.main(["status", topos[1], "--json"]) == 0
        assert [r["health"] for r in json.loads(capsys.readouterr().out)] == ["SERVING", "SERVING"]
        assert tool.main(["down", "--grace", "5"]) == 0
        assert not any(alive(p) for p in pids.values())
    finally:
        tool.main(["down", "--grace", "5"])


def test_a_cluster_in_a_run_directory_without_the_hash_is_still_found(tmp_path, monkeypatch):
    """A cluster started when the run directory was run/<name>/ is still stopped by name."""
    spec = importlib.util.spec_from_file_location("cluster_tool_legacy", os.path.join(CLUSTER, "cluster.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, "DEFAULT_RUN_ROOT", str(tmp_path / "run"))
    topo = tmp_path / "x" / "topology.json"
    topo.parent.mkdir()
    topo.write_text("{}")
    other = tmp_path / "y" / "topology.json"
    other.parent.mkdir()
    other.write_text("{}")
    legacy = tmp_path / "run" / "topology"
    legacy.mkdir(parents=True)
    (legacy / "cluster.json").write_text(json.dumps({"topology": str(topo)}))
    assert tool.run_dir_for(str(topo), None) == str(legacy)
    assert tool.run_dir_for(str(other), None) == tool.default_run_dir(str(other)) != str(legacy)


def netns_unavailable():
    if os.geteuid() != 0:
        return "not root: network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"srprobe{os.getpid()}"
    out = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return f"`ip netns add` fails here: {out.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def test_netns_cluster_with_a_cut_link(tables, tmp_path, run_dir):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    # The topology's loopback addresses become one address per namespace; the ports stay.
    topo = write_topology(tmp_path / "hosts.json", tables, [["127.0.0.1:7101"], ["127.0.0.1:7102"]], ["127.0.0.1:7000"])
    state = None
    try:
        up = cluster("up", "--netns", topo, "--run-dir", run_dir, "--timeout", "20")
        assert up.returncode == 0, up.stderr
        with open(os.path.join(run_dir, "cluster.json")) as f:
            state = json.load(f)
        rc, rows = status_json(topo, run_dir)
        assert rc == 0 and all(r["health"] == "SERVING" for r in rows)
        subnet = state["netns"]["subnet"]
        assert all(re.fullmatch(r"10\.77\.\d+\.\d+:\d+", r["address"]) for r in rows), rows
        assert len({r["address"].split(":")[0] for r in rows}) == 3  # three "hosts"
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(r["netns"] in names for r in rows)
        with open(os.path.join(run_dir, "topology.json")) as f:
            eff = json.load(f)
        assert eff["shards"] == [[rows[0]["address"]], [rows[1]["address"]]] and eff["coordinators"] == [rows[2]["address"]]
        # Each shard process really listens inside its own namespace only.
        ss = subprocess.run(["ip", "netns", "exec", rows[0]["netns"], "ss", "-Hltn"], capture_output=True, text=True).stdout
        assert rows[0]["address"] in ss and rows[1]["address"] not in ss
        coord = rows[2]["address"]
        doc = recommend(coord)
        assert len(doc["items"]) == 10 and not doc["coverage"]["degraded"]

        # Cut shard 1's link: its health check fails from outside, answers are flagged degraded.
        assert cluster("fault", "cut", "1", "0", topo, "--run-dir", run_dir).returncode == 0
        rc, cut_rows = status_json(topo, run_dir)
        # The coordinator keeps answering (flagged degraded); its readiness turns NOT_SERVING once its
        # next health check of shard 1 fails (docs/operations.md, "Readiness"), so either is right.
        health = [r["health"] for r in cut_rows]
        assert rc == 1 and health[:2] == ["SERVING", "DOWN"] and health[2] in ("SERVING", "NOT_SERVING"), health
        t0 = time.monotonic()
        doc = recommend(coord, user=8)
        assert doc["coverage"]["degraded"] and time.monotonic() - t0 < 3
        lst = cluster("fault", "list", topo, "--run-dir", run_dir)
        assert re.search(r"shard-1-0 .* CUT", lst.stdout), lst.stdout

        # Heal: full answers again within a few seconds (ejection ends on a SERVING health check).
        assert cluster("fault", "heal", "1", "0", topo, "--run-dir", run_dir).returncode == 0
        deadline = time.monotonic() + 10
        while True:
            doc = recommend(coord, user=8)
            if not doc["coverage"]["degraded"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not doc["coverage"]["degraded"] and len(doc["items"]) == 10

        # Blackhole shard 0 towards the coordinator: still SERVING to a health check from this host,
        # but the coordinator's calls time out and its answers are flagged; heal undoes it.
        assert cluster("fault", "blackhole", "0", "0", topo, "--run-dir", run_dir).returncode == 0
        assert re.search(r"shard-0-0 .* BLACKHOLE " + re.escape(rows[2]["address"].split(":")[0]),
                         cluster("fault", "list", topo, "--run-dir", run_dir).stdout)
        h = sh(shardrank_bin(), "health", "--target", rows[0]["address"], "--timeout-ms", "1000")
        assert h.returncode == 0 and "SERVING" in h.stdout
        assert recommend(coord, user=9)["coverage"]["degraded"]
        assert cluster("fault", "heal", "0", "0", topo, "--run-dir", run_dir).returncode == 0
        deadline = time.monotonic() + 10
        while True:
            doc = recommend(coord, user=9)
            if not doc["coverage"]["degraded"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not doc["coverage"]["degraded"]

        down = cluster("down", topo, "--run-dir", run_dir)
        assert down.returncode == 0, down.stderr
        assert not any(alive(r["pid"]) for r in rows)
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(r["netns"] in names for r in rows)
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert state["netns"]["bridge"] not in links
        assert subnet not in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    finally:
        cluster("down", "--run-dir", run_dir, "--grace", "5")
        if state:  # belt and braces: nothing of ours survives a failed test
            for h in state["netns"]["hosts"].values():
                subprocess.run(["ip", "netns", "del", h["netns"]], capture_output=True)
            subprocess.run(["ip", "link", "del", state["netns"]["bridge"]], capture_output=True)


def kubernetes_validate():
    try:
        import kubernetes_validate as kv
        import yaml  # noqa: F401
        return kv
    except ImportError:
        pass
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(CLUSTER, "requirements.txt")],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        pytest.fail(f"cannot install cluster/requirements.txt (kubernetes-validate): {out.stderr[-500:]}")
    import importlib
    importlib.invalidate_caches()
    import kubernetes_validate as kv
    return kv


def test_k8s_manifests_validate(tmp_path):
    kv = kubernetes_validate()
    import yaml
    topo = {"tables": "/srv/tables", "model": "/srv/tables/models/mlp.safetensors", "query_tower": "/srv/tables/towers/T.safetensors",
            "admin": {"port_offset": 1000},
            "shards": [["a:1", "b:1"], ["c:1", "d:1"], ["e:1", "f:1"]], "coordinators": ["x:1", "y:1"],
            "coordinator": {"search_budget": 150}}
    (tmp_path / "t.json").write_text(json.dumps(topo))
    out = subprocess.run([os.path.join(CLUSTER, "k8s", "generate"), str(tmp_path / "t.json"), str(tmp_path / "k8s"),
                          "--namespace", "recs"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    docs = []
    for name in sorted(os.listdir(tmp_path / "k8s")):
        with open(tmp_path / "k8s" / name) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    for version in ("1.30.0", kv.latest_version()):
        for d in docs:
            kv.validate(d, version, strict=True)  # raises ValidationError
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "PersistentVolumeClaim",
                               "PodDisruptionBudget", "Service", "StatefulSet"]
    headless = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    sets = by_kind["StatefulSet"]
    assert len(sets) == 2 and all(s["spec"]["replicas"] == 3 and s["spec"]["serviceName"] == headless[0]["metadata"]["name"]
                                  for s in sets)
    topo_cm = json.loads(by_kind["ConfigMap"][0]["data"]["topology.json"])
    assert topo_cm["shards"][2] == ["shardrank-shard-r0-2.shardrank-shard.recs.svc.cluster.local:7100",
                                    "shardrank-shard-r1-2.shardrank-shard.recs.svc.cluster.local:7100"]
    assert topo_cm["coordinator"] == {"search_budget": 150} and topo_cm["model"] == "/tables/models/mlp.safetensors"
    dep = by_kind["Deployment"][0]
    assert dep["spec"]["replicas"] == 2
    pods = [s["spec"]["template"]["spec"] for s in sets] + [dep["spec"]["template"]["spec"]]
    for pod in pods:
        c = pod["containers"][0]
        port = c["ports"][0]["containerPort"]
        # The image (scripts/release) has no shell: the binary is the command, and TLS is on.
        assert c["command"] == ["/usr/local/bin/shardrank"]
        args = c["args"]
        assert [args[args.index(f) + 1] for f in ("--tls-cert", "--tls-key", "--tls-ca")] == \
            ["/etc/shardrank/tls/tls.crt", "/etc/shardrank/tls/tls.key", "/etc/shardrank/tls/ca.crt"]
        assert "--insecure-plaintext" not in args
        tls_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/shardrank/tls")
        secret = next(v for v in pod["volumes"] if v["name"] == tls_mount["name"])["secret"]["secretName"]
        assert secret == ("shardrank-coordinator-tls" if args[0] == "coordinator" else "shardrank-shard-tls")
        # The kubelet's grpc probe has no TLS: the health checks run `shardrank health` over TLS in
        # the pod (startup everywhere, readiness on shards); liveness (and a coordinator's
        # readiness: it answers degraded while a shard is down) is /healthz on the admin port.
        checks = ["startupProbe", "readinessProbe"] if args[0] == "shard" else ["startupProbe"]
        for probe in checks:
            cmd = c[probe]["exec"]["command"]
            assert cmd[:4] == ["/usr/local/bin/shardrank", "health", "--target", f"localhost:{port}"] and "--tls-ca" in cmd
        for probe in {"startupProbe", "readinessProbe", "livenessProbe"} - set(checks):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": port + 1000, "scheme": "HTTP"}
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert [p["containerPort"] for p in c["ports"]] == [port, port + 1000]  # grpc, admin (metrics)
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        assert pod["automountServiceAccountToken"] is False
        tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")  # writable scratch on a read-only root
        assert next(v for v in pod["volumes"] if v["name"] == tmp["name"])["emptyDir"]
    shard_args = sets[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert shard_args[shard_args.index("--of") + 1] == "3"
    assert shard_args[shard_args.index("--shard") + 1] == "$(POD_INDEX)"  # shard index = pod ordinal, expanded by Kubernetes
    env = sets[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}}]
    dep_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert dep_args[dep_args.index("--token-file") + 1] == "/etc/shardrank/tokens/tokens"
    assert dep_args[dep_args.index("--topology") + 1] == "/etc/shardrank/topology/topology.json"
    assert {"name": "tokens", "secret": {"secretName": "shardrank-tokens", "defaultMode": 0o440}} in dep["spec"]["template"]["spec"]["volumes"]

    # NetworkPolicies: everything ShardRank denied by default; clients → coordinator gRPC,
    # coordinator → shard gRPC, Prometheus → both admin ports; nothing else.
    pols = {p["metadata"]["name"]: p["spec"] for p in by_kind["NetworkPolicy"]}
    assert set(pols) == {"shardrank-default-deny", "shardrank-clients-to-coordinator", "shardrank-coordinator-to-shards",
                         "shardrank-prometheus-to-admin"}
    assert pols["shardrank-default-deny"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "shardrank"}},
                                              "policyTypes": ["Ingress"]}
    to_shards = pols["shardrank-coordinator-to-shards"]
    assert to_shards["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "shard"
    assert to_shards["ingress"] == [{"from": [{"podSelector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}],
                                     "ports": [{"protocol": "TCP", "port": 7100}]}]
    to_coord = pols["shardrank-clients-to-coordinator"]
    assert to_coord["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert to_coord["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 7000}]
    assert to_coord["ingress"][0]["from"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"shardrank.io/client": "true"}}}]
    prom = pols["shardrank-prometheus-to-admin"]["ingress"][0]
    assert sorted(p["port"] for p in prom["ports"]) == [8000, 8100]
    assert prom["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    # PodDisruptionBudgets: one shard pod and one coordinator at a time.
    pdbs = {p["metadata"]["name"]: p["spec"] for p in by_kind["PodDisruptionBudget"]}
    assert pdbs["shardrank-shard"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "shardrank",
                                                                                      "app.kubernetes.io/component": "shard"}}}
    assert pdbs["shardrank-coordinator"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert any(v.get("persistentVolumeClaim") for v in sets[0]["spec"]["template"]["spec"]["volumes"])
    assert "--mlp" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    coord_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert topo_cm["query_tower"] == "/tables/towers/T.safetensors"
    assert coord_args[coord_args.index("--query-tower") + 1] == "/tables/towers/T.safetensors"

    # --insecure-plaintext (test clusters): no TLS, no tokens, the kubelet's own grpc probes.
    out = subprocess.run([os.path.join(CLUSTER, "k8s", "generate"), str(tmp_path / "t.json"), str(tmp_path / "plain"),
                          "--insecure-plaintext", "--client-namespace-labels", "team=recs", "--client-pod-labels", ""],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    plain = []
    for name in sorted(os.listdir(tmp_path / "plain")):
        with open(tmp_path / "plain" / name) as f:
            plain += [d for d in yaml.safe_load_all(f) if d]
    for d in plain:
        kv.validate(d, "1.30.0", strict=True)
    for d in plain:
        if d["kind"] in ("StatefulSet", "Deployment"):
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert "--insecure-plaintext" in c["args"] and "--tls-cert" not in c["args"] and "--token-file" not in c["args"]
            assert c["startupProbe"]["grpc"]["port"] == c["ports"][0]["containerPort"]
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "shardrank-clients-to-coordinator":
            assert d["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "recs"}}, "podSelector": {}}]
    bad = subprocess.run([os.path.join(CLUSTER, "k8s", "generate"), str(tmp_path / "t.json"), str(tmp_path / "bad"),
                          "--client-pod-labels", "app"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr

    # The validator is not a rubber stamp: a broken probe and an unknown field are rejected.
    broken = json.loads(json.dumps(sets[0]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": "grpc-port"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.30.0", strict=True)
    broken = json.loads(json.dumps(sets[0]))
    broken["spec"]["template"]["spec"]["containers"][0]["replicaz"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.30.0", strict=True)

    # The committed example is what the generator makes of the committed example topology.
    regen = tmp_path / "example"
    out = subprocess.run([os.path.join(CLUSTER, "k8s", "generate"), os.path.join(CLUSTER, "examples", "local-4x2.json"),
                          str(regen), "--shard-memory", "2Gi"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    committed = os.path.join(CLUSTER, "k8s", "example")
    assert sorted(os.listdir(regen)) == sorted(os.listdir(committed))
    for name in os.listdir(regen):
        with open(regen / name) as a, open(os.path.join(committed, name)) as b:
            assert a.read() == b.read(), \
                f"cluster/k8s/example/{name} is stale: rerun cluster/k8s/generate cluster/examples/local-4x2.json cluster/k8s/example --shard-memory 2Gi"


def test_k8s_memory_requests_follow_the_table_set_and_the_coordinator_settings(tmp_path):
    import yaml
    # A table set on this machine: 3 shards, shard 0's slice the largest (sparse files: sizes only).
    v = tmp_path / "tables" / "v2"
    v.mkdir(parents=True)
    (v / "manifest.json").write_text("{}")
    for name, mib in (("items.0-of-3.srt", 90), ("items.0-of-3.ann.srt", 10), ("items.1-of-3.srt", 60), ("users.2-of-3.srt", 5)):
        with open(v / name, "wb") as f:
            f.truncate(mib << 20)
    (tmp_path / "tables" / "v1").mkdir()  # older, and without a manifest: not a version
    topo = {"tables": "tables", "shards": [["a:1"], ["b:1"], ["c:1"]],
            "coordinator": {"session_users": 100000, "session_events_per_user": 10, "user_cache_mb": 100, "row_cache_mb": 0}}
    (tmp_path / "t.json").write_text(json.dumps(topo))

    def requests(*extra):
        out = subprocess.run([os.path.join(CLUSTER, "k8s", "generate"), str(tmp_path / "t.json"), str(tmp_path / "k8s"), *extra],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        got = {}
        for name in ("30-shards.yaml", "40-coordinator.yaml"):
            for d in yaml.safe_load_all(open(tmp_path / "k8s" / name)):
                if d and d["kind"] in ("StatefulSet", "Deployment"):
                    got[d["kind"]] = d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
        return got
    # Shard: 64 MiB + 2 x 100 MiB (two versions of shard 0's slice during a switch) = 264 → 320Mi.
    # Coordinator: 64 + 100 + 0 MiB + 100,000 x (120 + 16 x 10) B = 190.7 MiB → 192Mi.
    assert requests() == {"StatefulSet": "320Mi", "Deployment": "192Mi"}
    assert requests("--shard-memory", "3Gi", "--coordinator-memory", "1Gi") == {"StatefulSet": "3Gi", "Deployment": "1Gi"}
    topo["tables"] = "elsewhere"   # not on this machine: the fallback, said on stderr
    del topo["coordinator"]        # the defaults: 64 + 256 + 64 MiB + 1,000,000 x 920 B = 1261 MiB → 1280Mi
    (tmp_path / "t.json").write_text(json.dumps(topo))
    assert requests() == {"StatefulSet": "2Gi", "Deployment": "1280Mi"}


# A LightGBM text model of one split over the coordinator's `popularity` feature: more popular
# items score higher (a ranker that orders differently from `dot`).
POPULARITY_RANKER = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=0
objective=lambdarank
feature_names=popularity
feature_infos=[0:1000]
tree_sizes=0

Tree=0
num_leaves=2
num_cat=0
split_feature=0
split_gain=1
threshold=2.5
decision_type=2
left_child=-1
right_child=-2
leaf_value=-1 1
leaf_weight=1 1
leaf_count=1 1
internal_value=0
internal_weight=0
internal_count=2
is_linear=0
shrinkage=1


end of trees
"""


def test_rankers_in_the_topology_are_served_by_name(tables, tmp_path, run_dir, pb):
    import grpc
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    (tmp_path / "pop.txt").write_text(POPULARITY_RANKER)
    ports = free_ports(3)
    # A relative path: resolved against the topology file's directory.
    topo = write_topology(tmp_path / "ranked.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"],
                          rankers={"pop": "pop.txt"})
    try:
        out = cluster("up", topo, "--run-dir", run_dir, timeout=60)
        assert out.returncode == 0, out.stderr
        with grpc.insecure_channel(f"127.0.0.1:{ports[2]}") as ch:
            stub = recommender_pb2_grpc.RecommenderStub(ch)
            req = dict(user_id=7, k=300, diversity_lambda=1.0, return_features=True)
            dot = stub.Recommend(recommender_pb2.RecommendRequest(**req), timeout=5)
            pop = stub.Recommend(recommender_pb2.RecommendRequest(model="pop", **req), timeout=5)
            names = list(dot.features.names)
            col = names.index("popularity")
            popularity = {i: dot.features.values[r * len(names) + col] for r, i in enumerate(dot.features.item_ids)}
            # The tree scores +1 above popularity 2.5 and -1 below: the popular items come first.
            scores = [it.score for it in pop.items]
            assert set(scores) == {1.0, -1.0} and scores == sorted(scores, reverse=True), scores
            assert all((popularity[it.item_id] > 2.5) == (it.score == 1.0) for it in pop.items if it.item_id in popularity)
            with pytest.raises(grpc.RpcError) as e:
                stub.Recommend(recommender_pb2.RecommendRequest(user_id=7, k=5, model="nope"), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pop" in e.value.details()
    finally:
        cluster("down", topo, "--run-dir", run_dir, timeout=60)
    # A model reading a feature the coordinator does not compute stops the coordinator, named.
    (tmp_path / "bad.txt").write_text(POPULARITY_RANKER.replace("feature_names=popularity", "feature_names=clicks"))
    bad = write_topology(tmp_path / "bad.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"],
                         rankers={"bad": "bad.txt"})
    out = cluster("up", bad, "--run-dir", run_dir, "--timeout", "20")
    assert out.returncode == 2 and "clicks" in out.stderr, out.stderr
    missing = write_topology(tmp_path / "missing.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"],
                             rankers={"x": "nope.txt"})
    out = cluster("up", missing, "--run-dir", run_dir, "--timeout", "20")
    assert out.returncode == 2 and "nope.txt" in out.stderr and "not a file" in out.stderr, out.stderr


def test_a_query_tower_in_the_topology_is_served(tables, tmp_path, run_dir, pb):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    from test_sessions import write_tower
    (tmp_path / "tower").mkdir()
    write_tower(tmp_path / "tower")
    ports = free_ports(3)
    # A relative path: resolved against the topology file's directory; the .json beside it.
    topo = write_topology(tmp_path / "towered.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"],
                          query_tower="tower/T.safetensors")
    try:
        out = cluster("up", topo, "--run-dir", run_dir, timeout=60)
        assert out.returncode == 0, out.stderr
        import grpc
        with grpc.insecure_channel(f"127.0.0.1:{ports[2]}") as ch:
            stub = recommender_pb2_grpc.RecommenderStub(ch)
            stub.RecordEvents(recommender_pb2.RecordEventsRequest(user_id=7, events=[recommender_pb2.Event(item_id=1003)]), timeout=5)
            r = stub.Recommend(recommender_pb2.RecommendRequest(user_id=7, k=5, user_vector=recommender_pb2.USER_VECTOR_MODE_TOWER), timeout=5)
            assert r.user_vector_source == recommender_pb2.USER_VECTOR_SOURCE_TOWER and len(r.items) == 5
            assert 1003 not in [i.item_id for i in r.items] and r.session_events == 1
    finally:
        cluster("down", topo, "--run-dir", run_dir, timeout=60)
    missing = write_topology(tmp_path / "missing.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"],
                             query_tower="nope/T.safetensors")
    out = cluster("up", missing, "--run-dir", run_dir, "--timeout", "20")
    assert out.returncode == 2 and "nope/T.safetensors" in out.stderr and "not a file" in out.stderr, out.stderr


def test_up_with_tracing_writes_one_trace_across_the_processes_logs(tables, tmp_path, run_dir):
    ports = free_ports(3)
    topo = write_topology(tmp_path / "traced.json", tables, [[f"127.0.0.1:{p}"] for p in ports[:2]], [f"127.0.0.1:{ports[2]}"])
    try:
        out = cluster("up", topo, "--run-dir", run_dir, "--trace-sample-rate", "1", timeout=60)
        assert out.returncode == 0, out.stderr
        recommend(f"127.0.0.1:{ports[2]}")  # no traceparent: rate 1 starts a trace
    finally:
        cluster("down", topo, "--run-dir", run_dir, timeout=60)
    spans = {}
    for name in ("coordinator-0", "shard-0-0", "shard-1-0"):
        with open(os.path.join(run_dir, name + ".log")) as f:
            spans[name] = [json.loads(l)["span"] for l in f if l.startswith('{"span":')]
    roots = [s for s in spans["coordinator-0"] if s["name"] == "shardrank.v1.Recommender/Recommend"]
    assert len(roots) == 1 and "parent_span_id" not in roots[0], spans["coordinator-0"]
    trace = roots[0]["trace_id"]
    calls = {s["span_id"] for s in spans["coordinator-0"] if s["kind"] == "client"}
    for shard in ("shard-0-0", "shard-1-0"):
        ours = [s for s in spans[shard] if s["trace_id"] == trace]
        assert ours and all(s["parent_span_id"] in calls for s in ours), spans[shard]
        # At rate 1 the shards also trace the calls that come without a context (the
        # coordinator's Info polls): each is a root of its own trace.
        assert all("parent_span_id" not in s for s in spans[shard] if s["trace_id"] != trace)

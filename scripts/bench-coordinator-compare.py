#!/usr/bin/env python3
"""Recommend, ShardRank vs the Python reference, interleaved in one run (scripts/bench-coordinator).

For each open-loop rate R of the sweep, in rounds: a ShardRank cluster (4 shards + coordinator,
started once with cluster/up) runs `shardrank loadtest --rate R`, then the Python reference
(scripts/bench-coordinator-reference.py, pinned to one core, started once) runs the same load.
Each run reports p50/p99, errors, degraded answers, the server CPU per request (utime + stime of
every server process from /proc, all shards and the coordinator for ShardRank) and the
per-stage timings the answers carry. The result per system is the highest rate whose p99 stays
within --p99-target with zero errors and zero degraded answers (medians over the rounds).

Standard library only; the reference runs in its own venv (--python).
Usage: bench-coordinator-compare.py --bin SHARDRANK --work DIR --topology FILE --world DIR
       --python VENV_PYTHON [--rates 200,400,...] [--duration S] [--rounds N] [--users N]
       [--p99-target MS] [--ref-cpu CORE] [--json OUT]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print("bench-coordinator:", *a, file=sys.stderr, flush=True)


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            raise SystemExit(f"bench-coordinator: server process {p} is gone")
    return total / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def loadtest(binary, target, rate, duration, warmup, users):
    cmd = [binary, "loadtest", "--target", target, "--mix", "recommend", "--rate", str(rate),
           "--duration", str(duration), "--warmup", str(warmup), "--user-space", str(users), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    start = out.stdout.find("{")
    if start < 0:
        raise SystemExit(f"bench-coordinator: loadtest printed no JSON (exit {out.returncode}): {out.stderr[-500:]}")
    return json.JSONDecoder().raw_decode(out.stdout[start:])[0]


def run_one(binary, target, pids, rate, a):
    # CPU is read around the whole loadtest call (warm-up included, at the same rate), so it is
    # divided by the answered requests scaled by (duration + warm-up) / duration.
    c0 = cpu_seconds(pids)
    r = loadtest(binary, target, rate, a.duration, a.warmup, a.users)
    c1 = cpu_seconds(pids)
    answered = r["ok"] * (a.duration + a.warmup) / a.duration
    stages = {k: v["p50_ms"] for k, v in r.get("stages", {}).items()}
    return {
        "rate": rate, "ok": r["ok"], "errors": r["error_count"], "degraded": r["degraded"],
        "p50": r["latency"]["p50_ms"], "p99": r["latency"]["p99_ms"],
        "cpu_ms_per_req": 1000 * (c1 - c0) / max(1, answered), "stages_p50": stages,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--topology", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--rates", default="200,400,800,1200,1600,2000,2400")
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--p99-target", type=float, default=20)
    ap.add_argument("--ref-cpu", default="1")
    ap.add_argument("--json")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    topo = json.load(open(a.topology))
    coord = topo["coordinators"][0]
    rundir = os.path.join(a.work, "cluster-compare")

    subprocess.run([os.path.join(root, "cluster/up"), a.topology, "--run-dir", rundir, "--binary", a.bin],
                   check=True, stdout=sys.stderr)
    ref = None
    try:
        pids = []
        for f in sorted(os.listdir(rundir)):
            if f.endswith(".pid"):
                pids.append(int(open(os.path.join(rundir, f)).read().split()[0]))
        port = free_port()
        log(f"starting the Python reference on 127.0.0.1:{port}, pinned to CPU {a.ref_cpu} (first start builds its index)")
        ref = subprocess.Popen(
            [a.python, os.path.join(here, "bench-coordinator-reference.py"), "--world", a.world, "--port", str(port),
             "--cache", os.path.join(a.work, "reference-cache")],
            stdout=subprocess.PIPE, text=True, stderr=sys.stderr)
        deadline = time.time() + 1800
        while True:
            line = ref.stdout.readline()
            if not line:
                raise SystemExit("bench-coordinator: the reference exited before it was ready")
            if line.startswith("ready"):
                break
            if time.time() > deadline:
                raise SystemExit("bench-coordinator: the reference was not ready within 30 min")
        # Serve on one core (the build used all of them).
        subprocess.run(["taskset", "-a", "-cp", a.ref_cpu, str(ref.pid)], check=True, stdout=subprocess.DEVNULL)
        systems = {"shardrank": (coord, pids), "reference": (f"127.0.0.1:{port}", [ref.pid])}
        rates = [int(x) for x in a.rates.split(",")]
        results = {s: {r: [] for r in rates} for s in systems}
        # Warm both up at the lowest rate, unmeasured (ShardRank's per-version caches fill here).
        for name, (target, _) in systems.items():
            log(f"warming up {name} at {rates[0]}/s")
            loadtest(a.bin, target, rates[0], a.duration, a.warmup, a.users)
        for rnd in range(a.rounds):
            for rate in rates:
                for name, (target, ps) in systems.items():
                    m = run_one(a.bin, target, ps, rate, a)
                    results[name][rate].append(m)
                    log(f"round {rnd + 1} {name:9s} {rate:5d}/s: p50 {m['p50']:.2f} p99 {m['p99']:.2f} ms, "
                        f"errors {m['errors']}, degraded {m['degraded']}, CPU {m['cpu_ms_per_req']:.3f} ms/req")
    finally:
        if ref is not None and ref.poll() is None:
            ref.send_signal(signal.SIGTERM)
            try:
                ref.wait(timeout=20)
            except subprocess.TimeoutExpired:
                ref.kill()
        subprocess.run([os.path.join(root, "cluster/down"), a.topology, "--run-dir", rundir], stdout=sys.stderr)

    def med(ms, key):
        return statistics.median(m[key] for m in ms)

    summary = {}
    print(f"{'rate/s':>7} | {'system':9} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} | {'degraded':>8} | {'CPU ms/req':>10} | stages p50 ms (retrieve / filter / gather / rank / post_rank)")
    for rate in rates:
        for name in systems:
            ms = results[name][rate]
            st = {k: statistics.median(m["stages_p50"].get(k, 0) for m in ms) for k in ("retrieve", "filter", "gather", "rank", "post_rank")}
            print(f"{rate:7d} | {name:9} | {med(ms, 'p50'):7.2f} | {med(ms, 'p99'):7.2f} | {sum(m['errors'] for m in ms):6d} | "
                  f"{sum(m['degraded'] for m in ms):8d} | {med(ms, 'cpu_ms_per_req'):10.3f} | "
                  + " / ".join(f"{st[k]:.3f}" for k in st))
    for name in systems:
        ok = [r for r in rates if all(m["errors"] == 0 and m["degraded"] == 0 for m in results[name][r])
              and med(results[name][r], "p99") <= a.p99_target]
        best = max(ok) if ok else 0
        cpu_at = {r: med(results[name][r], "cpu_ms_per_req") for r in rates}
        summary[name] = {"max_rate_p99_target": best, "cpu_ms_per_req": cpu_at}
    s, r = summary["shardrank"], summary["reference"]
    print(f"highest rate with p99 <= {a.p99_target:g} ms, zero errors and zero degraded: ShardRank {s['max_rate_p99_target']}/s, "
          f"reference {r['max_rate_p99_target']}/s -> {s['max_rate_p99_target'] / max(1, r['max_rate_p99_target']):.2f}x "
          f"(capped at the highest rate swept: {max(rates)}/s)")
    common = [x for x in rates if x <= min(s["max_rate_p99_target"], r["max_rate_p99_target"]) or x == rates[0]]
    for x in common:
        print(f"server CPU per Recommend at {x}/s: ShardRank {s['cpu_ms_per_req'][x]:.3f} ms, reference {r['cpu_ms_per_req'][x]:.3f} ms "
              f"-> {s['cpu_ms_per_req'][x] / max(1e-9, r['cpu_ms_per_req'][x]):.2f}x")
    if a.json:
        json.dump({"results": results, "summary": summary}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()

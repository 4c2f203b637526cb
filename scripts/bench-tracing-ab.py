#!/usr/bin/env python3
"""Interleaved A/B of the Recommend path's server CPU with tracing off and on (BENCHMARKS.md,
"Tracing"): binary A (a build without tracing), binary B with tracing off (the default), and B with
`--trace-sample-rate ON_RATE` on every process, each round a fresh local cluster of 2 shards and a
coordinator on loopback over the demo world (5,000 users, 20,000 items × 32, 2-shard int8 table set
with 10 similar items per item), driven by `shardrank loadtest` open loop at RATE Recommend/s.
Server CPU (user + system, from /proc) of the three processes is read around the measured run
only (after a separate warm-up run) and divided by the requests answered.

Usage: scripts/bench-tracing-ab.py BINARY_A BINARY_B [--rate 300] [--rounds 3] [--duration 10]
       [--warmup 3] [--on-rate 1]
Writes the world and the tables under run/bench-tracing/ (reused), prints one line per run and the
medians. Stops every process it started (by PID) before it exits."""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"bench-tracing-ab: {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    def __init__(self, args, stderr_path):
        self.err = open(stderr_path, "w")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on (\S+):(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"{args[:2]} did not start: {line!r} (see {stderr_path})")
        self.target = f"127.0.0.1:{m.group(2)}"

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def prepare(binary, work):
    world, tables = os.path.join(work, "world"), os.path.join(work, "tables")
    if not os.path.exists(os.path.join(world, "world.json")):
        log("synthesizing the demo world (5000 users, 20000 items, 32 dims, seed 42)")
        subprocess.run([binary, "synth", "--out", world, "--users", "5000", "--items", "20000", "--dim", "32", "--seed", "42", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    if not any(n.startswith("v") for n in (os.listdir(tables) if os.path.isdir(tables) else [])):
        log("building a 2-shard int8 table set with 10 similar items per item")
        subprocess.run([binary, "build", "--input", world, "--out", tables, "--shards", "2", "--dtype", "int8", "--similar", "10", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    return tables


def run_once(binary, tables, work, name, trace_rate, args):
    flags = ["--trace-sample-rate", str(trace_rate)] if trace_rate else []
    procs = []
    try:
        for s in range(2):
            procs.append(Proc([binary, "shard", "--tables", tables, "--shard", str(s), "--of", "2", "--port", "0",
                               "--log-level", "warning", *flags], os.path.join(work, f"{name}-shard-{s}.log")))
        topo = os.path.join(work, f"topology-{name}.json")
        with open(topo, "w") as f:
            f.write('{"tables": "%s", "shards": [["%s"], ["%s"]], "coordinator": {"health_interval_ms": 200}}'
                    % (tables, procs[0].target, procs[1].target))
        procs.append(Proc([binary, "coordinator", "--topology", topo, "--port", "0", "--log-level", "warning", *flags],
                          os.path.join(work, f"{name}-coordinator.log")))
        coord = procs[-1].target
        drive = [binary, "loadtest", "--target", coord, "--mix", "recommend", "--user-space", "5000", "--quiet"]
        subprocess.run(drive + ["--rate", str(args.rate), "--warmup", "0", "--duration", str(args.warmup)],
                       check=True, capture_output=True, text=True, timeout=args.warmup + 60)
        before = [cpu_seconds(p.p.pid) for p in procs]
        out = subprocess.run(drive + ["--rate", str(args.rate), "--warmup", "0", "--duration", str(args.duration)],
                             check=True, capture_output=True, text=True, timeout=args.duration + 60).stdout
        after = [cpu_seconds(p.p.pid) for p in procs]
    finally:
        for p in procs:
            p.stop()
    ok = int(re.search(r"requests: sent \d+, ok (\d+)", out).group(1))
    lat = re.search(r"latency ms: (.*)", out).group(1)
    p50 = float(re.search(r"p50 ([\d.]+)", lat).group(1))
    p99 = float(re.search(r"p99 ([\d.]+)", lat).group(1))
    total = sum(a - b for a, b in zip(after, before)) * 1000 / ok
    coordinator = (after[2] - before[2]) * 1000 / ok
    spans = 0
    if trace_rate:
        for log_name in ("shard-0", "shard-1", "coordinator"):
            with open(os.path.join(work, f"{name}-{log_name}.log")) as f:
                spans += sum(1 for line in f if line.startswith('{"span":'))
    return {"ok": ok, "cpu_ms": total, "coord_ms": coordinator, "p50": p50, "p99": p99, "spans": spans}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary_a")
    ap.add_argument("binary_b")
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--on-rate", type=float, default=1.0)
    args = ap.parse_args()
    a, b = os.path.abspath(args.binary_a), os.path.abspath(args.binary_b)
    work = os.path.join(ROOT, "run", "bench-tracing")
    os.makedirs(work, exist_ok=True)
    tables = prepare(a, work)
    configs = [("A", a, 0), ("B-off", b, 0), ("B-on", b, args.on_rate)]
    results = {name: [] for name, _, _ in configs}
    for r in range(1, args.rounds + 1):
        for name, binary, rate in configs:
            res = run_once(binary, tables, work, name, rate, args)
            results[name].append(res)
            print(f"round {r} {name}: {res['ok']} ok, server CPU {res['cpu_ms']:.3f} ms/request (coordinator {res['coord_ms']:.3f}),"
                  f" p50 {res['p50']} ms, p99 {res['p99']} ms" + (f", {res['spans']} span lines" if rate else ""), flush=True)
    print("medians:")
    base = statistics.median(x["cpu_ms"] for x in results["A"])
    for name, _, _ in configs:
        xs = results[name]
        cpu = statistics.median(x["cpu_ms"] for x in xs)
        print(f"  {name}: server CPU {cpu:.3f} ms/request ({cpu / base:.3f}x A), coordinator {statistics.median(x['coord_ms'] for x in xs):.3f},"
              f" p50 {statistics.median(x['p50'] for x in xs)} ms, p99 {statistics.median(x['p99'] for x in xs)} ms")
    print("median of paired ratios (each round against its own A):")
    for name, _, _ in configs[1:]:
        ratios = [x["cpu_ms"] / y["cpu_ms"] for x, y in zip(results[name], results["A"])]
        coord = [x["coord_ms"] / y["coord_ms"] for x, y in zip(results[name], results["A"])]
        print(f"  {name}/A: server CPU {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)}),"
              f" coordinator {statistics.median(coord):.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarises run/bench-shard/results (written by scripts/bench-shard): medians over runs, ratios
to the anchors, as markdown tables on stdout."""
import csv, glob, json, os, statistics, sys

res = sys.argv[1]
med = statistics.median
def load(pattern):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(res, pattern)))]
out = []
if os.path.exists(os.path.join(res, "machine.txt")):
    out.append("machine: " + open(os.path.join(res, "machine.txt")).read().strip())

rows = []
for dt in ("f32", "int8"):
    for batch in (256, 1024):
        s = load(f"lookup-{dt}-{batch}-*.json")
        r = load(f"redis-{dt}-{batch}-*.json")
        if not s or not r:
            continue
        sv = med(x["vectors_per_s"] for x in s)
        rv = med(x["vectors_per_s"] for x in r)
        s_cpu = med(x["server_cpu_s"] / max(1, x["completed"]) * 1e6 for x in s)
        r_cpu = med(x["server_cpu_s"] / max(1, x["mgets"]) * 1e6 for x in r)
        errs = sum(x["error_count"] for x in s) + sum(x["errors"] for x in r)
        paired = sorted(a["vectors_per_s"] / b["vectors_per_s"] for a, b in zip(s, r))
        rows.append(f"| {batch} ids, {dt} rows | {sv/1e6:.2f} M | {med(x['latency']['p50_ms'] for x in s):.3f} / {med(x['latency']['p99_ms'] for x in s):.3f} | {s_cpu:.1f} "
                    f"| {rv/1e6:.2f} M | {med(x['p50_ms'] for x in r):.3f} / {med(x['p99_ms'] for x in r):.3f} | {r_cpu:.1f} | **{sv/rv:.2f}×** | {med(paired):.2f}× ({paired[0]:.2f}–{paired[-1]:.2f}) | {len(s)}/{len(r)} | {errs} |")
if rows:
    out += ["", "| Lookup | ShardRank vectors/s | p50 / p99 ms | server CPU µs/req | Redis MGET vectors/s | p50 / p99 ms | Redis CPU µs/req | ratio of medians | paired runs: median (range) | runs | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|"] + rows

f = load("faiss-*.json")
srows = []
if f:
    fq = med(x["single"]["qps"] for x in f)
    fc = med(x["single"]["q_per_cpu_s"] for x in f)
    fb = med(x[[k for k in x if k.startswith("batch")][0]]["q_per_cpu_s"] for x in f)
    for dt in ("f32", "int8"):
        s = load(f"search-{dt}-*.json")
        if not s:
            continue
        qps = med(x["throughput_rps"] for x in s)
        per_cpu = med(x["completed"] / x["server_cpu_s"] for x in s if x["server_cpu_s"] > 0)
        paired = sorted((x["completed"] / x["server_cpu_s"]) / y["single"]["q_per_cpu_s"] for x, y in zip(s, f) if x["server_cpu_s"] > 0)
        srows.append(f"| ShardRank {dt} | {qps:.1f} | {per_cpu:.1f} | {med(x['latency']['p50_ms'] for x in s):.2f} / {med(x['latency']['p99_ms'] for x in s):.2f} "
                     f"| **{per_cpu/fc:.2f}×** | {med(paired):.2f}× ({paired[0]:.2f}–{paired[-1]:.2f}) | {sum(x['error_count'] for x in s)} |")
    srows.append(f"| faiss IndexFlatIP f32, 1 thread, nq=1 | {fq:.1f} | {fc:.1f} | | 1.00× | | |")
    srows.append(f"| (context: faiss, 1 thread, nq=64 per call) | | {fb:.1f} | | | | |")
    out += ["", "| Search 1M×64 top-100 | queries/s (wall) | queries per CPU-second | p50 / p99 ms | per core vs faiss f32 (ratio of medians) | paired runs: median (range) | errors |",
            "|---|---|---|---|---|---|---|"] + srows

st = os.path.join(res, "reload-steady.json")
sw = os.path.join(res, "reload-switch.json")
if os.path.exists(st) and os.path.exists(sw):
    steady, switch = json.load(open(st)), json.load(open(sw))
    events = [float(l) for l in open(os.path.join(res, "reload-events.txt")) if l.strip()]
    lat = []
    with open(os.path.join(res, "reload-latency.csv")) as fh:
        for r in csv.DictReader(fh):
            lat.append((int(r["intended_us"]) / 1e6, float(r["latency_us"]) / 1e3, r["status"]))
    def p99(xs):
        xs = sorted(xs)
        return xs[max(0, int(0.99 * len(xs) + 0.999999) - 1)] if xs else float("nan")
    window = [l for (t, l, _) in lat if any(e <= t < e + 3 for e in events)]
    bad = sum(1 for (_, _, s) in lat if s != "OK")
    rss = json.load(open(os.path.join(res, "reload-rss.json")))
    info = open(os.path.join(res, "reload-info.txt")).read().split("\n")[0]
    slog = os.path.join(res, "reload-shard.log")
    switched = sum(1 for l in open(slog) if "switched to table set" in l) if os.path.exists(slog) else 0
    rejected = sum(1 for l in open(slog) if "reject" in l.lower()) if os.path.exists(slog) else 0
    out += ["", "| Reload (1000 req/s of 256-id Lookups, open loop) | p99 ms | requests | failed |", "|---|---|---|---|",
            f"| steady state (10 s) | {steady['latency']['p99_ms']:.3f} | {steady['completed']} | {steady['error_count']} |",
            f"| whole switch run ({len(events)} builds under load + SIGHUP; {switched} switches logged, {rejected} rejected) | {switch['latency']['p99_ms']:.3f} | {switch['completed']} | {switch['error_count']} |",
            f"| 3 s after each SIGHUP | {p99(window):.3f} (**{p99(window)/steady['latency']['p99_ms']:.2f}×** steady) | {len(window)} | {bad} in log |",
            "", f"peak RSS (VmHWM) of the shard: {rss['hwm_before_kb']/1024:.0f} MiB after start, {rss['hwm_after_kb']/1024:.0f} MiB after the switches; after: {info}"]
print("\n".join(out))

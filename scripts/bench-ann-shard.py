#!/usr/bin/env python3
"""ANN Search through a real shard over gRPC (issue 14's shard-level figures).

Starts `shardrank shard --tables ROOT --shard I --of S` (loopback, port 0), then, with a stock grpcio
client and the committed .proto files:

  cpu     server CPU per Search call (Δ utime+stime of the shard process / calls), exact vs ANN at
          the manifest's default knobs, one query per call, k = 10, rounds interleaved (exact, ann,
          exact, ann, ...) and medians quoted; recall@10 of ANN against exact on the same queries
  filter  ANN with 1 %, 10 % and 50 % of all items excluded: the mode that answered, results per
          query (k expected), excluded ids returned (0 expected), recall against exact with the
          same exclusions
  reload  ten hot reloads (v<N+1>..v<N+10> published by hard-linking the current version's files
          and rewriting its manifest's version, then SIGHUP) while a client thread keeps calling
          ANN Search; counts failed calls (0 expected) and checks the final version and mode

usage: scripts/bench-ann-shard.py --tables ROOT --queries USERS.npy --item-ids ITEM_IDS.npy
           [--shard 0 --of 4] [--calls 2000] [--rounds 5] [--bin PATH] [--json] [--skip-reload]
Prints a markdown summary (or one JSON object with --json). Every process it starts is stopped on
exit; only 127.0.0.1 is used.
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, threading, time

import numpy as np
import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print("bench-ann-shard:", *a, file=sys.stderr, flush=True)


def stubs():
    """The Python stubs of proto/shardrank/v1/shard.proto (generated at run time)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from shardrank_stubs import generate
    return generate("shard")


class Shard:
    def __init__(self, binary, args):
        self.proc = subprocess.Popen([binary, "shard"] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(5):
            line = self.proc.stdout.readline()
            m = re.search(r"listening on (\S+):(\d+)", line)
            if m:
                self.target = f"127.0.0.1:{m.group(2)}"
                return
        self.proc.kill()
        raise SystemExit(f"shard did not start: {line!r}")

    def cpu(self):
        """CPU seconds of the shard process (utime + stime, exited threads included; 10 ms ticks,
        so every measured window below is long enough for hundreds of ticks)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", required=True)
    ap.add_argument("--queries", required=True, help="float32 .npy of query vectors (e.g. a synth world's users.npy)")
    ap.add_argument("--item-ids", required=True, help="int64 .npy of all item ids (exclusion sets are drawn from it)")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--of", type=int, default=4)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default=os.environ.get("SHARDRANK_BIN", os.path.join(ROOT, ".build", "release", "shardrank")))
    ap.add_argument("--inflight", type=int, default=1,
                    help="calls kept in flight during the cpu rounds (1: one at a time, each exact call a full scan; "
                         "more: exact calls share passes through the shard's batcher, and both amortise wake-ups)")
    ap.add_argument("--driver-rounds", type=int, default=3,
                    help="rounds of `shardrank loadtest --mix search` per mode (Swift load driver, closed loop); 0: skip")
    ap.add_argument("--driver-concurrency", type=int, default=8)
    ap.add_argument("--driver-seconds", type=float, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-reload", action="store_true")
    a = ap.parse_args()
    pb, pbg = stubs()
    Q = np.load(a.queries).astype(np.float32)
    item_ids = np.load(a.item_ids).astype(np.uint64)
    rng = np.random.default_rng(7)
    qs = Q[rng.choice(len(Q), size=min(a.calls, len(Q)), replace=False)]
    dim = Q.shape[1]

    work = tempfile.mkdtemp(prefix="bench-ann-shard-")
    root = os.path.join(work, "tables")
    # A private copy of the table-set root (hard links: no bytes copied) so reloads never touch ROOT.
    os.makedirs(root)
    versions = sorted(int(d[1:]) for d in os.listdir(a.tables) if re.fullmatch(r"v\d+", d)
                      and os.path.exists(os.path.join(a.tables, d, "manifest.json")))
    base_v = versions[-1]
    src = os.path.join(a.tables, f"v{base_v}")
    dst = os.path.join(root, f"v{base_v}")
    os.makedirs(dst)
    for f in os.listdir(src):
        os.link(os.path.join(src, f), os.path.join(dst, f))

    shard = Shard(a.bin, ["--tables", root, "--shard", str(a.shard), "--of", str(a.of), "--port", "0",
                          "--reload-seconds", "0", "--ann-shadow-every", "0"])
    result = {"tables": a.tables, "shard": a.shard, "of": a.of, "calls": len(qs), "inflight": a.inflight}
    try:
        ch = grpc.insecure_channel(shard.target)
        stub = pbg.ShardStub(ch)
        grpc.channel_ready_future(ch).result(timeout=10)

        def search(q, mode, k=10, exclude=None):
            return stub.Search(pb.SearchRequest(table="items", queries=q.tobytes(), dim=dim, k=k, mode=mode,
                                                exclude_ids=exclude if exclude is not None else []), timeout=30)

        EXACT, ANN = pb.SEARCH_MODE_EXACT, pb.SEARCH_MODE_ANN
        for q in qs[:50]:
            search(q, EXACT); search(q, ANN)
        per = {EXACT: [], ANN: []}
        answers = {EXACT: {}, ANN: {}}
        chunk = max(1, len(qs) // a.rounds)
        for r in range(a.rounds):
            part = range(r * chunk, min(len(qs), (r + 1) * chunk))
            for mode in (EXACT, ANN):
                # ANN calls are ~10× cheaper: repeat them so both windows span hundreds of ticks.
                reps = 1 if mode == EXACT else 8
                c0 = shard.cpu()
                window = []
                for i in [j for _ in range(reps) for j in part]:
                    req = pb.SearchRequest(table="items", queries=qs[i].tobytes(), dim=dim, k=10, mode=mode)
                    window.append((i, stub.Search.future(req, timeout=30)))
                    if len(window) >= a.inflight:
                        j, f = window.pop(0)
                        resp = f.result()
                        assert resp.mode == mode, f"asked {mode}, answered {resp.mode}"
                        answers[mode][j] = list(resp.results[0].ids)
                for j, f in window:
                    resp = f.result()
                    answers[mode][j] = list(resp.results[0].ids)
                per[mode].append((shard.cpu() - c0) / (len(part) * reps) * 1e6)
        hits = sum(len(set(answers[ANN][i]) & set(answers[EXACT][i])) for i in answers[ANN])
        total = sum(len(answers[EXACT][i]) for i in answers[ANN])
        med = lambda v: float(np.median(v))
        result["cpu"] = {"exact_us_per_call": med(per[EXACT]), "ann_us_per_call": med(per[ANN]),
                         "ratio_ann_over_exact": med(per[ANN]) / med(per[EXACT]),
                         "rounds_exact_us": per[EXACT], "rounds_ann_us": per[ANN],
                         "ann_recall_at_10": hits / max(total, 1)}
        log(f"cpu: exact {med(per[EXACT]):.0f} µs/call, ann {med(per[ANN]):.1f} µs/call, recall@10 {hits / max(total, 1):.4f}")

        # The same comparison driven by the project's load driver (closed loop, uniform random
        # queries in [-1, 1): CPU only), whose client costs far less per call than grpcio's.
        if a.driver_rounds > 0:
            drv = {"exact": [], "ann": []}
            for r in range(a.driver_rounds):
                for mode in ("exact", "ann"):
                    p = subprocess.Popen([a.bin, "loadtest", "--quiet", "--json", "--target", shard.target, "--mix", "search",
                                          "--search-mode", mode, "--k", "10", "--concurrency", str(a.driver_concurrency),
                                          "--threads", "1", "--connections", "1", "--warmup", "1",
                                          "--duration", str(a.driver_seconds), "--zipf", "0", "--seed", str(r + 1)],
                                         stdout=subprocess.PIPE, text=True)
                    time.sleep(1.0)
                    c0 = shard.cpu(); t0 = time.time()
                    time.sleep(a.driver_seconds)
                    c1 = shard.cpu(); t1 = time.time()
                    out, _ = p.communicate(timeout=60)
                    rep = json.loads(out)
                    assert rep["error_count"] == 0, rep["errors"]
                    calls = rep["ok_rps"] * (t1 - t0)
                    drv[mode].append((c1 - c0) / calls * 1e6)
            result["driver"] = {"concurrency": a.driver_concurrency, "exact_us_per_call": med(drv["exact"]),
                                "ann_us_per_call": med(drv["ann"]), "ratio_ann_over_exact": med(drv["ann"]) / med(drv["exact"]),
                                "rounds_exact_us": drv["exact"], "rounds_ann_us": drv["ann"]}
            log(f"driver: {result['driver']}")

        filt = []
        for share in (0.01, 0.10, 0.50):
            ex = rng.choice(item_ids, size=int(share * len(item_ids)), replace=False)
            exs = set(int(x) for x in ex)
            exl = [int(x) for x in ex]
            modes, short, bad, hits, total = {}, 0, 0, 0, 0
            for q in qs[:200]:
                r1 = search(q, ANN, exclude=exl)
                r0 = search(q, EXACT, exclude=exl)
                modes[r1.mode] = modes.get(r1.mode, 0) + 1
                got = list(r1.results[0].ids)
                short += len(got) < 10
                bad += sum(1 for i in got if i in exs)
                want = set(r0.results[0].ids)
                hits += len(want & set(got)); total += len(want)
            names = {EXACT: "exact", ANN: "ann"}
            filt.append({"excluded": share, "answered_by": {names[m]: c for m, c in modes.items()},
                         "queries_short_of_k": short, "excluded_returned": bad, "recall_at_10": hits / max(total, 1)})
            log(f"filter {share:.0%}: {filt[-1]}")
        result["filter"] = filt

        if not a.skip_reload:
            stop = threading.Event()
            stats = {"ok": 0, "failed": 0, "errors": [], "last_version": 0, "modes": set()}

            def load():
                i = 0
                while not stop.is_set():
                    try:
                        r = search(qs[i % len(qs)], pb.SEARCH_MODE_UNSPECIFIED)
                        stats["ok"] += 1; stats["last_version"] = r.version; stats["modes"].add(r.mode)
                    except grpc.RpcError as e:
                        stats["failed"] += 1; stats["errors"].append(str(e.code()))
                    i += 1
            t = threading.Thread(target=load); t.start()
            t0 = time.time()
            for n in range(1, 11):
                v = base_v + n
                vd = os.path.join(root, f"v{v}")
                os.makedirs(vd)
                for f in os.listdir(dst):
                    if f != "manifest.json":
                        os.link(os.path.join(dst, f), os.path.join(vd, f))
                m = json.load(open(os.path.join(dst, "manifest.json")))
                m["version"] = v
                with open(os.path.join(vd, "manifest.json.tmp"), "w") as fh:
                    json.dump(m, fh)
                os.rename(os.path.join(vd, "manifest.json.tmp"), os.path.join(vd, "manifest.json"))
                shard.proc.send_signal(signal.SIGHUP)
                deadline = time.time() + 20
                while stats["last_version"] < v and time.time() < deadline:
                    time.sleep(0.05)
            stop.set(); t.join()
            names = {EXACT: "exact", ANN: "ann", pb.SEARCH_MODE_UNSPECIFIED: "unspecified"}
            result["reload"] = {"reloads": 10, "calls_ok": stats["ok"], "calls_failed": stats["failed"],
                                "errors": sorted(set(stats["errors"])), "final_version": stats["last_version"],
                                "expected_version": base_v + 10, "modes": sorted(names[m] for m in stats["modes"]),
                                "seconds": time.time() - t0}
            log(f"reload: {result['reload']}")
    finally:
        shard.stop()
        shutil.rmtree(work, ignore_errors=True)

    if a.json:
        print(json.dumps(result))
        return
    c = result["cpu"]
    print(f"shard {a.shard} of {a.of} of {a.tables}, {len(qs)} queries, k = 10, {a.inflight} call(s) in flight\n")
    print("| Search | server CPU µs/call (median of rounds) | recall@10 vs exact |\n|---|---|---|")
    print(f"| exact | {c['exact_us_per_call']:.0f} | 1 |")
    print(f"| ann (defaults) | {c['ann_us_per_call']:.1f} | {c['ann_recall_at_10']:.4f} |")
    print(f"\nANN / exact CPU: {c['ratio_ann_over_exact']:.4f} (1/{1 / c['ratio_ann_over_exact']:.0f})\n")
    if "driver" in result:
        d = result["driver"]
        print(f"with `shardrank loadtest --mix search` ({d['concurrency']} in flight, random queries): exact {d['exact_us_per_call']:.0f} µs/call, "
              f"ann {d['ann_us_per_call']:.1f} µs/call, ANN / exact {d['ratio_ann_over_exact']:.4f} (1/{1 / d['ratio_ann_over_exact']:.0f}); "
              f"rounds exact {[round(x) for x in d['rounds_exact_us']]}, ann {[round(x, 1) for x in d['rounds_ann_us']]}\n")
    print("| excluded | answered by | queries short of k | excluded ids returned | recall@10 |\n|---|---|---|---|---|")
    for f in result["filter"]:
        print(f"| {f['excluded']:.0%} | {f['answered_by']} | {f['queries_short_of_k']} | {f['excluded_returned']} | {f['recall_at_10']:.4f} |")
    if "reload" in result:
        r = result["reload"]
        print(f"\nhot reloads under ANN load: {r['reloads']} reloads, {r['calls_ok']} calls OK, {r['calls_failed']} failed, "
              f"final version v{r['final_version']} (expected v{r['expected_version']}), modes {r['modes']}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Report of ANN benchmark JSON lines (scripts/bench-ann-anchors.py and the Swift BenchANN, which prints
the same schema with "system": "shardrank").

Sweep records:  system, dataset, k, knob, recall, qps_cpu [, qps_cpu_batched], excluded, excluded_returned
Build records:  system, dataset, build_s, build_threads, bytes_per_vector [, bytes_note, build_cpu_s, version]
Other records:  "skipped" (a system not run), "filter" (no in-search filter), "note".

For each dataset and k (unfiltered records: excluded 0 or absent): queries per CPU-second at recall@k =
0.90, 0.95, 0.99 for every system, on the upper envelope of its sweep: with A = the points at or above
the target r, a = the fastest of A; if a point below r is faster than a, the one of those with the
highest recall (b) and a are interpolated linearly in recall at r; else a's qps. No point at or above
r: "—". Then shardrank ÷ hnswlib and shardrank ÷ the fastest of faiss-*/scann/usearch (and ÷ the
fastest anchor of any kind), a build table and a filtered-search table (the same figures against the
filtered ground truth, per excluded fraction).

usage: bench-ann-report.py FILE.jsonl... [--json] [--targets 0.9,0.95,0.99]
       bench-ann-report.py --self-test
Lines that are not JSON objects are ignored. Standard library only.
"""
import argparse, json, math, sys

OTHERS_PREFIX = ("faiss", "scann", "usearch")
DATASET_ORDER = {"clustered": 0, "normal": 1}


def qps_at(points, r):
    """points: [(recall, qps)] (qps None ignored); qps at recall r on the upper envelope, or None."""
    pts = [(float(a), float(b)) for a, b in points if b is not None and a is not None]
    above = [p for p in pts if p[0] >= r]
    if not above:
        return None
    a = max(above, key=lambda p: (p[1], p[0]))
    below = [p for p in pts if p[0] < r and p[1] > a[1]]
    if not below:
        return a[1]
    b = max(below, key=lambda p: (p[0], p[1]))
    return b[1] + (a[1] - b[1]) * (r - b[0]) / (a[0] - b[0])


def load(paths):
    recs = []
    for p in paths:
        with (sys.stdin if p == "-" else open(p)) as fh:
            for line in fh:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and ("system" in r or "machine" in r):
                    recs.append(r)
    return recs


def excl_of(r):
    return float(r.get("excluded") or 0.0)


def analyse(recs, targets):
    sweeps = [r for r in recs if "system" in r and "recall" in r and "knob" in r and r.get("qps_cpu") is not None]
    out = {"targets": targets, "search": [], "ratios": [], "builds": [], "filtered": [], "skipped": [], "notes": []}
    groups = {}
    for r in sweeps:
        groups.setdefault((r.get("dataset", "?"), int(r.get("k", 0)), excl_of(r), r["system"]), []).append(r)

    def summary(pts):
        best = max(pts, key=lambda r: (r["recall"], r["qps_cpu"]))
        return {
            "qps_cpu_at": {f"{t:.2f}": qps_at([(r["recall"], r["qps_cpu"]) for r in pts], t) for t in targets},
            "qps_cpu_batched_at": {f"{t:.2f}": qps_at([(r.get("recall_batched", r["recall"]), r.get("qps_cpu_batched")) for r in pts], t)
                                   for t in targets},
            "max_recall": best["recall"], "qps_at_max_recall": best["qps_cpu"], "points": len(pts),
            "excluded_returned": sum(int(r.get("excluded_returned") or 0) for r in pts),
        }

    def order(key):
        ds, k, ex, sysname = key
        return (DATASET_ORDER.get(ds, 9), ds, k, ex, sysname != "shardrank", sysname)

    for key in sorted(groups, key=order):
        ds, k, ex, sysname = key
        row = {"dataset": ds, "k": k, "system": sysname, **summary(groups[key])}
        if ex == 0.0:
            out["search"].append(row)
        else:
            row["excluded"] = ex
            out["filtered"].append(row)

    # Ratios per dataset, k, target.
    by_dk = {}
    for row in out["search"]:
        by_dk.setdefault((row["dataset"], row["k"]), {})[row["system"]] = row
    for (ds, k), rows in sorted(by_dk.items(), key=lambda x: (DATASET_ORDER.get(x[0][0], 9), x[0])):
        if "shardrank" not in rows:
            continue
        for t in targets:
            tk = f"{t:.2f}"
            s = rows["shardrank"]["qps_cpu_at"][tk]
            h = rows.get("hnswlib", {}).get("qps_cpu_at", {}).get(tk)

            def fastest(pred):
                c = [(row["qps_cpu_at"][tk], name) for name, row in rows.items()
                     if pred(name) and row["qps_cpu_at"][tk] is not None]
                return max(c) if c else (None, None)
            oq, on = fastest(lambda nm: nm.startswith(OTHERS_PREFIX))
            aq, an = fastest(lambda nm: nm != "shardrank")
            ratio = lambda x, y: (x / y) if (x is not None and y) else None
            out["ratios"].append({"dataset": ds, "k": k, "target": t, "shardrank": s, "hnswlib": h,
                                  "vs_hnswlib": ratio(s, h), "best_other": on, "best_other_qps": oq,
                                  "vs_best_other": ratio(s, oq), "best_anchor": an, "best_anchor_qps": aq,
                                  "vs_best_anchor": ratio(s, aq)})

    out["machine"] = [r["machine"] for r in recs if "machine" in r and "system" not in r]
    recs = [r for r in recs if "system" in r]
    for r in recs:
        if "build_s" in r:
            out["builds"].append({k: r.get(k) for k in ("dataset", "system", "n", "build_s", "build_cpu_s", "build_threads",
                                                        "bytes_per_vector", "rss_bytes_per_vector", "bytes_note", "build_note", "version", "params")})
        elif "skipped" in r:
            out["skipped"].append({k: r.get(k) for k in ("dataset", "system", "k", "excluded", "skipped")})
        elif "filter" in r:
            out["filtered"].append({"dataset": r.get("dataset"), "k": r.get("k"), "system": r["system"],
                                    "excluded": excl_of(r), "no_filter": r["filter"]})
        elif "note" in r:
            out["notes"].append({k: r.get(k) for k in ("dataset", "system", "k", "excluded", "note")})
    out["builds"].sort(key=lambda b: (DATASET_ORDER.get(b["dataset"], 9), str(b["dataset"]), b["system"] != "shardrank", b["system"]))
    out["filtered"].sort(key=lambda f: (DATASET_ORDER.get(f["dataset"], 9), str(f["dataset"]), f["k"] or 0,
                                        f["system"] != "shardrank", f["system"], f["excluded"]))
    return out


def fq(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fr(x):
    return "—" if x is None else f"{x:.2f}×"


def markdown(rep):
    ts = rep["targets"]
    tk = [f"{t:.2f}" for t in ts]
    L = [f"machine: {m}" for m in dict.fromkeys(rep.get("machine", []))]
    dks = []
    for row in rep["search"]:
        if (row["dataset"], row["k"]) not in dks:
            dks.append((row["dataset"], row["k"]))
    for ds, k in dks:
        L += ["", f"### {ds}, k={k}: queries per CPU-second (1 thread, batch 1) at recall@{k}", "",
              "| system | " + " | ".join(f"@{t}" for t in tk) + " | max recall (q/CPU-s there) | batched: " + " / ".join(f"@{t}" for t in tk) + " |",
              "|---|" + "---|" * len(tk) + "---|---|"]
        for row in rep["search"]:
            if (row["dataset"], row["k"]) != (ds, k):
                continue
            name = f"**{row['system']}**" if row["system"] == "shardrank" else row["system"]
            L.append(f"| {name} | " + " | ".join(fq(row["qps_cpu_at"][t]) for t in tk)
                     + f" | {row['max_recall']:.4f} ({fq(row['qps_at_max_recall'])}) | "
                     + " / ".join(fq(row["qps_cpu_batched_at"][t]) for t in tk) + " |")
        rs = [r for r in rep["ratios"] if (r["dataset"], r["k"]) == (ds, k)]
        if rs:
            L += ["", "| shardrank ÷ | " + " | ".join(f"@{t}" for t in tk) + " |", "|---|" + "---|" * len(tk)]
            L.append("| hnswlib | " + " | ".join(fr(r["vs_hnswlib"]) for r in rs) + " |")
            L.append("| fastest of faiss/scann/usearch | " + " | ".join(
                f"{fr(r['vs_best_other'])} ({r['best_other']})" if r["best_other"] else "—" for r in rs) + " |")
            L.append("| fastest anchor | " + " | ".join(
                f"{fr(r['vs_best_anchor'])} ({r['best_anchor']})" if r["best_anchor"] else "—" for r in rs) + " |")
        else:
            L += ["", "(no shardrank records for this dataset and k: no ratios)"]
    if rep["builds"]:
        L += ["", "### Builds", "", "| dataset | system | N | build s (wall) | CPU s | threads | bytes/vector | RSS Δ bytes/vector | what the size is | version |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for b in rep["builds"]:
            L.append(f"| {b['dataset']} | {b['system']} | {b['n'] or ''} | {fq(b['build_s'])} | {fq(b['build_cpu_s'])} | {b['build_threads']} "
                     f"| {fq(b['bytes_per_vector'])} | {fq(b['rss_bytes_per_vector'])} | {b['bytes_note'] or ''}"
                     + (f"; build: {b['build_note']}" if b.get("build_note") else "") + f" | {b['version'] or ''} |")
    if rep["filtered"]:
        L += ["", "### Filtered search (excluded rows removed inside the search; recall against the filtered ground truth)", "",
              "| dataset | k | system | excluded | " + " | ".join(f"@{t}" for t in tk) + " | max recall | excluded ids returned |",
              "|---|---|---|---|" + "---|" * len(tk) + "---|---|"]
        seen = set()
        for f in rep["filtered"]:
            if "no_filter" in f:
                if (f["dataset"], f["system"]) in seen:
                    continue
                seen.add((f["dataset"], f["system"]))
                L.append(f"| {f['dataset']} | all | {f['system']} | all | " + " | ".join("—" for _ in tk)
                         + f" | {f['no_filter']} | |")
            else:
                L.append(f"| {f['dataset']} | {f['k']} | {f['system']} | {f['excluded']:.0%} | " + " | ".join(fq(f["qps_cpu_at"][t]) for t in tk)
                         + f" | {f['max_recall']:.4f} | {f['excluded_returned']} |")
    if rep["skipped"] or rep["notes"]:
        L += ["", "### Skipped / cut", ""]
        for s in rep["skipped"]:
            L.append(f"- {s['dataset']} {s['system']}" + (f" k={s['k']}" if s.get("k") else "")
                     + (f" excluded={s['excluded']}" if s.get("excluded") else "") + f": {s['skipped']}")
        grouped = {}
        for s in rep["notes"]:
            grouped.setdefault((s["dataset"], s["system"], s.get("k"), s["note"]), []).append(s.get("excluded") or 0.0)
        for (ds, sysname, k, note), ex in grouped.items():
            L.append(f"- {ds} {sysname} k={k} excluded {', '.join(f'{e:.0%}' for e in ex)}: {note}")
    return "\n".join(L).lstrip("\n")


def self_test():
    fails = []

    def check(name, got, want):
        ok = (got is None and want is None) or (got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9))
        if not ok:
            fails.append(f"{name}: got {got}, want {want}")

    pts = [(0.80, 1000), (0.90, 800), (0.95, 500), (0.99, 200)]
    check("exact point 0.90", qps_at(pts, 0.90), 800)
    check("exact point 0.95", qps_at(pts, 0.95), 500)
    check("between 0.90 and 0.95", qps_at(pts, 0.92), 800 + (500 - 800) * 0.02 / 0.05)
    check("unreached", qps_at(pts, 0.995), None)
    check("below all points", qps_at(pts, 0.5), 1000)
    # A dominated point above the target is ignored (the faster one with more recall wins).
    check("dominated above", qps_at([(0.85, 1000), (0.91, 300), (0.93, 600)], 0.90), 1000 + (600 - 1000) * 0.05 / 0.08)
    # The point below used is the one with the highest recall among those faster than the best above.
    check("nearest below", qps_at([(0.80, 2000), (0.88, 1200), (0.92, 1000)], 0.90), 1100)
    # A slower point below does not pull the figure up.
    check("slower below", qps_at([(0.89, 500), (0.95, 900)], 0.90), 900)
    check("empty", qps_at([], 0.9), None)
    check("None qps ignored", qps_at([(0.95, None), (0.85, 100)], 0.9), None)
    # Unordered input, two sweeps merged (upper envelope over both).
    merged = [(0.99, 300), (0.70, 5000), (0.93, 2000), (0.91, 900), (0.97, 1000), (0.86, 3000)]
    check("merged sweeps 0.90", qps_at(merged, 0.90), 3000 + (2000 - 3000) * 0.04 / 0.07)
    check("merged sweeps 0.95", qps_at(merged, 0.95), 2000 + (1000 - 2000) * 0.02 / 0.04)
    check("merged sweeps 0.99", qps_at(merged, 0.99), 300)

    # End to end: records -> ratios.
    recs = []
    for sysname, sc in (("shardrank", 2.0), ("hnswlib", 1.0), ("faiss-hnsw", 1.5), ("scann", 0.5), ("hnswlib-l2aug", 3.0)):
        for rec, q in pts:
            recs.append({"system": sysname, "dataset": "clustered", "k": 10, "knob": "x", "recall": rec,
                         "qps_cpu": q * sc, "qps_cpu_batched": q * sc * 1.1, "excluded": 0.0, "excluded_returned": 0})
        recs.append({"system": sysname, "dataset": "clustered", "build_s": 1.0, "build_threads": 2, "bytes_per_vector": 300.0})
    recs.append({"system": "hnswlib", "dataset": "clustered", "k": 10, "knob": "ef=1", "recall": 0.95, "qps_cpu": 10.0,
                 "excluded": 0.5, "excluded_returned": 3})
    recs.append({"system": "scann", "dataset": "clustered", "k": 10, "excluded": 0.5, "filter": "no in-search filter"})
    rep = analyse(recs, [0.90, 0.95, 0.99])
    r90 = [r for r in rep["ratios"] if r["target"] == 0.90][0]
    check("ratio vs hnswlib", r90["vs_hnswlib"], 2.0)
    check("ratio vs best other", r90["vs_best_other"], 2.0 / 1.5)
    if r90["best_other"] != "faiss-hnsw":
        fails.append(f"best other: {r90['best_other']}")
    check("ratio vs best anchor", r90["vs_best_anchor"], 2.0 / 3.0)
    srow = [r for r in rep["search"] if r["system"] == "shardrank"][0]
    check("batched at 0.95", srow["qps_cpu_batched_at"]["0.95"], 500 * 2.0 * 1.1)
    f = [x for x in rep["filtered"] if x["system"] == "hnswlib"][0]
    check("filtered at 0.95", f["qps_cpu_at"]["0.95"], 10.0)
    check("filtered excluded returned", float(f["excluded_returned"]), 3.0)
    if len(rep["builds"]) != 5:
        fails.append(f"builds: {len(rep['builds'])}")
    md = markdown(rep)
    for needle in ("### clustered, k=10", "| **shardrank** |", "2.00×", "no in-search filter", "### Builds"):
        if needle not in md:
            fails.append(f"markdown lacks {needle!r}")
    json.dumps(rep)
    for msg in fails:
        print("FAIL " + msg, file=sys.stderr)
    print(f"bench-ann-report self-test: {'FAILED' if fails else 'ok'} ({len(fails)} failures)", file=sys.stderr)
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--targets", default="0.90,0.95,0.99")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        sys.exit(self_test())
    if not a.files:
        ap.error("no input files (use - for stdin)")
    targets = [float(x) for x in a.targets.split(",") if x]
    rep = analyse(load(a.files), targets)
    rep["sources"] = a.files
    if a.json:
        print(json.dumps(rep, indent=1))
    else:
        print(markdown(rep))


if __name__ == "__main__":
    main()

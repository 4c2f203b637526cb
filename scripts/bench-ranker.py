"""The LightGBM side of scripts/bench-ranker: `prepare DIR` trains the model and writes the rows,
`measure DIR` times Booster.predict on them (one JSON line per case, BenchKernels' shape),
`report DIR CPU ROUNDS` prints the table of both sides."""
import json
import os
import sys
import time

import numpy as np

FEATURES = 13
ROWS = 100_000
BATCH = 131  # the mean candidates of a Recommend at budget 200 on MovieLens 100K


def prepare(d, trees, leaves):
    import lightgbm as lgb
    rng = np.random.default_rng(5)
    n_groups, per = 2000, 130
    x = rng.gamma(2.0, 10.0, size=(n_groups * per, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan  # sources that did not propose an item
    signal = -np.nan_to_num(x[:, 1], nan=60) + 0.5 * np.nan_to_num(x[:, 3]) + 0.1 * np.nan_to_num(x[:, 9])
    y = (signal + rng.normal(0, 5, len(x)) > np.quantile(signal, 0.97)).astype(int)
    ds = lgb.Dataset(x, y, group=[per] * n_groups)
    b = lgb.train(dict(objective="lambdarank", num_leaves=leaves, min_data_in_leaf=50, learning_rate=0.05, verbose=-1,
                       num_threads=2, seed=1, deterministic=True), ds, num_boost_round=trees)
    b.save_model(os.path.join(d, "model.txt"))
    rows = rng.gamma(2.0, 10.0, size=(ROWS, FEATURES)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.3] = np.nan
    rows.tofile(os.path.join(d, "rows.f32"))
    print(f"bench-ranker: model {b.num_trees()} trees, {leaves} leaves, {FEATURES} features; {ROWS} rows", file=sys.stderr)


def median_rate(fn, units, reps=7, min_time=0.3):
    fn()
    rates = []
    for _ in range(reps):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += units
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        rates.append(n / el)
    return sorted(rates)[len(rates) // 2]


def measure(d):
    import lightgbm as lgb
    rows = np.fromfile(os.path.join(d, "rows.f32"), dtype=np.float32).reshape(-1, FEATURES)
    for threads in (1, 2):
        b = lgb.Booster(model_file=os.path.join(d, "model.txt"), params={"num_threads": threads})
        for batch in (BATCH, len(rows)):
            state = {"off": 0}

            def one():
                o = state["off"] if state["off"] + batch <= len(rows) else 0
                b.predict(rows[o:o + batch], raw_score=True, num_threads=threads)
                state["off"] = o + batch
            r = median_rate(one, batch)
            print(json.dumps({"kernel": "lightgbm_predict", "dtype": "f32", "dim": FEATURES, "n": b.num_trees(), "batch": batch,
                              "threads": threads, "per_second": round(r, 1), "unit": "rows/s"}))


def report(d, cpu, rounds):
    import lightgbm as lgb

    def best(path):
        out = {}
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                k = (r["batch"], r["threads"])
                if k not in out or r["per_second"] > out[k]["per_second"]:
                    out[k] = r
        return out
    s, l = best(os.path.join(d, "swift.raw")), best(os.path.join(d, "lgbm.raw"))
    print(f"CPU: {cpu} ({os.cpu_count()} cores); best of {rounds} rounds; lightgbm {lgb.__version__}")
    print()
    print("| batch (rows) | threads | ShardRank TreeEnsemble rows/s | LightGBM predict rows/s | ratio | µs per Recommend (131 rows) |")
    print("|---|---|---|---|---|---|")
    for k in sorted(s):
        a, b = s[k]["per_second"], l.get(k, {}).get("per_second")
        us = f"{131 / a * 1e6:.1f} vs {131 / b * 1e6:.1f}" if k[0] == BATCH and b else ""
        print(f"| {k[0]} | {k[1]} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {us} |" if b else f"| {k[0]} | {k[1]} | {a:,.0f} | - | - | |")


if __name__ == "__main__":
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "prepare":
        trees = int(sys.argv[sys.argv.index("--trees") + 1]) if "--trees" in sys.argv else 300
        leaves = int(sys.argv[sys.argv.index("--leaves") + 1]) if "--leaves" in sys.argv else 7
        prepare(d, trees, leaves)
    elif cmd == "measure":
        measure(d)
    else:
        report(d, sys.argv[3], sys.argv[4])

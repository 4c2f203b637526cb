#!/usr/bin/env python3
"""The Search anchor: faiss IndexFlatIP (exact inner product) on the same vectors, one thread,
top-K for single queries (nq=1 per call, as a serving shard answers them). Prints one JSON line:
queries/s (wall), queries per CPU-second, and the same for batches of --batch queries.

usage: bench-shard-faiss.py ITEMS_NPY [--k 100] [--seconds 5] [--batch 16] [--seed 3]
"""
import argparse, json, sys, time
import numpy as np
import faiss

ap = argparse.ArgumentParser()
ap.add_argument("items")
ap.add_argument("--k", type=int, default=100)
ap.add_argument("--seconds", type=float, default=5)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--seed", type=int, default=3)
a = ap.parse_args()
faiss.omp_set_num_threads(1)
xb = np.load(a.items, mmap_mode="r")
xb = np.ascontiguousarray(xb, dtype=np.float32)
index = faiss.IndexFlatIP(xb.shape[1])
index.add(xb)
rng = np.random.default_rng(a.seed)
queries = rng.uniform(-1, 1, (4096, xb.shape[1])).astype(np.float32)

def run(nq):
    # warm-up
    index.search(queries[:nq], a.k)
    n, i = 0, 0
    w0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < a.seconds:
        q = queries[(i * nq) % (4096 - nq):][:nq]
        index.search(q, a.k)
        n += nq
        i += 1
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return {"queries": n, "wall_s": round(w, 3), "cpu_s": round(c, 3), "qps": n / w, "q_per_cpu_s": n / c}

out = {"faiss": faiss.__version__, "rows": xb.shape[0], "dim": xb.shape[1], "k": a.k, "threads": 1,
       "single": run(1), f"batch{a.batch}": run(a.batch)}
print(json.dumps(out))

#!/usr/bin/env python3
"""numpy/OpenBLAS anchors for BenchKernels, on the same shapes and with the same timing rule
(median of repetitions of >= min_time seconds each). One JSON object per case per line on
stdout, same keys as BenchKernels --json; kernel names are prefixed numpy_. The BLAS that
threadpoolctl reports (library, version, kernel architecture) goes to stderr and, with
--info FILE, to FILE as JSON.

Run it through scripts/bench-kernels, which unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for
this command only.
"""
import argparse
import json
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def log(*a):
    print(*a, file=sys.stderr, flush=True)


p = argparse.ArgumentParser()
p.add_argument("--quick", action="store_true")
p.add_argument("--only")
p.add_argument("--info")
args = p.parse_args()
REPS = 3 if args.quick else 7
MIN_TIME = 0.1 if args.quick else 0.3
rng = np.random.default_rng(1)


def measure(body):
    body()
    rates = []
    for _ in range(REPS):
        units, start = 0, time.perf_counter()
        while True:
            units += body()
            el = time.perf_counter() - start
            if el >= MIN_TIME:
                break
        rates.append(units / el)
    return float(np.median(rates))


def report(kernel, dtype, dim, n, batch, threads, per_second, unit):
    print(json.dumps({"kernel": kernel, "dtype": dtype, "dim": dim, "n": n, "batch": batch,
                      "threads": threads, "per_second": round(per_second, 1), "unit": unit}), flush=True)


def enabled(name):
    return args.only is None or args.only in name


info = threadpool_info()
log("threadpoolctl:", json.dumps(info))
if args.info:
    with open(args.info, "w") as f:
        json.dump({"numpy": np.__version__, "threadpool_info": info}, f)

TABLE_ROWS = (1 << 18) if args.quick else (1 << 20)

for d in (64, 128):
    if not enabled("dot"):
        break
    T = rng.standard_normal((TABLE_ROWS, d), dtype=np.float32)
    u = rng.standard_normal(d, dtype=np.float32)
    pool = rng.integers(0, TABLE_ROWS, size=1 << 22)
    for n in (1_000, 10_000):
        for threads in (1, 2):
            with threadpool_limits(limits=threads, user_api="blas"):
                M = T[:n]
                report("numpy_dot", "f32", d, n, 1, threads, measure(lambda: (M @ u, n)[1]), "candidates/s")
                cur = [0]

                def gathered():
                    if cur[0] + n > len(pool):
                        cur[0] = 0
                    idx = pool[cur[0]:cur[0] + n]
                    cur[0] += n
                    T[idx] @ u
                    return n

                report("numpy_dot_gathered", "f32", d, n, 1, threads, measure(gathered), "candidates/s")
    del T

if enabled("search"):
    n, d, k = ((1 << 18) if args.quick else 1_000_000), 64, 100
    T = rng.standard_normal((n, d), dtype=np.float32)
    for batch in (1, 16):
        Q = rng.standard_normal((batch, d), dtype=np.float32)
        for threads in (1, 2):
            with threadpool_limits(limits=threads, user_api="blas"):
                def search():
                    s = Q @ T.T
                    top = np.argpartition(-s, k, axis=1)[:, :k]
                    part = np.take_along_axis(s, top, axis=1)
                    order = np.argsort(-part, axis=1, kind="stable")
                    np.take_along_axis(top, order, axis=1)
                    return batch

                report("numpy_search", "f32", d, n, batch, threads, measure(search), "queries/s")
    del T

if enabled("mlp"):
    dims = [256, 512, 256, 1]
    Ws = [rng.standard_normal((dims[i + 1], dims[i]), dtype=np.float32) / np.float32(np.sqrt(dims[i])) for i in range(3)]
    bs = [rng.standard_normal(dims[i + 1], dtype=np.float32) * np.float32(0.1) for i in range(3)]
    Wt = [np.ascontiguousarray(w.T) for w in Ws]
    user = rng.standard_normal(64, dtype=np.float32)
    for n in (1_000, 10_000):
        items = rng.standard_normal((n, 64), dtype=np.float32)
        dense = rng.standard_normal((n, 64), dtype=np.float32)
        for threads in (1, 2):
            with threadpool_limits(limits=threads, user_api="blas"):
                def mlp():
                    x = np.concatenate([np.broadcast_to(user, (n, 64)), items, items * user, dense], axis=1)
                    h = np.maximum(x @ Wt[0] + bs[0], 0)
                    h = np.maximum(h @ Wt[1] + bs[1], 0)
                    1 / (1 + np.exp(-(h @ Wt[2] + bs[2])))
                    return n

                report("numpy_mlp", "f32", 256, n, 1, threads, measure(mlp), "candidates/s")

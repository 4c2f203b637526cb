#!/usr/bin/env python3
"""Writes an ANN benchmark dataset directory for scripts/bench-ann (anchors and BenchANN read it).

  base.npy              float32 N x D, C order — the indexed vectors
  queries.npy           float32 Q x D
  gt.npy                int64 Q x 100 — exact inner-product top-100 row indices into base, best
                        first, ties to the lower index (scores in float64)
  exclude_<pp>.npy      sorted int64 row indices, a seeded random subset of f*N rows (the same for
                        every query), f in {0.01, 0.10, 0.50} -> pp = 01, 10, 50
  gt_exclude_<pp>.npy   int64 Q x 100 — the exact top-100 with those rows removed
  meta.json             kind, N, D, Q, seed, source, files (written last: its presence = complete)

Kinds:
  clustered --items-npy ITEMS [--queries-npy USERS]
        base = ITEMS (e.g. `shardrank synth` items.npy), queries = the first Q rows of USERS.
  clustered (without --items-npy)
        a numpy replica of the item/user embedding model of docs/data.md (genre centroids,
        anisotropic item scale, Zipf popularity coordinate; users with the constant 1 in the last
        coordinate) — for machines without a built `shardrank`. Not the same bytes as `synth`.
  normal --n N --dim D --seed S
        standard-normal base and queries.

Memory is bounded: base is scored in blocks of --block rows (Q x block float64 scores at a time).
Safe to re-run: an existing complete OUT (meta.json with the same parameters) is kept unless --force.

usage: bench-ann-data.py --out DIR --kind clustered|normal [--items-npy P] [--queries-npy P]
                         [--n N] [--dim D] [--queries Q] [--seed S] [--block B] [--force]
"""
import argparse, json, os, shutil, sys, time
import numpy as np

K_GT = 100
FRACTIONS = (0.01, 0.10, 0.50)


def log(msg):
    print(f"bench-ann-data: {msg}", file=sys.stderr, flush=True)


def pct_name(f):
    return f"{int(round(f * 100)):02d}"


def synth_like(n, dim, q, seed, genres=12):
    """numpy replica of docs/data.md's item and user embeddings (no countries, no interactions)."""
    rng = np.random.default_rng(seed)
    L = dim - 1
    mu = rng.standard_normal((genres, L)) / np.sqrt(L)
    gamma = np.arange(1, genres + 1, dtype=np.float64) ** -0.5
    gamma /= gamma.sum()
    items = np.empty((n, dim), dtype=np.float32)
    step = 1 << 18
    rank = rng.permutation(n)
    for s in range(0, n, step):
        m = min(step, n - s)
        prim = rng.choice(genres, size=m, p=gamma)
        v = mu[prim].copy()
        for p_extra in (0.35, 0.10):
            has = rng.random(m) < p_extra
            sec = rng.choice(genres, size=m, p=gamma)
            ok = has & (sec != prim)
            v[ok] += 0.5 * mu[sec[ok]]
        v += 0.5 * rng.standard_normal((m, L)) / np.sqrt(L)
        items[s:s + m, :L] = 2.0 * v
        items[s:s + m, L] = -0.8 * np.log(rank[s:s + m] + 1.0)
    users = np.empty((q, dim), dtype=np.float32)
    for u in range(q):
        ng = rng.integers(1, 4)
        gs = rng.choice(genres, size=ng, replace=False, p=gamma)
        w = rng.dirichlet(np.ones(ng))
        x = (w[:, None] * mu[gs]).sum(0) + 0.5 * rng.standard_normal(L) / np.sqrt(L)
        users[u, :L] = 4.0 * x
        users[u, L] = 1.0
    return items, users


def block_topc(S, c, col0):
    """Top-c columns of each row of S (float64), ties to the lower column; returns (scores, global idx)
    sorted best first."""
    q, b = S.shape
    if b <= c:
        idx = np.broadcast_to(np.arange(b), (q, b)).copy()
    else:
        idx = np.argpartition(-S, c - 1, axis=1)[:, :c]
        sc = np.take_along_axis(S, idx, axis=1)
        kth = sc.min(axis=1)
        # argpartition picks arbitrarily among equal scores at the boundary: redo those rows.
        tied = np.nonzero((S >= kth[:, None]).sum(axis=1) > c)[0]
        for r in tied:
            cand = np.nonzero(S[r] >= kth[r])[0]
            o = np.lexsort((cand, -S[r, cand]))[:c]
            idx[r] = cand[o]
    sc = np.take_along_axis(S, idx, axis=1)
    gidx = idx.astype(np.int64) + col0
    o = np.lexsort((gidx, -sc), axis=1)
    return np.take_along_axis(sc, o, axis=1), np.take_along_axis(gidx, o, axis=1)


def exact_topk(base, queries, k, block, cand):
    """Global top-`cand` per query (scores float64, indices), ties to the lower index."""
    q = queries.shape[0]
    q64 = queries.astype(np.float64)
    best_s = np.full((q, 0), -np.inf)
    best_i = np.zeros((q, 0), dtype=np.int64)
    n = base.shape[0]
    t0 = time.time()
    for s in range(0, n, block):
        blk = np.asarray(base[s:s + block], dtype=np.float64)
        S = q64 @ blk.T
        bs, bi = block_topc(S, cand, s)
        ms = np.concatenate([best_s, bs], axis=1)
        mi = np.concatenate([best_i, bi], axis=1)
        o = np.lexsort((mi, -ms), axis=1)[:, :cand]
        best_s = np.take_along_axis(ms, o, axis=1)
        best_i = np.take_along_axis(mi, o, axis=1)
        if s // block % 8 == 7:
            log(f"  ground truth: {min(n, s + block)}/{n} rows ({time.time() - t0:.1f} s)")
    return best_s, best_i


def exact_one(base, qv, allowed, k):
    """Exact top-k of one query over allowed rows (the slow path)."""
    sc = np.asarray(base, dtype=np.float64) @ qv.astype(np.float64)
    sc[~allowed] = -np.inf
    cand = np.argpartition(-sc, k - 1)[:k]
    kth = sc[cand].min()
    cand = np.nonzero(sc >= kth)[0]
    o = np.lexsort((cand, -sc[cand]))[:k]
    return cand[o]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", required=True, choices=["clustered", "normal"])
    ap.add_argument("--items-npy")
    ap.add_argument("--queries-npy")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--block", type=int, default=32768)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()

    t0 = time.time()
    if a.kind == "clustered" and a.items_npy:
        if not a.queries_npy:
            sib = os.path.join(os.path.dirname(os.path.abspath(a.items_npy)), "users.npy")
            a.queries_npy = sib if os.path.exists(sib) else None
        if not a.queries_npy:
            sys.exit("bench-ann-data: --kind clustered --items-npy needs --queries-npy (no users.npy beside it)")
        source = f"items {os.path.abspath(a.items_npy)}, queries first rows of {os.path.abspath(a.queries_npy)}"
    elif a.kind == "clustered":
        source = "numpy replica of the docs/data.md item/user model (12 genres; shardrank binary not used)"
    else:
        source = "standard normal (numpy default_rng)"
    params = {"kind": a.kind, "N": None, "D": None, "Q": a.queries, "seed": a.seed, "source": source}

    meta_path = os.path.join(a.out, "meta.json")
    if os.path.exists(meta_path) and not a.force:
        old = json.load(open(meta_path))
        want = {"kind": a.kind, "Q": a.queries, "seed": a.seed, "source": source}
        if a.kind == "normal" or not a.items_npy:
            want.update(N=a.n, D=a.dim)
        if all(old.get(k) == v for k, v in want.items()):
            log(f"{a.out} exists (meta.json matches), kept; --force rebuilds it")
            return
        log(f"{a.out} exists with other parameters: rebuilding")

    if a.kind == "clustered" and a.items_npy:
        base = np.ascontiguousarray(np.load(a.items_npy, mmap_mode="r"), dtype=np.float32)
        users = np.load(a.queries_npy, mmap_mode="r")
        if users.shape[0] < a.queries:
            sys.exit(f"bench-ann-data: {a.queries_npy} has {users.shape[0]} rows < Q={a.queries}")
        queries = np.ascontiguousarray(users[:a.queries], dtype=np.float32)
    elif a.kind == "clustered":
        base, queries = synth_like(a.n, a.dim, a.queries, a.seed)
    else:
        rng = np.random.default_rng(a.seed)
        base = rng.standard_normal((a.n, a.dim), dtype=np.float32)
        queries = rng.standard_normal((a.queries, a.dim), dtype=np.float32)
    n, d = base.shape
    q = queries.shape[0]
    if queries.shape[1] != d:
        sys.exit(f"bench-ann-data: queries have dim {queries.shape[1]}, base {d}")
    if n < 2 * K_GT:
        sys.exit(f"bench-ann-data: N={n} too small (need >= {2 * K_GT})")
    params.update(N=n, D=d)
    log(f"{a.kind}: base {n} x {d}, {q} queries ({source})")

    tmp = a.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "base.npy"), base)
    np.save(os.path.join(tmp, "queries.npy"), queries)

    # Excluded subsets (seeded, independent of the queries).
    excl = {}
    for f in FRACTIONS:
        rng = np.random.default_rng([a.seed, 7919, int(round(f * 100))])
        m = int(round(f * n))
        excl[f] = np.sort(rng.choice(n, size=m, replace=False).astype(np.int64))

    # One pass over base: the top-C per query (C large enough for the 50 % exclusion), then each
    # variant's top-100 is a filtered prefix; queries with fewer than 100 allowed rows in their
    # top-C (practically never) are recomputed exactly.
    cand = min(n, 4 * K_GT)
    best_s, best_i = exact_topk(base, queries, K_GT, a.block, cand)
    gt = best_i[:, :K_GT].copy()
    np.save(os.path.join(tmp, "gt.npy"), gt)
    files = ["base.npy", "queries.npy", "gt.npy"]
    for f, ex in excl.items():
        allowed = np.ones(n, dtype=bool)
        allowed[ex] = False
        ok = allowed[best_i]
        g = np.empty((q, K_GT), dtype=np.int64)
        slow = 0
        for r in range(q):
            row = best_i[r][ok[r]]
            if row.shape[0] >= K_GT:
                g[r] = row[:K_GT]
            else:
                g[r] = exact_one(base, queries[r], allowed, K_GT)
                slow += 1
        assert not np.isin(g, ex).any()
        p = pct_name(f)
        np.save(os.path.join(tmp, f"exclude_{p}.npy"), ex)
        np.save(os.path.join(tmp, f"gt_exclude_{p}.npy"), g)
        files += [f"exclude_{p}.npy", f"gt_exclude_{p}.npy"]
        log(f"exclude {f:.2f}: {ex.shape[0]} rows{f', {slow} queries recomputed exactly' if slow else ''}")
    params["files"] = files
    params["gt_k"] = K_GT
    params["exclude_fractions"] = list(FRACTIONS)
    with open(os.path.join(tmp, "meta.json"), "w") as fh:
        json.dump(params, fh, indent=1)
    shutil.rmtree(a.out, ignore_errors=True)
    os.rename(tmp, a.out)
    log(f"wrote {a.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()

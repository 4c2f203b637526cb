#!/usr/bin/env python3
"""Python reference two-stage Recommend service for the coordinator benchmark.

Usage
-----
    python3 -m venv .venv-bench-coord
    .venv-bench-coord/bin/pip install -r scripts/bench-coordinator-requirements.txt
    shardrank synth --out /tmp/world --users 2000 --items 20000 --dim 64 --seed 1 --quiet
    taskset -c 1 .venv-bench-coord/bin/python scripts/bench-coordinator-reference.py \\
        --world /tmp/world --port 7400 --cache /tmp/world-ref-cache
    # ... wait for the line "ready 7400" on stdout, then drive it exactly like a coordinator:
    shardrank loadtest --target 127.0.0.1:7400 --mix recommend --rate 200 --duration 5 --user-space 2000

  --world DIR            a `shardrank synth` world (items.npy, item_ids.npy, items.csv, users.npy,
                         user_ids.npy, users.csv, interactions.csv; row r of items.npy = item r + 1)
  --host / --port        where to listen (127.0.0.1; port 0 = any free one, printed on "ready")
  --cache DIR            keep the HNSW index, the tuned efSearch and the derived lists there, so a
                         second start over the same world and settings is fast
  --ef-search N          skip the tuning and search with efSearch N
  --target-recall R      tuning target, recall@10 against exact inner-product top-10 (0.95)
  --m / --ef-construction   HNSW graph (16 / 40)
  --hnsw-metric l2-mips|ip  how the HNSW index answers inner-product queries (below; l2-mips)
  --diversity-lambda L   MMR λ when a request says 0 (1 = plain top-k by score, ShardRank's default)
  --similar-per-item, --genre-budget, --country-budget, --popular-budget, --search-budget,
  --recent-items         per-source budgets (ShardRank's CoordinatorSettings defaults: 10, 60, 50,
                         50, 200, 10)
  --similar-k K          length of the precomputed item -> similar lists (`shardrank build
                         --similar K`); 0 = no similar source, like a table set built without
                         --similar (scripts/bench-coordinator builds none)
  --build-threads N      threads for the start-up build (default: the CPUs this process may use);
                         serving always runs on one thread
Prints progress on stderr and one line "ready <port>" (flushed) on stdout once it serves;
SIGTERM / SIGINT stop it cleanly.

What it is
----------
"A Python pipeline a team could write in an afternoon": one process, one asyncio event loop
(grpc.aio), the whole world in memory as numpy arrays and dicts, faiss `IndexHNSWFlat` (M 16)
for the user-vector inner-product search. It answers `shardrank.v1.Recommender/Recommend`
(proto/shardrank/v1/recommender.proto; the stubs are generated at start-up with grpc_tools.protoc
into a temporary directory) and grpc.health.v1 (SERVING), so `shardrank loadtest --mix recommend`
drives it exactly as it drives a ShardRank coordinator. Rank and Similar are not implemented
(UNIMPLEMENTED).

The HNSW index. `IndexHNSWFlat(64, 16, METRIC_INNER_PRODUCT)` over the synth world's items does
not work: their last coordinate is a large negative popularity bias, so the inner-product graph
links the unpopular items to each other and the popular ones (what users' top-10 is made of) are
barely reachable: recall@10 0.30 at efSearch 4096 on a 20k-item world (`--hnsw-metric ip` keeps
that index for comparison). The default, `l2-mips`, is the textbook reduction of maximum inner
product search to nearest neighbours: the same IndexHNSWFlat (M 16, efConstruction 40), L2, over
the items with one coordinate appended, sqrt(max‖x‖² − ‖x‖²), queried with a 0 appended:
‖q − x'‖² = ‖q‖² + max‖x‖² − 2 q·x, so the order is exactly the inner-product order; scores are
the inner products of the rows found. efSearch is tuned at start-up to the lowest value with
recall@10 >= --target-recall against exact top-10 on 1000 sampled user vectors. A search for k
results runs max(efSearch, k) deep: faiss (unlike hnswlib) does not raise efSearch to k itself,
and with efSearch < k returns fewer and worse than k results; the recall of the search as
requests use it (top --search-budget) is printed too.

How it mirrors ShardRank
------------------------
Derived data, as `shardrank build` computes it from the same world (ShardRankTables,
TableSetBuilder+InputDirectory.swift):
  * popular      items with >= 1 interaction by count descending, ties the lower id; first 1000;
                 score = the count
  * genre_top    per genre, the popular order filtered to items of that genre; first 1000
  * country_top  per country, items by interaction count among that country's users; first 1000
  * profiles     recent = the last 50 distinct items by time (most recent first; equal times: the
                 later line first); top genres = the 3 most frequent genres over the whole history
                 (ties: alphabetical); country from users.csv
  * similar      item -> top K by inner product, the item itself excluded (ties: lower id). Only
                 for items that are in some user's recent-10 list: those are the only ones a
                 request (without a caller-supplied context) can ask for. Exact numpy below
                 --similar-exact-below items (50,000, ShardRank's threshold for exact lists), else
                 through the same HNSW index (ShardRank uses IVF-PQ4 there); recall@K against
                 exact is printed either way.
Request path, as Recommender.recommend (Sources/Coordinator/Recommender+Pipeline.swift):
  * validate: the same checks and INVALID_ARGUMENT messages (model "mlp" is never loaded here)
  * profile (skipped when the context gives recent items, genres and country) and user vector;
    no vector and no profile = cold start (no similar/genre/search source: only country from the
    context and popular, ranked by their retrieval score)
  * seen = the stored profile's recent items (all 50) ∪ context.recent_item_ids ∪ exclude_ids
  * sources: similar lists of the first 10 recent items (limit similar_per_item, not over-fetched);
    genre_top of the first 3 genres, max(1, genre_budget / #genres) each; country_top; popular;
    each over-fetched by |seen| and cut to its budget after dropping seen items; HNSW search of
    the user vector for search_budget + |seen|, seen dropped, cut to search_budget
  * merge/dedupe: best retrieval score and a source bitmask per item (TopK.mergeCandidates);
    `candidates` = how many
  * gather items[ids - 1], rank by V_u · V_m (numpy), then post-rank: freshness boost, MMR with
    cosine similarity (Diversity.mmr; λ = request or --diversity-lambda; λ = 1: sort by score,
    ties lower id), genre cap, top k
  * timings: retrieve / filter (merge) / gather / rank / post_rank / total in µs
Differences that remain: the seen set here is still the stored recent items (ShardRank's is the
user's whole stored history, pushed into its shards' Search, with list over-fetch capped at 500:
docs/api.md) — they differ only for users with more than 50 distinct items; float32
vectors (the benchmark's ShardRank table set is int8), HNSW
instead of ShardRank's exact (or IVF-PQ4) search, no deadlines, shards, hedging or coverage (the
coverage field only carries the cold-start reason, as ShardRank's does).
"""
import os

# Serving is single-threaded: BLAS/OpenMP pools of one thread (set before numpy and faiss load);
# the start-up build raises faiss's OpenMP threads explicitly.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse, asyncio, csv, hashlib, json, math, signal, sys, tempfile, time

import numpy as np
import faiss
import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ORDER = (1, 2, 3, 4, 5)  # similar, genre, country, popular, search: bit i = SOURCE_ORDER[i]
BIT_SIMILAR, BIT_GENRE, BIT_COUNTRY, BIT_POPULAR, BIT_SEARCH = (1 << i for i in range(5))
CACHE_FORMAT = 1


def log(*a):
    print("bench-coordinator-reference:", *a, file=sys.stderr, flush=True)


def stubs():
    """The Python stubs of proto/shardrank/v1/recommender.proto (generated at run time)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from shardrank_stubs import generate
    return generate("recommender")


# ---------------------------------------------------------------------------------------------
# World loading and derived data (what `shardrank build` computes)
# ---------------------------------------------------------------------------------------------

def csv_header(path):
    with open(path, newline="") as f:
        return [h.strip() for h in next(csv.reader(f))]


def load_ids(path, n, what):
    """The synth world's ids are 1...n in row order; this reference relies on it (items[ids - 1])."""
    if not os.path.exists(path):
        return
    ids = np.load(path)
    if ids.shape != (n,) or not np.array_equal(ids, np.arange(1, n + 1, dtype=ids.dtype)):
        sys.exit(f"{path}: {what} ids must be 1...{n} in row order (a `shardrank synth` world)")


def ranked_by_count(counts, length):
    """Rows with count > 0 by count descending, ties the lower row (= lower id); first `length`."""
    rows = np.nonzero(counts)[0]
    rows = rows[np.lexsort((rows, -counts[rows]))]
    return rows if length is None else rows[:length]


def derive(world, n_items, n_users, list_length, recent_n):
    """Attributes, popular / genre_top / country_top lists and user profiles, as ShardRank's build."""
    t0 = time.time()
    # items.csv: genres (vocabulary sorted alphabetically, as the build's) and timestamps.
    hdr = csv_header(os.path.join(world, "items.csv"))
    ci, cg, ct = hdr.index("item_id"), hdr.index("genres"), hdr.index("timestamp")
    names_of_row = [None] * n_items
    timestamps = np.zeros(n_items, dtype=np.int64)
    vocab = set()
    with open(os.path.join(world, "items.csv"), newline="") as f:
        r = csv.reader(f)
        next(r)
        for rec in r:
            row = int(rec[ci]) - 1
            gs = [g.strip() for g in rec[cg].split("|") if g.strip()]
            names_of_row[row] = gs
            vocab.update(gs)
            timestamps[row] = int(rec[ct])
    genres = sorted(vocab)
    if len(genres) > 64:
        sys.exit("items.csv: more than 64 distinct genres")
    gi = {g: i for i, g in enumerate(genres)}
    masks = np.zeros(n_items, dtype=np.uint64)
    for row, gs in enumerate(names_of_row):
        m = 0
        for g in gs or ():
            m |= 1 << gi[g]
        masks[row] = m
    del names_of_row
    log(f"items.csv: {n_items} items, {len(genres)} genres ({time.time() - t0:.1f} s)")

    # users.csv: country per user (vocabulary sorted).
    hdr = csv_header(os.path.join(world, "users.csv"))
    cu, cc = hdr.index("user_id"), hdr.index("country")
    country_names = [""] * n_users
    with open(os.path.join(world, "users.csv"), newline="") as f:
        r = csv.reader(f)
        next(r)
        for rec in r:
            country_names[int(rec[cu]) - 1] = rec[cc].strip()
    countries = sorted({c for c in country_names if c})
    cidx = {c: i for i, c in enumerate(countries)}
    user_country = np.array([cidx.get(c, -1) for c in country_names], dtype=np.int32)

    # interactions.csv: user, item, time, in line order.
    hdr = csv_header(os.path.join(world, "interactions.csv"))
    cols = (hdr.index("user_id"), hdr.index("item_id"), hdr.index("timestamp"))
    inter = np.loadtxt(os.path.join(world, "interactions.csv"), delimiter=",", skiprows=1, usecols=cols, dtype=np.int64, ndmin=2)
    iu, ii, it = inter[:, 0] - 1, inter[:, 1] - 1, inter[:, 2]
    if len(iu) and (iu.min() < 0 or iu.max() >= n_users or ii.min() < 0 or ii.max() >= n_items):
        sys.exit("interactions.csv: a user_id or item_id outside the world's ids")
    log(f"interactions.csv: {len(iu)} interactions ({time.time() - t0:.1f} s)")

    popularity = np.bincount(ii, minlength=n_items)
    by_pop = ranked_by_count(popularity, None)
    out = {"genres": np.array(genres), "countries": np.array(countries), "masks": masks, "timestamps": timestamps}
    pop = by_pop[:list_length]
    out["popular_ids"], out["popular_scores"] = pop + 1, popularity[pop].astype(np.float32)
    for g in range(len(genres)):
        sel = by_pop[((masks[by_pop] >> np.uint64(g)) & np.uint64(1)) == 1][:list_length]
        out[f"genre_ids_{g}"], out[f"genre_scores_{g}"] = sel + 1, popularity[sel].astype(np.float32)
    ucountry = user_country[iu]
    for c in range(len(countries)):
        counts = np.bincount(ii[ucountry == c], minlength=n_items)
        sel = ranked_by_count(counts, list_length)
        out[f"country_ids_{c}"], out[f"country_scores_{c}"] = sel + 1, counts[sel].astype(np.float32)

    # Profiles: recent = last `recent_n` distinct items, most recent first (equal times: later line).
    line = np.arange(len(iu))
    order = np.lexsort((-line, -it, iu))
    su, si = iu[order], ii[order]
    bounds = np.searchsorted(su, np.arange(n_users + 1))
    recent = np.zeros((n_users, recent_n), dtype=np.int64)
    recent_len = np.zeros(n_users, dtype=np.int32)
    si_list = (si + 1).tolist()
    for u in range(n_users):
        d = list(dict.fromkeys(si_list[bounds[u]:bounds[u + 1]]))[:recent_n]
        recent[u, :len(d)] = d
        recent_len[u] = len(d)
    # Top genres: most frequent over the whole history; ties the lower (alphabetical) index.
    gcounts = np.zeros((n_users, max(1, len(genres))), dtype=np.int64)
    imask = masks[ii]
    for g in range(len(genres)):
        has = ((imask >> np.uint64(g)) & np.uint64(1)) == 1
        gcounts[:, g] = np.bincount(iu[has], minlength=n_users)
    top = np.argsort(-gcounts, axis=1, kind="stable")[:, :3]
    top_genres = np.where(np.take_along_axis(gcounts, top, axis=1) > 0, top, -1).astype(np.int32)
    out.update(recent=recent, recent_len=recent_len, top_genres=top_genres, user_country=user_country)
    log(f"derived lists and {n_users} profiles ({time.time() - t0:.1f} s)")
    return out


def exact_topk(queries, items, k, exclude_rows=None, chunk=8192, qblock=1024):
    """Exact inner-product top-k rows of each query (ties: lower row), best first; optionally
    excluding one row per query (its own). Returns (rows, scores)."""
    if len(queries) > qblock:
        parts = [exact_topk(queries[q:q + qblock], items, k, None if exclude_rows is None else exclude_rows[q:q + qblock], chunk)
                 for q in range(0, len(queries), qblock)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_r = np.full((nq, k), -1, dtype=np.int64)
    for s in range(0, len(items), chunk):
        sc = queries @ items[s:s + chunk].T
        if exclude_rows is not None:
            hit = (exclude_rows >= s) & (exclude_rows < s + chunk)
            sc[np.nonzero(hit)[0], exclude_rows[hit] - s] = -np.inf
        kk = min(k, sc.shape[1])
        part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        cs = np.concatenate([best_s, np.take_along_axis(sc, part, axis=1)], axis=1)
        cr = np.concatenate([best_r, part + s], axis=1)
        o = np.lexsort((cr, -cs), axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(cs, o, axis=1), np.take_along_axis(cr, o, axis=1)
    best_r[~np.isfinite(best_s)] = -1
    return best_r, best_s


def recall(got_rows, exact_rows):
    hits = sum(len(set(g.tolist()) & set(e[e >= 0].tolist())) for g, e in zip(got_rows, exact_rows))
    return hits / max(1, int((exact_rows >= 0).sum()))


def tune_ef(world, queries, exact10, target):
    """The lowest efSearch whose recall@10 against exact top-10 is >= target (a grid, then a
    bisection between the last failing and the first passing grid point)."""
    measured = {}

    def at(ef):
        if ef not in measured:
            world.index.hnsw.efSearch = ef
            lab, _ = world.search(queries, 10)
            measured[ef] = recall(lab, exact10)
            log(f"  efSearch {ef}: recall@10 {measured[ef]:.4f}")
        return measured[ef]

    lo, hi = 9, None  # faiss searches at least k = 10 deep whatever efSearch says
    for ef in (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096):
        if at(ef) >= target:
            hi = ef
            break
        lo = ef
    if hi is None:
        log(f"  recall@10 {target} not reached by efSearch 4096: using 4096")
        return 4096, measured[4096]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi, measured[hi]


def file_key(world, names):
    return {n: [os.path.getsize(os.path.join(world, n)), int(os.path.getmtime(os.path.join(world, n)))]
            for n in names if os.path.exists(os.path.join(world, n))}


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class World:
    """Everything a request reads, in memory."""

    def __init__(self, args):
        t_start = time.time()
        threads = args.build_threads or len(os.sched_getaffinity(0))
        faiss.omp_set_num_threads(threads)
        world = os.path.abspath(args.world)
        self.items = np.ascontiguousarray(np.load(os.path.join(world, "items.npy")), dtype=np.float32)
        self.users = np.ascontiguousarray(np.load(os.path.join(world, "users.npy")), dtype=np.float32)
        n_items, dim = self.items.shape
        n_users = len(self.users)
        if self.users.shape[1] != dim:
            sys.exit(f"users.npy has dim {self.users.shape[1]}, items.npy {dim}")
        load_ids(os.path.join(world, "item_ids.npy"), n_items, "item")
        load_ids(os.path.join(world, "user_ids.npy"), n_users, "user")
        log(f"world {world}: {n_items} items × {dim}, {n_users} users; build threads {threads}")
        cache = os.path.abspath(args.cache) if args.cache else None
        if cache:
            os.makedirs(cache, exist_ok=True)
        base = {"format": CACHE_FORMAT, "world": world}

        # -- Derived lists and profiles.
        dkey = digest({**base, "files": file_key(world, ["items.csv", "users.csv", "interactions.csv"]),
                       "list_length": args.list_length, "recent": args.recent, "items": n_items, "users": n_users})
        dpath = cache and os.path.join(cache, f"derived-{dkey}.npz")
        if dpath and os.path.exists(dpath):
            with np.load(dpath) as z:
                d = {k: z[k] for k in z.files}
            log(f"derived data from the cache ({dpath})")
        else:
            d = derive(world, n_items, n_users, args.list_length, args.recent)
            if dpath:
                np.savez(dpath + ".tmp.npz", **d)
                os.replace(dpath + ".tmp.npz", dpath)
        self.genres = [str(g) for g in d["genres"]]
        self.countries = [str(c) for c in d["countries"]]
        self.masks, self.timestamps = d["masks"], d["timestamps"]
        self.popular = (d["popular_ids"].tolist(), d["popular_scores"].tolist())
        self.genre_top = {g: (d[f"genre_ids_{i}"].tolist(), d[f"genre_scores_{i}"].tolist()) for i, g in enumerate(self.genres)}
        self.country_top = {c: (d[f"country_ids_{i}"].tolist(), d[f"country_scores_{i}"].tolist()) for i, c in enumerate(self.countries)}
        self.recent, self.recent_len = d["recent"], d["recent_len"]
        self.top_genres, self.user_country = d["top_genres"], d["user_country"]
        self.n_items, self.n_users, self.dim = n_items, n_users, dim

        # -- HNSW index over the items (row r = item r + 1).
        # -- HNSW index over the items (row r = item r + 1). "ip": IndexHNSWFlat(dim, M, inner
        # product) as is; "l2-mips": the same index over the items with one coordinate appended,
        # sqrt(max‖x‖² − ‖x‖²), searched with L2 by the query with 0 appended — ‖q − x'‖² =
        # ‖q‖² + max‖x‖² − 2 q·x, so the L2 order is exactly the inner-product order.
        self.metric = args.hnsw_metric
        self._params = {}  # efSearch -> faiss.SearchParametersHNSW
        norms2 = np.einsum("ij,ij->i", self.items, self.items)
        self.max_norm2 = float(norms2.max()) if n_items else 0.0
        ikey = digest({**base, "files": file_key(world, ["items.npy"]), "m": args.m, "efc": args.ef_construction, "metric": self.metric})
        ipath = cache and os.path.join(cache, f"hnsw-{ikey}.faiss")
        t0 = time.time()
        if ipath and os.path.exists(ipath):
            self.index = faiss.read_index(ipath)
            log(f"HNSW index from the cache ({ipath}, {time.time() - t0:.1f} s)")
            self.index_build_s = None
        else:
            if self.metric == "ip":
                self.index = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
            else:
                self.index = faiss.IndexHNSWFlat(dim + 1, args.m, faiss.METRIC_L2)
            self.index.hnsw.efConstruction = args.ef_construction
            step = 100_000
            for s in range(0, n_items, step):
                x = self.items[s:s + step]
                if self.metric != "ip":
                    x = np.hstack([x, np.sqrt(np.maximum(0, self.max_norm2 - norms2[s:s + step]))[:, None]]).astype(np.float32)
                self.index.add(x)
                log(f"  HNSW add {min(n_items, s + step)}/{n_items} ({time.time() - t0:.0f} s)")
            self.index_build_s = time.time() - t0
            log(f"HNSW index (M {args.m}, efConstruction {args.ef_construction}, {self.metric}) built in {self.index_build_s:.1f} s")
            if ipath:
                faiss.write_index(self.index, ipath + ".tmp")
                os.replace(ipath + ".tmp", ipath)
        del norms2
        # Query rows of the users, ready for the index (0 appended for l2-mips).
        self.users_q = self.users if self.metric == "ip" else np.hstack([self.users, np.zeros((n_users, 1), np.float32)])

        # -- efSearch: the lowest with recall@10 >= target on 1000 sampled user vectors; then the
        # recall of the search as requests use it (top search_budget, depth max(efSearch, k)).
        rng = np.random.default_rng(1)
        sample = self.users[rng.choice(n_users, size=min(args.recall_sample, n_users), replace=False)]
        kb = args.search_budget
        tkey = digest({"index": ikey, "users": file_key(world, ["users.npy"]), "target": args.target_recall,
                       "sample": args.recall_sample, "ef": args.ef_search, "kb": kb})
        tpath = cache and os.path.join(cache, f"ef-{tkey}.json")
        if tpath and os.path.exists(tpath):
            t = json.load(open(tpath))
            how = "cached"
        else:
            t0 = time.time()
            exact10, _ = exact_topk(sample, self.items, 10)
            if args.ef_search:
                t = {"ef_search": args.ef_search}
                self.index.hnsw.efSearch = args.ef_search
                t["recall10"] = recall(self.search(sample, 10)[0], exact10)
                how = "--ef-search"
            else:
                log(f"tuning efSearch for recall@10 >= {args.target_recall} on {len(sample)} user vectors (exact top-10 in {time.time() - t0:.1f} s)")
                ef, r = tune_ef(self, sample, exact10, args.target_recall)
                t = {"ef_search": ef, "recall10": r}
                how = f"tuned in {time.time() - t0:.1f} s"
            self.index.hnsw.efSearch = t["ef_search"]
            if kb > 0:
                exact_b, _ = exact_topk(sample, self.items, kb)
                t["recall_budget"] = recall(self.search(sample, kb)[0], exact_b)
            if tpath:
                json.dump(t, open(tpath, "w"))
        self.ef_search, self.recall10 = t["ef_search"], t["recall10"]
        self.index.hnsw.efSearch = self.ef_search
        log(f"efSearch {self.ef_search} ({how}): recall@10 {self.recall10:.4f} vs exact inner product on {len(sample)} sampled user vectors")
        if "recall_budget" in t:
            log(f"search as served (top {kb}, depth max({self.ef_search}, k)): recall@{kb} {t['recall_budget']:.4f} vs exact, same vectors")

        # -- Similar lists for the items of users' recent-N lists (the only ones a request asks for).
        self.similar_k = args.similar_k
        self.sim_row = np.full(n_items + 1, -1, dtype=np.int64)
        self.sim_ids = np.zeros((0, max(1, args.similar_k)), dtype=np.int64)
        self.sim_scores = np.zeros((0, max(1, args.similar_k)), dtype=np.float32)
        self.similar_exact = n_items < args.similar_exact_below
        self.sim_extra = {}  # item -> (ids, scores) computed on demand (context items outside the precomputed set)
        if args.similar_k > 0:
            n_recent = min(args.recent_items, self.recent.shape[1])
            wanted = np.unique(self.recent[:, :n_recent][np.arange(n_recent)[None, :] < self.recent_len[:, None]])
            exact = self.similar_exact
            skey = digest({"derived": dkey, "index": ikey, "k": args.similar_k, "recent_items": n_recent,
                           "ef": None if exact else self.ef_search, "exact": exact})
            spath = cache and os.path.join(cache, f"similar-{skey}.npz")
            if spath and os.path.exists(spath):
                with np.load(spath) as z:
                    wanted, self.sim_ids, self.sim_scores = z["items"], z["ids"], z["scores"]
                log(f"similar lists of {len(wanted)} items from the cache")
            else:
                t0 = time.time()
                self.sim_ids, self.sim_scores = self.compute_similar(wanted, args.similar_k, exact)
                log(f"similar lists (top {args.similar_k}) of {len(wanted)} items (those in some user's recent {n_recent}), "
                    f"{'exact' if exact else f'HNSW efSearch {self.ef_search}'}, in {time.time() - t0:.1f} s")
                if spath:
                    np.savez(spath + ".tmp.npz", items=wanted, ids=self.sim_ids, scores=self.sim_scores)
                    os.replace(spath + ".tmp.npz", spath)
            self.sim_row[wanted] = np.arange(len(wanted))
        log(f"start-up done in {time.time() - t_start:.1f} s")

    def search(self, queries, k, prepared=False):
        """HNSW search of `queries` (n × dim, or already with the l2-mips 0 when `prepared`) for
        k rows each: (rows, inner products), best first; row -1 (score -inf) where none was found.
        The search depth is max(efSearch, k): faiss does not raise efSearch to k by itself (with
        efSearch < k it returns fewer and worse results), hnswlib does."""
        if not prepared and self.metric != "ip":
            queries = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
        ef = max(self.index.hnsw.efSearch, k)
        params = self._params.get(ef)
        if params is None:
            params = self._params[ef] = faiss.SearchParametersHNSW(efSearch=ef)
        d, lab = self.index.search(queries, k, params=params)
        if self.metric == "ip":
            return lab, d
        # Inner products of what was found (exact; cheaper than undoing the L2 transform's rounding).
        q = queries[:, :self.dim]
        ip = np.einsum("qkd,qd->qk", self.items[lab], q)
        ip[lab < 0] = -np.inf
        return lab, ip.astype(np.float32)

    def compute_similar(self, wanted, k, exact, report=True):
        """Item ids -> (ids, scores) of their top-k by inner product, the item itself excluded;
        a short list is padded with id 0 (never an item id)."""
        rows = wanted - 1
        if exact:
            out, sc = exact_topk(self.items[rows], self.items, k, exclude_rows=rows, chunk=16384)
            return np.where(out >= 0, out + 1, 0), sc
        out = np.zeros((len(rows), k), dtype=np.int64)
        out_s = np.zeros((len(rows), k), dtype=np.float32)
        step = 4096
        for s in range(0, len(rows), step):
            r = rows[s:s + step]
            lab, dist = self.search(self.items[r], k + 1)
            for j in range(len(r)):
                keep = (lab[j] != r[j]) & (lab[j] >= 0)
                ids, sc = lab[j][keep][:k], dist[j][keep][:k]
                out[s + j, :len(ids)], out_s[s + j, :len(ids)] = ids + 1, sc
        if report:  # recall@k of the HNSW lists against exact on a sample
            rng = np.random.default_rng(2)
            pick = rng.choice(len(rows), size=min(1000, len(rows)), replace=False)
            ex, _ = exact_topk(self.items[rows[pick]], self.items, k, exclude_rows=rows[pick])
            log(f"similar lists: recall@{k} vs exact {recall(out[pick] - 1, ex):.4f} on {len(pick)} sampled items")
        return out, out_s

    def similar(self, item, limit):
        """The item's similar list (ids, scores), first `limit` entries; [] for an unknown item."""
        if self.similar_k <= 0 or not 0 < item <= self.n_items:
            return [], []
        r = int(self.sim_row[item])
        if r >= 0:
            ids, sc = self.sim_ids[r, :limit], self.sim_scores[r, :limit]
        else:
            if item not in self.sim_extra:
                if len(self.sim_extra) >= 100_000:
                    self.sim_extra.clear()
                i, sc = self.compute_similar(np.array([item]), self.similar_k, self.similar_exact, report=False)
                self.sim_extra[item] = (i[0], sc[0])
            ids, sc = self.sim_extra[item]
            ids, sc = ids[:limit], sc[:limit]
        keep = ids > 0
        return ids[keep].tolist(), sc[keep].tolist()


# ---------------------------------------------------------------------------------------------
# The request path
# ---------------------------------------------------------------------------------------------

class Invalid(Exception):
    pass


def mmr(relevance, vectors, lam, k, masks=None, cap=None):
    """Diversity.mmr: repeatedly picks the unpicked item maximising λ·rel − (1−λ)·(max cosine to
    the picked items; 0 before the first pick), ties the lower index, skipping items with a genre
    bit that already has `cap` picks. Returns candidate indices in pick order."""
    n = len(relevance)
    norms = np.einsum("ij,ij->i", vectors, vectors)
    inv = np.zeros(n, dtype=np.float32)
    np.divide(1, np.sqrt(norms), out=inv, where=norms > 0)
    max_sim = np.full(n, -np.inf, dtype=np.float32)
    free = np.ones(n, dtype=bool)
    counts = [0] * 64
    order = []
    rel = lam * relevance
    while len(order) < k:
        cand = free
        if masks is not None:
            full = 0
            for b in range(64):
                if counts[b] >= cap:
                    full |= 1 << b
            if full:
                cand = free & ((masks & np.uint64(full)) == 0)
        idx = np.flatnonzero(cand)
        if len(idx) == 0:
            break
        s = rel[idx] if not order else rel[idx] - (1 - lam) * max_sim[idx]
        best = int(idx[np.argmax(s)])
        free[best] = False
        order.append(best)
        if masks is not None:
            add_bits(int(masks[best]), counts)
        if len(order) == k:
            break
        sims = (vectors @ vectors[best]) * inv * inv[best]
        np.maximum(max_sim, sims, out=max_sim)
    return order


def is_blocked(mask, counts, cap):
    while mask:
        b = (mask & -mask).bit_length() - 1
        if counts[b] >= cap:
            return True
        mask &= mask - 1
    return False


def add_bits(mask, counts):
    while mask:
        counts[(mask & -mask).bit_length() - 1] += 1
        mask &= mask - 1


def cap_per_attribute(order, masks, cap, limit):
    counts, kept = [0] * 64, []
    for i in order:
        if len(kept) >= limit:
            break
        if is_blocked(int(masks[i]), counts, cap):
            continue
        kept.append(i)
        add_bits(int(masks[i]), counts)
    return kept


class Recommender:
    def __init__(self, w, args, pb):
        self.w, self.args, self.pb = w, args, pb

    def validate(self, req):
        if not (1 <= req.k <= 1000):
            raise Invalid(f"k={req.k} is out of range 1...1000")
        b = req.budgets
        for name in ("similar_per_item", "genre", "country", "popular", "search"):
            if getattr(b, name) > 10_000:
                raise Invalid(f"budgets.{name}={getattr(b, name)} exceeds the limit of 10000")
        if req.model not in ("", "dot", "mlp"):
            raise Invalid(f"unknown model '{req.model}' (known: dot, mlp)")
        if req.model == "mlp":
            raise Invalid("model 'mlp' is not loaded (the Python reference serves the dot model only)")
        if not (math.isfinite(req.diversity_lambda) and 0 <= req.diversity_lambda <= 1):
            raise Invalid(f"diversity_lambda={req.diversity_lambda} is out of range [0, 1]")
        if not (math.isfinite(req.freshness_weight) and req.freshness_weight >= 0):
            raise Invalid(f"freshness_weight={req.freshness_weight} must be finite and >= 0")
        if not (math.isfinite(req.min_coverage) and 0 <= req.min_coverage <= 1):
            raise Invalid(f"min_coverage={req.min_coverage} is out of range [0, 1]")
        for s in req.sources:
            if s not in SOURCE_ORDER:
                raise Invalid(f"sources: {s} is not a retrieval source (similar, genre, country, popular, search)")

    def recommend(self, req):
        start = time.perf_counter_ns()
        self.validate(req)
        w, a = self.w, self.args
        only = set(req.sources)
        on = lambda s: not only or s in only
        b = req.budgets
        spi = (b.similar_per_item or a.similar_per_item) if on(1) else 0
        genre_budget = (b.genre or a.genre_budget) if on(2) else 0
        country_budget = (b.country or a.country_budget) if on(3) else 0
        popular_budget = (b.popular or a.popular_budget) if on(4) else 0
        search_budget = (b.search or a.search_budget) if on(5) else 0
        k = req.k

        # --- Retrieve: profile, user vector, then the five sources.
        t0 = time.perf_counter_ns()
        ctx = req.context
        uid = req.user_id
        known = 1 <= uid <= w.n_users
        need_profile = not ctx.recent_item_ids or not ctx.genres or not ctx.country
        stored_recent = w.recent[uid - 1, :w.recent_len[uid - 1]].tolist() if known and need_profile else None
        uvec = w.users[uid - 1] if known else None
        cold = stored_recent is None and uvec is None
        if ctx.recent_item_ids:
            recent = list(ctx.recent_item_ids)[:a.recent_items]
        else:
            recent = (stored_recent or [])[:a.recent_items]
        if ctx.genres:
            genres = list(ctx.genres)[:3]
        elif stored_recent is not None:
            genres = [w.genres[g] for g in w.top_genres[uid - 1] if g >= 0]
        else:
            genres = []
        if ctx.country:
            country = ctx.country
        elif stored_recent is not None and w.user_country[uid - 1] >= 0:
            country = w.countries[w.user_country[uid - 1]]
        else:
            country = ""
        seen = set(stored_recent or ())
        seen.update(ctx.recent_item_ids)
        seen.update(ctx.exclude_ids)
        n_seen = len(seen)

        per_genre = 0 if not genres else max(1, genre_budget // len(genres))
        lists = []  # (bit, ids, scores, cap)
        if spi > 0:
            for item in recent:
                ids, scores = w.similar(item, spi)
                if ids:
                    lists.append((BIT_SIMILAR, ids, scores, spi))
        if genre_budget > 0:
            for g in genres:
                l = w.genre_top.get(g)
                if l:
                    n = per_genre + n_seen
                    lists.append((BIT_GENRE, l[0][:n], l[1][:n], per_genre))
        if country and country_budget > 0:
            l = w.country_top.get(country)
            if l:
                n = country_budget + n_seen
                lists.append((BIT_COUNTRY, l[0][:n], l[1][:n], country_budget))
        if popular_budget > 0:
            n = popular_budget + n_seen
            lists.append((BIT_POPULAR, w.popular[0][:n], w.popular[1][:n], popular_budget))
        if uvec is not None and search_budget > 0:
            lab, sc = w.search(w.users_q[uid - 1:uid], search_budget + n_seen, prepared=True)
            keep = lab[0] >= 0
            lists.append((BIT_SEARCH, (lab[0][keep] + 1).tolist(), sc[0][keep].tolist(), search_budget))
        t1 = time.perf_counter_ns()

        # --- Filter seen items, merge and dedupe (best score, source bitmask).
        best, srcs = {}, {}
        for bit, ids, scores, cap in lists:
            n = 0
            for i, s in zip(ids, scores):
                if i in seen:
                    continue
                if n >= cap:
                    break
                n += 1
                if i in srcs:
                    srcs[i] |= bit
                    if s > best[i]:
                        best[i] = s
                else:
                    srcs[i] = bit
                    best[i] = s
        ids = np.fromiter(best.keys(), dtype=np.int64, count=len(best))
        merged_scores = np.fromiter(best.values(), dtype=np.float32, count=len(best))
        o = np.lexsort((ids, -merged_scores))
        ids, merged_scores = ids[o], merged_scores[o]
        t2 = time.perf_counter_ns()

        # --- Gather.
        vecs = w.items[ids - 1]
        t3 = time.perf_counter_ns()

        # --- Rank.
        scores = vecs @ uvec if uvec is not None else merged_scores.copy()
        t4 = time.perf_counter_ns()

        # --- Post-rank: freshness boost, MMR or top-k, genre cap.
        lam = req.diversity_lambda if req.diversity_lambda != 0 else a.diversity_lambda
        n = len(ids)
        masks = w.masks[ids - 1] if req.genre_cap > 0 else None
        if req.freshness_weight > 0 and n:
            now = req.now_unix_s if req.now_unix_s != 0 else time.time()
            half = req.freshness_half_life_s or 7 * 86400
            age = np.maximum(0.0, now - w.timestamps[ids - 1].astype(np.float64))
            scores = scores + np.float32(req.freshness_weight) * np.exp2(-age / half).astype(np.float32)
        if lam < 1 and n > 0:
            order = mmr(scores.astype(np.float32), vecs, np.float32(lam), k, masks, req.genre_cap if masks is not None else None)
        else:
            order = np.lexsort((ids, -scores)).tolist()
            if masks is not None:
                order = cap_per_attribute(order, masks, req.genre_cap, k)
            order = order[:k]
        t5 = time.perf_counter_ns()

        pb = self.pb
        items = []
        for i in order:
            iid = int(ids[i])
            m = srcs[iid]
            items.append(pb.ScoredItem(item_id=iid, score=float(scores[i]),
                                       sources=[SOURCE_ORDER[bit] for bit in range(5) if m >> bit & 1]))
        cov = pb.Coverage()
        if cold:
            cov.degraded_reasons.append(f"cold start: user {uid} has no stored vector or profile")
        us = lambda x: x // 1000
        timings = pb.StageTimings(retrieve_us=us(t1 - t0), filter_us=us(t2 - t1), gather_us=us(t3 - t2), rank_us=us(t4 - t3),
                                  post_rank_us=us(t5 - t4), total_us=us(time.perf_counter_ns() - start))
        return pb.RecommendResponse(items=items, version=1, timings=timings, coverage=cov, candidates=n, cold_start=cold)


def build_server(rec, pb, pb_grpc, host, port):
    class Servicer(pb_grpc.RecommenderServicer):
        async def Recommend(self, request, context):
            try:
                return rec.recommend(request)
            except Invalid as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_RecommenderServicer_to_server(Servicer(), server)
    try:
        from grpc_health.v1 import health, health_pb2_grpc
        hs = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    except ImportError:
        hs = None
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        sys.exit(f"cannot listen on {host}:{port}")
    return server, hs, bound


async def serve(rec, pb, pb_grpc, args):
    server, hs, port = build_server(rec, pb, pb_grpc, args.host, args.port)
    await server.start()
    if hs is not None:
        from grpc_health.v1 import health_pb2
        for name in ("", "shardrank.v1.Recommender"):
            await hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"serving shardrank.v1.Recommender on {args.host}:{port} (one event loop, one faiss/BLAS thread)")
    print(f"ready {port}", flush=True)
    await stop.wait()
    log("stopping")
    await server.stop(grace=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, help="a `shardrank synth` world directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (printed on the ready line)")
    ap.add_argument("--cache", help="directory keeping the HNSW index, tuned efSearch and derived data")
    ap.add_argument("--m", type=int, default=16, help="HNSW M")
    ap.add_argument("--hnsw-metric", choices=("l2-mips", "ip"), default="l2-mips",
                    help="l2-mips: L2 HNSW over items with the MIPS coordinate appended (default); ip: METRIC_INNER_PRODUCT as is")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, default=0, help="fixed efSearch (0 = tune)")
    ap.add_argument("--target-recall", type=float, default=0.95, help="tuning target for recall@10")
    ap.add_argument("--recall-sample", type=int, default=1000, help="user vectors sampled for the tuning")
    ap.add_argument("--diversity-lambda", type=float, default=1.0, help="MMR λ when a request says 0")
    ap.add_argument("--similar-per-item", type=int, default=10)
    ap.add_argument("--genre-budget", type=int, default=60)
    ap.add_argument("--country-budget", type=int, default=50)
    ap.add_argument("--popular-budget", type=int, default=50)
    ap.add_argument("--search-budget", type=int, default=200)
    ap.add_argument("--recent-items", type=int, default=10, help="recent items feeding the similar source")
    ap.add_argument("--similar-k", type=int, default=10, help="similar list length (0 = no similar source)")
    ap.add_argument("--similar-exact-below", type=int, default=50_000, help="exact similar lists below this many items")
    ap.add_argument("--list-length", type=int, default=1000, help="genre_top / country_top / popular length")
    ap.add_argument("--recent", type=int, default=50, help="recent items kept per profile (the seen set)")
    ap.add_argument("--build-threads", type=int, default=0, help="start-up threads (0 = the CPUs allowed)")
    args = ap.parse_args()
    if not 0 < args.diversity_lambda <= 1:
        ap.error("--diversity-lambda must be in (0, 1]")
    for name in ("similar_per_item", "genre_budget", "country_budget", "popular_budget", "search_budget", "recent_items", "similar_k"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    # SIGTERM during a long start-up: exit at once (the default handler would, too, but say so).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench-coordinator-reference: SIGTERM during start-up"))
    pb, pb_grpc = stubs()
    w = World(args)
    faiss.omp_set_num_threads(1)
    asyncio.run(serve(Recommender(w, args, pb), pb, pb_grpc, args))


if __name__ == "__main__":
    main()

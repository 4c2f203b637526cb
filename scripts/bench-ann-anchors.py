#!/usr/bin/env python3
"""ANN anchors for scripts/bench-ann: hnswlib, faiss (HNSW flat, HNSW SQ8, IVFFlat), ScaNN, usearch on
the vectors of a bench-ann-data.py directory, inner-product (MIPS) metric.

Per system: build once with --threads-build threads (wall and CPU time, bytes per vector); then,
searching with ONE thread, for each k and each point of the recall knob's sweep (low to high):
  batch 1   one query per call in a Python loop, process CPU time over all Q queries -> qps_cpu
  batched   all Q queries in one call, still one thread -> qps_cpu_batched (the Python call
            overhead is the difference)
  recall@k  |returned ∩ gt[:, :k]| / k averaged over the queries, of the batch-1 results
then the same sweep with the exclude_<pp>.npy rows filtered out inside the search (where the library
has an in-search filter), against gt_exclude_<pp>.npy, counting excluded ids returned.
A sweep stops after the first point with recall >= --stop-recall, after two points that add less
than 0.0005 recall each (saturated), or when a point or the system's sweep time runs over its budget.
Phase 1 builds every system and runs its unfiltered sweeps (indexes are kept); phase 2 runs the
filtered sweeps while --deadline-s allows.

Build parameters (defaults): hnswlib M=16 ef_construction=100; faiss HNSW M=32 efConstruction=40
(flat and SQ8); IVFFlat nlist=min(4096, 4 sqrt N), k-means 10 iterations on 40 nlist rows; ScaNN
num_leaves=min(4000, 2 sqrt N), score_ah(2, threshold 0.2), float32 reorder 100/500 (k<=10) or
max(250,2k)/max(500,5k); usearch connectivity=16 expansion_add=100, f32.

Output: one JSON object per line on stdout (build records, sweep records, skip/no-filter records);
progress on stderr.

usage: bench-ann-anchors.py --data DIR [--k 10,100] [--systems a,b,...] [--quick]
                            [--threads-build 2] [--stop-recall 0.99] [--build-cap-s 240]
                            [--point-budget-s 30] [--system-budget-s 300] [--deadline-s S]
                            [--hard-deadline-epoch T]
                            [--no-filtered] [--filtered-batched]
"""
import argparse, json, math, os, shutil, sys, time

# Idle OpenMP workers (faiss builds use 2 threads) must not spin while the 1-thread searches are timed
# with process_time(), which counts every thread of the process. Set before libgomp is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np

DEFAULT_SYSTEMS = ["hnswlib", "faiss-hnsw", "faiss-hnsw-sq8", "faiss-ivfflat", "scann", "usearch"]
# also available: "hnswlib-l2aug" (hnswlib on the MIPS -> L2 reduction), which scripts/bench-ann adds for the clustered data
FRACTIONS = (0.01, 0.10, 0.50)


def log(msg):
    print(f"bench-ann-anchors: {msg}", file=sys.stderr, flush=True)


def emit(rec):
    print(json.dumps(rec), flush=True)


def rss_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


class BuildCapExceeded(Exception):
    pass


def chunked_add(add, n, cap_s, what, chunk=None):
    """Calls add(lo, hi) over [0, n) in chunks; after >= 10 % of the rows, gives up (BuildCapExceeded)
    if the projected build time is over cap_s (the projection is linear, so an underestimate for graphs)."""
    chunk = chunk or max(10000, n // 20)
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        add(lo, hi)
        el = time.perf_counter() - t0
        if hi >= n // 10 and hi < n:
            proj = 1.25 * el * n / hi    # inserts get slower as the graph grows: a margin over linear
            if proj > cap_s:
                raise BuildCapExceeded(f"{what}: {hi}/{n} rows in {el:.1f} s, projected {proj:.0f} s > cap {cap_s:.0f} s")
        if (lo // chunk) % 5 == 4:
            log(f"  {what}: {hi}/{n} rows, {el:.1f} s")


def ef_sweep(k, quick):
    base = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    v = [e for e in base if e >= k]
    if v[0] != k:
        v = [k] + v
    return v[::2] if quick else v


class Anchor:
    name = ""
    filter_note = None          # a string when there is no in-search filter
    version = ""

    def __init__(self, d, n, args):
        self.d, self.n, self.args = d, n, args

    # build(base, threads); size() -> (bytes, note); knobs(k) -> list; set_knob(v, k) -> label
    # one(Q) -> per-query arguments; search1(x, k) -> ids; batch(Q, k) -> 2-D ids
    # make_filter(allowed_bool) -> ctx; search1_f / batch_f(…, ctx)


class Hnswlib(Anchor):
    name = "hnswlib"

    def build(self, base, threads):
        import hnswlib, importlib.metadata as md
        self.version = md.version("hnswlib")
        M, efc = self.args.hnsw_m, self.args.hnsw_efc
        self.params = {"M": M, "ef_construction": efc}
        self.index = hnswlib.Index(space="ip", dim=self.d)
        self.index.init_index(max_elements=self.n, M=M, ef_construction=efc, random_seed=100)
        ids = np.arange(self.n)
        chunked_add(lambda lo, hi: self.index.add_items(base[lo:hi], ids[lo:hi], num_threads=threads),
                    self.n, self.args.build_cap_s, self.name)
        self.index.set_num_threads(1)

    def size(self, tmp):
        p = os.path.join(tmp, "hnswlib.bin")
        self.index.save_index(p)
        b = os.path.getsize(p)
        os.remove(p)
        return b, "serialized size (save_index) / N; includes the float32 vectors and level-0 links"

    def knobs(self, k):
        return ef_sweep(k, self.args.quick)

    def set_knob(self, v, k):
        self.index.set_ef(v)
        self.ef = v
        return f"ef={v}"

    def one(self, Q):
        return list(Q)

    def search1(self, x, k):
        return self.index.knn_query(x, k, num_threads=1)[0][0]

    def batch(self, Q, k):
        return self.index.knn_query(Q, k, num_threads=1)[0]

    def make_filter(self, allowed):
        return allowed.tolist().__getitem__     # a Python callback per visited node

    def search1_f(self, x, k, f):
        return self.index.knn_query(x, k, num_threads=1, filter=f)[0][0]

    def batch_f(self, Q, k, f):
        return self.index.knn_query(Q, k, num_threads=1, filter=f)[0]


class HnswlibL2Aug(Hnswlib):
    """hnswlib on the standard MIPS -> L2 reduction (Bachrach et al. 2014): base rows get an extra
    coordinate sqrt(max_norm^2 - |x|^2), queries a 0, and the L2 order in 65-d is the IP order in 64-d.
    Not in the issue's list: an IP graph fails on data with a wide norm spread (the clustered world's
    popularity coordinate), this shows what the same library reaches with the usual fix."""
    name = "hnswlib-l2aug"

    def build(self, base, threads):
        import hnswlib, importlib.metadata as md
        self.version = md.version("hnswlib")
        M, efc = self.args.hnsw_m, self.args.hnsw_efc
        self.params = {"M": M, "ef_construction": efc, "space": "l2", "augmented_dim": self.d + 1}
        self.index = hnswlib.Index(space="l2", dim=self.d + 1)
        self.index.init_index(max_elements=self.n, M=M, ef_construction=efc, random_seed=100)
        ids = np.arange(self.n)
        phi2 = 0.0
        for lo in range(0, self.n, 1 << 18):
            phi2 = max(phi2, float((base[lo:lo + (1 << 18)].astype(np.float64) ** 2).sum(1).max()))

        def add(lo, hi):
            x = base[lo:hi]
            extra = np.sqrt(np.maximum(phi2 - (x.astype(np.float64) ** 2).sum(1), 0.0)).astype(np.float32)
            self.index.add_items(np.hstack([x, extra[:, None]]), ids[lo:hi], num_threads=threads)
        chunked_add(add, self.n, self.args.build_cap_s, self.name)
        self.index.set_num_threads(1)

    def one(self, Q):
        return list(self.aug(Q))

    def aug(self, Q):
        return np.ascontiguousarray(np.hstack([Q, np.zeros((Q.shape[0], 1), np.float32)]))

    def batch(self, Q, k):
        return self.index.knn_query(self.aug(Q), k, num_threads=1)[0]

    def batch_f(self, Q, k, f):
        return self.index.knn_query(self.aug(Q), k, num_threads=1, filter=f)[0]


class FaissBase(Anchor):
    def _faiss(self):
        import faiss
        self.faiss = faiss
        self.version = faiss.__version__
        return faiss

    def size(self, tmp):
        p = os.path.join(tmp, f"{self.name}.faiss")
        self.faiss.write_index(self.index, p)
        b = os.path.getsize(p)
        os.remove(p)
        return b, "serialized size (faiss.write_index) / N"

    def one(self, Q):
        return [Q[i:i + 1] for i in range(Q.shape[0])]

    def search1(self, x, k):
        return self.index.search(x, k)[1][0]

    def batch(self, Q, k):
        return self.index.search(Q, k)[1]

    def make_filter(self, allowed):
        bm = np.packbits(allowed, bitorder="little")
        sel = self.faiss.IDSelectorBitmap(allowed.shape[0], self.faiss.swig_ptr(bm))
        return (bm, sel)   # keep the bitmap alive with the selector

    def search1_f(self, x, k, f):
        return self.index.search(x, k, params=self.params_for(f[1]))[1][0]

    def batch_f(self, Q, k, f):
        return self.index.search(Q, k, params=self.params_for(f[1]))[1]


class FaissHNSW(FaissBase):
    name = "faiss-hnsw"
    sq8 = False

    def build(self, base, threads):
        faiss = self._faiss()
        faiss.omp_set_num_threads(threads)
        M, efc = self.args.faiss_hnsw_m, self.args.faiss_hnsw_efc
        flat = BUILT.get("faiss-hnsw")
        if self.sq8 and flat is not None and (flat.params["M"], flat.params["efConstruction"]) == (M, efc):
            # The same graph with SQ8 storage: the graph that faiss-hnsw built on the float32 rows (same M,
            # efConstruction) is copied, the rows are encoded. Recall at a given efSearch is within noise of
            # a graph built natively on the SQ8 codes (checked at 50k); saves a second graph build.
            self.index = faiss.IndexHNSWSQ(self.d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
            self.index.storage.train(base[:min(self.n, 200000)])
            self.index.storage.add(base)
            self.index.hnsw = flat.index.hnsw
            self.index.ntotal = flat.index.ntotal
            self.params = {"M": M, "efConstruction": efc, "storage": "SQ8", "graph": "copied from faiss-hnsw"}
            self.extra_build_s, self.extra_build_cpu_s = flat.build_s, flat.build_cpu_s
            self.build_note = f"graph of faiss-hnsw ({flat.build_s:.1f} s, included) + SQ8 train/encode"
            faiss.omp_set_num_threads(1)
            return
        if self.sq8:
            self.index = faiss.IndexHNSWSQ(self.d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
            self.index.train(base[:min(self.n, 200000)])
        else:
            self.index = faiss.IndexHNSWFlat(self.d, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc
        self.params = {"M": M, "efConstruction": efc, "storage": "SQ8" if self.sq8 else "float32"}
        chunked_add(lambda lo, hi: self.index.add(base[lo:hi]), self.n, self.args.build_cap_s, self.name)
        faiss.omp_set_num_threads(1)

    def knobs(self, k):
        return ef_sweep(k, self.args.quick)

    def set_knob(self, v, k):
        self.index.hnsw.efSearch = v
        self.ef = v
        return f"efSearch={v}"

    def params_for(self, sel):
        # one SearchParameters per (selector, knob), not per call; the key holds the selector itself
        if getattr(self, "_pkey", (None, None))[0] is not sel or self._pkey[1] != self.ef:
            self._pkey, self._p = (sel, self.ef), self.faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef)
        return self._p


class FaissHNSWSQ8(FaissHNSW):
    name = "faiss-hnsw-sq8"
    sq8 = True


class FaissIVFFlat(FaissBase):
    name = "faiss-ivfflat"

    def build(self, base, threads):
        faiss = self._faiss()
        faiss.omp_set_num_threads(threads)
        nlist = self.args.nlist or min(4096, max(16, int(4 * math.sqrt(self.n))))
        self.nlist = nlist
        quant = faiss.IndexFlatIP(self.d)
        self.index = faiss.IndexIVFFlat(quant, self.d, nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.niter = 10
        ntrain = min(self.n, 40 * nlist)
        rng = np.random.default_rng(5)
        sample = base[np.sort(rng.choice(self.n, size=ntrain, replace=False))]
        self.params = {"nlist": nlist, "train_rows": ntrain, "kmeans_iter": 10, "quantizer": "IndexFlatIP"}
        self.index.train(sample)
        self.index.add(base)
        faiss.omp_set_num_threads(1)

    def knobs(self, k):
        v = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072) if p < self.nlist] + [self.nlist]
        return v[::2] if self.args.quick else v

    def set_knob(self, v, k):
        self.index.nprobe = v
        self.nprobe = v
        return f"nprobe={v}"

    def params_for(self, sel):
        if getattr(self, "_pkey", (None, None))[0] is not sel or self._pkey[1] != self.nprobe:
            self._pkey, self._p = (sel, self.nprobe), self.faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        return self._p


class Scann(Anchor):
    name = "scann"
    filter_note = "no in-search filter (ScaNN's Python API has no restricts/predicate)"

    def build(self, base, threads):
        import importlib.metadata as md
        from scann.scann_ops.py import scann_ops_pybind
        self.version = md.version("scann")
        nl = self.args.scann_leaves or min(4000, max(16, int(2 * math.sqrt(self.n))))
        self.leaves = nl
        ts = min(self.n, 250000)
        kmax = max(self.args.ks)
        self.params = {"num_leaves": nl, "training_sample_size": ts, "score_ah": 2,
                       "anisotropic_quantization_threshold": 0.2, "reorder": "float32"}
        self.searcher = (scann_ops_pybind.builder(base, kmax, "dot_product")
                         .tree(num_leaves=nl, num_leaves_to_search=max(1, nl // 20), training_sample_size=ts)
                         .score_ah(2, anisotropic_quantization_threshold=0.2)
                         .reorder(self.reorder_for(kmax)[-1])
                         .set_n_training_threads(threads)
                         .build())

    def reorder_for(self, k):
        return [100, 500] if k <= 10 else [max(250, 2 * k), max(500, 5 * k)]

    def size(self, tmp):
        p = os.path.join(tmp, "scann")
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
        self.searcher.serialize(p)
        b = dir_bytes(p)
        shutil.rmtree(p, ignore_errors=True)
        return b, "serialized size (searcher.serialize) / N; includes AH codes and float32 vectors for reordering"

    def knobs(self, k):
        ls = [l for l in (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072) if l < self.leaves] + [self.leaves]
        if self.args.quick:
            ls = ls[::2]
        return [(r, l) for r in self.reorder_for(k) for l in ls]

    def sweep_break_key(self, v):
        return v[0]   # a new reorder value starts a new monotone sweep

    def set_knob(self, v, k):
        self.reorder, self.lts = v
        return f"leaves_to_search={self.lts}/{self.leaves},reorder={self.reorder}"

    def one(self, Q):
        return list(Q)

    def search1(self, x, k):
        return self.searcher.search(x, k, self.reorder, self.lts)[0]

    def batch(self, Q, k):
        return self.searcher.search_batched(Q, k, self.reorder, self.lts)[0]


class Usearch(Anchor):
    name = "usearch"
    filter_note = "no in-search filter (usearch's Python Index.search takes no predicate)"

    def build(self, base, threads):
        from usearch.index import Index
        import usearch
        self.version = usearch.__version__
        conn, efa = self.args.usearch_conn, self.args.usearch_efa
        self.params = {"connectivity": conn, "expansion_add": efa, "dtype": "f32"}
        self.index = Index(ndim=self.d, metric="ip", dtype="f32", connectivity=conn, expansion_add=efa)
        keys = np.arange(self.n, dtype=np.uint64)
        chunked_add(lambda lo, hi: self.index.add(keys[lo:hi], base[lo:hi], threads=threads),
                    self.n, self.args.build_cap_s, self.name)

    def size(self, tmp):
        return int(self.index.serialized_length), (
            f"serialized_length / N (memory_usage / N = {self.index.memory_usage / self.n:.1f})")

    def knobs(self, k):
        return ef_sweep(k, self.args.quick)

    def set_knob(self, v, k):
        self.index.expansion_search = v
        return f"expansion_search={v}"

    def one(self, Q):
        return list(Q)

    def search1(self, x, k):
        return self.index.search(x, k, threads=1).keys

    def batch(self, Q, k):
        return self.index.search(Q, k, threads=1).keys


BUILT = {}   # name -> built Anchor of this run (faiss-hnsw-sq8 reuses faiss-hnsw's graph)
CLASSES = {c.name: c for c in (Hnswlib, HnswlibL2Aug, FaissHNSW, FaissHNSWSQ8, FaissIVFFlat, Scann, Usearch)}


def recall_of(ids, gt, k):
    tot = 0
    for i in range(gt.shape[0]):
        r = np.asarray(ids[i]).astype(np.int64)[:k]
        tot += np.intersect1d(r[r >= 0], gt[i, :k]).shape[0]
    return tot / (k * gt.shape[0])


def measure(sysobj, Q, qs1, k, f=None, batched=True):
    """(batch-1 ids, cpu s, wall s, batched ids or None, batched cpu s or None) for the current knob."""
    if f is None:
        s1, sb = sysobj.search1, sysobj.batch
        extra = ()
    else:
        s1, sb = sysobj.search1_f, sysobj.batch_f
        extra = (f,)
    for x in qs1[:min(20, len(qs1))]:    # warm-up
        s1(x, k, *extra)
    res = []
    c0, w0 = time.process_time(), time.perf_counter()
    for x in qs1:
        res.append(s1(x, k, *extra))
    c1, w1 = time.process_time(), time.perf_counter()
    if not batched:
        return res, c1 - c0, w1 - w0, None, None
    sb(Q[:min(20, Q.shape[0])], k, *extra)
    c2 = time.process_time()
    rb = sb(Q, k, *extra)
    c3 = time.process_time()
    return res, c1 - c0, w1 - w0, rb, c3 - c2


def sweep(obj, a, common, Q, qs1, k, g, frac, fv, deadline, budget):
    """One knob sweep (low to high); returns the wall seconds it spent."""
    name = obj.name
    ctx = None if fv is None else obj.make_filter(fv[1])
    batched = fv is None or a.filtered_batched
    nq = Q.shape[0]
    spent = 0.0
    done_key, last_key, prev, flat = None, None, None, 0
    for v in obj.knobs(k):
        key = obj.sweep_break_key(v) if hasattr(obj, "sweep_break_key") else None
        if key != last_key:      # a new sub-sweep (ScaNN: the next reorder depth)
            done_key, last_key, prev, flat = None, key, None, 0
        if done_key is not None:
            continue
        if (deadline and time.time() > deadline) or (a.hard_deadline_epoch and time.time() > a.hard_deadline_epoch):
            log(f"{name}: deadline reached, k={k} excluded={frac} sweep cut")
            emit({"system": name, **common, "k": k, "excluded": frac, "note": "sweep cut by the time budget"})
            break
        label = obj.set_knob(v, k)
        w0 = time.perf_counter()
        res, cpu1, wall1, rb, cpub = measure(obj, Q, qs1, k, ctx, batched)
        spent += time.perf_counter() - w0
        rec = recall_of(res, g, k)
        exr = 0
        if fv is not None:
            ids = np.concatenate([np.asarray(r).astype(np.int64).ravel()[:k] for r in res])
            exr = int(np.isin(ids, fv[0]).sum())
        out = {"system": name, **common, "k": k, "knob": label, "recall": round(rec, 5),
               "qps_cpu": round(nq / max(cpu1, 1e-9), 1),
               "qps_cpu_batched": None if rb is None else round(nq / max(cpub, 1e-9), 1),
               "qps_wall": round(nq / max(wall1, 1e-9), 1), "excluded": frac, "excluded_returned": exr}
        if rb is not None:
            out["recall_batched"] = round(recall_of(rb, g, k), 5)
        emit(out)
        log(f"{name} k={k} excl={frac:.2f} {label}: recall {rec:.4f}, {nq / cpu1:.0f} q/CPU-s"
            + ("" if rb is None else f" (batched {nq / max(cpub, 1e-9):.0f})") + (f", {exr} EXCLUDED RETURNED" if exr else ""))
        if cpu1 > a.point_budget_s or spent > budget:
            log(f"{name}: search time budget reached, k={k} excluded={frac} sweep stopped")
            break
        flat = flat + 1 if prev is not None and rec - prev < 0.0005 and rec > 0.5 else 0
        prev = rec
        if rec >= a.stop_recall or flat >= 2:
            if key is None:
                break
            done_key = key
    return spent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--k", default="10,100")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="every other sweep point")
    ap.add_argument("--threads-build", type=int, default=2)
    ap.add_argument("--stop-recall", type=float, default=0.99, help="a sweep ends after its first point at or above this recall")
    ap.add_argument("--build-cap-s", type=float, default=240.0, help="give up a graph build projected to take longer")
    ap.add_argument("--point-budget-s", type=float, default=30.0, help="stop a sweep after a point whose batch-1 pass took longer (CPU s)")
    ap.add_argument("--system-budget-s", type=float, default=300.0, help="wall seconds of unfiltered sweeps per system")
    ap.add_argument("--deadline-s", type=float, default=0.0,
                    help="wall seconds from start after which no further filtered sweep point is run (0: none); "
                         "builds and unfiltered sweeps always run")
    ap.add_argument("--hard-deadline-epoch", type=float, default=0.0,
                    help="absolute time (epoch s) after which nothing new starts: no build (and a graph build projected "
                         "past it is abandoned), no sweep point (0: none)")
    ap.add_argument("--no-filtered", action="store_true")
    ap.add_argument("--filtered-batched", action="store_true", help="also time filtered searches batched (default: batch 1 only)")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-efc", type=int, default=100)
    ap.add_argument("--faiss-hnsw-m", type=int, default=32)
    ap.add_argument("--faiss-hnsw-efc", type=int, default=40)
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default min(4096, 4 sqrt N))")
    ap.add_argument("--scann-leaves", type=int, default=0, help="ScaNN leaves (default min(4000, 2 sqrt N))")
    ap.add_argument("--usearch-conn", type=int, default=16)
    ap.add_argument("--usearch-efa", type=int, default=100)
    a = ap.parse_args()
    t_start = time.time()
    a.build_cap_s0 = a.build_cap_s
    deadline = t_start + a.deadline_s if a.deadline_s > 0 else 0.0
    a.ks = [int(x) for x in a.k.split(",") if x]
    systems = [s for s in a.systems.split(",") if s]
    for s in systems:
        if s not in CLASSES:
            sys.exit(f"bench-ann-anchors: unknown system {s} (known: {', '.join(CLASSES)})")

    meta = json.load(open(os.path.join(a.data, "meta.json")))
    dataset = meta["kind"]
    base = np.ascontiguousarray(np.load(os.path.join(a.data, "base.npy")), dtype=np.float32)
    Q = np.ascontiguousarray(np.load(os.path.join(a.data, "queries.npy")), dtype=np.float32)
    gt = np.load(os.path.join(a.data, "gt.npy"))
    n, d = base.shape
    if max(a.ks) > gt.shape[1]:
        sys.exit(f"bench-ann-anchors: k={max(a.ks)} > ground truth depth {gt.shape[1]}")
    filt = {}
    if not a.no_filtered:
        for f in FRACTIONS:
            p = f"{int(round(f * 100)):02d}"
            ex = np.load(os.path.join(a.data, f"exclude_{p}.npy"))
            allowed = np.ones(n, dtype=bool)
            allowed[ex] = False
            filt[f] = (ex, allowed, np.load(os.path.join(a.data, f"gt_exclude_{p}.npy")))
    tmp = os.path.join(a.data, ".tmp-anchors")
    os.makedirs(tmp, exist_ok=True)
    common = {"dataset": dataset, "n": n, "dim": d, "queries": Q.shape[0]}
    log(f"{a.data}: {dataset} {n} x {d}, {Q.shape[0]} queries, k {a.ks}, systems {systems}")

    # Phase 1: build every system and sweep it unfiltered (indexes are kept for phase 2).
    built = []
    for name in systems:
        obj = CLASSES[name](d, n, a)
        if a.hard_deadline_epoch:
            left = a.hard_deadline_epoch - time.time()
            if left <= 0:
                log(f"{name}: run time budget spent; not built")
                emit({"system": name, **common, "skipped": "run time budget spent before its build"})
                continue
            a.build_cap_s = min(a.build_cap_s0, left)
        rss0 = rss_bytes()
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            log(f"{name}: building ({a.threads_build} threads)")
            obj.build(base, a.threads_build)
        except ImportError as e:
            log(f"{name}: NOT INSTALLED ({e}); skipped")
            emit({"system": name, **common, "skipped": f"not installed: {e}"})
            continue
        except BuildCapExceeded as e:
            log(f"{name}: build capped: {e}; skipped")
            emit({"system": name, **common, "skipped": f"build capped: {e}"})
            continue
        except Exception as e:  # noqa: BLE001 — one library's failure must not stop the others
            log(f"{name}: build FAILED: {e!r}; skipped")
            emit({"system": name, **common, "skipped": f"build failed: {e!r}"})
            continue
        build_s, build_cpu = time.perf_counter() - w0, time.process_time() - c0
        obj.build_s, obj.build_cpu_s = build_s, build_cpu
        build_s += getattr(obj, "extra_build_s", 0.0)
        build_cpu += getattr(obj, "extra_build_cpu_s", 0.0)
        rss_d = rss_bytes() - rss0
        try:
            sz, note = obj.size(tmp)
        except Exception as e:  # noqa: BLE001
            sz, note = float("nan"), f"size unavailable: {e!r}"
        emit({"system": name, **common, "version": obj.version, "build_s": round(build_s, 2),
              "build_cpu_s": round(build_cpu, 2), "build_threads": a.threads_build,
              "bytes_per_vector": round(sz / n, 1), "bytes_note": note,
              "rss_bytes_per_vector": round(rss_d / n, 1), "params": obj.params,
              **({"build_note": obj.build_note} if hasattr(obj, "build_note") else {}),
              "load_avg": open("/proc/loadavg").read().split()[:3]})
        log(f"{name}: built in {build_s:.1f} s ({build_cpu:.1f} CPU s), {sz / n:.1f} B/vector")
        obj.qs1 = obj.one(Q)
        spent = 0.0
        for k in a.ks:
            spent += sweep(obj, a, common, Q, obj.qs1, k, gt, 0.0, None, 0.0, max(1.0, a.system_budget_s - spent))
        built.append(obj)
        BUILT[name] = obj

    # Phase 2: filtered sweeps, while the deadline allows.
    if not a.no_filtered:
        for obj in built:
            for k in a.ks:
                for frac in FRACTIONS:
                    if obj.filter_note:
                        emit({"system": obj.name, **common, "k": k, "excluded": frac, "filter": obj.filter_note})
                        continue
                    if (deadline and time.time() > deadline) or (a.hard_deadline_epoch and time.time() > a.hard_deadline_epoch):
                        emit({"system": obj.name, **common, "k": k, "excluded": frac, "note": "filtered sweep skipped: time budget"})
                        continue
                    fv = filt[frac]
                    sweep(obj, a, common, Q, obj.qs1, k, fv[2], frac, fv, deadline, a.system_budget_s)
    log(f"done in {time.time() - t_start:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

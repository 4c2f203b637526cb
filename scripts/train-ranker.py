"""Trains the coordinator's learned ranker (LambdaMART, LightGBM) on candidate sets a live cluster
produces, for a validation split cut from the training data. Run through scripts/train-ranker.

The loop (docs/ranking.md):
  1. builds tables from DIR/validation (written by `scripts/movielens --validation N`, or any input
     directory whose heldout.csv is cut from the training data, never the test split);
  2. starts a cluster on them (cluster/up, loopback, free ports), asks Recommend with
     return_features for every validation user at each training budget, and labels each candidate
     1 when it is one of the user's validation items;
  3. trains a lambdarank model (users are the query groups; 20 % of them held out for early
     stopping), writes it as a LightGBM text model with the feature names the coordinator
     computes, and a JSON report beside it;
  4. stops the cluster.

Exit status: 0 ok, 2 bad arguments or input, 1 anything else.
"""
import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def log(msg):
    print(f"train-ranker: {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    """A failure with its exit status: 2 for bad input, 1 for a step that failed."""
    def __init__(self, msg, status=2):
        super().__init__(msg)
        self.status = status


def split_budget(b):
    """The per-source budgets for a total budget b: the same split as `shardrank eval`."""
    return dict(similar_per_item=max(1, int(b * 0.15 / 10)), genre=max(1, int(b * 0.15)),
                country=max(1, int(b * 0.1)), popular=max(1, int(b * 0.1)), search=max(1, b // 2))


def read_heldout(path):
    """user -> set of items, from a user_id,item_id,... CSV (errors name the file and line)."""
    out = {}
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r, None)
        if not header or "user_id" not in header or "item_id" not in header:
            raise Fail(f"{path}:1: header must name user_id and item_id")
        cu, ci = header.index("user_id"), header.index("item_id")
        for n, row in enumerate(r, start=2):
            try:
                out.setdefault(int(row[cu]), set()).add(int(row[ci]))
            except (ValueError, IndexError):
                raise Fail(f"{path}:{n}: user_id and item_id must be unsigned integers")
    if not out:
        raise Fail(f"{path}: no interactions")
    return out


def max_timestamp(path):
    """The latest timestamp of an interactions CSV (the moment the split was cut), or 0."""
    latest = 0
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        for row in r:
            latest = max(latest, int(row.get("timestamp") or 0))
    return latest


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run(argv, what):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise Fail(f"{what} failed ({p.returncode}): {p.stderr.strip()[-2000:]}", status=1)
    return p


def collect(target, users, heldout, budgets, now, concurrency):
    """(features, labels, groups, names, stats) over every (budget, user) with a candidate set."""
    import grpc
    from concurrent.futures import ThreadPoolExecutor
    from shardrank_stubs import generate
    pb, pb_grpc = generate("recommender")
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.RecommenderStub(channel)
    rows, labels, groups, names = [], [], [], None
    stats = {"requests": 0, "failed": 0, "candidates": 0, "positives": 0, "groups_without_positive": 0}

    def ask(args):
        b, u = args
        req = pb.RecommendRequest(user_id=u, k=10, model="dot", diversity_lambda=1.0, now_unix_s=now,
                                  budgets=pb.Budgets(**split_budget(b)), return_features=True)
        try:
            return b, u, stub.Recommend(req, timeout=10)
        except grpc.RpcError as e:
            return b, u, e

    work = [(b, u) for b in budgets for u in users]
    with ThreadPoolExecutor(max_workers=concurrency) as ex:
        for b, u, r in ex.map(ask, work):
            stats["requests"] += 1
            if isinstance(r, Exception):
                stats["failed"] += 1
                continue
            f = r.features
            if names is None:
                names = list(f.names)
            elif list(f.names) != names:
                raise Fail("the coordinator changed its feature names between answers")
            n = len(f.item_ids)
            if n == 0:
                continue
            x = np.asarray(f.values, dtype=np.float32).reshape(n, len(names))
            y = np.array([1 if i in heldout[u] else 0 for i in f.item_ids], dtype=np.int32)
            stats["candidates"] += n
            stats["positives"] += int(y.sum())
            if y.sum() == 0:
                stats["groups_without_positive"] += 1
                continue  # no gradient in lambdarank: only cost
            rows.append(x)
            labels.append(y)
            groups.append((u, n))
    channel.close()
    if stats["failed"] > stats["requests"] // 10:
        raise Fail(f"{stats['failed']} of {stats['requests']} Recommend calls failed", status=1)
    if not rows:
        raise Fail("no candidate set holds a validation item: nothing to learn from")
    return rows, labels, groups, names, stats


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/train-ranker", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="an input directory with a validation/ split (scripts/movielens --validation N)")
    ap.add_argument("--validation-dir", help="the validation input directory (default DIR/validation)")
    ap.add_argument("--out", help="the model file to write (default DIR/ranker.txt); the report goes to OUT.json")
    ap.add_argument("--budgets", default="100,200,500,1000",
                    help="total retrieval budgets whose candidate sets are trained on (comma-separated)")
    ap.add_argument("--build-args", default="--similar 100 --similar-source interactions",
                    help="extra `shardrank build` flags (must match the tables the ranker will serve)")
    ap.add_argument("--shards", type=int, default=2, help="shards of the training cluster")
    ap.add_argument("--users", type=int, default=0, help="at most this many validation users (0 = all)")
    ap.add_argument("--rounds", type=int, default=150, help="boosting rounds (trees; each costs ~3 ns per candidate at serving)")
    ap.add_argument("--early-stopping", type=int, default=0,
                    help="stop when the held-out users' NDCG@10 has not improved for this many rounds (0 = off: "
                         "their NDCG is only reported)")
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--leaves", type=int, default=7, help="leaves per tree")
    ap.add_argument("--min-data-in-leaf", type=int, default=500)
    ap.add_argument("--l2", type=float, default=10.0, help="L2 regularisation of the leaf values")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=4, help="Recommend calls in flight")
    ap.add_argument("--binary", help="shardrank binary (default: .build/release/shardrank, else debug)")
    ap.add_argument("--work", help="work directory for tables and the cluster (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    try:
        budgets = sorted({int(x) for x in args.budgets.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--budgets: '{args.budgets}' is not a comma-separated list of integers")
    if not budgets or min(budgets) < 1 or args.shards < 1 or args.users < 0 or args.rounds < 1 or args.early_stopping < 0:
        ap.error("--budgets must be positive, --shards ≥ 1, --users ≥ 0, --rounds ≥ 1, --early-stopping ≥ 0")
    vdir = args.validation_dir or os.path.join(args.dir, "validation")
    out = args.out or os.path.join(args.dir, "ranker.txt")
    binary = args.binary or next((p for p in (os.path.join(ROOT, ".build", "release", "shardrank"),
                                             os.path.join(ROOT, ".build", "debug", "shardrank")) if os.access(p, os.X_OK)), None)
    try:
        import lightgbm as lgb
    except ImportError as e:
        print(f"train-ranker: error: lightgbm is not importable ({e})", file=sys.stderr)
        return 1
    work = args.work or tempfile.mkdtemp(prefix="train-ranker-")
    topology = None
    started = time.time()
    try:
        for f in ("heldout.csv", "interactions.csv"):
            if not os.path.isfile(os.path.join(vdir, f)):
                raise Fail(f"{vdir} has no {f}: make it with `scripts/movielens DIR OUT --validation 5` "
                           f"(the ranker must learn from a split cut from the training data)")
        if not binary:
            raise Fail("no shardrank binary: build it (swift build -c release) or pass --binary")
        heldout = read_heldout(os.path.join(vdir, "heldout.csv"))
        now = max_timestamp(os.path.join(vdir, "interactions.csv"))
        users = sorted(heldout)
        if args.users:
            users = users[:args.users]
        tables = os.path.join(work, "tables")
        log(f"building tables from {vdir} ({args.shards} shards, {args.build_args})")
        run([binary, "build", "--input", vdir, "--out", tables, "--shards", str(args.shards), "--quiet",
             *args.build_args.split()], "shardrank build")
        ports = free_ports(args.shards + 1)
        topology = os.path.join(work, "topology.json")
        with open(topology, "w") as f:
            json.dump({"tables": tables, "shards": [[f"127.0.0.1:{p}"] for p in ports[1:]],
                       "coordinators": [f"127.0.0.1:{ports[0]}"]}, f)
        run([os.path.join(ROOT, "cluster", "up"), topology, "--run-dir", os.path.join(work, "cluster"),
             "--binary", binary, "--timeout", "60"], "cluster/up")
        log(f"collecting candidate features of {len(users)} users at budgets {budgets} (now = {now})")
        rows, labels, groups, names, stats = collect(f"127.0.0.1:{ports[0]}", users, heldout, budgets, now, args.concurrency)
        log(f"{len(groups)} candidate sets with a validation item, {stats['candidates']} candidates, "
            f"{stats['positives']} positives ({stats['groups_without_positive']} sets without one skipped)")

        # 20 % of the users held out (all of a user's sets on one side): their NDCG@10 is reported,
        # and with --early-stopping it picks the number of trees.
        rng = np.random.default_rng(args.seed)
        held_users = set(rng.choice(sorted({u for u, _ in groups}), max(1, len({u for u, _ in groups}) // 5), replace=False).tolist())
        fit = [k for k, (u, _) in enumerate(groups) if u not in held_users]
        val = [k for k, (u, _) in enumerate(groups) if u in held_users]

        def dataset(idx, reference=None):
            return lgb.Dataset(np.vstack([rows[k] for k in idx]), np.concatenate([labels[k] for k in idx]),
                               group=[groups[k][1] for k in idx], feature_name=names, reference=reference,
                               free_raw_data=False)

        dfit = dataset(fit)
        dval = dataset(val, dfit) if val else None
        params = dict(objective="lambdarank", metric="ndcg", eval_at=[10], learning_rate=args.learning_rate,
                      num_leaves=args.leaves, min_data_in_leaf=args.min_data_in_leaf, lambda_l2=args.l2,
                      lambdarank_truncation_level=20, feature_fraction=0.9, bagging_fraction=0.9, bagging_freq=1, seed=args.seed, deterministic=True,
                      force_row_wise=True, num_threads=min(2, os.cpu_count() or 1), verbose=-1)
        evals = {}
        callbacks = [lgb.record_evaluation(evals)]
        if dval is not None and args.early_stopping:
            callbacks.append(lgb.early_stopping(args.early_stopping, verbose=False))
        booster = lgb.train(params, dfit, num_boost_round=args.rounds, valid_sets=[dval] if dval else [],
                            valid_names=["valid"] if dval else [], callbacks=callbacks)
        best = booster.best_iteration or booster.current_iteration()
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        booster.save_model(out, num_iteration=best)
        valid_ndcg = evals.get("valid", {}).get("ndcg@10", [])
        gain = booster.feature_importance("gain", iteration=best)
        report = {
            "model": os.path.abspath(out), "kind": "lightgbm lambdarank", "lightgbm": lgb.__version__,
            "validation_dir": os.path.abspath(vdir), "budgets": budgets, "users": len(users), "now_unix_s": now,
            "trees": best, "params": {k: v for k, v in params.items() if k != "num_threads"},
            "build_args": args.build_args, "shards": args.shards, "collection": stats,
            "fit_users": len({groups[k][0] for k in fit}), "held_out_users": len(held_users),
            "valid_ndcg_at_10": round(valid_ndcg[best - 1], 6) if len(valid_ndcg) >= best else None,
            "feature_importance_gain": {n: round(float(g), 3) for n, g in sorted(zip(names, gain), key=lambda x: -x[1])},
            "seconds": round(time.time() - started, 1),
        }
        with open(out + ".json", "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        log(f"wrote {out} ({best} trees; held-out users' NDCG@10 {report['valid_ndcg_at_10']}) and {out}.json "
            f"in {report['seconds']} s")
        return 0
    except Fail as e:
        print(f"train-ranker: error: {e}", file=sys.stderr)
        return e.status
    finally:
        if topology:
            subprocess.run([os.path.join(ROOT, "cluster", "down"), topology, "--run-dir", os.path.join(work, "cluster")],
                           capture_output=True, text=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

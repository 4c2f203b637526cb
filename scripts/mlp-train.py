#!/usr/bin/env python3
"""Fits the ShardRank MLP scorer on interactions with negative sampling (numpy only) and writes
PREFIX.safetensors + PREFIX.json, loadable by MLPModel(weightsPath:configPath:) and by
scripts/mlp-reference.py.

Inputs:
  --interactions CSV   user_id,item_id,timestamp[,rating]   (a header line is skipped if present)
  --embeddings DIR     users.npy [U,du], user_ids.npy [U], items.npy [I,di], item_ids.npy [I]
Model: features user (du), item (di), user_item_product (when du == di); --hidden layers with ReLU;
one sigmoid output. Each positive (u, i) gets --negatives uniformly drawn items as negatives
(labels 1 / 0, binary cross-entropy, Adam). The last --holdout fraction of interactions by
timestamp is held out and its AUC against sampled negatives is logged to stderr.

  mlp-train.py --interactions data/interactions.csv --embeddings data --out model/mlp
  mlp-train.py --synthetic /tmp/demo     # writes a small synthetic data set to try it on
"""
import argparse
import csv
import importlib.util
import json
import os
import sys

import numpy as np


def log(*a):
    print("mlp-train:", *a, file=sys.stderr, flush=True)


def load_reference_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlp-reference.py")
    spec = importlib.util.spec_from_file_location("mlp_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_synthetic(out, users=500, items=2000, dim=16, interactions=40000, seed=0):
    """Users and items with latent vectors; a user interacts with items of high affinity."""
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    U = rng.standard_normal((users, dim)).astype(np.float32) / np.sqrt(dim)
    I = rng.standard_normal((items, dim)).astype(np.float32) / np.sqrt(dim)
    uid = np.arange(1000, 1000 + users, dtype=np.int64)
    iid = np.arange(50000, 50000 + items, dtype=np.int64)
    np.save(os.path.join(out, "users.npy"), U)
    np.save(os.path.join(out, "user_ids.npy"), uid)
    np.save(os.path.join(out, "items.npy"), I)
    np.save(os.path.join(out, "item_ids.npy"), iid)
    with open(os.path.join(out, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp,rating\n")
        t = 1_600_000_000
        for _ in range(interactions):
            u = rng.integers(users)
            cand = rng.integers(items, size=20)
            best = cand[np.argmax(I[cand] @ U[u] * 4 + rng.gumbel(size=20))]
            t += int(rng.integers(1, 60))
            f.write(f"{uid[u]},{iid[best]},{t},{rng.integers(1, 6)}\n")
    log(f"wrote synthetic data set to {out}: {users} users, {items} items, {interactions} interactions")


def read_interactions(path, max_rows, min_rating):
    users, items, times = [], [], []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            try:
                u, i, t = int(row[0]), int(row[1]), float(row[2])
            except ValueError:
                continue  # header or malformed line
            if min_rating is not None and len(row) > 3 and float(row[3]) < min_rating:
                continue
            users.append(u); items.append(i); times.append(t)
            if max_rows and len(users) >= max_rows:
                break
    return np.array(users, dtype=np.int64), np.array(items, dtype=np.int64), np.array(times)


class MLP:
    def __init__(self, sizes, rng):
        self.W = [(rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
        self.b = [np.zeros(o, dtype=np.float32) for o in sizes[1:]]
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]
        self.t = 0

    def forward(self, x):
        acts = [x]
        for li, (w, b) in enumerate(zip(self.W, self.b)):
            z = acts[-1] @ w.T + b
            acts.append(np.maximum(z, 0) if li < len(self.W) - 1 else z)
        return acts  # last entry: logits [n, 1]

    def step(self, x, y, lr):
        acts = self.forward(x)
        logits = acts[-1][:, 0]
        p = 1 / (1 + np.exp(-logits))
        loss = float(np.mean(np.logaddexp(0, logits) - y * logits))
        g = ((p - y) / len(y)).astype(np.float32)[:, None]
        grads_w, grads_b = [None] * len(self.W), [None] * len(self.W)
        for li in range(len(self.W) - 1, -1, -1):
            grads_w[li] = g.T @ acts[li]
            grads_b[li] = g.sum(axis=0)
            if li > 0:
                g = (g @ self.W[li]) * (acts[li] > 0)
        self.t += 1
        for k, (p_, gr) in enumerate(zip(self.W + self.b, grads_w + grads_b)):
            self.m[k] = 0.9 * self.m[k] + 0.1 * gr
            self.v[k] = 0.999 * self.v[k] + 0.001 * gr * gr
            mh = self.m[k] / (1 - 0.9 ** self.t)
            vh = self.v[k] / (1 - 0.999 ** self.t)
            p_ -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        return loss


def features(U, I, users, items, product):
    u, i = U[users], I[items]
    cols = [u, i] + ([u * i] if product else [])
    return np.concatenate(cols, axis=1).astype(np.float32)


def auc(pos, neg):
    scores = np.concatenate([pos, neg])
    ranks = scores.argsort().argsort() + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interactions")
    p.add_argument("--embeddings")
    p.add_argument("--out")
    p.add_argument("--synthetic", metavar="DIR", help="write a synthetic data set to DIR and exit")
    p.add_argument("--hidden", default="64,32", help="hidden layer widths, comma-separated")
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--max-interactions", type=int, default=0)
    p.add_argument("--min-rating", type=float)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.synthetic:
        make_synthetic(a.synthetic, seed=a.seed)
        return
    if not (a.interactions and a.embeddings and a.out):
        p.error("--interactions, --embeddings and --out are required (or --synthetic DIR)")
    ref = load_reference_module()
    rng = np.random.default_rng(a.seed)

    U = np.load(os.path.join(a.embeddings, "users.npy")).astype(np.float32)
    I = np.load(os.path.join(a.embeddings, "items.npy")).astype(np.float32)
    uids = np.load(os.path.join(a.embeddings, "user_ids.npy"))
    iids = np.load(os.path.join(a.embeddings, "item_ids.npy"))
    if U.ndim != 2 or I.ndim != 2 or len(uids) != len(U) or len(iids) != len(I):
        sys.exit("mlp-train: users.npy/items.npy must be 2-D with one id per row in user_ids.npy/item_ids.npy")
    urow = {int(x): r for r, x in enumerate(uids)}
    irow = {int(x): r for r, x in enumerate(iids)}

    users, items, times = read_interactions(a.interactions, a.max_interactions, a.min_rating)
    keep = np.array([u in urow and i in irow for u, i in zip(users, items)], dtype=bool)
    if keep.sum() == 0:
        sys.exit("mlp-train: no interaction has both ids in the embeddings")
    log(f"{keep.sum()} of {len(users)} interactions have embeddings")
    ur = np.array([urow[u] for u in users[keep]])
    ir = np.array([irow[i] for i in items[keep]])
    order = np.argsort(times[keep], kind="stable")
    ur, ir = ur[order], ir[order]
    split = int(len(ur) * (1 - a.holdout))
    tr_u, tr_i, te_u, te_i = ur[:split], ir[:split], ur[split:], ir[split:]

    du, di = U.shape[1], I.shape[1]
    product = du == di
    in_dim = du + di + (du if product else 0)
    hidden = [int(h) for h in a.hidden.split(",") if h]
    net = MLP([in_dim] + hidden + [1], rng)
    log(f"model {in_dim} -> {' -> '.join(map(str, hidden))} -> 1, {len(tr_u)} train / {len(te_u)} held-out positives")

    for epoch in range(a.epochs):
        perm = rng.permutation(len(tr_u))
        losses = []
        for s in range(0, len(perm), a.batch):
            idx = perm[s:s + a.batch]
            pu = tr_u[idx]
            nu = np.repeat(pu, a.negatives)
            ni = rng.integers(len(I), size=len(nu))
            x = features(U, I, np.concatenate([pu, nu]), np.concatenate([tr_i[idx], ni]), product)
            y = np.concatenate([np.ones(len(pu)), np.zeros(len(nu))]).astype(np.float32)
            losses.append(net.step(x, y, a.lr))
        msg = f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}"
        if len(te_u):
            pos = net.forward(features(U, I, te_u, te_i, product))[-1][:, 0]
            neg = net.forward(features(U, I, te_u, rng.integers(len(I), size=len(te_u)), product))[-1][:, 0]
            msg += f", held-out AUC {auc(pos, neg):.4f}"
        log(msg)

    feats = [{"kind": "user", "dim": du}, {"kind": "item", "dim": di}]
    if product:
        feats.append({"kind": "user_item_product", "dim": du})
    layers, tensors = [], []
    for li, (w, b) in enumerate(zip(net.W, net.b)):
        layers.append({"weight": f"layers.{li}.weight", "bias": f"layers.{li}.bias",
                       "activation": "sigmoid" if li == len(net.W) - 1 else "relu"})
        tensors += [(f"layers.{li}.weight", w), (f"layers.{li}.bias", b)]
    config = {"format": "shardrank-mlp", "version": 1, "features": feats, "layers": layers}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    ref.save_safetensors(a.out + ".safetensors", tensors)
    with open(a.out + ".json", "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    # Round trip through the reference forward pass (same file format the Swift loader reads).
    loaded = ref.load_safetensors(a.out + ".safetensors")
    check = ref.forward(config, loaded, U[te_u[0] if len(te_u) else 0], I[:5])
    direct = 1 / (1 + np.exp(-net.forward(features(U, I, np.repeat(te_u[0] if len(te_u) else 0, 5), np.arange(5), product))[-1][:, 0]))
    if not np.allclose(check, direct, rtol=1e-4, atol=1e-6):
        sys.exit("mlp-train: written model does not reproduce the trained network")
    log(f"wrote {a.out}.safetensors and {a.out}.json")


if __name__ == "__main__":
    main()

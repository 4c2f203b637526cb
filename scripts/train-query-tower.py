"""Trains the coordinator's query tower: a small network that computes a user's vector at request
time from the user's recent items, top genres and country, trained as the query side of a two-tower
model whose item side is frozen (the item table's own vectors, DIR/items.npy). Run through
scripts/train-query-tower, which installs scripts/query-tower-requirements.txt (JAX, optax,
safetensors) into .venv first. docs/query-tower.md describes the model and the files.

Writes OUT.safetensors (the tensors), OUT.json (the config the forward pass needs, and what the
tower was trained on with its offline figures) and OUT.fixture.json (example inputs with the user
vectors of the numpy reference forward pass below, for the native implementation's tests).

Training: for every user's training history (interactions.csv, by timestamp then file order,
repeated items dropped), every position t >= 1 is an example: the items before t (most recent
first, at most --recent) with the user's profile genres and country predict item t, by a full
softmax over every item (items already seen before t masked out), Adam. heldout.csv is never
trained on: it is only the offline evaluation (recall@10 of the tower, of the stored MF vectors
in users.npy and of popularity, training items excluded).

Exit status: 0 ok, 2 bad arguments or input, 1 anything else.
"""
import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

KIND = "shardrank-query-tower"
VERSION = 1
GENRE_SLOTS = 3
GENRE_WEIGHTS = (3.0, 2.0, 1.0)  # the 1st, 2nd and 3rd genre of a user
TENSORS = ("genre_embedding", "country_embedding", "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias")


def log(msg):
    print(f"train-query-tower: {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    """A failure with its exit status: 2 for bad input, 1 for a step that failed."""
    def __init__(self, msg, status=2):
        super().__init__(msg)
        self.status = status


# ---- The forward pass (the reference: the fixture and the offline evaluation use it) ---------------

def forward(config, tensors, item_vectors_by_id, recent, genres, country):
    """The user vector V_u (float64 [dim]) of the query tower described by config (OUT.json) and
    tensors (OUT.safetensors as numpy arrays), for one request:
      recent   item ids, most recent first; ids missing from item_vectors_by_id (id -> [dim]) are
               skipped, and the first config["recent"] known ones are used;
      genres   genre names, most watched first; the first 3 are used; unknown names map to the
               last row of genre_embedding, and no genres at all to that row alone;
      country  a country name, or "" (unknown or empty: the last row of country_embedding).
    Computed in float64 from the float32 tensors."""
    dim, cap, decay = config["dim"], config["recent"], float(config["recency_decay"])
    vs = []
    for item in recent:
        if len(vs) == cap:
            break
        v = item_vectors_by_id.get(int(item))
        if v is not None:
            vs.append(np.asarray(v, dtype=np.float64))
    if vs:
        m = np.stack(vs)
        mean_recent = m.mean(axis=0)
        w = decay ** np.arange(len(vs), dtype=np.float64)
        recency_mean = (w[:, None] * m).sum(axis=0) / w.sum()
    else:
        mean_recent = np.zeros(dim)
        recency_mean = np.zeros(dim)

    ge = tensors["genre_embedding"].astype(np.float64)
    row_of_genre = {g: k for k, g in enumerate(config["genres"])}
    names = list(genres)[:GENRE_SLOTS]
    if names:
        rows = [row_of_genre.get(g, len(config["genres"])) for g in names]
        g = np.array(GENRE_WEIGHTS[:len(rows)])
        genre = (g[:, None] * ge[rows]).sum(axis=0) / g.sum()
    else:
        genre = ge[len(config["genres"])]

    ce = tensors["country_embedding"].astype(np.float64)
    countries = config["countries"]
    crow = countries.index(country) if country in countries else len(countries)
    country_vec = ce[crow]

    x = np.concatenate([mean_recent, recency_mean, genre, country_vec])
    h = np.maximum(tensors["layer0.weight"].astype(np.float64) @ x + tensors["layer0.bias"].astype(np.float64), 0.0)
    out = tensors["layer1.weight"].astype(np.float64) @ h + tensors["layer1.bias"].astype(np.float64)
    return out + float(config["residual"]) * recency_mean


# ---- Reading the input directory -----------------------------------------------------------------

def csv_rows(path, required):
    """Yields (line number, row dict) of a CSV file whose header must name the required columns."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}")
    with f:
        r = csv.reader(f)
        try:
            header = next(r, None)
        except (csv.Error, UnicodeDecodeError) as e:
            raise Fail(f"{path}:1: {e}")
        if not header or any(c not in header for c in required):
            raise Fail(f"{path}:1: the header must name {', '.join(required)} (found {header or 'nothing'})")
        cols = {c: header.index(c) for c in header}
        n = 1
        try:
            for n, row in enumerate(r, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise Fail(f"{path}:{n}: expected {len(header)} fields, got {len(row)}")
                yield n, {c: row[k] for c, k in cols.items()}
        except (csv.Error, UnicodeDecodeError) as e:
            raise Fail(f"{path}:{n + 1}: {e}")


def parse_id(path, n, field, s):
    try:
        v = int(s)
    except ValueError:
        raise Fail(f"{path}:{n}: {field} '{s}' is not an unsigned integer")
    if v < 0:
        raise Fail(f"{path}:{n}: {field} '{s}' is not an unsigned integer")
    return v


def load_npy(path, what):
    if not os.path.isfile(path):
        raise Fail(f"{path}: missing ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise Fail(f"{path}: not a readable .npy file ({e})")


def read_input(d):
    """Everything training and evaluation need from an input directory (docs/data.md)."""
    if not os.path.isdir(d):
        raise Fail(f"{d}: not a directory")
    p = lambda name: os.path.join(d, name)
    for name in ("items.npy", "item_ids.npy", "items.csv", "interactions.csv"):
        if not os.path.isfile(p(name)):
            raise Fail(f"{p(name)}: missing (an input directory has items.npy, item_ids.npy, items.csv, "
                       f"users.csv and interactions.csv; docs/data.md)")
    items = load_npy(p("items.npy"), "the item vectors")
    ids = load_npy(p("item_ids.npy"), "the item ids")
    if items.ndim != 2 or items.dtype != np.float32 or items.shape[0] == 0 or items.shape[1] == 0:
        raise Fail(f"{p('items.npy')}: expected a non-empty float32 M×D matrix, found {items.dtype} {list(items.shape)}")
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.shape[0] != items.shape[0]:
        raise Fail(f"{p('item_ids.npy')}: expected {items.shape[0]} integer ids (one per row of items.npy), "
                   f"found {ids.dtype} {list(ids.shape)}")
    if not np.isfinite(items).all():
        raise Fail(f"{p('items.npy')}: holds NaN or infinite values")
    ids = ids.astype(np.int64)
    index = {}
    for r, i in enumerate(ids.tolist()):
        if i in index:
            raise Fail(f"{p('item_ids.npy')}: item id {i} appears twice (rows {index[i]} and {r})")
        index[i] = r

    item_genres = [[] for _ in range(len(ids))]
    vocab = set()
    for n, row in csv_rows(p("items.csv"), ["item_id", "genres"]):
        i = parse_id(p("items.csv"), n, "item_id", row["item_id"])
        if i in index:
            gs = list(dict.fromkeys(g for g in row["genres"].split("|") if g))
            item_genres[index[i]] = gs
            vocab.update(gs)
    genres = sorted(vocab)
    genre_row = {g: k for k, g in enumerate(genres)}

    country_of = {}
    if os.path.isfile(p("users.csv")):
        for n, row in csv_rows(p("users.csv"), ["user_id", "country"]):
            country_of[parse_id(p("users.csv"), n, "user_id", row["user_id"])] = row["country"]
    countries = sorted({c for c in country_of.values() if c})

    def read_interactions(path):
        rows = []
        for n, row in csv_rows(path, ["user_id", "item_id", "timestamp"]):
            u = parse_id(path, n, "user_id", row["user_id"])
            i = parse_id(path, n, "item_id", row["item_id"])
            try:
                t = int(row["timestamp"])
            except ValueError:
                raise Fail(f"{path}:{n}: timestamp '{row['timestamp']}' is not an integer")
            if i not in index:
                raise Fail(f"{path}:{n}: item_id {i} is not in item_ids.npy")
            rows.append((u, t, n, index[i]))
        return rows

    train = read_interactions(p("interactions.csv"))
    if not train:
        raise Fail(f"{p('interactions.csv')}: no interactions")
    # Per user: the history by time, then file order; a repeated item keeps its first interaction
    # (the profile's recent list holds distinct items).
    history, had = {}, {}
    genre_counts = {}
    for u, t, n, r in sorted(train):
        if r not in had.setdefault(u, set()):
            had[u].add(r)
            history.setdefault(u, []).append(r)
        c = genre_counts.setdefault(u, {})
        for g in item_genres[r]:  # the builder's profile counts every interaction
            c[g] = c.get(g, 0) + 1
    top_genres = {u: [g for g, _ in sorted(c.items(), key=lambda x: (-x[1], genre_row[x[0]]))][:GENRE_SLOTS]
                  for u, c in genre_counts.items()}
    heldout = {}
    if os.path.isfile(p("heldout.csv")):
        for u, t, n, r in read_interactions(p("heldout.csv")):
            heldout.setdefault(u, set()).add(r)
    users_mf = None
    if os.path.isfile(p("users.npy")) and os.path.isfile(p("user_ids.npy")):
        uv = load_npy(p("users.npy"), "the user vectors")
        uids = load_npy(p("user_ids.npy"), "the user ids")
        if uv.ndim != 2 or uv.shape[1] != items.shape[1] or uids.ndim != 1 or uids.shape[0] != uv.shape[0]:
            raise Fail(f"{p('users.npy')}: expected N×{items.shape[1]} vectors with N ids in user_ids.npy, "
                       f"found {list(uv.shape)} and {list(uids.shape)}")
        users_mf = {int(u): uv[k] for k, u in enumerate(uids.tolist())}
    with open(p("items.npy"), "rb") as f:
        items_sha = hashlib.sha256(f.read()).hexdigest()
    return dict(dir=os.path.abspath(d), items=items, ids=ids, index=index, item_genres=item_genres, genres=genres,
                countries=countries, country_of=country_of, history=history, top_genres=top_genres,
                heldout=heldout, users_mf=users_mf, items_sha256=items_sha, interactions=len(train))


# ---- Training (JAX) --------------------------------------------------------------------------------

def genre_features(names, genre_row, n_genres):
    """(rows [3], weights [3]) of a genre list: the contract's g = (3, 2, 1), the unknown row for
    unknown names, the unknown row alone for no genres."""
    rows, w = [n_genres] * GENRE_SLOTS, [0.0] * GENRE_SLOTS
    if not names:
        w[0] = 1.0
    for k, g in enumerate(names[:GENRE_SLOTS]):
        rows[k], w[k] = genre_row.get(g, n_genres), GENRE_WEIGHTS[k]
    return rows, w


def train(data, args, unseen):
    """Trains the tower on every user but the unseen ones; returns (config, tensors, what it learned
    from) in the exported form."""
    import jax
    import jax.numpy as jnp
    import optax

    items = data["items"]
    n_items, dim = items.shape
    genres, countries = data["genres"], data["countries"]
    n_g, n_c = len(genres), len(countries)
    genre_row = {g: k for k, g in enumerate(genres)}
    country_row = {c: k for k, c in enumerate(countries)}
    R = args.recent

    # Users and their features; a flat history array with per-user offsets.
    users = sorted(u for u in data["history"] if u not in unseen)
    flat, offsets, ex_g, ex_u = [], [], [], []
    ug_rows, ug_w, u_country = [], [], []
    for k, u in enumerate(users):
        h = data["history"][u]
        offsets.append(len(flat))
        for t in range(1, len(h)):
            ex_g.append(len(flat) + t)
            ex_u.append(k)
        flat.extend(h)
        rows, w = genre_features(data["top_genres"].get(u, []), genre_row, n_g)
        ug_rows.append(rows)
        ug_w.append(w)
        u_country.append(country_row.get(data["country_of"].get(u, ""), n_c))
    if not ex_g:
        raise Fail(f"{data['dir']}/interactions.csv: no user has two distinct items: nothing to learn from")
    ex_g, ex_u = np.array(ex_g, np.int32), np.array(ex_u, np.int32)
    ends = np.array(offsets[1:] + [len(flat)], np.int32)
    offsets = np.array(offsets, np.int32)
    flat_np = np.array(flat, np.int32)
    # Position of each (user, item) in the user's history: masks the items seen before t.
    dense_mask = len(users) * n_items <= args.max_mask_cells
    if dense_mask:
        pos = np.full((len(users), n_items), np.iinfo(np.int32).max, np.int32)
        for k, u in enumerate(users):
            h = data["history"][u]
            pos[k, h] = np.arange(len(h), dtype=np.int32)

    # Input standardisation of the item-vector features, folded into layer 0 at export.
    sample = np.random.default_rng(args.seed).choice(len(ex_g), min(len(ex_g), 20000), replace=False)
    mr, rm = context_means_np(flat_np, offsets, ex_g[sample], ex_u[sample], items, R, args.recency_decay)
    feats = np.concatenate([mr, rm], axis=1)
    mu = feats.mean(axis=0)
    sd = feats.std(axis=0) + 1e-6

    in_dim = 2 * dim + args.genre_dim + args.country_dim
    H = args.hidden
    rng = np.random.default_rng(args.seed)
    params = {
        "genre_embedding": rng.normal(0, 0.1, (n_g + 1, args.genre_dim)),
        "country_embedding": rng.normal(0, 0.1, (n_c + 1, args.country_dim)),
        "layer0.weight": rng.normal(0, math.sqrt(2.0 / in_dim), (H, in_dim)),
        "layer0.bias": np.zeros(H),
        "layer1.weight": rng.normal(0, 0.01 * math.sqrt(1.0 / H), (dim, H)),
        "layer1.bias": np.zeros(dim),
        "log_scale": np.array(math.log(args.initial_scale)),
    }
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    V = jnp.asarray(items)
    flat_j, offsets_j, ends_j = jnp.asarray(flat_np), jnp.asarray(offsets), jnp.asarray(ends)
    W = args.target_window
    ug_rows_j, ug_w_j = jnp.asarray(np.array(ug_rows, np.int32)), jnp.asarray(np.array(ug_w, np.float32))
    u_country_j = jnp.asarray(np.array(u_country, np.int32))
    pos_j = jnp.asarray(pos) if dense_mask else None
    mu_j, sd_j = jnp.asarray(mu, jnp.float32), jnp.asarray(sd, jnp.float32)
    decay_w = jnp.asarray(args.recency_decay ** np.arange(R), jnp.float32)
    residual = float(args.residual)

    def batch_inputs(g, u, key):
        t = g - offsets_j[u]
        ks = jnp.arange(R)
        valid = ks[None, :] < t[:, None]
        ctx = jnp.where(valid, flat_j[jnp.clip(g[:, None] - 1 - ks[None, :], 0)], 0)
        vf = valid.astype(jnp.float32)
        vecs = V[ctx] * vf[..., None]
        n = jnp.maximum(vf.sum(1, keepdims=True), 1.0)
        mean_recent = vecs.sum(1) / n
        w = vf * decay_w[None, :]
        recency_mean = (w[..., None] * vecs).sum(1) / jnp.maximum(w.sum(1, keepdims=True), 1e-12)
        k1, k2 = jax.random.split(key)
        drop_g = jax.random.uniform(k1, t.shape) < args.feature_dropout
        drop_c = jax.random.uniform(k2, t.shape) < args.feature_dropout
        none_rows = jnp.array([n_g] * GENRE_SLOTS, jnp.int32)
        none_w = jnp.array([1.0] + [0.0] * (GENRE_SLOTS - 1), jnp.float32)
        grows = jnp.where(drop_g[:, None], none_rows[None, :], ug_rows_j[u])
        gw = jnp.where(drop_g[:, None], none_w[None, :], ug_w_j[u])
        crow = jnp.where(drop_c, n_c, u_country_j[u])
        if dense_mask:
            seen = pos_j[u] < t[:, None]
        else:  # only the context's items
            seen = jnp.zeros((g.shape[0], n_items), bool).at[jnp.arange(g.shape[0])[:, None], ctx].max(valid)
        js = g[:, None] + jnp.arange(W)[None, :]
        tvalid = js < ends_j[u][:, None]
        targets = flat_j[jnp.clip(js, 0, flat_j.shape[0] - 1)]
        return mean_recent, recency_mean, grows, gw, crow, seen, (targets, tvalid)

    def user_vectors(p, mean_recent, recency_mean, grows, gw, crow):
        genre = (gw[..., None] * p["genre_embedding"][grows]).sum(1) / gw.sum(1, keepdims=True)
        country = p["country_embedding"][crow]
        xn = (jnp.concatenate([mean_recent, recency_mean], 1) - mu_j) / sd_j
        x = jnp.concatenate([xn, genre, country], 1)
        h = jax.nn.relu(x @ p["layer0.weight"].T + p["layer0.bias"])
        return h @ p["layer1.weight"].T + p["layer1.bias"] + residual * recency_mean

    def loss_fn(p, g, u, key):
        mean_recent, recency_mean, grows, gw, crow, seen, (targets, tvalid) = batch_inputs(g, u, key)
        vu = user_vectors(p, mean_recent, recency_mean, grows, gw, crow)
        logits = jnp.exp(p["log_scale"]) * (vu @ V.T)
        logp = jax.nn.log_softmax(jnp.where(seen, -1e9, logits), axis=1)
        tl = jnp.take_along_axis(logp, targets, axis=1)  # [B, W]
        tv = tvalid.astype(jnp.float32)
        ce = -((tl * tv).sum(1) / tv.sum(1)).mean()
        l2 = args.l2 * sum(jnp.sum(p[k] ** 2) for k in ("layer0.weight", "layer1.weight"))
        return ce + l2, ce

    steps_per_epoch = max(1, len(ex_g) // args.batch)
    total = steps_per_epoch * args.epochs
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, min(100, total // 10 + 1), total,
                                                  args.learning_rate * 0.05)
    opt = optax.adam(schedule)
    state = opt.init(params)

    @jax.jit
    def step(p, s, g, u, key):
        (l, ce), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, g, u, key)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, ce

    key = jax.random.PRNGKey(args.seed)
    log(f"training on {len(ex_g)} examples of {len(users)} users ({n_items} items, dim {dim}, {n_g} genres, "
        f"{n_c} countries): {args.epochs} epochs of {steps_per_epoch} batches of {args.batch}, full softmax"
        f"{'' if dense_mask else ' (only context items masked)'}")
    order_rng = np.random.default_rng(args.seed + 1)
    history = []
    started = time.time()
    for epoch in range(args.epochs):
        perm = order_rng.permutation(len(ex_g))
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            key, sub = jax.random.split(key)
            params, state, ce = step(params, state, jnp.asarray(ex_g[idx]), jnp.asarray(ex_u[idx]), sub)
            losses.append(ce)
        mean_loss = float(jnp.mean(jnp.stack(losses)))
        if not math.isfinite(mean_loss):
            raise Fail(f"training diverged at epoch {epoch + 1} (loss {mean_loss}): lower --learning-rate", status=1)
        history.append(round(mean_loss, 5))
        log(f"epoch {epoch + 1}/{args.epochs}: cross-entropy {mean_loss:.4f} ({time.time() - started:.1f} s)")

    # Export: fold the standardisation into layer 0 (x_n = (x - mu) / sd on the first 2·dim inputs).
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    w0 = p["layer0.weight"].copy()
    w0[:, :2 * dim] /= sd
    b0 = p["layer0.bias"] - w0[:, :2 * dim] @ mu
    tensors = {
        "genre_embedding": p["genre_embedding"], "country_embedding": p["country_embedding"],
        "layer0.weight": w0, "layer0.bias": b0, "layer1.weight": p["layer1.weight"], "layer1.bias": p["layer1.bias"],
    }
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    config = {"kind": KIND, "version": VERSION, "dim": int(dim), "recent": int(R), "recency_decay": float(args.recency_decay),
              "residual": int(args.residual), "genre_dim": int(args.genre_dim), "country_dim": int(args.country_dim),
              "hidden": int(H), "genres": genres, "countries": countries, "items_table": "items"}

    # Self-check: the exported tensors through the numpy reference give the trained network's vectors.
    check = np.random.default_rng(args.seed + 2).choice(len(ex_g), min(len(ex_g), 16), replace=False)
    g, u = jnp.asarray(ex_g[check]), jnp.asarray(ex_u[check])
    mean_recent, recency_mean, grows, gw, crow, _, _ = batch_inputs(g, u, jax.random.PRNGKey(0))
    no_drop_rows, no_drop_w = ug_rows_j[u], ug_w_j[u]
    vj = np.asarray(user_vectors(params, mean_recent, recency_mean, no_drop_rows, no_drop_w, u_country_j[u]))
    by_id = {int(i): items[r] for r, i in enumerate(data["ids"].tolist())}
    for row, k in enumerate(check.tolist()):
        uk = int(ex_u[k])
        t = int(ex_g[k] - offsets[uk])
        h = data["history"][users[uk]]
        recent = [int(data["ids"][r]) for r in reversed(h[:t])]
        vn = forward(config, tensors, by_id, recent, data["top_genres"].get(users[uk], []),
                     data["country_of"].get(users[uk], ""))
        err = np.abs(vn - vj[row]).max() / (np.abs(vj[row]).max() + 1e-6)
        if err > 1e-3:
            raise Fail(f"internal: the exported tower disagrees with the trained one (relative error {err:.2e})", status=1)
    meta = {"target_window": args.target_window, "epochs": args.epochs, "batch": args.batch, "learning_rate": args.learning_rate,
            "l2": args.l2, "feature_dropout": args.feature_dropout, "seed": args.seed,
            "loss": "full softmax over every item, items seen before the target masked" if dense_mask
            else "full softmax over every item, the context's items masked",
            "temperature": round(float(1.0 / np.exp(p["log_scale"])), 6),
            "examples": int(len(ex_g)), "users": len(users), "cross_entropy_by_epoch": history,
            "train_seconds": round(time.time() - started, 1), "jax": jax.__version__, "optax": optax.__version__}
    return config, tensors, meta


def context_means_np(flat, offsets, g, u, items, R, decay):
    """mean_recent and recency_mean of training examples (numpy; for the input statistics)."""
    t = g - offsets[u]
    ks = np.arange(R)
    valid = ks[None, :] < t[:, None]
    ctx = np.where(valid, flat[np.clip(g[:, None] - 1 - ks[None, :], 0, None)], 0)
    vf = valid.astype(np.float64)
    vecs = items[ctx].astype(np.float64) * vf[..., None]
    mean_recent = vecs.sum(1) / np.maximum(vf.sum(1, keepdims=True), 1)
    w = vf * decay ** ks[None, :]
    recency_mean = (w[..., None] * vecs).sum(1) / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return mean_recent, recency_mean


# ---- Offline evaluation --------------------------------------------------------------------------------

def top_k(scores, exclude, k):
    s = np.asarray(scores, np.float64).copy()
    s[list(exclude)] = -np.inf
    order = np.lexsort((np.arange(len(s)), -s))  # score descending, ties by lower row
    return [int(r) for r in order[:k] if np.isfinite(s[r])]


def top_genres_of(rows, item_genres, genre_row):
    """The 3 most frequent genres of some items (ties alphabetical), as the builder ranks a profile's."""
    counts = {}
    for r in rows:
        for g in item_genres[r]:
            counts[g] = counts.get(g, 0) + 1
    return [g for g, _ in sorted(counts.items(), key=lambda x: (-x[1], genre_row[x[0]]))][:GENRE_SLOTS]


def evaluate(data, config, tensors, unseen, k=10):
    """Offline recall@k, every figure through the reference forward pass:
      - heldout.csv, the context the coordinator will have (the user's last R training items, the
        profile's genres and country), training items excluded: the tower, the stored MF vector
        (users.npy), popularity, and the recency-weighted mean of the context alone;
      - new_users: every user reduced to the first 3 training items (no genres, no country), the
        same held-out targets and exclusions, against popularity;
      - unseen_users: users kept out of training (--holdout-users), first 3 training items as the
        context, their next 5 training items as the targets (only the 3 excluded), against popularity
        (counted over the trained users)."""
    items, ids = data["items"], data["ids"]
    by_id = {int(i): items[r] for r, i in enumerate(ids.tolist())}
    pop = np.zeros(len(ids))
    pop_trained = np.zeros(len(ids))
    for u, h in data["history"].items():
        pop[h] += 1
        if u not in unseen:
            pop_trained[h] += 1
    item_genres = data["item_genres"]
    genre_row = {g: k for k, g in enumerate(data["genres"])}
    rconf = dict(config, residual=1)
    zero = {name: np.zeros_like(t) for name, t in tensors.items()}
    tower = lambda recent, genres, country: items @ forward(config, tensors, by_id, recent, genres, country)
    recall = lambda top, held: len(held & set(top)) / len(held)
    out = {"metric": f"recall@{k}"}

    users = [u for u in sorted(data["heldout"]) if data["history"].get(u)]
    if users:
        sums = dict(tower=0.0, mf=0.0, popularity=0.0, recency_mean=0.0)
        new = dict(tower=0.0, tower_with_genres=0.0, popularity=0.0)
        n_mf = n_new = 0
        for u in users:
            h, held = data["history"][u], data["heldout"][u]
            seen = set(h)
            recent = [int(ids[r]) for r in reversed(h)]
            sums["tower"] += recall(top_k(tower(recent, data["top_genres"].get(u, []), data["country_of"].get(u, "")), seen, k), held)
            sums["popularity"] += recall(top_k(pop, seen, k), held)
            # The recency-weighted mean alone: the tower with zero weights and the residual on.
            sums["recency_mean"] += recall(top_k(items @ forward(rconf, zero, by_id, recent, [], ""), seen, k), held)
            if data["users_mf"] is not None and u in data["users_mf"]:
                sums["mf"] += recall(top_k(items @ data["users_mf"][u].astype(np.float64), seen, k), held)
                n_mf += 1
            if len(h) >= 3:
                first = [int(ids[r]) for r in reversed(h[:3])]
                new["tower"] += recall(top_k(tower(first, [], ""), seen, k), held)
                new["tower_with_genres"] += recall(top_k(tower(first, top_genres_of(h[:3], item_genres, genre_row), ""),
                                                         seen, k), held)
                new["popularity"] += recall(top_k(pop, seen, k), held)
                n_new += 1
        out["heldout"] = {"targets": "heldout.csv; training items excluded", "users": len(users),
                          "tower": round(sums["tower"] / len(users), 6),
                          "mf": round(sums["mf"] / n_mf, 6) if n_mf else None,
                          "popularity": round(sums["popularity"] / len(users), 6),
                          "recency_mean": round(sums["recency_mean"] / len(users), 6)}
        if n_mf and n_mf != len(users):
            out["heldout"]["mf_users"] = n_mf
        if n_new:
            out["new_users"] = {"context": "the first 3 training items only (no genres, no country)",
                                "targets": "heldout.csv; training items excluded", "users": n_new,
                                **{name: round(v / n_new, 6) for name, v in new.items()}}
    cold = [u for u in sorted(unseen) if len(data["history"][u]) >= 8]
    if cold:
        sums = dict(tower=0.0, tower_with_genres=0.0, popularity=0.0)
        for u in cold:
            h = data["history"][u]
            first, held, seen = [int(ids[r]) for r in reversed(h[:3])], set(h[3:8]), set(h[:3])
            sums["tower"] += recall(top_k(tower(first, [], ""), seen, k), held)
            sums["tower_with_genres"] += recall(top_k(tower(first, top_genres_of(h[:3], item_genres, genre_row), ""), seen, k), held)
            sums["popularity"] += recall(top_k(pop_trained, seen, k), held)
        out["unseen_users"] = {"context": "the first 3 training items of users kept out of training (no genres, no country)",
                               "targets": "their next 5 training items; the 3 excluded", "users": len(cold),
                               **{name: round(v / len(cold), 6) for name, v in sums.items()}}
    return out if len(out) > 1 else None


# ---- Writing ----------------------------------------------------------------------------------------------

def save_tensors(path, tensors):
    """The standard safetensors layout, written by hand so the bytes are reproducible: an 8-byte
    little-endian header length, the JSON header (names in sorted order, padded with spaces to a
    multiple of 8), then the float32 little-endian data in the header's order. Read back with the
    safetensors package as a check."""
    import struct
    from safetensors.numpy import load_file
    header, offset, blobs = {"__metadata__": {"format": KIND, "version": str(VERSION)}}, 0, []
    for name in sorted(TENSORS):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)
    back = load_file(tmp)
    if sorted(back) != sorted(TENSORS) or any(not np.array_equal(back[n], tensors[n]) for n in TENSORS):
        raise Fail(f"internal: {tmp} does not read back as written", status=1)
    os.replace(tmp, path)


def fixture_cases(data, config, rng):
    """About 20 requests covering the contract's corners, with real ids where there are some."""
    ids = data["ids"]
    known = [int(i) for i in ids.tolist()]
    unknown = max(known) + 1000
    genres, countries = data["genres"], data["countries"]
    R = config["recent"]
    pick = lambda n: [known[int(k)] for k in rng.choice(len(known), min(n, len(known)), replace=False)]
    g = lambda n: genres[:n] if genres else []
    c0 = countries[0] if countries else ""
    cases = [
        dict(note="no recent items, no genres, no country", recent=[], genres=[], country=""),
        dict(note="only unknown items", recent=[unknown, unknown + 1], genres=[], country=""),
        dict(note="one item", recent=pick(1), genres=g(1), country=c0),
        dict(note="an unknown id first is skipped", recent=[unknown] + pick(3), genres=g(2), country=c0),
        dict(note="three items, three genres", recent=pick(3), genres=g(3), country=countries[-1] if countries else ""),
        dict(note="unknown genre name in the middle", recent=pick(5), genres=[g(1)[0] if genres else "x", "no-such-genre"]
             + g(3)[1:2], country=c0),
        dict(note="only unknown genre names", recent=pick(4), genres=["no-such-genre", "another"], country=c0),
        dict(note="unknown country", recent=pick(6), genres=g(2), country="no-such-country"),
        dict(note="more than `recent` items, unknown ids among them: the first `recent` known ones count",
             recent=[x for k, y in enumerate(pick(R + 5)) for x in ([unknown + k, y] if k % 7 == 3 else [y])],
             genres=g(3), country=c0),
        dict(note="exactly `recent` items", recent=pick(R), genres=g(3)[::-1], country=""),
        dict(note="more than 3 genres: the first 3 count", recent=pick(2), genres=genres[:5] if len(genres) >= 5 else g(3),
             country=c0),
        dict(note="a repeated item", recent=(lambda x: [x[0], x[1], x[0]])(pick(2)), genres=g(1), country=""),
    ]
    # Real users: their profile context, as the coordinator sees it.
    users = sorted(data["history"])
    for u in [users[int(k)] for k in rng.choice(len(users), min(8, len(users)), replace=False)]:
        h = data["history"][u]
        cases.append(dict(note=f"user {u} of the training data", recent=[int(ids[r]) for r in reversed(h)][:R],
                          genres=data["top_genres"].get(u, []), country=data["country_of"].get(u, "")))
    return cases


def fixture_vectors(cases, by_id):
    """The item table's vectors of every known id the cases use, so the fixture stands alone."""
    used = sorted({int(i) for c in cases for i in c["recent"] if int(i) in by_id})
    return [{"id": i, "vector": [float(x) for x in by_id[i]]} for i in used]


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/train-query-tower", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="a ShardRank input directory (docs/data.md), e.g. one scripts/movielens wrote")
    ap.add_argument("--out", help="the output prefix: writes OUT.safetensors, OUT.json and OUT.fixture.json "
                                  "(default DIR/query-tower; a trailing .safetensors is dropped)")
    ap.add_argument("--recent", type=int, default=50, help="recent items the tower reads (R; the profile holds 50 by default)")
    ap.add_argument("--recency-decay", type=float, default=0.85, help="weight decay^i of the i-th most recent item")
    ap.add_argument("--residual", type=int, choices=(0, 1), default=1, help="add the recency-weighted mean to the output")
    ap.add_argument("--hidden", type=int, default=256, help="hidden units")
    ap.add_argument("--genre-dim", type=int, default=16)
    ap.add_argument("--country-dim", type=int, default=8)
    ap.add_argument("--target-window", type=int, default=1,
                    help="an example's targets: the next W items of the history (1 = the next item only)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--l2", type=float, default=3e-3, help="L2 penalty on the two weight matrices")
    ap.add_argument("--feature-dropout", type=float, default=0.1,
                    help="share of examples trained without their genres, and (independently) without their country")
    ap.add_argument("--initial-scale", type=float, default=20.0, help="initial inverse temperature of the softmax (learned)")
    ap.add_argument("--max-mask-cells", type=int, default=50_000_000,
                    help="mask every item seen before the target while users × items is at most this, else only "
                         "the context's items")
    ap.add_argument("--holdout-users", type=float, default=0.1,
                    help="share of the users kept out of training, to evaluate the tower on users it has never seen")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-eval", action="store_true", help="skip the offline evaluation on heldout.csv")
    args = ap.parse_args(argv)
    if args.recent < 1 or args.target_window < 1 or args.hidden < 1 or args.genre_dim < 1 or args.country_dim < 1 or args.epochs < 1 \
            or args.batch < 1 or not (0 < args.recency_decay <= 1) or not (args.learning_rate > 0) \
            or not (0 <= args.feature_dropout < 1) or not (0 <= args.holdout_users < 1) or not (args.initial_scale > 0) or args.l2 < 0:
        ap.error("--recent, --hidden, --genre-dim, --country-dim, --epochs and --batch must be ≥ 1; "
                 "--recency-decay in (0, 1]; --learning-rate and --initial-scale > 0; --feature-dropout and --holdout-users in [0, 1); --l2 ≥ 0")
    out = args.out or os.path.join(args.dir, "query-tower")
    if out.endswith(".safetensors"):
        out = out[:-len(".safetensors")]
    started = time.time()
    try:
        data = read_input(args.dir)
        try:
            import jax  # noqa: F401
            import optax  # noqa: F401
            import safetensors  # noqa: F401
        except ImportError as e:
            raise Fail(f"{e.name} is not importable ({e}): run through scripts/train-query-tower, which installs "
                       f"scripts/query-tower-requirements.txt", status=1)
        log(f"read {data['dir']}: {len(data['ids'])} items, {len(data['history'])} users, "
            f"{data['interactions']} training interactions, {len(data['heldout'])} users with held-out items")
        everyone = sorted(data["history"])
        n_unseen = int(round(args.holdout_users * len(everyone)))
        if n_unseen >= len(everyone):
            raise Fail("--holdout-users leaves no user to train on")
        unseen = set(np.random.default_rng(args.seed).choice(everyone, n_unseen, replace=False).tolist()) if n_unseen else set()
        config, tensors, meta = train(data, args, unseen)
        meta["unseen_users"] = len(unseen)
        metrics = None
        if not args.no_eval:
            metrics = evaluate(data, config, tensors, unseen)
            fmt = lambda x: "n/a" if x is None else f"{x:.4f}"
            m = (metrics or {}).get("heldout")
            if m:
                log(f"recall@10 on heldout.csv ({m['users']} users): tower {fmt(m['tower'])}, MF {fmt(m['mf'])}, "
                    f"popularity {fmt(m['popularity'])}, recency-weighted mean of the context {fmt(m['recency_mean'])}")
            else:
                log(f"{data['dir']} has no heldout.csv: no held-out evaluation")
            m = (metrics or {}).get("new_users")
            if m:
                log(f"new users (first 3 training items → heldout.csv, {m['users']} users): tower {fmt(m['tower'])} "
                    f"(with the 3 items' genres {fmt(m['tower_with_genres'])}), popularity {fmt(m['popularity'])}")
            m = (metrics or {}).get("unseen_users")
            if m:
                log(f"unseen users (first 3 training items → the next 5, {m['users']} users kept out of training): "
                    f"tower {fmt(m['tower'])} (with the 3 items' genres {fmt(m['tower_with_genres'])}), "
                    f"popularity {fmt(m['popularity'])}")
        config["trained"] = {"input": data["dir"], "items_sha256": data["items_sha256"],
                             "items": int(len(data["ids"])), "interactions": data["interactions"], **meta,
                             "recall_at_10": metrics, "seconds": round(time.time() - started, 1)}
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_tensors(out + ".safetensors", tensors)
        write_json(out + ".json", config)
        by_id = {int(i): data["items"][r] for r, i in enumerate(data["ids"].tolist())}
        cases = fixture_cases(data, config, np.random.default_rng(args.seed + 3))
        for c in cases:
            c["user_vector"] = [float(x) for x in forward(config, tensors, by_id, c["recent"], c["genres"], c["country"])]
        write_json(out + ".fixture.json", {
            "kind": KIND + "-fixture", "version": VERSION, "model": os.path.basename(out) + ".safetensors",
            "config": os.path.basename(out) + ".json",
            "tolerance": "float64 reference; a float32 forward pass must match within 1e-4 absolute + 1e-4 relative",
            "item_vectors": fixture_vectors(cases, by_id), "cases": cases})
        log(f"wrote {out}.safetensors, {out}.json and {out}.fixture.json ({len(cases)} cases) "
            f"in {time.time() - started:.1f} s")
        return 0
    except Fail as e:
        print(f"train-query-tower: error: {e}", file=sys.stderr)
        return e.status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the LightGBM fixtures of Tests/ShardRankKernelsTests/TreeEnsembleTests.swift.

Usage: python3 scripts/tree-fixture.py [OUT_DIR]
(default OUT_DIR: Tests/ShardRankKernelsTests/Fixtures). Needs numpy and lightgbm 4.x, e.g.
    python3 -m venv /tmp/lgbvenv && /tmp/lgbvenv/bin/pip install lightgbm numpy
    /tmp/lgbvenv/bin/python scripts/tree-fixture.py

For each model NAME it writes `lgbm-NAME.txt` (the model, exactly as `booster.save_model`
writes it, or as written here for the hand-built one) and `lgbm-NAME.csv`: one row per test
input, the features as float32 values (`nan`, `inf`, `-inf` spelled out, every value printed
with 9 significant digits, which round-trips float32 exactly) and, in the last column `raw`,
LightGBM's `predict(X, raw_score=True)` on the float32 matrix, printed with 17 digits (for the
`average_output` model: `predict(X)`, the mean of the trees; see `main`).

Models:
- `rank`: lambdarank, 50 trees, 8 features; NaNs in two features (missing type NaN, both default
  directions occur), zeros and small integers in others (missing type None).
- `bincat`: binary, 30 trees, `zero_as_missing=True` (missing type Zero), one many-category
  feature (bitset splits) and one 3-category feature (one-hot splits).
- `rf`: random forest regression (`average_output`), 20 trees.
- `edge`: a model written by hand (every decision_type combination, a single-leaf tree, a
  threshold inside LightGBM's zero band, a two-word category bitset), predicted by LightGBM
  itself so the branch rules the Swift tests spell out are LightGBM's, not ours.

Test rows mix samples of the training distribution with edge values: each split threshold of the
model rounded to float32 (and its float32 neighbours), ±0, values inside the zero band
(|x| <= 1e-35), NaN where the feature never had NaN, ±inf, and for categorical features negative,
fractional, out-of-bitset and huge values.
"""
import os
import sys

import lightgbm as lgb
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ShardRankKernelsTests", "Fixtures")


def fmt32(x):
    x = np.float32(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "%.9g" % float(x)


def write(name, model_text, X, raw):
    X = np.asarray(X, dtype=np.float32)
    with open(os.path.join(OUT, "lgbm-%s.txt" % name), "w", newline="\n") as f:
        f.write(model_text)
    with open(os.path.join(OUT, "lgbm-%s.csv" % name), "w", newline="\n") as f:
        f.write(",".join(["f%d" % j for j in range(X.shape[1])] + ["raw"]) + "\n")
        for row, r in zip(X, raw):
            f.write(",".join([fmt32(v) for v in row] + ["%.17g" % float(r)]) + "\n")
    print("wrote lgbm-%s.txt/.csv: %d rows" % (name, X.shape[0]))


def splits(booster):
    """(feature, threshold, is_categorical) of every split node."""
    out = []

    def walk(node):
        if "split_index" not in node:
            return
        out.append((node["split_feature"], node["threshold"], node["decision_type"] == "=="))
        walk(node["left_child"])
        walk(node["right_child"])

    for t in booster.dump_model()["tree_info"]:
        walk(t["tree_structure"])
    return out


def edge_rows(booster, sample, rng, count):
    """Rows of `sample` with one feature moved onto a split threshold (or a float32 neighbour
    of it) or onto a special value."""
    numeric = [(f, float(t)) for f, t, cat in splits(booster) if not cat]
    special = [0.0, -0.0, 5e-36, -5e-36, 1e-37, np.nan, np.inf, -np.inf, 1e-35, 2e-35]
    rows = []
    for i in range(count):
        row = sample[rng.integers(len(sample))].copy()
        for _ in range(3):
            f, t = numeric[rng.integers(len(numeric))]
            t32 = np.float32(t)
            choice = rng.integers(4)
            if choice == 0:
                row[f] = t32
            elif choice == 1:
                row[f] = np.nextafter(t32, np.float32(np.inf))
            elif choice == 2:
                row[f] = np.nextafter(t32, np.float32(-np.inf))
            else:
                row[f] = special[rng.integers(len(special))]
        rows.append(row)
    return np.array(rows, dtype=np.float32)


def rank_model(rng):
    queries, per = 80, 25
    n = queries * per
    X = np.zeros((n, 8), dtype=np.float32)
    X[:, 0] = rng.normal(size=n)
    X[:, 1] = rng.normal(size=n)
    X[rng.random(n) < 0.15, 1] = np.nan            # NaN: relevant when missing
    X[:, 2] = rng.poisson(0.8, size=n)             # many exact zeros
    X[:, 3] = rng.uniform(-2, 2, size=n)
    X[rng.random(n) < 0.10, 3] = np.nan            # NaN: irrelevant when missing
    X[:, 4] = rng.exponential(size=n)
    X[:, 5] = np.round(rng.normal(size=n), 1)
    X[:, 6] = rng.uniform(size=n)
    X[:, 7] = rng.normal(size=n) * 10
    f1 = np.where(np.isnan(X[:, 1]), 1.5, X[:, 1])
    f3 = np.where(np.isnan(X[:, 3]), -2.0, X[:, 3])
    score = X[:, 0] + f1 + 0.7 * X[:, 2] - 0.5 * f3 + 0.3 * X[:, 4] + 0.2 * X[:, 7] / 10 + 0.5 * rng.normal(size=n)
    y = np.zeros(n, dtype=np.int32)
    for q in range(queries):
        s = score[q * per:(q + 1) * per]
        ranks = np.argsort(np.argsort(-s))
        y[q * per:(q + 1) * per] = np.select([ranks < 2, ranks < 5, ranks < 10], [3, 2, 1], 0)
    ds = lgb.Dataset(X, y, group=[per] * queries, free_raw_data=False)
    params = dict(objective="lambdarank", num_leaves=12, learning_rate=0.1, min_data_in_leaf=10,
                  verbose=-1, seed=7, deterministic=True, num_threads=1)
    b = lgb.train(params, ds, num_boost_round=50)
    test = np.concatenate([X[rng.choice(n, 120, replace=False)], edge_rows(b, X, rng, 80)])
    return b, test


def bincat_model(rng):
    n = 3000
    X = np.zeros((n, 5), dtype=np.float32)
    X[:, 0] = rng.integers(0, 45, size=n)          # 45 categories: bitset splits over 2 words
    X[:, 1] = rng.integers(0, 3, size=n)           # 3 categories: one-hot splits
    X[:, 2] = rng.normal(size=n)
    X[rng.random(n) < 0.3, 2] = 0.0                # zero = missing
    X[:, 3] = rng.uniform(-1, 1, size=n)
    X[rng.random(n) < 0.1, 3] = np.nan             # NaN (treated as zero = missing)
    X[:, 4] = rng.normal(size=n)
    good = np.isin(X[:, 0], [1, 3, 5, 8, 13, 21, 34, 40, 44])
    logit = 1.5 * good + (X[:, 1] == 2) - 0.8 * (X[:, 1] == 0) + X[:, 2] + 0.8 * (X[:, 2] == 0) \
        + np.where(np.isnan(X[:, 3]), 1.0, X[:, 3]) + 0.5 * X[:, 4]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    ds = lgb.Dataset(X, y, categorical_feature=[0, 1], free_raw_data=False)
    params = dict(objective="binary", num_leaves=10, learning_rate=0.1, min_data_in_leaf=20,
                  zero_as_missing=True, max_cat_to_onehot=4, min_data_per_group=20, cat_smooth=5,
                  verbose=-1, seed=11, deterministic=True, num_threads=1)
    b = lgb.train(params, ds, num_boost_round=30)
    test = np.concatenate([X[rng.choice(n, 120, replace=False)], edge_rows(b, X, rng, 50)])
    cats = [-1, -0.5, 0, 0.5, 2.7, 31, 32, 33, 40, 44, 63, 64, 1000, 1e10, -1e10, np.nan, np.inf, -np.inf,
            5e-36, 3]
    extra = []
    for i, c in enumerate(cats):
        row = X[rng.integers(n)].copy()
        row[0] = c
        row[1] = cats[(i * 7) % len(cats)]
        extra.append(row)
    test = np.concatenate([test, np.array(extra, dtype=np.float32)])
    return b, test


def rf_model(rng):
    n = 1500
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[rng.random(n) < 0.1, 0] = np.nan
    y = X[:, 1] * 2 + np.sin(X[:, 2]) + np.where(np.isnan(X[:, 0]), 1.0, X[:, 0]) + 0.3 * rng.normal(size=n)
    ds = lgb.Dataset(X, y, free_raw_data=False)
    params = dict(boosting="rf", objective="regression", num_leaves=16, bagging_fraction=0.7, bagging_freq=1,
                  feature_fraction=0.8, min_data_in_leaf=10, verbose=-1, seed=3, deterministic=True, num_threads=1)
    b = lgb.train(params, ds, num_boost_round=20)
    test = np.concatenate([X[rng.choice(n, 100, replace=False)], edge_rows(b, X, rng, 50)])
    return b, test


# The hand-built model (TreeEnsembleTests spells out the expected leaf of every row by hand too).
# decision_type: bit 0 categorical, bit 1 default left, bits 2-3 missing type (0 None, 1 Zero, 2 NaN).
EDGE_MODEL = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=3
objective=regression
feature_names=a b c d
feature_infos=[-1:1] [-1:1] [-1:1] -1:1:3:33

Tree=0
num_leaves=2
num_cat=0
split_feature=0
threshold=0.5
decision_type=10
left_child=-1
right_child=-2
leaf_value=1 2
shrinkage=1


Tree=1
num_leaves=2
num_cat=0
split_feature=1
threshold=0.25
decision_type=4
left_child=-1
right_child=-2
leaf_value=10 20
shrinkage=1


Tree=2
num_leaves=2
num_cat=0
split_feature=2
threshold=1.0000000000000001e-36
decision_type=0
left_child=-1
right_child=-2
leaf_value=100 200
shrinkage=1


Tree=3
num_leaves=2
num_cat=1
split_feature=3
threshold=0
decision_type=1
left_child=-1
right_child=-2
leaf_value=1000 2000
cat_boundaries=0 2
cat_threshold=10 2
shrinkage=1


Tree=4
num_leaves=1
num_cat=0
split_feature=
threshold=
decision_type=
left_child=
right_child=
leaf_value=0.125
shrinkage=1


Tree=5
num_leaves=4
num_cat=0
split_feature=0 1 1
threshold=-0.25 -1 1
decision_type=8 0 6
left_child=1 -1 -3
right_child=2 -2 -4
leaf_value=10000 20000 30000 40000
shrinkage=1


Tree=6
num_leaves=3
num_cat=0
split_feature=2 2
threshold=0 -0.5
decision_type=4 2
left_child=1 -2
right_child=-1 -3
leaf_value=100000 200000 300000
shrinkage=1


end of trees
"""


def edge_model():
    b = lgb.Booster(model_str=EDGE_MODEL)
    vals = [
        [np.nan, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), -1.0, 1.0, -0.25, 0.0],
        [np.nan, 0.0, -0.0, 1e-36, 5e-36, 0.1, 0.25, 0.3, -0.3, -1.0, -1.5, 1.0, 1.5],
        [np.nan, 0.0, -0.0, 5e-36, -5e-36, 1e-37, 2e-35, -2e-35, 1.0, -1.0, -0.5, -0.75],
        [np.nan, -1.0, -0.5, 0.0, 1.0, 1.9, 3.0, 32.0, 33.0, 34.0, 64.0, 1e10, np.inf, -np.inf, 3.5, 5e-36],
    ]
    rows = [[v[r % len(v)] for v in vals] for r in range(208)]  # every (a, b) pair: 7 and 13 are coprime
    X = np.array(rows, dtype=np.float32)
    return EDGE_MODEL, X, b.predict(X, raw_score=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    print("lightgbm", lgb.__version__, "numpy", np.__version__)
    rng = np.random.default_rng(20261205)
    for name, make in [("rank", rank_model), ("bincat", bincat_model), ("rf", rf_model)]:
        b, test = make(rng)
        path = os.path.join(OUT, "lgbm-%s.txt" % name)
        b.save_model(path)
        with open(path) as f:
            text = f.read()
        # Predict with the model as saved (what the Swift test loads).
        saved = lgb.Booster(model_file=path)
        raw = saved.predict(test, raw_score=True)
        assert np.array_equal(raw, b.predict(test, raw_score=True))
        if "\naverage_output\n" in text:
            # predict(raw_score=True) returns the *sum* of the trees even for average_output models;
            # TreeEnsemble returns the mean, which is LightGBM's predict() before its output
            # transform (the identity for regression, checked here).
            mean = saved.predict(test)
            assert np.allclose(mean, raw / saved.num_trees(), rtol=1e-12, atol=0)
            raw = mean
        write(name, text, test, raw)
    text, X, raw = edge_model()
    write("edge", text, X, raw)


if __name__ == "__main__":
    main()

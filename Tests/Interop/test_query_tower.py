"""scripts/train-query-tower on a tiny planted input directory written here: training runs, the
files follow the format of docs/query-tower.md (tensor names, shapes and layout; the config's keys),
the fixture's user vectors equal an independent forward pass written below from the safetensors
bytes, the tower beats popularity on the planted groups, reruns give the same bytes, and bad inputs
exit 2 with a message naming the file."""
import csv
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "train-query-tower")
GROUPS, BLOCK, POPULAR, DIM, N_USERS = 4, 30, 10, 8, 80
GENRES = ["G0", "G1", "G2", "G3", "Pop"]
COUNTRIES = ["c0", "c1", "c2", "c3"]
CONFIG_KEYS = {"kind", "version", "dim", "recent", "recency_decay", "residual", "genre_dim", "country_dim",
               "hidden", "genres", "countries", "items_table", "trained"}
TENSOR_NAMES = {"genre_embedding", "country_embedding", "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"}
SMALL = ["--hidden", "32", "--genre-dim", "4", "--country-dim", "3", "--recent", "12", "--batch", "64",
         "--epochs", "6", "--learning-rate", "0.005", "--holdout-users", "0.1"]


def item_id(row):
    return 1001 + 3 * row  # ids are not row numbers


def write_planted(d, seed=5):
    """An input directory (docs/data.md) with 4 user groups: a user's items are mostly from the
    group's block of 30 items (their vectors point along the group's axis), plus a few of the 10
    popular items everyone has. The last 2 interactions of a user are held out."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    n_items = POPULAR + GROUPS * BLOCK
    items = np.zeros((n_items, DIM), np.float32)
    genres = []
    for r in range(n_items):
        if r < POPULAR:
            items[r, :GROUPS] = 0.5
            genres.append(["Pop"])
        else:
            g = (r - POPULAR) // BLOCK
            items[r, g] = 1.0
            genres.append([f"G{g}"] + (["Pop"] if r % 7 == 0 else []))
        items[r] += rng.normal(0, 0.15, DIM).astype(np.float32)
    np.save(os.path.join(d, "items.npy"), items)
    np.save(os.path.join(d, "item_ids.npy"), np.array([item_id(r) for r in range(n_items)], np.int64))
    with open(os.path.join(d, "items.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "genres", "timestamp", "title"])
        for r in range(n_items):
            w.writerow([item_id(r), "|".join(genres[r]), 800_000_000 + r, f"Item {r}"])
    users = np.zeros((N_USERS, DIM), np.float32)
    train, held = [], []
    with open(os.path.join(d, "users.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "country"])
        for u in range(1, N_USERS + 1):
            g = (u - 1) % GROUPS
            w.writerow([u, "" if u % 9 == 0 else COUNTRIES[g]])
            users[u - 1, g] = 3.0
            own = rng.choice(np.arange(POPULAR + g * BLOCK, POPULAR + (g + 1) * BLOCK), 16, replace=False)
            pop = rng.choice(POPULAR, 3, replace=False)
            rows = list(own) + list(pop)
            rng.shuffle(rows)
            t = 880_000_000 + 1000 * u
            seq = []
            for r in rows:
                t += int(rng.integers(1, 100))
                seq.append((u, item_id(int(r)), t, int(rng.integers(1, 6))))
            train += seq[:-2]
            held += seq[-2:]
    np.save(os.path.join(d, "users.npy"), users)
    np.save(os.path.join(d, "user_ids.npy"), np.arange(1, N_USERS + 1, dtype=np.int64))
    for name, rows in (("interactions.csv", train), ("heldout.csv", held)):
        with open(os.path.join(d, name), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "item_id", "timestamp", "rating"])
            w.writerows(rows)
    return d


def run(*args):
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=600)


def read_safetensors(path):
    """(tensors, header) from the raw bytes: 8-byte little-endian header length, JSON header,
    little-endian float32 data at the header's offsets (nothing but F32 allowed)."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base, out, spans = 8 + n, {}, []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", f"{name}: {e['dtype']}"
        b, end = e["data_offsets"]
        assert end - b == 4 * int(np.prod(e["shape"])), f"{name}: offsets {b}..{end} for shape {e['shape']}"
        spans.append((b, end))
        out[name] = np.frombuffer(data[base + b:base + end], dtype="<f4").reshape(e["shape"])
    spans.sort()
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == len(data) - base, \
        "the data must be the tensors back to back, filling the file"
    return out, header


def user_vector(cfg, t, vectors, recent, genres, country):
    """The forward pass of docs/query-tower.md, written independently of scripts/train-query-tower.py."""
    known = [np.asarray(vectors[i], np.float64) for i in recent if i in vectors][:cfg["recent"]]
    d = cfg["dim"]
    if known:
        m = np.array(known)
        w = np.array([cfg["recency_decay"] ** i for i in range(len(known))])
        mean_recent, recency_mean = m.mean(0), (m * w[:, None]).sum(0) / w.sum()
    else:
        mean_recent = recency_mean = np.zeros(d)
    ge = t["genre_embedding"].astype(np.float64)
    names = genres[:3]
    if names:
        gw = [3.0, 2.0, 1.0][:len(names)]
        rows = [cfg["genres"].index(g) if g in cfg["genres"] else len(cfg["genres"]) for g in names]
        genre = sum(wt * ge[r] for wt, r in zip(gw, rows)) / sum(gw)
    else:
        genre = ge[-1]
    ce = t["country_embedding"].astype(np.float64)
    country_vec = ce[cfg["countries"].index(country)] if country in cfg["countries"] else ce[-1]
    x = np.concatenate([mean_recent, recency_mean, genre, country_vec])
    h = np.maximum(0.0, t["layer0.weight"].astype(np.float64) @ x + t["layer0.bias"])
    return t["layer1.weight"].astype(np.float64) @ h + t["layer1.bias"] + cfg["residual"] * recency_mean


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("tower")
    d = write_planted(str(base / "in"))
    out = str(base / "out" / "tower")
    p = run(d, "--out", out + ".safetensors", *SMALL)
    assert p.returncode == 0, f"train-query-tower failed ({p.returncode}):\n{p.stderr}"
    return d, out, p.stderr


def test_files_follow_the_contract(trained):
    d, out, stderr = trained
    assert "recall@10 on heldout.csv" in stderr
    cfg = json.load(open(out + ".json"))
    assert set(cfg) == CONFIG_KEYS
    assert cfg["kind"] == "shardrank-query-tower" and cfg["version"] == 1 and cfg["items_table"] == "items"
    assert (cfg["dim"], cfg["recent"], cfg["residual"], cfg["hidden"], cfg["genre_dim"], cfg["country_dim"]) == (DIM, 12, 1, 32, 4, 3)
    assert cfg["genres"] == GENRES and cfg["countries"] == COUNTRIES  # sorted names, in embedding-row order
    assert 0 < cfg["recency_decay"] <= 1
    tensors, header = read_safetensors(out + ".safetensors")
    assert set(tensors) == TENSOR_NAMES
    n_in = 2 * DIM + 4 + 3
    assert tensors["genre_embedding"].shape == (len(GENRES) + 1, 4)
    assert tensors["country_embedding"].shape == (len(COUNTRIES) + 1, 3)
    assert tensors["layer0.weight"].shape == (32, n_in) and tensors["layer0.bias"].shape == (32,)
    assert tensors["layer1.weight"].shape == (DIM, 32) and tensors["layer1.bias"].shape == (DIM,)
    assert all(np.isfinite(t).all() for t in tensors.values())
    trained_ = cfg["trained"]
    assert trained_["users"] == N_USERS - round(0.1 * N_USERS) and trained_["unseen_users"] == round(0.1 * N_USERS)
    assert trained_["interactions"] == N_USERS * 17
    r = trained_["recall_at_10"]
    assert r["heldout"]["users"] == N_USERS and {"tower", "mf", "popularity", "recency_mean"} <= set(r["heldout"])
    assert {"tower", "popularity"} <= set(r["new_users"]) and {"tower", "popularity"} <= set(r["unseen_users"])


def test_fixture_matches_an_independent_forward_pass(trained):
    d, out, _ = trained
    cfg = json.load(open(out + ".json"))
    tensors, _ = read_safetensors(out + ".safetensors")
    fx = json.load(open(out + ".fixture.json"))
    assert fx["model"] == os.path.basename(out) + ".safetensors" and fx["config"] == os.path.basename(out) + ".json"
    items, ids = np.load(os.path.join(d, "items.npy")), np.load(os.path.join(d, "item_ids.npy")).tolist()
    vectors = {i: items[r] for r, i in enumerate(ids)}
    for v in fx["item_vectors"]:
        assert np.array_equal(np.array(v["vector"], np.float32), vectors[v["id"]])
    cases = fx["cases"]
    assert 15 <= len(cases) <= 30
    assert any(c["recent"] == [] for c in cases)
    assert any(c["recent"] and all(i not in vectors for i in c["recent"]) for c in cases)
    assert any(any(i not in vectors for i in c["recent"]) and any(i in vectors for i in c["recent"]) for c in cases)
    assert any(sum(i in vectors for i in c["recent"]) > cfg["recent"] for c in cases)
    assert any(c["genres"] == [] for c in cases) and any(any(g not in GENRES for g in c["genres"]) for c in cases)
    assert any(c["country"] == "" for c in cases) and any(c["country"] and c["country"] not in COUNTRIES for c in cases)
    for c in cases:
        want = user_vector(cfg, tensors, vectors, c["recent"], c["genres"], c["country"])
        np.testing.assert_allclose(np.array(c["user_vector"]), want, rtol=1e-9, atol=1e-9, err_msg=c["note"])
    # The cases differ from each other: the fixture exercises the network, not a constant.
    assert len({tuple(np.round(c["user_vector"], 6)) for c in cases}) >= len(cases) - 3


@pytest.fixture(scope="module")
def trained_without_residual(tmp_path_factory):
    """The network alone (residual 0): what it scores is what it learned."""
    base = tmp_path_factory.mktemp("tower0")
    d = write_planted(str(base / "in"))
    out = str(base / "tower")
    p = run(d, "--out", out, "--residual", "0", *SMALL)
    assert p.returncode == 0, f"train-query-tower failed ({p.returncode}):\n{p.stderr}"
    return d, out, p.stderr


@pytest.mark.parametrize("which", ["trained", "trained_without_residual"])
def test_the_tower_beats_popularity_on_the_planted_groups(request, which):
    d, out, _ = request.getfixturevalue(which)
    cfg = json.load(open(out + ".json"))
    assert cfg["residual"] == (1 if which == "trained" else 0)
    tensors, _ = read_safetensors(out + ".safetensors")
    items, ids = np.load(os.path.join(d, "items.npy")).astype(np.float64), np.load(os.path.join(d, "item_ids.npy")).tolist()
    vectors = {i: items[r] for r, i in enumerate(ids)}
    row = {i: r for r, i in enumerate(ids)}
    hist, held, country = {}, {}, {}
    for name, into in (("interactions.csv", hist), ("heldout.csv", held)):
        with open(os.path.join(d, name)) as f:
            for r in csv.DictReader(f):
                into.setdefault(int(r["user_id"]), []).append((int(r["timestamp"]), int(r["item_id"])))
    with open(os.path.join(d, "users.csv")) as f:
        country = {int(r["user_id"]): r["country"] for r in csv.DictReader(f)}
    pop = np.zeros(len(ids))
    for h in hist.values():
        for _, i in h:
            pop[row[i]] += 1
    tower_hits = pop_hits = 0.0
    for u, h in hist.items():
        recent = [i for _, i in sorted(h, reverse=True)]
        seen = [row[i] for i in recent]
        target = {row[i] for _, i in held[u]}
        g = (u - 1) % GROUPS
        for scores, add in ((items @ user_vector(cfg, tensors, vectors, recent, [f"G{g}", "Pop"], country[u]), "tower"),
                            (pop.copy(), "pop")):
            scores[seen] = -np.inf
            top = set(np.argsort(-scores, kind="stable")[:10].tolist())
            if add == "tower":
                tower_hits += len(top & target) / len(target)
            else:
                pop_hits += len(top & target) / len(target)
    tower, popularity = tower_hits / len(hist), pop_hits / len(hist)
    assert tower > 0.4 and tower > 2 * popularity, f"tower {tower:.3f}, popularity {popularity:.3f}"
    reported = cfg["trained"]["recall_at_10"]["heldout"]
    assert abs(reported["tower"] - tower) < 1e-6 and abs(reported["popularity"] - popularity) < 1e-6


def test_reruns_give_the_same_bytes(tmp_path):
    d = write_planted(str(tmp_path / "in"))
    outs = []
    for k in range(2):
        out = str(tmp_path / f"run{k}")
        p = run(d, "--out", out, *SMALL[:-6], "--epochs", "1", "--no-eval")
        assert p.returncode == 0, p.stderr
        outs.append(out)
    assert open(outs[0] + ".safetensors", "rb").read() == open(outs[1] + ".safetensors", "rb").read()
    a, b = (json.load(open(o + ".fixture.json")) for o in outs)
    assert a["cases"] == b["cases"] and a["item_vectors"] == b["item_vectors"]


def test_the_default_output_prefix(tmp_path):
    d = write_planted(str(tmp_path / "in"))
    p = run(d, *SMALL[:-6], "--epochs", "1", "--no-eval")
    assert p.returncode == 0, p.stderr
    for ext in (".safetensors", ".json", ".fixture.json"):
        assert os.path.isfile(os.path.join(d, "query-tower" + ext))


def broken(tmp_path, edit):
    d = write_planted(str(tmp_path / "in"))
    edit(d)
    return d


def replace_line(path, n, text):
    lines = open(path).read().splitlines()
    lines[n - 1] = text
    open(path, "w").write("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit,names", [
    (lambda d: os.remove(os.path.join(d, "items.npy")), "items.npy: missing"),
    (lambda d: os.remove(os.path.join(d, "interactions.csv")), "interactions.csv: missing"),
    (lambda d: np.save(os.path.join(d, "items.npy"), np.load(os.path.join(d, "items.npy")).astype(np.float64)), "items.npy:"),
    (lambda d: np.save(os.path.join(d, "item_ids.npy"), np.arange(3, dtype=np.int64)), "item_ids.npy:"),
    (lambda d: open(os.path.join(d, "items.npy"), "wb").write(b"not numpy"), "items.npy: not a readable"),
    (lambda d: replace_line(os.path.join(d, "interactions.csv"), 5, "3,999999,880000123,4"), "interactions.csv:5: item_id 999999"),
    (lambda d: replace_line(os.path.join(d, "interactions.csv"), 7, "x,1001,880000123,4"), "interactions.csv:7: user_id 'x'"),
    (lambda d: replace_line(os.path.join(d, "interactions.csv"), 1, "user,item_id,timestamp,rating"), "interactions.csv:1:"),
    (lambda d: replace_line(os.path.join(d, "heldout.csv"), 3, "2,1001"), "heldout.csv:3:"),
    (lambda d: replace_line(os.path.join(d, "items.csv"), 1, "item_id,genre,timestamp,title"), "items.csv:1:"),
    (lambda d: replace_line(os.path.join(d, "interactions.csv"), 4, "2,1001,yesterday,4"), "interactions.csv:4: timestamp"),
], ids=["no-items", "no-interactions", "float64-items", "ids-count", "not-npy", "unknown-item", "bad-user",
        "header", "short-row", "items-header", "bad-timestamp"])
def test_bad_input_exits_2_naming_the_file(tmp_path, edit, names):
    d = broken(tmp_path, edit)
    p = run(d, "--out", str(tmp_path / "t"), "--epochs", "1")
    assert p.returncode == 2, f"exit {p.returncode}:\n{p.stderr}"
    assert names in p.stderr and "error:" in p.stderr, p.stderr
    assert not os.path.exists(str(tmp_path / "t.safetensors"))


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--recent", "0"], ["--recency-decay", "1.5"], ["--residual", "2"], ["--holdout-users", "1"]):
        p = run(str(tmp_path), *args)
        assert p.returncode == 2, (args, p.stderr)
    p = run(str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "nowhere: not a directory" in p.stderr, p.stderr

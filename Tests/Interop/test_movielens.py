"""scripts/movielens on tiny fake MovieLens directories generated here (the real data may not be
redistributed, so none is committed): layouts, the leave-last-N-out split, the embeddings (implicit
ALS and BPR, numpy ALS), and that `shardrank build` accepts the output."""
import csv
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT, shardrank_bin

SCRIPT = os.path.join(ROOT, "scripts", "movielens")
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
N_USERS, N_ITEMS, GROUPS = 80, 120, 4


def planted_ratings(seed=3):
    """(user, item, rating, timestamp) rows: 4 user groups, each mostly rating its own block of
    items, plus a few globally popular items, so a working model must beat popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    block = N_ITEMS // GROUPS
    for u in range(1, N_USERS + 1):
        g = (u - 1) % GROUPS
        own = rng.choice(np.arange(g * block + 1, (g + 1) * block + 1), 16, replace=False)
        other = rng.choice(np.arange(1, 11), 3, replace=False)  # items 1-10: everyone's
        items = list(dict.fromkeys(own.tolist() + other.tolist()))
        rng.shuffle(items)
        t = 880_000_000 + u * 1000
        for it in items:
            t += int(rng.integers(1, 500))
            rows.append((u, it, int(rng.integers(1, 6)), t))
    return rows


@pytest.fixture
def ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    rows = planted_ratings()
    # File order is not time order: the script must sort.
    order = np.random.default_rng(1).permutation(len(rows))
    (d / "u.data").write_text("".join("%d\t%d\t%d\t%d\n" % rows[k] for k in order))
    with open(d / "u.item", "wb") as f:
        for i in range(1, N_ITEMS + 1):
            flags = ["0"] * 19
            flags[1 + i % 18] = "1"
            if i % 5 == 0:
                flags[8] = "1"
            title = f"Caf\xe9 Movie {i} (199{i % 10})" if i == 7 else f"Movie {i} (199{i % 10})"
            line = f"{i}|{title}|01-Jan-199{i % 10}||http://example.invalid/{i}|" + "|".join(flags) + "\n"
            f.write(line.encode("latin-1"))
    (d / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    (d / "u.user").write_text("".join(f"{u}|30|M|other|{(u * 7919) % 100000:05d}\n" for u in range(1, N_USERS + 1)))
    return d, rows


def run(*args, check=True):
    p = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"scripts/movielens failed ({p.returncode}):\n{p.stderr}"
    return p


def read_interactions(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        assert next(r) == ["user_id", "item_id", "timestamp", "rating"]
        return [tuple(int(x) for x in row) for row in r]


def check_split(out, rows, n):
    train, held = read_interactions(out / "interactions.csv"), read_interactions(out / "heldout.csv")
    expected = sorted((u, i, t, r) for u, i, r, t in rows)
    assert sorted(train + held) == expected, "train ∪ heldout must be exactly the ratings"
    by_user = {}
    for row in train:
        by_user.setdefault(row[0], []).append(row[2])
    held_by_user = {}
    for row in held:
        held_by_user.setdefault(row[0], []).append(row[2])
    assert set(held_by_user) == set(by_user)
    for u, ts in held_by_user.items():
        assert len(ts) == n, f"user {u}: {len(ts)} held out, expected {n}"
        assert min(ts) >= max(by_user[u]), f"user {u}: a held-out interaction precedes a training one"
    return train, held


def test_ml100k_als_with_implicit(ml100k, tmp_path):
    src, rows = ml100k
    out = tmp_path / "out"
    run(src, out, "--factors", 8, "--algorithm", "als", "--heldout", 2, "--iterations", 10)
    check_split(out, rows, 2)

    items, item_ids = np.load(out / "items.npy"), np.load(out / "item_ids.npy")
    users, user_ids = np.load(out / "users.npy"), np.load(out / "user_ids.npy")
    assert items.dtype == np.float32 and items.shape == (N_ITEMS, 8) and items.flags["C_CONTIGUOUS"]
    assert users.dtype == np.float32 and users.shape == (N_USERS, 8)
    assert item_ids.dtype == np.int64 and item_ids.tolist() == list(range(1, N_ITEMS + 1))
    assert user_ids.dtype == np.int64 and user_ids.tolist() == list(range(1, N_USERS + 1))
    assert np.isfinite(items).all() and np.isfinite(users).all() and np.abs(items).sum() > 0

    with open(out / "items.csv", encoding="utf-8", newline="") as f:
        item_rows = {int(r["item_id"]): r for r in csv.DictReader(f)}
    assert item_rows[7]["title"] == "Caf\u00e9 Movie 7 (1997)", "latin-1 titles must arrive as UTF-8"
    assert item_rows[5]["genres"] == "Crime|Drama" and item_rows[4]["genres"] == "Comedy"
    assert item_rows[3]["timestamp"] == "725846400"  # 01-Jan-1993
    with open(out / "users.csv", newline="") as f:
        regions = {int(r["user_id"]): r["country"] for r in csv.DictReader(f)}
    assert regions[2] == "zip1" and regions[1] == "zip0"  # zip 15838 and 07919

    world = json.loads((out / "world.json").read_text())
    assert world["formatVersion"] == 1 and world["source"]["layout"] == "ml-100k"
    assert world["parameters"]["engine"].startswith("implicit ")
    check = world["sanityCheck"]
    assert check["users"] == N_USERS
    assert check["model"] > 1.5 * check["popularity"], f"ALS should beat popularity on planted groups: {check}"

    # The output is a valid build input.
    p = subprocess.run([shardrank_bin(), "build", "--input", str(out), "--out", str(tmp_path / "root"),
                        "--shards", "2", "--quiet"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_ml100k_bpr_adds_a_bias_column(ml100k, tmp_path):
    src, rows = ml100k
    out = tmp_path / "out"
    run(src, out, "--factors", 8, "--algorithm", "bpr", "--heldout", 1, "--iterations", 30, "--threads", 1)
    check_split(out, rows, 1)
    items, users = np.load(out / "items.npy"), np.load(out / "users.npy")
    assert items.shape == (N_ITEMS, 9) and users.shape == (N_USERS, 9)
    assert np.allclose(users[:, -1], 1.0), "BPR's user factors end with the constant 1 of the item bias"
    world = json.loads((out / "world.json").read_text())
    assert "BayesianPersonalizedRanking" in world["parameters"]["engine"]


def test_rerun_is_identical_for_als(ml100k, tmp_path):
    src, _ = ml100k
    a, b = tmp_path / "a", tmp_path / "b"
    for o in (a, b):
        run(src, o, "--factors", 4, "--algorithm", "numpy-als", "--iterations", 3, "--heldout", 2)
    for name in ["items.npy", "users.npy", "items.csv", "users.csv", "interactions.csv", "heldout.csv"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ml1m_layout_latin1_and_regions(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    rows = planted_ratings()
    (d / "ratings.dat").write_text("".join("%d::%d::%d::%d\n" % r for r in rows))
    with open(d / "movies.dat", "wb") as f:
        for i in range(1, N_ITEMS + 1):
            genres = "Comedy|Drama" if i % 2 else "Children's"
            f.write(f"{i}::Th\xe9 Film {i} (19{50 + i % 50})::{genres}\n".encode("latin-1"))
    (d / "users.dat").write_text("".join(f"{u}::F::25::4::9{u % 10}210-1234\n" for u in range(1, N_USERS + 1)))
    out = tmp_path / "out"
    run(d, out, "--factors", 6, "--algorithm", "numpy-als", "--iterations", 5, "--heldout", 3)
    check_split(out, rows, 3)
    assert np.load(out / "items.npy").shape == (N_ITEMS, 6)
    with open(out / "items.csv", encoding="utf-8", newline="") as f:
        r = {int(x["item_id"]): x for x in csv.DictReader(f)}
    assert r[1]["genres"] == "Comedy|Drama" and r[2]["genres"] == "Children's"
    assert r[1]["title"] == "Th\u00e9 Film 1 (1951)" and r[1]["timestamp"] == "-599616000"
    with open(out / "users.csv", newline="") as f:
        assert {x["country"] for x in csv.DictReader(f)} == {"zip9"}
    world = json.loads((out / "world.json").read_text())
    assert world["source"]["layout"] == "ml-1m" and world["parameters"]["engine"].startswith("numpy-als")


def test_ml25m_csv_layout_quoted_titles_no_regions(tmp_path):
    d = tmp_path / "ml-25m"
    d.mkdir()
    rows = planted_ratings()
    with open(d / "ratings.csv", "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        f.writelines("%d,%d,%d.0,%d\n" % r for r in rows)
    with open(d / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for i in range(1, N_ITEMS + 2):  # one catalogue item nobody rated
            w.writerow([i, f"Movie, The {i} (2001)", "(no genres listed)" if i == 3 else "Sci-Fi|Thriller"])
    out = tmp_path / "out"
    run(d, out, "--factors", 4, "--algorithm", "numpy-als", "--iterations", 3, "--heldout", 2)
    check_split(out, rows, 2)
    assert np.load(out / "item_ids.npy").tolist() == list(range(1, N_ITEMS + 2))
    with open(out / "items.csv", encoding="utf-8", newline="") as f:
        r = {int(x["item_id"]): x for x in csv.DictReader(f)}
    assert r[1]["title"] == "Movie, The 1 (2001)" and r[3]["genres"] == "" and r[1]["genres"] == "Sci-Fi|Thriller"
    with open(out / "users.csv", newline="") as f:
        assert {x["country"] for x in csv.DictReader(f)} == {""}
    p = subprocess.run([shardrank_bin(), "build", "--input", str(out), "--out", str(tmp_path / "root"),
                        "--shards", "1", "--quiet"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_not_a_movielens_directory_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    p = run(tmp_path, tmp_path / "out", check=False)
    assert p.returncode == 2
    assert "not a MovieLens directory" in p.stderr and "u.data" in p.stderr
    assert not (tmp_path / "out").exists()
    p = run(tmp_path / "missing", tmp_path / "out", check=False)
    assert p.returncode == 2 and "not a directory" in p.stderr
    p = run(tmp_path, tmp_path / "out", "--algorithm", "svd", check=False)
    assert p.returncode == 2


def test_a_malformed_ratings_row_is_named_with_exit_2(ml100k, tmp_path):
    """One line naming the file and the row (it used to be numpy's traceback)."""
    d = ml100k[0]
    data = d / "u.data"
    lines = data.read_text().splitlines()
    lines[41] = lines[41].replace("\t", "\tx", 1)
    data.write_text("\n".join(lines) + "\n")
    p = run(d, tmp_path / "out", check=False)
    assert p.returncode == 2 and f"{data}:42: expected user<TAB>item<TAB>rating<TAB>timestamp numbers" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


def recbole_files(d, rows):
    """RecBole's atomic files for the planted ratings (the layout its wheel ships ml-100k in)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                     + "".join("%d\t%d\t%d\t%d\n" % r for r in rows))
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    for i in range(1, N_ITEMS + 1):
        lines.append(f"{i}\tMovie {i}\t{1990 + i % 10}\t{'Sci-Fi Film-Noir' if i % 2 else ''}\n")
    (d / "ml-100k.item").write_text("".join(lines))
    (d / "ml-100k.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                    + "".join(f"{u}\t30\tM\tother\t{(u * 7919) % 100000:05d}\n" for u in range(1, N_USERS + 1)))


def test_recbole_atomic_files_and_wheel(tmp_path):
    import zipfile
    rows = planted_ratings()
    src = tmp_path / "atomic"
    recbole_files(src, rows)
    out = tmp_path / "out"
    run(src, out, "--factors", 4, "--algorithm", "numpy-als", "--iterations", 3, "--heldout", 2)
    check_split(out, rows, 2)
    with open(out / "items.csv", encoding="utf-8", newline="") as f:
        r = {int(x["item_id"]): x for x in csv.DictReader(f)}
    assert r[1]["genres"] == "Sci-Fi|Film-Noir" and r[2]["genres"] == ""
    assert r[1]["title"] == "Movie 1 (1991)" and r[1]["timestamp"] == "662688000"  # 1 Jan 1991
    with open(out / "users.csv", newline="") as f:
        regions = {int(x["user_id"]): x["country"] for x in csv.DictReader(f)}
    assert regions[2] == "zip1" and regions[1] == "zip0"
    assert json.loads((out / "world.json").read_text())["source"]["layout"] == "recbole"
    # The wheel itself: its recbole/dataset_example/ml-100k/ is read (the .kg/.link files skipped).
    wheel = tmp_path / "recbole-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for f in src.iterdir():
            z.write(f, f"recbole/dataset_example/ml-100k/{f.name}")
        z.writestr("recbole/dataset_example/ml-100k/ml-100k.kg", "head_id:token\n")
        z.writestr("recbole/__init__.py", "")
    out2 = tmp_path / "out2"
    run(wheel, out2, "--factors", 4, "--algorithm", "numpy-als", "--iterations", 3, "--heldout", 2)
    for name in ["interactions.csv", "heldout.csv", "items.csv", "users.csv", "items.npy"]:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("recbole/__init__.py", "")
    p = run(empty, tmp_path / "out3", check=False)
    assert p.returncode == 2 and "no recbole/dataset_example/ml-*" in p.stderr


def test_validation_split_is_cut_from_training_only(ml100k, tmp_path):
    src, rows = ml100k
    out = tmp_path / "out"
    run(src, out, "--factors", 4, "--algorithm", "numpy-als", "--iterations", 3, "--heldout", 2, "--validation", 3)
    train, test = check_split(out, rows, 2)
    v = out / "validation"
    fit, val = read_interactions(v / "interactions.csv"), read_interactions(v / "heldout.csv")
    assert sorted(fit + val) == sorted(train), "the validation split partitions the training part"
    assert not set(val) & set(test), "validation never touches the test split"
    by_user, val_by_user = {}, {}
    for row in fit:
        by_user.setdefault(row[0], []).append(row[2])
    for row in val:
        val_by_user.setdefault(row[0], []).append(row[2])
    for u, ts in val_by_user.items():
        assert len(ts) == 3 and min(ts) >= max(by_user[u])
    assert (v / "items.npy").is_file() and np.load(v / "users.npy").shape == (N_USERS, 4)
    world = json.loads((v / "world.json").read_text())
    assert world["counts"]["interactions"] == len(fit) and "inside the training part" in world["source"]["split"]
    p = run(src, tmp_path / "bad", "--validation", "-1", check=False)
    assert p.returncode == 2

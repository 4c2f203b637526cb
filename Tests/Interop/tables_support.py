"""Helpers for the table-set interop tests: a small input directory written with numpy in the
formats `shardrank build` reads, and the documented shard hash re-implemented independently."""
import os
import subprocess

import numpy as np

MASK = (1 << 64) - 1
SEED = 0x9E3779B97F4A7C15


def mix64(z):
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK
    return z ^ (z >> 31)


def jump(key, buckets):
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(id_, shards, seed=SEED):
    return jump(mix64((id_ + seed) & MASK), shards)


def delta_varint(ids):
    """Sorted unique ids as the LEB128 varint of the first id, then of each gap (docs/api.md)."""
    out, prev = bytearray(), 0
    for i, x in enumerate(sorted(set(ids))):
        v = x if i == 0 else x - prev
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        prev = x
    return bytes(out)


def undelta_varint(b):
    ids, v, shift, prev = [], 0, 0, 0
    for byte in b:
        v |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            prev = v if not ids else prev + v
            ids.append(prev)
            v, shift = 0, 0
    assert shift == 0, "truncated varint"
    return ids


def item_vectors(ids, dim, version):
    """Rows are a function of (id, version), so a reader can check which version each row came from."""
    ids = np.asarray(ids, dtype=np.float64)
    j = np.arange(dim, dtype=np.float64)
    return (np.sin(ids[:, None] * 0.37 + j[None, :] * 0.11) + version * 10.0).astype(np.float32)


def write_input(dirpath, n_items=400, n_users=50, dim=16, version=1, seed=3):
    os.makedirs(dirpath, exist_ok=True)
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1000, 1000 + n_items, dtype=np.int64)
    user_ids = np.arange(1, 1 + n_users, dtype=np.int64)
    np.save(os.path.join(dirpath, "items.npy"), item_vectors(item_ids, dim, version))
    np.save(os.path.join(dirpath, "item_ids.npy"), item_ids)
    np.save(os.path.join(dirpath, "users.npy"), rng.standard_normal((n_users, dim)).astype(np.float32))
    np.save(os.path.join(dirpath, "user_ids.npy"), user_ids)
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    with open(os.path.join(dirpath, "items.csv"), "w") as f:
        f.write("item_id,genres,timestamp\n")
        for i, iid in enumerate(item_ids):
            f.write(f"{iid},{genres[i % 4]}|{genres[(i // 4) % 4]},{1_600_000_000 + i}\n")
    with open(os.path.join(dirpath, "users.csv"), "w") as f:
        f.write("user_id,country\n")
        for u in user_ids:
            f.write(f"{u},{['DE', 'FR', 'US'][u % 3]}\n")
    with open(os.path.join(dirpath, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp,rating\n")
        t = 1_700_000_000
        for u in user_ids:
            for _ in range(12):
                f.write(f"{u},{int(item_ids[min(n_items - 1, int(rng.pareto(1.2) * 20))])},{t},4\n")
                t += 1
    return item_ids, dim


def build(binary, input_dir, root, shards, *extra):
    out = subprocess.run([binary, "build", "--input", input_dir, "--out", root, "--shards", str(shards), "--quiet", *extra],
                         capture_output=True, text=True, timeout=120)
    return out

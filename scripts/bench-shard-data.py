#!/usr/bin/env python3
"""Writes a synthetic input directory for `shardrank build`: items.npy (float32 ROWS x DIM, C order,
rows ~ N(0, 1/DIM)) and item_ids.npy (int64 0..ROWS-1). Deterministic for a seed; safe to re-run.

usage: bench-shard-data.py OUT_DIR [--rows 1000000] [--dim 64] [--seed 1]
"""
import argparse, os, sys
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--rows", type=int, default=1_000_000)
ap.add_argument("--dim", type=int, default=64)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
rng = np.random.default_rng(a.seed)
items = (rng.standard_normal((a.rows, a.dim), dtype=np.float32) / np.float32(np.sqrt(a.dim))).astype(np.float32)
np.save(os.path.join(a.out, "items.npy"), np.ascontiguousarray(items))
np.save(os.path.join(a.out, "item_ids.npy"), np.arange(a.rows, dtype=np.int64))
print(f"wrote {a.out}: items {items.shape} float32, item_ids 0..{a.rows - 1}", file=sys.stderr)

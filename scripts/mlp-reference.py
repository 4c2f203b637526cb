#!/usr/bin/env python3
"""numpy reference forward pass of the ShardRank MLP scorer (Sources/ShardRankKernels/MLPModel.swift).

Usage:
  mlp-reference.py score --weights M.safetensors --config M.json --user u.npy --items items.npy \
                         [--dense dense.npy] [--attributes attrs.npy] --out scores.npy
  mlp-reference.py fixture --out Tests/ShardRankKernelsTests/Fixtures/mlp-reference.json

`fixture` builds the deterministic test model and inputs (splitmix64, seed 42; the Swift test
MLPTests.swift builds the same ones, writes them as safetensors and loads them) and writes the
float64 reference scores as JSON. The forward pass runs in float64 so the fixture is the
exact-arithmetic answer up to 1e-15; the Swift float32 kernels must match within 1e-5 relative.
"""
import argparse
import json
import struct
import sys

import numpy as np

MASK64 = (1 << 64) - 1


def log(*a):
    print(*a, file=sys.stderr)


# ---- safetensors ---------------------------------------------------------------------------
def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": "<f4", "F16": "<f2"}[e["dtype"]]
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + end], dtype=dt).reshape(e["shape"]).astype(np.float32)
    return out


def save_safetensors(path, tensors):
    """tensors: list of (name, float32 array). Same layout as SafeTensors.serialize in Swift."""
    header, offset = {}, 0
    for name, a in tensors:
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a in tensors:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


# ---- forward pass --------------------------------------------------------------------------
def build_inputs(config, tensors, user, items, dense=None, attributes=None, dtype=np.float64):
    n = items.shape[0]
    cols, dense_off, attr_idx = [], 0, 0
    for f in config["features"]:
        k, d = f["kind"], f["dim"]
        if k == "user":
            cols.append(np.broadcast_to(user.astype(dtype), (n, d)))
        elif k == "item":
            cols.append(items.astype(dtype))
        elif k == "user_item_product":
            cols.append(items.astype(dtype) * user.astype(dtype)[None, :])
        elif k == "dense":
            cols.append(dense[:, dense_off:dense_off + d].astype(dtype))
            dense_off += d
        elif k == "attribute":
            table = tensors[f["tensor"]].astype(dtype)
            ids = attributes[:, attr_idx].astype(np.int64)
            ok = (ids >= 0) & (ids < table.shape[0])
            emb = np.zeros((n, d), dtype=dtype)
            emb[ok] = table[ids[ok]]
            cols.append(emb)
            attr_idx += 1
        else:
            raise ValueError(f"unknown feature kind {k}")
    return np.concatenate(cols, axis=1)


def forward(config, tensors, user, items, dense=None, attributes=None, dtype=np.float64):
    x = build_inputs(config, tensors, user, items, dense, attributes, dtype)
    for layer in config["layers"]:
        w = tensors[layer["weight"]].astype(dtype)
        b = tensors[layer["bias"]].astype(dtype)
        x = x @ w.T + b
        act = layer["activation"]
        if act == "relu":
            x = np.maximum(x, 0)
        elif act == "sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif act not in ("none", "linear"):
            raise ValueError(f"unknown activation {act}")
    return x[:, 0]


# ---- deterministic fixture -----------------------------------------------------------------
class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self, n, scale):
        """n floats in [-scale, scale): ((z >> 40) - 2^23) / 2^23 * scale, exact in float32."""
        v = [((self.next() >> 40) - (1 << 23)) / float(1 << 23) * scale for _ in range(n)]
        return np.array(v, dtype=np.float32)


FIXTURE_CONFIG = {
    "format": "shardrank-mlp",
    "version": 1,
    "features": [
        {"kind": "user", "dim": 8},
        {"kind": "item", "dim": 8},
        {"kind": "user_item_product", "dim": 8},
        {"kind": "dense", "dim": 3},
        {"kind": "attribute", "name": "genre", "tensor": "attr.genre", "dim": 4},
    ],
    "layers": [
        {"weight": "layers.0.weight", "bias": "layers.0.bias", "activation": "relu"},
        {"weight": "layers.1.weight", "bias": "layers.1.bias", "activation": "relu"},
        {"weight": "layers.2.weight", "bias": "layers.2.bias", "activation": "sigmoid"},
    ],
}
FIXTURE_SHAPES = [  # generation order
    ("layers.0.weight", (16, 31), 0.5), ("layers.0.bias", (16,), 0.125),
    ("layers.1.weight", (8, 16), 0.5), ("layers.1.bias", (8,), 0.125),
    ("layers.2.weight", (1, 8), 0.5), ("layers.2.bias", (1,), 0.125),
    ("attr.genre", (5, 4), 1.0),
]
FIXTURE_CANDIDATES = 37


def fixture_model_and_inputs():
    rng = SplitMix64(42)
    tensors = {}
    for name, shape, scale in FIXTURE_SHAPES:
        tensors[name] = rng.uniform(int(np.prod(shape)), scale).reshape(shape)
    n = FIXTURE_CANDIDATES
    user = rng.uniform(8, 1.0)
    items = rng.uniform(n * 8, 1.0).reshape(n, 8)
    dense = rng.uniform(n * 3, 1.0).reshape(n, 3)
    attrs = np.array([int(rng.next() % 7) - 1 for _ in range(n)], dtype=np.int32).reshape(n, 1)  # -1..5; -1 and 5 are out of range
    return tensors, user, items, dense, attrs


def cmd_fixture(args):
    tensors, user, items, dense, attrs = fixture_model_and_inputs()
    scores = forward(FIXTURE_CONFIG, tensors, user, items, dense, attrs)
    out = {
        "description": "scripts/mlp-reference.py fixture: float64 numpy forward pass of the splitmix64(seed 42) test model",
        "config": FIXTURE_CONFIG,
        "candidates": FIXTURE_CANDIDATES,
        "checksum_user": float(user.astype(np.float64).sum()),
        "checksum_weights": float(sum(t.astype(np.float64).sum() for t in tensors.values())),
        "scores": [float(s) for s in scores],
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    log(f"wrote {args.out}: {len(scores)} scores")


def cmd_score(args):
    with open(args.config) as f:
        config = json.load(f)
    tensors = load_safetensors(args.weights)
    user = np.load(args.user)
    items = np.load(args.items)
    dense = np.load(args.dense) if args.dense else None
    attrs = np.load(args.attributes) if args.attributes else None
    scores = forward(config, tensors, user, items, dense, attrs)
    np.save(args.out, scores)
    log(f"wrote {args.out}: {len(scores)} scores")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--out", required=True)
    s = sub.add_parser("score")
    for a in ("--weights", "--config", "--user", "--items", "--out"):
        s.add_argument(a, required=True)
    s.add_argument("--dense")
    s.add_argument("--attributes")
    args = p.parse_args()
    {"fixture": cmd_fixture, "score": cmd_score}[args.cmd](args)


if __name__ == "__main__":
    main()

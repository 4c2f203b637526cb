"""The two routing functions of ShardRank, bit for bit as the servers compute them.

- :class:`ShardRouter`: which shard holds an id or a list key (docs/table-format.md, "Sharding"):
  ``shard = jump_consistent_hash(mix64(id + seed), S)``; string keys hash their UTF-8 bytes with
  FNV-1a 64 first. The seed comes from the shards (``Info.hash_seed``).
- :class:`CoordinatorRing`: which coordinator serves a user when there are several
  (docs/operations.md, "The coordinator ring"): rendezvous hashing, the highest
  ``mix64(fnv1a64(address) ^ mix64(user))`` wins, ties go to the earlier address.

All arithmetic is modulo 2**64, as in the Swift implementation (``StableHash``, ``ShardRouter``,
``CoordinatorRing``).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

MASK64 = (1 << 64) - 1
#: The seed of every table set built with the defaults (and of a synthetic shard).
DEFAULT_SEED = 0x9E3779B97F4A7C15
#: The name the shards report in ``Info.hash`` for this function.
HASH_FUNCTION = "splitmix64+jump-v1"

_JUMP_MUL = 2862933555777941757


def mix64(z: int) -> int:
    """The SplitMix64 finaliser (Stafford's Mix13), a bijection on 64-bit words."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def fnv1a64(data: str | bytes) -> int:
    """64-bit FNV-1a of ``data`` (a ``str`` is hashed as its UTF-8 bytes)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def stable_hash(id: int, seed: int = DEFAULT_SEED) -> int:
    """The stable hash of a numeric id: ``mix64(id + seed)``."""
    return mix64((id + seed) & MASK64)


def stable_hash_key(key: str | bytes, seed: int = DEFAULT_SEED) -> int:
    """The stable hash of a list table's string key: ``stable_hash(fnv1a64(utf8 bytes))``."""
    return stable_hash(fnv1a64(key), seed)


def jump_consistent_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach 2014) exactly as published: a bucket in ``0..buckets-1``."""
    if buckets < 1:
        raise ValueError("jump_consistent_hash needs at least one bucket")
    key &= MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _JUMP_MUL + 1) & MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S33 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(33)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a 1-D ``uint64`` array; ``ValueError`` for anything that is not an unsigned 64-bit id."""
    if not isinstance(ids, np.ndarray):
        values = list(ids)
        for n, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= MASK64:
                raise ValueError(f"ids[{n}] = {v!r} is not an id in 0...2**64-1")
        return np.array([int(v) for v in values], dtype=np.uint64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional (got shape {ids.shape})")
    if ids.dtype.kind == "u":
        return ids.astype(np.uint64, copy=False)
    if ids.dtype.kind == "i":
        if ids.size and (ids < 0).any():
            raise ValueError(f"ids must be >= 0 (got {int(ids.min())})")
        return ids.astype(np.uint64)
    if ids.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if ids.dtype.kind == "O":
        return as_ids(ids.tolist())
    raise ValueError(f"ids must be integers (got dtype {ids.dtype})")


class ShardRouter:
    """Which shard (0-based) of ``shard_count`` holds an id or a list key, with the table set's seed.

    >>> ShardRouter(2).shard_of(42), ShardRouter(8).shard_of_key("FR")
    (0, 4)
    """

    def __init__(self, shard_count: int, seed: int = DEFAULT_SEED) -> None:
        if shard_count < 1:
            raise ValueError("a table set has at least one shard")
        self.shard_count = shard_count
        self.seed = seed & MASK64

    def __repr__(self) -> str:
        return f"ShardRouter(shard_count={self.shard_count}, seed={self.seed:#018x})"

    def shard_of(self, id: int) -> int:
        """The shard of a numeric id (items, users, the keys of profile and attribute tables)."""
        return jump_consistent_hash(stable_hash(id, self.seed), self.shard_count)

    def shard_of_key(self, key: str | bytes) -> int:
        """The shard of a list table's string key (a genre, a country, ``all``, ``"42"`` for item 42's similar list)."""
        return jump_consistent_hash(stable_hash_key(key, self.seed), self.shard_count)

    def shards_of(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """:meth:`shard_of` of many ids at once (vectorised; the same values): an ``int64`` array."""
        a = as_ids(ids)
        n = np.int64(self.shard_count)
        with np.errstate(over="ignore"):
            key = _mix64_array(a + np.uint64(self.seed))
            b = np.full(a.shape, -1, dtype=np.int64)
            j = np.zeros(a.shape, dtype=np.int64)
            live = np.arange(a.size)
            while live.size:
                b[live] = j[live]
                key[live] = key[live] * np.uint64(_JUMP_MUL) + np.uint64(1)
                step = np.float64(1 << 31) / ((key[live] >> _S33) + np.uint64(1)).astype(np.float64)
                j[live] = ((b[live] + 1).astype(np.float64) * step).astype(np.int64)
                live = live[j[live] < n]
        return b


class CoordinatorRing:
    """Rendezvous hashing of user ids over coordinator addresses (``host:port``, as the topology lists them).

    The order of the list does not matter except for ties (the earlier address wins); removing a
    coordinator moves only its users.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        if not addresses:
            raise ValueError("CoordinatorRing needs at least one coordinator")
        self.addresses: tuple[str, ...] = tuple(addresses)
        self._seeds = [fnv1a64(a) for a in self.addresses]

    def __repr__(self) -> str:
        return f"CoordinatorRing({list(self.addresses)!r})"

    def index_of(self, user: int) -> int:
        """The index into :attr:`addresses` of the coordinator that serves ``user``."""
        if len(self._seeds) == 1:
            return 0
        u = mix64(user)
        best, best_score = 0, mix64(self._seeds[0] ^ u)
        for i in range(1, len(self._seeds)):
            s = mix64(self._seeds[i] ^ u)
            if s > best_score:
                best, best_score = i, s
        return best

    def coordinator_of(self, user: int) -> str:
        """The address of the coordinator that serves ``user``."""
        return self.addresses[self.index_of(user)]

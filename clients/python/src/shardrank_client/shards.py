"""``Shards``: a table set's shard servers (``shardrank.v1.Shard``), called shard-aware."""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from ._common import DTYPE, Channels, Options, check_timeout, enum_name, enum_value, health
from .errors import ShardRankError
from .pb import common_pb2, shard_pb2, shard_pb2_grpc
from .routing import DEFAULT_SEED, HASH_FUNCTION, ShardRouter, as_ids

_NUMPY = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "int8": np.dtype("i1")}


def _dtype_name(value: int) -> Optional[str]:
    name = enum_name(DTYPE, value, "DTYPE_")
    return None if name == "unspecified" else name


@dataclass(frozen=True)
class TableInfo:
    """A table a shard serves: ``kind`` ``"embedding"``, ``"list"``, ``"profile"`` or
    ``"attribute"``; ``dim`` and ``dtype`` (``"f32"``, ``"f16"``, ``"int8"``) for embeddings;
    ``rows``: rows on this shard."""
    name: str
    kind: str
    dim: int
    dtype: Optional[str]
    rows: int


@dataclass(frozen=True)
class ShardInfo:
    """A shard's ``Info``: which shard of how many, the table-set version it serves, its tables,
    and the sharding hash and seed (docs/api.md)."""
    address: str
    shard: int
    shard_count: int
    version: int
    tables: Tuple[TableInfo, ...]
    mapped_bytes: int
    source: str
    hash: str
    hash_seed: int

    def table(self, name: str) -> Optional[TableInfo]:
        return next((t for t in self.tables if t.name == name), None)


@dataclass(frozen=True)
class Rows:
    """The answer of :meth:`Shards.lookup`: the rows of the found ids, in the caller's order.

    ``ids[i]``'s row is ``vectors[i]``; ``vectors`` has the table's (or the requested) element type
    as stored: ``float32`` (``"f32"``), ``float16`` (``"f16"``) or ``int8`` with one ``float32``
    scale per row in ``scales`` (value = int8 × scale; :meth:`float32` applies it).
    ``missing_ids``: the requested ids no shard holds, in the caller's order. A repeated id gets
    its row (or its missing entry) each time. ``versions``: shard → table-set version that answered.
    """
    ids: np.ndarray
    vectors: np.ndarray
    dtype: str
    missing_ids: List[int]
    scales: Optional[np.ndarray]
    versions: Dict[int, int]

    def float32(self) -> np.ndarray:
        """``vectors`` as ``float32`` (int8 rows multiplied by their scales)."""
        if self.scales is not None:
            return self.vectors.astype(np.float32) * self.scales[:, None]
        return self.vectors.astype(np.float32)


@dataclass(frozen=True)
class Hits:
    """One query's search results over all shards: best first, ties towards the lower id."""
    ids: np.ndarray
    scores: np.ndarray


class Shards:
    """A client of every shard of a table set, routing each id to the shard that holds it.

    ``Shards(["127.0.0.1:7101", "127.0.0.1:7102"])``: one address per shard, in any order (each
    shard's ``Info`` says which shard it is). ``Shards([["a:7101", "b:7101"], ["a:7102"]])``:
    ``shards[i]`` lists the replicas of shard ``i`` (the topology file's ``shards``; see
    :meth:`from_topology`); a replica that cannot be reached (``UNAVAILABLE``) is skipped for the next.

    Ids go to their shards with the servers' own hash (``ShardRouter``: splitmix64 + jump
    consistent hash, with the ``hash_seed`` the shards report), one concurrent call per shard.
    The shards' ``Info`` is asked once, on first use (:meth:`info` asks again).

    Every call has a deadline: ``timeout`` seconds (the constructor's, unless a call gives its own).
    Failed calls raise :class:`ShardRankError`.
    """

    def __init__(self, shards: Sequence[Union[str, Sequence[str]]], *, timeout: float = 1.0, options: Optional[Options] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        if isinstance(shards, str):
            shards = [shards]
        self._positional = any(not isinstance(s, str) for s in shards)
        groups = [[s] if isinstance(s, str) else list(s) for s in shards]
        if not groups or any(not g for g in groups):
            raise ValueError("Shards needs at least one address per shard")
        if self._positional and any(isinstance(s, str) for s in shards):
            raise ValueError("give either one address per shard or a list of replicas per shard, not a mix")
        self._groups = groups
        self.timeout = check_timeout(timeout, 1.0)
        self._channels = Channels(options, credentials)
        self._lock = threading.Lock()
        self._replicas: Optional[List[List[str]]] = None   # by shard index, the answering replica first
        self._infos: Optional[List[ShardInfo]] = None
        self._router: Optional[ShardRouter] = None

    @classmethod
    def from_topology(cls, path: Union[str, "os.PathLike[str]"], **kwargs) -> "Shards":
        """The shards (with their replicas) of a topology file (docs/operations.md)."""
        with open(path) as f:
            shards = json.load(f).get("shards")
        if not shards or not all(isinstance(s, list) for s in shards):
            raise ValueError(f"{path}: 'shards' must be a list of replica lists")
        return cls(shards, **kwargs)

    def close(self) -> None:
        self._channels.close()

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Shards({self._groups!r}, timeout={self.timeout})"

    # ---- discovery ------------------------------------------------------------------------------

    def info(self, *, timeout: Optional[float] = None) -> List[ShardInfo]:
        """Every shard's ``Info`` (asked now), by shard index; also refreshes the routing."""
        t = check_timeout(timeout, self.timeout)
        calls = [[(a, shard_pb2_grpc.ShardStub(self._channels.get(a)).Info.future(shard_pb2.InfoRequest(), timeout=t)) for a in g]
                 for g in self._groups]
        found: List[Tuple[ShardInfo, List[str]]] = []
        for g, group_calls in zip(self._groups, calls):
            answer, errors = None, []
            for a, f in group_calls:
                try:
                    r = f.result()
                except grpc.RpcError as e:
                    errors.append(ShardRankError.from_rpc(e, a))
                    continue
                if answer is None:
                    answer = (self._shard_info(a, r), [a] + [x for x in g if x != a])
            if answer is None:
                e = errors[-1]
                if len(errors) == 1:
                    raise e
                raise ShardRankError(e.code, f"no replica of {g} answered Info: " + "; ".join(f"{x.target}: {x}" for x in errors), e.target)
            found.append(answer)
        infos = [i for i, _ in found]
        count, seed, fn = infos[0].shard_count, infos[0].hash_seed, infos[0].hash
        for i in infos:
            if (i.shard_count, i.hash_seed, i.hash) != (count, seed, fn):
                raise ShardRankError("FAILED_PRECONDITION", f"the shards disagree: {infos[0].address} is shard {infos[0].shard} of {count} "
                                     f"(hash {fn}, seed {seed:#x}), {i.address} is shard {i.shard} of {i.shard_count} "
                                     f"(hash {i.hash}, seed {i.hash_seed:#x})", i.address)
        if count > 1 and fn and fn != HASH_FUNCTION:   # (a synthetic shard, 1 of 1, reports "none")
            raise ShardRankError("FAILED_PRECONDITION", f"the shards route with hash {fn!r}; this client knows {HASH_FUNCTION!r}", infos[0].address)
        if count != len(self._groups):
            raise ShardRankError("FAILED_PRECONDITION", f"{len(self._groups)} shard address(es) given for a table set of {count} shards "
                                 f"({', '.join(f'{i.address} is shard {i.shard}' for i in infos)})", infos[0].address)
        replicas: List[Optional[List[str]]] = [None] * count
        for n, (i, order) in enumerate(found):
            if self._positional and i.shard != n:
                raise ShardRankError("FAILED_PRECONDITION", f"{i.address} is shard {i.shard} of {count}, listed as shard {n}", i.address)
            if replicas[i.shard] is not None:
                raise ShardRankError("FAILED_PRECONDITION", f"{replicas[i.shard][0]} and {i.address} are both shard {i.shard} of {count}",
                                     i.address)
            replicas[i.shard] = order
        with self._lock:
            self._replicas = [r for r in replicas if r is not None]
            self._infos = sorted(infos, key=lambda i: i.shard)
            self._router = ShardRouter(count, seed if seed else DEFAULT_SEED)
            return list(self._infos)

    @staticmethod
    def _shard_info(address: str, r: shard_pb2.InfoResponse) -> ShardInfo:
        tables = tuple(TableInfo(t.name, enum_name(common_pb2.TableKind, t.kind, "TABLE_KIND_"), t.dim, _dtype_name(t.dtype), t.rows)
                       for t in r.tables)
        return ShardInfo(address, r.shard, r.shard_count, r.version, tables, r.mapped_bytes, r.source, r.hash, r.hash_seed)

    def _ready(self, timeout: Optional[float]) -> Tuple[ShardRouter, List[List[str]], List[ShardInfo]]:
        if self._router is None:
            if timeout is not None and timeout <= 0:
                raise ShardRankError("DEADLINE_EXCEEDED", "no time left to ask the shards' Info", None)
            self.info(timeout=timeout)
        assert self._router is not None and self._replicas is not None and self._infos is not None
        return self._router, self._replicas, self._infos

    @property
    def router(self) -> ShardRouter:
        """The shard count and hash seed of the table set (asks the shards' Info on first use)."""
        return self._ready(None)[0]

    def shard_of(self, id: int) -> int:
        """The shard that holds ``id``."""
        return self.router.shard_of(id)

    def stub(self, shard: int) -> shard_pb2_grpc.ShardStub:
        """The raw generated stub of a shard (its first replica that answered Info)."""
        return shard_pb2_grpc.ShardStub(self._channels.get(self._ready(None)[1][shard][0]))

    def health(self, *, timeout: Optional[float] = None) -> Dict[str, str]:
        """Every address's gRPC health: ``{"host:port": "SERVING" | "NOT_SERVING" | <status name of
        the failed check, e.g. "UNAVAILABLE">}``."""
        return health(self._channels, [a for g in self._groups for a in g], check_timeout(timeout, self.timeout))

    # ---- calls ----------------------------------------------------------------------------------

    def _fan_out(self, method: str, requests: Dict[int, object], deadline: float) -> Dict[int, object]:
        """One call per shard, all at once, by ``deadline`` (``time.monotonic()``); a replica that is
        UNAVAILABLE is replaced by the next."""
        replicas = self._ready(deadline - time.monotonic())[1]
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise ShardRankError("DEADLINE_EXCEEDED", "the deadline passed while asking the shards' Info", None)
        calls = {s: (0, getattr(shard_pb2_grpc.ShardStub(self._channels.get(replicas[s][0])), method).future(req, timeout=timeout))
                 for s, req in requests.items()}
        out: Dict[int, object] = {}
        try:
            for s in list(calls):
                while True:
                    n, f = calls[s]
                    try:
                        out[s] = f.result()
                        break
                    except grpc.RpcError as e:
                        left = deadline - time.monotonic()
                        if e.code() != grpc.StatusCode.UNAVAILABLE or n + 1 >= len(replicas[s]) or left <= 0:
                            raise ShardRankError.from_rpc(e, replicas[s][n]) from None
                        stub = shard_pb2_grpc.ShardStub(self._channels.get(replicas[s][n + 1]))
                        calls[s] = (n + 1, getattr(stub, method).future(requests[s], timeout=left))
        finally:
            for s, (_, f) in calls.items():
                if s not in out:
                    f.cancel()
        return out

    def lookup(self, ids: Union[Iterable[int], np.ndarray], table: str = "items", dtype: Optional[str] = None, *, version: int = 0,
               timeout: Optional[float] = None) -> Rows:
        """The rows of ``ids`` in an embedding table, each id asked of the shard that holds it.

        ``dtype``: ``None`` (the table's own), ``"f32"``, ``"f16"`` or ``"int8"``. ``version``: a
        pinned table-set version (0 = the newest each shard serves). Ids no shard holds come back
        in ``missing_ids`` (no row).
        """
        t = check_timeout(timeout, self.timeout)
        deadline = time.monotonic() + t
        want = 0 if dtype is None else enum_value(DTYPE, dtype, "DTYPE_", "dtype")
        keys = as_ids(ids)
        router, _, infos = self._ready(t)
        where = router.shards_of(keys)
        positions = {s: np.flatnonzero(where == s) for s in np.unique(where).tolist()}
        requests = {s: shard_pb2.LookupRequest(table=table, ids=keys[p].tolist(), dtype=want, version=version) for s, p in positions.items()}
        answers = self._fan_out("Lookup", requests, deadline) if requests else {}
        found = np.zeros(keys.size, dtype=bool)
        parts = []
        dim, got = None, None
        for s, r in answers.items():
            missing = set(r.missing_ids)
            p = positions[s]
            hit = p[np.array([x not in missing for x in keys[p].tolist()], dtype=bool)] if missing else p
            name = _dtype_name(r.dtype)
            if name not in _NUMPY:
                raise ShardRankError("INTERNAL", f"shard {s} answered in dtype {r.dtype}", None)
            rows = np.frombuffer(r.vectors, dtype=_NUMPY[name])
            if hit.size:
                if r.dim == 0 or rows.size != hit.size * r.dim:
                    raise ShardRankError("INTERNAL", f"shard {s} answered {rows.size} elements for {hit.size} rows of dim {r.dim}", None)
                if (dim, got) != (None, None) and (dim, got) != (r.dim, name):
                    raise ShardRankError("INTERNAL", f"the shards answered different row types ({dim}×{got}, {r.dim}×{name})", None)
                dim, got = r.dim, name
                scales = np.frombuffer(r.scales, dtype="<f4") if name == "int8" else None
                if scales is not None and scales.size != hit.size:
                    raise ShardRankError("INTERNAL", f"shard {s} answered {scales.size} scales for {hit.size} int8 rows", None)
                parts.append((hit, rows.reshape(hit.size, r.dim), scales))
            elif dim is None and r.dim:
                dim, got = r.dim, name
            found[hit] = True
        if dim is None:   # nothing found: the shape and type the table has
            t_info = infos[0].table(table)
            dim = t_info.dim if t_info else 0
            got = dtype or (t_info.dtype if t_info and t_info.dtype else "f32")
        assert got is not None
        rank = np.cumsum(found) - 1
        vectors = np.empty((int(found.sum()), dim), dtype=_NUMPY[got])
        scales_out = np.empty(vectors.shape[0], dtype=np.float32) if got == "int8" else None
        for hit, rows, scales in parts:
            vectors[rank[hit]] = rows
            if scales_out is not None and scales is not None:
                scales_out[rank[hit]] = scales
        return Rows(ids=keys[found], vectors=vectors, dtype=got, missing_ids=keys[~found].tolist(), scales=scales_out,
                    versions={s: r.version for s, r in sorted(answers.items())})

    def search(self, queries: Union[Sequence[float], Sequence[Sequence[float]], np.ndarray], k: int = 10, table: str = "items", *,
               exclude_ids: Iterable[int] = (), mode: Optional[str] = None, nprobe: int = 0, rerank: int = 0, version: int = 0,
               timeout: Optional[float] = None) -> List[Hits]:
        """Top-``k`` inner-product search of each query over every shard, merged: one :class:`Hits`
        per query (a 1-D ``queries`` is one query).

        ``mode``: ``None`` (the table set's default), ``"exact"`` or ``"ann"``; ``nprobe`` /
        ``rerank``: the ANN recall knobs (0 = the index's defaults); ``exclude_ids``: ids never
        returned.
        """
        t = check_timeout(timeout, self.timeout)
        deadline = time.monotonic() + t
        q = np.asarray(queries, dtype="<f4")
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
            raise ValueError(f"queries must be a vector or a non-empty matrix (got shape {q.shape})")
        m = 0 if mode is None else enum_value(shard_pb2.SearchMode, mode, "SEARCH_MODE_", "search mode")
        req = shard_pb2.SearchRequest(table=table, queries=np.ascontiguousarray(q).tobytes(), dim=q.shape[1], k=k,
                                      exclude_ids=as_ids(exclude_ids).tolist(), version=version, mode=m, nprobe=nprobe, rerank=rerank)
        shards = len(self._ready(t)[1])
        answers = self._fan_out("Search", {s: req for s in range(shards)}, deadline)
        for s, r in answers.items():
            if len(r.results) != q.shape[0]:
                raise ShardRankError("INTERNAL", f"shard {s} answered {len(r.results)} results for {q.shape[0]} queries", None)
        out = []
        for n in range(q.shape[0]):
            ids = np.concatenate([np.array(answers[s].results[n].ids, dtype=np.uint64) for s in range(shards)])
            scores = np.concatenate([np.array(answers[s].results[n].scores, dtype=np.float32) for s in range(shards)])
            order = np.lexsort((ids, -scores))[:k]
            out.append(Hits(ids[order], scores[order]))
        return out

"""``Recommender``: the coordinators' ``shardrank.v1.Recommender`` service, typed."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from ._common import SOURCE, Channels, Options, check_timeout, enum_name, enum_value, health
from .errors import ShardRankError
from .pb import recommender_pb2 as rpb
from .pb import recommender_pb2_grpc as rpb_grpc
from .routing import CoordinatorRing

# Names used instead of the protos' enum numbers (lower case, without the enum's prefix):
#   sources:            "similar", "genre", "country", "popular", "search", "caller"
#   event kinds:        "view", "click", "purchase", "rating"
#   user_vector:        "auto", "stored", "tower"
#   user_vector_source: "none", "stored", "tower"


@dataclass(frozen=True)
class Context:
    """What the caller knows about the request's situation (docs/api.md).

    ``recent_item_ids``: the session's latest items, most recent first (at most 100); they key the
    similar-items source and are never recommended. ``country`` / ``genres`` override the stored
    profile's. ``exclude_ids``: items never to return (at most 10,000).
    """
    recent_item_ids: Sequence[int] = ()
    country: str = ""
    genres: Sequence[str] = ()
    exclude_ids: Sequence[int] = ()


@dataclass(frozen=True)
class Budgets:
    """Candidates asked of each retrieval source; 0 = the coordinator's default."""
    similar_per_item: int = 0
    genre: int = 0
    country: int = 0
    popular: int = 0
    search: int = 0


@dataclass(frozen=True)
class ScoredItem:
    """One recommended (or ranked, or similar) item: its score and the sources that proposed it."""
    item_id: int
    score: float
    sources: Tuple[str, ...]


@dataclass(frozen=True)
class Coverage:
    """How complete an answer is: shards asked and answered, sources that failed, and whether the
    answer is degraded (with the reasons)."""
    shards_asked: int
    shards_answered: int
    sources_failed: Tuple[str, ...]
    degraded: bool
    degraded_reasons: Tuple[str, ...]


@dataclass(frozen=True)
class Timings:
    """The coordinator's time per stage of a Recommend, in microseconds."""
    retrieve_us: int
    filter_us: int
    gather_us: int
    rank_us: int
    post_rank_us: int
    total_us: int


@dataclass(frozen=True)
class Features:
    """The ranking features of every candidate (``recommend(..., return_features=True)``):
    ``values[i, j]`` is feature ``names[j]`` of candidate ``item_ids[i]`` (NaN = missing)."""
    names: Tuple[str, ...]
    item_ids: np.ndarray
    values: np.ndarray


class _ScoredAnswer:
    """What every answer with ranked items offers (``items`` and ``coverage`` fields)."""

    @property
    def item_ids(self) -> List[int]:
        """The items' ids, best first."""
        return [i.item_id for i in self.items]

    @property
    def degraded(self) -> bool:
        """True when some shard or source did not answer (``coverage.degraded_reasons`` says why)."""
        return self.coverage.degraded


@dataclass(frozen=True)
class Recommendation(_ScoredAnswer):
    """The answer of :meth:`Recommender.recommend`.

    ``user_vector_source``: which user vector searched and ranked (``"stored"``, ``"tower"``, or
    ``"none"`` for a cold start); ``session_events``: the user's recorded events this coordinator
    held and used; ``candidates``: distinct candidates the ranker scored; ``coordinator``: who answered.
    """
    items: List[ScoredItem]
    version: int
    coverage: Coverage
    timings: Timings
    candidates: int
    cold_start: bool
    user_vector_source: str
    session_events: int
    features: Optional[Features]
    coordinator: str


@dataclass(frozen=True)
class Ranking(_ScoredAnswer):
    """The answer of :meth:`Recommender.rank` and :meth:`Recommender.similar`."""
    items: List[ScoredItem]
    version: int
    coverage: Coverage
    coordinator: str


@dataclass(frozen=True)
class Event:
    """Something a user did to an item. ``kind``: ``"view"``, ``"click"``, ``"purchase"`` or
    ``"rating"``; ``timestamp_unix_s``: when (0 = when the coordinator receives it)."""
    item_id: int
    kind: str = "view"
    timestamp_unix_s: int = 0


@dataclass(frozen=True)
class Recorded:
    """The answer of :meth:`Recommender.record_events`: events taken (all of them, or an error) and
    the events the coordinator now holds for the user."""
    accepted: int
    session_events: int
    coordinator: str


@dataclass(frozen=True)
class BatchRecorded:
    """The answer of :meth:`Recommender.record_events_batch`: events and entries taken over all
    calls, and the number of calls (one per coordinator that serves some of the users)."""
    accepted: int
    users: int
    calls: int


ItemsOrEvents = Iterable[Union[int, Event]]


def _items(items: Sequence[rpb.ScoredItem]) -> List[ScoredItem]:
    return [ScoredItem(int(i.item_id), float(i.score), tuple(enum_name(SOURCE, s, "SOURCE_") for s in i.sources)) for i in items]


def _coverage(c: rpb.Coverage) -> Coverage:
    return Coverage(c.shards_asked, c.shards_answered, tuple(enum_name(SOURCE, s, "SOURCE_") for s in c.sources_failed),
                    c.degraded, tuple(c.degraded_reasons))


def _events(items: ItemsOrEvents, kind: str, timestamp: int) -> List[rpb.Event]:
    if isinstance(items, (int, Event)):
        items = [items]
    out = []
    for it in items:
        if isinstance(it, Event):
            out.append(rpb.Event(item_id=it.item_id, kind=enum_value(rpb.EventKind, it.kind, "EVENT_KIND_", "event kind"),
                                 timestamp_unix_s=it.timestamp_unix_s))
        else:
            out.append(rpb.Event(item_id=int(it), kind=enum_value(rpb.EventKind, kind, "EVENT_KIND_", "event kind"),
                                 timestamp_unix_s=timestamp))
    return out


class Recommender:
    """A client of one or several coordinators (``host:port``).

    With several, every user-keyed call (recommend, rank, record_events) goes to the user's
    coordinator on the coordinator ring — the same routing as ``shardrank eval``, ``loadtest`` and
    ``record-events`` — so a user's recorded events and recommendations meet on one coordinator.
    Pass the addresses exactly as the topology lists them (the ring hashes the strings).

    Every call has a deadline: ``timeout`` seconds (the constructor's, unless a call gives its own).
    Failed calls raise :class:`ShardRankError`. Use as a context manager, or call :meth:`close`.

    >>> rec = Recommender("127.0.0.1:7000")
    >>> rec.recommend(42, k=5).item_ids            # doctest: +SKIP
    """

    def __init__(self, coordinators: Union[str, Sequence[str]], *, timeout: float = 1.0, options: Optional[Options] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        addresses = [coordinators] if isinstance(coordinators, str) else list(coordinators)
        self.ring = CoordinatorRing(addresses)
        self.timeout = check_timeout(timeout, 1.0)
        self._channels = Channels(options, credentials)

    @classmethod
    def from_topology(cls, path: Union[str, "os.PathLike[str]"], **kwargs) -> "Recommender":
        """A client of the ``coordinators`` a topology file lists (docs/operations.md)."""
        with open(path) as f:
            coordinators = json.load(f).get("coordinators")
        if not coordinators:
            raise ValueError(f"{path}: no 'coordinators' list")
        return cls(coordinators, **kwargs)

    @property
    def addresses(self) -> Tuple[str, ...]:
        return self.ring.addresses

    def coordinator_of(self, user: int) -> str:
        """The coordinator (``host:port``) that serves ``user``."""
        return self.ring.coordinator_of(user)

    def stub(self, coordinator: Optional[str] = None) -> rpb_grpc.RecommenderStub:
        """The raw generated stub of a coordinator (the first one by default)."""
        return rpb_grpc.RecommenderStub(self._channels.get(coordinator or self.addresses[0]))

    def close(self) -> None:
        self._channels.close()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recommender({list(self.addresses)!r}, timeout={self.timeout})"

    def _call(self, method: str, request, address: str, timeout: Optional[float]):
        try:
            return getattr(self.stub(address), method)(request, timeout=check_timeout(timeout, self.timeout))
        except grpc.RpcError as e:
            raise ShardRankError.from_rpc(e, address) from None

    def recommend(self, user: int, k: int = 10, *, model: Optional[str] = None, context: Optional[Context] = None,
                  budgets: Optional[Budgets] = None, sources: Sequence[str] = (), diversity_lambda: float = 0.0,
                  min_coverage: float = 0.0, genre_cap: int = 0, freshness_weight: float = 0.0, freshness_half_life_s: int = 0,
                  now_unix_s: int = 0, return_features: bool = False, user_vector: str = "auto",
                  timeout: Optional[float] = None) -> Recommendation:
        """The top ``k`` items for ``user`` (docs/api.md, ``Recommend``).

        ``model``: ``"dot"`` (the default), ``"mlp"`` or a learned ranker's name. ``sources``: run
        only these retrieval sources (e.g. ``["popular"]``). ``diversity_lambda`` in (0, 1] (1 =
        relevance only; 0 = the server default), ``min_coverage`` in [0, 1] (below it:
        ``UNAVAILABLE``), ``genre_cap`` (0 = none), ``freshness_weight`` / ``freshness_half_life_s`` /
        ``now_unix_s`` (the freshness boost), ``return_features`` (the candidates' ranking
        features), ``user_vector``: ``"auto"``, ``"stored"`` or ``"tower"``.
        """
        req = rpb.RecommendRequest(
            user_id=user, k=k, model=model or "", diversity_lambda=diversity_lambda, min_coverage=min_coverage,
            genre_cap=genre_cap, sources=[enum_value(SOURCE, s, "SOURCE_", "source") for s in sources],
            freshness_weight=freshness_weight, freshness_half_life_s=freshness_half_life_s, now_unix_s=now_unix_s,
            return_features=return_features,
            user_vector=enum_value(rpb.UserVectorMode, user_vector, "USER_VECTOR_MODE_", "user_vector mode"))
        if context is not None:
            req.context.CopyFrom(rpb.Context(recent_item_ids=context.recent_item_ids, country=context.country,
                                             genres=context.genres, exclude_ids=context.exclude_ids))
        if budgets is not None:
            req.budgets.CopyFrom(rpb.Budgets(similar_per_item=budgets.similar_per_item, genre=budgets.genre,
                                             country=budgets.country, popular=budgets.popular, search=budgets.search))
        address = self.coordinator_of(user)
        r = self._call("Recommend", req, address, timeout)
        features = None
        if r.HasField("features"):
            names = tuple(r.features.names)
            values = np.array(r.features.values, dtype=np.float32).reshape(len(r.features.item_ids), len(names))
            features = Features(names, np.array(r.features.item_ids, dtype=np.uint64), values)
        t = r.timings
        return Recommendation(
            items=_items(r.items), version=r.version, coverage=_coverage(r.coverage),
            timings=Timings(t.retrieve_us, t.filter_us, t.gather_us, t.rank_us, t.post_rank_us, t.total_us),
            candidates=r.candidates, cold_start=r.cold_start,
            user_vector_source=enum_name(rpb.UserVectorSource, r.user_vector_source, "USER_VECTOR_SOURCE_"),
            session_events=r.session_events, features=features, coordinator=address)

    def rank(self, user: int, candidates: Iterable[int], k: int = 0, *, model: Optional[str] = None,
             timeout: Optional[float] = None) -> Ranking:
        """``user``'s scores of caller-supplied ``candidates``, best first; the top ``k`` (0 = all)."""
        address = self.coordinator_of(user)
        r = self._call("Rank", rpb.RankRequest(user_id=user, candidate_ids=[int(c) for c in candidates], model=model or "", k=k),
                       address, timeout)
        return Ranking(_items(r.items), r.version, _coverage(r.coverage), address)

    def similar(self, item: int, k: int = 10, *, timeout: Optional[float] = None) -> Ranking:
        """Up to ``k`` items related to ``item`` (its precomputed similar list, or an inner-product
        search with its vector). With several coordinators the ring picks one by the item id."""
        address = self.coordinator_of(item)
        r = self._call("Similar", rpb.SimilarRequest(item_id=item, k=k), address, timeout)
        return Ranking(_items(r.items), r.version, _coverage(r.coverage), address)

    def record_events(self, user: int, items: ItemsOrEvents, kind: str = "view", *, timestamp_unix_s: int = 0,
                      replace: bool = False, timeout: Optional[float] = None) -> Recorded:
        """Appends what ``user`` just did to the user's session on the user's coordinator: the next
        :meth:`recommend` of the user excludes these items and treats them as the most recent.

        ``items``: item ids (each recorded as ``kind`` at ``timestamp_unix_s``, 0 = now) or
        :class:`Event` objects; 1...1,000 per call. ``replace``: replace the session instead (no
        items: clear it).
        """
        address = self.coordinator_of(user)
        req = rpb.RecordEventsRequest(user_id=user, events=_events(items, kind, timestamp_unix_s), replace=replace)
        r = self._call("RecordEvents", req, address, timeout)
        return Recorded(r.accepted, r.session_events, address)

    def record_events_batch(self, entries: Union[Mapping[int, ItemsOrEvents], Iterable[Tuple[int, ItemsOrEvents]]],
                            kind: str = "view", *, timeout: Optional[float] = None) -> BatchRecorded:
        """Many users' events (``{user: items}`` or ``[(user, items), ...]``, a user may appear more
        than once) in one ``RecordEventsBatch`` call per coordinator, each user's entries in the
        order given, the calls concurrent.

        A call is all-or-nothing: one bad entry refuses that coordinator's whole batch
        (``INVALID_ARGUMENT`` naming ``users[i]``, counted in that call's entries). At most 1,000
        entries and 10,000 events per coordinator. With several coordinators, the batches of the
        others may have been applied when one fails.
        """
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        per: Dict[str, List[rpb.RecordEventsRequest]] = {}
        for user, items in pairs:
            per.setdefault(self.coordinator_of(user), []).append(
                rpb.RecordEventsRequest(user_id=user, events=_events(items, kind, 0)))
        if not per:
            raise ValueError("record_events_batch needs at least one entry")
        t = check_timeout(timeout, self.timeout)
        calls = {a: self.stub(a).RecordEventsBatch.future(rpb.RecordEventsBatchRequest(users=reqs), timeout=t) for a, reqs in per.items()}
        accepted = users = 0
        error: Optional[ShardRankError] = None
        for a, f in calls.items():
            try:
                r = f.result()
                accepted, users = accepted + r.accepted, users + r.users
            except grpc.RpcError as e:
                error = error or ShardRankError.from_rpc(e, a)
        if error is not None:
            raise error
        return BatchRecorded(accepted, users, len(calls))

    def health(self, *, timeout: Optional[float] = None) -> Dict[str, str]:
        """Each coordinator's gRPC health: ``{"host:port": "SERVING" | "NOT_SERVING" | <status name
        of the failed check, e.g. "UNAVAILABLE">}``. A coordinator is SERVING once every shard has a
        SERVING replica."""
        return health(self._channels, self.addresses, check_timeout(timeout, self.timeout))

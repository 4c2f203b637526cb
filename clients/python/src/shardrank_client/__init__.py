"""Python client of ShardRank: the gRPC stubs generated from the repository's proto/ plus a thin
typed wrapper.

- :class:`Recommender` — the coordinators (``recommend``, ``rank``, ``similar``, ``record_events``,
  ``record_events_batch``, ``health``), routing each user over several coordinators with the
  coordinator ring.
- :class:`Shards` — the shard servers of a table set (``lookup``, ``search``, ``info``,
  ``health``), routing each id to the shard that holds it.
- :class:`ShardRankError` — every failed call: ``code`` (the gRPC status name) and ``message``.
- :mod:`shardrank_client.routing` — the shard hash and the coordinator ring, bit for bit.
- :mod:`shardrank_client.pb` — the generated protobuf / gRPC modules, for raw calls.

See clients/python/README.md.
"""
from .errors import ShardRankError
from .recommender import (BatchRecorded, Budgets, Context, Coverage, Event, Features, Ranking, Recommendation, Recommender, Recorded,
                          ScoredItem, Timings)
from .routing import DEFAULT_SEED, CoordinatorRing, ShardRouter
from .shards import Hits, Rows, ShardInfo, Shards, TableInfo

__version__ = "0.1.0"

__all__ = ["Recommender", "Shards", "ShardRankError", "Recommendation", "Ranking", "ScoredItem", "Coverage", "Timings", "Features",
           "Context", "Budgets", "Event", "Recorded", "BatchRecorded", "Rows", "Hits", "ShardInfo", "TableInfo", "ShardRouter",
           "CoordinatorRing", "DEFAULT_SEED", "__version__"]

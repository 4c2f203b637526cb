"""Generated from proto/shardrank/v1 (scripts/gen-python-stubs): common, shard, recommender."""

"""Generated from proto/shardrank (scripts/gen-python-stubs)."""

"""Generated from proto/grpc/health (scripts/gen-python-stubs)."""

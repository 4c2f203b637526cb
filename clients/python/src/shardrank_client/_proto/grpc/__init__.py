"""Generated from proto/grpc (scripts/gen-python-stubs)."""

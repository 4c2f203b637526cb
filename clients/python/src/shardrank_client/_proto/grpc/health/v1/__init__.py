"""Generated from proto/grpc/health/v1 (scripts/gen-python-stubs): the gRPC health protocol."""

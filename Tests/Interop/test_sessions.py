"""Sessions and the query tower through a real coordinator process, called with grpcio:
RecordEvents then Recommend (a recorded item never comes back), RecordEvents' input errors, the
session metrics; a query tower written here with numpy (the trainer's file contract) served with
--query-tower, its user vector recomputed independently in numpy; a tower whose tensors do not fit
its config stops the coordinator with exit status 2 naming the tensor."""
import json
import struct
import subprocess

import grpc
import numpy as np
import pytest

from conftest import shardrank_bin
from tables_support import item_vectors
from test_cluster import LocalCluster


@pytest.fixture(scope="module")
def rpb(pb):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    return recommender_pb2, recommender_pb2_grpc


def events(rpb, ids, kind=1):
    return [rpb[0].Event(item_id=i, kind=kind) for i in ids]


def test_recorded_items_never_come_back(pb, rpb, tmp_path, server_factory):
    cl = LocalCluster(tmp_path, server_factory)
    stub = rpb[1].RecommenderStub(cl.channel)
    for user in (7, 100_000):   # a user the build knows, and one it never saw
        recorded = []
        for sources in ([], [pb.common_pb2.SOURCE_POPULAR], [pb.common_pb2.SOURCE_SIMILAR], [pb.common_pb2.SOURCE_SEARCH], [pb.common_pb2.SOURCE_GENRE]):
            req = rpb[0].RecommendRequest(user_id=user, k=10, diversity_lambda=1.0, sources=sources)
            before = stub.Recommend(req, timeout=5)
            if not before.items:
                continue        # e.g. no vector or profile for the new user yet
            top = [it.item_id for it in before.items[:3]]
            assert not set(top) & set(recorded)
            ack = stub.RecordEvents(rpb[0].RecordEventsRequest(user_id=user, events=events(rpb, top)), timeout=5)
            recorded += top
            assert ack.accepted == 3 and ack.session_events == len(recorded)
            after = stub.Recommend(req, timeout=5)
            assert after.session_events == len(recorded)
            back = [it.item_id for it in after.items if it.item_id in recorded]
            assert back == [], f"user {user}, sources {list(sources)}: recorded items came back: {back}"
        # Answers to check: all sources, popular, search and genre for the known user; all sources and
        # popular for the new one (no vector, no profile; these tables have no similar lists).
        assert len(recorded) >= (12 if user == 7 else 6), f"user {user}: too few answers to check ({recorded})"
    # Input errors name the field and the event.
    bad = [rpb[0].RecordEventsRequest(user_id=7, events=events(rpb, [1001, 0])),
           rpb[0].RecordEventsRequest(user_id=0, events=events(rpb, [1001])),
           rpb[0].RecordEventsRequest(user_id=7, events=events(rpb, range(1001, 2002)))]
    for req, word in zip(bad, ["events[1].item_id", "user_id", "1...1000"]):
        with pytest.raises(grpc.RpcError) as e:
            stub.RecordEvents(req, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and word in e.value.details(), e.value.details()
    # Without a tower, TOWER is FAILED_PRECONDITION.
    with pytest.raises(grpc.RpcError) as e:
        stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=5, user_vector=rpb[0].USER_VECTOR_MODE_TOWER), timeout=5)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    from test_metrics import scrape, value
    text = scrape(cl.admin_port)
    assert value(text, "shardrank_session_users") == 2
    assert value(text, "shardrank_session_events") >= 18
    assert value(text, "shardrank_rpc_requests_total", method="/shardrank.v1.Recommender/RecordEvents", code="INVALID_ARGUMENT") == 3
    cl.close()


# ---- the query tower ---------------------------------------------------------------------------

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi"]
COUNTRIES = ["DE", "FR", "US"]


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_tower(dirpath, dim=16, recent=4, decay=0.6, residual=1, genre_dim=3, country_dim=2, hidden=12, seed=5, break_tensor=None):
    rng = np.random.default_rng(seed)
    t = {"genre_embedding": rng.standard_normal((len(GENRES) + 1, genre_dim)),
         "country_embedding": rng.standard_normal((len(COUNTRIES) + 1, country_dim)),
         "layer0.weight": rng.standard_normal((hidden, 2 * dim + genre_dim + country_dim)) * 0.3,
         "layer0.bias": rng.standard_normal(hidden) * 0.1,
         "layer1.weight": rng.standard_normal((dim, hidden)) * 0.3,
         "layer1.bias": rng.standard_normal(dim) * 0.1}
    t = {k: v.astype(np.float32) for k, v in t.items()}
    if break_tensor:
        t[break_tensor] = np.zeros((3, 3), dtype=np.float32)
    write_safetensors(dirpath / "T.safetensors", t)
    config = {"kind": "shardrank-query-tower", "version": 1, "dim": dim, "recent": recent, "recency_decay": decay, "residual": residual,
              "genre_dim": genre_dim, "country_dim": country_dim, "hidden": hidden, "genres": GENRES, "countries": COUNTRIES,
              "items_table": "items", "trained": {"by": "test_sessions.py"}}
    (dirpath / "T.json").write_text(json.dumps(config))
    return t, config


def tower_forward(t, c, vectors, recent, genres, country):
    """The contract's forward pass, written independently of the Swift one."""
    d = c["dim"]
    vs = [vectors[i] for i in recent if i in vectors][:c["recent"]]  # unknown items skipped first, then R taken
    if vs:
        v = np.array(vs, dtype=np.float64)
        w = c["recency_decay"] ** np.arange(len(vs))
        mean, rec = v.mean(axis=0), (w[:, None] * v).sum(axis=0) / w.sum()
    else:
        mean, rec = np.zeros(d), np.zeros(d)
    e = t["genre_embedding"].astype(np.float64)
    rows = [GENRES.index(g) if g in GENRES else len(GENRES) for g in genres[:3]] or [len(GENRES)]
    g = [3, 2, 1][:len(rows)] if genres else [1]
    genre = sum(gj * e[r] for gj, r in zip(g, rows)) / sum(g)
    country_row = COUNTRIES.index(country) if country in COUNTRIES else len(COUNTRIES)
    x = np.concatenate([mean, rec, genre, t["country_embedding"][country_row]])
    h = np.maximum(t["layer0.weight"] @ x + t["layer0.bias"], 0)
    return t["layer1.weight"] @ h + t["layer1.bias"] + c["residual"] * rec


def test_the_query_tower_is_served(pb, rpb, tmp_path, server_factory):
    (tmp_path / "tower").mkdir()
    tensors, config = write_tower(tmp_path / "tower")
    cl = LocalCluster(tmp_path, server_factory, coordinator_args=["--query-tower", str(tmp_path / "tower" / "T.safetensors")])
    stub = rpb[1].RecommenderStub(cl.channel)
    vectors = dict(zip(cl.ids, item_vectors(cl.ids, cl.dim, 1).astype(np.float64)))
    user, watched = 200_000, [int(cl.ids[5]), int(cl.ids[40]), int(cl.ids[77]), 9_999_999]   # the last is no item
    ack = stub.RecordEvents(rpb[0].RecordEventsRequest(user_id=user, events=events(rpb, watched)), timeout=5)
    assert ack.session_events == 4
    ctx = rpb[0].Context(genres=["Drama", "Western"], country="FR")
    vu = tower_forward(tensors, config, vectors, list(reversed(watched)), ["Drama", "Western"], "FR")
    for mode in (rpb[0].USER_VECTOR_MODE_TOWER, rpb[0].USER_VECTOR_MODE_AUTO):
        r = stub.Recommend(rpb[0].RecommendRequest(user_id=user, context=ctx, k=10, diversity_lambda=1.0, sources=[pb.common_pb2.SOURCE_SEARCH],
                                                   budgets=rpb[0].Budgets(search=600), user_vector=mode), timeout=5)
        assert r.user_vector_source == rpb[0].USER_VECTOR_SOURCE_TOWER and not r.cold_start and r.session_events == 4
        scores = {i: float(vectors[i] @ vu) for i in vectors if i not in watched}
        want = sorted(scores, key=lambda i: (-scores[i], i))[:10]
        assert [it.item_id for it in r.items] == want
        for it in r.items:
            assert abs(it.score - scores[it.item_id]) <= 1e-3 * max(1.0, abs(scores[it.item_id])), (it.item_id, it.score, scores[it.item_id])
    # STORED for a user without a stored vector: none (but a session, so no cold start).
    r = stub.Recommend(rpb[0].RecommendRequest(user_id=user, k=5, user_vector=rpb[0].USER_VECTOR_MODE_STORED), timeout=5)
    assert r.user_vector_source == rpb[0].USER_VECTOR_SOURCE_NONE and not r.cold_start
    # A stored user without events keeps the stored vector under AUTO.
    r = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=5), timeout=5)
    assert r.user_vector_source == rpb[0].USER_VECTOR_SOURCE_STORED
    cl.close()


def test_a_tower_that_does_not_fit_its_config_stops_the_coordinator(pb, tmp_path):
    (tmp_path / "tower").mkdir()
    write_tower(tmp_path / "tower", break_tensor="layer1.weight")
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps({"shards": [["127.0.0.1:1"]]}))
    out = subprocess.run([shardrank_bin(), "coordinator", "--topology", str(topo), "--port", "0",
                          "--query-tower", str(tmp_path / "tower" / "T.safetensors")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "layer1.weight" in out.stderr, out.stderr
    out = subprocess.run([shardrank_bin(), "coordinator", "--topology", str(topo), "--port", "0",
                          "--query-tower", str(tmp_path / "nope.safetensors")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "nope.safetensors" in out.stderr, out.stderr


# ---- the coordinator ring ----------------------------------------------------------------------

MASK = (1 << 64) - 1


def mix64(z):
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK
    return z ^ (z >> 31)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def ring(addresses, user):
    """docs/operations.md's rendezvous hashing: the highest mix64(fnv1a64(address) ^ mix64(user))."""
    u = mix64(user)
    scores = [mix64(fnv1a64(a) ^ u) for a in addresses]
    return scores.index(max(scores))


def test_eval_and_loadtest_route_users_over_several_coordinators(pb, rpb, tmp_path, server_factory):
    from test_metrics import scrape, value
    cl = LocalCluster(tmp_path, server_factory)
    second = server_factory(["coordinator", "--topology", str(cl.topology), "--port", "0", "--log-level", "warning", "--admin-port", "0"])
    import re
    admins = [cl.admin_port, int(re.search(r"admin listening on \S+:(\d+)", second.preamble).group(1))]
    targets = [cl.coordinator.target, second.target]
    users = list(range(1, 41))
    heldout = tmp_path / "heldout.csv"
    heldout.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{cl.ids[u * 3]},1\n" for u in users))
    out = subprocess.run([shardrank_bin(), "eval", "--target", ",".join(targets), "--heldout", str(heldout), "--k", "10",
                          "--budgets", "50", "--max-users", "0", "--train", "none", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert len(rows) == 3 and all(r["users"] == 40 and r["failed"] == 0 for r in rows)   # two-stage, exhaustive, popularity
    per = [sum(1 for u in users if ring(targets, u) == i) for i in range(2)]
    assert min(per) > 0
    path = "/shardrank.v1.Recommender/Recommend"
    served = [value(scrape(a), "shardrank_rpc_requests_total", method=path, code="OK") for a in admins]
    assert served == [3 * n for n in per], f"each user's requests went to its ring coordinator: {served} vs {per}"
    # The load driver routes the same way: both coordinators get requests, and no request fails.
    out = subprocess.run([shardrank_bin(), "loadtest", "--target", ",".join(targets), "--mix", "recommend", "--user-space", "60",
                          "--rate", "100", "--warmup", "0", "--duration", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = [value(scrape(a), "shardrank_rpc_requests_total", method=path, code="OK") for a in admins]
    assert all(a > s for a, s in zip(after, served)), (served, after)
    # record-events --file: each user's rows reach the user's ring coordinator (RecordEventsBatch),
    # in file order, in batches of at most --batch users; only that coordinator holds the session.
    stub = [rpb[1].RecommenderStub(grpc.insecure_channel(t)) for t in targets]
    events_csv = tmp_path / "events.csv"
    rows = [(u, cl.ids[(u - 100) * 5 + j]) for u in range(101, 131) for j in range(1 + u % 3)]
    events_csv.write_text("user_id,item_id,timestamp,kind,rating\n" + "".join(f"{u},{i},0,click,4\n" for u, i in rows))
    out = subprocess.run([shardrank_bin(), "record-events", "--target", ",".join(targets), "--file", str(events_csv), "--batch", "4"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    per = [sum(1 for u in range(101, 131) if ring(targets, u) == i) for i in range(2)]
    assert out.stdout.strip() == f"{len(rows)} events of 30 users recorded in {sum(-(-n // 4) for n in per)} calls to 2 coordinator(s)", out.stdout
    batch_path = "/shardrank.v1.Recommender/RecordEventsBatch"
    assert [value(scrape(a), "shardrank_rpc_requests_total", method=batch_path, code="OK") for a in admins] == [-(-n // 4) for n in per]
    for u in range(101, 131):
        home = ring(targets, u)
        for i in (0, 1):
            r = stub[i].Recommend(rpb[0].RecommendRequest(user_id=u, k=10), timeout=5)
            assert r.session_events == (1 + u % 3 if i == home else 0), (u, i, r.session_events)
    # A bad row: exit status 2, the file and line named, nothing sent.
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id\n1,5\n2,0\n")
    out = subprocess.run([shardrank_bin(), "record-events", "--target", targets[0], "--file", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"{bad}:3: item_id '0'" in out.stderr, (out.returncode, out.stderr)
    assert stub[ring(targets, 1)].Recommend(rpb[0].RecommendRequest(user_id=1, k=10), timeout=5).session_events == 0
    cl.close()


def test_record_events_batch_and_the_user_vector_metric(pb, rpb, tmp_path, server_factory):
    from test_metrics import scrape, value
    cl = LocalCluster(tmp_path, server_factory)
    stub = rpb[1].RecommenderStub(cl.channel)
    entry = lambda u, ids, **kw: rpb[0].RecordEventsRequest(user_id=u, events=events(rpb, ids), **kw)
    # One bad entry refuses the batch, naming it; nothing of it is applied.
    with pytest.raises(grpc.RpcError) as e:
        stub.RecordEventsBatch(rpb[0].RecordEventsBatchRequest(users=[entry(7, [cl.ids[1]]), entry(8, [cl.ids[2], 0])]), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "users[1].events[1].item_id" in e.value.details(), e.value.details()
    assert stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=10), timeout=5).session_events == 0
    with pytest.raises(grpc.RpcError) as e:
        stub.RecordEventsBatch(rpb[0].RecordEventsBatchRequest(users=[]), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "users has 0 entries" in e.value.details()
    # A good batch: entries in order; the next Recommend of each user excludes the items.
    before = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=10, diversity_lambda=1.0), timeout=5)
    top = [it.item_id for it in before.items[:3]]
    ack = stub.RecordEventsBatch(rpb[0].RecordEventsBatchRequest(users=[entry(7, top[:2]), entry(9, [cl.ids[4]]), entry(7, top[2:])]), timeout=5)
    assert (ack.accepted, ack.users) == (4, 3)
    after = stub.Recommend(rpb[0].RecommendRequest(user_id=7, k=10, diversity_lambda=1.0), timeout=5)
    assert after.session_events == 3 and not set(top) & {it.item_id for it in after.items}
    # Every answer is counted by the user vector it used.
    text = scrape(cl.admin_port)
    answers = value(text, "shardrank_recommend_answers_total")
    by_source = {s: value(text, "shardrank_recommend_user_vector_total", source=s) for s in ("stored", "tower", "none")}
    assert by_source["tower"] == 0 and by_source["stored"] >= 2 and sum(by_source.values()) == answers, (by_source, answers)
    cl.close()

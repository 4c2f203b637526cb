"""TLS on the listeners, mutual TLS between coordinator and shards with the peer's role pinned by
its certificate's URI SAN, bearer tokens on the coordinator, the cleartext-off-loopback refusal,
and certificate reload on SIGHUP (docs/operations.md, "Security"). Certificates come from
`shardrank certs`; every server listens on 127.0.0.1 (port 0) except where a test makes its own
network namespace."""
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import grpc
import pytest

from conftest import shardrank_bin
from tables_support import build, shard_of, write_input


def make_certs(directory, *extra):
    out = subprocess.run([shardrank_bin(), "certs", "--out", str(directory), *extra], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def read(path):
    return open(path, "rb").read()


def creds(certs, role=None):
    """grpcio TLS credentials trusting the development CA, presenting ROLE's certificate if given."""
    if role is None:
        return grpc.ssl_channel_credentials(root_certificates=read(certs / "ca.pem"))
    return grpc.ssl_channel_credentials(root_certificates=read(certs / "ca.pem"), private_key=read(certs / f"{role}-key.pem"),
                                        certificate_chain=read(certs / f"{role}.pem"))


def tls_args(certs, role, ca=True):
    args = ["--tls-cert", str(certs / f"{role}.pem"), "--tls-key", str(certs / f"{role}-key.pem")]
    return args + (["--tls-ca", str(certs / "ca.pem")] if ca else [])


TOKENS = {"reader": "r" * 24, "writer": "w" * 24, "all": "a" * 24}


class TLSCluster:
    """Two mTLS shards and a TLS coordinator with a token file, on loopback."""

    def __init__(self, tmp, factory, certs):
        inp = tmp / "input"
        self.ids, _ = write_input(str(inp), n_items=300, n_users=30)
        root = tmp / "tables"
        assert build(shardrank_bin(), str(inp), str(root), 2).returncode == 0
        self.shards = [factory(["shard", "--tables", str(root), "--shard", str(s), "--of", "2", "--port", "0", "--log-level", "warning",
                                *tls_args(certs, "shard")]) for s in range(2)]
        topo = tmp / "topology.json"
        topo.write_text(json.dumps({"tables": str(root), "shards": [[s.target] for s in self.shards],
                                    "coordinator": {"health_interval_ms": 100, "default_deadline_ms": 2000}}))
        self.token_file = tmp / "tokens.txt"
        self.token_file.write_text(f"# token scopes\n{TOKENS['reader']} recommend\n{TOKENS['writer']} events\n{TOKENS['all']} *\n")
        self.coordinator = factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning", "--admin-port", "0",
                                    "--token-file", str(self.token_file), *tls_args(certs, "coordinator")])
        import re
        self.admin_port = int(re.search(r"admin listening on \S+:(\d+)", self.coordinator.preamble).group(1))


def wait_serving(stub, health_pb2, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == 1:
                return
        except grpc.RpcError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"not SERVING within {deadline_s} s: {last}")


@pytest.fixture
def cluster(tmp_path, server_factory, certs):
    return TLSCluster(tmp_path, server_factory, certs)


def test_grpcio_tls_client_calls_coordinator_and_shard(pb, cluster, certs):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    c = cluster
    assert "(TLS)" in c.coordinator.preamble and "client certificates required" in c.shards[0].preamble
    # The coordinator: server-authenticated TLS; the client proves itself with a token.
    with grpc.secure_channel(c.coordinator.target, creds(certs)) as ch:
        wait_serving(pb.health_pb2_grpc.HealthStub(ch), pb.health_pb2)  # health needs no token
        stub = recommender_pb2_grpc.RecommenderStub(ch)
        r = stub.Recommend(recommender_pb2.RecommendRequest(user_id=7, k=5), timeout=10,
                           metadata=[("authorization", f"Bearer {TOKENS['reader']}")])
        assert len(r.items) == 5 and not r.coverage.degraded  # the coordinator reached both shards over mTLS
        assert r.coverage.shards_answered == 2
    # A shard, with the coordinator's certificate: Lookup answers.
    ids = [int(i) for i in c.ids if shard_of(int(i), 2) == 0][:40]
    with grpc.secure_channel(c.shards[0].target, creds(certs, "coordinator")) as ch:
        resp = pb.shard_pb2_grpc.ShardStub(ch).Lookup(pb.shard_pb2.LookupRequest(table="items", ids=ids), timeout=5)
        assert resp.dim > 0 and not resp.missing_ids


def test_shard_pins_data_methods_to_the_coordinator_role(pb, cluster, certs):
    target = cluster.shards[0].target
    req = pb.shard_pb2.LookupRequest(table="items", ids=cluster.ids[:4])
    # A certificate from the same CA with another role: Info and health answer, the data do not.
    with grpc.secure_channel(target, creds(certs, "client")) as ch:
        stub = pb.shard_pb2_grpc.ShardStub(ch)
        assert stub.Info(pb.shard_pb2.InfoRequest(), timeout=5).shard_count == 2
        for call, request in ((stub.Lookup, req), (stub.Search, pb.shard_pb2.SearchRequest(table="items", k=3))):
            with pytest.raises(grpc.RpcError) as e:
                call(request, timeout=5)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
            assert "coordinator" in e.value.details() and "spiffe://shardrank/coordinator" in e.value.details()
    # No client certificate: the shard refuses the connection.
    with grpc.secure_channel(target, creds(certs)) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb.shard_pb2_grpc.ShardStub(ch).Info(pb.shard_pb2.InfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    # Cleartext to a TLS port: refused too.
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb.shard_pb2_grpc.ShardStub(ch).Info(pb.shard_pb2.InfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    # A certificate from another CA: refused.
    other = make_certs(cluster.token_file.parent / "other-ca")
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=read(certs / "ca.pem"),
                                                                  private_key=read(other / "coordinator-key.pem"),
                                                                  certificate_chain=read(other / "coordinator.pem"))) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb.shard_pb2_grpc.ShardStub(ch).Lookup(req, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value


def test_coordinator_tokens_and_scopes(pb, cluster, certs):
    from shardrank.v1 import recommender_pb2, recommender_pb2_grpc
    with grpc.secure_channel(cluster.coordinator.target, creds(certs)) as ch:
        wait_serving(pb.health_pb2_grpc.HealthStub(ch), pb.health_pb2)
        stub = recommender_pb2_grpc.RecommenderStub(ch)
        rec = recommender_pb2.RecommendRequest(user_id=7, k=3)
        events = recommender_pb2.RecordEventsRequest(user_id=7, events=[recommender_pb2.Event(item_id=cluster.ids[0])])

        def call(method, request, token=None, header=None):
            md = [("authorization", header if header is not None else f"Bearer {token}")] if (token or header) else []
            return method(request, timeout=10, metadata=md)

        for token, header, words in ((None, None, "needs a bearer token"), ("x" * 24, None, "unknown bearer token"),
                                     (None, "Basic abc", "Bearer TOKEN")):
            with pytest.raises(grpc.RpcError) as e:
                call(stub.Recommend, rec, token, header)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and words in e.value.details(), e.value
        with pytest.raises(grpc.RpcError) as e:
            call(stub.Recommend, rec, TOKENS["writer"])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "scope 'recommend'" in e.value.details(), e.value
        with pytest.raises(grpc.RpcError) as e:
            call(stub.RecordEvents, events, TOKENS["reader"])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "scope 'events'" in e.value.details(), e.value
        assert call(stub.RecordEvents, events, TOKENS["writer"]).accepted == 1
        assert len(call(stub.Recommend, rec, TOKENS["all"]).items) == 3
        # The JSON API on the admin port checks the same tokens.
        from test_json_gateway import http
        status, _, body = http(cluster.admin_port, "/v1/recommend/7?k=2")
        assert status == 401 and json.loads(body)["status"] == "UNAUTHENTICATED", body
        status, _, body = http(cluster.admin_port, "/v1/recommend/7?k=2", headers={"authorization": f"Bearer {TOKENS['writer']}"})
        assert status == 403 and json.loads(body)["status"] == "PERMISSION_DENIED", body
        status, _, body = http(cluster.admin_port, "/v1/recommend/7?k=2", headers={"authorization": f"Bearer {TOKENS['reader']}"})
        assert status == 200 and len(json.loads(body)["items"]) == 2, body
        # The token file is reloaded on SIGHUP: a new token works, a removed one stops working.
        fresh = "n" * 24
        cluster.token_file.write_text(f"{TOKENS['writer']} events\n{fresh} recommend\n")
        cluster.coordinator.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                call(stub.Recommend, rec, fresh)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() < deadline, e
                time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as e:
            call(stub.Recommend, rec, TOKENS["reader"])
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_clients_speak_tls_with_tokens(cluster, certs, tmp_path):
    c = cluster
    ca = ["--tls-ca", str(certs / "ca.pem")]
    out = subprocess.run([shardrank_bin(), "health", "--target", c.coordinator.target, "--wait", "30", *ca],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SERVING" in out.stdout, out.stderr
    token = tmp_path / "token"
    token.write_text(TOKENS["reader"] + "\n")
    out = subprocess.run([shardrank_bin(), "recommend", "--target", c.coordinator.target, "--user", "7", "--k", "4", "--json", *ca,
                          "--token-file", str(token)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["items"]) == 4
    out = subprocess.run([shardrank_bin(), "recommend", "--target", c.coordinator.target, "--user", "7", *ca],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr.upper(), out.stderr
    ids = ",".join(str(i) for i in [i for i in c.ids if shard_of(int(i), 2) == 0][:8])
    out = subprocess.run([shardrank_bin(), "lookup", "--target", c.shards[0].target, "--ids", ids, "--json", *ca,
                          "--tls-cert", str(certs / "coordinator.pem"), "--tls-key", str(certs / "coordinator-key.pem")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    coordinator_cert = ["--tls-cert", str(certs / "coordinator.pem"), "--tls-key", str(certs / "coordinator-key.pem")]
    out = subprocess.run([shardrank_bin(), "info", "--target", c.shards[0].target, *ca, "--tls-cert", str(certs / "client.pem"),
                          "--tls-key", str(certs / "client-key.pem")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "shard 0 of 2" in out.stdout, out.stderr
    out = subprocess.run([shardrank_bin(), "route", "--target", c.coordinator.target, "--ids", ids, *ca, "--token-file", str(token)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "shard 0 of 2" in out.stdout, out.stderr
    # The load driver: over mutual TLS with the coordinator's certificate; a refused run exits 1.
    (tmp_path / "ids.txt").write_text(ids.replace(",", "\n") + "\n")
    out = subprocess.run([shardrank_bin(), "loadtest", "--target", c.shards[0].target, "--mix", "lookup", "--batch", "8",
                          "--ids-from", str(tmp_path / "ids.txt"), "--concurrency", "2", "--warmup", "0.2", "--duration", "1", "--json",
                          "--quiet", *ca, *coordinator_cert], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] > 0 and json.loads(out.stdout)["error_count"] == 0, out.stderr
    out = subprocess.run([shardrank_bin(), "loadtest", "--target", c.shards[0].target, "--mix", "lookup", "--concurrency", "1",
                          "--duration", "1", "--quiet", *ca], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout
    # Without a client certificate the shard refuses; against the wrong CA the client refuses.
    out = subprocess.run([shardrank_bin(), "lookup", "--target", c.shards[0].target, "--ids", ids, *ca],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout
    other = make_certs(tmp_path / "other")
    out = subprocess.run([shardrank_bin(), "health", "--target", c.coordinator.target, "--tls-ca", str(other / "ca.pem")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "certificate" in out.stderr.lower(), out.stderr


def test_certs_command_writes_role_certificates(certs):
    for role in ("coordinator", "shard", "client"):
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(certs / f"{role}.pem")],
                              capture_output=True, text=True, check=True).stdout
        assert f"URI:spiffe://shardrank/{role}" in text and "IP Address:127.0.0.1" in text and "DNS:localhost" in text, text
        assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.pem"), str(certs / f"{role}.pem")],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert (certs / f"{role}-key.pem").stat().st_mode & 0o077 == 0, "keys are private to their owner"


def run_fails_before_listening(args):
    out = subprocess.run([shardrank_bin(), *args], capture_output=True, text=True, timeout=30)
    assert "listening on" not in out.stdout
    return out


@pytest.mark.parametrize("command", [["shard", "--synthetic", "100x4"], ["coordinator", "--topology", "/nonexistent.json"]])
def test_cleartext_on_a_non_loopback_address_refuses_to_start(command):
    # The check runs before anything is bound: no socket is ever opened on these addresses.
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        out = run_fails_before_listening([*command, "--host", host, "--port", "0"])
        assert out.returncode == 2, (host, out.stdout, out.stderr)
        assert f"refusing to serve cleartext on {host}" in out.stderr and "--insecure-plaintext" in out.stderr, out.stderr


def test_bad_tls_files_exit_2(tmp_path, certs):
    missing = tmp_path / "missing.pem"
    out = run_fails_before_listening(["shard", "--synthetic", "100x4", "--port", "0", "--tls-cert", str(missing),
                                      "--tls-key", str(certs / "shard-key.pem")])
    assert out.returncode == 2 and str(missing) in out.stderr, out.stderr
    out = run_fails_before_listening(["shard", "--synthetic", "100x4", "--port", "0", "--tls-cert", str(certs / "shard.pem"),
                                      "--tls-key", str(certs / "client-key.pem")])
    assert out.returncode == 2 and "key" in out.stderr, out.stderr
    bad = tmp_path / "tokens"
    bad.write_text("short recommend\n")
    out = run_fails_before_listening(["coordinator", "--topology", "/nonexistent.json", "--port", "0", "--token-file", str(bad)])
    assert out.returncode == 2 and f"{bad}:1" in out.stderr, out.stderr
    bad.write_text(f"{'t' * 20} recommend,nope\n")
    out = run_fails_before_listening(["coordinator", "--topology", "/nonexistent.json", "--port", "0", "--token-file", str(bad)])
    assert out.returncode == 2 and "unknown scope 'nope'" in out.stderr, out.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_insecure_plaintext_allows_a_non_loopback_listener_in_a_private_namespace():
    # In a network namespace of its own (only its loopback interface, nothing reachable), the
    # flag lets the shard listen on the wildcard address.
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    p = subprocess.Popen(["unshare", "--net", shardrank_bin(), "shard", "--synthetic", "100x4", "--host", "0.0.0.0", "--port", "0",
                          "--insecure-plaintext"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "listening on 0.0.0.0:" in line, (line, p.stderr.read() if p.poll() is not None else "")
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def peer_certificate(port, ca):
    """The DER certificate a fresh TLS connection (ALPN h2) to 127.0.0.1:port is shown."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == "h2"
            return s.getpeercert(binary_form=True)


def test_sighup_reloads_certificates_for_new_connections_only(pb, server_factory, tmp_path):
    first, second = make_certs(tmp_path / "first"), make_certs(tmp_path / "second")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("shard.pem", "shard-key.pem"):
        shutil.copy(first / name, live / name)
    s = server_factory(["shard", "--synthetic", "500x8", "--port", "0", "--tls-cert", str(live / "shard.pem"),
                        "--tls-key", str(live / "shard-key.pem")])
    der = lambda p: ssl.PEM_cert_to_DER_cert(open(p).read())  # noqa: E731
    assert peer_certificate(s.port, first / "ca.pem") == der(first / "shard.pem")
    old = grpc.secure_channel(s.target, creds(first))
    try:
        stub = pb.shard_pb2_grpc.ShardStub(old)
        req = pb.shard_pb2.LookupRequest(table="items", ids=[1, 2, 3])
        assert stub.Lookup(req, timeout=5).dim == 8
        for name in ("shard.pem", "shard-key.pem"):
            shutil.copy(second / name, live / name)
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                if peer_certificate(s.port, second / "ca.pem") == der(second / "shard.pem"):
                    break
            except ssl.SSLError:
                pass  # still the first certificate (not signed by the second CA)
            assert time.monotonic() < deadline, "the new certificate was not served within 10 s of SIGHUP"
            time.sleep(0.05)
        # The connection made before the reload still carries calls.
        for _ in range(3):
            assert stub.Lookup(req, timeout=5).dim == 8
        # New connections trusting only the first CA are now refused.
        with pytest.raises(ssl.SSLError):
            peer_certificate(s.port, first / "ca.pem")
        # A grpcio client trusting the second CA connects.
        with grpc.secure_channel(s.target, creds(second)) as ch:
            assert pb.shard_pb2_grpc.ShardStub(ch).Lookup(req, timeout=5).dim == 8
    finally:
        old.close()

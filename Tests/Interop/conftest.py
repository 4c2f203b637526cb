"""Fixtures for the interop tests: the shardrank binary, stubs generated from the committed
protos with grpcio-tools, and shard processes on loopback (port 0, real processes)."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def shardrank_bin():
    b = os.environ.get("SHARDRANK_BIN", os.path.join(ROOT, ".build", "debug", "shardrank"))
    if not os.path.exists(b):
        pytest.fail(f"shardrank binary not found at {b}: build it first (scripts/test does)")
    return b


@pytest.fixture(scope="session")
def pb():
    """Python modules generated from proto/ (shard, common, health) into a temp dir."""
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="shardrank-pb-")
    protos = ["grpc/health/v1/health.proto", "shardrank/v1/common.proto", "shardrank/v1/shard.proto",
              "shardrank/v1/recommender.proto"]
    import grpc_tools
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{os.path.join(ROOT, 'proto')}", f"-I{well_known}",
                      f"--python_out={out}", f"--grpc_python_out={out}"] + protos)
    assert rc == 0, "grpc_tools.protoc failed on the committed protos"
    sys.path.insert(0, out)
    from shardrank.v1 import shard_pb2, shard_pb2_grpc, common_pb2  # noqa
    # The generated grpc/health/v1 package lives under the name of the installed `grpc` package:
    # register it as a namespace inside it so `from grpc.health.v1 import ...` finds our stubs.
    import types
    import grpc  # noqa
    for name in ["grpc.health", "grpc.health.v1"]:
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [os.path.join(out, *name.split("."))]
            sys.modules[name] = m
    from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa

    class PB:
        pass
    p = PB()
    p.shard_pb2, p.shard_pb2_grpc, p.common_pb2 = shard_pb2, shard_pb2_grpc, common_pb2
    p.health_pb2, p.health_pb2_grpc = health_pb2, health_pb2_grpc
    return p


class Server:
    """A `shardrank shard` process; stops by itself at teardown (SIGTERM, then SIGKILL)."""

    def __init__(self, args, fd_limit=None):
        def limit_fds():
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        self.proc = subprocess.Popen([shardrank_bin()] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=limit_fds if fd_limit else None)
        self.preamble = ""
        line = self.proc.stdout.readline()
        while "admin listening" in line:
            self.preamble += line
            line = self.proc.stdout.readline()
        self.preamble += line
        m = re.search(r"listening on (\S+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(m.group(2))
        self.target = f"127.0.0.1:{self.port}"

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def shard():
    s = Server(["shard", "--synthetic", "1000x64", "--port", "0"])
    yield s
    s.stop()


@pytest.fixture
def big_shard():
    """Large enough that a Search of many queries runs for seconds (for deadlines and cancels)."""
    s = Server(["shard", "--synthetic", "200000x64", "--port", "0", "--workers", "1"])
    yield s
    s.stop()


def _servers():
    """Starts servers on demand and stops every one of them when the fixture ends."""
    made = []

    def make(args, **kw):
        s = Server(args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def server_factory():
    yield from _servers()


@pytest.fixture(scope="module")
def module_server_factory():
    """`server_factory` for module-scoped fixtures (servers shared by a module's tests)."""
    yield from _servers()

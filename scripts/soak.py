#!/usr/bin/env python3
"""The nemesis soak (issue 17): a cluster of S shards x 2 replicas and a coordinator, fixed-rate
Recommend load (and Lookups sent straight to shard replicas), and a seeded nemesis that kills,
stops, cuts off, reloads and rolls the shard replicas. A client ledger records every request's
outcome; at the end it checks the reliability promises (docs/reliability.md) and reconciles with
the servers' Prometheus counters. Exit 0 only when nothing was violated.

Run it through scripts/soak (it finds the binary and the Python environment); docs/operations.md,
"Soak", says what it checks. Everything is bounded in time and loopback / private-bridge only; it
signals only the processes it started (their pid files in its own run directory)."""
import argparse
import asyncio
import collections
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
sys.path.insert(0, os.path.join(ROOT, "cluster"))
import cluster as clustertool  # noqa: E402  (cluster/cluster.py: pid verification, subnets)
from shardrank_client.pb import recommender_pb2, recommender_pb2_grpc, shard_pb2, shard_pb2_grpc  # noqa: E402

RECOMMEND = "/shardrank.v1.Recommender/Recommend"
LOOKUP = "/shardrank.v1.Shard/Lookup"
ID_OFFSET = 1_000_000          # version v's item ids are (v - 1) * ID_OFFSET + 1 ... : disjoint per version
RECOMMEND_ERRORS = {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
LOOKUP_ERRORS = {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
K = 10
HANG_S = 0.5
FAULTS = ["kill9", "stop", "cut", "outage", "reload", "rolling"]

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def say(msg):
    print(f"soak [{now():7.2f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The world and its table-set versions


def npy_read(path):
    return np.load(path)


def world_version(base, out, v):
    """Version v of the world: item ids shifted by (v-1)*ID_OFFSET (so an answer mixing versions
    shows in its ids), user vectors' first coordinate shifted by v (so a Lookup's rows say which
    version they came from)."""
    os.makedirs(out, exist_ok=True)
    off = (v - 1) * ID_OFFSET
    for name in ("world.json", "users.csv", "user_ids.npy"):
        with open(os.path.join(base, name), "rb") as f, open(os.path.join(out, name), "wb") as g:
            g.write(f.read())
    users = npy_read(os.path.join(base, "users.npy")).copy()
    users[:, 0] += np.float32(v)
    np.save(os.path.join(out, "users.npy"), users)
    items = npy_read(os.path.join(base, "items.npy"))
    np.save(os.path.join(out, "items.npy"), items)
    ids = npy_read(os.path.join(base, "item_ids.npy"))
    np.save(os.path.join(out, "item_ids.npy"), (ids + off).astype(ids.dtype))
    with open(os.path.join(base, "items.csv")) as f, open(os.path.join(out, "items.csv"), "w") as g:
        g.write(f.readline())
        for line in f:
            i, rest = line.split(",", 1)
            g.write(f"{int(i) + off},{rest}")
    for name in ("interactions.csv", "heldout.csv"):
        with open(os.path.join(base, name)) as f, open(os.path.join(out, name), "w") as g:
            g.write(f.readline())
            for line in f:
                u, i, rest = line.split(",", 2)
                g.write(f"{u},{int(i) + off},{rest}")
    return users


# ------------------------------------------------------------------------------------------------
# Prometheus


def scrape(admin, timeout=2.0):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, val = line.rsplit(" ", 1)
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def by_code(metrics, method):
    out = collections.Counter()
    for key, val in metrics.items():
        if key.startswith("shardrank_rpc_requests_total{") and f'method="{method}"' in key:
            code = key.split('code="', 1)[1].split('"', 1)[0]
            out[code] += int(val)
    return out


# ------------------------------------------------------------------------------------------------
# The cluster (through cluster/cluster.py)


class Cluster:
    def __init__(self, args, topo_path, run_dir, netns):
        self.args, self.topo_path, self.run_dir, self.netns = args, topo_path, run_dir, netns
        self.binary = args.binary

    def tool(self, *argv, timeout=120):
        # The servers run 5 nice levels below the ledger client: the instrument must not be starved
        # by what it measures (on a shared 2-core machine the client's own stalls would read as lateness).
        cmd = ["nice", "-n", str(self.args.server_nice), sys.executable, os.path.join(ROOT, "cluster", "cluster.py"), *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, SHARDRANK_BIN=self.binary))
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        return out

    def up(self, timeout=60):
        argv = ["up", self.topo_path, "--run-dir", self.run_dir, "--binary", self.binary, "--timeout", str(timeout)]
        if self.netns:
            argv.append("--netns")
        return self.tool(*argv, timeout=timeout + 60)

    def down(self):
        return subprocess.run([sys.executable, os.path.join(ROOT, "cluster", "cluster.py"), "down", "--run-dir", self.run_dir,
                               "--grace", "10"], capture_output=True, text=True, timeout=120)

    def state(self):
        with open(os.path.join(self.run_dir, "cluster.json")) as f:
            return json.load(f)

    def procs(self):
        return {p["name"]: p for p in self.state()["processes"]}

    def pid(self, name):
        return clustertool.verified_pid(self.run_dir, self.procs()[name])

    def fault(self, action, shard, replica):
        return self.tool("fault", action, str(shard), str(replica), "--run-dir", self.run_dir, timeout=60)


def free_port_base(n, offset):
    """A base port such that base...base+n-1 and their +offset admin ports are all free on loopback."""
    rnd = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rnd.randrange(20000, 40000 - n)
        if all(not clustertool.port_taken("127.0.0.1", p) and not clustertool.port_taken("127.0.0.1", p + offset)
               for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port range")


def start_coordinator(args, cl):
    """The coordinator over the running shards (cluster/up's effective topology), on loopback; in
    the netns mode it runs in this namespace and reaches the shards over the bridge."""
    log = os.path.join(args.run_dir, "coordinator.log")
    argv = ["nice", "-n", str(args.server_nice), args.binary, "coordinator", "--topology",
            os.path.join(cl.run_dir, "topology.json"), "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
            "--log-level", "debug"] + (["--insecure-plaintext"] if cl.netns else [])
    f = open(log, "w")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    coord = {"proc": proc, "log": log, "address": None, "admin": None}
    end = time.monotonic() + 60
    while time.monotonic() < end and coord["address"] is None:
        if proc.poll() is not None:
            raise RuntimeError(f"the coordinator exited with {proc.returncode}: {open(log).read()[-2000:]}")
        for line in open(log):
            if "admin listening on " in line:
                coord["admin"] = line.rsplit(" ", 1)[1].strip()
            elif "listening on " in line:
                coord["address"] = line.rsplit(" ", 1)[1].strip()
        time.sleep(0.1)
    if coord["address"] is None or coord["admin"] is None:
        raise RuntimeError(f"the coordinator did not start: {open(log).read()[-2000:]}")
    from shardrank_client.pb import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(coord["address"]) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return coord
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError("the coordinator did not become SERVING within 60 s")


def stop_coordinator(coord):
    p = coord["proc"]
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def server_calls(log, method):
    """request id -> (status, ms) from the coordinator's per-call log lines."""
    out, anonymous = {}, collections.Counter()
    with open(log, errors="replace") as f:
        for line in f:
            if " call" not in line or f"method={method} " not in line or "request_id=warmup-" in line:
                continue
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if kv.get("request_id", "").startswith("soak-"):
                out[kv["request_id"]] = (kv.get("status"), float(kv.get("ms", "nan")))
            else:
                # A call reset before its handler started (no request id yet: "-").
                anonymous[kv.get("status")] += 1
    return out, anonymous


def netns_reason():
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_NET_ADMIN)"
    probe = f"srsoakprobe{os.getpid()}"
    try:
        out = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return "`ip` (iproute2) is not installed"
    if out.returncode != 0:
        return f"`ip netns add` fails here: {out.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def free_subnet(rnd):
    """A free 10.77.X.0/24 from the top of the range (the examples and tests use the bottom)."""
    used = [n for n in clustertool.used_networks() if n.prefixlen > 0]
    xs = list(range(160, 250))
    rnd.shuffle(xs)
    for x in xs:
        net = ipaddress.ip_network(f"10.77.{x}.0/24")
        if not any(n.overlaps(net) for n in used):
            return str(net)
    raise RuntimeError("no free 10.77.X.0/24 subnet")


# ------------------------------------------------------------------------------------------------
# The ledger


class Ledger:
    def __init__(self):
        self.records = {}            # request id -> record (dict)
        self.events = []             # nemesis log
        self.published = {}          # version -> monotonic time published (manifest written)
        self.outages = []            # (shard, t_from, t_to): no replica of the shard could answer
        self.lookup_rows = {}        # (version, user id) -> row bytes (first seen)

    def event(self, kind, **kw):
        e = dict(t=round(now(), 3), utc=time.strftime("%H:%M:%S", time.gmtime()), kind=kind, **kw)
        self.events.append(e)
        say(f"nemesis: {kind} " + " ".join(f"{k}={v}" for k, v in kw.items()))
        return e


class Soak:
    def __init__(self, args, cluster, coordinator, ledger, users_by_version, user_rows, shard_users, shards):
        self.args, self.cl, self.led = args, cluster, ledger
        self.users_by_version, self.user_rows, self.shard_users, self.S = users_by_version, user_rows, shard_users, shards
        self.rnd = random.Random(args.seed)
        self.load_rnd = random.Random(args.seed * 7919 + 1)
        self.seq = 0
        self.gen = collections.defaultdict(int)      # replica name -> lifetime number
        self.down = set()                            # replicas killed / stopped / cut right now
        self.lifetimes = {}                          # (name, gen) -> {"pid", "scrape", "scraped_at"}
        self.tasks = set()
        procs = cluster.procs()
        self.coord = coordinator
        self.replicas = {n: p for n, p in procs.items() if p["role"] == "shard"}
        for n in self.replicas:
            self.lifetimes[(n, 0)] = {"pid": cluster.pid(n)}
        opts = [("grpc.enable_retries", 0), ("grpc.max_reconnect_backoff_ms", 500), ("grpc.initial_reconnect_backoff_ms", 100)]
        self.coord_channel = grpc.aio.insecure_channel(self.coord["address"], options=opts)
        self.rec_stub = recommender_pb2_grpc.RecommenderStub(self.coord_channel)
        self.shard_stubs = {n: shard_pb2_grpc.ShardStub(grpc.aio.insecure_channel(p["address"], options=opts))
                            for n, p in self.replicas.items()}
        self.users = sorted(set(int(u) for u in user_rows))

    # --- load ------------------------------------------------------------------------------------

    def next_id(self, kind):
        self.seq += 1
        return f"soak-{self.args.seed}-{kind[0]}{self.seq}"

    async def recommend(self, rid, rec):
        req = recommender_pb2.RecommendRequest(user_id=rec["user"], k=K, min_coverage=rec["min_coverage"])
        t = rec["deadline_ms"] / 1000
        rec["t_send"] = now()
        try:
            r = await asyncio.wait_for(self.rec_stub.Recommend(req, timeout=t, metadata=(("x-request-id", rid),)), t + 3.0)
            rec["t_done"] = now()
            rec["code"] = "OK"
            c = r.coverage
            rec.update(version=r.version, degraded=c.degraded, asked=c.shards_asked, answered=c.shards_answered,
                       sources_failed=len(c.sources_failed), reasons=list(c.degraded_reasons)[:3], n_items=len(r.items),
                       items=[i.item_id for i in r.items], server_total_us=r.timings.total_us, cold_start=r.cold_start)
        except asyncio.TimeoutError:
            rec["t_done"] = now()
            rec["code"] = "HANG"
        except grpc.aio.AioRpcError as e:
            rec["t_done"] = now()
            rec["code"] = e.code().name
            rec["details"] = (e.details() or "")[:200]

    async def lookup(self, rid, rec):
        req = shard_pb2.LookupRequest(table="users", ids=rec["ids"])
        t = rec["deadline_ms"] / 1000
        rec["t_send"] = now()
        try:
            r = await asyncio.wait_for(self.shard_stubs[rec["replica"]].Lookup(req, timeout=t, metadata=(("x-request-id", rid),)),
                                       t + 3.0)
            rec["t_done"] = now()
            rec["code"] = "OK"
            rec.update(version=r.version, missing=list(r.missing_ids), dim=r.dim, answered_shard=r.shard)
            rec["rows"] = r.vectors
        except asyncio.TimeoutError:
            rec["t_done"] = now()
            rec["code"] = "HANG"
        except grpc.aio.AioRpcError as e:
            rec["t_done"] = now()
            rec["code"] = e.code().name
            rec["details"] = (e.details() or "")[:200]

    def spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def watch_lag(self, end):
        """The client's own stalls (this shared machine's scheduling): a tick every 5 ms, and how
        late it woke. A late answer is only the servers' fault when the client was not stalled."""
        loop = asyncio.get_running_loop()
        self.lag = []
        t_end = loop.time() + end + 5
        while loop.time() < t_end:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            late = loop.time() - due
            if late > 0.001:
                self.lag.append((now(), late))

    def client_stall(self, a, b):
        """How long the client was stalled (its ticks' lateness, summed) within [a, b]."""
        return sum(late for t, late in self.lag if a <= t <= b + late)

    async def drive(self, kind, rate, end):
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        lag = 0.0
        while True:
            due = start + i / rate
            if due - start >= end:
                break
            d = due - loop.time()
            if d > 0:
                await asyncio.sleep(d)
            lag = max(lag, loop.time() - due)
            rid = self.next_id(kind)
            r = self.load_rnd
            if kind == "recommend":
                rec = {"kind": kind, "user": r.choice(self.users),
                       "deadline_ms": r.choices([80, 250, 1000], [0.2, 0.6, 0.2])[0],
                       "min_coverage": 1.0 if r.random() < 0.1 else 0.0}
                self.led.records[rid] = rec
                self.spawn(self.recommend(rid, rec))
            else:
                name = r.choice(sorted(self.replicas))
                shard = self.replicas[name]["shard"]
                rec = {"kind": kind, "replica": name, "gen": self.gen[name], "shard": shard,
                       "ids": r.sample(self.shard_users[shard], 4), "deadline_ms": 100}
                self.led.records[rid] = rec
                self.spawn(self.lookup(rid, rec))
            i += 1
        return lag

    # --- nemesis ---------------------------------------------------------------------------------

    def scrape_lifetime(self, name):
        lt = self.lifetimes[(name, self.gen[name])]
        try:
            lt["scrape"] = scrape(self.replicas[name]["admin"])
            lt["scraped_at"] = now()
        except Exception as e:  # a replica that cannot be scraped is reported, not fatal
            lt["scrape_error"] = str(e)

    def new_lifetime(self, name):
        self.gen[name] += 1
        self.lifetimes[(name, self.gen[name])] = {"pid": self.cl.pid(name)}

    def signal(self, name, sig):
        pid = self.cl.pid(name)
        if not pid:
            raise RuntimeError(f"{name}: no verified pid")
        os.kill(pid, sig)
        return pid

    def wait_exit(self, pid, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
            time.sleep(0.05)
        return False

    def restart(self, name):
        """cluster/up (starts what is not running, waits until it is SERVING), then waits (at most
        10 s) until the coordinator has re-admitted it, as a rollout would before the next step."""
        t = now()
        self.cl.up(timeout=60)
        self.new_lifetime(name)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if int(scrape(self.coord["admin"]).get("shardrank_replicas_serving", 0)) == len(self.replicas):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        return round(now() - t, 2)

    def kill9(self, name, hold):
        self.scrape_lifetime(name)
        pid = self.signal(name, signal.SIGKILL)
        self.down.add(name)
        self.led.event("kill-9", replica=name, pid=pid, hold_s=hold)
        self.wait_exit(pid, 10)
        time.sleep(hold)
        took = self.restart(name)
        self.down.discard(name)
        self.led.event("restarted", replica=name, pid=self.cl.pid(name), took_s=took)

    def stop_cont(self, name, hold):
        pid = self.signal(name, signal.SIGSTOP)
        self.down.add(name)
        self.led.event("SIGSTOP", replica=name, pid=pid, hold_s=hold)
        time.sleep(hold)
        self.signal(name, signal.SIGCONT)
        self.down.discard(name)
        self.led.event("SIGCONT", replica=name, pid=pid)

    def cut(self, name, hold):
        p = self.replicas[name]
        self.cl.fault("cut", p["shard"], p["replica"])
        self.down.add(name)
        self.led.event("cut", replica=name, address=p["address"], hold_s=hold)
        time.sleep(hold)
        self.cl.fault("heal", p["shard"], p["replica"])
        self.down.discard(name)
        self.led.event("heal", replica=name)

    def outage(self, shard, hold):
        """Both replicas of one shard stopped: every answer meanwhile must be flagged or an error."""
        names = [n for n, p in self.replicas.items() if p["shard"] == shard]
        for n in names:
            self.signal(n, signal.SIGSTOP)
            self.down.add(n)
        t_from = now()
        self.led.event("shard-outage (SIGSTOP every replica)", shard=shard, replicas=",".join(names), hold_s=hold)
        time.sleep(hold)
        t_to = now()
        for n in names:
            self.signal(n, signal.SIGCONT)
            self.down.discard(n)
        self.led.outages.append((shard, t_from, t_to))
        self.led.event("shard-outage over (SIGCONT)", shard=shard)

    def reload(self):
        v = max(self.led.published) + 1
        world = os.path.join(self.args.run_dir, f"world-v{v}")
        if not os.path.exists(world):   # made before the load (its CSV rewriting would stall the client)
            self.led.event("reload skipped", version=v, why="no prepared world left")
            return
        t = now()
        out = subprocess.run([self.args.binary, "build", "--input", world, "--out", os.path.join(self.args.run_dir, "tables"),
                              "--shards", str(self.S), "--quiet"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or not os.path.exists(os.path.join(self.args.run_dir, "tables", f"v{v}", "manifest.json")):
            raise RuntimeError(f"build of v{v} failed: {out.stderr.strip()}")
        self.led.published[v] = now()
        for n in self.replicas:
            self.signal(n, signal.SIGHUP)
        self.led.event("reload", version=v, build_s=round(now() - t, 2))
        end = time.monotonic() + 30
        seen = {}
        while time.monotonic() < end:
            seen = {}
            for n, p in self.replicas.items():
                try:
                    seen[n] = int(scrape(p["admin"]).get("shardrank_table_set_version", 0))
                except Exception:
                    seen[n] = None
            if all(x == v for x in seen.values()):
                break
            time.sleep(0.2)
        pinned = None
        end = time.monotonic() + 15
        while time.monotonic() < end:
            pinned = int(scrape(self.coord["admin"]).get("shardrank_pinned_version", 0))
            if pinned == v:
                break
            time.sleep(0.2)
        self.led.event("reload done", version=v, shards=",".join(f"{n}:v{x}" for n, x in sorted(seen.items())),
                       coordinator_pinned=pinned)

    def rolling(self):
        self.led.event("rolling restart begins", replicas=len(self.replicas))
        for name in sorted(self.replicas, key=lambda n: (self.replicas[n]["replica"], self.replicas[n]["shard"])):
            self.scrape_lifetime(name)
            pid = self.signal(name, signal.SIGTERM)
            self.down.add(name)
            clean = self.wait_exit(pid, 20)
            took = self.restart(name)
            self.down.discard(name)
            self.led.event("rolled", replica=name, old_pid=pid, drained=clean, new_pid=self.cl.pid(name), restart_s=took)

    def nemesis(self, end_at):
        """The seeded schedule: one fault at a time, a quiet gap after each; stops before end_at."""
        kinds = [k for k in self.args.faults.split(",") if k != "cut" or self.cl.netns]
        order = []
        rnd = self.rnd
        time.sleep(min(5.0, self.args.duration_s / 10))
        i = 0
        while True:
            if not order:
                order = kinds[:]
                rnd.shuffle(order)
            budget = {"kill9": 15, "stop": 9, "cut": 12, "outage": 6, "reload": 20, "rolling": 45}
            fits = [k for k in order if now() + budget[k] + 2 <= end_at]
            if not fits:
                fits = [k for k in kinds if now() + budget[k] + 2 <= end_at]
                if not fits:
                    break
                kind = rnd.choice(sorted(fits))
            else:
                kind = fits[-1]
                order.remove(kind)
            replica = rnd.choice(sorted(self.replicas))
            if kind == "kill9":
                self.kill9(replica, round(rnd.uniform(1, 5), 1))
            elif kind == "stop":
                self.stop_cont(replica, round(rnd.uniform(1, 5), 1))
            elif kind == "cut":
                self.cut(replica, round(rnd.uniform(3, 8), 1))
            elif kind == "outage":
                self.outage(rnd.randrange(self.S), round(rnd.uniform(1.5, 3), 1))
            elif kind == "reload":
                self.reload()
            elif kind == "rolling":
                self.rolling()
            i += 1
            gap = rnd.uniform(2, 6)
            if now() + gap > end_at:
                break
            time.sleep(gap)
        self.led.event("nemesis done", faults=i)

    def heal_all(self):
        """Whatever the nemesis left behind (after an exception): every replica running and reachable."""
        for name, p in self.replicas.items():
            pid = self.cl.pid(name)
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
            if self.cl.netns:
                try:
                    self.cl.fault("heal", p["shard"], p["replica"])
                except Exception:
                    pass
        try:
            self.cl.up(timeout=60)
        except Exception as e:
            say(f"heal: up failed: {e}")


# ------------------------------------------------------------------------------------------------
# Checks


def check(args, led, soak, coord_before, coord_after, users_by_version, user_rows, n_items, S):
    v = collections.defaultdict(list)       # violation kind -> examples

    def bad(kind, rid, rec, why):
        v[kind].append({"id": rid, "why": why, **{k: rec.get(k) for k in ("kind", "code", "deadline_ms", "t_send", "t_done",
                                                                               "version", "replica", "details")}})

    slack = args.slack_ms / 1000
    counts = {"recommend": collections.Counter(), "lookup": collections.Counter()}
    degraded = 0
    late_err = []
    over_ok = []
    client_stalled_ok = 0
    in_outage = collections.Counter()     # Recommends sent and answered while a whole shard was stopped
    versions = collections.Counter()
    published = set(led.published)
    for rid, rec in led.records.items():
        kind = rec["kind"]
        code = rec.get("code")
        if code is None:
            bad("lost (no outcome)", rid, rec, "the request never ended")
            continue
        if code == "HANG":
            bad("lost (no outcome)", rid, rec, "no outcome within deadline + 3 s")
            continue
        counts[kind][code] += 1
        elapsed = rec["t_done"] - rec["t_send"]
        d = rec["deadline_ms"] / 1000
        # Deadlines. gRPC's client ends a call DEADLINE_EXCEEDED when its deadline passes before the
        # status arrived, so an OK was received in time: a server that answers late shows as a
        # DEADLINE_EXCEEDED the server counted OK (the reconciliation below), and the coordinator's
        # own clock (timings.total_us) must be within deadline + slack. The client's clock is
        # reported too: on a shared machine this Python client is itself descheduled for tens of
        # ms at times (its stalls are measured), so it only flags outcomes that are late by more
        # than HANG_S beyond the client's own stalls: a hang, not a scheduling hiccup.
        stall = soak.client_stall(rec["t_send"] + d, rec["t_done"] + 0.02) if elapsed > d + slack else 0.0
        if code == "OK":
            over_ok.append(elapsed - d)
            if elapsed > d + slack:
                client_stalled_ok += 1
        else:
            late_err.append(elapsed - d)
        if elapsed - stall > d + HANG_S:
            bad("outcome past deadline (hang)", rid, rec, f"{code} after {elapsed * 1000:.1f} ms, client stalled "
                f"{stall * 1000:.1f} ms")
        if kind == "recommend":
            if any(a + 0.05 <= rec["t_send"] and rec["t_done"] <= b for _, a, b in led.outages):
                in_outage[code if code != "OK" else ("OK degraded" if rec["degraded"] else "OK complete")] += 1
            if code != "OK":
                if code not in RECOMMEND_ERRORS:
                    bad("wrong status", rid, rec, f"{code}: {rec.get('details')}")
                continue
            versions[rec["version"]] += 1
            if rec["server_total_us"] > (rec["deadline_ms"] + args.slack_ms) * 1000:
                bad("answer past deadline + slack", rid, rec, f"server total {rec['server_total_us']} us")
            if rec["version"] not in published:
                bad("unknown version", rid, rec, f"version {rec['version']} was never published")
            else:
                lo = (rec["version"] - 1) * ID_OFFSET + 1
                foreign = [i for i in rec["items"] if not lo <= i < lo + n_items]
                if foreign:
                    bad("mixed versions", rid, rec, f"items {foreign[:3]} are not version {rec['version']}'s")
                if led.published[rec["version"]] > rec["t_done"]:
                    bad("unknown version", rid, rec, "answered from a version published after the answer")
            if len(set(rec["items"])) != len(rec["items"]):
                bad("duplicate items", rid, rec, str(rec["items"]))
            if rec["degraded"]:
                degraded += 1
                if not rec["reasons"]:
                    bad("unflagged partial answer", rid, rec, "degraded without a reason")
                if rec["min_coverage"] >= 1.0 and rec["answered"] < rec["asked"]:
                    bad("min_coverage ignored", rid, rec, f"{rec['answered']}/{rec['asked']} shards with min_coverage 1")
            else:
                if rec["asked"] != S or rec["answered"] != S or rec["sources_failed"] or rec["n_items"] != K:
                    bad("unflagged partial answer", rid, rec,
                        f"not degraded but {rec['answered']}/{rec['asked']} shards, {rec['sources_failed']} sources failed, "
                        f"{rec['n_items']} items")
                for shard, a, b in led.outages:
                    if a + 0.05 <= rec["t_send"] and rec["t_done"] <= b:
                        bad("unflagged partial answer", rid, rec, f"complete answer while no replica of shard {shard} ran")
        else:
            if code != "OK":
                if code not in LOOKUP_ERRORS:
                    bad("wrong status", rid, rec, f"{code}: {rec.get('details')}")
                continue
            ver = rec["version"]
            versions_l = users_by_version.get(ver)
            if ver not in published or versions_l is None:
                bad("unknown version", rid, rec, f"Lookup answered version {ver}")
                continue
            if rec["missing"] or rec["answered_shard"] != rec["shard"]:
                bad("lost rows", rid, rec, f"missing {rec['missing']}, answered by shard {rec['answered_shard']}")
                continue
            got = np.frombuffer(rec["rows"], dtype="<f4").reshape(len(rec["ids"]), rec["dim"])
            want = versions_l[[user_rows[u] for u in rec["ids"]]]
            if not np.array_equal(got, want):
                bad("torn or wrong rows", rid, rec, f"rows differ from version {ver}'s")
            rec["rows"] = None

    # Versions never go backwards: an answer requested after another answer arrived uses at least
    # that answer's version (the coordinator pins the lowest version all serving replicas hold,
    # and a restarted replica loads the newest).
    oks = [r for r in led.records.values() if r["kind"] == "recommend" and r.get("code") == "OK"]
    done = sorted((r["t_done"], r["version"]) for r in oks)
    best, j = 0, 0
    for r in sorted(oks, key=lambda r: r["t_send"]):
        while j < len(done) and done[j][0] < r["t_send"]:
            best = max(best, done[j][1])
            j += 1
        if r["version"] < best:
            v["version went backwards"].append({"t_send": r["t_send"], "version": r["version"], "seen_before": best})

    # Counters. The coordinator never restarts, so (1) its /metrics over the run must equal its own
    # per-call log (one line per call with our x-request-id, status and ms), and (2) every request
    # of the ledger is matched with the server's outcome for it, by id. They may differ only where
    # the client's deadline passed first: the client then reports DEADLINE_EXCEEDED while the
    # server counted OK (an answer read after the deadline), CANCELLED (the client's reset came
    # first) or nothing (the request never left the stalled client) -- and then only if the server
    # finished within the deadline + slack on its own clock.
    recon = {}
    server = by_code(coord_after, RECOMMEND) - by_code(coord_before, RECOMMEND)
    server = {c: n for c, n in server.items() if n}
    client = dict(counts["recommend"])
    calls, anonymous = server_calls(soak.coord["log"], RECOMMEND)
    logged = dict(collections.Counter(st for st, _ in calls.values()) + anonymous)
    recon["coordinator_requests_by_code"] = {"client": client, "server_metrics": server, "server_log": logged,
                                             "server_log_without_request_id": dict(anonymous)}
    if server != logged:
        v["counters do not reconcile"].append({"what": "shardrank_rpc_requests_total{Recommend} vs the coordinator's call log",
                                               "metrics": server, "log": logged})
    pairs = collections.Counter()
    server_de_over = []
    late_read = 0
    explained = []
    for rid, rec in led.records.items():
        if rec["kind"] != "recommend" or rec.get("code") in (None, "HANG"):
            continue
        code = rec["code"]
        st, ms = calls.get(rid, ("none", 0.0))
        pairs[f"{code}/{st}"] += 1
        if st == code:
            if code == "DEADLINE_EXCEEDED":
                # Not an answer, and the client had ended the call at its own deadline: reported
                # (how late the server's own deadline fired), not a violation.
                server_de_over.append(ms - rec["deadline_ms"])
            continue
        if code == "DEADLINE_EXCEEDED" and st in ("OK", "CANCELLED", "none"):
            if st == "OK" and ms > rec["deadline_ms"] + args.slack_ms:
                bad("answer past deadline + slack", rid, rec, f"server {st} after {ms:.1f} ms")
            if st == "CANCELLED":
                # Not an answer: the client's reset ended a call the server was still working on.
                server_de_over.append(ms - rec["deadline_ms"])
            late_read += st == "OK"
            explained.append({"id": rid, "client": code, "server": st, "server_ms": ms, "deadline_ms": rec["deadline_ms"],
                              "client_ms": round((rec["t_done"] - rec["t_send"]) * 1000, 1),
                              "client_stall_ms": round(soak.client_stall(rec["t_send"], rec["t_done"] + 0.02) * 1000, 1)})
            continue
        if code == "UNAVAILABLE" and st == "none":
            continue
        bad("client and server disagree", rid, rec, f"client {code}, server {st} ({ms:.1f} ms)")
    ids = set(led.records)
    phantom = [rid for rid in calls if rid not in ids]
    if phantom:
        v["counters do not reconcile"].append({"what": "server calls the ledger never sent", "ids": phantom[:5]})
    recon["client_vs_server_per_request"] = dict(pairs)
    recon["client_deadline_first"] = explained[:50]
    ok_server = int(coord_after.get("shardrank_recommend_answers_total", 0) - coord_before.get("shardrank_recommend_answers_total", 0))
    deg_server = int(coord_after.get("shardrank_recommend_degraded_total", 0) - coord_before.get("shardrank_recommend_degraded_total", 0))
    recon["shardrank_recommend_answers_total"] = {"client": client.get("OK", 0), "read_late": late_read, "server": ok_server}
    recon["shardrank_recommend_degraded_total"] = {"client": degraded, "server": deg_server}
    # Calls the server saw without their request id can only be ones the client reset early.
    if sum(anonymous.values()) > pairs["DEADLINE_EXCEEDED/none"] or set(anonymous) - {"CANCELLED", "DEADLINE_EXCEEDED"}:
        v["counters do not reconcile"].append({"what": "server calls without a request id", "server": dict(anonymous),
                                               "client_deadline_without_server_call": pairs["DEADLINE_EXCEEDED/none"]})
    recon["server_deadline_exceeded_latest_past_deadline_ms"] = round(max(server_de_over), 1) if server_de_over else None
    if ok_server != client.get("OK", 0) + late_read or ok_server != logged.get("OK", 0):
        # The counter counts answers whose call ended OK (delivered), as the OK statuses do.
        v["counters do not reconcile"].append({"what": "shardrank_recommend_answers_total", "status_ok": logged.get("OK", 0),
                                               **recon["shardrank_recommend_answers_total"]})
    if not degraded <= deg_server <= degraded + max(0, ok_server - client.get("OK", 0)):
        v["counters do not reconcile"].append({"what": "shardrank_recommend_degraded_total", **recon["shardrank_recommend_degraded_total"]})
    # Shards, per process lifetime: each counted at least the Lookups the client got answered from it
    # before the scrape (the rest of its Lookups are the coordinator's).
    lt_rows = []
    for (name, gen), lt in sorted(soak.lifetimes.items()):
        s = lt.get("scrape")
        mine = [r for r in led.records.values() if r["kind"] == "lookup" and r.get("replica") == name and r.get("gen") == gen
                and r.get("code") == "OK" and s is not None and r["t_done"] <= lt["scraped_at"]]
        row = {"replica": name, "lifetime": gen, "pid": lt.get("pid"), "client_ok": len(mine),
               "server_ok": by_code(s, LOOKUP).get("OK", 0) if s else None, "scrape_error": lt.get("scrape_error")}
        lt_rows.append(row)
        if s is not None and row["server_ok"] < row["client_ok"]:
            v["counters do not reconcile"].append({"what": f"{name} lifetime {gen} Lookup OK", **row})
    recon["shard_lifetimes"] = lt_rows
    # Which fault was last started when each Recommend was sent: what each fault cost.
    import bisect
    marks = [(e["t"], e["kind"]) for e in led.events]
    times = [t for t, _ in marks]
    by_phase = collections.defaultdict(collections.Counter)
    for rec in led.records.values():
        if rec["kind"] != "recommend" or rec.get("code") is None or "t_send" not in rec:
            continue
        i = bisect.bisect_right(times, rec["t_send"]) - 1
        phase = marks[i][1] if i >= 0 else "before the first fault"
        by_phase[phase]["OK degraded" if rec.get("degraded") else rec["code"]] += 1
    ok_over = sorted(over_ok)
    err_over = sorted(late_err)
    figures = {
        "recommend": dict(counts["recommend"]), "lookup": dict(counts["lookup"]),
        "recommend_total": sum(counts["recommend"].values()), "lookup_total": sum(counts["lookup"].values()),
        "degraded": degraded, "versions_answered": {str(k): n for k, n in sorted(versions.items())},
        "ok_answer_latest_vs_deadline_ms": round(ok_over[-1] * 1000, 2) if ok_over else None,
        "error_latest_vs_deadline_ms": round(err_over[-1] * 1000, 2) if err_over else None,
        "ok_read_late_by_the_client": client_stalled_ok,
        "recommends_within_shard_outages": dict(in_outage),
        "recommends_by_last_fault": {k: dict(c) for k, c in sorted(by_phase.items())},
        "client_stalls_over_10ms": sum(1 for _, late in soak.lag if late > 0.010),
        "client_longest_stall_ms": round(max((late for _, late in soak.lag), default=0) * 1000, 1),
        "server_total_max_over_deadline_ms": round(max(((r["server_total_us"] / 1000 - r["deadline_ms"]) for r in
                                                        led.records.values() if r["kind"] == "recommend" and r.get("code") == "OK"),
                                                       default=-1e9), 2),
    }
    return v, recon, figures


# ------------------------------------------------------------------------------------------------


async def run(args):
    os.makedirs(args.run_dir, exist_ok=True)
    binary = args.binary
    S = args.shards
    reason = None if args.netns == "on" else ("--netns off" if args.netns == "off" else netns_reason())
    netns = reason is None
    say(f"run directory {args.run_dir}; binary {binary}; {S} shards x 2 replicas; "
        + ("network namespaces on" if netns else f"network namespaces off (cut skipped: {reason})"))

    # World v1 and the table set.
    base = os.path.join(args.run_dir, "world")
    subprocess.run([binary, "synth", "--out", base, "--users", str(args.users), "--items", str(args.items), "--dim", "16",
                    "--seed", str(args.seed), "--quiet"], check=True, capture_output=True, timeout=120)
    # Every version the nemesis may publish, made now: one reload per nemesis cycle at most.
    versions = 2 + int(args.duration_s // 30)
    users_by_version = {v: world_version(base, os.path.join(args.run_dir, f"world-v{v}"), v) for v in range(1, versions + 1)}
    user_ids = np.load(os.path.join(base, "user_ids.npy"))
    user_rows = {int(u): i for i, u in enumerate(user_ids)}
    tables = os.path.join(args.run_dir, "tables")
    subprocess.run([binary, "build", "--input", os.path.join(args.run_dir, "world-v1"), "--out", tables, "--shards", str(S),
                    "--quiet"], check=True, capture_output=True, timeout=120)

    # Topology: loopback with free ports, or one namespace per process on a free private subnet.
    n = 2 * S + 1
    offset = 1000
    if netns:
        base_port = 7100
        addr = lambda i: f"127.0.0.1:{base_port + i}"  # noqa: E731  (cluster/up rewrites them to namespace IPs)
    else:
        base_port = free_port_base(n, offset)
        addr = lambda i: f"127.0.0.1:{base_port + i}"  # noqa: E731
    # cluster/up runs the shard replicas; the soak runs the coordinator itself (below), on loopback,
    # with a log line per call (--log-level debug): the server's own per-request outcome ledger.
    topo = {"tables": tables, "shards": [[addr(1 + s), addr(1 + S + s)] for s in range(S)],
            "coordinator": {"health_interval_ms": 100, "default_deadline_ms": 250}, "admin": {"port_offset": offset}}
    if netns:
        topo["netns"] = {"subnet": free_subnet(random.Random(os.getpid()))}   # not the seed: two soaks at once
    topo_path = os.path.join(args.run_dir, "soak-topology.json")
    with open(topo_path, "w") as f:
        json.dump(topo, f, indent=2)
    cl = Cluster(args, topo_path, os.path.join(args.run_dir, "cluster"), netns)
    led = Ledger()
    led.published[1] = now()
    report = {"command": " ".join(sys.argv), "seed": args.seed, "duration_s": args.duration_s, "rate": args.rate,
              "lookup_rate": args.lookup_rate, "shards": S, "replicas": 2, "netns": netns, "cut_skipped": reason,
              "run_dir": args.run_dir, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    soak = None
    coordinator = None
    violations, recon, figures = {"setup": [{"why": "did not get far enough to check"}]}, {}, {}
    try:
        cl.up(timeout=60)
        procs = cl.procs()
        # Which users each shard holds (the Lookups ask a replica only for its own shard's ids).
        shard_users = {}
        for name, p in procs.items():
            if p["role"] == "shard" and p["shard"] not in shard_users:
                with grpc.insecure_channel(p["address"]) as ch:
                    r = shard_pb2_grpc.ShardStub(ch).Ids(shard_pb2.IdsRequest(table="users", offset=0, limit=100_000), timeout=5)
                shard_users[p["shard"]] = [int(i) for i in r.ids]
        coordinator = start_coordinator(args, cl)
        soak = Soak(args, cl, coordinator, led, users_by_version, user_rows, shard_users, S)
        # Warm up (not in the ledger): the coordinator's caches and connections.
        with grpc.insecure_channel(soak.coord["address"]) as ch:
            stub = recommender_pb2_grpc.RecommenderStub(ch)
            for i, u in enumerate(soak.users[:20]):
                stub.Recommend(recommender_pb2.RecommendRequest(user_id=u, k=K), timeout=2, metadata=(("x-request-id", f"warmup-{i}"),))
        coord_before = scrape(soak.coord["admin"])
        say(f"load: {args.rate} Recommend/s and {args.lookup_rate} Lookup/s for {args.duration_s} s; nemesis seed {args.seed}")
        end = args.duration_s
        load_t0 = now()
        loop = asyncio.get_running_loop()
        nem = loop.run_in_executor(None, soak.nemesis, load_t0 + end - 2)
        drivers = [soak.drive("recommend", args.rate, end)]
        if args.lookup_rate > 0:
            drivers.append(soak.drive("lookup", args.lookup_rate, end))
        watcher = loop.create_task(soak.watch_lag(end))
        lags = await asyncio.gather(*drivers)
        say("load sent; waiting for the nemesis and the last answers")
        try:
            await asyncio.wait_for(asyncio.shield(nem), 120)
        except asyncio.TimeoutError:
            led.event("nemesis overran 120 s after the load ended")
        except Exception as e:
            led.event("nemesis failed", error=repr(e)[:300])
            await loop.run_in_executor(None, soak.heal_all)
            report["nemesis_error"] = repr(e)
        if soak.tasks:
            await asyncio.wait(list(soak.tasks), timeout=5)
        watcher.cancel()
        # The ledger's injected faults (scripts/soak --inject, to show the checks fail).
        recs = [r for r in led.records.values() if r["kind"] == "recommend"]
        if args.inject == "lose" and recs:
            recs[len(recs) // 2].pop("code", None)
        elif args.inject == "unflag":
            for r in recs:
                if r.get("degraded"):
                    r["degraded"] = False
                    break
        elif args.inject == "late" and recs:
            for r in recs:
                if r.get("code") == "OK":
                    r["server_total_us"] = (r["deadline_ms"] + 50) * 1000
                    break
        await asyncio.sleep(0.5)
        coord_after = scrape(soak.coord["admin"])
        for name in soak.replicas:
            soak.scrape_lifetime(name)
        report["max_send_lag_ms"] = round(max(lags) * 1000, 2)
        violations, recon, figures = check(args, led, soak, coord_before, coord_after, users_by_version, user_rows,
                                           args.items, S)
    finally:
        report["nemesis"] = led.events
        if coordinator:
            stop_coordinator(coordinator)
        report["published_versions"] = sorted(led.published)
        d = cl.down()
        if d.returncode != 0:
            say(f"cluster down: {d.stderr.strip()[-500:]}")
    report.update(figures=figures, reconciliation=recon,
                  violations={k: {"count": len(x), "examples": x[:5]} for k, x in violations.items()},
                  ok=not violations, finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return report


def print_report(rep):
    f = rep.get("figures", {})
    print(f"soak: {rep['duration_s']} s, seed {rep['seed']}, {rep['shards']} shards x 2 replicas, "
          f"{rep['rate']} Recommend/s + {rep['lookup_rate']} Lookup/s"
          + ("" if rep["netns"] else f"; cut: skipped: {rep['cut_skipped']}"))
    kinds = collections.Counter(e["kind"] for e in rep["nemesis"])
    print("nemesis: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()))
    if f:
        print(f"Recommend: {f['recommend_total']} sent: {f['recommend']}; {f['degraded']} OK answers flagged degraded; "
              f"versions answered {f['versions_answered']}")
        print(f"Recommends sent and answered while every replica of a shard was stopped: "
              f"{f['recommends_within_shard_outages']}")
        print("Recommend outcomes by the nemesis step last begun when each was sent:")
        for k, c in f["recommends_by_last_fault"].items():
            print(f"  {k:40s} {c}")
        print(f"Lookup (straight to replicas): {f['lookup_total']} sent: {f['lookup']}")
        print(f"deadlines: latest OK answer on the coordinator's clock {f['server_total_max_over_deadline_ms']} ms vs its "
              f"deadline; on the client's clock {f['ok_answer_latest_vs_deadline_ms']} ms (errors: "
              f"{f['error_latest_vs_deadline_ms']} ms); {f['ok_read_late_by_the_client']} OK answers read past deadline + slack by the "
              f"(stalled) client (its longest stall {f['client_longest_stall_ms']} ms, max send lag {rep.get('max_send_lag_ms')} ms)")
    r = rep.get("reconciliation", {})
    if r:
        c = r["coordinator_requests_by_code"]
        print(f"coordinator: client saw {c['client']}; /metrics counted {c['server_metrics']}; its call log {c['server_log']}")
        print(f"per request (client/server): {r['client_vs_server_per_request']}; answers "
              f"{r['shardrank_recommend_answers_total']}; degraded {r['shardrank_recommend_degraded_total']}")
        print(f"calls the client ended at its deadline and the coordinator ended DEADLINE_EXCEEDED or CANCELLED: latest "
              f"{r['server_deadline_exceeded_latest_past_deadline_ms']} ms past the deadline on the coordinator's clock")
        print(f"shard lifetimes scraped: {sum(1 for x in r['shard_lifetimes'] if x['server_ok'] is not None)} "
              f"of {len(r['shard_lifetimes'])}")
    if rep["ok"]:
        print("RESULT: OK: 0 lost or unflagged answers, 0 answers past deadline + slack, counters reconcile")
    else:
        print("RESULT: VIOLATIONS")
        for k, x in rep["violations"].items():
            print(f"  {k}: {x['count']}")
            for e in x["examples"][:3]:
                print(f"    {json.dumps(e)[:300]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration-s", type=float, default=600)
    ap.add_argument("--rate", type=float, default=40, help="Recommend calls per second (default 40)")
    ap.add_argument("--lookup-rate", type=float, default=10, help="Lookups per second sent straight to replicas (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--shards", type=int, default=2, choices=[2, 4])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--slack-ms", type=float, default=5.0, help="an outcome may end this long after its deadline (default 5)")
    ap.add_argument("--server-nice", type=int, default=5, help="nice increment of the cluster's processes (default 5)")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"the nemesis' repertoire, comma-separated (default: all of {','.join(FAULTS)}; cut needs --netns)")
    ap.add_argument("--netns", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--inject", choices=["none", "lose", "unflag", "late"], default="none",
                    help="corrupt the ledger on purpose (lose an outcome, unflag a degraded answer, make an answer late): "
                         "the run must then fail")
    ap.add_argument("--json-out", help="report JSON (default RUN_DIR/soak-report.json)")
    args = ap.parse_args()
    args.run_dir = os.path.abspath(args.run_dir)
    if not args.faults or any(k not in FAULTS for k in args.faults.split(",")):
        ap.error(f"--faults takes a comma-separated subset of {','.join(FAULTS)}")
    if args.duration_s <= 0 or args.duration_s > 3600:
        ap.error("--duration-s must be in (0, 3600]")
    rep = asyncio.run(run(args))
    out = args.json_out or os.path.join(args.run_dir, "soak-report.json")
    with open(out, "w") as f:
        json.dump(rep, f, indent=2)
    print_report(rep)
    print(f"report: {out}")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

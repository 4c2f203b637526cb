"""Launch, stop and inspect a ShardRank cluster described by a topology file (docs/operations.md).

Run through the wrappers `cluster/up`, `cluster/down`, `cluster/status` and `cluster/fault`
(`python3 cluster/cluster.py COMMAND ...` works too). Standard library only, so the system
python3 runs it.

Layout of a run directory (default `run/<topology name>-<hash>/` under the repository, where
<hash> is the first 8 hex digits of the SHA-1 of the topology file's absolute path: two files
named `topology.json` in different directories get different run directories; `--run-dir`
overrides it, and `cluster/up` prints the one it uses):

    cluster.json          what is up: mode, binary, processes, network namespaces and links
    topology.json         the effective topology the coordinators read (absolute tables path,
                          addresses rewritten in the netns mode)
    <name>.pid            "PID STARTTIME" of a process this tool started (name: shard-S-R, coordinator-J)
    <name>.log            its stdout and stderr

Only processes named by these pid files are ever signalled, and only after /proc/PID still shows
the same start time and a `shardrank shard|coordinator` command line with the expected address.
"""
import argparse
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RUN_ROOT = os.path.join(REPO, "run")
STATE = "cluster.json"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class Fail(Exception):
    """A clear refusal: printed as `cluster: error: MESSAGE`, exit status 2."""


def log(msg):
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Topology and processes


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Fail(f"'{addr}' is not host:port")
    return host.strip("[]"), int(port)


def load_topology(path):
    try:
        with open(path) as f:
            topo = json.load(f)
    except OSError as e:
        raise Fail(f"cannot read the topology file {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise Fail(f"{path}: not valid JSON ({e})")
    if not isinstance(topo, dict):
        raise Fail(f"{path}: the top level must be a JSON object")
    shards = topo.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(r, list) and r for r in shards):
        raise Fail(f"{path}: 'shards' must be a non-empty array of non-empty replica lists")
    coords = topo.get("coordinators", [])
    if not isinstance(coords, list):
        raise Fail(f"{path}: 'coordinators' must be an array of host:port")
    for a in [a for r in shards for a in r] + coords:
        if not isinstance(a, str):
            raise Fail(f"{path}: addresses must be \"host:port\" strings, got {a!r}")
        split_addr(a)
    return topo


def admin_offset(topo, override=None):
    """Admin (metrics) ports: `"admin": {"port_offset": N}` gives every process --admin-port PORT+N."""
    if override is not None:
        return override or None
    a = topo.get("admin")
    if a is None:
        return None
    if not isinstance(a, dict) or not isinstance(a.get("port_offset", 0), int):
        raise Fail("'admin' must be an object like {\"port_offset\": 1000} (each process serves /metrics on PORT+1000)")
    return a.get("port_offset") or None


def processes(topo, offset=None):
    """[{name, role, shard, replica, address, admin}] in start order: shards, then coordinators."""
    out = []
    for s, reps in enumerate(topo["shards"]):
        for r, a in enumerate(reps):
            out.append({"name": f"shard-{s}-{r}", "role": "shard", "shard": s, "replica": r, "address": a})
    for j, a in enumerate(topo.get("coordinators", [])):
        out.append({"name": f"coordinator-{j}", "role": "coordinator", "shard": None, "replica": j, "address": a})
    for p in out:
        p["admin"] = None
        if offset:
            host, port = split_addr(p["address"])
            if not 0 < port + offset < 65536:
                raise Fail(f"admin port {port}+{offset} of {p['address']} is out of range")
            p["admin"] = p["address"].rsplit(":", 1)[0] + f":{port + offset}"
    return out


def topology_name(path):
    base = os.path.basename(path)
    return base[:-5] if base.endswith(".json") else base


def netns_settings(topo, flag):
    """The netns mode is on with --netns or a "netns" object in the topology (unless "enabled": false)."""
    n = topo.get("netns")
    if n is not None and not isinstance(n, dict):
        raise Fail("'netns' must be an object, e.g. {\"subnet\": \"10.77.0.0/24\"}")
    n = dict(n or {})
    on = flag or (topo.get("netns") is not None and n.get("enabled", True))
    return on, n


def find_binary(explicit):
    for cand in [explicit, os.environ.get("SHARDRANK_BIN")]:
        if cand:
            if not os.access(cand, os.X_OK):
                raise Fail(f"shardrank binary {cand} is not an executable file")
            if not os.path.basename(cand).startswith("shardrank"):
                # Stopping verifies /proc/PID/cmdline, which names the binary.
                raise Fail(f"the binary's file name must start with 'shardrank' (got {cand})")
            return os.path.abspath(cand)
    # The release build when there is one (a debug build serves 3-4x slower), else the debug one.
    for kind in ("release", "debug"):
        p = os.path.join(REPO, ".build", kind, "shardrank")
        if os.access(p, os.X_OK):
            return p
    raise Fail("no shardrank binary: build it (swift build -c release --product shardrank) or pass --binary / set SHARDRANK_BIN")


# ---------------------------------------------------------------------------------------------
# Pid files: only processes this tool started, verified through /proc


def proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None, None
    return fields[0], fields[19]  # state, starttime (fields 3 and 22 of proc(5))


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def arg_value(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def verified_pid(run_dir, p):
    """The PID in p's pid file when that process still runs the expected command; else None."""
    try:
        with open(os.path.join(run_dir, p["name"] + ".pid")) as f:
            pid_s, start = f.read().split()[:2]
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    state, now_start = proc_starttime(pid)
    if state is None or state in ("Z", "X") or now_start != start:
        return None
    argv = proc_cmdline(pid)
    host, port = split_addr(p["address"])
    ok = (len(argv) >= 2 and os.path.basename(argv[0]).startswith("shardrank") and argv[1] == p["role"]
          and arg_value(argv, "--port") == str(port) and arg_value(argv, "--host") == host)
    return pid if ok else None


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------------
# Ports and health


def owner_of_port(port):
    """Best effort: 'name (pid N)' of whoever listens on TCP port, from ss(8)."""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    return f"{m.group(1)} (pid {m.group(2)})" if m else None


def port_taken(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return None
    except OSError as e:
        return e.strerror
    finally:
        s.close()


def tls_client_args(certs):
    """`shardrank health` arguments for a TLS cluster whose certificates are in `certs` (the
    client certificate: a shard with mutual TLS answers health to any certificate of its CA)."""
    if not certs:
        return []
    return ["--tls-ca", os.path.join(certs, "ca.pem"), "--tls-cert", os.path.join(certs, "client.pem"),
            "--tls-key", os.path.join(certs, "client-key.pem")]


def health(binary, address, timeout_ms=500, certs=None):
    """'SERVING', 'NOT_SERVING', or 'DOWN' (no answer). A TCP connect first, bounded by the same
    timeout, so an unreachable host costs no process and no connect retries."""
    if not accepts(address, timeout_ms / 1000):
        return "DOWN"
    try:
        out = subprocess.run([binary, "health", "--target", address, "--timeout-ms", str(timeout_ms), *tls_client_args(certs)],
                             capture_output=True, text=True, timeout=timeout_ms / 1000 + 5)
    except subprocess.TimeoutExpired:
        return "DOWN"
    if out.returncode == 0:
        return "SERVING"
    word = out.stdout.strip().split()
    return word[-1] if word and word[-1].isupper() else "DOWN"


def accepts(address, timeout=0.3):
    host, port = split_addr(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def health_all(binary, addresses, timeout_ms=500, certs=None):
    res = {}

    def one(a):
        res[a] = health(binary, a, timeout_ms, certs)
    ts = [threading.Thread(target=one, args=(a,)) for a in addresses]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Network namespaces: one per process, veth pairs to a bridge in the root namespace


def ip(*args, check=True):
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise Fail(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def require_netns():
    if os.geteuid() != 0:
        raise Fail("the netns mode needs root (it creates network namespaces, veth links and a bridge); "
                   "run as root, or run the topology on loopback without --netns")
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise Fail("`ip` (iproute2) is not installed: apt-get install iproute2")
    if out.returncode != 0:
        raise Fail(f"`ip netns` is unavailable here: {out.stderr.strip()}")


def used_networks():
    nets = []
    for line in ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("broadcast", "local", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            pass
    return nets


def choose_subnet(settings, bridge):
    """The configured subnet, or the first free 10.77.X.0/24; refuses one that routes elsewhere."""
    mine = ip("-4", "-o", "addr", "show", "dev", bridge, check=False)
    if mine.returncode == 0:
        m = re.search(r"inet (\S+)", mine.stdout)
        if m:
            return str(ipaddress.ip_interface(m.group(1)).network)
    used = [n for n in used_networks() if n.prefixlen > 0]
    if "subnet" in settings:
        try:
            net = ipaddress.ip_network(settings["subnet"], strict=True)
        except ValueError as e:
            raise Fail(f"netns.subnet: {e}")
        if net.version != 4 or not net.is_private or not 16 <= net.prefixlen <= 28:
            raise Fail(f"netns.subnet {net} must be a private IPv4 network between /16 and /28")
        clash = [str(n) for n in used if n.overlaps(net)]
        if clash:
            raise Fail(f"netns.subnet {net} overlaps {clash[0]}, already routed on this machine (another cluster "
                       f"or interface uses it): pick another subnet or leave netns.subnet out to pick a free one")
        return str(net)
    for x in range(256):
        net = ipaddress.ip_network(f"10.77.{x}.0/24")
        if not any(n.overlaps(net) for n in used):
            return str(net)
    raise Fail("no free 10.77.X.0/24 subnet: set netns.subnet in the topology")


def netns_plan(run_dir, procs, settings):
    tag = hashlib.sha1(os.path.realpath(run_dir).encode()).hexdigest()[:6]
    bridge = f"sr{tag}br"
    subnet = ipaddress.ip_network(choose_subnet(settings, bridge))
    hosts = list(subnet.hosts())
    if len(procs) + 1 > len(hosts):
        raise Fail(f"subnet {subnet} has room for {len(hosts) - 1} processes, the topology has {len(procs)}")
    plan = {"tag": tag, "subnet": str(subnet), "bridge": bridge, "bridge_ip": str(hosts[0]), "hosts": {}}
    for i, p in enumerate(procs):
        short = f"s{p['shard']}r{p['replica']}" if p["role"] == "shard" else f"c{p['replica']}"
        plan["hosts"][p["name"]] = {"netns": f"sr{tag}-{p['name']}", "veth": f"sr{tag}{short}", "ip": str(hosts[i + 1])}
    return plan


def link_exists(name, netns=None):
    args = (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return ip(*args, check=False).returncode == 0


def netns_up(plan):
    existing = set(l.split()[0] for l in ip("netns", "list").stdout.splitlines() if l.strip())
    prefix = ipaddress.ip_network(plan["subnet"]).prefixlen
    br = plan["bridge"]
    if not link_exists(br):
        ip("link", "add", br, "type", "bridge")
    if plan["bridge_ip"] not in ip("-4", "-o", "addr", "show", "dev", br).stdout:
        ip("addr", "add", f"{plan['bridge_ip']}/{prefix}", "dev", br)
    ip("link", "set", br, "up")
    for h in plan["hosts"].values():
        ns, veth = h["netns"], h["veth"]
        if ns not in existing:
            ip("netns", "add", ns)
        if not link_exists("eth0", ns):
            if link_exists(veth):
                ip("link", "del", veth)
            ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
            ip("link", "set", veth + "p", "netns", ns)
            ip("-n", ns, "link", "set", veth + "p", "name", "eth0")
        if h["ip"] not in ip("-n", ns, "-4", "-o", "addr", "show", "dev", "eth0").stdout:
            ip("-n", ns, "addr", "add", f"{h['ip']}/{prefix}", "dev", "eth0")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("link", "set", veth, "master", br)
        ip("link", "set", veth, "up")


def netns_down(plan):
    existing = set(l.split()[0] for l in ip("netns", "list", check=False).stdout.splitlines() if l.strip())
    for h in plan["hosts"].values():
        if h["netns"] in existing:
            ip("netns", "del", h["netns"], check=False)
        if link_exists(h["veth"]):
            ip("link", "del", h["veth"], check=False)
    if link_exists(plan["bridge"]):
        ip("link", "del", plan["bridge"], check=False)


# ---------------------------------------------------------------------------------------------
# Commands


def default_run_dir(topology):
    """run/<name>-<first 8 hex of SHA-1 of the topology's absolute path, symlinks resolved>: one
    run directory per topology file, however many files share a name."""
    tag = hashlib.sha1(os.path.realpath(topology).encode()).hexdigest()[:8]
    return os.path.join(DEFAULT_RUN_ROOT, f"{topology_name(topology)}-{tag}")


def run_dir_for(topology, run_dir):
    if run_dir:
        return os.path.abspath(run_dir)
    own = default_run_dir(topology)
    # A cluster started before run directories carried the hash lives in run/<name>/: found
    # there while it runs, when its state names this very topology file.
    legacy = os.path.join(DEFAULT_RUN_ROOT, topology_name(topology))
    if not os.path.exists(os.path.join(own, STATE)) and os.path.exists(os.path.join(legacy, STATE)):
        try:
            with open(os.path.join(legacy, STATE)) as f:
                started_from = json.load(f).get("topology")
        except (OSError, ValueError, AttributeError):
            started_from = None
        if started_from and os.path.realpath(started_from) == os.path.realpath(topology):
            return legacy
    return own


def read_state(run_dir):
    try:
        with open(os.path.join(run_dir, STATE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise Fail(f"{run_dir}/{STATE} is unreadable ({e}); remove the run directory by hand once nothing runs")


class Lock:
    def __init__(self, run_dir):
        os.makedirs(run_dir, exist_ok=True)
        self.f = open(os.path.join(run_dir, ".lock"), "w")

    def __enter__(self):
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another cluster command holds this run directory; waiting")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *a):
        self.f.close()


def tables_root(topo, topology_path):
    t = topo.get("tables")
    if not isinstance(t, str) or not t:
        raise Fail(f"{topology_path}: 'tables' (the table-set root the shards serve) is required to start a cluster")
    root = t if os.path.isabs(t) else os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(topology_path)), t))
    if not os.path.isdir(root) or not any(re.fullmatch(r"v\d+", d) and os.path.exists(os.path.join(root, d, "manifest.json"))
                                          for d in os.listdir(root)):
        raise Fail(f"no table set at {root} (expected {root}/v<N>/manifest.json): build one with "
                   f"`shardrank build --input DIR --out {root} --shards {len(topo['shards'])}`")
    return root


def command_for(binary, p, s_count, tables, effective, model, netns, rankers=None, query_tower=None, trace_sample_rate=None,
                certs=None):
    host, port = split_addr(p["address"])
    if p["role"] == "shard":
        argv = [binary, "shard", "--tables", tables, "--shard", str(p["shard"]), "--of", str(s_count)]
    else:
        argv = [binary, "coordinator", "--topology", effective]
        if model:
            argv += ["--mlp", model]
        if query_tower:
            argv += ["--query-tower", query_tower]
        for name, path in sorted((rankers or {}).items()):
            argv += ["--ranker", f"{name}={path}"]
    argv += ["--host", host, "--port", str(port)]
    if certs:
        # Mutual TLS: each process shows its role's certificate and trusts the cluster's CA (a
        # shard then requires the coordinator's certificate for its data methods).
        role = p["role"]
        argv += ["--tls-cert", os.path.join(certs, f"{role}.pem"), "--tls-key", os.path.join(certs, f"{role}-key.pem"),
                 "--tls-ca", os.path.join(certs, "ca.pem")]
    elif netns:
        # Cleartext on a namespace's own (non-loopback) address: allowed on this private bridge only.
        argv += ["--insecure-plaintext"]
    if p.get("admin"):
        argv += ["--admin-port", p["admin"].rsplit(":", 1)[1]]
    if trace_sample_rate:
        argv += ["--trace-sample-rate", str(trace_sample_rate)]
    return (["ip", "netns", "exec", netns] if netns else []) + argv


def start(run_dir, p, argv):
    logpath = os.path.join(run_dir, p["name"] + ".log")
    with open(logpath, "a") as lf:
        lf.write(f"--- cluster/up {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {' '.join(argv)}\n")
        lf.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True, close_fds=True)
    # `ip netns exec` execs the command in place, so the PID is the server's own; its start time
    # goes in the pid file so a reused PID is never mistaken for ours.
    for _ in range(50):
        _, st = proc_starttime(proc.pid)
        if st:
            break
        time.sleep(0.01)
    write_atomic(os.path.join(run_dir, p["name"] + ".pid"), f"{proc.pid} {st}\n")
    return proc


def make_certs(binary, run_dir, hosts):
    """The cluster's development certificates (`shardrank certs`) in RUN_DIR/certs, made once."""
    certs = os.path.join(run_dir, "certs")
    if os.path.exists(os.path.join(certs, "client-key.pem")):
        return certs
    argv = [binary, "certs", "--out", certs]
    for h in sorted(set(hosts)):
        argv += ["--san", h]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise Fail(f"shardrank certs failed: {out.stderr.strip()}")
    log(f"TLS certificates in {certs} (CA ca.pem; coordinator, shard, client)")
    return certs


def wait_serving(binary, run_dir, group, popen, deadline, certs=None):
    """Waits until every process of `group` answers SERVING; raises naming the ones that don't."""
    pending = {p["name"]: p for p in group}
    while pending:
        for name, p in list(pending.items()):
            pr = popen.get(name)
            if pr is not None and pr.poll() is not None:
                raise Fail(f"{p['role']} {name} at {p['address']} exited with status {pr.returncode} while starting; "
                           f"last lines of {run_dir}/{name}.log:\n{log_tail(os.path.join(run_dir, name + '.log'))}")
        res = health_all(binary, [p["address"] for p in pending.values()], 300, certs)
        for name, p in list(pending.items()):
            if res.get(p["address"]) == "SERVING":
                log(f"{name} SERVING at {p['address']}")
                del pending[name]
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{n} ({p['address']})" for n, p in pending.items())
            raise Fail(f"not SERVING before the timeout: {names}; see the logs in {run_dir}")
        if pending:
            time.sleep(0.1)


def cmd_up(args):
    topo = load_topology(args.topology)
    run_dir = run_dir_for(args.topology, args.run_dir)
    use_netns, settings = netns_settings(topo, args.netns)
    if use_netns:
        require_netns()
    procs = processes(topo, admin_offset(topo, args.admin_port_offset))
    tables = tables_root(topo, args.topology)
    binary = find_binary(args.binary)
    log(f"binary {binary}")
    log(f"run directory {run_dir}" + ("" if args.run_dir else " (cluster/status and cluster/down find it from the topology file, "
                                      "or without one)"))
    if not any(p["role"] == "coordinator" for p in procs):
        log("the topology lists no \"coordinators\": starting shards only (add \"coordinators\": [\"127.0.0.1:PORT\"] for one)")
    model = topo.get("model")
    if model is not None and not isinstance(model, str):
        raise Fail("'model' must be the path of the MLP weights (.safetensors)")
    if model and not os.path.isabs(model):
        model = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(args.topology)), model))
    query_tower = topo.get("query_tower")
    if query_tower is not None and not isinstance(query_tower, str):
        raise Fail("'query_tower' must be the path of the query tower's weights (.safetensors; its .json beside it)")
    if query_tower and not os.path.isabs(query_tower):
        query_tower = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(args.topology)), query_tower))
    if query_tower:
        config = (query_tower[:-len(".safetensors")] if query_tower.endswith(".safetensors") else query_tower) + ".json"
        for f in (query_tower, config):
            if not os.path.isfile(f):
                raise Fail(f"query_tower: {f} is not a file")
    rankers = topo.get("rankers") or {}
    if not isinstance(rankers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in rankers.items()):
        raise Fail("'rankers' must be an object of NAME: \"model file\" strings (LightGBM text models)")
    rankers = {k: v if os.path.isabs(v) else os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(args.topology)), v))
               for k, v in rankers.items()}
    for k, v in rankers.items():
        if not os.path.isfile(v):
            raise Fail(f"ranker '{k}': {v} is not a file")
    if not use_netns:
        for p in procs:
            host, _ = split_addr(p["address"])
            if host not in LOOPBACK_NAMES and not host.startswith("127."):
                raise Fail(f"{p['name']} address {p['address']} is not on loopback: a local cluster only listens on "
                           f"loopback; use --netns to give each process its own address")
    with Lock(run_dir):
        state = read_state(run_dir)
        mode = "netns" if use_netns else "local"
        if state is not None:
            if state["mode"] != mode or state["source_processes"] != procs:
                raise Fail(f"cluster '{topology_name(args.topology)}' in {run_dir} is already up in {state['mode']} mode "
                           f"from {state['topology']} with a different layout; run cluster/down first")
            if bool(state.get("certs")) != bool(args.tls):
                raise Fail(f"cluster '{topology_name(args.topology)}' in {run_dir} is already up "
                           f"{'with' if state.get('certs') else 'without'} TLS; run cluster/down first")
            binary = state["binary"] if not (args.binary or os.environ.get("SHARDRANK_BIN")) else binary
        plan, subnet_lock = None, None
        if use_netns:
            # Two clusters starting at once must not pick the same free subnet: hold a machine-wide
            # lock from the choice until the bridge holds the address.
            subnet_lock = open(os.path.join("/tmp", "shardrank-cluster-netns.lock"), "w")
            fcntl.flock(subnet_lock, fcntl.LOCK_EX)
            plan = state["netns"] if state and state.get("netns") else netns_plan(run_dir, procs, settings)
        effective_procs = [dict(p) for p in procs]
        if plan:
            for p in effective_procs:
                for key in ("address", "admin"):
                    if p[key]:
                        _, port = split_addr(p[key])
                        p[key] = f"{plan['hosts'][p['name']]['ip']}:{port}"
        running, todo = {}, []
        for p in effective_procs:
            pid = verified_pid(run_dir, p)
            if pid:
                running[p["name"]] = pid
            else:
                remove(os.path.join(run_dir, p["name"] + ".pid"))
                todo.append(p)
        if not plan:
            taken = []
            for p in todo:
                for addr in filter(None, (p["address"], p["admin"])):
                    host, port = split_addr(addr)
                    why = port_taken(host, port)
                    if why:
                        who = owner_of_port(port)
                        taken.append(f"{addr} ({p['name']}{' admin' if addr == p['admin'] else ''}) is already in use"
                                     + (f" by {who}" if who else "") + f": {why}")
            if taken:
                raise Fail("refusing to start: " + "; ".join(taken))
        certs = None
        if args.tls:
            certs = make_certs(binary, run_dir, [split_addr(p["address"])[0] for p in effective_procs])
        state = {"topology": os.path.abspath(args.topology), "mode": mode, "binary": binary, "run_dir": run_dir,
                 "source_processes": procs, "processes": effective_procs, "netns": plan, "certs": certs}
        # Record the plan before touching the network, so cluster/down can undo a partial set-up.
        write_atomic(os.path.join(run_dir, STATE), json.dumps(state, indent=2) + "\n")
        eff = {k: v for k, v in topo.items() if k != "netns"}
        eff["tables"] = tables
        eff["shards"] = [[p["address"] for p in effective_procs if p["role"] == "shard" and p["shard"] == s]
                         for s in range(len(topo["shards"]))]
        eff["coordinators"] = [p["address"] for p in effective_procs if p["role"] == "coordinator"]
        if model:
            eff["model"] = model
        if rankers:
            eff["rankers"] = rankers
        if query_tower:
            eff["query_tower"] = query_tower
        effective = os.path.join(run_dir, "topology.json")
        write_atomic(effective, json.dumps(eff, indent=2) + "\n")

        if not todo:
            log(f"cluster '{topology_name(args.topology)}' is already up ({len(running)} processes); nothing to start")
        started = {}
        deadline = time.monotonic() + args.timeout
        try:
            if plan:
                log(f"network namespaces on {plan['subnet']} (bridge {plan['bridge']} {plan['bridge_ip']})")
                try:
                    netns_up(plan)
                finally:
                    subnet_lock.close()
            for role in ("shard", "coordinator"):
                group = [p for p in todo if p["role"] == role]
                for p in group:
                    ns = plan["hosts"][p["name"]]["netns"] if plan else None
                    started[p["name"]] = start(run_dir, p, command_for(binary, p, len(topo["shards"]), tables, effective, model, ns, rankers,
                                                                     query_tower, args.trace_sample_rate, certs))
                    log(f"started {p['name']} (pid {started[p['name']].pid}) on {p['address']}")
                wait_serving(binary, run_dir, [p for p in effective_procs if p["role"] == role], started, deadline, certs)
        except BaseException:
            log("start failed: stopping the processes this run started")
            stop_processes(run_dir, [p for p in effective_procs if p["name"] in started], args.grace)
            if not any(verified_pid(run_dir, p) for p in effective_procs):
                teardown(run_dir, state)
            raise
    # Every process has just answered SERVING: no second round of health checks.
    rows = status_rows(state, {p["address"]: "SERVING" for p in effective_procs})
    print_rows(rows, args.json)
    return 0


def stop_processes(run_dir, procs, grace):
    """SIGTERM the verified PIDs, wait up to `grace` s, then SIGKILL; removes their pid files."""
    live = {}
    for p in procs:
        pid = verified_pid(run_dir, p)
        pidfile = os.path.join(run_dir, p["name"] + ".pid")
        if pid is None:
            if os.path.exists(pidfile):
                log(f"{p['name']}: not running (stale pid file removed)")
            remove(pidfile)
            continue
        os.kill(pid, signal.SIGTERM)
        live[p["name"]] = (pid, p)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        for name, (pid, p) in list(live.items()):
            if verified_pid(run_dir, p) is None:
                log(f"stopped {name} (pid {pid})")
                remove(os.path.join(run_dir, name + ".pid"))
                del live[name]
        if live:
            time.sleep(0.05)
    for name, (pid, p) in live.items():
        if verified_pid(run_dir, p) == pid:
            log(f"{name} (pid {pid}) did not stop within {grace:g} s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    for name, (pid, p) in live.items():
        while verified_pid(run_dir, p) is not None and time.monotonic() < kill_deadline:
            time.sleep(0.05)
        remove(os.path.join(run_dir, name + ".pid"))


def teardown(run_dir, state):
    if state and state.get("netns"):
        netns_down(state["netns"])
        log(f"removed network namespaces and bridge {state['netns']['bridge']}")
    remove(os.path.join(run_dir, STATE))


def run_dirs(args):
    if getattr(args, "topology", None):
        return [run_dir_for(args.topology, args.run_dir)]
    if args.run_dir:
        return [os.path.abspath(args.run_dir)]
    if not os.path.isdir(DEFAULT_RUN_ROOT):
        return []
    return sorted(os.path.join(DEFAULT_RUN_ROOT, d) for d in os.listdir(DEFAULT_RUN_ROOT)
                  if os.path.exists(os.path.join(DEFAULT_RUN_ROOT, d, STATE)))


def cmd_down(args):
    dirs = run_dirs(args)
    found = False
    for run_dir in dirs:
        if not os.path.isdir(run_dir):
            continue
        with Lock(run_dir):
            state = read_state(run_dir)
            if state is None:
                continue
            found = True
            procs = state["processes"]
            log(f"stopping '{os.path.basename(run_dir)}' ({run_dir})")
            stop_processes(run_dir, [p for p in procs if p["role"] == "coordinator"], args.grace)
            stop_processes(run_dir, [p for p in procs if p["role"] == "shard"], args.grace)
            teardown(run_dir, state)
    if not found:
        log("nothing is up" + (f" in {dirs[0]}" if len(dirs) == 1 else ""))
    return 0


def status_rows(state, known=None):
    procs = state["processes"]
    pids = {p["name"]: verified_pid(state["run_dir"], p) for p in procs}
    res = known or health_all(state["binary"], [p["address"] for p in procs if pids[p["name"]]], 500, state.get("certs"))
    return [{"cluster": os.path.basename(state["run_dir"]), "mode": state["mode"], "role": p["role"],
             "shard": p["shard"], "replica": p["replica"], "address": p["address"], "pid": pids[p["name"]],
             "health": res.get(p["address"], "SERVING") if pids[p["name"]] else "STOPPED",
             "admin": p.get("admin"),
             "netns": state["netns"]["hosts"][p["name"]]["netns"] if state.get("netns") else None}
            for p in procs]


def print_rows(rows, as_json):
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    admin = any(r.get("admin") for r in rows)
    w = max([14] + [len(r["cluster"]) for r in rows])
    print((f"{'CLUSTER':<{w}} {'ROLE':<12} {'SHARD':>5} {'REPLICA':>7}  {'ADDRESS':<22} {'PID':>8}  {'HEALTH':<11}"
           + ("  ADMIN" if admin else "")).rstrip())
    for r in rows:
        shard = "-" if r["shard"] is None else r["shard"]
        line = f"{r['cluster']:<{w}} {r['role']:<12} {shard:>5} {r['replica']:>7}  {r['address']:<22} {r['pid'] or '-':>8}  {r['health']:<11}"
        print((line + (f"  {r.get('admin') or '-'}" if admin else "")).rstrip())
    sys.stdout.flush()


def cmd_status(args):
    rows = []
    for run_dir in run_dirs(args):
        state = read_state(run_dir)
        if state is not None:
            rows += status_rows(state)
    if not rows:
        log("nothing is up")
        if args.json:
            print("[]")
        return 1
    print_rows(rows, args.json)
    return 0 if all(r["health"] == "SERVING" for r in rows) else 1


def cmd_fault(args):
    dirs = run_dirs(args)
    states = [s for s in (read_state(d) for d in dirs) if s and s["mode"] == "netns"]
    if not states:
        raise Fail("no cluster is up in the netns mode" + (f" in {dirs[0]}" if len(dirs) == 1 else "")
                   + ": faults cut the links of `cluster/up --netns`")
    if len(states) > 1:
        raise Fail("several netns clusters are up: name the topology (or --run-dir)")
    state = states[0]
    require_netns()
    hosts = state["netns"]["hosts"]
    if args.action == "list":
        print(f"{'HOST':<16} {'IP':<15} {'NETNS':<28} {'LINK':<15} FAULTS")
        for name, h in hosts.items():
            print(f"{name:<16} {h['ip']:<15} {h['netns']:<28} {h['veth']:<15} {', '.join(faults_of(h)) or 'ok'}")
        return 0
    if args.target == "coordinator":
        name = f"coordinator-{args.index}"
    else:
        name = f"shard-{args.target}-{args.index}"
    if name not in hosts:
        raise Fail(f"no {name} in this cluster (have: {', '.join(hosts)})")
    h = hosts[name]
    if args.action == "cut":
        ip("link", "set", h["veth"], "down")
        log(f"cut: {name} ({h['ip']}): link {h['veth']} down, no packet in or out")
    elif args.action == "blackhole":
        peers = [o["ip"] for n, o in hosts.items() if n.startswith("coordinator-") and n != name] if name.startswith("shard-") \
            else [o["ip"] for n, o in hosts.items() if n.startswith("shard-")]
        for peer in peers:
            if f"blackhole {peer}" not in ip("-n", h["netns"], "route", "show").stdout:
                ip("-n", h["netns"], "route", "add", "blackhole", f"{peer}/32")
        log(f"blackhole: {name} ({h['ip']}) drops everything it sends to {', '.join(peers) or 'nobody'}; "
            f"its peers' calls time out, health checks from this host still answer")
    elif args.action == "slow":
        if not args.rate:
            raise Fail("slow needs a rate, e.g. cluster/fault slow 0 0 --rate 1mbit")
        tc = ["tc", "-n", h["netns"], "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", args.rate,
              "burst", "16kb", "latency", "500ms"]
        out = subprocess.run(tc, capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            raise Fail(f"{' '.join(tc)}: {out.stderr.strip()}")
        log(f"slow: {name} ({h['ip']}) sends at most {args.rate} (tbf on its eth0)")
    else:  # heal: every fault of this process
        ip("link", "set", h["veth"], "up")
        for line in ip("-n", h["netns"], "route", "show").stdout.splitlines():
            if line.startswith("blackhole "):
                ip("-n", h["netns"], "route", "del", *line.split()[:2])
        subprocess.run(["tc", "-n", h["netns"], "qdisc", "del", "dev", "eth0", "root"], capture_output=True, timeout=20)
        log(f"heal: {name} ({h['ip']}): link up, no blackhole routes, no rate limit")
    return 0


def faults_of(h):
    out = []
    if "UP" not in ip("-o", "link", "show", "dev", h["veth"], check=False).stdout.split(">")[0]:
        out.append("CUT")
    bh = [l.split()[1] for l in ip("-n", h["netns"], "route", "show", check=False).stdout.splitlines() if l.startswith("blackhole ")]
    if bh:
        out.append("BLACKHOLE " + " ".join(bh))
    q = subprocess.run(["tc", "-n", h["netns"], "qdisc", "show", "dev", "eth0"], capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"qdisc tbf .* rate (\S+)", q)
    if m:
        out.append(f"SLOW {m.group(1)}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cluster", description="Launch, stop and inspect a ShardRank cluster from a topology file.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, topology_required, with_json=True):
        if topology_required:
            p.add_argument("topology", help="topology file (JSON, docs/operations.md)")
        else:
            p.add_argument("topology", nargs="?", help="topology file (default: every cluster under run/)")
        p.add_argument("--run-dir", help="run directory (default: run/<topology name>-<hash of its path>/ in the repository)")
        if with_json:
            p.add_argument("--json", action="store_true", help="print the process table as JSON")

    up = sub.add_parser("up", help="start shards, then coordinators; wait for SERVING")
    common(up, True)
    up.add_argument("--netns", action="store_true", help="one network namespace (own IP) per process")
    up.add_argument("--binary", help="shardrank binary (default: $SHARDRANK_BIN, else .build/release/shardrank, else .build/debug/shardrank)")
    up.add_argument("--admin-port-offset", type=int, help="serve /metrics on PORT+N for every process "
                    "(default: the topology's admin.port_offset; 0: off)")
    up.add_argument("--tls", action="store_true", help="mutual TLS: make development certificates (shardrank certs) in "
                    "RUN_DIR/certs and start every process with its role's certificate")
    up.add_argument("--timeout", type=float, default=30, help="seconds to reach SERVING (default 30)")
    up.add_argument("--trace-sample-rate", type=float, help="give every process --trace-sample-rate R: tracing on, "
                    "span lines in each process's log (docs/operations.md, \"Tracing\"; default: off)")
    up.add_argument("--grace", type=float, default=15, help="seconds a stop waits after SIGTERM before SIGKILL (default 15)")
    down = sub.add_parser("down", help="SIGTERM, bounded wait, SIGKILL; remove namespaces")
    common(down, False, with_json=False)
    down.add_argument("--grace", type=float, default=15, help="seconds to wait after SIGTERM before SIGKILL (default 15)")
    st = sub.add_parser("status", help="one line per process: role, shard, replica, address, pid, health")
    common(st, False)
    fa = sub.add_parser("fault", help="network faults between the hosts of a netns cluster",
                        description="cut: link down (no packet in or out). blackhole: the process's packets to its "
                                    "peers (a shard's coordinators; a coordinator's shards) are dropped, so their calls "
                                    "time out while health checks from this host still answer. slow: rate-limit what it "
                                    "sends (tbf). heal: undo all of them. list: the hosts and their faults.")
    fa.add_argument("action", choices=["cut", "blackhole", "slow", "heal", "list"])
    fa.add_argument("--rate", help="for slow: tbf rate, e.g. 1mbit")
    fa.add_argument("target", nargs="?", help="shard index, or 'coordinator'")
    fa.add_argument("index", nargs="?", type=int, help="replica index (coordinator index)")
    fa.add_argument("topology", nargs="?", help="topology file (default: the only netns cluster under run/)")
    fa.add_argument("--run-dir", help="run directory (default: run/<topology name>-<hash of its path>/)")
    args = ap.parse_args(argv)
    if args.cmd == "fault" and args.action == "list" and args.target and not args.topology:
        args.topology, args.target = args.target, None  # fault list TOPOLOGY
    if args.cmd == "fault" and args.action != "list":
        if args.target is None or args.index is None or not (args.target.isdigit() or args.target == "coordinator"):
            ap.error("fault cut|blackhole|slow|heal SHARD REPLICA [TOPOLOGY]  (or: coordinator J)")
    try:
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "fault": cmd_fault}[args.cmd](args)
    except Fail as e:
        print(f"cluster: error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())

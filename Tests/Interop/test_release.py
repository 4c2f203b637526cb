"""The release artifact of scripts/release: the binary, built with the Swift runtime linked
statically, runs in a clean Debian 12 root with no Swift toolchain (debootstrap --variant=minbase,
then chroot): --help, synth + build of a tiny world, a shard serving it on loopback, health and a
Lookup answering. The OCI image layout is valid (digests match the blobs, the config is JSON with a
non-root user, the layer holds the binary and every library `ldd` lists; umoci unpacks it), and
the image's own filesystem, read-only and as that user, runs synth, build, a shard, a coordinator
and a Recommend.

Cost: scripts/release's release build (minutes the first time, seconds when current; it shares
.build with `swift build -c release`), and a debootstrap of Debian 12 minbase from the apt mirror
this machine uses (read from /etc/apt/sources.list*; about a minute the first time), cached under
run/chroot/ and reused; it is never modified (every run mounts what it needs in a private mount
namespace of its own, and runs in fresh network and PID namespaces: fixed ports are safe there, and
every process it starts dies with the namespace).
"""
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.path.join(ROOT, "run", "chroot")
SUITE = "bookworm"
INCLUDE = "libnghttp2-14,libprotobuf-c1"   # the two shared libraries the binary needs besides libc
BASE = os.path.join(CACHE, f"{SUITE}-minbase")
STAMP = os.path.join(BASE, ".shardrank-root")
OUT = os.path.join(ROOT, "run", "release-test")
ALLOWED = re.compile(r"(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1|lib(c|m)\.so\.6|libpthread\.so\.0|"
                     r"libdl\.so\.2|librt\.so\.1|libutil\.so\.1|libgcc_s\.so\.1|libstdc\+\+\.so\.6|libnghttp2\.so\.14|"
                     r"libprotobuf-c\.so\.1)")


def apt_mirror():
    """The Debian mirror apt uses for `SUITE main` (one-line or deb822 sources), or None."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.split()
                if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                        and "main" in fields.get("components", []) and fields.get("enabled", ["yes"])[0] != "no"):
                    return fields["uris"][0]
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                if m and m.group(2) == SUITE and "main" in m.group(3).split():
                    return m.group(1)
    return None


def debian_root():
    """The cached minbase root: made once with debootstrap (into a temporary name, renamed when
    complete), reused while its stamp matches."""
    want = f"{SUITE} minbase {INCLUDE}\n"
    if os.path.exists(STAMP) and open(STAMP).read() == want:
        return BASE
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed: run scripts/setup (it installs it from apt)")
    mirror = apt_mirror()
    if not mirror:
        pytest.fail(f"no `deb ... {SUITE} main` source in /etc/apt/sources.list*: cannot tell debootstrap which mirror to use")
    tmp = BASE + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(CACHE, exist_ok=True)
    try:
        out = subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, tmp, mirror],
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"debootstrap of Debian {SUITE} from {mirror} took over 900 s")
    if out.returncode != 0:
        log = (out.stdout + out.stderr)[-1500:]
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"debootstrap could not build a Debian {SUITE} root from the apt mirror {mirror} "
                    f"(exit {out.returncode}); is the mirror reachable?\n{log}")
    with open(os.path.join(tmp, ".shardrank-root"), "w") as f:
        f.write(want)
    os.rename(tmp, BASE)
    return BASE


def run_isolated(script, timeout):
    """Runs a shell script on the host in new mount, network and PID namespaces (loopback up):
    mounts it makes vanish with it, and every process it starts is killed when it ends (PID 1 of
    the namespace exits) or when the timeout kills it. Returns (exit status, output)."""
    proc = subprocess.Popen(["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                             "sh", "-c", "set -eu\nip link set lo up\n" + script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # our own process group: unshare and what it started
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


@pytest.fixture(scope="module")
def release():
    if os.geteuid() != 0:
        pytest.skip("not root: chroot, debootstrap and namespaces need root")
    for tool in ("unshare", "chroot", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (util-linux, coreutils, iproute2: scripts/setup)")
    out = subprocess.run([os.path.join(ROOT, "scripts", "release"), "--out", OUT], capture_output=True, text=True,
                         timeout=2400, cwd=ROOT)
    assert out.returncode == 0, f"scripts/release failed:\n{out.stderr[-4000:]}"
    assert "ldd " in out.stderr, "scripts/release must print what ldd lists"
    return OUT


def test_ldd_lists_only_libc_level_libraries_nghttp2_and_protobuf_c(release):
    listed = [l.split()[0] for l in open(os.path.join(release, "ldd.txt")).read().splitlines() if l.strip()]
    names = [os.path.basename(n) for n in listed]
    assert "libnghttp2.so.14" in names and "libprotobuf-c.so.1" in names and "libc.so.6" in names
    extra = [n for n in names if not ALLOWED.fullmatch(n)]
    assert not extra, f"the release binary needs {extra}"
    assert not any("swift" in n.lower() or "icu" in n.lower() or "blas" in n.lower() for n in names)


def test_the_image_guard_refuses_a_binary_that_needs_the_swift_runtime(release, tmp_path):
    # The debug build (the one scripts/test builds) links libswiftCore dynamically: the image
    # writer must refuse it, naming the library.
    debug = os.environ.get("SHARDRANK_BIN", os.path.join(ROOT, ".build", "debug", "shardrank"))
    if not os.path.exists(debug):
        pytest.fail(f"no debug binary at {debug}: build it first (scripts/test does)")
    out = subprocess.run(["python3", os.path.join(ROOT, "scripts", "release-image.py"), "--binary", debug,
                          "--out", str(tmp_path), "--version", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "libswiftCore.so" in out.stderr, out.stderr
    assert not os.path.exists(tmp_path / "image")


def test_runs_in_a_clean_debian_root_without_swift(release):
    root = debian_root()
    assert not glob.glob(os.path.join(root, "usr", "bin", "swift*")) and not glob.glob(os.path.join(root, "usr", "lib", "swift"))
    script = f"""
R={root}
mount -t tmpfs tmpfs "$R/tmp"
mount --bind {release} "$R/mnt"
mount -o remount,bind,ro "$R/mnt"
mount -t proc proc "$R/proc"
chroot "$R" /bin/sh -eu -c '
  export PATH=/mnt:/usr/bin:/bin
  if command -v swift; then echo "swift is installed in the root"; exit 1; fi
  shardrank --version
  shardrank --help > /tmp/help.txt
  grep "^USAGE: shardrank" /tmp/help.txt
  grep -c "^  shard " /tmp/help.txt
  shardrank synth --out /tmp/world --users 300 --items 400 --dim 8 --seed 7 --quiet
  shardrank build --input /tmp/world --out /tmp/tables --shards 1 --quiet
  shardrank shard --tables /tmp/tables --shard 0 --of 1 --port 7100 > /tmp/shard.log 2>&1 &
  shard=$!
  shardrank health --target 127.0.0.1:7100 --wait 30
  shardrank lookup --target 127.0.0.1:7100 --ids 1,2,3 --json
  kill -TERM $shard
  wait $shard && echo "shard exit 0"
'
"""
    rc, out = run_isolated(script, timeout=180)
    assert rc == 0, out[-3000:]
    assert re.search(r"^USAGE: shardrank <subcommand>$", out, re.M), out
    assert "SERVING" in out and "shard exit 0" in out, out
    lookup = json.loads(next(l for l in out.splitlines() if l.startswith("{\"version\"")))
    assert lookup["dim"] == 8 and [r["id"] for r in lookup["rows"]] == [1, 2, 3] and not lookup["missing"]
    assert all(len(r["vector"]) == 8 for r in lookup["rows"])


def blob(image, digest):
    algo, hexd = digest.split(":")
    assert algo == "sha256"
    data = open(os.path.join(image, "blobs", "sha256", hexd), "rb").read()
    assert hashlib.sha256(data).hexdigest() == hexd, f"blob {digest} does not match its digest"
    return data


def test_image_layout_is_valid_and_runs_as_non_root(release, tmp_path):
    image = os.path.join(release, "image")
    assert json.load(open(os.path.join(image, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    index = json.load(open(os.path.join(image, "index.json")))
    assert index["schemaVersion"] == 2 and len(index["manifests"]) == 1
    desc = index["manifests"][0]
    version = subprocess.run([os.path.join(release, "shardrank"), "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == version
    manifest_bytes = blob(image, desc["digest"])
    assert len(manifest_bytes) == desc["size"] and desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(manifest_bytes)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == desc["mediaType"]
    config_bytes = blob(image, manifest["config"]["digest"])
    assert len(config_bytes) == manifest["config"]["size"]
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(config_bytes)
    assert config["os"] == "linux" and config["architecture"] in ("amd64", "arm64")
    user = config["config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root"), f"image runs as {user!r}"
    uid, gid = (int(x) for x in user.split(":"))
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/shardrank"]
    assert {"7000/tcp", "7100/tcp", "8000/tcp", "8100/tcp"} <= set(config["config"]["ExposedPorts"])
    assert len(manifest["layers"]) == 1 == len(config["rootfs"]["diff_ids"])
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    gz = blob(image, layer["digest"])
    assert len(gz) == layer["size"]
    tar_bytes = gzip.decompress(gz)
    assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == config["rootfs"]["diff_ids"][0]

    rootfs = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        members = {m.name: m for m in t.getmembers()}
        assert all(not m.name.startswith("/") and ".." not in m.name.split("/") for m in members.values())
        t.extractall(rootfs)
    binary = members["usr/local/bin/shardrank"]
    assert binary.isfile() and binary.mode & 0o111
    binary_bytes = open(os.path.join(release, "shardrank"), "rb").read()
    assert (rootfs / "usr/local/bin/shardrank").read_bytes() == binary_bytes
    for lib in ("libnghttp2.so.14", "libprotobuf-c.so.1", "libc.so.6"):
        assert glob.glob(str(rootfs / "lib" / "*-linux-gnu" / lib)), f"the image lacks {lib}"
    passwd = (rootfs / "etc" / "passwd").read_text()
    assert re.search(rf"^\w+:x:{uid}:{gid}:", passwd, re.M), passwd
    assert not (rootfs / "bin").exists() and not (rootfs / "usr" / "bin").exists(), "the image is built from scratch"

    # An independent reader of OCI layouts agrees: umoci (Debian package, scripts/setup) unpacks
    # it into a runtime bundle whose process runs the binary as the image's user.
    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed: run scripts/setup (it installs it from apt)")
    bundle = tmp_path / "bundle"
    out = subprocess.run(["umoci", "unpack", "--image", f"{image}:{version}", str(bundle)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    runtime = json.load(open(bundle / "config.json"))
    assert runtime["process"]["user"] == {"uid": uid, "gid": gid} and runtime["process"]["args"][0] == "/usr/local/bin/shardrank"
    assert (bundle / "rootfs" / "usr" / "local" / "bin" / "shardrank").read_bytes() == binary_bytes

    # The image's filesystem is a root of its own, run as a pod runs it: read-only, as the image's
    # user, /tmp a writable tmpfs (an emptyDir), /proc and /dev mounted as a container runtime
    # does. In it: a tiny world and table set, a shard, and a coordinator that reaches the shard by
    # name (the image's /etc/hosts and /etc/nsswitch.conf), then a Recommend through it.
    for d in ("proc", "dev"):
        (rootfs / d).mkdir()
    run = f"chroot --userspec={uid}:{gid} \"$R\" /usr/local/bin/shardrank"
    script = f"""
R={rootfs}
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
if {run} synth --out /world --users 10 --items 10 --dim 4 --quiet 2>/dev/null; then echo "root is writable"; exit 1; fi
{run} synth --out /tmp/world --users 300 --items 400 --dim 8 --seed 3 --quiet
{run} build --input /tmp/world --out /tmp/tables --shards 1 --quiet
echo '{{"tables": "/tmp/tables", "shards": [["localhost:7100"]]}}' > "$R/tmp/topology.json"
{run} shard --tables /tmp/tables --shard 0 --of 1 --port 7100 &
{run} coordinator --topology /tmp/topology.json --port 7000 &
{run} health --target localhost:7100 --wait 30
{run} health --target localhost:7000 --wait 60
{run} lookup --target localhost:7100 --ids 5 --json
{run} recommend --target localhost:7000 --user 7 --k 5 --json
"""
    rc, out = run_isolated(script, timeout=180)
    assert rc == 0, out[-3000:]
    assert out.count("SERVING") >= 2 and "root is writable" not in out, out
    lookup = json.loads(next(l for l in out.splitlines() if l.startswith("{\"version\"")))
    assert lookup["dim"] == 8 and [r["id"] for r in lookup["rows"]] == [5]
    rec = json.loads(next(l for l in out.splitlines() if l.startswith("{") and "items" in l))
    assert len(rec["items"]) == 5, rec

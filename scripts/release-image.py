#!/usr/bin/env python3
"""Writes the ShardRank OCI image (an image layout directory) from a built `shardrank` binary.

Usage: scripts/release-image.py --binary FILE --out DIR --version V [--created EPOCH]
  (run by scripts/release; standard library only)

The image is built from scratch (no base image): one layer holding
  /usr/local/bin/shardrank          the binary (Swift runtime linked statically)
  /lib/<arch>-linux-gnu/<soname>    the shared libraries `ldd` lists for it (libc-level ones,
  the loader at its own path           libnghttp2, libprotobuf-c), copied from this machine
  /etc/passwd, /etc/group           root and the non-root user `shardrank` (65532:65532)
  /etc/nsswitch.conf, /etc/hosts    so that names resolve (Kubernetes mounts its own /etc/hosts)
  /tmp                              mode 1777
and a config that runs as 65532:65532 with `shardrank` as the entrypoint, exposes the port
conventions of cluster/k8s/generate (7000 coordinator gRPC, 7100 shard gRPC, 8000/8100 their
admin HTTP: /metrics and /healthz) and labels them.

Fails (exit 1, naming the library) when the binary needs a shared library other than the allowed
ones: the artifact must run on a machine with no Swift toolchain and no OpenBLAS.

Writes DIR/image/{oci-layout,index.json,blobs/sha256/*} (the OCI image layout 1.0; `skopeo copy
oci:DIR/image:V docker://REGISTRY/shardrank:V` pushes it) and DIR/ldd.txt. Reproducible: the same
inputs and --created give the same digests.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

# Shared libraries the serving binary may need: the C library and its loader (libc-level), the
# compiler's C/C++ runtime support (present on every glibc system), and the two C libraries the
# wire uses. Anything else (libswiftCore, libFoundation, ICU, OpenBLAS, ...) is an error.
ALLOWED = [r"linux-vdso\.so\.1", r"ld-linux-x86-64\.so\.2", r"ld-linux-aarch64\.so\.1", r"libc\.so\.6", r"libm\.so\.6",
           r"libpthread\.so\.0", r"libdl\.so\.2", r"librt\.so\.1", r"libutil\.so\.1", r"libgcc_s\.so\.1",
           r"libstdc\+\+\.so\.6", r"libnghttp2\.so\.14", r"libprotobuf-c\.so\.1"]

UID = GID = 65532
PORTS = {"coordinator_grpc": 7000, "shard_grpc": 7100, "coordinator_admin": 8000, "shard_admin": 8100}


def log(msg):
    print(f"release-image: {msg}", file=sys.stderr)


def ldd(binary):
    """[(soname, resolved path or None)] of `ldd BINARY`."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"release-image: error: ldd {binary} failed: {out.stderr.strip() or out.stdout.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        m = re.match(r"(\S+)\s+=>\s+(\S+)\s+\(0x", line) or re.match(r"(\S+)\s+\(0x", line)
        if not m:
            if "not found" in line:
                raise SystemExit(f"release-image: error: {binary} needs a library this machine lacks: {line}")
            continue
        name = m.group(1)
        path = m.group(2) if m.lastindex == 2 else (name if name.startswith("/") else None)
        # The loader is listed by its absolute path (the binary's PT_INTERP): it goes there.
        libs.append((os.path.basename(name), path, name.lstrip("/") if name.startswith("/") else None))
    return out.stdout, libs


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """A deterministic tar: fixed owner/mtime, entries in the order added."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, kind, mode, size=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, size, 0, 0, 0, "", ""
        return ti

    def dir(self, name, mode=0o755):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if i == len(parts) else 0o755))

    def file(self, name, data, mode=0o644):
        self.dir(os.path.dirname(name))
        self.tar.addfile(self._info(name.strip("/"), tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--created", type=int, default=0, help="image creation time, seconds since the epoch")
    a = ap.parse_args(argv)
    if not os.access(a.binary, os.X_OK):
        print(f"release-image: error: {a.binary} is not an executable file", file=sys.stderr)
        return 2
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", a.version):
        print(f"release-image: error: --version {a.version!r} is not a valid image tag", file=sys.stderr)
        return 2

    text, libs = ldd(a.binary)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "ldd.txt"), "w") as f:
        f.write(text)
    bad = [n for n, _, _ in libs if not any(re.fullmatch(p, n) for p in ALLOWED)]
    if bad:
        print(f"release-image: error: {a.binary} needs {', '.join(bad)}: only libc-level libraries, libnghttp2 and "
              "libprotobuf-c may be linked dynamically (was it built with --static-swift-stdlib, and does a target "
              "still link OpenBLAS?)", file=sys.stderr)
        return 1

    layer = Layer()
    multiarch = f"lib/{os.uname().machine}-linux-gnu"
    for d in ("etc", "tmp", "usr/local/bin", multiarch):
        layer.dir(d, 0o1777 if d == "tmp" else 0o755)
    with open(a.binary, "rb") as f:
        layer.file("usr/local/bin/shardrank", f.read(), 0o755)
    for name, path, interp in libs:
        if name.startswith("linux-vdso") or not path:
            continue
        dest = interp or f"{multiarch}/{name}"
        with open(os.path.realpath(path), "rb") as f:
            layer.file(dest, f.read(), 0o755)
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n"
                             b"shardrank:x:%d:%d:shardrank:/nonexistent:/sbin/nologin\n" % (UID, GID))
    layer.file("etc/group", b"root:x:0:\nshardrank:x:%d:\n" % GID)
    layer.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.file("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    tar = layer.bytes()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(tar)
    layer_gz = gz.getvalue()

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    created = __import__("datetime").datetime.fromtimestamp(a.created, __import__("datetime").timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {"org.opencontainers.image.title": "shardrank",
              "org.opencontainers.image.description": "ShardRank recommendation serving: shard and coordinator",
              "org.opencontainers.image.version": a.version,
              # The conventions cluster/k8s/generate relies on (docs/operations.md, "Deployment").
              "io.shardrank.ports": ",".join(f"{k}={v}" for k, v in PORTS.items()),
              "io.shardrank.health": "grpc.health.v1.Health on the gRPC port; GET /healthz on the admin port",
              "io.shardrank.metrics": "GET /metrics (Prometheus) on the admin port"}
    config = {
        "created": created, "architecture": arch, "os": "linux",
        "config": {"User": f"{UID}:{GID}", "Entrypoint": ["/usr/local/bin/shardrank"], "Cmd": ["--help"],
                   "Env": ["PATH=/usr/local/bin"], "WorkingDir": "/tmp",
                   "ExposedPorts": {f"{p}/tcp": {} for p in PORTS.values()}, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": created, "created_by": "scripts/release"}],
    }
    config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer_gz),
                    "size": len(layer_gz)}],
        "annotations": {"org.opencontainers.image.version": a.version},
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": sha256(manifest_bytes), "size": len(manifest_bytes),
                            "platform": {"architecture": arch, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": a.version}}]}

    image = os.path.join(a.out, "image")
    blobs = os.path.join(image, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    for old in os.listdir(blobs):
        os.unlink(os.path.join(blobs, old))
    for data in (layer_gz, config_bytes, manifest_bytes):
        with open(os.path.join(blobs, sha256(data).split(":")[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(image, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(image, "index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    log(f"wrote {image}: shardrank:{a.version}, manifest {sha256(manifest_bytes)}, "
        f"layer {len(layer_gz) / 2**20:.1f} MiB compressed ({len(tar) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

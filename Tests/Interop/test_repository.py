"""The repository stands alone: nothing in it cites documents that are not in it (the design and
reliability notes the project was planned from live outside the repository; what users need is in
README.md and docs/)."""
import os
import re
import subprocess

from conftest import ROOT

OUTSIDE = re.compile(r"\b(DESIGN|RELIABILITY|STYLE)\.md\b|\.\./shared/")


def test_no_file_cites_documents_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for f in files:
        if f.startswith("Sources/CShardRankProto/") or not f.endswith((".md", ".swift", ".py", ".c", ".h", ".sh", ".json", ".txt")) \
                and not f.startswith(("scripts/", "cluster/")):
            continue
        path = os.path.join(ROOT, f)
        if not os.path.isfile(path):
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{f}:{n}: {line.strip()}")
    assert hits == [], "\n".join(hits)


def test_package_dependencies_equal_the_imports(tmp_path):
    """scripts/check-imports passes on the repository, and fails naming the target and the module
    when a file imports a module its target does not declare."""
    import shutil
    import sys
    dump = subprocess.run(["swift", "package", "--package-path", ROOT, "dump-package"], capture_output=True, text=True, timeout=600)
    assert dump.returncode == 0, dump.stderr
    pkg = tmp_path / "package.json"
    pkg.write_text(dump.stdout)
    check = os.path.join(ROOT, "scripts", "check-imports")
    ok = subprocess.run([sys.executable, check, "--package-json", str(pkg)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # A copy of one target with a file importing an undeclared module.
    shutil.copytree(os.path.join(ROOT, "Sources", "ShardRankIDs"), tmp_path / "root" / "Sources" / "ShardRankIDs")
    (tmp_path / "root" / "Sources" / "ShardRankIDs" / "Extra.swift").write_text("internal import NIOCore\n")
    bad = subprocess.run([sys.executable, check, "--package-json", str(pkg), "--root", str(tmp_path / "root")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "ShardRankIDs: imports NIOCore (Sources/ShardRankIDs/Extra.swift) but does not declare it" in bad.stdout, bad.stdout


def test_generated_wire_code_is_current_and_check_catches_staleness(tmp_path):
    """scripts/gen-proto --check passes on the repository (the protobuf-c code and the Swift wire
    glue of Sources/ShardRankWire/Generated match proto/), and fails when a .proto gains a field
    the committed Swift does not have, or when a generated Swift file was edited by hand."""
    import shutil
    ok = subprocess.run([os.path.join(ROOT, "scripts", "gen-proto"), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    copy = tmp_path / "repo"
    for d in ("proto", "scripts", os.path.join("Sources", "CShardRankProto"), os.path.join("Sources", "ShardRankWire", "Generated")):
        shutil.copytree(os.path.join(ROOT, d), copy / d)
    gen = str(copy / "scripts" / "gen-proto")
    # A new field in a message: the Swift glue is stale until gen-proto runs.
    proto = copy / "proto" / "shardrank" / "v1" / "shard.proto"
    proto.write_text(proto.read_text().replace("message IdsRequest {\n", "message IdsRequest {\n  uint32 stride = 15;\n"))
    stale = subprocess.run([gen, "--check"], capture_output=True, text=True, timeout=300)
    assert stale.returncode == 1 and "Sources/ShardRankWire/Generated is stale" in stale.stderr, stale.stderr
    subprocess.run([gen], capture_output=True, text=True, timeout=300, check=True)
    swift = (copy / "Sources" / "ShardRankWire" / "Generated" / "ShardrankV1Shard.swift").read_text()
    assert "public var stride: UInt32" in swift and "m.stride = self.stride" in swift and "self.stride = p.stride" in swift
    assert subprocess.run([gen, "--check"], capture_output=True, text=True, timeout=300).returncode == 0
    # A hand edit of a generated file.
    path = copy / "Sources" / "ShardRankWire" / "Generated" / "GrpcHealthV1Health.swift"
    path.write_text(path.read_text() + "// edited\n")
    edited = subprocess.run([gen, "--check"], capture_output=True, text=True, timeout=300)
    assert edited.returncode == 1 and "stale" in edited.stderr, edited.stderr

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

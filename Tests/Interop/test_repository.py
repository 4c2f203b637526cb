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

"""h2spec 2.6.0 (tools/h2spec) against a shard and a coordinator: all 146 HTTP/2 conformance tests
pass except the one documented exception, http2/5.1.1 #2 (a HEADERS frame whose stream id is lower
than a previous one must be a connection error): libnghttp2 ignores such a HEADERS when it never
saw that stream id, and nghttpd 1.52 on the same library fails exactly this test too
(docs/operations.md, "h2spec"). Any other failure, or a different number of tests, fails here."""
import json
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
H2SPEC = os.path.join(ROOT, "tools", "h2spec", "h2spec")
EXCEPTIONS = {("http2/5.1.1", "Sends stream identifier that is numerically smaller than previous")}


def h2spec(port, tmp_path, name):
    report = tmp_path / f"{name}.xml"
    p = subprocess.run([H2SPEC, "-h", "127.0.0.1", "-p", str(port), "-o", "3", "-j", str(report)],
                       capture_output=True, text=True, timeout=180)
    assert report.exists(), f"h2spec wrote no report (exit {p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}"
    cases, failed, skipped = 0, set(), 0
    for case in ET.parse(report).getroot().iter("testcase"):
        cases += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add((case.get("package"), case.get("classname")))
        if case.find("skipped") is not None:
            skipped += 1
    return cases, failed, skipped, p.stdout


def check(port, tmp_path, name):
    cases, failed, skipped, out = h2spec(port, tmp_path, name)
    assert cases == 146, f"{name}: h2spec ran {cases} tests, expected 146"
    unexpected = failed - EXCEPTIONS
    assert not unexpected, f"{name}: h2spec failures beyond the documented exception: {sorted(unexpected)}\n{out[-3000:]}"
    assert skipped == 0, f"{name}: {skipped} tests skipped"
    assert "146 tests, 145 passed" in out or not failed, out[-500:]


def test_h2spec_against_a_shard(shard, tmp_path):
    check(shard.port, tmp_path, "shard")


def test_h2spec_against_a_coordinator(shard, server_factory, tmp_path):
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps({"shards": [[shard.target]]}))
    coord = server_factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning"])
    check(coord.port, tmp_path, "coordinator")
